/* engine/cli_bench_grpo.c — `bench grpo`: where a GRPO step's time goes
 * (generate, score, reference, train seconds per step) on a randomly
 * initialised model, and the rollout's completion tokens/s against the
 * generation engine's own aggregate decode tokens/s at the same batch
 * (prompts_per_step x group_size sequences, same prompts, max_tokens).
 * Rollouts and bare-engine runs alternate, and the headline ratio is the
 * median over adjacent pairs, so that other load on a shared machine moves
 * both sides together. One JSON line per measurement, like
 * engine/cli_bench.c. Not a test of learning: the model is random (most
 * completions run to max tokens; some end at an end-of-text id). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "errmsg.h"
#include "generate.h"
#include "grpo.h"
#include "model.h"
#include "progress.h"
#include "rewards.h"
#include "rollout.h"
#include "tokenizer.h"

#define BENCH_PROMPT_TEMPLATE "User: {prompt}\nAssistant:"

/* A model directory and an RL dataset for the benchmark under dir. */
static int bench_files(const char *dir, const char *preset, int n_rows, char *err, size_t errlen)
{
    struct model_config cfg;
    if (config_preset(&cfg, preset)) {
        errmsg_set(err, errlen, "unknown config \"%s\" (tiny, small)", preset);
        return -1;
    }
    struct model *m = model_new(&cfg, backend_cpu(), err, errlen);
    if (!m) return -1;
    model_init_random(m, 1, 0.02f);
    char path[4200];
    snprintf(path, sizeof path, "%s/model", dir);
    int rc = model_save(m, path, ST_F32, err, errlen);
    model_free(m);
    if (rc) return -1;
    snprintf(path, sizeof path, "%s/model/tokenizer.json", dir);
    if (tok_write_bytelevel(path, err, errlen)) return -1;
    snprintf(path, sizeof path, "%s/rl.jsonl", dir);
    FILE *f = fopen(path, "w");
    if (!f) { errmsg_set(err, errlen, "%s: cannot write", path); return -1; }
    for (int i = 0; i < n_rows; i++)
        fprintf(f, "{\"prompt\":\"What is %d + %d?\",\"answer\":\"%d\"}\n", 10 + i, 3 * i + 7, 17 + 4 * i);
    return fclose(f) ? -1 : 0;
}

struct rate { double wall, cpu; };     /* tokens per second of each clock */

static void rate_best(struct rate *best, double tokens, double wall, double cpu)
{
    if (tokens / wall > best->wall) best->wall = tokens / wall;
    if (tokens / cpu > best->cpu) best->cpu = tokens / cpu;
}

/* Rollouts against the bare engine on one engine and model, alternated
 * (best of `reps` each, after a warm-up) so that load on a shared machine
 * hits both alike: rollout_generate of P prompts x G samples at
 * temperature 1 (prefill, sampling, stops and bookkeeping included), and
 * the same prompts submitted directly with exactly T tokens each
 * (ignore_eos), timed end to end and from the first decode step on. */
