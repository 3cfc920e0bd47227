/* hk_server: the control thread and the process's shape — N workers (hk_worker, one thread and
 * loop each) and, on the calling thread, a control loop that owns what is not a request:
 * signals, the scripts directory watch, the reload coordinator, the control generation (which
 * runs the scripts' background tasks — health probes — once per process and the log hooks of
 * this thread's events), process-metric sampling and the scrape-time collectors that sum the
 * workers. Entry points: hk_server_new, hk_server_run, hk_server_free. */
#include "hk_server.h"

#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

#include <uv.h>

#include "hk_drive.h"
#include "hk_history.h"
#include "hk_log.h"
#include "hk_lua_metrics.h"
#include "hk_watchdog.h"
#include "hk_worker.h"

typedef struct reload_job_s {
  uv_work_t work;
  hk_server_t *server;
  char trigger[16];
  uint64_t started_ns;
  hk_lua_opts_t control_opts, worker_opts;
  hk_lua_t *control;  /* the control thread's next generation */
  hk_lua_t **workers; /* one per worker */
  char *err;
  unsigned seq;
} reload_job_t;

struct hk_server_s {
  uv_loop_t loop;
  const hk_config_t *config;
  hk_host_metrics_t *metrics;
  hk_gens_t gens; /* the control generation */
  hk_client_t *client;
  hk_ratelimit_t *ratelimit;
  hk_carry_t *carry;
  hk_history_t *history; /* the control copy's sample history: outlives every generation */
  uv_signal_t sigterm, sigint, sighup;
  uv_fs_event_t watch;
  bool watching;
  struct subdir_watch_s *subdir_handles[256]; /* one per directory below the scripts directory */
  size_t subdir_count;
  uv_timer_t debounce_timer;
  uv_timer_t sample_timer;
  uv_work_t sample_work;
  bool sampling;
  uv_async_t wake; /* a worker has posted under `lock` */
  pthread_mutex_t lock;
  unsigned *requested;  /* admin reload requests received per worker (cumulative) */
  unsigned *swapped;    /* per worker: the last reload seq it swapped to */
  unsigned stopped;     /* workers whose threads have finished */
  unsigned listeners_closed; /* workers that stopped accepting, at shutdown */
  bool drain_sent;
  /* Control thread only: */
  unsigned *covered;    /* per worker: requests the running reload answers */
  unsigned *answered;   /* per worker: requests answered so far */
  unsigned *seen_requested;
  reload_job_t *reload; /* being built off the loop */
  bool reload_again;
  char reload_again_trigger[16];
  unsigned reload_seq;
  bool awaiting_swaps;  /* the built generations went to the workers */
  uint64_t reload_started_ns;
  char reload_trigger[16];
  unsigned generation;
  bool draining;
  bool started;
  unsigned worker_count;
  hk_worker_t *workers;
  int port;
  unsigned control_cell, loader_cell;
  _Atomic size_t connections; /* open in every worker, against --max-connections */
  _Atomic bool shutting_down;  /* read by the workers' connections */
  hk_server_opts_t opts;
  /* Asked from any thread (hk_server_stop, hk_server_reload), acted on by on_wake: */
  _Atomic bool stop_asked;
  _Atomic bool reload_asked;
  bool finished; /* the control loop has ended (attached: once its last handle closed) */
  uv_thread_t control_thread; /* hk_server_start's */
  bool control_threaded;
  hk_drive_t *control_drive, *worker_drive; /* attached: both loops run from the caller's */
};

static void reload_start(hk_server_t *server, const char *trigger);
static void rewatch_subdirs(hk_server_t *server);

/* ---- what workers post ------------------------------------------------------------------------ */

void hk__server_request_reload(hk_server_t *server, hk_worker_t *worker) {
  pthread_mutex_lock(&server->lock);
  server->requested[worker->index]++;
  pthread_mutex_unlock(&server->lock);
  uv_async_send(&server->wake);
}

void hk__server_generation_swapped(hk_server_t *server, hk_worker_t *worker, unsigned seq) {
  pthread_mutex_lock(&server->lock);
  server->swapped[worker->index] = seq;
  pthread_mutex_unlock(&server->lock);
  uv_async_send(&server->wake);
}

