/* server/runs_sse.c — GET /v1/runs/{id}/events: a run's event log as
 * server-sent events, replayed after Last-Event-ID and then followed live
 * until the run's final status event. One LISTEN connection per server
 * (channel aha_run_events) only wakes streams: every event is read from
 * run_events by seq, in bounded batches, on the pool. Not the writer: the
 * run supervisor (runs.c) inserts events and sends the NOTIFY. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server.h"

/* Named limits. */
#define SSE_BATCH_ROWS 256            /* events read per query */
#define SSE_BATCH_BYTES (256 * 1024)  /* and their data bytes (a bigger event comes alone) */
#define SSE_BLOCK_SIZE (32 * 1024)    /* bytes handed to MHD per read */
#define SSE_RUN_ID_MAX 128            /* a longer id or name is no run */
#define SSE_BUCKETS 256               /* run id hash buckets of live streams */
#define SSE_RETRY_MS 2000             /* the retry: hint for reconnecting clients */
#define SSE_GAP_WAIT_S 5.0            /* a missing seq is awaited this long, then skipped */
#define SSE_STOP_DRAIN_S 2.0          /* shutdown waits this long for streams to flush */
#define SSE_BACKOFF_MIN_S 0.1         /* LISTEN reconnect backoff, doubling ... */
#define SSE_BACKOFF_MAX_S 5.0         /* ... up to this */
#define SSE_LOG_EVERY_S 10.0          /* read failures are logged this often at most */
#define SSE_CHANNEL "aha_run_events"

/* One GET /v1/runs/{id}/events, owned by its http_req (freed by
 * sse_release). The listener thread and the connection's MHD thread share
 * it: fields marked (mu) only under mu; the rest belong to the MHD thread. */
struct sse_stream {
    pthread_mutex_t mu;
    struct MHD_Connection *conn;
    struct server *srv;
    char run_id[SSE_RUN_ID_MAX];
    unsigned bucket;
    struct sse_stream *prev, *next; /* bucket list (reg_mu) */
    long long last_sent;            /* highest seq put in out (mu) */
    bool dirty;                     /* run_events may hold rows past last_sent (mu) */
    bool hb_due;                    /* a heartbeat comment is due (mu) */
    bool suspended;                 /* (mu) */
    bool closing;                   /* server shutdown: flush and end (mu) */
    double last_write;              /* (mu) */
    double gap_since;               /* a missing seq was first seen then, or 0 (mu) */
    sbuf out;                       /* SSE bytes not yet handed to MHD */
    size_t out_pos;
    bool last_final; /* the last event put in out is a final status */
    bool finished;   /* ... and the log had nothing after it: the stream ends */
};

/* Lock order: reg_mu, then a stream's mu, then MHD's own locks (resume). */
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t reg_cv = PTHREAD_COND_INITIALIZER; /* a stream was released */
static struct sse_stream *buckets[SSE_BUCKETS];
static int n_streams;
static bool accepting; /* started and not stopping (reg_mu) */

static pthread_t listen_thread;
static bool listen_running;
static int stop_pipe[2] = {-1, -1};
static char *listen_url;
static double hb_interval = 15;

static unsigned bucket_of(const char *run_id)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)run_id; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % SSE_BUCKETS;
}

/* Marks s to re-read (when seq is past what it sent; seq < 0: always) and
 * resumes it if it sleeps. Called with reg_mu held. */
static void wake_locked(struct sse_stream *s, long long seq, bool heartbeat)
{
    pthread_mutex_lock(&s->mu);
    if (seq < 0 || seq > s->last_sent) s->dirty = true;
    if (heartbeat) s->hb_due = true;
    if (s->suspended && (s->dirty || s->hb_due || s->closing)) {
        s->suspended = false;
        MHD_resume_connection(s->conn);
    }
    pthread_mutex_unlock(&s->mu);
}

/* ---- reading the log (the connection's MHD thread) -------------------------- */

/* Logs a failed read, at most once per SSE_LOG_EVERY_S: while PostgreSQL is
 * down every stream fails at every heartbeat. */
static void log_read_error(const char *run_id, const char *msg)
{
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static double last;
    static long suppressed;
    double now = clock_mono();
    pthread_mutex_lock(&mu);
    if (last > 0 && now - last < SSE_LOG_EVERY_S) {
        suppressed++;
        pthread_mutex_unlock(&mu);
        return;
    }
    long n = suppressed;
    suppressed = 0;
    last = now;
    pthread_mutex_unlock(&mu);
    char line[512];
    snprintf(line, sizeof line, "%s", msg);
    line[strcspn(line, "\n")] = 0;
    if (n)
        log_msg("run %s events: %s (and %ld more read failures)", run_id, line, n);
    else
        log_msg("run %s events: %s", run_id, line);
}

