/* Unit tests for hk_metrics: validation and its messages, re-registration, series creation and
 * the series cap, label normalisation, histogram bucket choice, and the per-worker cells under
 * real threads. The exposition is test_hk_prom.c's. */
#include "hk_log.h"
#include "hk_metrics.h"
#include "hk_test.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>

static hk_metrics_t *new_registry(unsigned workers) {
  hk_metrics_t *m = NULL;
  HK_ASSERT_INT_EQ(hk_metrics_new(workers, &m), 0);
  HK_ASSERT(m != NULL);
  return m;
}

static hk_metric_t *reg(hk_metrics_t *r, hk_metric_type_t type, const char *name,
                        const char *const *labels, size_t label_count) {
  hk_metric_opts_t o = {
      .type = type, .name = name, .help = "Help.", .labels = labels, .label_count = label_count};
  hk_metric_t *m = NULL;
  char err[256];
  int rc = hk_metrics_register(r, &o, &m, err, sizeof err);
  if (rc != 0) HK_FAIL_("register %s: %d %s", name, rc, err);
  return m;
}

/* Registers and expects failure `rc` with exactly `message` (or containing it when `partial`). */
static void expect_register_error(hk_metrics_t *r, const hk_metric_opts_t *o, int rc,
                                  const char *message, bool partial) {
  char err[512] = "unset";
  hk_metric_t *m = (hk_metric_t *)&err; /* must be reset to NULL */
  int got = hk_metrics_register(r, o, &m, err, sizeof err);
  if (got != rc)
    HK_FAIL_("%s: expected %d, got %d (%s)", o->name ? o->name : "(null)", rc, got, err);
  HK_ASSERT(m == NULL);
  if (partial ? strstr(err, message) == NULL : strcmp(err, message) != 0)
    HK_FAIL_("error message: \"%s\", expected %s\"%s\"", err, partial ? "one containing " : "",
             message);
}

static double value_of(hk_metrics_t *r, const char *family, const char *label_value) {
  hk_metric_t *m = hk_metrics_find(r, family);
  HK_ASSERT(m != NULL);
  for (size_t i = 0; i < hk_metric_series_count(m); i++) {
    hk_series_t *s = hk_metric_series_at(m, i);
    hk_label_value_t v = hk_series_label(s, 0);
    if (v.len == strlen(label_value) && memcmp(v.str, label_value, v.len) == 0)
      return hk_series_value(s);
  }
  HK_FAIL_("no series %s{%s}", family, label_value);
}

HK_TEST(new_registers_own_families) {
  hk_metrics_t *r = new_registry(2);
  HK_ASSERT_INT_EQ(hk_metrics_family_count(r), 3);
  HK_ASSERT_STR_EQ(hk_metric_name(hk_metrics_family_at(r, 0)),
                   "hancock_metric_families_refused_total");
  HK_ASSERT_STR_EQ(hk_metric_name(hk_metrics_family_at(r, 1)), "hancock_metric_series");
  HK_ASSERT_STR_EQ(hk_metric_name(hk_metrics_family_at(r, 2)),
                   "hancock_metric_series_dropped_total");
  HK_ASSERT(hk_metrics_family_at(r, 3) == NULL);
  hk_metric_t *dropped = hk_metrics_find(r, "hancock_metric_series_dropped_total");
  HK_ASSERT_INT_EQ(hk_metric_type(dropped), HK_METRIC_COUNTER);
  HK_ASSERT_STR_EQ(hk_metric_label_name(dropped, 0), "metric");
  /* Both start with a zero series per family, so increase() sees the first drop. */
  HK_ASSERT_INT_EQ(hk_metric_series_count(dropped), 3);
  HK_ASSERT(value_of(r, "hancock_metric_series_dropped_total", "hancock_metric_series") == 0);
  /* The refusals counter starts with both reasons at 0. */
  hk_metric_t *refused = hk_metrics_find(r, "hancock_metric_families_refused_total");
  HK_ASSERT_STR_EQ(hk_metric_label_name(refused, 0), "reason");
  HK_ASSERT_INT_EQ(hk_metric_series_count(refused), 2);
  HK_ASSERT(value_of(r, "hancock_metric_families_refused_total", "family_cap") == 0);
  HK_ASSERT(value_of(r, "hancock_metric_families_refused_total", "help_too_long") == 0);
  hk_metrics_collect(r);
  HK_ASSERT(value_of(r, "hancock_metric_series", "hancock_metric_series_dropped_total") == 3);
  HK_ASSERT(value_of(r, "hancock_metric_series", "hancock_metric_families_refused_total") == 2);
  reg(r, HK_METRIC_GAUGE, "hancock_g", NULL, 0);
  HK_ASSERT_INT_EQ(hk_metric_series_count(dropped), 4);
  hk_metrics_free(r);
  hk_metrics_free(NULL);
  hk_metrics_t *bad = (hk_metrics_t *)&bad;
  HK_ASSERT_INT_EQ(hk_metrics_new(0, &bad), -EINVAL);
  HK_ASSERT(bad == NULL);
  HK_ASSERT_INT_EQ(hk_metrics_new(HK_METRICS_MAX_WORKERS + 1, &bad), -EINVAL);
}

