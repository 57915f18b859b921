/* tests/unit/test_generate.c — the generation engine (engine/generate.c,
 * sampler.c, kv_cache.c) and the paged-attention ops (kernels/cpu/
 * cpu_decode.c): paged attention against attention_forward; cached
 * decoding against the full model_forward at every position; batch
 * independence of greedy and seeded outputs; n samples; stop strings
 * across tokens; cancellation; KV-memory refusal; sampler filters; random
 * mixtures of all of these against each request alone. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu/cpu.h"    /* cpu_f2h / cpu_h2f: the cache's rounding */
#include "generate.h"
#include "jsonl.h"
#include "json_guide.h"
#include "kv_cache.h"
#include "model.h"
#include "proc_status.h"
#include "rng.h"
#include "sampler.h"
#include "tokenizer.h"

/* Cached vs full forward: with an fp32 cache both run the same fp32 ops
 * except attention (per-row dot products vs sgemm blocks), so they agree to
 * rounding: |cached - full| <= GEN_ATOL + GEN_RTOL * |full|. A binary16
 * cache rounds every key and value by up to 2^-11 relative, which moves
 * the logits of these models by up to ~3e-2 (measured: 0.028 on
 * test_model, 0.007 on the fixtures): GEN_F16_ATOL/RTOL. */
#define GEN_ATOL 1e-4
#define GEN_RTOL 1e-4
#define GEN_F16_ATOL 5e-2
#define GEN_F16_RTOL 1e-2
/* A KV_Q8 cache rounds each key and value to within half of 1/127 of its
 * vector's largest magnitude, which moves the logits by up to ~0.4
 * (measured: 0.37 on test_model, 0.07-0.11 on the fixtures; the greedy
 * tokens still equal the full forward's argmax): GEN_Q8_ATOL/RTOL. */
#define GEN_Q8_ATOL 0.6
#define GEN_Q8_RTOL 5e-2
/* dtype bf16 rounds every weight and every matmul input to bfloat16
 * (2^-9 relative): the logits move by up to ~0.2 (measured against the
 * fp32 full forward: 0.17 on test_model, 0.07-0.09 on the fixtures). */
#define GEN_BF16_ATOL 0.3
#define GEN_BF16_RTOL 3e-2
/* dtype q8 rounds every weight and every matmul input to int8 steps of
 * 1/127 of their block's largest magnitude (W_Q8): the logits move by up
 * to ~0.7 (measured against the fp32 full forward: 0.69 on test_model,
 * 0.19-0.27 on the fixtures; the greedy tokens still equal its argmax). */
#define GEN_Q8W_ATOL 1.0
#define GEN_Q8W_RTOL 5e-2

/* The cache type and matmul path of the engines the tests build (the
 * engine's defaults unless a test asks for the other). */
static enum kv_dtype test_kv_dtype = KV_F16;
static bool test_batch_invariant = true;
static enum w_dtype test_dtype = W_F32;
static bool test_discard = false;
static bool test_prefix_cache = false;
static int test_spec_tokens = 0;
static struct model *test_spec_model = NULL;

static struct model_config test_cfg(int V)
{
    struct model_config c;
    memset(&c, 0, sizeof c);
    c.arch = MODEL_ARCH_QWEN2;
    c.vocab_size = V;
    c.hidden_size = 32;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = 8;
    c.intermediate_size = 48;
    c.max_position_embeddings = 128;
    c.rope_theta = 10000;
    c.rms_norm_eps = 1e-6f;
    c.tie_word_embeddings = true;
    c.qkv_bias = true;
    c.bos_token_id = c.eos_token_id = -1;
    return c;
}

static void q4_round_trip(struct model *m);

static struct model *test_model(int V, uint64_t seed)
{
    struct model_config c = test_cfg(V);
    char err[256];
    struct model *m = model_new(&c, backend_cpu(), err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    /* large weights so that the distributions are far from uniform */
    model_init_random(m, seed, 0.5f);
    if (test_dtype == W_Q4) q4_round_trip(m);
    return m;
}

/* ------------------------------------------------------------ collector */

#define MAXS 8          /* samples per request */
#define MAXR 8          /* requests per test */
#define MAXT 64         /* tokens per sample */

struct sample_out {
    int32_t tok[MAXT];
    float lp[MAXT];
    float *logits[MAXT];    /* copies of the TOKEN events' logits */
    int n;
    char text[1024];        /* concatenated TOKEN texts */
    size_t text_len;
    char pieces[MAXT][64];  /* each TOKEN's text */
    bool done;
    enum gen_finish finish;
    char full[1024];
    int completion_tokens, done_tokens, cached_tokens;
};

struct collector {
    int V;
    bool keep_logits;
    struct sample_out s[MAXR][MAXS];
    float prompt_lp[128];
    int32_t prompt_top[128][20];
    float prompt_top_lp[128][20];
    int n_prompt, n_prompt_top;
    int prompt_events, done_events;
};

static void on_event(void *ctx, const struct gen_event *ev)
{
    struct collector *c = ctx;
    int r = (int)(intptr_t)ev->user;
    cr_assert(r >= 0 && r < MAXR && ev->index >= 0 && ev->index < MAXS);
    struct sample_out *o = &c->s[r][ev->index];
    if (ev->kind == GEN_EVENT_PROMPT) {
        c->prompt_events++;
        c->n_prompt = ev->n_prompt;
        c->n_prompt_top = ev->n_prompt_top;
        for (int i = 0; i < ev->n_prompt && i < 128; i++) {
            c->prompt_lp[i] = ev->prompt_logprobs[i];
            for (int k = 0; k < ev->n_prompt_top; k++) {
                c->prompt_top[i][k] = ev->prompt_top_ids[(size_t)i * ev->n_prompt_top + k];
                c->prompt_top_lp[i][k] = ev->prompt_top_logprobs[(size_t)i * ev->n_prompt_top + k];
            }
        }
    } else if (ev->kind == GEN_EVENT_TOKEN) {
        cr_assert(!o->done, "token after done");
        cr_assert(o->n < MAXT);
        o->tok[o->n] = ev->token;
        o->lp[o->n] = ev->logprob;
        if (c->keep_logits) {
            o->logits[o->n] = malloc((size_t)c->V * sizeof(float));
            memcpy(o->logits[o->n], ev->logits, (size_t)c->V * sizeof(float));
        }
        cr_assert(ev->text_len < 64);
        memcpy(o->pieces[o->n], ev->text, ev->text_len);
        o->pieces[o->n][ev->text_len] = 0;
        cr_assert(o->text_len + ev->text_len < sizeof o->text);
        memcpy(o->text + o->text_len, ev->text, ev->text_len);
        o->text_len += ev->text_len;
        o->n++;
    } else {
        cr_assert(!o->done, "two done events");
        c->done_events++;
        o->done = true;
        o->finish = ev->finish;
        o->completion_tokens = ev->completion_tokens;
        cr_assert(ev->full_len < sizeof o->full);
        memcpy(o->full, ev->full_text, ev->full_len);
        o->full[ev->full_len] = 0;
        o->done_tokens = ev->completion_tokens;
        o->cached_tokens = ev->cached_tokens;
        for (int i = 0; i < ev->completion_tokens && i < o->n; i++)
            cr_assert_eq(ev->tokens[i], o->tok[i], "done tokens differ from streamed ones");
    }
}

static void collector_free(struct collector *c)
{
    for (int r = 0; r < MAXR; r++)
        for (int i = 0; i < MAXS; i++)
            for (int t = 0; t < c->s[r][i].n; t++) free(c->s[r][i].logits[t]);
}

static void run_to_idle(struct gen_engine *e)
{
    char err[256];
    for (int step = 0; step < 10000; step++) {
        int rc = gen_step(e, err, sizeof err);
        cr_assert_geq(rc, 0, "%s", err);
        if (rc == 0) return;
    }
    cr_assert_fail("engine never became idle");
}

static struct gen_engine *engine(struct model *m, const struct tokenizer *tok,
                                 struct collector *c, int bs, int max_seqs, int step_tokens,
                                 size_t kv_bytes)
{
    struct gen_config cfg;
    gen_config_default(&cfg);
    cfg.block_size = bs;
    cfg.max_seqs = max_seqs;
    cfg.max_step_tokens = step_tokens;
    cfg.kv_bytes = kv_bytes ? kv_bytes : (size_t)4 << 20;   /* small: zeroed per engine */
    cfg.kv_dtype = test_kv_dtype;
    cfg.batch_invariant = test_batch_invariant;
    cfg.dtype = test_dtype;
    cfg.discard_matrices = test_discard;
    cfg.prefix_cache = test_prefix_cache;
    cfg.spec_tokens = test_spec_tokens;
    cfg.spec_ngram_min = 1;
    cfg.spec_ngram_max = 3;
    cfg.spec_max_seqs = 4;
    cfg.spec_model = test_spec_model;
    char err[256];
    c->V = m->cfg.vocab_size;
    struct gen_engine *e = gen_engine_new(m, tok, &cfg, on_event, c, err, sizeof err);
    cr_assert_not_null(e, "%s", err);
    return e;
}

static void submit(struct gen_engine *e, const char *id, int user, const int32_t *prompt,
                   int P, int n, int max_tokens, float temp, bool seeded, uint64_t seed)
{
    struct gen_request r;
    gen_request_default(&r);
    r.id = id;
    r.user = (void *)(intptr_t)user;
    r.prompt = prompt;
    r.n_prompt = P;
    r.n = n;
    r.max_tokens = max_tokens;
    r.sampling.temperature = temp;
    r.has_seed = seeded;
    r.seed = seed;
    r.ignore_eos = true;
    char err[256];
    cr_assert_eq(gen_submit(e, &r, err, sizeof err), 0, "%s", err);
}

/* ------------------------------------------------------------ KV blocks */

/* Blocks are handed out lowest id first, also after frees (130 blocks: two
 * full bitmap words and a partial one), and every block is handed out
 * exactly once until the pool is empty. */
Test(generate, kv_blocks_lowest_first)
{
    char err[256];
    const size_t block = (size_t)2 * 2 * 1 * 4 * 8 * sizeof(float);    /* 2 layers, K+V, 1 head, bs 4, D 8 */
    struct kv_cache *kv = kv_cache_new(backend_cpu(), KV_F32, 2, 1, 8, 4, 130 * block, err, sizeof err);
    cr_assert_not_null(kv, "%s", err);
    cr_assert_eq(kv->n_blocks, 130);
    for (int i = 0; i < 130; i++) cr_assert_eq(kv_cache_block_alloc(kv), i);
    cr_assert_eq(kv_cache_block_alloc(kv), -1, "an empty pool handed out a block");
    kv_cache_block_unref(kv, 100);
    kv_cache_block_unref(kv, 7);
    kv_cache_block_ref(kv, 64);
    kv_cache_block_unref(kv, 64);               /* still referenced once */
    kv_cache_block_unref(kv, 129);
    cr_assert_eq(kv_cache_used(kv), 127);
    cr_assert_eq(kv_cache_block_alloc(kv), 7);
    cr_assert_eq(kv_cache_block_alloc(kv), 100);
    cr_assert_eq(kv_cache_block_alloc(kv), 129);
    cr_assert_eq(kv_cache_block_alloc(kv), -1);
    kv_cache_free(kv);
}

/* ---------------------------------------------------------- paged attention */

/* Paged attention of 2 sequences of T positions (cache in blocks of BS,
 * scattered block ids) against attention_forward: all rows at once, then
 * decode-shaped (the last row of each sequence, in reverse order). D of
 * 32/64/128 with BS a multiple of 16 takes the register-blocked kernel
 * (query heads 8, 4, 2 or 1 at a time: groups of 1..11 cover them all),
 * others the generic loop. A KV_F16 cache is checked against
 * attention_forward on keys and values rounded to binary16 (the attention
 * itself is fp32 either way), to the same tolerance; a KV_Q8 one against
 * keys and values quantized as q8_ref does. */

/* x (D floats at stride 1) as KV_Q8 stores it, dequantized in place:
 * scale = max|x| / 127, x = rint(x / scale) * scale (backend.h). */
static void q8_ref(float *x, int D)
{
    float amax = 0.0f;
    for (int d = 0; d < D; d++) amax = fmaxf(amax, fabsf(x[d]));
    const float scale = amax / 127.0f;
    for (int d = 0; d < D; d++) x[d] = scale > 0.0f ? rintf(x[d] / scale) * scale : 0.0f;
}

static void paged_attention_dt(enum kv_dtype dt, int D, int BS, int T, int NH, int NKV)
{
    const struct backend *be = backend_cpu();
    enum { B = 2 };
    const int NB = (T + BS - 1) / BS, Q = (NH + 2 * NKV) * D;
    float *qkv = malloc((size_t)B * T * Q * sizeof(float));
    float *ref = malloc((size_t)B * T * NH * D * sizeof(float));
    float *att = malloc((size_t)B * NH * T * T * sizeof(float));
    float *got = malloc((size_t)B * T * NH * D * sizeof(float));
    float *q2 = malloc((size_t)2 * Q * sizeof(float)), *out2 = malloc((size_t)2 * NH * D * sizeof(float));
    int32_t *tables = malloc((size_t)B * NB * sizeof(int32_t));
    int32_t *seq = malloc((size_t)B * T * sizeof(int32_t)), *pos = malloc((size_t)B * T * sizeof(int32_t));
    struct rng r;
    rng_seed(&r, 5);
    for (int i = 0; i < B * T * Q; i++) qkv[i] = (float)rng_normal(&r);
    float *kvr = malloc((size_t)B * T * Q * sizeof(float));    /* k, v as the cache holds them */
    for (int i = 0; i < B * T * Q; i++)
        kvr[i] = dt == KV_F16 && i % Q >= NH * D ? cpu_h2f(cpu_f2h(qkv[i])) : qkv[i];
    for (int n = 0; dt == KV_Q8 && n < B * T; n++)
        for (int h = 0; h < 2 * NKV; h++) q8_ref(kvr + (size_t)n * Q + (NH + h) * D, D);
    be->attention_forward(ref, att, qkv, Q, kvr + NH * D, Q, kvr + (NH + NKV) * D, Q, NULL,
                          B, T, NH, NKV, D);
    free(kvr);
    /* cache of 2 layers' worth of blocks; use layer 1 and scattered block ids */
    char err[256];
    const int nblocks = 2 * B * NB + 2;
    struct kv_cache *kv = kv_cache_new(be, dt, 2, NKV, D, BS,
                                       (size_t)nblocks * 2 * 2 * NKV * BS * D * sizeof(float), err,
                                       sizeof err);
    cr_assert_not_null(kv, "%s", err);
    for (int i = 0; i < B * NB; i++) tables[i] = 2 * (B * NB - 1 - i) + 1;    /* odd ids, reversed */
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) { seq[b * T + t] = b; pos[b * T + t] = t; }
    void *kvl = kv_cache_layer(kv, 1);
    /* keys/values written in two calls (prefill chunk then the rest) */
    be->kv_cache_write(kvl, dt, kv->block_stride, kv->vofs, tables, NB, seq, pos, qkv + NH * D, Q,
                       qkv + (NH + NKV) * D, Q, 9, NKV, D, BS);
    be->kv_cache_write(kvl, dt, kv->block_stride, kv->vofs, tables, NB, seq + 9, pos + 9,
                       qkv + 9 * Q + NH * D, Q, qkv + 9 * Q + (NH + NKV) * D, Q, B * T - 9, NKV, D, BS);
    /* all rows at once */
    be->attention_paged_forward(got, qkv, Q, kvl, dt, kv->block_stride, kv->vofs, tables, NB, seq,
                                pos, B * T, NH, NKV, D, BS);
    int bad = 0;
    for (int i = 0; i < B * T * NH * D; i++)
        bad += !(fabsf(got[i] - ref[i]) <= 1e-5f + 1e-4f * fabsf(ref[i]));
    cr_expect_eq(bad, 0, "%s D %d bs %d T %d heads %d/%d: %d of %d outputs differ (all rows)",
                 kv_dtype_name(dt), D, BS, T, NH, NKV, bad, B * T * NH * D);
    /* decode-shaped: only the last row of each sequence, reversed order */
    int32_t seq2[2] = {1, 0}, pos2[2] = {T - 1, T - 1};
    memcpy(q2, qkv + ((size_t)1 * T + T - 1) * Q, (size_t)Q * sizeof(float));
    memcpy(q2 + Q, qkv + (size_t)(T - 1) * Q, (size_t)Q * sizeof(float));
    be->attention_paged_forward(out2, q2, Q, kvl, dt, kv->block_stride, kv->vofs, tables, NB, seq2,
                                pos2, 2, NH, NKV, D, BS);
    bad = 0;
    for (int i = 0; i < NH * D; i++) {
        float r1 = ref[((size_t)1 * T + T - 1) * NH * D + i], r0 = ref[(size_t)(T - 1) * NH * D + i];
        bad += !(fabsf(out2[i] - r1) <= 1e-5f + 1e-4f * fabsf(r1));
        bad += !(fabsf(out2[NH * D + i] - r0) <= 1e-5f + 1e-4f * fabsf(r0));
    }
    cr_expect_eq(bad, 0, "%s D %d bs %d T %d: %d decode-row outputs differ", kv_dtype_name(dt), D,
                 BS, T, bad);
    /* a decode row is bitwise the same alone as in the batch of all rows */
    be->attention_paged_forward(out2, q2 + Q, Q, kvl, dt, kv->block_stride, kv->vofs, tables, NB,
                                seq2 + 1, pos2 + 1, 1, NH, NKV, D, BS);
    cr_expect(memcmp(out2, got + (size_t)(T - 1) * NH * D, (size_t)NH * D * sizeof(float)) == 0,
              "%s D %d bs %d T %d: decode row alone differs from the batched row", kv_dtype_name(dt),
              D, BS, T);
    kv_cache_free(kv);
    free(qkv); free(ref); free(att); free(got); free(q2); free(out2); free(tables); free(seq); free(pos);
}

static void paged_attention_heads(int D, int BS, int T, int NH, int NKV)
{
    paged_attention_dt(KV_F32, D, BS, T, NH, NKV);
    paged_attention_dt(KV_F16, D, BS, T, NH, NKV);
    paged_attention_dt(KV_Q8, D, BS, T, NH, NKV);
}

static void paged_attention_case(int D, int BS, int T) { paged_attention_heads(D, BS, T, 4, 2); }

/* attention_paged_step is bitwise rope_forward, kv_cache_write and
 * attention_paged_forward in turn: outputs and the whole cache. Two
 * sequences of T positions go in two steps, all rows but the last, then
 * the last (a decode step); a prompt of more than 16 rows is several work
 * runs of one sequence (the keys are all stored before any is read), one
 * of up to 16 rows or a decode row is a single run (stored by the run
 * itself). rope: with a RoPE table, or none. qkv is left as it was. */
