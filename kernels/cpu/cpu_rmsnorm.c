/* kernels/cpu/cpu_rmsnorm.c — RMSNorm (Zhang & Sennrich 2019) as Hugging
 * Face LlamaRMSNorm / Qwen2RMSNorm, in fp32:
 *   y = w * (x * r),  r = 1 / sqrt(mean(x^2) + eps). */
#include "cpu.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>

/* Row n of cpu_rmsnorm_forward. */
static inline void cpu_rmsnorm_row(float *out, float *rstd, const float *inp,
                                   const float *weight, float eps, int n, int C)
{
    const float *x = inp + (size_t)n * C;
    float *y = out + (size_t)n * C;
    float ss = 0.0f;
    #pragma omp simd reduction(+:ss)
    for (int c = 0; c < C; c++) ss += x[c] * x[c];
    float r = 1.0f / sqrtf(ss / (float)C + eps);
    if (rstd) rstd[n] = r;
    #pragma omp simd
    for (int c = 0; c < C; c++) y[c] = weight[c] * (x[c] * r);
}

/* out: (N,C), rstd: (N) or NULL, inp: (N,C), weight: (C). */
void cpu_rmsnorm_forward(float *out, float *rstd, const float *inp,
                         const float *weight, float eps, int N, int C)
{
    if (cpu_in_team()) {
        #pragma omp for schedule(static)
        for (int n = 0; n < N; n++) cpu_rmsnorm_row(out, rstd, inp, weight, eps, n, C);
        return;
    }
    /* a decode step's few rows are cheaper on one thread than waking the
     * team (or entering a region whose `if` is false) */
    if ((size_t)N * C < CPU_PAR_MIN) {
        for (int n = 0; n < N; n++) cpu_rmsnorm_row(out, rstd, inp, weight, eps, n, C);
        return;
    }
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) cpu_rmsnorm_row(out, rstd, inp, weight, eps, n, C);
}

/* Gradient of y_j = w_j x_j r with dr/dx_i = -r^3 x_i / C:
 *   dx_i += r w_i dy_i - (r^3 / C) x_i sum_j(dy_j w_j x_j)
 *   dw_j += sum_n dy_j x_j r
 * dinp: (N,C), dweight: (C), dout: (N,C), inp: (N,C), weight: (C),
 * rstd: (N). dweight is summed per thread, then the partials are added in
 * thread order (deterministic for a given thread count). */
void cpu_rmsnorm_backward(float *dinp, float *dweight, const float *dout,
                          const float *inp, const float *weight,
                          const float *rstd, int N, int C)
{
    int maxt = omp_get_max_threads();
    float *part = calloc((size_t)maxt * C, sizeof(float));
    /* Without scratch (out of memory) run on one thread into dweight. */
    int serial = part == NULL;

    #pragma omp parallel if (!serial)
    {
        int id = omp_get_thread_num();
        float *pw = serial ? dweight : part + (size_t)id * C;
        #pragma omp for schedule(static)
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C;
            const float *dy = dout + (size_t)n * C;
            float *dx = dinp + (size_t)n * C;
            float r = rstd[n];
            float dot = 0.0f;
            #pragma omp simd reduction(+:dot)
            for (int c = 0; c < C; c++) dot += dy[c] * weight[c] * x[c];
            float k = r * r * r * dot / (float)C;
            #pragma omp simd
            for (int c = 0; c < C; c++) dx[c] += r * weight[c] * dy[c] - k * x[c];
            #pragma omp simd
            for (int c = 0; c < C; c++) pw[c] += dy[c] * x[c] * r;
        }
        if (!serial) {
            #pragma omp for schedule(static)
            for (int c = 0; c < C; c++) {
                float s = 0.0f;
                for (int t = 0; t < maxt; t++) s += part[(size_t)t * C + c];
                dweight[c] += s;
            }
        }
    }
    free(part);
}
