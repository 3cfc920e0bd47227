/* Unit tests for the exemplars of hk_metrics (hk_series_observe_exemplar, hk_series_exemplar)
 * and their exposition by hk_prom: the bucket an exemplar lands in, latest wins, OpenMetrics
 * only, the limits and their codes (the observation counts regardless), the request exemplar of
 * hk_host_metrics, and the seqlock under real threads (no torn copy; run it under TSan too). */
#include "hk_host_metrics.h"
#include "hk_metrics.h"
#include "hk_prom.h"
#include "hk_test.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

/* ---- helpers ------------------------------------------------------------------------------ */

static const double bounds[] = {0.1, 1, 10};

static hk_metrics_t *new_registry(unsigned workers) {
  hk_metrics_t *m = NULL;
  HK_ASSERT_INT_EQ(hk_metrics_new(workers, &m), 0);
  return m;
}

/* hancock_test_seconds, buckets 0.1, 1, 10 (+Inf is bucket 3), labels as given. */
static hk_metric_t *reg_histogram(hk_metrics_t *r, const char *const *labels, size_t label_count) {
  hk_metric_opts_t o = {.type = HK_METRIC_HISTOGRAM,
                        .name = "hancock_test_seconds",
                        .help = "A histogram.",
                        .labels = labels,
                        .label_count = label_count,
                        .buckets = bounds,
                        .bucket_count = 3};
  hk_metric_t *m = NULL;
  char err[256];
  if (hk_metrics_register(r, &o, &m, err, sizeof err) != 0) HK_FAIL_("register: %s", err);
  return m;
}

static hk_series_t *plain_series(hk_metrics_t *r) {
  hk_series_t *s = hk_metric_series(reg_histogram(r, NULL, 0), NULL, 0);
  HK_ASSERT(s != NULL);
  return s;
}

static hk_label_value_t lv(const char *s) {
  return (hk_label_value_t){s, strlen(s)};
}

static uint64_t observations(const hk_series_t *s) {
  uint64_t buckets[HK_METRICS_MAX_BUCKETS + 1], count;
  double sum;
  hk_series_histogram(s, buckets, &sum, &count);
  return count;
}

static bool has_exemplar(const hk_series_t *s, size_t bucket) {
  hk_exemplar_t e;
  return hk_series_exemplar(s, bucket, &e);
}

