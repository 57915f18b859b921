/* engine/sft.c — see sft.h. Rows become (input, target) pairs where
 * target[t] = label[t+1] (-1 = no loss); the loss is the mean negative
 * log-likelihood over all target tokens of the batch (token-level mean, as
 * TRL's SFTTrainer), so long completions weigh more than short ones. */
#include "sft.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "events.h"
#include "generate.h"
#include "kd_loss.h"
#include "jsonl.h"
#include "progress.h"
#include "rng.h"
#include "rollout.h"
#include "schedule.h"
#include "errmsg.h"

void sft_example_free(struct sft_example *e)
{
    free(e->ids);
    free(e->labels);
    memset(e, 0, sizeof *e);
}

/* Appends the tokens of text[0..len) to e, labelled when `train`. */
static int append_text(struct sft_example *e, int *cap, const struct tokenizer *tok,
                       const char *text, size_t len, bool train)
{
    if (len == 0) return 0;
    int32_t *ids = NULL;
    int k = tok_encode(tok, text, len, &ids);
    if (k < 0) return -1;
    if (e->n + k + 1 > *cap) {
        int ncap = (*cap ? *cap : 64);
        while (ncap < e->n + k + 1) ncap *= 2;
        int32_t *a = realloc(e->ids, (size_t)ncap * sizeof *a);
        if (a) e->ids = a;
        int32_t *b = a ? realloc(e->labels, (size_t)ncap * sizeof *b) : NULL;
        if (b) e->labels = b;
        if (!a || !b) { free(ids); return -1; }
        *cap = ncap;
    }
    for (int i = 0; i < k; i++) {
        e->ids[e->n + i] = ids[i];
        e->labels[e->n + i] = train ? ids[i] : -1;
    }
    e->n += k;
    free(ids);
    return 0;
}

/* Builds the message list for a row: prompt/completion (strings or message
 * arrays) or messages. Returns a new JSON array or NULL with err. */
static json_t *row_messages(const json_t *row, size_t *n_prompt, char *err, size_t errlen)
{
    const json_t *msgs = json_object_get(row, "messages");
    if (msgs) {
        if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
            errmsg_set(err, errlen, "field \"messages\" must be a non-empty array");
            return NULL;
        }
        *n_prompt = 0;
        return json_deep_copy(msgs);
    }
    const json_t *p = json_object_get(row, "prompt"), *c = json_object_get(row, "completion");
    if (!p || !c) {
        errmsg_set(err, errlen, "field \"%s\" is missing (rows need \"prompt\" and \"completion\", or \"messages\")",
             p ? "completion" : "prompt");
        return NULL;
    }
    json_t *out = json_array();
    if (json_is_string(p)) {
        json_array_append_new(out, json_pack("{s:s,s:O}", "role", "user", "content", p));
    } else if (json_is_array(p)) {
        json_array_extend(out, (json_t *)p);
    } else {
        errmsg_set(err, errlen, "field \"prompt\" must be a string or a messages array");
        json_decref(out);
        return NULL;
    }
    *n_prompt = json_array_size(out);
    if (json_is_string(c)) {
        json_array_append_new(out, json_pack("{s:s,s:O}", "role", "assistant", "content", c));
    } else if (json_is_array(c)) {
        json_array_extend(out, (json_t *)c);
    } else {
        errmsg_set(err, errlen, "field \"completion\" must be a string or a messages array");
        json_decref(out);
        return NULL;
    }
    return out;
}

static char *render_prefix(enum chat_template_kind kind, const json_t *msgs, size_t n,
                           bool gen, char *err, size_t errlen)
{
    json_t *part = json_array();
    for (size_t i = 0; i < n; i++) json_array_append(part, json_array_get(msgs, i));
    struct chat_opts co = {.add_generation_prompt = gen, .prefill_think = 0};
    char *s = chat_template_render_json(kind, part, &co, err, errlen);
    json_decref(part);
    return s;
}

