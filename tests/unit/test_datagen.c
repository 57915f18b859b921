/* tests/unit/test_datagen.c — the synthetic task generators (engine/datagen.c)
 * and their CLI: determinism, correct answers (re-derived here, with an
 * independent equation evaluator for countdown), text-row shape and length,
 * and rejection of bad arguments. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <jansson.h>

#include "cli.h"
#include "datagen.h"

/* Runs datagen_write into memory; caller frees. Fails the test on error. */
static char *gen(enum datagen_task task, enum datagen_format format, long n,
                 uint64_t seed)
{
    char *buf = NULL, err[256] = "";
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert_not_null(f);
    int rc = datagen_write(task, format, n, seed, f, err, sizeof err);
    fclose(f);
    cr_assert_eq(rc, 0, "datagen_write: %s", err);
    return buf;
}

/* Splits s into lines in place; returns the count, fills lines[]. */
static int split_lines(char *s, char **lines, int max)
{
    int n = 0;
    for (char *p = s; *p && n < max;) {
        char *nl = strchr(p, '\n');
        cr_assert_not_null(nl, "row %d is not newline-terminated", n);
        *nl = 0;
        lines[n++] = p;
        p = nl + 1;
    }
    return n;
}

static json_t *parse_row(const char *line, int i)
{
    json_error_t e;
    json_t *o = json_loads(line, 0, &e);
    cr_assert_not_null(o, "row %d: %s: %s", i, e.text, line);
    cr_assert(json_is_object(o), "row %d: not an object", i);
    return o;
}

static const char *get_str(json_t *o, const char *key, int i)
{
    json_t *v = json_object_get(o, key);
    cr_assert(json_is_string(v), "row %d: field \"%s\" missing or not a string", i, key);
    return json_string_value(v);
}

static long get_int(json_t *o, const char *key, int i)
{
    json_t *v = json_object_get(o, key);
    cr_assert(json_is_integer(v), "row %d: field \"%s\" missing or not an integer", i, key);
    return (long)json_integer_value(v);
}

/* Copies the text between open and close tags into out; 0 if found. */
static int extract_tag(const char *text, const char *open, const char *close,
                       char *out, size_t outlen)
{
    const char *a = strstr(text, open);
    if (!a)
        return -1;
    a += strlen(open);
    const char *b = strstr(a, close);
    if (!b || (size_t)(b - a) >= outlen)
        return -1;
    memcpy(out, a, (size_t)(b - a));
    out[b - a] = 0;
    return 0;
}

/* ---------------------------------------- independent equation evaluator -- */

/* Exact rationals over + - * / and parentheses, recording every literal. */
struct ev {
    const char *p;
    int bad;
    int used[8];
    int n_used;
};
struct q {
    long long n, d;
};

static void ev_ws(struct ev *e)
{
    while (*e->p == ' ')
        e->p++;
}

static struct q ev_expr(struct ev *e);

static struct q ev_atom(struct ev *e)
{
    struct q r = { 0, 1 };
    ev_ws(e);
    if (*e->p == '(') {
        e->p++;
        r = ev_expr(e);
        ev_ws(e);
        if (*e->p != ')')
            e->bad = 1;
        else
            e->p++;
        return r;
    }
    if (*e->p < '0' || *e->p > '9') {
        e->bad = 1;
        return r;
    }
    long v = 0;
    while (*e->p >= '0' && *e->p <= '9')
        v = v * 10 + (*e->p++ - '0');
    if (e->n_used < 8)
        e->used[e->n_used] = (int)v;
    e->n_used++;
    r.n = v;
    return r;
}

static struct q ev_term(struct ev *e)
{
    struct q a = ev_atom(e);
    for (;;) {
        ev_ws(e);
        char op = *e->p;
        if (op != '*' && op != '/')
            return a;
        e->p++;
        struct q b = ev_atom(e);
        if (op == '*') {
            a.n *= b.n;
            a.d *= b.d;
        } else {
            if (b.n == 0) {
                e->bad = 1;
                return a;
            }
            a.n *= b.d;
            a.d *= b.n;
        }
    }
}

