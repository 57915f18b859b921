/* server/main.c — aha-server: the command line (serve, migrate, keys
 * create), configuration from flags and environment, start-up and orderly
 * shutdown. The only file that exits. */
#include <errno.h>
#include <limits.h>
#include <libgen.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http.h"
#include "models.h"
#include "server.h"

/* SIGTERM: how long streams may take to send their last event and [DONE]. */
#define SERVER_SHUTDOWN_DRAIN_S 5.0

static void usage(FILE *f)
{
    fprintf(f,
            "usage: aha-server [serve] [OPTIONS]     run the HTTP server\n"
            "       aha-server migrate [OPTIONS]     apply database migrations and exit\n"
            "       aha-server keys create --name NAME --scope admin|inference|read [OPTIONS]\n"
            "       aha-server keys list [OPTIONS]\n"
            "       aha-server keys revoke --id ID [OPTIONS]\n"
            "\noptions (environment variable in brackets):\n"
            "  --host HOST            listen address [AHA_HOST] (127.0.0.1)\n"
            "  --port PORT            listen port, 0 = any free one [AHA_PORT] (8080)\n"
            "  --data-dir DIR         data directory, models in DIR/models [AHA_DATA_DIR] (./var)\n"
            "  --database-url URL     PostgreSQL connection string [AHA_DATABASE_URL]\n"
            "  --engine PATH          engine executable, run as PATH serve [AHA_ENGINE]\n"
            "                         (aha-engine next to this executable)\n"
            "  --migrations-dir DIR   [AHA_MIGRATIONS_DIR] (../migrations from the executable,\n"
            "                         else ./migrations)\n"
            "  --web-dir DIR          the dashboard's files, served at /dashboard/ [AHA_WEB_DIR]\n"
            "                         (../web from the executable, else ./web)\n"
            "  --max-body BYTES       request body limit [AHA_MAX_BODY] (1048576)\n"
            "  --max-upload BYTES     dataset upload limit [AHA_MAX_UPLOAD] (1073741824)\n"
            "  --max-inflight N       generations in flight before 429 [AHA_MAX_INFLIGHT] (512)\n"
            "  --threads N            HTTP threads [AHA_HTTP_THREADS] (4)\n"
            "  --heartbeat SECONDS    SSE comment heartbeat interval [AHA_SSE_HEARTBEAT] (15)\n"
            "  --trace-queue N        traces held while PostgreSQL is down [AHA_TRACE_QUEUE]\n"
            "                         (10000)\n"
            "  --engine-timeout S     fail a request after S seconds without an engine event\n"
            "                         [AHA_ENGINE_TIMEOUT] (300)\n"
            "  --kv-memory-mb N       engine KV-cache memory per model [AHA_KV_MEMORY_MB]\n"
            "  --kv-dtype f16|f32|q8  engine KV-cache element type [AHA_KV_DTYPE] (f16)\n"
            "  --dtype auto|f32|bf16|q8|q4 engine weights/matmul element type [AHA_DTYPE]\n"
            "                         (auto: bf16 for checkpoints stored in BF16, else f32)\n"
            "  --max-seqs N           sequences the engine decodes together [AHA_MAX_SEQS]\n"
            "  --prefix-cache on|off  reuse the KV blocks of prompts' common beginnings\n"
            "                         [AHA_PREFIX_CACHE] (on)\n"
            "  --speculative-tokens K draft tokens per step by prompt lookup, 0 = off\n"
            "                         [AHA_SPECULATIVE_TOKENS] (0)\n"
            "  --draft-model M=D,...  model M drafts with model D (same vocabulary), K tokens\n"
            "                         a step (--speculative-tokens, else 4) [AHA_DRAFT_MODELS]\n"
            "  --max-runs N           training runs (engine processes) at once [AHA_MAX_RUNS] (1)\n");
}

static const char *opt(int argc, char **argv, const char *name, const char *env,
                       const char *def)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) return argv[i + 1];
    const char *e = env ? getenv(env) : NULL;
    return e && *e ? e : def;
}

