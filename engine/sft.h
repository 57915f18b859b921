/* engine/sft.h — supervised fine-tuning: {"prompt","completion"} or
 * {"messages"} rows rendered through the model's chat template, loss on
 * completion / assistant tokens only, optional packing, epochs, warmup +
 * cosine, eval loss on a held-out split. Events are NDJSON on `events`. */
#ifndef AHA_SFT_H
#define AHA_SFT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "chat_template.h"
#include "checkpoint.h"
#include "model.h"
#include "tokenizer.h"

/* One tokenized example: labels[i] is ids[i] where the loss applies
 * (completion / assistant tokens), -1 elsewhere. Caller frees both. */
struct sft_example {
    int32_t *ids;
    int32_t *labels;
    int n;
};

/* Tokenizes one dataset row. Prompt/completion rows (strings, or message
 * lists as in TRL's conversational format) train on the completion;
 * messages rows on every assistant turn whose rendered prefix is stable
 * (templates that rewrite earlier turns, e.g. stripping reasoning, train on
 * the last turn only). An end-of-text id is appended when the template does
 * not end the turn with a special token. eos: that id. Returns 0 or -1 with
 * err naming the field ("field \"completion\" is missing"). */
int sft_tokenize_row(const json_t *row, const struct tokenizer *tok,
                     enum chat_template_kind kind, int32_t eos,
                     struct sft_example *out, char *err, size_t errlen);
void sft_example_free(struct sft_example *e);

/* Training rows of T (input, target) pairs, target[t] = label[t+1] (-1 =
 * no loss). Packed rows hold several examples as independent documents:
 * seg[t] is the index in the row of the first token of t's document, and
 * a document's positions restart at 0 (pos = t - seg), as TRL's
 * padding-free packing with position_ids. Unpacked rows: seg NULL. */
struct sft_rows {
    int T, n, cap;
    int32_t *tok, *tgt;     /* (n,T) */
    int32_t *seg;           /* (n,T) when packed, else NULL */
};

/* Appends examples ex[idx[0..k)] to r (r->T set, r zeroed otherwise on the
 * first call), each truncated to T pairs (the start kept, as TRL). Without
 * packing, one example per row; with packing, each example goes after the
 * previous one when it fits in the rest of the row, else it starts a new
 * row (an example is never split: its second half would train without its
 * prompt). The rest of a row is padding (pad, no loss), a document of its
 * own when packed. Examples whose kept part has no target token are
 * skipped and counted in *skipped. Returns 0 or -1 (out of memory). */
int sft_rows_build(struct sft_rows *r, const struct sft_example *ex, const int *idx, int k,
                   bool packing, int32_t pad, int *skipped);
/* Copies row `row` of r into tok, tgt, pos, seg: (T) each, the arguments
 * of model_forward_segmented (seg all 0 for unpacked rows); row -1 gives a
 * filler row with no loss. */
void sft_rows_get(const struct sft_rows *r, int row, int32_t *tok, int32_t *tgt, int32_t *pos,
                  int32_t *seg);
void sft_rows_free(struct sft_rows *r);

struct sft_opts {
    const char *model_dir;      /* input model (config, weights, tokenizer) */
    const char *data;           /* JSONL rows */
    const char *out;            /* output model directory */
    const char *stage;          /* name in events ("sft") */
    const char *template_name;  /* NULL = detect from model_dir */
    int epochs;
    int max_steps;              /* 0 = epochs decide */
    int batch;                  /* sequences per step */
    int seq_len;                /* tokens per sequence (examples truncated) */
    bool packing;               /* several examples per row, each its own
                                   document (sft_rows_build) */
    float lr, min_lr_ratio, warmup_ratio, weight_decay, max_grad_norm;
    float eval_fraction;        /* held-out share of rows, [0, 0.5] */
    int eval_every;             /* steps; 0 = only at the end */
    int log_every;
    int checkpoint_every;       /* 0 = only the final model */
    uint64_t seed;
    struct train_ctl *ctl;      /* resume and safe stop (engine/checkpoint.h); NULL: none */
    /* Logit distillation (the distill stage; GKD, Agarwal et al. 2024, as
     * TRL's GKDTrainer with lmbda 0): with a teacher, the loss is the mean
     * over completion tokens of the generalized JSD (engine/kd_loss.h)
     * between the student's and the teacher's next-token distributions at
     * temperature kd_temperature, beta kd_beta (0 forward KL, 1 reverse
     * KL), instead of the completion's negative log-likelihood. */
    const char *teacher_dir;    /* NULL: plain SFT */
    float kd_beta, kd_temperature;
    /* On-policy share (GKD's lambda, TRL's lmbda): each step, with this
     * probability, the batch's completions are replaced by the student's
     * own, sampled from its prompts at kd_temperature, at most
     * max_new_tokens each (and what fits in seq_len); needs packing off. */
    float lmbda;
    int max_new_tokens;
    const char *kind;           /* "sft" or "distill": events and checkpoints */
};

void sft_opts_default(struct sft_opts *o);
/* Runs SFT, or distillation when o->teacher_dir is set. Returns 0, TRAIN_STOPPED (o->ctl's stop was set: checkpoint
 * written after the current step), or -1 with err filled (dataset errors
 * name file:line and field). */
int sft_run(const struct sft_opts *o, const struct backend *be, FILE *events,
            char *err, size_t errlen);

#endif
