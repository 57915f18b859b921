/* tests/unit/test_config.c — config.json parsing, validation, defaults,
 * rejected keys, RoPE frequencies (against PyTorch values) and the
 * save -> parse round trip. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

#define NAME "models/m/config.json"

static char err[512];

/* Parses json; returns 0 or -1 (message in err). */
static int parse(struct model_config *c, const char *json)
{
    err[0] = '\0';
    return config_parse(c, json, NAME, err, sizeof err);
}

/* A minimal valid config of the architecture, with `extra` members added;
 * a base member whose key appears in extra is left out (extra overrides). */
static int parse_with(struct model_config *c, const char *arch,
                      const char *extra)
{
    static const char *const base[] = {
        "\"vocab_size\":1000", "\"hidden_size\":64", "\"num_hidden_layers\":2",
        "\"num_attention_heads\":8", "\"intermediate_size\":128",
        "\"num_key_value_heads\":4",
    };
    char buf[4096];
    snprintf(buf, sizeof buf, "{\"architectures\":[\"%s\"]", arch);
    bool qwen2 = strcmp(arch, "Qwen2ForCausalLM") == 0;
    for (size_t i = 0; i < (qwen2 ? 6u : 5u); i++) {
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)(strchr(base[i], ':') - base[i] + 1),
                 base[i]);
        if (!strstr(extra, key))
            snprintf(buf + strlen(buf), sizeof buf - strlen(buf), ",%s", base[i]);
    }
    snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%s}",
             extra[0] ? "," : "", extra);
    return parse(c, buf);
}

static int parse_llama(struct model_config *c, const char *extra)
{
    return parse_with(c, "LlamaForCausalLM", extra);
}

static int parse_qwen2(struct model_config *c, const char *extra)
{
    return parse_with(c, "Qwen2ForCausalLM", extra);
}

/* The error must name the file and contain `needle`. */
#define assert_err(needle) do { \
        cr_assert(strstr(err, NAME ": ") == err, "no file name in: %s", err); \
        cr_assert(strstr(err, needle), "expected \"%s\" in: %s", needle, err); \
    } while (0)

#define REJECT_LLAMA(extra, needle) do { \
        struct model_config c_; \
        cr_assert_eq(parse_llama(&c_, extra), -1, "accepted: %s", extra); \
        assert_err(needle); \
    } while (0)

#define REJECT_QWEN2(extra, needle) do { \
        struct model_config c_; \
        cr_assert_eq(parse_qwen2(&c_, extra), -1, "accepted: %s", extra); \
        assert_err(needle); \
    } while (0)

#define ACCEPT_LLAMA(extra) do { \
        struct model_config c_; \
        cr_assert_eq(parse_llama(&c_, extra), 0, "rejected %s: %s", extra, err); \
    } while (0)

Test(config, llama_defaults)
{
    struct model_config c;
    cr_assert_eq(parse_llama(&c, ""), 0, "%s", err);
    cr_assert_eq(c.arch, MODEL_ARCH_LLAMA);
    cr_assert_eq(c.vocab_size, 1000);
    cr_assert_eq(c.hidden_size, 64);
    cr_assert_eq(c.n_layers, 2);
    cr_assert_eq(c.n_heads, 8);
    cr_assert_eq(c.n_kv_heads, 8);
    cr_assert_eq(c.head_dim, 8);
    cr_assert_eq(c.intermediate_size, 128);
    cr_assert_eq(c.max_position_embeddings, 2048);
    cr_assert_eq(c.rope_theta, 10000.0f);
    cr_assert_eq(c.rms_norm_eps, 1e-6f);
    cr_assert(!c.tie_word_embeddings);
    cr_assert(!c.qkv_bias && !c.o_bias);
    cr_assert_eq(c.bos_token_id, -1);
    cr_assert_eq(c.eos_token_id, -1);
    cr_assert(!c.rope_llama3);
}

Test(config, qwen2_defaults)
{
    struct model_config c;
    /* Qwen2 ignores attention_bias: q/k/v biases always, no o bias */
    cr_assert_eq(parse_qwen2(&c, "\"attention_bias\":false"), 0, "%s", err);
    cr_assert(c.qkv_bias && !c.o_bias);
    cr_assert_eq(parse_qwen2(&c, ""), 0, "%s", err);
    cr_assert_eq(c.arch, MODEL_ARCH_QWEN2);
    cr_assert_eq(c.n_kv_heads, 4);
    cr_assert_eq(c.max_position_embeddings, 32768);
    cr_assert(c.qkv_bias);
    cr_assert(!c.o_bias);
    cr_assert(!c.tie_word_embeddings);
    cr_assert_eq(c.rope_theta, 10000.0f);
    cr_assert_eq(c.rms_norm_eps, 1e-6f);
}

