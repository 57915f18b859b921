/* engine/pretrain.c — see pretrain.h. The loop: sample B windows of T+1
 * tokens, forward, log-probs of the next tokens, loss = -mean log p,
 * backward with dL/dlogp = -1/(B*T), clip, AdamW. */
#include "pretrain.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "events.h"
#include "jsonl.h"
#include "progress.h"
#include "dist.h"
#include "rng.h"
#include "schedule.h"
#include "errmsg.h"

void pretrain_opts_default(struct pretrain_opts *o)
{
    memset(o, 0, sizeof *o);
    o->stage = "pretrain";
    o->steps = 300;
    o->batch = 8;
    o->seq_len = 256;
    o->lr = 1e-3f;
    o->min_lr_ratio = 0.1f;
    o->warmup_steps = -1;       /* -1: 5% of steps */
    o->weight_decay = 0.1f;
    o->beta1 = 0.9f;
    o->beta2 = 0.95f;
    o->eps = 1e-8f;
    o->max_grad_norm = 1.0f;
    o->checkpoint_every = 0;
    o->log_every = 10;
    o->seed = 1;
}

float pretrain_lr(const struct pretrain_opts *o, int step)
{
    int warm = o->warmup_steps >= 0 ? o->warmup_steps : o->steps / 20;
    return lr_warmup_cosine(step, o->steps, warm, o->lr, o->min_lr_ratio);
}

/* The growing token stream pretrain_load_text builds. */
struct text_stream {
    const struct tokenizer *tok;
    int32_t eos;
    int32_t *ids;
    size_t n, cap;
};

static int text_row(void *ctx, json_t *row, char *err, size_t errlen)
{
    struct text_stream *st = ctx;
    if (!json_is_object(row)) { errmsg_set(err, errlen, "row is not a JSON object"); return -1; }
    json_t *text = json_object_get(row, "text");
    if (!json_is_string(text)) {
        errmsg_set(err, errlen, "field \"text\" is %s", text ? "not a string" : "missing");
        return -1;
    }
    int32_t *t = NULL;
    int k = tok_encode(st->tok, json_string_value(text), json_string_length(text), &t);
    if (k < 0) { errmsg_set(err, errlen, "cannot tokenize \"text\""); return -1; }
    if (st->n + (size_t)k + 1 > st->cap) {
        size_t cap = st->cap ? st->cap : 1 << 16;
        while (st->n + (size_t)k + 1 > cap) cap *= 2;
        int32_t *grown = realloc(st->ids, cap * sizeof *grown);
        if (!grown) { free(t); errmsg_set(err, errlen, "out of memory"); return -1; }
        st->ids = grown;
        st->cap = cap;
    }
    memcpy(st->ids + st->n, t, (size_t)k * sizeof *t);
    st->n += (size_t)k;
    st->ids[st->n++] = st->eos;
    free(t);
    return 0;
}

long pretrain_load_text(const char *path, const struct tokenizer *tok,
                        int32_t eos, int32_t **out, char *err, size_t errlen)
{
    struct text_stream st = {.tok = tok, .eos = eos};
    if (jsonl_read(path, text_row, &st, err, errlen) < 0) {
        free(st.ids);
        return -1;
    }
    *out = st.ids;
    return (long)st.n;
}

static int load_config(const char *spec, struct model_config *cfg, char *err, size_t errlen)
{
    if (config_preset(cfg, spec) == 0) return 0;
    struct stat st;
    if (stat(spec, &st) != 0) {
        errmsg_set(err, errlen, "--config: \"%s\" is neither a preset (tiny, small) nor a file", spec);
        return -1;
    }
    return config_load(cfg, spec, err, errlen);
}

/* m's weights := those of the checkpoint in dir, which must have m's
 * layout (model_load checks its tensors against its config.json, the size
 * against m's here). */