void hk__server_listener_closed(hk_server_t *server, hk_worker_t *worker) {
  (void)worker;
  pthread_mutex_lock(&server->lock);
  server->listeners_closed++;
  pthread_mutex_unlock(&server->lock);
  uv_async_send(&server->wake);
}

void hk__server_worker_stopped(hk_server_t *server, hk_worker_t *worker) {
  (void)worker;
  pthread_mutex_lock(&server->lock);
  server->stopped++;
  pthread_mutex_unlock(&server->lock);
  uv_async_send(&server->wake);
}

/* Tells every worker the outcome for the admin requests the finished reload covered. */
static void post_answers(hk_server_t *server, bool success, const char *error) {
  for (unsigned i = 0; i < server->worker_count; i++) {
    if (server->covered[i] == server->answered[i]) continue;
    hk_worker_t *worker = &server->workers[i];
    pthread_mutex_lock(&worker->inbox_lock);
    worker->inbox.has_answer = true;
    worker->inbox.answer_upto = server->covered[i];
    worker->inbox.answer_success = success;
    worker->inbox.answer_generation = server->generation;
    snprintf(worker->inbox.answer_error, sizeof worker->inbox.answer_error, "%s", error ? error : "");
    pthread_mutex_unlock(&worker->inbox_lock);
    server->answered[i] = server->covered[i];
    hk__worker_post(worker);
  }
}

static void close_walk(uv_handle_t *handle, void *arg) {
  (void)arg;
  if (!uv_is_closing(handle)) uv_close(handle, NULL);
}

/* Every worker has stopped: the control loop ends too. */
static void control_finish(hk_server_t *server) {
  server->draining = true;
  rewatch_subdirs(server); /* closes them, with their memory */
  hk__gens_cancel_all(&server->gens);
  if (server->client != NULL) {
    hk_client_close(server->client);
    server->client = NULL;
  }
  uv_walk(&server->loop, close_walk, NULL);
}

static void reload_finish(hk_server_t *server, bool success, const char *error);

static void begin_drain(hk_server_t *server, const char *cause);

static void on_wake(uv_async_t *async) {
  hk_server_t *server = async->data;
  if (atomic_exchange(&server->stop_asked, false)) begin_drain(server, "api");
  if (atomic_exchange(&server->reload_asked, false)) reload_start(server, "api");
  bool new_requests = false, all_swapped = true;
  unsigned stopped, listeners_closed;
  pthread_mutex_lock(&server->lock);
  for (unsigned i = 0; i < server->worker_count; i++) {
    if (server->requested[i] != server->seen_requested[i]) new_requests = true;
    server->seen_requested[i] = server->requested[i];
    if (server->swapped[i] != server->reload_seq) all_swapped = false;
  }
  stopped = server->stopped;
  listeners_closed = server->listeners_closed;
  pthread_mutex_unlock(&server->lock);
  /* Shutdown, second step: every listener is closed, so idle connections may go now without a
   * new one arriving at a worker that still listens. */
  if (server->draining && !server->drain_sent && listeners_closed >= server->worker_count) {
    server->drain_sent = true;
    for (unsigned i = 0; i < server->worker_count; i++) {
      hk_worker_t *worker = &server->workers[i];
      pthread_mutex_lock(&worker->inbox_lock);
      worker->inbox.drain = true;
      pthread_mutex_unlock(&worker->inbox_lock);
      hk__worker_post(worker);
    }
  }
  if (server->awaiting_swaps && all_swapped) {
    server->awaiting_swaps = false;
    reload_finish(server, true, NULL);
  }
  if (new_requests) reload_start(server, "admin");
  if (stopped == server->worker_count && server->started) control_finish(server);
}

/* ---- reloads ---------------------------------------------------------------------------------- */

/* On a threadpool thread: the control generation and one per worker, each loaded in full.
 * The first is the scratch check: when any fails, none goes live. */
static void reload_build(uv_work_t *work) {
  reload_job_t *job = work->data;
  hk_server_t *server = job->server;
  if (hk_lua_new_opts(&job->control_opts, &job->control, &job->err) != 0) return;
  for (unsigned i = 0; i < server->worker_count; i++) {
    if (hk_lua_new_opts(&job->worker_opts, &job->workers[i], &job->err) != 0) return;
  }
}

