/* engine/pipeline.c — see pipeline.h. Stage kinds with a runner here:
 * every kind of DESIGN.md: pretrain, sft, grpo, eval, generate,
 * rejection_sample and distill. One validator serves the run
 * and `train --check` (data_dir NULL); pipeline_run owns the run's
 * lifecycle: completion markers, --resume, stop requests and the terminal
 * error/done events. Checkpoint contents are engine/checkpoint.c's. */
#include "pipeline.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint.h"
#include "dist.h"
#include "events.h"
#include "grpo.h"
#include "generate.h"
#include "kv_cache.h"
#include "pretrain.h"
#include "rewards.h"
#include "sample_stage.h"
#include "sft.h"
#include "errmsg.h"

enum ptype { P_INT, P_NUM, P_BOOL, P_STR, P_ENUM };

struct param_def {
    const char *kind;           /* "a" or "a|b": the stage kinds that take it */
    const char *name;
    enum ptype type;
    double lo, hi;
    const char *choices;        /* P_ENUM: "a|b|c" */
};

/* Every parameter a stage kind accepts, with its type and range. */
#define PARAM(kind, name, type, lo, hi) {kind, name, type, lo, hi, NULL}
#define SAMPLERS "grpo|eval|generate|rejection_sample"
#define CHOICE(kind, name, choices) {kind, name, P_ENUM, 0, 0, choices}
static const struct param_def params_table[] = {
    PARAM("pretrain", "config", P_STR, 0, 0),
    PARAM("pretrain", "steps", P_INT, 1, 1e8),
    PARAM("pretrain", "batch_size", P_INT, 1, 4096),
    PARAM("pretrain", "seq_len", P_INT, 2, 1 << 20),
    PARAM("pretrain", "learning_rate", P_NUM, 0, 10),
    PARAM("pretrain", "warmup_steps", P_INT, 0, 1e8),
    PARAM("pretrain", "weight_decay", P_NUM, 0, 10),
    PARAM("pretrain", "max_grad_norm", P_NUM, 0, 1e9),
    PARAM("pretrain", "checkpoint_every", P_INT, 0, 1e8),
    PARAM("pretrain", "log_every", P_INT, 1, 1e8),
    PARAM("pretrain", "seed", P_INT, 0, 2147483647),
    PARAM("sft|distill", "epochs", P_INT, 1, 1e6),
    PARAM("sft|distill", "max_steps", P_INT, 0, 1e8),
    PARAM("sft|distill", "batch_size", P_INT, 1, 4096),
    PARAM("sft|distill", "seq_len", P_INT, 2, 1 << 20),
    PARAM("sft|distill", "packing", P_BOOL, 0, 0),
    PARAM("sft|distill", "learning_rate", P_NUM, 0, 10),
    PARAM("sft|distill", "warmup_ratio", P_NUM, 0, 1),
    PARAM("sft|distill", "weight_decay", P_NUM, 0, 10),
    PARAM("sft|distill", "max_grad_norm", P_NUM, 0, 1e9),
    PARAM("sft|distill", "eval_fraction", P_NUM, 0, 0.5),
    PARAM("sft|distill", "eval_every", P_INT, 0, 1e8),
    PARAM("sft|distill", "log_every", P_INT, 1, 1e8),
    PARAM("sft|distill", "checkpoint_every", P_INT, 0, 1e8),
    PARAM("sft|distill", "seed", P_INT, 0, 2147483647),
    PARAM("sft|distill", "chat_template", P_STR, 0, 0),
    PARAM("distill", "beta", P_NUM, 0, 1),
    PARAM("distill", "temperature", P_NUM, 1e-3, 100),
    PARAM("distill", "lmbda", P_NUM, 0, 1),
    PARAM("distill", "max_new_tokens", P_INT, 1, 1 << 20),
    PARAM("grpo", "steps", P_INT, 1, 1e8),
    PARAM("grpo", "prompts_per_step", P_INT, 1, 4096),
    PARAM("grpo", "group_size", P_INT, 2, 256),
    PARAM("grpo", "learning_rate", P_NUM, 0, 10),
    PARAM("grpo", "warmup_ratio", P_NUM, 0, 1),
    PARAM("grpo", "weight_decay", P_NUM, 0, 10),
    PARAM("grpo", "max_grad_norm", P_NUM, 0, 1e9),
    PARAM("grpo", "beta", P_NUM, 0, 100),
    PARAM("grpo", "epsilon", P_NUM, 0, 10),
    PARAM("grpo", "epsilon_high", P_NUM, 0, 10),
    CHOICE("grpo", "loss_type", "grpo|bnpo|dapo|dr_grpo"),
    CHOICE("grpo", "scale_rewards", "group|batch|none"),
    CHOICE("grpo", "importance_sampling_level", "token|sequence"),
    CHOICE("grpo", "rollout_importance_sampling_mode",
           "none|token_truncate|token_mask|sequence_truncate|sequence_mask"),
    PARAM("grpo", "rollout_importance_sampling_cap", P_NUM, 1, 1e6),
    PARAM("grpo", "num_iterations", P_INT, 1, 64),
    PARAM("grpo", "mask_truncated_completions", P_BOOL, 0, 0),
    PARAM("grpo", "dynamic_sampling", P_BOOL, 0, 0),
    PARAM("grpo", "max_resample_rounds", P_INT, 0, 16),
    PARAM("grpo", "micro_batch_size", P_INT, 0, 4096),
    PARAM("grpo", "checkpoint_every", P_INT, 0, 1e8),
    PARAM("eval", "num_samples", P_INT, 0, 256),
    /* what every stage that samples takes (SAMPLING_PARAMS) */
    PARAM(SAMPLERS, "max_prompt_length", P_INT, 1, 1 << 20),
    PARAM(SAMPLERS, "max_completion_length", P_INT, 1, 1 << 20),
    PARAM(SAMPLERS, "temperature", P_NUM, 0, 100),
    PARAM(SAMPLERS, "top_p", P_NUM, 1e-9, 1),
    PARAM(SAMPLERS, "log_completions", P_INT, 0, 1024),
    PARAM(SAMPLERS, "kv_cache_mb", P_INT, 1, 1 << 20),
    CHOICE(SAMPLERS, "kv_dtype", "f16|f32|q8"),
    CHOICE(SAMPLERS, "dtype", "f32|bf16|q8|q4"),
    PARAM(SAMPLERS, "seed", P_INT, 0, 2147483647),
    PARAM(SAMPLERS, "chat_template", P_STR, 0, 0),
    PARAM(SAMPLERS, "prompt_template", P_STR, 0, 0),
    PARAM(SAMPLERS, "prefill_think", P_BOOL, 0, 0),
    PARAM("grpo|generate|rejection_sample", "top_k", P_INT, 0, 1 << 30),
    PARAM("grpo|generate|rejection_sample", "min_p", P_NUM, 0, 1),
    PARAM("generate|rejection_sample", "num_samples", P_INT, 1, 256),
    PARAM("rejection_sample", "min_reward", P_NUM, -1e9, 1e9),
    PARAM("rejection_sample", "max_per_prompt", P_INT, 0, 256),
    PARAM("rejection_sample", "keep_truncated", P_BOOL, 0, 0),
    PARAM("rejection_sample", "keep_duplicates", P_BOOL, 0, 0),
};