static int rollout_vs_engine(const char *dir, int P, int G, int T, int kv_mb,
                             enum kv_dtype kv_dtype, enum w_dtype dtype, int reps,
                             struct rate *ro_rate, struct rate *dec_rate, struct rate *e2e_rate,
                             double *ratio_median, double per_step[4], char *err, size_t errlen)
{
    double ratios[64], ro_ms[64], en_ms[64];
    double ro_now = 0;
    long long ro_steps = 0, ro_toks = 0, en_steps = 0, en_toks = 0;
    char path[4200];
    snprintf(path, sizeof path, "%s/model", dir);
    struct model *m = model_load(path, backend_cpu(), err, errlen);
    if (!m) return -1;
    struct rl_prompting pr;
    struct rl_dataset ds = {0};
    struct gen_engine *e = NULL;
    struct rollout *ro = calloc((size_t)P * G, sizeof *ro);
    int *rows = calloc((size_t)P, sizeof *rows);
    int rc = -1;
    if (rl_prompting_open(&pr, path, NULL, BENCH_PROMPT_TEMPLATE, false, 512, err, errlen)) {
        model_free(m);
        free(ro);
        free(rows);
        return -1;
    }
    snprintf(path, sizeof path, "%s/rl.jsonl", dir);
    if (!ro || !rows || rl_dataset_load(&ds, path, NULL, err, errlen)) goto out;
    struct gen_config gc;
    gen_config_default(&gc);
    gc.kv_bytes = (size_t)kv_mb << 20;
    gc.kv_dtype = kv_dtype;
    gc.dtype = dtype;
    if (gc.max_seqs < P * G) gc.max_seqs = P * G;
    if (!(e = gen_engine_new(m, pr.tok, &gc, rollout_on_event, NULL, err, errlen))) goto out;
    struct sampler_params sp;
    sampler_params_default(&sp);
    sp.temperature = 1.0f;
    for (int i = 0; i < P; i++) rows[i] = i;
    for (int rep = 0; rep <= reps; rep++) {     /* rep 0 warms up */
        struct gen_stats s0;
        gen_stats_get(e, &s0);
        double w0 = progress_now(), c0 = bench_cpu_seconds();
        if (rollout_generate(e, &ds, &pr, rows, P, G, &sp, T, 1000 + (uint64_t)rep, ro, err, errlen)) goto out;
        double w = progress_now() - w0, c = bench_cpu_seconds() - c0;
        long long toks = 0;
        for (int i = 0; i < P * G; i++) {
            toks += ro[i].n_tokens;
            rollout_free(&ro[i]);
        }
        if (rep) rate_best(ro_rate, (double)toks, w, c);
        ro_now = (double)toks / w;
        struct gen_stats s1;
        gen_stats_get(e, &s1);
        if (rep) {
            ro_steps += s1.steps - s0.steps;
            ro_toks += toks;
            ro_ms[rep - 1] = w * 1e3 / (double)(s1.steps - s0.steps);
        }

        /* the same prompts straight into the engine, T tokens each */
        for (int i = 0; i < P; i++) {
            char text[512];
            snprintf(text, sizeof text, "User: %s\nAssistant:", rl_row_prompt(json_array_get(ds.rows, (size_t)i)));
            int32_t *ids = NULL;
            int n = tok_encode(pr.tok, text, strlen(text), &ids);
            struct gen_request q;
            gen_request_default(&q);
            char id[32];
            snprintf(id, sizeof id, "b%d", i);
            q.id = id;
            q.prompt = ids;
            q.n_prompt = n;
            q.n = G;
            q.max_tokens = T;
            q.sampling = sp;
            q.ignore_eos = true;
            q.has_seed = true;
            q.seed = (uint64_t)i + 1;
            q.user = &ro[i * G];
            int bad = n <= 0 || gen_submit(e, &q, err, errlen);
            free(ids);
            if (bad) goto out;
        }
        struct gen_stats st;
        gen_stats_get(e, &st);
        const long long g_start = st.tokens_generated, steps_start = st.steps;
        double t0 = progress_now(), tc0 = bench_cpu_seconds(), td = 0, tdc = 0;
        long long g0 = 0;
        while (!gen_idle(e)) {
            if (gen_step(e, err, errlen) < 0) goto out;
            gen_stats_get(e, &st);
            /* decode timing starts once every sequence has its first token */
            if (td == 0 && st.tokens_generated - g_start >= (long long)P * G) {
                td = progress_now();
                tdc = bench_cpu_seconds();
                g0 = st.tokens_generated;
            }
        }
        double t1 = progress_now(), tc1 = bench_cpu_seconds();
        gen_stats_get(e, &st);
        for (int i = 0; i < P * G; i++) rollout_free(&ro[i]);
        if (rep) {
            rate_best(e2e_rate, (double)(st.tokens_generated - g_start), t1 - t0, tc1 - tc0);
            if (td > 0 && t1 > td) rate_best(dec_rate, (double)(st.tokens_generated - g0), t1 - td, tc1 - tdc);
            /* each rollout against the engine run right after it */
            en_steps += st.steps - steps_start;
            en_toks += st.tokens_generated - g_start;
            en_ms[rep - 1] = (t1 - t0) * 1e3 / (double)(st.steps - steps_start);
            ratios[rep - 1] = td > 0 && t1 > td ? ro_now / ((double)(st.tokens_generated - g0) / (t1 - td)) : 0;
        }
    }
    *ratio_median = bench_median(ratios, reps);
    per_step[0] = (double)ro_toks / (double)ro_steps;
    per_step[1] = (double)en_toks / (double)en_steps;
    per_step[2] = bench_median(ro_ms, reps);
    per_step[3] = bench_median(en_ms, reps);
    rc = 0;
out:
    gen_engine_free(e);
    for (int i = 0; ro && i < P * G; i++) rollout_free(&ro[i]);
    free(ro);
    free(rows);
    rl_dataset_free(&ds);
    rl_prompting_close(&pr);
    model_free(m);
    return rc;
}

