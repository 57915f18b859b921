/* kernels/cpu/cpu_decode.c — the decoding ops over a paged KV cache (see
 * backend.h): writing new keys/values into their blocks, and causal GQA
 * attention of new query rows against the cached positions. Training-path
 * attention (full (B,T) sequences, saved probabilities) is cpu_attention.c.
 *
 * Attention per (row, kv head): the query heads of the group share every
 * key/value read; scores of all cached positions are computed in a
 * per-thread scratch row, softmaxed exactly as cpu_attention.c does
 * (max-subtracted, cpu_expf, normalised probabilities), then the values are
 * accumulated. Work items (row, kv head) are spread over the OpenMP threads:
 * decode steps have one row per sequence, chunked prefills many.
 *
 * matmul_rows_forward: the generation engine's linear layers. Every output
 * is one fixed-order dot product (16-lane partial sums, fixed lane tree), so
 * a row's result never depends on the batch around it (oneDNN's sgemm picks
 * kernels and blockings by M, which changes the rounding); register tiles
 * of 4 weight rows x 4 input rows stream each weight once per decode step,
 * which is what bounds decoding, with a prefetch of the next weight rows. */
#include "cpu.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

/* Address of position t of sequence row `tbl` (its block table) in the
 * keys of kv head g. */
static inline size_t cpu_kv_slot(const int32_t *tbl, int t, int g, size_t block_stride,
                                 int D, int bs)
{
    return (size_t)tbl[t / bs] * block_stride + ((size_t)g * bs + (size_t)(t % bs)) * D;
}

/* k, v: (N,NKV,D) row strides ks, vs -> the (seq[n], pos[n]) slots. */
void cpu_kv_cache_write(float *kv, size_t block_stride, size_t vofs,
                        const int32_t *block_tables, int max_blocks,
                        const int32_t *seq, const int32_t *pos,
                        const float *k, int ks, const float *v, int vs,
                        int N, int NKV, int D, int bs)
{
    #pragma omp parallel for schedule(static) if (parallel: (size_t)N * NKV * D >= CPU_PAR_MIN)
    for (int n = 0; n < N; n++) {
        const int32_t *tbl = block_tables + (size_t)seq[n] * max_blocks;
        for (int g = 0; g < NKV; g++) {
            float *dk = kv + cpu_kv_slot(tbl, pos[n], g, block_stride, D, bs);
            memcpy(dk, k + (size_t)n * ks + (size_t)g * D, (size_t)D * sizeof(float));
            memcpy(dk + vofs, v + (size_t)n * vs + (size_t)g * D, (size_t)D * sizeof(float));
        }
    }
}

/* out: (N,NH,D) contiguous; q: (N,NH,D) row stride qs. For row n, query
 * head h of kv group g, T = pos[n] + 1:
 *   p = softmax_t(q_h . k_t / sqrt(D)), out_h = sum_t p_t v_t.
 * Scratch: (NH/NKV, T) scores per thread. */
