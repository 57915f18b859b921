/* tests/unit/test_grpo_loss.c — engine/grpo_loss.c against the PyTorch
 * (TRL-formula, autograd) references in tests/ref/fixtures/grpo.ref, from
 * tests/ref/gen_grpo.py: every loss_type with and without KL, token and
 * sequence importance sampling, μ > 1 with both clip sides active, μ = 1;
 * advantages with all-equal groups; plus finite differences of d loss/d logp
 * and parameter validation. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "grpo.h"
#include "grpo_loss.h"
#include "tests/ref_io.h"

#define GRPO_FIXTURE "tests/ref/fixtures/grpo.ref"

static struct ref_file *rf;

static void load(void)
{
    rf = ref_fixture_load(GRPO_FIXTURE, "tests/ref/gen_grpo.py");
}

static void unload(void)
{
    ref_file_free(rf);
}

static const struct ref_tensor *get(const char *prefix, const char *suffix)
{
    return ref_fixture_get(rf, prefix, suffix);
}

static const float *getf(const char *prefix, const char *suffix)
{
    return (const float *)get(prefix, suffix)->data;
}

struct loss_case {
    char name[64];
    struct grpo_loss_params p;
    bool mu_gt_1;
    int B, T;
    const float *logp, *old, *ref, *adv, *mask;
    float *isw;             /* grpo_ris_weights of the case's .is and .samp, or NULL */
};

static void case_load(int i, struct loss_case *c)
{
    char key[32];
    snprintf(key, sizeof key, "case%d", i);
    const struct ref_tensor *nt = ref_file_get(rf, key);
    cr_assert_not_null(nt);
    cr_assert_lt(nt->numel, sizeof c->name);
    for (size_t k = 0; k < nt->numel; k++)
        c->name[k] = (char)((const int32_t *)nt->data)[k];
    c->name[nt->numel] = 0;
    const float *cfg = getf(c->name, ".cfg");
    c->p = (struct grpo_loss_params){
        .loss_type = (enum grpo_loss_type)cfg[0],
        .is_level = (enum grpo_is_level)cfg[1],
        .epsilon_low = cfg[2],
        .epsilon_high = cfg[3],
        .beta = cfg[4],
        .max_completion_length = (int)cfg[5],
        .dapo_num_tokens = cfg[6],
        .grad_accum_steps = 1,
    };
    c->mu_gt_1 = cfg[7] != 0;
    const struct ref_tensor *lt = get(c->name, ".logp");
    c->B = (int)lt->shape[0];
    c->T = (int)lt->shape[1];
    c->logp = lt->data;
    c->old = getf(c->name, ".old");
    c->ref = getf(c->name, ".ref");
    c->adv = getf(c->name, ".adv");
    c->mask = getf(c->name, ".mask");
    /* importance weights of the sampler's log-probs, from the trainer's at
     * generation time (the old ones, or the current ones when mu = 1) */
    c->isw = NULL;
    char key2[96];
    snprintf(key2, sizeof key2, "%s.is", c->name);
    const struct ref_tensor *is = ref_file_get(rf, key2);
    if (is) {
        const size_t N = (size_t)c->B * c->T;
        const float *is_cfg = is->data;
        c->isw = malloc(sizeof(float) * N);
        cr_assert_not_null(c->isw);
        struct grpo_ris_metrics m;
        grpo_ris_weights((enum grpo_ris_mode)is_cfg[0], is_cfg[1], c->B, c->T,
                         c->mu_gt_1 ? c->old : c->logp, getf(c->name, ".samp"), c->mask, c->isw,
                         &m);
        char what[96];
        snprintf(what, sizeof what, "%s importance weights", c->name);
        cr_expect_eq(ref_compare(what, c->isw, getf(c->name, ".isw"), N, 1e-6f, 1e-5f, NULL), 0);
        cr_expect(m.ratio_min <= m.ratio_mean && m.ratio_mean <= m.ratio_max &&
                  m.ratio_max <= is_cfg[1] && m.logp_diff_mean > 0, "%s: metrics %g %g %g %g",
                  c->name, m.ratio_min, m.ratio_mean, m.ratio_max, m.logp_diff_mean);
    }
}

/* old: the old-policy log-probs; NULL means "old is the current policy"
 * (μ = 1, as the trainer passes it). */
