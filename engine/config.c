/* engine/config.c — parse, validate and write Hugging Face config.json for
 * LlamaForCausalLM and Qwen2ForCausalLM, and the RoPE frequencies they imply.
 * Not a general PretrainedConfig: every key is either understood, known to be
 * harmless (allowlist below), or an error. */
#include "config.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Keys that never change the forward/backward math of a loaded model
 * (bookkeeping, generation defaults, tooling). Their values are not checked.
 * Covers every key of the config.json of Qwen2.5-{0.5B,1.5B,7B}-Instruct,
 * DeepSeek-R1-Distill-Qwen-1.5B, Llama-3.2-1B(-Instruct),
 * Llama-3.1-8B(-Instruct), TinyLlama-1.1B and SmolLM2 (base and Instruct),
 * and what transformers 4.x/5.x adds when it saves them. */
static const char *const harmless_keys[] = {
    "_name_or_path", "transformers_version", "torch_dtype", "dtype",
    "use_cache", "initializer_range", "pad_token_id", "sliding_window",
    "max_window_layers", "is_llama_config", "transformers.js_config",
    "_attn_implementation_autoset", "output_attentions",
    "output_hidden_states", "return_dict", "torchscript", "use_bfloat16",
    "tf_legacy_loss", "pruned_heads", "chunk_size_feed_forward",
    "is_decoder", "is_encoder_decoder", "add_cross_attention",
    "cross_attention_hidden_size", "tie_encoder_decoder",
    "tokenizer_class", "prefix", "sep_token_id", "decoder_start_token_id",
    "forced_bos_token_id", "forced_eos_token_id", "id2label", "label2id",
    "problem_type", "finetuning_task", "task_specific_params",
    /* generation defaults (older transformers stored them in config.json) */
    "max_length", "min_length", "do_sample", "early_stopping", "num_beams",
    "num_beam_groups", "diversity_penalty", "temperature", "top_k", "top_p",
    "typical_p", "repetition_penalty", "length_penalty",
    "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids",
    "num_return_sequences", "output_scores", "return_dict_in_generate",
    "remove_invalid_values", "exponential_decay_length_penalty",
    "suppress_tokens", "begin_suppress_tokens",
};

/* Keys this file reads and checks itself. */
static const char *const handled_keys[] = {
    "architectures", "model_type", "vocab_size", "hidden_size",
    "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "head_dim", "intermediate_size", "max_position_embeddings", "rope_theta",
    "rms_norm_eps", "tie_word_embeddings", "bos_token_id", "eos_token_id",
    "attention_bias", "hidden_act", "mlp_bias", "pretraining_tp",
    "attention_dropout", "use_sliding_window", "layer_types", "rope_scaling",
    "rope_parameters", "use_mrope", "rope_interleaved", "quantization_config",
};

static bool in_list(const char *key, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(key, list[i]) == 0) return true;
    return false;
}

struct cfg_parser {
    const char *name;   /* file name for messages */
    json_t *root;
    char *err;
    size_t errlen;
};

__attribute__((format(printf, 2, 3)))
static int fail(struct cfg_parser *p, const char *fmt, ...)
{
    if (!p->err || !p->errlen) return -1;
    int n = snprintf(p->err, p->errlen, "%s: ", p->name);
    if (n < 0 || (size_t)n >= p->errlen) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

/* Integer field in [min, INT_MAX]. Missing: *out = def, or an error when
 * required. A JSON real (2048.0) is an error, as are booleans. */
static int get_int(struct cfg_parser *p, const char *key, bool required,
                   int def, int min, int *out)
{
    json_t *v = json_object_get(p->root, key);
    if (!v) {
        if (required) return fail(p, "field \"%s\" is missing", key);
        *out = def;
        return 0;
    }
    if (!json_is_integer(v))
        return fail(p, "field \"%s\": must be an integer", key);
    json_int_t x = json_integer_value(v);
    if (x < min || x > INT_MAX)
        return fail(p, "field \"%s\": must be %s, got %lld", key,
                    min > 0 ? "a positive integer" : "a non-negative integer",
                    (long long)x);
    *out = (int)x;
    return 0;
}

/* Number field (integer or real), finite in fp32 and > 0. */
static int get_positive_float(struct cfg_parser *p, json_t *obj,
                              const char *field, const char *key, float def,
                              float *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v) { *out = def; return 0; }
    if (!json_is_number(v))
        return fail(p, "field \"%s\": must be a number", field);
    double x = json_number_value(v);
    if (!(x > 0) || !isfinite((float)x) || (float)x == 0)
        return fail(p, "field \"%s\": must be a positive finite number, got %g",
                    field, x);
    *out = (float)x;
    return 0;
}

