/* tests/unit/test_json_guide.c — JSON mode's automaton and vocabulary walk
 * (engine/json_guide.c): whole objects accepted, each kind of mistake
 * refused at the byte that makes it, agreement with jansson's parser on
 * random and mutated documents, and the trie walk against feeding every
 * token on its own. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "json_guide.h"
#include "rng.h"

/* Bytes of s accepted before the first refusal (len when all are), from
 * the start of an object of schema sc. */
static size_t accepted_sc(const struct jg_schema *sc, const char *s, size_t len,
                          struct jg_state *st)
{
    jg_init(st, sc);
    for (size_t i = 0; i < len; i++)
        if (!jg_feed(st, (unsigned char)s[i])) return i;
    return len;
}

/* The same for any JSON object (json_object mode). */
static size_t accepted(const char *s, size_t len, struct jg_state *st)
{
    return accepted_sc(jg_schema_object(), s, len, st);
}

/* Each document whole, from the start of an object of sc. */
static void expect_whole(const struct jg_schema *sc, const char *const *docs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct jg_state st;
        const size_t len = strlen(docs[i]);
        const size_t got = accepted_sc(sc, docs[i], len, &st);
        cr_expect_eq(got, len, "%s: refused at byte %zu", docs[i], got);
        cr_expect(jg_done(&st), "%s: not whole", docs[i]);
    }
}

/* Each document refused at byte `at` (its mistake). */
struct refusal { const char *s; size_t at; };
static void expect_refused(const struct jg_schema *sc, const struct refusal *bad, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct jg_state st;
        const size_t got = accepted_sc(sc, bad[i].s, strlen(bad[i].s), &st);
        cr_expect_eq(got, bad[i].at, "%s: refused at %zu, not %zu", bad[i].s, got, bad[i].at);
    }
}

Test(json_guide, accepts_objects)
{
    static const char *const ok[] = {
        "{}",
        "{\"a\":1}",
        "{ \"a\" : [ 1 , 2.5e-3 , -0 , 0.0E+7 , true , false , null , { } , [ ] ]\n}",
        "{\"k\":{\"x\":[[[]],{\"y\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00\"}]}}",
        "{\"caf\xc3\xa9\":\"\xe2\x82\xac \xf0\x9f\x98\x80 \xed\x9f\xbf \xf4\x8f\xbf\xbf\"}",
        "{\"n\":-12.5e10,\"m\":1E2,\"z\":0}",
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        struct jg_state st;
        const size_t n = strlen(ok[i]);
        cr_expect_eq(accepted(ok[i], n, &st), n, "%s: refused at byte %zu", ok[i], accepted(ok[i], n, &st));
        cr_expect(jg_done(&st), "%s: not whole", ok[i]);
        /* every proper prefix is accepted and not whole */
        for (size_t k = 1; k < n; k++) {
            accepted(ok[i], k, &st);
            cr_expect(!jg_done(&st) || ok[i][k] == ' ', "%s: whole after %zu bytes", ok[i], k);
        }
    }
}

Test(json_guide, refuses_at_the_mistake)
{
    static const struct refusal bad[] = {
        {"[]", 0},                      /* the top level is an object */
        {"\"a\"", 0},
        {" {}", 0},                     /* nothing before the object */
        {"{} ", 2},                     /* nor after it */
        {"{}}", 2},
        {"{a:1}", 1},
        {"{\"a\" 1}", 5},
        {"{\"a\":01}", 6},              /* leading zero */
        {"{\"a\":1.}", 7},
        {"{\"a\":1.e1}", 7},
        {"{\"a\":-}", 6},
        {"{\"a\":1e}", 7},
        {"{\"a\":+1}", 5},
        {"{\"a\":.5}", 5},
        {"{\"a\":1,}", 7},
        {"{\"a\":[1,]}", 8},
        {"{\"a\":[1}", 7},
        {"{\"a\":{]}", 6},
        {"{\"a\":tru}", 8},
        {"{\"a\":nul1}", 8},
        {"{\"a\":\"\x01\"}", 6},       /* a control byte in a string */
        {"{\"a\":\"\\q\"}", 7},
        {"{\"a\":\"\\u12G4\"}", 10},
        {"{\"a\":\"\xc0\x80\"}", 6},   /* overlong */
        {"{\"a\":\"\xe0\x9f\xbf\"}", 7},
        {"{\"a\":\"\xed\xa0\x80\"}", 7}, /* a UTF-16 surrogate */
        {"{\"a\":\"\xf4\x90\x80\x80\"}", 7}, /* past U+10FFFF */
        {"{\"a\":\"\xf5\"}", 6},
        {"{\"a\":\"\x80\"}", 6},
        {"{\"a\":\"\xc3(\"}", 7},
    };
    expect_refused(jg_schema_object(), bad, sizeof bad / sizeof *bad);
    /* whitespace runs and nesting are bounded */
    char buf[256];
    struct jg_state st;
    snprintf(buf, sizeof buf, "{%*s}", JG_MAX_WS, "");
    cr_expect_eq(accepted(buf, strlen(buf), &st), strlen(buf));
    snprintf(buf, sizeof buf, "{%*s}", JG_MAX_WS + 1, "");
    cr_expect_eq(accepted(buf, strlen(buf), &st), 1 + JG_MAX_WS);
    size_t n = 0;
    buf[n++] = '{';
    buf[n++] = '"';
    buf[n++] = '"';
    buf[n++] = ':';
    for (int d = 1; d < JG_MAX_DEPTH; d++) buf[n++] = '[';
    cr_expect_eq(accepted(buf, n, &st), n);
    buf[n++] = '[';
    cr_expect_eq(accepted(buf, n, &st), n - 1, "nesting past %d accepted", JG_MAX_DEPTH);
}

/* One byte of the document b (n bytes, room for one more) changed,
 * inserted or removed, the new byte from alphabet. */