static double run_loss_old(const struct loss_case *c, const float *logp, const float *old,
                           float *dlogp, struct grpo_loss_metrics *m)
{
    char err[256] = "";
    double loss = NAN;
    int rc = grpo_loss(&c->p, c->B, c->T, logp, old,
                       c->p.beta > 0 ? c->ref : NULL, c->adv, c->mask, c->isw, &loss, dlogp, m,
                       err, sizeof err);
    cr_assert_eq(rc, 0, "%s: %s", c->name, err);
    return loss;
}

static double run_loss(const struct loss_case *c, const float *logp, float *dlogp,
                       struct grpo_loss_metrics *m)
{
    return run_loss_old(c, logp, c->mu_gt_1 ? c->old : NULL, dlogp, m);
}

static int n_cases(void)
{
    const struct ref_tensor *t = ref_file_get(rf, "cases");
    cr_assert_not_null(t);
    return ((const int32_t *)t->data)[0];
}

TestSuite(grpo_loss, .init = load, .fini = unload);

Test(grpo_loss, matches_pytorch_every_case)
{
    int n = n_cases();
    cr_assert_geq(n, 16);
    bool saw_low = false, saw_high = false;
    for (int i = 0; i < n; i++) {
        struct loss_case c;
        case_load(i, &c);
        float *d = malloc(sizeof(float) * c.B * c.T);
        struct grpo_loss_metrics m;
        float loss = (float)run_loss(&c, c.logp, d, &m);
        char what[96];
        snprintf(what, sizeof what, "%s loss", c.name);
        cr_expect_eq(ref_compare(what, &loss, getf(c.name, ".loss"), 1, 1e-6f, 1e-5f, NULL), 0);
        snprintf(what, sizeof what, "%s dlogp", c.name);
        cr_expect_eq(ref_compare(what, d, getf(c.name, ".dlogp"), (size_t)c.B * c.T, 1e-7f,
                                 1e-5f, NULL), 0);
        float got[4] = {(float)m.kl, (float)m.clip_low, (float)m.clip_high,
                        (float)m.clip_region};
        snprintf(what, sizeof what, "%s metrics", c.name);
        cr_expect_eq(ref_compare(what, got, getf(c.name, ".metrics"), 4, 1e-6f, 1e-5f, NULL), 0);
        if (c.mu_gt_1 && c.p.is_level == GRPO_IS_TOKEN) {
            saw_low |= m.clip_low > 0;
            saw_high |= m.clip_high > 0;
        }
        if (!c.mu_gt_1)
            cr_expect_eq(m.clip_region, 0, "%s: μ = 1 never clips", c.name);
        free(d);
        free(c.isw);
    }
    cr_expect(saw_low && saw_high, "the μ > 1 fixtures must clip on both sides");
}

/* Central differences in double around each float32 logp; the loss is
 * piecewise smooth, so points within h of a clip boundary are skipped. For
 * μ = 1 the old log-probs are held at the unperturbed values (what the
 * detach in TRL means), against the gradient of the old = NULL call. */
Test(grpo_loss, finite_differences)
{
    int n = n_cases();
    for (int i = 0; i < n; i++) {
        struct loss_case c;
        case_load(i, &c);
        size_t N = (size_t)c.B * c.T;
        float *x = malloc(sizeof(float) * N), *d = malloc(sizeof(float) * N),
              *scratch = malloc(sizeof(float) * N);
        memcpy(x, c.logp, sizeof(float) * N);
        run_loss(&c, x, d, NULL);
        const float h = 1e-3f;
        size_t compared = 0, active = 0;
        for (size_t k = 0; k < N; k++) {
            if (c.mask[k] == 0) {
                cr_expect_eq(d[k], 0.0f, "%s: masked token %zu has a gradient", c.name, k);
                continue;
            }
            active++;
            const float *old = c.mu_gt_1 ? c.old : c.logp;
            const float x0 = x[k], xp = x0 + h, xm = x0 - h;
            x[k] = xp;
            double lp = run_loss_old(&c, x, old, scratch, NULL);
            x[k] = xm;
            double lm = run_loss_old(&c, x, old, scratch, NULL);
            x[k] = x0;
            double fd = (lp - lm) / ((double)xp - (double)xm);
            /* a kink (clip boundary) between x-h and x+h shows as a
             * mismatch between the one-sided slopes: skip those */
            double l0 = run_loss_old(&c, x, old, scratch, NULL);
            double right = (lp - l0) / ((double)xp - x0), left = (l0 - lm) / ((double)x0 - xm);
            if (fabs(right - left) > 2e-2 * (fabs(right) + fabs(left)) + 1e-6)
                continue;
            cr_expect(fabs(fd - d[k]) <= 2e-4 * fabs(fd) + 2e-6,
                      "%s: token %zu: analytic %.8g vs finite difference %.8g", c.name, k,
                      (double)d[k], fd);
            compared++;
        }
        cr_expect_geq(compared * 3, active * 2, "%s: only %zu of %zu tokens compared", c.name,
                      compared, active);
        free(x);
        free(d);
        free(scratch);
        free(c.isw);
    }
}

