/* kernels/cpu/cpu.h — internals of the CPU backend (oneDNN sgemm + OpenMP).
 * Declares the cpu_* ops that backend_cpu() puts in its table, plus the
 * vectorisable exp the elementwise kernels share. Not for use outside
 * kernels/cpu/: everyone else goes through struct backend (backend.h).
 * Shapes and semantics of every op are those documented in backend.h. */
#ifndef AHA_CPU_H
#define AHA_CPU_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "backend.h"
#include "vexpf.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

/* ---- IEEE binary16 (the KV cache's KV_F16 elements), as bits: the F16C
 * instructions where the target has them, else backend.h's f16_to_f32 /
 * f16_from_f32, which compute the same bits (the unit tests check the two
 * agree). */
static inline float cpu_h2f(uint16_t h)
{
#if defined(__F16C__)
    return _cvtsh_ss(h);
#else
    return f16_to_f32(h);
#endif
}

static inline uint16_t cpu_f2h(float f)
{
#if defined(__F16C__)
    return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
    return f16_from_f32(f);
#endif
}

/* ---- backend->team_run: set on each thread of its team while fn runs;
 * the ops that can share a team check it. */
extern _Thread_local int cpu_team;
static inline int cpu_in_team(void) { return cpu_team; }
void cpu_team_run(void (*fn)(void *arg), void *arg);

/* Row-block size of the attention kernels: scores are computed block-row by
 * block-row, only up to the causal diagonal, so ~(T+CPU_ATT_BLOCK)/(2T) of
 * the full T*T work is done. */
#ifndef CPU_ATT_BLOCK
#define CPU_ATT_BLOCK 64
#endif

/* Elementwise loops shorter than this run on the calling thread: starting
 * the OpenMP team costs more than the work. */
#define CPU_PAR_MIN 16384

/* Row-major sgemm, C: (M,N) = alpha * op(A) @ op(B) + beta * C, straight to
 * oneDNN's dnnl_sgemm. Runs multi-threaded from serial code and
 * single-threaded inside an OpenMP parallel region (oneDNN checks
 * omp_in_parallel). Reports a failing call on stderr (ops return void). */
void cpu_gemm(int transa, int transb, int M, int N, int K, float alpha,
              const float *A, int lda, const float *B, int ldb,
              float beta, float *C, int ldc);

void cpu_matmul_forward(float *out, const float *inp, const float *weight,
                        const float *bias, int N, int C, int OC, float beta);
void cpu_matmul_backward(float *dinp, float *dweight, float *dbias,
                         const float *dout, const float *inp,
                         const float *weight, int N, int C, int OC);

void cpu_embedding_forward(float *out, const int32_t *tokens,
                           const float *wte, int N, int C);
void cpu_embedding_backward(float *dwte, const float *dout,
                            const int32_t *tokens, int N, int C);

void cpu_rmsnorm_forward(float *out, float *rstd, const float *inp,
                         const float *weight, float eps, int N, int C);
void cpu_rmsnorm_backward(float *dinp, float *dweight, const float *dout,
                          const float *inp, const float *weight,
                          const float *rstd, int N, int C);

/* One head x: (D) of a token rotated by +theta (dir = 1) or -theta (dir
 * = -1), in place or into y (y may be x): c, s its D/2 cos and sin
 * (cpu_rope_cos_sin's row). The one definition that cpu_rope.c and the
 * attention step (cpu_decode.c) share, so both give the same bits. */
static inline void cpu_rope_head(float *y, const float *x, const float *c, const float *s,
                                 int D, float dir)
{
    const int half = D / 2;
    #pragma omp simd
    for (int j = 0; j < half; j++) {
        const float a = x[j], b = x[j + half], sn = dir * s[j];
        y[j] = a * c[j] - b * sn;
        y[j + half] = b * c[j] + a * sn;
    }
}

void cpu_rope_cos_sin(float *cs, const int32_t *pos, const float *inv_freq, int N, int D);
void cpu_rope_forward(float *x, const float *cs, int N, int H, int D, int stride);
void cpu_rope_backward(float *dx, const float *cs, int N, int H, int D, int stride);

void cpu_attention_forward(float *out, float *att, const float *q, int qs,
                           const float *k, int ks, const float *v, int vs,
                           const int32_t *seg, int B, int T, int NH, int NKV, int D);
void cpu_attention_backward(float *dq, float *dk, float *dv,
                            const float *dout, const float *att,
                            const float *q, const float *k, const float *v,
                            int qs, int ks, int vs,
                            int B, int T, int NH, int NKV, int D);

void cpu_swiglu_forward(float *out, const float *gate, const float *up,
                        int N, int I);
void cpu_swiglu_backward(float *dgate, float *dup, const float *dout,
                         const float *gate, const float *up, int N, int I);

void cpu_add(float *out, const float *a, const float *b, size_t n);
void cpu_axpy(float *y, const float *x, float alpha, size_t n);
double cpu_sumsq(const float *x, size_t n);
void cpu_scale(float *x, float s, size_t n);

void cpu_logprob_forward(float *logprob, float *lse, const float *logits,
                         const int32_t *targets, int N, int V);
void cpu_logprob_backward(float *logits, const float *lse,
                          const int32_t *targets, const float *dlogprob,
                          int N, int V);

void cpu_adamw(float *p, const float *g, float *m, float *v, size_t n,
               float lr, float beta1, float beta2, float eps,
               float weight_decay, int t);

void cpu_kv_cache_write(void *kv, enum kv_dtype dt, size_t block_stride, size_t vofs,
                        const int32_t *block_tables, int max_blocks,
                        const int32_t *seq, const int32_t *pos,
                        const float *k, int ks, const float *v, int vs,
                        int N, int NKV, int D, int bs);
void cpu_attention_paged_step(float *out, const float *qkv, int qs, const float *cs, void *kv,
                              enum kv_dtype dt, size_t block_stride, size_t vofs,
                              const int32_t *block_tables, int max_blocks, const int32_t *seq,
                              const int32_t *pos, int N, int NH, int NKV, int D, int bs);
void cpu_attention_paged_forward(float *out, const float *q, int qs,
                                 const void *kv, enum kv_dtype dt, size_t block_stride,
                                 size_t vofs, const int32_t *block_tables,
                                 int max_blocks, const int32_t *seq,
                                 const int32_t *pos, int N, int NH, int NKV,
                                 int D, int bs);
size_t cpu_rows_packed_bytes(int C, int OC, enum w_dtype dt);
void cpu_rows_pack(void *dst, const float *weight, int C, int OC, enum w_dtype dt);
void cpu_rows_pack_glu(void *dst, const float *weight, int C, int I, enum w_dtype dt);
void cpu_matmul_rows_forward(float *out, const float *inp, const void *packed, enum w_dtype dt,
                             const float *bias, const float *resid, int N, int C, int OC);
void cpu_matmul_rows_glu_forward(float *h, const float *inp, const void *packed,
                                 enum w_dtype dt, int N, int C, int I);


#endif
