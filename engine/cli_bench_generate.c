/* engine/cli_bench_generate.c — `bench generate`: throughput of the
 * generation engine (engine/generate.c) on a randomly initialised model:
 * the machine's memory read bandwidth, prefill tokens/s, and aggregate
 * decode tokens/s with 1, 4, 16 and 64 concurrent sequences, against the
 * bandwidth bound of decoding (every weight read once per step) and the
 * roofline (that, or the step's matmul FLOPs at the matmul library's peak,
 * whichever is longer: batches past the machine's FLOP/byte ridge are
 * compute-bound). One JSON line per measurement, like engine/cli_bench.c;
 * with --profile, a prefill_profile line and a decode_profile line per
 * concurrency split the steps into their ops (ms per step: attention, the
 * matmuls, norms, sampling...). Then, with the prefix cache: a prompt
 * whose first blocks are cached against the same prompt computed whole;
 * last, one sequence with and without speculative decoding. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "generate.h"
#include "model.h"
#include "progress.h"
#include "rng.h"

/* Bytes streamed by the bandwidth probe (well above any cache). */
#define BENCH_BW_BYTES ((size_t)512 << 20)

/* Best-of-5 read bandwidth in GB/s: a parallel sum over a large buffer,
 * allocated as the weights are (the backend's allocator: huge pages where
 * the kernel allows), so that the bound is what the weights could get. */
static double bench_bandwidth(const struct backend *be)
{
    size_t n = BENCH_BW_BYTES / sizeof(float);
    float *a = be->alloc(n * sizeof(float));
    if (!a) return 0;
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] = (float)(i & 7);
    double best = 0, sink = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = progress_now(), s = 0;
        #pragma omp parallel for simd schedule(static) reduction(+:s)
        for (size_t i = 0; i < n; i++) s += a[i];
        double gbs = (double)n * sizeof(float) / (progress_now() - t0) / 1e9;
        sink += s;
        if (gbs > best) best = gbs;
    }
    be->free(a);
    return sink == -1 ? 0 : best;
}


/* "medium": the decode benchmark model (Llama-like proportions). */
static int bench_config(struct model_config *c, const char *name)
{
    if (strcmp(name, "medium") != 0) return config_preset(c, name);
    if (config_preset(c, "small")) return -1;
    c->vocab_size = 32000;
    c->hidden_size = 1024;
    c->n_layers = 16;
    c->n_heads = 16;
    c->n_kv_heads = 4;
    c->head_dim = 64;
    c->intermediate_size = 2816;
    return 0;
}

static void bench_noop(void *ctx, const struct gen_event *ev) { (void)ctx; (void)ev; }

/* A draft for m: its first `layers` layers, embedding, final norm and
 * (tied) head, the same tensors by name (an early exit of m, as in
 * LayerSkip's self-speculation). NULL with err set on failure. */
static struct model *bench_truncated(const struct model *m, int layers, char *err, size_t errlen)
{
    struct model_config dc = m->cfg;
    dc.n_layers = layers;
    struct model *d = model_new(&dc, m->be, err, errlen);
    float *src = d ? malloc(m->n_params * sizeof(float)) : NULL;
    float *dst = src ? calloc(d->n_params, sizeof(float)) : NULL;
    if (!dst) {
        if (d) snprintf(err, errlen, "out of memory");
        free(src);
        model_free(d);
        return NULL;
    }
    m->be->download(src, m->params, m->n_params * sizeof(float));
    for (int i = 0; i < d->n_views; i++)
        for (int j = 0; j < m->n_views; j++)
            if (!strcmp(d->views[i].name, m->views[j].name))
                memcpy(dst + d->views[i].offset, src + m->views[j].offset,
                       d->views[i].numel * sizeof(float));
    d->be->upload(d->params, dst, d->n_params * sizeof(float));
    model_params_changed(d);
    free(src);
    free(dst);
    return d;
}

/* Submits `conc` requests of prompt_len random tokens and max_tokens
 * decode tokens each, sampled at temperature temp. */
