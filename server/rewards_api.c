/* server/rewards_api.c — placeholder until the training API lands (issue 7). */
#include "server.h"

enum MHD_Result rewards_handle(struct MHD_Connection *c, struct http_req *hr, const char *method,
                             const char *rest)
{
    return http_reply_error(c, hr, 501, "server_error", NULL, "not_implemented",
                            "/v1/rewards is not implemented yet");
}

int rewards_lookup(struct server *srv, const char *id, json_t **spec, char *err, size_t errlen)
{
    return 0;
}

int rewards_create(struct server *srv, const json_t *spec, char *id, char *err, size_t errlen)
{
    snprintf(err, errlen, "reward specs are not implemented yet");
    return -1;
}
