/* server/integrations.c — a run's MLflow tracking (REST API 2.0) and its
 * signed status webhook. Each sink has its own background thread, bounded
 * queue and retries, so no call here waits on the network. Not the run's
 * state: runs.c owns that and persists what integrations_state returns. */
#include "training.h"
#include "util.h"

#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

/* MLflow's LogBatch limits (mlflow/utils/validation.py). */
#define INTEG_MLFLOW_METRICS_PER_BATCH 1000
#define INTEG_MLFLOW_PARAMS_PER_BATCH 100
#define INTEG_MLFLOW_KEY_MAX 250          /* metric, param and tag keys (bytes) */
#define INTEG_MLFLOW_PARAM_VALUE_MAX 6000 /* longer values are truncated */
#define INTEG_MLFLOW_TAG_VALUE_MAX 5000   /* every backend stores at least this */
#define INTEG_MLFLOW_TAGS_MAX 100         /* user tags on a run */
#define INTEG_MLFLOW_NAME_MAX 500         /* experiment and run names */
#define INTEG_PARAMS_MAX 2000             /* flattened pipeline params logged; more are dropped */
/* Queue bounds: metric points waiting for MLflow (more are dropped and
 * counted), status changes waiting per sink. */
#define INTEG_QUEUE_METRICS_MAX 100000
#define INTEG_QUEUE_EVENTS_MAX 1024
/* Transient failures (transport errors, timeouts, 5xx, 429, unreadable
 * replies) are retried INTEG_ATTEMPTS times in all, waiting base << k
 * seconds (capped, or the server's Retry-After) between attempts. The
 * MLflow run's creation is retried until close instead: without it
 * nothing else can be delivered. */
#define INTEG_ATTEMPTS 8
#define INTEG_BACKOFF_BASE_S 0.25
#define INTEG_BACKOFF_MAX_S 30.0
#define INTEG_TIMEOUT_MS_DEFAULT 10000
#define INTEG_REPLY_MAX (1u << 20)        /* reply bytes read; more is a failure */
#define INTEG_URL_MAX 2048
#define INTEG_SECRET_MAX 1024

/* Run statuses, in the order of the webhook's events bit mask. */
static const char *const status_names[] = {"queued", "running", "succeeded", "failed",
                                           "cancelled"};
static const char *const mlflow_statuses[] = {"SCHEDULED", "RUNNING", "FINISHED", "FAILED",
                                              "KILLED"};
#define N_STATUS 5
#define EVENTS_DEFAULT 0x1eu              /* running, succeeded, failed, cancelled */

enum item_kind { ITEM_METRIC, ITEM_STATUS };

/* One queued delivery. Owns key and message. */
struct item {
    enum item_kind kind;
    char *key;            /* metric key */
    double value;
    long long step, ts_ms;
    int status;           /* index into status_names */
    char *message;        /* status message or NULL */
};

/* FIFO of items v[head .. len). */
struct queue {
    struct item *v;
    size_t head, len, cap;
};

struct sink_counts {
    unsigned long delivered, failed, dropped, requests, retries;
};

struct integrations {
    pthread_mutex_t mu;
    pthread_cond_t cv;                /* CLOCK_MONOTONIC; queue changes, closing */
    bool closing;
    _Atomic long long deadline_us;    /* monotonic; 0 until integrations_close */
    char *run_id, *run_name;

    /* MLflow */
    bool ml_on, ml_thread;
    pthread_t ml_th;
    char *ml_base;                    /* tracking_uri + "/api/2.0/mlflow/" */
    char *ml_experiment, *ml_run_name;
    json_t *ml_create_tags;           /* runs/create tags; the thread's after open */
    json_t *ml_params;                /* [{key,value}] to log once; the thread's */
    char *ml_token, *ml_userpwd;
    long ml_timeout_ms;
    char ml_run_id[128], ml_exp_id[128];   /* under mu once set */
    struct queue ml_q;
    size_t ml_metrics_queued;
    bool ml_dead;                     /* gave up (permanent failure): drop what comes */
    bool ml_drop_logged;
    struct sink_counts ml_n;

    /* webhook */
    bool wh_on, wh_thread;
    pthread_t wh_th;
    char *wh_url, *wh_secret;
    unsigned wh_events;
    long wh_timeout_ms;
    struct queue wh_q;
    struct sink_counts wh_n;
};

/* ---------------------------------------------------------------- util */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

static long long now_us(void) { return (long long)(clock_mono() * 1e6); }

static void item_free(struct item *it)
{
    free(it->key);
    free(it->message);
}

/* Appends *it (stolen) to q. Returns 0 or -1 (out of memory; *it untouched). */
static int queue_push(struct queue *q, const struct item *it)
{
    if (q->len == q->cap && q->head > 0) {
        memmove(q->v, q->v + q->head, (q->len - q->head) * sizeof *q->v);
        q->len -= q->head;
        q->head = 0;
    }
    if (q->len == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 64;
        struct item *v = realloc(q->v, cap * sizeof *v);
        if (!v)
            return -1;
        q->v = v;
        q->cap = cap;
    }
    q->v[q->len++] = *it;
    return 0;
}

static size_t queue_size(const struct queue *q) { return q->len - q->head; }

static void queue_free(struct queue *q)
{
    for (size_t i = q->head; i < q->len; i++)
        item_free(&q->v[i]);
    free(q->v);
    memset(q, 0, sizeof *q);
}

static bool is_http_url(const char *s)
{
    const char *host;
    if (strncmp(s, "http://", 7) == 0)
        host = s + 7;
    else if (strncmp(s, "https://", 8) == 0)
        host = s + 8;
    else
        return false;
    if (!*host || *host == '/' || *host == '?' || *host == '#')
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= ' ' || *p == 0x7f)
            return false;
    return strlen(s) <= INTEG_URL_MAX;
}

static bool single_line(const char *s)
{
    for (; *s; s++)
        if (*s == '\r' || *s == '\n' || *s == '\0')
            return false;
    return true;
}

/* MLflow's name rule: ^[/\w.\- ]*$, and the name must be its own
 * posixpath.normpath (no empty, "." or ".." segments, no leading or
 * trailing slash). */
static bool mlflow_name_char(unsigned char c)
{
    return isalnum(c) || c == '_' || c == '-' || c == '.' || c == ' ' || c == '/';
}

