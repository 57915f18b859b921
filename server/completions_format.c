/* server/completions_format.c — OpenAI response shapes: non-streamed
 * bodies, SSE chunks, usage, logprobs (chat and legacy), and the trace row
 * of a choice. Holds no state; callers hold g->mu. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "completions_internal.h"

json_t *cpl_chunk_new(struct gen_req *g)
{
    json_t *o = json_pack("{s:s, s:s, s:I, s:s}", "id", g->id, "object",
                          g->chat ? "chat.completion.chunk" : "text_completion", "created",
                          (json_int_t)g->created, "model", g->model);
    if (g->chat) json_object_set_new(o, "system_fingerprint", json_null());
    if (g->include_usage) json_object_set_new(o, "usage", json_null());
    return o;
}

/* Appends "data: <json>\n\n" (obj stolen). */
void cpl_sse_event(struct gen_req *g, json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (!s) return;
    sbuf_puts(&g->out, "data: ");
    sbuf_puts(&g->out, s);
    sbuf_puts(&g->out, "\n\n");
    free(s);
}

void cpl_sse_chat_delta(struct gen_req *g, struct gen_choice *ch, json_t *delta, const char *finish)
{
    json_t *o = cpl_chunk_new(g);
    json_t *choice = json_pack("{s:i, s:o, s:n, s:n}", "index", ch->index, "delta", delta,
                               "logprobs", "finish_reason");
    if (g->logprobs >= 0 && ch->pending_lp && json_array_size(ch->pending_lp)) {
        json_object_set_new(choice, "logprobs", json_pack("{s:O}", "content", ch->pending_lp));
        json_array_clear(ch->pending_lp);
    }
    if (finish) json_object_set_new(choice, "finish_reason", json_string(finish));
    json_object_set_new(o, "choices", json_pack("[o]", choice));
    cpl_sse_event(g, o);
}

void cpl_sse_text(struct gen_req *g, struct gen_choice *ch, const char *text, size_t n, json_t *lp,
                  const char *finish)
{
    json_t *o = cpl_chunk_new(g);
    json_t *choice = json_pack("{s:i, s:s%, s:O?, s:s?}", "index", ch->index, "text", text, n,
                               "logprobs", lp, "finish_reason", finish);
    json_object_set_new(o, "choices", json_pack("[o]", choice));
    cpl_sse_event(g, o);
}

json_t *cpl_usage_json(struct gen_req *g)
{
    long prompt = 0, cached = 0, completion = 0, reasoning = 0;
    for (int i = 0; i < g->n_choices; i++) {
        struct gen_choice *ch = &g->choices[i];
        if (i == 0 || ch->prompt_index != g->choices[i - 1].prompt_index) {
            prompt += ch->prompt_tokens;
            cached += ch->cached_tokens;
        }
        completion += ch->completion_tokens;
        reasoning += ch->reasoning_tokens;
    }
    json_t *u =
        json_pack("{s:I, s:I, s:I}", "prompt_tokens", (json_int_t)prompt, "completion_tokens",
                  (json_int_t)completion, "total_tokens", (json_int_t)(prompt + completion));
    json_object_set_new(u, "prompt_tokens_details", json_pack("{s:I}", "cached_tokens", (json_int_t)cached));
    if (g->chat)
        json_object_set_new(u, "completion_tokens_details",
                            json_pack("{s:I}", "reasoning_tokens", (json_int_t)reasoning));
    return u;
}

/* The text of a token object: its "text", else vLLM's "token_id:N" form
 * (the engine does not always send the text of alternatives). */
const char *cpl_token_text(json_t *t, char *buf, size_t size)
{
    const char *s = json_string_value(json_object_get(t, "text"));
    if (!s) s = json_string_value(json_object_get(t, "token"));
    if (s) return s;
    snprintf(buf, size, "token_id:%lld",
             (long long)json_integer_value(json_object_get(t, "token_id")));
    return buf;
}

/* Top alternatives of a token event as OpenAI chat items / a legacy map. */
json_t *cpl_top_logprobs(json_t *ev, bool chat)
{
    json_t *tops = json_object_get(ev, "top_logprobs");
    json_t *out = chat ? json_array() : json_object();
    size_t i;
    json_t *t;
    json_array_foreach(tops, i, t)
    {
        char idbuf[48];
        const char *tok = cpl_token_text(t, idbuf, sizeof idbuf);
        double lp = json_number_value(json_object_get(t, "logprob"));
        if (chat)
            json_array_append_new(
                out, json_pack("{s:s, s:f, s:n}", "token", tok, "logprob", lp, "bytes"));
        else
            json_object_set_new(out, tok, json_real(lp));
    }
    return out;
}