static int get_bool(struct cfg_parser *p, const char *key, bool def, bool *out)
{
    json_t *v = json_object_get(p->root, key);
    if (!v) { *out = def; return 0; }
    if (!json_is_boolean(v))
        return fail(p, "field \"%s\": must be true or false", key);
    *out = json_is_true(v);
    return 0;
}

/* A boolean key that aha accepts only with its harmless value `ok`. */
static int require_bool(struct cfg_parser *p, const char *key, bool ok,
                        const char *why)
{
    bool b = ok;
    if (get_bool(p, key, ok, &b)) return -1;
    if (b != ok)
        return fail(p, "field \"%s\": %s is not supported (%s)", key,
                    b ? "true" : "false", why);
    return 0;
}

/* bos_token_id / eos_token_id: absent or null -> -1; an integer >= 0; for
 * eos also a list of integers, of which the first is taken. */
static int get_token_id(struct cfg_parser *p, const char *key, bool allow_list,
                        int *out)
{
    json_t *v = json_object_get(p->root, key);
    *out = -1;
    if (!v || json_is_null(v)) return 0;
    if (allow_list && json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            if (!json_is_integer(e) || json_integer_value(e) < 0 ||
                json_integer_value(e) > INT_MAX)
                return fail(p, "field \"%s\": element %zu must be a "
                            "non-negative integer", key, i);
        }
        if (json_array_size(v) > 0)
            *out = (int)json_integer_value(json_array_get(v, 0));
        return 0;
    }
    if (!json_is_integer(v))
        return fail(p, "field \"%s\": must be an integer%s or null", key,
                    allow_list ? ", a list of integers" : "");
    json_int_t x = json_integer_value(v);
    if (x < 0 || x > INT_MAX)
        return fail(p, "field \"%s\": must be a non-negative integer, got %lld",
                    key, (long long)x);
    *out = (int)x;
    return 0;
}

/* rope_scaling (transformers 4.x) or rope_parameters (5.x): null, type
 * "default", or "llama3". rope_parameters may also carry rope_theta. */
static int parse_rope(struct cfg_parser *p, struct model_config *cfg,
                      const char *field)
{
    json_t *rs = json_object_get(p->root, field);
    if (!rs || json_is_null(rs)) return 0;
    if (!json_is_object(rs))
        return fail(p, "field \"%s\": must be an object or null", field);
    static const char *const rope_keys[] = {
        "rope_type", "type", "rope_theta", "factor", "low_freq_factor",
        "high_freq_factor", "original_max_position_embeddings",
    };
    const char *k;
    json_t *v;
    json_object_foreach(rs, k, v) {
        if (!in_list(k, rope_keys, sizeof rope_keys / sizeof *rope_keys))
            return fail(p, "field \"%s\": unsupported key \"%s\"", field, k);
    }
    char sub[96];
    snprintf(sub, sizeof sub, "%s.rope_theta", field);
    if (get_positive_float(p, rs, sub, "rope_theta", cfg->rope_theta,
                           &cfg->rope_theta))
        return -1;
    /* transformers: rope_type = d.get("rope_type", d.get("type")) */
    json_t *t = json_object_get(rs, "rope_type");
    if (!t) t = json_object_get(rs, "type");
    if (!t) return fail(p, "field \"%s\": \"rope_type\" is missing", field);
    if (!json_is_string(t))
        return fail(p, "field \"%s\": \"rope_type\" must be a string", field);
    const char *type = json_string_value(t);
    if (strcmp(type, "default") == 0) {
        cfg->rope_llama3 = false;
        return 0;
    }
    if (strcmp(type, "llama3") != 0)
        return fail(p, "%s type \"%s\" is not supported", field, type);

    static const char *const need[] = {
        "factor", "low_freq_factor", "high_freq_factor",
        "original_max_position_embeddings",
    };
    for (size_t i = 0; i < 4; i++)
        if (!json_object_get(rs, need[i]))
            return fail(p, "field \"%s\": llama3 needs \"%s\"", field, need[i]);
    float *dst[3] = { &cfg->rope_factor, &cfg->rope_low_freq_factor,
                      &cfg->rope_high_freq_factor };
    for (size_t i = 0; i < 3; i++) {
        snprintf(sub, sizeof sub, "%s.%s", field, need[i]);
        if (get_positive_float(p, rs, sub, need[i], 0, dst[i])) return -1;
    }
    if (cfg->rope_factor < 1)
        return fail(p, "field \"%s.factor\": must be >= 1, got %g", field,
                    (double)cfg->rope_factor);
    if (!(cfg->rope_low_freq_factor < cfg->rope_high_freq_factor))
        return fail(p, "field \"%s.low_freq_factor\": must be less than "
                    "high_freq_factor (%g), got %g", field,
                    (double)cfg->rope_high_freq_factor,
                    (double)cfg->rope_low_freq_factor);
    json_t *om = json_object_get(rs, "original_max_position_embeddings");
    if (!json_is_integer(om) || json_integer_value(om) <= 0 ||
        json_integer_value(om) > INT_MAX)
        return fail(p, "field \"%s.original_max_position_embeddings\": must "
                    "be a positive integer", field);
    cfg->rope_original_max_pos = (int)json_integer_value(om);
    cfg->rope_llama3 = true;
    return 0;
}

