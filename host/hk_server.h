/* hk_server: the running host — N worker threads (hk_worker: a loop, a listening socket,
 * connections, a script generation each) and the control thread (the caller's) that owns
 * signals, the scripts watch, reloads, background tasks and process metrics. Parsing is
 * hk_http's, connections hk_conn's, what a request does hk_lua's. */
#ifndef HK_SERVER_H
#define HK_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "hk_config.h"
#include "hk_host_metrics.h"
#include "hk_lua.h"

typedef struct hk_server_s hk_server_t;

/* How the server runs. The hancock binary uses the defaults (NULL): its own threads, and the
 * signals SIGTERM/SIGINT (drain) and SIGHUP (reload). An embedding program sets its own. */
typedef struct hk_server_opts_s {
  bool handle_signals;
  /* Non-NULL: one worker, and both it and the control part run on this caller's loop, on the
   * caller's thread (hk_server_attach); no thread of the server's own. */
  uv_loop_t *attach_loop;
  /* Attached: called on the caller's loop once a stop has drained and every handle of the
   * server is closed. */
  void (*on_stopped)(void *data);
  void *stopped_data;
  /* C functions and health checks every generation gets (hk_native; borrowed, outlives the
   * server). NULL: none. */
  const struct hk_native_set_s *natives;
} hk_server_opts_t;

/* Sets up config->workers workers (one when attached), each with its own generation of the
 * scripts and its own listening socket on the configured address (SO_REUSEPORT). `lua`, a
 * loaded generation, becomes the control thread's (taken, also on failure): it runs the
 * scripts' background tasks once per process and the hooks of the control thread's events.
 * The registry behind `metrics` needs hk_server_cells(n) cells for the n workers its collector
 * cell was laid out for (metrics->collector_cell). On failure returns a negative code with one
 * line in err ("cannot listen on 0.0.0.0:5000: address already in use"). Borrows config and
 * metrics; opts is copied (NULL: the binary's defaults). */
int hk_server_new(const hk_config_t *config, hk_lua_t *lua, hk_host_metrics_t *metrics,
                  const hk_server_opts_t *opts, hk_server_t **out, char *err, size_t errsize);

/* The metric cells a server with `workers` workers writes: one per worker (0..workers-1), the
 * collector's (workers), the control generation's, and the reload loader's. */
static inline unsigned hk_server_cells(unsigned workers) { return workers + 3; }
unsigned hk_server_control_cell(unsigned workers);
unsigned hk_server_loader_cell(unsigned workers);

/* Starts the workers and runs the control loop on the calling thread until SIGTERM or SIGINT
 * (or hk_server_stop), then drains every worker. Returns the process exit status. */
int hk_server_run(hk_server_t *server);

/* The same without blocking: the control loop gets a thread of its own. -EALREADY when
 * started (or attached). */
int hk_server_start(hk_server_t *server);

/* Attached (opts.attach_loop): starts serving from the caller's loop; returns at once. */
int hk_server_attach(hk_server_t *server);

/* Graceful stop, from any thread: stop accepting, finish what is in flight, close. With the
 * control loop on a thread of its own (hk_server_start) this waits for all of it; attached it
 * returns at once and opts.on_stopped says when it is over; hk_server_run returns. -EALREADY
 * once finished. */
int hk_server_stop(hk_server_t *server);

/* Reloads the scripts as SIGHUP would, from any thread; the outcome is logged and counted.
 * -EAGAIN when not running. */
int hk_server_reload(hk_server_t *server);

/* True once the server has stopped (every worker drained and the control loop ended). */
bool hk_server_finished(const hk_server_t *server);

/* The bound port (useful when the configured port was 0). */
int hk_server_port(const hk_server_t *server);

void hk_server_free(hk_server_t *server); /* NULL is a no-op */

#endif
