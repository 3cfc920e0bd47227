/* Unit tests for hk_config: defaults, environment, flags and their error messages. */
#include <errno.h>

#include "hk_config.h"

#include <sched.h>
#include <unistd.h>
#include "hk_test.h"

static hk_config_t cfg;
static char err[512];

static int load(int argc, const char **argv) {
  err[0] = '\0';
  return hk_config_load(&cfg, argc, (char **)argv, 0, HK_CONFIG_FOR_SERVE, err, sizeof err);
}

HK_TEST(defaults) {
  unsetenv("HANCOCK_PORT");
  unsetenv("LOG_LEVEL");
  HK_ASSERT_INT_EQ(load(0, NULL), 0);
  HK_ASSERT_STR_EQ(cfg.listen_host, "0.0.0.0");
  HK_ASSERT_INT_EQ(cfg.port, 5000);
  HK_ASSERT_STR_EQ(cfg.scripts_dir, "./scripts");
  HK_ASSERT_INT_EQ(cfg.max_body_bytes, 1024 * 1024);
  HK_ASSERT_INT_EQ(cfg.max_connections, 10000);
  HK_ASSERT_INT_EQ(cfg.header_timeout_ms, 10000);
  HK_ASSERT_INT_EQ(cfg.body_timeout_ms, 10000);
  HK_ASSERT_INT_EQ(cfg.keepalive_timeout_ms, 75000);
  HK_ASSERT_INT_EQ(cfg.drain_timeout_ms, 10000);
  HK_ASSERT_INT_EQ(cfg.log_level, HK_LOG_INFO);
}

HK_TEST(environment_then_flags) {
  setenv("HANCOCK_PORT", "6001", 1);
  setenv("LOG_LEVEL", "warning", 1);
  HK_ASSERT_INT_EQ(load(0, NULL), 0);
  HK_ASSERT_INT_EQ(cfg.port, 6001);
  HK_ASSERT_INT_EQ(cfg.log_level, HK_LOG_WARNING);
  const char *argv[] = {"--listen", "127.0.0.1:7000", "--log-level=ERROR", "--max-body", "2k"};
  HK_ASSERT_INT_EQ(load(5, argv), 0);
  HK_ASSERT_STR_EQ(cfg.listen_host, "127.0.0.1");
  HK_ASSERT_INT_EQ(cfg.port, 7000);
  HK_ASSERT_INT_EQ(cfg.log_level, HK_LOG_ERROR);
  HK_ASSERT_INT_EQ(cfg.max_body_bytes, 2048);
  unsetenv("HANCOCK_PORT");
  unsetenv("LOG_LEVEL");
}

HK_TEST(ipv6_listen) {
  const char *argv[] = {"--listen", "[::1]:0"};
  HK_ASSERT_INT_EQ(load(2, argv), 0);
  HK_ASSERT_STR_EQ(cfg.listen_host, "::1");
  HK_ASSERT_INT_EQ(cfg.port, 0);
}

HK_TEST(errors_name_the_problem) {
  const char *bad_level[] = {"--log-level", "LOUD"};
  HK_ASSERT_INT_EQ(load(2, bad_level), -EINVAL);
  HK_ASSERT(strstr(err, "--log-level") && strstr(err, "LOUD"));
  setenv("LOG_LEVEL", "verbose", 1);
  HK_ASSERT_INT_EQ(load(0, NULL), -EINVAL);
  HK_ASSERT(strstr(err, "LOG_LEVEL") && strstr(err, "verbose"));
  unsetenv("LOG_LEVEL");
  const char *unknown[] = {"--frobnicate"};
  HK_ASSERT_INT_EQ(load(1, unknown), -EINVAL);
  HK_ASSERT(strstr(err, "unknown option '--frobnicate'"));
  const char *missing[] = {"--scripts"};
  HK_ASSERT_INT_EQ(load(1, missing), -EINVAL);
  HK_ASSERT(strstr(err, "needs a value"));
  const char *listen[] = {"--listen", "localhost:80"};
  HK_ASSERT_INT_EQ(load(2, listen), -EINVAL);
  const char *port[] = {"--listen", "0.0.0.0:70000"};
  HK_ASSERT_INT_EQ(load(2, port), -EINVAL);
  const char *stray[] = {"extra"};
  HK_ASSERT_INT_EQ(load(1, stray), -EINVAL);
  const char *workers[] = {"--workers", "61"};
  HK_ASSERT_INT_EQ(load(2, workers), -EINVAL);
  const char *negative[] = {"--workers", "-1"};
  HK_ASSERT_INT_EQ(load(2, negative), -EINVAL);
}

HK_TEST(workers_default_to_the_cpus) {
  const char *none[] = {"--workers", "0"};
  HK_ASSERT_INT_EQ(load(2, none), 0);
  cpu_set_t set;
  HK_ASSERT_INT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
  long cpus = CPU_COUNT(&set);
  HK_ASSERT_INT_EQ(cfg.workers, cpus > 60 ? 60 : cpus < 1 ? 1 : cpus);
  const char *four[] = {"--workers", "4"};
  HK_ASSERT_INT_EQ(load(2, four), 0);
  HK_ASSERT_INT_EQ(cfg.workers, 4);
}

HK_TEST(durations_and_sizes) {
  uint64_t v;
  HK_ASSERT_INT_EQ(hk_config_parse_duration("250ms", &v), 0);
  HK_ASSERT_INT_EQ(v, 250);
  HK_ASSERT_INT_EQ(hk_config_parse_duration("1.5", &v), 0);
  HK_ASSERT_INT_EQ(v, 1500);
  HK_ASSERT_INT_EQ(hk_config_parse_duration("2m", &v), 0);
  HK_ASSERT_INT_EQ(v, 120000);
  HK_ASSERT_INT_EQ(hk_config_parse_duration("-1s", &v), -EINVAL);
  HK_ASSERT_INT_EQ(hk_config_parse_duration("10 parsecs", &v), -EINVAL);
  HK_ASSERT_INT_EQ(hk_config_parse_size("1m", &v), 0);
  HK_ASSERT_INT_EQ(v, 1048576);
  HK_ASSERT_INT_EQ(hk_config_parse_size("512K", &v), 0);
  HK_ASSERT_INT_EQ(v, 524288);
  HK_ASSERT_INT_EQ(hk_config_parse_size("-1", &v), -EINVAL);
  HK_ASSERT_INT_EQ(hk_config_parse_size("1x", &v), -EINVAL);
}

/* docs/configuration.md carries the generated table verbatim. */
HK_TEST(docs_table_is_current) {
  char path[4096];
  snprintf(path, sizeof path, "%s/docs/configuration.md", HK_SOURCE_DIR);
  FILE *docs = fopen(path, "r");
  HK_ASSERT(docs != NULL);
  static char text[65536];
  size_t n = fread(text, 1, sizeof text - 1, docs);
  text[n] = '\0';
  fclose(docs);
  char *table = NULL;
  size_t table_len = 0;
  FILE *out = open_memstream(&table, &table_len);
  hk_config_print_markdown(out);
  fclose(out);
  if (strstr(text, table) == NULL)
    HK_FAIL_("docs/configuration.md is stale; regenerate its table from hk_config_print_markdown:\n%s", table);
  free(table);
}

HK_TEST_MAIN(HK_CASE(docs_table_is_current), HK_CASE(workers_default_to_the_cpus), HK_CASE(defaults), HK_CASE(environment_then_flags), HK_CASE(ipv6_listen),
             HK_CASE(errors_name_the_problem), HK_CASE(durations_and_sizes))
