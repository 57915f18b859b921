/* engine/rewards_math.c — answer checking: extraction (<answer> tag,
 * \boxed{}, last number), number parsing (thousands separators, fractions,
 * \frac), normalised string comparison, and the accuracy and countdown
 * rewards. Linear time on any input; no eval, no regex. Not a computer
 * algebra system: symbolic equivalence (math_verify) is out of scope. */
#include "rewards_internal.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

/* Longest answer (bytes) compared as a number or normalised string, and the
 * longest countdown equation; longer ones simply do not match. */
#define ANSWER_MAX 4096
#define EQUATION_MAX 1024
#define EQUATION_DEPTH_MAX 64
#define EQUATION_NUMBERS_MAX 32

/* The last non-overlapping <answer>(.*?)</answer>, as TinyZero's
 * re.finditer: scanning left to right, each match ends at the first
 * closing tag after its opening tag. */
static bool extract_answer_tag(const char *s, size_t n, const char **out, size_t *outn)
{
    bool found = false;
    const char *p = s, *end = s + n;
    for (;;) {
        const char *a = reward_find(p, (size_t)(end - p), "<answer>");
        if (!a)
            break;
        a += 8;
        const char *b = reward_find(a, (size_t)(end - a), "</answer>");
        if (!b)
            break;
        *out = a;
        *outn = (size_t)(b - a);
        found = true;
        p = b + 9;
    }
    return found;
}

/* The content of the last balanced \boxed{...} (or \fbox{...}). Candidates
 * are tried from the last one back; a scan that has not closed by the start
 * of an already-failed later candidate cannot close at all (its depth there
 * is >= 1 and that candidate never returned to 0), so the total work is
 * linear. */
static bool extract_boxed(const char *s, size_t n, const char **out, size_t *outn)
{
    size_t cap = 16, count = 0;
    size_t *starts = malloc(cap * sizeof *starts);
    if (!starts)
        return false;
    const char *p = s, *end = s + n;
    /* next occurrence of each spelling at or after p, searched again only
     * once p has passed it (each search is then linear overall) */
    const char *nb = reward_find(s, n, "\\boxed"), *nf = reward_find(s, n, "\\fbox");
    for (;;) {
        if (nb && nb < p)
            nb = reward_find(p, (size_t)(end - p), "\\boxed");
        if (nf && nf < p)
            nf = reward_find(p, (size_t)(end - p), "\\fbox");
        const char *a = nb, *f = nf;
        size_t skip = 6;
        if (!a || (f && f < a)) {
            a = f;
            skip = 5;
        }
        if (!a)
            break;
        const char *q = a + skip;
        while (q < end && *q == ' ')
            q++;
        if (q < end && *q == '{') {
            if (count == cap) {
                size_t *t = realloc(starts, 2 * cap * sizeof *starts);
                if (!t)
                    break;
                starts = t;
                cap *= 2;
            }
            starts[count++] = (size_t)(q - s);
        }
        p = a + skip;
    }
    bool found = false;
    size_t limit = n;
    while (count > 0 && !found) {
        size_t open = starts[--count];
        int depth = 0;
        for (size_t i = open; i < limit; i++) {
            if (s[i] == '{') {
                depth++;
            } else if (s[i] == '}' && --depth == 0) {
                *out = s + open + 1;
                *outn = i - open - 1;
                found = true;
                break;
            }
        }
        limit = open;
    }
    free(starts);
    return found;
}

/* Length of a number at s[0..n): -?digits(,ddd)*(.digits)?(/digits)? with
 * thousands groups only when every group has three digits; 0 if none. */
