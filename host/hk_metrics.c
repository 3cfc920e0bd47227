/* hk_metrics: the metric registry — families, their series, and the per-worker cells the hot
 * path writes. Rendering is hk_prom's and the Lua binding hk_lua's; this file knows neither.
 * Entry points: hk_metrics_new, hk_metrics_register, hk_metric_series, hk_series_add/observe,
 * hk_series_observe_exemplar. */
#include "hk_metrics.h"

#include "hk_text.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "hk_log.h"

/* ---- data ----------------------------------------------------------------------------------
 *
 * Memory model. Everything a reader can reach is published once and never moved or freed before
 * hk_metrics_free:
 *
 * - A family's series live in `series_chunks`, an append-only array of geometrically growing
 *   chunks (16, 32, 64, … pointers), so an index maps to a slot in O(1) and a slot, once
 *   written, never moves. Writers fill the slot under the registry lock, then publish
 *   `series_count` with release; readers load the count with acquire.
 * - Lookup goes through an open-addressing hash table of series pointers (linear probing, load
 *   factor <= 1/2). Slots are stored with release and read with acquire, so a reader that sees
 *   a pointer sees the whole series. Growth builds a bigger table, publishes it with release,
 *   and retires the old one to a list freed only by hk_metrics_free, because a reader may still
 *   be probing it. A reader on an old table can miss a new series; it then takes the lock and
 *   finds it in the current table.
 * - Cells (counters: one double; histograms: bucket_count + 1 counts and a sum) live in cell
 *   blocks. A block holds the cells of up to 256 series for every worker: worker w's cells of
 *   the block are contiguous and start on their own 64-byte line, so two workers never write the
 *   same cache line, while one worker's cells are dense (8 bytes per counter, not 64). A series
 *   records its worker-0 cell and the distance between workers' regions.
 *
 * Every cell has a single writer (its worker), which updates it with a relaxed load and a
 * relaxed store; a scrape sums the cells with relaxed loads. The registry's own dropped-series
 * counter gets one extra cell, written only under the registry lock, so no worker shares it.
 *
 * Exemplars are the exception: a histogram bucket's latest exemplar is shared by all workers.
 * A series' exemplar slots are allocated on its first exemplar and published with a
 * compare-and-swap (release; readers load the pointer with acquire), then freed only with the
 * family. Each slot is a seqlock made of atomic words only (exemplar_slot_t), so no access to
 * it is a data race: writers claim it with a compare-and-swap, readers retry a torn copy. */

#define NAME_MAX_LEN        255 /* fits hk_prom_cursor_t.family */
#define SERIES_CHUNK_SHIFT  4
#define SERIES_CHUNK_COUNT  (sizeof(size_t) * 8 - SERIES_CHUNK_SHIFT)
#define CELL_BLOCK_FIRST    8
#define CELL_BLOCK_MAX      256
#define CACHE_LINE          64
#define MAX_COLLECTORS      64
#define INTERNAL_SERIES_CAP 10000

static const double default_buckets[] = {.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10};

typedef struct series_table_s {
  struct series_table_s *retired_next;
  size_t mask;
  _Atomic(hk_series_t *) slots[];
} series_table_t;

/* Cell blocks start with this header on their own cache line; the cells follow. */
typedef struct cell_block_s {
  struct cell_block_s *next;
} cell_block_t;

/* One bucket's latest exemplar, a seqlock over atomic words (so readers and writers on other
 * threads never race on plain memory): `seq` is 0 while empty, odd while a writer fills the
 * slot, and even once it is whole. A writer claims the slot by moving seq from even to odd with
 * a compare-and-swap, so two workers never write it at once (the loser drops its exemplar); a
 * reader copies the words and retries when seq moved meanwhile. `words` holds the label count,
 * each label's name and value lengths, then the names and values (encode_exemplar). */
#define EXEMPLAR_ENCODED_MAX (1 + 2 * HK_METRICS_EXEMPLAR_MAX_LABELS + HK_METRICS_EXEMPLAR_MAX_BYTES)
#define EXEMPLAR_WORDS       ((EXEMPLAR_ENCODED_MAX + 7) / 8)
#define EXEMPLAR_READ_TRIES  1000

typedef struct exemplar_slot_s {
  _Atomic uint64_t seq;
  _Atomic uint64_t value;     /* the double's bits */
  _Atomic uint64_t timestamp; /* the double's bits */
  _Atomic uint64_t length;    /* encoded bytes in `words` */
  _Atomic uint64_t words[EXEMPLAR_WORDS];
} exemplar_slot_t;

struct hk_series_s {
  hk_metric_t *metric;
  _Atomic(exemplar_slot_t *) exemplars; /* histograms: bucket_count + 1 slots, or NULL */
  unsigned char *cells; /* worker 0's cell; NULL for gauges */
  size_t stride;        /* bytes from one worker's cell to the next worker's */
  uint64_t hash;
  unsigned workers; /* valid worker indexes for the hot path */
  hk_metric_type_t type;
  _Atomic double gauge;
  hk_label_value_t labels[]; /* label_count entries; the NUL-terminated copies follow */
};

struct hk_metric_s {
  hk_metrics_t *registry;
  hk_metric_type_t type;
  unsigned flags;
  char *name;
  char *help;
  size_t label_count;
  char *label_names[HK_METRICS_MAX_LABELS];
  size_t bucket_count;
  double buckets[HK_METRICS_MAX_BUCKETS];
  size_t series_cap;

  size_t cell_size;        /* bytes per series per worker (0 for gauges) */
  size_t cells_per_series; /* workers, plus one registry-written cell for the dropped counter */

  /* Lookup (lock-free reads). */
  _Atomic(series_table_t *) table;
  series_table_t *retired_tables;

  /* Iteration (lock-free reads). */
  _Atomic size_t series_count;
  hk_series_t **series_chunks[SERIES_CHUNK_COUNT];

  /* Cell allocation (under the lock). */
  cell_block_t *blocks;
  unsigned char *block_cells;
  size_t block_stride, block_capacity, block_used, next_block_capacity;

  /* The registry's own series about this family (under the lock). */
  hk_series_t *dropped_series; /* hancock_metric_series_dropped_total{metric=name} */
  hk_series_t *count_series;   /* hancock_metric_series{metric=name} */
  bool drop_logged;
};

/* Why a registration was refused and counted in hancock_metric_families_refused_total. */
typedef enum refuse_reason_e {
  REFUSE_FAMILY_CAP,
  REFUSE_HELP_TOO_LONG,
  REFUSE_REASONS,
} refuse_reason_t;

static const char *const refuse_reason_names[REFUSE_REASONS] = {"family_cap", "help_too_long"};

typedef struct collector_s {
  hk_metrics_collect_cb collect;
  void *data;
} collector_t;

struct hk_metrics_s {
  pthread_mutex_t lock;
  pthread_mutex_t collect_lock; /* one hk_metrics_collect at a time (two scrapes at once) */
  unsigned workers;
  uint64_t seed;
  hk_metric_t **families; /* sorted by name (strcmp) */
  size_t family_cap;
  _Atomic size_t family_count;
  collector_t collectors[MAX_COLLECTORS];
  _Atomic size_t collector_count;
  hk_metric_t *dropped_family; /* hancock_metric_series_dropped_total */
  hk_metric_t *count_family;   /* hancock_metric_series */
  hk_metric_t *refused_family; /* hancock_metric_families_refused_total */
  /* Families registered with HK_METRIC_SCRIPT, and how many of them may be (under the lock). */
  size_t script_families;
  size_t script_family_cap;
  hk_series_t *refused[REFUSE_REASONS]; /* refused_family{reason}, by refuse_reason_t */
  bool refusal_logged[REFUSE_REASONS];
};

/* ---- small helpers ------------------------------------------------------------------------ */

static void set_err(char *err, size_t errsize, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errsize, const char *fmt, ...) {
  if (err == NULL || errsize == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errsize, fmt, ap);
  va_end(ap);
}

static char *dup_str(const char *s) {
  size_t len = strlen(s);
  char *copy = malloc(len + 1);
  if (copy != NULL) memcpy(copy, s, len + 1);
  return copy;
}

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

const char *hk_metric_type_name(hk_metric_type_t type) {
  switch (type) {
  case HK_METRIC_COUNTER: return "counter";
  case HK_METRIC_GAUGE: return "gauge";
  case HK_METRIC_HISTOGRAM: return "histogram";
  }
  return "metric";
}

/* Makes one label value what the registry stores: at most HK_METRICS_MAX_LABEL_VALUE bytes, cut
 * on a character boundary, and valid UTF-8 (each invalid byte becomes U+FFFD), because one
 * invalid value makes Prometheus reject the whole scrape. Uses `scratch` only when it must
 * rewrite; otherwise `out` points into the caller's bytes. */
