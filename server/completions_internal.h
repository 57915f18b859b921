/* server/completions_internal.h — what the completions files share: the
 * state of one completion request (struct gen_req, one gen_choice per
 * choice) and the request parser (completions_parse.c) and response
 * shaper (completions_format.c) that completions.c drives. Private to
 * those three files. */
#ifndef AHA_SERVER_COMPLETIONS_INTERNAL_H
#define AHA_SERVER_COMPLETIONS_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>

#include "models.h"
#include "reasoning.h"
#include "server.h"
#include "tool_calls.h"

/* One choice (sample) of a request. Guarded by its request's mu. */
struct gen_choice {
    struct gen_req *g;
    int index;
    int prompt_index;
    char engine_id[96];
    bool done;
    struct reasoning_parser rp;
    sbuf reasoning, content; /* chat: split output; completions: content only */
    struct tool_parser tp;   /* chat with tools: the calls in content ... */
    sbuf shown;              /* ... and the content without them */
    char finish_reason[32];
    long prompt_tokens, completion_tokens, reasoning_tokens, tokens_seen;
    long cached_tokens;             /* prompt tokens the engine's prefix cache held */
    json_t *logprobs;        /* chat: [items]; completions: {tokens,...} */
    json_t *pending_lp;      /* chat stream: items not yet sent */
    json_t *prompt_logprobs; /* echo: the engine's prompt_logprobs event */
    double t_last;
};

/* One completion request, owned by its http_req (freed when the HTTP
 * request ends). Once submitted, the engine's supervisor thread, the
 * heartbeat thread and MHD's threads share it: every field below is read
 * and written under mu (lock order: engine lock, then mu). */
struct gen_req {
    pthread_mutex_t mu;
    struct server *srv;
    struct MHD_Connection *conn;
    bool chat, stream, include_usage, include_reasoning, echo;
    bool no_reasoning;       /* the prompt closes the reasoning block (JSON mode,
                              * a forced call, enable_thinking false): the
                              * output is all answer (content) */
    int tools;               /* chat: 0 no tools (or tool_choice none), 1 auto (calls
                              * parsed from <tool_call> blocks), 2 one forced call */
    int logprobs; /* -1: none; else number of alternatives */
    bool suspended, finished, traced;
    bool ready_to_start; /* stream: an event came (or the wait ran out) */
    bool started;        /* stream: 200 and the SSE body are on their way */
    int n_choices, n_done;
    int n_per_prompt; /* n: choices of prompt p are p*n .. p*n+n-1 */
    struct gen_choice *choices;
    char id[64];
    char model[MODELS_ID_MAX + 1];
    long long created;
    double t0, t_first, last_write;
    double t_submit, t_done; /* engine time: first generate sent .. last event */
    double last_event;       /* the engine's last event (or the submit) */
    bool counted_running;
    sbuf out; /* SSE bytes not yet sent */
    int err_status;
    char err_msg[512];
    char err_code[64];
    json_t *params;   /* for traces */
    json_t *prompts;  /* completions: array of prompts (string or ids) */
    json_t *messages; /* chat: sanitized messages */
    long long key_id;
    struct gen_req *hb_prev, *hb_next; /* live list, under hb_mu (completions.c) */
};

/* A validation failure: HTTP status, the request field at fault, OpenAI
 * error code and message. */
struct verr {
    int status;
    const char *param;       /* static, or pbuf */
    const char *code;
    char msg[512];
    char pbuf[96];           /* a param made up at the time ("a.b") */
};

/* ---- completions_parse.c: OpenAI request -> engine "generate" ---------- */

/* Fills v; returns -1 (for `return cpl_fail(...)`). */
int cpl_fail(struct verr *v, int status, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Validates the sampling fields of `body` (borrowed), sets g's options and
 * g->params; returns a new engine "generate" message without its input, n
 * in *n_out, or NULL with v filled. */
json_t *cpl_parse_params(json_t *body, struct gen_req *g, const struct models_info *m,
                         long long *n_out, struct verr *v);
/* messages -> [{role, content}] (reasoning_content dropped, text parts
 * joined); a new reference or NULL with v filled. */
json_t *cpl_parse_messages(json_t *msgs, struct verr *v);
/* prompt -> array of prompts (strings or arrays of token ids); a new
 * reference or NULL with v filled. */
json_t *cpl_parse_prompts(json_t *p, struct verr *v);

/* ---- completions_format.c: OpenAI responses, chunks, traces ------------ */

/* A chunk object with id/object/created/model (new reference). */
json_t *cpl_chunk_new(struct gen_req *g);
/* Appends "data: <json>\n\n" to g->out (obj stolen). */
void cpl_sse_event(struct gen_req *g, json_t *obj);
/* A chat chunk for one choice (delta stolen); finish may be NULL. */
void cpl_sse_chat_delta(struct gen_req *g, struct gen_choice *ch, json_t *delta,
                        const char *finish);
/* A completions chunk (lp borrowed, may be NULL; finish may be NULL). */
void cpl_sse_text(struct gen_req *g, struct gen_choice *ch, const char *text, size_t n, json_t *lp,
                  const char *finish);
/* usage over all choices (new reference). */
json_t *cpl_usage_json(struct gen_req *g);
/* A token object's text, or vLLM's "token_id:N" form written into buf. */
const char *cpl_token_text(json_t *t, char *buf, size_t size);
/* ev["top_logprobs"] as chat items (array) or a legacy map (new reference). */
json_t *cpl_top_logprobs(json_t *ev, bool chat);
/* One chat logprobs.content item for a token event (new reference). */
json_t *cpl_chat_logprob(json_t *ev, const char *text);
/* Legacy {tokens, token_logprobs, top_logprobs, text_offset} (new). */
json_t *cpl_legacy_logprobs_new(void);
/* Appends one token; lp borrowed, tops stolen (may be NULL). */
void cpl_legacy_logprobs_add(json_t *acc, const char *text, json_t *lp, json_t *tops, long offset);
/* The non-streamed response body (new reference). */
json_t *cpl_response_json(struct gen_req *g);
/* The trace row of one choice for traces_enqueue (new reference). */
json_t *cpl_trace_json(struct gen_req *g, struct gen_choice *ch, double now);

#endif
