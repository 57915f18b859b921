/* server/training.h — the training API (issue 7): datasets, reward specs,
 * pipelines and runs over REST, run events over SSE, runs as a PostgreSQL
 * job queue. Routes are dispatched from http.c; each handler checks the API
 * key itself (read scope for GET, admin to change anything).
 *
 *   datasets.c     POST/GET/DELETE /v1/datasets..., uploads streamed to disk
 *   rewards_api.c  /v1/rewards... (specs parsed by engine/rewards.c)
 *   pipelines.c    /v1/pipelines..., definitions checked against the catalog
 *                  and by `aha-engine train --check`
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

/* GET /v1/runs/{id}/events (runs_sse.c): replays run_events after
 * Last-Event-ID / ?after= and continues live (LISTEN aha_run_events) until
 * the run's final status event. Called by runs_handle. */
enum MHD_Result runs_sse_handle(struct MHD_Connection *c, struct http_req *hr,
                                const char *run_id);
/* Starts and stops the LISTEN connection that wakes SSE streams. */
int runs_sse_start(struct server *srv, char *err, size_t errlen);
void runs_sse_stop(void);

/* POST /v1/datasets: called on the request's first callback (headers
 * only). Checks the key and the declared size; may queue an error reply.
 * Returns an MHD_Result. */
enum MHD_Result datasets_upload_begin(struct MHD_Connection *c, struct http_req *hr);
/* Each body chunk of POST /v1/datasets, instead of hr->body. Returns 0, or
 * -1 to drop the connection (out of memory); a bad body is remembered and
 * reported by datasets_handle at the end. */
int datasets_upload_chunk(struct http_req *hr, const char *data, size_t n);

/* ---- the catalog, for runs and the built-in templates (datasets.c,
 * rewards_api.c, pipelines.c) ---- */

/* Stores the JSONL file at `path` as a dataset of `purpose` (pretrain, sft,
 * rl, eval) named `name`, exactly as an upload of its bytes would (same
 * validation, same id for the same bytes). Writes its id to id (64 bytes).
 * Returns 0, or -1 with err filled. */
int datasets_import_file(struct server *srv, const char *path, const char *purpose,
                         const char *name, char *id, char *err, size_t errlen);
/* A dataset's file relative to the data directory (e.g.
 * "datasets/<sha256>.jsonl") into path (4096 bytes) and its purpose into
 * purpose (16 bytes; may be NULL). Returns 1 found, 0 unknown id, -1
 * database error (err filled). */
int datasets_lookup(struct server *srv, const char *id, char *path, char *purpose, char *err,
                    size_t errlen);
/* A stored reward spec by id as a new JSON reference in *spec. Returns 1,
 * 0 unknown id, -1 database error (err filled). */
int rewards_lookup(struct server *srv, const char *id, json_t **spec, char *err, size_t errlen);
/* Stores a reward spec (validated; errors name the JSON path) and writes
 * its id (64 bytes); a stored reward with an equal spec (as jsonb) is
 * reused, so templates created at every start do not pile up. Returns 0,
 * or -1 with err filled. */
int rewards_create(struct server *srv, const json_t *spec, char *id, char *err, size_t errlen);

/* A stored pipeline by id or name (pipelines.c): its id into id (64
 * bytes) and its definition as a new JSON reference in *spec. Returns 1
 * found, 0 unknown, -1 database error (err filled). */
int pipelines_lookup(struct server *srv, const char *id_or_name, char *id, json_t **spec,
                     char *err, size_t errlen);
/* Validates (names, DAG, catalog references, then `aha-engine train
 * --check`) and stores a pipeline definition (borrowed); writes its id (64
 * bytes). A builtin template may name models that arrive later and is
 * idempotent by name: when one of that name exists its id is returned.
 * Returns 0, or -1 with err filled. */
int pipelines_create(struct server *srv, const json_t *spec, bool builtin, char *id, char *err,
                     size_t errlen);

/* ---- integrations.c: a run's MLflow tracking and signed status webhook.
 * Calls never block on the network: deliveries run on a background
 * thread with retries. ---- */

struct integrations;
/* Validates a run's "integrations" object; errors name the path
 * ("integrations.mlflow.tracking_uri: expected a string"). NULL is valid. */
int integrations_validate(const json_t *cfg, char *err, size_t errlen);
/* Starts delivering for one run. `state` is what integrations_state
 * returned before a server restart (the MLflow run id), or NULL for a new
 * run; params are logged to MLflow once. Returns NULL when cfg is NULL or
 * has nothing configured. */
struct integrations *integrations_open(const json_t *cfg, const json_t *state, const char *run_id,
                                       const char *run_name, const json_t *params);
/* State to persist with the run (new reference, or NULL when none yet):
 * {"mlflow_run_id","mlflow_experiment_id"}, known once MLflow has answered
 * runs/create (poll it, e.g. with each event, and store it when it first
 * appears; a restart without it finds the run again by its aha.run_id
 * tag, at the cost of a search). */
json_t *integrations_state(struct integrations *in);
/* One metric event's values (object of numbers) at a step. */
void integrations_metrics(struct integrations *in, const char *stage, long step,
                          const json_t *values, double unix_ts);
/* A status change (queued, running, succeeded, failed, cancelled). */
void integrations_status(struct integrations *in, const char *status, const char *message);
/* Flushes what is queued (waiting at most timeout_s) and frees. */
void integrations_close(struct integrations *in, double timeout_s);
/* A copy of a run's "integrations" with its secrets (mlflow.token,
 * mlflow.password, webhook.secret) replaced by "***", for replies (new
 * reference; NULL for NULL). */
json_t *integrations_redact(const json_t *cfg);
/* Delivery counters per configured sink, {"mlflow":{"delivered","failed",
 * "dropped","requests","retries"},"webhook":{...}} (new reference). */
json_t *integrations_stats(struct integrations *in);
/* integrations_close that also returns the final counters (as
 * integrations_stats; new reference), e.g. to store with the run. */
json_t *integrations_close_stats(struct integrations *in, double timeout_s);

/* Starts the scheduler (claims queued runs, supervises engine processes,
 * re-attaches or resumes runs left running) and creates the built-in
 * templates on first start. Returns 0, or -1 with err filled. */
int runs_start(struct server *srv, char *err, size_t errlen);
/* Stops claiming runs; each running engine is asked to stop at a safe
 * point (SIGTERM: it checkpoints) and its run goes back to the queue to
 * resume from that checkpoint, here after a restart or on another server. */
void runs_stop(struct server *srv);
/* Engine processes at once per server (--max-runs; 0 = 1). */
extern int runs_max_runs;

#endif
