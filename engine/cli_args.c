/* engine/cli_args.c — "--name value" option parsing for the subcommands. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "generate.h"

static bool in_list(const char *s, const char *const *list)
{
    for (; list && *list; list++)
        if (strcmp(s, *list) == 0) return true;
    return false;
}

int cli_args_check(int argc, char **argv, const char *const *opts,
                   const char *const *flags)
{
    for (int i = 1; i < argc; i++) {
        if (in_list(argv[i], flags)) continue;
        if (in_list(argv[i], opts)) {
            if (i + 1 >= argc) {
                fprintf(stderr, "%s: option %s needs a value\n", argv[0], argv[i]);
                return -1;
            }
            i++;
            continue;
        }
        fprintf(stderr, "%s: unknown argument \"%s\"\n", argv[0], argv[i]);
        return -1;
    }
    return 0;
}

const char *cli_arg(int argc, char **argv, const char *name)
{
    const char *v = NULL;
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) v = argv[++i];
    return v;
}

bool cli_flag(int argc, char **argv, const char *name)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0) return true;
    return false;
}

int cli_arg_int(int argc, char **argv, const char *name, long lo, long hi, long *out)
{
    const char *v = cli_arg(argc, argv, name);
    if (!v) return 0;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "%s: %s: expected an integer in [%ld, %ld], got \"%s\"\n",
                argv[0], name, lo, hi, v);
        return -1;
    }
    *out = x;
    return 0;
}

int cli_arg_kv_dtype(int argc, char **argv, enum kv_dtype *out)
{
    const char *v = cli_arg(argc, argv, "--kv-dtype");
    if (!v || kv_dtype_parse(v, out) == 0) return 0;
    fprintf(stderr, "%s: --kv-dtype: expected f16, f32 or q8, got \"%s\"\n", argv[0], v);
    return -1;
}

int cli_arg_dtype(int argc, char **argv, const struct model *m, enum w_dtype *out)
{
    const char *v = cli_arg(argc, argv, "--dtype");
    if (!v || w_dtype_parse(v, m, out) == 0) return 0;
    fprintf(stderr, "%s: --dtype: expected %sf32, bf16, q8 or q4, got \"%s\"\n", argv[0],
            m ? "auto, " : "", v);
    return -1;
}

int cli_arg_float(int argc, char **argv, const char *name, double lo, double hi, double *out)
{
    const char *v = cli_arg(argc, argv, name);
    if (!v) return 0;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(x >= lo && x <= hi)) {
        fprintf(stderr, "%s: %s: expected a number in [%g, %g], got \"%s\"\n",
                argv[0], name, lo, hi, v);
        return -1;
    }
    *out = x;
    return 0;
}

int cli_parse_ids(const char *s, int32_t **out)
{
    int cap = 16, n = 0;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    const char *p = s;
    while (ids && *p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX || (*end && *end != ',')) break;
        if (n == cap) {
            int32_t *g = realloc(ids, (size_t)(cap *= 2) * sizeof *ids);
            if (!g) break;
            ids = g;
        }
        ids[n++] = (int32_t)v;
        p = *end ? end + 1 : end;
        if (*end == ',' && !*p) break;
        if (!*p) { *out = ids; return n; }
    }
    free(ids);
    return -1;
}
