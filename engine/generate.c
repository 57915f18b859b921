/* engine/generate.c — continuous-batching generation over a paged KV cache
 * (contract in generate.h, cache in kv_cache.c).
 *
 * One step: resume preempted sequences, then admit queued requests first
 * come first served while their prompts' KV blocks can be promised (admit);
 * give each decoding sequence the block its next position needs, the
 * newest running sequence giving its blocks back (preempted, computed
 * again later) when none is free (decode_blocks); build the rows of one
 * forward: one row per decoding sequence (its last sampled token) then
 * prompt chunks of prefilling sequences up to max_step_tokens; run the
 * transformer on all rows at once (every matmul is one call for all
 * sequences, attention reads each sequence's blocks); compute logits only
 * for the rows that need them; sample in parallel (each sequence has its
 * own random state, so its output does not depend on the rest of the
 * batch); then, in row order, append tokens, check stop conditions and emit
 * events. A request with n samples is prefilled once as sample 0; when its
 * prompt is done the others fork from it, sharing its full prompt blocks.
 *
 * The forward per layer is model_forward's (engine/model.c) on the same
 * weights and backend ops, with attention_paged_step (the rotation, the
 * new keys and values stored into the paged cache, the attention over it)
 * in place of the training attention. */
#include "generate.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "errmsg.h"
#include "json_guide.h"
#include "kv_cache.h"
#include "progress.h"

/* Steps of at most this many rows run their layers in one team (forward). */
#define GEN_TEAM_ROWS 64

/* On unpacked weights, steps of at most this many rows run the gate and up
 * projections as one matmul (serial per-row SwiGLU after it). */
#define GEN_FUSE_ROWS 64

/* Rows of logits computed at once (more rows are done chunk by chunk). */
#define GEN_LOGITS_CHUNK 64

/* SEQ_PREEMPTED: holds no KV blocks, waits to be computed again */
enum seq_state { SEQ_PREFILL, SEQ_DECODE, SEQ_PREEMPTED };

struct gen_req {
    struct gen_req *next;           /* waiting queue link */
    char *id;
    void *user;
    int32_t *prompt;
    int n_prompt, n, max_tokens;
    struct sampler_params sp;
    uint64_t seed;
    char **stop;
    int n_stop;
    int32_t *stop_ids;
    int n_stop_ids;
    int32_t *bias_ids;
    float *bias_vals;
    int n_bias;
    struct jg_schema *schema;       /* JSON mode: the output's schema (owned) */
    bool ignore_eos;
    int logprobs, prompt_logprobs;
    int cached_tokens;              /* prompt positions from the prefix cache */
    int blocks_full;                /* worst-case blocks of one sample */
    int blocks_child;               /* a fork's copy of the prompt's
                                     * partial last block: 0 or 1 */
    int pending_reserve;            /* promised to samples not forked yet */
    int live;                       /* sequences alive (or to be forked) */
    float *plp;                     /* (n_prompt) prompt logprobs */
    int32_t *ptop_ids;              /* (n_prompt, prompt_logprobs) */
    float *ptop_lps;
};

struct gen_seq {
    struct gen_req *req;
    int index;
    enum seq_state state;
    int32_t *tokens;                /* prompt then generated */
    int n_tokens, cap;
    int n_cached;                   /* positions with keys/values cached */
    int32_t *blocks;
    int n_blocks, cap_blocks;
    int reserve;                    /* blocks promised, not yet taken */
    bool forked;                    /* the prompt is done: its logprobs
                                     * emitted, the other samples forked */
    int n_reg;                      /* blocks[0..n_reg) are in the prefix
                                     * cache (or looked at for it) */
    bool reg_off;                   /* registers no more blocks */
    bool guided;                    /* JSON mode: js says what may follow */
    struct jg_state js;
    struct rng rng;
    struct tok_stream *ts;
    char *text;
    size_t text_len, text_cap, emitted;
    int32_t *counts;                /* (V) when a penalty needs them */
    uint8_t *seen;                  /* (V) */
    float *lps;                     /* (max_tokens) */
    int n_gen;
    bool finished;
    /* this step: drafts (its rows after the first), then its samples:
     * one per row up to the first that is not the draft after it */
    int32_t draft[GEN_MAX_SPEC];
    int n_draft, n_out;
    /* a draft model's drafts (spec_adapt): spec_cut fewer than spec_tokens
     * asked for, none for the next spec_skip steps, the next skip after
     * drafts fail again spec_backoff steps (0: 1) */
    int spec_cut, spec_skip, spec_backoff;
    int32_t out[GEN_MAX_SPEC + 1];
    float out_lp[GEN_MAX_SPEC + 1];
    bool out_json_done[GEN_MAX_SPEC + 1];   /* JSON mode: the object whole */
    int32_t top_ids[GEN_MAX_SPEC + 1][SAMPLER_MAX_TOP];
    float top_lps[GEN_MAX_SPEC + 1][SAMPLER_MAX_TOP];
};

enum row_kind { ROW_NONE, ROW_PROMPT_LP, ROW_SAMPLE };

/* A sequence's sampling in one step: its n_rows rows of logits (V each)
 * and their log-sum-exps. */
struct gen_task { struct gen_seq *seq; const float *logits; const float *lse; int n_rows; };

struct gen_engine {
    struct model *m;
    const struct tokenizer *tok;
    struct gen_config cfg;
    gen_event_fn fn;
    void *ctx;
    struct kv_cache *kv;
    int32_t eos[8];
    int n_eos;
    struct gen_req *wait_head, *wait_tail;
    int n_waiting;
    struct gen_seq **seqs;          /* active, admission order */
    int n_seqs;
    int n_slots;                    /* sequences of admitted requests,
                                     * forked or still to fork (<= max_seqs) */
    uint64_t seed_counter;
    int max_blocks_per_seq;
    uint64_t prefix_version;        /* model version of the cached blocks */
    int32_t *prefix_found;          /* (max_blocks_per_seq) prefix_find's blocks */
    long long prefix_queries, prefix_hits;
    long long spec_drafted, spec_accepted, n_preemptions;
    struct gen_engine *draft;   /* over cfg.spec_model; NULL: prompt lookup */
    /* forward buffers (backend memory), R = max_step_tokens rows */
    int R;
    float *x, *res, *ln, *qkv, *atty, *h;
    float *rope;                    /* (R,HD) cos|sin of each row's position */
    float *gate, *up;               /* (R,I) each, up = gate + R*I; NULL when packed */
    /* The linear layers' weights as matmul_rows_forward and (gate|up)
     * matmul_rows_glu_forward read them (NULL when the matmuls take the
     * model's own weights), packed as cfg.dtype from m->params of version
     * packed_version; pk: their byte offsets, in the order of lin_shape. */
    char *packed;
    size_t *pk, packed_bytes, discarded_bytes;
    uint64_t packed_version;
    int32_t *d_tok, *d_pos, *d_seq, *d_tables, *d_rows;
    float *hsel, *lnsel, *d_logits;     /* (GEN_LOGITS_CHUNK, C|C|V) */
    float *d_lse, *d_lp;                /* (GEN_LOGITS_CHUNK) */
    int32_t *d_notarget;                /* (GEN_LOGITS_CHUNK) all -1 */
    /* host side of one step */
    int32_t *h_tok, *h_pos, *h_seq, *h_tables, *h_rows;
    struct gen_seq **row_seq;       /* (R) */
    unsigned char *row_kind;        /* (R) */
    struct gen_seq **step_seqs;     /* (max_seqs) */
    float *logits;                  /* (GEN_LOGITS_CHUNK, V) host */
    float *lse;                     /* (GEN_LOGITS_CHUNK) host: log-sum-exp of each row */
    struct gen_task *tasks;         /* (GEN_LOGITS_CHUNK * GEN_MAX_N) */
    int nthreads;
    struct sampler_scratch **scr;
    float **work;                   /* per thread (V) */
    struct jg_vocab *jg;            /* JSON mode's trie, made at its first request */
    uint8_t **mask;                 /* per thread (V): JSON mode's allowed tokens */
    long long n_generated, n_prefilled, n_steps;
    struct gen_profile *prof;       /* borrowed; NULL: not profiling */
};

const char *const gen_prof_op_names[GEN_PROF_N] = {
    "embed", "norm", "qkv", "rope", "attention", "o", "mlp_in", "mlp_down",
    "logits", "sample"};

/* Runs stmt, adding its wall time to op's when profiling. */
#define GEN_TIMED(e, op, stmt)                                                 \
    do {                                                                        \
        const double t0_ = (e)->prof ? progress_now() : 0;                      \
        stmt;                                                                   \
        if ((e)->prof && omp_get_thread_num() == 0)                             \
            (e)->prof->s[op] += progress_now() - t0_;                           \
    } while (0)

void gen_profile_attach(struct gen_engine *e, struct gen_profile *p) { e->prof = p; }

void gen_config_default(struct gen_config *c)
{
    c->kv_bytes = (size_t)256 << 20;
    c->kv_dtype = KV_F16;
    c->block_size = 16;
    c->max_seqs = 64;
    c->max_step_tokens = 512;
    c->batch_invariant = true;
    c->dtype = W_F32;
    c->discard_matrices = false;
    c->prefix_cache = false;
    c->spec_tokens = 0;
    c->spec_ngram_min = 1;
    c->spec_ngram_max = 4;
    c->spec_max_seqs = 4;
    c->spec_model = NULL;
}

const char *w_dtype_name(enum w_dtype dt)
{
    return dt == W_BF16 ? "bf16" : dt == W_Q8 ? "q8" : dt == W_Q4 ? "q4" : "f32";
}

int w_dtype_parse(const char *s, const struct model *m, enum w_dtype *dt)
{
    if (m && !strcmp(s, "auto")) *dt = m->bf16_weights ? W_BF16 : W_F32;
    else if (!strcmp(s, "f32")) *dt = W_F32;
    else if (!strcmp(s, "bf16")) *dt = W_BF16;
    else if (!strcmp(s, "q8")) *dt = W_Q8;
    else if (!strcmp(s, "q4")) *dt = W_Q4;
    else return -1;
    return 0;
}

void gen_request_default(struct gen_request *r)
{
    memset(r, 0, sizeof *r);
    r->id = "";
    r->n = 1;
    r->max_tokens = 16;
    sampler_params_default(&r->sampling);
    r->prompt_logprobs = -1;
}

