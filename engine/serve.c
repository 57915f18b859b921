/* engine/serve.c — the NDJSON request loop of `aha-engine serve`
 * (serve.h; the protocol is api/engine-protocol.md). One thread: between
 * generation steps it polls the input, so requests join running batches
 * (continuous batching) and cancels take effect at the next step. Every
 * problem with a line becomes an error event naming it; only a failed
 * write to the output ends the loop. */
#include "serve.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "chat_template.h"
#include "cli.h"
#include "generate.h"
#include "jsonl.h"
#include "model.h"
#include "tokenizer.h"

struct serve;

struct serve_model {
    char *name, *dir;
    struct model *m;
    struct model *draft;        /* speculative "draft_model"'s, or NULL */
    char *draft_dir;
    struct tokenizer *tok;
    enum chat_template_kind tmpl;
    struct gen_engine *e;
    struct serve *sv;
};

/* A generate request in flight (the engine's `user` pointer). */
struct serve_req {
    struct serve_req *next;
    char *id;
    struct serve_model *sm;
    int remaining;              /* samples without a done event yet */
    bool stream, want_logprobs;
};

struct serve {
    FILE *out;
    bool write_failed;
    struct serve_model *models[SERVE_MAX_MODELS];
    int n_models;
    struct serve_req *reqs;
};

/* ------------------------------------------------------------- output */

/* Writes obj as one line (steals the reference). */
static void serve_send(struct serve *sv, json_t *obj)
{
    if (!obj) return;
    if (json_dumpf(obj, sv->out, JSON_COMPACT) || fputc('\n', sv->out) == EOF)
        sv->write_failed = true;
    json_decref(obj);
}

static void send_error(struct serve *sv, const char *id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void send_error(struct serve *sv, const char *id, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *o = json_pack("{s:s, s:s}", "type", "error", "message", msg);
    if (id) json_object_set_new(o, "id", json_string(id));
    serve_send(sv, o);
}

static void req_unlink(struct serve *sv, struct serve_req *q)
{
    for (struct serve_req **pp = &sv->reqs; *pp; pp = &(*pp)->next)
        if (*pp == q) { *pp = q->next; break; }
    free(q->id);
    free(q);
}

/* The text of one token for logprobs listings: its bytes when they are
 * valid UTF-8 on their own, else OpenAI's "bytes:\xe4\xbd" form (a token
 * holding part of a character). NULL when the model has no tokenizer. */
static json_t *token_text(const struct tokenizer *tok, int32_t id)
{
    if (!tok) return NULL;
    size_t n = 0;
    const char *b = tok_token_bytes(tok, id, &n);
    if (!b) b = "";     /* an id past the tokenizer's (a padded vocabulary): no text */
    json_t *j = memchr(b, 0, n) ? NULL : json_stringn(b, n);
    if (!j) {
        char buf[8 + 4 * 64 + 1];
        size_t o = (size_t)snprintf(buf, sizeof buf, "bytes:");
        for (size_t i = 0; i < n && o + 4 < sizeof buf; i++)
            o += (size_t)snprintf(buf + o, sizeof buf - o, "\\x%02x", (unsigned char)b[i]);
        j = json_string(buf);
    }
    return j;
}

static json_t *top_json(const struct tokenizer *tok, int n, const int32_t *ids, const float *lps)
{
    json_t *a = json_array();
    for (int k = 0; k < n; k++) {
        json_t *t = json_pack("{s:i, s:f}", "token_id", ids[k], "logprob", (double)lps[k]);
        json_t *tx = token_text(tok, ids[k]);
        if (tx) json_object_set_new(t, "text", tx);
        json_array_append_new(a, t);
    }
    return a;
}

static void on_event(void *ctx, const struct gen_event *ev)
{
    struct serve_model *sm = ctx;
    struct serve *sv = sm->sv;
    struct serve_req *q = ev->user;
    if (ev->kind == GEN_EVENT_PROMPT) {
        json_t *toks = json_array(), *lps = json_array(), *tops = json_array();
        json_t *texts = sm->tok ? json_array() : NULL;
        for (int i = 0; i < ev->n_prompt; i++) {
            json_array_append_new(toks, json_integer(ev->prompt[i]));
            if (texts) {
                json_t *tx = token_text(sm->tok, ev->prompt[i]);
                json_array_append_new(texts, tx ? tx : json_string(""));
            }
            json_array_append_new(lps, i ? json_real(ev->prompt_logprobs[i]) : json_null());
            if (ev->n_prompt_top > 0)
                json_array_append_new(tops, i ? top_json(sm->tok, ev->n_prompt_top,
                    ev->prompt_top_ids + (size_t)i * ev->n_prompt_top,
                    ev->prompt_top_logprobs + (size_t)i * ev->n_prompt_top) : json_null());
        }
        json_t *o = json_pack("{s:s, s:s, s:o, s:o}", "type", "prompt_logprobs", "id", ev->id,
                              "tokens", toks, "logprobs", lps);
        if (ev->n_prompt_top > 0) json_object_set_new(o, "top_logprobs", tops);
        else json_decref(tops);
        if (texts) json_object_set_new(o, "texts", texts);
        serve_send(sv, o);
    } else if (ev->kind == GEN_EVENT_TOKEN) {
        if (!q->stream) return;
        json_t *o = json_pack("{s:s, s:s, s:i, s:i, s:o, s:f}", "type", "token", "id", ev->id,
                              "index", ev->index, "token_id", ev->token, "text",
                              jsonl_text(ev->text, ev->text_len), "logprob", (double)ev->logprob);
        if (ev->n_top > 0)
            json_object_set_new(o, "top_logprobs", top_json(sm->tok, ev->n_top, ev->top_ids, ev->top_logprobs));
        serve_send(sv, o);
    } else {
        json_t *toks = json_array();
        for (int i = 0; i < ev->completion_tokens; i++)
            json_array_append_new(toks, json_integer(ev->tokens[i]));
        json_t *o = json_pack("{s:s, s:s, s:i, s:s, s:o, s:o, s:{s:i, s:i, s:i, s:{s:i}}}",
                              "type", "done", "id", ev->id, "index", ev->index,
                              "finish_reason", gen_finish_name(ev->finish),
                              "text", jsonl_text(ev->full_text, ev->full_len), "tokens", toks, "usage",
                              "prompt_tokens", ev->prompt_tokens,
                              "completion_tokens", ev->completion_tokens,
                              "total_tokens", ev->prompt_tokens + ev->completion_tokens,
                              "prompt_tokens_details", "cached_tokens", ev->cached_tokens);
        if (q->want_logprobs && ev->token_logprobs) {
            json_t *lps = json_array();
            for (int i = 0; i < ev->completion_tokens; i++)
                json_array_append_new(lps, json_real(ev->token_logprobs[i]));
            json_object_set_new(o, "logprobs", lps);
        }
        serve_send(sv, o);
        if (--q->remaining == 0) req_unlink(sv, q);
    }
}

/* ------------------------------------------------------- field parsing */

/* Each getter: absent leaves *out unchanged and returns 0; a wrong type or
 * range fills err ("field \"x\": ...") and returns -1. */
static int get_int(json_t *msg, const char *name, long long lo, long long hi, long long *out,
                   char *err, size_t errlen)
{
    json_t *v = json_object_get(msg, name);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        snprintf(err, errlen, "field \"%s\": expected an integer in [%lld, %lld]", name, lo, hi);
        return -1;
    }
    *out = json_integer_value(v);
    return 0;
}

