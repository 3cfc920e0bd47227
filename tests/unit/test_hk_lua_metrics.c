/* Unit tests for hk_lua_metrics: hk.metrics from scripts loaded by hk_lua_new into a registry
 * with the host's families, as `serve` builds it. Reloads (a second generation loaded into the
 * same registry) keep every value; identical re-registration shares a family; conflicting or
 * invalid registration and misuse fail with "file:line: message" naming the metric; series caps
 * set from Lua drop, count and log once. Scripts are written into a mkdtemp directory. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hk_host_metrics.h"
#include "hk_lua.h"
#include "hk_metrics.h"
#include "hk_test.h"

/* ---- fixture ------------------------------------------------------------------------------- */

typedef struct fixture_s {
  char dir[64];
  char files[8][96];
  size_t file_count;
  hk_metrics_t *registry;
  hk_host_metrics_t host;
} fixture_t;

/* The fixture whose directory a failed assert (which exits) leaves behind: removed at exit. */
static fixture_t *live_fixture;

static void remove_files(fixture_t *f) {
  for (size_t i = 0; i < f->file_count; i++)
    unlink(f->files[i]);
  f->file_count = 0;
}

static void remove_live_fixture(void) {
  if (live_fixture == NULL) return;
  remove_files(live_fixture);
  rmdir(live_fixture->dir);
}

/* A registry as `serve` makes it for one worker: cell 0 for the worker, cell 1 the collector's. */
static void fixture_init(fixture_t *f) {
  memset(f, 0, sizeof *f);
  snprintf(f->dir, sizeof f->dir, "/tmp/hk-lua-metrics-XXXXXX");
  HK_ASSERT(mkdtemp(f->dir) != NULL);
  live_fixture = f;
  atexit(remove_live_fixture);
  HK_ASSERT_INT_EQ(hk_metrics_new(2, &f->registry), 0);
  char err[256];
  if (hk_host_metrics_init(&f->host, f->registry, 1, err, sizeof err) != 0)
    HK_FAIL_("host metrics: %s", err);
}

static void fixture_free(fixture_t *f) {
  remove_files(f);
  live_fixture = NULL;
  HK_ASSERT_INT_EQ(rmdir(f->dir), 0);
  hk_metrics_free(f->registry);
}

/* Writes (or rewrites) dir/name. */
static void write_script(fixture_t *f, const char *name, const char *source) {
  char path[96];
  snprintf(path, sizeof path, "%s/%s", f->dir, name);
  FILE *file = fopen(path, "w");
  HK_ASSERT(file != NULL);
  HK_ASSERT_INT_EQ(fputs(source, file) >= 0, 1);
  HK_ASSERT_INT_EQ(fclose(file), 0);
  for (size_t i = 0; i < f->file_count; i++) {
    if (strcmp(f->files[i], path) == 0) return;
  }
  HK_ASSERT(f->file_count < sizeof f->files / sizeof f->files[0]);
  snprintf(f->files[f->file_count++], sizeof f->files[0], "%s", path);
}

static hk_lua_t *load_ok(fixture_t *f) {
  hk_lua_t *lua = NULL;
  char *err = NULL;
  int rc = hk_lua_new(f->dir, f->registry, 0, &lua, &err);
  if (rc != 0) HK_FAIL_("hk_lua_new: %d: %s", rc, err ? err : "(no message)");
  HK_ASSERT(lua != NULL);
  HK_ASSERT(err == NULL);
  return lua;
}

/* Loads scripts that must fail; returns the message's first line (static storage). */
static const char *load_fails(fixture_t *f) {
  static char first_line[1024];
  hk_lua_t *lua = NULL;
  char *err = NULL;
  int rc = hk_lua_new(f->dir, f->registry, 0, &lua, &err);
  if (rc == 0) HK_FAIL_("hk_lua_new succeeded; expected an error");
  HK_ASSERT(err != NULL);
  size_t len = strcspn(err, "\n");
  snprintf(first_line, sizeof first_line, "%.*s", (int)len, err);
  free(err);
  hk_lua_free(lua);
  return first_line;
}

