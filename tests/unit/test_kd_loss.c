/* tests/unit/test_kd_loss.c — engine/kd_loss.c against the PyTorch
 * (TRL-formula, autograd) references in tests/ref/fixtures/kd.ref, from
 * tests/ref/gen_kd.py: forward KL, reverse KL, JSD and a generalized JSD at
 * three temperatures, nearly one-hot rows, masked (-inf) vocabulary entries,
 * V 4096; plus finite differences of the gradient, invariants (zero for
 * equal distributions, role swap, temperature, the H(beta) bound), thread
 * count independence and parameter validation. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <omp.h>

#include "kd_loss.h"
#include "tests/ref_io.h"

#define KD_FIXTURE "tests/ref/fixtures/kd.ref"

static struct ref_file *rf;

static void load(void)
{
    rf = ref_fixture_load(KD_FIXTURE, "tests/ref/gen_kd.py");
}

static void unload(void)
{
    ref_file_free(rf);
}

static const struct ref_tensor *get(const char *prefix, const char *suffix)
{
    return ref_fixture_get(rf, prefix, suffix);
}

struct kd_case {
    char name[64];
    float beta, tau;
    int n, V;
    const float *zs, *zt, *scale, *loss, *dzs;
};

static int n_cases(void)
{
    const struct ref_tensor *t = ref_file_get(rf, "cases");
    cr_assert_not_null(t);
    return ((const int32_t *)t->data)[0];
}

static void case_load(int i, struct kd_case *c)
{
    char key[32];
    snprintf(key, sizeof key, "case%d", i);
    const struct ref_tensor *nt = ref_file_get(rf, key);
    cr_assert_not_null(nt);
    cr_assert_lt(nt->numel, sizeof c->name);
    for (size_t k = 0; k < nt->numel; k++)
        c->name[k] = (char)((const int32_t *)nt->data)[k];
    c->name[nt->numel] = 0;
    const float *cfg = get(c->name, ".cfg")->data;
    c->beta = cfg[0];
    c->tau = cfg[1];
    const struct ref_tensor *zs = get(c->name, ".zs");
    c->n = (int)zs->shape[0];
    c->V = (int)zs->shape[1];
    c->zs = zs->data;
    c->zt = get(c->name, ".zt")->data;
    c->scale = get(c->name, ".scale")->data;
    c->loss = get(c->name, ".loss")->data;
    c->dzs = get(c->name, ".dzs")->data;
}

static float *fdup(const float *x, size_t n)
{
    float *y = malloc(sizeof(float) * n);
    cr_assert_not_null(y);
    memcpy(y, x, sizeof(float) * n);
    return y;
}

TestSuite(kd_loss, .init = load, .fini = unload);

/* Loss |got - ref| <= 1e-7 + 1e-6 |ref|; gradient 1e-8 + 1e-6 |ref| (both
 * sides are float32 roundings of float64 math: they differ by an ulp at
 * most); the returned sum within 1e-6 + 1e-6 |sum|. The in-place call
 * (dzs = zs) gives the out-of-place result bit for bit. */
Test(kd_loss, matches_pytorch_every_case)
{
    int nc = n_cases();
    cr_assert_geq(nc, 20);
    int masked = 0, big = 0;
    for (int i = 0; i < nc; i++) {
        struct kd_case c;
        case_load(i, &c);
        char err[256];
        cr_assert_eq(kd_params_check(c.beta, c.tau, err, sizeof err), 0, "%s: %s", c.name, err);
        const size_t N = (size_t)c.n * c.V;
        float *loss = malloc(sizeof(float) * c.n), *d = malloc(sizeof(float) * N);
        double sum = kd_divergence_rows(c.zs, c.zt, c.n, c.V, c.beta, c.tau, loss, d, c.scale);
        char what[96];
        snprintf(what, sizeof what, "%s loss", c.name);
        cr_expect_eq(ref_compare(what, loss, c.loss, (size_t)c.n, 1e-7f, 1e-6f, NULL), 0);
        snprintf(what, sizeof what, "%s dzs", c.name);
        cr_expect_eq(ref_compare(what, d, c.dzs, N, 1e-8f, 1e-6f, NULL), 0);
        double want = 0;
        for (int r = 0; r < c.n; r++)
            want += c.loss[r];
        cr_expect(fabs(sum - want) <= 1e-6 + 1e-6 * fabs(want), "%s: sum %.9g vs %.9g", c.name,
                  sum, want);
        /* in place */
        float *z = fdup(c.zs, N), *loss2 = malloc(sizeof(float) * c.n);
        double sum2 = kd_divergence_rows(z, c.zt, c.n, c.V, c.beta, c.tau, loss2, z, c.scale);
        cr_expect(memcmp(z, d, sizeof(float) * N) == 0, "%s: in place differs", c.name);
        cr_expect(memcmp(loss2, loss, sizeof(float) * c.n) == 0 && sum2 == sum,
                  "%s: in place loss differs", c.name);
        for (size_t k = 0; k < N; k++)
            masked += isinf(c.zs[k]) || isinf(c.zt[k]);
        big += c.V >= 4096;
        free(loss);
        free(loss2);
        free(d);
        free(z);
    }
    cr_expect(masked > 0 && big > 0, "the fixture must hold -inf logits and a V 4096 case");
}

