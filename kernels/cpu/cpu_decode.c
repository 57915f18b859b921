/* kernels/cpu/cpu_decode.c — the decoding ops over a paged KV cache (see
 * backend.h): writing new keys/values into their blocks, and causal GQA
 * attention of new query rows against the cached positions. Training-path
 * attention (full (B,T) sequences, saved probabilities) is cpu_attention.c.
 *
 * Attention per (row, kv head): the query heads of the group share every
 * key/value read. Keys are stored transposed in their block, (D,bs), so
 * that a vector of 16 positions' key components is one load: the scores of
 * 16 positions are 16 lanes of one chain of D fused multiply-adds, with no
 * reduction across lanes. They go to a per-thread scratch row padded to a
 * multiple of 16 (-inf past T), are softmaxed as cpu_attention.c does
 * (max-subtracted, vexpf, normalised probabilities), then the values
 * (bs,D) are accumulated. Head sizes 32/64/128 with blocks of a multiple
 * of 16 positions take that register-blocked path; others a plain loop.
 * The cache holds fp32, binary16 or int8 elements (backend.h's kv_dtype):
 * a binary16 one is widened as it is loaded (one vcvtph2ps per 16), so the
 * arithmetic is the same fp32 on either; it reads half the bytes, which is
 * what decode attention waits on. KV_Q8 reads about half as many again:
 * its integers are widened exactly the same way, and its scales are
 * applied per position, to a chunk's 16 scores once their chains are done
 * and to each probability before its value vector.
 * Work items (run of rows, kv head) are spread over the OpenMP threads: a
 * run is one row of a decode step, or up to 16 consecutive rows of a
 * prefill chunk, which take each chunk of keys and span of values in turn
 * while it is in L1 (each row streaming the whole cache made prefill
 * attention L3-bound).
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

#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#if defined(__AVX512F__) || defined(__F16C__)
#include <immintrin.h>
#endif

/* Keys of kv head g in block i of sequence table tbl: (D,bs) there; its
 * values (bs,D) at the same place + vofs. es: bytes per element. */
static inline const char *cpu_kv_head(const void *kv, int es, const int32_t *tbl, int i, int g,
                                      size_t block_stride, int D, int bs)
{
    return (const char *)kv + ((size_t)tbl[i] * block_stride + (size_t)g * bs * D) * es;
}

/* x clamped to binary16's finite range (NaN stays NaN): a key or value
 * past +-65504 is stored as the largest half, not as inf (which would turn
 * the scores into NaN). */
static inline float cpu_sat_half(float x)
{
    return x > 65504.0f ? 65504.0f : x < -65504.0f ? -65504.0f : x;
}

#if defined(__AVX512F__)
/* cpu_sat_half of 16 lanes, the same bits (min and max return their second
 * operand, x, when it is NaN). */
static inline __m512 cpu_sat_half16(__m512 x)
{
    return _mm512_max_ps(_mm512_set1_ps(-65504.0f), _mm512_min_ps(_mm512_set1_ps(65504.0f), x));
}
#endif

/* KV_Q8: the key scales of kv head g in block i of sequence table tbl,
 * (bs) floats; its value scales are vofs / D floats (NKV*bs) further. */
static inline float *cpu_kv_scales(const void *kv, const int32_t *tbl, int i, int g,
                                   size_t block_stride, size_t vofs, int bs)
{
    return (float *)((char *)kv + (size_t)tbl[i] * block_stride + 2 * vofs) + (size_t)g * bs;
}

/* x: (D) as int8 q[d * qs] and the returned scale (backend.h's KV_Q8):
 * scale = max|x| / 127 over x clamped to +-65504, q = x / scale rounded to
 * nearest even; NaN is stored as 0, and an x of zeros (or of nothing
 * representable) as zeros with scale 0. */
static inline float cpu_q8_quant(int8_t *q, size_t qs, const float *x, int D)
{
#if defined(__AVX512F__)
    /* 16 at a time when D allows, the same bits: max/min return their
     * second operand when either is NaN, vcvtps2dq rounds to nearest
     * even as lrintf does */
    if (D % 16 == 0) {
        __m512 m = _mm512_setzero_ps();
        for (int d = 0; d < D; d += 16) m = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + d)), m);
        const float amax = fminf(_mm512_reduce_max_ps(m), 65504.0f), scale = amax / 127.0f;
        const __m512 vs = _mm512_set1_ps(scale), qhi = _mm512_set1_ps(127.0f);
        const __m512 qlo = _mm512_set1_ps(-127.0f);
        for (int d = 0; d < D; d += 16) {
            const __m512 v = _mm512_loadu_ps(x + d);
            const __mmask16 num = scale > 0.0f ? _mm512_cmp_ps_mask(v, v, _CMP_ORD_Q) : 0;
            __m512 y = _mm512_maskz_div_ps(num, cpu_sat_half16(v), vs);
            y = _mm512_max_ps(qlo, _mm512_min_ps(qhi, y));
            const __m128i b = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(y));
            if (qs == 1) {
                _mm_storeu_si128((__m128i *)(q + d), b);
                continue;
            }
            int8_t q16[16];
            _mm_storeu_si128((__m128i *)q16, b);
            for (int i = 0; i < 16; i++) q[(size_t)(d + i) * qs] = q16[i];
        }
        return scale > 0.0f ? scale : 0.0f;
    }
#endif
    float amax = 0.0f;
    for (int d = 0; d < D; d++) {
        const float a = fabsf(x[d]);
        amax = a > amax ? a : amax;    /* NaN compares false: skipped */
    }
    amax = amax > 65504.0f ? 65504.0f : amax;
    const float scale = amax / 127.0f;
    for (int d = 0; d < D; d++) {
        float y = scale > 0.0f && x[d] == x[d] ? cpu_sat_half(x[d]) / scale : 0.0f;
        y = y > 127.0f ? 127.0f : y < -127.0f ? -127.0f : y;
        q[(size_t)d * qs] = (int8_t)lrintf(y);
    }
    return scale > 0.0f ? scale : 0.0f;
}

/* One head's key k: (D) and value v: (D) of a token into their slot:
 * position p of the sequence whose block table is tbl. */
static inline void cpu_kv_write_head(void *kv, enum kv_dtype dt, size_t block_stride, size_t vofs,
                                     const int32_t *tbl, int p, int g, const float *k,
                                     const float *v, int D, int bs)
{
    const int es = (int)kv_dtype_size(dt), j = p % bs;
    char *dk = (char *)cpu_kv_head(kv, es, tbl, p / bs, g, block_stride, D, bs);
    char *dv = dk + (vofs + (size_t)j * D) * es;
    if (dt == KV_Q8) {
        float *sc = cpu_kv_scales(kv, tbl, p / bs, g, block_stride, vofs, bs);
        sc[j] = cpu_q8_quant((int8_t *)dk + j, (size_t)bs, k, D);
        sc[vofs / D + j] = cpu_q8_quant((int8_t *)dv, 1, v, D);
        return;
    }
    if (dt == KV_F16) {
        uint16_t *hk = (uint16_t *)dk, *hv = (uint16_t *)dv;
        int d = 0;
#if defined(__AVX512F__)
        /* 16 at a time, the same bits (vcvtps2ph rounds to nearest even) */
        for (; d + 16 <= D; d += 16) {
            uint16_t hk16[16];
            const __m512 kk = cpu_sat_half16(_mm512_loadu_ps(k + d));
            const __m512 vv = cpu_sat_half16(_mm512_loadu_ps(v + d));
            _mm256_storeu_si256((__m256i *)hk16, _mm512_cvtps_ph(kk, _MM_FROUND_TO_NEAREST_INT));
            _mm256_storeu_si256((__m256i *)(hv + d), _mm512_cvtps_ph(vv, _MM_FROUND_TO_NEAREST_INT));
            for (int i = 0; i < 16; i++) hk[(size_t)(d + i) * bs + j] = hk16[i];
        }
#endif
        for (; d < D; d++) {
            hk[(size_t)d * bs + j] = cpu_f2h(cpu_sat_half(k[d]));
            hv[d] = cpu_f2h(cpu_sat_half(v[d]));
        }
        return;
    }
    for (int d = 0; d < D; d++) ((float *)dk)[(size_t)d * bs + j] = k[d];
    memcpy(dv, v, (size_t)D * sizeof(float));
}

/* k, v: (N,NKV,D) row strides ks, vs -> the (seq[n], pos[n]) slots. */
void cpu_kv_cache_write(void *kv, enum kv_dtype dt, size_t block_stride, size_t vofs,
                        const int32_t *block_tables, int max_blocks,
                        const int32_t *seq, const int32_t *pos,
                        const float *k, int ks, const float *v, int vs,
                        int N, int NKV, int D, int bs)
{
    /* keys are transposed: each component stored lands in a cache line of
     * its own (mostly not in cache), so a row costs D lines, not D/16;
     * two threads keep twice the misses in flight */
    #pragma omp parallel for schedule(static) if (parallel: (size_t)N * NKV * D * 16 >= CPU_PAR_MIN)
    for (int n = 0; n < N; n++)
        for (int g = 0; g < NKV; g++)
            cpu_kv_write_head(kv, dt, block_stride, vofs, block_tables + (size_t)seq[n] * max_blocks,
                              pos[n], g, k + (size_t)n * ks + (size_t)g * D,
                              v + (size_t)n * vs + (size_t)g * D, D, bs);
}

/* 16 fp32 lanes (one AVX-512 register, two AVX2 ones); unaligned access. */
typedef float cpu_v16 __attribute__((vector_size(64), aligned(4)));
typedef int cpu_v16i __attribute__((vector_size(64)));

/* The 16 cache elements of type DT (enum kv_dtype) at p as fp32 lanes,
 * exactly: binary16 widened, KV_Q8's integers as they are (unscaled). */
static inline __attribute__((always_inline)) cpu_v16 cpu_kv16(const char *p, int DT)
{
    if (DT == KV_F32) return *(const cpu_v16 *)p;
    if (DT == KV_Q8) {
#if defined(__AVX512F__)
        const __m128i b = _mm_loadu_si128((const __m128i *)p);
        return (cpu_v16)_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
#else
        cpu_v16 r;
        for (int i = 0; i < 16; i++) r[i] = (float)(int8_t)p[i];
        return r;
#endif
    }
#if defined(__AVX512F__)
    return (cpu_v16)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
#elif defined(__F16C__)
    const __m256 lo = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    const __m256 hi = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p + 1));
    cpu_v16 r;
    memcpy(&r, &lo, sizeof lo);
    memcpy((char *)&r + sizeof lo, &hi, sizeof hi);
    return r;
#else
    cpu_v16 r;
    for (int i = 0; i < 16; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, sizeof h);
        r[i] = f16_to_f32(h);
    }
    return r;
#endif
}

