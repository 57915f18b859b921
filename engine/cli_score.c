/* engine/cli_score.c — `aha-engine score --spec FILE`: scores JSONL items
 * {"prompt","completion",["completion_tokens"],...dataset fields} from
 * stdin with a reward spec and prints one JSON line per item. A thin shell
 * over rewards.h; re-entrant, so tests call it directly. */
#include "cli.h"
#include "rewards.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char SCORE_USAGE[] =
    "usage: aha-engine score --spec FILE [--batch N] < items.jsonl\n"
    "  --spec FILE   reward specification (JSON, format in DESIGN.md)\n"
    "  --batch N     items scored together (http graders get them batched; default 64)\n"
    "input:  one {\"prompt\",\"completion\",...} object a line; \"completion_tokens\"\n"
    "        is needed by overlong and token-unit length rewards; the other fields\n"
    "        are the dataset row the rewards read\n"
    "output: {\"total\":..,\"components\":{name:value}} a line, null for a value\n"
    "        excluded by an on_error \"skip\" policy, plus \"excluded\" and \"failed\"\n"
    "        when they apply\n";

/* Largest input line (bytes). */
#define SCORE_LINE_MAX (64L << 20)

struct score_batch {
    json_t *rows[1024];
    struct reward_item items[1024];
    struct reward_result results[1024];
    long lines[1024];
    size_t n;
};

static json_t *number_or_null(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

/* Scores and prints the batch, then frees its rows. Returns 0 or 1. */
static int flush(const struct reward_spec *spec, struct score_batch *b)
{
    char err[512];
    int rc = 0;
    if (reward_score_batch(spec, b->items, b->n, b->results, err, sizeof err) != 0) {
        /* "item K" -> the input line */
        long k = strtol(err + 5, NULL, 10);
        fprintf(stderr, "score: line %ld: %s\n", k >= 0 && (size_t)k < b->n ? b->lines[k] : 0L,
                strchr(err, ':') ? strchr(err, ':') + 2 : err);
        rc = 1;
    }
    for (size_t i = 0; i < b->n && rc == 0; i++) {
        const struct reward_result *r = &b->results[i];
        json_t *comps = json_object(), *failed = json_array();
        for (int k = 0; k < reward_spec_count(spec); k++) {
            json_object_set_new(comps, reward_spec_component_name(spec, k),
                                number_or_null(r->value[k]));
            if (r->failed[k])
                json_array_append_new(failed, json_string(reward_spec_component_name(spec, k)));
        }
        json_t *o = json_pack("{s:o,s:o}", "total", number_or_null(r->total), "components", comps);
        if (r->excluded)
            json_object_set_new(o, "excluded", json_true());
        if (json_array_size(failed))
            json_object_set(o, "failed", failed);
        json_decref(failed);
        char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(10));
        json_decref(o);
        if (!s || puts(s) == EOF)
            rc = 1;
        free(s);
    }
    fflush(stdout);
    for (size_t i = 0; i < b->n; i++)
        json_decref(b->rows[i]);
    b->n = 0;
    return rc;
}

/* Adds one input line to the batch; returns 0, or 1 after printing why. */
static int add_line(struct score_batch *b, const char *line, size_t len, long lineno)
{
    json_error_t je;
    json_t *row = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!row) {
        fprintf(stderr, "score: line %ld: invalid JSON at column %d: %s\n", lineno, je.column,
                je.text);
        return 1;
    }
    const json_t *p = json_object_get(row, "prompt"), *c = json_object_get(row, "completion"),
                 *t = json_object_get(row, "completion_tokens");
    const char *why = !json_is_object(row) ? "expected a JSON object"
                    : !json_is_string(c) ? "field \"completion\" is missing or not a string"
                    : p && !json_is_string(p) ? "field \"prompt\" is not a string"
                    : t && (!json_is_integer(t) || json_integer_value(t) < 0)
                        ? "field \"completion_tokens\" is not a non-negative integer"
                        : NULL;
    if (why) {
        fprintf(stderr, "score: line %ld: %s\n", lineno, why);
        json_decref(row);
        return 1;
    }
    b->rows[b->n] = row;
    b->lines[b->n] = lineno;
    b->items[b->n] = (struct reward_item){
        .prompt = p ? json_string_value(p) : "",
        .completion = json_string_value(c),
        .completion_len = json_string_length(c),
        .completion_tokens = t ? (long)json_integer_value(t) : -1,
        .fields = row,
    };
    b->n++;
    return 0;
}

int cli_score(int argc, char **argv)
{
    static const char *const opts[] = {"--spec", "--batch", NULL};
    static const char *const flags[] = {"--help", "-h", NULL};
    if (cli_flag(argc, argv, "--help") || cli_flag(argc, argv, "-h")) {
        fputs(SCORE_USAGE, stdout);
        return 0;
    }
    long batch = 64;
    if (cli_args_check(argc, argv, opts, flags) != 0 ||
        cli_arg_int(argc, argv, "--batch", 1, 1024, &batch) != 0) {
        fprintf(stderr, "hint: run \"aha-engine score --help\" for usage\n");
        return 2;
    }
    const char *path = cli_arg(argc, argv, "--spec");
    if (!path) {
        fprintf(stderr, "score: --spec FILE is required\n"
                        "hint: run \"aha-engine score --help\" for usage\n");
        return 2;
    }
    char err[512];
    struct reward_spec *spec = reward_spec_load(path, err, sizeof err);
    if (!spec) {
        fprintf(stderr, "score: %s\n", err);
        return 1;
    }
    struct score_batch *b = calloc(1, sizeof *b);
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0;
    int rc = b ? 0 : 1;
    ssize_t len;
    while (rc == 0 && (len = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        if (len > SCORE_LINE_MAX) {
            fprintf(stderr, "score: line %ld: longer than %ld bytes\n", lineno, SCORE_LINE_MAX);
            rc = 1;
            break;
        }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        if (len == 0)
            continue;
        rc = add_line(b, line, (size_t)len, lineno);
        if (rc == 0 && b->n == (size_t)batch)
            rc = flush(spec, b);
    }
    if (b) {
        if (rc == 0 && b->n)
            rc = flush(spec, b);
        for (size_t i = 0; i < b->n; i++)
            json_decref(b->rows[i]);
    }
    free(line);
    free(b);
    reward_spec_free(spec);
    return rc;
}