static int load_checkpoint_weights(struct model *m, const char *dir, const struct backend *be,
                                   char *err, size_t errlen)
{
    struct model *c = model_load(dir, be, err, errlen);
    if (!c) return -1;
    if (c->n_params != m->n_params) {
        model_free(c);
        errmsg_set(err, errlen, "%s/model.safetensors: the checkpoint's model is not the one "
                   "params.config describes", dir);
        return -1;
    }
    float *host = malloc(m->n_params * sizeof(float));
    const bool ok = host != NULL;
    if (ok) {
        be->download(host, c->params, m->n_params * sizeof(float));
        be->upload(m->params, host, m->n_params * sizeof(float));
        model_params_changed(m);
    }
    free(host);
    model_free(c);
    if (!ok) errmsg_set(err, errlen, "out of memory");
    return ok ? 0 : -1;
}

/* Writes model + tokenizer to dir, and when resumable (rng non-NULL) the
 * optimizer and trainer state after `step` (engine/checkpoint.h). */
static int save_checkpoint(const struct pretrain_opts *o, const struct model *m, const char *dir,
                           int step, const struct rng *rng, char *err, size_t errlen)
{
    char path[4096];
    if (!dist_leader()) return 0;   /* rank 0 writes for the job */
    if (o->init) {
        /* a continued model keeps the tokenizer and chat template it came with */
        if (model_save_dir_from(m, o->init, dir, err, errlen)) return -1;
    } else {
        if (model_save(m, dir, ST_F32, err, errlen)) return -1;
        snprintf(path, sizeof path, "%s/tokenizer.json", dir);
        if (tok_write_bytelevel(path, err, errlen)) return -1;
        /* Chat through the format of aha's synthetic text ("User: ...\n
         * Assistant: ..."), which is what these models are pretrained on. */
        snprintf(path, sizeof path, "%s/chat_template.name", dir);
        FILE *tf = fopen(path, "w");
        int bad = !tf;
        if (tf) {
            bad = fputs("plain\n", tf) < 0;
            bad |= fclose(tf) != 0;
        }
        if (bad) {
            errmsg_set(err, errlen, "%s: cannot write", path);
            return -1;
        }
    }
    if (!rng) return 0;
    /* The data position is the RNG itself: windows are drawn from it. */
    return ckpt_write(m, dir, o->ctl, o->stage, "pretrain", step, o->steps, rng, NULL, err, errlen);
}

