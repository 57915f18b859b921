/* engine/tokenizer.c — loads a Hugging Face tokenizer.json (byte-level BPE:
 * Qwen2/2.5/3, Llama 3, DeepSeek-V3/R1, and aha's own byte tokenizer),
 * runs the encode pipeline (added tokens, normalizer, pre-tokenizers, BPE)
 * and decodes ids back to text. BPE itself is in tok_bpe.c, normalizers and
 * pre-tokenizers in tok_pretok.c, streaming decode in tok_stream.c.
 *
 * Invalid UTF-8 input (which Hugging Face cannot receive: its API takes
 * Rust/JS strings): the text is cut at each byte that is not part of a valid
 * UTF-8 character; the valid runs are encoded independently and each invalid
 * byte becomes its byte-level token. tok_decode_bytes gives those bytes back
 * exactly; tok_decode, like Hugging Face, turns them into U+FFFD. */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

#define TOK_MAX_ID (1 << 24)    /* larger ids in a tokenizer.json are errors */

static const char GPT2_REGEX[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* ---- arena ---- */

static char *arena_dup(struct tokenizer *tok, const char *s, size_t n)
{
    struct tok_chunk *c = tok->arena;
    if (!c || c->cap - c->used < n + 1) {
        size_t cap = n + 1 > (1 << 20) ? n + 1 : (1 << 20);
        c = malloc(sizeof *c + cap);
        if (!c) return NULL;
        c->next = tok->arena;
        c->used = 0;
        c->cap = cap;
        tok->arena = c;
    }
    char *p = c->data + c->used;
    memcpy(p, s, n);
    p[n] = 0;
    c->used += n + 1;
    return p;
}

/* ---- byte-level mapping ---- */

static int16_t cp_byte[324];    /* inverse of tok_byte_to_cp; -1 when none */
static char byte_char[256][3];  /* UTF-8 of tok_byte_to_cp(b) */
static uint8_t byte_char_len[256];
static pthread_once_t bytes_once = PTHREAD_ONCE_INIT;

static void bytes_build(void)
{
    memset(cp_byte, 0xff, sizeof cp_byte);
    for (int b = 0; b < 256; b++) {
        int cp = tok_byte_to_cp(b);
        cp_byte[cp] = (int16_t)b;
        if (cp < 0x80) {
            byte_char[b][0] = (char)cp;
            byte_char_len[b] = 1;
        } else {
            byte_char[b][0] = (char)(0xC0 | (cp >> 6));
            byte_char[b][1] = (char)(0x80 | (cp & 0x3F));
            byte_char_len[b] = 2;
        }
    }
}

/* The bytes a byte-level token string stands for, into out (room for n
 * bytes); returns their count, or -1 when a character is not one of the 256
 * byte characters (Hugging Face's ByteLevel decoder then keeps the string). */
static long bytelevel_unmap(const char *s, size_t n, char *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        size_t cl = tok_utf8_char_len((const unsigned char *)s + i, n - i);
        if (!cl) return -1;
        int32_t cp = tok_utf8_decode((const unsigned char *)s + i, cl);
        if (cp >= 324 || cp_byte[cp] < 0) return -1;
        out[k++] = (char)cp_byte[cp];
        i += cl;
    }
    return (long)k;
}

/* ---- errors ---- */

struct loader {
    const char *file;
    char *err;
    size_t errlen;
    struct tokenizer *tok;
};

static int fail(struct loader *ld, const char *path, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (ld->err && ld->errlen) snprintf(ld->err, ld->errlen, "%s: %s: %s", ld->file, path, msg);
    return -1;
}

/* Optional boolean member: missing or null gives def. */
static int get_bool(struct loader *ld, json_t *obj, const char *key, const char *path,
                    bool def, bool *out)
{
    json_t *v = json_object_get(obj, key);
    *out = def;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return fail(ld, path, "\"%s\": expected true or false", key);
    *out = json_is_true(v);
    return 0;
}

static const char *type_of(struct loader *ld, json_t *obj, const char *path)
{
    json_t *t = json_object_get(obj, "type");
    if (!json_is_string(t)) {
        fail(ld, path, "\"type\": expected a string");
        return NULL;
    }
    return json_string_value(t);
}

/* ---- normalizer ---- */

static int add_norm(struct loader *ld, enum tok_norm_kind k)
{
    struct tokenizer *tok = ld->tok;
    void *p = realloc(tok->norm, (tok->n_norm + 1) * sizeof *tok->norm);
    if (!p) return fail(ld, "normalizer", "out of memory");
    tok->norm = p;
    tok->norm[tok->n_norm++] = k;
    return 0;
}

static int parse_normalizer(struct loader *ld, json_t *j, const char *path)
{
    if (json_is_null(j)) return 0;
    if (!json_is_object(j)) return fail(ld, path, "expected an object or null");
    const char *type = type_of(ld, j, path);
    if (!type) return -1;
    if (!strcmp(type, "NFC")) return add_norm(ld, TOK_NORM_NFC);
    if (!strcmp(type, "NFD")) return add_norm(ld, TOK_NORM_NFD);
    if (!strcmp(type, "NFKC")) return add_norm(ld, TOK_NORM_NFKC);
    if (!strcmp(type, "NFKD")) return add_norm(ld, TOK_NORM_NFKD);
    if (!strcmp(type, "Sequence")) {
        json_t *a = json_object_get(j, "normalizers");
        if (!json_is_array(a)) return fail(ld, path, "\"normalizers\": expected an array");
        for (size_t i = 0; i < json_array_size(a); i++) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.normalizers[%zu]", path, i);
            if (parse_normalizer(ld, json_array_get(a, i), sub)) return -1;
        }
        return 0;
    }
    char tp[256];
    snprintf(tp, sizeof tp, "%s.type", path);
    return fail(ld, tp, "unsupported normalizer \"%s\" (supported: NFC, NFD, NFKC, NFKD, Sequence)",
                type);
}