void cpu_attention_paged_forward(float *out, const float *q, int qs,
                                 const float *kv, size_t block_stride,
                                 size_t vofs, const int32_t *block_tables,
                                 int max_blocks, const int32_t *seq,
                                 const int32_t *pos, int N, int NH, int NKV,
                                 int D, int bs)
{
    if (N <= 0) return;
    const float scale = 1.0f / sqrtf((float)D);
    const int group = NH / NKV;
    int tmax = 0;
    for (int n = 0; n < N; n++) tmax = pos[n] + 1 > tmax ? pos[n] + 1 : tmax;
    const size_t scratch_n = (size_t)group * tmax;
    float *scratch = malloc((size_t)omp_get_max_threads() * scratch_n * sizeof(float));
    if (!scratch) {
        fprintf(stderr, "kernels/cpu/cpu_decode.c: out of memory for attention scratch "
                "(%d positions); attention not computed\n", tmax);
        return;
    }
    const long work = (long)N * NKV;
    /* Small decode steps (a few sequences, short caches) are cheaper on one
     * thread than waking the team. */
    const int par = (size_t)N * NH * tmax * D >= (size_t)CPU_PAR_MIN;
    #pragma omp parallel for schedule(dynamic, 1) if (par)
    for (long w = 0; w < work; w++) {
        const int n = (int)(w / NKV), g = (int)(w % NKV), T = pos[n] + 1;
        const int32_t *tbl = block_tables + (size_t)seq[n] * max_blocks;
        float *S = scratch + (size_t)omp_get_thread_num() * scratch_n;
        const float *Q = q + (size_t)n * qs + (size_t)g * group * D;
        float *O = out + (size_t)n * NH * D + (size_t)g * group * D;
        /* scores, block by block (positions of a block are contiguous) */
        for (int t0 = 0; t0 < T; t0 += bs) {
            const float *K = kv + cpu_kv_slot(tbl, t0, g, block_stride, D, bs);
            int nt = T - t0 < bs ? T - t0 : bs;
            for (int hh = 0; hh < group; hh++) {
                const float *qh = Q + (size_t)hh * D;
                float *srow = S + (size_t)hh * T + t0;
                for (int j = 0; j < nt; j++) {
                    const float *kj = K + (size_t)j * D;
                    float dot = 0.0f;
                    #pragma omp simd reduction(+:dot)
                    for (int d = 0; d < D; d++) dot += qh[d] * kj[d];
                    srow[j] = dot * scale;
                }
            }
        }
        /* softmax per head */
        for (int hh = 0; hh < group; hh++) {
            float *srow = S + (size_t)hh * T;
            float mx = -INFINITY;
            #pragma omp simd reduction(max:mx)
            for (int t = 0; t < T; t++) mx = srow[t] > mx ? srow[t] : mx;
            float sum = 0.0f;
            #pragma omp simd reduction(+:sum)
            for (int t = 0; t < T; t++) {
                float e = cpu_expf(srow[t] - mx);
                srow[t] = e;
                sum += e;
            }
            float inv = 1.0f / sum;
            #pragma omp simd
            for (int t = 0; t < T; t++) srow[t] *= inv;
            float *oh = O + (size_t)hh * D;
            for (int d = 0; d < D; d++) oh[d] = 0.0f;
        }
        /* out = P V, block by block */
        for (int t0 = 0; t0 < T; t0 += bs) {
            const float *Vb = kv + cpu_kv_slot(tbl, t0, g, block_stride, D, bs) + vofs;
            int nt = T - t0 < bs ? T - t0 : bs;
            for (int hh = 0; hh < group; hh++) {
                const float *prow = S + (size_t)hh * T + t0;
                float *oh = O + (size_t)hh * D;
                for (int j = 0; j < nt; j++) {
                    const float *vj = Vb + (size_t)j * D;
                    float p = prow[j];
                    #pragma omp simd
                    for (int d = 0; d < D; d++) oh[d] += p * vj[d];
                }
            }
        }
    }
    free(scratch);
}

/* ------------------------------------------------- batch-invariant matmul */

/* 16 fp32 lanes (one AVX-512 register, two AVX2 ones); unaligned access. */
typedef float cpu_v16 __attribute__((vector_size(64), aligned(4)));

typedef int cpu_v16i __attribute__((vector_size(64)));

/* Fixed-order sum of the 16 lanes: lane i += lane i+8, then i+4, i+2,
 * i+1 (in-register shuffles; the upper lanes carry don't-care values). */
static inline float cpu_v16_sum(cpu_v16 a)
{
    a += __builtin_shuffle(a, (cpu_v16i){8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15});
    a += __builtin_shuffle(a, (cpu_v16i){4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7});
    a += __builtin_shuffle(a, (cpu_v16i){2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3});
    a += __builtin_shuffle(a, (cpu_v16i){1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1});
    return a[0];
}