const char *gen_finish_name(enum gen_finish f)
{
    switch (f) {
    case GEN_FINISH_STOP: return "stop";
    case GEN_FINISH_LENGTH: return "length";
    case GEN_FINISH_CANCELLED: return "cancelled";
    }
    return "?";
}

/* ----------------------------------------------------------- lifecycle */

/* Linear layer i: 4 per layer (qkv; o; gate and up, adjacent (I,C)
 * matrices taken as one (2I,C); down), then the lm head. Its weight's
 * offset in params and its shape (OC,C). */
static void lin_shape(const struct model *m, int i, size_t *w, int *C, int *OC)
{
    const struct model_config *c = &m->cfg;
    const int H = c->hidden_size, I = c->intermediate_size, AH = c->n_heads * c->head_dim;
    if (i == 4 * c->n_layers) { *w = m->lm_head; *C = H; *OC = c->vocab_size; return; }
    const struct layer_offsets *lo = &m->layers[i / 4];
    switch (i % 4) {
    case 0: *w = lo->wqkv; *C = H; *OC = m->qkv_dim; break;
    case 1: *w = lo->wo; *C = AH; *OC = H; break;
    case 2: *w = lo->wg; *C = H; *OC = 2 * I; break;
    default: *w = lo->wd; *C = I; *OC = H; break;
    }
}
enum { LIN_QKV, LIN_O, LIN_GU, LIN_DOWN };

/* Packs the weights when params changed since they were last packed (at
 * creation; then after an optimizer step between GRPO's rollouts). A
 * model whose matrices were discarded (discard_matrices) is never trained
 * again: its packing stays. discard: each matrix (but a tied embedding
 * table, which the lookups read) goes back to the backend once packed. */
static void pack_weights(struct gen_engine *e, bool discard)
{
    const struct model *m = e->m;
    if (!e->packed || e->packed_version == m->version || m->matrices_discarded) return;
    for (int i = 0; i < 4 * m->cfg.n_layers + 1; i++) {
        size_t w;
        int C, OC;
        lin_shape(m, i, &w, &C, &OC);
        if (i % 4 == LIN_GU && i < 4 * m->cfg.n_layers)
            m->be->rows_pack_glu(e->packed + e->pk[i], m->params + w, C, OC / 2, e->cfg.dtype);
        else
            m->be->rows_pack(e->packed + e->pk[i], m->params + w, C, OC, e->cfg.dtype);
        if (discard && w != m->wte) m->be->discard(m->params + w, (size_t)C * OC * sizeof(float));
    }
    e->packed_version = m->version;
}

static void add_eos(struct gen_engine *e, int32_t id)
{
    if (id < 0 || id >= e->m->cfg.vocab_size || e->n_eos == 8) return;
    for (int i = 0; i < e->n_eos; i++)
        if (e->eos[i] == id) return;
    e->eos[e->n_eos++] = id;
}

/* The draft model's token events: each sequence's drafts, in order. */
static void draft_event(void *ctx, const struct gen_event *ev)
{
    (void)ctx;
    struct gen_seq *s = ev->user;
    if (ev->kind == GEN_EVENT_TOKEN && s->n_draft < GEN_MAX_SPEC) s->draft[s->n_draft++] = ev->token;
}

/* The engine of e's cfg.spec_model: greedy continuations of up to
 * spec_max_seqs sequences at once, its cache as big as that many whole
 * contexts of the model (at most the model's own cache's bytes), with the
 * prefix cache, the weights packed in e's dtype when that is not f32,
 * else as the draft model's checkpoint stores them (vLLM's --dtype auto),
 * its matrices given back as they are packed when the model's are
 * (discard_matrices: both only generated with). A draft in f32 beside a
 * q8 model cost more than it saved (small, its first quarter of layers as
 * the draft, greedy: 0.73x the speed without drafts). The drafts change
 * only the speed, never the outputs. NULL with err set when it cannot be
 * made. */
static struct gen_engine *draft_engine_new(const struct gen_engine *e, char *err, size_t errlen)
{
    struct model *dm = e->cfg.spec_model;
    const struct model_config *c = &dm->cfg;
    struct gen_config dc;
    gen_config_default(&dc);
    dc.kv_dtype = e->cfg.kv_dtype;
    dc.block_size = e->cfg.block_size;
    dc.max_seqs = e->cfg.spec_max_seqs;
    dc.max_step_tokens = e->cfg.max_step_tokens;
    dc.prefix_cache = true;
    dc.discard_matrices = e->cfg.discard_matrices;
    if (e->cfg.dtype != W_F32) dc.dtype = e->cfg.dtype;
    else w_dtype_parse("auto", dm, &dc.dtype);
    const int ctx = e->m->cfg.max_position_embeddings;
    const size_t pos = (size_t)c->n_layers * c->n_kv_heads * kv_head_bytes(dc.kv_dtype, c->head_dim);
    dc.kv_bytes = (size_t)dc.max_seqs * ((size_t)ctx + 2 * (size_t)dc.block_size) * pos;
    if (dc.kv_bytes > e->cfg.kv_bytes) dc.kv_bytes = e->cfg.kv_bytes;
    char e2[512];
    struct gen_engine *d = gen_engine_new(dm, NULL, &dc, draft_event, NULL, e2, sizeof e2);
    if (!d) errmsg_set(err, errlen, "draft model: %s", e2);
    return d;
}

struct gen_engine *gen_engine_new(struct model *m, const struct tokenizer *tok,
                                  const struct gen_config *cfg, gen_event_fn fn,
                                  void *ctx, char *err, size_t errlen)
{
    const struct model_config *c = &m->cfg;
    const struct backend *be = m->be;
    if (!be->attention_paged_step || !be->copy) {
        errmsg_set(err, errlen, "backend %s has no paged attention for generation", be->name);
        return NULL;
    }
    if (cfg->block_size < 1 || cfg->block_size > 1024 || cfg->max_seqs < 1 ||
        cfg->max_seqs > 4096 || cfg->max_step_tokens < cfg->max_seqs ||
        (cfg->kv_dtype != KV_F16 && cfg->kv_dtype != KV_F32 && cfg->kv_dtype != KV_Q8) ||
        (cfg->dtype != W_F32 && cfg->dtype != W_BF16 && cfg->dtype != W_Q8 &&
         cfg->dtype != W_Q4)) {
        errmsg_set(err, errlen, "generation config: need 1 <= block_size <= 1024, "
             "1 <= max_seqs <= 4096, max_step_tokens >= max_seqs, kv_dtype f16, f32 or q8 "
             "and dtype f32, bf16, q8 or q4");
        return NULL;
    }
    if (cfg->spec_tokens < 0 || cfg->spec_tokens > GEN_MAX_SPEC ||
        (cfg->spec_tokens &&
         (cfg->spec_ngram_min < 1 || cfg->spec_ngram_max < cfg->spec_ngram_min ||
          cfg->spec_ngram_max > 16 || cfg->spec_max_seqs < 1 ||
          (long)cfg->spec_max_seqs * (cfg->spec_tokens + 1) > cfg->max_step_tokens))) {
        errmsg_set(err, errlen, "generation config: need 0 <= spec_tokens <= %d and, with "
             "drafts, 1 <= spec_ngram_min <= spec_ngram_max <= 16, spec_max_seqs >= 1 and "
             "spec_max_seqs * (spec_tokens + 1) <= max_step_tokens", GEN_MAX_SPEC);
        return NULL;
    }
    if (cfg->spec_model && cfg->spec_tokens &&
        cfg->spec_model->cfg.vocab_size != m->cfg.vocab_size) {
        errmsg_set(err, errlen, "generation config: the draft model's vocabulary has %d tokens, "
                   "the model's %d (they must share one)", cfg->spec_model->cfg.vocab_size,
                   m->cfg.vocab_size);
        return NULL;
    }
    struct gen_engine *e = calloc(1, sizeof *e);
    if (!e) { errmsg_set(err, errlen, "out of memory"); return NULL; }
    e->m = m;
    e->tok = tok;
    e->cfg = *cfg;
    e->fn = fn;
    e->ctx = ctx;
    e->seed_counter = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ULL ^ (uint64_t)(uintptr_t)e;
    e->kv = kv_cache_new(be, cfg->kv_dtype, c->n_layers, c->n_kv_heads, c->head_dim,
                         cfg->block_size, cfg->kv_bytes, err, errlen);
    if (!e->kv) { free(e); return NULL; }
    if (cfg->prefix_cache && kv_cache_prefix_enable(e->kv)) {
        errmsg_set(err, errlen, "out of memory for the prefix cache's index (%d blocks)",
                   e->kv->n_blocks);
        kv_cache_free(e->kv);
        free(e);
        return NULL;
    }
    e->prefix_version = m->version;
    add_eos(e, c->eos_token_id);
    if (tok) {
        static const char *const names[] = {"<|endoftext|>", "<|im_end|>", "<|eot_id|>",
                                            "<|end_of_text|>"};
        for (size_t i = 0; i < sizeof names / sizeof *names; i++)
            add_eos(e, tok_token_id(tok, names[i]));
    }
    const size_t R = (size_t)cfg->max_step_tokens, C = (size_t)c->hidden_size;
    const size_t I = (size_t)c->intermediate_size, V = (size_t)c->vocab_size;
    const size_t AH = (size_t)c->n_heads * c->head_dim, LC = GEN_LOGITS_CHUNK;
    e->R = (int)R;
    e->max_blocks_per_seq = (c->max_position_embeddings + cfg->block_size - 1) / cfg->block_size;
    if (cfg->prefix_cache &&
        !(e->prefix_found = malloc((size_t)e->max_blocks_per_seq * sizeof *e->prefix_found)))
        goto oom;
    const size_t tables = (size_t)cfg->max_seqs * e->max_blocks_per_seq;
    const bool packed = cfg->batch_invariant && be->rows_packed_bytes && be->rows_pack &&
                        be->matmul_rows_forward && be->rows_pack_glu && be->matmul_rows_glu_forward;
    if (cfg->dtype != W_F32 && !packed) {
        errmsg_set(err, errlen, "dtype %s needs the batch-invariant matmuls (backend %s%s)",
                   w_dtype_name(cfg->dtype), be->name,
                   cfg->batch_invariant ? " has none" : ": batch_invariant is off");
        gen_engine_free(e);
        return NULL;
    }
    /* gate and up outputs: none when the SwiGLU is fused into the matmul */
    struct { float **p; size_t n; } fb[] = {
        {&e->x, R * C}, {&e->res, R * C}, {&e->ln, R * C}, {&e->qkv, R * m->qkv_dim},
        {&e->atty, R * AH}, {&e->gate, packed ? 0 : R * 2 * I}, {&e->h, R * I},
        {&e->rope, R * (size_t)c->head_dim},
        {&e->hsel, LC * C}, {&e->lnsel, LC * C}, {&e->d_logits, LC * V},
        {&e->d_lse, LC}, {&e->d_lp, LC},
    };
    for (size_t i = 0; i < sizeof fb / sizeof *fb; i++)
        if (fb[i].n && !(*fb[i].p = be->alloc(fb[i].n * sizeof(float)))) goto oom;
    e->up = e->gate ? e->gate + R * I : NULL;
    if (packed) {
        const int nl = 4 * c->n_layers + 1;
        if (!(e->pk = malloc((size_t)nl * sizeof *e->pk))) goto oom;
        size_t total = 0;
        for (int i = 0; i < nl; i++) {
            size_t w;
            int Cin, OC;
            lin_shape(m, i, &w, &Cin, &OC);
            e->pk[i] = total;
            total += be->rows_packed_bytes(Cin, OC, cfg->dtype);
        }
        e->packed_bytes = total;
        if (!(e->packed = be->alloc(total))) {
            gen_engine_free(e);
            errmsg_set(err, errlen, "out of memory for the packed weights (%zu MB)",
                       total >> 20);
            return NULL;
        }
        e->packed_version = m->version - 1;   /* packed before the first step */
    }
    struct { int32_t **p; size_t n; } ib[] = {
        {&e->d_tok, R}, {&e->d_pos, R}, {&e->d_seq, R}, {&e->d_tables, tables}, {&e->d_rows, LC},
        {&e->d_notarget, LC},
    };
    for (size_t i = 0; i < sizeof ib / sizeof *ib; i++)
        if (!(*ib[i].p = be->alloc(ib[i].n * sizeof(int32_t)))) goto oom;
    e->h_tok = malloc(R * sizeof(int32_t));
    e->h_pos = malloc(R * sizeof(int32_t));
    e->h_seq = malloc(R * sizeof(int32_t));
    e->h_tables = calloc(tables, sizeof(int32_t));
    e->h_rows = malloc(LC * sizeof(int32_t));
    e->row_seq = malloc(R * sizeof *e->row_seq);
    e->row_kind = malloc(R);
    e->seqs = calloc((size_t)cfg->max_seqs, sizeof *e->seqs);
    e->step_seqs = calloc((size_t)cfg->max_seqs, sizeof *e->step_seqs);
    e->logits = malloc(LC * V * sizeof(float));
    e->lse = malloc(LC * sizeof(float));
    e->tasks = malloc((size_t)cfg->max_seqs * sizeof *e->tasks);
    e->nthreads = omp_get_max_threads();
    e->scr = calloc((size_t)e->nthreads, sizeof *e->scr);
    e->work = calloc((size_t)e->nthreads, sizeof *e->work);
    if (!e->h_tok || !e->h_pos || !e->h_seq || !e->h_tables || !e->h_rows || !e->row_seq ||
        !e->row_kind || !e->seqs || !e->step_seqs || !e->logits || !e->lse || !e->tasks || !e->scr || !e->work)
        goto oom;
    {
        int32_t neg[GEN_LOGITS_CHUNK];
        for (size_t i = 0; i < LC; i++) neg[i] = -1;
        be->upload(e->d_notarget, neg, sizeof neg);
    }
    for (int t = 0; t < e->nthreads; t++) {
        e->scr[t] = sampler_scratch_new((int)V);
        e->work[t] = malloc(V * sizeof(float));
        if (!e->scr[t] || !e->work[t]) goto oom;
    }
    pack_weights(e, cfg->discard_matrices && be->discard);
    if (cfg->discard_matrices && e->packed) e->discarded_bytes = model_discard_matrices(m);
    if (cfg->spec_model && cfg->spec_tokens && !(e->draft = draft_engine_new(e, err, errlen))) {
        gen_engine_free(e);
        return NULL;
    }
    return e;
oom:
    gen_engine_free(e);
    errmsg_set(err, errlen, "out of memory for the generation buffers (%d rows)", cfg->max_step_tokens);
    return NULL;
}

