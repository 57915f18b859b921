/* engine/json_regex.h — JSON Schema's "pattern" (ECMA-262 regular
 * expressions, the subset below) compiled for structured outputs: a
 * position (Glushkov) automaton over code points, so a match in progress
 * is a set of at most JRE_MAX_POS positions, advanced one character at a
 * time with no backtracking, and asked whether some next character in a
 * range keeps it alive (what a token's partial UTF-8 or \u escape needs).
 *
 * The subset: literals, `.` (any but \n \r U+2028 U+2029), classes
 * `[...]` and `[^...]` with ranges, \d \D \w \W \s \S, the escapes \t \n
 * \r \f \v \0 \xHH \uHHHH (a surrogate pair is one character) and escaped
 * punctuation, groups `(...)`, `(?:...)` and `(?<name>...)`, alternation,
 * the quantifiers * + ? {n} {n,} {n,m} (lazy or not: the same strings
 * match), `^` first and `$` last. As JSON Schema says, a pattern matches
 * anywhere in the string unless anchored. Refused with a message naming
 * the byte: backreferences, lookaround, \b \B, \p{...}, anchors elsewhere
 * and anchors beside a top-level `|`. Every position left can still reach
 * a match, so a live set always has a way to finish, and only code points
 * a JSON string can hold are matched (no lone surrogates). */
#ifndef AHA_JSON_REGEX_H
#define AHA_JSON_REGEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JRE_WORDS 4                         /* a set: 256 bits */
#define JRE_MAX_POS (64 * JRE_WORDS - 1)    /* positions 1..255; 0 is the start */

struct jre_range { uint32_t lo, hi; };      /* code points, inclusive */

/* One flat block (copied with memcpy): after the header, follow[npos + 1],
 * then cls[npos + 2] (position p's ranges: ranges[cls[p] .. cls[p + 1])),
 * then the ranges. */
struct jre_prog {
    uint32_t bytes;                         /* the whole block, a multiple of 8 */
    uint16_t npos, unused;
    uint64_t accept[JRE_WORDS];             /* where a match may end (0: the empty string) */
    uint64_t follow[][JRE_WORDS];           /* follow[0]: the positions a match starts with */
};

/* Compiles pattern (len bytes of UTF-8); a new block the caller frees, or
 * NULL with err saying what and at which byte ("at byte 3: ..."). */
struct jre_prog *jre_compile(const char *pattern, size_t len, char *err, size_t errlen);
/* The set before any character. */
void jre_start(uint64_t set[JRE_WORDS]);
/* set after character c; false (set then empty) when no match goes on. */
bool jre_step(const struct jre_prog *p, uint64_t set[JRE_WORDS], uint32_t c);
/* Whether some character in [lo, hi] would keep set alive. */
bool jre_can(const struct jre_prog *p, const uint64_t set[JRE_WORDS], uint32_t lo, uint32_t hi);
/* Whether the characters so far are a match. */
bool jre_accepts(const struct jre_prog *p, const uint64_t set[JRE_WORDS]);
/* Whether the UTF-8 string s (len bytes) matches; false on bad UTF-8. */
bool jre_match(const struct jre_prog *p, const char *s, size_t len);

#endif
