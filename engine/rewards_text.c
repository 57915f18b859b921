/* engine/rewards_text.c — the rewards that look at the completion's shape:
 * format, tag_count, language_consistency, length (cosine-scaled),
 * repetition, overlong and regex. Linear (or n log n) time on any bytes,
 * invalid UTF-8 and NULs included. Answer checking lives in rewards_math.c. */
#include "rewards_internal.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

/* memchr + memcmp rather than memmem: O(n * strlen(needle)) at worst, and
 * sanitizers' memmem interceptor checks the whole haystack on every call,
 * which makes repeated searches quadratic under ASan. */
const char *reward_find(const char *s, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    const char *end = s + n;
    while ((size_t)(end - s) >= m) {
        const char *p = memchr(s, needle[0], (size_t)(end - s) - m + 1);
        if (!p)
            return NULL;
        if (memcmp(p, needle, m) == 0)
            return p;
        s = p + 1;
    }
    return NULL;
}

static size_t count_occurrences(const char *s, size_t n, const char *needle)
{
    size_t k = 0, m = strlen(needle);
    const char *p = s, *end = s + n;
    while ((p = reward_find(p, (size_t)(end - p), needle)) != NULL) {
        k++;
        p += m;
    }
    return k;
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static bool only_ws(const char *s, const char *end)
{
    for (; s < end; s++)
        if (!is_ws(*s))
            return false;
    return true;
}

/* ---- format ---- */

/* Strict (open-r1's ^<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>$,
 * DOTALL): the whole completion has that shape, with one optional final
 * newline as Python's $ allows. Unlike open-r1's regex, each of the tags
 * must occur exactly once, so repeated or nested tags cannot satisfy it.
 * Template "think" ends after "\n</think>\n" with a non-empty remainder.
 * Lenient: optional whitespace, <think>...</think>, optional whitespace,
 * then <answer>...</answer> and only whitespace after (template "think":
 * any non-blank text after </think>); each tag exactly once. */
double reward_format_score(const struct reward_component *c, const struct reward_item *it)
{
    const char *s = it->completion, *end = s + it->completion_len;
    size_t n = it->completion_len;
    if (count_occurrences(s, n, "<think>") != 1 || count_occurrences(s, n, "</think>") != 1)
        return 0.0;
    size_t n_ans_open = count_occurrences(s, n, "<answer>");
    size_t n_ans_close = count_occurrences(s, n, "</answer>");
    if (c->think_only ? (n_ans_open > 1 || n_ans_close > 1)
                      : (n_ans_open != 1 || n_ans_close != 1))
        return 0.0;
    const char *t_open = reward_find(s, n, "<think>"), *t_close = reward_find(s, n, "</think>");
    const char *after = t_close + 8;
    if (c->strict) {
        if (t_open != s || n < 8 || s[7] != '\n')
            return 0.0;
        /* "<think>\n" X "\n</think>\n": the '\n' before </think> is not the
         * one after <think> (X may be empty) */
        if (t_close - s < 9 || t_close[-1] != '\n' || after >= end || *after != '\n')
            return 0.0;
        after++;
        if (c->think_only)
            return after < end ? 1.0 : 0.0;
        if (end - after < 9 || memcmp(after, "<answer>\n", 9) != 0)
            return 0.0;
        const char *content = after + 9;
        const char *stop = end;
        if (stop > content && stop[-1] == '\n')
            stop--; /* Python's $ matches before a final newline */
        if (stop - content < 10 || memcmp(stop - 10, "\n</answer>", 10) != 0)
            return 0.0;
        return 1.0;
    }
    if (!only_ws(s, t_open) || t_close < t_open)
        return 0.0;
    if (c->think_only)
        return only_ws(after, end) ? 0.0 : 1.0;
    const char *a_open = reward_find(s, n, "<answer>"), *a_close = reward_find(s, n, "</answer>");
    if (a_open < after || a_close < a_open + 8 || !only_ws(after, a_open) ||
        !only_ws(a_close + 9, end))
        return 0.0;
    return 1.0;
}

/* open-r1 tag_count_reward: 0.25 for each of "<think>\n", "\n</think>\n",
 * "\n<answer>\n", "\n</answer>" occurring exactly once. */
double reward_tag_count_score(const struct reward_component *c, const struct reward_item *it)
{
    static const char *const tags[] = {"<think>\n", "\n</think>\n", "\n<answer>\n",
                                       "\n</answer>"};
    double r = 0;
    for (int i = 0; i < 4; i++)
        if (count_occurrences(it->completion, it->completion_len, tags[i]) == 1)
            r += 0.25;
    return r;
}

/* ---- language consistency ---- */

static bool is_latin(utf8proc_int32_t cp)
{
    return (cp >= 'A' && cp <= 'Z') || (cp >= 'a' && cp <= 'z') || cp == 0xAA || cp == 0xBA ||
           (cp >= 0xC0 && cp <= 0x24F) || (cp >= 0x250 && cp <= 0x2AF) ||
           (cp >= 0x1D00 && cp <= 0x1DBF) || (cp >= 0x1E00 && cp <= 0x1EFF) ||
           (cp >= 0x2C60 && cp <= 0x2C7F) || (cp >= 0xA720 && cp <= 0xA7FF) ||
           (cp >= 0xAB30 && cp <= 0xAB6F) || (cp >= 0xFB00 && cp <= 0xFB06) ||
           (cp >= 0xFF21 && cp <= 0xFF3A) || (cp >= 0xFF41 && cp <= 0xFF5A);
}

static bool is_han(utf8proc_int32_t cp)
{
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x20000 && cp <= 0x323AF) ||
           cp == 0x3005 || cp == 0x3007 || (cp >= 0x2E80 && cp <= 0x2FDF);
}