/* Element i of the cache elements of type DT at p (KV_Q8: unscaled). */
static inline float cpu_kv1(const char *p, size_t i, int DT)
{
    if (DT == KV_Q8) return (float)(int8_t)p[i];
    if (DT == KV_F16) {
        uint16_t h;
        memcpy(&h, p + 2 * i, sizeof h);
        return cpu_h2f(h);
    }
    float f;
    memcpy(&f, p + 4 * i, sizeof f);
    return f;
}

static inline cpu_v16 cpu_bcast16(float s)
{
    return (cpu_v16){s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s};
}

/* Cache lines of each key and value piece of a work item asked for up
 * front (cpu_att_item). */
#define CPU_ATT_PF_LINES 8

/* Look-ahead over a decode row's scattered blocks, for a binary16 cache: each
 * key piece is asked for whole one chunk group ahead of its scores, each
 * value piece two blocks ahead of its P V. Such a piece is 2 KiB at
 * D = 64, too short a run for the hardware prefetcher to get going on.
 * Measured (16 sequences, cold cache, 8 layers, best of 40): T = 1000
 * 4.1 -> 3.2 ms, T = 200 1.0 -> 0.85 ms, T = 72 0.42 -> 0.38 ms. The fp32
 * cache's 4 KiB pieces measured no better with it (5.5 -> 5.7 ms at
 * T = 1000), so they keep the hardware's; so do prefill runs, whose rows
 * share each chunk while it is in L1 (look-ahead there measured 45 -> 52
 * ms of attention for a 1024-token prompt). */
#define CPU_ATT_AHEAD_K 1
#define CPU_ATT_AHEAD_V 2

static inline void cpu_att_prefetch(const char *p, size_t bytes)
{
    for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(p + o, 0, 3);
}

/* A work item's (row, head) pairs are computed several at a time: their
 * scores CPU_ATT_PAIRS x 4 chunks of 16 positions per key load
 * (cpu_att_qk), their outputs up to 24 vectors per value load
 * (cpu_att_pv), each key and value vector loaded (and widened) once for all
 * of them. Which pairs go together never changes a result: each score and
 * each output is its own chain. */
#define CPU_ATT_PAIRS 6

/* Scores of M pairs (pair m's queries Qm[m], score row Sm[m], positions
 * Tm[m]) against chunks c0..c0+CH-1, scaled, into Sm[m] at their
 * positions; lanes at positions >= Tm[m] get -inf. Each score is the chain
 * s = 0; s = fma(q[d], k[d], s) for d = 0..D-1, times scale (KV_Q8: times
 * the key's scale, then scale). */
static inline __attribute__((always_inline)) void
cpu_att_qk(int DT, int DV, int M, int CH, float *const *Sm, const float *const *Qm,
           const int *Tm, const void *kv, const int32_t *tbl, size_t block_stride, size_t vofs,
           int g, int c0, int bs, float scale)
{
    const int D = 16 * DV, es = (int)kv_dtype_size((enum kv_dtype)DT);
    const char *kc[4];
    for (int c = 0; c < CH; c++) {
        const int t = 16 * (c0 + c);
        kc[c] = cpu_kv_head(kv, es, tbl, t / bs, g, block_stride, D, bs) + (size_t)(t % bs) * es;
    }
    cpu_v16 acc[CPU_ATT_PAIRS][4];
    #pragma GCC unroll 6
    for (int m = 0; m < M; m++)
        #pragma GCC unroll 4
        for (int c = 0; c < CH; c++) acc[m][c] = (cpu_v16){0};
    #pragma GCC unroll 2
    for (int d = 0; d < D; d++) {
        cpu_v16 k[4];
        #pragma GCC unroll 4
        for (int c = 0; c < CH; c++) k[c] = cpu_kv16(kc[c] + (size_t)d * bs * es, DT);
        #pragma GCC unroll 6
        for (int m = 0; m < M; m++) {
            const cpu_v16 b = cpu_bcast16(Qm[m][d]);
            #pragma GCC unroll 4
            for (int c = 0; c < CH; c++) acc[m][c] += b * k[c];
        }
    }
    const cpu_v16i iota = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    const cpu_v16 ninf = cpu_bcast16(-INFINITY);
    #pragma GCC unroll 4
    for (int c = 0; c < CH; c++) {
        cpu_v16 ks = cpu_bcast16(1.0f);
        if (DT == KV_Q8) {
            const int t = 16 * (c0 + c);
            ks = *(const cpu_v16 *)(cpu_kv_scales(kv, tbl, t / bs, g, block_stride, vofs, bs) +
                                    t % bs);
        }
        #pragma GCC unroll 6
        for (int m = 0; m < M; m++) {
            const cpu_v16i live = iota + 16 * (c0 + c) < Tm[m];
            const cpu_v16 sc = DT == KV_Q8 ? acc[m][c] * ks * scale : acc[m][c] * scale;
            *(cpu_v16 *)(Sm[m] + 16 * (c0 + c)) =
                (cpu_v16)(((cpu_v16i)sc & live) | ((cpu_v16i)ninf & ~live));
        }
    }
}

/* The scores of R rows (row r at position T0 - 1 + r) of one kv head:
 * chunk groups of 4 in turn (in L1 while every pair reads them), pairs
 * CPU_ATT_PAIRS at a time, each tile to its last row's chunk (the earlier
 * rows' extra scores fall past their softmax, unread). AHEAD: the key
 * blocks of the next group asked for ahead (CPU_ATT_AHEAD_K). */
static inline __attribute__((always_inline)) void
cpu_att_scores(int DT, int DV, int R, int AHEAD, float *S, size_t Ss, int Sp, const float *Q,
               size_t qs, const void *kv, const int32_t *tbl, size_t block_stride, size_t vofs,
               int g, int T0, int group, int bs, float scale)
{
    const int D = 16 * DV, es = (int)kv_dtype_size((enum kv_dtype)DT), np = R * group;
    const int ncm = (T0 + R - 1 + 15) / 16;
    for (int c = 0; c < ncm; c += 4) {
        const int c1 = c + 4 * CPU_ATT_AHEAD_K;
        for (int cc = c1; AHEAD && cc < c1 + 4 && cc < ncm; cc++)
            if (16 * cc % bs == 0)
                cpu_att_prefetch(cpu_kv_head(kv, es, tbl, 16 * cc / bs, g, block_stride, D, bs),
                                 (size_t)bs * D * es);
        for (int p0 = 0; p0 < np; p0 += CPU_ATT_PAIRS) {
            const int M = np - p0 < CPU_ATT_PAIRS ? np - p0 : CPU_ATT_PAIRS;
            float *Sm[CPU_ATT_PAIRS];
            const float *Qm[CPU_ATT_PAIRS];
            int Tm[CPU_ATT_PAIRS];
            for (int m = 0; m < M; m++) {
                const int r = (p0 + m) / group, h = (p0 + m) % group;
                Sm[m] = S + r * Ss + (size_t)h * Sp;
                Qm[m] = Q + r * qs + (size_t)h * D;
                Tm[m] = T0 + r;
            }
            const int nc = (Tm[M - 1] + 15) / 16;
#define CPU_ATT_QK(MM, CC, cc)                                                                 \
    cpu_att_qk(DT, DV, MM, CC, Sm, Qm, Tm, kv, tbl, block_stride, vofs, g, cc, bs, scale)
#define CPU_ATT_QK_M(MM)                                                                       \
    case MM:                                                                                   \
        switch (nc - c < 4 ? nc - c : 4) {  /* none when this tile's rows end before c */      \
        case 1: CPU_ATT_QK(MM, 1, c); break;                                                   \
        case 2: CPU_ATT_QK(MM, 2, c); break;                                                   \
        case 3: CPU_ATT_QK(MM, 3, c); break;                                                   \
        case 4: CPU_ATT_QK(MM, 4, c); break;                                                   \
        default: break;                                                                        \
        }                                                                                      \
        break;
            switch (M) {
            CPU_ATT_QK_M(1)
            CPU_ATT_QK_M(2)
            CPU_ATT_QK_M(3)
            CPU_ATT_QK_M(4)
            CPU_ATT_QK_M(5)
            default: CPU_ATT_QK_M(6)
            }
#undef CPU_ATT_QK_M
#undef CPU_ATT_QK
        }
    }
}

/* srow[0..n) := exp(srow - max) / sum in place, n a multiple of 16 (-inf
 * entries become 0): 16 lanes at a time, the sum in 16 lane partials added
 * in lane order at the end. */
static inline __attribute__((always_inline)) void cpu_softmax_row(float *srow, int n)
{
    cpu_v16 m = *(const cpu_v16 *)srow;
    for (int t = 16; t < n; t += 16) {
        const cpu_v16 x = *(const cpu_v16 *)(srow + t);
        const cpu_v16i gt = x > m;
        m = (cpu_v16)(((cpu_v16i)x & gt) | ((cpu_v16i)m & ~gt));
    }
    float mx = m[0];
    for (int i = 1; i < 16; i++) mx = m[i] > mx ? m[i] : mx;
    cpu_v16 s = {0};
    for (int t = 0; t < n; t += 16) {
        float *r = srow + t;
        #pragma omp simd
        for (int i = 0; i < 16; i++) r[i] = vexpf(r[i] - mx);
        s += *(const cpu_v16 *)r;
    }
    float sum = 0.0f;
    for (int i = 0; i < 16; i++) sum += s[i];
    const cpu_v16 inv = cpu_bcast16(1.0f / sum);
    for (int t = 0; t < n; t += 16) *(cpu_v16 *)(srow + t) *= inv;
}

/* Positions of the values a run of rows shares per pass of cpu_att_pv
 * (their 16 KiB at D = 64 stay in L1 while every row of the run reads
 * them). */
#define CPU_ATT_SPAN 64

/* P V of M pairs (pair m's probabilities Sm[m], output Om[m]) over
 * positions [t0, t1), added to the outputs (which first = true starts at
 * 0). Each value vector is loaded once for the M pairs, and the M*DV
 * accumulators are independent FMA chains. Every output adds its positions
 * in order, o = fma(p_t, v_t, o) (KV_Q8: p_t times the value's scale, then
 * its integers v_t); the partial sums kept in the outputs between calls
 * are exact fp32, so an output depends neither on its partners nor on the
 * spans. AHEAD: prefetch CPU_ATT_AHEAD_V blocks ahead. */
