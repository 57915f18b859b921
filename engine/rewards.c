/* engine/rewards.c — reward specifications: parsing and validation of the
 * JSON spec (DESIGN.md "Reward specification"), dataset field checks, and
 * batch scoring that dispatches to the scorers in rewards_math.c,
 * rewards_text.c and rewards_http.c. No scoring rules live here.
 *
 * Spec fields. Top level: "name", "description", "components" (1..16).
 * Every component: "type", "weight" (1.0), "name" (metric key; default the
 * type, then type_2, ...). Per type (defaults in parentheses):
 *   accuracy    extract (auto) answer_tag|boxed|last_number|auto,
 *               reference (answer) dataset field, tolerance (1e-6, relative
 *               with an absolute floor: |a-b| <= tol * max(1,|ref|)) -> 1 / 0
 *   countdown   numbers (numbers), target (target) fields, extract
 *               (answer_tag) answer_tag|boxed, scoring (binary)
 *               binary|tinyzero, format_score (0.1) -> 1 / 0, or 1 /
 *               format_score / 0 (no answer) with tinyzero
 *   format      mode (strict) strict|lenient, template (think_answer)
 *               think_answer|think -> 1 / 0
 *   tag_count   -> 0, 0.25, ... 1
 *   language_consistency  language (en) en|zh, scope (think) think|completion
 *               -> fraction of words in the language's script
 *   length      the accuracy fields plus min_value_wrong (-1),
 *               max_value_wrong (-0.5), min_value_correct (0.5),
 *               max_value_correct (1), max_len (1000), unit (chars)
 *               chars|tokens -> cosine-scaled value
 *   repetition  ngram_size (3), max_penalty (-1, <= 0) -> [max_penalty, 0]
 *   overlong    max_completion_len, soft_punish_cache (both required,
 *               tokens) -> [-1, 0]
 *   regex       pattern (PCRE2, required), field (compare group 1 or the
 *               match with this field), match_limit (1e6) -> 1 / 0
 *   http        url (required), timeout_ms (10000), retries (2),
 *               max_concurrency (4), batch_size (64), on_error (skip)
 *               skip|zero, headers ({name: value}) -> the grader's numbers */
#include "rewards_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const TYPE_NAMES[] = {
    "accuracy", "countdown", "format", "tag_count", "language_consistency",
    "length", "repetition", "overlong", "regex", "http", NULL,
};

static const char *const EXTRACT_NAMES[] = {"answer_tag", "boxed", "last_number", "auto", NULL};

/* Default regex backtracking budget (pcre2 match limit and depth limit). */
#define REGEX_MATCH_LIMIT_DEFAULT 1000000L

static bool fail(struct reward_fields *f, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Fills f->err with "reward spec: <path>.<key>: <message>"; returns false. */
static bool fail(struct reward_fields *f, const char *key, const char *fmt, ...)
{
    int k = snprintf(f->err, f->errlen, "reward spec: %s%s%s: ", f->path, key ? "." : "",
                     key ? key : "");
    if (k >= 0 && (size_t)k < f->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(f->err + k, f->errlen - (size_t)k, fmt, ap);
        va_end(ap);
    }
    return false;
}

const json_t *reward_get_raw(struct reward_fields *f, const char *key)
{
    if (f->nknown < (int)(sizeof f->known / sizeof *f->known))
        f->known[f->nknown++] = key;
    return json_object_get(f->obj, key);
}

bool reward_get_number(struct reward_fields *f, const char *key, double def, double lo,
                       double hi, double *out)
{
    const json_t *v = reward_get_raw(f, key);
    if (!v) {
        *out = def;
        return true;
    }
    if (!json_is_number(v))
        return fail(f, key, "expected a number");
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi))
        return fail(f, key, "%g is out of range [%g, %g]", x, lo, hi);
    *out = x;
    return true;
}

