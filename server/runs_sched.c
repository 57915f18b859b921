/* server/runs_sched.c — the scheduler: claims queued runs from the
 * PostgreSQL queue (FOR UPDATE SKIP LOCKED, so servers sharing a database
 * never take the same run), runs one `aha-engine train` process per run
 * (at most runs_max_runs), reads its NDJSON events into runs_ingest, and
 * decides how the run ends. Runs whose server stopped renewing its lease
 * are put back in the queue to resume from their last checkpoint. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "runs_internal.h"

#define SCHED_POLL_S 1.0
#define SCHED_LINE_MAX (16 << 20)   /* one event line; longer is cut off and logged */

int runs_max_runs;

struct proc {
    struct proc *next;
    char id[64], name[RUNS_NAME_MAX + 1];
    json_t *spec, *integ_cfg, *integ_state;
    char resume_from[PATH_MAX];
    int attempt, auto_resumes;
    bool auto_resume;
    atomic_bool cancel;
    bool finished;
    pthread_t thread;
};

static struct {
    struct server *srv;
    char instance[40];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping, started, woken;
    pthread_t thread, templates;
    bool templates_started;
    struct proc *procs;
    int running;
} S = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

void runs_sched_wake(void)
{
    pthread_mutex_lock(&S.mu);
    S.woken = true;
    pthread_cond_broadcast(&S.cv);
    pthread_mutex_unlock(&S.mu);
}

bool runs_sched_cancel(const char *run_id)
{
    bool found = false;
    pthread_mutex_lock(&S.mu);
    for (struct proc *p = S.procs; p; p = p->next)
        if (!p->finished && strcmp(p->id, run_id) == 0) {
            atomic_store(&p->cancel, true);
            found = true;
        }
    pthread_mutex_unlock(&S.mu);
    return found;
}

static bool stopping(void)
{
    pthread_mutex_lock(&S.mu);
    bool s = S.stopping;
    pthread_mutex_unlock(&S.mu);
    return s;
}

static void mkdirs(const char *path)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(tmp, 0755);
            *p = '/';
        }
    mkdir(tmp, 0755);
}

void runs_stage_model_link(struct server *srv, const char *run_name, const char *stage,
                           const char *path)
{
    char dir[PATH_MAX], link[PATH_MAX + 128], real[PATH_MAX];
    if (!realpath(path, real)) {
        log_msg("run %s: stage %s output %s: %s", run_name, stage, path, strerror(errno));
        return;
    }
    snprintf(dir, sizeof dir, "%s/models/%s", srv->cfg.data_dir, run_name);
    mkdirs(dir);
    snprintf(link, sizeof link, "%s/%s", dir, stage);
    unlink(link); /* a resumed or re-run stage replaces its model */
    if (symlink(real, link))
        log_msg("run %s: cannot serve stage %s as a model: %s", run_name, stage, strerror(errno));
}

void runs_stage_dataset_import(struct server *srv, const char *run_id, const char *run_name,
                               const char *stage, const char *path)
{
    char name[300], id[64], err[512];
    snprintf(name, sizeof name, "%s/%s", run_name, stage);
    if (datasets_import_file(srv, path, "sft", name, id, err, sizeof err)) {
        log_msg("run %s: stage %s dataset: %s", run_name, stage, err);
        return;
    }
    const char *p[] = {run_id, stage, id};
    PGresult *r = db_exec(srv->pool,
                          "UPDATE run_stages SET info = info || jsonb_build_object('dataset_id', $3::text)"
                          " WHERE run_id = $1 AND name = $2",
                          3, p, NULL, NULL, err, sizeof err);
    if (!r || PQresultStatus(r) != PGRES_COMMAND_OK)
        log_msg("run %s: stage %s dataset %s: %s", run_name, stage, id,
                r ? PQresultErrorMessage(r) : err);
    PQclear(r);
}

/* The last line of the engine's stderr log (a cause when it sent no error
 * event) into out. */
