/* hancock.h — the embedding API of Hancock, the Lua-scripted observability host.
 *
 * A C program creates a host (HTTP on its own port, Prometheus metrics, health checks, JSON
 * logs and the Lua routes of a scripts directory), adds its own C metrics, C health checks and
 * C functions for the scripts (hk.native.<name>), then either lets the host run on threads of
 * its own (hk_host_start) or attaches it to its own libuv loop (hk_host_attach: one worker,
 * no threads of the host's own). docs/embedding.md walks through it.
 *
 * Conventions: every function that can fail returns 0 or a negative error code (a negated
 * errno value: -EINVAL, -ENOMEM, -EEXIST, …) that hk_strerror names; results come back
 * through out-parameters. Every type is opaque. Strings passed in are copied unless a
 * function says otherwise. One host per process at a time: the log level, the log sink and
 * the Lua watchdog are process-wide.
 *
 * Threads: hk_host_* calls are for the thread that created the host, except hk_host_reload
 * and hk_host_stop, which any thread may call. Metric updates (hk_counter_add, hk_gauge_set,
 * hk_histogram_observe, …) are safe from any thread at any time between hk_*_new and
 * hk_host_free. Native functions run on whichever thread runs the Lua that calls them (a
 * worker thread, or the caller's loop thread when attached); health checks on the host's
 * control thread (the caller's loop thread when attached). */
#ifndef HANCOCK_H
#define HANCOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define HK_API __attribute__((visibility("default")))
#define HK_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define HK_API
#define HK_PRINTF(fmt, args)
#endif

#define HANCOCK_VERSION_MAJOR 0
#define HANCOCK_VERSION_MINOR 1
#define HANCOCK_VERSION_PATCH 0

/* libuv's loop type; include <uv.h> to have one. */
struct uv_loop_s;

/* ---- errors and version ----------------------------------------------------------------- */

/* A sentence for an error code of this API ("invalid argument", "already registered", …);
 * never NULL, also for codes it does not know. */
HK_API const char *hk_strerror(int code);

/* "0.1.0": the library's version, which may differ from the header's HANCOCK_VERSION_*. */
HK_API const char *hk_version(void);

/* ---- the host --------------------------------------------------------------------------- */

typedef struct hk_host_s hk_host_t;

/* Receives each log line: one JSON object, NUL-terminated, without a newline; valid only
 * during the call. Calls are serialised (never two at once). With hk_host_start it is called
 * from the host's log thread; attached, from the thread that logs (the caller's loop thread,
 * or a libuv threadpool thread while scripts load). It must not call back into the host. */
typedef void (*hk_log_sink_fn)(const char *line, size_t len, void *data);

typedef struct hk_host_config_s {
  /* Numeric address and port: "127.0.0.1:5000", "[::1]:8080", "0.0.0.0:0" (port 0: any free
   * port, see hk_host_port). Default "0.0.0.0:5000". */
  const char *listen;
  /* The directory of *.lua scripts (required). */
  const char *scripts_dir;
  /* Worker threads for hk_host_start; 0 = one per CPU. hk_host_attach always runs one. */
  unsigned workers;
  /* 0 keeps the default of each (docs/configuration.md lists them). */
  uint64_t max_body_bytes;
  uint64_t max_connections;
  uint64_t drain_timeout_ms;
  /* Wall clock a script may run without yielding; hk_host_config_init sets 2000. Keeping it needs
   * the process-wide watchdog thread; 0 turns the limit (and that thread) off. */
  uint64_t lua_time_limit_ms;
  /* Bearer token for POST /admin/reload; NULL or "": no admin route. */
  const char *admin_token;
  /* "DEBUG", "INFO" (default), "WARNING" or "ERROR". */
  const char *log_level;
  /* Where log lines go; NULL: standard output. */
  hk_log_sink_fn log_sink;
  void *log_sink_data;
} hk_host_config_t;

/* Fills cfg with the defaults. The environment is not read: an embedding program decides. */
HK_API void hk_host_config_init(hk_host_config_t *cfg);

/* Creates a host from cfg (copied): checks the settings and the scripts directory and sets up
 * the metric registry; nothing is loaded or listening yet, so metrics, health checks and native
 * functions can be registered first. -EINVAL with a reason in the log for a bad setting,
 * -ENOENT for a missing scripts directory, -EBUSY while another host exists. */
