/* tests/unit/test_sft.c — SFT row tokenization: which tokens carry loss. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
