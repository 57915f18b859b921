/* server/keys.h — API keys: creation (stored as SHA-256 hashes, never in
 * clear), scope checks and Bearer-token verification with a small cache so
 * that requests keep being served while PostgreSQL is briefly down. */
#ifndef AHA_SERVER_KEYS_H
#define AHA_SERVER_KEYS_H

#include <stdbool.h>
#include <stddef.h>

#include "db.h"

/* Scopes are ordered: admin can do all, inference can also read. */
enum keys_scope { KEYS_SCOPE_READ = 1, KEYS_SCOPE_INFERENCE = 2, KEYS_SCOPE_ADMIN = 3 };

enum keys_result { KEYS_OK, KEYS_INVALID, KEYS_UNAVAILABLE };

struct keys_info {
    long long id;
    enum keys_scope scope;
};

/* "admin" | "inference" | "read" -> scope; returns 0 or -1. */
int keys_scope_parse(const char *s, enum keys_scope *out);
const char *keys_scope_name(enum keys_scope s);

/* Creates a key named `name` with `scope`; writes the clear key ("aha-" and
 * 48 hex characters) into key_out (size >= 64). Returns 0 or -1 with err. */
int keys_create(PGconn *c, const char *name, enum keys_scope scope, char *key_out,
                size_t key_size, char *err, size_t errlen);

/* Verifies a clear key against the database (or the cache when verified in
 * the last KEYS_CACHE_TTL_S seconds, or at any time while the database is
 * unreachable). Fills *info on KEYS_OK. Thread-safe. */
enum keys_result keys_verify(db_pool *pool, const char *key, struct keys_info *info);
void keys_cache_clear(void);

#endif
