/* server/completions.c — POST /v1/completions and /v1/chat/completions:
 * validates an OpenAI request, sends one engine "generate" per choice,
 * shapes the engine's token events into OpenAI responses or SSE chunks
 * (splitting <think> reasoning for chat), and queues one trace per choice.
 * Tokenizing and chat templates are the engine's job, not this file's. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "models.h"
#include "reasoning.h"
#include "server.h"

struct gen_choice {
    struct gen_req *g;
    int index;
    int prompt_index;
    char engine_id[96];
    bool done;
    struct reasoning_parser rp;
    sbuf reasoning, content;  /* chat: split output; completions: content only */
    char finish_reason[32];
    long prompt_tokens, completion_tokens, reasoning_tokens, tokens_seen;
    json_t *logprobs;         /* chat: [items]; completions: {tokens,...} */
    json_t *pending_lp;       /* chat stream: items not yet sent */
    json_t *prompt_logprobs;  /* echo: from the engine's done event */
    double t_last;
};

struct gen_req {
    pthread_mutex_t mu;
    struct server *srv;
    struct MHD_Connection *conn;
    bool chat, stream, include_usage, include_reasoning, echo;
    int logprobs;             /* -1: none; else number of alternatives */
    bool suspended, finished, traced;
    int n_choices, n_done;
    struct gen_choice *choices;
    char id[64];
    char model[MODELS_ID_MAX + 1];
    long long created;
    double t0, t_first, last_write;
    double t_submit, t_done;  /* engine time: first generate sent .. last event */
    bool counted_running;
    sbuf out;                 /* SSE bytes not yet sent */
    int err_status;
    char err_msg[512];
    char err_code[64];
    json_t *params;           /* for traces */
    json_t *prompts;          /* completions: array of prompts (string or ids) */
    json_t *messages;         /* chat: sanitized messages */
    long long key_id;
    struct gen_req *hb_prev, *hb_next;
};

static pthread_mutex_t hb_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hb_cv = PTHREAD_COND_INITIALIZER;
static struct gen_req *hb_head;
static pthread_t hb_thread;
static bool hb_running, hb_stop;
static double hb_interval = 15;

/* ---- validation ---------------------------------------------------------- */

struct verr {
    int status;
    const char *param;
    const char *code;
    char msg[512];
};

static int bad(struct verr *v, int status, const char *param, const char *code,
               const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int bad(struct verr *v, int status, const char *param, const char *code,
               const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->msg, sizeof v->msg, fmt, ap);
    va_end(ap);
    v->status = status;
    v->param = param;
    v->code = code;
    return -1;
}

/* Optional number in [lo, hi]; copies it to the engine message `eng`. */
static int opt_number(json_t *body, const char *k, double lo, double hi, json_t *eng,
                      struct verr *v)
{
    json_t *x = json_object_get(body, k);
    if (!x || json_is_null(x)) return 0;
    if (!json_is_number(x))
        return bad(v, 400, k, "invalid_type", "'%s' must be a number", k);
    double d = json_number_value(x);
    if (!(d >= lo && d <= hi))
        return bad(v, 400, k, "invalid_value", "'%s' must be between %g and %g, got %g", k, lo,
                   hi, d);
    if (eng) json_object_set_new(eng, k, json_real(d));
    return 0;
}

static int opt_int(json_t *body, const char *k, long long lo, long long hi, long long *out,
                   struct verr *v)
{
    json_t *x = json_object_get(body, k);
    if (!x || json_is_null(x)) return 0;
    if (!json_is_integer(x))
        return bad(v, 400, k, "invalid_type", "'%s' must be an integer", k);
    long long n = json_integer_value(x);
    if (n < lo || n > hi)
        return bad(v, 400, k, "invalid_value", "'%s' must be between %lld and %lld, got %lld",
                   k, lo, hi, n);
    *out = n;
    return 1;
}

static int opt_bool(json_t *body, const char *k, bool *out, struct verr *v)
{
    json_t *x = json_object_get(body, k);
    if (!x || json_is_null(x)) return 0;
    if (!json_is_boolean(x))
        return bad(v, 400, k, "invalid_type", "'%s' must be a boolean", k);
    *out = json_is_true(x);
    return 1;
}

/* messages -> [{role, content}] with reasoning_content dropped and content
 * parts joined; returns a new reference or NULL with v filled. */
static json_t *clean_messages(json_t *msgs, struct verr *v)
{
    if (!json_is_array(msgs)) {
        bad(v, 400, "messages", msgs ? "invalid_type" : "missing_required_parameter",
            msgs ? "'messages' must be an array" : "you must provide a 'messages' parameter");
        return NULL;
    }
    size_t n = json_array_size(msgs);
    if (n == 0 || n > SERVER_MAX_MESSAGES) {
        bad(v, 400, "messages", "invalid_value", "'messages' must hold 1 to %d messages",
            SERVER_MAX_MESSAGES);
        return NULL;
    }
    json_t *out = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(msgs, i);
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!json_is_object(m) || !role) {
            bad(v, 400, "messages", "invalid_type", "messages[%zu]: must be an object with a "
                "string 'role'", i);
            goto fail;
        }
        if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant") &&
            strcmp(role, "tool") && strcmp(role, "developer")) {
            bad(v, 400, "messages", "invalid_value", "messages[%zu].role: unknown role \"%s\"",
                i, role);
            goto fail;
        }
        json_t *c = json_object_get(m, "content");
        sbuf text = {0};
        sbuf_append(&text, "", 0);
        if (json_is_string(c)) {
            sbuf_append(&text, json_string_value(c), json_string_length(c));
        } else if (json_is_array(c)) {
            size_t k;
            json_t *part;
            json_array_foreach(c, k, part) {
                const char *type = json_string_value(json_object_get(part, "type"));
                json_t *t = json_object_get(part, "text");
                if (!type || strcmp(type, "text") || !json_is_string(t)) {
                    sbuf_free(&text);
                    bad(v, 400, "messages", "invalid_value",
                        "messages[%zu].content[%zu]: only {\"type\":\"text\",\"text\":...} "
                        "parts are supported", i, k);
                    goto fail;
                }
                sbuf_append(&text, json_string_value(t), json_string_length(t));
            }
        } else if (!(json_is_null(c) || !c) || strcmp(role, "assistant") != 0) {
            sbuf_free(&text);
            bad(v, 400, "messages", "invalid_type",
                "messages[%zu].content: must be a string or an array of text parts", i);
            goto fail;
        }
        json_array_append_new(out, json_pack("{s:s, s:s%}", "role", role, "content", text.p,
                                             text.len));
        sbuf_free(&text);
    }
    return out;
