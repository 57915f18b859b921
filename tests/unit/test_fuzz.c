/* tests/unit/test_fuzz.c — the file parsers on mutated inputs: config.json
 * (config_parse, then model_new on what parses), model.safetensors
 * (st_open, then every tensor converted), tokenizer.json (tok_load, then
 * an encode and decode), JSONL datasets (jsonl_read), reward specs
 * (reward_spec_parse), pipeline definitions (pipeline_check), structured
 * outputs' schemas (jg_schema_compile, then documents drawn from what
 * compiles, which must never get stuck), and a model
 * directory's tokenizer_config.json (chat_template_detect) with the
 * messages rendered by what it finds (chat_template_render_json). Each
 * starts from a valid input and takes a few random edits: bytes changed,
 * inserted, deleted, duplicated or the input cut short, or (JSON) a node
 * of the parsed tree deleted, duplicated or replaced by an awkward value
 * (0, -1, 2^31, 2^63 - 1, 1e308, "", a long string, null, the wrong
 * type). Every outcome must be a result or an error naming the input; the
 * sanitizers make any memory error, overflow or leak fail the run (how
 * 2147483647 attention heads were found to overflow model_new). Fixed
 * seeds; a few thousand inputs per parser. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat_template.h"
#include "config.h"
#include "json_guide.h"
#include "jsonl.h"
#include "model.h"
#include "pipeline.h"
#include "rewards.h"
#include "rng.h"
#include "safetensors.h"
#include "tokenizer.h"

static char err[1024];

static char *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    cr_assert_eq(fseek(f, 0, SEEK_END), 0);
    const long len = ftell(f);
    cr_assert_geq(len, 0);
    rewind(f);
    char *b = malloc((size_t)len + 1);
    *n = fread(b, 1, (size_t)len, f);
    b[*n] = 0;
    fclose(f);
    return b;
}

/* path: a template ending in XXXXXX, made the name of a new empty file */
static void temp_file(char *path)
{
    const int fd = mkstemp(path);
    cr_assert_geq(fd, 0, "%s", path);
    close(fd);
}

