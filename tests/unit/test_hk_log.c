/* Unit tests for hk_log: line format, escaping, redaction, levels, and the writer thread. */
#include <errno.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hk_log.h"
#include "hk_test.h"

/* Captures lines written synchronously (no writer thread) into a pipe. */
static char captured[65536];

static void capture(void (*emit)(void)) {
  int fds[2];
  HK_ASSERT_INT_EQ(pipe(fds), 0);
  int saved = dup(1);
  dup2(fds[1], 1);
  emit();
  dup2(saved, 1);
  close(saved);
  close(fds[1]);
  ssize_t n = read(fds[0], captured, sizeof captured - 1);
  captured[n > 0 ? n : 0] = '\0';
  close(fds[0]);
}

static void emit_basic(void) {
  hk_log_field_t fields[] = {HK_LOG_S("method", "GET"), HK_LOG_I("status", 200),
                             HK_LOG_D("latency_ms", 1.23456), HK_LOG_B("ok", 1),
                             HK_LOG_S("api_key", "hunter2"), HK_LOG_S("authorization", "Bearer x"),
                             HK_LOG_S("weird", "a\"b\\c\n\x01\xc3\xa9\xff")};
  hk_log_event(HK_LOG_INFO, "req-1", "request_completed", "done", fields, 7);
}

HK_TEST(line_format) {
  hk_log_set_level(HK_LOG_INFO);
  capture(emit_basic);
  HK_ASSERT(strncmp(captured, "{\"timestamp\":\"", 14) == 0);
  /* 2026-11-26T04:04:57.096Z */
  const char *ts = captured + 14;
  HK_ASSERT(ts[4] == '-' && ts[7] == '-' && ts[10] == 'T' && ts[13] == ':' && ts[19] == '.' && ts[23] == 'Z');
  HK_ASSERT(strstr(captured, "\"level\":\"INFO\",\"request_id\":\"req-1\",\"event\":\"request_completed\",\"message\":\"done\"") != NULL);
  HK_ASSERT(strstr(captured, "\"status\":200") != NULL);
  HK_ASSERT(strstr(captured, "\"latency_ms\":1.23,") != NULL);
  HK_ASSERT(strstr(captured, "\"ok\":true") != NULL);
  HK_ASSERT(strstr(captured, "hunter2") == NULL);
  HK_ASSERT(strstr(captured, "Bearer") == NULL);
  HK_ASSERT(strstr(captured, "\"api_key\":\"[redacted]\"") != NULL);
  HK_ASSERT(strstr(captured, "\"weird\":\"a\\\"b\\\\c\\n\\u0001\\u00e9\\ufffd\"") != NULL);
  HK_ASSERT(captured[strlen(captured) - 1] == '\n');
  for (const char *p = captured; *p; p++) HK_ASSERT((unsigned char)*p < 0x80);
}

static void emit_levels(void) {
  hk_log_set_level(HK_LOG_WARNING);
  hk_log_event(HK_LOG_INFO, NULL, "hidden", NULL, NULL, 0);
  hk_log_event(HK_LOG_ERROR, NULL, "shown", NULL, NULL, 0);
  hk_log_set_level(HK_LOG_INFO);
}

HK_TEST(level_filter) {
  capture(emit_levels);
  HK_ASSERT(strstr(captured, "hidden") == NULL);
  HK_ASSERT(strstr(captured, "\"event\":\"shown\",\"message\":\"shown\"") != NULL);
  HK_ASSERT(strstr(captured, "\"request_id\":null") != NULL);
}

HK_TEST(level_names) {
  hk_log_level_t level;
  HK_ASSERT_INT_EQ(hk_log_level_parse("debug", &level), 0);
  HK_ASSERT_INT_EQ(level, HK_LOG_DEBUG);
  HK_ASSERT_INT_EQ(hk_log_level_parse("WARN", &level), 0);
  HK_ASSERT_INT_EQ(level, HK_LOG_WARNING);
  HK_ASSERT_INT_EQ(hk_log_level_parse("TRACE", &level), -EINVAL);
}

HK_TEST(secret_names) {
  const char *secret[] = {"authorization", "Authorization", "api_key", "x-api-key", "apiKey",
                          "webhook_secret", "token", "access_token", "password", "key", "cookie"};
  for (size_t i = 0; i < sizeof secret / sizeof secret[0]; i++)
    HK_ASSERT(hk_log_key_is_secret(secret[i], strlen(secret[i])));
  const char *plain[] = {"method", "status", "endpoint", "latency_ms", "keyboard", "monkeys"};
  for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++)
    HK_ASSERT(!hk_log_key_is_secret(plain[i], strlen(plain[i])));
}

/* With the writer thread on a pipe nobody reads, logging never blocks and drops are counted. */
HK_TEST(slow_stdout_drops_instead_of_blocking) {
  int fds[2];
  HK_ASSERT_INT_EQ(pipe(fds), 0);
  HK_ASSERT_INT_EQ(hk_log_start(fds[1], 4096), 0);
  for (int i = 0; i < 20000; i++) hk_log_event(HK_LOG_INFO, NULL, "spam", "x", NULL, 0);
  HK_ASSERT(hk_log_dropped() > 0);
  /* A reader drains the pipe so the writer can finish; then the drop report is there. */
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[1]);
    char sink[65536];
    ssize_t n;
    int saw_report = 0;
    while ((n = read(fds[0], sink, sizeof sink - 1)) > 0) {
      sink[n] = '\0';
      if (strstr(sink, "\"event\":\"log_dropped\"")) saw_report = 1;
    }
    _exit(saw_report ? 0 : 3);
  }
  close(fds[0]);
  hk_log_stop();
  close(fds[1]);
  int status = 0;
  waitpid(pid, &status, 0);
  HK_ASSERT(WIFEXITED(status));
  HK_ASSERT_INT_EQ(WEXITSTATUS(status), 0);
}

HK_TEST_MAIN(HK_CASE(line_format), HK_CASE(level_filter), HK_CASE(level_names),
             HK_CASE(secret_names), HK_CASE(slow_stdout_drops_instead_of_blocking))