static bool mlflow_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > INTEG_MLFLOW_KEY_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!mlflow_name_char((unsigned char)s[i]))
            return false;
    const char *seg = s;
    for (;;) {
        const char *end = strchr(seg, '/');
        size_t len = end ? (size_t)(end - seg) : strlen(seg);
        if (len == 0 || (len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
            return false;
        if (!end)
            return true;
        seg = end + 1;
    }
}

/* A valid MLflow key from any string (new string, caller frees): other
 * characters become '_', at most INTEG_MLFLOW_KEY_MAX bytes, empty
 * segments dropped, "." and ".." segments become "_" and "__". */
static char *mlflow_key(const char *in)
{
    size_t n = strlen(in);
    if (n > INTEG_MLFLOW_KEY_MAX)
        n = INTEG_MLFLOW_KEY_MAX;
    char *out = malloc(n + 2);
    if (!out)
        return NULL;
    size_t o = 0, seg_start = 0;
    for (size_t i = 0; i <= n; i++) {
        unsigned char c = i < n ? (unsigned char)in[i] : '/';
        if (c != '/') {
            out[o++] = mlflow_name_char(c) ? (char)c : '_';
            continue;
        }
        size_t len = o - seg_start;
        if (len == 0)
            continue;   /* empty segment: drop the slash */
        if (len == 1 && out[seg_start] == '.')
            out[seg_start] = '_';
        else if (len == 2 && out[seg_start] == '.' && out[seg_start + 1] == '.')
            out[seg_start] = out[seg_start + 1] = '_';
        out[o++] = '/';
        seg_start = o;
    }
    if (o > 0 && out[o - 1] == '/')
        o--;
    if (o == 0)
        out[o++] = '_';
    out[o] = 0;
    return out;
}

/* s cut to at most max bytes without splitting a UTF-8 sequence (new
 * string, caller frees). */
static char *utf8_prefix(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
            n--;
    }
    return strndup(s, n);
}

static void rfc3339(double t, char *out, size_t size)
{
    time_t sec = (time_t)floor(t);
    unsigned ms = (unsigned)((t - (double)sec) * 1000.0) % 1000u;
    struct tm tm;
    gmtime_r(&sec, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, size, "%.24s.%03uZ", base, ms);
}

/* ---------------------------------------------------------- validation */

static int verr(char *err, size_t errlen, const char *path, const char *msg)
{
    snprintf(err, errlen, "%s: %s", path, msg);
    return -1;
}

static int check_string(const json_t *v, const char *path, size_t max, bool nonempty,
                        char *err, size_t errlen)
{
    if (!json_is_string(v))
        return verr(err, errlen, path, "expected a string");
    size_t n = json_string_length(v);
    if (nonempty && n == 0)
        return verr(err, errlen, path, "must not be empty");
    if (strlen(json_string_value(v)) != n)
        return verr(err, errlen, path, "must not contain NUL characters");
    if (n > max) {
        snprintf(err, errlen, "%s: longer than %zu bytes", path, max);
        return -1;
    }
    return 0;
}

static int check_timeout(const json_t *v, const char *path, char *err, size_t errlen)
{
    if (!json_is_integer(v) || json_integer_value(v) < 100 || json_integer_value(v) > 600000)
        return verr(err, errlen, path, "expected an integer from 100 to 600000 (milliseconds)");
    return 0;
}

static int validate_mlflow(const json_t *m, char *err, size_t errlen)
{
    const char *P = "integrations.mlflow";
    char path[512];
    if (!json_is_object(m))
        return verr(err, errlen, P, "expected an object");
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)m, k, v) {
        snprintf(path, sizeof path, "%s.%.200s", P, k);
        if (strcmp(k, "tracking_uri") == 0) {
            if (!json_is_string(v) || !is_http_url(json_string_value(v)))
                return verr(err, errlen, path, "expected an http(s) URL");
        } else if (strcmp(k, "experiment") == 0 || strcmp(k, "run_name") == 0) {
            if (check_string(v, path, INTEG_MLFLOW_NAME_MAX, true, err, errlen))
                return -1;
        } else if (strcmp(k, "token") == 0 || strcmp(k, "username") == 0 ||
                   strcmp(k, "password") == 0) {
            if (check_string(v, path, INTEG_SECRET_MAX, true, err, errlen))
                return -1;
            if (!single_line(json_string_value(v)) ||
                (strcmp(k, "username") == 0 && strchr(json_string_value(v), ':')))
                return verr(err, errlen, path, "contains a character not allowed here");
        } else if (strcmp(k, "timeout_ms") == 0) {
            if (check_timeout(v, path, err, errlen))
                return -1;
        } else if (strcmp(k, "tags") == 0) {
            if (!json_is_object(v))
                return verr(err, errlen, path, "expected an object of strings");
            if (json_object_size(v) > INTEG_MLFLOW_TAGS_MAX) {
                snprintf(err, errlen, "%s: at most %d tags", path, INTEG_MLFLOW_TAGS_MAX);
                return -1;
            }
            const char *tk;
            const json_t *tv;
            json_object_foreach((json_t *)v, tk, tv) {
                char tpath[800];
                snprintf(tpath, sizeof tpath, "%s.%.250s", path, tk);
                if (!mlflow_name_ok(tk))
                    return verr(err, errlen, tpath,
                                "invalid MLflow tag name (at most 250 of A-Z a-z 0-9 _ - . "
                                "space /, no empty, \".\" or \"..\" path segments)");
                if (check_string(tv, tpath, INTEG_MLFLOW_TAG_VALUE_MAX, false, err, errlen))
                    return -1;
            }
        } else {
            return verr(err, errlen, path, "unknown key");
        }
    }
    if (!json_object_get(m, "tracking_uri"))
        return verr(err, errlen, "integrations.mlflow.tracking_uri", "is required");
    if (json_object_get(m, "token") && json_object_get(m, "username"))
        return verr(err, errlen, "integrations.mlflow.token",
                    "give either token or username and password, not both");
    if (!json_object_get(m, "username") != !json_object_get(m, "password"))
        return verr(err, errlen,
                    json_object_get(m, "username") ? "integrations.mlflow.password"
                                                   : "integrations.mlflow.username",
                    "username and password go together");
    return 0;
}

static int status_index(const char *s)
{
    for (int i = 0; i < N_STATUS; i++)
        if (strcmp(s, status_names[i]) == 0)
            return i;
    return -1;
}

static int validate_webhook(const json_t *w, char *err, size_t errlen)
{
    const char *P = "integrations.webhook";
    char path[512];
    if (!json_is_object(w))
        return verr(err, errlen, P, "expected an object");
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)w, k, v) {
        snprintf(path, sizeof path, "%s.%.200s", P, k);
        if (strcmp(k, "url") == 0) {
            if (!json_is_string(v) || !is_http_url(json_string_value(v)))
                return verr(err, errlen, path, "expected an http(s) URL");
        } else if (strcmp(k, "secret") == 0) {
            if (check_string(v, path, INTEG_SECRET_MAX, true, err, errlen))
                return -1;
        } else if (strcmp(k, "timeout_ms") == 0) {
            if (check_timeout(v, path, err, errlen))
                return -1;
        } else if (strcmp(k, "events") == 0) {
            if (!json_is_array(v) || json_array_size(v) == 0)
                return verr(err, errlen, path, "expected a non-empty array of run statuses");
            unsigned seen = 0;
            size_t i;
            const json_t *e;
            json_array_foreach((json_t *)v, i, e) {
                char epath[600];
                snprintf(epath, sizeof epath, "%s[%zu]", path, i);
                int s = json_is_string(e) ? status_index(json_string_value(e)) : -1;
                if (s < 0)
                    return verr(err, errlen, epath,
                                "expected one of queued, running, succeeded, failed, cancelled");
                if (seen & (1u << s))
                    return verr(err, errlen, epath, "duplicate event");
                seen |= 1u << s;
            }
        } else {
            return verr(err, errlen, path, "unknown key");
        }
    }
    if (!json_object_get(w, "url"))
        return verr(err, errlen, "integrations.webhook.url", "is required");
    return 0;
}

