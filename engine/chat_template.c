/* engine/chat_template.c — the chat formats of chat_template.h, each a
 * transcription of its Hugging Face Jinja template for plain messages
 * (system/user/assistant; with qwen3 also tool definitions, calls and
 * results), plus recognition of those templates in a model directory. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"
#include "strbuf.h"

static const char *const NAMES[] = {
    [CHAT_TEMPLATE_CHATML] = "chatml",
    [CHAT_TEMPLATE_QWEN2_5] = "qwen2.5",
    [CHAT_TEMPLATE_QWEN3] = "qwen3",
    [CHAT_TEMPLATE_LLAMA3] = "llama3",
    [CHAT_TEMPLATE_DEEPSEEK_R1] = "deepseek-r1",
    [CHAT_TEMPLATE_DEEPSEEK_V3] = "deepseek-v3",
    [CHAT_TEMPLATE_R1_ZERO] = "r1-zero",
    [CHAT_TEMPLATE_PLAIN] = "plain",
};
#define N_KINDS (sizeof NAMES / sizeof NAMES[0])

/* DeepSeek-R1 paper, Table 1. */
static const char R1_ZERO_PREAMBLE[] =
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning "
    "process here </think> <answer> answer here </answer>.";

static const char QWEN2_5_SYSTEM[] =
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

int chat_template_from_name(const char *name, enum chat_template_kind *kind)
{
    for (size_t i = 0; i < N_KINDS; i++)
        if (!strcmp(name, NAMES[i])) {
            *kind = (enum chat_template_kind)i;
            return 0;
        }
    return -1;
}

const char *chat_template_name(enum chat_template_kind kind)
{
    return (size_t)kind < N_KINDS ? NAMES[kind] : "?";
}

int chat_template_recognize(const char *j, enum chat_template_kind *kind)
{
    if (strstr(j, "<\xEF\xBD\x9CUser\xEF\xBD\x9C>")) {     /* <｜User｜> */
        *kind = strstr(j, "<think>") ? CHAT_TEMPLATE_DEEPSEEK_R1 : CHAT_TEMPLATE_DEEPSEEK_V3;
    } else if (strstr(j, "<|start_header_id|>")) {
        *kind = CHAT_TEMPLATE_LLAMA3;
    } else if (strstr(j, "<|im_start|>")) {
        if (strstr(j, "reasoning_content") || strstr(j, "<think>")) *kind = CHAT_TEMPLATE_QWEN3;
        else if (strstr(j, QWEN2_5_SYSTEM)) *kind = CHAT_TEMPLATE_QWEN2_5;
        else *kind = CHAT_TEMPLATE_CHATML;
    } else if (strstr(j, "A conversation between User and Assistant")) {
        *kind = CHAT_TEMPLATE_R1_ZERO;
    } else {
        return -1;
    }
    return 0;
}

