/* engine/json_guide.h — JSON mode (OpenAI's response_format json_object):
 * a byte-level automaton that accepts exactly the prefixes of one JSON
 * object (RFC 8259 with the top-level value an object, starting at the
 * first byte and ending at its closing brace, strings valid UTF-8, at most
 * JG_MAX_DEPTH nested containers and JG_MAX_WS whitespace bytes in a row),
 * and the vocabulary as a trie of its tokens' bytes, so
 * that the tokens keeping an output such a prefix are found in one walk
 * that shares their common beginnings. Not here: applying the mask to the
 * logits and ending the sample (engine/generate.c). */
#ifndef AHA_JSON_GUIDE_H
#define AHA_JSON_GUIDE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

#define JG_MAX_DEPTH 64     /* open objects and arrays (one bit each) */
#define JG_MAX_WS 32        /* whitespace bytes in a row (an endless run of
                             * spaces is valid JSON that never ends) */

/* Where the automaton is; a small value, copied freely. */
struct jg_state {
    uint64_t stack;         /* bit i: container i is an object (else array) */
    uint8_t depth;          /* open containers */
    uint8_t pos;            /* what comes next between tokens (json_guide.c) */
    uint8_t lex;            /* the token being read: none, string, number, literal */
    uint8_t sub;            /* its state */
    uint8_t aux;            /* string: UTF-8 bytes still due / \u digits;
                             * literal: which one */
    uint8_t lo, hi;         /* string: the range of the next UTF-8 byte */
    uint8_t ws;             /* whitespace bytes in a row */
    bool key;               /* the string is an object's key */
};

void jg_init(struct jg_state *s);
/* Feeds one byte: true and s advanced when the bytes so far are still the
 * beginning of a JSON object; false (s unspecified) otherwise. */
bool jg_feed(struct jg_state *s, unsigned char c);
/* Whether the bytes so far are one whole JSON object. */
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
