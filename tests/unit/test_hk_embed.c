/* Unit tests of the embedding API (host/include/hancock.h), through the public functions only:
 * misuse answered with a clear code (NULL and freed hosts, a second host, a second run, stop and
 * reload out of order, conflicting metrics, bad names, registration after start), natives that
 * raise, and a whole attach–stop–free cycle on a caller's loop that leaves the loop empty. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "hancock.h"
#include "hk_test.h"

/* ---- fixtures -------------------------------------------------------------------------------- */

static char scripts_dir[64];
static char last_line[2048];
static int lines_seen;

/* The log sink: keeps the last line, so a refusal's reason can be checked. */
static void sink(const char *line, size_t len, void *data) {
  (void)data;
  snprintf(last_line, sizeof last_line, "%.*s", (int)len, line);
  lines_seen++;
}

static void write_script(const char *text) {
  if (scripts_dir[0] == '\0') {
    snprintf(scripts_dir, sizeof scripts_dir, "/tmp/hancock-embed-unit-XXXXXX");
    HK_ASSERT(mkdtemp(scripts_dir) != NULL);
  }
  char path[128];
  snprintf(path, sizeof path, "%s/test.lua", scripts_dir);
  FILE *f = fopen(path, "w");
  HK_ASSERT(f != NULL);
  fputs(text, f);
  fclose(f);
}

static void remove_scripts(void) {
  char path[128];
  snprintf(path, sizeof path, "%s/test.lua", scripts_dir);
  unlink(path);
  rmdir(scripts_dir);
}

static hk_host_config_t config(void) {
  hk_host_config_t cfg;
  hk_host_config_init(&cfg);
  cfg.listen = "127.0.0.1:0";
  cfg.scripts_dir = scripts_dir;
  cfg.log_sink = sink;
  cfg.log_level = "WARNING";
  return cfg;
}

static hk_host_t *new_host(const char *script) {
  write_script(script);
  hk_host_config_t cfg = config();
  hk_host_t *host = NULL;
  HK_ASSERT_INT_EQ(hk_host_new(&cfg, &host), 0);
  HK_ASSERT(host != NULL);
  return host;
}

static void on_stopped(hk_host_t *host, void *data) {
  (void)host;
  *(int *)data += 1;
}

/* Stops an attached host and runs the loop until the stop is over and the loop is empty. */
static void stop_attached(hk_host_t *host, uv_loop_t *loop) {
  int stopped = 0;
  hk_host_on_stopped(host, on_stopped, &stopped);
  HK_ASSERT_INT_EQ(hk_host_stop(host), 0);
  uv_run(loop, UV_RUN_DEFAULT); /* returns once nothing of the host is left on the loop */
  HK_ASSERT_INT_EQ(stopped, 1);
  HK_ASSERT(hk_host_stopped(host));
}

/* ---- cases ----------------------------------------------------------------------------------- */

HK_TEST(null_host_is_einval) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  hk_counter_t *counter = NULL;
  HK_ASSERT_INT_EQ(hk_host_new(NULL, NULL), -EINVAL);
  HK_ASSERT_INT_EQ(hk_host_start(NULL), -EINVAL);
  HK_ASSERT_INT_EQ(hk_host_attach(NULL, &loop), -EINVAL);
  HK_ASSERT_INT_EQ(hk_host_stop(NULL), -EINVAL);
  HK_ASSERT_INT_EQ(hk_host_reload(NULL), -EINVAL);
  HK_ASSERT_INT_EQ(hk_host_port(NULL), -EINVAL);
  HK_ASSERT(!hk_host_stopped(NULL));
  HK_ASSERT_INT_EQ(hk_counter_new(NULL, "x_total", "", NULL, 0, &counter), -EINVAL);
  HK_ASSERT_INT_EQ(hk_counter_add(NULL, NULL, 1), -EINVAL);
  HK_ASSERT_INT_EQ(hk_gauge_set(NULL, NULL, 1), -EINVAL);
  HK_ASSERT_INT_EQ(hk_histogram_observe(NULL, NULL, 1), -EINVAL);
  HK_ASSERT_INT_EQ(hk_native_add(NULL, "f", NULL, NULL), -EINVAL);
  HK_ASSERT_INT_EQ(hk_health_add(NULL, "c", NULL, NULL, NULL), -EINVAL);
  hk_host_free(NULL);
  HK_ASSERT_INT_EQ(uv_loop_close(&loop), 0);
}

