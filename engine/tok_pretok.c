/* engine/tok_pretok.c — the text side of encoding: UTF-8 helpers, Unicode
 * normalizers (utf8proc), pre-tokenizers (Split with PCRE2 regexes, Digits,
 * ByteLevel) with Hugging Face's split behaviours, and the trie that finds
 * added tokens. Each piece a pre-tokenizer produces goes on to the next
 * stage and finally to BPE (tok_bpe.c); nothing here knows the vocabulary. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tok_internal.h"
#include "strbuf.h"

/* ---- UTF-8 ---- */

size_t tok_utf8_char_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    if (c < 0xC2) return 0;
    if (c < 0xE0) {
        if (n < 2 || (s[1] & 0xC0) != 0x80) return 0;
        return 2;
    }
    if (c < 0xF0) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && s[1] < 0xA0) return 0;     /* overlong */
        if (c == 0xED && s[1] >= 0xA0) return 0;    /* surrogate */
        return 3;
    }
    if (c < 0xF5) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 ||
            (s[3] & 0xC0) != 0x80) return 0;
        if (c == 0xF0 && s[1] < 0x90) return 0;     /* overlong */
        if (c == 0xF4 && s[1] >= 0x90) return 0;    /* > U+10FFFF */
        return 4;
    }
    return 0;
}