/* Scripts written without spaces: each character counts as one word. */
static bool is_unspaced(utf8proc_int32_t cp)
{
    return is_han(cp) || (cp >= 0x3040 && cp <= 0x30FF) || (cp >= 0x31F0 && cp <= 0x31FF) ||
           (cp >= 0x0E00 && cp <= 0x0EFF) /* Thai, Lao */;
}

static bool is_letter(utf8proc_int32_t cp)
{
    utf8proc_category_t k = utf8proc_category(cp);
    return k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL ||
           k == UTF8PROC_CATEGORY_LT || k == UTF8PROC_CATEGORY_LM ||
           k == UTF8PROC_CATEGORY_LO || k == UTF8PROC_CATEGORY_MN ||
           k == UTF8PROC_CATEGORY_MC || k == UTF8PROC_CATEGORY_ME;
}

/* Length of the <think>/<answer> tag at s, or 0: tags are markup, not words. */
static size_t tag_at(const char *s, const char *end)
{
    static const char *const tags[] = {"<think>", "</think>", "<answer>", "</answer>"};
    for (int i = 0; i < 4; i++) {
        size_t m = strlen(tags[i]);
        if ((size_t)(end - s) >= m && memcmp(s, tags[i], m) == 0)
            return m;
    }
    return 0;
}

/* The R1 paper (2501.12948 §2.3.3): "the proportion of target language
 * words in the CoT". Words are runs of letters (Unicode categories L and M);
 * for "en" a word counts when all its letters are Latin; characters of
 * unspaced scripts (Han, kana, Thai) are a word each, and for "zh" each Han
 * character is a target word. Digits, punctuation, invalid bytes and the
 * <think>/<answer> tags are not words. No words at all scores 0. The chain
 * of thought is the text in the first <think>...</think> (to the end when
 * unclosed; before </think> when <think> was in the prompt; the whole
 * completion when neither tag is there), or the whole completion with
 * scope "completion". */
