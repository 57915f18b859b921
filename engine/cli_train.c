/* engine/cli_train.c — `aha-engine train`: validates a pipeline definition
 * completely, then runs its stages, printing NDJSON events on stdout
 * (api/engine-protocol.md, "Training runs"). `--check` validates only,
 * without the file system, and answers one JSON line. */
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "events.h"
#include "pipeline.h"

/* Reads the spec from path ("-" = stdin). Returns a new reference, or NULL
 * with err naming path:line:column. */
static json_t *load_spec(const char *path, char *err, size_t errlen)
{
    json_error_t je;
    bool in = strcmp(path, "-") == 0;
    json_t *spec = in ? json_loadf(stdin, JSON_REJECT_DUPLICATES, &je)
                      : json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!spec && je.line > 0)
        snprintf(err, errlen, "%s:%d:%d: %s", in ? "<stdin>" : path, je.line, je.column, je.text);
    else if (!spec)
        snprintf(err, errlen, "%s: %s", in ? "<stdin>" : path, je.text);
    return spec;
}

/* Set by SIGTERM/SIGINT: the running trainer finishes its step, writes a
 * checkpoint and the run ends "cancelled" (a second signal kills). */
static volatile sig_atomic_t stop_requested;

/* Takes SIGTERM/SIGINT synchronously. main() blocks them before any thread
 * exists, so every thread inherits the mask and no compute thread (OpenMP,
 * oneDNN) is ever interrupted by a handler; with an asynchronous handler the
 * engine under load occasionally corrupted oneDNN's heap when stopped. The
 * first signal asks for a stop; after it the default action is back and
 * this thread alone takes signals, so a second one ends the process. */
static void *stop_watcher(void *arg)
{
    const sigset_t *sigs = arg;
    int sig;
    if (sigwait(sigs, &sig) == 0) {
        stop_requested = 1;
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        pthread_sigmask(SIG_UNBLOCK, sigs, NULL);
    }
    return NULL;
}

/* A run that fails before it starts still ends with error and done events. */
static void emit_failed(const char *name, const char *message)
{
    events_emit(stdout, json_pack("{s:s,s:s}", "type", "error", "message", message));
    events_emit(stdout, json_pack("{s:s,s:s,s:s,s:s}", "type", "done", "name", name, "status", "failed",
                                  "error", message));
}

/* `train --check`: {"ok":true} or {"ok":false,"error":"..."} on stdout. */
static int check_only(const char *spec_path)
{
    char err[2048];
    json_t *spec = load_spec(spec_path, err, sizeof err);
    int rc = spec ? pipeline_check(spec, err, sizeof err) : -1;
    json_decref(spec);
    json_t *out = rc ? json_pack("{s:b,s:s}", "ok", 0, "error", err) : json_pack("{s:b}", "ok", 1);
    char *s = json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER);
    printf("%s\n", s ? s : "{\"ok\":false,\"error\":\"out of memory\"}");
    free(s);
    json_decref(out);
    return rc ? 1 : 0;
}

int cli_train(int argc, char **argv)
{
    static const char *const opts[] = {"--spec", "--data-dir", "--out", "--resume", NULL};
    static const char *const flags[] = {"--validate-only", "--check", NULL};
    if (cli_args_check(argc, argv, opts, flags)) return 2;
    const char *spec_path = cli_arg(argc, argv, "--spec"), *data_dir = cli_arg(argc, argv, "--data-dir");
    const char *out = cli_arg(argc, argv, "--out");
    if (!spec_path) {
        fprintf(stderr, "usage: aha-engine train --spec FILE|- [--data-dir DIR] [--out DIR] [--resume DIR]\n"
                        "                        [--validate-only]\n"
                        "       aha-engine train --check --spec FILE|-\n"
                        "  references in the spec are relative to --data-dir (default .);\n"
                        "  stage outputs go to --out (default DATA_DIR/runs/<pipeline name>)/<stage>;\n"
                        "  --resume: a checkpoint directory of this pipeline (or the --out directory):\n"
                        "  completed stages are skipped, the checkpoint's stage continues from its step;\n"
                        "  SIGTERM/SIGINT: finish the step, checkpoint, end with done \"cancelled\";\n"
                        "  --check validates without reading any file but the spec and prints\n"
                        "  {\"ok\":true} or {\"ok\":false,\"error\":\"...\"}\n");
        return 2;
    }
    if (cli_flag(argc, argv, "--check")) return check_only(spec_path);
    if (!data_dir) data_dir = ".";
    char err[2048], outbuf[4096];
    json_t *spec = load_spec(spec_path, err, sizeof err);
    if (!spec) {
        fprintf(stderr, "train: %s\n", err);
        emit_failed("", err);
        return 1;
    }
    if (!out) {
        json_t *name = json_object_get(spec, "name");
        snprintf(outbuf, sizeof outbuf, "%s/runs/%s", data_dir,
                 json_is_string(name) ? json_string_value(name) : "unnamed");
        out = outbuf;
    }
    static struct pipeline p;   /* large: stage paths */
    int rc = pipeline_load(&p, spec, data_dir, out, err, sizeof err);
    if (rc) {
        fprintf(stderr, "train: %s: %s\n", spec_path, err);
        json_t *name = json_object_get(spec, "name");
        if (!cli_flag(argc, argv, "--validate-only"))
            emit_failed(json_is_string(name) ? json_string_value(name) : "", err);
        json_decref(spec);
        return 1;
    }
    json_decref(spec);
    if (cli_flag(argc, argv, "--validate-only")) {
        pipeline_free(&p);
        return 0;
    }
    static sigset_t stop_sigs;
    sigemptyset(&stop_sigs);
    sigaddset(&stop_sigs, SIGTERM);
    sigaddset(&stop_sigs, SIGINT);
    pthread_t watcher;
    if (pthread_sigmask(SIG_BLOCK, &stop_sigs, NULL) == 0 &&
        pthread_create(&watcher, NULL, stop_watcher, &stop_sigs) == 0)
        pthread_detach(watcher);
    rc = pipeline_run(&p, backend_cpu(), cli_arg(argc, argv, "--resume"), &stop_requested, stdout,
                      err, sizeof err);
    pipeline_free(&p);
    if (rc < 0) {
        fprintf(stderr, "train: %s\n", err);
        return 1;
    }
    if (rc == PIPELINE_CANCELLED) fprintf(stderr, "train: cancelled\n");
    return 0;
}