/* Central differences in double of one row's divergence around float32
 * logits (h 1e-3, the difference of the perturbed floats taken exactly),
 * at the student's and the teacher's argmax and three fixed entries of
 * every row of every fixture case: |fd - g| <= 2e-6 + 1e-4 |fd|. */
Test(kd_loss, finite_differences)
{
    int nc = n_cases(), compared = 0;
    for (int i = 0; i < nc; i++) {
        struct kd_case c;
        case_load(i, &c);
        const int V = c.V;
        float *x = malloc(sizeof(float) * V), *d = malloc(sizeof(float) * V);
        for (int r = 0; r < c.n; r++) {
            const float *zt = c.zt + (size_t)r * V;
            memcpy(x, c.zs + (size_t)r * V, sizeof(float) * V);
            kd_divergence_rows(x, zt, 1, V, c.beta, c.tau, NULL, d, NULL);
            int as = 0, at = 0;
            for (int j = 1; j < V; j++) {
                if (x[j] > x[as]) as = j;
                if (zt[j] > zt[at]) at = j;
            }
            const int js[5] = {as, at, 1, V / 2, V - 2};
            for (int k = 0; k < 5; k++) {
                const int j = js[k];
                if (isinf(x[j]))
                    continue;
                const float h = 1e-3f, x0 = x[j], xp = x0 + h, xm = x0 - h;
                x[j] = xp;
                double lp = kd_divergence_rows(x, zt, 1, V, c.beta, c.tau, NULL, NULL, NULL);
                x[j] = xm;
                double lm = kd_divergence_rows(x, zt, 1, V, c.beta, c.tau, NULL, NULL, NULL);
                x[j] = x0;
                double fd = (lp - lm) / ((double)xp - (double)xm);
                cr_expect(fabs(fd - d[j]) <= 2e-6 + 1e-4 * fabs(fd),
                          "%s row %d logit %d: analytic %.9g vs finite difference %.9g", c.name,
                          r, j, (double)d[j], fd);
                compared++;
            }
        }
        free(x);
        free(d);
    }
    cr_expect_geq(compared, 300);
}

static void random_logits(float *z, int n, double spread, unsigned *seed)
{
    for (int i = 0; i < n; i++)
        z[i] = (float)(spread * ((double)rand_r(seed) / RAND_MAX - 0.5));
}

static const float BETAS[] = {0.0f, 0.1f, 0.5f, 0.9f, 1.0f};
#define N_BETAS ((int)(sizeof BETAS / sizeof BETAS[0]))

/* Equal distributions (the same logits, or shifted by a constant) have
 * divergence 0 and gradient 0 for every beta. */
