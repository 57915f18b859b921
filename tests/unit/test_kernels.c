/* tests/unit/test_kernels.c — the CPU backend (kernels/cpu/) op by op.
 * Every forward/backward pair is checked against central finite differences
 * of a scalar loss L = sum(out * w) (double accumulation), and every op
 * against PyTorch float64 reference tensors from tests/ref/fixtures/ops.ref
 * (tests/ref/gen_ops.py) with per-tensor |got-ref| <= atol + rtol*|ref|.
 * Ops without a backward (gemm, add, axpy, scale, adamw) are also checked
 * against naive double-precision loops on sizes that take the parallel
 * paths. Backward ops are run into pre-filled gradients to check that they
 * accumulate. Run from the repository root (the fixture path is relative). */
#include <criterion/criterion.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cpu/cpu.h"    /* vexpf, CPU_PAR_MIN: white-box checks */
#include "tests/ref_io.h"

#define OPS_FIXTURE "tests/ref/fixtures/ops.ref"

/* Finite differences: central, step FD_H on fp32 inputs; the analytic
 * gradient must satisfy |a - n| <= FD_ATOL + FD_RTOL * max(|a|, |n|).
 * With h = 1e-2 the truncation error (h^2/6 f''') and the fp32 rounding
 * noise of L divided by 2h both stay below ~1e-4 on these shapes, while a
 * wrong gradient is off by O(|gradient|). */
#define FD_H 1e-2f
#define FD_ATOL 1e-3
#define FD_RTOL 1e-2

static const struct backend *be;
static struct ref_file *ops;

/* Test-lifetime allocations, all freed by the suite's fini (also when an
 * assertion ends a test early), so LeakSanitizer sees no leaks. */
#define MAX_TALLOC 256
static void *talloc_list[MAX_TALLOC];
static int talloc_count;

static void suite_init(void)
{
    be = backend_cpu();
    ops = ref_fixture_load(OPS_FIXTURE, "tests/ref/gen_ops.py");
}

static void suite_fini(void)
{
    for (int i = 0; i < talloc_count; i++) free(talloc_list[i]);
    talloc_count = 0;
    ref_file_free(ops);
    ops = NULL;
}

TestSuite(kernels, .init = suite_init, .fini = suite_fini);

/* Returns zeroed memory owned by the test (freed in suite_fini). */
static void *talloc(size_t nbytes)
{
    cr_assert_lt(talloc_count, MAX_TALLOC, "talloc: too many buffers");
    void *p = calloc(1, nbytes ? nbytes : 1);
    cr_assert_not_null(p, "talloc: out of memory");
    talloc_list[talloc_count++] = p;
    return p;
}

static float *fbuf(size_t n) { return talloc(n * sizeof(float)); }

static float *fdup(const float *src, size_t n)
{
    float *p = fbuf(n);
    memcpy(p, src, n * sizeof(float));
    return p;
}

