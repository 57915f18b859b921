/* server/datasets.c — /v1/datasets: JSONL uploads (a raw body or a
 * multipart "file" part) streamed to a temporary file under
 * DATA_DIR/datasets while hashing, then checked row by row against their
 * purpose and stored by checksum (datasets/<sha256>.jsonl + a row in
 * `datasets`); listing, rows, deletion. Not the trainers' reader
 * (engine/jsonl.c): this one reports every bad row, up to a limit.
 *
 * Rows are checked from the temporary file once the body is in, not while
 * it streams: a multipart form may send "purpose" after the file, and one
 * checker then serves uploads and datasets_import_file alike. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "catalog.h"
#include "server.h"

#define DATASETS_MAX_ERRORS 20           /* bad rows listed in a 400; the rest are counted */
#define DATASETS_MAX_ROW_BYTES (16 << 20) /* one JSONL line */
#define DATASETS_MAX_FIELDS 64           /* distinct top-level fields with statistics */
#define DATASETS_NAME_MAX 256
#define DATASETS_ROWS_DEFAULT 20
#define DATASETS_ROWS_MAX 100
#define DATASETS_MULTIPART_SLACK 65536   /* form overhead allowed past max_upload */
#define DATASETS_FIELD_MAX 256           /* a multipart text field's bytes */

/* One dataset as a JSON object, built by PostgreSQL. */
#define DATASET_JSON                                                                      \
    "jsonb_build_object('id', id, 'object', 'dataset', 'name', name, 'purpose', purpose," \
    " 'sha256', sha256, 'rows', rows, 'bytes', bytes, 'fields', fields,"                 \
    " 'created_at', extract(epoch FROM created_at)::bigint)::text"

/* Serializes "row + file" changes in this process, so a delete never
 * unlinks a file an upload of the same bytes has just claimed. */
static pthread_mutex_t files_mu = PTHREAD_MUTEX_INITIALIZER;

static const char *const purposes[] = {"pretrain", "sft", "rl", "eval", NULL};

static bool purpose_valid(const char *p)
{
    for (int i = 0; p && purposes[i]; i++)
        if (strcmp(p, purposes[i]) == 0) return true;
    return false;
}

/* ---- ingest: a temporary file, hashed as it is written ---------------------- */

struct ingest {
    int fd;                 /* -1 when closed */
    char tmp[4096];         /* "" once renamed or removed */
    EVP_MD_CTX *md;
    long long bytes;
    long long limit;
    bool too_large;
    bool io_error;
};

static int ingest_open(struct ingest *g, const char *data_dir, long long limit, char *err,
                       size_t errlen)
{
    memset(g, 0, sizeof *g);
    g->fd = -1;
    g->limit = limit;
    char dir[3800];
    snprintf(dir, sizeof dir, "%.3780s/datasets", data_dir);
    if (mkdir(dir, 0755) && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    char rid[64];
    random_id(rid, sizeof rid, "");
    snprintf(g->tmp, sizeof g->tmp, "%s/.upload-%s.part", dir, rid);
    g->fd = open(g->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    g->md = EVP_MD_CTX_new();
    if (g->fd < 0 || !g->md || !EVP_DigestInit_ex(g->md, EVP_sha256(), NULL)) {
        snprintf(err, errlen, "cannot create %s: %s", g->tmp, strerror(errno));
        if (g->fd >= 0) close(g->fd), unlink(g->tmp);
        g->fd = -1;
        g->tmp[0] = 0;
        EVP_MD_CTX_free(g->md);
        g->md = NULL;
        return -1;
    }
    return 0;
}

/* Removes the temporary file (if still there) and frees. */
static void ingest_discard(struct ingest *g)
{
    if (g->fd >= 0) close(g->fd);
    g->fd = -1;
    if (g->tmp[0]) unlink(g->tmp);
    g->tmp[0] = 0;
    EVP_MD_CTX_free(g->md);
    g->md = NULL;
}

/* Appends bytes; past the limit the file is dropped at once and the rest
 * ignored (too_large). */
static void ingest_write(struct ingest *g, const char *data, size_t n)
{
    if (g->too_large || g->io_error || g->fd < 0) return;
    if (g->bytes + (long long)n > g->limit) {
        g->too_large = true;
        close(g->fd);
        g->fd = -1;
        unlink(g->tmp);
        g->tmp[0] = 0;
        return;
    }
    g->bytes += (long long)n;
    EVP_DigestUpdate(g->md, data, n);
    while (n) {
        ssize_t w = write(g->fd, data, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            log_msg("dataset upload %s: write: %s", g->tmp, strerror(errno));
            g->io_error = true;
            return;
        }
        data += w;
        n -= (size_t)w;
    }
}

/* ---- row checks and field statistics ---------------------------------------- */

struct field_stat {
    char *name;
    long long count;
    long long types[6];     /* object, array, string, number, boolean, null */
    double str_chars, arr_items;
};

static const char *const type_names[6] = {"object", "array", "string", "number", "boolean", "null"};

struct check {
    const char *purpose;
    long long rows;
    long long n_errors;
    json_t *errors;         /* [{line, field?, message}], at most DATASETS_MAX_ERRORS */
    struct field_stat fields[DATASETS_MAX_FIELDS];
    int n_fields;
    bool fields_truncated;
};

static int type_index(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return 0;
    case JSON_ARRAY: return 1;
    case JSON_STRING: return 2;
    case JSON_INTEGER:
    case JSON_REAL: return 3;
    case JSON_TRUE:
    case JSON_FALSE: return 4;
    default: return 5;
    }
}

static size_t utf8_chars(const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

static void stats_add(struct check *ck, const json_t *row)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)row, key, v) {
        struct field_stat *f = NULL;
        for (int i = 0; i < ck->n_fields && !f; i++)
            if (strcmp(ck->fields[i].name, key) == 0) f = &ck->fields[i];
        if (!f) {
            if (ck->n_fields == DATASETS_MAX_FIELDS) {
                ck->fields_truncated = true;
                continue;
            }
            f = &ck->fields[ck->n_fields];
            memset(f, 0, sizeof *f);
            if (!(f->name = strdup(key))) continue;
            ck->n_fields++;
        }
        f->count++;
        int t = type_index(v);
        f->types[t]++;
        if (t == 2) f->str_chars += (double)utf8_chars(json_string_value(v), json_string_length(v));
        if (t == 1) f->arr_items += (double)json_array_size(v);
    }
}