static void log_tail(const char *path, char *out, size_t outlen)
{
    out[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) return;
    char buf[2048];
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    long off = size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0;
    fseek(f, off, SEEK_SET);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = 0;
    char *line = strrchr(buf, '\n');
    const char *t = line ? line + 1 : buf;
    size_t l = strlen(t) < outlen - 1 ? strlen(t) : outlen - 1;
    memcpy(out, t, l);
    out[l] = 0;
}

static pid_t spawn(struct proc *p, const char *spec_path, const char *out_dir,
                   const char *log_path, int *out_fd)
{
    struct server *srv = S.srv;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC)) return -1;
    const char *argv[16];
    int n = 0;
    argv[n++] = srv->cfg.engine_path;
    argv[n++] = "train";
    argv[n++] = "--spec";
    argv[n++] = spec_path;
    argv[n++] = "--data-dir";
    argv[n++] = srv->cfg.data_dir;
    argv[n++] = "--out";
    argv[n++] = out_dir;
    if (p->resume_from[0]) {
        argv[n++] = "--resume";
        argv[n++] = p->resume_from;
    }
    argv[n] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* an engine never outlives its server: a restarted one resumes the
         * run from its checkpoint instead of racing an orphan */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(1);
        int nul = open("/dev/null", O_RDONLY);
        int lg = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(nul, 0);
        dup2(fds[1], 1);
        if (lg >= 0) dup2(lg, 2);
        signal(SIGPIPE, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        pthread_sigmask(SIG_SETMASK, &none, NULL); /* the server blocks SIGTERM */
        execv(argv[0], (char *const *)argv);
        fprintf(stderr, "aha-server: cannot run engine %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        return -1;
    }
    *out_fd = fds[0];
    return pid;
}

