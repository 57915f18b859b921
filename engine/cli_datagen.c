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
    "                          [--format rl|text] [--out FILE]\n"
    "  --n N          rows to write (1..%ld)\n"
    "  --seed S       unsigned 64-bit seed; the output depends only on it\n"
    "  --format rl    {\"prompt\",\"answer\",...} rows for RL (default)\n"
    "  --format text  {\"text\"} worked solutions for pretraining\n"
    "  --out FILE     write FILE (default: stdout)\n";

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

/* Writes to path via path.tmp.<pid> and rename, so a failure never leaves a
 * partial file at path. Returns 0 or -1 with err filled. */
static int write_file(const char *path, enum datagen_task task,
                      enum datagen_format format, long n, uint64_t seed,
                      char *err, size_t errlen)
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
    int rc = datagen_write(task, format, n, seed, f, err, errlen);
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

    char err[512];
    int rc = out ? write_file(out, task, format, (long)n, seed, err, sizeof err)
                 : datagen_write(task, format, (long)n, seed, stdout, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    return 0;
}