fail:
    json_decref(out);
    return NULL;
}

/* prompt -> array of prompts (strings or arrays of token ids). */
static json_t *clean_prompts(json_t *p, struct verr *v)
{
    if (!p) {
        bad(v, 400, "prompt", "missing_required_parameter", "you must provide a 'prompt'");
        return NULL;
    }
    if (json_is_string(p)) return json_pack("[O]", p);
    if (!json_is_array(p) || json_array_size(p) == 0) {
        bad(v, 400, "prompt", "invalid_type", "'prompt' must be a string, an array of "
            "strings, or an array of token ids");
        return NULL;
    }
    json_t *first = json_array_get(p, 0);
    if (json_is_integer(first)) { /* one prompt of token ids */
        size_t i;
        json_t *x;
        json_array_foreach(p, i, x) if (!json_is_integer(x) || json_integer_value(x) < 0) {
            bad(v, 400, "prompt", "invalid_type", "prompt[%zu]: token ids must be "
                "non-negative integers", i);
            return NULL;
        }
        return json_pack("[O]", p);
    }
    size_t i;
    json_t *x;
    json_array_foreach(p, i, x) {
        bool ok = json_is_string(x);
        if (json_is_array(x) && json_array_size(x) > 0) {
            ok = true;
            size_t j;
            json_t *y;
            json_array_foreach(x, j, y) if (!json_is_integer(y) || json_integer_value(y) < 0)
                ok = false;
        }
        if (!ok) {
            bad(v, 400, "prompt", "invalid_type", "prompt[%zu]: must be a string or an array "
                "of token ids", i);
            return NULL;
        }
    }
    return json_incref(p);
}

/* ---- output shaping ------------------------------------------------------ */

static json_t *chunk_base(struct gen_req *g)
{
    json_t *o = json_pack("{s:s, s:s, s:I, s:s}", "id", g->id, "object",
                          g->chat ? "chat.completion.chunk" : "text_completion", "created",
                          (json_int_t)g->created, "model", g->model);
    if (g->chat) json_object_set_new(o, "system_fingerprint", json_null());
    if (g->include_usage) json_object_set_new(o, "usage", json_null());
    return o;
}

/* Appends "data: <json>\n\n" (obj stolen). */
static void sse_event(struct gen_req *g, json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (!s) return;
    sbuf_puts(&g->out, "data: ");
    sbuf_puts(&g->out, s);
    sbuf_puts(&g->out, "\n\n");
    free(s);
}

static void sse_chat_delta(struct gen_req *g, struct gen_choice *ch, json_t *delta,
                           const char *finish)
{
    json_t *o = chunk_base(g);
    json_t *choice = json_pack("{s:i, s:o, s:n, s:n}", "index", ch->index, "delta", delta,
                               "logprobs", "finish_reason");
    if (g->logprobs >= 0 && ch->pending_lp && json_array_size(ch->pending_lp)) {
        json_object_set_new(choice, "logprobs", json_pack("{s:O}", "content", ch->pending_lp));
        json_array_clear(ch->pending_lp);
    }
    if (finish) json_object_set_new(choice, "finish_reason", json_string(finish));
    json_object_set_new(o, "choices", json_pack("[o]", choice));
    sse_event(g, o);
}

static void sse_text(struct gen_req *g, struct gen_choice *ch, const char *text, size_t n,
                     json_t *lp, const char *finish)
{
    json_t *o = chunk_base(g);
    json_t *choice = json_pack("{s:i, s:s%, s:O?, s:s?}", "index", ch->index, "text", text, n,
                               "logprobs", lp, "finish_reason", finish);
    json_object_set_new(o, "choices", json_pack("[o]", choice));
    sse_event(g, o);
}

static json_t *usage_json(struct gen_req *g)
{
    long prompt = 0, completion = 0, reasoning = 0;
    for (int i = 0; i < g->n_choices; i++) {
        struct gen_choice *ch = &g->choices[i];
        if (i == 0 || ch->prompt_index != g->choices[i - 1].prompt_index)
            prompt += ch->prompt_tokens;
        completion += ch->completion_tokens;
        reasoning += ch->reasoning_tokens;
    }
    json_t *u = json_pack("{s:I, s:I, s:I}", "prompt_tokens", (json_int_t)prompt,
                          "completion_tokens", (json_int_t)completion, "total_tokens",
                          (json_int_t)(prompt + completion));
    if (g->chat)
        json_object_set_new(u, "completion_tokens_details",
                            json_pack("{s:I}", "reasoning_tokens", (json_int_t)reasoning));
    return u;
}