static const char *const runnable_kinds[] = {"pretrain", "sft", "grpo", "eval", "generate",
                                             "rejection_sample", "distill"};
static const char *const reward_kinds[] = {"grpo", "eval", "rejection_sample"};
static const char *const model_kinds[] = {"pretrain", "sft", "grpo", "distill"};
static const char *const dataset_kinds[] = {"generate", "rejection_sample"};
static const char *const parallel_kinds[] = {"pretrain", "sft", "distill"};   /* data-parallel */

static bool in_list(const char *s, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s, list[i]) == 0) return true;
    return false;
}
#define IN(s, arr) in_list((s), (arr), sizeof(arr) / sizeof *(arr))

/* Whether s is one of the '|'-separated words of list. */
static bool bar_list_has(const char *list, const char *s)
{
    const size_t n = strlen(s);
    for (const char *c = list; *c;) {
        const char *bar = strchr(c, '|');
        const size_t cl = bar ? (size_t)(bar - c) : strlen(c);
        if (cl == n && strncmp(c, s, n) == 0) return true;
        c += cl + (bar != NULL);
    }
    return false;
}

static int check_params(const struct pipeline_stage *st, char *err, size_t errlen)
{
    if (!st->params) return 0;
    if (!json_is_object(st->params)) {
        errmsg_set(err, errlen, "stage \"%s\": params: expected an object", st->name);
        return -1;
    }
    const char *key;
    json_t *val;
    json_object_foreach(st->params, key, val) {
        const struct param_def *d = NULL;
        for (size_t i = 0; i < sizeof params_table / sizeof *params_table; i++)
            if (bar_list_has(params_table[i].kind, st->kind) && strcmp(params_table[i].name, key) == 0)
                d = &params_table[i];
        if (!d) {
            errmsg_set(err, errlen, "stage \"%s\": params.%s: unknown parameter for a %s stage",
                 st->name, key, st->kind);
            return -1;
        }
        const char *want = NULL;
        switch (d->type) {
        case P_INT:
            if (!json_is_integer(val)) want = "an integer";
            else if (json_integer_value(val) < d->lo || json_integer_value(val) > d->hi) want = "";
            break;
        case P_NUM:
            if (!json_is_number(val)) want = "a number";
            else if (json_number_value(val) < d->lo || json_number_value(val) > d->hi) want = "";
            break;
        case P_BOOL:
            if (!json_is_boolean(val)) want = "true or false";
            break;
        case P_STR:
            if (!json_is_string(val)) want = "a string";
            break;
        case P_ENUM: {
            if (!json_is_string(val) || !bar_list_has(d->choices, json_string_value(val))) {
                errmsg_set(err, errlen, "stage \"%s\": params.%s: expected one of %s", st->name, key, d->choices);
                return -1;
            }
            break;
        }
        }
        if (want && *want) {
            errmsg_set(err, errlen, "stage \"%s\": params.%s: expected %s", st->name, key, want);
            return -1;
        }
        if (want) {
            errmsg_set(err, errlen, "stage \"%s\": params.%s: must be in [%g, %g]", st->name, key, d->lo, d->hi);
            return -1;
        }
    }
    return 0;
}