static void paged_step_case(enum kv_dtype dt, int D, int BS, int T, int NH, int NKV, bool rope)
{
    const struct backend *be = backend_cpu();
    enum { B = 2 };
    const int NB = (T + BS - 1) / BS, Q = (NH + 2 * NKV) * D, N = B * T;
    float *qkv = malloc((size_t)N * Q * sizeof(float)), *rot = malloc((size_t)N * Q * sizeof(float));
    float *keep = malloc((size_t)N * Q * sizeof(float)), *cs = malloc((size_t)N * D * sizeof(float));
    float *want = malloc((size_t)N * NH * D * sizeof(float)), *got = malloc((size_t)N * NH * D * sizeof(float));
    float *inv_freq = malloc((size_t)D / 2 * sizeof(float));
    int32_t *tables = malloc((size_t)B * NB * sizeof(int32_t));
    int32_t *seq = malloc((size_t)N * sizeof(int32_t)), *pos = malloc((size_t)N * sizeof(int32_t));
    struct rng r;
    rng_seed(&r, 11);
    for (int i = 0; i < N * Q; i++) qkv[i] = (float)rng_normal(&r);
    memcpy(keep, qkv, (size_t)N * Q * sizeof(float));
    for (int j = 0; j < D / 2; j++) inv_freq[j] = powf(10000.0f, -2.0f * j / D);
    /* rows: sequence 0's positions 0..T-2, sequence 1's, then the two last */
    int n = 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T - 1; t++, n++) { seq[n] = b; pos[n] = t; }
    for (int b = 0; b < B; b++, n++) { seq[n] = b; pos[n] = T - 1; }
    be->rope_cos_sin(cs, pos, inv_freq, N, D);
    for (int i = 0; i < B * NB; i++) tables[i] = 2 * (B * NB - 1 - i) + 1;
    char err[256];
    const size_t bytes = (size_t)(2 * B * NB + 2) * 2 * 2 * NKV * BS * D * sizeof(float);
    struct kv_cache *ka = kv_cache_new(be, dt, 2, NKV, D, BS, bytes, err, sizeof err);
    struct kv_cache *kb = kv_cache_new(be, dt, 2, NKV, D, BS, bytes, err, sizeof err);
    cr_assert(ka && kb, "%s", err);
    const size_t pool = (size_t)ka->n_blocks * ka->block_stride * kv_dtype_size(dt);
    memset(ka->pool, 0, pool);
    memset(kb->pool, 0, pool);
    void *la = kv_cache_layer(ka, 1), *lb = kv_cache_layer(kb, 1);
    const int part[2][2] = {{0, B * (T - 1)}, {B * (T - 1), B}};    /* first row, rows */
    memcpy(rot, qkv, (size_t)N * Q * sizeof(float));
    for (int k = 0; k < 2; k++) {
        const int n0 = part[k][0], m = part[k][1];
        float *rq = rot + (size_t)n0 * Q;
        if (rope) be->rope_forward(rq, cs + (size_t)n0 * D, m, NH + NKV, D, Q);
        be->kv_cache_write(la, dt, ka->block_stride, ka->vofs, tables, NB, seq + n0, pos + n0,
                           rq + NH * D, Q, rq + (NH + NKV) * D, Q, m, NKV, D, BS);
        be->attention_paged_forward(want + (size_t)n0 * NH * D, rq, Q, la, dt, ka->block_stride,
                                    ka->vofs, tables, NB, seq + n0, pos + n0, m, NH, NKV, D, BS);
        be->attention_paged_step(got + (size_t)n0 * NH * D, qkv + (size_t)n0 * Q, Q,
                                 rope ? cs + (size_t)n0 * D : NULL, lb, dt, kb->block_stride,
                                 kb->vofs, tables, NB, seq + n0, pos + n0, m, NH, NKV, D, BS);
    }
    cr_expect(memcmp(got, want, (size_t)N * NH * D * sizeof(float)) == 0,
              "%s D %d bs %d T %d heads %d/%d rope %d: outputs differ from the three ops",
              kv_dtype_name(dt), D, BS, T, NH, NKV, rope);
    cr_expect(memcmp(ka->pool, kb->pool, pool) == 0,
              "%s D %d bs %d T %d heads %d/%d rope %d: the cache differs from kv_cache_write's",
              kv_dtype_name(dt), D, BS, T, NH, NKV, rope);
    cr_expect(memcmp(qkv, keep, (size_t)N * Q * sizeof(float)) == 0, "qkv was written");
    kv_cache_free(ka);
    kv_cache_free(kb);
    free(qkv); free(rot); free(keep); free(cs); free(want); free(got); free(inv_freq);
    free(tables); free(seq); free(pos);
}

Test(generate, paged_step_is_rope_store_attention)
{
    static const enum kv_dtype dts[] = {KV_F32, KV_F16, KV_Q8};
    for (int dt = 0; dt < 3; dt++) {
        const enum kv_dtype t = dts[dt];
        paged_step_case(t, 64, 16, 40, 8, 4, true);      /* prompts of 39 rows: 3 runs */
        paged_step_case(t, 64, 16, 13, 8, 4, true);      /* prompts of 12: one run each */
        paged_step_case(t, 32, 16, 30, 4, 2, false);     /* no rotation */
        paged_step_case(t, 8, 4, 21, 4, 2, true);        /* the plain kernel */
        paged_step_case(t, 64, 32, 50, 8, 2, true);      /* 4 query heads per kv head */
        paged_step_case(t, 32, 16, 19, 4, 4, true);      /* one (multi-head attention) */
    }
}

/* A run of R consecutive rows of one sequence (a prefill chunk, a
 * speculative step's drafts) attends bitwise as its rows one at a time
 * (decode rows): every start T0 from 1 to 140 (chunk groups of 4 x 16
 * positions ending inside and outside the run, pair tiles of 6 whose last
 * row ends chunks before the run's), R = 2, 5 and 16, f16 and q8, D 32 and
 * 64. The pool's unused blocks hold NaN, so a read past a sequence's
 * blocks shows. (A tile whose rows ended before a chunk group once
 * computed 4 chunks of it: reads past the table, scores written over the
 * next pair's.) */
Test(generate, paged_attention_run_is_its_rows)
{
    const struct backend *be = backend_cpu();
    enum { BS = 16, NH = 8, NKV = 4, RMAX = 16, TMAX = 140 + RMAX };
    const int NB = TMAX / BS + 1;
    static const enum kv_dtype dts[] = {KV_F16, KV_Q8};
    static const int Ds[] = {32, 64}, Rs[] = {2, 5, 16};
    struct rng r;
    rng_seed(&r, 5);
    for (int di = 0; di < 2; di++)
        for (int ti = 0; ti < 2; ti++) {
            const int D = Ds[di];
            const enum kv_dtype dt = dts[ti];
            char err[256];
            const size_t bytes = (size_t)(2 * NB + 2) * 2 * NKV * BS * D * sizeof(float);
            struct kv_cache *kv = kv_cache_new(be, dt, 1, NKV, D, BS, bytes, err, sizeof err);
            cr_assert(kv, "%s", err);
            const size_t pool = (size_t)kv->n_blocks * kv->block_stride * kv_dtype_size(dt);
            memset(kv->pool, 0xff, pool);   /* NaN halves, floats and scales */
            int32_t tables[NB], seq[RMAX], pos[RMAX];
            for (int i = 0; i < NB; i++) tables[i] = 2 * (NB - 1 - i) + 1;
            float *k = malloc((size_t)TMAX * NKV * D * sizeof(float));
            float *v = malloc((size_t)TMAX * NKV * D * sizeof(float));
            int32_t *allpos = malloc(TMAX * sizeof(int32_t)), *allseq = calloc(TMAX, sizeof(int32_t));
            for (int i = 0; i < TMAX * NKV * D; i++) { k[i] = (float)rng_normal(&r); v[i] = (float)rng_normal(&r); }
            for (int t = 0; t < TMAX; t++) allpos[t] = t;
            be->kv_cache_write(kv->pool, dt, kv->block_stride, kv->vofs, tables, NB, allseq, allpos,
                               k, NKV * D, v, NKV * D, TMAX, NKV, D, BS);
            float *q = malloc((size_t)RMAX * NH * D * sizeof(float));
            float *run = malloc((size_t)RMAX * NH * D * sizeof(float));
            float *one = malloc((size_t)RMAX * NH * D * sizeof(float));
            for (int i = 0; i < RMAX * NH * D; i++) q[i] = (float)rng_normal(&r);
            for (int T0 = 1; T0 <= 140; T0++)
                for (int ri = 0; ri < 3; ri++) {
                    const int R = Rs[ri];
                    for (int i = 0; i < R; i++) { seq[i] = 0; pos[i] = T0 - 1 + i; }
                    be->attention_paged_forward(run, q, NH * D, kv->pool, dt, kv->block_stride,
                                                kv->vofs, tables, NB, seq, pos, R, NH, NKV, D, BS);
                    for (int i = 0; i < R; i++)
                        be->attention_paged_forward(one + (size_t)i * NH * D, q + (size_t)i * NH * D,
                                                    NH * D, kv->pool, dt, kv->block_stride,
                                                    kv->vofs, tables, NB, seq + i, pos + i, 1, NH,
                                                    NKV, D, BS);
                    cr_assert(!memcmp(run, one, (size_t)R * NH * D * sizeof(float)),
                              "%s D %d: a run of %d rows from T0 = %d differs from its rows",
                              kv_dtype_name(dt), D, R, T0);
                }
            kv_cache_free(kv);
            free(k); free(v); free(allpos); free(allseq); free(q); free(run); free(one);
        }
}

Test(generate, paged_attention_matches_full) { paged_attention_case(8, 4, 13); }
Test(generate, paged_attention_matches_full_d64) { paged_attention_case(64, 4, 13); }
Test(generate, paged_attention_matches_full_d64_wide_blocks) { paged_attention_case(64, 32, 45); }
Test(generate, paged_attention_matches_full_d32_d128)
{
    paged_attention_case(32, 16, 37);
    paged_attention_case(128, 8, 21);
}
Test(generate, paged_attention_matches_full_query_groups)
{
    paged_attention_heads(64, 16, 40, 2, 2);      /* one query head per kv head */
    paged_attention_heads(64, 16, 33, 8, 2);      /* 4 */
    paged_attention_heads(32, 16, 50, 22, 2);     /* 11 = 8 + 2 + 1 */
    paged_attention_heads(128, 32, 70, 8, 1);     /* 8 */
    paged_attention_heads(64, 16, 16, 3, 1);      /* T exactly one block */
}

/* ---------------------------------------------- batch-invariant matmul */

/* bfloat16 rounding to nearest even, written apart from the kernel's (the
 * test data stays within the normal range) */
static float bf_round(float f)
{
    int e;
    const double m = frexp(f, &e);
    return (float)ldexp(rint(ldexp(m, 8)), e - 8);
}

/* The output W_BF16 defines (backend.h, cpu_decode.c): products of the
 * rounded pairs added odd element first, in fp32, then bias and resid. */
static float bf16_chain(const float *x, const float *w, int C)
{
    float acc = 0.0f;
    for (int k = 0; k < C; k += 2) {
        if (k + 1 < C) acc = acc + bf_round(x[k + 1]) * bf_round(w[k + 1]);
        acc = acc + bf_round(x[k]) * bf_round(w[k]);
    }
    return acc;
}

/* W_Q8's quantization of the n <= 32 values x (backend.h), into q[0..32):
 * scale = max|x| / 127, q = x * (127 / max|x|) to nearest even within
 * +-127; zeros past n. Non-finite values: the scale is NaN or infinite,
 * and q all 0; so is q where 127 / max|x| is infinite (tiny values). */
static float q8_quant(int8_t *q, const float *x, int n)
{
    float amax = 0.0f;
    bool nan = false;
    for (int i = 0; i < n; i++) {
        nan |= isnan(x[i]);
        amax = fmaxf(amax, fabsf(x[i]));
    }
    const float scale = nan ? NAN : amax / 127.0f;
    const float inv = 127.0f / amax;         /* infinite for a block of (near) zeros */
    for (int i = 0; i < 32; i++) {
        const float y = i < n && isfinite(scale) && isfinite(inv) ? x[i] * inv : 0.0f;
        q[i] = (int8_t)rintf(fmaxf(-127.0f, fminf(127.0f, y)));
    }
    return scale;
}

/* W_Q4's quantization of the n <= 32 weights x (backend.h, llama.cpp's
 * q4_0), into q[0..32) as the signed steps q - 8: d = m / -8 for m the
 * first value of largest magnitude, q = min(15, floor(x * (1 / d) + 8.5));
 * 0 past n, and all 0 when d or 1 / d is not finite. */
static float q4_quant(int8_t *q, const float *x, int n)
{
    float m = 0.0f;
    for (int i = 0; i < n && !isnan(m); i++)
        if (isnan(x[i]) || fabsf(x[i]) > fabsf(m)) m = x[i];
    const float d = m / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int i = 0; i < 32; i++) {
        const float t = i < n && isfinite(d) && isfinite(id) ? x[i] * id : 0.0f;
        q[i] = (int8_t)(fminf(15.0f, floorf(t + 8.5f)) - 8);
    }
    return d;
}

/* The output W_Q8 or W_Q4 defines: per block of 32 along C, the exact
 * integer sum of the quantized products (the inputs as W_Q8's), then out
 * = fma(sum, scale_w * scale_x, out), blocks in order from 0. */
static float q_chain(const float *x, const float *w, int C, enum w_dtype dt)
{
    float out = 0.0f;
    for (int k0 = 0; k0 < C; k0 += 32) {
        const int n = C - k0 < 32 ? C - k0 : 32;
        int8_t qx[32], qw[32];
        const float sx = q8_quant(qx, x + k0, n);
        const float sw = dt == W_Q4 ? q4_quant(qw, w + k0, n) : q8_quant(qw, w + k0, n);
        int32_t acc = 0;
        for (int i = 0; i < 32; i++) acc += qx[i] * qw[i];
        out = fmaf((float)acc, sw * sx, out);
    }
    return out;
}

/* Every matrix of m replaced by its W_Q4 values, (q - 8) d by blocks of 32
 * along its rows: packing them as W_Q4 again gives the same steps, so an
 * engine with dtype q4 and the fp32 full forward of m then differ only by
 * the int8 rounding of the matmuls' inputs. (On test_model, the fp32 full
 * forward of the weights as they were is 60% off in rms: the 16 steps of
 * a random tiny model's weights move its logits that much.) */
static void q4_round_trip(struct model *m)
{
    for (int v = 0; v < m->n_views; v++) {
        const struct param_view *pv = &m->views[v];
        if (pv->ndim != 2) continue;
        const int C = (int)pv->shape[1];
        for (int64_t r = 0; r < pv->shape[0]; r++) {
            float *row = m->params + pv->offset + (size_t)r * C;
            for (int k0 = 0; k0 < C; k0 += 32) {
                int8_t q[32];
                const int n = C - k0 < 32 ? C - k0 : 32;
                const float d = q4_quant(q, row + k0, n);
                for (int i = 0; i < n; i++) row[k0 + i] = (float)q[i] * d;
            }
        }
    }
}

/* matmul_rows_forward on N rows against a reference (fp32: the
 * double-precision product; bf16, q8 and q4: their chains above, bitwise), then every row
 * alone and every run of 1..13 consecutive rows (all tile heights, tiles
 * starting anywhere): bitwise the same as in the full batch. With a
 * residual (into another buffer, and in place): bitwise the plain op
 * followed by add. */
static void matmul_rows_case(int N, int C, int OC, bool with_bias, enum w_dtype dt)
{
    const struct backend *be = backend_cpu();
    const char *dn = w_dtype_name(dt);
    float *x = malloc((size_t)N * C * sizeof(float)), *w = malloc((size_t)OC * C * sizeof(float));
    float *b = malloc((size_t)OC * sizeof(float)), *out = malloc((size_t)N * OC * sizeof(float));
    float *few = malloc((size_t)13 * OC * sizeof(float));
    const float *bias = with_bias ? b : NULL;
    struct rng r;
    rng_seed(&r, 9);
    for (int i = 0; i < N * C; i++) x[i] = (float)rng_normal(&r);
    for (int i = 0; i < OC * C; i++) w[i] = (float)rng_normal(&r);
    for (int i = 0; i < OC; i++) b[i] = (float)rng_normal(&r);
    void *pw = malloc(be->rows_packed_bytes(C, OC, dt));
    be->rows_pack(pw, w, C, OC, dt);
    be->matmul_rows_forward(out, x, pw, dt, bias, NULL, N, C, OC);
    int bad = 0;
    for (int n = 0; n < N; n++)
        for (int j = 0; j < OC; j++) {
            if (dt != W_F32) {
                float s = dt == W_BF16 ? bf16_chain(x + (size_t)n * C, w + (size_t)j * C, C)
                                       : q_chain(x + (size_t)n * C, w + (size_t)j * C, C, dt);
                if (bias) s = s + b[j];
                bad += memcmp(&s, &out[n * OC + j], sizeof s) != 0;
                continue;
            }
            double s = bias ? b[j] : 0.0;
            for (int k = 0; k < C; k++) s += (double)x[n * C + k] * w[j * C + k];
            bad += !(fabs(out[n * OC + j] - s) <= 1e-4 + 1e-5 * fabs(s));
        }
    cr_expect_eq(bad, 0, "%s N %d C %d OC %d: %d outputs differ from the reference", dn, N, C,
                 OC, bad);
    for (int len = 1; len <= 13; len++)
        for (int n0 = 0; n0 + len <= N; n0 += len == 1 ? 1 : 5) {
            be->matmul_rows_forward(few, x + (size_t)n0 * C, pw, dt, bias, NULL, len, C, OC);
            cr_expect(memcmp(few, out + (size_t)n0 * OC, (size_t)len * OC * sizeof(float)) == 0,
                      "%s N %d C %d OC %d: rows %d..%d as a batch of %d differ", dn, N, C, OC,
                      n0, n0 + len - 1, len);
        }
    const size_t no = (size_t)N * OC * sizeof(float);
    float *res = malloc(no), *want = malloc(no), *got = malloc(no);
    for (int i = 0; i < N * OC; i++) res[i] = (float)rng_normal(&r);
    be->add(want, out, res, (size_t)N * OC);
    be->matmul_rows_forward(got, x, pw, dt, bias, res, N, C, OC);
    cr_expect(memcmp(got, want, no) == 0,
              "%s N %d C %d OC %d: the fused residual differs from matmul then add", dn, N, C, OC);
    memcpy(got, res, no);
    be->matmul_rows_forward(got, x, pw, dt, bias, got, N, C, OC);
    cr_expect(memcmp(got, want, no) == 0,
              "%s N %d C %d OC %d: the residual added in place differs", dn, N, C, OC);
    free(x); free(w); free(pw); free(b); free(out); free(few); free(res); free(want); free(got);
}

/* a partial panel of outputs (OC < 64), N past one row block (CPU_ROWS_NBLOCK) */
Test(generate, matmul_rows_matches_naive_and_is_batch_invariant)
{
    matmul_rows_case(100, 37, 13, true, W_F32);
    matmul_rows_case(100, 37, 13, true, W_BF16);     /* odd C: a half pair */
    matmul_rows_case(100, 37, 13, true, W_Q8);       /* a block and 5 more */
    matmul_rows_case(100, 37, 13, true, W_Q4);
}
/* whole panels, and whole panels then a partial one, with and without bias */
Test(generate, matmul_rows_aligned_shapes)
{
    for (int dt = W_F32; dt <= W_Q4; dt++) {
        matmul_rows_case(23, 64, 128, true, dt);
        matmul_rows_case(17, 128, 200, false, dt);
    }
    matmul_rows_case(9, 100, 40, true, W_Q8);        /* blocks of 32, 32, 32, 4 */
    matmul_rows_case(9, 100, 40, true, W_Q4);
}