static void normalize_value(hk_label_value_t in, char *scratch, hk_label_value_t *out) {
  const char *str = in.str != NULL ? in.str : "";
  size_t len = in.str != NULL ? in.len : 0;
  size_t cut = len;
  if (cut > HK_METRICS_MAX_LABEL_VALUE) {
    cut = HK_METRICS_MAX_LABEL_VALUE;
    /* str[cut] is the first byte left out: back up while it continues a character. */
    for (int i = 0; i < 3 && cut > 0 && ((unsigned char)str[cut] & 0xC0) == 0x80; i++)
      cut--;
  }
  if (hk_text_utf8_valid(str, cut)) {
    out->str = str;
    out->len = cut;
    return;
  }
  const unsigned char *s = (const unsigned char *)str;
  size_t o = 0;
  for (size_t i = 0; i < len;) {
    uint32_t cp;
    int decoded = hk_text_utf8_decode(s + i, len - i, &cp);
    size_t n = decoded > 0 ? (size_t)decoded : 0; /* each invalid byte becomes one U+FFFD */
    const char *piece = n > 0 ? str + i : "\xEF\xBF\xBD";
    size_t piece_len = n > 0 ? n : 3;
    if (o + piece_len > HK_METRICS_MAX_LABEL_VALUE) break;
    memcpy(scratch + o, piece, piece_len);
    o += piece_len;
    i += n > 0 ? n : 1;
  }
  out->str = scratch;
  out->len = o;
}

static uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

/* FNV-1a over lengths and bytes, seeded per registry and finished with a mixer so linear
 * probing sees well-spread low bits. The series cap bounds any probe chain an attacker could
 * build from request-derived values. */
static uint64_t hash_values(uint64_t seed, const hk_label_value_t *values, size_t count) {
  uint64_t h = 0xcbf29ce484222325ULL ^ seed;
  for (size_t i = 0; i < count; i++) {
    h ^= values[i].len;
    h *= 0x100000001b3ULL;
    const unsigned char *s = (const unsigned char *)values[i].str;
    for (size_t j = 0; j < values[i].len; j++) {
      h ^= s[j];
      h *= 0x100000001b3ULL;
    }
  }
  return mix64(h);
}

static bool series_matches(const hk_series_t *s, uint64_t hash, const hk_label_value_t *values,
                           size_t count) {
  if (s->hash != hash) return false;
  for (size_t i = 0; i < count; i++) {
    if (s->labels[i].len != values[i].len) return false;
    if (values[i].len > 0 && memcmp(s->labels[i].str, values[i].str, values[i].len) != 0)
      return false;
  }
  return true;
}

/* ---- series storage ----------------------------------------------------------------------- */

/* Chunk k holds 16 << k pointers and starts at index 16 * (2^k - 1). */
static void series_slot(size_t index, size_t *chunk, size_t *offset) {
  size_t n = index + ((size_t)1 << SERIES_CHUNK_SHIFT);
  unsigned top = (unsigned)(sizeof(unsigned long long) * 8 - 1) - (unsigned)__builtin_clzll(n);
  *chunk = top - SERIES_CHUNK_SHIFT;
  *offset = n - ((size_t)1 << top);
}

static hk_series_t *table_find(const series_table_t *table, uint64_t hash,
                               const hk_label_value_t *values, size_t count) {
  for (size_t i = hash & table->mask;; i = (i + 1) & table->mask) {
    hk_series_t *s = atomic_load_explicit(&table->slots[i], memory_order_acquire);
    if (s == NULL) return NULL;
    if (series_matches(s, hash, values, count)) return s;
  }
}

static series_table_t *table_new(size_t slots) {
  series_table_t *t = calloc(1, sizeof *t + slots * sizeof t->slots[0]);
  if (t == NULL) return NULL;
  t->mask = slots - 1;
  for (size_t i = 0; i < slots; i++)
    atomic_init(&t->slots[i], NULL);
  return t;
}

/* Under the lock: the slot is free, readers see the series only once it is complete. */
static void table_insert(series_table_t *table, hk_series_t *s) {
  size_t i = s->hash & table->mask;
  while (atomic_load_explicit(&table->slots[i], memory_order_relaxed) != NULL)
    i = (i + 1) & table->mask;
  atomic_store_explicit(&table->slots[i], s, memory_order_release);
}

/* Under the lock: makes room for one more series, keeping the load factor <= 1/2. */
static int table_reserve(hk_metric_t *m, size_t count) {
  series_table_t *old = atomic_load_explicit(&m->table, memory_order_relaxed);
  if ((count + 1) * 2 <= old->mask + 1) return 0;
  if (old->mask + 1 > SIZE_MAX / 2 / sizeof(void *)) return -ENOMEM;
  series_table_t *grown = table_new((old->mask + 1) * 2);
  if (grown == NULL) return -ENOMEM;
  for (size_t i = 0; i < count; i++) {
    size_t chunk, offset;
    series_slot(i, &chunk, &offset);
    table_insert(grown, m->series_chunks[chunk][offset]);
  }
  atomic_store_explicit(&m->table, grown, memory_order_release);
  old->retired_next = m->retired_tables;
  m->retired_tables = old;
  return 0;
}

