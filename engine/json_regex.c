/* engine/json_regex.c — "pattern" as a position automaton (json_regex.h).
 *
 * Glushkov's construction, done while parsing: every character or class
 * of the pattern is a position; a fragment is what a sub-expression
 * contributes (the positions it may start and end with, whether it
 * matches the empty string), and concatenation and repetition add the
 * edges "position l may be followed by position f". A counted repetition
 * a{m,n} is its atom parsed again for each copy, so copies have positions
 * of their own. */
#include "json_regex.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"   /* the tokenizer's UTF-8 reader: the same validity rules */

#define JRE_MAX_DEPTH 64        /* nested groups */
#define JRE_MAX_COUNT 1000      /* {n,m} */
#define UNI_MAX 0x10FFFFu

struct frag {
    uint64_t first[JRE_WORDS], last[JRE_WORDS];
    bool nullable;
};

struct cls { struct jre_range *r; int n, cap; };

struct build {
    const unsigned char *s;
    size_t n, i;
    int npos, depth;
    bool failed;
    uint64_t follow[JRE_MAX_POS + 1][JRE_WORDS];
    int32_t cls_end[JRE_MAX_POS + 1];    /* position p's ranges end at all.r + cls_end[p] */
    struct cls all;             /* every position's ranges, in order */
    char *err;
    size_t errlen;
};

/* ---------------------------------------------------------------- sets */

static void set_or(uint64_t *a, const uint64_t *b)
{
    for (int w = 0; w < JRE_WORDS; w++) a[w] |= b[w];
}

static bool set_any(const uint64_t *a)
{
    for (int w = 0; w < JRE_WORDS; w++)
        if (a[w]) return true;
    return false;
}

#define SET_FOREACH(set, q)                                                                   \
    for (int w_ = 0; w_ < JRE_WORDS; w_++)                                                    \
        for (uint64_t m_ = (set)[w_], q; m_ && (q = (uint64_t)(64 * w_ + __builtin_ctzll(m_)), 1); \
             m_ &= m_ - 1)

static int fail(struct build *b, size_t at, const char *msg)
{
    if (!b->failed) snprintf(b->err, b->errlen, "at byte %zu: %s", at, msg);
    b->failed = true;
    return -1;
}

/* ------------------------------------------------------------- classes */

static int cls_add(struct cls *c, uint32_t lo, uint32_t hi)
{
    if (lo > hi) return 0;
    if (c->n == c->cap) {
        const int cap = c->cap ? 2 * c->cap : 16;
        struct jre_range *r = realloc(c->r, (size_t)cap * sizeof *r);
        if (!r) return -1;
        c->r = r;
        c->cap = cap;
    }
    c->r[c->n++] = (struct jre_range){lo, hi};
    return 0;
}

static int by_lo(const void *a, const void *b)
{
    const struct jre_range *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Sorted, merged, and without the surrogates (no JSON string holds one
 * alone); negate: the complement first. */
static int cls_finish(struct cls *c, bool negate)
{
    if (c->n) qsort(c->r, (size_t)c->n, sizeof *c->r, by_lo);
    int k = 0;
    for (int i = 0; i < c->n; i++) {
        if (k && c->r[i].lo <= c->r[k - 1].hi + 1) {
            if (c->r[i].hi > c->r[k - 1].hi) c->r[k - 1].hi = c->r[i].hi;
        } else {
            c->r[k++] = c->r[i];
        }
    }
    c->n = k;
    struct cls out = {0};
    uint32_t next = 0;
    int rc = 0;
    for (int i = 0; i < c->n && !rc; i++) {
        if (negate) {
            if (c->r[i].lo > next) rc = cls_add(&out, next, c->r[i].lo - 1);
            next = c->r[i].hi + 1;
        } else {
            rc = cls_add(&out, c->r[i].lo, c->r[i].hi);
        }
    }
    if (!rc && negate && next <= UNI_MAX) rc = cls_add(&out, next, UNI_MAX);
    /* cut out D800..DFFF */
    c->n = 0;
    for (int i = 0; i < out.n && !rc; i++) {
        const uint32_t lo = out.r[i].lo, hi = out.r[i].hi;
        if (hi < 0xD800 || lo > 0xDFFF) rc = cls_add(c, lo, hi);
        else rc = cls_add(c, lo, lo < 0xD800 ? 0xD7FF : 0) || cls_add(c, hi > 0xDFFF ? 0xE000 : 1,
                                                                        hi > 0xDFFF ? hi : 0);
    }
    free(out.r);
    return rc;
}

static int cls_add_kind(struct cls *c, unsigned char kind)
{
    static const struct jre_range digit[] = {{'0', '9'}};
    static const struct jre_range word[] = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}};
    static const struct jre_range space[] = {
        {0x09, 0x0D}, {0x20, 0x20}, {0xA0, 0xA0}, {0x1680, 0x1680}, {0x2000, 0x200A},
        {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000}, {0xFEFF, 0xFEFF}};
    const struct jre_range *r;
    int n;
    switch (kind | 0x20) {
    case 'd': r = digit, n = 1; break;
    case 'w': r = word, n = 4; break;
    default: r = space, n = (int)(sizeof space / sizeof *space); break;
    }
    if (kind >= 'a') {
        for (int i = 0; i < n; i++)
            if (cls_add(c, r[i].lo, r[i].hi)) return -1;
        return 0;
    }
    uint32_t next = 0;  /* \D \W \S: the complement, in order */
    for (int i = 0; i < n; i++) {
        if (r[i].lo > next && cls_add(c, next, r[i].lo - 1)) return -1;
        next = r[i].hi + 1;
    }
    return cls_add(c, next, UNI_MAX);
}