Test(kd_loss, equal_distributions_give_zero)
{
    enum { n = 3, V = 50 };
    float zs[n * V], zt[n * V], d[n * V], loss[n];
    unsigned seed = 3;
    random_logits(zs, n * V, 8.0, &seed);
    for (int b = 0; b < N_BETAS; b++)
        for (int shift = 0; shift < 2; shift++) {
            for (int k = 0; k < n * V; k++)
                zt[k] = zs[k] + (shift ? 2.0f : 0.0f);
            double sum = kd_divergence_rows(zs, zt, n, V, BETAS[b], 0.8f, loss, d, NULL);
            const double tol = shift ? 1e-6 : 1e-12;
            cr_expect(fabs(sum) <= tol, "beta %g shift %d: sum %g", (double)BETAS[b], shift, sum);
            for (int k = 0; k < n * V; k++)
                cr_expect(fabsf(d[k]) <= tol, "beta %g shift %d: d[%d] = %g", (double)BETAS[b],
                          shift, k, (double)d[k]);
            if (!shift && (BETAS[b] == 0.0f || BETAS[b] == 1.0f))
                cr_expect(sum == 0.0, "beta %g: KL of a distribution with itself: %g",
                          (double)BETAS[b], sum);
        }
}

/* beta = 0: the gradient is scale (s - t) / tau, s and t computed here. */
Test(kd_loss, forward_kl_gradient_is_s_minus_t)
{
    enum { n = 2, V = 64 };
    float zs[n * V], zt[n * V], d[n * V], scale[n] = {0.75f, 2.0f};
    const float tau = 0.7f;
    unsigned seed = 5;
    random_logits(zs, n * V, 10.0, &seed);
    random_logits(zt, n * V, 10.0, &seed);
    kd_divergence_rows(zs, zt, n, V, 0.0f, tau, NULL, d, scale);
    for (int r = 0; r < n; r++) {
        double ss = 0, st = 0;
        for (int j = 0; j < V; j++) {
            ss += exp(zs[r * V + j] / (double)tau);
            st += exp(zt[r * V + j] / (double)tau);
        }
        for (int j = 0; j < V; j++) {
            double s = exp(zs[r * V + j] / (double)tau) / ss, t = exp(zt[r * V + j] / (double)tau) / st;
            double want = scale[r] * (s - t) / tau;
            cr_expect(fabs(d[r * V + j] - want) <= 1e-7 + 1e-5 * fabs(want),
                      "row %d logit %d: %.9g vs %.9g", r, j, (double)d[r * V + j], want);
        }
    }
}

/* 0 <= gjsd(beta) <= H(beta) = -beta log beta - (1-beta) log(1-beta) (as
 * m >= beta t and m >= (1-beta) s), so JSD(0.5) <= log 2; disjoint supports
 * reach the bound, exactly with -inf logits (and then the one-hot student
 * has gradient 0), nearly with logits 60 apart. */
Test(kd_loss, generalized_jsd_bounded_by_entropy_of_beta)
{
    enum { n = 8, V = 40 };
    float zs[n * V], zt[n * V], loss[n], d[n * V];
    unsigned seed = 9;
    for (int b = 1; b < N_BETAS - 1; b++) {
        const double beta = BETAS[b], H = -beta * log(beta) - (1 - beta) * log1p(-beta);
        random_logits(zs, n * V, 12.0, &seed);
        random_logits(zt, n * V, 12.0, &seed);
        kd_divergence_rows(zs, zt, n, V, BETAS[b], 1.0f, loss, NULL, NULL);
        for (int r = 0; r < n; r++)
            cr_expect(loss[r] >= 0 && loss[r] <= H, "beta %g row %d: %g not in [0, %g]", beta,
                      r, (double)loss[r], H);
        for (int j = 0; j < V; j++) {
            zs[j] = j == 0 ? 0.0f : -INFINITY;
            zt[j] = j == 1 ? 0.0f : -INFINITY;
            zs[V + j] = j == 0 ? 60.0f : 0.0f;
            zt[V + j] = j == 1 ? 60.0f : 0.0f;
        }
        double sum = kd_divergence_rows(zs, zt, 2, V, BETAS[b], 1.0f, loss, d, NULL);
        cr_expect(fabs(loss[0] - H) <= 1e-6 && fabs(loss[1] - H) <= 1e-6 && isfinite(sum),
                  "beta %g: disjoint supports %g %g, H %g", beta, (double)loss[0],
                  (double)loss[1], H);
        for (int j = 0; j < V; j++)
            cr_expect_eq(d[j], 0.0f, "beta %g: one-hot student logit %d: %g", beta, j,
                         (double)d[j]);
        if (BETAS[b] == 0.5f)
            cr_expect(loss[0] <= log(2.0) + 1e-7 && loss[1] <= log(2.0) + 1e-7);
    }
}