static int get_num(json_t *msg, const char *name, float *out, char *err, size_t errlen)
{
    json_t *v = json_object_get(msg, name);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) {
        snprintf(err, errlen, "field \"%s\": expected a number", name);
        return -1;
    }
    *out = (float)json_number_value(v);
    return 0;
}

static int get_bool(json_t *msg, const char *name, bool *out, char *err, size_t errlen)
{
    json_t *v = json_object_get(msg, name);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) {
        snprintf(err, errlen, "field \"%s\": expected true or false", name);
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

static int get_str(json_t *msg, const char *name, const char **out, char *err, size_t errlen)
{
    json_t *v = json_object_get(msg, name);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v)) {
        snprintf(err, errlen, "field \"%s\": expected a string", name);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

/* An array of at most max integers in [0, lim) -> new array (caller
 * frees), count in *n. */
static int get_ids(json_t *msg, const char *name, int max, long long lim, int32_t **out, int *n,
                   char *err, size_t errlen)
{
    json_t *v = json_object_get(msg, name);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_array(v) || (int)json_array_size(v) > max) {
        snprintf(err, errlen, "field \"%s\": expected an array of at most %d token ids", name, max);
        return -1;
    }
    int32_t *ids = malloc((json_array_size(v) + 1) * sizeof *ids);
    if (!ids) { snprintf(err, errlen, "out of memory"); return -1; }
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) {
        if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) >= lim) {
            snprintf(err, errlen, "field \"%s[%zu]\": expected a token id in [0, %lld)", name, i, lim);
            free(ids);
            return -1;
        }
        ids[i] = (int32_t)json_integer_value(x);
    }
    *out = ids;
    *n = (int)json_array_size(v);
    return 0;
}

/* OpenAI's logit_bias: an object of token ids (decimal strings) in
 * [0, lim) to numbers in [-100, 100] -> new arrays (caller frees). */
