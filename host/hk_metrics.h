/* hk_metrics: the metric registry. Owns families (counters, gauges, histograms) with label names
 * fixed at registration, their series, and the per-worker cells the hot path writes. Knows
 * nothing of HTTP or Lua: hk_prom renders it, hk_lua exposes it to scripts, the server feeds it.
 *
 * Concurrency contract:
 * - Registration and series creation take the registry's mutex.
 * - Finding an existing series is lock-free (an append-only hash table published with
 *   release/acquire atomics), so the hot path never takes a lock.
 * - Counter and histogram updates write only the calling worker's cell with plain relaxed
 *   load + store (single writer per cell: no read-modify-write shared between workers); a
 *   scrape sums the cells. Gauges are one shared atomic value (set/add), as they are rare.
 * - Families and series are never freed before hk_metrics_free, so pointers stay valid and a
 *   script reload keeps every value. That is why script-registered families are capped
 *   (HK_METRICS_DEFAULT_FAMILY_CAP) and help texts bounded (HK_METRICS_MAX_HELP): a script
 *   naming families from request input would otherwise grow the registry and every scrape
 *   without bound. */
#ifndef HK_METRICS_H
#define HK_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HK_METRICS_MAX_LABELS 8
#define HK_METRICS_MAX_BUCKETS 64
#define HK_METRICS_MAX_WORKERS 64
#define HK_METRICS_DEFAULT_SERIES_CAP 1000
#define HK_METRICS_MAX_LABEL_VALUE 256 /* longer label values are truncated (bytes) */
#define HK_METRICS_DEFAULT_FAMILY_CAP 1000 /* families registered with HK_METRIC_SCRIPT */
#define HK_METRICS_MAX_HELP 1024 /* bytes of help text; longer is refused (-E2BIG) */
/* Exemplars (OpenMetrics): at most this many labels, 128 code points of names and values
 * together (the OpenMetrics limit) and this many bytes of them. */
#define HK_METRICS_EXEMPLAR_MAX_LABELS 4
#define HK_METRICS_EXEMPLAR_MAX_RUNES 128
#define HK_METRICS_EXEMPLAR_MAX_BYTES 256

typedef enum hk_metric_type_e {
  HK_METRIC_COUNTER,
  HK_METRIC_GAUGE,
  HK_METRIC_HISTOGRAM,
} hk_metric_type_t;

enum {
  /* A counter whose name does not end in _total, kept for compatibility (the original
   * service's hancock_requests_by_endpoint / _by_mode). Text format: TYPE counter; OpenMetrics:
   * TYPE unknown under the same name, since OpenMetrics counters must end in _total. */
  HK_METRIC_LEGACY_COUNTER_NAME = 1 << 0,
  /* A registration option, not part of the family: registered on a script's behalf, so a new
   * family counts against the registry's family cap (hk_metrics_set_family_cap). The core
   * registers without it and is never refused by the cap, so its own families always fit. An
   * existing family is returned whatever this flag says (re-registration ignores it). */
  HK_METRIC_SCRIPT = 1 << 1,
};

typedef struct hk_metrics_s hk_metrics_t;
typedef struct hk_metric_s hk_metric_t;
typedef struct hk_series_s hk_series_t;

typedef struct hk_label_value_s {
  const char *str; /* need not be NUL-terminated */
  size_t len;
} hk_label_value_t;

typedef struct hk_metric_opts_s {
  hk_metric_type_t type;
  const char *name; /* [a-zA-Z_:][a-zA-Z0-9_:]* ; counters end in _total unless flagged */
  const char *help;
  const char *const *labels; /* [a-zA-Z_][a-zA-Z0-9_]*, not starting with __, not "le" for histograms */
  size_t label_count;
  const double *buckets; /* histograms: strictly increasing, finite; NULL = Prometheus defaults */
  size_t bucket_count;
  size_t series_cap; /* 0 = HK_METRICS_DEFAULT_SERIES_CAP */
  unsigned flags;
} hk_metric_opts_t;

/* `workers` is the number of cells per series (1..HK_METRICS_MAX_WORKERS), else -EINVAL.
 * The new registry already holds its own three families, which every exposition shows:
 * hancock_metric_series_dropped_total{metric} (counter) and hancock_metric_series{metric}
 * (gauge, refreshed by a built-in collector), each with a series per registered family, created
 * at registration so both start at 0; and hancock_metric_families_refused_total{reason}
 * (counter; reason is family_cap or help_too_long, both present from the start), counting
 * registrations refused by the limits below. Only the registry writes them. */
int hk_metrics_new(unsigned workers, hk_metrics_t **out);
void hk_metrics_free(hk_metrics_t *metrics); /* NULL is a no-op */