/* The text of a token object: its "text", else vLLM's "token_id:N" form
 * (the engine does not always send the text of alternatives). */
static const char *token_text(json_t *t, char *buf, size_t size)
{
    const char *s = json_string_value(json_object_get(t, "text"));
    if (!s) s = json_string_value(json_object_get(t, "token"));
    if (s) return s;
    snprintf(buf, size, "token_id:%lld", (long long)json_integer_value(json_object_get(t, "token_id")));
    return buf;
}

/* Top alternatives of a token event as OpenAI chat items / a legacy map. */
static json_t *top_items(json_t *ev, bool chat)
{
    json_t *tops = json_object_get(ev, "top_logprobs");
    json_t *out = chat ? json_array() : json_object();
    size_t i;
    json_t *t;
    json_array_foreach(tops, i, t) {
        char idbuf[48];
        const char *tok = token_text(t, idbuf, sizeof idbuf);
        double lp = json_number_value(json_object_get(t, "logprob"));
        if (chat) json_array_append_new(out, json_pack("{s:s, s:f, s:n}", "token", tok,
                                                       "logprob", lp, "bytes"));
        else json_object_set_new(out, tok, json_real(lp));
    }
    return out;
}

static json_t *chat_lp_item(json_t *ev, const char *text)
{
    json_t *b = json_array();
    for (const unsigned char *p = (const unsigned char *)text; *p; p++)
        json_array_append_new(b, json_integer(*p));
    json_t *lp = json_object_get(ev, "logprob");
    return json_pack("{s:s, s:f, s:o, s:o}", "token", text, "logprob",
                     json_is_number(lp) ? json_number_value(lp) : 0.0, "bytes", b,
                     "top_logprobs", top_items(ev, true));
}

static json_t *legacy_lp_new(void)
{
    return json_pack("{s:[], s:[], s:[], s:[]}", "tokens", "token_logprobs", "top_logprobs",
                     "text_offset");
}

static void legacy_lp_add(json_t *acc, const char *text, json_t *lp, json_t *tops, long offset)
{
    json_array_append_new(json_object_get(acc, "tokens"), json_string(text));
    json_array_append_new(json_object_get(acc, "token_logprobs"),
                          json_is_number(lp) ? json_real(json_number_value(lp)) : json_null());
    json_array_append_new(json_object_get(acc, "top_logprobs"), tops ? tops : json_null());
    json_array_append_new(json_object_get(acc, "text_offset"), json_integer(offset));
}

/* ---- engine events (supervisor thread; g->mu is taken here) ---------------- */

static void resume_locked(struct gen_req *g)
{
    if (g->suspended) {
        g->suspended = false;
        MHD_resume_connection(g->conn);
    }
}

static void note_first_token(struct gen_req *g, double now)
{
    if (g->t_first == 0) {
        g->t_first = now;
        metrics_ttft(now - g->t0);
        atomic_fetch_sub(&metrics.waiting, 1);
        atomic_fetch_add(&metrics.running, 1);
        g->counted_running = true;
    }
}

static void on_token(struct gen_choice *ch, json_t *ev)
{
    struct gen_req *g = ch->g;
    const char *text = json_string_value(json_object_get(ev, "text"));
    if (!text) text = "";
    size_t n = strlen(text);
    double now = clock_mono();
    note_first_token(g, now);
    if (ch->t_last > 0) metrics_itl(now - ch->t_last);
    ch->t_last = now;
    ch->tokens_seen++;
    atomic_fetch_add(&metrics.generation_tokens, 1);
    if (g->chat) {
        sbuf r = {0}, c = {0};
        if (reasoning_feed(&ch->rp, text, n, &r, &c)) ch->reasoning_tokens++;
        sbuf_append(&ch->reasoning, r.p ? r.p : "", r.len);
        sbuf_append(&ch->content, c.p ? c.p : "", c.len);
        if (g->logprobs >= 0) {
            json_t *item = chat_lp_item(ev, text);
            json_array_append(ch->logprobs, item);
            json_array_append_new(ch->pending_lp, item);
        }
        if (g->stream) {
            if (r.len && g->include_reasoning)
                sse_chat_delta(g, ch, json_pack("{s:s%}", "reasoning_content", r.p, r.len), NULL);
            if (c.len) sse_chat_delta(g, ch, json_pack("{s:s%}", "content", c.p, c.len), NULL);
        }
        sbuf_free(&r);
        sbuf_free(&c);
    } else {
        long offset = (long)ch->content.len;
        sbuf_append(&ch->content, text, n);
        json_t *lp = NULL;
        if (g->logprobs >= 0) {
            legacy_lp_add(ch->logprobs, text, json_object_get(ev, "logprob"),
                          top_items(ev, false), offset);
            if (g->stream) {
                lp = legacy_lp_new();
                legacy_lp_add(lp, text, json_object_get(ev, "logprob"), top_items(ev, false),
                              offset);
            }
        }
        if (g->stream) sse_text(g, ch, text, n, lp, NULL);
        json_decref(lp);
    }
}