/* The series of `metric` with these label values, or NULL; never creates one. */
static hk_series_t *find_series(hk_metric_t *metric, const char *const *values, size_t count) {
  HK_ASSERT_INT_EQ(hk_metric_label_count(metric), count);
  for (size_t i = 0; i < hk_metric_series_count(metric); i++) {
    hk_series_t *series = hk_metric_series_at(metric, i);
    bool same = true;
    for (size_t l = 0; same && l < count; l++) {
      hk_label_value_t v = hk_series_label(series, l);
      same = v.len == strlen(values[l]) && memcmp(v.str, values[l], v.len) == 0;
    }
    if (same) return series;
  }
  return NULL;
}

static hk_metric_t *metric(fixture_t *f, const char *name) {
  hk_metric_t *m = hk_metrics_find(f->registry, name);
  if (m == NULL) HK_FAIL_("no metric %s", name);
  return m;
}

/* The value of one series (counters, gauges; histograms: the count); fails when it is missing. */
static double value(fixture_t *f, const char *name, const char *const *values, size_t count) {
  hk_series_t *series = find_series(metric(f, name), values, count);
  if (series == NULL) HK_FAIL_("no such series of %s", name);
  return hk_series_value(series);
}

#define LABELS(...)                                                                                \
  ((const char *const[]){__VA_ARGS__}),                                                            \
      (sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *))
#define NO_LABELS NULL, 0

#define ASSERT_CONTAINS(haystack, needle)                                                          \
  do {                                                                                             \
    const char *h_ = (haystack), *n_ = (needle);                                                   \
    if (strstr(h_, n_) == NULL) HK_FAIL_("\"%s\" does not contain \"%s\"", h_, n_);                \
  } while (0)

/* Asserts that msg starts with "<dir>/<file>:<line>: ". */
static void assert_location(const fixture_t *f, const char *msg, const char *file, int line) {
  char prefix[160];
  snprintf(prefix, sizeof prefix, "%s/%s:%d: ", f->dir, file, line);
  if (strncmp(msg, prefix, strlen(prefix)) != 0)
    HK_FAIL_("\"%s\" does not start with \"%s\"", msg, prefix);
}

/* Runs `load` with stdout going to a pipe (log lines are written synchronously before
 * hk_log_start); returns what was written. */
static char captured[65536];

static void capture_stdout(void (*load)(fixture_t *), fixture_t *f) {
  int fds[2];
  HK_ASSERT_INT_EQ(pipe(fds), 0);
  fflush(stdout);
  int saved = dup(1);
  dup2(fds[1], 1);
  load(f);
  fflush(stdout);
  dup2(saved, 1);
  close(saved);
  close(fds[1]);
  size_t used = 0;
  ssize_t n;
  while (used < sizeof captured - 1 &&
         (n = read(fds[0], captured + used, sizeof captured - 1 - used)) > 0)
    used += (size_t)n;
  captured[used] = '\0';
  close(fds[0]);
}

static size_t count_occurrences(const char *haystack, const char *needle) {
  size_t count = 0;
  for (const char *p = strstr(haystack, needle); p != NULL; p = strstr(p + 1, needle))
    count++;
  return count;
}

/* ---- reload -------------------------------------------------------------------------------- */

static const char *const RELOAD_SCRIPT =
    "local hk = require \"hancock\"\n"
    "local loads = hk.metrics.counter(\"hk_unit_loads_total\", \"Script loads.\", { \"script\" })\n"
    "loads:inc({ script = \"a\" })\n"
    "local depth = hk.metrics.gauge(\"hk_unit_depth\", \"A gauge.\")\n"
    "depth:inc(5)\n"
    "local seconds = hk.metrics.histogram(\"hk_unit_seconds\", \"A histogram.\", nil, { 1, 2 })\n"
    "seconds:observe(1.5)\n";