/* Under the lock: the cells of one more series, zeroed. */
static unsigned char *cells_alloc(hk_metric_t *m, size_t count, size_t *stride) {
  if (m->block_used == m->block_capacity) {
    size_t capacity = m->next_block_capacity;
    size_t remaining = m->series_cap - count;
    if (capacity > remaining) capacity = remaining;
    assert(capacity > 0);
    size_t bytes = capacity * m->cell_size;
    size_t region = (bytes + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE;
    size_t total = CACHE_LINE + region * m->cells_per_series;
    cell_block_t *block = aligned_alloc(CACHE_LINE, total);
    if (block == NULL) return NULL;
    memset(block, 0, total);
    block->next = m->blocks;
    m->blocks = block;
    m->block_cells = (unsigned char *)block + CACHE_LINE;
    m->block_stride = region;
    m->block_capacity = capacity;
    m->block_used = 0;
    if (m->next_block_capacity < CELL_BLOCK_MAX) m->next_block_capacity *= 2;
  }
  *stride = m->block_stride;
  return m->block_cells + m->block_used++ * m->cell_size;
}

/* Families whose first drop happened under the lock, logged once the lock is released (a log
 * enricher may run script code that touches metrics). At most two: a family and, when the
 * dropped counter itself is full, that counter. */
typedef struct drop_logs_s {
  hk_metric_t *family[2];
  size_t count;
} drop_logs_t;

static void drop_series(hk_metric_t *m, drop_logs_t *logs);

/* Under the lock: the series for normalized values, created when missing. */
static hk_series_t *series_get_locked(hk_metric_t *m, const hk_label_value_t *values, uint64_t hash,
                                      drop_logs_t *logs) {
  series_table_t *table = atomic_load_explicit(&m->table, memory_order_relaxed);
  hk_series_t *s = table_find(table, hash, values, m->label_count);
  if (s != NULL) return s;

  size_t count = atomic_load_explicit(&m->series_count, memory_order_relaxed);
  if (count >= m->series_cap) {
    drop_series(m, logs);
    return NULL;
  }
  size_t chunk, offset;
  series_slot(count, &chunk, &offset);
  if (m->series_chunks[chunk] == NULL) {
    m->series_chunks[chunk] = calloc((size_t)1 << (chunk + SERIES_CHUNK_SHIFT), sizeof(void *));
    if (m->series_chunks[chunk] == NULL) return NULL;
  }
  if (table_reserve(m, count) != 0) return NULL;

  size_t bytes = sizeof *s + m->label_count * sizeof s->labels[0];
  for (size_t i = 0; i < m->label_count; i++)
    bytes += values[i].len + 1;
  s = malloc(bytes);
  if (s == NULL) return NULL;
  s->metric = m;
  s->cells = NULL;
  s->stride = 0;
  s->hash = hash;
  s->workers = m->registry->workers;
  s->type = m->type;
  atomic_init(&s->gauge, 0.0);
  atomic_init(&s->exemplars, NULL);
  char *strings = (char *)&s->labels[m->label_count];
  for (size_t i = 0; i < m->label_count; i++) {
    if (values[i].len > 0) memcpy(strings, values[i].str, values[i].len);
    strings[values[i].len] = '\0';
    s->labels[i].str = strings;
    s->labels[i].len = values[i].len;
    strings += values[i].len + 1;
  }
  if (m->cell_size > 0) {
    s->cells = cells_alloc(m, count, &s->stride);
    if (s->cells == NULL) {
      free(s);
      return NULL;
    }
  }
  m->series_chunks[chunk][offset] = s;
  atomic_store_explicit(&m->series_count, count + 1, memory_order_release);
  table_insert(atomic_load_explicit(&m->table, memory_order_relaxed), s);
  return s;
}

/* Under the lock: counts a label set refused at the cap. The dropped counter's own drops are
 * only logged, so this never recurses more than once. */
static void drop_series(hk_metric_t *m, drop_logs_t *logs) {
  hk_metrics_t *r = m->registry;
  if (m != r->dropped_family && r->dropped_family != NULL) {
    hk_series_t *d = m->dropped_series;
    if (d == NULL) {
      hk_label_value_t v = {m->name, strlen(m->name)};
      d = series_get_locked(r->dropped_family, &v, hash_values(r->seed, &v, 1), logs);
      m->dropped_series = d;
    }
    if (d != NULL) {
      /* The registry's own cell (index `workers`), written only under the lock. */
      _Atomic double *cell = (_Atomic double *)(d->cells + (size_t)r->workers * d->stride);
      double v = atomic_load_explicit(cell, memory_order_relaxed);
      atomic_store_explicit(cell, v + 1, memory_order_relaxed);
    }
  }
  if (!m->drop_logged && logs->count < 2) {
    m->drop_logged = true;
    logs->family[logs->count++] = m;
  }
}

/* Without the lock. */
static void log_drops(const drop_logs_t *logs) {
  for (size_t i = 0; i < logs->count; i++) {
    const hk_metric_t *m = logs->family[i];
    hk_log_field_t fields[] = {HK_LOG_S("metric", m->name), HK_LOG_I("cap", m->series_cap)};
    hk_log_event(HK_LOG_WARNING, NULL, "metric_series_dropped",
                 "metric reached its series cap; new label sets are not stored", fields,
                 sizeof fields / sizeof fields[0]);
  }
}

hk_series_t *hk_metric_series(hk_metric_t *metric, const hk_label_value_t *values, size_t count) {
  if (metric == NULL || count != metric->label_count || (count > 0 && values == NULL)) return NULL;
  hk_label_value_t norm[HK_METRICS_MAX_LABELS];
  char scratch[HK_METRICS_MAX_LABELS][HK_METRICS_MAX_LABEL_VALUE];
  for (size_t i = 0; i < count; i++) {
    if (values[i].str == NULL && values[i].len > 0) return NULL;
    normalize_value(values[i], scratch[i], &norm[i]);
  }
  hk_metrics_t *r = metric->registry;
  uint64_t hash = hash_values(r->seed, norm, count);
  series_table_t *table = atomic_load_explicit(&metric->table, memory_order_acquire);
  hk_series_t *s = table_find(table, hash, norm, count);
  if (s != NULL) return s;

  drop_logs_t logs = {{NULL, NULL}, 0};
  pthread_mutex_lock(&r->lock);
  s = series_get_locked(metric, norm, hash, &logs);
  pthread_mutex_unlock(&r->lock);
  log_drops(&logs);
  return s;
}

hk_series_t *hk_metric_series_str(hk_metric_t *metric, const char *const *values, size_t count) {
  if (metric == NULL || count != metric->label_count || count > HK_METRICS_MAX_LABELS ||
      (count > 0 && values == NULL))
    return NULL;
  hk_label_value_t v[HK_METRICS_MAX_LABELS];
  for (size_t i = 0; i < count; i++) {
    if (values[i] == NULL) return NULL;
    v[i].str = values[i];
    v[i].len = strlen(values[i]);
  }
  return hk_metric_series(metric, v, count);
}

/* ---- hot path ----------------------------------------------------------------------------- */

void hk_series_add(hk_series_t *series, unsigned worker, double value) {
  if (series == NULL) return;
  if (series->type == HK_METRIC_GAUGE) {
    hk_series_gauge_add(series, value);
    return;
  }
  assert(series->type == HK_METRIC_COUNTER && worker < series->workers);
  if (series->type != HK_METRIC_COUNTER || worker >= series->workers) return;
  if (!(value >= 0)) return; /* counters only go up; NaN is refused too */
  _Atomic double *cell = (_Atomic double *)(series->cells + worker * series->stride);
  double v = atomic_load_explicit(cell, memory_order_relaxed);
  atomic_store_explicit(cell, v + value, memory_order_relaxed);
}

/* Counts the observation; returns its bucket (bucket_count is +Inf), or SIZE_MAX when the
 * update is ignored. */
static size_t observe(hk_series_t *series, unsigned worker, double value) {
  if (series == NULL) return SIZE_MAX;
  assert(series->type == HK_METRIC_HISTOGRAM && worker < series->workers);
  if (series->type != HK_METRIC_HISTOGRAM || worker >= series->workers || isnan(value))
    return SIZE_MAX;
  const hk_metric_t *m = series->metric;
  /* The first bucket whose upper bound is >= value ("le"); bucket_count is the +Inf bucket. */
  size_t lo = 0, hi = m->bucket_count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (value <= m->buckets[mid])
      hi = mid;
    else
      lo = mid + 1;
  }
  unsigned char *cell = series->cells + worker * series->stride;
  _Atomic uint64_t *counts = (_Atomic uint64_t *)cell;
  _Atomic double *sum = (_Atomic double *)(cell + (m->bucket_count + 1) * sizeof(uint64_t));
  uint64_t c = atomic_load_explicit(&counts[lo], memory_order_relaxed);
  atomic_store_explicit(&counts[lo], c + 1, memory_order_relaxed);
  double s = atomic_load_explicit(sum, memory_order_relaxed);
  atomic_store_explicit(sum, s + value, memory_order_relaxed);
  return lo;
}

void hk_series_observe(hk_series_t *series, unsigned worker, double value) {
  (void)observe(series, worker, value);
}

void hk_series_gauge_set(hk_series_t *series, double value) {
  if (series == NULL) return;
  assert(series->type == HK_METRIC_GAUGE);
  if (series->type != HK_METRIC_GAUGE) return;
  atomic_store_explicit(&series->gauge, value, memory_order_relaxed);
}

void hk_series_gauge_add(hk_series_t *series, double value) {
  if (series == NULL) return;
  assert(series->type == HK_METRIC_GAUGE);
  if (series->type != HK_METRIC_GAUGE) return;
  double old = atomic_load_explicit(&series->gauge, memory_order_relaxed);
  while (!atomic_compare_exchange_weak_explicit(&series->gauge, &old, old + value,
                                                memory_order_relaxed, memory_order_relaxed)) {
  }
}

/* ---- exemplars ---------------------------------------------------------------------------- */

static bool valid_label_name(const char *s);

/* Each label's name and value lengths are stored in one byte each: the byte limit must keep
 * them there (a name has at least one byte, so a value has at most MAX_BYTES - 1). */
_Static_assert(HK_METRICS_EXEMPLAR_MAX_BYTES <= 256, "exemplar lengths are encoded in a byte");
_Static_assert(HK_METRICS_EXEMPLAR_MAX_LABELS <= 255, "the label count is encoded in a byte");

/* The code points of s[0..len), or SIZE_MAX when it is not valid UTF-8 (as hk_text_utf8_valid
 * defines it). One pass, eight ASCII bytes at a time: request and trace ids, the values every
 * request carries, are ASCII, and this runs once per request. */
static size_t utf8_runes(const char *s, size_t len) {
  size_t runes = 0;
  for (size_t i = 0; i < len;) {
    uint64_t word;
    if (len - i >= sizeof word) {
      memcpy(&word, s + i, sizeof word);
      if ((word & 0x8080808080808080ULL) == 0) {
        i += sizeof word;
        runes += sizeof word;
        continue;
      }
    }
    if ((unsigned char)s[i] < 0x80) {
      i++;
    } else {
      uint32_t cp;
      int n = hk_text_utf8_decode((const unsigned char *)s + i, len - i, &cp);
      if (n <= 0) return SIZE_MAX;
      i += (size_t)n;
    }
    runes++;
  }
  return runes;
}