Test(grpo_loss, advantages_match_pytorch)
{
    const char *names[] = {"adv_group", "adv_batch", "adv_none"};
    for (int i = 0; i < 3; i++) {
        const struct ref_tensor *rt = get(names[i], ".rewards");
        const int32_t *cfg = get(names[i], ".cfg")->data;
        int G = cfg[0];
        enum grpo_scale scale = (enum grpo_scale)cfg[1];
        int groups = (int)rt->numel / G;
        float adv[64];
        int zero = -1;
        char err[256];
        cr_assert_eq(grpo_advantages(rt->data, NULL, groups, G, scale, 1e-4, adv, &zero, err,
                                     sizeof err), 0, "%s", err);
        cr_expect_eq(ref_compare(names[i], adv, getf(names[i], ".adv"), rt->numel, 1e-5f,
                                 1e-5f, NULL), 0);
        cr_expect_eq(zero, 2, "%s: two all-equal groups", names[i]);
        for (int k = 4; k < 8; k++)
            cr_expect_eq(adv[k], 0.0f, "%s: all-equal group gives exactly 0", names[i]);
    }
}

Test(grpo_loss, advantages_all_equal_inexact_mean_is_zero)
{
    /* 0.1 * 3 / 3 != 0.1 in floating point: still exactly 0 */
    float r[6] = {0.1f, 0.1f, 0.1f, 0.7f, 0.7f, 0.7f}, adv[6];
    char err[128];
    for (int s = 0; s < 3; s++) {
        cr_assert_eq(grpo_advantages(r, NULL, 2, 3, (enum grpo_scale)s, 1e-4, adv, NULL, err,
                                     sizeof err), 0);
        for (int i = 0; i < 6; i++)
            cr_expect_eq(adv[i], 0.0f);
    }
}

Test(grpo_loss, advantages_skip_invalid_samples)
{
    float r[4] = {1.0f, 0.0f, 1e30f, NAN}, adv[4];
    unsigned char valid[4] = {1, 1, 1, 0};
    char err[128];
    cr_assert_eq(grpo_advantages(r, valid, 1, 4, GRPO_SCALE_GROUP, 1e-4, adv, NULL, err,
                                 sizeof err), 0, "%s", err);
    cr_expect_eq(adv[3], 0.0f);
    valid[2] = 0;
    cr_assert_eq(grpo_advantages(r, valid, 1, 4, GRPO_SCALE_NONE, 1e-4, adv, NULL, err,
                                 sizeof err), 0, "%s", err);
    cr_expect_float_eq(adv[0], 0.5f, 1e-7);
    cr_expect_float_eq(adv[1], -0.5f, 1e-7);
    cr_expect_eq(adv[2], 0.0f);
    /* a non-finite reward that is marked valid is an error */
    valid[3] = 1;
    cr_expect_eq(grpo_advantages(r, valid, 1, 4, GRPO_SCALE_GROUP, 1e-4, adv, NULL, err,
                                 sizeof err), -1);
    cr_expect(strstr(err, "reward 3") != NULL, "%s", err);
    /* a group of one has no spread */
    cr_assert_eq(grpo_advantages(r, NULL, 2, 1, GRPO_SCALE_GROUP, 1e-4, adv, NULL, err,
                                 sizeof err), 0);
    cr_expect(adv[0] == 0.0f && adv[1] == 0.0f);
}

