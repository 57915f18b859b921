/* engine/sample_stage.c — see sample_stage.h. */
#include "sample_stage.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "errmsg.h"
#include "events.h"
#include "generate.h"
#include "jsonl.h"
#include "model.h"
#include "progress.h"
#include "rollout.h"

/* Prompts sampled together: enough to keep the decode batch full with a few
 * samples each, few enough that a stop request is honoured within a batch.
 * Fixed, so that a seed gives the same dataset whatever the machine. */
#define SAMPLE_BATCH_ROWS 32

void sample_opts_default(struct sample_opts *o)
{
    memset(o, 0, sizeof *o);
    o->stage = "generate";
    o->kind = "generate";
    ROLLOUT_OPTS_DEFAULTS(o);
    o->max_completion_length = 1024;
    o->num_samples = 1;
    o->temperature = 0.6f;
    o->top_p = 0.95f;
}

/* The output row of rollout r of input row `row`. */
static json_t *output_row(const json_t *row, const struct rollout *r, const double *reward)
{
    json_t *out = json_deep_copy(row);
    json_t *text = jsonl_text(r->text, r->text_len);
    json_t *msgs = json_object_get(out, "messages");
    if (json_is_array(msgs) && !json_is_string(json_object_get(out, "prompt"))) {
        json_array_append_new(msgs, json_pack("{s:s,s:o}", "role", "assistant", "content", text));
    } else {
        json_object_del(out, "messages");
        json_object_set_new(out, "completion", text);
    }
    json_object_set_new(out, "finish_reason", json_string(r->truncated ? "length" : "stop"));
    json_object_set_new(out, "completion_tokens", json_integer(r->n_tokens));
    if (reward) json_object_set_new(out, "reward", json_real(*reward));
    return out;
}

static bool correct(const struct reward_result *r)
{
    return !r->excluded && r->value[0] >= 1.0 - 1e-9;
}

/* rejection_sample: whether sample i passes the filter (before the
 * per-prompt duplicate and count limits). */
static bool passes(const struct sample_opts *o, const struct rollout *r, const struct reward_result *res)
{
    if (res->excluded || !isfinite(res->total)) return false;
    if (r->truncated && !o->keep_truncated) return false;
    return o->has_min_reward ? res->total >= o->min_reward : correct(res);
}

/* Whether sample i ranks before sample j among a prompt's kept ones:
 * higher reward first, then the shorter. */
static bool ranks_before(const struct rollout *ro, const struct reward_result *res, int i, int j)
{
    if (res[i].total != res[j].total) return res[i].total > res[j].total;
    return ro[i].n_tokens < ro[j].n_tokens;
}

/* Writes the kept samples of rows [0, n_rows) of a batch (k samples each)
 * to f; returns how many, or -1 when writing failed. */
static long write_batch(const struct sample_opts *o, const struct rl_dataset *ds,
                        const struct rollout *ro, const struct reward_result *res, int n_rows,
                        int k, int *keep, long *prompts_kept, long *kept_tokens, FILE *f)
{
    long written = 0;
    for (int r = 0; r < n_rows; r++) {
        int nk = 0;
        for (int j = 0; j < k; j++) {
            const int i = r * k + j;
            if (res && !passes(o, &ro[i], &res[i])) continue;
            bool dup = false;
            for (int q = 0; res && !o->keep_duplicates && q < nk && !dup; q++)
                dup = ro[keep[q]].text_len == ro[i].text_len &&
                      memcmp(ro[keep[q]].text, ro[i].text, ro[i].text_len) == 0;
            if (!dup) keep[nk++] = i;
        }
        if (res) {
            /* insertion sort (k <= 256): stable, so ties keep sampling order */
            for (int q = 1; q < nk; q++)
                for (int z = q; z > 0 && ranks_before(ro, res, keep[z], keep[z - 1]); z--) {
                    const int t = keep[z];
                    keep[z] = keep[z - 1];
                    keep[z - 1] = t;
                }
            if (o->max_per_prompt > 0 && nk > o->max_per_prompt) nk = o->max_per_prompt;
        }
        *prompts_kept += nk > 0;
        for (int q = 0; q < nk; q++) {
            const struct rollout *x = &ro[keep[q]];
            json_t *row = output_row(json_array_get(ds->rows, (size_t)x->row), x,
                                     res ? &res[keep[q]].total : NULL);
            char *line = json_dumps(row, JSON_COMPACT | JSON_ENSURE_ASCII);
            json_decref(row);
            if (!line || fprintf(f, "%s\n", line) < 0) { free(line); return -1; }
            free(line);
            *kept_tokens += x->n_tokens;
            written++;
        }
    }
    return written;
}