int hk_metrics_exemplar_check(const hk_exemplar_label_t *labels, size_t count) {
  if (count == 0 || count > HK_METRICS_EXEMPLAR_MAX_LABELS || labels == NULL) return -EINVAL;
  size_t bytes = 0, runes = 0;
  for (size_t i = 0; i < count; i++) {
    const char *name = labels[i].name;
    hk_label_value_t v = labels[i].value;
    if (name == NULL || (v.str == NULL && v.len > 0)) return -EINVAL;
    /* Lengths first, so a huge value is refused without being scanned. */
    size_t name_len = strnlen(name, HK_METRICS_EXEMPLAR_MAX_BYTES + 1);
    bytes += name_len;
    if (name_len > HK_METRICS_EXEMPLAR_MAX_BYTES || v.len > HK_METRICS_EXEMPLAR_MAX_BYTES ||
        bytes + v.len > HK_METRICS_EXEMPLAR_MAX_BYTES)
      return -E2BIG;
    bytes += v.len;
    if (!valid_label_name(name)) return -EINVAL;
    for (size_t j = 0; j < i; j++)
      if (strcmp(labels[j].name, name) == 0) return -EINVAL;
    size_t value_runes = v.len > 0 ? utf8_runes(v.str, v.len) : 0;
    if (value_runes == SIZE_MAX) return -EINVAL;
    runes += name_len + value_runes; /* a label name is ASCII */
    if (runes > HK_METRICS_EXEMPLAR_MAX_RUNES) return -E2BIG;
  }
  return 0;
}

/* Encodes checked labels into out (EXEMPLAR_WORDS * 8 bytes, zeroed by the caller): the count,
 * then each label's name and value lengths, then the names and values. Returns the length. */
static size_t encode_exemplar(const hk_exemplar_label_t *labels, size_t count, unsigned char *out) {
  size_t at = 1 + 2 * count;
  out[0] = (unsigned char)count;
  for (size_t i = 0; i < count; i++) {
    size_t name_len = strlen(labels[i].name), value_len = labels[i].value.len;
    assert(name_len <= UINT8_MAX && value_len <= UINT8_MAX);
    out[1 + 2 * i] = (unsigned char)name_len;
    out[2 + 2 * i] = (unsigned char)value_len;
    memcpy(out + at, labels[i].name, name_len);
    at += name_len;
    if (value_len > 0) memcpy(out + at, labels[i].value.str, value_len);
    at += value_len;
  }
  assert(at <= EXEMPLAR_ENCODED_MAX);
  return at;
}

static uint64_t double_bits(double v) {
  uint64_t bits;
  memcpy(&bits, &v, sizeof bits);
  return bits;
}

static double bits_double(uint64_t bits) {
  double v;
  memcpy(&v, &bits, sizeof v);
  return v;
}

/* The series' exemplar slots, allocated on first use: several workers may race to do it, and
 * the first published array wins (the others free theirs). The array is freed with the family
 * (family_free), like the series, since a scrape may be reading it until then. */
static exemplar_slot_t *exemplar_slots(hk_series_t *series) {
  exemplar_slot_t *slots = atomic_load_explicit(&series->exemplars, memory_order_acquire);
  if (slots != NULL) return slots;
  size_t n = series->metric->bucket_count + 1;
  exemplar_slot_t *fresh = malloc(n * sizeof *fresh);
  if (fresh == NULL) return NULL;
  for (size_t i = 0; i < n; i++) {
    atomic_init(&fresh[i].seq, 0);
    atomic_init(&fresh[i].value, 0);
    atomic_init(&fresh[i].timestamp, 0);
    atomic_init(&fresh[i].length, 0);
    for (size_t w = 0; w < EXEMPLAR_WORDS; w++)
      atomic_init(&fresh[i].words[w], 0);
  }
  /* Release publishes the initialized slots to readers that load the pointer with acquire. */
  if (atomic_compare_exchange_strong_explicit(&series->exemplars, &slots, fresh,
                                              memory_order_acq_rel, memory_order_acquire))
    return fresh;
  free(fresh);
  return slots; /* the winner's, loaded by the failed exchange */
}

int hk_series_observe_exemplar(hk_series_t *series, unsigned worker, double value,
                               const hk_exemplar_label_t *labels, size_t count) {
  /* The labels are checked first (pure), so the observation counts however they are. */
  int rc = hk_metrics_exemplar_check(labels, count);
  size_t bucket = observe(series, worker, value);
  if (bucket == SIZE_MAX) return -EINVAL;
  if (rc != 0) return rc;
  uint64_t words[EXEMPLAR_WORDS] = {0};
  size_t length = encode_exemplar(labels, count, (unsigned char *)words);
  exemplar_slot_t *slots = exemplar_slots(series);
  if (slots == NULL) return -ENOMEM;
  exemplar_slot_t *slot = &slots[bucket];
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  double timestamp = (double)now.tv_sec + (double)now.tv_nsec / 1e9;

  /* Seqlock writer (Boehm, "Can seqlocks get along with programming language memory models?",
   * 2012): even -> odd, a release fence, the words, odd -> even with release. The exchange
   * makes the writers exclusive: one that finds the slot odd, or loses the exchange, gives up
   * instead of waiting on a writer that may be preempted. */
  uint64_t seq = atomic_load_explicit(&slot->seq, memory_order_relaxed);
  if ((seq & 1) != 0 ||
      !atomic_compare_exchange_strong_explicit(&slot->seq, &seq, seq + 1, memory_order_relaxed,
                                               memory_order_relaxed))
    return -EBUSY;
  /* Orders the odd seq before the words: a reader that loads any new word, then fences with
   * acquire, sees seq moved and retries. */
  atomic_thread_fence(memory_order_release);
  atomic_store_explicit(&slot->value, double_bits(value), memory_order_relaxed);
  atomic_store_explicit(&slot->timestamp, double_bits(timestamp), memory_order_relaxed);
  atomic_store_explicit(&slot->length, (uint64_t)length, memory_order_relaxed);
  for (size_t w = 0; w < (length + 7) / 8; w++)
    atomic_store_explicit(&slot->words[w], words[w], memory_order_relaxed);
  atomic_store_explicit(&slot->seq, seq + 2, memory_order_release);
  return 0;
}

bool hk_series_exemplar(const hk_series_t *series, size_t bucket, hk_exemplar_t *out) {
  if (series == NULL || series->type != HK_METRIC_HISTOGRAM ||
      bucket > series->metric->bucket_count)
    return false;
  exemplar_slot_t *slots =
      atomic_load_explicit(&((hk_series_t *)series)->exemplars, memory_order_acquire);
  if (slots == NULL) return false;
  exemplar_slot_t *slot = &slots[bucket];
  uint64_t words[EXEMPLAR_WORDS];
  uint64_t value = 0, timestamp = 0, length = 0;
  bool whole = false;
  /* Seqlock reader: seq with acquire, the words relaxed (each may come from a different
   * write), an acquire fence, seq again; equal and even means the copy is one write's.
   * A writer holds the slot for a few stores; a reader that keeps meeting one (a preempted
   * writer) gives up rather than wait: the bucket then shows no exemplar in this scrape. */
  for (int tries = 0; tries < EXEMPLAR_READ_TRIES && !whole; tries++) {
    uint64_t before = atomic_load_explicit(&slot->seq, memory_order_acquire);
    if (before == 0) return false;
    if ((before & 1) != 0) continue;
    value = atomic_load_explicit(&slot->value, memory_order_relaxed);
    timestamp = atomic_load_explicit(&slot->timestamp, memory_order_relaxed);
    length = atomic_load_explicit(&slot->length, memory_order_relaxed);
    /* A torn copy is thrown away below, but must not read past the words meanwhile. */
    if (length > EXEMPLAR_ENCODED_MAX) length = EXEMPLAR_ENCODED_MAX;
    for (size_t w = 0; w < (length + 7) / 8; w++)
      words[w] = atomic_load_explicit(&slot->words[w], memory_order_relaxed);
    atomic_thread_fence(memory_order_acquire);
    whole = atomic_load_explicit(&slot->seq, memory_order_relaxed) == before;
  }
  if (!whole || length == 0) return false;
  /* A whole copy is what encode_exemplar wrote; the checks below only keep a corrupted one
   * from reading past what was copied. */
  const unsigned char *enc = (const unsigned char *)words;
  size_t count = enc[0];
  if (count == 0 || count > HK_METRICS_EXEMPLAR_MAX_LABELS || 1 + 2 * count > length) return false;
  size_t at = 1 + 2 * count, used = 0;
  out->value = bits_double(value);
  out->timestamp = bits_double(timestamp);
  out->count = count;
  for (size_t i = 0; i < count; i++) {
    size_t name_len = enc[1 + 2 * i], value_len = enc[2 + 2 * i];
    if (at + name_len + value_len > length || used + name_len + value_len > sizeof out->bytes)
      return false;
    memcpy(out->bytes + used, enc + at, name_len + value_len);
    out->names[i] = (hk_label_value_t){out->bytes + used, name_len};
    out->values[i] = (hk_label_value_t){out->bytes + used + name_len, value_len};
    at += name_len + value_len;
    used += name_len + value_len;
  }
  return true;
}

