/* server/rewards_api.c — /v1/rewards: stored reward specs (parsed and
 * validated by engine/rewards.c, the same code the trainers score with) and
 * a dry run that scores given completions with one (as OpenAI's graders run
 * endpoint does), for debugging a spec before a run uses it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rewards.h"
#include "catalog.h"
#include "server.h"

#define REWARDS_SCORE_MAX_ITEMS 64     /* items per POST /v1/rewards/{id}/score */

/* One stored reward as a JSON object, built by PostgreSQL. */
#define REWARD_JSON                                                                      \
    "jsonb_build_object('id', id, 'object', 'reward', 'name', name, 'spec', spec,"       \
    " 'components', to_jsonb(components), 'created_at',"                                 \
    " extract(epoch FROM created_at)::bigint)::text"

/* Stores a parsed spec; returns the reward object (new reference) or NULL
 * with err filled and *status set (500, 503). */
static json_t *store(struct server *srv, const json_t *spec, const struct reward_spec *rs,
                     int *status, char *err, size_t errlen)
{
    char id[64];
    random_id(id, sizeof id, "rw-");
    json_t *names = json_array();
    for (int k = 0; k < reward_spec_count(rs); k++)
        json_array_append_new(names, json_string(reward_spec_component_name(rs, k)));
    char *names_s = json_dumps(names, JSON_COMPACT);
    char *spec_s = json_dumps(spec, JSON_COMPACT);
    json_decref(names);
    const char *name = reward_spec_name(rs);
    const char *p[] = {id, *name ? name : "reward", spec_s, names_s};
    PGresult *r = names_s && spec_s
                      ? db_exec(srv->pool,
                                "INSERT INTO rewards (id, name, spec, components)"
                                " VALUES ($1, $2, $3::jsonb,"
                                " ARRAY(SELECT jsonb_array_elements_text($4::jsonb)))"
                                " RETURNING " REWARD_JSON,
                                4, p, NULL, NULL, err, errlen)
                      : NULL;
    free(names_s);
    free(spec_s);
    json_t *out = NULL;
    *status = r ? 500 : 503;
    if (r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        out = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
    else if (r) {
        log_msg("reward insert: %s", PQresultErrorMessage(r));
        snprintf(err, errlen, "the reward spec could not be stored");
    }
    PQclear(r);
    return out;
}

int rewards_create(struct server *srv, const json_t *spec, char *id, char *err, size_t errlen)
{
    struct reward_spec *rs = reward_spec_parse(spec, err, errlen);
    if (!rs) return -1;
    /* the same spec again (a template created at every start) is the
     * stored one: jsonb equality ignores key order and spacing */
    char *spec_s = json_dumps(spec, JSON_COMPACT);
    const char *p[] = {spec_s};
    PGresult *r = spec_s ? db_exec(srv->pool,
                                   "SELECT id FROM rewards WHERE spec = $1::jsonb ORDER BY seq LIMIT 1",
                                   1, p, NULL, NULL, err, errlen)
                         : NULL;
    free(spec_s);
    bool ok = r && PQresultStatus(r) == PGRES_TUPLES_OK;
    if (ok && PQntuples(r) == 1) snprintf(id, 64, "%s", PQgetvalue(r, 0, 0));
    bool found = ok && PQntuples(r) == 1;
    if (r && !ok) snprintf(err, errlen, "reward lookup: %s", PQresultErrorMessage(r));
    PQclear(r);
    if (!ok || found) {
        reward_spec_free(rs);
        return found ? 0 : -1;
    }
    int status;
    json_t *o = store(srv, spec, rs, &status, err, errlen);
    reward_spec_free(rs);
    if (!o) return -1;
    snprintf(id, 64, "%s", json_string_value(json_object_get(o, "id")));
    json_decref(o);
    return 0;
}

/* The stored reward object `id` (new reference): 1, 0 unknown, -1 db error. */
static int fetch(struct server *srv, const char *id, json_t **out, char *err, size_t errlen)
{
    const char *p[] = {id};
    PGresult *r = db_exec(srv->pool, "SELECT " REWARD_JSON " FROM rewards WHERE id = $1", 1, p,
                          NULL, NULL, err, errlen);
    if (!r) return -1;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "reward lookup: %s", PQresultErrorMessage(r));
        PQclear(r);
        return -1;
    }
    int found = PQntuples(r) == 1;
    if (found && !(*out = json_loads(PQgetvalue(r, 0, 0), 0, NULL))) {
        snprintf(err, errlen, "reward %s: bad record", id);
        found = -1;
    }
    PQclear(r);
    return found;
}