/* Qwen2Config(num_key_value_heads=32): absent means 32, null means heads. */
Test(config, qwen2_kv_heads_default_is_32_like_transformers)
{
    struct model_config c;
    const char *base = "{\"architectures\":[\"Qwen2ForCausalLM\"],"
        "\"vocab_size\":10,\"hidden_size\":64,\"num_hidden_layers\":1,"
        "\"intermediate_size\":8,\"num_attention_heads\":%d%s}";
    char buf[512];
    snprintf(buf, sizeof buf, base, 32, "");
    cr_assert_eq(parse(&c, buf), 0, "%s", err);
    cr_assert_eq(c.n_kv_heads, 32);
    cr_assert_eq(c.head_dim, 2);
    snprintf(buf, sizeof buf, base, 8, ",\"num_key_value_heads\":null");
    cr_assert_eq(parse(&c, buf), 0, "%s", err);
    cr_assert_eq(c.n_kv_heads, 8);
    snprintf(buf, sizeof buf, base, 8, "");
    cr_assert_eq(parse(&c, buf), -1);
    assert_err("must divide num_attention_heads (8), got 32");
}

Test(config, explicit_values)
{
    struct model_config c;
    cr_assert_eq(parse_llama(&c, "\"num_key_value_heads\":2,\"head_dim\":32,"
        "\"rope_theta\":500000,\"rms_norm_eps\":1e-05,\"tie_word_embeddings\":true,"
        "\"max_position_embeddings\":4096,\"bos_token_id\":1,"
        "\"eos_token_id\":[7,8,9],\"attention_bias\":true,\"hidden_act\":\"silu\","
        "\"mlp_bias\":false,\"pretraining_tp\":1,\"attention_dropout\":0.0,"
        "\"rope_scaling\":null,\"pad_token_id\":null,\"foo_never\":1"), -1);
    assert_err("unsupported key \"foo_never\"");
    cr_assert_eq(parse_llama(&c, "\"num_key_value_heads\":2,\"head_dim\":32,"
        "\"rope_theta\":500000,\"rms_norm_eps\":1e-05,\"tie_word_embeddings\":true,"
        "\"max_position_embeddings\":4096,\"bos_token_id\":1,"
        "\"eos_token_id\":[7,8,9],\"attention_bias\":true,\"hidden_act\":\"silu\","
        "\"mlp_bias\":false,\"pretraining_tp\":1,\"attention_dropout\":0.0,"
        "\"rope_scaling\":null,\"pad_token_id\":null"), 0, "%s", err);
    cr_assert_eq(c.n_kv_heads, 2);
    cr_assert_eq(c.head_dim, 32);
    cr_assert_eq(c.rope_theta, 500000.0f);
    cr_assert_eq(c.rms_norm_eps, 1e-5f);
    cr_assert(c.tie_word_embeddings);
    cr_assert_eq(c.max_position_embeddings, 4096);
    cr_assert_eq(c.bos_token_id, 1);
    cr_assert_eq(c.eos_token_id, 7);
    cr_assert(c.qkv_bias && c.o_bias);
    cr_assert_eq(parse_llama(&c, "\"bos_token_id\":null,\"eos_token_id\":null"), 0);
    cr_assert_eq(c.bos_token_id, -1);
    cr_assert_eq(c.eos_token_id, -1);
}

Test(config, model_type_only_and_consistency)
{
    struct model_config c;
    cr_assert_eq(parse(&c, "{\"model_type\":\"qwen2\",\"vocab_size\":10,"
        "\"hidden_size\":16,\"num_hidden_layers\":1,\"num_attention_heads\":2,"
        "\"num_key_value_heads\":1,\"intermediate_size\":8}"), 0, "%s", err);
    cr_assert_eq(c.arch, MODEL_ARCH_QWEN2);
    REJECT_LLAMA("\"model_type\":\"qwen2\"", "field \"model_type\": \"qwen2\" does not match");
    REJECT_QWEN2("\"model_type\":\"llama\"", "\"model_type\": \"llama\" does not match");
    cr_assert_eq(parse(&c, "{\"architectures\":[\"MistralForCausalLM\"],"
        "\"vocab_size\":10}"), -1);
    assert_err("field \"architectures\": \"MistralForCausalLM\" is not supported");
    cr_assert_eq(parse(&c, "{\"architectures\":[],\"vocab_size\":10}"), -1);
    assert_err("field \"architectures\"");
    cr_assert_eq(parse(&c, "{\"vocab_size\":10}"), -1);
    assert_err("field \"architectures\" is missing");
    cr_assert_eq(parse(&c, "{\"architectures\":[\"MistralForCausalLM\"],"
        "\"sliding_window\":4096,\"foo\":1}"), -1);
    assert_err("\"MistralForCausalLM\" is not supported");
    cr_assert_eq(parse(&c, "{\"model_type\":\"gemma\"}"), -1);
    assert_err("\"gemma\" is not supported");
}

Test(config, required_fields)
{
    static const char *fields[] = { "vocab_size", "hidden_size",
        "num_hidden_layers", "num_attention_heads", "intermediate_size" };
    for (size_t i = 0; i < 5; i++) {
        char buf[1024] = "{\"architectures\":[\"LlamaForCausalLM\"]";
        for (size_t j = 0; j < 5; j++)
            if (j != i)
                snprintf(buf + strlen(buf), sizeof buf - strlen(buf),
                         ",\"%s\":%d", fields[j], j == 1 ? 64 : 8);
        strcat(buf, "}");
        struct model_config c;
        cr_assert_eq(parse(&c, buf), -1, "accepted without %s", fields[i]);
        char want[96];
        snprintf(want, sizeof want, "field \"%s\" is missing", fields[i]);
        assert_err(want);
    }
}

