/* server/http.c — the libmicrohttpd daemon: request bodies with a size
 * limit, the router, API-key checks, and the small routes (health,
 * metrics, models, traces). Completions live in completions.c. */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "http.h"
#include "models.h"
#include "server.h"

const char *http_error_type(int status)
{
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "invalid_request_error";
    case 429: return "rate_limit_error";
    case 500: return "server_error";
    case 503: return "service_unavailable";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

json_t *http_error_json(const char *type, const char *param, const char *code,
                        const char *message)
{
    return json_pack("{s:{s:s, s:s, s:s?, s:s?}}", "error", "message", message, "type", type,
                     "param", param, "code", code);
}

enum MHD_Result http_reply_json(struct MHD_Connection *c, struct http_req *hr, int status,
                                json_t *body)
{
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!s) return MHD_NO;
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type", "application/json");
    if (status == 429 || status == 503) MHD_add_response_header(r, "Retry-After", "1");
    hr->status = status;
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result http_reply_error(struct MHD_Connection *c, struct http_req *hr, int status,
                                 const char *type, const char *param, const char *code,
                                 const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return http_reply_json(c, hr, status, http_error_json(type, param, code, msg));
}

static enum MHD_Result reply_text(struct MHD_Connection *c, struct http_req *hr, int status,
                                  const char *type, char *text /* stolen */)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type", type);
    hr->status = status;
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---- auth ------------------------------------------------------------------ */

bool http_authorize(struct MHD_Connection *c, struct http_req *hr, enum keys_scope need,
                      enum MHD_Result *ret)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) {
        *ret = http_reply_error(c, hr, 401, "invalid_request_error", NULL, "missing_api_key",
                                "You didn't provide an API key. Send it in an Authorization "
                                "header using Bearer auth (Authorization: Bearer YOUR_KEY).");
        return false;
    }
    const char *key = h + 7;
    while (*key == ' ') key++;
    switch (keys_verify(hr->srv->pool, key, &hr->key)) {
    case KEYS_OK: break;
    case KEYS_INVALID:
        *ret = http_reply_error(c, hr, 401, "invalid_request_error", NULL, "invalid_api_key",
                                "Incorrect API key provided.");
        return false;
    case KEYS_UNAVAILABLE:
        *ret = http_reply_error(c, hr, 503, "service_unavailable", NULL, "database_unavailable",
                                "the API key cannot be checked: the database is unreachable");
        return false;
    }
    if (hr->key.scope < need) {
        *ret = http_reply_error(c, hr, 403, "permission_error", NULL, "insufficient_scope",
                                "this API key has scope \"%s\"; this route needs \"%s\"",
                                keys_scope_name(hr->key.scope), keys_scope_name(need));
        return false;
    }
    return true;
}

/* ---- small routes ------------------------------------------------------------ */

static enum MHD_Result route_readyz(struct MHD_Connection *c, struct http_req *hr)
{
    char err[256] = "ok";
    PGresult *r = db_exec(hr->srv->pool, "SELECT 1", 0, NULL, NULL, NULL, err, sizeof err);
    bool db_ok = r && PQresultStatus(r) == PGRES_TUPLES_OK;
    if (r && !db_ok) snprintf(err, sizeof err, "%s", PQresultErrorMessage(r));
    PQclear(r);
    bool eng_ok = engine_ready(hr->srv->eng);
    bool ok = db_ok && eng_ok;
    return http_reply_json(c, hr, ok ? 200 : 503,
                           json_pack("{s:s, s:s, s:s}", "status", ok ? "ready" : "unavailable",
                                     "database", db_ok ? "ok" : err, "engine",
                                     eng_ok ? "ok" : "not running"));
}