int sample_run(const struct sample_opts *o, const struct backend *be, FILE *events,
               char *err, size_t errlen)
{
    const bool rejection = o->reward != NULL;
    int rc = -1;
    struct model *m = NULL;
    struct rl_prompting pr = {0};
    struct gen_engine *ge = NULL;
    struct rl_dataset ds = {0};
    struct rollout *ro = NULL;
    struct reward_item *items = NULL;
    struct reward_result *res = NULL;
    int *rows = NULL, *keep = NULL;
    FILE *f = NULL;
    char path[4200], part[4300] = "";
    const int k = o->num_samples, S = SAMPLE_BATCH_ROWS * k;
    if (k < 1 || o->max_completion_length < 1) {
        errmsg_set(err, errlen, "%s: num_samples and max_completion_length must be >= 1", o->stage);
        return -1;
    }
    struct sampler_params sp;
    sampler_params_default(&sp);
    sp.temperature = o->temperature;
    sp.top_p = o->top_p;
    sp.top_k = o->top_k;
    sp.min_p = o->min_p;
    if (sampler_params_check(&sp, err, errlen)) return -1;
    if (!(m = model_load(o->model_dir, be, err, errlen))) return -1;
    if (rl_prompting_open(&pr, o->model_dir, o->chat_template, o->prompt_template, o->prefill_think,
                          o->max_prompt_length, err, errlen))
        goto out;
    if (rl_dataset_load(&ds, o->data, o->reward, err, errlen)) goto out;
    struct gen_config gc;
    gen_config_default(&gc);
    gc.kv_bytes = (size_t)o->kv_cache_mb << 20;
    gc.kv_dtype = o->kv_dtype;
    gc.dtype = o->dtype;
    gc.prefix_cache = true;     /* the template's beginning; a prompt's k samples share it anyway */
    if (gc.max_seqs < S) gc.max_seqs = S;
    if (!(ge = gen_engine_new(m, pr.tok, &gc, rollout_on_event, NULL, err, errlen))) goto out;
    rows = malloc(SAMPLE_BATCH_ROWS * sizeof *rows);
    keep = malloc((size_t)k * sizeof *keep);
    ro = calloc((size_t)S, sizeof *ro);
    items = calloc((size_t)S, sizeof *items);
    res = calloc((size_t)S, sizeof *res);
    if (!rows || !keep || !ro || !items || !res) { errmsg_set(err, errlen, "out of memory"); goto out; }
    if (model_dir_create(o->out, err, errlen)) goto out;
    snprintf(path, sizeof path, "%s/data.jsonl", o->out);
    snprintf(part, sizeof part, "%s.partial", path);
    if (!(f = fopen(part, "w"))) { errmsg_set(err, errlen, "%s: cannot write", part); goto out; }
    events_emit(events, json_pack("{s:s,s:s,s:s,s:s,s:s,s:i,s:i}", "type", "stage", "stage", o->stage,
                                  "kind", o->kind, "status", "running", "path", o->out, "rows", ds.n,
                                  "num_samples", k));
    const double t0 = progress_now();
    long n_samples = 0, n_kept = 0, n_prompts_kept = 0, n_truncated = 0, n_correct = 0;
    long gen_tokens = 0, kept_tokens = 0;
    double reward_sum = 0;
    int logged = 0;
    for (int b0 = 0, batch = 0; b0 < ds.n; b0 += SAMPLE_BATCH_ROWS, batch++) {
        if (ckpt_stop_requested(o->ctl)) {
            rc = TRAIN_STOPPED;
            goto out;
        }
        const int nb = ds.n - b0 < SAMPLE_BATCH_ROWS ? ds.n - b0 : SAMPLE_BATCH_ROWS;
        for (int i = 0; i < nb; i++) rows[i] = b0 + i;
        /* each batch its own stream of seeds, so the output never depends
         * on how far a stopped run had got */
        if (rollout_generate(ge, &ds, &pr, rows, nb, k, &sp, o->max_completion_length,
                             o->seed + (uint64_t)batch * 0x632be59bd9b4e019ULL, ro, err, errlen))
            goto out;
        if (rejection) {
            rl_reward_items(&ds, ro, nb * k, items);
            if (reward_score_batch(o->reward, items, (size_t)nb * k, res, err, errlen)) goto out;
        }
        for (int i = 0; i < nb * k; i++) {
            n_truncated += ro[i].truncated;
            gen_tokens += ro[i].n_tokens;
            if (!rejection) continue;
            n_correct += correct(&res[i]);
            reward_sum += isfinite(res[i].total) ? res[i].total : 0;
        }
        for (int i = 0; logged < o->log_completions && i < nb * k; i++, logged++) {
            const char *pt = rl_row_prompt(json_array_get(ds.rows, (size_t)ro[i].row));
            json_t *ev = json_pack("{s:s,s:s,s:i,s:o,s:o}", "type", "sample", "stage", o->stage, "step",
                                   batch + 1, "prompt", jsonl_text(pt, strlen(pt)), "completion",
                                   jsonl_text(ro[i].text, ro[i].text_len));
            if (rejection) {
                json_object_set_new(ev, "reward", json_real(isfinite(res[i].total) ? res[i].total : 0));
                json_object_set_new(ev, "kept", json_boolean(passes(o, &ro[i], &res[i])));
            }
            events_emit(events, ev);
        }
        long w = write_batch(o, &ds, ro, rejection ? res : NULL, nb, k, keep, &n_prompts_kept,
                             &kept_tokens, f);
        for (int i = 0; i < nb * k; i++) rollout_free(&ro[i]);
        if (w < 0 || fflush(f)) { errmsg_set(err, errlen, "%s: write failed", part); goto out; }
        n_kept += w;
        n_samples += (long)nb * k;
        const double dt = progress_now() - t0;
        json_t *vals = json_pack("{s:I,s:I,s:f,s:f,s:f}", "rows_done", (json_int_t)(b0 + nb), "rows_written",
                                 (json_int_t)n_kept, "truncated_rate", (double)n_truncated / n_samples,
                                 "mean_completion_tokens", (double)gen_tokens / n_samples,
                                 "tokens_per_second", dt > 0 ? gen_tokens / dt : 0.0);
        if (rejection) {
            json_object_set_new(vals, "reward", json_real(reward_sum / n_samples));
            json_object_set_new(vals, "correct_rate", json_real((double)n_correct / n_samples));
            json_object_set_new(vals, "kept_rate", json_real((double)n_kept / n_samples));
            json_object_set_new(vals, "prompts_kept_rate", json_real((double)n_prompts_kept / (b0 + nb)));
        }
        events_emit(events, json_pack("{s:s,s:s,s:i,s:o}", "type", "metric", "stage", o->stage, "step",
                                      batch + 1, "values", vals));
    }
    if (n_kept == 0) {
        /* a later stage could not train on it; say why here */
        errmsg_set(err, errlen, "%s: no sample of %ld passed the filter (%ld correct, %ld truncated)%s",
                   o->stage, n_samples, n_correct, n_truncated,
                   o->has_min_reward ? "; lower min_reward" : "");
        goto out;
    }
    if (fclose(f)) { f = NULL; errmsg_set(err, errlen, "%s: write failed", part); goto out; }
    f = NULL;
    if (rename(part, path)) { errmsg_set(err, errlen, "%s: cannot rename to %s", part, path); goto out; }
    events_emit(events, json_pack("{s:s,s:s,s:s,s:s,s:s,s:f,s:s,s:I,s:f}", "type", "stage", "stage",
                                  o->stage, "kind", o->kind, "status", "succeeded", "path", o->out,
                                  "seconds", progress_now() - t0, "dataset", path, "rows",
                                  (json_int_t)n_kept, "mean_completion_tokens",
                                  (double)kept_tokens / n_kept));
    rc = 0;
out:
    if (f) fclose(f);
    if (rc != 0 && part[0]) unlink(part);
    if (ro) for (int i = 0; i < S; i++) rollout_free(&ro[i]);
    free(ro); free(items); free(res); free(rows); free(keep);
    gen_engine_free(ge);
    rl_dataset_free(&ds);
    rl_prompting_close(&pr);
    model_free(m);
    return rc;
}