/* xorshift64* — deterministic test data, uniform in [-1, 1). */
static float frand(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    uint64_t r = *s * 2685821657736338717ull;
    return (float)((double)(r >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static float *frandn(size_t n, float scale, uint64_t seed)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    float *p = fbuf(n);
    for (size_t i = 0; i < n; i++) p[i] = scale * frand(&s);
    return p;
}

static double dotd(const float *a, const float *b, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* Borrowed reference tensor; its element count must be `numel`. */
static const struct ref_tensor *ref_get(const char *name, int dtype, size_t numel)
{
    const struct ref_tensor *t = ref_file_get(ops, name);
    cr_assert_not_null(t, "%s: tensor \"%s\" is missing", OPS_FIXTURE, name);
    cr_assert_eq(t->dtype, dtype, "%s: tensor \"%s\" has dtype %d", OPS_FIXTURE, name, t->dtype);
    if (numel) cr_assert_eq(t->numel, numel, "%s: tensor \"%s\" has %zu elements, want %zu",
                            OPS_FIXTURE, name, t->numel, numel);
    return t;
}

static const float *reff(const char *name, size_t numel)
{
    return ref_get(name, 0, numel)->data;
}

static const int32_t *refi(const char *name, size_t numel)
{
    return ref_get(name, 1, numel)->data;
}

/* Compares got against reference tensor `name`; reports, does not stop. */
static void expect_ref(const char *name, const float *got, float atol, float rtol)
{
    const struct ref_tensor *t = ref_get(name, 0, 0);
    float worst = 0;
    size_t bad = ref_compare(name, got, t->data, t->numel, atol, rtol, &worst);
    cr_expect_eq(bad, 0, "%s: %zu of %zu elements out of tolerance (atol %g, rtol %g), "
                 "worst |diff| %g", name, bad, t->numel, atol, rtol, worst);
}

/* got - base, elementwise (what a backward op added onto base). */
static float *grad_delta(const float *got, const float *base, size_t n)
{
    float *d = fbuf(n);
    for (size_t i = 0; i < n; i++) d[i] = got[i] - base[i];
    return d;
}

typedef double (*fd_loss_fn)(void *ctx);

/* Central differences of loss(ctx) w.r.t. x[i] (x is read by the loss) for
 * `probes` random indices (all when probes >= n), against grad[i]. Returns
 * the number of violations; prints the first few. */
static size_t fd_check(const char *what, fd_loss_fn loss, void *ctx, float *x,
                       const float *grad, size_t n, size_t probes, uint64_t seed)
{
    uint64_t s = seed + 77;
    size_t bad = 0, count = probes < n ? probes : n;
    for (size_t k = 0; k < count; k++) {
        size_t i = probes < n ? (size_t)((frand(&s) * 0.5 + 0.5) * (double)n) % n : k;
        float x0 = x[i];
        float xp = x0 + FD_H, xm = x0 - FD_H;
        x[i] = xp;
        double lp = loss(ctx);
        x[i] = xm;
        double lm = loss(ctx);
        x[i] = x0;
        double num = (lp - lm) / ((double)xp - (double)xm);
        double ana = grad[i];
        double tol = FD_ATOL + FD_RTOL * fmax(fabs(num), fabs(ana));
        if (!(fabs(num - ana) <= tol)) {
            if (bad < 5)
                fprintf(stderr, "%s[%zu]: analytic %.7g, numeric %.7g\n", what, i, ana, num);
            bad++;
        }
    }
    return bad;
}

#define EXPECT_FD(what, loss, ctx, x, grad, n, probes, seed)                          \
    do {                                                                             \
        size_t bad_ = fd_check(what, loss, ctx, x, grad, n, probes, seed);           \
        cr_expect_eq(bad_, 0, "%s: %zu finite-difference mismatches", what, bad_);   \
    } while (0)

/* ---------------------------------------------------------------- table */

Test(kernels, table_complete)
{
    cr_assert_str_eq(be->name, "cpu");
#define EXPECT_FN(f) cr_expect_not_null((void *)(uintptr_t)be->f, #f " is NULL")
    EXPECT_FN(describe); EXPECT_FN(alloc); EXPECT_FN(free); EXPECT_FN(upload);
    EXPECT_FN(download); EXPECT_FN(zero); EXPECT_FN(copy); EXPECT_FN(matmul_forward);
    EXPECT_FN(matmul_backward); EXPECT_FN(gemm); EXPECT_FN(embedding_forward);
    EXPECT_FN(embedding_backward); EXPECT_FN(rmsnorm_forward);
    EXPECT_FN(rmsnorm_backward); EXPECT_FN(rope_cos_sin); EXPECT_FN(rope_forward);
    EXPECT_FN(rope_backward);
    EXPECT_FN(attention_forward); EXPECT_FN(attention_backward);
    EXPECT_FN(swiglu_forward); EXPECT_FN(swiglu_backward); EXPECT_FN(add);
    EXPECT_FN(axpy); EXPECT_FN(logprob_forward); EXPECT_FN(logprob_backward);
    EXPECT_FN(sumsq); EXPECT_FN(scale); EXPECT_FN(adamw); EXPECT_FN(kv_cache_write);
    EXPECT_FN(attention_paged_forward); EXPECT_FN(attention_paged_step);
    EXPECT_FN(rows_packed_bytes); EXPECT_FN(rows_pack); EXPECT_FN(matmul_rows_forward);
    EXPECT_FN(rows_pack_glu); EXPECT_FN(matmul_rows_glu_forward);
#undef EXPECT_FN
    const char *d = be->describe();
    cr_assert_not_null(d);
    cr_expect(strncmp(d, "oneDNN ", 7) == 0 && strstr(d, "sgemm") && strstr(d, "isa ")
              && strstr(d, "OpenMP threads"), "describe: \"%s\"", d);
    cr_expect(strstr(d, "unknown") == NULL, "describe: unmapped isa in \"%s\"", d);
    cr_expect_eq(be->describe(), d, "describe must return one static string");
}

Test(kernels, memory)
{
    size_t sizes[] = {0, 1, 100, 3u << 20};   /* the last takes the parallel path */
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        size_t n = sizes[s];
        unsigned char *p = be->alloc(n);
        cr_assert_not_null(p, "alloc(%zu)", n);
        cr_expect_eq((uintptr_t)p % 64, 0, "alloc(%zu) not 64-byte aligned", n);
        size_t nz = 0;
        for (size_t i = 0; i < n; i++) nz += p[i] != 0;
        cr_expect_eq(nz, 0, "alloc(%zu) not zeroed", n);
        unsigned char *host = talloc(n), *back = talloc(n);
        for (size_t i = 0; i < n; i++) host[i] = (unsigned char)(i * 131 + 7);
        be->upload(p, host, n);
        be->download(back, p, n);
        cr_expect(n == 0 || memcmp(host, back, n) == 0, "upload/download(%zu) round trip", n);
        if (n > 2) {
            be->zero(p + 1, n - 2);
            be->download(back, p, n);
            cr_expect(back[0] == host[0] && back[n - 1] == host[n - 1], "zero(%zu) overran", n);
            nz = 0;
            for (size_t i = 1; i + 1 < n; i++) nz += back[i] != 0;
            cr_expect_eq(nz, 0, "zero(%zu) left %zu bytes", n, nz);
            unsigned char *q = be->alloc(n);
            cr_assert_not_null(q);
            be->upload(p, host, n);
            be->copy(q + 1, p + 1, n - 2);
            be->download(back, q, n);
            cr_expect(back[0] == 0 && back[n - 1] == 0 && memcmp(back + 1, host + 1, n - 2) == 0,
                      "copy(%zu)", n - 2);
            be->free(q);
        }
        be->free(p);
    }
    be->free(NULL);
}

/* The vectorised exp of the softmax/silu/logprob loops. */
Test(kernels, expf_accuracy)
{
    double worst = 0;
    float at = 0;
    for (float x = -86.5f; x < 88.72f; x += 0.000731f * (1.0f + fabsf(x))) {
        double e = exp((double)x);
        float ef = (float)e;
        double ulp = (double)nextafterf(ef, INFINITY) - ef;
        double err = fabs(vexpf(x) - e) / ulp;
        if (err > worst) { worst = err; at = x; }
    }
    cr_expect_leq(worst, 1.0, "vexpf: %.3f ulp at x = %g", worst, at);
    cr_expect_eq(vexpf(0.0f), 1.0f);
    cr_expect_eq(vexpf(-100.0f), 0.0f);
    cr_expect_eq(vexpf(-INFINITY), 0.0f);
    cr_expect(isinf(vexpf(89.0f)) && isinf(vexpf(INFINITY)));
    cr_expect(isfinite(vexpf(88.72f)));
    cr_expect(isnan(vexpf(NAN)));
}

/* binary16, the KV_F16 cache's elements: the F16C conversions the kernels
 * use agree with the portable definitions bit for bit (every half; floats
 * spread over all exponents; the exact midpoints between adjacent halves,
 * which round to the even one), and the cache write saturates. */
Test(kernels, half_conversions)
{
    long bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float a = cpu_h2f((uint16_t)h), b = f16_to_f32((uint16_t)h);
        bad += memcmp(&a, &b, sizeof a) != 0;
        if (!isnan(a)) bad += f16_from_f32(a) != h || cpu_f2h(a) != h;    /* round trip */
    }
    cr_expect_eq(bad, 0, "%ld halves widen differently or do not round-trip", bad);
    bad = 0;
    for (uint64_t i = 0; i < (1ull << 32); i += 4093) {
        uint32_t x = (uint32_t)i;
        float f;
        memcpy(&f, &x, sizeof f);
        bad += cpu_f2h(f) != f16_from_f32(f);
    }
    cr_expect_eq(bad, 0, "%ld floats narrow differently", bad);
    bad = 0;
    for (uint32_t h = 0; h < 0x7bff; h++) {
        float mid = (f16_to_f32((uint16_t)h) + f16_to_f32((uint16_t)(h + 1))) * 0.5f;
        uint16_t even = (uint16_t)(h % 2 == 0 ? h : h + 1);
        bad += f16_from_f32(mid) != even || cpu_f2h(mid) != even;
        bad += f16_from_f32(-mid) != (even | 0x8000u);
    }
    cr_expect_eq(bad, 0, "%ld midpoints not rounded to even", bad);
    cr_expect_eq(f16_from_f32(65504.0f), 0x7bff);
    cr_expect_eq(f16_from_f32(65519.0f), 0x7bff);
    cr_expect_eq(f16_from_f32(65520.0f), 0x7c00);
    cr_expect_eq(f16_from_f32(0x1p-25f), 0);          /* tie with 0: even */
    cr_expect_eq(f16_from_f32(0x1.8p-25f), 1);
    /* one position of one head (D 24: 16 at a time, then one by one; bs
     * 16): keys transposed, values not; each element the scalar rounding
     * of its saturated value, bitwise (NaN kept, +-inf saturated) */
    const int D = 24, bs = 16;
    uint16_t *kv = be->alloc((size_t)2 * D * bs * sizeof(uint16_t));
    cr_assert_not_null(kv);
    float k[24], v[24];
    for (int d = 0; d < D; d++) { k[d] = (float)(d - 12) * 1e4f; v[d] = -k[d] + 0.5f; }
    k[1] = NAN; k[20] = -NAN; v[2] = INFINITY; v[3] = -INFINITY; v[22] = INFINITY;
    k[5] = 65504.0f; v[5] = 65519.0f; k[21] = -65520.0f;
    int32_t table = 0, seq = 0, pos = 3;
    be->kv_cache_write(kv, KV_F16, (size_t)2 * D * bs, (size_t)D * bs, &table, 1, &seq, &pos, k, D,
                       v, D, 1, 1, D, bs);
    for (int d = 0; d < D; d++) {
        float want_k = k[d] > 65504.0f ? 65504.0f : k[d] < -65504.0f ? -65504.0f : k[d];
        float want_v = v[d] > 65504.0f ? 65504.0f : v[d] < -65504.0f ? -65504.0f : v[d];
        cr_expect_eq(kv[d * bs + pos], cpu_f2h(want_k), "key %d", d);
        cr_expect_eq(kv[D * bs + pos * D + d], cpu_f2h(want_v), "value %d", d);
    }
    cr_expect(isnan(cpu_h2f(kv[1 * bs + pos])) && isnan(cpu_h2f(kv[20 * bs + pos])));
    cr_expect_eq(kv[D * bs + pos * D + 2], 0x7bff);
    cr_expect_eq(kv[D * bs + pos * D + 3], 0xfbff);
    be->free(kv);
}

/* KV_Q8 (backend.h): each key and value vector as int8 q and one fp32
 * scale, scale = max|x| / 127, q = x / scale rounded to nearest even;
 * +-inf saturated to 65504 first, NaN stored as 0, zeros as zeros with
 * scale 0. Keys transposed, values not, scales after both (keys', then
 * values'). */
Test(kernels, kv_cache_write_q8)
{
    enum { D = 16, BS = 16 };
    const size_t vofs = (size_t)D * BS, stride = 2 * vofs + 2 * BS * sizeof(float);
    int8_t *kv = be->alloc(stride);
    cr_assert_not_null(kv);
    memset(kv, 0x55, stride);
    float k[2][D], v[2][D];
    for (int d = 0; d < D; d++) {
        k[0][d] = (float)d - 5.5f;      /* max |x| 9.5 */
        v[0][d] = 1.0f;
        k[1][d] = v[1][d] = 0.0f;
    }
    v[0][0] = NAN; v[0][1] = INFINITY; v[0][2] = -3e5f; v[0][3] = 600.0f;
    int32_t table = 0, seq[2] = {0, 0}, pos[2] = {5, 6};
    be->kv_cache_write(kv, KV_Q8, stride, vofs, &table, 1, seq, pos, &k[0][0], D, &v[0][0], D, 2,
                       1, D, BS);
    const float *ks = (const float *)(kv + 2 * vofs), *vs = ks + BS;
    const float sk = 9.5f / 127.0f, sv = 65504.0f / 127.0f;
    cr_expect_eq(ks[5], sk);
    cr_expect_eq(vs[5], sv);
    cr_expect(ks[6] == 0.0f && vs[6] == 0.0f);
    for (int d = 0; d < D; d++) {
        cr_expect_eq(kv[d * BS + 5], (int8_t)lrintf(k[0][d] / sk), "key %d: %d", d, kv[d * BS + 5]);
        cr_expect_eq(kv[d * BS + 6], 0);
        cr_expect_eq(kv[vofs + 6 * D + d], 0);
        cr_expect_eq(kv[d * BS + 4], 0x55, "a neighbouring position was written");
    }
    const int8_t want_v[4] = {0, 127, -127, 1};     /* NaN, inf, -3e5 saturated, 600/515.8 */
    for (int d = 0; d < D; d++)
        cr_expect_eq(kv[vofs + 5 * D + d], d < 4 ? want_v[d] : 0, "value %d: %d", d,
                     kv[vofs + 5 * D + d]);
    be->free(kv);
}

/* KV_Q8 against torch (gen_ops.py's gen_q8): six vectors written as keys
 * and values at positions 0..5, their integers and scales bitwise
 * torch's (ties rounded to even, saturation, zeros, inf) */
Test(kernels, kv_cache_write_q8_ref)
{
    enum { N = 6, D = 64, BS = 16 };
    const float *x = reff("q8.x", N * D), *q = reff("q8.q", N * D), *sc = reff("q8.scale", N);
    const size_t vofs = (size_t)D * BS, stride = 2 * vofs + 2 * BS * sizeof(float);
    int8_t *kv = talloc(stride);
    int32_t table = 0, seq[N] = {0}, pos[N];
    for (int n = 0; n < N; n++) pos[n] = n;
    be->kv_cache_write(kv, KV_Q8, stride, vofs, &table, 1, seq, pos, x, D, x, D, N, 1, D, BS);
    const float *ks = (const float *)(kv + 2 * vofs), *vs = ks + BS;
    int bad = 0;
    for (int n = 0; n < N; n++) {
        bad += memcmp(&ks[n], &sc[n], sizeof(float)) != 0;
        bad += memcmp(&vs[n], &sc[n], sizeof(float)) != 0;
        for (int d = 0; d < D; d++) {
            const int want = (int)q[n * D + d];
            bad += kv[d * BS + n] != want || kv[vofs + (size_t)n * D + d] != want;
        }
    }
    cr_expect_eq(bad, 0, "%d integers or scales differ from torch's", bad);
}

/* ----------------------------------------------------------------- gemm */

/* Copies the (rows,cols) matrix src (transposed if trans) into a buffer with
 * row stride ld, padding filled with `pad`. */
static float *strided(const float *src, int rows, int cols, int trans, int ld, float pad)
{
    int r = trans ? cols : rows, c = trans ? rows : cols;
    float *p = fbuf((size_t)r * ld);
    for (size_t i = 0; i < (size_t)r * ld; i++) p[i] = pad;
    for (int i = 0; i < r; i++)
        for (int j = 0; j < c; j++)
            p[(size_t)i * ld + j] = trans ? src[(size_t)j * cols + i] : src[(size_t)i * cols + j];
    return p;
}

/* bfloat16 rounding (dtype bf16 of the generation engine) bitwise as
 * torch's .bfloat16(): ties to even, overflow to inf, subnormals kept;
 * NaN stays NaN. */
Test(kernels, bf16_rounding_ref)
{
    const struct ref_tensor *t = ref_get("bf16.x", 0, 0);
    const float *x = t->data, *want = reff("bf16.rounded", t->numel);
    size_t bad = 0;
    for (size_t i = 0; i < t->numel; i++) {
        const float got = bf16_to_f32(bf16_from_f32(x[i]));
        if (memcmp(&got, &want[i], sizeof got) != 0) {
            if (bad++ < 4) fprintf(stderr, "bf16 of %a: got %a, torch %a\n", x[i], got, want[i]);
        }
    }
    cr_expect_eq(bad, 0, "%zu of %zu roundings differ from torch's", bad, t->numel);
    cr_expect(isnan(bf16_to_f32(bf16_from_f32(NAN))) && isnan(bf16_to_f32(bf16_from_f32(-NAN))));
}

/* matmul_rows_forward as dt on the fixture's tensors <name>.inp (N,C),
 * .w (OC,C) and .b against its .out */
static void rows_ref(const char *name, enum w_dtype dt, int N, int C, int OC)
{
    char k[32];
    snprintf(k, sizeof k, "%s.inp", name);
    const float *inp = reff(k, N * C);
    snprintf(k, sizeof k, "%s.w", name);
    const float *w = reff(k, OC * C);
    snprintf(k, sizeof k, "%s.b", name);
    const float *b = reff(k, OC);
    void *pw = talloc(be->rows_packed_bytes(C, OC, dt));
    float *out = fbuf(N * OC);
    be->rows_pack(pw, w, C, OC, dt);
    be->matmul_rows_forward(out, inp, pw, dt, b, NULL, N, C, OC);
    snprintf(k, sizeof k, "%s.out", name);
    expect_ref(k, out, 1e-5f, 1e-5f);
}

/* W_BF16 against torch's product of the rounded inputs and weights (the
 * inputs hold ties, rounded 16 at a time and one by one) */
Test(kernels, matmul_rows_bf16_ref) { rows_ref("mmbf", W_BF16, 14, 37, 40); }

/* W_Q8 against torch's blocks of 32 (exact ties, a zero block, a block of
 * 4) and the exact sums of their products */
Test(kernels, matmul_rows_q8_ref) { rows_ref("q8w", W_Q8, 7, 100, 40); }

/* W_Q4 against torch's q4_0 blocks of the weights (exact ties, a value
 * past the top step, equal magnitudes, a zero block, a block of 4) and the
 * exact sums of their products with the int8 inputs */
Test(kernels, matmul_rows_q4_ref) { rows_ref("q4w", W_Q4, 5, 100, 36); }

Test(kernels, gemm_ref)
{
    const int M = 4, N = 5, K = 3, ldc = N + 4;
    const float *A = reff("gemm.a", M * K), *B = reff("gemm.b", K * N);
    const float *C0 = reff("gemm.c0", M * N), *ab = reff("gemm.alpha_beta", 2);
    for (int ta = 0; ta < 2; ta++) {
        for (int tb = 0; tb < 2; tb++) {
            int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1;
            float *a = strided(A, M, K, ta, lda, NAN), *b = strided(B, K, N, tb, ldb, NAN);
            for (int pass = 0; pass < 2; pass++) {
                /* pass 0: beta from the fixture; pass 1: beta = 0 must not
                 * read C (NaN there) */
                float *c = strided(C0, M, N, 0, ldc, 7.0f);
                if (pass == 1)
                    for (int i = 0; i < M; i++)
                        for (int j = 0; j < N; j++) c[i * ldc + j] = NAN;
                be->gemm(ta, tb, M, N, K, ab[0], a, lda, b, ldb, pass ? 0.0f : ab[1], c, ldc);
                float got[20];
                size_t pad_bad = 0;
                for (int i = 0; i < M; i++) {
                    for (int j = 0; j < N; j++) got[i * N + j] = c[i * ldc + j];
                    for (int j = N; j < ldc; j++) pad_bad += c[i * ldc + j] != 7.0f;
                }
                char what[64];
                snprintf(what, sizeof what, "gemm(ta=%d,tb=%d,pass %d)", ta, tb, pass);
                cr_expect_eq(pad_bad, 0, "%s wrote outside C", what);
                expect_ref(pass ? "gemm.out_beta0" : "gemm.out", got, 1e-6f, 1e-5f);
            }
        }
    }
    /* K = 0: C = beta * C */
    float c[2] = {2.0f, -4.0f};
    be->gemm(0, 0, 1, 2, 0, 1.0f, A, 1, B, 2, 0.5f, c, 2);
    cr_expect(c[0] == 1.0f && c[1] == -2.0f, "gemm K=0: %g %g", c[0], c[1]);
}

/* Larger shapes against a double-precision triple loop, all transposes. */
Test(kernels, gemm_naive)
{
    const int M = 37, N = 45, K = 29;
    const float alpha = 1.25f, beta = -0.5f;
    for (int ta = 0; ta < 2; ta++) {
        for (int tb = 0; tb < 2; tb++) {
            int lda = (ta ? M : K) + 2, ldb = (tb ? K : N) + 5, ldc = N + 1;
            float *a = frandn((size_t)(ta ? K : M) * lda, 1.0f, 1 + ta);
            float *b = frandn((size_t)(tb ? N : K) * ldb, 1.0f, 3 + tb);
            float *c = frandn((size_t)M * ldc, 1.0f, 5);
            float *c0 = fdup(c, (size_t)M * ldc);
            be->gemm(ta, tb, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc);
            size_t bad = 0;
            for (int i = 0; i < M; i++) {
                for (int j = 0; j < N; j++) {
                    double s = 0;
                    for (int p = 0; p < K; p++)
                        s += (double)(ta ? a[p * lda + i] : a[i * lda + p]) *
                             (tb ? b[j * ldb + p] : b[p * ldb + j]);
                    double want = alpha * s + beta * (double)c0[i * ldc + j];
                    bad += !(fabs(c[i * ldc + j] - want) <= 1e-5 + 1e-5 * fabs(want));
                }
            }
            cr_expect_eq(bad, 0, "gemm ta=%d tb=%d: %zu elements off", ta, tb, bad);
        }
    }
}

/* --------------------------------------------------------------- matmul */

Test(kernels, matmul_ref)
{
    const int N = 5, C = 7, OC = 6;
    const float *inp = reff("mm.inp", N * C), *w = reff("mm.w", OC * C);
    const float *b = reff("mm.b", OC), *dout = reff("mm.dout", N * OC);
    float *out = fbuf(N * OC);
    for (int i = 0; i < N * OC; i++) out[i] = NAN;   /* beta = 0 overwrites */
    be->matmul_forward(out, inp, w, NULL, N, C, OC, 0.0f);
    expect_ref("mm.out", out, 1e-5f, 1e-5f);
    for (int i = 0; i < N * OC; i++) out[i] = NAN;
    be->matmul_forward(out, inp, w, b, N, C, OC, 0.0f);
    expect_ref("mm.out_bias", out, 1e-5f, 1e-5f);
    /* beta = 1 accumulates, with and without bias */
    float *base = frandn(N * OC, 1.0f, 11);
    memcpy(out, base, N * OC * sizeof(float));
    be->matmul_forward(out, inp, w, b, N, C, OC, 1.0f);
    expect_ref("mm.out_bias", grad_delta(out, base, N * OC), 1e-5f, 1e-5f);
    memcpy(out, base, N * OC * sizeof(float));
    be->matmul_forward(out, inp, w, NULL, N, C, OC, 1.0f);
    expect_ref("mm.out", grad_delta(out, base, N * OC), 1e-5f, 1e-5f);

    /* backward accumulates onto pre-filled gradients */
    float *di0 = frandn(N * C, 1.0f, 12), *dw0 = frandn(OC * C, 1.0f, 13), *db0 = frandn(OC, 1.0f, 14);
    float *di = fdup(di0, N * C), *dw = fdup(dw0, OC * C), *db = fdup(db0, OC);
    be->matmul_backward(di, dw, db, dout, inp, w, N, C, OC);
    expect_ref("mm.dinp", grad_delta(di, di0, N * C), 1e-5f, 1e-5f);
    expect_ref("mm.dw", grad_delta(dw, dw0, OC * C), 1e-5f, 1e-5f);
    expect_ref("mm.db", grad_delta(db, db0, OC), 1e-5f, 1e-5f);
    /* NULL gradients are skipped, the others still computed */
    memcpy(dw, dw0, OC * C * sizeof(float));
    be->matmul_backward(NULL, dw, NULL, dout, inp, w, N, C, OC);
    expect_ref("mm.dw", grad_delta(dw, dw0, OC * C), 1e-5f, 1e-5f);
    memcpy(db, db0, OC * sizeof(float));
    be->matmul_backward(NULL, NULL, db, dout, inp, w, N, C, OC);
    expect_ref("mm.db", grad_delta(db, db0, OC), 1e-5f, 1e-5f);
    memcpy(di, di0, N * C * sizeof(float));
    be->matmul_backward(di, NULL, NULL, dout, inp, w, N, C, OC);
    expect_ref("mm.dinp", grad_delta(di, di0, N * C), 1e-5f, 1e-5f);
}

struct mm_ctx {
    float *inp, *w, *b, *out;
    const float *wout;
    int N, C, OC;
};

static double mm_loss(void *p)
{
    struct mm_ctx *c = p;
    be->matmul_forward(c->out, c->inp, c->w, c->b, c->N, c->C, c->OC, 0.0f);
    return dotd(c->out, c->wout, (size_t)c->N * c->OC);
}

Test(kernels, matmul_fd)
{
    /* OC = 70 > one 64-column block of the bias-gradient sums */
    const int N = 3, C = 4, OC = 70;
    struct mm_ctx c = {frandn(N * C, 1, 1), frandn(OC * C, 1, 2), frandn(OC, 1, 3),
                       fbuf(N * OC), frandn(N * OC, 1, 4), N, C, OC};
    float *di = fbuf(N * C), *dw = fbuf(OC * C), *db = fbuf(OC);
    be->matmul_backward(di, dw, db, c.wout, c.inp, c.w, N, C, OC);
    EXPECT_FD("matmul dinp", mm_loss, &c, c.inp, di, N * C, SIZE_MAX, 1);
    EXPECT_FD("matmul dweight", mm_loss, &c, c.w, dw, OC * C, SIZE_MAX, 2);
    EXPECT_FD("matmul dbias", mm_loss, &c, c.b, db, OC, SIZE_MAX, 3);
}

/* ------------------------------------------------------------ embedding */

Test(kernels, embedding_ref)
{
    const int V = 10, C = 8, N = 7;
    const int32_t *tok = refi("emb.tokens", N);
    const float *wte = reff("emb.wte", V * C), *dout = reff("emb.dout", N * C);
    float *out = fbuf(N * C);
    be->embedding_forward(out, tok, wte, N, C);
    expect_ref("emb.out", out, 0.0f, 0.0f);
    float *d0 = frandn(V * C, 1, 21), *d = fdup(d0, V * C);
    be->embedding_backward(d, dout, tok, N, C);
    expect_ref("emb.dwte", grad_delta(d, d0, V * C), 1e-6f, 1e-6f);
}

struct emb_ctx {
    const int32_t *tok;
    float *wte, *out;
    const float *wout;
    int N, C;
};

static double emb_loss(void *p)
{
    struct emb_ctx *c = p;
    be->embedding_forward(c->out, c->tok, c->wte, c->N, c->C);
    return dotd(c->out, c->wout, (size_t)c->N * c->C);
}

Test(kernels, embedding_fd)
{
    /* C = 40 splits unevenly over the threads' column slices */
    static const int32_t tok[6] = {2, 0, 2, 4, 2, 0};
    const int V = 5, C = 40, N = 6;
    struct emb_ctx c = {tok, frandn(V * C, 1, 1), fbuf(N * C), frandn(N * C, 1, 2), N, C};
    float *dwte = fbuf(V * C);
    be->embedding_backward(dwte, c.wout, tok, N, C);
    EXPECT_FD("embedding dwte", emb_loss, &c, c.wte, dwte, V * C, SIZE_MAX, 1);
}

/* -------------------------------------------------------------- rmsnorm */

Test(kernels, rmsnorm_ref)
{
    const int N = 4, C = 16;
    const float *inp = reff("rms.inp", N * C), *w = reff("rms.w", C);
    const float *dout = reff("rms.dout", N * C), eps = reff("rms.eps", 1)[0];
    float *out = fbuf(N * C), *rstd = fbuf(N);
    be->rmsnorm_forward(out, rstd, inp, w, eps, N, C);
    expect_ref("rms.out", out, 1e-6f, 1e-5f);
    expect_ref("rms.rstd", rstd, 1e-6f, 1e-5f);
    float *out2 = fbuf(N * C);   /* rstd may be NULL at inference */
    be->rmsnorm_forward(out2, NULL, inp, w, eps, N, C);
    expect_ref("rms.out", out2, 1e-6f, 1e-5f);
    float *di0 = frandn(N * C, 1, 31), *dw0 = frandn(C, 1, 32);
    float *di = fdup(di0, N * C), *dw = fdup(dw0, C);
    be->rmsnorm_backward(di, dw, dout, inp, w, rstd, N, C);
    expect_ref("rms.dinp", grad_delta(di, di0, N * C), 1e-5f, 1e-5f);
    expect_ref("rms.dw", grad_delta(dw, dw0, C), 1e-5f, 1e-5f);
}

/* A decode step's rows (on the calling thread), a prefill's (split by rows
 * over the threads) and one row alone give each row the same bits, near a
 * double-precision reference. */
Test(kernels, rmsnorm_paths_agree)
{
    static const int shapes[][2] = {{16, 512}, {12, 1000}, {64, 512}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        const int N = shapes[s][0], C = shapes[s][1];
        float *x = frandn((size_t)N * C, 3, 5 + s), *w = frandn(C, 1, 6 + s);
        float *out = fbuf((size_t)N * C), *rstd = fbuf(N), *one = fbuf(C), *r1 = fbuf(1);
        be->rmsnorm_forward(out, rstd, x, w, 1e-6f, N, C);
        int differ = 0, far = 0;
        for (int n = 0; n < N; n++) {
            be->rmsnorm_forward(one, r1, x + (size_t)n * C, w, 1e-6f, 1, C);
            differ += memcmp(one, out + (size_t)n * C, C * sizeof(float)) != 0 || *r1 != rstd[n];
            double ss = 0;
            for (int c = 0; c < C; c++) ss += (double)x[n * C + c] * x[n * C + c];
            const double r = 1.0 / sqrt(ss / C + 1e-6);
            for (int c = 0; c < C; c++) {
                const double want = w[c] * (x[n * C + c] * r);
                far += !(fabs(out[n * C + c] - want) <= 1e-5 * (1 + fabs(want)));
            }
        }
        cr_expect_eq(differ, 0, "N %d C %d: %d rows differ from the row alone", N, C, differ);
        cr_expect_eq(far, 0, "N %d C %d: %d outputs off the double reference", N, C, far);
    }
}

struct rms_ctx {
    float *inp, *w, *out, *rstd;
    const float *wout;
    int N, C;
};

static double rms_loss(void *p)
{
    struct rms_ctx *c = p;
    be->rmsnorm_forward(c->out, c->rstd, c->inp, c->w, 1e-5f, c->N, c->C);
    return dotd(c->out, c->wout, (size_t)c->N * c->C);
}

Test(kernels, rmsnorm_fd)
{
    const int N = 5, C = 24;
    struct rms_ctx c = {frandn(N * C, 2, 1), frandn(C, 1, 2), fbuf(N * C), fbuf(N),
                        frandn(N * C, 1, 3), N, C};
    rms_loss(&c);
    float *di = fbuf(N * C), *dw = fbuf(C);
    be->rmsnorm_backward(di, dw, c.wout, c.inp, c.w, c.rstd, N, C);
    EXPECT_FD("rmsnorm dinp", rms_loss, &c, c.inp, di, N * C, SIZE_MAX, 1);
    EXPECT_FD("rmsnorm dweight", rms_loss, &c, c.w, dw, C, SIZE_MAX, 2);
}

/* ----------------------------------------------------------------- rope */

/* x: (N,W) contiguous -> columns [col, col+W) of buf: (N,stride). */
static void rows_put(float *buf, const float *x, int N, int W, int stride, int col)
{
    for (int n = 0; n < N; n++)
        memcpy(buf + (size_t)n * stride + col, x + (size_t)n * W, W * sizeof(float));
}

/* The inverse of rows_put. */
static void rows_get(float *x, const float *buf, int N, int W, int stride, int col)
{
    for (int n = 0; n < N; n++)
        memcpy(x + (size_t)n * W, buf + (size_t)n * stride + col, W * sizeof(float));
}

Test(kernels, rope_ref)
{
    /* rows of a fused buffer: 5 unrelated floats, then the (H,D) head
     * block, then 3 more; those must stay untouched */
    const int N = 6, H = 3, D = 8, W = H * D, col = 5, stride = W + 8;
    const int32_t *pos = refi("rope.pos", N);
    const float *inv_freq = reff("rope.inv_freq", D / 2);
    const float *x = reff("rope.x", N * W), *dout = reff("rope.dout", N * W);
    float *buf = frandn((size_t)N * stride, 1, 41), *buf0 = fdup(buf, (size_t)N * stride);
    float *got = fbuf(N * W), *cs = fbuf(N * D);
    be->rope_cos_sin(cs, pos, inv_freq, N, D);
    rows_put(buf, x, N, W, stride, col);
    be->rope_forward(buf + col, cs, N, H, D, stride);
    rows_get(got, buf, N, W, stride, col);
    expect_ref("rope.out", got, 2e-6f, 1e-5f);
    rows_put(buf, dout, N, W, stride, col);
    be->rope_backward(buf + col, cs, N, H, D, stride);
    rows_get(got, buf, N, W, stride, col);
    expect_ref("rope.dx", got, 2e-6f, 1e-5f);
    size_t touched = 0;
    for (int n = 0; n < N; n++)
        for (int j = 0; j < stride; j++)
            if (j < col || j >= col + W) touched += buf[n * stride + j] != buf0[n * stride + j];
    cr_expect_eq(touched, 0, "rope wrote outside the head block");
}

/* A decode step's rows (on the calling thread) and a prefill's (split by
 * rows over the threads) rotate every head as each row alone does, inside
 * a fused qkv-like row (v columns untouched). */
static void rope_paths_case(int N)
{
    const int H = 12, D = 64, stride = 16 * D;
    float inv_freq[32];
    int32_t pos[64];
    for (int j = 0; j < D / 2; j++) inv_freq[j] = powf(10000.0f, -(float)(2 * j) / D);
    for (int n = 0; n < N; n++) pos[n] = 7 * n + 3;
    float *cs = fbuf(N * D), *x = frandn((size_t)N * stride, 1, 8);
    float *all = fdup(x, (size_t)N * stride), *one = fdup(x, (size_t)N * stride);
    be->rope_cos_sin(cs, pos, inv_freq, N, D);
    be->rope_forward(all, cs, N, H, D, stride);
    for (int n = 0; n < N; n++)
        be->rope_forward(one + (size_t)n * stride, cs + (size_t)n * D, 1, H, D, stride);
    cr_expect(memcmp(all, one, (size_t)N * stride * sizeof(float)) == 0,
              "rows rotated together differ from rows rotated alone");
    size_t moved = 0, kept = 0;
    for (int n = 0; n < N; n++)
        for (int c = 0; c < stride; c++) {
            const bool same = all[n * stride + c] == x[n * stride + c];
            moved += c < H * D && !same;
            kept += c >= H * D && same;
        }
    /* position 0 is not rotated: no row has it */
    cr_expect_eq(moved, (size_t)N * H * D, "%zu of the q/k elements rotated", moved);
    cr_expect_eq(kept, (size_t)N * (stride - H * D), "v columns written");
}

Test(kernels, rope_paths_agree)
{
    rope_paths_case(16);
    rope_paths_case(64);
}

struct rope_ctx {
    const float *cs, *wout;
    float *x, *buf;
    int N, H, D, stride;
};

static double rope_loss(void *p)
{
    struct rope_ctx *c = p;
    int W = c->H * c->D;
    rows_put(c->buf, c->x, c->N, W, c->stride, 0);
    be->rope_forward(c->buf, c->cs, c->N, c->H, c->D, c->stride);
    double s = 0;
    for (int n = 0; n < c->N; n++)
        s += dotd(c->buf + (size_t)n * c->stride, c->wout + (size_t)n * W, W);
    return s;
}

Test(kernels, rope_fd)
{
    static const int32_t pos[4] = {0, 1, 17, 300};
    const int N = 4, H = 2, D = 12, W = H * D, stride = 3 * W;
    float inv_freq[6];
    for (int j = 0; j < D / 2; j++) inv_freq[j] = powf(10000.0f, -(float)(2 * j) / D);
    float *cs = fbuf(N * D);
    be->rope_cos_sin(cs, pos, inv_freq, N, D);
    struct rope_ctx c = {cs, frandn(N * W, 1, 1), frandn(N * W, 1, 2),
                         fbuf((size_t)N * stride), N, H, D, stride};
    float *g = fbuf((size_t)N * stride), *dx = fbuf(N * W);
    rows_put(g, c.wout, N, W, stride, 0);
    be->rope_backward(g, cs, N, H, D, stride);
    rows_get(dx, g, N, W, stride, 0);
    EXPECT_FD("rope dx", rope_loss, &c, c.x, dx, N * W, SIZE_MAX, 1);
}

/* ------------------------------------------------------------ attention */

/* q, k, v (and dq, dk, dv) either inside one fused (B,T,(NH+2NKV)*D) buffer
 * or in three separate contiguous buffers. */
struct att_io {
    int B, T, NH, NKV, D, fused;
    float *q, *k, *v;
    int qs, ks, vs;
};

static void att_io_init(struct att_io *a, const float *qkv, int fused)
{
    int W = (a->NH + 2 * a->NKV) * a->D, N = a->B * a->T;
    int widths[3] = {a->NH * a->D, a->NKV * a->D, a->NKV * a->D};
    int cols[3] = {0, widths[0], widths[0] + widths[1]};
    float **ptr[3] = {&a->q, &a->k, &a->v};
    int *strides[3] = {&a->qs, &a->ks, &a->vs};
    a->fused = fused;
    float *f = fused ? fdup(qkv, (size_t)N * W) : NULL;
    for (int i = 0; i < 3; i++) {
        if (fused) {
            *ptr[i] = f + cols[i];
            *strides[i] = W;
        } else {
            *ptr[i] = fbuf((size_t)N * widths[i]);
            *strides[i] = widths[i];
            rows_get(*ptr[i], qkv, N, widths[i], W, cols[i]);
        }
    }
}

/* Gathers the three tensors back into fused (B,T,W) layout. */
static void att_io_gather(float *qkv, const struct att_io *a)
{
    int W = (a->NH + 2 * a->NKV) * a->D, N = a->B * a->T;
    int widths[3] = {a->NH * a->D, a->NKV * a->D, a->NKV * a->D};
    int cols[3] = {0, widths[0], widths[0] + widths[1]};
    const float *ptr[3] = {a->q, a->k, a->v};
    int strides[3] = {a->qs, a->ks, a->vs};
    for (int i = 0; i < 3; i++)
        for (int n = 0; n < N; n++)
            memcpy(qkv + (size_t)n * W + cols[i], ptr[i] + (size_t)n * strides[i],
                   widths[i] * sizeof(float));
}

/* seg: (B,T) document starts as attention_forward takes them, or NULL.
 * Counts the entries of att: (B,NH,T,T) outside each query's keys
 * seg[t]..t (0..t without seg) that are not exactly zero: the backward
 * relies on exact zeros to leave masked pairs without gradient. */
static size_t att_masked_nonzero(const float *att, const int32_t *seg, int B, int T, int NH)
{
    size_t bad = 0;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const float *row = att + (((size_t)b * NH + h) * T + t) * T;
                int s = seg ? seg[b * T + t] : 0;
                for (int j = 0; j < T; j++) bad += (j < s || j > t) && row[j] != 0.0f;
            }
    return bad;
}