static size_t number_span(const char *s, size_t n)
{
    size_t i = 0;
    if (i < n && s[i] == '-')
        i++;
    size_t d0 = i;
    while (i < n && isdigit((unsigned char)s[i]))
        i++;
    if (i == d0)
        return 0;
    while (i + 3 < n && s[i] == ',' && isdigit((unsigned char)s[i + 1]) &&
           isdigit((unsigned char)s[i + 2]) && isdigit((unsigned char)s[i + 3]) &&
           (i + 4 >= n || !isdigit((unsigned char)s[i + 4])))
        i += 4;
    if (i + 1 < n && s[i] == '.' && isdigit((unsigned char)s[i + 1])) {
        i++;
        while (i < n && isdigit((unsigned char)s[i]))
            i++;
    }
    if (i + 1 < n && s[i] == '/' && isdigit((unsigned char)s[i + 1])) {
        i++;
        while (i < n && isdigit((unsigned char)s[i]))
            i++;
    }
    return i;
}

static bool extract_last_number(const char *s, size_t n, const char **out, size_t *outn)
{
    bool found = false;
    size_t i = 0;
    while (i < n) {
        unsigned char ch = (unsigned char)s[i];
        /* a number starts at a digit, or a '-' before one, not inside a word */
        if ((isdigit(ch) || (ch == '-' && i + 1 < n && isdigit((unsigned char)s[i + 1]))) &&
            (i == 0 || !isalnum((unsigned char)s[i - 1]))) {
            size_t len = number_span(s + i, n - i);
            if (len) {
                *out = s + i;
                *outn = len;
                found = true;
                i += len;
                continue;
            }
        }
        i++;
    }
    return found;
}

bool reward_extract_answer(enum reward_extract how, const char *s, size_t n, const char **out,
                           size_t *outn)
{
    switch (how) {
    case REWARD_EXTRACT_ANSWER_TAG: return extract_answer_tag(s, n, out, outn);
    case REWARD_EXTRACT_BOXED: return extract_boxed(s, n, out, outn);
    case REWARD_EXTRACT_LAST_NUMBER: return extract_last_number(s, n, out, outn);
    case REWARD_EXTRACT_AUTO:
        if (extract_answer_tag(s, n, out, outn)) {
            const char *b;
            size_t bn;
            if (extract_boxed(*out, *outn, &b, &bn)) {
                *out = b;
                *outn = bn;
            }
            return true;
        }
        return extract_boxed(s, n, out, outn) || extract_last_number(s, n, out, outn);
    }
    return false;
}

/* ---- normalisation and comparison ---- */

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Index of the '}' closing the '{' at s[0], or n when unbalanced. */
static size_t closing_brace(const char *s, size_t n)
{
    int depth = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '{')
            depth++;
        else if (s[i] == '}' && --depth == 0)
            return i;
    }
    return n;
}

/* Trims spaces, then strips up to four layers of math delimiters ($..$,
 * \(..\), \[..\]), \text{..} and redundant braces {..}; in place on a
 * NUL-terminated buffer, returns the new start. */
static char *strip_wrappers(char *s)
{
    for (int round = 0; round < 4; round++) {
        while (is_space(*s))
            s++;
        size_t n = strlen(s);
        while (n && is_space(s[n - 1]))
            s[--n] = 0;
        if (n >= 2 && s[0] == '$' && s[n - 1] == '$') {
            s[n - 1] = 0;
            s++;
        } else if (n >= 4 && s[0] == '\\' && (s[1] == '(' || s[1] == '[') && s[n - 2] == '\\' &&
                   (s[n - 1] == ')' || s[n - 1] == ']')) {
            s[n - 2] = 0;
            s += 2;
        } else if (n >= 7 && strncmp(s, "\\text{", 6) == 0 && s[n - 1] == '}') {
            s[n - 1] = 0;
            s += 6;
        } else if (n >= 2 && s[0] == '{' && closing_brace(s, n) == n - 1) {
            s[n - 1] = 0;
            s++;
        } else {
            break;
        }
    }
    return s;
}

/* Parses a plain number (sign, digits with optional valid thousands
 * separators, fraction part, exponent) spanning all of s; commas removed
 * into a scratch buffer for strtod. */