static int parse_arch(struct cfg_parser *p, struct model_config *cfg)
{
    json_t *a = json_object_get(p->root, "architectures");
    json_t *mt = json_object_get(p->root, "model_type");
    if (mt && !json_is_string(mt))
        return fail(p, "field \"model_type\": must be a string");
    const char *mtype = mt ? json_string_value(mt) : NULL;
    if (a && !json_is_null(a)) {
        if (!json_is_array(a) || json_array_size(a) == 0 ||
            !json_is_string(json_array_get(a, 0)))
            return fail(p, "field \"architectures\": must be a non-empty "
                        "list of strings");
        const char *arch = json_string_value(json_array_get(a, 0));
        if (strcmp(arch, "LlamaForCausalLM") == 0)
            cfg->arch = MODEL_ARCH_LLAMA;
        else if (strcmp(arch, "Qwen2ForCausalLM") == 0)
            cfg->arch = MODEL_ARCH_QWEN2;
        else
            return fail(p, "field \"architectures\": \"%s\" is not supported "
                        "(aha runs LlamaForCausalLM and Qwen2ForCausalLM)",
                        arch);
    } else if (mtype) {
        if (strcmp(mtype, "llama") == 0) cfg->arch = MODEL_ARCH_LLAMA;
        else if (strcmp(mtype, "qwen2") == 0) cfg->arch = MODEL_ARCH_QWEN2;
        else
            return fail(p, "field \"model_type\": \"%s\" is not supported "
                        "(aha runs llama and qwen2)", mtype);
    } else {
        return fail(p, "field \"architectures\" is missing");
    }
    const char *want = cfg->arch == MODEL_ARCH_LLAMA ? "llama" : "qwen2";
    if (mtype && strcmp(mtype, want) != 0)
        return fail(p, "field \"model_type\": \"%s\" does not match "
                    "architectures (expected \"%s\")", mtype, want);
    return 0;
}

