/* server/traces.c — trace writer thread and trace queries (see traces.h).
 * The writer has its own connection so a slow database never takes the
 * pool's connections from request handlers. */
#include "traces.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics.h"
#include "util.h"

#define TRACES_RETRY_MIN_S 0.2
#define TRACES_RETRY_MAX_S 2.0
#define TRACES_BATCH 64             /* traces per transaction */

struct traces {
    char *url;
    int capacity;
    json_t **ring;
    int head, count;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
    double flush_deadline;
    pthread_t thread;
    bool started;
};

traces *traces_new(const char *url, int capacity)
{
    traces *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->url = strdup(url);
    t->capacity = capacity;
    t->ring = calloc((size_t)capacity, sizeof *t->ring);
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    return t;
}

void traces_enqueue(traces *t, json_t *rec)
{
    pthread_mutex_lock(&t->mu);
    if (t->count >= t->capacity || t->stopping) {
        pthread_mutex_unlock(&t->mu);
        json_decref(rec);
        atomic_fetch_add(&metrics.trace_dropped, 1);
        log_msg("trace dropped: queue full (%d)", t->capacity);
        return;
    }
    t->ring[(t->head + t->count) % t->capacity] = rec;
    t->count++;
    atomic_store(&metrics.trace_queued, t->count);
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static const char *str_or_null(json_t *rec, const char *k)
{
    return json_string_value(json_object_get(rec, k));
}

/* Inserts one trace; returns 0, or -1 when it should be retried. A trace
 * the database rejects for its content is logged and dropped (1). */
static int insert(PGconn *c, json_t *rec)
{
    char *params_s = json_dumps(json_object_get(rec, "params"), JSON_COMPACT);
    json_t *pj = json_object_get(rec, "prompt"), *mj = json_object_get(rec, "messages");
    char *prompt_s =
        pj && !json_is_null(pj) ? json_dumps(pj, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    char *msgs_s = mj && !json_is_null(mj) ? json_dumps(mj, JSON_COMPACT) : NULL;
    char num[8][32];
    const char *p[19];
    const char *ints[] = {"choice_index", "prompt_tokens", "completion_tokens",
                          "reasoning_tokens", "api_key_id"};
    for (int i = 0; i < 5; i++) {
        json_t *v = json_object_get(rec, ints[i]);
        if (json_is_integer(v))
            snprintf(num[i], sizeof num[i], "%lld", (long long)json_integer_value(v));
        else
            num[i][0] = 0;
    }
    const char *reals[] = {"ttft_ms", "latency_ms", "created_at"};
    for (int i = 0; i < 3; i++) {
        json_t *v = json_object_get(rec, reals[i]);
        if (json_is_number(v))
            snprintf(num[5 + i], sizeof num[5 + i], "%.6f", json_number_value(v));
        else
            num[5 + i][0] = 0;
    }
#define NUM(i) (num[i][0] ? num[i] : NULL)
    p[0] = str_or_null(rec, "id");
    p[1] = str_or_null(rec, "request_id");
    p[2] = NUM(0);
    p[3] = str_or_null(rec, "endpoint");
    p[4] = str_or_null(rec, "model");
    p[5] = params_s ? params_s : "{}";
    p[6] = prompt_s;
    p[7] = msgs_s;
    p[8] = str_or_null(rec, "reasoning_content");
    p[9] = str_or_null(rec, "content");
    p[10] = str_or_null(rec, "finish_reason");
    p[11] = NUM(1);
    p[12] = NUM(2);
    p[13] = NUM(3);
    p[14] = NUM(5);
    p[15] = NUM(6);
    p[16] = NUM(4);
    p[17] = NUM(7);
#undef NUM
    PGresult *r = PQexecParams(
        c,
        "INSERT INTO traces (id, request_id, choice_index, endpoint, model, params, prompt,"
        " messages, reasoning_content, content, finish_reason, prompt_tokens,"
        " completion_tokens, reasoning_tokens, ttft_ms, latency_ms, api_key_id, created_at)"
        " VALUES ($1, $2, coalesce($3::int, 0), $4, $5, $6::jsonb, $7::jsonb, $8::jsonb, $9,"
        " $10, $11, $12::int, $13::int, $14::int, $15::float8, $16::float8,"
        " (SELECT id FROM api_keys WHERE id = $17::bigint), to_timestamp($18::float8))"
        " ON CONFLICT (id) DO NOTHING",
        18, NULL, p, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        /* classes 22 (data exception) and 23 (integrity constraint): this
         * trace can never be written; anything else may pass on a retry */
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        bool data_error = state && state[0] == '2' && (state[1] == '2' || state[1] == '3');
        log_msg("trace %s not written: %s", p[0] ? p[0] : "?", PQresultErrorMessage(r));
        rc = data_error && !db_conn_broken(c) ? 1 : -1;
    }
    PQclear(r);
    free(params_s);
    free(prompt_s);
    free(msgs_s);
    return rc;
}

/* Inserts n traces in one transaction (one commit per batch keeps up with
 * a busy server). Returns 0, -1 to retry, or 2 when one trace has bad data
 * (the batch is then redone one trace at a time so only that one drops). */
static int insert_batch(PGconn *c, json_t **recs, int n)
{
    if (n == 1) return insert(c, recs[0]);
    PGresult *r = PQexec(c, "BEGIN");
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) return -1;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) rc = insert(c, recs[i]);
    r = PQexec(c, rc == 0 ? "COMMIT" : "ROLLBACK");
    if (rc == 0 && PQresultStatus(r) != PGRES_COMMAND_OK) rc = -1;
    PQclear(r);
    return rc == 1 ? 2 : rc;
}

