/* engine/grpo.c — the GRPO training loop (see grpo.h). One step:
 *   1. sample prompts_per_step rows, group_size completions each, from the
 *      current policy (the generation engine over the same weights);
 *   2. score them with the reward spec; DAPO dynamic sampling (arXiv
 *      2503.14476, §3.2) optionally drops groups whose rewards are all equal
 *      and samples more;
 *   3. advantages relative to the group (R1 eq. 3), grpo_advantages;
 *   4. num_iterations optimizer steps on the clipped surrogate with optional
 *      k3 KL to a frozen reference (DeepSeekMath eq. 3-4), grpo_loss, in
 *      micro-batches with gradient accumulation.
 * The old-policy log-probs of step 4 are recomputed by the training forward
 * (not taken from the sampler), so ratio = 1 exactly on the first iteration. */
#include "grpo.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"
#include "events.h"
#include "generate.h"
#include "jsonl.h"
#include "model.h"
#include "progress.h"
#include "rng.h"
#include "rollout.h"
#include "schedule.h"
#include "errmsg.h"

void grpo_opts_default(struct grpo_opts *o)
{
    memset(o, 0, sizeof *o);
    o->stage = "grpo";
    o->steps = 100;
    o->prompts_per_step = 8;
    o->group_size = 8;
    o->max_completion_length = 256;
    o->learning_rate = 1e-6f;
    o->max_grad_norm = 1.0f;
    o->temperature = 1.0f;
    o->top_p = 1.0f;
    o->epsilon = 0.2;
    o->epsilon_high = -1;       /* = epsilon */
    o->loss_type = GRPO_LOSS_GRPO;
    o->scale_rewards = GRPO_SCALE_GROUP;
    o->is_level = GRPO_IS_TOKEN;
    o->ris_mode = GRPO_RIS_SEQUENCE_MASK;
    o->ris_cap = 3.0;
    o->num_iterations = 1;
    o->max_resample_rounds = 3;
    ROLLOUT_OPTS_DEFAULTS(o);
}

/* Rows for this step: the next ones of a shuffled order, reshuffled when
 * exhausted (epochs over the prompt set). */
struct row_sampler {
    int *order, n, pos;
    struct rng rng;
    struct rng epoch_rng;       /* rng before the current epoch's shuffle */
};

static void shuffle_order(struct row_sampler *s)
{
    for (int i = 0; i < s->n; i++) s->order[i] = i;
    for (int i = s->n - 1; i > 0; i--) {
        int j = (int)rng_below(&s->rng, (uint64_t)i + 1), t = s->order[i];
        s->order[i] = s->order[j];
        s->order[j] = t;
    }
}

static int next_row(struct row_sampler *s)
{
    if (s->pos == s->n) {
        s->epoch_rng = s->rng;
        shuffle_order(s);
        s->pos = 0;
    }
    return s->order[s->pos++];
}

/* Restores the row sampler from a checkpoint's data: the RNG is restored by
 * ckpt_resume; an epoch in progress is replayed from epoch_rng. */
static int row_sampler_resume(struct row_sampler *s, const struct train_ctl *ctl, char *err, size_t errlen)
{
    long rows, pos;
    if (ckpt_data_int(ctl, "rows", &rows, err, errlen) || ckpt_data_int(ctl, "pos", &pos, err, errlen) ||
        ckpt_data_rng(ctl, "epoch_rng", &s->epoch_rng, err, errlen))
        return -1;
    if (rows != s->n || pos < 0 || pos > s->n) {
        errmsg_set(err, errlen, "%s/" CKPT_STATE_FILE ": data: checkpoint of %ld prompt rows at position %ld, "
                   "the dataset now has %d rows", ctl->resume_dir, rows, pos, s->n);
        return -1;
    }
    s->pos = (int)pos;
    if (s->pos < s->n) {
        struct rng now = s->rng;
        s->rng = s->epoch_rng;
        shuffle_order(s);
        if (memcmp(&now, &s->rng, sizeof now) != 0) {
            errmsg_set(err, errlen, "%s/" CKPT_STATE_FILE ": data.epoch_rng does not replay to rng",
                       ctl->resume_dir);
            return -1;
        }
    }
    return 0;
}

