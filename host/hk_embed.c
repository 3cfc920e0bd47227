/* hk_embed: the public embedding API (host/include/hancock.h) over the internal modules — a
 * host object owning its settings (hk_config, validated as the command line is), its metric
 * registry, the embedder's natives and checks (hk_native), and the server once started
 * (hk_server: on threads of its own, or attached to the caller's loop). Also the C metric
 * handles, which write a cell of the registry reserved for the embedder's threads. */
#include "hancock.h"
#include "hk_embed.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <uv.h>

#include "hk_config.h"
#include "hk_host_metrics.h"
#include "hk_log.h"
#include "hk_lua.h"
#include "hk_metrics.h"
#include "hk_native.h"
#include "hk_server.h"
#include "hk_watchdog.h"

#define LOG_QUEUE_LIMIT (8u * 1024 * 1024)

typedef struct embed_metric_s {
  hk_host_t *host;
  hk_metric_t *metric;
  size_t label_count;
  struct embed_metric_s *next; /* the host's list, freed with it */
} embed_metric_t;

struct hk_counter_s { embed_metric_t m; };
struct hk_gauge_s { embed_metric_t m; };
struct hk_histogram_s { embed_metric_t m; };

struct hk_host_s {
  hk_config_t config;
  hk_metrics_t *registry;
  hk_host_metrics_t metrics;
  hk_native_set_t *natives;
  hk_server_t *server;
  unsigned embed_cell;          /* the cell C metric updates write, under update_lock */
  pthread_mutex_t update_lock;  /* one writer per cell: the embedder's threads take turns */
  pthread_mutex_t list_lock;    /* the handle list: registration may come from any thread */
  embed_metric_t *handles;
  bool attached, log_thread, watchdog;
  bool binary; /* the hancock binary's serve (hk__host_serve): signals are its own */
  void (*on_stopped)(hk_host_t *host, void *data);
  void *on_stopped_data;
};

/* One host per process: the log level and sink and the watchdog are the process's. The
 * pointer also tells a live handle from a freed one without reading freed memory. */
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static hk_host_t *live_host;

static bool is_live(const hk_host_t *host) {
  pthread_mutex_lock(&live_lock);
  bool live = host != NULL && host == live_host;
  pthread_mutex_unlock(&live_lock);
  return live;
}

/* ---- errors and version -------------------------------------------------------------------- */

const char *hk_strerror(int code) {
  switch (code) {
  case 0: return "success";
  case -EINVAL: return "invalid argument";
  case -ENOMEM: return "out of memory";
  case -EEXIST: return "already registered with another definition";
  case -EBUSY: return "busy: another host exists, or the host has started";
  case -EALREADY: return "already started or already stopped";
  case -EAGAIN: return "the host is not running";
  case -ENOENT: return "no such file or directory";
  case -EACCES: return "permission denied";
  case -ENOSPC: return "limit reached";
  case -ECANCELED: return "the native function failed";
  case -E2BIG: return "too long";
  case -EADDRINUSE: return "address already in use";
  case -EADDRNOTAVAIL: return "address not available";
  default: return code < 0 ? "system error" : "not an error code";
  }
}

const char *hk_version(void) { return HK_VERSION; }

/* ---- the host -------------------------------------------------------------------------------- */

void hk_host_config_init(hk_host_config_t *cfg) {
  if (cfg == NULL) return;
  memset(cfg, 0, sizeof *cfg);
  cfg->listen = "0.0.0.0:5000";
  cfg->log_level = "INFO";
  cfg->lua_time_limit_ms = 2000; /* --lua-time-limit's default; here 0 means none */
}

static void log_refusal(const char *event, const char *message) {
  hk_log_event(HK_LOG_ERROR, NULL, event, message, NULL, 0);
}

/* Flags for hk_config_load, built from the embedder's settings. */
typedef struct flags_s {
  char text[10][PATH_MAX + 32];
  char *argv[11];
  int argc;
} flags_t;