/* The reference TAG.* from gen_ops.py; with `segmented`, TAG.seg holds the
 * packed documents' starts (a block-diagonal causal mask). */
static void attention_ref_case(const char *tag, int fused, int segmented)
{
    char name[64];
    snprintf(name, sizeof name, "%s.dims", tag);
    const int32_t *dims = refi(name, 5);
    struct att_io x = {.B = dims[0], .T = dims[1], .NH = dims[2], .NKV = dims[3], .D = dims[4]};
    int B = x.B, T = x.T, NH = x.NH, NKV = x.NKV, D = x.D;
    snprintf(name, sizeof name, "%s.seg", tag);
    const int32_t *seg = segmented ? refi(name, (size_t)B * T) : NULL;
    size_t nqkv = (size_t)B * T * (NH + 2 * NKV) * D, nout = (size_t)B * T * NH * D;
    snprintf(name, sizeof name, "%s.qkv", tag);
    const float *qkv = reff(name, nqkv);
    snprintf(name, sizeof name, "%s.dout", tag);
    const float *dout = reff(name, nout);
    att_io_init(&x, qkv, fused);

    float *out = fbuf(nout), *att = fbuf((size_t)B * NH * T * T);
    for (size_t i = 0; i < (size_t)B * NH * T * T; i++) att[i] = NAN;  /* all written */
    be->attention_forward(out, att, x.q, x.qs, x.k, x.ks, x.v, x.vs, seg, B, T, NH, NKV, D);
    snprintf(name, sizeof name, "%s.out", tag);
    expect_ref(name, out, 1e-5f, 1e-4f);
    snprintf(name, sizeof name, "%s.att", tag);
    expect_ref(name, att, 1e-6f, 1e-4f);
    size_t nz = att_masked_nonzero(att, seg, B, T, NH);
    cr_expect_eq(nz, 0, "%s: %zu masked probabilities are not exact zeros", tag, nz);

    /* gradients accumulate onto random pre-filled buffers */
    float *g0 = frandn(nqkv, 1, 51);
    struct att_io g = x;
    att_io_init(&g, g0, fused);
    be->attention_backward(g.q, g.k, g.v, dout, att, x.q, x.k, x.v, x.qs, x.ks, x.vs,
                           B, T, NH, NKV, D);
    float *got = fbuf(nqkv);
    att_io_gather(got, &g);
    snprintf(name, sizeof name, "%s.dqkv", tag);
    expect_ref(name, grad_delta(got, g0, nqkv), 1e-5f, 1e-4f);
}

