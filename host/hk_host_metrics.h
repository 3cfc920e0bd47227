/* hk_host_metrics: the metrics every Hancock exposes without a script — the original service's
 * names, exactly — plus the conventional process and build metrics. Registers them in an
 * hk_metrics registry, records each request's outcome, and keeps the process metrics from a
 * snapshot that hk_host_metrics_sample refreshes off the event loop, so a scrape only copies
 * numbers. The server calls it; scripts see the same families through hk.metrics. */
#ifndef HK_HOST_METRICS_H
#define HK_HOST_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hk_metrics.h"

/* How often the server should sample, and when the collector stops trusting the snapshot. */
#define HK_HOST_METRICS_SAMPLE_INTERVAL_MS 1000
#define HK_HOST_METRICS_STALE_MS (5 * HK_HOST_METRICS_SAMPLE_INTERVAL_MS)

/* The process values as last sampled (atomics: written by the sampler's thread, read by the
 * collector's). sampled_at_ms is CLOCK_MONOTONIC milliseconds, 0 before the first sample. */
typedef struct hk_host_metrics_snapshot_s {
  _Atomic double resident_bytes;
  _Atomic double cpu_seconds;
  _Atomic double open_fds;
  _Atomic uint64_t sampled_at_ms;
} hk_host_metrics_snapshot_t;

typedef struct hk_host_metrics_s {
  hk_metrics_t *registry;
  hk_metric_t *requests_total;
  hk_metric_t *errors_total;
  hk_metric_t *requests_by_endpoint;
  hk_metric_t *requests_by_mode;
  hk_metric_t *request_duration;
  hk_metric_t *model_response_time;
  hk_metric_t *rate_limit_exceeded;
  hk_metric_t *memory_usage;
  hk_metric_t *active_connections;
  hk_metric_t *connections_rejected;
  hk_metric_t *log_lines_dropped;
  hk_metric_t *process_resident_memory;
  hk_metric_t *process_cpu_seconds;
  hk_metric_t *process_open_fds;
  hk_metric_t *process_max_fds;
  hk_metric_t *process_start_time;
  hk_metric_t *build_info;
  hk_metric_t *reloads;                 /* hancock_reloads_total{result} */
  hk_metric_t *last_reload_successful;  /* hancock_config_last_reload_successful */
  hk_metric_t *last_reload_timestamp;   /* hancock_config_last_reload_success_timestamp_seconds */
  hk_metric_t *script_generation;       /* hancock_script_generation */
  hk_metric_t *lua_memory;              /* hancock_lua_memory_bytes{generation} */
  /* The in-process alert evaluator's (lua/hancock/alerting.lua sets them through
   * hk.metrics.get): registered here so they are the host's own families, not a share of the
   * scripts' family cap. */
  hk_metric_t *alerts_firing;           /* hancock_alerts_firing{alertname,severity} */
  hk_metric_t *alerts_pending;          /* hancock_alerts_pending{alertname,severity} */
  hk_metric_t *alert_evaluations;       /* hancock_alert_evaluations_total{result} */
  hk_metric_t *alert_notifications;     /* hancock_alert_notifications_total{result} */
  hk_series_t *requests_total_series; /* label-less families: looked up once */
  hk_series_t *errors_total_series;
  unsigned collector_cell; /* the cell index the collector writes (one past the workers') */
  hk_host_metrics_snapshot_t snapshot;
} hk_host_metrics_t;

/* Registers every family and the process collector. The registry must have a cell for the
 * collector at index `collector_cell` (create it with workers + 1 cells). Returns 0, or a
 * negative code with the registry's message in err. */
int hk_host_metrics_init(hk_host_metrics_t *host, hk_metrics_t *registry, unsigned collector_cell,
                         char *err, size_t errsize);

/* Reads the process metrics — /proc/self/statm (resident memory), /proc/self/stat (CPU time)
 * and the entries of /proc/self/fd (open descriptors, O(open descriptors)) — into the snapshot
 * the collector copies at scrape time. Blocking file reads, so not for the event loop: call it
 * from any thread, e.g. a uv_queue_work callback every HK_HOST_METRICS_SAMPLE_INTERVAL_MS.
 * Concurrent calls are safe (the last one wins). It writes no metric itself, so the collector
 * stays the single writer of its cell. Returns 0, or the first negative errno; values that could
 * be read are stored anyway. Without a sample for HK_HOST_METRICS_STALE_MS, a scrape samples
 * once on its own thread. */
int hk_host_metrics_sample(hk_host_metrics_t *host);

/* Records one answered request. `endpoint` is the route pattern (or "unmatched"), `mode` may be
 * NULL or empty (then requests_by_mode is not touched). The duration's observation becomes the
 * exemplar of its bucket in hancock_request_duration_seconds with the `exemplar` labels (NULL or
 * count 0: none; labels the registry refuses, e.g. past HK_METRICS_EXEMPLAR_MAX_RUNES, are not
 * stored, and the request still counts). */
void hk_host_metrics_request(hk_host_metrics_t *host, unsigned worker, const char *method,
                             size_t method_len, const char *endpoint, int status,
                             const char *mode, double seconds,
                             const hk_exemplar_label_t *exemplar, size_t exemplar_count);

/* Records a reload's outcome; `generation` is the one serving afterwards. */
void hk_host_metrics_reload(hk_host_metrics_t *host, unsigned collector_cell, bool success,
                            unsigned generation);

/* The method label: one of a fixed set, else "other", so clients cannot mint label values. */
const char *hk_host_metrics_method_label(const char *method, size_t len);

#endif
