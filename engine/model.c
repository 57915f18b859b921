/* engine/model.c — the Llama/Qwen2 transformer on the backend interface:
 * parameter layout with Hugging Face names, checkpoint load/save, forward,
 * backward, gradient clipping and AdamW. Generation with a KV cache lives
 * elsewhere; this file holds the training-shaped (B,T) path.
 *
 * Forward per layer (transformers' LlamaDecoderLayer / Qwen2DecoderLayer):
 *   h   = x + o_proj(attn(rope(q(rms1(x))), rope(k(rms1(x))), v(rms1(x))))
 *   out = h + down(silu(gate(rms2(h))) * up(rms2(h)))
 * then logits = lm_head(rms_f(x_L)). */
#include "model.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kd_loss.h"
#include "rng.h"
#include "errmsg.h"

/* Rows of logits computed at once in model_logprobs / model_backward. */
#define MODEL_LOGITS_CHUNK 512

/* ---------------------------------------------------------------- layout */

static size_t add_view(struct model *m, size_t *off, const char *name,
                       int64_t d0, int64_t d1, bool decay)
{
    struct param_view *v = &m->views[m->n_views++];
    snprintf(v->name, sizeof v->name, "%s", name);
    v->offset = *off;
    v->ndim = d1 > 0 ? 2 : 1;
    v->shape[0] = d0;
    v->shape[1] = d1 > 0 ? d1 : 0;
    v->numel = (size_t)d0 * (size_t)(d1 > 0 ? d1 : 1);
    v->decay = decay;
    *off += v->numel;
    return v->offset;
}

static int config_check(const struct model_config *c, char *err, size_t errlen)
{
    if (c->vocab_size <= 0 || c->hidden_size <= 0 || c->n_layers <= 0 ||
        c->n_heads <= 0 || c->n_kv_heads <= 0 || c->head_dim <= 0 ||
        c->intermediate_size <= 0) {
        errmsg_set(err, errlen, "model config: sizes must be positive");
        return -1;
    }
    char why[160];
    if (config_check_sizes(c, why, sizeof why)) {
        errmsg_set(err, errlen, "model config: %s", why);
        return -1;
    }
    if (c->n_heads % c->n_kv_heads != 0 || c->head_dim % 2 != 0) {
        errmsg_set(err, errlen, "model config: num_attention_heads (%d) must be a "
             "multiple of num_key_value_heads (%d) and head_dim (%d) even",
             c->n_heads, c->n_kv_heads, c->head_dim);
        return -1;
    }
    return 0;
}

struct model *model_new(const struct model_config *cfg,
                        const struct backend *be, char *err, size_t errlen)
{
    if (config_check(cfg, err, errlen)) return NULL;
    struct model *m = calloc(1, sizeof *m);
    if (!m) { errmsg_set(err, errlen, "out of memory"); return NULL; }
    m->cfg = *cfg;
    m->be = be;
    const int C = cfg->hidden_size, L = cfg->n_layers, HD = cfg->head_dim;
    const int NH = cfg->n_heads, NKV = cfg->n_kv_heads, I = cfg->intermediate_size;
    const int V = cfg->vocab_size;
    m->qkv_dim = (NH + 2 * NKV) * HD;
    m->views = calloc((size_t)L * 16 + 4, sizeof *m->views);
    m->layers = calloc((size_t)L, sizeof *m->layers);
    m->inv_freq = calloc((size_t)HD / 2, sizeof(float));
    if (!m->views || !m->layers || !m->inv_freq) goto oom;
    config_rope_inv_freq(cfg, m->inv_freq);

    size_t off = 0;
    char nm[96];
    m->wte = add_view(m, &off, "model.embed_tokens.weight", V, C, true);
    for (int l = 0; l < L; l++) {
        struct layer_offsets *lo = &m->layers[l];
#define NAME(s) (snprintf(nm, sizeof nm, "model.layers.%d.%s", l, s), nm)
        lo->ln1 = add_view(m, &off, NAME("input_layernorm.weight"), C, 0, false);
        lo->wqkv = add_view(m, &off, NAME("self_attn.q_proj.weight"), (int64_t)NH * HD, C, true);
        add_view(m, &off, NAME("self_attn.k_proj.weight"), (int64_t)NKV * HD, C, true);
        add_view(m, &off, NAME("self_attn.v_proj.weight"), (int64_t)NKV * HD, C, true);
        lo->bqkv = (size_t)-1;
        if (cfg->qkv_bias) {
            lo->bqkv = add_view(m, &off, NAME("self_attn.q_proj.bias"), (int64_t)NH * HD, 0, false);
            add_view(m, &off, NAME("self_attn.k_proj.bias"), (int64_t)NKV * HD, 0, false);
            add_view(m, &off, NAME("self_attn.v_proj.bias"), (int64_t)NKV * HD, 0, false);
        }
        lo->wo = add_view(m, &off, NAME("self_attn.o_proj.weight"), C, (int64_t)NH * HD, true);
        lo->bo = cfg->o_bias ? add_view(m, &off, NAME("self_attn.o_proj.bias"), C, 0, false)
                             : (size_t)-1;
        lo->ln2 = add_view(m, &off, NAME("post_attention_layernorm.weight"), C, 0, false);
        lo->wg = add_view(m, &off, NAME("mlp.gate_proj.weight"), I, C, true);
        lo->wu = add_view(m, &off, NAME("mlp.up_proj.weight"), I, C, true);
        lo->wd = add_view(m, &off, NAME("mlp.down_proj.weight"), C, I, true);
#undef NAME
    }
    m->lnf_w = add_view(m, &off, "model.norm.weight", C, 0, false);
    m->lm_head = cfg->tie_word_embeddings
                     ? m->wte
                     : add_view(m, &off, "lm_head.weight", V, C, true);
    m->n_params = off;
    m->params = be->alloc(off * sizeof(float));
    if (!m->params) goto oom;
    return m;
oom:
    model_free(m);
    errmsg_set(err, errlen, "out of memory allocating the model");
    return NULL;
}