static void assert_label(const hk_exemplar_t *e, size_t i, const char *name, const char *value) {
  HK_ASSERT(i < e->count);
  HK_ASSERT_MEM_EQ(e->names[i].str, e->names[i].len, name, strlen(name));
  HK_ASSERT_MEM_EQ(e->values[i].str, e->values[i].len, value, strlen(value));
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *render(hk_metrics_t *r, hk_prom_format_t format) {
  hk_buf_t out = HK_BUF_INIT;
  HK_ASSERT_INT_EQ(hk_prom_render_all(r, format, &out), 0);
  return hk_buf_steal(&out, NULL);
}

/* The line of `text` that starts with `prefix` (up to its newline, into line[size]). */
static void line_starting(const char *text, const char *prefix, char *line, size_t size) {
  for (const char *p = text; *p;) {
    size_t len = strcspn(p, "\n");
    if (strncmp(p, prefix, strlen(prefix)) == 0) {
      HK_ASSERT(len < size);
      memcpy(line, p, len);
      line[len] = '\0';
      return;
    }
    p += len + (p[len] == '\n');
  }
  HK_FAIL_("no line starting with %s in:\n%s", prefix, text);
}

/* ---- where exemplars go ------------------------------------------------------------------- */

HK_TEST(exemplar_stored_in_its_bucket) {
  hk_metrics_t *r = new_registry(2);
  hk_series_t *s = plain_series(r);
  for (size_t b = 0; b <= 3; b++)
    HK_ASSERT(!has_exemplar(s, b));
  hk_exemplar_label_t labels[] = {{"request_id", lv("r1")}, {"trace_id", lv("0af7651916cd43dd8448eb211c80319c")}};
  double before = now_seconds();
  HK_ASSERT_INT_EQ(hk_series_observe_exemplar(s, 1, 0.5, labels, 2), 0);
  double after = now_seconds();
  /* 0.5 falls in le=1 (bucket 1) and nowhere else. */
  HK_ASSERT(!has_exemplar(s, 0));
  HK_ASSERT(!has_exemplar(s, 2));
  HK_ASSERT(!has_exemplar(s, 3));
  hk_exemplar_t e;
  HK_ASSERT(hk_series_exemplar(s, 1, &e));
  HK_ASSERT(e.value == 0.5);
  HK_ASSERT(e.timestamp >= before - 0.001 && e.timestamp <= after + 0.001);
  HK_ASSERT_INT_EQ(e.count, 2);
  assert_label(&e, 0, "request_id", "r1");
  assert_label(&e, 1, "trace_id", "0af7651916cd43dd8448eb211c80319c");
  /* Bounds are inclusive (le), past the last one is +Inf, and out-of-range buckets have none. */
  hk_exemplar_label_t one[] = {{"request_id", lv("edge")}};
  HK_ASSERT_INT_EQ(hk_series_observe_exemplar(s, 0, 0.1, one, 1), 0);
  HK_ASSERT_INT_EQ(hk_series_observe_exemplar(s, 0, 1e6, one, 1), 0);
  HK_ASSERT(hk_series_exemplar(s, 0, &e) && e.value == 0.1);
  HK_ASSERT(hk_series_exemplar(s, 3, &e) && e.value == 1e6);
  HK_ASSERT(!hk_series_exemplar(s, 4, &e));
  HK_ASSERT(!hk_series_exemplar(NULL, 0, &e));
  HK_ASSERT_INT_EQ(observations(s), 3);
  hk_metrics_free(r);
}

HK_TEST(latest_exemplar_wins) {
  hk_metrics_t *r = new_registry(2);
  hk_series_t *s = plain_series(r);
  hk_exemplar_label_t first[] = {{"request_id", lv("first-with-a-longer-id")}, {"trace_id", lv("aaaa")}};
  hk_exemplar_label_t second[] = {{"request_id", lv("second")}};
  HK_ASSERT_INT_EQ(hk_series_observe_exemplar(s, 0, 0.2, first, 2), 0);
  HK_ASSERT_INT_EQ(hk_series_observe_exemplar(s, 1, 0.3, second, 1), 0);
  hk_exemplar_t e;
  HK_ASSERT(hk_series_exemplar(s, 1, &e));
  HK_ASSERT(e.value == 0.3);
  HK_ASSERT_INT_EQ(e.count, 1); /* nothing of the longer first one is left */
  assert_label(&e, 0, "request_id", "second");
  /* A plain observation counts and leaves the exemplar alone. */
  hk_series_observe(s, 0, 0.4);
  HK_ASSERT(hk_series_exemplar(s, 1, &e) && e.value == 0.3);
  HK_ASSERT_INT_EQ(observations(s), 3);
  hk_metrics_free(r);
}

/* ---- exposition --------------------------------------------------------------------------- */

HK_TEST(openmetrics_shows_exemplars_text_never) {
  hk_metrics_t *r = new_registry(1);
  const char *label_names[] = {"endpoint"};
  hk_metric_t *m = reg_histogram(r, label_names, 1);
  const char *values[] = {"/v1/chat"};
  hk_series_t *s = hk_metric_series_str(m, values, 1);
  HK_ASSERT(s != NULL);
  /* A value the exposition must escape, and one with characters beyond ASCII. */
  hk_exemplar_label_t labels[] = {{"note", lv("a \"quoted\\\" \xc3\xa9\nline")}, {"request_id", lv("r1")}};
  HK_ASSERT_INT_EQ(hk_series_observe_exemplar(s, 0, 0.05, labels, 2), 0);
  hk_series_observe(s, 0, 5);

  char *text = render(r, HK_PROM_TEXT);
  HK_ASSERT(strstr(text, "# {") == NULL);
  HK_ASSERT(strstr(text, "request_id") == NULL);
  char line[512];
  line_starting(text, "hancock_test_seconds_bucket{endpoint=\"/v1/chat\",le=\"0.1\"}", line, sizeof line);
  HK_ASSERT_STR_EQ(line, "hancock_test_seconds_bucket{endpoint=\"/v1/chat\",le=\"0.1\"} 1");
  free(text);

  char *om = render(r, HK_PROM_OPENMETRICS);
  line_starting(om, "hancock_test_seconds_bucket{endpoint=\"/v1/chat\",le=\"0.1\"}", line, sizeof line);
  const char *want = "hancock_test_seconds_bucket{endpoint=\"/v1/chat\",le=\"0.1\"} 1 # "
                     "{note=\"a \\\"quoted\\\\\\\" \xc3\xa9\\nline\",request_id=\"r1\"} 0.05 ";
  HK_ASSERT_MEM_EQ(line, strlen(want), want, strlen(want));
  /* Seconds with three decimals, the observation's wall-clock time. */
  const char *stamp = line + strlen(want);
  char *end;
  double t = strtod(stamp, &end);
  HK_ASSERT(*end == '\0');
  HK_ASSERT(strchr(stamp, '.') != NULL && strlen(strchr(stamp, '.')) == 4);
  HK_ASSERT(fabs(t - now_seconds()) < 60);
  /* Only the bucket that has one: le=1 and le=10 had no exemplar (5 was observed without). */
  line_starting(om, "hancock_test_seconds_bucket{endpoint=\"/v1/chat\",le=\"1.0\"}", line, sizeof line);
  HK_ASSERT_STR_EQ(line, "hancock_test_seconds_bucket{endpoint=\"/v1/chat\",le=\"1.0\"} 1");
  line_starting(om, "hancock_test_seconds_bucket{endpoint=\"/v1/chat\",le=\"10.0\"}", line, sizeof line);
  HK_ASSERT_STR_EQ(line, "hancock_test_seconds_bucket{endpoint=\"/v1/chat\",le=\"10.0\"} 2");
  line_starting(om, "hancock_test_seconds_sum", line, sizeof line);
  HK_ASSERT(strstr(line, "#") == NULL);
  line_starting(om, "hancock_test_seconds_count", line, sizeof line);
  HK_ASSERT(strstr(line, "#") == NULL);
  free(om);
  hk_metrics_free(r);
}

/* ---- limits ------------------------------------------------------------------------------- */

/* Observes 0.5 with `labels` and expects `rc`; the observation counts either way and a refused
 * exemplar leaves the bucket's previous one ("keep", value 0.5, stored first) in place. */
static void expect_refused(hk_series_t *s, const hk_exemplar_label_t *labels, size_t count, int rc) {
  uint64_t before = observations(s);
  HK_ASSERT_INT_EQ(hk_metrics_exemplar_check(labels, count), rc);
  HK_ASSERT_INT_EQ(hk_series_observe_exemplar(s, 0, 0.5, labels, count), rc);
  HK_ASSERT_INT_EQ(observations(s), before + 1);
  hk_exemplar_t e;
  HK_ASSERT(hk_series_exemplar(s, 1, &e));
  HK_ASSERT_INT_EQ(e.count, 1);
  assert_label(&e, 0, "request_id", "keep");
}

HK_TEST(refused_exemplars_still_count) {
  hk_metrics_t *r = new_registry(1);
  hk_series_t *s = plain_series(r);
  hk_exemplar_label_t keep[] = {{"request_id", lv("keep")}};
  HK_ASSERT_INT_EQ(hk_series_observe_exemplar(s, 0, 0.5, keep, 1), 0);

  /* 128 code points of names and values is the OpenMetrics limit: "request_id" (10) and 118
   * characters fit; one more does not. Characters, not bytes: 118 two-byte é fit too. */
  char value[600];
  memset(value, 'a', 119);
  hk_exemplar_label_t at_limit[] = {{"request_id", {value, 118}}};
  HK_ASSERT_INT_EQ(hk_metrics_exemplar_check(at_limit, 1), 0);
  hk_exemplar_label_t over[] = {{"request_id", {value, 119}}};
  expect_refused(s, over, 1, -E2BIG);
  for (int i = 0; i < 118; i++)
    memcpy(value + 2 * i, "\xc3\xa9", 2);
  hk_exemplar_label_t wide[] = {{"request_id", {value, 236}}};
  HK_ASSERT_INT_EQ(hk_metrics_exemplar_check(wide, 1), 0);
  /* Names count too: two labels of 64 + 1 characters each are 130. */
  hk_exemplar_label_t split[] = {{"a", {value, 0}}, {"b", {value, 0}}};
  char long_value[70];
  memset(long_value, 'x', sizeof long_value);
  split[0].value = (hk_label_value_t){long_value, 64};
  split[1].value = (hk_label_value_t){long_value, 64};
  expect_refused(s, split, 2, -E2BIG);
  /* And bytes: 64 four-byte characters are 64 + 10 code points but 266 bytes. */
  for (int i = 0; i < 64; i++)
    memcpy(value + 4 * i, "\xf0\x9f\x98\x80", 4);
  hk_exemplar_label_t heavy[] = {{"request_id", {value, 256}}};
  expect_refused(s, heavy, 1, -E2BIG);
  /* A huge value is refused by its length. */
  static char huge[1 << 16];
  memset(huge, 'h', sizeof huge);
  hk_exemplar_label_t big[] = {{"request_id", {huge, sizeof huge}}};
  expect_refused(s, big, 1, -E2BIG);

  /* Not UTF-8: a lone continuation byte, a truncated sequence, an overlong encoding. */
  hk_exemplar_label_t bad_utf8[] = {{"request_id", lv("r\x80")}};
  expect_refused(s, bad_utf8, 1, -EINVAL);
  hk_exemplar_label_t truncated[] = {{"request_id", lv("r\xe2\x82")}};
  expect_refused(s, truncated, 1, -EINVAL);
  hk_exemplar_label_t overlong[] = {{"request_id", lv("\xc0\xaf")}};
  expect_refused(s, overlong, 1, -EINVAL);

  /* Names: repeated, not label names, missing. */
  hk_exemplar_label_t twice[] = {{"request_id", lv("a")}, {"request_id", lv("b")}};
  expect_refused(s, twice, 2, -EINVAL);
  const char *bad_names[] = {"", "1st", "trace-id", "trace id", "tr\xc3\xa9", "le:x"};
  for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
    hk_exemplar_label_t named[] = {{bad_names[i], lv("v")}};
    expect_refused(s, named, 1, -EINVAL);
  }
  hk_exemplar_label_t unnamed[] = {{NULL, lv("v")}};
  expect_refused(s, unnamed, 1, -EINVAL);
  hk_exemplar_label_t no_bytes[] = {{"request_id", {NULL, 3}}};
  expect_refused(s, no_bytes, 1, -EINVAL);

  /* Counts: none, or past HK_METRICS_EXEMPLAR_MAX_LABELS. */
  expect_refused(s, keep, 0, -EINVAL);
  expect_refused(s, NULL, 1, -EINVAL);
  hk_exemplar_label_t five[] = {{"a", lv("1")}, {"b", lv("2")}, {"c", lv("3")}, {"d", lv("4")}, {"e", lv("5")}};
  HK_ASSERT_INT_EQ(hk_metrics_exemplar_check(five, HK_METRICS_EXEMPLAR_MAX_LABELS), 0);
  expect_refused(s, five, HK_METRICS_EXEMPLAR_MAX_LABELS + 1, -EINVAL);

  /* An empty value is a value. */
  hk_exemplar_label_t empty[] = {{"request_id", {NULL, 0}}};
  HK_ASSERT_INT_EQ(hk_series_observe_exemplar(s, 0, 0.7, empty, 1), 0);
  hk_exemplar_t e;
  HK_ASSERT(hk_series_exemplar(s, 1, &e));
  assert_label(&e, 0, "request_id", "");

  /* What hk_series_observe ignores is neither counted nor stored. */
  uint64_t before = observations(s);
  HK_ASSERT_INT_EQ(hk_series_observe_exemplar(s, 0, NAN, keep, 1), -EINVAL);
  HK_ASSERT_INT_EQ(hk_series_observe_exemplar(NULL, 0, 0.5, keep, 1), -EINVAL);
  HK_ASSERT_INT_EQ(observations(s), before);
  hk_metrics_free(r);
}