/* ---- pre-tokenizer ---- */

static struct tok_pretok *add_pre(struct loader *ld, const char *path)
{
    struct tokenizer *tok = ld->tok;
    void *p = realloc(tok->pre, (tok->n_pre + 1) * sizeof *tok->pre);
    if (!p) {
        fail(ld, path, "out of memory");
        return NULL;
    }
    tok->pre = p;
    struct tok_pretok *pt = &tok->pre[tok->n_pre++];
    memset(pt, 0, sizeof *pt);
    return pt;
}

static int parse_pretok(struct loader *ld, json_t *j, const char *path)
{
    if (json_is_null(j)) return 0;
    if (!json_is_object(j)) return fail(ld, path, "expected an object or null");
    const char *type = type_of(ld, j, path);
    if (!type) return -1;
    char sub[256];
    if (!strcmp(type, "Sequence")) {
        json_t *a = json_object_get(j, "pretokenizers");
        if (!json_is_array(a)) return fail(ld, path, "\"pretokenizers\": expected an array");
        for (size_t i = 0; i < json_array_size(a); i++) {
            snprintf(sub, sizeof sub, "%s.pretokenizers[%zu]", path, i);
            if (parse_pretok(ld, json_array_get(a, i), sub)) return -1;
        }
        return 0;
    }
    if (!strcmp(type, "Split")) {
        json_t *pat = json_object_get(j, "pattern");
        snprintf(sub, sizeof sub, "%s.pattern", path);
        if (!json_is_object(pat)) return fail(ld, sub, "expected {\"Regex\": ...} or {\"String\": ...}");
        json_t *re = json_object_get(pat, "Regex"), *str = json_object_get(pat, "String");
        json_t *src = json_is_string(re) ? re : str;
        if (!json_is_string(src)) return fail(ld, sub, "expected {\"Regex\": ...} or {\"String\": ...}");
        bool literal = src == str;
        struct tok_pretok *pt = add_pre(ld, path);
        if (!pt) return -1;
        pt->kind = TOK_PRE_SPLIT;
        if (literal && json_string_length(src) == 0) {
            /* An empty string pattern matches nothing: the piece stays whole. */
            if (tok_regex_compile(pt, "(*FAIL)", 7, false, ld->err, ld->errlen)) return -1;
        } else {
            char rerr[300];
            if (tok_regex_compile(pt, json_string_value(src), json_string_length(src), literal,
                                  rerr, sizeof rerr)) {
                snprintf(sub, sizeof sub, "%s.pattern.%s", path, literal ? "String" : "Regex");
                return fail(ld, sub, "%s", rerr);
            }
        }
        json_t *b = json_object_get(j, "behavior");
        snprintf(sub, sizeof sub, "%s.behavior", path);
        if (!json_is_string(b)) return fail(ld, sub, "expected a string");
        const char *bs = json_string_value(b);
        if (!strcmp(bs, "Isolated")) pt->behavior = TOK_SPLIT_ISOLATED;
        else if (!strcmp(bs, "Removed")) pt->behavior = TOK_SPLIT_REMOVED;
        else if (!strcmp(bs, "MergedWithPrevious")) pt->behavior = TOK_SPLIT_MERGED_WITH_PREVIOUS;
        else if (!strcmp(bs, "MergedWithNext")) pt->behavior = TOK_SPLIT_MERGED_WITH_NEXT;
        else if (!strcmp(bs, "Contiguous")) pt->behavior = TOK_SPLIT_CONTIGUOUS;
        else return fail(ld, sub, "unknown behavior \"%s\"", bs);
        return get_bool(ld, j, "invert", path, false, &pt->invert);
    }
    if (!strcmp(type, "ByteLevel")) {
        struct tok_pretok *pt = add_pre(ld, path);
        if (!pt) return -1;
        pt->kind = TOK_PRE_BYTELEVEL;
        bool use_regex;
        if (get_bool(ld, j, "add_prefix_space", path, true, &pt->add_prefix_space) ||
            get_bool(ld, j, "use_regex", path, true, &use_regex))
            return -1;
        if (use_regex) {
            if (tok_regex_compile(pt, GPT2_REGEX, sizeof GPT2_REGEX - 1, false, ld->err, ld->errlen))
                return -1;
            pt->behavior = TOK_SPLIT_ISOLATED;
        }
        return 0;
    }
    if (!strcmp(type, "Digits")) {
        struct tok_pretok *pt = add_pre(ld, path);
        if (!pt) return -1;
        pt->kind = TOK_PRE_DIGITS;
        return get_bool(ld, j, "individual_digits", path, false, &pt->individual_digits);
    }
    snprintf(sub, sizeof sub, "%s.type", path);
    return fail(ld, sub,
                "unsupported pre-tokenizer \"%s\" (supported: Sequence, Split, ByteLevel, Digits)",
                type);
}