bool reward_get_long(struct reward_fields *f, const char *key, long def, long lo, long hi,
                     long *out)
{
    const json_t *v = reward_get_raw(f, key);
    if (!v) {
        *out = def;
        return true;
    }
    if (!json_is_integer(v))
        return fail(f, key, "expected an integer");
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return fail(f, key, "%lld is out of range [%ld, %ld]", (long long)x, lo, hi);
    *out = (long)x;
    return true;
}

bool reward_get_bool(struct reward_fields *f, const char *key, bool def, bool *out)
{
    const json_t *v = reward_get_raw(f, key);
    if (!v) {
        *out = def;
        return true;
    }
    if (!json_is_boolean(v))
        return fail(f, key, "expected true or false");
    *out = json_is_true(v);
    return true;
}

bool reward_get_string(struct reward_fields *f, const char *key, const char *def,
                       const char **out)
{
    const json_t *v = reward_get_raw(f, key);
    if (!v) {
        if (!def)
            return fail(f, key, "required for type \"%s\"", f->type);
        *out = def;
        return true;
    }
    if (!json_is_string(v))
        return fail(f, key, "expected a string");
    if (json_string_length(v) == 0 || strlen(json_string_value(v)) != json_string_length(v))
        return fail(f, key, "expected a non-empty string without NUL");
    *out = json_string_value(v);
    return true;
}

bool reward_get_string_opt(struct reward_fields *f, const char *key, const char **out)
{
    *out = NULL;
    return !json_object_get(f->obj, key) ? (reward_get_raw(f, key), true)
                                         : reward_get_string(f, key, NULL, out);
}

bool reward_get_enum(struct reward_fields *f, const char *key, const char *const *options,
                     int def, int *out)
{
    const char *s;
    if (!reward_get_string(f, key, options[def], &s))
        return false;
    for (int i = 0; options[i]; i++)
        if (strcmp(s, options[i]) == 0) {
            *out = i;
            return true;
        }
    char list[256] = "";
    size_t k = 0;
    for (int i = 0; options[i] && k < sizeof list; i++)
        k += (size_t)snprintf(list + k, sizeof list - k, "%s\"%s\"", i ? ", " : "", options[i]);
    return fail(f, key, "unknown value \"%.64s\" (expected one of %s)", s, list);
}

bool reward_fields_done(struct reward_fields *f)
{
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)f->obj, key, v) {
        bool ok = false;
        for (int i = 0; i < f->nknown && !ok; i++)
            ok = strcmp(key, f->known[i]) == 0;
        if (!ok)
            return fail(f, NULL, "unknown field \"%.64s\" for type \"%s\"", key, f->type);
    }
    return true;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* accuracy's answer options, shared with length (which needs correctness). */
static bool parse_answer_opts(struct reward_fields *f, struct reward_component *c, int def)
{
    int ex;
    const char *ref;
    if (!reward_get_enum(f, "extract", EXTRACT_NAMES, def, &ex) ||
        !reward_get_string(f, "reference", "answer", &ref) ||
        !reward_get_number(f, "tolerance", 1e-6, 0, 1e6, &c->tolerance))
        return false;
    c->extract = (enum reward_extract)ex;
    c->reference = strdup(ref);
    return c->reference != NULL;
}

static bool parse_countdown(struct reward_fields *f, struct reward_component *c)
{
    static const char *const extracts[] = {"answer_tag", "boxed", NULL};
    static const char *const scorings[] = {"binary", "tinyzero", NULL};
    int ex, sc;
    const char *nf, *tf;
    if (!reward_get_enum(f, "extract", extracts, 0, &ex) ||
        !reward_get_string(f, "numbers", "numbers", &nf) ||
        !reward_get_string(f, "target", "target", &tf) ||
        !reward_get_enum(f, "scoring", scorings, 0, &sc) ||
        !reward_get_number(f, "format_score", 0.1, -1e6, 1e6, &c->format_score))
        return false;
    c->extract = (enum reward_extract)ex;
    c->tinyzero = sc == 1;
    c->numbers_field = strdup(nf);
    c->target_field = strdup(tf);
    return c->numbers_field && c->target_field;
}