Test(config, wrong_types_and_values)
{
    REJECT_LLAMA("\"hidden_size\":\"64\"", "field \"hidden_size\": must be an integer");
    REJECT_LLAMA("\"hidden_size\":64.0", "field \"hidden_size\": must be an integer");
    REJECT_LLAMA("\"hidden_size\":0", "field \"hidden_size\": must be a positive integer, got 0");
    REJECT_LLAMA("\"vocab_size\":-5", "field \"vocab_size\": must be a positive integer, got -5");
    REJECT_LLAMA("\"vocab_size\":4294967296", "field \"vocab_size\"");
    REJECT_LLAMA("\"num_hidden_layers\":true", "field \"num_hidden_layers\": must be an integer");
    REJECT_LLAMA("\"num_key_value_heads\":3", "field \"num_key_value_heads\": must divide num_attention_heads (8), got 3");
    REJECT_LLAMA("\"num_key_value_heads\":0", "field \"num_key_value_heads\"");
    REJECT_LLAMA("\"head_dim\":7", "field \"head_dim\": must be even");
    REJECT_LLAMA("\"head_dim\":\"8\"", "field \"head_dim\": must be an integer");
    REJECT_LLAMA("\"num_attention_heads\":6", "field \"num_attention_heads\": must divide hidden_size (64)");
    REJECT_LLAMA("\"rope_theta\":\"1e4\"", "field \"rope_theta\": must be a number");
    REJECT_LLAMA("\"rope_theta\":0", "field \"rope_theta\": must be a positive");
    REJECT_LLAMA("\"rope_theta\":1e300", "field \"rope_theta\"");
    REJECT_LLAMA("\"rms_norm_eps\":-1e-6", "field \"rms_norm_eps\"");
    REJECT_LLAMA("\"tie_word_embeddings\":1", "field \"tie_word_embeddings\": must be true or false");
    REJECT_LLAMA("\"attention_bias\":\"no\"", "field \"attention_bias\"");
    REJECT_LLAMA("\"max_position_embeddings\":0", "field \"max_position_embeddings\"");
    REJECT_LLAMA("\"bos_token_id\":\"<s>\"", "field \"bos_token_id\"");
    REJECT_LLAMA("\"bos_token_id\":[1,2]", "field \"bos_token_id\"");
    REJECT_LLAMA("\"eos_token_id\":[\"</s>\"]", "field \"eos_token_id\": element 0");
    REJECT_LLAMA("\"eos_token_id\":-2", "field \"eos_token_id\"");
    REJECT_LLAMA("\"model_type\":3", "field \"model_type\"");
    REJECT_LLAMA("\"hidden_act\":7", "field \"hidden_act\"");
    /* sizes past any real model (found by mutating configs: (heads + 2 kv
     * heads) x head_dim overflowed an int in model_new) */
    REJECT_LLAMA("\"num_attention_heads\":2147483647,\"num_key_value_heads\":1,\"head_dim\":2",
                 "field \"num_attention_heads\": 2147483647 is larger than aha supports (at most 4096)");
    REJECT_LLAMA("\"head_dim\":8192", "field \"head_dim\": 8192 is larger than aha supports");
    REJECT_LLAMA("\"hidden_size\":262144,\"num_attention_heads\":2048",
                 "field \"hidden_size\"");
    REJECT_LLAMA("\"vocab_size\":16777217", "field \"vocab_size\"");
    REJECT_LLAMA("\"num_hidden_layers\":5000", "field \"num_hidden_layers\"");
    REJECT_LLAMA("\"intermediate_size\":2000000", "field \"intermediate_size\"");
    REJECT_LLAMA("\"max_position_embeddings\":100000000", "field \"max_position_embeddings\"");
    struct model_config c;
    /* the largest of each, together, is a config */
    cr_assert_eq(parse_llama(&c, "\"vocab_size\":16777216,\"hidden_size\":131072,"
                             "\"num_hidden_layers\":4096,\"num_attention_heads\":4096,"
                             "\"num_key_value_heads\":4096,\"intermediate_size\":1048576,"
                             "\"max_position_embeddings\":16777216"), 0, "%s", err);
    cr_assert_eq(c.head_dim, 32);
    cr_assert_eq(parse(&c, "[1,2]"), -1);
    assert_err("JSON object");
}

