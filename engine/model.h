/* engine/model.h — a Llama/Qwen2 decoder-only transformer for training and
 * simple inference: parameters, gradients and AdamW state each in one
 * allocation with named views (llm.c's ParameterTensors), Hugging Face tensor
 * names, forward to logits or target log-probs, backward from d(log-prob).
 * Not here: KV-cache generation (engine/generate), tokenization. */
#ifndef AHA_MODEL_H
#define AHA_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "config.h"
#include "safetensors.h"

/* One named view into the parameter buffer (and, at the same offset, into
 * the gradient and optimizer buffers). */
struct param_view {
    char name[96];      /* Hugging Face name, e.g. "model.norm.weight" */
    size_t offset;      /* in floats */
    size_t numel;
    int ndim;
    int64_t shape[2];
    bool decay;         /* weight decay applies (matrices, not norms/biases) */
};

/* Offsets (in floats) of one layer's tensors. q, k, v weights are adjacent
 * so that they form one fused (QKV, C) matrix; so are their biases. */
struct layer_offsets {
    size_t ln1, wqkv, bqkv, wo, bo, ln2, wg, wu, wd;
};

/* Saved activations for a batch of B sequences of T tokens (N = B*T). */
struct model_acts {
    int B, T;           /* shape of the last forward */
    int cap_B, cap_T;   /* shape the buffers were allocated for */
    float *residual;    /* (L+1, N, C): input of each layer, then final */
    float *res2;        /* (L, N, C): residual after attention */
    float *ln1, *ln2;   /* (L, N, C) normalised inputs */
    float *rstd1, *rstd2;   /* (L, N) */
    float *qkv;         /* (L, N, QKV) with RoPE applied to q and k */
    float *rope;        /* (N, HD) cos|sin of each token's position */
    float *att;         /* (L, B, NH, T, T) attention probabilities */
    float *atty;        /* (L, N, NH*HD) attention outputs */
    float *gate, *up, *h;   /* (L, N, I) */
    float *lnf;         /* (N, C) final-normalised hidden states */
    float *rstdf;       /* (N) */
    float *lse;         /* (N) log-sum-exp of each logits row */
    int32_t *tokens;    /* (N) */
    int32_t *pos;       /* (N) */
    int32_t *seg;       /* (N) document starts of a segmented forward */
    /* backward scratch */
    float *dres, *dln, *datty, *dqkv, *dh, *dgate, *dup, *logits;
    size_t logits_rows; /* rows of the logits chunk buffer */
};

struct model {
    struct model_config cfg;
    const struct backend *be;
    int qkv_dim;                /* (NH + 2*NKV) * HD */
    size_t n_params;            /* floats */
    float *params;              /* one allocation */
    uint64_t version;           /* bumped by model_params_changed */
    float *grads;               /* same layout, NULL until model_grads_alloc */
    float *adam_m, *adam_v;     /* same layout, NULL until first step */
    int adam_t;                 /* AdamW steps taken */
    int n_views;
    struct param_view *views;
    size_t wte, lnf_w, lm_head; /* offsets; lm_head == wte when tied */
    struct layer_offsets *layers;
    float *inv_freq;            /* (HD/2) */
    struct model_acts acts;
    bool bf16_weights;          /* model_load: every matrix was stored as
                                 * BF16 (dtype "auto" generates in bf16) */
    bool matrices_discarded;    /* model_discard_matrices was called */
};

/* A model with zeroed parameters laid out for cfg. Returns NULL with err
 * filled when the config is invalid or memory runs out. Caller frees. */
struct model *model_new(const struct model_config *cfg,
                        const struct backend *be, char *err, size_t errlen);
void model_free(struct model *m);
/* Marks params as changed, so that the copies derived from them (the
 * generation engine's packed weights) are remade before their next use.
 * Whatever writes params calls it: loading, initialising, optimizer steps. */
static inline void model_params_changed(struct model *m) { m->version++; }
/* Hugging Face-style initialisation: N(0, std) for matrices (the output
 * projections o_proj and down_proj scaled by 1/sqrt(2L), GPT-2 style),
 * zero biases, unit norms. Deterministic in seed. */
void model_init_random(struct model *m, uint64_t seed, float std);

/* Gives the memory of the matrices that a generation engine holds packed
 * back to the backend (backend discard): every 2-D parameter but the
 * embedding table, which generation still reads for its lookups. For a
 * model only generated with from now on (serving): forward and saving
 * refuse it after. Returns the bytes given back (0 without discard). */
size_t model_discard_matrices(struct model *m);

/* Loads DIR/config.json and DIR/model.safetensors (F32, BF16 or F16).
 * Every expected tensor must be present with the config's shape; extra
 * tensors are an error (except rotary inv_freq buffers, and a tied
 * lm_head.weight equal to the embeddings). Returns a new model or NULL with
 * err naming the file and tensor. */
struct model *model_load(const char *dir, const struct backend *be,
                         char *err, size_t errlen);
/* Writes DIR/config.json and DIR/model.safetensors (dtype ST_F32 or ST_BF16)
 * with Hugging Face names; creates DIR. Returns 0 or -1. */
int model_save(const struct model *m, const char *dir, enum st_dtype dtype,
               char *err, size_t errlen);