static void add_flag(flags_t *flags, const char *fmt, ...) HK_PRINTF(2, 3);
static void add_flag(flags_t *flags, const char *fmt, ...) {
  char *slot = flags->text[flags->argc - 1];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(slot, sizeof flags->text[0], fmt, ap);
  va_end(ap);
  flags->argv[flags->argc++] = slot;
}

/* The embedder's settings as the command line's flags, so both are checked by one table. */
static int load_settings(const hk_host_config_t *in, hk_config_t *out) {
  if (in->scripts_dir == NULL || in->scripts_dir[0] == '\0') {
    log_refusal("embed_config_invalid", "hk_host_config_t.scripts_dir is required");
    return -EINVAL;
  }
  static char program[] = "hancock";
  flags_t flags = {.argv = {program}, .argc = 1};
  add_flag(&flags, "--listen=%s", in->listen ? in->listen : "0.0.0.0:5000");
  add_flag(&flags, "--scripts=%s", in->scripts_dir);
  add_flag(&flags, "--workers=%u", in->workers);
  add_flag(&flags, "--log-level=%s", in->log_level ? in->log_level : "INFO");
  if (in->max_body_bytes) add_flag(&flags, "--max-body=%llu", (unsigned long long)in->max_body_bytes);
  if (in->max_connections) add_flag(&flags, "--max-connections=%llu", (unsigned long long)in->max_connections);
  if (in->drain_timeout_ms) add_flag(&flags, "--drain-timeout=%llums", (unsigned long long)in->drain_timeout_ms);
  add_flag(&flags, "--lua-time-limit=%llums", (unsigned long long)in->lua_time_limit_ms);
  int argc = flags.argc;
  char **argv = flags.argv;
  char err[512];
  if (hk_config_load(out, argc, argv, 1, HK_CONFIG_FOR_SERVE | HK_CONFIG_FOR_SCRIPTS | HK_CONFIG_IGNORE_ENV,
                     err, sizeof err) != 0) {
    log_refusal("embed_config_invalid", err);
    return -EINVAL;
  }
  if (in->admin_token != NULL && in->admin_token[0] != '\0') {
    size_t len = strlen(in->admin_token);
    if (len < 16 || len >= sizeof out->admin_token) {
      log_refusal("embed_config_invalid", "admin_token: expected 16 to 255 bytes");
      return -EINVAL;
    }
    memcpy(out->admin_token, in->admin_token, len + 1);
  }
  DIR *dir = opendir(out->scripts_dir);
  if (dir == NULL) {
    int rc = -errno;
    char msg[PATH_MAX + 64];
    snprintf(msg, sizeof msg, "cannot read scripts directory %s: %s", out->scripts_dir, hk_strerror(rc));
    log_refusal("embed_config_invalid", msg);
    return rc;
  }
  closedir(dir);
  return 0;
}

/* A host for validated settings: the registry, the native set, and the process's one slot. */
static int host_create(const hk_config_t *config, hk_host_t **out) {
  hk_host_t *host = calloc(1, sizeof *host);
  if (host == NULL) return -ENOMEM;
  host->config = *config;
  hk_log_set_level(host->config.log_level);
  int rc = -ENOMEM;
  /* Reference-counted by libcurl; thread-safe in the libcurl this builds against (>= 7.84). */
  bool curl = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
  unsigned workers = (unsigned)host->config.workers;
  host->embed_cell = hk_server_cells(workers);
  char err[256];
  if (curl) rc = hk_metrics_new(hk_server_cells(workers) + 1, &host->registry);
  if (rc == 0) rc = hk_host_metrics_init(&host->metrics, host->registry, workers, err, sizeof err);
  if (rc == 0) rc = hk_native_set_new(&host->natives);
  if (rc == 0) {
    pthread_mutex_lock(&live_lock);
    if (live_host != NULL) rc = -EBUSY; /* another thread got there first */
    else live_host = host;
    pthread_mutex_unlock(&live_lock);
  }
  if (rc != 0) {
    hk_native_set_free(host->natives);
    hk_metrics_free(host->registry);
    if (curl) curl_global_cleanup();
    free(host);
    return rc < 0 ? rc : -ENOMEM;
  }
  pthread_mutex_init(&host->update_lock, NULL);
  pthread_mutex_init(&host->list_lock, NULL);
  *out = host;
  return 0;
}