/* Registers a family, or returns the existing one when name, type, labels and buckets are the
 * same (help may differ; the first stays). A conflicting re-registration is -EEXIST, an invalid
 * name, label or bucket list -EINVAL; both write a sentence for the script author into err.
 * Limits, each refusal counted in hancock_metric_families_refused_total{reason} and logged as a
 * `metric_family_refused` warning the first time per reason: help text longer than
 * HK_METRICS_MAX_HELP bytes is -E2BIG (reason help_too_long; also for an existing family's
 * name), and a new family registered with HK_METRIC_SCRIPT once the registry holds its cap of
 * such families is -ENOSPC (reason family_cap); err names the metric and the limit.
 * Also: names are at most 255 bytes (a render cursor holds one); help must be valid UTF-8;
 * HK_METRIC_LEGACY_COUNTER_NAME is for counters only; flags must match on re-registration,
 * series_cap need not (the first stays). A family whose exposition would reuse a name another
 * family writes is -EEXIST: histogram h owns h_bucket, h_sum and h_count, and counter x_total
 * is the OpenMetrics family x. err may be NULL. */
int hk_metrics_register(hk_metrics_t *metrics, const hk_metric_opts_t *opts, hk_metric_t **out,
                        char *err, size_t errsize);

hk_metric_t *hk_metrics_find(hk_metrics_t *metrics, const char *name);

/* How many families registered with HK_METRIC_SCRIPT the registry accepts (default
 * HK_METRICS_DEFAULT_FAMILY_CAP). Lowering it below the current count refuses new ones only. */
void hk_metrics_set_family_cap(hk_metrics_t *metrics, size_t cap);

/* The series for these label values (count must equal the family's label count), created on
 * first use. Returns NULL when the family is at its series cap — the values are not stored;
 * they are counted in hancock_metric_series_dropped_total{metric} and logged once per family —
 * or when memory runs out. Values are copied after normalisation, which is also the lookup
 * key: cut to HK_METRICS_MAX_LABEL_VALUE bytes on a character boundary, and each byte that is
 * not part of valid UTF-8 replaced by U+FFFD (one invalid value would fail the whole scrape).
 * A value {NULL, 0} is "". Safe from any thread; finding an existing series takes no lock. */
hk_series_t *hk_metric_series(hk_metric_t *metric, const hk_label_value_t *values, size_t count);

/* The same with NUL-terminated values. */
hk_series_t *hk_metric_series_str(hk_metric_t *metric, const char *const *values, size_t count);

/* Hot path. `worker` is the caller's worker index (< workers). NULL series are ignored, so a
 * dropped series costs nothing further. Counter adds that are negative or NaN are ignored, NaN
 * observations too; hk_series_add on a gauge adds to it; other updates of the wrong type and
 * out-of-range workers are ignored (and assert in debug builds). */
void hk_series_add(hk_series_t *series, unsigned worker, double value); /* counter: value >= 0 */
void hk_series_observe(hk_series_t *series, unsigned worker, double value); /* histogram */
void hk_series_gauge_set(hk_series_t *series, double value);
void hk_series_gauge_add(hk_series_t *series, double value);

/* One label of an exemplar: a label name ([a-zA-Z_][a-zA-Z0-9_]*, NUL-terminated) and a value
 * (valid UTF-8, not necessarily NUL-terminated). */
typedef struct hk_exemplar_label_s {
  const char *name;
  hk_label_value_t value;
} hk_exemplar_label_t;

/* Whether name is a label name as the registry takes one: [a-zA-Z_][a-zA-Z0-9_]*. */
bool hk_metrics_label_name_valid(const char *name);

/* Whether labels make an exemplar the registry stores (pure; hk_series_observe_exemplar checks
 * the same): 0; -EINVAL when count is 0 or over HK_METRICS_EXEMPLAR_MAX_LABELS, a name is not a
 * label name or repeats, or a value is not valid UTF-8; -E2BIG past HK_METRICS_EXEMPLAR_MAX_RUNES
 * code points or HK_METRICS_EXEMPLAR_MAX_BYTES bytes of names and values together (lengths are
 * checked first, so a value too long and not UTF-8 is -E2BIG). */
int hk_metrics_exemplar_check(const hk_exemplar_label_t *labels, size_t count);

/* hk_series_observe, and the observation becomes the exemplar of the bucket it falls in: each
 * bucket of each series keeps its latest exemplar (value, labels, wall-clock time), which the
 * OpenMetrics exposition shows after the bucket's line; the text format never does. Storage
 * for a series' exemplars is allocated on its first exemplar, (bucket_count + 1) slots of
 * about 300 bytes, freed with the registry, so a family's exemplars are bounded by its series
 * cap. The labels are copied; the caller keeps its own.
 * The observation is counted whatever the exemplar's fate; the exemplar is stored when this
 * returns 0. Else: hk_metrics_exemplar_check's codes; -EBUSY when another thread was writing
 * the same bucket's exemplar at that instant (its one is kept: both are as recent); -ENOMEM;
 * and -EINVAL, without counting, where hk_series_observe ignores the update (NULL series, not
 * a histogram, NaN, bad worker). Safe from any thread and lock-free: writers never wait for
 * each other or for a scrape, and a scrape never waits for a writer. */
