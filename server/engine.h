/* server/engine.h — the supervisor of the long-lived `aha-engine serve`
 * child process: NDJSON requests on its stdin, events on its stdout, routed
 * by request id to per-request callbacks; restarts the child with backoff
 * when it dies, failing every request in flight with a clean error. Never
 * does tensor math and never parses model files. */
#ifndef AHA_SERVER_ENGINE_H
#define AHA_SERVER_ENGINE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct engine engine;

/* Called on the supervisor thread for each event of a request ("token",
 * "done", "error", ...); `ev` is borrowed. After an "error" or its last
 * "done" the request is forgotten and fn is not called again for it. fn
 * must not call engine_* functions. */
typedef void (*engine_event_fn)(void *user, json_t *ev);

/* `argv` is the engine command line (argv[0] the executable), borrowed and
 * copied; `load_opts` (stolen, may be NULL) holds extra fields for every
 * "load" request, e.g. {"kv_memory_mb":1024,"max_seqs":256}. Returns a new
 * supervisor (caller frees) or NULL. */
engine *engine_new(char *const *argv, json_t *load_opts);
/* `drafts` (stolen, may be NULL): {"<model id>": "<draft model directory>"}:
 * the "load" of such a model asks for speculative decoding with that draft
 * model ({"model": dir, "num_speculative_tokens": load_opts' or 4}).
 * Before engine_start. */
void engine_set_drafts(engine *e, json_t *drafts);
/* Starts the supervisor thread, which spawns the child. Returns 0 or -1. */
int engine_start(engine *e);
/* Stops the child and the thread, failing requests in flight; later
 * submits fail and cancels are no-ops. */
void engine_stop(engine *e);
/* Stops (when still running) and frees e. */
void engine_free(engine *e);

/* Sends `msg` (stolen; its "id" is set to `id`) for model `model_id` found
 * at `model_path`, loading the model first in this child when needed; fn
 * receives the events until an "error" or the `n_done`-th "done" (one per
 * sample of a generate with "n"). Returns 0, -1 with err filled when the
 * engine is not running or the id is in use, or -2 when the message is over
 * the engine's request line limit (1 MiB). */
int engine_submit(engine *e, const char *id, const char *model_id, const char *model_path,
                  json_t *msg, int n_done, engine_event_fn fn, void *user, char *err,
                  size_t errlen);
/* Forgets request `id` and asks the engine to stop it. Once this returns,
 * its fn is never called again. Unknown ids are ignored. */
void engine_cancel(engine *e, const char *id);
/* Asks the engine to drop a model (after DELETE /v1/models/{id}). */
void engine_unload(engine *e, const char *model_id);

/* True once the current child has announced itself ("ready", a protocol
 * this server speaks) and until it exits or the supervisor stops: what
 * /readyz reports. Submits are taken from the fork on (they wait in the
 * pipe), but a child still starting up (an interpreter, a backend's
 * initialisation: hundreds of ms on a loaded host) is not ready to serve. */
bool engine_ready(engine *e);
/* Samples (one per "done" awaited) in flight. */
int engine_inflight(engine *e);
/* Process id of the current child, or 0 (for tests and logs). */
int engine_pid(engine *e);

#endif
