/* kernels/cpu/cpu_decode.c — the decoding ops over a paged KV cache (see
 * backend.h): writing new keys/values into their blocks, and causal GQA
 * attention of new query rows against the cached positions. Training-path
 * attention (full (B,T) sequences, saved probabilities) is cpu_attention.c.
 *
 * Attention per (row, kv head): the query heads of the group share every
 * key/value read; scores of all cached positions are computed in a
 * per-thread scratch row, softmaxed as cpu_attention.c does (max-subtracted,
 * vexpf, normalised probabilities), then the values are accumulated.
 * Head sizes 32/64/128 take a register-blocked path (16 keys' dot products
 * reduced together, output heads in registers). Work items (row, kv head)
 * are spread over the OpenMP threads: decode steps have one row per
 * sequence, chunked prefills many.
 *
 * matmul_rows_forward: the generation engine's linear layers, over
 * weights packed by rows_pack into panels of 32 outputs (k-major, so a
 * panel is one contiguous stream). Every output is one fixed-order chain of
 * fused multiply-adds over k, so a row's result never depends on the batch
 * around it (oneDNN's sgemm picks kernels and blockings by M, which changes
 * the rounding). Register tiles of 12 input rows x 32 outputs broadcast the
 * inputs against 2 panel vectors: no reduction at the end, and a panel is
 * read from memory once per step whatever the batch. */
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

/* 16 fp32 lanes (one AVX-512 register, two AVX2 ones); unaligned access. */
typedef float cpu_v16 __attribute__((vector_size(64), aligned(4)));

typedef int cpu_v16i __attribute__((vector_size(64)));

/* The reduction of attention's scores (cpu_att_scores16): a 16-lane
 * partial sum p over d in order, then the fixed lane tree
 *   m_i = p_i + p_{i+8}, n_i = m_i + m_{i+4}, q_i = n_i + n_{i+2}, s = q_0 + q_1.
 * cpu_lane_reduce16 runs that tree for 16 partial sums at once (a transpose
 * by shuffles, 45 ops instead of 128); since a + b == b + a exactly, every
 * lane gets bitwise the tree's result whichever sums share the call. */
static inline __attribute__((always_inline)) cpu_v16
cpu_lane_pair(cpu_v16 a, cpu_v16 b, cpu_v16i lo, cpu_v16i hi)
{
    return __builtin_shuffle(a, b, lo) + __builtin_shuffle(a, b, hi);
}

/* a[0..15] -> lane 4b+c holds the tree sum of a[4c+b]. */
static inline __attribute__((always_inline)) cpu_v16 cpu_lane_reduce16(const cpu_v16 *a)
{
    const cpu_v16i l1 = {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23};
    const cpu_v16i h1 = {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31};
    const cpu_v16i l2 = {0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27};
    const cpu_v16i h2 = {4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31};
    const cpu_v16i l3 = {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29};
    const cpu_v16i h3 = {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31};
    const cpu_v16i l4 = {0, 2, 16, 18, 4, 6, 20, 22, 8, 10, 24, 26, 12, 14, 28, 30};
    const cpu_v16i h4 = {1, 3, 17, 19, 5, 7, 21, 23, 9, 11, 25, 27, 13, 15, 29, 31};
    cpu_v16 s[8], t[4], u[2];
    for (int i = 0; i < 8; i++) s[i] = cpu_lane_pair(a[2 * i], a[2 * i + 1], l1, h1);
    for (int i = 0; i < 4; i++) t[i] = cpu_lane_pair(s[2 * i], s[2 * i + 1], l2, h2);
    for (int i = 0; i < 2; i++) u[i] = cpu_lane_pair(t[2 * i], t[2 * i + 1], l3, h3);
    return cpu_lane_pair(u[0], u[1], l4, h4);
}

/* Scores of one query head against nt <= 16 consecutive keys k: (nt,D)
 * into s[0..nt): dot products by 16-lane partial sums over d, reduced by
 * cpu_lane_reduce16 (key j in lane 4(j%4)+j/4). */
static inline __attribute__((always_inline)) void
cpu_att_scores16(int DV, float *s, const float *qh, const float *K, int nt, float scale)
{
    cpu_v16 acc[16];
    #pragma GCC unroll 16
    for (int j = 0; j < 16; j++) {
        int jr = j < nt ? j : 0;
        const float *kj = K + (size_t)jr * DV * 16;
        cpu_v16 a = *(const cpu_v16 *)qh * *(const cpu_v16 *)kj;
        #pragma GCC unroll 8
        for (int dv = 1; dv < DV; dv++)
            a += *(const cpu_v16 *)(qh + 16 * dv) * *(const cpu_v16 *)(kj + 16 * dv);
        acc[4 * (j % 4) + j / 4] = a;
    }
    cpu_v16 r = cpu_lane_reduce16(acc) * scale;
    for (int j = 0; j < nt; j++) s[j] = r[j];
}

