/* server/pipelines.c — /v1/pipelines: stored pipeline definitions
 * (DESIGN.md "Pipeline definition"). The server checks what only it can
 * see — unique names, the stage DAG, and that every model, dataset and
 * reward id a stage names exists — and asks the engine (`aha-engine train
 * --check --spec -`) for the rest (kinds, fields, parameter types), so the
 * two never disagree on a parameter. Compiling a pipeline for a run
 * (ids -> paths) is the runs module's business. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "models.h"
#include "rewards.h"
#include "catalog.h"
#include "server.h"

#define PIPELINES_MAX_STAGES 64         /* as engine/pipeline.h */
#define PIPELINES_NAME_MAX 128
#define PIPELINES_CHECK_TIMEOUT_S 10.0  /* aha-engine train --check */
#define PIPELINES_CHECK_OUTPUT_MAX 65536

/* One pipeline as a JSON object, built by PostgreSQL. */
#define PIPELINE_JSON                                                                     \
    "jsonb_build_object('id', id, 'object', 'pipeline', 'name', name, 'spec', spec,"      \
    " 'stages', stages, 'builtin', builtin, 'created_at',"                                \
    " extract(epoch FROM created_at)::bigint)::text"

static const char *const model_kinds[] = {"pretrain", "sft", "grpo", "distill", NULL};
static const char *const dataset_kinds[] = {"generate", "rejection_sample", NULL};

static bool in_list(const char *s, const char *const *list)
{
    for (int i = 0; list[i]; i++)
        if (strcmp(s, list[i]) == 0) return true;
    return false;
}

static bool name_valid(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max || s[0] == '.') return false;
    for (size_t i = 0; i < n; i++)
        if (!(s[i] >= 'a' && s[i] <= 'z') && !(s[i] >= 'A' && s[i] <= 'Z') &&
            !(s[i] >= '0' && s[i] <= '9') && s[i] != '-' && s[i] != '_' && s[i] != '.')
            return false;
    return true;
}

static int stage_index(const json_t *stages, const char *name)
{
    for (size_t i = 0; i < json_array_size(stages); i++)
        if (strcmp(json_string_value(json_object_get(json_array_get(stages, i), "name")),
                   name) == 0)
            return (int)i;
    return -1;
}

/* ---- validation ------------------------------------------------------------- */

/* Checks stage sn's model reference in field ("model", or a distill
 * stage's "teacher"), ref NULL when absent: "$base", a stage that makes a
 * model (its index into *dep) or a model id. Returns 0 or 400 with err. */
static int check_model_ref(struct server *srv, const json_t *stages, const char *sn,
                           const char *field, const json_t *ref, bool builtin, int *dep,
                           char *err, size_t errlen)
{
    if (!ref) return 0;
    const char *mr = json_string_value(ref);
    if (!mr || !*mr) {
        snprintf(err, errlen, "stage \"%s\": field \"%s\": expected \"$base\", a stage name or a "
                              "model id", sn, field);
        return 400;
    }
    int j = strcmp(mr, "$base") == 0 ? -1 : stage_index(stages, mr);
    struct models_info mi;
    if (j >= 0) {
        const char *k = json_string_value(json_object_get(json_array_get(stages, j), "kind"));
        if (!in_list(k, model_kinds)) {
            snprintf(err, errlen, "stage \"%s\": %s \"%s\" names a %s stage, which produces no "
                                  "model", sn, field, mr, k);
            return 400;
        }
        *dep = j;
    } else if (strcmp(mr, "$base") && !builtin && models_get(srv->cfg.data_dir, mr, &mi)) {
        snprintf(err, errlen, "stage \"%s\": %s \"%s\" is neither \"$base\", a stage of this "
                              "pipeline nor a model (see GET /v1/models)", sn, field, mr);
        return 400;
    }
    return 0;
}

/* Checks names, references and the DAG. Returns an HTTP status: 0 valid,
 * 400 with err, or 503 (the catalog could not be read). `builtin`
 * templates may name models that arrive later. */