static struct q ev_expr(struct ev *e)
{
    struct q a = ev_term(e);
    for (;;) {
        ev_ws(e);
        char op = *e->p;
        if (op != '+' && op != '-')
            return a;
        e->p++;
        struct q b = ev_term(e);
        a.n = a.n * b.d + (op == '+' ? 1 : -1) * b.n * a.d;
        a.d *= b.d;
    }
}

static int cmp_int(const void *a, const void *b)
{
    return *(const int *)a - *(const int *)b;
}

/* Asserts eq evaluates to target and uses exactly the multiset nums. */
static void check_equation(const char *eq, const int *nums, int k, long target, int row)
{
    struct ev e = { .p = eq };
    struct q v = ev_expr(&e);
    ev_ws(&e);
    cr_assert(!e.bad && *e.p == 0, "row %d: cannot parse \"%s\"", row, eq);
    cr_assert(v.d != 0 && v.n == (long long)target * v.d,
              "row %d: \"%s\" = %lld/%lld, target %ld", row, eq, v.n, v.d, target);
    cr_assert_eq(e.n_used, k, "row %d: \"%s\" uses %d numbers, expected %d", row, eq,
                 e.n_used, k);
    int a[8], b[8];
    memcpy(a, e.used, sizeof(int) * (size_t)k);
    memcpy(b, nums, sizeof(int) * (size_t)k);
    qsort(a, (size_t)k, sizeof(int), cmp_int);
    qsort(b, (size_t)k, sizeof(int), cmp_int);
    for (int i = 0; i < k; i++)
        cr_assert_eq(a[i], b[i], "row %d: \"%s\" does not use each number once", row, eq);
}

/* Parses "Using the numbers [a, b, c], create an equation that equals T." */
static int parse_countdown_prompt(const char *prompt, int *nums, long *target, int row)
{
    const char *p = strstr(prompt, "Using the numbers [");
    cr_assert_not_null(p, "row %d: prompt \"%s\"", row, prompt);
    p += strlen("Using the numbers [");
    int k = 0;
    for (;;) {
        char *end;
        long v = strtol(p, &end, 10);
        cr_assert(end != p && k < 8, "row %d: prompt \"%s\"", row, prompt);
        nums[k++] = (int)v;
        p = end;
        if (*p == ']')
            break;
        cr_assert(p[0] == ',' && p[1] == ' ', "row %d: prompt \"%s\"", row, prompt);
        p += 2;
    }
    cr_assert_eq(sscanf(p, "], create an equation that equals %ld.", target), 1,
                 "row %d: prompt \"%s\"", row, prompt);
    return k;
}

/* --------------------------------------------------------------- tests -- */

#define N_ROWS 3000

Test(datagen, same_seed_same_output_other_seed_differs)
{
    for (int t = 0; t < 2; t++) {
        for (int f = 0; f < 2; f++) {
            char *a = gen(t, f, 200, 42), *b = gen(t, f, 200, 42), *c = gen(t, f, 200, 43);
            cr_assert_str_eq(a, b, "task %d format %d: same seed differs", t, f);
            cr_assert_str_neq(a, c, "task %d format %d: other seed is identical", t, f);
            free(a);
            free(b);
            free(c);
        }
    }
}

Test(datagen, fewer_rows_are_a_prefix)
{
    char *a = gen(DATAGEN_TASK_COUNTDOWN, DATAGEN_FORMAT_RL, 50, 9);
    char *b = gen(DATAGEN_TASK_COUNTDOWN, DATAGEN_FORMAT_RL, 10, 9);
    cr_assert_eq(strncmp(a, b, strlen(b)), 0);
    free(a);
    free(b);
}

