/* engine/jsonl.c — see jsonl.h. */
#include "jsonl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "errmsg.h"

long jsonl_read(const char *path, jsonl_row_fn fn, void *ctx, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) { errmsg_set(err, errlen, "%s: cannot open", path); return -1; }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0, rows = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (strspn(line, " \t\r\n") == (size_t)len) continue;
        json_error_t je;
        json_t *row = json_loadb(line, (size_t)len, 0, &je);
        char rerr[1024] = "";
        int rc = row ? fn(ctx, row, rerr, sizeof rerr) : -1;
        json_decref(row);
        if (rc) {
            errmsg_set(err, errlen, "%s:%ld: %s", path, lineno, row ? rerr : je.text);
            rows = -1;
            break;
        }
        rows++;
    }
    free(line);
    fclose(f);
    return rows;
}

json_t *jsonl_text(const char *s, size_t n)
{
    char *buf = malloc(n * 3 + 1);
    if (!buf) return json_string("");
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
        if (k <= 0 || cp == 0) {
            memcpy(buf + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        } else {
            memcpy(buf + o, s + i, (size_t)k);
            o += (size_t)k;
            i += (size_t)k;
        }
    }
    json_t *j = json_stringn(buf, o);
    free(buf);
    return j ? j : json_string("");
}