int cli_bench_grpo(int argc, char **argv)
{
    static const char *const opts[] = {"--config", "--threads", "--steps", "--prompts", "--group",
                                       "--max-tokens", "--beta", "--reps", "--kv-dtype", "--dtype",
                                       NULL};
    static const char *const flags[] = {"--rollout-only", NULL};
    if (cli_args_check(argc, argv, opts, flags)) return 2;
    long threads = omp_get_max_threads(), steps = 3, P = 4, G = 8, T = 64, reps = 5;
    double beta = 0.04;
    enum kv_dtype dt = KV_F16;
    enum w_dtype wdt = W_F32;
    if (cli_arg_kv_dtype(argc, argv, &dt) || cli_arg_dtype(argc, argv, NULL, &wdt) ||
        cli_arg_int(argc, argv, "--threads", 1, 1024, &threads) ||
        cli_arg_int(argc, argv, "--steps", 1, 64, &steps) ||
        cli_arg_int(argc, argv, "--prompts", 1, 256, &P) ||
        cli_arg_int(argc, argv, "--group", 2, 256, &G) ||
        cli_arg_int(argc, argv, "--max-tokens", 1, 4096, &T) ||
        cli_arg_int(argc, argv, "--reps", 1, 64, &reps) ||
        cli_arg_float(argc, argv, "--beta", 0, 100, &beta))
        return 2;
    omp_set_num_threads((int)threads);
    const char *preset = cli_arg(argc, argv, "--config");
    if (!preset) preset = "tiny";
    char dir[4096], err[1024], path[4200];
    snprintf(dir, sizeof dir, "%s/aha-bench-grpo-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir)) { perror("bench grpo: mkdtemp"); return 1; }
    int rc = 1;
    struct reward_spec *rs = NULL;
    FILE *ev = tmpfile();
    if (!ev || bench_files(dir, preset, 64, err, sizeof err)) goto fail;
    json_t *spec = json_pack("{s:[{s:s,s:f},{s:s,s:f}]}", "components", "type", "accuracy", "weight", 1.0,
                             "type", "format", "weight", 0.2);
    rs = reward_spec_parse(spec, err, sizeof err);
    json_decref(spec);
    if (!rs) goto fail;

    /* GRPO: one warm-up step, then `steps` measured */
    struct grpo_opts o;
    grpo_opts_default(&o);
    char model_dir[4200], data[4200], out[4200];
    snprintf(model_dir, sizeof model_dir, "%s/model", dir);
    snprintf(data, sizeof data, "%s/rl.jsonl", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    o.model_dir = model_dir;
    o.data = data;
    o.out = out;
    o.stage = "bench";
    o.reward = rs;
    o.prompt_template = BENCH_PROMPT_TEMPLATE;
    o.steps = (int)steps + 1;
    o.prompts_per_step = (int)P;
    o.group_size = (int)G;
    o.max_completion_length = (int)T;
    o.max_prompt_length = 64;
    o.beta = beta;
    o.log_completions = 0;
    o.kv_dtype = dt;
    o.dtype = wdt;
    if (!cli_flag(argc, argv, "--rollout-only") && grpo_run(&o, backend_cpu(), ev, err, sizeof err)) goto fail;
    double sum[6] = {0}, toks = 0;
    static const char *const keys[] = {"time/generate", "time/score", "time/reference", "time/train",
                                       "step_time", "completions/mean_length"};
    int n = 0;
    rewind(ev);
    char line[65536];
    while (fgets(line, sizeof line, ev)) {
        json_t *e = json_loads(line, 0, NULL);
        json_t *v = json_object_get(e, "values");
        if (v && json_integer_value(json_object_get(e, "step")) > 1) {
            for (int k = 0; k < 6; k++) sum[k] += json_number_value(json_object_get(v, keys[k]));
            n++;
        }
        json_decref(e);
    }
    for (int k = 0; n && k < 6; k++) sum[k] /= n;
    toks = sum[5] * P * G;
    double step_tps = sum[0] > 0 ? toks / sum[0] : 0;
    struct rate ro = {0}, dec = {0}, e2e = {0};
    double ratio = 0, per_step[4];
    if (rollout_vs_engine(dir, (int)P, (int)G, (int)T, o.kv_cache_mb, dt, wdt, (int)reps, &ro, &dec, &e2e, &ratio,
                          per_step, err, sizeof err))
        goto fail;
    if (n) printf("{\"bench\":\"grpo_step\",\"config\":\"%s\",\"dtype\":\"%s\",\"kv_dtype\":\"%s\",\"threads\":%ld,"
           "\"prompts_per_step\":%ld,"
           "\"group_size\":%ld,\"max_completion_length\":%ld,\"beta\":%g,\"steps\":%d,"
           "\"generate_s\":%.3f,\"score_s\":%.4f,\"reference_s\":%.3f,\"train_s\":%.3f,\"step_s\":%.3f,"
           "\"mean_completion_tokens\":%.1f}\n",
           preset, w_dtype_name(wdt), kv_dtype_name(dt), threads, P, G, T, beta, n, sum[0], sum[1], sum[2], sum[3], sum[4],
           sum[5]);
    printf("{\"bench\":\"grpo_rollout\",\"config\":\"%s\",\"dtype\":\"%s\",\"kv_dtype\":\"%s\",\"threads\":%ld,"
           "\"sequences\":%ld,"
           "\"max_tokens\":%ld,\"grpo_step_rollout_tokens_per_s\":%.1f,\"rollout_tokens_per_s\":%.1f,"
           "\"engine_decode_tokens_per_s\":%.1f,\"engine_end_to_end_tokens_per_s\":%.1f,"
           "\"rollout_vs_engine_decode\":%.3f,\"rollout_vs_engine_decode_cpu\":%.3f,"
           "\"rollout_vs_engine_end_to_end\":%.3f,\"rollout_vs_engine_decode_median_of_pairs\":%.3f,"
           "\"rollout_tokens_per_engine_step\":%.2f,\"engine_tokens_per_step\":%.2f,"
           "\"rollout_step_ms\":%.2f,\"engine_step_ms\":%.2f,\"target\":0.8}\n",
           preset, w_dtype_name(wdt), kv_dtype_name(dt), threads, P * G, T, step_tps, ro.wall, dec.wall, e2e.wall, dec.wall > 0 ? ro.wall / dec.wall : 0,
           dec.cpu > 0 ? ro.cpu / dec.cpu : 0, e2e.wall > 0 ? ro.wall / e2e.wall : 0, ratio,
           per_step[0], per_step[1], per_step[2], per_step[3]);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "bench grpo: %s\n", err);
out:
    reward_spec_free(rs);
    if (ev) fclose(ev);
    snprintf(path, sizeof path, "rm -rf '%s'", dir);
    if (system(path) != 0) fprintf(stderr, "bench grpo: could not remove %s\n", dir);
    return rc;
}