static inline __attribute__((always_inline)) void
cpu_att_pv(int DT, int AHEAD, int DV, int M, float *const *Om, bool first, const float *const *Sm,
           const void *kv, const int32_t *tbl, size_t block_stride, size_t vofs, int g, int t0,
           int t1, int bs)
{
    const int D = 16 * DV, es = (int)kv_dtype_size((enum kv_dtype)DT);
    cpu_v16 o[24];
    #pragma GCC unroll 24
    for (int i = 0; i < M * DV; i++)
        o[i] = first ? (cpu_v16){0} : *(const cpu_v16 *)(Om[i / DV] + 16 * (i % DV));
    for (int t = t0; t < t1;) {
        const char *Vb = cpu_kv_head(kv, es, tbl, t / bs, g, block_stride, D, bs) + vofs * es;
        const float *vsc =
            DT == KV_Q8 ? cpu_kv_scales(kv, tbl, t / bs, g, block_stride, vofs, bs) + vofs / D
                        : NULL;
        const int j0 = t % bs, nt = t1 - t < bs - j0 ? t1 - t : bs - j0;
        if (AHEAD && t / bs + CPU_ATT_AHEAD_V <= (t1 - 1) / bs)
            cpu_att_prefetch(cpu_kv_head(kv, es, tbl, t / bs + CPU_ATT_AHEAD_V, g, block_stride, D,
                                         bs) + vofs * es,
                             (size_t)bs * D * es);
        for (int j = j0; j < j0 + nt; j++) {
            const char *vj = Vb + (size_t)j * D * es;
            cpu_v16 v[8];
            #pragma GCC unroll 8
            for (int dv = 0; dv < DV; dv++) v[dv] = cpu_kv16(vj + (size_t)16 * dv * es, DT);
            #pragma GCC unroll 6
            for (int m = 0; m < M; m++) {
                const float pj = Sm[m][t + j - j0];
                const cpu_v16 pb = cpu_bcast16(DT == KV_Q8 ? pj * vsc[j] : pj);
                #pragma GCC unroll 8
                for (int dv = 0; dv < DV; dv++) o[m * DV + dv] += pb * v[dv];
            }
        }
        t += nt;
    }
    #pragma GCC unroll 24
    for (int i = 0; i < M * DV; i++) *(cpu_v16 *)(Om[i / DV] + 16 * (i % DV)) = o[i];
}

/* P V of R rows (row r at position T0 - 1 + r) of one kv head: spans of
 * `span` positions in turn, pairs up to 24 / DV at a time over the
 * positions all of them attend to, then each pair alone to its own end. */
static inline __attribute__((always_inline)) void
cpu_att_pvs(int DT, int DV, int R, int AHEAD, int span, float *O, size_t os, const float *S,
            size_t Ss, int Sp, const void *kv, const int32_t *tbl, size_t block_stride,
            size_t vofs, int g, int T0, int group, int bs)
{
    const int D = 16 * DV, np = R * group, most = 24 / DV < CPU_ATT_PAIRS ? 24 / DV : CPU_ATT_PAIRS;
    const int Tmax = T0 + R - 1;
    for (int t0 = 0; t0 < Tmax; t0 += span)
        /* from the first row that attends to t0 (row r to T0 + r - 1) */
        for (int p0 = (t0 >= T0 ? t0 - T0 + 1 : 0) * group, M; p0 < np; p0 += M) {
            M = np - p0 < most ? np - p0 : most;
            float *Om[CPU_ATT_PAIRS];
            const float *Sm[CPU_ATT_PAIRS];
            int end[CPU_ATT_PAIRS];
            for (int m = 0; m < M; m++) {
                const int r = (p0 + m) / group, h = (p0 + m) % group, T = T0 + r;
                Om[m] = O + r * os + (size_t)h * D;
                Sm[m] = S + r * Ss + (size_t)h * Sp;
                end[m] = t0 + span < T ? t0 + span : T;
            }
            const int shared = end[0];      /* the first pair's row ends first */
#define CPU_ATT_PV(MM)                                                                         \
    case MM:                                                                                   \
        cpu_att_pv(DT, AHEAD, DV, MM, Om, t0 == 0, Sm, kv, tbl, block_stride, vofs, g, t0,     \
                   shared, bs);                                                                \
        break;
            switch (M) {
            CPU_ATT_PV(1)
            CPU_ATT_PV(2)
            CPU_ATT_PV(3)
            CPU_ATT_PV(4)
            CPU_ATT_PV(5)
            default: CPU_ATT_PV(6)
            }
#undef CPU_ATT_PV
            for (int m = 0; m < M; m++)
                if (end[m] > shared)
                    cpu_att_pv(DT, 0, DV, 1, Om + m, false, Sm + m, kv, tbl, block_stride, vofs,
                               g, shared, end[m], bs);
        }
}

/* One work item with D = 16*DV and bs a multiple of 16: kv head g of R
 * consecutive rows of one sequence, row r at position T0 - 1 + r (R = 1:
 * a decode row; more: a prefill chunk). The rows take each chunk of keys
 * and each span of values in turn while it is in L1, instead of each row
 * streaming the whole cache. The rows' (row, head) pairs: their scores
 * (cpu_att_scores), each pair's softmax, their P V (cpu_att_pvs); a row's
 * arithmetic is the same whatever R. Q, O: row r at + r*qs, + r*os.
 * S: (R, group, Sp) scratch, Sp = T0 + R - 1 rounded up to 16. */
static inline __attribute__((always_inline)) void
cpu_att_item(int DT, int DV, int R, float *O, size_t os, const float *Q, size_t qs, float *S,
             const void *kv, const int32_t *tbl, size_t block_stride, size_t vofs, int g,
             int T0, int group, int bs, float scale)
{
    const int D = 16 * DV, es = (int)kv_dtype_size((enum kv_dtype)DT), Tmax = T0 + R - 1;
    const int Sp = (Tmax + 15) / 16 * 16;
    const int AHEAD = DT != KV_F32 && R == 1;    /* see CPU_ATT_AHEAD_K */
    const size_t Ss = (size_t)group * Sp;
    /* A block's keys and values of one head are pieces of bs*D floats
     * scattered over the pool; the hardware prefetcher follows each piece
     * only after its first misses. Asking for the first lines of them all
     * at once overlaps those misses (measured: 0.78 -> 0.69 ms for the
     * cold cache of 16 sequences). */
    for (int t0 = 0; t0 < Tmax; t0 += bs) {
        const char *Kb = cpu_kv_head(kv, es, tbl, t0 / bs, g, block_stride, D, bs);
        for (int i = 0; i < CPU_ATT_PF_LINES; i++) {
            __builtin_prefetch(Kb + 64 * i, 0, 3);
            __builtin_prefetch(Kb + vofs * es + 64 * i, 0, 3);
        }
        if (DT == KV_Q8) {  /* the block's scales: a line or so each, read mid-loop */
            const float *sc = cpu_kv_scales(kv, tbl, t0 / bs, g, block_stride, vofs, bs);
            __builtin_prefetch(sc, 0, 3);
            __builtin_prefetch(sc + vofs / D, 0, 3);
        }
    }
    cpu_att_scores(DT, DV, R, AHEAD, S, Ss, Sp, Q, qs, kv, tbl, block_stride, vofs, g, T0,
                   group, bs, scale);
    for (int r = 0; r < R; r++)
        for (int h = 0; h < group; h++)
            cpu_softmax_row(S + r * Ss + (size_t)h * Sp, (T0 + r + 15) / 16 * 16);
    cpu_att_pvs(DT, DV, R, AHEAD, R == 1 ? Tmax : CPU_ATT_SPAN, O, os, S, Ss, Sp, kv, tbl,
                block_stride, vofs, g, T0, group, bs);
}

/* Per element type (DT: enum kv_dtype's value, KV_F32 0, KV_F16 1, KV_Q8
 * 2) and head size; R == 1 (every decode row) gets its own copy, compiled
 * for one row. */
typedef void cpu_att_item_fn(int, float *, size_t, const float *, size_t, float *, const void *,
                             const int32_t *, size_t, size_t, int, int, int, int, float);
#define CPU_ATT_ITEM_FN(DT, DV)                                                                \
    __attribute__((optimize("fp-contract=fast"))) static void                                  \
    cpu_att_item##DT##_##DV(int R, float *O, size_t os, const float *Q, size_t qs, float *S,   \
                             const void *kv, const int32_t *tbl, size_t block_stride,          \
                             size_t vofs, int g, int T0, int group, int bs, float scale)       \
    {                                                                                          \
        if (R == 1)                                                                            \
            cpu_att_item(DT, DV, 1, O, os, Q, qs, S, kv, tbl, block_stride, vofs, g, T0,       \
                         group, bs, scale);                                                    \
        else                                                                                   \
            cpu_att_item(DT, DV, R, O, os, Q, qs, S, kv, tbl, block_stride, vofs, g, T0,       \
                         group, bs, scale);                                                    \
    }
CPU_ATT_ITEM_FN(0, 2)
CPU_ATT_ITEM_FN(0, 4)
CPU_ATT_ITEM_FN(0, 8)
CPU_ATT_ITEM_FN(1, 2)
CPU_ATT_ITEM_FN(1, 4)
CPU_ATT_ITEM_FN(1, 8)
CPU_ATT_ITEM_FN(2, 2)
CPU_ATT_ITEM_FN(2, 4)
CPU_ATT_ITEM_FN(2, 8)

/* One row and kv head of any D and bs, plainly: scores block by block
 * (keys (D,bs) in a block), softmax, P V. S: (group, T) scratch. */
static void cpu_att_row_plain(float *O, const float *Q, float *S, const void *kv,
                              enum kv_dtype dt, const int32_t *tbl, size_t block_stride,
                              size_t vofs, int g, int T, int group, int D, int bs, float scale)
{
    const int es = (int)kv_dtype_size(dt);
    for (int t0 = 0; t0 < T; t0 += bs) {
        const char *K = cpu_kv_head(kv, es, tbl, t0 / bs, g, block_stride, D, bs);
        int nt = T - t0 < bs ? T - t0 : bs;
        for (int hh = 0; hh < group; hh++) {
            const float *qh = Q + (size_t)hh * D;
            float *srow = S + (size_t)hh * T + t0;
            for (int j = 0; j < nt; j++) srow[j] = 0.0f;
            for (int d = 0; d < D; d++) {
                const float qd = qh[d];
                const char *kd = K + (size_t)d * bs * es;
                #pragma omp simd
                for (int j = 0; j < nt; j++) srow[j] += qd * cpu_kv1(kd, j, dt);
            }
            const float *ks = dt == KV_Q8
                                  ? cpu_kv_scales(kv, tbl, t0 / bs, g, block_stride, vofs, bs)
                                  : NULL;
            for (int j = 0; j < nt; j++) srow[j] = ks ? srow[j] * ks[j] * scale : srow[j] * scale;
        }
    }
    for (int hh = 0; hh < group; hh++) {
        float *srow = S + (size_t)hh * T;
        float mx = -INFINITY, sum = 0.0f;
        for (int t = 0; t < T; t++) mx = srow[t] > mx ? srow[t] : mx;
        for (int t = 0; t < T; t++) { srow[t] = vexpf(srow[t] - mx); sum += srow[t]; }
        const float inv = 1.0f / sum;
        for (int t = 0; t < T; t++) srow[t] *= inv;
        float *oh = O + (size_t)hh * D;
        for (int d = 0; d < D; d++) oh[d] = 0.0f;
    }
    for (int t0 = 0; t0 < T; t0 += bs) {
        const char *Vb = cpu_kv_head(kv, es, tbl, t0 / bs, g, block_stride, D, bs) + vofs * es;
        const float *vsc =
            dt == KV_Q8 ? cpu_kv_scales(kv, tbl, t0 / bs, g, block_stride, vofs, bs) + vofs / D
                        : NULL;
        int nt = T - t0 < bs ? T - t0 : bs;
        for (int hh = 0; hh < group; hh++) {
            const float *prow = S + (size_t)hh * T + t0;
            float *oh = O + (size_t)hh * D;
            for (int j = 0; j < nt; j++) {
                const char *vj = Vb + (size_t)j * D * es;
                const float p = vsc ? prow[j] * vsc[j] : prow[j];
                #pragma omp simd
                for (int d = 0; d < D; d++) oh[d] += p * cpu_kv1(vj, d, dt);
            }
        }
    }
}