/* ---- registration ------------------------------------------------------------------------- */

/* Prometheus names: [a-zA-Z_:][a-zA-Z0-9_:]* for metrics, no colon for labels. */
static bool valid_name(const char *s, bool colon) {
  unsigned char c = (unsigned char)*s;
  if (!(hk_text_is_alpha(c) || c == '_' || (colon && c == ':'))) return false;
  for (s++; *s; s++) {
    c = (unsigned char)*s;
    if (!(hk_text_is_alnum(c) || c == '_' || (colon && c == ':'))) return false;
  }
  return true;
}

static bool valid_metric_name(const char *s) { return valid_name(s, true); }

static bool valid_label_name(const char *s) { return valid_name(s, false); }

bool hk_metrics_label_name_valid(const char *name) { return name != NULL && valid_label_name(name); }

/* Checks everything about opts that needs no registry; resolves the bucket list. */
static int validate(const hk_metric_opts_t *o, const double **buckets, size_t *bucket_count,
                    char *err, size_t errsize) {
  if (o->name == NULL || o->name[0] == '\0') {
    set_err(err, errsize, "metric name is missing");
    return -EINVAL;
  }
  const char *n = o->name;
  if (strlen(n) > NAME_MAX_LEN) {
    set_err(err, errsize, "metric name '%.40s...' is longer than %d bytes", n, NAME_MAX_LEN);
    return -EINVAL;
  }
  if (!valid_metric_name(n)) {
    set_err(err, errsize, "metric name '%s' is not valid ([a-zA-Z_:][a-zA-Z0-9_:]*)", n);
    return -EINVAL;
  }
  if (o->type != HK_METRIC_COUNTER && o->type != HK_METRIC_GAUGE &&
      o->type != HK_METRIC_HISTOGRAM) {
    set_err(err, errsize, "metric %s: unknown metric type %d", n, (int)o->type);
    return -EINVAL;
  }
  if ((o->flags & ~(unsigned)(HK_METRIC_LEGACY_COUNTER_NAME | HK_METRIC_SCRIPT)) != 0) {
    set_err(err, errsize, "metric %s: unknown flags 0x%x", n, o->flags);
    return -EINVAL;
  }
  if ((o->flags & HK_METRIC_LEGACY_COUNTER_NAME) && o->type != HK_METRIC_COUNTER) {
    set_err(err, errsize, "metric %s: the legacy counter name flag only applies to counters", n);
    return -EINVAL;
  }
  if (o->type == HK_METRIC_COUNTER && !(o->flags & HK_METRIC_LEGACY_COUNTER_NAME) &&
      (!ends_with(n, "_total") || strcmp(n, "_total") == 0)) {
    set_err(err, errsize, "metric %s: counter names must end in _total (e.g. %s_total)", n, n);
    return -EINVAL;
  }
  if (o->help == NULL || o->help[0] == '\0') {
    set_err(err, errsize, "metric %s: help text is missing", n);
    return -EINVAL;
  }
  size_t help_len = strlen(o->help);
  if (help_len > HK_METRICS_MAX_HELP) {
    set_err(err, errsize, "metric %s: help text is %zu bytes, more than the limit of %d", n,
            help_len, HK_METRICS_MAX_HELP);
    return -E2BIG;
  }
  if (!hk_text_utf8_valid(o->help, help_len)) {
    set_err(err, errsize, "metric %s: help text is not valid UTF-8", n);
    return -EINVAL;
  }
  if (o->label_count > HK_METRICS_MAX_LABELS) {
    set_err(err, errsize, "metric %s: %zu labels is more than the limit of %d", n, o->label_count,
            HK_METRICS_MAX_LABELS);
    return -EINVAL;
  }
  if (o->label_count > 0 && o->labels == NULL) {
    set_err(err, errsize, "metric %s: %zu label names expected, none given", n, o->label_count);
    return -EINVAL;
  }
  for (size_t i = 0; i < o->label_count; i++) {
    const char *l = o->labels[i];
    if (l == NULL || l[0] == '\0') {
      set_err(err, errsize, "metric %s: label name %zu is missing", n, i + 1);
      return -EINVAL;
    }
    if (strlen(l) > NAME_MAX_LEN || !valid_label_name(l)) {
      set_err(err, errsize, "metric %s: label name '%.*s' is not valid ([a-zA-Z_][a-zA-Z0-9_]*)", n,
              64, l);
      return -EINVAL;
    }
    if (l[0] == '_' && l[1] == '_') {
      set_err(err, errsize,
              "metric %s: label name '%s' is reserved (names starting with __ are Prometheus's)", n,
              l);
      return -EINVAL;
    }
    if (o->type == HK_METRIC_HISTOGRAM && strcmp(l, "le") == 0) {
      set_err(err, errsize, "metric %s: label name 'le' is reserved for histogram buckets", n);
      return -EINVAL;
    }
    for (size_t j = 0; j < i; j++) {
      if (strcmp(o->labels[j], l) == 0) {
        set_err(err, errsize, "metric %s: label name '%s' appears twice", n, l);
        return -EINVAL;
      }
    }
  }
  *buckets = NULL;
  *bucket_count = 0;
  if (o->type != HK_METRIC_HISTOGRAM) {
    if (o->buckets != NULL || o->bucket_count > 0) {
      set_err(err, errsize, "metric %s: buckets only apply to histograms", n);
      return -EINVAL;
    }
    return 0;
  }
  if (o->buckets == NULL) {
    if (o->bucket_count > 0) {
      set_err(err, errsize, "metric %s: %zu buckets expected, none given", n, o->bucket_count);
      return -EINVAL;
    }
    *buckets = default_buckets;
    *bucket_count = sizeof default_buckets / sizeof default_buckets[0];
    return 0;
  }
  if (o->bucket_count == 0) {
    set_err(err, errsize, "metric %s: a histogram needs at least one bucket", n);
    return -EINVAL;
  }
  if (o->bucket_count > HK_METRICS_MAX_BUCKETS) {
    set_err(err, errsize, "metric %s: %zu buckets is more than the limit of %d", n, o->bucket_count,
            HK_METRICS_MAX_BUCKETS);
    return -EINVAL;
  }
  for (size_t i = 0; i < o->bucket_count; i++) {
    if (!isfinite(o->buckets[i])) {
      set_err(err, errsize,
              "metric %s: bucket %g is not a finite number (the +Inf bucket is implicit)", n,
              o->buckets[i]);
      return -EINVAL;
    }
    if (i > 0 && !(o->buckets[i] > o->buckets[i - 1])) {
      set_err(err, errsize, "metric %s: buckets must be strictly increasing (%g comes after %g)", n,
              o->buckets[i], o->buckets[i - 1]);
      return -EINVAL;
    }
  }
  *buckets = o->buckets;
  *bucket_count = o->bucket_count;
  return 0;
}

/* "a counter with labels (mode)", "a histogram with no labels and buckets (0.1, 1)". */
static void describe(char *buf, size_t size, hk_metric_type_t type, unsigned flags,
                     const char *const *labels, size_t label_count, const double *buckets,
                     size_t bucket_count) {
  size_t used = 0;
#define PUT(...)                                                                                   \
  do {                                                                                             \
    int n_ = snprintf(buf + used, used < size ? size - used : 0, __VA_ARGS__);                     \
    if (n_ > 0) used += (size_t)n_;                                                                \
    if (used >= size) used = size - 1;                                                             \
  } while (0)
  buf[0] = '\0';
  PUT("a %s%s with ", (flags & HK_METRIC_LEGACY_COUNTER_NAME) ? "legacy-named " : "",
      hk_metric_type_name(type));
  if (label_count == 0)
    PUT("no labels");
  else {
    PUT("labels (");
    for (size_t i = 0; i < label_count; i++)
      PUT("%s%s", i ? ", " : "", labels[i]);
    PUT(")");
  }
  if (type == HK_METRIC_HISTOGRAM) {
    PUT(" and buckets (");
    for (size_t i = 0; i < bucket_count; i++)
      PUT("%s%g", i ? ", " : "", buckets[i]);
    PUT(")");
  }
#undef PUT
}

/* The names a family's exposition uses, in either format: samples and family names. OpenMetrics
 * also reserves x_created for a counter x_total and h_created for a histogram h (the samples of
 * their created timestamps): we never write them, but a gauge of that name next to them is a
 * clash the spec forbids ("a gauge called foo_created as a counter called foo could create a
 * foo_created") and that strict parsers (client_python's) reject. Found by fuzz_exposition. */
