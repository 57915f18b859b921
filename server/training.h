/* server/training.h — the training API (issue 7): datasets, reward specs,
 * pipelines and runs over REST, run events over SSE, runs as a PostgreSQL
 * job queue. Routes are dispatched from http.c; each handler checks the API
 * key itself (read scope for GET, admin to change anything).
 *
 *   datasets.c     POST/GET/DELETE /v1/datasets..., uploads streamed to disk
 *   rewards_api.c  /v1/rewards... (specs parsed by engine/rewards.c)
 *   pipelines.c    /v1/pipelines..., compiling a pipeline for the engine
 *   runs*.c        /v1/runs..., the queue, the scheduler, engine processes,
 *                  event ingest, SSE
 *   integrations.c MLflow and webhooks for a run */
#ifndef AHA_SERVER_TRAINING_H
#define AHA_SERVER_TRAINING_H

#include <jansson.h>
#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>

struct server;
struct http_req;

/* `rest` is the URL after the collection: "" or "/{id}[/...]". */
enum MHD_Result datasets_handle(struct MHD_Connection *c, struct http_req *hr,
                                const char *method, const char *rest);
enum MHD_Result rewards_handle(struct MHD_Connection *c, struct http_req *hr,
                               const char *method, const char *rest);
enum MHD_Result pipelines_handle(struct MHD_Connection *c, struct http_req *hr,
                                 const char *method, const char *rest);
enum MHD_Result runs_handle(struct MHD_Connection *c, struct http_req *hr, const char *method,
                            const char *rest);

/* POST /v1/datasets: called on the request's first callback (headers
 * only). Checks the key and the declared size; may queue an error reply.
 * Returns an MHD_Result. */
enum MHD_Result datasets_upload_begin(struct MHD_Connection *c, struct http_req *hr);
/* Each body chunk of POST /v1/datasets, instead of hr->body. Returns 0, or
 * -1 to drop the connection (out of memory); a bad body is remembered and
 * reported by datasets_handle at the end. */
int datasets_upload_chunk(struct http_req *hr, const char *data, size_t n);

/* Starts the scheduler (claims queued runs, supervises engine processes,
 * re-attaches or resumes runs left running) and creates the built-in
 * templates on first start. Returns 0, or -1 with err filled. */
int runs_start(struct server *srv, char *err, size_t errlen);
/* Stops claiming runs; engine processes keep running (a restarted server
 * re-attaches them). */
void runs_stop(struct server *srv);

#endif