HK_TEST(freed_host_is_einval) {
  hk_host_t *host = new_host("");
  hk_host_free(host);
  /* The stale pointer is recognised without being read (ASan would report a read). */
  HK_ASSERT_INT_EQ(hk_host_start(host), -EINVAL);
  HK_ASSERT_INT_EQ(hk_host_stop(host), -EINVAL);
  HK_ASSERT_INT_EQ(hk_host_reload(host), -EINVAL);
  HK_ASSERT_INT_EQ(hk_native_add(host, "f", NULL, NULL), -EINVAL);
  hk_host_free(host); /* a double free is a no-op */
  remove_scripts();
}

HK_TEST(one_host_at_a_time) {
  hk_host_t *host = new_host("");
  hk_host_config_t cfg = config();
  hk_host_t *second = (hk_host_t *)0x1;
  HK_ASSERT_INT_EQ(hk_host_new(&cfg, &second), -EBUSY);
  HK_ASSERT(second == NULL);
  hk_host_free(host);
  HK_ASSERT_INT_EQ(hk_host_new(&cfg, &second), 0); /* free again once the first is gone */
  hk_host_free(second);
  remove_scripts();
}

HK_TEST(bad_settings_are_refused_with_a_reason) {
  write_script("");
  hk_host_t *host = NULL;
  hk_host_config_t cfg = config();
  cfg.scripts_dir = NULL;
  HK_ASSERT_INT_EQ(hk_host_new(&cfg, &host), -EINVAL);
  HK_ASSERT(strstr(last_line, "scripts_dir is required") != NULL);
  cfg = config();
  cfg.scripts_dir = "/nonexistent/hancock-scripts";
  HK_ASSERT_INT_EQ(hk_host_new(&cfg, &host), -ENOENT);
  HK_ASSERT(strstr(last_line, "cannot read scripts directory /nonexistent/hancock-scripts") != NULL);
  cfg = config();
  cfg.listen = "localhost";
  HK_ASSERT_INT_EQ(hk_host_new(&cfg, &host), -EINVAL);
  HK_ASSERT(strstr(last_line, "--listen") != NULL);
  HK_ASSERT(strstr(last_line, "embed_config_invalid") != NULL);
  cfg = config();
  cfg.log_level = "LOUD";
  HK_ASSERT_INT_EQ(hk_host_new(&cfg, &host), -EINVAL);
  cfg = config();
  cfg.admin_token = "short";
  HK_ASSERT_INT_EQ(hk_host_new(&cfg, &host), -EINVAL);
  HK_ASSERT(strstr(last_line, "admin_token") != NULL);
  HK_ASSERT(strstr(last_line, "short") == NULL); /* a secret, even a bad one, is not logged */
  HK_ASSERT(host == NULL);
  remove_scripts();
}

HK_TEST(second_run_and_out_of_order_calls) {
  hk_host_t *host = new_host("");
  uv_loop_t loop;
  uv_loop_init(&loop);
  HK_ASSERT_INT_EQ(hk_host_stop(host), -EAGAIN);
  HK_ASSERT_INT_EQ(hk_host_reload(host), -EAGAIN);
  HK_ASSERT_INT_EQ(hk_host_port(host), -EAGAIN);
  HK_ASSERT_INT_EQ(hk_host_attach(host, NULL), -EINVAL);
  HK_ASSERT_INT_EQ(hk_host_attach(host, &loop), 0);
  HK_ASSERT(hk_host_port(host) > 0);
  HK_ASSERT_INT_EQ(hk_host_attach(host, &loop), -EALREADY);
  HK_ASSERT_INT_EQ(hk_host_start(host), -EALREADY);
  stop_attached(host, &loop);
  HK_ASSERT_INT_EQ(hk_host_stop(host), -EALREADY);
  hk_host_free(host);
  HK_ASSERT_INT_EQ(uv_loop_close(&loop), 0); /* nothing of the host is left on the caller's loop */
  remove_scripts();
}

