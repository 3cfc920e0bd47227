/* Unit tests for hk_prom: the exact text and OpenMetrics output of a small registry, promtool's
 * verdict on a larger one, numbers and escaping read back by a small parser, sliced rendering
 * (equal to one-shot, stable across registrations, bounded memory), render time at 10k and
 * 250k series, and Accept negotiation. */
#include "hk_prom.h"
#include "hk_test.h"

#include <errno.h>
#include <math.h>
#include <sched.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdbool.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------------------------ */

static hk_metrics_t *new_registry(unsigned workers) {
  hk_metrics_t *m = NULL;
  HK_ASSERT_INT_EQ(hk_metrics_new(workers, &m), 0);
  return m;
}

static hk_metric_t *reg(hk_metrics_t *r, hk_metric_type_t type, const char *name, const char *help,
                        const char *const *labels, size_t label_count, unsigned flags) {
  hk_metric_opts_t o = {.type = type,
                        .name = name,
                        .help = help,
                        .labels = labels,
                        .label_count = label_count,
                        .flags = flags};
  hk_metric_t *m = NULL;
  char err[256];
  int rc = hk_metrics_register(r, &o, &m, err, sizeof err);
  if (rc != 0) HK_FAIL_("register %s: %d %s", name, rc, err);
  return m;
}

static hk_metric_t *reg_histogram(hk_metrics_t *r, const char *name, const char *const *labels,
                                  size_t label_count, const double *buckets, size_t bucket_count) {
  hk_metric_opts_t o = {.type = HK_METRIC_HISTOGRAM,
                        .name = name,
                        .help = "A histogram.",
                        .labels = labels,
                        .label_count = label_count,
                        .buckets = buckets,
                        .bucket_count = bucket_count};
  hk_metric_t *m = NULL;
  char err[256];
  int rc = hk_metrics_register(r, &o, &m, err, sizeof err);
  if (rc != 0) HK_FAIL_("register %s: %d %s", name, rc, err);
  return m;
}

static hk_series_t *series1(hk_metric_t *m, const char *value) {
  const char *values[] = {value};
  hk_series_t *s = hk_metric_series_str(m, values, 1);
  HK_ASSERT(s != NULL);
  return s;
}

static char *render(hk_metrics_t *r, hk_prom_format_t format) {
  hk_buf_t out = HK_BUF_INIT;
  HK_ASSERT_INT_EQ(hk_prom_render_all(r, format, &out), 0);
  return hk_buf_steal(&out, NULL);
}

/* Fails with both texts and the first differing line. */
static void assert_text_eq(const char *got, const char *want) {
  if (strcmp(got, want) == 0) return;
  size_t i = 0, line_start = 0;
  while (got[i] && got[i] == want[i]) {
    if (got[i] == '\n') line_start = i + 1;
    i++;
  }
  HK_FAIL_("output differs at byte %zu:\n--- got\n%s\n--- want\n%s\n--- got line: %.*s", i, got,
           want, (int)strcspn(got + line_start, "\n"), got + line_start);
}

static size_t count_occurrences(const char *hay, const char *needle) {
  size_t n = 0;
  for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
    n++;
  return n;
}

/* ---- a parser for what we write ----------------------------------------------------------- */

/* A sample as "name{k=v,k=v}" with label values unescaped, and its value. */
typedef struct sample_s {
  char key[1024];
  double value;
} sample_t;

typedef struct samples_s {
  sample_t *items;
  size_t count;
} samples_t;

/* Parses every sample line (checking its shape) and every comment line's form. */
static samples_t parse_samples(const char *text, hk_prom_format_t format) {
  samples_t out = {NULL, 0};
  size_t cap = 0;
  const char *p = text;
  bool eof = false;
  while (*p) {
    const char *end = strchr(p, '\n');
    if (end == NULL) HK_FAIL_("last line has no newline: %s", p);
    if (eof) HK_FAIL_("text after # EOF: %.*s", (int)(end - p), p);
    if (*p == '#') {
      if (strncmp(p, "# EOF\n", 6) == 0 && format == HK_PROM_OPENMETRICS)
        eof = true;
      else if (strncmp(p, "# HELP ", 7) != 0 && strncmp(p, "# TYPE ", 7) != 0)
        HK_FAIL_("unexpected comment: %.*s", (int)(end - p), p);
      p = end + 1;
      continue;
    }
    if (out.count == cap) {
      cap = cap ? cap * 2 : 256;
      out.items = realloc(out.items, cap * sizeof *out.items);
      HK_ASSERT(out.items != NULL);
    }
    sample_t *s = &out.items[out.count++];
    size_t k = 0;
    const char *q = p;
    while (q < end && *q != '{' && *q != ' ')
      s->key[k++] = *q++;
    if (*q == '{') {
      s->key[k++] = *q++;
      for (bool first = true; *q != '}'; first = false) {
        if (!first) {
          if (*q != ',') HK_FAIL_("expected , in %.*s", (int)(end - p), p);
          s->key[k++] = *q++;
        }
        while (*q != '=') {
          if (q >= end) HK_FAIL_("bad label in %.*s", (int)(end - p), p);
          s->key[k++] = *q++;
        }
        s->key[k++] = *q++;
        if (*q++ != '"') HK_FAIL_("label value not quoted in %.*s", (int)(end - p), p);
        while (*q != '"') {
          if (q >= end) HK_FAIL_("unterminated label value in %.*s", (int)(end - p), p);
          if (*q == '\\') {
            q++;
            if (*q == 'n')
              s->key[k++] = '\n';
            else if (*q == '\\' || *q == '"')
              s->key[k++] = *q;
            else
              HK_FAIL_("bad escape in %.*s", (int)(end - p), p);
            q++;
          } else {
            s->key[k++] = *q++;
          }
          HK_ASSERT(k < sizeof s->key - 8);
        }
        q++;
      }
      s->key[k++] = *q++;
    }
    s->key[k] = '\0';
    if (*q++ != ' ') HK_FAIL_("no space before the value in %.*s", (int)(end - p), p);
    char number[64];
    HK_ASSERT((size_t)(end - q) < sizeof number);
    memcpy(number, q, (size_t)(end - q));
    number[end - q] = '\0';
    char *rest;
    s->value = strtod(number, &rest);
    if (*rest != '\0' || number[0] == '\0') HK_FAIL_("bad value in %.*s", (int)(end - p), p);
    p = end + 1;
  }
  if (format == HK_PROM_OPENMETRICS && !eof) HK_FAIL_("no # EOF");
  return out;
}

static double sample(const samples_t *s, const char *key) {
  for (size_t i = 0; i < s->count; i++)
    if (strcmp(s->items[i].key, key) == 0) return s->items[i].value;
  HK_FAIL_("no sample %s", key);
}

