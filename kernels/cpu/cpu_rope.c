/* kernels/cpu/cpu_rope.c — rotary position embedding (Su et al. 2021,
 * RoFormer eq. 34) in Hugging Face's rotate_half layout: dimension j is
 * paired with j + D/2 (not interleaved pairs), as in
 * transformers' apply_rotary_pos_emb: x * cos + rotate_half(x) * sin. */
#include "cpu.h"

#include <math.h>

/* cos/sin are computed per token for this many frequencies at a time and
 * reused across heads (no heap scratch; any D works). */
#define CPU_ROPE_CHUNK 128

/* Rotates every head of every token by +theta (dir = 1) or -theta
 * (dir = -1): theta_j = (float)pos[n] * inv_freq[j] in fp32, as HF computes
 * inv_freq @ position_ids in fp32, then cos/sin of that fp32 angle.
 * x: (N,H,D) with row stride `stride` between tokens; pos: (N);
 * inv_freq: (D/2). Row n: */
static inline void cpu_rope_row(float *x, const int32_t *pos, const float *inv_freq,
                                int n, int H, int D, int stride, float dir)
{
    int half = D / 2;
    float cs[CPU_ROPE_CHUNK], sn[CPU_ROPE_CHUNK];
    float p = (float)pos[n];
    for (int j0 = 0; j0 < half; j0 += CPU_ROPE_CHUNK) {
        int nj = half - j0 < CPU_ROPE_CHUNK ? half - j0 : CPU_ROPE_CHUNK;
        for (int j = 0; j < nj; j++) {
            float theta = p * inv_freq[j0 + j];
            cs[j] = cosf(theta);
            sn[j] = dir * sinf(theta);
        }
        for (int h = 0; h < H; h++) {
            float *x1 = x + (size_t)n * stride + (size_t)h * D + j0;
            float *x2 = x1 + half;
            #pragma omp simd
            for (int j = 0; j < nj; j++) {
                float a = x1[j], b = x2[j];
                x1[j] = a * cs[j] - b * sn[j];
                x2[j] = b * cs[j] + a * sn[j];
            }
        }
    }
}

static void cpu_rope_rotate(float *x, const int32_t *pos, const float *inv_freq,
                            int N, int H, int D, int stride, float dir)
{
    /* a decode step's rows: one thread, no OpenMP region */
    if ((size_t)N * H * D < CPU_PAR_MIN) {
        for (int n = 0; n < N; n++) cpu_rope_row(x, pos, inv_freq, n, H, D, stride, dir);
        return;
    }
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) cpu_rope_row(x, pos, inv_freq, n, H, D, stride, dir);
}

/* x: (N,H,D), row stride `stride`; in place: x = R(theta) x. */
void cpu_rope_forward(float *x, const int32_t *pos, const float *inv_freq,
                      int N, int H, int D, int stride)
{
    cpu_rope_rotate(x, pos, inv_freq, N, H, D, stride, 1.0f);
}

/* dx: (N,H,D), row stride `stride`; in place: dx = R(theta)^T dx =
 * R(-theta) dx (cos is even, sin odd). */
void cpu_rope_backward(float *dx, const int32_t *pos, const float *inv_freq,
                       int N, int H, int D, int stride)
{
    cpu_rope_rotate(dx, pos, inv_freq, N, H, D, stride, -1.0f);
}