#define FAMILY_NAMES_MAX 5
static size_t family_names(hk_metric_type_t type, unsigned flags, const char *name,
                           char out[FAMILY_NAMES_MAX][NAME_MAX_LEN + 16]) {
  size_t n = 0;
  snprintf(out[n++], sizeof out[0], "%s", name);
  if (type == HK_METRIC_COUNTER && !(flags & HK_METRIC_LEGACY_COUNTER_NAME)) {
    snprintf(out[n++], sizeof out[0], "%.*s", (int)(strlen(name) - 6), name);
    snprintf(out[n++], sizeof out[0], "%.*s_created", (int)(strlen(name) - 6), name);
  } else if (type == HK_METRIC_HISTOGRAM) {
    snprintf(out[n++], sizeof out[0], "%s_bucket", name);
    snprintf(out[n++], sizeof out[0], "%s_sum", name);
    snprintf(out[n++], sizeof out[0], "%s_count", name);
    snprintf(out[n++], sizeof out[0], "%s_created", name);
  }
  assert(n <= FAMILY_NAMES_MAX);
  return n;
}

/* Under the lock: binary search; *found tells whether families[index] is `name`. */
static size_t family_search(const hk_metrics_t *r, const char *name, bool *found) {
  size_t lo = 0, hi = atomic_load_explicit(&r->family_count, memory_order_relaxed);
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(r->families[mid]->name, name);
    if (c == 0) {
      *found = true;
      return mid;
    }
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  *found = false;
  return lo;
}

/* Under the lock: the family whose exposition uses `name` (family_names), or NULL. */
static const hk_metric_t *name_owner(const hk_metrics_t *r, const char *name) {
  bool found;
  size_t at = family_search(r, name, &found);
  if (found) return r->families[at];
  char base[NAME_MAX_LEN + 16];
  size_t len = strlen(name);
  static const char *const suffixes[] = {"_bucket", "_sum", "_count", "_created"};
  for (size_t i = 0; i < 4; i++) {
    size_t n = strlen(suffixes[i]);
    if (len <= n || len - n >= sizeof base || !ends_with(name, suffixes[i])) continue;
    memcpy(base, name, len - n);
    base[len - n] = '\0';
    at = family_search(r, base, &found);
    if (found && r->families[at]->type == HK_METRIC_HISTOGRAM) return r->families[at];
  }
  if (len + 6 < sizeof base) {
    snprintf(base, sizeof base, "%s_total", name);
    at = family_search(r, base, &found);
    if (found && r->families[at]->type == HK_METRIC_COUNTER &&
        !(r->families[at]->flags & HK_METRIC_LEGACY_COUNTER_NAME))
      return r->families[at];
  }
  /* x_created of a counter x_total. */
  if (len > 8 && len - 8 + 6 < sizeof base && ends_with(name, "_created")) {
    snprintf(base, sizeof base, "%.*s_total", (int)(len - 8), name);
    at = family_search(r, base, &found);
    if (found && r->families[at]->type == HK_METRIC_COUNTER &&
        !(r->families[at]->flags & HK_METRIC_LEGACY_COUNTER_NAME))
      return r->families[at];
  }
  return NULL;
}

static void family_free(hk_metric_t *m) {
  if (m == NULL) return;
  size_t count = atomic_load_explicit(&m->series_count, memory_order_relaxed);
  for (size_t i = 0; i < count; i++) {
    size_t chunk, offset;
    series_slot(i, &chunk, &offset);
    hk_series_t *series = m->series_chunks[chunk][offset];
    free(atomic_load_explicit(&series->exemplars, memory_order_relaxed));
    free(series);
  }
  for (size_t c = 0; c < SERIES_CHUNK_COUNT; c++)
    free(m->series_chunks[c]);
  free(atomic_load_explicit(&m->table, memory_order_relaxed));
  while (m->retired_tables != NULL) {
    series_table_t *next = m->retired_tables->retired_next;
    free(m->retired_tables);
    m->retired_tables = next;
  }
  while (m->blocks != NULL) {
    cell_block_t *next = m->blocks->next;
    free(m->blocks);
    m->blocks = next;
  }
  for (size_t i = 0; i < m->label_count; i++)
    free(m->label_names[i]);
  free(m->name);
  free(m->help);
  free(m);
}

static hk_metric_t *family_new(hk_metrics_t *r, const hk_metric_opts_t *o, const double *buckets,
                               size_t bucket_count) {
  hk_metric_t *m = calloc(1, sizeof *m);
  if (m == NULL) return NULL;
  m->registry = r;
  m->type = o->type;
  m->flags = o->flags & ~(unsigned)HK_METRIC_SCRIPT; /* a registration option, not a property */
  m->series_cap = o->series_cap ? o->series_cap : HK_METRICS_DEFAULT_SERIES_CAP;
  m->bucket_count = bucket_count;
  if (bucket_count > 0) memcpy(m->buckets, buckets, bucket_count * sizeof buckets[0]);
  m->cells_per_series = r->workers;
  m->cell_size = o->type == HK_METRIC_COUNTER ? sizeof(double)
                 : o->type == HK_METRIC_HISTOGRAM
                     ? (bucket_count + 1) * sizeof(uint64_t) + sizeof(double)
                     : 0;
  m->next_block_capacity = CELL_BLOCK_FIRST;
  atomic_init(&m->series_count, 0);
  series_table_t *table = table_new(8);
  atomic_init(&m->table, table);
  m->name = dup_str(o->name);
  m->help = dup_str(o->help);
  m->label_count = o->label_count;
  bool ok = table != NULL && m->name != NULL && m->help != NULL;
  for (size_t i = 0; i < o->label_count; i++) {
    m->label_names[i] = dup_str(o->labels[i]);
    ok = ok && m->label_names[i] != NULL;
  }
  if (!ok) {
    family_free(m);
    return NULL;
  }
  return m;
}

/* Under the lock: hancock_metric_series{metric} and the dropped counter's series for a family,
 * created with it so both read 0 from the start (rate() and increase() need a first sample). */
static void attach_registry_series(hk_metrics_t *r, hk_metric_t *m, drop_logs_t *logs) {
  hk_label_value_t v = {m->name, strlen(m->name)};
  uint64_t hash = hash_values(r->seed, &v, 1);
  /* Past INTERNAL_SERIES_CAP families these are NULL: the family goes uncounted, and the
   * registry's families count and log that drop like any other. */
  if (m->dropped_series == NULL)
    m->dropped_series = series_get_locked(r->dropped_family, &v, hash, logs);
  if (m->count_series == NULL) m->count_series = series_get_locked(r->count_family, &v, hash, logs);
}

/* Under the lock: counts a refused registration in the registry's own cell (index `workers`,
 * written only under the lock, like drop_series). Returns true the first time for `reason`,
 * when the caller logs it. */
static bool count_refusal(hk_metrics_t *r, refuse_reason_t reason) {
  hk_series_t *s = r->refused[reason];
  if (s != NULL) {
    _Atomic double *cell = (_Atomic double *)(s->cells + (size_t)r->workers * s->stride);
    double v = atomic_load_explicit(cell, memory_order_relaxed);
    atomic_store_explicit(cell, v + 1, memory_order_relaxed);
  }
  if (r->refusal_logged[reason]) return false;
  r->refusal_logged[reason] = true;
  return true;
}

/* Without the lock (an enricher may run script code that touches metrics). */
static void log_refusal(const char *name, refuse_reason_t reason, size_t limit) {
  hk_log_field_t fields[] = {HK_LOG_S("metric", name), HK_LOG_S("reason", refuse_reason_names[reason]),
                             HK_LOG_I("limit", limit)};
  hk_log_event(HK_LOG_WARNING, NULL, "metric_family_refused",
               "metric family not registered: over a registry limit (logged once per reason)",
               fields, sizeof fields / sizeof fields[0]);
}

