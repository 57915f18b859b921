/* engine/cli_tokenizer.c — the `tokenize`, `detokenize` and `chat-template`
 * commands of aha-engine: thin wrappers that read stdin, call the tokenizer
 * or chat-template module and print the result. Each returns an exit code
 * (0 ok, 1 failure, 2 usage). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"
#include "cli.h"
#include "tokenizer.h"

#define CLI_MAX_INPUT ((size_t)1 << 30)   /* 1 GiB of stdin at most */

/* Reads all of f into a new NUL-terminated buffer (caller frees). */
static char *read_all(FILE *f, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    for (;;) {
        if (cap - n < 4096) {
            if (cap >= CLI_MAX_INPUT) {
                free(buf);
                return NULL;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

static void print_ids(const int32_t *ids, int n)
{
    putchar('[');
    for (int i = 0; i < n; i++) printf(i ? ",%d" : "%d", ids[i]);
    fputs("]\n", stdout);
}

static void print_json_string(const char *s, size_t n)
{
    json_t *j = json_stringn_nocheck(s, n);
    char *d = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    if (d) puts(d);
    free(d);
    json_decref(j);
}

/* Parses a JSON array of ids; returns their count (or -1 with msg). */
static long parse_ids(const char *text, size_t len, int32_t **ids, char *msg, size_t msglen)
{
    json_error_t je;
    json_t *a = json_loadb(text, len, JSON_DECODE_ANY, &je);
    *ids = NULL;
    if (!a || !json_is_array(a)) {
        if (a) snprintf(msg, msglen, "expected a JSON array of token ids");
        else snprintf(msg, msglen, "line %d column %d: %s", je.line, je.column, je.text);
        json_decref(a);
        return -1;
    }
    size_t n = json_array_size(a);
    *ids = malloc((n ? n : 1) * sizeof **ids);
    if (!*ids) {
        json_decref(a);
        snprintf(msg, msglen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(a, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > INT32_MAX) {
            snprintf(msg, msglen, "[%zu]: expected a non-negative integer id", i);
            free(*ids);
            *ids = NULL;
            json_decref(a);
            return -1;
        }
        (*ids)[i] = (int32_t)json_integer_value(v);
    }
    json_decref(a);
    return (long)n;
}

struct tok_opts {
    const char *tokenizer;
    bool jsonl, stream;
};

static int parse_tok_opts(const char *cmd, int argc, char **argv, struct tok_opts *o,
                          bool allow_stream)
{
    static char path[4096];
    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) {
            o->tokenizer = argv[++i];
        } else if (!strcmp(argv[i], "--model") && i + 1 < argc) {
            snprintf(path, sizeof path, "%s/tokenizer.json", argv[++i]);
            o->tokenizer = path;
        } else if (!strcmp(argv[i], "--jsonl")) {
            o->jsonl = true;
        } else if (allow_stream && !strcmp(argv[i], "--stream")) {
            o->stream = true;
        } else {
            fprintf(stderr, "%s: unknown or incomplete option \"%s\"\n", cmd, argv[i]);
            o->tokenizer = NULL;
            break;
        }
    }
    if (!o->tokenizer) {
        fprintf(stderr,
                "usage: aha-engine %s --tokenizer FILE | --model DIR [--jsonl]%s\n"
                "  --jsonl: one JSON %s per input line, one result per output line\n",
                cmd, allow_stream ? " [--stream]" : "",
                allow_stream ? "array of ids" : "string");
        return -1;
    }
    return 0;
}

int cli_tokenize(int argc, char **argv)
{
    struct tok_opts o;
    if (parse_tok_opts("tokenize", argc, argv, &o, false)) return 2;
    char err[1024];
    struct tokenizer *tok = tok_load(o.tokenizer, err, sizeof err);
    if (!tok) {
        fprintf(stderr, "tokenize: %s\n", err);
        return 1;
    }
    size_t len;
    char *in = read_all(stdin, &len);
    int rc = 0;
    if (!in) {
        fprintf(stderr, "tokenize: cannot read stdin (out of memory or over 1 GiB)\n");
        rc = 1;
    } else if (!o.jsonl) {
        int32_t *ids;
        int n = tok_encode(tok, in, len, &ids);
        if (n < 0) {
            fprintf(stderr, "tokenize: encoding failed\n");
            rc = 1;
        } else {
            print_ids(ids, n);
            free(ids);
        }
    } else {
        char *line = in;
        for (size_t lineno = 1; !rc && line < in + len; lineno++) {
            char *end = memchr(line, '\n', (size_t)(in + len - line));
            if (!end) end = in + len;
            json_error_t je;
            json_t *s = json_loadb(line, (size_t)(end - line), JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
            if (!json_is_string(s)) {
                fprintf(stderr, "tokenize: stdin line %zu: expected a JSON string\n", lineno);
                rc = 1;
            } else {
                int32_t *ids;
                int n = tok_encode(tok, json_string_value(s), json_string_length(s), &ids);
                if (n < 0) {
                    fprintf(stderr, "tokenize: stdin line %zu: encoding failed\n", lineno);
                    rc = 1;
                } else {
                    print_ids(ids, n);
                    free(ids);
                }
            }
            json_decref(s);
            line = end + 1;
        }
    }
    free(in);
    tok_free(tok);
    return rc;
}

/* Decodes ids, through the streaming decoder one id at a time when stream
 * is set; returns a new string (caller frees). */
static char *decode_ids(const struct tokenizer *tok, const int32_t *ids, size_t n, bool stream,
                        size_t *len)
{
    if (!stream) return tok_decode(tok, ids, n, len);
    struct tok_stream *st = tok_stream_new(tok);
    size_t cap = 64, k = 0;
    char *out = malloc(cap);
    for (size_t i = 0; st && out && i <= n; i++) {
        size_t m;
        const char *piece = i < n ? tok_stream_push(st, ids[i], &m) : tok_stream_finish(st, &m);
        if (!piece) break;
        if (k + m + 1 > cap) {
            while (k + m + 1 > cap) cap *= 2;
            char *no = realloc(out, cap);
            if (!no) break;
            out = no;
        }
        memcpy(out + k, piece, m);
        k += m;
        if (i == n) {
            out[k] = 0;
            *len = k;
            tok_stream_free(st);
            return out;
        }
    }
    tok_stream_free(st);
    free(out);
    return NULL;
}

int cli_detokenize(int argc, char **argv)
{
    struct tok_opts o;
    if (parse_tok_opts("detokenize", argc, argv, &o, true)) return 2;
    char err[1024];
    struct tokenizer *tok = tok_load(o.tokenizer, err, sizeof err);
    if (!tok) {
        fprintf(stderr, "detokenize: %s\n", err);
        return 1;
    }
    size_t len;
    char *in = read_all(stdin, &len);
    int rc = 0;
    if (!in) {
        fprintf(stderr, "detokenize: cannot read stdin\n");
        rc = 1;
    }
    char *line = in;
    for (size_t lineno = 1; !rc && line && line < in + len; lineno++) {
        char *end = o.jsonl ? memchr(line, '\n', (size_t)(in + len - line)) : NULL;
        if (!end) end = in + len;
        int32_t *ids;
        char msg[256];
        long n = parse_ids(line, (size_t)(end - line), &ids, msg, sizeof msg);
        if (n < 0) {
            fprintf(stderr, "detokenize: stdin%s%.0zu: %s\n", o.jsonl ? " line " : "",
                    o.jsonl ? lineno : 0, msg);
            rc = 1;
            break;
        }
        size_t tl;
        char *text = decode_ids(tok, ids, (size_t)n, o.stream, &tl);
        free(ids);
        if (!text) {
            fprintf(stderr, "detokenize: out of memory\n");
            rc = 1;
            break;
        }
        if (o.jsonl) print_json_string(text, tl);
        else fwrite(text, 1, tl, stdout);
        free(text);
        line = end + 1;
    }
    free(in);
    tok_free(tok);
    return rc;
}

int cli_chat_template(int argc, char **argv)
{
    const char *model = NULL, *name = NULL;
    struct chat_opts opts = {.add_generation_prompt = true, .prefill_think = -1};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
        else if (!strcmp(argv[i], "--template") && i + 1 < argc) name = argv[++i];
        else if (!strcmp(argv[i], "--no-generation-prompt")) opts.add_generation_prompt = false;
        else if (!strcmp(argv[i], "--think")) opts.prefill_think = 1;
        else if (!strcmp(argv[i], "--no-think")) opts.prefill_think = 0;
        else if (!strcmp(argv[i], "--disable-thinking")) opts.disable_thinking = true;
        else {
            model = NULL;
            name = NULL;
            break;
        }
    }
    if (!model && !name) {
        fprintf(stderr,
                "usage: aha-engine chat-template --model DIR | --template NAME\n"
                "         [--template NAME] [--no-generation-prompt] [--think | --no-think]\n"
                "         [--disable-thinking]\n"
                "  reads a JSON array of {\"role\",\"content\"} messages on stdin, or an object\n"
                "  {\"messages\": [...], \"tools\": [...]} (OpenAI's tool definitions; qwen3)\n"
                "  NAME: chatml, qwen2.5, qwen3, llama3, deepseek-r1, deepseek-v3, r1-zero, plain\n"
                "  --think/--no-think: prefill \"<think>\\n\" or not (default: the template's)\n"
                "  --disable-thinking: an empty <think></think> block (Qwen3 enable_thinking=False)\n");
        return 2;
    }
    char err[1024];
    enum chat_template_kind kind;
    if (chat_template_select(name, model, &kind, err, sizeof err)) {
        fprintf(stderr, "chat-template: %s\n", err);
        return name ? 2 : 1;
    }
    size_t len;
    char *in = read_all(stdin, &len);
    if (!in) {
        fprintf(stderr, "chat-template: cannot read stdin\n");
        return 1;
    }
    json_error_t je;
    json_t *msgs = json_loadb(in, len, 0, &je);
    free(in);
    if (!msgs) {
        fprintf(stderr, "chat-template: stdin: line %d column %d: %s\n", je.line, je.column, je.text);
        return 1;
    }
    if (json_is_object(msgs)) opts.tools = json_object_get(msgs, "tools");
    if (opts.tools && !json_is_array(opts.tools)) {
        fprintf(stderr, "chat-template: stdin: \"tools\" must be an array\n");
        json_decref(msgs);
        return 1;
    }
    char *out = chat_template_render_json(
        kind, json_is_object(msgs) ? json_object_get(msgs, "messages") : msgs, &opts, err, sizeof err);
    json_decref(msgs);
    if (!out) {
        fprintf(stderr, "chat-template: %s\n", err);
        return 1;
    }
    fputs(out, stdout);
    free(out);
    return 0;
}