/* ---- model ---- */

static int set_id_string(struct loader *ld, int32_t id, const char *s, size_t n)
{
    struct tokenizer *tok = ld->tok;
    char *p = arena_dup(tok, s, n);
    if (!p) return fail(ld, "model.vocab", "out of memory");
    tok->id_str[id] = p;
    tok->id_len[id] = (uint32_t)n;
    return 0;
}

static int vocab_id(struct loader *ld, const char *s, size_t n)
{
    struct tokenizer *tok = ld->tok;
    return tok_idmap_get(&tok->vocab, tok->id_str, tok->id_len, s, n);
}

static int parse_merges(struct loader *ld, json_t *merges)
{
    struct tokenizer *tok = ld->tok;
    size_t n = json_array_size(merges);
    if (tok_merges_init(&tok->merges, n)) return fail(ld, "model.merges", "out of memory");
    uint32_t rank = 0;
    char *buf = NULL;
    size_t bufcap = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(merges, i);
        char path[64];
        snprintf(path, sizeof path, "model.merges[%zu]", i);
        const char *a, *b;
        size_t an, bn;
        if (json_is_string(m)) {
            const char *s = json_string_value(m);
            size_t sn = json_string_length(m);
            if (sn >= 8 && !memcmp(s, "#version", 8)) continue;
            const char *sp = memchr(s, ' ', sn);
            if (!sp || memchr(sp + 1, ' ', sn - (size_t)(sp + 1 - s))) {
                free(buf);
                return fail(ld, path, "expected two tokens separated by one space, got \"%.*s\"",
                            (int)(sn > 100 ? 100 : sn), s);
            }
            a = s;
            an = (size_t)(sp - s);
            b = sp + 1;
            bn = sn - an - 1;
        } else if (json_is_array(m) && json_array_size(m) == 2 &&
                   json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
            a = json_string_value(json_array_get(m, 0));
            an = json_string_length(json_array_get(m, 0));
            b = json_string_value(json_array_get(m, 1));
            bn = json_string_length(json_array_get(m, 1));
        } else {
            free(buf);
            return fail(ld, path, "expected a string or a 2-element array");
        }
        int32_t ia = vocab_id(ld, a, an), ib = vocab_id(ld, b, bn);
        if (ia < 0 || ib < 0) {
            free(buf);
            return fail(ld, path, "token \"%.*s\" is not in the vocabulary",
                        (int)(ia < 0 ? an : bn), ia < 0 ? a : b);
        }
        if (an + bn > bufcap) {
            bufcap = (an + bn) * 2 + 64;
            char *nb = realloc(buf, bufcap);
            if (!nb) {
                free(buf);
                return fail(ld, path, "out of memory");
            }
            buf = nb;
        }
        memcpy(buf, a, an);
        memcpy(buf + an, b, bn);
        int32_t im = vocab_id(ld, buf, an + bn);
        if (im < 0) {
            fail(ld, path, "merged token \"%.*s\" is not in the vocabulary", (int)(an + bn), buf);
            free(buf);
            return -1;
        }
        tok_merges_put(&tok->merges, ia, ib, rank++, im);
    }
    free(buf);
    return 0;
}

static int parse_added(struct loader *ld, json_t *arr, size_t *n_out)
{
    struct tokenizer *tok = ld->tok;
    size_t n = json_array_size(arr);
    tok->added = calloc(n ? n : 1, sizeof *tok->added);
    tok->added_key = calloc(n ? n : 1, sizeof *tok->added_key);
    tok->added_keylen = calloc(n ? n : 1, sizeof *tok->added_keylen);
    if (!tok->added || !tok->added_key || !tok->added_keylen)
        return fail(ld, "added_tokens", "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(arr, i);
        char path[64];
        snprintf(path, sizeof path, "added_tokens[%zu]", i);
        if (!json_is_object(t)) return fail(ld, path, "expected an object");
        json_t *id = json_object_get(t, "id"), *c = json_object_get(t, "content");
        if (!json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) >= TOK_MAX_ID)
            return fail(ld, path, "\"id\": expected an integer in [0, %d)", TOK_MAX_ID);
        if (!json_is_string(c) || json_string_length(c) == 0)
            return fail(ld, path, "\"content\": expected a non-empty string");
        struct tok_added *ad = &tok->added[i];
        ad->id = (int32_t)json_integer_value(id);
        ad->len = (uint32_t)json_string_length(c);
        ad->content = arena_dup(tok, json_string_value(c), ad->len);
        if (!ad->content) return fail(ld, path, "out of memory");
        tok->added_key[i] = ad->content;
        tok->added_keylen[i] = ad->len;
        if (get_bool(ld, t, "special", path, false, &ad->special) ||
            get_bool(ld, t, "lstrip", path, false, &ad->lstrip) ||
            get_bool(ld, t, "rstrip", path, false, &ad->rstrip) ||
            get_bool(ld, t, "single_word", path, false, &ad->single_word) ||
            get_bool(ld, t, "normalized", path, !ad->special, &ad->normalized))
            return -1;
    }
    *n_out = n;
    return 0;
}

/* Sets id_bytes: what each id decodes to (Hugging Face: added content takes
 * precedence over the model's token; the ByteLevel decoder maps a token
 * whose characters are all byte characters to those bytes, and keeps any
 * other token as its UTF-8 text). */