Test(kernels, attention_ref_gqa4_fused) { attention_ref_case("att_gqa4", 1, 0); }
Test(kernels, attention_ref_gqa4_separate) { attention_ref_case("att_gqa4", 0, 0); }
Test(kernels, attention_ref_mha_separate) { attention_ref_case("att_mha", 0, 0); }
Test(kernels, attention_ref_mha_fused) { attention_ref_case("att_mha", 1, 0); }
Test(kernels, attention_ref_long_fused) { attention_ref_case("att_long", 1, 0); }
Test(kernels, attention_ref_segmented_fused) { attention_ref_case("att_seg", 1, 1); }
Test(kernels, attention_ref_segmented_separate) { attention_ref_case("att_seg", 0, 1); }

struct att_ctx {
    int B, T, NH, NKV, D;
    float *qkv, *out, *att;
    const float *wout;
    const int32_t *seg;     /* (B,T) document starts or NULL */
};

static double att_loss(void *p)
{
    struct att_ctx *c = p;
    int W = (c->NH + 2 * c->NKV) * c->D;
    be->attention_forward(c->out, c->att, c->qkv, W, c->qkv + c->NH * c->D, W,
                          c->qkv + (c->NH + c->NKV) * c->D, W, c->seg, c->B, c->T, c->NH,
                          c->NKV, c->D);
    return dotd(c->out, c->wout, (size_t)c->B * c->T * c->NH * c->D);
}