static int submit_batch(struct gen_engine *e, const struct model_config *c, int conc,
                        int prompt_len, int max_tokens, uint64_t seed, float temp)
{
    int32_t *p = malloc((size_t)prompt_len * sizeof *p);
    struct rng r;
    rng_seed(&r, seed);
    char id[32], err[256];
    int rc = 0;
    for (int i = 0; i < conc && p && rc == 0; i++) {
        for (int t = 0; t < prompt_len; t++) p[t] = (int32_t)rng_below(&r, (uint64_t)c->vocab_size);
        struct gen_request q;
        gen_request_default(&q);
        snprintf(id, sizeof id, "b%d", i);
        q.id = id;
        q.prompt = p;
        q.n_prompt = prompt_len;
        q.max_tokens = max_tokens;
        q.ignore_eos = true;
        q.has_seed = true;
        q.seed = seed + (uint64_t)i;
        q.sampling.temperature = temp;
        if (gen_submit(e, &q, err, sizeof err)) { fprintf(stderr, "bench: %s\n", err); rc = -1; }
    }
    free(p);
    return p ? rc : -1;
}

/* One submit_batch request run alone to the end on e: its seconds (or -1),
 * and the engine's steps and draft counts added to *steps, *drafted,
 * *kept. */
static double bench_alone(struct gen_engine *e, const struct model_config *c, int prompt_len,
                          int max_tokens, float temp, uint64_t seed, long long *steps,
                          long long *drafted, long long *kept)
{
    char err[256];
    struct gen_stats a, b;
    gen_stats_get(e, &a);
    double t0 = progress_now();
    int rc = submit_batch(e, c, 1, prompt_len, max_tokens, seed, temp);
    while (rc == 0 && !gen_idle(e))
        if (gen_step(e, err, sizeof err) < 0) { fprintf(stderr, "bench: %s\n", err); rc = -1; }
    double t = progress_now() - t0;
    if (rc) return -1;
    gen_stats_get(e, &b);
    *steps += b.steps - a.steps;
    *drafted += b.spec_drafted - a.spec_drafted;
    *kept += b.spec_accepted - a.spec_accepted;
    return t;
}

/* max_tokens of each of decode_once's requests: the first token, the
 * untimed step, the timed steps, and the tokens a sequence may generate
 * before the timing. Prompts prefilled over several steps start decoding
 * as they finish (continuous batching): up to one token per prefill step,
 * at most conc * ctx / step_tokens + 1 of them. */
static int decode_max_tokens(int conc, int ctx, int step_tokens, int steps)
{
    return 2 + (int)((long long)conc * ctx / step_tokens + 1) + steps;
}

/* One decode measurement: conc sequences with ctx-token prompts, all
 * prefilled and one step decoded, then `steps` timed steps of all of them
 * (added to prof unless it is NULL), then the rest cancelled. Returns 0 and
 * wall and CPU seconds per step and tokens/s, or -1 with err set. */
static int decode_once(struct gen_engine *e, const struct model_config *cfg, int conc, int ctx,
                       int step_tokens, int steps, struct gen_profile *prof, double *step_s,
                       double *cpu_s, double *tps, char *err, size_t errlen)
{
    if (submit_batch(e, cfg, conc, ctx, decode_max_tokens(conc, ctx, step_tokens, steps), 7, 1.0f)) {
        snprintf(err, errlen, "could not submit %d requests", conc);
        return -1;
    }
    struct gen_stats st;
    gen_stats_get(e, &st);
    const long long before = st.tokens_prefilled;
    do {
        if (gen_step(e, err, errlen) < 0) return -1;
        gen_stats_get(e, &st);
    } while (st.tokens_prefilled - before < (long long)conc * ctx);
    if (gen_step(e, err, errlen) < 0) return -1;
    gen_stats_get(e, &st);
    long long g0 = st.tokens_generated, s0 = st.steps;
    gen_profile_attach(e, prof);
    double t0 = progress_now(), c0 = bench_cpu_seconds();
    for (int s = 0; s < steps; s++)
        if (gen_step(e, err, errlen) < 0) { gen_profile_attach(e, NULL); return -1; }
    double t = progress_now() - t0, cpu = bench_cpu_seconds() - c0;
    gen_profile_attach(e, NULL);
    gen_stats_get(e, &st);
    const double nsteps = (double)(st.steps - s0);
    *step_s = t / nsteps;
    *cpu_s = cpu / nsteps;
    *tps = (double)(st.tokens_generated - g0) / t;
    char id[32];
    for (int i = 0; i < conc; i++) {
        snprintf(id, sizeof id, "b%d", i);
        gen_cancel(e, id);
    }
    while (!gen_idle(e))
        if (gen_step(e, err, errlen) < 0) return -1;
    return 0;
}

