/* engine/rewards_http.c — the "http" reward: an external grader called with
 * libcurl. Items go in batches as POST {"items":[{"prompt","completion",
 * ...dataset fields}]} and come back as {"rewards":[...]} of the same length,
 * with a per-attempt timeout, retries with backoff and at most
 * max_concurrency requests in flight (curl multi). A failure is never an
 * error of the batch: it follows on_error ("skip" -> NaN, "zero" -> 0). */
#include "rewards_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

/* Largest grader reply read (bytes); a longer one is a failure. */
#define HTTP_REPLY_MAX (16u << 20)
/* Backoff before retry k (1-based): base << (k-1), capped. */
#define HTTP_BACKOFF_BASE_MS 100
#define HTTP_BACKOFF_MAX_MS 2000

struct reward_http {
    char *url;
    long timeout_ms;
    long retries;
    long max_concurrency;
    long batch_size;
    bool skip;                    /* on_error "skip" (else "zero") */
    struct curl_slist *headers;   /* Content-Type and the spec's headers */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

void reward_http_free(struct reward_http *h)
{
    if (!h)
        return;
    free(h->url);
    curl_slist_free_all(h->headers);
    free(h);
}

static bool header_ok(const char *s)
{
    for (; *s; s++)
        if (*s == '\r' || *s == '\n')
            return false;
    return true;
}

struct reward_http *reward_http_parse(struct reward_fields *f)
{
    static const char *const policies[] = {"skip", "zero", NULL};
    const char *url;
    int pol;
    struct reward_http *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(f->err, f->errlen, "reward spec: out of memory");
        return NULL;
    }
    if (!reward_get_string(f, "url", NULL, &url) ||
        !reward_get_long(f, "timeout_ms", 10000, 1, 600000, &h->timeout_ms) ||
        !reward_get_long(f, "retries", 2, 0, 10, &h->retries) ||
        !reward_get_long(f, "max_concurrency", 4, 1, 64, &h->max_concurrency) ||
        !reward_get_long(f, "batch_size", 64, 1, 100000, &h->batch_size) ||
        !reward_get_enum(f, "on_error", policies, 0, &pol))
        goto fail;
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
        snprintf(f->err, f->errlen, "reward spec: %s.url: expected an http:// or https:// URL",
                 f->path);
        goto fail;
    }
    h->skip = pol == 0;
    h->url = strdup(url);
    /* "Expect:" stops curl waiting for a 100-continue most graders never send */
    h->headers = curl_slist_append(NULL, "Content-Type: application/json");
    struct curl_slist *ex = h->headers ? curl_slist_append(h->headers, "Expect:") : NULL;
    if (!h->url || !ex)
        goto fail;
    const json_t *hdrs = reward_get_raw(f, "headers");
    if (hdrs) {
        if (!json_is_object(hdrs)) {
            snprintf(f->err, f->errlen, "reward spec: %s.headers: expected an object", f->path);
            goto fail;
        }
        const char *key;
        const json_t *v;
        json_object_foreach((json_t *)hdrs, key, v) {
            if (!json_is_string(v) || !header_ok(key) || !header_ok(json_string_value(v)) ||
                strchr(key, ':') || !*key) {
                snprintf(f->err, f->errlen, "reward spec: %s.headers.%.64s: expected a "
                         "single-line string", f->path, key);
                goto fail;
            }
            char line[1024];
            if ((size_t)snprintf(line, sizeof line, "%s: %s", key, json_string_value(v)) >=
                sizeof line) {
                snprintf(f->err, f->errlen, "reward spec: %s.headers.%.64s: too long", f->path,
                         key);
                goto fail;
            }
            struct curl_slist *t = curl_slist_append(h->headers, line);
            if (!t)
                goto fail;
            h->headers = t;
        }
    }
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK) {
        snprintf(f->err, f->errlen, "reward spec: %s: libcurl initialisation failed", f->path);
        goto fail;
    }
    return h;
fail:
    if (!f->err[0])
        snprintf(f->err, f->errlen, "reward spec: out of memory");
    reward_http_free(h);
    return NULL;
}