static void acts_free(struct model *m)
{
    struct model_acts *a = &m->acts;
    float **bufs[] = {&a->residual, &a->res2, &a->ln1, &a->ln2, &a->rstd1,
                      &a->rstd2, &a->qkv, &a->rope, &a->att, &a->atty, &a->gate, &a->up,
                      &a->h, &a->lnf, &a->rstdf, &a->lse, &a->dres, &a->dln,
                      &a->datty, &a->dqkv, &a->dh, &a->dgate, &a->dup,
                      &a->logits};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) {
        if (*bufs[i]) m->be->free(*bufs[i]);
        *bufs[i] = NULL;
    }
    if (a->tokens) m->be->free(a->tokens);
    if (a->pos) m->be->free(a->pos);
    if (a->seg) m->be->free(a->seg);
    memset(a, 0, sizeof *a);
}

void model_free(struct model *m)
{
    if (!m) return;
    acts_free(m);
    if (m->params) m->be->free(m->params);
    if (m->grads) m->be->free(m->grads);
    if (m->adam_m) m->be->free(m->adam_m);
    if (m->adam_v) m->be->free(m->adam_v);
    free(m->views);
    free(m->layers);
    free(m->inv_freq);
    free(m);
}

const struct param_view *model_find_param(const struct model *m, const char *name)
{
    for (int i = 0; i < m->n_views; i++)
        if (strcmp(m->views[i].name, name) == 0) return &m->views[i];
    return NULL;
}

void model_init_random(struct model *m, uint64_t seed, float std)
{
    struct rng r;
    rng_seed(&r, seed);
    float *host = calloc(m->n_params, sizeof(float));
    if (!host) return;
    const float out_std = std / sqrtf(2.0f * (float)m->cfg.n_layers);
    for (int i = 0; i < m->n_views; i++) {
        const struct param_view *v = &m->views[i];
        float *p = host + v->offset;
        if (v->ndim == 1) {
            float val = strstr(v->name, "norm") ? 1.0f : 0.0f;
            for (size_t j = 0; j < v->numel; j++) p[j] = val;
        } else {
            float s = (strstr(v->name, "o_proj") || strstr(v->name, "down_proj")) ? out_std : std;
            for (size_t j = 0; j < v->numel; j++) p[j] = (float)(rng_normal(&r) * s);
        }
    }
    m->be->upload(m->params, host, m->n_params * sizeof(float));
    model_params_changed(m);
    free(host);
}

/* ------------------------------------------------------------ checkpoints */

/* Elements of m's largest parameter (at least 1): the loaders convert and
 * upload tensor by tensor through one host buffer of this size. */
static size_t largest_view(const struct model *m)
{
    size_t most = 1;
    for (int i = 0; i < m->n_views; i++)
        if (m->views[i].numel > most) most = m->views[i].numel;
    return most;
}