int integrations_validate(const json_t *cfg, char *err, size_t errlen)
{
    if (!cfg || json_is_null(cfg))
        return 0;
    if (!json_is_object(cfg))
        return verr(err, errlen, "integrations", "expected an object");
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)cfg, k, v) {
        if (strcmp(k, "mlflow") == 0) {
            if (!json_is_null(v) && validate_mlflow(v, err, errlen))
                return -1;
        } else if (strcmp(k, "webhook") == 0) {
            if (!json_is_null(v) && validate_webhook(v, err, errlen))
                return -1;
        } else {
            char path[300];
            snprintf(path, sizeof path, "integrations.%.200s", k);
            return verr(err, errlen, path, "unknown key (expected mlflow, webhook)");
        }
    }
    return 0;
}

json_t *integrations_redact(const json_t *cfg)
{
    if (!cfg)
        return NULL;
    json_t *c = json_deep_copy(cfg);
    static const char *const secret[][2] = {
        {"mlflow", "token"}, {"mlflow", "password"}, {"webhook", "secret"}};
    for (size_t i = 0; c && json_is_object(c) && i < sizeof secret / sizeof *secret; i++) {
        json_t *o = json_object_get(c, secret[i][0]);
        if (json_is_object(o) && json_object_get(o, secret[i][1]))
            json_object_set_new(o, secret[i][1], json_string("***"));
    }
    return c;
}

/* ---------------------------------------------------------------- HTTP */

struct reply {
    sbuf body;
    bool overflow;
};

static size_t on_body(char *p, size_t size, size_t n, void *user)
{
    struct reply *r = user;
    size_t len = size * n;
    if (r->body.len + len > INTEG_REPLY_MAX) {
        r->overflow = true;
        return 0;
    }
    return sbuf_append(&r->body, p, len) ? 0 : len;
}

/* Aborts a transfer once integrations_close's deadline has passed. */
static int on_progress(void *user, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    struct integrations *in = user;
    long long d = atomic_load(&in->deadline_us);
    return d && now_us() >= d;
}

/* Milliseconds left before the close deadline (LLONG_MAX without one). */
static long long ms_left(struct integrations *in)
{
    long long d = atomic_load(&in->deadline_us);
    if (!d)
        return 1LL << 60;
    return (d - now_us()) / 1000;
}

/* One request: GET when body is NULL, else POST of body. Returns the HTTP
 * status, or -1 on a transport error or timeout (err filled). The reply
 * lands in r; *retry_after is the server's Retry-After in seconds or 0. */
static int http_once(struct integrations *in, CURL *h, const char *url, const char *body,
                     size_t body_len, struct curl_slist *hdrs, const char *userpwd,
                     long timeout_ms, struct reply *r, long *retry_after, char *err,
                     size_t errlen)
{
    long long left = ms_left(in);
    *retry_after = 0;
    sbuf_free(&r->body);
    r->overflow = false;
    if (left <= 0) {
        snprintf(err, errlen, "close deadline passed");
        return -1;
    }
    if (left < timeout_ms)
        timeout_ms = (long)left;
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "aha-server");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, in);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    if (userpwd) {
        curl_easy_setopt(h, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
        curl_easy_setopt(h, CURLOPT_USERPWD, userpwd);
    }
    CURLcode rc = curl_easy_perform(h);
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "%s", r->overflow ? "reply too large" : curl_easy_strerror(rc));
        return -1;
    }
    long status = 0;
    curl_off_t ra = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (curl_easy_getinfo(h, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra > 0)
        *retry_after = ra > 3600 ? 3600 : (long)ra;
    return (int)status;
}

/* Waits `s` seconds, or less when closing past the deadline. Returns false
 * when the deadline has passed (give up). */
static bool backoff_wait(struct integrations *in, double s)
{
    long long until = now_us() + (long long)(s * 1e6);
    long long d = atomic_load(&in->deadline_us);
    if (d && d < until)
        until = d;
    pthread_mutex_lock(&in->mu);
    for (;;) {
        long long dd = atomic_load(&in->deadline_us);
        if (dd && dd < until)
            until = dd;
        if (now_us() >= until)
            break;
        struct timespec ts = {.tv_sec = until / 1000000, .tv_nsec = (until % 1000000) * 1000};
        pthread_cond_timedwait(&in->cv, &in->mu, &ts);
    }
    pthread_mutex_unlock(&in->mu);
    d = atomic_load(&in->deadline_us);
    return !(d && now_us() >= d);
}

static double backoff_s(int attempt, long retry_after)
{
    double s = INTEG_BACKOFF_BASE_S * (double)(1u << (attempt < 16 ? attempt - 1 : 15));
    if (retry_after > 0)
        s = (double)retry_after;
    return s > INTEG_BACKOFF_MAX_S ? INTEG_BACKOFF_MAX_S : s;
}

/* The outcome of a call with retries. */
enum call_result { CALL_OK, CALL_REJECTED, CALL_GAVE_UP };

struct call {
    const char *what;         /* for logs: "mlflow runs/create", "webhook" */
    const char *url;
    const char *body;         /* NULL: GET */
    size_t body_len;
    struct curl_slist *hdrs;
    const char *userpwd;
    long timeout_ms;
    int max_attempts;         /* 0: until the close deadline */
    bool want_json;           /* a 2xx reply must be a JSON object */
    struct sink_counts *n;
    /* results */
    int status;
    json_t *json;             /* the reply when JSON (new reference) */
};

/* Sends c with retries on transient failures: transport errors, 5xx, 429,
 * and (want_json) 2xx replies that are not a JSON object. CALL_REJECTED
 * is any other 3xx or 4xx (c->json holds the error reply when it is JSON). */
