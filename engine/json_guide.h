/* engine/json_guide.h — JSON mode and structured outputs (OpenAI's
 * response_format json_object and json_schema): a byte-level automaton
 * that accepts exactly the prefixes of one JSON object of a schema (RFC
 * 8259, the object starting at the first byte and ending at its closing
 * brace, strings valid UTF-8, at most JG_MAX_DEPTH nested containers and
 * JG_MAX_WS whitespace bytes in a row), and the vocabulary as a trie of
 * its tokens' bytes, so that the tokens keeping an output such a prefix
 * are found in one walk that shares their common beginnings. Not here:
 * applying the mask to the logits and ending the sample
 * (engine/generate.c). */
#ifndef AHA_JSON_GUIDE_H
#define AHA_JSON_GUIDE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "json_regex.h"
#include "tokenizer.h"

#define JG_MAX_DEPTH 32     /* open objects and arrays */
#define JG_MAX_WS 32        /* whitespace bytes in a row (an endless run of
                             * spaces is valid JSON that never ends) */
#define JG_MAX_CHOICES 64   /* properties of an object, values of an enum */

/* A compiled schema: a flat copy, owned by whoever made it. The subset
 * (as OpenAI's strict structured outputs): "type" (one or a list of
 * object, array, string, integer, number, boolean, null), "properties"
 * (written in their order, the optional ones may be left out),
 * "required", "additionalProperties" false (or absent: no other keys;
 * without "properties", a schema: a map of any keys to such values),
 * "items", "enum" and "const" of scalars, "$ref" to "#/$defs/..." or
 * "#/definitions/..." or "#" (recursive ones too: an optional property or
 * item whose value could not fit in the JG_MAX_DEPTH open containers is
 * not offered), "anyOf"/"oneOf" of branches of
 * different types (pydantic's Optional[X]) or of objects whose possible
 * first keys differ (the first key picks the branch), and the
 * annotations title, discriminator,
 * description, default, examples, $schema, $id, $comment. Strings:
 * "minLength" and "maxLength" (in code points), or "pattern"
 * (json_regex.h) or "format" (date-time, date, time, uuid, email,
 * hostname, ipv4); a constrained string writes no surrogate escapes.
 * Numbers: "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"
 * (compared as doubles); a bounded number is written without an exponent.
 * Arrays: "minItems", "maxItems", and tuples: "prefixItems" (or draft
 * 7's list of "items" with "additionalItems"), the rest "items" ("false":
 * none). Every prefix accepted can still be
 * finished within the schema. Anything else is refused by name rather
 * than ignored. */
struct jg_schema;
/* Compiles a JSON Schema (its root must be an object schema); NULL with
 * err naming the place ("properties.a.items: ...") when it is outside the
 * subset. */
struct jg_schema *jg_schema_compile(const json_t *schema, char *err, size_t errlen);
struct jg_schema *jg_schema_copy(const struct jg_schema *sc);
void jg_schema_free(struct jg_schema *sc);
/* Any JSON object (json_object mode); static, not to be freed. */
const struct jg_schema *jg_schema_object(void);

/* Where the automaton is; a value of a few hundred bytes, copied freely. */
struct jg_state {
    const struct jg_schema *sc;
    uint64_t cand;              /* key or enum being matched: candidates */
    uint64_t re[JRE_WORDS];     /* a string with a pattern: where its match is */
    double nval;                /* a bounded number: its magnitude so far */
    uint32_t len, cp;           /* a constrained string: characters, the one in progress */
    int32_t str, num;           /* the string's constraints, the number's bounds (-1: none) */
    uint16_t count[JG_MAX_DEPTH];   /* the open arrays' items (stops at 65535) */
    uint16_t node[JG_MAX_DEPTH];    /* the open containers' schema nodes */
    uint8_t next[JG_MAX_DEPTH];     /* an object's next property */
    uint32_t objects;           /* bit i: container i is an object */
    uint16_t cur;               /* the schema node of the value to come */
    uint16_t off;               /* key or enum: bytes matched */
    uint8_t depth, pos, lex, sub, aux, lo, hi, ws;
    uint32_t nfd;               /* a bounded number: fraction digits */
    bool key, integer, neg;
};

void jg_init(struct jg_state *s, const struct jg_schema *sc);
/* Feeds one byte: true and s advanced when the bytes so far are still the
 * beginning of an object of the schema; false (s unspecified) otherwise. */
bool jg_feed(struct jg_state *s, unsigned char c);
/* Whether the bytes so far are one whole object of the schema. */
bool jg_done(const struct jg_state *s);

/* The vocabulary's tokens by their bytes (special tokens and tokens of no
 * bytes left out: never allowed). */
struct jg_vocab;
struct jg_vocab *jg_vocab_new(const struct tokenizer *tok, int V, char *err, size_t errlen);
/* Built by hand: an empty vocabulary of V ids (NULL when out of memory),
 * then token t as `len` bytes (0, or -1 when out of memory; ids outside
 * [0, V) and empty tokens are left out). */
struct jg_vocab *jg_vocab_empty(int V);
int jg_vocab_add(struct jg_vocab *v, int32_t t, const void *bytes, size_t len);
void jg_vocab_free(struct jg_vocab *v);
/* allowed[t] = 1 for every token whose bytes all feed from s, else 0
 * (V entries); returns how many are allowed. */
int jg_allowed(const struct jg_vocab *v, const struct jg_state *s, uint8_t *allowed);

#endif