static json_t *trace_record(struct gen_req *g, struct gen_choice *ch, double now)
{
    json_t *rec = json_pack(
        "{s:s, s:s, s:i, s:s, s:s, s:O, s:s%, s:I, s:I, s:I, s:f, s:f}", "id", "", "request_id",
        g->id, "choice_index", ch->index, "endpoint", g->chat ? "chat.completions" : "completions",
        "model", g->model, "params", g->params, "content", ch->content.p ? ch->content.p : "",
        ch->content.len, "prompt_tokens", (json_int_t)ch->prompt_tokens, "completion_tokens",
        (json_int_t)(ch->completion_tokens ? ch->completion_tokens : ch->tokens_seen),
        "reasoning_tokens", (json_int_t)ch->reasoning_tokens, "latency_ms", (now - g->t0) * 1e3,
        "created_at", (double)g->created);
    char id[128];
    if (g->n_choices == 1) snprintf(id, sizeof id, "%s", g->id);
    else snprintf(id, sizeof id, "%s-%d", g->id, ch->index);
    json_object_set_new(rec, "id", json_string(id));
    json_object_set_new(rec, "finish_reason",
                        json_string(ch->finish_reason[0] ? ch->finish_reason : "error"));
    if (g->t_first > 0) json_object_set_new(rec, "ttft_ms", json_real((g->t_first - g->t0) * 1e3));
    if (g->chat) {
        json_object_set_new(rec, "reasoning_content",
                            json_stringn(ch->reasoning.p ? ch->reasoning.p : "", ch->reasoning.len));
        json_object_set(rec, "messages", g->messages);
    } else {
        json_object_set(rec, "prompt", json_array_get(g->prompts, (size_t)ch->prompt_index));
    }
    if (g->key_id) json_object_set_new(rec, "api_key_id", json_integer(g->key_id));
    return rec;
}

/* All choices are over (or failed): finishes the stream, queues traces. */
static void finish_locked(struct gen_req *g)
{
    if (g->finished) return;
    g->finished = true;
    double now = clock_mono();
    g->t_done = now;
    if (g->counted_running) atomic_fetch_sub(&metrics.running, 1);
    else atomic_fetch_sub(&metrics.waiting, 1);
    if (g->stream) {
        if (g->err_status) {
            sse_event(g, http_error_json(http_error_type(g->err_status), NULL,
                                         g->err_code[0] ? g->err_code : NULL, g->err_msg));
        } else if (g->include_usage) {
            json_t *o = chunk_base(g);
            json_object_set_new(o, "choices", json_array());
            json_object_set_new(o, "usage", usage_json(g));
            sse_event(g, o);
        }
        sbuf_puts(&g->out, "data: [DONE]\n\n");
    }
    for (int i = 0; i < g->n_choices; i++) {
        struct gen_choice *ch = &g->choices[i];
        atomic_fetch_add(&metrics.prompt_tokens, ch->prompt_tokens);
        traces_enqueue(g->srv->tr, trace_record(g, ch, now));
    }
    g->traced = true;
}

static void on_event(void *user, json_t *ev)
{
    struct gen_choice *ch = user;
    struct gen_req *g = ch->g;
    const char *type = json_string_value(json_object_get(ev, "type"));
    pthread_mutex_lock(&g->mu);
    if (g->finished || ch->done || !type) goto out;
    if (strcmp(type, "token") == 0) {
        on_token(ch, ev);
    } else if (strcmp(type, "prompt_logprobs") == 0) {
        json_decref(ch->prompt_logprobs);
        ch->prompt_logprobs = json_incref(ev);
    } else if (strcmp(type, "done") == 0) {
        ch->done = true;
        g->n_done++;
        const char *fr = json_string_value(json_object_get(ev, "finish_reason"));
        snprintf(ch->finish_reason, sizeof ch->finish_reason, "%s", fr ? fr : "stop");
        json_t *usage = json_object_get(ev, "usage");
        json_t *src = json_is_object(usage) ? usage : ev;
        json_t *pt = json_object_get(src, "prompt_tokens"), *ct = json_object_get(src, "completion_tokens");
        ch->prompt_tokens = json_is_integer(pt) ? (long)json_integer_value(pt) : 0;
        ch->completion_tokens =
            json_is_integer(ct) ? (long)json_integer_value(ct) : ch->tokens_seen;
        if (g->chat) {
            sbuf r = {0}, c = {0};
            reasoning_finish(&ch->rp, &r, &c);
            sbuf_append(&ch->reasoning, r.p ? r.p : "", r.len);
            if (g->stream && r.len && g->include_reasoning)
                sse_chat_delta(g, ch, json_pack("{s:s%}", "reasoning_content", r.p, r.len), NULL);
            sbuf_free(&r);
            sbuf_free(&c);
            if (g->stream) sse_chat_delta(g, ch, json_object(), ch->finish_reason);
        } else if (g->stream) {
            sse_text(g, ch, "", 0, NULL, ch->finish_reason);
        }
        if (g->n_done == g->n_choices) finish_locked(g);
    } else if (strcmp(type, "error") == 0) {
        const char *msg = json_string_value(json_object_get(ev, "message"));
        const char *code = json_string_value(json_object_get(ev, "code"));
        ch->done = true;
        snprintf(ch->finish_reason, sizeof ch->finish_reason, "error");
        /* The supervisor marks a dead engine engine_unavailable (503); the
         * engine's own errors on a generate reject the request (400). */
        bool unavailable = code && strcmp(code, "engine_unavailable") == 0;
        bool invalid = !code ? msg && strncmp(msg, "generate:", 9) == 0
                             : strcmp(code, "invalid_request") == 0 ||
                                   strcmp(code, "context_length_exceeded") == 0;
        g->err_status = unavailable ? 503 : invalid ? 400 : 500;
        snprintf(g->err_msg, sizeof g->err_msg, "%s", msg ? msg : "the engine failed");
        snprintf(g->err_code, sizeof g->err_code, "%s",
                 code ? code : invalid ? "invalid_request" : "engine_error");
        finish_locked(g);
    }
    if (g->stream) g->last_write = clock_mono();
    if (g->stream || g->finished) resume_locked(g);
out:
    pthread_mutex_unlock(&g->mu);
}

