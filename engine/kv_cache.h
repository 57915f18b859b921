/* engine/kv_cache.h — the paged key/value cache of the generation engine:
 * a fixed pool of blocks of `block_size` positions (all layers of a block
 * together), a free list, reference counts so that the n samples of one
 * prompt share its full prompt blocks, reservations so that an admitted
 * request can never run out of blocks mid-generation, and (when enabled)
 * a prefix cache: full blocks registered under the tokens they hold and
 * the block before them, kept after their last reference until the space
 * is needed, so that a later prompt starting with the same tokens reuses
 * them instead of computing them again (vLLM's automatic prefix caching).
 * Not here: which sequence owns which blocks (engine/generate.c). */
#ifndef AHA_KV_CACHE_H
#define AHA_KV_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"

/* Pool layout (elements of dtype): block b, layer l, kv head g, position
 * j, dim d at
 *   keys    b*block_stride + l*layer_stride + (g*D + d)*bs + j   (transposed)
 *   values  b*block_stride + l*layer_stride + vofs + (g*bs + j)*D + d
 * and KV_Q8's fp32 scales (backend.h) at byte b*block_stride + l*layer_stride
 * + 2*vofs: keys' (g*bs + j), then values' (NKV*bs + g*bs + j).
 * For the backend ops of one layer: kv = kv_cache_layer(kv, l). */
struct kv_cache {
    const struct backend *be;
    void *pool;             /* n_blocks * block_stride elements, device memory */
    enum kv_dtype dtype;    /* KV_F16 (binary16), KV_F32 or KV_Q8 */
    int n_blocks, block_size;
    size_t block_stride, layer_stride, vofs;
    uint64_t *free_map;     /* bit b set: block b is free */
    size_t low_word;        /* no free block below free_map[low_word] */
    int n_free;
    int32_t *refs;          /* (n_blocks) reference counts */
    int reserved;           /* blocks promised to admitted requests */
    /* The prefix cache (NULL arrays until kv_cache_prefix_enable). A
     * registered block's key is its tokens and its predecessor (parent,
     * -1 for a sequence's first block, with the parent's generation then):
     * equal keys mean equal tokens at every position up to the block's
     * end, so equal keys and values. A registered block without
     * references is cached: counted free, on an LRU list, and taken back
     * (evicted, unregistered) only when no block is free otherwise. */
    int32_t *key_tokens;    /* (n_blocks, block_size) */
    int32_t *parent;        /* (n_blocks) */
    uint32_t *parent_gen;   /* (n_blocks) */
    uint32_t *gen;          /* (n_blocks) bumped when a registration ends */
    uint64_t *key_hash;     /* (n_blocks) */
    uint8_t *registered;    /* (n_blocks) */
    int32_t *table;         /* (table_mask + 1) block ids, -1 empty: open
                             * addressing, linear probing */
    size_t table_mask;
    int32_t *lru_prev, *lru_next, lru_head, lru_tail;
    int n_cached;           /* registered blocks without references */
};

/* A cache of as many blocks as fit in `bytes` for n_layers x n_kv_heads x
 * head_dim keys and values of type dt. Returns a new cache (caller frees)
 * or NULL with err filled (too small for one block, or out of memory). */
struct kv_cache *kv_cache_new(const struct backend *be, enum kv_dtype dt, int n_layers,
                              int n_kv_heads, int head_dim, int block_size, size_t bytes,
                              char *err, size_t errlen);
void kv_cache_free(struct kv_cache *kv);

/* Bytes of one block (all layers, keys and values). */
size_t kv_cache_block_bytes(const struct kv_cache *kv);

/* Layer l's part of the pool: the kv argument of the backend's ops. */
static inline void *kv_cache_layer(const struct kv_cache *kv, int l)
{
    return (char *)kv->pool + (size_t)l * kv->layer_stride * kv_dtype_size(kv->dtype);
}

/* "f16" / "f32" / "q8" <-> dtype; kv_dtype_parse returns -1 for anything else. */
const char *kv_dtype_name(enum kv_dtype dt);
int kv_dtype_parse(const char *s, enum kv_dtype *dt);

/* Reservations: kv_cache_reserve promises n of the free blocks not yet
 * promised (0, or -1 when fewer remain); kv_cache_unreserve gives a promise
 * back. The owner unreserves one block before each alloc it was promised,
 * so n_free >= reserved always holds. */
int kv_cache_reserve(struct kv_cache *kv, int n);
void kv_cache_unreserve(struct kv_cache *kv, int n);

/* The lowest-numbered free block, with one reference, or -1 when none is
 * free. */
int32_t kv_cache_block_alloc(struct kv_cache *kv);
void kv_cache_block_ref(struct kv_cache *kv, int32_t b);
/* Drops one reference; the block is free again at zero. */
void kv_cache_block_unref(struct kv_cache *kv, int32_t b);
/* Copies the whole block src (every layer) into dst. */
void kv_cache_block_copy(struct kv_cache *kv, int32_t dst, int32_t src);

/* Blocks holding at least one reference. */
int kv_cache_used(const struct kv_cache *kv);

/* Prefix cache. kv_cache_prefix_enable: 0, or -1 when out of memory (the
 * cache then works without). A block's reference count may go to 0 and
 * back (kv_cache_block_ref) while it is cached. */
int kv_cache_prefix_enable(struct kv_cache *kv);
/* The registered block holding `tokens` (block_size of them) right after
 * block parent (-1: at the start of a sequence), or -1. */
int32_t kv_cache_prefix_find(const struct kv_cache *kv, int32_t parent, const int32_t *tokens);
/* Registers full block b (referenced; its keys and values final) as
 * holding `tokens` after parent. Returns true when b is registered under
 * that key now, false when another block already is (b stays as it was). */
bool kv_cache_prefix_add(struct kv_cache *kv, int32_t b, int32_t parent, const int32_t *tokens);
/* Forgets every registration (the model's weights changed): cached blocks
 * become free. */
void kv_cache_prefix_clear(struct kv_cache *kv);

#endif
