/* hk_host_metrics: registration of the host's own metrics, the per-request recording, and the
 * process metrics: a sampler that reads /proc/self into a snapshot, on whatever thread the
 * server runs it (off the event loop), and a collector that copies the snapshot at scrape time.
 * Entry points: hk_host_metrics_init, hk_host_metrics_sample, hk_host_metrics_request. */
#include "hk_host_metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "hk_log.h"

/* LLM calls are slow and vary widely (a cold model load takes tens of seconds). */
static const double model_buckets[] = {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120};

static const char *const endpoint_label[] = {"endpoint"};
static const char *const mode_label[] = {"mode"};
static const char *const duration_labels[] = {"method", "endpoint", "status_code"};
static const char *const model_labels[] = {"model", "operation"};
static const char *const rate_limit_labels[] = {"endpoint", "client_id"};
static const char *const version_label[] = {"version"};
static const char *const result_label[] = {"result"};
static const char *const generation_label[] = {"generation"};
static const char *const alert_labels[] = {"alertname", "severity"};

typedef struct family_s {
  hk_metric_t **slot;
  hk_metric_opts_t opts;
} family_t;

#define LABELS(array) (array), (sizeof(array) / sizeof((array)[0]))

/* ---- process sampler ----------------------------------------------------------------------- */

static double clock_ticks(void) {
  long ticks = sysconf(_SC_CLK_TCK);
  return ticks > 0 ? (double)ticks : 100.0;
}

/* Fields 14, 15 (utime, stime) and 22 (starttime) of /proc/self/stat, after the comm field
 * (which may contain spaces and parentheses, so parsing starts after its last ')'). */
static int read_proc_stat(double *cpu_seconds, double *start_ticks) {
  char buf[1024];
  FILE *f = fopen("/proc/self/stat", "r");
  if (f == NULL) return -errno;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char *p = strrchr(buf, ')');
  if (p == NULL) return -EINVAL;
  unsigned long long utime = 0, stime = 0, start = 0;
  /* After ')': state(3) ppid … utime(14) stime(15) … starttime(22). */
  int field = 2;
  for (const char *q = p + 1; *q; q++) {
    if (*q != ' ') continue;
    field++;
    if (field == 14) utime = strtoull(q + 1, NULL, 10);
    else if (field == 15) stime = strtoull(q + 1, NULL, 10);
    else if (field == 22) {
      start = strtoull(q + 1, NULL, 10);
      break;
    }
  }
  double hz = clock_ticks();
  *cpu_seconds = (double)(utime + stime) / hz;
  *start_ticks = (double)start;
  return 0;
}

static double boot_time_seconds(void) {
  FILE *f = fopen("/proc/stat", "r");
  if (f == NULL) return 0;
  char line[256];
  double btime = 0;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "btime ", 6) == 0) {
      btime = strtod(line + 6, NULL);
      break;
    }
  }
  fclose(f);
  return btime;
}

static int resident_bytes(double *out) {
  FILE *f = fopen("/proc/self/statm", "r");
  if (f == NULL) return -errno;
  unsigned long long size = 0, resident = 0;
  int got = fscanf(f, "%llu %llu", &size, &resident);
  fclose(f);
  if (got != 2) return -EINVAL;
  *out = (double)resident * (double)sysconf(_SC_PAGESIZE);
  return 0;
}

/* The kernel's record for getdents64(2), which glibc declares only as struct dirent64. */
typedef struct linux_dirent64_s {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
} linux_dirent64_t;

/* Entries of /proc/self/fd, read with getdents64 into one 32 KiB buffer per call (~1,300
 * descriptors), not readdir's one call per 32 entries: a server with 10,000 connections pays
 * about eight system calls. */
static int open_fds(double *out) {
  int dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return -errno;
  _Alignas(linux_dirent64_t) char buf[32768];
  long count = 0;
  int rc = 0;
  for (;;) {
    long n = syscall(SYS_getdents64, dir, buf, sizeof buf);
    if (n < 0) {
      rc = -errno;
      break;
    }
    if (n == 0) break;
    for (long at = 0; at < n;) {
      const linux_dirent64_t *entry = (const linux_dirent64_t *)(buf + at);
      if (entry->d_name[0] != '.') count++;
      at += entry->d_reclen;
    }
  }
  close(dir);
  if (rc == 0) *out = (double)(count - 1); /* the descriptor this function holds */
  return rc;
}