static void mutate_one(struct rng *g, char *b, size_t *n, const char *alphabet)
{
    const size_t at = rng_below(g, *n);
    const int op = (int)rng_below(g, 3);
    const char c = alphabet[rng_below(g, strlen(alphabet))];
    if (op == 0) {
        b[at] = c;
    } else if (op == 1) {
        memmove(b + at + 1, b + at, *n - at + 1);
        b[at] = c;
        (*n)++;
    } else {
        memmove(b + at, b + at + 1, *n - at);
        (*n)--;
    }
}

/* A random JSON object (no \u escapes, so jansson and the automaton agree
 * on every string), with random whitespace. */
static void gen_value(struct rng *g, char *b, size_t *n, size_t cap, int depth, bool object)
{
    static const char *const ws[] = {"", "", " ", "\n  ", "\t"};
    static const char *const atoms[] = {"0", "-1", "12.5", "3e7", "-0.25E-2", "true", "false",
                                        "null", "\"\"", "\"a b\"", "\"\\n\\\"\\\\\"", "\"\xc3\xa9\""};
#define PUT(str) do { const char *p_ = (str); while (*p_ && *n + 1 < cap) b[(*n)++] = *p_++; } while (0)
    const int kind = object ? 0 : depth >= 4 ? 2 : (int)rng_below(g, 3);
    if (kind == 2) {
        PUT(atoms[rng_below(g, sizeof atoms / sizeof *atoms)]);
        return;
    }
    const bool obj = kind == 0;
    PUT(obj ? "{" : "[");
    const int items = (int)rng_below(g, 4);
    for (int i = 0; i < items; i++) {
        if (i) PUT(",");
        PUT(ws[rng_below(g, 5)]);
        if (obj) {
            PUT(rng_below(g, 2) ? "\"k\"" : "\"key two\"");
            PUT(ws[rng_below(g, 5)]);
            PUT(":");
            PUT(ws[rng_below(g, 5)]);
        }
        gen_value(g, b, n, cap, depth + 1, false);
        PUT(ws[rng_below(g, 5)]);
    }
    PUT(obj ? "}" : "]");
#undef PUT
}

