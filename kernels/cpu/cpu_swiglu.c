/* kernels/cpu/cpu_swiglu.c — the SwiGLU MLP gate (Shazeer 2020, "GLU
 * Variants Improve Transformer", eq. 6): out = silu(gate) * up with
 * silu(x) = x * sigmoid(x), as Hugging Face LlamaMLP's act_fn(gate) * up. */
#include "cpu.h"

static inline float cpu_swiglu1(float g, float u)
{
    float s = 1.0f / (1.0f + vexpf(-g));
    return g * s * u;
}

/* out, gate, up: (N,I). Elementwise, so the rows are flattened. A decode
 * step calls this once per row (the fused gate|up layout), so small calls
 * skip the OpenMP region (its fork costs more than the row). */
void cpu_swiglu_forward(float *out, const float *gate, const float *up,
                        int N, int I)
{
    size_t n = (size_t)N * I;
    if (n < CPU_PAR_MIN) {
        #pragma omp simd
        for (size_t i = 0; i < n; i++) out[i] = cpu_swiglu1(gate[i], up[i]);
        return;
    }
    #pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = cpu_swiglu1(gate[i], up[i]);
}

/* d silu(g)/dg = s + g s (1 - s), s = sigmoid(g):
 *   dgate += dout * up * s * (1 + g (1 - s)),  dup += dout * g * s.
 * dgate, dup, dout, gate, up: (N,I). */
void cpu_swiglu_backward(float *dgate, float *dup, const float *dout,
                         const float *gate, const float *up, int N, int I)
{
    size_t n = (size_t)N * I;
    #pragma omp parallel for simd schedule(static) if (parallel: n >= CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        float s = 1.0f / (1.0f + vexpf(-g));
        dgate[i] += dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
        dup[i] += dout[i] * g * s;
    }
}
