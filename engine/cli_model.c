/* engine/cli_model.c — the model subcommands: forward (logits and gradients
 * for parity checks), pretrain, and sample (plain recompute-everything
 * sampling; the KV-cache generator is engine/generate). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "model.h"
#include "pretrain.h"
#include "rng.h"
#include "tokenizer.h"

int cli_forward(int argc, char **argv)
{
    static const char *const opts[] = {"--model", "--tokens", "--logits-out", "--grads-out", NULL};
    if (cli_args_check(argc, argv, opts, NULL)) return 2;
    const char *dir = cli_arg(argc, argv, "--model"), *toks = cli_arg(argc, argv, "--tokens");
    const char *lout = cli_arg(argc, argv, "--logits-out"), *gout = cli_arg(argc, argv, "--grads-out");
    if (!dir || !toks || !lout) {
        fprintf(stderr, "usage: aha-engine forward --model DIR --tokens 1,2,3 --logits-out FILE [--grads-out FILE]\n");
        return 2;
    }
    int32_t *ids;
    int T = cli_parse_ids(toks, &ids);
    if (T < 0) {
        fprintf(stderr, "forward: --tokens: expected comma-separated non-negative integers, got \"%s\"\n", toks);
        return 2;
    }
    char err[1024];
    const struct backend *be = backend_cpu();
    struct model *m = model_load(dir, be, err, sizeof err);
    int rc = 1;
    float *logits = NULL, *lp = NULL, *dlp = NULL;
    int32_t *targets = NULL;
    if (!m) { fprintf(stderr, "forward: %s\n", err); goto out; }
    if (T > m->cfg.max_position_embeddings) {
        fprintf(stderr, "forward: %d tokens exceed max_position_embeddings (%d)\n", T, m->cfg.max_position_embeddings);
        goto out;
    }
    if (model_forward(m, ids, NULL, 1, T, err, sizeof err)) {
        fprintf(stderr, "forward: %s\n", err);
        goto out;
    }
    const int V = m->cfg.vocab_size;
    logits = malloc((size_t)T * V * sizeof(float));
    if (!logits) { fprintf(stderr, "forward: out of memory\n"); goto out; }
    model_logits(m, 0, T, logits);
    FILE *f = fopen(lout, "wb");
    if (!f || fwrite(logits, sizeof(float), (size_t)T * V, f) != (size_t)T * V) {
        fprintf(stderr, "forward: %s: cannot write\n", lout);
        if (f) fclose(f);
        goto out;
    }
    if (fclose(f)) { fprintf(stderr, "forward: %s: cannot write\n", lout); goto out; }
    if (gout) {
        /* Gradient of the mean next-token cross-entropy over 0..T-2. */
        targets = malloc((size_t)T * sizeof *targets);
        lp = malloc((size_t)T * sizeof *lp);
        dlp = malloc((size_t)T * sizeof *dlp);
        if (!targets || !lp || !dlp || model_grads_alloc(m)) { fprintf(stderr, "forward: out of memory\n"); goto out; }
        int count = model_shift_targets(ids, 1, T, targets);
        for (int i = 0; i < T; i++) dlp[i] = count > 0 ? -1.0f / (float)count : 0.0f;
        model_logprobs(m, targets, lp);
        model_backward(m, targets, dlp);
        if (model_save_buffer(m, m->grads, "", gout, err, sizeof err)) {
            fprintf(stderr, "forward: %s\n", err);
            goto out;
        }
    }
    rc = 0;
out:
    free(ids);
    free(logits);
    free(targets);
    free(lp);
    free(dlp);
    model_free(m);
    return rc;
}

int cli_pretrain(int argc, char **argv)
{
    static const char *const opts[] = {"--config", "--init", "--data", "--steps", "--out", "--batch",
        "--seq-len", "--lr", "--warmup", "--weight-decay", "--checkpoint-every", "--seed",
        "--max-grad-norm", "--log-every", NULL};
    if (cli_args_check(argc, argv, opts, NULL)) return 2;
    struct pretrain_opts o;
    pretrain_opts_default(&o);
    o.config = cli_arg(argc, argv, "--config");
    o.init = cli_arg(argc, argv, "--init");
    o.data = cli_arg(argc, argv, "--data");
    o.out = cli_arg(argc, argv, "--out");
    if (!o.config == !o.init || !o.data || !o.out) {
        fprintf(stderr, "usage: aha-engine pretrain (--config tiny|small|FILE | --init MODEL_DIR) --data FILE\n"
                        "  --steps N --out DIR\n"
                        "  [--batch B] [--seq-len T] [--lr LR] [--warmup N] [--weight-decay W]\n"
                        "  [--max-grad-norm G] [--checkpoint-every N] [--log-every N] [--seed S]\n");
        return 2;
    }
    long steps = o.steps, batch = o.batch, seq = o.seq_len, warm = o.warmup_steps;
    long ckpt = 0, seed = (long)o.seed, logev = o.log_every;
    double lr = o.lr, wd = o.weight_decay, gn = o.max_grad_norm;
    if (cli_arg_int(argc, argv, "--steps", 1, 10000000, &steps) ||
        cli_arg_int(argc, argv, "--batch", 1, 4096, &batch) ||
        cli_arg_int(argc, argv, "--seq-len", 2, 1 << 20, &seq) ||
        cli_arg_int(argc, argv, "--warmup", 0, 10000000, &warm) ||
        cli_arg_int(argc, argv, "--checkpoint-every", 0, 10000000, &ckpt) ||
        cli_arg_int(argc, argv, "--log-every", 1, 10000000, &logev) ||
        cli_arg_int(argc, argv, "--seed", 0, INT32_MAX, &seed) ||
        cli_arg_float(argc, argv, "--lr", 0, 10, &lr) ||
        cli_arg_float(argc, argv, "--weight-decay", 0, 10, &wd) ||
        cli_arg_float(argc, argv, "--max-grad-norm", 0, 1e9, &gn))
        return 2;
    o.steps = (int)steps; o.batch = (int)batch; o.seq_len = (int)seq;
    o.warmup_steps = cli_arg(argc, argv, "--warmup") ? (int)warm : -1;
    o.checkpoint_every = (int)ckpt; o.log_every = (int)logev; o.seed = (uint64_t)seed;
    o.lr = (float)lr; o.weight_decay = (float)wd; o.max_grad_norm = (float)gn;
    char err[1024];
    if (pretrain_run(&o, backend_cpu(), stdout, err, sizeof err)) {
        fprintf(stderr, "pretrain: %s\n", err);
        return 1;
    }
    return 0;
}

