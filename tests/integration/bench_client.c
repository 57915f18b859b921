/* tests/integration/bench_client.c — load generator for aha-server: CONC
 * threads with keep-alive libcurl handles POST one body over and over and
 * report requests/s and latency percentiles, or open CONC concurrent streams
 * and check that every stream's text (its SSE deltas joined) is the expected
 * one: no lost or reordered tokens. Prints one JSON line.
 *
 * usage: bench-client req    URL KEY CONC TOTAL BODY
 *        bench-client stream URL KEY CONC EXPECTED|- BODY   (- : check framing only) */
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct buf {
    char *p;
    size_t len;
};

static size_t on_data(char *d, size_t s, size_t n, void *u)
{
    struct buf *b = u;
    char *p = realloc(b->p, b->len + s * n + 1);
    if (!p) return 0;
    memcpy(p + b->len, d, s * n);
    b->p = p;
    b->len += s * n;
    b->p[b->len] = 0;
    return s * n;
}

static const char *url, *key, *body, *expected;
static int per_thread;
static bool streaming;
static double *lat;
static int errors, bad_streams;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Joins the text of an SSE body's chunks; returns 0 when framed right. */
static int sse_text(const char *s, struct buf *out)
{
    int done = 0;
    while (*s) {
        const char *end = strstr(s, "\n\n");
        if (!end) return -1;
        if (strncmp(s, "data: [DONE]", 12) == 0) done = 1;
        else if (strncmp(s, "data: ", 6) == 0) {
            json_t *o = json_loadb(s + 6, (size_t)(end - s - 6), 0, NULL);
            json_t *c = json_array_get(json_object_get(o, "choices"), 0);
            const char *t = json_string_value(json_object_get(c, "text"));
            json_t *d = json_object_get(c, "delta");
            const char *r = json_string_value(json_object_get(d, "reasoning_content"));
            const char *ct = json_string_value(json_object_get(d, "content"));
            if (json_object_get(o, "error")) done = -100;
            if (t) on_data((char *)t, 1, strlen(t), out);
            if (r) on_data((char *)r, 1, strlen(r), out);
            if (ct) on_data((char *)ct, 1, strlen(ct), out);
            json_decref(o);
        } else if (s[0] != ':') return -1;
        s = end + 2;
    }
    return done == 1 ? 0 : -1;
}

static void *worker(void *arg)
{
    int idx = (int)(long)arg;
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    char auth[512];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
    h = curl_slist_append(h, auth);
    h = curl_slist_append(h, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 300L);
    for (int i = 0; i < per_thread; i++) {
        struct buf b = {0};
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
        double t = now();
        CURLcode rc = curl_easy_perform(c);
        long status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        lat[idx * per_thread + i] = now() - t;
        int bad = rc != CURLE_OK || status != 200;
        if (!bad && streaming) {
            struct buf text = {0};
            on_data("", 1, 0, &text);
            if (sse_text(b.p ? b.p : "", &text) || (expected && strcmp(text.p, expected) != 0)) {
                pthread_mutex_lock(&mu);
                bad_streams++;
                if (bad_streams == 1) fprintf(stderr, "bad stream: got %s\n", text.p);
                pthread_mutex_unlock(&mu);
            }
            free(text.p);
        }
        if (bad) {
            pthread_mutex_lock(&mu);
            errors++;
            pthread_mutex_unlock(&mu);
        }
        free(b.p);
    }
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc != 7 || (strcmp(argv[1], "req") && strcmp(argv[1], "stream"))) {
        fprintf(stderr, "usage: bench-client req|stream URL KEY CONC TOTAL|EXPECTED BODY\n");
        return 2;
    }
    bool streams = streaming = strcmp(argv[1], "stream") == 0;
    url = argv[2];
    key = argv[3];
    int conc = atoi(argv[4]);
    int total = streams ? conc : atoi(argv[5]);
    expected = streams && strcmp(argv[5], "-") != 0 ? argv[5] : NULL;
    body = argv[6];
    per_thread = total / conc;
    total = per_thread * conc;
    lat = calloc((size_t)total, sizeof *lat);
    curl_global_init(CURL_GLOBAL_ALL);
    pthread_t *th = calloc((size_t)conc, sizeof *th);
    double t0 = now();
    for (int i = 0; i < conc; i++) pthread_create(&th[i], NULL, worker, (void *)(long)i);
    for (int i = 0; i < conc; i++) pthread_join(th[i], NULL);
    double wall = now() - t0;
    qsort(lat, (size_t)total, sizeof *lat, cmp);
    printf("{\"mode\":\"%s\",\"concurrency\":%d,\"requests\":%d,\"errors\":%d,\"bad_streams\":%d,"
           "\"wall_s\":%.3f,\"rps\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f}\n",
           argv[1], conc, total, errors, bad_streams, wall, total / wall,
           lat[total / 2] * 1e3, lat[(int)(total * 0.99)] * 1e3);
    free(th);
    free(lat);
    curl_global_cleanup();
    return errors || bad_streams ? 1 : 0;
}