Test(json_guide, agrees_with_jansson)
{
    struct rng g;
    rng_seed(&g, 5);
    static const char alphabet[] = "{}[]\":,.-+0123456789eEtrunlfas \n\\\x01\xc3\xa9\xff";
    int mutated_ok = 0, mutated_bad = 0;
    for (int it = 0; it < 3000; it++) {
        char b[4096];
        size_t n = 0;
        gen_value(&g, b, &n, sizeof b, 0, true);
        b[n] = 0;
        struct jg_state st;
        cr_assert_eq(accepted(b, n, &st), n, "refused at %zu: %s", accepted(b, n, &st), b);
        cr_assert(jg_done(&st), "%s", b);
        /* one byte changed, inserted or removed: both say the same */
        mutate_one(&g, b, &n, alphabet);
        json_error_t je;
        json_t *j = json_loadb(b, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        /* jansson also takes whitespace around the object; JSON mode not */
        const bool ref = j && json_is_object(j) && b[0] == '{' && b[n - 1] == '}';
        json_decref(j);
        const bool mine = accepted(b, n, &st) == n && jg_done(&st);
        cr_assert_eq(mine, ref, "automaton %d, jansson %d: %.*s", mine, ref, (int)n, b);
        ref ? mutated_ok++ : mutated_bad++;
    }
    cr_expect_gt(mutated_ok, 100);
    cr_expect_gt(mutated_bad, 1000);
}

static const char schema_text[] =
    "{\"type\":\"object\",\"title\":\"person\",\"properties\":{"
    "\"name\":{\"type\":\"string\",\"description\":\"who\"},"
    "\"age\":{\"type\":\"integer\"},"
    "\"score\":{\"type\":[\"number\",\"null\"]},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"enum\":[\"a\",\"bb\",\"a b\"]}},"
    "\"kind\":{\"const\":\"x\"},"
    "\"n\":{\"enum\":[1,12,-3.5,true,null]},"
    "\"addr\":{\"$ref\":\"#/$defs/Addr\"},"
    "\"meta\":{}},"
    "\"required\":[\"name\",\"age\",\"addr\"],\"additionalProperties\":false,"
    "\"$defs\":{\"Addr\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},"
    "\"zip\":{\"type\":\"integer\"}},\"required\":[\"city\"]}}}";

static struct jg_schema *schema_of(const char *text, char *err, size_t errlen)
{
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    cr_assert_not_null(j, "%s", je.text);
    struct jg_schema *sc = jg_schema_compile(j, err, errlen);
    json_decref(j);
    return sc;
}

/* jg_allowed over a trie of random multi-byte tokens (shared prefixes,
 * duplicates, an id left out) equals feeding each token alone, in every
 * state along a document: of any object (in a string: the plain tokens
 * plus a walk of the others), and of a schema (keys and enums matched).
 * Returns the tokens allowed, summed over the states. */
enum { TV = 600 };
static char tv_tok[TV][8];
static size_t tv_len[TV];

static int walk_matches(const struct jg_vocab *v, const struct jg_schema *sc, const char *doc)
{
    uint8_t allowed[TV];
    struct jg_state st;
    jg_init(&st, sc);
    int total = 0;
    const size_t n = strlen(doc);
    for (size_t k = 0; k <= n; k++) {
        const int got = jg_allowed(v, &st, allowed);
        int want = 0;
        for (int t = 0; t < TV; t++) {
            struct jg_state s2 = st;
            bool ok = tv_len[t] > 0;
            for (size_t i = 0; ok && i < tv_len[t]; i++) ok = jg_feed(&s2, (unsigned char)tv_tok[t][i]);
            cr_assert_eq(allowed[t], ok, "%s: after %zu bytes, token %d \"%.*s\"", doc, k, t,
                         (int)tv_len[t], tv_tok[t]);
            want += ok;
        }
        cr_assert_eq(got, want);
        total += got;
        if (k < n) cr_assert(jg_feed(&st, (unsigned char)doc[k]), "%s: byte %zu", doc, k);
    }
    cr_expect(jg_done(&st), "%s", doc);
    return total;
}

Test(json_guide, trie_walk_matches_each_token)
{
    static const char alphabet[] = "{}[]\":, 0123456789.-eatrufnl\\\xc3\xa9";
    struct rng g;
    rng_seed(&g, 9);
    struct jg_vocab *v = jg_vocab_empty(TV);
    cr_assert_not_null(v);
    for (int t = 0; t < TV; t++) {
        tv_len[t] = t == 17 ? 0 : 1 + rng_below(&g, t < 40 ? 1 : 6);
        for (size_t i = 0; i < tv_len[t]; i++) tv_tok[t][i] = alphabet[rng_below(&g, sizeof alphabet - 1)];
        if (t % 50 == 3) memcpy(tv_tok[t], tv_tok[t - 1], sizeof tv_tok[t]), tv_len[t] = tv_len[t - 1];
        cr_assert_eq(jg_vocab_add(v, t, tv_tok[t], tv_len[t]), 0);
    }
    const int total = walk_matches(v, jg_schema_object(),
                                   "{\"a\": [1, -2.5e3, \"x\\n\xc3\xa9\", {\"b\": null}], \"c\": true}");
    cr_expect_gt(total, 1000, "the walk allowed almost nothing: the test shows little");
    char err[256];
    struct jg_schema *sc = schema_of(schema_text, err, sizeof err);
    cr_assert_not_null(sc, "%s", err);
    walk_matches(v, sc, "{\"name\":\"a\\n\",\"age\":12,\"tags\":[\"a b\"],\"n\":-3.5,"
                        "\"addr\":{\"city\":\"x\"},\"meta\":[true]}");
    jg_schema_free(sc);
    /* constrained strings walk every token (no plain shortcut) */
    sc = schema_of("{\"type\":\"object\",\"properties\":{"
                   "\"s\":{\"type\":\"string\",\"pattern\":\"^[a-f]*\\u00e9?$\"},"
                   "\"n\":{\"type\":\"number\",\"minimum\":-2,\"maximum\":30},"
                   "\"l\":{\"type\":\"array\",\"maxItems\":2,"
                   "\"items\":{\"type\":\"string\",\"maxLength\":3}}},"
                   "\"required\":[\"s\",\"n\",\"l\"],\"additionalProperties\":false}", err, sizeof err);
    cr_assert_not_null(sc, "%s", err);
    walk_matches(v, sc, "{\"s\":\"fa\xc3\xa9\",\"n\":-1.5,\"l\":[\"ab\",\"\\u00e9\"]}");
    jg_schema_free(sc);
    jg_vocab_free(v);
}

/* ------------------------------------------------------- json_schema */

Test(json_guide, schema_refusals_name_the_place)
{
    static const struct { const char *schema, *want; } bad[] = {
        {"{\"type\":\"array\"}", "root must be an object"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"number\",\"multipleOf\":2}}}",
         "properties.a: keyword \"multipleOf\""},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"pattern\":\"a**\"}}}",
         "properties.a: \"pattern\" at byte 2: nothing to repeat"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"format\":\"uri\"}}}",
         "properties.a: \"format\" \"uri\" is not supported"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"minLength\":3,"
         "\"maxLength\":2}}}", "\"minLength\" is greater than \"maxLength\""},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"minLength\":-1}}}",
         "\"minLength\" must be a whole number"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"pattern\":\"a\","
         "\"maxLength\":2}}}", "beside \"pattern\""},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\",\"minimum\":1.5,"
         "\"maximum\":1.9}}}", "properties.a: no number is within its bounds"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"number\",\"exclusiveMinimum\":1,"
         "\"maximum\":1}}}", "properties.a: no number is within its bounds"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"number\",\"exclusiveMinimum\":true}}}",
         "\"exclusiveMinimum\" must be a number"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"array\",\"minItems\":3,"
         "\"maxItems\":1}}}", "\"minItems\" is greater"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"enum\":[\"x\"],\"maxLength\":1}}}",
         "beside \"enum\""},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"text\"}}}", "properties.a: \"type\""},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"enum\":[{\"b\":1}]}}}", "values must be"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{}},\"additionalProperties\":true}",
         "\"additionalProperties\" beside \"properties\" must be false"},
        {"{\"type\":\"object\",\"additionalProperties\":3}", "must be a boolean or a schema"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{}},\"required\":[\"b\"]}", "\"required\" names"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"$ref\":\"#/$defs/B\"}}}", "\"$ref\" must be \"#\" or name"},
        {"{\"type\":\"object\",\"properties\":{\"next\":{\"$ref\":\"#\"}},\"required\":[\"next\"]}",
         "required properties recurse without end"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"$ref\":\"#/$defs/A\"}},\"$defs\":{"
         "\"A\":{\"$ref\":\"#/$defs/B\"},\"B\":{\"$ref\":\"#/$defs/A\"}}}", "properties.a: \"$ref\" cycle"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"array\",\"prefixItems\":{}}}}",
         "properties.a: \"prefixItems\" must be a list"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"prefixItems\":[{\"type\":\"dog\"}]}}}",
         "properties.a.prefixItems[0]: \"type\""},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"prefixItems\":[{}],\"items\":false,"
         "\"minItems\":2}}}", "than the items a tuple"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"anyOf\":[{\"type\":\"string\"},"
         "{\"type\":[\"null\",\"string\"]}]}}}", "properties.a.anyOf[1]: \"anyOf\" branches must be of different"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"anyOf\":[{\"enum\":[1]}]}}}", "anyOf[0]: \"enum\""},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"not\":{}}}}", "keyword \"not\" is not supported"},
    };
    /* an object needing 32 nested arrays in it: the automaton holds 32
     * open containers */
    char deep[2048] = "{\"type\":\"object\",\"required\":[\"a\"],\"properties\":{\"a\":";
    for (int i = 0; i < 32; i++) strcat(deep, "{\"type\":\"array\",\"minItems\":1,\"items\":");
    strcat(deep, "{}");
    for (int i = 0; i < 32; i++) strcat(deep, "}");
    strcat(deep, "}}");
    char err0[256] = "";
    char ok31[2048] = "{\"type\":\"object\",\"required\":[\"a\"],\"properties\":{\"a\":";
    for (int i = 0; i < 31; i++) strcat(ok31, "{\"type\":\"array\",\"minItems\":1,\"items\":");
    strcat(ok31, "{}");
    for (int i = 0; i < 31; i++) strcat(ok31, "}");
    strcat(ok31, "}}");
    struct jg_schema *fits = schema_of(ok31, err0, sizeof err0);
    cr_expect_not_null(fits, "31 nested arrays in an object: %s", err0);
    jg_schema_free(fits);
    cr_expect_null(schema_of(deep, err0, sizeof err0));
    cr_expect(strstr(err0, "no object of the schema fits in 32 nested") != NULL, "%s", err0);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char err[256] = "";
        struct jg_schema *sc = schema_of(bad[i].schema, err, sizeof err);
        cr_expect_null(sc, "case %zu compiled", i);
        jg_schema_free(sc);
        cr_expect(strstr(err, bad[i].want) != NULL, "case %zu: \"%s\" lacks \"%s\"", i, err, bad[i].want);
    }
}