/* ---- the SSE body ---------------------------------------------------------- */

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct gen_req *g = cls;
    pthread_mutex_lock(&g->mu);
    if (g->out.len) {
        size_t n = g->out.len < max ? g->out.len : max;
        memcpy(buf, g->out.p, n);
        sbuf_consume(&g->out, n);
        pthread_mutex_unlock(&g->mu);
        return (ssize_t)n;
    }
    if (g->finished) {
        pthread_mutex_unlock(&g->mu);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    g->suspended = true;
    MHD_suspend_connection(g->conn);
    pthread_mutex_unlock(&g->mu);
    return 0;
}

static void *heartbeat(void *arg)
{
    pthread_mutex_lock(&hb_mu);
    while (!hb_stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        double step = hb_interval / 4 < 1 ? hb_interval / 4 : 1;
        long long ns = until.tv_nsec + (long long)(step * 1e9);
        until.tv_sec += (time_t)(ns / 1000000000LL);
        until.tv_nsec = (long)(ns % 1000000000LL);
        pthread_cond_timedwait(&hb_cv, &hb_mu, &until);
        double now = clock_mono();
        for (struct gen_req *g = hb_head; g; g = g->hb_next) {
            pthread_mutex_lock(&g->mu);
            if (!g->finished && now - g->last_write >= hb_interval) {
                sbuf_puts(&g->out, ": keep-alive\n\n");
                g->last_write = now;
                resume_locked(g);
            }
            pthread_mutex_unlock(&g->mu);
        }
    }
    pthread_mutex_unlock(&hb_mu);
    return NULL;
}

int completions_start(struct server *srv)
{
    hb_interval = srv->cfg.heartbeat_s > 0 ? srv->cfg.heartbeat_s : 15;
    hb_stop = false;
    if (pthread_create(&hb_thread, NULL, heartbeat, NULL)) return -1;
    hb_running = true;
    return 0;
}

void completions_stop(void)
{
    if (!hb_running) return;
    pthread_mutex_lock(&hb_mu);
    hb_stop = true;
    pthread_cond_broadcast(&hb_cv);
    pthread_mutex_unlock(&hb_mu);
    pthread_join(hb_thread, NULL);
    hb_running = false;
}

/* ---- request lifecycle ------------------------------------------------------ */

static void gen_free(struct gen_req *g)
{
    for (int i = 0; i < g->n_choices; i++) {
        struct gen_choice *ch = &g->choices[i];
        sbuf_free(&ch->reasoning);
        sbuf_free(&ch->content);
        json_decref(ch->logprobs);
        json_decref(ch->pending_lp);
        json_decref(ch->prompt_logprobs);
    }
    free(g->choices);
    sbuf_free(&g->out);
    json_decref(g->params);
    json_decref(g->prompts);
    json_decref(g->messages);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

void completions_release(struct http_req *hr, bool aborted)
{
    struct gen_req *g = hr->gen;
    if (!g) return;
    hr->gen = NULL;
    for (int i = 0; i < g->n_choices; i++)
        if (g->choices[i].engine_id[0]) engine_cancel(g->srv->eng, g->choices[i].engine_id);
    if (g->stream) {
        pthread_mutex_lock(&hb_mu);
        if (g->hb_prev) g->hb_prev->hb_next = g->hb_next;
        else if (hb_head == g) hb_head = g->hb_next;
        if (g->hb_next) g->hb_next->hb_prev = g->hb_prev;
        pthread_mutex_unlock(&hb_mu);
    }
    pthread_mutex_lock(&g->mu);
    if (g->finished && !aborted && !g->err_status && g->t_submit > 0)
        metrics_overhead((clock_mono() - g->t0) - (g->t_done - g->t_submit));
    if (!g->finished) {
        for (int i = 0; i < g->n_choices; i++)
            if (!g->choices[i].done)
                snprintf(g->choices[i].finish_reason, sizeof g->choices[i].finish_reason,
                         "%s", aborted ? "cancelled" : "error");
        g->stream = false; /* nobody reads the stream any more */
        finish_locked(g);
    }
    pthread_mutex_unlock(&g->mu);
    gen_free(g);
}

static json_t *final_response(struct gen_req *g)
{
    json_t *choices = json_array();
    for (int i = 0; i < g->n_choices; i++) {
        struct gen_choice *ch = &g->choices[i];
        json_t *c;
        if (g->chat) {
            json_t *msg = json_pack("{s:s}", "role", "assistant");
            json_object_set_new(msg, "content", ch->content.len
                                    ? json_stringn(ch->content.p, ch->content.len) : json_null());
            if (g->include_reasoning)
                json_object_set_new(msg, "reasoning_content",
                                    json_stringn(ch->reasoning.p ? ch->reasoning.p : "",
                                                 ch->reasoning.len));
            c = json_pack("{s:i, s:o, s:n, s:s}", "index", ch->index, "message", msg, "logprobs",
                          "finish_reason", ch->finish_reason);
            if (g->logprobs >= 0)
                json_object_set_new(c, "logprobs", json_pack("{s:O}", "content", ch->logprobs));
        } else {
            sbuf text = {0};
            sbuf_append(&text, "", 0);
            json_t *lp = NULL;
            if (g->logprobs >= 0) lp = legacy_lp_new();
            if (g->echo) {
                json_t *p = json_array_get(g->prompts, (size_t)ch->prompt_index);
                if (json_is_string(p)) sbuf_append(&text, json_string_value(p), json_string_length(p));
                size_t k;
                json_t *t;
                long off = 0;
                json_t *ptoks = json_object_get(ch->prompt_logprobs, "tokens");
                json_t *plps = json_object_get(ch->prompt_logprobs, "logprobs");
                json_t *ptops = json_object_get(ch->prompt_logprobs, "top_logprobs");
                json_t *ptexts = json_object_get(ch->prompt_logprobs, "texts");
                if (lp) json_array_foreach(ptoks, k, t) {
                    char idbuf[48];
                    const char *tt = json_string_value(json_array_get(ptexts, k));
                    if (!tt) {
                        snprintf(idbuf, sizeof idbuf, "token_id:%lld", (long long)json_integer_value(t));
                        tt = idbuf;
                    }
                    json_t *tops = json_array_get(ptops, k);
                    json_t *holder = json_pack("{s:O?}", "top_logprobs", tops);
                    legacy_lp_add(lp, tt, json_array_get(plps, k),
                                  json_is_array(tops) ? top_items(holder, false) : NULL, off);
                    json_decref(holder);
                    off += json_is_array(ptexts) ? (long)strlen(tt) : 0;
                }
            }
            long base = (long)text.len;
            sbuf_append(&text, ch->content.p ? ch->content.p : "", ch->content.len);
            if (lp) {
                size_t k, nt = json_array_size(json_object_get(ch->logprobs, "tokens"));
                for (k = 0; k < nt; k++) {
                    const char *keys[] = {"tokens", "token_logprobs", "top_logprobs"};
                    for (int j = 0; j < 3; j++)
                        json_array_append(json_object_get(lp, keys[j]),
                                          json_array_get(json_object_get(ch->logprobs, keys[j]), k));
                    json_t *off = json_array_get(json_object_get(ch->logprobs, "text_offset"), k);
                    json_array_append_new(json_object_get(lp, "text_offset"),
                                          json_integer(base + json_integer_value(off)));
                }
            }
            c = json_pack("{s:i, s:s%, s:o?, s:s}", "index", ch->index, "text", text.p, text.len,
                          "logprobs", lp, "finish_reason", ch->finish_reason);
            if (!lp) json_object_set_new(c, "logprobs", json_null());
            sbuf_free(&text);
        }
        json_array_append_new(choices, c);
    }
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:o, s:o}", "id", g->id, "object",
                          g->chat ? "chat.completion" : "text_completion", "created",
                          (json_int_t)g->created, "model", g->model, "choices", choices, "usage",
                          usage_json(g));
    if (g->chat) json_object_set_new(o, "system_fingerprint", json_null());
    return o;
}

