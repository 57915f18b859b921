/* engine/grpo.h — the GRPO trainer (DeepSeekMath, arXiv 2402.03300, §4;
 * DeepSeek-R1, arXiv 2501.12948, eq. 1-3) and the eval stage: sample a group
 * of completions per prompt with the generation engine, score them with a
 * reward spec, turn rewards into group-relative advantages, and step the
 * policy on the clipped surrogate (engine/grpo_loss.h). Events are NDJSON. */
#ifndef AHA_GRPO_H
#define AHA_GRPO_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "backend.h"
#include "checkpoint.h"
#include "grpo_loss.h"
#include "rewards.h"

struct grpo_opts {
    const char *model_dir, *data, *out, *stage;
    const struct reward_spec *reward;   /* borrowed */
    const char *chat_template;          /* NULL: detect from model_dir */
    const char *prompt_template;        /* plain "{prompt}" template, or NULL */
    bool prefill_think;
    int steps, prompts_per_step, group_size;
    int max_prompt_length, max_completion_length;
    float learning_rate, warmup_ratio, weight_decay, max_grad_norm;
    float temperature, top_p, min_p;
    int top_k;
    double beta, epsilon, epsilon_high;
    enum grpo_loss_type loss_type;
    enum grpo_scale scale_rewards;
    enum grpo_is_level is_level;
    int num_iterations;                 /* mu: optimizer steps per generation batch */
    bool mask_truncated_completions;
    enum grpo_ris_mode ris_mode;        /* sampler/trainer mismatch correction
                                         * (default GRPO_RIS_SEQUENCE_MASK, as TRL) */
    double ris_cap;                     /* its cap C (default 3) */
    bool dynamic_sampling;              /* DAPO: drop all-equal groups, sample more */
    int max_resample_rounds;
    int micro_batch_size;               /* sequences per forward; 0 = group_size */
    int log_completions;                /* sample events per step */
    int checkpoint_every;
    int kv_cache_mb;
    enum kv_dtype kv_dtype;             /* the rollout engine's cache (default KV_F16) */
    enum w_dtype dtype;                 /* its weights (default W_F32; W_BF16: bf16
                                         * rollouts, whose logprobs the fp32 policy
                                         * recomputes for the loss) */
    uint64_t seed;
    struct train_ctl *ctl;              /* resume and safe stop (engine/checkpoint.h); NULL: none */
};
void grpo_opts_default(struct grpo_opts *o);
/* Runs GRPO. Returns 0, TRAIN_STOPPED (o->ctl's stop was set: checkpoint
 * written after the current step) or -1 with err. Sampling is seeded per
 * step (seed, step, resampling round), so a resumed run samples what the
 * uninterrupted one would have. */
int grpo_run(const struct grpo_opts *o, const struct backend *be, FILE *events,
             char *err, size_t errlen);

struct eval_opts {
    const char *model_dir, *data, *stage;
    const struct reward_spec *reward;   /* borrowed; component 0 decides correctness */
    const char *chat_template, *prompt_template;
    bool prefill_think;
    int max_prompt_length, max_completion_length;
    int num_samples;                    /* k for sampled pass@1 and maj@k; 0 = greedy only */
    float temperature, top_p;
    int log_completions;
    int kv_cache_mb;
    enum kv_dtype kv_dtype;
    enum w_dtype dtype;
    uint64_t seed;
};
void eval_opts_default(struct eval_opts *o);
/* Emits one metric event with pass@1 (greedy), pass@1 sampled, unbiased
 * pass@k for k = 2, 4, 8, ... and k = num_samples, maj@k, format rate, mean
 * reward and mean completion length. */
int eval_run(const struct eval_opts *o, const struct backend *be, FILE *events,
             char *err, size_t errlen);

/* The answer a completion gives, for majority voting: the content of its
 * last <answer>...</answer>, else of its last \boxed{...}, else its last
 * number; trimmed. Returns a new string (caller frees), "" when none. */
char *eval_extract_answer(const char *text);
/* Whether text has the R1 shape: <think>...</think> then <answer>...</answer>. */
bool eval_has_format(const char *text);
/* The unbiased pass@k estimate from n samples of which c are correct
 * (Chen et al. 2021, "Evaluating Large Language Models Trained on Code",
 * eq. 1): 1 - C(n-c, k) / C(n, k), the chance that k of the n samples
 * drawn without replacement include a correct one. 0 <= c <= n, 1 <= k <= n. */
double eval_pass_at_k(int n, int c, int k);

#endif
