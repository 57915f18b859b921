/* engine/cli_generate.c — `aha-engine generate`: one prompt (text or ids),
 * n samples through the generation engine (engine/generate.c), streamed to
 * the terminal or printed as one JSON object per sample. Not the server
 * protocol (engine/serve.c). */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "generate.h"
#include "jsonl.h"
#include "model.h"
#include "tokenizer.h"

struct gen_cli {
    bool json;
    int n;
    json_t **results;       /* (n) with --json */
    char **texts;           /* (n) without --json and n > 1 */
};

static void cli_on_event(void *ctx, const struct gen_event *ev)
{
    struct gen_cli *c = ctx;
    if (ev->kind == GEN_EVENT_TOKEN) {
        if (!c->json && c->n == 1) {
            fwrite(ev->text, 1, ev->text_len, stdout);
            fflush(stdout);
        }
        return;
    }
    if (ev->kind != GEN_EVENT_DONE) return;
    if (c->json) {
        json_t *toks = json_array(), *lps = json_array();
        for (int i = 0; i < ev->completion_tokens; i++) {
            json_array_append_new(toks, json_integer(ev->tokens[i]));
            json_array_append_new(lps, json_real(ev->token_logprobs[i]));
        }
        c->results[ev->index] = json_pack("{s:i, s:o, s:o, s:o, s:s, s:i, s:i}",
            "index", ev->index, "tokens", toks, "text", jsonl_text(ev->full_text, ev->full_len),
            "logprobs", lps, "finish_reason", gen_finish_name(ev->finish),
            "prompt_tokens", ev->prompt_tokens, "completion_tokens", ev->completion_tokens);
    } else if (c->n == 1) {
        fputc('\n', stdout);
    } else {
        c->texts[ev->index] = strndup(ev->full_text, ev->full_len);
    }
}

