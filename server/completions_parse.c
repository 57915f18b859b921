/* server/completions_parse.c — validation of OpenAI completion and chat
 * requests into the engine's "generate" message (api/engine-protocol.md).
 * Every error names the field (`param`) the way OpenAI's API does. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "completions_internal.h"

int cpl_fail(struct verr *v, int status, const char *param, const char *code, const char *fmt, ...)
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
    if (!json_is_number(x)) return cpl_fail(v, 400, k, "invalid_type", "'%s' must be a number", k);
    double d = json_number_value(x);
    if (!(d >= lo && d <= hi))
        return cpl_fail(v, 400, k, "invalid_value", "'%s' must be between %g and %g, got %g", k, lo,
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
        return cpl_fail(v, 400, k, "invalid_type", "'%s' must be an integer", k);
    long long n = json_integer_value(x);
    if (n < lo || n > hi)
        return cpl_fail(v, 400, k, "invalid_value", "'%s' must be between %lld and %lld, got %lld",
                        k, lo, hi, n);
    *out = n;
    return 1;
}

static int opt_bool(json_t *body, const char *k, bool *out, struct verr *v)
{
    json_t *x = json_object_get(body, k);
    if (!x || json_is_null(x)) return 0;
    if (!json_is_boolean(x))
        return cpl_fail(v, 400, k, "invalid_type", "'%s' must be a boolean", k);
    *out = json_is_true(x);
    return 1;
}

/* messages -> [{role, content}] with reasoning_content dropped and content
 * parts joined; returns a new reference or NULL with v filled. */
json_t *cpl_parse_messages(json_t *msgs, struct verr *v)
{
    if (!json_is_array(msgs)) {
        cpl_fail(v, 400, "messages", msgs ? "invalid_type" : "missing_required_parameter",
                 msgs ? "'messages' must be an array" : "you must provide a 'messages' parameter");
        return NULL;
    }
    size_t n = json_array_size(msgs);
    if (n == 0 || n > SERVER_MAX_MESSAGES) {
        cpl_fail(v, 400, "messages", "invalid_value", "'messages' must hold 1 to %d messages",
                 SERVER_MAX_MESSAGES);
        return NULL;
    }
    json_t *out = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(msgs, i);
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!json_is_object(m) || !role) {
            cpl_fail(v, 400, "messages", "invalid_type",
                     "messages[%zu]: must be an object with a "
                     "string 'role'",
                     i);
            goto fail;
        }
        if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant") &&
            strcmp(role, "tool") && strcmp(role, "developer")) {
            cpl_fail(v, 400, "messages", "invalid_value", "messages[%zu].role: unknown role \"%s\"",
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
            json_array_foreach(c, k, part)
            {
                const char *type = json_string_value(json_object_get(part, "type"));
                json_t *t = json_object_get(part, "text");
                if (!type || strcmp(type, "text") || !json_is_string(t)) {
                    sbuf_free(&text);
                    cpl_fail(v, 400, "messages", "invalid_value",
                             "messages[%zu].content[%zu]: only {\"type\":\"text\",\"text\":...} "
                             "parts are supported",
                             i, k);
                    goto fail;
                }
                sbuf_append(&text, json_string_value(t), json_string_length(t));
            }
        } else if (!(json_is_null(c) || !c) || strcmp(role, "assistant") != 0) {
            sbuf_free(&text);
            cpl_fail(v, 400, "messages", "invalid_type",
                     "messages[%zu].content: must be a string or an array of text parts", i);
            goto fail;
        }
        json_t *sm = json_pack("{s:s, s:s%}", "role", role, "content", text.p, text.len);
        /* an assistant's calls go on to the chat template (the engine checks them) */
        json_t *calls = json_object_get(m, "tool_calls");
        if (!strcmp(role, "assistant") && json_is_array(calls) && json_array_size(calls))
            json_object_set(sm, "tool_calls", calls);
        json_array_append_new(out, sm);
        sbuf_free(&text);
    }
    return out;
fail:
    json_decref(out);
    return NULL;
}