int32_t tok_utf8_decode(const unsigned char *s, size_t len)
{
    switch (len) {
    case 1: return s[0];
    case 2: return ((s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    case 3: return ((s[0] & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    default:
        return ((s[0] & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) |
               (s[3] & 0x3F);
    }
}

size_t tok_utf8_invalid_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;     /* range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return 1;
    size_t k = 1;
    if (k < n && k < need && s[k] >= lo && s[k] <= hi) {
        k++;
        while (k < n && k < need && (s[k] & 0xC0) == 0x80) k++;
    }
    return k;
}

bool tok_cp_is_whitespace(int32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 ||
           cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
           cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

bool tok_cp_is_alnum(int32_t cp)
{
    utf8proc_category_t c = utf8proc_category(cp);
    return (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO) ||
           (c >= UTF8PROC_CATEGORY_ND && c <= UTF8PROC_CATEGORY_NO);
}

/* GPT-2 bytes_to_unicode(): printable Latin-1 bytes stand for themselves,
 * the other 68 bytes map to U+0100.. in byte order. */
int tok_byte_to_cp(int b)
{
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))
        return b;
    int n = 0;
    for (int i = 0; i < b; i++)
        if (!((i >= 0x21 && i <= 0x7E) || (i >= 0xA1 && i <= 0xAC) || (i >= 0xAE && i <= 0xFF)))
            n++;
    return 256 + n;
}

/* ---- regexes ---- */

/* Hugging Face's regexes run on Oniguruma with Unicode 16.0 data, where
 * \s is the White_Space property; Debian's PCRE2 has Unicode 14.0 data and a
 * \s that also matches U+180E. The pattern is rewritten so PCRE2 means the
 * same: \s is spelled out (\S as its complement outside classes), and each
 * \p{X}/\pX (\P{X} outside classes) and \d gets the code points that joined
 * the category after Unicode 14 (tok_unicode.c), which PCRE2 sees as
 * unassigned (\p{Cn}). */
#define WS_ITEMS "\\t-\\r\\x20\\x85\\xa0\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}" \
                 "\\x{202f}\\x{205f}\\x{3000}"

/* The class items added to category cat (one or two letters) since 14.0. */
static void put_added(struct strbuf *b, const char *cat, size_t n)
{
    static const char *const subs[] = {"Lultmo", "Mnce", "Ndlo", "Pcdseifo", "Smcko", "Zslp"};
    for (size_t k = 0; k < sizeof subs / sizeof subs[0]; k++) {
        if (subs[k][0] != cat[0]) continue;
        for (const char *c = subs[k] + 1; *c; c++) {
            if (n == 2 && *c != cat[1]) continue;
            char two[2] = {cat[0], *c};
            const char *it = tok_unicode_added(two, 2);
            if (it) strbuf_puts(b, it);
        }
    }
}

/* Parses a category escape at p[i] (\d, \pL, \p{L}, \p{Lu}, and \P forms);
 * returns its length and sets *cat, *cn and *neg, or 0 when it is none of these
 * (longer names are left to PCRE2 as written). */
static size_t category_escape(const char *p, size_t n, size_t i, const char **cat, size_t *cn,
                              bool *neg)
{
    if (i + 1 >= n || p[i] != '\\') return 0;
    char d = p[i + 1];
    *neg = d == 'P';
    if (d == 'd') {
        *cat = "Nd";
        *cn = 2;
        return 2;
    }
    if ((d != 'p' && d != 'P') || i + 2 >= n) return 0;
    size_t len;
    if (p[i + 2] == '{') {
        const char *end = memchr(p + i + 3, '}', n - i - 3);
        if (!end || (end - (p + i + 3) != 1 && end - (p + i + 3) != 2)) return 0;
        *cat = p + i + 3;
        *cn = (size_t)(end - *cat);
        len = (size_t)(end - (p + i)) + 1;
    } else {
        *cat = p + i + 2;
        *cn = 1;
        len = 3;
    }
    return strchr("LMNPSZ", (*cat)[0]) ? len : 0;
}

/* Emits a class (body: its items, already rewritten; adds: class items of
 * code points new since Unicode 14) so that PCRE2 only looks at the added
 * items for code points it thinks unassigned: assigned code points take the
 * class as written at full speed. */
static void put_class(struct strbuf *o, bool negated, const struct strbuf *body,
                      const struct strbuf *adds)
{
    const char *neg = negated ? "^" : "";
    if (!adds->n) {
        strbuf_puts(o, "[");
        strbuf_puts(o, neg);
        strbuf_put(o, body->p, body->n);
        strbuf_puts(o, "]");
        return;
    }
    strbuf_puts(o, "(?:(?=\\P{Cn})[");
    strbuf_puts(o, neg);
    strbuf_put(o, body->p, body->n);
    strbuf_puts(o, "]|(?=\\p{Cn})[");
    strbuf_puts(o, neg);
    strbuf_put(o, body->p, body->n);
    strbuf_put(o, adds->p, adds->n);
    strbuf_puts(o, "])");
}

static char *rewrite_classes(const char *p, size_t n, bool with_adds, size_t *out_n)
{
    struct strbuf o = {0}, body = {0}, adds = {0};
    bool in_class = false, negated = false, quoted = false;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        struct strbuf *w = in_class ? &body : &o;
        if (quoted) {       /* inside \Q...\E everything is literal */
            if (c == '\\' && i + 1 < n && p[i + 1] == 'E') quoted = false;
            strbuf_put(w, &c, 1);
            continue;
        }
        if (c == '\\' && i + 1 < n) {
            char d = p[i + 1];
            if (d == 's' || (d == 'S' && !in_class)) {
                if (in_class) {
                    strbuf_puts(&body, WS_ITEMS);
                } else {
                    strbuf_puts(&o, d == 's' ? "[" : "[^");
                    strbuf_puts(&o, WS_ITEMS);
                    strbuf_puts(&o, "]");
                }
                i++;
                continue;
            }
            const char *cat;
            size_t cn;
            bool neg;
            size_t len = category_escape(p, n, i, &cat, &cn, &neg);
            if (len && !(in_class && neg)) {
                if (in_class) {
                    strbuf_put(&body, p + i, len);
                    if (with_adds) put_added(&adds, cat, cn);
                } else {
                    /* \p{X} alone is the class [\p{X}], \P{X} is [^\p{X}] */
                    struct strbuf b1 = {0}, a1 = {0};
                    strbuf_puts(&b1, "\\p");
                    strbuf_put(&b1, p + i + 2, len - 2);
                    if (p[i + 1] == 'd') {
                        b1.n = 0;
                        strbuf_puts(&b1, "\\d");
                    }
                    if (with_adds) put_added(&a1, cat, cn);
                    put_class(&o, neg, &b1, &a1);
                    if (b1.oom || a1.oom) o.oom = true;
                    free(b1.p);
                    free(a1.p);
                }
                i += len - 1;
                continue;
            }
            if (d == 'Q') quoted = true;
            strbuf_put(w, p + i, 2);
            i++;
            continue;
        }
        if (!in_class && c == '[') {
            in_class = true;
            negated = false;
            body.n = adds.n = 0;
            if (i + 1 < n && p[i + 1] == '^') {
                negated = true;
                i++;
            }
            /* a ']' right after '[' or '[^' is a literal */
            if (i + 1 < n && p[i + 1] == ']') strbuf_put(&body, p + ++i, 1);
            continue;
        }
        if (in_class && c == '[' && i + 1 < n && p[i + 1] == ':') {
            const char *end = memchr(p + i + 2, ']', n - i - 2);   /* [:alpha:] */
            if (end) {
                size_t m = (size_t)(end - (p + i)) + 1;
                strbuf_put(&body, p + i, m);
                i += m - 1;
                continue;
            }
        }
        if (in_class && c == ']') {
            in_class = false;
            put_class(&o, negated, &body, &adds);
            continue;
        }
        strbuf_put(w, &c, 1);
    }
    if (in_class) {         /* unterminated: leave it for PCRE2 to report */
        strbuf_puts(&o, negated ? "[^" : "[");
        strbuf_put(&o, body.p, body.n);
    }
    strbuf_put(&o, "", 0);
    bool oom = o.oom || body.oom || adds.oom;
    free(body.p);
    free(adds.p);
    if (oom) {
        free(o.p);
        return NULL;
    }
    *out_n = o.n;
    return o.p;
}

static bool jit_compiled(pcre2_code *re)
{
    size_t size = 0;
    return re && pcre2_pattern_info(re, PCRE2_INFO_JITSIZE, &size) == 0 && size > 0;
}

int tok_regex_compile(struct tok_pretok *pt, const char *pattern, size_t len, bool literal,
                      char *err, size_t errlen)
{
    int ec;
    PCRE2_SIZE eo;
    uint32_t opt = PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK;
    if (literal) opt |= PCRE2_LITERAL;
    /* The pattern as written is compiled first, so errors point into it. */
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, len, opt, &ec, &eo, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        snprintf(err, errlen, "invalid regex at offset %zu: %s", (size_t)eo, (char *)msg);
        return -1;
    }
    if (!literal) {
        pcre2_code_free(re);
        re = NULL;
        for (int exact = 0; exact < 2; exact++) {
            size_t rn;
            char *rw = rewrite_classes(pattern, len, exact, &rn);
            pcre2_code *c = rw ? pcre2_compile((PCRE2_SPTR)rw, rn, opt, &ec, &eo, NULL) : NULL;
            free(rw);
            if (!c) {
                pcre2_code_free(re);
                snprintf(err, errlen, "cannot compile the pattern with Unicode 16 classes");
                return -1;
            }
            pcre2_jit_compile(c, PCRE2_JIT_COMPLETE);   /* else the interpreter runs it */
            if (exact) pt->re = c;
            else re = c;
        }
        pt->re_fast = re;
        pt->jit_fast = jit_compiled(re);
    } else {
        pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
        pt->re = re;
    }
    pt->jit = jit_compiled(pt->re);
    return 0;
}

/* ---- code points new since Unicode 14 ---- */

/* Text with none of them is split with the fast regexes (PCRE2's own
 * classes), which give the same pieces there. */
static uint8_t new16[0x110000 / 8];
static pthread_once_t new16_once = PTHREAD_ONCE_INIT;

static void new16_build(void)
{
    static const char *const cats[] = {"Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd",
                                       "Nl", "No", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po",
                                       "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp"};
    for (size_t k = 0; k < sizeof cats / sizeof cats[0]; k++) {
        const char *s = tok_unicode_added(cats[k], 2);
        while (s && *s) {       /* items: \x{HEX} or \x{HEX}-\x{HEX} */
            char *end;
            long lo = strtol(s + 3, &end, 16), hi = lo;
            s = end + 1;
            if (*s == '-') {
                hi = strtol(s + 4, &end, 16);
                s = end + 1;
            }
            for (long c = lo; c <= hi && c < 0x110000; c++)
                new16[c >> 3] |= (uint8_t)(1u << (c & 7));
        }
    }
}

void tok_new16_prepare(void)
{
    pthread_once(&new16_once, new16_build);
}

bool tok_has_new16(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        if (u[i] < 0xE0) {      /* nothing new below U+0800 */
            i++;
            continue;
        }
        size_t cl = tok_utf8_char_len(u + i, n - i);
        if (!cl) {
            i++;
            continue;
        }
        int32_t cp = tok_utf8_decode(u + i, cl);
        if (new16[cp >> 3] & (1u << (cp & 7))) return true;
        i += cl;
    }
    return false;
}