static int build_decode_table(struct loader *ld)
{
    struct tokenizer *tok = ld->tok;
    char *tmp = NULL;
    size_t tmpcap = 0;
    for (int id = 0; id < tok->n_vocab; id++) {
        if (!tok->id_str[id]) continue;
        const char *s = tok->id_str[id];
        size_t n = tok->id_len[id];
        if (n > tmpcap) {
            tmpcap = n * 2;
            char *t = realloc(tmp, tmpcap);
            if (!t) break;
            tmp = t;
        }
        long k = tok->decoder_byte_level ? bytelevel_unmap(s, n, tmp) : -1;
        if (k >= 0) {
            tok->id_bytes[id] = arena_dup(tok, tmp, (size_t)k);
            tok->id_nbytes[id] = (uint32_t)k;
        } else {
            tok->id_bytes[id] = tok->id_str[id];
            tok->id_nbytes[id] = (uint32_t)n;
        }
        if (!tok->id_bytes[id]) break;
    }
    free(tmp);
    for (int i = 0; i < tok->n_added; i++) {
        struct tok_added *ad = &tok->added[i];
        if (ad->duplicate) continue;
        char *t = malloc(ad->len + 1);
        if (!t) return fail(ld, "added_tokens", "out of memory");
        long k = tok->decoder_byte_level ? bytelevel_unmap(ad->content, ad->len, t) : -1;
        tok->id_bytes[ad->id] = k >= 0 ? arena_dup(tok, t, (size_t)k) : ad->content;
        tok->id_nbytes[ad->id] = k >= 0 ? (uint32_t)k : ad->len;
        free(t);
        if (!tok->id_bytes[ad->id]) return fail(ld, "added_tokens", "out of memory");
    }
    return 0;
}

/* The model vocabulary indexed by its decoded bytes, for ignore_merges on
 * byte-level tokenizers (a pre-token that is a whole vocab entry). */
static int build_vocab_bytes(struct loader *ld, char **keys, uint32_t *lens)
{
    struct tokenizer *tok = ld->tok;
    if (tok_idmap_init(&tok->vocab_bytes, (size_t)tok->n_vocab))
        return fail(ld, "model.vocab", "out of memory");
    char *tmp = NULL;
    size_t tmpcap = 0;
    for (int id = 0; id < tok->n_vocab; id++) {
        if (!keys[id]) continue;
        size_t n = tok->id_len[id];
        if (n > tmpcap) {
            tmpcap = n * 2;
            char *t = realloc(tmp, tmpcap);
            if (!t) {
                free(tmp);
                return fail(ld, "model.vocab", "out of memory");
            }
            tmp = t;
        }
        long k = bytelevel_unmap(tok->id_str[id], n, tmp);
        if (k < 0) {
            keys[id] = NULL;
            continue;
        }
        keys[id] = arena_dup(tok, tmp, (size_t)k);
        lens[id] = (uint32_t)k;
        if (!keys[id]) {
            free(tmp);
            return fail(ld, "model.vocab", "out of memory");
        }
        tok_idmap_put(&tok->vocab_bytes, keys, lens, id);
    }
    free(tmp);
    return 0;
}

