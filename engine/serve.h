/* engine/serve.h — `aha-engine serve`: the engine side of the NDJSON
 * protocol of api/engine-protocol.md (load/unload models, generate with
 * streamed token events, cancel, stats). Reads requests from a descriptor,
 * writes events to a stream; several models resident, each with its own
 * generation engine and KV cache. Not here: HTTP (server/). */
#ifndef AHA_SERVE_H
#define AHA_SERVE_H

#include <stdio.h>

#define SERVE_PROTOCOL 1            /* api/engine-protocol.md version */
#define SERVE_MAX_LINE (1 << 20)    /* bytes of one request line */
#define SERVE_MAX_MODELS 8          /* models resident at once */

/* Serves requests read from in_fd until end of input, then finishes the
 * running requests and returns 0 (or -1 when the output cannot be
 * written). Bad requests get error events; they never end the loop. */
int serve_run(int in_fd, FILE *out);

#endif