static int validate(struct server *srv, const json_t *spec, bool builtin, char *err,
                    size_t errlen)
{
    if (!json_is_object(spec)) {
        snprintf(err, errlen, "pipeline: expected a JSON object");
        return 400;
    }
    const char *name = json_string_value(json_object_get(spec, "name"));
    if (!name || !name_valid(name, PIPELINES_NAME_MAX)) {
        snprintf(err, errlen, "pipeline: field \"name\" must be 1 to %d of [A-Za-z0-9._-], not "
                              "starting with '.'", PIPELINES_NAME_MAX);
        return 400;
    }
    json_t *base = json_object_get(spec, "base_model");
    struct models_info mi;
    if (base && !json_is_string(base)) {
        snprintf(err, errlen, "pipeline: field \"base_model\" must be a model id");
        return 400;
    }
    if (base && !builtin && models_get(srv->cfg.data_dir, json_string_value(base), &mi)) {
        snprintf(err, errlen, "pipeline: base_model \"%s\" is not a model (see GET /v1/models)",
                 json_string_value(base));
        return 400;
    }
    json_t *stages = json_object_get(spec, "stages");
    size_t n = json_array_size(stages);
    if (!json_is_array(stages) || n == 0 || n > PIPELINES_MAX_STAGES) {
        snprintf(err, errlen, "pipeline: field \"stages\" must be an array of 1 to %d stages",
                 PIPELINES_MAX_STAGES);
        return 400;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(stages, i);
        const char *sn = json_string_value(json_object_get(s, "name"));
        if (!json_is_object(s) || !sn || !name_valid(sn, 63)) {
            snprintf(err, errlen, "pipeline: stages[%zu].name: expected 1 to 63 of "
                                  "[A-Za-z0-9._-], not starting with '.'", i);
            return 400;
        }
        if (stage_index(stages, sn) != (int)i) {
            snprintf(err, errlen, "pipeline: stages[%zu].name \"%s\": duplicate stage name", i, sn);
            return 400;
        }
        if (!json_is_string(json_object_get(s, "kind"))) {
            snprintf(err, errlen, "stage \"%s\": field \"kind\" is missing", sn);
            return 400;
        }
    }
    /* references; dep[i] lists the stages stage i reads */
    int dep[PIPELINES_MAX_STAGES][3];    /* model, dataset, teacher */
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(stages, i);
        const char *sn = json_string_value(json_object_get(s, "name"));
        dep[i][0] = dep[i][1] = dep[i][2] = -1;
        json_t *d = json_object_get(s, "dataset");
        json_t *rw = json_object_get(s, "reward");
        for (int f = 0; f < 2; f++) {
            const char *field = f ? "teacher" : "model";
            int st = check_model_ref(srv, stages, sn, field, json_object_get(s, field), builtin,
                                     &dep[i][f ? 2 : 0], err, errlen);
            if (st) return st;
        }
        if (d) {
            const char *dr = json_string_value(d);
            if (!dr || !*dr) {
                snprintf(err, errlen, "stage \"%s\": field \"dataset\": expected a stage name or "
                                      "a dataset id (ds-...)", sn);
                return 400;
            }
            int j = stage_index(stages, dr);
            if (j >= 0) {
                const char *k = json_string_value(json_object_get(json_array_get(stages, j), "kind"));
                if (!in_list(k, dataset_kinds)) {
                    snprintf(err, errlen, "stage \"%s\": dataset \"%s\" names a %s stage, which "
                                          "produces no dataset", sn, dr, k);
                    return 400;
                }
                dep[i][1] = j;
            } else {
                char path[4096], derr[256];
                int found = datasets_lookup(srv, dr, path, NULL, derr, sizeof derr);
                if (found < 0) {
                    snprintf(err, errlen, "%s", derr);
                    return 503;
                }
                if (!found) {
                    snprintf(err, errlen, "stage \"%s\": dataset \"%s\" is neither a stage of "
                                          "this pipeline nor a dataset (see GET /v1/datasets)",
                             sn, dr);
                    return 400;
                }
            }
        }
        if (json_is_object(rw)) {
            char rerr[512];
            struct reward_spec *rs = reward_spec_parse(rw, rerr, sizeof rerr);
            if (!rs) {
                snprintf(err, errlen, "stage \"%s\": field \"reward\": %s", sn, rerr);
                return 400;
            }
            reward_spec_free(rs);
        } else if (json_is_string(rw)) {
            json_t *rspec = NULL;
            char rerr[256];
            int found = rewards_lookup(srv, json_string_value(rw), &rspec, rerr, sizeof rerr);
            json_decref(rspec);
            if (found < 0) {
                snprintf(err, errlen, "%s", rerr);
                return 503;
            }
            if (!found) {
                snprintf(err, errlen, "stage \"%s\": reward \"%s\" is not a stored reward (see "
                                      "GET /v1/rewards)", sn, json_string_value(rw));
                return 400;
            }
        } else if (rw) {
            snprintf(err, errlen, "stage \"%s\": field \"reward\": expected an inline spec object "
                                  "or a reward id (rw-...)", sn);
            return 400;
        }
    }
    /* cycles: repeatedly retire stages whose inputs are all retired */
    bool done[PIPELINES_MAX_STAGES] = {false};
    for (size_t left = n; left;) {
        size_t before = left;
        for (size_t i = 0; i < n; i++)
            if (!done[i] && (dep[i][0] < 0 || done[dep[i][0]]) &&
                (dep[i][1] < 0 || done[dep[i][1]]) && (dep[i][2] < 0 || done[dep[i][2]])) {
                done[i] = true;
                left--;
            }
        if (left == before) {
            size_t off = (size_t)snprintf(err, errlen, "pipeline: the stages");
            for (size_t i = 0; i < n && off < errlen; i++)
                if (!done[i])
                    off += (size_t)snprintf(err + off, errlen - off, " \"%s\"",
                                            json_string_value(json_object_get(
                                                json_array_get(stages, i), "name")));
            if (off < errlen) snprintf(err + off, errlen - off, " reference each other in a cycle");
            return 400;
        }
    }
    return 0;
}

