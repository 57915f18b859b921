/* kernels/cpu/cpu_rope.c — rotary position embedding (Su et al. 2021,
 * RoFormer eq. 34) in Hugging Face's rotate_half layout: dimension j is
 * paired with j + D/2 (not interleaved pairs), as in
 * transformers' apply_rotary_pos_emb: x * cos + rotate_half(x) * sin.
 * As there, cos and sin are computed once per forward (cpu_rope_cos_sin)
 * and every layer's rotation reads them: the angles are the same in every
 * layer (a decode step of 16 rows on small: RoPE 0.041-0.047 -> 0.023-0.027
 * ms for its 8 layers). */
#include "cpu.h"

#include <math.h>

/* cs: (N,D): row n = [cos theta_j | sin theta_j], j < D/2, with
 * theta_j = (float)pos[n] * inv_freq[j] in fp32, as HF computes
 * inv_freq @ position_ids in fp32, then cos/sin of that fp32 angle. */
static inline void cpu_rope_cos_sin_row(float *cs, const int32_t *pos, const float *inv_freq,
                                        int n, int D)
{
    const int half = D / 2;
    float *c = cs + (size_t)n * D, *s = c + half;
    const float p = (float)pos[n];
    for (int j = 0; j < half; j++) {
        const float theta = p * inv_freq[j];
        c[j] = cosf(theta);
        s[j] = sinf(theta);
    }
}

void cpu_rope_cos_sin(float *cs, const int32_t *pos, const float *inv_freq, int N, int D)
{
    /* a decode step's rows: one thread, no OpenMP region (even one whose
     * `if` is false costs microseconds) */
    if ((size_t)N * D < CPU_PAR_MIN / 8) {
        for (int n = 0; n < N; n++) cpu_rope_cos_sin_row(cs, pos, inv_freq, n, D);
        return;
    }
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) cpu_rope_cos_sin_row(cs, pos, inv_freq, n, D);
}

/* Row n of x: (N,H,D) with row stride `stride` between tokens: every head
 * rotated by +theta (dir = 1) or -theta (dir = -1). */
static inline void cpu_rope_row(float *x, const float *cs, int n, int H, int D, int stride,
                                float dir)
{
    const float *c = cs + (size_t)n * D;
    for (int h = 0; h < H; h++) {
        float *xh = x + (size_t)n * stride + (size_t)h * D;
        cpu_rope_head(xh, xh, c, c + D / 2, D, dir);
    }
}

static void cpu_rope_rotate(float *x, const float *cs, int N, int H, int D, int stride,
                            float dir)
{
    /* a decode step's rows: one thread, no OpenMP region */
    if ((size_t)N * H * D < CPU_PAR_MIN) {
        for (int n = 0; n < N; n++) cpu_rope_row(x, cs, n, H, D, stride, dir);
        return;
    }
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) cpu_rope_row(x, cs, n, H, D, stride, dir);
}

/* x: (N,H,D), row stride `stride`; in place: x = R(theta) x. */
void cpu_rope_forward(float *x, const float *cs, int N, int H, int D, int stride)
{
    cpu_rope_rotate(x, cs, N, H, D, stride, 1.0f);
}

/* dx: (N,H,D), row stride `stride`; in place: dx = R(theta)^T dx =
 * R(-theta) dx (cos is even, sin odd). */
void cpu_rope_backward(float *dx, const float *cs, int N, int H, int D, int stride)
{
    cpu_rope_rotate(dx, cs, N, H, D, stride, -1.0f);
}