HK_TEST(reload_keeps_script_values) {
  fixture_t f;
  fixture_init(&f);
  write_script(&f, "a.lua", RELOAD_SCRIPT);
  hk_lua_t *lua = load_ok(&f);
  HK_ASSERT(value(&f, "hk_unit_loads_total", LABELS("a")) == 1);
  hk_metric_t *loads = metric(&f, "hk_unit_loads_total");
  hk_metric_t *depth = metric(&f, "hk_unit_depth");
  hk_metric_t *seconds = metric(&f, "hk_unit_seconds");
  size_t families = hk_metrics_family_count(f.registry);
  hk_lua_free(lua);

  /* The family outlives the state: the next generation registers it again and gets it back. */
  HK_ASSERT(value(&f, "hk_unit_loads_total", LABELS("a")) == 1);
  lua = load_ok(&f);
  HK_ASSERT(metric(&f, "hk_unit_loads_total") == loads);
  HK_ASSERT(metric(&f, "hk_unit_depth") == depth);
  HK_ASSERT(metric(&f, "hk_unit_seconds") == seconds);
  HK_ASSERT_INT_EQ(hk_metrics_family_count(f.registry), families);
  HK_ASSERT_INT_EQ(hk_metric_series_count(loads), 1);
  HK_ASSERT(value(&f, "hk_unit_loads_total", LABELS("a")) == 2);
  HK_ASSERT(value(&f, "hk_unit_depth", NO_LABELS) == 10);
  uint64_t buckets[3];
  double sum;
  uint64_t count;
  hk_series_histogram(find_series(seconds, NULL, 0), buckets, &sum, &count);
  HK_ASSERT_INT_EQ(count, 2);
  HK_ASSERT_INT_EQ(buckets[0], 0);
  HK_ASSERT_INT_EQ(buckets[1], 2);
  HK_ASSERT_INT_EQ(buckets[2], 0);
  HK_ASSERT(sum == 3.0);
  hk_lua_free(lua);
  fixture_free(&f);
}

HK_TEST(reload_leaves_host_metrics_alone) {
  fixture_t f;
  fixture_init(&f);
  write_script(&f, "a.lua", RELOAD_SCRIPT);
  hk_lua_t *lua = load_ok(&f);
  hk_host_metrics_request(&f.host, 0, "GET", 3, "/v1/items/:id", 200, "soc", 0.01, NULL, 0);
  hk_host_metrics_request(&f.host, 0, "POST", 4, "unmatched", 404, NULL, 0.02, NULL, 0);
  hk_host_metrics_request(&f.host, 0, "BREW", 4, "/v1/items/:id", 500, "soc", 0.03, NULL, 0);
  hk_metric_t *requests = f.host.requests_total;
  hk_lua_free(lua);
  lua = load_ok(&f);
  hk_lua_free(lua);
  lua = load_ok(&f);

  HK_ASSERT(metric(&f, "hancock_requests_total") == requests);
  HK_ASSERT(value(&f, "hancock_requests_total", NO_LABELS) == 3);
  HK_ASSERT(value(&f, "hancock_errors_total", NO_LABELS) == 2);
  HK_ASSERT(value(&f, "hancock_requests_by_endpoint", LABELS("/v1/items/:id")) == 2);
  HK_ASSERT(value(&f, "hancock_requests_by_endpoint", LABELS("unmatched")) == 1);
  HK_ASSERT_INT_EQ(hk_metric_series_count(metric(&f, "hancock_requests_by_endpoint")), 2);
  HK_ASSERT(value(&f, "hancock_requests_by_mode", LABELS("soc")) == 2);
  HK_ASSERT_INT_EQ(hk_metric_series_count(metric(&f, "hancock_requests_by_mode")), 1);
  HK_ASSERT(value(&f, "hancock_request_duration_seconds", LABELS("GET", "/v1/items/:id", "200")) ==
            1);
  HK_ASSERT(
      value(&f, "hancock_request_duration_seconds", LABELS("other", "/v1/items/:id", "500")) == 1);
  HK_ASSERT(value(&f, "hk_unit_loads_total", LABELS("a")) == 3);
  hk_lua_free(lua);
  fixture_free(&f);
}

/* ---- registration -------------------------------------------------------------------------- */

HK_TEST(identical_registration_shares_the_family) {
  fixture_t f;
  fixture_init(&f);
  write_script(
      &f, "a.lua",
      "local hk = require \"hancock\"\n"
      "local first = hk.metrics.counter(\"hk_unit_shared_total\", \"First help.\", { \"via\" })\n"
      "local second = hk.metrics.counter(\"hk_unit_shared_total\", \"Other help.\", { \"via\" })\n"
      "assert(first.name == \"hk_unit_shared_total\" and second.type == \"counter\")\n"
      "first:inc({ via = \"x\" })\n"
      "second:inc({ \"x\" }, 2)\n");
  write_script(
      &f, "b.lua",
      "local hk = require \"hancock\"\n"
      "local third = hk.metrics.counter(\"hk_unit_shared_total\", \"Third help.\", { \"via\" })\n"
      "third:inc({ via = \"x\" }, 4)\n");
  hk_lua_t *lua = load_ok(&f);
  HK_ASSERT(value(&f, "hk_unit_shared_total", LABELS("x")) == 7);
  HK_ASSERT_INT_EQ(hk_metric_series_count(metric(&f, "hk_unit_shared_total")), 1);
  HK_ASSERT_STR_EQ(hk_metric_help(metric(&f, "hk_unit_shared_total")), "First help.");
  hk_lua_free(lua);
  fixture_free(&f);
}