static int thread_count(void) {
  int n = 0;
  DIR *dir = opendir("/proc/self/task");
  HK_ASSERT(dir != NULL);
  for (struct dirent *e; (e = readdir(dir)) != NULL;) n += e->d_name[0] != '.';
  closedir(dir);
  return n;
}

HK_TEST(attached_host_starts_no_thread) {
  write_script("local hk = require 'hancock'\nhk.route('GET', '/x', function() return 200, {} end)\n");
  hk_host_config_t cfg = config();
  cfg.lua_time_limit_ms = 0; /* no watchdog: the one thread a time limit needs */
  int before = thread_count();
  hk_host_t *host = NULL;
  HK_ASSERT_INT_EQ(hk_host_new(&cfg, &host), 0);
  uv_loop_t loop;
  uv_loop_init(&loop);
  HK_ASSERT_INT_EQ(hk_host_attach(host, &loop), 0);
  HK_ASSERT_INT_EQ(thread_count(), before); /* no worker, control or log thread */
  stop_attached(host, &loop);
  hk_host_free(host);
  HK_ASSERT_INT_EQ(uv_loop_close(&loop), 0);
  remove_scripts();
}

HK_TEST(free_while_attached_leaves_the_loop_empty) {
  hk_host_t *host = new_host("");
  uv_loop_t loop;
  uv_loop_init(&loop);
  HK_ASSERT_INT_EQ(hk_host_attach(host, &loop), 0);
  uv_run(&loop, UV_RUN_NOWAIT);
  hk_host_free(host); /* no stop first: closed at once */
  uv_run(&loop, UV_RUN_DEFAULT);
  HK_ASSERT_INT_EQ(uv_loop_close(&loop), 0);
  remove_scripts();
}

HK_TEST(metrics_conflicts_and_bad_values) {
  hk_host_t *host = new_host("");
  const char *const a[] = {"a"};
  const char *const b[] = {"b"};
  hk_counter_t *c1 = NULL, *c2 = NULL, *c3 = NULL;
  HK_ASSERT_INT_EQ(hk_counter_new(host, "embed_unit_total", "help", a, 1, &c1), 0);
  HK_ASSERT_INT_EQ(hk_counter_new(host, "embed_unit_total", "help", a, 1, &c2), 0); /* the same family */
  HK_ASSERT_INT_EQ(hk_counter_new(host, "embed_unit_total", "help", b, 1, &c3), -EEXIST);
  HK_ASSERT(c3 == NULL);
  HK_ASSERT(strstr(last_line, "embed_unit_total") != NULL);
  hk_gauge_t *g = NULL;
  HK_ASSERT_INT_EQ(hk_gauge_new(host, "embed_unit_total", "help", a, 1, &g), -EEXIST);
  HK_ASSERT_INT_EQ(hk_gauge_new(host, "embed unit", "help", NULL, 0, &g), -EINVAL);
  HK_ASSERT_INT_EQ(hk_counter_new(host, "embed_no_suffix", "help", NULL, 0, &c3), -EINVAL);
  HK_ASSERT_INT_EQ(hk_counter_new(host, "embed_labels_total", "help", NULL, 1, &c3), -EINVAL);
  const double unordered[] = {1, 0.5};
  hk_histogram_t *h = NULL;
  HK_ASSERT_INT_EQ(hk_histogram_new(host, "embed_unit_seconds", "help", NULL, 0, unordered, 2, &h), -EINVAL);
  HK_ASSERT_INT_EQ(hk_histogram_new(host, "embed_unit_seconds", "help", NULL, 0, NULL, 0, &h), 0);

  const char *const x[] = {"x"};
  HK_ASSERT_INT_EQ(hk_counter_add(c1, x, 2), 0);
  HK_ASSERT_INT_EQ(hk_counter_add(c2, x, 3), 0);
  HK_ASSERT_INT_EQ(hk_counter_add(c1, x, -1), -EINVAL);
  HK_ASSERT_INT_EQ(hk_counter_add(c1, x, NAN), -EINVAL);
  HK_ASSERT_INT_EQ(hk_counter_add(c1, NULL, 1), -EINVAL); /* the family has a label */
  const char *const missing[] = {NULL};
  HK_ASSERT_INT_EQ(hk_counter_add(c1, missing, 1), -EINVAL);
  HK_ASSERT_INT_EQ(hk_histogram_observe(h, NULL, NAN), -EINVAL);
  HK_ASSERT_INT_EQ(hk_histogram_observe(h, NULL, 0.2), 0);
  hk_host_free(host);
  remove_scripts();
}