/* ---- the request exemplar of hk_host_metrics ---------------------------------------------- */

HK_TEST(host_request_duration_carries_the_exemplar) {
  hk_metrics_t *r = new_registry(2);
  hk_host_metrics_t host;
  char err[256];
  if (hk_host_metrics_init(&host, r, 1, err, sizeof err) != 0) HK_FAIL_("host metrics: %s", err);
  hk_exemplar_label_t labels[] = {{"request_id", lv("req-42")}, {"trace_id", lv("4bf92f3577b34da6a3ce929d0e0e4736")}};
  hk_host_metrics_request(&host, 0, "GET", 3, "/v1/items/:id", 200, "", 0.003, labels, 2);
  hk_host_metrics_request(&host, 0, "GET", 3, "/v1/items/:id", 200, "", 0.2, NULL, 0);
  char *om = render(r, HK_PROM_OPENMETRICS);
  char line[512];
  line_starting(om, "hancock_request_duration_seconds_bucket{method=\"GET\",endpoint=\"/v1/items/:id\",status_code=\"200\",le=\"0.005\"}",
                line, sizeof line);
  const char *want = "hancock_request_duration_seconds_bucket{method=\"GET\",endpoint=\"/v1/items/:id\",status_code=\"200\","
                     "le=\"0.005\"} 1 # {request_id=\"req-42\",trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.003 ";
  HK_ASSERT_MEM_EQ(line, strlen(want), want, strlen(want));
  /* The request without one left its bucket without. */
  line_starting(om, "hancock_request_duration_seconds_bucket{method=\"GET\",endpoint=\"/v1/items/:id\",status_code=\"200\",le=\"0.25\"}",
                line, sizeof line);
  HK_ASSERT(strstr(line, "#") == NULL);
  free(om);
  char *text = render(r, HK_PROM_TEXT);
  HK_ASSERT(strstr(text, "req-42") == NULL);
  free(text);
  hk_metrics_free(r);
}

