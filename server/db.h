/* server/db.h — a small pool of libpq connections that reconnects, plus the
 * schema migrations runner. Queries themselves live with their modules
 * (keys.c, traces.c); every one uses PQexecParams. */
#ifndef AHA_SERVER_DB_H
#define AHA_SERVER_DB_H

#include <postgresql/libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct db_pool db_pool;

/* Opens nothing yet: connections are made on first use. `url` is a libpq
 * connection string or URI (borrowed, copied). Returns a new pool (caller
 * frees with db_pool_free) or NULL. */
db_pool *db_pool_new(const char *url, int size);
void db_pool_free(db_pool *p);

/* Borrows a connected PGconn, waiting up to wait_ms for a free slot and
 * (re)connecting when needed; returns NULL with err filled when PostgreSQL
 * is unreachable. Give it back with db_release; pass broken=true after a
 * query failed for connection reasons so it is reset before reuse. */
PGconn *db_acquire(db_pool *p, int wait_ms, char *err, size_t errlen);
void db_release(db_pool *p, PGconn *c, bool broken);

/* Runs a parameterized query on a pooled connection; when the connection
 * turns out dead (PostgreSQL restarted), retries once on a fresh one.
 * Returns the result (caller PQclear-s; check PQresultStatus) or NULL with
 * err filled when PostgreSQL is unreachable. lengths/formats may be NULL
 * (text parameters). */
PGresult *db_exec(db_pool *p, const char *sql, int n, const char *const *params,
                  const int *lengths, const int *formats, char *err, size_t errlen);

/* A new connection outside the pool (caller PQfinish-es), with a connect
 * timeout; NULL with err filled on failure. */
PGconn *db_connect(const char *url, char *err, size_t errlen);

/* True when a failed result means the connection itself is gone. */
bool db_conn_broken(PGconn *c);

/* Applies migrations/NNNN_*.sql files from `dir` that schema_migrations
 * lacks, in one transaction under pg_advisory_xact_lock. Refuses (-1) a
 * database whose schema is newer than the newest file. Returns the number
 * applied (>= 0) or -1 with err filled. */
int db_migrate(PGconn *c, const char *dir, char *err, size_t errlen);

#endif