HK_TEST(series_past_the_cap_are_enospc) {
  hk_host_t *host = new_host("");
  const char *const labels[] = {"id"};
  hk_gauge_t *g = NULL;
  HK_ASSERT_INT_EQ(hk_gauge_new(host, "embed_unit_ids", "help", labels, 1, &g), 0);
  int refused = 0;
  for (int i = 0; i < 1100; i++) {
    char id[16];
    snprintf(id, sizeof id, "%d", i);
    const char *const values[] = {id};
    if (hk_gauge_set(g, values, i) == -ENOSPC) refused++;
  }
  HK_ASSERT_INT_EQ(refused, 100); /* the default cap is 1000 series */
  hk_host_free(host);
  remove_scripts();
}

static int native_ok(hk_call_t *call, void *data) {
  (void)data;
  return hk_call_push_integer(call, 1);
}

static int check_ok(void *data, char *detail, size_t size) {
  (void)data;
  (void)detail;
  (void)size;
  return HK_HEALTH_OK;
}

HK_TEST(native_and_check_names) {
  hk_host_t *host = new_host("");
  HK_ASSERT_INT_EQ(hk_native_add(host, "1x", native_ok, NULL), -EINVAL);
  HK_ASSERT_INT_EQ(hk_native_add(host, "end", native_ok, NULL), -EINVAL); /* a Lua keyword */
  HK_ASSERT_INT_EQ(hk_native_add(host, "a.b", native_ok, NULL), -EINVAL);
  HK_ASSERT_INT_EQ(hk_native_add(host, "ok", NULL, NULL), -EINVAL);
  HK_ASSERT_INT_EQ(hk_native_add(host, "ok", native_ok, NULL), 0);
  HK_ASSERT_INT_EQ(hk_native_add(host, "ok", native_ok, NULL), -EEXIST);
  HK_ASSERT_INT_EQ(hk_health_add(host, "bad name", check_ok, NULL, NULL), -EINVAL);
  HK_ASSERT_INT_EQ(hk_health_add(host, "db.primary", check_ok, NULL, NULL), 0);
  HK_ASSERT_INT_EQ(hk_health_add(host, "db.primary", check_ok, NULL, NULL), -EEXIST);
  uv_loop_t loop;
  uv_loop_init(&loop);
  HK_ASSERT_INT_EQ(hk_host_attach(host, &loop), 0);
  HK_ASSERT_INT_EQ(hk_native_add(host, "late", native_ok, NULL), -EBUSY);
  HK_ASSERT_INT_EQ(hk_health_add(host, "late", check_ok, NULL, NULL), -EBUSY);
  stop_attached(host, &loop);
  hk_host_free(host);
  HK_ASSERT_INT_EQ(uv_loop_close(&loop), 0);
  remove_scripts();
}

/* ---- natives that raise ------------------------------------------------------------------------ */

static char reported[256];

static int native_fail(hk_call_t *call, void *data) {
  (void)data;
  return hk_call_error(call, "boom %d", 42);
}

static int native_code(hk_call_t *call, void *data) {
  (void)call;
  (void)data;
  return -ENOENT; /* a bare code: the message is hk_strerror's */
}

static int native_bad_json(hk_call_t *call, void *data) {
  (void)data;
  int rc = hk_call_push_json(call, "{not json", 9);
  return rc; /* -EINVAL, passed on */
}

static int native_echo(hk_call_t *call, void *data) {
  (void)data;
  const char *json;
  size_t len;
  int rc = hk_call_json(call, 0, &json, &len);
  if (rc != 0) return rc;
  int64_t n;
  if (hk_call_integer(call, 1, &n) != 0) return hk_call_error(call, "argument 2: expected an integer");
  if (hk_call_type(call, 2) != HK_TYPE_NONE) return hk_call_error(call, "too many arguments");
  rc = hk_call_push_json(call, json, len);
  if (rc == 0) rc = hk_call_push_integer(call, n * 2);
  return rc;
}

