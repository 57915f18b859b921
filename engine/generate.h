/* engine/generate.h — the generation engine: a paged KV cache over one
 * model, requests queued and admitted while others run (continuous
 * batching), chunked prefill and one batched decode step for all active
 * sequences per forward, per-sequence sampling, stop conditions, logprobs.
 * Results come back as events through a callback. Single-threaded API (the
 * math inside uses OpenMP). Not here: JSON (engine/serve.c), the command
 * line (engine/cli_generate.c). */
#ifndef AHA_GENERATE_H
#define AHA_GENERATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "json_guide.h"
#include "kv_cache.h"
#include "model.h"
#include "sampler.h"
#include "tokenizer.h"

/* Limits of one request. */
#define GEN_MAX_N 256           /* samples per request */
#define GEN_MAX_STOP 16         /* stop strings */
#define GEN_MAX_STOP_LEN 256    /* bytes of one stop string */
#define GEN_MAX_STOP_IDS 64     /* stop token ids */
#define GEN_MAX_BIAS 1024       /* logit_bias entries */
#define GEN_MAX_SPEC 16         /* draft tokens verified per step */

struct gen_config {
    size_t kv_bytes;            /* KV cache memory (default 256 MiB) */
    enum kv_dtype kv_dtype;     /* its element type: KV_F16 (default, as
                                 * llama.cpp's cache: half the memory and
                                 * the attention's bandwidth; logits within
                                 * ~1e-2 of the fp32 cache's), KV_F32, or
                                 * KV_Q8 (int8 and a scale per vector: about
                                 * half of binary16's bytes) */
    int block_size;             /* positions per KV block (default 16) */
    int max_seqs;               /* sequences decoded together (default 64) */
    int max_step_tokens;        /* rows of one forward: decode rows plus
                                 * prefill chunks (default 512) */
    bool batch_invariant;       /* default true: matmuls through the
                                 * backend's matmul_rows_forward on the
                                 * engine's packed copy of the weights, so a
                                 * sequence's logits are bitwise the same
                                 * alone or in any batch; false: the
                                 * backend's matmul_forward on the model's
                                 * own weights (no copy), whose rounding
                                 * depends on the batch size */
    enum w_dtype dtype;         /* the packed weights' element type: W_F32
                                 * (default) or W_BF16 (half the memory and
                                 * the bytes a decode step reads; the
                                 * linear layers' inputs rounded to bf16
                                 * too, as a bf16 model runs on a GPU;
                                 * needs batch_invariant) or W_Q8 (int8
                                 * weights and inputs, a scale per 32:
                                 * 9/32 of W_F32's bytes) or W_Q4 (4-bit
                                 * weights as llama.cpp's q4_0, int8
                                 * inputs: 5/32 of W_F32's bytes) */
    bool discard_matrices;      /* default false; true: the model is only
                                 * generated with from now on (serving), so
                                 * each of its matrices goes back to the
                                 * backend as soon as the engine has packed
                                 * it (then model_discard_matrices): the
                                 * weights are never held twice, not even
                                 * while loading. Needs the packed copy
                                 * (batch_invariant); ignored without.
                                 * The same for spec_model's matrices. */
    bool prefix_cache;          /* default false; true: full KV blocks are
                                 * kept after their sequence ends, keyed by
                                 * the tokens up to their end, and a prompt
                                 * that starts with the same tokens reuses
                                 * them instead of computing them again
                                 * (evicted least recently used first, only
                                 * when a block is needed; blocks shared
                                 * with running sequences are not promised
                                 * again on admission). Outputs are the
                                 * same with or without a hit (bitwise with
                                 * batch_invariant: a position's keys and
                                 * values depend on the tokens up to it
                                 * only). Requests with prompt_logprobs
                                 * compute their whole prompt. A change of
                                 * the model's weights (model_params_changed)
                                 * empties the cache. */
    /* Speculative decoding by prompt lookup (vLLM's "ngram" method,
     * llama.cpp's lookup decoding): a decoding sequence whose last
     * spec_ngram_max..spec_ngram_min tokens occurred before in its prompt
     * or output proposes the up to spec_tokens tokens that followed them
     * there; one forward computes its next token and those drafts' (the
     * rows of a memory-bound step cost little more than one), and the
     * drafts are kept up to the first one sampling does not pick. Each
     * position is sampled exactly as without drafts (its own logits,
     * penalties, mask and random draws), so the outputs are the same
     * tokens and logprobs (bitwise with batch_invariant); only the number
     * of steps changes. Off in steps with more than spec_max_seqs decoding
     * sequences, where a step is no longer memory-bound. */
    int spec_tokens;            /* 0 (default: off) .. GEN_MAX_SPEC */
    int spec_ngram_min;         /* default 1 */
    int spec_ngram_max;         /* default 4; min <= max <= 16 */
    int spec_max_seqs;          /* default 4 */
    /* Speculative decoding with a draft model (vLLM's "draft_model"
     * method), when spec_tokens > 0 and this is not NULL (borrowed; same
     * vocabulary size as the model): the drafts are its greedy
     * continuation of each sequence, instead of prompt lookup's. It runs
     * in an engine of its own with the prefix cache, so that each step
     * computes only the sequence's last partial block and the drafts
     * again. Outputs are unchanged as above; a draft model that agrees
     * with the model more often saves more steps, and a sequence whose
     * drafts keep failing is asked for fewer, then none for a while. */
    struct model *spec_model;
};
void gen_config_default(struct gen_config *c);
/* "f32" / "bf16" / "q8" / "q4" <-> dtype; w_dtype_parse returns -1 for anything else.
 * m non-NULL: "auto" is accepted too, bf16 when m's checkpoint stored
 * every matrix as BF16, else f32 (vLLM's --dtype auto for such models). */