Test(config, rejected_keys)
{
    REJECT_LLAMA("\"hidden_act\":\"gelu\"", "field \"hidden_act\": \"gelu\" is not supported");
    REJECT_LLAMA("\"mlp_bias\":true", "field \"mlp_bias\"");
    REJECT_LLAMA("\"pretraining_tp\":2", "field \"pretraining_tp\": must be 1");
    REJECT_LLAMA("\"attention_dropout\":0.1", "field \"attention_dropout\"");
    REJECT_QWEN2("\"use_sliding_window\":true", "field \"use_sliding_window\"");
    REJECT_QWEN2("\"use_mrope\":true", "field \"use_mrope\"");
    REJECT_LLAMA("\"rope_interleaved\":true", "field \"rope_interleaved\"");
    REJECT_QWEN2("\"layer_types\":[\"full_attention\",\"sliding_attention\"]",
                 "field \"layer_types\": layer 1 is \"sliding_attention\"");
    REJECT_QWEN2("\"layer_types\":[\"full_attention\"]", "field \"layer_types\": has 1 entries");
    REJECT_LLAMA("\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4.0,"
                 "\"original_max_position_embeddings\":32768}",
                 "rope_scaling type \"yarn\" is not supported");
    REJECT_LLAMA("\"rope_scaling\":{\"type\":\"linear\",\"factor\":2.0}",
                 "rope_scaling type \"linear\" is not supported");
    REJECT_LLAMA("\"rope_scaling\":{\"type\":\"dynamic\",\"factor\":2.0}",
                 "rope_scaling type \"dynamic\" is not supported");
    REJECT_LLAMA("\"rope_scaling\":{\"factor\":2.0}", "field \"rope_scaling\": \"rope_type\" is missing");
    REJECT_LLAMA("\"rope_scaling\":\"llama3\"", "field \"rope_scaling\": must be an object");
    REJECT_LLAMA("\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0}",
                 "field \"rope_scaling\": llama3 needs \"low_freq_factor\"");
    REJECT_LLAMA("\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,"
                 "\"low_freq_factor\":4.0,\"high_freq_factor\":1.0,"
                 "\"original_max_position_embeddings\":8192}",
                 "field \"rope_scaling.low_freq_factor\"");
    REJECT_LLAMA("\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,"
                 "\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
                 "\"original_max_position_embeddings\":8192.5}",
                 "field \"rope_scaling.original_max_position_embeddings\"");
    REJECT_LLAMA("\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,"
                 "\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
                 "\"original_max_position_embeddings\":8192,\"beta_fast\":32}",
                 "field \"rope_scaling\": unsupported key \"beta_fast\"");
    REJECT_LLAMA("\"rope_parameters\":{\"rope_type\":\"yarn\",\"factor\":4.0}",
                 "rope_parameters type \"yarn\" is not supported");
    REJECT_LLAMA("\"quantization_config\":{\"quant_method\":\"awq\"}",
                 "field \"quantization_config\"");
    REJECT_QWEN2("\"attention_bias\":0", "field \"attention_bias\"");
    REJECT_LLAMA("\"rms_norm_eps\":1e-50", "field \"rms_norm_eps\"");
    REJECT_LLAMA("\"foo\":1", "unsupported key \"foo\"");
    REJECT_LLAMA("\"partial_rotary_factor\":0.5", "unsupported key \"partial_rotary_factor\"");
    REJECT_LLAMA("\"num_experts\":8", "unsupported key \"num_experts\"");
    REJECT_LLAMA("\"auto_map\":{}", "unsupported key \"auto_map\"");
    /* the harmless values of the same keys load */
    ACCEPT_LLAMA("\"hidden_act\":\"silu\",\"mlp_bias\":false,\"pretraining_tp\":1,"
                 "\"attention_dropout\":0,\"rope_interleaved\":false");
    ACCEPT_LLAMA("\"rope_scaling\":{\"rope_type\":\"default\"}");
    ACCEPT_LLAMA("\"rope_scaling\":{\"type\":\"default\"}");
    ACCEPT_LLAMA("\"layer_types\":[\"full_attention\",\"full_attention\"]");
    ACCEPT_LLAMA("\"use_sliding_window\":false,\"sliding_window\":4096,"
                 "\"max_window_layers\":28,\"use_mrope\":false");
}

Test(config, duplicate_key)
{
    struct model_config c;
    cr_assert_eq(parse_llama(&c, "\"rope_theta\":5,\"rope_theta\":6"), -1);
    assert_err("duplicate");
}

Test(config, malformed_json_reports_line_and_column)
{
    struct model_config c;
    cr_assert_eq(parse(&c, "{\n  \"vocab_size\": 10,\n  \"hidden_size\": ,\n}"), -1);
    assert_err("invalid JSON at line 3, column 18");
    cr_assert_eq(parse(&c, ""), -1);
    assert_err("invalid JSON");
}

/* Hub configs, verbatim as published (keys and values), must load. */
static const char *qwen25_05b_instruct =
    "{\"architectures\":[\"Qwen2ForCausalLM\"],\"attention_dropout\":0.0,"
    "\"bos_token_id\":151643,\"eos_token_id\":151645,\"hidden_act\":\"silu\","
    "\"hidden_size\":896,\"initializer_range\":0.02,\"intermediate_size\":4864,"
    "\"max_position_embeddings\":32768,\"max_window_layers\":21,"
    "\"model_type\":\"qwen2\",\"num_attention_heads\":14,\"num_hidden_layers\":24,"
    "\"num_key_value_heads\":2,\"rms_norm_eps\":1e-06,\"rope_theta\":1000000.0,"
    "\"sliding_window\":32768,\"tie_word_embeddings\":true,"
    "\"torch_dtype\":\"bfloat16\",\"transformers_version\":\"4.43.1\","
    "\"use_cache\":true,\"use_sliding_window\":false,\"vocab_size\":151936}";
