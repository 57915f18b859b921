/* engine/safetensors.c — read (mmap, validated) and write safetensors files.
 * Spec: https://github.com/huggingface/safetensors (u64 LE header length,
 * JSON header, data section). Nothing here knows about models; aha reads
 * F32/F16/BF16 and writes F32/BF16. */
#include "safetensors.h"

#include "backend.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host (the file format is little-endian)"
#endif

/* The official implementation's limit (safetensors MAX_HEADER_SIZE). */
#define ST_MAX_HEADER_BYTES 100000000ull

__attribute__((format(printf, 3, 4)))
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static size_t dtype_size(enum st_dtype d) { return d == ST_F32 ? 4 : 2; }

static const char *dtype_name(enum st_dtype d)
{
    return d == ST_F32 ? "F32" : d == ST_F16 ? "F16" : "BF16";
}

/* Every dtype of the safetensors spec; those aha does not read are
 * reported as unsupported rather than unknown. */
static const char *const st_other_dtypes[] = {
    "BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64", "F64",
    "C64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2",
};

/* Parses one header entry into t (name already set). */
static int parse_entry(const char *path, const char *name, json_t *v,
                       size_t data_size, struct st_tensor *t, size_t *begin,
                       size_t *end, char *err, size_t errlen)
{
    if (!json_is_object(v)) {
        seterr(err, errlen, "%s: tensor \"%s\": header entry must be an object",
               path, name);
        return -1;
    }
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x) {
        if (strcmp(k, "dtype") && strcmp(k, "shape") && strcmp(k, "data_offsets")) {
            seterr(err, errlen, "%s: tensor \"%s\": unknown key \"%s\"", path,
                   name, k);
            return -1;
        }
    }
    json_t *dt = json_object_get(v, "dtype");
    if (!json_is_string(dt)) {
        seterr(err, errlen, "%s: tensor \"%s\": \"dtype\" must be a string",
               path, name);
        return -1;
    }
    const char *ds = json_string_value(dt);
    if (!strcmp(ds, "F32")) t->dtype = ST_F32;
    else if (!strcmp(ds, "F16")) t->dtype = ST_F16;
    else if (!strcmp(ds, "BF16")) t->dtype = ST_BF16;
    else {
        bool known = false;
        for (size_t i = 0; i < sizeof st_other_dtypes / sizeof *st_other_dtypes; i++)
            known |= !strcmp(ds, st_other_dtypes[i]);
        seterr(err, errlen, "%s: tensor \"%s\": %s dtype \"%s\"%s", path, name,
               known ? "unsupported" : "unknown", ds,
               known ? " (aha reads F32, F16 and BF16)" : "");
        return -1;
    }

    json_t *sh = json_object_get(v, "shape");
    if (!json_is_array(sh)) {
        seterr(err, errlen, "%s: tensor \"%s\": \"shape\" must be an array",
               path, name);
        return -1;
    }
    if (json_array_size(sh) > ST_MAX_DIMS) {
        seterr(err, errlen, "%s: tensor \"%s\": shape has %zu dimensions "
               "(at most %d)", path, name, json_array_size(sh), ST_MAX_DIMS);
        return -1;
    }
    t->ndim = (int)json_array_size(sh);
    size_t numel = 1;
    bool overflow = false;
    for (int d = 0; d < t->ndim; d++) {
        json_t *e = json_array_get(sh, (size_t)d);
        if (!json_is_integer(e) || json_integer_value(e) < 0) {
            seterr(err, errlen, "%s: tensor \"%s\": shape[%d] must be a "
                   "non-negative integer", path, name, d);
            return -1;
        }
        t->shape[d] = json_integer_value(e);
        overflow |= __builtin_mul_overflow(numel, (size_t)t->shape[d], &numel);
    }
    size_t nbytes = 0;
    overflow |= __builtin_mul_overflow(numel, dtype_size(t->dtype), &nbytes);
    if (overflow) {
        seterr(err, errlen, "%s: tensor \"%s\": shape is too large (element "
               "count overflows)", path, name);
        return -1;
    }
    t->numel = numel;
    t->nbytes = nbytes;

    json_t *off = json_object_get(v, "data_offsets");
    json_t *b = json_array_get(off, 0), *e = json_array_get(off, 1);
    if (!json_is_array(off) || json_array_size(off) != 2 ||
        !json_is_integer(b) || !json_is_integer(e) ||
        json_integer_value(b) < 0 || json_integer_value(e) < 0) {
        seterr(err, errlen, "%s: tensor \"%s\": \"data_offsets\" must be "
               "[begin, end] with non-negative integers", path, name);
        return -1;
    }
    long long bv = json_integer_value(b), ev = json_integer_value(e);
    if (bv > ev || (unsigned long long)ev > data_size) {
        seterr(err, errlen, "%s: tensor \"%s\": data_offsets [%lld, %lld] out "
               "of range (data section is %zu bytes)", path, name, bv, ev,
               data_size);
        return -1;
    }
    if ((unsigned long long)(ev - bv) != nbytes) {
        char dims[ST_MAX_DIMS * 22 + 3] = "[";
        for (int d = 0; d < t->ndim; d++)
            snprintf(dims + strlen(dims), sizeof dims - strlen(dims), "%s%lld",
                     d ? ", " : "", (long long)t->shape[d]);
        strcat(dims, "]");
        seterr(err, errlen, "%s: tensor \"%s\": data_offsets [%lld, %lld] hold "
               "%lld bytes, but %s %s needs %zu", path, name, bv, ev, ev - bv,
               dtype_name(t->dtype), dims, nbytes);
        return -1;
    }
    *begin = (size_t)bv;
    *end = (size_t)ev;
    return 0;
}

