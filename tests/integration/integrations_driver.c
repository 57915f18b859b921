/* tests/integration/integrations_driver.c — drives server/integrations.c
 * for test_integrations.py: one JSON command per stdin line, one JSON reply
 * per stdout line. Not part of the server.
 *
 *   {"cmd":"validate","cfg":{...}}                   -> {"ok":bool,"error":"..."}
 *   {"cmd":"open","cfg":{...},"state":{...}|null,"run_id":"r1","run_name":"n","params":{...}}
 *                                                    -> {"ok":bool}
 *   {"cmd":"metrics","stage":"s","step":1,"values":{...},"ts":1700000000.5}
 *   {"cmd":"metrics_bulk","stage":"s","n":2500,"ts":1700000000}
 *        (n points: key "m<i%5>" at step i/5, value i, timestamp ts + i ms)
 *   {"cmd":"status","status":"running","message":null}
 *   {"cmd":"state"}                                  -> {"state":{...}|null}
 *   {"cmd":"wait_state","timeout":5}                 -> {"state":{...}|null}
 *   {"cmd":"redact","cfg":{...}}                     -> {"cfg":{...}}
 *   {"cmd":"close","timeout":5}                      -> {"elapsed":s,"stats":{...}}
 * Calls that must not block answer {"elapsed":seconds} as well. */
#include "server/training.h"
#include "server/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void reply(json_t *r)
{
    char *s = json_dumps(r, JSON_COMPACT);
    printf("%s\n", s ? s : "{}");
    fflush(stdout);
    free(s);
    json_decref(r);
}

int main(void)
{
    struct integrations *in = NULL;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        json_error_t je;
        json_t *c = json_loadb(line, (size_t)n, 0, &je);
        const char *cmd = json_string_value(json_object_get(c, "cmd"));
        if (!cmd) {
            reply(json_pack("{s:s}", "error", "bad command"));
            json_decref(c);
            continue;
        }
        double t0 = clock_mono();
        if (strcmp(cmd, "validate") == 0) {
            char err[512] = "";
            int rc = integrations_validate(json_object_get(c, "cfg"), err, sizeof err);
            reply(json_pack("{s:b,s:s}", "ok", rc == 0, "error", err));
        } else if (strcmp(cmd, "open") == 0) {
            if (in)
                integrations_close(in, 0);
            json_t *st = json_object_get(c, "state");
            in = integrations_open(json_object_get(c, "cfg"), json_is_null(st) ? NULL : st,
                                   json_string_value(json_object_get(c, "run_id")),
                                   json_string_value(json_object_get(c, "run_name")),
                                   json_object_get(c, "params"));
            reply(json_pack("{s:b,s:f}", "ok", in != NULL, "elapsed", clock_mono() - t0));
        } else if (strcmp(cmd, "metrics") == 0) {
            integrations_metrics(in, json_string_value(json_object_get(c, "stage")),
                                 (long)json_integer_value(json_object_get(c, "step")),
                                 json_object_get(c, "values"),
                                 json_number_value(json_object_get(c, "ts")));
            reply(json_pack("{s:f}", "elapsed", clock_mono() - t0));
        } else if (strcmp(cmd, "metrics_bulk") == 0) {
            long count = (long)json_integer_value(json_object_get(c, "n"));
            double ts = json_number_value(json_object_get(c, "ts"));
            const char *stage = json_string_value(json_object_get(c, "stage"));
            for (long i = 0; i < count; i++) {
                char key[16];
                snprintf(key, sizeof key, "m%ld", i % 5);
                json_t *v = json_pack("{s:f}", key, (double)i);
                integrations_metrics(in, stage, i / 5, v, ts + (double)i / 1000.0);
                json_decref(v);
            }
            reply(json_pack("{s:f}", "elapsed", clock_mono() - t0));
        } else if (strcmp(cmd, "status") == 0) {
            integrations_status(in, json_string_value(json_object_get(c, "status")),
                                json_string_value(json_object_get(c, "message")));
            reply(json_pack("{s:f}", "elapsed", clock_mono() - t0));
        } else if (strcmp(cmd, "state") == 0 || strcmp(cmd, "wait_state") == 0) {
            double until = t0 + json_number_value(json_object_get(c, "timeout"));
            json_t *st = integrations_state(in);
            while (!st && in && clock_mono() < until) {
                usleep(10000);
                st = integrations_state(in);
            }
            reply(json_pack("{s:o?}", "state", st));
        } else if (strcmp(cmd, "redact") == 0) {
            reply(json_pack("{s:o?}", "cfg", integrations_redact(json_object_get(c, "cfg"))));
        } else if (strcmp(cmd, "close") == 0) {
            double timeout = json_number_value(json_object_get(c, "timeout"));
            json_t *stats = integrations_close_stats(in, timeout);
            in = NULL;
            reply(json_pack("{s:f,s:o?}", "elapsed", clock_mono() - t0, "stats", stats));
        } else {
            reply(json_pack("{s:s}", "error", "unknown command"));
        }
        json_decref(c);
    }
    free(line);
    if (in)
        integrations_close(in, 0);
    return 0;
}
