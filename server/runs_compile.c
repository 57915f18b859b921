/* server/runs_compile.c — turns a POST /v1/runs body into the spec
 * `aha-engine train` runs: overrides applied, `$base` and model ids made
 * model directories, dataset ids made files, stored rewards inlined; then
 * the engine itself validates the result (`train --validate-only`). No
 * database writes here. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "models.h"
#include "runs_internal.h"

#define RUNS_VALIDATE_TIMEOUT_S 30.0

void runs_compiled_free(struct runs_compiled *rc)
{
    json_decref(rc->spec);
    json_decref(rc->dataset_ids);
    rc->spec = rc->dataset_ids = NULL;
}

bool runs_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > RUNS_NAME_MAX || name[0] == '.') return false;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

/* A client-given data-dir-relative path: no absolute path, no "..". */
static bool rel_path_safe(const char *p)
{
    if (!*p || p[0] == '/') return false;
    for (const char *s = p; (s = strstr(s, "..")); s += 2)
        if ((s == p || s[-1] == '/') && (s[2] == 0 || s[2] == '/')) return false;
    return true;
}

static bool file_under(const char *data_dir, const char *rel, bool dir_with_config)
{
    char path[PATH_MAX];
    struct stat st;
    snprintf(path, sizeof path, dir_with_config ? "%s/%s/config.json" : "%s/%s", data_dir, rel);
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static bool is_stage(const json_t *stages, const char *name)
{
    size_t i;
    json_t *s;
    json_array_foreach(stages, i, s) {
        const char *n = json_string_value(json_object_get(s, "name"));
        if (n && strcmp(n, name) == 0) return true;
    }
    return false;
}

/* A model reference (not a stage): a served model id (including a finished
 * run's "<run>/<stage>") becomes its directory; a data-dir path stays.
 * Returns 0, or 404 with err. */
static int resolve_model(struct server *srv, const char *ref, char *out, size_t outlen,
                         char *err, size_t errlen)
{
    struct models_info m;
    if (models_get(srv->cfg.data_dir, ref, &m) == 0) {
        snprintf(out, outlen, "%s", m.path);
        return 0;
    }
    if (rel_path_safe(ref) && file_under(srv->cfg.data_dir, ref, true)) {
        snprintf(out, outlen, "%s", ref);
        return 0;
    }
    snprintf(err, errlen, "model \"%s\" does not exist (a model id from /v1/models, or "
             "<run name>/<stage> of a finished run)", ref);
    return 404;
}

static int apply_overrides(json_t *spec, const json_t *ov, const char **param, char *err,
                           size_t errlen)
{
    if (!ov || json_is_null(ov)) return 0;
    *param = "overrides";
    if (!json_is_object(ov)) {
        snprintf(err, errlen, "overrides: expected an object {\"<stage>\": {\"params\": {...}}}");
        return 400;
    }
    json_t *stages = json_object_get(spec, "stages");
    const char *sname;
    json_t *o;
    json_object_foreach((json_t *)ov, sname, o) {
        json_t *stage = NULL, *s;
        size_t i;
        json_array_foreach(stages, i, s) {
            const char *n = json_string_value(json_object_get(s, "name"));
            if (n && strcmp(n, sname) == 0) stage = s;
        }
        if (!stage) {
            snprintf(err, errlen, "overrides.%s: the pipeline has no stage \"%s\"", sname, sname);
            return 422;
        }
        if (!json_is_object(o)) {
            snprintf(err, errlen, "overrides.%s: expected an object {\"params\": {...}}", sname);
            return 400;
        }
        const char *k;
        json_t *v;
        json_object_foreach(o, k, v) {
            if (strcmp(k, "params") != 0) {
                snprintf(err, errlen, "overrides.%s.%s: only \"params\" can be overridden", sname,
                         k);
                return 422;
            }
            if (!json_is_object(v)) {
                snprintf(err, errlen, "overrides.%s.params: expected an object", sname);
                return 400;
            }
            json_t *params = json_object_get(stage, "params");
            if (!json_is_object(params)) {
                params = json_object();
                json_object_set_new(stage, "params", params);
            }
            json_object_update(params, v);
        }
    }
    return 0;
}

/* Runs `engine train --spec FILE --data-dir DIR --validate-only`; returns 0
 * valid, 422 with the engine's message, 500 when it could not run. */
static int engine_validate(struct server *srv, const json_t *spec, char *err, size_t errlen)
{
    char dir[PATH_MAX], path[PATH_MAX + 64], rid[40];
    snprintf(dir, sizeof dir, "%s/runs", srv->cfg.data_dir);
    mkdir(dir, 0755);
    random_id(rid, sizeof rid, "check-");
    snprintf(path, sizeof path, "%s/.%s.json", dir, rid);
    if (json_dump_file(spec, path, JSON_COMPACT)) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        return 500;
    }
    int pe[2];
    if (pipe2(pe, O_CLOEXEC)) {
        unlink(path);
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return 500;
    }
    pid_t pid = fork();
    if (pid == 0) {
        int nul = open("/dev/null", O_RDWR);
        dup2(nul, 0);
        dup2(nul, 1);
        dup2(pe[1], 2);
        signal(SIGPIPE, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        pthread_sigmask(SIG_SETMASK, &none, NULL);
        execl(srv->cfg.engine_path, srv->cfg.engine_path, "train", "--spec", path, "--data-dir",
              srv->cfg.data_dir, "--validate-only", (char *)NULL);
        _exit(127);
    }
    close(pe[1]);
    sbuf out = {0};
    char buf[4096];
    double t0 = clock_mono();
    if (pid > 0) {
        for (;;) {
            struct pollfd p = {pe[0], POLLIN, 0};
            int r = poll(&p, 1, 200);
            if (r > 0) {
                ssize_t n = read(pe[0], buf, sizeof buf);
                if (n <= 0) break;
                if (out.len < 8192) sbuf_append(&out, buf, (size_t)n);
            } else if (r < 0 && errno != EINTR) {
                break;
            }
            if (clock_mono() - t0 > RUNS_VALIDATE_TIMEOUT_S) {
                kill(pid, SIGKILL);
                break;
            }
        }
    }
    close(pe[0]);
    int status = 0;
    if (pid > 0) waitpid(pid, &status, 0);
    unlink(path);
    int rc = 0;
    if (pid < 0 || !WIFEXITED(status) || WEXITSTATUS(status) == 127) {
        snprintf(err, errlen, "the engine %s could not validate the pipeline", srv->cfg.engine_path);
        rc = 500;
    } else if (WEXITSTATUS(status) != 0) {
        /* "train: <file>: <message>\n" amid backend banners: keep the message */
        const char *msg = out.p ? out.p : "";
        const char *t = strstr(msg, "train: ");
        if (t) {
            msg = t + 7;
            const char *colon = strstr(msg, path);
            if (colon) msg = colon + strlen(path) + 2;
        }
        snprintf(err, errlen, "invalid pipeline: %.*s", (int)strcspn(msg, "\n"), msg);
        rc = 422;
    }
    sbuf_free(&out);
    return rc;
}

int runs_compile(struct server *srv, const json_t *body, struct runs_compiled *rc,
                 const char **param, char *err, size_t errlen)
{
    memset(rc, 0, sizeof *rc);
    *param = NULL;
    static const char *const fields[] = {"pipeline", "base_model", "overrides", "name", "tags",
                                         "integrations", "auto_resume", NULL};
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)body, k, v) {
        bool ok = false;
        for (int i = 0; fields[i]; i++) ok |= strcmp(k, fields[i]) == 0;
        if (!ok) {
            *param = k;
            snprintf(err, errlen, "unknown field \"%s\"", k);
            return 400;
        }
    }
    json_t *pj = json_object_get(body, "pipeline");
    *param = "pipeline";
    if (json_is_string(pj)) {
        json_t *spec = NULL;
        int f = pipelines_lookup(srv, json_string_value(pj), rc->pipeline_id, &spec, err, errlen);
        if (f < 0) return 503;
        if (f == 0) {
            snprintf(err, errlen, "pipeline \"%s\" does not exist", json_string_value(pj));
            return 404;
        }
        rc->spec = json_deep_copy(spec);
        json_decref(spec);
    } else if (json_is_object(pj)) {
        snprintf(rc->pipeline_id, sizeof rc->pipeline_id, "inline");
        rc->spec = json_deep_copy(pj);
    } else {
        snprintf(err, errlen, "'pipeline' must be a pipeline id or name (or an inline pipeline "
                 "object)");
        return 400;
    }
    rc->dataset_ids = json_array();
    json_t *stages = json_object_get(rc->spec, "stages");
    if (!json_is_array(stages)) {
        snprintf(err, errlen, "pipeline: field \"stages\" must be an array");
        return 422;
    }
    int st = apply_overrides(rc->spec, json_object_get(body, "overrides"), param, err, errlen);
    if (st) return st;

    /* $base */
    json_t *bj = json_object_get(body, "base_model");
    *param = "base_model";
    if (bj && !json_is_null(bj) && !json_is_string(bj)) {
        snprintf(err, errlen, "'base_model' must be a model id");
        return 400;
    }
    const char *base = json_is_string(bj) ? json_string_value(bj)
                                          : json_string_value(json_object_get(rc->spec, "base_model"));
    if (base) {
        char dir[4096];
        snprintf(rc->base_model, sizeof rc->base_model, "%s", base);
        base = rc->base_model; /* the spec's string is replaced below */
        if ((st = resolve_model(srv, base, dir, sizeof dir, err, errlen))) return st;
        json_object_set_new(rc->spec, "base_model", json_string(dir));
    }

    /* stage references */
    size_t i;
    json_t *s;
    json_array_foreach(stages, i, s) {
        if (!json_is_object(s)) continue; /* the engine names it */
        const char *sname = json_string_value(json_object_get(s, "name"));
        if (!sname) sname = "?";
        const char *m = json_string_value(json_object_get(s, "model"));
        *param = "pipeline";
        const char *t = json_string_value(json_object_get(s, "teacher"));
        if (((m && strcmp(m, "$base") == 0) || (t && strcmp(t, "$base") == 0)) && !base) {
            *param = "base_model";
            snprintf(err, errlen, "stage \"%s\" %s \"$base\": 'base_model' is required", sname,
                     m && strcmp(m, "$base") == 0 ? "trains" : "distils from");
            return 422;
        }
        for (int f = 0; f < 2; f++) {
            const char *field = f ? "teacher" : "model";
            const char *ref = f ? t : m;
            if (!ref || strcmp(ref, "$base") == 0 || is_stage(stages, ref)) continue;
            char dir[4096];
            if ((st = resolve_model(srv, ref, dir, sizeof dir, err, errlen))) return st;
            json_object_set_new(s, field, json_string(dir));
        }
        const char *d = json_string_value(json_object_get(s, "dataset"));
        if (d && !is_stage(stages, d)) {
            char path[4096];
            int f = datasets_lookup(srv, d, path, NULL, err, errlen);
            if (f < 0) return 503;
            if (f == 1) {
                /* d lives in s until it is replaced */
                json_array_append_new(rc->dataset_ids, json_string(d));
                json_object_set_new(s, "dataset", json_string(path));
            } else if (!rel_path_safe(d) || !file_under(srv->cfg.data_dir, d, false)) {
                snprintf(err, errlen, "stage \"%s\": dataset \"%s\" does not exist", sname, d);
                return 404;
            }
        }
        json_t *rw = json_object_get(s, "reward");
        if (json_is_string(rw)) {
            json_t *spec = NULL;
            const char *rid = json_string_value(rw);
            int f = rewards_lookup(srv, rid, &spec, err, errlen);
            if (f < 0) return 503;
            if (f == 1) {
                json_object_set_new(s, "reward", spec);
            } else if (!rel_path_safe(rid) || !file_under(srv->cfg.data_dir, rid, false)) {
                snprintf(err, errlen, "stage \"%s\": reward \"%s\" does not exist", sname, rid);
                return 404;
            }
        }
    }

    json_t *tags = json_object_get(body, "tags");
    *param = "tags";
    if (tags && !json_is_null(tags)) {
        bool ok = json_is_array(tags) && json_array_size(tags) <= RUNS_TAGS_MAX;
        json_t *t;
        json_array_foreach(tags, i, t) ok = ok && json_is_string(t) && json_string_length(t) > 0 &&
                                           json_string_length(t) <= 64;
        if (!ok) {
            snprintf(err, errlen, "'tags' must be an array of at most %d strings of 1 to 64 bytes",
                     RUNS_TAGS_MAX);
            return 400;
        }
    }
    json_t *ar = json_object_get(body, "auto_resume");
    *param = "auto_resume";
    if (ar && !json_is_boolean(ar) && !json_is_null(ar)) {
        snprintf(err, errlen, "'auto_resume' must be a boolean");
        return 400;
    }
    *param = "integrations";
    if (integrations_validate(json_object_get(body, "integrations"), err, errlen)) return 422;
    json_t *nj = json_object_get(body, "name");
    *param = "name";
    if (nj && !json_is_null(nj)) {
        if (!json_is_string(nj) || !runs_name_valid(json_string_value(nj))) {
            snprintf(err, errlen, "'name' must be 1 to %d characters of [A-Za-z0-9._-], not "
                     "starting with '.'", RUNS_NAME_MAX);
            return 400;
        }
        struct models_info mi;
        if (models_get(srv->cfg.data_dir, json_string_value(nj), &mi) == 0) {
            snprintf(err, errlen, "'name' \"%s\" is a model id already; stage models are served "
                     "as <run name>/<stage>", json_string_value(nj));
            return 409;
        }
    }
    *param = "pipeline";
    return engine_validate(srv, rc->spec, err, errlen);
}