static const char *qwen25_15b_instruct =
    "{\"architectures\":[\"Qwen2ForCausalLM\"],\"attention_dropout\":0.0,"
    "\"bos_token_id\":151643,\"eos_token_id\":151645,\"hidden_act\":\"silu\","
    "\"hidden_size\":1536,\"initializer_range\":0.02,\"intermediate_size\":8960,"
    "\"max_position_embeddings\":32768,\"max_window_layers\":21,"
    "\"model_type\":\"qwen2\",\"num_attention_heads\":12,\"num_hidden_layers\":28,"
    "\"num_key_value_heads\":2,\"rms_norm_eps\":1e-06,\"rope_theta\":1000000.0,"
    "\"sliding_window\":32768,\"tie_word_embeddings\":true,"
    "\"torch_dtype\":\"bfloat16\",\"transformers_version\":\"4.43.1\","
    "\"use_cache\":true,\"use_sliding_window\":false,\"vocab_size\":151936}";
static const char *qwen25_7b_instruct =
    "{\"architectures\":[\"Qwen2ForCausalLM\"],\"attention_dropout\":0.0,"
    "\"bos_token_id\":151643,\"eos_token_id\":151645,\"hidden_act\":\"silu\","
    "\"hidden_size\":3584,\"initializer_range\":0.02,\"intermediate_size\":18944,"
    "\"max_position_embeddings\":32768,\"max_window_layers\":28,"
    "\"model_type\":\"qwen2\",\"num_attention_heads\":28,\"num_hidden_layers\":28,"
    "\"num_key_value_heads\":4,\"rms_norm_eps\":1e-06,\"rope_theta\":1000000.0,"
    "\"sliding_window\":131072,\"tie_word_embeddings\":false,"
    "\"torch_dtype\":\"bfloat16\",\"transformers_version\":\"4.43.1\","
    "\"use_cache\":true,\"use_sliding_window\":false,\"vocab_size\":152064}";
static const char *r1_distill_qwen_15b =
    "{\"architectures\":[\"Qwen2ForCausalLM\"],\"attention_dropout\":0.0,"
    "\"bos_token_id\":151643,\"eos_token_id\":151643,\"hidden_act\":\"silu\","
    "\"hidden_size\":1536,\"initializer_range\":0.02,\"intermediate_size\":8960,"
    "\"max_position_embeddings\":131072,\"max_window_layers\":21,"
    "\"model_type\":\"qwen2\",\"num_attention_heads\":12,\"num_hidden_layers\":28,"
    "\"num_key_value_heads\":2,\"rms_norm_eps\":1e-06,\"rope_theta\":10000,"
    "\"sliding_window\":4096,\"tie_word_embeddings\":false,"
    "\"torch_dtype\":\"bfloat16\",\"transformers_version\":\"4.44.0\","
    "\"use_cache\":true,\"use_mrope\":false,\"use_sliding_window\":false,"
    "\"vocab_size\":151936}";
static const char *llama32_1b_instruct =
    "{\"architectures\":[\"LlamaForCausalLM\"],\"attention_bias\":false,"
    "\"attention_dropout\":0.0,\"bos_token_id\":128000,"
    "\"eos_token_id\":[128001,128008,128009],\"head_dim\":64,"
    "\"hidden_act\":\"silu\",\"hidden_size\":2048,\"initializer_range\":0.02,"
    "\"intermediate_size\":8192,\"max_position_embeddings\":131072,"
    "\"mlp_bias\":false,\"model_type\":\"llama\",\"num_attention_heads\":32,"
    "\"num_hidden_layers\":16,\"num_key_value_heads\":8,\"pretraining_tp\":1,"
    "\"rms_norm_eps\":1e-05,\"rope_scaling\":{\"factor\":32.0,"
    "\"high_freq_factor\":4.0,\"low_freq_factor\":1.0,"
    "\"original_max_position_embeddings\":8192,\"rope_type\":\"llama3\"},"
    "\"rope_theta\":500000.0,\"tie_word_embeddings\":true,"
    "\"torch_dtype\":\"bfloat16\",\"transformers_version\":\"4.45.0.dev0\","
    "\"use_cache\":true,\"vocab_size\":128256}";
