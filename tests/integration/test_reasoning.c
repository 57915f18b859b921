/* tests/integration/test_reasoning.c — the streaming <think> splitter
 * (server/reasoning.c) against the one-shot rule of vLLM's deepseek_r1
 * parser, for many ways of cutting the same text into tokens: every single
 * cut, one byte per token, and random cuts. Exits non-zero on a mismatch. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../server/reasoning.h"

/* The one-shot rule: a leading <think> stripped; up to the first </think>
 * is reasoning, the rest content; no </think>: all reasoning. */
static void reference(const char *s, sbuf *r, sbuf *c)
{
    if (strncmp(s, "<think>", 7) == 0) s += 7;
    const char *e = strstr(s, "</think>");
    if (!e) {
        sbuf_puts(r, s);
        return;
    }
    sbuf_append(r, s, (size_t)(e - s));
    sbuf_puts(c, e + 8);
}

static int failures;

static void check(const char *s, const size_t *cuts, int ncuts, const char *how)
{
    struct reasoning_parser p;
    reasoning_init(&p);
    sbuf r = {0}, c = {0}, wr = {0}, wc = {0};
    sbuf_puts(&r, "");
    sbuf_puts(&c, "");
    sbuf_puts(&wr, "");
    sbuf_puts(&wc, "");
    size_t prev = 0, n = strlen(s);
    int reasoning_tokens = 0;
    for (int i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : n;
        reasoning_tokens += reasoning_feed(&p, s + prev, end - prev, &r, &c);
        prev = end;
    }
    reasoning_finish(&p, &r, &c);
    reference(s, &wr, &wc);
    if (strcmp(r.p, wr.p) || strcmp(c.p, wc.p)) {
        if (failures++ < 10)
            fprintf(stderr, "FAIL %s: %s\n  reasoning %s | want %s\n  content %s | want %s\n", how, s,
                    r.p, wr.p, c.p, wc.p);
    }
    sbuf_free(&r);
    sbuf_free(&c);
    sbuf_free(&wr);
    sbuf_free(&wc);
}

int main(void)
{
    const char *cases[] = {
        "<think>Let me think</think>\n\nThe answer is 4.",
        "Let me think</think>answer",           /* template prefilled <think> */
        "no tags at all",
        "<think>unterminated reasoning",
        "<think></think>",
        "</think>only content",
        "<thin>not a tag</thi>still reasoning</think>x",
        "<<think>>a</</think>>b",
        "a</think>b</think>c",                   /* only the first </think> splits */
        "<think><think>double</think>",
        "",
        "<th",
        "x</thi",
        "émoji 🤔</think>réponse",
    };
    unsigned seed = 1;
    int checks = 0;
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        const char *s = cases[k];
        size_t n = strlen(s);
        size_t cuts[256];
        check(s, NULL, 0, "whole");
        checks++;
        for (size_t i = 1; i < n; i++) {
            cuts[0] = i;
            check(s, cuts, 1, "one cut");
            checks++;
        }
        int m = 0;
        for (size_t i = 1; i < n && m < 256; i++) cuts[m++] = i;
        check(s, cuts, m, "one byte per token");
        checks++;
        for (int t = 0; t < 2000; t++) {
            m = 0;
            for (size_t i = 1; i < n && m < 256; i++) {
                seed = seed * 1103515245u + 12345u;
                if ((seed >> 16) % 3 == 0) cuts[m++] = i;
            }
            check(s, cuts, m, "random cuts");
            checks++;
        }
    }
    printf("reasoning: %d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
