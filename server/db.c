/* server/db.c — libpq connection pool and migrations runner.
 * Not an ORM: callers write their own parameterized SQL. */
#include "db.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

/* pg_advisory_xact_lock key for migrations: "aha" + "mig" in ASCII. */
#define DB_MIGRATION_LOCK 0x6168616d6967LL
#define DB_MAX_MIGRATIONS 1000

struct db_pool {
    char *url;
    int size;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    PGconn **conns;   /* size slots; NULL = not connected yet */
    bool *busy;
};

db_pool *db_pool_new(const char *url, int size)
{
    db_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->url = strdup(url);
    p->size = size;
    p->conns = calloc((size_t)size, sizeof *p->conns);
    p->busy = calloc((size_t)size, sizeof *p->busy);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (!p->url || !p->conns || !p->busy) {
        db_pool_free(p);
        return NULL;
    }
    return p;
}

void db_pool_free(db_pool *p)
{
    if (!p) return;
    for (int i = 0; p->conns && i < p->size; i++)
        if (p->conns[i]) PQfinish(p->conns[i]);
    free(p->conns);
    free(p->busy);
    free(p->url);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

static void notice_quiet(void *arg, const char *msg) {}

PGconn *db_connect(const char *url, char *err, size_t errlen)
{
    const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
    const char *vals[] = {url, "3", "aha-server", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        snprintf(err, errlen, "could not connect to PostgreSQL: %s",
                 c ? PQerrorMessage(c) : "out of memory");
        char *nl = strchr(err, '\n');
        if (nl) *nl = 0;
        if (c) PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, notice_quiet, NULL);
    return c;
}

PGconn *db_acquire(db_pool *p, int wait_ms, char *err, size_t errlen)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += wait_ms / 1000;
    deadline.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&p->mu);
    int slot = -1;
    for (;;) {
        for (int i = 0; i < p->size; i++)
            if (!p->busy[i] && (slot < 0 || (p->conns[i] && !p->conns[slot]))) slot = i;
        if (slot >= 0) break;
        if (pthread_cond_timedwait(&p->cv, &p->mu, &deadline) == ETIMEDOUT) {
            pthread_mutex_unlock(&p->mu);
            snprintf(err, errlen, "database connection pool exhausted");
            return NULL;
        }
    }
    p->busy[slot] = true;
    PGconn *c = p->conns[slot];
    p->conns[slot] = NULL;
    pthread_mutex_unlock(&p->mu);

    if (c && PQstatus(c) != CONNECTION_OK) {
        PQfinish(c);
        c = NULL;
    }
    if (!c) c = db_connect(p->url, err, errlen);

    pthread_mutex_lock(&p->mu);
    if (c) {
        p->conns[slot] = c; /* remember the slot: db_release finds it by pointer */
    } else {
        p->busy[slot] = false;
        pthread_cond_signal(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return c;
}

void db_release(db_pool *p, PGconn *c, bool broken)
{
    if (!c) return;
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < p->size; i++) {
        if (p->conns[i] != c) continue;
        if (broken || PQstatus(c) != CONNECTION_OK ||
            PQtransactionStatus(c) != PQTRANS_IDLE) {
            PQfinish(c);
            p->conns[i] = NULL;
        }
        p->busy[i] = false;
        break;
    }
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

bool db_conn_broken(PGconn *c) { return !c || PQstatus(c) != CONNECTION_OK; }

PGresult *db_exec(db_pool *p, const char *sql, int n, const char *const *params,
                  const int *lengths, const int *formats, char *err, size_t errlen)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        PGconn *c = db_acquire(p, 2000, err, errlen);
        if (!c) return NULL;
        PGresult *r = PQexecParams(c, sql, n, NULL, params, lengths, formats, 0);
        ExecStatusType st = PQresultStatus(r);
        bool ok = st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;
        bool broken = !ok && db_conn_broken(c);
        db_release(p, c, broken);
        if (!broken) return r;
        snprintf(err, errlen, "database connection lost: %s", PQresultErrorMessage(r));
        char *nl = strchr(err, '\n');
        if (nl) *nl = 0;
        PQclear(r);
    }
    return NULL;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    sbuf b = {0};
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (sbuf_append(&b, chunk, n)) break;
    fclose(f);
    if (!b.p) sbuf_append(&b, "", 0);
    return b.p;
}