static const char *llama31_8b_instruct =
    "{\"architectures\":[\"LlamaForCausalLM\"],\"attention_bias\":false,"
    "\"attention_dropout\":0.0,\"bos_token_id\":128000,"
    "\"eos_token_id\":[128001,128008,128009],\"hidden_act\":\"silu\","
    "\"hidden_size\":4096,\"initializer_range\":0.02,\"intermediate_size\":14336,"
    "\"max_position_embeddings\":131072,\"mlp_bias\":false,"
    "\"model_type\":\"llama\",\"num_attention_heads\":32,\"num_hidden_layers\":32,"
    "\"num_key_value_heads\":8,\"pretraining_tp\":1,\"rms_norm_eps\":1e-05,"
    "\"rope_scaling\":{\"factor\":8.0,\"low_freq_factor\":1.0,"
    "\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192,"
    "\"rope_type\":\"llama3\"},\"rope_theta\":500000.0,"
    "\"tie_word_embeddings\":false,\"torch_dtype\":\"bfloat16\","
    "\"transformers_version\":\"4.42.3\",\"use_cache\":true,\"vocab_size\":128256}";
static const char *tinyllama_chat =
    "{\"architectures\":[\"LlamaForCausalLM\"],\"attention_bias\":false,"
    "\"bos_token_id\":1,\"eos_token_id\":2,\"hidden_act\":\"silu\","
    "\"hidden_size\":2048,\"initializer_range\":0.02,\"intermediate_size\":5632,"
    "\"max_position_embeddings\":2048,\"model_type\":\"llama\","
    "\"num_attention_heads\":32,\"num_hidden_layers\":22,"
    "\"num_key_value_heads\":4,\"pretraining_tp\":1,\"rms_norm_eps\":1e-05,"
    "\"rope_scaling\":null,\"rope_theta\":10000.0,\"tie_word_embeddings\":false,"
    "\"torch_dtype\":\"bfloat16\",\"transformers_version\":\"4.35.0\","
    "\"use_cache\":true,\"vocab_size\":32000}";
static const char *smollm2_135m_instruct =
    "{\"architectures\":[\"LlamaForCausalLM\"],\"attention_bias\":false,"
    "\"attention_dropout\":0.0,\"bos_token_id\":1,\"eos_token_id\":2,"
    "\"hidden_act\":\"silu\",\"hidden_size\":576,"
    "\"initializer_range\":0.041666666666666664,\"intermediate_size\":1536,"
    "\"is_llama_config\":true,\"max_position_embeddings\":8192,"
    "\"mlp_bias\":false,\"model_type\":\"llama\",\"num_attention_heads\":9,"
    "\"num_hidden_layers\":30,\"num_key_value_heads\":3,\"pad_token_id\":2,"
    "\"pretraining_tp\":1,\"rms_norm_eps\":1e-05,\"rope_interleaved\":false,"
    "\"rope_scaling\":null,\"rope_theta\":100000,\"tie_word_embeddings\":true,"
    "\"torch_dtype\":\"bfloat16\",\"transformers.js_config\":{\"kv_cache_dtype\":"
    "{\"q4f16\":\"float16\",\"fp16\":\"float16\"}},"
    "\"transformers_version\":\"4.42.3\",\"use_cache\":true,\"vocab_size\":49152}";
/* As transformers 5 saves a Qwen2 config (rope_parameters, layer_types). */
static const char *qwen2_transformers5 =
    "{\"architectures\":[\"Qwen2ForCausalLM\"],\"attention_dropout\":0.0,"
    "\"bos_token_id\":151643,\"dtype\":\"bfloat16\",\"eos_token_id\":151645,"
    "\"hidden_act\":\"silu\",\"hidden_size\":896,\"initializer_range\":0.02,"
    "\"intermediate_size\":4864,\"layer_types\":[\"full_attention\","
    "\"full_attention\"],\"max_position_embeddings\":32768,"
    "\"max_window_layers\":21,\"model_type\":\"qwen2\",\"num_attention_heads\":14,"
    "\"num_hidden_layers\":2,\"num_key_value_heads\":2,\"pad_token_id\":null,"
    "\"rms_norm_eps\":1e-06,\"rope_parameters\":{\"rope_theta\":1000000.0,"
    "\"rope_type\":\"default\"},\"sliding_window\":null,"
    "\"tie_word_embeddings\":true,\"transformers_version\":\"5.0.0\","
    "\"use_cache\":true,\"use_sliding_window\":false,\"vocab_size\":151936}";