static bool parse_plain(const char *s, size_t n, double *v)
{
    char buf[128];
    size_t k = 0, i = 0;
    if (n == 0 || n >= sizeof buf)
        return false;
    if (s[i] == '-' || s[i] == '+')
        buf[k++] = s[i++];
    size_t d0 = i, group = 0;
    bool commas = false;
    while (i < n && (isdigit((unsigned char)s[i]) || s[i] == ',')) {
        if (s[i] == ',') {
            /* first group 1-3 digits, then groups of exactly 3 */
            if ((!commas && (group == 0 || group > 3)) || (commas && group != 3))
                return false;
            commas = true;
            group = 0;
        } else {
            buf[k++] = s[i];
            group++;
        }
        i++;
    }
    if (commas && group != 3)
        return false;
    bool int_digits = i > d0;
    if (i < n && s[i] == '.') {
        buf[k++] = s[i++];
        size_t f0 = i;
        while (i < n && isdigit((unsigned char)s[i]))
            buf[k++] = s[i++];
        if (!int_digits && i == f0)
            return false;
    } else if (!int_digits) {
        return false;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        buf[k++] = s[i++];
        if (i < n && (s[i] == '-' || s[i] == '+'))
            buf[k++] = s[i++];
        size_t e0 = i;
        while (i < n && isdigit((unsigned char)s[i]))
            buf[k++] = s[i++];
        if (i == e0)
            return false;
    }
    if (i != n)
        return false;
    buf[k] = 0;
    char *end;
    *v = strtod(buf, &end);
    return *end == 0 && isfinite(*v);
}

/* A number in the answer's usual spellings: 1,234.5 | -3/4 | \frac{3}{4} |
 * \dfrac{-3}{4} | $5 | 50% | x = 7 (the right-hand side of the last '=').
 * s is NUL-terminated scratch (modified). */
static bool parse_answer_number(char *s, double *v)
{
    char *eq = strrchr(s, '=');
    if (eq)
        s = eq + 1;
    s = strip_wrappers(s);
    size_t n = strlen(s);
    /* currency and percent signs, a full stop ending a sentence */
    while (n && (s[n - 1] == '.' || s[n - 1] == '%'))
        s[--n] = 0;
    if (n >= 2 && s[n - 2] == '\\' && s[n - 1] == '%')
        s[n -= 2] = 0;
    if (strncmp(s, "\\$", 2) == 0)
        s += 2, n -= 2;
    else if (s[0] == '$')
        s++, n--;
    s = strip_wrappers(s);
    n = strlen(s);
    bool neg = false;
    const char *t = s;
    if (*t == '-' && (strncmp(t + 1, "\\frac", 5) == 0 || strncmp(t + 1, "\\dfrac", 6) == 0 ||
                      strncmp(t + 1, "\\tfrac", 6) == 0)) {
        neg = true;
        t++;
    }
    const char *fr = NULL;
    if (strncmp(t, "\\frac{", 6) == 0)
        fr = t + 6;
    else if (strncmp(t, "\\dfrac{", 7) == 0 || strncmp(t, "\\tfrac{", 7) == 0)
        fr = t + 7;
    if (fr) {
        const char *c1 = strchr(fr, '}');
        if (!c1 || c1[1] != '{')
            return false;
        const char *c2 = strchr(c1 + 2, '}');
        if (!c2 || c2[1] != 0)
            return false;
        double a, b;
        if (!parse_plain(fr, (size_t)(c1 - fr), &a) ||
            !parse_plain(c1 + 2, (size_t)(c2 - c1 - 2), &b) || b == 0)
            return false;
        *v = (neg ? -a : a) / b;
        return true;
    }
    const char *slash = strchr(s, '/');
    if (slash) {
        double a, b;
        if (!parse_plain(s, (size_t)(slash - s), &a) ||
            !parse_plain(slash + 1, n - (size_t)(slash - s) - 1, &b) || b == 0)
            return false;
        *v = a / b;
        return true;
    }
    return parse_plain(s, n, v);
}