static int exec_ok(PGconn *c, const char *sql, int nparams, const char *const *params,
                   char *err, size_t errlen, const char *what)
{
    PGresult *r = nparams ? PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0)
                          : PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "%s: %s", what, PQresultErrorMessage(r));
        char *nl = strrchr(err, '\n');
        if (nl && nl[1] == 0) *nl = 0;
        PQclear(r);
        return -1;
    }
    PQclear(r);
    return 0;
}

int db_migrate(PGconn *c, const char *dir, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "migrations directory \"%s\": %s", dir, strerror(errno));
        return -1;
    }
    char *names[DB_MAX_MIGRATIONS];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < DB_MAX_MIGRATIONS) {
        const char *s = e->d_name;
        size_t len = strlen(s);
        if (len < 10 || strcmp(s + len - 4, ".sql") != 0 || s[4] != '_') continue;
        if (s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9' || s[2] < '0' ||
            s[2] > '9' || s[3] < '0' || s[3] > '9')
            continue;
        names[n++] = strdup(s);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    int newest = n ? atoi(names[n - 1]) : 0;
    int applied = 0, rc = -1;

    if (exec_ok(c, "BEGIN", 0, NULL, err, errlen, "begin migrations")) goto out;
    char lock[64];
    snprintf(lock, sizeof lock, "%lld", DB_MIGRATION_LOCK);
    const char *lp[] = {lock};
    if (exec_ok(c, "SELECT pg_advisory_xact_lock($1::bigint)", 1, lp, err, errlen,
                "migration lock") ||
        exec_ok(c,
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())",
                0, NULL, err, errlen, "schema_migrations"))
        goto rollback;
    PGresult *r = PQexec(c, "SELECT coalesce(max(version), 0) FROM schema_migrations");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "schema_migrations: %s", PQresultErrorMessage(r));
        PQclear(r);
        goto rollback;
    }
    int current = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    if (current > newest) {
        snprintf(err, errlen,
                 "database schema version %d is newer than this server knows (%d); "
                 "upgrade aha-server",
                 current, newest);
        goto rollback;
    }
    for (int i = 0; i < n; i++) {
        int version = atoi(names[i]);
        char vbuf[16];
        snprintf(vbuf, sizeof vbuf, "%d", version);
        const char *vp[] = {vbuf, names[i]};
        r = PQexecParams(c, "SELECT 1 FROM schema_migrations WHERE version = $1::int", 1,
                         NULL, vp, NULL, NULL, 0);
        bool done = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0;
        PQclear(r);
        if (done) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        char *sql = read_file(path);
        if (!sql) {
            snprintf(err, errlen, "migration %s: %s", path, strerror(errno));
            goto rollback;
        }
        int bad = exec_ok(c, sql, 0, NULL, err, errlen, names[i]);
        free(sql);
        if (bad ||
            exec_ok(c, "INSERT INTO schema_migrations (version, name) VALUES ($1::int, $2)", 2,
                    vp, err, errlen, "schema_migrations insert"))
            goto rollback;
        log_msg("applied migration %s", names[i]);
        applied++;
    }
    if (exec_ok(c, "COMMIT", 0, NULL, err, errlen, "commit migrations")) goto out;
    rc = applied;
    goto out;
rollback:;
    PGresult *rb = PQexec(c, "ROLLBACK");
    PQclear(rb);
out:
    for (int i = 0; i < n; i++) free(names[i]);
    return rc;
}