static bool parse_format(struct reward_fields *f, struct reward_component *c)
{
    static const char *const modes[] = {"strict", "lenient", NULL};
    static const char *const templates[] = {"think_answer", "think", NULL};
    int m, t;
    if (!reward_get_enum(f, "mode", modes, 0, &m) ||
        !reward_get_enum(f, "template", templates, 0, &t))
        return false;
    c->strict = m == 0;
    c->think_only = t == 1;
    return true;
}

static bool parse_language(struct reward_fields *f, struct reward_component *c)
{
    static const char *const langs[] = {"en", "zh", NULL};
    static const char *const scopes[] = {"think", "completion", NULL};
    int l, s;
    if (!reward_get_enum(f, "language", langs, 0, &l) ||
        !reward_get_enum(f, "scope", scopes, 0, &s))
        return false;
    c->language = (enum reward_language)l;
    c->whole_completion = s == 1;
    return true;
}

static bool parse_length(struct reward_fields *f, struct reward_component *c)
{
    static const char *const units[] = {"chars", "tokens", NULL};
    int u;
    if (!parse_answer_opts(f, c, REWARD_EXTRACT_AUTO) ||
        !reward_get_number(f, "min_value_wrong", -1.0, -1e6, 1e6, &c->min_value_wrong) ||
        !reward_get_number(f, "max_value_wrong", -0.5, -1e6, 1e6, &c->max_value_wrong) ||
        !reward_get_number(f, "min_value_correct", 0.5, -1e6, 1e6, &c->min_value_correct) ||
        !reward_get_number(f, "max_value_correct", 1.0, -1e6, 1e6, &c->max_value_correct) ||
        !reward_get_long(f, "max_len", 1000, 1, 100000000L, &c->max_len) ||
        !reward_get_enum(f, "unit", units, 0, &u))
        return false;
    c->length_in_tokens = u == 1;
    return true;
}

static bool parse_repetition(struct reward_fields *f, struct reward_component *c)
{
    long n;
    if (!reward_get_long(f, "ngram_size", 3, 1, 64, &n) ||
        !reward_get_number(f, "max_penalty", -1.0, -1e6, 0.0, &c->max_penalty))
        return false;
    c->ngram_size = (int)n;
    return true;
}

static bool parse_overlong(struct reward_fields *f, struct reward_component *c)
{
    if (!reward_get_long(f, "max_completion_len", -1, 1, 100000000L, &c->max_completion_len) ||
        !reward_get_long(f, "soft_punish_cache", -1, 1, 100000000L, &c->soft_punish_cache))
        return false;
    if (!json_object_get(f->obj, "max_completion_len"))
        return fail(f, "max_completion_len", "required for type \"overlong\"");
    if (!json_object_get(f->obj, "soft_punish_cache"))
        return fail(f, "soft_punish_cache", "required for type \"overlong\"");
    if (c->soft_punish_cache > c->max_completion_len)
        return fail(f, "soft_punish_cache", "%ld exceeds max_completion_len %ld",
                    c->soft_punish_cache, c->max_completion_len);
    return true;
}

static bool parse_regex(struct reward_fields *f, struct reward_component *c)
{
    const char *pat, *field;
    long limit;
    if (!reward_get_string(f, "pattern", NULL, &pat) ||
        !reward_get_string_opt(f, "field", &field) ||
        !reward_get_long(f, "match_limit", REGEX_MATCH_LIMIT_DEFAULT, 1000, 100000000L, &limit))
        return false;
    int code;
    PCRE2_SIZE off;
    c->re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                          PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &code, &off, NULL);
    if (!c->re) {
        PCRE2_UCHAR msg[128];
        pcre2_get_error_message(code, msg, sizeof msg);
        return fail(f, "pattern", "%s at offset %zu", (const char *)msg, (size_t)off);
    }
    c->match_limit = (unsigned long)limit;
    c->field = dup_or_null(field);
    return !field || c->field;
}