static enum MHD_Result respond_finished(struct MHD_Connection *c, struct http_req *hr)
{
    struct gen_req *g = hr->gen;
    pthread_mutex_lock(&g->mu);
    int status = g->err_status;
    char msg[512], code[64];
    snprintf(msg, sizeof msg, "%s", g->err_msg);
    snprintf(code, sizeof code, "%s", g->err_code);
    json_t *body = status ? NULL : final_response(g);
    pthread_mutex_unlock(&g->mu);
    if (status)
        return http_reply_error(c, hr, status, http_error_type(status), NULL, code, "%s", msg);
    return http_reply_json(c, hr, 200, body);
}

/* Builds the engine "generate" message shared by every choice; fills g's
 * options. Returns a new reference or NULL with v filled. */
static json_t *parse_request(json_t *body, struct gen_req *g, const struct models_info *m,
                             long long *n_out, struct verr *v)
{
    json_t *eng = json_pack("{s:s, s:s}", "type", "generate", "model", m->id);
    json_t *params = json_object();
    long long n = 1, max_tokens = -1, top_k = -1, seed = -1, logprobs = -1, top_lp = 0;
    bool lp_flag = false, echo = false, stream = false;
    if (opt_number(body, "temperature", 0, 2, eng, v) ||
        opt_number(body, "top_p", 0, 1, eng, v) || opt_number(body, "min_p", 0, 1, eng, v) ||
        opt_number(body, "presence_penalty", -2, 2, eng, v) ||
        opt_number(body, "frequency_penalty", -2, 2, eng, v) ||
        opt_number(body, "repetition_penalty", 0, 10, eng, v) ||
        opt_int(body, "n", 1, SERVER_MAX_CHOICES, &n, v) < 0 ||
        opt_int(body, "top_k", -1, 1 << 20, &top_k, v) < 0 ||
        opt_int(body, "seed", -(1LL << 62), 1LL << 62, &seed, v) < 0 ||
        opt_bool(body, "stream", &stream, v) < 0 || opt_bool(body, "echo", &echo, v) < 0 ||
        opt_bool(body, "include_reasoning", &g->include_reasoning, v) < 0)
        goto fail;
    json_t *tp = json_object_get(body, "top_p");
    if (json_is_number(tp) && json_number_value(tp) == 0) {
        bad(v, 400, "top_p", "invalid_value", "'top_p' must be in (0, 1]");
        goto fail;
    }
    const char *mt_key = "max_tokens";
    if (g->chat && json_object_get(body, "max_completion_tokens") &&
        !json_is_null(json_object_get(body, "max_completion_tokens")))
        mt_key = "max_completion_tokens";
    int r = opt_int(body, mt_key, g->chat ? 1 : 0, 1LL << 40, &max_tokens, v);
    if (r < 0) goto fail;
    if (max_tokens > m->max_model_len) {
        bad(v, 400, mt_key, "context_length_exceeded",
            "'%s' is %lld, but this model's maximum context length is %ld tokens", mt_key,
            max_tokens, m->max_model_len);
        goto fail;
    }
    if (max_tokens < 0) /* OpenAI's legacy default; chat: up to the context (engine clamps) */
        max_tokens = g->chat ? m->max_model_len : 16;
    if (max_tokens >= 0) json_object_set_new(eng, "max_tokens", json_integer(max_tokens));
    if (top_k >= 1) json_object_set_new(eng, "top_k", json_integer(top_k));
    if (json_is_integer(json_object_get(body, "seed"))) /* the engine takes 0..2^63-1 */
        json_object_set_new(eng, "seed", json_integer(seed < 0 ? -(seed + 1) : seed));
    json_t *stop = json_object_get(body, "stop");
    if (stop && !json_is_null(stop)) {
        json_t *arr = json_is_string(stop) ? json_pack("[O]", stop) : json_incref(stop);
        size_t i;
        json_t *s;
        bool ok = json_is_array(arr) && json_array_size(arr) <= SERVER_MAX_STOP;
        json_array_foreach(arr, i, s) if (!json_is_string(s) || json_string_length(s) == 0) ok = false;
        if (!ok) {
            json_decref(arr);
            bad(v, 400, "stop", "invalid_value", "'stop' must be a non-empty string or an "
                "array of at most %d of them", SERVER_MAX_STOP);
            goto fail;
        }
        json_object_set_new(eng, "stop", arr);
    }
    json_t *so = json_object_get(body, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so) || opt_bool(so, "include_usage", &g->include_usage, v) < 0) {
            if (!v->status) bad(v, 400, "stream_options", "invalid_type",
                                "'stream_options' must be an object");
            goto fail;
        }
        if (!stream) {
            bad(v, 400, "stream_options", "invalid_value",
                "'stream_options' is only allowed when 'stream' is true");
            goto fail;
        }
    }
    if (g->chat) {
        if (opt_bool(body, "logprobs", &lp_flag, v) < 0 ||
            opt_int(body, "top_logprobs", 0, SERVER_MAX_LOGPROBS, &top_lp, v) < 0)
            goto fail;
        if (lp_flag) logprobs = top_lp;
        else if (top_lp > 0) {
            bad(v, 400, "top_logprobs", "invalid_value",
                "'top_logprobs' requires 'logprobs' to be true");
            goto fail;
        }
        if (json_object_get(body, "echo")) echo = false;
    } else {
        if (opt_int(body, "logprobs", 0, SERVER_MAX_LOGPROBS, &logprobs, v) < 0) goto fail;
    }
    if (!g->chat && echo && stream) {
        bad(v, 400, "echo", "invalid_value", "'echo' is not supported with 'stream'");
        goto fail;
    }
    if (!g->chat && max_tokens == 0 && !echo) {
        bad(v, 400, "max_tokens", "invalid_value", "'max_tokens' 0 needs 'echo': true");
        goto fail;
    }
    if (logprobs >= 0) json_object_set_new(eng, "logprobs", json_integer(logprobs));
    if (echo && logprobs >= 0) json_object_set_new(eng, "prompt_logprobs", json_integer(logprobs));
    g->logprobs = (int)logprobs;
    g->echo = echo;
    g->stream = stream;
    /* the trace keeps the request's parameters as sent (minus the prompt) */
    const char *k;
    json_t *val;
    json_object_foreach(body, k, val) if (strcmp(k, "messages") && strcmp(k, "prompt"))
        json_object_set(params, k, val);
    g->params = params;
    *n_out = n;
    return eng;