/* gjsd(beta; s, t) = gjsd(1 - beta; t, s); beta 0 and 1 swap likewise. */
Test(kd_loss, swapping_roles_swaps_beta)
{
    enum { n = 4, V = 33 };
    float zs[n * V], zt[n * V], a[n], b[n];
    unsigned seed = 13;
    random_logits(zs, n * V, 6.0, &seed);
    random_logits(zt, n * V, 6.0, &seed);
    const float pairs[][2] = {{0.0f, 1.0f}, {0.25f, 0.75f}, {0.5f, 0.5f}};
    for (int p = 0; p < 3; p++) {
        kd_divergence_rows(zs, zt, n, V, pairs[p][0], 1.3f, a, NULL, NULL);
        kd_divergence_rows(zt, zs, n, V, pairs[p][1], 1.3f, b, NULL, NULL);
        for (int r = 0; r < n; r++)
            cr_expect(fabsf(a[r] - b[r]) <= 1e-6f * fabsf(a[r]) + 1e-7f,
                      "beta %g row %d: %.9g vs swapped %.9g", (double)pairs[p][0], r,
                      (double)a[r], (double)b[r]);
    }
}

/* tau scales the logits: loss(z, tau) = loss(z / tau, 1) and the gradient
 * with respect to z is that with respect to z / tau, divided by tau. */
Test(kd_loss, temperature_divides_the_logits)
{
    enum { n = 2, V = 29 };
    float zs[n * V], zt[n * V], zs2[n * V], zt2[n * V], l1[n], l2[n], d1[n * V], d2[n * V];
    unsigned seed = 17;
    random_logits(zs, n * V, 6.0, &seed);
    random_logits(zt, n * V, 6.0, &seed);
    const float tau = 2.0f;    /* a power of two: z / tau is exact */
    for (int k = 0; k < n * V; k++) {
        zs2[k] = zs[k] / tau;
        zt2[k] = zt[k] / tau;
    }
    for (int b = 0; b < N_BETAS; b++) {
        kd_divergence_rows(zs, zt, n, V, BETAS[b], tau, l1, d1, NULL);
        kd_divergence_rows(zs2, zt2, n, V, BETAS[b], 1.0f, l2, d2, NULL);
        for (int r = 0; r < n; r++)
            cr_expect(fabsf(l1[r] - l2[r]) <= 1e-6f * fabsf(l2[r]), "beta %g row %d",
                      (double)BETAS[b], r);
        for (int k = 0; k < n * V; k++)
            cr_expect(fabsf(d1[k] - d2[k] / tau) <= 1e-6f * fabsf(d2[k]) + 1e-9f,
                      "beta %g logit %d: %g vs %g", (double)BETAS[b], k, (double)d1[k],
                      (double)(d2[k] / tau));
    }
}

/* A support that misses the other's makes the KL that divides by it +inf,
 * while the mixtures stay finite. */
Test(kd_loss, missing_support_is_infinite_for_kl_only)
{
    float zs[4] = {0.0f, 1.0f, -INFINITY, 2.0f}, zt[4] = {0.5f, 0.0f, 1.0f, -INFINITY};
    float loss;
    kd_divergence_rows(zs, zt, 1, 4, 0.0f, 1.0f, &loss, NULL, NULL);
    cr_expect(isinf(loss) && loss > 0, "forward KL: %g", (double)loss);
    kd_divergence_rows(zs, zt, 1, 4, 1.0f, 1.0f, &loss, NULL, NULL);
    cr_expect(isinf(loss) && loss > 0, "reverse KL: %g", (double)loss);
    float d[4];
    kd_divergence_rows(zs, zt, 1, 4, 0.5f, 1.0f, &loss, d, NULL);
    cr_expect(isfinite(loss) && loss > 0, "JSD: %g", (double)loss);
    cr_expect_eq(d[2], 0.0f);
    for (int j = 0; j < 4; j++)
        cr_expect(isfinite(d[j]));
}

