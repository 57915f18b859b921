/* kernels/cpu/cpu_attention.c — causal multi-head attention with grouped
 * query heads (Ainslie et al. 2023, GQA), softmax(Q K^T / sqrt(D)) V
 * (Vaswani et al. 2017, eq. 1), as Hugging Face's eager attention with
 * repeat_kv, optionally masked to documents packed in a row. Built from
 * sgemm calls per (batch, head), block-row by block-row up to the diagonal,
 * the (batch, head) loop spread over the OpenMP threads (oneDNN then runs
 * single-threaded in each). */
#include "cpu.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Row t of the scores in place -> softmax over columns s..t; columns
 * 0..s-1 (an earlier document) and t+1..T-1 (the future) are set to exact
 * zeros, which is what keeps them out of the backward. row: (T). */
static void cpu_softmax_causal_row(float *row, int s, int t, int T)
{
    float mx = -INFINITY;
    #pragma omp simd reduction(max:mx)
    for (int j = s; j <= t; j++) mx = row[j] > mx ? row[j] : mx;
    float sum = 0.0f;
    #pragma omp simd reduction(+:sum)
    for (int j = s; j <= t; j++) {
        float e = vexpf(row[j] - mx);
        row[j] = e;
        sum += e;
    }
    float inv = 1.0f / sum;
    #pragma omp simd
    for (int j = s; j <= t; j++) row[j] *= inv;
    memset(row, 0, (size_t)s * sizeof(float));
    memset(row + t + 1, 0, (size_t)(T - 1 - t) * sizeof(float));
}

/* out: (B,T,NH,D) contiguous; att: (B,NH,T,T); q: (B,T,NH,D) row stride qs;
 * k, v: (B,T,NKV,D) row strides ks, vs; seg: (B,T) document starts or NULL
 * (all 0). Per (b,h), row block [i0,i1) is cut into runs [r0,r1) of rows
 * with the same start s = seg[r0] (one run, s = 0, without seg), and
 *   att[r0:r1, s:r1] = softmax_causal(Q[r0:r1] K[s:r1]^T / sqrt(D))
 *   out[r0:r1]       = att[r0:r1, s:r1] V[s:r1]
 * so keys of earlier documents are never computed, and columns >= r1 are
 * masked for every row of the run. */
void cpu_attention_forward(float *out, float *att, const float *q, int qs,
                           const float *k, int ks, const float *v, int vs,
                           const int32_t *seg, int B, int T, int NH, int NKV, int D)
{
    const float scale = 1.0f / sqrtf((float)D);
    const int group = NH / NKV;
    const int os = NH * D;   /* row stride of out */
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            int kvh = h / group;
            const float *Q = q + (size_t)b * T * qs + (size_t)h * D;
            const float *K = k + (size_t)b * T * ks + (size_t)kvh * D;
            const float *V = v + (size_t)b * T * vs + (size_t)kvh * D;
            const int32_t *S = seg ? seg + (size_t)b * T : NULL;
            float *O = out + (size_t)b * T * os + (size_t)h * D;
            float *A = att + ((size_t)b * NH + h) * T * T;
            for (int i0 = 0; i0 < T; i0 += CPU_ATT_BLOCK) {
                int i1 = T - i0 < CPU_ATT_BLOCK ? T : i0 + CPU_ATT_BLOCK;
                for (int r0 = i0, r1; r0 < i1; r0 = r1) {
                    /* the run: r0 and the rows after it in its document */
                    int s = 0;
                    r1 = i1;
                    if (S)
                        for (s = S[r0], r1 = r0 + 1; r1 < i1 && S[r1] == s; r1++) {}
                    int m = r1 - r0, n = r1 - s;
                    float *Arun = A + (size_t)r0 * T + s;
                    cpu_gemm(0, 1, m, n, D, scale, Q + (size_t)r0 * qs, qs,
                             K + (size_t)s * ks, ks, 0.0f, Arun, T);
                    for (int t = r0; t < r1; t++)
                        cpu_softmax_causal_row(A + (size_t)t * T, s, t, T);
                    cpu_gemm(0, 0, m, D, n, 1.0f, Arun, T, V + (size_t)s * vs, vs,
                             0.0f, O + (size_t)r0 * os, os);
                }
            }
        }
    }
}

