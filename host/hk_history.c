/* hk_history: the samples the in-process alert evaluator reads (see hk_history.h). A stream is
 * one exposed sample of one registry series (a counter's value, a histogram's bucket, count or
 * sum); it is found again by the series pointer, which the registry keeps for its whole life,
 * so recording costs a hash lookup per stream rather than comparing labels. */
#include "hk_history.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Which sample of a series a stream holds. Buckets are COMPONENT_BUCKET + index (the last,
 * index == bucket_count, is +Inf). */
enum { COMPONENT_VALUE = 0, COMPONENT_COUNT = 1, COMPONENT_SUM = 2, COMPONENT_BUCKET = 3 };

typedef struct stream_s {
  hk_history_stream_t view; /* names, labels; the point pointers are set when visited */
  const hk_series_t *series;
  int component;
  int64_t *times;
  double *values;
  size_t start, len, cap;
  char *owned[HK_METRICS_MAX_LABELS + 2]; /* name and label values, freed with the stream */
} stream_t;

typedef struct name_group_s {
  char *name;
  size_t *streams; /* indexes into history->streams */
  size_t count, cap;
} name_group_t;

struct hk_history_s {
  size_t max_streams;
  stream_t *streams;
  size_t stream_count, stream_cap;
  size_t *slots; /* open addressing over (series, component): stream index + 1, 0 = empty */
  size_t slot_cap;
  name_group_t *groups;
  size_t group_count, group_cap;
  size_t dropped;
};

int hk_history_new(size_t max_streams, hk_history_t **out) {
  if (out == NULL || max_streams == 0) return -EINVAL;
  hk_history_t *history = calloc(1, sizeof *history);
  if (history == NULL) return -ENOMEM;
  history->max_streams = max_streams;
  *out = history;
  return 0;
}

void hk_history_free(hk_history_t *history) {
  if (history == NULL) return;
  for (size_t i = 0; i < history->stream_count; i++) {
    stream_t *s = &history->streams[i];
    for (size_t k = 0; k < sizeof s->owned / sizeof s->owned[0]; k++) free(s->owned[k]);
    free(s->times);
    free(s->values);
  }
  for (size_t i = 0; i < history->group_count; i++) {
    free(history->groups[i].name);
    free(history->groups[i].streams);
  }
  free(history->streams);
  free(history->slots);
  free(history->groups);
  free(history);
}

size_t hk_history_stream_count(const hk_history_t *history) { return history->stream_count; }
size_t hk_history_dropped(const hk_history_t *history) { return history->dropped; }

static size_t slot_hash(const hk_series_t *series, int component) {
  uint64_t x = (uint64_t)(uintptr_t)series ^ ((uint64_t)component * 0x9e3779b97f4a7c15u);
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdu;
  x ^= x >> 33;
  return (size_t)x;
}

static size_t *slot_find(hk_history_t *history, const hk_series_t *series, int component) {
  size_t mask = history->slot_cap - 1;
  for (size_t i = slot_hash(series, component) & mask;; i = (i + 1) & mask) {
    size_t *slot = &history->slots[i];
    if (*slot == 0) return slot;
    const stream_t *s = &history->streams[*slot - 1];
    if (s->series == series && s->component == component) return slot;
  }
}

static int slots_grow(hk_history_t *history) {
  size_t cap = history->slot_cap ? history->slot_cap * 2 : 64;
  size_t *slots = calloc(cap, sizeof *slots);
  if (slots == NULL) return -ENOMEM;
  free(history->slots);
  history->slots = slots;
  history->slot_cap = cap;
  for (size_t i = 0; i < history->stream_count; i++) {
    *slot_find(history, history->streams[i].series, history->streams[i].component) = i + 1;
  }
  return 0;
}

static name_group_t *group_for(hk_history_t *history, const char *name) {
  for (size_t i = 0; i < history->group_count; i++) {
    if (strcmp(history->groups[i].name, name) == 0) return &history->groups[i];
  }
  if (history->group_count == history->group_cap) {
    size_t cap = history->group_cap ? history->group_cap * 2 : 8;
    name_group_t *groups = realloc(history->groups, cap * sizeof *groups);
    if (groups == NULL) return NULL;
    history->groups = groups;
    history->group_cap = cap;
  }
  char *copy = strdup(name);
  if (copy == NULL) return NULL;
  name_group_t *group = &history->groups[history->group_count++];
  *group = (name_group_t){.name = copy};
  return group;
}

