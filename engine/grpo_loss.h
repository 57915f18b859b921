/* engine/grpo_loss.h — the GRPO objective as pure functions: group-relative
 * advantages from rewards, and the clipped surrogate loss with its gradient
 * with respect to the per-token log-probabilities (what the model's backward
 * consumes) and the metrics TRL reports. No model, no sampling, no optimizer:
 * the trainer calls these. Semantics follow TRL's GRPOTrainer. */
#ifndef AHA_GRPO_LOSS_H
#define AHA_GRPO_LOSS_H

#include <stddef.h>

enum grpo_scale {
    GRPO_SCALE_GROUP,   /* divide by the std of the sample's group (DeepSeekMath) */
    GRPO_SCALE_BATCH,   /* divide by the std of the whole batch */
    GRPO_SCALE_NONE,    /* no division (Dr. GRPO) */
};

enum grpo_loss_type {
    GRPO_LOSS_GRPO,     /* per-sequence token mean, then mean over sequences */
    GRPO_LOSS_BNPO,     /* token sum / tokens in this (micro-)batch */
    GRPO_LOSS_DAPO,     /* token sum / tokens in the global batch */
    GRPO_LOSS_DR_GRPO,  /* token sum / (sequences * max_completion_length) */
};

enum grpo_is_level {
    GRPO_IS_TOKEN,      /* per-token ratio (PPO/GRPO) */
    GRPO_IS_SEQUENCE,   /* one length-normalised ratio per sequence (GSPO) */
};

/* Correction of the sampler/trainer mismatch (TRL's
 * vllm_importance_sampling_mode; truncated IS of Yao et al. 2025): the
 * rollouts come from the generation engine, whose numerics (bf16, int8 or
 * 4-bit weights, its own kernels) differ from the trainer's, so each
 * token's policy loss is weighted by how much likelier the trainer's old
 * policy makes it than the sampler did. */
enum grpo_ris_mode {
    GRPO_RIS_NONE,
    GRPO_RIS_TOKEN_TRUNCATE,     /* per token, min(ratio, cap) */
    GRPO_RIS_TOKEN_MASK,         /* per token, 0 where ratio > cap */
    GRPO_RIS_SEQUENCE_TRUNCATE,  /* one ratio per sequence (the product), min(., cap) */
    GRPO_RIS_SEQUENCE_MASK,      /* one ratio per sequence, 0 when > cap */
};

/* Parse the spec strings ("group"/"batch"/"none"; "grpo"/"bnpo"/"dapo"/
 * "dr_grpo"; "token"/"sequence"; "none"/"token_truncate"/"token_mask"/
 * "sequence_truncate"/"sequence_mask"). Each returns 0, or -1 when unknown. */
int grpo_scale_parse(const char *s, enum grpo_scale *out);
int grpo_loss_type_parse(const char *s, enum grpo_loss_type *out);
int grpo_is_level_parse(const char *s, enum grpo_is_level *out);
int grpo_ris_mode_parse(const char *s, enum grpo_ris_mode *out);

/* The importance weights as applied (after the cap or the mask), over the
 * tokens (token modes) or the sequences (sequence modes), as TRL logs them. */
struct grpo_ris_metrics {
    double ratio_min, ratio_mean, ratio_max;
    double logp_diff_mean;       /* mean |old - sampler| over the masked tokens */
    double masked;               /* share of tokens (or sequences) a mask mode zeroed */
    double count, tokens;        /* the tokens (or sequences) counted; the tokens */
};

/* isw (B,T): the weights of mode (not GRPO_RIS_NONE) from the trainer's
 * log-probs at generation time old_logp and the sampler's sampler_logp,
 * both (B,T), over the tokens where mask is 1 (0 elsewhere), as TRL
 * computes them: d = old - sampler per token; token modes: ratio_t =
 * exp(d_t); sequence modes: ratio = exp(sum_t d_t) for all of the
 * sequence's tokens; truncate: min(ratio, cap); mask: 0 where ratio > cap.
 * metrics may be NULL. */
void grpo_ris_weights(enum grpo_ris_mode mode, double cap, int B, int T, const float *old_logp,
                      const float *sampler_logp, const float *mask, float *isw,
                      struct grpo_ris_metrics *metrics);

