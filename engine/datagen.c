/* engine/datagen.c — generators for the synthetic arithmetic and countdown
 * tasks (see datagen.h). Draws from rng.h (xoshiro256**, one stream per
 * row), never libc's rand. Knows nothing about tokenizers or models; the CLI
 * lives in cli_datagen.c. */
#include "datagen.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <string.h>

#include <jansson.h>

#include "rng.h"

/* Text rows stay below this many bytes (a tiny byte-level model's context
 * must hold prompt and worked solution). */
#define DATAGEN_TEXT_MAX 200
/* Countdown: every intermediate value and the target lie in 1..CD_MAX_VALUE. */
#define CD_MAX_VALUE 999
#define CD_MAX_NUMS 4
/* Draws one row may take to find a problem of its split (at the smallest
 * split of 1% the chance of missing is 0.99^10000, about 2e-44). */
#define DATAGEN_MAX_DRAWS 10000

/* ------------------------------------------------------ randomness -- */

/* Row `row`'s own xoshiro256** stream (rng.h): a function of (seed, row)
 * only, so rows do not depend on how many came before. */
static void row_rng_seed(struct rng *r, uint64_t seed, uint64_t row)
{
    uint64_t a = seed, b = row ^ 0x632BE59BD9B4E019ull;
    uint64_t x = rng_splitmix64(&a) ^ rng_splitmix64(&b);
    for (int i = 0; i < 4; i++)
        r->s[i] = rng_splitmix64(&x);
}

/* Uniform integer in lo..hi (inclusive). */
static int draw_int(struct rng *r, int lo, int hi)
{
    return lo + (int)rng_below(r, (uint64_t)(hi - lo) + 1);
}

/* ------------------------------------------------------- text buffer -- */

struct dg_buf {
    char s[512];
    size_t len;
};