static void write_file(const char *path, const char *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    cr_assert_eq(fwrite(b, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

/* Up to 4 edits of b[lo, hi) (n bytes, room for cap): a byte changed (at
 * random, or to one of JSON's), inserted, deleted (a run of up to 16),
 * a run of up to 32 repeated, or the input cut there. */
static size_t edit_bytes(struct rng *g, char *b, size_t n, size_t cap, size_t lo, size_t hi)
{
    static const char syntax[] = "{}[]\",:0123456789-.eE+ \\ntfu\xff\xc3";
    for (int k = 1 + (int)rng_below(g, 4); k > 0; k--) {
        if (hi > n) hi = n;
        if (hi <= lo) break;
        const size_t at = lo + rng_below(g, hi - lo);
        size_t len;
        switch (rng_below(g, 6)) {
        case 0: b[at] = (char)rng_next(g); break;
        case 1: b[at] = syntax[rng_below(g, sizeof syntax - 1)]; break;
        case 2:
            if (n + 1 > cap) break;
            memmove(b + at + 1, b + at, n - at);
            b[at] = syntax[rng_below(g, sizeof syntax - 1)];
            n++;
            break;
        case 3:
            len = 1 + rng_below(g, 16);
            if (len > n - at) len = n - at;
            memmove(b + at, b + at + len, n - at - len);
            n -= len;
            break;
        case 4:
            len = 1 + rng_below(g, 32);
            if (len > n - at) len = n - at;
            if (n + len > cap) break;
            memmove(b + at + len, b + at, n - at);
            n += len;
            break;
        default:
            if (rng_below(g, 4) == 0) return at;
        }
    }
    return n;
}

static json_t *awkward(struct rng *g)
{
    static char long_str[301];
    if (!long_str[0]) memset(long_str, 'a', 300);
    switch (rng_below(g, 15)) {
    case 0: return json_integer(-1);
    case 1: return json_integer(0);
    case 2: return json_integer(1);
    case 3: return json_integer(2147483647);
    case 4: return json_integer(2147483648LL);
    case 5: return json_integer(9223372036854775807LL);
    case 6: return json_real(1e308);
    case 7: return json_real(-0.5);
    case 8: return json_string("");
    case 9: return json_string(long_str);
    case 10: return json_null();
    case 11: return json_true();
    case 12: return json_array();
    case 13: return json_object();
    default: return json_integer((json_int_t)rng_below(g, 100000));
    }
}

static size_t nodes(const json_t *j)
{
    size_t c = 1, i;
    const char *k;
    json_t *v;
    if (json_is_object(j)) json_object_foreach((json_t *)j, k, v) c += nodes(v);
    else if (json_is_array(j)) json_array_foreach(j, i, v) c += nodes(v);
    return c;
}

/* Node *target (pre-order below j) deleted, replaced by an awkward value,
 * or (in an array) appended again. Returns true once done. */
static bool edit_node(struct rng *g, json_t *j, size_t *target)
{
    const char *k;
    json_t *v;
    void *tmp;
    size_t i;
    if (json_is_object(j)) {
        json_object_foreach_safe(j, tmp, k, v) {
            if ((*target)-- == 0) {
                if (rng_below(g, 3) == 0) json_object_del(j, k);
                else json_object_set_new(j, k, awkward(g));
                return true;
            }
            if (edit_node(g, v, target)) return true;
        }
    } else if (json_is_array(j)) {
        json_array_foreach(j, i, v) {
            if ((*target)-- == 0) {
                const uint64_t op = rng_below(g, 3);
                if (op == 0) json_array_remove(j, i);
                else if (op == 1) json_array_set_new(j, i, awkward(g));
                else json_array_append(j, v);
                return true;
            }
            if (edit_node(g, v, target)) return true;
        }
    }
    return false;
}

/* A mutant of the n0 bytes of src (a JSON document when json): half the
 * time its tree edited 1-3 times, else its bytes [lo, hi). Caller frees. */
static char *mutant(struct rng *g, const char *src, size_t n0, size_t lo, size_t hi, bool json,
                    size_t *n)
{
    if (json && rng_below(g, 2)) {
        json_t *j = json_loadb(src, n0, 0, NULL);
        cr_assert_not_null(j);
        for (int k = 1 + (int)rng_below(g, 3); k > 0; k--) {
            size_t t = rng_below(g, nodes(j) - 1);   /* a node below the root */
            edit_node(g, j, &t);
        }
        char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(j);
        cr_assert_not_null(s);
        *n = strlen(s);
        return s;
    }
    const size_t cap = n0 + 4096;
    char *b = malloc(cap + 1);
    memcpy(b, src, n0);
    *n = edit_bytes(g, b, n0, cap, lo, hi);
    b[*n] = 0;
    return b;
}

Test(fuzz, config_json)
{
    size_t n0;
    char *src = read_file("tests/ref/fixtures/llama3-scaled/config.json", &n0);
    struct rng g;
    rng_seed(&g, 1);
    int parsed = 0;
    for (int it = 0; it < 4000; it++) {
        size_t n;
        char *b = mutant(&g, src, n0, 0, n0, true, &n);
        struct model_config c;
        err[0] = 0;
        if (config_parse(&c, b, "m/config.json", err, sizeof err) == 0) {
            parsed++;
            /* a model of it, when small enough to allocate here */
            const double params = (double)c.vocab_size * c.hidden_size +
                                  (double)c.n_layers * c.hidden_size *
                                      (4.0 * c.hidden_size + 3.0 * c.intermediate_size);
            if (params < 2e7) {
                struct model *m = model_new(&c, backend_cpu(), err, sizeof err);
                cr_assert_not_null(m, "%s: %s", b, err);
                model_free(m);
            }
        } else {
            cr_assert(strstr(err, "m/config.json: ") == err, "%s -> %s", b, err);
        }
        free(b);
    }
    cr_expect_gt(parsed, 100);
    free(src);
}

Test(fuzz, safetensors)
{
    char path[] = "/tmp/aha-fuzz-st-XXXXXX";
    temp_file(path);
    /* three tensors, one of them empty; f32 and bf16 files */
    static float a[6] = {1, -2, 3.5f, 0, 1e-30f, -7}, b4[4] = {0.25f, 8, -1, 2};
    const struct st_entry ent[3] = {{"a.weight", 2, {2, 3}, a}, {"b", 1, {4}, b4},
                                    {"empty", 2, {0, 5}, a}};
    struct rng g;
    rng_seed(&g, 2);
    int opened = 0;
    for (int dt = 0; dt < 2; dt++) {
        cr_assert_eq(st_write(path, ent, 3, dt ? ST_BF16 : ST_F32, err, sizeof err), 0, "%s", err);
        size_t n0;
        char *src = read_file(path, &n0);
        uint64_t hl;
        memcpy(&hl, src, 8);
        cr_assert_lt(hl, n0);
        for (int it = 0; it < 1500; it++) {
            size_t n;
            char *m;
            const uint64_t how = rng_below(&g, 4);
            if (how == 0) {     /* the header's length */
                m = malloc(n0);
                memcpy(m, src, n0);
                n = n0;
                uint64_t v = rng_below(&g, 4) ? hl + rng_below(&g, 64) - 32 : rng_next(&g);
                memcpy(m, &v, 8);
            } else if (how == 1) {  /* the header's JSON, its length kept right */
                size_t hn;
                char *h = mutant(&g, src + 8, hl, 0, hl, true, &hn);
                n = 8 + hn + (n0 - 8 - hl);
                m = malloc(n);
                const uint64_t v = hn;
                memcpy(m, &v, 8);
                memcpy(m + 8, h, hn);
                memcpy(m + 8 + hn, src + 8 + hl, n0 - 8 - hl);
                free(h);
            } else {            /* the header's bytes, or the data cut short */
                m = mutant(&g, src, n0, 8, how == 2 ? 8 + hl : n0, false, &n);
            }
            write_file(path, m, n);
            free(m);
            err[0] = 0;
            struct st_file *f = st_open(path, err, sizeof err);
            if (!f) {
                cr_assert(strstr(err, path) != NULL, "no file name in: %s", err);
                continue;
            }
            opened++;
            for (int t = 0; t < f->n_tensors; t++) {
                const struct st_tensor *x = &f->tensors[t];
                float *d = malloc((x->numel ? (size_t)x->numel : 1) * sizeof(float));
                st_to_f32(x, d);
                free(d);
            }
            st_close(f);
        }
        free(src);
    }
    cr_expect_gt(opened, 100);
    unlink(path);
}

Test(fuzz, tokenizer_json)
{
    char path[] = "/tmp/aha-fuzz-tok-XXXXXX";
    temp_file(path);
    /* aha's byte-level tokenizer made a BPE one: NFC, Qwen's split regex,
     * merges (G: U+0120, the byte-level space) */
    cr_assert_eq(tok_write_bytelevel(path, err, sizeof err), 0, "%s", err);
    json_t *root = json_load_file(path, 0, NULL);
    cr_assert_not_null(root);
    json_t *model = json_object_get(root, "model"), *vocab = json_object_get(model, "vocab");
    static const char *const merges[][2] = {{"\xc4\xa0", "t"}, {"\xc4\xa0t", "h"}, {"i", "n"},
                                            {"\xc4\xa0th", "e"}, {"1", "2"}, {"\xc4\xa0", "\xc4\xa0"}};
    json_t *mj = json_array();
    for (size_t i = 0; i < sizeof merges / sizeof *merges; i++) {
        char both[16];
        snprintf(both, sizeof both, "%s%s", merges[i][0], merges[i][1]);
        json_object_set_new(vocab, both, json_integer(300 + (json_int_t)i));
        json_array_append_new(mj, json_pack("[s,s]", merges[i][0], merges[i][1]));
    }
    json_object_set_new(model, "merges", mj);
    json_object_set_new(root, "normalizer", json_pack("{s:s}", "type", "NFC"));
    json_object_set_new(root, "pre_tokenizer", json_pack(
        "{s:s,s:[{s:s,s:{s:s},s:s,s:b},{s:s,s:b,s:b,s:b}]}", "type", "Sequence", "pretokenizers",
        "type", "Split", "pattern", "Regex",
        "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
        "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        "behavior", "Isolated", "invert", 0, "type", "ByteLevel", "add_prefix_space", 0,
        "trim_offsets", 0, "use_regex", 0));
    char *src = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    const size_t n0 = strlen(src);
    write_file(path, src, n0);
    struct tokenizer *t0 = tok_load(path, err, sizeof err);
    cr_assert_not_null(t0, "the unmutated file: %s", err);
    tok_free(t0);
    struct rng g;
    rng_seed(&g, 3);
    int loaded = 0;
    const char text[] = "Hello the world! I'm 12345 \xe6\x97\xa5 <|im_start|>x<|im_end|>\r\n\n  end \xff";
    for (int it = 0; it < 1500; it++) {
        size_t n;
        char *m = mutant(&g, src, n0, 0, n0, true, &n);
        write_file(path, m, n);
        free(m);
        err[0] = 0;
        struct tokenizer *t = tok_load(path, err, sizeof err);
        if (!t) {
            cr_assert(strstr(err, path) != NULL, "no file name in: %s", err);
            continue;
        }
        loaded++;
        int32_t *ids = NULL;
        const int k = tok_encode(t, text, sizeof text - 1, &ids);
        if (k > 0) free(tok_decode(t, ids, (size_t)k, NULL));
        free(ids);
        tok_free(t);
    }
    cr_expect_gt(loaded, 100);
    free(src);
    unlink(path);
}

static int any_row(void *ctx, json_t *row, char *e, size_t elen)
{
    (void)row, (void)e, (void)elen;
    (*(long *)ctx)++;
    return 0;
}

Test(fuzz, jsonl)
{
    char path[] = "/tmp/aha-fuzz-jsonl-XXXXXX";
    temp_file(path);
    char src[4096];
    size_t n0 = 0;
    for (int i = 0; i < 20; i++)
        n0 += (size_t)snprintf(src + n0, sizeof src - n0,
                               "{\"prompt\": \"What is %d + %d?\", \"answer\": %d, \"meta\": "
                               "[1, {\"x\": null}, \"\xc3\xa9\"]}\n%s", i, i, 2 * i,
                               i % 7 ? "" : "\n");
    struct rng g;
    rng_seed(&g, 4);
    int read_ok = 0;
    for (int it = 0; it < 3000; it++) {
        size_t n;
        char *m = mutant(&g, src, n0, 0, n0, false, &n);
        write_file(path, m, n);
        free(m);
        long rows = 0;
        err[0] = 0;
        const long r = jsonl_read(path, any_row, &rows, err, sizeof err);
        if (r < 0) {
            cr_assert(strstr(err, path) != NULL, "no file name in: %s", err);
            continue;
        }
        cr_assert_eq(r, rows);
        read_ok++;
    }
    cr_expect_gt(read_ok, 100);
    unlink(path);
}

/* reward specs and pipelines: mutants that are still JSON */
static void json_specs(const char *src, uint64_t seed, int iters, bool pipeline)
{
    struct rng g;
    rng_seed(&g, seed);
    int accepted = 0;
    const size_t n0 = strlen(src);
    for (int it = 0; it < iters; it++) {
        size_t n;
        char *m = mutant(&g, src, n0, 0, n0, true, &n);
        json_t *j = json_loadb(m, n, 0, NULL);
        free(m);
        if (!j) continue;
        err[0] = 0;
        if (pipeline) {
            if (pipeline_check(j, err, sizeof err) == 0) accepted++;
            else cr_assert(err[0], "pipeline_check failed without a message");
        } else {
            struct reward_spec *s = reward_spec_parse(j, err, sizeof err);
            if (s) accepted++;
            else cr_assert(err[0], "reward_spec_parse failed without a message");
            reward_spec_free(s);
        }
        json_decref(j);
    }
    cr_expect_gt(accepted, 10);
}

Test(fuzz, reward_specs)
{
    json_specs("{\"name\":\"r\",\"components\":[{\"type\":\"accuracy\",\"weight\":1.0,"
               "\"extract\":\"answer_tag\"},{\"type\":\"format\",\"weight\":0.5,\"mode\":"
               "\"lenient\"},{\"type\":\"length\",\"weight\":0.1}]}", 5, 3000, false);
}

Test(fuzz, pipelines)
{
    size_t n0;
    char *src = read_file("demo/r1-zero.json", &n0);
    json_specs(src, 6, 1500, true);
    free(src);
}

Test(fuzz, chat_template_and_messages)
{
    char dir[] = "/tmp/aha-fuzz-chat-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[sizeof dir + 32];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    const char *src = "{\"add_bos_token\":false,\"model_max_length\":131072,\"eos_token\":"
                      "\"<|im_end|>\",\"chat_template\":\"{%- for m in messages %}{{'<|im_start|>' "
                      "+ m.role + '\\\\n' + m.content + '<|im_end|>'}}{%- endfor %}{%- if "
                      "add_generation_prompt %}{{'<|im_start|>assistant\\\\n<think>'}}{%- endif %}\"}";
    const char *msgs = "[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\","
                       "\"content\":\"2+2?\"},{\"role\":\"assistant\",\"content\":\"4\","
                       "\"reasoning_content\":\"two and two\"},{\"role\":\"user\",\"content\":"
                       "\"and 3+3?\"},{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":"
                       "\"c\",\"type\":\"function\",\"function\":{\"name\":\"add\",\"arguments\":"
                       "{\"a\":3,\"b\":3.5}}}]},{\"role\":\"tool\",\"content\":\"6\"}]";
    enum chat_template_kind k;
    write_file(path, src, strlen(src));
    cr_assert_eq(chat_template_detect(dir, &k, err, sizeof err), 0, "the unmutated file: %s", err);
    cr_assert_eq(k, CHAT_TEMPLATE_QWEN3);
    struct rng g;
    rng_seed(&g, 7);
    int detected = 0, rendered = 0;
    for (int it = 0; it < 2000; it++) {
        size_t n;
        char *m = mutant(&g, src, strlen(src), 0, strlen(src), true, &n);
        write_file(path, m, n);
        free(m);
        err[0] = 0;
        if (chat_template_detect(dir, &k, err, sizeof err)) {
            cr_assert(strstr(err, dir) != NULL, "no file named in: %s", err);
            continue;
        }
        detected++;
        m = mutant(&g, msgs, strlen(msgs), 0, strlen(msgs), true, &n);
        json_t *j = json_loadb(m, n, 0, NULL);
        free(m);
        if (!j) continue;
        json_t *tools = rng_below(&g, 2) ? json_loads("[{\"type\":\"function\",\"function\":"
                                                      "{\"name\":\"add\",\"parameters\":{}}}]", 0, NULL)
                                         : NULL;
        const struct chat_opts o = {.add_generation_prompt = rng_below(&g, 2),
                                    .prefill_think = (int)rng_below(&g, 3) - 1,
                                    .disable_thinking = rng_below(&g, 4) == 0, .tools = tools};
        err[0] = 0;
        char *out = chat_template_render_json(k, j, &o, err, sizeof err);
        if (out) rendered++;
        else cr_assert(strstr(err, "messages") || strstr(err, "tools"), "no JSON path in: %s", err);
        free(out);
        json_decref(j);
        json_decref(tools);
    }
    cr_expect_gt(detected, 100);
    cr_expect_gt(rendered, 50);
    unlink(path);
    rmdir(dir);
}

/* A schema that compiles must never leave a document without a next byte
 * before it is whole: up to 400 bytes drawn among those allowed. */
Test(fuzz, json_schemas)
{
    static const char src[] =
        "{\"type\":\"object\",\"properties\":{"
        "\"s\":{\"type\":\"string\",\"pattern\":\"^(ab|[c-e]{1,3})+\\\\d?-[^x]*$\"},"
        "\"f\":{\"type\":\"string\",\"format\":\"date-time\"},"
        "\"l\":{\"type\":[\"string\",\"null\"],\"minLength\":2,\"maxLength\":4},"
        "\"n\":{\"type\":\"number\",\"minimum\":-2.5,\"exclusiveMaximum\":0.001},"
        "\"i\":{\"type\":\"integer\",\"exclusiveMinimum\":10,\"maximum\":400},"
        "\"a\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/P\"},\"minItems\":1,\"maxItems\":2},"
        "\"o\":{\"anyOf\":[{\"type\":\"string\",\"pattern\":\"q\"},{\"type\":\"integer\",\"minimum\":7}]},"
        "\"u\":{\"anyOf\":[{\"type\":\"object\",\"properties\":{\"c\":{\"const\":1},\"d\":{\"$ref\":"
        "\"#/$defs/P\"}},\"required\":[\"c\",\"d\"]},{\"type\":\"object\",\"properties\":{\"e\":"
        "{\"type\":\"array\",\"items\":{\"$ref\":\"#\"}}}},{\"type\":\"null\"}]},"
        "\"e\":{\"enum\":[\"x\",2]},"
        "\"d\":{\"type\":\"object\",\"additionalProperties\":{\"type\":\"integer\",\"maximum\":-3}},"
        "\"t\":{\"type\":\"array\",\"prefixItems\":[{\"type\":\"integer\",\"minimum\":2},{\"type\":"
        "\"string\",\"pattern\":\"^z+$\"}],\"items\":{\"type\":\"boolean\"}}},"
        "\"required\":[\"s\",\"n\",\"a\"],\"additionalProperties\":false,"
        "\"$defs\":{\"P\":{\"type\":\"object\",\"properties\":{\"k\":{\"type\":\"integer\","
        "\"minimum\":1e3},\"sub\":{\"anyOf\":[{\"$ref\":\"#/$defs/P\"},{\"type\":\"null\"}]},"
        "\"kids\":{\"type\":\"array\",\"minItems\":1,\"items\":{\"$ref\":\"#\"}}},\"required\":[\"k\"]}}}";
    struct rng g;
    rng_seed(&g, 8);
    int compiled = 0, whole = 0;
    for (int it = 0; it < 6000; it++) {
        size_t n;
        char *m = mutant(&g, src, strlen(src), 0, strlen(src), true, &n);
        json_t *j = json_loadb(m, n, 0, NULL);
        free(m);
        if (!j) continue;
        err[0] = 0;
        struct jg_schema *sc = jg_schema_compile(j, err, sizeof err);
        json_decref(j);
        if (!sc) {
            cr_assert(err[0], "jg_schema_compile failed without a message");
            continue;
        }
        compiled++;
        struct jg_state st;
        jg_init(&st, sc);
        for (int k = 0; k < 400 && !jg_done(&st); k++) {
            unsigned char ok[256];
            int na = 0;
            for (int c = 0; c < 256; c++) {
                struct jg_state t = st;
                if (jg_feed(&t, (unsigned char)c)) ok[na++] = (unsigned char)c;
            }
            cr_assert_gt(na, 0, "stuck after %d bytes", k);
            unsigned char c = ok[rng_below(&g, (uint64_t)na)];
            for (int r = 0; r < na && rng_below(&g, 2); r++)      /* lean toward ends */
                if (strchr("\"]},", ok[r]) && ok[r]) c = ok[r];
            cr_assert(jg_feed(&st, c));
        }
        whole += jg_done(&st);
        jg_schema_free(sc);
    }
    cr_expect_gt(compiled, 600);
    cr_expect_gt(whole, 300);
}
