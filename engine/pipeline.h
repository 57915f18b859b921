/* engine/pipeline.h — pipeline definitions (DESIGN.md "Pipeline
 * definition"): named stages whose model/dataset references form a DAG,
 * validated completely before any work starts, then run in dependency
 * order with NDJSON events. The same file runs under the server and
 * standalone (`aha-engine train --spec FILE --data-dir DIR`). */
#ifndef AHA_PIPELINE_H
#define AHA_PIPELINE_H

#include <jansson.h>
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
    char out[4096];         /* where this stage writes its output */
    int model_from;         /* index of the stage producing the model, or -1 */
    int dataset_from;       /* index of the stage producing the dataset, or -1 */
    json_t *params;         /* borrowed from the spec */
    struct reward_spec *reward;     /* grpo, eval: parsed reward (owned) */
};

struct pipeline {
    json_t *spec;           /* owned */
    char name[128];
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
/* Runs the stages in order, writing events; returns 0 or -1 with err. */
int pipeline_run(struct pipeline *p, const struct backend *be, FILE *events,
                 char *err, size_t errlen);

#endif