/* {field: {count, types: {type: n}, mean_length?, mean_items?}}; new reference. */
static json_t *stats_json(const struct check *ck)
{
    json_t *out = json_object();
    for (int i = 0; i < ck->n_fields; i++) {
        const struct field_stat *f = &ck->fields[i];
        json_t *types = json_object();
        for (int t = 0; t < 6; t++)
            if (f->types[t]) json_object_set_new(types, type_names[t], json_integer(f->types[t]));
        json_t *o = json_pack("{s:I, s:o}", "count", (json_int_t)f->count, "types", types);
        if (f->types[2])
            json_object_set_new(o, "mean_length", json_real(f->str_chars / (double)f->types[2]));
        if (f->types[1])
            json_object_set_new(o, "mean_items", json_real(f->arr_items / (double)f->types[1]));
        json_object_set_new(out, f->name, o);
    }
    return out;
}

static void check_free(struct check *ck)
{
    for (int i = 0; i < ck->n_fields; i++) free(ck->fields[i].name);
    ck->n_fields = 0;
    json_decref(ck->errors);
    ck->errors = NULL;
}

static void row_error(struct check *ck, long long line, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void row_error(struct check *ck, long long line, const char *field, const char *fmt, ...)
{
    ck->n_errors++;
    if (json_array_size(ck->errors) >= DATASETS_MAX_ERRORS) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_array_append_new(ck->errors, json_pack("{s:I, s:s?, s:s}", "line", (json_int_t)line,
                                                "field", field, "message", msg));
}

/* A messages array: objects {"role": system|user|assistant, "content":
 * string}, at least one; with need_assistant, one of them the assistant's.
 * Returns true, or false after reporting the row. */
static bool check_messages(struct check *ck, long long line, const char *field,
                           const json_t *msgs, bool need_assistant)
{
    if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
        row_error(ck, line, field, "field \"%s\": expected a non-empty array of messages", field);
        return false;
    }
    bool assistant = false;
    for (size_t i = 0; i < json_array_size(msgs); i++) {
        const json_t *m = json_array_get(msgs, i);
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!json_is_object(m) || !role || !json_is_string(json_object_get(m, "content"))) {
            row_error(ck, line, field, "%s[%zu]: expected {\"role\": string, \"content\": string}",
                      field, i);
            return false;
        }
        if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant")) {
            row_error(ck, line, field, "%s[%zu].role: \"%s\" is not system, user or assistant",
                      field, i, role);
            return false;
        }
        assistant |= strcmp(role, "assistant") == 0;
    }
    if (need_assistant && !assistant) {
        row_error(ck, line, field, "field \"%s\" has no assistant message to train on", field);
        return false;
    }
    return true;
}

/* The trainers' requirements per purpose (engine/pretrain.c, sft.c,
 * rollout.c's rl_dataset_load); extra fields are kept (rewards see them). */
