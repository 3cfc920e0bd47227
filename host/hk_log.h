/* hk_log: structured JSON logging, one object per line on stdout. Owns the line format, the
 * level filter, secret redaction and the writer thread that keeps a slow stdout from ever
 * stalling an event loop. Lua-side enrichment (hk.on_log) is hk_lua's; it hands finished lines
 * to hk_log_write_line.
 *
 * Lines are appended to a bounded in-memory queue under a mutex and written by one background
 * thread with plain blocking write(2), so files, pipes and terminals all work and a loop thread
 * only ever pays a memcpy. When the queue is full the line is dropped and counted; the count is
 * reported in a `log_dropped` event once the writer catches up. The writer never holds the
 * mutex across write(2), so a stdout nobody reads blocks that thread only; stopping is bounded
 * (hk_log_stop_within), and a stdout whose reader left (EPIPE) is given up on for good. */
#ifndef HK_LOG_H
#define HK_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hk_buf.h"

typedef enum hk_log_level_e {
  HK_LOG_DEBUG = 0,
  HK_LOG_INFO = 1,
  HK_LOG_WARNING = 2,
  HK_LOG_ERROR = 3,
} hk_log_level_t;

typedef enum hk_log_field_type_e {
  HK_LOG_STR,
  HK_LOG_INT,
  HK_LOG_DOUBLE, /* written with two decimals: latency_ms and friends */
  HK_LOG_BOOL,
  HK_LOG_RAW, /* already-encoded JSON */
} hk_log_field_type_t;

typedef struct hk_log_field_s {
  const char *key;
  hk_log_field_type_t type;
  const char *str; /* HK_LOG_STR and HK_LOG_RAW; NULL writes null */
  size_t len;      /* length of str */
  long long i;     /* HK_LOG_INT, HK_LOG_BOOL */
  double d;        /* HK_LOG_DOUBLE */
} hk_log_field_t;

#define HK_LOG_S(k, s) {(k), HK_LOG_STR, (s), (s) ? strlen(s) : 0, 0, 0}
#define HK_LOG_SN(k, s, n) {(k), HK_LOG_STR, (s), (n), 0, 0}
#define HK_LOG_I(k, v) {(k), HK_LOG_INT, NULL, 0, (long long)(v), 0}
#define HK_LOG_D(k, v) {(k), HK_LOG_DOUBLE, NULL, 0, 0, (double)(v)}
#define HK_LOG_B(k, v) {(k), HK_LOG_BOOL, NULL, 0, (v) ? 1 : 0, 0}

/* Parses DEBUG | INFO | WARNING | ERROR (case-insensitive; WARN accepted). -EINVAL otherwise. */
int hk_log_level_parse(const char *name, hk_log_level_t *out);
const char *hk_log_level_name(hk_log_level_t level);

/* Starts the writer thread on `fd` (normally 1) with a queue of at most `queue_limit` bytes.
 * Before hk_log_start (and after hk_log_stop) lines are written synchronously, which is what
 * one-shot commands such as `hancock check` want. Returns 0 or a negative errno. */
int hk_log_start(int fd, size_t queue_limit);

#define HK_LOG_STOP_MIN_MS 100 /* a stop waits at least this long for the last lines */
/* hk_log_stop's bound. Within hk_watchdog's grace after the drain timeout (3 s), so a stop
 * after a full drain still ends before the watchdog ends the process. */
#define HK_LOG_STOP_DEFAULT_MS 2000

/* Stops the writer thread, giving it until `timeout_ms` (at least HK_LOG_STOP_MIN_MS) to write
 * everything queued. Returns 0 when it did (the thread is joined), or -ETIMEDOUT when stdout
 * would not take the lines in time (nobody reads the pipe): the thread is then abandoned —
 * detached, blocked in write(2) until the process exits — what it held and what was queued
 * is dropped and counted in hk_log_dropped, a `log_abandoned` line with the count goes to
 * stderr (only if that cannot block), and later lines are dropped (counted) instead of written
 * synchronously, which would block behind it. Safe when not started. */
int hk_log_stop_within(uint64_t timeout_ms);
/* hk_log_stop_within(HK_LOG_STOP_DEFAULT_MS). */
void hk_log_stop(void);

void hk_log_set_level(hk_log_level_t level);
hk_log_level_t hk_log_get_level(void);
static inline bool hk_log_enabled(hk_log_level_t level) {
  extern hk_log_level_t hk__log_level;
  return level >= hk__log_level;
}

/* True when a field of this name must never reach a log: authorization, cookies, and anything
 * named like a key, secret, token or password. */
bool hk_log_key_is_secret(const char *key, size_t len);

/* Appends `,"key":` for a field named `key` (len bytes); when the name is secret-like
 * (hk_log_key_is_secret) also appends the value "[redacted]" and sets *redacted, and the caller
 * must not write a value. The one place a field key is written, for the core and hk_lua. */
int hk_log_append_key(hk_buf_t *line, const char *key, size_t len, bool *redacted);

/* Appends `"key":value` (with a leading comma) for one field, redacting secret-named keys. */
int hk_log_append_field(hk_buf_t *line, const hk_log_field_t *field);

/* True for the five keys hk_log_begin_line writes (timestamp, level, request_id, event,
 * message): an event's own fields must not repeat them. */
bool hk_log_key_is_reserved(const char *key, size_t len);

/* Appends a field's value alone, in the core's format (doubles with two decimals). */
int hk_log_append_value(hk_buf_t *line, const hk_log_field_t *field);

/* Starts a line: {"timestamp":…,"level":…,"request_id":…,"event":…,"message":… (no closing
 * brace). request_id and message may be NULL (written as null / the event name). */
int hk_log_begin_line(hk_buf_t *line, hk_log_level_t level, const char *request_id,
                      const char *event, const char *message);

/* Queues one finished line (a complete JSON object, without the newline). */
void hk_log_write_line(const char *line, size_t len);

/* Formats and queues an event when its level is enabled. */
void hk_log_event(hk_log_level_t level, const char *request_id, const char *event,
                  const char *message, const hk_log_field_t *fields, size_t field_count);

/* An enricher sees every event of the thread that installed it before it is written (the
 * scripts' hk.on_log hooks). It returns true when it took care of the event — wrote it, or
 * dropped it on purpose — and false to let hk_log write it unchanged. Per thread, so each
 * worker's events go through its own scripts. */
typedef bool (*hk_log_enrich_cb)(void *data, hk_log_level_t level, const char *request_id,
                                 const char *event, const char *message,
                                 const hk_log_field_t *fields, size_t field_count);
void hk_log_set_enricher(hk_log_enrich_cb enrich, void *data);

/* Formats and queues an event without the enricher (the enricher's own fallback). */
void hk_log_event_plain(hk_log_level_t level, const char *request_id, const char *event,
                        const char *message, const hk_log_field_t *fields, size_t field_count);

/* Sends every line to `sink` instead of the descriptor (an embedding program's log sink;
 * NULL restores the descriptor). With the writer thread running, the sink is called from that
 * thread; without it, from the thread that logs. Either way one line at a time (serialised),
 * NUL-terminated, without the newline; the line is only valid during the call. */
typedef void (*hk_log_sink_cb)(const char *line, size_t len, void *data);
void hk_log_set_sink(hk_log_sink_cb sink, void *data);

/* Lines dropped since the process started: the queue was full, stdout failed for good
 * (EPIPE), or hk_log_stop_within abandoned them. */
uint64_t hk_log_dropped(void);

#endif