/* N rows ~N(0,1) through an (OC,C) matrix ~N(0,1) (seed) as W_F32 and as
 * dt: *o32 and *odt, (N,OC) each, malloc'd */
static void rows_f32_and(enum w_dtype dt, int N, int C, int OC, uint64_t seed, float **o32,
                         float **odt)
{
    const struct backend *be = backend_cpu();
    float *x = malloc((size_t)N * C * sizeof(float)), *w = malloc((size_t)OC * C * sizeof(float));
    struct rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < N * C; i++) x[i] = (float)rng_normal(&r);
    for (int i = 0; i < OC * C; i++) w[i] = (float)rng_normal(&r);
    const enum w_dtype dts[2] = {W_F32, dt};
    float **outs[2] = {o32, odt};
    for (int i = 0; i < 2; i++) {
        void *pw = malloc(be->rows_packed_bytes(C, OC, dts[i]));
        *outs[i] = malloc((size_t)N * OC * sizeof(float));
        be->rows_pack(pw, w, C, OC, dts[i]);
        be->matmul_rows_forward(*outs[i], x, pw, dts[i], NULL, NULL, N, C, OC);
        free(pw);
    }
    free(x); free(w);
}

/* W_BF16 packs half the bytes of W_F32, and its outputs stay within
 * bfloat16's rounding of the fp32 ones (inputs ~N(0,1), 256 terms: the
 * error of a sum is about sqrt(256) * 2 * 2^-9 ~ 0.06 of one term) */
Test(generate, matmul_rows_bf16_close_to_f32)
{
    const struct backend *be = backend_cpu();
    const int N = 16, C = 256, OC = 96;
    cr_expect_eq(be->rows_packed_bytes(C, OC, W_BF16) * 2, be->rows_packed_bytes(C, OC, W_F32));
    float *o32, *o16;
    rows_f32_and(W_BF16, N, C, OC, 12, &o32, &o16);
    double worst = 0.0, same = 0;
    for (int i = 0; i < N * OC; i++) {
        worst = fmax(worst, fabs(o16[i] - o32[i]));
        same += o16[i] == o32[i];
    }
    cr_expect(worst < 0.5 && worst > 0.0, "bf16 against f32: worst difference %g", worst);
    cr_expect(same < N * OC / 10, "bf16 outputs equal to the f32 ones: %g of %d", same, N * OC);
    free(o32); free(o16);
}

/* W_Q8 packs 1.125 bytes a weight (9/32 of W_F32's), and its outputs stay
 * near the fp32 ones: each factor rounds to within half a step of its
 * block's max / 127, so for N(0,1) inputs over 512 terms the sum moves by
 * about sqrt(512) * 0.5% of a term's typical size; outputs are ~sqrt(512). */
Test(generate, matmul_rows_q8_close_to_f32)
{
    const struct backend *be = backend_cpu();
    const int N = 16, C = 512, OC = 96;
    cr_expect_eq(be->rows_packed_bytes(C, OC, W_Q8) * 32, be->rows_packed_bytes(C, OC, W_F32) * 9);
    float *o32, *o8;
    rows_f32_and(W_Q8, N, C, OC, 13, &o32, &o8);
    double err2 = 0.0, ref2 = 0.0, worst = 0.0;
    for (int i = 0; i < N * OC; i++) {
        err2 += (double)(o8[i] - o32[i]) * (o8[i] - o32[i]);
        ref2 += (double)o32[i] * o32[i];
        worst = fmax(worst, fabs(o8[i] - o32[i]));
    }
    const double rel = sqrt(err2 / ref2);
    cr_expect(rel < 0.02 && rel > 1e-4, "q8 against f32: relative rms error %g", rel);
    cr_expect(worst < 1.5, "q8 against f32: worst difference %g (outputs ~%g)", worst,
              sqrt(ref2 / (N * OC)));
    free(o32); free(o8);
}

/* W_Q8 rows with special values: a row of zeros gives exactly its bias; a
 * NaN or an infinity in one block of a row makes that row's outputs NaN,
 * and no other row's; a block of zeros between others, or of subnormals,
 * adds nothing. */
Test(generate, matmul_rows_q8_special_values)
{
    const struct backend *be = backend_cpu();
    enum { N = 5, C = 96, OC = 40 };
    float x[N * C], w[OC * C], b[OC], out[N * OC];
    struct rng r;
    rng_seed(&r, 14);
    for (int i = 0; i < N * C; i++) x[i] = (float)rng_normal(&r);
    for (int i = 0; i < OC * C; i++) w[i] = (float)rng_normal(&r);
    for (int i = 0; i < OC; i++) b[i] = (float)rng_normal(&r);
    for (int k = 0; k < C; k++) x[0 * C + k] = 0.0f;
    x[1 * C + 40] = NAN;
    x[2 * C + 70] = INFINITY;
    for (int k = 32; k < 64; k++) x[3 * C + k] = 0.0f;
    for (int k = 64; k < 96; k++) x[4 * C + k] = x[4 * C + k] * 1e-39f;   /* 127 / max: inf */
    void *pw = malloc(be->rows_packed_bytes(C, OC, W_Q8));
    be->rows_pack(pw, w, C, OC, W_Q8);
    be->matmul_rows_forward(out, x, pw, W_Q8, b, NULL, N, C, OC);
    int bad = 0;
    for (int j = 0; j < OC; j++) {
        bad += out[0 * OC + j] != b[j];
        bad += !isnan(out[1 * OC + j]) + !isnan(out[2 * OC + j]);
        bad += !isfinite(out[3 * OC + j]) || !isfinite(out[4 * OC + j]);
        for (int n = 3; n < 5; n++) {
            const float want = q_chain(x + n * C, w + (size_t)j * C, C, W_Q8) + b[j];
            bad += memcmp(&want, &out[n * OC + j], sizeof want) != 0;
        }
    }
    cr_expect_eq(bad, 0, "%d outputs wrong", bad);
    free(pw);
}

/* W_Q4 packs 0.625 bytes a weight (5/32 of W_F32's), and its outputs stay
 * near the fp32 ones: a weight rounds to within half a step of its block's
 * max / 8 (~2.1 / 16 for 32 N(0,1) values, so ~7% of a weight's size as
 * an rms error), which the sums carry over as a relative rms error of
 * about that. */
Test(generate, matmul_rows_q4_close_to_f32)
{
    const struct backend *be = backend_cpu();
    const int N = 16, C = 512, OC = 96;
    cr_expect_eq(be->rows_packed_bytes(C, OC, W_Q4) * 32, be->rows_packed_bytes(C, OC, W_F32) * 5);
    float *o32, *o4;
    rows_f32_and(W_Q4, N, C, OC, 15, &o32, &o4);
    double err2 = 0.0, ref2 = 0.0;
    for (int i = 0; i < N * OC; i++) {
        err2 += (double)(o4[i] - o32[i]) * (o4[i] - o32[i]);
        ref2 += (double)o32[i] * o32[i];
    }
    const double rel = sqrt(err2 / ref2);
    cr_expect(rel < 0.12 && rel > 0.03, "q4 against f32: relative rms error %g", rel);
    free(o32); free(o4);
}

/* W_Q4 weights with special values, each in one output's row: a block of
 * zeros or of subnormals (whose 1 / d overflows) adds nothing; a NaN or an
 * infinity makes that output NaN in every row, and no other output; exact
 * ties of x / d + 8.5 round up (floor after adding 8.5), a value past the
 * top step is held at 15, and of two values of the largest magnitude the
 * first sets the scale's sign. All bitwise the reference chain. */
Test(generate, matmul_rows_q4_special_weights)
{
    const struct backend *be = backend_cpu();
    enum { N = 3, C = 64, OC = 40 };
    float x[N * C], w[OC * C], b[OC], out[N * OC];
    struct rng r;
    rng_seed(&r, 16);
    for (int i = 0; i < N * C; i++) x[i] = (float)rng_normal(&r);
    for (int i = 0; i < OC * C; i++) w[i] = (float)rng_normal(&r);
    for (int i = 0; i < OC; i++) b[i] = (float)rng_normal(&r);
    for (int k = 0; k < 32; k++) w[0 * C + k] = 0.0f;
    for (int k = 32; k < 64; k++) w[1 * C + k] *= 1e-39f;
    w[2 * C + 5] = NAN;
    w[3 * C + 40] = -INFINITY;
    /* row 4, block 0: m = -8 (d = 1), values k + 0.5 - 8 are exact ties */
    for (int k = 0; k < 32; k++) w[4 * C + k] = k < 16 ? (float)k - 7.5f : (float)(k % 8) - 8.0f;
    w[4 * C + 31] = -8.0f;
    /* row 5: 8 and -8 both largest, 8 first: d = -1, so -8 maps past 15 */
    for (int k = 0; k < 32; k++) w[5 * C + k] = k == 3 ? 8.0f : k == 9 ? -8.0f : (float)(k % 5) - 2.0f;
    void *pw = malloc(be->rows_packed_bytes(C, OC, W_Q4));
    be->rows_pack(pw, w, C, OC, W_Q4);
    be->matmul_rows_forward(out, x, pw, W_Q4, b, NULL, N, C, OC);
    int bad = 0;
    for (int n = 0; n < N; n++)
        for (int j = 0; j < OC; j++) {
            const float o = out[n * OC + j];
            if (j == 2 || j == 3) {
                bad += !isnan(o);
                continue;
            }
            const float want = q_chain(x + n * C, w + (size_t)j * C, C, W_Q4) + b[j];
            bad += memcmp(&want, &o, sizeof want) != 0;
        }
    /* the reference itself, on the rows built above */
    int8_t q[32];
    float d = q4_quant(q, w + 4 * C, 32);
    bad += d != 1.0f || q[0] != -7 || q[15] != 8 - 8 + 7 || q[31] != -8;
    d = q4_quant(q, w + 5 * C, 32);
    bad += d != -1.0f || q[3] != -8 || q[9] != 7;
    d = q4_quant(q, w + 1 * C + 32, 32);
    bad += q[0] != 0 || q[31] != 0;
    cr_expect_eq(bad, 0, "%d outputs or steps wrong", bad);
    free(pw);
}

/* matmul_rows_glu_forward is bitwise matmul_rows_forward on [gate; up]
 * followed by swiglu_forward, in a full batch and for every run of 1..13
 * rows; I = 21 leaves half a panel of padding. */
static void glu_case(int N, int C, int I, enum w_dtype dt)
{
    const struct backend *be = backend_cpu();
    float *x = malloc((size_t)N * C * sizeof(float)), *w = malloc((size_t)2 * I * C * sizeof(float));
    float *gu = malloc((size_t)N * 2 * I * sizeof(float)), *want = malloc((size_t)N * I * sizeof(float));
    float *h = malloc((size_t)N * I * sizeof(float)), *few = malloc((size_t)13 * I * sizeof(float));
    void *pw = malloc(be->rows_packed_bytes(C, 2 * I, dt));
    void *pg = malloc(be->rows_packed_bytes(C, 2 * I, dt));
    struct rng r;
    rng_seed(&r, 4);
    for (int i = 0; i < N * C; i++) x[i] = (float)rng_normal(&r);
    for (int i = 0; i < 2 * I * C; i++) w[i] = (float)rng_normal(&r) * 0.3f;
    be->rows_pack(pw, w, C, 2 * I, dt);
    be->matmul_rows_forward(gu, x, pw, dt, NULL, NULL, N, C, 2 * I);
    for (int n = 0; n < N; n++)
        be->swiglu_forward(want + (size_t)n * I, gu + (size_t)n * 2 * I, gu + (size_t)n * 2 * I + I, 1, I);
    be->rows_pack_glu(pg, w, C, I, dt);
    be->matmul_rows_glu_forward(h, x, pg, dt, N, C, I);
    cr_expect(memcmp(h, want, (size_t)N * I * sizeof(float)) == 0,
              "dtype %d N %d C %d I %d: fused SwiGLU differs from matmul then swiglu", dt, N, C, I);
    for (int len = 1; len <= 13; len++)
        for (int n0 = 0; n0 + len <= N; n0 += len == 1 ? 1 : 5) {
            be->matmul_rows_glu_forward(few, x + (size_t)n0 * C, pg, dt, len, C, I);
            cr_expect(memcmp(few, want + (size_t)n0 * I, (size_t)len * I * sizeof(float)) == 0,
                      "dtype %d N %d C %d I %d: rows %d..%d as a batch of %d differ", dt, N, C, I,
                      n0, n0 + len - 1, len);
        }
    free(x); free(w); free(gu); free(want); free(h); free(few); free(pw); free(pg);
}

Test(generate, matmul_rows_glu_is_matmul_then_swiglu)
{
    for (int dt = W_F32; dt <= W_Q4; dt++) {
        glu_case(100, 37, 21, dt);
        glu_case(17, 64, 48, dt);
    }
}

/* An engine whose model changes between requests (GRPO's optimizer steps
 * between rollouts) decodes with the new weights: greedy tokens after
 * model_init_random with another seed equal a new engine's on that model,
 * and differ from the old model's. */
Test(generate, engine_follows_parameter_changes)
{
    enum { V = 40, P = 5, M = 12 };
    const int32_t prompt[P] = {3, 1, 4, 1, 5};
    struct model *m = test_model(V, 5);
    static struct collector before, after, fresh;
    struct gen_engine *e = engine(m, NULL, &before, 4, 4, 64, 0);
    submit(e, "a", 0, prompt, P, 1, M, 0.0f, false, 0);
    run_to_idle(e);
    gen_engine_free(e);

    e = engine(m, NULL, &after, 4, 4, 64, 0);
    submit(e, "b", 0, prompt, P, 1, M, 0.0f, false, 0);
    run_to_idle(e);
    model_init_random(m, 6, 0.5f);          /* marks the parameters changed */
    memset(&after, 0, sizeof after);
    after.V = V;
    submit(e, "c", 0, prompt, P, 1, M, 0.0f, false, 0);
    run_to_idle(e);
    struct gen_engine *e2 = engine(m, NULL, &fresh, 4, 4, 64, 0);
    submit(e2, "d", 0, prompt, P, 1, M, 0.0f, false, 0);
    run_to_idle(e2);

    cr_assert_eq(after.s[0][0].n, M);
    cr_assert_eq(fresh.s[0][0].n, M);
    cr_expect(memcmp(after.s[0][0].tok, fresh.s[0][0].tok, M * sizeof(int32_t)) == 0,
              "the engine decoded with its old packed weights");
    cr_expect(memcmp(after.s[0][0].tok, before.s[0][0].tok, M * sizeof(int32_t)) != 0,
              "a reinitialised model gave the old model's tokens (the test shows nothing)");
    gen_engine_free(e);
    gen_engine_free(e2);
    model_free(m);
}

/* An attached profile counts every step and splits its time by op; a
 * detached one is left alone. */
Test(generate, profile_accounts_steps_by_op)
{
    enum { V = 40, P = 5, M = 6 };
    const int32_t prompt[P] = {3, 1, 4, 1, 5};
    struct model *m = test_model(V, 5);
    static struct collector c;
    struct gen_engine *e = engine(m, NULL, &c, 4, 4, 64, 0);
    struct gen_profile p;
    memset(&p, 0, sizeof p);
    gen_profile_attach(e, &p);
    submit(e, "a", 0, prompt, P, 2, M, 0.0f, false, 0);
    run_to_idle(e);
    struct gen_stats st;
    gen_stats_get(e, &st);
    cr_expect_eq(p.steps, st.steps, "profile counted %lld steps of %lld", p.steps, st.steps);
    double ops = 0;
    for (int i = 0; i < GEN_PROF_N; i++) {
        cr_expect(p.s[i] >= 0, "%s: %g s", gen_prof_op_names[i], p.s[i]);
        ops += p.s[i];
    }
    cr_expect(p.s[GEN_PROF_ATTENTION] > 0 && p.s[GEN_PROF_MLP_IN] > 0 && p.s[GEN_PROF_SAMPLE] > 0,
              "ops that ran have no time");
    cr_expect(ops <= p.step_s, "ops %g s exceed the steps' %g s", ops, p.step_s);
    gen_profile_attach(e, NULL);
    const struct gen_profile was = p;
    submit(e, "b", 1, prompt, P, 1, M, 0.0f, false, 0);
    run_to_idle(e);
    cr_expect(memcmp(&was, &p, sizeof p) == 0, "a detached profile changed");
    gen_engine_free(e);
    model_free(m);
}

/* Model output in the engine's JSON lines: a NUL or a broken character
 * becomes U+FFFD, so that a jansson reader with default flags (the
 * server's) accepts the line; valid characters pass unchanged. */
Test(generate, output_text_json_readable)
{
    json_t *j = jsonl_text("a\0b\xe4\xbd \xc3\xa9", 8);
    char *line = json_dumps(j, JSON_ENCODE_ANY);
    cr_assert_not_null(line);
    json_error_t jerr;
    json_t *back = json_loads(line, JSON_DECODE_ANY, &jerr);
    cr_assert_not_null(back, "%s: %s", line, jerr.text);
    cr_expect_str_eq(json_string_value(back), "a\xef\xbf\xbd" "b\xef\xbf\xbd\xef\xbf\xbd \xc3\xa9");
    json_decref(back);
    free(line);
    json_decref(j);
}

/* ------------------------------------------------------ cached vs full */

/* Generates greedily with a small block size and chunked prefill, then
 * checks every TOKEN event's logits and the prompt logprobs against
 * model_forward on the whole sequence, with cache type dt to tolerance
 * atol + rtol * |full|. */
