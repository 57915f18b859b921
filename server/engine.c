/* server/engine.c — supervisor thread owning the aha-engine child process
 * (see engine.h and api/engine-protocol.md for the messages). */
#include "engine.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "metrics.h"
#include "util.h"

#define ENGINE_BUCKETS 1024
#define ENGINE_ID_MAX 96
#define ENGINE_MAX_LOADED 64
#define ENGINE_LINE_MAX (64 << 20)  /* one event line; more is a protocol error */
#define ENGINE_BACKOFF_MIN_S 0.1
#define ENGINE_BACKOFF_MAX_S 5.0
#define ENGINE_STABLE_S 30.0        /* uptime after which the backoff resets */
#define ENGINE_PROTOCOL 1           /* api/engine-protocol.md version spoken here */
#define ENGINE_MAX_REQUEST (1 << 20) /* the engine skips longer request lines (SERVE_MAX_LINE) */

struct pending {
    struct pending *next;
    char id[ENGINE_ID_MAX];
    engine_event_fn fn;
    void *user;
    int remaining;        /* "done" events still to come */
    char model[ENGINE_ID_MAX * 2];
};

struct engine {
    char **argv;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t stop_cv;
    bool stopping;
    bool alive;
    bool greeted;         /* the child sent its "ready" line (it is reading requests) */
    bool incompatible;    /* the child announced another protocol version */
    pid_t pid;
    int wake[2];          /* self-pipe: new output queued or stopping */
    sbuf outq;            /* NDJSON lines waiting for the child's stdin */
    struct pending *buckets[ENGINE_BUCKETS];
    int inflight;         /* samples without their "done" yet */
    char *loaded[ENGINE_MAX_LOADED];
    int nloaded;
    long load_seq;
    json_t *load_opts;    /* extra fields of every "load" (kv_memory_mb, max_seqs) */
    json_t *drafts;       /* model id -> its draft model's directory */
    char failed_model[ENGINE_ID_MAX * 2]; /* the last load that failed, and why */
    char failed_msg[512];
    bool stats_pending;   /* a "stats" for /metrics is unanswered */
    double stats_at;      /* when it was sent */
};

/* The id of the supervisor's own "stats" requests (requests' ids are the
 * server's, never this), and how often they go out. */
#define ENGINE_STATS_ID "aha-metrics-stats"
#define ENGINE_STATS_EVERY_S 1.0

/* The engine's own figures (its "stats", summed over its models) into the
 * metrics /metrics renders: KV cache use, sequences, preemptions, drafts,
 * prefix cache. Counters restart with the engine. */
static void stats_to_metrics(json_t *ev)
{
    long used = 0, total = 0, active = 0, waiting = 0, pre = 0, drafted = 0, kept = 0,
         queries = 0, hits = 0;
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(ev, "models"), i, m) {
        struct { long *sum; const char *key; } f[] = {
            {&used, "kv_blocks_used"}, {&total, "kv_blocks_total"}, {&active, "active"},
            {&waiting, "waiting"}, {&pre, "preemptions"}, {&drafted, "spec_draft_tokens"},
            {&kept, "spec_accepted_tokens"}, {&queries, "prefix_cache_queries"},
            {&hits, "prefix_cache_hits"}};
        for (size_t k = 0; k < sizeof f / sizeof *f; k++)
            *f[k].sum += (long)json_integer_value(json_object_get(m, f[k].key));
    }
    atomic_store(&metrics.engine_kv_blocks_used, used);
    atomic_store(&metrics.engine_kv_blocks_total, total);
    atomic_store(&metrics.engine_active, active);
    atomic_store(&metrics.engine_waiting, waiting);
    atomic_store(&metrics.engine_preemptions, pre);
    atomic_store(&metrics.engine_spec_drafted, drafted);
    atomic_store(&metrics.engine_spec_accepted, kept);
    atomic_store(&metrics.engine_prefix_queries, queries);
    atomic_store(&metrics.engine_prefix_hits, hits);
}

