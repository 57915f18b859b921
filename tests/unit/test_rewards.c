/* tests/unit/test_rewards.c — the reward library (engine/rewards*.c): spec
 * validation with JSON-path errors, a table of cases per built-in reward
 * (adversarial ones included: repeated and nested tags, answers outside the
 * tags, missing tags, invalid UTF-8, a 5 MB completion, countdown equations
 * that reuse a number or divide by zero, catastrophic regexes), the http
 * reward against a real HTTP server run by the test (slow, failing,
 * malformed and correct replies), and the `score` CLI. */
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "cli.h"
#include "rewards.h"

TestSuite(rewards);

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static struct reward_spec *spec_from(const char *json)
{
    json_error_t je;
    json_t *j = json_loads(json, 0, &je);
    cr_assert_not_null(j, "bad test spec %s: %s", json, je.text);
    char err[512] = "";
    struct reward_spec *s = reward_spec_parse(j, err, sizeof err);
    json_decref(j);
    cr_assert_not_null(s, "spec %s: %s", json, err);
    return s;
}

/* Scores one completion (n bytes; -1 = strlen) with a one-off spec; fields
 * is a JSON object text or NULL. */
static struct reward_result score_n(const char *spec_json, const char *completion, long n,
                                    const char *fields, long tokens)
{
    struct reward_spec *s = spec_from(spec_json);
    json_t *f = NULL;
    if (fields) {
        json_error_t je;
        f = json_loads(fields, 0, &je);
        cr_assert_not_null(f, "bad test fields %s", fields);
    }
    struct reward_item it = {.prompt = "p", .completion = completion,
                             .completion_len = n < 0 ? strlen(completion) : (size_t)n,
                             .completion_tokens = tokens, .fields = f};
    struct reward_result r;
    char err[512] = "";
    cr_assert_eq(reward_score_batch(s, &it, 1, &r, err, sizeof err), 0, "%s", err);
    json_decref(f);
    reward_spec_free(s);
    return r;
}

static double score1(const char *spec_json, const char *completion, const char *fields)
{
    return score_n(spec_json, completion, -1, fields, -1).value[0];
}

/* ---- spec validation ---- */

