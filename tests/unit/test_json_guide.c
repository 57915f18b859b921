/* tests/unit/test_json_guide.c — JSON mode's automaton and vocabulary walk
 * (engine/json_guide.c): whole objects accepted, each kind of mistake
 * refused at the byte that makes it, agreement with jansson's parser on
 * random and mutated documents, and the trie walk against feeding every
 * token on its own. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "json_guide.h"
#include "rng.h"

/* Bytes of s accepted before the first refusal (len when all are). */
static size_t accepted(const char *s, size_t len, struct jg_state *st)
{
    jg_init(st);
    for (size_t i = 0; i < len; i++)
        if (!jg_feed(st, (unsigned char)s[i])) return i;
    return len;
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
    static const struct { const char *s; size_t at; } bad[] = {
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
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct jg_state st;
        const size_t n = strlen(bad[i].s);
        cr_expect_eq(accepted(bad[i].s, n, &st), bad[i].at, "case %zu: refused at %zu, not %zu", i,
                     accepted(bad[i].s, n, &st), bad[i].at);
    }
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
        const size_t at = rng_below(&g, n);
        const int op = (int)rng_below(&g, 3);
        const char c = alphabet[rng_below(&g, sizeof alphabet - 1)];
        if (op == 0) b[at] = c;
        else if (op == 1) { memmove(b + at + 1, b + at, n - at + 1); b[at] = c; n++; }
        else { memmove(b + at, b + at + 1, n - at); n--; }
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

/* jg_allowed over a trie of random multi-byte tokens (shared prefixes,
 * duplicates, an id left out) equals feeding each token alone, in states
 * along a document (in a string: the plain tokens plus a walk of the
 * others). */
Test(json_guide, trie_walk_matches_each_token)
{
    enum { V = 600 };
    static const char alphabet[] = "{}[]\":, 0123456789.-eatrufnl\\\xc3\xa9";
    struct rng g;
    rng_seed(&g, 9);
    static char tok[V][8];
    static size_t len[V];
    struct jg_vocab *v = jg_vocab_empty(V);
    cr_assert_not_null(v);
    for (int t = 0; t < V; t++) {
        len[t] = t == 17 ? 0 : 1 + rng_below(&g, t < 40 ? 1 : 6);
        for (size_t i = 0; i < len[t]; i++) tok[t][i] = alphabet[rng_below(&g, sizeof alphabet - 1)];
        if (t % 50 == 3) memcpy(tok[t], tok[t - 1], sizeof tok[t]), len[t] = len[t - 1];
        cr_assert_eq(jg_vocab_add(v, t, tok[t], len[t]), 0);
    }
    static const char doc[] = "{\"a\": [1, -2.5e3, \"x\\n\xc3\xa9\", {\"b\": null}], \"c\": true}";
    uint8_t allowed[V];
    struct jg_state st;
    jg_init(&st);
    int total = 0;
    for (size_t k = 0; k <= sizeof doc - 1; k++) {
        const int n = jg_allowed(v, &st, allowed);
        int want = 0;
        for (int t = 0; t < V; t++) {
            struct jg_state s2 = st;
            bool ok = len[t] > 0;
            for (size_t i = 0; ok && i < len[t]; i++) ok = jg_feed(&s2, (unsigned char)tok[t][i]);
            cr_assert_eq(allowed[t], ok, "after %zu bytes, token %d \"%.*s\"", k, t, (int)len[t], tok[t]);
            want += ok;
        }
        cr_assert_eq(n, want);
        total += n;
        if (k < sizeof doc - 1) cr_assert(jg_feed(&st, (unsigned char)doc[k]));
    }
    cr_expect(jg_done(&st));
    cr_expect_gt(total, 1000, "the walk allowed almost nothing: the test shows little");
    jg_vocab_free(v);
}