/* ----------------------------------------------------------- positions */

/* A new position for class c (taken over); its fragment in f. */
static int add_pos(struct build *b, struct cls *c, struct frag *f, size_t at)
{
    memset(f, 0, sizeof *f);
    if (b->npos == JRE_MAX_POS) {
        free(c->r);
        return fail(b, at, "the pattern needs more than 255 characters and classes "
                           "(each copy of a repetition counts)");
    }
    const int p = ++b->npos;
    int rc = 0;
    for (int i = 0; i < c->n && !rc; i++) rc = cls_add(&b->all, c->r[i].lo, c->r[i].hi);
    b->cls_end[p] = b->all.n;
    free(c->r);
    if (rc) return fail(b, at, "out of memory");
    f->first[p / 64] = f->last[p / 64] = 1ULL << (p % 64);
    return 0;
}

static void cat(struct build *b, struct frag *a, const struct frag *x)
{
    SET_FOREACH(a->last, l) set_or(b->follow[l], x->first);
    if (a->nullable) set_or(a->first, x->first);
    if (!x->nullable) memcpy(a->last, x->last, sizeof a->last);
    else set_or(a->last, x->last);
    a->nullable = a->nullable && x->nullable;
}

static void loop(struct build *b, struct frag *a)
{
    SET_FOREACH(a->last, l) set_or(b->follow[l], a->first);
}

/* ---------------------------------------------------------------- parse */

static bool at_end(const struct build *b) { return b->i >= b->n; }

/* The UTF-8 character at s[*i] (n bytes in all), *i moved past it; -1
 * when malformed (overlong, a surrogate, past U+10FFFF, cut short). */
static int64_t utf8_next(const unsigned char *s, size_t n, size_t *i)
{
    const size_t len = tok_utf8_char_len(s + *i, n - *i);
    if (!len) return -1;
    const int64_t c = tok_utf8_decode(s + *i, len);
    *i += len;
    return c;
}

static int64_t next_char(struct build *b) { return utf8_next(b->s, b->n, &b->i); }

static int hex_digits(struct build *b, int n, uint32_t *out)
{
    *out = 0;
    for (int k = 0; k < n; k++) {
        if (at_end(b)) return -1;
        const unsigned char h = b->s[b->i];
        const int v = h >= '0' && h <= '9' ? h - '0' : (h | 0x20) >= 'a' && (h | 0x20) <= 'f'
                    ? (h | 0x20) - 'a' + 10 : -1;
        if (v < 0) return -1;
        *out = *out << 4 | (uint32_t)v;
        b->i++;
    }
    return 0;
}

/* After a backslash: a character (the return, >= 0), or a class kind
 * (d D w W s S) in *kind with 0 returned; -1 on error. in_class: \b is
 * backspace, \- a hyphen. */