/* Runs `engine train --check --spec -` with the spec on stdin. Returns 0
 * valid, 1 invalid (err holds the engine's message), -1 the engine did not
 * answer as expected (err says how). */
static int engine_check(const char *engine_path, const json_t *spec, char *err, size_t errlen)
{
    char *in = json_dumps(spec, JSON_COMPACT);
    int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1};
    if (!in || pipe2(pin, O_CLOEXEC) || pipe2(pout, O_CLOEXEC) || pipe2(perr, O_CLOEXEC)) {
        snprintf(err, errlen, "cannot start the engine check: %s", strerror(errno));
        free(in);
        for (int i = 0; i < 2; i++) {
            if (pin[i] >= 0) close(pin[i]);
            if (pout[i] >= 0) close(pout[i]);
            if (perr[i] >= 0) close(perr[i]);
        }
        return -1;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pin[0], 0);
    posix_spawn_file_actions_adddup2(&fa, pout[1], 1);
    posix_spawn_file_actions_adddup2(&fa, perr[1], 2);
    posix_spawnattr_t at;
    posix_spawnattr_init(&at);
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGPIPE);
    posix_spawnattr_setsigmask(&at, &none); /* the server blocks SIGTERM for sigwait */
    posix_spawnattr_setsigdefault(&at, &dfl);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    char *argv[] = {(char *)engine_path, "train", "--check", "--spec", "-", NULL};
    extern char **environ;
    pid_t pid;
    int sp = posix_spawn(&pid, engine_path, &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(pin[0]);
    close(pout[1]);
    close(perr[1]);
    if (sp) {
        snprintf(err, errlen, "cannot run %s: %s", engine_path, strerror(sp));
        free(in);
        close(pin[1]);
        close(pout[0]);
        close(perr[0]);
        return -1;
    }
    fcntl(pin[1], F_SETFL, O_NONBLOCK);
    sbuf out = {0}, errout = {0};
    size_t in_len = strlen(in), in_off = 0;
    int wfd = pin[1];
    bool out_open = true, err_open = true, timed_out = false;
    double deadline = clock_mono() + PIPELINES_CHECK_TIMEOUT_S;
    if (in_len == 0) close(wfd), wfd = -1;
    while (out_open || err_open) {
        struct pollfd fds[3] = {{.fd = out_open ? pout[0] : -1, .events = POLLIN},
                                {.fd = err_open ? perr[0] : -1, .events = POLLIN},
                                {.fd = wfd, .events = POLLOUT}};
        double left = deadline - clock_mono();
        if (left <= 0) {
            timed_out = true;
            break;
        }
        int pr = poll(fds, 3, (int)(left * 1000) + 1);
        if (pr < 0 && errno == EINTR) continue;
        if (pr < 0) break;
        if (wfd >= 0 && fds[2].revents) {
            ssize_t w = write(wfd, in + in_off, in_len - in_off);
            if (w > 0) in_off += (size_t)w;
            if ((w < 0 && errno != EAGAIN && errno != EINTR) || in_off == in_len) {
                close(wfd);
                wfd = -1;
            }
        }
        for (int k = 0; k < 2; k++) {
            if (!fds[k].revents) continue;
            char buf[4096];
            ssize_t r = read(fds[k].fd, buf, sizeof buf);
            if (r < 0 && errno == EINTR) continue;
            sbuf *dst = k ? &errout : &out;
            if (r > 0 && dst->len < PIPELINES_CHECK_OUTPUT_MAX) sbuf_append(dst, buf, (size_t)r);
            if (r <= 0) *(k ? &err_open : &out_open) = false;
        }
    }
    if (wfd >= 0) close(wfd);
    close(pout[0]);
    close(perr[0]);
    free(in);
    if (timed_out) kill(pid, SIGKILL);
    int wst = 0;
    while (waitpid(pid, &wst, 0) < 0 && errno == EINTR) {}
    int rc = -1;
    /* the answer is the last line of stdout */
    json_t *ans = NULL;
    if (out.p) {
        while (out.len && (out.p[out.len - 1] == '\n' || out.p[out.len - 1] == '\r')) out.len--;
        out.p[out.len] = 0;
        char *last = strrchr(out.p, '\n');
        ans = json_loads(last ? last + 1 : out.p, 0, NULL);
    }
    json_t *ok = json_object_get(ans, "ok");
    const char *msg = json_string_value(json_object_get(ans, "error"));
    if (timed_out) {
        snprintf(err, errlen, "the engine did not check the pipeline within %.0f s",
                 PIPELINES_CHECK_TIMEOUT_S);
    } else if (json_is_true(ok)) {
        rc = 0;
    } else if (json_is_false(ok) && msg) {
        snprintf(err, errlen, "%s", msg);
        rc = 1;
    } else {
        /* its last stderr line says why (the first is a backend banner) */
        const char *why = "";
        if (errout.p) {
            while (errout.len && (errout.p[errout.len - 1] == '\n' || errout.p[errout.len - 1] == '\r'))
                errout.p[--errout.len] = 0;
            char *nl = strrchr(errout.p, '\n');
            why = nl ? nl + 1 : errout.p;
        }
        snprintf(err, errlen, "the engine cannot check pipelines (%s %d%s%.300s)",
                 WIFEXITED(wst) ? "exit status" : "signal",
                 WIFEXITED(wst) ? WEXITSTATUS(wst) : WTERMSIG(wst), *why ? ": " : "", why);
    }
    if (rc < 0) log_msg("pipeline check: %s", err);
    json_decref(ans);
    sbuf_free(&out);
    sbuf_free(&errout);
    return rc;
}