Test(json_guide, schema_accepts_and_refuses)
{
    char err[256];
    struct jg_schema *sc = schema_of(schema_text, err, sizeof err);
    cr_assert_not_null(sc, "%s", err);
    static const char *const ok[] = {
        "{\"name\":\"Bo\",\"age\":30,\"addr\":{\"city\":\"X\"}}",
        "{ \"name\" : \"\\u00e9\\n\", \"age\" : -0, \"score\" : null, \"tags\" : [ \"a b\" , \"bb\" ], "
        "\"kind\":\"x\", \"n\":12, \"addr\":{\"city\":\"\",\"zip\":7}, \"meta\":{\"x\":[1,{\"y\":null}]}}",
        "{\"name\":\"B\",\"age\":1,\"score\":2.5e3,\"tags\":[],\"n\":-3.5,\"addr\":{\"city\":\"c\"},\"meta\":\"s\"}",
        "{\"name\":\"B\",\"age\":1,\"n\":true,\"addr\":{\"city\":\"c\"}}",
        "{\"name\":\"B\",\"age\":1,\"n\":1,\"addr\":{\"city\":\"c\"}}",
        "{\"name\":\"B\",\"age\":1,\"n\":null,\"addr\":{\"city\":\"c\"}}",
    };
    expect_whole(sc, ok, sizeof ok / sizeof *ok);
    static const struct refusal bad[] = {
        {"{\"name\":\"Bo\",\"age\":30}", 21},              /* addr is required */
        {"{\"age\":30}", 2},                               /* name first */
        {"{\"name\":\"Bo\",\"age\":\"30\"}", 19},           /* not an integer */
        {"{\"name\":\"Bo\",\"age\":3.5}", 20},
        {"{\"name\":\"Bo\",\"age\":3e5}", 20},
        {"{\"name\":\"Bo\",\"age\":3,\"addr\":{\"city\":\"c\"},\"zz\":1}", 42},
        {"{\"name\":\"Bo\",\"age\":3,\"tags\":[\"c\"]}", 30},
        {"{\"name\":\"Bo\",\"age\":3,\"n\":123}", 27},         /* 1 or 12, then no 3 */
        {"{\"name\":\"Bo\",\"age\":3,\"kind\":\"y\"}", 29},
        {"{\"name\":\"Bo\",\"age\":3,\"score\":true}", 29},
        {"{\"name\":\"Bo\",\"age\":3,\"addr\":{\"zip\":1}}", 30},  /* city is required */
        {"{\"name\":\"Bo\",\"age\":3,\"meta\":1,\"addr\":{}}", 22}, /* meta before addr */
    };
    expect_refused(sc, bad, sizeof bad / sizeof *bad);
    struct jg_schema *cp = jg_schema_copy(sc);
    jg_schema_free(sc);
    struct jg_state st;
    cr_expect_eq(accepted_sc(cp, ok[1], strlen(ok[1]), &st), strlen(ok[1]), "the copy differs");
    jg_schema_free(cp);
}

/* A schema as pydantic writes one: titles, $defs and a $ref, Optional
 * fields as anyOf of a type and null, defaults. */
Test(json_guide, schema_pydantic_style)
{
    static const char text[] =
        "{\"$defs\":{\"Pet\":{\"properties\":{\"kind\":{\"title\":\"Kind\",\"type\":\"string\"}},"
        "\"required\":[\"kind\"],\"title\":\"Pet\",\"type\":\"object\"}},"
        "\"properties\":{\"name\":{\"title\":\"Name\",\"type\":\"string\"},"
        "\"nick\":{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"null\"}],\"default\":null,\"title\":\"Nick\"},"
        "\"pet\":{\"anyOf\":[{\"$ref\":\"#/$defs/Pet\"},{\"type\":\"null\"}],\"default\":null},"
        "\"tags\":{\"items\":{\"type\":\"string\"},\"title\":\"Tags\",\"type\":\"array\"}},"
        "\"required\":[\"name\",\"tags\"],\"title\":\"Person\",\"type\":\"object\"}";
    char err[256];
    struct jg_schema *sc = schema_of(text, err, sizeof err);
    cr_assert_not_null(sc, "%s", err);
    static const char *const ok[] = {
        "{\"name\":\"a\",\"nick\":null,\"pet\":{\"kind\":\"cat\"},\"tags\":[]}",
        "{\"name\":\"a\",\"nick\":\"b\",\"tags\":[\"x\",\"y\"]}",
        "{\"name\":\"a\",\"pet\":null,\"tags\":[]}",
    };
    expect_whole(sc, ok, sizeof ok / sizeof *ok);
    static const struct refusal bad[] = {
        {"{\"name\":\"a\",\"nick\":1", 19},
        {"{\"name\":\"a\",\"pet\":{\"kind\":1", 26},
        {"{\"name\":\"a\",\"pet\":[", 18},
        {"{\"name\":\"a\",\"pet\":{}", 19},      /* kind is required */
        {"{\"name\":\"a\"}", 11},                 /* so are the tags */
    };
    expect_refused(sc, bad, sizeof bad / sizeof *bad);
    jg_schema_free(sc);
}