/* prompt -> array of prompts (strings or arrays of token ids). */
json_t *cpl_parse_prompts(json_t *p, struct verr *v)
{
    if (!p) {
        cpl_fail(v, 400, "prompt", "missing_required_parameter", "you must provide a 'prompt'");
        return NULL;
    }
    if (json_is_string(p)) return json_pack("[O]", p);
    if (!json_is_array(p) || json_array_size(p) == 0) {
        cpl_fail(v, 400, "prompt", "invalid_type",
                 "'prompt' must be a string, an array of "
                 "strings, or an array of token ids");
        return NULL;
    }
    json_t *first = json_array_get(p, 0);
    if (json_is_integer(first)) { /* one prompt of token ids */
        size_t i;
        json_t *x;
        json_array_foreach(p, i, x) if (!json_is_integer(x) || json_integer_value(x) < 0)
        {
            cpl_fail(v, 400, "prompt", "invalid_type",
                     "prompt[%zu]: token ids must be "
                     "non-negative integers",
                     i);
            return NULL;
        }
        return json_pack("[O]", p);
    }
    size_t i;
    json_t *x;
    json_array_foreach(p, i, x)
    {
        bool ok = json_is_string(x);
        if (json_is_array(x) && json_array_size(x) > 0) {
            ok = true;
            size_t j;
            json_t *y;
            json_array_foreach(x, j, y) if (!json_is_integer(y) || json_integer_value(y) < 0) ok =
                false;
        }
        if (!ok) {
            cpl_fail(v, 400, "prompt", "invalid_type",
                     "prompt[%zu]: must be a string or an array "
                     "of token ids",
                     i);
            return NULL;
        }
    }
    return json_incref(p);
}

/* Builds the engine "generate" message shared by every choice; fills g's
 * options. Returns a new reference or NULL with v filled. */
