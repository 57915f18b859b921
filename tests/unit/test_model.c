/* tests/unit/test_model.c — the whole model: finite-difference gradients,
 * parity with the PyTorch reference (tests/ref/gen_model.py) for logits and
 * every parameter gradient, checkpoint round trips, and checkpoint errors. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kd_loss.h"
#include "model.h"
#include "proc_status.h"
#include "rng.h"
#include "tests/ref_io.h"

#define FIXTURES "tests/ref/fixtures"

static struct model_config small_cfg(bool qwen)
{
    struct model_config c;
    memset(&c, 0, sizeof c);
    c.arch = qwen ? MODEL_ARCH_QWEN2 : MODEL_ARCH_LLAMA;
    c.vocab_size = 23;
    c.hidden_size = 16;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = qwen ? 2 : 1;
    c.head_dim = qwen ? 4 : 6;
    c.intermediate_size = 20;
    c.max_position_embeddings = 64;
    c.rope_theta = 10000;
    c.rms_norm_eps = 1e-6f;
    c.tie_word_embeddings = qwen;
    c.qkv_bias = qwen;
    c.o_bias = false;
    c.bos_token_id = c.eos_token_id = -1;
    return c;
}

/* Mean next-token cross-entropy in double from the model's log-probs. */
static double model_loss(struct model *m, const int32_t *tok, const int32_t *tgt,
                         int B, int T, float *lp)
{
    char err[256];
    cr_assert_eq(model_forward(m, tok, NULL, B, T, err, sizeof err), 0, "%s", err);
    model_logprobs(m, tgt, lp);
    double s = 0;
    int n = 0;
    for (int i = 0; i < B * T; i++)
        if (tgt[i] >= 0) { s -= lp[i]; n++; }
    return s / n;
}