json_t *cpl_chat_logprob(json_t *ev, const char *text)
{
    json_t *b = json_array();
    for (const unsigned char *p = (const unsigned char *)text; *p; p++)
        json_array_append_new(b, json_integer(*p));
    json_t *lp = json_object_get(ev, "logprob");
    return json_pack("{s:s, s:f, s:o, s:o}", "token", text, "logprob",
                     json_is_number(lp) ? json_number_value(lp) : 0.0, "bytes", b, "top_logprobs",
                     cpl_top_logprobs(ev, true));
}

json_t *cpl_legacy_logprobs_new(void)
{
    return json_pack("{s:[], s:[], s:[], s:[]}", "tokens", "token_logprobs", "top_logprobs",
                     "text_offset");
}

void cpl_legacy_logprobs_add(json_t *acc, const char *text, json_t *lp, json_t *tops, long offset)
{
    json_array_append_new(json_object_get(acc, "tokens"), json_string(text));
    json_array_append_new(json_object_get(acc, "token_logprobs"),
                          json_is_number(lp) ? json_real(json_number_value(lp)) : json_null());
    json_array_append_new(json_object_get(acc, "top_logprobs"), tops ? tops : json_null());
    json_array_append_new(json_object_get(acc, "text_offset"), json_integer(offset));
}

json_t *cpl_trace_json(struct gen_req *g, struct gen_choice *ch, double now)
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
    if (g->n_choices == 1)
        snprintf(id, sizeof id, "%s", g->id);
    else
        snprintf(id, sizeof id, "%s-%d", g->id, ch->index);
    json_object_set_new(rec, "id", json_string(id));
    json_object_set_new(rec, "finish_reason",
                        json_string(ch->finish_reason[0] ? ch->finish_reason : "error"));
    if (g->t_first > 0) json_object_set_new(rec, "ttft_ms", json_real((g->t_first - g->t0) * 1e3));
    if (g->chat) {
        json_object_set_new(
            rec, "reasoning_content",
            json_stringn(ch->reasoning.p ? ch->reasoning.p : "", ch->reasoning.len));
        json_object_set(rec, "messages", g->messages);
    } else {
        json_object_set(rec, "prompt", json_array_get(g->prompts, (size_t)ch->prompt_index));
    }
    if (g->key_id) json_object_set_new(rec, "api_key_id", json_integer(g->key_id));
    return rec;
}

json_t *cpl_response_json(struct gen_req *g)
{
    json_t *choices = json_array();
    for (int i = 0; i < g->n_choices; i++) {
        struct gen_choice *ch = &g->choices[i];
        json_t *c;
        if (g->chat) {
            json_t *msg = json_pack("{s:s}", "role", "assistant");
            const sbuf *content = g->tools ? &ch->shown : &ch->content;
            json_object_set_new(msg, "content",
                                content->len ? json_stringn(content->p, content->len) : json_null());
            if (json_array_size(ch->tp.calls)) json_object_set(msg, "tool_calls", ch->tp.calls);
            if (g->include_reasoning)
                json_object_set_new(
                    msg, "reasoning_content",
                    json_stringn(ch->reasoning.p ? ch->reasoning.p : "", ch->reasoning.len));
            c = json_pack("{s:i, s:o, s:n, s:s}", "index", ch->index, "message", msg, "logprobs",
                          "finish_reason", ch->finish_reason);
            if (g->logprobs >= 0)
                json_object_set_new(c, "logprobs", json_pack("{s:O}", "content", ch->logprobs));
        } else {
            sbuf text = {0};
            sbuf_append(&text, "", 0);
            json_t *lp = NULL;
            if (g->logprobs >= 0) lp = cpl_legacy_logprobs_new();
            if (g->echo) {
                json_t *p = json_array_get(g->prompts, (size_t)ch->prompt_index);
                if (json_is_string(p))
                    sbuf_append(&text, json_string_value(p), json_string_length(p));
                size_t k;
                json_t *t;
                long off = 0;
                json_t *ptoks = json_object_get(ch->prompt_logprobs, "tokens");
                json_t *plps = json_object_get(ch->prompt_logprobs, "logprobs");
                json_t *ptops = json_object_get(ch->prompt_logprobs, "top_logprobs");
                json_t *ptexts = json_object_get(ch->prompt_logprobs, "texts");
                if (lp) json_array_foreach(ptoks, k, t)
                    {
                        char idbuf[48];
                        const char *tt = json_string_value(json_array_get(ptexts, k));
                        if (!tt) {
                            snprintf(idbuf, sizeof idbuf, "token_id:%lld",
                                     (long long)json_integer_value(t));
                            tt = idbuf;
                        }
                        json_t *tops = json_array_get(ptops, k);
                        json_t *holder = json_pack("{s:O?}", "top_logprobs", tops);
                        cpl_legacy_logprobs_add(
                            lp, tt, json_array_get(plps, k),
                            json_is_array(tops) ? cpl_top_logprobs(holder, false) : NULL, off);
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
                        json_array_append(
                            json_object_get(lp, keys[j]),
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
                          cpl_usage_json(g));
    if (g->chat) json_object_set_new(o, "system_fingerprint", json_null());
    return o;
}