static int opt_long(int argc, char **argv, const char *name, const char *env, long def,
                    long lo, long hi, long *out)
{
    const char *s = opt(argc, argv, name, env, NULL);
    if (!s) {
        *out = def;
        return 0;
    }
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) {
        fprintf(stderr, "aha-server: %s: expected an integer from %ld to %ld, got \"%s\"\n", name,
                lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* Rejects unknown options (every option takes a value). */
static int check_args(int argc, char **argv, int first)
{
    static const char *const known[] = {"--host", "--port", "--data-dir", "--database-url",
                                        "--engine", "--migrations-dir", "--web-dir", "--max-body", "--max-upload",
                                        "--max-inflight", "--threads", "--heartbeat",
                                        "--trace-queue", "--name", "--scope", "--id",
                                        "--kv-memory-mb", "--kv-dtype", "--dtype", "--max-seqs",
                                        "--engine-timeout", "--prefix-cache",
                                        "--speculative-tokens", "--draft-model", "--max-runs",
                                        NULL};
    for (int i = first; i < argc; i += 2) {
        bool ok = false;
        for (int k = 0; known[k]; k++) ok |= strcmp(argv[i], known[k]) == 0;
        if (!ok) {
            fprintf(stderr, "aha-server: unknown argument \"%s\"\n", argv[i]);
            return -1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "aha-server: %s needs a value\n", argv[i]);
            return -1;
        }
    }
    return 0;
}

static char exe_dir[PATH_MAX];

/* ../<name> from the executable when that is a directory, else ./<name>;
 * buf holds the path. */
static const char *default_dir(char *buf, size_t len, const char *name)
{
    struct stat st;
    snprintf(buf, len, "%s/../%s", exe_dir, name);
    return stat(buf, &st) == 0 && S_ISDIR(st.st_mode) ? buf : name;
}

static int load_config(int argc, char **argv, struct server_config *cfg)
{
    long port, max_body, max_upload, inflight, threads, hb, tq, etimeout;
    cfg->host = opt(argc, argv, "--host", "AHA_HOST", "127.0.0.1");
    cfg->data_dir = opt(argc, argv, "--data-dir", "AHA_DATA_DIR", "./var");
    cfg->database_url = opt(argc, argv, "--database-url", "AHA_DATABASE_URL", NULL);
    static char engine_default[PATH_MAX + 16], migrations_default[PATH_MAX + 16],
        web_default[PATH_MAX + 16];
    snprintf(engine_default, sizeof engine_default, "%s/aha-engine", exe_dir);
    cfg->engine_path = opt(argc, argv, "--engine", "AHA_ENGINE", engine_default);
    cfg->migrations_dir =
        opt(argc, argv, "--migrations-dir", "AHA_MIGRATIONS_DIR",
            default_dir(migrations_default, sizeof migrations_default, "migrations"));
    cfg->web_dir = opt(argc, argv, "--web-dir", "AHA_WEB_DIR",
                       default_dir(web_default, sizeof web_default, "web"));
    if (opt_long(argc, argv, "--port", "AHA_PORT", 8080, 0, 65535, &port) ||
        opt_long(argc, argv, "--max-body", "AHA_MAX_BODY", SERVER_MAX_BODY_DEFAULT, 1024,
                 1L << 30, &max_body) ||
        opt_long(argc, argv, "--max-upload", "AHA_MAX_UPLOAD", SERVER_MAX_UPLOAD_DEFAULT, 1,
                 1L << 40, &max_upload) ||
        opt_long(argc, argv, "--max-inflight", "AHA_MAX_INFLIGHT", SERVER_MAX_INFLIGHT_DEFAULT, 1,
                 100000, &inflight) ||
        opt_long(argc, argv, "--threads", "AHA_HTTP_THREADS", 4, 1, 256, &threads) ||
        opt_long(argc, argv, "--heartbeat", "AHA_SSE_HEARTBEAT", 15, 1, 3600, &hb) ||
        opt_long(argc, argv, "--trace-queue", "AHA_TRACE_QUEUE", 10000, 1, 10000000, &tq) ||
        opt_long(argc, argv, "--engine-timeout", "AHA_ENGINE_TIMEOUT", 300, 1, 86400, &etimeout))
        return -1;
    cfg->port = (int)port;
    cfg->max_body = max_body;
    cfg->max_upload = max_upload;
    cfg->max_inflight = (int)inflight;
    cfg->threads = (int)threads;
    cfg->heartbeat_s = (double)hb;
    cfg->trace_queue = (int)tq;
    cfg->engine_timeout_s = (double)etimeout;
    if (!cfg->database_url) {
        fprintf(stderr, "aha-server: no database: pass --database-url or set AHA_DATABASE_URL\n");
        return -1;
    }
    return 0;
}

static int migrate(const struct server_config *cfg)
{
    char err[1024];
    PGconn *c = NULL;
    for (int attempt = 0; attempt < 10 && !c; attempt++) { /* PostgreSQL may be starting */
        c = db_connect(cfg->database_url, err, sizeof err);
        if (!c) sleep(1);
    }
    if (!c) {
        fprintf(stderr, "aha-server: %s\n", err);
        return -1;
    }
    int n = db_migrate(c, cfg->migrations_dir, err, sizeof err);
    PQfinish(c);
    if (n < 0) {
        fprintf(stderr, "aha-server: %s\n", err);
        return -1;
    }
    return 0;
}

static int keys_list_revoke(const struct server_config *cfg, bool list, const char *id)
{
    char err[1024];
    PGconn *c = db_connect(cfg->database_url, err, sizeof err);
    if (!c) {
        fprintf(stderr, "aha-server: %s\n", err);
        return 1;
    }
    const char *params[] = {id};
    PGresult *r = list ? PQexec(c, "SELECT id, name, scope, prefix, created_at, last_used_at,"
                                   " revoked_at FROM api_keys ORDER BY id")
                       : PQexecParams(c, "UPDATE api_keys SET revoked_at = now() WHERE id = "
                                         "$1::bigint AND revoked_at IS NULL RETURNING id",
                                      1, NULL, params, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "aha-server: %s", PQresultErrorMessage(r));
        rc = 1;
    } else if (list) {
        printf("%-6s %-24s %-10s %-12s %-24s %s\n", "id", "name", "scope", "prefix", "created",
               "state");
        for (int i = 0; i < PQntuples(r); i++)
            printf("%-6s %-24s %-10s %-12s %-24.19s %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
                   PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), PQgetvalue(r, i, 4),
                   PQgetisnull(r, i, 6) ? "active" : "revoked");
    } else if (PQntuples(r) == 0) {
        fprintf(stderr, "aha-server: no active key with id %s\n", id);
        rc = 1;
    } else {
        printf("revoked key %s (servers drop it from their caches within 30 s)\n", id);
    }
    PQclear(r);
    PQfinish(c);
    return rc;
}