/* Normalised form for string comparison: wrappers stripped, trailing full
 * stop dropped, case-folded NFKC with whitespace runs collapsed to one
 * space. Invalid UTF-8 falls back to ASCII lower-casing. Caller frees. */
static char *normalize_string(const char *s, size_t n)
{
    char *tmp = malloc(n + 1);
    if (!tmp)
        return NULL;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    char *t = strip_wrappers(tmp);
    size_t m = strlen(t);
    while (m && (t[m - 1] == '.' || is_space(t[m - 1])))
        t[--m] = 0;
    utf8proc_uint8_t *folded = NULL;
    utf8proc_ssize_t fl = utf8proc_map((const utf8proc_uint8_t *)t, (utf8proc_ssize_t)m,
                                       &folded, UTF8PROC_COMPOSE | UTF8PROC_COMPAT |
                                       UTF8PROC_CASEFOLD | UTF8PROC_STABLE);
    const char *src = t;
    size_t srcn = m;
    if (fl >= 0) {
        src = (const char *)folded;
        srcn = (size_t)fl;
    }
    char *out = malloc(srcn + 1);
    size_t k = 0;
    if (out) {
        bool space = false;
        for (size_t i = 0; i < srcn; i++) {
            char c = src[i];
            if (is_space(c)) {
                space = k > 0;
                continue;
            }
            if (space)
                out[k++] = ' ';
            space = false;
            out[k++] = fl >= 0 ? c : (char)tolower((unsigned char)c);
        }
        out[k] = 0;
    }
    free(folded);
    free(tmp);
    return out;
}

static bool matches_one(const char *s, size_t n, const json_t *ref, double tol)
{
    double want, got;
    char buf[ANSWER_MAX + 1];
    bool ref_numeric = false;
    if (json_is_number(ref)) {
        want = json_number_value(ref);
        ref_numeric = true;
    } else if (json_is_string(ref)) {
        size_t rl = json_string_length(ref);
        if (rl <= ANSWER_MAX) {
            memcpy(buf, json_string_value(ref), rl);
            buf[rl] = 0;
            ref_numeric = parse_answer_number(buf, &want);
        }
    } else {
        return false;
    }
    if (ref_numeric) {
        memcpy(buf, s, n);
        buf[n] = 0;
        if (memchr(s, 0, n) || !parse_answer_number(buf, &got))
            return false;
        return fabs(got - want) <= tol * fmax(1.0, fabs(want));
    }
    char *a = normalize_string(s, n);
    char *b = normalize_string(json_string_value(ref), json_string_length(ref));
    bool eq = a && b && strcmp(a, b) == 0 && strlen(a) > 0;
    free(a);
    free(b);
    return eq;
}

bool reward_answer_matches(const char *s, size_t n, const json_t *ref, double tolerance)
{
    if (n > ANSWER_MAX)
        return false;
    if (json_is_array(ref)) {
        size_t i;
        const json_t *v;
        json_array_foreach(ref, i, v) if (matches_one(s, n, v, tolerance)) return true;
        return false;
    }
    return matches_one(s, n, ref, tolerance);
}

double reward_accuracy_score(const struct reward_component *c, const struct reward_item *it)
{
    const char *a;
    size_t an;
    if (!reward_extract_answer(c->extract, it->completion, it->completion_len, &a, &an))
        return 0.0;
    const json_t *ref = json_object_get(it->fields, c->reference);
    return reward_answer_matches(a, an, ref, c->tolerance) ? 1.0 : 0.0;
}

/* ---- countdown: a safe recursive-descent evaluator ---- */

struct eq_parser {
    const char *s, *end;
    int depth;
    bool bad;
    int count;
    long numbers[EQUATION_NUMBERS_MAX];
};