HK_TEST(scripts_share_the_core_families) {
  fixture_t f;
  fixture_init(&f);
  /* A script rate limiter feeds the core's counter by registering it as the core does. */
  write_script(
      &f, "a.lua",
      "local hk = require \"hancock\"\n"
      "local limited = hk.metrics.counter(\"hancock_rate_limit_exceeded_total\", \"Refused.\",\n"
      "  { \"endpoint\", \"client_id\" })\n"
      "limited:inc({ endpoint = \"/v1/chat\", client_id = \"key-1\" })\n"
      "limited:inc({ \"/v1/chat\", \"key-1\" })\n"
      "local errors = hk.metrics.counter(\"hancock_errors_total\", \"Errors.\")\n"
      "errors:inc(3)\n");
  hk_lua_t *lua = load_ok(&f);
  hk_series_t *series =
      find_series(f.host.rate_limit_exceeded, (const char *const[]){"/v1/chat", "key-1"}, 2);
  HK_ASSERT(series != NULL);
  HK_ASSERT(hk_series_value(series) == 2);
  HK_ASSERT(hk_series_value(f.host.errors_total_series) == 3);
  hk_lua_free(lua);

  /* The model histogram has its own buckets: the defaults are a different metric. */
  write_script(&f, "a.lua",
               "local hk = require \"hancock\"\n"
               "\n"
               "hk.metrics.histogram(\"hancock_model_response_time_seconds\", \"Model time.\", { "
               "\"model\", \"operation\" })\n");
  const char *msg = load_fails(&f);
  assert_location(&f, msg, "a.lua", 3);
  ASSERT_CONTAINS(msg, "hancock_model_response_time_seconds");
  ASSERT_CONTAINS(msg, "already registered");

  /* hk.metrics.get hands out the core's histogram with its own buckets; unknown names are nil. */
  write_script(&f, "a.lua",
               "local hk = require \"hancock\"\n"
               "local model = hk.metrics.get(\"hancock_model_response_time_seconds\")\n"
               "model:observe({ model = \"llama3.1:8b\", operation = \"soc\" }, 0.3)\n"
               "assert(hk.metrics.get(\"no_such_metric\") == nil)\n");
  lua = load_ok(&f);
  series = find_series(f.host.model_response_time, (const char *const[]){"llama3.1:8b", "soc"}, 2);
  HK_ASSERT(series != NULL);
  uint64_t buckets[HK_METRICS_MAX_BUCKETS + 1];
  double sum = 0;
  uint64_t count = 0;
  hk_series_histogram(series, buckets, &sum, &count);
  HK_ASSERT_INT_EQ(count, 1);
  HK_ASSERT(sum == 0.3);
  hk_lua_free(lua);
  fixture_free(&f);
}