int sft_tokenize_row(const json_t *row, const struct tokenizer *tok,
                     enum chat_template_kind kind, int32_t eos,
                     struct sft_example *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!json_is_object(row)) { errmsg_set(err, errlen, "row is not a JSON object"); return -1; }
    size_t n_prompt = 0;
    json_t *msgs = row_messages(row, &n_prompt, err, errlen);
    if (!msgs) return -1;
    const size_t n = json_array_size(msgs);
    for (size_t i = 0; i < n; i++) {
        const json_t *m = json_array_get(msgs, i);
        if (!json_is_object(m) || !json_is_string(json_object_get(m, "role")) ||
            !json_is_string(json_object_get(m, "content"))) {
            errmsg_set(err, errlen, "messages[%zu]: expected {\"role\": string, \"content\": string}", i);
            json_decref(msgs);
            return -1;
        }
    }
    char *full = render_prefix(kind, msgs, n, false, err, errlen);
    if (!full) { json_decref(msgs); return -1; }
    /* Loss spans [start, end) in `full`: each assistant turn after the
     * prompt whose generation-prompt prefix is a prefix of the full text. */
    size_t cursor = 0;
    int cap = 0, rc = -1, spans = 0;
    const size_t flen = strlen(full);
    for (size_t i = n_prompt; i < n; i++) {
        const char *role = json_string_value(json_object_get(json_array_get(msgs, i), "role"));
        if (strcmp(role, "assistant") != 0) continue;
        char *pre = render_prefix(kind, msgs, i, true, err, errlen);
        char *upto = pre ? render_prefix(kind, msgs, i + 1, false, err, errlen) : NULL;
        if (!pre || !upto) { free(pre); free(upto); goto out; }
        size_t pl = strlen(pre), ul = strlen(upto);
        bool stable = pl >= cursor && pl <= ul && ul <= flen &&
                      strncmp(full, pre, pl) == 0 && strncmp(full, upto, ul) == 0;
        bool last = i + 1 == n;
        if (!stable && last) {
            /* The template rewrites earlier turns (e.g. strips reasoning):
             * train on the final turn only, as prompt + completion. */
            const char *content = json_string_value(json_object_get(json_array_get(msgs, i), "content"));
            sft_example_free(out);
            cap = 0;
            if (append_text(out, &cap, tok, pre, pl, false) ||
                append_text(out, &cap, tok, content, strlen(content), true)) {
                free(pre); free(upto);
                goto oom;
            }
            cursor = flen;
            spans = 1;
        } else if (stable) {
            if (append_text(out, &cap, tok, full + cursor, pl - cursor, false) ||
                append_text(out, &cap, tok, full + pl, ul - pl, true)) {
                free(pre); free(upto);
                goto oom;
            }
            cursor = ul;
            spans++;
        }
        free(pre);
        free(upto);
    }
    if (spans == 0) {
        errmsg_set(err, errlen, n_prompt ? "field \"completion\" has no assistant message"
                                   : "field \"messages\" has no assistant message to train on");
        goto out;
    }
    if (append_text(out, &cap, tok, full + cursor, flen - cursor, false)) goto oom;
    /* Teach the model to stop: unless a trained token already ends the
     * turn (eos, <|im_end|>, <|eot_id|>, ...), insert eos after the last
     * trained token. */
    static const char *const enders[] = {"<|endoftext|>", "<|im_end|>", "<|eot_id|>",
                                         "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"};
    int32_t ender_ids[sizeof enders / sizeof *enders + 1];
    size_t n_enders = 0;
    ender_ids[n_enders++] = eos;
    for (size_t k = 0; k < sizeof enders / sizeof *enders; k++)
        ender_ids[n_enders++] = tok_token_id(tok, enders[k]);
    int last_train = -1;
    bool ended = false;
    for (int i = 0; i < out->n; i++) {
        if (out->labels[i] < 0) continue;
        last_train = i;
        for (size_t k = 0; k < n_enders; k++) ended |= out->ids[i] == ender_ids[k];
    }
    if (last_train >= 0 && !ended && eos >= 0) {
        if (out->n + 1 > cap) {
            int32_t *a = realloc(out->ids, (size_t)(out->n + 1) * sizeof *a);
            if (a) out->ids = a;
            int32_t *b = a ? realloc(out->labels, (size_t)(out->n + 1) * sizeof *b) : NULL;
            if (b) out->labels = b;
            if (!a || !b) goto oom;
        }
        memmove(out->ids + last_train + 2, out->ids + last_train + 1,
                (size_t)(out->n - last_train - 1) * sizeof *out->ids);
        memmove(out->labels + last_train + 2, out->labels + last_train + 1,
                (size_t)(out->n - last_train - 1) * sizeof *out->labels);
        out->ids[last_train + 1] = out->labels[last_train + 1] = eos;
        out->n++;
    }
    rc = 0;
    goto out;
