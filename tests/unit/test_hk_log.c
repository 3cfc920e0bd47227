/* Unit tests for hk_log: line format, escaping, redaction, levels, and the writer thread —
 * including a stop that must end although stdout is never read, and a stdout whose reader left. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
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

HK_TEST(append_key_redacts) {
  hk_buf_t line = HK_BUF_INIT;
  bool redacted = true;
  HK_ASSERT_INT_EQ(hk_log_append_key(&line, "status", 6, &redacted), 0);
  HK_ASSERT(!redacted);
  HK_ASSERT_INT_EQ(hk_log_append_key(&line, "x_token", 7, &redacted), 0);
  HK_ASSERT(redacted);
  HK_ASSERT_STR_EQ(line.data, ",\"status\":,\"x_token\":\"[redacted]\"");
  hk_buf_free(&line);
  HK_ASSERT(hk_log_key_is_reserved("timestamp", 9));
  HK_ASSERT(hk_log_key_is_reserved("message", 7));
  HK_ASSERT(!hk_log_key_is_reserved("messages", 8));
  HK_ASSERT(!hk_log_key_is_reserved("time", 4));
}

/* Logs until the pipe behind fds[1] is full, so the writer is (or is about to be) blocked in
 * write(2) for good: waits on the pipe's fill level, not on the clock. */
static void fill_pipe(const int fds[2]) {
  int capacity = fcntl(fds[1], F_GETPIPE_SZ);
  HK_ASSERT(capacity > 0);
  for (;;) {
    int queued = 0;
    HK_ASSERT_INT_EQ(ioctl(fds[0], FIONREAD, &queued), 0);
    if (queued >= capacity) break;
    hk_log_event(HK_LOG_INFO, NULL, "filler", "fills the pipe", NULL, 0);
  }
}

/* The bug: SIGTERM with a stdout nobody reads never finished, stuck joining the writer. Now a
 * stop gives up after its bound, counts what it abandons, says so on stderr, and nothing
 * logged afterwards blocks. The alarm turns a hang (the old behaviour) into a failure. */
HK_TEST(stop_is_bounded_when_stdout_is_never_read) {
  signal(SIGPIPE, SIG_IGN);
  alarm(60);
  int out[2], err[2];
  HK_ASSERT_INT_EQ(pipe(out), 0);
  HK_ASSERT_INT_EQ(pipe(err), 0);
  fcntl(out[1], F_SETPIPE_SZ, 4096);
  HK_ASSERT_INT_EQ(hk_log_start(out[1], 1 << 20), 0);
  fill_pipe(out);
  /* The writer is blocked in write(2); it must not hold the lock there, or these block. */
  for (int i = 0; i < 1000; i++) hk_log_event(HK_LOG_INFO, NULL, "queued", "stuck behind", NULL, 0);
  uint64_t dropped_before = hk_log_dropped();

  int saved_stderr = dup(2);
  dup2(err[1], 2);
  int rc = hk_log_stop_within(50);
  dup2(saved_stderr, 2);
  close(saved_stderr);
  close(err[1]);
  HK_ASSERT_INT_EQ(rc, -ETIMEDOUT);
  /* At least the 1,000 lines queued behind the blocked batch were abandoned and counted. */
  HK_ASSERT(hk_log_dropped() >= dropped_before + 1000);
  char note[512];
  ssize_t n = read(err[0], note, sizeof note - 1);
  close(err[0]);
  HK_ASSERT(n > 0);
  note[n] = '\0';
  HK_ASSERT(strncmp(note, "{\"timestamp\":\"", 14) == 0);
  HK_ASSERT(strstr(note, "\"level\":\"WARNING\",\"request_id\":null,\"event\":\"log_abandoned\"") != NULL);
  HK_ASSERT(strstr(note, ",\"timeout_ms\":100}\n") != NULL); /* the floor */
  long long abandoned = -1;
  const char *count = strstr(note, "\"abandoned\":");
  HK_ASSERT(count != NULL && sscanf(count, "\"abandoned\":%lld", &abandoned) == 1);
  HK_ASSERT(abandoned >= 1000);
  HK_ASSERT_INT_EQ(hk_log_dropped() - dropped_before, abandoned);

  /* After the abandon, logging drops (counted) instead of writing through to the full pipe. */
  uint64_t dropped = hk_log_dropped();
  hk_log_event(HK_LOG_INFO, NULL, "after_stop", NULL, NULL, 0);
  HK_ASSERT_INT_EQ(hk_log_dropped(), dropped + 1);
  HK_ASSERT_INT_EQ(hk_log_stop_within(50), 0); /* not running: a no-op */

  /* A new writer on a healthy descriptor works, and the old one never writes to it. */
  int next[2];
  HK_ASSERT_INT_EQ(pipe(next), 0);
  HK_ASSERT_INT_EQ(hk_log_start(next[1], 1 << 20), 0);
  hk_log_event(HK_LOG_INFO, NULL, "second_writer", NULL, NULL, 0);
  /* The reader of the first pipe goes away: the disowned writer gets EPIPE and leaves. */
  close(out[0]);
  HK_ASSERT_INT_EQ(hk_log_stop_within(HK_LOG_STOP_DEFAULT_MS), 0);
  char got[4096];
  n = read(next[0], got, sizeof got - 1);
  HK_ASSERT(n > 0);
  got[n] = '\0';
  HK_ASSERT(strstr(got, "\"event\":\"second_writer\"") != NULL);
  HK_ASSERT(strstr(got, "filler") == NULL && strstr(got, "queued") == NULL);
  close(next[0]);
  close(next[1]);
  close(out[1]);
  alarm(0);
}

/* A stdout whose reader left: every line that did not get out is counted as dropped, and the
 * writer stops writing to it (one failed write, not one per batch). */
HK_TEST(closed_stdout_counts_every_lost_line) {
  signal(SIGPIPE, SIG_IGN);
  alarm(60);
  int fds[2];
  HK_ASSERT_INT_EQ(pipe(fds), 0);
  close(fds[0]);
  uint64_t before = hk_log_dropped();
  HK_ASSERT_INT_EQ(hk_log_start(fds[1], 1 << 20), 0);
  for (int i = 0; i < 5000; i++) hk_log_event(HK_LOG_INFO, NULL, "lost", "nobody reads", NULL, 0);
  HK_ASSERT_INT_EQ(hk_log_stop_within(10000), 0);
  HK_ASSERT_INT_EQ(hk_log_dropped() - before, 5000);
  /* Still broken after the stop: dropped, not written through. */
  hk_log_event(HK_LOG_INFO, NULL, "lost", NULL, NULL, 0);
  HK_ASSERT_INT_EQ(hk_log_dropped() - before, 5001);
  close(fds[1]);
  alarm(0);
}

HK_TEST_MAIN(HK_CASE(line_format), HK_CASE(level_filter), HK_CASE(level_names),
             HK_CASE(secret_names), HK_CASE(slow_stdout_drops_instead_of_blocking),
             HK_CASE(append_key_redacts), HK_CASE(stop_is_bounded_when_stdout_is_never_read),
             HK_CASE(closed_stdout_counts_every_lost_line))