static int find_stage(const struct pipeline *p, const char *name)
{
    for (int i = 0; i < p->n_stages; i++)
        if (strcmp(p->stages[i].name, name) == 0) return i;
    return -1;
}

static void resolve_path(char *out, size_t n, const char *data_dir, const char *ref)
{
    if (ref[0] == '/') snprintf(out, n, "%s", ref);
    else snprintf(out, n, "%s/%s", data_dir, ref);
}

/* Resolves stage i's "model", "dataset" or "teacher" reference; data_dir NULL keeps
 * a reference that names no stage as given (opaque). */
static int resolve_ref(struct pipeline *p, int i, const char *field, const char *base,
                       const char *data_dir, char *err, size_t errlen)
{
    struct pipeline_stage *st = &p->stages[i];
    json_t *sj = json_array_get(json_object_get(p->spec, "stages"), (size_t)i);
    json_t *ref = json_object_get(sj, field);
    const bool is_model = strcmp(field, "dataset") != 0;    /* model or teacher */
    const bool is_teacher = strcmp(field, "teacher") == 0;
    /* a pretrain stage creates its model from params.config, or continues
     * one named by "model" */
    const bool optional = is_model && strcmp(st->kind, "pretrain") == 0;
    if (!ref) {
        if (!optional) {
            errmsg_set(err, errlen, "stage \"%s\": field \"%s\" is missing", st->name, field);
            return -1;
        }
        return 0;
    }
    if (!json_is_string(ref) || !*json_string_value(ref)) {
        errmsg_set(err, errlen, "stage \"%s\": field \"%s\": expected a reference string", st->name, field);
        return -1;
    }
    const char *r = json_string_value(ref);
    char *dst = is_teacher ? st->teacher : is_model ? st->model : st->dataset;
    int *from = is_teacher ? &st->teacher_from : is_model ? &st->model_from : &st->dataset_from;
    if (is_model && strcmp(r, "$base") == 0) {
        if (!base && !data_dir) {
            /* check-only: the run that uses the pipeline names its base */
            snprintf(dst, 4096, "%s", r);
            return 0;
        }
        if (!base) {
            errmsg_set(err, errlen, "stage \"%s\": model \"$base\" but the pipeline has no base_model", st->name);
            return -1;
        }
        r = base;
    }
    int j = find_stage(p, r);
    if (j >= 0) {
        if (is_model && !IN(p->stages[j].kind, model_kinds)) {
            errmsg_set(err, errlen, "stage \"%s\": %s \"%s\" names a %s stage, which produces no model",
                 st->name, field, r, p->stages[j].kind);
            return -1;
        }
        if (!is_model && !IN(p->stages[j].kind, dataset_kinds)) {
            errmsg_set(err, errlen, "stage \"%s\": dataset \"%s\" names a %s stage, which produces no dataset",
                 st->name, r, p->stages[j].kind);
            return -1;
        }
        *from = j;
        return 0;   /* filled once the producer's output directory is known */
    }
    if (!data_dir) {
        /* check-only: an id the caller (the server) resolves itself */
        snprintf(dst, 4096, "%s", r);
        return 0;
    }
    resolve_path(dst, 4096, data_dir, r);
    struct stat sb;
    char probe[4200];
    snprintf(probe, sizeof probe, is_model ? "%s/config.json" : "%s", dst);
    if (stat(probe, &sb) != 0 || (!is_model && !S_ISREG(sb.st_mode))) {
        errmsg_set(err, errlen, "stage \"%s\": %s \"%s\" is neither a stage of this pipeline nor %s under %s",
             st->name, field, r, is_model ? "a model directory" : "a file", data_dir);
        return -1;
    }
    return 0;
}

