/* engine/kv_cache.c — block pool, free list, reference counts and
 * reservations of the paged KV cache (layout in kv_cache.h).
 *
 * Why paged blocks rather than one slab per sequence: sequences of very
 * different lengths join and leave every step (continuous batching), so a
 * slab would either reserve max_position_embeddings per sequence or
 * fragment; fixed blocks make any free block usable by anyone, and the n
 * samples of a prompt share its full blocks by reference count (a sample
 * only ever appends, so a full shared block is never written and needs no
 * copy-on-write; only the prompt's partial last block is copied). */
#include "kv_cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *kv_dtype_name(enum kv_dtype dt)
{
    return dt == KV_F16 ? "f16" : dt == KV_Q8 ? "q8" : "f32";
}

int kv_dtype_parse(const char *s, enum kv_dtype *dt)
{
    if (!strcmp(s, "f16")) *dt = KV_F16;
    else if (!strcmp(s, "f32")) *dt = KV_F32;
    else if (!strcmp(s, "q8")) *dt = KV_Q8;
    else return -1;
    return 0;
}

struct kv_cache *kv_cache_new(const struct backend *be, enum kv_dtype dt, int n_layers,
                              int n_kv_heads, int head_dim, int block_size, size_t bytes,
                              char *err, size_t errlen)
{
    const size_t elem = kv_dtype_size(dt), half = (size_t)n_kv_heads * block_size * head_dim;
    size_t layer = 2 * half;
    /* KV_Q8: the scales after the keys and values, a layer's part of a
     * block kept on 64-byte boundaries */
    if (dt == KV_Q8)
        layer = (layer + 2 * (size_t)n_kv_heads * block_size * sizeof(float) + 63) / 64 * 64;
    size_t block = layer * n_layers;
    size_t nb = block_size > 0 ? bytes / (block * elem) : 0;
    if (nb == 0) {
        snprintf(err, errlen, "kv cache: %zu bytes hold no block of %d positions (%zu bytes each)",
                 bytes, block_size, block * elem);
        return NULL;
    }
    if (nb > INT32_MAX / 2) nb = INT32_MAX / 2;
    struct kv_cache *kv = calloc(1, sizeof *kv);
    if (!kv) goto oom;
    kv->be = be;
    kv->dtype = dt;
    kv->n_blocks = (int)nb;
    kv->block_size = block_size;
    kv->block_stride = block;
    kv->layer_stride = layer;
    kv->vofs = half;
    kv->pool = be->alloc(nb * block * elem);
    const size_t words = (nb + 63) / 64;
    kv->free_map = malloc(words * sizeof *kv->free_map);
    kv->refs = calloc(nb, sizeof *kv->refs);
    if (!kv->pool || !kv->free_map || !kv->refs) goto oom;
    for (size_t w = 0; w < words; w++)
        kv->free_map[w] = w + 1 < words || nb % 64 == 0 ? ~0ULL : (1ULL << (nb % 64)) - 1;
    kv->n_free = kv->n_blocks;
    return kv;
oom:
    snprintf(err, errlen, "kv cache: out of memory allocating %zu bytes", nb * block * elem);
    kv_cache_free(kv);
    return NULL;
}

void kv_cache_free(struct kv_cache *kv)
{
    if (!kv) return;
    if (kv->pool) kv->be->free(kv->pool);
    free(kv->free_map);
    free(kv->refs);
    free(kv);
}

size_t kv_cache_block_bytes(const struct kv_cache *kv)
{
    return kv->block_stride * kv_dtype_size(kv->dtype);
}

int kv_cache_reserve(struct kv_cache *kv, int n)
{
    if (n < 0 || n > kv->n_free - kv->reserved) return -1;
    kv->reserved += n;
    return 0;
}

void kv_cache_unreserve(struct kv_cache *kv, int n)
{
    kv->reserved -= n;
}

int32_t kv_cache_block_alloc(struct kv_cache *kv)
{
    if (kv->n_free == 0) return -1;
    /* the lowest free id: the blocks in use stay packed at the start of
     * the pool, so a step's attention reads a compact region (measured:
     * 10% less time in attention at 16 sequences than handing out the
     * most recently freed block) */
    while (!kv->free_map[kv->low_word]) kv->low_word++;
    uint64_t *w = &kv->free_map[kv->low_word];
    int32_t b = (int32_t)(kv->low_word * 64 + __builtin_ctzll(*w));
    *w &= *w - 1;
    kv->n_free--;
    kv->refs[b] = 1;
    return b;
}

void kv_cache_block_ref(struct kv_cache *kv, int32_t b)
{
    kv->refs[b]++;
}

void kv_cache_block_unref(struct kv_cache *kv, int32_t b)
{
    if (--kv->refs[b] != 0) return;
    kv->free_map[b / 64] |= 1ULL << (b % 64);
    if ((size_t)b / 64 < kv->low_word) kv->low_word = (size_t)b / 64;
    kv->n_free++;
}

void kv_cache_block_copy(struct kv_cache *kv, int32_t dst, int32_t src)
{
    const size_t bytes = kv_cache_block_bytes(kv);
    kv->be->copy((char *)kv->pool + (size_t)dst * bytes, (char *)kv->pool + (size_t)src * bytes,
                 bytes);
}

int kv_cache_used(const struct kv_cache *kv)
{
    return kv->n_blocks - kv->n_free;
}