HK_API int hk_host_new(const hk_host_config_t *cfg, hk_host_t **out);

/* Loads the scripts, listens and serves on threads of the host's own (cfg.workers workers and
 * a control thread); returns once it listens. A script error or a busy port fails here (the
 * reason is logged) and the host can be freed. -EALREADY when it was already started or
 * attached, -EINVAL for a NULL host. */
HK_API int hk_host_start(hk_host_t *host);

/* The same, served from the caller's libuv loop on the caller's thread: one worker, no thread
 * of the host's own (libuv's threadpool still loads reloads and renders /metrics). Returns
 * once it listens; the caller runs its loop (uv_run) as it always does. The loop must outlive
 * the host. Signals stay the caller's: nothing is installed. */
HK_API int hk_host_attach(hk_host_t *host, struct uv_loop_s *loop);

/* The port the host listens on (the one the OS chose for port 0); negative before start. */
HK_API int hk_host_port(const hk_host_t *host);

/* Reloads the scripts from any thread, as SIGHUP does for the hancock binary: a new generation
 * is loaded off the loops and swapped in only if it loads everywhere; requests in flight finish
 * on the old one. The outcome is logged (reload_succeeded / reload_failed) and counted
 * (hancock_reloads_total). -EAGAIN when the host is not running. */
HK_API int hk_host_reload(hk_host_t *host);

/* Stops gracefully, from any thread: no new connections, requests in flight answered, then
 * every connection closed. Started: returns when all of it is over. Attached: returns at once;
 * the drain goes on in the caller's loop and hk_host_stopped becomes true (the callback below
 * says when). -EALREADY when already stopped, -EAGAIN when never started. */
HK_API int hk_host_stop(hk_host_t *host);

/* Called once a stop is complete: attached, on the caller's loop once the host holds no handle
 * of that loop any more (so the caller may free the host, or let uv_run return); started, from
 * hk_host_stop before it returns. Set it before hk_host_stop. */
HK_API void hk_host_on_stopped(hk_host_t *host, void (*callback)(hk_host_t *host, void *data), void *data);

/* True once a stop is complete. */
HK_API bool hk_host_stopped(const hk_host_t *host);

/* Frees the host and everything registered on it. A host still running is stopped first
 * (attached: closed at once, without the drain). NULL is a no-op. The handle is invalid after. */
HK_API void hk_host_free(hk_host_t *host);

/* ---- C metrics -------------------------------------------------------------------------- */

/* Families in the host's registry, scraped on /metrics with the host's own. Names and labels
 * follow Prometheus' rules (counters end in _total); registering the same name again with the
 * same type, labels (and buckets) returns the same family, with anything else -EEXIST.
 * Label values are passed as an array of label_count NUL-terminated strings (NULL when the
 * family has no labels); a family keeps at most 1000 series, later ones are dropped and
 * counted in hancock_metric_series_dropped_total. Handles are owned by the host. */
typedef struct hk_counter_s hk_counter_t;
typedef struct hk_gauge_s hk_gauge_t;
typedef struct hk_histogram_s hk_histogram_t;

HK_API int hk_counter_new(hk_host_t *host, const char *name, const char *help, const char *const *labels,
                          size_t label_count, hk_counter_t **out);
HK_API int hk_gauge_new(hk_host_t *host, const char *name, const char *help, const char *const *labels,
                        size_t label_count, hk_gauge_t **out);
/* buckets: strictly increasing finite upper bounds (+Inf is implied); NULL for Prometheus'
 * defaults. */
HK_API int hk_histogram_new(hk_host_t *host, const char *name, const char *help, const char *const *labels,
                            size_t label_count, const double *buckets, size_t bucket_count,
                            hk_histogram_t **out);

/* Updates; safe from any thread. A negative or NaN counter increment is -EINVAL; a series past
 * the cap is -ENOSPC (counted, not stored). */
HK_API int hk_counter_add(hk_counter_t *counter, const char *const *label_values, double value);
HK_API int hk_gauge_set(hk_gauge_t *gauge, const char *const *label_values, double value);
HK_API int hk_gauge_add(hk_gauge_t *gauge, const char *const *label_values, double value);
HK_API int hk_histogram_observe(hk_histogram_t *histogram, const char *const *label_values, double value);

/* ---- C health checks ------------------------------------------------------------------- */

