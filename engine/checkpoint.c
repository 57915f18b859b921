/* engine/checkpoint.c — see checkpoint.h. */
#include "checkpoint.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errmsg.h"

json_t *ckpt_rng_json(const struct rng *r)
{
    json_t *a = json_array();
    for (int i = 0; i < 4; i++) {
        char h[24];
        snprintf(h, sizeof h, "%016" PRIx64, r->s[i]);
        json_array_append_new(a, json_string(h));
    }
    return a;
}

static int rng_from_json(const json_t *a, struct rng *r)
{
    if (!json_is_array(a) || json_array_size(a) != 4) return -1;
    for (size_t i = 0; i < 4; i++) {
        const char *h = json_string_value(json_array_get(a, i));
        char *end;
        if (!h || strlen(h) != 16) return -1;
        r->s[i] = strtoull(h, &end, 16);
        if (*end) return -1;
    }
    return 0;
}

int ckpt_write(const struct model *m, const char *dir, const struct train_ctl *ctl,
               const char *stage, const char *kind, int step, int steps,
               const struct rng *rng, json_t *data, char *err, size_t errlen)
{
    if (model_optimizer_save(m, dir, err, errlen)) { json_decref(data); return -1; }
    json_t *st = json_pack("{s:s,s:i,s:s,s:s,s:i,s:i,s:i,s:o,s:o}", "format", CKPT_FORMAT,
                           "version", CKPT_VERSION, "stage", stage, "kind", kind, "step", step,
                           "steps", steps, "adam_step", m->adam_t, "rng", ckpt_rng_json(rng),
                           "data", data ? data : json_object());
    if (ctl && ctl->pipeline) json_object_set_new(st, "pipeline", json_string(ctl->pipeline));
    json_object_set_new(st, "params", ctl && ctl->params ? json_deep_copy(ctl->params) : json_object());
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/" CKPT_STATE_FILE, dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int rc = json_dump_file(st, tmp, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    json_decref(st);
    if (rc || rename(tmp, path)) {
        errmsg_set(err, errlen, "%s: cannot write", path);
        remove(tmp);
        return -1;
    }
    return 0;
}

json_t *ckpt_read(const char *dir, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/" CKPT_STATE_FILE, dir);
    json_error_t je;
    json_t *st = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!st) {
        if (je.line > 0) errmsg_set(err, errlen, "%s:%d:%d: %s", path, je.line, je.column, je.text);
        else errmsg_set(err, errlen, "%s: %s", path, je.text);    /* cannot open: the text names it */
        return NULL;
    }
    const char *bad = NULL;
    struct rng r;
    json_t *fmt = json_object_get(st, "format"), *ver = json_object_get(st, "version");
    if (!json_is_string(fmt) || strcmp(json_string_value(fmt), CKPT_FORMAT) != 0)
        bad = "field \"format\" is not \"" CKPT_FORMAT "\" (not a checkpoint written by aha-engine train)";
    else if (!json_is_integer(ver) || json_integer_value(ver) != CKPT_VERSION)
        bad = "field \"version\": this aha-engine reads version 1";
    else if (!json_is_string(json_object_get(st, "stage")) || !json_is_string(json_object_get(st, "kind")))
        bad = "field \"stage\" or \"kind\" is missing";
    else if (!json_is_integer(json_object_get(st, "step")) || json_integer_value(json_object_get(st, "step")) < 0 ||
             !json_is_integer(json_object_get(st, "steps")) || !json_is_integer(json_object_get(st, "adam_step")))
        bad = "field \"step\", \"steps\" or \"adam_step\" is missing or not an integer";
    else if (rng_from_json(json_object_get(st, "rng"), &r))
        bad = "field \"rng\": expected 4 hex strings of 16 digits";
    else if (!json_is_object(json_object_get(st, "data")) || !json_is_object(json_object_get(st, "params")))
        bad = "field \"data\" or \"params\" is not an object";
    if (bad) {
        errmsg_set(err, errlen, "%s: %s", path, bad);
        json_decref(st);
        return NULL;
    }
    return st;
}

int ckpt_resume(const struct train_ctl *ctl, struct model *m, int steps, struct rng *rng,
                char *err, size_t errlen)
{
    const json_t *st = ctl->resume_state;
    int step = (int)json_integer_value(json_object_get(st, "step"));
    int was = (int)json_integer_value(json_object_get(st, "steps"));
    if (was != steps || step >= steps) {
        errmsg_set(err, errlen, "%s/" CKPT_STATE_FILE ": checkpoint at step %d of %d steps, but the stage "
                   "now runs %d steps", ctl->resume_dir, step, was, steps);
        return -1;
    }
    if (model_optimizer_load(m, ctl->resume_dir, (int)json_integer_value(json_object_get(st, "adam_step")),
                             err, errlen))
        return -1;
    rng_from_json(json_object_get(st, "rng"), rng);     /* checked by ckpt_read */
    return step;
}

int ckpt_data_int(const struct train_ctl *ctl, const char *key, long *out, char *err, size_t errlen)
{
    json_t *v = json_object_get(json_object_get(ctl->resume_state, "data"), key);
    if (!json_is_integer(v)) {
        errmsg_set(err, errlen, "%s/" CKPT_STATE_FILE ": data.%s: expected an integer", ctl->resume_dir, key);
        return -1;
    }
    *out = (long)json_integer_value(v);
    return 0;
}

int ckpt_data_rng(const struct train_ctl *ctl, const char *key, struct rng *r, char *err, size_t errlen)
{
    if (rng_from_json(json_object_get(json_object_get(ctl->resume_state, "data"), key), r)) {
        errmsg_set(err, errlen, "%s/" CKPT_STATE_FILE ": data.%s: expected 4 hex strings of 16 digits",
                   ctl->resume_dir, key);
        return -1;
    }
    return 0;
}