int hk_host_new(const hk_host_config_t *cfg, hk_host_t **out) {
  if (cfg == NULL || out == NULL) return -EINVAL;
  *out = NULL;
  pthread_mutex_lock(&live_lock);
  bool busy = live_host != NULL;
  pthread_mutex_unlock(&live_lock);
  if (busy) return -EBUSY;
  hk_log_set_sink(cfg->log_sink, cfg->log_sink_data);
  hk_config_t config;
  int rc = load_settings(cfg, &config);
  if (rc == 0) rc = host_create(&config, out);
  if (rc != 0) hk_log_set_sink(NULL, NULL);
  return rc;
}

static void on_server_stopped(void *data) {
  hk_host_t *host = data;
  if (host->on_stopped) host->on_stopped(host, host->on_stopped_data);
}

/* Loads the control generation and sets up the server; attach_loop NULL: threads. What went
 * wrong is logged and, first line only, left in err. */
static int host_begin(hk_host_t *host, uv_loop_t *attach_loop, char *err, size_t errsize) {
  if (!is_live(host)) return -EINVAL;
  if (host->server != NULL) return -EALREADY;
  const hk_config_t *cfg = &host->config;
  if (cfg->lua_time_limit_ms > 0 || host->binary) {
    /* Embedded: the time limits only — the program's signals are its own, and the process is
     * never ended from here. The binary's also ends a shutdown that cannot finish. */
    if (hk_watchdog_start_opts(cfg->drain_timeout_ms, host->binary) != 0) {
      snprintf(err, errsize, "cannot start the watchdog thread");
      return -ENOMEM;
    }
    host->watchdog = true;
  }
  hk_lua_opts_t opts;
  hk_lua_opts_from_config(&opts, cfg, host->registry, 0);
  opts.natives = host->natives;
  hk_lua_t *lua = NULL;
  char *lua_err = NULL;
  if (hk_lua_new_opts(&opts, &lua, &lua_err) != 0) {
    hk_log_event(HK_LOG_ERROR, NULL, "script_error", "scripts failed to load",
                 (hk_log_field_t[]){HK_LOG_S("error", lua_err)}, 1);
    const char *nl = lua_err ? strchr(lua_err, '\n') : NULL;
    snprintf(err, errsize, "script error: %.*s", nl ? (int)(nl - lua_err) : (int)strlen(lua_err ? lua_err : ""),
             lua_err ? lua_err : "");
    free(lua_err);
    return -EINVAL;
  }
  hk_server_opts_t server_opts = {
      .handle_signals = host->binary,
      .attach_loop = attach_loop,
      .on_stopped = on_server_stopped,
      .stopped_data = host,
      .natives = host->natives,
  };
  int rc = hk_server_new(cfg, lua, &host->metrics, &server_opts, &host->server, err, errsize); /* takes lua */
  if (rc != 0) {
    if (!host->binary) log_refusal("start_failed", err); /* the binary says it on stderr */
    host->server = NULL;
    return rc < 0 ? rc : -EINVAL;
  }
  return 0;
}

int hk_host_start(hk_host_t *host) {
  char err[512];
  int rc = host_begin(host, NULL, err, sizeof err);
  if (rc != 0) return rc;
  if (!host->log_thread && hk_log_start(1, LOG_QUEUE_LIMIT) == 0) host->log_thread = true;
  rc = hk_server_start(host->server);
  if (rc != 0) {
    hk_server_free(host->server);
    host->server = NULL;
  }
  return rc;
}

int hk_host_attach(hk_host_t *host, struct uv_loop_s *loop) {
  if (loop == NULL) return -EINVAL;
  char err[512];
  int rc = host_begin(host, loop, err, sizeof err);
  if (rc != 0) return rc;
  host->attached = true;
  rc = hk_server_attach(host->server);
  if (rc != 0) {
    hk_server_free(host->server);
    host->server = NULL;
    host->attached = false;
  }
  return rc;
}