oom:
    errmsg_set(err, errlen, "cannot tokenize the row (out of memory)");
out:
    if (rc) sft_example_free(out);
    free(full);
    json_decref(msgs);
    return rc;
}

void sft_opts_default(struct sft_opts *o)
{
    memset(o, 0, sizeof *o);
    o->stage = "sft";
    o->epochs = 1;
    o->batch = 8;
    o->seq_len = 512;
    o->lr = 2e-5f;
    o->min_lr_ratio = 0.1f;
    o->warmup_ratio = 0.03f;
    o->weight_decay = 0.0f;
    o->max_grad_norm = 1.0f;
    o->eval_fraction = 0.0f;
    o->log_every = 10;
    o->seed = 1;
    o->kd_beta = 0.5f;          /* TRL GKDConfig's defaults */
    o->kd_temperature = 0.9f;
    o->lmbda = 0.5f;
    o->max_new_tokens = 128;
    o->kind = "sft";
}

void sft_rows_free(struct sft_rows *r)
{
    free(r->tok);
    free(r->tgt);
    free(r->seg);
    r->tok = r->tgt = r->seg = NULL;
    r->n = r->cap = 0;
}

/* Appends a row of padding (no loss), with seg when the rows are packed. */
static int rows_push(struct sft_rows *r, bool packing, int32_t pad)
{
    if (r->n == r->cap) {
        int ncap = r->cap ? r->cap * 2 : 64;
        int32_t **bufs[] = {&r->tok, &r->tgt, &r->seg};
        for (int i = 0; i < (packing ? 3 : 2); i++) {
            int32_t *a = realloc(*bufs[i], (size_t)ncap * r->T * sizeof *a);
            if (!a) return -1;
            *bufs[i] = a;
        }
        r->cap = ncap;
    }
    for (int t = 0; t < r->T; t++) {
        r->tok[(size_t)r->n * r->T + t] = pad;
        r->tgt[(size_t)r->n * r->T + t] = -1;
        if (packing) r->seg[(size_t)r->n * r->T + t] = 0;
    }
    r->n++;
    return 0;
}

int sft_rows_build(struct sft_rows *r, const struct sft_example *ex, const int *idx, int k,
                   bool packing, int32_t pad, int *skipped)
{
    int fill = r->T;    /* tokens used in the current row; T = full */
    for (int j = 0; j < k; j++) {
        const struct sft_example *e = &ex[idx[j]];
        int len = e->n - 1 < r->T ? e->n - 1 : r->T;  /* (input, target) pairs */
        /* Truncation keeps the start (as TRL); an example left with no
         * target token teaches nothing and is skipped. */
        bool any = false;
        for (int t = 0; t < len && !any; t++) any = e->labels[t + 1] >= 0;
        if (!any) { (*skipped)++; continue; }
        /* never split: the second half of an example would be trained
         * without its prompt */
        if (!packing || fill + len > r->T) {
            if (rows_push(r, packing, pad)) return -1;
            fill = 0;
        }
        size_t row = (size_t)(r->n - 1) * r->T;
        for (int t = 0; t < len; t++) {
            r->tok[row + fill + t] = e->ids[t];
            r->tgt[row + fill + t] = e->labels[t + 1];
        }
        if (packing) {
            /* the example is one document; what follows it, until the next
             * example overwrites it, is padding in a document of its own */
            for (int t = fill; t < r->T; t++) r->seg[row + t] = t < fill + len ? fill : fill + len;
        }
        fill += len;
    }
    return 0;
}

void sft_rows_get(const struct sft_rows *r, int row, int32_t *tok, int32_t *tgt, int32_t *pos,
                  int32_t *seg)
{
    const int T = r->T;
    for (int t = 0; t < T; t++) {
        size_t at = (size_t)row * T + t;
        tok[t] = row >= 0 ? r->tok[at] : 0;
        tgt[t] = row >= 0 ? r->tgt[at] : -1;
        seg[t] = row >= 0 && r->seg ? r->seg[at] : 0;
        pos[t] = t - seg[t];
    }
}