static void job_free(reload_job_t *job, unsigned worker_count) {
  hk_lua_free(job->control);
  if (job->workers) {
    for (unsigned i = 0; i < worker_count; i++) hk_lua_free(job->workers[i]);
  }
  free(job->workers);
  free(job->err);
  free(job);
}

/* The reload is over for every worker: log and count it once for the process, answer the admin
 * requests it covered, and start the next one when triggers came meanwhile. */
static void reload_finish(hk_server_t *server, bool success, const char *error) {
  if (success) {
    rewatch_subdirs(server); /* directories may have come or gone with the new scripts */
    server->generation++;
    hk_host_metrics_reload(server->metrics, server->metrics->collector_cell, true, server->generation);
    hk_log_event(HK_LOG_INFO, NULL, "reload_succeeded", "scripts reloaded",
                 (hk_log_field_t[]){HK_LOG_S("trigger", server->reload_trigger),
                                    HK_LOG_I("generation", server->generation),
                                    HK_LOG_I("routes", hk_lua_route_count(server->gens.current)),
                                    HK_LOG_I("workers", server->worker_count),
                                    HK_LOG_D("duration_ms", (double)(hk_now_ns() - server->reload_started_ns) / 1e6)},
                 5);
  } else {
    hk_host_metrics_reload(server->metrics, server->metrics->collector_cell, false, server->generation);
  }
  post_answers(server, success, error);
  if (server->reload_again && !server->draining) {
    server->reload_again = false;
    reload_start(server, server->reload_again_trigger);
  }
}

static void reload_done(uv_work_t *work, int status) {
  reload_job_t *job = work->data;
  hk_server_t *server = job->server;
  server->reload = NULL;
  bool built = status == 0 && job->err == NULL && job->control != NULL;
  if (!built || server->draining) {
    const char *why = job->err ? job->err : server->draining ? "shutting down" : "reload cancelled";
    char error[512];
    const char *nl = strchr(why, '\n');
    snprintf(error, sizeof error, "%.*s", nl ? (int)(nl - why) : (int)strlen(why), why);
    hk_log_event(HK_LOG_ERROR, NULL, "reload_failed", "scripts not reloaded; the previous ones keep serving",
                 (hk_log_field_t[]){HK_LOG_S("trigger", job->trigger), HK_LOG_SN("error", error, strlen(error)),
                                    HK_LOG_S("traceback", job->err)}, 3);
    job_free(job, server->worker_count);
    reload_finish(server, false, error);
    return;
  }
  /* The control generation first (it takes over the background tasks), then every worker
   * swaps on its own thread and says so; the reload is done when all have. */
  hk_lua_t *control = job->control;
  job->control = NULL;
  hk_lua_set_cell(control, server->control_cell);
  if (hk__gens_swap(&server->gens, control) != 0) {
    hk_lua_free(control);
    job_free(job, server->worker_count);
    reload_finish(server, false, "out of memory");
    return;
  }
  hk_lua_bind_loop(control, &server->loop, server->client, server->ratelimit, server->carry);
  hk_lua_bind_history(control, server->history);
  hk_lua_attach_log(control);
  server->awaiting_swaps = true;
  for (unsigned i = 0; i < server->worker_count; i++) {
    hk_worker_t *worker = &server->workers[i];
    pthread_mutex_lock(&worker->inbox_lock);
    if (worker->inbox.generation != NULL) hk_lua_free(worker->inbox.generation);
    worker->inbox.generation = job->workers[i];
    worker->inbox.generation_seq = job->seq;
    pthread_mutex_unlock(&worker->inbox_lock);
    job->workers[i] = NULL;
    hk__worker_post(worker);
  }
  job_free(job, server->worker_count);
}

/* Builds new generations off the loop. One reload at a time: triggers that arrive during one
 * make one more run after it, so the last change is always loaded and none is lost. */
