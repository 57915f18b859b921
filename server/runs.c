/* server/runs.c — the /v1/runs routes: create (compiled by runs_compile.c,
 * then queued), list, get, cancel, resume, metrics, samples, checkpoints;
 * events are runs_sse.c's. Handlers parse, call a query, shape the reply;
 * the queue and the engine processes are runs_sched.c's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runs_internal.h"

#define RUNS_LIST_DEFAULT 20
#define RUNS_SAMPLES_DEFAULT 100
#define RUNS_SAMPLES_MAX 1000
#define RUNS_METRIC_NAMES_MAX 64

/* A run as JSON (r = runs). */
#define RUN_JSON                                                                              \
    "jsonb_build_object('id', r.id, 'object', 'run', 'name', r.name, 'pipeline_id',"          \
    " r.pipeline_id, 'pipeline', r.spec->>'name', 'status', r.status, 'base_model',"          \
    " r.base_model, 'tags', r.tags,"                                                          \
    " 'error', r.error, 'created_at', extract(epoch FROM r.created_at)::bigint,"              \
    " 'started_at', extract(epoch FROM r.started_at)::bigint,"                                \
    " 'finished_at', extract(epoch FROM r.finished_at)::bigint, 'last_seq', r.last_seq,"      \
    " 'attempt', r.attempt, 'auto_resume', r.auto_resume, 'dataset_ids', r.dataset_ids,"      \
    " 'resume_from', r.resume_from, 'cancel_requested', r.cancel_requested)"

/* ... with its spec, stages and latest metrics. */
#define RUN_DETAIL_JSON                                                                       \
    RUN_JSON " || jsonb_build_object('spec', r.spec, 'overrides', r.overrides, 'claimed_by',"  \
    " r.claimed_by, 'integrations', r.integrations, 'stages', (SELECT"                        \
    " coalesce(jsonb_agg(jsonb_build_object('name', s.name,"                                  \
    " 'kind', s.kind, 'status', s.status, 'model', CASE WHEN s.status = 'succeeded' AND"      \
    " s.kind IN ('pretrain', 'sft', 'grpo', 'distill') THEN r.name || '/' || s.name END,"     \
    " 'dataset', s.info->>'dataset_id',"                                                      \
    " 'started_at', extract(epoch FROM s.started_at)::bigint,"                                \
    " 'finished_at', extract(epoch FROM s.finished_at)::bigint) ORDER BY s.started_at),"      \
    " '[]') FROM run_stages s WHERE s.run_id = r.id),"                                        \
    " 'latest_metrics', (SELECT coalesce(jsonb_agg(jsonb_build_object('stage', stage,"        \
    " 'name', name, 'step', step, 'value', value) ORDER BY stage, name), '[]') FROM"          \
    " (SELECT DISTINCT ON (stage, name) stage, name, step, value FROM run_metrics m"          \
    " WHERE m.run_id = r.id ORDER BY stage, name, step DESC) lm))"

#define ARG(k) MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, k)

static enum MHD_Result db_error(struct MHD_Connection *c, struct http_req *hr, PGresult *r,
                                const char *err)
{
    return http_reply_error(c, hr, r ? 500 : 503, r ? "server_error" : "service_unavailable",
                            NULL, r ? NULL : "database_unavailable", "%s",
                            r ? PQresultErrorMessage(r) : err);
}

static enum MHD_Result not_found(struct MHD_Connection *c, struct http_req *hr, const char *id)
{
    return http_reply_error(c, hr, 404, "invalid_request_error", "id", "run_not_found",
                            "run \"%s\" does not exist", id);
}

/* Replies with the one JSON text value of a query (a run), or 404. */
static enum MHD_Result reply_run(struct MHD_Connection *c, struct http_req *hr, int status,
                                 const char *id)
{
    char err[512];
    const char *p[] = {id};
    PGresult *r = db_exec(hr->srv->pool,
                          "SELECT (" RUN_DETAIL_JSON ")::text FROM runs r WHERE r.id = $1 OR"
                          " r.name = $1",
                          1, p, NULL, NULL, err, sizeof err);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
        enum MHD_Result ret = db_error(c, hr, r, err);
        PQclear(r);
        return ret;
    }
    if (PQntuples(r) == 0) {
        PQclear(r);
        return not_found(c, hr, id);
    }
    json_t *run = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
    PQclear(r);
    if (!run) return MHD_NO;
    /* tokens, passwords and webhook secrets never leave the server */
    json_object_set_new(run, "integrations",
                        integrations_redact(json_object_get(run, "integrations")));
    return http_reply_json(c, hr, status, run);
}

