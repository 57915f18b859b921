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
 * 1-digit (2..9), so every answer is a short natural number. */
static void arith_gen(struct rng *r, struct arith *p)
{
    static const char ops[3] = { '+', '-', '*' };
    p->op = ops[draw_int(r, 0, 2)];
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

/* The column method, one digit at a time, as a child would write it. */
static void arith_worked(const struct arith *p, struct dg_buf *b)
{
    int a1 = p->a / 10, a0 = p->a % 10, b1 = p->b / 10, b0 = p->b % 10;
    buf_add(b, "%d %c %d: ", p->a, p->op, p->b);
    if (p->op == '+') {
        int s0 = a0 + b0;
        if (s0 >= 10)
            buf_add(b, "%d + %d = %d, carry 1; %d + %d + 1 = %d.", a0, b0, s0,
                    a1, b1, a1 + b1 + 1);
        else
            buf_add(b, "%d + %d = %d; %d + %d = %d.", a0, b0, s0, a1, b1, a1 + b1);
    } else if (p->op == '-') {
        if (a0 < b0)
            buf_add(b, "%d - %d needs a borrow, %d - %d = %d; %d - 1 - %d = %d.",
                    a0, b0, a0 + 10, b0, a0 + 10 - b0, a1, b1, a1 - 1 - b1);
        else
            buf_add(b, "%d - %d = %d; %d - %d = %d.", a0, b0, a0 - b0, a1, b1, a1 - b1);
    } else {
        int p0 = a0 * p->b;
        buf_add(b, "%d * %d = %d, write %d carry %d; %d * %d + %d = %d.", a0, p->b,
                p0, p0 % 10, p0 / 10, a1, p->b, p0 / 10, a1 * p->b + p0 / 10);
    }
    buf_add(b, " So %d.", p->answer);
}

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

/* Returns a new JSON object for row `row`. */
static json_t *datagen_row(enum datagen_task task, enum datagen_format format,
                           uint64_t seed, long row)
{
    struct rng r;
    struct dg_buf prompt = { .len = 0 }, answer = { .len = 0 };
    json_t *o = json_object();

    row_rng_seed(&r, seed, (uint64_t)row);
    if (task == DATAGEN_TASK_ARITHMETIC) {
        struct arith p;
        arith_gen(&r, &p);
        arith_prompt(&p, &prompt);
        buf_add(&answer, "%d", p.answer);
        if (format == DATAGEN_FORMAT_RL) {
            char op[2] = { p.op, 0 };
            json_object_set_new(o, "prompt", json_string(prompt.s));
            json_object_set_new(o, "answer", json_string(answer.s));
            json_object_set_new(o, "a", json_integer(p.a));
            json_object_set_new(o, "b", json_integer(p.b));
            json_object_set_new(o, "op", json_string(op));
        } else {
            struct dg_buf work = { .len = 0 }, text = { .len = 0 };
            arith_worked(&p, &work);
            buf_add(&text, "User: %s\nAssistant: <think>%s</think> <answer>%s</answer>",
                    prompt.s, work.s, answer.s);
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
    do {
        countdown_gen(&r, &p);
        countdown_text(&p, NULL, &text);
    } while (text.len >= DATAGEN_TEXT_MAX);
    if (format == DATAGEN_FORMAT_RL) {
        json_t *nums = json_array();
        for (int i = 0; i < p.k; i++)
            json_array_append_new(nums, json_integer(p.nums[i]));
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

int datagen_write(enum datagen_task task, enum datagen_format format, long n,
                  uint64_t seed, FILE *out, char *err, size_t errlen)
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
    for (long i = 0; i < n; i++) {
        json_t *row = datagen_row(task, format, seed, i);
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
