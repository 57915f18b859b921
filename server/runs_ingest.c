/* server/runs_ingest.c — records one engine process's events: a bounded
 * queue filled by the thread reading the engine's stdout, drained by a
 * writer thread with its own connection that writes batches (one
 * transaction each, at most RUNS_FLUSH_S late): run_events with gapless
 * seq from runs.last_seq, NOTIFY per event, and the rows derived from the
 * events (metrics, samples, checkpoints, stages). The writer also renews
 * the run's lease and learns of cancel requests. Not the HTTP side. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runs_internal.h"

#define INGEST_RETRY_MIN_S 0.2
#define INGEST_RETRY_MAX_S 2.0

struct item {
    json_t *ev;              /* engine event, or the status event's data */
    bool status;             /* a status change (ev = {"status","message"}) */
    bool requeue_resume;     /* status "queued": resume from the last checkpoint */
    bool count_auto;         /* ...and count it as an automatic resume */
};

struct runs_ingest {
    struct server *srv;
    char run_id[64], run_name[RUNS_NAME_MAX + 1], instance[64];
    struct integrations *integ;
    pthread_mutex_t mu;
    pthread_cond_t cv_items, cv_space;
    struct item *ring;
    int head, count;
    double first_at;         /* when the oldest queued item came */
    bool closing;
    atomic_bool cancel, lost;
    pthread_t thread;
    PGconn *conn;
    char sample_stage[64];   /* numbering of the samples of one step */
    long long sample_step;
    int sample_ord;
    bool integ_saved;        /* integrations_state stored since it appeared */
};

/* ---- PostgreSQL array literals ---- */

static void arr_add(sbuf *b, const char *s)
{
    sbuf_puts(b, b->len > 1 ? "," : "");
    if (!s) {
        sbuf_puts(b, "NULL");
        return;
    }
    sbuf_puts(b, "\"");
    for (const char *p = s; *p; p++) {
        if (*p == '"' || *p == '\\') sbuf_append(b, "\\", 1);
        sbuf_append(b, p, 1);
    }
    sbuf_puts(b, "\"");
}

static void arr_addf(sbuf *b, const char *fmt, long long v)
{
    char num[32];
    snprintf(num, sizeof num, fmt, v);
    arr_add(b, num);
}

struct arr {
    sbuf b;
    int n;
};

static void arr_begin(struct arr *a)
{
    a->b.len = 0;
    sbuf_puts(&a->b, "{");
    a->n = 0;
}

static const char *arr_end(struct arr *a)
{
    sbuf_puts(&a->b, "}");
    return a->b.p;
}

/* ---- the queue ---- */

static void push(struct runs_ingest *in, struct item it)
{
    pthread_mutex_lock(&in->mu);
    while (in->count >= RUNS_QUEUE_MAX && !atomic_load(&in->lost))
        pthread_cond_wait(&in->cv_space, &in->mu); /* back-pressure, never a drop */
    if (in->count == 0) in->first_at = clock_mono();
    in->ring[(in->head + in->count) % RUNS_QUEUE_MAX] = it;
    in->count++;
    if (in->count == 1 || in->count >= RUNS_BATCH_MAX || it.status)
        pthread_cond_signal(&in->cv_items);
    pthread_mutex_unlock(&in->mu);
}

void runs_ingest_event(struct runs_ingest *in, json_t *ev)
{
    push(in, (struct item){.ev = ev});
}

void runs_ingest_status(struct runs_ingest *in, const char *status, const char *message,
                        bool requeue_resume, bool count_auto_resume)
{
    json_t *d = json_pack("{s:s}", "status", status);
    if (message) json_object_set_new(d, "message", json_string(message));
    push(in, (struct item){.ev = d, .status = true, .requeue_resume = requeue_resume,
                           .count_auto = count_auto_resume});
}

bool runs_ingest_cancel_requested(struct runs_ingest *in) { return atomic_load(&in->cancel); }
bool runs_ingest_lost(struct runs_ingest *in) { return atomic_load(&in->lost); }

/* ---- writing a batch ---- */

