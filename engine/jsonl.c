/* engine/jsonl.c — see jsonl.h. */
#include "jsonl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