/* seg: (B,T) document starts or NULL (plain causal). */
static void attention_fd_case(int B, int T, int NH, int NKV, int D, const int32_t *seg,
                              size_t probes, uint64_t seed)
{
    int W = (NH + 2 * NKV) * D;
    size_t nqkv = (size_t)B * T * W, nout = (size_t)B * T * NH * D;
    struct att_ctx c = {B, T, NH, NKV, D, frandn(nqkv, 1.5f, seed), fbuf(nout),
                        fbuf((size_t)B * NH * T * T), frandn(nout, 1, seed + 1), seg};
    att_loss(&c);
    float *d = fbuf(nqkv);
    be->attention_backward(d, d + NH * D, d + (NH + NKV) * D, c.wout, c.att, c.qkv,
                           c.qkv + NH * D, c.qkv + (NH + NKV) * D, W, W, W, B, T, NH, NKV, D);
    char what[80];
    snprintf(what, sizeof what, "attention%s B%d T%d NH%d NKV%d D%d dqkv",
             seg ? " segmented" : "", B, T, NH, NKV, D);
    EXPECT_FD(what, att_loss, &c, c.qkv, d, nqkv, probes, seed);
}

Test(kernels, attention_fd)
{
    attention_fd_case(2, 5, 4, 1, 4, NULL, SIZE_MAX, 1);   /* GQA 4:1, B > 1 */
    attention_fd_case(2, 4, 2, 2, 4, NULL, SIZE_MAX, 2);   /* MHA */
    attention_fd_case(1, 67, 4, 2, 4, NULL, 120, 3);       /* crosses a row block */
}