static int native_report(hk_call_t *call, void *data) {
  (void)data;
  const char *text;
  size_t len;
  if (hk_call_string(call, 0, &text, &len) != 0) return hk_call_error(call, "expected a string");
  snprintf(reported, sizeof reported, "%.*s", (int)len, text);
  return 0;
}

HK_TEST(natives_raise_lua_errors) {
  hk_host_t *host = new_host(
      "local hk = require 'hancock'\n"
      "local n = hk.native\n"
      "local _, e1 = pcall(n.fail)\n"
      "local _, e2 = pcall(n.code)\n"
      "local _, e3 = pcall(n.bad_json)\n"
      "local t, twice = n.echo({ a = { 1, 2 }, b = 'x' }, 21)\n"
      "local _, e4 = pcall(n.echo, {}, 1.5)\n"
      "n.report(table.concat({ e1, e2, e3, e4, t.b, tostring(t.a[2]), tostring(twice) }, '|'))\n");
  HK_ASSERT_INT_EQ(hk_native_add(host, "fail", native_fail, NULL), 0);
  HK_ASSERT_INT_EQ(hk_native_add(host, "code", native_code, NULL), 0);
  HK_ASSERT_INT_EQ(hk_native_add(host, "bad_json", native_bad_json, NULL), 0);
  HK_ASSERT_INT_EQ(hk_native_add(host, "echo", native_echo, NULL), 0);
  HK_ASSERT_INT_EQ(hk_native_add(host, "report", native_report, NULL), 0);
  uv_loop_t loop;
  uv_loop_init(&loop);
  HK_ASSERT_INT_EQ(hk_host_attach(host, &loop), 0);
  HK_ASSERT_STR_EQ(reported, "hk.native.fail: boom 42|hk.native.code: no such file or directory|"
                             "hk.native.bad_json: invalid argument|"
                             "hk.native.echo: argument 2: expected an integer|x|2|42");
  stop_attached(host, &loop);
  hk_host_free(host);
  HK_ASSERT_INT_EQ(uv_loop_close(&loop), 0);
  remove_scripts();
}

HK_TEST(uncaught_native_error_fails_the_load) {
  hk_host_t *host = new_host("local hk = require 'hancock'\nhk.native.fail()\n");
  HK_ASSERT_INT_EQ(hk_native_add(host, "fail", native_fail, NULL), 0);
  uv_loop_t loop;
  uv_loop_init(&loop);
  HK_ASSERT_INT_EQ(hk_host_attach(host, &loop), -EINVAL);
  HK_ASSERT(strstr(last_line, "script_error") != NULL);
  HK_ASSERT(strstr(last_line, "test.lua:2: hk.native.fail: boom 42") != NULL);
  HK_ASSERT_INT_EQ(hk_host_port(host), -EAGAIN);
  hk_host_free(host);
  HK_ASSERT_INT_EQ(uv_loop_close(&loop), 0);
  remove_scripts();
}

HK_TEST(busy_port_is_eaddrinuse) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof addr;
  HK_ASSERT(bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0 && listen(fd, 1) == 0);
  getsockname(fd, (struct sockaddr *)&addr, &len);
  char listen_at[32];
  snprintf(listen_at, sizeof listen_at, "127.0.0.1:%d", ntohs(addr.sin_port));
  write_script("");
  hk_host_config_t cfg = config();
  cfg.listen = listen_at;
  hk_host_t *host = NULL;
  HK_ASSERT_INT_EQ(hk_host_new(&cfg, &host), 0);
  uv_loop_t loop;
  uv_loop_init(&loop);
  HK_ASSERT_INT_EQ(hk_host_attach(host, &loop), -EADDRINUSE);
  HK_ASSERT(strstr(last_line, "start_failed") != NULL);
  HK_ASSERT(strstr(last_line, "address already in use") != NULL);
  HK_ASSERT_INT_EQ(hk_host_start(host), -EADDRINUSE); /* nothing was left half-started */
  hk_host_free(host);
  HK_ASSERT_INT_EQ(uv_loop_close(&loop), 0);
  close(fd);
  remove_scripts();
}

/* ---- C metrics from the program's threads while Hancock's workers scrape ------------------------- */

#define HAMMER_THREADS 4
#define HAMMER_ADDS 50000

typedef struct hammer_s {
  hk_counter_t *counter;
  hk_histogram_t *histogram;
} hammer_t;

