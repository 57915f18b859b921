/* kernels/cpu/cpu_adamw.c — the AdamW update (Loshchilov & Hutter 2019,
 * decoupled weight decay), step for step as torch.optim.AdamW
 * (torch/optim/adamw.py, _single_tensor_adamw, torch 1.13). */
#include "cpu.h"

#include <math.h>
#include <omp.h>

struct cpu_adamw_coef {
    float decay;        /* 1 - lr * wd */
    float step_size;    /* lr / (1 - b1^t) */
    float bc2_sqrt;     /* sqrt(1 - b2^t) */
    float beta1, beta2, eps;
};

/* Elements [lo,hi) of the update. gcc 12 guards sqrtf with an errno
 * branch (for negative or NaN arguments), which blocks vectorisation; with
 * finite-math-only on this function alone, sqrtf(fabsf(v)) is provably
 * in-domain and becomes vsqrtps. v >= 0 already, so fabsf changes nothing;
 * the loop has no comparisons, so results are the IEEE ones of the scalar
 * code (NaN still propagates in hardware). */
__attribute__((optimize("finite-math-only")))
static void cpu_adamw_span(float *p, const float *g, float *m, float *v,
                           size_t lo, size_t hi, const struct cpu_adamw_coef *c)
{
    const float decay = c->decay, step_size = c->step_size, bc2 = c->bc2_sqrt;
    const float b1 = c->beta1, b2 = c->beta2, eps = c->eps;
    const float one_b1 = 1.0f - b1, one_b2 = 1.0f - b2;
    #pragma omp simd
    for (size_t i = lo; i < hi; i++) {
        float gi = g[i];
        float mi = b1 * m[i] + one_b1 * gi;
        float vi = b2 * v[i] + one_b2 * gi * gi;
        float denom = sqrtf(fabsf(vi)) / bc2 + eps;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - step_size * mi / denom;
    }
}

/* p, g, m, v: (n). t is the 1-based step count. Per element:
 *   p *= 1 - lr*wd
 *   m  = b1*m + (1-b1)*g
 *   v  = b2*v + (1-b2)*g^2
 *   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * The bias corrections are computed in double, as torch does in Python. */
void cpu_adamw(float *p, const float *g, float *m, float *v, size_t n,
               float lr, float beta1, float beta2, float eps,
               float weight_decay, int t)
{
    struct cpu_adamw_coef c = {
        .decay = (float)(1.0 - (double)lr * weight_decay),
        .step_size = (float)(lr / (1.0 - pow(beta1, t))),
        .bc2_sqrt = (float)sqrt(1.0 - pow(beta2, t)),
        .beta1 = beta1, .beta2 = beta2, .eps = eps,
    };
    #pragma omp parallel if (n >= CPU_PAR_MIN)
    {
        size_t nt = (size_t)omp_get_num_threads(), id = (size_t)omp_get_thread_num();
        cpu_adamw_span(p, g, m, v, n * id / nt, n * (id + 1) / nt, &c);
    }
}