/* out[n][j] for one (n, j): the arithmetic every tile shape reproduces
 * exactly: 16-lane partial sums over k in order, fixed lane tree, scalar
 * tail in order, then the bias. */
__attribute__((optimize("fp-contract=fast")))
static float cpu_rows_dot(const float *x, const float *w, int C, float b)
{
    const int C16 = C & ~15;
    cpu_v16 acc = {0};
    for (int k = 0; k < C16; k += 16)
        acc += *(const cpu_v16 *)(w + k) * *(const cpu_v16 *)(x + k);
    float s = cpu_v16_sum(acc);
    for (int k = C16; k < C; k++) s += w[k] * x[k];
    return s + b;
}

/* The 4x4 tile of outputs (n0..n0+3, j0..j0+3): 4 weight rows and 4 input
 * rows loaded once per 16 lanes, 16 accumulators. Same arithmetic per
 * output as cpu_rows_dot. */
__attribute__((optimize("fp-contract=fast")))
static void cpu_rows_tile4(float *out, const float *inp, const float *weight,
                           const float *bias, int n0, int j0, int C, int OC, const float *pf)
{
    const int C16 = C & ~15;
    const float *x[4], *w[4];
    for (int i = 0; i < 4; i++) {
        x[i] = inp + (size_t)(n0 + i) * C;
        w[i] = weight + (size_t)(j0 + i) * C;
    }
    cpu_v16 a00 = {0}, a01 = {0}, a02 = {0}, a03 = {0}, a10 = {0}, a11 = {0}, a12 = {0}, a13 = {0};
    cpu_v16 a20 = {0}, a21 = {0}, a22 = {0}, a23 = {0}, a30 = {0}, a31 = {0}, a32 = {0}, a33 = {0};
    for (int k = 0; k < C16; k += 16) {
        if (pf)     /* the next 4 weight rows (4*C floats), 4 lines per step */
            for (int i = 0; i < 64; i += 16) __builtin_prefetch(pf + 4 * k + i, 0, 0);
        cpu_v16 w0 = *(const cpu_v16 *)(w[0] + k), w1 = *(const cpu_v16 *)(w[1] + k);
        cpu_v16 w2 = *(const cpu_v16 *)(w[2] + k), w3 = *(const cpu_v16 *)(w[3] + k);
        /* keep weights and inputs in registers: 8 loads per 16 FMAs (gcc
         * otherwise folds a load into every FMA: 20 loads, half the speed) */
        __asm__("" : "+x"(w0), "+x"(w1), "+x"(w2), "+x"(w3));
        cpu_v16 x0 = *(const cpu_v16 *)(x[0] + k);
        __asm__("" : "+x"(x0));
        a00 += w0 * x0; a01 += w1 * x0; a02 += w2 * x0; a03 += w3 * x0;
        cpu_v16 x1 = *(const cpu_v16 *)(x[1] + k);
        __asm__("" : "+x"(x1));
        a10 += w0 * x1; a11 += w1 * x1; a12 += w2 * x1; a13 += w3 * x1;
        cpu_v16 x2 = *(const cpu_v16 *)(x[2] + k);
        __asm__("" : "+x"(x2));
        a20 += w0 * x2; a21 += w1 * x2; a22 += w2 * x2; a23 += w3 * x2;
        cpu_v16 x3 = *(const cpu_v16 *)(x[3] + k);
        __asm__("" : "+x"(x3));
        a30 += w0 * x3; a31 += w1 * x3; a32 += w2 * x3; a33 += w3 * x3;
    }
    cpu_v16 acc[4][4] = {{a00, a01, a02, a03}, {a10, a11, a12, a13},
                         {a20, a21, a22, a23}, {a30, a31, a32, a33}};
    for (int i = 0; i < 4; i++)
        for (int jj = 0; jj < 4; jj++) {
            float s = cpu_v16_sum(acc[i][jj]);
            for (int k = C16; k < C; k++) s += w[jj][k] * x[i][k];
            out[(size_t)(n0 + i) * OC + j0 + jj] = s + (bias ? bias[j0 + jj] : 0.0f);
        }
}