double reward_language_score(const struct reward_component *c, const struct reward_item *it)
{
    const char *s = it->completion, *end = s + it->completion_len;
    if (!c->whole_completion) {
        const char *o = reward_find(s, it->completion_len, "<think>");
        if (o) {
            s = o + 7;
            const char *e = reward_find(s, (size_t)(end - s), "</think>");
            if (e)
                end = e;
        } else {
            const char *e = reward_find(s, it->completion_len, "</think>");
            if (e)
                end = e;
        }
    }
    size_t words = 0, target = 0;
    bool in_word = false, word_ok = true;
    while (s < end) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = *s == '<' ? (utf8proc_ssize_t)tag_at(s, end) : 0;
        if (k > 0) {
            cp = -1; /* a tag separates words like punctuation */
        } else if ((k = utf8proc_iterate((const utf8proc_uint8_t *)s, end - s, &cp)) <= 0) {
            k = 1;
            cp = -1;
        }
        s += k;
        if (cp >= 0 && is_unspaced(cp)) {
            if (in_word) {
                words++;
                target += word_ok && c->language == REWARD_LANG_EN;
                in_word = false;
            }
            words++;
            target += c->language == REWARD_LANG_ZH && is_han(cp);
            continue;
        }
        if (cp >= 0 && is_letter(cp)) {
            if (!in_word) {
                in_word = true;
                word_ok = true;
            }
            bool mark = utf8proc_category(cp) >= UTF8PROC_CATEGORY_MN &&
                        utf8proc_category(cp) <= UTF8PROC_CATEGORY_ME;
            if (!mark && !is_latin(cp))
                word_ok = false;
            continue;
        }
        if (in_word) {
            words++;
            target += word_ok && c->language == REWARD_LANG_EN;
            in_word = false;
        }
    }
    if (in_word) {
        words++;
        target += word_ok && c->language == REWARD_LANG_EN;
    }
    return words ? (double)target / (double)words : 0.0;
}

/* ---- length, overlong ---- */

