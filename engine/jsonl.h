/* engine/jsonl.h — reading JSONL datasets row by row: blank lines skipped,
 * every error prefixed with "file:line: " (PostgreSQL-style place names);
 * and the JSON string of model output for the JSON lines the engine
 * writes. What a row must hold is the caller's business. */
#ifndef AHA_JSONL_H
#define AHA_JSONL_H

#include <jansson.h>
#include <stddef.h>

/* Called once per non-blank line with the parsed value (borrowed: incref
 * to keep it). Returns 0 to go on, or -1 with err filled (without the
 * place; the reader adds "file:line: "). */
typedef int (*jsonl_row_fn)(void *ctx, json_t *row, char *err, size_t errlen);

/* Reads path; returns the number of rows, or -1 with err naming the file
 * and line (unreadable file, malformed JSON, or the callback's error). */
long jsonl_read(const char *path, jsonl_row_fn fn, void *ctx, char *err, size_t errlen);

/* A new JSON string of n bytes of model output, possibly invalid UTF-8
 * (a token holding part of a character, a random model's bytes): invalid
 * bytes and NULs become U+FFFD. NUL too, because jansson refuses "\u0000"
 * when reading (the server would drop the event) and PostgreSQL text
 * cannot hold it. */
json_t *jsonl_text(const char *s, size_t n);

#endif
