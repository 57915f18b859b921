/* engine/checkpoint.h — resumable training checkpoints and safe stops,
 * shared by the trainers (pretrain, sft, grpo). A checkpoint directory is a
 * complete model directory (config.json, model.safetensors, tokenizer) plus
 * the AdamW state (model_optimizer_save) and trainer_state.json, written
 * last, whose presence marks the checkpoint complete (layout in
 * api/engine-protocol.md, "Checkpoints and resuming"). Not here: the tensor
 * file format (engine/safetensors, engine/model.c). */
#ifndef AHA_CHECKPOINT_H
#define AHA_CHECKPOINT_H

#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

#include "model.h"
#include "rng.h"

#define CKPT_STATE_FILE "trainer_state.json"
#define CKPT_FORMAT "aha-trainer-state"
#define CKPT_VERSION 1
/* Written into a stage's output directory when the stage has succeeded. */
#define CKPT_STAGE_MARKER "aha_stage.json"

/* A trainer's return value besides 0 (done) and -1 (failed, err filled):
 * stopped on request after a step, with a checkpoint in ctl->stopped_at. */
#define TRAIN_STOPPED 1

/* What a pipeline tells a trainer about resuming and stopping. Trainers
 * take it as a borrowed pointer in their options (NULL: neither). */
struct train_ctl {
    const char *pipeline;               /* pipeline name, written in checkpoints */
    const json_t *params;               /* the stage's params (borrowed), written and compared */
    const char *resume_dir;             /* checkpoint to continue from, or NULL */
    const json_t *resume_state;         /* its trainer_state.json (borrowed) */
    const volatile sig_atomic_t *stop;  /* non-zero: finish the step, checkpoint, stop */
    char stopped_at[4096];              /* out: the checkpoint written on stop */
};

static inline bool ckpt_stop_requested(const struct train_ctl *c)
{
    return c && c->stop && *c->stop;
}

/* Writes dir/optimizer*.safetensors and then dir/trainer_state.json
 * (through a rename) for a checkpoint taken after `step` of `steps`, with the
 * trainer's RNG and kind-specific `data` (stolen; may be NULL). The model
 * files are the caller's. ctl may be NULL. Returns 0 or -1 with err. */
int ckpt_write(const struct model *m, const char *dir, const struct train_ctl *ctl,
               const char *stage, const char *kind, int step, int steps,
               const struct rng *rng, json_t *data, char *err, size_t errlen);

/* Reads and checks dir/trainer_state.json (format, version, fields).
 * Returns a new reference, or NULL with err naming the file. */
json_t *ckpt_read(const char *dir, char *err, size_t errlen);

/* The resume half common to the trainers: checks that ctl's checkpoint is
 * of a run of `steps` steps, loads its optimizer state into m and its RNG
 * into *rng, and returns the step to continue from, or -1 with err naming
 * the file. */
int ckpt_resume(const struct train_ctl *ctl, struct model *m, int steps, struct rng *rng,
                char *err, size_t errlen);

/* Reads integer field key of the checkpoint's "data" object; 0 or -1 with
 * err naming the file and field. */
int ckpt_data_int(const struct train_ctl *ctl, const char *key, long *out, char *err, size_t errlen);
/* Reads RNG field key of the checkpoint's "data" object; 0 or -1. */
int ckpt_data_rng(const struct train_ctl *ctl, const char *key, struct rng *r, char *err, size_t errlen);
/* An RNG state as JSON (four hex strings); a new reference. */
json_t *ckpt_rng_json(const struct rng *r);

#endif