/* One input row against 4 weight rows: 4 independent accumulation chains
 * (a single chain would wait on the FMA latency). Same arithmetic per
 * output as cpu_rows_dot. */
__attribute__((optimize("fp-contract=fast")))
static void cpu_rows_tile1x4(float *out, const float *inp, const float *weight,
                             const float *bias, int n, int j0, int C, int OC, const float *pf)
{
    const int C16 = C & ~15;
    const float *x = inp + (size_t)n * C, *w0 = weight + (size_t)j0 * C;
    const float *w1 = w0 + C, *w2 = w1 + C, *w3 = w2 + C;
    cpu_v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    for (int k = 0; k < C16; k += 16) {
        if (pf)
            for (int i = 0; i < 64; i += 16) __builtin_prefetch(pf + 4 * k + i, 0, 0);
        cpu_v16 xv = *(const cpu_v16 *)(x + k);
        a0 += *(const cpu_v16 *)(w0 + k) * xv;
        a1 += *(const cpu_v16 *)(w1 + k) * xv;
        a2 += *(const cpu_v16 *)(w2 + k) * xv;
        a3 += *(const cpu_v16 *)(w3 + k) * xv;
    }
    cpu_v16 acc[4] = {a0, a1, a2, a3};
    const float *w[4] = {w0, w1, w2, w3};
    for (int jj = 0; jj < 4; jj++) {
        float s = cpu_v16_sum(acc[jj]);
        for (int k = C16; k < C; k++) s += w[jj][k] * x[k];
        out[(size_t)n * OC + j0 + jj] = s + (bias ? bias[j0 + jj] : 0.0f);
    }
}

/* Rows of inputs kept hot while the weights stream past them. */
#define CPU_ROWS_NBLOCK 64

/* out: (N,OC) = inp: (N,C) @ weight^T: (OC,C) [+ bias: (OC)], every output
 * computed by the same fixed-order arithmetic whatever N, the row's place
 * in the batch and the thread count (see backend.h). Threads split the
 * output columns; each 4-column block of weights is read once per block of
 * CPU_ROWS_NBLOCK rows. */
void cpu_matmul_rows_forward(float *out, const float *inp, const float *weight,
                             const float *bias, int N, int C, int OC)
{
    const int OC4 = OC & ~3;
    for (int nb = 0; nb < N; nb += CPU_ROWS_NBLOCK) {
        const int ne = N - nb < CPU_ROWS_NBLOCK ? N : nb + CPU_ROWS_NBLOCK;
        const int ne4 = nb + ((ne - nb) & ~3);
        #pragma omp parallel for schedule(static) if (parallel: (size_t)(ne - nb) * OC * C >= (size_t)CPU_PAR_MIN * 16)
        for (int j0 = 0; j0 < OC4; j0 += 4) {
            /* the first pass over these weight rows prefetches the next 4 */
            const float *pf = j0 + 8 <= OC ? weight + (size_t)(j0 + 4) * C : NULL;
            for (int n = nb; n < ne4; n += 4, pf = NULL)
                cpu_rows_tile4(out, inp, weight, bias, n, j0, C, OC, pf);
            for (int n = ne4; n < ne; n++, pf = NULL)
                cpu_rows_tile1x4(out, inp, weight, bias, n, j0, C, OC, pf);
        }
        for (int n = nb; n < ne; n++)
            for (int j = OC4; j < OC; j++)
                out[(size_t)n * OC + j] = cpu_rows_dot(inp + (size_t)n * C, weight + (size_t)j * C,
                                                       C, bias ? bias[j] : 0.0f);
    }
}