/* ---- threads ------------------------------------------------------------------------------ */

#define WRITES 200000

typedef struct race_s {
  hk_series_t *series;
  atomic_int started;
  atomic_int writers_done;
  atomic_long stored[2], busy[2];
  long reads, empty_reads;
} race_t;

typedef struct writer_arg_s {
  race_t *race;
  unsigned worker;
} writer_arg_t;

/* Write k of writer w: every part derives from (w, k), with lengths that vary, so a copy mixing
 * two writes shows. Values stay in bucket 1, (0.1, 1]. */
static size_t make_exemplar(unsigned w, long k, char id[64], char trace[64], hk_exemplar_label_t *labels,
                            double *value) {
  int n = snprintf(id, 64, "w%u-%ld-%.*s", w, k, (int)(k % 23), "zzzzzzzzzzzzzzzzzzzzzzzzz");
  int m = snprintf(trace, 64, "%ld%.*s", k * 7 + w, (int)(k % 11), "yyyyyyyyyyyyyyyyyyyy");
  labels[0] = (hk_exemplar_label_t){"request_id", {id, (size_t)n}};
  labels[1] = (hk_exemplar_label_t){"trace_id", {trace, (size_t)m}};
  *value = 0.2 + (double)(k % 100000) * 1e-6 + (double)w * 0.1;
  /* One in three writes has one label only: the label count changes too. */
  return k % 3 == 0 ? 1 : 2;
}