fail:
    json_decref(eng);
    json_decref(params);
    return NULL;
}

enum MHD_Result completions_handle(struct MHD_Connection *c, struct http_req *hr, bool chat)
{
    struct server *srv = hr->srv;
    if (hr->gen) { /* resumed: a non-streamed request has finished */
        struct gen_req *g = hr->gen;
        pthread_mutex_lock(&g->mu);
        bool done = g->finished;
        if (!done) {
            g->suspended = true;
            MHD_suspend_connection(c);
        }
        pthread_mutex_unlock(&g->mu);
        return done ? respond_finished(c, hr) : MHD_YES;
    }
    json_error_t jerr;
    json_t *body = json_loadb(hr->body.p ? hr->body.p : "", hr->body.len, 0, &jerr);
    if (!body)
        return http_reply_error(c, hr, 400, "invalid_request_error", NULL, "invalid_json",
                                "We could not parse the JSON body of your request: %s "
                                "(line %d, column %d)", jerr.text, jerr.line, jerr.column);
    if (!json_is_object(body)) {
        json_decref(body);
        return http_reply_error(c, hr, 400, "invalid_request_error", NULL, "invalid_json",
                                "the request body must be a JSON object");
    }
    struct verr v = {0};
    enum MHD_Result ret;
    const char *model = json_string_value(json_object_get(body, "model"));
    struct models_info m;
    if (!model) {
        json_decref(body);
        return http_reply_error(c, hr, 400, "invalid_request_error", "model",
                                json_object_get(body, "model") ? "invalid_type"
                                                               : "missing_required_parameter",
                                "you must provide a 'model' parameter (a string)");
    }
    if (models_get(srv->cfg.data_dir, model, &m)) {
        ret = http_reply_error(c, hr, 404, "invalid_request_error", "model", "model_not_found",
                               "The model `%s` does not exist.", model);
        json_decref(body);
        return ret;
    }
    struct gen_req *g = calloc(1, sizeof *g);
    pthread_mutex_init(&g->mu, NULL);
    g->srv = srv;
    g->conn = c;
    g->chat = chat;
    g->include_reasoning = true;
    g->logprobs = -1;
    g->t0 = hr->t0;
    g->created = (long long)clock_wall();
    g->key_id = hr->key.id;
    snprintf(g->model, sizeof g->model, "%s", m.id);
    random_id(g->id, sizeof g->id, chat ? "chatcmpl-" : "cmpl-");
    long long n = 1;
    json_t *eng = parse_request(body, g, &m, &n, &v);
    json_t *inputs = NULL;
    if (eng) {
        if (chat) {
            g->messages = clean_messages(json_object_get(body, "messages"), &v);
            inputs = g->messages ? json_pack("[O]", g->messages) : NULL;
        } else {
            inputs = g->prompts = clean_prompts(json_object_get(body, "prompt"), &v);
            if (inputs) json_incref(inputs);
        }
        if (inputs && (long long)json_array_size(inputs) * n > SERVER_MAX_CHOICES) {
            bad(&v, 400, "n", "invalid_value", "a request may ask for at most %d choices "
                "(prompts x n), this one asks for %lld", SERVER_MAX_CHOICES,
                (long long)json_array_size(inputs) * n);
            json_decref(inputs);
            inputs = NULL;
        }
    }
    json_decref(body);
    if (!eng || !inputs) {
        json_decref(eng);
        gen_free(g);
        return http_reply_error(c, hr, v.status ? v.status : 400, http_error_type(v.status),
                                v.param, v.code, "%s", v.msg);
    }
    int total = (int)(json_array_size(inputs) * (size_t)n);
    if (engine_inflight(srv->eng) + total > srv->cfg.max_inflight) {
        json_decref(eng);
        json_decref(inputs);
        gen_free(g);
        return http_reply_error(c, hr, 429, "rate_limit_error", NULL, "too_many_requests",
                                "the server is at its limit of %d generations in flight; "
                                "retry later", srv->cfg.max_inflight);
    }
    g->n_choices = total;
    g->choices = calloc((size_t)total, sizeof *g->choices);
    for (int i = 0; i < total; i++) {
        struct gen_choice *ch = &g->choices[i];
        ch->g = g;
        ch->index = i;
        ch->prompt_index = (int)(i / n);
        reasoning_init(&ch->rp);
        if (g->logprobs >= 0) {
            ch->logprobs = chat ? json_array() : legacy_lp_new();
            ch->pending_lp = json_array();
        }
    }
    hr->gen = g;
    atomic_fetch_add(&metrics.waiting, 1);
    g->last_write = clock_mono();