/* Rows of one sequence at consecutive positions taken as one work item
 * (a prefill chunk): each chunk of keys is read once for all of them. */
#define CPU_ATT_ROWS 16

/* The new rows of a step (cpu_attention_paged_step): keys k and values v
 * (N,NKV,D) at row stride ks, stored into the cache kv before they are
 * read; cs: the rows' RoPE table (cpu_rope_cos_sin), which rotates the
 * keys as they are stored and the queries as a work item copies them. */
struct cpu_att_new {
    void *kv;
    const float *cs, *k, *v;
    int ks;
};

/* Row n's key and value of kv head g into the cache, the key rotated by
 * cs when there is one (tmp: D floats for it). */
static inline void cpu_att_store(const struct cpu_att_new *nw, float *tmp, enum kv_dtype dt,
                                 size_t block_stride, size_t vofs, const int32_t *tbl,
                                 const int32_t *pos, int n, int g, int D, int bs)
{
    const float *k = nw->k + (size_t)n * nw->ks + (size_t)g * D;
    if (nw->cs) {
        const float *c = nw->cs + (size_t)n * D;
        cpu_rope_head(tmp, k, c, c + D / 2, D, 1.0f);
        k = tmp;
    }
    cpu_kv_write_head(nw->kv, dt, block_stride, vofs, tbl, pos[n], g, k,
                      nw->v + (size_t)n * nw->ks + (size_t)g * D, D, bs);
}

/* The arguments of cpu_att_paged. */
struct cpu_att_args {
    float *out;
    const float *q;
    int qs;
    const struct cpu_att_new *nw;
    const void *kv;
    enum kv_dtype dt;
    size_t block_stride, vofs;
    const int32_t *block_tables;
    int max_blocks;
    const int32_t *seq, *pos;
    int N, NH, NKV, D, bs;
};

/* What the threads of a call share: the runs, whether each work item
 * stores its own rows, the threads' scratch. nrun, own and chunk are
 * worked out without allocating, so that every thread of a team takes the
 * same work-sharing loops even when its allocations fail (run or scratch
 * NULL: it then does no work, and says so). */
struct cpu_att_plan {
    int *run, nrun, tmax, chunk;
    bool own;
    float *scratch;
    size_t per, scratch_n, rq_n;
};

/* The end of the run that starts at row n0: rows of one sequence at
 * consecutive positions, at most CPU_ATT_ROWS. */
static int cpu_att_run_end(const int32_t *seq, const int32_t *pos, int N, int n0)
{
    int n = n0 + 1;
    while (n < N && n - n0 < CPU_ATT_ROWS && seq[n] == seq[n - 1] && pos[n] == pos[n - 1] + 1) n++;
    return n;
}

/* Works out the plan of a call for nthreads threads with scratch for
 * nscratch of them; 0, or -1 after printing why (out of memory) with run
 * and scratch NULL and the rest of the plan set. */
static int cpu_att_plan_make(struct cpu_att_plan *pl, const struct cpu_att_args *a, int nthreads,
                             int nscratch)
{
    const int N = a->N, group = a->NH / a->NKV, D = a->D;
    const int32_t *seq = a->seq, *pos = a->pos;
    /* runs: rows [run[i], run[i+1]), cpu_att_run_end's */
    int tmax = 0, nrun = 0, rmax = 1;
    bool own = a->nw != NULL;
    for (int n0 = 0, n; n0 < N; n0 = n, nrun++) {
        n = cpu_att_run_end(seq, pos, N, n0);
        rmax = n - n0 > rmax ? n - n0 : rmax;
        /* a sequence at the start of two runs: see own below */
        for (int m = 0; own && m < n0; m++) own = seq[m] != seq[n0];
    }
    for (int n = 0; n < N; n++) tmax = pos[n] + 1 > tmax ? pos[n] + 1 : tmax;
    /* Every sequence in one run (a decode step; prompts of up to
     * CPU_ATT_ROWS tokens): a work item (run, kv head) is then the only
     * one to store or read that head's new positions, so it stores them
     * itself, into the lines it is about to read. Otherwise every row is
     * stored first, then the team waits at a barrier. Measured against
     * rope_forward, kv_cache_write and attention_paged_forward in turn (16
     * rows at T = 72, 8 layers of small): 0.44 -> 0.30 ms with the cache
     * in L3, 0.77 -> 0.64 ms from memory. (Worked out above: no run
     * starts with a sequence that an earlier row has.) */
    /* Per thread, on 64-byte boundaries (16 floats): the score rows (rows
     * of the longest run x NH/NKV heads x T rounded up to 16), the rotated
     * queries of a run (group heads of rmax rows), a rotated key.
     * No cache line is written by two threads (malloc's 16-byte alignment
     * put the score rows of the two threads of a step in one line, which
     * went back and forth between the cores on every item: 0.28 -> 0.20 ms
     * for 16 sequences at T = 72 with the cache in L3). */
    const struct cpu_att_new *nw = a->nw;
    pl->scratch_n = (size_t)rmax * group * ((tmax + 15) / 16 * 16);
    pl->rq_n = nw && nw->cs ? ((size_t)rmax * group * D + 15) / 16 * 16 : 0;
    pl->per = pl->scratch_n + pl->rq_n + (nw ? ((size_t)D + 15) / 16 * 16 : 0);
    pl->nrun = nrun;
    pl->tmax = tmax;
    pl->own = own;
    /* A thread takes all kv heads of a run: a block's keys (and values) of
     * the heads are adjacent, so it reads them as one run (measured: 0.68
     * -> 0.60 ms for the cold cache of 16 sequences, against items handed
     * out one by one, which interleave the two threads in a run). With
     * fewer runs than two per thread, the heads are handed out one by one,
     * or a thread would wait while another reads a whole long cache (one
     * sequence of small at a 1024-token context: 0.45 -> 0.27 ms of
     * attention per step). */
    pl->chunk = nrun >= 2 * nthreads ? a->NKV : 1;
    pl->run = malloc(((size_t)nrun + 1) * sizeof *pl->run);
    pl->scratch = aligned_alloc(64, (size_t)nscratch * pl->per * sizeof(float));
    if (!pl->run || !pl->scratch) {
        fprintf(stderr, "kernels/cpu/cpu_decode.c: out of memory for attention over %d rows "
                "(%d positions); attention not computed\n", N, tmax);
        free(pl->run);
        free(pl->scratch);
        pl->run = NULL;
        pl->scratch = NULL;
        return -1;
    }
    for (int i = 0, n0 = 0; n0 < N; i++) {
        pl->run[i] = n0;
        n0 = cpu_att_run_end(seq, pos, N, n0);
    }
    pl->run[nrun] = N;
    return 0;
}

/* One thread's share of a call (work-sharing loops of the team it runs
 * in): the stores first when the work items do not own them, then the
 * items (run, kv head). Its scratch: slot `slot` of the plan's. */
static void cpu_att_work(const struct cpu_att_args *a, const struct cpu_att_plan *pl, int slot)
{
    const int NH = a->NH, NKV = a->NKV, D = a->D, bs = a->bs, group = NH / NKV;
    const struct cpu_att_new *nw = a->nw;
    const enum kv_dtype dt = a->dt;
    const size_t block_stride = a->block_stride, vofs = a->vofs;
    const int32_t *seq = a->seq, *pos = a->pos;
    const float scale = 1.0f / sqrtf((float)D);
    const bool ok = pl->run && pl->scratch;
    /* head sizes of 32, 64 and 128 with whole 16-position chunks in a
     * block have the register-blocked kernel */
    static cpu_att_item_fn *const items[3][3] = {
        {cpu_att_item0_2, cpu_att_item0_4, cpu_att_item0_8},
        {cpu_att_item1_2, cpu_att_item1_4, cpu_att_item1_8},
        {cpu_att_item2_2, cpu_att_item2_4, cpu_att_item2_8}};
    cpu_att_item_fn *item = bs % 16 != 0 ? NULL
                            : D == 32    ? items[dt][0]
                            : D == 64    ? items[dt][1]
                            : D == 128   ? items[dt][2]
                                         : NULL;
    float *S = ok ? pl->scratch + (size_t)slot * pl->per : NULL;
    float *rq = ok ? S + pl->scratch_n : NULL, *kt = ok ? rq + pl->rq_n : NULL;
    if (nw && !pl->own) {
        #pragma omp for schedule(static)
        for (int n = 0; n < a->N; n++)
            for (int g = 0; ok && g < NKV; g++)
                cpu_att_store(nw, kt, dt, block_stride, vofs,
                              a->block_tables + (size_t)seq[n] * a->max_blocks, pos, n, g, D, bs);
    }
    const long work = (long)pl->nrun * NKV;
    #pragma omp for schedule(dynamic, pl->chunk)
    for (long w = 0; w < work; w++) {
        if (!ok) continue;
        const int i = (int)(w / NKV), g = (int)(w % NKV), n0 = pl->run[i];
        const int R = pl->run[i + 1] - n0;
        const int32_t *tbl = a->block_tables + (size_t)seq[n0] * a->max_blocks;
        const size_t os = (size_t)NH * D;
        const float *Q = a->q + (size_t)n0 * a->qs + (size_t)g * group * D;
        size_t qrs = (size_t)a->qs;
        if (pl->own)
            for (int n = n0; n < n0 + R; n++)
                cpu_att_store(nw, kt, dt, block_stride, vofs, tbl, pos, n, g, D, bs);
        if (nw && nw->cs) {
            /* the group's query heads of the run's rows, rotated */
            for (int r = 0; r < R; r++) {
                const float *c = nw->cs + (size_t)(n0 + r) * D;
                for (int h = 0; h < group; h++)
                    cpu_rope_head(rq + ((size_t)r * group + h) * D, Q + r * qrs + (size_t)h * D,
                                  c, c + D / 2, D, 1.0f);
            }
            Q = rq;
            qrs = (size_t)group * D;
        }
        float *out = a->out + n0 * os + (size_t)g * group * D;
        if (item) {
            item(R, out, os, Q, qrs, S, a->kv, tbl, block_stride, vofs, g, pos[n0] + 1, group, bs,
                 scale);
            continue;
        }
        for (int r = 0; r < R; r++)
            cpu_att_row_plain(out + (size_t)r * os, Q + r * qrs, S, a->kv, dt, tbl,
                              block_stride, vofs, g, pos[n0 + r] + 1, group, D, bs, scale);
    }
}