/* ---- storing and finding -------------------------------------------------------- */

/* Validates and stores; returns an HTTP status (201 new, 200 an existing
 * built-in of that name, 400, 409 name taken, 500, 502, 503) with the pipeline
 * object in *out (new reference) or err filled; 502 when the engine did
 * not answer the check. */
static int create(struct server *srv, const json_t *spec, bool builtin, json_t **out, char *err,
                  size_t errlen)
{
    *out = NULL;
    int st = validate(srv, spec, builtin, err, errlen);
    if (st) return st;
    const char *name = json_string_value(json_object_get(spec, "name"));
    if (builtin) { /* idempotent by name: the template of an earlier start stays */
        char id[64];
        json_t *old = NULL;
        int found = pipelines_lookup(srv, name, id, &old, err, errlen);
        json_decref(old);
        if (found < 0) return 503;
        if (found) {
            const char *p[] = {id};
            PGresult *r = db_exec(srv->pool, "SELECT " PIPELINE_JSON " FROM pipelines WHERE id = $1",
                                  1, p, NULL, NULL, err, errlen);
            if (r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
                *out = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
            PQclear(r);
            return *out ? 200 : 503;
        }
    }
    int ck = engine_check(srv->cfg.engine_path, spec, err, errlen);
    if (ck) return ck > 0 ? 400 : 502;
    json_t *stages = json_array();
    json_t *sa = json_object_get(spec, "stages");
    for (size_t i = 0; i < json_array_size(sa); i++) {
        json_t *s = json_array_get(sa, i);
        json_array_append_new(stages, json_pack("{s:O, s:O}", "name", json_object_get(s, "name"),
                                                "kind", json_object_get(s, "kind")));
    }
    char id[64];
    random_id(id, sizeof id, "pl-");
    char *spec_s = json_dumps(spec, JSON_COMPACT), *stages_s = json_dumps(stages, JSON_COMPACT);
    json_decref(stages);
    const char *p[] = {id, name, spec_s, stages_s, builtin ? "true" : "false"};
    PGresult *r = spec_s && stages_s
                      ? db_exec(srv->pool,
                                "INSERT INTO pipelines (id, name, spec, stages, builtin)"
                                " VALUES ($1, $2, $3::jsonb, $4::jsonb, $5::boolean)"
                                " ON CONFLICT (name) DO NOTHING RETURNING " PIPELINE_JSON,
                                5, p, NULL, NULL, err, errlen)
                      : NULL;
    free(spec_s);
    free(stages_s);
    if (!r) return 503;
    st = 500;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        *out = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
        st = *out ? 201 : 500;
    } else if (PQresultStatus(r) == PGRES_TUPLES_OK) {
        snprintf(err, errlen, "a pipeline named \"%s\" exists already", name);
        st = 409;
    } else {
        log_msg("pipeline insert: %s", PQresultErrorMessage(r));
    }
    if (st == 500 && !*out) snprintf(err, errlen, "the pipeline could not be stored");
    PQclear(r);
    return st;
}