static uint64_t monotonic_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int hk_host_metrics_sample(hk_host_metrics_t *host) {
  hk_host_metrics_snapshot_t *snap = &host->snapshot;
  double rss = 0, cpu = 0, start_ticks = 0, fds = 0;
  int rc = resident_bytes(&rss);
  if (rc == 0) atomic_store_explicit(&snap->resident_bytes, rss, memory_order_relaxed);
  int step = read_proc_stat(&cpu, &start_ticks);
  if (step == 0) atomic_store_explicit(&snap->cpu_seconds, cpu, memory_order_relaxed);
  if (rc == 0) rc = step;
  step = open_fds(&fds);
  if (step == 0) atomic_store_explicit(&snap->open_fds, fds, memory_order_relaxed);
  if (rc == 0) rc = step;
  /* Published last, with release: a collector that sees the time sees the values. A clock at
   * 0 ms would read as "never sampled"; 1 is as good. */
  uint64_t now = monotonic_ms();
  atomic_store_explicit(&snap->sampled_at_ms, now ? now : 1, memory_order_release);
  return rc;
}

/* ---- process collector --------------------------------------------------------------------- */

static void set_gauge(hk_metric_t *metric, double value) {
  hk_series_gauge_set(hk_metric_series(metric, NULL, 0), value);
}

/* Counters whose running total is read from elsewhere (the kernel, hk_log) move forward by the
 * difference, written to the collector's own cell so no worker's cell has a second writer. */
static void advance_counter(hk_host_metrics_t *host, hk_metric_t *metric, double total) {
  hk_series_t *series = hk_metric_series(metric, NULL, 0);
  double delta = total - hk_series_value(series);
  if (delta > 0) hk_series_add(series, host->collector_cell, delta);
}

/* Copies the snapshot: no file is read at scrape time unless the sampler is not running (never
 * sampled, or nothing for HK_HOST_METRICS_STALE_MS — a one-shot command, an embedder without a
 * timer), in which case this samples once itself so the values still move. */
static void collect_process(hk_metrics_t *registry, void *data) {
  (void)registry;
  hk_host_metrics_t *host = data;
  hk_host_metrics_snapshot_t *snap = &host->snapshot;
  uint64_t at = atomic_load_explicit(&snap->sampled_at_ms, memory_order_acquire);
  if (at == 0 || monotonic_ms() - at > HK_HOST_METRICS_STALE_MS) hk_host_metrics_sample(host);
  double rss = atomic_load_explicit(&snap->resident_bytes, memory_order_relaxed);
  set_gauge(host->process_resident_memory, rss);
  set_gauge(host->memory_usage, rss);
  advance_counter(host, host->process_cpu_seconds,
                  atomic_load_explicit(&snap->cpu_seconds, memory_order_relaxed));
  advance_counter(host, host->log_lines_dropped, (double)hk_log_dropped());
  set_gauge(host->process_open_fds, atomic_load_explicit(&snap->open_fds, memory_order_relaxed));
}

/* ---- registration ------------------------------------------------------------------------- */

