/* engine/kd_loss.c — the generalized JSD of knowledge distillation and its
 * analytic gradient with respect to the student logits (see kd_loss.h).
 * Pure math on flat buffers, double accumulation; no model state here.
 *
 * Source: GKD (Agarwal et al. 2024, arXiv 2306.13649) eq. 1, as TRL's
 * GKDTrainer.generalized_jsd_loss computes it (F.kl_div with log targets,
 * the mixture's log through logsumexp with log1p(-beta) and log(beta)).
 *
 * Gradient. With s = softmax(zs/tau), d s_i / d zs_j = s_i (delta_ij - s_j)
 * / tau, so for g_i = d loss / d s_i:
 *   d loss / d zs_j = s_j (g_j - sum_i s_i g_i) / tau,
 * and a constant added to every g_i cancels. Up to such constants:
 *   beta = 0:  g_i = -t_i / s_i, which gives (s_j - t_j) / tau;
 *   beta = 1:  g_i = ls_i - lt_i, and sum_i s_i g_i is the loss itself;
 *   else:      g_i = (1-beta) (ls_i - lm_i) (the terms through m cancel:
 *              -(1-beta) (beta t_i + (1-beta) s_i) / m_i = -(1-beta)),
 *              and sum_i s_i g_i = (1-beta) KL(s || m). */
#include "kd_loss.h"

#include <math.h>
#include <stdio.h>

/* Rows run in blocks whose per-row losses (double) are summed in row order
 * after each block, so the returned sum does not depend on the thread
 * count; a block is parallel when it holds at least KD_PAR_MIN logits. */
#define KD_BLOCK_ROWS 256
#define KD_PAR_MIN 32768

int kd_params_check(float beta, float tau, char *err, size_t errlen)
{
    if (!(beta >= 0.0f && beta <= 1.0f)) {
        snprintf(err, errlen, "kd loss: beta %g: expected a number in [0, 1]", (double)beta);
        return -1;
    }
    if (!(tau > 0.0f) || !isfinite(tau)) {
        snprintf(err, errlen, "kd loss: temperature %g: expected a finite number > 0",
                 (double)tau);
        return -1;
    }
    return 0;
}

/* log(exp(x) + exp(y)), -inf when both are. */
static double logaddexp(double x, double y)
{
    const double hi = fmax(x, y), lo = fmin(x, y);
    if (lo == -INFINITY)
        return hi;
    return hi + log1p(exp(lo - hi));
}

/* The log-softmax of one row of z/tau is (z_j - max) / tau - lse. */
struct kd_lsm {
    double max, lse;
};

static struct kd_lsm lsm_of(const float *z, int V, double tau)
{
    double m = -INFINITY, sum = 0;
    for (int j = 0; j < V; j++)
        m = fmax(m, (double)z[j]);
    for (int j = 0; j < V; j++)
        sum += exp(((double)z[j] - m) / tau);
    return (struct kd_lsm){m, log(sum)};
}

static inline double lsm_at(struct kd_lsm a, float z, double tau)
{
    return ((double)z - a.max) / tau - a.lse;
}

/* One row: returns its divergence; when dz is not NULL writes scale times
 * its gradient. zs: (V), zt: (V), dz: (V), may be zs. */
static double kd_row(const float *zs, const float *zt, int V, double beta, double tau,
                     float *dz, double scale)
{
    const struct kd_lsm S = lsm_of(zs, V, tau), T = lsm_of(zt, V, tau);
    const double c = scale / tau;
    if (beta == 0.0) {                  /* KL(t || s) */
        double kl = 0;
        for (int j = 0; j < V; j++) {
            const double lt = lsm_at(T, zt[j], tau), t = exp(lt);
            if (t > 0)
                kl += t * (lt - lsm_at(S, zs[j], tau));
        }
        if (dz)
            for (int j = 0; j < V; j++) {
                const double s = exp(lsm_at(S, zs[j], tau)), t = exp(lsm_at(T, zt[j], tau));
                dz[j] = (float)(c * (s - t));
            }
        return kl;
    }
    if (beta == 1.0) {                  /* KL(s || t) */
        double kl = 0;
        for (int j = 0; j < V; j++) {
            const double ls = lsm_at(S, zs[j], tau), s = exp(ls);
            if (s > 0)
                kl += s * (ls - lsm_at(T, zt[j], tau));
        }
        if (dz)
            for (int j = 0; j < V; j++) {
                const double ls = lsm_at(S, zs[j], tau), s = exp(ls);
                dz[j] = s > 0 ? (float)(c * s * (ls - lsm_at(T, zt[j], tau) - kl)) : 0.0f;
            }
        return kl;
    }
    /* mixture m = (1-beta) s + beta t, in logs as TRL takes it */
    const double la = log1p(-beta), lb = log(beta);
    double kt = 0, ks = 0;              /* KL(t || m), KL(s || m) */
    for (int j = 0; j < V; j++) {
        const double ls = lsm_at(S, zs[j], tau), lt = lsm_at(T, zt[j], tau);
        const double lm = logaddexp(ls + la, lt + lb), s = exp(ls), t = exp(lt);
        if (t > 0)
            kt += t * (lt - lm);
        if (s > 0)
            ks += s * (ls - lm);
    }
    if (dz) {
        const double cs = c * (1.0 - beta);
        for (int j = 0; j < V; j++) {
            const double ls = lsm_at(S, zs[j], tau), s = exp(ls);
            if (s > 0) {
                const double lm = logaddexp(ls + la, lsm_at(T, zt[j], tau) + lb);
                dz[j] = (float)(cs * s * (ls - lm - ks));
            } else {
                dz[j] = 0.0f;
            }
        }
    }
    return beta * kt + (1.0 - beta) * ks;
}

double kd_divergence_rows(const float *zs, const float *zt, int n, int V, float beta, float tau,
                          float *loss, float *dzs, const float *scale)
{
    double total = 0;
    if (n <= 0 || V <= 0)
        return 0;
    for (int r0 = 0; r0 < n; r0 += KD_BLOCK_ROWS) {
        const int nb = n - r0 < KD_BLOCK_ROWS ? n - r0 : KD_BLOCK_ROWS;
        double part[KD_BLOCK_ROWS];
        #pragma omp parallel for schedule(static) if ((size_t)nb * V >= KD_PAR_MIN)
        for (int k = 0; k < nb; k++) {
            const size_t i = (size_t)r0 + k, off = i * (size_t)V;
            part[k] = kd_row(zs + off, zt + off, V, beta, tau, dzs ? dzs + off : NULL,
                             scale ? scale[i] : 1.0);
            if (loss)
                loss[i] = (float)part[k];
        }
        for (int k = 0; k < nb; k++)
            total += part[k];
    }
    return total;
}