int runs_status_set(struct server *srv, const char *run_id, const char *from, const char *status,
                    const char *message, char *err, size_t errlen)
{
    const char *p[] = {run_id, from, status, message};
    PGresult *r = db_exec(
        srv->pool,
        "WITH u AS (UPDATE runs r SET status = $3, last_seq = last_seq + 1,"
        "   error = CASE WHEN $3 IN ('cancelled', 'failed') THEN $4 END,"
        "   finished_at = CASE WHEN $3 IN ('cancelled', 'failed', 'succeeded') THEN now() END,"
        "   cancel_requested = false, claimed_by = NULL, heartbeat_at = NULL,"
        "   auto_resumes = CASE WHEN $3 = 'queued' THEN 0 ELSE auto_resumes END,"
        "   resume_from = CASE WHEN $3 = 'queued' THEN coalesce((SELECT path FROM"
        "     run_checkpoints k WHERE k.run_id = r.id ORDER BY created_at DESC, step DESC"
        "     LIMIT 1), resume_from) ELSE resume_from END"
        "   WHERE id = $1 AND status = ANY($2::text[]) RETURNING id, last_seq, resume_from),"
        " e AS (INSERT INTO run_events (run_id, seq, type, data) SELECT id, last_seq, 'status',"
        "   jsonb_strip_nulls(jsonb_build_object('status', $3::text, 'message', $4::text,"
        "   'resume_from', CASE WHEN $3 = 'queued' THEN resume_from END)) FROM u"
        "   RETURNING run_id, seq)"
        " SELECT pg_notify('aha_run_events', run_id || ':' || seq) FROM e",
        4, p, NULL, NULL, err, errlen);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
        if (r) snprintf(err, errlen, "%s", PQresultErrorMessage(r));
        PQclear(r);
        return -1;
    }
    int n = PQntuples(r);
    PQclear(r);
    return n > 0;
}

/* ---- POST /v1/runs ---- */

static char *json_text(const json_t *j)
{
    return j && !json_is_null(j) ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
}

