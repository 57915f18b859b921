/* server/catalog.c — see catalog.h. */
#include "catalog.h"

#include <stdio.h>
#include <stdlib.h>

bool catalog_arg_long(struct MHD_Connection *c, struct http_req *hr, const char *key, long lo,
                      long hi, long *out, enum MHD_Result *ret)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, key);
    if (!v) return true;
    char *end;
    long l = strtol(v, &end, 10);
    if (!*v || *end || l < lo || l > hi) {
        *ret = http_reply_error(c, hr, 400, "invalid_request_error", key, "invalid_value",
                                "'%s' must be an integer from %ld to %ld", key, lo, hi);
        return false;
    }
    *out = l;
    return true;
}

enum MHD_Result catalog_reply_db_error(struct MHD_Connection *c, struct http_req *hr,
                                       PGresult *r, const char *err)
{
    if (!r)
        return http_reply_error(c, hr, 503, "service_unavailable", NULL, "database_unavailable",
                                "%s", err);
    log_msg("catalog query: %s", PQresultErrorMessage(r));
    PQclear(r);
    return http_reply_error(c, hr, 500, "server_error", NULL, NULL, "catalog query failed");
}

enum MHD_Result catalog_reply_page(struct MHD_Connection *c, struct http_req *hr, const char *sql,
                                   int n, const char **params)
{
    enum MHD_Result ret;
    long limit = CATALOG_LIST_DEFAULT;
    if (!catalog_arg_long(c, hr, "limit", 1, CATALOG_LIST_MAX, &limit, &ret)) return ret;
    char lim[24], err[512];
    snprintf(lim, sizeof lim, "%ld", limit + 1);
    params[n - 1] = lim;
    PGresult *r = db_exec(hr->srv->pool, sql, n, params, NULL, NULL, err, sizeof err);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) return catalog_reply_db_error(c, hr, r, err);
    int rows = PQntuples(r);
    bool more = rows > limit;
    if (more) rows = (int)limit;
    json_t *data = json_array();
    for (int i = 0; i < rows; i++) {
        json_t *o = json_loads(PQgetvalue(r, i, 0), 0, NULL);
        if (o) json_array_append_new(data, o);
    }
    PQclear(r);
    size_t k = json_array_size(data);
    json_t *first = k ? json_object_get(json_array_get(data, 0), "id") : NULL;
    json_t *last = k ? json_object_get(json_array_get(data, k - 1), "id") : NULL;
    return http_reply_json(c, hr, 200,
                           json_pack("{s:s, s:o, s:O?, s:O?, s:b}", "object", "list", "data", data,
                                     "first_id", first, "last_id", last, "has_more", more));
}