/* ---- exact output ------------------------------------------------------------------------- */

/* A small registry that exercises every kind of line. */
static hk_metrics_t *small_registry(void) {
  hk_metrics_t *r = new_registry(2);
  const char *mode[] = {"mode"};
  hk_metric_t *legacy = reg(r, HK_METRIC_COUNTER, "hancock_requests_by_mode", "Requests by mode.",
                            mode, 1, HK_METRIC_LEGACY_COUNTER_NAME);
  hk_series_add(series1(legacy, "a\"b\\c\nd \xC3\xA9"), 1, 3);
  hk_metric_t *total =
      reg(r, HK_METRIC_COUNTER, "hancock_requests_total", "Reqs \\ \"x\"\nnext.", NULL, 0, 0);
  hk_series_add(hk_metric_series(total, NULL, 0), 0, 1e6);
  double buckets[] = {0.1, 1, 10};
  hk_metric_t *h = reg_histogram(r, "hancock_latency_seconds", mode, 1, buckets, 3);
  hk_series_t *s = series1(h, "x");
  hk_series_observe(s, 0, 0.1);
  hk_series_observe(s, 1, 0.5);
  hk_series_observe(s, 1, 20);
  hk_metric_t *g = reg(r, HK_METRIC_GAUGE, "hancock_g", "G.", NULL, 0, 0);
  hk_series_gauge_set(hk_metric_series(g, NULL, 0), 0.1 + 0.2);
  reg(r, HK_METRIC_GAUGE, "hancock_empty", "No series yet.", mode, 1, 0);
  return r;
}

/* The registry's own families, as they read for small_registry(); the counters' family names
 * differ by format. */
#define OWN_FAMILIES(refused_family, dropped_family)                                               \
  "# HELP " refused_family " Metric families not registered: over the scripts' family cap "        \
  "(family_cap) or with help text over the limit (help_too_long).\n"                               \
  "# TYPE " refused_family " counter\n"                                                            \
  "hancock_metric_families_refused_total{reason=\"family_cap\"} 0\n"                               \
  "hancock_metric_families_refused_total{reason=\"help_too_long\"} 0\n"                            \
  "# HELP hancock_metric_series Series (label sets) stored per metric.\n"                          \
  "# TYPE hancock_metric_series gauge\n"                                                           \
  "hancock_metric_series{metric=\"hancock_metric_series_dropped_total\"} 8\n"                      \
  "hancock_metric_series{metric=\"hancock_metric_series\"} 8\n"                                    \
  "hancock_metric_series{metric=\"hancock_metric_families_refused_total\"} 2\n"                    \
  "hancock_metric_series{metric=\"hancock_requests_by_mode\"} 1\n"                                 \
  "hancock_metric_series{metric=\"hancock_requests_total\"} 1\n"                                   \
  "hancock_metric_series{metric=\"hancock_latency_seconds\"} 1\n"                                  \
  "hancock_metric_series{metric=\"hancock_g\"} 1\n"                                                \
  "hancock_metric_series{metric=\"hancock_empty\"} 0\n"                                            \
  "# HELP " dropped_family " Label sets not stored because their metric was at its series cap.\n"  \
  "# TYPE " dropped_family " counter\n"                                                            \
  "hancock_metric_series_dropped_total{metric=\"hancock_metric_series_dropped_total\"} 0\n"        \
  "hancock_metric_series_dropped_total{metric=\"hancock_metric_series\"} 0\n"                      \
  "hancock_metric_series_dropped_total{metric=\"hancock_metric_families_refused_total\"} 0\n"      \
  "hancock_metric_series_dropped_total{metric=\"hancock_requests_by_mode\"} 0\n"                   \
  "hancock_metric_series_dropped_total{metric=\"hancock_requests_total\"} 0\n"                     \
  "hancock_metric_series_dropped_total{metric=\"hancock_latency_seconds\"} 0\n"                    \
  "hancock_metric_series_dropped_total{metric=\"hancock_g\"} 0\n"                                  \
  "hancock_metric_series_dropped_total{metric=\"hancock_empty\"} 0\n"

HK_TEST(text_exact) {
  hk_metrics_t *r = small_registry();
  char *text = render(r, HK_PROM_TEXT);
  assert_text_eq(
      text, "# HELP hancock_empty No series yet.\n"
            "# TYPE hancock_empty gauge\n"
            "# HELP hancock_g G.\n"
            "# TYPE hancock_g gauge\n"
            "hancock_g 0.30000000000000004\n"
            "# HELP hancock_latency_seconds A histogram.\n"
            "# TYPE hancock_latency_seconds histogram\n"
            "hancock_latency_seconds_bucket{mode=\"x\",le=\"0.1\"} 1\n"
            "hancock_latency_seconds_bucket{mode=\"x\",le=\"1\"} 2\n"
            "hancock_latency_seconds_bucket{mode=\"x\",le=\"10\"} 2\n"
            "hancock_latency_seconds_bucket{mode=\"x\",le=\"+Inf\"} 3\n"
            "hancock_latency_seconds_sum{mode=\"x\"} 20.6\n"
            "hancock_latency_seconds_count{mode=\"x\"} 3\n" OWN_FAMILIES(
                "hancock_metric_families_refused_total", "hancock_metric_series_dropped_total") "# HELP hancock_requests_by_mode Requests "
                                                       "by mode.\n"
                                                       "# TYPE hancock_requests_by_mode counter\n"
                                                       "hancock_requests_by_mode{mode="
                                                       "\"a\\\"b\\\\c\\nd \xC3\xA9\"} 3\n"
                                                       "# HELP hancock_requests_total Reqs \\\\ "
                                                       "\"x\"\\nnext.\n"
                                                       "# TYPE hancock_requests_total counter\n"
                                                       "hancock_requests_total 1000000\n");
  free(text);
  hk_metrics_free(r);
}