static int parse_model(struct loader *ld, json_t *root, json_t *added_json)
{
    struct tokenizer *tok = ld->tok;
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) return fail(ld, "model", "expected an object");
    json_t *type = json_object_get(model, "type");
    if (type && !json_is_null(type)) {
        if (!json_is_string(type)) return fail(ld, "model.type", "expected a string");
        if (strcmp(json_string_value(type), "BPE"))
            return fail(ld, "model.type", "unsupported model type \"%s\" (only BPE is supported)",
                        json_string_value(type));
    }
    json_t *vocab = json_object_get(model, "vocab");
    if (!json_is_object(vocab)) return fail(ld, "model.vocab", "expected an object");
    json_t *merges = json_object_get(model, "merges");
    if (!merges) return fail(ld, "model.merges", "missing");
    if (!json_is_array(merges)) return fail(ld, "model.merges", "expected an array");

    json_t *d = json_object_get(model, "dropout");
    if (d && !json_is_null(d) && !(json_is_number(d) && json_number_value(d) == 0.0))
        return fail(ld, "model.dropout", "BPE dropout is not supported");
    const char *unsup[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(model, unsup[i]);
        if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0)) {
            char p[64];
            snprintf(p, sizeof p, "model.%s", unsup[i]);
            return fail(ld, p, "not supported (must be null)");
        }
    }
    if (get_bool(ld, model, "ignore_merges", "model", false, &tok->ignore_merges) ||
        get_bool(ld, model, "byte_fallback", "model", false, &tok->byte_fallback) ||
        get_bool(ld, model, "fuse_unk", "model", false, &tok->fuse_unk))
        return -1;

    /* Size the id tables. */
    long max_id = -1;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 ||
            json_integer_value(val) >= TOK_MAX_ID) {
            char p[200];
            snprintf(p, sizeof p, "model.vocab[\"%.150s\"]", key);
            return fail(ld, p, "expected an integer id in [0, %d)", TOK_MAX_ID);
        }
        if (json_integer_value(val) > max_id) max_id = (long)json_integer_value(val);
    }
    /* Added tokens get ids up to vocab entries + added tokens - 1. */
    long vocab_count = (long)json_object_size(vocab);
    if (vocab_count + tok->n_added - 1 > max_id) max_id = vocab_count + tok->n_added - 1;
    (void)added_json;
    tok->n_vocab = (int)(max_id + 1);
    size_t nv = (size_t)tok->n_vocab + 1;
    tok->id_str = calloc(nv, sizeof *tok->id_str);
    tok->id_len = calloc(nv, sizeof *tok->id_len);
    tok->id_bytes = calloc(nv, sizeof *tok->id_bytes);
    tok->id_nbytes = calloc(nv, sizeof *tok->id_nbytes);
    if (!tok->id_str || !tok->id_len || !tok->id_bytes || !tok->id_nbytes ||
        tok_idmap_init(&tok->vocab, json_object_size(vocab)))
        return fail(ld, "model.vocab", "out of memory");
    void *it;
    for (it = json_object_iter(vocab); it; it = json_object_iter_next(vocab, it)) {
        const char *k = json_object_iter_key(it);
        size_t kn = json_object_iter_key_len(it);
        int32_t id = (int32_t)json_integer_value(json_object_iter_value(it));
        if (set_id_string(ld, id, k, kn)) return -1;
        tok_idmap_put(&tok->vocab, tok->id_str, tok->id_len, id);
    }
    /* Ids of the added tokens, assigned as Hugging Face does when it loads
     * the file (AddedVocabulary::add_tokens; the "id" members are only
     * checked there): a token in the model vocabulary keeps that id, the
     * others are numbered on from the vocabulary's size; a repeated content
     * keeps its first entry. */
    if (tok_idmap_init(&tok->added_map, (size_t)tok->n_added))
        return fail(ld, "added_tokens", "out of memory");
    long max_added = -1, top = -1;
    for (int i = 0; i < tok->n_added; i++) {
        struct tok_added *ad = &tok->added[i];
        int32_t first = tok_idmap_get(&tok->added_map, tok->added_key, tok->added_keylen,
                                      ad->content, ad->len);
        if (first >= 0) {
            ad->id = tok->added[first].id;
            ad->duplicate = true;
            continue;
        }
        tok_idmap_put(&tok->added_map, tok->added_key, tok->added_keylen, i);
        int32_t id = vocab_id(ld, ad->content, ad->len);
        if (id < 0)
            id = (int32_t)(max_added < 0 ? vocab_count
                           : (max_added >= vocab_count || vocab_count == 0) ? max_added + 1
                           : vocab_count);
        ad->id = id;
        if (id > max_added) max_added = id;
    }
    for (long id = 0; id < tok->n_vocab; id++)
        if (tok->id_str[id]) top = id;
    if (max_added > top) top = max_added;
    tok->n_vocab = (int)(top + 1);
    for (int i = 0; i < tok->n_added; i++) {
        struct tok_added *ad = &tok->added[i];
        if (!tok->id_str[ad->id]) {
            tok->id_str[ad->id] = ad->content;
            tok->id_len[ad->id] = ad->len;
        }
    }

    json_t *unk = json_object_get(model, "unk_token");
    tok->unk_id = -1;
    if (unk && !json_is_null(unk)) {
        if (!json_is_string(unk)) return fail(ld, "model.unk_token", "expected a string or null");
        tok->unk_id = vocab_id(ld, json_string_value(unk), json_string_length(unk));
        if (tok->unk_id < 0)
            return fail(ld, "model.unk_token", "\"%s\" is not in the vocabulary",
                        json_string_value(unk));
    }
    return parse_merges(ld, merges);
}

void tok_free(struct tokenizer *tok)
{
    if (!tok) return;
    free(tok->id_str);
    free(tok->id_len);
    free(tok->id_bytes);
    free(tok->id_nbytes);
    tok_idmap_free(&tok->vocab);
    tok_idmap_free(&tok->vocab_bytes);
    free(tok->vb_key);
    free(tok->vb_len);
    tok_merges_free(&tok->merges);
    free(tok->added);
    free(tok->added_key);
    free(tok->added_keylen);
    free(tok->special);
    tok_idmap_free(&tok->added_map);
    tok_trie_free(&tok->trie_raw);
    tok_trie_free(&tok->trie_norm);
    free(tok->norm);
    for (int i = 0; i < tok->n_pre; i++) {
        pcre2_code_free(tok->pre[i].re);
        pcre2_code_free(tok->pre[i].re_fast);
    }
    free(tok->pre);
    tok_cache_free(&tok->cache);
    pthread_mutex_destroy(&tok->cache_lock);
    while (tok->arena) {
        struct tok_chunk *c = tok->arena;
        tok->arena = c->next;
        free(c);
    }
    free(tok);
}

static int build_added(struct loader *ld)
{
    struct tokenizer *tok = ld->tok;
    tok->special = calloc((size_t)tok->n_vocab + 1, 1);
    if (!tok->special) return fail(ld, "added_tokens", "out of memory");
    for (int i = 0; i < tok->n_added; i++) {
        struct tok_added *ad = &tok->added[i];
        if (ad->duplicate) continue;
        tok->special[ad->id] = ad->special;
        char path[64];
        snprintf(path, sizeof path, "added_tokens[%d]", i);
        if (!ad->normalized) {
            if (tok_trie_add(&tok->trie_raw, ad->content, ad->len, i))
                return fail(ld, path, "out of memory");
            continue;
        }
        /* Normalized tokens are matched on normalized text, in a second pass
         * over what the raw tokens left (even with an empty normalizer). */
        char *norm;
        size_t nn;
        if (tok_normalize(tok, ad->content, ad->len, &norm, &nn))
            return fail(ld, path, "cannot normalize the content");
        int rc = tok_trie_add(&tok->trie_norm, norm ? norm : ad->content, nn, i);
        free(norm);
        if (rc) return fail(ld, path, "out of memory");
    }
    return 0;
}