/* Samples one id from logits: (V) at temperature temp (0 = argmax). */
static int sample_logits(float *logits, int V, float temp, struct rng *r)
{
    int best = 0;
    for (int v = 1; v < V; v++)
        if (logits[v] > logits[best]) best = v;
    if (temp <= 0) return best;
    const float mx = logits[best];
    double sum = 0;
    for (int v = 0; v < V; v++) sum += (logits[v] = expf((logits[v] - mx) / temp));
    double u = rng_uniform(r) * sum, acc = 0;
    for (int v = 0; v < V; v++) {
        acc += logits[v];
        if (u < acc) return v;
    }
    return best;
}

int cli_sample(int argc, char **argv)
{
    static const char *const opts[] = {"--model", "--prompt", "--max-tokens", "--temperature", "--seed", NULL};
    if (cli_args_check(argc, argv, opts, NULL)) return 2;
    const char *dir = cli_arg(argc, argv, "--model"), *prompt = cli_arg(argc, argv, "--prompt");
    long max_tokens = 64, seed = 0;
    double temp = 1.0;
    if (!dir || !prompt) {
        fprintf(stderr, "usage: aha-engine sample --model DIR --prompt TEXT [--max-tokens N] [--temperature T] [--seed S]\n");
        return 2;
    }
    if (cli_arg_int(argc, argv, "--max-tokens", 0, 1 << 20, &max_tokens) ||
        cli_arg_int(argc, argv, "--seed", 0, INT32_MAX, &seed) ||
        cli_arg_float(argc, argv, "--temperature", 0, 100, &temp))
        return 2;
    char err[1024], path[4096];
    const struct backend *be = backend_cpu();
    struct model *m = model_load(dir, be, err, sizeof err);
    if (!m) { fprintf(stderr, "sample: %s\n", err); return 1; }
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    struct tokenizer *tok = tok_load(path, err, sizeof err);
    if (!tok) { fprintf(stderr, "sample: %s\n", err); model_free(m); return 1; }
    int32_t *ids = NULL;
    int n = tok_encode(tok, prompt, strlen(prompt), &ids);
    int rc = 1;
    const int V = m->cfg.vocab_size, maxT = m->cfg.max_position_embeddings;
    int32_t eos[3] = {tok_token_id(tok, "<|endoftext|>"), tok_token_id(tok, "<|im_end|>"), m->cfg.eos_token_id};
    int32_t *seq = malloc(((size_t)n + (size_t)max_tokens + 1) * sizeof *seq);
    float *logits = malloc((size_t)V * sizeof *logits);
    if (n < 0 || !seq || !logits) { fprintf(stderr, "sample: cannot tokenize the prompt\n"); goto out; }
    int T = 0;
    if (n == 0) seq[T++] = eos[0] >= 0 ? eos[0] : 0;   /* start-of-text */
    memcpy(seq + T, ids, (size_t)n * sizeof *seq);
    T += n;
    const int start = T;
    struct rng r;
    rng_seed(&r, (uint64_t)seed);
    for (long i = 0; i < max_tokens && T < maxT; i++) {
        if (model_forward(m, seq, NULL, 1, T, err, sizeof err)) { fprintf(stderr, "sample: %s\n", err); goto out; }
        model_logits(m, T - 1, 1, logits);
        int next = sample_logits(logits, V, (float)temp, &r);
        if (next == eos[0] || next == eos[1] || next == eos[2]) break;
        seq[T++] = next;
    }
    char *text = tok_decode(tok, seq + start, (size_t)(T - start), NULL);
    if (text) { printf("%s%s\n", prompt, text); free(text); }
    rc = 0;
out:
    free(ids);
    free(seq);
    free(logits);
    tok_free(tok);
    model_free(m);
    return rc;
}
