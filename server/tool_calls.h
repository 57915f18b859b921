/* server/tool_calls.h — OpenAI tool_calls from generated content. With
 * tool_choice auto the model writes Qwen's (Hermes') blocks,
 * <tool_call>{"name": ..., "arguments": {...}}</tool_call>, among its text,
 * as vLLM's hermes parser reads them; with tool_choice required or a named
 * function the engine makes the whole content one {"name", "arguments"}
 * object. Works token by token like reasoning.h: text that may begin a
 * block is held back until it is decided, and a block that is not a call
 * (bad JSON, no name) goes back to the content as it was. */
#ifndef AHA_SERVER_TOOL_CALLS_H
#define AHA_SERVER_TOOL_CALLS_H

#include <jansson.h>
#include <stdbool.h>

#include "util.h"

struct tool_parser {
    bool whole;      /* the whole content is one call (forced) */
    bool in_call;    /* inside <tool_call> */
    sbuf held;       /* bytes not released: a partial tag, or the open block */
    json_t *calls;   /* the calls so far, OpenAI's {"id", "type", "function"} */
};

void tool_parser_init(struct tool_parser *p, bool whole);
void tool_parser_free(struct tool_parser *p);
/* Feeds content text: appends what is plain content to *c; calls this
 * text completes go on p->calls (and on *fresh, an array, when not NULL). */
void tool_parser_feed(struct tool_parser *p, const char *text, size_t n, sbuf *c, json_t *fresh);
/* End of generation: a forced call is parsed (if it does not parse, its
 * text is content); an unterminated block goes back to the content. */
void tool_parser_finish(struct tool_parser *p, sbuf *c, json_t *fresh);

#endif