static void *writer(void *arg)
{
    traces *t = arg;
    PGconn *c = NULL;
    double backoff = TRACES_RETRY_MIN_S;
    bool one_at_a_time = false;
    json_t *batch[TRACES_BATCH];
    for (;;) {
        pthread_mutex_lock(&t->mu);
        while (!t->count && !t->stopping) pthread_cond_wait(&t->cv, &t->mu);
        if (!t->count || (t->stopping && clock_mono() > t->flush_deadline)) {
            pthread_mutex_unlock(&t->mu);
            break;
        }
        int n = t->count < TRACES_BATCH ? t->count : TRACES_BATCH;
        if (one_at_a_time) n = 1;
        for (int i = 0; i < n; i++) batch[i] = t->ring[(t->head + i) % t->capacity];
        pthread_mutex_unlock(&t->mu);

        int rc = -1;
        char err[512];
        if (!c) c = db_connect(t->url, err, sizeof err);
        if (c) rc = insert_batch(c, batch, n);
        if (rc == 2) {
            one_at_a_time = true;
            continue;
        }
        if (rc >= 0) { /* 0 written, 1 (n == 1) rejected for its data: dropped */
            pthread_mutex_lock(&t->mu);
            for (int i = 0; i < n; i++) t->ring[(t->head + i) % t->capacity] = NULL;
            t->head = (t->head + n) % t->capacity;
            t->count -= n;
            atomic_store(&metrics.trace_queued, t->count);
            pthread_mutex_unlock(&t->mu);
            for (int i = 0; i < n; i++) json_decref(batch[i]);
            atomic_fetch_add(rc == 0 ? &metrics.trace_written : &metrics.trace_dropped, n);
            backoff = TRACES_RETRY_MIN_S;
            one_at_a_time = false;
            continue;
        }
        atomic_fetch_add(&metrics.trace_retried, n);
        if (c) { /* broken, or an unknown failure: start from a fresh session */
            PQfinish(c);
            c = NULL;
        }
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        long long ns = until.tv_nsec + (long long)(backoff * 1e9);
        until.tv_sec += (time_t)(ns / 1000000000LL);
        until.tv_nsec = (long)(ns % 1000000000LL);
        pthread_mutex_lock(&t->mu);
        if (!t->stopping) pthread_cond_timedwait(&t->cv, &t->mu, &until);
        pthread_mutex_unlock(&t->mu);
        backoff = backoff * 2 > TRACES_RETRY_MAX_S ? TRACES_RETRY_MAX_S : backoff * 2;
    }
    if (c) PQfinish(c);
    return NULL;
}

int traces_start(traces *t)
{
    if (pthread_create(&t->thread, NULL, writer, t)) return -1;
    t->started = true;
    return 0;
}