/* srow[0..T) := exp(srow - max) in place; returns 1 / their sum (the
 * softmax's normaliser, applied by the caller). */
static inline float cpu_exp_row(float *srow, int T)
{
    float mx = -INFINITY;
    #pragma omp simd reduction(max:mx)
    for (int t = 0; t < T; t++) mx = srow[t] > mx ? srow[t] : mx;
    float sum = 0.0f;
    #pragma omp simd reduction(+:sum)
    for (int t = 0; t < T; t++) {
        float e = vexpf(srow[t] - mx);
        srow[t] = e;
        sum += e;
    }
    return 1.0f / sum;
}

/* Softmax and P V for heads h0..h0+HB-1 of a work item: each value
 * vector is loaded once for the HB heads, and the HB*DV accumulators are
 * independent FMA chains (one head's DV chains alone stall on the FMA
 * latency). Every head still adds its positions in order, p_t = e_t * inv
 * times v_t, fused, so the output does not depend on HB. */
static inline __attribute__((always_inline)) void
cpu_att_pv(int DV, int HB, float *O, float *S, const float *kv, const int32_t *tbl,
           size_t block_stride, size_t vofs, int g, int T, int h0, int bs)
{
    const int D = 16 * DV;
    float inv[8];
    const float *srow[8];
    for (int h = 0; h < HB; h++) {
        float *row = S + (size_t)(h0 + h) * T;
        inv[h] = cpu_exp_row(row, T);
        srow[h] = row;
    }
    cpu_v16 o[16];
    #pragma GCC unroll 16
    for (int i = 0; i < HB * DV; i++) o[i] = (cpu_v16){0};
    for (int t0 = 0; t0 < T; t0 += bs) {
        const float *Vb = kv + cpu_kv_slot(tbl, t0, g, block_stride, D, bs) + vofs;
        const int nt = T - t0 < bs ? T - t0 : bs;
        for (int j = 0; j < nt; j++) {
            const float *vj = Vb + (size_t)j * D;
            cpu_v16 v[8];
            #pragma GCC unroll 8
            for (int dv = 0; dv < DV; dv++) v[dv] = *(const cpu_v16 *)(vj + 16 * dv);
            #pragma GCC unroll 8
            for (int h = 0; h < HB; h++) {
                const float p = srow[h][t0 + j] * inv[h];
                #pragma GCC unroll 8
                for (int dv = 0; dv < DV; dv++) o[h * DV + dv] += p * v[dv];
            }
        }
    }
    #pragma GCC unroll 16
    for (int i = 0; i < HB * DV; i++) *(cpu_v16 *)(O + (size_t)h0 * D + 16 * i) = o[i];
}

/* One (row, kv head) work item with D = 16*DV: the scores of the group's
 * query heads, then softmax and P V by cpu_att_pv. S: (group, T) scratch. */
static inline __attribute__((always_inline)) void
cpu_att_item(int DV, float *O, const float *Q, float *S, const float *kv, const int32_t *tbl,
             size_t block_stride, size_t vofs, int g, int T, int group, int bs, float scale)
{
    const int D = 16 * DV;
    for (int t0 = 0; t0 < T; t0 += bs) {
        const float *K = kv + cpu_kv_slot(tbl, t0, g, block_stride, D, bs);
        int nt = T - t0 < bs ? T - t0 : bs;
        /* blocks are scattered pages the hardware prefetcher does not
         * follow: fetch the next block's keys and this block's values
         * (for the P V pass) while these scores are computed */
        const float *Kn = t0 + bs < T ? kv + cpu_kv_slot(tbl, t0 + bs, g, block_stride, D, bs) : NULL;
        for (int i = 0; i < nt * D; i += 16) {
            if (Kn) __builtin_prefetch(Kn + i, 0, 3);
            __builtin_prefetch(K + vofs + i, 0, 3);
        }
        for (int hh = 0; hh < group; hh++)
            for (int j0 = 0; j0 < nt; j0 += 16)
                cpu_att_scores16(DV, S + (size_t)hh * T + t0 + j0, Q + (size_t)hh * D,
                                 K + (size_t)j0 * D, nt - j0 < 16 ? nt - j0 : 16, scale);
    }
    /* P V, HB heads at a time: HB*DV accumulators */
    const int HBmax = 16 / DV;
    for (int h0 = 0; h0 < group;) {
        const int left = group - h0 < HBmax ? group - h0 : HBmax;
        const int hb = left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
        switch (hb) {
        case 8: cpu_att_pv(DV, 8, O, S, kv, tbl, block_stride, vofs, g, T, h0, bs); break;
        case 4: cpu_att_pv(DV, 4, O, S, kv, tbl, block_stride, vofs, g, T, h0, bs); break;
        case 2: cpu_att_pv(DV, 2, O, S, kv, tbl, block_stride, vofs, g, T, h0, bs); break;
        default: cpu_att_pv(DV, 1, O, S, kv, tbl, block_stride, vofs, g, T, h0, bs); break;
        }
        h0 += hb;
    }
}