static void *run_main(void *arg)
{
    struct proc *p = arg;
    struct server *srv = S.srv;
    char out_dir[PATH_MAX], spec_path[PATH_MAX + 32], log_path[PATH_MAX + 32];
    snprintf(out_dir, sizeof out_dir, "%s/runs/%s", srv->cfg.data_dir, p->id);
    mkdirs(out_dir);
    snprintf(spec_path, sizeof spec_path, "%s/spec.json", out_dir);
    snprintf(log_path, sizeof log_path, "%s/engine.log", out_dir);
    struct integrations *integ =
        integrations_open(p->integ_cfg, p->integ_state, p->id, p->name, p->spec);
    struct runs_ingest *in = runs_ingest_new(srv, p->id, p->name, S.instance, integ);
    char msg[PATH_MAX + 256];
    if (p->resume_from[0])
        snprintf(msg, sizeof msg, "attempt %d on %s, resuming from %s", p->attempt, S.instance,
                 p->resume_from);
    else
        snprintf(msg, sizeof msg, "attempt %d on %s", p->attempt, S.instance);
    runs_ingest_status(in, "running", msg, false, false);

    int fd = -1, status = 0;
    pid_t pid = -1;
    if (json_dump_file(p->spec, spec_path, JSON_INDENT(1)) == 0)
        pid = spawn(p, spec_path, out_dir, log_path, &fd);
    char last_error[1024] = "", done_status[32] = "";
    bool term_sent = false, cancel = false, shutdown = false;
    double term_at = 0;
    if (pid > 0) {
        sbuf line = {0};
        char buf[65536];
        bool eof = false, overlong = false;
        while (!eof) {
            struct pollfd pf = {fd, POLLIN, 0};
            int r = poll(&pf, 1, 200);
            if (r < 0 && errno != EINTR) break;
            if (r > 0) {
                ssize_t n = read(fd, buf, sizeof buf);
                if (n == 0) eof = true;
                if (n < 0 && errno != EINTR && errno != EAGAIN) eof = true;
                size_t start = 0;
                for (ssize_t i = 0; i < n; i++) {
                    if (buf[i] != '\n') continue;
                    if (!overlong) sbuf_append(&line, buf + start, (size_t)i - start);
                    start = (size_t)i + 1;
                    json_error_t je;
                    json_t *ev = line.len ? json_loadb(line.p, line.len, 0, &je) : NULL;
                    if (line.len && !json_is_object(ev)) {
                        json_decref(ev);
                        ev = json_pack("{s:s, s:s%}", "type", "log", "line", line.p,
                                       line.len > 4096 ? (size_t)4096 : line.len);
                    }
                    if (ev) {
                        const char *t = json_string_value(json_object_get(ev, "type"));
                        const char *m = json_string_value(json_object_get(ev, "message"));
                        if (t && strcmp(t, "error") == 0 && m)
                            snprintf(last_error, sizeof last_error, "%s", m);
                        const char *ds = json_string_value(json_object_get(ev, "status"));
                        if (t && strcmp(t, "done") == 0 && ds)
                            snprintf(done_status, sizeof done_status, "%s", ds);
                        runs_ingest_event(in, ev);
                    }
                    line.len = 0;
                    overlong = false;
                }
                if (n > 0 && !overlong) sbuf_append(&line, buf + start, (size_t)n - start);
                if (line.len > SCHED_LINE_MAX) {
                    log_msg("run %s: event line over %d bytes skipped", p->id, SCHED_LINE_MAX);
                    line.len = 0;
                    overlong = true;
                }
            }
            if (runs_ingest_lost(in)) {
                kill(pid, SIGKILL);
            } else if (!term_sent && (atomic_load(&p->cancel) || runs_ingest_cancel_requested(in))) {
                cancel = true; /* the engine stops at a safe point with a checkpoint */
                kill(pid, SIGTERM);
                term_sent = true;
                term_at = clock_mono();
            } else if (!term_sent && stopping()) {
                shutdown = true;
                kill(pid, SIGTERM);
                term_sent = true;
                term_at = clock_mono();
            } else if (term_sent && shutdown && clock_mono() - term_at > RUNS_STOP_WAIT_S) {
                kill(pid, SIGKILL);
            }
        }
        sbuf_free(&line);
        close(fd);
        double t0 = clock_mono();
        while (waitpid(pid, &status, WNOHANG) == 0) {
            if (clock_mono() - t0 > 5) kill(pid, SIGKILL);
            struct timespec ts = {0, 20 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }

    cancel = cancel || atomic_load(&p->cancel) || runs_ingest_cancel_requested(in);
    char cause[1536];
    if (pid <= 0)
        snprintf(cause, sizeof cause, "could not start the engine %s: %s", srv->cfg.engine_path,
                 strerror(errno));
    else if (WIFSIGNALED(status))
        snprintf(cause, sizeof cause, "the engine was killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(cause, sizeof cause, "the engine exited with status %d", WEXITSTATUS(status));
    if (!last_error[0] && pid > 0) log_tail(log_path, last_error, sizeof last_error);
    if (last_error[0] && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        size_t l = strlen(cause);
        snprintf(cause + l, sizeof cause - l, ": %s", last_error);
    }
    bool ok = pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
              strcmp(done_status, "succeeded") == 0;
    if (runs_ingest_lost(in)) {
        log_msg("run %s: another server took it over; its engine was stopped", p->id);
    } else if (ok) {
        runs_ingest_status(in, "succeeded", NULL, false, false);
    } else if (cancel) {
        runs_ingest_status(in, "cancelled", "cancelled on request", false, false);
    } else if (shutdown) {
        runs_ingest_status(in, "queued",
                           "the server shut down; the run resumes from its last checkpoint",
                           true, false);
    } else if (p->auto_resume && p->auto_resumes < RUNS_AUTO_RESUMES_MAX) {
        size_t l = strlen(cause);
        snprintf(cause + l, sizeof cause - l,
                 "; resuming from the last checkpoint (automatic resume %d of %d)",
                 p->auto_resumes + 1, RUNS_AUTO_RESUMES_MAX);
        runs_ingest_status(in, "queued", cause, true, true);
    } else {
        runs_ingest_status(in, "failed", cause, false, false);
    }
    runs_ingest_free(in);
    integrations_close(integ, 5.0);
    pthread_mutex_lock(&S.mu);
    p->finished = true;
    S.running--;
    S.woken = true;
    pthread_cond_broadcast(&S.cv);
    pthread_mutex_unlock(&S.mu);
    return NULL;
}

static void proc_free(struct proc *p)
{
    json_decref(p->spec);
    json_decref(p->integ_cfg);
    json_decref(p->integ_state);
    free(p);
}

static json_t *load_or_null(const char *s)
{
    return s && *s ? json_loads(s, 0, NULL) : NULL;
}

/* Claims one queued run and starts its thread; returns 1 started, 0 none
 * queued, -1 error. */
static int claim_one(void)
{
    char err[512];
    const char *params[] = {S.instance};
    PGresult *r = db_exec(
        S.srv->pool,
        "UPDATE runs SET status = 'running', claimed_by = $1, heartbeat_at = now(),"
        " started_at = coalesce(started_at, now()), finished_at = NULL, attempt = attempt + 1"
        " WHERE id = (SELECT id FROM runs WHERE status = 'queued' ORDER BY created_at, id"
        "   FOR UPDATE SKIP LOCKED LIMIT 1)"
        " RETURNING id, name, spec::text, resume_from, attempt, auto_resume, auto_resumes,"
        " integrations::text, integrations_state::text",
        1, params, NULL, NULL, err, sizeof err);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
        log_msg("runs: claim: %s", r ? PQresultErrorMessage(r) : err);
        PQclear(r);
        return -1;
    }
    if (PQntuples(r) == 0) {
        PQclear(r);
        return 0;
    }
    struct proc *p = calloc(1, sizeof *p);
    snprintf(p->id, sizeof p->id, "%s", PQgetvalue(r, 0, 0));
    snprintf(p->name, sizeof p->name, "%s", PQgetvalue(r, 0, 1));
    p->spec = json_loads(PQgetvalue(r, 0, 2), 0, NULL);
    snprintf(p->resume_from, sizeof p->resume_from, "%s", PQgetvalue(r, 0, 3));
    p->attempt = atoi(PQgetvalue(r, 0, 4));
    p->auto_resume = PQgetvalue(r, 0, 5)[0] == 't';
    p->auto_resumes = atoi(PQgetvalue(r, 0, 6));
    p->integ_cfg = load_or_null(PQgetvalue(r, 0, 7));
    p->integ_state = load_or_null(PQgetvalue(r, 0, 8));
    PQclear(r);
    log_msg("run %s (%s): claimed, attempt %d%s%s", p->id, p->name, p->attempt,
            p->resume_from[0] ? ", resuming from " : "", p->resume_from);
    pthread_mutex_lock(&S.mu);
    p->next = S.procs;
    S.procs = p;
    S.running++;
    if (pthread_create(&p->thread, NULL, run_main, p)) {
        S.procs = p->next;
        S.running--;
        pthread_mutex_unlock(&S.mu);
        proc_free(p);
        return -1;
    }
    pthread_mutex_unlock(&S.mu);
    return 1;
}

/* Runs claimed by a server that stopped renewing its lease go back to the
 * queue (resuming from their last checkpoint), or end cancelled when a
 * cancel was pending; each change is a status event. */
static void reclaim_expired(void)
{
    char err[512], lease[16];
    snprintf(lease, sizeof lease, "%d", RUNS_LEASE_S);
    const char *params[] = {lease};
    PGresult *r = db_exec(
        S.srv->pool,
        "WITH x AS (SELECT id FROM runs WHERE status = 'running' AND"
        "   heartbeat_at < now() - make_interval(secs => $1::int) FOR UPDATE SKIP LOCKED),"
        " u AS (UPDATE runs r SET"
        "   status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END,"
        "   finished_at = CASE WHEN cancel_requested THEN now() END,"
        "   error = CASE WHEN cancel_requested THEN 'cancelled on request'"
        "     ELSE 'the server running it stopped renewing its lease' END,"
        "   claimed_by = NULL, heartbeat_at = NULL, cancel_requested = false,"
        "   last_seq = last_seq + 1,"
        "   resume_from = coalesce((SELECT path FROM run_checkpoints k WHERE k.run_id = r.id"
        "     ORDER BY created_at DESC, step DESC LIMIT 1), resume_from)"
        "   FROM x WHERE r.id = x.id RETURNING r.id, r.last_seq, r.status, r.error),"
        " e AS (INSERT INTO run_events (run_id, seq, type, data) SELECT id, last_seq, 'status',"
        "   jsonb_build_object('status', status, 'message', CASE WHEN status = 'queued' THEN"
        "   error || '; the run resumes from its last checkpoint' ELSE error END) FROM u"
        "   RETURNING run_id, seq)"
        " SELECT run_id, pg_notify('aha_run_events', run_id || ':' || seq) FROM e",
        1, params, NULL, NULL, err, sizeof err);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK)
        log_msg("runs: reclaiming expired leases: %s", r ? PQresultErrorMessage(r) : err);
    else
        for (int i = 0; i < PQntuples(r); i++)
            log_msg("run %s: its server's lease expired; re-queued", PQgetvalue(r, i, 0));
    PQclear(r);
}

static void reap_finished(bool all)
{
    for (;;) {
        struct proc *done = NULL;
        pthread_mutex_lock(&S.mu);
        for (struct proc **pp = &S.procs; *pp; pp = &(*pp)->next)
            if ((*pp)->finished || all) {
                done = *pp;
                *pp = done->next;
                break;
            }
        pthread_mutex_unlock(&S.mu);
        if (!done) return;
        pthread_join(done->thread, NULL);
        proc_free(done);
    }
}

/* The templates take a while the first time (datagen): never in the
 * scheduler's way. */
static void *templates_main(void *arg)
{
    char err[1024];
    if (runs_templates_ensure(S.srv, err, sizeof err))
        log_msg("runs: built-in templates not created: %s", err);
    return NULL;
}

static void *sched_main(void *arg)
{
    double last_reclaim = 0;
    while (!stopping()) {
        reap_finished(false);
        if (clock_mono() - last_reclaim >= SCHED_POLL_S) {
            reclaim_expired();
            last_reclaim = clock_mono();
        }
        for (;;) {
            pthread_mutex_lock(&S.mu);
            int max = runs_max_runs > 0 ? runs_max_runs : RUNS_MAX_RUNS_DEFAULT;
            bool room = S.running < max && !S.stopping;
            pthread_mutex_unlock(&S.mu);
            if (!room || claim_one() != 1) break;
        }
        pthread_mutex_lock(&S.mu);
        if (!S.woken && !S.stopping) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += (time_t)SCHED_POLL_S;
            pthread_cond_timedwait(&S.cv, &S.mu, &ts);
        }
        S.woken = false;
        pthread_mutex_unlock(&S.mu);
    }
    return NULL;
}

