/* server/util.h — small helpers every server module uses: a growable byte
 * buffer, a per-request arena, clocks, logging and id generation.
 * Nothing here knows about HTTP, PostgreSQL or the engine. */
#ifndef AHA_SERVER_UTIL_H
#define AHA_SERVER_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Growable byte buffer; always NUL-terminated when p != NULL. Zero-init is
 * an empty buffer; sbuf_free releases it. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

int sbuf_append(sbuf *b, const void *data, size_t n);
int sbuf_puts(sbuf *b, const char *s);
int sbuf_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drops the first n bytes (consumed output). */
void sbuf_consume(sbuf *b, size_t n);
void sbuf_free(sbuf *b);

/* Per-request arena: every allocation is freed at once by arena_free.
 * arena_new returns a new arena (caller frees) or NULL when out of memory. */
typedef struct arena arena;
arena *arena_new(void);
void *arena_alloc(arena *a, size_t n);
char *arena_strdup(arena *a, const char *s);
char *arena_printf(arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void arena_free(arena *a);

double clock_mono(void);  /* seconds, monotonic */
double clock_wall(void);  /* seconds since the epoch */

/* "aha-server: <message>" on stderr with a UTC timestamp. */
void log_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Writes `n` random bytes from getrandom(2); returns 0 or -1. */
int random_bytes(void *out, size_t n);
/* prefix + 24 random hex characters into out (size >= strlen(prefix) + 25). */
void random_id(char *out, size_t size, const char *prefix);
/* How many bytes at the end of s (n) are the beginning of tag (a tag
 * split across tokens, to hold back until the next one decides). */
size_t tag_partial_tail(const char *s, size_t n, const char *tag);

#endif
