/* engine/events.h — writing NDJSON events (one JSON object per line) to
 * the engine's event stream, escaped by jansson. */
#ifndef AHA_EVENTS_H
#define AHA_EVENTS_H

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>

/* Writes obj as one compact line (reals with 15 significant digits, enough
 * for "time" to the microsecond) and flushes; steals the reference. Adds
 * "time" (unix seconds, float) unless obj has one. */
static inline void events_emit(FILE *f, json_t *obj)
{
    if (!obj) return;
    if (!json_object_get(obj, "time")) {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        json_object_set_new(obj, "time", json_real((double)tv.tv_sec + tv.tv_usec / 1e6));
    }
    char *s = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
    if (s) {
        fprintf(f, "%s\n", s);
        fflush(f);
        free(s);
    }
    json_decref(obj);
}

#endif
