/* embed-service: a small C service that hosts Hancock. It has a job queue of its own, driven
 * by its own libuv loop and counted in its own C metrics; Hancock serves its HTTP — Lua routes
 * (scripts/) that call back into C through hk.native, a C health check on the queue, /metrics
 * with the service's metrics next to Hancock's — attached to that same loop (no threads of
 * Hancock's), or with --threads on Hancock's own threads. SIGHUP reloads the scripts,
 * SIGTERM/SIGINT stop gracefully. docs/embedding.md walks through this file.
 *
 *   embed-service [--threads] [--listen ADDR:PORT] [--scripts DIR]
 */
#define _POSIX_C_SOURCE 200809L /* uv.h needs POSIX threads types under -std=c11 */

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hancock.h>
#include <uv.h>

#define QUEUE_WARN_DEPTH 50

typedef struct service_s {
  uv_loop_t loop;
  uv_timer_t worker_timer; /* the service's own work: drains the queue */
  uv_signal_t sigterm, sigint, sighup;
  hk_host_t *host;
  hk_counter_t *jobs_done;
  hk_gauge_t *queue_depth;
  /* The queue: on Hancock's threads (--threads) natives run on its workers while this loop
   * drains it, so it is guarded; attached, everything runs on this thread anyway. */
  pthread_mutex_t lock;
  int queued;
  long processed;
  int exit_status;
} service_t;

static const char *const KIND[] = {"kind"};

/* ---- the service's own work ---------------------------------------------------------------- */

static void on_work(uv_timer_t *timer) {
  service_t *svc = timer->data;
  const char *kind[] = {"queued"};
  pthread_mutex_lock(&svc->lock);
  int done = svc->queued < 5 ? svc->queued : 5;
  svc->queued -= done;
  svc->processed += done;
  int depth = svc->queued;
  pthread_mutex_unlock(&svc->lock);
  if (done > 0) hk_counter_add(svc->jobs_done, kind, done); /* metric handles: any thread */
  hk_gauge_set(svc->queue_depth, NULL, depth);
}

/* ---- C called from Lua ----------------------------------------------------------------------- */

/* hk.native.enqueue(n) -> depth: adds n jobs (1..1000) to the queue. */
static int native_enqueue(hk_call_t *call, void *data) {
  service_t *svc = data;
  int64_t n = 0;
  if (hk_call_integer(call, 0, &n) != 0 || n < 1 || n > 1000)
    return hk_call_error(call, "expected a job count from 1 to 1000");
  pthread_mutex_lock(&svc->lock);
  int depth = svc->queued += (int)n;
  pthread_mutex_unlock(&svc->lock);
  hk_gauge_set(svc->queue_depth, NULL, depth);
  return hk_call_push_integer(call, depth);
}

/* hk.native.stats() -> {queued = n, processed = n, version = "..."} */
static int native_stats(hk_call_t *call, void *data) {
  service_t *svc = data;
  char json[160];
  pthread_mutex_lock(&svc->lock);
  snprintf(json, sizeof json, "{\"queued\":%d,\"processed\":%ld,\"version\":\"%s\"}", svc->queued, svc->processed,
           hk_version());
  pthread_mutex_unlock(&svc->lock);
  return hk_call_push_json(call, json, strlen(json));
}

/* hk.native.lookup(name) -> a user record, or a Lua error for an unknown name. */
static int native_lookup(hk_call_t *call, void *data) {
  (void)data;
  const char *name;
  size_t len;
  if (hk_call_string(call, 0, &name, &len) != 0) return hk_call_error(call, "expected a name (a string)");
  static const char *const users[] = {"ada", "grace", "linus"};
  for (size_t i = 0; i < sizeof users / sizeof users[0]; i++) {
    if (strlen(users[i]) == len && memcmp(users[i], name, len) == 0) {
      char json[96];
      snprintf(json, sizeof json, "{\"name\":\"%s\",\"id\":%zu}", users[i], i + 1);
      return hk_call_push_json(call, json, strlen(json));
    }
  }
  return hk_call_error(call, "no such user: %.*s", (int)(len > 64 ? 64 : len), name);
}

/* ---- a C health check ------------------------------------------------------------------------ */

static int check_queue(void *data, char *detail, size_t size) {
  service_t *svc = data;
  pthread_mutex_lock(&svc->lock);
  int depth = svc->queued;
  pthread_mutex_unlock(&svc->lock);
  snprintf(detail, size, "queue_depth=%d", depth);
  return depth > QUEUE_WARN_DEPTH ? HK_HEALTH_DEGRADED : HK_HEALTH_OK;
}

/* ---- life ------------------------------------------------------------------------------------ */

static void log_sink(const char *line, size_t len, void *data) {
  (void)data;
  fwrite(line, 1, len, stdout);
  fputc('\n', stdout);
  fflush(stdout);
}