int rewards_lookup(struct server *srv, const char *id, json_t **spec, char *err, size_t errlen)
{
    json_t *o = NULL;
    int found = fetch(srv, id, &o, err, errlen);
    if (found == 1) *spec = json_incref(json_object_get(o, "spec"));
    json_decref(o);
    return found;
}

/* reward_spec_parse's message names the JSON path after "reward spec: ";
 * the path is the error's param. Returns an arena string or NULL. */
static const char *spec_error_param(struct http_req *hr, const char *msg)
{
    const char *s = strncmp(msg, "reward spec: ", 13) == 0 ? msg + 13 : NULL;
    const char *colon = s ? strstr(s, ": ") : NULL;
    if (!colon || colon == s || strchr(s, ' ') < colon) return NULL;
    return arena_printf(hr->a, "%.*s", (int)(colon - s), s);
}

static json_t *body_json(struct MHD_Connection *c, struct http_req *hr, enum MHD_Result *ret)
{
    json_error_t jerr;
    json_t *body = json_loadb(hr->body.p ? hr->body.p : "", hr->body.len, 0, &jerr);
    if (!json_is_object(body)) {
        *ret = http_reply_error(c, hr, 400, "invalid_request_error", NULL, "invalid_json",
                                "the body must be a JSON object%s%s", body ? "" : ": ",
                                body ? "" : jerr.text);
        json_decref(body);
        return NULL;
    }
    return body;
}

static enum MHD_Result create(struct MHD_Connection *c, struct http_req *hr)
{
    enum MHD_Result ret;
    json_t *body = body_json(c, hr, &ret);
    if (!body) return ret;
    char err[1024];
    struct reward_spec *rs = reward_spec_parse(body, err, sizeof err);
    if (!rs) {
        json_decref(body);
        return http_reply_error(c, hr, 400, "invalid_request_error", spec_error_param(hr, err),
                                "invalid_reward_spec", "%s", err);
    }
    int status;
    json_t *o = store(hr->srv, body, rs, &status, err, sizeof err);
    reward_spec_free(rs);
    json_decref(body);
    if (!o)
        return http_reply_error(c, hr, status, http_error_type(status), NULL,
                                status == 503 ? "database_unavailable" : NULL, "%s", err);
    return http_reply_json(c, hr, 201, o);
}

