/* engine/cli_train.c — `aha-engine train --spec FILE --data-dir DIR
 * [--out DIR]`: validates a pipeline definition completely, then runs its
 * stages, printing NDJSON events on stdout. */
#include <jansson.h>
#include <stdio.h>

#include "cli.h"
#include "pipeline.h"

int cli_train(int argc, char **argv)
{
    static const char *const opts[] = {"--spec", "--data-dir", "--out", NULL};
    static const char *const flags[] = {"--validate-only", NULL};
    if (cli_args_check(argc, argv, opts, flags)) return 2;
    const char *spec_path = cli_arg(argc, argv, "--spec"), *data_dir = cli_arg(argc, argv, "--data-dir");
    const char *out = cli_arg(argc, argv, "--out");
    if (!spec_path) {
        fprintf(stderr, "usage: aha-engine train --spec FILE [--data-dir DIR] [--out DIR] [--validate-only]\n"
                        "  references in the spec are relative to --data-dir (default .);\n"
                        "  stage outputs go to --out (default DATA_DIR/runs/<pipeline name>)/<stage>\n");
        return 2;
    }
    if (!data_dir) data_dir = ".";
    json_error_t je;
    json_t *spec = json_load_file(spec_path, JSON_REJECT_DUPLICATES, &je);
    if (!spec) {
        fprintf(stderr, "train: %s:%d:%d: %s\n", spec_path, je.line, je.column, je.text);
        return 1;
    }
    char err[2048], outbuf[4096];
    if (!out) {
        json_t *name = json_object_get(spec, "name");
        snprintf(outbuf, sizeof outbuf, "%s/runs/%s", data_dir,
                 json_is_string(name) ? json_string_value(name) : "unnamed");
        out = outbuf;
    }
    struct pipeline p;
    int rc = pipeline_load(&p, spec, data_dir, out, err, sizeof err);
    json_decref(spec);
    if (rc) {
        fprintf(stderr, "train: %s: %s\n", spec_path, err);
        return 1;
    }
    if (cli_flag(argc, argv, "--validate-only")) {
        pipeline_free(&p);
        return 0;
    }
    rc = pipeline_run(&p, backend_cpu(), stdout, err, sizeof err);
    pipeline_free(&p);
    if (rc) {
        fprintf(stderr, "train: %s\n", err);
        return 1;
    }
    return 0;
}