static void cache_vs_full(enum kv_dtype dt, bool batch_invariant, double atol, double rtol)
{
    enum { V = 20, P = 7, M = 12 };
    test_kv_dtype = dt;
    test_batch_invariant = batch_invariant;
    struct model *m = test_model(V, 21);
    struct collector *c = calloc(1, sizeof *c);
    c->keep_logits = true;
    /* block 4 (prompt ends mid-block), 3 rows per step: chunked prefill */
    struct gen_engine *e = engine(m, NULL, c, 4, 2, 3, 0);
    int32_t prompt[P] = {3, 17, 5, 5, 0, 12, 9};
    struct gen_request r;
    gen_request_default(&r);
    r.id = "parity";
    r.prompt = prompt;
    r.n_prompt = P;
    r.max_tokens = M;
    r.sampling.temperature = 0;
    r.prompt_logprobs = 20;
    r.logprobs = 3;
    char err[256];
    cr_assert_eq(gen_submit(e, &r, err, sizeof err), 0, "%s", err);
    run_to_idle(e);
    struct sample_out *o = &c->s[0][0];
    cr_assert(o->done);
    cr_assert_eq(o->n, M);
    cr_assert_eq(o->finish, GEN_FINISH_LENGTH);
    cr_assert_eq(c->prompt_events, 1);

    const int T = P + M - 1;
    int32_t seq[P + M];
    memcpy(seq, prompt, sizeof prompt);
    memcpy(seq + P, o->tok, (size_t)M * sizeof(int32_t));
    cr_assert_eq(model_forward(m, seq, NULL, 1, T, err, sizeof err), 0, "%s", err);
    float *full = malloc((size_t)T * V * sizeof(float));
    model_logits(m, 0, T, full);
    int bad = 0;
    double worst = 0;
    for (int i = 0; i < M; i++) {
        const float *ref = full + (size_t)(P - 1 + i) * V;
        for (int v = 0; v < V; v++) {
            double d = fabs(o->logits[i][v] - ref[v]);
            worst = d > worst ? d : worst;
            bad += !(d <= atol + rtol * fabs(ref[v]));
        }
        /* greedy picks the argmax of its logits, which is the full
         * forward's unless that one's top two are within twice the
         * tolerance (a near tie that the rounding may flip) */
        int best = 0, mine = 0;
        for (int v = 1; v < V; v++) {
            if (ref[v] > ref[best]) best = v;
            if (o->logits[i][v] > o->logits[i][mine]) mine = v;
        }
        cr_expect_eq(o->tok[i], mine, "token %d: greedy %d, argmax of its logits %d", i, o->tok[i], mine);
        double second = -INFINITY;
        for (int v = 0; v < V; v++) if (v != best && ref[v] > second) second = ref[v];
        if (ref[best] - second > 2 * (atol + rtol * fabs(ref[best])))
            cr_expect_eq(o->tok[i], best, "token %d: greedy %d, full-forward argmax %d", i,
                         o->tok[i], best);
    }
    cr_expect_eq(bad, 0, "%s: %d logits differ (worst %g)", kv_dtype_name(dt), bad, worst);
    /* prompt logprobs = log softmax of the full forward */
    cr_expect(isnan(c->prompt_lp[0]));
    bad = 0;
    for (int t = 1; t < P; t++) {
        const float *row = full + (size_t)(t - 1) * V;
        double mx = row[0], s = 0;
        for (int v = 1; v < V; v++) mx = row[v] > mx ? row[v] : mx;
        for (int v = 0; v < V; v++) s += exp(row[v] - mx);
        double lse = mx + log(s);
        double want = row[prompt[t]] - lse;
        bad += !(fabs(c->prompt_lp[t] - want) <= 2 * atol);
        /* top alternatives are sorted and consistent */
        double want0 = row[c->prompt_top[t][0]] - lse;
        bad += !(fabs(c->prompt_top_lp[t][0] - want0) <= 2 * atol);
        for (int k = 1; k < 20; k++) bad += c->prompt_top_lp[t][k] > c->prompt_top_lp[t][k - 1];
    }
    cr_expect_eq(bad, 0, "%s: %d prompt logprobs differ", kv_dtype_name(dt), bad);
    free(full);
    gen_engine_free(e);
    collector_free(c);
    free(c);
    model_free(m);
    test_kv_dtype = KV_F16;
    test_batch_invariant = true;
}

Test(generate, cache_matches_full_forward) { cache_vs_full(KV_F32, true, GEN_ATOL, GEN_RTOL); }
Test(generate, cache_matches_full_forward_f16)
{
    cache_vs_full(KV_F16, true, GEN_F16_ATOL, GEN_F16_RTOL);
}
Test(generate, cache_matches_full_forward_q8)
{
    cache_vs_full(KV_Q8, true, GEN_Q8_ATOL, GEN_Q8_RTOL);
}
/* batch_invariant off: the matmuls go through matmul_forward on the
 * model's own weights (no packed copy), chunked prefill and decode alike */
Test(generate, cache_matches_full_forward_unpacked)
{
    cache_vs_full(KV_F32, false, GEN_ATOL, GEN_RTOL);
}

/* The same check on the Hugging Face fixtures (GQA Llama, tied Qwen2 with
 * biases, Llama 3 rope scaling): sampled at temperature 1 so that the
 * positions see varied tokens, one request of 3 samples. */
static void cache_vs_full_fixtures(enum kv_dtype dt, double atol, double rtol)
{
    test_kv_dtype = dt;
    static const char *const dirs[] = {"tests/ref/fixtures/qwen2-tied", "tests/ref/fixtures/llama-gqa",
                                       "tests/ref/fixtures/llama3-scaled"};
    for (size_t d = 0; d < sizeof dirs / sizeof *dirs; d++) {
        char err[512];
        struct model *m = model_load(dirs[d], backend_cpu(), err, sizeof err);
        cr_assert_not_null(m, "%s", err);
        if (test_dtype == W_Q4) q4_round_trip(m);
        const int V = m->cfg.vocab_size, P = 5, M = 9;
        struct collector *c = calloc(1, sizeof *c);
        c->keep_logits = true;
        struct gen_engine *e = engine(m, NULL, c, 4, 4, 64, 0);
        int32_t prompt[5] = {1, 7, 3, 9, 2};
        submit(e, "fx", 0, prompt, P, 3, M, 1.0f, true, 5);
        run_to_idle(e);
        int bad = 0;
        double worst = 0;
        for (int k = 0; k < 3; k++) {
            struct sample_out *o = &c->s[0][k];
            cr_assert_eq(o->n, M);
            int32_t seq[5 + 9];
            memcpy(seq, prompt, sizeof prompt);
            memcpy(seq + P, o->tok, (size_t)M * sizeof(int32_t));
            const int T = P + M - 1;
            cr_assert_eq(model_forward(m, seq, NULL, 1, T, err, sizeof err), 0, "%s", err);
            float *full = malloc((size_t)T * V * sizeof(float));
            model_logits(m, 0, T, full);
            for (int i = 0; i < M; i++)
                for (int v = 0; v < V; v++) {
                    double ref = full[(size_t)(P - 1 + i) * V + v], got = o->logits[i][v];
                    worst = fabs(got - ref) > worst ? fabs(got - ref) : worst;
                    bad += !(fabs(got - ref) <= atol + rtol * fabs(ref));
                }
            free(full);
        }
        cr_expect_eq(bad, 0, "%s %s: %d logits differ (worst %g)", dirs[d], kv_dtype_name(dt), bad,
                     worst);
        gen_engine_free(e);
        collector_free(c);
        free(c);
        model_free(m);
    }
    test_kv_dtype = KV_F16;
}

Test(generate, cache_matches_full_forward_on_fixtures)
{
    cache_vs_full_fixtures(KV_F32, GEN_ATOL, GEN_RTOL);
}

Test(generate, cache_matches_full_forward_on_fixtures_f16)
{
    cache_vs_full_fixtures(KV_F16, GEN_F16_ATOL, GEN_F16_RTOL);
}

Test(generate, cache_matches_full_forward_on_fixtures_q8)
{
    cache_vs_full_fixtures(KV_Q8, GEN_Q8_ATOL, GEN_Q8_RTOL);
}

/* dtype bf16 or q8 against the fp32 full forward, on test_model (fixtures
 * false) or the fixtures */
static void weights_vs_full(enum w_dtype dt, bool fixtures, double atol, double rtol)
{
    test_dtype = dt;
    if (fixtures) cache_vs_full_fixtures(KV_F32, atol, rtol);
    else cache_vs_full(KV_F32, true, atol, rtol);
    test_dtype = W_F32;
}

Test(generate, cache_matches_full_forward_bf16)
{
    weights_vs_full(W_BF16, false, GEN_BF16_ATOL, GEN_BF16_RTOL);
}

Test(generate, cache_matches_full_forward_on_fixtures_bf16)
{
    weights_vs_full(W_BF16, true, GEN_BF16_ATOL, GEN_BF16_RTOL);
}

Test(generate, cache_matches_full_forward_q8_weights)
{
    weights_vs_full(W_Q8, false, GEN_Q8W_ATOL, GEN_Q8W_RTOL);
}

Test(generate, cache_matches_full_forward_on_fixtures_q8_weights)
{
    weights_vs_full(W_Q8, true, GEN_Q8W_ATOL, GEN_Q8W_RTOL);
}

/* dtype q4 against the fp32 full forward of the same model with its
 * weights as W_Q4 holds them (q4_round_trip): the inputs' int8 rounding
 * is all that differs, less than q8's weights and inputs together */
Test(generate, cache_matches_full_forward_q4_weights)
{
    weights_vs_full(W_Q4, false, GEN_Q8W_ATOL, GEN_Q8W_RTOL);
}

Test(generate, cache_matches_full_forward_on_fixtures_q4_weights)
{
    weights_vs_full(W_Q4, true, GEN_Q8W_ATOL, GEN_Q8W_RTOL);
}

/* ------------------------------------------------------ batch independence */

static void independent_of_batch(enum w_dtype dt)
{
    test_dtype = dt;
    enum { V = 50 };
    struct model *m = test_model(V, 8);
    int32_t p0[5] = {1, 2, 3, 4, 5}, p1[9] = {9, 8, 7, 6, 5, 4, 3, 2, 1}, p2[3] = {40, 41, 42};
    /* alone */
    struct collector *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    a->keep_logits = b->keep_logits = true;
    struct gen_engine *e = engine(m, NULL, a, 4, 8, 64, 0);
    submit(e, "g", 0, p0, 5, 1, 20, 0.0f, false, 0);
    run_to_idle(e);
    submit(e, "s", 1, p0, 5, 1, 20, 1.0f, true, 1234);
    run_to_idle(e);
    gen_engine_free(e);
    /* inside a batch, joining at different steps */
    e = engine(m, NULL, b, 4, 8, 64, 0);
    char err[256];
    submit(e, "x", 2, p1, 9, 2, 25, 0.9f, true, 5);
    cr_assert_geq(gen_step(e, err, sizeof err), 0);
    cr_assert_geq(gen_step(e, err, sizeof err), 0);
    submit(e, "g", 0, p0, 5, 1, 20, 0.0f, false, 0);
    submit(e, "y", 3, p2, 3, 1, 7, 1.3f, false, 0);
    cr_assert_geq(gen_step(e, err, sizeof err), 0);
    submit(e, "s", 1, p0, 5, 1, 20, 1.0f, true, 1234);
    run_to_idle(e);
    for (int r = 0; r < 2; r++) {
        cr_assert(a->s[r][0].done && b->s[r][0].done);
        cr_assert_eq(a->s[r][0].n, 20);
        cr_assert_eq(b->s[r][0].n, 20);
        cr_expect_arr_eq(a->s[r][0].tok, b->s[r][0].tok, 20 * sizeof(int32_t),
                         "request %d differs inside a batch", r);
    }
    cr_expect(b->s[2][0].done && b->s[2][1].done && b->s[3][0].done);
    /* batch-invariant matmuls: the logits themselves are bitwise equal */
    for (int t = 0; t < 20; t++)
        cr_expect(memcmp(a->s[0][0].logits[t], b->s[0][0].logits[t], V * sizeof(float)) == 0,
                  "greedy logits at step %d differ inside a batch", t);
    gen_engine_free(e);
    /* same seed, same request: same output; another seed: another output */
    struct collector *d = calloc(1, sizeof *d);
    e = engine(m, NULL, d, 16, 8, 64, 0);
    submit(e, "s", 1, p0, 5, 1, 20, 1.0f, true, 1234);
    submit(e, "t", 2, p0, 5, 1, 20, 1.0f, true, 99);
    run_to_idle(e);
    cr_expect_arr_eq(d->s[1][0].tok, a->s[1][0].tok, 20 * sizeof(int32_t), "seeded output not reproducible");
    cr_expect(memcmp(d->s[2][0].tok, a->s[1][0].tok, 20 * sizeof(int32_t)) != 0,
              "different seeds gave the same 20 tokens");
    gen_engine_free(e);
    collector_free(a);
    collector_free(b);
    free(a); free(b); free(d);
    model_free(m);
    test_dtype = W_F32;
}

Test(generate, output_independent_of_batch) { independent_of_batch(W_F32); }
/* a KV_Q8 cache quantizes each vector alone: batches and block sizes
 * leave the output bitwise as it was */
Test(generate, output_independent_of_batch_q8)
{
    test_kv_dtype = KV_Q8;
    independent_of_batch(W_F32);
    test_kv_dtype = KV_F16;
}

/* Steps of requests 0..nreq-1 (request 0 with 2 samples, the others 1)
 * whose token or logits (V = 40) differ between collectors a and b; every
 * sample done, of n tokens (0: the same positive count in both). */
static int steps_differing(const struct collector *a, const struct collector *b, int nreq, int n)
{
    int bad = 0;
    for (int r = 0; r < nreq; r++)
        for (int i = 0; i < (r == 0 ? 2 : 1); i++) {
            const struct sample_out *x = &a->s[r][i], *y = &b->s[r][i];
            cr_assert(x->done && y->done && x->n == y->n && x->n > 0 && (!n || x->n == n));
            for (int t = 0; t < x->n; t++)
                bad += x->tok[t] != y->tok[t] || memcmp(x->logits[t], y->logits[t], 40 * sizeof(float));
        }
    return bad;
}

/* The layers in one team (backend team_run: the ops as work-sharing loops)
 * give bitwise the logits of one team per op: the same requests on the
 * same weights through a backend without team_run. Four sequences of
 * different lengths, prompts of 5 to 11 rows, so that the attention has
 * several runs and the norms and matmuls rows to share out; fp32 and
 * bf16. */
static void team_case(enum w_dtype dt)
{
    static struct backend solo;
    solo = *backend_cpu();
    solo.team_run = NULL;
    cr_assert_not_null(backend_cpu()->team_run);
    struct collector *got[2];
    for (int b = 0; b < 2; b++) {
        struct model_config mc = test_cfg(40);
        char err[256];
        struct model *m = model_new(&mc, b ? &solo : backend_cpu(), err, sizeof err);
        cr_assert_not_null(m, "%s", err);
        model_init_random(m, 17, 0.5f);
        got[b] = calloc(1, sizeof *got[b]);
        got[b]->keep_logits = true;
        test_dtype = dt;
        struct gen_engine *e = engine(m, NULL, got[b], 4, 8, 64, 0);
        test_dtype = W_F32;
        int32_t p0[5] = {1, 2, 3, 4, 5}, p1[11] = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 30};
        submit(e, "a", 0, p0, 5, 2, 12, 1.0f, true, 3);
        submit(e, "b", 1, p1, 11, 1, 9, 0.0f, false, 0);
        submit(e, "c", 2, p0 + 2, 3, 1, 15, 0.7f, true, 8);
        run_to_idle(e);
        gen_engine_free(e);
        model_free(m);
    }
    const int bad = steps_differing(got[0], got[1], 3, 0);
    cr_expect_eq(bad, 0, "%s: %d steps differ between one team and a team per op", w_dtype_name(dt), bad);
    for (int b = 0; b < 2; b++) {
        collector_free(got[b]);
        free(got[b]);
    }
}

/* A serving-only engine (discard_matrices) gives each of the model's
 * matrices back as soon as it has packed it: its tokens and logits stay
 * bitwise the same as an engine's that keeps them; against that engine,
 * creating it grows the resident memory by most of the matrices' bytes
 * less, and its peak by most of the packed copy's less (packing
 * everything, then discarding, would leave the peak where it was); forward
 * and saving refuse the model after. */
Test(generate, discarded_matrices_serve_the_same)
{
    struct model_config mc = test_cfg(40);
    mc.hidden_size = 256;
    mc.intermediate_size = 1024;
    mc.n_layers = 4;
    mc.head_dim = mc.hidden_size / mc.n_heads;
    struct collector *got[2];
    double given = 0, packed = 0, rss[2], peak[2];
    for (int b = 0; b < 2; b++) {
        char err[256];
        struct model *m = model_new(&mc, backend_cpu(), err, sizeof err);
        cr_assert_not_null(m, "%s", err);
        model_init_random(m, 23, 0.5f);
        got[b] = calloc(1, sizeof *got[b]);
        got[b]->keep_logits = true;
        test_discard = b == 1;
        proc_reset_peak();
        const double before = proc_status_bytes("VmRSS");
        struct gen_engine *e = engine(m, NULL, got[b], 4, 8, 64, 0);
        test_discard = false;
        rss[b] = proc_status_bytes("VmRSS") - before;
        peak[b] = proc_status_bytes("VmHWM") - before;
        struct gen_stats st;
        gen_stats_get(e, &st);
        cr_assert_eq(m->matrices_discarded, b == 1);
        cr_assert_eq(st.discarded_bytes > 0, b == 1);
        given += (double)st.discarded_bytes;
        packed = (double)st.packed_bytes;
        int32_t p0[5] = {1, 2, 3, 4, 5};
        submit(e, "a", 0, p0, 5, 2, 10, 1.0f, true, 3);
        submit(e, "b", 1, p0 + 1, 4, 1, 10, 0.0f, false, 0);
        run_to_idle(e);
        if (b) {
            cr_expect_neq(model_forward(m, p0, NULL, 1, 5, err, sizeof err), 0);
            cr_expect(strstr(err, "discarded") != NULL, "%s", err);
            cr_expect_neq(model_save(m, "/tmp/aha-never-written", ST_F32, err, sizeof err), 0);
            cr_expect(access("/tmp/aha-never-written", F_OK) != 0);
        }
        gen_engine_free(e);
        model_free(m);
    }
    /* all matrices but the embeddings: 4 x (qkv, o, gate, up, down) */
    const double C = mc.hidden_size, I = mc.intermediate_size, Q = (mc.n_heads + 2 * mc.n_kv_heads) * mc.head_dim;
    cr_expect_eq(given, 4.0 * (C * Q + C * C + 3 * C * I) * sizeof(float));
    cr_expect(rss[0] - rss[1] > 0.8 * given, "resident memory %.0f lower for %.0f bytes given back",
              rss[0] - rss[1], given);
    cr_expect(peak[0] - peak[1] > 0.6 * packed, "peak %.0f lower for %.0f bytes packed",
              peak[0] - peak[1], packed);
    const int bad = steps_differing(got[0], got[1], 2, 10);
    cr_expect_eq(bad, 0, "%d steps differ after the matrices were discarded", bad);
    for (int b = 0; b < 2; b++) {
        collector_free(got[b]);
        free(got[b]);
    }
}

Test(generate, team_matches_team_per_op)
{
    team_case(W_F32);
    team_case(W_BF16);
    team_case(W_Q8);
    team_case(W_Q4);
}
/* the bf16 matmuls are as batch-invariant as the fp32 ones */
Test(generate, output_independent_of_batch_bf16) { independent_of_batch(W_BF16); }
/* and so are the int8 ones: a row's inputs are quantized by the row alone */
Test(generate, output_independent_of_batch_q8_weights) { independent_of_batch(W_Q8); }
Test(generate, output_independent_of_batch_q4_weights) { independent_of_batch(W_Q4); }

/* ------------------------------------------------------------ n samples */