/* A team thread's plan, kept from call to call: the layers of one decode
 * step have the same rows, so only the first layer's call works it out
 * (each thread its own, from the same arguments: no single, no barrier,
 * no allocation in the other layers). Key: the shape and the rows' seq
 * and pos. */
static _Thread_local struct {
    struct cpu_att_plan pl;
    bool valid, nw, cs;
    int N, NH, NKV, D, bs, nt;
    int32_t *rows;      /* seq then pos, N each */
    size_t cap;
} cpu_att_tl;

static const struct cpu_att_plan *cpu_att_team_plan(const struct cpu_att_args *a)
{
    const int nt = omp_get_num_threads(), N = a->N;
    const bool nw = a->nw != NULL, cs = nw && a->nw->cs;
    const size_t bytes = (size_t)N * sizeof(int32_t);
    if (cpu_att_tl.valid && cpu_att_tl.N == N && cpu_att_tl.NH == a->NH &&
        cpu_att_tl.NKV == a->NKV && cpu_att_tl.D == a->D && cpu_att_tl.bs == a->bs &&
        cpu_att_tl.nt == nt && cpu_att_tl.nw == nw && cpu_att_tl.cs == cs &&
        !memcmp(cpu_att_tl.rows, a->seq, bytes) && !memcmp(cpu_att_tl.rows + N, a->pos, bytes))
        return &cpu_att_tl.pl;
    free(cpu_att_tl.pl.run);
    free(cpu_att_tl.pl.scratch);
    cpu_att_tl.valid = false;
    const bool ok = cpu_att_plan_make(&cpu_att_tl.pl, a, nt, 1) == 0;
    if (2 * (size_t)N > cpu_att_tl.cap) {
        free(cpu_att_tl.rows);
        cpu_att_tl.cap = 2 * (size_t)N;
        if (!(cpu_att_tl.rows = malloc(cpu_att_tl.cap * sizeof(int32_t)))) cpu_att_tl.cap = 0;
    }
    if (ok && cpu_att_tl.rows) {
        memcpy(cpu_att_tl.rows, a->seq, bytes);
        memcpy(cpu_att_tl.rows + N, a->pos, bytes);
        cpu_att_tl.valid = true;
        cpu_att_tl.N = N;
        cpu_att_tl.NH = a->NH;
        cpu_att_tl.NKV = a->NKV;
        cpu_att_tl.D = a->D;
        cpu_att_tl.bs = a->bs;
        cpu_att_tl.nt = nt;
        cpu_att_tl.nw = nw;
        cpu_att_tl.cs = cs;
    }
    return &cpu_att_tl.pl;
}

/* cpu_attention_paged_forward, storing the step's new rows a->nw first
 * (NULL: none). */
static void cpu_att_paged(const struct cpu_att_args *a)
{
    if (a->N <= 0) return;
    if (cpu_in_team()) {
        cpu_att_work(a, cpu_att_team_plan(a), 0);
        return;
    }
    struct cpu_att_plan pl;
    if (cpu_att_plan_make(&pl, a, omp_get_max_threads(), omp_get_max_threads())) return;
    /* Small decode steps (a few sequences, short caches) are cheaper on one
     * thread than waking the team. */
    const int par = (size_t)a->N * a->NH * pl.tmax * a->D >= (size_t)CPU_PAR_MIN;
    #pragma omp parallel if (par)
    cpu_att_work(a, &pl, omp_get_thread_num());
    free(pl.run);
    free(pl.scratch);
}

/* out: (N,NH,D) contiguous; q: (N,NH,D) row stride qs. For row n, query
 * head h of kv group g, T = pos[n] + 1:
 *   p = softmax_t(q_h . k_t / sqrt(D)), out_h = sum_t p_t v_t. */
void cpu_attention_paged_forward(float *out, const float *q, int qs,
                                 const void *kv, enum kv_dtype dt, size_t block_stride,
                                 size_t vofs, const int32_t *block_tables,
                                 int max_blocks, const int32_t *seq,
                                 const int32_t *pos, int N, int NH, int NKV,
                                 int D, int bs)
{
    const struct cpu_att_args a = {out, q, qs, NULL, kv, dt, block_stride, vofs, block_tables,
                                   max_blocks, seq, pos, N, NH, NKV, D, bs};
    cpu_att_paged(&a);
}

/* qkv: (N, (NH + 2 NKV) D) row stride qs, [q heads | k heads | v heads]:
 * rope_forward of the q and k heads by cs (NULL: no rotation), the keys
 * and values stored (cpu_kv_cache_write), then the attention, bitwise those
 * three ops in turn, in one parallel region; qkv is not written. */
void cpu_attention_paged_step(float *out, const float *qkv, int qs, const float *cs, void *kv,
                              enum kv_dtype dt, size_t block_stride, size_t vofs,
                              const int32_t *block_tables, int max_blocks, const int32_t *seq,
                              const int32_t *pos, int N, int NH, int NKV, int D, int bs)
{
    const struct cpu_att_new nw = {kv, cs, qkv + (size_t)NH * D, qkv + (size_t)(NH + NKV) * D, qs};
    const struct cpu_att_args a = {out, qkv, qs, &nw, kv, dt, block_stride, vofs, block_tables,
                                   max_blocks, seq, pos, N, NH, NKV, D, bs};
    cpu_att_paged(&a);
}

/* ------------------------------------------------- batch-invariant matmul */

/* Outputs per packed panel: 2 AVX-512 vectors. */
#define CPU_PANEL 32

/* 16 dwords, unaligned, readable through any type (the packed panels and
 * bf16 inputs are written as uint32_t, the fp32 panels as float). */
typedef uint32_t cpu_v16u __attribute__((vector_size(64), aligned(4), may_alias));
typedef uint16_t cpu_v16h __attribute__((vector_size(32), aligned(2), may_alias));

/* W_Q8's blocks: CPU_Q8_K inputs share a scale (per output in the
 * weights, per row in the inputs). */
#define CPU_Q8_K 32

static inline int cpu_q8_blocks(int C)
{
    return (C + CPU_Q8_K - 1) / CPU_Q8_K;
}

/* Rows of a W_Q8 or W_Q4 block, its scales' included. */
static inline int cpu_rows_qblock_rows(enum w_dtype dt)
{
    return dt == W_Q4 ? 5 : 9;
}

/* Rows of a panel: one per k (W_F32), one per pair of k (W_BF16), one per
 * quad of k (W_Q8, 8 to a block), one per two quads (W_Q4, 4 to a block).
 * A row is 32 dwords, 128 bytes, in each; a W_Q8 or W_Q4 block has a row
 * of its 32 outputs' scales after its 8 or 4 (not counted here). */
static inline int cpu_rows_kn(int C, enum w_dtype dt)
{
    return dt == W_BF16             ? (C + 1) / 2
         : dt == W_Q8 || dt == W_Q4 ? (cpu_rows_qblock_rows(dt) - 1) * cpu_q8_blocks(C)
                                    : C;
}

/* Bytes of one panel of C inputs. */
static inline size_t cpu_rows_panel_bytes(int C, enum w_dtype dt)
{
    return dt == W_Q8 || dt == W_Q4
               ? (size_t)cpu_q8_blocks(C) * cpu_rows_qblock_rows(dt) * CPU_PANEL * 4
               : (size_t)cpu_rows_kn(C, dt) * CPU_PANEL * 4;
}

size_t cpu_rows_packed_bytes(int C, int OC, enum w_dtype dt)
{
    return (size_t)((OC + CPU_PANEL - 1) / CPU_PANEL) * cpu_rows_panel_bytes(C, dt);
}

/* Panels of an (OC,C) matrix (I == 0) or of a SwiGLU's [gate; up] (I > 0,
 * cpu_rows_pack_glu). */
static inline int cpu_rows_panels(int OC, int I)
{
    return I > 0 ? (I + 15) / 16 : (OC + CPU_PANEL - 1) / CPU_PANEL;
}

/* The weight row in lane c of panel p: I == 0, row 32p + c of OC; I > 0
 * (gate rows 0..I-1, then up rows I..2I-1), gate row 16p + c for c < 16,
 * up row 16p + c - 16 after, so one tile has both halves of its SwiGLU
 * outputs; -1 where there is none. */
static inline int cpu_rows_panel_row(int p, int c, int OC, int I)
{
    const int j = I > 0 ? p * 16 + c % 16 : p * CPU_PANEL + c;
    return I > 0 ? (j < I ? c / 16 * I + j : -1) : (j < OC ? j : -1);
}

/* W_Q8's quantization of a block of n <= CPU_Q8_K values x into q[0..32)
 * (zeros past n), returning the scale: scale = max|x| / 127, q = x * (127
 * / max|x|) rounded to nearest even (torch.round) and kept within +-127
 * (a multiply, not a divide per value, as llama.cpp's q8_0). A block of
 * zeros, or of magnitudes under 127 / FLT_MAX (where 127 / max|x| is
 * infinite), has q all 0; one holding a NaN or an infinity, the scale NaN
 * or infinity and q all 0, so that its products come out NaN, as the fp32
 * ones would. *sum: the sum of q. */
static inline float cpu_q8_block(int8_t *q, int32_t *sum, const float *x, int n)
{
#if defined(__AVX512F__)
    if (n == CPU_Q8_K) {
        const __m512 a = _mm512_loadu_ps(x), b = _mm512_loadu_ps(x + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
        if (_mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q))
            amax = NAN;
        const float scale = amax / 127.0f, inv1 = 127.0f / amax;
        if (!(scale <= FLT_MAX && inv1 <= FLT_MAX)) {
            memset(q, 0, CPU_Q8_K);
            *sum = 0;
            return scale;
        }
        const __m512 inv = _mm512_set1_ps(inv1), hi = _mm512_set1_ps(127.0f);
        const __m512 lo = _mm512_set1_ps(-127.0f);
        const __m512 ya = _mm512_max_ps(lo, _mm512_min_ps(hi, _mm512_mul_ps(a, inv)));
        const __m512 yb = _mm512_max_ps(lo, _mm512_min_ps(hi, _mm512_mul_ps(b, inv)));
        const __m512i qa = _mm512_cvtps_epi32(ya), qb = _mm512_cvtps_epi32(yb);
        _mm_storeu_si128((__m128i *)q, _mm512_cvtsepi32_epi8(qa));
        _mm_storeu_si128((__m128i *)(q + 16), _mm512_cvtsepi32_epi8(qb));
        *sum = _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb));
        return scale;
    }