/* Keys that change the math: accepted only with their harmless value. */
static int check_unimplemented(struct cfg_parser *p, struct model_config *cfg)
{
    json_t *v = json_object_get(p->root, "hidden_act");
    if (v) {
        if (!json_is_string(v))
            return fail(p, "field \"hidden_act\": must be a string");
        /* transformers' ACT2FN maps both names to nn.SiLU */
        const char *s = json_string_value(v);
        if (strcmp(s, "silu") != 0 && strcmp(s, "swish") != 0)
            return fail(p, "field \"hidden_act\": \"%s\" is not supported "
                        "(aha implements \"silu\")", s);
    }
    if (require_bool(p, "mlp_bias", false, "aha's MLP has no bias") ||
        require_bool(p, "use_sliding_window", false,
                     "aha implements full attention only") ||
        require_bool(p, "use_mrope", false, "multimodal RoPE") ||
        require_bool(p, "rope_interleaved", false,
                     "aha implements the rotate-half RoPE layout"))
        return -1;
    v = json_object_get(p->root, "pretraining_tp");
    if (v && (!json_is_integer(v) || json_integer_value(v) != 1))
        return fail(p, "field \"pretraining_tp\": must be 1");
    v = json_object_get(p->root, "attention_dropout");
    if (v) {
        if (!json_is_number(v))
            return fail(p, "field \"attention_dropout\": must be a number");
        if (json_number_value(v) != 0)
            return fail(p, "field \"attention_dropout\": %g is not supported "
                        "(must be 0)", json_number_value(v));
    }
    v = json_object_get(p->root, "layer_types");
    if (v && !json_is_null(v)) {
        if (!json_is_array(v))
            return fail(p, "field \"layer_types\": must be a list of strings");
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            if (!json_is_string(e))
                return fail(p, "field \"layer_types\": element %zu must be a "
                            "string", i);
            if (strcmp(json_string_value(e), "full_attention") != 0)
                return fail(p, "field \"layer_types\": layer %zu is \"%s\"; "
                            "only \"full_attention\" is supported", i,
                            json_string_value(e));
        }
        if (json_array_size(v) != (size_t)cfg->n_layers)
            return fail(p, "field \"layer_types\": has %zu entries, "
                        "num_hidden_layers is %d", json_array_size(v),
                        cfg->n_layers);
    }
    if (json_object_get(p->root, "quantization_config"))
        return fail(p, "field \"quantization_config\": quantized checkpoints "
                    "are not supported");
    return 0;
}

/* The largest sizes aha takes, each well past any released model of the
 * two architectures (Llama 3.1 405B: hidden 16384, intermediate 53248, 128
 * heads; Qwen2.5: 152064 tokens; 1M-token contexts), so that no product of
 * them the engine forms in an int (such as the fused q|k|v width, (heads +
 * 2 kv heads) x head_dim) overflows: a config past them is malformed. The
 * vocabulary's bound is the tokenizer's id range (tok_load). */
int config_check_sizes(const struct model_config *cfg, char *err, size_t errlen)
{
    const struct {
        const char *key;
        int v, max;
    } lim[] = {
        {"vocab_size", cfg->vocab_size, 1 << 24},
        {"hidden_size", cfg->hidden_size, 1 << 17},
        {"num_hidden_layers", cfg->n_layers, 1 << 12},
        {"num_attention_heads", cfg->n_heads, 1 << 12},
        {"num_key_value_heads", cfg->n_kv_heads, 1 << 12},
        {"head_dim", cfg->head_dim, 1 << 12},
        {"intermediate_size", cfg->intermediate_size, 1 << 20},
        {"max_position_embeddings", cfg->max_position_embeddings, 1 << 24},
    };
    for (size_t i = 0; i < sizeof lim / sizeof *lim; i++)
        if (lim[i].v > lim[i].max) {
            snprintf(err, errlen, "field \"%s\": %d is larger than aha supports (at most %d)",
                     lim[i].key, lim[i].v, lim[i].max);
            return -1;
        }
    return 0;
}