static unsigned hash_id(const char *s)
{
    unsigned h = 2166136261u;
    while (*s) h = (h ^ (unsigned char)*s++) * 16777619u;
    return h % ENGINE_BUCKETS;
}

static struct pending **find_slot(engine *e, const char *id)
{
    struct pending **pp = &e->buckets[hash_id(id)];
    while (*pp && strcmp((*pp)->id, id) != 0) pp = &(*pp)->next;
    return pp;
}

void engine_set_drafts(engine *e, json_t *drafts)
{
    json_decref(e->drafts);
    e->drafts = drafts;
}

engine *engine_new(char *const *argv, json_t *load_opts)
{
    engine *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    int n = 0;
    while (argv[n]) n++;
    e->argv = calloc((size_t)n + 1, sizeof *e->argv);
    for (int i = 0; i < n; i++) e->argv[i] = strdup(argv[i]);
    e->load_opts = load_opts;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->stop_cv, NULL);
    if (pipe2(e->wake, O_CLOEXEC | O_NONBLOCK)) {
        free(e->argv);
        free(e);
        return NULL;
    }
    return e;
}

static void wake(engine *e)
{
    char b = 1;
    ssize_t w = write(e->wake[1], &b, 1);
    (void)w;
}

/* Under e->mu. */
static void queue_line(engine *e, json_t *msg)
{
    char *s = json_dumps(msg, JSON_COMPACT);
    if (s) {
        sbuf_puts(&e->outq, s);
        sbuf_puts(&e->outq, "\n");
        free(s);
        wake(e);
    }
}

/* Tells a running engine to drop request id (under e->mu). */
static void queue_cancel(engine *e, const char *id)
{
    if (!e->alive) return;
    json_t *m = json_pack("{s:s, s:s}", "type", "cancel", "id", id);
    queue_line(e, m);
    json_decref(m);
}

/* Fails every request in flight (under e->mu). */
static void fail_all(engine *e, const char *message)
{
    json_t *ev = json_pack("{s:s, s:s, s:s}", "type", "error", "message", message, "code",
                           "engine_unavailable");
    for (int b = 0; b < ENGINE_BUCKETS; b++) {
        struct pending *p = e->buckets[b];
        e->buckets[b] = NULL;
        while (p) {
            struct pending *next = p->next;
            json_object_set_new(ev, "id", json_string(p->id));
            p->fn(p->user, ev);
            free(p);
            p = next;
        }
    }
    e->inflight = 0;
    json_decref(ev);
}

/* U+FFFD for every NUL in v's strings (recursively). The protocol's text
 * has none (the engine writes U+FFFD itself), but a line with one must not
 * be lost: jansson refuses "\u0000" unless asked, and the event dropped
 * would be a request's done, leaving its client waiting. */
static void nul_to_replacement(json_t *v)
{
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) nul_to_replacement(x);
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) nul_to_replacement(json_array_get(v, i));
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        if (!memchr(s, 0, n)) return;
        char *b = malloc(3 * n);
        if (!b) return;
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
            if (s[i]) { b[o++] = s[i]; continue; }
            memcpy(b + o, "\xEF\xBF\xBD", 3);
            o += 3;
        }
        json_string_setn(v, b, o);
        free(b);
    }
}

/* The request id in an event line that is not JSON (an engine fault: a
 * garbled or cut write): the string value of its first "id" key, when it
 * is complete and has no escapes; else "". Every request event names its
 * request this way, so the request can be failed instead of left waiting
 * for events that will never parse. */
static void salvage_id(const char *line, size_t len, char *id, size_t cap)
{
    const char *end = line + len, *p = memmem(line, len, "\"id\"", 4);
    id[0] = 0;
    if (!p) return;
    for (p += 4; p < end && (*p == ' ' || *p == ':'); p++) {}
    if (p >= end || *p++ != '"') return;
    const char *q = p;
    while (q < end && *q != '"' && *q != '\\') q++;
    if (q >= end || *q != '"' || (size_t)(q - p) >= cap) return;
    memcpy(id, p, (size_t)(q - p));
    id[q - p] = 0;
}