/* ---- normalizers ---- */

/* A code point is "inert" when it has canonical combining class 0, no
 * decomposition (canonical, or also compatibility for the K forms) and is
 * never the second half of a canonical composition. Normalization leaves
 * inert code points alone and never combines across them, so text is
 * normalized only in the regions between inert code points that hold
 * something else, each region starting at the inert code point before it
 * (which may compose with what follows). Tables cover all of Unicode and
 * are built once per process. */
static uint8_t inert_canon[0x110000 / 8], inert_compat[0x110000 / 8];
static pthread_once_t inert_once = PTHREAD_ONCE_INIT;

static void inert_build(void)
{
    static uint8_t second[0x110000 / 8];
    utf8proc_int32_t buf[32];
    utf8proc_int32_t cp;
    for (cp = 0; cp < 0x110000; cp++) {
        if (cp >= 0xD800 && cp < 0xE000) continue;
        const utf8proc_property_t *p = utf8proc_get_property(cp);
        bool hangul = cp >= 0xAC00 && cp <= 0xD7A3;     /* decomposed algorithmically */
        if (!hangul && (p->category == UTF8PROC_CATEGORY_CN || p->decomp_seqindex == UINT16_MAX))
            continue;
        int last = 0;
        utf8proc_ssize_t k = utf8proc_decompose_char(cp, buf, 32, UTF8PROC_DECOMPOSE, &last);
        for (utf8proc_ssize_t i = 1; i < k && i < 32; i++)
            second[buf[i] >> 3] |= (uint8_t)(1u << (buf[i] & 7));
    }
    for (cp = 0; cp < 0x110000; cp++) {
        if (second[cp >> 3] & (1u << (cp & 7))) continue;
        if (cp >= 0xD800 && cp < 0xE000) continue;
        const utf8proc_property_t *p = utf8proc_get_property(cp);
        if (p->combining_class != 0) continue;
        uint8_t bit = (uint8_t)(1u << (cp & 7));
        bool hangul = cp >= 0xAC00 && cp <= 0xD7A3;
        if (!hangul && (p->category == UTF8PROC_CATEGORY_CN || p->decomp_seqindex == UINT16_MAX)) {
            inert_canon[cp >> 3] |= bit;
            inert_compat[cp >> 3] |= bit;
            continue;
        }
        int last = 0;
        utf8proc_ssize_t k = utf8proc_decompose_char(cp, buf, 32, UTF8PROC_DECOMPOSE, &last);
        if (k == 1 && buf[0] == cp) inert_canon[cp >> 3] |= bit;
        last = 0;
        k = utf8proc_decompose_char(cp, buf, 32, UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT, &last);
        if (k == 1 && buf[0] == cp) inert_compat[cp >> 3] |= bit;
    }
}