Test(generate, n_samples_share_prefill)
{
    enum { V = 40, P = 6 };
    struct model *m = test_model(V, 3);
    int32_t prompt[P] = {1, 5, 9, 13, 17, 21};
    struct collector *c = calloc(1, sizeof *c);
    struct gen_engine *e = engine(m, NULL, c, 4, 8, 64, 0);
    submit(e, "greedy", 0, prompt, P, 3, 10, 0.0f, false, 0);
    submit(e, "sampled", 1, prompt, P, 4, 10, 1.0f, true, 77);
    /* after the first step: both prompts prefilled, all 7 samples live,
     * sharing the one full prompt block of each request */
    char err[256];
    cr_assert_gt(gen_step(e, err, sizeof err), 0, "%s", err);
    struct gen_stats st;
    gen_stats_get(e, &st);
    cr_expect_eq(st.active, 7);
    /* per request: 1 shared full block + a partial block per sample */
    cr_expect_eq(st.kv_blocks_used, 2 * 1 + 7, "blocks used %d", st.kv_blocks_used);
    run_to_idle(e);
    for (int i = 0; i < 3; i++) {
        cr_assert(c->s[0][i].done);
        cr_expect_arr_eq(c->s[0][i].tok, c->s[0][0].tok, 10 * sizeof(int32_t), "greedy sample %d differs", i);
    }
    int distinct = 0;
    for (int i = 0; i < 4; i++) {
        cr_assert(c->s[1][i].done);
        cr_assert_eq(c->s[1][i].n, 10);
        if (i && memcmp(c->s[1][i].tok, c->s[1][0].tok, 10 * sizeof(int32_t))) distinct++;
    }
    cr_expect_gt(distinct, 0, "4 seeded samples are all identical");
    gen_stats_get(e, &st);
    cr_expect_eq(st.kv_blocks_used, 0);
    cr_expect_eq(st.kv_blocks_reserved, 0);
    /* sample 0 of n=4 is what n=1 with the same seed gives */
    struct collector *d = calloc(1, sizeof *d);
    struct gen_engine *e2 = engine(m, NULL, d, 4, 8, 64, 0);
    submit(e2, "one", 1, prompt, P, 1, 10, 1.0f, true, 77);
    run_to_idle(e2);
    cr_expect_arr_eq(d->s[1][0].tok, c->s[1][0].tok, 10 * sizeof(int32_t));
    /* a prompt ending on a block boundary (nothing to copy at the fork) */
    int32_t p8[8] = {2, 4, 6, 8, 10, 12, 14, 16};
    submit(e2, "b8", 2, p8, 8, 3, 6, 0.0f, false, 0);
    submit(e2, "b8-1", 3, p8, 8, 1, 6, 0.0f, false, 0);
    run_to_idle(e2);
    for (int i = 0; i < 3; i++)
        cr_expect_arr_eq(d->s[2][i].tok, d->s[3][0].tok, 6 * sizeof(int32_t), "sample %d", i);
    gen_engine_free(e2);
    /* admission counts the samples still to fork: 3 + 3 > 4 sequences, so
     * the second request waits for the first */
    struct collector *f = calloc(1, sizeof *f);
    e2 = engine(m, NULL, f, 4, 4, 64, 0);
    submit(e2, "a", 4, prompt, P, 3, 5, 1.0f, true, 1);
    submit(e2, "b", 5, prompt, P, 3, 5, 1.0f, true, 2);
    cr_assert_gt(gen_step(e2, err, sizeof err), 0, "%s", err);
    gen_stats_get(e2, &st);
    cr_expect_eq(st.active, 3);
    cr_expect_eq(st.waiting, 1);
    run_to_idle(e2);
    for (int i = 0; i < 3; i++) cr_expect(f->s[4][i].done && f->s[5][i].done);
    gen_engine_free(e2);
    free(f);
    gen_engine_free(e);
    free(c); free(d);
    model_free(m);
}

/* ---------------------------------------------------------- prefix cache */

/* The prefix registry of kv_cache against a plain model of it, over
 * random chains registered, referenced, released and evicted in a pool of
 * 24 blocks (a table of 64 slots, so probes wrap and removals shift
 * entries back): every registered block is found under its key and no
 * other, cached blocks are exactly the registered ones without references
 * and count as free, allocation takes a free block before a cached one
 * and the least recently released cached one first, and a block whose
 * predecessor was evicted is not found through the predecessor's new
 * contents. */
Test(generate, kv_prefix_registry)
{
    enum { NB = 24, BS = 2 };
    char err[256];
    const size_t block = (size_t)2 * 1 * 1 * BS * 8 * sizeof(float);
    struct kv_cache *kv = kv_cache_new(backend_cpu(), KV_F32, 1, 1, 8, BS, NB * block, err, sizeof err);
    cr_assert_not_null(kv, "%s", err);
    cr_assert_eq(kv_cache_prefix_enable(kv), 0);
    cr_assert_eq(kv->table_mask + 1, 64);
    /* chain 0 -> 1 -> 2 */
    const int32_t t[3][BS] = {{1, 2}, {3, 4}, {5, 6}};
    int32_t b[3];
    for (int i = 0; i < 3; i++) {
        b[i] = kv_cache_block_alloc(kv);
        cr_assert(kv_cache_prefix_add(kv, b[i], i ? b[i - 1] : -1, t[i]));
    }
    cr_expect_eq(kv_cache_prefix_find(kv, -1, t[0]), b[0]);
    cr_expect_eq(kv_cache_prefix_find(kv, b[0], t[1]), b[1]);
    cr_expect_eq(kv_cache_prefix_find(kv, -1, t[1]), -1, "found a block after the wrong parent");
    cr_expect_eq(kv_cache_prefix_find(kv, b[1], t[1]), -1);
    /* a second block with a registered key is refused, the first kept */
    int32_t dup = kv_cache_block_alloc(kv);
    cr_expect(!kv_cache_prefix_add(kv, dup, -1, t[0]));
    cr_expect(kv_cache_prefix_add(kv, b[0], -1, t[0]), "re-adding a block under its key");
    kv_cache_block_unref(kv, dup);
    /* released: cached, free to allocate, released order kept */
    kv_cache_block_unref(kv, b[2]);
    kv_cache_block_unref(kv, b[0]);
    kv_cache_block_unref(kv, b[1]);
    cr_expect_eq(kv->n_cached, 3);
    cr_expect_eq(kv_cache_used(kv), 0);
    cr_expect_eq(kv_cache_prefix_find(kv, b[0], t[1]), b[1]);
    /* taken back by a reference, then released again (now the newest) */
    kv_cache_block_ref(kv, b[2]);
    cr_expect_eq(kv->n_cached, 2);
    cr_expect_eq(kv_cache_used(kv), 1);
    kv_cache_block_unref(kv, b[2]);
    /* the 21 free blocks go first, then the cached ones, oldest released
     * first: b[0], b[1], b[2] */
    int32_t all[NB];
    for (int i = 0; i < NB - 3; i++) {
        all[i] = kv_cache_block_alloc(kv);
        cr_assert(all[i] != b[0] && all[i] != b[1] && all[i] != b[2], "a cached block went first");
    }
    cr_expect_eq(kv_cache_block_alloc(kv), b[0]);
    cr_expect_eq(kv_cache_prefix_find(kv, -1, t[0]), -1, "an evicted block is still found");
    cr_expect_eq(kv_cache_prefix_find(kv, b[0], t[1]), -1, "found through an evicted parent");
    /* b[0] reused for other tokens: b[1] still not reachable through it */
    const int32_t other[BS] = {9, 9};
    cr_assert(kv_cache_prefix_add(kv, b[0], -1, other));
    cr_expect_eq(kv_cache_prefix_find(kv, b[0], t[1]), -1, "found a child of the block's old contents");
    cr_expect_eq(kv_cache_block_alloc(kv), b[1]);
    cr_expect_eq(kv_cache_block_alloc(kv), b[2]);
    cr_expect_eq(kv_cache_block_alloc(kv), -1);
    cr_expect_eq(kv->n_cached, 0);
    kv_cache_free(kv);

    /* random operations against a model: key -> block */
    kv = kv_cache_new(backend_cpu(), KV_F32, 1, 1, 8, BS, NB * block, err, sizeof err);
    cr_assert_not_null(kv, "%s", err);
    cr_assert_eq(kv_cache_prefix_enable(kv), 0);
    struct rng g;
    rng_seed(&g, 11);
    int32_t held[NB], nheld = 0;
    int32_t mparent[NB], mtok[NB][BS];
    bool mreg[NB] = {false};
    for (int it = 0; it < 20000; it++) {
        const int op = (int)(rng_next(&g) % 4);
        if (op < 2) {
            int32_t nb = kv_cache_block_alloc(kv);
            if (nb < 0) { cr_assert_eq(nheld, NB); continue; }
            mreg[nb] = false;       /* evicted, or never registered */
            held[nheld++] = nb;
            /* register under a random small key after a random registered
             * parent (or none) */
            int32_t par = -1;
            int32_t cand = (int32_t)(rng_next(&g) % NB);
            if (rng_next(&g) % 2 && mreg[cand] && cand != nb) par = cand;
            int32_t tk[BS] = {(int32_t)(rng_next(&g) % 3), (int32_t)(rng_next(&g) % 3)};
            int32_t found = kv_cache_prefix_find(kv, par, tk);
            bool added = kv_cache_prefix_add(kv, nb, par, tk);
            cr_assert_eq(added, found < 0, "add %d: found %d", added, found);
            if (added) {
                mreg[nb] = true;
                mparent[nb] = par;
                memcpy(mtok[nb], tk, sizeof tk);
            }
        } else if (nheld) {
            int i = (int)(rng_next(&g) % (uint64_t)nheld);
            kv_cache_block_unref(kv, held[i]);
            held[i] = held[--nheld];
        }
        /* a parent evicted since: its children are unreachable, as the
         * model says when the parent's registration is newer */
        int cached = 0;
        for (int32_t x = 0; x < NB; x++) {
            cr_assert_eq(kv->registered[x] != 0, mreg[x], "block %d registration", x);
            if (!mreg[x]) continue;
            if (kv->refs[x] == 0) cached++;
            const int32_t p = mparent[x];
            if (p >= 0 && (!mreg[p] || kv->gen[p] != kv->parent_gen[x])) continue;
            cr_assert_eq(kv_cache_prefix_find(kv, p, mtok[x]), x, "block %d not found", x);
        }
        cr_assert_eq(kv->n_cached, cached);
        cr_assert_eq(kv_cache_used(kv), nheld);
    }
    kv_cache_prefix_clear(kv);
    for (int32_t x = 0; x < NB; x++) cr_assert(!kv->registered[x]);
    cr_assert_eq(kv->n_cached, 0);
    cr_assert_eq(kv_cache_used(kv), nheld);
    for (int i = 0; i < NB - nheld; i++) cr_assert_geq(kv_cache_block_alloc(kv), 0);
    cr_assert_eq(kv_cache_block_alloc(kv), -1);
    kv_cache_free(kv);
}

/* A prompt whose first blocks another request computed reuses them and
 * gives bitwise the tokens, logprobs and logits of an engine without the
 * cache: after an unrelated prompt sharing 3 blocks, while a request
 * holding them runs (two at once), with n = 3 samples, and for a prompt
 * ending on a block boundary (its last block is computed again). Prompt
 * logprobs compute the whole prompt. */
Test(generate, prefix_cache_reuses_blocks_bitwise)
{
    enum { V = 40, P = 14, M = 10 };
    const int32_t a[P] = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7};
    int32_t x[P];
    memcpy(x, a, sizeof x);
    x[12] = 20;                             /* shares blocks 0-2 (bs 4) */
    struct model *m = test_model(V, 21);
    static struct collector ref, c;
    ref.keep_logits = c.keep_logits = true;
    /* reference: no cache; request 0 greedy, 1 seeded n = 3 with logprobs */
    struct gen_engine *e = engine(m, NULL, &ref, 4, 8, 64, 0);
    submit(e, "a", 0, a, P, 1, M, 0.0f, false, 0);
    submit(e, "s", 1, a, P, 3, M, 1.0f, true, 5);
    submit(e, "b", 2, a, 12, 1, M, 0.0f, false, 0);
    run_to_idle(e);
    gen_engine_free(e);

    test_prefix_cache = true;
    e = engine(m, NULL, &c, 4, 8, 64, 0);
    submit(e, "x", 7, x, P, 1, 4, 0.0f, false, 0);
    run_to_idle(e);
    struct gen_stats st;
    gen_stats_get(e, &st);
    cr_expect_eq(st.prefix_hits, 0);
    cr_expect_eq(st.kv_blocks_used, 0);
    cr_expect_eq(st.kv_blocks_cached, 4, "blocks kept: %d", st.kv_blocks_cached);
    submit(e, "a", 0, a, P, 1, M, 0.0f, false, 0);
    run_to_idle(e);
    cr_expect_eq(c.s[0][0].cached_tokens, 12);
    gen_stats_get(e, &st);
    cr_expect_eq(st.prefix_hits, 12);
    cr_expect_eq(st.prefix_queries, 12 + 12);
    cr_expect_eq(st.tokens_prefilled, P + 2, "prefilled %lld: the cached positions again?",
                 st.tokens_prefilled);
    /* two at once while nothing runs: both take the cached blocks (the
     * first prefills the rest of its prompt, the second too) */
    submit(e, "s", 1, a, P, 3, M, 1.0f, true, 5);
    submit(e, "b", 2, a, 12, 1, M, 0.0f, false, 0);
    char err[256];
    cr_assert_gt(gen_step(e, err, sizeof err), 0, "%s", err);
    gen_stats_get(e, &st);
    cr_expect_eq(st.active, 4);
    run_to_idle(e);
    cr_expect_eq(c.s[1][0].cached_tokens, 12);
    cr_expect_eq(c.s[1][2].cached_tokens, 12);
    cr_expect_eq(c.s[2][0].cached_tokens, 8, "a 12-token prompt computes its last block");
    for (int r = 0; r < 3; r++)
        for (int i = 0; i < (r == 1 ? 3 : 1); i++) {
            const struct sample_out *o = &c.s[r][i], *w = &ref.s[r][i];
            cr_assert(o->done && o->n == M && w->n == M, "request %d sample %d", r, i);
            cr_expect_arr_eq(o->tok, w->tok, M * sizeof(int32_t), "request %d sample %d tokens", r, i);
            cr_expect_arr_eq(o->lp, w->lp, M * sizeof(float), "request %d sample %d logprobs", r, i);
            for (int t = 0; t < M; t++)
                cr_expect(!memcmp(o->logits[t], w->logits[t], V * sizeof(float)),
                          "request %d sample %d: logits of token %d differ", r, i, t);
        }
    /* prompt logprobs: the whole prompt computed, the same figures */
    static struct collector p1, p2;
    struct gen_request rq;
    gen_request_default(&rq);
    rq.id = "lp";
    rq.prompt = a;
    rq.n_prompt = P;
    rq.max_tokens = 1;
    rq.sampling.temperature = 0;
    rq.prompt_logprobs = 2;
    struct gen_engine *e2 = engine(m, NULL, &p2, 4, 8, 64, 0);
    cr_assert_eq(gen_submit(e2, &rq, err, sizeof err), 0, "%s", err);
    run_to_idle(e2);
    gen_engine_free(e2);
    gen_engine_free(e);
    e = engine(m, NULL, &p1, 4, 8, 64, 0);
    submit(e, "warm", 3, a, P, 1, 1, 0.0f, false, 0);
    run_to_idle(e);
    cr_assert_eq(gen_submit(e, &rq, err, sizeof err), 0, "%s", err);
    run_to_idle(e);
    cr_expect_eq(p1.s[0][0].cached_tokens, 0);
    cr_expect_arr_eq(p1.prompt_lp + 1, p2.prompt_lp + 1, (P - 1) * sizeof(float));
    test_prefix_cache = false;
    gen_engine_free(e);
    collector_free(&ref);
    collector_free(&c);
    model_free(m);
}

/* Speculative decoding by prompt lookup changes the number of steps only:
 * greedy, seeded samples (n = 3), penalties, a stop id and max_tokens
 * reached inside a step's drafts, alone and in a batch (over spec_max_seqs
 * the steps take no drafts), give the tokens, logprobs and logits of the
 * engine without drafts, bitwise. The random model's outputs rarely repeat,
 * so most drafts are refused; a logit_bias forcing one token makes a
 * request whose drafts are all kept. */
/* Sample i of request q with drafts (o) and without (w): the same events,
 * bitwise (their logits too, when kept). */
static void spec_same(const struct sample_out *o, const struct sample_out *w, int q, int i, int V)
{
    cr_assert_eq(o->done, w->done, "request %d sample %d", q, i);
    cr_assert_eq(o->n, w->n, "request %d sample %d: %d tokens, without drafts %d", q, i, o->n, w->n);
    cr_expect_eq(o->finish, w->finish, "request %d sample %d", q, i);
    cr_expect_arr_eq(o->tok, w->tok, (size_t)o->n * sizeof(int32_t), "request %d sample %d", q, i);
    cr_expect_arr_eq(o->lp, w->lp, (size_t)o->n * sizeof(float), "request %d sample %d", q, i);
    cr_expect_str_eq(o->full, w->full, "request %d sample %d", q, i);
    cr_expect_eq(o->cached_tokens, w->cached_tokens, "request %d sample %d", q, i);
    for (int t = 0; t < o->n && o->logits[t]; t++)
        cr_expect(!memcmp(o->logits[t], w->logits[t], (size_t)V * sizeof(float)),
                  "request %d sample %d: logits of token %d differ", q, i, t);
}

static void spec_run(struct collector *c, int spec, struct model *draft, struct gen_stats *st,
                     long long *greedy_steps)
{
    enum { V = 24, P = 9 };
    const int32_t a[P] = {3, 1, 4, 1, 5, 9, 2, 6, 5};
    const int32_t b[P] = {7, 7, 7, 8, 7, 7, 7, 8, 7};
    struct model *m = test_model(V, 33);
    c->keep_logits = true;
    test_spec_tokens = spec;
    test_spec_model = draft;
    struct gen_engine *e = engine(m, NULL, c, 4, 8, 64, 0);
    test_spec_tokens = 0;
    test_spec_model = NULL;
    /* alone: greedy; seeded at temperature 0.7 with penalties, n = 3 */
    submit(e, "g", 0, a, P, 1, 60, 0.0f, false, 0);
    run_to_idle(e);
    gen_stats_get(e, st);
    *greedy_steps = st->steps;
    struct gen_request r;
    gen_request_default(&r);
    r.id = "p";
    r.user = (void *)(intptr_t)1;
    r.prompt = b;
    r.n_prompt = P;
    r.n = 3;
    r.max_tokens = 50;
    r.sampling.temperature = 0.7f;
    r.sampling.repetition_penalty = 1.1f;
    r.sampling.frequency_penalty = 0.05f;
    r.has_seed = true;
    r.seed = 11;
    r.ignore_eos = true;
    char err[256];
    cr_assert_eq(gen_submit(e, &r, err, sizeof err), 0, "%s", err);
    run_to_idle(e);
    /* a stop id; then six at once (more than spec_max_seqs at first) */
    const int32_t stop = 2;
    r.id = "s";
    r.user = (void *)(intptr_t)2;
    r.prompt = a;
    r.n = 1;
    r.sampling.temperature = 0;
    r.stop_ids = &stop;
    r.n_stop_ids = 1;
    cr_assert_eq(gen_submit(e, &r, err, sizeof err), 0, "%s", err);
    run_to_idle(e);
    struct gen_stats s0;
    gen_stats_get(e, &s0);
    const int32_t forced = 5;
    const float plus = 100;
    r.id = "f";
    r.user = (void *)(intptr_t)3;
    r.max_tokens = 41;
    r.n_stop_ids = 0;
    r.bias_ids = &forced;
    r.bias_vals = &plus;
    r.n_bias = 1;
    cr_assert_eq(gen_submit(e, &r, err, sizeof err), 0, "%s", err);
    run_to_idle(e);
    gen_stats_get(e, st);
    /* 41 tokens: the prefill's 5; then "5" looked up in the prompt, whose
     * drafts "9 2 6 5" fail at once; then "5 5" and "5 5 5" found in the
     * output, with 1, 2, then 4 tokens after them: 1 + 1 + 2 + 3 + 5 * 7
     * tokens (the last step's drafts cut at max_tokens) in 11 steps (by
     * prompt lookup; a draft model's greedy drafts ignore the bias) */
    if (!draft)
        cr_expect_eq(st->steps - s0.steps, spec ? 11 : 41, "%lld steps", st->steps - s0.steps);
    for (int i = 4; i < 7; i++) submit(e, "x", i, i % 2 ? a : b, P - i % 3, 1, 13 + 7 * i, 0.0f, false, 0);
    submit(e, "y", 7, b, P, 2, 40, 1.0f, true, 3);
    run_to_idle(e);
    gen_stats_get(e, st);
    gen_engine_free(e);
    model_free(m);
}

