/* engine/rewards.h — reward specifications (DESIGN.md "Reward
 * specification"): parse and validate a weighted list of components, and
 * score batches of completions with them. Rule-based built-ins (accuracy,
 * countdown, format, tag_count, language_consistency, length, repetition,
 * overlong, regex) and an external grader over HTTP. Not the trainer: what a
 * score means for the loss (advantages, masking) is grpo_loss.h's business. */
#ifndef AHA_REWARDS_H
#define AHA_REWARDS_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

/* Most components one spec may hold. */
#define REWARD_MAX_COMPONENTS 16
/* Longest component name (metric key rewards/<name>/mean), bytes. */
#define REWARD_NAME_MAX 64

struct reward_spec;

/* One completion to score. All pointers are borrowed for the call. */
struct reward_item {
    const char *prompt;        /* UTF-8 (may be invalid); NULL = "" */
    const char *completion;    /* may be invalid UTF-8 and contain NULs */
    size_t completion_len;     /* bytes of completion */
    long completion_tokens;    /* tokens generated; < 0 = unknown */
    const json_t *fields;      /* the dataset row (object) or NULL */
};

struct reward_result {
    /* sum of weight * value over the components; NaN when excluded */
    double total;
    /* a component failed under on_error "skip": leave the sample out */
    bool excluded;
    /* unweighted value per component, in spec order; NaN when that
     * component failed and its policy is "skip" */
    double value[REWARD_MAX_COMPONENTS];
    /* the component failed for this item (http error after retries, regex
     * match limit): count these as the component's failures */
    bool failed[REWARD_MAX_COMPONENTS];
};

/* Parses and validates a spec object (borrowed). Every field is checked;
 * unknown component types and unknown fields are errors naming the JSON
 * path: `reward spec: components[2].weight: expected a number`. Returns a
 * new spec the caller frees with reward_spec_free, or NULL with err filled. */
struct reward_spec *reward_spec_parse(const json_t *spec, char *err, size_t errlen);
/* Parses a spec from a JSON file; as reward_spec_parse. */
struct reward_spec *reward_spec_load(const char *path, char *err, size_t errlen);
void reward_spec_free(struct reward_spec *s);

/* The spec's "name" ("" when absent); borrowed. */
const char *reward_spec_name(const struct reward_spec *s);
int reward_spec_count(const struct reward_spec *s);
/* Component k's metric name: its "name", else its type, with "_2", "_3"...
 * appended to repeated types. Borrowed. */
const char *reward_spec_component_name(const struct reward_spec *s, int k);
double reward_spec_component_weight(const struct reward_spec *s, int k);

/* Checks that a dataset row has the fields the spec reads (the accuracy
 * reference, countdown numbers and target, a regex field), so a trainer can
 * reject a dataset before any work starts. Returns 0, or -1 with err
 * filled: `field "answer" is missing (components[0], accuracy)`. */
int reward_check_fields(const struct reward_spec *s, const json_t *fields, char *err,
                        size_t errlen);

/* Scores n items into out[0..n) (caller-owned). Bounded time on any input
 * (regex match limits, http timeouts × retries). A grader failure is not an
 * error: it follows the component's on_error policy and sets failed[].
 * Returns 0, or -1 with err filled when an item lacks a field the spec
 * needs or a needed completion_tokens is unknown (`item 3: ...`). */
int reward_score_batch(const struct reward_spec *s, const struct reward_item *items, size_t n,
                       struct reward_result *out, char *err, size_t errlen);

#endif