/* Group-relative advantages (DeepSeekMath 2402.03300 §4.1.2; R1 2501.12948
 * eq. 3): A_i = (r_i - mean(group)) / (std + eps), std being the unbiased
 * (Bessel) std of the group, or of the whole batch for GRPO_SCALE_BATCH
 * (TRL), and no division for GRPO_SCALE_NONE. The mean is always the group's.
 * A group whose valid rewards are all equal (or that has fewer than two
 * valid members) gets exactly 0.
 * rewards: (n_groups, group_size), consecutive per group; valid: same shape,
 * NULL = all valid; invalid samples (a reward excluded under on_error "skip")
 * take no part in the statistics and get advantage 0. adv: (n_groups,
 * group_size), written. *zero_std_groups (may be NULL) receives the number
 * of groups with zero std (TRL's frac_reward_zero_std numerator).
 * Returns 0, or -1 with err filled (bad sizes, non-finite valid reward). */
int grpo_advantages(const float *rewards, const unsigned char *valid, int n_groups,
                    int group_size, enum grpo_scale scale, double eps, float *adv,
                    int *zero_std_groups, char *err, size_t errlen);

struct grpo_loss_params {
    enum grpo_loss_type loss_type;
    enum grpo_is_level is_level;
    double epsilon_low;          /* clip below at 1 - epsilon_low (TRL epsilon) */
    double epsilon_high;         /* clip above at 1 + epsilon_high (DAPO clip-higher) */
    double beta;                 /* KL coefficient; 0 = no reference model */
    int max_completion_length;   /* dr_grpo's constant normaliser (tokens) */
    /* dapo only: completion tokens in the global batch (all micro-batches of
     * the optimizer step) divided by the number of processes, as TRL's
     * num_items_in_batch / num_processes; <= 0 means this batch's tokens,
     * which makes dapo equal to bnpo. */
    double dapo_num_tokens;
    /* grpo, bnpo and dr_grpo divide by this (TRL's gradient accumulation
     * scaling; dapo's global normaliser already accounts for it); >= 1. */
    int grad_accum_steps;
};

/* Metrics as TRL names and computes them (means over completion tokens, or
 * over sequences for the clip ratios at sequence level). */
struct grpo_loss_metrics {
    double kl;             /* "kl": mean k3 KL per token (0 when beta == 0) */
    double clip_low;       /* "clip_ratio/low_mean": ratio < 1-eps_low with A < 0 */
    double clip_high;      /* "clip_ratio/high_mean": ratio > 1+eps_high with A > 0 */
    double clip_region;    /* "clip_ratio/region_mean": either */
    double num_tokens;     /* completion tokens in the batch (mask sum) */
};

/* The GRPO loss over a padded batch of B sequences of T completion tokens
 * and its gradient d loss / d logp.
 *   per-token ratio r = exp(logp - old_logp), or at sequence level
 *   r = exp(sum_t m_t (logp_t - old_t) / sum_t m_t) (GSPO 2507.18071 eq. 7);
 *   per-token loss = -min(r A, clip(r, 1-eps_low, 1+eps_high) A) [* isw]
 *                    + beta * (exp(ref - logp) - (ref - logp) - 1)
 *   (DeepSeekMath 2402.03300 eq. 3 and the k3 estimator of eq. 4; clip-higher
 *   from DAPO 2503.14476 §3.1), aggregated by loss_type.
 * logp, old_logp, ref_logp, mask: (B,T); adv: (B); dlogp: (B,T), written
 * (0 where mask is 0). old_logp NULL means old == logp (μ = 1: the ratio is 1
 * but its gradient flows, as TRL's detach). ref_logp may be NULL only when
 * beta == 0. isw (B,T): importance weights of the policy term
 * (grpo_ris_weights; NULL: none), constants as TRL's. mask entries are 0 or
 * 1. All pointers are borrowed; metrics may be NULL. Returns 0, or -1 with
 * err filled (bad parameters or sizes). */
int grpo_loss(const struct grpo_loss_params *p, int B, int T, const float *logp,
              const float *old_logp, const float *ref_logp, const float *adv,
              const float *mask, const float *isw, double *loss, float *dlogp,
              struct grpo_loss_metrics *metrics, char *err, size_t errlen);

#endif