static void wait_for_all(atomic_int *started, int count) {
  atomic_fetch_add(started, 1);
  while (atomic_load(started) < count) {
  }
}

static void *exemplar_writer(void *p) {
  writer_arg_t *a = p;
  race_t *race = a->race;
  wait_for_all(&race->started, 3);
  for (long k = 0; k < WRITES; k++) {
    char id[64], trace[64];
    hk_exemplar_label_t labels[2];
    double value;
    size_t count = make_exemplar(a->worker, k, id, trace, labels, &value);
    int rc = hk_series_observe_exemplar(race->series, a->worker, value, labels, count);
    if (rc == 0)
      atomic_fetch_add_explicit(&race->stored[a->worker], 1, memory_order_relaxed);
    else if (rc == -EBUSY)
      atomic_fetch_add_explicit(&race->busy[a->worker], 1, memory_order_relaxed);
    else
      HK_FAIL_("observe_exemplar: %d", rc);
  }
  atomic_fetch_add(&race->writers_done, 1);
  return NULL;
}

/* A copy is whole when it is exactly some write (w, k) of make_exemplar. */
static void check_whole(const hk_exemplar_t *e) {
  HK_ASSERT(e->count == 1 || e->count == 2);
  HK_ASSERT_MEM_EQ(e->names[0].str, e->names[0].len, "request_id", 10);
  char id[64];
  HK_ASSERT(e->values[0].len < sizeof id);
  memcpy(id, e->values[0].str, e->values[0].len);
  id[e->values[0].len] = '\0';
  unsigned w;
  long k;
  if (sscanf(id, "w%u-%ld-", &w, &k) != 2 || w > 1 || k < 0 || k >= WRITES)
    HK_FAIL_("torn exemplar: request_id %s", id);
  char want_id[64], want_trace[64];
  hk_exemplar_label_t want[2];
  double want_value;
  size_t want_count = make_exemplar(w, k, want_id, want_trace, want, &want_value);
  if (e->count != want_count || e->value != want_value)
    HK_FAIL_("torn exemplar %s: %zu labels, value %.9g (want %zu, %.9g)", id, e->count, e->value, want_count,
             want_value);
  HK_ASSERT_MEM_EQ(e->values[0].str, e->values[0].len, want_id, want[0].value.len);
  if (want_count == 2) {
    HK_ASSERT_MEM_EQ(e->names[1].str, e->names[1].len, "trace_id", 8);
    HK_ASSERT_MEM_EQ(e->values[1].str, e->values[1].len, want_trace, want[1].value.len);
  }
  HK_ASSERT(e->timestamp > 1e9);
}