struct tokenizer *tok_load(const char *path, char *err, size_t errlen)
{
    pthread_once(&bytes_once, bytes_build);
    if (err && errlen) err[0] = 0;
    struct loader ld = {path, err, errlen, NULL};
    /* Read whole, then parse: json_load_file reads a byte at a time. */
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (err) snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (cap - len < 65536) {
            cap = cap ? cap * 2 : 1 << 20;
            char *nt = realloc(text, cap);
            if (!nt) break;
            text = nt;
        }
        size_t r = fread(text + len, 1, cap - len, f);
        len += r;
        if (r == 0) break;
    }
    bool read_ok = !ferror(f) && text;
    fclose(f);
    if (!read_ok) {
        free(text);
        if (err) snprintf(err, errlen, "%s: cannot read the file", path);
        return NULL;
    }
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_ALLOW_NUL, &je);
    free(text);
    if (!root) {
        if (err) snprintf(err, errlen, "%s: line %d column %d: %s", path, je.line, je.column, je.text);
        return NULL;
    }
    struct tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) {
        json_decref(root);
        fail(&ld, "(root)", "out of memory");
        return NULL;
    }
    pthread_mutex_init(&tok->cache_lock, NULL);
    ld.tok = tok;
    if (!json_is_object(root)) {
        fail(&ld, "(root)", "expected an object");
        goto bad;
    }
    json_t *added = json_object_get(root, "added_tokens");
    size_t n_added = 0;
    if (added && !json_is_null(added)) {
        if (!json_is_array(added)) {
            fail(&ld, "added_tokens", "expected an array");
            goto bad;
        }
        if (parse_added(&ld, added, &n_added)) goto bad;
    }
    tok->n_added = (int)n_added;
    if (parse_model(&ld, root, added)) goto bad;

    json_t *norm = json_object_get(root, "normalizer");
    if (norm && parse_normalizer(&ld, norm, "normalizer")) goto bad;
    if (tok->n_norm) tok_norm_prepare();
    json_t *pre = json_object_get(root, "pre_tokenizer");
    if (pre && parse_pretok(&ld, pre, "pre_tokenizer")) goto bad;
    tok_new16_prepare();
    for (int i = 0; i < tok->n_pre; i++) {
        if (tok->pre[i].kind == TOK_PRE_BYTELEVEL && i != tok->n_pre - 1) {
            fail(&ld, "pre_tokenizer",
                 "ByteLevel must be the last pre-tokenizer (others after it are not supported)");
            goto bad;
        }
    }
    tok->byte_level = tok->n_pre > 0 && tok->pre[tok->n_pre - 1].kind == TOK_PRE_BYTELEVEL;

    json_t *dec = json_object_get(root, "decoder");
    if (dec && !json_is_null(dec)) {
        const char *type = json_is_object(dec) ? type_of(&ld, dec, "decoder") : NULL;
        if (!json_is_object(dec)) {
            fail(&ld, "decoder", "expected an object or null");
            goto bad;
        }
        if (!type) goto bad;
        if (strcmp(type, "ByteLevel")) {
            fail(&ld, "decoder.type", "unsupported decoder \"%s\" (supported: ByteLevel)", type);
            goto bad;
        }
        tok->decoder_byte_level = true;
    }

    for (int b = 0; b < 256; b++)
        tok->byte_id[b] = vocab_id(&ld, byte_char[b], byte_char_len[b]);
    if (build_decode_table(&ld) || build_added(&ld)) goto bad;
    if (tok->byte_level && tok->ignore_merges) {
        char **keys = calloc((size_t)tok->n_vocab + 1, sizeof *keys);
        uint32_t *lens = calloc((size_t)tok->n_vocab + 1, sizeof *lens);
        if (!keys || !lens) {
            free(keys);
            free(lens);
            fail(&ld, "model.vocab", "out of memory");
            goto bad;
        }
        for (int id = 0; id < tok->n_vocab; id++)
            if (tok->id_str[id] &&
                tok_idmap_get(&tok->vocab, tok->id_str, tok->id_len, tok->id_str[id],
                              tok->id_len[id]) == id)
                keys[id] = tok->id_str[id];
        int rc = build_vocab_bytes(&ld, keys, lens);
        /* The map keeps pointing at keys/lens: they become the tables. */
        if (rc) {
            free(keys);
            free(lens);
            goto bad;
        }
        tok->vb_key = keys;
        tok->vb_len = lens;
    }
    json_decref(root);
    return tok;
bad:
    json_decref(root);
    tok_free(tok);
    return NULL;
}

/* ---- encode ---- */

/* Offset where the trailing whitespace of s[0..n) starts. */
static size_t ws_start_at_end(const char *s, size_t n)
{
    size_t j = n;
    while (j > 0) {
        size_t k = j - 1;
        while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
        size_t cl = tok_utf8_char_len((const unsigned char *)s + k, j - k);
        if (!cl || !tok_cp_is_whitespace(tok_utf8_decode((const unsigned char *)s + k, cl)))
            break;
        j = k;
    }
    return j;
}