static void fd_check(bool qwen)
{
    struct model_config cfg = small_cfg(qwen);
    char err[256];
    struct model *m = model_new(&cfg, backend_cpu(), err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    model_init_random(m, 3, 0.3f);
    /* random norms and biases too, so that their gradients are exercised */
    struct rng r;
    rng_seed(&r, 11);
    for (int i = 0; i < m->n_views; i++)
        if (m->views[i].ndim == 1)
            for (size_t j = 0; j < m->views[i].numel; j++)
                m->params[m->views[i].offset + j] += (float)(0.2 * rng_normal(&r));
    enum { B = 2, T = 6 };
    int32_t tok[B * T], tgt[B * T];
    for (int i = 0; i < B * T; i++) tok[i] = (int32_t)rng_below(&r, (uint64_t)cfg.vocab_size);
    int count = model_shift_targets(tok, B, T, tgt);
    float lp[B * T], dlp[B * T];
    for (int i = 0; i < B * T; i++) dlp[i] = -1.0f / (float)count;
    cr_assert_eq(model_grads_alloc(m), 0);
    model_loss(m, tok, tgt, B, T, lp);
    model_backward(m, tgt, dlp);
    int checked = 0, bad = 0;
    for (int i = 0; i < m->n_views; i++) {
        const struct param_view *v = &m->views[i];
        for (int k = 0; k < 3; k++) {
            size_t j = v->offset + rng_below(&r, v->numel);
            float save = m->params[j];
            const float h = 1e-2f;
            m->params[j] = save + h;
            double lp1 = model_loss(m, tok, tgt, B, T, lp);
            m->params[j] = save - h;
            double lm1 = model_loss(m, tok, tgt, B, T, lp);
            m->params[j] = save;
            double num = (lp1 - lm1) / (2.0 * h), ana = m->grads[j];
            checked++;
            if (fabs(num - ana) > 2e-3 + 3e-2 * fabs(num)) {
                bad++;
                fprintf(stderr, "%s[%zu]: analytic %.6g numeric %.6g\n", v->name,
                        j - v->offset, ana, num);
            }
        }
    }
    cr_assert_eq(bad, 0, "%d of %d finite-difference checks failed", bad, checked);
    model_free(m);
}

/* The distillation loss sum_i w_i D(student_i, teacher_i) in double, from
 * both models' logits (teacher run on the same tokens). */
static double kd_model_loss(struct model *m, struct model *t, const int32_t *tok, int B, int T,
                            const float *w, float beta, float tau)
{
    char err[256];
    const int N = B * T, V = m->cfg.vocab_size;
    cr_assert_eq(model_forward(m, tok, NULL, B, T, err, sizeof err), 0, "%s", err);
    cr_assert_eq(model_forward(t, tok, NULL, B, T, err, sizeof err), 0, "%s", err);
    float *zs = malloc((size_t)N * V * sizeof *zs), *zt = malloc((size_t)N * V * sizeof *zt);
    float *loss = malloc((size_t)N * sizeof *loss);
    model_logits(m, 0, N, zs);
    model_logits(t, 0, N, zt);
    kd_divergence_rows(zs, zt, N, V, beta, tau, loss, NULL, NULL);
    double s = 0;
    for (int i = 0; i < N; i++) s += (double)w[i] * loss[i];
    free(zs); free(zt); free(loss);
    return s;
}

/* model_backward_kd through the whole student against central differences,
 * for forward KL, reverse KL and a JSD at temperature 0.8; rows of weight 0
 * (a prompt) add nothing. The teacher is another random model. */
Test(model, finite_difference_distillation)
{
    struct model_config cfg = small_cfg(true);
    char err[256];
    struct model *m = model_new(&cfg, backend_cpu(), err, sizeof err);
    struct model *t = model_new(&cfg, backend_cpu(), err, sizeof err);
    cr_assert(m && t, "%s", err);
    model_init_random(m, 3, 0.3f);
    model_init_random(t, 5, 0.5f);
    enum { B = 2, T = 5 };
    struct rng r;
    rng_seed(&r, 13);
    int32_t tok[B * T];
    float w[B * T];
    for (int i = 0; i < B * T; i++) {
        tok[i] = (int32_t)rng_below(&r, (uint64_t)cfg.vocab_size);
        w[i] = i % T < 2 ? 0.0f : 1.0f / 6;
    }
    cr_assert_eq(model_grads_alloc(m), 0);
    const float betas[] = {0.0f, 1.0f, 0.3f}, taus[] = {1.0f, 1.0f, 0.8f};
    int checked = 0, bad = 0;
    for (int c = 0; c < 3; c++) {
        double l0 = kd_model_loss(m, t, tok, B, T, w, betas[c], taus[c]);
        model_grads_zero(m);
        double got = model_backward_kd(m, t, w, betas[c], taus[c]);
        cr_assert(fabs(got - l0) <= 1e-6 + 1e-5 * fabs(l0), "loss %g, recomputed %g", got, l0);
        for (int i = 0; i < m->n_views; i++) {
            const struct param_view *v = &m->views[i];
            for (int k = 0; k < 2; k++) {
                size_t j = v->offset + rng_below(&r, v->numel);
                const float save = m->params[j], h = 1e-2f;
                m->params[j] = save + h;
                double lp1 = kd_model_loss(m, t, tok, B, T, w, betas[c], taus[c]);
                m->params[j] = save - h;
                double lm1 = kd_model_loss(m, t, tok, B, T, w, betas[c], taus[c]);
                m->params[j] = save;
                double num = (lp1 - lm1) / (2.0 * h), ana = m->grads[j];
                checked++;
                if (fabs(num - ana) > 2e-4 + 3e-2 * fabs(num)) {
                    bad++;
                    fprintf(stderr, "beta %g %s[%zu]: analytic %.6g numeric %.6g\n", betas[c], v->name,
                            j - v->offset, ana, num);
                }
            }
        }
    }
    cr_assert_eq(bad, 0, "%d of %d finite-difference checks failed", bad, checked);
    model_free(m);
    model_free(t);
}

Test(model, finite_difference_qwen2_style) { fd_check(true); }
Test(model, finite_difference_llama_style) { fd_check(false); }

/* Loads a fixture model, runs forward + backward on its tokens and
 * compares logits, loss and every gradient with the PyTorch reference. */
static void ref_check(const char *name)
{
    char dir[256], path[300], err[512];
    snprintf(dir, sizeof dir, FIXTURES "/%s", name);
    snprintf(path, sizeof path, "%s/ref.ref", dir);
    struct ref_file *rf = ref_file_load(path, err, sizeof err);
    cr_assert_not_null(rf, "%s", err);
    struct model *m = model_load(dir, backend_cpu(), err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    const struct ref_tensor *rt = ref_file_get(rf, "tokens");
    cr_assert_not_null(rt);
    const int T = (int)rt->numel, V = m->cfg.vocab_size;
    const int32_t *tok = rt->data;
    cr_assert_eq(model_forward(m, tok, NULL, 1, T, err, sizeof err), 0, "%s", err);
    float *logits = malloc((size_t)T * V * sizeof(float));
    model_logits(m, 0, T, logits);
    const struct ref_tensor *rl = ref_file_get(rf, "logits");
    cr_assert_eq(rl->numel, (size_t)T * V);
    cr_expect_eq(ref_compare("logits", logits, rl->data, rl->numel, 2e-4f, 1e-3f, NULL), 0,
                 "%s: logits differ from PyTorch", name);

    int32_t *tgt = malloc((size_t)T * sizeof *tgt);
    float *lp = malloc((size_t)T * sizeof *lp), *dlp = malloc((size_t)T * sizeof *dlp);
    int count = model_shift_targets(tok, 1, T, tgt);
    for (int i = 0; i < T; i++) dlp[i] = -1.0f / (float)count;
    model_logprobs(m, tgt, lp);
    float loss = 0;
    for (int i = 0; i < T; i++) loss -= lp[i] / (float)count;
    const float *rloss = ref_file_get(rf, "loss")->data;
    cr_expect(fabsf(loss - rloss[0]) < 1e-4f + 1e-4f * fabsf(rloss[0]),
              "%s: loss %.7g vs PyTorch %.7g", name, loss, rloss[0]);
    cr_assert_eq(model_grads_alloc(m), 0);
    model_backward(m, tgt, dlp);
    int compared = 0;
    for (int i = 0; i < m->n_views; i++) {
        const struct param_view *v = &m->views[i];
        char key[160];
        snprintf(key, sizeof key, "grad.%s", v->name);
        const struct ref_tensor *g = ref_file_get(rf, key);
        cr_assert_not_null(g, "%s: reference has no %s", name, key);
        cr_assert_eq(g->numel, v->numel, "%s: %s size", name, key);
        float maxabs = 0;
        for (size_t j = 0; j < g->numel; j++)
            maxabs = fmaxf(maxabs, fabsf(((float *)g->data)[j]));
        /* Tolerance relative to the tensor's scale: fp32 accumulation
         * order differs from PyTorch's float64 reference. */
        cr_expect_eq(ref_compare(key, m->grads + v->offset, g->data, g->numel,
                                 1e-4f * maxabs + 1e-7f, 2e-3f, NULL), 0,
                     "%s: %s differs from PyTorch", name, key);
        compared++;
    }
    cr_expect_gt(compared, 10);

    /* The same weights stored as BF16 load to the bf16-rounded values. */
    char tmp[] = "/tmp/aha-bf16-XXXXXX";
    cr_assert_not_null(mkdtemp(tmp));
    char src[400], dst[400];
    snprintf(src, sizeof src, "%s/config.json", dir);
    snprintf(dst, sizeof dst, "%s/config.json", tmp);
    char *abs = realpath(src, NULL);
    cr_assert_not_null(abs, "%s missing", src);
    cr_assert_eq(symlink(abs, dst), 0);
    free(abs);
    snprintf(src, sizeof src, "%s/model-bf16.safetensors", dir);
    abs = realpath(src, NULL);
    cr_assert_not_null(abs, "%s missing", src);
    snprintf(dst, sizeof dst, "%s/model.safetensors", tmp);
    cr_assert_eq(symlink(abs, dst), 0);
    free(abs);
    struct model *mb = model_load(tmp, backend_cpu(), err, sizeof err);
    cr_assert_not_null(mb, "%s", err);
    cr_assert_eq(model_forward(mb, tok, NULL, 1, T, err, sizeof err), 0, "%s", err);
    model_logits(mb, 0, T, logits);
    const struct ref_tensor *rb = ref_file_get(rf, "logits_bf16");
    cr_expect_eq(ref_compare("logits_bf16", logits, rb->data, rb->numel, 2e-4f, 1e-3f, NULL), 0,
                 "%s: bf16 logits differ from PyTorch", name);
    model_free(mb);
    unlink(dst);
    snprintf(dst, sizeof dst, "%s/config.json", tmp);
    unlink(dst);
    rmdir(tmp);

    free(logits); free(tgt); free(lp); free(dlp);
    model_free(m);
    ref_file_free(rf);
}

Test(model, pytorch_parity_qwen2_tied) { ref_check("qwen2-tied"); }
Test(model, pytorch_parity_llama_gqa) { ref_check("llama-gqa"); }
Test(model, pytorch_parity_llama3_scaled) { ref_check("llama3-scaled"); }

static void rm_model_dir(const char *dir)
{
    char p[400];
    const char *files[] = {"config.json", "model.safetensors", "grads.safetensors"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

/* model_load goes tensor by tensor, releasing each from the file's mapping
 * once uploaded: its peak is the loaded model's own memory plus a tensor
 * or two (a host copy of all parameters beside the model, and the mapped
 * file, each added the parameters' size again). */
Test(model, load_holds_the_model_once)
{
    struct model_config cfg = small_cfg(false);
    cfg.hidden_size = 256;
    cfg.head_dim = 64;
    cfg.intermediate_size = 512;
    cfg.n_layers = 12;
    char err[512], dir[] = "/tmp/aha-peak-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    struct model *m = model_new(&cfg, backend_cpu(), err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    model_init_random(m, 3, 0.5f);
    cr_assert_eq(model_save(m, dir, ST_F32, err, sizeof err), 0, "%s", err);
    const double params = (double)m->n_params * sizeof(float);
    model_free(m);
    proc_reset_peak();
    const double before = proc_status_bytes("VmRSS");
    struct model *m2 = model_load(dir, backend_cpu(), err, sizeof err);
    cr_assert_not_null(m2, "%s", err);
    const double peak = proc_status_bytes("VmHWM") - before;
    const double kept = proc_status_bytes("VmRSS") - before;
    cr_expect(kept > 0.9 * params, "the model holds %.0f of %.0f bytes", kept, params);
    cr_expect(peak < kept + 0.2 * params,
              "loading peaked %.0f bytes above the loaded model's %.0f (parameters %.0f)",
              peak - kept, kept, params);
    model_free(m2);
    rm_model_dir(dir);
}

/* Optimizer state round-trips bitwise; a file missing one tensor (here
 * the last one written) is refused, naming it, before the state in memory
 * is touched. */
Test(model, optimizer_state_round_trip_and_refusal)
{
    struct model_config cfg = small_cfg(true);
    char err[512], dir[] = "/tmp/aha-opt-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    struct model *m = model_new(&cfg, backend_cpu(), err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    m->adam_m = m->be->alloc(m->n_params * sizeof(float));
    m->adam_v = m->be->alloc(m->n_params * sizeof(float));
    for (size_t i = 0; i < m->n_params; i++) {
        m->adam_m[i] = (float)i * 0.5f;
        m->adam_v[i] = (float)i * 0.25f;
    }
    cr_assert_eq(model_optimizer_save(m, dir, err, sizeof err), 0, "%s", err);
    struct model *m2 = model_new(&cfg, backend_cpu(), err, sizeof err);
    cr_assert_eq(model_optimizer_load(m2, dir, 7, err, sizeof err), 0, "%s", err);
    cr_expect_eq(memcmp(m2->adam_m, m->adam_m, m->n_params * sizeof(float)), 0);
    cr_expect_eq(memcmp(m2->adam_v, m->adam_v, m->n_params * sizeof(float)), 0);
    cr_expect_eq(m2->adam_t, 7);
    /* exp_avg without its last tensor */
    struct st_entry *e = calloc((size_t)m->n_views, sizeof *e);
    char (*names)[160] = calloc((size_t)m->n_views, sizeof *names);
    for (int i = 0; i < m->n_views; i++) {
        const struct param_view *v = &m->views[i];
        snprintf(names[i], sizeof names[i], "exp_avg.%s", v->name);
        e[i] = (struct st_entry){names[i], v->ndim, {v->shape[0], v->shape[1]},
                                 m->adam_m + v->offset};
    }
    char path[256];
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    cr_assert_eq(st_write(path, e, m->n_views - 1, ST_F32, err, sizeof err), 0, "%s", err);
    for (size_t i = 0; i < m->n_params; i++) m2->adam_m[i] = -1.0f;
    cr_expect_neq(model_optimizer_load(m2, dir, 8, err, sizeof err), 0);
    cr_expect(strstr(err, m->views[m->n_views - 1].name) && strstr(err, "missing"), "%s", err);
    size_t touched = 0;
    for (size_t i = 0; i < m->n_params; i++) touched += m2->adam_m[i] != -1.0f;
    cr_expect_eq(touched, 0, "%zu values of the state in memory changed", touched);
    free(e);
    free(names);
    model_free(m2);
    model_free(m);
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/optimizer_v.safetensors", dir);
    unlink(path);
    rmdir(dir);
}

Test(model, save_load_round_trip_is_bit_exact)
{
    for (int q = 0; q < 2; q++) {
        struct model_config cfg = small_cfg(q);
        char err[512], dir[] = "/tmp/aha-rt-XXXXXX";
        cr_assert_not_null(mkdtemp(dir));
        struct model *m = model_new(&cfg, backend_cpu(), err, sizeof err);
        model_init_random(m, 5, 0.5f);
        cr_assert_eq(model_save(m, dir, ST_F32, err, sizeof err), 0, "%s", err);
        struct model *m2 = model_load(dir, backend_cpu(), err, sizeof err);
        cr_assert_not_null(m2, "%s", err);
        cr_assert_eq(m2->n_params, m->n_params);
        cr_expect_eq(memcmp(m->params, m2->params, m->n_params * sizeof(float)), 0);
        cr_expect_eq(m2->cfg.tie_word_embeddings, cfg.tie_word_embeddings);
        cr_expect(!m2->bf16_weights, "F32 checkpoint taken for BF16");
        model_free(m2);
        /* BF16: every value is the round-to-nearest-even bf16 of the original */
        cr_assert_eq(model_save(m, dir, ST_BF16, err, sizeof err), 0, "%s", err);
        m2 = model_load(dir, backend_cpu(), err, sizeof err);
        cr_assert_not_null(m2, "%s", err);
        size_t bad = 0;
        for (size_t i = 0; i < m->n_params; i++)
            bad += m2->params[i] != bf16_to_f32(bf16_from_f32(m->params[i]));
        cr_expect_eq(bad, 0);
        cr_expect(m2->bf16_weights, "BF16 checkpoint not recognised as such");
        model_free(m2);
        model_free(m);
        rm_model_dir(dir);
    }
}

/* Writes a model whose safetensors has one tensor changed by `edit`, loads
 * it, and checks the error names the file and the tensor. */
static void expect_load_error(void (*edit)(struct st_entry *e, int *n, float *junk),
                              const char *want1, const char *want2)
{
    struct model_config cfg = small_cfg(true);
    char err[512], dir[] = "/tmp/aha-bad-XXXXXX", path[400];
    cr_assert_not_null(mkdtemp(dir));
    struct model *m = model_new(&cfg, backend_cpu(), err, sizeof err);
    model_init_random(m, 5, 0.5f);
    cr_assert_eq(model_save(m, dir, ST_F32, err, sizeof err), 0, "%s", err);
    struct st_entry *e = calloc((size_t)m->n_views + 1, sizeof *e);
    for (int i = 0; i < m->n_views; i++) {
        e[i].name = m->views[i].name;
        e[i].ndim = m->views[i].ndim;
        e[i].shape[0] = m->views[i].shape[0];
        e[i].shape[1] = m->views[i].shape[1];
        e[i].data = m->params + m->views[i].offset;
    }
    int n = m->n_views;
    float *junk = calloc(4096, sizeof(float));
    edit(e, &n, junk);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    cr_assert_eq(st_write(path, e, n, ST_F32, err, sizeof err), 0, "%s", err);
    struct model *m2 = model_load(dir, backend_cpu(), err, sizeof err);
    cr_expect_null(m2, "load should fail");
    cr_expect(strstr(err, "model.safetensors") != NULL, "error names the file: %s", err);
    cr_expect(strstr(err, want1) != NULL, "error \"%s\" should mention %s", err, want1);
    cr_expect(strstr(err, want2) != NULL, "error \"%s\" should mention %s", err, want2);
    model_free(m2);
    model_free(m);
    free(e);
    free(junk);
    rm_model_dir(dir);
}

static void drop_norm(struct st_entry *e, int *n, float *junk)
{
    for (int i = 0; i < *n; i++)
        if (strcmp(e[i].name, "model.norm.weight") == 0) {
            e[i] = e[--*n];
            return;
        }
}
static void add_extra(struct st_entry *e, int *n, float *junk)
{
    e[*n] = (struct st_entry){.name = "model.layers.9.mlp.up_proj.weight", .ndim = 1, .shape = {4}, .data = junk};
    ++*n;
}
static void reshape_q(struct st_entry *e, int *n, float *junk)
{
    for (int i = 0; i < *n; i++)
        if (strcmp(e[i].name, "model.layers.1.self_attn.q_proj.weight") == 0) {
            e[i].shape[0] = 8;
            e[i].shape[1] = 16;
            e[i].data = junk;
        }
}

Test(model, missing_tensor_is_an_error) { expect_load_error(drop_norm, "model.norm.weight", "missing"); }
Test(model, extra_tensor_is_an_error) { expect_load_error(add_extra, "model.layers.9.mlp.up_proj.weight", "unexpected"); }
Test(model, shape_mismatch_is_an_error) { expect_load_error(reshape_q, "model.layers.1.self_attn.q_proj.weight", "[8, 16]"); }

Test(model, out_of_vocabulary_token_is_an_error)
{
    struct model_config cfg = small_cfg(true);
    char err[256];
    struct model *m = model_new(&cfg, backend_cpu(), err, sizeof err);
    int32_t tok[3] = {1, 23, 2};
    cr_expect_eq(model_forward(m, tok, NULL, 1, 3, err, sizeof err), -1);
    cr_expect(strstr(err, "vocabulary") != NULL, "%s", err);
    model_free(m);
}
