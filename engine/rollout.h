/* engine/rollout.h — what GRPO and eval share: an RL dataset in memory,
 * prompts rendered from its rows, and groups of completions sampled by the
 * generation engine. Not here: rewards (engine/rewards.h), the loss. */
#ifndef AHA_ROLLOUT_H
#define AHA_ROLLOUT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "chat_template.h"
#include "generate.h"
#include "rewards.h"
#include "tokenizer.h"

struct rl_dataset {
    json_t *rows;               /* array of row objects (owned) */
    int n;
};

/* Reads JSONL rows {"prompt"|"messages", ...fields}; every row must have a
 * prompt and the fields the reward spec reads (spec may be NULL). Returns 0
 * or -1 with err naming file:line and field. */
int rl_dataset_load(struct rl_dataset *d, const char *path, const struct reward_spec *spec,
                    char *err, size_t errlen);
void rl_dataset_free(struct rl_dataset *d);

/* How a row becomes prompt text: a chat template, or a plain template with
 * "{prompt}" replaced by the row's prompt (e.g. "User: {prompt}\nAssistant:"),
 * which suits base models trained on such text. */
struct rl_prompting {
    const struct tokenizer *tok;
    enum chat_template_kind kind;
    const char *plain;          /* non-NULL: use it instead of the template */
    bool prefill_think;
    int max_prompt_tokens;      /* longer prompts keep their last tokens */
};

/* Fills pr for a model directory: loads DIR/tokenizer.json (owned by pr,
 * freed by rl_prompting_close) and picks the chat template (chat_template
 * by name, else the model's own) unless plain is set. Returns 0 or -1. */
int rl_prompting_open(struct rl_prompting *pr, const char *model_dir, const char *chat_template,
                      const char *plain, bool prefill_think, int max_prompt_tokens,
                      char *err, size_t errlen);
void rl_prompting_close(struct rl_prompting *pr);

/* The user-visible prompt text of a row (its "prompt", or the last user
 * message); borrowed from the row. */
const char *rl_row_prompt(const json_t *row);

/* One sampled completion. */
struct rollout {
    int row;
    int32_t *prompt;            /* (n_prompt) owned */
    int n_prompt;
    int32_t *tokens;            /* (n_tokens) completion ids, final stop id included */
    float *logprobs;            /* (n_tokens) the sampler's log-probs of them */
    int n_tokens;
    char *text;                 /* completion text (NUL-terminated), owned; starts
                                 * with the template's prefilled "<think>" when
                                 * prefill_think is set */
    size_t text_len;
    bool truncated;             /* stopped by max_tokens */
};
void rollout_free(struct rollout *r);

/* Samples n_per_row completions for each of rows[0..n_rows) with the engine
 * (all requests in flight together: continuous batching), sample j of row i
 * seeded with (seed, i, j). out: (n_rows * n_per_row), row-major by row.
 * Returns 0 or -1 with err. */
int rollout_generate(struct gen_engine *ge, const struct rl_dataset *d,
                     const struct rl_prompting *pr, const int *rows, int n_rows,
                     int n_per_row, const struct sampler_params *sp, int max_tokens,
                     uint64_t seed, struct rollout *out, char *err, size_t errlen);

/* The reward items of out[0..n): prompt text and dataset fields of each
 * rollout's row, its completion (all borrowed from d and out). */
void rl_reward_items(const struct rl_dataset *d, const struct rollout *out, int n,
                     struct reward_item *items);

/* The defaults every stage that samples shares (grpo, eval, generate,
 * rejection_sample), set in the same-named fields of its options o; the
 * pipeline reads them back as SAMPLING_PARAMS (engine/pipeline.c). */
#define ROLLOUT_OPTS_DEFAULTS(o)                                                                 \
    do {                                                                                         \
        (o)->max_prompt_length = 512;                                                            \
        (o)->log_completions = 2;                                                                \
        (o)->kv_cache_mb = 256;                                                                  \
        (o)->kv_dtype = KV_F16;                                                                  \
        (o)->dtype = W_F32;                                                                      \
        (o)->seed = 1;                                                                           \
    } while (0)

/* Event callback to pass to gen_engine_new for engines used with
 * rollout_generate (ctx unused). */
void rollout_on_event(void *ctx, const struct gen_event *ev);

#endif