Test(rewards, spec_errors_name_the_json_path)
{
    static const struct { const char *spec, *want; } cases[] = {
        {"[]", "expected a JSON object"},
        {"{}", "components: required"},
        {"{\"components\":[]}", "components: expected a non-empty array"},
        {"{\"components\":[{\"type\":\"format\"}],\"extra\":1}", "unknown field \"extra\""},
        {"{\"name\":3,\"components\":[{\"type\":\"format\"}]}", "name: expected a string"},
        {"{\"components\":[{\"type\":\"format\"},{\"type\":\"tag_count\"},"
         "{\"type\":\"accuracy\",\"weight\":\"1\"}]}",
         "reward spec: components[2].weight: expected a number"},
        {"{\"components\":[{\"weight\":1}]}", "components[0].type: required"},
        {"{\"components\":[{\"type\":\"acuracy\"}]}", "components[0].type: unknown type \"acuracy\""},
        {"{\"components\":[{\"type\":\"format\",\"strictness\":1}]}",
         "components[0]: unknown field \"strictness\" for type \"format\""},
        {"{\"components\":[{\"type\":\"format\",\"mode\":\"loose\"}]}",
         "components[0].mode: unknown value \"loose\""},
        {"{\"components\":[{\"type\":\"accuracy\",\"extract\":\"xml\"}]}",
         "components[0].extract: unknown value \"xml\""},
        {"{\"components\":[{\"type\":\"accuracy\",\"reference\":7}]}",
         "components[0].reference: expected a string"},
        {"{\"components\":[{\"type\":\"repetition\",\"max_penalty\":0.5}]}",
         "components[0].max_penalty: 0.5 is out of range"},
        {"{\"components\":[{\"type\":\"repetition\",\"ngram_size\":2.5}]}",
         "components[0].ngram_size: expected an integer"},
        {"{\"components\":[{\"type\":\"overlong\",\"soft_punish_cache\":10}]}",
         "components[0].max_completion_len: required"},
        {"{\"components\":[{\"type\":\"overlong\",\"max_completion_len\":10,"
         "\"soft_punish_cache\":20}]}", "components[0].soft_punish_cache: 20 exceeds"},
        {"{\"components\":[{\"type\":\"regex\"}]}", "components[0].pattern: required"},
        {"{\"components\":[{\"type\":\"regex\",\"pattern\":\"(a\"}]}", "components[0].pattern: "},
        {"{\"components\":[{\"type\":\"http\"}]}", "components[0].url: required"},
        {"{\"components\":[{\"type\":\"http\",\"url\":\"ftp://x\"}]}",
         "components[0].url: expected an http"},
        {"{\"components\":[{\"type\":\"http\",\"url\":\"http://x\",\"on_error\":\"retry\"}]}",
         "components[0].on_error: unknown value"},
        {"{\"components\":[{\"type\":\"http\",\"url\":\"http://x\",\"timeout_ms\":0}]}",
         "components[0].timeout_ms: 0 is out of range"},
        {"{\"components\":[{\"type\":\"http\",\"url\":\"http://x\",\"headers\":{\"A\":\"b\\r\\nc\"}}]}",
         "components[0].headers.A: expected a single-line string"},
        {"{\"components\":[{\"type\":\"format\",\"name\":\"f\"},{\"type\":\"tag_count\",\"name\":\"f\"}]}",
         "components[1].name: \"f\" is already used"},
        {"{\"components\":[{\"type\":\"countdown\",\"scoring\":\"partial\"}]}",
         "components[0].scoring: unknown value"},
        {"{\"components\":[{\"type\":\"language_consistency\",\"language\":\"fr\"}]}",
         "components[0].language: unknown value \"fr\""},
        {"{\"components\":[{\"type\":\"length\",\"unit\":\"bytes\"}]}",
         "components[0].unit: unknown value"},
        {"{\"components\":[3]}", "components[0]: expected an object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        json_error_t je;
        json_t *j = json_loads(cases[i].spec, JSON_DECODE_ANY, &je);
        cr_assert_not_null(j, "case %zu: %s", i, je.text);
        char err[512] = "";
        struct reward_spec *s = reward_spec_parse(j, err, sizeof err);
        json_decref(j);
        cr_expect_null(s, "case %zu accepted: %s", i, cases[i].spec);
        reward_spec_free(s);
        cr_expect(strstr(err, cases[i].want) != NULL, "case %zu: got \"%s\", want \"%s\"", i,
                  err, cases[i].want);
    }
    /* one past the component limit */
    json_t *comps = json_array();
    for (int i = 0; i <= REWARD_MAX_COMPONENTS; i++)
        json_array_append_new(comps, json_pack("{s:s}", "type", "tag_count"));
    json_t *j = json_pack("{s:o}", "components", comps);
    char err[256];
    cr_expect_null(reward_spec_parse(j, err, sizeof err));
    cr_expect(strstr(err, "at most") != NULL, "%s", err);
    json_array_remove(comps, 0);
    struct reward_spec *s = reward_spec_parse(j, err, sizeof err);
    cr_expect_not_null(s, "%s", err);
    reward_spec_free(s);
    json_decref(j);
}

Test(rewards, design_md_example_parses_and_names_components)
{
    struct reward_spec *s = spec_from(
        "{\"name\":\"r1-math\",\"components\":["
        "{\"type\":\"accuracy\",\"weight\":1.0,\"extract\":\"answer_tag\",\"reference\":\"answer\"},"
        "{\"type\":\"format\",\"weight\":0.5,\"template\":\"think_answer\"},"
        "{\"type\":\"language_consistency\",\"weight\":0.1,\"language\":\"en\"},"
        "{\"type\":\"http\",\"weight\":1.0,\"url\":\"http://127.0.0.1:9000/score\",\"timeout_ms\":2000},"
        "{\"type\":\"accuracy\",\"extract\":\"boxed\"},"
        "{\"type\":\"format\",\"name\":\"fmt_lenient\",\"mode\":\"lenient\"}]}");
    cr_expect_str_eq(reward_spec_name(s), "r1-math");
    cr_assert_eq(reward_spec_count(s), 6);
    const char *want[] = {"accuracy", "format", "language_consistency", "http", "accuracy_2",
                          "fmt_lenient"};
    for (int k = 0; k < 6; k++)
        cr_expect_str_eq(reward_spec_component_name(s, k), want[k]);
    cr_expect_float_eq(reward_spec_component_weight(s, 1), 0.5, 1e-12);
    cr_expect_float_eq(reward_spec_component_weight(s, 4), 1.0, 1e-12);
    reward_spec_free(s);
}

/* ---- accuracy ---- */

struct acc_case {
    const char *extract, *completion, *reference; /* reference: JSON text */
    double want;
};

Test(rewards, accuracy_table)
{
    static const struct acc_case cases[] = {
        {"answer_tag", "<think>7*6</think>\n<answer>42</answer>", "\"42\"", 1},
        {"answer_tag", "<answer>  42. </answer>", "42", 1},
        {"answer_tag", "<answer>1,234</answer>", "1234", 1},
        {"answer_tag", "<answer>1,234,567.5</answer>", "\"1234567.5\"", 1},
        {"answer_tag", "<answer>1,23</answer>", "123", 0},          /* bad grouping */
        {"answer_tag", "<answer>3/4</answer>", "\"0.75\"", 1},
        {"answer_tag", "<answer>\\frac{3}{4}</answer>", "\"3/4\"", 1},
        {"answer_tag", "<answer>-\\dfrac{1}{2}</answer>", "-0.5", 1},
        {"answer_tag", "<answer>$5</answer>", "\"5\"", 1},
        {"answer_tag", "<answer>x = 7</answer>", "\"7\"", 1},
        {"answer_tag", "<answer>50%</answer>", "\"50\"", 1},
        {"answer_tag", "<answer>0.3333333</answer>", "\"1/3\"", 1},  /* tolerance */
        {"answer_tag", "<answer>0.33</answer>", "\"1/3\"", 0},
        {"answer_tag", "<answer>42</answer>", "\"43\"", 0},
        {"answer_tag", "<answer>forty-two</answer>", "42", 0},
        {"answer_tag", "<answer>1/0</answer>", "\"0\"", 0},
        {"answer_tag", "<answer>1e400</answer>", "1", 0},
        /* adversarial tags */
        {"answer_tag", "The answer is 42.", "\"42\"", 0},                   /* no tags */
        {"answer_tag", "<think>42</think> 42", "\"42\"", 0},               /* outside the tags */
        {"answer_tag", "<answer>42", "\"42\"", 0},                          /* unclosed */
        {"answer_tag", "42</answer>", "\"42\"", 0},                         /* no opener */
        {"answer_tag", "<answer>1</answer><answer>42</answer>", "\"42\"", 1}, /* last wins */
        {"answer_tag", "<answer>42</answer><answer>1</answer>", "\"42\"", 0},
        {"answer_tag", "<answer><answer>42</answer></answer>", "\"42\"", 0}, /* nested */
        {"answer_tag", "<answer>\xff\xfe</answer>", "\"x\"", 0},            /* invalid UTF-8 */
        {"answer_tag", "<answer></answer>", "\"\"", 0},                      /* empty never matches */
        /* boxed */
        {"boxed", "so \\boxed{\\frac{1}{2}}.", "\"1/2\"", 1},
        {"boxed", "\\boxed{1} then \\boxed{2}", "2", 1},
        {"boxed", "\\boxed{\\text{Paris}}", "\"paris\"", 1},
        {"boxed", "\\boxed{{42}}", "42", 1},                                /* extra braces */
        {"boxed", "\\boxed{{1}{2}}", "\"12\"", 0},
        {"boxed", "\\boxed{3", "3", 0},                                     /* unbalanced */
        {"boxed", "\\boxed{2} and \\boxed{3", "2", 1},                      /* last balanced */
        {"boxed", "\\fbox{9}", "9", 1},
        /* last number */
        {"last_number", "first 3, then 41.5, finally 42", "42", 1},
        {"last_number", "it is -7 degrees", "-7", 1},
        {"last_number", "total: 1,000 apples", "1000", 1},
        {"last_number", "no digits here", "0", 0},
        {"last_number", "x2 y", "2", 0},                                    /* inside a word */
        /* auto */
        {"auto", "<answer>the value is \\boxed{12}</answer>", "12", 1},
        {"auto", "thus \\boxed{12} (not 13)", "12", 1},
        {"auto", "thus 12", "12", 1},
        /* strings */
        {"answer_tag", "<answer>New  York.</answer>", "\"new york\"", 1},
        {"answer_tag", "<answer>\xef\xbc\xb0\xef\xbd\x81ris</answer>", "\"PARIS\"", 1}, /* NFKC */
        {"answer_tag", "<answer>$\\text{blue}$</answer>", "\"Blue\"", 1},
        {"answer_tag", "<answer>four</answer>", "[\"4\",\"four\"]", 1},
        {"answer_tag", "<answer>4</answer>", "[\"four\",4]", 1},
        {"answer_tag", "<answer>five</answer>", "[\"4\",\"four\"]", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char spec[256], fields[256];
        snprintf(spec, sizeof spec, "{\"components\":[{\"type\":\"accuracy\",\"extract\":\"%s\"}]}",
                 cases[i].extract);
        snprintf(fields, sizeof fields, "{\"answer\":%s}", cases[i].reference);
        double got = score1(spec, cases[i].completion, fields);
        cr_expect_eq(got, cases[i].want, "case %zu (%s, \"%s\" vs %s): got %g", i,
                     cases[i].extract, cases[i].completion, cases[i].reference, got);
    }
}

Test(rewards, accuracy_answer_length_limit)
{
    /* answers up to 4096 bytes are compared; one more never matches */
    for (int len = 4096; len <= 4097; len++) {
        char c[4200];
        int m = snprintf(c, sizeof c, "<answer>");
        memset(c + m, ' ', (size_t)len - 2);
        strcpy(c + m + len - 2, "42</answer>");
        cr_expect_eq(score1("{\"components\":[{\"type\":\"accuracy\"}]}", c, "{\"answer\":42}"),
                     len == 4096, "length %d", len);
    }
}

Test(rewards, accuracy_reference_field_and_tolerance_options)
{
    const char *spec = "{\"components\":[{\"type\":\"accuracy\",\"extract\":\"answer_tag\","
                       "\"reference\":\"solution\",\"tolerance\":0.01}]}";
    cr_expect_eq(score1(spec, "<answer>3.14</answer>", "{\"solution\":3.14159}"), 1);
    cr_expect_eq(score1(spec, "<answer>3.2</answer>", "{\"solution\":3.14159}"), 0);
}

Test(rewards, missing_field_is_an_error_naming_item_and_component)
{
    struct reward_spec *s = spec_from("{\"components\":[{\"type\":\"format\"},{\"type\":\"accuracy\"}]}");
    json_t *ok = json_pack("{s:s}", "answer", "1"), *bad = json_pack("{s:s}", "solution", "1");
    struct reward_item items[2] = {
        {.completion = "<answer>1</answer>", .completion_len = 18, .fields = ok},
        {.completion = "<answer>1</answer>", .completion_len = 18, .fields = bad},
    };
    struct reward_result r[2];
    char err[256] = "";
    cr_expect_eq(reward_score_batch(s, items, 2, r, err, sizeof err), -1);
    cr_expect(strstr(err, "item 1: field \"answer\" is missing (components[1], accuracy)"), "%s",
              err);
    cr_expect_eq(reward_check_fields(s, ok, err, sizeof err), 0);
    json_object_set_new(ok, "answer", json_true());
    cr_expect_eq(reward_check_fields(s, ok, err, sizeof err), -1);
    cr_expect(strstr(err, "must be a string"), "%s", err);
    json_decref(ok);
    json_decref(bad);
    reward_spec_free(s);
}

/* ---- countdown ---- */

Test(rewards, countdown_table)
{
    static const struct { const char *completion; double binary, tinyzero; } cases[] = {
        {"<answer>59 + 36 + 60 + 84</answer>", 1, 1},
        {"<think>try</think><answer> (84 + 60) + (59 + 36) </answer>", 1, 1},
        {"<answer>84 + 59 + 36 + 60 + 0</answer>", 0, 0.1},          /* extra number */
        {"<answer>59 + 59 + 36 + 60 + 84 - 59</answer>", 0, 0.1},     /* a number twice */
        {"<answer>59 + 36 + 60</answer>", 0, 0.1},                    /* one missing */
        {"<answer>59 + 36 + 60 + 83</answer>", 0, 0.1},               /* wrong number */
        {"<answer>84 * 59 - 36 - 60</answer>", 0, 0.1},               /* wrong value */
        {"<answer>-59 + 36 + 60 + 84 + 118</answer>", 0, 0.1},        /* unary minus */
        {"<answer>59 + 36 + 60 + 84 = 239</answer>", 0, 0.1},         /* '=' not allowed */
        {"<answer>__import__('os').system('x')</answer>", 0, 0.1},   /* no eval */
        {"<answer>59 + 36 + (60 + 84</answer>", 0, 0.1},             /* unbalanced */
        {"<answer>59.0 + 36 + 60 + 84</answer>", 0, 0.1},            /* decimals */
        {"59 + 36 + 60 + 84", 0, 0},                                   /* no answer tag */
        {"<answer>59 + 36 + 60 + 84", 0, 0},                           /* unclosed */
        {"<answer>1</answer><answer>59 + 36 + 60 + 84</answer>", 1, 1}, /* last tag */
        {"<answer>\xff\xfe 59</answer>", 0, 0.1},
    };
    const char *fields = "{\"numbers\":[84,59,36,60],\"target\":239}";
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        double b = score1("{\"components\":[{\"type\":\"countdown\"}]}", cases[i].completion,
                          fields);
        double t = score1("{\"components\":[{\"type\":\"countdown\",\"scoring\":\"tinyzero\"}]}",
                          cases[i].completion, fields);
        cr_expect_eq(b, cases[i].binary, "case %zu binary: %g", i, b);
        cr_expect_float_eq(t, cases[i].tinyzero, 1e-12, "case %zu tinyzero: %g", i, t);
    }
    /* division: exact and by zero */
    const char *f2 = "{\"numbers\":[6,4,3],\"target\":8}";
    cr_expect_eq(score1("{\"components\":[{\"type\":\"countdown\"}]}", "<answer>6 / 3 * 4</answer>",
                        f2), 1);
    cr_expect_eq(score1("{\"components\":[{\"type\":\"countdown\"}]}", "<answer>6 / 4 * 3</answer>",
                        f2), 0);
    const char *f3 = "{\"numbers\":[4,2,2],\"target\":1}";
    cr_expect_float_eq(score1("{\"components\":[{\"type\":\"countdown\",\"scoring\":\"tinyzero\","
                              "\"format_score\":0.2}]}", "<answer>4 / (2 - 2)</answer>", f3),
                       0.2, 1e-12);
    cr_expect_eq(score1("{\"components\":[{\"type\":\"countdown\"}]}",
                        "<answer>(4 / (2 - 2)) * 0</answer>", f3), 0);
    /* custom field names, boxed extraction */
    cr_expect_eq(score1("{\"components\":[{\"type\":\"countdown\",\"numbers\":\"nums\","
                        "\"target\":\"goal\",\"extract\":\"boxed\"}]}", "\\boxed{2 * (3 + 4)}",
                        "{\"nums\":[2,3,4],\"goal\":14}"), 1);
    /* deep nesting is rejected, not a stack overflow */
    static char deep[40000];
    strcpy(deep, "<answer>");
    size_t k = strlen(deep);
    for (int i = 0; i < 10000; i++)
        deep[k++] = '(';
    strcpy(deep + k, "1</answer>");
    cr_expect_eq(score1("{\"components\":[{\"type\":\"countdown\"}]}", deep,
                        "{\"numbers\":[1],\"target\":1}"), 0);
    cr_expect_eq(score1("{\"components\":[{\"type\":\"countdown\"}]}",
                        "<answer>((((1))))</answer>", "{\"numbers\":[1],\"target\":1}"), 1);
    /* limits: 64 nested parentheses pass, 65 do not; equations up to 1024 bytes */
    for (int depth = 64; depth <= 65; depth++) {
        char eq[256];
        int m = snprintf(eq, sizeof eq, "<answer>");
        for (int i = 0; i < depth; i++)
            eq[m++] = '(';
        eq[m++] = '1';
        for (int i = 0; i < depth; i++)
            eq[m++] = ')';
        strcpy(eq + m, "</answer>");
        cr_expect_eq(score1("{\"components\":[{\"type\":\"countdown\"}]}", eq,
                            "{\"numbers\":[1],\"target\":1}"), depth == 64, "depth %d", depth);
    }
    for (int len = 1024; len <= 1025; len++) {
        char eq[1100];
        int m = snprintf(eq, sizeof eq, "<answer>");
        memset(eq + m, ' ', (size_t)len - 1);
        strcpy(eq + m + len - 1, "1</answer>");
        cr_expect_eq(score1("{\"components\":[{\"type\":\"countdown\"}]}", eq,
                            "{\"numbers\":[1],\"target\":1}"), len == 1024, "length %d", len);
    }
}

Test(rewards, countdown_rejects_bad_dataset_fields)
{
    struct reward_spec *s = spec_from("{\"components\":[{\"type\":\"countdown\"}]}");
    char err[256];
    const char *bad[] = {"{\"target\":3}", "{\"numbers\":[1,2]}", "{\"numbers\":\"1,2\",\"target\":3}",
                         "{\"numbers\":[1.5],\"target\":3}", "{\"numbers\":[1],\"target\":\"3\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        json_t *f = json_loads(bad[i], 0, NULL);
        cr_expect_eq(reward_check_fields(s, f, err, sizeof err), -1, "%s accepted", bad[i]);
        json_decref(f);
    }
    reward_spec_free(s);
}

/* ---- format, tag_count ---- */

Test(rewards, format_table)
{
    static const struct { const char *completion; double strict, lenient, think_strict, think_lenient; } cases[] = {
        {"<think>\nabc\n</think>\n<answer>\n42\n</answer>", 1, 1, 1, 1},
        {"<think>\nabc\n</think>\n<answer>\n42\n</answer>\n", 1, 1, 1, 1},  /* Python $ */
        {"<think>\n\n</think>\n<answer>\n\n</answer>", 1, 1, 1, 1},          /* empty parts */
        {"<think>\n</think>\n<answer>\n42\n</answer>", 0, 1, 0, 1},          /* one newline */
        {"<think>\nabc\n</think>\n<answer>\n42\n</answer> extra", 0, 0, 1, 1},
        {"<think>abc</think> <answer>42</answer>", 0, 1, 0, 1},              /* datagen style */
        {"  <think>abc</think>\n\n<answer>42</answer>  ", 0, 1, 0, 1},
        {"Sure! <think>abc</think><answer>42</answer>", 0, 0, 0, 0},         /* text before */
        {"<think>abc</think> so <answer>42</answer>", 0, 0, 0, 1},           /* text between */
        {"<answer>42</answer><think>abc</think>", 0, 0, 0, 0},               /* wrong order */
        {"<think>\nabc\n</think>\n", 0, 0, 0, 0},                            /* no answer */
        {"<think>\nabc\n</think>\nThe answer is 4.", 0, 0, 1, 1},            /* think template */
        {"<think>abc</think>4", 0, 0, 0, 1},
        {"<think>abc</think>   ", 0, 0, 0, 0},
        {"<answer>42</answer>", 0, 0, 0, 0},                                 /* missing think */
        {"", 0, 0, 0, 0},
        /* repeated and nested tags */
        {"<think>\na\n</think>\n<think>\nb\n</think>\n<answer>\n1\n</answer>", 0, 0, 0, 0},
        {"<think>\n<think>\na\n</think>\n</think>\n<answer>\n1\n</answer>", 0, 0, 0, 0},
        {"<think>\na\n</think>\n<answer>\n<answer>\n1\n</answer>\n</answer>", 0, 0, 0, 0},
        {"<think>\na\n</think>\n<answer>\n1\n</answer>\n<answer>\n2\n</answer>", 0, 0, 0, 0},
        {"<think>\na\xff\xfe\n</think>\n<answer>\n\xc3\n</answer>", 1, 1, 1, 1},  /* bytes are bytes */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *c = cases[i].completion;
        double s = score1("{\"components\":[{\"type\":\"format\"}]}", c, NULL);
        double l = score1("{\"components\":[{\"type\":\"format\",\"mode\":\"lenient\"}]}", c, NULL);
        double ts = score1("{\"components\":[{\"type\":\"format\",\"template\":\"think\"}]}", c, NULL);
        double tl = score1("{\"components\":[{\"type\":\"format\",\"template\":\"think\","
                           "\"mode\":\"lenient\"}]}", c, NULL);
        cr_expect_eq(s, cases[i].strict, "case %zu strict: %g", i, s);
        cr_expect_eq(l, cases[i].lenient, "case %zu lenient: %g", i, l);
        cr_expect_eq(ts, cases[i].think_strict, "case %zu think strict: %g", i, ts);
        cr_expect_eq(tl, cases[i].think_lenient, "case %zu think lenient: %g", i, tl);
    }
    /* NUL bytes inside the completion are just bytes */
    const char nul[] = "<think>\na\0b\n</think>\n<answer>\n1\n</answer>";
    cr_expect_eq(score_n("{\"components\":[{\"type\":\"format\"}]}", nul, sizeof nul - 1, NULL, -1)
                     .value[0], 1);
}

Test(rewards, tag_count_table)
{
    static const struct { const char *completion; double want; } cases[] = {
        {"<think>\nabc\n</think>\n<answer>\n42\n</answer>", 1.0},
        {"<think>\nabc\n</think>\n", 0.5},
        {"<think>\n<think>\nabc\n</think>\n<answer>\n42\n</answer>", 0.75},
        {"<think>abc</think><answer>42</answer>", 0.0},
        {"", 0.0},
        {"\n</answer>\n</answer>", 0.0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        cr_expect_float_eq(score1("{\"components\":[{\"type\":\"tag_count\"}]}",
                                  cases[i].completion, NULL), cases[i].want, 1e-12, "case %zu", i);
}

/* ---- language consistency ---- */

Test(rewards, language_consistency_table)
{
    static const struct { const char *lang, *completion; double want; } cases[] = {
        {"en", "<think>The cat sat.</think><answer>4</answer>", 1.0},
        {"en", "<think>The cat \xe7\x8c\xab sat</think>", 0.75},                  /* 猫 */
        {"en", "<think>\xd0\xba\xd0\xbe\xd1\x82 cat</think>", 0.5},                /* кот */
        {"en", "<think>caf\xc3\xa9 na\xc3\xafve</think>", 1.0},                    /* café naïve */
        {"en", "<think>\xff cat \xfe</think>", 1.0},                               /* invalid bytes */
        {"en", "<think>12 + 30 = 42</think>", 0.0},                                /* no words */
        {"en", "<think></think>", 0.0},
        {"en", "no tags at all", 1.0},
        {"en", "<think>dog cat", 1.0},                                             /* unclosed */
        {"en", "dog \xe7\x8c\xab</think>\xe7\x8c\xab\xe7\x8c\xab", 0.5},          /* prefilled */
        {"zh", "<think>\xe6\x88\x91\xe4\xbb\xac think</think>", 2.0 / 3.0},        /* 我们 think */
        {"zh", "<think>\xe6\x88\x91\xe4\xbb\xac</think> english answer", 1.0},
        {"zh", "<think>all english</think>", 0.0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char spec[160];
        snprintf(spec, sizeof spec,
                 "{\"components\":[{\"type\":\"language_consistency\",\"language\":\"%s\"}]}",
                 cases[i].lang);
        double got = score1(spec, cases[i].completion, NULL);
        cr_expect_float_eq(got, cases[i].want, 1e-12, "case %zu: got %g", i, got);
    }
    cr_expect_float_eq(score1("{\"components\":[{\"type\":\"language_consistency\","
                              "\"scope\":\"completion\"}]}",
                              "<think>cat</think> \xe7\x8c\xab", NULL), 0.5, 1e-12);
    /* tags are not words */
    cr_expect_float_eq(score1("{\"components\":[{\"type\":\"language_consistency\","
                              "\"language\":\"zh\",\"scope\":\"completion\"}]}",
                              "<think>\xe7\x8c\xab</think><answer>\xe7\x8c\xab</answer>", NULL),
                       1.0, 1e-12);
}

/* ---- length, repetition, overlong ---- */

static double cosine_ref(double len, double max_len, bool correct)
{
    double lo = correct ? 0.5 : -0.5, hi = correct ? 1.0 : -1.0;
    double p = len / max_len < 1 ? len / max_len : 1;
    return lo + 0.5 * (hi - lo) * (1.0 + cos(p * M_PI));
}

Test(rewards, length_cosine_scaled)
{
    const char *spec = "{\"components\":[{\"type\":\"length\",\"max_len\":100}]}";
    const char *ok = "<answer>4</answer>", *bad = "<answer>5</answer>";
    cr_expect_float_eq(score1(spec, ok, "{\"answer\":\"4\"}"), cosine_ref(18, 100, true), 1e-12);
    cr_expect_float_eq(score1(spec, bad, "{\"answer\":\"4\"}"), cosine_ref(18, 100, false), 1e-12);
    /* characters are code points: "é" is one */
    cr_expect_float_eq(score1(spec, "\xc3\xa9<answer>4</answer>", "{\"answer\":\"4\"}"),
                       cosine_ref(19, 100, true), 1e-12);
    /* past max_len: clamped at the minimum magnitudes */
    static char longc[400];
    memset(longc, 'x', 300);
    strcpy(longc + 300, "<answer>4</answer>");
    cr_expect_float_eq(score1(spec, longc, "{\"answer\":\"4\"}"), 0.5, 1e-12);
    cr_expect_float_eq(score1(spec, longc, "{\"answer\":\"3\"}"), -0.5, 1e-12);
    /* token unit and custom values */
    const char *tspec = "{\"components\":[{\"type\":\"length\",\"unit\":\"tokens\",\"max_len\":10,"
                        "\"min_value_correct\":0,\"max_value_correct\":2}]}";
    cr_expect_float_eq(score_n(tspec, ok, -1, "{\"answer\":4}", 5).value[0], 1.0, 1e-12);
    cr_expect_float_eq(score_n(tspec, ok, -1, "{\"answer\":4}", 0).value[0], 2.0, 1e-12);
}

Test(rewards, repetition_penalty)
{
    static const struct { const char *completion; int n; double want; } cases[] = {
        {"a b c a b c", 3, -0.25},          /* abc bca cab abc: 3 distinct of 4 */
        {"A b C a B c", 3, -0.25},          /* lower-cased */
        {"the the the the", 1, -0.75},
        {"one two three four", 2, 0.0},
        {"", 3, 0.0},
        {"a b", 3, 0.0},                    /* fewer words than n */
        {"  a\tb\nc  a b c ", 3, -0.25},    /* any whitespace splits */
        {"\xc3\x89t\xc3\xa9 \xc3\xa9t\xc3\xa9", 1, -0.5},  /* Été été */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char spec[128];
        snprintf(spec, sizeof spec, "{\"components\":[{\"type\":\"repetition\",\"ngram_size\":%d}]}",
                 cases[i].n);
        cr_expect_float_eq(score1(spec, cases[i].completion, NULL), cases[i].want, 1e-12,
                           "case %zu", i);
    }
    cr_expect_float_eq(score1("{\"components\":[{\"type\":\"repetition\",\"ngram_size\":3,"
                              "\"max_penalty\":-0.5}]}", "a b c a b c", NULL), -0.125, 1e-12);
}

Test(rewards, overlong_soft_punishment)
{
    const char *spec = "{\"components\":[{\"type\":\"overlong\",\"max_completion_len\":100,"
                       "\"soft_punish_cache\":20}]}";
    static const struct { long tokens; double want; } cases[] = {
        {0, 0}, {80, 0}, {90, -0.5}, {100, -1}, {101, -1}, {5000, -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        cr_expect_float_eq(score_n(spec, "x", -1, NULL, cases[i].tokens).value[0], cases[i].want,
                           1e-12, "case %zu", i);
    /* the token count is required */
    struct reward_spec *s = spec_from(spec);
    struct reward_item it = {.completion = "x", .completion_len = 1, .completion_tokens = -1};
    struct reward_result r;
    char err[256];
    cr_expect_eq(reward_score_batch(s, &it, 1, &r, err, sizeof err), -1);
    cr_expect(strstr(err, "completion_tokens"), "%s", err);
    reward_spec_free(s);
}

/* ---- regex ---- */

Test(rewards, regex_match_field_and_limits)
{
    cr_expect_eq(score1("{\"components\":[{\"type\":\"regex\",\"pattern\":\"^<think>\"}]}",
                        "<think>x", NULL), 1);
    cr_expect_eq(score1("{\"components\":[{\"type\":\"regex\",\"pattern\":\"^<think>\"}]}",
                        " <think>x", NULL), 0);
    const char *fspec = "{\"components\":[{\"type\":\"regex\",\"pattern\":\"(?i)answer:\\\\s*(\\\\w+)\","
                        "\"field\":\"answer\"}]}";
    cr_expect_eq(score1(fspec, "so ANSWER: 42", "{\"answer\":\"42\"}"), 1);
    cr_expect_eq(score1(fspec, "so answer: 41", "{\"answer\":42}"), 0);
    cr_expect_eq(score1(fspec, "no match", "{\"answer\":42}"), 0);
    /* invalid UTF-8 subjects are matched, not rejected */
    cr_expect_eq(score1("{\"components\":[{\"type\":\"regex\",\"pattern\":\"ok$\"}]}",
                        "\xff\xfe ok", NULL), 1);
    /* catastrophic backtracking stops at the match limit: a failure, 0 */
    static char evil[20001];
    memset(evil, 'a', 20000);
    evil[19999] = '!';
    double t0 = now_s();
    struct reward_result r = score_n("{\"components\":[{\"type\":\"regex\",\"pattern\":\"^(a+)+$\"}]}",
                                     evil, -1, NULL, -1);
    cr_expect_lt(now_s() - t0, 5.0);
    cr_expect_eq(r.value[0], 0);
    cr_expect(r.failed[0]);
    cr_expect(!r.excluded);
}

/* ---- totals, adversarial sizes ---- */

static const char *ALL_LOCAL =
    "{\"components\":["
    "{\"type\":\"accuracy\",\"weight\":1.0},"
    "{\"type\":\"accuracy\",\"extract\":\"boxed\"},"
    "{\"type\":\"accuracy\",\"extract\":\"last_number\"},"
    "{\"type\":\"countdown\",\"scoring\":\"tinyzero\"},"
    "{\"type\":\"format\",\"weight\":0.5},"
    "{\"type\":\"format\",\"mode\":\"lenient\"},"
    "{\"type\":\"tag_count\"},"
    "{\"type\":\"language_consistency\",\"language\":\"zh\"},"
    "{\"type\":\"length\"},"
    "{\"type\":\"repetition\"},"
    "{\"type\":\"overlong\",\"max_completion_len\":100,\"soft_punish_cache\":10},"
    "{\"type\":\"regex\",\"pattern\":\"(x+x+)+y\"}]}";

Test(rewards, weighted_total)
{
    struct reward_result r = score_n(
        "{\"components\":[{\"type\":\"accuracy\",\"weight\":2.0},"
        "{\"type\":\"format\",\"weight\":0.5},{\"type\":\"tag_count\",\"weight\":-1}]}",
        "<think>\nx\n</think>\n<answer>\n4\n</answer>", -1, "{\"answer\":4}", -1);
    cr_expect_eq(r.value[0], 1);
    cr_expect_eq(r.value[1], 1);
    cr_expect_eq(r.value[2], 1);
    cr_expect_float_eq(r.total, 2.0 + 0.5 - 1.0, 1e-12);
    cr_expect(!r.excluded);
}

/* A 5 MB completion through every local reward, then 512 KB of repeated
 * openers and of random bytes: no crash, finite values, bounded time. */
Test(rewards, huge_and_garbage_completions)
{
    size_t n = 5u << 20;
    char *big = malloc(n);
    const char *pieces[] = {"<think>", "</think>", "<answer>", "</answer>", "\\boxed{", "}",
                            "(", "1", "+", " ", "word ", "\xe7\x8c\xab", "x", "\n"};
    unsigned seed = 12345;
    size_t k = 0;
    while (k < n) {
        seed = seed * 1103515245u + 12345u;
        const char *p = pieces[(seed >> 16) % (sizeof pieces / sizeof *pieces)];
        size_t l = strlen(p);
        if (k + l > n)
            break;
        memcpy(big + k, p, l);
        k += l;
    }
    const char *fields = "{\"answer\":\"1\",\"numbers\":[1,2],\"target\":3}";
    double t0 = now_s();
    struct reward_result r = score_n(ALL_LOCAL, big, (long)k, fields, 1000000);
    double dt = now_s() - t0;
    for (int c = 0; c < 12; c++)
        cr_expect(isfinite(r.value[c]), "component %d: %g", c, r.value[c]);
    cr_expect_lt(dt, 8.0, "5 MB took %.1f s", dt);
    /* pathological repetitions: many openers without closers */
    const char *rep[] = {"<answer>", "\\boxed{", "<think>", "(", "\xff"};
    for (size_t i = 0; i < sizeof rep / sizeof *rep; i++) {
        size_t l = strlen(rep[i]), m = 0;
        while (m + l <= (512u << 10)) {
            memcpy(big + m, rep[i], l);
            m += l;
        }
        t0 = now_s();
        r = score_n(ALL_LOCAL, big, (long)m, fields, 10);
        cr_expect_lt(now_s() - t0, 4.0, "repeated \"%s\" took too long", rep[i]);
        cr_expect(isfinite(r.total));
    }
    for (size_t i = 0; i < (512u << 10); i++) {
        seed = seed * 1103515245u + 12345u;
        big[i] = (char)(seed >> 16);
    }
    r = score_n(ALL_LOCAL, big, 512 << 10, fields, 10);
    cr_expect(isfinite(r.total));
    free(big);
}

/* ---- http: a real server on 127.0.0.1 ---- */

/* Routes: /ok scores each item by its "score" field (null -> null), else
 * by its completion length; /slow answers /ok after 1.5 s; /fail is a 500;
 * /bad is malformed JSON; /short has one reward too few; /flaky fails its
 * first request; /gate counts concurrent requests. */
static struct {
    int fd;
    int port;
    pthread_t thread;
    atomic_int requests, in_flight, max_in_flight, flaky_seen;
    atomic_bool stop;
    char last_body[4096];
    pthread_mutex_t lock;
} srv;

static void send_all(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

static void reply(int fd, int status, const char *body)
{
    char head[256];
    int hl = snprintf(head, sizeof head, "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n", status, strlen(body));
    send_all(fd, head, (size_t)hl);
    send_all(fd, body, strlen(body));
}

/* {"rewards":[...]} for the items in body; drop removes entries at the end. */
static char *ok_body(const char *body, size_t drop)
{
    json_t *req = json_loads(body, 0, NULL), *out = json_array();
    size_t i;
    json_t *it;
    json_array_foreach(json_object_get(req, "items"), i, it) {
        json_t *s = json_object_get(it, "score");
        if (s)
            json_array_append(out, s);
        else
            json_array_append_new(out, json_integer(
                (json_int_t)json_string_length(json_object_get(it, "completion"))));
    }
    for (size_t d = 0; d < drop && json_array_size(out); d++)
        json_array_remove(out, json_array_size(out) - 1);
    json_t *r = json_pack("{s:o}", "rewards", out);
    char *s = json_dumps(r, JSON_COMPACT);
    json_decref(r);
    json_decref(req);
    return s;
}

static void *handle(void *arg)
{
    int fd = (int)(intptr_t)arg;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    char *body = NULL;
    long clen = -1;
    for (;;) {
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
        }
        ssize_t r = recv(fd, buf + len, cap - len, 0);
        if (r <= 0)
            break;
        len += (size_t)r;
        buf[len] = 0;
        char *end = strstr(buf, "\r\n\r\n");
        if (!end)
            continue;
        if (clen < 0) {
            for (char *h = buf; h && h < end; h = strstr(h, "\r\n") ? strstr(h, "\r\n") + 2 : NULL)
                if (strncasecmp(h, "Content-Length:", 15) == 0)
                    clen = atol(h + 15);
            if (clen < 0)
                clen = 0;
        }
        if ((long)(len - (size_t)(end + 4 - buf)) >= clen) {
            body = end + 4;
            break;
        }
    }
    atomic_fetch_add(&srv.requests, 1);
    int now = atomic_fetch_add(&srv.in_flight, 1) + 1;
    int prev = atomic_load(&srv.max_in_flight);
    while (now > prev && !atomic_compare_exchange_weak(&srv.max_in_flight, &prev, now)) {
    }
    if (body) {
        pthread_mutex_lock(&srv.lock);
        snprintf(srv.last_body, sizeof srv.last_body, "%s", body);
        pthread_mutex_unlock(&srv.lock);
        char path[64] = "";
        sscanf(buf, "POST %63s", path);
        if (strcmp(path, "/ok") == 0 || strcmp(path, "/slow") == 0 ||
            strcmp(path, "/gate") == 0 || (strcmp(path, "/flaky") == 0 &&
                                           atomic_fetch_add(&srv.flaky_seen, 1) > 0)) {
            if (strcmp(path, "/slow") == 0)
                usleep(1500 * 1000);
            if (strcmp(path, "/gate") == 0)
                usleep(150 * 1000);
            char *s = ok_body(body, 0);
            reply(fd, 200, s);
            free(s);
        } else if (strcmp(path, "/short") == 0) {
            char *s = ok_body(body, 1);
            reply(fd, 200, s);
            free(s);
        } else if (strcmp(path, "/bad") == 0) {
            reply(fd, 200, "{\"rewards\": [1, 2");
        } else {
            reply(fd, 500, "{\"error\":\"boom\"}");
        }
    }
    atomic_fetch_sub(&srv.in_flight, 1);
    free(buf);
    close(fd);
    return NULL;
}

static void *accept_loop(void *arg)
{
    while (!atomic_load(&srv.stop)) {
        int c = accept(srv.fd, NULL, NULL);
        if (c < 0)
            break;
        pthread_t t;
        if (pthread_create(&t, NULL, handle, (void *)(intptr_t)c) == 0)
            pthread_detach(t);
        else
            close(c);
    }
    return NULL;
}

static void server_start(void)
{
    setenv("no_proxy", "*", 1);
    setenv("NO_PROXY", "*", 1);
    pthread_mutex_init(&srv.lock, NULL);
    srv.fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(srv.fd, 0);
    int one = 1;
    setsockopt(srv.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(srv.fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(srv.fd, 64), 0);
    socklen_t al = sizeof a;
    getsockname(srv.fd, (struct sockaddr *)&a, &al);
    srv.port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(&srv.thread, NULL, accept_loop, NULL), 0);
}

static void server_stop(void)
{
    atomic_store(&srv.stop, true);
    shutdown(srv.fd, SHUT_RDWR);
    close(srv.fd);
    pthread_join(srv.thread, NULL);
}

static char *http_spec(const char *path, const char *extra)
{
    static char spec[512];
    snprintf(spec, sizeof spec, "{\"components\":[{\"type\":\"format\"},{\"type\":\"http\","
             "\"weight\":2,\"url\":\"http://127.0.0.1:%d%s\"%s%s}]}", srv.port, path,
             extra[0] ? "," : "", extra);
    return spec;
}

/* Scores n items whose completions are "x" repeated 1..n times. */
static void http_score(const char *spec_json, size_t n, struct reward_result *out,
                       json_t **fields)
{
    struct reward_spec *s = spec_from(spec_json);
    static char text[64];
    memset(text, 'x', sizeof text - 1);
    struct reward_item items[32];
    cr_assert_leq(n, 32);
    for (size_t i = 0; i < n; i++)
        items[i] = (struct reward_item){.prompt = "q", .completion = text,
                                        .completion_len = i + 1, .completion_tokens = -1,
                                        .fields = fields ? fields[i] : NULL};
    char err[256];
    cr_assert_eq(reward_score_batch(s, items, n, out, err, sizeof err), 0, "%s", err);
    reward_spec_free(s);
}

Test(rewards, http_correct_replies_in_batches, .init = server_start, .fini = server_stop)
{
    struct reward_result r[5];
    http_score(http_spec("/ok", "\"batch_size\":2,\"max_concurrency\":2"), 5, r, NULL);
    for (int i = 0; i < 5; i++) {
        cr_expect_eq(r[i].value[1], i + 1, "item %d: %g", i, r[i].value[1]);
        cr_expect(!r[i].failed[1] && !r[i].excluded);
        cr_expect_float_eq(r[i].total, 2.0 * (i + 1), 1e-12);
    }
    cr_expect_eq(atomic_load(&srv.requests), 3);
}

Test(rewards, http_dataset_fields_and_invalid_utf8_are_sent, .init = server_start, .fini = server_stop)
{
    json_t *f = json_pack("{s:s,s:i}", "answer", "42", "level", 3);
    struct reward_spec *s = spec_from(http_spec("/ok", ""));
    const char bytes[] = "ok\xff\x00z";
    struct reward_item it = {.prompt = "P", .completion = bytes, .completion_len = 5,
                             .fields = f};
    struct reward_result r;
    char err[256];
    cr_assert_eq(reward_score_batch(s, &it, 1, &r, err, sizeof err), 0, "%s", err);
    json_t *body = json_loads(srv.last_body, 0, NULL);
    cr_assert_not_null(body, "server got invalid JSON: %s", srv.last_body);
    json_t *item = json_array_get(json_object_get(body, "items"), 0);
    cr_expect_str_eq(json_string_value(json_object_get(item, "prompt")), "P");
    cr_expect_str_eq(json_string_value(json_object_get(item, "completion")),
                     "ok\xef\xbf\xbd\xef\xbf\xbdz");
    cr_expect_str_eq(json_string_value(json_object_get(item, "answer")), "42");
    cr_expect_eq(json_integer_value(json_object_get(item, "level")), 3);
    cr_expect_eq(r.value[1], 9); /* the sanitised completion's length */
    json_decref(body);
    json_decref(f);
    reward_spec_free(s);
}

Test(rewards, http_failing_server_retries_then_skips, .init = server_start, .fini = server_stop)
{
    struct reward_result r[3];
    http_score(http_spec("/fail", "\"retries\":2,\"batch_size\":8"), 3, r, NULL);
    for (int i = 0; i < 3; i++) {
        cr_expect(isnan(r[i].value[1]));
        cr_expect(r[i].failed[1]);
        cr_expect(r[i].excluded);
        cr_expect(isnan(r[i].total));
        cr_expect_eq(r[i].value[0], 0); /* the local component still scored */
    }
    cr_expect_eq(atomic_load(&srv.requests), 3, "1 try + 2 retries");
}

Test(rewards, http_failing_server_with_zero_policy, .init = server_start, .fini = server_stop)
{
    struct reward_result r[2];
    http_score(http_spec("/fail", "\"retries\":0,\"on_error\":\"zero\""), 2, r, NULL);
    for (int i = 0; i < 2; i++) {
        cr_expect_eq(r[i].value[1], 0);
        cr_expect(r[i].failed[1]);
        cr_expect(!r[i].excluded);
        cr_expect_eq(r[i].total, 0);
    }
    cr_expect_eq(atomic_load(&srv.requests), 1);
}

Test(rewards, http_slow_server_times_out, .init = server_start, .fini = server_stop)
{
    struct reward_result r[2];
    double t0 = now_s();
    http_score(http_spec("/slow", "\"timeout_ms\":200,\"retries\":1"), 2, r, NULL);
    double dt = now_s() - t0;
    cr_expect(isnan(r[0].value[1]) && r[0].failed[1] && r[1].failed[1]);
    /* without the timeout each attempt would take the server's 1.5 s */
    cr_expect_lt(dt, 2.5, "two 200 ms attempts took %.2f s", dt);
    cr_expect_eq(atomic_load(&srv.requests), 2);
}

Test(rewards, http_malformed_and_short_replies_fail, .init = server_start, .fini = server_stop)
{
    struct reward_result r[2];
    http_score(http_spec("/bad", "\"retries\":1"), 2, r, NULL);
    cr_expect(r[0].failed[1] && r[1].failed[1] && isnan(r[1].value[1]));
    cr_expect_eq(atomic_load(&srv.requests), 2, "malformed replies are retried");
    http_score(http_spec("/short", "\"retries\":0"), 2, r, NULL);
    cr_expect(r[0].failed[1] && r[1].failed[1]);
}

Test(rewards, http_flaky_server_recovers_on_retry, .init = server_start, .fini = server_stop)
{
    struct reward_result r[2];
    http_score(http_spec("/flaky", "\"retries\":1"), 2, r, NULL);
    cr_expect_eq(r[0].value[1], 1);
    cr_expect_eq(r[1].value[1], 2);
    cr_expect(!r[0].failed[1] && !r[1].failed[1]);
    cr_expect_eq(atomic_load(&srv.requests), 2);
}

Test(rewards, http_per_item_null_fails_only_that_item, .init = server_start, .fini = server_stop)
{
    json_t *f[2] = {json_pack("{s:f}", "score", 0.25), json_pack("{s:n}", "score")};
    struct reward_result r[2];
    http_score(http_spec("/ok", ""), 2, r, f);
    cr_expect_float_eq(r[0].value[1], 0.25, 1e-12);
    cr_expect(!r[0].failed[1]);
    cr_expect(r[1].failed[1] && isnan(r[1].value[1]) && r[1].excluded);
    json_decref(f[0]);
    json_decref(f[1]);
}

Test(rewards, http_concurrency_limit, .init = server_start, .fini = server_stop)
{
    struct reward_result r[12];
    http_score(http_spec("/gate", "\"batch_size\":1,\"max_concurrency\":3"), 12, r, NULL);
    for (int i = 0; i < 12; i++)
        cr_expect_eq(r[i].value[1], i + 1);
    cr_expect_eq(atomic_load(&srv.requests), 12);
    cr_expect_leq(atomic_load(&srv.max_in_flight), 3);
    cr_expect_geq(atomic_load(&srv.max_in_flight), 2, "requests ran concurrently");
}

Test(rewards, http_connection_refused_fails_fast, .init = server_start, .fini = server_stop)
{
    /* a port nothing listens on: bind one, close it */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(fd, (struct sockaddr *)&a, sizeof a);
    socklen_t al = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &al);
    close(fd);
    char spec[256];
    snprintf(spec, sizeof spec, "{\"components\":[{\"type\":\"http\",\"url\":"
             "\"http://127.0.0.1:%d/x\",\"retries\":1}]}", ntohs(a.sin_port));
    struct reward_result r[1];
    double t0 = now_s();
    http_score(spec, 1, r, NULL);
    cr_expect(r[0].failed[0] && r[0].excluded);
    cr_expect_lt(now_s() - t0, 2.0);
}

/* ---- the score CLI ---- */

static char *run_cli(const char *spec, const char *input, int *rc)
{
    char sp[] = "/tmp/aha-score-spec-XXXXXX", ip[] = "/tmp/aha-score-in-XXXXXX",
         op[] = "/tmp/aha-score-out-XXXXXX";
    int sfd = mkstemp(sp), ifd = mkstemp(ip), ofd = mkstemp(op);
    cr_assert(sfd >= 0 && ifd >= 0 && ofd >= 0);
    cr_assert_eq(write(sfd, spec, strlen(spec)), (ssize_t)strlen(spec));
    cr_assert_eq(write(ifd, input, strlen(input)), (ssize_t)strlen(input));
    close(sfd);
    close(ifd);
    close(ofd);
    cr_assert_not_null(freopen(ip, "r", stdin));
    fflush(stdout);
    cr_assert_not_null(freopen(op, "w", stdout));
    char *argv[] = {"score", "--spec", sp, NULL};
    *rc = cli_score(3, argv);
    fflush(stdout);
    FILE *f = fopen(op, "r");
    static char out[8192];
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = 0;
    fclose(f);
    unlink(sp);
    unlink(ip);
    unlink(op);
    return out;
}

Test(rewards, cli_score_prints_one_line_per_item)
{
    int rc;
    char *out = run_cli("{\"components\":[{\"type\":\"accuracy\",\"weight\":1},"
                        "{\"type\":\"format\",\"weight\":0.5,\"mode\":\"lenient\"},"
                        "{\"type\":\"overlong\",\"max_completion_len\":10,\"soft_punish_cache\":5}]}",
                        "{\"prompt\":\"2+2?\",\"completion\":\"<think>x</think><answer>4</answer>\","
                        "\"answer\":\"4\",\"completion_tokens\":3}\n\n"
                        "{\"completion\":\"<answer>5</answer>\",\"answer\":4,\"completion_tokens\":10}\n",
                        &rc);
    cr_assert_eq(rc, 0);
    char *nl = strchr(out, '\n');
    cr_assert_not_null(nl);
    *nl = 0;
    json_t *a = json_loads(out, 0, NULL), *b = json_loads(nl + 1, 0, NULL);
    cr_assert_not_null(a, "%s", out);
    cr_assert_not_null(b, "%s", nl + 1);
    cr_expect_float_eq(json_number_value(json_object_get(a, "total")), 1.5, 1e-9);
    json_t *ca = json_object_get(a, "components");
    cr_expect_float_eq(json_number_value(json_object_get(ca, "accuracy")), 1, 1e-9);
    cr_expect_float_eq(json_number_value(json_object_get(ca, "format")), 1, 1e-9);
    cr_expect_float_eq(json_number_value(json_object_get(ca, "overlong")), 0, 1e-9);
    cr_expect_float_eq(json_number_value(json_object_get(b, "total")), -1, 1e-9);
    json_decref(a);
    json_decref(b);
}

Test(rewards, cli_score_errors)
{
    int rc;
    run_cli("{\"components\":[{\"type\":\"nope\"}]}", "", &rc);
    cr_expect_eq(rc, 1);
    run_cli("{\"components\":[{\"type\":\"format\"}]}", "{\"completion\":1}\n", &rc);
    cr_expect_eq(rc, 1);
    run_cli("{\"components\":[{\"type\":\"format\"}]}", "not json\n", &rc);
    cr_expect_eq(rc, 1);
    run_cli("{\"components\":[{\"type\":\"accuracy\"}]}", "{\"completion\":\"x\"}\n", &rc);
    cr_expect_eq(rc, 1);
    char *argv[] = {"score", NULL};
    cr_expect_eq(cli_score(1, argv), 2);
    char *argv2[] = {"score", "--spec", "x", "--bogus", NULL};
    cr_expect_eq(cli_score(4, argv2), 2);
}