static int cmd_keys(int argc, char **argv)
{
    const char *sub = argc >= 3 ? argv[2] : "";
    if (strcmp(sub, "create") && strcmp(sub, "list") && strcmp(sub, "revoke")) {
        usage(stderr);
        return 2;
    }
    if (check_args(argc, argv, 3)) return 2;
    struct server_config cfg;
    if (strcmp(sub, "create") != 0) {
        const char *id = opt(argc, argv, "--id", NULL, NULL);
        if (strcmp(sub, "revoke") == 0 && (!id || !*id)) {
            fprintf(stderr, "aha-server: keys revoke needs --id ID (see keys list)\n");
            return 2;
        }
        if (load_config(argc, argv, &cfg) || migrate(&cfg)) return 2;
        return keys_list_revoke(&cfg, strcmp(sub, "list") == 0, id);
    }
    const char *name = opt(argc, argv, "--name", NULL, NULL);
    const char *scope_s = opt(argc, argv, "--scope", NULL, NULL);
    enum keys_scope scope;
    if (!name || !*name || keys_scope_parse(scope_s, &scope)) {
        fprintf(stderr, "aha-server: keys create needs --name NAME and --scope "
                        "admin|inference|read\n");
        return 2;
    }
    if (load_config(argc, argv, &cfg)) return 2;
    if (migrate(&cfg)) return 1;
    char err[1024], key[128];
    PGconn *c = db_connect(cfg.database_url, err, sizeof err);
    if (!c || keys_create(c, name, scope, key, sizeof key, err, sizeof err)) {
        fprintf(stderr, "aha-server: %s\n", err);
        if (c) PQfinish(c);
        return 1;
    }
    PQfinish(c);
    printf("created API key \"%s\" with scope %s; it is shown only once:\n%s\n", name,
           keys_scope_name(scope), key);
    return 0;
}

