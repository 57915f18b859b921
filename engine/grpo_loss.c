/* engine/grpo_loss.c — GRPO advantages and the clipped surrogate loss with
 * its analytic gradient d loss / d logp (see grpo_loss.h). Pure math on flat
 * buffers, double accumulation; no model or optimizer state here.
 *
 * Sources: DeepSeekMath (arXiv 2402.03300) eq. 3 (objective) and eq. 4 (k3
 * KL estimator); DeepSeek-R1 (2501.12948) eq. 3 (advantages); DAPO
 * (2503.14476) clip-higher and token-level normalisation; Dr. GRPO
 * (2503.20783) constant normaliser and no std scaling; GSPO (2507.18071)
 * sequence-level importance ratio. Aggregations and metrics as in TRL's
 * GRPOTrainer._compute_loss. */
#include "grpo_loss.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

int grpo_scale_parse(const char *s, enum grpo_scale *out)
{
    if (strcmp(s, "group") == 0) *out = GRPO_SCALE_GROUP;
    else if (strcmp(s, "batch") == 0) *out = GRPO_SCALE_BATCH;
    else if (strcmp(s, "none") == 0) *out = GRPO_SCALE_NONE;
    else return -1;
    return 0;
}

int grpo_loss_type_parse(const char *s, enum grpo_loss_type *out)
{
    if (strcmp(s, "grpo") == 0) *out = GRPO_LOSS_GRPO;
    else if (strcmp(s, "bnpo") == 0) *out = GRPO_LOSS_BNPO;
    else if (strcmp(s, "dapo") == 0) *out = GRPO_LOSS_DAPO;
    else if (strcmp(s, "dr_grpo") == 0) *out = GRPO_LOSS_DR_GRPO;
    else return -1;
    return 0;
}

int grpo_is_level_parse(const char *s, enum grpo_is_level *out)
{
    if (strcmp(s, "token") == 0) *out = GRPO_IS_TOKEN;
    else if (strcmp(s, "sequence") == 0) *out = GRPO_IS_SEQUENCE;
    else return -1;
    return 0;
}

int grpo_ris_mode_parse(const char *s, enum grpo_ris_mode *out)
{
    static const char *const names[] = {"none", "token_truncate", "token_mask",
                                        "sequence_truncate", "sequence_mask"};
    for (int i = 0; i < 5; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (enum grpo_ris_mode)i;
            return 0;
        }
    return -1;
}

void grpo_ris_weights(enum grpo_ris_mode mode, double cap, int B, int T, const float *old_logp,
                      const float *sampler_logp, const float *mask, float *isw,
                      struct grpo_ris_metrics *metrics)
{
    const bool seq = mode == GRPO_RIS_SEQUENCE_TRUNCATE || mode == GRPO_RIS_SEQUENCE_MASK;
    const bool cut = mode == GRPO_RIS_TOKEN_MASK || mode == GRPO_RIS_SEQUENCE_MASK;
    double rmin = INFINITY, rmax = -INFINITY, rsum = 0, n = 0, masked = 0, dsum = 0, tokens = 0;
    for (int b = 0; b < B; b++) {
        const size_t o = (size_t)b * T;
        double sum = 0;
        for (int t = 0; t < T; t++)
            if (mask[o + t] != 0) {
                const double d = (double)old_logp[o + t] - sampler_logp[o + t];
                sum += d;
                dsum += fabs(d);
                tokens++;
            }
        bool any = false;
        const double rseq = seq ? exp(sum) : 0.0;
        for (int t = 0; t < T; t++) {
            const size_t i = o + t;
            if (mask[i] == 0) {
                isw[i] = 0.0f;
                continue;
            }
            const double r = seq ? rseq : exp((double)old_logp[i] - sampler_logp[i]);
            const double w = cut ? (r > cap ? 0.0 : r) : (r < cap ? r : cap);
            if (!seq || !any) {   /* a sequence's weight counts once */
                rmin = w < rmin ? w : rmin;
                rmax = w > rmax ? w : rmax;
                rsum += w;
                n++;
                masked += cut && r > cap;
                any = true;
            }
            isw[i] = (float)w;
        }
    }
    if (metrics) {
        metrics->ratio_min = n ? rmin : 0;
        metrics->ratio_max = n ? rmax : 0;
        metrics->ratio_mean = n ? rsum / n : 0;
        metrics->masked = n ? masked / n : 0;
        metrics->logp_diff_mean = tokens ? dsum / tokens : 0;
        metrics->count = n;
        metrics->tokens = tokens;
    }
}

/* Unbiased std (torch.std) of the valid entries of x[0..n); sets *count. */
static double std_unbiased(const float *x, const unsigned char *valid, int n,
                           double *mean_out, int *count)
{
    double sum = 0;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (!valid || valid[i]) {
            sum += x[i];
            k++;
        }
    *count = k;
    double mean = k ? sum / k : 0;
    *mean_out = mean;
    if (k < 2)
        return 0;
    double ss = 0;
    for (int i = 0; i < n; i++)
        if (!valid || valid[i])
            ss += ((double)x[i] - mean) * ((double)x[i] - mean);
    return sqrt(ss / (k - 1));
}