static void *exemplar_reader(void *p) {
  race_t *race = p;
  wait_for_all(&race->started, 3);
  /* Until both writers are done, and once more after. */
  for (bool last = false; !last;) {
    last = atomic_load(&race->writers_done) == 2;
    hk_exemplar_t e;
    if (hk_series_exemplar(race->series, 1, &e)) {
      check_whole(&e);
      race->reads++;
    } else {
      race->empty_reads++;
    }
    /* Only bucket 1 is written. */
    HK_ASSERT(!hk_series_exemplar(race->series, 0, &e));
  }
  return NULL;
}

/* Two workers write exemplars into one bucket while a third thread reads it: every copy the
 * reader gets is one write whole (labels, their count, value), and every observation counts,
 * the exemplars another writer held the slot for (-EBUSY) included. */
HK_TEST(threads_no_torn_exemplar) {
  hk_metrics_t *r = new_registry(2);
  race_t race = {.series = plain_series(r)};
  writer_arg_t args[2] = {{&race, 0}, {&race, 1}};
  pthread_t writers[2], reader_thread;
  for (int i = 0; i < 2; i++)
    HK_ASSERT_INT_EQ(pthread_create(&writers[i], NULL, exemplar_writer, &args[i]), 0);
  HK_ASSERT_INT_EQ(pthread_create(&reader_thread, NULL, exemplar_reader, &race), 0);
  for (int i = 0; i < 2; i++)
    pthread_join(writers[i], NULL);
  pthread_join(reader_thread, NULL);
  HK_ASSERT_INT_EQ(observations(race.series), 2 * WRITES);
  for (int w = 0; w < 2; w++)
    HK_ASSERT_INT_EQ(atomic_load(&race.stored[w]) + atomic_load(&race.busy[w]), WRITES);
  HK_ASSERT(atomic_load(&race.stored[0]) + atomic_load(&race.stored[1]) > 0);
  HK_ASSERT(race.reads > 0); /* the last read, after both writers, finds one */
  hk_exemplar_t e;
  HK_ASSERT(hk_series_exemplar(race.series, 1, &e));
  check_whole(&e);
  fprintf(stderr, "reads %ld whole, %ld empty; stored %ld + %ld, busy %ld + %ld\n", race.reads, race.empty_reads,
          atomic_load(&race.stored[0]), atomic_load(&race.stored[1]), atomic_load(&race.busy[0]),
          atomic_load(&race.busy[1]));
  hk_metrics_free(r);
}