int config_parse(struct model_config *cfg, const char *json_text,
                 const char *name, char *err, size_t errlen)
{
    struct cfg_parser p = { .name = name ? name : "config.json", .err = err,
                            .errlen = errlen };
    memset(cfg, 0, sizeof *cfg);
    json_error_t jerr;
    p.root = json_loads(json_text, JSON_REJECT_DUPLICATES, &jerr);
    if (!p.root)
        return fail(&p, "invalid JSON at line %d, column %d: %s", jerr.line,
                    jerr.column, jerr.text);
    int rc = -1;
    if (!json_is_object(p.root)) {
        fail(&p, "top level must be a JSON object");
        goto out;
    }
    /* Architecture first: for a foreign model, naming it is the useful error. */
    if (parse_arch(&p, cfg)) goto out;
    const char *key;
    json_t *val;
    json_object_foreach(p.root, key, val) {
        if (!in_list(key, handled_keys, sizeof handled_keys / sizeof *handled_keys) &&
            !in_list(key, harmless_keys, sizeof harmless_keys / sizeof *harmless_keys)) {
            fail(&p, "unsupported key \"%s\"", key);
            goto out;
        }
    }
    bool llama = cfg->arch == MODEL_ARCH_LLAMA;
    if (get_int(&p, "vocab_size", true, 0, 1, &cfg->vocab_size) ||
        get_int(&p, "hidden_size", true, 0, 1, &cfg->hidden_size) ||
        get_int(&p, "num_hidden_layers", true, 0, 1, &cfg->n_layers) ||
        get_int(&p, "num_attention_heads", true, 0, 1, &cfg->n_heads) ||
        get_int(&p, "intermediate_size", true, 0, 1, &cfg->intermediate_size))
        goto out;
    /* transformers: LlamaConfig defaults num_key_value_heads to
     * num_attention_heads; Qwen2Config's default is 32 (null ->
     * num_attention_heads). */
    json_t *kv = json_object_get(p.root, "num_key_value_heads");
    int kv_def = (llama || (kv && json_is_null(kv))) ? cfg->n_heads : 32;
    if (kv && json_is_null(kv)) json_object_del(p.root, "num_key_value_heads");
    if (get_int(&p, "num_key_value_heads", false, kv_def, 1, &cfg->n_kv_heads))
        goto out;
    if (cfg->n_heads % cfg->n_kv_heads != 0) {
        fail(&p, "field \"num_key_value_heads\": must divide "
             "num_attention_heads (%d), got %d", cfg->n_heads, cfg->n_kv_heads);
        goto out;
    }
    json_t *hd = json_object_get(p.root, "head_dim");
    if (hd && !json_is_null(hd)) {
        if (get_int(&p, "head_dim", true, 0, 1, &cfg->head_dim)) goto out;
    } else {
        if (cfg->hidden_size % cfg->n_heads != 0) {
            fail(&p, "field \"num_attention_heads\": must divide hidden_size "
                 "(%d) when head_dim is absent, got %d", cfg->hidden_size,
                 cfg->n_heads);
            goto out;
        }
        cfg->head_dim = cfg->hidden_size / cfg->n_heads;
    }
    if (cfg->head_dim % 2 != 0) {
        fail(&p, "field \"head_dim\": must be even for RoPE, got %d",
             cfg->head_dim);
        goto out;
    }
    if (get_int(&p, "max_position_embeddings", false, llama ? 2048 : 32768, 1,
                &cfg->max_position_embeddings) ||
        get_positive_float(&p, p.root, "rope_theta", "rope_theta", 10000.0f,
                           &cfg->rope_theta) ||
        get_positive_float(&p, p.root, "rms_norm_eps", "rms_norm_eps", 1e-6f,
                           &cfg->rms_norm_eps) ||
        get_bool(&p, "tie_word_embeddings", false, &cfg->tie_word_embeddings) ||
        get_token_id(&p, "bos_token_id", false, &cfg->bos_token_id) ||
        get_token_id(&p, "eos_token_id", true, &cfg->eos_token_id))
        goto out;
    if (llama) {
        bool ab;
        if (get_bool(&p, "attention_bias", false, &ab)) goto out;
        cfg->qkv_bias = cfg->o_bias = ab;
    } else {
        /* Qwen2Attention always has q/k/v biases and no o bias; it ignores
         * attention_bias, which only needs to be well-typed here. */
        bool ignored;
        if (get_bool(&p, "attention_bias", false, &ignored)) goto out;
        cfg->qkv_bias = true;
        cfg->o_bias = false;
    }
    if (check_unimplemented(&p, cfg) || parse_rope(&p, cfg, "rope_scaling") ||
        parse_rope(&p, cfg, "rope_parameters"))
        goto out;
    char why[160];
    if (config_check_sizes(cfg, why, sizeof why)) {
        fail(&p, "%s", why);
        goto out;
    }
    rc = 0;
out:
    json_decref(p.root);
    return rc;
}

int config_load(struct model_config *cfg, const char *path, char *err,
                size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    /* config.json is small; 16 MiB bounds a mistaken path to a huge file. */
    enum { CONFIG_MAX_BYTES = 16 << 20 };
    char *buf = malloc(CONFIG_MAX_BYTES + 1);
    size_t n = buf ? fread(buf, 1, CONFIG_MAX_BYTES + 1, f) : 0;
    int rd_err = ferror(f);
    fclose(f);
    int rc = -1;
    if (!buf)
        snprintf(err, errlen, "%s: out of memory", path);
    else if (rd_err)
        snprintf(err, errlen, "%s: read error", path);
    else if (n > CONFIG_MAX_BYTES)
        snprintf(err, errlen, "%s: larger than %d bytes", path,
                 (int)CONFIG_MAX_BYTES);
    else if (memchr(buf, '\0', n))
        snprintf(err, errlen, "%s: contains a NUL byte", path);
    else {
        buf[n] = '\0';
        rc = config_parse(cfg, buf, path, err, errlen);
    }
    free(buf);
    return rc;
}

