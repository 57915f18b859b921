/* engine/pipeline.h — pipeline definitions (DESIGN.md "Pipeline
 * definition"): named stages whose model/dataset references form a DAG,
 * validated completely before any work starts, then run in dependency
 * order with NDJSON events. The same file runs under the server and
 * standalone (`aha-engine train --spec FILE --data-dir DIR`). */
#ifndef AHA_PIPELINE_H
#define AHA_PIPELINE_H

#include <jansson.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>

#include "backend.h"

struct reward_spec;

#define PIPELINE_MAX_STAGES 64

struct pipeline_stage {
    char name[64];
    char kind[32];
    char model[4096];       /* resolved model directory ("" when none) */
    char dataset[4096];     /* resolved dataset path ("" when none) */
    char teacher[4096];     /* distill: resolved teacher model directory */
    char out[4096];         /* where this stage writes its output */
    int model_from;         /* index of the stage producing the model, or -1 */
    int dataset_from;       /* index of the stage producing the dataset, or -1 */
    int teacher_from;       /* index of the stage producing the teacher, or -1 */
    json_t *params;         /* borrowed from the spec */
    struct reward_spec *reward;     /* grpo, eval: parsed reward (owned) */
};

struct pipeline {
    json_t *spec;           /* owned */
    char name[128];
    char out_dir[4096];     /* where stage outputs go ("" when only checked) */
    int n_stages;
    struct pipeline_stage stages[PIPELINE_MAX_STAGES];
    int order[PIPELINE_MAX_STAGES];     /* topological order */
};

/* Validates spec (borrowed; a reference is taken) against data_dir and
 * fills p: stage names unique, kinds known and available, every reference
 * resolvable, no cycle, every parameter known and well-typed. out_dir is
 * where stage outputs go (<out_dir>/<stage>). Returns 0, or -1 with err
 * naming the stage and field ("stage \"rl\": params.learning_rate: expected
 * a number"). data_dir NULL validates without touching the file system
 * (the server's check, and `train --check`): a reference that names no
 * stage is kept as given (an id the caller resolves), a string "reward" is
 * accepted as a stored reward's id and left unloaded (stage.reward NULL),
 * and out_dir may be NULL. */
int pipeline_load(struct pipeline *p, json_t *spec, const char *data_dir,
                  const char *out_dir, char *err, size_t errlen);
void pipeline_free(struct pipeline *p);
/* pipeline_load with data_dir NULL, keeping nothing: 0 when spec (borrowed)
 * is a valid pipeline, else -1 with err as pipeline_load's. */
int pipeline_check(json_t *spec, char *err, size_t errlen);
/* pipeline_run's result when stopped on request (besides 0 and -1). */
#define PIPELINE_CANCELLED 1

/* Runs the stages in order, writing events (api/engine-protocol.md,
 * "Training runs"): stage events, metrics, checkpoints, and last an `error`
 * (on failure) and a `done` with status succeeded (returns 0), failed
 * (returns -1, err filled) or cancelled (returns PIPELINE_CANCELLED).
 * resume (or NULL) is a checkpoint directory of a stage of this pipeline, or
 * the run's output directory: stages whose output holds a completion marker
 * are skipped, the checkpoint's stage continues from its step, the others
 * run. stop (or NULL) is polled: once set, the running trainer finishes its
 * step and writes a checkpoint, and the run ends cancelled. */
int pipeline_run(struct pipeline *p, const struct backend *be, const char *resume,
                 const volatile sig_atomic_t *stop, FILE *events, char *err, size_t errlen);

#endif