int hk_series_observe_exemplar(hk_series_t *series, unsigned worker, double value,
                               const hk_exemplar_label_t *labels, size_t count);

/* ---- reading (for hk_prom and tests) ------------------------------------------------------ */

/* A collector runs before every render on the rendering thread: it refreshes gauges that are
 * read from elsewhere (resident memory, open connections, process metrics). */
typedef void (*hk_metrics_collect_cb)(hk_metrics_t *metrics, void *data);
/* At most 64 collectors at a time (-ENOSPC after). They run without the registry lock, so they
 * may register families and create series, and one at a time: hk_metrics_collect serialises
 * concurrent scrapes, so a collector may own a cell (e.g. index `workers - 1`) as its writer. A
 * collector must not call hk_metrics_collect (or render) itself. */
int hk_metrics_add_collector(hk_metrics_t *metrics, hk_metrics_collect_cb collect, void *data);
/* Removes the collector added with this callback and data (the first such, if added twice):
 * 0, -ENOENT when there is none, -EINVAL for NULLs. It waits for a collect that is running to
 * finish and no later collect calls it, so `data` may be freed once this returns — call it
 * before freeing what a collector reads (a server that goes away before its registry). Called
 * from a collector it would wait for itself: -EDEADLK. */
int hk_metrics_remove_collector(hk_metrics_t *metrics, hk_metrics_collect_cb collect, void *data);
void hk_metrics_collect(hk_metrics_t *metrics);

/* Families in name order. The index is stable across calls (a family registered later may be
 * inserted before it in name order, so a renderer that works in slices keeps the name of the
 * last family it wrote, see hk_metrics_family_after). */
size_t hk_metrics_family_count(const hk_metrics_t *metrics);
hk_metric_t *hk_metrics_family_at(hk_metrics_t *metrics, size_t index);
/* The first family whose name sorts after `name` (NULL name: the first); NULL at the end. */
hk_metric_t *hk_metrics_family_after(hk_metrics_t *metrics, const char *name);

const char *hk_metric_name(const hk_metric_t *metric);
const char *hk_metric_help(const hk_metric_t *metric);
hk_metric_type_t hk_metric_type(const hk_metric_t *metric);
const char *hk_metric_type_name(hk_metric_type_t type); /* "counter", "gauge", "histogram" */
unsigned hk_metric_flags(const hk_metric_t *metric);
size_t hk_metric_label_count(const hk_metric_t *metric);
const char *hk_metric_label_name(const hk_metric_t *metric, size_t index);
size_t hk_metric_bucket_count(const hk_metric_t *metric); /* finite buckets, without +Inf */
double hk_metric_bucket(const hk_metric_t *metric, size_t index);

/* Series in creation order; the count only grows. */
size_t hk_metric_series_count(const hk_metric_t *metric);
hk_series_t *hk_metric_series_at(hk_metric_t *metric, size_t index);

hk_label_value_t hk_series_label(const hk_series_t *series, size_t index);
/* Counters and gauges: the sum of the cells (gauges: the value). Histograms: the count. */
double hk_series_value(const hk_series_t *series);
/* Histograms: per-bucket counts (not cumulative; bucket_count + 1 entries, the last is +Inf),
 * sum and count, summed over workers into caller arrays. */
void hk_series_histogram(const hk_series_t *series, uint64_t *bucket_counts, double *sum,
                         uint64_t *count);

/* A copy of one bucket's exemplar; the names and values point into `bytes`. */
typedef struct hk_exemplar_s {
  double value;
  double timestamp; /* seconds since the epoch (CLOCK_REALTIME at the observation) */
  size_t count;
  hk_label_value_t names[HK_METRICS_EXEMPLAR_MAX_LABELS];
  hk_label_value_t values[HK_METRICS_EXEMPLAR_MAX_LABELS];
  char bytes[HK_METRICS_EXEMPLAR_MAX_BYTES];
} hk_exemplar_t;

/* Copies the latest exemplar of bucket `bucket` (0..bucket_count, the last is +Inf) into *out:
 * true, or false when the bucket has none (or the series is not a histogram). A copy taken
 * while a writer replaces it is retried, so it is always one whole exemplar; a bucket that a
 * writer holds through a thousand retries (one preempted mid-write) reads as none, rather
 * than the scrape waiting for it. */
bool hk_series_exemplar(const hk_series_t *series, size_t bucket, hk_exemplar_t *out);

#endif