static void dispatch(engine *e, const char *line, size_t len)
{
    json_error_t jerr;
    json_t *ev = json_loadb(line, len, JSON_ALLOW_NUL, &jerr);
    /* a NUL can only come in as the escape \u0000: walk the event only then */
    if (memmem(line, len, "\\u0000", 6)) nul_to_replacement(ev);
    bool garbled = false;
    if (!json_is_object(ev)) {
        char id[256], msg[512];
        salvage_id(line, len, id, sizeof id);
        log_msg("engine: event line that is not JSON (%s at column %d)%s%s: %.200s", jerr.text,
                jerr.column, id[0] ? " for " : "", id, line);
        json_decref(ev);
        if (!id[0]) return;
        /* its request ends here with this error, and the engine is told to
         * drop it (before, the line was skipped: a lost token, or a lost
         * done that left the client waiting for the engine timeout) */
        snprintf(msg, sizeof msg, "the engine sent an event that is not JSON (%s)", jerr.text);
        ev = json_pack("{s:s, s:s, s:s, s:s}", "type", "error", "id", id, "message", msg, "code",
                       "engine_error");
        if (!ev) return;
        garbled = true;
    }
    const char *type = json_string_value(json_object_get(ev, "type"));
    const char *id = json_string_value(json_object_get(ev, "id"));
    if (!type) type = "";
    pthread_mutex_lock(&e->mu);
    if (strcmp(type, "ready") == 0) {
        json_t *proto = json_object_get(ev, "protocol");
        e->incompatible = json_is_integer(proto) && json_integer_value(proto) != ENGINE_PROTOCOL;
        e->greeted = true;
        if (e->incompatible)
            log_msg("engine speaks protocol %lld; this server speaks %d: not using it",
                    (long long)json_integer_value(proto), ENGINE_PROTOCOL);
    }
    if (id && strcmp(id, ENGINE_STATS_ID) == 0) {
        e->stats_pending = false;
        if (strcmp(type, "stats") == 0) stats_to_metrics(ev);
        pthread_mutex_unlock(&e->mu);
        json_decref(ev);
        return;
    }
    struct pending **pp = id ? find_slot(e, id) : NULL;
    const char *emsg = json_string_value(json_object_get(ev, "message"));
    if (pp && *pp && strcmp(type, "error") == 0 && e->failed_model[0] &&
        strcmp((*pp)->model, e->failed_model) == 0 && emsg && strstr(emsg, "not loaded")) {
        /* the generate failed because its model did not load: say why */
        char msg[768];
        snprintf(msg, sizeof msg, "model \"%s\" could not be loaded: %s", e->failed_model,
                 e->failed_msg);
        json_object_set_new(ev, "message", json_string(msg));
        json_object_set_new(ev, "code", json_string("model_load_failed"));
    }
    if (pp && *pp) {
        struct pending *p = *pp;
        bool done = strcmp(type, "done") == 0;
        if (done) {
            p->remaining--;
            e->inflight--;
        }
        bool last = strcmp(type, "error") == 0 || (done && p->remaining <= 0);
        p->fn(p->user, ev);
        if (last) {
            *pp = p->next;
            e->inflight -= p->remaining;
            free(p);
        }
        if (garbled) queue_cancel(e, id);
    } else if (!garbled && strcmp(type, "error") == 0) {   /* a garbled line was logged */
        const char *msg = json_string_value(json_object_get(ev, "message"));
        if (!msg || strncmp(msg, "cancel:", 7) != 0) /* a cancel racing its done is normal */
            log_msg("engine error%s%s: %s", id ? " for " : "", id ? id : "", msg ? msg : "?");
        const char *model = id && strncmp(id, "load-", 5) == 0 ? strchr(id + 5, '-') : NULL;
        if (model) { /* "load-N-<model>": forget it, so the next request loads it again */
            model++;
            for (int i = 0; i < e->nloaded; i++)
                if (strcmp(e->loaded[i], model) == 0) {
                    free(e->loaded[i]);
                    e->loaded[i] = e->loaded[--e->nloaded];
                    break;
                }
            snprintf(e->failed_model, sizeof e->failed_model, "%s", model);
            snprintf(e->failed_msg, sizeof e->failed_msg, "%s", msg ? msg : "?");
        }
    }
    pthread_mutex_unlock(&e->mu);
    json_decref(ev);
}