/* The test's own check of a document against schema_text (jansson keeps
 * keys in their order): exactly what the automaton must accept. */
static bool valid_value_any(json_t *v) { (void)v; return true; }

static bool valid_doc(json_t *d)
{
    static const char *const order[] = {"name", "age", "score", "tags", "kind", "n", "addr", "meta"};
    if (!json_is_object(d)) return false;
    int at = 0;
    bool seen[8] = {false};
    const char *k;
    json_t *v;
    json_object_foreach(d, k, v) {
        int i = 0;
        while (i < 8 && strcmp(k, order[i])) i++;
        if (i == 8 || i < at) return false;
        at = i + 1;
        seen[i] = true;
        bool ok = true;
        switch (i) {
        case 0: ok = json_is_string(v); break;
        case 1: ok = json_is_integer(v); break;
        case 2: ok = json_is_number(v) || json_is_null(v); break;
        case 3: {
            ok = json_is_array(v);
            size_t j;
            json_t *x;
            json_array_foreach(v, j, x) {
                const char *s = json_string_value(x);
                ok = ok && s && (!strcmp(s, "a") || !strcmp(s, "bb") || !strcmp(s, "a b"));
            }
            break;
        }
        case 4: ok = json_is_string(v) && !strcmp(json_string_value(v), "x"); break;
        case 5:
            ok = json_is_null(v) || json_is_true(v) ||
                 (json_is_integer(v) && (json_integer_value(v) == 1 || json_integer_value(v) == 12)) ||
                 (json_is_real(v) && json_real_value(v) == -3.5);
            break;
        case 6: {
            ok = json_is_object(v) && json_is_string(json_object_get(v, "city"));
            const char *k2;
            json_t *v2;
            int at2 = 0;
            json_object_foreach(v, k2, v2) {
                const int j = !strcmp(k2, "city") ? 0 : !strcmp(k2, "zip") ? 1 : 2;
                ok = ok && j < 2 && j >= at2 && (j == 0 ? json_is_string(v2) : json_is_integer(v2));
                at2 = j + 1;
            }
            break;
        }
        default: ok = valid_value_any(v); break;
        }
        if (!ok) return false;
    }
    return seen[0] && seen[1] && seen[6];
}

/* Random documents of schema_text and one-byte mutations: the automaton
 * takes a document whole exactly when jansson parses it (no duplicate
 * keys, no whitespace around) and it fits the schema. Enum numbers are
 * written as the schema writes them ("-3.5", not "-35e-1"): the mutations
 * that respell one are left out of the comparison. */