static int64_t escape(struct build *b, bool in_class, unsigned char *kind)
{
    const size_t at = b->i - 1;
    *kind = 0;
    if (at_end(b)) return fail(b, at, "the pattern ends in a backslash");
    const unsigned char e = b->s[b->i];
    if (strchr("dDwWsS", e)) {
        b->i++;
        *kind = e;
        return 0;
    }
    uint32_t c;
    switch (e) {
    case 't': b->i++; return '\t';
    case 'n': b->i++; return '\n';
    case 'r': b->i++; return '\r';
    case 'f': b->i++; return '\f';
    case 'v': b->i++; return '\v';
    case '0':
        b->i++;
        if (!at_end(b) && b->s[b->i] >= '0' && b->s[b->i] <= '9')
            return fail(b, at, "octal escapes are not supported");
        return 0;
    case 'x':
        b->i++;
        if (hex_digits(b, 2, &c)) return fail(b, at, "\\x needs two hex digits");
        return c;
    case 'u':
        b->i++;
        if (hex_digits(b, 4, &c)) return fail(b, at, "\\u needs four hex digits");
        if (c >= 0xD800 && c <= 0xDBFF && b->i + 6 <= b->n && b->s[b->i] == '\\' &&
            b->s[b->i + 1] == 'u') {
            const size_t save = b->i;
            uint32_t lo;
            b->i += 2;
            if (!hex_digits(b, 4, &lo) && lo >= 0xDC00 && lo <= 0xDFFF)
                return 0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00);
            b->i = save;
        }
        if (c >= 0xD800 && c <= 0xDFFF) return fail(b, at, "a lone surrogate matches nothing");
        return c;
    case 'b':
        if (in_class) { b->i++; return '\b'; }
        return fail(b, at, "\\b (word boundary) is not supported");
    case '-':
        b->i++;
        return '-';
    default:
        break;
    }
    if (e >= '1' && e <= '9') return fail(b, at, "backreferences are not supported");
    if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z') || e == '_') {
        char msg[64];
        snprintf(msg, sizeof msg, "the escape \\%c is not supported", e);
        return fail(b, at, msg);
    }
    const int64_t ch = next_char(b);  /* escaped punctuation (or any other character) */
    return ch < 0 ? fail(b, at + 1, "bad UTF-8") : ch;
}

static int class_atom(struct build *b, struct frag *f)
{
    const size_t at = b->i++;  /* past '[' */
    struct cls c = {0};
    bool negate = false;
    if (!at_end(b) && b->s[b->i] == '^') negate = true, b->i++;
    while (!at_end(b) && b->s[b->i] != ']') {   /* [] matches nothing, [^] anything */
        int64_t lo;
        unsigned char kind = 0;
        const size_t item = b->i;
        if (b->s[b->i] == '\\') {
            b->i++;
            lo = escape(b, true, &kind);
        } else {
            lo = next_char(b);
            if (lo < 0) fail(b, item, "bad UTF-8");
        }
        if (lo < 0) break;
        if (kind) {
            if (cls_add_kind(&c, kind)) { fail(b, item, "out of memory"); break; }
            continue;
        }
        int64_t hi = lo;
        if (b->i + 1 < b->n && b->s[b->i] == '-' && b->s[b->i + 1] != ']') {
            b->i++;
            const size_t at2 = b->i;
            if (b->s[b->i] == '\\') {
                b->i++;
                hi = escape(b, true, &kind);
                if (hi >= 0 && kind) { fail(b, at2, "a class escape cannot end a range"); break; }
            } else {
                hi = next_char(b);
                if (hi < 0) fail(b, at2, "bad UTF-8");
            }
            if (hi < 0) break;
            if (hi < lo) { fail(b, item, "a range out of order"); break; }
        }
        if (cls_add(&c, (uint32_t)lo, (uint32_t)hi)) { fail(b, item, "out of memory"); break; }
    }
    if (!b->failed && at_end(b)) fail(b, at, "a class without its ']'");
    if (b->failed) {
        free(c.r);
        return -1;
    }
    b->i++;  /* ']' */
    if (cls_finish(&c, negate)) {
        free(c.r);
        return fail(b, at, "out of memory");
    }
    return add_pos(b, &c, f, at);
}

static int alternation(struct build *b, struct frag *f, bool *bar);