static pid_t spawn(engine *e, int *in_fd, int *out_fd)
{
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC)) return -1;
    if (pipe2(out, O_CLOEXEC)) {
        close(in[0]);
        close(in[1]);
        return -1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        signal(SIGPIPE, SIG_DFL);
        execv(e->argv[0], e->argv);
        fprintf(stderr, "aha-server: cannot run engine %s: %s\n", e->argv[0], strerror(errno));
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    if (pid < 0) {
        close(in[1]);
        close(out[0]);
        return -1;
    }
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    *in_fd = in[1];
    *out_fd = out[0];
    return pid;
}

/* Reaps the child, escalating to SIGKILL after 2 s; returns its status. */
static int reap(pid_t pid, bool terminate)
{
    int status = 0;
    if (terminate) kill(pid, SIGTERM);
    for (int i = 0; i < 200; i++) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid || r < 0) return status;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
        if (i == 100 && !terminate) kill(pid, SIGTERM);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return status;
}

/* Runs one child until it exits or the supervisor stops. */
static void run_child(engine *e, int in_fd, int out_fd)
{
    sbuf line = {0};
    char buf[65536];
    bool eof = false;
    while (!eof) {
        pthread_mutex_lock(&e->mu);
        bool stopping = e->stopping, want_write = e->outq.len > 0;
        pthread_mutex_unlock(&e->mu);
        if (stopping) break;
        struct pollfd fds[3] = {
            {out_fd, POLLIN, 0}, {e->wake[0], POLLIN, 0}, {in_fd, want_write ? POLLOUT : 0, 0}};
        if (poll(fds, 3, 1000) < 0 && errno != EINTR) break;
        if (fds[1].revents & POLLIN)
            while (read(e->wake[0], buf, sizeof buf) > 0) {}
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            for (;;) {
                ssize_t n = read(out_fd, buf, sizeof buf);
                if (n == 0) {
                    eof = true;
                    break;
                }
                if (n < 0) {
                    if (errno != EAGAIN && errno != EINTR) eof = true;
                    break;
                }
                size_t start = 0;
                for (size_t i = 0; i < (size_t)n; i++) {
                    if (buf[i] != '\n') continue;
                    sbuf_append(&line, buf + start, i - start);
                    if (line.len) dispatch(e, line.p, line.len);
                    line.len = 0;
                    start = i + 1;
                }
                sbuf_append(&line, buf + start, (size_t)n - start);
                if (line.len > ENGINE_LINE_MAX) {
                    log_msg("engine: event line over %d bytes; restarting it", ENGINE_LINE_MAX);
                    eof = true;
                    break;
                }
            }
        }
        if (fds[2].revents & (POLLERR | POLLHUP)) eof = true;
        pthread_mutex_lock(&e->mu);
        const double now = clock_mono();
        if (e->greeted && !e->incompatible && !e->stats_pending &&
            now - e->stats_at >= ENGINE_STATS_EVERY_S) {
            json_t *m = json_pack("{s:s, s:s}", "type", "stats", "id", ENGINE_STATS_ID);
            queue_line(e, m);
            json_decref(m);
            e->stats_pending = true;
            e->stats_at = now;
        }
        while (e->outq.len) {
            ssize_t w = write(in_fd, e->outq.p, e->outq.len);
            if (w <= 0) {
                if (w < 0 && errno != EAGAIN && errno != EINTR) eof = true;
                break;
            }
            sbuf_consume(&e->outq, (size_t)w);
        }
        pthread_mutex_unlock(&e->mu);
    }
    sbuf_free(&line);
}