Test(config, hub_configs_load)
{
    struct model_config c;
    cr_assert_eq(parse(&c, qwen25_05b_instruct), 0, "%s", err);
    cr_assert(c.arch == MODEL_ARCH_QWEN2 && c.hidden_size == 896 &&
              c.n_heads == 14 && c.n_kv_heads == 2 && c.head_dim == 64 &&
              c.tie_word_embeddings && c.qkv_bias && !c.o_bias &&
              c.rope_theta == 1e6f && c.eos_token_id == 151645);
    cr_assert_eq(parse(&c, qwen25_15b_instruct), 0, "%s", err);
    cr_assert(c.head_dim == 128 && c.n_layers == 28);
    cr_assert_eq(parse(&c, qwen25_7b_instruct), 0, "%s", err);
    cr_assert(c.head_dim == 128 && c.n_kv_heads == 4 && !c.tie_word_embeddings);
    cr_assert_eq(parse(&c, r1_distill_qwen_15b), 0, "%s", err);
    cr_assert(c.rope_theta == 10000.0f && c.max_position_embeddings == 131072);
    cr_assert_eq(parse(&c, llama32_1b_instruct), 0, "%s", err);
    cr_assert(c.arch == MODEL_ARCH_LLAMA && c.head_dim == 64 && c.rope_llama3 &&
              c.rope_factor == 32.0f && c.rope_low_freq_factor == 1.0f &&
              c.rope_high_freq_factor == 4.0f &&
              c.rope_original_max_pos == 8192 && c.eos_token_id == 128001 &&
              c.rms_norm_eps == 1e-5f && !c.qkv_bias && c.tie_word_embeddings);
    cr_assert_eq(parse(&c, llama31_8b_instruct), 0, "%s", err);
    cr_assert(c.head_dim == 128 && c.rope_factor == 8.0f && !c.tie_word_embeddings);
    cr_assert_eq(parse(&c, tinyllama_chat), 0, "%s", err);
    cr_assert(c.n_kv_heads == 4 && !c.rope_llama3 && c.bos_token_id == 1);
    cr_assert_eq(parse(&c, smollm2_135m_instruct), 0, "%s", err);
    cr_assert(c.n_heads == 9 && c.n_kv_heads == 3 && c.head_dim == 64 &&
              c.rope_theta == 100000.0f);
    cr_assert_eq(parse(&c, qwen2_transformers5), 0, "%s", err);
    cr_assert(c.rope_theta == 1e6f && !c.rope_llama3);
}

/* Relative error within 1 ulp-ish: torch's vectorized powf (Sleef, 1 ulp)
 * and glibc's powf may differ in the last bit. */
static void assert_close(float got, float want, int j)
{
    cr_assert(fabsf(got - want) <= 2.5e-7f * fabsf(want), "inv_freq[%d]: %.9g, "
              "expected %.9g", j, (double)got, (double)want);
}