#define CPU_ATT_ITEM_FN(DV)                                                                  \
    __attribute__((optimize("fp-contract=fast"))) static void                                 \
    cpu_att_item##DV(float *O, const float *Q, float *S, const float *kv, const int32_t *tbl, \
                     size_t block_stride, size_t vofs, int g, int T, int group, int bs,       \
                     float scale)                                                             \
    {                                                                                         \
        cpu_att_item(DV, O, Q, S, kv, tbl, block_stride, vofs, g, T, group, bs, scale);       \
    }
CPU_ATT_ITEM_FN(2)
CPU_ATT_ITEM_FN(4)
CPU_ATT_ITEM_FN(8)

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
    /* head sizes of 32, 64 and 128 have a register-blocked kernel */
    void (*item)(float *, const float *, float *, const float *, const int32_t *, size_t,
                 size_t, int, int, int, int, float) =
        D == 32 ? cpu_att_item2 : D == 64 ? cpu_att_item4 : D == 128 ? cpu_att_item8 : NULL;
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
        if (item) {
            item(O, Q, S, kv, tbl, block_stride, vofs, g, T, group, bs, scale);
            continue;
        }
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
            const float inv = cpu_exp_row(srow, T);
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

/* Outputs per packed panel: 2 AVX-512 vectors. */
#define CPU_PANEL 32

size_t cpu_rows_packed_floats(int C, int OC)
{
    return (size_t)((OC + CPU_PANEL - 1) / CPU_PANEL) * CPU_PANEL * (size_t)C;
}

/* Panels of weight's rows: dst[p][k][c] = weight[row(p, c)][k], 0 where
 * there is no row. I == 0: row 32p + c of OC; I > 0 (a SwiGLU's gate rows
 * 0..I-1 then up rows I..2I-1): gate row 16p + c for c < 16, up row
 * 16p + c - 16 after, so one tile has both halves of its SwiGLU outputs.
 * A panel is one contiguous stream in the order the tiles read it, one
 * 128-byte row per k. */
static void cpu_rows_pack_panels(float *dst, const float *weight, int C, int OC, int I)
{
    const int np = I > 0 ? (I + 15) / 16 : (OC + CPU_PANEL - 1) / CPU_PANEL;
    #pragma omp parallel for schedule(static)
    for (int p = 0; p < np; p++) {
        float *d = dst + (size_t)p * C * CPU_PANEL;
        for (int c = 0; c < CPU_PANEL; c++) {
            const int j = I > 0 ? p * 16 + c % 16 : p * CPU_PANEL + c;
            const int row = I > 0 ? (j < I ? c / 16 * I + j : -1) : (j < OC ? j : -1);
            const float *w = row >= 0 ? weight + (size_t)row * C : NULL;
            for (int k = 0; k < C; k++) d[(size_t)k * CPU_PANEL + c] = w ? w[k] : 0.0f;
        }
    }
}

void cpu_rows_pack(float *dst, const float *weight, int C, int OC)
{
    cpu_rows_pack_panels(dst, weight, C, OC, 0);
}

void cpu_rows_pack_glu(float *dst, const float *weight, int C, int I)
{
    cpu_rows_pack_panels(dst, weight, C, 0, I);
}

/* Rows of inputs per register tile: 12 x 2 accumulators, 2 panel
 * registers and a broadcast, 27 of AVX-512's 32. */
#define CPU_ROWS_MR 12
/* Panel rows (k) ahead that the first tile of a panel prefetches: 8 KiB. */
#define CPU_ROWS_PFD 64