struct st_range { size_t begin, end; int idx; };

static int range_cmp(const void *a, const void *b)
{
    const struct st_range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int parse_header(struct st_file *f, const char *hdr, size_t hlen,
                        const unsigned char *data, size_t data_size, char *err,
                        size_t errlen)
{
    const char *path = f->path;
    json_error_t jerr;
    json_t *root = json_loadb(hdr, hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (json_error_code(&jerr) == json_error_duplicate_key)
            seterr(err, errlen, "%s: duplicate tensor name in header (line %d, "
                   "column %d): %s", path, jerr.line, jerr.column, jerr.text);
        else
            seterr(err, errlen, "%s: header is not valid JSON (line %d, column "
                   "%d): %s", path, jerr.line, jerr.column, jerr.text);
        return -1;
    }
    int rc = -1;
    struct st_range *ranges = NULL;
    if (!json_is_object(root)) {
        seterr(err, errlen, "%s: header is not a JSON object", path);
        goto out;
    }
    size_t n = json_object_size(root);
    f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
    ranges = calloc(n ? n : 1, sizeof *ranges);
    if (!f->tensors || !ranges) {
        seterr(err, errlen, "%s: out of memory", path);
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(v)) {
                seterr(err, errlen, "%s: \"__metadata__\" must be an object",
                       path);
                goto out;
            }
            const char *mk;
            json_t *mv;
            json_object_foreach(v, mk, mv) {
                if (!json_is_string(mv)) {
                    seterr(err, errlen, "%s: \"__metadata__\" value \"%s\" "
                           "must be a string", path, mk);
                    goto out;
                }
            }
            continue;
        }
        struct st_tensor *t = &f->tensors[f->n_tensors];
        t->name = strdup(key);
        if (!t->name) {
            seterr(err, errlen, "%s: out of memory", path);
            goto out;
        }
        f->n_tensors++;
        struct st_range *r = &ranges[f->n_tensors - 1];
        if (parse_entry(path, key, v, data_size, t, &r->begin, &r->end, err,
                        errlen))
            goto out;
        r->idx = f->n_tensors - 1;
        t->data = data + r->begin;
    }
    /* No two non-empty byte ranges may share a byte. */
    qsort(ranges, (size_t)f->n_tensors, sizeof *ranges, range_cmp);
    int prev = -1;
    for (int i = 0; i < f->n_tensors; i++) {
        struct st_range *r = &ranges[i];
        if (r->begin == r->end) continue;
        if (prev >= 0 && r->begin < ranges[prev].end) {
            struct st_range *q = &ranges[prev];
            seterr(err, errlen, "%s: tensor \"%s\": data_offsets [%zu, %zu] "
                   "overlap tensor \"%s\" [%zu, %zu]", path,
                   f->tensors[r->idx].name, r->begin, r->end,
                   f->tensors[q->idx].name, q->begin, q->end);
            goto out;
        }
        prev = i;
    }
    rc = 0;
out:
    free(ranges);
    json_decref(root);
    return rc;
}

