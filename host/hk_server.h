/* hk_server: the HTTP/1.1 server on libuv — listening, connections, timeouts, writes,
 * pipelining order, connection limits and graceful shutdown. Parsing is hk_http's; what a
 * request does is hk_lua's. All per-worker state is one hk_worker_t so more workers are a loop. */
#ifndef HK_SERVER_H
#define HK_SERVER_H

#include <stddef.h>

#include "hk_config.h"
#include "hk_host_metrics.h"
#include "hk_lua.h"

typedef struct hk_server_s hk_server_t;

/* Binds the listening socket. On failure returns a negative code with one line in err
 * ("cannot listen on 0.0.0.0:5000: address already in use"). Borrows config, lua and metrics
 * (which it records every request in and serves at GET /metrics). */
int hk_server_new(const hk_config_t *config, hk_lua_t *lua, hk_host_metrics_t *metrics,
                  hk_server_t **out, char *err, size_t errsize);

/* Serves until SIGTERM or SIGINT, then drains. Returns the process exit status. */
int hk_server_run(hk_server_t *server);

/* The bound port (useful when the configured port was 0). */
int hk_server_port(const hk_server_t *server);

/* The generation serving now (a reload may have replaced the one given to hk_server_new). */
hk_lua_t *hk_server_lua(const hk_server_t *server);

void hk_server_free(hk_server_t *server); /* NULL is a no-op */

#endif