static void reload_start(hk_server_t *server, const char *trigger) {
  if (server->draining) {
    pthread_mutex_lock(&server->lock);
    memcpy(server->covered, server->requested, server->worker_count * sizeof *server->covered);
    pthread_mutex_unlock(&server->lock);
    post_answers(server, false, "shutting down");
    return;
  }
  if (server->reload != NULL || server->awaiting_swaps) {
    server->reload_again = true;
    snprintf(server->reload_again_trigger, sizeof server->reload_again_trigger, "%s", trigger);
    return;
  }
  reload_job_t *job = calloc(1, sizeof *job);
  if (job != NULL) job->workers = calloc(server->worker_count, sizeof *job->workers);
  pthread_mutex_lock(&server->lock);
  memcpy(server->covered, server->requested, server->worker_count * sizeof *server->covered);
  pthread_mutex_unlock(&server->lock);
  if (job == NULL || job->workers == NULL) {
    free(job);
    hk_log_event(HK_LOG_ERROR, NULL, "reload_failed", "scripts not reloaded: out of memory",
                 (hk_log_field_t[]){HK_LOG_S("trigger", trigger)}, 1);
    reload_finish(server, false, "out of memory");
    return;
  }
  job->work.data = job;
  job->server = server;
  job->seq = ++server->reload_seq;
  snprintf(job->trigger, sizeof job->trigger, "%s", trigger);
  snprintf(server->reload_trigger, sizeof server->reload_trigger, "%s", trigger);
  job->started_ns = server->reload_started_ns = hk_now_ns();
  /* The control generation builds on the loader's cell (a worker's is written by that worker
   * meanwhile); the workers' copies record nothing at load, so a top level counts once. */
  hk_lua_opts_from_config(&job->control_opts, server->config, server->metrics->registry, server->loader_cell);
  job->control_opts.natives = server->opts.natives;
  job->worker_opts = job->control_opts;
  job->worker_opts.worker = HK_LUA_METRICS_SILENT;
  server->reload = job;
  int rc = uv_queue_work(&server->loop, &job->work, reload_build, reload_done);
  if (rc != 0) {
    job->err = strdup(uv_strerror(rc));
    reload_done(&job->work, rc);
  }
}

static void on_sighup(uv_signal_t *handle, int signum) {
  (void)signum;
  reload_start(handle->data, "SIGHUP");
}

static void on_debounced_change(uv_timer_t *timer) { reload_start(timer->data, "file_change"); }

/* Editors save by rename, Kubernetes swaps a ConfigMap's ..data symlink: any event in the
 * directory starts (or restarts) a 200 ms debounce, and the reload reads whatever is there. */
static void on_scripts_changed(uv_fs_event_t *handle, const char *filename, int events, int status) {
  (void)filename;
  (void)events;
  hk_server_t *server = handle->data;
  if (status < 0) return;
  uv_timer_start(&server->debounce_timer, on_debounced_change, 200, 0);
}

/* inotify is not recursive: every directory below the scripts directory (modules such as
 * the files of scripts/api/) gets a watch of its own, following symlinks (a ConfigMap's entries point
 * into its ..data directory). The set is rebuilt after every reload, since directories come and
 * go — a ConfigMap swap replaces all of them. Hidden entries are skipped: the top directory's
 * watch already sees ..data being swapped. */
#define MAX_SUBDIR_WATCHES (sizeof ((hk_server_t *)0)->subdir_handles / sizeof ((hk_server_t *)0)->subdir_handles[0])
#define MAX_WATCH_DEPTH 8

typedef struct subdir_watch_s {
  uv_fs_event_t handle;
} subdir_watch_t;

static void on_subdir_closed(uv_handle_t *handle) { free(handle->data); }

static void watch_dir(hk_server_t *server, const char *dir, int depth) {
  if (depth > MAX_WATCH_DEPTH) return;
  uv_fs_t req;
  if (uv_fs_scandir(NULL, &req, dir, 0, NULL) < 0) {
    uv_fs_req_cleanup(&req);
    return;
  }
  uv_dirent_t entry;
  while (uv_fs_scandir_next(&req, &entry) != UV_EOF) {
    if (entry.name[0] == '.') continue;
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", dir, entry.name) >= (int)sizeof path) continue;
    uv_fs_t st;
    bool is_dir = uv_fs_stat(NULL, &st, path, NULL) == 0 && (st.statbuf.st_mode & S_IFMT) == S_IFDIR;
    uv_fs_req_cleanup(&st);
    if (!is_dir || server->subdir_count >= MAX_SUBDIR_WATCHES) continue;
    subdir_watch_t *w = calloc(1, sizeof *w);
    if (w == NULL) continue;
    uv_fs_event_init(&server->loop, &w->handle);
    w->handle.data = server;
    if (uv_fs_event_start(&w->handle, on_scripts_changed, path, 0) != 0) {
      w->handle.data = w;
      uv_close((uv_handle_t *)&w->handle, on_subdir_closed);
      continue;
    }
    server->subdir_handles[server->subdir_count++] = w;
    watch_dir(server, path, depth + 1);
  }
  uv_fs_req_cleanup(&req);
}

