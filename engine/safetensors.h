/* engine/safetensors.h — Hugging Face safetensors files: memory-mapped
 * reading (F32, BF16, F16) with full validation, and writing (F32, BF16).
 * Format: u64 little-endian header length, JSON header
 * {"name":{"dtype","shape","data_offsets":[begin,end]}, "__metadata__":{...}},
 * then the data section. Knows nothing about models. */
#ifndef AHA_SAFETENSORS_H
#define AHA_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

enum st_dtype { ST_F32, ST_F16, ST_BF16 };

#define ST_MAX_DIMS 8

struct st_tensor {
    char *name;
    enum st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t numel;
    size_t nbytes;
    const void *data;       /* points into the mapping */
};

struct st_file {
    char *path;
    void *map;
    size_t map_size;
    int n_tensors;
    struct st_tensor *tensors;  /* in file order */
};

/* Opens and validates a file (header JSON, dtypes, shapes, offsets inside
 * the data section, no overlaps, offsets consistent with dtype x shape).
 * Returns a new st_file (caller frees with st_close), or NULL with err
 * naming the file and, where it applies, the tensor. */
struct st_file *st_open(const char *path, char *err, size_t errlen);
void st_close(struct st_file *f);
/* Borrowed pointer into f, or NULL. */
const struct st_tensor *st_find(const struct st_file *f, const char *name);
/* Converts t's elements to fp32 into dst (t->numel floats). */
void st_to_f32(const struct st_tensor *t, float *dst);
/* Unmaps the whole pages of t's data from this process (they stay in the
 * page cache, and read the same if touched again): a loader that has
 * converted t no longer carries the file in its resident memory. */
void st_release(const struct st_tensor *t);

/* One tensor to write: borrowed name, shape and fp32 data. */
struct st_entry {
    const char *name;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const float *data;
};
/* Writes entries (in the given order) converting to dtype (ST_F32 or
 * ST_BF16, round-to-nearest-even), with __metadata__ {"format":"pt"}.
 * Writes to a temporary file and renames, so a crash never leaves a
 * half-written file at path. Returns 0 or -1 with err filled. */
int st_write(const char *path, const struct st_entry *entries, int n,
             enum st_dtype dtype, char *err, size_t errlen);

#endif
