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

/* Parses "arithmetic" / "countdown". Returns 0, or -1 when unknown. */
int datagen_task_parse(const char *s, enum datagen_task *task);
/* Parses "rl" / "text". Returns 0, or -1 when unknown. */
int datagen_format_parse(const char *s, enum datagen_format *format);

/* Writes n rows of JSONL (one compact JSON object a line) to out, which the
 * caller owns. n must be in 1..DATAGEN_MAX_ROWS. Row i depends only on
 * (task, seed, i), so a smaller n gives a prefix of a larger one; text rows
 * are under 200 bytes. Returns 0, or -1 with err filled (bad n, write error). */
int datagen_write(enum datagen_task task, enum datagen_format format, long n,
                  uint64_t seed, FILE *out, char *err, size_t errlen);

#endif