static void req_free(struct gen_req *r)
{
    if (!r) return;
    free(r->id);
    free(r->prompt);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->stop);
    free(r->stop_ids);
    free(r->bias_ids);
    free(r->bias_vals);
    jg_schema_free(r->schema);
    free(r->plp);
    free(r->ptop_ids);
    free(r->ptop_lps);
    free(r);
}

static void seq_free(struct gen_seq *s)
{
    if (!s) return;
    free(s->tokens);
    free(s->blocks);
    tok_stream_free(s->ts);
    free(s->text);
    free(s->counts);
    free(s->seen);
    free(s->lps);
    free(s);
}

void gen_engine_free(struct gen_engine *e)
{
    if (!e) return;
    const struct backend *be = e->m->be;
    for (struct gen_req *r = e->wait_head, *nx; r; r = nx) { nx = r->next; req_free(r); }
    /* Requests are shared by their samples: free each once. */
    for (int i = 0; i < e->n_seqs; i++) {
        struct gen_req *r = e->seqs[i]->req;
        if (!r) continue;
        for (int j = i + 1; j < e->n_seqs; j++)
            if (e->seqs[j]->req == r) e->seqs[j]->req = NULL;
        req_free(r);
    }
    for (int i = 0; i < e->n_seqs; i++) seq_free(e->seqs[i]);
    void *fb[] = {e->x, e->res, e->ln, e->qkv, e->atty, e->gate, e->h, e->rope,
                  e->hsel, e->lnsel, e->d_logits, e->d_lse, e->d_lp, e->packed};
    for (size_t i = 0; i < sizeof fb / sizeof *fb; i++) if (fb[i]) be->free(fb[i]);
    int32_t *ib[] = {e->d_tok, e->d_pos, e->d_seq, e->d_tables, e->d_rows, e->d_notarget};
    for (size_t i = 0; i < sizeof ib / sizeof *ib; i++) if (ib[i]) be->free(ib[i]);
    free(e->h_tok); free(e->h_pos); free(e->h_seq); free(e->h_tables); free(e->h_rows);
    free(e->row_seq); free(e->row_kind); free(e->seqs); free(e->step_seqs);
    free(e->logits); free(e->lse); free(e->tasks);
    for (int t = 0; e->scr && t < e->nthreads; t++) sampler_scratch_free(e->scr[t]);
    for (int t = 0; e->work && t < e->nthreads; t++) free(e->work[t]);
    for (int t = 0; e->mask && t < e->nthreads; t++) free(e->mask[t]);
    free(e->scr); free(e->work); free(e->mask); free(e->pk); free(e->prefix_found);
    jg_vocab_free(e->jg);
    kv_cache_free(e->kv);
    gen_engine_free(e->draft);
    free(e);
}

/* -------------------------------------------------------------- submit */

static int ceil_div(long a, long b) { return (int)((a + b - 1) / b); }

/* JSON mode's vocabulary trie and the threads' masks, at its first
 * request. */
static int json_mode_init(struct gen_engine *e, char *err, size_t errlen)
{
    if (e->jg) return 0;
    if (!e->tok) {
        errmsg_set(err, errlen, "JSON mode: the model has no tokenizer, so no text to shape");
        return -1;
    }
    const int V = e->m->cfg.vocab_size;
    if (!e->mask && !(e->mask = calloc((size_t)e->nthreads, sizeof *e->mask))) goto oom;
    for (int t = 0; t < e->nthreads; t++)
        if (!e->mask[t] && !(e->mask[t] = malloc((size_t)V))) goto oom;
    if (!(e->jg = jg_vocab_new(e->tok, V, err, errlen))) return -1;
    return 0;
oom:
    errmsg_set(err, errlen, "out of memory for JSON mode (%d tokens)", V);
    return -1;
}