Test(json_guide, schema_agrees_with_a_validator)
{
    char err[256];
    struct jg_schema *sc = schema_of(schema_text, err, sizeof err);
    cr_assert_not_null(sc, "%s", err);
    struct rng g;
    rng_seed(&g, 21);
    static const char alphabet[] = "{}[]\":,.-+0123456789eEtrunlfasbxyzcitp \n\\";
    int agree_ok = 0, agree_bad = 0;
    for (int it = 0; it < 4000; it++) {
        char b[1024];
        size_t n = 0;
#define PUT(str) do { const char *p_ = (str); while (*p_ && n + 1 < sizeof b) b[n++] = *p_++; } while (0)
        PUT("{\"name\":");
        PUT(rng_below(&g, 2) ? "\"Bo\"" : "\"a \\\"b\\\"\"");
        PUT(",\"age\":");
        PUT(rng_below(&g, 2) ? "30" : "-7");
        if (rng_below(&g, 2)) { PUT(",\"score\":"); PUT(rng_below(&g, 2) ? "null" : "0.5e2"); }
        if (rng_below(&g, 2)) {
            PUT(",\"tags\":[");
            const int k = (int)rng_below(&g, 3);
            for (int i = 0; i < k; i++) { if (i) PUT(","); PUT(rng_below(&g, 2) ? "\"a\"" : "\"a b\""); }
            PUT("]");
        }
        if (rng_below(&g, 2)) PUT(",\"kind\":\"x\"");
        if (rng_below(&g, 2)) {
            static const char *const ns[] = {"1", "12", "-3.5", "true", "null"};
            PUT(",\"n\":");
            PUT(ns[rng_below(&g, 5)]);
        }
        PUT(",\"addr\":{\"city\":\"c\"");
        if (rng_below(&g, 2)) PUT(",\"zip\":9");
        PUT("}");
        if (rng_below(&g, 2)) PUT(",\"meta\":[1,{\"q\":false}]");
        PUT("}");
#undef PUT
        b[n] = 0;
        struct jg_state st;
        cr_assert_eq(accepted_sc(sc, b, n, &st), n, "refused at %zu: %s", accepted_sc(sc, b, n, &st), b);
        cr_assert(jg_done(&st), "%s", b);
        mutate_one(&g, b, &n, alphabet);
        json_error_t je;
        json_t *j = json_loadb(b, n, JSON_REJECT_DUPLICATES, &je);
        bool ref = j && valid_doc(j) && b[0] == '{' && b[n - 1] == '}';
        if (ref) {
            /* an enum number respelled stays valid for jansson, not here */
            json_t *nv = json_object_get(j, "n");
            char *t = nv ? json_dumps(nv, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
            const bool respelled = t && !strstr(b, t);
            free(t);
            if (respelled || strstr(b, "-0") || strstr(b, "e+") || strstr(b, "E")) {
                json_decref(j);
                continue;
            }
        }
        json_decref(j);
        const bool mine = accepted_sc(sc, b, n, &st) == n && jg_done(&st);
        cr_assert_eq(mine, ref, "automaton %d, validator %d: %.*s", mine, ref, (int)n, b);
        ref ? agree_ok++ : agree_bad++;
    }
    cr_expect_gt(agree_ok, 50);
    cr_expect_gt(agree_bad, 1500);
    jg_schema_free(sc);
}

/* ------------------------------------------- string, number and array keywords */

static const char keywords_text[] =
    "{\"type\":\"object\",\"properties\":{"
    "\"code\":{\"type\":\"string\",\"pattern\":\"^[A-Z]{2}-[0-9]{3}$\"},"
    "\"nick\":{\"type\":\"string\",\"minLength\":2,\"maxLength\":4},"
    "\"day\":{\"type\":\"string\",\"format\":\"date\"},"
    "\"p\":{\"type\":\"number\",\"minimum\":0,\"maximum\":1},"
    "\"k\":{\"type\":\"integer\",\"exclusiveMinimum\":10,\"maximum\":20},"
    "\"t\":{\"type\":[\"number\",\"null\"],\"exclusiveMinimum\":-1.5,\"exclusiveMaximum\":-1.25},"
    "\"a\":{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":1,\"maxItems\":2},"
    "\"big\":{\"type\":\"integer\",\"minimum\":1e19},\"tiny\":{\"type\":\"number\",\"minimum\":1e-30,"
    "\"maximum\":2e-30},"
    "\"z\":{\"type\":\"array\",\"maxItems\":0},"
    "\"m\":{\"type\":\"object\",\"additionalProperties\":{\"type\":\"integer\",\"minimum\":0}},"
    "\"e\":{\"type\":\"object\",\"additionalProperties\":false},"
    "\"tp\":{\"type\":\"array\",\"prefixItems\":[{\"type\":\"integer\"},{\"type\":\"string\","
    "\"maxLength\":1}],\"items\":false},"
    "\"t7\":{\"type\":\"array\",\"items\":[{\"type\":\"boolean\"}],\"additionalItems\":{\"type\":\"null\"}}},"
    "\"additionalProperties\":false}";

Test(json_guide, schema_keywords_accept_and_refuse)
{
    char err[256];
    struct jg_schema *sc = schema_of(keywords_text, err, sizeof err);
    cr_assert_not_null(sc, "%s", err);
    static const char *const ok[] = {
        "{\"code\":\"AB-123\",\"nick\":\"ab\",\"day\":\"2024-02-29\",\"p\":0,\"k\":11,\"t\":-1.3,"
        "\"a\":[1],\"z\":[]}",
        "{\"code\":\"\\u0041B-123\",\"nick\":\"\xc3\xa9\\u00e9x\xf0\x9f\x98\x80\",\"p\":1.0,\"k\":20}",
        "{\"nick\":\"\\n\\\"\\\\\\/\",\"p\":0.999,\"t\":-1.251,\"a\":[-5,7]}",
        "{\"p\":-0.0}", "{\"p\":1}", "{\"p\":0.12345678901234567890123}", "{\"t\":null}",
        "{\"big\":10000000000000000000}", "{\"big\":123456789012345678901234}",
        "{\"tiny\":0.0000000000000000000000000000015}",
        "{\"k\":19}", "{\"k\":12}",
        "{\"m\":{\"x\":1,\"y z\":20}}", "{\"m\":{}}", "{\"e\":{}}",
        "{\"tp\":[3,\"x\"]}", "{\"tp\":[3]}", "{\"tp\":[]}", "{\"t7\":[true,null,null]}",
    };
    expect_whole(sc, ok, sizeof ok / sizeof *ok);
    static const struct refusal bad[] = {
        {"{\"code\":\"a", 9},               /* the pattern wants A-Z */
        {"{\"code\":\"AB-12\"", 14},        /* and three digits */
        {"{\"code\":\"AB-1234", 15},
        {"{\"code\":\"\\u00", 13},          /* no character from \u00.. is A-Z */
        {"{\"nick\":\"a\"", 10},            /* minLength 2 */
        {"{\"nick\":\"abcde", 13},          /* maxLength 4 */
        {"{\"nick\":\"abc\xc3\xa9\xc3", 14}, /* a fifth character, even begun */
        {"{\"nick\":\"a\\uD8", 13},          /* no surrogate escapes */
        {"{\"day\":\"2024-13", 14},
        {"{\"p\":2", 5},
        {"{\"p\":1.5", 7},
        {"{\"p\":-0.5", 8},
        {"{\"p\":1e0", 6},                   /* no exponent */
        {"{\"k\":10", 6},                    /* 10 is excluded, 100 too big */
        {"{\"k\":21", 6},
        {"{\"k\":9", 5},
        {"{\"k\":1}", 6},                    /* 1 could have been 11..19 */
        {"{\"k\":11.", 7},                   /* an integer */
        {"{\"t\":-1.25}", 10},               /* excluded, -1.251 is not */
        {"{\"t\":-2", 6},
        {"{\"t\":1", 5},
        {"{\"big\":-", 7},
        {"{\"big\":999999999999999999}", 25},  /* 18 digits: below 1e19 */
        {"{\"tiny\":0.00000000000000000000000000003", 38},
        {"{\"a\":[]", 6},                    /* minItems 1 */
        {"{\"a\":[1,2,", 9},                 /* maxItems 2 */
        {"{\"z\":[1", 6},                    /* maxItems 0 */
        {"{\"m\":{\"x\":\"", 10},             /* a map of integers */
        {"{\"m\":{\"x\":-1", 11},             /* of at least 0 (-0 is 0) */
        {"{\"e\":{\"", 6},                    /* no keys at all */
        {"{\"tp\":[\"", 7},                   /* an integer first */
        {"{\"tp\":[3,4", 9},                   /* then a string */
        {"{\"tp\":[3,\"x\",", 12},             /* and no third */
        {"{\"t7\":[true,false", 12},           /* then nulls */
    };
    expect_refused(sc, bad, sizeof bad / sizeof *bad);
    jg_schema_free(sc);
}

/* Documents drawn byte by byte among the bytes the automaton allows (all
 * 256 tried each time): the draw never finds none before the object is
 * whole, and what it writes meets every keyword, as checked here by hand
 * and by glibc's regexec (the patterns are also POSIX extended ones). */
/* The bytes st takes next (ok: room for 256); returns their count. */
static int allowed_bytes(const struct jg_state *st, int *ok)
{
    int na = 0;
    for (int c = 0; c < 256; c++) {
        struct jg_state t = *st;
        if (jg_feed(&t, (unsigned char)c)) ok[na++] = c;
    }
    return na;
}

static size_t code_points(const char *s)
{
    size_t n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

Test(json_guide, schema_keywords_random_documents)
{
    static const char text[] =
        "{\"type\":\"object\",\"properties\":{"
        "\"s\":{\"type\":\"string\",\"pattern\":\"^[a-c]+(-[0-9]{2})?$\"},"
        "\"t\":{\"type\":\"string\",\"minLength\":2,\"maxLength\":5},"
        "\"d\":{\"type\":\"string\",\"format\":\"date\"},"
        "\"x\":{\"type\":\"number\",\"minimum\":-2.5,\"exclusiveMaximum\":7},"
        "\"i\":{\"type\":\"integer\",\"minimum\":3,\"maximum\":12},"
        "\"a\":{\"type\":\"array\",\"items\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":9},"
        "\"minItems\":2,\"maxItems\":4},"
        "\"o\":{\"type\":\"string\",\"pattern\":\"b\"}},"
        "\"required\":[\"s\",\"t\",\"d\",\"x\",\"i\",\"a\"],\"additionalProperties\":false}";
    char err[256];
    struct jg_schema *sc = schema_of(text, err, sizeof err);
    cr_assert_not_null(sc, "%s", err);
    regex_t s_re, d_re, o_re;
    cr_assert_eq(regcomp(&s_re, "^[a-c]+(-[0-9]{2})?$", REG_EXTENDED | REG_NOSUB), 0);
    cr_assert_eq(regcomp(&d_re, "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$",
                         REG_EXTENDED | REG_NOSUB), 0);
    cr_assert_eq(regcomp(&o_re, "b", REG_EXTENDED | REG_NOSUB), 0);
    struct rng g;
    rng_seed(&g, 77);
    int with_o = 0, escapes = 0;
    for (int it = 0; it < 300; it++) {
        struct jg_state st;
        jg_init(&st, sc);
        char doc[8192];
        size_t n = 0;
        while (!jg_done(&st)) {
            cr_assert_lt(n, sizeof doc - 1, "no end: %.*s", (int)n, doc);
            int allowed[256];
            const int na = allowed_bytes(&st, allowed);
            cr_assert_gt(na, 0, "no byte allowed after %.*s", (int)n, doc);
            /* mostly any allowed byte; often an end (quote, bracket) when
             * one is allowed, so that documents finish */
            int pick = allowed[rng_below(&g, (uint64_t)na)];
            if (rng_below(&g, 3) == 0)
                for (int k = 0; k < na; k++)
                    if (strchr("\"]},", allowed[k]) && allowed[k]) pick = allowed[k];
            while ((pick == ' ' || pick == '\n' || pick == '\t' || pick == '\r') && na > 4 &&
                   rng_below(&g, 8))
                pick = allowed[rng_below(&g, (uint64_t)na)];
            cr_assert(jg_feed(&st, (unsigned char)pick));
            doc[n++] = (char)pick;
        }
        doc[n] = 0;
        escapes += strchr(doc, '\\') != NULL;
        json_error_t je;
        json_t *j = json_loadb(doc, n, JSON_REJECT_DUPLICATES, &je);
        cr_assert_not_null(j, "%s: %s", doc, je.text);
        const char *sv = json_string_value(json_object_get(j, "s"));
        const char *tv = json_string_value(json_object_get(j, "t"));
        const char *dv = json_string_value(json_object_get(j, "d"));
        const char *ov = json_string_value(json_object_get(j, "o"));
        const json_t *x = json_object_get(j, "x"), *i = json_object_get(j, "i");
        const json_t *a = json_object_get(j, "a");
        cr_assert(sv && regexec(&s_re, sv, 0, NULL, 0) == 0, "s: %s", doc);
        cr_assert(tv && code_points(tv) >= 2 && code_points(tv) <= 5, "t: %s", doc);
        cr_assert(dv && regexec(&d_re, dv, 0, NULL, 0) == 0, "d: %s", doc);
        cr_assert(json_is_number(x) && json_number_value(x) >= -2.5 && json_number_value(x) < 7,
                  "x: %s", doc);
        cr_assert(json_is_integer(i) && json_integer_value(i) >= 3 && json_integer_value(i) <= 12,
                  "i: %s", doc);
        cr_assert(json_is_array(a) && json_array_size(a) >= 2 && json_array_size(a) <= 4, "a: %s", doc);
        size_t k;
        json_t *e;
        json_array_foreach(a, k, e)
            cr_assert(json_is_integer(e) && json_integer_value(e) >= 0 && json_integer_value(e) <= 9,
                      "a[%zu]: %s", k, doc);
        if (ov) {
            cr_assert(regexec(&o_re, ov, 0, NULL, 0) == 0, "o: %s", doc);
            with_o++;
        }
        json_decref(j);
    }
    cr_expect_gt(with_o, 10, "the optional pattern string was rarely drawn");
    cr_expect_gt(escapes, 10, "escapes were rarely drawn");
    regfree(&s_re);
    regfree(&d_re);
    regfree(&o_re);
    jg_schema_free(sc);
}

/* Recursive schemas ("$ref": "#", a $defs entry referring to itself):
 * documents drawn byte by byte never get stuck, not even against the 32
 * open containers the automaton holds, which the draws reach. */
Test(json_guide, schema_recursive)
{
    static const char tree[] =
        "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":2},"
        "\"children\":{\"type\":\"array\",\"items\":{\"$ref\":\"#\"}}},"
        "\"required\":[\"name\",\"children\"],\"additionalProperties\":false}";
    static const char list[] =
        "{\"$defs\":{\"Node\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},"
        "\"next\":{\"anyOf\":[{\"$ref\":\"#/$defs/Node\"},{\"type\":\"null\"}]}},"
        "\"required\":[\"v\",\"next\"],\"additionalProperties\":false}},"
        "\"type\":\"object\",\"properties\":{\"head\":{\"$ref\":\"#/$defs/Node\"}},\"required\":[\"head\"]}";
    char err[256];
    struct jg_schema *t = schema_of(tree, err, sizeof err), *l = schema_of(list, err, sizeof err);
    cr_assert_not_null(t, "%s", err);
    cr_assert_not_null(l, "%s", err);
    static const char *const ok_tree[] = {
        "{\"name\":\"a\",\"children\":[]}",
        "{\"name\":\"a\",\"children\":[{\"name\":\"b\",\"children\":[{\"name\":\"\",\"children\":[]}]},"
        "{\"name\":\"c\",\"children\":[]}]}"};
    expect_whole(t, ok_tree, 2);
    static const char *const ok_list[] = {"{\"head\":{\"v\":1,\"next\":{\"v\":2,\"next\":null}}}"};
    expect_whole(l, ok_list, 1);
    static const struct refusal bad[] = {
        {"{\"name\":\"a\",\"children\":[{\"name\":1", 32},
        {"{\"name\":\"a\",\"children\":[{\"children\"", 26},   /* name first */
    };
    expect_refused(t, bad, 2);
    struct rng g;
    rng_seed(&g, 5);
    int deepest = 0;
    for (int it = 0; it < 200; it++) {
        const struct jg_schema *sc = it % 2 ? l : t;
        struct jg_state st;
        jg_init(&st, sc);
        size_t n = 0;
        while (!jg_done(&st)) {
            cr_assert_lt(n, 100000u, "no end");
            int ok[256];
            const int na = allowed_bytes(&st, ok);
            cr_assert_gt(na, 0, "stuck after %zu bytes at depth %d", n, st.depth);
            /* lean toward going deeper for a while, then toward ending */
            int pick = ok[rng_below(&g, (uint64_t)na)];
            for (int k = 0; k < na; k++)
                if ((strchr(n < 600 ? "{[\"," : "\"]}", ok[k]) && ok[k]) && rng_below(&g, 2))
                    pick = ok[k];
            cr_assert(jg_feed(&st, (unsigned char)pick));
            if (st.depth > deepest) deepest = st.depth;
            n++;
        }
    }
    cr_expect_eq(deepest, JG_MAX_DEPTH, "the draws never reached the depth limit");
    jg_schema_free(t);
    jg_schema_free(l);
}