Test(datagen, arithmetic_answers_are_correct)
{
    char *buf = gen(DATAGEN_TASK_ARITHMETIC, DATAGEN_FORMAT_RL, N_ROWS, 1);
    static char *lines[N_ROWS];
    int n = split_lines(buf, lines, N_ROWS), seen[3] = { 0 };
    cr_assert_eq(n, N_ROWS);
    for (int i = 0; i < n; i++) {
        json_t *o = parse_row(lines[i], i);
        long a = get_int(o, "a", i), b = get_int(o, "b", i), want;
        const char *op = get_str(o, "op", i);
        if (strcmp(op, "+") == 0)
            want = a + b, seen[0]++;
        else if (strcmp(op, "-") == 0)
            want = a - b, seen[1]++;
        else if (strcmp(op, "*") == 0)
            want = a * b, seen[2]++;
        else
            cr_assert_fail("row %d: op \"%s\"", i, op);
        char prompt[64], answer[32];
        snprintf(prompt, sizeof prompt, "What is %ld %s %ld?", a, op, b);
        snprintf(answer, sizeof answer, "%ld", want);
        cr_assert_str_eq(get_str(o, "prompt", i), prompt, "row %d", i);
        cr_assert_str_eq(get_str(o, "answer", i), answer, "row %d", i);
        cr_assert(a >= 0 && b >= 0 && a <= 99 && b <= 99 && want >= 0, "row %d", i);
        json_decref(o);
    }
    cr_assert(seen[0] > 0 && seen[1] > 0 && seen[2] > 0, "every operator appears");
    free(buf);
}

Test(datagen, arithmetic_text_is_a_worked_solution)
{
    char *rl = gen(DATAGEN_TASK_ARITHMETIC, DATAGEN_FORMAT_RL, N_ROWS, 5);
    char *tx = gen(DATAGEN_TASK_ARITHMETIC, DATAGEN_FORMAT_TEXT, N_ROWS, 5);
    static char *lr[N_ROWS], *lt[N_ROWS];
    cr_assert_eq(split_lines(rl, lr, N_ROWS), N_ROWS);
    cr_assert_eq(split_lines(tx, lt, N_ROWS), N_ROWS);
    for (int i = 0; i < N_ROWS; i++) {
        json_t *r = parse_row(lr[i], i), *t = parse_row(lt[i], i);
        const char *text = get_str(t, "text", i);
        char head[128], ans[32], think[256];
        snprintf(head, sizeof head, "User: %s\nAssistant: <think>", get_str(r, "prompt", i));
        cr_assert(strlen(text) < 200, "row %d: %zu bytes", i, strlen(text));
        cr_assert_eq(strncmp(text, head, strlen(head)), 0, "row %d: %s", i, text);
        cr_assert_eq(extract_tag(text, "<think>", "</think>", think, sizeof think), 0);
        cr_assert_eq(extract_tag(text, "</think> <answer>", "</answer>", ans, sizeof ans), 0,
                     "row %d: %s", i, text);
        cr_assert_str_eq(ans, get_str(r, "answer", i), "row %d", i);
        cr_assert(strstr(think, " = ") != NULL, "row %d: no worked step: %s", i, think);
        const char *end = strstr(text, "</answer>");
        cr_assert_str_eq(end, "</answer>", "row %d: text after </answer>", i);
        json_decref(r);
        json_decref(t);
    }
    free(rl);
    free(tx);
}