struct st_file *st_open(const char *path, char *err, size_t errlen)
{
    struct st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        seterr(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        seterr(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        seterr(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        seterr(err, errlen, "%s: not a regular file", path);
        close(fd);
        goto fail;
    }
    if (sb.st_size < 8) {
        seterr(err, errlen, "%s: file is too short (%lld bytes; a safetensors "
               "file starts with an 8-byte header length)", path,
               (long long)sb.st_size);
        close(fd);
        goto fail;
    }
    f->map_size = (size_t)sb.st_size;
    f->map = mmap(NULL, f->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        seterr(err, errlen, "%s: cannot mmap: %s", path, strerror(errno));
        goto fail;
    }
    const unsigned char *p = f->map;
    uint64_t hlen;
    memcpy(&hlen, p, 8);
    if (hlen > ST_MAX_HEADER_BYTES) {
        seterr(err, errlen, "%s: header length %llu is too large (limit %llu)",
               path, (unsigned long long)hlen, ST_MAX_HEADER_BYTES);
        goto fail;
    }
    if (hlen > f->map_size - 8) {
        seterr(err, errlen, "%s: header length %llu is past the end of the "
               "file (%zu bytes)", path, (unsigned long long)hlen, f->map_size);
        goto fail;
    }
    size_t data_off = 8 + (size_t)hlen;
    if (parse_header(f, (const char *)p + 8, (size_t)hlen, p + data_off,
                     f->map_size - data_off, err, errlen))
        goto fail;
    return f;
fail:
    st_close(f);
    return NULL;
}

void st_close(struct st_file *f)
{
    if (!f) return;
    if (f->map) munmap(f->map, f->map_size);
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    free(f->path);
    free(f);
}

const struct st_tensor *st_find(const struct st_file *f, const char *name)
{
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

/* Data in the mapping may be at any byte offset: load through memcpy. */
void st_to_f32(const struct st_tensor *t, float *dst)
{
    const unsigned char *src = t->data;
    if (t->dtype == ST_F32) {
        if (t->numel) memcpy(dst, src, t->numel * 4);
        return;
    }
    for (size_t i = 0; i < t->numel; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        dst[i] = t->dtype == ST_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
    }
}

void st_release(const struct st_tensor *t)
{
    const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t a = ((uintptr_t)t->data + pg - 1) & ~(pg - 1);
    const uintptr_t b = ((uintptr_t)t->data + t->nbytes) & ~(pg - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Header JSON for entries; sets *sizes (bytes per entry). New string. */
static char *build_header(const char *path, const struct st_entry *entries,
                          int n, enum st_dtype dtype, size_t *sizes, char *err,
                          size_t errlen)
{
    json_t *root = json_object(), *meta = json_object();
    char *out = NULL;
    if (!root || !meta || json_object_set_new(meta, "format", json_string("pt")) ||
        json_object_set_new(root, "__metadata__", meta)) {
        if (!root) json_decref(meta);
        seterr(err, errlen, "%s: out of memory", path);
        goto out;
    }
    size_t offset = 0;
    for (int i = 0; i < n; i++) {
        const struct st_entry *e = &entries[i];
        if (!e->name || !e->name[0] || !strcmp(e->name, "__metadata__")) {
            seterr(err, errlen, "%s: tensor %d: invalid name \"%s\"", path, i,
                   e->name ? e->name : "(null)");
            goto out;
        }
        if (json_object_get(root, e->name)) {
            seterr(err, errlen, "%s: tensor \"%s\": duplicate name", path,
                   e->name);
            goto out;
        }
        if (e->ndim < 0 || e->ndim > ST_MAX_DIMS) {
            seterr(err, errlen, "%s: tensor \"%s\": ndim %d out of range "
                   "[0, %d]", path, e->name, e->ndim, ST_MAX_DIMS);
            goto out;
        }
        json_t *shape = json_array(), *t = json_object(), *offs = json_array();
        int bad = !shape || !t || !offs;
        size_t numel = 1;
        for (int d = 0; d < e->ndim && !bad; d++) {
            if (e->shape[d] < 0 ||
                __builtin_mul_overflow(numel, (size_t)e->shape[d], &numel)) {
                json_decref(shape); json_decref(t); json_decref(offs);
                seterr(err, errlen, "%s: tensor \"%s\": invalid shape", path,
                       e->name);
                goto out;
            }
            bad |= json_array_append_new(shape, json_integer(e->shape[d]));
        }
        size_t nbytes;
        if (__builtin_mul_overflow(numel, dtype_size(dtype), &nbytes) ||
            offset + nbytes < offset || (numel && !e->data)) {
            json_decref(shape); json_decref(t); json_decref(offs);
            seterr(err, errlen, "%s: tensor \"%s\": invalid shape or no data",
                   path, e->name);
            goto out;
        }
        sizes[i] = nbytes;
        bad |= json_array_append_new(offs, json_integer((json_int_t)offset));
        bad |= json_array_append_new(offs, json_integer((json_int_t)(offset + nbytes)));
        offset += nbytes;
        json_t *name = json_string(e->name);   /* NULL if not UTF-8 */
        json_decref(name);
        if (!name) {
            json_decref(shape); json_decref(t); json_decref(offs);
            seterr(err, errlen, "%s: tensor %d: name is not valid UTF-8", path, i);
            goto out;
        }
        bad |= json_object_set_new(t, "dtype", json_string(dtype_name(dtype)));
        bad |= json_object_set_new(t, "shape", shape);
        bad |= json_object_set_new(t, "data_offsets", offs);
        bad |= json_object_set_new(root, e->name, t);
        if (bad) {
            seterr(err, errlen, "%s: out of memory", path);
            goto out;
        }
    }
    out = json_dumps(root, JSON_COMPACT);
    if (!out) seterr(err, errlen, "%s: cannot encode header", path);
out:
    json_decref(root);
    return out;
}

int st_write(const char *path, const struct st_entry *entries, int n,
             enum st_dtype dtype, char *err, size_t errlen)
{
    if (dtype != ST_F32 && dtype != ST_BF16) {
        seterr(err, errlen, "%s: st_write supports F32 and BF16, not %s", path,
               dtype_name(dtype));
        return -1;
    }
    if (n < 0) {
        seterr(err, errlen, "%s: negative tensor count", path);
        return -1;
    }
    size_t *sizes = calloc((size_t)n + 1, sizeof *sizes);
    char *hdr = sizes ? build_header(path, entries, n, dtype, sizes, err, errlen)
                      : NULL;
    char *tmp = NULL;
    uint16_t *buf = NULL;
    int fd = -1, rc = -1;
    if (!sizes) seterr(err, errlen, "%s: out of memory", path);
    if (!hdr) goto out;

    /* As the Rust implementation: pad the header with spaces so that the
     * data section starts 8-byte aligned. */
    size_t hlen = strlen(hdr), padded = (hlen + 7) & ~(size_t)7;
    if (asprintf(&tmp, "%s.tmp.XXXXXX", path) < 0) {
        tmp = NULL;
        seterr(err, errlen, "%s: out of memory", path);
        goto out;
    }
    fd = mkstemp(tmp);
    if (fd < 0) {
        seterr(err, errlen, "%s: cannot create temporary file %s: %s", path,
               tmp, strerror(errno));
        goto out;
    }
    fchmod(fd, 0644);
    uint64_t len_le = padded;
    static const char spaces[8] = "        ";
    enum { CHUNK = 1 << 16 };
    if (dtype == ST_BF16 && !(buf = malloc(CHUNK * sizeof *buf))) {
        seterr(err, errlen, "%s: out of memory", path);
        goto out;
    }
    if (write_all(fd, &len_le, 8) || write_all(fd, hdr, hlen) ||
        write_all(fd, spaces, padded - hlen))
        goto io_fail;
    for (int i = 0; i < n; i++) {
        const float *src = entries[i].data;
        if (dtype == ST_F32) {
            if (sizes[i] && write_all(fd, src, sizes[i])) goto io_fail;
            continue;
        }
        size_t numel = sizes[i] / 2;
        for (size_t s = 0; s < numel; s += CHUNK) {
            size_t m = numel - s < CHUNK ? numel - s : CHUNK;
            for (size_t j = 0; j < m; j++) buf[j] = bf16_from_f32(src[s + j]);
            if (write_all(fd, buf, m * 2)) goto io_fail;
        }
    }
    if (fsync(fd) != 0) goto io_fail;
    if (close(fd) != 0) {
        fd = -1;
        goto io_fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        seterr(err, errlen, "%s: cannot rename %s: %s", path, tmp,
               strerror(errno));
        goto out;
    }
    free(tmp);
    tmp = NULL;
    /* Make the rename durable; best effort (some filesystems refuse). */
    char *dup = strdup(path);
    if (dup) {
        int dfd = open(dirname(dup), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        free(dup);
    }
    rc = 0;
    goto out;
io_fail:
    seterr(err, errlen, "%s: write to %s failed: %s", path, tmp, strerror(errno));
out:
    if (fd >= 0) close(fd);
    if (tmp) unlink(tmp);
    free(tmp);
    free(buf);
    free(hdr);
    free(sizes);
    return rc;
}