#endif
    float amax = 0.0f;
    for (int i = 0; i < n; i++) {
        const float v = fabsf(x[i]);
        amax = v > amax || v != v ? v : amax;
        if (v != v) break;
    }
    const float scale = amax / 127.0f, inv = 127.0f / amax;
    const bool ok = scale <= FLT_MAX && inv <= FLT_MAX;
    *sum = 0;
    for (int i = 0; i < CPU_Q8_K; i++) {
        float y = ok && i < n ? x[i] * inv : 0.0f;
        y = y > 127.0f ? 127.0f : y < -127.0f ? -127.0f : y;
        q[i] = (int8_t)lrintf(y);
        *sum += q[i];
    }
    return scale;
}

/* A W_Q8 or W_Q4 input row: C inputs as int8 (cpu_q8_block, a block at a
 * time) in dwords of 4, each block's correction -off * (sum of its q),
 * then each block's scale: 10 dwords per block. The correction takes out
 * what the weights' offset (128 for W_Q8, 8 for W_Q4) adds to a block's
 * products (cpu_rows_qtile). */
static void cpu_rows_q8_row(uint32_t *xq, const float *x, int C, int off)
{
    const int nb = cpu_q8_blocks(C);
    int8_t *q = (int8_t *)xq;
    int32_t *corr = (int32_t *)(xq + 8 * nb);
    float *scale = (float *)(xq + 9 * nb);
    for (int b = 0; b < nb; b++) {
        const int k0 = CPU_Q8_K * b, n = C - k0 < CPU_Q8_K ? C - k0 : CPU_Q8_K;
        int32_t sum;
        scale[b] = cpu_q8_block(q + k0, &sum, x + k0, n);
        corr[b] = -off * sum;
    }
}

/* W_Q4's quantization of a block of n <= CPU_Q8_K weights x into q[0..32)
 * (8, standing for 0, past n), returning the scale d: llama.cpp's q4_0,
 * d = m / -8 for m the first value of largest magnitude, q = min(15,
 * floor(x * (1 / d) + 8.5)), all in fp32. A block of zeros, or one whose
 * 1 / d is not finite (subnormal m), has q all 8; one holding a NaN or an
 * infinity, q all 8 and the scale NaN or infinity, so that its products
 * come out NaN, as the fp32 ones would. */
static inline float cpu_q4_block(uint8_t *q, const float *x, int n)
{
    float amax = 0.0f, m = 0.0f;
    for (int i = 0; i < n; i++) {
        const float v = fabsf(x[i]);
        if (v != v) { m = NAN; break; }
        if (v > amax) { amax = v; m = x[i]; }
    }
    const float d = m / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    const bool ok = fabsf(d) <= FLT_MAX && fabsf(id) <= FLT_MAX;
    for (int i = 0; i < CPU_Q8_K; i++) {
        if (!ok || i >= n) { q[i] = 8; continue; }
        const float t = x[i] * id, v = t + 8.5f;   /* in [0.5, 16.5] */
        q[i] = v >= 15.0f ? 15 : (uint8_t)v;
    }
    return d;
}

/* cpu_rows_pack_panels for W_Q8 and W_Q4: panel p, block b: 8 (W_Q8) or
 * 4 (W_Q4) rows, then the row of the 32 outputs' scales (0 where there is
 * no row). W_Q8's row r, dword c: the bytes q + 128 of weight[row(p,
 * c)][32b + 4r + 0..3] (unsigned, as vpdpbusd takes them; 128 where there
 * is no k or no row). W_Q4's row r, dword c: the bytes q[8r + j] | q[8r +
 * 4 + j] << 4, j = 0..3, of the block's steps (cpu_q4_block: two quads of
 * k in the low and high nibbles; 8 where there is no k or no row). */
static void cpu_rows_pack_q(void *dst, const float *weight, int C, int OC, int I,
                            enum w_dtype dt)
{
    const int np = cpu_rows_panels(OC, I);
    const int nb = cpu_q8_blocks(C), rows = cpu_rows_qblock_rows(dt) - 1;
    const size_t pbytes = cpu_rows_panel_bytes(C, dt);
    #pragma omp parallel for schedule(static)
    for (int p = 0; p < np; p++) {
        for (int c = 0; c < CPU_PANEL; c++) {
            const int row = cpu_rows_panel_row(p, c, OC, I);
            for (int b = 0; b < nb; b++) {
                uint8_t *blk = (uint8_t *)dst + (size_t)p * pbytes +
                               (size_t)b * (rows + 1) * CPU_PANEL * 4;
                const int k0 = CPU_Q8_K * b, n = C - k0 < CPU_Q8_K ? C - k0 : CPU_Q8_K;
                const float *w = row >= 0 ? weight + (size_t)row * C + k0 : NULL;
                float scale = 0.0f;
                if (dt == W_Q8) {
                    int8_t q[CPU_Q8_K];
                    int32_t sum;
                    if (w) scale = cpu_q8_block(q, &sum, w, n);
                    else memset(q, 0, sizeof q);
                    for (int k = 0; k < CPU_Q8_K; k++)
                        blk[((size_t)(k / 4) * CPU_PANEL + c) * 4 + k % 4] = (uint8_t)(q[k] + 128);
                } else {
                    uint8_t q[CPU_Q8_K];
                    if (w) scale = cpu_q4_block(q, w, n);
                    else memset(q, 8, sizeof q);
                    for (int r = 0; r < 4; r++)
                        for (int j = 0; j < 4; j++)
                            blk[((size_t)r * CPU_PANEL + c) * 4 + j] =
                                (uint8_t)(q[8 * r + j] | q[8 * r + 4 + j] << 4);
                }
                memcpy(blk + (size_t)rows * CPU_PANEL * 4 + (size_t)c * 4, &scale, sizeof scale);
            }
        }
    }
}

/* Panels of weight's rows: panel p, row k, lane c = weight[row(p, c)][k]
 * (W_F32) or the pair bf16(weight[row][2k]) | bf16(weight[row][2k+1]) << 16
 * (W_BF16, as vdpbf16ps reads it; a missing k is 0), 0 where there is no
 * row; row(p, c): cpu_rows_panel_row. A panel is one contiguous stream in
 * the order the tiles read it. */
static void cpu_rows_pack_panels(void *dst, const float *weight, int C, int OC, int I,
                                 enum w_dtype dt)
{
    const int np = cpu_rows_panels(OC, I);
    const int kn = cpu_rows_kn(C, dt);
    #pragma omp parallel for schedule(static)
    for (int p = 0; p < np; p++) {
        const size_t p0 = (size_t)p * kn * CPU_PANEL;
        for (int c = 0; c < CPU_PANEL; c++) {
            const int row = cpu_rows_panel_row(p, c, OC, I);
            const float *w = row >= 0 ? weight + (size_t)row * C : NULL;
            for (int k = 0; k < kn; k++) {
                const size_t at = p0 + (size_t)k * CPU_PANEL + c;
                if (dt == W_F32) {
                    ((float *)dst)[at] = w ? w[k] : 0.0f;
                    continue;
                }
                const uint32_t lo = w ? bf16_from_f32(w[2 * k]) : 0;
                const uint32_t hi = w && 2 * k + 1 < C ? bf16_from_f32(w[2 * k + 1]) : 0;
                ((uint32_t *)dst)[at] = lo | hi << 16;
            }
        }
    }
}

void cpu_rows_pack(void *dst, const float *weight, int C, int OC, enum w_dtype dt)
{
    if (dt == W_Q8 || dt == W_Q4) cpu_rows_pack_q(dst, weight, C, OC, 0, dt);
    else cpu_rows_pack_panels(dst, weight, C, OC, 0, dt);
}

void cpu_rows_pack_glu(void *dst, const float *weight, int C, int I, enum w_dtype dt)
{
    if (dt == W_Q8 || dt == W_Q4) cpu_rows_pack_q(dst, weight, C, 0, I, dt);
    else cpu_rows_pack_panels(dst, weight, C, 0, I, dt);
}

/* A row of C inputs rounded to bfloat16 (bf16_from_f32, 16 at a time), into
 * xb: 2 * cpu_rows_kn(C) halves, so dword k is the pair (2k, 2k+1). */
static void cpu_rows_bf16_row(uint16_t *xb, const float *x, int C)
{
    int k = 0;
    for (; k + 16 <= C; k += 16) {
        const cpu_v16u u = *(const cpu_v16u *)(x + k);
        const cpu_v16u r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
        const cpu_v16u nan = (cpu_v16u)((u & 0x7fffffffu) > 0x7f800000u);
        *(cpu_v16h *)(xb + k) = __builtin_convertvector((r & ~nan) | ((u >> 16 | 0x40u) & nan),
                                                        cpu_v16h);
    }
    for (; k < C; k++) xb[k] = bf16_from_f32(x[k]);
    if (C % 2) xb[C] = 0;
}

/* Rows of inputs per register tile: 12 x 2 accumulators, 2 panel
 * registers and a broadcast, 27 of AVX-512's 32. */
#define CPU_ROWS_MR 12
/* Panel rows ahead of the tiles of a panel that the prefetches start: 8 KiB. */
#define CPU_ROWS_PFD 64

/* A tile's MR x 32 sums acc into o (row stride ldo) [+ bias] [+ ro,
 * stride ldo], nj outputs of each row stored. */
static inline __attribute__((always_inline)) void
cpu_rows_store(int MR, float *o, int ldo, cpu_v16 (*acc)[2], const float *bias, const float *ro,
               int nj)
{
    for (int i = 0; i < MR; i++) {
        float *oi = o + (size_t)i * ldo;
        const float *ri = ro ? ro + (size_t)i * ldo : NULL;
        for (int v = 0; v < 2; v++) {
            cpu_v16 r = acc[i][v];
            if (nj == CPU_PANEL) {
                if (bias) r += *(const cpu_v16 *)(bias + 16 * v);
                if (ri) r += *(const cpu_v16 *)(ri + 16 * v);
                *(cpu_v16 *)(oi + 16 * v) = r;
                continue;
            }
            for (int c = 0; c < 16 && 16 * v + c < nj; c++) {
                float y = bias ? r[c] + bias[16 * v + c] : r[c];
                oi[16 * v + c] = ri ? y + ri[16 * v + c] : y;
            }
        }
    }
}

/* The MR x 32 tile of outputs: rows of x (row stride ldx dwords) times the
 * panel into o (row stride ldo) [+ bias] [+ ro, stride ldo], nj outputs
 * stored. Per panel row, 2 vectors times MR broadcast inputs, 2*MR fused
 * multiply-adds (W_F32) or vdpbf16ps (W_BF16, BF). Each output is the one
 * chain
 *   W_F32:  acc = 0; acc = fma(x[k], w[k], acc) for k = 0..C-1
 *   W_BF16: acc = 0; for each pair k: acc += xb[2k+1] * wb[2k+1], rounded;
 *           acc += xb[2k] * wb[2k], rounded (products of bf16 are exact in
 *           fp32; vdpbf16ps's order and rounding, which also flushes
 *           subnormals: the generic path keeps them, the only difference)
 *   out = acc [+ bias] [+ resid]
 * whatever MR, so a row's outputs never depend on the rows beside it.
 *
 * The first tile of a panel (PF) reads it from memory; with 24 FMAs per
 * 128 bytes its loop holds too few loads in flight to keep the stream at
 * full speed, so every tile prefetches ahead: from pf on, pfstep bytes
 * per k (cpu_rows_block's front). The other tiles find the panel in L2.
 * The prefetches are non-temporal (prefetchnta): against prefetcht1, the
 * matmuls of a step of small measured 0.97 -> 0.92 ms for one row and
 * 1.77 -> 1.78 ms for 16 (best of 8 runs; medians of their means 1.37 ->
 * 1.16 and 2.14 -> 2.02 ms), prefill and medium's one row unchanged. */