static bool parse_component(const json_t *obj, int idx, struct reward_component *c, char *err,
                            size_t errlen)
{
    struct reward_fields f = {.obj = obj, .err = err, .errlen = errlen, .type = "?"};
    snprintf(f.path, sizeof f.path, "components[%d]", idx);
    c->index = idx;
    if (!json_is_object(obj))
        return fail(&f, NULL, "expected an object");
    const json_t *t = reward_get_raw(&f, "type");
    if (!t)
        return fail(&f, "type", "required");
    if (!json_is_string(t))
        return fail(&f, "type", "expected a string");
    int type = -1;
    for (int i = 0; TYPE_NAMES[i]; i++)
        if (strcmp(json_string_value(t), TYPE_NAMES[i]) == 0)
            type = i;
    if (type < 0)
        return fail(&f, "type", "unknown type \"%.64s\" (expected accuracy, countdown, format, "
                    "tag_count, language_consistency, length, repetition, overlong, regex "
                    "or http)", json_string_value(t));
    c->type = (enum reward_type)type;
    f.type = TYPE_NAMES[type];
    const char *name;
    if (!reward_get_string_opt(&f, "name", &name))
        return false;
    if (name && strlen(name) >= REWARD_NAME_MAX)
        return fail(&f, "name", "longer than %d bytes", REWARD_NAME_MAX - 1);
    if (name)
        snprintf(c->name, sizeof c->name, "%s", name);
    if (!reward_get_number(&f, "weight", 1.0, -1e9, 1e9, &c->weight))
        return false;
    bool ok;
    switch (c->type) {
    case REWARD_ACCURACY: ok = parse_answer_opts(&f, c, REWARD_EXTRACT_AUTO); break;
    case REWARD_COUNTDOWN: ok = parse_countdown(&f, c); break;
    case REWARD_FORMAT: ok = parse_format(&f, c); break;
    case REWARD_TAG_COUNT: ok = true; break;
    case REWARD_LANGUAGE: ok = parse_language(&f, c); break;
    case REWARD_LENGTH: ok = parse_length(&f, c); break;
    case REWARD_REPETITION: ok = parse_repetition(&f, c); break;
    case REWARD_OVERLONG: ok = parse_overlong(&f, c); break;
    case REWARD_REGEX: ok = parse_regex(&f, c); break;
    case REWARD_HTTP: ok = (c->http = reward_http_parse(&f)) != NULL; break;
    default: ok = false;
    }
    return ok && reward_fields_done(&f);
}

static void component_deinit(struct reward_component *c)
{
    free(c->reference);
    free(c->numbers_field);
    free(c->target_field);
    free(c->field);
    pcre2_code_free(c->re);
    reward_http_free(c->http);
}

void reward_spec_free(struct reward_spec *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->n; i++)
        component_deinit(&s->c[i]);
    free(s->name);
    free(s);
}

/* Default names: the type, then type_2, type_3 for repeats; a name given
 * twice is an error. */
static bool assign_names(struct reward_spec *s, char *err, size_t errlen)
{
    for (int i = 0; i < s->n; i++) {
        struct reward_component *c = &s->c[i];
        if (c->name[0])
            continue;
        const char *base = TYPE_NAMES[c->type];
        for (int k = 1;; k++) {
            if (k == 1)
                snprintf(c->name, sizeof c->name, "%s", base);
            else
                snprintf(c->name, sizeof c->name, "%s_%d", base, k);
            bool taken = false;
            for (int j = 0; j < s->n && !taken; j++)
                taken = j != i && strcmp(s->c[j].name, c->name) == 0;
            if (!taken)
                break;
        }
    }
    for (int i = 0; i < s->n; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(s->c[i].name, s->c[j].name) == 0) {
                snprintf(err, errlen, "reward spec: components[%d].name: \"%s\" is already "
                         "used by components[%d]", i, s->c[i].name, j);
                return false;
            }
    return true;
}