/* A bound as Prometheus clients write it in le="…": shortest round-trip form, +Inf. */
static void format_bound(char *buf, size_t size, double bound) {
  for (int digits = 1; digits <= 17; digits++) {
    snprintf(buf, size, "%.*g", digits, bound);
    if (strtod(buf, NULL) == bound) return;
  }
}

/* The stream of (series, component), created when new. *out NULL when the cap refuses it. */
static int stream_for(hk_history_t *history, hk_metric_t *family, const hk_series_t *series,
                      int component, const char *name, stream_t **out) {
  *out = NULL;
  if (history->slot_cap == 0 || (history->stream_count + 1) * 2 > history->slot_cap) {
    if (slots_grow(history) != 0) return -ENOMEM;
  }
  size_t *slot = slot_find(history, series, component);
  if (*slot != 0) {
    *out = &history->streams[*slot - 1];
    return 0;
  }
  if (history->stream_count >= history->max_streams) {
    history->dropped++;
    return 0;
  }
  if (history->stream_count == history->stream_cap) {
    size_t cap = history->stream_cap ? history->stream_cap * 2 : 16;
    stream_t *streams = realloc(history->streams, cap * sizeof *streams);
    if (streams == NULL) return -ENOMEM;
    history->streams = streams;
    history->stream_cap = cap;
  }
  name_group_t *group = group_for(history, name);
  if (group == NULL) return -ENOMEM;
  if (group->count == group->cap) {
    size_t cap = group->cap ? group->cap * 2 : 8;
    size_t *indexes = realloc(group->streams, cap * sizeof *indexes);
    if (indexes == NULL) return -ENOMEM;
    group->streams = indexes;
    group->cap = cap;
  }
  stream_t s = {.series = series, .component = component};
  int rc = -ENOMEM;
  size_t owned = 0;
  s.owned[owned] = strdup(name);
  if (s.owned[owned] == NULL) goto fail;
  s.view.name = s.owned[owned++];
  size_t labels = hk_metric_label_count(family);
  for (size_t i = 0; i < labels; i++) {
    hk_label_value_t value = hk_series_label(series, i);
    s.owned[owned] = strndup(value.str ? value.str : "", value.len);
    if (s.owned[owned] == NULL) goto fail;
    s.view.label_names[i] = hk_metric_label_name(family, i);
    s.view.label_values[i] = s.owned[owned++];
  }
  s.view.label_count = labels;
  if (component >= COMPONENT_BUCKET) {
    size_t bucket = (size_t)(component - COMPONENT_BUCKET);
    char le[40] = "+Inf";
    if (bucket < hk_metric_bucket_count(family)) format_bound(le, sizeof le, hk_metric_bucket(family, bucket));
    s.owned[owned] = strdup(le);
    if (s.owned[owned] == NULL) goto fail;
    s.view.label_names[labels] = "le";
    s.view.label_values[labels] = s.owned[owned++];
    s.view.label_count = labels + 1;
  }
  history->streams[history->stream_count] = s;
  group->streams[group->count++] = history->stream_count;
  *slot = ++history->stream_count;
  *out = &history->streams[history->stream_count - 1];
  return 0;
fail:
  for (size_t k = 0; k < owned; k++) free(s.owned[k]);
  return rc;
}

static int stream_append(stream_t *s, int64_t now_ms, int64_t retention_ms, double value) {
  if (s->len > 0 && s->times[s->start + s->len - 1] >= now_ms) return 0;
  while (s->len > 0 && s->times[s->start] < now_ms - retention_ms) {
    s->start++;
    s->len--;
  }
  if (s->len == HK_HISTORY_MAX_POINTS) {
    s->start++;
    s->len--;
  }
  if (s->start + s->len == s->cap) {
    if (s->start > 0) {
      memmove(s->times, s->times + s->start, s->len * sizeof *s->times);
      memmove(s->values, s->values + s->start, s->len * sizeof *s->values);
      s->start = 0;
    } else {
      size_t cap = s->cap ? s->cap * 2 : 8;
      if (cap > HK_HISTORY_MAX_POINTS) cap = HK_HISTORY_MAX_POINTS;
      int64_t *times = realloc(s->times, cap * sizeof *times);
      if (times == NULL) return -ENOMEM;
      s->times = times;
      double *values = realloc(s->values, cap * sizeof *values);
      if (values == NULL) return -ENOMEM;
      s->values = values;
      s->cap = cap;
    }
  }
  s->times[s->start + s->len] = now_ms;
  s->values[s->start + s->len] = value;
  s->len++;
  return 0;
}