static enum call_result call_run(struct integrations *in, CURL *h, struct call *c)
{
    struct reply r = {0};
    char err[256];
    enum call_result res = CALL_GAVE_UP;
    c->json = NULL;
    c->status = 0;
    for (int attempt = 1;; attempt++) {
        long retry_after = 0;
        err[0] = 0;
        pthread_mutex_lock(&in->mu);
        if (attempt > 1)
            c->n->retries++;
        c->n->requests++;
        pthread_mutex_unlock(&in->mu);
        int st = http_once(in, h, c->url, c->body, c->body_len, c->hdrs, c->userpwd,
                           c->timeout_ms, &r, &retry_after, err, sizeof err);
        c->status = st;
        json_decref(c->json);
        c->json = r.body.p ? json_loadb(r.body.p, r.body.len, 0, NULL) : NULL;
        if (c->json && !json_is_object(c->json)) {
            json_decref(c->json);
            c->json = NULL;
        }
        if (st >= 200 && st < 300) {
            if (!c->want_json || c->json) {
                res = CALL_OK;
                break;
            }
            snprintf(err, sizeof err, "HTTP %d with a reply that is not a JSON object", st);
        } else if (st >= 300 && st < 500 && st != 429) {
            /* a refusal (or a redirect, which is not followed): not retried */
            json_t *msg = c->json ? json_object_get(c->json, "message") : NULL;
            if (st != 404 && !(st == 400 && c->json &&
                               json_is_string(json_object_get(c->json, "error_code")) &&
                               strcmp(json_string_value(json_object_get(c->json, "error_code")),
                                      "RESOURCE_ALREADY_EXISTS") == 0))
                log_msg("integrations: run %s: %s: HTTP %d%s%.300s", in->run_id, c->what, st,
                        json_is_string(msg) ? ": " : "",
                        json_is_string(msg) ? json_string_value(msg) : "");
            res = CALL_REJECTED;
            break;
        } else if (st >= 0) {
            snprintf(err, sizeof err, "HTTP %d", st);
        }
        bool last = c->max_attempts && attempt >= c->max_attempts;
        log_msg("integrations: run %s: %s: %s (attempt %d%s)", in->run_id, c->what, err,
                attempt, !last ? ", will retry" : c->max_attempts > 1 ? ", giving up" : "");
        if (last || !backoff_wait(in, backoff_s(attempt, retry_after)))
            break;
    }
    sbuf_free(&r.body);
    return res;
}

/* -------------------------------------------------------------- MLflow */

static struct curl_slist *ml_headers(struct integrations *in)
{
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    struct curl_slist *t = h ? curl_slist_append(h, "Expect:") : NULL;
    if (t && in->ml_token) {
        char line[INTEG_SECRET_MAX + 64];
        snprintf(line, sizeof line, "Authorization: Bearer %s", in->ml_token);
        t = curl_slist_append(h, line);
    }
    if (!t) {
        curl_slist_free_all(h);
        return NULL;
    }
    return h;
}

/* POSTs (or GETs when body is NULL) to <tracking_uri>/api/2.0/mlflow/<path>. */
static enum call_result ml_call(struct integrations *in, CURL *h, struct curl_slist *hdrs,
                                const char *path, json_t *body, int max_attempts,
                                struct call *c)
{
    char url[INTEG_URL_MAX + 512], what[96];
    snprintf(url, sizeof url, "%s%s", in->ml_base, path);
    const char *q = strchr(path, '?');
    snprintf(what, sizeof what, "mlflow %.*s", (int)(q ? q - path : (long)strlen(path)), path);
    char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
    c->json = NULL;
    if (body && !s)
        return CALL_GAVE_UP;
    *c = (struct call){.what = what, .url = url, .body = s, .body_len = s ? strlen(s) : 0,
                       .hdrs = hdrs, .userpwd = in->ml_userpwd, .timeout_ms = in->ml_timeout_ms,
                       .max_attempts = max_attempts, .want_json = true, .n = &in->ml_n};
    enum call_result r = call_run(in, h, c);
    c->what = c->url = c->body = NULL;
    free(s);
    return r;
}

static bool error_code_is(const json_t *reply, const char *code)
{
    const json_t *e = reply ? json_object_get(reply, "error_code") : NULL;
    return json_is_string(e) && strcmp(json_string_value(e), code) == 0;
}

/* Copies a string or integer id from reply's path (a.b.c) into out. */
static bool json_id(const json_t *reply, const char *a, const char *b, const char *c, char *out,
                    size_t size)
{
    const json_t *v = reply ? json_object_get(reply, a) : NULL;
    if (b)
        v = v ? json_object_get(v, b) : NULL;
    if (c)
        v = v ? json_object_get(v, c) : NULL;
    if (json_is_string(v) && json_string_length(v) > 0 && json_string_length(v) < size) {
        snprintf(out, size, "%s", json_string_value(v));
        return true;
    }
    if (json_is_integer(v)) {
        snprintf(out, size, "%lld", (long long)json_integer_value(v));
        return true;
    }
    return false;
}

/* The active run of experiment exp_id tagged aha.run_id = this run (left
 * by a restart that lost the stored state, or by a create whose reply was
 * lost) into out. Returns 1 found, 0 none (or the search is unsupported),
 * -1 close's deadline passed. */
static int ml_find_run(struct integrations *in, CURL *h, struct curl_slist *hdrs,
                       const char *exp_id, char *out, size_t size)
{
    struct call c;
    bool plain_id = in->run_id[0] != 0;
    for (const char *p = in->run_id; *p; p++)
        plain_id &= isalnum((unsigned char)*p) || *p == '_' || *p == '-';
    if (!plain_id)
        return 0;   /* not quotable in a filter as it is; never the case for aha's ids */
    char filter[256];
    snprintf(filter, sizeof filter, "tags.`aha.run_id` = '%.200s'", in->run_id);
    json_t *q = json_pack("{s:[s],s:s,s:i,s:s}", "experiment_ids", exp_id, "filter", filter,
                          "max_results", 1, "run_view_type", "ACTIVE_ONLY");
    if (!q)
        return -1;
    enum call_result r = ml_call(in, h, hdrs, "runs/search", q, 0, &c);
    json_decref(q);
    bool found = r == CALL_OK && json_id(json_array_get(json_object_get(c.json, "runs"), 0),
                                         "info", "run_id", NULL, out, size);
    json_decref(c.json);
    return r == CALL_GAVE_UP ? -1 : found;
}

/* Finds or creates the experiment and creates the run. Returns 0, or -1
 * when MLflow refused (permanent) or close's deadline passed. */