static int get_bias(json_t *msg, long long lim, int32_t **ids_out, float **vals_out, int *n,
                    char *err, size_t errlen)
{
    json_t *v = json_object_get(msg, "logit_bias");
    if (!v || json_is_null(v)) return 0;
    if (!json_is_object(v) || json_object_size(v) > GEN_MAX_BIAS) {
        snprintf(err, errlen, "field \"logit_bias\": expected an object of at most %d token ids "
                 "to numbers", GEN_MAX_BIAS);
        return -1;
    }
    int32_t *ids = malloc((json_object_size(v) + 1) * sizeof *ids);
    float *vals = malloc((json_object_size(v) + 1) * sizeof *vals);
    if (!ids || !vals) {
        free(ids);
        free(vals);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int k = 0;
    const char *key;
    json_t *x;
    json_object_foreach(v, key, x) {
        char *end;
        errno = 0;
        long long id = strtoll(key, &end, 10);
        if (!*key || *end || errno || id < 0 || id >= lim) {
            snprintf(err, errlen, "field \"logit_bias\": key \"%.40s\" is not a token id in [0, %lld)",
                     key, lim);
            goto fail;
        }
        if (!json_is_number(x) || !(json_number_value(x) >= -100 && json_number_value(x) <= 100)) {
            snprintf(err, errlen, "field \"logit_bias\": the bias of token %lld is not a number "
                     "in [-100, 100]", id);
            goto fail;
        }
        ids[k] = (int32_t)id;
        vals[k++] = (float)json_number_value(x);
    }
    *ids_out = ids;
    *vals_out = vals;
    *n = k;
    return 0;
fail:
    free(ids);
    free(vals);
    return -1;
}

static struct serve_model *find_model(struct serve *sv, const char *name)
{
    for (int i = 0; i < sv->n_models; i++)
        if (strcmp(sv->models[i]->name, name) == 0) return sv->models[i];
    return NULL;
}

/* The model named by the message, or the only one loaded. */
static struct serve_model *pick_model(struct serve *sv, json_t *msg, char *err, size_t errlen)
{
    const char *name = NULL;
    if (get_str(msg, "model", &name, err, errlen)) return NULL;
    if (!name) {
        if (sv->n_models == 1) return sv->models[0];
        snprintf(err, errlen, sv->n_models ? "field \"model\" is missing (%d models are loaded)"
                                           : "no model is loaded (send a \"load\" first)", sv->n_models);
        return NULL;
    }
    struct serve_model *sm = find_model(sv, name);
    if (!sm) snprintf(err, errlen, "model \"%s\" is not loaded", name);
    return sm;
}

/* ------------------------------------------------------------ requests */

static void model_unload(struct serve *sv, struct serve_model *sm)
{
    for (struct serve_req *q = sv->reqs, *nx; q; q = nx) {
        nx = q->next;
        if (q->sm == sm) gen_cancel(sm->e, q->id);     /* done events free q */
    }
    gen_engine_free(sm->e);
    tok_free(sm->tok);
    model_free(sm->m);
    model_free(sm->draft);
    free(sm->draft_dir);
    free(sm->name);
    free(sm->dir);
    free(sm);
}

/* load's "speculative": {"method": "ngram", "num_speculative_tokens": k,
 * "prompt_lookup_min": a, "prompt_lookup_max": b, "max_seqs": m} or
 * {"method": "draft_model", "model": DIR, "num_speculative_tokens": k,
 * "max_seqs": m} (vLLM's speculative_config names; "model" alone means
 * draft_model) into cfg and *draft_dir (NULL: prompt lookup); absent or
 * null: off. */
static int get_speculative(json_t *msg, struct gen_config *cfg, const char **draft_dir,
                           char *err, size_t errlen)
{
    *draft_dir = NULL;
    json_t *v = json_object_get(msg, "speculative");
    if (!v || json_is_null(v)) return 0;
    if (!json_is_object(v)) {
        snprintf(err, errlen, "field \"speculative\": expected an object");
        return -1;
    }
    const char *method = NULL, *dir = NULL;
    long long k = 4, lo = cfg->spec_ngram_min, hi = cfg->spec_ngram_max, seqs = cfg->spec_max_seqs;
    char e[512] = "";
    if (get_str(v, "method", &method, e, sizeof e) || get_str(v, "model", &dir, e, sizeof e) ||
        get_int(v, "num_speculative_tokens", 0, GEN_MAX_SPEC, &k, e, sizeof e) ||
        get_int(v, "prompt_lookup_min", 1, 16, &lo, e, sizeof e) ||
        get_int(v, "prompt_lookup_max", 1, 16, &hi, e, sizeof e) ||
        get_int(v, "max_seqs", 1, 64, &seqs, e, sizeof e)) {
        snprintf(err, errlen, "speculative: %s", e);
        return -1;
    }
    if (!method) method = dir ? "draft_model" : "ngram";
    if (strcmp(method, "ngram") != 0 && strcmp(method, "draft_model") != 0) {
        snprintf(err, errlen, "speculative: field \"method\": \"ngram\" (prompt lookup) or "
                 "\"draft_model\", got \"%s\"", method);
        return -1;
    }
    const bool draft = strcmp(method, "draft_model") == 0;
    if (draft != (dir != NULL)) {
        snprintf(err, errlen, "speculative: field \"model\" (the draft model's directory) %s",
                 dir ? "goes only with method \"draft_model\"" : "is missing");
        return -1;
    }
    if (draft && k == 0) {
        snprintf(err, errlen, "speculative: a draft model needs num_speculative_tokens >= 1");
        return -1;
    }
    *draft_dir = dir;
    if (lo > hi) {
        snprintf(err, errlen, "speculative: prompt_lookup_min %lld is above prompt_lookup_max %lld",
                 lo, hi);
        return -1;
    }
    cfg->spec_tokens = (int)k;
    cfg->spec_ngram_min = (int)lo;
    cfg->spec_ngram_max = (int)hi;
    cfg->spec_max_seqs = (int)seqs;
    return 0;
}

static void do_load(struct serve *sv, json_t *msg, const char *id)
{
    char err[1024] = "";
    const char *name = NULL, *path = NULL, *kv_dtype = "f16", *dtype = "auto";
    long long kv_mb = 256, max_seqs = 64, block = 16;
    bool prefix_cache = true;
    if (get_str(msg, "model", &name, err, sizeof err) || get_str(msg, "path", &path, err, sizeof err) ||
        get_bool(msg, "prefix_cache", &prefix_cache, err, sizeof err) ||
        get_str(msg, "kv_dtype", &kv_dtype, err, sizeof err) ||
        get_str(msg, "dtype", &dtype, err, sizeof err) ||
        get_int(msg, "kv_memory_mb", 1, 1 << 20, &kv_mb, err, sizeof err) ||
        get_int(msg, "max_seqs", 1, 4096, &max_seqs, err, sizeof err) ||
        get_int(msg, "block_size", 1, 1024, &block, err, sizeof err))
        goto fail;
    if (!name || !path) { snprintf(err, sizeof err, "load needs fields \"model\" (a name) and \"path\""); goto fail; }
    enum kv_dtype dt;
    if (kv_dtype_parse(kv_dtype, &dt)) { snprintf(err, sizeof err, "field \"kv_dtype\": expected \"f16\", \"f32\" or \"q8\""); goto fail; }
    if (find_model(sv, name)) { snprintf(err, sizeof err, "model \"%s\" is already loaded", name); goto fail; }
    if (sv->n_models == SERVE_MAX_MODELS) { snprintf(err, sizeof err, "%d models are loaded already (the limit)", SERVE_MAX_MODELS); goto fail; }
    struct serve_model *sm = calloc(1, sizeof *sm);
    if (!sm) { snprintf(err, sizeof err, "out of memory"); goto fail; }
    sm->sv = sv;
    sm->name = strdup(name);
    sm->dir = strdup(path);
    sm->m = model_load(path, backend_cpu(), err, sizeof err);
    if (!sm->name || !sm->dir || !sm->m) goto fail_model;
    char tpath[4096];
    snprintf(tpath, sizeof tpath, "%s/tokenizer.json", path);
    if (access(tpath, R_OK) == 0) {
        if (!(sm->tok = tok_load(tpath, err, sizeof err))) goto fail_model;
        if (chat_template_detect(path, &sm->tmpl, err, sizeof err)) goto fail_model;
    }
    struct gen_config cfg;
    gen_config_default(&cfg);
    cfg.kv_bytes = (size_t)kv_mb << 20;
    cfg.kv_dtype = dt;
    if (w_dtype_parse(dtype, sm->m, &cfg.dtype)) {
        snprintf(err, sizeof err, "field \"dtype\": expected \"auto\", \"f32\", \"bf16\", \"q8\" or \"q4\"");
        goto fail_model;
    }
    cfg.max_seqs = (int)max_seqs;
    cfg.block_size = (int)block;
    const char *draft_dir;
    if (get_speculative(msg, &cfg, &draft_dir, err, sizeof err)) goto fail_model;
    if (draft_dir) {
        char e2[900] = "out of memory";
        if (!(sm->draft_dir = strdup(draft_dir)) ||
            !(sm->draft = model_load(draft_dir, backend_cpu(), e2, sizeof e2))) {
            snprintf(err, sizeof err, "speculative: draft model: %s", e2);
            goto fail_model;
        }
        cfg.spec_model = sm->draft;
    }
    if (cfg.max_step_tokens < cfg.max_seqs) cfg.max_step_tokens = cfg.max_seqs;
    if (cfg.spec_tokens && cfg.max_step_tokens < cfg.spec_max_seqs * (cfg.spec_tokens + 1))
        cfg.max_step_tokens = cfg.spec_max_seqs * (cfg.spec_tokens + 1);
    /* served only: the engine reads its packed copy, so the model's own
     * matrices go back as they are packed (the weights held once) */
    cfg.discard_matrices = true;
    cfg.prefix_cache = prefix_cache;
    sm->e = gen_engine_new(sm->m, sm->tok, &cfg, on_event, sm, err, sizeof err);
    if (!sm->e) goto fail_model;
    sv->models[sv->n_models++] = sm;
    struct gen_stats st;
    gen_stats_get(sm->e, &st);
    const double weights_mb = round(((double)sm->m->n_params * sizeof(float) -
                                     (double)st.discarded_bytes + (double)st.packed_bytes) / 1e5) / 10;
    json_t *o = json_pack("{s:s, s:s, s:i, s:i, s:b, s:i, s:i, s:s, s:s, s:f, s:b}", "type", "loaded",
                          "model", name, "vocab_size", sm->m->cfg.vocab_size,
                          "max_position_embeddings", sm->m->cfg.max_position_embeddings,
                          "tokenizer", sm->tok != NULL, "kv_blocks", st.kv_blocks_total,
                          "block_size", st.block_size, "kv_dtype", kv_dtype_name(dt),
                          "dtype", w_dtype_name(cfg.dtype), "weights_mb", weights_mb,
                          "prefix_cache", prefix_cache);
    if (cfg.spec_tokens && sm->draft)
        json_object_set_new(o, "speculative",
                            json_pack("{s:s, s:s, s:i, s:i}", "method", "draft_model",
                                      "model", sm->draft_dir,
                                      "num_speculative_tokens", cfg.spec_tokens,
                                      "max_seqs", cfg.spec_max_seqs));
    else if (cfg.spec_tokens)
        json_object_set_new(o, "speculative",
                            json_pack("{s:s, s:i, s:i, s:i, s:i}", "method", "ngram",
                                      "num_speculative_tokens", cfg.spec_tokens,
                                      "prompt_lookup_min", cfg.spec_ngram_min,
                                      "prompt_lookup_max", cfg.spec_ngram_max,
                                      "max_seqs", cfg.spec_max_seqs));
    if (id) json_object_set_new(o, "id", json_string(id));
    serve_send(sv, o);
    return;
fail_model:
    if (sm->e) gen_engine_free(sm->e);
    tok_free(sm->tok);
    model_free(sm->m);
    model_free(sm->draft);
    free(sm->draft_dir);
    free(sm->name);
    free(sm->dir);
    free(sm);
fail:
    send_error(sv, id, "load: %s", err);
}

static void do_unload(struct serve *sv, json_t *msg, const char *id)
{
    char err[512];
    const char *name = NULL;
    if (get_str(msg, "model", &name, err, sizeof err)) { send_error(sv, id, "unload: %s", err); return; }
    struct serve_model *sm = name ? find_model(sv, name) : NULL;
    if (!sm) { send_error(sv, id, "unload: model \"%s\" is not loaded", name ? name : "(missing)"); return; }
    for (int i = 0; i < sv->n_models; i++)
        if (sv->models[i] == sm) sv->models[i] = sv->models[--sv->n_models];
    model_unload(sv, sm);
    json_t *o = json_pack("{s:s, s:s}", "type", "unloaded", "model", name);
    if (id) json_object_set_new(o, "id", json_string(id));
    serve_send(sv, o);
}

/* The prompt ids of a generate request (new array in *ids, caller frees). */
/* no_think: messages rendered with an empty reasoning block after the
 * assistant's header (JSON mode: the answer is the object itself). */
static int prompt_ids(struct serve_model *sm, json_t *msg, bool no_think, const json_t *tools,
                      int32_t **ids, int *n, char *err, size_t errlen)
{
    json_t *p = json_object_get(msg, "prompt"), *pi = json_object_get(msg, "prompt_ids");
    json_t *ms = json_object_get(msg, "messages");
    if ((p != NULL) + (pi != NULL) + (ms != NULL) != 1) {
        snprintf(err, errlen, "exactly one of \"prompt\", \"prompt_ids\" and \"messages\" is needed");
        return -1;
    }
    if (pi) return get_ids(msg, "prompt_ids", sm->m->cfg.max_position_embeddings,
                           sm->m->cfg.vocab_size, ids, n, err, errlen);
    if (!sm->tok) {
        snprintf(err, errlen, "model \"%s\" has no tokenizer.json: send \"prompt_ids\"", sm->name);
        return -1;
    }
    char *text = NULL;
    if (p) {
        if (!json_is_string(p)) { snprintf(err, errlen, "field \"prompt\": expected a string"); return -1; }
        text = strdup(json_string_value(p));
    } else {
        if (!json_is_array(ms)) { snprintf(err, errlen, "field \"messages\": expected an array"); return -1; }
        struct chat_opts o = {.add_generation_prompt = true, .prefill_think = -1,
                              .disable_thinking = no_think, .tools = tools};
        char terr[512];
        text = chat_template_render_json(sm->tmpl, ms, &o, terr, sizeof terr);
        if (!text) { snprintf(err, errlen, "%s", terr); return -1; }
    }
    if (!text) { snprintf(err, errlen, "out of memory"); return -1; }
    *n = tok_encode(sm->tok, text, strlen(text), ids);
    free(text);
    if (*n < 0) { snprintf(err, errlen, "cannot tokenize the prompt"); return -1; }
    return 0;
}

/* OpenAI's tools and tool_choice: *tools the definitions to render (NULL:
 * none, or tool_choice "none"); for "required" or a named function,
 * *force the schema of the one call the answer must be, {"name",
 * "arguments"} (a new reference). */
static int get_tools(json_t *msg, const json_t **tools, json_t **force, char *err, size_t errlen)
{
    json_t *t = json_object_get(msg, "tools"), *tc = json_object_get(msg, "tool_choice");
    *tools = NULL;
    *force = NULL;
    if (json_is_null(t) || (json_is_array(t) && json_array_size(t) == 0)) t = NULL;
    if (json_is_null(tc)) tc = NULL;
    if (!t) {
        if (tc && !(json_is_string(tc) && !strcmp(json_string_value(tc), "none"))) {
            snprintf(err, errlen, "field \"tool_choice\": needs \"tools\"");
            return -1;
        }
        return 0;
    }
    if (!json_is_array(t) || json_array_size(t) > 128) {
        snprintf(err, errlen, "field \"tools\": expected an array of at most 128 tools");
        return -1;
    }
    if (!json_object_get(msg, "messages")) {
        snprintf(err, errlen, "field \"tools\": needs \"messages\" (the chat template lists them)");
        return -1;
    }
    size_t i;
    json_t *x;
    json_array_foreach(t, i, x) {
        json_t *f = json_object_get(x, "function");
        json_t *name = json_object_get(f, "name"), *params = json_object_get(f, "parameters");
        if (!json_is_string(json_object_get(x, "type")) ||
            strcmp(json_string_value(json_object_get(x, "type")), "function") || !json_is_string(name) ||
            !json_string_length(name) || (params && !json_is_object(params))) {
            snprintf(err, errlen, "field \"tools[%zu]\": expected {\"type\": \"function\", \"function\": "
                     "{\"name\": a string, \"parameters\": a JSON Schema}}", i);
            return -1;
        }
    }
    const char *mode = json_is_string(tc) ? json_string_value(tc) : tc ? NULL : "auto";
    const char *fname = json_string_value(json_object_get(json_object_get(tc, "function"), "name"));
    if (!(mode && (!strcmp(mode, "none") || !strcmp(mode, "auto") || !strcmp(mode, "required"))) &&
        !(json_is_object(tc) && fname)) {
        snprintf(err, errlen, "field \"tool_choice\": expected \"none\", \"auto\", \"required\" or "
                 "{\"type\": \"function\", \"function\": {\"name\": ...}}");
        return -1;
    }
    if (mode && !strcmp(mode, "none")) return 0;
    *tools = t;
    if (mode && !strcmp(mode, "auto")) return 0;
    /* one call: a named function's, or any tool's ({"enum"} of names with
     * arguments of any object when there are several) */
    json_t *only = json_array_size(t) == 1 && !fname ? json_array_get(t, 0) : NULL;
    json_array_foreach(t, i, x)
        if (fname && !strcmp(json_string_value(json_object_get(json_object_get(x, "function"), "name")),
                             fname))
            only = x;
    if (fname && !only) {
        snprintf(err, errlen, "field \"tool_choice\": no tool is named \"%.100s\"", fname);
        return -1;
    }
    json_t *names = json_array(), *args = NULL;
    if (only) {
        json_t *f = json_object_get(only, "function");
        json_array_append(names, json_object_get(f, "name"));
        args = json_object_get(f, "parameters");
    } else {
        json_array_foreach(t, i, x) json_array_append(names, json_object_get(json_object_get(x, "function"), "name"));
    }
    args = args ? json_incref(args) : json_pack("{s:s}", "type", "object");
    *force = json_pack("{s:s, s:{s:{s:o}, s:o}, s:[s,s], s:b}", "type", "object", "properties",
                       "name", "enum", names, "arguments", args, "required", "name", "arguments",
                       "additionalProperties", 0);
    if (!*force) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static void do_generate(struct serve *sv, json_t *msg, const char *id)
{
    char err[1024] = "";
    int32_t *ids = NULL, *stop_ids = NULL, *bias_ids = NULL;
    float *bias_vals = NULL;
    struct jg_schema *schema = NULL;
    const char *stops[GEN_MAX_STOP];
    struct serve_req *q = NULL;
    if (!id) { send_error(sv, NULL, "generate: field \"id\" is missing"); return; }
    for (struct serve_req *r = sv->reqs; r; r = r->next)
        if (strcmp(r->id, id) == 0) { send_error(sv, id, "generate: request \"%s\" is already in flight", id); return; }
    struct serve_model *sm = pick_model(sv, msg, err, sizeof err);
    if (!sm) goto fail;
    struct gen_request r;
    gen_request_default(&r);
    long long n = 1, max_tokens = 16, top_k = 0, seed = -1, lp = -1, plp = -1;
    bool stream = true, thinking = true;
    struct sampler_params *sp = &r.sampling;
    if (get_int(msg, "n", 1, GEN_MAX_N, &n, err, sizeof err) ||
        get_int(msg, "max_tokens", 0, 1 << 24, &max_tokens, err, sizeof err) ||
        get_int(msg, "top_k", -1, 1 << 30, &top_k, err, sizeof err) ||
        get_int(msg, "seed", 0, INT64_MAX, &seed, err, sizeof err) ||
        get_int(msg, "logprobs", 0, SAMPLER_MAX_TOP, &lp, err, sizeof err) ||
        get_int(msg, "prompt_logprobs", 0, SAMPLER_MAX_TOP, &plp, err, sizeof err) ||
        get_num(msg, "temperature", &sp->temperature, err, sizeof err) ||
        get_num(msg, "top_p", &sp->top_p, err, sizeof err) ||
        get_num(msg, "min_p", &sp->min_p, err, sizeof err) ||
        get_num(msg, "repetition_penalty", &sp->repetition_penalty, err, sizeof err) ||
        get_num(msg, "presence_penalty", &sp->presence_penalty, err, sizeof err) ||
        get_num(msg, "frequency_penalty", &sp->frequency_penalty, err, sizeof err) ||
        get_bool(msg, "ignore_eos", &r.ignore_eos, err, sizeof err) ||
        get_bool(msg, "json_object", &r.json_object, err, sizeof err) ||
        get_bool(msg, "stream", &stream, err, sizeof err) ||
        get_bool(msg, "enable_thinking", &thinking, err, sizeof err) ||
        get_ids(msg, "stop_token_ids", GEN_MAX_STOP_IDS, sm->m->cfg.vocab_size, &stop_ids,
                &r.n_stop_ids, err, sizeof err) ||
        get_bias(msg, sm->m->cfg.vocab_size, &bias_ids, &bias_vals, &r.n_bias, err, sizeof err))
        goto fail;
    json_t *st = json_object_get(msg, "stop");
    if (json_is_string(st)) {
        stops[0] = json_string_value(st);
        r.n_stop = 1;
    } else if (json_is_array(st) && json_array_size(st) <= GEN_MAX_STOP) {
        size_t i;
        json_t *x;
        json_array_foreach(st, i, x) {
            if (!json_is_string(x)) { snprintf(err, sizeof err, "field \"stop[%zu]\": expected a string", i); goto fail; }
            stops[r.n_stop++] = json_string_value(x);
        }
    } else if (st && !json_is_null(st)) {
        snprintf(err, sizeof err, "field \"stop\": expected a string or an array of at most %d strings", GEN_MAX_STOP);
        goto fail;
    }
    json_t *js = json_object_get(msg, "json_schema"), *force = NULL;
    const json_t *tools = NULL;
    if (get_tools(msg, &tools, &force, err, sizeof err)) goto fail;
    if (force && ((js && !json_is_null(js)) || r.json_object)) {
        json_decref(force);
        snprintf(err, sizeof err, "field \"tool_choice\": \"required\" or a function cannot go with "
                 "\"json_schema\" or \"json_object\"");
        goto fail;
    }
    if (force) {
        /* the call's arguments: the function's parameters, as structured outputs */
        char e2[900];
        schema = jg_schema_compile(force, e2, sizeof e2);
        json_decref(force);
        if (!schema) {
            snprintf(err, sizeof err, "field \"tools\": the parameters of the forced call: %s", e2);
            goto fail;
        }
    } else if (js && !json_is_null(js) && !(schema = jg_schema_compile(js, err, sizeof err))) {
        goto fail;
    }
    r.json_schema = schema;
    /* JSON answers and enable_thinking false: an empty reasoning block */
    if (prompt_ids(sm, msg, !thinking || r.json_object || schema, tools, &ids, &r.n_prompt, err,
                   sizeof err))
        goto fail;
    q = calloc(1, sizeof *q);
    if (!q || !(q->id = strdup(id))) { snprintf(err, sizeof err, "out of memory"); goto fail; }
    q->sm = sm;
    q->remaining = (int)n;
    q->stream = stream;
    q->want_logprobs = lp >= 0;
    r.id = id;
    r.user = q;
    r.prompt = ids;
    r.n = (int)n;
    r.max_tokens = (int)max_tokens;
    sp->top_k = (int)top_k;
    r.has_seed = seed >= 0;
    r.seed = (uint64_t)seed;
    r.stop = stops;
    r.stop_ids = stop_ids;
    r.bias_ids = bias_ids;
    r.bias_vals = bias_vals;
    r.logprobs = lp > 0 ? (int)lp : 0;
    r.prompt_logprobs = (int)plp;
    if (gen_submit(sm->e, &r, err, sizeof err)) goto fail;
    q->next = sv->reqs;
    sv->reqs = q;
    free(ids);
    free(stop_ids);
    free(bias_ids);
    free(bias_vals);
    jg_schema_free(schema);
    return;
fail:
    if (q) { free(q->id); free(q); }
    free(ids);
    free(stop_ids);
    free(bias_ids);
    free(bias_vals);
    jg_schema_free(schema);
    send_error(sv, id, "generate: %s", err);
}

static void do_cancel(struct serve *sv, const char *id)
{
    if (!id) { send_error(sv, NULL, "cancel: field \"id\" (the request to cancel) is missing"); return; }
    for (struct serve_req *q = sv->reqs; q; q = q->next)
        if (strcmp(q->id, id) == 0) {
            gen_cancel(q->sm->e, id);   /* done events (cancelled) free q */
            return;
        }
    send_error(sv, id, "cancel: no request \"%s\" is in flight", id);
}

static void do_stats(struct serve *sv, const char *id)
{
    json_t *models = json_array();
    for (int i = 0; i < sv->n_models; i++) {
        struct gen_stats st;
        gen_stats_get(sv->models[i]->e, &st);
        json_array_append_new(models, json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:I, s:I, s:I, s:i, s:I, s:I, s:I, s:I, s:I}",
            "model", sv->models[i]->name, "active", st.active, "waiting", st.waiting,
            "kv_blocks_used", st.kv_blocks_used, "kv_blocks_total", st.kv_blocks_total,
            "kv_blocks_reserved", st.kv_blocks_reserved, "block_size", st.block_size,
            "tokens_generated", (json_int_t)st.tokens_generated,
            "tokens_prefilled", (json_int_t)st.tokens_prefilled, "steps", (json_int_t)st.steps,
            "kv_blocks_cached", st.kv_blocks_cached,
            "prefix_cache_queries", (json_int_t)st.prefix_queries,
            "prefix_cache_hits", (json_int_t)st.prefix_hits,
            "spec_draft_tokens", (json_int_t)st.spec_drafted,
            "spec_accepted_tokens", (json_int_t)st.spec_accepted,
            "preemptions", (json_int_t)st.preemptions));
    }
    json_t *o = json_pack("{s:s, s:i, s:o}", "type", "stats", "protocol", SERVE_PROTOCOL, "models", models);
    if (id) json_object_set_new(o, "id", json_string(id));
    serve_send(sv, o);
}

