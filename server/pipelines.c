/* server/pipelines.c — placeholder until the training API lands (issue 7). */
#include "server.h"

enum MHD_Result pipelines_handle(struct MHD_Connection *c, struct http_req *hr, const char *method,
                             const char *rest)
{
    return http_reply_error(c, hr, 501, "server_error", NULL, "not_implemented",
                            "/v1/pipelines is not implemented yet");
}