static int ml_setup(struct integrations *in, CURL *h, struct curl_slist *hdrs)
{
    struct call c;
    char exp_id[128] = "", run_id[128] = "";
    char *name = curl_easy_escape(h, in->ml_experiment, 0);
    if (!name)
        return -1;
    char path[INTEG_URL_MAX];
    snprintf(path, sizeof path, "experiments/get-by-name?experiment_name=%s", name);
    curl_free(name);
    /* get-by-name, else create; a concurrent create (RESOURCE_ALREADY_EXISTS)
     * sends us back to get-by-name. */
    for (int round = 0; round < 3 && !exp_id[0]; round++) {
        enum call_result r = ml_call(in, h, hdrs, path, NULL, 0, &c);
        if (r == CALL_OK && json_id(c.json, "experiment", "experiment_id", NULL, exp_id,
                                    sizeof exp_id)) {
            json_decref(c.json);
            break;
        }
        bool missing = r == CALL_REJECTED && c.status == 404;
        json_decref(c.json);
        if (!missing) {
            if (r == CALL_OK)
                log_msg("integrations: run %s: mlflow experiments/get-by-name: no experiment_id "
                        "in the reply", in->run_id);
            return -1;
        }
        json_t *body = json_pack("{s:s}", "name", in->ml_experiment);
        r = ml_call(in, h, hdrs, "experiments/create", body, 0, &c);
        json_decref(body);
        if (r == CALL_OK && json_id(c.json, "experiment_id", NULL, NULL, exp_id, sizeof exp_id)) {
            json_decref(c.json);
            break;
        }
        bool race = r == CALL_REJECTED && error_code_is(c.json, "RESOURCE_ALREADY_EXISTS");
        json_decref(c.json);
        if (!race)
            return -1;
    }
    if (!exp_id[0])
        return -1;

    /* Search, then create one attempt at a time: a create whose reply was
     * lost may still have made the run, and the next search finds it. */
    bool created = false;
    for (int attempt = 1; !run_id[0]; attempt++) {
        int rc = ml_find_run(in, h, hdrs, exp_id, run_id, sizeof run_id);
        if (rc < 0)
            return -1;
        if (rc > 0)
            break;
        json_t *body = json_pack("{s:s,s:s,s:I,s:O}", "experiment_id", exp_id, "run_name",
                                 in->ml_run_name, "start_time",
                                 (json_int_t)(clock_wall() * 1000), "tags", in->ml_create_tags);
        if (!body)
            return -1;
        if (attempt > 1) {
            pthread_mutex_lock(&in->mu);
            in->ml_n.retries++;
            pthread_mutex_unlock(&in->mu);
        }
        enum call_result r = ml_call(in, h, hdrs, "runs/create", body, 1, &c);
        json_decref(body);
        bool ok = r == CALL_OK && json_id(c.json, "run", "info", "run_id", run_id, sizeof run_id);
        json_decref(c.json);
        if (r == CALL_OK && !ok)
            log_msg("integrations: run %s: mlflow runs/create: no run.info.run_id in the reply",
                    in->run_id);
        if (r == CALL_REJECTED || (r == CALL_OK && !ok))
            return -1;
        created = ok;
        if (!ok && !backoff_wait(in, backoff_s(attempt, 0)))
            return -1;
    }
    pthread_mutex_lock(&in->mu);
    snprintf(in->ml_exp_id, sizeof in->ml_exp_id, "%s", exp_id);
    snprintf(in->ml_run_id, sizeof in->ml_run_id, "%s", run_id);
    pthread_mutex_unlock(&in->mu);
    log_msg("integrations: run %s: %s mlflow run %s in experiment %s", in->run_id,
            created ? "created" : "continuing", run_id, exp_id);
    return 0;
}

/* runs/log-batch of metrics/params/tags (each an array or NULL; borrowed). */
static enum call_result ml_log_batch(struct integrations *in, CURL *h, struct curl_slist *hdrs,
                                     json_t *metrics, json_t *params, json_t *tags)
{
    struct call c;
    json_t *body = json_pack("{s:s}", "run_id", in->ml_run_id);
    if (!body)
        return CALL_GAVE_UP;
    if (metrics)
        json_object_set(body, "metrics", metrics);
    if (params)
        json_object_set(body, "params", params);
    if (tags)
        json_object_set(body, "tags", tags);
    enum call_result r = ml_call(in, h, hdrs, "runs/log-batch", body, INTEG_ATTEMPTS, &c);
    json_decref(c.json);
    json_decref(body);
    return r;
}

static void ml_log_params(struct integrations *in, CURL *h, struct curl_slist *hdrs)
{
    size_t n = json_array_size(in->ml_params);
    for (size_t i = 0; i < n; i += INTEG_MLFLOW_PARAMS_PER_BATCH) {
        size_t m = n - i < INTEG_MLFLOW_PARAMS_PER_BATCH ? n - i : INTEG_MLFLOW_PARAMS_PER_BATCH;
        json_t *batch = json_array();
        for (size_t j = 0; batch && j < m; j++)
            json_array_append(batch, json_array_get(in->ml_params, i + j));
        if (!batch || ml_log_batch(in, h, hdrs, NULL, batch, NULL) != CALL_OK)
            log_msg("integrations: run %s: mlflow: %zu params not logged", in->run_id, m);
        json_decref(batch);
    }
}

/* Delivers items[0..n) (metrics, or one status). Returns how many were
 * delivered. */
static size_t ml_deliver(struct integrations *in, CURL *h, struct curl_slist *hdrs,
                         struct item *items, size_t n)
{
    struct call c;
    if (items[0].kind == ITEM_METRIC) {
        json_t *metrics = json_array();
        for (size_t i = 0; metrics && i < n; i++)
            json_array_append_new(metrics, json_pack("{s:s,s:f,s:I,s:I}", "key", items[i].key,
                                                     "value", items[i].value, "timestamp",
                                                     (json_int_t)items[i].ts_ms, "step",
                                                     (json_int_t)items[i].step));
        enum call_result r = metrics && json_array_size(metrics) == n
                                 ? ml_log_batch(in, h, hdrs, metrics, NULL, NULL)
                                 : CALL_GAVE_UP;
        json_decref(metrics);
        return r == CALL_OK ? n : 0;
    }
    struct item *it = &items[0];
    bool terminal = it->status >= 2;
    if (it->message && *it->message) {
        char *v = utf8_prefix(it->message, INTEG_MLFLOW_TAG_VALUE_MAX);
        json_t *tags = v ? json_pack("[{s:s,s:s}]", "key", "aha.status_message", "value", v)
                         : NULL;
        free(v);
        if (tags)
            ml_log_batch(in, h, hdrs, NULL, NULL, tags);
        json_decref(tags);
    }
    json_t *body = json_pack("{s:s,s:s}", "run_id", in->ml_run_id, "status",
                             mlflow_statuses[it->status]);
    if (body && terminal)
        json_object_set_new(body, "end_time", json_integer((json_int_t)it->ts_ms));
    c.json = NULL;
    enum call_result r = body ? ml_call(in, h, hdrs, "runs/update", body, INTEG_ATTEMPTS, &c)
                              : CALL_GAVE_UP;
    json_decref(body);
    json_decref(c.json);
    return r == CALL_OK ? 1 : 0;
}

/* Takes the next delivery off q (up to max consecutive metrics, or one
 * status) into out. Call with mu held. */
static size_t take(struct queue *q, struct item *out, size_t max)
{
    size_t n = 0;
    if (queue_size(q) == 0)
        return 0;
    if (q->v[q->head].kind != ITEM_METRIC) {
        out[n++] = q->v[q->head++];
    } else {
        while (n < max && q->head < q->len && q->v[q->head].kind == ITEM_METRIC)
            out[n++] = q->v[q->head++];
    }
    if (q->head == q->len)
        q->head = q->len = 0;
    return n;
}

static bool past_deadline(struct integrations *in)
{
    long long d = atomic_load(&in->deadline_us);
    return d && now_us() >= d;
}