HK_TEST(conflicting_registration_reports_file_and_line) {
  fixture_t f;
  fixture_init(&f);
  write_script(
      &f, "a.lua",
      "local hk = require \"hancock\"\n"
      "local ok = hk.metrics.counter(\"hk_unit_conflict_total\", \"First.\", { \"mode\" })\n"
      "ok:inc({ mode = \"soc\" })\n"
      "hk.metrics.counter(\"hk_unit_conflict_total\", \"Second.\", { \"mode\", \"user\" })\n");
  const char *msg = load_fails(&f);
  assert_location(&f, msg, "a.lua", 4);
  ASSERT_CONTAINS(msg, "hk_unit_conflict_total");
  ASSERT_CONTAINS(msg, "already registered");
  /* The first registration stands, unchanged. */
  hk_metric_t *m = metric(&f, "hk_unit_conflict_total");
  HK_ASSERT_INT_EQ(hk_metric_label_count(m), 1);
  HK_ASSERT_STR_EQ(hk_metric_label_name(m, 0), "mode");
  HK_ASSERT(value(&f, "hk_unit_conflict_total", LABELS("soc")) == 1);

  /* Another type under a core name; a name whose exposition would collide with another's. */
  write_script(&f, "a.lua",
               "local hk = require \"hancock\"\n"
               "hk.metrics.gauge(\"hancock_requests_total\", \"Not the core's.\")\n");
  msg = load_fails(&f);
  assert_location(&f, msg, "a.lua", 2);
  ASSERT_CONTAINS(msg, "hancock_requests_total");
  HK_ASSERT(hk_metric_type(f.host.requests_total) == HK_METRIC_COUNTER);
  write_script(
      &f, "a.lua",
      "local hk = require \"hancock\"\n"
      "hk.metrics.counter(\"hk_unit_thing_total\", \"A counter.\")\n"
      "hk.metrics.gauge(\"hk_unit_thing\", \"A gauge named like its OpenMetrics family.\")\n");
  msg = load_fails(&f);
  assert_location(&f, msg, "a.lua", 3);
  ASSERT_CONTAINS(msg, "hk_unit_thing");
  HK_ASSERT(hk_metrics_find(f.registry, "hk_unit_thing") == NULL);
  fixture_free(&f);
}

HK_TEST(invalid_registration_names_the_metric) {
  static const struct {
    const char *call; /* line 2 of the script */
    const char *name;
    const char *fragment;
  } cases[] = {
      {"hk.metrics.counter(\"hk_unit_bad\", \"h\")", "hk_unit_bad", "_total"},
      {"hk.metrics.counter(\"hk-unit-bad_total\", \"h\")", "hk-unit-bad_total", "not valid"},
      {"hk.metrics.counter(\"hk_unit_bad_total\", \"\")", "hk_unit_bad_total", "help"},
      {"hk.metrics.counter(\"hk_unit_bad_total\", \"h\", { \"a\", \"a\" })", "hk_unit_bad_total",
       "twice"},
      {"hk.metrics.counter(\"hk_unit_bad_total\", \"h\", { \"__a\" })", "hk_unit_bad_total",
       "reserved"},
      {"hk.metrics.counter(\"hk_unit_bad_total\", \"h\", { \"a-b\" })", "hk_unit_bad_total",
       "not valid"},
      {"hk.metrics.counter(\"hk_unit_bad_total\", \"h\", { 1 })", "hk_unit_bad_total",
       "label names must be strings"},
      {"hk.metrics.counter(\"hk_unit_bad_total\", \"h\", { \"a\", \"b\", \"c\", \"d\", \"e\", "
       "\"f\", \"g\", \"h\", \"i\" })",
       "hk_unit_bad_total", "8"},
      {"hk.metrics.counter(\"hk_unit_bad_total\", \"h\", { \"a\" }, { max_series = 0 })",
       "hk_unit_bad_total", "max_series"},
      {"hk.metrics.counter(\"hk_unit_bad_total\", \"h\", { \"a\" }, { max_series = 1.5 })",
       "hk_unit_bad_total", "max_series"},
      {"hk.metrics.gauge(\"hk_unit_bad\", \"h\", nil, { buckets = { 1 } })", "hk_unit_bad",
       "histograms"},
      {"hk.metrics.histogram(\"hk_unit_bad_seconds\", \"h\", { \"le\" })", "hk_unit_bad_seconds",
       "'le'"},
      {"hk.metrics.histogram(\"hk_unit_bad_seconds\", \"h\", nil, { 1, 1 })", "hk_unit_bad_seconds",
       "increasing"},
      {"hk.metrics.histogram(\"hk_unit_bad_seconds\", \"h\", nil, { 2, 1 })", "hk_unit_bad_seconds",
       "increasing"},
      {"hk.metrics.histogram(\"hk_unit_bad_seconds\", \"h\", nil, { 1, math.huge })",
       "hk_unit_bad_seconds", "finite"},
      {"hk.metrics.histogram(\"hk_unit_bad_seconds\", \"h\", nil, { 0 / 0 })",
       "hk_unit_bad_seconds", "finite"},
      {"hk.metrics.histogram(\"hk_unit_bad_seconds\", \"h\", nil, { \"fast\" })",
       "hk_unit_bad_seconds", "numbers"},
      {"hk.metrics.histogram(\"hk_unit_bad_seconds\", \"h\", nil, {})", "hk_unit_bad_seconds",
       "bucket"},
  };
  fixture_t f;
  fixture_init(&f);
  size_t families = hk_metrics_family_count(f.registry);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char source[512];
    snprintf(source, sizeof source, "local hk = require \"hancock\"\n%s\n", cases[i].call);
    write_script(&f, "a.lua", source);
    const char *msg = load_fails(&f);
    fprintf(stderr, "  %s\n    -> %s\n", cases[i].call, msg);
    assert_location(&f, msg, "a.lua", 2);
    ASSERT_CONTAINS(msg, cases[i].name);
    ASSERT_CONTAINS(msg, cases[i].fragment);
    HK_ASSERT_INT_EQ(hk_metrics_family_count(f.registry), families);
  }
  fixture_free(&f);
}

