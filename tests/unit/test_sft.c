/* tests/unit/test_sft.c — SFT row tokenization (which tokens carry loss)
 * and packing (documents independent in a row). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "sft.h"

static struct tokenizer *bytelevel(void)
{
    char err[512], tp[] = "/tmp/aha-sft-tok-XXXXXX";
    int fd = mkstemp(tp);
    close(fd);
    cr_assert_eq(tok_write_bytelevel(tp, err, sizeof err), 0, "%s", err);
    struct tokenizer *tok = tok_load(tp, err, sizeof err);
    cr_assert_not_null(tok, "%s", err);
    unlink(tp);
    return tok;
}

/* The text of the labelled tokens, in order. */
static char *labelled_text(const struct tokenizer *tok, const struct sft_example *e)
{
    int32_t *ids = malloc((size_t)e->n * sizeof *ids);
    size_t k = 0;
    for (int i = 0; i < e->n; i++)
        if (e->labels[i] >= 0) {
            cr_assert_eq(e->labels[i], e->ids[i]);
            ids[k++] = e->ids[i];
        }
    char *s = tok_decode(tok, ids, k, NULL);
    free(ids);
    return s;
}

static void tokenize(const char *row_json, const char *tpl, struct sft_example *e, struct tokenizer *tok)
{
    enum chat_template_kind kind;
    cr_assert_eq(chat_template_from_name(tpl, &kind), 0);
    json_t *row = json_loads(row_json, 0, NULL);
    cr_assert_not_null(row);
    char err[512];
    cr_assert_eq(sft_tokenize_row(row, tok, kind, 256, e, err, sizeof err), 0, "%s", err);
    json_decref(row);
}

Test(sft, prompt_completion_trains_on_completion_and_eos)
{
    struct tokenizer *tok = bytelevel();
    struct sft_example e;
    tokenize("{\"prompt\":\"What is 1 + 2?\",\"completion\":\"<think>1+2</think> <answer>3</answer>\"}",
             "r1-zero", &e, tok);
    char *s = labelled_text(tok, &e);
    cr_expect_str_eq(s, " <think>1+2</think> <answer>3</answer><|endoftext|>");
    cr_expect_eq(e.ids[e.n - 1], 256, "ends with eos");
    free(s);
    sft_example_free(&e);
    tok_free(tok);
}

Test(sft, chatml_trains_every_assistant_turn)
{
    struct tokenizer *tok = bytelevel();
    struct sft_example e;
    tokenize("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"A1\"},"
             "{\"role\":\"user\",\"content\":\"again\"},{\"role\":\"assistant\",\"content\":\"A2\"}]}",
             "chatml", &e, tok);
    char *s = labelled_text(tok, &e);
    cr_expect_str_eq(s, "A1<|im_end|>\nA2<|im_end|>\n");
    free(s);
    sft_example_free(&e);
    tok_free(tok);
}

