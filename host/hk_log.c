/* hk_log: JSON log lines, level filter, redaction, and the writer thread. See hk_log.h for the
 * queueing contract. Everything here is thread-safe: several workers may log at once. */
#include "hk_log.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "hk_json.h"

hk_log_level_t hk__log_level = HK_LOG_INFO;

/* The writer waits this long after the first line of a burst before writing, unless the queue
 * already holds BATCH_BYTES: log lines reach stdout at most ~2 ms late. */
#define BATCH_WINDOW_NS 2000000L
#define BATCH_BYTES (64 * 1024)

static struct {
  pthread_mutex_t lock;
  pthread_cond_t wake; /* the writer: a line arrived, or stop */
  pthread_cond_t done; /* hk_log_stop_within: the writer left (CLOCK_MONOTONIC, init_done_cond) */
  pthread_t thread;
  unsigned generation; /* the current writer's; a disowned writer sees it move on and leaves */
  bool running;
  bool stopping;
  bool exited;    /* the current writer left its loop: join it */
  bool abandoned; /* a stop gave up on a writer stuck in write(2): drop, do not write through */
  bool broken;    /* the descriptor failed for good (EPIPE, EBADF): drop lines at once */
  bool idle;      /* the writer sleeps on an empty queue: the next line must wake it */
  int fd;
  size_t queue_limit;
  hk_buf_t queue;
  uint64_t queue_lines;   /* lines in queue */
  uint64_t writing_lines; /* lines in the batch the writer is writing */
  uint64_t dropped_total;
  uint64_t dropped_unreported;
  hk_log_sink_cb sink; /* instead of fd: an embedder's callback, one line per call */
  void *sink_data;
} writer = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER, .fd = 1};

/* Serialises calls into the sink: lines written through (no writer thread) come from any
 * thread, and the sink is promised one line at a time. */
static pthread_mutex_t sink_lock = PTHREAD_MUTEX_INITIALIZER;

void hk_log_set_sink(hk_log_sink_cb sink, void *data) {
  pthread_mutex_lock(&writer.lock);
  writer.sink = sink;
  writer.sink_data = data;
  pthread_mutex_unlock(&writer.lock);
}

/* Hands each line of `data` (lines ending in '\n') to the sink, NUL-terminated in place. */
static void sink_lines(hk_log_sink_cb sink, void *sink_data, char *data, size_t len) {
  pthread_mutex_lock(&sink_lock);
  for (char *p = data, *end = data + len; p < end;) {
    char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
    char saved = nl ? '\n' : 0;
    if (nl) *nl = '\0';
    if (n > 0) sink(p, n, sink_data);
    if (nl) *nl = saved;
    p += n + 1;
  }
  pthread_mutex_unlock(&sink_lock);
}

static const char *const level_names[] = {"DEBUG", "INFO", "WARNING", "ERROR"};

int hk_log_level_parse(const char *name, hk_log_level_t *out) {
  for (int i = 0; i < 4; i++) {
    if (strcasecmp(name, level_names[i]) == 0) {
      *out = (hk_log_level_t)i;
      return 0;
    }
  }
  if (strcasecmp(name, "WARN") == 0) {
    *out = HK_LOG_WARNING;
    return 0;
  }
  return -EINVAL;
}

const char *hk_log_level_name(hk_log_level_t level) {
  return level <= HK_LOG_ERROR ? level_names[level] : "UNKNOWN";
}

void hk_log_set_level(hk_log_level_t level) { hk__log_level = level; }
hk_log_level_t hk_log_get_level(void) { return hk__log_level; }

/* ---- redaction ---------------------------------------------------------------------------- */

static bool contains_ci(const char *hay, size_t len, const char *needle) {
  size_t n = strlen(needle);
  for (size_t i = 0; i + n <= len; i++) {
    if (strncasecmp(hay + i, needle, n) == 0) return true;
  }
  return false;
}

bool hk_log_key_is_secret(const char *key, size_t len) {
  static const char *const words[] = {"authorization", "cookie", "secret", "password", "passwd",
                                      "token", "api_key", "apikey", "api-key", "private_key",
                                      "signature", "credential"};
  for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
    if (contains_ci(key, len, words[i])) return true;
  }
  /* A bare "key" or anything ending in "key"/"_key" (ssh_key, webhookKey). */
  return len >= 3 && strncasecmp(key + len - 3, "key", 3) == 0;
}

/* ---- formatting --------------------------------------------------------------------------- */

static int append_timestamp(hk_buf_t *line) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  return hk_buf_appendf(line, "\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\"", tm.tm_year + 1900,
                        tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                        ts.tv_nsec / 1000000);
}

static int append_str_or_null(hk_buf_t *line, const char *str, size_t len) {
  if (str == NULL) return hk_buf_append(line, "null", 4);
  return hk_json_append_string(line, str, len, HK_JSON_ASCII);
}

