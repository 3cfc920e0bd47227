/* hk_log: JSON log lines, level filter, redaction, and the writer thread. See hk_log.h for the
 * queueing contract. Everything here is thread-safe: several workers may log at once. */
#include "hk_log.h"

#include <errno.h>
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
  pthread_cond_t wake;
  pthread_t thread;
  bool running;
  bool stopping;
  bool idle; /* the writer sleeps on an empty queue: the next line must wake it */
  int fd;
  size_t queue_limit;
  hk_buf_t queue;
  uint64_t dropped_total;
  uint64_t dropped_unreported;
} writer = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER, .fd = 1};

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

int hk_log_append_field(hk_buf_t *line, const hk_log_field_t *field) {
  size_t key_len = strlen(field->key);
  int rc = hk_buf_append_char(line, ',');
  if (rc == 0) rc = hk_json_append_string(line, field->key, key_len, HK_JSON_ASCII);
  if (rc == 0) rc = hk_buf_append_char(line, ':');
  if (rc != 0) return rc;
  if (hk_log_key_is_secret(field->key, key_len)) return hk_buf_append_str(line, "\"[redacted]\"");
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

static void write_all(int fd, const char *data, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, data, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return; /* stdout closed: nothing sensible left to do with a log line */
    }
    data += n;
    len -= (size_t)n;
  }
}

static void queue_dropped_report(void) {
  /* Called with the lock held, by the writer, once the queue has room again. */
  hk_buf_t line = HK_BUF_INIT;
  hk_log_field_t field = HK_LOG_I("dropped", writer.dropped_unreported);
  if (hk_log_begin_line(&line, HK_LOG_WARNING, NULL, "log_dropped",
                        "log lines dropped because stdout was too slow") == 0 &&
      hk_log_append_field(&line, &field) == 0 && hk_buf_append_str(&line, "}\n") == 0) {
    hk_buf_append(&writer.queue, line.data, line.len);
    writer.dropped_unreported = 0;
  }
  hk_buf_free(&line);
}

static void *writer_main(void *arg) {
  (void)arg;
  hk_buf_t out = HK_BUF_INIT;
  pthread_mutex_lock(&writer.lock);
  for (;;) {
    while (writer.queue.len == 0 && writer.dropped_unreported == 0 && !writer.stopping) {
      writer.idle = true;
      pthread_cond_wait(&writer.wake, &writer.lock);
      writer.idle = false;
    }
    if (!writer.stopping && writer.queue.len < BATCH_BYTES) {
      /* Let a burst accumulate: one write(2) per window instead of one per line, and no
       * wake-up per line for the loop threads to pay for. */
      pthread_mutex_unlock(&writer.lock);
      nanosleep(&(struct timespec){0, BATCH_WINDOW_NS}, NULL);
      pthread_mutex_lock(&writer.lock);
    }
    if (writer.dropped_unreported > 0) queue_dropped_report();
    if (writer.queue.len == 0 && writer.stopping) break;
    /* Swap buffers so writers can keep appending while this thread blocks in write(2). */
    hk_buf_t tmp = out;
    out = writer.queue;
    writer.queue = tmp;
    hk_buf_reset(&writer.queue);
    pthread_mutex_unlock(&writer.lock);
    write_all(writer.fd, out.data, out.len);
    hk_buf_reset(&out);
    pthread_mutex_lock(&writer.lock);
  }
  pthread_mutex_unlock(&writer.lock);
  hk_buf_free(&out);
  return NULL;
}

int hk_log_start(int fd, size_t queue_limit) {
  pthread_mutex_lock(&writer.lock);
  if (writer.running) {
    pthread_mutex_unlock(&writer.lock);
    return 0;
  }
  writer.fd = fd;
  writer.queue_limit = queue_limit;
  writer.stopping = false;
  int rc = pthread_create(&writer.thread, NULL, writer_main, NULL);
  if (rc == 0) writer.running = true;
  pthread_mutex_unlock(&writer.lock);
  return rc == 0 ? 0 : -rc;
}

void hk_log_stop(void) {
  pthread_mutex_lock(&writer.lock);
  if (!writer.running) {
    pthread_mutex_unlock(&writer.lock);
    return;
  }
  writer.stopping = true;
  pthread_cond_signal(&writer.wake);
  pthread_mutex_unlock(&writer.lock);
  pthread_join(writer.thread, NULL);
  pthread_mutex_lock(&writer.lock);
  writer.running = false;
  hk_buf_free(&writer.queue);
  pthread_mutex_unlock(&writer.lock);
}

void hk_log_write_line(const char *line, size_t len) {
  pthread_mutex_lock(&writer.lock);
  if (!writer.running) {
    pthread_mutex_unlock(&writer.lock);
    /* No writer thread: one-shot commands and start-up/shutdown messages write through. */
    char *copy = malloc(len + 1);
    if (copy == NULL) return;
    memcpy(copy, line, len);
    copy[len] = '\n';
    write_all(writer.fd, copy, len + 1);
    free(copy);
    return;
  }
  if (writer.queue.len + len + 1 > writer.queue_limit ||
      hk_buf_reserve(&writer.queue, len + 1) != 0) {
    writer.dropped_total++;
    writer.dropped_unreported++;
  } else {
    hk_buf_append(&writer.queue, line, len);
    hk_buf_append_char(&writer.queue, '\n');
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