static bool ok(PGresult *r, ExecStatusType want, char *err, size_t errlen)
{
    bool good = r && PQresultStatus(r) == want;
    if (!good && err[0] == 0)
        snprintf(err, errlen, "%s", r ? PQresultErrorMessage(r) : "no result");
    return good;
}

static bool exec(PGconn *c, const char *sql, int n, const char *const *p, char *err,
                 size_t errlen)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, p, NULL, NULL, 0);
    bool g = ok(r, PGRES_COMMAND_OK, err, errlen) || (r && PQresultStatus(r) == PGRES_TUPLES_OK);
    PQclear(r);
    return g;
}

static long long jint(const json_t *o, const char *k, long long def)
{
    json_t *v = json_object_get(o, k);
    return json_is_number(v) ? (long long)json_number_value(v) : def;
}

enum { WR_OK, WR_RETRY, WR_LOST };

/* Writes items[0..n) in one transaction. */
static int write_batch(struct runs_ingest *in, struct item *items, int n, char *err,
                       size_t errlen)
{
    PGconn *c = in->conn;
    err[0] = 0;
    struct arr types = {0}, datas = {0}, m_stage = {0}, m_name = {0}, m_step = {0}, m_val = {0},
               s_stage = {0}, s_step = {0}, s_ord = {0}, s_data = {0}, c_stage = {0},
               c_step = {0}, c_path = {0};
    struct arr *all[] = {&types, &datas, &m_stage, &m_name, &m_step, &m_val, &s_stage,
                         &s_step, &s_ord, &s_data, &c_stage, &c_step, &c_path};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) arr_begin(all[i]);
    int n_metrics = 0, n_samples = 0, n_ckpt = 0;
    char saved_stage[64];
    snprintf(saved_stage, sizeof saved_stage, "%s", in->sample_stage);
    long long saved_step = in->sample_step;
    int saved_ord = in->sample_ord;
    for (int i = 0; i < n; i++) {
        json_t *ev = items[i].ev;
        const char *type = items[i].status ? "status" : json_string_value(json_object_get(ev, "type"));
        if (!type) type = "log";
        char *d = json_dumps(ev, JSON_COMPACT);
        arr_add(&types.b, type);
        arr_add(&datas.b, d ? d : "{}");
        free(d);
        if (items[i].status) continue;
        const char *stage = json_string_value(json_object_get(ev, "stage"));
        if (!stage) stage = "";
        long long step = jint(ev, "step", 0);
        if (strcmp(type, "metric") == 0) {
            const char *k;
            json_t *v;
            json_object_foreach(json_object_get(ev, "values"), k, v) {
                if (!json_is_number(v) && !json_is_null(v)) continue;
                char num[40];
                arr_add(&m_stage.b, stage);
                arr_add(&m_name.b, k);
                arr_addf(&m_step.b, "%lld", step);
                if (json_is_number(v) && isfinite(json_number_value(v))) {
                    snprintf(num, sizeof num, "%.17g", json_number_value(v));
                    arr_add(&m_val.b, num);
                } else {
                    arr_add(&m_val.b, NULL);
                }
                n_metrics++;
            }
        } else if (strcmp(type, "sample") == 0) {
            if (strcmp(stage, in->sample_stage) != 0 || step != in->sample_step) {
                snprintf(in->sample_stage, sizeof in->sample_stage, "%s", stage);
                in->sample_step = step;
                in->sample_ord = 0;
            }
            char *sd = json_dumps(ev, JSON_COMPACT);
            arr_add(&s_stage.b, stage);
            arr_addf(&s_step.b, "%lld", step);
            arr_addf(&s_ord.b, "%lld", in->sample_ord++);
            arr_add(&s_data.b, sd ? sd : "{}");
            free(sd);
            n_samples++;
        } else if (strcmp(type, "checkpoint") == 0 ||
                   (strcmp(type, "done") == 0 && json_object_get(ev, "checkpoint"))) {
            json_t *cp = strcmp(type, "done") == 0 ? json_object_get(ev, "checkpoint") : ev;
            const char *path = json_is_string(cp) ? json_string_value(cp)
                                                  : json_string_value(json_object_get(cp, "path"));
            if (json_is_object(cp)) {
                if (json_is_string(json_object_get(cp, "stage")))
                    stage = json_string_value(json_object_get(cp, "stage"));
                step = jint(cp, "step", step);
            }
            if (path) {
                arr_add(&c_stage.b, stage);
                arr_addf(&c_step.b, "%lld", step);
                arr_add(&c_path.b, path);
                n_ckpt++;
            }
        }
    }
    int rc = WR_RETRY;
    char nbuf[32], base_s[32], last_s[32];
    snprintf(nbuf, sizeof nbuf, "%d", n);
    if (!exec(c, "BEGIN", 0, NULL, err, errlen)) goto out;
    const char *p1[] = {in->run_id, nbuf, in->instance};
    PGresult *r = PQexecParams(c,
                               "UPDATE runs SET last_seq = last_seq + $2::bigint, heartbeat_at = now()"
                               " WHERE id = $1 AND claimed_by = $3 RETURNING last_seq, cancel_requested",
                               3, NULL, p1, NULL, NULL, 0);
    if (!ok(r, PGRES_TUPLES_OK, err, errlen)) {
        PQclear(r);
        goto rollback;
    }
    if (PQntuples(r) == 0) {
        PQclear(r);
        snprintf(err, errlen, "run %s is no longer claimed by this server", in->run_id);
        rc = WR_LOST;
        goto rollback;
    }
    long long last = atoll(PQgetvalue(r, 0, 0));
    if (PQgetvalue(r, 0, 1)[0] == 't') atomic_store(&in->cancel, true);
    PQclear(r);
    bool integ_now = false;
    if (in->integ && !in->integ_saved) { /* the MLflow run id, once known */
        json_t *is = integrations_state(in->integ);
        char *iss = is ? json_dumps(is, JSON_COMPACT) : NULL;
        json_decref(is);
        const char *pi[] = {in->run_id, iss};
        bool g = !iss || exec(c, "UPDATE runs SET integrations_state = $2::jsonb WHERE id = $1", 2,
                              pi, err, errlen);
        integ_now = iss != NULL;
        free(iss);
        if (!g) goto rollback;
    }
    snprintf(base_s, sizeof base_s, "%lld", last - n);
    snprintf(last_s, sizeof last_s, "%lld", last);
    const char *pe[] = {in->run_id, base_s, arr_end(&types), arr_end(&datas)};
    if (!exec(c, "INSERT INTO run_events (run_id, seq, type, data)"
                 " SELECT $1, $2::bigint + o, t, d::jsonb"
                 " FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS x(t, d, o)",
              4, pe, err, errlen))
        goto rollback;
    if (n_metrics) {
        const char *pm[] = {in->run_id, arr_end(&m_stage), arr_end(&m_name), arr_end(&m_step),
                            arr_end(&m_val)};
        if (!exec(c, "INSERT INTO run_metrics (run_id, stage, name, step, value)"
                     " SELECT $1, s, n, st, v FROM unnest($2::text[], $3::text[], $4::bigint[],"
                     " $5::float8[]) AS x(s, n, st, v) ON CONFLICT DO NOTHING",
                  5, pm, err, errlen))
            goto rollback;
    }
    if (n_samples) {
        const char *ps[] = {in->run_id, arr_end(&s_stage), arr_end(&s_step), arr_end(&s_ord),
                            arr_end(&s_data)};
        if (!exec(c, "INSERT INTO run_samples (run_id, stage, step, ord, data)"
                     " SELECT $1, s, st, o, d::jsonb FROM unnest($2::text[], $3::bigint[],"
                     " $4::int[], $5::text[]) AS x(s, st, o, d) ON CONFLICT DO NOTHING",
                  5, ps, err, errlen))
            goto rollback;
    }
    if (n_ckpt) {
        const char *pc[] = {in->run_id, arr_end(&c_stage), arr_end(&c_step), arr_end(&c_path)};
        if (!exec(c, "INSERT INTO run_checkpoints (run_id, stage, step, path)"
                     " SELECT $1, s, st, p FROM unnest($2::text[], $3::bigint[], $4::text[])"
                     " AS x(s, st, p) ON CONFLICT (run_id, stage, step)"
                     " DO UPDATE SET path = EXCLUDED.path, created_at = now()",
                  4, pc, err, errlen))
            goto rollback;
    }
    for (int i = 0; i < n; i++) {
        json_t *ev = items[i].ev;
        const char *type = json_string_value(json_object_get(ev, "type"));
        if (items[i].status) {
            const char *st = json_string_value(json_object_get(ev, "status"));
            const char *msg = json_string_value(json_object_get(ev, "message"));
            bool final = strcmp(st, "running") != 0;
            json_t *is = in->integ ? integrations_state(in->integ) : NULL;
            char *iss = is ? json_dumps(is, JSON_COMPACT) : NULL;
            json_decref(is);
            const char *pst[] = {in->run_id, st, strcmp(st, "succeeded") == 0 ? NULL : msg,
                                 final ? "t" : "f", items[i].count_auto ? "1" : "0", iss};
            bool g = exec(c,
                          "UPDATE runs SET status = $2,"
                          " error = CASE WHEN $2 IN ('failed', 'cancelled', 'queued') THEN $3"
                          "   ELSE NULL END,"
                          " finished_at = CASE WHEN $2 IN ('succeeded', 'failed', 'cancelled')"
                          "   THEN now() END,"
                          " claimed_by = CASE WHEN $4::bool THEN NULL ELSE claimed_by END,"
                          " heartbeat_at = CASE WHEN $4::bool THEN NULL ELSE heartbeat_at END,"
                          " cancel_requested = CASE WHEN $4::bool THEN false"
                          "   ELSE cancel_requested END,"
                          " auto_resumes = auto_resumes + $5::int,"
                          " integrations_state = coalesce($6::jsonb, integrations_state),"
                          " resume_from = CASE WHEN $4::bool THEN coalesce((SELECT path FROM"
                          "   run_checkpoints k WHERE k.run_id = $1 ORDER BY created_at DESC,"
                          "   step DESC LIMIT 1), resume_from) ELSE resume_from END"
                          " WHERE id = $1",
                          6, pst, err, errlen);
            free(iss);
            if (!g) goto rollback;
        } else if (type && strcmp(type, "stage") == 0) {
            const char *st = json_string_value(json_object_get(ev, "status"));
            const char *name = json_string_value(json_object_get(ev, "stage"));
            if (!name || !st) continue;
            char *info = json_dumps(ev, JSON_COMPACT);
            const char *pst[] = {in->run_id, name, json_string_value(json_object_get(ev, "kind")),
                                 st, json_string_value(json_object_get(ev, "path")), info};
            bool g = exec(c,
                          "INSERT INTO run_stages (run_id, name, kind, status, path, info,"
                          " finished_at) VALUES ($1, $2, $3, $4, $5, $6::jsonb,"
                          " CASE WHEN $4 IN ('succeeded', 'failed') THEN now() END)"
                          " ON CONFLICT (run_id, name) DO UPDATE SET"
                          " kind = coalesce(EXCLUDED.kind, run_stages.kind),"
                          " status = EXCLUDED.status, path = coalesce(EXCLUDED.path, run_stages.path),"
                          " info = run_stages.info || EXCLUDED.info,"
                          " finished_at = EXCLUDED.finished_at",
                          6, pst, err, errlen);
            free(info);
            if (!g) goto rollback;
        } else if (type && strcmp(type, "error") == 0 && json_object_get(ev, "stage")) {
            const char *pst[] = {in->run_id, json_string_value(json_object_get(ev, "stage"))};
            if (pst[1] && !exec(c, "UPDATE run_stages SET status = 'failed', finished_at = now()"
                                   " WHERE run_id = $1 AND name = $2 AND status = 'running'",
                                2, pst, err, errlen))
                goto rollback;
        }
    }
    snprintf(nbuf, sizeof nbuf, "%lld", last - n + 1);
    const char *pn[] = {in->run_id, nbuf, last_s};
    if (!exec(c, "SELECT pg_notify('aha_run_events', $1 || ':' || s)"
                 " FROM generate_series($2::bigint, $3::bigint) s",
              3, pn, err, errlen))
        goto rollback;
    if (!exec(c, "COMMIT", 0, NULL, err, errlen)) goto out;
    if (integ_now) in->integ_saved = true;
    rc = WR_OK;
    goto out;
