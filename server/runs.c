/* server/runs.c — placeholder until the training API lands (issue 7). */
#include "server.h"

enum MHD_Result runs_handle(struct MHD_Connection *c, struct http_req *hr, const char *method,
                             const char *rest)
{
    return http_reply_error(c, hr, 501, "server_error", NULL, "not_implemented",
                            "/v1/runs is not implemented yet");
}

int runs_start(struct server *srv, char *err, size_t errlen)
{
    return 0;
}

void runs_stop(struct server *srv)
{
}
