/* tests/ref_io.c — see ref_io.h. Test support only (the Criterion unit tests); not linked into aha. */
#include "ref_io.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

struct ref_file *ref_fixture_load(const char *path, const char *script)
{
    char err[256];
    struct ref_file *f = ref_file_load(path, err, sizeof err);
    cr_assert_not_null(f, "%s (run the tests from the repository root; regenerate with "
                       "/usr/bin/python3 %s)", err, script);
    return f;
}

const struct ref_tensor *ref_fixture_get(const struct ref_file *f, const char *prefix,
                                         const char *suffix)
{
    char name[128];
    snprintf(name, sizeof name, "%s%s", prefix, suffix);
    const struct ref_tensor *t = ref_file_get(f, name);
    cr_assert_not_null(t, "fixture tensor %s missing", name);
    return t;
}

static int rd(FILE *f, void *p, size_t n) { return fread(p, 1, n, f) == n ? 0 : -1; }

struct ref_file *ref_file_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) { snprintf(err, errlen, "%s: cannot open", path); return NULL; }
    struct ref_file *rf = calloc(1, sizeof *rf);
    char magic[8];
    uint32_t ver, count;
    if (rd(f, magic, 8) || memcmp(magic, "AHAREF\0\0", 8) || rd(f, &ver, 4) ||
        ver != 1 || rd(f, &count, 4) || count > 100000) {
        snprintf(err, errlen, "%s: not an aha reference file (version 1)", path);
        goto fail;
    }
    rf->tensors = calloc(count, sizeof *rf->tensors);
    for (uint32_t i = 0; i < count; i++) {
        struct ref_tensor *t = &rf->tensors[i];
        uint32_t nl, dt, nd;
        if (rd(f, &nl, 4) || nl > 4096) goto trunc;
        t->name = calloc(1, nl + 1);
        rf->count = (int)i + 1;
        if (rd(f, t->name, nl) || rd(f, &dt, 4) || rd(f, &nd, 4) || dt > 1 || nd > 8)
            goto trunc;
        t->dtype = (int)dt;
        t->ndim = (int)nd;
        t->numel = 1;
        for (uint32_t d = 0; d < nd; d++) {
            if (rd(f, &t->shape[d], 8) || t->shape[d] < 0) goto trunc;
            t->numel *= (size_t)t->shape[d];
        }
        t->data = malloc(t->numel * 4 + 1);
        if (rd(f, t->data, t->numel * 4)) goto trunc;
    }
    fclose(f);
    return rf;
trunc:
    snprintf(err, errlen, "%s: truncated or malformed", path);
fail:
    fclose(f);
    ref_file_free(rf);
    return NULL;
}

void ref_file_free(struct ref_file *f)
{
    if (!f) return;
    for (int i = 0; i < f->count; i++) {
        free(f->tensors[i].name);
        free(f->tensors[i].data);
    }
    free(f->tensors);
    free(f);
}

const struct ref_tensor *ref_file_get(const struct ref_file *f, const char *name)
{
    for (int i = 0; i < f->count; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

size_t ref_compare(const char *what, const float *got, const float *ref,
                   size_t n, float atol, float rtol, float *max_err)
{
    size_t bad = 0;
    float worst = 0;
    for (size_t i = 0; i < n; i++) {
        float e = fabsf(got[i] - ref[i]);
        if (!(e <= worst)) worst = e;   /* NaN propagates as worst */
        if (!(e <= atol + rtol * fabsf(ref[i]))) {
            if (bad < 5)
                fprintf(stderr, "%s[%zu]: got %.8g, ref %.8g (|diff| %.3g)\n",
                        what, i, got[i], ref[i], e);
            bad++;
        }
    }
    if (max_err) *max_err = worst;
    return bad;
}