static void handle_line(struct serve *sv, const char *line, size_t len)
{
    size_t i = 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) i++;
    if (i == len) return;                           /* blank line */
    json_error_t je;
    json_t *msg = json_loadb(line, len, 0, &je);
    if (!msg) {
        send_error(sv, NULL, "malformed JSON at line position %d: %s", je.position, je.text);
        return;
    }
    const char *id = NULL, *type = NULL;
    json_t *jid = json_object_get(msg, "id"), *jtype = json_object_get(msg, "type");
    json_t *proto = json_object_get(msg, "protocol");
    if (!json_is_object(msg)) send_error(sv, NULL, "a request must be a JSON object");
    else if (jid && !json_is_string(jid)) send_error(sv, NULL, "field \"id\": expected a string");
    else if ((id = jid ? json_string_value(jid) : NULL), !json_is_string(jtype))
        send_error(sv, id, "field \"type\": expected a string");
    else if (proto && (!json_is_integer(proto) || json_integer_value(proto) != SERVE_PROTOCOL))
        send_error(sv, id, "unsupported protocol version (this engine speaks version %d)", SERVE_PROTOCOL);
    else if (!strcmp(type = json_string_value(jtype), "generate")) do_generate(sv, msg, id);
    else if (!strcmp(type, "cancel")) do_cancel(sv, id);
    else if (!strcmp(type, "stats")) do_stats(sv, id);
    else if (!strcmp(type, "load")) do_load(sv, msg, id);
    else if (!strcmp(type, "unload")) do_unload(sv, msg, id);
    else if (!strcmp(type, "hello")) {
        json_t *o = json_pack("{s:s, s:i}", "type", "hello", "protocol", SERVE_PROTOCOL);
        if (id) json_object_set_new(o, "id", json_string(id));
        serve_send(sv, o);
    } else send_error(sv, id, "unknown request type \"%s\" (expected hello, load, unload, "
                      "generate, cancel or stats)", type);
    json_decref(msg);
}