/* Optional outputs, zero rows and zero weights. */
Test(kd_loss, optional_outputs_and_weights)
{
    enum { n = 3, V = 21 };
    float zs[n * V], zt[n * V], l1[n], l2[n], d1[n * V], d2[n * V];
    const float ones[n] = {1, 1, 1}, zeros[n] = {0, 0, 0};
    unsigned seed = 19;
    random_logits(zs, n * V, 6.0, &seed);
    random_logits(zt, n * V, 6.0, &seed);
    for (int b = 0; b < N_BETAS; b++) {
        double s1 = kd_divergence_rows(zs, zt, n, V, BETAS[b], 0.9f, l1, d1, NULL);
        double s2 = kd_divergence_rows(zs, zt, n, V, BETAS[b], 0.9f, l2, d2, ones);
        cr_expect(s1 == s2 && memcmp(l1, l2, sizeof l1) == 0 && memcmp(d1, d2, sizeof d1) == 0,
                  "beta %g: scale NULL differs from ones", (double)BETAS[b]);
        double s3 = kd_divergence_rows(zs, zt, n, V, BETAS[b], 0.9f, NULL, NULL, NULL);
        cr_expect(s3 == s1, "beta %g: without outputs", (double)BETAS[b]);
        kd_divergence_rows(zs, zt, n, V, BETAS[b], 0.9f, NULL, d2, zeros);
        for (int k = 0; k < n * V; k++)
            cr_expect_eq(d2[k], 0.0f);
    }
    l1[0] = 42.0f;
    cr_expect_eq(kd_divergence_rows(zs, zt, 0, V, 0.5f, 1.0f, l1, d1, NULL), 0.0);
    cr_expect_eq(l1[0], 42.0f, "n = 0 writes nothing");
}

/* Rows are independent and summed in row order: 1 thread and 4 give the
 * same bits, across more than one block of rows and above the parallel
 * threshold. */
Test(kd_loss, same_bits_for_any_thread_count)
{
    const int n = 300, V = 512;
    const size_t N = (size_t)n * V;
    float *zs = malloc(sizeof(float) * N), *zt = malloc(sizeof(float) * N);
    float *d1 = malloc(sizeof(float) * N), *d4 = malloc(sizeof(float) * N);
    float *l1 = malloc(sizeof(float) * n), *l4 = malloc(sizeof(float) * n);
    unsigned seed = 23;
    random_logits(zs, (int)N, 10.0, &seed);
    random_logits(zt, (int)N, 10.0, &seed);
    const int saved = omp_get_max_threads();
    for (int b = 0; b < N_BETAS; b++) {
        omp_set_num_threads(1);
        double s1 = kd_divergence_rows(zs, zt, n, V, BETAS[b], 1.0f, l1, d1, NULL);
        omp_set_num_threads(4);
        double s4 = kd_divergence_rows(zs, zt, n, V, BETAS[b], 1.0f, l4, d4, NULL);
        cr_expect(s1 == s4 && memcmp(l1, l4, sizeof(float) * n) == 0 &&
                  memcmp(d1, d4, sizeof(float) * N) == 0, "beta %g: results depend on threads",
                  (double)BETAS[b]);
    }
    omp_set_num_threads(saved);
    free(zs);
    free(zt);
    free(d1);
    free(d4);
    free(l1);
    free(l4);
}

Test(kd_loss, rejects_bad_parameters)
{
    char err[256];
    const float bad_beta[] = {-0.1f, 1.1f, NAN};
    for (int i = 0; i < 3; i++) {
        err[0] = 0;
        cr_expect_eq(kd_params_check(bad_beta[i], 1.0f, err, sizeof err), -1);
        cr_expect(strstr(err, "beta") != NULL, "%s", err);
    }
    const float bad_tau[] = {0.0f, -1.0f, INFINITY, NAN};
    for (int i = 0; i < 4; i++) {
        err[0] = 0;
        cr_expect_eq(kd_params_check(0.5f, bad_tau[i], err, sizeof err), -1);
        cr_expect(strstr(err, "temperature") != NULL, "%s", err);
    }
    cr_expect_eq(kd_params_check(0.0f, 1e-3f, err, sizeof err), 0);
    cr_expect_eq(kd_params_check(1.0f, 5.0f, err, sizeof err), 0);
    cr_expect_eq(kd_params_check(0.5f, 1.0f, err, sizeof err), 0);
}