int hk_metrics_register(hk_metrics_t *metrics, const hk_metric_opts_t *opts, hk_metric_t **out,
                        char *err, size_t errsize) {
  if (out != NULL) *out = NULL;
  if (err != NULL && errsize > 0) err[0] = '\0';
  if (metrics == NULL || opts == NULL) return -EINVAL;
  const double *buckets;
  size_t bucket_count;
  const char *name = opts->name;
  drop_logs_t logs = {{NULL, NULL}, 0};
  bool log_refused = false;
  refuse_reason_t reason = REFUSE_FAMILY_CAP;
  size_t limit = 0;
  unsigned flags = opts->flags & ~(unsigned)HK_METRIC_SCRIPT;
  int rc = validate(opts, &buckets, &bucket_count, err, errsize);
  if (rc == -E2BIG) {
    /* Help over HK_METRICS_MAX_HELP: refused like a family over the cap, and counted. */
    pthread_mutex_lock(&metrics->lock);
    reason = REFUSE_HELP_TOO_LONG;
    limit = HK_METRICS_MAX_HELP;
    log_refused = count_refusal(metrics, reason);
    pthread_mutex_unlock(&metrics->lock);
    goto unlocked;
  }
  if (rc != 0) return rc;

  pthread_mutex_lock(&metrics->lock);
  bool found;
  size_t at = family_search(metrics, name, &found);
  if (found) {
    hk_metric_t *m = metrics->families[at];
    bool same = m->type == opts->type && m->flags == flags &&
                m->label_count == opts->label_count && m->bucket_count == bucket_count;
    for (size_t i = 0; same && i < m->label_count; i++)
      same = strcmp(m->label_names[i], opts->labels[i]) == 0;
    for (size_t i = 0; same && i < bucket_count; i++)
      same = m->buckets[i] == buckets[i];
    if (same) {
      /* An existing family is always returned, at the cap too: a reload registers it again. */
      if (out != NULL) *out = m;
      rc = 0;
    } else {
      char was[512], want[512];
      describe(was, sizeof was, m->type, m->flags, (const char *const *)m->label_names,
               m->label_count, m->buckets, m->bucket_count);
      describe(want, sizeof want, opts->type, flags, opts->labels, opts->label_count, buckets,
               bucket_count);
      set_err(err, errsize, "metric %s already registered as %s; cannot register it as %s", name,
              was, want);
      rc = -EEXIST;
    }
    goto done;
  }

  /* Two families must not write the same name in either format: a histogram h owns h_bucket,
   * h_sum and h_count; an OpenMetrics counter x_total is the family x. */
  {
    char mine[FAMILY_NAMES_MAX][NAME_MAX_LEN + 16];
    size_t my_count = family_names(opts->type, flags, name, mine);
    for (size_t i = 0; i < my_count; i++) {
      const hk_metric_t *other = name_owner(metrics, mine[i]);
      if (other == NULL) continue;
      set_err(err, errsize,
              "metric %s would collide with %s %s, whose exposition also uses the name %s", name,
              hk_metric_type_name(other->type), other->name, mine[i]);
      rc = -EEXIST;
      goto done;
    }
  }

  bool from_script = (opts->flags & HK_METRIC_SCRIPT) != 0;
  if (from_script && metrics->script_families >= metrics->script_family_cap) {
    set_err(err, errsize,
            "metric %s not registered: scripts have registered %zu metric families, the limit "
            "(counted in hancock_metric_families_refused_total)",
            name, metrics->script_families);
    reason = REFUSE_FAMILY_CAP;
    limit = metrics->script_family_cap;
    log_refused = count_refusal(metrics, reason);
    rc = -ENOSPC;
    goto done;
  }

  if (atomic_load_explicit(&metrics->family_count, memory_order_relaxed) == metrics->family_cap) {
    size_t cap = metrics->family_cap ? metrics->family_cap * 2 : 16;
    hk_metric_t **grown = realloc(metrics->families, cap * sizeof *grown);
    if (grown == NULL) {
      set_err(err, errsize, "metric %s: out of memory", name);
      rc = -ENOMEM;
      goto done;
    }
    metrics->families = grown;
    metrics->family_cap = cap;
  }
  hk_metric_t *m = family_new(metrics, opts, buckets, bucket_count);
  if (m == NULL) {
    set_err(err, errsize, "metric %s: out of memory", name);
    rc = -ENOMEM;
    goto done;
  }
  size_t count = atomic_load_explicit(&metrics->family_count, memory_order_relaxed);
  memmove(&metrics->families[at + 1], &metrics->families[at], (count - at) * sizeof(void *));
  metrics->families[at] = m;
  atomic_store_explicit(&metrics->family_count, count + 1, memory_order_release);
  if (from_script) metrics->script_families++;
  if (metrics->dropped_family != NULL && metrics->count_family != NULL)
    attach_registry_series(metrics, m, &logs);
  if (out != NULL) *out = m;
  rc = 0;
done:
  pthread_mutex_unlock(&metrics->lock);
  log_drops(&logs);
unlocked:
  if (log_refused) log_refusal(name, reason, limit);
  return rc;
}

void hk_metrics_set_family_cap(hk_metrics_t *metrics, size_t cap) {
  if (metrics == NULL) return;
  pthread_mutex_lock(&metrics->lock);
  metrics->script_family_cap = cap;
  pthread_mutex_unlock(&metrics->lock);
}

hk_metric_t *hk_metrics_find(hk_metrics_t *metrics, const char *name) {
  if (metrics == NULL || name == NULL) return NULL;
  pthread_mutex_lock(&metrics->lock);
  bool found;
  size_t at = family_search(metrics, name, &found);
  hk_metric_t *m = found ? metrics->families[at] : NULL;
  pthread_mutex_unlock(&metrics->lock);
  return m;
}

/* ---- registry ----------------------------------------------------------------------------- */

/* The built-in collector: hancock_metric_series{metric} = each family's series count. */
static void collect_series_counts(hk_metrics_t *metrics, void *data) {
  (void)data;
  pthread_mutex_lock(&metrics->lock);
  size_t count = atomic_load_explicit(&metrics->family_count, memory_order_relaxed);
  for (size_t i = 0; i < count; i++) {
    hk_metric_t *m = metrics->families[i];
    hk_series_gauge_set(m->count_series,
                        (double)atomic_load_explicit(&m->series_count, memory_order_relaxed));
  }
  pthread_mutex_unlock(&metrics->lock);
}

static uint64_t random_seed(const void *salt) {
  uint64_t seed = 0;
  if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)(uintptr_t)salt;
  }
  return mix64(seed);
}

int hk_metrics_new(unsigned workers, hk_metrics_t **out) {
  *out = NULL;
  if (workers == 0 || workers > HK_METRICS_MAX_WORKERS) return -EINVAL;
  hk_metrics_t *r = calloc(1, sizeof *r);
  if (r == NULL) return -ENOMEM;
  if (pthread_mutex_init(&r->lock, NULL) != 0) {
    free(r);
    return -ENOMEM;
  }
  if (pthread_mutex_init(&r->collect_lock, NULL) != 0) {
    pthread_mutex_destroy(&r->lock);
    free(r);
    return -ENOMEM;
  }
  r->workers = workers;
  r->seed = random_seed(r);
  atomic_init(&r->family_count, 0);
  atomic_init(&r->collector_count, 0);

  static const char *const metric_label[] = {"metric"};
  hk_metric_opts_t dropped = {
      .type = HK_METRIC_COUNTER,
      .name = "hancock_metric_series_dropped_total",
      .help = "Label sets not stored because their metric was at its series cap.",
      .labels = metric_label,
      .label_count = 1,
      .series_cap = INTERNAL_SERIES_CAP,
  };
  hk_metric_opts_t count = {
      .type = HK_METRIC_GAUGE,
      .name = "hancock_metric_series",
      .help = "Series (label sets) stored per metric.",
      .labels = metric_label,
      .label_count = 1,
      .series_cap = INTERNAL_SERIES_CAP,
  };
  static const char *const reason_label[] = {"reason"};
  hk_metric_opts_t refused = {
      .type = HK_METRIC_COUNTER,
      .name = "hancock_metric_families_refused_total",
      .help = "Metric families not registered: over the scripts' family cap (family_cap) or "
              "with help text over the limit (help_too_long).",
      .labels = reason_label,
      .label_count = 1,
  };
  r->script_family_cap = HK_METRICS_DEFAULT_FAMILY_CAP;
  int rc = hk_metrics_register(r, &dropped, &r->dropped_family, NULL, 0);
  if (rc == 0) {
    /* One more cell than workers: the one drop_series writes under the lock. */
    r->dropped_family->cells_per_series = workers + 1;
    rc = hk_metrics_register(r, &count, &r->count_family, NULL, 0);
  }
  drop_logs_t logs = {{NULL, NULL}, 0};
  if (rc == 0) {
    pthread_mutex_lock(&r->lock);
    attach_registry_series(r, r->dropped_family, &logs);
    attach_registry_series(r, r->count_family, &logs);
    pthread_mutex_unlock(&r->lock);
    /* Registered once the two above exist, so it gets its series in both like any family. */
    rc = hk_metrics_register(r, &refused, &r->refused_family, NULL, 0);
  }
  if (rc != 0) {
    hk_metrics_free(r);
    return rc;
  }
  /* The same extra cell, for count_refusal; one series per reason, at 0 from the start. */
  r->refused_family->cells_per_series = workers + 1;
  pthread_mutex_lock(&r->lock);
  for (size_t i = 0; i < REFUSE_REASONS; i++) {
    hk_label_value_t v = {refuse_reason_names[i], strlen(refuse_reason_names[i])};
    r->refused[i] = series_get_locked(r->refused_family, &v, hash_values(r->seed, &v, 1), &logs);
  }
  pthread_mutex_unlock(&r->lock);
  assert(logs.count == 0);
  *out = r;
  return 0;
}