const char *w_dtype_name(enum w_dtype dt);
int w_dtype_parse(const char *s, const struct model *m, enum w_dtype *dt);

/* A request; every pointer is borrowed for the duration of gen_submit only
 * (the engine copies what it keeps). */
struct gen_request {
    const char *id;             /* echoed in events; gen_cancel's key */
    const int32_t *prompt;      /* (n_prompt) ids, n_prompt >= 1 */
    int n_prompt;
    int n;                      /* samples sharing one prefill, 1..GEN_MAX_N */
    int max_tokens;             /* >= 0; clamped to the context left */
    struct sampler_params sampling;
    bool has_seed;              /* false: a fresh seed per request */
    uint64_t seed;              /* sample i draws from rng(seed, i) only */
    const char *const *stop;    /* (n_stop) strings ending the output (not
                                 * included in its text) */
    int n_stop;
    const int32_t *stop_ids;    /* (n_stop_ids) ids ending the output */
    int n_stop_ids;
    bool ignore_eos;            /* don't stop at the model's end ids */
    const int32_t *bias_ids;    /* (n_bias) ids whose logits get bias_vals
                                 * added before anything else of sampling
                                 * (OpenAI's logit_bias; -100 bans a token,
                                 * +100 all but forces it); reported
                                 * logprobs stay the raw model's */
    const float *bias_vals;     /* (n_bias), each in [-100, 100] */
    int n_bias;                 /* 0..GEN_MAX_BIAS */
    bool json_object;           /* JSON mode (OpenAI's response_format
                                 * json_object): only tokens that keep the
                                 * output the beginning of one JSON object
                                 * are sampled, and the sample ends (stop)
                                 * as soon as the object is whole; needs the
                                 * tokenizer */
    const struct jg_schema *json_schema;    /* structured outputs (OpenAI's
                                 * json_schema): the same, for an object of
                                 * this compiled schema (json_guide.h);
                                 * NULL: none; wins over json_object */
    int logprobs;               /* alternatives per sampled token, 0..20 */
    int prompt_logprobs;        /* -1 off, else logprob of every prompt token
                                 * plus that many alternatives (0..20) */
    void *user;                 /* passed back in events */
};
void gen_request_default(struct gen_request *r);

enum gen_event_kind {
    GEN_EVENT_PROMPT,           /* prompt logprobs (once, after prefill) */
    GEN_EVENT_TOKEN,            /* one sampled token of one sample */
    GEN_EVENT_DONE,             /* one sample finished */
};

enum gen_finish { GEN_FINISH_STOP, GEN_FINISH_LENGTH, GEN_FINISH_CANCELLED };
const char *gen_finish_name(enum gen_finish f);    /* "stop", "length", "cancelled" */

/* Everything is borrowed and valid only during the callback. */
struct gen_event {
    enum gen_event_kind kind;
    const char *id;
    void *user;
    int index;                  /* sample 0..n-1 (TOKEN, DONE) */
    /* TOKEN */
    int32_t token;
    const char *text;           /* text_len bytes of newly released text,
                                 * NOT NUL-terminated (may be empty: text is
                                 * held back while it may start a stop
                                 * string, or is an incomplete character) */
    size_t text_len;
    float logprob;              /* log softmax of the raw logits (before
                                 * penalties and temperature) */
    int n_top;                  /* = request.logprobs */
    const int32_t *top_ids;     /* (n_top), most likely first */
    const float *top_logprobs;  /* (n_top) */
    const float *logits;        /* (V) the raw logits it was sampled from */
    /* DONE */
    enum gen_finish finish;
    int prompt_tokens, completion_tokens;
    int cached_tokens;          /* prompt tokens whose keys and values came
                                 * from the prefix cache */
    const int32_t *tokens;      /* (completion_tokens) generated ids, a
                                 * final stop/end id included */
    const float *token_logprobs;    /* (completion_tokens) */
    const char *full_text;      /* whole output text (stop string cut) */
    size_t full_len;
    /* PROMPT */
    int n_prompt;
    const int32_t *prompt;              /* (n_prompt) */
    const float *prompt_logprobs;       /* (n_prompt), [0] is NaN */
    int n_prompt_top;
    const int32_t *prompt_top_ids;      /* (n_prompt, n_prompt_top), row 0 unused */
    const float *prompt_top_logprobs;   /* (n_prompt, n_prompt_top) */
};