/* ---------------------------------------------------------------- loop */

int serve_run(int in_fd, FILE *out)
{
    struct serve sv = {.out = out};
    serve_send(&sv, json_pack("{s:s, s:i, s:s}", "type", "ready", "protocol", SERVE_PROTOCOL,
                        "backend", backend_cpu()->describe()));
    fflush(out);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    bool eof = false, discarding = false;
    while (buf && !sv.write_failed) {
        bool busy = false;
        for (int i = 0; i < sv.n_models; i++) busy |= !gen_idle(sv.models[i]->e);
        if (eof && !busy) break;
        if (!eof) {
            struct pollfd pfd = {.fd = in_fd, .events = POLLIN};
            int pr = poll(&pfd, 1, busy ? 0 : -1);
            if (pr < 0 && errno != EINTR) eof = true;
            if (pr > 0) {
                if (cap - len < 4096) {
                    char *g = cap < 2 * (size_t)SERVE_MAX_LINE ? realloc(buf, cap * 2) : NULL;
                    if (g) { buf = g; cap *= 2; }
                }
                ssize_t n = read(in_fd, buf + len, cap - len);
                if (n <= 0 && !(n < 0 && errno == EINTR)) {
                    eof = true;
                    if (len && !discarding) handle_line(&sv, buf, len);   /* last line without \n */
                    len = 0;
                } else if (n > 0) {
                    len += (size_t)n;
                    size_t start = 0;
                    for (;;) {
                        char *nl = memchr(buf + start, '\n', len - start);
                        if (!nl) break;
                        size_t ll = (size_t)(nl - (buf + start));
                        if (!discarding && ll > SERVE_MAX_LINE)
                            send_error(&sv, NULL, "request line exceeds %d bytes; skipped", SERVE_MAX_LINE);
                        else if (!discarding) handle_line(&sv, buf + start, ll);
                        discarding = false;
                        start += ll + 1;
                    }
                    memmove(buf, buf + start, len - start);
                    len -= start;
                    if (len > SERVE_MAX_LINE) {
                        if (!discarding)
                            send_error(&sv, NULL, "request line exceeds %d bytes; skipped", SERVE_MAX_LINE);
                        discarding = true;
                        len = 0;
                    }
                }
            }
        }
        for (int i = 0; i < sv.n_models; i++) {
            struct serve_model *sm = sv.models[i];
            if (gen_idle(sm->e)) continue;
            char err[512];
            if (gen_step(sm->e, err, sizeof err) < 0) {
                send_error(&sv, NULL, "model \"%s\": %s; its requests are cancelled", sm->name, err);
                for (struct serve_req *q = sv.reqs, *nx; q; q = nx) {
                    nx = q->next;
                    if (q->sm == sm) gen_cancel(sm->e, q->id);
                }
            }
        }
        if (fflush(out)) sv.write_failed = true;
    }
    free(buf);
    for (int i = 0; i < sv.n_models; i++) model_unload(&sv, sv.models[i]);
    fflush(out);
    return sv.write_failed ? -1 : 0;
}

int cli_serve(int argc, char **argv)
{
    static const char *const opts[] = {NULL};
    if (cli_args_check(argc, argv, opts, NULL)) return 2;
    /* a reader that goes away is a failed write, not a kill */
    signal(SIGPIPE, SIG_IGN);
    if (serve_run(0, stdout)) {
        fprintf(stderr, "serve: cannot write to stdout\n");
        return 1;
    }
    return 0;
}