static void *supervise(void *arg)
{
    engine *e = arg;
    double backoff = ENGINE_BACKOFF_MIN_S;
    for (;;) {
        int in_fd = -1, out_fd = -1;
        pid_t pid = spawn(e, &in_fd, &out_fd);
        double started = clock_mono();
        if (pid > 0) {
            pthread_mutex_lock(&e->mu);
            e->alive = true;
            e->greeted = false;
            e->incompatible = false;
            e->stats_pending = false;
            e->pid = pid;
            for (int i = 0; i < e->nloaded; i++) free(e->loaded[i]);
            e->nloaded = 0;
            pthread_mutex_unlock(&e->mu);
            log_msg("engine started: %s (pid %d)", e->argv[0], (int)pid);
            run_child(e, in_fd, out_fd);
            close(in_fd);
            close(out_fd);
        } else {
            log_msg("engine: cannot start %s: %s", e->argv[0], strerror(errno));
        }
        pthread_mutex_lock(&e->mu);
        e->alive = false;
        e->pid = 0;
        bool stopping = e->stopping;
        pthread_mutex_unlock(&e->mu);
        int status = pid > 0 ? reap(pid, true) : 0;
        pthread_mutex_lock(&e->mu);
        e->outq.len = 0;
        fail_all(e, stopping ? "the server is shutting down"
                             : "the engine process exited; it is being restarted");
        pthread_mutex_unlock(&e->mu);
        if (stopping) break;
        if (pid > 0) {
            if (WIFSIGNALED(status))
                log_msg("engine exited on signal %d", WTERMSIG(status));
            else
                log_msg("engine exited with status %d", WEXITSTATUS(status));
        }
        atomic_fetch_add(&metrics.engine_restarts, 1);
        if (clock_mono() - started > ENGINE_STABLE_S) backoff = ENGINE_BACKOFF_MIN_S;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        long long ns = (long long)until.tv_nsec + (long long)(backoff * 1e9);
        until.tv_sec += (time_t)(ns / 1000000000LL);
        until.tv_nsec = (long)(ns % 1000000000LL);
        pthread_mutex_lock(&e->mu);
        if (!e->stopping) pthread_cond_timedwait(&e->stop_cv, &e->mu, &until);
        stopping = e->stopping;
        pthread_mutex_unlock(&e->mu);
        if (stopping) break;
        backoff = backoff * 2 > ENGINE_BACKOFF_MAX_S ? ENGINE_BACKOFF_MAX_S : backoff * 2;
    }
    return NULL;
}

int engine_start(engine *e)
{
    if (pthread_create(&e->thread, NULL, supervise, e)) return -1;
    e->thread_started = true;
    return 0;
}

void engine_stop(engine *e)
{
    pthread_mutex_lock(&e->mu);
    e->stopping = true;
    pthread_cond_broadcast(&e->stop_cv);
    pthread_mutex_unlock(&e->mu);
    wake(e);
    if (e->thread_started) pthread_join(e->thread, NULL);
    e->thread_started = false;
}

void engine_free(engine *e)
{
    if (!e) return;
    engine_stop(e);
    for (int i = 0; e->argv[i]; i++) free(e->argv[i]);
    free(e->argv);
    for (int i = 0; i < e->nloaded; i++) free(e->loaded[i]);
    json_decref(e->load_opts);
    json_decref(e->drafts);
    sbuf_free(&e->outq);
    close(e->wake[0]);
    close(e->wake[1]);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->stop_cv);
    free(e);
}

