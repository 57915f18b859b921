/* server/catalog.h — what the catalog routes (datasets.c, rewards_api.c,
 * pipelines.c) share: integer query arguments and one page of a
 * newest-first list in OpenAI's list shape. Not used outside them. */
#ifndef AHA_SERVER_CATALOG_H
#define AHA_SERVER_CATALOG_H

#include <stdbool.h>

#include "server.h"

#define CATALOG_LIST_DEFAULT 20
#define CATALOG_LIST_MAX 100

/* Query argument `key` as an integer in [lo, hi] into *out (left as is
 * when absent). Returns false after queueing a 400 (*ret). */
bool catalog_arg_long(struct MHD_Connection *c, struct http_req *hr, const char *key, long lo,
                      long hi, long *out, enum MHD_Result *ret);

/* Runs `sql`, whose rows are one JSON object text each and whose last
 * parameter ($n) is the row limit (the page size plus one, filled here
 * from ?limit), and replies {"object":"list","data","first_id","last_id",
 * "has_more"}. params[n-1] is overwritten. */
enum MHD_Result catalog_reply_page(struct MHD_Connection *c, struct http_req *hr, const char *sql,
                                   int n, const char **params);

/* Replies for a failed query: r == NULL is 503 (err says why), else 500
 * (logged; r is cleared). */
enum MHD_Result catalog_reply_db_error(struct MHD_Connection *c, struct http_req *hr,
                                       PGresult *r, const char *err);

#endif
