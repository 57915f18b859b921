/* engine/pretrain.h — pretraining a model from scratch on JSONL {"text"}
 * with aha's byte-level tokenizer: random contiguous windows of the token
 * stream, next-token cross-entropy, AdamW, warmup + cosine learning rate,
 * periodic checkpoints, NDJSON metric events on stdout. */
#ifndef AHA_PRETRAIN_H
#define AHA_PRETRAIN_H

#include <stdint.h>
#include <stdio.h>

#include "checkpoint.h"
#include "model.h"
#include "tokenizer.h"

struct pretrain_opts {
    const char *config;     /* preset name ("tiny", "small") or config.json path */
    const char *init;       /* model directory to continue pretraining (its config,
                             * tokenizer and weights; config must be NULL), or NULL */
    const char *data;       /* JSONL file of {"text": ...} rows */
    const char *out;        /* output model directory */
    const char *stage;      /* stage name in events ("pretrain") */
    int steps;
    int batch;              /* sequences per step */
    int seq_len;            /* tokens per sequence */
    float lr;               /* peak learning rate */
    float min_lr_ratio;     /* final lr = lr * min_lr_ratio */
    int warmup_steps;
    float weight_decay;
    float beta1, beta2, eps;
    float max_grad_norm;    /* 0 = no clipping */
    int checkpoint_every;   /* 0 = only the final model */
    int log_every;
    uint64_t seed;
    struct train_ctl *ctl;  /* resume and safe stop (engine/checkpoint.h); NULL: none */
};

/* Defaults for every field but config, init, data and out. */
void pretrain_opts_default(struct pretrain_opts *o);
/* Learning rate at 0-based step: linear warmup to lr over warmup_steps, then
 * cosine decay to lr * min_lr_ratio at the last step. */
float pretrain_lr(const struct pretrain_opts *o, int step);
/* Reads a JSONL {"text"} file and tokenizes it into one stream, each text
 * followed by eos. Returns the token count and sets *out (caller frees), or
 * -1 with err naming file:line and field. */
long pretrain_load_text(const char *path, const struct tokenizer *tok,
                        int32_t eos, int32_t **out, char *err, size_t errlen);
/* Runs pretraining; events go to `events` (NDJSON), the progress bar to
 * stderr. Returns 0, TRAIN_STOPPED (o->ctl's stop was set: a checkpoint
 * was written after the current step) or -1 with err filled. */
int pretrain_run(const struct pretrain_opts *o, const struct backend *be,
                 FILE *events, char *err, size_t errlen);

#endif