Test(config, rope_inv_freq_default)
{
    /* /usr/bin/python3 -c "import torch; b,d=1000000.0,128;
     *   inv=1.0/(b**(torch.arange(0,d,2,dtype=torch.int64).float()/d));
     *   print(' '.join('%d:%.9g'%(i,inv[i].item()) for i in (0,1,10,32,63)))"
     * -> 0:1 1:0.805842221 10:0.115478203 32:0.00100000005 63:1.24093776e-06 */
    struct model_config c;
    cr_assert_eq(parse(&c, qwen25_15b_instruct), 0, "%s", err);
    float inv[64];
    config_rope_inv_freq(&c, inv);
    static const struct { int j; float v; } want[] = {
        { 0, 1.0f }, { 1, 0.805842221f }, { 10, 0.115478203f },
        { 32, 0.00100000005f }, { 63, 1.24093776e-06f },
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        assert_close(inv[want[i].j], want[i].v, want[i].j);
}

Test(config, rope_inv_freq_llama3)
{
    /* transformers' _compute_default_rope_parameters + _compute_llama3_parameters
     * for Llama-3.2-1B (theta 500000, head_dim 64, factor 32, low 1, high 4,
     * original 8192), torch 1.13:
     * /usr/bin/python3 -c "import torch, math
     * b, d, f, lo, hi, old = 500000.0, 64, 32.0, 1.0, 4.0, 8192
     * inv = 1.0 / (b ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
     * w = 2 * math.pi / inv
     * l = torch.where(w > old / lo, inv / f, inv)
     * s = (old / w - lo) / (hi - lo)
     * inv = torch.where(~(w < old / hi) * ~(w > old / lo), (1 - s) * l / f + s * l, l)
     * print(' '.join('%d:%.9g' % (i, inv[i].item()) for i in (0, 1, 5, 14, 15, 16, 17, 18, 31)))"
     * -> 0:1 1:0.663601279 5:0.128687382 14:0.00321144611 15:0.00129054801
     *    16:0.000429556705 17:9.70828623e-05 18:1.94616387e-05 31:9.41830649e-08
     * (14: high frequency, unchanged; 15-17: smoothed; 18, 31: divided by 32) */
    struct model_config c;
    cr_assert_eq(parse(&c, llama32_1b_instruct), 0, "%s", err);
    float inv[32];
    config_rope_inv_freq(&c, inv);
    static const struct { int j; float v; } want[] = {
        { 0, 1.0f }, { 1, 0.663601279f }, { 5, 0.128687382f },
        { 14, 0.00321144611f }, { 15, 0.00129054801f }, { 16, 0.000429556705f },
        { 17, 9.70828623e-05f }, { 18, 1.94616387e-05f }, { 31, 9.41830649e-08f },
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        assert_close(inv[want[i].j], want[i].v, want[i].j);
}

Test(config, presets)
{
    struct model_config c;
    cr_assert_eq(config_preset(&c, "tiny"), 0);
    cr_assert(c.arch == MODEL_ARCH_QWEN2 && c.vocab_size == 512 &&
              c.hidden_size == 256 && c.n_layers == 6 && c.n_heads == 8 &&
              c.n_kv_heads == 4 && c.head_dim == 32 &&
              c.intermediate_size == 688 && c.tie_word_embeddings &&
              c.max_position_embeddings == 2048 && c.rope_theta == 10000.0f &&
              c.rms_norm_eps == 1e-6f && c.bos_token_id == 256 &&
              c.eos_token_id == 256 && c.qkv_bias && !c.o_bias && !c.rope_llama3);
    cr_assert_eq(config_preset(&c, "small"), 0);
    cr_assert(c.vocab_size == 4096 && c.hidden_size == 512 && c.n_layers == 8 &&
              c.n_heads == 8 && c.n_kv_heads == 4 && c.head_dim == 64 &&
              c.intermediate_size == 1376 && c.tie_word_embeddings);
    cr_assert_eq(config_preset(&c, "huge"), -1);
    cr_assert_eq(config_preset(&c, NULL), -1);
}

static char tmpdir[64];
static void mk_tmpdir(void)
{
    strcpy(tmpdir, "/tmp/aha-test-config-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}
static void rm_tmpdir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    cr_assert_eq(system(cmd), 0);
}

static void roundtrip(const struct model_config *in, const char *dtype)
{
    char path[128], text[8192];
    snprintf(path, sizeof path, "%s/config.json", tmpdir);
    cr_assert_eq(config_save(in, path, dtype, err, sizeof err), 0, "%s", err);
    struct model_config out;
    cr_assert_eq(config_load(&out, path, err, sizeof err), 0, "%s", err);
    cr_assert_eq(memcmp(in, &out, sizeof out), 0, "config changed in round trip");
    FILE *f = fopen(path, "r");
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    char want[64];
    snprintf(want, sizeof want, "\"torch_dtype\": \"%s\"", dtype);
    cr_assert(strstr(text, want), "no %s in:\n%s", want, text);
    /* transformers needs these to rebuild the same model */
    cr_assert(strstr(text, in->arch == MODEL_ARCH_LLAMA
                     ? "\"LlamaForCausalLM\"" : "\"Qwen2ForCausalLM\""));
    cr_assert(strstr(text, in->arch == MODEL_ARCH_LLAMA
                     ? "\"model_type\": \"llama\"" : "\"model_type\": \"qwen2\""));
    if (in->arch == MODEL_ARCH_QWEN2)
        cr_assert(strstr(text, "\"use_sliding_window\": false"));
    else
        cr_assert(strstr(text, "\"attention_bias\""));
}

Test(config, save_parse_roundtrip, .init = mk_tmpdir, .fini = rm_tmpdir)
{
    struct model_config c;
    cr_assert_eq(config_preset(&c, "tiny"), 0);
    roundtrip(&c, "float32");
    char path[128], text[8192];
    snprintf(path, sizeof path, "%s/config.json", tmpdir);
    FILE *f = fopen(path, "r");
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    /* shortest decimal for floats, as Python writes them */
    cr_assert(strstr(text, "\"rms_norm_eps\": 1e-6") ||
              strstr(text, "\"rms_norm_eps\": 1e-06"), "%s", text);
    cr_assert(strstr(text, "\"tie_word_embeddings\": true"));
    cr_assert(strstr(text, "\"bos_token_id\": 256"));
    cr_assert(n > 2 && text[n - 2] == '}' && text[n - 1] == '\n');
    char cmd[256];   /* no temporary file left behind */
    snprintf(cmd, sizeof cmd, "test $(ls -A '%s' | wc -l) -eq 1", tmpdir);
    cr_assert_eq(system(cmd), 0);

    cr_assert_eq(parse(&c, llama32_1b_instruct), 0, "%s", err);
    roundtrip(&c, "bfloat16");
    cr_assert_eq(parse(&c, llama31_8b_instruct), 0, "%s", err);
    c.bos_token_id = -1;
    c.eos_token_id = -1;
    c.qkv_bias = c.o_bias = true;
    roundtrip(&c, "float32");
    cr_assert_eq(parse(&c, qwen25_7b_instruct), 0, "%s", err);
    c.head_dim = 64;    /* head_dim != hidden/heads must survive too */
    roundtrip(&c, "bfloat16");
}

Test(config, load_errors, .init = mk_tmpdir, .fini = rm_tmpdir)
{
    struct model_config c;
    cr_assert_eq(config_preset(&c, "tiny"), 0);
    char path[128];
    snprintf(path, sizeof path, "%s/missing/config.json", tmpdir);
    cr_assert_eq(config_load(&c, path, err, sizeof err), -1);
    cr_assert(strstr(err, path) == err && strstr(err, "cannot open"), "%s", err);
    cr_assert_eq(config_save(&c, path, "float32", err, sizeof err), -1);
    cr_assert(strstr(err, path), "%s", err);

    snprintf(path, sizeof path, "%s/config.json", tmpdir);
    FILE *f = fopen(path, "w");
    fputs("{\"architectures\": [\"LlamaForCausalLM\"],\n \"vocab_size\": 1e3}", f);
    fclose(f);
    cr_assert_eq(config_load(&c, path, err, sizeof err), -1);
    cr_assert(strstr(err, path) == err && strstr(err, "field \"vocab_size\""), "%s", err);
}