int gen_submit(struct gen_engine *e, const struct gen_request *r, char *err, size_t errlen)
{
    const struct model_config *c = &e->m->cfg;
    const int V = c->vocab_size, maxp = c->max_position_embeddings, bs = e->cfg.block_size;
    if (!r->id) { errmsg_set(err, errlen, "id is missing"); return -1; }
    if (r->n_prompt < 1) { errmsg_set(err, errlen, "prompt is empty"); return -1; }
    for (int i = 0; i < r->n_prompt; i++)
        if (r->prompt[i] < 0 || r->prompt[i] >= V) {
            errmsg_set(err, errlen, "prompt token %d (at %d) is outside the vocabulary (%d)",
                 r->prompt[i], i, V);
            return -1;
        }
    if (r->n_prompt >= maxp) {
        errmsg_set(err, errlen, "prompt of %d tokens leaves no room in the context "
             "(max_position_embeddings %d)", r->n_prompt, maxp);
        return -1;
    }
    if (r->n < 1 || r->n > GEN_MAX_N) { errmsg_set(err, errlen, "n: expected 1..%d, got %d", GEN_MAX_N, r->n); return -1; }
    if (r->n > e->cfg.max_seqs) {
        errmsg_set(err, errlen, "n: %d samples exceed the engine's %d concurrent sequences", r->n, e->cfg.max_seqs);
        return -1;
    }
    if (r->max_tokens < 0) { errmsg_set(err, errlen, "max_tokens: expected >= 0, got %d", r->max_tokens); return -1; }
    if (r->logprobs < 0 || r->logprobs > SAMPLER_MAX_TOP) { errmsg_set(err, errlen, "logprobs: expected 0..%d", SAMPLER_MAX_TOP); return -1; }
    if (r->prompt_logprobs < -1 || r->prompt_logprobs > SAMPLER_MAX_TOP) { errmsg_set(err, errlen, "prompt_logprobs: expected 0..%d", SAMPLER_MAX_TOP); return -1; }
    if (sampler_params_check(&r->sampling, err, errlen)) return -1;
    if (r->n_stop < 0 || r->n_stop > GEN_MAX_STOP) { errmsg_set(err, errlen, "stop: at most %d strings", GEN_MAX_STOP); return -1; }
    for (int i = 0; i < r->n_stop; i++) {
        size_t l = strlen(r->stop[i]);
        if (l == 0 || l > GEN_MAX_STOP_LEN) { errmsg_set(err, errlen, "stop[%d]: expected 1..%d bytes", i, GEN_MAX_STOP_LEN); return -1; }
    }
    if (r->n_stop > 0 && !e->tok) { errmsg_set(err, errlen, "stop: the model has no tokenizer, so no text to match"); return -1; }
    if (r->n_stop_ids < 0 || r->n_stop_ids > GEN_MAX_STOP_IDS) { errmsg_set(err, errlen, "stop_token_ids: at most %d ids", GEN_MAX_STOP_IDS); return -1; }
    for (int i = 0; i < r->n_stop_ids; i++)
        if (r->stop_ids[i] < 0 || r->stop_ids[i] >= V) { errmsg_set(err, errlen, "stop_token_ids[%d]: %d is outside the vocabulary (%d)", i, r->stop_ids[i], V); return -1; }
    if ((r->json_object || r->json_schema) && json_mode_init(e, err, errlen)) return -1;
    if (r->n_bias < 0 || r->n_bias > GEN_MAX_BIAS) { errmsg_set(err, errlen, "logit_bias: at most %d tokens", GEN_MAX_BIAS); return -1; }
    for (int i = 0; i < r->n_bias; i++) {
        if (r->bias_ids[i] < 0 || r->bias_ids[i] >= V) { errmsg_set(err, errlen, "logit_bias: token %d is outside the vocabulary (%d)", r->bias_ids[i], V); return -1; }
        if (!(r->bias_vals[i] >= -100.0f && r->bias_vals[i] <= 100.0f)) { errmsg_set(err, errlen, "logit_bias: the bias of token %d is not in [-100, 100]", r->bias_ids[i]); return -1; }
    }

    const int P = r->n_prompt;
    const int M = r->max_tokens < maxp - P ? r->max_tokens : maxp - P;
    const int fed = M > 0 ? P + M - 1 : P;       /* positions that get cached */
    const int full = ceil_div(fed, bs), shared = P / bs;
    const int child = full - shared;
    const long total = full + (long)(M > 0 ? r->n - 1 : 0) * child;
    if (total > e->kv->n_blocks) {
        double mib = (double)kv_cache_block_bytes(e->kv) / (1 << 20);
        errmsg_set(err, errlen, "request needs %ld KV blocks (%.1f MiB: %d prompt tokens + %d new, "
             "%d samples) but the cache holds %d (%.1f MiB)", total, total * mib, P, M, r->n,
             e->kv->n_blocks, e->kv->n_blocks * mib);
        return -1;
    }

    struct gen_req *q = calloc(1, sizeof *q);
    if (!q) goto oom;
    q->id = strdup(r->id);
    q->prompt = malloc((size_t)P * sizeof *q->prompt);
    if (!q->id || !q->prompt) goto oom;
    memcpy(q->prompt, r->prompt, (size_t)P * sizeof *q->prompt);
    q->user = r->user;
    q->n_prompt = P;
    q->n = r->n;
    q->max_tokens = M;
    q->sp = r->sampling;
    q->seed = r->has_seed ? r->seed : rng_splitmix64(&e->seed_counter);
    q->ignore_eos = r->ignore_eos;
    if (r->json_schema || r->json_object) {
        q->schema = r->json_schema ? jg_schema_copy(r->json_schema)
                                   : (struct jg_schema *)jg_schema_object();
        if (!q->schema) goto oom;
    }
    q->logprobs = r->logprobs;
    q->prompt_logprobs = r->prompt_logprobs;
    q->blocks_full = full;
    q->blocks_child = P % bs ? 1 : 0;
    if (r->n_stop) {
        q->stop = calloc((size_t)r->n_stop, sizeof *q->stop);
        if (!q->stop) goto oom;
        for (int i = 0; i < r->n_stop; i++) {
            q->stop[i] = strdup(r->stop[i]);
            if (!q->stop[i]) goto oom;
            q->n_stop = i + 1;
        }
    }
    if (r->n_stop_ids) {
        q->stop_ids = malloc((size_t)r->n_stop_ids * sizeof *q->stop_ids);
        if (!q->stop_ids) goto oom;
        memcpy(q->stop_ids, r->stop_ids, (size_t)r->n_stop_ids * sizeof *q->stop_ids);
        q->n_stop_ids = r->n_stop_ids;
    }
    if (r->n_bias) {
        q->bias_ids = malloc((size_t)r->n_bias * sizeof *q->bias_ids);
        q->bias_vals = malloc((size_t)r->n_bias * sizeof *q->bias_vals);
        if (!q->bias_ids || !q->bias_vals) goto oom;
        memcpy(q->bias_ids, r->bias_ids, (size_t)r->n_bias * sizeof *q->bias_ids);
        memcpy(q->bias_vals, r->bias_vals, (size_t)r->n_bias * sizeof *q->bias_vals);
        q->n_bias = r->n_bias;
    }
    if (q->prompt_logprobs >= 0) {
        size_t k = (size_t)(q->prompt_logprobs > 0 ? q->prompt_logprobs : 1);
        q->plp = malloc((size_t)P * sizeof *q->plp);
        q->ptop_ids = calloc((size_t)P * k, sizeof *q->ptop_ids);
        q->ptop_lps = calloc((size_t)P * k, sizeof *q->ptop_lps);
        if (!q->plp || !q->ptop_ids || !q->ptop_lps) goto oom;
        q->plp[0] = NAN;
    }
    if (e->wait_tail) e->wait_tail->next = q; else e->wait_head = q;
    e->wait_tail = q;
    e->n_waiting++;
    return 0;
oom:
    req_free(q);
    errmsg_set(err, errlen, "out of memory queueing the request");
    return -1;
}

/* ----------------------------------------------------------- sequences */

static void emit(struct gen_engine *e, struct gen_event *ev)
{
    if (e->fn) e->fn(e->ctx, ev);
}

/* Empty DONE events for samples first..n-1 of r, which never ran (r
 * cancelled while waiting, from 0; or ended during prefill, cancelled or
 * max_tokens 0, from 1: the samples never forked from sample 0). */
static void emit_empty_done(struct gen_engine *e, const struct gen_req *r, int first,
                            enum gen_finish f)
{
    for (int j = first; j < r->n; j++) {
        struct gen_event ev = {0};
        ev.kind = GEN_EVENT_DONE;
        ev.id = r->id;
        ev.user = r->user;
        ev.index = j;
        ev.finish = f;
        ev.prompt_tokens = r->n_prompt;
        ev.cached_tokens = r->cached_tokens;
        ev.full_text = "";
        emit(e, &ev);
    }
}

static struct gen_seq *seq_new(struct gen_engine *e, struct gen_req *r, int index)
{
    struct gen_seq *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    const int V = e->m->cfg.vocab_size;
    s->req = r;
    s->index = index;
    s->cap = r->n_prompt + r->max_tokens;
    s->tokens = malloc((size_t)s->cap * sizeof *s->tokens);
    s->cap_blocks = r->blocks_full;
    s->blocks = malloc((size_t)(s->cap_blocks > 0 ? s->cap_blocks : 1) * sizeof *s->blocks);
    s->lps = malloc((size_t)(r->max_tokens > 0 ? r->max_tokens : 1) * sizeof *s->lps);
    if (!s->tokens || !s->blocks || !s->lps) goto fail;
    memcpy(s->tokens, r->prompt, (size_t)r->n_prompt * sizeof *s->tokens);
    s->n_tokens = r->n_prompt;
    rng_seed(&s->rng, r->seed ^ (0x9e3779b97f4a7c15ULL * (uint64_t)(index + 1)));
    s->guided = r->schema != NULL;
    if (r->schema) jg_init(&s->js, r->schema);
    if (e->tok && !(s->ts = tok_stream_new(e->tok))) goto fail;
    if (sampler_needs_history(&r->sp)) {
        s->counts = calloc((size_t)V, sizeof *s->counts);
        s->seen = calloc((size_t)V, 1);
        if (!s->counts || !s->seen) goto fail;
        for (int i = 0; i < r->n_prompt; i++) s->seen[r->prompt[i]] = 1;
    }
    return s;
fail:
    seq_free(s);
    return NULL;
}

/* Returns the sequence's blocks and unused promise to the cache. */
static void seq_release(struct gen_engine *e, struct gen_seq *s)
{
    for (int i = 0; i < s->n_blocks; i++) kv_cache_block_unref(e->kv, s->blocks[i]);
    s->n_blocks = 0;
    kv_cache_unreserve(e->kv, s->reserve);
    s->reserve = 0;
}

/* Makes sure position pos has a block: from the promise while it lasts,
 * else a free block nobody was promised. Returns -1 when there is none
 * (the caller preempts a sequence, or drops drafts). */
static int seq_ensure_block(struct gen_engine *e, struct gen_seq *s, int pos)
{
    while (s->n_blocks <= pos / e->cfg.block_size) {
        if (s->n_blocks == s->cap_blocks) return -1;
        if (s->reserve > 0) {
            s->reserve--;
            kv_cache_unreserve(e->kv, 1);
        } else if (e->kv->n_free <= e->kv->reserved) {
            return -1;
        }
        int32_t b = kv_cache_block_alloc(e->kv);
        if (b < 0) return -1;
        s->blocks[s->n_blocks++] = b;
    }
    return 0;
}

/* Sample `index` of parent's request, sharing its full prompt blocks and
 * copying the partial last one. */
