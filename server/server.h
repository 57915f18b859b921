/* server/server.h — the running server's shared state and the HTTP reply
 * helpers route handlers use. Handlers live in routes_*.c and
 * completions.c; the MHD daemon and the router in http.c. */
#ifndef AHA_SERVER_SERVER_H
#define AHA_SERVER_SERVER_H

#include <jansson.h>
#include <microhttpd.h>
#include <stdbool.h>

#include "db.h"
#include "engine.h"
#include "keys.h"
#include "metrics.h"
#include "traces.h"
#include "training.h"
#include "util.h"

/* Named limits (each has a test one past it). */
#define SERVER_MAX_BODY_DEFAULT (1 << 20)   /* request body bytes */
#define SERVER_MAX_INFLIGHT_DEFAULT 512     /* generations in the engine */
#define SERVER_MAX_CONNECTIONS 4096
#define SERVER_MAX_CHOICES 16               /* prompts x n per request */
#define SERVER_MAX_MESSAGES 1024
#define SERVER_MAX_STOP 4
#define SERVER_MAX_LOGPROBS 20
#define SERVER_MAX_BIAS 1024              /* logit_bias entries (the engine's GEN_MAX_BIAS) */
#define SERVER_MAX_UPLOAD_DEFAULT (1L << 30) /* dataset upload bytes */

struct server_config {
    const char *host;
    int port;
    const char *data_dir;
    const char *database_url;
    const char *engine_path;
    const char *migrations_dir;
    const char *web_dir;          /* the dashboard's files (web.c) */
    long max_body;
    long max_upload;              /* dataset file bytes (POST /v1/datasets) */
    int max_inflight;
    int threads;
    double heartbeat_s;
    double engine_timeout_s;      /* engine silence that fails a request */
    int trace_queue;
};

struct server {
    struct server_config cfg;
    db_pool *pool;
    engine *eng;
    traces *tr;
    struct MHD_Daemon *daemon;
};

/* State of one HTTP request, from the first header to the completed
 * notification; everything in it is freed then. */
struct http_req {
    struct server *srv;
    arena *a;
    enum metrics_route route;
    double t0;
    int status;              /* sent status, for metrics */
    sbuf body;
    bool too_large;
    bool upload;             /* POST /v1/datasets: the body streams to datasets_upload_chunk */
    struct keys_info key;
    struct gen_req *gen;     /* completions in progress, or NULL */
    /* A training route's own state (an upload in progress, an SSE stream),
     * released by route_release when the request ends (aborted = the
     * client went away first). */
    void *route_state;
    void (*route_release)(struct http_req *hr, bool aborted);
};

/* Replies with `body` (stolen) as JSON. Returns an MHD_Result. */
enum MHD_Result http_reply_json(struct MHD_Connection *c, struct http_req *hr, int status,
                                json_t *body);
/* Replies with OpenAI's error shape; param and code may be NULL. */
enum MHD_Result http_reply_error(struct MHD_Connection *c, struct http_req *hr, int status,
                                 const char *type, const char *param, const char *code,
                                 const char *fmt, ...) __attribute__((format(printf, 7, 8)));
/* The OpenAI error object {"error":{...}}; returns a new reference. */
json_t *http_error_json(const char *type, const char *param, const char *code,
                        const char *message);
/* Checks the Bearer key against `need`; on failure queues the error reply
 * and returns false (*ret holds MHD's result). */
bool http_authorize(struct MHD_Connection *c, struct http_req *hr, enum keys_scope need,
                    enum MHD_Result *ret);
/* OpenAI error type for an HTTP status ("invalid_request_error", ...). */
const char *http_error_type(int status);

/* The dashboard (web.c). web_load reads the files of dir once (-1 with err
 * filled when dir cannot be read); web_handle answers GET and HEAD on /,
 * /dashboard and /dashboard/<file> from them. */
int web_load(const char *dir, char *err, size_t errlen);
void web_free(void);
enum MHD_Result web_handle(struct MHD_Connection *c, struct http_req *hr, const char *method,
                           const char *url);

/* Completions (completions.c). `chat` selects /v1/chat/completions. Called
 * with the whole body once, then again after each resume until it queues a
 * response. */
enum MHD_Result completions_handle(struct MHD_Connection *c, struct http_req *hr, bool chat);
/* The request ended (aborted = the client went away first): cancels what is
 * still generating, stores the trace, frees hr->gen. */
void completions_release(struct http_req *hr, bool aborted);
int completions_start(struct server *srv);
/* Waits until no completion request is live (each has sent its last byte,
 * or its client left, and been released), at most timeout_s seconds;
 * returns how many are still live. For shutdown, after engine_stop has
 * finished them all. */
int completions_drain(double timeout_s);
void completions_stop(void);

#endif