static void check_row(struct check *ck, long long line, const json_t *row)
{
    if (!json_is_object(row)) {
        row_error(ck, line, NULL, "row is not a JSON object");
        return;
    }
    const char *p = ck->purpose;
    const json_t *msgs = json_object_get(row, "messages");
    if (strcmp(p, "pretrain") == 0) {
        const json_t *t = json_object_get(row, "text");
        if (!t) row_error(ck, line, "text", "field \"text\" is missing");
        else if (!json_is_string(t)) row_error(ck, line, "text", "field \"text\": expected a string");
        return;
    }
    if (strcmp(p, "sft") == 0) {
        if (msgs) {
            check_messages(ck, line, "messages", msgs, true);
            return;
        }
        const json_t *pr = json_object_get(row, "prompt"), *co = json_object_get(row, "completion");
        if (!pr || !co) {
            const char *f = pr ? "completion" : "prompt";
            row_error(ck, line, f,
                      "field \"%s\" is missing (sft rows need \"prompt\" and \"completion\", or "
                      "\"messages\")", f);
            return;
        }
        if (!json_is_string(pr) && !(json_is_array(pr) && check_messages(ck, line, "prompt", pr, false))) {
            if (!json_is_array(pr))
                row_error(ck, line, "prompt", "field \"prompt\": expected a string or a messages array");
            return;
        }
        if (!json_is_string(co) && !json_is_array(co))
            row_error(ck, line, "completion",
                      "field \"completion\": expected a string or a messages array");
        else if (json_is_array(co))
            check_messages(ck, line, "completion", co, true);
        return;
    }
    /* rl, eval */
    const json_t *pr = json_object_get(row, "prompt");
    if (pr && !json_is_string(pr)) {
        row_error(ck, line, "prompt", "field \"prompt\": expected a string");
        return;
    }
    if (!pr && !msgs) {
        row_error(ck, line, "prompt",
                  "field \"prompt\" (a string) or \"messages\" (an array) is missing");
        return;
    }
    if (!pr && !check_messages(ck, line, "messages", msgs, false)) return;
    const json_t *a = json_object_get(row, "answer");
    if (a && !json_is_string(a) && !json_is_number(a) && !json_is_array(a))
        row_error(ck, line, "answer", "field \"answer\": expected a string, a number or an array");
}

static void check_line(struct check *ck, long long line, const char *s, size_t n)
{
    size_t k = 0;
    while (k < n && (s[k] == ' ' || s[k] == '\t' || s[k] == '\r')) k++;
    if (k == n) return; /* blank lines are skipped, as engine/jsonl.c does */
    json_error_t je;
    json_t *row = json_loadb(s, n, 0, &je);
    if (!row) {
        row_error(ck, line, NULL, "invalid JSON at column %d: %s", je.column, je.text);
        return;
    }
    long long before = ck->n_errors;
    check_row(ck, line, row);
    if (ck->n_errors == before) {
        ck->rows++;
        stats_add(ck, row);
    }
    json_decref(row);
}

/* Checks every line of the file at path. Returns 0 (see ck->n_errors), or
 * -1 with err filled when the file cannot be read. */
static int check_file(struct check *ck, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot read %.300s: %s", path, strerror(errno));
        return -1;
    }
    char buf[65536];
    sbuf line = {0};
    long long lineno = 1;
    bool overlong = false;
    size_t n;
    int rc = 0;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        const char *p = buf, *end = buf + n;
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t take = (size_t)((nl ? nl : end) - p);
            if (!overlong && line.len + take > DATASETS_MAX_ROW_BYTES) {
                overlong = true;
                sbuf_free(&line);
            }
            if (!overlong && take && sbuf_append(&line, p, take)) {
                snprintf(err, errlen, "out of memory");
                rc = -1;
                goto out;
            }
            if (!nl) break;
            if (overlong)
                row_error(ck, lineno, NULL, "row is longer than the limit of %d bytes",
                          DATASETS_MAX_ROW_BYTES);
            else
                check_line(ck, lineno, line.p ? line.p : "", line.len);
            line.len = 0;
            overlong = false;
            lineno++;
            p = nl + 1;
        }
    }
    if (ferror(f)) {
        snprintf(err, errlen, "cannot read %.300s: %s", path, strerror(errno));
        rc = -1;
    } else if (overlong) {
        row_error(ck, lineno, NULL, "row is longer than the limit of %d bytes",
                  DATASETS_MAX_ROW_BYTES);
    } else if (line.len) {
        check_line(ck, lineno, line.p, line.len); /* a last line without '\n' */
    }
out:
    sbuf_free(&line);
    fclose(f);
    return rc;
}

/* The 400 for bad rows: the first few in the message, up to
 * DATASETS_MAX_ERRORS in "errors", and how many more there were. */