rollback:
    if (PQstatus(c) == CONNECTION_OK) {
        PGresult *rb = PQexec(c, "ROLLBACK");
        PQclear(rb);
    }
out:
    if (rc != WR_OK) { /* the same items are written again: number their samples again */
        snprintf(in->sample_stage, sizeof in->sample_stage, "%s", saved_stage);
        in->sample_step = saved_step;
        in->sample_ord = saved_ord;
    }
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) sbuf_free(&all[i]->b);
    return rc;
}

/* After a committed batch: the side effects outside the database. */
static void after_batch(struct runs_ingest *in, struct item *items, int n)
{
    double now = clock_wall();
    for (int i = 0; i < n; i++) {
        json_t *ev = items[i].ev;
        if (items[i].status) {
            if (in->integ)
                integrations_status(in->integ, json_string_value(json_object_get(ev, "status")),
                                    json_string_value(json_object_get(ev, "message")));
            continue;
        }
        const char *type = json_string_value(json_object_get(ev, "type"));
        if (!type) continue;
        if (strcmp(type, "metric") == 0 && in->integ)
            integrations_metrics(in->integ, json_string_value(json_object_get(ev, "stage")),
                                 (long)jint(ev, "step", 0), json_object_get(ev, "values"), now);
        const char *st = json_string_value(json_object_get(ev, "status"));
        const char *path = json_string_value(json_object_get(ev, "path"));
        const char *stage = json_string_value(json_object_get(ev, "stage"));
        if (strcmp(type, "stage") || !st || strcmp(st, "succeeded") || !path || !stage) continue;
        /* generate and rejection_sample name the dataset they wrote */
        const char *dataset = json_string_value(json_object_get(ev, "dataset"));
        if (dataset)
            runs_stage_dataset_import(in->srv, in->run_id, in->run_name, stage, dataset);
        else if (strcmp(json_string_value(json_object_get(ev, "kind")) ?: "", "eval") != 0)
            runs_stage_model_link(in->srv, in->run_name, stage, path);
    }
}

