/* engine/config.h — model hyper-parameters from a Hugging Face config.json.
 * Parses and validates LlamaForCausalLM and Qwen2ForCausalLM configs; keys
 * that change the math and that aha does not implement are errors, never
 * silently ignored. Writes config.json back for checkpoints. */
#ifndef AHA_CONFIG_H
#define AHA_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

enum model_arch {
    MODEL_ARCH_LLAMA,   /* "LlamaForCausalLM", model_type "llama" */
    MODEL_ARCH_QWEN2,   /* "Qwen2ForCausalLM", model_type "qwen2" */
};

struct model_config {
    enum model_arch arch;
    int vocab_size;
    int hidden_size;
    int n_layers;               /* num_hidden_layers */
    int n_heads;                /* num_attention_heads */
    int n_kv_heads;             /* num_key_value_heads (absent or null: n_heads) */
    int head_dim;               /* head_dim (default hidden_size / n_heads) */
    int intermediate_size;
    int max_position_embeddings;
    float rope_theta;           /* default 10000 */
    float rms_norm_eps;         /* default 1e-6 */
    bool tie_word_embeddings;   /* default false (HF PretrainedConfig) */
    bool qkv_bias;              /* Qwen2: always; Llama: attention_bias */
    bool o_bias;                /* Llama attention_bias only */
    int bos_token_id;           /* -1 when absent */
    int eos_token_id;           /* -1 when absent (first of a list) */
    /* rope_scaling (only "llama3" is implemented; rope_type "default" or
     * null means none). */
    bool rope_llama3;
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_max_pos;
};

/* Parses config.json text. `name` is used in messages (usually the path).
 * Returns 0, or -1 with err filled ("config.json: field \"x\": ..."). */
int config_parse(struct model_config *cfg, const char *json_text,
                 const char *name, char *err, size_t errlen);
/* Every size at most what aha supports (config.c's limits: past any real
 * model, and small enough for the engine's int arithmetic). Returns 0, or
 * -1 with err naming the field. config_parse applies it. */
int config_check_sizes(const struct model_config *cfg, char *err, size_t errlen);
/* Reads and parses a file. Returns 0 or -1 with err filled. */
int config_load(struct model_config *cfg, const char *path, char *err,
                size_t errlen);
/* Writes a transformers-loadable config.json (architectures, model_type,
 * torch_dtype = dtype, e.g. "float32" or "bfloat16"). Returns 0 or -1. */
int config_save(const struct model_config *cfg, const char *path,
                const char *dtype, char *err, size_t errlen);
/* Fills inv_freq: (head_dim/2) as transformers' rotary embedding computes
 * it (fp32: 1 / theta^(2j/d)), with llama3 scaling applied when set. */
void config_rope_inv_freq(const struct model_config *cfg, float *inv_freq);
/* Built-in sizes: "tiny" and "small" (see config.c). Returns 0 or -1. */
int config_preset(struct model_config *cfg, const char *name);

#endif