/* model_save (F32) to dir, plus copies of src_dir's tokenizer and chat
 * template files (tokenizer.json, tokenizer_config.json, chat_template.*,
 * generation_config.json) where present, so dir is a complete model
 * directory. Returns 0 or -1. */
int model_save_dir_from(const struct model *m, const char *src_dir, const char *dir,
                        char *err, size_t errlen);
/* Writes an arbitrary same-layout buffer (e.g. grads) as safetensors with
 * the parameter names, each prefixed with prefix (may be ""). */
int model_save_buffer(const struct model *m, const float *buf,
                      const char *prefix, const char *path, char *err,
                      size_t errlen);

/* Reads a same-layout buffer back from a safetensors file written by
 * model_save_buffer with the same prefix. Returns 0 or -1. */
int model_load_buffer(const struct model *m, float *buf, const char *prefix,
                      const char *path, char *err, size_t errlen);

/* AdamW state for resuming: DIR/optimizer.safetensors (exp_avg.<name>) and
 * DIR/optimizer_v.safetensors (exp_avg_sq.<name>), F32. Save needs state
 * (a step taken); load allocates it when absent and sets adam_t to
 * adam_step. Return 0 or -1 with err naming the file and tensor. */
int model_optimizer_save(const struct model *m, const char *dir, char *err, size_t errlen);
int model_optimizer_load(struct model *m, const char *dir, int adam_step, char *err, size_t errlen);
/* mkdir -p DIR; 0 or -1 with err. */
int model_dir_create(const char *dir, char *err, size_t errlen);

const struct param_view *model_find_param(const struct model *m,
                                          const char *name);

/* Runs the transformer trunk on tokens: (B,T) at positions pos: (B,T)
 * (NULL = 0..T-1 per row), saving activations for backward. Token ids
 * outside the vocabulary are an error (-1, err filled). */
int model_forward(struct model *m, const int32_t *tokens, const int32_t *pos,
                  int B, int T, char *err, size_t errlen);
/* model_forward with several documents packed per row: seg: (B,T) holds,
 * for each token, the index within its row of its document's first token
 * (0 <= seg <= t, else -1 with err), and attention never crosses a
 * document boundary (backend.h attention_forward). Positions still come
 * from pos, which for independent documents restart at 0: pos = t - seg.
 * seg NULL is model_forward. model_backward needs nothing more. */
int model_forward_segmented(struct model *m, const int32_t *tokens, const int32_t *pos,
                            const int32_t *seg, int B, int T, char *err, size_t errlen);
/* Logits of rows [row0, row0+nrows) of the last forward: out (nrows, V). */
void model_logits(struct model *m, int row0, int nrows, float *out);
/* Log-probabilities of targets: (N) (< 0 = ignored, gives 0) after
 * model_forward: out (N). Computes logits chunk by chunk; never holds more
 * than a chunk of them. */
void model_logprobs(struct model *m, const int32_t *targets, float *out);
/* model_logprobs plus, per row, the entropy of the predicted distribution
 * (nats) into entropy: (N) and the argmax id into argmax: (N); either may
 * be NULL. Reads each logits chunk on the host. */
void model_logprobs_stats(struct model *m, const int32_t *targets, float *out,
                          float *entropy, int32_t *argmax);
/* Accumulates into m->grads the gradient of L where dL/dlogprob[i] =
 * dlogprob[i], through the whole model. Needs model_forward then
 * model_logprobs with the same targets. */
void model_backward(struct model *m, const int32_t *targets,
                    const float *dlogprob);

/* Knowledge distillation: accumulates into m->grads the gradient of
 *   L = sum_i w[i] * D(s_i, t_i)
 * over the rows i of the last model_forward of m, where s_i and t_i are the
 * softmax of m's and teacher's logits of row i divided by tau, and D the
 * generalized JSD of kd_loss.h with beta. teacher must have run
 * model_forward on the same tokens (same B, T) and share m's vocabulary.
 * w: (N) weights, 0 = no loss (the row is skipped). Returns L, or NaN when
 * memory ran out (no gradient then). */
double model_backward_kd(struct model *m, struct model *teacher, const float *w, float beta,
                         float tau);

/* Allocates (zeroed) the gradient buffer if absent; 0 or -1. */
int model_grads_alloc(struct model *m);
void model_grads_zero(struct model *m);
/* Global L2 norm of the gradients; when max_norm > 0 and the norm exceeds
 * it, scales the gradients by max_norm / norm. Returns the norm before
 * clipping. */
float model_grads_clip(struct model *m, float max_norm);
/* One AdamW step over all parameters (weight decay only on views with
 * decay set). Allocates optimizer state on first use; 0 or -1. */
int model_adamw_step(struct model *m, float lr, float beta1, float beta2,
                     float eps, float weight_decay);

/* FLOPs of one forward+backward over B sequences of T tokens: 6 per
 * matmul parameter per token plus causal attention (see model.c). */
double model_train_flops(const struct model_config *cfg, int B, int T);
/* Parameters of every matrix used in a matmul (lm_head included even when
 * tied, the embedding lookup not): a token's forward is 2 FLOPs each. */
double model_matmul_params(const struct model_config *cfg);

/* Mean next-token cross-entropy helper: targets[i] = tokens[i+1] within each
 * row, -1 at the end of a row. targets: (B*T). Returns the valid count. */
int model_shift_targets(const int32_t *tokens, int B, int T, int32_t *targets);

#endif
