/* engine/cli_bench.c — `aha-engine bench matmul|train`: throughput figures
 * as one JSON line per measurement. MFU is reported against the matmul
 * library's own peak measured in the same process, so noisy shared machines
 * move both sides together. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "model.h"
#include "progress.h"
#include "rng.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

double bench_cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Median GFLOP/s of out: (M,N) = A: (M,K) @ B^T over `reps` runs. */
static double bench_gemm(const struct backend *be, int M, int K, int N, int reps)
{
    float *a = be->alloc((size_t)M * K * sizeof(float));
    float *w = be->alloc((size_t)N * K * sizeof(float));
    float *c = be->alloc((size_t)M * N * sizeof(float));
    double t[32], gf = 0;
    if (a && w && c) {
        be->matmul_forward(c, a, w, NULL, M, K, N, 0.0f);   /* warm-up */
        for (int r = 0; r < reps; r++) {
            double t0 = progress_now();
            be->matmul_forward(c, a, w, NULL, M, K, N, 0.0f);
            t[r] = progress_now() - t0;
        }
        gf = 2.0 * M * N * K / bench_median(t, reps) / 1e9;
    }
    be->free(a); be->free(w); be->free(c);
    return gf;
}

/* The library's fp32 peak: the best median over the two reference shapes. */
double bench_matmul_peak(const struct backend *be, bool print)
{
    static const int shapes[][3] = {{2048, 512, 1536}, {2048, 2048, 2048}};
    double peak = 0;
    for (int i = 0; i < 2; i++) {
        double gf = bench_gemm(be, shapes[i][0], shapes[i][1], shapes[i][2], 7);
        if (print)
            printf("{\"bench\":\"matmul\",\"shape\":\"%dx%dx%d\",\"threads\":%d,\"gflops\":%.1f,\"kernel\":\"%s\"}\n",
                   shapes[i][0], shapes[i][1], shapes[i][2], omp_get_max_threads(), gf, be->describe());
        if (gf > peak) peak = gf;
    }
    return peak;
}

static int bench_train(const struct backend *be, const char *preset, int steps)
{
    struct model_config cfg;
    if (config_preset(&cfg, preset)) {
        fprintf(stderr, "bench: unknown config \"%s\" (tiny, small)\n", preset);
        return 2;
    }
    const int B = 8, T = strcmp(preset, "tiny") == 0 ? 256 : 512, N = B * T;
    char err[512];
    struct model *m = model_new(&cfg, be, err, sizeof err);
    if (!m || model_grads_alloc(m)) { fprintf(stderr, "bench: %s\n", m ? "out of memory" : err); model_free(m); return 1; }
    model_init_random(m, 1, 0.02f);
    int32_t *tok = malloc((size_t)N * sizeof *tok), *tgt = malloc((size_t)N * sizeof *tgt);
    float *lp = be->alloc((size_t)N * sizeof(float)), *dlp = malloc((size_t)N * sizeof(float));
    float *dlp_dev = be->alloc((size_t)N * sizeof(float));
    struct rng r;
    rng_seed(&r, 7);
    for (int i = 0; i < N; i++) tok[i] = (int32_t)rng_below(&r, (uint64_t)cfg.vocab_size);
    model_shift_targets(tok, B, T, tgt);
    for (int i = 0; i < N; i++) dlp[i] = -1.0f / N;
    be->upload(dlp_dev, dlp, (size_t)N * sizeof(float));
    double times[64], phase[3] = {0, 0, 0};
    int rc = 0;
    for (int s = -1; s < steps; s++) {      /* step -1 is the warm-up */
        double t0 = progress_now();
        if (model_forward(m, tok, NULL, B, T, err, sizeof err)) { fprintf(stderr, "bench: %s\n", err); rc = 1; break; }
        model_logprobs(m, tgt, lp);
        double t1 = progress_now();
        model_grads_zero(m);
        model_backward(m, tgt, dlp_dev);
        double t2 = progress_now();
        model_grads_clip(m, 1.0f);
        model_adamw_step(m, 1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f);
        double t3 = progress_now();
        if (s >= 0) {
            times[s] = t3 - t0;
            phase[0] += t1 - t0; phase[1] += t2 - t1; phase[2] += t3 - t2;
        }
    }
    if (rc == 0) {
        double peak = bench_matmul_peak(be, false);
        double med = bench_median(times, steps), flops = model_train_flops(&cfg, B, T);
        printf("{\"bench\":\"train\",\"impl\":\"aha\",\"config\":\"%s\",\"threads\":%d,\"batch\":%d,"
               "\"seq\":%d,\"params\":%zu,\"step_ms\":%.1f,\"tokens_per_s\":%.0f,\"gflops\":%.1f,"
               "\"peak_gflops\":%.1f,\"mfu\":%.3f,\"forward_ms\":%.1f,\"backward_ms\":%.1f,"
               "\"optimizer_ms\":%.1f,\"kernel\":\"%s\"}\n",
               preset, omp_get_max_threads(), B, T, m->n_params, med * 1e3, N / med,
               flops / med / 1e9, peak, flops / med / 1e9 / peak, phase[0] / steps * 1e3,
               phase[1] / steps * 1e3, phase[2] / steps * 1e3, be->describe());
    }
    free(tok); free(tgt); free(dlp);
    be->free(lp); be->free(dlp_dev);
    model_free(m);
    return rc;
}

int cli_bench(int argc, char **argv)
{
    static const char *const opts[] = {"--config", "--threads", "--steps", NULL};
    const char *what = argc > 1 ? argv[1] : NULL;
    if (what && strcmp(what, "generate") == 0) return cli_bench_generate(argc - 1, argv + 1);
    if (what && strcmp(what, "grpo") == 0) return cli_bench_grpo(argc - 1, argv + 1);
    if (!what || (strcmp(what, "matmul") && strcmp(what, "train"))) {
        fprintf(stderr, "usage: aha-engine bench matmul|train|generate|grpo [--config tiny|small] [--threads N] [--steps K]\n");
        return 2;
    }
    if (cli_args_check(argc - 1, argv + 1, opts, NULL)) return 2;
    long threads = omp_get_max_threads(), steps = 5;
    if (cli_arg_int(argc, argv, "--threads", 1, 1024, &threads) ||
        cli_arg_int(argc, argv, "--steps", 1, 64, &steps))
        return 2;
    omp_set_num_threads((int)threads);
    const struct backend *be = backend_cpu();
    if (strcmp(what, "matmul") == 0) {
        bench_matmul_peak(be, true);
        return 0;
    }
    const char *cfg = cli_arg(argc, argv, "--config");
    return bench_train(be, cfg ? cfg : "tiny", (int)steps);
}