/* ---- updates ------------------------------------------------------------------------------- */

HK_TEST(misuse_at_load_names_the_metric) {
  static const struct {
    const char *call; /* line 6 of the script */
    const char *name;
    const char *fragment;
  } cases[] = {
      {"c:inc({ kind = \"x\", nope = \"y\" })", "hk_unit_c_total", "'nope'"},
      {"c:inc({})", "hk_unit_c_total", "'kind'"},
      {"c:inc({ kind = true })", "hk_unit_c_total", "'kind'"},
      {"c:inc(\"x\")", "hk_unit_c_total", "table"},
      {"c:inc({ kind = \"x\" }, -1)", "hk_unit_c_total", "decrease"},
      {"c:inc({ kind = \"x\" }, 0 / 0)", "hk_unit_c_total", "finite"},
      {"c:inc({ kind = \"x\" }, \"lots\")", "hk_unit_c_total", "number"},
      {"c:set({ kind = \"x\" }, 1)", "hk_unit_c_total", "counter"},
      {"g:observe(1)", "hk_unit_g", "gauge"},
      {"g:set()", "hk_unit_g", "value"},
      {"g:set({ x = \"y\" }, 1)", "hk_unit_g", "no labels"},
      {"h:inc({ step = \"x\" })", "hk_unit_h_seconds", "histogram"},
      {"h:observe({ step = \"x\" })", "hk_unit_h_seconds", "value"},
      {"h:observe({ step = \"x\" }, \"slow\")", "hk_unit_h_seconds", "number"},
      {"hk.metrics.time(h, { nope = \"x\" }, function() end)", "hk_unit_h_seconds", "'step'"},
  };
  fixture_t f;
  fixture_init(&f);
  size_t failures = 0;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char source[768];
    snprintf(source, sizeof source,
             "local hk = require \"hancock\"\n"
             "local c = hk.metrics.counter(\"hk_unit_c_total\", \"c\", { \"kind\" })\n"
             "local g = hk.metrics.gauge(\"hk_unit_g\", \"g\")\n"
             "local h = hk.metrics.histogram(\"hk_unit_h_seconds\", \"h\", { \"step\" })\n"
             "assert(c and g and h)\n"
             "%s\n",
             cases[i].call);
    write_script(&f, "a.lua", source);
    const char *msg = load_fails(&f);
    fprintf(stderr, "  %s\n    -> %s\n", cases[i].call, msg);
    assert_location(&f, msg, "a.lua", 6);
    ASSERT_CONTAINS(msg, cases[i].fragment);
    if (strstr(msg, cases[i].name) == NULL) {
      fprintf(stderr, "    FAIL: the message does not name %s\n", cases[i].name);
      failures++;
    }
    /* Errors point at the script's line, never at the runtime's (lua/hancock.lua). */
    if (strstr(msg, "hancock.lua") != NULL) {
      fprintf(stderr, "    FAIL: the message points into the runtime\n");
      failures++;
    }
    /* A failed update stores nothing. */
    HK_ASSERT_INT_EQ(hk_metric_series_count(metric(&f, "hk_unit_c_total")), 0);
    HK_ASSERT_INT_EQ(hk_metric_series_count(metric(&f, "hk_unit_h_seconds")), 0);
  }
  HK_ASSERT_INT_EQ(failures, 0);
  fixture_free(&f);
}

