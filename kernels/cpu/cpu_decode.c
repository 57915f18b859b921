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
 * decode steps have one row per sequence, chunked prefills many. */
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