static void *ml_main(void *arg)
{
    struct integrations *in = arg;
    CURL *h = curl_easy_init();
    struct curl_slist *hdrs = h ? ml_headers(in) : NULL;
    struct item *batch = malloc(INTEG_MLFLOW_METRICS_PER_BATCH * sizeof *batch);
    bool ok = h && hdrs && batch;
    if (!ok)
        log_msg("integrations: run %s: mlflow: out of memory", in->run_id);
    if (ok && !in->ml_run_id[0]) {
        ok = ml_setup(in, h, hdrs) == 0;
        if (ok)
            ml_log_params(in, h, hdrs);
        else
            log_msg("integrations: run %s: mlflow: no run to log to; dropping what comes",
                    in->run_id);
    }
    pthread_mutex_lock(&in->mu);
    if (!ok)
        in->ml_dead = true;
    for (;;) {
        while (ok && queue_size(&in->ml_q) == 0 && !in->closing)
            pthread_cond_wait(&in->cv, &in->mu);
        if (!ok || queue_size(&in->ml_q) == 0 || past_deadline(in))
            break;
        size_t n = take(&in->ml_q, batch, INTEG_MLFLOW_METRICS_PER_BATCH);
        if (batch[0].kind == ITEM_METRIC)
            in->ml_metrics_queued -= n;
        pthread_mutex_unlock(&in->mu);
        size_t done = ml_deliver(in, h, hdrs, batch, n);
        for (size_t i = 0; i < n; i++)
            item_free(&batch[i]);
        pthread_mutex_lock(&in->mu);
        in->ml_n.delivered += done;
        in->ml_n.failed += n - done;
    }
    /* dead or past the deadline: what is left is dropped */
    in->ml_n.dropped += queue_size(&in->ml_q);
    queue_free(&in->ml_q);
    in->ml_metrics_queued = 0;
    in->ml_dead = true;
    pthread_mutex_unlock(&in->mu);
    free(batch);
    curl_slist_free_all(hdrs);
    if (h)
        curl_easy_cleanup(h);
    return NULL;
}

/* ------------------------------------------------------------- webhook */

static void wh_deliver(struct integrations *in, CURL *h, struct item *it)
{
    char ts[40], id[40];
    rfc3339((double)it->ts_ms / 1000.0, ts, sizeof ts);
    random_id(id, sizeof id, "dlv_");
    json_t *body = json_pack("{s:s,s:s,s:s,s:s,s:s?,s:s}", "type", "run.status", "run_id",
                             in->run_id, "run_name", in->run_name, "status",
                             status_names[it->status], "message", it->message, "timestamp", ts);
    char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    struct curl_slist *hdrs = NULL;
    char line[160];
    const char *fixed[] = {"Content-Type: application/json", "Expect:", "X-Aha-Event: run.status"};
    bool ok = s != NULL;
    for (size_t i = 0; ok && i < 3; i++) {
        struct curl_slist *t = curl_slist_append(hdrs, fixed[i]);
        ok = t != NULL;
        hdrs = t ? t : hdrs;
    }
    snprintf(line, sizeof line, "X-Aha-Delivery: %s", id);
    struct curl_slist *t = ok ? curl_slist_append(hdrs, line) : NULL;
    ok = t != NULL;
    if (ok && in->wh_secret) {
        /* GitHub's scheme: sha256=<hex HMAC-SHA256 of the raw body> */
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0;
        ok = HMAC(EVP_sha256(), in->wh_secret, (int)strlen(in->wh_secret),
                  (const unsigned char *)s, strlen(s), md, &mdlen) != NULL;
        int o = snprintf(line, sizeof line, "X-Aha-Signature: sha256=");
        for (unsigned i = 0; ok && i < mdlen; i++)
            o += snprintf(line + o, sizeof line - (size_t)o, "%02x", md[i]);
        t = ok ? curl_slist_append(hdrs, line) : NULL;
        ok = t != NULL;
    }
    if (!ok) {
        log_msg("integrations: run %s: webhook: out of memory", in->run_id);
    } else {
        struct call c = {.what = "webhook", .url = in->wh_url, .body = s, .body_len = strlen(s),
                         .hdrs = hdrs, .timeout_ms = in->wh_timeout_ms,
                         .max_attempts = INTEG_ATTEMPTS, .n = &in->wh_n};
        enum call_result r = call_run(in, h, &c);
        json_decref(c.json);
        ok = r == CALL_OK;
    }
    pthread_mutex_lock(&in->mu);
    if (ok)
        in->wh_n.delivered++;
    else
        in->wh_n.failed++;
    pthread_mutex_unlock(&in->mu);
    curl_slist_free_all(hdrs);
    free(s);
}

static void *wh_main(void *arg)
{
    struct integrations *in = arg;
    CURL *h = curl_easy_init();
    if (!h)
        log_msg("integrations: run %s: webhook: out of memory", in->run_id);
    pthread_mutex_lock(&in->mu);
    for (;;) {
        while (h && queue_size(&in->wh_q) == 0 && !in->closing)
            pthread_cond_wait(&in->cv, &in->mu);
        if (!h || queue_size(&in->wh_q) == 0 || past_deadline(in))
            break;
        struct item it = {0};
        take(&in->wh_q, &it, 1);
        pthread_mutex_unlock(&in->mu);
        wh_deliver(in, h, &it);
        item_free(&it);
        pthread_mutex_lock(&in->mu);
    }
    in->wh_n.dropped += queue_size(&in->wh_q);
    queue_free(&in->wh_q);
    pthread_mutex_unlock(&in->mu);
    if (h)
        curl_easy_cleanup(h);
    return NULL;
}

/* ------------------------------------------------------------- the API */

static char *dup_or_null(const json_t *v)
{
    return json_is_string(v) ? strdup(json_string_value(v)) : NULL;
}

static int add_tag(json_t *tags, const char *k, const char *v)
{
    char *val = utf8_prefix(v, INTEG_MLFLOW_TAG_VALUE_MAX);
    int rc = val ? json_array_append_new(tags, json_pack("{s:s,s:s}", "key", k, "value", val))
                 : -1;
    free(val);
    return rc;
}

struct flat {
    json_t *out;          /* [{key,value}] */
    json_t *seen;         /* keys already in out */
    size_t dropped;
};

/* Flattens params into MLflow params: nested object keys join with ".",
 * array elements that are objects with their index, other arrays and
 * scalars are JSON text (strings as they are). */
