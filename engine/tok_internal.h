/* engine/tok_internal.h — the tokenizer's private structures, shared by
 * tokenizer.c (loading, encode/decode pipeline), tok_bpe.c (hash maps, BPE
 * merges, word cache) and tok_pretok.c (normalizers, pre-tokenizers,
 * added-token matching). Not for use outside the tok_ files. */
#ifndef AHA_TOK_INTERNAL_H
#define AHA_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* Growable array of int32 ids. */
struct tok_ids {
    int32_t *v;
    size_t n, cap;
};
int tok_ids_push(struct tok_ids *a, int32_t id);
int tok_ids_append(struct tok_ids *a, const int32_t *ids, size_t n);

/* Open-addressing index of ids by a string key; the keys live outside (one
 * per id, in keys[id]/lens[id]), the table only holds id+1 per slot. */
struct tok_idmap {
    int32_t *slot;
    uint32_t mask;
};
uint64_t tok_hash(const void *p, size_t n);
int tok_idmap_init(struct tok_idmap *m, size_t n_keys);
void tok_idmap_free(struct tok_idmap *m);
/* Inserts id (its key must already be in keys/lens); an existing equal key
 * is replaced. */
void tok_idmap_put(struct tok_idmap *m, char *const *keys, const uint32_t *lens,
                   int32_t id);
int32_t tok_idmap_get(const struct tok_idmap *m, char *const *keys,
                      const uint32_t *lens, const char *k, size_t n);

/* BPE merges: (left id, right id) -> (rank, merged id). */
struct tok_merges {
    uint64_t *key;      /* (left << 32 | right) + 1; 0 = empty slot */
    uint32_t *rank;
    int32_t *merged;
    uint32_t mask;
    size_t n;
};
int tok_merges_init(struct tok_merges *m, size_t n);
void tok_merges_free(struct tok_merges *m);
void tok_merges_put(struct tok_merges *m, int32_t a, int32_t b, uint32_t rank,
                    int32_t merged);

/* Word cache: pre-token bytes -> ids. Bounded; cleared when full. */
struct tok_cache {
    uint64_t *slot;     /* hash high bits | entry index + 1 */
    uint32_t mask;
    struct tok_cache_entry {
        uint32_t key_off, key_len, ids_off, n_ids;
    } *ent;
    size_t n_ent, cap_ent;
    char *keys;
    size_t keys_n, keys_cap;
    int32_t *ids;
    size_t ids_n, ids_cap;
};
#define TOK_CACHE_MAX_ENTRIES 65536
#define TOK_CACHE_MAX_WORD 128      /* longer words are not cached (bytes) */
#define TOK_MAX_WORD ((size_t)1 << 30) /* longest pre-token BPE accepts (bytes) */
void tok_cache_free(struct tok_cache *c);
/* Returns the cached ids of word (and their count in *n) or NULL. */
const int32_t *tok_cache_get(const struct tok_cache *c, const char *w, size_t len,
                             uint64_t h, size_t *n);
void tok_cache_put(struct tok_cache *c, const char *w, size_t len, uint64_t h,
                   const int32_t *ids, size_t n);

enum tok_norm_kind { TOK_NORM_NFC, TOK_NORM_NFD, TOK_NORM_NFKC, TOK_NORM_NFKD };

enum tok_split_behavior {
    TOK_SPLIT_ISOLATED, TOK_SPLIT_REMOVED, TOK_SPLIT_MERGED_WITH_PREVIOUS,
    TOK_SPLIT_MERGED_WITH_NEXT, TOK_SPLIT_CONTIGUOUS,
};

enum tok_pretok_kind { TOK_PRE_SPLIT, TOK_PRE_BYTELEVEL, TOK_PRE_DIGITS };

struct tok_pretok {
    enum tok_pretok_kind kind;
    /* Split (and ByteLevel with use_regex, which uses the GPT-2 regex) */
    pcre2_code *re;             /* exact: Unicode 16 classes */
    pcre2_code *re_fast;        /* PCRE2's classes: same pieces on text without
                                 * code points new since Unicode 14 (or NULL) */
    bool jit, jit_fast;         /* JIT-compiled */
    enum tok_split_behavior behavior;
    bool invert;
    /* ByteLevel */
    bool add_prefix_space;
    /* Digits */
    bool individual_digits;
};

struct tok_added {
    char *content;
    uint32_t len;
    int32_t id;
    bool special, lstrip, rstrip, single_word, normalized;
    bool duplicate;             /* same content as an earlier entry: ignored */
};

/* Trie of added-token strings for leftmost-longest matching. */
struct tok_trie {
    struct tok_trie_node {
        int32_t first_child, next_sibling;
        int32_t added;          /* index into tok->added, or -1 */
        uint8_t byte;
    } *node;
    size_t n, cap;
    uint8_t first[32];          /* bitmap of bytes that start a token */
};

struct tokenizer {
    /* Vocabulary, indexed by id (model vocab and added tokens). */
    int n_vocab;                /* max id + 1 */
    char **id_str;              /* token string as in tokenizer.json, or NULL */
    uint32_t *id_len;
    char **id_bytes;            /* what the id decodes to */
    uint32_t *id_nbytes;
    struct tok_idmap vocab;     /* model vocab: string -> id */
    struct tok_idmap vocab_bytes; /* model vocab: decoded bytes -> id (byte level, */
    char **vb_key;              /* ignore_merges only), over vb_key/vb_len */
    uint32_t *vb_len;
    struct tok_merges merges;
    int32_t byte_id[256];       /* id of the byte-level token of each byte, or -1 */