void tok_norm_prepare(void)
{
    pthread_once(&inert_once, inert_build);
}

/* Offset of the first character at or after i that is not inert, or n. */
static size_t next_active(const unsigned char *s, size_t n, size_t i, const uint8_t *table)
{
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t cl = tok_utf8_char_len(s + i, n - i);
        if (!cl) return i;
        int32_t cp = tok_utf8_decode(s + i, cl);
        if (!(table[cp >> 3] & (1u << (cp & 7)))) return i;
        i += cl;
    }
    return n;
}

/* Normalizes one region with the whole normalizer sequence; appends to out. */
static int normalize_region(const struct tokenizer *tok, const char *s, size_t n,
                            struct strbuf *out)
{
    char *cur = NULL;
    size_t cur_n = n;
    for (int i = 0; i < tok->n_norm; i++) {
        int opt = UTF8PROC_STABLE;
        switch (tok->norm[i]) {
        case TOK_NORM_NFC: opt |= UTF8PROC_COMPOSE; break;
        case TOK_NORM_NFD: opt |= UTF8PROC_DECOMPOSE; break;
        case TOK_NORM_NFKC: opt |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
        case TOK_NORM_NFKD: opt |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
        }
        utf8proc_uint8_t *r = NULL;
        utf8proc_ssize_t k = utf8proc_map((const utf8proc_uint8_t *)(cur ? cur : s),
                                          (utf8proc_ssize_t)cur_n, &r, opt);
        free(cur);
        if (k < 0) {
            free(r);
            return -1;
        }
        cur = (char *)r;
        cur_n = (size_t)k;
    }
    strbuf_put(out, cur ? cur : s, cur_n);
    free(cur);
    return 0;
}