/* Mean loss over the target tokens of rows [0, r->n), in batches of B. */
static double eval_loss(struct model *m, const struct sft_rows *r, int B, float *lp,
                        char *err, size_t errlen)
{
    double sum = 0;
    long count = 0;
    const int T = r->T;
    int32_t *buf = malloc((size_t)4 * B * T * sizeof *buf);    /* tok, tgt, pos, seg */
    if (!buf) return NAN;
    const size_t N = (size_t)B * T;
    int32_t *tok = buf, *tgt = tok + N, *pos = tgt + N, *seg = pos + N;
    for (int i0 = 0; i0 < r->n; i0 += B) {
        for (int b = 0; b < B; b++)
            sft_rows_get(r, i0 + b < r->n ? i0 + b : -1, tok + (size_t)b * T, tgt + (size_t)b * T,
                         pos + (size_t)b * T, seg + (size_t)b * T);
        if (model_forward_segmented(m, tok, pos, r->seg ? seg : NULL, B, T, err, errlen)) {
            sum = NAN;
            break;
        }
        model_logprobs(m, tgt, lp);
        for (int i = 0; i < B * T; i++)
            if (tgt[i] >= 0) { sum -= lp[i]; count++; }
    }
    free(buf);
    return count ? sum / (double)count : NAN;
}

/* Collects the tokenized rows of a dataset (jsonl_read callback). */
struct sft_reader {
    const struct tokenizer *tok;
    enum chat_template_kind kind;
    int32_t eos;
    struct sft_example *ex;
    int n, cap;
};

static int sft_read_row(void *ctx, json_t *row, char *err, size_t errlen)
{
    struct sft_reader *rd = ctx;
    if (rd->n == rd->cap) {
        int cap = rd->cap ? rd->cap * 2 : 256;
        struct sft_example *g = realloc(rd->ex, (size_t)cap * sizeof *g);
        if (!g) { errmsg_set(err, errlen, "out of memory"); return -1; }
        rd->ex = g;
        rd->cap = cap;
    }
    if (sft_tokenize_row(row, rd->tok, rd->kind, rd->eos, &rd->ex[rd->n], err, errlen)) return -1;
    rd->n++;
    return 0;
}

/* On-policy rows (GKD): each of the B unpacked rows of tok/tgt keeps its
 * prompt (the tokens up to its first target) and gets the student's own
 * completion, sampled by ge, as its targets (its positions stay 0..T-1);
 * rows without a target are left alone. Returns 0 or -1 with err. */
static int onpolicy_rows(struct gen_engine *ge, const struct sft_opts *o, int B, int T,
                         int32_t *tok, int32_t *tgt, int32_t pad, uint64_t seed, struct rollout *ro,
                         char *err, size_t errlen)
{
    memset(ro, 0, (size_t)B * sizeof *ro);
    for (int b = 0; b < B; b++) {
        /* ro[b].row: the row's first target position, the end of its prompt */
        const int32_t *g = tgt + (size_t)b * T;
        ro[b].row = -1;
        for (int t = 0; t < T && ro[b].row < 0; t++)
            if (g[t] >= 0) ro[b].row = t;
        if (ro[b].row < 0) continue;
        char id[32];
        snprintf(id, sizeof id, "onpolicy-%d", b);
        struct gen_request rq;
        gen_request_default(&rq);
        rq.id = id;
        rq.prompt = tok + (size_t)b * T;
        rq.n_prompt = ro[b].row + 1;
        rq.n = 1;
        /* the last completion token is a target only: T - ro[b].row fit */
        rq.max_tokens = T - ro[b].row < o->max_new_tokens ? T - ro[b].row : o->max_new_tokens;
        rq.sampling.temperature = o->kd_temperature;
        rq.has_seed = true;
        rq.seed = seed * 0x9e3779b97f4a7c15ULL + (uint64_t)b * 0xbf58476d1ce4e5b9ULL + 1;
        rq.user = &ro[b];
        if (gen_submit(ge, &rq, err, errlen)) return -1;
    }
    for (int pending; (pending = gen_step(ge, err, errlen)) != 0;)
        if (pending < 0) return -1;
    for (int b = 0; b < B; b++) {
        if (ro[b].row < 0) continue;
        if (!ro[b].tokens) { errmsg_set(err, errlen, "on-policy generation lost a completion"); return -1; }
        int32_t *x = tok + (size_t)b * T, *g = tgt + (size_t)b * T;
        const int p = ro[b].row, k = ro[b].n_tokens;
        for (int t = p; t < T; t++) {
            const int j = t - p;    /* input t predicts completion token j */
            g[t] = j < k ? ro[b].tokens[j] : -1;
            if (t > p) x[t] = j - 1 < k ? ro[b].tokens[j - 1] : pad;
        }
        rollout_free(&ro[b]);
    }
    return 0;
}