/* The keys hk_log_begin_line writes, in its order (keep the two in step). */
static const char *const line_keys[] = {"timestamp", "level", "request_id", "event", "message"};

bool hk_log_key_is_reserved(const char *key, size_t len) {
  for (size_t i = 0; i < sizeof line_keys / sizeof line_keys[0]; i++) {
    if (strlen(line_keys[i]) == len && memcmp(line_keys[i], key, len) == 0) return true;
  }
  return false;
}

int hk_log_begin_line(hk_buf_t *line, hk_log_level_t level, const char *request_id,
                      const char *event, const char *message) {
  int rc = hk_buf_append_str(line, "{\"timestamp\":");
  if (rc == 0) rc = append_timestamp(line);
  if (rc == 0) rc = hk_buf_appendf(line, ",\"level\":\"%s\",\"request_id\":", hk_log_level_name(level));
  if (rc == 0) rc = append_str_or_null(line, request_id, request_id ? strlen(request_id) : 0);
  if (rc == 0) rc = hk_buf_append_str(line, ",\"event\":");
  if (rc == 0) rc = append_str_or_null(line, event, strlen(event));
  if (rc == 0) rc = hk_buf_append_str(line, ",\"message\":");
  if (message == NULL) message = event;
  if (rc == 0) rc = append_str_or_null(line, message, strlen(message));
  return rc;
}

int hk_log_append_key(hk_buf_t *line, const char *key, size_t len, bool *redacted) {
  *redacted = false;
  int rc = hk_buf_append_char(line, ',');
  if (rc == 0) rc = hk_json_append_string(line, key, len, HK_JSON_ASCII);
  if (rc == 0) rc = hk_buf_append_char(line, ':');
  if (rc != 0 || !hk_log_key_is_secret(key, len)) return rc;
  *redacted = true;
  return hk_buf_append_str(line, "\"[redacted]\"");
}

int hk_log_append_field(hk_buf_t *line, const hk_log_field_t *field) {
  bool redacted;
  int rc = hk_log_append_key(line, field->key, strlen(field->key), &redacted);
  if (rc != 0 || redacted) return rc;
  return hk_log_append_value(line, field);
}

int hk_log_append_value(hk_buf_t *line, const hk_log_field_t *field) {
  switch (field->type) {
    case HK_LOG_STR: return append_str_or_null(line, field->str, field->len);
    case HK_LOG_INT: return hk_buf_appendf(line, "%lld", field->i);
    case HK_LOG_DOUBLE: return hk_buf_appendf(line, "%.2f", field->d);
    case HK_LOG_BOOL: return hk_buf_append_str(line, field->i ? "true" : "false");
    case HK_LOG_RAW:
      return field->str ? hk_buf_append(line, field->str, field->len) : hk_buf_append_str(line, "null");
  }
  return -EINVAL;
}

static _Thread_local hk_log_enrich_cb enricher;
static _Thread_local void *enricher_data;

void hk_log_set_enricher(hk_log_enrich_cb enrich, void *data) {
  enricher = enrich;
  enricher_data = data;
}

void hk_log_event(hk_log_level_t level, const char *request_id, const char *event,
                  const char *message, const hk_log_field_t *fields, size_t field_count) {
  if (!hk_log_enabled(level)) return;
  if (enricher != NULL &&
      enricher(enricher_data, level, request_id, event, message, fields, field_count))
    return;
  hk_log_event_plain(level, request_id, event, message, fields, field_count);
}

void hk_log_event_plain(hk_log_level_t level, const char *request_id, const char *event,
                        const char *message, const hk_log_field_t *fields, size_t field_count) {
  if (!hk_log_enabled(level)) return;
  hk_buf_t line = HK_BUF_INIT;
  int rc = hk_log_begin_line(&line, level, request_id, event, message);
  for (size_t i = 0; rc == 0 && i < field_count; i++) rc = hk_log_append_field(&line, &fields[i]);
  if (rc == 0) rc = hk_buf_append_char(&line, '}');
  if (rc == 0) hk_log_write_line(line.data, line.len);
  hk_buf_free(&line);
}

/* ---- writer ------------------------------------------------------------------------------- */

/* Writes everything unless the descriptor fails; returns the bytes written. A non-blocking
 * stdout (a parent may have set O_NONBLOCK on a shared pipe) is waited for with poll(2) rather
 * than retried in a loop. */
static size_t write_all(int fd, const char *data, size_t len, int *error) {
  size_t done = 0;
  *error = 0;
  while (done < len) {
    ssize_t n = write(fd, data + done, len - done);
    if (n > 0) {
      done += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      struct pollfd p = {.fd = fd, .events = POLLOUT};
      if (poll(&p, 1, -1) >= 0 || errno == EINTR) continue;
    }
    *error = n < 0 ? errno : EIO;
    break;
  }
  return done;
}