static inline cpu_v16 cpu_bcast16(float s)
{
    return (cpu_v16){s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s};
}

/* The MR x 32 tile of outputs (rows n0.., panel outputs j0..j0+nj-1): per
 * k, one 128-byte row of the panel (2 vectors) times MR broadcast inputs,
 * 2*MR fused multiply-adds. Each output is the one chain
 *   acc = 0; acc = fma(x[k], w[k], acc) for k = 0..C-1; out = acc [+ bias],
 * whatever MR, so a row's outputs never depend on the rows beside it.
 *
 * The first tile of a panel (PF) reads it from memory; with 24 FMAs per
 * 128 bytes its loop holds too few loads in flight to keep the stream at
 * full speed, so it prefetches CPU_ROWS_PFD rows ahead (into the next
 * panel, the thread's next one, near the end). The other tiles find the
 * panel in L2. */
static inline __attribute__((always_inline)) void
cpu_rows_tile(int MR, int PF, float *out, const float *inp, const float *panel,
              const float *bias, int n0, int j0, int nj, int C, int OC)
{
    const float *x[CPU_ROWS_MR];
    for (int i = 0; i < MR; i++) x[i] = inp + (size_t)(n0 + i) * C;
    cpu_v16 acc[CPU_ROWS_MR][2];
    #pragma GCC unroll 12
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = (cpu_v16){0};
    for (int k = 0; k < C; k++) {
        const float *row = panel + (size_t)k * CPU_PANEL;
        if (PF) {
            __builtin_prefetch(row + CPU_ROWS_PFD * CPU_PANEL, 0, 2);
            __builtin_prefetch(row + CPU_ROWS_PFD * CPU_PANEL + 16, 0, 2);
        }
        cpu_v16 w0 = *(const cpu_v16 *)row, w1 = *(const cpu_v16 *)(row + 16);
        /* keep the panel row in registers (gcc otherwise folds a load into
         * every FMA: 2*MR loads instead of 2) */
        __asm__("" : "+v"(w0), "+v"(w1));
        #pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            const cpu_v16 b = cpu_bcast16(x[i][k]);
            acc[i][0] += b * w0;
            acc[i][1] += b * w1;
        }
    }
    for (int i = 0; i < MR; i++) {
        float *o = out + (size_t)(n0 + i) * OC + j0;
        for (int v = 0; v < 2; v++) {
            cpu_v16 r = acc[i][v];
            if (nj == CPU_PANEL) {
                if (bias) r += *(const cpu_v16 *)(bias + j0 + 16 * v);
                *(cpu_v16 *)(o + 16 * v) = r;
                continue;
            }
            for (int c = 0; c < 16 && 16 * v + c < nj; c++)
                o[16 * v + c] = bias ? r[c] + bias[j0 + 16 * v + c] : r[c];
        }
    }
}

typedef void cpu_rows_tile_fn(float *, const float *, const float *, const float *,
                              int, int, int, int, int);
#define CPU_ROWS_TILE_FN(M)                                                                  \
    __attribute__((optimize("fp-contract=fast"))) static void                                 \
    cpu_rows_tile##M(float *out, const float *inp, const float *panel, const float *bias,     \
                     int n0, int j0, int nj, int C, int OC)                                   \
    {                                                                                         \
        cpu_rows_tile(M, 0, out, inp, panel, bias, n0, j0, nj, C, OC);                        \
    }                                                                                         \
    __attribute__((optimize("fp-contract=fast"))) static void                                 \
    cpu_rows_ptile##M(float *out, const float *inp, const float *panel, const float *bias,    \
                      int n0, int j0, int nj, int C, int OC)                                  \
    {                                                                                         \
        cpu_rows_tile(M, 1, out, inp, panel, bias, n0, j0, nj, C, OC);                        \
    }
CPU_ROWS_TILE_FN(1)
CPU_ROWS_TILE_FN(2)
CPU_ROWS_TILE_FN(3)
CPU_ROWS_TILE_FN(4)
CPU_ROWS_TILE_FN(5)
CPU_ROWS_TILE_FN(6)
CPU_ROWS_TILE_FN(7)
CPU_ROWS_TILE_FN(8)
CPU_ROWS_TILE_FN(9)
CPU_ROWS_TILE_FN(10)
CPU_ROWS_TILE_FN(11)
CPU_ROWS_TILE_FN(12)