void hk_metrics_free(hk_metrics_t *metrics) {
  if (metrics == NULL) return;
  size_t count = atomic_load_explicit(&metrics->family_count, memory_order_relaxed);
  for (size_t i = 0; i < count; i++)
    family_free(metrics->families[i]);
  free(metrics->families);
  pthread_mutex_destroy(&metrics->collect_lock);
  pthread_mutex_destroy(&metrics->lock);
  free(metrics);
}

int hk_metrics_add_collector(hk_metrics_t *metrics, hk_metrics_collect_cb collect, void *data) {
  if (metrics == NULL || collect == NULL) return -EINVAL;
  pthread_mutex_lock(&metrics->lock);
  size_t count = atomic_load_explicit(&metrics->collector_count, memory_order_relaxed);
  int rc = -ENOSPC;
  if (count < MAX_COLLECTORS) {
    metrics->collectors[count].collect = collect;
    metrics->collectors[count].data = data;
    atomic_store_explicit(&metrics->collector_count, count + 1, memory_order_release);
    rc = 0;
  }
  pthread_mutex_unlock(&metrics->lock);
  return rc;
}

/* The registry whose collectors this thread is running, so a collector that tries to remove a
 * collector gets -EDEADLK instead of waiting for itself. */
static _Thread_local const hk_metrics_t *collecting;

int hk_metrics_remove_collector(hk_metrics_t *metrics, hk_metrics_collect_cb collect, void *data) {
  if (metrics == NULL || collect == NULL) return -EINVAL;
  if (collecting == metrics) return -EDEADLK;
  /* collect_lock first, as hk_metrics_collect takes it: a collect running now finishes before
   * the entry goes, and none that starts later sees it, so `data` may be freed on return. */
  pthread_mutex_lock(&metrics->collect_lock);
  pthread_mutex_lock(&metrics->lock);
  size_t count = atomic_load_explicit(&metrics->collector_count, memory_order_relaxed);
  int rc = -ENOENT;
  for (size_t i = 0; i < count; i++) {
    if (metrics->collectors[i].collect != collect || metrics->collectors[i].data != data) continue;
    memmove(&metrics->collectors[i], &metrics->collectors[i + 1],
            (count - i - 1) * sizeof metrics->collectors[0]);
    atomic_store_explicit(&metrics->collector_count, count - 1, memory_order_release);
    rc = 0;
    break;
  }
  pthread_mutex_unlock(&metrics->lock);
  pthread_mutex_unlock(&metrics->collect_lock);
  return rc;
}

void hk_metrics_collect(hk_metrics_t *metrics) {
  if (metrics == NULL) return;
  /* Collectors run one at a time, so one that writes a cell of its own (a counter advanced to a
   * total read elsewhere) has a single writer even when two workers scrape at once. They run
   * without the registry lock: they may register families or create series. Entries only move
   * under collect_lock (hk_metrics_remove_collector), and an append publishes the count after
   * the entry, so the published count is all this needs. */
  pthread_mutex_lock(&metrics->collect_lock);
  const hk_metrics_t *outer = collecting; /* a collector may collect another registry */
  collecting = metrics;
  size_t count = atomic_load_explicit(&metrics->collector_count, memory_order_acquire);
  for (size_t i = 0; i < count; i++)
    metrics->collectors[i].collect(metrics, metrics->collectors[i].data);
  /* Last, so series that other collectors created on this run are counted. */
  collect_series_counts(metrics, NULL);
  collecting = outer;
  pthread_mutex_unlock(&metrics->collect_lock);
}

/* ---- reading ------------------------------------------------------------------------------ */

size_t hk_metrics_family_count(const hk_metrics_t *metrics) {
  return metrics ? atomic_load_explicit(&metrics->family_count, memory_order_acquire) : 0;
}

hk_metric_t *hk_metrics_family_at(hk_metrics_t *metrics, size_t index) {
  if (metrics == NULL) return NULL;
  pthread_mutex_lock(&metrics->lock);
  hk_metric_t *m = index < atomic_load_explicit(&metrics->family_count, memory_order_relaxed)
                       ? metrics->families[index]
                       : NULL;
  pthread_mutex_unlock(&metrics->lock);
  return m;
}

hk_metric_t *hk_metrics_family_after(hk_metrics_t *metrics, const char *name) {
  if (metrics == NULL) return NULL;
  pthread_mutex_lock(&metrics->lock);
  size_t count = atomic_load_explicit(&metrics->family_count, memory_order_relaxed);
  size_t at = 0;
  if (name != NULL) {
    bool found;
    at = family_search(metrics, name, &found);
    if (found) at++;
  }
  hk_metric_t *m = at < count ? metrics->families[at] : NULL;
  pthread_mutex_unlock(&metrics->lock);
  return m;
}

const char *hk_metric_name(const hk_metric_t *metric) {
  return metric->name;
}
const char *hk_metric_help(const hk_metric_t *metric) {
  return metric->help;
}
hk_metric_type_t hk_metric_type(const hk_metric_t *metric) {
  return metric->type;
}
unsigned hk_metric_flags(const hk_metric_t *metric) {
  return metric->flags;
}
size_t hk_metric_label_count(const hk_metric_t *metric) {
  return metric->label_count;
}

const char *hk_metric_label_name(const hk_metric_t *metric, size_t index) {
  return index < metric->label_count ? metric->label_names[index] : NULL;
}

size_t hk_metric_bucket_count(const hk_metric_t *metric) {
  return metric->bucket_count;
}

double hk_metric_bucket(const hk_metric_t *metric, size_t index) {
  return index < metric->bucket_count ? metric->buckets[index] : INFINITY;
}

size_t hk_metric_series_count(const hk_metric_t *metric) {
  return atomic_load_explicit(&metric->series_count, memory_order_acquire);
}

hk_series_t *hk_metric_series_at(hk_metric_t *metric, size_t index) {
  if (index >= atomic_load_explicit(&metric->series_count, memory_order_acquire)) return NULL;
  size_t chunk, offset;
  series_slot(index, &chunk, &offset);
  return metric->series_chunks[chunk][offset];
}

hk_label_value_t hk_series_label(const hk_series_t *series, size_t index) {
  if (index >= series->metric->label_count) return (hk_label_value_t){NULL, 0};
  return series->labels[index];
}

double hk_series_value(const hk_series_t *series) {
  const hk_metric_t *m = series->metric;
  if (series->type == HK_METRIC_GAUGE)
    return atomic_load_explicit(&((hk_series_t *)series)->gauge, memory_order_relaxed);
  if (series->type == HK_METRIC_HISTOGRAM) {
    uint64_t count;
    double sum;
    uint64_t buckets[HK_METRICS_MAX_BUCKETS + 1];
    hk_series_histogram(series, buckets, &sum, &count);
    return (double)count;
  }
  double total = 0;
  for (size_t w = 0; w < m->cells_per_series; w++) {
    _Atomic double *cell = (_Atomic double *)(series->cells + w * series->stride);
    total += atomic_load_explicit(cell, memory_order_relaxed);
  }
  return total;
}

void hk_series_histogram(const hk_series_t *series, uint64_t *bucket_counts, double *sum,
                         uint64_t *count) {
  const hk_metric_t *m = series->metric;
  size_t n = m->bucket_count + 1;
  for (size_t i = 0; i < n; i++)
    bucket_counts[i] = 0;
  *sum = 0;
  *count = 0;
  if (series->type != HK_METRIC_HISTOGRAM) return;
  for (size_t w = 0; w < m->cells_per_series; w++) {
    unsigned char *cell = series->cells + w * series->stride;
    _Atomic uint64_t *counts = (_Atomic uint64_t *)cell;
    for (size_t i = 0; i < n; i++)
      bucket_counts[i] += atomic_load_explicit(&counts[i], memory_order_relaxed);
    *sum +=
        atomic_load_explicit((_Atomic double *)(cell + n * sizeof(uint64_t)), memory_order_relaxed);
  }
  /* The count is the sum of the buckets, so it always equals the +Inf bucket. */
  for (size_t i = 0; i < n; i++)
    *count += bucket_counts[i];
}