/* ---- detection ---- */

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    while (b) {
        size_t r = fread(b + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
        if (cap - n < 2) {
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (b) b[n] = 0;
    return b;
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen) vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* A "chat_template" member: a string, or a list of {"name","template"} of
 * which "default" is used. */
static const char *template_member(const json_t *root)
{
    const json_t *t = json_object_get(root, "chat_template");
    if (json_is_string(t)) return json_string_value(t);
    if (json_is_array(t)) {
        for (size_t i = 0; i < json_array_size(t); i++) {
            const json_t *e = json_array_get(t, i);
            if (json_is_string(json_object_get(e, "name")) &&
                !strcmp(json_string_value(json_object_get(e, "name")), "default") &&
                json_is_string(json_object_get(e, "template")))
                return json_string_value(json_object_get(e, "template"));
        }
    }
    return NULL;
}

int chat_template_detect(const char *dir, enum chat_template_kind *kind, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/chat_template.name", dir);
    char *s = read_file(path);
    if (s) {
        size_t n = strlen(s);
        while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ')) s[--n] = 0;
        int rc = chat_template_from_name(s, kind);
        if (rc) fail(err, errlen, "%s: unknown template name \"%.100s\"", path, s);
        free(s);
        return rc;
    }
    snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
    s = read_file(path);
    if (s) {
        int rc = chat_template_recognize(s, kind);
        free(s);
        if (rc)
            return fail(err, errlen, "%s: not a chat template aha implements "
                        "(put a name in %s/chat_template.name)", path, dir);
        return 0;
    }
    const char *files[] = {"tokenizer_config.json", "chat_template.json"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        fclose(f);
        json_error_t je;
        /* tokenizer_config.json may hold integers beyond 64 bits (Llama 3's
         * model_max_length). */
        json_t *root = json_load_file(path, JSON_DECODE_INT_AS_REAL, &je);
        if (!root)
            return fail(err, errlen, "%s: line %d column %d: %s", path, je.line, je.column, je.text);
        const char *t = template_member(root);
        int rc = 0;
        if (t && chat_template_recognize(t, kind))
            rc = fail(err, errlen, "%s: chat_template: not a chat template aha implements "
                      "(put a name in %s/chat_template.name)", path, dir);
        json_decref(root);
        if (t || rc) return rc;
    }
    *kind = CHAT_TEMPLATE_R1_ZERO;
    return 0;
}

int chat_template_select(const char *name, const char *model_dir, enum chat_template_kind *kind,
                         char *err, size_t errlen)
{
    if (!name) return chat_template_detect(model_dir, kind, err, errlen);
    if (chat_template_from_name(name, kind) == 0) return 0;
    char known[256] = "";
    size_t off = 0;
    for (size_t i = 0; i < N_KINDS && off < sizeof known; i++)
        off += (size_t)snprintf(known + off, sizeof known - off, "%s%s", i ? ", " : "", NAMES[i]);
    return fail(err, errlen, "unknown chat template \"%s\" (%s)", name, known);
}

/* ---- rendering ---- */

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Python str.strip() (ASCII whitespace: what Jinja's trim sees in practice). */
static void put_trimmed(struct strbuf *b, const char *s)
{
    size_t n = strlen(s), a = 0;
    while (a < n && is_ws(s[a])) a++;
    while (n > a && is_ws(s[n - 1])) n--;
    strbuf_put(b, s + a, n - a);
}

/* s with the characters c stripped from the start (lstrip), end (rstrip). */
static void strip_char(const char **s, size_t *n, char c, bool left, bool right)
{
    while (left && *n && **s == c) {
        (*s)++;
        (*n)--;
    }
    while (right && *n && (*s)[*n - 1] == c) (*n)--;
}

/* Last occurrence of needle in s[0..n), or NULL. */
static const char *last_strstr(const char *s, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = n >= k ? n - k + 1 : 0; i-- > 0;)
        if (!memcmp(s + i, needle, k)) return s + i;
    return NULL;
}

/* What follows the generation prompt (see struct chat_opts). */
static void put_think(struct strbuf *b, const struct chat_opts *o, bool think_by_default)
{
    if (o->disable_thinking) strbuf_puts(b, "<think>\n\n</think>\n\n");
    else if (o->prefill_think == 1 || (o->prefill_think < 0 && think_by_default))
        strbuf_puts(b, "<think>\n");
}

/* s (n bytes) as Python's json.dumps(s, ensure_ascii=False) writes it. */
static void put_json_string(struct strbuf *b, const char *s, size_t n)
{
    strbuf_puts(b, "\"");
    for (size_t i = 0; i < n; i++) {
        const unsigned char c = (unsigned char)s[i];
        const char *e = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n" : c == '\r' ? "\\r"
                      : c == '\t' ? "\\t" : c == '\b' ? "\\b" : c == '\f' ? "\\f" : NULL;
        char u[8];
        if (!e && c < 0x20) snprintf(u, sizeof u, "\\u%04x", c), e = u;
        if (e) strbuf_puts(b, e);
        else strbuf_put(b, s + i, 1);
    }
    strbuf_puts(b, "\"");
}

/* x as Python's repr(float): the shortest digits that read back as x, in
 * fixed notation from 1e-4 up to 1e16, else as d.ddde+XX. */
static void put_py_float(struct strbuf *b, double x)
{
    if (isnan(x) || isinf(x)) {
        strbuf_puts(b, isnan(x) ? "NaN" : x > 0 ? "Infinity" : "-Infinity");
        return;
    }
    char e[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(e, sizeof e, "%.*e", p - 1, x);
        if (strtod(e, NULL) == x) break;
    }
    /* e: [-]d[.ddd]e(+|-)XX */
    const char *q = e;
    if (*q == '-') strbuf_puts(b, "-"), q++;
    char digits[24];
    int nd = 0;
    for (; *q != 'e'; q++)
        if (*q != '.') digits[nd++] = *q;
    const int exp = atoi(q + 1), decpt = exp + 1;
    if (decpt <= -4 || decpt > 16) {
        strbuf_put(b, digits, 1);
        if (nd > 1) strbuf_puts(b, "."), strbuf_put(b, digits + 1, (size_t)nd - 1);
        char t[16];
        snprintf(t, sizeof t, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
        strbuf_puts(b, t);
    } else if (decpt <= 0) {
        strbuf_puts(b, "0.");
        for (int i = 0; i < -decpt; i++) strbuf_puts(b, "0");
        strbuf_put(b, digits, (size_t)nd);
    } else if (decpt >= nd) {
        strbuf_put(b, digits, (size_t)nd);
        for (int i = nd; i < decpt; i++) strbuf_puts(b, "0");
        strbuf_puts(b, ".0");
    } else {
        strbuf_put(b, digits, (size_t)decpt);
        strbuf_puts(b, ".");
        strbuf_put(b, digits + decpt, (size_t)(nd - decpt));
    }
}

/* j as transformers' tojson filter writes it (Python's json.dumps with
 * ensure_ascii=False): ", " and ": " between items, keys in order. */
static void put_json(struct strbuf *b, const json_t *j)
{
    char t[32];
    size_t i;
    const char *k;
    json_t *v;
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        strbuf_puts(b, "{");
        i = 0;
        json_object_foreach((json_t *)j, k, v) {
            if (i++) strbuf_puts(b, ", ");
            put_json_string(b, k, strlen(k));
            strbuf_puts(b, ": ");
            put_json(b, v);
        }
        strbuf_puts(b, "}");
        break;
    case JSON_ARRAY:
        strbuf_puts(b, "[");
        json_array_foreach(j, i, v) {
            if (i) strbuf_puts(b, ", ");
            put_json(b, v);
        }
        strbuf_puts(b, "]");
        break;
    case JSON_STRING:
        put_json_string(b, json_string_value(j), json_string_length(j));
        break;
    case JSON_INTEGER:
        snprintf(t, sizeof t, "%" JSON_INTEGER_FORMAT, json_integer_value(j));
        strbuf_puts(b, t);
        break;
    case JSON_REAL:
        put_py_float(b, json_real_value(j));
        break;
    case JSON_TRUE: strbuf_puts(b, "true"); break;
    case JSON_FALSE: strbuf_puts(b, "false"); break;
    default: strbuf_puts(b, "null"); break;
    }
}

static bool role_is(const struct chat_msg *m, const char *r)
{
    return !strcmp(m->role, r);
}

static char *bad_role(const struct chat_msg *msgs, size_t i, enum chat_template_kind kind,
                      struct strbuf *b, char *err, size_t errlen)
{
    free(b->p);
    fail(err, errlen, "messages[%zu].role: \"%s\" is not supported by the %s template "
         "(system, user, assistant)", i, msgs[i].role, NAMES[kind]);
    return NULL;
}

/* Qwen3's system turn listing the tools (and a first system message). */
static void put_qwen3_tools(struct strbuf *b, const json_t *tools, const struct chat_msg *sys)
{
    strbuf_puts(b, "<|im_start|>system\n");
    if (sys) {
        strbuf_puts(b, sys->content);
        strbuf_puts(b, "\n\n");
    }
    strbuf_puts(b, "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                   "You are provided with function signatures within <tools></tools> XML tags:\n"
                   "<tools>");
    size_t i;
    const json_t *t;
    json_array_foreach(tools, i, t) {
        strbuf_puts(b, "\n");
        put_json(b, t);
    }
    strbuf_puts(b, "\n</tools>\n\nFor each function call, return a json object with function name "
                   "and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
                   "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n"
                   "</tool_call><|im_end|>\n");
}

/* An assistant turn's tool calls, as Qwen3 writes them after its content
 * (content: whether there was any). */
static void put_qwen3_calls(struct strbuf *b, const json_t *calls, bool content)
{
    size_t k;
    const json_t *c;
    json_array_foreach(calls, k, c) {
        if (content || k) strbuf_puts(b, "\n");
        const json_t *f = json_object_get(c, "function");
        if (f) c = f;
        const json_t *args = json_object_get(c, "arguments");
        strbuf_puts(b, "<tool_call>\n{\"name\": \"");
        strbuf_puts(b, json_string_value(json_object_get(c, "name")));
        strbuf_puts(b, "\", \"arguments\": ");
        if (json_is_string(args)) strbuf_put(b, json_string_value(args), json_string_length(args));
        else put_json(b, args);
        strbuf_puts(b, "}\n</tool_call>");
    }
}

static bool starts_ends(const char *s, const char *head, const char *tail)
{
    const size_t n = strlen(s), h = strlen(head), t = strlen(tail);
    return n >= h && n >= t && !memcmp(s, head, h) && !memcmp(s + n - t, tail, t);
}

static void render_chatml(struct strbuf *b, enum chat_template_kind kind, const struct chat_msg *m,
                          size_t n, const struct chat_opts *o)
{
    const bool qwen3 = kind == CHAT_TEMPLATE_QWEN3;
    size_t first = 0;
    if (kind == CHAT_TEMPLATE_QWEN2_5 && (n == 0 || !role_is(&m[0], "system"))) {
        strbuf_puts(b, "<|im_start|>system\n");
        strbuf_puts(b, QWEN2_5_SYSTEM);
        strbuf_puts(b, "<|im_end|>\n");
    }
    if (qwen3 && o->tools && json_array_size(o->tools)) {
        const bool sys = n && role_is(&m[0], "system");
        put_qwen3_tools(b, o->tools, sys ? &m[0] : NULL);
        first = sys;
    }
    /* Qwen3: index of the last user turn (not a tool result passed as a
     * user message); reasoning is kept only after it. */
    size_t last_query = n ? n - 1 : 0;
    for (size_t i = n; i-- > 0;)
        if (role_is(&m[i], "user") &&
            !(qwen3 && starts_ends(m[i].content, "<tool_response>", "</tool_response>"))) {
            last_query = i;
            break;
        }
    for (size_t i = first; i < n; i++) {
        if (qwen3 && role_is(&m[i], "tool")) {
            /* results of consecutive tool messages share one user turn */
            if (i == 0 || !role_is(&m[i - 1], "tool")) strbuf_puts(b, "<|im_start|>user");
            strbuf_puts(b, "\n<tool_response>\n");
            strbuf_puts(b, m[i].content);
            strbuf_puts(b, "\n</tool_response>");
            if (i == n - 1 || !role_is(&m[i + 1], "tool")) strbuf_puts(b, "<|im_end|>\n");
            continue;
        }
        if (!qwen3 || !role_is(&m[i], "assistant")) {
            strbuf_puts(b, "<|im_start|>");
            strbuf_puts(b, m[i].role);
            strbuf_puts(b, "\n");
            strbuf_puts(b, m[i].content);
            strbuf_puts(b, "<|im_end|>\n");
            continue;
        }
        /* Qwen3 assistant turn: split reasoning from content. */
        const char *c = m[i].content, *r = "";
        size_t cn = strlen(c), rn = 0;
        if (m[i].reasoning) {
            r = m[i].reasoning;
            rn = strlen(r);
        } else if (strstr(c, "</think>")) {
            const char *first_end = strstr(c, "</think>");
            const char *last = last_strstr(c, cn, "</think>");
            r = c;
            rn = (size_t)(first_end - c);
            strip_char(&r, &rn, '\n', false, true);
            const char *open = last_strstr(r, rn, "<think>");
            if (open) {
                rn -= (size_t)(open + 7 - r);
                r = open + 7;
            }
            strip_char(&r, &rn, '\n', true, false);
            cn -= (size_t)(last + 8 - c);
            c = last + 8;
            strip_char(&c, &cn, '\n', true, false);
        }
        const bool content = cn > 0;
        strbuf_puts(b, "<|im_start|>assistant\n");
        if (i > last_query && (i == n - 1 || rn)) {
            strip_char(&r, &rn, '\n', true, true);
            strip_char(&c, &cn, '\n', true, false);
            strbuf_puts(b, "<think>\n");
            strbuf_put(b, r, rn);
            strbuf_puts(b, "\n</think>\n\n");
        }
        strbuf_put(b, c, cn);
        if (m[i].tool_calls) put_qwen3_calls(b, m[i].tool_calls, content);
        strbuf_puts(b, "<|im_end|>\n");
    }
    if (o->add_generation_prompt) {
        strbuf_puts(b, "<|im_start|>assistant\n");
        put_think(b, o, false);
    }
}

char *chat_template_render(enum chat_template_kind kind, const struct chat_msg *m, size_t n,
                           const struct chat_opts *o, char *err, size_t errlen)
{
    if (kind != CHAT_TEMPLATE_QWEN3 && o->tools && json_array_size(o->tools)) {
        fail(err, errlen, "tools: the %s chat template has no tool calls (qwen3 has)", NAMES[kind]);
        return NULL;
    }
    for (size_t i = 0; i < n && kind != CHAT_TEMPLATE_QWEN3; i++)
        if (m[i].tool_calls) {
            fail(err, errlen, "messages[%zu].tool_calls: the %s chat template has no tool calls "
                 "(qwen3 has)", i, NAMES[kind]);
            return NULL;
        }
    struct strbuf b = {0};
    strbuf_put(&b, "", 0);
    switch (kind) {
    case CHAT_TEMPLATE_CHATML:
    case CHAT_TEMPLATE_QWEN2_5:
    case CHAT_TEMPLATE_QWEN3:
        render_chatml(&b, kind, m, n, o);
        break;
    case CHAT_TEMPLATE_LLAMA3:
        strbuf_puts(&b, "<|begin_of_text|>");
        for (size_t i = 0; i < n; i++) {
            strbuf_puts(&b, "<|start_header_id|>");
            strbuf_puts(&b, m[i].role);
            strbuf_puts(&b, "<|end_header_id|>\n\n");
            put_trimmed(&b, m[i].content);
            strbuf_puts(&b, "<|eot_id|>");
        }
        if (o->add_generation_prompt) {
            strbuf_puts(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
            put_think(&b, o, false);
        }
        break;
    case CHAT_TEMPLATE_DEEPSEEK_R1:
    case CHAT_TEMPLATE_DEEPSEEK_V3: {
        strbuf_puts(&b, "<\xEF\xBD\x9C" "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>");
        bool first_sp = true;
        for (size_t i = 0; i < n; i++) {
            if (!role_is(&m[i], "system")) continue;
            if (!first_sp) strbuf_puts(&b, "\n\n");
            strbuf_puts(&b, m[i].content);
            first_sp = false;
        }
        for (size_t i = 0; i < n; i++) {
            if (role_is(&m[i], "system")) continue;
            if (role_is(&m[i], "user")) {
                strbuf_puts(&b, "<\xEF\xBD\x9CUser\xEF\xBD\x9C>");
                strbuf_puts(&b, m[i].content);
            } else if (role_is(&m[i], "assistant")) {
                const char *c = m[i].content;
                if (kind == CHAT_TEMPLATE_DEEPSEEK_R1) {
                    const char *last = last_strstr(c, strlen(c), "</think>");
                    if (last) c = last + 8;
                }
                strbuf_puts(&b, "<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>");
                strbuf_puts(&b, c);
                strbuf_puts(&b, "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>");
            } else {
                return bad_role(m, i, kind, &b, err, errlen);
            }
        }
        if (o->add_generation_prompt) {
            strbuf_puts(&b, "<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>");
            put_think(&b, o, kind == CHAT_TEMPLATE_DEEPSEEK_R1);
        }
        break;
    }
    case CHAT_TEMPLATE_R1_ZERO: {
        /* A system message replaces the paper's preamble. */
        bool sys = n && role_is(&m[0], "system");
        strbuf_puts(&b, sys ? m[0].content : R1_ZERO_PREAMBLE);
        for (size_t i = sys; i < n; i++) {
            if (role_is(&m[i], "user")) {
                strbuf_puts(&b, " User: ");
                strbuf_puts(&b, m[i].content);
                strbuf_puts(&b, ".");
            } else if (role_is(&m[i], "assistant")) {
                strbuf_puts(&b, " Assistant: ");
                strbuf_puts(&b, m[i].content);
            } else {
                return bad_role(m, i, kind, &b, err, errlen);
            }
        }
        if (o->add_generation_prompt) {
            strbuf_puts(&b, " Assistant:");
            if (o->disable_thinking) strbuf_puts(&b, " <think>\n\n</think>\n\n");
            else if (o->prefill_think == 1) strbuf_puts(&b, " <think>");
        }
        break;
    }
    case CHAT_TEMPLATE_PLAIN: {
        /* "User: q\nAssistant: a\nUser: ..." with an optional leading
         * system line; the generation prompt is "\nAssistant:". */
        for (size_t i = 0; i < n; i++) {
            if (i) strbuf_puts(&b, "\n");
            if (role_is(&m[i], "system")) {
                strbuf_puts(&b, m[i].content);
            } else if (role_is(&m[i], "user")) {
                strbuf_puts(&b, "User: ");
                strbuf_puts(&b, m[i].content);
            } else if (role_is(&m[i], "assistant")) {
                strbuf_puts(&b, "Assistant: ");
                strbuf_puts(&b, m[i].content);
            } else {
                return bad_role(m, i, kind, &b, err, errlen);
            }
        }
        if (o->add_generation_prompt) {
            strbuf_puts(&b, n ? "\nAssistant:" : "Assistant:");
            if (o->prefill_think == 1) strbuf_puts(&b, " <think>");
        }
        break;
    }
    default:
        free(b.p);
        fail(err, errlen, "unknown chat template %d", (int)kind);
        return NULL;
    }
    if (b.oom) {
        free(b.p);
        fail(err, errlen, "out of memory");
        return NULL;
    }
    return b.p;
}

char *chat_template_render_json(enum chat_template_kind kind, const json_t *messages,
                                const struct chat_opts *opts, char *err, size_t errlen)
{
    if (!json_is_array(messages)) {
        fail(err, errlen, "messages: expected an array of {\"role\", \"content\"} objects");
        return NULL;
    }
    size_t n = json_array_size(messages);
    struct chat_msg *m = calloc(n ? n : 1, sizeof *m);
    if (!m) {
        fail(err, errlen, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(messages, i);
        const json_t *role = json_object_get(e, "role"), *content = json_object_get(e, "content");
        const json_t *rc = json_object_get(e, "reasoning_content");
        const json_t *calls = json_object_get(e, "tool_calls");
        if (json_is_null(calls)) calls = NULL;
        const char *bad = !json_is_object(e) ? "" : !json_is_string(role) ? ".role"
                        : !json_is_string(content) && !(calls && json_is_null(content)) ? ".content"
                        : (rc && !json_is_null(rc) && !json_is_string(rc)) ? ".reasoning_content"
                        : calls && !json_is_array(calls) ? ".tool_calls"
                        : NULL;
        if (bad) {
            fail(err, errlen, "messages[%zu]%s: expected %s", i, bad,
                 !*bad ? "an object with \"role\" and \"content\""
                 : bad[1] == 't' ? "an array of calls" : "a string");
            free(m);
            return NULL;
        }
        size_t k;
        const json_t *c;
        json_array_foreach(calls, k, c) {
            const json_t *f = json_object_get(c, "function");
            if (!f) f = c;
            const json_t *args = json_object_get(f, "arguments");
            if (!json_is_string(json_object_get(f, "name")) ||
                !(json_is_string(args) || json_is_object(args))) {
                fail(err, errlen, "messages[%zu].tool_calls[%zu]: expected {\"function\": {\"name\": "
                     "a string, \"arguments\": a string or an object}}", i, k);
                free(m);
                return NULL;
            }
        }
        m[i].role = json_string_value(role);
        m[i].content = json_is_string(content) ? json_string_value(content) : "";
        m[i].reasoning = json_is_string(rc) ? json_string_value(rc) : NULL;
        m[i].tool_calls = calls && json_array_size(calls) ? calls : NULL;
    }
    char *out = chat_template_render(kind, m, n, opts, err, errlen);
    free(m);
    return out;
}
