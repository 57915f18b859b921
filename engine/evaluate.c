/* engine/evaluate.c — the eval stage (see grpo.h): greedy pass@1, sampled
 * pass@1, unbiased pass@k (Chen et al. 2021) and maj@k (self-consistency,
 * Wang et al. 2022) over k samples,
 * format rate and mean completion length, on a whole dataset. A completion
 * is correct when the reward spec's first component scores 1 (put the
 * accuracy or countdown component first). */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"
#include "events.h"
#include "generate.h"
#include "grpo.h"
#include "jsonl.h"
#include "model.h"
#include "progress.h"
#include "rollout.h"
#include "errmsg.h"

void eval_opts_default(struct eval_opts *o)
{
    memset(o, 0, sizeof *o);
    o->stage = "eval";
    ROLLOUT_OPTS_DEFAULTS(o);
    o->max_completion_length = 256;
    o->num_samples = 0;
    o->temperature = 1.0f;
    o->top_p = 1.0f;
}

static char *trimmed(const char *s, size_t n)
{
    while (n && isspace((unsigned char)*s)) { s++; n--; }
    while (n && isspace((unsigned char)s[n - 1])) n--;
    char *r = malloc(n + 1);
    if (r) { memcpy(r, s, n); r[n] = 0; }
    return r;
}

/* Last occurrence of needle in hay, or NULL. */
static const char *last_of(const char *hay, const char *needle)
{
    const char *r = NULL;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) r = p;
    return r;
}

char *eval_extract_answer(const char *text)
{
    const char *open = last_of(text, "<answer>");
    if (open) {
        const char *close = strstr(open + 8, "</answer>");
        if (close) return trimmed(open + 8, (size_t)(close - open - 8));
    }
    const char *box = last_of(text, "\\boxed{");
    if (box) {
        const char *p = box + 7;
        int depth = 1;
        const char *q = p;
        for (; *q && depth; q++) depth += *q == '{' ? 1 : *q == '}' ? -1 : 0;
        if (!depth) return trimmed(p, (size_t)(q - 1 - p));
    }
    const char *num = NULL, *end = NULL;
    for (const char *p = text; *p; p++) {
        if (isdigit((unsigned char)*p) && (p == text || !isdigit((unsigned char)p[-1]))) {
            const char *q = p;
            while (isdigit((unsigned char)*q) || (*q == '.' && isdigit((unsigned char)q[1]))) q++;
            num = p > text && p[-1] == '-' ? p - 1 : p;
            end = q;
            p = q - 1;
        }
    }
    return num ? trimmed(num, (size_t)(end - num)) : trimmed("", 0);
}

bool eval_has_format(const char *text)
{
    const char *t = strstr(text, "<think>");
    const char *te = t ? strstr(t, "</think>") : NULL;
    const char *a = te ? strstr(te, "<answer>") : NULL;
    return a && strstr(a, "</answer>");
}

double eval_pass_at_k(int n, int c, int k)
{
    /* C(n-c, k) / C(n, k) = prod_{i=n-c+1..n} (1 - k / i), the product form
     * of the paper's code: no factorials to overflow */
    if (n - c < k) return 1.0;
    double miss = 1.0;
    for (int i = n - c + 1; i <= n; i++) miss *= 1.0 - (double)k / i;
    return 1.0 - miss;
}

static bool correct(const struct reward_result *r)
{
    return !r->excluded && r->value[0] >= 1.0 - 1e-9;
}