static uint64_t count_lines(const char *data, size_t len) {
  uint64_t lines = 0;
  for (const char *p = data, *end = data + len; (p = memchr(p, '\n', (size_t)(end - p))) != NULL; p++)
    lines++;
  return lines;
}

/* Called with the lock held, by the writer, once the queue has room again. */
static void queue_dropped_report(void) {
  hk_buf_t line = HK_BUF_INIT;
  hk_log_field_t field = HK_LOG_I("dropped", writer.dropped_unreported);
  if (hk_log_begin_line(&line, HK_LOG_WARNING, NULL, "log_dropped",
                        "log lines dropped because stdout was too slow") == 0 &&
      hk_log_append_field(&line, &field) == 0 && hk_buf_append_str(&line, "}\n") == 0 &&
      hk_buf_append(&writer.queue, line.data, line.len) == 0) {
    writer.queue_lines++;
    writer.dropped_unreported = 0;
  }
  hk_buf_free(&line);
}

/* The writer thread. `arg` is its generation: once hk_log_stop_within gives up on it, the
 * generation moves on, and this thread — whenever its write(2) returns, if ever — leaves
 * without touching the queue, which belongs to the next writer by then. */
static void *writer_main(void *arg) {
  unsigned generation = (unsigned)(uintptr_t)arg;
  hk_buf_t out = HK_BUF_INIT;
  pthread_mutex_lock(&writer.lock);
  int fd = writer.fd;
  while (writer.generation == generation) {
    while (writer.queue.len == 0 && writer.dropped_unreported == 0 && !writer.stopping) {
      writer.idle = true;
      pthread_cond_wait(&writer.wake, &writer.lock);
      writer.idle = false;
    }
    if (writer.generation != generation) break;
    if (!writer.stopping && writer.queue.len < BATCH_BYTES) {
      /* Let a burst accumulate: one write(2) per window instead of one per line, and no
       * wake-up per line for the loop threads to pay for. */
      pthread_mutex_unlock(&writer.lock);
      nanosleep(&(struct timespec){0, BATCH_WINDOW_NS}, NULL);
      pthread_mutex_lock(&writer.lock);
      if (writer.generation != generation) break;
    }
    if (writer.dropped_unreported > 0) queue_dropped_report();
    if (writer.queue.len == 0 && writer.stopping) break;
    /* Swap buffers so writers can keep appending while this thread blocks in write(2): the
     * lock is never held across a write, so a stdout nobody reads stalls only this thread. */
    hk_buf_t tmp = out;
    out = writer.queue;
    writer.queue = tmp;
    hk_buf_reset(&writer.queue);
    writer.writing_lines = writer.queue_lines;
    writer.queue_lines = 0;
    hk_log_sink_cb sink = writer.sink;
    void *sink_data = writer.sink_data;
    pthread_mutex_unlock(&writer.lock);
    int error = 0;
    size_t written = out.len;
    if (sink != NULL) sink_lines(sink, sink_data, out.data, out.len);
    else written = write_all(fd, out.data, out.len, &error);
    pthread_mutex_lock(&writer.lock);
    if (writer.generation != generation) break;
    writer.writing_lines = 0;
    if (written < out.len) {
      /* Whatever did not get out is lost, and counted; a line cut short counts as lost. */
      writer.dropped_total += count_lines(out.data + written, out.len - written);
      /* A pipe whose reader left (EPIPE: SIGPIPE must be ignored) or a closed descriptor
       * never comes back: later lines are dropped at once instead of written in vain. */
      if (error == EPIPE || error == EBADF) writer.broken = true;
    }
    hk_buf_reset(&out);
  }
  if (writer.generation == generation) {
    writer.exited = true;
    pthread_cond_broadcast(&writer.done);
  }
  pthread_mutex_unlock(&writer.lock);
  hk_buf_free(&out);
  return NULL;
}

static void init_done_cond(void) {
  /* Waited on against CLOCK_MONOTONIC, so a wall-clock step cannot stretch the bound. */
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&writer.done, &attr);
  pthread_condattr_destroy(&attr);
}

int hk_log_start(int fd, size_t queue_limit) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, init_done_cond);
  pthread_mutex_lock(&writer.lock);
  int rc = 0;
  if (writer.running) goto done;
  writer.fd = fd;
  writer.queue_limit = queue_limit;
  writer.stopping = false;
  writer.exited = false;
  writer.abandoned = false;
  writer.broken = false;
  writer.generation++;
  rc = -pthread_create(&writer.thread, NULL, writer_main, (void *)(uintptr_t)writer.generation);
  if (rc == 0) writer.running = true;