/* A JSON real whose text (printed with 9 significant digits) is the
 * shortest decimal that reads back as the same float: 1e-06, not
 * 9.99999997e-07. */
static json_t *json_float(float f)
{
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if (strtof(buf, NULL) == f) break;
    }
    return json_real(strtod(buf, NULL));
}

/* Writes text and a newline to path through a temporary file in the same
 * directory (fsync + rename), so a crash never leaves half a config. */
static int write_atomic(const char *path, const char *text, char *err,
                        size_t errlen)
{
    char *tmp = NULL;
    if (asprintf(&tmp, "%s.tmp.XXXXXX", path) < 0) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    int fd = mkstemp(tmp);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot create %s: %s", path, tmp,
                 strerror(errno));
        free(tmp);
        return -1;
    }
    fchmod(fd, 0644);
    FILE *f = fdopen(fd, "w");
    int ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF &&
             fflush(f) == 0 && fsync(fileno(f)) == 0;
    int saved = errno;
    if (f ? fclose(f) != 0 : close(fd) != 0) ok = 0;
    if (ok && rename(tmp, path) == 0) {
        free(tmp);
        return 0;
    }
    snprintf(err, errlen, "%s: cannot write: %s", path,
             strerror(ok ? errno : saved));
    unlink(tmp);
    free(tmp);
    return -1;
}

static int obj_set(json_t *o, const char *k, json_t *v)
{
    return json_object_set_new(o, k, v);
}

int config_save(const struct model_config *cfg, const char *path,
                const char *dtype, char *err, size_t errlen)
{
    bool llama = cfg->arch == MODEL_ARCH_LLAMA;
    json_t *o = json_object();
    json_t *arch = json_array();
    int bad = !o || !arch;
    bad |= json_array_append_new(arch, json_string(llama ? "LlamaForCausalLM"
                                                         : "Qwen2ForCausalLM"));
    bad |= obj_set(o, "architectures", arch);
    if (llama) bad |= obj_set(o, "attention_bias", json_boolean(cfg->qkv_bias));
    bad |= obj_set(o, "attention_dropout", json_real(0.0));
    bad |= obj_set(o, "bos_token_id", cfg->bos_token_id >= 0
                   ? json_integer(cfg->bos_token_id) : json_null());
    bad |= obj_set(o, "eos_token_id", cfg->eos_token_id >= 0
                   ? json_integer(cfg->eos_token_id) : json_null());
    bad |= obj_set(o, "head_dim", json_integer(cfg->head_dim));
    bad |= obj_set(o, "hidden_act", json_string("silu"));
    bad |= obj_set(o, "hidden_size", json_integer(cfg->hidden_size));
    bad |= obj_set(o, "intermediate_size", json_integer(cfg->intermediate_size));
    bad |= obj_set(o, "max_position_embeddings",
                   json_integer(cfg->max_position_embeddings));
    if (!llama) bad |= obj_set(o, "max_window_layers", json_integer(cfg->n_layers));
    if (llama) bad |= obj_set(o, "mlp_bias", json_false());
    bad |= obj_set(o, "model_type", json_string(llama ? "llama" : "qwen2"));
    bad |= obj_set(o, "num_attention_heads", json_integer(cfg->n_heads));
    bad |= obj_set(o, "num_hidden_layers", json_integer(cfg->n_layers));
    bad |= obj_set(o, "num_key_value_heads", json_integer(cfg->n_kv_heads));
    if (llama) bad |= obj_set(o, "pretraining_tp", json_integer(1));
    bad |= obj_set(o, "rms_norm_eps", json_float(cfg->rms_norm_eps));
    if (cfg->rope_llama3) {
        json_t *rs = json_object();
        bad |= !rs;
        bad |= obj_set(rs, "factor", json_float(cfg->rope_factor));
        bad |= obj_set(rs, "high_freq_factor", json_float(cfg->rope_high_freq_factor));
        bad |= obj_set(rs, "low_freq_factor", json_float(cfg->rope_low_freq_factor));
        bad |= obj_set(rs, "original_max_position_embeddings",
                       json_integer(cfg->rope_original_max_pos));
        bad |= obj_set(rs, "rope_type", json_string("llama3"));
        bad |= obj_set(o, "rope_scaling", rs);
    } else {
        bad |= obj_set(o, "rope_scaling", json_null());
    }
    bad |= obj_set(o, "rope_theta", json_float(cfg->rope_theta));
    bad |= obj_set(o, "tie_word_embeddings", json_boolean(cfg->tie_word_embeddings));
    bad |= obj_set(o, "torch_dtype", json_string(dtype ? dtype : "float32"));
    bad |= obj_set(o, "use_cache", json_true());
    if (!llama) bad |= obj_set(o, "use_sliding_window", json_false());
    bad |= obj_set(o, "vocab_size", json_integer(cfg->vocab_size));
    char *text = bad ? NULL : json_dumps(o, JSON_INDENT(2) | JSON_REAL_PRECISION(9));
    json_decref(o);
    if (!text) {
        snprintf(err, errlen, "%s: out of memory building config", path);
        return -1;
    }
    int rc = write_atomic(path, text, err, errlen);
    free(text);
    return rc;
}