struct reward_spec *reward_spec_parse(const json_t *spec, char *err, size_t errlen)
{
    if (!json_is_object(spec)) {
        snprintf(err, errlen, "reward spec: expected a JSON object");
        return NULL;
    }
    struct reward_spec *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "reward spec: out of memory");
        return NULL;
    }
    struct reward_fields f = {.obj = spec, .err = err, .errlen = errlen, .type = "spec"};
    const char *name = "";
    const json_t *nv = reward_get_raw(&f, "name");
    const json_t *comps = reward_get_raw(&f, "components");
    const json_t *desc = reward_get_raw(&f, "description");
    if (nv && !json_is_string(nv)) {
        snprintf(err, errlen, "reward spec: name: expected a string");
        goto fail;
    }
    if (desc && !json_is_string(desc)) {
        snprintf(err, errlen, "reward spec: description: expected a string");
        goto fail;
    }
    if (nv)
        name = json_string_value(nv);
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)spec, key, v) {
        if (strcmp(key, "name") && strcmp(key, "components") && strcmp(key, "description")) {
            snprintf(err, errlen, "reward spec: unknown field \"%.64s\" (expected name, "
                     "description, components)", key);
            goto fail;
        }
    }
    if (!comps) {
        snprintf(err, errlen, "reward spec: components: required");
        goto fail;
    }
    if (!json_is_array(comps) || json_array_size(comps) == 0) {
        snprintf(err, errlen, "reward spec: components: expected a non-empty array");
        goto fail;
    }
    if (json_array_size(comps) > REWARD_MAX_COMPONENTS) {
        snprintf(err, errlen, "reward spec: components: %zu components (at most %d)",
                 json_array_size(comps), REWARD_MAX_COMPONENTS);
        goto fail;
    }
    s->name = strdup(name);
    if (!s->name)
        goto fail;
    size_t i;
    json_array_foreach(comps, i, v) {
        s->n = (int)i + 1;
        if (!parse_component(v, (int)i, &s->c[i], err, errlen))
            goto fail;
    }
    if (!assign_names(s, err, errlen))
        goto fail;
    return s;
fail:
    reward_spec_free(s);
    return NULL;
}

struct reward_spec *reward_spec_load(const char *path, char *err, size_t errlen)
{
    json_error_t je;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        snprintf(err, errlen, "reward spec: %s:%d:%d: %s", path, je.line, je.column, je.text);
        return NULL;
    }
    struct reward_spec *s = reward_spec_parse(j, err, errlen);
    json_decref(j);
    return s;
}

const char *reward_spec_name(const struct reward_spec *s)
{
    return s->name;
}

int reward_spec_count(const struct reward_spec *s)
{
    return s->n;
}

const char *reward_spec_component_name(const struct reward_spec *s, int k)
{
    return s->c[k].name;
}

double reward_spec_component_weight(const struct reward_spec *s, int k)
{
    return s->c[k].weight;
}

static int field_error(char *err, size_t errlen, const struct reward_component *c,
                       const char *field, const char *what)
{
    snprintf(err, errlen, "field \"%s\" %s (components[%d], %s)", field, what, c->index,
             TYPE_NAMES[c->type]);
    return -1;
}

int reward_check_fields(const struct reward_spec *s, const json_t *fields, char *err,
                        size_t errlen)
{
    for (int k = 0; k < s->n; k++) {
        const struct reward_component *c = &s->c[k];
        if (c->type == REWARD_ACCURACY || c->type == REWARD_LENGTH) {
            const json_t *r = json_object_get(fields, c->reference);
            if (!r)
                return field_error(err, errlen, c, c->reference, "is missing");
            if (!json_is_string(r) && !json_is_number(r) && !json_is_array(r))
                return field_error(err, errlen, c, c->reference,
                                   "must be a string, a number or an array of them");
        } else if (c->type == REWARD_COUNTDOWN) {
            const json_t *nums = json_object_get(fields, c->numbers_field);
            const json_t *t = json_object_get(fields, c->target_field);
            if (!nums)
                return field_error(err, errlen, c, c->numbers_field, "is missing");
            if (!json_is_array(nums) || json_array_size(nums) == 0 || json_array_size(nums) > 32)
                return field_error(err, errlen, c, c->numbers_field,
                                   "must be an array of 1 to 32 integers");
            size_t i;
            const json_t *v;
            json_array_foreach(nums, i, v) if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                                               json_integer_value(v) > 999999999)
                return field_error(err, errlen, c, c->numbers_field,
                                   "must hold integers in 0..999999999");
            if (!t)
                return field_error(err, errlen, c, c->target_field, "is missing");
            if (!json_is_number(t))
                return field_error(err, errlen, c, c->target_field, "must be a number");
        } else if (c->type == REWARD_REGEX && c->field) {
            const json_t *r = json_object_get(fields, c->field);
            if (!r)
                return field_error(err, errlen, c, c->field, "is missing");
            if (!json_is_string(r) && !json_is_number(r) && !json_is_array(r))
                return field_error(err, errlen, c, c->field,
                                   "must be a string, a number or an array of them");
        }
    }
    return 0;
}