static int atom(struct build *b, struct frag *f)
{
    const size_t at = b->i;
    const unsigned char c = b->s[b->i];
    struct cls k = {0};
    switch (c) {
    case '(':
        b->i++;
        if (b->n - b->i >= 2 && b->s[b->i] == '?') {
            const unsigned char g = b->s[b->i + 1];
            if (g == ':') {
                b->i += 2;
            } else if (g == '<' && b->n - b->i >= 3 && b->s[b->i + 2] != '=' && b->s[b->i + 2] != '!') {
                const unsigned char *close = memchr(b->s + b->i, '>', b->n - b->i);
                if (!close) return fail(b, at, "a group name without its '>'");
                b->i = (size_t)(close - b->s) + 1;
            } else {
                return fail(b, at, "lookaround and group flags are not supported (only (...), "
                                   "(?:...) and (?<name>...))");
            }
        }
        if (++b->depth > JRE_MAX_DEPTH) return fail(b, at, "groups nested too deeply");
        if (alternation(b, f, NULL)) return -1;
        b->depth--;
        if (at_end(b) || b->s[b->i] != ')') return fail(b, at, "a group without its ')'");
        b->i++;
        return 0;
    case '[':
        return class_atom(b, f);
    case '.':
        b->i++;
        if (cls_add(&k, '\n', '\n') || cls_add(&k, '\r', '\r') || cls_add(&k, 0x2028, 0x2029) ||
            cls_finish(&k, true)) {
            free(k.r);
            return fail(b, at, "out of memory");
        }
        return add_pos(b, &k, f, at);
    case '^':
    case '$':
        return fail(b, at, "anchors are supported only at the start (^) and end ($) of the pattern");
    case '*':
    case '+':
    case '?':
        return fail(b, at, "nothing to repeat");
    case '\\': {
        b->i++;
        unsigned char kind;
        const int64_t e = escape(b, false, &kind);
        if (e < 0) return -1;
        const int rc = kind ? cls_add_kind(&k, kind) : cls_add(&k, (uint32_t)e, (uint32_t)e);
        if (rc || cls_finish(&k, false)) {
            free(k.r);
            return fail(b, at, "out of memory");
        }
        return add_pos(b, &k, f, at);
    }
    default: {
        const int64_t ch = next_char(b);
        if (ch < 0) return fail(b, at, "bad UTF-8");
        if (cls_add(&k, (uint32_t)ch, (uint32_t)ch) || cls_finish(&k, false)) {
            free(k.r);
            return fail(b, at, "out of memory");
        }
        return add_pos(b, &k, f, at);
    }
    }
}

/* {n}, {n,} or {n,m} at b->i: true with the counts (m = -1: no bound),
 * b->i past it; false and b->i unchanged when it is not one (a literal
 * '{', as ECMA-262's Annex B reads it). */
static bool counts(struct build *b, int *lo, int *hi, bool *big)
{
    size_t i = b->i + 1;
    long v[2] = {-1, -1};
    bool comma = false;
    for (int k = 0; k < 2; k++) {
        while (i < b->n && b->s[i] >= '0' && b->s[i] <= '9') {
            v[k] = (v[k] < 0 ? 0 : v[k]) * 10 + (b->s[i++] - '0');
            if (v[k] > JRE_MAX_COUNT) *big = true, v[k] = JRE_MAX_COUNT + 1;
        }
        if (k == 0 && i < b->n && b->s[i] == ',') comma = true, i++;
        else break;
    }
    if (v[0] < 0 || i >= b->n || b->s[i] != '}') return false;
    *lo = (int)v[0];
    *hi = comma ? (int)v[1] : (int)v[0];
    b->i = i + 1;
    return true;
}

/* An atom and its quantifier. */
static int quantified(struct build *b, struct frag *f)
{
    const size_t start = b->i;
    if (b->s[start] == '{') {
        int lo, hi;
        bool big = false;
        if (counts(b, &lo, &hi, &big)) return fail(b, start, "nothing to repeat");
        struct cls k = {0};
        b->i++;
        if (cls_add(&k, '{', '{') || cls_finish(&k, false)) {
            free(k.r);
            return fail(b, start, "out of memory");
        }
        return add_pos(b, &k, f, start);
    }
    if (atom(b, f)) return -1;
    const size_t end = b->i;
    if (at_end(b)) return 0;
    const unsigned char q = b->s[b->i];
    int lo = 1, hi = 1;
    bool big = false;
    if (q == '*') lo = 0, hi = -1, b->i++;
    else if (q == '+') lo = 1, hi = -1, b->i++;
    else if (q == '?') lo = 0, hi = 1, b->i++;
    else if (q == '{' && counts(b, &lo, &hi, &big)) {
        if (big) return fail(b, end, "repetition counts above 1000 are not supported");
        if (hi >= 0 && hi < lo) return fail(b, end, "a repetition {n,m} with m < n");
    } else {
        return 0;
    }
    if (!at_end(b) && b->s[b->i] == '?') b->i++;  /* lazy: the same strings */
    if (!at_end(b) && strchr("*+?{", b->s[b->i])) {
        int l2, h2;
        bool big2 = false;
        const size_t save = b->i;
        if (b->s[b->i] != '{' || counts(b, &l2, &h2, &big2))
            return fail(b, save, "nothing to repeat");
        b->i = save;
    }
    const size_t resume = b->i;
    if (lo == 1 && hi == -1) {          /* a+ */
        loop(b, f);
        return 0;
    }
    if (lo == 0 && hi == -1) {          /* a* */
        loop(b, f);
        f->nullable = true;
        return 0;
    }
    /* a{lo,hi}: lo copies, then hi - lo optional ones (or a*); copies after
     * the first are the atom parsed again */
    struct frag whole = {.nullable = true}, copy = *f;
    const int copies = hi < 0 ? lo + 1 : hi;
    for (int k = 0; k < copies; k++) {
        if (k) {
            b->i = start;
            if (atom(b, &copy)) return -1;
        }
        if (k >= lo) {
            if (hi < 0) loop(b, &copy);
            copy.nullable = true;
        }
        cat(b, &whole, &copy);
    }
    *f = whole;
    b->i = resume;
    return 0;
}