int pipeline_load(struct pipeline *p, json_t *spec, const char *data_dir,
                  const char *out_dir, char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    if (!json_is_object(spec)) { errmsg_set(err, errlen, "pipeline: expected a JSON object"); return -1; }
    p->spec = json_incref(spec);
    if (out_dir) snprintf(p->out_dir, sizeof p->out_dir, "%s", out_dir);
    const char *key;
    json_t *val;
    json_object_foreach(spec, key, val) {
        if (strcmp(key, "name") && strcmp(key, "base_model") && strcmp(key, "stages") &&
            strcmp(key, "description")) {
            errmsg_set(err, errlen, "pipeline: unknown field \"%s\"", key);
            goto fail;
        }
    }
    json_t *name = json_object_get(spec, "name"), *base = json_object_get(spec, "base_model");
    json_t *stages = json_object_get(spec, "stages");
    if (!json_is_string(name) || !*json_string_value(name)) {
        errmsg_set(err, errlen, "pipeline: field \"name\" must be a non-empty string");
        goto fail;
    }
    snprintf(p->name, sizeof p->name, "%s", json_string_value(name));
    if (base && !json_is_string(base)) {
        errmsg_set(err, errlen, "pipeline: field \"base_model\" must be a string");
        goto fail;
    }
    if (!json_is_array(stages) || json_array_size(stages) == 0 ||
        json_array_size(stages) > PIPELINE_MAX_STAGES) {
        errmsg_set(err, errlen, "pipeline: field \"stages\" must be an array of 1 to %d stages", PIPELINE_MAX_STAGES);
        goto fail;
    }
    p->n_stages = (int)json_array_size(stages);
    for (int i = 0; i < p->n_stages; i++) {
        json_t *s = json_array_get(stages, (size_t)i);
        struct pipeline_stage *st = &p->stages[i];
        st->model_from = st->dataset_from = st->teacher_from = -1;
        if (!json_is_object(s)) { errmsg_set(err, errlen, "pipeline: stages[%d]: expected an object", i); goto fail; }
        json_t *sn = json_object_get(s, "name"), *sk = json_object_get(s, "kind");
        if (!json_is_string(sn) || !*json_string_value(sn) || json_string_length(sn) >= sizeof st->name) {
            errmsg_set(err, errlen, "pipeline: stages[%d].name: expected a non-empty string of at most %zu bytes",
                 i, sizeof st->name - 1);
            goto fail;
        }
        const char *nm = json_string_value(sn);
        for (const char *c = nm; *c; c++)
            if (!isalnum((unsigned char)*c) && *c != '-' && *c != '_' && *c != '.') {
                errmsg_set(err, errlen, "pipeline: stages[%d].name \"%s\": use letters, digits, '-', '_' and '.'", i, nm);
                goto fail;
            }
        if (nm[0] == '.' || find_stage(p, nm) >= 0) {
            errmsg_set(err, errlen, "pipeline: stages[%d].name \"%s\": %s", i, nm,
                 nm[0] == '.' ? "must not start with '.'" : "duplicate stage name");
            goto fail;
        }
        snprintf(st->name, sizeof st->name, "%s", nm);
        if (!json_is_string(sk)) { errmsg_set(err, errlen, "stage \"%s\": field \"kind\" is missing", nm); goto fail; }
        const char *kind = json_string_value(sk);
        if (!IN(kind, runnable_kinds)) {
            errmsg_set(err, errlen, "stage \"%s\": unknown kind \"%s\" (pretrain, sft, grpo, eval, generate, "
                       "rejection_sample, distill)", nm, kind);
            goto fail;
        }
        snprintf(st->kind, sizeof st->kind, "%s", kind);
        json_object_foreach(s, key, val) {
            if (strcmp(key, "name") && strcmp(key, "kind") && strcmp(key, "model") &&
                strcmp(key, "dataset") && strcmp(key, "params") &&
                !(strcmp(key, "reward") == 0 && IN(kind, reward_kinds)) &&
                !(strcmp(key, "teacher") == 0 && strcmp(kind, "distill") == 0)) {
                errmsg_set(err, errlen, "stage \"%s\": unknown field \"%s\"", nm, key);
                goto fail;
            }
        }
        st->params = json_object_get(s, "params");
        if (check_params(st, err, errlen)) goto fail;
        if (strcmp(kind, "pretrain") == 0) {
            const bool has_cfg = json_object_get(st->params, "config") != NULL;
            const bool has_model = json_object_get(s, "model") != NULL;
            if (has_cfg == has_model) {
                errmsg_set(err, errlen, has_cfg
                           ? "stage \"%s\": params.config and model are exclusive (a continued "
                             "pretraining takes the model's config)"
                           : "stage \"%s\": params.config is missing (tiny, small or a config.json "
                             "path), or name a model to continue from", nm);
                goto fail;
            }
        }
        if (out_dir) snprintf(st->out, sizeof st->out, "%s/%s", out_dir, nm);
        if (IN(kind, reward_kinds)) {
            /* inline spec, or the path of a stored one under data_dir (when
             * checking only: a stored reward's id, resolved by the caller) */
            json_t *rw = json_object_get(s, "reward");
            char rerr[1024] = "";
            bool stored_id = !data_dir && json_is_string(rw) && *json_string_value(rw);
            if (json_is_object(rw)) {
                st->reward = reward_spec_parse(rw, rerr, sizeof rerr);
            } else if (stored_id) {
                /* kept unloaded */
            } else if (json_is_string(rw) && data_dir) {
                char rp[4096];
                resolve_path(rp, sizeof rp, data_dir, json_string_value(rw));
                st->reward = reward_spec_load(rp, rerr, sizeof rerr);
            } else {
                snprintf(rerr, sizeof rerr, "is %s (an inline spec object or a spec file path)",
                         !rw ? "missing" : json_is_string(rw) ? "an empty string"
                                         : "neither an object nor a string");
            }
            if (!st->reward && !stored_id) {
                errmsg_set(err, errlen, "stage \"%s\": field \"reward\": %s", nm, rerr);
                goto fail;
            }
        }
    }
    for (int i = 0; i < p->n_stages; i++)
        if (resolve_ref(p, i, "model", base ? json_string_value(base) : NULL, data_dir, err, errlen) ||
            resolve_ref(p, i, "dataset", NULL, data_dir, err, errlen) ||
            (strcmp(p->stages[i].kind, "distill") == 0 &&
             resolve_ref(p, i, "teacher", base ? json_string_value(base) : NULL, data_dir, err, errlen)))
            goto fail;

    /* Kahn's algorithm over the producer -> consumer edges. */
    int indeg[PIPELINE_MAX_STAGES] = {0}, n_done = 0;
    bool done[PIPELINE_MAX_STAGES] = {false};
    for (int i = 0; i < p->n_stages; i++)
        indeg[i] = (p->stages[i].model_from >= 0) + (p->stages[i].dataset_from >= 0) +
                   (p->stages[i].teacher_from >= 0);
    while (n_done < p->n_stages) {
        int pick = -1;
        for (int i = 0; i < p->n_stages && pick < 0; i++)
            if (!done[i] && indeg[i] == 0) pick = i;
        if (pick < 0) {
            char names[512] = "";
            size_t off = 0;
            for (int i = 0; i < p->n_stages && off < sizeof names - 80; i++)
                if (!done[i])
                    off += (size_t)snprintf(names + off, sizeof names - off, "%s\"%s\"", off ? ", " : "",
                                            p->stages[i].name);
            errmsg_set(err, errlen, "pipeline: the stages %s reference each other in a cycle", names);
            goto fail;
        }
        done[pick] = true;
        p->order[n_done++] = pick;
        for (int i = 0; i < p->n_stages; i++) {
            if (i != pick && p->stages[i].model_from == pick) {
                indeg[i]--;
                memcpy(p->stages[i].model, p->stages[pick].out, sizeof p->stages[i].model);
            }
            if (i != pick && p->stages[i].teacher_from == pick) {
                indeg[i]--;
                memcpy(p->stages[i].teacher, p->stages[pick].out, sizeof p->stages[i].teacher);
            }
            if (i != pick && p->stages[i].dataset_from == pick) {
                char dpath[sizeof p->stages[i].dataset];
                indeg[i]--;
                snprintf(dpath, sizeof dpath, "%s/data.jsonl", p->stages[pick].out);
                memcpy(p->stages[i].dataset, dpath, sizeof dpath);
            }
        }
    }
    return 0;
fail:
    pipeline_free(p);
    return -1;
}