HK_TEST(openmetrics_exact) {
  hk_metrics_t *r = small_registry();
  char *text = render(r, HK_PROM_OPENMETRICS);
  assert_text_eq(
      text,
      "# HELP hancock_empty No series yet.\n"
      "# TYPE hancock_empty gauge\n"
      "# HELP hancock_g G.\n"
      "# TYPE hancock_g gauge\n"
      "hancock_g 0.30000000000000004\n"
      "# HELP hancock_latency_seconds A histogram.\n"
      "# TYPE hancock_latency_seconds histogram\n"
      "hancock_latency_seconds_bucket{mode=\"x\",le=\"0.1\"} 1\n"
      "hancock_latency_seconds_bucket{mode=\"x\",le=\"1.0\"} 2\n"
      "hancock_latency_seconds_bucket{mode=\"x\",le=\"10.0\"} 2\n"
      "hancock_latency_seconds_bucket{mode=\"x\",le=\"+Inf\"} 3\n"
      "hancock_latency_seconds_sum{mode=\"x\"} 20.6\n"
      "hancock_latency_seconds_count{mode=\"x\"} 3\n" OWN_FAMILIES(
          "hancock_metric_families_refused", "hancock_metric_series_dropped") "# HELP hancock_requests_by_mode Requests by mode.\n"
                                           "# TYPE hancock_requests_by_mode unknown\n"
                                           "hancock_requests_by_mode{mode=\"a\\\"b\\\\c\\nd "
                                           "\xC3\xA9\"} 3\n"
                                           "# HELP hancock_requests Reqs \\\\ \\\"x\\\"\\nnext.\n"
                                           "# TYPE hancock_requests counter\n"
                                           "hancock_requests_total 1000000\n"
                                           "# EOF\n");
  free(text);
  hk_metrics_free(r);
}

HK_TEST(numbers) {
  hk_metrics_t *r = new_registry(1);
  const char *labels[] = {"case"};
  hk_metric_t *g = reg(r, HK_METRIC_GAUGE, "hancock_n", "n", labels, 1, 0);
  static const struct {
    double value;
    const char *text;
  } cases[] = {
      {0, "0"},
      {-0.0, "0"},
      {3, "3"},
      {-5, "-5"},
      {1e6, "1000000"},
      {9007199254740991.0, "9007199254740991"},
      {9007199254740992.0, "9007199254740992"}, /* %.16g: no exponent, still exact */
      {1e16, "1e+16"},
      {1e20, "1e+20"},
      {-1e300, "-1e+300"},
      {0.1, "0.1"},
      {0.005, "0.005"},
      {1.5, "1.5"},
      {1.0 / 3, "0.3333333333333333"},
      {2.0 / 3, "0.6666666666666666"},
      {1e-7, "1e-07"},
      {5e-324, NULL}, /* denormal: reads back exactly, not necessarily shortest */
      {1.7976931348623157e308, "1.7976931348623157e+308"},
      {INFINITY, "+Inf"},
      {-INFINITY, "-Inf"},
      {NAN, "NaN"},
  };
  size_t n = sizeof cases / sizeof cases[0];
  for (size_t i = 0; i < n; i++) {
    char name[8];
    snprintf(name, sizeof name, "%02zu", i);
    hk_series_gauge_set(series1(g, name), cases[i].value);
  }
  char *text = render(r, HK_PROM_TEXT);
  for (size_t i = 0; i < n; i++) {
    char line[128];
    snprintf(line, sizeof line, "hancock_n{case=\"%02zu\"} ", i);
    const char *at = strstr(text, line);
    HK_ASSERT(at != NULL);
    at += strlen(line);
    size_t len = strcspn(at, "\n");
    if (cases[i].text != NULL && (len != strlen(cases[i].text) || memcmp(at, cases[i].text, len)))
      HK_FAIL_("%g printed as %.*s, expected %s", cases[i].value, (int)len, at, cases[i].text);
    /* Every finite value reads back exactly. */
    if (isfinite(cases[i].value)) HK_ASSERT(strtod(at, NULL) == cases[i].value);
  }
  /* Bucket bounds: the same numbers in text, with a fraction in OpenMetrics. */
  double buckets[] = {-2, 0, 0.25, 1, 100, 1e21};
  hk_metric_t *h = reg_histogram(r, "hancock_b", NULL, 0, buckets, 6);
  hk_metric_series(h, NULL, 0);
  free(text);
  text = render(r, HK_PROM_TEXT);
  HK_ASSERT(strstr(text, "hancock_b_bucket{le=\"-2\"} 0\nhancock_b_bucket{le=\"0\"} 0\n"
                         "hancock_b_bucket{le=\"0.25\"} 0\nhancock_b_bucket{le=\"1\"} 0\n"
                         "hancock_b_bucket{le=\"100\"} 0\nhancock_b_bucket{le=\"1e+21\"} 0\n"
                         "hancock_b_bucket{le=\"+Inf\"} 0\nhancock_b_sum 0\nhancock_b_count 0\n"));
  free(text);
  text = render(r, HK_PROM_OPENMETRICS);
  HK_ASSERT(strstr(text, "hancock_b_bucket{le=\"-2.0\"} 0\nhancock_b_bucket{le=\"0.0\"} 0\n"
                         "hancock_b_bucket{le=\"0.25\"} 0\nhancock_b_bucket{le=\"1.0\"} 0\n"
                         "hancock_b_bucket{le=\"100.0\"} 0\nhancock_b_bucket{le=\"1e+21\"} 0\n"
                         "hancock_b_bucket{le=\"+Inf\"} 0\nhancock_b_sum 0\nhancock_b_count 0\n"));
  free(text);
  hk_metrics_free(r);
}

HK_TEST(escaping) {
  hk_metrics_t *r = new_registry(1);
  const char *labels[] = {"a", "b"};
  hk_metric_t *g =
      reg(r, HK_METRIC_GAUGE, "hancock_e", "back\\slash \"q\" end\\\nline2\\n", labels, 2, 0);
  const char *values[] = {"\\", "\"\n\\n}{,= \r\t\xE2\x82\xAC"};
  hk_series_gauge_set(hk_metric_series_str(g, values, 2), 1);
  char *text = render(r, HK_PROM_TEXT);
  HK_ASSERT(strstr(text, "# HELP hancock_e back\\\\slash \"q\" end\\\\\\nline2\\\\n\n") != NULL);
  HK_ASSERT(strstr(text, "hancock_e{a=\"\\\\\",b=\"\\\"\\n\\\\n}{,= \r\t\xE2\x82\xAC\"} 1\n") !=
            NULL);
  samples_t s = parse_samples(text, HK_PROM_TEXT);
  HK_ASSERT(sample(&s, "hancock_e{a=\\,b=\"\n\\n}{,= \r\t\xE2\x82\xAC}") == 1);
  free(s.items);
  free(text);
  text = render(r, HK_PROM_OPENMETRICS);
  HK_ASSERT(strstr(text, "# HELP hancock_e back\\\\slash \\\"q\\\" end\\\\\\nline2\\\\n\n") !=
            NULL);
  HK_ASSERT(strstr(text, "hancock_e{a=\"\\\\\",b=\"\\\"\\n\\\\n}{,= \r\t\xE2\x82\xAC\"} 1\n") !=
            NULL);
  free(text);
  hk_metrics_free(r);
}

/* ---- promtool ----------------------------------------------------------------------------- */

/* Runs `promtool check metrics` on text; returns its exit status and its output in report, or
 * -1 when promtool is not installed. */
