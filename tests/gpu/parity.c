/* tests/gpu/parity.c — every op the CUDA backend implements, run on the
 * same inputs as the CPU backend (the reference) and compared as
 * |gpu - cpu| <= atol + rtol * |cpu|. Prints one table row per op and exits
 * non-zero on any mismatch or when no device is usable. Built and run by
 * tests/gpu/run.sh on a machine with an NVIDIA GPU. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "engine/rng.h"

static const struct backend *cpu, *gpu;
static int failures;

static float *rnd(size_t n, struct rng *r)
{
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = (float)rng_normal(r);
    return x;
}

static float *up(const float *h, size_t n)
{
    float *d = gpu->alloc(n * sizeof *d);
    gpu->upload(d, h, n * sizeof *d);
    return d;
}

/* Compares the device buffer d with the host reference ref. */
static void check(const char *op, const float *d, const float *ref, size_t n, float atol, float rtol)
{
    float *h = malloc(n * sizeof *h);
    gpu->download(h, d, n * sizeof *h);
    size_t bad = 0;
    float worst = 0;
    for (size_t i = 0; i < n; i++) {
        float e = fabsf(h[i] - ref[i]);
        if (!(e <= worst)) worst = e;
        bad += !(e <= atol + rtol * fabsf(ref[i]));
    }
    printf("| %-22s | %9zu | %10.3g | %s |\n", op, n, worst, bad ? "FAIL" : "ok");
    failures += bad != 0;
    free(h);
}

int main(void)
{
    cpu = backend_cpu();
    gpu = backend_cuda();
    if (!gpu) { fprintf(stderr, "gpu parity: no usable CUDA device\n"); return 2; }
    printf("cpu: %s\ngpu: %s\n\n| op | elements | max abs err | |\n|---|---|---|---|\n",
           cpu->describe(), gpu->describe());
    struct rng r;
    rng_seed(&r, 1);
    const int N = 256, C = 512, OC = 768;
    float *inp = rnd((size_t)N * C, &r), *w = rnd((size_t)OC * C, &r), *b = rnd(OC, &r);
    float *dout = rnd((size_t)N * OC, &r);
    float *out = calloc((size_t)N * OC, sizeof *out);
    cpu->matmul_forward(out, inp, w, b, N, C, OC, 0.0f);
    float *d_inp = up(inp, (size_t)N * C), *d_w = up(w, (size_t)OC * C), *d_b = up(b, OC);
    float *d_out = gpu->alloc((size_t)N * OC * sizeof(float));
    gpu->matmul_forward(d_out, d_inp, d_w, d_b, N, C, OC, 0.0f);
    check("matmul_forward (bias)", d_out, out, (size_t)N * OC, 1e-3f, 1e-3f);

    float *dinp = calloc((size_t)N * C, sizeof *dinp), *dw = calloc((size_t)OC * C, sizeof *dw);
    float *db = calloc(OC, sizeof *db);
    cpu->matmul_backward(dinp, dw, db, dout, inp, w, N, C, OC);
    float *d_dout = up(dout, (size_t)N * OC);
    float *d_dinp = gpu->alloc((size_t)N * C * sizeof(float)), *d_dw = gpu->alloc((size_t)OC * C * sizeof(float));
    float *d_db = gpu->alloc(OC * sizeof(float));
    gpu->matmul_backward(d_dinp, d_dw, d_db, d_dout, d_inp, d_w, N, C, OC);
    check("matmul_backward dinp", d_dinp, dinp, (size_t)N * C, 1e-2f, 1e-3f);
    check("matmul_backward dweight", d_dw, dw, (size_t)OC * C, 1e-2f, 1e-3f);
    check("matmul_backward dbias", d_db, db, OC, 1e-2f, 1e-3f);

    /* gemm with transposes and strides: C (M,Nn) = A^T (K,M)^T @ B (K,Nn) */
    const int M = 64, Nn = 96, K = 80;
    float *A = rnd((size_t)K * M, &r), *B = rnd((size_t)K * Nn, &r), *Cm = calloc((size_t)M * Nn, sizeof *Cm);
    cpu->gemm(1, 0, M, Nn, K, 0.5f, A, M, B, Nn, 0.0f, Cm, Nn);
    float *d_A = up(A, (size_t)K * M), *d_B = up(B, (size_t)K * Nn), *d_C = gpu->alloc((size_t)M * Nn * sizeof(float));
    gpu->gemm(1, 0, M, Nn, K, 0.5f, d_A, M, d_B, Nn, 0.0f, d_C, Nn);
    check("gemm (A^T B)", d_C, Cm, (size_t)M * Nn, 1e-3f, 1e-3f);

    const size_t n = 100003;
    float *x = rnd(n, &r), *y = rnd(n, &r), *z = calloc(n, sizeof *z);
    float *d_x = up(x, n), *d_y = up(y, n), *d_z = gpu->alloc(n * sizeof(float));
    cpu->add(z, x, y, n);
    gpu->add(d_z, d_x, d_y, n);
    check("add", d_z, z, n, 0, 0);
    cpu->axpy(y, x, 0.25f, n);
    gpu->axpy(d_y, d_x, 0.25f, n);
    check("axpy", d_y, y, n, 1e-6f, 0);
    cpu->scale(x, 1.5f, n);
    gpu->scale(d_x, 1.5f, n);
    check("scale", d_x, x, n, 0, 0);
    double s_cpu = cpu->sumsq(x, n), s_gpu = gpu->sumsq(d_x, n);
    bool ok = fabs(s_cpu - s_gpu) <= 1e-4 * s_cpu;
    printf("| %-22s | %9zu | %10.3g | %s |\n", "sumsq", n, fabs(s_cpu - s_gpu), ok ? "ok" : "FAIL");
    failures += !ok;
    printf("\ngpu parity: %d passed, %d failed\n", 10 - failures, failures);
    return failures ? 1 : 0;
}