int hk_host_metrics_init(hk_host_metrics_t *host, hk_metrics_t *registry, unsigned collector_cell,
                         char *err, size_t errsize) {
  memset(host, 0, sizeof *host);
  atomic_init(&host->snapshot.resident_bytes, 0.0);
  atomic_init(&host->snapshot.cpu_seconds, 0.0);
  atomic_init(&host->snapshot.open_fds, 0.0);
  atomic_init(&host->snapshot.sampled_at_ms, 0);
  host->registry = registry;
  host->collector_cell = collector_cell;
  const family_t families[] = {
      {&host->requests_total, {HK_METRIC_COUNTER, "hancock_requests_total",
                               "Requests answered, all endpoints and statuses.", NULL, 0, NULL, 0, 0, 0}},
      {&host->errors_total, {HK_METRIC_COUNTER, "hancock_errors_total",
                             "Requests answered with a status of 400 or more.", NULL, 0, NULL, 0, 0, 0}},
      {&host->requests_by_endpoint,
       {HK_METRIC_COUNTER, "hancock_requests_by_endpoint",
        "Requests by route pattern (unmatched for paths no route matches).", LABELS(endpoint_label),
        NULL, 0, 0, HK_METRIC_LEGACY_COUNTER_NAME}},
      {&host->requests_by_mode,
       {HK_METRIC_COUNTER, "hancock_requests_by_mode", "Requests by specialist mode (req.mode).",
        LABELS(mode_label), NULL, 0, 0, HK_METRIC_LEGACY_COUNTER_NAME}},
      {&host->request_duration,
       {HK_METRIC_HISTOGRAM, "hancock_request_duration_seconds",
        "Time from a complete request to its response, by method, route pattern and status.",
        LABELS(duration_labels), NULL, 0, 0, 0}},
      {&host->model_response_time,
       {HK_METRIC_HISTOGRAM, "hancock_model_response_time_seconds",
        "LLM backend response time by model and operation (mode).", LABELS(model_labels),
        model_buckets, sizeof model_buckets / sizeof model_buckets[0], 0, 0}},
      {&host->rate_limit_exceeded,
       {HK_METRIC_COUNTER, "hancock_rate_limit_exceeded_total",
        "Requests refused by the rate limiter, by route pattern and client.",
        LABELS(rate_limit_labels), NULL, 0, 0, 0}},
      {&host->memory_usage, {HK_METRIC_GAUGE, "hancock_memory_usage_bytes",
                             "Resident set size of the Hancock process.", NULL, 0, NULL, 0, 0, 0}},
      {&host->active_connections, {HK_METRIC_GAUGE, "hancock_active_connections",
                                   "Open client connections.", NULL, 0, NULL, 0, 0, 0}},
      {&host->connections_rejected,
       {HK_METRIC_COUNTER, "hancock_connections_rejected_total",
        "Connections closed at once because --max-connections were open.", NULL, 0, NULL, 0, 0, 0}},
      {&host->log_lines_dropped,
       {HK_METRIC_COUNTER, "hancock_log_lines_dropped_total",
        "Log lines dropped because stdout could not keep up.", NULL, 0, NULL, 0, 0, 0}},
      {&host->process_resident_memory,
       {HK_METRIC_GAUGE, "process_resident_memory_bytes", "Resident memory size in bytes.", NULL, 0,
        NULL, 0, 0, 0}},
      {&host->process_cpu_seconds,
       {HK_METRIC_COUNTER, "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
        NULL, 0, NULL, 0, 0, 0}},
      {&host->process_open_fds, {HK_METRIC_GAUGE, "process_open_fds", "Number of open file descriptors.",
                                 NULL, 0, NULL, 0, 0, 0}},
      {&host->process_max_fds, {HK_METRIC_GAUGE, "process_max_fds",
                                "Maximum number of open file descriptors.", NULL, 0, NULL, 0, 0, 0}},
      {&host->process_start_time,
       {HK_METRIC_GAUGE, "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.", NULL, 0, NULL, 0, 0, 0}},
      {&host->reloads, {HK_METRIC_COUNTER, "hancock_reloads_total",
                        "Script reloads by result (success or failure).", LABELS(result_label), NULL, 0, 0, 0}},
      {&host->last_reload_successful,
       {HK_METRIC_GAUGE, "hancock_config_last_reload_successful",
        "1 when the last script reload (or the start-up load) succeeded, else 0.", NULL, 0, NULL, 0, 0, 0}},
      {&host->last_reload_timestamp,
       {HK_METRIC_GAUGE, "hancock_config_last_reload_success_timestamp_seconds",
        "When the scripts serving now were loaded (seconds since the epoch).", NULL, 0, NULL, 0, 0, 0}},
      {&host->script_generation, {HK_METRIC_GAUGE, "hancock_script_generation",
                                  "Generation of the scripts serving now (1 at start, +1 per reload).",
                                  NULL, 0, NULL, 0, 0, 0}},
      {&host->lua_memory, {HK_METRIC_GAUGE, "hancock_lua_memory_bytes",
                           "Memory held by Lua: the serving generation (current) and generations "
                           "still finishing requests after a reload (retiring).",
                           LABELS(generation_label), NULL, 0, 0, 0}},
      {&host->build_info, {HK_METRIC_GAUGE, "hancock_build_info",
                           "Always 1; the version label says which build is running.",
                           LABELS(version_label), NULL, 0, 0, 0}},
      {&host->alerts_firing,
       {HK_METRIC_GAUGE, "hancock_alerts_firing",
        "In-process alerts firing now, by rule (the hk.alert rules evaluated in the host).",
        LABELS(alert_labels), NULL, 0, 0, 0}},
      {&host->alerts_pending,
       {HK_METRIC_GAUGE, "hancock_alerts_pending",
        "In-process alerts pending (their for: not yet over), by rule.", LABELS(alert_labels), NULL,
        0, 0, 0}},
      {&host->alert_evaluations,
       {HK_METRIC_COUNTER, "hancock_alert_evaluations_total",
        "In-process rule evaluations, by result (ok, error).", LABELS(result_label), NULL, 0, 0, 0}},
      {&host->alert_notifications,
       {HK_METRIC_COUNTER, "hancock_alert_notifications_total",
        "Batches of alerts sent to Alertmanager, by result (ok, error).", LABELS(result_label), NULL,
        0, 0, 0}},
  };
  for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
    int rc = hk_metrics_register(registry, &families[i].opts, families[i].slot, err, errsize);
    if (rc != 0) return rc;
  }
  host->requests_total_series = hk_metric_series(host->requests_total, NULL, 0);
  host->errors_total_series = hk_metric_series(host->errors_total, NULL, 0);
  /* Present from the first scrape, so rate() and absent() behave before any traffic. */
  hk_metric_series(host->connections_rejected, NULL, 0);
  hk_metric_series(host->active_connections, NULL, 0);
  hk_metric_series(host->log_lines_dropped, NULL, 0);

  struct rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0)
    set_gauge(host->process_max_fds, limit.rlim_cur == RLIM_INFINITY ? -1 : (double)limit.rlim_cur);
  double cpu = 0, start_ticks = 0;
  double start = (double)time(NULL);
  if (read_proc_stat(&cpu, &start_ticks) == 0 && boot_time_seconds() > 0)
    start = boot_time_seconds() + start_ticks / clock_ticks();
  set_gauge(host->process_start_time, start);
  for (const char *const *r = (const char *const[]){"success", "failure", NULL}; *r; r++)
    hk_metric_series_str(host->reloads, r, 1);
  set_gauge(host->last_reload_successful, 1);
  set_gauge(host->last_reload_timestamp, (double)time(NULL));
  set_gauge(host->script_generation, 1);
  const char *version = HK_VERSION;
  hk_series_gauge_set(hk_metric_series_str(host->build_info, &version, 1), 1);
  return hk_metrics_add_collector(registry, collect_process, host);
}