/* One batch of items and its request state. */
struct http_req {
    size_t first, count;          /* items[first .. first+count) */
    char *body;
    size_t body_len;
    char *reply;
    size_t reply_len, reply_cap;
    bool overflow;
    long attempts;
    double not_before;            /* monotonic seconds: earliest next attempt */
    bool done;
    CURL *easy;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *user)
{
    struct http_req *r = user;
    size_t n = size * nmemb;
    if (r->reply_len + n > HTTP_REPLY_MAX) {
        r->overflow = true;
        return 0; /* aborts the transfer */
    }
    if (r->reply_len + n + 1 > r->reply_cap) {
        size_t cap = r->reply_cap ? r->reply_cap : 4096;
        while (cap < r->reply_len + n + 1)
            cap *= 2;
        char *t = realloc(r->reply, cap);
        if (!t)
            return 0;
        r->reply = t;
        r->reply_cap = cap;
    }
    memcpy(r->reply + r->reply_len, ptr, n);
    r->reply_len += n;
    r->reply[r->reply_len] = 0;
    return n;
}

/* {"items":[{...fields, "prompt", "completion"}, ...]}; NULL on failure. */
static char *build_body(const struct reward_item *items, size_t count, size_t *len)
{
    json_t *arr = json_array();
    json_t *root = json_pack("{s:o}", "items", arr);
    if (!root)
        return NULL;
    for (size_t i = 0; i < count; i++) {
        const struct reward_item *it = &items[i];
        json_t *o = json_object();
        if (!o)
            goto fail;
        json_array_append_new(arr, o);
        if (json_is_object(it->fields))
            json_object_update(o, (json_t *)it->fields);
        const char *p = it->prompt ? it->prompt : "";
        char *ps = reward_utf8_sanitize(p, strlen(p));
        char *cs = reward_utf8_sanitize(it->completion, it->completion_len);
        if (!ps || !cs) {
            free(ps);
            free(cs);
            goto fail;
        }
        json_object_set_new(o, "prompt", json_string(ps));
        json_object_set_new(o, "completion", json_string(cs));
        free(ps);
        free(cs);
    }
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (s)
        *len = strlen(s);
    return s;
fail:
    json_decref(root);
    return NULL;
}

/* Parses a 2xx reply; true when it is {"rewards":[...]} of count entries.
 * Entries that are not finite numbers fail on their own. */
static bool parse_reply(const struct http_req *r, double *values, bool *failed, bool skip)
{
    if (!r->reply || r->overflow)
        return false;
    json_error_t je;
    json_t *j = json_loadb(r->reply, r->reply_len, 0, &je);
    const json_t *arr = json_object_get(j, "rewards");
    bool ok = json_is_array(arr) && json_array_size(arr) == r->count;
    if (ok)
        for (size_t i = 0; i < r->count; i++) {
            const json_t *v = json_array_get(arr, i);
            double x = json_is_number(v) ? json_number_value(v) : NAN;
            if (isfinite(x)) {
                values[r->first + i] = x;
                failed[r->first + i] = false;
            } else {
                values[r->first + i] = skip ? NAN : 0.0;
                failed[r->first + i] = true;
            }
        }
    json_decref(j);
    return ok;
}

static CURL *start_easy(const struct reward_http *h, struct http_req *r)
{
    CURL *e = curl_easy_init();
    if (!e)
        return NULL;
    r->reply_len = 0;
    r->overflow = false;
    curl_easy_setopt(e, CURLOPT_URL, h->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h->headers);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, h->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, h->timeout_ms);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "aha-engine/rewards");
    return e;
}

/* Retry transport errors, 5xx, 408, 429 and malformed replies; other
 * 4xx replies are the grader refusing the request, so they fail at once. */
static bool retryable(CURLcode rc, long status)
{
    if (rc != CURLE_OK)
        return true;
    return status >= 500 || status == 408 || status == 429 || (status >= 200 && status < 300);
}

