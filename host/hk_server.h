/* hk_server: the running host — N worker threads (hk_worker: a loop, a listening socket,
 * connections, a script generation each) and the control thread (the caller's) that owns
 * signals, the scripts watch, reloads, background tasks and process metrics. Parsing is
 * hk_http's, connections hk_conn's, what a request does hk_lua's. */
#ifndef HK_SERVER_H
#define HK_SERVER_H

#include <stddef.h>

#include "hk_config.h"
#include "hk_host_metrics.h"
#include "hk_lua.h"

typedef struct hk_server_s hk_server_t;

/* Sets up config->workers workers, each with its own generation of the scripts and its own
 * listening socket on the configured address (SO_REUSEPORT). `lua`, a loaded generation, becomes
 * the control thread's (taken, also on failure): it runs the scripts' background tasks once per
 * process and the hooks of the control thread's events. The registry behind `metrics` needs
 * hk_server_cells(workers) cells. On failure returns a negative code with one line in err
 * ("cannot listen on 0.0.0.0:5000: address already in use"). Borrows config and metrics. */
int hk_server_new(const hk_config_t *config, hk_lua_t *lua, hk_host_metrics_t *metrics,
                  hk_server_t **out, char *err, size_t errsize);

/* The metric cells a server with `workers` workers writes: one per worker (0..workers-1), the
 * collector's (workers), the control generation's, and the reload loader's. */
static inline unsigned hk_server_cells(unsigned workers) { return workers + 3; }
unsigned hk_server_control_cell(unsigned workers);
unsigned hk_server_loader_cell(unsigned workers);

/* Starts the workers and runs the control loop until SIGTERM or SIGINT, then drains every
 * worker. Returns the process exit status. */
int hk_server_run(hk_server_t *server);

/* The bound port (useful when the configured port was 0). */
int hk_server_port(const hk_server_t *server);

void hk_server_free(hk_server_t *server); /* NULL is a no-op */

#endif