static bool needs_tokens(const struct reward_component *c)
{
    return c->type == REWARD_OVERLONG || (c->type == REWARD_LENGTH && c->length_in_tokens);
}

int reward_score_batch(const struct reward_spec *s, const struct reward_item *items, size_t n,
                       struct reward_result *out, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        char e[256];
        if (reward_check_fields(s, items[i].fields, e, sizeof e) != 0) {
            snprintf(err, errlen, "item %zu: %s", i, e);
            return -1;
        }
        for (int k = 0; k < s->n; k++)
            if (needs_tokens(&s->c[k]) && items[i].completion_tokens < 0) {
                snprintf(err, errlen, "item %zu: completion_tokens is unknown (components[%d], "
                         "%s counts tokens)", i, k, TYPE_NAMES[s->c[k].type]);
                return -1;
            }
        memset(&out[i], 0, sizeof out[i]);
    }
    double *vals = NULL;
    bool *fails = NULL;
    for (int k = 0; k < s->n; k++) {
        const struct reward_component *c = &s->c[k];
        if (c->type == REWARD_HTTP) {
            if (!vals) {
                vals = malloc(sizeof *vals * (n ? n : 1));
                fails = malloc(sizeof *fails * (n ? n : 1));
                if (!vals || !fails) {
                    free(vals);
                    free(fails);
                    snprintf(err, errlen, "reward: out of memory");
                    return -1;
                }
            }
            reward_http_score_batch(c->http, items, n, vals, fails);
            for (size_t i = 0; i < n; i++) {
                out[i].value[k] = vals[i];
                out[i].failed[k] = fails[i];
            }
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            const struct reward_item *it = &items[i];
            double v = 0;
            bool failed = false;
            switch (c->type) {
            case REWARD_ACCURACY: v = reward_accuracy_score(c, it); break;
            case REWARD_COUNTDOWN: v = reward_countdown_score(c, it); break;
            case REWARD_FORMAT: v = reward_format_score(c, it); break;
            case REWARD_TAG_COUNT: v = reward_tag_count_score(c, it); break;
            case REWARD_LANGUAGE: v = reward_language_score(c, it); break;
            case REWARD_LENGTH: v = reward_length_score(c, it); break;
            case REWARD_REPETITION: v = reward_repetition_score(c, it); break;
            case REWARD_OVERLONG: v = reward_overlong_score(c, it); break;
            case REWARD_REGEX: v = reward_regex_score(c, it, &failed); break;
            default: break;
            }
            out[i].value[k] = v;
            out[i].failed[k] = failed;
        }
    }
    free(vals);
    free(fails);
    for (size_t i = 0; i < n; i++) {
        double total = 0;
        for (int k = 0; k < s->n; k++) {
            if (isnan(out[i].value[k]))
                out[i].excluded = true;
            else
                total += s->c[k].weight * out[i].value[k];
        }
        out[i].total = out[i].excluded ? NAN : total;
        for (int k = s->n; k < REWARD_MAX_COMPONENTS; k++)
            out[i].value[k] = NAN;
    }
    return 0;
}