/* ---- the request path --------------------------------------------------------------------- */

const char *hk_host_metrics_method_label(const char *method, size_t len) {
  static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
    if (strlen(known[i]) == len && memcmp(known[i], method, len) == 0) return known[i];
  }
  return "other";
}

void hk_host_metrics_request(hk_host_metrics_t *host, unsigned worker, const char *method,
                             size_t method_len, const char *endpoint, int status,
                             const char *mode, double seconds,
                             const hk_exemplar_label_t *exemplar, size_t exemplar_count) {
  hk_series_add(host->requests_total_series, worker, 1);
  if (status >= 400) hk_series_add(host->errors_total_series, worker, 1);
  hk_series_add(hk_metric_series_str(host->requests_by_endpoint, &endpoint, 1), worker, 1);
  if (mode != NULL && mode[0] != '\0')
    hk_series_add(hk_metric_series_str(host->requests_by_mode, &mode, 1), worker, 1);
  char code[8];
  snprintf(code, sizeof code, "%d", status);
  const char *labels[] = {hk_host_metrics_method_label(method, method_len), endpoint, code};
  hk_series_t *duration = hk_metric_series_str(host->request_duration, labels, 3);
  if (exemplar != NULL && exemplar_count > 0)
    (void)hk_series_observe_exemplar(duration, worker, seconds, exemplar, exemplar_count);
  else
    hk_series_observe(duration, worker, seconds);
}

void hk_host_metrics_reload(hk_host_metrics_t *host, unsigned collector_cell, bool success,
                            unsigned generation) {
  const char *result = success ? "success" : "failure";
  hk_series_add(hk_metric_series_str(host->reloads, &result, 1), collector_cell, 1);
  set_gauge(host->last_reload_successful, success ? 1 : 0);
  if (success) {
    set_gauge(host->last_reload_timestamp, (double)time(NULL));
    set_gauge(host->script_generation, generation);
  }
}
