/* kernels/cpu/cpu_vector.c — flat-vector helpers: residual add, axpy,
 * scaling and the sum of squares used for gradient-norm clipping. */
#include "cpu.h"

/* Elementwise ops below CPU_PAR_MIN run without an OpenMP region: even a
 * region whose `if` is false costs about a microsecond, more than a
 * decode step's add itself. */

/* out = a + b, n elements; out may alias a or b (same index only). */
void cpu_add(float *out, const float *a, const float *b, size_t n)
{
    if (n < CPU_PAR_MIN) {
        #pragma omp simd
        for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
        return;
    }
    #pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

/* y += alpha * x, n elements. */
void cpu_axpy(float *y, const float *x, float alpha, size_t n)
{
    if (n < CPU_PAR_MIN) {
        #pragma omp simd
        for (size_t i = 0; i < n; i++) y[i] += alpha * x[i];
        return;
    }
    #pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) y[i] += alpha * x[i];
}

/* Returns sum x[i]^2, each square and the sum in double. */
double cpu_sumsq(const float *x, size_t n)
{
    double acc = 0.0;
    #pragma omp parallel for simd schedule(static) if (parallel: n >= CPU_PAR_MIN) reduction(+:acc)
    for (size_t i = 0; i < n; i++) acc += (double)x[i] * (double)x[i];
    return acc;
}

/* x *= s, n elements. */
void cpu_scale(float *x, float s, size_t n)
{
    #pragma omp parallel for simd schedule(static) if (parallel: n >= CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++) x[i] *= s;
}
