/* engine/strbuf.h — a growable, always NUL-terminated byte buffer for
 * building strings (pre-tokenizer patterns, rendered chat templates). An
 * allocation failure sets oom and turns later appends into no-ops, so a
 * builder checks once at the end. The caller frees p. */
#ifndef AHA_STRBUF_H
#define AHA_STRBUF_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct strbuf {
    char *p;
    size_t n, cap;
    bool oom;
};

static inline void strbuf_put(struct strbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static inline void strbuf_puts(struct strbuf *b, const char *s)
{
    strbuf_put(b, s, strlen(s));
}

#endif
