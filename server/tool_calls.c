/* server/tool_calls.c — <tool_call> blocks to OpenAI tool_calls (see
 * tool_calls.h). */
#include "tool_calls.h"

#include <stdlib.h>
#include <string.h>

static const char open_tag[] = "<tool_call>", close_tag[] = "</tool_call>";

void tool_parser_init(struct tool_parser *p, bool whole)
{
    memset(p, 0, sizeof *p);
    p->whole = whole;
    p->calls = json_array();
}

void tool_parser_free(struct tool_parser *p)
{
    sbuf_free(&p->held);
    json_decref(p->calls);
    p->calls = NULL;
}

/* The call in text (n bytes, spaces around allowed): {"name": a string,
 * "arguments": an object} as an OpenAI tool call (new), or NULL. */
static json_t *parse_call(const char *text, size_t n)
{
    json_t *j = json_loadb(text, n, JSON_REJECT_DUPLICATES, NULL);
    json_t *name = json_object_get(j, "name"), *args = json_object_get(j, "arguments");
    json_t *call = NULL;
    if (json_is_string(name) && json_string_length(name) && json_is_object(args)) {
        char *a = json_dumps(args, JSON_COMPACT);
        char id[40];
        random_id(id, sizeof id, "call_");
        if (a)
            call = json_pack("{s:s, s:s, s:{s:O, s:s}}", "id", id, "type", "function", "function",
                             "name", name, "arguments", a);
        free(a);
    }
    json_decref(j);
    return call;
}

/* call (stolen) onto p->calls, and onto fresh as a stream delta's item
 * (with its "index"). */
static void add_call(struct tool_parser *p, json_t *call, json_t *fresh)
{
    if (fresh) {
        json_t *d = json_deep_copy(call);
        json_object_set_new(d, "index", json_integer((json_int_t)json_array_size(p->calls)));
        json_array_append_new(fresh, d);
    }
    json_array_append_new(p->calls, call);
}

void tool_parser_feed(struct tool_parser *p, const char *text, size_t n, sbuf *c, json_t *fresh)
{
    sbuf_append(&p->held, text, n);
    if (p->whole) return;
    for (;;) {
        const char *s = p->held.p ? p->held.p : "";
        const size_t len = p->held.len;
        if (!p->in_call) {
            const char *at = memmem(s, len, open_tag, sizeof open_tag - 1);
            if (!at) {
                /* release all but what may begin the tag */
                const size_t keep = tag_partial_tail(s, len, open_tag);
                sbuf_append(c, s, len - keep);
                sbuf_consume(&p->held, len - keep);
                return;
            }
            sbuf_append(c, s, (size_t)(at - s));
            sbuf_consume(&p->held, (size_t)(at - s));
            p->in_call = true;
            continue;
        }
        const char *end = memmem(s, len, close_tag, sizeof close_tag - 1);
        if (!end) return;
        const size_t body = sizeof open_tag - 1, whole = (size_t)(end - s) + sizeof close_tag - 1;
        json_t *call = parse_call(s + body, (size_t)(end - s) - body);
        if (call) add_call(p, call, fresh);
        else sbuf_append(c, s, whole);   /* not a call: text as written */
        sbuf_consume(&p->held, whole);
        p->in_call = false;
    }
}

void tool_parser_finish(struct tool_parser *p, sbuf *c, json_t *fresh)
{
    json_t *call = p->whole && p->held.len ? parse_call(p->held.p, p->held.len) : NULL;
    if (call) add_call(p, call, fresh);
    else if (p->held.len) sbuf_append(c, p->held.p, p->held.len);
    sbuf_consume(&p->held, p->held.len);
    p->in_call = false;
}
