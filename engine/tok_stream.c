/* engine/tok_stream.c — incremental decoding for streaming generation:
 * emits whole UTF-8 characters only, holding back the bytes of a character
 * split across tokens, so that what it emits over a sequence is exactly
 * tok_decode of the whole sequence (invalid bytes become U+FFFD as there). */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

struct tok_stream {
    const struct tokenizer *tok;
    char hold[4];       /* an incomplete but so far valid UTF-8 prefix */
    size_t nhold;
    bool started;       /* a token was emitted (for space-joining decoders) */
    char *out;          /* what push/finish return */
    size_t cap;
    char *work;         /* held bytes + the new token's bytes */
    size_t wcap;
};

struct tok_stream *tok_stream_new(const struct tokenizer *tok)
{
    struct tok_stream *s = calloc(1, sizeof *s);
    if (s) s->tok = tok;
    return s;
}

void tok_stream_free(struct tok_stream *s)
{
    if (!s) return;
    free(s->out);
    free(s->work);
    free(s);
}

static int reserve(struct tok_stream *s, size_t n)
{
    if (n <= s->cap) return 0;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < n) cap *= 2;
    char *o = realloc(s->out, cap);
    if (!o) return -1;
    s->out = o;
    s->cap = cap;
    return 0;
}

/* True when s[0..n) is an incomplete character that more bytes could
 * still complete. */
static bool valid_prefix(const unsigned char *s, size_t n)
{
    size_t need = s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : 2;
    return n > 0 && n < need && s[0] >= 0xC2 && s[0] <= 0xF4 &&
           tok_utf8_invalid_len(s, n) == n;
}

const char *tok_stream_push(struct tok_stream *s, int32_t id, size_t *len)
{
    size_t nb = 0;
    const char *b = NULL;
    const struct tokenizer *tok = s->tok;
    if (id >= 0 && id < tok->n_vocab && tok->id_bytes[id]) {
        b = tok->id_bytes[id];
        nb = tok->id_nbytes[id];
    }
    bool space = b && !tok->decoder_byte_level && s->started;
    if (b) s->started = true;
    size_t n = s->nhold + space + nb;
    /* work = hold + (space) + bytes, converted into out */
    if (n + 1 > s->wcap) {
        char *w = realloc(s->work, n + 64);
        if (!w) return NULL;
        s->work = w;
        s->wcap = n + 64;
    }
    char *work = s->work;
    if (reserve(s, 3 * n + 1)) return NULL;
    memcpy(work, s->hold, s->nhold);
    if (space) work[s->nhold] = ' ';
    if (nb) memcpy(work + s->nhold + space, b, nb);
    /* Keep back a trailing incomplete character: at most 3 bytes. */
    size_t keep = 0;
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        const unsigned char *t = (const unsigned char *)work + n - k;
        if (*t >= 0xC0) {
            if (valid_prefix(t, k)) keep = k;
            break;
        }
        if (*t < 0x80) break;
    }
    size_t m = tok_utf8_lossy(work, n - keep, s->out);
    memcpy(s->hold, work + n - keep, keep);
    s->nhold = keep;
    s->out[m] = 0;
    *len = m;
    return s->out;
}

const char *tok_stream_finish(struct tok_stream *s, size_t *len)
{
    if (reserve(s, 3 * 4 + 1)) return NULL;
    size_t m = tok_utf8_lossy(s->hold, s->nhold, s->out);
    s->out[m] = 0;
    s->nhold = 0;
    s->started = false;
    *len = m;
    return s->out;
}