/* ... and with a draft model: the model itself as its draft (its greedy
 * drafts are all kept: the draft engine's logits are the model's,
 * bitwise) and another random model of the same vocabulary (most
 * refused, so soon seldom asked for). The greedy request alone: 60 tokens in 60 steps without
 * drafts; with the model as its draft, the prefill's token then 5 a step
 * (the last step's drafts cut at max_tokens): 1 + 12 steps. */
Test(generate, speculative_decoding_is_exact)
{
    static struct collector ref, look, twin, other;
    struct gen_stats sr, sl, st, so;
    long long gr, gl, gt, go;
    struct model *same = test_model(24, 33), *stranger = test_model(24, 77);
    spec_run(&ref, 0, NULL, &sr, &gr);
    spec_run(&look, 4, NULL, &sl, &gl);
    spec_run(&twin, 4, same, &st, &gt);
    spec_run(&other, 4, stranger, &so, &go);
    cr_expect_eq(sr.spec_drafted, 0);
    cr_expect_gt(sl.spec_drafted, 100);
    cr_expect_gt(sl.spec_accepted, 40, "lookup: kept %lld of %lld drafts", sl.spec_accepted,
                 sl.spec_drafted);
    cr_expect_eq(gr, 60);
    cr_expect_eq(gt, 13, "%lld steps with the model as its own draft", gt);
    cr_expect_gt(st.spec_accepted, so.spec_accepted + 50, "the model as its draft kept %lld of "
                 "%lld drafts, another model %lld of %lld", st.spec_accepted, st.spec_drafted,
                 so.spec_accepted, so.spec_drafted);
    /* drafts that keep failing are asked for less and less (spec_adapt):
     * measured 86 in 212 steps, against 4 a step without */
    cr_expect(so.spec_drafted > 0 && so.spec_drafted < so.steps / 2,
              "another model drafted %lld (kept %lld) in %lld steps", so.spec_drafted,
              so.spec_accepted, so.steps);
    const struct collector *cs[] = {&look, &twin, &other};
    const struct gen_stats *ss[] = {&sl, &st, &so};
    for (int k = 0; k < 3; k++) {
        cr_expect_eq(ss[k]->tokens_generated, sr.tokens_generated);
        cr_expect_eq(ss[k]->kv_blocks_used, 0);
        cr_expect_eq(ss[k]->kv_blocks_reserved, 0);
        for (int q = 0; q < MAXR; q++)
            for (int i = 0; i < MAXS; i++) spec_same(&cs[k]->s[q][i], &ref.s[q][i], q, i, 24);
        cr_expect_eq(cs[k]->s[2][0].finish, GEN_FINISH_STOP, "the stop id never came");
    }
    collector_free(&ref);
    collector_free(&look);
    collector_free(&twin);
    collector_free(&other);
    model_free(same);
    model_free(stranger);
}

/* The draft model must share the model's vocabulary. */
Test(generate, draft_model_vocabulary_must_match)
{
    struct model *m = test_model(24, 33), *d = test_model(40, 33);
    struct gen_config cfg;
    gen_config_default(&cfg);
    cfg.kv_bytes = (size_t)4 << 20;
    cfg.spec_tokens = 4;
    cfg.spec_model = d;
    char err[256] = "";
    cr_expect_null(gen_engine_new(m, NULL, &cfg, NULL, NULL, err, sizeof err));
    cr_expect(strstr(err, "40 tokens") && strstr(err, "24"), "%s", err);
    model_free(m);
    model_free(d);
}

/* Preemption: in a cache too small for all of them at once, requests run
 * as far as blocks allow, the newest give theirs back and resume later,
 * computed again; outputs are those of a cache holding everything, bitwise
 * (greedy, seeded n = 3 with penalties, top-p, a stop id, prompt
 * logprobs, a long prompt), with the prefix cache off and on, with drafts;
 * a preempted request cancelled; all blocks back at the end. */
static void preempt_run(struct collector *c, size_t kv, struct gen_stats *st, bool cancel)
{
    enum { V = 40 };
    int32_t p[6][32];
    for (int r = 0; r < 6; r++)
        for (int i = 0; i < 32; i++) p[r][i] = (7 * i + 3 * r + i * i % 5) % V;
    struct model *m = test_model(V, 41);
    c->keep_logits = true;
    struct gen_engine *e = engine(m, NULL, c, 4, 8, 64, kv);
    submit(e, "g", 0, p[0], 10, 1, 40, 0.0f, false, 0);
    struct gen_request r;
    gen_request_default(&r);
    r.id = "n3";
    r.user = (void *)(intptr_t)1;
    r.prompt = p[1];
    r.n_prompt = 9;
    r.n = 3;
    r.max_tokens = 30;
    r.has_seed = true;
    r.seed = 5;
    r.ignore_eos = true;
    r.sampling.repetition_penalty = 1.2f;
    r.sampling.presence_penalty = 0.3f;
    char err[256];
    cr_assert_eq(gen_submit(e, &r, err, sizeof err), 0, "%s", err);
    const int32_t stop = 17;
    gen_request_default(&r);
    r.id = "stop";
    r.user = (void *)(intptr_t)2;
    r.prompt = p[2];
    r.n_prompt = 11;
    r.max_tokens = 40;
    r.sampling.temperature = 0;
    r.stop_ids = &stop;
    r.n_stop_ids = 1;
    cr_assert_eq(gen_submit(e, &r, err, sizeof err), 0, "%s", err);
    gen_request_default(&r);
    r.id = "topp";
    r.user = (void *)(intptr_t)3;
    r.prompt = p[3];
    r.n_prompt = 13;
    r.max_tokens = 35;
    r.sampling.temperature = 0.8f;
    r.sampling.top_p = 0.9f;
    r.has_seed = true;
    r.seed = 9;
    r.ignore_eos = true;
    r.prompt_logprobs = 2;
    cr_assert_eq(gen_submit(e, &r, err, sizeof err), 0, "%s", err);
    submit(e, "long", 4, p[4], 30, 1, 20, 1.0f, true, 2);
    submit(e, "late", 5, p[5], 12, 1, 36, 1.0f, true, 3);
    if (cancel) {
        struct gen_stats s0;
        do {
            cr_assert_geq(gen_step(e, err, sizeof err), 0, "%s", err);
            gen_stats_get(e, &s0);
        } while (s0.preemptions == 0);
        gen_cancel(e, "late");
    }
    run_to_idle(e);
    gen_stats_get(e, st);
    gen_engine_free(e);
    model_free(m);
}

Test(generate, preemption_is_exact)
{
    const struct model_config cfg = test_cfg(40);
    const size_t block = (size_t)cfg.n_layers * 2 * cfg.n_kv_heads * 4 * cfg.head_dim *
                         kv_dtype_size(test_kv_dtype);
    static struct collector ref, c;
    struct gen_stats sr, sc;
    preempt_run(&ref, 0, &sr, false);
    cr_assert_eq(sr.preemptions, 0);
    for (int variant = 0; variant < 3; variant++) {
        test_prefix_cache = variant >= 1;
        test_spec_tokens = variant == 2 ? 3 : 0;
        memset(&c, 0, sizeof c);
        /* n3 alone needs 10 + 2 * 8 blocks at most: 26 fit, not all */
        preempt_run(&c, 26 * block, &sc, false);
        test_prefix_cache = false;
        test_spec_tokens = 0;
        cr_expect_gt(sc.preemptions, 2, "variant %d: %lld preemptions", variant, sc.preemptions);
        cr_expect_eq(sc.kv_blocks_used, 0);
        cr_expect_eq(sc.kv_blocks_reserved, 0);
        cr_expect_eq(sc.active + sc.waiting, 0);
        for (int q = 0; q < 6; q++)
            for (int i = 0; i < (q == 1 ? 3 : 1); i++) {
                const struct sample_out *o = &c.s[q][i], *w = &ref.s[q][i];
                cr_assert(o->done && w->done && o->n == w->n, "variant %d request %d sample %d: "
                          "%d tokens, %d in a larger cache", variant, q, i, o->n, w->n);
                cr_expect_eq(o->finish, w->finish);
                cr_expect_arr_eq(o->tok, w->tok, (size_t)o->n * sizeof(int32_t),
                                 "variant %d request %d sample %d", variant, q, i);
                cr_expect_arr_eq(o->lp, w->lp, (size_t)o->n * sizeof(float));
                for (int t = 0; t < o->n; t++)
                    cr_expect(!memcmp(o->logits[t], w->logits[t], 40 * sizeof(float)),
                              "variant %d request %d sample %d: logits of token %d", variant, q,
                              i, t);
            }
        cr_expect_arr_eq(c.prompt_lp + 1, ref.prompt_lp + 1, 12 * sizeof(float));
        cr_expect_arr_eq(c.prompt_top, ref.prompt_top, sizeof c.prompt_top);
        cr_expect_eq(c.prompt_events, 1);
        cr_expect_eq(c.s[2][0].finish, GEN_FINISH_STOP, "the stop id never came");
        collector_free(&c);
    }
    /* cancelled once something was preempted: its done event, its blocks
     * back, the others unchanged */
    memset(&c, 0, sizeof c);
    preempt_run(&c, 26 * block, &sc, true);
    cr_expect(c.s[5][0].done && c.s[5][0].finish == GEN_FINISH_CANCELLED);
    cr_expect_eq(sc.kv_blocks_used, 0);
    cr_expect_eq(sc.kv_blocks_reserved, 0);
    for (int q = 0; q < 5; q++)
        cr_expect_arr_eq(c.s[q][0].tok, ref.s[q][0].tok, (size_t)ref.s[q][0].n * sizeof(int32_t),
                         "request %d", q);
    collector_free(&c);
    collector_free(&ref);
}

/* Admission counts the blocks a running sequence shares with a new prompt
 * once: in a pool of 8 blocks (bs 4), a running request holds 6; the same
 * 13-token prompt again needs 4 blocks, 3 of them the running one's, so
 * it starts at once (without the cache it would wait), and both give the
 * cache-less engine's tokens. */
Test(generate, prefix_cache_admits_on_shared_blocks)
{
    enum { V = 40, P = 13 };
    int32_t a[P];
    for (int i = 0; i < P; i++) a[i] = (5 * i + 3) % V;
    struct model *m = test_model(V, 24);
    const struct model_config cfg = m->cfg;
    const size_t block = (size_t)cfg.n_layers * 2 * cfg.n_kv_heads * 4 * cfg.head_dim *
                         kv_dtype_size(test_kv_dtype);
    static struct collector ref, c, nc;
    struct gen_engine *e = engine(m, NULL, &ref, 4, 8, 64, 0);
    submit(e, "a", 0, a, P, 1, 12, 0.0f, false, 0);
    submit(e, "b", 1, a, P, 1, 4, 1.0f, true, 3);
    run_to_idle(e);
    gen_engine_free(e);
    for (int cached = 0; cached < 2; cached++) {
        test_prefix_cache = cached;
        struct collector *o = cached ? &c : &nc;
        e = engine(m, NULL, o, 4, 8, 64, 8 * block);
        char err[256];
        submit(e, "a", 0, a, P, 1, 12, 0.0f, false, 0);
        cr_assert_gt(gen_step(e, err, sizeof err), 0, "%s", err);
        submit(e, "b", 1, a, P, 1, 4, 1.0f, true, 3);
        cr_assert_gt(gen_step(e, err, sizeof err), 0, "%s", err);
        struct gen_stats st;
        gen_stats_get(e, &st);
        cr_expect_eq(st.active, cached ? 2 : 1, "cache %d: %d active", cached, st.active);
        cr_expect_eq(st.waiting, cached ? 0 : 1, "cache %d: %d waiting", cached, st.waiting);
        /* a's 4 blocks so far, b's own block of position 12; nothing
         * promised (blocks are taken as positions need them) */
        if (cached)
            cr_expect(st.kv_blocks_used == 4 + 1 && st.kv_blocks_reserved == 0,
                      "%d blocks used, %d reserved", st.kv_blocks_used, st.kv_blocks_reserved);
        run_to_idle(e);
        cr_expect_eq(o->s[1][0].cached_tokens, cached ? 12 : 0);
        gen_stats_get(e, &st);
        cr_expect_eq(st.kv_blocks_used, 0);
        cr_expect_eq(st.kv_blocks_reserved, 0);
        for (int r = 0; r < 2; r++) {
            cr_assert_eq(o->s[r][0].n, r ? 4 : 12);
            cr_expect_arr_eq(o->s[r][0].tok, ref.s[r][0].tok, (r ? 4 : 12) * sizeof(int32_t),
                             "cache %d request %d", cached, r);
        }
        gen_engine_free(e);
    }
    test_prefix_cache = false;
    model_free(m);
}

/* A pool of 6 blocks (bs 4), too small to keep what finished: cached
 * blocks are evicted least recently released first as new sequences need
 * them, a request needing the whole pool still runs, and the outputs stay
 * those of an engine without the cache. A change of weights empties the
 * cache. */