int pretrain_run(const struct pretrain_opts *o, const struct backend *be,
                 FILE *events, char *err, size_t errlen)
{
    struct model_config cfg;
    char path[4096];
    if (o->init) {
        /* continued pretraining: the model brings its config and tokenizer */
        if (o->config) {
            errmsg_set(err, errlen, "a config and a model to continue from are exclusive: "
                       "the model's config.json is used");
            return -1;
        }
        snprintf(path, sizeof path, "%s/config.json", o->init);
        if (config_load(&cfg, path, err, errlen)) return -1;
    } else if (load_config(o->config, &cfg, err, errlen)) {
        return -1;
    }
    if (!o->init && cfg.vocab_size < TOK_BYTELEVEL_VOCAB) {
        errmsg_set(err, errlen, "config: vocab_size %d is smaller than the byte-level tokenizer (%d)",
             cfg.vocab_size, TOK_BYTELEVEL_VOCAB);
        return -1;
    }
    if (o->steps <= 0 || o->batch <= 0 || o->seq_len < 2 ||
        o->seq_len > cfg.max_position_embeddings) {
        errmsg_set(err, errlen, "steps and batch must be positive and 2 <= seq_len <= %d",
             cfg.max_position_embeddings);
        return -1;
    }
    /* The tokenizer is the one the checkpoint will carry: the initial
     * model's, or the byte-level one, written first and loaded back
     * through the general loader. Documents end with eos. */
    struct tokenizer *tok;
    int32_t eos;
    if (o->init) {
        snprintf(path, sizeof path, "%s/tokenizer.json", o->init);
        if (!(tok = tok_load(path, err, errlen))) return -1;
        eos = cfg.eos_token_id;
        if (eos < 0 || eos >= cfg.vocab_size) {
            errmsg_set(err, errlen, "%s/config.json: eos_token_id is %s; pretraining ends every "
                       "document with it", o->init, eos < 0 ? "missing" : "outside the vocabulary");
            tok_free(tok);
            return -1;
        }
    } else {
        snprintf(path, sizeof path, "%s/aha-tokenizer-%d.json",
                 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
        if (tok_write_bytelevel(path, err, errlen)) return -1;
        tok = tok_load(path, err, errlen);
        remove(path);
        if (!tok) return -1;
        eos = tok_token_id(tok, "<|endoftext|>");
    }
    int32_t *stream = NULL;
    long n_tok = pretrain_load_text(o->data, tok, eos, &stream, err, errlen);
    tok_free(tok);
    if (n_tok < 0) return -1;
    for (long i = 0; i < n_tok; i++)
        if (stream[i] < 0 || stream[i] >= cfg.vocab_size) {
            errmsg_set(err, errlen, "%s: the tokenizer gives token %d, outside the model's vocabulary (%d)",
                       o->data, stream[i], cfg.vocab_size);
            free(stream);
            return -1;
        }
    const int B = o->batch, T = o->seq_len, N = B * T;
    if (n_tok < T + 2) {
        errmsg_set(err, errlen, "%s: only %ld tokens, need more than seq_len + 1 (%d)", o->data, n_tok, T + 1);
        free(stream);
        return -1;
    }

    /* a continued model is loaded as sft and grpo load theirs; a resumed
     * one gets the checkpoint's weights below */
    const bool resuming = o->ctl && o->ctl->resume_dir;
    struct model *m = o->init && !resuming ? model_load(o->init, be, err, errlen)
                                           : model_new(&cfg, be, err, errlen);
    int rc = -1;
    int32_t *tokens = malloc((size_t)N * sizeof *tokens);
    int32_t *targets = malloc((size_t)N * sizeof *targets);
    float *logp = NULL, *dlogp = NULL;
    if (!m || !tokens || !targets) goto out;
    logp = be->alloc((size_t)N * sizeof(float));
    dlogp = be->alloc((size_t)N * sizeof(float));
    float *hd = malloc((size_t)N * sizeof(float));
    float *hl = malloc((size_t)N * sizeof(float));
    if (!logp || !dlogp || !hd || !hl || model_grads_alloc(m)) {
        free(hd); free(hl);
        errmsg_set(err, errlen, "out of memory");
        goto out;
    }
    struct rng r;
    rng_seed(&r, o->seed ^ 0x5eedda7aULL);
    int step0 = 0;
    if (resuming) {
        if (load_checkpoint_weights(m, o->ctl->resume_dir, be, err, errlen)) goto out_hl0;
        if ((step0 = ckpt_resume(o->ctl, m, o->steps, &r, err, errlen)) < 0) goto out_hl0;
    } else if (!o->init) {
        model_init_random(m, o->seed, 0.02f);
    }
    /* data-parallel (engine/dist.h): this rank's rows of each step's batch
     * are b = rank, rank + P, ...; every rank draws all B windows to keep
     * the RNG in step, and the loss stays the mean over the whole batch */
    const int P = dist_size(), rank = dist_rank(), Bl = B / P + (rank < B % P), Nl = Bl * T;
    if (Bl == 0) {
        errmsg_set(err, errlen, "batch_size %d is smaller than the %d data-parallel ranks", B, P);
        goto out_hl0;
    }
    for (int i = 0; i < N; i++) hd[i] = -1.0f / (float)N;
    be->upload(dlogp, hd, (size_t)N * sizeof(float));
    free(hd);
    hd = NULL;

    struct progress prog;
    progress_init(&prog, o->steps);
    events_emit(events, json_pack("{s:s,s:s,s:s,s:s,s:s,s:I,s:I,s:i,s:i}", "type", "stage", "stage", o->stage,
                                  "kind", "pretrain", "status", "running", "path", o->out,
                                  "tokens", (json_int_t)n_tok, "params", (json_int_t)m->n_params,
                                  "steps", o->steps, "start_step", step0));
    double t_start = progress_now(), t_last = t_start;
    long tok_since = 0;
    for (int step = step0; step < o->steps; step++) {
        for (int b = 0, l = 0; b < B; b++) {
            long off = (long)rng_below(&r, (uint64_t)(n_tok - T - 1));
            if (b % P != rank) continue;
            memcpy(tokens + (size_t)l * T, stream + off, (size_t)T * sizeof *tokens);
            memcpy(targets + (size_t)l * T, stream + off + 1, (size_t)T * sizeof *targets);
            l++;
        }
        if (model_forward(m, tokens, NULL, Bl, T, err, errlen)) goto out_hl;
        model_logprobs(m, targets, logp);
        model_grads_zero(m);
        model_backward(m, targets, dlogp);
        dist_sum_floats(m->grads, m->n_params);
        float gnorm = model_grads_clip(m, o->max_grad_norm);
        float lr = pretrain_lr(o, step);
        if (model_adamw_step(m, lr, o->beta1, o->beta2, o->eps, o->weight_decay)) {
            errmsg_set(err, errlen, "out of memory for optimizer state");
            goto out_hl;
        }
        be->download(hl, logp, (size_t)Nl * sizeof(float));
        double loss = 0;
        for (int i = 0; i < Nl; i++) loss -= hl[i];
        loss = dist_sum(loss) / N;
        if (!isfinite(loss)) {
            errmsg_set(err, errlen, "step %d: loss is not finite (%g); lower the learning rate", step + 1, loss);
            goto out_hl;
        }
        tok_since += N;
        double now = progress_now();
        char extra[128];
        snprintf(extra, sizeof extra, "loss %.4f | lr %.2e | %.1fk tok/s", loss, lr,
                 (double)(step + 1 - step0) * N / (now - t_start) / 1e3);
        progress_update(&prog, step + 1, extra);
        if ((step + 1) % o->log_every == 0 || step + 1 == o->steps) {
            events_emit(events, json_pack("{s:s,s:s,s:i,s:{s:f,s:f,s:f,s:f}}", "type", "metric",
                                          "stage", o->stage, "step", step + 1, "values", "loss", loss,
                                          "learning_rate", (double)lr, "grad_norm", (double)gnorm,
                                          "tokens_per_second", (double)tok_since / (now - t_last)));
            t_last = now;
            tok_since = 0;
        }
        bool stop = dist_any(ckpt_stop_requested(o->ctl)) && step + 1 < o->steps;
        if ((o->checkpoint_every > 0 && (step + 1) % o->checkpoint_every == 0 && step + 1 < o->steps) || stop) {
            char dir[4096];
            snprintf(dir, sizeof dir, "%s/checkpoints/step-%d", o->out, step + 1);
            if (save_checkpoint(o, m, dir, step + 1, &r, err, errlen)) goto out_hl;
            events_emit(events, json_pack("{s:s,s:s,s:i,s:s}", "type", "checkpoint", "stage", o->stage,
                                          "step", step + 1, "path", dir));
            if (stop) {
                progress_finish(&prog);
                snprintf(o->ctl->stopped_at, sizeof o->ctl->stopped_at, "%s", dir);
                rc = TRAIN_STOPPED;
                goto out_hl;
            }
        }
    }
    progress_finish(&prog);
    if (save_checkpoint(o, m, o->out, o->steps, NULL, err, errlen)) goto out_hl;
    events_emit(events, json_pack("{s:s,s:s,s:s,s:s,s:s,s:f}", "type", "stage", "stage", o->stage,
                                  "kind", "pretrain", "status", "succeeded", "path", o->out,
                                  "seconds", progress_now() - t_start));
    rc = 0;
out_hl:
    free(hl);
    goto out;
out_hl0:
    free(hd);
    free(hl);
out:
    if (logp) be->free(logp);
    if (dlogp) be->free(dlogp);
    free(tokens);
    free(targets);
    free(stream);
    model_free(m);
    return rc;
}