/* transformers _compute_default_rope_parameters:
 *   inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
 * all in fp32; then _compute_llama3_parameters (Llama 3.1 release), with
 * python-float scalars rounded to fp32 as torch does for fp32 tensors:
 *   wavelen = 2*pi / inv_freq
 *   inv_freq_llama = where(wavelen > old/low, inv_freq / factor, inv_freq)
 *   smooth = (old / wavelen - low) / (high - low)
 *   smoothed = (1 - smooth) * inv_freq_llama / factor + smooth * inv_freq_llama
 *   medium = !(wavelen < old/high) && !(wavelen > old/low) -> smoothed */
void config_rope_inv_freq(const struct model_config *cfg, float *inv_freq)
{
    int d = cfg->head_dim;
    for (int j = 0; j < d / 2; j++) {
        float e = (float)(2 * j) / (float)d;
        inv_freq[j] = 1.0f / powf(cfg->rope_theta, e);
    }
    if (!cfg->rope_llama3) return;
    double old = cfg->rope_original_max_pos;
    double low = cfg->rope_low_freq_factor, high = cfg->rope_high_freq_factor;
    float factor = cfg->rope_factor;
    float low_wavelen = (float)(old / low), high_wavelen = (float)(old / high);
    float two_pi = (float)(2.0 * M_PI), oldf = (float)old;
    float lowf = (float)low, span = (float)(high - low);
    for (int j = 0; j < d / 2; j++) {
        float f = inv_freq[j];
        /* torch: scalar / tensor is tensor.reciprocal() * scalar */
        float wavelen = (1.0f / f) * two_pi;
        float fl = wavelen > low_wavelen ? f / factor : f;
        float smooth = ((1.0f / wavelen) * oldf - lowf) / span;
        float smoothed = (1.0f - smooth) * fl / factor + smooth * fl;
        bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
        inv_freq[j] = medium ? smoothed : fl;
    }
}

int config_preset(struct model_config *cfg, const char *name)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->arch = MODEL_ARCH_QWEN2;
    cfg->n_heads = 8;
    cfg->n_kv_heads = 4;
    cfg->tie_word_embeddings = true;
    cfg->max_position_embeddings = 2048;
    cfg->rope_theta = 10000.0f;
    cfg->rms_norm_eps = 1e-6f;
    cfg->qkv_bias = true;
    cfg->o_bias = false;
    cfg->bos_token_id = 256;    /* <|endoftext|> of aha's byte-level tokenizer */
    cfg->eos_token_id = 256;
    if (name && strcmp(name, "tiny") == 0) {
        cfg->vocab_size = 512;
        cfg->hidden_size = 256;
        cfg->n_layers = 6;
        cfg->intermediate_size = 688;
    } else if (name && strcmp(name, "small") == 0) {
        cfg->vocab_size = 4096;
        cfg->hidden_size = 512;
        cfg->n_layers = 8;
        cfg->intermediate_size = 1376;
    } else {
        memset(cfg, 0, sizeof *cfg);
        return -1;
    }
    cfg->head_dim = cfg->hidden_size / cfg->n_heads;
    return 0;
}