static struct gen_seq *seq_fork(struct gen_engine *e, struct gen_seq *p, int index)
{
    struct gen_req *r = p->req;
    struct gen_seq *s = seq_new(e, r, index);
    if (!s) return NULL;
    const int bs = e->cfg.block_size, shared = r->n_prompt / bs;
    s->reserve = r->blocks_child;
    r->pending_reserve -= r->blocks_child;
    s->forked = true;
    for (int i = 0; i < shared; i++) {
        kv_cache_block_ref(e->kv, p->blocks[i]);
        s->blocks[s->n_blocks++] = p->blocks[i];
    }
    if (r->n_prompt % bs) {
        if (seq_ensure_block(e, s, r->n_prompt - 1)) { seq_release(e, s); seq_free(s); return NULL; }
        kv_cache_block_copy(e->kv, s->blocks[shared], p->blocks[shared]);
    }
    s->n_cached = r->n_prompt;
    s->guided = p->guided;
    s->js = p->js;
    s->n_reg = shared < p->n_reg ? shared : p->n_reg;
    s->reg_off = p->reg_off || p->n_reg < shared;
    s->state = SEQ_DECODE;
    return s;
}

static int text_append(struct gen_seq *s, const char *t, size_t n)
{
    if (n == 0) return 0;
    if (s->text_len + n + 1 > s->text_cap) {
        size_t cap = s->text_cap ? s->text_cap : 64;
        while (cap < s->text_len + n + 1) cap *= 2;
        char *g = realloc(s->text, cap);
        if (!g) return -1;
        s->text = g;
        s->text_cap = cap;
    }
    memcpy(s->text + s->text_len, t, n);
    s->text_len += n;
    s->text[s->text_len] = 0;
    return 0;
}

/* Earliest match of a stop string ending after byte `from`, or -1. */
static long stop_find(const struct gen_req *r, const char *text, size_t len, size_t from)
{
    long best = -1;
    for (int i = 0; i < r->n_stop; i++) {
        size_t sl = strlen(r->stop[i]);
        size_t start = from + 1 > sl ? from + 1 - sl : 0;
        if (start >= len) continue;
        const char *hit = memmem(text + start, len - start, r->stop[i], sl);
        if (hit && (best < 0 || hit - text < best)) best = hit - text;
    }
    return best;
}

/* Length of the longest suffix of text that is a proper prefix of a stop
 * string: text that must be held back from streaming. */
static size_t stop_holdback(const struct gen_req *r, const char *text, size_t len)
{
    size_t best = 0;
    for (int i = 0; i < r->n_stop; i++) {
        size_t sl = strlen(r->stop[i]);
        for (size_t k = (sl - 1 < len ? sl - 1 : len); k > best; k--)
            if (memcmp(text + len - k, r->stop[i], k) == 0) { best = k; break; }
    }
    return best;
}

static bool is_stop_id(const struct gen_engine *e, const struct gen_req *r, int32_t t)
{
    for (int i = 0; i < r->n_stop_ids; i++)
        if (r->stop_ids[i] == t) return true;
    if (!r->ignore_eos)
        for (int i = 0; i < e->n_eos; i++)
            if (e->eos[i] == t) return true;
    return false;
}

static void emit_done(struct gen_engine *e, struct gen_seq *s, enum gen_finish f)
{
    struct gen_req *r = s->req;
    struct gen_event ev = {0};
    ev.kind = GEN_EVENT_DONE;
    ev.id = r->id;
    ev.user = r->user;
    ev.index = s->index;
    ev.finish = f;
    ev.prompt_tokens = r->n_prompt;
    ev.cached_tokens = r->cached_tokens;
    ev.completion_tokens = s->n_gen;
    ev.tokens = s->tokens + r->n_prompt;
    ev.token_logprobs = s->lps;
    ev.full_text = s->text ? s->text : "";
    ev.full_len = s->text_len;
    s->finished = true;
    emit(e, &ev);
}

/* Appends this step's sample j to s, checks the stop conditions and emits
 * its TOKEN (and DONE) events. */
static void seq_accept(struct gen_engine *e, struct gen_seq *s, int j, const float *logits)
{
    struct gen_req *r = s->req;
    const int32_t t = s->out[j];
    s->tokens[s->n_tokens++] = t;
    s->lps[s->n_gen++] = s->out_lp[j];
    bool done = false, matched = false;
    enum gen_finish f = GEN_FINISH_LENGTH;
    if (is_stop_id(e, r, t)) {
        done = true;
        f = GEN_FINISH_STOP;
    } else if (s->ts) {
        size_t n, old = s->text_len;
        const char *piece = tok_stream_push(s->ts, t, &n);
        if (piece) text_append(s, piece, n);
        if (r->n_stop) {
            long at = stop_find(r, s->text ? s->text : "", s->text_len, old);
            if (at >= 0) {
                s->text_len = (size_t)at;
                s->text[at] = 0;
                done = matched = true;
                f = GEN_FINISH_STOP;
            }
        }
    }
    if (!done && s->out_json_done[j]) {
        done = true;
        f = GEN_FINISH_STOP;
    }
    if (!done && (s->n_gen >= r->max_tokens)) done = true;
    if (done && s->ts) {
        /* flush a held incomplete character (dropped after a stop string) */
        size_t n;
        const char *rest = tok_stream_finish(s->ts, &n);
        if (rest && !matched) text_append(s, rest, n);
    }
    size_t upto = s->text_len;
    if (!done && r->n_stop) upto -= stop_holdback(r, s->text, s->text_len);
    if (upto < s->emitted) upto = s->emitted;
    struct gen_event ev = {0};
    ev.kind = GEN_EVENT_TOKEN;
    ev.id = r->id;
    ev.user = r->user;
    ev.index = s->index;
    ev.token = t;
    ev.text = s->text ? s->text + s->emitted : "";
    ev.text_len = upto - s->emitted;
    ev.logprob = s->out_lp[j];
    ev.n_top = r->logprobs;
    ev.top_ids = s->top_ids[j];
    ev.top_logprobs = s->top_lps[j];
    ev.logits = logits;
    emit(e, &ev);
    s->emitted = upto;
    if (done) emit_done(e, s, f);
}

static void emit_prompt(struct gen_engine *e, struct gen_req *r)
{
    if (r->prompt_logprobs < 0) return;
    struct gen_event ev = {0};
    ev.kind = GEN_EVENT_PROMPT;
    ev.id = r->id;
    ev.user = r->user;
    ev.n_prompt = r->n_prompt;
    ev.prompt = r->prompt;
    ev.prompt_logprobs = r->plp;
    ev.n_prompt_top = r->prompt_logprobs;
    ev.prompt_top_ids = r->ptop_ids;
    ev.prompt_top_logprobs = r->ptop_lps;
    emit(e, &ev);
}

/* Drops finished sequences (and finished requests) from the active list. */
static void reap(struct gen_engine *e)
{
    int k = 0;
    for (int i = 0; i < e->n_seqs; i++) {
        struct gen_seq *s = e->seqs[i];
        if (!s->finished) { e->seqs[k++] = s; continue; }
        struct gen_req *r = s->req;
        seq_release(e, s);
        seq_free(s);
        e->n_slots--;
        if (--r->live == 0) {
            kv_cache_unreserve(e->kv, r->pending_reserve);
            req_free(r);
        }
    }
    e->n_seqs = k;
}

/* -------------------------------------------------------------- cancel */

int gen_cancel(struct gen_engine *e, const char *id)
{
    int count = 0;
    for (struct gen_req **pp = &e->wait_head, *prev = NULL; *pp;) {
        struct gen_req *r = *pp;
        if (strcmp(r->id, id) != 0) { prev = r; pp = &r->next; continue; }
        *pp = r->next;
        if (e->wait_tail == r) e->wait_tail = prev;
        e->n_waiting--;
        emit_empty_done(e, r, 0, GEN_FINISH_CANCELLED);
        req_free(r);
        count++;
    }
    for (int i = 0; i < e->n_seqs; i++) {
        struct gen_seq *s = e->seqs[i];
        if (s->finished || strcmp(s->req->id, id) != 0) continue;
        struct gen_req *r = s->req;
        bool first = true;
        for (int j = 0; j < i && first; j++) first = e->seqs[j]->req != r;
        count += first;
        if (!s->forked) {
            /* samples 1..n-1 were never forked */
            e->n_slots -= r->live - 1;
            r->live = 1;
            emit_empty_done(e, r, 1, GEN_FINISH_CANCELLED);
        }
        emit_done(e, s, GEN_FINISH_CANCELLED);
    }
    reap(e);
    return count;
}

/* ---------------------------------------------------------------- step */

/* The prefix cache: of the first `most` blocks of tokens, those it holds
 * (into e->prefix_found); returns how many. *in_use: of them, those some
 * sequence holds now (taking them costs no free block). */
static int prefix_find(struct gen_engine *e, const int32_t *tokens, int most, int *in_use)
{
    const int bs = e->cfg.block_size;
    int n = 0;
    *in_use = 0;
    for (int32_t b = -1; n < most; n++) {
        b = kv_cache_prefix_find(e->kv, b, tokens + (size_t)n * bs);
        if (b < 0) break;
        *in_use += e->kv->refs[b] > 0;
        e->prefix_found[n] = b;
    }
    return n;
}

/* s (admitted, or resumed) takes the n blocks prefix_find found (of `most`
 * looked up) as its first ones, each cached one in place of a block of its
 * promise, and prefills from the first position not found. */
static void prefix_take(struct gen_engine *e, struct gen_seq *s, int n, int most)
{
    struct gen_req *r = s->req;
    const int bs = e->cfg.block_size;
    for (int i = 0; i < n; i++) {
        const int32_t b = e->prefix_found[i];
        if (e->kv->refs[b] == 0) {
            s->reserve--;
            kv_cache_unreserve(e->kv, 1);
        }
        kv_cache_block_ref(e->kv, b);
        s->blocks[s->n_blocks++] = b;
    }
    s->n_reg = n;
    s->n_cached = n * bs;
    if (s->forked) return;
    r->cached_tokens = n * bs;
    e->prefix_queries += (long long)most * bs;
    e->prefix_hits += r->cached_tokens;
}

/* After a forward: the blocks of this step's sequences that it filled go
 * into the prefix cache (a block another sequence registered first with
 * the same tokens stays the cached one; this sequence then stops
 * registering, as its later blocks would follow an unregistered one). */
static void prefix_register(struct gen_engine *e, int S)
{
    const int bs = e->cfg.block_size;
    if (!e->kv->table) return;
    for (int si = 0; si < S; si++) {
        struct gen_seq *s = e->step_seqs[si];
        for (; !s->reg_off && (s->n_reg + 1) * bs <= s->n_cached; s->n_reg++) {
            const int32_t parent = s->n_reg ? s->blocks[s->n_reg - 1] : -1;
            s->reg_off = !kv_cache_prefix_add(e->kv, s->blocks[s->n_reg], parent,
                                              s->tokens + (size_t)s->n_reg * bs);
        }
    }
}