int pipeline_check(json_t *spec, char *err, size_t errlen)
{
    struct pipeline *p = malloc(sizeof *p);
    if (!p) { errmsg_set(err, errlen, "out of memory"); return -1; }
    int rc = pipeline_load(p, spec, NULL, NULL, err, errlen);
    if (rc == 0) pipeline_free(p);
    free(p);
    return rc;
}

void pipeline_free(struct pipeline *p)
{
    for (int i = 0; i < p->n_stages; i++) {
        reward_spec_free(p->stages[i].reward);
        p->stages[i].reward = NULL;
    }
    json_decref(p->spec);
    p->spec = NULL;
}

static long p_int(const json_t *params, const char *name, long def)
{
    json_t *v = json_object_get(params, name);
    return json_is_integer(v) ? (long)json_integer_value(v) : def;
}
static double p_num(const json_t *params, const char *name, double def)
{
    json_t *v = json_object_get(params, name);
    return json_is_number(v) ? json_number_value(v) : def;
}

static const char *p_str(const json_t *params, const char *name)
{
    json_t *v = json_object_get(params, name);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* The parameters every stage that samples from a model shares (grpo,
 * eval, generate, rejection_sample), read into the same-named fields of
 * its options o, over their defaults. */
#define SAMPLING_PARAMS(o, pa)                                                                   \
    do {                                                                                         \
        (o).chat_template = p_str(pa, "chat_template");                                          \
        (o).prompt_template = p_str(pa, "prompt_template");                                      \
        (o).prefill_think = json_is_true(json_object_get(pa, "prefill_think"));                  \
        (o).max_prompt_length = (int)p_int(pa, "max_prompt_length", (o).max_prompt_length);      \
        (o).max_completion_length =                                                              \
            (int)p_int(pa, "max_completion_length", (o).max_completion_length);                  \
        (o).temperature = (float)p_num(pa, "temperature", (o).temperature);                      \
        (o).top_p = (float)p_num(pa, "top_p", (o).top_p);                                        \
        (o).log_completions = (int)p_int(pa, "log_completions", (o).log_completions);            \
        (o).kv_cache_mb = (int)p_int(pa, "kv_cache_mb", (o).kv_cache_mb);                        \
        if (p_str(pa, "kv_dtype")) kv_dtype_parse(p_str(pa, "kv_dtype"), &(o).kv_dtype);         \
        if (p_str(pa, "dtype")) w_dtype_parse(p_str(pa, "dtype"), NULL, &(o).dtype);             \
        (o).seed = (uint64_t)p_int(pa, "seed", (long)(o).seed);                                  \
    } while (0)

static int run_stage(const struct pipeline_stage *st, struct train_ctl *ctl, const struct backend *be,
                     FILE *events, char *err, size_t errlen)
{
    const json_t *pa = st->params;
    if (strcmp(st->kind, "pretrain") == 0) {
        struct pretrain_opts o;
        pretrain_opts_default(&o);
        o.config = json_string_value(json_object_get(pa, "config"));
        o.init = st->model[0] ? st->model : NULL;
        o.data = st->dataset;
        o.out = st->out;
        o.stage = st->name;
        o.steps = (int)p_int(pa, "steps", o.steps);
        o.batch = (int)p_int(pa, "batch_size", o.batch);
        o.seq_len = (int)p_int(pa, "seq_len", o.seq_len);
        o.lr = (float)p_num(pa, "learning_rate", o.lr);
        o.warmup_steps = (int)p_int(pa, "warmup_steps", o.warmup_steps);
        o.weight_decay = (float)p_num(pa, "weight_decay", o.weight_decay);
        o.max_grad_norm = (float)p_num(pa, "max_grad_norm", o.max_grad_norm);
        o.checkpoint_every = (int)p_int(pa, "checkpoint_every", o.checkpoint_every);
        o.log_every = (int)p_int(pa, "log_every", o.log_every);
        o.seed = (uint64_t)p_int(pa, "seed", (long)o.seed);
        o.ctl = ctl;
        return pretrain_run(&o, be, events, err, errlen);
    }
    if (strcmp(st->kind, "grpo") == 0) {
        struct grpo_opts o;
        grpo_opts_default(&o);
        o.model_dir = st->model;
        o.data = st->dataset;
        o.out = st->out;
        o.stage = st->name;
        o.reward = st->reward;
        SAMPLING_PARAMS(o, pa);
        o.steps = (int)p_int(pa, "steps", o.steps);
        o.prompts_per_step = (int)p_int(pa, "prompts_per_step", o.prompts_per_step);
        o.group_size = (int)p_int(pa, "group_size", o.group_size);
        o.learning_rate = (float)p_num(pa, "learning_rate", o.learning_rate);
        o.warmup_ratio = (float)p_num(pa, "warmup_ratio", o.warmup_ratio);
        o.weight_decay = (float)p_num(pa, "weight_decay", o.weight_decay);
        o.max_grad_norm = (float)p_num(pa, "max_grad_norm", o.max_grad_norm);
        o.top_k = (int)p_int(pa, "top_k", o.top_k);
        o.min_p = (float)p_num(pa, "min_p", o.min_p);
        o.beta = p_num(pa, "beta", o.beta);
        o.epsilon = p_num(pa, "epsilon", o.epsilon);
        o.epsilon_high = p_num(pa, "epsilon_high", o.epsilon);
        if (p_str(pa, "loss_type")) grpo_loss_type_parse(p_str(pa, "loss_type"), &o.loss_type);
        if (p_str(pa, "scale_rewards")) grpo_scale_parse(p_str(pa, "scale_rewards"), &o.scale_rewards);
        if (p_str(pa, "importance_sampling_level"))
            grpo_is_level_parse(p_str(pa, "importance_sampling_level"), &o.is_level);
        if (p_str(pa, "rollout_importance_sampling_mode"))
            grpo_ris_mode_parse(p_str(pa, "rollout_importance_sampling_mode"), &o.ris_mode);
        o.ris_cap = p_num(pa, "rollout_importance_sampling_cap", o.ris_cap);
        o.num_iterations = (int)p_int(pa, "num_iterations", o.num_iterations);
        o.mask_truncated_completions = json_is_true(json_object_get(pa, "mask_truncated_completions"));
        o.dynamic_sampling = json_is_true(json_object_get(pa, "dynamic_sampling"));
        o.max_resample_rounds = (int)p_int(pa, "max_resample_rounds", o.max_resample_rounds);
        o.micro_batch_size = (int)p_int(pa, "micro_batch_size", o.micro_batch_size);
        o.checkpoint_every = (int)p_int(pa, "checkpoint_every", o.checkpoint_every);
        o.ctl = ctl;
        return grpo_run(&o, be, events, err, errlen);
    }
    if (strcmp(st->kind, "eval") == 0) {
        struct eval_opts o;
        eval_opts_default(&o);
        o.model_dir = st->model;
        o.data = st->dataset;
        o.stage = st->name;
        o.reward = st->reward;
        SAMPLING_PARAMS(o, pa);
        o.num_samples = (int)p_int(pa, "num_samples", o.num_samples);
        return eval_run(&o, be, events, err, errlen);
    }
    if (IN(st->kind, dataset_kinds)) {
        struct sample_opts o;
        sample_opts_default(&o);
        const bool rs = st->reward != NULL;
        o.model_dir = st->model;
        o.data = st->dataset;
        o.out = st->out;
        o.stage = st->name;
        o.kind = st->kind;
        o.reward = st->reward;
        SAMPLING_PARAMS(o, pa);
        o.num_samples = (int)p_int(pa, "num_samples", rs ? 4 : o.num_samples);
        o.top_k = (int)p_int(pa, "top_k", o.top_k);
        o.min_p = (float)p_num(pa, "min_p", o.min_p);
        o.has_min_reward = json_object_get(pa, "min_reward") != NULL;
        o.min_reward = p_num(pa, "min_reward", 0);
        o.max_per_prompt = (int)p_int(pa, "max_per_prompt", 0);
        o.keep_truncated = json_is_true(json_object_get(pa, "keep_truncated"));
        o.keep_duplicates = json_is_true(json_object_get(pa, "keep_duplicates"));
        o.ctl = ctl;
        return sample_run(&o, be, events, err, errlen);
    }
    struct sft_opts o;
    sft_opts_default(&o);
    o.model_dir = st->model;
    o.data = st->dataset;
    o.out = st->out;
    o.stage = st->name;
    o.template_name = p_str(pa, "chat_template");
    o.epochs = (int)p_int(pa, "epochs", o.epochs);
    o.max_steps = (int)p_int(pa, "max_steps", o.max_steps);
    o.batch = (int)p_int(pa, "batch_size", o.batch);
    o.seq_len = (int)p_int(pa, "seq_len", o.seq_len);
    o.packing = json_is_true(json_object_get(pa, "packing"));
    o.lr = (float)p_num(pa, "learning_rate", o.lr);
    o.warmup_ratio = (float)p_num(pa, "warmup_ratio", o.warmup_ratio);
    o.weight_decay = (float)p_num(pa, "weight_decay", o.weight_decay);
    o.max_grad_norm = (float)p_num(pa, "max_grad_norm", o.max_grad_norm);
    o.eval_fraction = (float)p_num(pa, "eval_fraction", o.eval_fraction);
    o.eval_every = (int)p_int(pa, "eval_every", o.eval_every);
    o.log_every = (int)p_int(pa, "log_every", o.log_every);
    o.checkpoint_every = (int)p_int(pa, "checkpoint_every", o.checkpoint_every);
    o.seed = (uint64_t)p_int(pa, "seed", (long)o.seed);
    o.ctl = ctl;
    if (strcmp(st->kind, "distill") == 0) {
        o.kind = "distill";
        o.teacher_dir = st->teacher;
        o.kd_beta = (float)p_num(pa, "beta", o.kd_beta);
        o.kd_temperature = (float)p_num(pa, "temperature", o.kd_temperature);
        o.lmbda = (float)p_num(pa, "lmbda", o.lmbda);
        o.max_new_tokens = (int)p_int(pa, "max_new_tokens", o.max_new_tokens);
    }
    return sft_run(&o, be, events, err, errlen);
}

static bool file_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* Writes <stage out>/aha_stage.json, the marker of a stage that succeeded. */
static int write_marker(const struct pipeline *p, const struct pipeline_stage *st, char *err, size_t errlen)
{
    char path[4200];
    if (model_dir_create(st->out, err, errlen)) return -1;
    snprintf(path, sizeof path, "%s/" CKPT_STAGE_MARKER, st->out);
    json_t *mk = json_pack("{s:s,s:s,s:s,s:s}", "pipeline", p->name, "stage", st->name, "kind", st->kind,
                           "status", "succeeded");
    int rc = json_dump_file(mk, path, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    json_decref(mk);
    if (rc) errmsg_set(err, errlen, "%s: cannot write", path);
    return rc ? -1 : 0;
}

/* Reads a --resume checkpoint and checks it against p: its stage exists
 * with the same kind and params, in a pipeline of the same name. Returns
 * the stage index and sets *state (new reference), or -1 with err naming
 * the file. */
static int resume_stage(const struct pipeline *p, const char *dir, json_t **state, char *err, size_t errlen)
{
    json_t *st = ckpt_read(dir, err, errlen);
    if (!st) return -1;
    const char *name = json_string_value(json_object_get(st, "stage"));
    const char *kind = json_string_value(json_object_get(st, "kind"));
    const char *pname = json_string_value(json_object_get(st, "pipeline"));
    int i = find_stage(p, name);
    json_t *empty = json_object();
    const json_t *want = i >= 0 && p->stages[i].params ? p->stages[i].params : empty;
    bool bad = true;
    if (i < 0)
        errmsg_set(err, errlen, "%s/" CKPT_STATE_FILE ": stage \"%s\" is not a stage of pipeline \"%s\"", dir,
                   name, p->name);
    else if (strcmp(kind, p->stages[i].kind) != 0)
        errmsg_set(err, errlen, "%s/" CKPT_STATE_FILE ": stage \"%s\" is a %s stage, the checkpoint is of a %s "
                   "stage", dir, name, p->stages[i].kind, kind);
    else if (pname && strcmp(pname, p->name) != 0)
        errmsg_set(err, errlen, "%s/" CKPT_STATE_FILE ": written by pipeline \"%s\", not \"%s\"", dir, pname,
                   p->name);
    else if (!json_equal(json_object_get(st, "params"), (json_t *)want))
        errmsg_set(err, errlen, "%s/" CKPT_STATE_FILE ": stage \"%s\": params differ from the pipeline's "
                   "(a checkpoint resumes the same stage definition)", dir, name);
    else
        bad = false;
    json_decref(empty);
    if (bad) {
        json_decref(st);
        return -1;
    }
    *state = st;
    return i;
}

/* The terminal events of a run: error (when failed), then done. */
static int finish(const struct pipeline *p, FILE *events, const char *status, const char *stage,
                  const char *checkpoint, const char *message)
{
    if (message)
        events_emit(events, stage ? json_pack("{s:s,s:s,s:s}", "type", "error", "stage", stage, "message", message)
                                  : json_pack("{s:s,s:s}", "type", "error", "message", message));
    json_t *done = json_pack("{s:s,s:s,s:s}", "type", "done", "name", p->name, "status", status);
    if (checkpoint) json_object_set_new(done, "checkpoint", json_string(checkpoint));
    if (message) json_object_set_new(done, "error", json_string(message));
    events_emit(events, done);
    return strcmp(status, "succeeded") == 0 ? 0 : strcmp(status, "cancelled") == 0 ? PIPELINE_CANCELLED : -1;
}

int pipeline_run(struct pipeline *p, const struct backend *be, const char *resume,
                 const volatile sig_atomic_t *stop, FILE *events, char *err, size_t errlen)
{
    json_t *names = json_array();
    for (int k = 0; k < p->n_stages; k++)
        json_array_append_new(names, json_string(p->stages[p->order[k]].name));
    json_t *ev = json_pack("{s:s,s:s,s:s,s:o,s:s}", "type", "pipeline", "name", p->name, "status", "running",
                           "order", names, "out", p->out_dir);
    if (resume) json_object_set_new(ev, "resume", json_string(resume));
    events_emit(events, ev);
    err[0] = 0;
    json_t *state = NULL;
    int rstage = -1, rc;
    if (resume) {
        char probe[4200];
        snprintf(probe, sizeof probe, "%s/" CKPT_STATE_FILE, resume);
        char *a = realpath(resume, NULL), *b = realpath(p->out_dir, NULL);
        bool is_out = a && b && strcmp(a, b) == 0;
        free(a);
        free(b);
        if (file_exists(probe) || !is_out) {
            /* a checkpoint directory; anything else but the run's output
             * directory (stage-level resume) is reported by ckpt_read */
            if ((rstage = resume_stage(p, resume, &state, err, errlen)) < 0)
                return finish(p, events, "failed", NULL, NULL, err);
        }
    }
    for (int k = 0; k < p->n_stages; k++) {
        struct pipeline_stage *st = &p->stages[p->order[k]];
        char marker[4200];
        snprintf(marker, sizeof marker, "%s/" CKPT_STAGE_MARKER, st->out);
        if (resume && file_exists(marker)) {
            events_emit(events, json_pack("{s:s,s:s,s:s,s:s,s:s}", "type", "stage", "stage", st->name,
                                          "kind", st->kind, "status", "skipped", "path", st->out));
            continue;
        }
        if (rstage >= 0 && p->order[k] != rstage) {
            bool before = false;
            for (int j = k + 1; j < p->n_stages; j++) before |= p->order[j] == rstage;
            if (before) {
                errmsg_set(err, errlen, "--resume %s: stage \"%s\" runs before \"%s\" but has not completed "
                           "(%s is missing)", resume, st->name, p->stages[rstage].name, marker);
                rc = finish(p, events, "failed", NULL, NULL, err);
                json_decref(state);
                return rc;
            }
        }
        if (dist_any(stop && *stop)) {
            /* between stages: what completed is kept; --resume with the
             * output directory continues from the next stage */
            events_emit(events, json_pack("{s:s,s:s,s:s,s:s}", "type", "log", "stage", st->name, "message",
                                          "stopped before this stage"));
            json_decref(state);
            return finish(p, events, "cancelled", NULL, p->out_dir, NULL);
        }
        remove(marker);
        struct train_ctl ctl = {.pipeline = p->name, .params = st->params, .stop = stop};
        if (p->order[k] == rstage) {
            ctl.resume_dir = resume;
            ctl.resume_state = state;
            char msg[4200];
            snprintf(msg, sizeof msg, "resuming from checkpoint %s", resume);
            events_emit(events, json_pack("{s:s,s:s,s:I,s:s}", "type", "log", "stage", st->name, "step",
                                          json_integer_value(json_object_get(state, "step")), "message", msg));
        }
        err[0] = 0;
        /* data-parallel (engine/dist.h): the trainers split their batches
         * across the ranks; any other stage runs on rank 0 alone. Rank 0
         * writes the marker, and its result (broadcast) lets the others on
         * only once the stage's output is complete. */
        const bool all_ranks = IN(st->kind, parallel_kinds);
        rc = all_ranks || dist_leader() ? run_stage(st, &ctl, be, events, err, errlen) : 0;
        if (rc == 0 && dist_leader() && write_marker(p, st, err, errlen)) rc = -1;
        rc = dist_bcast_int(rc);
        if (rc && !err[0] && !dist_leader()) errmsg_set(err, errlen, "stage \"%s\" failed on rank 0", st->name);
        if (rc == TRAIN_STOPPED) {
            /* a stage without checkpoints (generate, rejection_sample)
             * starts again: --resume with the run's output directory */
            if (!ctl.stopped_at[0]) snprintf(ctl.stopped_at, sizeof ctl.stopped_at, "%s", p->out_dir);
            events_emit(events, json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "type", "stage", "stage", st->name,
                                          "kind", st->kind, "status", "cancelled", "path", st->out,
                                          "checkpoint", ctl.stopped_at));
            json_decref(state);
            return finish(p, events, "cancelled", NULL, ctl.stopped_at, NULL);
        }
        if (rc) {
            if (!err[0]) errmsg_set(err, errlen, "stage failed");
            events_emit(events, json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "type", "stage", "stage", st->name,
                                          "kind", st->kind, "status", "failed", "path", st->out, "error", err));
            json_decref(state);
            return finish(p, events, "failed", st->name, NULL, err);
        }
    }
    json_decref(state);
    return finish(p, events, "succeeded", NULL, NULL, NULL);
}