static enum MHD_Result create_run(struct MHD_Connection *c, struct http_req *hr)
{
    struct server *srv = hr->srv;
    json_error_t jerr;
    json_t *body = json_loadb(hr->body.p ? hr->body.p : "", hr->body.len, 0, &jerr);
    if (!json_is_object(body)) {
        json_decref(body);
        return http_reply_error(c, hr, 400, "invalid_request_error", NULL, "invalid_json",
                                "the body must be a JSON object {\"pipeline\", \"base_model\", "
                                "\"overrides\", \"name\", \"tags\", \"integrations\", "
                                "\"auto_resume\"}");
    }
    struct runs_compiled rc;
    const char *param = NULL;
    char err[2048];
    int st = runs_compile(srv, body, &rc, &param, err, sizeof err);
    if (st) {
        char pbuf[128];
        snprintf(pbuf, sizeof pbuf, "%s", param ? param : "");
        runs_compiled_free(&rc);
        json_decref(body);
        const char *code = st == 404 ? "not_found" : st == 409 ? "conflict" : st == 503 ? "database_unavailable"
                                                                        : "invalid_value";
        return http_reply_error(c, hr, st, http_error_type(st), pbuf[0] ? pbuf : NULL, code,
                                "%s", err);
    }
    char id[40], name[RUNS_NAME_MAX + 1];
    random_id(id, sizeof id, "run-");
    const char *given = json_string_value(json_object_get(body, "name"));
    if (given) {
        snprintf(name, sizeof name, "%s", given);
    } else {
        const char *pn = json_string_value(json_object_get(rc.spec, "name"));
        char base[40];
        snprintf(base, sizeof base, "%s", pn && runs_name_valid(pn) ? pn : "run");
        snprintf(name, sizeof name, "%s-%.8s", base, id + 4);
    }
    char *overrides = json_text(json_object_get(body, "overrides"));
    char *spec = json_text(rc.spec), *dsids = json_text(rc.dataset_ids);
    char *tags = json_text(json_object_get(body, "tags"));
    char *integ = json_text(json_object_get(body, "integrations"));
    const char *p[] = {id,
                       name,
                       rc.pipeline_id,
                       rc.base_model[0] ? rc.base_model : NULL,
                       overrides ? overrides : "{}",
                       spec,
                       dsids,
                       tags ? tags : "[]",
                       json_is_true(json_object_get(body, "auto_resume")) ? "t" : "f",
                       integ};
    PGresult *r = db_exec(
        srv->pool,
        "WITH r AS (INSERT INTO runs (id, name, pipeline_id, base_model, overrides, spec,"
        "   dataset_ids, tags, auto_resume, integrations, last_seq) VALUES ($1, $2, $3, $4,"
        "   $5::jsonb, $6::jsonb, ARRAY(SELECT json_array_elements_text($7::json)),"
        "   ARRAY(SELECT json_array_elements_text($8::json)), $9::bool, $10::jsonb, 1)"
        "   RETURNING id),"
        " e AS (INSERT INTO run_events (run_id, seq, type, data) SELECT id, 1, 'status',"
        "   '{\"status\": \"queued\"}' FROM r RETURNING run_id, seq)"
        " SELECT pg_notify('aha_run_events', run_id || ':' || seq) FROM e",
        10, p, NULL, NULL, err, sizeof err);
    free(overrides);
    free(spec);
    free(dsids);
    free(tags);
    free(integ);
    runs_compiled_free(&rc);
    json_decref(body);
    enum MHD_Result ret;
    if (r && PQresultStatus(r) == PGRES_TUPLES_OK) {
        PQclear(r);
        runs_sched_wake();
        return reply_run(c, hr, 201, id);
    }
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (state && strcmp(state, "23505") == 0)
        ret = http_reply_error(c, hr, 409, "invalid_request_error", "name", "run_exists",
                               "a run named \"%s\" exists already", name);
    else
        ret = db_error(c, hr, r, err);
    PQclear(r);
    return ret;
}

/* ---- GET /v1/runs ---- */

static enum MHD_Result list_runs(struct MHD_Connection *c, struct http_req *hr)
{
    const char *status = ARG("status"), *pipeline = ARG("pipeline"), *tag = ARG("tag"),
               *after = ARG("after"), *lim = ARG("limit");
    long limit = RUNS_LIST_DEFAULT;
    if (lim) {
        char *end;
        limit = strtol(lim, &end, 10);
        if (*end || limit < 1 || limit > RUNS_LIST_MAX)
            return http_reply_error(c, hr, 400, "invalid_request_error", "limit", "invalid_value",
                                    "'limit' must be an integer from 1 to %d", RUNS_LIST_MAX);
    }
    if (status && strcmp(status, "queued") && strcmp(status, "running") &&
        strcmp(status, "succeeded") && strcmp(status, "failed") && strcmp(status, "cancelled"))
        return http_reply_error(c, hr, 400, "invalid_request_error", "status", "invalid_value",
                                "'status' must be queued, running, succeeded, failed or "
                                "cancelled");
    char lbuf[16], err[512];
    snprintf(lbuf, sizeof lbuf, "%ld", limit + 1);
    const char *p[] = {status, pipeline, tag, after, lbuf};
    PGresult *r = db_exec(
        hr->srv->pool,
        "SELECT (" RUN_JSON ")::text FROM runs r WHERE ($1::text IS NULL OR r.status = $1)"
        " AND ($2::text IS NULL OR r.pipeline_id = $2 OR r.spec->>'name' = $2)"
        " AND ($3::text IS NULL OR $3 = ANY(r.tags))"
        " AND ($4::text IS NULL OR (r.created_at, r.id) < (SELECT created_at, id FROM runs"
        "   WHERE id = $4))"
        " ORDER BY r.created_at DESC, r.id DESC LIMIT $5::int",
        5, p, NULL, NULL, err, sizeof err);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
        enum MHD_Result ret = db_error(c, hr, r, err);
        PQclear(r);
        return ret;
    }
    json_t *data = json_array();
    int n = PQntuples(r);
    for (int i = 0; i < n && i < limit; i++)
        json_array_append_new(data, json_loads(PQgetvalue(r, i, 0), 0, NULL));
    PQclear(r);
    return http_reply_json(c, hr, 200, json_pack("{s:s, s:o, s:b}", "object", "list", "data",
                                                 data, "has_more", n > limit));
}

