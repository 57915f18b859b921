/* kernels/backend.h — the one interface between the model and the math.
 * Every op a Llama/Qwen2 model needs for training and inference, as a table of
 * function pointers over flat fp32 buffers (llm.c style). The CPU backend
 * (kernels/cpu/) is the reference; a CUDA backend fills the same table.
 *
 * Conventions for every op:
 *  - Row-major, contiguous unless a stride is given. N = number of tokens
 *    (B*T flattened), C = channels. Linear weights use the Hugging Face /
 *    PyTorch layout (out_features, in_features): out = inp @ W^T + b.
 *  - Backward ops ACCUMULATE (+=) into every gradient they write (dinp,
 *    dweight, dbias, ...). The caller zeroes gradient buffers when needed.
 *  - Buffers are borrowed; ops never keep pointers after returning.
 *  - Pointers are device pointers for the backend (host memory on CPU); use
 *    alloc/free/upload/download to move data.
 */
#ifndef AHA_BACKEND_H
#define AHA_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Element type of a paged KV cache: fp32, IEEE binary16 (half the memory
 * and bandwidth; llama.cpp's default cache type), or KV_Q8: int8 with one
 * fp32 scale per key or value vector (one kv head at one position),
 * element = q * scale, scale = max|x| / 127, q = x / scale rounded to
 * nearest even (x clamped to +-65504 first, NaN stored as 0): a quarter of
 * fp32's bytes plus the scales, as llama.cpp's q8_0 cache and vLLM's fp8
 * one halve binary16's. */
enum kv_dtype { KV_F32, KV_F16, KV_Q8 };
/* Bytes of one element of type dt (KV_Q8: without its scale). */
static inline size_t kv_dtype_size(enum kv_dtype dt)
{
    return dt == KV_F16 ? 2 : dt == KV_Q8 ? 1 : 4;
}
/* Bytes of one kv head's key and value at one position, scales included. */
static inline size_t kv_head_bytes(enum kv_dtype dt, int D)
{
    return 2 * ((size_t)D * kv_dtype_size(dt) + (dt == KV_Q8 ? sizeof(float) : 0));
}

/* Element type of the generation engine's packed weights
 * (matmul_rows_forward): fp32, or bfloat16 (half the bytes a decode step
 * streams). With W_BF16 the inputs are rounded to bfloat16 as well and
 * the products summed in fp32: the arithmetic of a bf16 model on a GPU
 * (vLLM's --dtype bfloat16) and of AVX512_BF16's vdpbf16ps. W_Q8: int8,
 * the weights and each matmul's inputs in blocks of 32 along the sum, each
 * block with one fp32 scale (max |x| / 127; x * (127 / max |x|) rounded to
 * nearest even), as llama.cpp multiplies q8_0 weights with q8_0 inputs on
 * the CPU: 1.125 bytes a weight. A block's integer products are summed
 * exactly, then scaled by both scales and added to the fp32 output, block
 * by block. W_Q4: 4-bit weights, llama.cpp's q4_0 arithmetic: each block
 * of 32 weights with one fp32 scale d = m / -8, m its value of largest
 * magnitude (the first of equals), weights q = min(15, floor(x * (1 / d) + 8.5))
 * standing for (q - 8) d; the inputs as W_Q8's. 0.625 bytes a weight. */
enum w_dtype { W_F32, W_BF16, W_Q8, W_Q4 };

/* bfloat16 as bits (W_BF16's rounding, and safetensors' BF16): the high
 * half of the fp32 bits rounded to nearest even, NaN kept quiet,
 * subnormals kept; PyTorch's .bfloat16(). */
static inline uint16_t bf16_from_f32(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)(u >> 16 | 0x40u);
    return (uint16_t)((u + 0x7fffu + (u >> 16 & 1u)) >> 16);
}

