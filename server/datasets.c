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

int datasets_import_file(struct server *srv, const char *path, const char *purpose,
                         const char *name, char *id, char *err, size_t errlen)
{
    snprintf(err, errlen, "datasets are not implemented yet");
    return -1;
}

int datasets_lookup(struct server *srv, const char *id, char *path, char *purpose, char *err,
                    size_t errlen)
{
    return 0;
}