/* ---- cancel, resume ---- */

static enum MHD_Result cancel_run(struct MHD_Connection *c, struct http_req *hr, const char *id,
                                  const char *status)
{
    char err[512];
    if (strcmp(status, "queued") == 0) {
        int ch = runs_status_set(hr->srv, id, "{queued}", "cancelled",
                                 "cancelled before it started", err, sizeof err);
        if (ch < 0) return db_error(c, hr, NULL, err);
        if (ch) return reply_run(c, hr, 200, id);
        status = "running"; /* claimed meanwhile */
    }
    if (strcmp(status, "running") == 0) {
        const char *p[] = {id};
        PGresult *r = db_exec(hr->srv->pool,
                              "UPDATE runs SET cancel_requested = true WHERE id = $1 AND"
                              " status = 'running' RETURNING id",
                              1, p, NULL, NULL, err, sizeof err);
        bool good = r && PQresultStatus(r) == PGRES_TUPLES_OK;
        int n = good ? PQntuples(r) : 0;
        if (!good) {
            enum MHD_Result ret = db_error(c, hr, r, err);
            PQclear(r);
            return ret;
        }
        PQclear(r);
        if (n) {
            runs_sched_cancel(id); /* here at once; another server within a heartbeat */
            return reply_run(c, hr, 202, id);
        }
    }
    return http_reply_error(c, hr, 409, "invalid_request_error", NULL, "run_finished",
                            "run \"%s\" has finished; only a queued or running run can be "
                            "cancelled", id);
}

static enum MHD_Result resume_run(struct MHD_Connection *c, struct http_req *hr, const char *id)
{
    char err[512];
    int ch = runs_status_set(hr->srv, id, "{failed,cancelled}", "queued", "resumed on request",
                             err, sizeof err);
    if (ch < 0) return db_error(c, hr, NULL, err);
    if (!ch)
        return http_reply_error(c, hr, 409, "invalid_request_error", NULL, "run_not_resumable",
                                "run \"%s\" is neither failed nor cancelled", id);
    runs_sched_wake();
    return reply_run(c, hr, 202, id);
}

/* ---- metrics, samples, checkpoints ---- */

static void csv_field(sbuf *b, const char *s)
{
    if (!strpbrk(s, ",\"\n\r")) {
        sbuf_puts(b, s);
        return;
    }
    sbuf_puts(b, "\"");
    for (const char *p = s; *p; p++) {
        if (*p == '"') sbuf_puts(b, "\"");
        sbuf_append(b, p, 1);
    }
    sbuf_puts(b, "\"");
}