/* Closes the subdirectory watches and takes a new set. */
static void rewatch_subdirs(hk_server_t *server) {
  for (size_t i = 0; i < server->subdir_count; i++) {
    subdir_watch_t *w = server->subdir_handles[i];
    w->handle.data = w;
    uv_close((uv_handle_t *)&w->handle, on_subdir_closed);
  }
  server->subdir_count = 0;
  if (!server->draining && server->watching) watch_dir(server, server->config->scripts_dir, 1);
}

/* ---- shutdown --------------------------------------------------------------------------------- */

static size_t open_connections(const hk_server_t *server) {
  size_t total = 0;
  for (unsigned i = 0; i < server->worker_count; i++)
    total += atomic_load_explicit(&server->workers[i].open_connections, memory_order_relaxed);
  return total;
}

/* Shutdown, first step: no new connections, no more reloads; `cause` is the signal's name or
 * "api" (hk_server_stop). */
static void begin_drain(hk_server_t *server, const char *cause) {
  if (server->draining) return;
  server->draining = true;
  atomic_store_explicit(&server->shutting_down, true, memory_order_release);
  hk_log_event(HK_LOG_INFO, NULL, "shutdown_started",
               strcmp(cause, "api") == 0 ? "stop requested: draining connections"
                                         : "signal received: draining connections",
               (hk_log_field_t[]){HK_LOG_S("signal", cause), HK_LOG_I("connections", open_connections(server))}, 2);
  uv_timer_stop(&server->debounce_timer);
  uv_timer_stop(&server->sample_timer);
  if (server->watching) uv_fs_event_stop(&server->watch);
  rewatch_subdirs(server); /* draining: closes them */
  uv_signal_stop(&server->sighup);
  for (unsigned i = 0; i < server->worker_count; i++) {
    hk_worker_t *worker = &server->workers[i];
    pthread_mutex_lock(&worker->inbox_lock);
    worker->inbox.stop_listening = true;
    pthread_mutex_unlock(&worker->inbox_lock);
    hk__worker_post(worker);
  }
}