typedef enum hk_health_status_e {
  HK_HEALTH_OK = 0,
  HK_HEALTH_DEGRADED = 1,
  HK_HEALTH_ERROR = 2,
} hk_health_status_t;

/* Probes one dependency and returns its status, with a short detail written into detail
 * (detail_size bytes, already an empty string). Runs on the control thread; it should return
 * quickly (it holds that thread), and a negative return counts as HK_HEALTH_ERROR with
 * hk_strerror's text as detail. */
typedef int (*hk_health_fn)(void *data, char *detail, size_t detail_size);

typedef struct hk_health_opts_s {
  bool critical;        /* its error makes /health/ready 503 */
  uint64_t interval_ms; /* 0: 30000 */
} hk_health_opts_t;

/* Adds a check named `name` (letters, digits, '_', '-', '.'; at most 64) to /health, its
 * metrics and alerts, like hk.health.check in a script; opts may be NULL (not critical, every
 * 30 s). Before hk_host_start/attach only (-EBUSY after); a name used twice is -EEXIST. */
HK_API int hk_health_add(hk_host_t *host, const char *name, hk_health_fn check, void *data,
                         const hk_health_opts_t *opts);

/* ---- C functions for the scripts: hk.native.<name>(...) --------------------------------- */

typedef struct hk_call_s hk_call_t;

typedef enum hk_type_e {
  HK_TYPE_NONE = -1, /* past the last argument */
  HK_TYPE_NIL = 0,
  HK_TYPE_BOOLEAN,
  HK_TYPE_NUMBER, /* an integer or a float: see hk_call_is_integer */
  HK_TYPE_STRING,
  HK_TYPE_TABLE,  /* read as JSON with hk_call_json */
  HK_TYPE_OTHER,  /* function, userdata, thread */
} hk_type_t;

/* A C function the scripts call as hk.native.<name>(...). It reads its arguments and pushes
 * its results through `call`, and returns 0 — or a negative code, or hk_call_error's, which
 * the script sees as a Lua error (catchable with pcall). It must not keep `call` or the
 * pointers it hands out past its return. */
typedef int (*hk_native_fn)(hk_call_t *call, void *data);

/* Registers hk.native.<name> (a Lua identifier) for every script generation. Before
 * hk_host_start/attach only (-EBUSY after); a name used twice is -EEXIST. */
HK_API int hk_native_add(hk_host_t *host, const char *name, hk_native_fn fn, void *data);

/* Arguments, numbered from 0. Readers return -EINVAL when the argument has another type. */
HK_API size_t hk_call_argc(const hk_call_t *call);
HK_API hk_type_t hk_call_type(const hk_call_t *call, size_t index);
HK_API bool hk_call_is_integer(const hk_call_t *call, size_t index);
HK_API int hk_call_boolean(const hk_call_t *call, size_t index, bool *out);
HK_API int hk_call_integer(const hk_call_t *call, size_t index, int64_t *out); /* integral numbers */
HK_API int hk_call_number(const hk_call_t *call, size_t index, double *out);
/* The bytes of a string argument (not NUL-terminated in general; *len says how many). */
HK_API int hk_call_string(const hk_call_t *call, size_t index, const char **str, size_t *len);
/* A table (or any value JSON can hold) as JSON text, NUL-terminated; owned by the call. */
HK_API int hk_call_json(hk_call_t *call, size_t index, const char **json, size_t *len);

/* Results, returned to the script in the order pushed (at most 16). */
HK_API int hk_call_push_nil(hk_call_t *call);
HK_API int hk_call_push_boolean(hk_call_t *call, bool value);
HK_API int hk_call_push_integer(hk_call_t *call, int64_t value);
HK_API int hk_call_push_number(hk_call_t *call, double value);
HK_API int hk_call_push_string(hk_call_t *call, const char *str, size_t len); /* copied */
/* JSON text, decoded into a Lua value (a table for an object or array); -EINVAL when invalid. */
HK_API int hk_call_push_json(hk_call_t *call, const char *json, size_t len);

/* Sets the message of the Lua error the script will see and returns the code to return from
 * the native function: return hk_call_error(call, "no such user: %s", name); */
HK_API int hk_call_error(hk_call_t *call, const char *fmt, ...) HK_PRINTF(2, 3);

#ifdef __cplusplus
}
#endif

#endif