struct model *model_load(const char *dir, const struct backend *be,
                         char *err, size_t errlen)
{
    char path[4096];
    struct model_config cfg;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (config_load(&cfg, path, err, errlen)) return NULL;
    struct model *m = model_new(&cfg, be, err, errlen);
    if (!m) return NULL;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    struct st_file *f = st_open(path, err, errlen);
    if (!f) { model_free(m); return NULL; }
    /* tensor by tensor through one host buffer of the largest, each
     * released from the mapping once uploaded: loading holds the model
     * once (plus a tensor), not the file, a host copy and the model */
    float *host = malloc(largest_view(m) * sizeof(float)), *tmp = NULL;
    if (!host) { errmsg_set(err, errlen, "out of memory"); goto fail; }
    m->bf16_weights = true;
    for (int i = 0; i < m->n_views; i++) {
        const struct param_view *v = &m->views[i];
        const struct st_tensor *t = st_find(f, v->name);
        if (!t) {
            errmsg_set(err, errlen, "%s: tensor \"%s\" is missing", path, v->name);
            goto fail;
        }
        if (v->ndim == 2 && t->dtype != ST_BF16) m->bf16_weights = false;
        bool ok = t->ndim == v->ndim;
        for (int d = 0; ok && d < v->ndim; d++) ok = t->shape[d] == v->shape[d];
        if (!ok) {
            char got[128] = "", want[64];
            size_t n = 0;
            for (int d = 0; d < t->ndim && n < sizeof got - 24; d++)
                n += (size_t)snprintf(got + n, sizeof got - n, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
            if (v->ndim == 2)
                snprintf(want, sizeof want, "%lld, %lld", (long long)v->shape[0], (long long)v->shape[1]);
            else
                snprintf(want, sizeof want, "%lld", (long long)v->shape[0]);
            errmsg_set(err, errlen, "%s: tensor \"%s\" has shape [%s], config.json implies [%s]",
                 path, v->name, got, want);
            goto fail;
        }
        st_to_f32(t, host);
        be->upload(m->params + v->offset, host, v->numel * sizeof(float));
        st_release(t);
    }
    /* Every tensor in the file must be one we use. */
    for (int i = 0; i < f->n_tensors; i++) {
        const struct st_tensor *t = &f->tensors[i];
        if (model_find_param(m, t->name)) continue;
        if (strstr(t->name, "rotary_emb.inv_freq")) continue;   /* old HF buffer */
        if (cfg.tie_word_embeddings && strcmp(t->name, "lm_head.weight") == 0 &&
            t->ndim == 2 && t->shape[0] == cfg.vocab_size && t->shape[1] == cfg.hidden_size) {
            /* Some tied checkpoints also store lm_head: accept only a copy. */
            tmp = malloc(t->numel * sizeof(float));
            if (!tmp) { errmsg_set(err, errlen, "out of memory"); goto fail; }
            st_to_f32(t, tmp);
            be->download(host, m->params + m->wte, t->numel * sizeof(float));
            const int same = memcmp(tmp, host, t->numel * sizeof(float)) == 0;
            free(tmp);
            tmp = NULL;
            if (same) continue;
            errmsg_set(err, errlen, "%s: tensor \"lm_head.weight\" differs from the embeddings "
                 "but config.json says tie_word_embeddings is true", path);
            goto fail;
        }
        errmsg_set(err, errlen, "%s: unexpected tensor \"%s\" (not part of a %s model with this config)",
             path, t->name, cfg.arch == MODEL_ARCH_QWEN2 ? "Qwen2" : "Llama");
        goto fail;
    }
    model_params_changed(m);
    free(host);
    st_close(f);
    return m;
fail:
    free(host);
    free(tmp);
    st_close(f);
    model_free(m);
    return NULL;
}

int model_dir_create(const char *dir, char *err, size_t errlen)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) && errno != EEXIST) goto fail;
        *p = '/';
    }
    if (mkdir(buf, 0755) && errno != EEXIST) goto fail;
    return 0;
fail:
    errmsg_set(err, errlen, "cannot create directory %s: %s", buf, strerror(errno));
    return -1;
}

static int save_views(const struct model *m, const float *host, const char *prefix,
                      const char *path, enum st_dtype dtype, char *err, size_t errlen)
{
    struct st_entry *e = calloc((size_t)m->n_views, sizeof *e);
    char (*names)[128] = calloc((size_t)m->n_views, sizeof *names);
    if (!e || !names) { free(e); free(names); errmsg_set(err, errlen, "out of memory"); return -1; }
    for (int i = 0; i < m->n_views; i++) {
        const struct param_view *v = &m->views[i];
        snprintf(names[i], sizeof names[i], "%s%s", prefix, v->name);
        e[i].name = names[i];
        e[i].ndim = v->ndim;
        e[i].shape[0] = v->shape[0];
        e[i].shape[1] = v->shape[1];
        e[i].data = host + v->offset;
    }
    int rc = st_write(path, e, m->n_views, dtype, err, errlen);
    free(e);
    free(names);
    return rc;
}

static float *download_all(const struct model *m, const float *buf)
{
    float *host = malloc(m->n_params * sizeof(float));
    if (host) m->be->download(host, buf, m->n_params * sizeof(float));
    return host;
}

int model_save(const struct model *m, const char *dir, enum st_dtype dtype,
               char *err, size_t errlen)
{
    char path[4096];
    if (m->matrices_discarded) {
        errmsg_set(err, errlen, "the model's matrices were discarded (a serving-only model)");
        return -1;
    }
    if (model_dir_create(dir, err, errlen)) return -1;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (config_save(&m->cfg, path, dtype == ST_BF16 ? "bfloat16" : "float32", err, errlen))
        return -1;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    float *host = download_all(m, m->params);
    if (!host) { errmsg_set(err, errlen, "out of memory"); return -1; }
    int rc = save_views(m, host, "", path, dtype, err, errlen);
    free(host);
    return rc;
}

int model_save_buffer(const struct model *m, const float *buf, const char *prefix,
                      const char *path, char *err, size_t errlen)
{
    float *host = download_all(m, buf);
    if (!host) { errmsg_set(err, errlen, "out of memory"); return -1; }
    int rc = save_views(m, host, prefix, path, ST_F32, err, errlen);
    free(host);
    return rc;
}