static void eq_skip(struct eq_parser *p)
{
    while (p->s < p->end && is_space(*p->s))
        p->s++;
}

static double eq_expr(struct eq_parser *p);

/* primary := integer | '(' expr ')'. Unary signs are not operations the
 * game allows, so they are rejected. */
static double eq_primary(struct eq_parser *p)
{
    eq_skip(p);
    if (p->s >= p->end) {
        p->bad = true;
        return 0;
    }
    if (*p->s == '(') {
        if (++p->depth > EQUATION_DEPTH_MAX) {
            p->bad = true;
            return 0;
        }
        p->s++;
        double v = eq_expr(p);
        eq_skip(p);
        if (p->bad || p->s >= p->end || *p->s != ')') {
            p->bad = true;
            return 0;
        }
        p->s++;
        p->depth--;
        return v;
    }
    if (!isdigit((unsigned char)*p->s)) {
        p->bad = true;
        return 0;
    }
    long v = 0;
    int digits = 0;
    while (p->s < p->end && isdigit((unsigned char)*p->s)) {
        if (++digits > 9) {
            p->bad = true;
            return 0;
        }
        v = v * 10 + (*p->s++ - '0');
    }
    if (p->count == EQUATION_NUMBERS_MAX) {
        p->bad = true;
        return 0;
    }
    p->numbers[p->count++] = v;
    return (double)v;
}

static double eq_term(struct eq_parser *p)
{
    double v = eq_primary(p);
    for (;;) {
        eq_skip(p);
        if (p->bad || p->s >= p->end || (*p->s != '*' && *p->s != '/'))
            return v;
        char op = *p->s++;
        double r = eq_primary(p);
        if (op == '*') {
            v *= r;
        } else if (r == 0) {
            p->bad = true; /* division by zero is a failure, not inf */
            return 0;
        } else {
            v /= r;
        }
    }
}

static double eq_expr(struct eq_parser *p)
{
    double v = eq_term(p);
    for (;;) {
        eq_skip(p);
        if (p->bad || p->s >= p->end || (*p->s != '+' && *p->s != '-'))
            return v;
        char op = *p->s++;
        double r = eq_term(p);
        v = op == '+' ? v + r : v - r;
    }
}

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

/* Whether eq uses each of want[0..nw) exactly once and equals target
 * (within 1e-5, TinyZero's tolerance). */
static bool countdown_correct(const char *eq, size_t n, const long *want, int nw, double target)
{
    if (n > EQUATION_MAX || memchr(eq, 0, n))
        return false;
    struct eq_parser p = {.s = eq, .end = eq + n};
    double v = eq_expr(&p);
    eq_skip(&p);
    if (p.bad || p.s != p.end || !isfinite(v) || p.count != nw)
        return false;
    long a[EQUATION_NUMBERS_MAX], b[EQUATION_NUMBERS_MAX];
    memcpy(a, p.numbers, sizeof(long) * nw);
    memcpy(b, want, sizeof(long) * nw);
    qsort(a, nw, sizeof *a, cmp_long);
    qsort(b, nw, sizeof *b, cmp_long);
    if (memcmp(a, b, sizeof(long) * nw) != 0)
        return false;
    return fabs(v - target) < 1e-5;
}

double reward_countdown_score(const struct reward_component *c, const struct reward_item *it)
{
    const char *a;
    size_t an;
    if (!reward_extract_answer(c->extract, it->completion, it->completion_len, &a, &an))
        return 0.0;
    const json_t *nums = json_object_get(it->fields, c->numbers_field);
    long want[EQUATION_NUMBERS_MAX];
    int nw = 0;
    size_t i;
    const json_t *v;
    json_array_foreach(nums, i, v) want[nw++] = (long)json_integer_value(v);
    double target = json_number_value(json_object_get(it->fields, c->target_field));
    if (countdown_correct(a, an, want, nw, target))
        return 1.0;
    return c->tinyzero ? c->format_score : 0.0;
}
