/* engine/cli_datagen.c — the `aha-engine datagen` command: argument parsing
 * and output file handling around datagen_write (datagen.c). Re-entrant (no
 * getopt state), so tests call it directly. */
#include "cli.h"
#include "datagen.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char DATAGEN_USAGE[] =
    "usage: aha-engine datagen arithmetic|countdown --n N --seed S\n"
    "                          [--format rl|text] [--out FILE] [--ops OPS]\n"
    "                          [--split all|train|test --test-percent P]\n"
    "                          [--answer-noise F] [--format-noise F]\n"
    "  --n N          rows to write (1..%ld)\n"
    "  --seed S       unsigned 64-bit seed; the output depends only on it\n"
    "  --format rl    {\"prompt\",\"answer\",...} rows for RL (default)\n"
    "  --format text  {\"text\"} worked solutions for pretraining\n"
    "  --out FILE     write FILE (default: stdout)\n"
    "  --ops OPS      arithmetic operators to draw from, e.g. \"+-\" (default +-*)\n"
    "  --split S      all (default), or the train or test side of a split by\n"
    "                 problem: train and test rows never pose the same problem\n"
    "  --test-percent P  share of problems in the test split (1..99)\n"
    "  --answer-noise F  arithmetic text: fraction of rows with a slip in one\n"
    "                 column, so a wrong answer (default 0)\n"
    "  --format-noise F  arithmetic text: fraction of rows with broken tags\n"
    "                 (no tags, untagged answer, or no </think>; default 0)\n";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prints "datagen: <message>" and a hint to stderr; returns exit code 2. */
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "datagen: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nhint: run \"aha-engine datagen --help\" for usage\n");
    va_end(ap);
    return 2;
}

/* Decimal digits only (no sign, no spaces), fitting in uint64_t. */
static bool parse_u64(const char *s, uint64_t *v)
{
    if (*s < '0' || *s > '9')
        return false;
    errno = 0;
    char *end;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno || *end)
        return false;
    *v = x;
    return true;
}

/* A fraction in 0..1 ("0.25"). */
static bool parse_fraction(const char *s, double *v)
{
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (errno || end == s || *end || !(x >= 0 && x <= 1))
        return false;
    *v = x;
    return true;
}

/* Writes to path via path.tmp.<pid> and rename, so a failure never leaves a
 * partial file at path. Returns 0 or -1 with err filled. */
static int write_file(const char *path, enum datagen_task task,
                      enum datagen_format format, const struct datagen_opts *opts, long n,
                      uint64_t seed, char *err, size_t errlen)
{
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp) {
        snprintf(err, errlen, "datagen: output path too long");
        return -1;
    }
    FILE *f = fopen(tmp, "w");
    if (!f) {
        snprintf(err, errlen, "datagen: cannot create \"%.200s\": %s", tmp, strerror(errno));
        return -1;
    }
    int rc = datagen_write_opts(task, format, opts, n, seed, f, err, errlen);
    if (fclose(f) != 0 && rc == 0) {
        snprintf(err, errlen, "datagen: writing \"%.200s\": %s", tmp, strerror(errno));
        rc = -1;
    }
    if (rc == 0 && rename(tmp, path) != 0) {
        snprintf(err, errlen, "datagen: cannot rename \"%.200s\" to \"%.200s\": %s", tmp, path,
                 strerror(errno));
        rc = -1;
    }
    if (rc != 0)
        unlink(tmp);
    return rc;
}

int cli_datagen(int argc, char **argv)
{
    const char *task_s = NULL, *n_s = NULL, *seed_s = NULL, *format_s = "rl", *out = NULL;
    const char *ops_s = NULL, *split_s = "all", *pct_s = NULL, *anoise_s = NULL, *fnoise_s = NULL;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            printf(DATAGEN_USAGE, DATAGEN_MAX_ROWS);
            return 0;
        }
        if (strncmp(a, "--", 2) != 0) {
            if (task_s)
                return usage_error("unexpected argument \"%s\"", a);
            task_s = a;
            continue;
        }
        /* --opt VALUE or --opt=VALUE */
        const char *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        const char **dst = NULL;
        if (nlen == 3 && strncmp(a, "--n", 3) == 0)
            dst = &n_s;
        else if (nlen == 6 && strncmp(a, "--seed", 6) == 0)
            dst = &seed_s;
        else if (nlen == 8 && strncmp(a, "--format", 8) == 0)
            dst = &format_s;
        else if (nlen == 5 && strncmp(a, "--out", 5) == 0)
            dst = &out;
        else if (nlen == 5 && strncmp(a, "--ops", 5) == 0)
            dst = &ops_s;
        else if (nlen == 7 && strncmp(a, "--split", 7) == 0)
            dst = &split_s;
        else if (nlen == 14 && strncmp(a, "--test-percent", 14) == 0)
            dst = &pct_s;
        else if (nlen == 14 && strncmp(a, "--answer-noise", 14) == 0)
            dst = &anoise_s;
        else if (nlen == 14 && strncmp(a, "--format-noise", 14) == 0)
            dst = &fnoise_s;
        else
            return usage_error("unknown option \"%s\"", a);
        if (eq) {
            *dst = eq + 1;
        } else {
            if (i + 1 >= argc)
                return usage_error("option \"%s\" needs a value", a);
            *dst = argv[++i];
        }
    }

    enum datagen_task task;
    enum datagen_format format;
    uint64_t n, seed;
    if (!task_s)
        return usage_error("missing task (arithmetic or countdown)");
    if (datagen_task_parse(task_s, &task) != 0)
        return usage_error("unknown task \"%s\" (expected arithmetic or countdown)", task_s);
    if (!n_s)
        return usage_error("missing --n");
    if (!parse_u64(n_s, &n) || n < 1 || n > (uint64_t)DATAGEN_MAX_ROWS)
        return usage_error("--n \"%s\": expected a row count from 1 to %ld", n_s,
                           DATAGEN_MAX_ROWS);
    if (!seed_s)
        return usage_error("missing --seed");
    if (!parse_u64(seed_s, &seed))
        return usage_error("--seed \"%s\": expected an unsigned 64-bit integer", seed_s);
    if (datagen_format_parse(format_s, &format) != 0)
        return usage_error("unknown format \"%s\" (expected rl or text)", format_s);
    if (out && !*out)
        return usage_error("--out: empty file name");

    struct datagen_opts opts;
    datagen_opts_default(&opts);
    if (ops_s)
        opts.ops = ops_s;
    if (datagen_split_parse(split_s, &opts.split) != 0)
        return usage_error("unknown split \"%s\" (expected all, train or test)", split_s);
    uint64_t pct = 0;
    if (pct_s && (!parse_u64(pct_s, &pct) || pct < 1 || pct > 99))
        return usage_error("--test-percent \"%s\": expected an integer from 1 to 99", pct_s);
    if ((opts.split != DATAGEN_SPLIT_ALL) != (pct_s != NULL))
        return usage_error("--split train|test and --test-percent go together");
    opts.test_percent = (int)pct;
    if (anoise_s && !parse_fraction(anoise_s, &opts.answer_noise))
        return usage_error("--answer-noise \"%s\": expected a fraction from 0 to 1", anoise_s);
    if (fnoise_s && !parse_fraction(fnoise_s, &opts.format_noise))
        return usage_error("--format-noise \"%s\": expected a fraction from 0 to 1", fnoise_s);

    char err[512];
    int rc = out ? write_file(out, task, format, &opts, (long)n, seed, err, sizeof err)
                 : datagen_write_opts(task, format, &opts, (long)n, seed, stdout, err,
                                      sizeof err);
    if (rc != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    return 0;
}