/* Gradients (P = att, S = scores, O = P V), per (b,h), row block [i0,i1):
 *   dV[0:i1] += P[i0:i1,0:i1]^T dO[i0:i1]
 *   dP        = dO[i0:i1] V[0:i1]^T
 *   dS        = P * (dP - rowsum(P * dP))          (softmax backward)
 *   dQ[i0:i1] += dS K[0:i1] / sqrt(D)
 *   dK[0:i1]  += dS^T Q[i0:i1] / sqrt(D)
 * Query heads sharing a kv head write the same dK/dV, so the parallel loop
 * is over (b, kv head) and a task walks its group of query heads in order.
 * dq, dk, dv: strides qs, ks, vs like q, k, v; dout: (B,T,NH,D);
 * att: (B,NH,T,T). Scratch: one CPU_ATT_BLOCK x T block of dS per thread. */
void cpu_attention_backward(float *dq, float *dk, float *dv,
                            const float *dout, const float *att,
                            const float *q, const float *k, const float *v,
                            int qs, int ks, int vs,
                            int B, int T, int NH, int NKV, int D)
{
    const float scale = 1.0f / sqrtf((float)D);
    const int group = NH / NKV;
    const int os = NH * D;
    const size_t scratch_n = (size_t)CPU_ATT_BLOCK * T;
    float *scratch = malloc((size_t)omp_get_max_threads() * scratch_n * sizeof(float));
    if (!scratch) {
        fprintf(stderr, "kernels/cpu/cpu_attention.c: out of memory for "
                "attention_backward scratch (T=%d); gradients not computed\n", T);
        return;
    }
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int kvh = 0; kvh < NKV; kvh++) {
            float *S = scratch + (size_t)omp_get_thread_num() * scratch_n;
            const float *K = k + (size_t)b * T * ks + (size_t)kvh * D;
            const float *V = v + (size_t)b * T * vs + (size_t)kvh * D;
            float *dK = dk + (size_t)b * T * ks + (size_t)kvh * D;
            float *dV = dv + (size_t)b * T * vs + (size_t)kvh * D;
            for (int h = kvh * group; h < (kvh + 1) * group; h++) {
                const float *Q = q + (size_t)b * T * qs + (size_t)h * D;
                float *dQ = dq + (size_t)b * T * qs + (size_t)h * D;
                const float *dO = dout + (size_t)b * T * os + (size_t)h * D;
                const float *P = att + ((size_t)b * NH + h) * T * T;
                for (int i0 = 0; i0 < T; i0 += CPU_ATT_BLOCK) {
                    int i1 = T - i0 < CPU_ATT_BLOCK ? T : i0 + CPU_ATT_BLOCK;
                    int m = i1 - i0;
                    const float *Pblk = P + (size_t)i0 * T;
                    cpu_gemm(1, 0, i1, D, m, 1.0f, Pblk, T, dO + (size_t)i0 * os, os,
                             1.0f, dV, vs);
                    cpu_gemm(0, 1, m, i1, D, 1.0f, dO + (size_t)i0 * os, os, V, vs,
                             0.0f, S, T);
                    for (int r = 0; r < m; r++) {
                        const float *prow = Pblk + (size_t)r * T;
                        float *srow = S + (size_t)r * T;
                        int t = i0 + r;
                        float dot = 0.0f;
                        #pragma omp simd reduction(+:dot)
                        for (int j = 0; j <= t; j++) dot += prow[j] * srow[j];
                        /* P is exactly zero above the diagonal and before
                         * the row's document (segmented forward), so is dS:
                         * masked pairs get no gradient */
                        #pragma omp simd
                        for (int j = 0; j < i1; j++) srow[j] = prow[j] * (srow[j] - dot);
                    }
                    cpu_gemm(0, 0, m, D, i1, scale, S, T, K, ks, 1.0f,
                             dQ + (size_t)i0 * qs, qs);
                    cpu_gemm(1, 0, i1, D, m, scale, S, T, Q + (size_t)i0 * qs, qs,
                             1.0f, dK, ks);
                }
            }
        }
    }
    free(scratch);
}