/* Appends the next batch of events after last_sent to s->out: at most
 * SSE_BATCH_ROWS rows and SSE_BATCH_BYTES of data, in seq order, stopping
 * at a missing seq (a writer's transaction not yet committed) until it has
 * been missing SSE_GAP_WAIT_S. Sets finished once a final status event is
 * the last of the log (a resumed run's log goes on after a failed or
 * cancelled one). A database error leaves everything as it was: the next
 * wake-up retries. */
static void sse_fetch(struct sse_stream *s)
{
    /* innermost: the bounded batch by the primary key, rows untouched (so
     * that a plan that sorts does not render every row after $2 as text);
     * then its running byte total, so the byte cap never scans the log */
    static const char *sql =
        "SELECT seq, type, data, final, n FROM ("
        " SELECT *, sum(octet_length(data)) OVER (ORDER BY seq) AS total,"
        "  count(*) OVER () AS n FROM ("
        "  SELECT seq, type, data::text AS data,"
        "   type = 'status' AND data->>'status' IN ('succeeded', 'failed', 'cancelled')"
        "    AS final FROM ("
        "   SELECT seq, type, data FROM run_events WHERE run_id = $1 AND seq > $2::bigint"
        "   ORDER BY seq LIMIT $3::int) raw) batch) sized"
        " WHERE total - octet_length(data) < $4::bigint ORDER BY seq";
    pthread_mutex_lock(&s->mu);
    long long sent = s->last_sent;
    double gap_since = s->gap_since;
    pthread_mutex_unlock(&s->mu);
    char after[32], rows[16], bytes[16], err[256];
    snprintf(after, sizeof after, "%lld", sent);
    snprintf(rows, sizeof rows, "%d", SSE_BATCH_ROWS);
    snprintf(bytes, sizeof bytes, "%d", SSE_BATCH_BYTES);
    const char *params[] = {s->run_id, after, rows, bytes};
    PGresult *r = db_exec(s->srv->pool, sql, 4, params, NULL, NULL, err, sizeof err);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
        log_read_error(s->run_id, r ? PQresultErrorMessage(r) : err);
        PQclear(r);
        return;
    }
    int nrows = PQntuples(r), used = 0;
    int batch = nrows ? atoi(PQgetvalue(r, 0, 4)) : 0; /* rows before the byte cap */
    bool more = batch == SSE_BATCH_ROWS || batch > nrows;
    bool gap = false;
    double now = clock_mono();
    for (; used < nrows; used++) {
        long long seq = atoll(PQgetvalue(r, used, 0));
        const char *type = PQgetvalue(r, used, 1);
        if (seq != sent + 1) {
            if (gap_since == 0) gap_since = now;
            if (now - gap_since < SSE_GAP_WAIT_S) {
                gap = true;
                break;
            }
            log_msg("run %s events: seq %lld to %lld missing for %.0f s; skipped", s->run_id,
                    sent + 1, seq - 1, now - gap_since);
        }
        gap_since = 0;
        if (strpbrk(type, "\r\n")) type = "log"; /* cannot break the framing */
        sbuf_printf(&s->out, "id: %lld\nevent: %s\ndata: %s\n\n", seq, type,
                    PQgetvalue(r, used, 2));
        sent = seq;
        s->last_final = PQgetvalue(r, used, 3)[0] == 't';
    }
    PQclear(r);
    if (s->last_final && !gap && !more) s->finished = true; /* nothing after it */
    pthread_mutex_lock(&s->mu);
    s->last_sent = sent;
    s->gap_since = gap ? gap_since : 0;
    if (more && !gap && !s->finished) s->dirty = true; /* read on once out drains */
    pthread_mutex_unlock(&s->mu);
}

/* MHD's content reader: hands out queued bytes, reads the next batch when
 * woken, writes a heartbeat when due, and otherwise suspends the
 * connection until the listener resumes it. The DB is the buffer: nothing
 * is read while out still holds bytes the client has not taken. */