int tok_normalize(const struct tokenizer *tok, const char *s, size_t n, char **out,
                  size_t *out_n)
{
    *out = NULL;
    *out_n = n;
    if (tok->n_norm == 0) return 0;
    bool compat = false;
    for (int i = 0; i < tok->n_norm; i++)
        if (tok->norm[i] == TOK_NORM_NFKC || tok->norm[i] == TOK_NORM_NFKD) compat = true;
    const uint8_t *table = compat ? inert_compat : inert_canon;
    const unsigned char *u = (const unsigned char *)s;
    size_t i = next_active(u, n, 0, table);
    if (i == n) return 0;
    struct strbuf o = {0};
    size_t pos = 0;
    while (i < n) {
        size_t start = i;
        if (start > pos) {      /* include the inert character before */
            start--;
            while (start > pos && (u[start] & 0xC0) == 0x80) start--;
        }
        size_t end = i;
        while (end < n) {       /* up to the next inert character */
            size_t cl = tok_utf8_char_len(u + end, n - end);
            if (!cl) {
                free(o.p);
                return -1;
            }
            int32_t cp = tok_utf8_decode(u + end, cl);
            if (table[cp >> 3] & (1u << (cp & 7))) break;
            end += cl;
        }
        strbuf_put(&o, s + pos, start - pos);
        if (normalize_region(tok, s + start, end - start, &o)) {
            free(o.p);
            return -1;
        }
        pos = end;
        i = next_active(u, n, end, table);
    }
    strbuf_put(&o, s + pos, n - pos);
    if (o.oom) {
        free(o.p);
        return -1;
    }
    *out = o.p;
    *out_n = o.n;
    return 0;
}

/* ---- split behaviours ---- */

/* Applies a Split behaviour to the stream of (piece, is_match) produced by a
 * pattern, exactly as Hugging Face's NormalizedString::split folds them;
 * empty pieces are dropped when emitted. */
struct splitter {
    struct tok_enc *e;
    int next;
    const char *base;
    enum tok_split_behavior behavior;
    bool invert;
    bool pending, prev_match;
    size_t ps, pe;
};

static int sp_emit(struct splitter *s, size_t a, size_t b)
{
    return b > a ? tok_pretok_run(s->e, s->next, s->base + a, b - a) : 0;
}