/* The host has drained: the service closes its own handles, and uv_run returns. */
static void on_host_stopped(hk_host_t *host, void *data) {
  (void)host;
  service_t *svc = data;
  uv_close((uv_handle_t *)&svc->worker_timer, NULL);
  uv_close((uv_handle_t *)&svc->sigterm, NULL);
  uv_close((uv_handle_t *)&svc->sigint, NULL);
  uv_close((uv_handle_t *)&svc->sighup, NULL);
}

static void on_signal(uv_signal_t *handle, int signum) {
  service_t *svc = handle->data;
  if (signum == SIGHUP) {
    int rc = hk_host_reload(svc->host);
    if (rc != 0) fprintf(stderr, "embed-service: reload: %s\n", hk_strerror(rc));
    return;
  }
  uv_signal_stop(&svc->sighup);
  int rc = hk_host_stop(svc->host); /* attached: returns at once, on_host_stopped follows */
  if (rc != 0 && rc != -EALREADY) fprintf(stderr, "embed-service: stop: %s\n", hk_strerror(rc));
}

static int setup(service_t *svc, const hk_host_config_t *cfg) {
  int rc = hk_host_new(cfg, &svc->host);
  if (rc != 0) return rc;
  if ((rc = hk_counter_new(svc->host, "embed_jobs_processed_total", "Jobs the service has processed.", KIND, 1,
                           &svc->jobs_done)) != 0 ||
      (rc = hk_gauge_new(svc->host, "embed_queue_depth", "Jobs waiting in the service's queue.", NULL, 0,
                         &svc->queue_depth)) != 0 ||
      (rc = hk_native_add(svc->host, "enqueue", native_enqueue, svc)) != 0 ||
      (rc = hk_native_add(svc->host, "stats", native_stats, svc)) != 0 ||
      (rc = hk_native_add(svc->host, "lookup", native_lookup, svc)) != 0)
    return rc;
  hk_health_opts_t health = {.critical = false, .interval_ms = 200};
  return hk_health_add(svc->host, "embed_queue", check_queue, svc, &health);
}

int main(int argc, char **argv) {
  hk_host_config_t cfg;
  hk_host_config_init(&cfg);
  cfg.listen = "127.0.0.1:5000";
  cfg.scripts_dir = "scripts";
  cfg.log_sink = log_sink;
  cfg.drain_timeout_ms = 5000;
  int threads = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--threads") == 0) threads = 1;
    else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) cfg.listen = argv[++i];
    else if (strcmp(argv[i], "--scripts") == 0 && i + 1 < argc) cfg.scripts_dir = argv[++i];
    else {
      fprintf(stderr, "usage: embed-service [--threads] [--listen ADDR:PORT] [--scripts DIR]\n");
      return 2;
    }
  }
  if (threads) cfg.workers = 2;

  service_t svc;
  memset(&svc, 0, sizeof svc);
  pthread_mutex_init(&svc.lock, NULL);
  uv_loop_init(&svc.loop);
  int rc = setup(&svc, &cfg);
  if (rc != 0) {
    fprintf(stderr, "embed-service: %s\n", hk_strerror(rc));
    hk_host_free(svc.host);
    uv_loop_close(&svc.loop);
    return 1;
  }
  uv_timer_init(&svc.loop, &svc.worker_timer);
  svc.worker_timer.data = &svc;
  uv_timer_start(&svc.worker_timer, on_work, 100, 100);
  uv_signal_init(&svc.loop, &svc.sigterm);
  uv_signal_init(&svc.loop, &svc.sigint);
  uv_signal_init(&svc.loop, &svc.sighup);
  svc.sigterm.data = svc.sigint.data = svc.sighup.data = &svc;
  uv_signal_start(&svc.sigterm, on_signal, SIGTERM);
  uv_signal_start(&svc.sigint, on_signal, SIGINT);
  uv_signal_start(&svc.sighup, on_signal, SIGHUP);

  /* Either way on_host_stopped closes the service's handles once Hancock is done: attached,
   * from the loop when the drain is over; on Hancock's threads, from hk_host_stop. */
  hk_host_on_stopped(svc.host, on_host_stopped, &svc);
  if (threads) {
    rc = hk_host_start(svc.host); /* natives now run on Hancock's workers: svc.lock guards */
  } else {
    rc = hk_host_attach(svc.host, &svc.loop);
  }
  if (rc != 0) {
    fprintf(stderr, "embed-service: cannot start: %s\n", hk_strerror(rc));
    on_host_stopped(svc.host, &svc);
    uv_run(&svc.loop, UV_RUN_DEFAULT);
    hk_host_free(svc.host);
    uv_loop_close(&svc.loop);
    return 1;
  }
  fprintf(stderr, "embed-service: serving on port %d (%s)\n", hk_host_port(svc.host),
          threads ? "Hancock's threads" : "attached to the service's loop");
  uv_run(&svc.loop, UV_RUN_DEFAULT); /* until on_host_stopped has closed the last handle */
  hk_host_free(svc.host);
  if (uv_loop_close(&svc.loop) != 0) {
    fprintf(stderr, "embed-service: handles left open on the loop\n");
    svc.exit_status = 1;
  }
  pthread_mutex_destroy(&svc.lock);
  return svc.exit_status;
}