static void on_signal(uv_signal_t *handle, int signum) {
  begin_drain(handle->data, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* ---- process metrics -------------------------------------------------------------------------- */

/* /proc reads and the fd count run on the threadpool once a second; a scrape copies the
 * snapshot, so its cost does not grow with open connections. */
static void sample_process(uv_work_t *work) {
  hk_server_t *server = work->data;
  hk_host_metrics_sample(server->metrics);
}

static void sample_done(uv_work_t *work, int status) {
  (void)status;
  hk_server_t *server = work->data;
  server->sampling = false;
  hk__gens_publish(&server->gens); /* the control generation's memory moves with its probes */
}

static void on_sample(uv_timer_t *timer) {
  hk_server_t *server = timer->data;
  if (server->sampling || server->draining) return;
  server->sampling = true;
  if (uv_queue_work(&server->loop, &server->sample_work, sample_process, sample_done) != 0)
    server->sampling = false;
}

/* hancock_active_connections and hancock_lua_memory_bytes for the process: every worker's,
 * summed at scrape time from what each one publishes. */
static void collect_workers(hk_metrics_t *registry, void *data) {
  (void)registry;
  hk_server_t *server = data;
  size_t current = atomic_load_explicit(&server->gens.current_bytes, memory_order_relaxed);
  size_t retiring = atomic_load_explicit(&server->gens.retiring_bytes, memory_order_relaxed);
  for (unsigned i = 0; i < server->worker_count; i++) {
    current += atomic_load_explicit(&server->workers[i].gens.current_bytes, memory_order_relaxed);
    retiring += atomic_load_explicit(&server->workers[i].gens.retiring_bytes, memory_order_relaxed);
  }
  hk_series_gauge_set(hk_metric_series(server->metrics->active_connections, NULL, 0),
                      (double)open_connections(server));
  const char *label = "current";
  hk_series_gauge_set(hk_metric_series_str(server->metrics->lua_memory, &label, 1), (double)current);
  label = "retiring";
  hk_series_gauge_set(hk_metric_series_str(server->metrics->lua_memory, &label, 1), (double)retiring);
}

/* ---- public ----------------------------------------------------------------------------------- */

int hk_server_new(const hk_config_t *config, hk_lua_t *lua, hk_host_metrics_t *metrics,
                  const hk_server_opts_t *opts, hk_server_t **out, char *err, size_t errsize) {
  hk_server_t *server = calloc(1, sizeof *server);
  /* Attached to a caller's loop: one worker. The metric cells keep the registry's layout
   * (made for metrics->collector_cell workers), whatever number of them runs. */
  unsigned n = opts != NULL && opts->attach_loop != NULL ? 1 : (unsigned)config->workers;
  unsigned layout = metrics->collector_cell;
  if (server == NULL) {
    hk_lua_free(lua);
    snprintf(err, errsize, "out of memory");
    return -ENOMEM;
  }
  server->config = config;
  server->metrics = metrics;
  server->opts = opts != NULL ? *opts : (hk_server_opts_t){.handle_signals = true};
  server->worker_count = 0;
  server->generation = 1;
  server->control_cell = hk_server_control_cell(layout);
  server->loader_cell = hk_server_loader_cell(layout);
  pthread_mutex_init(&server->lock, NULL);
  int rc = uv_loop_init(&server->loop);
  if (rc != 0) {
    snprintf(err, errsize, "cannot start the event loop: %s", uv_strerror(rc));
    pthread_mutex_destroy(&server->lock);
    free(server);
    hk_lua_free(lua);
    return rc;
  }
  hk__gens_init(&server->gens, &server->loop, lua);
  hk_lua_set_cell(lua, server->control_cell);
  uv_signal_init(&server->loop, &server->sigterm);
  uv_signal_init(&server->loop, &server->sigint);
  uv_signal_init(&server->loop, &server->sighup);
  uv_timer_init(&server->loop, &server->debounce_timer);
  uv_timer_init(&server->loop, &server->sample_timer);
  uv_async_init(&server->loop, &server->wake, on_wake);
  server->sigterm.data = server->sigint.data = server->sighup.data = server;
  server->debounce_timer.data = server->sample_timer.data = server->sample_work.data = server;
  server->wake.data = server;
  server->requested = calloc(n, sizeof *server->requested);
  server->swapped = calloc(n, sizeof *server->swapped);
  server->covered = calloc(n, sizeof *server->covered);
  server->answered = calloc(n, sizeof *server->answered);
  server->seen_requested = calloc(n, sizeof *server->seen_requested);
  server->workers = calloc(n, sizeof *server->workers);
  rc = -ENOMEM;
  if (server->requested && server->swapped && server->covered && server->answered &&
      server->seen_requested && server->workers)
    rc = hk_client_new(&server->loop, &server->client);
  if (rc == 0) rc = hk_ratelimit_new(config->rate_limit_clients, &server->ratelimit);
  if (rc == 0) rc = hk_carry_new(&server->carry);
  if (rc == 0) rc = hk_history_new(HK_HISTORY_DEFAULT_MAX_STREAMS, &server->history);
  if (rc != 0) {
    snprintf(err, errsize, "cannot start the server: %s", strerror(-rc));
    hk_server_free(server);
    return rc;
  }
  hk_lua_bind_loop(lua, &server->loop, server->client, server->ratelimit, server->carry);
  hk_lua_bind_history(lua, server->history);
  hk_metrics_add_collector(metrics->registry, collect_workers, server);
  int port = config->port;
  int shared_fd = -1;
  for (unsigned i = 0; i < n; i++) {
    hk_lua_t *first = NULL;
    char *lua_err = NULL;
    hk_lua_opts_t lua_opts;
    hk_lua_opts_from_config(&lua_opts, config, metrics->registry, HK_LUA_METRICS_SILENT);
    lua_opts.natives = server->opts.natives;
    if (hk_lua_new_opts(&lua_opts, &first, &lua_err) != 0) {
      snprintf(err, errsize, "worker %u: %s", i, lua_err ? lua_err : "cannot load the scripts");
      free(lua_err);
      hk_server_free(server);
      return -EINVAL;
    }
    rc = hk__worker_init(&server->workers[i], server, i, config, metrics, first, server->ratelimit,
                         server->carry, shared_fd, &port, err, errsize);
    server->worker_count = i + 1;
    server->workers[i].process_connections = &server->connections;
    server->workers[i].process_draining = &server->shutting_down;
    if (rc != 0) {
      hk_server_free(server);
      return rc;
    }
    if (i == 0) shared_fd = hk__worker_listen_fd(&server->workers[0]);
  }
  server->port = port;
  *out = server;
  return 0;
}

unsigned hk_server_control_cell(unsigned workers) { return workers + 1; }

unsigned hk_server_loader_cell(unsigned workers) { return workers + 2; }

int hk_server_port(const hk_server_t *server) { return server->port; }

/* Everything before the control loop runs: watches, sampling, the workers (threads, or driven
 * from the caller's loop when attached). */
static int server_begin(hk_server_t *server) {
  if (server->opts.handle_signals) {
    uv_signal_start(&server->sigterm, on_signal, SIGTERM);
    uv_signal_start(&server->sigint, on_signal, SIGINT);
    uv_signal_start(&server->sighup, on_sighup, SIGHUP);
  }
  if (uv_fs_event_init(&server->loop, &server->watch) == 0) {
    server->watch.data = server;
    server->watching = uv_fs_event_start(&server->watch, on_scripts_changed, server->config->scripts_dir, 0) == 0;
    if (!server->watching)
      hk_log_event(HK_LOG_WARNING, NULL, "watch_unavailable", "scripts directory not watched; reload with SIGHUP",
                   (hk_log_field_t[]){HK_LOG_S("dir", server->config->scripts_dir)}, 1);
    rewatch_subdirs(server);
  }
  uv_timer_start(&server->sample_timer, on_sample, 0, HK_HOST_METRICS_SAMPLE_INTERVAL_MS);
  uv_unref((uv_handle_t *)&server->sample_timer);
  hk_lua_attach_log(server->gens.current); /* this thread's events go through the scripts' hooks */
  for (unsigned i = 0; i < server->worker_count && server->opts.attach_loop == NULL; i++) {
    if (hk__worker_start(&server->workers[i]) != 0) {
      hk_log_event(HK_LOG_ERROR, NULL, "worker_failed", "cannot start a worker thread",
                   (hk_log_field_t[]){HK_LOG_I("worker", i)}, 1);
      server->worker_count = i; /* the ones started still run and drain */
      break;
    }
  }
  server->started = true;
  /* A signal that came while the scripts loaded, before this loop watched for it. */
  int early = server->opts.handle_signals ? hk_watchdog_signal_seen() : 0;
  if (early != 0) on_signal(&server->sigterm, early);
  const hk_config_t *cfg = server->config;
  hk_log_event(HK_LOG_INFO, NULL, "server_listening", "listening",
               (hk_log_field_t[]){HK_LOG_S("address", cfg->listen_host), HK_LOG_I("port", server->port),
                                  HK_LOG_I("routes", hk_lua_route_count(server->gens.current)),
                                  HK_LOG_I("workers", server->worker_count),
                                  HK_LOG_S("version", HK_VERSION)}, 5);
  return 0;
}

/* After the control loop has ended: every worker is done. */
static void server_end(hk_server_t *server) {
  if (server->opts.attach_loop == NULL)
    for (unsigned i = 0; i < server->worker_count; i++) uv_thread_join(&server->workers[i].thread);
  server->finished = true;
  hk_log_event(HK_LOG_INFO, NULL, "shutdown_complete", "all connections closed", NULL, 0);
  hk_lua_attach_log(NULL);
}

int hk_server_run(hk_server_t *server) {
  server_begin(server);
  uv_run(&server->loop, UV_RUN_DEFAULT);
  server_end(server);
  return 0;
}

static void control_thread_main(void *arg) {
  hk_server_t *server = arg;
  hk_lua_attach_log(server->gens.current);
  uv_run(&server->loop, UV_RUN_DEFAULT);
  server_end(server);
}

int hk_server_start(hk_server_t *server) {
  if (server->started || server->opts.attach_loop != NULL) return -EALREADY;
  server_begin(server);
  hk_lua_attach_log(NULL); /* the control generation's hooks belong to the control thread */
  int rc = uv_thread_create(&server->control_thread, control_thread_main, server);
  if (rc != 0) {
    /* Nobody runs the control loop: stop the workers' threads by hand. */
    begin_drain(server, "api");
    uv_run(&server->loop, UV_RUN_DEFAULT);
    server_end(server);
    return rc;
  }
  server->control_threaded = true;
  return 0;
}

/* Attached: after each run of the worker's loop or the control loop, the steps a thread would
 * take when its loop returns. */
static void after_worker_run(void *data) {
  hk_server_t *server = data;
  if (hk__worker_finish_attached(&server->workers[0])) {
    hk_drive_close(server->worker_drive);
    server->worker_drive = NULL;
    hk_drive_kick(server->control_drive); /* its wake-up is waiting on the control loop */
  }
}

static void after_control_run(void *data) {
  hk_server_t *server = data;
  if (server->finished || !server->started || server->stopped < server->worker_count ||
      uv_loop_alive(&server->loop))
    return;
  server_end(server);
  hk_drive_close(server->control_drive);
  server->control_drive = NULL;
  if (server->opts.on_stopped) server->opts.on_stopped(server->opts.stopped_data);
}

int hk_server_attach(hk_server_t *server) {
  uv_loop_t *outer = server->opts.attach_loop;
  if (outer == NULL || server->started) return -EALREADY;
  int rc = hk_drive_start(outer, &server->workers[0].loop, after_worker_run, server, &server->worker_drive);
  if (rc == 0) rc = hk_drive_start(outer, &server->loop, after_control_run, server, &server->control_drive);
  if (rc != 0) {
    hk_drive_close(server->worker_drive);
    server->worker_drive = NULL;
    return rc;
  }
  server_begin(server);
  hk_lua_attach_log(server->workers[0].lua); /* the caller's thread serves the requests */
  hk_drive_kick(server->control_drive);
  hk_drive_kick(server->worker_drive);
  return 0;
}

int hk_server_stop(hk_server_t *server) {
  if (server->finished) return -EALREADY;
  atomic_store(&server->stop_asked, true);
  uv_async_send(&server->wake);
  if (server->control_threaded) {
    uv_thread_join(&server->control_thread);
    server->control_threaded = false;
  }
  return 0;
}

int hk_server_reload(hk_server_t *server) {
  if (!server->started || server->finished) return -EAGAIN;
  atomic_store(&server->reload_asked, true);
  uv_async_send(&server->wake);
  return 0;
}

bool hk_server_finished(const hk_server_t *server) { return server->finished; }

void hk_server_free(hk_server_t *server) {
  if (server == NULL) return;
  if (server->control_threaded) hk_server_stop(server); /* a running control thread: drain first */
  /* Attached and not stopped yet: the caller's loop stops driving ours, which close below. */
  hk_drive_close(server->worker_drive);
  hk_drive_close(server->control_drive);
  /* The registry outlives the server: nothing may call back into it from a scrape. */
  hk_metrics_remove_collector(server->metrics->registry, collect_workers, server);
  server->draining = true; /* a reload still building is dropped when it comes back */
  for (unsigned i = 0; i < server->worker_count; i++) hk__worker_destroy(&server->workers[i]);
  control_finish(server);
  while (uv_run(&server->loop, UV_RUN_DEFAULT) != 0) {
  }
  int rc = uv_loop_close(&server->loop);
  (void)rc;
  assert(rc == 0); /* every handle closed: nothing leaks */
  hk__gens_free(&server->gens);
  hk_ratelimit_free(server->ratelimit);
  hk_carry_free(server->carry);
  hk_history_free(server->history);
  pthread_mutex_destroy(&server->lock);
  free(server->requested);
  free(server->swapped);
  free(server->covered);
  free(server->answered);
  free(server->seen_requested);
  free(server->workers);
  free(server);
}