/* Cached blocks hold keys and values of the weights they were computed
 * with: a change of weights (between GRPO's rollouts) empties the cache,
 * and the running sequences stop registering theirs. */
static void prefix_check_version(struct gen_engine *e)
{
    if (!e->kv->table || e->prefix_version == e->m->version) return;
    kv_cache_prefix_clear(e->kv);
    for (int i = 0; i < e->n_seqs; i++) e->seqs[i]->reg_off = true;
    e->prefix_version = e->m->version;
}

/* Drafts decoding sequence s may have this step: up to spec_tokens (fewer
 * as spec_adapt says for a draft model's), none that would reach past
 * max_tokens (so the positions they fill are within its worst case). */
static int spec_room(const struct gen_engine *e, const struct gen_seq *s)
{
    const int left = s->req->max_tokens - s->n_gen - 1, want = e->cfg.spec_tokens - s->spec_cut;
    const int room = left < want ? left : want;
    return room > 0 ? room : 0;
}

/* Prompt lookup: the drafts of s (at most most of them) are the tokens
 * that followed the earliest other occurrence of its last g tokens, for
 * the longest g from spec_ngram_max down to spec_ngram_min that has one
 * (vLLM's choice: in a loop, the earliest has the most tokens after it).
 * Returns how many. */
static int spec_propose(const struct gen_engine *e, struct gen_seq *s, int most)
{
    if (most <= 0) return 0;
    const int32_t *t = s->tokens;
    const int n = s->n_tokens;
    for (int g = e->cfg.spec_ngram_max; g >= e->cfg.spec_ngram_min; g--) {
        if (g >= n) continue;
        const int32_t *tail = t + n - g;
        for (int i = 0; i + g < n; i++) {
            if (t[i] != tail[0] || memcmp(t + i, tail, (size_t)g * sizeof *t)) continue;
            const int after = n - (i + g), nd = after < most ? after : most;
            memcpy(s->draft, t + i + g, (size_t)nd * sizeof *t);
            return nd;
        }
    }
    return 0;
}

/* After a draft model's drafts were checked (kept of nd): how many to ask
 * for next. All kept: one more (up to spec_tokens); some: one more than
 * were kept; none: half as many, and when that is none, no drafts for the
 * next 1, 2, 4 ... 64 steps in turn, then one again. A draft costs a
 * forward of the draft model, so a sequence whose drafts keep failing
 * stops paying for them (a random draft for a sampled stream measured
 * 0.40x the speed without drafts); prompt lookup's drafts cost nothing to
 * make and are always asked for. */
static void spec_adapt(const struct gen_engine *e, struct gen_seq *s, int kept, int nd)
{
    const int most = e->cfg.spec_tokens;
    int len = most - s->spec_cut;
    if (kept == nd) {
        len++;
        s->spec_backoff = 0;
    } else if (kept > 0) {
        len = kept + 1;
    } else if ((len /= 2) == 0) {
        const int skip = s->spec_backoff ? s->spec_backoff : 1;
        s->spec_skip = skip;
        s->spec_backoff = skip < 32 ? 2 * skip : 64;
        len = 1;
    }
    s->spec_cut = len > most ? 0 : most - len;
}

/* The draft model's drafts for this step's decoding sequences (spec_room
 * each): every sequence submitted to the draft engine as a greedy request
 * whose prompt is all of its tokens (the prefix cache finds all but the
 * last partial block), then the draft engine stepped until it is idle. A
 * sequence it refuses (longer than the draft model's context) gets none.
 * 0, or -1 with err set when a step of the draft engine fails. */
static int draft_propose(struct gen_engine *e, char *err, size_t errlen)
{
    char e2[512];
    for (int i = 0; i < e->n_seqs; i++) {
        struct gen_seq *s = e->seqs[i];
        if (s->state != SEQ_DECODE || s->finished) continue;
        const int room = spec_room(e, s);
        s->n_draft = 0;
        if (room == 0) continue;
        if (s->spec_skip > 0) { s->spec_skip--; continue; }
        struct gen_request q;
        gen_request_default(&q);
        q.id = "draft";
        q.prompt = s->tokens;
        q.n_prompt = s->n_tokens;
        q.max_tokens = room;
        q.sampling.temperature = 0.0f;
        q.has_seed = true;
        q.ignore_eos = s->req->ignore_eos;
        q.user = s;
        (void)gen_submit(e->draft, &q, e2, sizeof e2);
    }
    while (!gen_idle(e->draft))
        if (gen_step(e->draft, e2, sizeof e2) < 0) {
            errmsg_set(err, errlen, "draft model: %s", e2);
            return -1;
        }
    return 0;
}

/* Promises the blocks that computing a sequence's tokens needs (*sp NULL:
 * r's first sample, new, and its prompt, with a partial block's copy for
 * each sample to fork; else the preempted *sp, and all its tokens), the
 * prefix cache's taken first (up to the block of the last token, always
 * computed: its logits are sampled from; none with prompt logprobs to
 * compute), with `spare` blocks more left free; then the sequence
 * prefills. Returns 0 (*sp the sequence), or -1 with nothing changed when
 * the blocks are not free now (or memory is short). */
static int seq_start(struct gen_engine *e, struct gen_req *r, struct gen_seq **sp, int spare)
{
    struct gen_seq *s = *sp;
    const bool first = !s || !s->forked;
    const int32_t *tokens = s ? s->tokens : r->prompt;
    const int n = s ? s->n_tokens : r->n_prompt, bs = e->cfg.block_size;
    const int most = !e->kv->table || (first && r->prompt_logprobs >= 0) ? 0 : (n - 1) / bs;
    int in_use;
    const int found = prefix_find(e, tokens, most, &in_use);
    const int own = ceil_div(n, bs) - in_use;
    const int forks = first && r->max_tokens > 0 ? (r->n - 1) * r->blocks_child : 0;
    if (e->kv->n_free - e->kv->reserved < own + forks + spare) return -1;
    if (!s && !(s = seq_new(e, r, 0))) return -1;
    kv_cache_reserve(e->kv, own + forks);
    s->reserve = own;
    r->pending_reserve = forks;
    s->state = SEQ_PREFILL;
    prefix_take(e, s, found, most);
    *sp = s;
    return 0;
}

/* Blocks are taken as positions need them (vLLM's on-demand allocation),
 * not promised for max_tokens at admission: a request whose output ends
 * early never held the rest, so more run at once. When a decoding
 * sequence finds none free, the newest running sequence gives its blocks
 * back (preempt) and waits to be computed again (vLLM's recompute
 * preemption): preempted sequences resume first, oldest first, before any
 * new request starts. A new request starts when its prompt's blocks are
 * free with a block more for every decoding sequence (their next step's)
 * and 1% of the cache (vLLM's watermark), so that starting it rarely
 * preempts anything. */
static void admit(struct gen_engine *e)
{
    int decoding = 0;
    for (int i = 0; i < e->n_seqs; i++) {
        struct gen_seq *s = e->seqs[i];
        if (s->finished) continue;
        if (s->state == SEQ_PREEMPTED && seq_start(e, s->req, &e->seqs[i], 0)) return;
        decoding += s->state == SEQ_DECODE;
    }
    const int spare = decoding + e->kv->n_blocks / 100;
    while (e->wait_head) {
        struct gen_req *r = e->wait_head;
        const int live = r->max_tokens > 0 ? r->n : 1;
        if (e->n_slots + live > e->cfg.max_seqs) return;
        struct gen_seq *s = NULL;
        if (seq_start(e, r, &s, spare)) return;
        e->wait_head = r->next;
        if (!e->wait_head) e->wait_tail = NULL;
        r->next = NULL;
        e->n_waiting--;
        r->live = live;
        e->n_slots += live;
        e->seqs[e->n_seqs++] = s;
    }
}

/* s gives back its blocks and promises; what it sampled and emitted stays,
 * and its keys and values are computed again when it resumes. */
static void preempt(struct gen_engine *e, struct gen_seq *s)
{
    seq_release(e, s);
    if (!s->forked) {
        kv_cache_unreserve(e->kv, s->req->pending_reserve);
        s->req->pending_reserve = 0;
    }
    s->state = SEQ_PREEMPTED;
    s->n_cached = 0;
    s->n_reg = 0;
    s->reg_off = false;
    s->n_draft = 0;
    e->n_preemptions++;
}

/* The blocks of this step's decode rows, oldest sequence first (drafts
 * proposed first, and dropped when their positions find no block); when a
 * sequence finds none, the newest running one is preempted, itself last. */
static int decode_blocks(struct gen_engine *e, bool spec, char *err, size_t errlen)
{
    for (int i = 0; i < e->n_seqs; i++) {
        struct gen_seq *s = e->seqs[i];
        if (s->state != SEQ_DECODE || s->finished) continue;
        if (!spec)
            s->n_draft = 0;
        else if (!e->draft)
            s->n_draft = spec_propose(e, s, spec_room(e, s));
        /* else draft_propose's */
        while (seq_ensure_block(e, s, s->n_cached + s->n_draft)) {
            if (s->n_draft) { s->n_draft = 0; continue; }
            int v = e->n_seqs - 1;
            while (v >= 0 && (e->seqs[v]->finished || e->seqs[v]->state == SEQ_PREEMPTED)) v--;
            if (v < 0) {
                errmsg_set(err, errlen, "internal error: no KV block for \"%s\"", s->req->id);
                return -1;
            }
            preempt(e, e->seqs[v]);
            if (v == i) break;
        }
    }
    return 0;
}

/* out: (N,OC) = inp: (N,C) @ w^T [+ b] [+ resid: (N,OC), may be out] for
 * linear layer i (lin_shape), batch-invariant when configured. The packed
 * matmul adds the residual as it stores each output (the same sums as the
 * add after it, without a pass over the rows). */