/* anyOf of objects (pydantic's unions of models, discriminated or not):
 * the first key tells the branch; documents drawn byte by byte never get
 * stuck and are always one branch's. */
Test(json_guide, schema_object_unions)
{
    static const char text[] =
        "{\"$defs\":{\"Cat\":{\"type\":\"object\",\"properties\":{\"kind\":{\"const\":\"cat\"},"
        "\"lives\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":9}},\"required\":[\"kind\",\"lives\"],"
        "\"additionalProperties\":false},"
        "\"Dog\":{\"type\":\"object\",\"properties\":{\"bark\":{\"type\":\"boolean\"},\"name\":{\"type\":"
        "\"string\",\"maxLength\":3}},\"required\":[\"name\"],\"additionalProperties\":false}},"
        "\"type\":\"object\",\"properties\":{\"pet\":{\"oneOf\":[{\"$ref\":\"#/$defs/Cat\"},"
        "{\"$ref\":\"#/$defs/Dog\"},{\"type\":\"null\"}],\"discriminator\":{\"propertyName\":\"kind\"}}},"
        "\"required\":[\"pet\"],\"additionalProperties\":false}";
    char err[256];
    struct jg_schema *sc = schema_of(text, err, sizeof err);
    cr_assert_not_null(sc, "%s", err);
    static const char *const ok[] = {
        "{\"pet\":{\"kind\":\"cat\",\"lives\":9}}", "{\"pet\":{\"bark\":true,\"name\":\"Rex\"}}",
        "{\"pet\":{\"name\":\"Bo\"}}", "{\"pet\":null}"};
    expect_whole(sc, ok, 4);
    static const struct refusal bad[] = {
        {"{\"pet\":{\"kind\":\"cat\",\"name\"", 22},   /* a cat has no name */
        {"{\"pet\":{\"bark\":true,\"lives\"", 21},
        {"{\"pet\":{}", 8},                         /* both need a key */
        {"{\"pet\":{\"lives\"", 9},                 /* a cat starts with its kind */
    };
    expect_refused(sc, bad, 4);
    struct rng g;
    rng_seed(&g, 3);
    int cats = 0, dogs = 0;
    for (int it = 0; it < 300; it++) {
        struct jg_state st;
        jg_init(&st, sc);
        char doc[4096];
        size_t n = 0;
        while (!jg_done(&st)) {
            cr_assert_lt(n, sizeof doc - 1);
            int okb[256];
            const int na = allowed_bytes(&st, okb);
            cr_assert_gt(na, 0, "stuck after %.*s", (int)n, doc);
            int pick = okb[rng_below(&g, (uint64_t)na)];
            for (int k = 0; k < na; k++)
                if (strchr("\"}", okb[k]) && okb[k] && rng_below(&g, 2)) pick = okb[k];
            cr_assert(jg_feed(&st, (unsigned char)pick));
            doc[n++] = (char)pick;
        }
        doc[n] = 0;
        json_t *j = json_loads(doc, 0, NULL);
        cr_assert_not_null(j, "%s", doc);
        json_t *pet = json_object_get(j, "pet");
        if (json_is_object(pet) && json_object_get(pet, "kind")) {
            cr_assert(json_object_size(pet) == 2 && json_is_integer(json_object_get(pet, "lives")), "%s", doc);
            cats++;
        } else if (json_is_object(pet)) {
            cr_assert(json_is_string(json_object_get(pet, "name")) && !json_object_get(pet, "lives"), "%s", doc);
            dogs++;
        }
        json_decref(j);
    }
    cr_expect_gt(cats, 10);
    cr_expect_gt(dogs, 10);
    jg_schema_free(sc);
    /* branches that may begin with the same key cannot be told apart */
    cr_expect_null(schema_of("{\"type\":\"object\",\"properties\":{\"a\":{\"anyOf\":[{\"type\":\"object\","
                             "\"properties\":{\"x\":{}}},{\"type\":\"object\",\"properties\":{\"y\":{},"
                             "\"x\":{}}}]}}}", err, sizeof err));
    cr_expect(strstr(err, "properties.a.anyOf[1]: objects of \"anyOf\" must begin with different keys"),
              "%s", err);
}
