/* engine/sample_stage.h — the pipeline stages that make datasets from a
 * model: `generate` (completions for every prompt of a dataset) and
 * `rejection_sample` (the R1 recipe's step 3, arXiv 2501.12948 §2.3.3:
 * sample several completions per prompt, score them with a reward spec,
 * keep the correct ones as a new SFT set). Both write <out>/data.jsonl,
 * whose rows the sft stage trains on and the rl stages read:
 *   {"prompt": P, "completion": C, ...the input row's other fields,
 *    "finish_reason": "stop"|"length", "completion_tokens": n
 *    [, "reward": total (rejection_sample)]}
 * or, for an input row of "messages", those messages with the completion
 * appended as an assistant message (OpenAI's fine-tuning shape). */
#ifndef AHA_SAMPLE_STAGE_H
#define AHA_SAMPLE_STAGE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "backend.h"
#include "checkpoint.h"
#include "kv_cache.h"
#include "rewards.h"

struct sample_opts {
    const char *model_dir, *data, *out, *stage, *kind;   /* kind: "generate" or "rejection_sample" */
    const struct reward_spec *reward;   /* rejection_sample: borrowed; NULL for generate */
    const char *chat_template, *prompt_template;
    bool prefill_think;
    int max_prompt_length, max_completion_length;
    int num_samples;                    /* completions per prompt */
    float temperature, top_p, min_p;
    int top_k;
    /* rejection_sample: a sample is kept when its reward total is at least
     * min_reward (has_min_reward), else when it is correct (the spec's first
     * component scores 1, as the eval stage counts it); truncated samples
     * are dropped unless keep_truncated; identical completions of a prompt
     * are kept once unless keep_duplicates; at most max_per_prompt per
     * prompt (0 = all), the best rewarded first, then the shorter. */
    bool has_min_reward;
    double min_reward;
    bool keep_truncated, keep_duplicates;
    int max_per_prompt;
    int log_completions;                /* sample events */
    int kv_cache_mb;
    enum kv_dtype kv_dtype;
    enum w_dtype dtype;
    uint64_t seed;
    struct train_ctl *ctl;              /* stop requests (polled between batches); NULL: none */
};

/* Defaults: 1 sample per prompt (generate; 4 for rejection_sample, set by
 * the caller), temperature 0.6 and top_p 0.95 (DeepSeek-R1's sampling),
 * 1024 completion tokens. */
void sample_opts_default(struct sample_opts *o);

/* Runs the stage: prompts in batches through the generation engine, rows
 * written as each batch completes to <out>/data.jsonl.partial, renamed to
 * data.jsonl at the end. Returns 0, TRAIN_STOPPED (the stop flag was set:
 * the partial file is removed) or -1 with err. */
int sample_run(const struct sample_opts *o, const struct backend *be, FILE *events,
               char *err, size_t errlen);

#endif