/* A sequence of quantified atoms, up to '|', ')' or the end. */
static int sequence(struct build *b, struct frag *f)
{
    memset(f, 0, sizeof *f);
    f->nullable = true;
    while (!at_end(b) && b->s[b->i] != '|' && b->s[b->i] != ')') {
        struct frag x;
        if (quantified(b, &x)) return -1;
        cat(b, f, &x);
    }
    return 0;
}

static int alternation(struct build *b, struct frag *f, bool *bar)
{
    if (sequence(b, f)) return -1;
    while (!at_end(b) && b->s[b->i] == '|') {
        b->i++;
        if (bar) *bar = true;
        struct frag x;
        if (sequence(b, &x)) return -1;
        set_or(f->first, x.first);
        set_or(f->last, x.last);
        f->nullable = f->nullable || x.nullable;
    }
    return 0;
}

/* [\s\S]*: any character a JSON string holds, any number of times. */
static int any_star(struct build *b, struct frag *f)
{
    struct cls k = {0};
    if (cls_finish(&k, true)) return fail(b, 0, "out of memory");
    if (add_pos(b, &k, f, 0)) return -1;
    loop(b, f);
    f->nullable = true;
    return 0;
}

struct jre_prog *jre_compile(const char *pattern, size_t len, char *err, size_t errlen)
{
    struct build *b = calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    b->s = (const unsigned char *)pattern;
    b->n = len;
    b->err = err;
    b->errlen = errlen;
    struct jre_prog *p = NULL;
    const bool anch_start = len > 0 && pattern[0] == '^';
    size_t bs = 0;  /* backslashes before a final '$' */
    while (len >= 2 + bs && pattern[len - 2 - bs] == '\\') bs++;
    const bool anch_end = len > (size_t)anch_start && pattern[len - 1] == '$' && bs % 2 == 0;
    if (anch_end) b->n--;
    b->i = anch_start;
    struct frag body, pre, post;
    bool bar = false;
    if (alternation(b, &body, &bar)) goto out;
    if (!at_end(b)) {
        fail(b, b->i, "a ')' without its '('");
        goto out;
    }
    if (bar && (anch_start || anch_end)) {
        fail(b, 0, "anchors beside a top-level '|' are not supported (group the alternatives: "
                   "^(a|b)$)");
        goto out;
    }
    if (!anch_start) {
        if (any_star(b, &pre)) goto out;
        cat(b, &pre, &body);
        body = pre;
    }
    if (!anch_end) {
        if (any_star(b, &post)) goto out;
        cat(b, &body, &post);
    }
    set_or(b->follow[0], body.first);
    uint64_t accept[JRE_WORDS];
    memcpy(accept, body.last, sizeof accept);
    if (body.nullable) accept[0] |= 1;
    /* keep only the positions that can still reach a match */
    uint64_t live[JRE_WORDS], entered[JRE_WORDS] = {0};
    memcpy(live, accept, sizeof live);
    for (int q = 1; q <= b->npos; q++)
        if (b->cls_end[q] > b->cls_end[q - 1]) entered[q / 64] |= 1ULL << (q % 64);
    for (bool grew = true; grew;) {
        grew = false;
        for (int q = 0; q <= b->npos; q++) {
            if (live[q / 64] >> (q % 64) & 1) continue;
            for (int w = 0; w < JRE_WORDS; w++) {
                if (b->follow[q][w] & live[w] & entered[w]) {
                    live[q / 64] |= 1ULL << (q % 64);
                    grew = true;
                    break;
                }
            }
        }
    }
    if (!(live[0] & 1)) {
        fail(b, 0, "the pattern matches no string");
        goto out;
    }
    for (int q = 0; q <= b->npos; q++)
        for (int w = 0; w < JRE_WORDS; w++) b->follow[q][w] &= live[w] & entered[w];
    const int npos = b->npos;
    size_t bytes = sizeof *p + (size_t)(npos + 1) * sizeof p->follow[0] +
                   (size_t)(npos + 2) * sizeof(int32_t) + (size_t)b->all.n * sizeof(struct jre_range);
    bytes = (bytes + 7) / 8 * 8;
    if (bytes > UINT32_MAX || !(p = calloc(1, bytes))) {
        fail(b, 0, "out of memory");
        goto out;
    }
    p->bytes = (uint32_t)bytes;
    p->npos = (uint16_t)npos;
    for (int w = 0; w < JRE_WORDS; w++) p->accept[w] = accept[w] & live[w];
    memcpy(p->follow, b->follow, (size_t)(npos + 1) * sizeof p->follow[0]);
    int32_t *cls = (int32_t *)(p->follow + npos + 1);
    cls[0] = cls[1] = 0;
    for (int q = 1; q <= npos; q++) cls[q + 1] = b->cls_end[q];
    if (b->all.n) memcpy(cls + npos + 2, b->all.r, (size_t)b->all.n * sizeof(struct jre_range));
out:
    free(b->all.r);
    free(b);
    return p;
}