/* Profiled steps' time by kind of op, ms per step (mean over the steps
 * profiled); "other" is the step's time outside them (scheduling, block
 * tables, packing). bw > 0 (decode): also the rate the attention read the
 * cache at, against the memory bandwidth measured in the run. */
static void print_profile(const char *bench, const char *name, int conc,
                          const struct gen_profile *p, double bw)
{
    const double per = p->steps > 0 ? 1e3 / (double)p->steps : 0;
    double ops = 0;
    printf("{\"bench\":\"%s\",\"config\":\"%s\",\"concurrency\":%d,\"steps\":%lld,"
           "\"step_ms\":%.3f,\"ms_per_step\":{", bench, name, conc, p->steps, p->step_s * per);
    for (int i = 0; i < GEN_PROF_N; i++) {
        printf("\"%s\":%.3f,", gen_prof_op_names[i], p->s[i] * per);
        ops += p->s[i];
    }
    printf("\"other\":%.3f}", (p->step_s - ops) * per);
    const double att = p->s[GEN_PROF_ATTENTION];
    if (bw > 0 && att > 0 && p->steps > 0) {
        const double gbs = p->kv_bytes / att / 1e9;
        printf(",\"attention_kv_mb_per_step\":%.2f,\"attention_gb_per_s\":%.1f,"
               "\"attention_fraction_of_bandwidth\":%.3f",
               p->kv_bytes / (double)p->steps / 1e6, gbs, gbs / bw);
    }
    printf("}\n");
}