HK_TEST(time_returns_results_and_observes_errors) {
  fixture_t f;
  fixture_init(&f);
  write_script(
      &f, "a.lua",
      "local hk = require \"hancock\"\n"
      "local h = hk.metrics.histogram(\"hk_unit_time_seconds\", \"Timed.\", { \"step\" })\n"
      "local a, b, c, n = hk.metrics.time(h, { step = \"ok\" }, function(x, y)\n"
      "  return x * y, nil, \"z\"\n"
      "end, 6, 7)\n"
      "assert(a == 42 and b == nil and c == \"z\" and n == nil)\n"
      "local ok, err = pcall(hk.metrics.time, h, { step = \"err\" }, function()\n"
      "  error({ code = 7 })\n"
      "end)\n"
      "assert(not ok and type(err) == \"table\" and err.code == 7, \"the error value passes "
      "through\")\n"
      "assert(select(\"#\", hk.metrics.time(h, { \"ok\" }, function() end)) == 0)\n");
  hk_lua_t *lua = load_ok(&f);
  HK_ASSERT(value(&f, "hk_unit_time_seconds", LABELS("ok")) == 2);
  HK_ASSERT(value(&f, "hk_unit_time_seconds", LABELS("err")) == 1);
  HK_ASSERT_INT_EQ(hk_metric_bucket_count(metric(&f, "hk_unit_time_seconds")), 11);
  hk_lua_free(lua);
  fixture_free(&f);
}

static hk_lua_t *loaded;

static void load_into_loaded(fixture_t *f) {
  loaded = load_ok(f);
}

HK_TEST(series_cap_from_lua_drops_counts_and_logs_once) {
  fixture_t f;
  fixture_init(&f);
  write_script(
      &f, "a.lua",
      "local hk = require \"hancock\"\n"
      "local capped = hk.metrics.counter(\"hk_unit_capped_total\", \"Two users.\", { \"user\" },\n"
      "  { max_series = 2 })\n"
      "for _, user in ipairs { \"u1\", \"u2\", \"u3\", \"u4\", \"u5\", \"u3\", \"u1\" } do\n"
      "  capped:inc({ user = user })\n"
      "end\n"
      "local wide = hk.metrics.gauge(\"hk_unit_wide\", \"Past the default cap.\", { \"i\" },\n"
      "  { max_series = 3000 })\n"
      "for i = 1, 2500 do\n"
      "  wide:set({ i = tostring(i) }, i)\n"
      "end\n");
  capture_stdout(load_into_loaded, &f);
  hk_metric_t *capped = metric(&f, "hk_unit_capped_total");
  HK_ASSERT_INT_EQ(hk_metric_series_count(capped), 2);
  HK_ASSERT(value(&f, "hk_unit_capped_total", LABELS("u1")) == 2);
  HK_ASSERT(value(&f, "hk_unit_capped_total", LABELS("u2")) == 1);
  /* Every refused call is counted: u3, u4, u5 and u3 again. */
  HK_ASSERT(value(&f, "hancock_metric_series_dropped_total", LABELS("hk_unit_capped_total")) == 4);
  HK_ASSERT_INT_EQ(count_occurrences(captured, "\"event\":\"metric_series_dropped\""), 1);
  ASSERT_CONTAINS(captured, "\"metric\":\"hk_unit_capped_total\"");
  ASSERT_CONTAINS(captured, "\"level\":\"WARNING\"");
  HK_ASSERT_INT_EQ(hk_metric_series_count(metric(&f, "hk_unit_wide")), 2500);
  HK_ASSERT(value(&f, "hk_unit_wide", LABELS("2500")) == 2500);
  HK_ASSERT(value(&f, "hancock_metric_series_dropped_total", LABELS("hk_unit_wide")) == 0);
  hk_lua_free(loaded);

  /* A reload that drops again does not log again: the family already said so. */
  capture_stdout(load_into_loaded, &f);
  HK_ASSERT(value(&f, "hancock_metric_series_dropped_total", LABELS("hk_unit_capped_total")) == 8);
  HK_ASSERT_INT_EQ(count_occurrences(captured, "metric_series_dropped"), 0);
  hk_lua_free(loaded);
  fixture_free(&f);
}

/* ---- registry limits ----------------------------------------------------------------------- */

