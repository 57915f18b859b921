/* engine/events.h — writing NDJSON events (one JSON object per line) to
 * the engine's event stream, escaped by jansson. */
#ifndef AHA_EVENTS_H
#define AHA_EVENTS_H

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

/* Writes obj as one compact line and flushes; steals the reference. */
static inline void events_emit(FILE *f, json_t *obj)
{
    if (!obj) return;
    char *s = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    if (s) {
        fprintf(f, "%s\n", s);
        fflush(f);
        free(s);
    }
    json_decref(obj);
}

#endif
