/* server/integrations.c — placeholder until MLflow and webhooks land. */
#include "server.h"

int integrations_validate(const json_t *cfg, char *err, size_t errlen)
{
    if (cfg && !json_is_null(cfg)) {
        snprintf(err, errlen, "integrations: not implemented yet");
        return -1;
    }
    return 0;
}

struct integrations *integrations_open(const json_t *cfg, const json_t *state, const char *run_id,
                                       const char *run_name, const json_t *params)
{
    return NULL;
}

json_t *integrations_state(struct integrations *in) { return NULL; }
void integrations_metrics(struct integrations *in, const char *stage, long step,
                          const json_t *values, double unix_ts) {}
void integrations_status(struct integrations *in, const char *status, const char *message) {}
void integrations_close(struct integrations *in, double timeout_s) {}