void traces_free(traces *t, double flush_s)
{
    if (!t) return;
    pthread_mutex_lock(&t->mu);
    t->stopping = true;
    t->flush_deadline = clock_mono() + flush_s;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    if (t->started) pthread_join(t->thread, NULL);
    if (t->count) log_msg("%d traces not written at shutdown", t->count);
    for (int i = 0; i < t->count; i++) {
        json_decref(t->ring[(t->head + i) % t->capacity]);
        atomic_fetch_add(&metrics.trace_dropped, 1);
    }
    free(t->ring);
    free(t->url);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
}

/* One trace as a JSON object, built by PostgreSQL. */
#define TRACE_JSON                                                                      \
    "jsonb_build_object('id', id, 'object', 'trace', 'request_id', request_id,"          \
    " 'choice_index', choice_index, 'endpoint', endpoint, 'model', model,"               \
    " 'created', extract(epoch FROM created_at)::bigint, 'created_at', created_at,"      \
    " 'params', params, 'prompt', prompt, 'messages', messages,"                         \
    " 'reasoning_content', reasoning_content, 'content', content,"                       \
    " 'finish_reason', finish_reason, 'usage', jsonb_build_object('prompt_tokens',"      \
    " prompt_tokens, 'completion_tokens', completion_tokens, 'reasoning_tokens',"        \
    " reasoning_tokens), 'ttft_ms', ttft_ms, 'latency_ms', latency_ms,"                  \
    " 'api_key_id', api_key_id)::text"

/* Maps a failed result to an HTTP status (400 for a bad filter value). */
static int query_failed(PGresult *r, char *err, size_t errlen)
{
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    int status = state && state[0] == '2' && state[1] == '2' ? 400 : 500;
    snprintf(err, errlen, "%s", status == 400 ? PQresultErrorMessage(r) : "trace query failed");
    char *nl = strchr(err, '\n');
    if (nl) *nl = 0;
    if (status != 400) log_msg("trace query: %s", PQresultErrorMessage(r));
    PQclear(r);
    return status;
}

int traces_list(db_pool *pool, const struct traces_query *q, json_t **out, char *err,
                size_t errlen)
{
    char limit[16];
    snprintf(limit, sizeof limit, "%d", q->limit + 1);
    const char *p[] = {q->model, q->since, q->until, q->finish_reason, q->q, q->after, limit};
    PGresult *r = db_exec(
        pool,
        "SELECT " TRACE_JSON " FROM traces"
        " WHERE ($1::text IS NULL OR model = $1)"
        " AND ($2::timestamptz IS NULL OR created_at >= $2::timestamptz)"
        " AND ($3::timestamptz IS NULL OR created_at < $3::timestamptz)"
        " AND ($4::text IS NULL OR finish_reason = $4)"
        " AND ($5::text IS NULL OR search @@ websearch_to_tsquery('simple', $5))"
        " AND ($6::text IS NULL OR seq < (SELECT seq FROM traces WHERE id = $6))"
        " ORDER BY seq DESC LIMIT $7::int",
        7, p, NULL, NULL, err, errlen);
    if (!r) return 503;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) return query_failed(r, err, errlen);
    int n = PQntuples(r);
    bool more = n > q->limit;
    if (more) n = q->limit;
    json_t *data = json_array();
    for (int i = 0; i < n; i++) {
        json_t *o = json_loads(PQgetvalue(r, i, 0), 0, NULL);
        if (o) json_array_append_new(data, o);
    }
    PQclear(r);
    json_t *first = json_array_size(data) ? json_object_get(json_array_get(data, 0), "id") : NULL;
    json_t *last = json_array_size(data)
                       ? json_object_get(json_array_get(data, json_array_size(data) - 1), "id")
                       : NULL;
    *out = json_pack("{s:s, s:o, s:O?, s:O?, s:b}", "object", "list", "data", data, "first_id",
                     first, "last_id", last, "has_more", more);
    return 200;
}

int traces_get(db_pool *pool, const char *id, json_t **out, char *err, size_t errlen)
{
    const char *p[] = {id};
    PGresult *r = db_exec(pool, "SELECT " TRACE_JSON " FROM traces WHERE id = $1", 1, p, NULL,
                          NULL, err, errlen);
    if (!r) return 503;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) return query_failed(r, err, errlen);
    int status = 404;
    if (PQntuples(r) == 1) {
        *out = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
        status = *out ? 200 : 500;
    } else {
        snprintf(err, errlen, "trace \"%s\" not found", id);
    }
    PQclear(r);
    return status;
}