/* ------------------------------------------------------------- matching */

static const int32_t *prog_cls(const struct jre_prog *p)
{
    return (const int32_t *)(p->follow + p->npos + 1);
}

/* Position q's first range ending at or after c, or its end. */
static const struct jre_range *range_from(const struct jre_prog *p, int q, uint32_t c,
                                          const struct jre_range **end)
{
    const int32_t *cls = prog_cls(p);
    const struct jre_range *r = (const struct jre_range *)(cls + p->npos + 2);
    size_t lo = (size_t)cls[q], hi = (size_t)cls[q + 1];
    *end = r + hi;
    while (lo < hi) {
        const size_t mid = (lo + hi) / 2;
        if (r[mid].hi < c) lo = mid + 1;
        else hi = mid;
    }
    return r + lo;
}

void jre_start(uint64_t set[JRE_WORDS])
{
    memset(set, 0, JRE_WORDS * sizeof *set);
    set[0] = 1;
}

static void next_positions(const struct jre_prog *p, const uint64_t *set, uint64_t *f)
{
    memset(f, 0, JRE_WORDS * sizeof *f);
    SET_FOREACH(set, q) set_or(f, p->follow[q]);
}

bool jre_step(const struct jre_prog *p, uint64_t set[JRE_WORDS], uint32_t c)
{
    uint64_t f[JRE_WORDS];
    next_positions(p, set, f);
    memset(set, 0, JRE_WORDS * sizeof *set);
    SET_FOREACH(f, q) {
        const struct jre_range *end, *r = range_from(p, (int)q, c, &end);
        if (r < end && r->lo <= c) set[q / 64] |= 1ULL << (q % 64);
    }
    return set_any(set);
}

bool jre_can(const struct jre_prog *p, const uint64_t set[JRE_WORDS], uint32_t lo, uint32_t hi)
{
    uint64_t f[JRE_WORDS];
    next_positions(p, set, f);
    SET_FOREACH(f, q) {
        const struct jre_range *end, *r = range_from(p, (int)q, lo, &end);
        if (r < end && r->lo <= hi) return true;
    }
    return false;
}

bool jre_accepts(const struct jre_prog *p, const uint64_t set[JRE_WORDS])
{
    for (int w = 0; w < JRE_WORDS; w++)
        if (set[w] & p->accept[w]) return true;
    return false;
}

bool jre_match(const struct jre_prog *p, const char *s, size_t len)
{
    uint64_t set[JRE_WORDS];
    jre_start(set);
    for (size_t i = 0; i < len;) {
        const int64_t c = utf8_next((const unsigned char *)s, len, &i);
        if (c < 0 || !jre_step(p, set, (uint32_t)c)) return false;
    }
    return jre_accepts(p, set);
}