/* True when the valid entries of x[0..n) are all equal (or fewer than 2). */
static bool all_equal(const float *x, const unsigned char *valid, int n)
{
    bool have = false;
    float first = 0;
    for (int i = 0; i < n; i++) {
        if (valid && !valid[i])
            continue;
        if (!have) {
            first = x[i];
            have = true;
        } else if (x[i] != first) {
            return false;
        }
    }
    return true;
}

int grpo_advantages(const float *rewards, const unsigned char *valid, int n_groups,
                    int group_size, enum grpo_scale scale, double eps, float *adv,
                    int *zero_std_groups, char *err, size_t errlen)
{
    if (n_groups < 1 || group_size < 1) {
        snprintf(err, errlen, "grpo advantages: %d groups of %d: expected at least 1 of 1",
                 n_groups, group_size);
        return -1;
    }
    if (!(eps >= 0) || !isfinite(eps)) {
        snprintf(err, errlen, "grpo advantages: eps must be finite and >= 0");
        return -1;
    }
    size_t n = (size_t)n_groups * (size_t)group_size;
    for (size_t i = 0; i < n; i++)
        if ((!valid || valid[i]) && !isfinite(rewards[i])) {
            snprintf(err, errlen, "grpo advantages: reward %zu is not finite", i);
            return -1;
        }
    double batch_mean;
    int batch_count;
    double batch_std = std_unbiased(rewards, valid, (int)n, &batch_mean, &batch_count);
    int zero = 0;
    for (int g = 0; g < n_groups; g++) {
        const float *r = rewards + (size_t)g * group_size;
        const unsigned char *v = valid ? valid + (size_t)g * group_size : NULL;
        float *a = adv + (size_t)g * group_size;
        double mean;
        int count;
        double std = std_unbiased(r, v, group_size, &mean, &count);
        /* TRL counts zero-std groups with torch.isclose(std, 0); an exact
         * equality test is what makes "all equal" advantages exactly 0. */
        bool flat = all_equal(r, v, group_size);
        if (flat || std < 1e-8)
            zero++;
        double denom = scale == GRPO_SCALE_GROUP ? std + eps
                     : scale == GRPO_SCALE_BATCH ? batch_std + eps : 1.0;
        for (int i = 0; i < group_size; i++) {
            if (flat || (v && !v[i]) || denom <= 0)
                a[i] = 0.0f;
            else
                a[i] = (float)(((double)r[i] - mean) / denom);
        }
    }
    if (zero_std_groups)
        *zero_std_groups = zero;
    return 0;
}

/* Checks p and the sizes; returns 0 or -1 with err filled. */
static int check_params(const struct grpo_loss_params *p, int B, int T, const float *ref_logp,
                        char *err, size_t errlen)
{
    if (B < 1 || T < 1) {
        snprintf(err, errlen, "grpo loss: batch %d x %d: expected at least 1 x 1", B, T);
        return -1;
    }
    if ((unsigned)p->loss_type > GRPO_LOSS_DR_GRPO || (unsigned)p->is_level > GRPO_IS_SEQUENCE) {
        snprintf(err, errlen, "grpo loss: unknown loss_type or importance_sampling_level");
        return -1;
    }
    if (!(p->epsilon_low >= 0 && p->epsilon_low <= 1) || !(p->epsilon_high >= 0) ||
        !isfinite(p->epsilon_high)) {
        snprintf(err, errlen, "grpo loss: epsilon %g / epsilon_high %g out of range",
                 p->epsilon_low, p->epsilon_high);
        return -1;
    }
    if (!(p->beta >= 0) || !isfinite(p->beta)) {
        snprintf(err, errlen, "grpo loss: beta %g: expected a finite number >= 0", p->beta);
        return -1;
    }
    if (p->beta > 0 && !ref_logp) {
        snprintf(err, errlen, "grpo loss: beta > 0 needs reference log-probs");
        return -1;
    }
    if (p->loss_type == GRPO_LOSS_DR_GRPO && p->max_completion_length < 1) {
        snprintf(err, errlen, "grpo loss: dr_grpo needs max_completion_length >= 1");
        return -1;
    }
    if (p->grad_accum_steps < 1) {
        snprintf(err, errlen, "grpo loss: grad_accum_steps %d: expected >= 1",
                 p->grad_accum_steps);
        return -1;
    }
    return 0;
}

int grpo_loss(const struct grpo_loss_params *p, int B, int T, const float *logp,
              const float *old_logp, const float *ref_logp, const float *adv,
              const float *mask, const float *isw, double *loss, float *dlogp,
              struct grpo_loss_metrics *metrics, char *err, size_t errlen)
{
    if (check_params(p, B, T, ref_logp, err, errlen) != 0)
        return -1;
    if (!old_logp)
        old_logp = logp;
    const bool use_kl = p->beta > 0;
    const double lo = 1.0 - p->epsilon_low, hi = 1.0 + p->epsilon_high;

