/* server/runs_internal.h — what the runs modules share: compiling a POST
 * /v1/runs into an engine spec (runs_compile.c), the scheduler and engine
 * processes (runs_sched.c), event ingest (runs_ingest.c) and the built-in
 * templates (runs_templates.c). The HTTP routes are in runs.c. Not for
 * other modules: they see training.h. */
#ifndef AHA_SERVER_RUNS_INTERNAL_H
#define AHA_SERVER_RUNS_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "server.h"

#define RUNS_NAME_MAX 64           /* run names: [A-Za-z0-9._-], a model id component */
#define RUNS_TAGS_MAX 32
#define RUNS_MAX_RUNS_DEFAULT 1    /* engine processes per server (--max-runs) */
#define RUNS_LEASE_S 10            /* a claim not renewed for this long belongs to a dead server */
#define RUNS_HEARTBEAT_S 1.0       /* lease renewal and cancel poll */
#define RUNS_FLUSH_S 0.1           /* ingest: a batch waits at most this long */
#define RUNS_BATCH_MAX 4096        /* ingest: events per transaction */
#define RUNS_QUEUE_MAX 65536       /* ingest: events held per run before the reader waits */
#define RUNS_AUTO_RESUMES_MAX 3    /* engine crashes an auto_resume run survives */
#define RUNS_LIST_MAX 100
#define RUNS_STOP_WAIT_S 10.0      /* shutdown: engines' time to checkpoint and exit */

/* Set by main.c before runs_start (0 = default). */
extern int runs_max_runs;

/* A compiled run, ready for INSERT. All references are new (caller frees
 * with runs_compiled_free). */
struct runs_compiled {
    char pipeline_id[64];
    json_t *spec;          /* for aha-engine train: references are data-dir paths */
    json_t *dataset_ids;   /* array of strings */
    char base_model[512];  /* as the client named it ("" when none) */
};
void runs_compiled_free(struct runs_compiled *rc);

/* Compiles body (POST /v1/runs, borrowed) into rc. Returns 0, or an HTTP
 * status (400/404/409/422/503) with err naming the problem and *param the
 * request field at fault. */
int runs_compile(struct server *srv, const json_t *body, struct runs_compiled *rc,
                 const char **param, char *err, size_t errlen);

/* True when name can be a run name (and so a model id component). */
bool runs_name_valid(const char *name);

/* Records a status change of a run that no engine is running (queued ->
 * cancelled, failed/cancelled -> queued) as a `status` event, atomically
 * with the runs row, when the run's status is one of `from` (a PostgreSQL
 * text[] literal). Returns 1 changed, 0 not in `from`, -1 error. */
int runs_status_set(struct server *srv, const char *run_id, const char *from, const char *status,
                    const char *message, char *err, size_t errlen);

/* Scheduler (runs_sched.c). Wakes the claim loop (a run was queued). */
void runs_sched_wake(void);
/* Sends SIGTERM to the engine of run_id when this server runs it; returns
 * whether it did. Other servers notice cancel_requested within a heartbeat. */
bool runs_sched_cancel(const char *run_id);

/* ---- ingest (runs_ingest.c): one per engine process. A bounded queue
 * between the thread reading the engine's stdout and a writer thread with
 * its own connection that inserts batches (one transaction each). ---- */
struct runs_ingest;
struct integrations;

/* The writer's view of the run; strings are copied. */
struct runs_ingest *runs_ingest_new(struct server *srv, const char *run_id, const char *run_name,
                                    const char *instance, struct integrations *integ);
/* Queues one engine event (stolen). Blocks while the queue is full: never
 * drops. */
void runs_ingest_event(struct runs_ingest *in, json_t *ev);
/* Queues a status change; `final` ends the run's claim (succeeded, failed,
 * cancelled, or queued again with resume_from = its last checkpoint). */
void runs_ingest_status(struct runs_ingest *in, const char *status, const char *message,
                        bool requeue_resume, bool count_auto_resume);
/* Flags the writer raises from the database: cancel was requested (by any
 * server), or this server lost its claim. */
bool runs_ingest_cancel_requested(struct runs_ingest *in);
bool runs_ingest_lost(struct runs_ingest *in);
/* Writes everything queued, then stops the writer and frees. */
void runs_ingest_free(struct runs_ingest *in);

/* Makes a succeeded stage's output servable as model <run name>/<stage>. */
void runs_stage_model_link(struct server *srv, const char *run_name, const char *stage,
                           const char *path);
/* Adds the dataset a generate or rejection_sample stage wrote (its JSONL
 * at path) to the catalog as an sft dataset named <run name>/<stage>, and
 * records its id in the stage's info (dataset_id). Failures are logged. */
void runs_stage_dataset_import(struct server *srv, const char *run_id, const char *run_name,
                               const char *stage, const char *path);

/* Built-in templates (runs_templates.c), idempotent across restarts and
 * servers. Returns 0, or -1 with err filled (logged; not fatal). */
int runs_templates_ensure(struct server *srv, char *err, size_t errlen);

#endif