static void linear(const struct gen_engine *e, float *out, const float *inp, int i,
                   const float *b, const float *resid, int N)
{
    const struct model *m = e->m;
    size_t w;
    int C, OC;
    lin_shape(m, i, &w, &C, &OC);
    if (e->packed) {
        m->be->matmul_rows_forward(out, inp, e->packed + e->pk[i], e->cfg.dtype, b, resid, N,
                                   C, OC);
        return;
    }
    m->be->matmul_forward(out, inp, m->params + w, b, N, C, OC, 0.0f);
    if (resid) m->be->add(out, out, resid, (size_t)N * OC);
}

/* e->h: (N,I) = silu(e->ln @ gate^T) * (e->ln @ up^T) of layer l. */
static void mlp_in(struct gen_engine *e, int l, int N)
{
    const struct model *m = e->m;
    const struct backend *be = m->be;
    const struct layer_offsets *lo = &m->layers[l];
    const int C = m->cfg.hidden_size, I = m->cfg.intermediate_size;
    if (e->packed) {
        be->matmul_rows_glu_forward(e->h, e->ln, e->packed + e->pk[4 * l + LIN_GU], e->cfg.dtype,
                                    N, C, I);
    } else if (N <= GEN_FUSE_ROWS) {
        /* Decode-sized steps (the team's wake-up costs more than the gate
         * and up rows' own work): rows [gate | up] of one (2I,C) matmul */
        linear(e, e->gate, e->ln, 4 * l + LIN_GU, NULL, NULL, N);
        for (int n = 0; n < N; n++)
            be->swiglu_forward(e->h + (size_t)n * I, e->gate + (size_t)n * 2 * I,
                               e->gate + (size_t)n * 2 * I + I, 1, I);
    } else {
        be->matmul_forward(e->gate, e->ln, m->params + lo->wg, NULL, N, C, I, 0.0f);
        be->matmul_forward(e->up, e->ln, m->params + lo->wu, NULL, N, C, I, 0.0f);
        be->swiglu_forward(e->h, e->gate, e->up, N, I);
    }
}

/* The layers of forward (e, N rows, maxb block-table entries). */
struct layers_args {
    struct gen_engine *e;
    int N, maxb;
};

/* Run by every thread of the backend's team when it has one (team_run:
 * each op then returns after a barrier, its outputs complete, and the
 * profile's clock is thread 0's), else by the caller. */
static void forward_layers(void *arg)
{
    const struct layers_args *a = arg;
    struct gen_engine *e = a->e;
    const struct model *m = e->m;
    const struct model_config *c = &m->cfg;
    const struct backend *be = m->be;
    const struct kv_cache *kv = e->kv;
    const int N = a->N, C = c->hidden_size, Q = m->qkv_dim, NH = c->n_heads;
    const int NKV = c->n_kv_heads, HD = c->head_dim, bs = kv->block_size;
    const float *P = m->params;
    for (int l = 0; l < c->n_layers; l++) {
        const struct layer_offsets *lo = &m->layers[l];
        void *kvl = kv_cache_layer(kv, l);
        GEN_TIMED(e, GEN_PROF_NORM,
                  be->rmsnorm_forward(e->ln, NULL, e->x, P + lo->ln1, c->rms_norm_eps, N, C));
        GEN_TIMED(e, GEN_PROF_QKV, linear(e, e->qkv, e->ln, 4 * l + LIN_QKV,
                                          lo->bqkv == (size_t)-1 ? NULL : P + lo->bqkv, NULL, N));
        GEN_TIMED(e, GEN_PROF_ATTENTION,
                  be->attention_paged_step(e->atty, e->qkv, Q, e->rope, kvl, kv->dtype,
                                           kv->block_stride, kv->vofs, e->d_tables, a->maxb,
                                           e->d_seq, e->d_pos, N, NH, NKV, HD, bs));
        /* res = x + o(atty), x = res + down(h): the residual adds are in
         * the matmuls */
        GEN_TIMED(e, GEN_PROF_O, linear(e, e->res, e->atty, 4 * l + LIN_O,
                                        lo->bo == (size_t)-1 ? NULL : P + lo->bo, e->x, N));
        GEN_TIMED(e, GEN_PROF_NORM,
                  be->rmsnorm_forward(e->ln, NULL, e->res, P + lo->ln2, c->rms_norm_eps, N, C));
        GEN_TIMED(e, GEN_PROF_MLP_IN, mlp_in(e, l, N));
        GEN_TIMED(e, GEN_PROF_MLP_DOWN, linear(e, e->x, e->h, 4 * l + LIN_DOWN, NULL, e->res, N));
    }
}

/* The transformer on rows 0..N-1 of h_tok/h_pos/h_seq with S block tables
 * of maxb entries: leaves the last hidden states (before the final norm)
 * in e->x. With packed weights, a step of up to GEN_TEAM_ROWS rows (decode
 * steps, short prompts) runs its layers in one team of the backend's
 * (team_run), when it has one: each op otherwise starts its own, ~40 per
 * step of small. Longer steps take long enough per op for that not to
 * matter, and each op picks its own split. */
static void forward(struct gen_engine *e, int N, int S, int maxb)
{
    struct model *m = e->m;
    const struct model_config *c = &m->cfg;
    const struct backend *be = m->be;
    const struct kv_cache *kv = e->kv;
    const int C = c->hidden_size, NKV = c->n_kv_heads, HD = c->head_dim;
    const float *P = m->params;
    pack_weights(e, false);
    be->upload(e->d_tok, e->h_tok, (size_t)N * sizeof(int32_t));
    be->upload(e->d_pos, e->h_pos, (size_t)N * sizeof(int32_t));
    be->upload(e->d_seq, e->h_seq, (size_t)N * sizeof(int32_t));
    be->upload(e->d_tables, e->h_tables, (size_t)S * maxb * sizeof(int32_t));
    if (e->prof) {
        double positions = 0;
        for (int n = 0; n < N; n++) positions += e->h_pos[n] + 1;
        e->prof->kv_bytes += positions * NKV * (double)kv_head_bytes(kv->dtype, HD) * c->n_layers;
    }
    GEN_TIMED(e, GEN_PROF_EMBED, be->embedding_forward(e->x, e->d_tok, P + m->wte, N, C));
    GEN_TIMED(e, GEN_PROF_ROPE, be->rope_cos_sin(e->rope, e->d_pos, m->inv_freq, N, HD));
    struct layers_args a = {e, N, maxb};
    if (e->packed && be->team_run && N <= GEN_TEAM_ROWS)
        be->team_run(forward_layers, &a);
    else
        forward_layers(&a);
}

/* Logits (host) of the n rows h_rows[0..n) of e->x into e->logits, and
 * their log-sum-exps into e->lse (the backend's vectorised fused op when
 * it has one: a scalar double exp per vocabulary entry cost more than
 * the sampling itself). */
static void logits_rows(struct gen_engine *e, int n)
{
    struct model *m = e->m;
    const struct backend *be = m->be;
    const int C = m->cfg.hidden_size, V = m->cfg.vocab_size;
    be->upload(e->d_rows, e->h_rows, (size_t)n * sizeof(int32_t));
    be->embedding_forward(e->hsel, e->d_rows, e->x, n, C);      /* gather rows */
    be->rmsnorm_forward(e->lnsel, NULL, e->hsel, m->params + m->lnf_w, m->cfg.rms_norm_eps, n, C);
    linear(e, e->d_logits, e->lnsel, 4 * m->cfg.n_layers, NULL, NULL, n);
    be->download(e->logits, e->d_logits, (size_t)n * V * sizeof(float));
    if (be->logprob_forward) {
        be->logprob_forward(e->d_lp, e->d_lse, e->d_logits, e->d_notarget, n, V);
        be->download(e->lse, e->d_lse, (size_t)n * sizeof(float));
    } else {
        for (int i = 0; i < n; i++) e->lse[i] = sampler_logsumexp(e->logits + (size_t)i * V, V);
    }
}

/* Sample j of s from its row of logits (lse: their log-sum-exp); the
 * token then counts for the penalties and goes on JSON mode's object, as
 * the next row's sampling needs. Returns true when the sample ends the
 * sequence (a stop id, the object whole). */
static bool sample_one(struct gen_engine *e, struct gen_seq *s, int j, const float *row,
                       float lse, int tid)
{
    const int V = e->m->cfg.vocab_size;
    struct gen_req *r = s->req;
    float *w = e->work[tid];
    memcpy(w, row, (size_t)V * sizeof(float));
    for (int i = 0; i < r->n_bias; i++) w[r->bias_ids[i]] += r->bias_vals[i];
    /* JSON mode: the tokens that cannot go on the object get p = 0 (a
     * byte-level vocabulary always has one that can: every byte is a
     * token) */
    if (s->guided && jg_allowed(e->jg, &s->js, e->mask[tid]) > 0)
        for (int v = 0; v < V; v++)
            if (!e->mask[tid][v]) w[v] = -INFINITY;
    const int32_t t = sampler_sample(&r->sp, w, V, s->counts, s->seen, &s->rng, e->scr[tid]);
    s->out[j] = t;
    s->out_lp[j] = row[t] - lse;
    s->out_json_done[j] = false;
    if (r->logprobs > 0) {
        sampler_topk(row, V, r->logprobs, s->top_ids[j], s->top_lps[j]);
        for (int k = 0; k < r->logprobs; k++) s->top_lps[j][k] -= lse;
    }
    if (s->counts) { s->counts[t]++; s->seen[t] = 1; }
    if (is_stop_id(e, r, t)) return true;
    if (s->guided) {
        /* JSON mode: the token's bytes go on the object; whole, it ends */
        size_t n = 0;
        const char *b = tok_token_bytes(e->tok, t, &n);
        s->guided = b != NULL;
        for (size_t i = 0; i < n && s->guided; i++) s->guided = jg_feed(&s->js, (unsigned char)b[i]);
        s->out_json_done[j] = s->guided && jg_done(&s->js);
    }
    return s->out_json_done[j];
}

/* Each task's rows in order, from the first: a row's sample is kept, and
 * the next row looked at only while it equals the draft that row was
 * computed on (and ends nothing): the next tokens then are what sampling
 * without drafts would have picked, the same draws of the same random
 * state on the same logits. */
