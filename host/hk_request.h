/* hk_request: one request/response exchange, from a complete request head and body to the
 * response bytes. Owned by the server (it lives in its connection); the Lua runtime reads the
 * request through it and fills `response`. Shared between hk_server and hk_lua so neither
 * needs the other's internals. */
#ifndef HK_REQUEST_H
#define HK_REQUEST_H

#include <stdbool.h>
#include <stdint.h>

#include "hk_buf.h"
#include "hk_http.h"
#include "hk_reqid.h"
#include "hk_router.h"

#define HK_MODE_MAX 64
/* Streamed bodies: past HK_STREAM_BACKLOG bytes waiting for the client the request is
 * congested (writers wait, outbound transfers feeding it pause) until it drops below
 * HK_STREAM_LOW_WATER; HK_STREAM_HARD_LIMIT is refused outright (a writer that cannot wait). */
#define HK_STREAM_BACKLOG (1024 * 1024)
#define HK_STREAM_LOW_WATER (256 * 1024)
#define HK_STREAM_HARD_LIMIT (8 * 1024 * 1024)

/* A body produced in slices (large or unbounded responses such as /metrics): the server asks
 * for the next slice only when the previous one has been written, so memory stays bounded by
 * one slice and the loop serves other connections between slices. */
typedef struct hk_body_stream_s {
  /* Appends the next slice to out; sets *done after the last. Returns 0 or a negative code
   * (the connection is then closed: the status line has already gone). */
  int (*produce)(void *state, hk_buf_t *out, bool *done);
  void (*release)(void *state); /* called exactly once, when the stream ends or is abandoned */
  void *state;
  bool offload; /* produce is safe on another thread: run it (and gzip) on the threadpool, so a
                   large body (a 250k-series scrape) never holds the loop */
} hk_body_stream_t;

typedef struct hk_response_s {
  int status;
  hk_buf_t headers; /* extra header lines, each "Name: value\r\n", already validated */
  hk_buf_t body;
  char content_type[128]; /* empty: no Content-Type */
  hk_body_stream_t stream; /* produce != NULL: body comes from the stream, not `body` */
  bool gzip;               /* compress the body (the client's Accept-Encoding allowed it) */
} hk_response_t;

typedef struct hk_request_s {
  const hk_http_request_t *http; /* borrowed from the connection's parser until finished */
  hk_route_match_t match;
  const char *endpoint; /* the route pattern, or "unmatched": a bounded label */
  char id[HK_REQID_SIZE];
  char trace_id[33]; /* W3C trace id, 32 hex digits, set with the id (hk_conn, request_trace_id) */
  char mode[HK_MODE_MAX + 1]; /* from the JSON body's "mode", or set by the script */
  const char *mode_label;     /* hancock_requests_by_mode's label: `mode` when the scripts
                                 registered it, "other" when not, NULL without a mode */
  char remote_addr[64];
  int remote_port;
  uint64_t start_ns;
  hk_response_t response;
  bool finished;
  void *owner; /* the connection; NULL once the client has gone */
  struct hk_lua_task_s *task; /* the handler running for this request, if any */
  /* Streaming from a handler (server-sent events): stream_start sends the status line and
   * headers from `response` with a chunked body; each stream_write queues one chunk. Both return
   * 0, -EPIPE when the client has gone, or -EAGAIN past HK_STREAM_HARD_LIMIT waiting. Set by the
   * server. Past HK_STREAM_BACKLOG the server sets stream_congested; once the client has taken
   * enough it clears it and calls on_stream_drained (set by hk_lua) — the writer waits in
   * between, nothing is dropped. */
  int (*stream_start)(struct hk_request_s *req);
  int (*stream_write)(struct hk_request_s *req, const char *data, size_t len);
  bool stream_started;
  bool stream_congested;
  void (*on_stream_drained)(struct hk_request_s *req);
} hk_request_t;

/* Replaces the response with the JSON error body {"error": message, "request_id": id}. */
int hk_response_set_error(hk_response_t *response, int status, const char *message,
                          const char *request_id);

/* Validates and appends one response header. -EINVAL for a name that is not a token, a value
 * with CR, LF or NUL, or a header the server sets itself (Content-Length, Transfer-Encoding,
 * Connection, Date). */
int hk_response_add_header(hk_response_t *response, const char *name, size_t name_len,
                           const char *value, size_t value_len);

/* True when the request's Accept-Encoding allows gzip (a q-value of 0 refuses it). */
bool hk_request_accepts_gzip(const hk_http_request_t *http);

/* Monotonic nanoseconds, for latencies. */
uint64_t hk_now_ns(void);

#endif
