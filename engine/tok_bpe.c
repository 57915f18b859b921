/* engine/tok_bpe.c — byte-pair encoding of one pre-token by merge rank (the
 * algorithm of Hugging Face tokenizers' Word::merge_all: a min-heap of
 * (rank, position) over a linked list of symbols, O(n log n) per word), and
 * the hash maps and word cache it uses. Pre-tokenization is elsewhere. */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

int tok_ids_push(struct tok_ids *a, int32_t id)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 256;
        int32_t *v = realloc(a->v, cap * sizeof *v);
        if (!v) return -1;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = id;
    return 0;
}

int tok_ids_append(struct tok_ids *a, const int32_t *ids, size_t n)
{
    if (a->n + n > a->cap) {
        size_t cap = a->cap ? a->cap : 256;
        while (cap < a->n + n) cap *= 2;
        int32_t *v = realloc(a->v, cap * sizeof *v);
        if (!v) return -1;
        a->v = v;
        a->cap = cap;
    }
    memcpy(a->v + a->n, ids, n * sizeof *ids);
    a->n += n;
    return 0;
}

/* A multiply-xorshift hash over 8-byte chunks (wyhash-like mixing). */
static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ULL;
    x ^= x >> 32;
    return x;
}

uint64_t tok_hash(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (n * 0xff51afd7ed558ccdULL);
    while (n >= 8) {
        uint64_t k;
        memcpy(&k, s, 8);
        h = mix64(h ^ k) * 0x9e3779b97f4a7c15ULL;
        s += 8;
        n -= 8;
    }
    if (n) {
        uint64_t k = 0;
        memcpy(&k, s, n);
        h = mix64(h ^ k ^ ((uint64_t)n << 59)) * 0x9e3779b97f4a7c15ULL;
    }
    return mix64(h);
}