HK_TEST(name_validation) {
  hk_metrics_t *r = new_registry(1);
  hk_metric_opts_t o = {.type = HK_METRIC_GAUGE, .help = "h"};
  o.name = "9lives";
  expect_register_error(r, &o, -EINVAL,
                        "metric name '9lives' is not valid ([a-zA-Z_:][a-zA-Z0-9_:]*)", false);
  o.name = "hancock-x";
  expect_register_error(r, &o, -EINVAL, "is not valid", true);
  o.name = "hancock x";
  expect_register_error(r, &o, -EINVAL, "is not valid", true);
  o.name = "hancock_é";
  expect_register_error(r, &o, -EINVAL, "is not valid", true);
  o.name = "";
  expect_register_error(r, &o, -EINVAL, "metric name is missing", false);
  o.name = NULL;
  expect_register_error(r, &o, -EINVAL, "metric name is missing", false);
  char longname[300];
  memset(longname, 'a', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  o.name = longname;
  expect_register_error(r, &o, -EINVAL, "is longer than 255 bytes", true);
  longname[255] = '\0';
  hk_metric_t *m = NULL;
  HK_ASSERT_INT_EQ(hk_metrics_register(r, &o, &m, NULL, 0), 0); /* err may be NULL */
  /* Colons and leading underscores are fine in metric names. */
  o.name = "_a:b:c_1";
  HK_ASSERT_INT_EQ(hk_metrics_register(r, &o, &m, NULL, 0), 0);

  o.name = "hancock_x";
  o.type = HK_METRIC_COUNTER;
  expect_register_error(r, &o, -EINVAL,
                        "metric hancock_x: counter names must end in _total (e.g. hancock_x_total)",
                        false);
  o.name = "_total";
  expect_register_error(r, &o, -EINVAL, "counter names must end in _total", true);
  o.name = "hancock_x";
  o.flags = HK_METRIC_LEGACY_COUNTER_NAME;
  HK_ASSERT_INT_EQ(hk_metrics_register(r, &o, &m, NULL, 0), 0);
  HK_ASSERT_INT_EQ(hk_metric_flags(m), HK_METRIC_LEGACY_COUNTER_NAME);
  o.name = "hancock_y";
  o.type = HK_METRIC_GAUGE;
  expect_register_error(r, &o, -EINVAL,
                        "metric hancock_y: the legacy counter name flag only applies to counters",
                        false);
  o.flags = 0x80;
  expect_register_error(r, &o, -EINVAL, "metric hancock_y: unknown flags 0x80", false);
  o.flags = 0;
  o.help = "";
  expect_register_error(r, &o, -EINVAL, "metric hancock_y: help text is missing", false);
  o.help = NULL;
  expect_register_error(r, &o, -EINVAL, "metric hancock_y: help text is missing", false);
  o.help = "bad \xff byte";
  expect_register_error(r, &o, -EINVAL, "metric hancock_y: help text is not valid UTF-8", false);
  hk_metrics_free(r);
}

HK_TEST(label_validation) {
  hk_metrics_t *r = new_registry(1);
  hk_metric_opts_t o = {.type = HK_METRIC_GAUGE, .name = "hancock_x", .help = "h"};
  const char *bad[] = {"bad-name"};
  o.labels = bad;
  o.label_count = 1;
  expect_register_error(
      r, &o, -EINVAL,
      "metric hancock_x: label name 'bad-name' is not valid ([a-zA-Z_][a-zA-Z0-9_]*)", false);
  const char *colon[] = {"a:b"};
  o.labels = colon;
  expect_register_error(r, &o, -EINVAL, "label name 'a:b' is not valid", true);
  const char *digit[] = {"1a"};
  o.labels = digit;
  expect_register_error(r, &o, -EINVAL, "label name '1a' is not valid", true);
  const char *reserved[] = {"__name__"};
  o.labels = reserved;
  expect_register_error(r, &o, -EINVAL,
                        "metric hancock_x: label name '__name__' is reserved (names starting with "
                        "__ are Prometheus's)",
                        false);
  const char *dup[] = {"mode", "model", "mode"};
  o.labels = dup;
  o.label_count = 3;
  expect_register_error(r, &o, -EINVAL, "metric hancock_x: label name 'mode' appears twice", false);
  const char *empty[] = {"a", ""};
  o.labels = empty;
  o.label_count = 2;
  expect_register_error(r, &o, -EINVAL, "metric hancock_x: label name 2 is missing", false);
  const char *nine[] = {"a", "b", "c", "d", "e", "f", "g", "h", "i"};
  o.labels = nine;
  o.label_count = 9;
  expect_register_error(r, &o, -EINVAL, "metric hancock_x: 9 labels is more than the limit of 8",
                        false);
  o.labels = NULL;
  o.label_count = 1;
  expect_register_error(r, &o, -EINVAL, "1 label names expected", true);

  const char *le[] = {"le"};
  o.labels = le;
  o.label_count = 1;
  hk_metric_t *m = NULL;
  HK_ASSERT_INT_EQ(hk_metrics_register(r, &o, &m, NULL, 0), 0); /* le is fine on a gauge */
  o.type = HK_METRIC_HISTOGRAM;
  o.name = "hancock_h";
  expect_register_error(
      r, &o, -EINVAL, "metric hancock_h: label name 'le' is reserved for histogram buckets", false);
  HK_ASSERT(hk_metrics_find(r, "hancock_h") == NULL);
  hk_metrics_free(r);
}

HK_TEST(bucket_validation) {
  hk_metrics_t *r = new_registry(1);
  hk_metric_opts_t o = {.type = HK_METRIC_HISTOGRAM, .name = "hancock_h", .help = "h"};
  double same[] = {1, 2, 2};
  o.buckets = same;
  o.bucket_count = 3;
  expect_register_error(r, &o, -EINVAL,
                        "metric hancock_h: buckets must be strictly increasing (2 comes after 2)",
                        false);
  double down[] = {1, 0.5};
  o.buckets = down;
  o.bucket_count = 2;
  expect_register_error(r, &o, -EINVAL, "(0.5 comes after 1)", true);
  double inf[] = {1, INFINITY};
  o.buckets = inf;
  expect_register_error(
      r, &o, -EINVAL,
      "metric hancock_h: bucket inf is not a finite number (the +Inf bucket is implicit)", false);
  double nan[] = {NAN};
  o.buckets = nan;
  o.bucket_count = 1;
  expect_register_error(r, &o, -EINVAL, "is not a finite number", true);
  double many[HK_METRICS_MAX_BUCKETS + 1];
  for (int i = 0; i <= HK_METRICS_MAX_BUCKETS; i++)
    many[i] = i;
  o.buckets = many;
  o.bucket_count = HK_METRICS_MAX_BUCKETS + 1;
  expect_register_error(r, &o, -EINVAL, "metric hancock_h: 65 buckets is more than the limit of 64",
                        false);
  o.bucket_count = 0;
  expect_register_error(r, &o, -EINVAL, "a histogram needs at least one bucket", true);
  o.buckets = NULL;
  o.bucket_count = 3;
  expect_register_error(r, &o, -EINVAL, "3 buckets expected, none given", true);
  o.type = HK_METRIC_GAUGE;
  o.buckets = many;
  o.bucket_count = 2;
  expect_register_error(r, &o, -EINVAL, "metric hancock_h: buckets only apply to histograms",
                        false);

  /* The maximum is fine, and NULL means Prometheus's defaults. */
  o.type = HK_METRIC_HISTOGRAM;
  o.bucket_count = HK_METRICS_MAX_BUCKETS;
  hk_metric_t *m = NULL;
  HK_ASSERT_INT_EQ(hk_metrics_register(r, &o, &m, NULL, 0), 0);
  HK_ASSERT_INT_EQ(hk_metric_bucket_count(m), 64);
  HK_ASSERT(hk_metric_bucket(m, 63) == 63);
  HK_ASSERT(isinf(hk_metric_bucket(m, 64)));
  o.name = "hancock_default";
  o.buckets = NULL;
  o.bucket_count = 0;
  HK_ASSERT_INT_EQ(hk_metrics_register(r, &o, &m, NULL, 0), 0);
  static const double defaults[] = {.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10};
  HK_ASSERT_INT_EQ(hk_metric_bucket_count(m), 11);
  for (size_t i = 0; i < 11; i++)
    HK_ASSERT(hk_metric_bucket(m, i) == defaults[i]);
  /* The same defaults spelled out are the same registration. */
  hk_metric_t *again = NULL;
  o.buckets = defaults;
  o.bucket_count = 11;
  HK_ASSERT_INT_EQ(hk_metrics_register(r, &o, &again, NULL, 0), 0);
  HK_ASSERT(again == m);
  hk_metrics_free(r);
}

HK_TEST(reregistration) {
  hk_metrics_t *r = new_registry(1);
  const char *mode[] = {"mode"};
  hk_metric_opts_t o = {.type = HK_METRIC_COUNTER,
                        .name = "hancock_x_total",
                        .help = "First.",
                        .labels = mode,
                        .label_count = 1};
  hk_metric_t *first = NULL, *second = NULL;
  HK_ASSERT_INT_EQ(hk_metrics_register(r, &o, &first, NULL, 0), 0);
  o.help = "Second help is ignored.";
  HK_ASSERT_INT_EQ(hk_metrics_register(r, &o, &second, NULL, 0), 0);
  HK_ASSERT(first == second);
  HK_ASSERT_STR_EQ(hk_metric_help(first), "First.");
  HK_ASSERT(hk_metrics_find(r, "hancock_x_total") == first);
  HK_ASSERT(hk_metrics_find(r, "hancock_x") == NULL);

  const char *model[] = {"model"};
  o.type = HK_METRIC_GAUGE;
  o.labels = model;
  expect_register_error(r, &o, -EEXIST,
                        "metric hancock_x_total already registered as a counter with labels "
                        "(mode); cannot register it as a gauge with labels (model)",
                        false);
  o.type = HK_METRIC_COUNTER;
  expect_register_error(r, &o, -EEXIST,
                        "metric hancock_x_total already registered as a counter with labels "
                        "(mode); cannot register it as a counter with labels (model)",
                        false);
  o.label_count = 0;
  expect_register_error(r, &o, -EEXIST, "cannot register it as a counter with no labels", true);
  o.labels = mode;
  o.label_count = 1;
  o.flags = HK_METRIC_LEGACY_COUNTER_NAME;
  expect_register_error(r, &o, -EEXIST, "as a legacy-named counter with labels (mode)", true);

  double b1[] = {0.1, 1}, b2[] = {0.1, 2};
  hk_metric_opts_t h = {.type = HK_METRIC_HISTOGRAM,
                        .name = "hancock_h_seconds",
                        .help = "h",
                        .buckets = b1,
                        .bucket_count = 2};
  HK_ASSERT_INT_EQ(hk_metrics_register(r, &h, &first, NULL, 0), 0);
  h.buckets = b2;
  expect_register_error(r, &h, -EEXIST,
                        "metric hancock_h_seconds already registered as a histogram with no "
                        "labels and buckets (0.1, 1); cannot register it as a histogram with no "
                        "labels and buckets (0.1, 2)",
                        false);
  h.buckets = b1;
  HK_ASSERT_INT_EQ(hk_metrics_register(r, &h, &second, NULL, 0), 0);
  HK_ASSERT(first == second);
  HK_ASSERT_INT_EQ(hk_metrics_family_count(r), 5);
  hk_metrics_free(r);
}

HK_TEST(exposition_name_collisions) {
  hk_metrics_t *r = new_registry(1);
  reg(r, HK_METRIC_HISTOGRAM, "hancock_latency_seconds", NULL, 0);
  hk_metric_opts_t o = {
      .type = HK_METRIC_GAUGE, .name = "hancock_latency_seconds_count", .help = "h"};
  expect_register_error(r, &o, -EEXIST,
                        "metric hancock_latency_seconds_count would collide with histogram "
                        "hancock_latency_seconds, whose exposition also uses the name "
                        "hancock_latency_seconds_count",
                        false);
  o.name = "hancock_latency_seconds_bucket";
  expect_register_error(r, &o, -EEXIST, "would collide", true);
  /* The OpenMetrics family of hancock_hits_total is hancock_hits. */
  reg(r, HK_METRIC_COUNTER, "hancock_hits_total", NULL, 0);
  o.name = "hancock_hits";
  expect_register_error(r, &o, -EEXIST, "would collide with counter hancock_hits_total", true);
  /* And the other way round. */
  reg(r, HK_METRIC_GAUGE, "hancock_open", NULL, 0);
  o.type = HK_METRIC_COUNTER;
  o.name = "hancock_open_total";
  expect_register_error(r, &o, -EEXIST, "would collide with gauge hancock_open", true);
  o.type = HK_METRIC_HISTOGRAM;
  o.name = "hancock_latency";
  reg(r, HK_METRIC_GAUGE, "hancock_latency_sum_other", NULL, 0);
  hk_metric_t *m = NULL;
  HK_ASSERT_INT_EQ(hk_metrics_register(r, &o, &m, NULL, 0), 0);
  hk_metrics_free(r);
}

HK_TEST(series_lookup) {
  hk_metrics_t *r = new_registry(2);
  const char *labels[] = {"route", "status"};
  hk_metric_t *m = reg(r, HK_METRIC_COUNTER, "hancock_requests_total", labels, 2);
  const char *a[] = {"/a", "200"}, *a2[] = {"/a", "200"}, *b[] = {"/a", "500"};
  hk_series_t *sa = hk_metric_series_str(m, a, 2);
  HK_ASSERT(sa != NULL);
  HK_ASSERT(hk_metric_series_str(m, a2, 2) == sa);
  hk_series_t *sb = hk_metric_series_str(m, b, 2);
  HK_ASSERT(sb != NULL && sb != sa);
  /* Values need not be NUL-terminated, and the registry keeps its own copy. */
  char buf[] = "/aXX200";
  hk_label_value_t v[] = {{buf, 2}, {buf + 4, 3}};
  HK_ASSERT(hk_metric_series(m, v, 2) == sa);
  buf[1] = 'z';
  HK_ASSERT_MEM_EQ(hk_series_label(sa, 0).str, hk_series_label(sa, 0).len, "/a", 2);
  HK_ASSERT_INT_EQ(hk_series_label(sa, 0).str[2], '\0');
  /* "a","bc" and "ab","c" are different label sets. */
  const char *x1[] = {"a", "bc"}, *x2[] = {"ab", "c"};
  HK_ASSERT(hk_metric_series_str(m, x1, 2) != hk_metric_series_str(m, x2, 2));
  /* Wrong count, NULL values, a NULL family. */
  HK_ASSERT(hk_metric_series_str(m, a, 1) == NULL);
  const char *null_value[] = {"/a", NULL};
  HK_ASSERT(hk_metric_series_str(m, null_value, 2) == NULL);
  hk_label_value_t bad[] = {{NULL, 3}, {"x", 1}};
  HK_ASSERT(hk_metric_series(m, bad, 2) == NULL);
  hk_label_value_t empty[] = {{NULL, 0}, {"", 0}};
  hk_series_t *se = hk_metric_series(m, empty, 2);
  HK_ASSERT(se != NULL);
  HK_ASSERT_INT_EQ(hk_series_label(se, 0).len, 0);
  HK_ASSERT(hk_metric_series(NULL, v, 2) == NULL);
  HK_ASSERT_INT_EQ(hk_metric_series_count(m), 5);
  HK_ASSERT(hk_metric_series_at(m, 0) == sa);
  HK_ASSERT(hk_metric_series_at(m, 1) == sb);
  HK_ASSERT(hk_metric_series_at(m, 5) == NULL);

  /* A family without labels has one series. */
  hk_metric_t *g = reg(r, HK_METRIC_GAUGE, "hancock_up", NULL, 0);
  hk_series_t *sg = hk_metric_series(g, NULL, 0);
  HK_ASSERT(sg != NULL && hk_metric_series(g, NULL, 0) == sg);

  /* Many series: the table grows while lookups keep finding earlier ones. */
  hk_metric_opts_t o = {.type = HK_METRIC_COUNTER,
                        .name = "hancock_many_total",
                        .help = "h",
                        .labels = labels,
                        .label_count = 1,
                        .series_cap = 5000};
  hk_metric_t *many = NULL;
  HK_ASSERT_INT_EQ(hk_metrics_register(r, &o, &many, NULL, 0), 0);
  hk_series_t *made[5000];
  for (int i = 0; i < 5000; i++) {
    char value[16];
    snprintf(value, sizeof value, "v%d", i);
    const char *vals[] = {value};
    made[i] = hk_metric_series_str(many, vals, 1);
    HK_ASSERT(made[i] != NULL);
    hk_series_add(made[i], (unsigned)i % 2, i);
  }
  for (int i = 0; i < 5000; i++) {
    char value[16];
    snprintf(value, sizeof value, "v%d", i);
    const char *vals[] = {value};
    HK_ASSERT(hk_metric_series_str(many, vals, 1) == made[i]);
    HK_ASSERT(hk_metric_series_at(many, (size_t)i) == made[i]);
    HK_ASSERT(hk_series_value(made[i]) == i);
  }
  hk_metrics_free(r);
}

static int drop_events;
static char drop_fields[256];

static bool count_drops(void *data, hk_log_level_t level, const char *request_id, const char *event,
                        const char *message, const hk_log_field_t *fields, size_t field_count) {
  (void)data;
  (void)request_id;
  (void)message;
  if (strcmp(event, "metric_series_dropped") != 0) return false;
  HK_ASSERT_INT_EQ(level, HK_LOG_WARNING);
  HK_ASSERT_INT_EQ(field_count, 2);
  snprintf(drop_fields, sizeof drop_fields, "%s=%.*s %s=%lld", fields[0].key, (int)fields[0].len,
           fields[0].str, fields[1].key, fields[1].i);
  drop_events++;
  return true;
}

HK_TEST(series_cap) {
  hk_log_set_enricher(count_drops, NULL);
  hk_metrics_t *r = new_registry(2);
  const char *labels[] = {"client"};
  hk_metric_opts_t o = {.type = HK_METRIC_COUNTER,
                        .name = "hancock_client_requests_total",
                        .help = "h",
                        .labels = labels,
                        .label_count = 1,
                        .series_cap = 3};
  hk_metric_t *m = NULL;
  HK_ASSERT_INT_EQ(hk_metrics_register(r, &o, &m, NULL, 0), 0);
  hk_series_t *kept[3];
  for (int i = 0; i < 3; i++) {
    char v[8];
    snprintf(v, sizeof v, "c%d", i);
    const char *vals[] = {v};
    kept[i] = hk_metric_series_str(m, vals, 1);
    HK_ASSERT(kept[i] != NULL);
    hk_series_add(kept[i], 1, 10 + i);
  }
  HK_ASSERT_INT_EQ(drop_events, 0);
  const char *extra[] = {"c3"};
  hk_series_t *dropped = hk_metric_series_str(m, extra, 1);
  HK_ASSERT(dropped == NULL);
  hk_series_add(dropped, 0, 1); /* a no-op */
  hk_series_observe(dropped, 0, 1);
  hk_series_gauge_set(dropped, 1);
  hk_series_gauge_add(dropped, 1);
  HK_ASSERT(value_of(r, "hancock_metric_series_dropped_total", "hancock_client_requests_total") ==
            1);
  HK_ASSERT_INT_EQ(drop_events, 1);
  HK_ASSERT_STR_EQ(drop_fields, "metric=hancock_client_requests_total cap=3");
  const char *extra2[] = {"c4"};
  HK_ASSERT(hk_metric_series_str(m, extra2, 1) == NULL);
  HK_ASSERT(hk_metric_series_str(m, extra, 1) == NULL);
  HK_ASSERT(value_of(r, "hancock_metric_series_dropped_total", "hancock_client_requests_total") ==
            3);
  HK_ASSERT_INT_EQ(drop_events, 1); /* logged once per family */
  /* The first `cap` series are still there with their values. */
  HK_ASSERT_INT_EQ(hk_metric_series_count(m), 3);
  for (int i = 0; i < 3; i++) {
    char v[8];
    snprintf(v, sizeof v, "c%d", i);
    const char *vals[] = {v};
    HK_ASSERT(hk_metric_series_str(m, vals, 1) == kept[i]);
    HK_ASSERT(hk_series_value(kept[i]) == 10 + i);
  }
  hk_metrics_collect(r);
  HK_ASSERT(value_of(r, "hancock_metric_series", "hancock_client_requests_total") == 3);
  /* The default cap. */
  hk_metric_t *d = reg(r, HK_METRIC_GAUGE, "hancock_default_cap", labels, 1);
  for (int i = 0; i <= HK_METRICS_DEFAULT_SERIES_CAP; i++) {
    char v[16];
    snprintf(v, sizeof v, "%d", i);
    const char *vals[] = {v};
    hk_series_t *s = hk_metric_series_str(d, vals, 1);
    HK_ASSERT((s == NULL) == (i == HK_METRICS_DEFAULT_SERIES_CAP));
  }
  HK_ASSERT_INT_EQ(drop_events, 2);
  HK_ASSERT(value_of(r, "hancock_metric_series_dropped_total", "hancock_default_cap") == 1);
  hk_log_set_enricher(NULL, NULL);
  hk_metrics_free(r);
}

/* The registry's own families have a cap too; a flood of families must not recurse. */
HK_TEST(registry_families_capped) {
  hk_log_set_enricher(count_drops, NULL);
  drop_events = 0;
  hk_metrics_t *r = new_registry(1);
  hk_metric_t *last = NULL;
  for (int i = 0; i < 10010; i++) {
    char name[32];
    snprintf(name, sizeof name, "hancock_g%05d", i);
    hk_metric_opts_t o = {.type = HK_METRIC_GAUGE, .name = name, .help = "h"};
    HK_ASSERT_INT_EQ(hk_metrics_register(r, &o, &last, NULL, 0), 0);
  }
  hk_metric_t *dropped = hk_metrics_find(r, "hancock_metric_series_dropped_total");
  hk_metric_t *count = hk_metrics_find(r, "hancock_metric_series");
  HK_ASSERT_INT_EQ(hk_metric_series_count(dropped), 10000);
  HK_ASSERT_INT_EQ(hk_metric_series_count(count), 10000);
  HK_ASSERT_INT_EQ(drop_events, 2); /* each of the two logged once */
  hk_metrics_collect(r);
  hk_log_set_enricher(NULL, NULL);
  hk_metrics_free(r);
}

static int refusal_events;
static char refusal_fields[512];

static bool count_refusals(void *data, hk_log_level_t level, const char *request_id,
                           const char *event, const char *message, const hk_log_field_t *fields,
                           size_t field_count) {
  (void)data;
  (void)request_id;
  (void)message;
  if (strcmp(event, "metric_family_refused") != 0) return false;
  HK_ASSERT_INT_EQ(level, HK_LOG_WARNING);
  HK_ASSERT_INT_EQ(field_count, 3);
  snprintf(refusal_fields, sizeof refusal_fields, "%s=%.*s %s=%.*s %s=%lld", fields[0].key,
           (int)fields[0].len, fields[0].str, fields[1].key, (int)fields[1].len, fields[1].str,
           fields[2].key, fields[2].i);
  refusal_events++;
  return true;
}

static int register_script_gauge(hk_metrics_t *r, const char *name, hk_metric_t **out, char *err,
                                 size_t errsize) {
  hk_metric_opts_t o = {.type = HK_METRIC_GAUGE, .name = name, .help = "From a script.",
                        .flags = HK_METRIC_SCRIPT};
  return hk_metrics_register(r, &o, out, err, errsize);
}

/* The bug: a script naming families from request input made thousands of families. Scripts'
 * families are capped; refusals are counted and logged once; the core is never refused. */
HK_TEST(script_family_cap) {
  hk_log_set_enricher(count_refusals, NULL);
  refusal_events = 0;
  hk_metrics_t *r = new_registry(2);
  hk_metric_t *first = NULL, *m = NULL;
  char name[64], err[512];
  for (int i = 0; i < HK_METRICS_DEFAULT_FAMILY_CAP; i++) {
    snprintf(name, sizeof name, "hk_script_%04d", i);
    HK_ASSERT_INT_EQ(register_script_gauge(r, name, i == 0 ? &first : &m, err, sizeof err), 0);
  }
  HK_ASSERT_INT_EQ(hk_metric_flags(first), 0); /* the option is not part of the family */
  HK_ASSERT_INT_EQ(refusal_events, 0);

  m = (hk_metric_t *)&m;
  HK_ASSERT_INT_EQ(register_script_gauge(r, "hk_script_from_request", &m, err, sizeof err), -ENOSPC);
  HK_ASSERT(m == NULL);
  HK_ASSERT_STR_EQ(err, "metric hk_script_from_request not registered: scripts have registered "
                        "1000 metric families, the limit (counted in "
                        "hancock_metric_families_refused_total)");
  HK_ASSERT(hk_metrics_find(r, "hk_script_from_request") == NULL);
  HK_ASSERT(value_of(r, "hancock_metric_families_refused_total", "family_cap") == 1);
  HK_ASSERT_INT_EQ(refusal_events, 1);
  HK_ASSERT_STR_EQ(refusal_fields, "metric=hk_script_from_request reason=family_cap limit=1000");
  HK_ASSERT_INT_EQ(register_script_gauge(r, "hk_script_again", &m, NULL, 0), -ENOSPC);
  HK_ASSERT(value_of(r, "hancock_metric_families_refused_total", "family_cap") == 2);
  HK_ASSERT_INT_EQ(refusal_events, 1); /* logged once */

  /* At the cap: an existing family is still returned (a reload registers it again), ... */
  HK_ASSERT_INT_EQ(register_script_gauge(r, "hk_script_0000", &m, NULL, 0), 0);
  HK_ASSERT(m == first);
  /* ... and the core's registrations are not counted, so they always fit. */
  reg(r, HK_METRIC_GAUGE, "hancock_core_later", NULL, 0);
  HK_ASSERT_INT_EQ(hk_metrics_family_count(r), 3 + HK_METRICS_DEFAULT_FAMILY_CAP + 1);
  /* A script re-registering a core family gets it too. */
  HK_ASSERT_INT_EQ(register_script_gauge(r, "hancock_core_later", &m, NULL, 0), 0);
  HK_ASSERT(m == hk_metrics_find(r, "hancock_core_later"));
  /* Conflicts still say what conflicts rather than that the cap is reached. */
  hk_metric_opts_t counter = {.type = HK_METRIC_COUNTER, .name = "hk_script_0001",
                              .help = "h", .flags = HK_METRIC_SCRIPT | HK_METRIC_LEGACY_COUNTER_NAME};
  expect_register_error(r, &counter, -EEXIST, "already registered as a gauge", true);

  /* A raised cap admits more; the refusals stay counted. */
  hk_metrics_set_family_cap(r, HK_METRICS_DEFAULT_FAMILY_CAP + 1);
  HK_ASSERT_INT_EQ(register_script_gauge(r, "hk_script_from_request", &m, NULL, 0), 0);
  HK_ASSERT_INT_EQ(register_script_gauge(r, "hk_script_one_more", &m, NULL, 0), -ENOSPC);
  HK_ASSERT(value_of(r, "hancock_metric_families_refused_total", "family_cap") == 3);
  HK_ASSERT(value_of(r, "hancock_metric_families_refused_total", "help_too_long") == 0);
  hk_metrics_collect(r);
  HK_ASSERT(value_of(r, "hancock_metric_series", "hancock_metric_families_refused_total") == 2);
  hk_log_set_enricher(NULL, NULL);
  hk_metrics_free(r);
}

/* The bug: 300 families with 100 KB of help made a 30 MB scrape. Help is bounded, for everyone. */
HK_TEST(help_length_cap) {
  hk_log_set_enricher(count_refusals, NULL);
  refusal_events = 0;
  hk_metrics_t *r = new_registry(1);
  char help[HK_METRICS_MAX_HELP + 2];
  memset(help, 'h', sizeof help);
  help[HK_METRICS_MAX_HELP] = '\0';
  hk_metric_opts_t o = {.type = HK_METRIC_GAUGE, .name = "hk_long_help", .help = help};
  hk_metric_t *m = NULL;
  HK_ASSERT_INT_EQ(hk_metrics_register(r, &o, &m, NULL, 0), 0); /* exactly the limit */
  HK_ASSERT_INT_EQ(strlen(hk_metric_help(m)), HK_METRICS_MAX_HELP);
  help[HK_METRICS_MAX_HELP] = 'h';
  help[HK_METRICS_MAX_HELP + 1] = '\0';
  o.name = "hk_too_long_help";
  expect_register_error(r, &o, -E2BIG,
                        "metric hk_too_long_help: help text is 1025 bytes, more than the limit of "
                        "1024",
                        false);
  HK_ASSERT(hk_metrics_find(r, "hk_too_long_help") == NULL);
  o.flags = HK_METRIC_SCRIPT;
  expect_register_error(r, &o, -E2BIG, "more than the limit of 1024", true);
  HK_ASSERT(value_of(r, "hancock_metric_families_refused_total", "help_too_long") == 2);
  HK_ASSERT(value_of(r, "hancock_metric_families_refused_total", "family_cap") == 0);
  HK_ASSERT_INT_EQ(refusal_events, 1);
  HK_ASSERT_STR_EQ(refusal_fields, "metric=hk_too_long_help reason=help_too_long limit=1024");
  hk_log_set_enricher(NULL, NULL);
  hk_metrics_free(r);
}

HK_TEST(label_value_truncation) {
  hk_metrics_t *r = new_registry(1);
  const char *labels[] = {"path"};
  hk_metric_t *m = reg(r, HK_METRIC_GAUGE, "hancock_paths", labels, 1);
  char value[400];
  memset(value, 'a', sizeof value);
  hk_label_value_t v = {value, 300};
  hk_series_t *s = hk_metric_series(m, &v, 1);
  HK_ASSERT_INT_EQ(hk_series_label(s, 0).len, HK_METRICS_MAX_LABEL_VALUE);
  /* Values equal in their first 256 bytes are one series. */
  value[299] = 'b';
  HK_ASSERT(hk_metric_series(m, &v, 1) == s);
  v.len = 256;
  HK_ASSERT(hk_metric_series(m, &v, 1) == s);
  v.len = 255;
  HK_ASSERT(hk_metric_series(m, &v, 1) != s);

  /* A two-byte character straddling the limit is left out whole. */
  memcpy(value + 255, "\xC3\xA9", 2); /* é at 255..256 */
  v.len = 300;
  s = hk_metric_series(m, &v, 1);
  HK_ASSERT_INT_EQ(hk_series_label(s, 0).len, 255);
  /* A three-byte one at 254..256, and a four-byte one at 253..256. */
  memset(value, 'a', sizeof value);
  memcpy(value + 254, "\xE2\x82\xAC", 3); /* € */
  s = hk_metric_series(m, &v, 1);
  HK_ASSERT_INT_EQ(hk_series_label(s, 0).len, 254);
  memset(value, 'a', sizeof value);
  memcpy(value + 253, "\xF0\x9F\x98\x80", 4); /* 😀 */
  s = hk_metric_series(m, &v, 1);
  HK_ASSERT_INT_EQ(hk_series_label(s, 0).len, 253);
  /* Ending exactly at the limit, it stays. */
  memset(value, 'a', sizeof value);
  memcpy(value + 252, "\xF0\x9F\x98\x80", 4);
  s = hk_metric_series(m, &v, 1);
  HK_ASSERT_INT_EQ(hk_series_label(s, 0).len, 256);
  HK_ASSERT_MEM_EQ(hk_series_label(s, 0).str + 252, 4, "\xF0\x9F\x98\x80", 4);
  hk_metrics_free(r);
}

HK_TEST(label_value_invalid_utf8) {
  hk_metrics_t *r = new_registry(1);
  const char *labels[] = {"v"};
  hk_metric_t *m = reg(r, HK_METRIC_GAUGE, "hancock_values", labels, 1);
  static const struct {
    const char *in, *out;
  } cases[] = {
      {"a\xff"
       "b",
       "a\xEF\xBF\xBD"
       "b"},
      {"\xC3", "\xEF\xBF\xBD"},                                 /* truncated sequence */
      {"\xC0\xAF", "\xEF\xBF\xBD\xEF\xBF\xBD"},                 /* overlong */
      {"\xED\xA0\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* surrogate */
      {"\xF4\x90\x80\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* > U+10FFFF */
      {"ok \xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80", "ok \xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *vals[] = {cases[i].in};
    hk_series_t *s = hk_metric_series_str(m, vals, 1);
    HK_ASSERT(s != NULL);
    hk_label_value_t got = hk_series_label(s, 0);
    HK_ASSERT_MEM_EQ(got.str, got.len, cases[i].out, strlen(cases[i].out));
    /* The replacement is the key: the same raw bytes find the same series. */
    HK_ASSERT(hk_metric_series_str(m, vals, 1) == s);
  }
  /* A long invalid value is still capped at the limit. */
  char longbad[600];
  memset(longbad, 0xff, sizeof longbad);
  hk_label_value_t v = {longbad, sizeof longbad};
  hk_series_t *s = hk_metric_series(m, &v, 1);
  HK_ASSERT_INT_EQ(hk_series_label(s, 0).len, 255); /* 85 replacement characters */
  hk_metrics_free(r);
}

HK_TEST(histogram_buckets) {
  hk_metrics_t *r = new_registry(3);
  double bounds[] = {-1, 0, 0.5, 1, 2.5};
  hk_metric_opts_t o = {.type = HK_METRIC_HISTOGRAM,
                        .name = "hancock_h",
                        .help = "h",
                        .buckets = bounds,
                        .bucket_count = 5};
  hk_metric_t *m = NULL;
  HK_ASSERT_INT_EQ(hk_metrics_register(r, &o, &m, NULL, 0), 0);
  hk_series_t *s = hk_metric_series(m, NULL, 0);
  /* value -> bucket index (5 = +Inf); a value equal to a bound lands in that bound's bucket. */
  static const struct {
    double value;
    int bucket;
  } cases[] = {{-INFINITY, 0}, {-5, 0},        {-1, 0},    {-0.999, 1},    {0, 1},
               {-0.0, 1},      {0.1, 2},       {0.5, 2},   {0.5000001, 3}, {1, 3},
               {2.5, 4},       {2.5000001, 5}, {1e300, 5}, {INFINITY, 5}};
  size_t n = sizeof cases / sizeof cases[0];
  uint64_t expect[6] = {0};
  for (size_t i = 0; i < n; i++) {
    hk_series_observe(s, (unsigned)i % 3, cases[i].value);
    expect[cases[i].bucket]++;
    uint64_t got[6];
    double sum;
    uint64_t count;
    hk_series_histogram(s, got, &sum, &count);
    for (int b = 0; b < 6; b++) {
      if (got[b] != expect[b])
        HK_FAIL_("after observing %g: bucket %d has %" PRIu64 ", expected %" PRIu64, cases[i].value,
                 b, got[b], expect[b]);
    }
    HK_ASSERT_INT_EQ(count, i + 1);
  }
  hk_series_observe(s, 0, NAN); /* ignored */
  uint64_t got[6], count;
  double sum;
  hk_series_histogram(s, got, &sum, &count);
  HK_ASSERT_INT_EQ(count, n);
  HK_ASSERT(isnan(sum)); /* -Inf + +Inf */
  HK_ASSERT(hk_series_value(s) == (double)n);

  /* Finite sums, over workers. */
  hk_metric_t *lat = reg(r, HK_METRIC_HISTOGRAM, "hancock_latency_seconds", NULL, 0);
  hk_series_t *l = hk_metric_series(lat, NULL, 0);
  hk_series_observe(l, 0, 0.005);
  hk_series_observe(l, 1, 0.25);
  hk_series_observe(l, 2, 100);
  uint64_t lg[12];
  hk_series_histogram(l, lg, &sum, &count);
  HK_ASSERT(sum == 0.005 + 0.25 + 100);
  HK_ASSERT_INT_EQ(count, 3);
  HK_ASSERT_INT_EQ(lg[0], 1);
  HK_ASSERT_INT_EQ(lg[5], 1);
  HK_ASSERT_INT_EQ(lg[11], 1);
  hk_metrics_free(r);
}

HK_TEST(counter_and_gauge_values) {
  hk_metrics_t *r = new_registry(4);
  hk_metric_t *c = reg(r, HK_METRIC_COUNTER, "hancock_c_total", NULL, 0);
  hk_series_t *s = hk_metric_series(c, NULL, 0);
  for (unsigned w = 0; w < 4; w++)
    hk_series_add(s, w, w + 0.5);
  HK_ASSERT(hk_series_value(s) == 0.5 + 1.5 + 2.5 + 3.5);
  hk_series_add(s, 0, -1);  /* counters only go up */
  hk_series_add(s, 0, NAN); /* and never become NaN */
  HK_ASSERT(hk_series_value(s) == 8);
  hk_series_observe(s, 0, 1); /* the wrong kind of update is ignored */
  hk_series_gauge_set(s, 100);
  HK_ASSERT(hk_series_value(s) == 8);

  hk_metric_t *g = reg(r, HK_METRIC_GAUGE, "hancock_g", NULL, 0);
  hk_series_t *gs = hk_metric_series(g, NULL, 0);
  hk_series_gauge_set(gs, 5);
  hk_series_gauge_add(gs, -7.5);
  HK_ASSERT(hk_series_value(gs) == -2.5);
  hk_series_add(gs, 3, 2.5); /* add on a gauge adds */
  HK_ASSERT(hk_series_value(gs) == 0);
  hk_series_gauge_set(gs, INFINITY);
  HK_ASSERT(isinf(hk_series_value(gs)));
  hk_metrics_free(r);
}

HK_TEST(family_order) {
  hk_metrics_t *r = new_registry(1);
  const char *names[] = {"zeta",      "alpha",       "hancock_b", "Upper",
                         "hancock_a", "hancock_a_b", "_under",    "hancock:colon"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    reg(r, HK_METRIC_GAUGE, names[i], NULL, 0);
  size_t count = hk_metrics_family_count(r);
  HK_ASSERT_INT_EQ(count, 8 + 3); /* and the registry's own */
  for (size_t i = 1; i < count; i++)
    HK_ASSERT(strcmp(hk_metric_name(hk_metrics_family_at(r, i - 1)),
                     hk_metric_name(hk_metrics_family_at(r, i))) < 0);
  HK_ASSERT_STR_EQ(hk_metric_name(hk_metrics_family_at(r, 0)), "Upper");
  HK_ASSERT_STR_EQ(hk_metric_name(hk_metrics_family_after(r, NULL)), "Upper");
  HK_ASSERT_STR_EQ(hk_metric_name(hk_metrics_family_after(r, "hancock_a")), "hancock_a_b");
  HK_ASSERT_STR_EQ(hk_metric_name(hk_metrics_family_after(r, "hancock_a_")), "hancock_a_b");
  HK_ASSERT_STR_EQ(hk_metric_name(hk_metrics_family_after(r, "hancock:")), "hancock:colon");
  HK_ASSERT_STR_EQ(hk_metric_name(hk_metrics_family_after(r, "")), "Upper");
  HK_ASSERT(hk_metrics_family_after(r, "zeta") == NULL);
  HK_ASSERT(hk_metrics_family_after(r, "zz") == NULL);
  hk_metrics_free(r);
}

static int collected;

static void collector(hk_metrics_t *metrics, void *data) {
  hk_metric_t *g = data;
  collected++;
  hk_series_gauge_set(hk_metric_series(g, NULL, 0), collected);
  /* Collectors run without the registry lock: registering from one is fine. */
  hk_metric_opts_t o = {.type = HK_METRIC_GAUGE, .name = "hancock_from_collector", .help = "h"};
  hk_metric_t *m = NULL;
  HK_ASSERT_INT_EQ(hk_metrics_register(metrics, &o, &m, NULL, 0), 0);
}

HK_TEST(collectors) {
  hk_metrics_t *r = new_registry(1);
  hk_metric_t *g = reg(r, HK_METRIC_GAUGE, "hancock_collected", NULL, 0);
  HK_ASSERT_INT_EQ(hk_metrics_add_collector(r, collector, g), 0);
  HK_ASSERT_INT_EQ(hk_metrics_add_collector(r, NULL, g), -EINVAL);
  hk_metrics_collect(r);
  hk_metrics_collect(r);
  HK_ASSERT_INT_EQ(collected, 2);
  HK_ASSERT(hk_series_value(hk_metric_series(g, NULL, 0)) == 2);
  HK_ASSERT(hk_metrics_find(r, "hancock_from_collector") != NULL);
  int added = 2; /* the built-in one and ours */
  while (hk_metrics_add_collector(r, collector, g) == 0)
    added++;
  HK_ASSERT(added >= 16);
  HK_ASSERT_INT_EQ(hk_metrics_add_collector(r, collector, g), -ENOSPC);
  hk_metrics_free(r);
}

static int removable_calls;

static void removable(hk_metrics_t *metrics, void *data) {
  (void)metrics;
  (void)data;
  removable_calls++;
}

static void removes_itself(hk_metrics_t *metrics, void *data) {
  (void)data;
  HK_ASSERT_INT_EQ(hk_metrics_remove_collector(metrics, removes_itself, NULL), -EDEADLK);
}

/* The bug: the server added a collector pointing at its worker and never removed it, so a
 * registry outliving the server called into freed memory. */
HK_TEST(remove_collector) {
  hk_metrics_t *r = new_registry(1);
  int a = 0, b = 0;
  HK_ASSERT_INT_EQ(hk_metrics_add_collector(r, removable, &a), 0);
  HK_ASSERT_INT_EQ(hk_metrics_add_collector(r, removable, &b), 0);
  hk_metrics_collect(r);
  HK_ASSERT_INT_EQ(removable_calls, 2);
  /* Matched by callback and data: removing a's leaves b's. */
  HK_ASSERT_INT_EQ(hk_metrics_remove_collector(r, removable, &a), 0);
  HK_ASSERT_INT_EQ(hk_metrics_remove_collector(r, removable, &a), -ENOENT);
  HK_ASSERT_INT_EQ(hk_metrics_remove_collector(r, collector, &b), -ENOENT);
  HK_ASSERT_INT_EQ(hk_metrics_remove_collector(r, NULL, &b), -EINVAL);
  HK_ASSERT_INT_EQ(hk_metrics_remove_collector(NULL, removable, &b), -EINVAL);
  hk_metrics_collect(r);
  HK_ASSERT_INT_EQ(removable_calls, 3);
  HK_ASSERT_INT_EQ(hk_metrics_remove_collector(r, removable, &b), 0);
  hk_metrics_collect(r);
  HK_ASSERT_INT_EQ(removable_calls, 3);
  /* Removal frees the slot. */
  int added = 0;
  while (hk_metrics_add_collector(r, removable, &a) == 0)
    added++;
  HK_ASSERT_INT_EQ(hk_metrics_remove_collector(r, removable, &a), 0);
  HK_ASSERT_INT_EQ(hk_metrics_add_collector(r, removable, &b), 0);
  HK_ASSERT_INT_EQ(hk_metrics_add_collector(r, removable, &b), -ENOSPC);
  while (hk_metrics_remove_collector(r, removable, &a) == 0)
    added--;
  HK_ASSERT_INT_EQ(added, 1);
  /* From inside a collector it would wait for itself. */
  HK_ASSERT_INT_EQ(hk_metrics_add_collector(r, removes_itself, NULL), 0);
  hk_metrics_collect(r);
  hk_metrics_free(r);
}

/* A collector's data, marked dead as soon as removal returns: a collect still running it then
 * would see the mark (the server frees its worker at that point). */
typedef struct owner_s {
  atomic_bool alive;
  atomic_int calls;
} owner_t;

static void check_owner(hk_metrics_t *metrics, void *data) {
  (void)metrics;
  owner_t *owner = data;
  HK_ASSERT(atomic_load(&owner->alive));
  for (volatile int spin = 0; spin < 200; spin++) {
  }
  HK_ASSERT(atomic_load(&owner->alive)); /* still alive at the end of the call */
  atomic_fetch_add(&owner->calls, 1);
}

static atomic_bool scraping;

static void *scrape_loop(void *p) {
  hk_metrics_t *r = p;
  while (atomic_load(&scraping))
    hk_metrics_collect(r);
  return NULL;
}

HK_TEST(remove_collector_waits_for_a_running_collect) {
  hk_metrics_t *r = new_registry(1);
  atomic_store(&scraping, true);
  pthread_t scraper;
  HK_ASSERT_INT_EQ(pthread_create(&scraper, NULL, scrape_loop, r), 0);
  owner_t owner;
  for (int i = 0; i < 2000; i++) {
    atomic_store(&owner.alive, true);
    atomic_store(&owner.calls, 0);
    HK_ASSERT_INT_EQ(hk_metrics_add_collector(r, check_owner, &owner), 0);
    while (atomic_load(&owner.calls) == 0) { /* the scraper is running it: an event, not time */
    }
    HK_ASSERT_INT_EQ(hk_metrics_remove_collector(r, check_owner, &owner), 0);
    atomic_store(&owner.alive, false);
    int calls = atomic_load(&owner.calls);
    /* Nothing calls it after removal. */
    hk_metrics_collect(r);
    HK_ASSERT_INT_EQ(atomic_load(&owner.calls), calls);
  }
  atomic_store(&scraping, false);
  pthread_join(scraper, NULL);
  hk_metrics_free(r);
}

/* ---- threads ------------------------------------------------------------------------------ */

#define THREADS    4
#define INCREMENTS 1000000

typedef struct thread_arg_s {
  hk_metrics_t *registry;
  hk_series_t *counter, *histogram, *gauge;
  unsigned worker;
  atomic_int *start;
  hk_series_t **seen; /* series_creation: what this thread got per label set */
} thread_arg_t;

static void wait_start(atomic_int *start) {
  atomic_fetch_add(start, 1);
  while (atomic_load(start) < THREADS) {
  }
}

static void *hammer(void *p) {
  thread_arg_t *a = p;
  wait_start(a->start);
  for (int i = 0; i < INCREMENTS; i++) {
    hk_series_add(a->counter, a->worker, 1);
    hk_series_observe(a->histogram, a->worker, (i % 4) * 0.5); /* 0, 0.5, 1, 1.5 */
    if (i % 16 == 0) hk_series_gauge_add(a->gauge, 2);
  }
  return NULL;
}

static void *reader(void *p) {
  thread_arg_t *a = p;
  /* Scrapes concurrently: counts never go backwards and count == +Inf bucket. */
  double last = 0;
  uint64_t lastcount = 0;
  while (hk_series_value(a->counter) < (double)THREADS * INCREMENTS) {
    double v = hk_series_value(a->counter);
    HK_ASSERT(v >= last);
    last = v;
    uint64_t buckets[4], count;
    double sum;
    hk_series_histogram(a->histogram, buckets, &sum, &count);
    HK_ASSERT_INT_EQ(count, buckets[0] + buckets[1] + buckets[2] + buckets[3]);
    HK_ASSERT(count >= lastcount);
    lastcount = count;
  }
  return NULL;
}

HK_TEST(threads_exact_sums) {
  hk_metrics_t *r = new_registry(THREADS);
  hk_metric_t *c = reg(r, HK_METRIC_COUNTER, "hancock_hits_total", NULL, 0);
  double bounds[] = {0.5, 1, 1.25};
  hk_metric_opts_t o = {.type = HK_METRIC_HISTOGRAM,
                        .name = "hancock_h",
                        .help = "h",
                        .buckets = bounds,
                        .bucket_count = 3};
  hk_metric_t *h = NULL;
  HK_ASSERT_INT_EQ(hk_metrics_register(r, &o, &h, NULL, 0), 0);
  hk_metric_t *g = reg(r, HK_METRIC_GAUGE, "hancock_g", NULL, 0);
  atomic_int start = 0;
  thread_arg_t args[THREADS];
  pthread_t threads[THREADS], reader_thread;
  for (unsigned t = 0; t < THREADS; t++) {
    args[t] = (thread_arg_t){r,
                             hk_metric_series(c, NULL, 0),
                             hk_metric_series(h, NULL, 0),
                             hk_metric_series(g, NULL, 0),
                             t,
                             &start,
                             NULL};
    HK_ASSERT_INT_EQ(pthread_create(&threads[t], NULL, hammer, &args[t]), 0);
  }
  HK_ASSERT_INT_EQ(pthread_create(&reader_thread, NULL, reader, &args[0]), 0);
  for (unsigned t = 0; t < THREADS; t++)
    pthread_join(threads[t], NULL);
  pthread_join(reader_thread, NULL);
  HK_ASSERT(hk_series_value(args[0].counter) == (double)THREADS * INCREMENTS);
  uint64_t buckets[4], count;
  double sum;
  hk_series_histogram(args[0].histogram, buckets, &sum, &count);
  HK_ASSERT_INT_EQ(count, THREADS * INCREMENTS);
  /* 0 and 0.5 -> le 0.5; 1 -> le 1; 1.5 -> +Inf. */
  HK_ASSERT_INT_EQ(buckets[0], THREADS * INCREMENTS / 2);
  HK_ASSERT_INT_EQ(buckets[1], THREADS * INCREMENTS / 4);
  HK_ASSERT_INT_EQ(buckets[2], 0);
  HK_ASSERT_INT_EQ(buckets[3], THREADS * INCREMENTS / 4);
  HK_ASSERT(sum == 3.0 / 4 * THREADS * INCREMENTS);
  HK_ASSERT(hk_series_value(args[0].gauge) == 2.0 * THREADS * (INCREMENTS / 16));
  hk_metrics_free(r);
}

#define LABEL_SETS 3000

static void *create_series(void *p) {
  thread_arg_t *a = p;
  hk_metric_t *m = hk_metrics_find(a->registry, "hancock_created_total");
  wait_start(a->start);
  /* Every thread walks the same label sets from a different starting point, so creation
   * races on every one of them; each also updates what it got. */
  for (int k = 0; k < LABEL_SETS; k++) {
    int i = (k + (int)a->worker * LABEL_SETS / THREADS) % LABEL_SETS;
    char v[16];
    snprintf(v, sizeof v, "id-%d", i);
    const char *vals[] = {v, a->worker % 2 ? "odd" : "even"};
    hk_series_t *s = hk_metric_series_str(m, vals, 2);
    HK_ASSERT(s != NULL);
    a->seen[i] = s;
    hk_series_add(s, a->worker, 1);
    /* Lookups of earlier ones keep working while the table grows. */
    const char *again[] = {v, a->worker % 2 ? "odd" : "even"};
    HK_ASSERT(hk_metric_series_str(m, again, 2) == s);
  }
  return NULL;
}

HK_TEST(threads_series_creation) {
  hk_metrics_t *r = new_registry(THREADS);
  const char *labels[] = {"id", "parity"};
  hk_metric_opts_t o = {.type = HK_METRIC_COUNTER,
                        .name = "hancock_created_total",
                        .help = "h",
                        .labels = labels,
                        .label_count = 2,
                        .series_cap = 2 * LABEL_SETS};
  hk_metric_t *m = NULL;
  HK_ASSERT_INT_EQ(hk_metrics_register(r, &o, &m, NULL, 0), 0);
  atomic_int start = 0;
  thread_arg_t args[THREADS];
  pthread_t threads[THREADS];
  static hk_series_t *seen[THREADS][LABEL_SETS];
  for (unsigned t = 0; t < THREADS; t++) {
    args[t] = (thread_arg_t){r, NULL, NULL, NULL, t, &start, seen[t]};
    HK_ASSERT_INT_EQ(pthread_create(&threads[t], NULL, create_series, &args[t]), 0);
  }
  for (unsigned t = 0; t < THREADS; t++)
    pthread_join(threads[t], NULL);
  HK_ASSERT_INT_EQ(hk_metric_series_count(m), 2 * LABEL_SETS);
  for (int i = 0; i < LABEL_SETS; i++) {
    HK_ASSERT(seen[0][i] == seen[2][i]);
    HK_ASSERT(seen[1][i] == seen[3][i]);
    HK_ASSERT(seen[0][i] != seen[1][i]);
    HK_ASSERT(hk_series_value(seen[0][i]) == 2);
    HK_ASSERT(hk_series_value(seen[1][i]) == 2);
  }
  hk_metrics_free(r);
}

HK_TEST_MAIN(HK_CASE(new_registers_own_families), HK_CASE(name_validation),
             HK_CASE(label_validation), HK_CASE(bucket_validation), HK_CASE(reregistration),
             HK_CASE(exposition_name_collisions), HK_CASE(series_lookup), HK_CASE(series_cap),
             HK_CASE(registry_families_capped), HK_CASE(script_family_cap),
             HK_CASE(help_length_cap), HK_CASE(label_value_truncation),
             HK_CASE(label_value_invalid_utf8), HK_CASE(histogram_buckets),
             HK_CASE(counter_and_gauge_values), HK_CASE(family_order), HK_CASE(collectors),
             HK_CASE(remove_collector), HK_CASE(remove_collector_waits_for_a_running_collect),
             HK_CASE(threads_exact_sums), HK_CASE(threads_series_creation))
