/* bench/tokenizer_bench.c — encode throughput of aha's tokenizer, one
 * thread, on a corpus file, timing only tok_encode calls; one JSON line per
 * mode: "docs" encodes the file cut into documents of lines (>= 4 KiB each,
 * as tokenizer_bench.js cuts it), "whole" encodes it in one call. Best of
 * --reps runs after one warm-up. The Rust figures come from
 * tokenizer_bench.js on the same file.
 *   usage: tokenizer-bench --tokenizer FILE --corpus FILE [--reps N] [--name NAME] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tokenizer.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    const char *tf = NULL, *cf = NULL, *name = NULL;
    int reps = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--tokenizer")) tf = argv[i + 1];
        else if (!strcmp(argv[i], "--corpus")) cf = argv[i + 1];
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--name")) name = argv[i + 1];
    }
    if (!tf || !cf || reps < 1) {
        fprintf(stderr, "usage: tokenizer-bench --tokenizer FILE --corpus FILE [--reps N] [--name NAME]\n");
        return 2;
    }
    FILE *f = fopen(cf, "rb");
    if (!f) {
        perror(cf);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    if (!text || fread(text, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "%s: cannot read\n", cf);
        return 1;
    }
    fclose(f);
    char err[1024];
    double t0 = now();
    struct tokenizer *tok = tok_load(tf, err, sizeof err);
    double load_s = now() - t0;
    if (!tok) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    for (int mode = 0; mode < 2; mode++) {
        double best = 1e30;
        long ntok = 0;
        for (int r = 0; r <= reps; r++) {
            double total = 0;
            ntok = 0;
            for (long a = 0; a < n;) {
                long b = a;
                if (mode == 1) {
                    b = n;
                } else {
                    while (b < n && b - a < 4096) {
                        char *nl = memchr(text + b, '\n', (size_t)(n - b));
                        b = nl ? nl - text + 1 : n;
                    }
                }
                int32_t *ids;
                double t = now();
                int k = tok_encode(tok, text + a, (size_t)(b - a), &ids);
                total += now() - t;
                free(ids);
                if (k < 0) {
                    fprintf(stderr, "encode failed\n");
                    return 1;
                }
                ntok += k;
                a = b;
            }
            if (r > 0 && total < best) best = total;    /* run 0 warms the caches */
        }
        printf("{\"bench\":\"tokenizer_encode\",\"impl\":\"aha\",\"mode\":\"%s\",\"tokenizer\":\"%s\","
               "\"bytes\":%ld,\"tokens\":%ld,\"seconds\":%.4f,\"mb_per_s\":%.2f,\"load_seconds\":%.3f}\n",
               mode ? "whole" : "docs", name ? name : tf, n, ntok, best, (double)n / 1e6 / best, load_s);
    }
    tok_free(tok);
    free(text);
    return 0;
}