int model_load_buffer(const struct model *m, float *buf, const char *prefix,
                      const char *path, char *err, size_t errlen)
{
    struct st_file *f = st_open(path, err, errlen);
    if (!f) return -1;
    /* every tensor checked before buf is touched (a bad file changes
     * nothing), then each through one buffer, as model_load */
    int rc = -1;
    const struct st_tensor **ts = calloc((size_t)m->n_views, sizeof *ts);
    float *host = malloc(largest_view(m) * sizeof(float));
    if (!ts || !host) { errmsg_set(err, errlen, "out of memory"); goto out; }
    for (int i = 0; i < m->n_views; i++) {
        const struct param_view *v = &m->views[i];
        char name[160];
        snprintf(name, sizeof name, "%s%s", prefix, v->name);
        ts[i] = st_find(f, name);
        if (!ts[i] || ts[i]->numel != v->numel) {
            errmsg_set(err, errlen, "%s: tensor \"%s\" is %s", path, name,
                 ts[i] ? "the wrong size" : "missing");
            goto out;
        }
    }
    for (int i = 0; i < m->n_views; i++) {
        st_to_f32(ts[i], host);
        m->be->upload(buf + m->views[i].offset, host, m->views[i].numel * sizeof(float));
        st_release(ts[i]);
    }
    rc = 0;
out:
    free(ts);
    free(host);
    st_close(f);
    return rc;
}

int model_optimizer_save(const struct model *m, const char *dir, char *err, size_t errlen)
{
    char path[4096];
    if (!m->adam_m) { errmsg_set(err, errlen, "%s: no optimizer state to save", dir); return -1; }
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    if (model_save_buffer(m, m->adam_m, "exp_avg.", path, err, errlen)) return -1;
    snprintf(path, sizeof path, "%s/optimizer_v.safetensors", dir);
    return model_save_buffer(m, m->adam_v, "exp_avg_sq.", path, err, errlen);
}

int model_optimizer_load(struct model *m, const char *dir, int adam_step, char *err, size_t errlen)
{
    char path[4096];
    if (!m->adam_m) {
        m->adam_m = m->be->alloc(m->n_params * sizeof(float));
        m->adam_v = m->be->alloc(m->n_params * sizeof(float));
        if (!m->adam_m || !m->adam_v) { errmsg_set(err, errlen, "out of memory"); return -1; }
    }
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    if (model_load_buffer(m, m->adam_m, "exp_avg.", path, err, errlen)) return -1;
    snprintf(path, sizeof path, "%s/optimizer_v.safetensors", dir);
    if (model_load_buffer(m, m->adam_v, "exp_avg_sq.", path, err, errlen)) return -1;
    m->adam_t = adam_step;
    return 0;
}

static int copy_file(const char *src, const char *dst)
{
    FILE *in = fopen(src, "rb");
    if (!in) return 1;      /* absent: nothing to copy */
    FILE *out = fopen(dst, "wb");
    if (!out) { fclose(in); return -1; }
    char buf[65536];
    size_t k;
    int rc = 0;
    while ((k = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, k, out) != k) rc = -1;
    fclose(in);
    if (fclose(out)) rc = -1;
    return rc;
}