static json_t *rows_error_json(const struct check *ck)
{
    sbuf m = {0};
    sbuf_printf(&m, "the file has %lld invalid row%s for purpose \"%s\"", ck->n_errors,
                ck->n_errors == 1 ? "" : "s", ck->purpose);
    for (size_t i = 0; i < json_array_size(ck->errors) && i < 3; i++) {
        json_t *e = json_array_get(ck->errors, i);
        sbuf_printf(&m, "%s line %lld: %s", i ? ";" : ":",
                    (long long)json_integer_value(json_object_get(e, "line")),
                    json_string_value(json_object_get(e, "message")));
    }
    if (ck->n_errors > 3) sbuf_printf(&m, "; and %lld more", ck->n_errors - 3);
    json_t *out = http_error_json("invalid_request_error", "file", "invalid_dataset",
                                  m.p ? m.p : "invalid rows");
    sbuf_free(&m);
    json_t *e = json_object_get(out, "error");
    json_object_set(e, "errors", ck->errors);
    json_object_set_new(e, "more_errors",
                        json_integer(ck->n_errors - (json_int_t)json_array_size(ck->errors)));
    return out;
}

/* ---- storing ------------------------------------------------------------------ */

/* Finishes an ingest: checks the rows, records the dataset (or finds the
 * same bytes stored for the same purpose) and moves the file into place.
 * Returns the HTTP status with *reply (new reference): 201 or 200 and the
 * dataset object, or an error object; the temporary file is gone in every
 * case. */
static int ingest_finish(struct server *srv, struct ingest *g, const char *purpose,
                         const char *name, json_t **reply)
{
    char err[1024] = "";
    int status = 500;
    struct check ck = {.purpose = purpose, .errors = json_array()};
    unsigned char digest[32];
    unsigned int dlen = 0;
    char sha[65];
    *reply = NULL;
    if (g->fd >= 0 && close(g->fd)) g->io_error = true;
    g->fd = -1;
    if (g->io_error || !EVP_DigestFinal_ex(g->md, digest, &dlen)) {
        snprintf(err, sizeof err, "the upload could not be written to the data directory");
        goto fail;
    }
    for (int i = 0; i < 32; i++) snprintf(sha + 2 * i, 3, "%02x", digest[i]);
    if (check_file(&ck, g->tmp, err, sizeof err)) goto fail;
    if (ck.n_errors) {
        *reply = rows_error_json(&ck);
        status = 400;
        goto fail;
    }
    if (ck.rows == 0) {
        status = 400;
        *reply = http_error_json("invalid_request_error", "file", "empty_file",
                                 g->bytes ? "the file has no rows (only blank lines)"
                                          : "the file is empty");
        goto fail;
    }
    char id[64], rows[32], bytes[32], final[4200];
    random_id(id, sizeof id, "ds-");
    snprintf(rows, sizeof rows, "%lld", ck.rows);
    snprintf(bytes, sizeof bytes, "%lld", g->bytes);
    snprintf(final, sizeof final, "%s/datasets/%s.jsonl", srv->cfg.data_dir, sha);
    char defname[32];
    snprintf(defname, sizeof defname, "%.12s.jsonl", sha);
    json_t *fields = stats_json(&ck);
    char *fields_s = json_dumps(fields, JSON_COMPACT);
    json_decref(fields);
    const char *p[] = {id, name && *name ? name : defname, purpose, sha, rows, bytes,
                       fields_s ? fields_s : "{}"};
    pthread_mutex_lock(&files_mu);
    PGresult *r = db_exec(srv->pool,
                          "INSERT INTO datasets (id, name, purpose, sha256, rows, bytes, fields)"
                          " VALUES ($1, $2, $3, $4, $5::bigint, $6::bigint, $7::jsonb)"
                          " ON CONFLICT (sha256, purpose) DO NOTHING RETURNING " DATASET_JSON,
                          7, p, NULL, NULL, err, sizeof err);
    free(fields_s);
    bool created = r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    if (r && PQresultStatus(r) == PGRES_TUPLES_OK && !created) { /* the same bytes, stored */
        PQclear(r);
        const char *q[] = {sha, purpose};
        r = db_exec(srv->pool,
                    "SELECT " DATASET_JSON " FROM datasets WHERE sha256 = $1 AND purpose = $2", 2,
                    q, NULL, NULL, err, sizeof err);
    }
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        if (r) log_msg("dataset insert: %s", PQresultErrorMessage(r));
        status = r ? 500 : 503;
        if (r) snprintf(err, sizeof err, "the dataset could not be recorded");
        PQclear(r);
        pthread_mutex_unlock(&files_mu);
        goto fail;
    }
    *reply = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
    PQclear(r);
    /* the same bytes are already in place when not created; renaming over
     * them changes nothing and restores a file removed by hand */
    if (rename(g->tmp, final)) {
        log_msg("dataset %s: cannot store %s: %s", id, final, strerror(errno));
        snprintf(err, sizeof err, "the dataset file could not be stored in the data directory");
        if (created) {
            const char *dp[] = {id};
            char derr[256];
            PQclear(db_exec(srv->pool, "DELETE FROM datasets WHERE id = $1", 1, dp, NULL, NULL,
                            derr, sizeof derr));
        }
        pthread_mutex_unlock(&files_mu);
        json_decref(*reply);
        *reply = NULL;
        status = 500;
        goto fail;
    }
    pthread_mutex_unlock(&files_mu);
    g->tmp[0] = 0;
    ingest_discard(g);
    check_free(&ck);
    return created ? 201 : 200;