Test(grpo_loss, rejects_bad_parameters)
{
    float lp[2] = {-1, -2}, mask[2] = {1, 1}, adv[1] = {1}, d[2];
    double loss;
    char err[256];
    struct grpo_loss_params p = {.loss_type = GRPO_LOSS_DR_GRPO, .epsilon_low = 0.2,
                                 .epsilon_high = 0.2, .grad_accum_steps = 1};
    cr_expect_eq(grpo_loss(&p, 1, 2, lp, NULL, NULL, adv, mask, NULL, &loss, d, NULL, err,
                           sizeof err), -1);
    cr_expect(strstr(err, "max_completion_length") != NULL, "%s", err);
    p.max_completion_length = 4;
    p.beta = 0.1;
    cr_expect_eq(grpo_loss(&p, 1, 2, lp, NULL, NULL, adv, mask, NULL, &loss, d, NULL, err,
                           sizeof err), -1);
    cr_expect(strstr(err, "reference") != NULL, "%s", err);
    p.beta = 0;
    p.grad_accum_steps = 0;
    cr_expect_eq(grpo_loss(&p, 1, 2, lp, NULL, NULL, adv, mask, NULL, &loss, d, NULL, err,
                           sizeof err), -1);
    p.grad_accum_steps = 2;
    cr_assert_eq(grpo_loss(&p, 1, 2, lp, NULL, NULL, adv, mask, NULL, &loss, d, NULL, err,
                           sizeof err), 0);
    /* μ = 1, A = 1: loss = -sum r A / (B * L * accum) = -2 / 8; d = -1/8 each */
    cr_expect_float_eq(loss, -0.25, 1e-12);
    cr_expect_float_eq(d[0], -0.125f, 1e-7);
    enum grpo_loss_type lt;
    enum grpo_is_level lv;
    enum grpo_scale sc;
    cr_expect_eq(grpo_loss_type_parse("dr_grpo", &lt), 0);
    cr_expect_eq(lt, GRPO_LOSS_DR_GRPO);
    cr_expect_eq(grpo_loss_type_parse("ppo", &lt), -1);
    cr_expect_eq(grpo_is_level_parse("sequence", &lv), 0);
    cr_expect_eq(grpo_is_level_parse("seq", &lv), -1);
    cr_expect_eq(grpo_scale_parse("batch", &sc), 0);
    cr_expect_eq(grpo_scale_parse("std", &sc), -1);
}

Test(grpo_loss, empty_sequence_contributes_nothing)
{
    /* a fully masked row (e.g. an excluded sample): no NaN, no gradient */
    float lp[4] = {-1, -2, -3, -4}, mask[4] = {1, 1, 0, 0}, adv[2] = {1, -1}, d[4];
    double loss;
    char err[256];
    for (int lt = 0; lt < 4; lt++)
        for (int lv = 0; lv < 2; lv++) {
            struct grpo_loss_params p = {.loss_type = (enum grpo_loss_type)lt,
                                         .is_level = (enum grpo_is_level)lv,
                                         .epsilon_low = 0.2, .epsilon_high = 0.2,
                                         .max_completion_length = 2, .grad_accum_steps = 1};
            struct grpo_loss_metrics m;
            cr_assert_eq(grpo_loss(&p, 2, 2, lp, NULL, NULL, adv, mask, NULL, &loss, d, &m, err,
                                   sizeof err), 0, "%s", err);
            cr_expect(isfinite(loss));
            cr_expect(d[2] == 0 && d[3] == 0);
            cr_expect_eq(m.num_tokens, 2);
        }
}

/* Unbiased pass@k against the definition, 1 - C(n-c,k)/C(n,k), with the
 * binomials counted exactly (n <= 20 fits a double's integers), and hand
 * values. */
static double binom(int n, int k)
{
    if (k < 0 || k > n) return 0;
    double b = 1;
    for (int i = 1; i <= k; i++) b = b * (n - k + i) / i;
    return b;
}

Test(eval, pass_at_k_unbiased)
{
    cr_expect_float_eq(eval_pass_at_k(4, 1, 2), 0.5, 1e-15);        /* 1 - 3/6 */
    cr_expect_float_eq(eval_pass_at_k(4, 1, 1), 0.25, 1e-15);       /* = c / n */
    cr_expect_float_eq(eval_pass_at_k(10, 3, 4), 1.0 - 35.0 / 210.0, 1e-15);
    cr_expect_eq(eval_pass_at_k(8, 0, 8), 0.0);
    cr_expect_eq(eval_pass_at_k(8, 8, 1), 1.0);
    cr_expect_eq(eval_pass_at_k(8, 5, 4), 1.0);                     /* n - c < k */
    for (int n = 1; n <= 20; n++)
        for (int c = 0; c <= n; c++)
            for (int k = 1; k <= n; k++) {
                double want = 1.0 - binom(n - c, k) / binom(n, k);
                cr_assert_float_eq(eval_pass_at_k(n, c, k), want, 1e-12, "n=%d c=%d k=%d", n, c, k);
            }
}