    /* BPE options */
    bool ignore_merges;
    bool byte_fallback;
    bool fuse_unk;
    int32_t unk_id;             /* -1 when none */

    /* Added tokens */
    struct tok_added *added;
    int n_added;
    char **added_key;           /* added[i].content, for added_map */
    uint32_t *added_keylen;
    struct tok_idmap added_map; /* content -> index into added */
    bool *special;              /* per id: an added token marked special */
    struct tok_trie trie_raw;   /* tokens with normalized=false, on raw text */
    struct tok_trie trie_norm;  /* normalized=true, on normalized text */

    /* Normalizer: a flattened sequence. */
    enum tok_norm_kind *norm;
    int n_norm;

    /* Pre-tokenizer: a flattened sequence. */
    struct tok_pretok *pre;
    int n_pre;
    bool byte_level;            /* pre-tokenizer ends with ByteLevel */
    bool decoder_byte_level;    /* decoder is ByteLevel (else tokens joined by " ") */

    /* All strings above live in these chunks. */
    struct tok_chunk { struct tok_chunk *next; size_t used, cap; char data[]; } *arena;

    /* Word cache, used by one encoder at a time (others skip it). */
    pthread_mutex_t cache_lock;
    struct tok_cache cache;
};

/* Encoder state of one tok_encode call. */
struct tok_enc {
    const struct tokenizer *tok;
    struct tok_cache *cache;    /* NULL when another thread holds it */
    struct tok_ids out;
    /* BPE scratch */
    struct tok_sym { int32_t id, prev, next, len; } *sym;
    size_t sym_cap;
    struct tok_heap_item { uint32_t rank, pos; int32_t merged; } *heap;
    pcre2_match_data *md;
    bool exact;                 /* the text needs the exact regexes */
};

/* BPE of one pre-token (bytes, before the byte-level mapping); appends ids. */
int tok_bpe_word(struct tok_enc *e, const char *w, size_t n);
/* Pre-tokenizes one normalized piece from pre-tokenizer stage `stage` on
 * and runs BPE on each final piece. */
int tok_pretok_run(struct tok_enc *e, int stage, const char *p, size_t n);
/* Normalizes s[0..n) with tok's normalizer: *out gets a new malloc'd string
 * (caller frees) and *out_n its length, or *out = NULL when s is unchanged.
 * Returns 0 or -1. tok_norm_prepare must have run (tok_load does it). */
int tok_normalize(const struct tokenizer *tok, const char *s, size_t n, char **out,
                  size_t *out_n);
void tok_norm_prepare(void);
/* Compiles a Split pattern (a regex, or a literal string) with UTF and UCP,
 * JIT-compiled when available, into pt->re (and pt->re_fast). Returns 0, or
 * -1 with err filled. */
int tok_regex_compile(struct tok_pretok *pt, const char *pattern, size_t len, bool literal,
                      char *err, size_t errlen);
/* Whether s holds a code point assigned since Unicode 14 (which the exact
 * regexes must see); tok_new16_prepare must have run (tok_load does it). */
bool tok_has_new16(const char *s, size_t n);
void tok_new16_prepare(void);
/* Length of the maximal invalid subpart at s (at least 1): the bytes that
 * decode to one U+FFFD, as Rust's String::from_utf8_lossy replaces them. */
size_t tok_utf8_invalid_len(const unsigned char *s, size_t n);
/* Rust's char::is_whitespace (the White_Space property). */
bool tok_cp_is_whitespace(int32_t cp);
/* Letter or number (general category L* or N*), for single_word tokens. */
bool tok_cp_is_alnum(int32_t cp);
/* Copies s[0..n) to out replacing each maximal invalid UTF-8 subpart with
 * U+FFFD (out needs 3n bytes); returns the length written. */
size_t tok_utf8_lossy(const char *s, size_t n, char *out);

/* Added-token trie */
void tok_trie_free(struct tok_trie *t);
int tok_trie_add(struct tok_trie *t, const char *s, size_t n, int32_t added);
/* Longest added token starting at s (within n bytes): its index in
 * tok->added and length in *len, or -1. */
int tok_trie_match(const struct tok_trie *t, const char *s, size_t n, size_t *len);

/* Length of the valid UTF-8 character at s (1..4), or 0 when invalid or
 * truncated. */
size_t tok_utf8_char_len(const unsigned char *s, size_t n);
/* Decodes one valid UTF-8 character (as validated by tok_utf8_char_len). */
int32_t tok_utf8_decode(const unsigned char *s, size_t len);

/* Code points with general category cat (two letters, e.g. "Lo") in
 * Unicode 16.0 that did not have it in 14.0, as PCRE2 class items, or NULL
 * for an unknown category (generated: tok_unicode.c). */
const char *tok_unicode_added(const char *cat, size_t n);

/* GPT-2's bytes_to_unicode(): the code point that stands for byte b. */
int tok_byte_to_cp(int b);

#endif
