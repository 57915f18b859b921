/* server/models.h — the models aha serves: every directory under
 * DATA_DIR/models/<id>/ (or <run name>/<stage>/) holding a config.json. Reads the directory tree
 * only; loading weights is the engine's job. */
#ifndef AHA_SERVER_MODELS_H
#define AHA_SERVER_MODELS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define MODELS_ID_MAX 128

struct models_info {
    char id[MODELS_ID_MAX + 1];
    char path[4096];     /* absolute directory (symlinks resolved) */
    long max_model_len;  /* config.json max_position_embeddings */
    long long created;   /* directory mtime, seconds since the epoch */
};

/* True when id is 1..128 of [A-Za-z0-9._-] not starting with '.'. */
bool models_id_valid(const char *id);

/* Looks up one model: an id, or "<run name>/<stage>" for a stage a run
 * trained; returns 0, or -1 when it does not exist. */
int models_get(const char *data_dir, const char *id, struct models_info *out);

/* OpenAI list shape {"object":"list","data":[...]}; returns a new reference. */
json_t *models_list_json(const char *data_dir);
/* One model as an OpenAI model object; returns a new reference. */
json_t *models_info_json(const struct models_info *m);

/* Imports the model directory `path` as `id` (a symbolic link under
 * DATA_DIR/models). Returns an HTTP status: 201, or 409 (id taken), 422
 * (not a model directory), 500, with err filled on failure. */
int models_import(const char *data_dir, const char *id, const char *path, char *err,
                  size_t errlen);

/* Removes model `id` (an imported link, or the directory itself). Returns
 * 0, or -1 with err filled. */
int models_delete(const char *data_dir, const char *id, char *err, size_t errlen);

#endif
