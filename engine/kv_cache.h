/* engine/kv_cache.h — the paged key/value cache of the generation engine:
 * a fixed pool of blocks of `block_size` positions (all layers of a block
 * together), a free list, reference counts so that the n samples of one
 * prompt share its full prompt blocks, and reservations so that an admitted
 * request can never run out of blocks mid-generation.
 * Not here: which sequence owns which blocks (engine/generate.c). */
#ifndef AHA_KV_CACHE_H
#define AHA_KV_CACHE_H

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

#endif
