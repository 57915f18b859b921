/* server/traces.h — completion traces: a writer thread that stores them in
 * PostgreSQL from a bounded queue (retrying while the database is down,
 * counting what it drops), and the read side for GET /v1/traces. */
#ifndef AHA_SERVER_TRACES_H
#define AHA_SERVER_TRACES_H

#include <jansson.h>
#include <stddef.h>

#include "db.h"

#define TRACES_LIST_DEFAULT 20
#define TRACES_LIST_MAX 100

typedef struct traces traces;

/* A writer for database `url` (borrowed, copied) holding at most `capacity`
 * traces in memory. Returns a new writer (caller frees) or NULL. */
traces *traces_new(const char *url, int capacity);
int traces_start(traces *t);
/* Stops the writer after trying to flush for up to flush_s seconds; what is
 * left is counted as dropped. Frees t. */
void traces_free(traces *t, double flush_s);

/* Queues one trace (stolen): an object with the columns of the traces table
 * (created_at as seconds since the epoch). Never blocks; when the queue is
 * full the trace is dropped and counted. */
void traces_enqueue(traces *t, json_t *rec);

struct traces_query {
    const char *model, *since, *until, *finish_reason, *q, *after; /* NULL = no filter */
    int limit;
};

/* Runs a list query; *out gets a new reference to the OpenAI-style list
 * object. Returns an HTTP status (200, 400 on a bad filter, 503 when the
 * database is unreachable) with err filled on failure. */
int traces_list(db_pool *pool, const struct traces_query *q, json_t **out, char *err,
                size_t errlen);
/* One trace by id: 200 with *out, 404, or 503. */
int traces_get(db_pool *pool, const char *id, json_t **out, char *err, size_t errlen);

#endif