done:
  pthread_mutex_unlock(&writer.lock);
  return rc;
}

/* The last word when lines are abandoned: a log line of the usual format, on stderr since
 * stdout is what blocks, in one write(2) and only if that cannot block (a pipe without a free
 * buffer says so through poll), so shutdown never waits on it. */
static void note_abandoned(uint64_t timeout_ms, uint64_t lines) {
  hk_buf_t line = HK_BUF_INIT;
  hk_log_field_t fields[] = {HK_LOG_I("abandoned", lines), HK_LOG_I("timeout_ms", timeout_ms)};
  int rc = hk_log_begin_line(&line, HK_LOG_WARNING, NULL, "log_abandoned",
                             "stdout did not take the log lines in time at shutdown; they were dropped");
  for (size_t i = 0; rc == 0 && i < sizeof fields / sizeof fields[0]; i++)
    rc = hk_log_append_field(&line, &fields[i]);
  if (rc == 0) rc = hk_buf_append_str(&line, "}\n");
  struct pollfd p = {.fd = 2, .events = POLLOUT};
  if (rc == 0 && poll(&p, 1, 0) == 1 && (p.revents & POLLOUT)) {
    ssize_t ignored = write(2, line.data, line.len);
    (void)ignored;
  }
  hk_buf_free(&line);
}

int hk_log_stop_within(uint64_t timeout_ms) {
  if (timeout_ms < HK_LOG_STOP_MIN_MS) timeout_ms = HK_LOG_STOP_MIN_MS;
  struct timespec deadline;
  clock_gettime(CLOCK_MONOTONIC, &deadline);
  deadline.tv_sec += (time_t)(timeout_ms / 1000);
  deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (deadline.tv_nsec >= 1000000000L) {
    deadline.tv_sec++;
    deadline.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&writer.lock);
  if (!writer.running) {
    pthread_mutex_unlock(&writer.lock);
    return 0;
  }
  writer.stopping = true;
  pthread_cond_signal(&writer.wake);
  while (!writer.exited) {
    if (pthread_cond_timedwait(&writer.done, &writer.lock, &deadline) == ETIMEDOUT) break;
  }
  bool finished = writer.exited;
  uint64_t abandoned = 0;
  if (!finished) {
    /* The writer is stuck in write(2) on a stdout nobody reads. Moving the generation on
     * disowns it; what it holds and what is queued are dropped and counted. */
    abandoned = writer.queue_lines + writer.writing_lines;
    writer.dropped_total += abandoned;
    writer.generation++;
    writer.abandoned = true;
  }
  writer.running = false;
  writer.queue_lines = writer.writing_lines = 0;
  hk_buf_free(&writer.queue);
  pthread_t thread = writer.thread;
  pthread_mutex_unlock(&writer.lock);
  if (finished) {
    pthread_join(thread, NULL);
    return 0;
  }
  pthread_detach(thread);
  note_abandoned(timeout_ms, abandoned);
  return -ETIMEDOUT;
}

void hk_log_stop(void) { hk_log_stop_within(HK_LOG_STOP_DEFAULT_MS); }

void hk_log_write_line(const char *line, size_t len) {
  pthread_mutex_lock(&writer.lock);
  if (!writer.running && !writer.abandoned && !writer.broken) {
    hk_log_sink_cb sink = writer.sink;
    void *sink_data = writer.sink_data;
    pthread_mutex_unlock(&writer.lock);
    /* No writer thread: one-shot commands and start-up/shutdown messages write through. */
    char *copy = malloc(len + 1);
    if (copy == NULL) return;
    memcpy(copy, line, len);
    copy[len] = '\n';
    int error;
    if (sink != NULL) sink_lines(sink, sink_data, copy, len + 1);
    else write_all(writer.fd, copy, len + 1, &error);
    free(copy);
    return;
  }
  if (!writer.running || writer.broken) {
    /* Nowhere to write: stdout is gone (broken) or a writer abandoned by hk_log_stop_within
     * still blocks on it, and writing through would block this thread behind it. */
    writer.dropped_total++;
  } else if (writer.queue.len + len + 1 > writer.queue_limit ||
             hk_buf_reserve(&writer.queue, len + 1) != 0) {
    writer.dropped_total++;
    writer.dropped_unreported++;
  } else {
    hk_buf_append(&writer.queue, line, len);
    hk_buf_append_char(&writer.queue, '\n');
    writer.queue_lines++;
    if (writer.idle) pthread_cond_signal(&writer.wake);
  }
  pthread_mutex_unlock(&writer.lock);
}

uint64_t hk_log_dropped(void) {
  pthread_mutex_lock(&writer.lock);
  uint64_t n = writer.dropped_total;
  pthread_mutex_unlock(&writer.lock);
  return n;
}