Test(generate, prefix_cache_eviction_and_weight_changes)
{
    enum { V = 40 };
    const int32_t a[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, b[9] = {9, 8, 7, 6, 5, 4, 3, 2, 1};
    const int32_t c13[13] = {4, 4, 4, 4, 3, 3, 3, 3, 2, 2, 2, 2, 1};
    int32_t d21[21];
    for (int i = 0; i < 21; i++) d21[i] = (i * 7) % V;
    struct model *m = test_model(V, 22);
    const struct model_config cfg = m->cfg;
    const size_t block = (size_t)cfg.n_layers * 2 * cfg.n_kv_heads * 4 * cfg.head_dim *
                         kv_dtype_size(test_kv_dtype);
    static struct collector ref, c;
    struct gen_engine *e = engine(m, NULL, &ref, 4, 8, 64, 6 * block);
    submit(e, "a", 0, a, 9, 1, 1, 0.0f, false, 0);
    submit(e, "b", 1, b, 9, 1, 1, 0.0f, false, 0);
    submit(e, "c", 2, c13, 13, 1, 4, 0.0f, false, 0);
    submit(e, "d", 3, d21, 21, 1, 4, 0.0f, false, 0);
    run_to_idle(e);
    gen_engine_free(e);
    test_prefix_cache = true;
    e = engine(m, NULL, &c, 4, 8, 64, 6 * block);
    struct gen_stats st;
    gen_stats_get(e, &st);
    cr_assert_eq(st.kv_blocks_total, 6);
    /* a and b: 3 blocks each, their first 2 (full) kept */
    submit(e, "a", 0, a, 9, 1, 1, 0.0f, false, 0);
    run_to_idle(e);
    submit(e, "b", 1, b, 9, 1, 1, 0.0f, false, 0);
    run_to_idle(e);
    gen_stats_get(e, &st);
    cr_expect_eq(st.kv_blocks_cached, 4, "%d", st.kv_blocks_cached);
    cr_expect_eq(st.kv_blocks_used, 0);
    /* c: 16 positions, 4 blocks: the 2 free ones, then a's 2 (released
     * first) */
    submit(e, "c", 2, c13, 13, 1, 4, 0.0f, false, 0);
    run_to_idle(e);
    gen_stats_get(e, &st);
    cr_expect_eq(st.kv_blocks_cached, 6, "%d", st.kv_blocks_cached);
    memset(&c.s[0], 0, sizeof c.s[0]);
    memset(&c.s[1], 0, sizeof c.s[1]);
    submit(e, "b", 1, b, 9, 1, 1, 0.0f, false, 0);
    run_to_idle(e);
    cr_expect_eq(c.s[1][0].cached_tokens, 8, "b's blocks were evicted before a's");
    submit(e, "a", 0, a, 9, 1, 1, 0.0f, false, 0);
    run_to_idle(e);
    cr_expect_eq(c.s[0][0].cached_tokens, 0, "a's evicted blocks were found");
    /* d needs all 6 blocks: every cached one goes */
    submit(e, "d", 3, d21, 21, 1, 4, 0.0f, false, 0);
    run_to_idle(e);
    cr_expect_eq(c.s[3][0].cached_tokens, 0);
    gen_stats_get(e, &st);
    cr_expect_eq(st.kv_blocks_cached, 6, "d's 6 full blocks: %d", st.kv_blocks_cached);
    const int M[4] = {1, 1, 4, 4};
    for (int r = 0; r < 4; r++) {
        cr_assert_eq(c.s[r][0].n, M[r], "request %d", r);
        cr_expect_arr_eq(c.s[r][0].tok, ref.s[r][0].tok, M[r] * sizeof(int32_t), "request %d", r);
        cr_expect_arr_eq(c.s[r][0].lp, ref.s[r][0].lp, M[r] * sizeof(float), "request %d", r);
    }
    /* new weights: nothing cached is used, the outputs are the new model's */
    model_init_random(m, 23, 0.5f);
    memset(&c.s[3], 0, sizeof c.s[3]);
    submit(e, "d", 3, d21, 21, 1, 4, 0.0f, false, 0);
    run_to_idle(e);
    cr_expect_eq(c.s[3][0].cached_tokens, 0, "blocks of the old weights were used");
    static struct collector fresh;
    struct gen_engine *e2 = engine(m, NULL, &fresh, 4, 8, 64, 6 * block);
    submit(e2, "d", 3, d21, 21, 1, 4, 0.0f, false, 0);
    run_to_idle(e2);
    cr_assert_eq(c.s[3][0].n, 4);
    cr_expect_arr_eq(c.s[3][0].tok, fresh.s[3][0].tok, 4 * sizeof(int32_t));
    cr_expect_arr_eq(c.s[3][0].lp, fresh.s[3][0].lp, 4 * sizeof(float));
    /* the test shows something: the cache would have been used */
    memset(&c.s[3], 0, sizeof c.s[3]);
    submit(e, "d", 3, d21, 21, 1, 4, 0.0f, false, 0);
    run_to_idle(e);
    cr_expect_eq(c.s[3][0].cached_tokens, 20);
    test_prefix_cache = false;
    gen_engine_free(e2);
    gen_engine_free(e);
    model_free(m);
}

/* ---------------------------------------------------------- logit bias */

/* logit_bias: +100 makes token 7 the greedy and the sampled choice at
 * every step, -100 keeps the unbiased greedy first token out; logprobs
 * stay the raw model's (log-softmax of the unbiased logits); ids outside
 * the vocabulary and biases outside [-100, 100] are refused. */
Test(generate, logit_bias)
{
    enum { V = 40, P = 5, M = 8 };
    const int32_t prompt[P] = {3, 1, 4, 1, 5};
    struct model *m = test_model(V, 31);
    static struct collector c;
    c.keep_logits = true;
    struct gen_engine *e = engine(m, NULL, &c, 4, 8, 64, 0);
    struct gen_request r;
    gen_request_default(&r);
    r.prompt = prompt;
    r.n_prompt = P;
    r.max_tokens = M;
    r.ignore_eos = true;
    r.sampling.temperature = 0;
    char err[256];
    r.id = "plain";
    r.user = (void *)(intptr_t)0;
    cr_assert_eq(gen_submit(e, &r, err, sizeof err), 0, "%s", err);
    run_to_idle(e);
    const int32_t first = c.s[0][0].tok[0];
    const int32_t up = first == 7 ? 8 : 7;
    const float plus = 100.0f, minus = -100.0f;
    r.id = "up";
    r.user = (void *)(intptr_t)1;
    r.bias_ids = &up;
    r.bias_vals = &plus;
    r.n_bias = 1;
    cr_assert_eq(gen_submit(e, &r, err, sizeof err), 0, "%s", err);
    r.id = "up-sampled";
    r.user = (void *)(intptr_t)2;
    r.sampling.temperature = 1.0f;
    r.has_seed = true;
    r.seed = 9;
    cr_assert_eq(gen_submit(e, &r, err, sizeof err), 0, "%s", err);
    r.id = "down";
    r.user = (void *)(intptr_t)3;
    r.sampling.temperature = 0;
    r.bias_ids = &first;
    r.bias_vals = &minus;
    cr_assert_eq(gen_submit(e, &r, err, sizeof err), 0, "%s", err);
    run_to_idle(e);
    for (int u = 1; u <= 2; u++)
        for (int t = 0; t < M; t++) {
            cr_expect_eq(c.s[u][0].tok[t], up, "request %d token %d", u, t);
            /* the reported logprob is the unbiased distribution's */
            const float *lg = c.s[u][0].logits[t];
            float mx = lg[0];
            for (int v = 1; v < V; v++) mx = lg[v] > mx ? lg[v] : mx;
            double sum = 0;
            for (int v = 0; v < V; v++) sum += exp((double)lg[v] - mx);
            const double want = lg[up] - mx - log(sum);
            cr_expect(fabs(c.s[u][0].lp[t] - want) < 1e-4, "request %d token %d: logprob %g, raw %g",
                      u, t, c.s[u][0].lp[t], want);
        }
    cr_expect_neq(c.s[3][0].tok[0], first, "a banned token was chosen");
    const int32_t bad_id = V;
    r.bias_ids = &bad_id;
    r.bias_vals = &plus;
    cr_expect_neq(gen_submit(e, &r, err, sizeof err), 0);
    cr_expect(strstr(err, "logit_bias") != NULL, "%s", err);
    const float too_big = 101.0f;
    r.bias_ids = &up;
    r.bias_vals = &too_big;
    cr_expect_neq(gen_submit(e, &r, err, sizeof err), 0);
    cr_expect(strstr(err, "[-100, 100]") != NULL, "%s", err);
    gen_engine_free(e);
    collector_free(&c);
    model_free(m);
}

/* ------------------------------------------------------------ JSON mode */

/* JSON mode on the byte-level tokenizer and a random model: every sample
 * of 8, sampled and greedy, is the beginning of a JSON object at every
 * token, the ones that end (stop) as soon as it is whole parse as one;
 * with '{' and '}' pushed up the object is "{}" after 2 tokens; without a
 * tokenizer the request is refused. */
/* aha's byte-level tokenizer (tok_write_bytelevel), through a file */
static struct tokenizer *bytelevel_tokenizer(void)
{
    char path[] = "/tmp/aha-gen-tok-XXXXXX", err[256];
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    cr_assert_eq(tok_write_bytelevel(path, err, sizeof err), 0, "%s", err);
    struct tokenizer *tok = tok_load(path, err, sizeof err);
    unlink(path);
    cr_assert_not_null(tok, "%s", err);
    return tok;
}

Test(generate, json_object_mode)
{
    char err[256];
    struct tokenizer *tok = bytelevel_tokenizer();
    struct model *m = test_model(TOK_BYTELEVEL_VOCAB, 12);
    static struct collector c;
    struct gen_engine *e = engine(m, tok, &c, 8, 16, 64, (size_t)16 << 20);
    const int32_t prompt[4] = {'{', '"', 'a', '"'};
    struct gen_request r;
    gen_request_default(&r);
    r.prompt = prompt;
    r.n_prompt = 4;
    r.max_tokens = MAXT;
    r.json_object = true;
    r.id = "sampled";
    r.user = (void *)(intptr_t)0;
    r.n = MAXS;
    r.has_seed = true;
    r.seed = 4;
    cr_assert_eq(gen_submit(e, &r, err, sizeof err), 0, "%s", err);
    r.id = "greedy";
    r.user = (void *)(intptr_t)1;
    r.n = 1;
    r.sampling.temperature = 0;
    cr_assert_eq(gen_submit(e, &r, err, sizeof err), 0, "%s", err);
    const int32_t braces[2] = {'{', '}'};
    const float plus[2] = {100.0f, 100.0f};
    r.id = "closed";
    r.user = (void *)(intptr_t)2;
    r.bias_ids = braces;
    r.bias_vals = plus;
    r.n_bias = 2;
    cr_assert_eq(gen_submit(e, &r, err, sizeof err), 0, "%s", err);
    run_to_idle(e);
    int whole = 0;
    for (int u = 0; u < 2; u++)
        for (int i = 0; i < (u ? 1 : MAXS); i++) {
            const struct sample_out *o = &c.s[u][i];
            cr_assert(o->done && o->n > 0, "request %d sample %d", u, i);
            struct jg_state st;
            jg_init(&st, jg_schema_object());
            for (int t = 0; t < o->n; t++) {
                cr_assert(o->tok[t] < 256, "request %d sample %d: special token %d", u, i, o->tok[t]);
                cr_assert(jg_feed(&st, (unsigned char)o->tok[t]), "request %d sample %d: token %d "
                          "'%c' is no JSON here: %.*s", u, i, t, o->tok[t], t + 1, o->full);
                cr_assert(!jg_done(&st) || t == o->n - 1, "went on after the object was whole");
            }
            if (o->finish != GEN_FINISH_STOP) {
                cr_assert_eq(o->finish, GEN_FINISH_LENGTH);
                cr_assert_eq(o->n, MAXT);
                continue;
            }
            whole++;
            json_error_t je;
            json_t *j = json_loads(o->full, JSON_ALLOW_NUL, &je);
            cr_expect(j && json_is_object(j), "not an object (%s): %s", je.text, o->full);
            json_decref(j);
        }
    cr_expect_str_eq(c.s[2][0].full, "{}");
    cr_expect_eq(c.s[2][0].finish, GEN_FINISH_STOP);
    cr_log_info("json mode: %d of %d samples whole within %d tokens", whole, MAXS + 1, MAXT);
    gen_engine_free(e);
    /* no tokenizer: refused */
    static struct collector d;
    e = engine(m, NULL, &d, 8, 16, 64, 0);
    r.n_bias = 0;
    cr_expect_neq(gen_submit(e, &r, err, sizeof err), 0);
    cr_expect(strstr(err, "JSON mode") != NULL, "%s", err);
    gen_engine_free(e);
    tok_free(tok);
    model_free(m);
}

/* ---------------------------------------------------------- stop strings */

Test(generate, stop_strings_across_tokens)
{
    char err[256];
    struct tokenizer *tok = bytelevel_tokenizer();
    struct model *m = test_model(TOK_BYTELEVEL_VOCAB, 4);
    int32_t prompt[4] = {'a', 'b', 'c', 'd'};
    struct collector *c = calloc(1, sizeof *c);
    struct gen_engine *e = engine(m, tok, c, 8, 4, 64, 0);
    /* random ids: restrict to printable ASCII with the stop ids unusable,
     * so the text has one byte per token */
    struct gen_request r;
    gen_request_default(&r);
    r.id = "free";
    r.prompt = prompt;
    r.n_prompt = 4;
    r.max_tokens = 24;
    r.sampling.temperature = 0;
    r.ignore_eos = true;
    cr_assert_eq(gen_submit(e, &r, err, sizeof err), 0, "%s", err);
    run_to_idle(e);
    struct sample_out *o = &c->s[0][0];
    cr_assert(o->done);
    cr_assert_str_eq(o->text, o->full, "streamed text != done text");
    /* a stop string made of two consecutive non-empty token texts */
    int i = 2;
    while (i + 1 < o->n && (!o->pieces[i][0] || !o->pieces[i + 1][0])) i++;
    cr_assert(i + 1 < o->n, "no two consecutive text pieces in \"%s\"", o->full);
    char stop[130];
    snprintf(stop, sizeof stop, "%s%s", o->pieces[i], o->pieces[i + 1]);
    const char *at = strstr(o->full, stop);
    cr_assert_not_null(at);
    size_t want = (size_t)(at - o->full);
    const char *stops[1] = {stop};
    r.id = "stopped";
    r.user = (void *)1;
    r.stop = stops;
    r.n_stop = 1;
    cr_assert_eq(gen_submit(e, &r, err, sizeof err), 0, "%s", err);
    run_to_idle(e);
    struct sample_out *s = &c->s[1][0];
    cr_assert(s->done);
    cr_expect_eq(s->finish, GEN_FINISH_STOP);
    cr_expect_eq(strlen(s->full), want, "text \"%s\" (stop \"%s\" in \"%s\")", s->full, stop, o->full);
    cr_expect(strncmp(s->full, o->full, want) == 0);
    cr_expect_str_eq(s->text, s->full, "streamed text leaked part of the stop string");
    cr_expect_leq(s->n, i + 2);
    /* stop token id: stops at the first occurrence, the id is included */
    r.id = "stopid";
    r.user = (void *)2;
    r.n_stop = 0;
    int32_t sid = o->tok[3];
    r.stop_ids = &sid;
    r.n_stop_ids = 1;
    cr_assert_eq(gen_submit(e, &r, err, sizeof err), 0, "%s", err);
    run_to_idle(e);
    int first = 0;
    while (o->tok[first] != sid) first++;
    cr_expect_eq(c->s[2][0].n, first + 1);
    cr_expect_eq(c->s[2][0].finish, GEN_FINISH_STOP);
    gen_engine_free(e);
    collector_free(c);
    free(c);
    model_free(m);
    tok_free(tok);
}

/* ------------------------------------------------ cancel, memory, queueing */

Test(generate, cancel_frees_kv)
{
    struct model *m = test_model(30, 6);
    int32_t prompt[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    struct collector *c = calloc(1, sizeof *c);
    struct gen_engine *e = engine(m, NULL, c, 4, 8, 64, 0);
    submit(e, "long", 0, prompt, 10, 2, 60, 1.0f, true, 1);
    char err[256];
    for (int i = 0; i < 3; i++) cr_assert_gt(gen_step(e, err, sizeof err), 0);
    struct gen_stats st;
    gen_stats_get(e, &st);
    cr_assert_gt(st.kv_blocks_used, 0);
    cr_assert_eq(gen_cancel(e, "nope"), 0);
    cr_assert_eq(gen_cancel(e, "long"), 1);
    gen_stats_get(e, &st);
    cr_expect_eq(st.kv_blocks_used, 0);
    cr_expect_eq(st.kv_blocks_reserved, 0);
    cr_expect_eq(st.active, 0);
    cr_expect(c->s[0][0].done && c->s[0][1].done);
    cr_expect_eq(c->s[0][0].finish, GEN_FINISH_CANCELLED);
    cr_expect(gen_idle(e));
    /* cancel while queued and while prefilling with n > 1 */
    submit(e, "q", 1, prompt, 10, 3, 5, 1.0f, true, 1);
    cr_expect_eq(gen_cancel(e, "q"), 1);
    cr_expect(c->s[1][0].done && c->s[1][1].done && c->s[1][2].done);
    gen_engine_free(e);
    struct collector *d = calloc(1, sizeof *d);
    e = engine(m, NULL, d, 4, 8, 8, 0);     /* 8-row steps: 10-token prompt takes 2 */
    submit(e, "p", 2, prompt, 10, 3, 5, 1.0f, true, 1);
    cr_assert_gt(gen_step(e, err, sizeof err), 0);
    gen_stats_get(e, &st);
    cr_assert_eq(st.active, 1);
    cr_expect_eq(gen_cancel(e, "p"), 1);
    cr_expect(d->s[2][0].done && d->s[2][1].done && d->s[2][2].done);
    gen_stats_get(e, &st);
    cr_expect_eq(st.kv_blocks_used, 0);
    cr_expect_eq(st.kv_blocks_reserved, 0);
    gen_engine_free(e);
    free(c); free(d);
    model_free(m);
}

Test(generate, memory_refusal_and_queueing)
{
    struct model *m = test_model(30, 6);
    /* block of 4 positions: 2 layers * 2 (k,v) * 2 heads * 4 * 8 halves */
    const size_t block = (size_t)2 * 2 * 2 * 4 * 8 * sizeof(uint16_t);
    struct collector *c = calloc(1, sizeof *c);
    struct gen_engine *e = engine(m, NULL, c, 4, 8, 64, 6 * block);
    int32_t prompt[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    struct gen_request r;
    gen_request_default(&r);
    r.id = "big";
    r.prompt = prompt;
    r.n_prompt = 10;
    r.max_tokens = 20;          /* 29 positions = 8 blocks > 6 */
    char err[256];
    cr_assert_eq(gen_submit(e, &r, err, sizeof err), -1);
    cr_expect(strstr(err, "KV blocks") && strstr(err, "cache holds 6"), "%s", err);
    r.max_tokens = 5; r.n = 3;  /* 2 shared + 3 * 2 = 8 > 6 */
    cr_assert_eq(gen_submit(e, &r, err, sizeof err), -1);
    /* two that fit one at a time: both start (their prompts fit), the
     * second gives its blocks back when the first needs them, and resumes
     * after it, with the same output */
    submit(e, "a", 0, prompt, 10, 1, 8, 1.0f, true, 1);     /* 17 positions: 5 blocks */
    submit(e, "b", 1, prompt, 10, 1, 8, 1.0f, true, 1);
    cr_assert_gt(gen_step(e, err, sizeof err), 0);
    struct gen_stats st;
    gen_stats_get(e, &st);
    cr_expect_eq(st.active, 2);
    cr_expect_eq(st.waiting, 0);
    run_to_idle(e);
    gen_stats_get(e, &st);
    cr_expect_geq(st.preemptions, 1);
    cr_expect_eq(st.kv_blocks_used, 0);
    cr_expect_eq(st.kv_blocks_reserved, 0);
    cr_expect(c->s[0][0].done && c->s[1][0].done);
    cr_expect_arr_eq(c->s[0][0].tok, c->s[1][0].tok, 8 * sizeof(int32_t));
    /* invalid requests */
    int32_t badtok = 30;
    r.prompt = &badtok; r.n_prompt = 1; r.n = 1;
    cr_expect_eq(gen_submit(e, &r, err, sizeof err), -1);
    cr_expect(strstr(err, "vocabulary"), "%s", err);
    r.prompt = prompt; r.n_prompt = 0;
    cr_expect_eq(gen_submit(e, &r, err, sizeof err), -1);
    r.n_prompt = 2; r.sampling.top_p = 0;
    cr_expect_eq(gen_submit(e, &r, err, sizeof err), -1);
    cr_expect(strstr(err, "top_p"), "%s", err);
    /* one past each named limit */
    r.sampling.top_p = 1;
    r.max_tokens = 1;
    r.n = 9;                    /* max_seqs is 8 */
    cr_expect_eq(gen_submit(e, &r, err, sizeof err), -1);
    cr_expect(strstr(err, "concurrent sequences"), "%s", err);
    r.n = GEN_MAX_N + 1;
    cr_expect_eq(gen_submit(e, &r, err, sizeof err), -1);
    r.n = 1;
    r.logprobs = SAMPLER_MAX_TOP + 1;
    cr_expect_eq(gen_submit(e, &r, err, sizeof err), -1);
    r.logprobs = 0;
    const char *many[GEN_MAX_STOP + 1];
    for (int i = 0; i <= GEN_MAX_STOP; i++) many[i] = "x";
    r.stop = many;
    r.n_stop = GEN_MAX_STOP + 1;
    cr_expect_eq(gen_submit(e, &r, err, sizeof err), -1);
    r.n_stop = 1;               /* no tokenizer: no text to match */
    cr_expect_eq(gen_submit(e, &r, err, sizeof err), -1);
    cr_expect(strstr(err, "tokenizer"), "%s", err);
    r.n_stop = 0;
    int32_t longp[128] = {0};   /* max_position_embeddings is 128 */
    r.prompt = longp;
    r.n_prompt = 128;
    cr_expect_eq(gen_submit(e, &r, err, sizeof err), -1);
    cr_expect(strstr(err, "context"), "%s", err);
    /* freeing an engine with running and queued requests leaks nothing */
    r.n_prompt = 10;
    r.max_tokens = 8;
    r.user = (void *)4;
    cr_assert_eq(gen_submit(e, &r, err, sizeof err), 0, "%s", err);
    r.n = 2;
    r.max_tokens = 2;
    r.user = (void *)5;
    cr_assert_eq(gen_submit(e, &r, err, sizeof err), 0, "%s", err);
    cr_assert_gt(gen_step(e, err, sizeof err), 0);
    gen_engine_free(e);
    free(c);
    model_free(m);
}

/* ------------------------------------------------------------- sampler */

Test(generate, sampler_filters)
{
    enum { V = 6 };
    const float base[V] = {1.0f, 3.0f, 2.9f, -1.0f, 0.5f, 2.0f};
    float l[V];
    struct sampler_scratch *s = sampler_scratch_new(V);
    struct sampler_params p;
    struct rng r;
    rng_seed(&r, 1);
    sampler_params_default(&p);
    p.temperature = 0;
    memcpy(l, base, sizeof l);
    cr_expect_eq(sampler_sample(&p, l, V, NULL, NULL, &r, s), 1);
    /* top_k = 2: only ids 1 and 2 */
    sampler_params_default(&p);
    p.top_k = 2;
    int hist[V] = {0};
    for (int i = 0; i < 2000; i++) {
        memcpy(l, base, sizeof l);
        hist[sampler_sample(&p, l, V, NULL, NULL, &r, s)]++;
    }
    cr_expect_eq(hist[0] + hist[3] + hist[4] + hist[5], 0);
    /* p(1)/p(2) = e^0.1 = 1.105 */
    cr_expect(fabs((double)hist[1] / hist[2] - 1.105) < 0.15, "%d %d", hist[1], hist[2]);
    /* top_p small: argmax only; min_p = 1: argmax only */
    sampler_params_default(&p);
    p.top_p = 0.05f;
    for (int i = 0; i < 50; i++) {
        memcpy(l, base, sizeof l);
        cr_expect_eq(sampler_sample(&p, l, V, NULL, NULL, &r, s), 1);
    }
    sampler_params_default(&p);
    p.min_p = 1.0f;
    memcpy(l, base, sizeof l);
    cr_expect_eq(sampler_sample(&p, l, V, NULL, NULL, &r, s), 1);
    /* full distribution frequencies follow softmax */
    sampler_params_default(&p);
    memset(hist, 0, sizeof hist);
    double z = 0;
    for (int v = 0; v < V; v++) z += exp(base[v]);
    for (int i = 0; i < 4000; i++) {
        memcpy(l, base, sizeof l);
        hist[sampler_sample(&p, l, V, NULL, NULL, &r, s)]++;
    }
    for (int v = 0; v < V; v++)
        cr_expect(fabs(hist[v] / 4000.0 - exp(base[v]) / z) < 0.03, "id %d: %d", v, hist[v]);
    /* top_p = 0.6 keeps {1, 2} (0.40 + 0.36 of the mass) */
    sampler_params_default(&p);
    p.top_p = 0.6f;
    memset(hist, 0, sizeof hist);
    for (int i = 0; i < 500; i++) {
        memcpy(l, base, sizeof l);
        hist[sampler_sample(&p, l, V, NULL, NULL, &r, s)]++;
    }
    cr_expect_eq(hist[0] + hist[3] + hist[4] + hist[5], 0);
    cr_expect(hist[1] > 0 && hist[2] > 0);
    /* penalties move the argmax away from seen / repeated ids */
    sampler_params_default(&p);
    p.temperature = 0;
    p.repetition_penalty = 2.0f;
    uint8_t seen[V] = {0, 1, 0, 0, 0, 0};
    int32_t counts[V] = {0, 0, 3, 0, 0, 0};
    memcpy(l, base, sizeof l);
    cr_expect_eq(sampler_sample(&p, l, V, counts, seen, &r, s), 2);
    p.repetition_penalty = 1.0f;
    p.frequency_penalty = 0.5f;
    memcpy(l, base, sizeof l);
    cr_expect_eq(sampler_sample(&p, l, V, counts, seen, &r, s), 1);
    seen[1] = 1; counts[1] = 1;
    p.presence_penalty = 1.5f;
    p.frequency_penalty = 0;
    memcpy(l, base, sizeof l);
    cr_expect_eq(sampler_sample(&p, l, V, counts, seen, &r, s), 5);
    /* top-k helper and logsumexp */
    int32_t ids[3];
    float vals[3];
    sampler_topk(base, V, 3, ids, vals);
    cr_expect(ids[0] == 1 && ids[1] == 2 && ids[2] == 5);
    cr_expect(fabs(sampler_logsumexp(base, V) - log(z)) < 1e-5);
    sampler_scratch_free(s);
}

/* With a tokenizer: JSON mode (greedy; sampled, n = 2), a stop string
 * completed inside a step's drafts, and the prefix cache (a conversation's
 * second turn finds the first turn's output cached) give the same outputs
 * and the same cached tokens with drafts as without. */
static void spec_text_run(struct collector *c, int spec, struct gen_stats *st)
{
    char err[256];
    struct tokenizer *tok = bytelevel_tokenizer();
    struct model *m = test_model(TOK_BYTELEVEL_VOCAB, 12);
    test_spec_tokens = spec;
    test_prefix_cache = true;
    struct gen_engine *e = engine(m, tok, c, 8, 16, 64, (size_t)16 << 20);
    test_spec_tokens = 0;
    test_prefix_cache = false;
    const int32_t brace[4] = {'{', '"', 'a', '"'};
    struct gen_request r;
    gen_request_default(&r);
    r.prompt = brace;
    r.n_prompt = 4;
    r.max_tokens = 48;
    r.json_object = true;
    r.id = "json";
    r.user = (void *)(intptr_t)0;
    r.sampling.temperature = 0;
    cr_assert_eq(gen_submit(e, &r, err, sizeof err), 0, "%s", err);
    run_to_idle(e);
    r.user = (void *)(intptr_t)1;
    r.n = 2;
    r.has_seed = true;
    r.seed = 9;
    r.sampling.temperature = 1;
    cr_assert_eq(gen_submit(e, &r, err, sizeof err), 0, "%s", err);
    run_to_idle(e);
    /* "x" forced: the stop string "xxxxxxx" ends it after 7 tokens, inside
     * a step's drafts */
    const int32_t xid = 'x';
    const float plus = 100;
    const char *stops[1] = {"xxxxxxx"};
    const int32_t hello[12] = {'h', 'e', 'l', 'l', 'o', ' ', 'h', 'e', 'l', 'l', 'o', ' '};
    gen_request_default(&r);
    r.id = "stop";
    r.user = (void *)(intptr_t)2;
    r.prompt = hello;
    r.n_prompt = 12;
    r.max_tokens = 40;
    r.sampling.temperature = 0;
    r.bias_ids = &xid;
    r.bias_vals = &plus;
    r.n_bias = 1;
    r.stop = stops;
    r.n_stop = 1;
    r.ignore_eos = true;
    cr_assert_eq(gen_submit(e, &r, err, sizeof err), 0, "%s", err);
    run_to_idle(e);
    /* a first turn of 21 tokens ("o" forced: most of them kept drafts; its
     * last step keeps 6, which fill the block of positions 24..31), then
     * the prompt plus that output plus more: its blocks are cached */
    const int32_t oid = 'o';
    r.id = "turn1";
    r.user = (void *)(intptr_t)3;
    r.bias_ids = &oid;
    r.n_stop = 0;
    r.max_tokens = 21;
    cr_assert_eq(gen_submit(e, &r, err, sizeof err), 0, "%s", err);
    run_to_idle(e);
    int32_t two[64];
    memcpy(two, hello, sizeof hello);
    cr_assert_eq(c->s[3][0].n, 21);
    memcpy(two + 12, c->s[3][0].tok, 21 * sizeof(int32_t));
    for (int i = 33; i < 50; i++) two[i] = 'a' + i % 7;
    r.id = "turn2";
    r.user = (void *)(intptr_t)4;
    r.prompt = two;
    r.n_prompt = 50;
    r.n_bias = 0;
    r.max_tokens = 12;
    cr_assert_eq(gen_submit(e, &r, err, sizeof err), 0, "%s", err);
    run_to_idle(e);
    gen_stats_get(e, st);
    gen_engine_free(e);
    model_free(m);
    tok_free(tok);
}

Test(generate, speculative_decoding_with_text)
{
    static struct collector ref, c;
    struct gen_stats sr, sc;
    spec_text_run(&ref, 0, &sr);
    spec_text_run(&c, 6, &sc);
    cr_expect_gt(sc.spec_accepted, 12, "kept %lld of %lld drafts", sc.spec_accepted,
                 sc.spec_drafted);
    cr_expect_lt(sc.steps, sr.steps);
    for (int q = 0; q < 5; q++)
        for (int i = 0; i < (q == 1 ? 2 : 1); i++) {
            cr_assert(c.s[q][i].done, "request %d sample %d", q, i);
            spec_same(&c.s[q][i], &ref.s[q][i], q, i, TOK_BYTELEVEL_VOCAB);
        }
    cr_expect_eq(c.s[2][0].n, 7);
    cr_expect_str_eq(c.s[2][0].full, "");
    cr_expect_eq(c.s[2][0].finish, GEN_FINISH_STOP);
    cr_expect_eq(c.s[4][0].cached_tokens, 32, "the first turn's blocks: %d tokens cached",
                 c.s[4][0].cached_tokens);
}

/* ------------------------------------------------------- random mixtures */

/* Random mixtures of requests through engines configured at random give
 * every request's outputs alone, bitwise. Each mixture: eight requests
 * (prompts of 1..80 tokens, a third starting with one shared 40-token
 * prefix, some repeating a short pattern so that prompt lookup finds
 * drafts; n 1..3; max_tokens 1..48; greedy or seeded, with top-k, top-p,
 * min-p, penalties, a stop id, stop strings and JSON mode at random; a
 * logit_bias making a few letters likely, so that the stop strings
 * come), submitted at random steps (and one in eight cancelled some steps
 * later: its tokens until then the beginning of its output alone, the
 * others' unchanged), against the same requests one at a time in an
 * engine with the defaults. The mixture's engine draws its
 * block size (16 or 32), rows per step (a prefill in chunks of 16..512
 * rows), KV memory (sometimes too little for all at once: preemption),
 * prefix cache and drafts (none, by prompt lookup, by a draft model);
 * both draw the cache's and the weights' element types. Head size 64
 * with blocks of 16 and 32 positions runs the register-blocked attention
 * (runs of several rows in prefill chunks and verify steps, the pair
 * tiles, their tails), which the head size 8 of the other tests leaves
 * to the plain loop: this test fails on the tail bug that e75f0da fixed. */
struct mix_req {
    int32_t prompt[80];
    int P, n, max_tokens, at_step, cancel_at;   /* cancel_at -1: never */
    struct sampler_params sp;
    uint64_t seed;
    bool seeded;
    int32_t stop;
    bool has_stop, json;
    char stops[2][3];
    int n_stops;
};

static void mix_submit(struct gen_engine *e, const struct mix_req *q, int user)
{
    struct gen_request r;
    gen_request_default(&r);
    char id[16];
    snprintf(id, sizeof id, "r%d", user);
    r.id = id;
    r.user = (void *)(intptr_t)user;
    r.prompt = q->prompt;
    r.n_prompt = q->P;
    r.n = q->n;
    r.max_tokens = q->max_tokens;
    r.sampling = q->sp;
    r.has_seed = q->seeded;
    r.seed = q->seed;
    r.ignore_eos = true;
    r.stop_ids = &q->stop;
    r.n_stop_ids = q->has_stop;
    const char *stops[2] = {q->stops[0], q->stops[1]};
    r.stop = stops;
    r.n_stop = q->n_stops;
    r.json_object = q->json;
    static const int32_t letters[4] = {'a', 'b', 'c', 'd'};
    static const float lift[4] = {4, 4, 4, 4};
    r.bias_ids = letters;
    r.bias_vals = lift;
    r.n_bias = 4;
    char err[256];
    cr_assert_eq(gen_submit(e, &r, err, sizeof err), 0, "%s", err);
}

static struct model *mix_model(int V, int layers, uint64_t seed)
{
    struct model_config c = test_cfg(V);
    c.hidden_size = 256;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = 64;
    c.intermediate_size = 256;
    c.n_layers = layers;
    c.max_position_embeddings = 256;
    char err[256];
    struct model *m = model_new(&c, backend_cpu(), err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    model_init_random(m, seed, 0.3f);
    return m;
}

Test(generate, random_mixtures_match_requests_alone, .timeout = 600)
{
    enum { V = TOK_BYTELEVEL_VOCAB, NQ = 8, MIXES = 64 };
    struct tokenizer *tok = bytelevel_tokenizer();
    struct model *m = mix_model(V, 2, 61), *draft = mix_model(V, 1, 62);
    struct rng g;
    rng_seed(&g, 2026);
    int32_t shared[40];
    for (int i = 0; i < 40; i++) shared[i] = (int32_t)(rng_next(&g) % V);
    long long preemptions = 0, drafted = 0, hits = 0, stopped = 0, cancelled = 0;
    for (int mix = 0; mix < MIXES; mix++) {
        struct mix_req q[NQ];
        memset(q, 0, sizeof q);
        for (int k = 0; k < NQ; k++) {
            struct mix_req *x = &q[k];
            x->P = 1 + (int)(rng_next(&g) % 80);
            const int kind = (int)(rng_next(&g) % 3), period = 2 + (int)(rng_next(&g) % 4);
            for (int i = 0; i < x->P; i++)
                x->prompt[i] = kind == 0 && i < 40   ? shared[i]
                               : kind == 1 && i >= period ? x->prompt[i - period]
                                                         : (int32_t)(rng_next(&g) % V);
            x->n = 1 + (int)(rng_next(&g) % 3);
            x->max_tokens = 1 + (int)(rng_next(&g) % 48);
            x->at_step = (int)(rng_next(&g) % 12);
            sampler_params_default(&x->sp);
            const int how = (int)(rng_next(&g) % 4);
            x->sp.temperature = how == 0 ? 0.0f : how == 1 ? 0.7f : how == 2 ? 1.0f : 1.3f;
            x->seeded = true;
            x->seed = rng_next(&g);
            if (x->sp.temperature == 0.0f) x->n = 1;
            if (rng_next(&g) % 3 == 0) x->sp.top_k = 1 + (int)(rng_next(&g) % 10);
            if (rng_next(&g) % 3 == 0) x->sp.top_p = 0.8f;
            if (rng_next(&g) % 4 == 0) x->sp.min_p = 0.05f;
            if (rng_next(&g) % 3 == 0) x->sp.repetition_penalty = 1.15f;
            if (rng_next(&g) % 3 == 0) x->sp.presence_penalty = 0.4f;
            if (rng_next(&g) % 4 == 0) x->sp.frequency_penalty = 0.2f;
            x->has_stop = rng_next(&g) % 3 == 0;
            x->stop = (int32_t)(rng_next(&g) % V);
            x->n_stops = (int)(rng_next(&g) % 3);
            for (int j = 0; j < x->n_stops; j++) {
                x->stops[j][0] = (char)('a' + rng_next(&g) % 4);
                x->stops[j][1] = rng_next(&g) % 2 ? (char)('a' + rng_next(&g) % 4) : 0;
                x->stops[j][2] = 0;
            }
            x->json = rng_next(&g) % 6 == 0;
            x->cancel_at = rng_next(&g) % 8 == 0 ? x->at_step + (int)(rng_next(&g) % 20) : -1;
        }
        /* the cache's and the weights' element types, the same for both */
        static const enum kv_dtype kvdts[] = {KV_F16, KV_F32, KV_Q8};
        test_kv_dtype = kvdts[rng_next(&g) % 3];
        static const enum w_dtype wdts[] = {W_F32, W_BF16, W_Q8, W_Q4};
        test_dtype = wdts[rng_next(&g) % 4];
        char err[256];
        struct kv_cache *k16 = kv_cache_new(backend_cpu(), test_kv_dtype, 2, 2, 64, 16, 1 << 20,
                                            err, sizeof err);
        cr_assert_not_null(k16, "%s", err);
        const size_t block16 = k16->block_stride * kv_dtype_size(test_kv_dtype);
        kv_cache_free(k16);
        /* alone, with the defaults (blocks of 16, whole prompts) */
        struct collector *ref = calloc(1, sizeof *ref), *got = calloc(1, sizeof *got);
        ref->keep_logits = got->keep_logits = true;
        struct gen_engine *e = engine(m, tok, ref, 16, 64, 512, 0);
        for (int k = 0; k < NQ; k++) {
            mix_submit(e, &q[k], k);
            run_to_idle(e);
        }
        gen_engine_free(e);
        /* mixed, in an engine drawn at random */
        const int bs = rng_next(&g) % 2 ? 16 : 32;
        static const int rows[] = {16, 23, 40, 64, 512};
        const int step_rows = rows[rng_next(&g) % 5];
        /* the largest request (80 + 48 positions, 3 samples sharing the
         * prompt's 5 full blocks of 16) needs at most 5 + 3 * 3 blocks:
         * 18 or more always fit any one request, seldom all eight */
        const size_t kv = rng_next(&g) % 2 ? (18 + rng_next(&g) % 8) * block16 * (bs / 16) : 0;
        const int spec = (int)(rng_next(&g) % 3);
        test_prefix_cache = rng_next(&g) % 2;
        test_spec_tokens = spec ? 3 : 0;
        test_spec_model = spec == 2 ? draft : NULL;
        e = engine(m, tok, got, bs, 8, step_rows, kv);
        const bool pc = test_prefix_cache;
        const enum kv_dtype kvdt = test_kv_dtype;
        const enum w_dtype wdt = test_dtype;
        test_kv_dtype = KV_F16;
        test_dtype = W_F32;
        test_prefix_cache = false;
        test_spec_tokens = 0;
        test_spec_model = NULL;
        for (int step = 0, left = NQ; left > 0 || !gen_idle(e); step++) {
            for (int k = 0; k < NQ; k++) {
                if (q[k].at_step == step) { mix_submit(e, &q[k], k); left--; }
                if (q[k].cancel_at == step) {
                    char id[16];
                    snprintf(id, sizeof id, "r%d", k);
                    gen_cancel(e, id);
                }
            }
            cr_assert_geq(gen_step(e, err, sizeof err), 0, "%s", err);
            cr_assert_lt(step, 10000, "mixture %d never became idle", mix);
        }
        struct gen_stats st;
        gen_stats_get(e, &st);
        gen_engine_free(e);
        preemptions += st.preemptions;
        drafted += st.spec_drafted;
        hits += st.prefix_hits;
        cr_expect_eq(st.kv_blocks_used, 0, "mixture %d", mix);
        for (int k = 0; k < NQ; k++)
            for (int i = 0; i < q[k].n; i++) {
                const struct sample_out *o = &got->s[k][i], *w = &ref->s[k][i];
                cr_assert(o->done && w->done, "mixture %d request %d sample %d not done", mix, k, i);
                if (o->finish == GEN_FINISH_CANCELLED) {
                    /* what came before: the beginning of the output alone */
                    cr_assert(q[k].cancel_at >= 0 && o->n <= w->n);
                    cr_expect_arr_eq(o->tok, w->tok, (size_t)o->n * sizeof(int32_t),
                                     "mixture %d request %d sample %d: cancelled", mix, k, i);
                    cancelled++;
                    continue;
                }
                cr_assert_eq(o->n, w->n, "mixture %d (%s, %s, bs %d, rows %d, kv %zu, prefix "
                             "cache %d, drafts %d) request %d sample %d: %d tokens, alone %d",
                             mix, kv_dtype_name(kvdt), w_dtype_name(wdt), bs, step_rows, kv, pc,
                             spec, k, i, o->n, w->n);
                cr_expect_eq(o->finish, w->finish, "mixture %d request %d sample %d", mix, k, i);
                cr_expect_arr_eq(o->tok, w->tok, (size_t)o->n * sizeof(int32_t),
                                 "mixture %d (%s, %s, bs %d, rows %d, kv %zu, prefix cache %d, "
                                 "drafts %d) request %d sample %d: tokens differ", mix,
                                 kv_dtype_name(kvdt), w_dtype_name(wdt), bs, step_rows, kv, pc,
                                 spec, k, i);
                cr_expect_arr_eq(o->lp, w->lp, (size_t)o->n * sizeof(float),
                                 "mixture %d request %d sample %d: logprobs differ", mix, k, i);
                cr_expect_str_eq(o->full, w->full, "mixture %d request %d sample %d", mix, k, i);
                cr_expect(o->text_len == w->text_len && !memcmp(o->text, w->text, o->text_len),
                          "mixture %d request %d sample %d: streamed text differs", mix, k, i);
                stopped += o->finish == GEN_FINISH_STOP;
                for (int t = 0; t < o->n; t++)
                    cr_expect(!memcmp(o->logits[t], w->logits[t], (size_t)V * sizeof(float)),
                              "mixture %d request %d sample %d: logits of token %d", mix, k, i, t);
            }
        collector_free(ref);
        collector_free(got);
        free(ref);
        free(got);
    }
    fprintf(stderr, "random mixtures: %lld preemptions, %lld drafts, %lld prefix-cache hits, "
            "%lld samples stopped, %lld cancelled\n", preemptions, drafted, hits, stopped,
            cancelled);
    /* the mixtures went through what they are for */
    cr_expect(preemptions > 0 && drafted > 0 && hits > 0 && stopped > 0 && cancelled > 0);
    tok_free(tok);
    model_free(draft);
    model_free(m);
}