fail:
    ingest_discard(g);
    check_free(&ck);
    if (!*reply)
        *reply = http_error_json(http_error_type(status), NULL,
                                 status == 503 ? "database_unavailable" : NULL, err);
    return status;
}

/* ---- uploads ------------------------------------------------------------------- */

struct upload {
    struct ingest g;
    bool open;
    bool multipart;
    struct MHD_PostProcessor *pp;
    int file_parts;
    char bad[512];                          /* a bad form found while streaming */
    char purpose[DATASETS_FIELD_MAX + 1];
    char name[DATASETS_NAME_MAX + 1];
    char filename[DATASETS_NAME_MAX + 1];
    bool has_purpose, has_name;
};

static void upload_release(struct http_req *hr, bool aborted)
{
    struct upload *u = hr->route_state;
    if (!u) return;
    if (u->pp) MHD_destroy_post_processor(u->pp);
    if (u->open) ingest_discard(&u->g);
    free(u);
    hr->route_state = NULL;
}

static void append_field(struct upload *u, char *dst, bool *has, const char *key,
                         const char *data, size_t size)
{
    size_t have = strlen(dst);
    *has = true;
    if (have + size > DATASETS_FIELD_MAX) {
        if (!u->bad[0])
            snprintf(u->bad, sizeof u->bad, "field \"%s\" is longer than %d bytes", key,
                     DATASETS_FIELD_MAX);
        return;
    }
    memcpy(dst + have, data, size);
    dst[have + size] = 0;
}

static enum MHD_Result post_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *filename, const char *content_type,
                                 const char *transfer_encoding, const char *data, uint64_t off,
                                 size_t size)
{
    struct upload *u = cls;
    if (strcmp(key, "file") == 0) {
        if (off == 0 && ++u->file_parts == 2 && !u->bad[0])
            snprintf(u->bad, sizeof u->bad, "send one \"file\" part per upload");
        if (u->file_parts > 1) return MHD_YES;
        if (off == 0 && filename)
            snprintf(u->filename, sizeof u->filename, "%.*s", DATASETS_NAME_MAX, filename);
        ingest_write(&u->g, data, size);
    } else if (strcmp(key, "purpose") == 0) {
        append_field(u, u->purpose, &u->has_purpose, key, data, size);
    } else if (strcmp(key, "name") == 0) {
        append_field(u, u->name, &u->has_name, key, data, size);
    } else if (!u->bad[0]) {
        snprintf(u->bad, sizeof u->bad,
                 "unknown form field \"%.64s\" (expected \"file\", \"purpose\", \"name\")", key);
    }
    return MHD_YES;
}

/* "name" given by a client: 1..DATASETS_NAME_MAX bytes without control
 * characters. */
static bool name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > DATASETS_NAME_MAX) return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return false;
    return true;
}

static bool ctype_is(const char *ct, const char *want)
{
    size_t n = strlen(want);
    return strncasecmp(ct, want, n) == 0 && (ct[n] == 0 || ct[n] == ';' || ct[n] == ' ');
}

enum MHD_Result datasets_upload_begin(struct MHD_Connection *c, struct http_req *hr)
{
    enum MHD_Result ret;
    struct server *srv = hr->srv;
    if (!http_authorize(c, hr, KEYS_SCOPE_ADMIN, &ret)) return ret;
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    bool multipart = ct && ctype_is(ct, "multipart/form-data");
    bool raw = ct && (ctype_is(ct, "application/jsonl") || ctype_is(ct, "application/x-ndjson") ||
                      ctype_is(ct, "application/jsonlines"));
    if (!multipart && !raw)
        return http_reply_error(c, hr, 415, "invalid_request_error", NULL, "unsupported_media_type",
                                "send the JSONL file as the body with Content-Type "
                                "application/jsonl (or application/x-ndjson) and ?purpose=, or "
                                "as multipart/form-data with fields \"file\" and \"purpose\"; "
                                "got Content-Type \"%s\"", ct ? ct : "");
    struct upload *u = calloc(1, sizeof *u);
    if (!u) return MHD_NO;
    hr->route_state = u;
    hr->route_release = upload_release;
    u->multipart = multipart;
    if (raw) {
        const char *purpose = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "purpose");
        const char *name = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "name");
        if (!purpose)
            return http_reply_error(c, hr, 400, "invalid_request_error", "purpose",
                                    "missing_required_parameter",
                                    "'purpose' is required: pretrain, sft, rl or eval");
        snprintf(u->purpose, sizeof u->purpose, "%s", purpose);
        u->has_purpose = true;
        if (name) {
            snprintf(u->name, sizeof u->name, "%.*s", DATASETS_NAME_MAX, name);
            u->has_name = true;
            if (strlen(name) > DATASETS_NAME_MAX) u->name[0] = 0; /* reported below */
        }
        if (!purpose_valid(purpose))
            return http_reply_error(c, hr, 400, "invalid_request_error", "purpose", "invalid_value",
                                    "'purpose' must be pretrain, sft, rl or eval, not \"%s\"",
                                    purpose);
        if (u->has_name && !name_valid(u->name))
            return http_reply_error(c, hr, 400, "invalid_request_error", "name", "invalid_value",
                                    "'name' must be 1 to %d characters without control characters",
                                    DATASETS_NAME_MAX);
    } else {
        u->pp = MHD_create_post_processor(c, 65536, post_iter, u);
        if (!u->pp)
            return http_reply_error(c, hr, 400, "invalid_request_error", NULL, "invalid_multipart",
                                    "the multipart/form-data Content-Type lacks a boundary");
    }
    long long limit = srv->cfg.max_upload;
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    if (cl && strtoll(cl, NULL, 10) > limit + (multipart ? DATASETS_MULTIPART_SLACK : 0))
        return http_reply_error(c, hr, 413, "invalid_request_error", "file", "file_too_large",
                                "the upload is %s bytes; the dataset limit is %lld bytes", cl,
                                limit);
    char err[512];
    if (ingest_open(&u->g, srv->cfg.data_dir, limit, err, sizeof err)) {
        log_msg("dataset upload: %s", err);
        return http_reply_error(c, hr, 500, "server_error", NULL, NULL,
                                "the upload cannot be stored: the data directory is not writable");
    }
    u->open = true;
    return MHD_YES;
}