static size_t count_codepoints(const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

/* open-r1 get_cosine_scaled_reward (from "Demystifying Long CoT", 2502.03373):
 * r = lo + (hi - lo)(1 + cos(pi L / max_len)) / 2, with (lo, hi) =
 * (min_value_correct, max_value_correct) when correct and (max_value_wrong,
 * min_value_wrong) when not: short correct answers earn most, short wrong
 * ones lose most. L is in characters (open-r1) or tokens; unlike open-r1,
 * L / max_len is clamped to 1 so the cosine does not rise again. */
double reward_length_score(const struct reward_component *c, const struct reward_item *it)
{
    bool correct = reward_accuracy_score(c, it) > 0.5;
    double len = c->length_in_tokens ? (double)it->completion_tokens
                                     : (double)count_codepoints(it->completion,
                                                                it->completion_len);
    double progress = fmin(1.0, len / (double)c->max_len);
    double cosine = cos(progress * M_PI);
    double lo = correct ? c->min_value_correct : c->max_value_wrong;
    double hi = correct ? c->max_value_correct : c->min_value_wrong;
    return lo + 0.5 * (hi - lo) * (1.0 + cosine);
}

/* DAPO (2503.14476) eq. 13 soft overlong punishment, as open-r1's
 * get_soft_overlong_punishment: 0 up to max - cache tokens, then linear down
 * to -1 at max, -1 beyond. */
double reward_overlong_score(const struct reward_component *c, const struct reward_item *it)
{
    double L = (double)it->completion_tokens, max = (double)c->max_completion_len,
           cache = (double)c->soft_punish_cache;
    if (L <= max - cache)
        return 0.0;
    if (L <= max)
        return (max - cache - L) / cache;
    return -1.0;
}

/* ---- repetition ---- */

/* Python's str.isspace() characters, which str.split() splits on. */
static bool is_py_space(utf8proc_int32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 ||
           cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
           cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* open-r1 get_repetition_penalty_reward ("Demystifying Long CoT" App. C.2):
 * words = text.lower().split(); penalty = (1 - distinct n-grams / n-grams)
 * * max_penalty; 0 for an empty text or fewer than n words. Words and
 * n-grams are compared by 64-bit hashes (of the lower-cased code points;
 * invalid bytes hash as themselves), distinct ones counted by sorting. */
double reward_repetition_score(const struct reward_component *c, const struct reward_item *it)
{
    const char *s = it->completion, *end = s + it->completion_len;
    size_t cap = 0, nw = 0;
    uint64_t *w = NULL;
    uint64_t h = 0;
    bool in_word = false;
    while (s <= end) {
        utf8proc_int32_t cp = ' ';
        utf8proc_ssize_t k = 1;
        if (s < end) {
            k = utf8proc_iterate((const utf8proc_uint8_t *)s, end - s, &cp);
            if (k <= 0) {
                k = 1;
                cp = 0x110000 + (unsigned char)*s;
            }
        }
        s += k;
        if (cp <= 0x10FFFF && is_py_space(cp)) {
            if (in_word) {
                if (nw == cap) {
                    cap = cap ? 2 * cap : 256;
                    uint64_t *t = realloc(w, cap * sizeof *w);
                    if (!t) {
                        free(w);
                        return 0.0;
                    }
                    w = t;
                }
                w[nw++] = h;
                in_word = false;
            }
            continue;
        }
        if (!in_word) {
            in_word = true;
            h = 0x9e3779b97f4a7c15ULL;
        }
        if (cp <= 0x10FFFF)
            cp = utf8proc_tolower(cp);
        h = mix64(h ^ (uint64_t)cp);
    }
    double r = 0.0;
    size_t n = (size_t)c->ngram_size;
    if (nw >= n && nw > 0) {
        size_t total = nw - n + 1;
        /* the n-gram hash of words i..i+n-1, in place (reads ahead only) */
        for (size_t i = 0; i < total; i++) {
            uint64_t g = 0x243f6a8885a308d3ULL;
            for (size_t j = 0; j < n; j++)
                g = mix64(g ^ w[i + j]) + j;
            w[i] = g;
        }
        qsort(w, total, sizeof *w, cmp_u64);
        size_t distinct = 1;
        for (size_t i = 1; i < total; i++)
            distinct += w[i] != w[i - 1];
        r = (1.0 - (double)distinct / (double)total) * c->max_penalty;
    }
    free(w);
    return r;
}

/* ---- regex ---- */

/* 1 when the pattern matches the completion (and, with "field", when the
 * first capture group, or the whole match without groups, equals that
 * dataset field as an answer does); else 0. Hitting the match limit counts
 * as a failure scoring 0. */
double reward_regex_score(const struct reward_component *c, const struct reward_item *it,
                          bool *failed)
{
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(c->re, NULL);
    double r = 0.0;
    if (!mc || !md) {
        *failed = true;
        goto out;
    }
    pcre2_set_match_limit(mc, (uint32_t)c->match_limit);
    pcre2_set_depth_limit(mc, (uint32_t)c->match_limit);
    pcre2_set_heap_limit(mc, 64 * 1024); /* KiB */
    int rc = pcre2_match(c->re, (PCRE2_SPTR)it->completion, it->completion_len, 0, 0, md, mc);
    if (rc == PCRE2_ERROR_NOMATCH) {
        goto out;
    } else if (rc < 0) {
        *failed = true; /* match, depth or heap limit, or a bad subject */
        goto out;
    }
    if (!c->field) {
        r = 1.0;
        goto out;
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    int g = rc > 1 ? 1 : 0;
    if (ov[2 * g] == PCRE2_UNSET)
        goto out;
    const json_t *ref = json_object_get(it->fields, c->field);
    r = reward_answer_matches(it->completion + ov[2 * g], ov[2 * g + 1] - ov[2 * g], ref, 1e-6)
            ? 1.0 : 0.0;
out:
    pcre2_match_data_free(md);
    pcre2_match_context_free(mc);
    return r;
}

/* ---- UTF-8 sanitising for JSON ---- */

char *reward_utf8_sanitize(const char *s, size_t n)
{
    /* worst case: every byte becomes U+FFFD (3 bytes) */
    char *out = malloc(3 * n + 1);
    if (!out)
        return NULL;
    size_t k = 0;
    const char *p = s, *end = s + n;
    while (p < end) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t len = utf8proc_iterate((const utf8proc_uint8_t *)p, end - p, &cp);
        if (len <= 0 || cp == 0) {
            memcpy(out + k, "\xEF\xBF\xBD", 3);
            k += 3;
            p++;
            continue;
        }
        memcpy(out + k, p, (size_t)len);
        k += (size_t)len;
        p += len;
    }
    out[k] = 0;
    return out;
}