int cli_generate(int argc, char **argv)
{
    static const char *const opts[] = {"--model", "--prompt", "--prompt-tokens", "--max-tokens",
        "--temperature", "--top-p", "--top-k", "--min-p", "--repetition-penalty", "--seed", "--n",
        "--stop", "--logprobs", "--kv-memory-mb", "--kv-dtype", "--dtype", "--logit-bias",
        "--json-schema", "--speculative-tokens", "--prompt-lookup-min", "--prompt-lookup-max",
        "--draft-model", NULL};
    static const char *const flags[] = {"--json", "--ignore-eos", "--json-object", NULL};
    if (cli_args_check(argc, argv, opts, flags)) return 2;
    const char *dir = cli_arg(argc, argv, "--model"), *prompt = cli_arg(argc, argv, "--prompt");
    const char *ptoks = cli_arg(argc, argv, "--prompt-tokens"), *stop = cli_arg(argc, argv, "--stop");
    if (!dir || !prompt == !ptoks) {
        fprintf(stderr, "usage: aha-engine generate --model DIR (--prompt TEXT | --prompt-tokens 1,2,3)\n"
                        "  [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] [--min-p P]\n"
                        "  [--repetition-penalty R] [--seed S] [--n N] [--stop STR] [--logprobs K]\n"
                        "  [--ignore-eos] [--kv-memory-mb M] [--kv-dtype f16|f32|q8] [--dtype auto|f32|bf16|q8|q4]\n"
                        "  [--logit-bias ID=BIAS,...] [--json-object | --json-schema FILE] [--json]\n"
                        "  [--speculative-tokens K [--prompt-lookup-min A] [--prompt-lookup-max B]\n"
                        "   | --draft-model DIR]]\n");
        return 2;
    }
    struct gen_request r;
    gen_request_default(&r);
    r.max_tokens = 64;
    long max_tokens = r.max_tokens, seed = -1, n = 1, top_k = 0, logprobs = 0, kv_mb = 256;
    long spec = 0, look_min = 1, look_max = 4;
    double temp = 1.0, top_p = 1.0, min_p = 0.0, rep = 1.0;
    enum kv_dtype dt = KV_F16;
    enum w_dtype wdt;             /* --dtype, default auto (after loading) */
    if (cli_arg_kv_dtype(argc, argv, &dt) ||
        cli_arg_int(argc, argv, "--max-tokens", 0, 1 << 20, &max_tokens) ||
        cli_arg_int(argc, argv, "--seed", 0, INT64_MAX, &seed) ||
        cli_arg_int(argc, argv, "--n", 1, GEN_MAX_N, &n) ||
        cli_arg_int(argc, argv, "--top-k", 0, 1 << 30, &top_k) ||
        cli_arg_int(argc, argv, "--logprobs", 0, SAMPLER_MAX_TOP, &logprobs) ||
        cli_arg_int(argc, argv, "--kv-memory-mb", 1, 1 << 20, &kv_mb) ||
        cli_arg_int(argc, argv, "--speculative-tokens", 0, GEN_MAX_SPEC, &spec) ||
        cli_arg_int(argc, argv, "--prompt-lookup-min", 1, 16, &look_min) ||
        cli_arg_int(argc, argv, "--prompt-lookup-max", 1, 16, &look_max) ||
        cli_arg_float(argc, argv, "--temperature", 0, 100, &temp) ||
        cli_arg_float(argc, argv, "--top-p", 1e-9, 1, &top_p) ||
        cli_arg_float(argc, argv, "--min-p", 0, 1, &min_p) ||
        cli_arg_float(argc, argv, "--repetition-penalty", 1e-6, 100, &rep))
        return 2;
    int32_t bias_ids[GEN_MAX_BIAS];
    float bias_vals[GEN_MAX_BIAS];
    int n_bias = 0;
    const char *lb = cli_arg(argc, argv, "--logit-bias");
    for (const char *q = lb; q && *q; n_bias++) {
        char *end;
        errno = 0;
        long id = strtol(q, &end, 10);
        const bool id_ok = end != q && *end == '=' && !errno && id >= 0 && id <= INT32_MAX;
        double b = id_ok ? strtod(end + 1, &end) : 0;
        if (!id_ok || n_bias == GEN_MAX_BIAS || (*end && *end != ',') || !(b >= -100 && b <= 100)) {
            fprintf(stderr, "generate: --logit-bias: expected ID=BIAS,... (at most %d, each bias "
                    "in [-100, 100]), got \"%s\"\n", GEN_MAX_BIAS, lb);
            return 2;
        }
        bias_ids[n_bias] = (int32_t)id;
        bias_vals[n_bias] = (float)b;
        q = *end ? end + 1 : end;
    }
    int32_t *ids = NULL;
    int P = 0;
    if (ptoks && (P = cli_parse_ids(ptoks, &ids)) < 0) {
        fprintf(stderr, "generate: --prompt-tokens: expected comma-separated non-negative integers, got \"%s\"\n", ptoks);
        return 2;
    }
    char err[1024], path[4096];
    const struct backend *be = backend_cpu();
    struct model *m = NULL, *draft = NULL;
    struct tokenizer *tok = NULL;
    struct gen_engine *e = NULL;
    struct jg_schema *schema = NULL;
    struct gen_cli c = {.json = cli_flag(argc, argv, "--json"), .n = (int)n};
    int rc = 1;
    m = model_load(dir, be, err, sizeof err);
    if (!m) { fprintf(stderr, "generate: %s\n", err); goto out; }
    w_dtype_parse("auto", m, &wdt);
    if (cli_arg_dtype(argc, argv, m, &wdt)) { rc = 2; goto out; }
    const char *ddir = cli_arg(argc, argv, "--draft-model");
    if (ddir && !spec) {
        fprintf(stderr, "generate: --draft-model needs --speculative-tokens K (K >= 1)\n");
        rc = 2;
        goto out;
    }
    if (ddir && !(draft = model_load(ddir, be, err, sizeof err))) {
        fprintf(stderr, "generate: draft model: %s\n", err);
        goto out;
    }
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (prompt || access(path, R_OK) == 0) {
        tok = tok_load(path, err, sizeof err);
        if (!tok) { fprintf(stderr, "generate: %s\n", err); goto out; }
    }
    if (prompt) {
        P = tok_encode(tok, prompt, strlen(prompt), &ids);
        if (P < 0) { fprintf(stderr, "generate: cannot tokenize the prompt\n"); goto out; }
        if (P == 0) {
            /* an empty prompt starts from the beginning-of-text token */
            int32_t bos = m->cfg.bos_token_id >= 0 ? m->cfg.bos_token_id : tok_token_id(tok, "<|endoftext|>");
            free(ids);
            ids = malloc(sizeof *ids);
            if (!ids || bos < 0) { fprintf(stderr, "generate: the prompt is empty\n"); goto out; }
            ids[0] = bos;
            P = 1;
        }
    }
    struct gen_config cfg;
    gen_config_default(&cfg);
    cfg.kv_bytes = (size_t)kv_mb << 20;
    cfg.kv_dtype = dt;
    cfg.dtype = wdt;
    if (n > cfg.max_seqs) cfg.max_seqs = (int)n;
    if (cfg.max_step_tokens < cfg.max_seqs) cfg.max_step_tokens = cfg.max_seqs;
    cfg.spec_tokens = (int)spec;
    cfg.spec_ngram_min = (int)look_min;
    cfg.spec_ngram_max = (int)look_max;
    cfg.spec_model = draft;
    cfg.discard_matrices = true;    /* only generated with: the weights held once */
    c.results = calloc((size_t)n, sizeof *c.results);
    c.texts = calloc((size_t)n, sizeof *c.texts);
    if (!c.results || !c.texts) { fprintf(stderr, "generate: out of memory\n"); goto out; }
    e = gen_engine_new(m, tok, &cfg, cli_on_event, &c, err, sizeof err);
    if (!e) { fprintf(stderr, "generate: %s\n", err); goto out; }
    const char *stops[1] = {stop};
    r.id = "cli";
    r.prompt = ids;
    r.n_prompt = P;
    r.n = (int)n;
    r.max_tokens = (int)max_tokens;
    r.sampling.temperature = (float)temp;
    r.sampling.top_p = (float)top_p;
    r.sampling.top_k = (int)top_k;
    r.sampling.min_p = (float)min_p;
    r.sampling.repetition_penalty = (float)rep;
    r.has_seed = seed >= 0;
    r.seed = (uint64_t)seed;
    r.stop = stops;
    r.n_stop = stop ? 1 : 0;
    r.ignore_eos = cli_flag(argc, argv, "--ignore-eos");
    r.json_object = cli_flag(argc, argv, "--json-object");
    const char *schema_path = cli_arg(argc, argv, "--json-schema");
    if (schema_path) {
        json_error_t je;
        json_t *js = json_load_file(schema_path, 0, &je);
        if (!js) {
            fprintf(stderr, "generate: %s:%d: %s\n", schema_path, je.line, je.text);
            goto out;
        }
        schema = jg_schema_compile(js, err, sizeof err);
        json_decref(js);
        if (!schema) { fprintf(stderr, "generate: %s: %s\n", schema_path, err); goto out; }
        r.json_schema = schema;
    }
    r.bias_ids = bias_ids;
    r.bias_vals = bias_vals;
    r.n_bias = n_bias;
    r.logprobs = (int)logprobs;
    if (gen_submit(e, &r, err, sizeof err)) { fprintf(stderr, "generate: %s\n", err); goto out; }
    while (!gen_idle(e))
        if (gen_step(e, err, sizeof err) < 0) { fprintf(stderr, "generate: %s\n", err); goto out; }
    for (int i = 0; i < n; i++) {
        if (c.json && c.results[i]) {
            char *s = json_dumps(c.results[i], JSON_COMPACT);
            if (s) printf("%s\n", s);
            free(s);
        } else if (!c.json && n > 1 && c.texts[i]) {
            printf("--- sample %d ---\n%s\n", i, c.texts[i]);
        }
    }
    rc = 0;
out:
    for (int i = 0; c.results && i < n; i++) json_decref(c.results[i]);
    for (int i = 0; c.texts && i < n; i++) free(c.texts[i]);
    free(c.results);
    free(c.texts);
    gen_engine_free(e);
    jg_schema_free(schema);
    free(ids);
    tok_free(tok);
    model_free(draft);
    model_free(m);
    return rc;
}