static double mean_std(const double *x, const unsigned char *valid, int n, double *std)
{
    double s = 0, s2 = 0;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (!valid || valid[i]) { s += x[i]; k++; }
    double m = k ? s / k : 0;
    for (int i = 0; i < n; i++)
        if (!valid || valid[i]) s2 += (x[i] - m) * (x[i] - m);
    *std = k > 1 ? sqrt(s2 / (k - 1)) : 0;     /* unbiased, as torch.std */
    return m;
}

int grpo_run(const struct grpo_opts *o, const struct backend *be, FILE *events,
             char *err, size_t errlen)
{
    const int P = o->prompts_per_step, G = o->group_size, S = P * G;
    const int MB = o->micro_batch_size > 0 ? o->micro_batch_size : G;
    if (P <= 0 || G < 2 || S % MB || o->steps <= 0 || o->max_completion_length <= 0 ||
        o->num_iterations <= 0) {
        errmsg_set(err, errlen, "%s: prompts_per_step >= 1, group_size >= 2, steps >= 1, and "
             "micro_batch_size must divide prompts_per_step * group_size (%d)", o->stage, S);
        return -1;
    }
    const int n_rew = reward_spec_count(o->reward);
    int rc = -1;
    struct model *m = NULL, *ref = NULL;
    struct rl_prompting pr = {0};
    struct gen_engine *ge = NULL;
    struct rl_dataset ds = {0};
    struct row_sampler rs = {0};
    struct rollout *ro = NULL;
    struct reward_item *items = NULL;
    struct reward_result *res = NULL;
    double *total = NULL;
    unsigned char *valid = NULL;
    float *rew = NULL, *adv = NULL;
    int32_t *tok_b = NULL, *tgt_b = NULL;
    float *lp = NULL, *dlp_full = NULL, *ent = NULL, *logp = NULL, *old = NULL, *refl = NULL;
    float *mask = NULL, *dlogp = NULL, *samp = NULL, *isw = NULL;
    int *rows = NULL, *keep = NULL;
    struct rollout *sel = NULL;             /* (S) the kept groups of a step */
    struct reward_result *sres = NULL;      /* (S) their rewards */
    unsigned char *svalid = NULL, *dvalid = NULL;  /* (S) */
    double *dv = NULL;                      /* (S) scratch for metrics */

    const bool resuming = o->ctl && o->ctl->resume_dir;
    m = model_load(resuming ? o->ctl->resume_dir : o->model_dir, be, err, errlen);
    if (!m) return -1;
    if (o->beta > 0 && !(ref = model_load(o->model_dir, be, err, errlen))) goto out;
    if (rl_prompting_open(&pr, o->model_dir, o->chat_template, o->prompt_template, o->prefill_think,
                          o->max_prompt_length, err, errlen))
        goto out;
    if (o->max_prompt_length + o->max_completion_length > m->cfg.max_position_embeddings) {
        errmsg_set(err, errlen, "%s: max_prompt_length + max_completion_length (%d) exceeds the model's "
             "max_position_embeddings (%d)", o->stage, o->max_prompt_length + o->max_completion_length,
             m->cfg.max_position_embeddings);
        goto out;
    }
    if (rl_dataset_load(&ds, o->data, o->reward, err, errlen)) goto out;

    struct gen_config gc;
    gen_config_default(&gc);
    gc.kv_bytes = (size_t)o->kv_cache_mb << 20;
    gc.kv_dtype = o->kv_dtype;
    gc.dtype = o->dtype;
    /* the prompt template's common beginning, and a resampling round's
     * prompts, computed once per step (the cache is emptied when the
     * weights change: model->version) */
    gc.prefix_cache = true;
    if (gc.max_seqs < S) gc.max_seqs = S;
    if (!(ge = gen_engine_new(m, pr.tok, &gc, rollout_on_event, NULL, err, errlen))) goto out;
    if (model_grads_alloc(m)) { errmsg_set(err, errlen, "out of memory"); goto out; }

    rs.n = ds.n;
    rs.pos = ds.n;
    rs.order = malloc((size_t)ds.n * sizeof *rs.order);
    rng_seed(&rs.rng, o->seed);
    const int max_rounds = o->dynamic_sampling ? 1 + o->max_resample_rounds : 1;
    const int cap = S * max_rounds;     /* rollouts kept across resampling rounds */
    ro = calloc((size_t)cap, sizeof *ro);
    items = calloc((size_t)cap, sizeof *items);
    res = calloc((size_t)cap, sizeof *res);
    total = calloc((size_t)cap, sizeof *total);
    valid = calloc((size_t)cap, 1);
    rew = calloc((size_t)S, sizeof *rew);
    adv = calloc((size_t)S, sizeof *adv);
    rows = calloc((size_t)P * max_rounds, sizeof *rows);
    keep = calloc((size_t)P, sizeof *keep);
    sel = calloc((size_t)S, sizeof *sel);
    sres = calloc((size_t)S, sizeof *sres);
    svalid = calloc((size_t)S, 1);
    dvalid = calloc((size_t)S, 1);
    dv = calloc((size_t)S, sizeof *dv);
    const int Tmax = o->max_prompt_length + o->max_completion_length + 1;
    const int Tc = o->max_completion_length + 1;
    tok_b = malloc((size_t)MB * Tmax * sizeof *tok_b);
    tgt_b = malloc((size_t)MB * Tmax * sizeof *tgt_b);
    lp = malloc((size_t)MB * Tmax * sizeof *lp);
    ent = malloc((size_t)MB * Tmax * sizeof *ent);
    dlp_full = malloc((size_t)MB * Tmax * sizeof *dlp_full);
    logp = calloc((size_t)S * Tc, sizeof *logp);
    old = calloc((size_t)S * Tc, sizeof *old);
    refl = calloc((size_t)S * Tc, sizeof *refl);
    mask = calloc((size_t)S * Tc, sizeof *mask);
    dlogp = calloc((size_t)S * Tc, sizeof *dlogp);
    samp = calloc((size_t)S * Tc, sizeof *samp);
    isw = calloc((size_t)S * Tc, sizeof *isw);
    if (!samp || !isw || !rs.order || !ro || !items || !res || !total || !valid || !rew || !adv || !rows || !keep || !sel || !sres ||
        !svalid || !dvalid || !dv ||
        !tok_b || !tgt_b || !lp || !ent || !dlp_full || !logp || !old || !refl || !mask || !dlogp) {
        errmsg_set(err, errlen, "out of memory");
        goto out;
    }
    struct sampler_params sp;
    sampler_params_default(&sp);
    sp.temperature = o->temperature;
    sp.top_p = o->top_p;
    sp.top_k = o->top_k;
    sp.min_p = o->min_p;
    struct grpo_loss_params lpar = {
        .loss_type = o->loss_type, .is_level = o->is_level, .epsilon_low = o->epsilon,
        .epsilon_high = o->epsilon_high >= 0 ? o->epsilon_high : o->epsilon, .beta = o->beta,
        .max_completion_length = o->max_completion_length, .grad_accum_steps = S / MB,
    };
    const int32_t pad = m->cfg.eos_token_id >= 0 ? m->cfg.eos_token_id : 0;
    const int total_updates = o->steps * o->num_iterations;
    const int warmup = (int)lroundf(o->warmup_ratio * (float)total_updates);
    long long num_tokens = 0;
    int step0 = 0;
    rs.epoch_rng = rs.rng;
    if (resuming) {
        long nt;
        if ((step0 = ckpt_resume(o->ctl, m, o->steps, &rs.rng, err, errlen)) < 0 ||
            row_sampler_resume(&rs, o->ctl, err, errlen) || ckpt_data_int(o->ctl, "num_tokens", &nt, err, errlen))
            goto out;
        num_tokens = nt;
    }
    events_emit(events, json_pack("{s:s,s:s,s:s,s:s,s:s,s:i,s:i,s:i,s:i,s:i}", "type", "stage", "stage", o->stage,
                                  "kind", "grpo", "status", "running", "path", o->out, "steps", o->steps,
                                  "prompts_per_step", P, "group_size", G, "rows", ds.n, "start_step", step0));
    struct progress prog;
    progress_init(&prog, o->steps);
    int update = step0 * o->num_iterations;
    const double t_start = progress_now();
    for (int step = step0; step < o->steps; step++) {
        const double t0 = progress_now();
        /* ---- 1-2: generate and score, resampling degenerate groups ---- */
        int kept = 0, n_ro = 0, n_rows = 0, zero_std = 0, groups_seen = 0;
        double t_gen = 0, t_score = 0;
        struct gen_stats gs0, gs1;
        gen_stats_get(ge, &gs0);
        for (int round = 0; round < max_rounds && kept < P; round++) {
            int want = P - kept;
            for (int i = 0; i < want; i++) rows[n_rows + i] = next_row(&rs);
            double ta = progress_now();
            if (rollout_generate(ge, &ds, &pr, rows + n_rows, want, G, &sp, o->max_completion_length,
                                 o->seed + (uint64_t)step * 1000003u + (uint64_t)round * 7919u,
                                 ro + n_ro, err, errlen))
                goto out;
            double tb = progress_now();
            rl_reward_items(&ds, ro + n_ro, want * G, items + n_ro);
            if (reward_score_batch(o->reward, items + n_ro, (size_t)want * G, res + n_ro, err, errlen))
                goto out;
            t_gen += tb - ta;
            t_score += progress_now() - tb;
            for (int gi = 0; gi < want; gi++) {
                int base = n_ro + gi * G;
                bool all_equal = true;
                for (int j = 0; j < G; j++) {
                    total[base + j] = res[base + j].total;
                    valid[base + j] = !res[base + j].excluded && isfinite(res[base + j].total);
                    if (j && total[base + j] != total[base]) all_equal = false;
                }
                groups_seen++;
                zero_std += all_equal;
                if (!o->dynamic_sampling || !all_equal || (round == max_rounds - 1 && kept < P))
                    if (kept < P) keep[kept++] = base;
            }
            n_ro += want * G;
            n_rows += want;
        }
        /* Rounds exhausted: fill up with degenerate groups (zero advantage). */
        for (int base = 0; kept < P && base < n_ro; base += G) {
            bool used = false;
            for (int k = 0; k < kept; k++) used |= keep[k] == base;
            if (!used) keep[kept++] = base;
        }
        /* Gather the kept groups to the front, in order. */
        for (int k = 0; k < P; k++)
            for (int j = 0; j < G; j++) {
                sel[k * G + j] = ro[keep[k] + j];
                memset(&ro[keep[k] + j], 0, sizeof *ro);
                sres[k * G + j] = res[keep[k] + j];
                svalid[k * G + j] = valid[keep[k] + j];
                rew[k * G + j] = (float)total[keep[k] + j];
            }
        for (int i = 0; i < n_ro; i++) rollout_free(&ro[i]);

        /* ---- 3: advantages ---- */
        int zero_std_kept = 0;
        if (grpo_advantages(rew, svalid, P, G, o->scale_rewards, 1e-4, adv, &zero_std_kept, err, errlen))
            goto out;
        /* ---- 4: policy update ---- */
        double t_ref = 0, t_train0 = progress_now(), loss_sum = 0, ent_sum = 0, kl_sum = 0;
        double clip_lo = 0, clip_hi = 0, clip_reg = 0, tok_sum = 0, sampler_diff = 0;
        struct grpo_ris_metrics ris = {.ratio_min = INFINITY, .ratio_max = -INFINITY};
        float gnorm = 0, lr = 0;
        long long comp_tokens = 0;
        int min_len = 1 << 30, max_len = 0, n_trunc = 0;
        for (int i = 0; i < S; i++) {
            int n = sel[i].n_tokens < Tc ? sel[i].n_tokens : Tc;
            comp_tokens += n;
            min_len = n < min_len ? n : min_len;
            max_len = n > max_len ? n : max_len;
            n_trunc += sel[i].truncated;
            for (int j = 0; j < Tc; j++)
                mask[(size_t)i * Tc + j] = j < n && svalid[i] &&
                                           !(o->mask_truncated_completions && sel[i].truncated);
        }
        double mask_tokens = 0;
        for (size_t i = 0; i < (size_t)S * Tc; i++) mask_tokens += mask[i];
        lpar.dapo_num_tokens = mask_tokens;
        for (int it = 0; it < o->num_iterations; it++, update++) {
            model_grads_zero(m);
            for (int mb = 0; mb < S; mb += MB) {
                int T = 1;
                for (int b = 0; b < MB; b++) {
                    int len = sel[mb + b].n_prompt + (sel[mb + b].n_tokens < Tc ? sel[mb + b].n_tokens : Tc);
                    T = len > T ? len : T;
                }
                T -= 1;     /* inputs predict the next token; the last token is only a target */
                if (T < 1) T = 1;
                for (int b = 0; b < MB; b++) {
                    const struct rollout *r = &sel[mb + b];
                    int nc = r->n_tokens < Tc ? r->n_tokens : Tc;
                    for (int t = 0; t < T; t++) {
                        int src = t;
                        int32_t v = src < r->n_prompt ? r->prompt[src]
                                  : src - r->n_prompt < nc ? r->tokens[src - r->n_prompt] : pad;
                        int nxt = t + 1;
                        int32_t y = nxt >= r->n_prompt && nxt - r->n_prompt < nc ? r->tokens[nxt - r->n_prompt] : -1;
                        tok_b[b * T + t] = v;
                        tgt_b[b * T + t] = y;
                    }
                }
                /* reference log-probs, once per generation batch */
                if (it == 0 && ref) {
                    double ta = progress_now();
                    if (model_forward(ref, tok_b, NULL, MB, T, err, errlen)) goto out;
                    model_logprobs(ref, tgt_b, lp);
                    for (int b = 0; b < MB; b++)
                        for (int j = 0; j < Tc; j++) {
                            int t = sel[mb + b].n_prompt - 1 + j;
                            refl[(size_t)(mb + b) * Tc + j] = t < T && tgt_b[b * T + t] >= 0 ? lp[b * T + t] : 0;
                        }
                    t_ref += progress_now() - ta;
                }
                if (model_forward(m, tok_b, NULL, MB, T, err, errlen)) goto out;
                model_logprobs_stats(m, tgt_b, lp, it == 0 ? ent : NULL, NULL);
                for (int b = 0; b < MB; b++)
                    for (int j = 0; j < Tc; j++) {
                        int t = sel[mb + b].n_prompt - 1 + j;
                        bool in = t < T && tgt_b[b * T + t] >= 0;
                        size_t k = (size_t)(mb + b) * Tc + j;
                        logp[k] = in ? lp[b * T + t] : 0;
                        if (it == 0) {
                            old[k] = logp[k];
                            samp[k] = in && j < sel[mb + b].n_tokens ? sel[mb + b].logprobs[j] : logp[k];
                            if (in && j < sel[mb + b].n_tokens) {
                                double d = fabs(logp[k] - sel[mb + b].logprobs[j]);
                                if (d > sampler_diff) sampler_diff = d;
                            }
                            if (in && mask[k] > 0) ent_sum += ent[b * T + t];
                        }
                    }
                double loss;
                struct grpo_loss_metrics lm;
                size_t o0 = (size_t)mb * Tc;
                /* the sampler's log-probs against the trainer's at generation
                 * time (old), once per generation batch */
                if (it == 0 && o->ris_mode != GRPO_RIS_NONE) {
                    struct grpo_ris_metrics rm;
                    grpo_ris_weights(o->ris_mode, o->ris_cap, MB, Tc, old + o0, samp + o0,
                                     mask + o0, isw + o0, &rm);
                    if (rm.count > 0) {
                        ris.ratio_min = fmin(ris.ratio_min, rm.ratio_min);
                        ris.ratio_max = fmax(ris.ratio_max, rm.ratio_max);
                    }
                    ris.ratio_mean += rm.ratio_mean * rm.count;
                    ris.masked += rm.masked * rm.count;
                    ris.count += rm.count;
                    ris.logp_diff_mean += rm.logp_diff_mean * rm.tokens;
                    ris.tokens += rm.tokens;
                }
                if (grpo_loss(&lpar, MB, Tc, logp + o0, old + o0, ref ? refl + o0 : NULL, adv + mb,
                              mask + o0, o->ris_mode != GRPO_RIS_NONE ? isw + o0 : NULL, &loss,
                              dlogp + o0, &lm, err, errlen))
                    goto out;
                if (it == o->num_iterations - 1) {
                    loss_sum += loss;
                    kl_sum += lm.kl * lm.num_tokens;
                    clip_lo += lm.clip_low * lm.num_tokens;
                    clip_hi += lm.clip_high * lm.num_tokens;
                    clip_reg += lm.clip_region * lm.num_tokens;
                    tok_sum += lm.num_tokens;
                }
                for (int i = 0; i < MB * T; i++) dlp_full[i] = 0;
                for (int b = 0; b < MB; b++)
                    for (int j = 0; j < Tc; j++) {
                        int t = sel[mb + b].n_prompt - 1 + j;
                        if (t < T && tgt_b[b * T + t] >= 0) dlp_full[b * T + t] = dlogp[o0 + (size_t)b * Tc + j];
                    }
                model_backward(m, tgt_b, dlp_full);
                num_tokens += (long long)MB * T;
            }
            gnorm = model_grads_clip(m, o->max_grad_norm);
            lr = lr_warmup_cosine(update, total_updates, warmup, o->learning_rate, 1.0f);
            if (model_adamw_step(m, lr, 0.9f, 0.999f, 1e-8f, o->weight_decay)) {
                errmsg_set(err, errlen, "out of memory for optimizer state");
                goto out;
            }
        }
        double t_end = progress_now();

        /* ---- metrics and samples (TRL names) ---- */
        double rstd;
        for (int i = 0; i < S; i++) dv[i] = rew[i];
        double rmean = mean_std(dv, svalid, S, &rstd);
        json_t *vals = json_pack("{s:f,s:f,s:f}", "reward", rmean, "reward_std", rstd,
                                 "frac_reward_zero_std", (double)zero_std_kept / P);
        for (int k = 0; k < n_rew; k++) {
            double cstd;
            for (int i = 0; i < S; i++) {
                dv[i] = sres[i].value[k];
                dvalid[i] = isfinite(dv[i]);
            }
            double cm = mean_std(dv, dvalid, S, &cstd);
            char key[160];
            snprintf(key, sizeof key, "rewards/%s/mean", reward_spec_component_name(o->reward, k));
            json_object_set_new(vals, key, json_real(cm));
            snprintf(key, sizeof key, "rewards/%s/std", reward_spec_component_name(o->reward, k));
            json_object_set_new(vals, key, json_real(cstd));
            int fails = 0;
            for (int i = 0; i < S; i++) fails += sres[i].failed[k];
            if (fails) {
                snprintf(key, sizeof key, "rewards/%s/failures", reward_spec_component_name(o->reward, k));
                json_object_set_new(vals, key, json_integer(fails));
            }
        }
        double step_time = t_end - t0;
        gen_stats_get(ge, &gs1);
        json_t *more = json_pack("{s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:i,s:f,s:f,s:f,s:I,"
                                 "s:f,s:f,s:f,s:I,s:f,s:f,s:f}",
            "kl", tok_sum ? kl_sum / tok_sum : 0.0, "entropy", mask_tokens ? ent_sum / mask_tokens : 0.0,
            "clip_ratio/low_mean", tok_sum ? clip_lo / tok_sum : 0.0,
            "clip_ratio/high_mean", tok_sum ? clip_hi / tok_sum : 0.0,
            "clip_ratio/region_mean", tok_sum ? clip_reg / tok_sum : 0.0,
            "completions/mean_length", (double)comp_tokens / S,
            "completions/min_length", (double)min_len, "completions/max_length", (double)max_len,
            "groups_sampled", groups_seen,
            "completions/clipped_ratio", (double)n_trunc / S, "loss", loss_sum,
            "grad_norm", (double)gnorm, "num_tokens", (json_int_t)num_tokens,
            "learning_rate", (double)lr, "step_time", step_time, "time/generate", t_gen,
            "prompt_tokens_cached", (json_int_t)(gs1.prefix_hits - gs0.prefix_hits),
            "time/score", t_score, "time/reference", t_ref,
            "time/train", t_end - t_train0 - t_ref);
        json_object_update(vals, more);
        json_decref(more);
        /* How far the sampler's log-probs are from the trainer's for the
         * same tokens: a health check of the two forward paths. */
        json_object_set_new(vals, "logprob_sampler_max_diff", json_real(sampler_diff));
        if (o->ris_mode != GRPO_RIS_NONE && ris.count > 0) {
            /* TRL's names for the importance weights as applied */
            json_object_set_new(vals, "sampling/importance_sampling_ratio/min", json_real(ris.ratio_min));
            json_object_set_new(vals, "sampling/importance_sampling_ratio/mean",
                                json_real(ris.ratio_mean / ris.count));
            json_object_set_new(vals, "sampling/importance_sampling_ratio/max", json_real(ris.ratio_max));
            json_object_set_new(vals, "sampling/sampling_logp_difference/mean",
                                json_real(ris.tokens ? ris.logp_diff_mean / ris.tokens : 0.0));
            if (o->ris_mode == GRPO_RIS_TOKEN_MASK || o->ris_mode == GRPO_RIS_SEQUENCE_MASK)
                json_object_set_new(vals, "sampling/importance_sampling_masked",
                                    json_real(ris.masked / ris.count));
        }
        json_object_set_new(vals, "tokens_per_second", json_real(t_gen > 0 ? (double)comp_tokens / t_gen : 0));
        events_emit(events, json_pack("{s:s,s:s,s:i,s:o}", "type", "metric", "stage", o->stage,
                                      "step", step + 1, "values", vals));
        for (int i = 0; i < o->log_completions && i < P; i++) {
            int k = i * G;      /* the first sample of each of the first groups */
            json_t *rw = json_object();
            for (int c = 0; c < n_rew; c++)
                json_object_set_new(rw, reward_spec_component_name(o->reward, c),
                                    isfinite(sres[k].value[c]) ? json_real(sres[k].value[c]) : json_null());
            json_object_set_new(rw, "total", isfinite(rew[k]) ? json_real(rew[k]) : json_null());
            const json_t *row = json_array_get(ds.rows, (size_t)sel[k].row);
            events_emit(events, json_pack("{s:s,s:s,s:i,s:o,s:o,s:o,s:f,s:i}", "type", "sample",
                                          "stage", o->stage, "step", step + 1,
                                          "prompt", jsonl_text(rl_row_prompt(row), strlen(rl_row_prompt(row))),
                                          "completion", jsonl_text(sel[k].text, sel[k].text_len),
                                          "rewards", rw, "advantage", (double)adv[k],
                                          "completion_tokens", sel[k].n_tokens));
        }
        for (int i = 0; i < S; i++) rollout_free(&sel[i]);
        char extra[160];
        snprintf(extra, sizeof extra, "reward %.3f | len %.0f | %.1fs/step", rmean, (double)comp_tokens / S,
                 step_time);
        progress_update(&prog, step + 1, extra);
        bool stop = ckpt_stop_requested(o->ctl) && step + 1 < o->steps;
        if ((o->checkpoint_every > 0 && (step + 1) % o->checkpoint_every == 0 && step + 1 < o->steps) || stop) {
            char dir[4096];
            snprintf(dir, sizeof dir, "%s/checkpoints/step-%d", o->out, step + 1);
            if (model_save_dir_from(m, o->model_dir, dir, err, errlen) ||
                ckpt_write(m, dir, o->ctl, o->stage, "grpo", step + 1, o->steps, &rs.rng,
                           json_pack("{s:i,s:i,s:o,s:I,s:I}", "rows", rs.n, "pos", rs.pos,
                                     "epoch_rng", ckpt_rng_json(&rs.epoch_rng), "num_tokens",
                                     (json_int_t)num_tokens, "sampler_seed", (json_int_t)o->seed),
                           err, errlen))
                goto out;
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
    if (model_save_dir_from(m, o->model_dir, o->out, err, errlen)) goto out;
    events_emit(events, json_pack("{s:s,s:s,s:s,s:s,s:s,s:f}", "type", "stage", "stage", o->stage,
                                  "kind", "grpo", "status", "succeeded", "path", o->out,
                                  "seconds", progress_now() - t_start));
    rc = 0;
out:
    for (int i = 0; ro && i < S * (o->dynamic_sampling ? 1 + o->max_resample_rounds : 1); i++) rollout_free(&ro[i]);
    for (int i = 0; sel && i < S; i++) rollout_free(&sel[i]);
    free(sel); free(sres); free(svalid); free(dvalid); free(dv);
    free(ro); free(items); free(res); free(total); free(valid); free(rew); free(adv); free(rows); free(keep);
    free(tok_b); free(tgt_b); free(lp); free(ent); free(dlp_full); free(logp); free(old); free(refl);
    free(samp); free(isw);
    free(mask); free(dlogp); free(rs.order);
    gen_engine_free(ge);
    rl_dataset_free(&ds);
    rl_prompting_close(&pr);
    model_free(ref);
    model_free(m);
    return rc;
}