static void flatten(struct flat *f, const char *prefix, const json_t *v, int depth)
{
    if (json_is_object(v) && depth < 16) {
        const char *k;
        const json_t *x;
        json_object_foreach((json_t *)v, k, x) {
            char *key = prefix ? NULL : strdup(k);
            if (prefix && asprintf(&key, "%s.%s", prefix, k) < 0)
                key = NULL;
            if (key)
                flatten(f, key, x, depth + 1);
            free(key);
        }
        return;
    }
    if (json_is_array(v) && depth < 16) {
        bool objects = false;
        size_t i;
        const json_t *x;
        json_array_foreach((json_t *)v, i, x) objects |= json_is_object(x);
        if (objects) {
            json_array_foreach((json_t *)v, i, x) {
                char *key = NULL;
                if (asprintf(&key, "%s.%zu", prefix ? prefix : "", i) >= 0)
                    flatten(f, key, x, depth + 1);
                free(key);
            }
            return;
        }
    }
    if (!prefix)
        return;
    char *key = mlflow_key(prefix);
    char *text;
    if (json_is_real(v)) {
        /* the shortest form that reads back the same ("1e-06", not
         * "9.9999999999999995e-07") */
        char buf[40];
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(buf, sizeof buf, "%.*g", prec, json_real_value(v));
            if (strtod(buf, NULL) == json_real_value(v))
                break;
        }
        text = strdup(buf);
    } else {
        text = json_is_string(v) ? strdup(json_string_value(v))
                                 : json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    }
    char *val = text ? utf8_prefix(text, INTEG_MLFLOW_PARAM_VALUE_MAX) : NULL;
    if (key && val && !json_object_get(f->seen, key)) {
        if (json_array_size(f->out) < INTEG_PARAMS_MAX) {
            json_object_set_new(f->seen, key, json_true());
            json_array_append_new(f->out, json_pack("{s:s,s:s}", "key", key, "value", val));
        } else {
            f->dropped++;
        }
    }
    free(key);
    free(text);
    free(val);
}

static void integ_free(struct integrations *in)
{
    queue_free(&in->ml_q);
    queue_free(&in->wh_q);
    json_decref(in->ml_create_tags);
    json_decref(in->ml_params);
    free(in->run_id);
    free(in->run_name);
    free(in->ml_base);
    free(in->ml_experiment);
    free(in->ml_run_name);
    free(in->ml_token);
    free(in->ml_userpwd);
    free(in->wh_url);
    free(in->wh_secret);
    pthread_cond_destroy(&in->cv);
    pthread_mutex_destroy(&in->mu);
    free(in);
}

static int open_mlflow(struct integrations *in, const json_t *m, const json_t *state,
                       const json_t *params)
{
    const char *uri = json_string_value(json_object_get(m, "tracking_uri"));
    size_t ulen = strlen(uri);
    while (ulen > 0 && uri[ulen - 1] == '/')
        ulen--;
    if (asprintf(&in->ml_base, "%.*s/api/2.0/mlflow/", (int)ulen, uri) < 0) {
        in->ml_base = NULL;
        return -1;
    }
    const json_t *e = json_object_get(m, "experiment");
    in->ml_experiment = strdup(json_is_string(e) ? json_string_value(e) : "aha");
    const json_t *rn = json_object_get(m, "run_name");
    in->ml_run_name = strdup(json_is_string(rn) ? json_string_value(rn) : in->run_name);
    in->ml_token = dup_or_null(json_object_get(m, "token"));
    const json_t *user = json_object_get(m, "username");
    if (json_is_string(user) &&
        asprintf(&in->ml_userpwd, "%s:%s", json_string_value(user),
                 json_string_value(json_object_get(m, "password"))) < 0)
        return -1;
    const json_t *to = json_object_get(m, "timeout_ms");
    in->ml_timeout_ms = json_is_integer(to) ? (long)json_integer_value(to)
                                            : INTEG_TIMEOUT_MS_DEFAULT;
    if (!in->ml_experiment || !in->ml_run_name)
        return -1;

    const json_t *sid = state ? json_object_get(state, "mlflow_run_id") : NULL;
    const json_t *seid = state ? json_object_get(state, "mlflow_experiment_id") : NULL;
    if (json_is_string(sid) && json_string_length(sid) > 0 &&
        json_string_length(sid) < sizeof in->ml_run_id) {
        /* a restarted server continues the same MLflow run; params were
         * logged by the first open */
        snprintf(in->ml_run_id, sizeof in->ml_run_id, "%s", json_string_value(sid));
        if (json_is_string(seid))
            snprintf(in->ml_exp_id, sizeof in->ml_exp_id, "%s", json_string_value(seid));
        return 0;
    }
    in->ml_create_tags = json_array();
    if (!in->ml_create_tags)
        return -1;
    const json_t *tags = json_object_get(m, "tags");
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)tags, k, v) {
        if (add_tag(in->ml_create_tags, k, json_string_value(v)))
            return -1;
    }
    if (!json_object_get(tags, "aha.run_id") &&
        add_tag(in->ml_create_tags, "aha.run_id", in->run_id))
        return -1;
    if (!json_object_get(tags, "mlflow.source.name") &&
        add_tag(in->ml_create_tags, "mlflow.source.name", "aha-server"))
        return -1;
    struct flat f = {.out = json_array(), .seen = json_object()};
    if (f.out && f.seen && params)
        flatten(&f, NULL, params, 0);
    json_decref(f.seen);
    in->ml_params = f.out;
    if (f.dropped)
        log_msg("integrations: run %s: mlflow: %zu params past the first %d not logged",
                in->run_id, f.dropped, INTEG_PARAMS_MAX);
    return in->ml_params ? 0 : -1;
}

struct integrations *integrations_open(const json_t *cfg, const json_t *state, const char *run_id,
                                       const char *run_name, const json_t *params)
{
    char err[512];
    if (!cfg || !json_is_object(cfg))
        return NULL;
    if (integrations_validate(cfg, err, sizeof err)) {
        log_msg("integrations: run %s: %s", run_id, err);
        return NULL;
    }
    const json_t *m = json_object_get(cfg, "mlflow");
    const json_t *w = json_object_get(cfg, "webhook");
    if (!json_is_object(m) && !json_is_object(w))
        return NULL;
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK) {
        log_msg("integrations: run %s: libcurl initialisation failed", run_id);
        return NULL;
    }
    struct integrations *in = calloc(1, sizeof *in);
    if (!in)
        goto oom;
    pthread_mutex_init(&in->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&in->cv, &ca);
    pthread_condattr_destroy(&ca);
    in->run_id = strdup(run_id ? run_id : "");
    in->run_name = strdup(run_name && *run_name ? run_name : run_id ? run_id : "");
    if (!in->run_id || !in->run_name)
        goto oom;
    if (json_is_object(m)) {
        in->ml_on = true;
        if (open_mlflow(in, m, state, params))
            goto oom;
    }
    if (json_is_object(w)) {
        in->wh_on = true;
        in->wh_url = strdup(json_string_value(json_object_get(w, "url")));
        in->wh_secret = dup_or_null(json_object_get(w, "secret"));
        const json_t *to = json_object_get(w, "timeout_ms");
        in->wh_timeout_ms = json_is_integer(to) ? (long)json_integer_value(to)
                                                : INTEG_TIMEOUT_MS_DEFAULT;
        const json_t *ev = json_object_get(w, "events");
        in->wh_events = ev ? 0 : EVENTS_DEFAULT;
        size_t i;
        const json_t *e;
        json_array_foreach((json_t *)ev, i, e)
            in->wh_events |= 1u << status_index(json_string_value(e));
        if (!in->wh_url)
            goto oom;
    }
    if (in->ml_on) {
        if (pthread_create(&in->ml_th, NULL, ml_main, in) != 0)
            goto oom;
        in->ml_thread = true;
    }
    if (in->wh_on) {
        if (pthread_create(&in->wh_th, NULL, wh_main, in) != 0)
            goto oom;
        in->wh_thread = true;
    }
    return in;
