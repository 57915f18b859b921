/* server/completions.c — POST /v1/completions and /v1/chat/completions:
 * the life of one request. Sends one engine "generate" per prompt (with n
 * samples), routes the engine's events to its choices (splitting <think>
 * reasoning for chat), streams or answers, heartbeats idle streams,
 * cancels on disconnect and queues one trace per choice. Parsing lives in
 * completions_parse.c, response shapes in completions_format.c;
 * tokenizing and chat templates are the engine's job. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "completions_internal.h"

static pthread_mutex_t hb_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t admit_mu = PTHREAD_MUTEX_INITIALIZER;  /* see the in-flight limit */
static pthread_cond_t hb_cv = PTHREAD_COND_INITIALIZER;
static struct gen_req *hb_head;
static pthread_t hb_thread;
static bool hb_running, hb_stop;
static double hb_interval = 15;
static double engine_timeout = 300;

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
        json_t *fresh = NULL;
        if (g->tools) {
            /* the calls come out of the content (the trace keeps it whole) */
            sbuf shown = {0};
            fresh = json_array();
            tool_parser_feed(&ch->tp, c.p ? c.p : "", c.len, &shown, fresh);
            sbuf_append(&ch->shown, shown.p ? shown.p : "", shown.len);
            sbuf_free(&c);
            c = shown;
        }
        if (g->logprobs >= 0) {
            json_t *item = cpl_chat_logprob(ev, text);
            json_array_append(ch->logprobs, item);
            json_array_append_new(ch->pending_lp, item);
        }
        if (g->stream) {
            if (r.len && g->include_reasoning)
                cpl_sse_chat_delta(g, ch, json_pack("{s:s%}", "reasoning_content", r.p, r.len),
                                   NULL);
            if (c.len) cpl_sse_chat_delta(g, ch, json_pack("{s:s%}", "content", c.p, c.len), NULL);
            if (json_array_size(fresh))
                cpl_sse_chat_delta(g, ch, json_pack("{s:O}", "tool_calls", fresh), NULL);
        }
        json_decref(fresh);
        sbuf_free(&r);
        sbuf_free(&c);
    } else {
        long offset = (long)ch->content.len;
        sbuf_append(&ch->content, text, n);
        json_t *lp = NULL;
        if (g->logprobs >= 0) {
            cpl_legacy_logprobs_add(ch->logprobs, text, json_object_get(ev, "logprob"),
                                    cpl_top_logprobs(ev, false), offset);
            if (g->stream) {
                lp = cpl_legacy_logprobs_new();
                cpl_legacy_logprobs_add(lp, text, json_object_get(ev, "logprob"),
                                        cpl_top_logprobs(ev, false), offset);
            }
        }
        /* the engine sends "" while text may start a stop string: no chunk */
        if (g->stream && (n || lp)) cpl_sse_text(g, ch, text, n, lp, NULL);
        json_decref(lp);
    }
}

/* All choices are over (or failed): finishes the stream, queues traces. */
static void finish_locked(struct gen_req *g)
{
    if (g->finished) return;
    g->finished = true;
    double now = clock_mono();
    g->t_done = now;
    if (g->counted_running)
        atomic_fetch_sub(&metrics.running, 1);
    else
        atomic_fetch_sub(&metrics.waiting, 1);
    if (g->stream) {
        if (g->err_status) {
            cpl_sse_event(g, http_error_json(http_error_type(g->err_status), NULL,
                                             g->err_code[0] ? g->err_code : NULL, g->err_msg));
        } else if (g->include_usage) {
            json_t *o = cpl_chunk_new(g);
            json_object_set_new(o, "choices", json_array());
            json_object_set_new(o, "usage", cpl_usage_json(g));
            cpl_sse_event(g, o);
        }
        sbuf_puts(&g->out, "data: [DONE]\n\n");
    }
    for (int i = 0; i < g->n_choices; i++) {
        struct gen_choice *ch = &g->choices[i];
        if (i == 0 || ch->prompt_index != g->choices[i - 1].prompt_index) {
            atomic_fetch_add(&metrics.prompt_tokens, ch->prompt_tokens);
            atomic_fetch_add(&metrics.prompt_tokens_cached, ch->cached_tokens);
        }
        traces_enqueue(g->srv->tr, cpl_trace_json(g, ch, now));
    }
    g->traced = true;
}

/* Events of one engine request: the n choices of one prompt, told apart by
 * the event's "index"; `user` is the first of them. */