int pipelines_create(struct server *srv, const json_t *spec, bool builtin, char *id, char *err,
                     size_t errlen)
{
    json_t *o;
    int st = create(srv, spec, builtin, &o, err, errlen);
    if (st != 200 && st != 201) return -1;
    snprintf(id, 64, "%s", json_string_value(json_object_get(o, "id")));
    json_decref(o);
    return 0;
}

/* The pipeline object by id or name (new reference): 1, 0, -1 db error. */
static int fetch(struct server *srv, const char *id_or_name, json_t **out, char *err,
                 size_t errlen)
{
    const char *p[] = {id_or_name};
    PGresult *r = db_exec(srv->pool,
                          "SELECT " PIPELINE_JSON " FROM pipelines WHERE id = $1 OR name = $1"
                          " ORDER BY id = $1 DESC LIMIT 1",
                          1, p, NULL, NULL, err, errlen);
    if (!r) return -1;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "pipeline lookup: %s", PQresultErrorMessage(r));
        PQclear(r);
        return -1;
    }
    int found = PQntuples(r) == 1;
    if (found && !(*out = json_loads(PQgetvalue(r, 0, 0), 0, NULL))) {
        snprintf(err, errlen, "pipeline %s: bad record", id_or_name);
        found = -1;
    }
    PQclear(r);
    return found;
}

int pipelines_lookup(struct server *srv, const char *id_or_name, char *id, json_t **spec,
                     char *err, size_t errlen)
{
    json_t *o = NULL;
    int found = fetch(srv, id_or_name, &o, err, errlen);
    if (found == 1) {
        snprintf(id, 64, "%s", json_string_value(json_object_get(o, "id")));
        *spec = json_incref(json_object_get(o, "spec"));
    }
    json_decref(o);
    return found;
}

/* ---- routes ------------------------------------------------------------------------ */

static enum MHD_Result list(struct MHD_Connection *c, struct http_req *hr)
{
    const char *p[] = {MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after"), NULL};
    return catalog_reply_page(c, hr,
                              "SELECT " PIPELINE_JSON " FROM pipelines"
                              " WHERE ($1::text IS NULL OR seq < (SELECT seq FROM pipelines WHERE id = $1))"
                              " ORDER BY seq DESC LIMIT $2::int",
                              2, p);
}

enum MHD_Result pipelines_handle(struct MHD_Connection *c, struct http_req *hr, const char *method,
                                 const char *rest)
{
    enum MHD_Result ret;
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool post = strcmp(method, "POST") == 0 && !*rest;
    if (!get && !post)
        return http_reply_error(c, hr, 405, "invalid_request_error", NULL, "method_not_allowed",
                                "%s is not allowed on /v1/pipelines%s", method, rest);
    if (!http_authorize(c, hr, get ? KEYS_SCOPE_READ : KEYS_SCOPE_ADMIN, &ret)) return ret;
    char err[1024];
    if (post) {
        json_error_t jerr;
        json_t *body = json_loadb(hr->body.p ? hr->body.p : "", hr->body.len, 0, &jerr);
        if (!json_is_object(body)) {
            json_decref(body);
            return http_reply_error(c, hr, 400, "invalid_request_error", NULL, "invalid_json",
                                    "the body must be a pipeline definition (a JSON object)");
        }
        json_t *o;
        int st = create(hr->srv, body, false, &o, err, sizeof err);
        json_decref(body);
        if (st == 201) return http_reply_json(c, hr, 201, o);
        return http_reply_error(c, hr, st, http_error_type(st), st == 409 ? "name" : NULL,
                                st == 400   ? "invalid_pipeline"
                                : st == 409 ? "pipeline_exists"
                                : st == 503 ? "database_unavailable"
                                : st == 502 ? "engine_check_failed"
                                            : NULL,
                                "%s", err);
    }
    if (!*rest) return list(c, hr);
    const char *id = rest + 1;
    json_t *o = NULL;
    int found = strchr(id, '/') ? 0 : fetch(hr->srv, id, &o, err, sizeof err);
    if (found < 0)
        return http_reply_error(c, hr, 503, "service_unavailable", NULL, "database_unavailable",
                                "%s", err);
    if (!found)
        return http_reply_error(c, hr, 404, "invalid_request_error", "id", "pipeline_not_found",
                                "no pipeline \"%s\"", id);
    return http_reply_json(c, hr, 200, o);
}