/* (B,T) document starts from each row's list of starts (first 0, -1 ends). */
static int32_t *seg_from_starts(int B, int T, const int *starts, int per_row)
{
    int32_t *seg = talloc((size_t)B * T * sizeof *seg);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < per_row && starts[b * per_row + i] >= 0; i++)
            for (int t = starts[b * per_row + i]; t < T; t++) seg[b * T + t] = starts[b * per_row + i];
    return seg;
}

/* Every element of dq, dk, dv against central differences: a key of an
 * earlier document must get no gradient from later queries, and the
 * backward reads that only from the zeros the forward saved in att. */
Test(kernels, attention_fd_segmented)
{
    /* documents of 3, 1, 4 tokens; 2 and 6 */
    static const int s1[] = {0, 3, 4, 0, 2, -1};
    attention_fd_case(2, 8, 4, 2, 4, seg_from_starts(2, 8, s1, 3), SIZE_MAX, 4);
    /* a document from 60 to 69 straddles the 64-row block boundary */
    static const int s2[] = {0, 30, 60};
    attention_fd_case(1, 70, 4, 1, 4, seg_from_starts(1, 70, s2, 3), 150, 5);
}

/* --------------------------------------------------------------- swiglu */

Test(kernels, swiglu_ref)
{
    const int N = 3, I = 12;
    const float *gate = reff("swiglu.gate", N * I), *up = reff("swiglu.up", N * I);
    const float *dout = reff("swiglu.dout", N * I);
    float *out = fbuf(N * I);
    be->swiglu_forward(out, gate, up, N, I);
    expect_ref("swiglu.out", out, 1e-6f, 1e-5f);
    float *dg0 = frandn(N * I, 1, 61), *du0 = frandn(N * I, 1, 62);
    float *dg = fdup(dg0, N * I), *du = fdup(du0, N * I);
    be->swiglu_backward(dg, du, dout, gate, up, N, I);
    expect_ref("swiglu.dgate", grad_delta(dg, dg0, N * I), 1e-6f, 1e-5f);
    expect_ref("swiglu.dup", grad_delta(du, du0, N * I), 1e-6f, 1e-5f);
}