int model_save_dir_from(const struct model *m, const char *src_dir, const char *dir,
                               char *err, size_t errlen)
{
    if (model_save(m, dir, ST_F32, err, errlen)) return -1;
    static const char *files[] = {"tokenizer.json", "tokenizer_config.json",
                                  "chat_template.jinja", "chat_template.name",
                                  "chat_template.json", "generation_config.json"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char a[4096], b[4096];
        snprintf(a, sizeof a, "%s/%s", src_dir, files[i]);
        snprintf(b, sizeof b, "%s/%s", dir, files[i]);
        if (strcmp(a, b) != 0 && copy_file(a, b) < 0) {
            errmsg_set(err, errlen, "cannot copy %s to %s", a, b);
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------ activations */

/* Activations sized for at least B x T. Buffers are laid out with the
 * current B and T, so any shape up to the capacity reuses them: trainers
 * with ragged batches (GRPO, eval, SFT without packing) allocate once. */
static int acts_ensure(struct model *m, int B, int T)
{
    struct model_acts *a = &m->acts;
    if (a->residual && B <= a->cap_B && T <= a->cap_T) {
        a->B = B;
        a->T = T;
        return 0;
    }
    const int want_B = B > a->cap_B ? B : a->cap_B, want_T = T > a->cap_T ? T : a->cap_T;
    acts_free(m);
    B = want_B;
    T = want_T;
    const struct model_config *c = &m->cfg;
    const size_t N = (size_t)B * T, C = (size_t)c->hidden_size, L = (size_t)c->n_layers;
    const size_t I = (size_t)c->intermediate_size, Q = (size_t)m->qkv_dim;
    const size_t AH = (size_t)c->n_heads * c->head_dim;
    const size_t att = (size_t)B * c->n_heads * T * T;
    a->logits_rows = N < MODEL_LOGITS_CHUNK ? N : MODEL_LOGITS_CHUNK;
    struct { float **p; size_t n; } want[] = {
        {&a->residual, (L + 1) * N * C}, {&a->res2, L * N * C},
        {&a->ln1, L * N * C}, {&a->ln2, L * N * C},
        {&a->rstd1, L * N}, {&a->rstd2, L * N},
        {&a->qkv, L * N * Q}, {&a->rope, N * (size_t)c->head_dim},
        {&a->att, L * att}, {&a->atty, L * N * AH},
        {&a->gate, L * N * I}, {&a->up, L * N * I}, {&a->h, L * N * I},
        {&a->lnf, N * C}, {&a->rstdf, N}, {&a->lse, N},
        {&a->dres, N * C}, {&a->dln, N * C}, {&a->datty, N * AH},
        {&a->dqkv, N * Q}, {&a->dh, N * I}, {&a->dgate, N * I}, {&a->dup, N * I},
        {&a->logits, a->logits_rows * (size_t)c->vocab_size},
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        *want[i].p = m->be->alloc(want[i].n * sizeof(float));
        if (!*want[i].p) { acts_free(m); return -1; }
    }
    a->tokens = m->be->alloc(N * sizeof(int32_t));
    a->pos = m->be->alloc(N * sizeof(int32_t));
    a->seg = m->be->alloc(N * sizeof(int32_t));
    if (!a->tokens || !a->pos || !a->seg) { acts_free(m); return -1; }
    a->B = a->cap_B = B;
    a->T = a->cap_T = T;
    return 0;
}

size_t model_discard_matrices(struct model *m)
{
    if (!m->be->discard) return 0;
    size_t bytes = 0;
    for (int i = 0; i < m->n_views; i++) {
        const struct param_view *v = &m->views[i];
        if (v->ndim != 2 || v->offset == m->wte) continue;
        m->be->discard(m->params + v->offset, v->numel * sizeof(float));
        bytes += v->numel * sizeof(float);
    }
    m->matrices_discarded = true;
    return bytes;
}

/* ---------------------------------------------------------------- forward */

int model_forward(struct model *m, const int32_t *tokens, const int32_t *pos,
                  int B, int T, char *err, size_t errlen)
{
    return model_forward_segmented(m, tokens, pos, NULL, B, T, err, errlen);
}

int model_forward_segmented(struct model *m, const int32_t *tokens, const int32_t *pos,
                            const int32_t *seg, int B, int T, char *err, size_t errlen)
{
    const struct model_config *c = &m->cfg;
    const struct backend *be = m->be;
    const int N = B * T, C = c->hidden_size, V = c->vocab_size, I = c->intermediate_size;
    const int NH = c->n_heads, NKV = c->n_kv_heads, HD = c->head_dim, Q = m->qkv_dim;
    const int AH = NH * HD;
    if (m->matrices_discarded) {
        errmsg_set(err, errlen, "the model's matrices were discarded (a serving-only model)");
        return -1;
    }
    for (int i = 0; i < N; i++) {
        if (tokens[i] < 0 || tokens[i] >= V) {
            errmsg_set(err, errlen, "token %d at position %d is outside the vocabulary (%d)",
                 tokens[i], i, V);
            return -1;
        }
        /* a start after the token would read keys it may not see; before 0,
         * outside the row */
        if (seg && (seg[i] < 0 || seg[i] > i % T)) {
            errmsg_set(err, errlen, "document start %d of row %d, token %d is outside 0..%d",
                       seg[i], i / T, i % T, i % T);
            return -1;
        }
    }
    if (acts_ensure(m, B, T) || (m->acts.B = B, m->acts.T = T, 0)) {
        errmsg_set(err, errlen, "out of memory for activations of %d x %d tokens", B, T);
        return -1;
    }
    struct model_acts *a = &m->acts;
    int32_t *hpos = malloc((size_t)N * sizeof(int32_t));
    if (!hpos) { errmsg_set(err, errlen, "out of memory"); return -1; }
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            hpos[b * T + t] = pos ? pos[b * T + t] : t;
    be->upload(a->pos, hpos, (size_t)N * sizeof(int32_t));
    be->upload(a->tokens, tokens, (size_t)N * sizeof(int32_t));
    if (seg) be->upload(a->seg, seg, (size_t)N * sizeof(int32_t));
    free(hpos);

    const float *P = m->params;
    be->rope_cos_sin(a->rope, a->pos, m->inv_freq, N, HD);
    be->embedding_forward(a->residual, a->tokens, P + m->wte, N, C);
    for (int l = 0; l < c->n_layers; l++) {
        const struct layer_offsets *lo = &m->layers[l];
        float *x = a->residual + (size_t)l * N * C;
        float *xo = x + (size_t)N * C;
        float *ln1 = a->ln1 + (size_t)l * N * C, *ln2 = a->ln2 + (size_t)l * N * C;
        float *qkv = a->qkv + (size_t)l * N * Q, *atty = a->atty + (size_t)l * N * AH;
        float *att = a->att + (size_t)l * B * NH * T * T;
        float *res2 = a->res2 + (size_t)l * N * C;
        float *gate = a->gate + (size_t)l * N * I, *up = a->up + (size_t)l * N * I;
        float *h = a->h + (size_t)l * N * I;

        be->rmsnorm_forward(ln1, a->rstd1 + (size_t)l * N, x, P + lo->ln1, c->rms_norm_eps, N, C);
        be->matmul_forward(qkv, ln1, P + lo->wqkv,
                           lo->bqkv == (size_t)-1 ? NULL : P + lo->bqkv, N, C, Q, 0.0f);
        /* q then k heads, adjacent in a qkv row: rotated in one pass */
        be->rope_forward(qkv, a->rope, N, NH + NKV, HD, Q);
        be->attention_forward(atty, att, qkv, Q, qkv + AH, Q, qkv + AH + NKV * HD, Q,
                              seg ? a->seg : NULL, B, T, NH, NKV, HD);
        be->matmul_forward(res2, atty, P + lo->wo,
                           lo->bo == (size_t)-1 ? NULL : P + lo->bo, N, AH, C, 0.0f);
        be->add(res2, res2, x, (size_t)N * C);
        be->rmsnorm_forward(ln2, a->rstd2 + (size_t)l * N, res2, P + lo->ln2, c->rms_norm_eps, N, C);
        be->matmul_forward(gate, ln2, P + lo->wg, NULL, N, C, I, 0.0f);
        be->matmul_forward(up, ln2, P + lo->wu, NULL, N, C, I, 0.0f);
        be->swiglu_forward(h, gate, up, N, I);
        be->matmul_forward(xo, h, P + lo->wd, NULL, N, I, C, 0.0f);
        be->add(xo, xo, res2, (size_t)N * C);
    }
    be->rmsnorm_forward(a->lnf, a->rstdf, a->residual + (size_t)c->n_layers * N * C,
                        P + m->lnf_w, c->rms_norm_eps, N, C);
    return 0;
}

void model_logits(struct model *m, int row0, int nrows, float *out)
{
    const int C = m->cfg.hidden_size, V = m->cfg.vocab_size;
    m->be->matmul_forward(out, m->acts.lnf + (size_t)row0 * C, m->params + m->lm_head,
                          NULL, nrows, C, V, 0.0f);
}

void model_logprobs_stats(struct model *m, const int32_t *targets, float *out,
                          float *entropy, int32_t *argmax)
{
    struct model_acts *a = &m->acts;
    const int N = a->B * a->T, V = m->cfg.vocab_size, R = (int)a->logits_rows;
    float *host = NULL, *lse = NULL;
    if (entropy || argmax) {
        host = malloc((size_t)R * V * sizeof(float));
        lse = malloc((size_t)R * sizeof(float));
        if (!host || !lse) { free(host); free(lse); host = lse = NULL; }
    }
    for (int r0 = 0; r0 < N; r0 += R) {
        int n = N - r0 < R ? N - r0 : R;
        model_logits(m, r0, n, a->logits);
        m->be->logprob_forward(out + r0, a->lse + r0, a->logits, targets + r0, n, V);
        if (!host) continue;
        m->be->download(host, a->logits, (size_t)n * V * sizeof(float));
        m->be->download(lse, a->lse + r0, (size_t)n * sizeof(float));
        /* H = lse - sum_v p_v * z_v, p_v = exp(z_v - lse) */
        #pragma omp parallel for schedule(static)
        for (int i = 0; i < n; i++) {
            const float *z = host + (size_t)i * V;
            double s = 0;
            int best = 0;
            for (int v = 0; v < V; v++) {
                s += exp((double)z[v] - lse[i]) * z[v];
                if (z[v] > z[best]) best = v;
            }
            if (entropy) entropy[r0 + i] = (float)(lse[i] - s);
            if (argmax) argmax[r0 + i] = best;
        }
    }
    free(host);
    free(lse);
}

void model_logprobs(struct model *m, const int32_t *targets, float *out)
{
    model_logprobs_stats(m, targets, out, NULL, NULL);
}

/* --------------------------------------------------------------- backward */

int model_grads_alloc(struct model *m)
{
    if (m->grads) return 0;
    m->grads = m->be->alloc(m->n_params * sizeof(float));
    return m->grads ? 0 : -1;
}

void model_grads_zero(struct model *m)
{
    if (m->grads) m->be->zero(m->grads, m->n_params * sizeof(float));
}

/* How a chunk of logits (rows [r0, r0+n) in m->acts.logits) becomes
 * d loss / d logits, in place. */
typedef void model_dlogits_fn(struct model *m, int r0, int n, void *ctx);

struct dlogprob_ctx {
    const int32_t *targets;
    const float *dlogprob;
};

static void dlogits_of_logprobs(struct model *m, int r0, int n, void *ctx)
{
    const struct dlogprob_ctx *d = ctx;
    m->be->logprob_backward(m->acts.logits, m->acts.lse + r0, d->targets + r0, d->dlogprob + r0, n,
                            m->cfg.vocab_size);
}

/* The backward pass through the whole model, the logits' gradient chunk by
 * chunk from dlogits. */
static void backward_with(struct model *m, model_dlogits_fn *dlogits, void *ctx)
{
    const struct model_config *c = &m->cfg;
    const struct backend *be = m->be;
    struct model_acts *a = &m->acts;
    const int B = a->B, T = a->T, N = B * T, C = c->hidden_size, V = c->vocab_size;
    const int I = c->intermediate_size, NH = c->n_heads, NKV = c->n_kv_heads;
    const int HD = c->head_dim, Q = m->qkv_dim, AH = NH * HD, R = (int)a->logits_rows;
    const float *P = m->params;
    float *G = m->grads;

    /* lm_head and the final norm: logits are recomputed chunk by chunk. */
    be->zero(a->dln, (size_t)N * C * sizeof(float));
    for (int r0 = 0; r0 < N; r0 += R) {
        int n = N - r0 < R ? N - r0 : R;
        model_logits(m, r0, n, a->logits);
        dlogits(m, r0, n, ctx);
        be->matmul_backward(a->dln + (size_t)r0 * C, G + m->lm_head, NULL, a->logits,
                            a->lnf + (size_t)r0 * C, P + m->lm_head, n, C, V);
    }
    be->zero(a->dres, (size_t)N * C * sizeof(float));
    be->rmsnorm_backward(a->dres, G + m->lnf_w, a->dln,
                         a->residual + (size_t)c->n_layers * N * C, P + m->lnf_w,
                         a->rstdf, N, C);

    for (int l = c->n_layers - 1; l >= 0; l--) {
        const struct layer_offsets *lo = &m->layers[l];
        const float *x = a->residual + (size_t)l * N * C;
        const float *ln1 = a->ln1 + (size_t)l * N * C, *ln2 = a->ln2 + (size_t)l * N * C;
        const float *qkv = a->qkv + (size_t)l * N * Q, *atty = a->atty + (size_t)l * N * AH;
        const float *att = a->att + (size_t)l * B * NH * T * T;
        const float *res2 = a->res2 + (size_t)l * N * C;
        const float *gate = a->gate + (size_t)l * N * I, *up = a->up + (size_t)l * N * I;
        const float *h = a->h + (size_t)l * N * I;

        /* MLP: dres holds d(out); it becomes d(res2) after the norm. */
        be->zero(a->dh, (size_t)N * I * sizeof(float));
        be->matmul_backward(a->dh, G + lo->wd, NULL, a->dres, h, P + lo->wd, N, I, C);
        be->zero(a->dgate, (size_t)N * I * sizeof(float));
        be->zero(a->dup, (size_t)N * I * sizeof(float));
        be->swiglu_backward(a->dgate, a->dup, a->dh, gate, up, N, I);
        be->zero(a->dln, (size_t)N * C * sizeof(float));
        be->matmul_backward(a->dln, G + lo->wg, NULL, a->dgate, ln2, P + lo->wg, N, C, I);
        be->matmul_backward(a->dln, G + lo->wu, NULL, a->dup, ln2, P + lo->wu, N, C, I);
        be->rmsnorm_backward(a->dres, G + lo->ln2, a->dln, res2, P + lo->ln2,
                             a->rstd2 + (size_t)l * N, N, C);

        /* Attention: dres holds d(res2); it becomes d(x). */
        be->zero(a->datty, (size_t)N * AH * sizeof(float));
        be->matmul_backward(a->datty, G + lo->wo, lo->bo == (size_t)-1 ? NULL : G + lo->bo,
                            a->dres, atty, P + lo->wo, N, AH, C);
        be->zero(a->dqkv, (size_t)N * Q * sizeof(float));
        be->attention_backward(a->dqkv, a->dqkv + AH, a->dqkv + AH + NKV * HD, a->datty, att,
                               qkv, qkv + AH, qkv + AH + NKV * HD, Q, Q, Q, B, T, NH, NKV, HD);
        be->rope_backward(a->dqkv, a->rope, N, NH + NKV, HD, Q);
        be->zero(a->dln, (size_t)N * C * sizeof(float));
        be->matmul_backward(a->dln, G + lo->wqkv, lo->bqkv == (size_t)-1 ? NULL : G + lo->bqkv,
                            a->dqkv, ln1, P + lo->wqkv, N, C, Q);
        be->rmsnorm_backward(a->dres, G + lo->ln1, a->dln, x, P + lo->ln1,
                             a->rstd1 + (size_t)l * N, N, C);
    }
    be->embedding_backward(G + m->wte, a->dres, a->tokens, N, C);
}

void model_backward(struct model *m, const int32_t *targets, const float *dlogprob)
{
    struct dlogprob_ctx d = {targets, dlogprob};
    backward_with(m, dlogits_of_logprobs, &d);
}

struct kd_ctx {
    struct model *teacher;
    const float *w;
    float beta, tau;
    float *zs, *zt, *scale, *loss;  /* host: the chunk's weighted rows, packed */
    int *rows;
    double sum;                     /* sum of w * divergence */
};

/* The chunk's rows of nonzero weight, gathered with the teacher's logits
 * of the same rows, go through kd_divergence_rows; the others get a zero
 * gradient. */
static void dlogits_of_kd(struct model *m, int r0, int n, void *ctx)
{
    struct kd_ctx *k = ctx;
    const struct backend *be = m->be;
    const size_t V = (size_t)m->cfg.vocab_size, row = V * sizeof(float);
    float *tl = k->teacher->acts.logits;
    int na = 0;
    for (int i = 0; i < n; i++)
        if (k->w[r0 + i] != 0) k->rows[na++] = i;
    if (na) {
        /* the teacher's logits of the same chunk, in its own buffer */
        model_logits(k->teacher, r0, n, tl);
        for (int j = 0; j < na; j++) {
            be->download(k->zs + j * V, m->acts.logits + k->rows[j] * V, row);
            k->teacher->be->download(k->zt + j * V, tl + k->rows[j] * V, row);
            k->scale[j] = k->w[r0 + k->rows[j]];
        }
        kd_divergence_rows(k->zs, k->zt, na, (int)V, k->beta, k->tau, k->loss, k->zs, k->scale);
        for (int j = 0; j < na; j++) k->sum += (double)k->scale[j] * k->loss[j];
    }
    be->zero(m->acts.logits, (size_t)n * row);
    for (int j = 0; j < na; j++) be->upload(m->acts.logits + k->rows[j] * V, k->zs + j * V, row);
}

double model_backward_kd(struct model *m, struct model *teacher, const float *w, float beta,
                         float tau)
{
    const int R = (int)m->acts.logits_rows;
    const size_t V = (size_t)m->cfg.vocab_size;
    struct kd_ctx k = {.teacher = teacher, .w = w, .beta = beta, .tau = tau};
    k.zs = malloc((size_t)R * V * sizeof(float));
    k.zt = malloc((size_t)R * V * sizeof(float));
    k.scale = malloc((size_t)R * sizeof(float));
    k.loss = malloc((size_t)R * sizeof(float));
    k.rows = malloc((size_t)R * sizeof(int));
    const bool ok = k.zs && k.zt && k.scale && k.loss && k.rows;
    if (ok) backward_with(m, dlogits_of_kd, &k);
    free(k.zs); free(k.zt); free(k.scale); free(k.loss); free(k.rows);
    return ok ? k.sum : NAN;
}

/* -------------------------------------------------------------- optimizer */

float model_grads_clip(struct model *m, float max_norm)
{
    float norm = (float)sqrt(m->be->sumsq(m->grads, m->n_params));
    if (max_norm > 0 && norm > max_norm && isfinite(norm))
        m->be->scale(m->grads, max_norm / (norm + 1e-6f), m->n_params);
    return norm;
}

int model_adamw_step(struct model *m, float lr, float beta1, float beta2,
                     float eps, float weight_decay)
{
    if (!m->adam_m) {
        m->adam_m = m->be->alloc(m->n_params * sizeof(float));
        m->adam_v = m->be->alloc(m->n_params * sizeof(float));
        if (!m->adam_m || !m->adam_v) return -1;
    }
    m->adam_t++;
    for (int i = 0; i < m->n_views; i++) {
        const struct param_view *v = &m->views[i];
        m->be->adamw(m->params + v->offset, m->grads + v->offset, m->adam_m + v->offset,
                     m->adam_v + v->offset, v->numel, lr, beta1, beta2, eps,
                     v->decay ? weight_decay : 0.0f, m->adam_t);
    }
    model_params_changed(m);
    return 0;
}

/* ----------------------------------------------------------------- helpers */

/* Matmul FLOPs: 2 per multiply-add, x3 for forward + backward (dinp and
 * dweight), per parameter of every matrix used in a matmul (embedding
 * lookup excluded, lm_head included even when tied). Attention: QK^T and
 * AV are 2*T*T*HD each per head forward, halved for the causal mask, x3
 * for backward: 6*T*T*HD*NH per sequence per layer (the convention of the
 * PaLM / llm.c MFU estimates, counting the causal half). */
double model_matmul_params(const struct model_config *c)
{
    const double C = c->hidden_size, HD = c->head_dim, I = c->intermediate_size;
    const double qkv = (c->n_heads + 2.0 * c->n_kv_heads) * HD;
    const double per_layer = C * qkv + c->n_heads * HD * C + 3.0 * C * I;
    return c->n_layers * per_layer + (double)c->vocab_size * C;
}

double model_train_flops(const struct model_config *c, int B, int T)
{
    const double HD = c->head_dim, tokens = (double)B * T;
    return 6.0 * model_matmul_params(c) * tokens +
           6.0 * c->n_layers * (double)B * T * T * HD * c->n_heads;
}

int model_shift_targets(const int32_t *tokens, int B, int T, int32_t *targets)
{
    int count = 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            targets[b * T + t] = t + 1 < T ? tokens[b * T + t + 1] : -1;
            count += t + 1 < T;
        }
    return count;
}
