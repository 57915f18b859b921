/* tests/integration/test_catalog_api.c — the catalog's C interface for the
 * runs module and the built-in templates (server/training.h):
 * datasets_import_file/lookup, rewards_create/lookup, pipelines_create/
 * lookup, against the PostgreSQL and data directory test_catalog.py set
 * up. Linked with the sanitized server objects; run by test_catalog.py.
 *
 * usage: test_catalog_api DATABASE_URL DATA_DIR ENGINE GOOD.jsonl BAD.jsonl */
#include <stdio.h>
#include <string.h>

#include "server.h"

static int failed;

#define CHECK(cond, ...)                                   \
    do {                                                   \
        if (!(cond)) {                                     \
            failed++;                                      \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);    \
            printf(__VA_ARGS__);                           \
            printf("\n");                                  \
        }                                                  \
    } while (0)

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s DATABASE_URL DATA_DIR ENGINE GOOD.jsonl BAD.jsonl\n", argv[0]);
        return 2;
    }
    struct server srv = {0};
    srv.cfg.database_url = argv[1];
    srv.cfg.data_dir = argv[2];
    srv.cfg.engine_path = argv[3];
    srv.cfg.max_upload = 1 << 20;
    srv.pool = db_pool_new(argv[1], 2);
    char id[64], id2[64], err[1024], path[4096], purpose[16];

    /* datasets */
    CHECK(datasets_import_file(&srv, argv[4], "rl", "imported", id, err, sizeof err) == 0, "%s", err);
    CHECK(strncmp(id, "ds-", 3) == 0, "id %s", id);
    CHECK(datasets_import_file(&srv, argv[4], "rl", NULL, id2, err, sizeof err) == 0, "%s", err);
    CHECK(strcmp(id, id2) == 0, "same bytes, same dataset: %s %s", id, id2);
    CHECK(datasets_lookup(&srv, id, path, purpose, err, sizeof err) == 1, "lookup");
    CHECK(strncmp(path, "datasets/", 9) == 0 && strstr(path, ".jsonl"), "path %s", path);
    CHECK(strcmp(purpose, "rl") == 0, "purpose %s", purpose);
    CHECK(datasets_lookup(&srv, "ds-nope", path, NULL, err, sizeof err) == 0, "unknown");
    CHECK(datasets_import_file(&srv, argv[4], "dpo", NULL, id2, err, sizeof err) == -1 &&
              strstr(err, "dpo"), "bad purpose: %s", err);
    CHECK(datasets_import_file(&srv, argv[5], "rl", NULL, id2, err, sizeof err) == -1 &&
              strstr(err, "line 2"), "bad rows: %s", err);
    CHECK(datasets_import_file(&srv, "/nonexistent.jsonl", "rl", NULL, id2, err, sizeof err) == -1,
          "missing file");

    /* rewards */
    json_t *spec = json_loads("{\"name\":\"acc\",\"components\":[{\"type\":\"accuracy\"}]}", 0, NULL);
    char rid[64], rid2[64];
    CHECK(rewards_create(&srv, spec, rid, err, sizeof err) == 0, "%s", err);
    CHECK(strncmp(rid, "rw-", 3) == 0, "id %s", rid);
    CHECK(rewards_create(&srv, spec, rid2, err, sizeof err) == 0 && strcmp(rid, rid2) == 0,
          "an equal spec is reused: %s %s", rid, rid2);
    json_t *got = NULL;
    CHECK(rewards_lookup(&srv, rid, &got, err, sizeof err) == 1 && json_equal(got, spec), "lookup");
    json_decref(got);
    CHECK(rewards_lookup(&srv, "rw-nope", &got, err, sizeof err) == 0, "unknown");
    json_t *bad = json_loads("{\"components\":[{\"type\":\"accuracy\",\"weight\":\"x\"}]}", 0, NULL);
    CHECK(rewards_create(&srv, bad, rid2, err, sizeof err) == -1 &&
              strstr(err, "components[0].weight"), "bad spec: %s", err);

    /* pipelines: a built-in template may name a model that arrives later */
    char pl[512];
    snprintf(pl, sizeof pl,
             "{\"name\":\"tmpl\",\"base_model\":\"arrives-later\",\"stages\":[{\"name\":\"rl\","
             "\"kind\":\"grpo\",\"model\":\"$base\",\"dataset\":\"%s\",\"reward\":\"%s\"}]}",
             id, rid);
    json_t *pspec = json_loads(pl, 0, NULL);
    char pid[64], pid2[64];
    CHECK(pipelines_create(&srv, pspec, true, pid, err, sizeof err) == 0, "%s", err);
    CHECK(strncmp(pid, "pl-", 3) == 0, "id %s", pid);
    CHECK(pipelines_create(&srv, pspec, true, pid2, err, sizeof err) == 0 && strcmp(pid, pid2) == 0,
          "builtin is idempotent by name: %s %s", pid, pid2);
    CHECK(pipelines_create(&srv, pspec, false, pid2, err, sizeof err) == -1, "not builtin: %s", err);
    json_t *ps = NULL;
    CHECK(pipelines_lookup(&srv, "tmpl", pid2, &ps, err, sizeof err) == 1 && strcmp(pid, pid2) == 0 &&
              json_equal(ps, pspec), "lookup by name");
    json_decref(ps);
    ps = NULL;
    CHECK(pipelines_lookup(&srv, pid, pid2, &ps, err, sizeof err) == 1, "lookup by id");
    json_decref(ps);
    CHECK(pipelines_lookup(&srv, "nope", pid2, &ps, err, sizeof err) == 0, "unknown");

    json_decref(spec);
    json_decref(bad);
    json_decref(pspec);
    db_pool_free(srv.pool);
    printf("catalog api: %s\n", failed ? "FAILED" : "ok");
    return failed ? 1 : 0;
}