struct swiglu_ctx {
    float *gate, *up, *out;
    const float *wout;
    int N, I;
};

static double swiglu_loss(void *p)
{
    struct swiglu_ctx *c = p;
    be->swiglu_forward(c->out, c->gate, c->up, c->N, c->I);
    return dotd(c->out, c->wout, (size_t)c->N * c->I);
}

Test(kernels, swiglu_fd)
{
    const int N = 4, I = 20;
    struct swiglu_ctx c = {frandn(N * I, 6, 1), frandn(N * I, 1, 2), fbuf(N * I),
                           frandn(N * I, 1, 3), N, I};
    float *dg = fbuf(N * I), *du = fbuf(N * I);
    be->swiglu_backward(dg, du, c.wout, c.gate, c.up, N, I);
    EXPECT_FD("swiglu dgate", swiglu_loss, &c, c.gate, dg, N * I, SIZE_MAX, 1);
    EXPECT_FD("swiglu dup", swiglu_loss, &c, c.up, du, N * I, SIZE_MAX, 2);
}

/* Large enough for the parallel path, against scalar double. */
Test(kernels, swiglu_parallel)
{
    const int N = 7, I = CPU_PAR_MIN / 3;
    size_t n = (size_t)N * I;
    float *g = frandn(n, 12, 1), *u = frandn(n, 1, 2), *out = fbuf(n);
    be->swiglu_forward(out, g, u, N, I);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double want = g[i] / (1.0 + exp(-(double)g[i])) * u[i];
        bad += !(fabs(out[i] - want) <= 1e-6 + 2e-6 * fabs(want));
    }
    cr_expect_eq(bad, 0, "swiglu_forward: %zu of %zu off", bad, n);
}