#define RACE_SERIES 2000

typedef struct first_arg_s {
  hk_series_t **series;
  atomic_int *started;
  unsigned worker;
} first_arg_t;

static void *first_exemplars(void *p) {
  first_arg_t *a = p;
  wait_for_all(a->started, 2);
  hk_exemplar_label_t labels[] = {{"request_id", lv(a->worker ? "one" : "zero")}};
  for (int i = 0; i < RACE_SERIES; i++) {
    int rc = hk_series_observe_exemplar(a->series[i], a->worker, 0.05, labels, 1);
    HK_ASSERT(rc == 0 || rc == -EBUSY);
  }
  return NULL;
}

/* Two workers give thousands of fresh series their first exemplar at once: the storage both
 * allocate is published once (the loser frees its own: LeakSanitizer checks), and each series
 * ends with one exemplar. */
HK_TEST(threads_first_exemplar_allocation) {
  hk_metrics_t *r = new_registry(2);
  const char *label_names[] = {"id"};
  hk_metric_opts_t o = {.type = HK_METRIC_HISTOGRAM,
                        .name = "hancock_race_seconds",
                        .help = "A histogram.",
                        .labels = label_names,
                        .label_count = 1,
                        .series_cap = RACE_SERIES};
  hk_metric_t *m = NULL;
  HK_ASSERT_INT_EQ(hk_metrics_register(r, &o, &m, NULL, 0), 0);
  static hk_series_t *series[RACE_SERIES];
  for (int i = 0; i < RACE_SERIES; i++) {
    char id[16];
    snprintf(id, sizeof id, "%d", i);
    const char *values[] = {id};
    series[i] = hk_metric_series_str(m, values, 1);
    HK_ASSERT(series[i] != NULL);
  }
  atomic_int started = 0;
  first_arg_t args[2] = {{series, &started, 0}, {series, &started, 1}};
  pthread_t threads[2];
  for (int i = 0; i < 2; i++)
    HK_ASSERT_INT_EQ(pthread_create(&threads[i], NULL, first_exemplars, &args[i]), 0);
  for (int i = 0; i < 2; i++)
    pthread_join(threads[i], NULL);
  for (int i = 0; i < RACE_SERIES; i++) {
    hk_exemplar_t e;
    /* Default buckets: 0.05 is le=0.05, bucket 3. */
    HK_ASSERT(hk_series_exemplar(series[i], 3, &e));
    HK_ASSERT_INT_EQ(e.count, 1);
    HK_ASSERT_INT_EQ(observations(series[i]), 2);
  }
  hk_metrics_free(r);
}

HK_TEST_MAIN(HK_CASE(exemplar_stored_in_its_bucket), HK_CASE(latest_exemplar_wins),
             HK_CASE(openmetrics_shows_exemplars_text_never), HK_CASE(refused_exemplars_still_count),
             HK_CASE(host_request_duration_carries_the_exemplar), HK_CASE(threads_no_torn_exemplar),
             HK_CASE(threads_first_exemplar_allocation))