int eval_run(const struct eval_opts *o, const struct backend *be, FILE *events,
             char *err, size_t errlen)
{
    int rc = -1;
    struct model *m = NULL;
    struct rl_prompting pr = {0};
    struct gen_engine *ge = NULL;
    struct rl_dataset ds = {0};
    struct rollout *ro = NULL;
    struct reward_item *items = NULL;
    struct reward_result *res = NULL;
    int *rows = NULL;
    if (o->num_samples < 0 || o->max_completion_length <= 0) {
        errmsg_set(err, errlen, "%s: num_samples must be >= 0 and max_completion_length >= 1", o->stage);
        return -1;
    }
    if (!(m = model_load(o->model_dir, be, err, errlen))) return -1;
    if (rl_prompting_open(&pr, o->model_dir, o->chat_template, o->prompt_template, o->prefill_think,
                          o->max_prompt_length, err, errlen))
        goto out;
    if (rl_dataset_load(&ds, o->data, o->reward, err, errlen)) goto out;
    const int n = ds.n, k = o->num_samples, per = k > 1 ? k : 1;
    struct gen_config gc;
    gen_config_default(&gc);
    gc.kv_bytes = (size_t)o->kv_cache_mb << 20;
    gc.kv_dtype = o->kv_dtype;
    gc.dtype = o->dtype;
    gc.prefix_cache = true;     /* the template's beginning; the sampled pass's prompts again */
    if (!(ge = gen_engine_new(m, pr.tok, &gc, rollout_on_event, NULL, err, errlen))) goto out;
    rows = malloc((size_t)n * sizeof *rows);
    ro = calloc((size_t)n * per, sizeof *ro);
    items = calloc((size_t)n * per, sizeof *items);
    res = calloc((size_t)n * per, sizeof *res);
    if (!rows || !ro || !items || !res) { errmsg_set(err, errlen, "out of memory"); goto out; }
    for (int i = 0; i < n; i++) rows[i] = i;
    events_emit(events, json_pack("{s:s,s:s,s:s,s:s,s:i,s:i}", "type", "stage", "stage", o->stage, "kind", "eval",
                                  "status", "running", "rows", n, "num_samples", k));
    const double t0 = progress_now();
    json_t *vals = json_object();
    /* pass 0: greedy, one sample; pass 1: k samples at temperature */
    for (int pass = 0; pass < (k > 0 ? 2 : 1); pass++) {
        const int cnt = pass ? k : 1;
        struct sampler_params sp;
        sampler_params_default(&sp);
        sp.temperature = pass ? o->temperature : 0.0f;
        sp.top_p = pass ? o->top_p : 1.0f;
        if (rollout_generate(ge, &ds, &pr, rows, n, cnt, &sp, o->max_completion_length,
                             o->seed + (uint64_t)pass, ro, err, errlen)) {
            json_decref(vals);
            goto out;
        }
        rl_reward_items(&ds, ro, n * cnt, items);
        if (reward_score_batch(o->reward, items, (size_t)n * cnt, res, err, errlen)) {
            json_decref(vals);
            goto out;
        }
        double n_ok = 0, n_fmt = 0, rsum = 0, len = 0, maj = 0;
        for (int i = 0; i < n * cnt; i++) {
            n_ok += correct(&res[i]);
            n_fmt += eval_has_format(ro[i].text);
            rsum += isfinite(res[i].total) ? res[i].total : 0;
            len += ro[i].n_tokens;
        }
        for (int r = 0; pass && r < n; r++) {
            /* majority answer of row r; ties go to the earliest sample */
            char *ans[256];
            int votes[256], best = 0, m_k = cnt < 256 ? cnt : 256;
            for (int j = 0; j < m_k; j++) {
                ans[j] = eval_extract_answer(ro[r * cnt + j].text);
                votes[j] = 0;
            }
            for (int j = 0; j < m_k; j++)
                for (int q = 0; q < m_k; q++)
                    votes[j] += ans[j] && ans[q] && strcmp(ans[j], ans[q]) == 0;
            for (int j = 1; j < m_k; j++)
                if (votes[j] > votes[best]) best = j;
            maj += ans[best] && *ans[best] && correct(&res[r * cnt + best]);
            for (int j = 0; j < m_k; j++) free(ans[j]);
        }
        const double tot = (double)n * cnt;
        if (pass == 0) {
            json_object_set_new(vals, "pass@1", json_real(n_ok / tot));
            json_object_set_new(vals, "format_rate", json_real(n_fmt / tot));
            json_object_set_new(vals, "reward", json_real(rsum / tot));
            json_object_set_new(vals, "mean_length", json_real(len / tot));
            for (int i = 0; i < o->log_completions && i < n; i++) {
                const char *pt = rl_row_prompt(json_array_get(ds.rows, (size_t)ro[i].row));
                events_emit(events, json_pack("{s:s,s:s,s:i,s:o,s:o,s:f,s:b}", "type", "sample", "stage", o->stage, "step", 0,
                                              "prompt", jsonl_text(pt, strlen(pt)),
                                              "completion", jsonl_text(ro[i].text, ro[i].text_len),
                                              "reward", isfinite(res[i].total) ? res[i].total : 0.0,
                                              "correct", correct(&res[i])));
            }
        } else {
            char key[64];
            json_object_set_new(vals, "pass@1_sampled", json_real(n_ok / tot));
            /* unbiased pass@k for k = 2, 4, 8, ... below the sample count,
             * and k = the sample count itself */
            for (int kk = 2; kk <= cnt; kk = kk * 2 > cnt && kk < cnt ? cnt : kk * 2) {
                double pk = 0;
                for (int r = 0; r < n; r++) {
                    int c = 0;
                    for (int j = 0; j < cnt; j++) c += correct(&res[r * cnt + j]);
                    pk += eval_pass_at_k(cnt, c, kk);
                }
                snprintf(key, sizeof key, "pass@%d", kk);
                json_object_set_new(vals, key, json_real(pk / n));
            }
            snprintf(key, sizeof key, "maj@%d", k);
            json_object_set_new(vals, key, json_real(maj / n));
            json_object_set_new(vals, "format_rate_sampled", json_real(n_fmt / tot));
            json_object_set_new(vals, "mean_length_sampled", json_real(len / tot));
        }
        for (int i = 0; i < n * cnt; i++) rollout_free(&ro[i]);
    }
    json_object_set_new(vals, "rows", json_integer(n));
    json_object_set_new(vals, "seconds", json_real(progress_now() - t0));
    struct gen_stats gs;
    gen_stats_get(ge, &gs);
    json_object_set_new(vals, "prompt_tokens_cached", json_integer(gs.prefix_hits));
    events_emit(events, json_pack("{s:s,s:s,s:i,s:o}", "type", "metric", "stage", o->stage, "step", 0,
                                  "values", vals));
    events_emit(events, json_pack("{s:s,s:s,s:s,s:s,s:f}", "type", "stage", "stage", o->stage, "kind", "eval",
                                  "status", "succeeded", "seconds", progress_now() - t0));
    rc = 0;
out:
    if (ro) for (int i = 0; i < ds.n * (o->num_samples > 1 ? o->num_samples : 1); i++) rollout_free(&ro[i]);
    free(ro); free(items); free(res); free(rows);
    gen_engine_free(ge);
    rl_dataset_free(&ds);
    rl_prompting_close(&pr);
    model_free(m);
    return rc;
}