static enum MHD_Result route_models(struct MHD_Connection *c, struct http_req *hr,
                                    const char *method, const char *id)
{
    struct server *srv = hr->srv;
    struct models_info m;
    char err[512];
    if (!id && strcmp(method, "GET") == 0)
        return http_reply_json(c, hr, 200, models_list_json(srv->cfg.data_dir));
    if (!id && strcmp(method, "POST") == 0) {
        json_error_t jerr;
        json_t *body = json_loadb(hr->body.p ? hr->body.p : "", hr->body.len, 0, &jerr);
        if (!json_is_object(body)) {
            json_decref(body);
            return http_reply_error(c, hr, 400, "invalid_request_error", NULL, "invalid_json",
                                    "the body must be a JSON object {\"id\", \"path\"}");
        }
        const char *nid = json_string_value(json_object_get(body, "id"));
        const char *path = json_string_value(json_object_get(body, "path"));
        enum MHD_Result ret;
        if (!nid || !models_id_valid(nid))
            ret = http_reply_error(c, hr, 400, "invalid_request_error", "id", "invalid_value",
                                   "'id' must be 1 to %d characters of [A-Za-z0-9._-], not "
                                   "starting with '.'", MODELS_ID_MAX);
        else if (!path)
            ret = http_reply_error(c, hr, 400, "invalid_request_error", "path",
                                   "missing_required_parameter", "'path' must be a string");
        else {
            int st = models_import(srv->cfg.data_dir, nid, path, err, sizeof err);
            if (st == 201 && models_get(srv->cfg.data_dir, nid, &m) == 0)
                ret = http_reply_json(c, hr, 201, models_info_json(&m));
            else
                ret = http_reply_error(c, hr, st == 201 ? 500 : st, http_error_type(st),
                                       st == 409 ? "id" : "path",
                                       st == 409 ? "model_exists" : "invalid_model", "%s", err);
        }
        json_decref(body);
        return ret;
    }
    if (!id)
        return http_reply_error(c, hr, 405, "invalid_request_error", NULL, "method_not_allowed",
                                "%s is not allowed on /v1/models", method);
    if (models_get(srv->cfg.data_dir, id, &m))
        return http_reply_error(c, hr, 404, "invalid_request_error", "model", "model_not_found",
                                "The model `%s` does not exist.", id);
    if (strcmp(method, "GET") == 0) return http_reply_json(c, hr, 200, models_info_json(&m));
    if (strcmp(method, "DELETE") == 0) {
        if (models_delete(srv->cfg.data_dir, id, err, sizeof err))
            return http_reply_error(c, hr, 500, "server_error", NULL, NULL, "%s", err);
        engine_unload(srv->eng, id);
        return http_reply_json(c, hr, 200, json_pack("{s:s, s:s, s:b}", "id", id, "object",
                                                     "model", "deleted", 1));
    }
    return http_reply_error(c, hr, 405, "invalid_request_error", NULL, "method_not_allowed",
                            "%s is not allowed on /v1/models/{id}", method);
}

/* A time filter: seconds since the epoch, or anything PostgreSQL reads as
 * timestamptz (RFC 3339). Returns a string for the query (arena). */
static const char *time_arg(struct http_req *hr, const char *v)
{
    if (!v) return NULL;
    char *end;
    double t = strtod(v, &end);
    if (*v && *end == 0) {
        time_t s = (time_t)t;
        struct tm tm;
        gmtime_r(&s, &tm);
        char buf[64];
        strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
        return arena_printf(hr->a, "%s.%06dZ", buf, (int)((t - (double)s) * 1e6));
    }
    return v;
}

static enum MHD_Result route_traces(struct MHD_Connection *c, struct http_req *hr,
                                    const char *id)
{
    char err[512];
    json_t *out = NULL;
    int st;
    if (id) {
        st = traces_get(hr->srv->pool, id, &out, err, sizeof err);
    } else {
        struct traces_query q = {0};
#define ARG(k) MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, k)
        q.model = ARG("model");
        q.since = time_arg(hr, ARG("since"));
        q.until = time_arg(hr, ARG("until"));
        q.finish_reason = ARG("finish_reason");
        q.q = ARG("q");
        q.after = ARG("after");
        const char *lim = ARG("limit");
#undef ARG
        q.limit = TRACES_LIST_DEFAULT;
        if (lim) {
            char *end;
            long l = strtol(lim, &end, 10);
            if (*end || l < 1 || l > TRACES_LIST_MAX)
                return http_reply_error(c, hr, 400, "invalid_request_error", "limit",
                                        "invalid_value", "'limit' must be an integer from 1 to %d",
                                        TRACES_LIST_MAX);
            q.limit = (int)l;
        }
        st = traces_list(hr->srv->pool, &q, &out, err, sizeof err);
    }
    if (st == 200) return http_reply_json(c, hr, 200, out);
    return http_reply_error(c, hr, st, http_error_type(st), NULL,
                            st == 404   ? "trace_not_found"
                            : st == 503 ? "database_unavailable"
                                        : NULL,
                            "%s", err);
}