static int record_one(hk_history_t *history, hk_metric_t *family, const hk_series_t *series,
                      int component, const char *name, int64_t now_ms, int64_t retention_ms,
                      double value) {
  stream_t *s = NULL;
  int rc = stream_for(history, family, series, component, name, &s);
  if (rc != 0 || s == NULL) return rc;
  return stream_append(s, now_ms, retention_ms, value);
}

static bool has_suffix(const char *name, size_t len, const char *suffix, size_t *base_len) {
  size_t n = strlen(suffix);
  if (len <= n || memcmp(name + len - n, suffix, n) != 0) return false;
  *base_len = len - n;
  return true;
}

/* The family exposing `name` and which of its samples that is; NULL when none does. */
static hk_metric_t *family_of(hk_metrics_t *metrics, const char *name, int *kind) {
  hk_metric_t *family = hk_metrics_find(metrics, name);
  if (family != NULL && hk_metric_type(family) != HK_METRIC_HISTOGRAM) {
    *kind = COMPONENT_VALUE;
    return family;
  }
  static const struct { const char *suffix; int kind; } suffixes[] = {
      {"_bucket", COMPONENT_BUCKET}, {"_count", COMPONENT_COUNT}, {"_sum", COMPONENT_SUM}};
  size_t len = strlen(name), base_len = 0;
  for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
    if (!has_suffix(name, len, suffixes[i].suffix, &base_len)) continue;
    char base[256];
    if (base_len >= sizeof base) return NULL;
    memcpy(base, name, base_len);
    base[base_len] = '\0';
    family = hk_metrics_find(metrics, base);
    if (family != NULL && hk_metric_type(family) == HK_METRIC_HISTOGRAM) {
      *kind = suffixes[i].kind;
      return family;
    }
    return NULL;
  }
  return NULL;
}

int hk_history_record(hk_history_t *history, hk_metrics_t *metrics, const char *const *names,
                      size_t name_count, int64_t now_ms, int64_t retention_ms) {
  if (history == NULL || metrics == NULL || (names == NULL && name_count > 0) || retention_ms < 0)
    return -EINVAL;
  hk_metrics_collect(metrics);
  uint64_t counts[HK_METRICS_MAX_BUCKETS + 1];
  for (size_t n = 0; n < name_count; n++) {
    int kind = 0;
    hk_metric_t *family = family_of(metrics, names[n], &kind);
    if (family == NULL) continue;
    size_t series_count = hk_metric_series_count(family);
    size_t buckets = hk_metric_bucket_count(family);
    for (size_t i = 0; i < series_count; i++) {
      const hk_series_t *series = hk_metric_series_at(family, i);
      int rc = 0;
      if (kind == COMPONENT_VALUE) {
        rc = record_one(history, family, series, kind, names[n], now_ms, retention_ms, hk_series_value(series));
      } else {
        double sum = 0;
        uint64_t count = 0;
        hk_series_histogram(series, counts, &sum, &count);
        if (kind == COMPONENT_COUNT) {
          rc = record_one(history, family, series, kind, names[n], now_ms, retention_ms, (double)count);
        } else if (kind == COMPONENT_SUM) {
          rc = record_one(history, family, series, kind, names[n], now_ms, retention_ms, sum);
        } else {
          uint64_t cumulative = 0;
          for (size_t b = 0; b <= buckets && rc == 0; b++) {
            cumulative += counts[b];
            rc = record_one(history, family, series, COMPONENT_BUCKET + (int)b, names[n], now_ms,
                            retention_ms, (double)cumulative);
          }
        }
      }
      if (rc != 0) return rc;
    }
  }
  return 0;
}

int hk_history_visit(hk_history_t *history, const char *name, hk_history_visit_cb visit,
                     void *data) {
  for (size_t g = 0; g < history->group_count; g++) {
    const name_group_t *group = &history->groups[g];
    if (strcmp(group->name, name) != 0) continue;
    for (size_t i = 0; i < group->count; i++) {
      stream_t *s = &history->streams[group->streams[i]];
      s->view.point_count = s->len;
      s->view.times_ms = s->times ? s->times + s->start : NULL;
      s->view.values = s->values ? s->values + s->start : NULL;
      int rc = visit(&s->view, data);
      if (rc != 0) return rc;
    }
    return 0;
  }
  return 0;
}