static uint32_t pow2_at_least(size_t n)
{
    uint32_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

int tok_idmap_init(struct tok_idmap *m, size_t n_keys)
{
    uint32_t cap = pow2_at_least(n_keys * 2 + 1);
    m->slot = calloc(cap, sizeof *m->slot);
    m->mask = cap - 1;
    return m->slot ? 0 : -1;
}

void tok_idmap_free(struct tok_idmap *m)
{
    free(m->slot);
    m->slot = NULL;
}

void tok_idmap_put(struct tok_idmap *m, char *const *keys, const uint32_t *lens,
                   int32_t id)
{
    uint32_t i = (uint32_t)tok_hash(keys[id], lens[id]) & m->mask;
    for (;; i = (i + 1) & m->mask) {
        int32_t s = m->slot[i];
        if (s == 0) {
            m->slot[i] = id + 1;
            return;
        }
        if (lens[s - 1] == lens[id] && memcmp(keys[s - 1], keys[id], lens[id]) == 0) {
            m->slot[i] = id + 1;
            return;
        }
    }
}

int32_t tok_idmap_get(const struct tok_idmap *m, char *const *keys,
                      const uint32_t *lens, const char *k, size_t n)
{
    if (!m->slot) return -1;
    uint32_t i = (uint32_t)tok_hash(k, n) & m->mask;
    for (;; i = (i + 1) & m->mask) {
        int32_t s = m->slot[i];
        if (s == 0) return -1;
        if (lens[s - 1] == n && memcmp(keys[s - 1], k, n) == 0) return s - 1;
    }
}

int tok_merges_init(struct tok_merges *m, size_t n)
{
    uint32_t cap = pow2_at_least(n * 2 + 1);
    m->key = calloc(cap, sizeof *m->key);
    m->rank = malloc(cap * sizeof *m->rank);
    m->merged = malloc(cap * sizeof *m->merged);
    m->mask = cap - 1;
    m->n = 0;
    return (m->key && m->rank && m->merged) ? 0 : -1;
}

void tok_merges_free(struct tok_merges *m)
{
    free(m->key);
    free(m->rank);
    free(m->merged);
    memset(m, 0, sizeof *m);
}

static inline uint64_t pair_key(int32_t a, int32_t b)
{
    return (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
}

static inline uint32_t pair_slot(uint64_t k, uint32_t mask)
{
    return (uint32_t)mix64(k * 0x9e3779b97f4a7c15ULL) & mask;
}

/* A later duplicate replaces the earlier one, as in Hugging Face (the merge
 * map is collected from the list in order). */
void tok_merges_put(struct tok_merges *m, int32_t a, int32_t b, uint32_t rank,
                    int32_t merged)
{
    uint64_t k = pair_key(a, b);
    uint32_t i = pair_slot(k, m->mask);
    while (m->key[i] && m->key[i] != k) i = (i + 1) & m->mask;
    if (!m->key[i]) m->n++;
    m->key[i] = k;
    m->rank[i] = rank;
    m->merged[i] = merged;
}

static inline bool merges_get(const struct tok_merges *m, int32_t a, int32_t b,
                              uint32_t *rank, int32_t *merged)
{
    if (!m->n) return false;
    uint64_t k = pair_key(a, b);
    uint32_t i = pair_slot(k, m->mask);
    for (;; i = (i + 1) & m->mask) {
        if (m->key[i] == k) {
            *rank = m->rank[i];
            *merged = m->merged[i];
            return true;
        }
        if (!m->key[i]) return false;
    }
}

/* ---- word cache ---- */

void tok_cache_free(struct tok_cache *c)
{
    free(c->slot);
    free(c->ent);
    free(c->keys);
    free(c->ids);
    memset(c, 0, sizeof *c);
}

/* A slot holds the hash's high 32 bits and the entry index + 1, so most
 * misses are decided without touching the entry. */
const int32_t *tok_cache_get(const struct tok_cache *c, const char *w, size_t len,
                             uint64_t h, size_t *n)
{
    if (!c->slot) return NULL;
    uint64_t tag = h & 0xFFFFFFFF00000000ULL;
    for (uint32_t i = (uint32_t)h & c->mask;; i = (i + 1) & c->mask) {
        uint64_t s = c->slot[i];
        if (!s) return NULL;
        if ((s & 0xFFFFFFFF00000000ULL) != tag) continue;
        const struct tok_cache_entry *en = &c->ent[(uint32_t)s - 1];
        if (en->key_len == len && memcmp(c->keys + en->key_off, w, len) == 0) {
            *n = en->n_ids;
            return c->ids + en->ids_off;
        }
    }
}

static void cache_clear(struct tok_cache *c)
{
    memset(c->slot, 0, (c->mask + 1) * sizeof *c->slot);
    c->n_ent = c->keys_n = c->ids_n = 0;
}

void tok_cache_put(struct tok_cache *c, const char *w, size_t len, uint64_t h,
                   const int32_t *ids, size_t n)
{
    if (!c->slot) {
        uint32_t cap = pow2_at_least(TOK_CACHE_MAX_ENTRIES * 2);
        c->slot = calloc(cap, sizeof *c->slot);
        c->ent = malloc(TOK_CACHE_MAX_ENTRIES * sizeof *c->ent);
        c->keys_cap = (size_t)TOK_CACHE_MAX_ENTRIES * 16;
        c->keys = malloc(c->keys_cap);
        c->ids_cap = (size_t)TOK_CACHE_MAX_ENTRIES * 4;
        c->ids = malloc(c->ids_cap * sizeof *c->ids);
        if (!c->slot || !c->ent || !c->keys || !c->ids) {
            tok_cache_free(c);
            return;
        }
        c->mask = cap - 1;
        c->cap_ent = TOK_CACHE_MAX_ENTRIES;
    }
    if (c->n_ent == c->cap_ent || c->keys_n + len > c->keys_cap ||
        c->ids_n + n > c->ids_cap)
        cache_clear(c);
    if (len > c->keys_cap || n > c->ids_cap) return;
    struct tok_cache_entry *en = &c->ent[c->n_ent];
    en->key_off = (uint32_t)c->keys_n;
    en->key_len = (uint32_t)len;
    en->ids_off = (uint32_t)c->ids_n;
    en->n_ids = (uint32_t)n;
    memcpy(c->keys + c->keys_n, w, len);
    c->keys_n += len;
    memcpy(c->ids + c->ids_n, ids, n * sizeof *ids);
    c->ids_n += n;
    uint32_t i = (uint32_t)h & c->mask;
    while (c->slot[i]) i = (i + 1) & c->mask;
    c->slot[i] = (h & 0xFFFFFFFF00000000ULL) | (uint64_t)++c->n_ent;
}

/* ---- BPE ---- */

static inline bool heap_less(const struct tok_heap_item *a, const struct tok_heap_item *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(struct tok_heap_item *h, size_t *n, struct tok_heap_item it)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&it, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = it;
}

static struct tok_heap_item heap_pop(struct tok_heap_item *h, size_t *n)
{
    struct tok_heap_item top = h[0], last = h[--(*n)];
    size_t i = 0, m = *n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, c = l;
        if (l >= m) break;
        if (r < m && heap_less(&h[r], &h[l])) c = r;
        if (!heap_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (m) h[i] = last;
    return top;
}

static int enc_reserve(struct tok_enc *e, size_t n)
{
    if (n <= e->sym_cap) return 0;
    size_t cap = e->sym_cap ? e->sym_cap : 64;
    while (cap < n) cap *= 2;
    void *s = realloc(e->sym, cap * sizeof *e->sym);
    if (!s) return -1;
    e->sym = s;
    /* Each merge pushes at most two items, each initial pair one. */
    void *h = realloc(e->heap, 3 * cap * sizeof *e->heap);
    if (!h) return -1;
    e->heap = h;
    e->sym_cap = cap;
    return 0;
}

/* Initial symbols of a word: one per byte on byte-level tokenizers, else one
 * per UTF-8 character looked up in the vocabulary (byte_fallback to <0xXX>,
 * then unk, else the character is dropped, as Hugging Face's BPE does). */
static size_t initial_symbols(struct tok_enc *e, const char *w, size_t n)
{
    const struct tokenizer *tok = e->tok;
    size_t k = 0;
    if (tok->byte_level) {
        for (size_t i = 0; i < n; i++) {
            int32_t id = tok->byte_id[(unsigned char)w[i]];
            if (id < 0) continue;
            e->sym[k].id = id;
            e->sym[k].len = 1;
            k++;
        }
        return k;
    }
    bool pending_unk = false;
    int32_t unk_len = 0;
    for (size_t i = 0; i < n;) {
        size_t cl = tok_utf8_char_len((const unsigned char *)w + i, n - i);
        if (!cl) cl = 1;
        int32_t id = tok_idmap_get(&tok->vocab, tok->id_str, tok->id_len, w + i, cl);
        if (id >= 0) {
            if (pending_unk) {
                e->sym[k].id = tok->unk_id;
                e->sym[k].len = unk_len;
                k++;
                pending_unk = false;
            }
            e->sym[k].id = id;
            e->sym[k].len = (int32_t)cl;
            k++;
        } else {
            bool done = false;
            if (tok->byte_fallback) {
                int32_t fb[4];
                size_t j;
                for (j = 0; j < cl; j++) {
                    char name[8];
                    static const char hex[] = "0123456789ABCDEF";
                    unsigned char b = (unsigned char)w[i + j];
                    name[0] = '<'; name[1] = '0'; name[2] = 'x';
                    name[3] = hex[b >> 4]; name[4] = hex[b & 15]; name[5] = '>';
                    fb[j] = tok_idmap_get(&tok->vocab, tok->id_str, tok->id_len, name, 6);
                    if (fb[j] < 0) break;
                }
                if (j == cl) {
                    for (j = 0; j < cl; j++) {
                        e->sym[k].id = fb[j];
                        e->sym[k].len = 1;
                        k++;
                    }
                    done = true;
                }
            }
            if (!done && tok->unk_id >= 0) {
                if (pending_unk && tok->fuse_unk) {
                    unk_len += (int32_t)cl;
                } else {
                    if (pending_unk) {
                        e->sym[k].id = tok->unk_id;
                        e->sym[k].len = unk_len;
                        k++;
                    }
                    pending_unk = true;
                    unk_len = (int32_t)cl;
                }
            }
        }
        i += cl;
    }
    if (pending_unk) {
        e->sym[k].id = tok->unk_id;
        e->sym[k].len = unk_len;
        k++;
    }
    return k;
}

/* Merges the symbols sym[0..k) by rank; returns the number left (compacted). */
static size_t merge_all(struct tok_enc *e, size_t k)
{
    const struct tok_merges *mg = &e->tok->merges;
    struct tok_sym *s = e->sym;
    struct tok_heap_item *h = e->heap;
    size_t hn = 0;
    for (size_t i = 0; i < k; i++) {
        s[i].prev = (int32_t)i - 1;
        s[i].next = i + 1 < k ? (int32_t)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < k; i++) {
        uint32_t rank;
        int32_t merged;
        if (merges_get(mg, s[i].id, s[i + 1].id, &rank, &merged))
            heap_push(h, &hn, (struct tok_heap_item){rank, (uint32_t)i, merged});
    }
    while (hn) {
        struct tok_heap_item top = heap_pop(h, &hn);
        struct tok_sym *cur = &s[top.pos];
        if (cur->len == 0 || cur->next < 0) continue;
        struct tok_sym *right = &s[cur->next];
        uint32_t rank;
        int32_t merged;
        /* Skip stale entries: the pair at pos must still merge to this id. */
        if (!merges_get(mg, cur->id, right->id, &rank, &merged) || merged != top.merged)
            continue;
        cur->id = top.merged;
        cur->len += right->len;
        right->len = 0;
        cur->next = right->next;
        if (cur->next >= 0) s[cur->next].prev = (int32_t)top.pos;
        if (cur->prev >= 0 &&
            merges_get(mg, s[cur->prev].id, cur->id, &rank, &merged))
            heap_push(h, &hn, (struct tok_heap_item){rank, (uint32_t)cur->prev, merged});
        if (cur->next >= 0 &&
            merges_get(mg, cur->id, s[cur->next].id, &rank, &merged))
            heap_push(h, &hn, (struct tok_heap_item){rank, top.pos, merged});
    }
    size_t m = 0;
    for (size_t i = 0; i < k; i++)
        if (s[i].len) s[m++] = s[i];
    return m;
}

int tok_bpe_word(struct tok_enc *e, const char *w, size_t n)
{
    const struct tokenizer *tok = e->tok;
    if (n == 0) return 0;
    if (tok->byte_level && n == 1) {
        int32_t id = tok->byte_id[(unsigned char)w[0]];
        return id >= 0 ? tok_ids_push(&e->out, id) : 0;
    }
    if (tok->byte_level && tok->merges.n == 0) {
        /* No merges (aha's own byte-level tokenizer): one id per byte. */
        for (size_t i = 0; i < n; i++) {
            int32_t id = tok->byte_id[(unsigned char)w[i]];
            if (id >= 0 && tok_ids_push(&e->out, id)) return -1;
        }
        return 0;
    }
    if (tok->ignore_merges) {
        int32_t id = tok->byte_level
            ? tok_idmap_get(&tok->vocab_bytes, tok->vb_key, tok->vb_len, w, n)
            : tok_idmap_get(&tok->vocab, tok->id_str, tok->id_len, w, n);
        if (id >= 0) return tok_ids_push(&e->out, id);
    }
    bool cacheable = e->cache && n <= TOK_CACHE_MAX_WORD;
    uint64_t h = 0;
    if (cacheable) {
        size_t cn;
        h = tok_hash(w, n);
        const int32_t *c = tok_cache_get(e->cache, w, n, h, &cn);
        if (c) return tok_ids_append(&e->out, c, cn);
    }
    if (n > TOK_MAX_WORD || enc_reserve(e, n)) return -1;
    size_t k = initial_symbols(e, w, n);
    k = merge_all(e, k);
    size_t start = e->out.n;
    for (size_t i = 0; i < k; i++)
        if (tok_ids_push(&e->out, e->sym[i].id)) return -1;
    if (cacheable) tok_cache_put(e->cache, w, n, h, e->out.v + start, k);
    return 0;
}
