/* server/web.c — the bundled dashboard: the files of the web directory,
 * read once at start and served from memory under /dashboard/, with / and
 * /dashboard redirecting there.
 *
 * Only plain files directly in the directory, named [A-Za-z0-9._-] (no
 * leading dot) with a known extension, are loaded, and a request is
 * answered by looking its name up among them: no path from a URL ever
 * reaches the file system, so "..", encoded slashes or links cannot escape
 * the directory. The pages hold no data: they call the /v1 API with the
 * user's key, as any other client does, so the files need no key. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server.h"

#define WEB_MAX_FILES 64
#define WEB_MAX_FILE_BYTES (4L << 20)

/* The pages run no inline script or style and talk to this origin only. */
#define WEB_CSP "default-src 'self'; img-src 'self' data:; style-src 'self'; " \
                "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; " \
                "base-uri 'none'; form-action 'none'"

struct web_file {
    char name[64];
    const char *type;
    char *data;
    size_t len;
    char etag[20]; /* "<16 hex digits>" */
};

static struct web_file web_files[WEB_MAX_FILES];
static int web_n;
static char web_dir[1024];

static const char *web_type(const char *name)
{
    static const char *const types[][2] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
        {".json", "application/json"},
        {".txt", "text/plain; charset=utf-8"},
    };
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (strcmp(dot, types[i][0]) == 0) return types[i][1];
    return NULL;
}

static bool web_name_ok(const char *name)
{
    if (!*name || *name == '.' || strlen(name) >= sizeof web_files[0].name) return false;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-'))
            return false;
    return true;
}

/* Reads dir/name whole into f; -1 with err filled on failure. */
static int web_read(struct web_file *f, const char *dir, const char *name, char *err,
                    size_t errlen)
{
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st)) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    if (st.st_size > WEB_MAX_FILE_BYTES) {
        snprintf(err, errlen, "%s: %lld bytes; the limit is %ld", path, (long long)st.st_size,
                 WEB_MAX_FILE_BYTES);
        close(fd);
        return -1;
    }
    f->data = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (f->data && got < (size_t)st.st_size) {
        ssize_t r = read(fd, f->data + got, (size_t)st.st_size - got);
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (!f->data || got != (size_t)st.st_size) {
        snprintf(err, errlen, "%s: %s", path, f->data ? "short read" : "out of memory");
        free(f->data);
        f->data = NULL;
        return -1;
    }
    f->len = got;
    uint64_t h = 14695981039346656037ull; /* FNV-1a */
    for (size_t i = 0; i < got; i++) h = (h ^ (unsigned char)f->data[i]) * 1099511628211ull;
    snprintf(f->etag, sizeof f->etag, "\"%016llx\"", (unsigned long long)h);
    memcpy(f->name, name, strlen(name) + 1); /* web_name_ok: it fits */
    f->type = web_type(name);
    return 0;
}

int web_load(const char *dir, char *err, size_t errlen)
{
    snprintf(web_dir, sizeof web_dir, "%s", dir);
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "dashboard directory %s: %s", dir, strerror(errno));
        return -1;
    }
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        if (!web_name_ok(e->d_name) || !web_type(e->d_name)) continue;
        struct stat st;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (lstat(path, &st) || !S_ISREG(st.st_mode)) continue;
        if (web_n == WEB_MAX_FILES) {
            snprintf(err, errlen, "dashboard directory %s: more than %d files", dir,
                     WEB_MAX_FILES);
            rc = -1;
        } else if (web_read(&web_files[web_n], dir, e->d_name, err, errlen)) {
            rc = -1;
        } else {
            web_n++;
        }
    }
    closedir(d);
    if (rc) web_free();
    return rc;
}

void web_free(void)
{
    for (int i = 0; i < web_n; i++) free(web_files[i].data);
    memset(web_files, 0, sizeof web_files);
    web_n = 0;
}

static enum MHD_Result web_redirect(struct MHD_Connection *c, struct http_req *hr,
                                    const char *to)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, "Location", to);
    hr->status = 302;
    enum MHD_Result ret = MHD_queue_response(c, 302, r);
    MHD_destroy_response(r);
    return ret;
}

/* True when an If-None-Match header lists etag (or is "*"). */
static bool web_not_modified(struct MHD_Connection *c, const char *etag)
{
    const char *inm = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "If-None-Match");
    if (!inm) return false;
    if (strcmp(inm, "*") == 0) return true;
    const size_t n = strlen(etag);
    for (const char *p = strstr(inm, etag); p; p = strstr(p + 1, etag)) {
        const char after = p[n];
        if (after == 0 || after == ',' || after == ' ') return true;
    }
    return false;
}

enum MHD_Result web_handle(struct MHD_Connection *c, struct http_req *hr, const char *method,
                           const char *url)
{
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return http_reply_error(c, hr, 405, "invalid_request_error", NULL, "method_not_allowed",
                                "%s is not allowed on %s", method, url);
    if (strcmp(url, "/") == 0 || strcmp(url, "/dashboard") == 0)
        return web_redirect(c, hr, "/dashboard/");
    const char *name = url + strlen("/dashboard/");
    if (!*name) name = "index.html";
    const struct web_file *f = NULL;
    for (int i = 0; i < web_n && !f; i++)
        if (strcmp(web_files[i].name, name) == 0) f = &web_files[i];
    if (!f) {
        if (web_n == 0)
            return http_reply_error(c, hr, 404, "invalid_request_error", NULL, "not_found",
                                    "the dashboard is not installed: no files were loaded "
                                    "from %s (see --web-dir)", web_dir);
        return http_reply_error(c, hr, 404, "invalid_request_error", NULL, "not_found",
                                "no route for %s %s", method, url);
    }
    const bool same = web_not_modified(c, f->etag);
    struct MHD_Response *r =
        same ? MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT)
             : MHD_create_response_from_buffer(f->len, f->data, MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    if (!same) MHD_add_response_header(r, "Content-Type", f->type);
    MHD_add_response_header(r, "ETag", f->etag);
    /* revalidate each time: a restarted server may serve new files */
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "Content-Security-Policy", WEB_CSP);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    hr->status = same ? 304 : 200;
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)hr->status, r);
    MHD_destroy_response(r);
    return ret;
}