/* --draft-model M=D,...: {"M": D's directory}, each D a model of
 * data_dir's (an id, or a run's "<run name>/<stage>"); NULL after printing
 * why. */
static json_t *parse_drafts(const char *s, const char *data_dir)
{
    json_t *map = json_object();
    for (const char *p = s; map && p;) {
        const char *comma = strchr(p, ','), *end = comma ? comma : p + strlen(p);
        char item[2 * MODELS_ID_MAX + 2];
        snprintf(item, sizeof item, "%.*s", (int)(end - p), p);
        char *eq = strchr(item, '=');
        if (eq) *eq = 0;
        struct models_info info;
        if (end - p >= (long)sizeof item || !eq || eq == item ||
            models_get(data_dir, eq + 1, &info)) {
            fprintf(stderr, "aha-server: --draft-model: expected MODEL=DRAFT,... with DRAFT a "
                    "model under %s/models, got \"%.*s\"\n", data_dir, (int)(end - p), p);
            json_decref(map);
            return NULL;
        }
        json_object_set_new(map, item, json_string(info.path));
        p = comma ? comma + 1 : NULL;
    }
    return map;
}

static int serve(int argc, char **argv, int first)
{
    if (check_args(argc, argv, first)) return 2;
    struct server srv = {0};
    if (load_config(argc, argv, &srv.cfg)) return 2;
    char models[PATH_MAX];
    snprintf(models, sizeof models, "%s/models", srv.cfg.data_dir);
    if ((mkdir(srv.cfg.data_dir, 0755) && errno != EEXIST) ||
        (mkdir(models, 0755) && errno != EEXIST)) {
        fprintf(stderr, "aha-server: data directory %s: %s\n", models, strerror(errno));
        return 1;
    }
    if (migrate(&srv.cfg)) return 1;
    char werr[1024];
    if (web_load(srv.cfg.web_dir, werr, sizeof werr)) {
        /* a directory asked for must load; the default may be absent */
        if (opt(argc, argv, "--web-dir", "AHA_WEB_DIR", NULL)) {
            fprintf(stderr, "aha-server: %s\n", werr);
            return 1;
        }
        log_msg("no dashboard: %s", werr);
    }

    /* Signals are taken by sigwait below; every thread inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    char *eargv[] = {(char *)srv.cfg.engine_path, "serve", NULL};
    long kv_mb, max_seqs, max_runs, spec;
    if (opt_long(argc, argv, "--kv-memory-mb", "AHA_KV_MEMORY_MB", 0, 0, 1 << 20, &kv_mb) ||
        opt_long(argc, argv, "--speculative-tokens", "AHA_SPECULATIVE_TOKENS", 0, 0, 16, &spec) ||
        opt_long(argc, argv, "--max-seqs", "AHA_MAX_SEQS", 0, 0, 4096, &max_seqs) ||
        opt_long(argc, argv, "--max-runs", "AHA_MAX_RUNS", 1, 0, 1024, &max_runs))
        return 2;
    const char *kv_dtype = opt(argc, argv, "--kv-dtype", "AHA_KV_DTYPE", NULL);
    if (kv_dtype && strcmp(kv_dtype, "f16") != 0 && strcmp(kv_dtype, "f32") != 0 &&
        strcmp(kv_dtype, "q8") != 0) {
        fprintf(stderr, "aha-server: --kv-dtype: expected f16, f32 or q8, got \"%s\"\n", kv_dtype);
        return 2;
    }
    const char *dtype = opt(argc, argv, "--dtype", "AHA_DTYPE", NULL);
    if (dtype && strcmp(dtype, "auto") != 0 && strcmp(dtype, "f32") != 0 &&
        strcmp(dtype, "bf16") != 0 && strcmp(dtype, "q8") != 0 && strcmp(dtype, "q4") != 0) {
        fprintf(stderr, "aha-server: --dtype: expected auto, f32, bf16, q8 or q4, got \"%s\"\n",
                dtype);
        return 2;
    }
    const char *prefix_cache = opt(argc, argv, "--prefix-cache", "AHA_PREFIX_CACHE", NULL);
    if (prefix_cache && strcmp(prefix_cache, "on") != 0 && strcmp(prefix_cache, "off") != 0) {
        fprintf(stderr, "aha-server: --prefix-cache: expected on or off, got \"%s\"\n", prefix_cache);
        return 2;
    }
    json_t *drafts = parse_drafts(opt(argc, argv, "--draft-model", "AHA_DRAFT_MODELS", NULL),
                                  srv.cfg.data_dir);
    if (!drafts) return 2;
    runs_max_runs = (int)max_runs;
    json_t *load_opts = json_object();
    if (kv_mb) json_object_set_new(load_opts, "kv_memory_mb", json_integer(kv_mb));
    if (max_seqs) json_object_set_new(load_opts, "max_seqs", json_integer(max_seqs));
    if (kv_dtype) json_object_set_new(load_opts, "kv_dtype", json_string(kv_dtype));
    if (dtype) json_object_set_new(load_opts, "dtype", json_string(dtype));
    if (prefix_cache)
        json_object_set_new(load_opts, "prefix_cache", json_boolean(strcmp(prefix_cache, "on") == 0));
    if (spec)
        json_object_set_new(load_opts, "speculative",
                            json_pack("{s:s, s:i}", "method", "ngram", "num_speculative_tokens", (int)spec));
    char err[1024];
    srv.pool = db_pool_new(srv.cfg.database_url, 8);
    srv.tr = traces_new(srv.cfg.database_url, srv.cfg.trace_queue);
    srv.eng = engine_new(eargv, load_opts);
    if (srv.eng) engine_set_drafts(srv.eng, drafts);
    else json_decref(drafts);
    if (!srv.pool || !srv.tr || !srv.eng || traces_start(srv.tr) || engine_start(srv.eng) ||
        completions_start(&srv)) {
        fprintf(stderr, "aha-server: cannot start (out of memory or threads)\n");
        return 1;
    }
    if (runs_start(&srv, err, sizeof err) || http_start(&srv, err, sizeof err)) {
        fprintf(stderr, "aha-server: %s\n", err);
        runs_stop(&srv);
        engine_free(srv.eng);
        traces_free(srv.tr, 0);
        completions_stop();
        db_pool_free(srv.pool);
        return 1;
    }
    log_msg("listening on http://%s:%d (data %s, engine %s)", srv.cfg.host, srv.cfg.port,
            srv.cfg.data_dir, srv.cfg.engine_path);
    printf("aha-server: listening on http://%s:%d\n", srv.cfg.host, srv.cfg.port);
    fflush(stdout);

    int sig = 0;
    sigwait(&sigs, &sig);
    log_msg("signal %d: shutting down", sig);
    http_quiesce(&srv);
    runs_stop(&srv);
    engine_stop(srv.eng); /* fails generations in flight; their clients get an error */
    /* Let the resumed streams send their error event and [DONE] before
     * MHD_stop_daemon closes every connection (a fixed pause can be too
     * short on a loaded host and cut a stream off). Bounded, so a client
     * that stopped reading cannot hold up the shutdown. */
    int live = completions_drain(SERVER_SHUTDOWN_DRAIN_S);
    if (live) log_msg("shutdown: %d completion requests still sending; closing them", live);
    http_stop(&srv);
    engine_free(srv.eng);
    completions_stop();
    traces_free(srv.tr, 3.0);
    db_pool_free(srv.pool);
    web_free();
    log_msg("stopped");
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    /* a background job of a script inherits SIGINT ignored; serve takes it */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = 0;
        snprintf(exe_dir, sizeof exe_dir, "%s", dirname(self));
    } else {
        snprintf(exe_dir, sizeof exe_dir, ".");
    }
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "keys") == 0) return cmd_keys(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "migrate") == 0) {
        struct server_config cfg;
        if (check_args(argc, argv, 2) || load_config(argc, argv, &cfg)) return 2;
        return migrate(&cfg) ? 1 : 0;
    }
    if (argc >= 2 && strcmp(argv[1], "serve") == 0) return serve(argc, argv, 2);
    return serve(argc, argv, 1);
}