static inline __attribute__((always_inline)) void
cpu_rows_tile(int MR, int PF, int BF, float *o, int ldo, const void *xv, int ldx,
              const void *panel, const float *bias, const float *ro, int nj, int kn,
              const char *pf, size_t pfstep)
{
    cpu_v16 acc[CPU_ROWS_MR][2];
    #pragma GCC unroll 12
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = (cpu_v16){0};
    for (int k = 0; k < kn; k++) {
        const uint32_t *row = (const uint32_t *)panel + (size_t)k * CPU_PANEL;
        /* two prefetches half a step apart: no line skipped (steps are
         * at most 128 bytes) */
        __builtin_prefetch(pf, 0, 0);
        __builtin_prefetch(pf + pfstep / 2, 0, 0);
        pf += pfstep;
        if (!BF) {
            const float *x = xv;
            cpu_v16 w0 = *(const cpu_v16 *)row, w1 = *(const cpu_v16 *)(row + 16);
            /* keep the panel row in registers (gcc otherwise folds a load
             * into every FMA: 2*MR loads instead of 2), except in a first
             * tile of up to 4 rows: pinned there, gcc's loop (FMA results
             * written over a multiplicand, moved back every k) streamed
             * 4-row steps 30-40% slower than 2- or 8-row ones; with the
             * loads folded it keeps up with them (matmul harness, small's
             * shapes at 32 layers, 4 rows: 11.3-11.5 -> 8.0 ms; 8 layers,
             * 1 row: 1.20 -> 1.10 ms). The 4-row tail from L2 is faster
             * pinned (16 rows: 2.29-2.41 against 2.54-2.56 ms folded). */
#if defined(__AVX512F__)   /* a 64-byte vector fits one register only there */
            if (MR > 4 || !PF) __asm__("" : "+v"(w0), "+v"(w1));
#endif
            #pragma GCC unroll 12
            for (int i = 0; i < MR; i++) {
                const cpu_v16 b = cpu_bcast16(x[(size_t)i * ldx + k]);
                acc[i][0] += b * w0;
                acc[i][1] += b * w1;
            }
            continue;
        }
        const uint32_t *x = xv;
#if defined(__AVX512BF16__)
        __m512bh w0 = (__m512bh)_mm512_loadu_si512(row);
        __m512bh w1 = (__m512bh)_mm512_loadu_si512(row + 16);
        if (MR > 4 || !PF) __asm__("" : "+v"(w0), "+v"(w1));
        #pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            const __m512bh b = (__m512bh)_mm512_set1_epi32((int)x[(size_t)i * ldx + k]);
            acc[i][0] = (cpu_v16)_mm512_dpbf16_ps((__m512)acc[i][0], b, w0);
            acc[i][1] = (cpu_v16)_mm512_dpbf16_ps((__m512)acc[i][1], b, w1);
        }
#else
        const cpu_v16u u0 = *(const cpu_v16u *)row, u1 = *(const cpu_v16u *)(row + 16);
        const cpu_v16 hi0 = (cpu_v16)(u0 & 0xffff0000u), lo0 = (cpu_v16)(u0 << 16);
        const cpu_v16 hi1 = (cpu_v16)(u1 & 0xffff0000u), lo1 = (cpu_v16)(u1 << 16);
        for (int i = 0; i < MR; i++) {
            const uint32_t p = x[(size_t)i * ldx + k], ph = p & 0xffff0000u, pl = p << 16;
            float fh, fl;
            memcpy(&fh, &ph, sizeof fh);
            memcpy(&fl, &pl, sizeof fl);
            const cpu_v16 bh = cpu_bcast16(fh), bl = cpu_bcast16(fl);
            acc[i][0] += bh * hi0;
            acc[i][0] += bl * lo0;
            acc[i][1] += bh * hi1;
            acc[i][1] += bl * lo1;
        }
#endif
    }
    cpu_rows_store(MR, o, ldo, acc, bias, ro, nj);
}

typedef void cpu_rows_tile_fn(float *, int, const void *, int, const void *, const float *,
                              const float *, int, int, const char *, size_t);
#define CPU_ROWS_TILE_1(M, PF, BF, name)                                                       \
    __attribute__((optimize("fp-contract=fast"))) static void                                  \
    name(float *o, int ldo, const void *x, int ldx, const void *panel, const float *bias,      \
         const float *ro, int nj, int kn, const char *pf, size_t pfstep)                       \
    {                                                                                          \
        cpu_rows_tile(M, PF, BF, o, ldo, x, ldx, panel, bias, ro, nj, kn, pf, pfstep);         \
    }
#define CPU_ROWS_TILE_FN(M)                                                                    \
    CPU_ROWS_TILE_1(M, 0, 0, cpu_rows_tile##M)                                                 \
    CPU_ROWS_TILE_1(M, 1, 0, cpu_rows_ptile##M)                                                \
    CPU_ROWS_TILE_1(M, 0, 1, cpu_rows_btile##M)                                                \
    CPU_ROWS_TILE_1(M, 1, 1, cpu_rows_bptile##M)
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

#define CPU_ROWS_TILES(t)                                                                      \
    {NULL, t##1, t##2, t##3, t##4, t##5, t##6, t##7, t##8, t##9, t##10, t##11, t##12}

/* W_Q8's rows per tile: 6 x 2 integer accumulators, as many fp32 outputs
 * (the sums of the blocks done), 2 panel registers and a broadcast: 27. */
#define CPU_ROWS_MR_Q8 6

/* The MR x 32 tile of W_Q8 (Q4 = 0) or W_Q4 (Q4 = 1) outputs: as
 * cpu_rows_tile, x the rows of cpu_rows_q8_row (stride ldx dwords), the
 * panel cpu_rows_pack_q's, kn its rows (8 or 4 per
 * block). Per block b, each output's integer sum
 *   acc = corr_b + sum over the block's k of u[k] * qx[k]
 * with u[k] = qw[k] + 128 (W_Q8) or the 4-bit q[k] (W_Q4), corr_b taking
 * out the offset (128 or 8) times the sum of qx: exactly the sum of
 * (u[k] - offset) * qx[k] (vpdpbusd, or the same integers in C); then out
 * = fma((float)acc, scale_w * scale_x, out) from out = 0, blocks in
 * order; then [+ bias] [+ resid]. A row's outputs never depend on the
 * rows beside it, nor on which of the two paths ran. */
static inline __attribute__((always_inline)) void
cpu_rows_qtile(int MR, int Q4, float *o, int ldo, const void *xv, int ldx, const void *panel,
               const float *bias, const float *ro, int nj, int kn, const char *pf,
               size_t pfstep)
{
    const uint32_t *x = xv;
    const int rows = Q4 ? 4 : 8, nb = kn / rows;
    const int32_t *corr = (const int32_t *)x + 8 * nb;
    const float *xs = (const float *)x + 9 * nb;
    cpu_v16 out[CPU_ROWS_MR_Q8][2];
    #pragma GCC unroll 6
    for (int i = 0; i < MR; i++) out[i][0] = out[i][1] = (cpu_v16){0};
    for (int b = 0; b < nb; b++) {
        const uint32_t *blk = (const uint32_t *)panel + (size_t)b * (rows + 1) * CPU_PANEL;
        const float *ws = (const float *)(blk + rows * CPU_PANEL);
#if defined(__AVX512VNNI__)
        __m512i acc[CPU_ROWS_MR_Q8][2];
        #pragma GCC unroll 6
        for (int i = 0; i < MR; i++)
            acc[i][0] = acc[i][1] = _mm512_set1_epi32(corr[(size_t)i * ldx + b]);
        const __m512i nib = _mm512_set1_epi8(0x0f);
        #pragma GCC unroll 8
        for (int r = 0; r < rows; r++) {
            __builtin_prefetch(pf, 0, 0);
            __builtin_prefetch(pf + pfstep / 2, 0, 0);
            pf += pfstep;
            const __m512i w0 = _mm512_loadu_si512(blk + r * CPU_PANEL);
            const __m512i w1 = _mm512_loadu_si512(blk + r * CPU_PANEL + 16);
            if (!Q4) {
                #pragma GCC unroll 6
                for (int i = 0; i < MR; i++) {
                    const __m512i xb = _mm512_set1_epi32((int)x[(size_t)i * ldx + 8 * b + r]);
                    acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], w0, xb);
                    acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], w1, xb);
                }
                continue;
            }
            /* quad 2r in the low nibbles, quad 2r + 1 in the high ones */
            const __m512i l0 = _mm512_and_si512(w0, nib), l1 = _mm512_and_si512(w1, nib);
            const __m512i h0 = _mm512_and_si512(_mm512_srli_epi16(w0, 4), nib);
            const __m512i h1 = _mm512_and_si512(_mm512_srli_epi16(w1, 4), nib);
            #pragma GCC unroll 6
            for (int i = 0; i < MR; i++) {
                const uint32_t *xq = x + (size_t)i * ldx + 8 * b + 2 * r;
                const __m512i xl = _mm512_set1_epi32((int)xq[0]), xh = _mm512_set1_epi32((int)xq[1]);
                acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], l0, xl);
                acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], l1, xl);
                acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], h0, xh);
                acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], h1, xh);
            }
        }
        const cpu_v16 s0 = *(const cpu_v16 *)ws, s1 = *(const cpu_v16 *)(ws + 16);
        #pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            const cpu_v16 sx = cpu_bcast16(xs[(size_t)i * ldx + b]);
            out[i][0] = (cpu_v16)_mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i][0]), s0 * sx,
                                                 (__m512)out[i][0]);
            out[i][1] = (cpu_v16)_mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i][1]), s1 * sx,
                                                 (__m512)out[i][1]);
        }
#else
        const uint8_t *wb = (const uint8_t *)blk;
        for (int i = 0; i < MR; i++) {
            const int8_t *xq = (const int8_t *)(x + (size_t)i * ldx + 8 * b);
            const float sx = xs[(size_t)i * ldx + b];
            for (int c = 0; c < CPU_PANEL; c++) {
                int32_t acc = corr[(size_t)i * ldx + b];
                for (int k = 0; k < CPU_Q8_K; k++) {
                    const int r = Q4 ? k / 8 : k / 4, sh = Q4 && k % 8 >= 4 ? 4 : 0;
                    const int u = wb[((size_t)r * CPU_PANEL + c) * 4 + k % 4] >> sh;
                    acc += (Q4 ? u & 15 : u) * xq[k];
                }
                out[i][c / 16][c % 16] = fmaf((float)acc, ws[c] * sx, out[i][c / 16][c % 16]);
            }
        }
        (void)pf;
        (void)pfstep;
