/* engine/datagen.h — synthetic task data for R1-Zero-style RL on a tiny
 * model: arithmetic and countdown problems as RL rows (prompt + answer) or as
 * worked-solution pretraining text. Deterministic: the output depends only on
 * the task, format, row count and seed. Not a general dataset library. */
#ifndef AHA_DATAGEN_H
#define AHA_DATAGEN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Most rows one call may write (the CLI's --n limit). */
#define DATAGEN_MAX_ROWS 10000000L

enum datagen_task {
    DATAGEN_TASK_ARITHMETIC,    /* "What is 47 + 38?" with +, -, * */
    DATAGEN_TASK_COUNTDOWN,     /* TinyZero countdown: 3-4 numbers, a target */
};

enum datagen_format {
    /* {"prompt","answer",...task fields} — the RL dataset shape. */
    DATAGEN_FORMAT_RL,
    /* {"text": "User: <prompt>\nAssistant: <think>...</think>
     * <answer>...</answer>"} — worked solutions as pretraining text, using
     * the same prompt as the RL row. */
    DATAGEN_FORMAT_TEXT,
};

/* Which problems a call draws from. A problem is in the test split when a
 * hash of its prompt text falls in the lowest test_percent of 100 buckets,
 * so train and test rows never pose the same problem, whatever the seeds. */
enum datagen_split {
    DATAGEN_SPLIT_ALL,
    DATAGEN_SPLIT_TRAIN,
    DATAGEN_SPLIT_TEST,
};

/* Knobs beyond task, format, count and seed; datagen_opts_default gives
 * the output of datagen_write. */
struct datagen_opts {
    const char *ops;            /* arithmetic: operators to draw from, a
                                 * subset of "+-*" (borrowed) */
    enum datagen_split split;
    int test_percent;           /* 1..99 unless split is ALL */
    /* Arithmetic text rows only, fractions in 0..1 drawn per row:
     * answer_noise: one column's written result is off by one and the
     * answer follows it (a wrong but well-formed solution);
     * format_noise: the row takes one of three broken shapes, equally
     * often: no tags, "</think> The answer is N.", no "</think>". */
    double answer_noise;
    double format_noise;
};

void datagen_opts_default(struct datagen_opts *o);

/* Parses "arithmetic" / "countdown". Returns 0, or -1 when unknown. */
int datagen_task_parse(const char *s, enum datagen_task *task);
/* Parses "rl" / "text". Returns 0, or -1 when unknown. */
int datagen_format_parse(const char *s, enum datagen_format *format);
/* Parses "all" / "train" / "test". Returns 0, or -1 when unknown. */
int datagen_split_parse(const char *s, enum datagen_split *split);

/* Writes n rows of JSONL (one compact JSON object a line) to out, which the
 * caller owns. n must be in 1..DATAGEN_MAX_ROWS. Row i depends only on
 * (task, seed, i), so a smaller n gives a prefix of a larger one; text rows
 * are under 200 bytes. Returns 0, or -1 with err filled (bad n, write error). */
int datagen_write(enum datagen_task task, enum datagen_format format, long n,
                  uint64_t seed, FILE *out, char *err, size_t errlen);
/* datagen_write with opts (borrowed). Row i depends only on (task, opts,
 * seed, i). Also -1 with err filled when opts are out of range (ops and
 * noise are for arithmetic only). */
int datagen_write_opts(enum datagen_task task, enum datagen_format format,
                       const struct datagen_opts *opts, long n, uint64_t seed, FILE *out,
                       char *err, size_t errlen);

#endif