    double total_tokens = 0;
    for (size_t i = 0; i < (size_t)B * T; i++)
        total_tokens += mask[i] != 0;
    const double tokens_clamped = total_tokens > 1 ? total_tokens : 1;

    double L = 0, kl_sum = 0, low = 0, high = 0, region = 0;
    for (int b = 0; b < B; b++) {
        const size_t o = (size_t)b * T;
        double len = 0, log_ratio_sum = 0;
        for (int t = 0; t < T; t++)
            if (mask[o + t] != 0) {
                len++;
                log_ratio_sum += (double)logp[o + t] - old_logp[o + t];
            }
        /* w: the weight of each masked token's loss in the total, by
         * loss_type. grpo: 1/(B |o_i|) (DeepSeekMath eq. 3's per-sequence
         * mean); bnpo: 1/tokens; dapo: 1/global tokens (DAPO eq. 8's
         * token-level sum); dr_grpo: 1/(B * max_len) (Dr. GRPO eq. 3). */
        double w;
        switch (p->loss_type) {
        case GRPO_LOSS_GRPO: w = 1.0 / ((double)B * (len > 1 ? len : 1)); break;
        case GRPO_LOSS_BNPO: w = 1.0 / tokens_clamped; break;
        case GRPO_LOSS_DAPO:
            w = 1.0 / (p->dapo_num_tokens > 0 ? p->dapo_num_tokens : tokens_clamped);
            break;
        default: w = 1.0 / ((double)B * p->max_completion_length); break;
        }
        if (p->loss_type != GRPO_LOSS_DAPO)
            w /= p->grad_accum_steps;
        const double A = adv[b];

        /* GSPO eq. 7: s_i = exp(mean_t (logp - old)); its derivative with
         * respect to each logp_t is s_i / |o_i|, and the per-token loss is
         * repeated on each of the |o_i| tokens, so d/dlogp_t of the
         * sequence's policy term is w * (-A s_i) exactly as at token level. */
        double seq_ratio = 0, isw_mean = 0;
        bool seq_low = false, seq_high = false;
        if (p->is_level == GRPO_IS_SEQUENCE) {
            /* the weighted copies of the sequence's loss all move with s_i:
             * each logp_t's gradient carries the mean weight */
            for (int t = 0; isw && t < T; t++) isw_mean += mask[o + t] != 0 ? isw[o + t] : 0;
            isw_mean /= len > 1 ? len : 1;
            seq_ratio = exp(log_ratio_sum / (len > 1 ? len : 1));
            seq_low = seq_ratio < lo && A < 0;
            seq_high = seq_ratio > hi && A > 0;
            low += seq_low;
            high += seq_high;
            region += seq_low || seq_high;
        }
        for (int t = 0; t < T; t++) {
            const size_t i = o + t;
            if (mask[i] == 0) {
                dlogp[i] = 0.0f;
                continue;
            }
            double r;
            bool is_low, is_high;
            if (p->is_level == GRPO_IS_SEQUENCE) {
                r = seq_ratio;
                is_low = seq_low;
                is_high = seq_high;
            } else {
                r = exp((double)logp[i] - old_logp[i]);
                is_low = r < lo && A < 0;
                is_high = r > hi && A > 0;
                low += is_low;
                high += is_high;
                region += is_low || is_high;
            }
            /* -min(r A, clip(r) A): the clipped branch is the smaller one
             * exactly when is_low or is_high, and then has zero gradient. */
            double rc = r < lo ? lo : r > hi ? hi : r;
            double u = r * A, c = rc * A;
            double tok_loss = -(u < c ? u : c);
            double g = (is_low || is_high) ? 0.0 : -A * r;
            if (isw) {   /* TRL: the policy term only, before the KL's */
                tok_loss *= isw[i];
                g *= p->is_level == GRPO_IS_SEQUENCE ? isw_mean : isw[i];
            }
            if (use_kl) {
                /* k3 (DeepSeekMath eq. 4): pi_ref/pi - log(pi_ref/pi) - 1 */
                double d = (double)ref_logp[i] - logp[i];
                double kl = exp(d) - d - 1.0;
                kl_sum += kl;
                tok_loss += p->beta * kl;
                g += p->beta * (1.0 - exp(d));
            }
            L += w * tok_loss;
            dlogp[i] = (float)(w * g);
        }
    }
    *loss = L;
    if (metrics) {
        double denom = p->is_level == GRPO_IS_SEQUENCE ? (double)B : tokens_clamped;
        metrics->kl = use_kl ? kl_sum / tokens_clamped : 0.0;
        metrics->clip_low = low / denom;
        metrics->clip_high = high / denom;
        metrics->clip_region = region / denom;
        metrics->num_tokens = total_tokens;
    }
    return 0;
}