static void sample_tasks(struct gen_engine *e, int nt)
{
    const int V = e->m->cfg.vocab_size;
    #pragma omp parallel for schedule(dynamic, 1) if (nt > 1)
    for (int t = 0; t < nt; t++) {
        const struct gen_task *k = &e->tasks[t];
        struct gen_seq *s = k->seq;
        const int tid = omp_get_thread_num();
        for (int j = 0; j < k->n_rows; j++) {
            const bool end = sample_one(e, s, j, k->logits + (size_t)j * V, k->lse[j], tid);
            s->n_out = j + 1;
            if (end || j == s->n_draft || s->out[j] != s->draft[j]) break;
        }
    }
}

/* Prompt logprob of the token after row position pos of request r; lse:
 * the row's log-sum-exp. */
static void prompt_logprob(struct gen_req *r, const float *row, float lse, int V, int pos)
{
    int t = pos + 1;
    r->plp[t] = row[r->prompt[t]] - lse;
    int k = r->prompt_logprobs;
    if (k > 0) {
        int32_t *ids = r->ptop_ids + (size_t)t * k;
        float *lps = r->ptop_lps + (size_t)t * k;
        sampler_topk(row, V, k, ids, lps);
        for (int i = 0; i < k; i++) lps[i] -= lse;
    }
}

/* The nt tasks sampled (in parallel), then accepted in row order. A
 * sequence's keys and values are kept for the drafts it kept: the
 * positions after them are computed again from their new tokens. */
static void sample_accept(struct gen_engine *e, int nt)
{
    const int V = e->m->cfg.vocab_size;
    sample_tasks(e, nt);
    for (int t = 0; t < nt; t++) {
        const struct gen_task *k = &e->tasks[t];
        struct gen_seq *s = k->seq;
        int kept = 0;
        while (kept < s->n_out && !s->finished) {
            seq_accept(e, s, kept, k->logits + (size_t)kept * V);
            kept++;
        }
        e->n_generated += kept;
        if (s->n_draft) {
            s->n_cached += kept - 1;
            e->spec_drafted += s->n_draft;
            e->spec_accepted += kept - 1;
            if (e->draft) spec_adapt(e, s, kept - 1, s->n_draft);
            s->n_draft = 0;
        }
    }
}

/* Samples of the rows chosen in this chunk: forks first samples, samples
 * all in parallel, then accepts in row order. */
static int run_chunk(struct gen_engine *e, const int *rows, int n, char *err, size_t errlen)
{
    const int V = e->m->cfg.vocab_size;
    for (int i = 0; i < n; i++) e->h_rows[i] = rows[i];
    GEN_TIMED(e, GEN_PROF_LOGITS, logits_rows(e, n));
    int nt = 0;
    for (int i = 0; i < n; i++) {
        struct gen_seq *s = e->row_seq[rows[i]];
        const float *row = e->logits + (size_t)i * V;
        if (e->row_kind[rows[i]] == ROW_PROMPT_LP) {
            prompt_logprob(s->req, row, e->lse[i], V, e->h_pos[rows[i]]);
            continue;
        }
        if (s->state == SEQ_PREFILL && s->forked) {
            /* resumed after a preemption: decoding again */
            s->state = SEQ_DECODE;
            e->tasks[nt++] = (struct gen_task){s, row, e->lse + i, 1};
        } else if (s->state == SEQ_PREFILL) {
            /* the prompt is done: fork the other samples from sample 0 */
            struct gen_req *r = s->req;
            emit_prompt(e, r);
            s->state = SEQ_DECODE;
            s->forked = true;
            e->tasks[nt++] = (struct gen_task){s, row, e->lse + i, 1};
            for (int j = 1; j < r->n; j++) {
                struct gen_seq *c = seq_fork(e, s, j);
                if (!c) { errmsg_set(err, errlen, "out of memory forking sample %d of \"%s\"", j, r->id); return -1; }
                e->seqs[e->n_seqs++] = c;
                e->tasks[nt++] = (struct gen_task){c, row, e->lse + i, 1};
            }
        } else {
            /* a decoding sequence's row, then its drafts' */
            e->tasks[nt++] = (struct gen_task){s, row, e->lse + i, 1 + s->n_draft};
            i += s->n_draft;
        }
    }
    GEN_TIMED(e, GEN_PROF_SAMPLE, sample_accept(e, nt));
    return 0;
}

static int step(struct gen_engine *e, char *err, size_t errlen)
{
    prefix_check_version(e);
    admit(e);
    if (e->n_seqs == 0) return e->n_waiting;
    int N = 0, S = 0, maxb = 1, decoding = 0;
    for (int i = 0; i < e->n_seqs; i++)
        decoding += e->seqs[i]->state == SEQ_DECODE && !e->seqs[i]->finished;
    const bool spec = e->cfg.spec_tokens > 0 && decoding <= e->cfg.spec_max_seqs;
    if (spec && e->draft && draft_propose(e, err, errlen)) return -1;
    if (decode_blocks(e, spec, err, errlen)) return -1;
    /* decode rows (each sequence's last token, then its drafts: at most
     * max_tokens - 1 - n_gen, so the positions they fill are within its
     * worst case, cap_blocks), then prefill chunks */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < e->n_seqs; i++) {
            struct gen_seq *s = e->seqs[i];
            if ((pass == 0) != (s->state == SEQ_DECODE) || s->state == SEQ_PREEMPTED ||
                s->finished)
                continue;
            int from = s->n_cached, to;
            if (pass == 0) {
                to = from + 1 + s->n_draft;     /* blocks: decode_blocks */
            } else {
                int budget = e->R - N;
                if (budget <= 0) break;
                to = s->n_tokens - from < budget ? s->n_tokens : from + budget;
            }
            if (seq_ensure_block(e, s, to - 1)) {
                errmsg_set(err, errlen, "internal error: KV blocks of \"%s\" exceed its reservation", s->req->id);
                return -1;
            }
            int si = S++;
            e->step_seqs[si] = s;
            if (s->n_blocks > maxb) maxb = s->n_blocks;
            for (int p = from; p < to; p++, N++) {
                e->h_tok[N] = p < s->n_tokens ? s->tokens[p] : s->draft[p - s->n_tokens];
                e->h_pos[N] = p;
                e->h_seq[N] = si;
                e->row_seq[N] = s;
                e->row_kind[N] = ROW_NONE;
                if (pass == 0 || (p == s->n_tokens - 1 && s->req->max_tokens > 0))
                    e->row_kind[N] = ROW_SAMPLE;
                else if (!s->forked && s->req->prompt_logprobs >= 0 && p + 1 < s->n_tokens)
                    e->row_kind[N] = ROW_PROMPT_LP;
            }
            /* (a decoding sequence's drafts: when kept, sample_accept) */
            s->n_cached = pass == 0 ? from + 1 : to;
            if (pass == 1) e->n_prefilled += to - from;
        }
    }
    for (int si = 0; si < S; si++) {
        struct gen_seq *s = e->step_seqs[si];
        int32_t *row = e->h_tables + (size_t)si * maxb;
        memcpy(row, s->blocks, (size_t)s->n_blocks * sizeof *row);
        for (int j = s->n_blocks; j < maxb; j++) row[j] = 0;
    }
    forward(e, N, S, maxb);
    e->n_steps++;
    prefix_register(e, S);

    /* logits for the rows that need them, a chunk at a time; a chunk has
     * at most max_seqs tasks, so they fit (forks included), and a decoding
     * sequence's rows (1 + n_draft <= 1 + GEN_MAX_SPEC) in one chunk. */
    int rows[GEN_LOGITS_CHUNK], nr = 0, nsample = 0;
    for (int i = 0; i < N; i++) {
        if (e->row_kind[i] == ROW_NONE) continue;
        const struct gen_seq *s = e->row_seq[i];
        const bool dec = e->row_kind[i] == ROW_SAMPLE && s->state == SEQ_DECODE;
        const int nrow = dec ? 1 + s->n_draft : 1;
        const int add = e->row_kind[i] != ROW_SAMPLE ? 0 : s->forked || dec ? 1 : s->req->n;
        if (nr + nrow > GEN_LOGITS_CHUNK || nsample + add > e->cfg.max_seqs) {
            if (run_chunk(e, rows, nr, err, errlen)) return -1;
            nr = nsample = 0;
        }
        for (int j = 0; j < nrow; j++) rows[nr++] = i + j;
        i += nrow - 1;
        nsample += add;
    }
    if (nr && run_chunk(e, rows, nr, err, errlen)) return -1;
    if (spec) prefix_register(e, S);    /* the blocks that kept drafts filled */
    /* prompts with max_tokens 0: done after prefill */
    for (int i = 0; i < e->n_seqs; i++) {
        struct gen_seq *s = e->seqs[i];
        if (s->state != SEQ_PREFILL || s->n_cached < s->n_tokens || s->req->max_tokens > 0) continue;
        struct gen_req *r = s->req;
        emit_prompt(e, r);
        emit_empty_done(e, r, 1, GEN_FINISH_LENGTH);
        emit_done(e, s, GEN_FINISH_LENGTH);
    }
    reap(e);
    return e->n_seqs + e->n_waiting;
}

int gen_step(struct gen_engine *e, char *err, size_t errlen)
{
    const double t0 = e->prof ? progress_now() : 0;
    const int rc = step(e, err, errlen);
    if (e->prof) {
        e->prof->step_s += progress_now() - t0;
        e->prof->steps++;
    }
    return rc;
}

bool gen_idle(const struct gen_engine *e)
{
    return e->n_seqs == 0 && e->n_waiting == 0;
}

void gen_stats_get(const struct gen_engine *e, struct gen_stats *st)
{
    st->packed_bytes = (long long)e->packed_bytes;
    st->discarded_bytes = (long long)e->discarded_bytes;
    st->active = e->n_seqs;
    st->waiting = e->n_waiting;
    st->kv_blocks_used = kv_cache_used(e->kv);
    st->kv_blocks_total = e->kv->n_blocks;
    st->kv_blocks_reserved = e->kv->reserved;
    st->block_size = e->kv->block_size;
    st->tokens_generated = e->n_generated;
    st->tokens_prefilled = e->n_prefilled;
    st->steps = e->n_steps;
    st->kv_blocks_cached = e->kv->n_cached;
    st->prefix_queries = e->prefix_queries;
    st->prefix_hits = e->prefix_hits;
    st->spec_drafted = e->spec_drafted;
    st->spec_accepted = e->spec_accepted;
    st->preemptions = e->n_preemptions;
}