static bool heartbeat(struct runs_ingest *in, char *err, size_t errlen)
{
    const char *p[] = {in->run_id, in->instance};
    PGresult *r = PQexecParams(in->conn,
                               "UPDATE runs SET heartbeat_at = now() WHERE id = $1 AND"
                               " claimed_by = $2 RETURNING cancel_requested",
                               2, NULL, p, NULL, NULL, 0);
    bool g = ok(r, PGRES_TUPLES_OK, err, errlen);
    if (g && PQntuples(r) == 0) atomic_store(&in->lost, true);
    if (g && PQntuples(r) == 1 && PQgetvalue(r, 0, 0)[0] == 't') atomic_store(&in->cancel, true);
    PQclear(r);
    return g;
}

static bool connect_writer(struct runs_ingest *in, char *err, size_t errlen)
{
    if (in->conn && PQstatus(in->conn) == CONNECTION_OK) return true;
    if (in->conn) PQfinish(in->conn);
    in->conn = db_connect(in->srv->cfg.database_url, err, errlen);
    return in->conn != NULL;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static void *writer(void *arg)
{
    struct runs_ingest *in = arg;
    struct item *batch = calloc(RUNS_BATCH_MAX, sizeof *batch);
    double last_beat = clock_mono();
    char err[1024];
    for (;;) {
        pthread_mutex_lock(&in->mu);
        for (;;) {
            double now = clock_mono();
            if (in->count >= RUNS_BATCH_MAX || (in->count && in->closing)) break;
            if (in->count && now - in->first_at >= RUNS_FLUSH_S) break;
            if (in->closing || now - last_beat >= RUNS_HEARTBEAT_S) break;
            if (in->count && in->ring[(in->head + in->count - 1) % RUNS_QUEUE_MAX].status) break;
            double until = in->count ? in->first_at + RUNS_FLUSH_S : last_beat + RUNS_HEARTBEAT_S;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            double wait = until - now;
            if (wait < 0.001) wait = 0.001;
            long long ns = (long long)ts.tv_nsec + (long long)(wait * 1e9);
            ts.tv_sec += (time_t)(ns / 1000000000LL);
            ts.tv_nsec = (long)(ns % 1000000000LL);
            pthread_cond_timedwait(&in->cv_items, &in->mu, &ts);
        }
        int n = in->count < RUNS_BATCH_MAX ? in->count : RUNS_BATCH_MAX;
        for (int i = 0; i < n; i++) batch[i] = in->ring[(in->head + i) % RUNS_QUEUE_MAX];
        in->head = (in->head + n) % RUNS_QUEUE_MAX;
        in->count -= n;
        if (in->count) in->first_at = clock_mono();
        bool closing = in->closing;
        pthread_cond_broadcast(&in->cv_space);
        pthread_mutex_unlock(&in->mu);

        double backoff = INGEST_RETRY_MIN_S;
        for (;;) {
            if (atomic_load(&in->lost)) break;
            err[0] = 0;
            int rc = WR_RETRY;
            if (connect_writer(in, err, sizeof err))
                rc = n ? write_batch(in, batch, n, err, sizeof err)
                       : (heartbeat(in, err, sizeof err) ? WR_OK : WR_RETRY);
            if (rc == WR_OK) {
                last_beat = clock_mono();
                after_batch(in, batch, n);
                break;
            }
            if (rc == WR_LOST) {
                log_msg("run %s: %s; stopping its engine", in->run_id, err);
                atomic_store(&in->lost, true);
                break;
            }
            log_msg("run %s: writing events failed (will retry): %s", in->run_id, err);
            if (in->conn && db_conn_broken(in->conn)) {
                PQfinish(in->conn);
                in->conn = NULL;
            }
            sleep_s(backoff);
            backoff = backoff * 2 > INGEST_RETRY_MAX_S ? INGEST_RETRY_MAX_S : backoff * 2;
        }
        for (int i = 0; i < n; i++) json_decref(batch[i].ev);
        if (atomic_load(&in->lost)) { /* wake a reader waiting for space */
            pthread_mutex_lock(&in->mu);
            pthread_cond_broadcast(&in->cv_space);
            pthread_mutex_unlock(&in->mu);
        }
        pthread_mutex_lock(&in->mu);
        bool done = closing && (in->count == 0 || atomic_load(&in->lost));
        pthread_mutex_unlock(&in->mu);
        if (done) break;
    }
    free(batch);
    return NULL;
}

struct runs_ingest *runs_ingest_new(struct server *srv, const char *run_id, const char *run_name,
                                    const char *instance, struct integrations *integ)
{
    struct runs_ingest *in = calloc(1, sizeof *in);
    if (!in) return NULL;
    in->ring = calloc(RUNS_QUEUE_MAX, sizeof *in->ring);
    in->srv = srv;
    snprintf(in->run_id, sizeof in->run_id, "%s", run_id);
    snprintf(in->run_name, sizeof in->run_name, "%s", run_name);
    snprintf(in->instance, sizeof in->instance, "%s", instance);
    in->integ = integ;
    in->sample_step = -1;
    pthread_mutex_init(&in->mu, NULL);
    pthread_cond_init(&in->cv_items, NULL);
    pthread_cond_init(&in->cv_space, NULL);
    if (!in->ring || pthread_create(&in->thread, NULL, writer, in)) {
        free(in->ring);
        free(in);
        return NULL;
    }
    return in;
}

void runs_ingest_free(struct runs_ingest *in)
{
    if (!in) return;
    pthread_mutex_lock(&in->mu);
    in->closing = true;
    pthread_cond_signal(&in->cv_items);
    pthread_mutex_unlock(&in->mu);
    pthread_join(in->thread, NULL);
    for (int i = 0; i < in->count; i++) json_decref(in->ring[(in->head + i) % RUNS_QUEUE_MAX].ev);
    if (in->conn) PQfinish(in->conn);
    pthread_mutex_destroy(&in->mu);
    pthread_cond_destroy(&in->cv_items);
    pthread_cond_destroy(&in->cv_space);
    free(in->ring);
    free(in);
}