static int sp_piece(struct splitter *s, size_t a, size_t b, bool is_match)
{
    if (s->invert) is_match = !is_match;
    int rc = 0;
    switch (s->behavior) {
    case TOK_SPLIT_ISOLATED:
        return sp_emit(s, a, b);
    case TOK_SPLIT_REMOVED:
        return is_match ? 0 : sp_emit(s, a, b);
    case TOK_SPLIT_MERGED_WITH_PREVIOUS:
        if (is_match && !s->prev_match && s->pending) {
            s->pe = b;
        } else {
            if (s->pending) rc = sp_emit(s, s->ps, s->pe);
            s->ps = a;
            s->pe = b;
            s->pending = true;
        }
        s->prev_match = is_match;
        return rc;
    case TOK_SPLIT_CONTIGUOUS:
        if (is_match == s->prev_match && s->pending) {
            s->pe = b;
        } else {
            if (s->pending) rc = sp_emit(s, s->ps, s->pe);
            s->ps = a;
            s->pe = b;
            s->pending = true;
        }
        s->prev_match = is_match;
        return rc;
    case TOK_SPLIT_MERGED_WITH_NEXT:
        /* pending only ever holds a match waiting for the piece after it */
        if (s->pending) {
            if (!is_match) {
                s->pending = false;
                return sp_emit(s, s->ps, b);
            }
            rc = sp_emit(s, s->ps, s->pe);
            s->ps = a;
            s->pe = b;
            return rc;
        }
        if (is_match) {
            s->pending = true;
            s->ps = a;
            s->pe = b;
            return 0;
        }
        return sp_emit(s, a, b);
    }
    return 0;
}

static int sp_finish(struct splitter *s)
{
    if (!s->pending) return 0;
    s->pending = false;
    return sp_emit(s, s->ps, s->pe);
}

/* Hugging Face's Pattern::find_matches for a regex, with the empty-match
 * rules of the onig crate's find_iter (an empty match right after the
 * previous match is skipped by advancing one character). */
static int split_regex(struct tok_enc *e, int stage, const struct tok_pretok *pt,
                       const char *p, size_t n)
{
    struct splitter s = {e, stage + 1, p, pt->behavior, pt->invert, false, false, 0, 0};
    if (n == 0) return sp_piece(&s, 0, 0, false) || sp_finish(&s) ? -1 : 0;
    pcre2_match_data *md = e->md;
    bool fast = pt->re_fast && !e->exact;
    pcre2_code *re = fast ? pt->re_fast : pt->re;
    bool jit = fast ? pt->jit_fast : pt->jit;
    size_t prev = 0, last_end = 0;
    long last_match_end = -1;
    while (last_end <= n) {
        int rc = jit ? pcre2_jit_match(re, (PCRE2_SPTR)p, n, last_end, 0, md, NULL)
                     : PCRE2_ERROR_JIT_BADOPTION;
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT || rc == PCRE2_ERROR_JIT_BADOPTION)
            rc = pcre2_match(re, (PCRE2_SPTR)p, n, last_end, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                             md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) return -1;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (ms == me && last_match_end == (long)me) {
            size_t cl = last_end < n ? tok_utf8_char_len((const unsigned char *)p + last_end,
                                                          n - last_end) : 1;
            last_end += cl ? cl : 1;
            continue;
        }
        last_end = me;
        last_match_end = (long)me;
        if (prev != ms && sp_piece(&s, prev, ms, false)) return -1;
        if (sp_piece(&s, ms, me, true)) return -1;
        prev = me;
    }
    if (prev != n && sp_piece(&s, prev, n, false)) return -1;
    return sp_finish(&s);
}

