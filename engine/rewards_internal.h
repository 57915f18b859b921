/* engine/rewards_internal.h — what the reward files share: the parsed
 * component, the per-type scorers and the text helpers. Not for use outside
 * engine/rewards*.c (the public API is rewards.h). */
#ifndef AHA_REWARDS_INTERNAL_H
#define AHA_REWARDS_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "rewards.h"

enum reward_type {
    REWARD_ACCURACY,
    REWARD_COUNTDOWN,
    REWARD_FORMAT,
    REWARD_TAG_COUNT,
    REWARD_LANGUAGE,
    REWARD_LENGTH,
    REWARD_REPETITION,
    REWARD_OVERLONG,
    REWARD_REGEX,
    REWARD_HTTP,
};

enum reward_extract {
    REWARD_EXTRACT_ANSWER_TAG,   /* the last <answer>...</answer> */
    REWARD_EXTRACT_BOXED,        /* the last \boxed{...} */
    REWARD_EXTRACT_LAST_NUMBER,  /* the last number in the text */
    REWARD_EXTRACT_AUTO,         /* answer tag (its \boxed if any), else boxed, else last number */
};

enum reward_language { REWARD_LANG_EN, REWARD_LANG_ZH };

struct reward_http;

/* One parsed component. Strings are owned (freed by reward_spec_free). */
struct reward_component {
    enum reward_type type;
    int index;                       /* position in "components" */
    char name[REWARD_NAME_MAX];
    double weight;

    /* accuracy, length (its correctness test), countdown */
    enum reward_extract extract;
    char *reference;                 /* accuracy/length: dataset field of the answer */
    double tolerance;                /* |a - b| <= tolerance * max(1, |b|) */

    /* countdown */
    char *numbers_field, *target_field;
    bool tinyzero;                   /* 0 / format_score / 1 scoring */
    double format_score;

    /* format */
    bool strict;
    bool think_only;                 /* template "think": no <answer> block */

    /* language_consistency */
    enum reward_language language;
    bool whole_completion;           /* scope "completion" instead of "think" */

    /* length (cosine-scaled) */
    double min_value_wrong, max_value_wrong, min_value_correct, max_value_correct;
    long max_len;
    bool length_in_tokens;

    /* repetition */
    int ngram_size;
    double max_penalty;

    /* overlong */
    long max_completion_len, soft_punish_cache;

    /* regex */
    pcre2_code *re;
    char *field;                     /* compare the match against this field */
    unsigned long match_limit;

    /* http */
    struct reward_http *http;
};

struct reward_spec {
    char *name;
    int n;
    struct reward_component c[REWARD_MAX_COMPONENTS];
};

/* Scorers for one item; fields were checked by reward_check_fields. They
 * never fail on any completion bytes; *failed is set only for a bounded-
 * time cutoff (regex match limit). */
double reward_accuracy_score(const struct reward_component *c, const struct reward_item *it);
double reward_countdown_score(const struct reward_component *c, const struct reward_item *it);
double reward_format_score(const struct reward_component *c, const struct reward_item *it);
double reward_tag_count_score(const struct reward_component *c, const struct reward_item *it);
double reward_language_score(const struct reward_component *c, const struct reward_item *it);
double reward_length_score(const struct reward_component *c, const struct reward_item *it);
double reward_repetition_score(const struct reward_component *c, const struct reward_item *it);
double reward_overlong_score(const struct reward_component *c, const struct reward_item *it);
double reward_regex_score(const struct reward_component *c, const struct reward_item *it,
                          bool *failed);

/* Answer extraction over s[0..n) (any bytes). Returns true and the span
 * (pointing into s) when found. */
bool reward_extract_answer(enum reward_extract how, const char *s, size_t n,
                           const char **out, size_t *outn);
/* Whether answer s[0..n) matches the reference JSON value (number, string,
 * or an array of alternatives): numeric comparison with tolerance when the
 * reference is numeric, normalised string equality otherwise. */
bool reward_answer_matches(const char *s, size_t n, const json_t *ref, double tolerance);

/* Reading a component's fields with errors naming the JSON path
 * ("reward spec: components[2].weight: expected a number"). Each getter
 * records the key as known; reward_fields_done rejects the unknown ones.
 * A getter returns false after filling err (absent optional keys keep the
 * default and return true). */
struct reward_fields {
    const json_t *obj;
    char path[32];             /* "components[2]" */
    const char *type;
    char *err;
    size_t errlen;
    const char *known[32];
    int nknown;
};
bool reward_get_number(struct reward_fields *f, const char *key, double def, double lo,
                       double hi, double *out);
bool reward_get_long(struct reward_fields *f, const char *key, long def, long lo, long hi,
                     long *out);
bool reward_get_bool(struct reward_fields *f, const char *key, bool def, bool *out);
/* def NULL: required. *out is borrowed from the spec JSON. */
bool reward_get_string(struct reward_fields *f, const char *key, const char *def,
                       const char **out);
/* Optional string without default: *out NULL when absent. */
bool reward_get_string_opt(struct reward_fields *f, const char *key, const char **out);
/* One of options (NULL-terminated); *out is its index; def is an index. */
bool reward_get_enum(struct reward_fields *f, const char *key, const char *const *options,
                     int def, int *out);
/* The key's raw value (borrowed, NULL when absent), recorded as known. */
const json_t *reward_get_raw(struct reward_fields *f, const char *key);
bool reward_fields_done(struct reward_fields *f);

/* http (rewards_http.c). Parses the component's own fields; returns NULL
 * with f->err filled. */
struct reward_http *reward_http_parse(struct reward_fields *f);
void reward_http_free(struct reward_http *h);
/* Scores n items: values[i] and failed[i] per item, the on_error policy
 * applied (NaN for "skip", 0 for "zero"). Never fails the batch. */
void reward_http_score_batch(const struct reward_http *h, const struct reward_item *items,
                             size_t n, double *values, bool *failed);

/* First occurrence of needle in s[0..n) (any bytes), or NULL. */
const char *reward_find(const char *s, size_t n, const char *needle);

/* Copies s[0..n) into a new NUL-terminated string with each invalid UTF-8
 * sequence replaced by U+FFFD (and NUL bytes by U+FFFD), so it can go into
 * JSON. Caller frees. NULL on allocation failure. */
char *reward_utf8_sanitize(const char *s, size_t n);

#endif