    /* Streams send their headers at once; chat streams open with the role. */
    if (g->stream) {
        if (chat)
            for (int i = 0; i < total; i++)
                sse_chat_delta(g, &g->choices[i],
                               json_pack("{s:s, s:s}", "role", "assistant", "content", ""), NULL);
        pthread_mutex_lock(&hb_mu);
        g->hb_next = hb_head;
        if (hb_head) hb_head->hb_prev = g;
        hb_head = g;
        pthread_mutex_unlock(&hb_mu);
    }
    pthread_mutex_lock(&g->mu);
    g->t_submit = clock_mono();
    for (int i = 0; i < total; i++) {
        struct gen_choice *ch = &g->choices[i];
        json_t *msg = json_deep_copy(eng);
        json_t *in = json_array_get(inputs, (size_t)ch->prompt_index);
        if (chat) json_object_set(msg, "messages", in);
        else if (json_is_string(in)) json_object_set(msg, "prompt", in);
        else json_object_set(msg, "prompt_ids", in);
        json_t *seed = json_object_get(msg, "seed");
        if (json_is_integer(seed) && n > 1)
            json_object_set_new(msg, "seed", json_integer(json_integer_value(seed) + i % n));
        snprintf(ch->engine_id, sizeof ch->engine_id, "%s.%d", g->id, i);
        char err[256];
        /* engine callbacks take g->mu: release it around the submit */
        pthread_mutex_unlock(&g->mu);
        int rc = engine_submit(srv->eng, ch->engine_id, m.id, m.path, msg, on_event, ch, err,
                               sizeof err);
        pthread_mutex_lock(&g->mu);
        if (rc) {
            ch->engine_id[0] = 0;
            ch->done = true;
            snprintf(ch->finish_reason, sizeof ch->finish_reason, "error");
            g->err_status = 503;
            snprintf(g->err_msg, sizeof g->err_msg, "%s", err);
            snprintf(g->err_code, sizeof g->err_code, "engine_unavailable");
            break;
        }
    }
    json_decref(eng);
    json_decref(inputs);
    bool failed_early = g->err_status && !g->finished && g->t_first == 0;
    pthread_mutex_unlock(&g->mu);

    if (failed_early) { /* nothing generated yet: a plain error response */
        for (int i = 0; i < total; i++)
            if (g->choices[i].engine_id[0]) engine_cancel(srv->eng, g->choices[i].engine_id);
        pthread_mutex_lock(&g->mu);
        bool was_stream = g->stream;
        g->stream = false;
        finish_locked(g);
        g->stream = was_stream;
        pthread_mutex_unlock(&g->mu);
        return respond_finished(c, hr);
    }
    if (g->stream) {
        struct MHD_Response *resp =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 32 * 1024, sse_read, g, NULL);
        MHD_add_response_header(resp, "Content-Type", "text/event-stream; charset=utf-8");
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        MHD_add_response_header(resp, "X-Accel-Buffering", "no");
        hr->status = 200;
        ret = MHD_queue_response(c, 200, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    pthread_mutex_lock(&g->mu);
    bool done = g->finished;
    if (!done) {
        g->suspended = true;
        MHD_suspend_connection(c);
    }
    pthread_mutex_unlock(&g->mu);
    if (done) return respond_finished(c, hr);
    return MHD_YES;
}