int hk_host_port(const hk_host_t *host) {
  if (!is_live(host)) return -EINVAL;
  return host->server ? hk_server_port(host->server) : -EAGAIN;
}

int hk_host_reload(hk_host_t *host) {
  if (!is_live(host)) return -EINVAL;
  if (host->server == NULL) return -EAGAIN;
  return hk_server_reload(host->server);
}

int hk_host_stop(hk_host_t *host) {
  if (!is_live(host)) return -EINVAL;
  if (host->server == NULL) return -EAGAIN;
  int rc = hk_server_stop(host->server);
  /* On the host's threads the stop is over when hk_server_stop returns; attached, the
   * server calls on_server_stopped from the caller's loop once it is. */
  if (rc == 0 && !host->attached) on_server_stopped(host);
  return rc;
}

void hk_host_on_stopped(hk_host_t *host, void (*callback)(hk_host_t *host, void *data), void *data) {
  if (!is_live(host)) return;
  host->on_stopped = callback;
  host->on_stopped_data = data;
}

bool hk_host_stopped(const hk_host_t *host) {
  return is_live(host) && host->server != NULL && hk_server_finished(host->server);
}

void hk_host_free(hk_host_t *host) {
  if (!is_live(host)) return;
  pthread_mutex_lock(&live_lock);
  live_host = NULL;
  pthread_mutex_unlock(&live_lock);
  hk_server_free(host->server); /* stops one still running (attached: closes at once) */
  host->server = NULL;
  if (host->log_thread) hk_log_stop();
  if (host->watchdog) hk_watchdog_stop();
  hk_log_set_sink(NULL, NULL);
  hk_metrics_free(host->registry);
  hk_native_set_free(host->natives);
  for (embed_metric_t *m = host->handles, *next; m != NULL; m = next) {
    next = m->next;
    free(m);
  }
  pthread_mutex_destroy(&host->update_lock);
  pthread_mutex_destroy(&host->list_lock);
  curl_global_cleanup();
  free(host);
}

/* ---- C metrics ------------------------------------------------------------------------------- */

static int register_metric(hk_host_t *host, hk_metric_type_t type, const char *name, const char *help,
                           const char *const *labels, size_t label_count, const double *buckets,
                           size_t bucket_count, embed_metric_t **out) {
  if (out == NULL) return -EINVAL;
  *out = NULL;
  if (!is_live(host) || name == NULL || (label_count > 0 && labels == NULL)) return -EINVAL;
  if (label_count > HK_METRICS_MAX_LABELS) return -EINVAL;
  for (size_t i = 0; i < label_count; i++)
    if (labels[i] == NULL) return -EINVAL;
  hk_metric_opts_t opts = {type, name, help ? help : "", labels, label_count, buckets, bucket_count, 0, 0};
  hk_metric_t *metric = NULL;
  char err[256];
  int rc = hk_metrics_register(host->registry, &opts, &metric, err, sizeof err);
  if (rc != 0) {
    hk_log_event(HK_LOG_WARNING, NULL, "metric_register_failed", err,
                 (hk_log_field_t[]){HK_LOG_S("metric", name)}, 1);
    return rc;
  }
  embed_metric_t *m = calloc(1, sizeof *m);
  if (m == NULL) return -ENOMEM;
  m->host = host;
  m->metric = metric;
  m->label_count = label_count;
  pthread_mutex_lock(&host->list_lock);
  m->next = host->handles;
  host->handles = m;
  pthread_mutex_unlock(&host->list_lock);
  *out = m;
  return 0;
}

int hk_counter_new(hk_host_t *host, const char *name, const char *help, const char *const *labels,
                   size_t label_count, hk_counter_t **out) {
  return register_metric(host, HK_METRIC_COUNTER, name, help, labels, label_count, NULL, 0, (embed_metric_t **)out);
}

int hk_gauge_new(hk_host_t *host, const char *name, const char *help, const char *const *labels,
                 size_t label_count, hk_gauge_t **out) {
  return register_metric(host, HK_METRIC_GAUGE, name, help, labels, label_count, NULL, 0, (embed_metric_t **)out);
}

