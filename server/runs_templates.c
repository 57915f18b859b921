/* server/runs_templates.c — the built-in pipelines (r1-zero, sft,
 * pretrain-tiny) with their demo datasets (made by `aha-engine datagen`)
 * and reward, created at first start so a new user starts a run with one
 * call: {"pipeline":"r1-zero","base_model":"tiny-base"}. Idempotent across
 * restarts and across servers (an advisory lock serializes them; existing
 * pipelines are left alone). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runs_internal.h"

#define TEMPLATES_LOCK_KEY "7707001"   /* pg_advisory_lock key of template creation */

static const char *const builtin_names[] = {"r1-zero", "sft", "pretrain-tiny", "r1"};
#define N_BUILTIN (int)(sizeof builtin_names / sizeof *builtin_names)

/* `engine datagen TASK --n N --seed S --format F --out FILE` unless FILE exists. */
static int datagen(struct server *srv, const char *format, const char *n, const char *seed,
                   const char *out, char *err, size_t errlen)
{
    struct stat st;
    if (stat(out, &st) == 0 && st.st_size > 0) return 0;
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    pid_t pid = fork();
    if (pid == 0) {
        int nul = open("/dev/null", O_RDWR);
        dup2(nul, 0);
        dup2(nul, 1);
        dup2(nul, 2);
        sigset_t none;
        sigemptyset(&none);
        pthread_sigmask(SIG_SETMASK, &none, NULL);
        execl(srv->cfg.engine_path, srv->cfg.engine_path, "datagen", "arithmetic", "--n", n,
              "--seed", seed, "--format", format, "--out", tmp, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0 || rename(tmp, out)) {
        snprintf(err, errlen, "aha-engine datagen for %s failed", out);
        return -1;
    }
    return 0;
}

/* The text rows "User: Q\nAssistant: A" as SFT rows {"prompt","completion"}. */
static int text_to_sft(const char *in, const char *out, char *err, size_t errlen)
{
    struct stat st;
    if (stat(out, &st) == 0 && st.st_size > 0) return 0;
    FILE *f = fopen(in, "r"), *g = fopen(out, "w");
    if (!f || !g) {
        if (f) fclose(f);
        if (g) fclose(g);
        snprintf(err, errlen, "cannot convert %s: %s", in, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *row = json_loads(line, 0, NULL);
        const char *t = json_string_value(json_object_get(row, "text"));
        const char *a = t ? strstr(t, "\nAssistant: ") : NULL;
        if (t && a && strncmp(t, "User: ", 6) == 0) {
            json_t *o = json_pack("{s:s%, s:s}", "prompt", t + 6, (size_t)(a - t - 6), "completion",
                                  a + 12);
            char *s = json_dumps(o, JSON_COMPACT);
            fprintf(g, "%s\n", s);
            free(s);
            json_decref(o);
        }
        json_decref(row);
    }
    free(line);
    fclose(f);
    return fclose(g) ? -1 : 0;
}

static int create_all(struct server *srv, char *err, size_t errlen)
{
    char dir[PATH_MAX], rl[PATH_MAX + 32], test[PATH_MAX + 32], text[PATH_MAX + 32],
        sft[PATH_MAX + 32];
    snprintf(dir, sizeof dir, "%s/templates", srv->cfg.data_dir);
    mkdir(dir, 0755);
    snprintf(rl, sizeof rl, "%s/arith-rl.jsonl", dir);
    snprintf(test, sizeof test, "%s/arith-test.jsonl", dir);
    snprintf(text, sizeof text, "%s/arith-text.jsonl", dir);
    snprintf(sft, sizeof sft, "%s/arith-sft.jsonl", dir);
    if (datagen(srv, "rl", "2000", "1", rl, err, errlen) ||
        datagen(srv, "rl", "200", "2", test, err, errlen) ||
        datagen(srv, "text", "20000", "3", text, err, errlen) ||
        text_to_sft(text, sft, err, errlen))
        return -1;
    char rl_id[64], test_id[64], text_id[64], sft_id[64], rw_id[64], acc_id[64], pid[64];
    if (datasets_import_file(srv, rl, "rl", "arith-rl", rl_id, err, errlen) ||
        datasets_import_file(srv, test, "eval", "arith-test", test_id, err, errlen) ||
        datasets_import_file(srv, text, "pretrain", "arith-text", text_id, err, errlen) ||
        datasets_import_file(srv, sft, "sft", "arith-sft", sft_id, err, errlen))
        return -1;
    json_t *r1 = json_pack(
        "{s:s, s:[{s:s, s:f, s:s, s:s}, {s:s, s:f, s:s, s:s}]}", "name", "r1-math", "components",
        "type", "accuracy", "weight", 1.0, "extract", "answer_tag", "reference", "answer", "type",
        "format", "weight", 0.5, "template", "think_answer", "mode", "lenient");
    json_t *acc = json_pack("{s:s, s:[{s:s, s:f, s:s, s:s}]}", "name", "accuracy",
                            "components", "type", "accuracy", "weight", 1.0, "extract",
                            "answer_tag", "reference", "answer");
    int rc = rewards_create(srv, r1, rw_id, err, errlen) || rewards_create(srv, acc, acc_id, err, errlen);
    json_decref(r1);
    json_decref(acc);
    if (rc) return -1;
    /* R1-Zero: GRPO straight on the base model with the parameters of
     * demo/r1-zero.json (tuned on the tiny base: Dr. GRPO loss, DAPO's
     * clip-higher, lr 3e-5), then an accuracy eval. */
    const char *prompt = "User: {prompt}\nAssistant:";
    json_t *zero = json_pack(
        "{s:s, s:s, s:[{s:s, s:s, s:s, s:s, s:s, s:{s:i, s:i, s:i, s:i, s:f, s:f, s:f, s:f, s:s,"
        " s:f, s:f, s:f, s:s, s:i, s:i, s:i}},"
        " {s:s, s:s, s:s, s:s, s:s, s:{s:i, s:i, s:f, s:s, s:i}}]}",
        "name", "r1-zero", "description",
        "R1-Zero: GRPO with rule-based rewards (accuracy + <think> format) on a base model",
        "stages", "name", "rl", "kind", "grpo", "model", "$base", "dataset", rl_id, "reward",
        rw_id, "params", "steps", 200, "prompts_per_step", 8, "group_size", 8,
        "max_completion_length", 96, "learning_rate", 3e-5, "warmup_ratio", 0.05,
        "max_grad_norm", 1.0, "beta", 0.0, "loss_type", "dr_grpo", "epsilon", 0.2,
        "epsilon_high", 0.28, "temperature", 1.0, "prompt_template", prompt, "checkpoint_every",
        50, "log_completions", 2, "seed", 1, "name", "eval", "kind", "eval", "model", "rl",
        "dataset", test_id, "reward", acc_id, "params", "max_completion_length", 96,
        "num_samples", 4, "temperature", 1.0, "prompt_template", prompt, "seed", 1);
    json_t *sftp = json_pack(
        "{s:s, s:s, s:[{s:s, s:s, s:s, s:s, s:{s:i, s:i, s:f, s:i, s:i}}]}", "name", "sft",
        "description", "supervised fine-tuning on worked chain-of-thought solutions", "stages",
        "name", "sft", "kind", "sft", "model", "$base", "dataset", sft_id, "params", "epochs", 1,
        "batch_size", 8, "learning_rate", 1e-4, "checkpoint_every", 100, "seed", 1);
    json_t *pre = json_pack(
        "{s:s, s:s, s:[{s:s, s:s, s:s, s:{s:s, s:i, s:i, s:i}}]}", "name", "pretrain-tiny",
        "description", "pretrain the tiny model from scratch on arithmetic worked solutions",
        "stages", "name", "pretrain", "kind", "pretrain", "dataset", text_id, "params", "config",
        "tiny", "steps", 300, "checkpoint_every", 100, "seed", 1);
    /* R1 (arXiv 2501.12948 §2.3): a cold start (SFT on worked solutions),
     * reasoning GRPO, rejection sampling of the RL model's correct answers,
     * SFT of the base on them, GRPO again, then an eval. Each stage uses
     * the model's own template. Small budgets: a demonstration of the
     * recipe on the tiny model, not a tuned run. */
    char r1s[4096];
    snprintf(r1s, sizeof r1s,
        "{\"name\": \"r1\", \"description\": \"R1: cold-start SFT, reasoning GRPO, rejection sampling, "
        "SFT on the kept samples, GRPO again\", \"stages\": ["
        "{\"name\": \"cold\", \"kind\": \"sft\", \"model\": \"$base\", \"dataset\": \"%s\","
        " \"params\": {\"max_steps\": 300, \"batch_size\": 8, \"learning_rate\": 1e-4,"
        " \"seed\": 1}},"
        "{\"name\": \"rl\", \"kind\": \"grpo\", \"model\": \"cold\", \"dataset\": \"%s\", \"reward\": \"%s\","
        " \"params\": {\"steps\": 100, \"prompts_per_step\": 8, \"group_size\": 8, \"max_completion_length\": 96,"
        " \"learning_rate\": 3e-5, \"loss_type\": \"dr_grpo\", \"epsilon_high\": 0.28,"
        " \"checkpoint_every\": 50, \"seed\": 1}},"
        "{\"name\": \"rs\", \"kind\": \"rejection_sample\", \"model\": \"rl\", \"dataset\": \"%s\", \"reward\": \"%s\","
        " \"params\": {\"num_samples\": 4, \"max_completion_length\": 96, \"max_per_prompt\": 2,"
        " \"seed\": 2}},"
        "{\"name\": \"sft2\", \"kind\": \"sft\", \"model\": \"$base\", \"dataset\": \"rs\","
        " \"params\": {\"epochs\": 2, \"batch_size\": 8, \"learning_rate\": 1e-4,"
        " \"seed\": 3}},"
        "{\"name\": \"rl2\", \"kind\": \"grpo\", \"model\": \"sft2\", \"dataset\": \"%s\", \"reward\": \"%s\","
        " \"params\": {\"steps\": 100, \"prompts_per_step\": 8, \"group_size\": 8, \"max_completion_length\": 96,"
        " \"learning_rate\": 3e-5, \"loss_type\": \"dr_grpo\", \"epsilon_high\": 0.28,"
        " \"checkpoint_every\": 50, \"seed\": 4}},"
        "{\"name\": \"eval\", \"kind\": \"eval\", \"model\": \"rl2\", \"dataset\": \"%s\", \"reward\": \"%s\","
        " \"params\": {\"max_completion_length\": 96, \"num_samples\": 4, \"seed\": 1}}]}",
        sft_id, rl_id, rw_id, rl_id, acc_id, rl_id, rw_id, test_id, acc_id);
    json_t *r1p = json_loads(r1s, 0, NULL);
    json_t *all[] = {zero, sftp, pre, r1p};
    rc = r1p ? 0 : -1;
    if (!r1p) snprintf(err, errlen, "the r1 template does not parse");
    for (int i = 0; i < N_BUILTIN; i++) {
        json_t *old = NULL;
        int f = rc ? 0 : pipelines_lookup(srv, builtin_names[i], pid, &old, err, errlen);
        json_decref(old);
        if (f < 0) rc = -1;
        if (f == 0 && !rc && pipelines_create(srv, all[i], true, pid, err, errlen)) rc = -1;
        json_decref(all[i]);
    }
    return rc;
}

int runs_templates_ensure(struct server *srv, char *err, size_t errlen)
{
    int missing = 0;
    for (int i = 0; i < N_BUILTIN; i++) {
        char id[64];
        json_t *spec = NULL;
        int f = pipelines_lookup(srv, builtin_names[i], id, &spec, err, errlen);
        json_decref(spec);
        if (f < 0) return -1;
        missing += f == 0;
    }
    if (!missing) return 0;
    PGconn *c = db_connect(srv->cfg.database_url, err, errlen);
    if (!c) return -1;
    PGresult *r = PQexec(c, "SELECT pg_advisory_lock(" TEMPLATES_LOCK_KEY ")");
    bool locked = PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    int rc = locked ? create_all(srv, err, errlen) : -1;
    if (!locked) snprintf(err, errlen, "%s", PQerrorMessage(c));
    PQfinish(c); /* releases the lock */
    if (rc == 0) log_msg("runs: built-in pipelines r1-zero, sft, pretrain-tiny, r1 are ready");
    return rc;
}