#endif
    }
    cpu_rows_store(MR, o, ldo, out, bias, ro, nj);
}

#define CPU_ROWS_QTILE_1(M, Q4, name)                                                          \
    static void name(float *o, int ldo, const void *x, int ldx, const void *panel,             \
                     const float *bias, const float *ro, int nj, int kn, const char *pf,       \
                     size_t pfstep)                                                            \
    {                                                                                          \
        cpu_rows_qtile(M, Q4, o, ldo, x, ldx, panel, bias, ro, nj, kn, pf, pfstep);            \
    }
#define CPU_ROWS_QTILE_FN(M)                                                                   \
    CPU_ROWS_QTILE_1(M, 0, cpu_rows_qtile##M)                                                  \
    CPU_ROWS_QTILE_1(M, 1, cpu_rows_q4tile##M)
CPU_ROWS_QTILE_FN(1)
CPU_ROWS_QTILE_FN(2)
CPU_ROWS_QTILE_FN(3)
CPU_ROWS_QTILE_FN(4)
CPU_ROWS_QTILE_FN(5)
CPU_ROWS_QTILE_FN(6)
#define CPU_ROWS_QTILES(t) {NULL, t##1, t##2, t##3, t##4, t##5, t##6}

/* [dtype][0][MR]: tiles reading the panel from L2; [dtype][1][MR]: a
 * panel's first tile, reading it from memory (every tile prefetches;
 * W_Q8's and W_Q4's are the same either way) */
static cpu_rows_tile_fn *const cpu_rows_tiles[4][2][CPU_ROWS_MR + 1] = {
    {CPU_ROWS_TILES(cpu_rows_tile), CPU_ROWS_TILES(cpu_rows_ptile)},
    {CPU_ROWS_TILES(cpu_rows_btile), CPU_ROWS_TILES(cpu_rows_bptile)},
    {CPU_ROWS_QTILES(cpu_rows_qtile), CPU_ROWS_QTILES(cpu_rows_qtile)},
    {CPU_ROWS_QTILES(cpu_rows_q4tile), CPU_ROWS_QTILES(cpu_rows_q4tile)}};

/* Rows of inputs per pass over the weights (their panels stay in L2
 * while every tile of the block reads them). */
#define CPU_ROWS_NBLOCK 96

/* The tiles of rows nb..ne-1 (their inputs at xs, row stride ldx), the np
 * panels shared out over the team this runs in: each thread one contiguous
 * run of them, a single sequential stream of weights, which the
 * prefetchers follow at full speed (panels handed out one by one
 * interleave the threads' streams). The rows are cut into as few tiles
 * as CPU_ROWS_MR allows, of sizes as even as can be (16 rows: 8 + 8, not
 * 12 + 4): a tile of 4 rows has 8 accumulator chains, too few to hide
 * vdpbf16ps's 6 cycles (measured on Zen 5, 2 per cycle) or to leave the
 * FMAs' 4 any slack. One thread, panels in L2, C = 512, OC = 1024: f32
 * 16 rows 241 -> 250 GFLOP/s, 13 rows 205 -> 239; bf16 16 rows 420 ->
 * 469, 13 rows 357 -> 430. I > 0: the panels are cpu_rows_pack_glu's,
 * out is h: (N,I) = silu(gate) * up, the tiles' gate and up going through
 * cpu_swiglu_forward (bitwise the op on cpu_matmul_rows_forward's
 * outputs); otherwise out: (N,OC). */
static void cpu_rows_block(float *out, const void *xs, int ldx, const void *packed,
                           enum w_dtype dt, const float *bias, const float *resid, int nb,
                           int ne, int OC, int I, int np, int C)
{
    const int kn = cpu_rows_kn(C, dt);
    const int maxmr = dt == W_Q8 || dt == W_Q4 ? CPU_ROWS_MR_Q8 : CPU_ROWS_MR;
    const size_t pbytes = cpu_rows_panel_bytes(C, dt), kbytes = pbytes / kn;
    const int rows = ne - nb, nt = (rows + maxmr - 1) / maxmr;
    const int mr0 = (rows + nt - 1) / nt;
    #pragma omp for schedule(static)
    for (int p = 0; p < np; p++) {
        const char *panel = (const char *)packed + (size_t)p * pbytes;
        /* The prefetch front, in bytes past the panel's start: at the share
         * w of the panel's multiply-adds done, PFD rows + w of a panel, so
         * that memory is read at one even pace through every tile. The
         * first tile alone prefetching left the stream idle while the
         * later ones ran from L2: with 16 rows then tiles of 12 and 4, the
         * matmuls of a step of small measured 1.97-2.02 -> 1.77-1.88 ms
         * (best of 200, 8 runs alternated). The first tile reads the
         * panel as it goes, so the front starts as far ahead as the later
         * tiles' share of a panel. One row: PFD rows ahead, as before. */
        size_t front = (size_t)CPU_ROWS_PFD * kbytes + pbytes / rows * (rows - mr0);
        for (int n = nb, mr; xs && n < ne; n += mr) {
            mr = ne - n < mr0 ? ne - n : mr0;
            cpu_rows_tile_fn *tile = cpu_rows_tiles[dt][n == nb][mr];
            const void *x = (const uint32_t *)xs + (size_t)(n - nb) * ldx;
            /* bytes per k, rounded up to 8 (the front gains a little) */
            const size_t pfstep = (kbytes * mr + 8 * rows - 1) / (8 * rows) * 8;
            const char *pf = panel + front;
            front += pbytes * mr / rows;
            if (I <= 0) {
                const int j0 = p * CPU_PANEL;
                tile(out + (size_t)n * OC + j0, OC, x, ldx, panel, bias ? bias + j0 : NULL,
                     resid ? resid + (size_t)n * OC + j0 : NULL,
                     OC - j0 < CPU_PANEL ? OC - j0 : CPU_PANEL, kn, pf, pfstep);
                continue;
            }
            /* rows of [gate 16 | up 16], then their SwiGLU */
            float gu[CPU_ROWS_MR * CPU_PANEL];
            tile(gu, CPU_PANEL, x, ldx, panel, NULL, NULL, CPU_PANEL, kn, pf, pfstep);
            const int j0 = p * 16, nj = I - j0 < 16 ? I - j0 : 16;
            for (int i = 0; i < mr; i++)
                cpu_swiglu_forward(out + (size_t)(n + i) * I + j0, gu + i * CPU_PANEL,
                                   gu + i * CPU_PANEL + 16, 1, nj);
        }
    }
}

/* One input row as W_BF16's, W_Q8's or W_Q4's tiles read it. */
static void cpu_rows_convert(uint32_t *xb, const float *x, int C, enum w_dtype dt)
{
    if (dt == W_Q8 || dt == W_Q4) cpu_rows_q8_row(xb, x, C, dt == W_Q8 ? 128 : 8);
    else cpu_rows_bf16_row((uint16_t *)xb, x, C);
}

/* Row blocks of N (cpu_rows_block each), in a team of their own or in
 * team_run's. W_BF16 and W_Q8 convert the block's inputs first (bf16
 * pairs, int8 blocks with their scales: cpu_rows_convert): the team
 * together, then a barrier; in team_run's team (decode steps, a few rows)
 * each thread all of them for itself, without the barrier (for q8 a
 * shared copy behind a barrier measured no faster at 16 rows). */
static void cpu_rows_run(float *out, const float *inp, const void *packed, enum w_dtype dt,
                         const float *bias, const float *resid, int N, int C, int OC, int I)
{
    const int np = cpu_rows_panels(OC, I);
    const size_t outs = I > 0 ? (size_t)2 * I : (size_t)OC;
    /* the inputs as the tiles read them: W_F32 as they are, else a
     * converted copy of a block of rows, ldx dwords each */
    const int team = cpu_in_team(), conv = dt != W_F32;
    const int ldx = dt == W_BF16 ? cpu_rows_kn(C, dt) : conv ? 10 * cpu_q8_blocks(C) : C;
    uint32_t *xb = NULL;
    if (conv) {
        const int rows = N < CPU_ROWS_NBLOCK ? N : CPU_ROWS_NBLOCK;
        xb = aligned_alloc(64, ((size_t)rows * ldx * 4 + 63) / 64 * 64);
        if (!xb) {
            fprintf(stderr, "kernels/cpu/cpu_decode.c: out of memory for %d %s input "
                    "rows; matmul not computed\n", rows, dt == W_BF16 ? "bf16" : "int8");
            if (!team) return;  /* in a team: no tiles (xs NULL), the barriers met */
        }
    }
    for (int nb = 0; nb < N; nb += CPU_ROWS_NBLOCK) {
        const int ne = N - nb < CPU_ROWS_NBLOCK ? N : nb + CPU_ROWS_NBLOCK;
        const void *xs = conv ? (const void *)xb : (const void *)(inp + (size_t)nb * C);
        if (team) {
            for (int n = nb; xb && n < ne; n++)
                cpu_rows_convert(xb + (size_t)(n - nb) * ldx, inp + (size_t)n * C, C, dt);
            cpu_rows_block(out, xs, ldx, packed, dt, bias, resid, nb, ne, OC, I, np, C);
            continue;
        }
        const int par = (size_t)(ne - nb) * outs * C >= (size_t)CPU_PAR_MIN * 16;
        #pragma omp parallel if (par)
        {
            if (conv) {
                #pragma omp for schedule(static)
                for (int n = nb; n < ne; n++)
                    cpu_rows_convert(xb + (size_t)(n - nb) * ldx, inp + (size_t)n * C, C, dt);
            }
            cpu_rows_block(out, xs, ldx, packed, dt, bias, resid, nb, ne, OC, I, np, C);
        }
    }
    free(xb);
}

/* out: (N,OC) = inp: (N,C) @ weight^T [+ bias: (OC)] [+ resid: (N,OC)],
 * weight packed by cpu_rows_pack. Every output is the fixed chain of
 * cpu_rows_tile, so a row's result never depends on N, its place in the
 * batch or the thread count (see backend.h). */
void cpu_matmul_rows_forward(float *out, const float *inp, const void *packed, enum w_dtype dt,
                             const float *bias, const float *resid, int N, int C, int OC)
{
    cpu_rows_run(out, inp, packed, dt, bias, resid, N, C, OC, 0);
}

/* h: (N,I) = silu(inp @ gate^T) * (inp @ up^T), weights packed by
 * cpu_rows_pack_glu. */
void cpu_matmul_rows_glu_forward(float *h, const float *inp, const void *packed,
                                 enum w_dtype dt, int N, int C, int I)
{
    cpu_rows_run(h, inp, packed, dt, NULL, NULL, N, C, 0, I);
}