int runs_start(struct server *srv, char *err, size_t errlen)
{
    S.srv = srv;
    S.stopping = false;
    random_id(S.instance, sizeof S.instance, "srv-");
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/runs", srv->cfg.data_dir);
    mkdirs(dir);
    if (runs_sse_start(srv, err, errlen)) return -1;
    if (pthread_create(&S.thread, NULL, sched_main, NULL)) {
        snprintf(err, errlen, "cannot start the run scheduler thread");
        runs_sse_stop();
        return -1;
    }
    S.started = true;
    S.templates_started = pthread_create(&S.templates, NULL, templates_main, NULL) == 0;
    log_msg("runs: scheduler %s started (at most %d runs)", S.instance,
            runs_max_runs > 0 ? runs_max_runs : RUNS_MAX_RUNS_DEFAULT);
    return 0;
}

void runs_stop(struct server *srv)
{
    if (!S.started) return;
    pthread_mutex_lock(&S.mu);
    S.stopping = true;
    pthread_cond_broadcast(&S.cv);
    pthread_mutex_unlock(&S.mu);
    pthread_join(S.thread, NULL);
    reap_finished(true); /* each run's thread stops its engine and re-queues the run */
    if (S.templates_started) pthread_join(S.templates, NULL);
    S.templates_started = false;
    S.started = false;
    runs_sse_stop();
}
