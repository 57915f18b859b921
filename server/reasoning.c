/* server/reasoning.c — the <think>...</think> splitter (see reasoning.h). */
#include "reasoning.h"

#include <string.h>

static const char open_tag[] = "<think>";
static const char close_tag[] = "</think>";

void reasoning_init(struct reasoning_parser *p) { memset(p, 0, sizeof *p); }

void reasoning_init_content(struct reasoning_parser *p)
{
    reasoning_init(p);
    p->state = REASONING_CONTENT;
}

static void hold(struct reasoning_parser *p, const char *s, size_t n)
{
    memcpy(p->pend, s, n);
    p->npend = n;
}

bool reasoning_feed(struct reasoning_parser *p, const char *text, size_t n, sbuf *r, sbuf *c)
{
    bool reasoning = p->state != REASONING_CONTENT;
    if (p->state == REASONING_CONTENT) {
        sbuf_append(c, text, n);
        return false;
    }
    sbuf work = {0};
    sbuf_append(&work, p->pend, p->npend);
    sbuf_append(&work, text, n);
    p->npend = 0;
    const char *s = work.p;
    size_t len = work.len;
    if (p->state == REASONING_START) {
        size_t tl = sizeof open_tag - 1;
        if (len < tl && memcmp(s, open_tag, len) == 0) {
            hold(p, s, len);
            sbuf_free(&work);
            return reasoning;
        }
        if (len >= tl && memcmp(s, open_tag, tl) == 0) {
            s += tl;
            len -= tl;
        }
        p->state = REASONING_THINK;
    }
    /* REASONING_THINK */
    const char *end = memmem(s, len, close_tag, sizeof close_tag - 1);
    if (end) {
        sbuf_append(r, s, (size_t)(end - s));
        const char *rest = end + sizeof close_tag - 1;
        sbuf_append(c, rest, (size_t)(s + len - rest));
        p->state = REASONING_CONTENT;
    } else {
        const size_t keep = tag_partial_tail(s, len, close_tag);
        sbuf_append(r, s, len - keep);
        hold(p, s + len - keep, keep);
    }
    sbuf_free(&work);
    return reasoning;
}

void reasoning_finish(struct reasoning_parser *p, sbuf *r, sbuf *c)
{
    if (p->npend) sbuf_append(r, p->pend, p->npend);
    p->npend = 0;
    if (p->state == REASONING_START) p->state = REASONING_THINK;
}