static void buf_add(struct dg_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Appends; output past the buffer is dropped (callers stay far below it). */
static void buf_add(struct dg_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(b->s + b->len, sizeof b->s - b->len, fmt, ap);
    va_end(ap);
    if (k > 0)
        b->len += (size_t)k < sizeof b->s - b->len ? (size_t)k : sizeof b->s - 1 - b->len;
}

/* ------------------------------------------------------- arithmetic -- */

struct arith {
    int a, b;
    char op;        /* '+', '-', '*' */
    int answer;
};

/* +: two 2-digit numbers; -: two 2-digit numbers, a >= b; *: 2-digit times
 * 1-digit (2..9), so every answer is a short natural number. The operator
 * is drawn uniformly from ops (a non-empty subset of "+-*"). */
static void arith_gen(struct rng *r, const char *ops, struct arith *p)
{
    p->op = ops[draw_int(r, 0, (int)strlen(ops) - 1)];
    p->a = draw_int(r, 10, 99);
    if (p->op == '*') {
        p->b = draw_int(r, 2, 9);
        p->answer = p->a * p->b;
    } else {
        p->b = draw_int(r, 10, 99);
        if (p->op == '-' && p->a < p->b) {
            int t = p->a;
            p->a = p->b;
            p->b = t;
        }
        p->answer = p->op == '+' ? p->a + p->b : p->a - p->b;
    }
}

static void arith_prompt(const struct arith *p, struct dg_buf *b)
{
    buf_add(b, "What is %d %c %d?", p->a, p->op, p->b);
}

/* A slip in the worked solution (answer noise): the result written for
 * one column is off by delta (+-1), and the answer follows it, as when a
 * child adds 7 + 8 = 16 and carries on. No slip when col == 0. */
struct arith_slip {
    int col;        /* 0 none, 1 ones column, 2 tens column */
    int delta;      /* -1 or +1 */
};

/* Draws a slip that keeps the written ones digit in 0..9 (so the carry is
 * the true one) and the tens result non-negative. */
static struct arith_slip arith_slip_draw(struct rng *r, const struct arith *p)
{
    struct arith_slip s = { .col = draw_int(r, 1, 2), .delta = draw_int(r, 0, 1) ? 1 : -1 };
    int a1 = p->a / 10, a0 = p->a % 10, b1 = p->b / 10, b0 = p->b % 10, digit, tens;
    if (p->op == '+') {
        digit = (a0 + b0) % 10;
        tens = a1 + b1 + (a0 + b0 >= 10);
    } else if (p->op == '-') {
        digit = (a0 - b0 + 10) % 10;
        tens = a1 - b1 - (a0 < b0);
    } else {
        digit = (a0 * p->b) % 10;
        tens = a1 * p->b + a0 * p->b / 10;
    }
    int v = s.col == 1 ? digit : tens;
    if (v + s.delta < 0 || (s.col == 1 && v + s.delta > 9))
        s.delta = -s.delta;
    return s;
}

/* The answer a solution with this slip arrives at. */
static int arith_slipped_answer(const struct arith *p, struct arith_slip s)
{
    return p->answer + (s.col == 1 ? s.delta : s.col == 2 ? 10 * s.delta : 0);
}

/* The column method, one digit at a time, as a child would write it, with
 * an optional slip (arith_slip); ends "So <answer>.". */
static void arith_worked(const struct arith *p, struct arith_slip slip, struct dg_buf *b)
{
    int a1 = p->a / 10, a0 = p->a % 10, b1 = p->b / 10, b0 = p->b % 10;
    int d0 = slip.col == 1 ? slip.delta : 0, d1 = slip.col == 2 ? slip.delta : 0;
    buf_add(b, "%d %c %d: ", p->a, p->op, p->b);
    if (p->op == '+') {
        int s0 = a0 + b0;
        if (s0 >= 10)
            buf_add(b, "%d + %d = %d, carry 1; %d + %d + 1 = %d.", a0, b0, s0 + d0,
                    a1, b1, a1 + b1 + 1 + d1);
        else
            buf_add(b, "%d + %d = %d; %d + %d = %d.", a0, b0, s0 + d0, a1, b1,
                    a1 + b1 + d1);
    } else if (p->op == '-') {
        if (a0 < b0)
            buf_add(b, "%d - %d needs a borrow, %d - %d = %d; %d - 1 - %d = %d.",
                    a0, b0, a0 + 10, b0, a0 + 10 - b0 + d0, a1, b1, a1 - 1 - b1 + d1);
        else
            buf_add(b, "%d - %d = %d; %d - %d = %d.", a0, b0, a0 - b0 + d0, a1, b1,
                    a1 - b1 + d1);
    } else {
        int p0 = a0 * p->b;
        buf_add(b, "%d * %d = %d, write %d carry %d; %d * %d + %d = %d.", a0, p->b,
                p0 + d0, p0 % 10 + d0, p0 / 10, a1, p->b, p0 / 10,
                a1 * p->b + p0 / 10 + d1);
    }
    buf_add(b, " So %d.", arith_slipped_answer(p, slip));
}

/* Format noise: the text shapes a base model sees besides the tagged one. */
enum arith_shape {
    SHAPE_TAGGED,           /* <think>W</think> <answer>A</answer> */
    SHAPE_BARE,             /* W (no tags) */
    SHAPE_ANSWER_UNTAGGED,  /* <think>W</think> The answer is A. */
    SHAPE_THINK_UNCLOSED,   /* <think>W <answer>A</answer> */
};

/* -------------------------------------------------------- countdown -- */

/* An expression tree over the numbers: k leaves, then k-1 internal nodes in
 * creation order, which is also a valid order to evaluate them in. */
struct cd_node {
    char op;        /* 0 for a leaf, else '+', '-', '*', '/' */
    int val;
    int l, r;       /* children (internal nodes only) */
};

struct countdown {
    int k;
    int nums[CD_MAX_NUMS];
    int target;
    int n_nodes;
    struct cd_node nodes[2 * CD_MAX_NUMS - 1];
};

/* Combines a op b into *val when the result is a natural number in
 * 1..CD_MAX_VALUE, swapping operands where that makes it so (larger minus
 * smaller, exact division either way). Returns false when impossible. */
static bool cd_combine(char op, int *a, int *b, int *val)
{
    int t;
    switch (op) {
    case '+':
        *val = *a + *b;
        break;
    case '-':
        if (*a < *b) {
            t = *a; *a = *b; *b = t;
        }
        *val = *a - *b;
        break;
    case '*':
        *val = *a * *b;
        break;
    default:
        if (*a % *b != 0) {
            if (*b % *a != 0)
                return false;
            t = *a; *a = *b; *b = t;
        }
        *val = *a / *b;
        break;
    }
    return *val >= 1 && *val <= CD_MAX_VALUE;
}

static void countdown_gen(struct rng *r, struct countdown *p)
{
    static const char ops[4] = { '+', '-', '*', '/' };
    int pool[CD_MAX_NUMS], n_pool;

    p->k = draw_int(r, 3, 4);
    for (int i = 0; i < p->k; i++) {
        p->nums[i] = draw_int(r, 1, 99);
        p->nodes[i] = (struct cd_node){ .op = 0, .val = p->nums[i], .l = -1, .r = -1 };
        pool[i] = i;
    }
    p->n_nodes = n_pool = p->k;
    while (n_pool > 1) {
        int i = draw_int(r, 0, n_pool - 1);
        int j = draw_int(r, 0, n_pool - 2);
        if (j >= i)
            j++;
        int li = pool[i], ri = pool[j];
        /* The drawn operator, else the first of + - / * that works; one
         * always does for a, b in 1..CD_MAX_VALUE (a - b unless a == b,
         * then a / b = 1). */
        int first = draw_int(r, 0, 3), val = 0;
        char op = 0;
        for (int t = -1; t < 4 && !op; t++) {
            char cand = t < 0 ? ops[first] : "+-/*"[t];
            int a = p->nodes[li].val, b = p->nodes[ri].val;
            if (cd_combine(cand, &a, &b, &val)) {
                op = cand;
                if (a != p->nodes[li].val) {    /* cd_combine swapped them */
                    int tmp = li;
                    li = ri;
                    ri = tmp;
                }
            }
        }
        struct cd_node *nd = &p->nodes[p->n_nodes];
        *nd = (struct cd_node){ .op = op, .val = val, .l = li, .r = ri };
        /* Replace the two operands in the pool with the new node. */
        int hi = i > j ? i : j, lo = i < j ? i : j;
        pool[hi] = pool[--n_pool];
        pool[lo] = p->n_nodes++;
    }
    p->target = p->nodes[p->n_nodes - 1].val;
}

static int cd_prec(char op)
{
    return op == 0 ? 3 : (op == '+' || op == '-') ? 1 : 2;
}

/* Infix with only the parentheses standard precedence needs: evaluation is
 * left to right at equal precedence, so a right operand of equal precedence
 * keeps them, except a + (b + c) and a * (b * c), equal in exact arithmetic. */
static void cd_print(const struct countdown *p, int node, struct dg_buf *b)
{
    const struct cd_node *nd = &p->nodes[node];
    if (nd->op == 0) {
        buf_add(b, "%d", nd->val);
        return;
    }
    bool pl = cd_prec(p->nodes[nd->l].op) < cd_prec(nd->op);
    char rop = p->nodes[nd->r].op;
    bool pr = cd_prec(rop) <= cd_prec(nd->op) && !(rop == nd->op && (rop == '+' || rop == '*'));
    buf_add(b, "%s", pl ? "(" : "");
    cd_print(p, nd->l, b);
    buf_add(b, "%s %c %s", pl ? ")" : "", nd->op, pr ? "(" : "");
    cd_print(p, nd->r, b);
    buf_add(b, "%s", pr ? ")" : "");
}

static void countdown_prompt(const struct countdown *p, struct dg_buf *b)
{
    buf_add(b, "Using the numbers [");
    for (int i = 0; i < p->k; i++)
        buf_add(b, "%s%d", i ? ", " : "", p->nums[i]);
    buf_add(b, "], create an equation that equals %d.", p->target);
}

/* The whole text row: prompt, then <think> with a short search (with
 * dead_end_rng, one dead end on two of the numbers), the solution's steps in
 * evaluation order and the result, then the equation in <answer>. */
static void countdown_text(const struct countdown *p, struct rng *dead_end_rng,
                           struct dg_buf *b)
{
    b->len = 0;
    b->s[0] = 0;
    buf_add(b, "User: ");
    countdown_prompt(p, b);
    buf_add(b, "\nAssistant: <think>");
    if (dead_end_rng) {
        /* a op c over two of the numbers, whose value is none of the
         * solution's (so the step rejected is never one it takes). */
        struct rng *r = dead_end_rng;
        int i = draw_int(r, 0, p->k - 1), j = draw_int(r, 0, p->k - 2), val;
        if (j >= i)
            j++;
        int a = p->nums[i], c = p->nums[j];
        char op = "+-*"[draw_int(r, 0, 2)];
        bool dead = cd_combine(op, &a, &c, &val);
        for (int n = p->k; n < p->n_nodes && dead; n++)
            dead = p->nodes[n].val != val;
        if (dead)
            buf_add(b, "%d %c %d = %d, no. ", a, op, c, val);
    }
    for (int n = p->k; n < p->n_nodes; n++) {
        const struct cd_node *nd = &p->nodes[n];
        buf_add(b, "%s%d %c %d = %d", n > p->k ? ", " : "", p->nodes[nd->l].val,
                nd->op, p->nodes[nd->r].val, nd->val);
    }
    buf_add(b, ". So %d.</think> <answer>", p->target);
    cd_print(p, p->n_nodes - 1, b);
    buf_add(b, "</answer>");
}

/* ------------------------------------------------------------- rows -- */

/* Which split a problem belongs to: a hash of its prompt text, so the
 * train and test splits of any seeds and row counts never share a problem. */
static bool split_accepts(const struct datagen_opts *o, const char *prompt)
{
    if (o->split == DATAGEN_SPLIT_ALL)
        return true;
    uint64_t h = 0xcbf29ce484222325ull;     /* FNV-1a, then splitmix64 */
    for (const char *c = prompt; *c; c++)
        h = (h ^ (unsigned char)*c) * 0x100000001b3ull;
    bool test = rng_splitmix64(&h) % 100 < (uint64_t)o->test_percent;
    return o->split == DATAGEN_SPLIT_TEST ? test : !test;
}

/* Arithmetic text row: the worked solution in the shape and with the slip
 * the noise fractions draw (none at 0: no draws, the default output). */
static void arith_text(const struct arith *p, const struct datagen_opts *o, struct rng *r,
                       const char *prompt, struct dg_buf *text)
{
    struct arith_slip slip = { 0, 0 };
    enum arith_shape shape = SHAPE_TAGGED;
    if (o->answer_noise > 0 && rng_uniform(r) < o->answer_noise)
        slip = arith_slip_draw(r, p);
    if (o->format_noise > 0 && rng_uniform(r) < o->format_noise)
        shape = (enum arith_shape)draw_int(r, SHAPE_BARE, SHAPE_THINK_UNCLOSED);
    struct dg_buf work = { .len = 0 };
    arith_worked(p, slip, &work);
    int ans = arith_slipped_answer(p, slip);
    buf_add(text, "User: %s\nAssistant: ", prompt);
    switch (shape) {
    case SHAPE_TAGGED:
        buf_add(text, "<think>%s</think> <answer>%d</answer>", work.s, ans);
        break;
    case SHAPE_BARE:
        buf_add(text, "%s", work.s);
        break;
    case SHAPE_ANSWER_UNTAGGED:
        buf_add(text, "<think>%s</think> The answer is %d.", work.s, ans);
        break;
    case SHAPE_THINK_UNCLOSED:
        buf_add(text, "<think>%s <answer>%d</answer>", work.s, ans);
        break;
    }
}

/* Returns a new JSON object for row `row`, or NULL when no problem of the
 * requested split came up in DATAGEN_MAX_DRAWS draws. */
static json_t *datagen_row(enum datagen_task task, enum datagen_format format,
                           const struct datagen_opts *opt, uint64_t seed, long row)
{
    struct rng r;
    struct dg_buf prompt = { .len = 0 }, answer = { .len = 0 };
    int draws = 0;

    row_rng_seed(&r, seed, (uint64_t)row);
    if (task == DATAGEN_TASK_ARITHMETIC) {
        struct arith p;
        do {
            if (++draws > DATAGEN_MAX_DRAWS)
                return NULL;
            arith_gen(&r, opt->ops, &p);
            prompt.len = 0;
            arith_prompt(&p, &prompt);
        } while (!split_accepts(opt, prompt.s));
        json_t *o = json_object();
        buf_add(&answer, "%d", p.answer);
        if (format == DATAGEN_FORMAT_RL) {
            char op[2] = { p.op, 0 };
            json_object_set_new(o, "prompt", json_string(prompt.s));
            json_object_set_new(o, "answer", json_string(answer.s));
            json_object_set_new(o, "a", json_integer(p.a));
            json_object_set_new(o, "b", json_integer(p.b));
            json_object_set_new(o, "op", json_string(op));
        } else {
            struct dg_buf text = { .len = 0 };
            arith_text(&p, opt, &r, prompt.s, &text);
            json_object_set_new(o, "text", json_string(text.s));
        }
        return o;
    }

    /* Problems whose text would not fit (only 4-number ones with 3-digit
     * values can: every 3-number text is under 180 bytes) are drawn again,
     * in both formats, so RL rows and text rows of a seed pose the same
     * problems. */
    struct countdown p;
    struct dg_buf text;
    bool fits;
    do {
        if (++draws > DATAGEN_MAX_DRAWS)
            return NULL;
        countdown_gen(&r, &p);
        countdown_text(&p, NULL, &text);
        fits = text.len < DATAGEN_TEXT_MAX;
        prompt.len = 0;
        if (fits && opt->split != DATAGEN_SPLIT_ALL)
            countdown_prompt(&p, &prompt);
    } while (!fits || !split_accepts(opt, prompt.s));
    json_t *o = json_object();
    if (format == DATAGEN_FORMAT_RL) {
        json_t *nums = json_array();
        for (int i = 0; i < p.k; i++)
            json_array_append_new(nums, json_integer(p.nums[i]));
        prompt.len = 0;
        countdown_prompt(&p, &prompt);
        cd_print(&p, p.n_nodes - 1, &answer);
        json_object_set_new(o, "prompt", json_string(prompt.s));
        json_object_set_new(o, "answer", json_string(answer.s));
        json_object_set_new(o, "numbers", nums);
        json_object_set_new(o, "target", json_integer(p.target));
        return o;
    }
    /* Half the texts show a dead end first, when it still fits. */
    if (draw_int(&r, 0, 1)) {
        struct dg_buf longer;
        countdown_text(&p, &r, &longer);
        if (longer.len < DATAGEN_TEXT_MAX)
            text = longer;
    }
    json_object_set_new(o, "text", json_string(text.s));
    return o;
}

/* ---------------------------------------------------------- public -- */

int datagen_task_parse(const char *s, enum datagen_task *task)
{
    if (strcmp(s, "arithmetic") == 0)
        *task = DATAGEN_TASK_ARITHMETIC;
    else if (strcmp(s, "countdown") == 0)
        *task = DATAGEN_TASK_COUNTDOWN;
    else
        return -1;
    return 0;
}

int datagen_format_parse(const char *s, enum datagen_format *format)
{
    if (strcmp(s, "rl") == 0)
        *format = DATAGEN_FORMAT_RL;
    else if (strcmp(s, "text") == 0)
        *format = DATAGEN_FORMAT_TEXT;
    else
        return -1;
    return 0;
}

void datagen_opts_default(struct datagen_opts *o)
{
    memset(o, 0, sizeof *o);
    o->ops = "+-*";
    o->split = DATAGEN_SPLIT_ALL;
}

int datagen_split_parse(const char *s, enum datagen_split *split)
{
    if (strcmp(s, "all") == 0)
        *split = DATAGEN_SPLIT_ALL;
    else if (strcmp(s, "train") == 0)
        *split = DATAGEN_SPLIT_TRAIN;
    else if (strcmp(s, "test") == 0)
        *split = DATAGEN_SPLIT_TEST;
    else
        return -1;
    return 0;
}

int datagen_write(enum datagen_task task, enum datagen_format format, long n,
                  uint64_t seed, FILE *out, char *err, size_t errlen)
{
    struct datagen_opts o;
    datagen_opts_default(&o);
    return datagen_write_opts(task, format, &o, n, seed, out, err, errlen);
}

/* Checks the options against the task; 0 or -1 with err filled. */
static int opts_check(enum datagen_task task, const struct datagen_opts *o, char *err,
                      size_t errlen)
{
    size_t n_ops = o->ops ? strlen(o->ops) : 0;
    if (n_ops == 0 || strspn(o->ops, "+-*") != n_ops) {
        snprintf(err, errlen, "datagen: ops \"%s\": expected one or more of + - *",
                 o->ops ? o->ops : "");
        return -1;
    }
    if (o->split != DATAGEN_SPLIT_ALL && o->split != DATAGEN_SPLIT_TRAIN &&
        o->split != DATAGEN_SPLIT_TEST) {
        snprintf(err, errlen, "datagen: unknown split %d", (int)o->split);
        return -1;
    }
    if (o->split != DATAGEN_SPLIT_ALL && (o->test_percent < 1 || o->test_percent > 99)) {
        snprintf(err, errlen, "datagen: test percent %d out of range 1..99 (a train or test "
                 "split needs both to be non-empty)", o->test_percent);
        return -1;
    }
    if (!(o->answer_noise >= 0 && o->answer_noise <= 1) ||
        !(o->format_noise >= 0 && o->format_noise <= 1)) {
        snprintf(err, errlen, "datagen: noise fractions must be in 0..1");
        return -1;
    }
    if (task != DATAGEN_TASK_ARITHMETIC &&
        (strcmp(o->ops, "+-*") != 0 || o->answer_noise > 0 || o->format_noise > 0)) {
        snprintf(err, errlen, "datagen: ops and noise apply to the arithmetic task only");
        return -1;
    }
    return 0;
}

int datagen_write_opts(enum datagen_task task, enum datagen_format format,
                       const struct datagen_opts *opts, long n, uint64_t seed, FILE *out,
                       char *err, size_t errlen)
{
    if (task != DATAGEN_TASK_ARITHMETIC && task != DATAGEN_TASK_COUNTDOWN) {
        snprintf(err, errlen, "datagen: unknown task %d", (int)task);
        return -1;
    }
    if (format != DATAGEN_FORMAT_RL && format != DATAGEN_FORMAT_TEXT) {
        snprintf(err, errlen, "datagen: unknown format %d", (int)format);
        return -1;
    }
    if (n < 1 || n > DATAGEN_MAX_ROWS) {
        snprintf(err, errlen, "datagen: row count %ld out of range 1..%ld", n,
                 DATAGEN_MAX_ROWS);
        return -1;
    }
    if (opts_check(task, opts, err, errlen))
        return -1;
    for (long i = 0; i < n; i++) {
        json_t *row = datagen_row(task, format, opts, seed, i);
        if (!row) {
            snprintf(err, errlen, "datagen: row %ld: no problem of the %s split in %d draws",
                     i, opts->split == DATAGEN_SPLIT_TEST ? "test" : "train", DATAGEN_MAX_DRAWS);
            return -1;
        }
        char *line = json_dumps(row, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(row);
        if (!line) {
            snprintf(err, errlen, "datagen: row %ld: out of memory", i);
            return -1;
        }
        int rc = fputs(line, out) < 0 || fputc('\n', out) == EOF;
        free(line);
        if (rc) {
            snprintf(err, errlen, "datagen: row %ld: write error: %s", i, strerror(errno));
            return -1;
        }
    }
    if (fflush(out) != 0) {
        snprintf(err, errlen, "datagen: write error: %s", strerror(errno));
        return -1;
    }
    return 0;
}