static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct sse_stream *s = cls;
    for (;;) {
        if (s->out_pos < s->out.len) {
            size_t n = s->out.len - s->out_pos;
            if (n > max) n = max;
            memcpy(buf, s->out.p + s->out_pos, n);
            s->out_pos += n;
            pthread_mutex_lock(&s->mu);
            s->last_write = clock_mono();
            pthread_mutex_unlock(&s->mu);
            return (ssize_t)n;
        }
        if (s->out.cap > 2 * SSE_BLOCK_SIZE) { /* an idle stream keeps no batch-sized buffer */
            sbuf_free(&s->out);
        } else {
            s->out.len = 0;
            if (s->out.p) s->out.p[0] = 0;
        }
        s->out_pos = 0;
        if (s->finished) return MHD_CONTENT_READER_END_OF_STREAM;
        pthread_mutex_lock(&s->mu);
        if (s->closing) {
            pthread_mutex_unlock(&s->mu);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        if (s->dirty) {
            s->dirty = false; /* before the query: a wake-up during it reads again */
            pthread_mutex_unlock(&s->mu);
            sse_fetch(s);
            continue;
        }
        if (s->hb_due) {
            s->hb_due = false;
            pthread_mutex_unlock(&s->mu);
            sbuf_puts(&s->out, ": keep-alive\n\n");
            continue;
        }
        s->suspended = true;
        MHD_suspend_connection(s->conn);
        pthread_mutex_unlock(&s->mu);
        return 0;
    }
}

/* route_release: the request ended (the stream finished, the client left,
 * or the server closed it). */