int datasets_upload_chunk(struct http_req *hr, const char *data, size_t n)
{
    struct upload *u = hr->route_state;
    if (!u || !u->open) return 0;
    if (!u->pp) {
        ingest_write(&u->g, data, n);
        return 0;
    }
    if (u->g.too_large) return 0; /* no need to parse the rest */
    if (MHD_post_process(u->pp, data, n) != MHD_YES && !u->bad[0])
        snprintf(u->bad, sizeof u->bad, "the multipart/form-data body is malformed");
    return 0;
}

/* The end of POST /v1/datasets: every check on the body, then storing. A
 * refused upload's file is gone before the reply is queued. */
static enum MHD_Result upload_finish(struct MHD_Connection *c, struct http_req *hr)
{
    struct upload *u = hr->route_state;
    if (!u || !u->open)
        return http_reply_error(c, hr, 500, "server_error", NULL, NULL, "upload state lost");
    if (u->pp) {
        MHD_destroy_post_processor(u->pp);
        u->pp = NULL;
    }
    int status = 400;
    const char *param = NULL, *code = "invalid_value";
    char msg[600] = "";
    if (u->g.too_large) {
        status = 413;
        param = "file";
        code = "file_too_large";
        snprintf(msg, sizeof msg, "the dataset is over the upload limit of %ld bytes",
                 hr->srv->cfg.max_upload);
    } else if (u->bad[0]) {
        code = "invalid_multipart";
        snprintf(msg, sizeof msg, "%s", u->bad);
    } else if (u->multipart && !u->file_parts) {
        param = "file";
        code = "missing_required_parameter";
        snprintf(msg, sizeof msg, "the form has no \"file\" part (the JSONL file)");
    } else if (u->multipart && !u->has_purpose) {
        param = "purpose";
        code = "missing_required_parameter";
        snprintf(msg, sizeof msg, "'purpose' is required: pretrain, sft, rl or eval");
    } else if (u->multipart && !purpose_valid(u->purpose)) {
        param = "purpose";
        snprintf(msg, sizeof msg, "'purpose' must be pretrain, sft, rl or eval, not \"%s\"",
                 u->purpose);
    } else if (u->multipart && u->has_name && !name_valid(u->name)) {
        param = "name";
        snprintf(msg, sizeof msg,
                 "'name' must be 1 to %d characters without control characters",
                 DATASETS_NAME_MAX);
    }
    u->open = false;
    if (msg[0]) {
        ingest_discard(&u->g);
        return http_reply_error(c, hr, status, "invalid_request_error", param, code, "%s", msg);
    }
    if (u->multipart && !u->has_name && u->filename[0] && name_valid(u->filename))
        snprintf(u->name, sizeof u->name, "%s", u->filename);
    json_t *reply;
    status = ingest_finish(hr->srv, &u->g, u->purpose, u->name, &reply);
    return http_reply_json(c, hr, status, reply);
}

