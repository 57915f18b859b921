/* tests/ref_io.h — reader for the reference-tensor files written by
 * tests/ref/reffile.py (format described there), and the tolerance check
 * every reference comparison uses: |a - b| <= atol + rtol * |ref|. */
#ifndef AHA_REF_IO_H
#define AHA_REF_IO_H

#include <stddef.h>
#include <stdint.h>

struct ref_tensor {
    char *name;
    int dtype;          /* 0 = f32, 1 = i32 */
    int ndim;
    int64_t shape[8];
    size_t numel;
    void *data;         /* float* or int32_t* */
};

struct ref_file {
    int count;
    struct ref_tensor *tensors;
};

/* Loads a whole .ref file. Returns NULL and fills err on failure.
 * Caller frees with ref_file_free. */
struct ref_file *ref_file_load(const char *path, char *err, size_t errlen);
void ref_file_free(struct ref_file *f);
/* Borrowed pointer or NULL. */
const struct ref_tensor *ref_file_get(const struct ref_file *f, const char *name);
/* For Criterion tests: loads path, failing the test when it cannot (the
 * message names the script that regenerates it). */
struct ref_file *ref_fixture_load(const char *path, const char *script);
/* For Criterion tests: the tensor named prefix + suffix, failing the test
 * when it is missing. */
const struct ref_tensor *ref_fixture_get(const struct ref_file *f, const char *prefix,
                                         const char *suffix);
/* Returns the number of elements violating |got-ref| <= atol + rtol*|ref|,
 * and writes the worst absolute error to *max_err (may be NULL). Prints the
 * first few violations to stderr prefixed with `what`. */
size_t ref_compare(const char *what, const float *got, const float *ref,
                   size_t n, float atol, float rtol, float *max_err);

#endif