typedef void (*gen_event_fn)(void *ctx, const struct gen_event *ev);

struct gen_stats {
    int active;                 /* sequences being prefilled or decoded */
    int waiting;                /* requests queued */
    int kv_blocks_used, kv_blocks_total, kv_blocks_reserved;
    int block_size;
    long long tokens_generated, tokens_prefilled, steps;
    long long packed_bytes;     /* the engine's packed copy of the weights */
    long long discarded_bytes;  /* the model's matrices given back
                                 * (discard_matrices) */
    int kv_blocks_cached;       /* prefix cache: blocks kept without a
                                 * sequence (free for use, evicted then) */
    long long prefix_queries;   /* prompt tokens looked up in it */
    long long prefix_hits;      /* of them, found (not computed again) */
    long long spec_drafted;     /* draft tokens verified */
    long long spec_accepted;    /* of them, kept */
    long long preemptions;      /* sequences that gave their KV blocks back
                                 * to let older ones go on (computed again
                                 * when they resume) */
};

struct gen_engine;

/* An engine over m and tok (both borrowed; tok may be NULL: no text, no stop
 * strings). Returns a new engine (caller frees) or NULL with err filled. */
struct gen_engine *gen_engine_new(struct model *m, const struct tokenizer *tok,
                                  const struct gen_config *cfg, gen_event_fn fn,
                                  void *ctx, char *err, size_t errlen);
/* Frees the engine; pending requests are dropped without events. */
void gen_engine_free(struct gen_engine *e);

/* Queues a request. Returns 0, or -1 with err filled when it is invalid or
 * can never fit (more KV blocks than the cache holds, more samples than
 * max_seqs); a refused request leaves the engine unchanged. */
int gen_submit(struct gen_engine *e, const struct gen_request *r, char *err,
               size_t errlen);
/* Cancels every queued or running request with this id: each unfinished
 * sample gets a DONE event with GEN_FINISH_CANCELLED and its KV blocks are
 * freed at once. Returns the number of requests cancelled. */
int gen_cancel(struct gen_engine *e, const char *id);
/* Admits what fits, runs one forward over all active sequences, samples
 * and emits events. Returns the number of sequences and requests still
 * pending (0 = idle), or -1 with err filled on an internal failure. */
int gen_step(struct gen_engine *e, char *err, size_t errlen);
bool gen_idle(const struct gen_engine *e);
void gen_stats_get(const struct gen_engine *e, struct gen_stats *st);

/* Where the steps' time goes (bench generate --profile): wall seconds per
 * kind of op, summed over the gen_step calls made while a profile is
 * attached. Each figure is host time around the backend calls, so it is
 * per op only where the backend's ops are synchronous (the CPU's).
 * "rope" is the step's cos/sin table; the rotations and the KV cache
 * stores are in "attention" (attention_paged_step). */
enum gen_prof_op {
    GEN_PROF_EMBED, GEN_PROF_NORM, GEN_PROF_QKV, GEN_PROF_ROPE,
    GEN_PROF_ATTENTION, GEN_PROF_O, GEN_PROF_MLP_IN, GEN_PROF_MLP_DOWN,
    GEN_PROF_LOGITS, GEN_PROF_SAMPLE, GEN_PROF_N
};
extern const char *const gen_prof_op_names[GEN_PROF_N];    /* "embed", "norm", ... */
struct gen_profile {
    double s[GEN_PROF_N];       /* seconds in each kind of op */
    double step_s;              /* seconds in gen_step, all of it */
    long long steps;
    /* cache bytes the attention's rows attend to: keys and values of
     * positions 0..pos of every row, every layer (what a decode step's
     * attention reads; prefill rows sharing a chunk read it once) */
    double kv_bytes;
};
/* Attaches p (borrowed; NULL detaches): every later gen_step adds to it. */
void gen_profile_attach(struct gen_engine *e, struct gen_profile *p);

#endif