int datasets_import_file(struct server *srv, const char *path, const char *purpose,
                         const char *name, char *id, char *err, size_t errlen)
{
    if (!purpose_valid(purpose)) {
        snprintf(err, errlen, "purpose \"%s\" is not pretrain, sft, rl or eval",
                 purpose ? purpose : "");
        return -1;
    }
    if (name && !name_valid(name)) {
        snprintf(err, errlen, "name: must be 1 to %d characters without control characters",
                 DATASETS_NAME_MAX);
        return -1;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct ingest g;
    if (ingest_open(&g, srv->cfg.data_dir, srv->cfg.max_upload, err, errlen)) {
        fclose(f);
        return -1;
    }
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0 && !g.too_large) ingest_write(&g, buf, n);
    bool rerr = ferror(f);
    fclose(f);
    if (rerr || g.too_large) {
        snprintf(err, errlen, "%s: %s", path,
                 rerr ? "read error" : "over the dataset upload limit");
        ingest_discard(&g);
        return -1;
    }
    json_t *reply;
    int status = ingest_finish(srv, &g, purpose, name, &reply);
    int rc = 0;
    if (status == 200 || status == 201) {
        snprintf(id, 64, "%s", json_string_value(json_object_get(reply, "id")));
    } else {
        snprintf(err, errlen, "%s: %s", path,
                 json_string_value(json_object_get(json_object_get(reply, "error"), "message")));
        rc = -1;
    }
    json_decref(reply);
    return rc;
}

/* ---- the catalog ------------------------------------------------------------------ */

int datasets_lookup(struct server *srv, const char *id, char *path, char *purpose, char *err,
                    size_t errlen)
{
    const char *p[] = {id};
    PGresult *r = db_exec(srv->pool, "SELECT sha256, purpose FROM datasets WHERE id = $1", 1, p,
                          NULL, NULL, err, errlen);
    if (!r) return -1;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "dataset lookup: %s", PQresultErrorMessage(r));
        PQclear(r);
        return -1;
    }
    int found = PQntuples(r) == 1;
    if (found) {
        snprintf(path, 4096, "datasets/%s.jsonl", PQgetvalue(r, 0, 0));
        if (purpose) snprintf(purpose, 16, "%s", PQgetvalue(r, 0, 1));
    }
    PQclear(r);
    return found;
}

static enum MHD_Result list_datasets(struct MHD_Connection *c, struct http_req *hr)
{
    const char *purpose = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "purpose");
    if (purpose && !purpose_valid(purpose))
        return http_reply_error(c, hr, 400, "invalid_request_error", "purpose", "invalid_value",
                                "'purpose' must be pretrain, sft, rl or eval");
    const char *p[] = {purpose, MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after"),
                       NULL};
    return catalog_reply_page(
        c, hr,
        "SELECT " DATASET_JSON " FROM datasets WHERE ($1::text IS NULL OR purpose = $1)"
        " AND ($2::text IS NULL OR seq < (SELECT seq FROM datasets WHERE id = $2))"
        " ORDER BY seq DESC LIMIT $3::int",
        3, p);
}

/* The dataset `id` as a new JSON reference; 1 found, 0 not, -1 replied. */
static int get_dataset(struct MHD_Connection *c, struct http_req *hr, const char *id,
                       json_t **out, enum MHD_Result *ret)
{
    char err[512];
    const char *p[] = {id};
    PGresult *r = db_exec(hr->srv->pool, "SELECT " DATASET_JSON " FROM datasets WHERE id = $1", 1,
                          p, NULL, NULL, err, sizeof err);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
        *ret = catalog_reply_db_error(c, hr, r, err);
        return -1;
    }
    int found = PQntuples(r) == 1;
    if (found) *out = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
    PQclear(r);
    if (found && !*out) {
        *ret = http_reply_error(c, hr, 500, "server_error", NULL, NULL, "bad dataset record");
        return -1;
    }
    if (!found)
        *ret = http_reply_error(c, hr, 404, "invalid_request_error", "id", "dataset_not_found",
                                "no dataset \"%s\"", id);
    return found;
}

/* Rows [offset, offset+limit) of the file (non-blank lines, as counted
 * at upload). */
static enum MHD_Result dataset_rows(struct MHD_Connection *c, struct http_req *hr,
                                    const char *id)
{
    enum MHD_Result ret;
    long offset = 0, limit = DATASETS_ROWS_DEFAULT;
    if (!catalog_arg_long(c, hr, "offset", 0, 1L << 60, &offset, &ret) ||
        !catalog_arg_long(c, hr, "limit", 1, DATASETS_ROWS_MAX, &limit, &ret))
        return ret;
    json_t *ds = NULL;
    if (get_dataset(c, hr, id, &ds, &ret) != 1) return ret;
    char path[4200];
    snprintf(path, sizeof path, "%s/datasets/%s.jsonl", hr->srv->cfg.data_dir,
             json_string_value(json_object_get(ds, "sha256")));
    long long total = json_integer_value(json_object_get(ds, "rows"));
    json_decref(ds);
    FILE *f = fopen(path, "rb");
    if (!f) {
        log_msg("dataset %s: %s: %s", id, path, strerror(errno));
        return http_reply_error(c, hr, 500, "server_error", NULL, NULL,
                                "the file of dataset \"%s\" is missing", id);
    }
    json_t *data = json_array();
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long row = 0;
    while ((long)json_array_size(data) < limit && (len = getline(&line, &cap, f)) >= 0) {
        if (strspn(line, " \t\r\n") == (size_t)len) continue;
        if (row++ < offset) continue;
        json_t *o = json_loadb(line, (size_t)len, 0, NULL);
        json_array_append_new(data, o ? o : json_null());
    }
    free(line);
    fclose(f);
    return http_reply_json(c, hr, 200,
                           json_pack("{s:s, s:s, s:o, s:I, s:I, s:b}", "object", "list",
                                     "dataset", id, "data", data, "offset", (json_int_t)offset,
                                     "total", (json_int_t)total, "has_more",
                                     offset + (long long)limit < total));
}

