/* server/reasoning.h — splits generated text into reasoning and answer the
 * way vLLM's deepseek_r1 parser and DeepSeek's API do: a leading <think> is
 * stripped, text up to the first </think> is reasoning, the rest is content;
 * without </think> everything is reasoning. Works token by token, holding
 * back a partial tag ("</thi") until the next token decides it. */
#ifndef AHA_SERVER_REASONING_H
#define AHA_SERVER_REASONING_H

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

enum reasoning_state { REASONING_START, REASONING_THINK, REASONING_CONTENT };

struct reasoning_parser {
    enum reasoning_state state;
    char pend[16];   /* held-back bytes that may start a tag */
    size_t npend;
};

void reasoning_init(struct reasoning_parser *p);
/* For an output without a reasoning block (JSON mode): everything fed is
 * content. */
void reasoning_init_content(struct reasoning_parser *p);
/* Feeds one token's text; appends its reasoning part to *r and its answer
 * part to *c (either may stay unchanged). Returns true when the token
 * belongs to the reasoning (it arrived before </think> was complete). */
bool reasoning_feed(struct reasoning_parser *p, const char *text, size_t n, sbuf *r, sbuf *c);
/* End of generation: releases held-back bytes (to the reasoning). */
void reasoning_finish(struct reasoning_parser *p, sbuf *r, sbuf *c);

#endif