Test(datagen, countdown_answers_reach_the_target)
{
    char *buf = gen(DATAGEN_TASK_COUNTDOWN, DATAGEN_FORMAT_RL, N_ROWS, 2);
    static char *lines[N_ROWS];
    int n = split_lines(buf, lines, N_ROWS), sizes[5] = { 0 };
    cr_assert_eq(n, N_ROWS);
    for (int i = 0; i < n; i++) {
        json_t *o = parse_row(lines[i], i);
        json_t *arr = json_object_get(o, "numbers");
        cr_assert(json_is_array(arr), "row %d: numbers", i);
        int k = (int)json_array_size(arr), nums[8], pnums[8];
        cr_assert(k == 3 || k == 4, "row %d: %d numbers", i, k);
        sizes[k]++;
        for (int j = 0; j < k; j++) {
            nums[j] = (int)json_integer_value(json_array_get(arr, (size_t)j));
            cr_assert(nums[j] >= 1 && nums[j] <= 99, "row %d: number %d", i, nums[j]);
        }
        long target = get_int(o, "target", i), ptarget;
        cr_assert_gt(target, 0, "row %d", i);
        check_equation(get_str(o, "answer", i), nums, k, target, i);
        int pk = parse_countdown_prompt(get_str(o, "prompt", i), pnums, &ptarget, i);
        cr_assert(pk == k && ptarget == target, "row %d: prompt disagrees with fields", i);
        for (int j = 0; j < k; j++)
            cr_assert_eq(pnums[j], nums[j], "row %d", i);
        json_decref(o);
    }
    cr_assert(sizes[3] > 0 && sizes[4] > 0, "both 3 and 4 numbers appear");
    free(buf);
}

Test(datagen, countdown_text_is_a_worked_solution)
{
    char *buf = gen(DATAGEN_TASK_COUNTDOWN, DATAGEN_FORMAT_TEXT, N_ROWS, 2);
    char *rl = gen(DATAGEN_TASK_COUNTDOWN, DATAGEN_FORMAT_RL, N_ROWS, 2);
    static char *lines[N_ROWS], *lr[N_ROWS];
    cr_assert_eq(split_lines(buf, lines, N_ROWS), N_ROWS);
    cr_assert_eq(split_lines(rl, lr, N_ROWS), N_ROWS);
    for (int i = 0; i < N_ROWS; i++) {
        json_t *o = parse_row(lines[i], i), *r = parse_row(lr[i], i);
        const char *text = get_str(o, "text", i);
        char prompt[256], eq[128], think[256];
        cr_assert(strlen(text) < 200, "row %d: %zu bytes: %s", i, strlen(text), text);
        cr_assert_eq(extract_tag(text, "User: ", "\nAssistant: <think>", prompt, sizeof prompt),
                     0, "row %d: %s", i, text);
        cr_assert_str_eq(prompt, get_str(r, "prompt", i), "row %d: text and rl rows differ", i);
        cr_assert_eq(extract_tag(text, "<think>", "</think>", think, sizeof think), 0);
        cr_assert_eq(extract_tag(text, "</think> <answer>", "</answer>", eq, sizeof eq), 0,
                     "row %d: %s", i, text);
        int nums[8];
        long target;
        int k = parse_countdown_prompt(prompt, nums, &target, i);
        check_equation(eq, nums, k, target, i);
        char so[32];
        snprintf(so, sizeof so, "So %ld.", target);
        cr_assert(strstr(think, so) != NULL, "row %d: think lacks \"%s\": %s", i, so, think);
        json_decref(o);
        json_decref(r);
    }
    free(buf);
    free(rl);
}

Test(datagen, write_rejects_bad_row_counts)
{
    char err[256] = "";
    FILE *f = tmpfile();
    cr_assert_not_null(f);
    cr_assert_eq(datagen_write(DATAGEN_TASK_ARITHMETIC, DATAGEN_FORMAT_RL, 0, 1, f, err,
                               sizeof err), -1);
    cr_assert(strstr(err, "row count") != NULL, "err: %s", err);
    err[0] = 0;
    cr_assert_eq(datagen_write(DATAGEN_TASK_ARITHMETIC, DATAGEN_FORMAT_RL,
                               DATAGEN_MAX_ROWS + 1, 1, f, err, sizeof err), -1);
    cr_assert(err[0] != 0);
    cr_assert_eq(ftell(f), 0, "nothing written on a rejected call");
    fclose(f);
}

Test(datagen, parse_names)
{
    enum datagen_task t;
    enum datagen_format f;
    cr_assert_eq(datagen_task_parse("arithmetic", &t), 0);
    cr_assert_eq(t, DATAGEN_TASK_ARITHMETIC);
    cr_assert_eq(datagen_task_parse("countdown", &t), 0);
    cr_assert_eq(t, DATAGEN_TASK_COUNTDOWN);
    cr_assert_eq(datagen_task_parse("Countdown", &t), -1);
    cr_assert_eq(datagen_format_parse("text", &f), 0);
    cr_assert_eq(f, DATAGEN_FORMAT_TEXT);
    cr_assert_eq(datagen_format_parse("jsonl", &f), -1);
}