static int promtool_check(const char *text, char *report, size_t size) {
  if (system("command -v promtool >/dev/null 2>&1") != 0) return -1;
  char path[] = "/tmp/hk_prom_test_XXXXXX";
  int fd = mkstemp(path);
  HK_ASSERT(fd >= 0);
  close(fd);
  char command[128];
  snprintf(command, sizeof command, "promtool check metrics >%s 2>&1", path);
  signal(SIGPIPE, SIG_IGN);
  FILE *p = popen(command, "w");
  HK_ASSERT(p != NULL);
  fwrite(text, 1, strlen(text), p);
  int status = pclose(p);
  FILE *f = fopen(path, "r");
  HK_ASSERT(f != NULL);
  size_t n = fread(report, 1, size - 1, f);
  report[n] = '\0';
  fclose(f);
  unlink(path);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* A registry like the service's, with awkward values. */
static hk_metrics_t *service_registry(void) {
  hk_metrics_t *r = new_registry(4);
  const char *endpoint[] = {"endpoint"}, *mode[] = {"mode"};
  const char *route_status[] = {"route", "method", "status"};
  hk_metric_t *by_endpoint =
      reg(r, HK_METRIC_COUNTER, "hancock_requests_by_endpoint",
          "Requests by endpoint (legacy name).", endpoint, 1, HK_METRIC_LEGACY_COUNTER_NAME);
  hk_metric_t *by_mode =
      reg(r, HK_METRIC_COUNTER, "hancock_requests_by_mode", "Requests by mode (legacy name).", mode,
          1, HK_METRIC_LEGACY_COUNTER_NAME);
  hk_metric_t *requests = reg(r, HK_METRIC_COUNTER, "hancock_http_requests_total",
                              "HTTP requests by route, method and status.", route_status, 3, 0);
  hk_metric_t *inflight =
      reg(r, HK_METRIC_GAUGE, "hancock_http_requests_in_flight",
          "Requests being handled. Odd \\ help \"quoted\"\nsecond line.", NULL, 0, 0);
  hk_metric_t *temps =
      reg(r, HK_METRIC_GAUGE, "hancock_test_values", "Awkward gauge values.", mode, 1, 0);
  const char *route_only[] = {"route"};
  hk_metric_t *latency =
      reg_histogram(r, "hancock_http_request_duration_seconds", route_only, 1, NULL, 0);
  double size_buckets[] = {100, 1000, 10000, 100000};
  hk_metric_t *sizes =
      reg_histogram(r, "hancock_http_response_size_bytes", NULL, 0, size_buckets, 4);
  hk_metric_series(reg_histogram(r, "hancock_unused_seconds", NULL, 0, NULL, 0), NULL, 0);
  reg(r, HK_METRIC_GAUGE, "hancock_nothing_yet", "A family without series.", mode, 1, 0);

  hk_series_add(series1(by_endpoint, "/v1/chat"), 0, 5);
  hk_series_add(series1(by_endpoint, "/v1/items/:id"), 1, 2);
  hk_series_add(series1(by_endpoint, "C:\\path \"quoted\"\nnewline"), 2, 1);
  hk_series_add(series1(by_mode, "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xF0\x9F\x98\x80"), 3, 7);
  hk_series_add(series1(by_mode, "bad \xff\xfe utf8"), 0, 1);
  char long_value[400];
  memset(long_value, 'x', sizeof long_value - 1);
  long_value[sizeof long_value - 1] = '\0';
  hk_series_add(series1(by_mode, long_value), 0, 1);
  const char *a[] = {"/v1/chat", "POST", "200"}, *b[] = {"/v1/chat", "POST", "500"},
             *c[] = {"/v1/items/:id", "GET", "404"};
  hk_series_add(hk_metric_series_str(requests, a, 3), 0, 10);
  hk_series_add(hk_metric_series_str(requests, a, 3), 3, 5);
  hk_series_add(hk_metric_series_str(requests, b, 3), 1, 1);
  hk_series_add(hk_metric_series_str(requests, c, 3), 2, 0.5);
  hk_series_gauge_set(hk_metric_series(inflight, NULL, 0), 3);
  hk_series_gauge_set(series1(temps, "nan"), NAN);
  hk_series_gauge_set(series1(temps, "inf"), INFINITY);
  hk_series_gauge_set(series1(temps, "-inf"), -INFINITY);
  hk_series_gauge_set(series1(temps, "negative"), -273.15);
  hk_series_gauge_set(series1(temps, "huge"), 1.5e300);
  hk_series_gauge_set(series1(temps, "tiny"), 1e-300);
  hk_series_t *chat = series1(latency, "/v1/chat"), *items = series1(latency, "/v1/items/:id");
  /* Boundary values land in the bucket whose le equals them. */
  double chat_obs[] = {0.005, 0.005, 0.0051, 0.1, 0.3, 1, 10, 10.5, 0};
  for (size_t i = 0; i < sizeof chat_obs / sizeof chat_obs[0]; i++)
    hk_series_observe(chat, (unsigned)i % 4, chat_obs[i]);
  hk_series_observe(items, 2, 2.5);
  hk_series_t *size = hk_metric_series(sizes, NULL, 0);
  hk_series_observe(size, 0, 100);
  hk_series_observe(size, 1, 1e6);
  return r;
}

HK_TEST(promtool_accepts_text) {
  hk_metrics_t *r = service_registry();
  char *text = render(r, HK_PROM_TEXT);
  char report[8192];
  int status = promtool_check(text, report, sizeof report);
  if (status < 0) {
    fprintf(stderr, "promtool not installed: skipping the promtool check\n");
  } else {
    /* Lint findings exit 3; a parse error exits 1. The only findings are the legacy names. */
    size_t legacy = 0;
    for (char *line = strtok(report, "\n"); line != NULL; line = strtok(NULL, "\n")) {
      if (strcmp(line, "hancock_requests_by_endpoint counter metrics should have \"_total\" "
                       "suffix") == 0 ||
          strcmp(line, "hancock_requests_by_mode counter metrics should have \"_total\" suffix") ==
              0)
        legacy++;
      else
        HK_FAIL_("promtool (exit %d) complained: %s\n%s", status, line, text);
    }
    HK_ASSERT_INT_EQ(legacy, 2);
    HK_ASSERT_INT_EQ(status, 3);
  }
  free(text);
  hk_metrics_free(r);
}

HK_TEST(values_read_back) {
  hk_metrics_t *r = service_registry();
  for (int f = 0; f < 2; f++) {
    hk_prom_format_t format = f ? HK_PROM_OPENMETRICS : HK_PROM_TEXT;
    const char *one = f ? "1.0" : "1", *ten = f ? "10.0" : "10";
    char *text = render(r, format);
    samples_t s = parse_samples(text, format);
    HK_ASSERT(sample(&s, "hancock_requests_by_endpoint{endpoint=/v1/chat}") == 5);
    HK_ASSERT(sample(&s, "hancock_requests_by_endpoint{endpoint=C:\\path \"quoted\"\nnewline}") ==
              1);
    HK_ASSERT(sample(&s, "hancock_requests_by_mode{mode=\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E "
                         "\xF0\x9F\x98\x80}") == 7);
    HK_ASSERT(sample(&s, "hancock_requests_by_mode{mode=bad \xEF\xBF\xBD\xEF\xBF\xBD utf8}") == 1);
    HK_ASSERT(sample(&s, "hancock_http_requests_total{route=/v1/chat,method=POST,status=200}") ==
              15);
    HK_ASSERT(
        sample(&s, "hancock_http_requests_total{route=/v1/items/:id,method=GET,status=404}") ==
        0.5);
    HK_ASSERT(isnan(sample(&s, "hancock_test_values{mode=nan}")));
    HK_ASSERT(sample(&s, "hancock_test_values{mode=inf}") == INFINITY);
    HK_ASSERT(sample(&s, "hancock_test_values{mode=-inf}") == -INFINITY);
    HK_ASSERT(sample(&s, "hancock_test_values{mode=negative}") == -273.15);
    HK_ASSERT(sample(&s, "hancock_test_values{mode=huge}") == 1.5e300);
    HK_ASSERT(sample(&s, "hancock_test_values{mode=tiny}") == 1e-300);
    /* Cumulative buckets: 0, 0.005, 0.005 | 0.0051 | 0.1 | 0.3 | 1 | 10 | 10.5. */
    static const struct {
      const char *le_text, *le_om;
      double count;
    } chat[] = {{"0.005", "0.005", 3}, {"0.01", "0.01", 4}, {"0.025", "0.025", 4},
                {"0.05", "0.05", 4},   {"0.1", "0.1", 5},   {"0.25", "0.25", 5},
                {"0.5", "0.5", 6},     {"1", "1.0", 7},     {"2.5", "2.5", 7},
                {"5", "5.0", 7},       {"10", "10.0", 8},   {"+Inf", "+Inf", 9}};
    for (size_t i = 0; i < sizeof chat / sizeof chat[0]; i++) {
      char key[128];
      snprintf(key, sizeof key,
               "hancock_http_request_duration_seconds_bucket{route=/v1/chat,le=%s}",
               f ? chat[i].le_om : chat[i].le_text);
      if (sample(&s, key) != chat[i].count)
        HK_FAIL_("%s: %g, expected %g", key, sample(&s, key), chat[i].count);
    }
    HK_ASSERT(sample(&s, "hancock_http_request_duration_seconds_count{route=/v1/chat}") == 9);
    HK_ASSERT(sample(&s, "hancock_http_request_duration_seconds_sum{route=/v1/chat}") ==
              0.005 + 0.005 + 0.0051 + 0.1 + 0.3 + 1 + 10 + 10.5 + 0);
    char key[128];
    snprintf(key, sizeof key,
             "hancock_http_request_duration_seconds_bucket{route=/v1/items/:id,le=%s}",
             f ? "2.5" : "2.5");
    HK_ASSERT(sample(&s, key) == 1);
    snprintf(key, sizeof key, "hancock_http_response_size_bytes_bucket{le=%s}",
             f ? "100.0" : "100");
    HK_ASSERT(sample(&s, key) == 1);
    HK_ASSERT(sample(&s, "hancock_http_response_size_bytes_bucket{le=+Inf}") == 2);
    HK_ASSERT(sample(&s, "hancock_unused_seconds_count") == 0);
    snprintf(key, sizeof key, "hancock_unused_seconds_bucket{le=%s}", one);
    HK_ASSERT(sample(&s, key) == 0);
    snprintf(key, sizeof key, "hancock_unused_seconds_bucket{le=%s}", ten);
    HK_ASSERT(sample(&s, key) == 0);
    /* Every family has its HELP and TYPE once, the empty one included. */
    HK_ASSERT_INT_EQ(count_occurrences(text, "# TYPE hancock_nothing_yet gauge\n"), 1);
    HK_ASSERT_INT_EQ(count_occurrences(text, "# TYPE "), hk_metrics_family_count(r));
    HK_ASSERT_INT_EQ(count_occurrences(text, "# HELP "), hk_metrics_family_count(r));
    HK_ASSERT(sample(&s, "hancock_metric_series{metric=hancock_requests_by_mode}") == 3);
    HK_ASSERT(sample(&s, "hancock_metric_series_dropped_total{metric=hancock_requests_by_mode}") ==
              0);
    if (f) {
      HK_ASSERT(strstr(text, "# TYPE hancock_http_requests counter\n") != NULL);
      HK_ASSERT(strstr(text, "# TYPE hancock_requests_by_mode unknown\n") != NULL);
      HK_ASSERT(strstr(text, "# HELP hancock_http_requests_in_flight Requests being handled. "
                             "Odd \\\\ help \\\"quoted\\\"\\nsecond line.\n") != NULL);
    } else {
      HK_ASSERT(strstr(text, "# TYPE hancock_http_requests_total counter\n") != NULL);
      HK_ASSERT(strstr(text, "# TYPE hancock_requests_by_mode counter\n") != NULL);
      HK_ASSERT(strstr(text, "# HELP hancock_http_requests_in_flight Requests being handled. "
                             "Odd \\\\ help \"quoted\"\\nsecond line.\n") != NULL);
    }
    free(s.items);
    free(text);
  }
  hk_metrics_free(r);
}

/* ---- slices ------------------------------------------------------------------------------- */

/* Renders in slices of `budget`, checking each ends on a line, and returns the concatenation. */
static char *render_sliced(hk_metrics_t *r, hk_prom_format_t format, size_t budget) {
  hk_prom_cursor_t cursor;
  hk_prom_cursor_init(&cursor, format);
  hk_buf_t all = HK_BUF_INIT, slice = HK_BUF_INIT;
  size_t slices = 0;
  while (!cursor.done) {
    hk_buf_reset(&slice);
    HK_ASSERT_INT_EQ(hk_prom_render(r, &cursor, &slice, budget), 0);
    HK_ASSERT(slice.len > 0);
    HK_ASSERT(slice.data[slice.len - 1] == '\n');
    HK_ASSERT_INT_EQ(hk_buf_append(&all, slice.data, slice.len), 0);
    slices++;
    HK_ASSERT(slices < 1000000);
  }
  /* Once done, a further call adds nothing. */
  hk_buf_reset(&slice);
  HK_ASSERT_INT_EQ(hk_prom_render(r, &cursor, &slice, budget), 0);
  HK_ASSERT_INT_EQ(slice.len, 0);
  hk_buf_free(&slice);
  return hk_buf_steal(&all, NULL);
}

HK_TEST(sliced_equals_one_shot) {
  hk_metrics_t *r = service_registry();
  for (int f = 0; f < 2; f++) {
    hk_prom_format_t format = f ? HK_PROM_OPENMETRICS : HK_PROM_TEXT;
    char *whole = render(r, format);
    static const size_t budgets[] = {0, 1, 40, 97, 333, 1000, 4096, 1 << 20};
    for (size_t i = 0; i < sizeof budgets / sizeof budgets[0]; i++) {
      char *sliced = render_sliced(r, format, budgets[i]);
      assert_text_eq(sliced, whole);
      free(sliced);
    }
    /* Budget 0 and 1 write exactly one header or one series per slice. */
    hk_prom_cursor_t cursor;
    hk_prom_cursor_init(&cursor, format);
    hk_buf_t out = HK_BUF_INIT;
    HK_ASSERT_INT_EQ(hk_prom_render(r, &cursor, &out, 0), 0);
    HK_ASSERT_STR_EQ(out.data, "# HELP hancock_http_request_duration_seconds A histogram.\n"
                               "# TYPE hancock_http_request_duration_seconds histogram\n");
    HK_ASSERT_STR_EQ(cursor.family, "hancock_http_request_duration_seconds");
    HK_ASSERT(cursor.family_started);
    HK_ASSERT_INT_EQ(cursor.series, 0);
    hk_buf_reset(&out);
    HK_ASSERT_INT_EQ(hk_prom_render(r, &cursor, &out, 1), 0);
    HK_ASSERT_INT_EQ(count_occurrences(out.data, "\n"), 12 + 2); /* 12 buckets, sum, count */
    HK_ASSERT_INT_EQ(cursor.series, 1);
    hk_buf_free(&out);
    free(whole);
  }
  hk_metrics_free(r);
}

HK_TEST(sliced_registration_between_slices) {
  for (int f = 0; f < 2; f++) {
    hk_prom_format_t format = f ? HK_PROM_OPENMETRICS : HK_PROM_TEXT;
    hk_metrics_t *r = new_registry(1);
    const char *labels[] = {"i"};
    hk_metric_t *fb = reg(r, HK_METRIC_GAUGE, "f_b", "b", labels, 1, 0);
    hk_metric_t *fd = reg(r, HK_METRIC_GAUGE, "f_d", "d", labels, 1, 0);
    reg(r, HK_METRIC_GAUGE, "f_f", "f", labels, 1, 0);
    for (hk_metric_t *m = hk_metrics_family_after(r, NULL); m != NULL;
         m = hk_metrics_family_after(r, hk_metric_name(m))) {
      if (hk_metric_name(m)[0] != 'f') continue;
      for (int i = 0; i < 5; i++) {
        char v[8];
        snprintf(v, sizeof v, "%d", i);
        hk_series_gauge_set(series1(m, v), i);
      }
    }
    hk_prom_cursor_t cursor;
    hk_prom_cursor_init(&cursor, format);
    hk_buf_t out = HK_BUF_INIT;
    /* One line per slice until f_d is half written. */
    while (!(strcmp(cursor.family, "f_d") == 0 && cursor.series == 2))
      HK_ASSERT_INT_EQ(hk_prom_render(r, &cursor, &out, 1), 0);
    /* A reload registers families on both sides of the cursor, and series appear. */
    reg(r, HK_METRIC_GAUGE, "f_a", "a", labels, 1, 0);
    reg(r, HK_METRIC_GAUGE, "f_c", "c", labels, 1, 0);
    reg(r, HK_METRIC_GAUGE, "f_e", "e", labels, 1, 0);
    reg(r, HK_METRIC_GAUGE, "f_d_", "d_", labels, 1, 0);
    reg(r, HK_METRIC_GAUGE, "z", "z", labels, 1, 0);
    hk_series_gauge_set(series1(fb, "late"), 1);
    hk_series_gauge_set(series1(fd, "late"), 1);
    while (!cursor.done)
      HK_ASSERT_INT_EQ(hk_prom_render(r, &cursor, &out, 1), 0);
    /* Nothing written twice; nothing skipped that sorts after the cursor. */
    const char *present[] = {"f_b", "f_d", "f_d_", "f_e", "f_f", "z", "hancock_metric_series"};
    for (size_t i = 0; i < sizeof present / sizeof present[0]; i++) {
      char type_line[64];
      snprintf(type_line, sizeof type_line, "# TYPE %s gauge\n", present[i]);
      if (count_occurrences(out.data, type_line) != 1)
        HK_FAIL_("%s not once in\n%s", type_line, out.data);
    }
    /* Those sorting before the cursor wait for the next scrape. */
    HK_ASSERT(strstr(out.data, "# TYPE f_a gauge") == NULL);
    HK_ASSERT(strstr(out.data, "# TYPE f_c gauge") == NULL);
    HK_ASSERT(strstr(out.data, "f_b{i=\"late\"}") == NULL);
    HK_ASSERT(strstr(out.data, "f_d{i=\"late\"} 1\n") != NULL);
    HK_ASSERT_INT_EQ(count_occurrences(out.data, "f_d{i="), 6);
    HK_ASSERT_INT_EQ(count_occurrences(out.data, "# EOF\n"), f ? 1 : 0);
    samples_t s = parse_samples(out.data, format); /* well formed throughout */
    free(s.items);
    /* The next scrape has everything. */
    char *next = render(r, format);
    HK_ASSERT(strstr(next, "# TYPE f_a gauge\n") != NULL);
    HK_ASSERT(strstr(next, "f_b{i=\"late\"} 1\n") != NULL);
    free(next);
    hk_buf_free(&out);
    hk_metrics_free(r);
  }
}

/* Builds `families` counter families of `per_family` series each, two labels. */
static hk_metrics_t *big_registry(size_t families, size_t per_family) {
  hk_metrics_t *r = new_registry(4);
  const char *labels[] = {"route", "status"};
  for (size_t f = 0; f < families; f++) {
    char name[64];
    snprintf(name, sizeof name, "hancock_big_%03zu_requests_total", f);
    hk_metric_opts_t o = {.type = HK_METRIC_COUNTER,
                          .name = name,
                          .help = "Requests.",
                          .labels = labels,
                          .label_count = 2,
                          .series_cap = per_family};
    hk_metric_t *m = NULL;
    HK_ASSERT_INT_EQ(hk_metrics_register(r, &o, &m, NULL, 0), 0);
    for (size_t i = 0; i < per_family; i++) {
      char route[48];
      snprintf(route, sizeof route, "/v1/items/%zu/detail", i / 5);
      static const char *const statuses[] = {"200", "201", "404", "500", "503"};
      const char *values[] = {route, statuses[i % 5]};
      hk_series_t *s = hk_metric_series_str(m, values, 2);
      HK_ASSERT(s != NULL);
      hk_series_add(s, (unsigned)i % 4, (double)(i * 7 % 1000));
    }
  }
  return r;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Renders as the server would (64 KiB slices into a buffer it drains), reporting time, size and
 * the largest the buffer got; one-shot for comparison. */
static void time_render(const char *label, size_t families, size_t per_family) {
  double t0 = now_ms();
  hk_metrics_t *r = big_registry(families, per_family);
  double t1 = now_ms();
  const size_t budget = 64 * 1024;
  for (int f = 0; f < 2; f++) {
    hk_prom_format_t format = f ? HK_PROM_OPENMETRICS : HK_PROM_TEXT;
    hk_prom_cursor_t cursor;
    hk_prom_cursor_init(&cursor, format);
    hk_buf_t slice = HK_BUF_INIT;
    size_t total = 0, slices = 0, max_slice = 0;
    double s0 = now_ms();
    while (!cursor.done) {
      hk_buf_reset(&slice);
      HK_ASSERT_INT_EQ(hk_prom_render(r, &cursor, &slice, budget), 0);
      total += slice.len;
      slices++;
      if (slice.len > max_slice) max_slice = slice.len;
    }
    double s1 = now_ms();
    size_t slice_cap = slice.cap;
    hk_buf_free(&slice);
    hk_buf_t whole = HK_BUF_INIT;
    double w0 = now_ms();
    HK_ASSERT_INT_EQ(hk_prom_render_all(r, format, &whole), 0);
    double w1 = now_ms();
    HK_ASSERT_INT_EQ(whole.len, total);
    /* Memory: the buffer never holds much more than one slice. */
    HK_ASSERT(max_slice < budget + 1024);
    HK_ASSERT(slice_cap <= 2 * (budget + 1024));
    fprintf(stderr,
            "%s %s: %zu series (+%zu own), %zu bytes; sliced %.1f ms in %zu slices of <= %zu bytes "
            "(buffer %zu bytes); one-shot %.1f ms; build %.1f ms\n",
            label, f ? "openmetrics" : "text", families * per_family,
            2 * hk_metrics_family_count(r), total, s1 - s0, slices, max_slice, slice_cap, w1 - w0,
            t1 - t0);
    hk_buf_free(&whole);
  }
  hk_metrics_free(r);
}

HK_TEST(render_10k_series) {
  time_render("10k", 10, 1000);
}

HK_TEST(render_250k_series) {
  time_render("250k", 25, 10000);
}

HK_TEST(render_memory_bounded) {
  hk_metrics_t *r = big_registry(3, 4000);
  const size_t budget = 4096;
  for (int f = 0; f < 2; f++) {
    hk_prom_cursor_t cursor;
    hk_prom_cursor_init(&cursor, f ? HK_PROM_OPENMETRICS : HK_PROM_TEXT);
    hk_buf_t slice = HK_BUF_INIT;
    size_t max_len = 0;
    while (!cursor.done) {
      hk_buf_reset(&slice);
      HK_ASSERT_INT_EQ(hk_prom_render(r, &cursor, &slice, budget), 0);
      if (slice.len > max_len) max_len = slice.len;
    }
    /* A slice overshoots by at most one series (~80 bytes here). */
    HK_ASSERT(max_len >= budget);
    HK_ASSERT(max_len < budget + 128);
    HK_ASSERT(slice.cap <= 2 * budget + 256);
    hk_buf_free(&slice);
  }
  hk_metrics_free(r);
}

/* Scrapes while other threads create series, register families and update cells: every slice
 * stays well formed, and a final scrape has everything. Run under TSan too (see the report). */
typedef struct busy_s {
  hk_metrics_t *registry;
  hk_metric_t *family;
  unsigned worker;
  atomic_int *running;
  atomic_size_t *scrapes;
} busy_t;

/* Paces a writer against the scrapes (not the clock), so writes overlap about 30 of them. */
static void wait_scrapes(const busy_t *b, size_t n) {
  while (atomic_load(b->scrapes) < n)
    sched_yield();
}

#define BUSY_SERIES 6000

static void *busy_writer(void *p) {
  busy_t *b = p;
  for (int i = 0; i < BUSY_SERIES; i++) {
    char v[16];
    snprintf(v, sizeof v, "s%d", i);
    const char *values[] = {v};
    hk_series_t *s = hk_metric_series_str(b->family, values, 1);
    HK_ASSERT(s != NULL);
    hk_series_observe(s, b->worker, i * 0.001);
    wait_scrapes(b, (size_t)i / 200);
  }
  atomic_fetch_sub(b->running, 1);
  return NULL;
}

static void *busy_registrar(void *p) {
  busy_t *b = p;
  for (int i = 0; i < 300; i++) {
    char name[32];
    snprintf(name, sizeof name, "hancock_%c_%03d", "amz"[i % 3], i);
    hk_metric_opts_t o = {.type = HK_METRIC_GAUGE, .name = name, .help = "Busy."};
    hk_metric_t *m = NULL;
    HK_ASSERT_INT_EQ(hk_metrics_register(b->registry, &o, &m, NULL, 0), 0);
    hk_series_gauge_add(hk_metric_series(m, NULL, 0), i);
    wait_scrapes(b, (size_t)i / 10);
  }
  atomic_fetch_sub(b->running, 1);
  return NULL;
}

HK_TEST(render_while_writing) {
  hk_metrics_t *r = new_registry(2);
  const char *labels[] = {"id"};
  hk_metric_opts_t o = {.type = HK_METRIC_HISTOGRAM,
                        .name = "hancock_busy_seconds",
                        .help = "Busy.",
                        .labels = labels,
                        .label_count = 1,
                        .series_cap = BUSY_SERIES};
  hk_metric_t *h = NULL;
  HK_ASSERT_INT_EQ(hk_metrics_register(r, &o, &h, NULL, 0), 0);
  atomic_int running = 3;
  atomic_size_t scrapes = 0;
  busy_t args[3] = {{r, h, 0, &running, &scrapes},
                    {r, h, 1, &running, &scrapes},
                    {r, NULL, 0, &running, &scrapes}};
  pthread_t threads[3];
  HK_ASSERT_INT_EQ(pthread_create(&threads[0], NULL, busy_writer, &args[0]), 0);
  HK_ASSERT_INT_EQ(pthread_create(&threads[1], NULL, busy_writer, &args[1]), 0);
  HK_ASSERT_INT_EQ(pthread_create(&threads[2], NULL, busy_registrar, &args[2]), 0);
  hk_buf_t slice = HK_BUF_INIT;
  do {
    hk_prom_cursor_t cursor;
    hk_prom_cursor_init(&cursor, atomic_load(&scrapes) % 2 ? HK_PROM_OPENMETRICS : HK_PROM_TEXT);
    while (!cursor.done) {
      hk_buf_reset(&slice);
      HK_ASSERT_INT_EQ(hk_prom_render(r, &cursor, &slice, 2048), 0);
      HK_ASSERT(slice.len > 0 && slice.data[slice.len - 1] == '\n');
    }
    atomic_fetch_add(&scrapes, 1);
  } while (atomic_load(&running) > 0);
  for (int t = 0; t < 3; t++)
    pthread_join(threads[t], NULL);
  hk_buf_free(&slice);
  char *text = render(r, HK_PROM_TEXT);
  samples_t s = parse_samples(text, HK_PROM_TEXT);
  HK_ASSERT_INT_EQ(hk_metric_series_count(h), BUSY_SERIES);
  HK_ASSERT(sample(&s, "hancock_busy_seconds_count{id=s5999}") == 2);
  HK_ASSERT(sample(&s, "hancock_z_299") == 299);
  HK_ASSERT_INT_EQ(count_occurrences(text, "# TYPE "), 304); /* 300 + h + the registry's 3 */
  HK_ASSERT(atomic_load(&scrapes) >= 29);
  fprintf(stderr, "%zu scrapes while writing\n", atomic_load(&scrapes));
  free(s.items);
  free(text);
  hk_metrics_free(r);
}

/* ---- negotiation -------------------------------------------------------------------------- */

static hk_prom_format_t negotiate(const char *accept) {
  return hk_prom_negotiate(accept, accept ? strlen(accept) : 0);
}

HK_TEST(negotiate) {
  const hk_prom_format_t T = HK_PROM_TEXT, OM = HK_PROM_OPENMETRICS;
  static const struct {
    const char *accept;
    hk_prom_format_t want;
  } cases[] = {
      {NULL, HK_PROM_TEXT},
      {"", HK_PROM_TEXT},
      {"text/plain", HK_PROM_TEXT},
      {"*/*", HK_PROM_TEXT},
      {"application/json", HK_PROM_TEXT},
      {"application/openmetrics-text", HK_PROM_OPENMETRICS},
      /* Prometheus 2.42 */
      {"application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
       "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
       HK_PROM_OPENMETRICS},
      /* Prometheus with openmetrics off */
      {"text/plain;version=0.0.4;q=1,*/*;q=0.1", HK_PROM_TEXT},
      /* Prometheus 3 */
      {"application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
       "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;"
       "escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
       HK_PROM_OPENMETRICS},
      {"APPLICATION/OpenMetrics-Text ; Version=1.0.0", HK_PROM_OPENMETRICS},
      {"text/plain, application/openmetrics-text", HK_PROM_OPENMETRICS}, /* equal q */
      {"text/plain;q=0.5, application/openmetrics-text;q=0.5", HK_PROM_OPENMETRICS},
      {"text/plain;q=0.9, application/openmetrics-text;q=0.8", HK_PROM_TEXT},
      {"application/openmetrics-text;q=0.8, text/plain;q=0.9", HK_PROM_TEXT},
      {"application/openmetrics-text;q=0", HK_PROM_TEXT},
      {"application/openmetrics-text;q=0.000, */*", HK_PROM_TEXT},
      {"application/openmetrics-text;q=0.001", HK_PROM_OPENMETRICS},
      {"*/*;q=0.9, application/openmetrics-text;q=0.8", HK_PROM_TEXT},
      {"text/*;q=0.5, */*;q=1, application/openmetrics-text;q=0.6", HK_PROM_OPENMETRICS},
      {"text/plain;q=0.1, */*;q=1, application/openmetrics-text;q=0.2", HK_PROM_OPENMETRICS},
      /* A malformed q drops its range. */
      {"application/openmetrics-text;q=abc, text/plain;q=0.1", HK_PROM_TEXT},
      {"application/openmetrics-text;q=1.5", HK_PROM_TEXT},
      {"application/openmetrics-text;q=0.1234", HK_PROM_TEXT},
      {"text/plain;q=x, application/openmetrics-text;q=0.1", HK_PROM_OPENMETRICS},
      /* Commas and semicolons inside quoted parameters. */
      {"text/plain;foo=\"a,b;q=1\";q=0.1, application/openmetrics-text;q=0.2", HK_PROM_OPENMETRICS},
      {"application/openmetrics-text;foo=\"x\\\",q=0\";q=0.9,text/plain;q=0.8",
       HK_PROM_OPENMETRICS},
      {" ,, ;;, application/openmetrics-text ,", HK_PROM_OPENMETRICS},
      {"application/openmetrics-textx", HK_PROM_TEXT},
      {"application/openmetrics", HK_PROM_TEXT},
      {"application/openmetrics-text;q=\"0.5\", text/plain;q=0.4", HK_PROM_OPENMETRICS},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    hk_prom_format_t got = negotiate(cases[i].accept);
    if (got != cases[i].want)
      HK_FAIL_("Accept: %s -> %s, expected %s", cases[i].accept ? cases[i].accept : "(null)",
               got == OM ? "openmetrics" : "text", cases[i].want == OM ? "openmetrics" : "text");
  }
  /* The header need not be NUL-terminated: only `len` bytes count. */
  HK_ASSERT(hk_prom_negotiate("application/openmetrics-text", 11) == T);
  HK_ASSERT(hk_prom_negotiate("text/plain;q=0.1,application/openmetrics-textXYZ", 45) == OM);
  HK_ASSERT_STR_EQ(hk_prom_content_type(HK_PROM_TEXT), "text/plain; version=0.0.4; charset=utf-8");
  HK_ASSERT_STR_EQ(hk_prom_content_type(HK_PROM_OPENMETRICS),
                   "application/openmetrics-text; version=1.0.0; charset=utf-8");
}

HK_TEST_MAIN(HK_CASE(text_exact), HK_CASE(openmetrics_exact), HK_CASE(numbers), HK_CASE(escaping),
             HK_CASE(promtool_accepts_text), HK_CASE(values_read_back),
             HK_CASE(sliced_equals_one_shot), HK_CASE(sliced_registration_between_slices),
             HK_CASE(render_10k_series), HK_CASE(render_250k_series),
             HK_CASE(render_memory_bounded), HK_CASE(render_while_writing), HK_CASE(negotiate))