oom:
    log_msg("integrations: run %s: cannot start (out of memory or threads)", run_id);
    if (in && (in->ml_thread || in->wh_thread)) {
        integrations_close(in, 0);
        return NULL;
    }
    if (in)
        integ_free(in);
    return NULL;
}

json_t *integrations_state(struct integrations *in)
{
    if (!in)
        return NULL;
    json_t *s = NULL;
    pthread_mutex_lock(&in->mu);
    if (in->ml_run_id[0])
        s = json_pack("{s:s,s:s}", "mlflow_run_id", in->ml_run_id, "mlflow_experiment_id",
                      in->ml_exp_id);
    pthread_mutex_unlock(&in->mu);
    return s;
}

json_t *integrations_stats(struct integrations *in)
{
    if (!in)
        return NULL;
    json_t *s = json_object();
    pthread_mutex_lock(&in->mu);
    struct {
        const char *name;
        bool on;
        struct sink_counts *n;
    } sinks[] = {{"mlflow", in->ml_on, &in->ml_n}, {"webhook", in->wh_on, &in->wh_n}};
    for (int i = 0; s && i < 2; i++)
        if (sinks[i].on)
            json_object_set_new(s, sinks[i].name,
                                json_pack("{s:I,s:I,s:I,s:I,s:I}", "delivered",
                                          (json_int_t)sinks[i].n->delivered, "failed",
                                          (json_int_t)sinks[i].n->failed, "dropped",
                                          (json_int_t)sinks[i].n->dropped, "requests",
                                          (json_int_t)sinks[i].n->requests, "retries",
                                          (json_int_t)sinks[i].n->retries));
    pthread_mutex_unlock(&in->mu);
    return s;
}

/* Queues metric points from values (nested objects join with "/"); mu held. */
static void queue_metrics(struct integrations *in, const char *prefix, const json_t *values,
                          long step, long long ts_ms, int depth)
{
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)values, k, v) {
        char *name = NULL;
        if (asprintf(&name, "%s%s%s", prefix ? prefix : "", prefix ? "/" : "", k) < 0)
            continue;
        if (json_is_object(v) && depth < 8) {
            queue_metrics(in, name, v, step, ts_ms, depth + 1);
        } else if (json_is_number(v) && isfinite(json_number_value(v))) {
            if (in->ml_metrics_queued >= INTEG_QUEUE_METRICS_MAX) {
                in->ml_n.dropped++;
                if (!in->ml_drop_logged)
                    log_msg("integrations: run %s: mlflow: %d metric points queued; dropping "
                            "new ones", in->run_id, INTEG_QUEUE_METRICS_MAX);
                in->ml_drop_logged = true;
            } else {
                struct item it = {.kind = ITEM_METRIC, .key = mlflow_key(name),
                                  .value = json_number_value(v), .step = step, .ts_ms = ts_ms};
                if (!it.key || queue_push(&in->ml_q, &it)) {
                    free(it.key);
                    in->ml_n.dropped++;
                } else {
                    in->ml_metrics_queued++;
                }
            }
        }
        free(name);
    }
}

void integrations_metrics(struct integrations *in, const char *stage, long step,
                          const json_t *values, double unix_ts)
{
    if (!in || !in->ml_on || !json_is_object(values))
        return;
    long long ts_ms = (long long)((unix_ts > 0 ? unix_ts : clock_wall()) * 1000.0);
    pthread_mutex_lock(&in->mu);
    if (!in->ml_dead && !in->closing) {
        queue_metrics(in, stage && *stage ? stage : NULL, values, step, ts_ms, 0);
        pthread_cond_broadcast(&in->cv);
    }
    pthread_mutex_unlock(&in->mu);
}

/* Queues a status change on q, which holds `events` of them; mu held. */
static void queue_status(struct integrations *in, struct queue *q, size_t events,
                         struct sink_counts *n, int s, const char *message, long long ts_ms)
{
    struct item it = {.kind = ITEM_STATUS, .status = s, .ts_ms = ts_ms,
                      .message = message ? strdup(message) : NULL};
    if (events >= INTEG_QUEUE_EVENTS_MAX || (message && !it.message) ||
        queue_push(q, &it)) {
        free(it.message);
        n->dropped++;
        log_msg("integrations: run %s: status %s not queued (queue full)", in->run_id,
                status_names[s]);
    }
}

void integrations_status(struct integrations *in, const char *status, const char *message)
{
    if (!in || !status)
        return;
    int s = status_index(status);
    if (s < 0) {
        log_msg("integrations: run %s: unknown status \"%.40s\" ignored", in->run_id, status);
        return;
    }
    long long ts_ms = (long long)(clock_wall() * 1000.0);
    pthread_mutex_lock(&in->mu);
    if (!in->closing) {
        if (in->ml_on && !in->ml_dead)
            queue_status(in, &in->ml_q, queue_size(&in->ml_q) - in->ml_metrics_queued,
                         &in->ml_n, s, message, ts_ms);
        if (in->wh_on && (in->wh_events & (1u << s)))
            queue_status(in, &in->wh_q, queue_size(&in->wh_q), &in->wh_n, s, message, ts_ms);
        pthread_cond_broadcast(&in->cv);
    }
    pthread_mutex_unlock(&in->mu);
}

json_t *integrations_close_stats(struct integrations *in, double timeout_s)
{
    if (!in)
        return NULL;
    if (!(timeout_s > 0))
        timeout_s = 0;
    if (timeout_s > 3600)
        timeout_s = 3600;
    pthread_mutex_lock(&in->mu);
    in->closing = true;
    long long d = now_us() + (long long)(timeout_s * 1e6);
    atomic_store(&in->deadline_us, d > 0 ? d : 1);
    pthread_cond_broadcast(&in->cv);
    pthread_mutex_unlock(&in->mu);
    if (in->ml_thread)
        pthread_join(in->ml_th, NULL);
    if (in->wh_thread)
        pthread_join(in->wh_th, NULL);
    if (in->ml_n.failed || in->ml_n.dropped || in->wh_n.failed || in->wh_n.dropped)
        log_msg("integrations: run %s: closed; mlflow %lu delivered, %lu failed, %lu dropped; "
                "webhook %lu delivered, %lu failed, %lu dropped", in->run_id, in->ml_n.delivered,
                in->ml_n.failed, in->ml_n.dropped, in->wh_n.delivered, in->wh_n.failed,
                in->wh_n.dropped);
    json_t *stats = integrations_stats(in);
    integ_free(in);
    return stats;
}

void integrations_close(struct integrations *in, double timeout_s)
{
    json_decref(integrations_close_stats(in, timeout_s));
}