static int run_cli(int argc, const char **argv)
{
    return cli_datagen(argc, (char **)argv);
}

/* Runs datagen with argv's last argument (NULL there) set to a new
 * temporary file; asserts it succeeds and returns what it wrote (caller
 * frees). */
static char *cli_output(int argc, const char **argv)
{
    char path[] = "/tmp/aha-datagen-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    argv[argc - 1] = path;
    cr_assert_eq(run_cli(argc, argv), 0);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    char *got = calloc(1, 16384);
    cr_assert_not_null(got);
    size_t n = fread(got, 1, 16383, f);
    got[n] = 0;
    fclose(f);
    unlink(path);
    return got;
}

Test(datagen, cli_rejects_bad_arguments, .init = cr_redirect_stderr)
{
    static const char *bad[][8] = {
        { "datagen" },                                              /* no task */
        { "datagen", "--n", "5", "--seed", "1" },                   /* no task */
        { "datagen", "algebra", "--n", "5", "--seed", "1" },        /* unknown task */
        { "datagen", "arithmetic", "--seed", "1" },                 /* no --n */
        { "datagen", "arithmetic", "--n", "5" },                    /* no --seed */
        { "datagen", "arithmetic", "--n", "0", "--seed", "1" },
        { "datagen", "arithmetic", "--n", "-3", "--seed", "1" },
        { "datagen", "arithmetic", "--n", "5x", "--seed", "1" },
        { "datagen", "arithmetic", "--n", "10000001", "--seed", "1" }, /* one past the limit */
        { "datagen", "arithmetic", "--n", "5", "--seed", "-1" },
        { "datagen", "arithmetic", "--n", "5", "--seed", "18446744073709551616" },
        { "datagen", "arithmetic", "--n", "5", "--seed", "1", "--format", "csv" },
        { "datagen", "arithmetic", "--n", "5", "--seed", "1", "--bogus" },
        { "datagen", "arithmetic", "countdown", "--n", "5", "--seed", "1" },
        { "datagen", "arithmetic", "--n", "5", "--seed" },          /* missing value */
        { "datagen", "arithmetic", "--n", "5", "--seed", "1", "--out=" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int argc = 0;
        while (argc < 8 && bad[i][argc])
            argc++;
        cr_assert_eq(run_cli(argc, bad[i]), 2, "case %zu accepted", i);
    }
    fflush(stderr);
    char msg[4096] = "";
    size_t got = fread(msg, 1, sizeof msg - 1, cr_get_redirected_stderr());
    msg[got] = 0;
    cr_assert(strstr(msg, "datagen: unknown task \"algebra\"") != NULL, "stderr: %s", msg);
}

Test(datagen, cli_writes_the_file)
{
    const char *argv[] = { "datagen", "countdown", "--n", "25", "--seed=7",
                           "--format", "text", "--out", NULL };
    char *got = cli_output(9, argv);
    char *want = gen(DATAGEN_TASK_COUNTDOWN, DATAGEN_FORMAT_TEXT, 25, 7);
    cr_assert_str_eq(got, want);
    free(want);
    free(got);

    const char *bad_dir[] = { "datagen", "arithmetic", "--n", "1", "--seed", "1",
                              "--out", "/nonexistent-dir/x.jsonl" };
    cr_redirect_stderr();
    cr_assert_eq(run_cli(8, bad_dir), 1);
}

Test(datagen, cli_help, .init = cr_redirect_stdout)
{
    const char *argv[] = { "datagen", "--help" };
    cr_assert_eq(run_cli(2, argv), 0);
}

/* ------------------------------------------- options: ops, split, noise -- */

/* datagen_write_opts into memory; caller frees. Fails the test on error. */
static char *gen_opts(enum datagen_task task, enum datagen_format format,
                      const struct datagen_opts *o, long n, uint64_t seed)
{
    char *buf = NULL, err[256] = "";
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert_not_null(f);
    int rc = datagen_write_opts(task, format, o, n, seed, f, err, sizeof err);
    fclose(f);
    cr_assert_eq(rc, 0, "datagen_write_opts: %s", err);
    return buf;
}

Test(datagen, default_opts_are_datagen_write)
{
    struct datagen_opts o;
    datagen_opts_default(&o);
    for (int t = 0; t < 2; t++)
        for (int f = 0; f < 2; f++) {
            char *a = gen(t, f, 300, 11), *b = gen_opts(t, f, &o, 300, 11);
            cr_assert_str_eq(a, b, "task %d format %d", t, f);
            free(a);
            free(b);
        }
}

Test(datagen, ops_restrict_the_operators)
{
    struct datagen_opts o;
    datagen_opts_default(&o);
    o.ops = "+-";
    char *buf = gen_opts(DATAGEN_TASK_ARITHMETIC, DATAGEN_FORMAT_RL, &o, 1000, 4);
    static char *lines[1000];
    int n = split_lines(buf, lines, 1000), seen[2] = { 0 };
    for (int i = 0; i < n; i++) {
        json_t *r = parse_row(lines[i], i);
        const char *op = get_str(r, "op", i);
        cr_assert(strcmp(op, "+") == 0 || strcmp(op, "-") == 0, "row %d: op %s", i, op);
        seen[op[0] == '-']++;
        json_decref(r);
    }
    cr_assert(seen[0] > 400 && seen[1] > 400, "+ %d, - %d", seen[0], seen[1]);
    free(buf);
}

/* Train and test rows of any seeds never share a prompt, and the test
 * split holds about test_percent of the problems. */
Test(datagen, train_and_test_splits_are_disjoint)
{
    for (int t = 0; t < 2; t++) {
        struct datagen_opts o;
        datagen_opts_default(&o);
        o.test_percent = 10;
        o.split = DATAGEN_SPLIT_TRAIN;
        char *tr = gen_opts(t, DATAGEN_FORMAT_RL, &o, 2000, 1);
        o.split = DATAGEN_SPLIT_TEST;
        char *te = gen_opts(t, DATAGEN_FORMAT_RL, &o, 500, 2);
        o.split = DATAGEN_SPLIT_ALL;
        char *all = gen_opts(t, DATAGEN_FORMAT_RL, &o, 2000, 3);
        static char *ltr[2000], *lte[500], *lall[2000];
        cr_assert_eq(split_lines(tr, ltr, 2000), 2000);
        cr_assert_eq(split_lines(te, lte, 500), 500);
        cr_assert_eq(split_lines(all, lall, 2000), 2000);
        json_t *test_prompts = json_object();
        for (int i = 0; i < 500; i++) {
            json_t *r = parse_row(lte[i], i);
            json_object_set_new(test_prompts, get_str(r, "prompt", i), json_true());
            json_decref(r);
        }
        int in_test = 0;
        for (int i = 0; i < 2000; i++) {
            json_t *r = parse_row(ltr[i], i), *a = parse_row(lall[i], i);
            cr_assert_null(json_object_get(test_prompts, get_str(r, "prompt", i)),
                           "task %d: train row %d poses a test problem", t, i);
            in_test += json_object_get(test_prompts, get_str(a, "prompt", i)) != NULL;
            json_decref(r);
            json_decref(a);
        }
        /* only the 500 test rows drawn are known, so this bounds from below */
        cr_assert(in_test < 2000 * 15 / 100, "task %d: %d of 2000 in the test split", t,
                  in_test);
        json_decref(test_prompts);
        free(tr);
        free(te);
        free(all);
    }
}

/* Noisy text rows: about answer_noise of them reach a wrong answer that is
 * off by 1 or 10 and stated consistently ("So N." and the answer); about
 * format_noise take one of the three broken shapes; RL rows stay correct
 * and pose the same problems. */
Test(datagen, noise_breaks_answers_and_tags_in_the_given_fractions)
{
    struct datagen_opts o;
    datagen_opts_default(&o);
    o.ops = "+-*";
    o.answer_noise = 0.25;
    o.format_noise = 0.3;
    char *tx = gen_opts(DATAGEN_TASK_ARITHMETIC, DATAGEN_FORMAT_TEXT, &o, N_ROWS, 8);
    char *rl = gen_opts(DATAGEN_TASK_ARITHMETIC, DATAGEN_FORMAT_RL, &o, N_ROWS, 8);
    static char *lt[N_ROWS], *lr[N_ROWS];
    cr_assert_eq(split_lines(tx, lt, N_ROWS), N_ROWS);
    cr_assert_eq(split_lines(rl, lr, N_ROWS), N_ROWS);
    int wrong = 0, shapes[4] = { 0 };
    for (int i = 0; i < N_ROWS; i++) {
        json_t *r = parse_row(lr[i], i), *t = parse_row(lt[i], i);
        const char *text = get_str(t, "text", i);
        char head[128], ans[32];
        snprintf(head, sizeof head, "User: %s\nAssistant: ", get_str(r, "prompt", i));
        cr_assert_eq(strncmp(text, head, strlen(head)), 0, "row %d: %s", i, text);
        cr_assert(strlen(text) < 200, "row %d: %zu bytes", i, strlen(text));
        const char *body = text + strlen(head), *so = strstr(body, " So ");
        cr_assert_not_null(so, "row %d: %s", i, text);
        long stated = strtol(so + 4, NULL, 10), want = strtol(get_str(r, "answer", i), NULL, 10);
        long d = labs(stated - want);
        cr_assert(d == 0 || d == 1 || d == 10, "row %d: %ld for %ld: %s", i, stated, want, text);
        wrong += d != 0;
        snprintf(ans, sizeof ans, "%ld", stated);
        int shape;
        if (strncmp(body, "<think>", 7) != 0) {
            shape = 1;
            cr_assert_null(strchr(body, '<'), "row %d: %s", i, text);
        } else if (strstr(body, "</think> The answer is ")) {
            shape = 2;
            cr_assert_null(strstr(body, "<answer>"), "row %d: %s", i, text);
        } else if (!strstr(body, "</think>")) {
            shape = 3;
        } else {
            shape = 0;
        }
        if (shape != 1) {
            char got[32];
            const char *open = shape == 2 ? "The answer is " : "<answer>";
            const char *close = shape == 2 ? "." : "</answer>";
            cr_assert_eq(extract_tag(so + 4, open, close, got, sizeof got), 0, "row %d", i);
            cr_assert_str_eq(got, ans, "row %d: %s", i, text);
        }
        shapes[shape]++;
        json_decref(r);
        json_decref(t);
    }
    cr_assert(wrong > N_ROWS * 20 / 100 && wrong < N_ROWS * 30 / 100, "%d wrong", wrong);
    int broken = shapes[1] + shapes[2] + shapes[3];
    cr_assert(broken > N_ROWS * 25 / 100 && broken < N_ROWS * 35 / 100, "%d broken", broken);
    for (int s = 1; s < 4; s++)
        cr_assert(shapes[s] > broken / 5, "shape %d: %d of %d", s, shapes[s], broken);
    free(tx);
    free(rl);
}

Test(datagen, write_opts_rejects_bad_options)
{
    static const struct {
        const char *ops;
        enum datagen_split split;
        int pct;
        double an, fn;
        enum datagen_task task;
    } bad[] = {
        { "", DATAGEN_SPLIT_ALL, 0, 0, 0, DATAGEN_TASK_ARITHMETIC },
        { "+/", DATAGEN_SPLIT_ALL, 0, 0, 0, DATAGEN_TASK_ARITHMETIC },
        { "+", DATAGEN_SPLIT_TRAIN, 0, 0, 0, DATAGEN_TASK_ARITHMETIC },
        { "+", DATAGEN_SPLIT_TEST, 100, 0, 0, DATAGEN_TASK_ARITHMETIC },
        { "+", DATAGEN_SPLIT_ALL, 0, 1.01, 0, DATAGEN_TASK_ARITHMETIC },
        { "+", DATAGEN_SPLIT_ALL, 0, 0, -0.1, DATAGEN_TASK_ARITHMETIC },
        { "+-*", DATAGEN_SPLIT_ALL, 0, 0, 0.2, DATAGEN_TASK_COUNTDOWN },
        { "+", DATAGEN_SPLIT_ALL, 0, 0, 0, DATAGEN_TASK_COUNTDOWN },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct datagen_opts o;
        datagen_opts_default(&o);
        o.ops = bad[i].ops;
        o.split = bad[i].split;
        o.test_percent = bad[i].pct;
        o.answer_noise = bad[i].an;
        o.format_noise = bad[i].fn;
        char err[256] = "";
        FILE *f = tmpfile();
        cr_assert_not_null(f);
        cr_assert_eq(datagen_write_opts(bad[i].task, DATAGEN_FORMAT_TEXT, &o, 5, 1, f, err,
                                        sizeof err), -1, "case %zu accepted", i);
        cr_assert(err[0] != 0, "case %zu: no message", i);
        cr_assert_eq(ftell(f), 0, "case %zu: wrote rows", i);
        fclose(f);
    }
    enum datagen_split s;
    cr_assert_eq(datagen_split_parse("test", &s), 0);
    cr_assert_eq(s, DATAGEN_SPLIT_TEST);
    cr_assert_eq(datagen_split_parse("eval", &s), -1);
}

Test(datagen, cli_options_reach_the_generator)
{
    const char *argv[] = { "datagen", "arithmetic", "--n", "40", "--seed", "3", "--format",
                           "text", "--ops=+-", "--split", "test", "--test-percent", "20",
                           "--answer-noise", "0.5", "--format-noise=0.25", "--out", NULL };
    char *got = cli_output(18, argv);
    struct datagen_opts o;
    datagen_opts_default(&o);
    o.ops = "+-";
    o.split = DATAGEN_SPLIT_TEST;
    o.test_percent = 20;
    o.answer_noise = 0.5;
    o.format_noise = 0.25;
    char *want = gen_opts(DATAGEN_TASK_ARITHMETIC, DATAGEN_FORMAT_TEXT, &o, 40, 3);
    cr_assert_str_eq(got, want);
    free(want);    free(got);
}

Test(datagen, cli_rejects_bad_options, .init = cr_redirect_stderr)
{
    static const char *bad[][10] = {
        { "datagen", "arithmetic", "--n", "5", "--seed", "1", "--split", "dev" },
        { "datagen", "arithmetic", "--n", "5", "--seed", "1", "--split", "test" },
        { "datagen", "arithmetic", "--n", "5", "--seed", "1", "--test-percent", "10" },
        { "datagen", "arithmetic", "--n", "5", "--seed", "1", "--split", "test",
          "--test-percent", "100" },                                /* one past the limit */
        { "datagen", "arithmetic", "--n", "5", "--seed", "1", "--split", "test",
          "--test-percent", "0" },
        { "datagen", "arithmetic", "--n", "5", "--seed", "1", "--answer-noise", "1.5" },
        { "datagen", "arithmetic", "--n", "5", "--seed", "1", "--format-noise", "x" },
        { "datagen", "arithmetic", "--n", "5", "--seed", "1", "--format-noise", "-0.1" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int argc = 0;
        while (argc < 10 && bad[i][argc])
            argc++;
        cr_assert_eq(run_cli(argc, bad[i]), 2, "case %zu accepted", i);
    }
    const char *ops[] = { "datagen", "arithmetic", "--n", "5", "--seed", "1", "--ops", "/" };
    cr_assert_eq(run_cli(8, ops), 1, "bad ops accepted");
}