int engine_submit(engine *e, const char *id, const char *model_id, const char *model_path,
                  json_t *msg, int n_done, engine_event_fn fn, void *user, char *err,
                  size_t errlen)
{
    if (strlen(id) >= ENGINE_ID_MAX) {
        json_decref(msg);
        snprintf(err, errlen, "request id too long");
        return -1;
    }
    /* A line the engine would skip would never be answered: refuse it here. */
    json_object_set_new(msg, "id", json_string(id));
    char *line = json_dumps(msg, JSON_COMPACT);
    size_t len = line ? strlen(line) : 0;
    free(line);
    if (!line || len >= ENGINE_MAX_REQUEST) {
        json_decref(msg);
        snprintf(err, errlen,
                 "the request is %zu bytes as an engine request; the engine takes at most %d", len,
                 ENGINE_MAX_REQUEST - 1);
        return -2;
    }
    pthread_mutex_lock(&e->mu);
    if (!e->alive || e->stopping || e->incompatible) {
        pthread_mutex_unlock(&e->mu);
        json_decref(msg);
        snprintf(err, errlen, "%s",
                 e->incompatible ? "the engine speaks another protocol version"
                                 : "the engine is not running (starting or restarting)");
        return -1;
    }
    struct pending **pp = find_slot(e, id);
    if (*pp) {
        pthread_mutex_unlock(&e->mu);
        json_decref(msg);
        snprintf(err, errlen, "request id %s already in flight", id);
        return -1;
    }
    bool loaded = false;
    for (int i = 0; i < e->nloaded; i++)
        if (strcmp(e->loaded[i], model_id) == 0) loaded = true;
    if (!loaded) {
        char lid[ENGINE_ID_MAX * 3];
        snprintf(lid, sizeof lid, "load-%ld-%s", ++e->load_seq, model_id);
        json_t *load = json_pack("{s:s, s:s, s:s, s:s, s:i}", "type", "load", "id", lid, "model",
                                 model_id, "path", model_path, "protocol", ENGINE_PROTOCOL);
        if (e->load_opts) json_object_update(load, e->load_opts);
        json_t *draft = e->drafts ? json_object_get(e->drafts, model_id) : NULL;
        if (draft) {
            const json_int_t k = json_integer_value(
                json_object_get(json_object_get(load, "speculative"), "num_speculative_tokens"));
            json_object_set_new(load, "speculative",
                                json_pack("{s:O, s:I}", "model", draft, "num_speculative_tokens",
                                          k > 0 ? k : (json_int_t)4));
        }
        if (strcmp(e->failed_model, model_id) == 0) e->failed_model[0] = 0; /* trying again */
        queue_line(e, load);
        json_decref(load);
        if (e->nloaded < ENGINE_MAX_LOADED) e->loaded[e->nloaded++] = strdup(model_id);
    }
    struct pending *p = calloc(1, sizeof *p);
    snprintf(p->id, sizeof p->id, "%s", id);
    p->fn = fn;
    p->user = user;
    p->remaining = n_done;
    snprintf(p->model, sizeof p->model, "%s", model_id);
    *pp = p;
    e->inflight += n_done;
    queue_line(e, msg);
    pthread_mutex_unlock(&e->mu);
    json_decref(msg);
    return 0;
}

void engine_cancel(engine *e, const char *id)
{
    pthread_mutex_lock(&e->mu);
    struct pending **pp = find_slot(e, id);
    if (*pp) {
        struct pending *p = *pp;
        *pp = p->next;
        e->inflight -= p->remaining;
        free(p);
        queue_cancel(e, id);
    }
    pthread_mutex_unlock(&e->mu);
}

void engine_unload(engine *e, const char *model_id)
{
    pthread_mutex_lock(&e->mu);
    for (int i = 0; i < e->nloaded; i++) {
        if (strcmp(e->loaded[i], model_id) != 0) continue;
        free(e->loaded[i]);
        e->loaded[i] = e->loaded[--e->nloaded];
        if (e->alive) {
            json_t *m = json_pack("{s:s, s:s, s:s}", "type", "unload", "id", "unload", "model",
                                  model_id);
            queue_line(e, m);
            json_decref(m);
        }
        break;
    }
    pthread_mutex_unlock(&e->mu);
}

bool engine_ready(engine *e)
{
    pthread_mutex_lock(&e->mu);
    bool r = e->alive && e->greeted && !e->stopping && !e->incompatible;
    pthread_mutex_unlock(&e->mu);
    return r;
}

int engine_inflight(engine *e)
{
    pthread_mutex_lock(&e->mu);
    int n = e->inflight;
    pthread_mutex_unlock(&e->mu);
    return n;
}

int engine_pid(engine *e)
{
    pthread_mutex_lock(&e->mu);
    int p = (int)e->pid;
    pthread_mutex_unlock(&e->mu);
    return p;
}