static void sse_release(struct http_req *hr, bool aborted)
{
    struct sse_stream *s = hr->route_state;
    if (!s) return;
    hr->route_state = NULL;
    pthread_mutex_lock(&reg_mu);
    if (s->prev)
        s->prev->next = s->next;
    else
        buckets[s->bucket] = s->next;
    if (s->next) s->next->prev = s->prev;
    n_streams--;
    pthread_cond_broadcast(&reg_cv);
    pthread_mutex_unlock(&reg_mu);
    sbuf_free(&s->out);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* ---- the request ------------------------------------------------------------ */

/* A non-negative decimal seq; returns 0, or -1 when v is not one. */
static int parse_seq(const char *v, long long *out)
{
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (!*v || *end || errno || n < 0) return -1;
    *out = n;
    return 0;
}

/* run_id is the URL's segment: a run's id or its name. */
enum MHD_Result runs_sse_handle(struct MHD_Connection *c, struct http_req *hr, const char *run_id)
{
    enum MHD_Result ret;
    struct server *srv = hr->srv;
    /* runs_handle may have checked the key already */
    if (hr->key.scope < KEYS_SCOPE_READ && !http_authorize(c, hr, KEYS_SCOPE_READ, &ret))
        return ret;

    long long after = 0;
    const char *hdr = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Last-Event-ID");
    const char *arg = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after");
    const char *v = hdr ? hdr : arg; /* the header wins: EventSource sets it on reconnect */
    if (v && parse_seq(v, &after))
        return http_reply_error(c, hr, 400, "invalid_request_error",
                                hdr ? "Last-Event-ID" : "after", "invalid_value",
                                "'%s' must be an event id (a non-negative integer), not \"%s\"",
                                hdr ? "Last-Event-ID" : "after", v);

    if (strlen(run_id) >= SSE_RUN_ID_MAX)
        return http_reply_error(c, hr, 404, "invalid_request_error", "run_id", "run_not_found",
                                "no run with that id");
    /* the run by id or name, and whether the client already has its last
     * event and that is a final status (a resumed run writes on after one) */
    char err[256], after_s[32];
    snprintf(after_s, sizeof after_s, "%lld", after);
    const char *params[] = {run_id, after_s};
    PGresult *r = db_exec(srv->pool,
                          "SELECT r.id, coalesce((SELECT e.seq <= $2::bigint AND e.type = 'status'"
                          " AND e.data->>'status' IN ('succeeded', 'failed', 'cancelled')"
                          " FROM run_events e WHERE e.run_id = r.id ORDER BY e.seq DESC LIMIT 1),"
                          " false)"
                          " FROM runs r WHERE r.id = $1 OR r.name = $1 ORDER BY r.id = $1 DESC"
                          " LIMIT 1",
                          2, params, NULL, NULL, err, sizeof err);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
        log_read_error(run_id, r ? PQresultErrorMessage(r) : err);
        PQclear(r);
        return http_reply_error(c, hr, 503, "service_unavailable", NULL, "database_unavailable",
                                "the run's events cannot be read: the database is unreachable");
    }
    bool found = PQntuples(r) > 0;
    bool over = found && PQgetvalue(r, 0, 1)[0] == 't';
    char id[SSE_RUN_ID_MAX];
    snprintf(id, sizeof id, "%s", found ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
    if (!found)
        return http_reply_error(c, hr, 404, "invalid_request_error", "run_id", "run_not_found",
                                "no run with id \"%s\"", run_id);
    if (over) { /* 204 is what tells an EventSource to stop reconnecting */
        struct MHD_Response *resp = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
        if (!resp) return MHD_NO;
        hr->status = 204;
        ret = MHD_queue_response(c, 204, resp);
        MHD_destroy_response(resp);
        return ret;
    }

    struct sse_stream *s = calloc(1, sizeof *s);
    if (!s) return MHD_NO;
    pthread_mutex_init(&s->mu, NULL);
    s->conn = c;
    s->srv = srv;
    snprintf(s->run_id, sizeof s->run_id, "%s", id);
    s->bucket = bucket_of(s->run_id);
    s->last_sent = after;
    s->dirty = true; /* the replay: subscribed (below) before the first read */
    s->last_write = clock_mono();
    sbuf_printf(&s->out, "retry: %d\n\n", SSE_RETRY_MS);

    pthread_mutex_lock(&reg_mu);
    bool open = accepting;
    if (open) {
        s->next = buckets[s->bucket];
        if (s->next) s->next->prev = s;
        buckets[s->bucket] = s;
        n_streams++;
    }
    pthread_mutex_unlock(&reg_mu);
    if (!open) {
        sbuf_free(&s->out);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return http_reply_error(c, hr, 503, "service_unavailable", NULL, "shutting_down",
                                "the server is not streaming run events (starting or stopping)");
    }
    hr->route_state = s;
    hr->route_release = sse_release;

    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, SSE_BLOCK_SIZE, sse_read, s, NULL);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", "text/event-stream; charset=utf-8");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    hr->status = 200;
    ret = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ---- the listener thread ---------------------------------------------------- */

/* A NOTIFY payload "<run id>:<seq>" wakes that run's streams that have not
 * sent seq; a payload without a seq wakes all of that run's streams. */
static void dispatch(const char *payload)
{
    char run_id[SSE_RUN_ID_MAX];
    long long seq = -1;
    const char *colon = strrchr(payload, ':');
    size_t n = colon ? (size_t)(colon - payload) : strlen(payload);
    if (n >= sizeof run_id) return;
    memcpy(run_id, payload, n);
    run_id[n] = 0;
    if (colon && parse_seq(colon + 1, &seq)) seq = -1;
    pthread_mutex_lock(&reg_mu);
    for (struct sse_stream *s = buckets[bucket_of(run_id)]; s; s = s->next)
        if (strcmp(s->run_id, run_id) == 0) wake_locked(s, seq, false);
    pthread_mutex_unlock(&reg_mu);
}

/* Every stream re-reads: notifications may have been lost while LISTEN was
 * down. */
static void wake_all(void)
{
    pthread_mutex_lock(&reg_mu);
    for (int b = 0; b < SSE_BUCKETS; b++)
        for (struct sse_stream *s = buckets[b]; s; s = s->next) wake_locked(s, -1, false);
    pthread_mutex_unlock(&reg_mu);
}

/* Heartbeats for quiet streams (which also re-read the log, a safety net
 * under the notifications), and re-reads for streams waiting on a gap. */
static void tick(double now)
{
    pthread_mutex_lock(&reg_mu);
    for (int b = 0; b < SSE_BUCKETS; b++)
        for (struct sse_stream *s = buckets[b]; s; s = s->next) {
            pthread_mutex_lock(&s->mu);
            bool hb = now - s->last_write >= hb_interval;
            bool gap = s->gap_since > 0 && now - s->gap_since >= SSE_GAP_WAIT_S;
            pthread_mutex_unlock(&s->mu);
            if (hb || gap) wake_locked(s, -1, hb);
        }
    pthread_mutex_unlock(&reg_mu);
}

static PGconn *listen_connect(char *err, size_t errlen)
{
    PGconn *c = db_connect(listen_url, err, errlen);
    if (!c) return NULL;
    PGresult *r = PQexec(c, "LISTEN " SSE_CHANNEL);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) snprintf(err, errlen, "LISTEN %s: %s", SSE_CHANNEL, PQresultErrorMessage(r));
    PQclear(r);
    if (!ok) {
        PQfinish(c);
        return NULL;
    }
    return c;
}