/* Length of the leading whitespace of s[0..n). */
static size_t ws_len_at_start(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t cl = tok_utf8_char_len((const unsigned char *)s + i, n - i);
        if (!cl || !tok_cp_is_whitespace(tok_utf8_decode((const unsigned char *)s + i, cl)))
            break;
        i += cl;
    }
    return i;
}

static bool cp_is_word(int32_t cp)
{
    if (cp < 0x80) return (cp >= '0' && cp <= '9') || ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z');
    return tok_cp_is_alnum(cp);
}

static int encode_normal(struct tok_enc *e, const char *s, size_t n, bool normalized);

/* Hugging Face's AddedVocabulary::split_with_indices: leftmost-longest
 * matches of the trie's tokens, with their single_word/lstrip/rstrip rules;
 * the text between matches goes on through encode_normal. */
static int added_split(struct tok_enc *e, const struct tok_trie *t, const char *s, size_t n,
                       bool normalized)
{
    const struct tokenizer *tok = e->tok;
    size_t start_offset = 0, i = 0;
    while (i < n) {
        uint8_t c = (uint8_t)s[i];
        if (!(t->first[c >> 3] & (1u << (c & 7)))) {
            i++;
            continue;
        }
        size_t mlen = 0;
        int a = tok_trie_match(t, s + i, n - i, &mlen);
        if (a < 0) {
            i++;
            continue;
        }
        const struct tok_added *ad = &tok->added[a];
        size_t start = i, stop = i + mlen;
        i = stop;
        if (ad->single_word) {
            bool before = false, after = false;
            if (start > 0) {
                size_t k = start - 1;
                while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
                size_t cl = tok_utf8_char_len((const unsigned char *)s + k, start - k);
                before = cl && cp_is_word(tok_utf8_decode((const unsigned char *)s + k, cl));
            }
            if (stop < n) {
                size_t cl = tok_utf8_char_len((const unsigned char *)s + stop, n - stop);
                after = cl && cp_is_word(tok_utf8_decode((const unsigned char *)s + stop, cl));
            }
            if (before || after) continue;
        }
        if (ad->lstrip) {
            size_t ns = ws_start_at_end(s, start);
            start = ns > start_offset ? ns : start_offset;
        }
        if (ad->rstrip) stop += ws_len_at_start(s + stop, n - stop);
        if (start_offset < start && encode_normal(e, s + start_offset, start - start_offset, normalized))
            return -1;
        if (tok_ids_push(&e->out, ad->id)) return -1;
        start_offset = stop;
    }
    if (start_offset < n) return encode_normal(e, s + start_offset, n - start_offset, normalized);
    return 0;
}

/* A piece of text that is not an added token: on raw text, normalize it and
 * look for normalized added tokens; on normalized text, pre-tokenize it. */
static int encode_normal(struct tok_enc *e, const char *s, size_t n, bool normalized)
{
    const struct tokenizer *tok = e->tok;
    if (normalized) return tok_pretok_run(e, 0, s, n);
    char *norm;
    size_t nn;
    if (tok_normalize(tok, s, n, &norm, &nn)) return -1;
    const char *p = norm ? norm : s;
    e->exact = tok_has_new16(p, nn);
    int rc = tok->trie_norm.n ? added_split(e, &tok->trie_norm, p, nn, true)
                              : tok_pretok_run(e, 0, p, nn);
    free(norm);
    return rc;
}

int tok_encode(const struct tokenizer *tok, const char *text, size_t len, int32_t **ids)
{
    *ids = NULL;
    struct tok_enc e = {.tok = tok};
    struct tokenizer *mut = (struct tokenizer *)tok;   /* the cache only */
    bool locked = pthread_mutex_trylock(&mut->cache_lock) == 0;
    e.cache = locked ? &mut->cache : NULL;
    e.md = pcre2_match_data_create(1, NULL);
    int rc = e.md ? 0 : -1;
    size_t i = 0;
    while (!rc && i < len) {
        size_t j = i;
        while (j < len) {
            if ((unsigned char)text[j] < 0x80) {
                j++;
                continue;
            }
            size_t cl = tok_utf8_char_len((const unsigned char *)text + j, len - j);
            if (!cl) break;
            j += cl;
        }
        if (j > i) rc = tok->trie_raw.n ? added_split(&e, &tok->trie_raw, text + i, j - i, false)
                                        : encode_normal(&e, text + i, j - i, false);
        if (!rc && j < len) {
            int32_t id = tok->byte_id[(unsigned char)text[j]];
            if (id >= 0) rc = tok_ids_push(&e.out, id);
            j++;
        }
        i = j;
    }
    if (locked) pthread_mutex_unlock(&mut->cache_lock);
    pcre2_match_data_free(e.md);
    free(e.sym);
    free(e.heap);
    if (!rc && e.out.n > INT_MAX) rc = -1;
    if (!rc && !e.out.v) rc = tok_ids_push(&e.out, 0) ? -1 : (e.out.n = 0, 0);
    if (rc) {
        free(e.out.v);
        return -1;
    }
    *ids = e.out.v;
    return (int)e.out.n;
}

/* ---- decode ---- */