/* Rust's char::is_numeric: general categories Nd, Nl, No. */
static bool cp_is_numeric(int32_t cp)
{
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    utf8proc_category_t c = utf8proc_category(cp);
    return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

static int split_digits(struct tok_enc *e, int stage, const struct tok_pretok *pt,
                        const char *p, size_t n)
{
    struct splitter s = {e, stage + 1, p,
                         pt->individual_digits ? TOK_SPLIT_ISOLATED : TOK_SPLIT_CONTIGUOUS,
                         false, false, false, 0, 0};
    size_t last = 0, i = 0;
    while (i < n) {
        size_t cl = tok_utf8_char_len((const unsigned char *)p + i, n - i);
        if (!cl) cl = 1;
        if (cp_is_numeric(tok_utf8_decode((const unsigned char *)p + i, cl))) {
            if (last < i && sp_piece(&s, last, i, false)) return -1;
            if (sp_piece(&s, i, i + cl, true)) return -1;
            last = i + cl;
        }
        i += cl;
    }
    if (n > last && sp_piece(&s, last, n, false)) return -1;
    return sp_finish(&s);
}

int tok_pretok_run(struct tok_enc *e, int stage, const char *p, size_t n)
{
    const struct tokenizer *tok = e->tok;
    if (stage == tok->n_pre) return tok_bpe_word(e, p, n);
    const struct tok_pretok *pt = &tok->pre[stage];
    switch (pt->kind) {
    case TOK_PRE_SPLIT:
        return split_regex(e, stage, pt, p, n);
    case TOK_PRE_DIGITS:
        return split_digits(e, stage, pt, p, n);
    case TOK_PRE_BYTELEVEL:
        if (pt->add_prefix_space && (n == 0 || p[0] != ' ')) {
            char small[256];
            char *buf = n + 1 <= sizeof small ? small : malloc(n + 1);
            if (!buf) return -1;
            buf[0] = ' ';
            memcpy(buf + 1, p, n);
            int rc = pt->re ? split_regex(e, stage, pt, buf, n + 1)
                            : tok_pretok_run(e, stage + 1, buf, n + 1);
            if (buf != small) free(buf);
            return rc;
        }
        return pt->re ? split_regex(e, stage, pt, p, n) : tok_pretok_run(e, stage + 1, p, n);
    }
    return -1;
}

/* ---- added-token trie ---- */

void tok_trie_free(struct tok_trie *t)
{
    free(t->node);
    memset(t, 0, sizeof *t);
}

static int32_t trie_new_node(struct tok_trie *t, uint8_t byte)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        void *nn = realloc(t->node, cap * sizeof *t->node);
        if (!nn) return -1;
        t->node = nn;
        t->cap = cap;
    }
    t->node[t->n] = (struct tok_trie_node){-1, -1, -1, byte};
    return (int32_t)t->n++;
}

int tok_trie_add(struct tok_trie *t, const char *s, size_t n, int32_t added)
{
    if (n == 0) return 0;
    if (t->n == 0 && trie_new_node(t, 0) < 0) return -1;
    int32_t cur = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)s[i];
        int32_t c = t->node[cur].first_child;
        while (c >= 0 && t->node[c].byte != b) c = t->node[c].next_sibling;
        if (c < 0) {
            c = trie_new_node(t, b);
            if (c < 0) return -1;
            t->node[c].next_sibling = t->node[cur].first_child;
            t->node[cur].first_child = c;
        }
        cur = c;
    }
    /* A later duplicate does not replace the first one. */
    if (t->node[cur].added < 0) t->node[cur].added = added;
    t->first[(uint8_t)s[0] >> 3] |= (uint8_t)(1u << ((uint8_t)s[0] & 7));
    return 0;
}

int tok_trie_match(const struct tok_trie *t, const char *s, size_t n, size_t *len)
{
    if (!t->n) return -1;
    int32_t cur = 0, best = -1;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)s[i];
        int32_t c = t->node[cur].first_child;
        while (c >= 0 && t->node[c].byte != b) c = t->node[c].next_sibling;
        if (c < 0) break;
        cur = c;
        if (t->node[cur].added >= 0) {
            best = t->node[cur].added;
            *len = i + 1;
        }
    }
    return best;
}