/* ---- router ------------------------------------------------------------------ */

/* url is `p` or starts with `p` + "/". */
static bool prefix(const char *url, const char *p)
{
    size_t n = strlen(p);
    return strncmp(url, p, n) == 0 && (url[n] == 0 || url[n] == '/');
}

static enum metrics_route route_of(const char *url)
{
    if (strcmp(url, "/healthz") == 0) return ROUTE_HEALTHZ;
    if (strcmp(url, "/readyz") == 0) return ROUTE_READYZ;
    if (strcmp(url, "/metrics") == 0) return ROUTE_METRICS;
    if (strcmp(url, "/v1/models") == 0) return ROUTE_MODELS;
    if (strncmp(url, "/v1/models/", 11) == 0) return ROUTE_MODEL;
    if (strcmp(url, "/v1/completions") == 0) return ROUTE_COMPLETIONS;
    if (strcmp(url, "/v1/chat/completions") == 0) return ROUTE_CHAT_COMPLETIONS;
    if (strcmp(url, "/v1/traces") == 0) return ROUTE_TRACES;
    if (strncmp(url, "/v1/traces/", 11) == 0) return ROUTE_TRACE;
    if (prefix(url, "/v1/datasets")) return ROUTE_DATASETS;
    if (prefix(url, "/v1/rewards")) return ROUTE_REWARDS;
    if (prefix(url, "/v1/pipelines")) return ROUTE_PIPELINES;
    if (prefix(url, "/v1/runs")) return ROUTE_RUNS;
    if (strcmp(url, "/") == 0 || prefix(url, "/dashboard")) return ROUTE_DASHBOARD;
    return ROUTE_OTHER;
}

static enum MHD_Result not_allowed(struct MHD_Connection *c, struct http_req *hr,
                                   const char *method, const char *url)
{
    return http_reply_error(c, hr, 405, "invalid_request_error", NULL, "method_not_allowed",
                            "%s is not allowed on %s", method, url);
}