int hk_histogram_new(hk_host_t *host, const char *name, const char *help, const char *const *labels,
                     size_t label_count, const double *buckets, size_t bucket_count, hk_histogram_t **out) {
  return register_metric(host, HK_METRIC_HISTOGRAM, name, help, labels, label_count, buckets, bucket_count,
                         (embed_metric_t **)out);
}

/* The series for these label values; -EINVAL for a missing value, -ENOSPC past the cap. */
static int series_of(const embed_metric_t *m, const char *const *values, hk_series_t **out) {
  if (m == NULL || (m->label_count > 0 && values == NULL)) return -EINVAL;
  for (size_t i = 0; i < m->label_count; i++)
    if (values[i] == NULL) return -EINVAL;
  *out = hk_metric_series_str(m->metric, values, m->label_count);
  return *out ? 0 : -ENOSPC;
}

int hk_counter_add(hk_counter_t *counter, const char *const *label_values, double value) {
  hk_series_t *series;
  if (isnan(value) || value < 0) return -EINVAL;
  int rc = series_of(counter ? &counter->m : NULL, label_values, &series);
  if (rc != 0) return rc;
  pthread_mutex_lock(&counter->m.host->update_lock);
  hk_series_add(series, counter->m.host->embed_cell, value);
  pthread_mutex_unlock(&counter->m.host->update_lock);
  return 0;
}

int hk_gauge_set(hk_gauge_t *gauge, const char *const *label_values, double value) {
  hk_series_t *series;
  int rc = series_of(gauge ? &gauge->m : NULL, label_values, &series);
  if (rc == 0) hk_series_gauge_set(series, value); /* gauges are one shared atomic */
  return rc;
}

int hk_gauge_add(hk_gauge_t *gauge, const char *const *label_values, double value) {
  hk_series_t *series;
  int rc = series_of(gauge ? &gauge->m : NULL, label_values, &series);
  if (rc == 0) hk_series_gauge_add(series, value);
  return rc;
}

int hk_histogram_observe(hk_histogram_t *histogram, const char *const *label_values, double value) {
  hk_series_t *series;
  if (isnan(value)) return -EINVAL;
  int rc = series_of(histogram ? &histogram->m : NULL, label_values, &series);
  if (rc != 0) return rc;
  pthread_mutex_lock(&histogram->m.host->update_lock);
  hk_series_observe(series, histogram->m.host->embed_cell, value);
  pthread_mutex_unlock(&histogram->m.host->update_lock);
  return 0;
}

/* ---- natives and checks -------------------------------------------------------------------- */

int hk_native_add(hk_host_t *host, const char *name, hk_native_fn fn, void *data) {
  if (!is_live(host)) return -EINVAL;
  if (host->server != NULL) return -EBUSY; /* every generation must see the same set */
  return hk_native_set_add_function(host->natives, name, fn, data);
}

int hk_health_add(hk_host_t *host, const char *name, hk_health_fn check, void *data,
                  const hk_health_opts_t *opts) {
  if (!is_live(host)) return -EINVAL;
  if (host->server != NULL) return -EBUSY;
  return hk_native_set_add_check(host->natives, name, check, data, opts);
}

/* ---- the hancock binary ---------------------------------------------------------------------- */

int hk__host_serve(const hk_config_t *config, char *err, size_t errsize) {
  hk_host_t *host = NULL;
  int rc = host_create(config, &host);
  if (rc != 0) {
    snprintf(err, errsize, "%s", rc == -EBUSY ? "another host is running" : "out of memory");
    return 1;
  }
  host->binary = true;
  int status = 1;
  if (host_begin(host, NULL, err, errsize) == 0) {
    /* Start-up problems above went out synchronously; from here a slow stdout never stalls
     * a loop. */
    if (hk_log_start(1, LOG_QUEUE_LIMIT) != 0) {
      snprintf(err, errsize, "cannot start the log writer");
    } else {
      host->log_thread = true;
      status = hk_server_run(host->server);
    }
  }
  hk_host_free(host);
  return status;
}