static inline float bf16_to_f32(uint16_t h)
{
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* IEEE binary16 as bits (the KV cache's KV_F16 elements, safetensors'
 * F16): exact widening, NaNs coming out quiet; narrowing rounded to
 * nearest even, overflow to +-inf, NaN kept; the F16C instructions'
 * results. */
static inline float f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    uint32_t bits;
    float f;
    if (e == 0x1f) {
        bits = sign | 0x7f800000u | m << 13 | (m ? 0x400000u : 0);
    } else if (e != 0) {
        bits = sign | (e + 112) << 23 | m << 13;
    } else {
        f = (float)m * 0x1p-24f;            /* subnormal (or zero): exact */
        memcpy(&bits, &f, sizeof bits);
        bits |= sign;
    }
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline uint16_t f16_from_f32(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    const uint16_t sign = (uint16_t)(x >> 16 & 0x8000u);
    x &= 0x7fffffffu;
    if (x > 0x7f800000u) return sign | 0x7e00u | (uint16_t)(x >> 13 & 0x3ffu);  /* NaN */
    if (x >= 0x477ff000u) return sign | 0x7c00u;        /* >= 65520 rounds to inf */
    if (x < 0x38800000u) {
        /* below 2^-14: a multiple of 2^-24, rounded to nearest even (the
         * scaling by 2^24 is exact; 1024 is the smallest normal's bits) */
        float a;
        memcpy(&a, &x, sizeof a);
        a *= 0x1p24f;
        uint32_t n = (uint32_t)a;
        const float rem = a - (float)n;
        n += rem > 0.5f || (rem == 0.5f && (n & 1u));
        return sign | (uint16_t)n;
    }
    uint32_t h = (x >> 13) - (112u << 10), rem = x & 0x1fffu;
    h += rem > 0x1000u || (rem == 0x1000u && (h & 1u));  /* a carry bumps the exponent */
    return sign | (uint16_t)h;
}

struct backend {
    const char *name;     /* "cpu", "cuda" */

    /* Human-readable description of the math library and the kernel it
     * picked on this machine, e.g. "oneDNN 2.6.3 sgemm (isa avx512_core_amx)".
     * Returns a static string. */
    const char *(*describe)(void);

    /* Memory: alloc returns zeroed memory aligned to 64 bytes, or NULL. */
    void *(*alloc)(size_t nbytes);
    void (*free)(void *p);
    void (*upload)(void *dst_dev, const void *src_host, size_t nbytes);
    void (*download)(void *dst_host, const void *src_dev, size_t nbytes);
    void (*zero)(void *p, size_t nbytes);
    /* device to device, bytes as they are */
    void (*copy)(void *dst_dev, const void *src_dev, size_t nbytes);
    /* The bytes [p, p + nbytes) of an alloc'd buffer are no longer needed:
     * the backend may give their memory back (later reads see zeros or
     * the old bytes; the buffer is still freed with free). NULL: keeps
     * it. */
    void (*discard)(void *p, size_t nbytes);

    /* out: (N,OC) = inp: (N,C) @ weight^T: (C,OC) [+ bias: (OC) or NULL].
     * beta: 0 overwrites out, 1 accumulates into it. */
    void (*matmul_forward)(float *out, const float *inp, const float *weight,
                           const float *bias, int N, int C, int OC, float beta);
    /* dinp: (N,C) += dout @ weight; dweight: (OC,C) += dout^T @ inp;
     * dbias: (OC) += column sums of dout. Any of dinp, dweight, dbias may be
     * NULL (skipped). dout: (N,OC), inp: (N,C), weight: (OC,C). */
    void (*matmul_backward)(float *dinp, float *dweight, float *dbias,
                            const float *dout, const float *inp,
                            const float *weight, int N, int C, int OC);

    /* General strided batched-free GEMM for the rest (attention):
     * C: (M,N) = alpha * op(A) @ op(B) + beta * C, op = transpose if trans*
     * is nonzero; lda/ldb/ldc are row strides in elements. */
    void (*gemm)(int transa, int transb, int M, int N, int K, float alpha,
                 const float *A, int lda, const float *B, int ldb,
                 float beta, float *C, int ldc);

    /* out: (N,C) = wte[tokens[i]] ; tokens: (N), wte: (V,C).
     * Tokens are validated by the caller (0 <= t < V). */
    void (*embedding_forward)(float *out, const int32_t *tokens,
                              const float *wte, int N, int C);
    /* dwte: (V,C) += scatter of dout: (N,C) by tokens. */
    void (*embedding_backward)(float *dwte, const float *dout,
                               const int32_t *tokens, int N, int C);

    /* RMSNorm as Hugging Face LlamaRMSNorm/Qwen2RMSNorm:
     * out = weight * (x * rsqrt(mean(x^2) + eps)), computed in fp32.
     * out: (N,C), rstd: (N) saved for backward (may be NULL at inference),
     * inp: (N,C), weight: (C). out may not alias inp. */
    void (*rmsnorm_forward)(float *out, float *rstd, const float *inp,
                            const float *weight, float eps, int N, int C);
    /* dinp: (N,C) +=, dweight: (C) +=; dout: (N,C), inp: (N,C),
     * weight: (C), rstd: (N) from the forward. */
    void (*rmsnorm_backward)(float *dinp, float *dweight, const float *dout,
                             const float *inp, const float *weight,
                             const float *rstd, int N, int C);

    /* Rotary embedding, Hugging Face rotate_half convention (the two halves
     * of each head, not interleaved pairs):
     *   theta_j(p) = pos[n] * inv_freq[j], j < D/2 (product in fp32)
     *   out[..., j]       = x[j] * cos - x[j + D/2] * sin
     *   out[..., j + D/2] = x[j + D/2] * cos + x[j] * sin
     * rope_cos_sin computes the rotations once per forward, as HF does, for
     * every layer to read: cs: (N,D), row n = [cos theta_j | sin theta_j].
     * pos: (N) absolute positions (a KV-cache offset is just larger
     * positions); inv_freq: (D/2), already including any rope scaling. */
    void (*rope_cos_sin)(float *cs, const int32_t *pos, const float *inv_freq, int N, int D);
    /* x: (N,H,D) with row stride `stride` elements between tokens (so q/k
     * can be rotated inside a fused qkv buffer); in place; cs from
     * rope_cos_sin. */
    void (*rope_forward)(float *x, const float *cs, int N, int H, int D, int stride);
    /* In place: dx = R(-theta) dx (the transpose of the rotation). Not
     * accumulating: it maps the gradient of the rotated tensor to the
     * gradient of the unrotated one in the same buffer. */
    void (*rope_backward)(float *dx, const float *cs, int N, int H, int D, int stride);

    /* Causal self-attention with grouped-query heads (NH query heads,
     * NKV key/value heads, NH % NKV == 0, query head h uses kv head
     * h / (NH/NKV), as Hugging Face repeat_kv). Scale 1/sqrt(D).
     * q: (B,T,NH,D) row stride qs, k,v: (B,T,NKV,D) row strides ks, vs
     * (strides in elements between consecutive tokens, so they may live
     * inside one fused qkv buffer). out: (B,T,NH,D) contiguous.
     * att: (B,NH,T,T) saved softmax probabilities for backward (rows above
     * the diagonal are zero).
     * seg: (B,T) or NULL. NULL is plain causal attention. Otherwise several
     * documents are packed in each row (SFT packing, as TRL's padding-free
     * packing with flash-attention varlen) and seg[b*T+t] is the index,
     * within row b, of the first token of t's document: query t attends to
     * keys j with seg[b*T+t] <= j <= t only, so no document sees another.
     * Needs 0 <= seg[b*T+t] <= t; seg is backend memory like pos in
     * rope_forward. Masked probabilities are exact zeros in
     * att, so attention_backward (which reads only att for the pattern)
     * gives masked pairs zero gradient with no argument of its own. */
    void (*attention_forward)(float *out, float *att, const float *q, int qs,
                              const float *k, int ks, const float *v, int vs,
                              const int32_t *seg, int B, int T, int NH, int NKV,
                              int D);
    /* dq, dk, dv += (same layouts and strides as q, k, v); dout: (B,T,NH,D),
     * att from the forward (segmented or not). */
    void (*attention_backward)(float *dq, float *dk, float *dv,
                               const float *dout, const float *att,
                               const float *q, const float *k, const float *v,
                               int qs, int ks, int vs,
                               int B, int T, int NH, int NKV, int D);

    /* SwiGLU: out = silu(gate) * up, silu(x) = x * sigmoid(x).
     * out, gate, up: (N,I). */
    void (*swiglu_forward)(float *out, const float *gate, const float *up,
                           int N, int I);
    /* dgate, dup: (N,I) +=. */
    void (*swiglu_backward)(float *dgate, float *dup, const float *dout,
                            const float *gate, const float *up, int N, int I);

    /* out = a + b, n elements; out may alias a or b. */
    void (*add)(float *out, const float *a, const float *b, size_t n);
    /* y += alpha * x */
    void (*axpy)(float *y, const float *x, float alpha, size_t n);

    /* Fused log-softmax + target gather over rows of logits: (N,V).
     * logprob: (N) = log softmax(logits)[targets[i]]; lse: (N) the row's
     * log-sum-exp (saved for backward). targets[i] < 0 means ignored:
     * logprob[i] = 0. Numerically stable (max-subtracted). */
    void (*logprob_forward)(float *logprob, float *lse, const float *logits,
                            const int32_t *targets, int N, int V);
    /* In place: logits: (N,V) is overwritten with d(loss)/d(logits) where
     * d(loss)/d(logprob[i]) = dlogprob[i]:
     *   dlogits[i,v] = dlogprob[i] * (onehot(targets[i])[v] - softmax[i,v]).
     * Rows with targets[i] < 0 become zero. Not accumulating (in place). */
    void (*logprob_backward)(float *logits, const float *lse,
                             const int32_t *targets, const float *dlogprob,
                             int N, int V);

    /* Sum of squares of x (n elements), accumulated in double. */
    double (*sumsq)(const float *x, size_t n);
    /* x *= s */
    void (*scale)(float *x, float s, size_t n);

    /* AdamW (Loshchilov & Hutter 2019, decoupled weight decay), exactly as
     * torch.optim.AdamW: p *= 1 - lr*wd; m = b1*m + (1-b1)*g;
     * v = b2*v + (1-b2)*g^2; p -= (lr / (1-b1^t)) * m / (sqrt(v)/sqrt(1-b2^t) + eps).
     * t is the 1-based step count. n elements. */
    void (*adamw)(float *p, const float *g, float *m, float *v, size_t n,
                  float lr, float beta1, float beta2, float eps,
                  float weight_decay, int t);

    /* ---- Decoding with a paged KV cache (engine/generate, engine/kv_cache).
     * The cache of one layer is a pool of blocks of bs positions, elements
     * of type dt (offsets and strides below count elements); block b
     * holds the keys of kv head g at kv + b*block_stride + g*bs*D as (D,bs)
     * (transposed: component d of the bs positions together) and the
     * values at the same place + vofs as (bs,D); KV_Q8's scales, fp32, at
     * kv + b*block_stride + 2*vofs bytes: the keys' (NKV,bs), then the
     * values' (NKV,bs). block_tables: (S, max_blocks)
     * block ids of each sequence in position order. Row n of a call belongs
     * to sequence seq[n] (0 <= seq[n] < S) at absolute position pos[n]. */

    /* Stores the keys k: (N,NKV,D) row stride ks and values v: (N,NKV,D)
     * row stride vs of N new tokens at their (seq, pos) slots of the cache;
     * KV_F16 rounds to nearest even, saturating at +-65504; KV_Q8 as said
     * at enum kv_dtype. */
    void (*kv_cache_write)(void *kv, enum kv_dtype dt, size_t block_stride, size_t vofs,
                           const int32_t *block_tables, int max_blocks,
                           const int32_t *seq, const int32_t *pos,
                           const float *k, int ks, const float *v, int vs,
                           int N, int NKV, int D, int bs);
    /* Causal GQA attention of N query rows against the cache: row n attends
     * to positions 0..pos[n] of its sequence (its own K/V already written),
     * scale 1/sqrt(D), query head h uses kv head h / (NH/NKV). Rows of one
     * sequence may be several (chunked prefill) or one (decode step); the
     * result equals attention_forward on the whole sequence, row by row,
     * with the keys and values as stored (fp32 arithmetic throughout).
     * q: (N,NH,D) row stride qs; out: (N,NH,D) contiguous. */
    void (*attention_paged_forward)(float *out, const float *q, int qs,
                                    const void *kv, enum kv_dtype dt, size_t block_stride,
                                    size_t vofs, const int32_t *block_tables,
                                    int max_blocks, const int32_t *seq,
                                    const int32_t *pos, int N, int NH,
                                    int NKV, int D, int bs);
    /* A generation step's attention in one op: qkv: (N, (NH + 2 NKV) D)
     * row stride qs holds each row's [q heads | k heads | v heads]; the q
     * and k heads rotated by cs (rope_cos_sin's rows; NULL: none), the
     * keys and values stored (kv_cache_write), then
     * attention_paged_forward; bitwise those ops in turn. qkv is not
     * written. The engine's decode path calls this, so that a backend can
     * store each new key where it is about to read it. */
    void (*attention_paged_step)(float *out, const float *qkv, int qs, const float *cs,
                                 void *kv, enum kv_dtype dt, size_t block_stride, size_t vofs,
                                 const int32_t *block_tables, int max_blocks,
                                 const int32_t *seq, const int32_t *pos, int N, int NH,
                                 int NKV, int D, int bs);
    /* The weight layout matmul_rows_forward reads: rows_pack writes an
     * (OC,C) row-major matrix into dst of rows_packed_bytes(C, OC, dt)
     * bytes (backend memory) as elements of type dt. */
    size_t (*rows_packed_bytes)(int C, int OC, enum w_dtype dt);
    void (*rows_pack)(void *dst, const float *weight, int C, int OC, enum w_dtype dt);
    /* out: (N,OC) = inp: (N,C) @ weight^T [+ bias: (OC) or NULL], weight
     * packed by rows_pack as dt: like matmul_forward (beta 0) but
     * batch-invariant: each output row is bitwise the same whatever N, the
     * row's place in the batch and the thread count, so a sequence decodes
     * identically alone or batched. W_BF16 rounds the inputs to bfloat16
     * too (see w_dtype). Tuned for decode batches (weights streamed once
     * per step). resid: (N,OC) or NULL (may be out): a residual added to
     * each output as it is stored, bitwise add(out, out, resid) after the
     * plain op, without a pass of its own. */
    void (*matmul_rows_forward)(float *out, const float *inp, const void *packed,
                                enum w_dtype dt, const float *bias, const float *resid, int N,
                                int C, int OC);
    /* A SwiGLU MLP's first half in one pass: h: (N,I) = swiglu_forward of
     * inp @ gate^T and inp @ up^T, bitwise as matmul_rows_forward then
     * swiglu_forward, with the (2I,C) matrix [gate; up] packed by
     * rows_pack_glu into rows_packed_bytes(C, 2 * I, dt) bytes. The engine
     * packs weights only for a backend with all five of these ops. */
    void (*rows_pack_glu)(void *dst, const float *weight, int C, int I, enum w_dtype dt);
    void (*matmul_rows_glu_forward)(float *h, const float *inp, const void *packed,
                                    enum w_dtype dt, int N, int C, int I);
    /* One team for a run of ops (NULL: none): runs fn(arg) on every
     * thread of the team (CPU: one OpenMP parallel region). Every thread
     * makes the same calls in fn, and rmsnorm_forward,
     * matmul_rows_forward, matmul_rows_glu_forward and
     * attention_paged_step then share the team as work-sharing loops,
     * each returning after a barrier with its outputs complete, instead of
     * starting a team each (a decode step of small starts ~40 at ~2.5 us
     * apiece). No other op may be called inside fn. */
    void (*team_run)(void (*fn)(void *arg), void *arg);
};

/* The CPU backend (oneDNN sgemm + OpenMP). Never NULL. */
const struct backend *backend_cpu(void);
/* The CUDA backend (cuBLAS + own kernels), compiled with `make CUDA=1`.
 * NULL when no device is usable. Until the CUDA issue lands it fills only
 * memory, matmul and vector ops; the other pointers are NULL. */
const struct backend *backend_cuda(void);

#ifdef __cplusplus
}
#endif

#endif