static void fail_batch(const struct reward_http *h, const struct http_req *r, double *values,
                       bool *failed)
{
    for (size_t i = 0; i < r->count; i++) {
        values[r->first + i] = h->skip ? NAN : 0.0;
        failed[r->first + i] = true;
    }
}

void reward_http_score_batch(const struct reward_http *h, const struct reward_item *items,
                             size_t n, double *values, bool *failed)
{
    if (n == 0)
        return;
    size_t nreq = (n + (size_t)h->batch_size - 1) / (size_t)h->batch_size;
    struct http_req *reqs = calloc(nreq, sizeof *reqs);
    CURLM *multi = curl_multi_init();
    if (!reqs || !multi) {
        for (size_t i = 0; i < n; i++) {
            values[i] = h->skip ? NAN : 0.0;
            failed[i] = true;
        }
        free(reqs);
        if (multi)
            curl_multi_cleanup(multi);
        return;
    }
    size_t pending = 0;
    for (size_t b = 0; b < nreq; b++) {
        struct http_req *r = &reqs[b];
        r->first = b * (size_t)h->batch_size;
        r->count = n - r->first < (size_t)h->batch_size ? n - r->first : (size_t)h->batch_size;
        r->body = build_body(items + r->first, r->count, &r->body_len);
        if (!r->body) {
            fail_batch(h, r, values, failed);
            r->done = true;
        } else {
            pending++;
        }
    }
    long active = 0;
    while (pending > 0) {
        double t = now_s();
        for (size_t b = 0; b < nreq && active < h->max_concurrency; b++) {
            struct http_req *r = &reqs[b];
            if (r->done || r->easy || r->not_before > t)
                continue;
            r->easy = start_easy(h, r);
            r->attempts++;
            if (!r->easy || curl_multi_add_handle(multi, r->easy) != CURLM_OK) {
                if (r->easy)
                    curl_easy_cleanup(r->easy);
                r->easy = NULL;
                fail_batch(h, r, values, failed);
                r->done = true;
                pending--;
                continue;
            }
            active++;
        }
        int running = 0;
        curl_multi_perform(multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            struct http_req *r = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            long status = 0;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
            CURLcode rc = msg->data.result;
            curl_multi_remove_handle(multi, msg->easy_handle);
            curl_easy_cleanup(msg->easy_handle);
            r->easy = NULL;
            active--;
            bool ok = rc == CURLE_OK && status >= 200 && status < 300 &&
                      parse_reply(r, values, failed, h->skip);
            if (ok || r->attempts > h->retries || !retryable(rc, status)) {
                if (!ok)
                    fail_batch(h, r, values, failed);
                r->done = true;
                pending--;
            } else {
                long ms = HTTP_BACKOFF_BASE_MS << (r->attempts - 1);
                if (ms > HTTP_BACKOFF_MAX_MS)
                    ms = HTTP_BACKOFF_MAX_MS;
                r->not_before = now_s() + ms / 1e3;
            }
        }
        if (pending == 0)
            break;
        /* the earliest retry due among requests waiting for one */
        double wake = now_s() + 1.0;
        for (size_t b = 0; b < nreq; b++)
            if (!reqs[b].done && !reqs[b].easy && reqs[b].not_before < wake)
                wake = reqs[b].not_before;
        if (active > 0 || running > 0) {
            double wait_ms = (wake - now_s()) * 1e3;
            int ms = wait_ms < 1 ? 1 : wait_ms > 100 ? 100 : (int)wait_ms;
            curl_multi_poll(multi, NULL, 0, ms, NULL);
        } else {
            double wait = wake - now_s();
            if (wait > 0) {
                struct timespec ts = {(time_t)wait, (long)((wait - (time_t)wait) * 1e9)};
                nanosleep(&ts, NULL);
            }
        }
    }
    for (size_t b = 0; b < nreq; b++) {
        if (reqs[b].easy) {
            curl_multi_remove_handle(multi, reqs[b].easy);
            curl_easy_cleanup(reqs[b].easy);
        }
        free(reqs[b].body);
        free(reqs[b].reply);
    }
    curl_multi_cleanup(multi);
    free(reqs);
}