/* [0][MR]: tiles reading from L2; [1][MR]: first tiles, prefetching */
static cpu_rows_tile_fn *const cpu_rows_tiles[2][CPU_ROWS_MR + 1] = {
    {NULL, cpu_rows_tile1, cpu_rows_tile2, cpu_rows_tile3, cpu_rows_tile4, cpu_rows_tile5,
     cpu_rows_tile6, cpu_rows_tile7, cpu_rows_tile8, cpu_rows_tile9, cpu_rows_tile10,
     cpu_rows_tile11, cpu_rows_tile12},
    {NULL, cpu_rows_ptile1, cpu_rows_ptile2, cpu_rows_ptile3, cpu_rows_ptile4, cpu_rows_ptile5,
     cpu_rows_ptile6, cpu_rows_ptile7, cpu_rows_ptile8, cpu_rows_ptile9, cpu_rows_ptile10,
     cpu_rows_ptile11, cpu_rows_ptile12}};

/* Rows of inputs per pass over the weights (their panels stay in L2
 * while every tile of the block reads them). */
#define CPU_ROWS_NBLOCK 96

/* Row blocks of N, and per block each thread one contiguous run of the np
 * panels: a single sequential stream of weights, which the prefetchers
 * follow at full speed (panels handed out one by one interleave the
 * threads' streams). The first tile of a row block is the largest, so that
 * the most arithmetic overlaps the panel's arrival from memory. I > 0: the
 * panels are cpu_rows_pack_glu's, out is h: (N,I) = silu(gate) * up, the
 * tiles' gate and up going through cpu_swiglu_forward (bitwise the op on
 * cpu_matmul_rows_forward's outputs); otherwise out: (N,OC). */
static void cpu_rows_run(float *out, const float *inp, const float *packed, const float *bias,
                         int N, int C, int OC, int I)
{
    const int np = I > 0 ? (I + 15) / 16 : (OC + CPU_PANEL - 1) / CPU_PANEL;
    const size_t outs = I > 0 ? (size_t)2 * I : (size_t)OC;
    for (int nb = 0; nb < N; nb += CPU_ROWS_NBLOCK) {
        const int ne = N - nb < CPU_ROWS_NBLOCK ? N : nb + CPU_ROWS_NBLOCK;
        const int par = (size_t)(ne - nb) * outs * C >= (size_t)CPU_PAR_MIN * 16;
        #pragma omp parallel for schedule(static) if (par)
        for (int p = 0; p < np; p++) {
            const float *panel = packed + (size_t)p * C * CPU_PANEL;
            for (int n = nb; n < ne; n += CPU_ROWS_MR) {
                const int mr = ne - n < CPU_ROWS_MR ? ne - n : CPU_ROWS_MR;
                cpu_rows_tile_fn *tile = cpu_rows_tiles[n == nb][mr];
                if (I <= 0) {
                    const int j0 = p * CPU_PANEL;
                    tile(out, inp, panel, bias, n, j0, OC - j0 < CPU_PANEL ? OC - j0 : CPU_PANEL,
                         C, OC);
                    continue;
                }
                /* rows of [gate 16 | up 16], then their SwiGLU */
                float gu[CPU_ROWS_MR * CPU_PANEL];
                tile(gu, inp + (size_t)n * C, panel, NULL, 0, 0, CPU_PANEL, C, CPU_PANEL);
                const int j0 = p * 16, nj = I - j0 < 16 ? I - j0 : 16;
                for (int i = 0; i < mr; i++)
                    cpu_swiglu_forward(out + (size_t)(n + i) * I + j0, gu + i * CPU_PANEL,
                                       gu + i * CPU_PANEL + 16, 1, nj);
            }
        }
    }
}

/* out: (N,OC) = inp: (N,C) @ weight^T [+ bias: (OC)], weight packed by
 * cpu_rows_pack. Every output is the fixed chain of cpu_rows_tile, so a
 * row's result never depends on N, its place in the batch or the thread
 * count (see backend.h). */
void cpu_matmul_rows_forward(float *out, const float *inp, const float *packed,
                             const float *bias, int N, int C, int OC)
{
    cpu_rows_run(out, inp, packed, bias, N, C, OC, 0);
}

/* h: (N,I) = silu(inp @ gate^T) * (inp @ up^T), weights packed by
 * cpu_rows_pack_glu. */
void cpu_matmul_rows_glu_forward(float *h, const float *inp, const float *packed, int N, int C,
                                 int I)
{
    cpu_rows_run(h, inp, packed, NULL, N, C, 0, I);
}