static enum MHD_Result run_metrics(struct MHD_Connection *c, struct http_req *hr, const char *id)
{
    const char *names = ARG("names"), *format = ARG("format"), *stage = ARG("stage");
    if (format && strcmp(format, "json") && strcmp(format, "csv"))
        return http_reply_error(c, hr, 400, "invalid_request_error", "format", "invalid_value",
                                "'format' must be json or csv");
    bool csv = format && strcmp(format, "csv") == 0;
    json_t *nj = NULL;
    if (names && *names) {
        nj = json_array();
        const char *s = names;
        while (*s) {
            size_t l = strcspn(s, ",");
            if (l) json_array_append_new(nj, json_stringn(s, l));
            s += l;
            if (*s) s++;
        }
        if (json_array_size(nj) > RUNS_METRIC_NAMES_MAX) {
            json_decref(nj);
            return http_reply_error(c, hr, 400, "invalid_request_error", "names", "invalid_value",
                                    "'names' lists at most %d metrics", RUNS_METRIC_NAMES_MAX);
        }
    }
    char *ns = nj ? json_dumps(nj, JSON_COMPACT) : NULL;
    json_decref(nj);
    const char *p[] = {id, ns, stage};
    char err[512];
    const char *filter = " FROM run_metrics WHERE run_id = $1 AND ($2::json IS NULL OR name IN"
                         " (SELECT json_array_elements_text($2::json))) AND ($3::text IS NULL OR"
                         " stage = $3)";
    char sql[1024];
    if (csv)
        snprintf(sql, sizeof sql, "SELECT stage, step, name, value%s ORDER BY stage, step, name",
                 filter);
    else
        snprintf(sql, sizeof sql,
                 "SELECT coalesce(json_agg(json_build_object('stage', stage, 'name', name,"
                 " 'steps', steps, 'values', vals) ORDER BY stage, name), '[]')::text FROM"
                 " (SELECT stage, name, array_agg(step ORDER BY step) steps,"
                 " array_agg(value ORDER BY step) vals%s GROUP BY stage, name) x",
                 filter);
    PGresult *r = db_exec(hr->srv->pool, sql, 3, p, NULL, NULL, err, sizeof err);
    free(ns);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
        enum MHD_Result ret = db_error(c, hr, r, err);
        PQclear(r);
        return ret;
    }
    if (!csv) {
        json_t *series = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
        PQclear(r);
        return http_reply_json(c, hr, 200, json_pack("{s:s, s:s, s:o}", "object", "run.metrics",
                                                     "run_id", id, "data", series));
    }
    sbuf b = {0};
    sbuf_puts(&b, "stage,step,name,value\n");
    for (int i = 0; i < PQntuples(r); i++) {
        csv_field(&b, PQgetvalue(r, i, 0));
        sbuf_printf(&b, ",%s,", PQgetvalue(r, i, 1));
        csv_field(&b, PQgetvalue(r, i, 2));
        sbuf_printf(&b, ",%s\n", PQgetvalue(r, i, 3));
    }
    PQclear(r);
    struct MHD_Response *resp = MHD_create_response_from_buffer(b.len, b.p, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(resp, "Content-Type", "text/csv; charset=utf-8");
    hr->status = 200;
    enum MHD_Result ret = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result list_of(struct MHD_Connection *c, struct http_req *hr, const char *id,
                               bool samples)
{
    const char *step = ARG("step"), *stage = ARG("stage"), *lim = ARG("limit");
    long limit = RUNS_SAMPLES_DEFAULT;
    char *end;
    if (lim) {
        limit = strtol(lim, &end, 10);
        if (*end || limit < 1 || limit > RUNS_SAMPLES_MAX)
            return http_reply_error(c, hr, 400, "invalid_request_error", "limit", "invalid_value",
                                    "'limit' must be an integer from 1 to %d", RUNS_SAMPLES_MAX);
    }
    if (step && (strtol(step, &end, 10), *end || !*step))
        return http_reply_error(c, hr, 400, "invalid_request_error", "step", "invalid_value",
                                "'step' must be an integer");
    const char *order = ARG("order");
    if (order && strcmp(order, "asc") != 0 && strcmp(order, "desc") != 0)
        return http_reply_error(c, hr, 400, "invalid_request_error", "order", "invalid_value",
                                "'order' must be asc or desc");
    /* the order, one of two words, written into the samples' query */
    const char *dir = order && strcmp(order, "desc") == 0 ? "DESC" : "ASC";
    char lbuf[16], err[512], sql[640];
    snprintf(lbuf, sizeof lbuf, "%ld", limit);
    snprintf(sql, sizeof sql,
             "SELECT coalesce(json_agg(d ORDER BY stage %s, step %s, ord %s), '[]')::text FROM"
             " (SELECT stage, step, ord, data || jsonb_build_object('index', ord) d"
             " FROM run_samples WHERE run_id = $1 AND ($2::bigint IS NULL OR step = $2)"
             " AND ($3::text IS NULL OR stage = $3) ORDER BY stage %s, step %s, ord %s"
             " LIMIT $4::int) x", dir, dir, dir, dir, dir, dir);
    const char *p[] = {id, step, stage, lbuf};
    PGresult *r = db_exec(
        hr->srv->pool,
        samples ? sql
                : "SELECT coalesce(json_agg(json_build_object('stage', stage, 'step', step,"
                  " 'path', path, 'created_at', extract(epoch FROM created_at)::bigint)"
                  " ORDER BY created_at, stage, step), '[]')::text FROM (SELECT * FROM"
                  " run_checkpoints WHERE run_id = $1 AND ($2::bigint IS NULL OR step = $2)"
                  " AND ($3::text IS NULL OR stage = $3) ORDER BY created_at LIMIT $4::int) x",
        4, p, NULL, NULL, err, sizeof err);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
        enum MHD_Result ret = db_error(c, hr, r, err);
        PQclear(r);
        return ret;
    }
    json_t *data = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
    PQclear(r);
    return http_reply_json(c, hr, 200, json_pack("{s:s, s:s, s:o}", "object", "list", "run_id",
                                                 id, "data", data));
}