Test(sft, bad_rows_name_the_field)
{
    struct tokenizer *tok = bytelevel();
    const char *rows[][2] = {
        {"{\"prompt\":\"x\"}", "\"completion\" is missing"},
        {"{\"completion\":\"x\"}", "\"prompt\" is missing"},
        {"{\"prompt\":1,\"completion\":\"x\"}", "\"prompt\" must be"},
        {"{\"messages\":[]}", "\"messages\" must be a non-empty array"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":5}]}", "messages[0]"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "no assistant message"},
        {"[1]", "not a JSON object"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
        json_t *row = json_loads(rows[i][0], 0, NULL);
        struct sft_example e;
        char err[512] = "";
        cr_expect_eq(sft_tokenize_row(row, tok, CHAT_TEMPLATE_CHATML, 256, &e, err, sizeof err), -1, "%s", rows[i][0]);
        cr_expect(strstr(err, rows[i][1]) != NULL, "%s: got \"%s\"", rows[i][0], err);
        json_decref(row);
    }
    tok_free(tok);
}

/* aha's own models chat in the format of their synthetic pretraining text. */
Test(sft, plain_template_matches_the_datagen_text_format)
{
    struct chat_msg msgs[] = {{.role = "user", .content = "What is 2 + 3?"},
                              {.role = "assistant", .content = "<think>2 + 3 = 5.</think> <answer>5</answer>"}};
    struct chat_opts gen = {.add_generation_prompt = true, .prefill_think = 0};
    struct chat_opts full = {.add_generation_prompt = false, .prefill_think = 0};
    char err[256];
    char *p = chat_template_render(CHAT_TEMPLATE_PLAIN, msgs, 1, &gen, err, sizeof err);
    char *f = chat_template_render(CHAT_TEMPLATE_PLAIN, msgs, 2, &full, err, sizeof err);
    cr_assert_not_null(p, "%s", err);
    cr_assert_not_null(f, "%s", err);
    cr_expect_str_eq(p, "User: What is 2 + 3?\nAssistant:");
    cr_expect_str_eq(f, "User: What is 2 + 3?\nAssistant: <think>2 + 3 = 5.</think> <answer>5</answer>");
    free(p);
    free(f);
}

/* ----------------------------------------------------------------- packing */

enum { PK_T = 16, PK_N = 5, PK_V = 31 };

/* Examples of 6, 8, 5, 10 and 17 tokens (5, 7, 4, 9 and, truncated, 16
 * (input, target) pairs): the first three fill a row of 16 exactly, the
 * fourth starts a row it does not fill, the fifth needs a row to itself.
 * The first two tokens of each are prompt (no loss). */
static void packing_examples(struct sft_example *ex)
{
    static const int lens[PK_N] = {6, 8, 5, 10, 17};
    uint32_t s = 12345;
    for (int i = 0; i < PK_N; i++) {
        ex[i].n = lens[i];
        ex[i].ids = malloc((size_t)lens[i] * sizeof *ex[i].ids);
        ex[i].labels = malloc((size_t)lens[i] * sizeof *ex[i].labels);
        for (int t = 0; t < lens[i]; t++) {
            s = s * 1103515245u + 12345u;
            ex[i].ids[t] = (int32_t)((s >> 16) % PK_V);
            ex[i].labels[t] = t < 2 ? -1 : ex[i].ids[t];
        }
    }
}

/* Packed rows: documents back to back, never split, positions restarting
 * at 0, the padding after the last one a document of its own. */
Test(sft, packing_rows_restart_positions_and_never_split)
{
    struct sft_example ex[PK_N];
    packing_examples(ex);
    int idx[PK_N] = {0, 1, 2, 3, 4}, skipped = 0;
    struct sft_rows r = {.T = PK_T};
    cr_assert_eq(sft_rows_build(&r, ex, idx, PK_N, true, 0, &skipped), 0);
    cr_assert_eq(r.n, 3);
    cr_assert_eq(skipped, 0);
    cr_assert_not_null(r.seg);
    static const int32_t want_seg[3][PK_T] = {
        {0, 0, 0, 0, 0, 5, 5, 5, 5, 5, 5, 5, 12, 12, 12, 12},
        {0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9},
        {0}};
    int32_t tok[PK_T], tgt[PK_T], pos[PK_T], seg[PK_T];
    for (int row = 0; row < 3; row++) {
        sft_rows_get(&r, row, tok, tgt, pos, seg);
        for (int t = 0; t < PK_T; t++) {
            cr_expect_eq(seg[t], want_seg[row][t], "row %d token %d: seg %d", row, t, seg[t]);
            cr_expect_eq(pos[t], t - want_seg[row][t], "row %d token %d: pos %d", row, t, pos[t]);
        }
    }
    sft_rows_get(&r, 1, tok, tgt, pos, seg);
    for (int t = 9; t < PK_T; t++) cr_expect_eq(tgt[t], -1, "padding at %d carries loss", t);
    sft_rows_free(&r);
    for (int i = 0; i < PK_N; i++) sft_example_free(&ex[i]);
}

/* Summed negative log-likelihood of each document of rows r, in order of
 * appearance (documents with no target token, i.e. padding, left out).
 * Returns how many were written to nll. */
static int document_nll(struct model *m, const struct sft_rows *r, double *nll)
{
    int32_t tok[PK_T], tgt[PK_T], pos[PK_T], seg[PK_T];
    float lp[PK_T];
    char err[256];
    int n = 0;
    for (int row = 0; row < r->n; row++) {
        sft_rows_get(r, row, tok, tgt, pos, seg);
        cr_assert_eq(model_forward_segmented(m, tok, pos, r->seg ? seg : NULL, 1, PK_T, err, sizeof err),
                     0, "%s", err);
        model_logprobs(m, tgt, lp);
        for (int t0 = 0, t1; t0 < PK_T; t0 = t1) {
            double s = 0;
            int count = 0;
            for (t1 = t0; t1 < PK_T && seg[t1] == seg[t0]; t1++)
                if (tgt[t1] >= 0) { s -= lp[t1]; count++; }
            if (count) nll[n++] = s;
        }
    }
    return n;
}

/* What users of packing rely on: an example packed after others has the
 * loss it has alone in its own row (plain packing, where it attends to the
 * previous examples and its positions continue from them, does not). */
Test(sft, packed_example_loss_equals_its_loss_alone)
{
    /* the tiny preset's shape (GQA 8:4, qkv bias), shrunk to test size */
    struct model_config c;
    cr_assert_eq(config_preset(&c, "tiny"), 0);
    c.vocab_size = PK_V;
    c.hidden_size = 32;
    c.n_layers = 2;
    c.head_dim = 4;
    c.intermediate_size = 40;
    char err[256];
    struct model *m = model_new(&c, backend_cpu(), err, sizeof err);
    cr_assert_not_null(m, "%s", err);
    model_init_random(m, 7, 0.5f);

    struct sft_example ex[PK_N];
    packing_examples(ex);
    int idx[PK_N] = {0, 1, 2, 3, 4}, skipped = 0;
    struct sft_rows packed = {.T = PK_T}, alone = {.T = PK_T};
    cr_assert_eq(sft_rows_build(&packed, ex, idx, PK_N, true, 0, &skipped), 0);
    cr_assert_eq(sft_rows_build(&alone, ex, idx, PK_N, false, 0, &skipped), 0);
    cr_assert_eq(alone.n, PK_N);
    double got[PK_T], want[PK_N];
    cr_assert_eq(document_nll(m, &packed, got), PK_N);
    cr_assert_eq(document_nll(m, &alone, want), PK_N);
    for (int i = 0; i < PK_N; i++)
        cr_expect(fabs(got[i] - want[i]) <= 1e-5 * fmax(1.0, fabs(want[i])),
                  "example %d: packed loss %.9g, alone %.9g", i, got[i], want[i]);
    sft_rows_free(&packed);
    sft_rows_free(&alone);
    for (int i = 0; i < PK_N; i++) sft_example_free(&ex[i]);
    model_free(m);
}