int cli_bench_generate(int argc, char **argv)
{
    static const char *const opts[] = {"--config", "--threads", "--steps", "--prompt-len",
                                       "--concurrency", "--rounds", "--kv-dtype", "--context",
                                       "--layers", "--dtype", NULL};
    static const char *const flags[] = {"--no-batch-invariant", "--profile", NULL};
    if (cli_args_check(argc, argv, opts, flags)) return 2;
    long threads = omp_get_max_threads(), steps = 16, plen = 256, only = 0, rounds = 3, ctx = 64;
    long layers = 0;
    enum kv_dtype dt = KV_F16;
    enum w_dtype wdt = W_F32;
    if (cli_arg_kv_dtype(argc, argv, &dt) || cli_arg_dtype(argc, argv, NULL, &wdt) ||
        cli_arg_int(argc, argv, "--threads", 1, 1024, &threads) ||
        cli_arg_int(argc, argv, "--steps", 1, 1024, &steps) ||
        cli_arg_int(argc, argv, "--prompt-len", 1, 4096, &plen) ||
        cli_arg_int(argc, argv, "--context", 1, 4096, &ctx) ||
        cli_arg_int(argc, argv, "--concurrency", 1, 64, &only) ||
        cli_arg_int(argc, argv, "--rounds", 1, 99, &rounds) ||
        cli_arg_int(argc, argv, "--layers", 1, 256, &layers))
        return 2;
    omp_set_num_threads((int)threads);
    const char *name = cli_arg(argc, argv, "--config");
    if (!name) name = "small";
    struct model_config cfg;
    if (bench_config(&cfg, name)) {
        fprintf(stderr, "bench generate: unknown config \"%s\" (tiny, small, medium)\n", name);
        return 2;
    }
    /* --layers: the config's layers, more or fewer (how the figures change
     * once the weights no longer fit in the last-level cache) */
    if (layers) cfg.n_layers = (int)layers;
    const struct backend *be = backend_cpu();
    char err[512];
    struct model *m = model_new(&cfg, be, err, sizeof err);
    if (!m) { fprintf(stderr, "bench generate: %s\n", err); return 1; }
    model_init_random(m, 1, 0.02f);
    double bw = bench_bandwidth(be), peak = bench_matmul_peak(be, false);
    printf("{\"bench\":\"memory_bandwidth\",\"threads\":%ld,\"read_gb_per_s\":%.2f,"
           "\"matmul_peak_gflops\":%.1f}\n", threads, bw, peak);

    /* Per decode step every matrix is read once: all parameters except the
     * embedding table, which is read again as the lm_head when tied; in
     * --dtype's elements (the norms' few weights counted as such too;
     * q8: a byte per weight and a 4-byte scale per 32; q4: half a byte). */
    const size_t emb = (size_t)cfg.vocab_size * cfg.hidden_size;
    const double wbytes = (double)(m->n_params - (cfg.tie_word_embeddings ? 0 : emb)) *
                          (wdt == W_BF16 ? 2 : wdt == W_Q8 ? 1.125 : wdt == W_Q4 ? 0.625 : 4);
    const double bound = bw * 1e9 / wbytes;
    /* The roofline of a step of conc sequences: it cannot beat streaming
     * the weights once, nor its matmul FLOPs at the library's peak
     * (attention and its KV reads not counted). */
    const double mflop = 2.0 * model_matmul_params(&cfg);
    /* bf16: the peak of vdpbf16ps (AVX512_BF16), which does two fp32
     * FMAs' work per lane (measured on Zen 5: 397 against 215 GFLOP/s per
     * core); the printed matmul_peak_gflops stays fp32's */
    if (wdt == W_BF16) peak *= 2.0;
    /* q8: vpdpbusd (AVX512_VNNI) does four int8 products per lane where
     * an fp32 FMA does one, and each block's 8 of them per accumulator
     * take about 3 more instructions of scaling: about 3x */
    if (wdt == W_Q8) peak *= 3.0;
    /* q4: the same products, plus unpacking the nibbles (3 instructions per
     * 64 weights, against 2 x MR vpdpbusd) */
    if (wdt == W_Q4) peak *= 3.0;
    const double roof1 = fmax(wbytes / (bw * 1e9), mflop / (peak * 1e9));

    struct gen_config gc;
    gen_config_default(&gc);
    gc.max_seqs = 64;
    /* all 64 prompts of 64 tokens prefill in one step, so that the timed
     * decode steps run every sequence in lockstep */
    gc.max_step_tokens = (int)(plen > 64 * 64 ? plen : 64 * 64);
    /* room for 64 sequences of decode_once's prompt and tokens, a block
     * more each for rounding (512 MiB at least) */
    const size_t pos_bytes =
        (size_t)cfg.n_layers * cfg.n_kv_heads * kv_head_bytes(dt, cfg.head_dim);
    const long seq_pos =
        ctx + decode_max_tokens(64, (int)ctx, gc.max_step_tokens, (int)steps) + gc.block_size;
    gc.kv_bytes = (size_t)64 * (size_t)seq_pos * pos_bytes;
    if (gc.kv_bytes < (size_t)512 << 20) gc.kv_bytes = (size_t)512 << 20;
    gc.kv_dtype = dt;
    gc.batch_invariant = !cli_flag(argc, argv, "--no-batch-invariant");
    gc.dtype = wdt;
    struct gen_engine *e = gen_engine_new(m, NULL, &gc, bench_noop, NULL, err, sizeof err);
    if (!e) { fprintf(stderr, "bench generate: %s\n", err); model_free(m); return 1; }
    int rc = 1;

    /* prefill: one prompt of plen tokens in one step (after a warm-up) */
    const bool profile = cli_flag(argc, argv, "--profile");
    struct gen_profile pprof;
    memset(&pprof, 0, sizeof pprof);
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        if (submit_batch(e, &cfg, 1, (int)plen, 1, 1, 1.0f)) goto out;
        gen_profile_attach(e, profile && r > 0 ? &pprof : NULL);
        double t0 = progress_now();
        while (!gen_idle(e)) if (gen_step(e, err, sizeof err) < 0) goto fail;
        double t = progress_now() - t0;
        gen_profile_attach(e, NULL);
        if (r > 0 && t < best) best = t;
    }
    printf("{\"bench\":\"prefill\",\"config\":\"%s\",\"layers\":%d,\"batch_invariant\":%s,"
           "\"dtype\":\"%s\",\"kv_dtype\":\"%s\",\"threads\":%ld,\"prompt_tokens\":%ld,"
           "\"ms\":%.1f,\"tokens_per_s\":%.0f}\n", name, cfg.n_layers,
           gc.batch_invariant ? "true" : "false", w_dtype_name(wdt), kv_dtype_name(dt), threads,
           plen, best * 1e3,
           plen / best);
    if (profile) print_profile("prefill_profile", name, 1, &pprof, 0);

    /* decode: every concurrency once per round, rounds interleaved, so
     * that a burst of load on a shared machine hits one round of each, not
     * all of one; each figure is the median over the rounds, and the
     * speedup is the median of the rounds' own ratios (16 vs 1 measured
     * seconds apart, not minutes) */
    enum { NCONC = 4 };
    static const int concs[NCONC] = {1, 4, 16, 64};
    double step_s[NCONC][99], cpu_s[NCONC][99], tps[NCONC][99], ratio[NCONC][99];
    struct gen_profile prof[NCONC];
    memset(prof, 0, sizeof prof);
    for (int r = 0; r < rounds; r++)
        for (int ci = 0; ci < NCONC; ci++) {
            if (only && concs[ci] != only) continue;
            if (decode_once(e, &cfg, concs[ci], (int)ctx, gc.max_step_tokens, (int)steps,
                            profile ? &prof[ci] : NULL,
                            &step_s[ci][r], &cpu_s[ci][r], &tps[ci][r], err, sizeof err))
                goto fail;
            ratio[ci][r] = only ? 0 : tps[ci][r] / tps[0][r];
        }
    for (int ci = 0; ci < NCONC; ci++) {
        const int conc = concs[ci];
        if (only && conc != only) continue;
        /* medians; the ratios sorted, so [0] and [rounds-1] are the spread */
        const int n = (int)rounds;
        const double step_med = bench_median(step_s[ci], n), cpu_med = bench_median(cpu_s[ci], n);
        const double tps_med = bench_median(tps[ci], n), ratio_med = bench_median(ratio[ci], n);
        const double roof = fmax(wbytes / (bw * 1e9), conc * mflop / (peak * 1e9));
        printf("{\"bench\":\"decode\",\"config\":\"%s\",\"layers\":%d,\"batch_invariant\":%s,"
               "\"dtype\":\"%s\",\"kv_dtype\":\"%s\","
               "\"threads\":%ld,\"concurrency\":%d,\"context\":%ld,"
               "\"rounds\":%ld,\"step_ms\":%.2f,\"step_cpu_ms\":%.2f,\"tokens_per_s\":%.1f,\"speedup_vs_single\":%.2f,"
               "\"speedup_min\":%.2f,\"speedup_max\":%.2f,"
               "\"weights_mb\":%.1f,\"bandwidth_bound_tokens_per_s\":%.1f,"
               "\"fraction_of_bound_per_step\":%.3f,\"roofline_step_ms\":%.2f,"
               "\"fraction_of_roofline\":%.3f,\"roofline_speedup\":%.2f}\n",
               name, cfg.n_layers, gc.batch_invariant ? "true" : "false", w_dtype_name(wdt),
               kv_dtype_name(dt), threads,
               conc, ctx, rounds,
               step_med * 1e3, cpu_med * 1e3, tps_med, ratio_med, ratio[ci][0], ratio[ci][n - 1],
               wbytes / 1e6, bound, (tps_med / conc) / bound, roof * 1e3, roof / step_med,
               conc * roof1 / roof);
        if (profile) print_profile("decode_profile", name, conc, &prof[ci], bw);
    }
    /* the prefix cache (serving's default): a prompt of plen tokens whose
     * first whole blocks another request left cached, against the same
     * prompt computed whole; fresh prompts each round (an engine of its
     * own, so the figures above are the cache-less engine's) */
    gen_engine_free(e);
    gc.prefix_cache = true;
    e = gen_engine_new(m, NULL, &gc, bench_noop, NULL, err, sizeof err);
    if (!e) { fprintf(stderr, "bench generate: %s\n", err); model_free(m); return 1; }
    double cold = 1e30, warm = 1e30;
    for (int r = 0; r < 3; r++)
        for (int k = 0; k < 2; k++) {
            if (submit_batch(e, &cfg, 1, (int)plen, 1, 100 + (uint64_t)r, 1.0f)) goto out;
            double t0 = progress_now();
            while (!gen_idle(e)) if (gen_step(e, err, sizeof err) < 0) goto fail;
            double t = progress_now() - t0;
            if (k == 0 && t < cold) cold = t;
            if (k == 1 && t < warm) warm = t;
        }
    struct gen_stats pst;
    gen_stats_get(e, &pst);
    printf("{\"bench\":\"prefill_prefix_cache\",\"config\":\"%s\",\"prompt_tokens\":%ld,"
           "\"cached_tokens\":%lld,\"cold_ms\":%.1f,\"cached_ms\":%.2f,\"speedup\":%.1f}\n",
           name, plen, pst.prefix_hits / 3, cold * 1e3, warm * 1e3, cold / warm);

    /* speculative decoding by prompt lookup: one sequence of 256 tokens
     * after a 64-token prompt, with and without drafts (engines alternated
     * per round, best of 3). Greedy, this random model soon repeats itself
     * (as small models do), and the drafts are mostly kept; sampled at
     * temperature 1 they mostly fail, which shows what trying costs. The
     * engines are serving's (prefix cache on; the prompts differ). Then
     * with a draft model: the model's first quarter of layers
     * (bench_truncated). A random model's residual stream is mostly its
     * embedding, so this draft agrees with it often: what the machinery
     * gains with a cheaper draft that is mostly right (a trained pair's
     * agreement is its own). */
    struct gen_config sc = gc;
    sc.spec_tokens = 4;
    struct model *dm = NULL;
    for (int method = 0; method < 2; method++) {
        if (method) {
            dm = bench_truncated(m, cfg.n_layers / 4 > 0 ? cfg.n_layers / 4 : 1, err, sizeof err);
            if (!dm) { fprintf(stderr, "bench generate: %s\n", err); goto out; }
            sc.spec_model = dm;
        }
        struct gen_engine *es = gen_engine_new(m, NULL, &sc, bench_noop, NULL, err, sizeof err);
        if (!es) { fprintf(stderr, "bench generate: %s\n", err); model_free(dm); goto out; }
        for (int mode = 0; mode < 2; mode++) {
            const float temp = mode ? 1.0f : 0.0f;
            enum { GEN = 256 };
            double fast[2] = {1e30, 1e30};
            long long nsteps[2] = {0, 0}, drafted = 0, kept = 0, none = 0;
            for (int r = 0; r < 3; r++)
                for (int k = 0; k < 2; k++) {
                    const double t = bench_alone(k ? es : e, &cfg, 64, GEN, temp,
                                                 200 + 100 * (uint64_t)method + (uint64_t)r,
                                                 &nsteps[k], k ? &drafted : &none,
                                                 k ? &kept : &none);
                    if (t < 0) { gen_engine_free(es); model_free(dm); goto out; }
                    if (t < fast[k]) fast[k] = t;
                }
            printf("{\"bench\":\"decode_speculative\",\"config\":\"%s\",\"method\":\"%s\",",
                   name, method ? "draft_model" : "ngram");
            if (method) printf("\"draft_layers\":%d,", dm->cfg.n_layers);
            printf("\"num_speculative_tokens\":%d,\"temperature\":%.0f,\"tokens\":%d,"
                   "\"tokens_per_s\":%.1f,\"tokens_per_s_without\":%.1f,\"speedup\":%.2f,"
                   "\"tokens_per_step\":%.2f,\"draft_tokens\":%lld,\"drafts_kept\":%.3f}\n",
                   sc.spec_tokens, temp, GEN, GEN / fast[1], GEN / fast[0], fast[0] / fast[1],
                   3.0 * GEN / (double)nsteps[1], drafted / 3,
                   drafted ? (double)kept / (double)drafted : 0.0);
        }
        gen_engine_free(es);
    }
    model_free(dm);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "bench generate: %s\n", err);
out:
    gen_engine_free(e);
    model_free(m);
    return rc;
}
