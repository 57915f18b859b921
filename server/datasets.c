/* server/datasets.c — placeholder until the training API lands (issue 7). */
#include "server.h"

enum MHD_Result datasets_handle(struct MHD_Connection *c, struct http_req *hr, const char *method,
                             const char *rest)
{
    return http_reply_error(c, hr, 501, "server_error", NULL, "not_implemented",
                            "/v1/datasets is not implemented yet");
}

enum MHD_Result datasets_upload_begin(struct MHD_Connection *c, struct http_req *hr)
{
    return MHD_YES;
}

int datasets_upload_chunk(struct http_req *hr, const char *data, size_t n)
{
    return 0;
}
