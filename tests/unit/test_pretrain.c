/* tests/unit/test_pretrain.c — the pretraining schedule and text loading. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "pretrain.h"

Test(pretrain, warmup_then_cosine)
{
    struct pretrain_opts o;
    pretrain_opts_default(&o);
    o.steps = 100;
    o.warmup_steps = 10;
    o.lr = 1e-3f;
    o.min_lr_ratio = 0.1f;
    cr_expect_float_eq(pretrain_lr(&o, 0), 1e-4f, 1e-9f);
    cr_expect_float_eq(pretrain_lr(&o, 9), 1e-3f, 1e-9f);
    cr_expect_float_eq(pretrain_lr(&o, 10), 1e-3f, 1e-9f);
    cr_expect_float_eq(pretrain_lr(&o, 99), 1e-4f, 1e-9f);
    /* halfway through the decay: (min + max) / 2 */
    float mid = pretrain_lr(&o, 10 + 89 / 2);
    cr_expect(fabsf(mid - 5.5e-4f) < 1e-5f, "mid %g", mid);
    for (int s = 10; s < 99; s++)
        cr_expect(pretrain_lr(&o, s + 1) <= pretrain_lr(&o, s), "monotone after warmup");
}

static char *write_tmp(const char *text)
{
    static char path[64];
    strcpy(path, "/tmp/aha-pt-XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

Test(pretrain, text_stream_has_eos_between_rows)
{
    char err[512], tp[] = "/tmp/aha-tok-XXXXXX";
    int fd = mkstemp(tp);
    close(fd);
    cr_assert_eq(tok_write_bytelevel(tp, err, sizeof err), 0, "%s", err);
    struct tokenizer *tok = tok_load(tp, err, sizeof err);
    cr_assert_not_null(tok, "%s", err);
    char *p = write_tmp("{\"text\":\"ab\"}\n\n{\"text\":\"c\",\"extra\":1}\n");
    int32_t *ids = NULL;
    long n = pretrain_load_text(p, tok, 256, &ids, err, sizeof err);
    cr_assert_eq(n, 5, "%s", err);
    int32_t want[] = {'a', 'b', 256, 'c', 256};
    cr_expect_arr_eq(ids, want, sizeof want);
    free(ids);
    unlink(p);
    const char *bad[][2] = {
        {"{\"text\":\"a\"}\n[1,2]\n", ":2: row is not a JSON object"},
        {"{\"text\":5}\n", ":1: field \"text\" is not a string"},
        {"{\"text\":\"a\"}\n{\"text\":\"b\"\n", ":2:"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        p = write_tmp(bad[i][0]);
        ids = NULL;
        cr_expect_eq(pretrain_load_text(p, tok, 256, &ids, err, sizeof err), -1);
        cr_expect(strstr(err, bad[i][1]) && strstr(err, p), "case %zu: %s", i, err);
        cr_expect_null(ids);
        unlink(p);
    }
    tok_free(tok);
    unlink(tp);
}

/* A stop request: the step finishes, a resumable checkpoint is written
 * (weights, AdamW state, trainer_state.json with step and RNG), the run
 * returns TRAIN_STOPPED; the state reads back, and a damaged one is an
 * error naming the file. */
Test(pretrain, stop_writes_a_resumable_checkpoint)
{
    char err[1024], dir[] = "/tmp/aha-ckpt-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char *data = write_tmp("{\"text\":\"1 + 2 = 3. 4 + 5 = 9. 7 + 1 = 8. 2 + 2 = 4. 6 + 3 = 9.\"}\n");
    char out[256], ckpt[300], state[400], cmd[600];
    snprintf(out, sizeof out, "%s/out", dir);
    volatile sig_atomic_t stop = 1;
    struct train_ctl ctl = {.pipeline = "p", .stop = &stop};
    struct pretrain_opts o;
    pretrain_opts_default(&o);
    o.config = "tiny";
    o.data = data;
    o.out = out;
    o.steps = 5;
    o.batch = 1;
    o.seq_len = 8;
    o.ctl = &ctl;
    FILE *ev = tmpfile();
    cr_assert_eq(pretrain_run(&o, backend_cpu(), ev, err, sizeof err), TRAIN_STOPPED, "%s", err);
    snprintf(ckpt, sizeof ckpt, "%s/checkpoints/step-1", out);
    cr_expect_str_eq(ctl.stopped_at, ckpt);
    json_t *st = ckpt_read(ckpt, err, sizeof err);
    cr_assert_not_null(st, "%s", err);
    cr_expect_eq(json_integer_value(json_object_get(st, "step")), 1);
    cr_expect_eq(json_integer_value(json_object_get(st, "steps")), 5);
    cr_expect_eq(json_integer_value(json_object_get(st, "adam_step")), 1);
    cr_expect_str_eq(json_string_value(json_object_get(st, "pipeline")), "p");
    cr_expect_eq(json_array_size(json_object_get(st, "rng")), 4);
    json_decref(st);
    snprintf(state, sizeof state, "%s/" CKPT_STATE_FILE, ckpt);
    FILE *f = fopen(state, "w");
    cr_assert_not_null(f);
    fputs("{\"format\": \"other\", \"version\": 1}", f);
    fclose(f);
    cr_expect_null(ckpt_read(ckpt, err, sizeof err));
    cr_expect(strstr(err, state) && strstr(err, "\"format\""), "%s", err);
    fclose(ev);
    unlink(data);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}