/* Registers 1,000 gauges hk_unit_f0001..hk_unit_f1000: the scripts' whole family budget. */
#define FILL_THE_CAP                                                                               \
  "local hk = require \"hancock\"\n"                                                              \
  "for i = 1, 1000 do hk.metrics.gauge((\"hk_unit_f%04d\"):format(i), \"From input.\") end\n"

/* The bug: families named from request input grew without bound. Past the cap a script's
 * registration raises an error naming the metric and the limit; a script may pcall it and go
 * on; a reload re-registering its families at the cap still works; refusals are counted. */
HK_TEST(family_cap_from_lua_raises_naming_metric_and_limit) {
  fixture_t f;
  fixture_init(&f);
  size_t core = hk_metrics_family_count(f.registry);
  write_script(&f, "a.lua",
               FILL_THE_CAP
               "local ok, err = pcall(hk.metrics.counter, \"hk_unit_from_input_total\", \"h\")\n"
               "assert(not ok and err:find(\"hk_unit_from_input_total\", 1, true), err)\n"
               "assert(err:find(\"1000 metric families, the limit\", 1, true), err)\n"
               "hk.metrics.get(\"hk_unit_f0001\"):set(1)\n");
  hk_lua_t *first = load_ok(&f);
  HK_ASSERT_INT_EQ(hk_metrics_family_count(f.registry), core + 1000);
  HK_ASSERT(value(&f, "hk_unit_f0001", NO_LABELS) == 1); /* the script went on after pcall */
  HK_ASSERT(value(&f, "hancock_metric_families_refused_total", LABELS("family_cap")) == 1);
  HK_ASSERT(hk_metrics_find(f.registry, "hk_unit_from_input_total") == NULL);

  /* A reload registers the same 1,000 again: existing families are returned at the cap. */
  hk_lua_t *second = load_ok(&f);
  HK_ASSERT_INT_EQ(hk_metrics_family_count(f.registry), core + 1000);
  HK_ASSERT(value(&f, "hancock_metric_families_refused_total", LABELS("family_cap")) == 2);
  hk_lua_free(second);

  /* Unprotected, the refusal is an ordinary script error with file:line. */
  write_script(&f, "a.lua",
               FILL_THE_CAP "hk.metrics.counter(\"hk_unit_one_too_many_total\", \"Over the cap.\")\n");
  const char *msg = load_fails(&f);
  fprintf(stderr, "  -> %s\n", msg);
  assert_location(&f, msg, "a.lua", 3);
  ASSERT_CONTAINS(msg, "metric hk_unit_one_too_many_total not registered: scripts have "
                       "registered 1000 metric families, the limit");
  HK_ASSERT(value(&f, "hancock_metric_families_refused_total", LABELS("family_cap")) == 3);
  hk_lua_free(first);
  fixture_free(&f);
}

HK_TEST(help_cap_from_lua_raises) {
  fixture_t f;
  fixture_init(&f);
  size_t families = hk_metrics_family_count(f.registry);
  write_script(&f, "a.lua",
               "local hk = require \"hancock\"\n"
               "hk.metrics.gauge(\"hk_unit_ok_help\", string.rep(\"h\", 1024))\n"
               "hk.metrics.gauge(\"hk_unit_long_help\", string.rep(\"h\", 100 * 1024))\n");
  const char *msg = load_fails(&f);
  assert_location(&f, msg, "a.lua", 3);
  ASSERT_CONTAINS(msg, "metric hk_unit_long_help: help text is 102400 bytes, more than the "
                       "limit of 1024");
  HK_ASSERT_INT_EQ(hk_metrics_family_count(f.registry), families + 1);
  HK_ASSERT(value(&f, "hancock_metric_families_refused_total", LABELS("help_too_long")) == 1);
  fixture_free(&f);
}

HK_TEST_MAIN(HK_CASE(reload_keeps_script_values), HK_CASE(reload_leaves_host_metrics_alone),
             HK_CASE(identical_registration_shares_the_family),
             HK_CASE(scripts_share_the_core_families),
             HK_CASE(conflicting_registration_reports_file_and_line),
             HK_CASE(invalid_registration_names_the_metric),
             HK_CASE(misuse_at_load_names_the_metric),
             HK_CASE(time_returns_results_and_observes_errors),
             HK_CASE(series_cap_from_lua_drops_counts_and_logs_once),
             HK_CASE(family_cap_from_lua_raises_naming_metric_and_limit),
             HK_CASE(help_cap_from_lua_raises))