/* ---------------------------------------------------- add, axpy, scale */

Test(kernels, vector_ref)
{
    const int n = 37;
    const float *x = reff("vec.x", n), *y = reff("vec.y", n), *as = reff("vec.alpha_s", 2);
    float *out = fbuf(n), *a = fdup(x, n);
    be->add(out, x, y, n);
    expect_ref("vec.add", out, 1e-7f, 2e-7f);
    be->add(a, a, y, n);   /* out aliasing a */
    expect_ref("vec.add", a, 1e-7f, 2e-7f);
    float *b = fdup(y, n);
    be->add(b, x, b, n);   /* out aliasing b */
    expect_ref("vec.add", b, 1e-7f, 2e-7f);
    float *yy = fdup(y, n);
    be->axpy(yy, x, as[0], n);
    expect_ref("vec.axpy", yy, 1e-7f, 2e-7f);
    float *xx = fdup(x, n);
    be->scale(xx, as[1], n);
    expect_ref("vec.scale", xx, 1e-7f, 2e-7f);
    float s = (float)be->sumsq(x, n);
    expect_ref("vec.sumsq", &s, 1e-7f, 2e-7f);
}

Test(kernels, vector_parallel)
{
    size_t n = 3 * CPU_PAR_MIN + 5;
    float *x = frandn(n, 3, 1), *y = frandn(n, 2, 2), *o = fbuf(n);
    float *yy = fdup(y, n), *xs = fdup(x, n);
    be->add(o, x, y, n);
    be->axpy(yy, x, -0.75f, n);
    be->scale(xs, 1.5f, n);
    size_t bad = 0;
    double ss = 0;
    for (size_t i = 0; i < n; i++) {
        /* single fp32 operations: exact agreement */
        bad += o[i] != x[i] + y[i];
        bad += yy[i] != y[i] + -0.75f * x[i];
        bad += xs[i] != x[i] * 1.5f;
        ss += (double)x[i] * x[i];
    }
    cr_expect_eq(bad, 0, "add/axpy/scale: %zu elements differ", bad);
    double got = be->sumsq(x, n);
    cr_expect(fabs(got - ss) <= 1e-12 * ss, "sumsq %.17g, want %.17g", got, ss);
    cr_expect_eq(be->sumsq(x, 0), 0.0);
}

struct sumsq_ctx {
    float *x;
    size_t n;
};

static double sumsq_loss(void *p)
{
    struct sumsq_ctx *c = p;
    return be->sumsq(c->x, c->n);
}

/* d(sum x^2)/dx = 2x */
Test(kernels, sumsq_fd)
{
    const size_t n = 50;
    struct sumsq_ctx c = {frandn(n, 2, 1), n};
    float *g = fbuf(n);
    for (size_t i = 0; i < n; i++) g[i] = 2.0f * c.x[i];
    EXPECT_FD("sumsq", sumsq_loss, &c, c.x, g, n, SIZE_MAX, 1);
}

/* -------------------------------------------------------------- logprob */

static void logprob_ref_case(const char *tag, int N, int V)
{
    char name[64];
    snprintf(name, sizeof name, "%s.logits", tag);
    const float *logits = reff(name, (size_t)N * V);
    snprintf(name, sizeof name, "%s.targets", tag);
    const int32_t *tg = refi(name, N);
    snprintf(name, sizeof name, "%s.dlogprob", tag);
    const float *dlp = reff(name, N);
    float *lp = fbuf(N), *lse = fbuf(N), *d = fdup(logits, (size_t)N * V);
    be->logprob_forward(lp, lse, logits, tg, N, V);
    snprintf(name, sizeof name, "%s.logprob", tag);
    expect_ref(name, lp, 1e-5f, 1e-6f);
    snprintf(name, sizeof name, "%s.lse", tag);
    expect_ref(name, lse, 1e-5f, 1e-6f);
    be->logprob_backward(d, lse, tg, dlp, N, V);
    snprintf(name, sizeof name, "%s.dlogits", tag);
    expect_ref(name, d, 1e-7f, 1e-5f);
}

Test(kernels, logprob_ref) { logprob_ref_case("lp", 6, 37); }
Test(kernels, logprob_ref_wide) { logprob_ref_case("lp_wide", 2, 5000); }

struct lp_ctx {
    float *logits, *lp, *lse;
    const int32_t *tg;
    const float *wout;
    int N, V;
};

static double lp_loss(void *p)
{
    struct lp_ctx *c = p;
    be->logprob_forward(c->lp, c->lse, c->logits, c->tg, c->N, c->V);
    return dotd(c->lp, c->wout, c->N);
}

Test(kernels, logprob_fd)
{
    static const int32_t tg[4] = {2, -1, 0, 10};
    const int N = 4, V = 11;
    struct lp_ctx c = {frandn(N * V, 4, 1), fbuf(N), fbuf(N), tg, frandn(N, 1, 2), N, V};
    float *d = fdup(c.logits, N * V);
    lp_loss(&c);
    be->logprob_backward(d, c.lse, tg, c.wout, N, V);
    for (int v = 0; v < V; v++) cr_expect_eq(d[V + v], 0.0f, "ignored row not zeroed");
    cr_expect_eq(c.lp[1], 0.0f, "ignored row's logprob");
    EXPECT_FD("logprob dlogits", lp_loss, &c, c.logits, d, N * V, SIZE_MAX, 1);
}

/* ---------------------------------------------------------------- adamw */

Test(kernels, adamw_ref)
{
    const int n = 40, steps = 5;
    const float *p0 = reff("adamw.p0", n), *grads = reff("adamw.grads", steps * n);
    const float *hp = reff("adamw.hp", 5);
    float *p = fdup(p0, n), *m = fbuf(n), *v = fbuf(n);
    for (int t = 1; t <= steps; t++)
        be->adamw(p, grads + (size_t)(t - 1) * n, m, v, n, hp[0], hp[1], hp[2], hp[3], hp[4], t);
    expect_ref("adamw.p", p, 1e-6f, 1e-5f);
    expect_ref("adamw.m", m, 1e-7f, 1e-5f);
    expect_ref("adamw.v", v, 1e-8f, 1e-5f);
}

/* Two steps on the parallel path against the formula in double. */
Test(kernels, adamw_parallel)
{
    size_t n = 2 * CPU_PAR_MIN + 3;
    const float lr = 3e-3f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.05f;
    float *p = frandn(n, 1, 1), *g = frandn(n, 1, 2), *m = fbuf(n), *v = fbuf(n);
    double *pd = talloc(n * sizeof(double)), *md = talloc(n * sizeof(double));
    double *vd = talloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) pd[i] = p[i];
    size_t bad = 0;
    for (int t = 1; t <= 2; t++) {
        be->adamw(p, g, m, v, n, lr, b1, b2, eps, wd, t);
        double bc1 = 1 - pow(b1, t), bc2 = 1 - pow(b2, t);
        for (size_t i = 0; i < n; i++) {
            pd[i] *= 1 - (double)lr * wd;
            md[i] = b1 * md[i] + (1 - (double)b1) * g[i];
            vd[i] = b2 * vd[i] + (1 - (double)b2) * g[i] * g[i];
            pd[i] -= lr / bc1 * md[i] / (sqrt(vd[i]) / sqrt(bc2) + eps);
        }
    }
    for (size_t i = 0; i < n; i++) bad += !(fabs(p[i] - pd[i]) <= 1e-6 + 1e-5 * fabs(pd[i]));
    cr_expect_eq(bad, 0, "adamw: %zu of %zu parameters off", bad, n);
}