static void *hammer(void *arg) {
  hammer_t *h = arg;
  for (int i = 0; i < HAMMER_ADDS; i++) {
    hk_counter_add(h->counter, NULL, 1);
    hk_histogram_observe(h->histogram, NULL, 0.001 * (i % 10));
  }
  return NULL;
}

/* GET /metrics over loopback; returns the malloc'ed response. */
static char *scrape(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  HK_ASSERT(connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0);
  const char req[] = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  HK_ASSERT(write(fd, req, sizeof req - 1) == (ssize_t)(sizeof req - 1));
  size_t cap = 1 << 20, len = 0;
  char *out = malloc(cap + 1);
  ssize_t n;
  while ((n = read(fd, out + len, cap - len)) > 0) len += (size_t)n;
  out[len] = '\0';
  close(fd);
  return out;
}

HK_TEST(c_metrics_from_many_threads_are_exact) {
  write_script("");
  hk_host_config_t cfg = config();
  cfg.workers = 2;
  hk_host_t *host = NULL;
  HK_ASSERT_INT_EQ(hk_host_new(&cfg, &host), 0);
  hammer_t h;
  HK_ASSERT_INT_EQ(hk_counter_new(host, "embed_hammer_total", "Adds from the test's threads.", NULL, 0, &h.counter), 0);
  HK_ASSERT_INT_EQ(hk_histogram_new(host, "embed_hammer_seconds", "Observations from the test's threads.", NULL, 0,
                                    NULL, 0, &h.histogram), 0);
  HK_ASSERT_INT_EQ(hk_host_start(host), 0);
  int port = hk_host_port(host);
  pthread_t threads[HAMMER_THREADS];
  for (int i = 0; i < HAMMER_THREADS; i++) HK_ASSERT(pthread_create(&threads[i], NULL, hammer, &h) == 0);
  for (int i = 0; i < 5; i++) free(scrape(port)); /* scrapes sum the cells while they are written */
  for (int i = 0; i < HAMMER_THREADS; i++) pthread_join(threads[i], NULL);
  char *text = scrape(port);
  char want[64];
  snprintf(want, sizeof want, "\nembed_hammer_total %d\n", HAMMER_THREADS * HAMMER_ADDS);
  if (strstr(text, want) == NULL) HK_FAIL_("no '%s' in:\n%.2000s", want + 1, text);
  snprintf(want, sizeof want, "\nembed_hammer_seconds_count %d\n", HAMMER_THREADS * HAMMER_ADDS);
  if (strstr(text, want) == NULL) HK_FAIL_("no '%s' in the scrape", want + 1);
  free(text);
  HK_ASSERT_INT_EQ(hk_host_stop(host), 0);
  HK_ASSERT(hk_host_stopped(host));
  hk_host_free(host);
  remove_scripts();
}

HK_TEST(strerror_and_version) {
  HK_ASSERT_STR_EQ(hk_strerror(-EINVAL), "invalid argument");
  HK_ASSERT_STR_EQ(hk_strerror(-EEXIST), "already registered with another definition");
  HK_ASSERT(hk_strerror(-12345) != NULL);
  HK_ASSERT(hk_strerror(7) != NULL);
  char header[32];
  snprintf(header, sizeof header, "%d.%d.%d", HANCOCK_VERSION_MAJOR, HANCOCK_VERSION_MINOR, HANCOCK_VERSION_PATCH);
  HK_ASSERT_STR_EQ(hk_version(), header);
}

HK_TEST_MAIN(HK_CASE(null_host_is_einval), HK_CASE(freed_host_is_einval), HK_CASE(one_host_at_a_time),
             HK_CASE(bad_settings_are_refused_with_a_reason), HK_CASE(second_run_and_out_of_order_calls),
             HK_CASE(attached_host_starts_no_thread), HK_CASE(free_while_attached_leaves_the_loop_empty), HK_CASE(metrics_conflicts_and_bad_values),
             HK_CASE(series_past_the_cap_are_enospc), HK_CASE(native_and_check_names),
             HK_CASE(natives_raise_lua_errors), HK_CASE(uncaught_native_error_fails_the_load),
             HK_CASE(busy_port_is_eaddrinuse), HK_CASE(c_metrics_from_many_threads_are_exact),
             HK_CASE(strerror_and_version))