/* The epoch's order of training rows: a Fisher-Yates shuffle from r. */
static void shuffle_rows(int *order, int n, struct rng *r)
{
    for (int i = 0; i < n; i++) order[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)rng_below(r, (uint64_t)i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

/* A resumable checkpoint after `step`: the model directory, optimizer and
 * trainer state with the data position (the RNG before this epoch's
 * shuffle, which replays it, and the position in it). */
static int save_resumable(const struct sft_opts *o, const struct model *m, const char *dir, int step,
                          int steps, const struct rng *r, const struct rng *epoch_rng, int pos, int rows,
                          char *err, size_t errlen)
{
    if (!dist_leader()) return 0;   /* rank 0 writes for the job */
    if (model_save_dir_from(m, o->model_dir, dir, err, errlen)) return -1;
    json_t *data = json_pack("{s:i,s:i,s:o}", "rows", rows, "pos", pos, "epoch_rng", ckpt_rng_json(epoch_rng));
    return ckpt_write(m, dir, o->ctl, o->stage, o->kind, step, steps, r, data, err, errlen);
}

int sft_run(const struct sft_opts *o, const struct backend *be, FILE *events,
            char *err, size_t errlen)
{
    char path[4096];
    int rc = -1;
    struct tokenizer *tok = NULL;
    struct model *m = NULL;
    struct sft_example *ex = NULL;
    int n_ex = 0;
    int *idx = NULL;
    struct model *teacher = NULL;
    struct gen_engine *ge = NULL;      /* on-policy distillation's sampler */
    struct rollout *ro = NULL;
    struct sft_rows train = {0}, eval = {0};
    int32_t *tok_b = NULL, *tgt_b = NULL, *pos_b = NULL, *seg_b = NULL, *argmax = NULL;
    float *lp = NULL, *dlp = NULL, *ent = NULL;

    if (o->epochs <= 0 || o->batch <= 0 || o->seq_len < 2 || o->eval_fraction < 0 ||
        o->eval_fraction > 0.5f) {
        errmsg_set(err, errlen, "%s: epochs and batch_size must be positive, seq_len >= 2, "
             "eval_fraction in [0, 0.5]", o->stage);
        return -1;
    }
    const bool resuming = o->ctl && o->ctl->resume_dir;
    m = model_load(resuming ? o->ctl->resume_dir : o->model_dir, be, err, errlen);
    if (!m) return -1;
    if (o->seq_len > m->cfg.max_position_embeddings) {
        errmsg_set(err, errlen, "%s: seq_len %d exceeds the model's max_position_embeddings (%d)",
             o->stage, o->seq_len, m->cfg.max_position_embeddings);
        goto out;
    }
    if (o->teacher_dir) {
        if (kd_params_check(o->kd_beta, o->kd_temperature, err, errlen)) goto out;
        if (!(teacher = model_load(o->teacher_dir, be, err, errlen))) goto out;
        if (teacher->cfg.vocab_size != m->cfg.vocab_size) {
            errmsg_set(err, errlen, "%s: the teacher's vocabulary (%d tokens, %s) is not the student's "
                       "(%d, %s): logit distillation needs one tokenizer (a generate stage with the "
                       "teacher and sft on its samples distill across tokenizers)", o->stage,
                       teacher->cfg.vocab_size, o->teacher_dir, m->cfg.vocab_size, o->model_dir);
            goto out;
        }
        if (o->lmbda > 0 && o->packing) {
            errmsg_set(err, errlen, "%s: on-policy distillation (lmbda %g) needs packing off: the "
                       "student completes each row's one prompt", o->stage, (double)o->lmbda);
            goto out;
        }
        if (o->seq_len > teacher->cfg.max_position_embeddings) {
            errmsg_set(err, errlen, "%s: seq_len %d exceeds the teacher's max_position_embeddings (%d)",
                       o->stage, o->seq_len, teacher->cfg.max_position_embeddings);
            goto out;
        }
    }
    snprintf(path, sizeof path, "%s/tokenizer.json", o->model_dir);
    tok = tok_load(path, err, errlen);
    if (!tok) goto out;
    enum chat_template_kind kind;
    if (chat_template_select(o->template_name, o->model_dir, &kind, err, errlen)) goto out;
    int32_t eos = m->cfg.eos_token_id;
    if (eos < 0) eos = tok_token_id(tok, "<|endoftext|>");
    const int32_t pad = eos >= 0 ? eos : 0;

    /* Read and tokenize every row; a bad row stops the stage with its line. */
    struct sft_reader rd = {.tok = tok, .kind = kind, .eos = eos};
    long n_read = jsonl_read(o->data, sft_read_row, &rd, err, errlen);
    ex = rd.ex;
    n_ex = rd.n;
    if (n_read < 0) goto out;
    if (n_ex == 0) { errmsg_set(err, errlen, "%s: no rows", o->data); goto out; }

    /* Deterministic split: shuffle, the first share is held out. */
    struct rng r;
    rng_seed(&r, o->seed);
    idx = malloc((size_t)n_ex * sizeof *idx);
    if (!idx) { errmsg_set(err, errlen, "out of memory"); goto out; }
    for (int i = 0; i < n_ex; i++) idx[i] = i;
    for (int i = n_ex - 1; i > 0; i--) {
        int j = (int)rng_below(&r, (uint64_t)i + 1), t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
    int n_eval = (int)lroundf(o->eval_fraction * (float)n_ex);
    if (o->eval_fraction > 0 && n_eval == 0 && n_ex >= 2) n_eval = 1;
    train.T = eval.T = o->seq_len;
    int skipped = 0;
    if (sft_rows_build(&eval, ex, idx, n_eval, false, pad, &skipped) ||
        sft_rows_build(&train, ex, idx + n_eval, n_ex - n_eval, o->packing, pad, &skipped)) {
        errmsg_set(err, errlen, "out of memory building rows");
        goto out;
    }
    if (train.n == 0) {
        errmsg_set(err, errlen, "%s: no training rows%s", o->data,
             skipped ? ": every completion starts after seq_len tokens (raise seq_len or use a "
                       "shorter chat template)" : " after the eval split");
        goto out;
    }

    const int B = o->batch, T = o->seq_len, N = B * T;
    const int steps_per_epoch = (train.n + B - 1) / B;
    const int steps = o->max_steps > 0 ? o->max_steps : steps_per_epoch * o->epochs;
    const int warmup = (int)lroundf(o->warmup_ratio * (float)steps);
    tok_b = malloc((size_t)N * sizeof *tok_b);
    tgt_b = malloc((size_t)N * sizeof *tgt_b);
    pos_b = malloc((size_t)N * sizeof *pos_b);
    seg_b = malloc((size_t)N * sizeof *seg_b);
    argmax = malloc((size_t)N * sizeof *argmax);
    lp = malloc((size_t)N * sizeof *lp);
    dlp = malloc((size_t)N * sizeof *dlp);
    ent = malloc((size_t)N * sizeof *ent);
    int *order = realloc(idx, (size_t)(train.n > n_ex ? train.n : n_ex) * sizeof *order);
    if (order) idx = order;
    if (!tok_b || !tgt_b || !pos_b || !seg_b || !argmax || !lp || !dlp || !ent || !order ||
        model_grads_alloc(m)) {
        errmsg_set(err, errlen, "out of memory");
        goto out;
    }
    int pos = train.n;      /* position in the epoch's order; n = reshuffle */
    struct rng epoch_rng = r;   /* r before the current epoch's shuffle */
    int step0 = 0;
    if (resuming) {
        long rows, at;
        if ((step0 = ckpt_resume(o->ctl, m, steps, &r, err, errlen)) < 0 ||
            ckpt_data_int(o->ctl, "rows", &rows, err, errlen) || ckpt_data_int(o->ctl, "pos", &at, err, errlen) ||
            ckpt_data_rng(o->ctl, "epoch_rng", &epoch_rng, err, errlen))
            goto out;
        if (rows != train.n || at < 0 || at > train.n) {
            errmsg_set(err, errlen, "%s/" CKPT_STATE_FILE ": data: checkpoint of %ld training rows at "
                       "position %ld, the dataset now gives %d rows", o->ctl->resume_dir, rows, at, train.n);
            goto out;
        }
        pos = (int)at;
        if (pos < train.n) {    /* replay the epoch's shuffle: it must end where the run stood */
            struct rng now = r;
            r = epoch_rng;
            shuffle_rows(order, train.n, &r);
            if (memcmp(&r, &now, sizeof r) != 0) {
                errmsg_set(err, errlen, "%s/" CKPT_STATE_FILE ": data.epoch_rng does not replay to rng",
                           o->ctl->resume_dir);
                goto out;
            }
        }
    }
    events_emit(events, json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:i,s:i,s:i,s:i,s:i}", "type", "stage",
                                  "stage", o->stage, "kind", o->kind, "status", "running", "path", o->out,
                                  "chat_template", chat_template_name(kind), "train_rows", train.n,
                                  "eval_rows", eval.n, "skipped_rows", skipped, "steps", steps,
                                  "start_step", step0));

    if (teacher && o->lmbda > 0) {
        struct gen_config gc;
        gen_config_default(&gc);
        if (gc.max_seqs < B) gc.max_seqs = B;
        ro = calloc((size_t)B, sizeof *ro);
        if (!ro || !(ge = gen_engine_new(m, tok, &gc, rollout_on_event, NULL, err, errlen))) {
            if (!ro) errmsg_set(err, errlen, "out of memory");
            goto out;
        }
    }

    struct progress prog;
    progress_init(&prog, steps);
    double t0 = progress_now(), t_last = t0, eval_last;
    long tokens_since = 0;
    int steps_since = 0, onpolicy_since = 0;
    const int P = dist_size(), rank = dist_rank();
    if (B < P) {
        errmsg_set(err, errlen, "%s: batch_size %d is smaller than the %d data-parallel ranks", o->stage, B, P);
        goto out;
    }
    for (int step = step0; step < steps; step++) {
        /* data-parallel (engine/dist.h): this rank's rows of the batch are
         * b = rank, rank + P, ...; every rank walks the whole order */
        int Bl = 0;
        for (int b = 0; b < B; b++) {
            if (pos == train.n) {
                epoch_rng = r;
                shuffle_rows(order, train.n, &r);
                pos = 0;
            }
            const int row = order[pos++];
            if (b % P != rank) continue;
            size_t at = (size_t)Bl++ * T;
            sft_rows_get(&train, row, tok_b + at, tgt_b + at, pos_b + at, seg_b + at);
        }
        const int Nl = Bl * T;
        /* GKD: with probability lmbda the student's own completions (the
         * draw from the trainer's RNG, which checkpoints keep) */
        const bool onpolicy = ge && rng_uniform(&r) < o->lmbda;
        if (onpolicy && onpolicy_rows(ge, o, Bl, T, tok_b, tgt_b, pad,
                                      o->seed * 0x2545f4914f6cdd1dULL + (uint64_t)step, ro, err, errlen))
            goto out;
        onpolicy_since += onpolicy;
        steps_since++;
        int count_local = 0;
        for (int i = 0; i < Nl; i++) count_local += tgt_b[i] >= 0;
        const int count = (int)dist_sum(count_local);
        if ((teacher && model_forward_segmented(teacher, tok_b, pos_b, train.seg ? seg_b : NULL, Bl, T,
                                                err, errlen)) ||
            model_forward_segmented(m, tok_b, pos_b, train.seg ? seg_b : NULL, Bl, T, err, errlen))
            goto out;
        model_logprobs_stats(m, tgt_b, lp, ent, argmax);
        double loss = 0, entropy = 0, correct = 0;
        for (int i = 0; i < Nl; i++) {
            dlp[i] = tgt_b[i] >= 0 && count ? -1.0f / (float)count : 0.0f;
            if (tgt_b[i] < 0) continue;
            loss -= lp[i];
            entropy += ent[i];
            correct += argmax[i] == tgt_b[i];
        }
        loss = dist_sum(loss);
        entropy = dist_sum(entropy);
        correct = dist_sum(correct);
        if (count) { loss /= count; entropy /= count; }
        const double nll = loss;
        model_grads_zero(m);
        if (teacher) {
            /* dlp as the rows' weights: 1 / count on completion tokens */
            for (int i = 0; i < Nl; i++) dlp[i] = -dlp[i];
            loss = dist_sum(model_backward_kd(m, teacher, dlp, o->kd_beta, o->kd_temperature));
            if (isnan(loss)) { errmsg_set(err, errlen, "%s: out of memory for the logits", o->stage); goto out; }
        } else {
            model_backward(m, tgt_b, dlp);
        }
        dist_sum_floats(m->grads, m->n_params);
        float gnorm = model_grads_clip(m, o->max_grad_norm);
        float lr = lr_warmup_cosine(step, steps, warmup, o->lr, o->min_lr_ratio);
        if (model_adamw_step(m, lr, 0.9f, 0.999f, 1e-8f, o->weight_decay)) {
            errmsg_set(err, errlen, "out of memory for optimizer state");
            goto out;
        }
        if (!isfinite(loss)) {
            errmsg_set(err, errlen, "%s: step %d: loss is not finite; lower the learning rate", o->stage, step + 1);
            goto out;
        }
        tokens_since += count;
        double now = progress_now();
        char extra[128];
        snprintf(extra, sizeof extra, "loss %.4f | lr %.2e", loss, lr);
        progress_update(&prog, step + 1, extra);
        bool last = step + 1 == steps;
        if (eval.n && ((o->eval_every > 0 && (step + 1) % o->eval_every == 0) || last)) {
            eval_last = eval_loss(m, &eval, B, lp, err, errlen);
            if (isfinite(eval_last))
                events_emit(events, json_pack("{s:s,s:s,s:i,s:{s:f}}", "type", "metric", "stage", o->stage,
                                          "step", step + 1, "values", "eval_loss", eval_last));
        }
        if ((step + 1) % o->log_every == 0 || last) {
            json_t *mv = json_pack("{s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "loss", loss,
                                   "mean_token_accuracy", count ? correct / count : 0.0,
                                   "entropy", entropy, "grad_norm", (double)gnorm,
                                   "learning_rate", (double)lr,
                                   "tokens_per_second", (double)tokens_since / (now - t_last),
                                   "epoch", (double)(step + 1) / steps_per_epoch);
            if (teacher) json_object_set_new(mv, "nll", json_real(nll));
            if (ge) json_object_set_new(mv, "on_policy", json_real((double)onpolicy_since / steps_since));
            onpolicy_since = steps_since = 0;
            events_emit(events, json_pack("{s:s,s:s,s:i,s:o}", "type", "metric", "stage", o->stage,
                                          "step", step + 1, "values", mv));
            t_last = now;
            tokens_since = 0;
        }
        bool stop = dist_any(ckpt_stop_requested(o->ctl)) && !last;
        if ((o->checkpoint_every > 0 && (step + 1) % o->checkpoint_every == 0 && !last) || stop) {
            char dir[4096];
            snprintf(dir, sizeof dir, "%s/checkpoints/step-%d", o->out, step + 1);
            if (save_resumable(o, m, dir, step + 1, steps, &r, &epoch_rng, pos, train.n, err, errlen)) goto out;
            events_emit(events, json_pack("{s:s,s:s,s:i,s:s}", "type", "checkpoint", "stage", o->stage,
                                          "step", step + 1, "path", dir));
            if (stop) {
                progress_finish(&prog);
                snprintf(o->ctl->stopped_at, sizeof o->ctl->stopped_at, "%s", dir);
                rc = TRAIN_STOPPED;
                goto out;
            }
        }
    }
    progress_finish(&prog);
    if (dist_leader() && model_save_dir_from(m, o->model_dir, o->out, err, errlen)) goto out;
    events_emit(events, json_pack("{s:s,s:s,s:s,s:s,s:s,s:f}", "type", "stage", "stage", o->stage,
                                  "kind", o->kind, "status", "succeeded", "path", o->out,
                                  "seconds", progress_now() - t0));
    rc = 0;
out:
    for (int i = 0; i < n_ex; i++) sft_example_free(&ex[i]);
    free(ex);
    free(idx);
    sft_rows_free(&train);
    sft_rows_free(&eval);
    free(tok_b); free(tgt_b); free(pos_b); free(seg_b); free(argmax); free(lp); free(dlp); free(ent);
    tok_free(tok);
    if (ro) for (int i = 0; i < o->batch; i++) rollout_free(&ro[i]);
    free(ro);
    gen_engine_free(ge);
    model_free(teacher);
    model_free(m);
    return rc;
}