json_t *cpl_parse_params(json_t *body, struct gen_req *g, const struct models_info *m,
                         long long *n_out, struct verr *v)
{
    json_t *eng = json_pack("{s:s, s:s}", "type", "generate", "model", m->id);
    json_t *params = json_object();
    long long n = 1, max_tokens = -1, top_k = -1, seed = -1, logprobs = -1, top_lp = 0;
    bool lp_flag = false, echo = false, stream = false;
    if (opt_number(body, "temperature", 0, 2, eng, v) || opt_number(body, "top_p", 0, 1, eng, v) ||
        opt_number(body, "min_p", 0, 1, eng, v) ||
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
        cpl_fail(v, 400, "top_p", "invalid_value", "'top_p' must be in (0, 1]");
        goto fail;
    }
    const char *mt_key = "max_tokens";
    if (g->chat && json_object_get(body, "max_completion_tokens") &&
        !json_is_null(json_object_get(body, "max_completion_tokens")))
        mt_key = "max_completion_tokens";
    int r = opt_int(body, mt_key, g->chat ? 1 : 0, 1LL << 40, &max_tokens, v);
    if (r < 0) goto fail;
    if (max_tokens > m->max_model_len) {
        cpl_fail(v, 400, mt_key, "context_length_exceeded",
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
        json_array_foreach(arr, i, s) if (!json_is_string(s) || json_string_length(s) == 0) ok =
            false;
        if (!ok) {
            json_decref(arr);
            cpl_fail(v, 400, "stop", "invalid_value",
                     "'stop' must be a non-empty string or an "
                     "array of at most %d of them",
                     SERVER_MAX_STOP);
            goto fail;
        }
        json_object_set_new(eng, "stop", arr);
    }
    json_t *so = json_object_get(body, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so) || opt_bool(so, "include_usage", &g->include_usage, v) < 0) {
            if (!v->status)
                cpl_fail(v, 400, "stream_options", "invalid_type",
                         "'stream_options' must be an object");
            goto fail;
        }
        if (!stream) {
            cpl_fail(v, 400, "stream_options", "invalid_value",
                     "'stream_options' is only allowed when 'stream' is true");
            goto fail;
        }
    }
    json_t *lb = json_object_get(body, "logit_bias");
    if (lb && !json_is_null(lb)) {
        bool ok = json_is_object(lb) && json_object_size(lb) <= SERVER_MAX_BIAS;
        const char *key;
        json_t *x;
        json_object_foreach(lb, key, x) {
            char *end;
            errno = 0;
            long long id = strtoll(key, &end, 10);
            if (!*key || *end || errno || id < 0 || !json_is_number(x) ||
                !(json_number_value(x) >= -100 && json_number_value(x) <= 100))
                ok = false;
        }
        if (!ok) {
            cpl_fail(v, 400, "logit_bias", "invalid_value",
                     "'logit_bias' must map token ids to numbers between -100 and 100 "
                     "(at most %d of them)", SERVER_MAX_BIAS);
            goto fail;
        }
        if (json_object_size(lb)) json_object_set(eng, "logit_bias", lb);
    }
    if (g->chat) {
        /* JSON mode is the engine's json_object; a schema is refused rather
         * than ignored (a client must not get free text as if it obeyed) */
        json_t *rf = json_object_get(body, "response_format");
        const char *rft = json_string_value(json_object_get(rf, "type"));
        if (rf && !json_is_null(rf)) {
            if (!rft) {
                cpl_fail(v, 400, "response_format", "invalid_type",
                         "'response_format' must be an object with a 'type'");
                goto fail;
            }
            if (strcmp(rft, "json_object") == 0) {
                g->no_reasoning = true;
                json_object_set_new(eng, "json_object", json_true());
            } else if (strcmp(rft, "json_schema") == 0) {
                /* OpenAI's {"type":"json_schema","json_schema":{"name","schema","strict"}};
                 * the engine compiles the schema and names what it cannot
                 * follow (a 400 through its error) */
                json_t *sch = json_object_get(json_object_get(rf, "json_schema"), "schema");
                if (!json_is_object(sch)) {
                    cpl_fail(v, 400, "response_format", "invalid_value",
                             "'response_format' json_schema needs 'json_schema': {'schema': {...}}");
                    goto fail;
                }
                g->no_reasoning = true;
                json_object_set(eng, "json_schema", sch);
            } else if (strcmp(rft, "text") != 0) {
                cpl_fail(v, 400, "response_format", "unsupported_value",
                         "'response_format' of type '%s' is not supported: 'text', "
                         "'json_object' and 'json_schema' are", rft);
                goto fail;
            }
        }
        /* tools: the engine renders them with the model's chat template
         * and names what is wrong with them; tool_choice required or a
         * function makes the answer one call (JSON, no reasoning block) */
        json_t *tools = json_object_get(body, "tools"), *tc = json_object_get(body, "tool_choice");
        if (json_is_null(tools) || (json_is_array(tools) && !json_array_size(tools))) tools = NULL;
        if (json_is_null(tc)) tc = NULL;
        if (tools && !json_is_array(tools)) {
            cpl_fail(v, 400, "tools", "invalid_type", "'tools' must be an array of tools");
            goto fail;
        }
        const char *tcs = json_string_value(tc);
        if (tc && !json_is_object(tc) && !(tcs && (!strcmp(tcs, "none") || !strcmp(tcs, "auto") ||
                                                  !strcmp(tcs, "required")))) {
            cpl_fail(v, 400, "tool_choice", "invalid_value",
                     "'tool_choice' must be 'none', 'auto', 'required' or "
                     "{\"type\": \"function\", \"function\": {\"name\": ...}}");
            goto fail;
        }
        if (tools) json_object_set(eng, "tools", tools);
        if (tc) json_object_set(eng, "tool_choice", tc);
        g->tools = !tools || (tcs && !strcmp(tcs, "none")) ? 0 : !tc || (tcs && !strcmp(tcs, "auto")) ? 1 : 2;
        if (g->tools == 2) g->no_reasoning = true;
        /* vLLM's chat_template_kwargs; the one our templates take is
         * enable_thinking (Qwen3's): false renders an empty reasoning
         * block, so the answer starts at once and is all content */
        json_t *ctk = json_object_get(body, "chat_template_kwargs");
        if (ctk && !json_is_null(ctk)) {
            const char *key;
            json_t *val;
            if (!json_is_object(ctk)) {
                cpl_fail(v, 400, "chat_template_kwargs", "invalid_type",
                         "'chat_template_kwargs' must be an object");
                goto fail;
            }
            json_object_foreach(ctk, key, val) {
                char *param = v->pbuf;
                snprintf(param, sizeof v->pbuf, "chat_template_kwargs.%s", key);
                if (strcmp(key, "enable_thinking") != 0) {
                    cpl_fail(v, 400, param, "unsupported_value",
                             "'%s' is not supported: the chat templates take 'enable_thinking'",
                             param);
                    goto fail;
                }
                if (!json_is_boolean(val)) {
                    cpl_fail(v, 400, param, "invalid_type", "'%s' must be true or false", param);
                    goto fail;
                }
                if (json_is_false(val)) {
                    g->no_reasoning = true;
                    json_object_set_new(eng, "enable_thinking", json_false());
                }
            }
        }
        if (opt_bool(body, "logprobs", &lp_flag, v) < 0 ||
            opt_int(body, "top_logprobs", 0, SERVER_MAX_LOGPROBS, &top_lp, v) < 0)
            goto fail;
        if (lp_flag)
            logprobs = top_lp;
        else if (top_lp > 0) {
            cpl_fail(v, 400, "top_logprobs", "invalid_value",
                     "'top_logprobs' requires 'logprobs' to be true");
            goto fail;
        }
        if (json_object_get(body, "echo")) echo = false;
    } else {
        if (opt_int(body, "logprobs", 0, SERVER_MAX_LOGPROBS, &logprobs, v) < 0) goto fail;
    }
    if (!g->chat && echo && stream) {
        cpl_fail(v, 400, "echo", "invalid_value", "'echo' is not supported with 'stream'");
        goto fail;
    }
    if (!g->chat && max_tokens == 0 && !echo) {
        cpl_fail(v, 400, "max_tokens", "invalid_value", "'max_tokens' 0 needs 'echo': true");
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