static void *listen_main(void *arg)
{
    PGconn *conn = NULL;
    double backoff = SSE_BACKOFF_MIN_S, next_try = 0, next_tick = 0;
    double step = hb_interval / 4 < 1 ? hb_interval / 4 : 1;
    bool down_logged = false, ever_up = false;
    for (;;) {
        double now = clock_mono();
        if (!conn && now >= next_try) {
            char err[512];
            conn = listen_connect(err, sizeof err);
            if (conn) {
                if (ever_up) log_msg("run events: LISTEN %s again", SSE_CHANNEL);
                ever_up = true;
                down_logged = false;
                backoff = SSE_BACKOFF_MIN_S;
                wake_all();
            } else {
                if (!down_logged) log_msg("run events: %s; retrying", err);
                down_logged = true;
                next_try = now + backoff;
                backoff = backoff * 2 < SSE_BACKOFF_MAX_S ? backoff * 2 : SSE_BACKOFF_MAX_S;
            }
        }
        double until = next_tick;
        if (!conn && next_try < until) until = next_try;
        int timeout_ms = until > now ? (int)((until - now) * 1000) + 1 : 0;
        struct pollfd fds[2] = {{.fd = stop_pipe[0], .events = POLLIN},
                                {.fd = conn ? PQsocket(conn) : -1, .events = POLLIN}};
        if (poll(fds, 2, timeout_ms) < 0 && errno != EINTR) break;
        if (fds[0].revents) break;
        if (conn && fds[1].revents) {
            if (!PQconsumeInput(conn) || PQstatus(conn) != CONNECTION_OK) {
                char *msg = PQerrorMessage(conn), *nl = strchr(msg, '\n');
                if (nl) *nl = 0;
                log_msg("run events: LISTEN connection lost: %s; reconnecting", msg);
                down_logged = true;
                PQfinish(conn);
                conn = NULL;
                next_try = clock_mono();
            } else {
                PGnotify *n;
                while ((n = PQnotifies(conn))) {
                    dispatch(n->extra);
                    PQfreemem(n);
                }
            }
        }
        now = clock_mono();
        if (now >= next_tick) {
            tick(now);
            next_tick = now + step;
        }
    }
    if (conn) PQfinish(conn);
    return NULL;
}

int runs_sse_start(struct server *srv, char *err, size_t errlen)
{
    hb_interval = srv->cfg.heartbeat_s > 0 ? srv->cfg.heartbeat_s : 15;
    listen_url = strdup(srv->cfg.database_url);
    if (!listen_url || pipe2(stop_pipe, O_CLOEXEC | O_NONBLOCK)) {
        snprintf(err, errlen, "run events: %s", strerror(errno));
        free(listen_url);
        listen_url = NULL;
        return -1;
    }
    /* PostgreSQL may be down now: the thread connects (and retries) itself */
    if (pthread_create(&listen_thread, NULL, listen_main, NULL)) {
        snprintf(err, errlen, "run events: cannot start the LISTEN thread");
        close(stop_pipe[0]);
        close(stop_pipe[1]);
        stop_pipe[0] = stop_pipe[1] = -1;
        free(listen_url);
        listen_url = NULL;
        return -1;
    }
    listen_running = true;
    pthread_mutex_lock(&reg_mu);
    accepting = true;
    pthread_mutex_unlock(&reg_mu);
    return 0;
}

void runs_sse_stop(void)
{
    if (!listen_running) return;
    pthread_mutex_lock(&reg_mu);
    accepting = false;
    pthread_mutex_unlock(&reg_mu);
    ssize_t w = write(stop_pipe[1], "x", 1);
    (void)w;
    pthread_join(listen_thread, NULL);
    listen_running = false;
    close(stop_pipe[0]);
    close(stop_pipe[1]);
    stop_pipe[0] = stop_pipe[1] = -1;
    free(listen_url);
    listen_url = NULL;

    /* End every stream after what it has queued; clients reconnect with
     * Last-Event-ID. Bounded: a client that stopped reading cannot hold
     * up the shutdown (http_stop closes it). */
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += (time_t)SSE_STOP_DRAIN_S;
    deadline.tv_nsec += (long)((SSE_STOP_DRAIN_S - (double)(time_t)SSE_STOP_DRAIN_S) * 1e9);
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&reg_mu);
    for (int b = 0; b < SSE_BUCKETS; b++)
        for (struct sse_stream *s = buckets[b]; s; s = s->next) {
            pthread_mutex_lock(&s->mu);
            s->closing = true;
            pthread_mutex_unlock(&s->mu);
            wake_locked(s, -1, false);
        }
    while (n_streams > 0)
        if (pthread_cond_timedwait(&reg_cv, &reg_mu, &deadline) == ETIMEDOUT) break;
    if (n_streams) log_msg("shutdown: %d run event streams still sending; closing them", n_streams);
    pthread_mutex_unlock(&reg_mu);
}
