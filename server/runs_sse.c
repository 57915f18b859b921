/* server/runs_sse.c — placeholder until run event streams land. */
#include "server.h"

enum MHD_Result runs_sse_handle(struct MHD_Connection *c, struct http_req *hr, const char *run_id)
{
    return http_reply_error(c, hr, 501, "server_error", NULL, "not_implemented",
                            "run event streams are not implemented yet");
}

int runs_sse_start(struct server *srv, char *err, size_t errlen) { return 0; }
void runs_sse_stop(void) {}
