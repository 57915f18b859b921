/* engine/datagen.c — generators for the synthetic arithmetic and countdown
 * tasks (see datagen.h). Owns its PRNG (splitmix64-seeded xoshiro256**) so
 * the data never depends on libc's rand. Knows nothing about tokenizers or
 * models; the CLI lives in cli_datagen.c. */
#include "datagen.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <string.h>

#include <jansson.h>

/* Text rows stay below this many bytes (a tiny byte-level model's context
 * must hold prompt and worked solution). */
#define DATAGEN_TEXT_MAX 200
/* Countdown: every intermediate value and the target lie in 1..CD_MAX_VALUE. */
#define CD_MAX_VALUE 999
#define CD_MAX_NUMS 4

/* ------------------------------------------------------------ PRNG -- */

/* xoshiro256** 1.0 (Blackman & Vigna, 2018), seeded with splitmix64. */
struct dg_rng {
    uint64_t s[4];
};

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl64(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(struct dg_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl64(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

/* Row `row`'s own stream: a function of (seed, row) only. */
static void rng_seed_row(struct dg_rng *r, uint64_t seed, uint64_t row)
{
    uint64_t a = seed, b = row ^ 0x632BE59BD9B4E019ull;
    uint64_t x = splitmix64(&a) ^ rotl64(splitmix64(&b), 29);
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

/* Uniform integer in lo..hi (inclusive), without modulo bias. */
static int rng_int(struct dg_rng *r, int lo, int hi)
{
    uint64_t n = (uint64_t)(hi - lo) + 1, x;
    uint64_t reject_below = (0 - n) % n;    /* 2^64 mod n */
    do
        x = rng_next(r);
    while (x < reject_below);
    return lo + (int)(x % n);
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
static void arith_gen(struct dg_rng *r, struct arith *p)
{
    static const char ops[3] = { '+', '-', '*' };
    p->op = ops[rng_int(r, 0, 2)];
    p->a = rng_int(r, 10, 99);
    if (p->op == '*') {
        p->b = rng_int(r, 2, 9);
        p->answer = p->a * p->b;
    } else {
        p->b = rng_int(r, 10, 99);
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

static void countdown_gen(struct dg_rng *r, struct countdown *p)
{
    static const char ops[4] = { '+', '-', '*', '/' };
    int pool[CD_MAX_NUMS], n_pool;

    p->k = rng_int(r, 3, 4);
    for (int i = 0; i < p->k; i++) {
        p->nums[i] = rng_int(r, 1, 99);
        p->nodes[i] = (struct cd_node){ .op = 0, .val = p->nums[i], .l = -1, .r = -1 };
        pool[i] = i;
    }
    p->n_nodes = n_pool = p->k;
    while (n_pool > 1) {
        int i = rng_int(r, 0, n_pool - 1);
        int j = rng_int(r, 0, n_pool - 2);
        if (j >= i)
            j++;
        int li = pool[i], ri = pool[j];
        /* The drawn operator, else the first of + - / * that works; one
         * always does for a, b in 1..CD_MAX_VALUE (a - b unless a == b,
         * then a / b = 1). */
        int first = rng_int(r, 0, 3), val = 0;
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
static void countdown_text(const struct countdown *p, struct dg_rng *dead_end_rng,
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
        struct dg_rng *r = dead_end_rng;
        int i = rng_int(r, 0, p->k - 1), j = rng_int(r, 0, p->k - 2), val;
        if (j >= i)
            j++;
        int a = p->nums[i], c = p->nums[j];
        char op = "+-*"[rng_int(r, 0, 2)];
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
    struct dg_rng r;
    struct dg_buf prompt = { .len = 0 }, answer = { .len = 0 };
    json_t *o = json_object();

    rng_seed_row(&r, seed, (uint64_t)row);
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
    if (rng_int(&r, 0, 1)) {
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