const char *tok_token_bytes(const struct tokenizer *tok, int32_t id, size_t *n_out)
{
    if (id < 0 || id >= tok->n_vocab || !tok->id_bytes[id]) return NULL;
    *n_out = tok->id_nbytes[id];
    return tok->id_bytes[id];
}

char *tok_decode_bytes(const struct tokenizer *tok, const int32_t *ids, size_t n, size_t *len)
{
    size_t total = 1;
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < tok->n_vocab && tok->id_bytes[ids[i]])
            total += tok->id_nbytes[ids[i]] + 1;
    char *out = malloc(total);
    if (!out) return NULL;
    size_t k = 0;
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= tok->n_vocab || !tok->id_bytes[id]) continue;
        if (!tok->decoder_byte_level && !first) out[k++] = ' ';
        memcpy(out + k, tok->id_bytes[id], tok->id_nbytes[id]);
        k += tok->id_nbytes[id];
        first = false;
    }
    out[k] = 0;
    if (len) *len = k;
    return out;
}

size_t tok_utf8_lossy(const char *s, size_t n, char *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        size_t cl = tok_utf8_char_len((const unsigned char *)s + i, n - i);
        if (cl) {
            memcpy(out + k, s + i, cl);
            k += cl;
            i += cl;
        } else {
            memcpy(out + k, "\xEF\xBF\xBD", 3);
            k += 3;
            i += tok_utf8_invalid_len((const unsigned char *)s + i, n - i);
        }
    }
    return k;
}

char *tok_decode(const struct tokenizer *tok, const int32_t *ids, size_t n, size_t *len)
{
    size_t rn;
    char *raw = tok_decode_bytes(tok, ids, n, &rn);
    if (!raw) return NULL;
    /* Each invalid byte grows to at most 3 bytes (U+FFFD). */
    char *out = malloc(rn * 3 + 1);
    if (!out) {
        free(raw);
        return NULL;
    }
    size_t k = tok_utf8_lossy(raw, rn, out);
    out[k] = 0;
    free(raw);
    if (len) *len = k;
    return out;
}

const char *tok_id_bytes(const struct tokenizer *tok, int32_t id, size_t *len)
{
    if (id < 0 || id >= tok->n_vocab || !tok->id_bytes[id]) return NULL;
    *len = tok->id_nbytes[id];
    return tok->id_bytes[id];
}

bool tok_decoder_joins_with_space(const struct tokenizer *tok)
{
    return !tok->decoder_byte_level;
}

int tok_vocab_size(const struct tokenizer *tok)
{
    return tok->n_vocab;
}

int tok_token_id(const struct tokenizer *tok, const char *token)
{
    size_t n = strlen(token);
    int32_t a = tok_idmap_get(&tok->added_map, tok->added_key, tok->added_keylen, token, n);
    if (a >= 0) return tok->added[a].id;
    return tok_idmap_get(&tok->vocab, tok->id_str, tok->id_len, token, n);
}

bool tok_is_special(const struct tokenizer *tok, int32_t id)
{
    return id >= 0 && id < tok->n_vocab && tok->special[id];
}

/* ---- aha's byte-level tokenizer ---- */

static const char *const BYTELEVEL_SPECIAL[] = {
    "<|endoftext|>", "<think>", "</think>", "<answer>", "</answer>", "<|im_start|>", "<|im_end|>",
};

int tok_write_bytelevel(const char *path, char *err, size_t errlen)
{
    pthread_once(&bytes_once, bytes_build);
    json_t *root = json_object();
    json_t *added = json_array();
    for (int i = 0; i < 7; i++) {
        json_array_append_new(added, json_pack("{s:i,s:s,s:b,s:b,s:b,s:b,s:b}",
            "id", 256 + i, "content", BYTELEVEL_SPECIAL[i], "single_word", 0, "lstrip", 0,
            "rstrip", 0, "normalized", 0, "special", 1));
    }
    json_t *vocab = json_object();
    for (int b = 0; b < 256; b++) {
        char k[4];
        memcpy(k, byte_char[b], byte_char_len[b]);
        k[byte_char_len[b]] = 0;
        json_object_set_new(vocab, k, json_integer(b));
    }
    json_t *bl = json_pack("{s:s,s:b,s:b,s:b}", "type", "ByteLevel", "add_prefix_space", 0,
                           "trim_offsets", 1, "use_regex", 0);
    json_t *model = json_pack("{s:s,s:n,s:n,s:n,s:n,s:b,s:b,s:b,s:o,s:[]}",
        "type", "BPE", "dropout", "unk_token", "continuing_subword_prefix",
        "end_of_word_suffix", "fuse_unk", 0, "byte_fallback", 0, "ignore_merges", 0,
        "vocab", vocab, "merges");
    json_object_set_new(root, "version", json_string("1.0"));
    json_object_set_new(root, "truncation", json_null());
    json_object_set_new(root, "padding", json_null());
    json_object_set_new(root, "added_tokens", added);
    json_object_set_new(root, "normalizer", json_null());
    json_object_set_new(root, "pre_tokenizer", bl);
    json_object_set_new(root, "post_processor", json_null());
    json_object_set_new(root, "decoder", json_deep_copy(bl));
    json_object_set_new(root, "model", model);
    int rc = 0;
    if (!model || !bl || json_dump_file(root, path, JSON_INDENT(1))) {
        if (err) snprintf(err, errlen, "%s: cannot write the tokenizer", path);
        rc = -1;
    }
    json_decref(root);
    return rc;
}
