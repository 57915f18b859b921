/* server/http.h — starting and stopping the HTTP daemon (http.c). */
#ifndef AHA_SERVER_HTTP_H
#define AHA_SERVER_HTTP_H

#include <stddef.h>

struct server;

/* Listens on cfg.host:cfg.port (port 0 picks a free one and writes it back
 * to cfg.port). Returns 0, or -1 with err filled. */
int http_start(struct server *srv, char *err, size_t errlen);
/* Stops accepting new connections; requests in progress continue. */
void http_quiesce(struct server *srv);
void http_stop(struct server *srv);

#endif