static enum MHD_Result list(struct MHD_Connection *c, struct http_req *hr)
{
    const char *p[] = {MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after"), NULL};
    return catalog_reply_page(c, hr,
                              "SELECT " REWARD_JSON " FROM rewards"
                              " WHERE ($1::text IS NULL OR seq < (SELECT seq FROM rewards WHERE id = $1))"
                              " ORDER BY seq DESC LIMIT $2::int",
                              2, p);
}

static json_t *number_or_null(double v) { return isfinite(v) ? json_real(v) : json_null(); }

/* POST /v1/rewards/{id}/score {"items": [{"prompt", "completion",
 * "completion_tokens"?, ...fields}]}: each item's total and unweighted
 * value per component; the item itself is the dataset row rewards read. */
static enum MHD_Result score(struct MHD_Connection *c, struct http_req *hr, const json_t *reward)
{
    enum MHD_Result ret;
    json_t *body = body_json(c, hr, &ret);
    if (!body) return ret;
    json_t *items = json_object_get(body, "items");
    size_t n = json_array_size(items);
    if (!json_is_array(items) || n == 0 || n > REWARDS_SCORE_MAX_ITEMS) {
        json_decref(body);
        return http_reply_error(c, hr, 400, "invalid_request_error", "items", "invalid_value",
                                "'items' must be an array of 1 to %d items", REWARDS_SCORE_MAX_ITEMS);
    }
    struct reward_item *ri = arena_alloc(hr->a, n * sizeof *ri);
    struct reward_result *res = arena_alloc(hr->a, n * sizeof *res);
    if (!ri || !res) {
        json_decref(body);
        return MHD_NO;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *it = json_array_get(items, i);
        json_t *pr = json_object_get(it, "prompt"), *co = json_object_get(it, "completion");
        json_t *ct = json_object_get(it, "completion_tokens");
        const char *bad = !json_is_object(it)                    ? "expected an object"
                          : pr && !json_is_string(pr)            ? "prompt: expected a string"
                          : !json_is_string(co)                  ? "completion: expected a string"
                          : ct && !json_is_integer(ct)           ? "completion_tokens: expected an integer"
                                                                 : NULL;
        if (bad) {
            json_decref(body);
            return http_reply_error(c, hr, 400, "invalid_request_error",
                                    arena_printf(hr->a, "items[%zu]", i), "invalid_value",
                                    "items[%zu].%s", i, bad);
        }
        ri[i] = (struct reward_item){.prompt = json_string_value(pr),
                                     .completion = json_string_value(co),
                                     .completion_len = json_string_length(co),
                                     .completion_tokens = ct ? (long)json_integer_value(ct) : -1,
                                     .fields = it};
    }
    char err[1024];
    struct reward_spec *rs = reward_spec_parse(json_object_get(reward, "spec"), err, sizeof err);
    if (!rs) {
        json_decref(body);
        return http_reply_error(c, hr, 500, "server_error", NULL, NULL, "stored spec: %s", err);
    }
    if (reward_score_batch(rs, ri, n, res, err, sizeof err)) {
        reward_spec_free(rs);
        json_decref(body);
        return http_reply_error(c, hr, 400, "invalid_request_error", "items", "invalid_value",
                                "%s", err);
    }
    json_t *results = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *vals = json_object(), *failed = json_array();
        for (int k = 0; k < reward_spec_count(rs); k++) {
            json_object_set_new(vals, reward_spec_component_name(rs, k),
                                number_or_null(res[i].value[k]));
            if (res[i].failed[k])
                json_array_append_new(failed, json_string(reward_spec_component_name(rs, k)));
        }
        json_array_append_new(results,
                              json_pack("{s:o, s:b, s:o, s:o}", "total",
                                        number_or_null(res[i].total), "excluded",
                                        res[i].excluded, "rewards", vals, "failed", failed));
    }
    reward_spec_free(rs);
    json_decref(body);
    return http_reply_json(c, hr, 200,
                           json_pack("{s:s, s:O, s:O, s:o}", "object", "reward.score", "reward_id",
                                     json_object_get(reward, "id"), "components",
                                     json_object_get(reward, "components"), "results", results));
}

enum MHD_Result rewards_handle(struct MHD_Connection *c, struct http_req *hr, const char *method,
                               const char *rest)
{
    enum MHD_Result ret;
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool post = strcmp(method, "POST") == 0;
    if (!get && !post)
        return http_reply_error(c, hr, 405, "invalid_request_error", NULL, "method_not_allowed",
                                "%s is not allowed on /v1/rewards%s", method, rest);
    if (!http_authorize(c, hr, get ? KEYS_SCOPE_READ : KEYS_SCOPE_ADMIN, &ret)) return ret;
    if (!*rest) return get ? list(c, hr) : create(c, hr);
    const char *id = rest + 1;
    const char *slash = strchr(id, '/');
    bool scoring = slash && strcmp(slash, "/score") == 0;
    if ((slash && !scoring) || (scoring && !post) || (!slash && post))
        return http_reply_error(c, hr, slash && !scoring ? 404 : 405, "invalid_request_error",
                                NULL, slash && !scoring ? "not_found" : "method_not_allowed",
                                "no route for %s /v1/rewards%s", method, rest);
    if (slash) id = arena_printf(hr->a, "%.*s", (int)(slash - id), id);
    char err[512];
    json_t *o = NULL;
    int found = fetch(hr->srv, id, &o, err, sizeof err);
    if (found < 0)
        return http_reply_error(c, hr, 503, "service_unavailable", NULL, "database_unavailable",
                                "%s", err);
    if (!found)
        return http_reply_error(c, hr, 404, "invalid_request_error", "id", "reward_not_found",
                                "no reward \"%s\"", id);
    if (!scoring) return http_reply_json(c, hr, 200, o);
    ret = score(c, hr, o);
    json_decref(o);
    return ret;
}
