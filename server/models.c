/* server/models.c — model directories under DATA_DIR/models: <id>/ for
 * imported and pretrained models, <run name>/<stage>/ (links runs make as
 * stages finish) for trained ones. */
#include "models.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MODELS_LIST_MAX 1000
#define MODELS_DEFAULT_LEN 2048

bool models_id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > MODELS_ID_MAX || id[0] == '.') return false;
    for (size_t i = 0; i < n; i++) {
        char ch = id[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

static long read_max_len(const char *dir)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_t *cfg = json_load_file(path, 0, NULL);
    long n = MODELS_DEFAULT_LEN;
    json_t *v = cfg ? json_object_get(cfg, "max_position_embeddings") : NULL;
    if (json_is_integer(v) && json_integer_value(v) > 0) n = (long)json_integer_value(v);
    json_decref(cfg);
    return n;
}

static bool is_model_dir(const char *dir)
{
    char path[PATH_MAX + 32];
    struct stat st;
    snprintf(path, sizeof path, "%s/config.json", dir);
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* "<a>" or "<a>/<b>", each part a valid id. */
static bool id_or_pair_valid(const char *id)
{
    const char *slash = strchr(id, '/');
    if (!slash) return models_id_valid(id);
    char first[MODELS_ID_MAX + 1];
    size_t n = (size_t)(slash - id);
    if (n == 0 || n > MODELS_ID_MAX || strlen(id) > MODELS_ID_MAX) return false;
    memcpy(first, id, n);
    first[n] = 0;
    return models_id_valid(first) && models_id_valid(slash + 1);
}

int models_get(const char *data_dir, const char *id, struct models_info *out)
{
    if (!id_or_pair_valid(id)) return -1;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/models/%s", data_dir, id);
    char real[PATH_MAX];
    struct stat st;
    if (!realpath(dir, real) || stat(real, &st) || !S_ISDIR(st.st_mode) || !is_model_dir(real))
        return -1;
    snprintf(out->id, sizeof out->id, "%s", id);
    snprintf(out->path, sizeof out->path, "%s", real);
    out->max_model_len = read_max_len(real);
    out->created = (long long)st.st_mtime;
    return 0;
}

json_t *models_info_json(const struct models_info *m)
{
    return json_pack("{s:s, s:s, s:I, s:s, s:s, s:I}", "id", m->id, "object", "model",
                     "created", (json_int_t)m->created, "owned_by", "aha", "root", m->id,
                     "max_model_len", (json_int_t)m->max_model_len);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

json_t *models_list_json(const char *data_dir)
{
    json_t *data = json_array();
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/models", data_dir);
    DIR *d = opendir(dir);
    if (d) {
        char *names[MODELS_LIST_MAX];
        size_t n = 0;
        struct dirent *e;
        while ((e = readdir(d)) && n < MODELS_LIST_MAX) {
            if (!models_id_valid(e->d_name)) continue;
            char sub[PATH_MAX];
            snprintf(sub, sizeof sub, "%.3500s/%.255s", dir, e->d_name);
            DIR *sd = is_model_dir(sub) ? NULL : opendir(sub);
            if (!sd) {
                names[n++] = strdup(e->d_name);
                continue;
            }
            /* a run's directory: its stage models */
            struct dirent *se;
            while ((se = readdir(sd)) && n < MODELS_LIST_MAX) {
                char id[600];
                snprintf(id, sizeof id, "%s/%s", e->d_name, se->d_name);
                if (models_id_valid(se->d_name) && id_or_pair_valid(id)) names[n++] = strdup(id);
            }
            closedir(sd);
        }
        closedir(d);
        qsort(names, n, sizeof *names, cmp_str);
        for (size_t i = 0; i < n; i++) {
            struct models_info m;
            if (names[i] && models_get(data_dir, names[i], &m) == 0)
                json_array_append_new(data, models_info_json(&m));
            free(names[i]);
        }
    }
    return json_pack("{s:s, s:o}", "object", "list", "data", data);
}

int models_import(const char *data_dir, const char *id, const char *path, char *err,
                  size_t errlen)
{
    char real[PATH_MAX];
    struct stat st;
    if (!realpath(path, real) || stat(real, &st) || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "model path \"%s\" is not a directory", path);
        return 422;
    }
    if (!is_model_dir(real)) {
        snprintf(err, errlen, "model path \"%s\" has no config.json", path);
        return 422;
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/models", data_dir);
    if (mkdir(data_dir, 0755) && errno != EEXIST) goto fail;
    if (mkdir(dir, 0755) && errno != EEXIST) goto fail;
    char link[PATH_MAX + MODELS_ID_MAX + 2];
    snprintf(link, sizeof link, "%s/%s", dir, id);
    if (symlink(real, link)) {
        if (errno == EEXIST) {
            snprintf(err, errlen, "model \"%s\" already exists", id);
            return 409;
        }
        goto fail;
    }
    return 201;
fail:
    snprintf(err, errlen, "could not import model \"%s\": %s", id, strerror(errno));
    return 500;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

int models_delete(const char *data_dir, const char *id, char *err, size_t errlen)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/models/%s", data_dir, id);
    struct stat st;
    if (lstat(path, &st)) {
        snprintf(err, errlen, "model \"%s\": %s", id, strerror(errno));
        return -1;
    }
    int rc = S_ISLNK(st.st_mode) ? unlink(path)
                                 : nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (rc) snprintf(err, errlen, "could not delete model \"%s\": %s", id, strerror(errno));
    return rc ? -1 : 0;
}