static void on_event(void *user, json_t *ev)
{
    struct gen_choice *first = user, *ch = first;
    struct gen_req *g = first->g;
    const char *type = json_string_value(json_object_get(ev, "type"));
    json_t *ix = json_object_get(ev, "index");
    if (json_is_integer(ix) && json_integer_value(ix) > 0 &&
        json_integer_value(ix) < g->n_per_prompt)
        ch = first + json_integer_value(ix);
    pthread_mutex_lock(&g->mu);
    if (g->finished || ch->done || !type) goto out;
    g->ready_to_start = true;
    g->last_event = clock_mono();
    if (strcmp(type, "token") == 0) {
        on_token(ch, ev);
    } else if (strcmp(type, "prompt_logprobs") == 0) {
        for (int i = 0; i < g->n_per_prompt; i++) {
            json_decref(first[i].prompt_logprobs);
            first[i].prompt_logprobs = json_incref(ev);
        }
    } else if (strcmp(type, "done") == 0) {
        ch->done = true;
        g->n_done++;
        const char *fr = json_string_value(json_object_get(ev, "finish_reason"));
        snprintf(ch->finish_reason, sizeof ch->finish_reason, "%s", fr ? fr : "stop");
        json_t *usage = json_object_get(ev, "usage");
        json_t *src = json_is_object(usage) ? usage : ev;
        json_t *pt = json_object_get(src, "prompt_tokens"),
               *ct = json_object_get(src, "completion_tokens");
        ch->prompt_tokens = json_is_integer(pt) ? (long)json_integer_value(pt) : 0;
        json_t *cached = json_object_get(json_object_get(src, "prompt_tokens_details"), "cached_tokens");
        ch->cached_tokens = json_is_integer(cached) ? (long)json_integer_value(cached) : 0;
        ch->completion_tokens =
            json_is_integer(ct) ? (long)json_integer_value(ct) : ch->tokens_seen;
        if (g->chat) {
            sbuf r = {0}, c = {0};
            reasoning_finish(&ch->rp, &r, &c);
            sbuf_append(&ch->reasoning, r.p ? r.p : "", r.len);
            if (g->stream && r.len && g->include_reasoning)
                cpl_sse_chat_delta(g, ch, json_pack("{s:s%}", "reasoning_content", r.p, r.len),
                                   NULL);
            sbuf_free(&r);
            sbuf_free(&c);
            if (g->tools) {
                json_t *fresh = json_array();
                tool_parser_finish(&ch->tp, &c, fresh);
                sbuf_append(&ch->shown, c.p ? c.p : "", c.len);
                if (g->stream && c.len)
                    cpl_sse_chat_delta(g, ch, json_pack("{s:s%}", "content", c.p, c.len), NULL);
                if (g->stream && json_array_size(fresh))
                    cpl_sse_chat_delta(g, ch, json_pack("{s:O}", "tool_calls", fresh), NULL);
                json_decref(fresh);
                sbuf_free(&c);
                if (json_array_size(ch->tp.calls) && !strcmp(ch->finish_reason, "stop"))
                    snprintf(ch->finish_reason, sizeof ch->finish_reason, "tool_calls");
            }
            if (g->stream) cpl_sse_chat_delta(g, ch, json_object(), ch->finish_reason);
        } else if (g->stream) {
            cpl_sse_text(g, ch, "", 0, NULL, ch->finish_reason);
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
                 code      ? code
                 : invalid ? "invalid_request"
                           : "engine_error");
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

/* A request whose engine has been silent for engine_timeout seconds (a
 * lost line, a wedged engine): cancel it and fail it with a clean error.
 * Called with hb_mu held and g->mu not held (engine_cancel takes the
 * engine's lock, which is taken before g->mu). */
static void fail_stuck(struct gen_req *g, double now)
{
    for (int i = 0; i < g->n_choices; i++)
        if (g->choices[i].engine_id[0]) engine_cancel(g->srv->eng, g->choices[i].engine_id);
    pthread_mutex_lock(&g->mu);
    if (!g->finished) {
        log_msg("request %s: no engine event for %.0f s; failing it", g->id, now - g->last_event);
        g->err_status = 503;
        snprintf(g->err_msg, sizeof g->err_msg, "the engine did not answer for %.0f s",
                 now - g->last_event);
        snprintf(g->err_code, sizeof g->err_code, "engine_timeout");
        g->ready_to_start = true;
        finish_locked(g);
        resume_locked(g);
    }
    pthread_mutex_unlock(&g->mu);
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
            bool stuck = !g->finished && now - g->last_event >= engine_timeout;
            pthread_mutex_unlock(&g->mu);
            if (stuck) fail_stuck(g, now);
            pthread_mutex_lock(&g->mu);
            if (!g->stream || g->finished) {
                /* nothing to keep alive */
            } else if (!g->started) { /* no event yet: open the stream anyway after a while */
                if (!g->ready_to_start && now - g->t0 >= hb_interval) {
                    g->ready_to_start = true;
                    resume_locked(g);
                }
            } else if (!g->finished && now - g->last_write >= hb_interval) {
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
    engine_timeout = srv->cfg.engine_timeout_s > 0 ? srv->cfg.engine_timeout_s : 300;
    hb_stop = false;
    if (pthread_create(&hb_thread, NULL, heartbeat, NULL)) return -1;
    hb_running = true;
    return 0;
}

int completions_drain(double timeout_s)
{
    double until = clock_mono() + timeout_s;
    for (;;) {
        int live = 0;
        pthread_mutex_lock(&hb_mu);
        for (struct gen_req *g = hb_head; g; g = g->hb_next) live++;
        pthread_mutex_unlock(&hb_mu);
        if (!live || clock_mono() >= until) return live;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
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
        sbuf_free(&ch->shown);
        tool_parser_free(&ch->tp);
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
    {
        pthread_mutex_lock(&hb_mu);
        if (g->hb_prev)
            g->hb_prev->hb_next = g->hb_next;
        else if (hb_head == g)
            hb_head = g->hb_next;
        if (g->hb_next) g->hb_next->hb_prev = g->hb_prev;
        pthread_mutex_unlock(&hb_mu);
    }
    pthread_mutex_lock(&g->mu);
    if (g->finished && !aborted && !g->err_status && g->t_submit > 0)
        metrics_overhead((clock_mono() - g->t0) - (g->t_done - g->t_submit));
    if (!g->finished) {
        for (int i = 0; i < g->n_choices; i++)
            if (!g->choices[i].done)
                snprintf(g->choices[i].finish_reason, sizeof g->choices[i].finish_reason, "%s",
                         aborted ? "cancelled" : "error");
        g->stream = false; /* nobody reads the stream any more */
        finish_locked(g);
    }
    pthread_mutex_unlock(&g->mu);
    gen_free(g);
}

static enum MHD_Result respond_finished(struct MHD_Connection *c, struct http_req *hr)
{
    struct gen_req *g = hr->gen;
    pthread_mutex_lock(&g->mu);
    int status = g->err_status;
    char msg[512], code[64];
    snprintf(msg, sizeof msg, "%s", g->err_msg);
    snprintf(code, sizeof code, "%s", g->err_code);
    json_t *body = status ? NULL : cpl_response_json(g);
    pthread_mutex_unlock(&g->mu);
    if (status)
        return http_reply_error(c, hr, status, http_error_type(status), NULL, code, "%s", msg);
    return http_reply_json(c, hr, 200, body);
}

/* Queues the SSE response: 200 now, chunks as the engine sends them. */
static enum MHD_Result start_stream(struct MHD_Connection *c, struct http_req *hr)
{
    struct gen_req *g = hr->gen;
    pthread_mutex_lock(&g->mu);
    g->started = true;
    g->last_write = clock_mono();
    pthread_mutex_unlock(&g->mu);
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 32 * 1024, sse_read, g, NULL);
    MHD_add_response_header(resp, "Content-Type", "text/event-stream; charset=utf-8");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    hr->status = 200;
    enum MHD_Result ret = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* After the generates are sent, and on every resume: waits (suspended) for
 * the first engine event, so a request the engine rejects gets a plain
 * error status even when streamed (as vLLM validates before streaming);
 * then streams, or waits for the end of a non-streamed request. */
static enum MHD_Result proceed(struct MHD_Connection *c, struct http_req *hr)
{
    struct gen_req *g = hr->gen;
    pthread_mutex_lock(&g->mu);
    bool wait = g->stream ? !g->ready_to_start && !g->finished : !g->finished;
    if (wait) {
        g->suspended = true;
        MHD_suspend_connection(c);
    }
    bool rejected = g->err_status && g->t_first == 0;
    pthread_mutex_unlock(&g->mu);
    if (wait) return MHD_YES;
    if (g->stream && !rejected) return start_stream(c, hr);
    return respond_finished(c, hr);
}

enum MHD_Result completions_handle(struct MHD_Connection *c, struct http_req *hr, bool chat)
{
    struct server *srv = hr->srv;
    if (hr->gen) return proceed(c, hr); /* resumed by an engine event */
    json_error_t jerr;
    json_t *body = json_loadb(hr->body.p ? hr->body.p : "", hr->body.len, 0, &jerr);
    if (!body)
        return http_reply_error(c, hr, 400, "invalid_request_error", NULL, "invalid_json",
                                "We could not parse the JSON body of your request: %s "
                                "(line %d, column %d)",
                                jerr.text, jerr.line, jerr.column);
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
    json_t *eng = cpl_parse_params(body, g, &m, &n, &v);
    json_t *inputs = NULL;
    if (eng) {
        if (chat) {
            g->messages = cpl_parse_messages(json_object_get(body, "messages"), &v);
            inputs = g->messages ? json_pack("[O]", g->messages) : NULL;
        } else {
            inputs = g->prompts = cpl_parse_prompts(json_object_get(body, "prompt"), &v);
            if (inputs) json_incref(inputs);
        }
        if (inputs && (long long)json_array_size(inputs) * n > SERVER_MAX_CHOICES) {
            cpl_fail(&v, 400, "n", "invalid_value",
                     "a request may ask for at most %d choices "
                     "(prompts x n), this one asks for %lld",
                     SERVER_MAX_CHOICES, (long long)json_array_size(inputs) * n);
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
    /* The limit's check and this request's submits are one step: two
     * requests checking before either submitted could together pass it. */
    pthread_mutex_lock(&admit_mu);
    if (engine_inflight(srv->eng) + total > srv->cfg.max_inflight) {
        pthread_mutex_unlock(&admit_mu);
        json_decref(eng);
        json_decref(inputs);
        gen_free(g);
        return http_reply_error(c, hr, 429, "rate_limit_error", NULL, "too_many_requests",
                                "the server is at its limit of %d generations in flight; "
                                "retry later",
                                srv->cfg.max_inflight);
    }
    g->n_choices = total;
    g->n_per_prompt = (int)n;
    g->choices = calloc((size_t)total, sizeof *g->choices);
    for (int i = 0; i < total; i++) {
        struct gen_choice *ch = &g->choices[i];
        ch->g = g;
        ch->index = i;
        ch->prompt_index = (int)(i / n);
        if (g->no_reasoning) reasoning_init_content(&ch->rp);
        else reasoning_init(&ch->rp);
        tool_parser_init(&ch->tp, g->tools == 2);
        if (g->logprobs >= 0) {
            ch->logprobs = chat ? json_array() : cpl_legacy_logprobs_new();
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
                cpl_sse_chat_delta(g, &g->choices[i],
                                   json_pack("{s:s, s:s}", "role", "assistant", "content", ""),
                                   NULL);
    }
    pthread_mutex_lock(&g->mu);
    g->t_submit = g->last_event = clock_mono();
    pthread_mutex_unlock(&g->mu);
    pthread_mutex_lock(&hb_mu); /* heartbeats for streams, timeouts for all */
    g->hb_next = hb_head;
    if (hb_head) hb_head->hb_prev = g;
    hb_head = g;
    pthread_mutex_unlock(&hb_mu);
    pthread_mutex_lock(&g->mu);
    for (int i = 0; i < total; i += (int)n) { /* one engine request per prompt */
        struct gen_choice *ch = &g->choices[i];
        json_t *msg = json_deep_copy(eng);
        json_t *in = json_array_get(inputs, (size_t)ch->prompt_index);
        if (chat)
            json_object_set(msg, "messages", in);
        else if (json_is_string(in))
            json_object_set(msg, "prompt", in);
        else
            json_object_set(msg, "prompt_ids", in);
        if (n > 1) json_object_set_new(msg, "n", json_integer(n));
        snprintf(ch->engine_id, sizeof ch->engine_id, "%s.%d", g->id, ch->prompt_index);
        char err[256];
        /* engine callbacks take g->mu: release it around the submit */
        pthread_mutex_unlock(&g->mu);
        int rc = engine_submit(srv->eng, ch->engine_id, m.id, m.path, msg, (int)n, on_event, ch,
                               err, sizeof err);
        pthread_mutex_lock(&g->mu);
        if (rc) {
            ch->engine_id[0] = 0;
            for (int k = i; k < i + (int)n; k++) {
                g->choices[k].done = true;
                snprintf(g->choices[k].finish_reason, sizeof g->choices[k].finish_reason, "error");
            }
            g->err_status = rc == -2 ? 413 : 503;
            snprintf(g->err_msg, sizeof g->err_msg, "%s", err);
            snprintf(g->err_code, sizeof g->err_code, "%s",
                     rc == -2 ? "request_too_large" : "engine_unavailable");
            break;
        }
    }
    json_decref(eng);
    json_decref(inputs);
    bool failed_early = g->err_status && !g->finished && g->t_first == 0;
    pthread_mutex_unlock(&g->mu);
    pthread_mutex_unlock(&admit_mu);

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
    return proceed(c, hr);
}