/* ---- the router ---- */

enum MHD_Result runs_handle(struct MHD_Connection *c, struct http_req *hr, const char *method,
                            const char *rest)
{
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    enum MHD_Result ret;
    if (!http_authorize(c, hr, get ? KEYS_SCOPE_READ : KEYS_SCOPE_ADMIN, &ret)) return ret;
    if (rest[0] == 0 || strcmp(rest, "/") == 0) {
        if (get) return list_runs(c, hr);
        if (strcmp(method, "POST") == 0) return create_run(c, hr);
        return http_reply_error(c, hr, 405, "invalid_request_error", NULL, "method_not_allowed",
                                "%s is not allowed on /v1/runs", method);
    }
    /* "/{id}[/{action}]" */
    char idbuf[RUNS_NAME_MAX + 64];
    const char *s = rest + 1, *slash = strchr(s, '/');
    size_t l = slash ? (size_t)(slash - s) : strlen(s);
    if (l == 0 || l >= sizeof idbuf)
        return http_reply_error(c, hr, 404, "invalid_request_error", NULL, "not_found",
                                "no route for %s /v1/runs%s", method, rest);
    memcpy(idbuf, s, l);
    idbuf[l] = 0;
    const char *action = slash ? slash + 1 : "";
    if (strcmp(action, "events") == 0 && get) return runs_sse_handle(c, hr, idbuf);
    /* the run by id or name */
    char err[512];
    const char *p[] = {idbuf};
    PGresult *r = db_exec(hr->srv->pool, "SELECT id, status FROM runs WHERE id = $1 OR name = $1",
                          1, p, NULL, NULL, err, sizeof err);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
        ret = db_error(c, hr, r, err);
        PQclear(r);
        return ret;
    }
    if (PQntuples(r) == 0) {
        PQclear(r);
        return not_found(c, hr, idbuf);
    }
    char id[64], status[16];
    snprintf(id, sizeof id, "%s", PQgetvalue(r, 0, 0));
    snprintf(status, sizeof status, "%s", PQgetvalue(r, 0, 1));
    PQclear(r);
    if (get && !*action) return reply_run(c, hr, 200, id);
    if (get && strcmp(action, "metrics") == 0) return run_metrics(c, hr, id);
    if (get && strcmp(action, "samples") == 0) return list_of(c, hr, id, true);
    if (get && strcmp(action, "checkpoints") == 0) return list_of(c, hr, id, false);
    if (strcmp(method, "POST") == 0 && strcmp(action, "cancel") == 0)
        return cancel_run(c, hr, id, status);
    if (strcmp(method, "POST") == 0 && strcmp(action, "resume") == 0) return resume_run(c, hr, id);
    return http_reply_error(c, hr, strcmp(action, "") == 0 ? 405 : 404, "invalid_request_error",
                            NULL, "not_found", "no route for %s /v1/runs%s", method, rest);
}
