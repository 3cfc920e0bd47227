/* hk_lua: one script generation — a lua_State with the hancock runtime (lua/, embedded) and
 * the operator's scripts loaded, its routes, its log hooks — and the running of route handlers,
 * each in its own coroutine. Knows requests only through hk_request_t; knows nothing of
 * sockets. The server owns when it runs; this module owns what runs. */
#ifndef HK_LUA_H
#define HK_LUA_H

#include <stdbool.h>
#include <stddef.h>

#include "hk_config.h"
#include "hk_log.h"
#include "hk_metrics.h"
#include "hk_request.h"

#include <uv.h>

#include "hk_carry.h"
#include "hk_client.h"
#include "hk_ratelimit.h"

typedef struct hk_lua_s hk_lua_t;
typedef struct hk_lua_task_s hk_lua_task_t;

/* Creates a state and runs every *.lua in scripts_dir in name order. Scripts' metrics live in
 * `metrics` (borrowed; it outlives the state) and their updates write cell `worker`. On failure
 * returns a negative code and sets *err to a malloc'ed "file:line: message" (the caller frees
 * it). */
int hk_lua_new(const char *scripts_dir, hk_metrics_t *metrics, unsigned worker, hk_lua_t **out,
               char **err);

/* The same with every setting: the limits apply from the first line of the first script. */
typedef struct hk_lua_opts_s {
  const char *scripts_dir;
  hk_metrics_t *metrics;      /* borrowed; outlives the state */
  unsigned worker;            /* the metric cell scripts' updates write */
  uint64_t instruction_limit; /* per entry into Lua (a request: its whole life); 0: none */
  size_t memory_limit;        /* bytes for the whole state; 0: none */
  uint64_t time_limit_ms;     /* wall clock per entry, enforced by hk_watchdog; 0: none */
  const char *script_env;     /* extra names hk.env may read, "A,B" (copied); NULL: none */
  const struct hk_native_set_s *natives; /* hk.native functions and C checks (hk_native); borrowed */
} hk_lua_opts_t;
/* Defaults: 10 M instructions, 256 MiB, no time limit, no extra names. */
void hk_lua_opts_init(hk_lua_opts_t *opts, const char *scripts_dir, hk_metrics_t *metrics, unsigned worker);
int hk_lua_new_opts(const hk_lua_opts_t *opts, hk_lua_t **out, char **err);
/* The options `serve` uses: limits, time limit and script environment from the config. */
void hk_lua_opts_from_config(hk_lua_opts_t *opts, const hk_config_t *cfg, hk_metrics_t *metrics,
                             unsigned worker);
void hk_lua_free(hk_lua_t *lua); /* NULL is a no-op */

/* Limits for scripts: VM instructions per request (and per run of a background task between
 * waits) and bytes for the whole state; 0 means unlimited. Defaults: 10 M and 256 MiB. */
void hk_lua_set_limits(hk_lua_t *lua, uint64_t instructions, size_t memory_bytes);

size_t hk_lua_route_count(const hk_lua_t *lua);

/* Moves the state's metric updates to another cell: a generation built on a loader thread
 * writes the loader's cell until its worker takes it over (one writer per cell). */
void hk_lua_set_cell(hk_lua_t *lua, unsigned cell);

/* Calls require(module)[function]() in the loaded state and returns its string result in *out
 * (malloc'ed), for generators such as `hancock rules`. On failure *err holds the message. */
int hk_lua_render(hk_lua_t *lua, const char *module, const char *function, char **out, char **err);
/* The same with one string argument (input, input_len bytes), for `hancock test-alerts`. */
int hk_lua_render_input(hk_lua_t *lua, const char *module, const char *function, const char *input,
                        size_t input_len, char **out, char **err);

/* Matches req->http against the routes, filling req->match and req->endpoint. Returns 0,
 * HK_ROUTER_NOT_FOUND or HK_ROUTER_METHOD_NOT_ALLOWED (allow then lists the methods). */
int hk_lua_route(hk_lua_t *lua, hk_request_t *req, char *allow, size_t allow_size);

/* Runs the matched handler in a new coroutine and fills req->response. A Lua error becomes a
 * 500 with the traceback logged, never sent. `done` is called exactly once when the response is
 * ready: before hk_lua_run returns, or later from the loop when the handler waited on I/O
 * (hk.sleep, hk.http.request) — unless hk_lua_cancel comes first. */
typedef void (*hk_lua_done_cb)(hk_request_t *req);
void hk_lua_run(hk_lua_t *lua, hk_request_t *req, hk_lua_done_cb done);

/* The client went away: stops the request's handler and whatever it waits on (timers, outbound
 * calls). `done` is not called. No-op when the request has no handler running. */
void hk_lua_cancel(hk_lua_t *lua, hk_request_t *req);

/* A reload replaced this generation: its background tasks are cancelled, its requests in flight
 * finish on it. on_idle(lua, data) runs once its last task has ended (at once when none is
 * left), from inside hk_lua: it must not free the generation there, only schedule it. */
typedef void (*hk_lua_idle_cb)(hk_lua_t *lua, void *data);
void hk_lua_retire(hk_lua_t *lua, hk_lua_idle_cb on_idle, void *data);
bool hk_lua_busy(const hk_lua_t *lua);
size_t hk_lua_memory(const hk_lua_t *lua); /* bytes held by the state; any thread may ask */

/* Drops the background tasks the scripts spawned while loading, before they start: with several
 * workers they run once per process, in the control thread's generation. */
void hk_lua_drop_background(hk_lua_t *lua);

/* Cancels every handler and background task (shutdown); their timers close on the loop, which
 * must run once more. Requests' done callbacks are not called. */
void hk_lua_cancel_all(hk_lua_t *lua);

/* Lets handlers wait on `loop` (timers for hk.sleep, `client` for hk.http.request), use the
 * worker's rate-limit buckets and read and leave values for the next generation (`carry`).
 * All borrowed; NULLs unbind. */
void hk_lua_bind_loop(hk_lua_t *lua, uv_loop_t *loop, hk_client_t *client,
                      hk_ratelimit_t *ratelimit, hk_carry_t *carry);

/* Sends the calling thread's log events (hk_log_event) through this generation's hk.on_log
 * hooks; NULL detaches. */
void hk_lua_attach_log(hk_lua_t *lua);

/* Gives the copy the process's sample history (core.history_*, the in-process alert
 * evaluator): the server binds it to the control copy only; NULL unbinds. Borrowed. */
struct hk_history_s;
void hk_lua_bind_history(hk_lua_t *lua, struct hk_history_s *history);

#endif