/* Deletes the row unless a queued or running run reads the dataset; the
 * file goes when no dataset (another purpose) shares its bytes. */
static enum MHD_Result delete_dataset(struct MHD_Connection *c, struct http_req *hr,
                                      const char *id)
{
    char err[512];
    const char *p[] = {id};
    pthread_mutex_lock(&files_mu);
    PGresult *r = db_exec(
        hr->srv->pool,
        "WITH busy AS (SELECT 1 FROM runs WHERE $1 = ANY(dataset_ids)"
        "   AND status IN ('queued', 'running') LIMIT 1),"
        " gone AS (DELETE FROM datasets WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM busy)"
        "   RETURNING sha256)"
        " SELECT (SELECT sha256 FROM gone),"
        "  EXISTS (SELECT 1 FROM busy),"
        "  EXISTS (SELECT 1 FROM datasets WHERE id = $1),"
        "  (SELECT count(*) FROM datasets d, gone WHERE d.sha256 = gone.sha256 AND d.id <> $1)",
        1, p, NULL, NULL, err, sizeof err);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        pthread_mutex_unlock(&files_mu);
        return catalog_reply_db_error(c, hr, r, err);
    }
    bool deleted = !PQgetisnull(r, 0, 0), busy = PQgetvalue(r, 0, 1)[0] == 't';
    bool exists = PQgetvalue(r, 0, 2)[0] == 't', shared = atoll(PQgetvalue(r, 0, 3)) > 0;
    if (deleted && !shared) {
        char path[4200];
        snprintf(path, sizeof path, "%s/datasets/%s.jsonl", hr->srv->cfg.data_dir,
                 PQgetvalue(r, 0, 0));
        if (unlink(path) && errno != ENOENT) log_msg("dataset %s: unlink %s: %s", id, path,
                                                     strerror(errno));
    }
    pthread_mutex_unlock(&files_mu);
    PQclear(r);
    if (deleted)
        return http_reply_json(c, hr, 200, json_pack("{s:s, s:s, s:b}", "id", id, "object",
                                                     "dataset", "deleted", 1));
    if (busy && exists)
        return http_reply_error(c, hr, 409, "invalid_request_error", "id", "dataset_in_use",
                                "dataset \"%s\" is used by a queued or running run; cancel "
                                "the run or wait for it to finish", id);
    return http_reply_error(c, hr, 404, "invalid_request_error", "id", "dataset_not_found",
                            "no dataset \"%s\"", id);
}

enum MHD_Result datasets_handle(struct MHD_Connection *c, struct http_req *hr, const char *method,
                                const char *rest)
{
    enum MHD_Result ret;
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool del = strcmp(method, "DELETE") == 0;
    if (!*rest && strcmp(method, "POST") == 0) return upload_finish(c, hr);
    if (!get && !del)
        return http_reply_error(c, hr, 405, "invalid_request_error", NULL, "method_not_allowed",
                                "%s is not allowed on /v1/datasets%s", method, rest);
    if (!http_authorize(c, hr, get ? KEYS_SCOPE_READ : KEYS_SCOPE_ADMIN, &ret)) return ret;
    if (!*rest) {
        if (del)
            return http_reply_error(c, hr, 405, "invalid_request_error", NULL,
                                    "method_not_allowed", "DELETE needs /v1/datasets/{id}");
        return list_datasets(c, hr);
    }
    const char *id = rest + 1;
    const char *slash = strchr(id, '/');
    if (slash) {
        if (strcmp(slash, "/rows") != 0 || !get)
            return http_reply_error(c, hr, 404, "invalid_request_error", NULL, "not_found",
                                    "no route for %s /v1/datasets%s", method, rest);
        return dataset_rows(c, hr, arena_printf(hr->a, "%.*s", (int)(slash - id), id));
    }
    if (del) return delete_dataset(c, hr, id);
    json_t *ds = NULL;
    if (get_dataset(c, hr, id, &ds, &ret) != 1) return ret;
    return http_reply_json(c, hr, 200, ds);
}
