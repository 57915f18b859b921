/* tests/unit/test_json_regex.c — "pattern"'s automaton (engine/json_regex.c):
 * ECMA-262 answers on a table of patterns and strings (checked against
 * Python's re in ASCII mode, whose answers these are, but for \s, which
 * ECMA-262 gives Unicode's spaces), refusals naming the byte, agreement
 * with glibc's POSIX regexec on random patterns and strings, and jre_can
 * against trying every character of the range. */
#include <criterion/criterion.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_regex.h"
#include "rng.h"

static struct jre_prog *compiled(const char *pattern)
{
    char err[200] = "";
    struct jre_prog *p = jre_compile(pattern, strlen(pattern), err, sizeof err);
    cr_assert_not_null(p, "%s: %s", pattern, err);
    return p;
}

Test(json_regex, matches_as_ecma262)
{
    static const struct { const char *pattern, *s; bool match; } cases[] = {
        {"abc", "abc", true},
        {"abc", "xabcx", true},
        {"abc", "ab", false},
        {"abc", "", false},
        {"^abc$", "abc", true},
        {"^abc$", "xabc", false},
        {"^abc$", "abcx", false},
        {"^a+b*c?$", "a", true},
        {"^a+b*c?$", "aab", true},
        {"^a+b*c?$", "aabbc", true},
        {"^a+b*c?$", "abcc", false},
        {"^a+b*c?$", "b", false},
        {"^a+b*c?$", "", false},
        {"^(ab|cd){2,3}$", "abcd", true},
        {"^(ab|cd){2,3}$", "ababab", true},
        {"^(ab|cd){2,3}$", "ab", false},
        {"^(ab|cd){2,3}$", "abcdabcd", false},
        {"^(ab|cd){2,3}$", "abcdab", true},
        {"^\\d{3}-\\d{4}$", "555-1234", true},
        {"^\\d{3}-\\d{4}$", "55-1234", false},
        {"^\\d{3}-\\d{4}$", "555-12345", false},
        {"^\\d{3}-\\d{4}$", "abc-defg", false},
        {"^[^abc]+$", "xyz", true},
        {"^[^abc]+$", "xaz", false},
        {"^[^abc]+$", "", false},
        {"^[^abc]+$", "\xc3""\xa9""", true},
        {"^a.c$", "abc", true},
        {"^a.c$", "a\xc3""\xa9""c", true},
        {"^a.c$", "a\x0a""c", false},
        {"^a.c$", "ac", false},
        {"^(a|b)*abb$", "abb", true},
        {"^(a|b)*abb$", "babb", true},
        {"^(a|b)*abb$", "aabbabb", true},
        {"^(a|b)*abb$", "ab", false},
        {"^$", "", true},
        {"^$", "a", false},
        {"^x{0}y$", "y", true},
        {"^x{0}y$", "xy", false},
        {"^(?:ab)+$", "ab", true},
        {"^(?:ab)+$", "abab", true},
        {"^(?:ab)+$", "aba", false},
        {"^(?:ab)+$", "", false},
        {"^(?<n>a)b$", "ab", true},
        {"^(?<n>a)b$", "b", false},
        {"^[\\d\\s]+$", "1 2\x09""3", true},
        {"^[\\d\\s]+$", "1a", false},
        {"^a{2,}$", "a", false},
        {"^a{2,}$", "aa", true},
        {"^a{2,}$", "aaaaa", true},
        {"^[a-]+$", "a-a", true},
        {"^[a-]+$", "b", false},
        {"^\\.\\*$", ".*", true},
        {"^\\.\\*$", "a*", false},
        {"x|y", "axb", true},
        {"x|y", "aab", false},
        {"x|y", "y", true},
        {"^(a?){3}$", "", true},
        {"^(a?){3}$", "aaa", true},
        {"^(a?){3}$", "aaaa", false},
        {"^[\\w-]{2}$", "a-", true},
        {"^[\\w-]{2}$", "__", true},
        {"^[\\w-]{2}$", "\xc3""\xa9""a", false},
        {"^[\\w-]{2}$", "a", false},
        {"^\\u0041\\x42$", "AB", true},
        {"^\\u0041\\x42$", "ab", false},
        {"^(0|[1-9]\\d*)$", "0", true},
        {"^(0|[1-9]\\d*)$", "10", true},
        {"^(0|[1-9]\\d*)$", "01", false},
        {"^(0|[1-9]\\d*)$", "", false},
        {"^a{,2}$", "a{,2}", true},
        {"^a{,2}$", "aa", false},
        {"^a{$", "a{", true},
        {"^a{$", "a", false},
        {"^\\S+$", "abc", true},
        {"^\\S+$", "a c", false},
        {"^[\\u00e0-\\u00ff]+$", "\xc3""\xa9""\xc3""\xa0""", true},
        {"^[\\u00e0-\\u00ff]+$", "e", false},
        {"^[^]$", "a", true},
        {"^[^]$", "\xc3""\xa9""", true},
        {"^[^]$", "", false},
        {"^(?:\\uD83D\\uDE00)+$", "\xf0""\x9f""\x98""\x80""\xf0""\x9f""\x98""\x80""", true},
        {"^(?:\\uD83D\\uDE00)+$", "x", false},
        {"^[\\s]$", "\xc2""\xa0""", true},
        {"^[\\s]$", "\xe3""\x80""\x80""", true},
        {"^[\\s]$", "\xef""\xbb""\xbf""", true},
        {"^[\\s]$", "x", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct jre_prog *p = compiled(cases[i].pattern);
        cr_expect_eq(jre_match(p, cases[i].s, strlen(cases[i].s)), cases[i].match,
                     "/%s/ on \"%s\": not %d", cases[i].pattern, cases[i].s, cases[i].match);
        free(p);
    }
}

Test(json_regex, refusals_name_the_byte)
{
    static const struct { const char *pattern, *want; } bad[] = {
        {"^(a", "at byte 1: a group without its ')'"},
        {"a)", "at byte 1: a ')' without"},
        {"^a$|b", "at byte 2: anchors are supported only"},
        {"^a|b$", "anchors beside a top-level '|'"},
        {"a(?=b)", "at byte 1: lookaround"},
        {"(?i)a", "at byte 0: lookaround and group flags"},
        {"(a)\\1", "at byte 3: backreferences"},
        {"a**", "at byte 2: nothing to repeat"},
        {"*a", "at byte 0: nothing to repeat"},
        {"[z-a]", "at byte 1: a range out of order"},
        {"[abc", "at byte 0: a class without its ']'"},
        {"^[]$", "matches no string"},
        {"[\\uD800-\\uDFFF]", "a lone surrogate"},
        {"a{2000}", "above 1000"},
        {"a{3,2}", "m < n"},
        {"(a{3}){100}", "more than 255"},
        {"\\bx", "\\b (word boundary)"},
        {"\\p{L}", "the escape \\p"},
        {"ab\\", "ends in a backslash"},
        {"\\x4", "two hex digits"},
        {"a\xff", "at byte 1: bad UTF-8"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char err[200] = "";
        struct jre_prog *p = jre_compile(bad[i].pattern, strlen(bad[i].pattern), err, sizeof err);
        cr_expect_null(p, "/%s/ compiled", bad[i].pattern);
        free(p);
        cr_expect(strstr(err, bad[i].want) != NULL, "/%s/: \"%s\" lacks \"%s\"", bad[i].pattern, err,
                  bad[i].want);
    }
    /* 255 positions fit, 256 do not */
    char big[32];
    snprintf(big, sizeof big, "^a{%d}$", JRE_MAX_POS);
    free(compiled(big));
    snprintf(big, sizeof big, "^a{%d}$", JRE_MAX_POS + 1);
    char err[200];
    cr_expect_null(jre_compile(big, strlen(big), err, sizeof err));
}

/* A random pattern over a, b, c in the part of the syntax where ECMA-262
 * and POSIX extended expressions agree on which strings match (no
 * backslashes: they differ inside brackets). */
static void gen_pattern(struct rng *g, char *out, size_t *n, int depth)
{
    const int parts = 1 + (int)rng_below(g, 3);
    for (int k = 0; k < parts; k++) {
        const unsigned r = (unsigned)rng_below(g, depth < 3 ? 8 : 5);
        if (r <= 2) out[(*n)++] = "abc"[r];
        else if (r == 3) out[(*n)++] = '.';
        else if (r == 4) {
            static const char *const cls[] = {"[ab]", "[^a]", "[a-c]", "[^bc]"};
            const char *c = cls[rng_below(g, 4)];
            memcpy(out + *n, c, strlen(c));
            *n += strlen(c);
        } else {
            out[(*n)++] = '(';
            gen_pattern(g, out, n, depth + 1);
            if (r == 7) {
                out[(*n)++] = '|';
                gen_pattern(g, out, n, depth + 1);
            }
            out[(*n)++] = ')';
        }
        static const char *const q[] = {"", "", "", "*", "+", "?", "{2}", "{0,2}", "{1,}", "{2,3}"};
        const char *qq = q[rng_below(g, 10)];
        memcpy(out + *n, qq, strlen(qq));
        *n += strlen(qq);
    }
}

Test(json_regex, agrees_with_posix_regexec)
{
    struct rng g;
    rng_seed(&g, 31);
    int matched = 0, total = 0;
    for (int it = 0; it < 400; it++) {
        char body[512];
        size_t n = 0;
        gen_pattern(&g, body, &n, 0);
        body[n] = 0;
        char pat[600];
        const unsigned anchors = (unsigned)rng_below(&g, 4);
        snprintf(pat, sizeof pat, "%s(%s)%s", anchors & 1 ? "^" : "", body, anchors & 2 ? "$" : "");
        char err[200];
        struct jre_prog *p = jre_compile(pat, strlen(pat), err, sizeof err);
        if (!p) {
            cr_assert(strstr(err, "more than 255") != NULL, "/%s/: %s", pat, err);
            continue;
        }
        regex_t re;
        cr_assert_eq(regcomp(&re, pat, REG_EXTENDED | REG_NOSUB), 0, "regcomp /%s/", pat);
        for (int k = 0; k < 30; k++) {
            char s[16];
            const int len = (int)rng_below(&g, 9);
            for (int i = 0; i < len; i++) s[i] = "abcd"[rng_below(&g, 4)];
            s[len] = 0;
            const bool want = regexec(&re, s, 0, NULL, 0) == 0;
            cr_assert_eq(jre_match(p, s, (size_t)len), want, "/%s/ on \"%s\": posix %d", pat, s, want);
            matched += want;
            total++;
        }
        regfree(&re);
        free(p);
    }
    cr_expect_gt(matched, total / 10, "too few matches for the test to show much");
    cr_expect_lt(matched, total - total / 10, "too few non-matches");
}

/* jre_can(set, lo, hi) is "some c in [lo, hi] steps", in sets reached along
 * strings, for ranges inside and across ASCII, Latin-1 and the surrogates. */
Test(json_regex, can_is_some_step)
{
    static const char *const pats[] = {"^[a-f]x[\\u00e0-\\u00ff]{2}$", "^(ab|[0-9]+)c$",
                                       "\\u4e00[^\\u4e01]", "^[^a-z]*$", "^.\\uFFFF$"};
    static const uint32_t ranges[][2] = {{0, 0x7F}, {'a', 'c'}, {'g', 'z'}, {'0', '9'}, {0xE0, 0xE5},
                                         {0x80, 0xDF}, {0xD700, 0xE100}, {0x4E00, 0x4E01},
                                         {0x4E01, 0x4E01}, {0xFFF0, 0xFFFF}, {'x', 'x'}};
    static const char *const prefixes[] = {"", "a", "ax", "ax\xc3\xa0", "ab", "12", "\xe4\xb8\x80", "Q"};
    for (size_t i = 0; i < sizeof pats / sizeof *pats; i++) {
        struct jre_prog *p = compiled(pats[i]);
        for (size_t k = 0; k < sizeof prefixes / sizeof *prefixes; k++) {
            uint64_t set[JRE_WORDS];
            jre_start(set);
            bool alive = true;
            const unsigned char *s = (const unsigned char *)prefixes[k];
            for (size_t j = 0; s[j] && alive;) {   /* decode the prefix's UTF-8 by hand */
                uint32_t c = s[j];
                int len = c < 0x80 ? 1 : c < 0xE0 ? 2 : 3;
                c &= len == 1 ? 0x7F : len == 2 ? 0x1F : 0x0F;
                for (int m = 1; m < len; m++) c = c << 6 | (s[j + m] & 0x3F);
                j += (size_t)len;
                alive = jre_step(p, set, c);
            }
            if (!alive) continue;
            for (size_t r = 0; r < sizeof ranges / sizeof *ranges; r++) {
                bool want = false;
                for (uint32_t c = ranges[r][0]; c <= ranges[r][1] && !want; c++) {
                    uint64_t t[JRE_WORDS];
                    memcpy(t, set, sizeof t);
                    want = jre_step(p, t, c);
                }
                cr_expect_eq(jre_can(p, set, ranges[r][0], ranges[r][1]), want,
                             "/%s/ after \"%s\", [%x, %x]", pats[i], prefixes[k], ranges[r][0],
                             ranges[r][1]);
            }
        }
        free(p);
    }
}