static enum MHD_Result dispatch(struct MHD_Connection *c, struct http_req *hr, const char *url,
                                const char *method)
{
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool post = strcmp(method, "POST") == 0;
    enum MHD_Result ret;
    switch (hr->route) {
    case ROUTE_HEALTHZ:
        if (!get) return not_allowed(c, hr, method, url);
        return http_reply_json(c, hr, 200, json_pack("{s:s}", "status", "ok"));
    case ROUTE_READYZ:
        if (!get) return not_allowed(c, hr, method, url);
        return route_readyz(c, hr);
    case ROUTE_METRICS: {
        if (!get) return not_allowed(c, hr, method, url);
        char *text = metrics_render();
        return text ? reply_text(c, hr, 200, "text/plain; version=0.0.4; charset=utf-8", text)
                    : MHD_NO;
    }
    case ROUTE_MODELS:
    case ROUTE_MODEL: {
        const char *id = hr->route == ROUTE_MODEL ? url + 11 : NULL;
        enum keys_scope need = get ? KEYS_SCOPE_READ : KEYS_SCOPE_ADMIN;
        if (!http_authorize(c, hr, need, &ret)) return ret;
        return route_models(c, hr, get ? "GET" : method, id);
    }
    case ROUTE_COMPLETIONS:
    case ROUTE_CHAT_COMPLETIONS:
        if (!hr->gen) {
            if (!post) return not_allowed(c, hr, method, url);
            if (!http_authorize(c, hr, KEYS_SCOPE_INFERENCE, &ret)) return ret;
        }
        return completions_handle(c, hr, hr->route == ROUTE_CHAT_COMPLETIONS);
    case ROUTE_TRACES:
    case ROUTE_TRACE:
        if (!get) return not_allowed(c, hr, method, url);
        if (!http_authorize(c, hr, KEYS_SCOPE_READ, &ret)) return ret;
        return route_traces(c, hr, hr->route == ROUTE_TRACE ? url + 11 : NULL);
    /* Training routes check keys themselves (read for GET, admin to
     * change); `rest` is the URL after the collection ("" or "/{id}..."). */
    case ROUTE_DATASETS: return datasets_handle(c, hr, method, url + strlen("/v1/datasets"));
    case ROUTE_REWARDS: return rewards_handle(c, hr, method, url + strlen("/v1/rewards"));
    case ROUTE_PIPELINES: return pipelines_handle(c, hr, method, url + strlen("/v1/pipelines"));
    case ROUTE_RUNS: return runs_handle(c, hr, method, url + strlen("/v1/runs"));
    case ROUTE_DASHBOARD: return web_handle(c, hr, method, url);
    default:
        return http_reply_error(c, hr, 404, "invalid_request_error", NULL, "not_found",
                                "no route for %s %s", method, url);
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    struct server *srv = cls;
    struct http_req *hr = *con_cls;
    if (!hr) {
        hr = calloc(1, sizeof *hr);
        if (!hr) return MHD_NO;
        hr->srv = srv;
        hr->t0 = clock_mono();
        hr->a = arena_new();
        hr->route = route_of(url);
        *con_cls = hr;
        hr->upload = hr->route == ROUTE_DATASETS && strcmp(method, "POST") == 0 &&
                     strcmp(url, "/v1/datasets") == 0;
        if (hr->upload) return datasets_upload_begin(c, hr);
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoll(cl, NULL, 10) > srv->cfg.max_body)
            return http_reply_error(c, hr, 413, "invalid_request_error", NULL,
                                    "request_too_large",
                                    "the request body is %s bytes; the limit is %ld bytes", cl,
                                    srv->cfg.max_body);
        return MHD_YES;
    }
    if (*upload_data_size && hr->upload) {
        /* dataset uploads stream to disk under their own limit */
        if (datasets_upload_chunk(hr, upload_data, *upload_data_size)) return MHD_NO;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (hr->too_large || hr->body.len + *upload_data_size > (size_t)srv->cfg.max_body) {
            hr->too_large = true;
            sbuf_free(&hr->body);
        } else if (sbuf_append(&hr->body, upload_data, *upload_data_size)) {
            return MHD_NO;
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (hr->too_large)
        return http_reply_error(c, hr, 413, "invalid_request_error", NULL, "request_too_large",
                                "the request body is over the limit of %ld bytes",
                                srv->cfg.max_body);
    return dispatch(c, hr, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct http_req *hr = *con_cls;
    if (!hr) return;
    *con_cls = NULL;
    completions_release(hr, toe != MHD_REQUEST_TERMINATED_COMPLETED_OK);
    if (hr->route_release) hr->route_release(hr, toe != MHD_REQUEST_TERMINATED_COMPLETED_OK);
    metrics_request(hr->route, hr->status ? hr->status : 499, clock_mono() - hr->t0);
    sbuf_free(&hr->body);
    arena_free(hr->a);
    free(hr);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n') msg[--n] = 0;
    log_msg("http: %s", msg);
}

int http_start(struct server *srv, char *err, size_t errlen)
{
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char port[16];
    snprintf(port, sizeof port, "%d", srv->cfg.port);
    int rc = getaddrinfo(srv->cfg.host, port, &hints, &ai);
    if (rc) {
        snprintf(err, errlen, "host \"%s\": %s", srv->cfg.host, gai_strerror(rc));
        return -1;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    srv->daemon = MHD_start_daemon(
        flags, (uint16_t)srv->cfg.port, NULL, NULL, on_request, srv,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_SOCK_ADDR,
        ai->ai_addr, MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)srv->cfg.threads, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)SERVER_MAX_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)300,
        MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!srv->daemon) {
        snprintf(err, errlen, "cannot listen on %s:%d (in use?)", srv->cfg.host, srv->cfg.port);
        return -1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    if (info && info->port) srv->cfg.port = info->port;
    return 0;
}

void http_stop(struct server *srv)
{
    if (!srv->daemon) return;
    MHD_stop_daemon(srv->daemon);
    srv->daemon = NULL;
}

void http_quiesce(struct server *srv)
{
    if (srv->daemon) {
        MHD_socket s = MHD_quiesce_daemon(srv->daemon);
        if (s != MHD_INVALID_SOCKET) close(s);
    }
}
