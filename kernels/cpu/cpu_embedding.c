/* kernels/cpu/cpu_embedding.c — token embedding lookup and its scatter-add
 * gradient. Tokens are trusted (validated by the caller, backend.h). */
#include "cpu.h"

#include <omp.h>
#include <string.h>

/* out: (N,C) = wte: (V,C)[tokens[n]]; tokens: (N). */
void cpu_embedding_forward(float *out, const int32_t *tokens,
                           const float *wte, int N, int C)
{
    if ((size_t)N * C < CPU_PAR_MIN) {
        for (int n = 0; n < N; n++)
            memcpy(out + (size_t)n * C, wte + (size_t)tokens[n] * C, (size_t)C * sizeof(float));
        return;
    }
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        memcpy(out + (size_t)n * C, wte + (size_t)tokens[n] * C,
               (size_t)C * sizeof(float));
}

/* dwte: (V,C) += scatter of dout: (N,C) by tokens: (N). Repeated tokens
 * would race if rows were split over threads, so each thread owns a slice
 * of the C columns and walks all N rows in order (deterministic). */
void cpu_embedding_backward(float *dwte, const float *dout,
                            const int32_t *tokens, int N, int C)
{
    #pragma omp parallel
    {
        int nt = omp_get_num_threads(), id = omp_get_thread_num();
        /* column slices rounded to 16 floats (one cache line) */
        int per = ((C + nt - 1) / nt + 15) / 16 * 16;
        int c0 = id * per < C ? id * per : C;
        int c1 = c0 + per < C ? c0 + per : C;
        for (int n = 0; n < N; n++) {
            float *dst = dwte + (size_t)tokens[n] * C;
            const float *src = dout + (size_t)n * C;
            #pragma omp simd
            for (int c = c0; c < c1; c++) dst[c] += src[c];
        }
    }
}
