/* server/runs.c — placeholder until the training API lands (issue 7). */
#include <string.h>

#include "server.h"

enum MHD_Result runs_handle(struct MHD_Connection *c, struct http_req *hr, const char *method,
                             const char *rest)
{
    /* TEMPORARY (h-sse): route the event stream until runs.c lands */
    size_t n = strlen(rest);
    if (strcmp(method, "GET") == 0 && n > 8 && rest[0] == '/' &&
        strcmp(rest + n - 7, "/events") == 0 && !memchr(rest + 1, '/', n - 8)) {
        char id[256];
        snprintf(id, sizeof id, "%.*s", (int)(n - 8), rest + 1);
        return runs_sse_handle(c, hr, id);
    }
    return http_reply_error(c, hr, 501, "server_error", NULL, "not_implemented",
                            "/v1/runs is not implemented yet");
}

int runs_start(struct server *srv, char *err, size_t errlen)
{
    return runs_sse_start(srv, err, errlen);
}

void runs_stop(struct server *srv)
{
    runs_sse_stop();
}
