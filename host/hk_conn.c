/* hk_conn: one client connection on a worker — reading and parsing (hk_http), the timers of
 * every phase (head, body with its minimum rate, send, keep-alive, linger), pipelining in
 * order, dispatch to the built-in routes or the scripts (hk_lua), writing responses (their bytes
 * are hk_response's) with streamed bodies slice by slice, backpressure for handlers that
 * stream, and the lingering close.
 * Entry points: hk__conn_accept (from the worker's listener), hk__conn_finish_request. */
#include <assert.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uv.h>
#include <zlib.h>

#include "hk_http.h"
#include "hk_json.h"
#include "hk_log.h"
#include "hk_reqid.h"
#include "hk_request.h"
#include "hk_response.h"
#include "hk_worker.h"

/* Unparsed input kept while a request is being answered; past it, reading pauses. */
#define INPUT_HIGH_WATER (64 * 1024)
#define LINGER_MS 2000
/* Bytes of an offloaded body produced per threadpool job, at most (plus one slice). */
#define OFFLOAD_BATCH (256 * 1024)

static void conn_process(hk_conn_t *conn);
static void conn_close(hk_conn_t *conn);
static void conn_resume_reading(hk_conn_t *conn);
static void conn_finish_request(hk_request_t *req);
static void conn_stream_end(hk_conn_t *conn);
static void log_request_completed(const hk_request_t *req);
static void record_request(hk_worker_t *worker, const hk_request_t *req);
static void conn_stream_pump(hk_conn_t *conn);
static void conn_check_drained(hk_conn_t *conn);

/* ---- connection lifetime ------------------------------------------------------------------ */

static void conn_free(hk_conn_t *conn) {
  hk_worker_t *worker = conn->worker;
  if (conn->prev) conn->prev->next = conn->next;
  else worker->conns = conn->next;
  if (conn->next) conn->next->prev = conn->prev;
  worker->conn_count--;
  atomic_store_explicit(&worker->open_connections, worker->conn_count, memory_order_relaxed);
  hk_buf_free(&conn->in);
  hk_buf_free(&conn->out);
  hk_buf_free(&conn->writing);
  hk_buf_free(&conn->slice);
  hk_buf_free(&conn->framed);
  conn_stream_end(conn);
  hk_buf_free(&conn->request.response.headers);
  hk_buf_free(&conn->request.response.body);
  hk_http_parser_free(&conn->parser);
  free(conn);
  hk__worker_conn_closed(worker);
}

static void on_conn_handle_closed(uv_handle_t *handle) {
  hk_conn_t *conn = handle->data;
  if (--conn->handles_open == 0 && !conn->in_flight && !conn->stream_working) conn_free(conn);
}

static void conn_close(hk_conn_t *conn) {
  if (conn->closing) return;
  conn->closing = true;
  conn->request.owner = NULL;
  hk__worker_stop_waiting_reload(conn);
  if (conn->in_flight) {
    /* Nobody will read the answer: stop the handler and its outbound calls now. Accounted as
     * 499 (nginx's "client closed request"), so every request_started has its completion. */
    hk_lua_cancel(conn->worker->lua, &conn->request);
    conn->in_flight = false;
    conn->request.response.status = 499;
    log_request_completed(&conn->request);
    record_request(conn->worker, &conn->request);
  }
  /* The slot under --max-connections frees with the socket, not with the memory: uv_close
   * closes the descriptor now and calls back a loop iteration later, and a client that saw
   * the close may connect again in between. */
  atomic_fetch_sub_explicit(conn->worker->process_connections, 1, memory_order_relaxed);
  uv_close((uv_handle_t *)&conn->tcp, on_conn_handle_closed);
  uv_close((uv_handle_t *)&conn->timer, on_conn_handle_closed);
}

/* ---- timers ------------------------------------------------------------------------------- */

static void send_error_and_close(hk_conn_t *conn, int status, const char *message);

static void on_conn_timer(uv_timer_t *timer) {
  hk_conn_t *conn = timer->data;
  switch (conn->phase) {
    case PHASE_HEAD:
    case PHASE_BODY:
      hk_log_event(HK_LOG_INFO, NULL, "client_timeout", "request not received in time", (hk_log_field_t[]){
          HK_LOG_S("phase", conn->phase == PHASE_HEAD ? "head" : "body"),
          HK_LOG_S("client", conn->request.remote_addr)}, 2);
      send_error_and_close(conn, 408, "request timeout");
      break;
    case PHASE_SEND:
      hk_log_event(HK_LOG_INFO, NULL, "client_timeout", "response not taken in time",
                   (hk_log_field_t[]){HK_LOG_S("phase", "send"),
                                      HK_LOG_S("client", conn->request.remote_addr)}, 2);
      conn_close(conn);
      break;
    default:
      conn_close(conn);
      break;
  }
}

static void conn_set_phase(hk_conn_t *conn, hk_timer_phase_t phase, bool restart) {
  if (conn->closing || (conn->phase == phase && !restart)) return;
  const hk_config_t *cfg = conn->worker->config;
  bool entering_body = phase == PHASE_BODY && conn->phase != PHASE_BODY;
  conn->phase = phase;
  uint64_t ms = 0;
  switch (phase) {
    case PHASE_KEEPALIVE: ms = cfg->keepalive_timeout_ms; break;
    case PHASE_HEAD: ms = cfg->header_timeout_ms; break;
    case PHASE_BODY: {
      /* Idle at most body_timeout between reads, and on the whole no slower than body_min_rate
       * once body_timeout has passed (mod_reqtimeout's MinRate): a trickle of bytes each just
       * inside the idle timeout cannot hold a connection for ever. */
      uint64_t now = uv_now(&conn->worker->loop);
      if (entering_body) {
        conn->body_started_ms = now;
        conn->body_bytes = 0;
      }
      ms = cfg->body_timeout_ms;
      if (cfg->body_min_rate != 0) {
        uint64_t allowed = cfg->body_timeout_ms + conn->body_bytes * 1000 / cfg->body_min_rate;
        uint64_t elapsed = now - conn->body_started_ms;
        uint64_t left = allowed > elapsed ? allowed - elapsed : 1;
        if (left < ms) ms = left;
      }
      break;
    }
    case PHASE_SEND: ms = cfg->send_timeout_ms; break;
    case PHASE_LINGER: ms = LINGER_MS; break;
    case PHASE_NONE: break;
  }
  if (ms == 0) uv_timer_stop(&conn->timer);
  else uv_timer_start(&conn->timer, on_conn_timer, ms, 0);
}

/* ---- writing ------------------------------------------------------------------------------ */

static void on_shutdown(uv_shutdown_t *req, int status) {
  hk_conn_t *conn = req->data;
  if (status < 0 || conn->closing) {
    conn_close(conn);
    return;
  }
  /* Keep reading (and discarding) for a moment so unread request bytes do not make the
   * kernel answer with a reset that could destroy the response in flight. */
  conn->lingering = true;
  conn_set_phase(conn, PHASE_LINGER, true);
  conn_resume_reading(conn);
}

static void conn_close_gracefully(hk_conn_t *conn) {
  if (conn->closing || conn->lingering) return;
  conn->shutdown_req.data = conn;
  if (uv_shutdown(&conn->shutdown_req, (uv_stream_t *)&conn->tcp, on_shutdown) != 0) conn_close(conn);
  else conn->lingering = true;
}

static void conn_flush(hk_conn_t *conn);

static void on_write(uv_write_t *req, int status) {
  hk_conn_t *conn = req->data;
  conn->write_active = false;
  hk_buf_reset(&conn->writing);
  if (conn->closing) return;
  if (status < 0) {
    conn_close(conn);
    return;
  }
  if (conn->out.len > 0) {
    conn_flush(conn);
    if (conn->in_flight) conn_check_drained(conn);
    return;
  }
  if (conn->streaming) {
    conn_stream_pump(conn);
    return;
  }
  if (conn->in_flight) {
    /* A streaming handler writes more when it has more; until then no send timer runs. */
    conn_set_phase(conn, PHASE_NONE, false);
    conn_check_drained(conn);
    return;
  }
  if (conn->close_after) {
    conn_close_gracefully(conn);
    return;
  }
  conn_process(conn);
}

/* Hands conn->out to the kernel: uv_try_write first (the common case writes everything at
 * once), the rest through one uv_write. */
static void conn_write_out(hk_conn_t *conn, bool try_first) {
  if (conn->closing || conn->write_active || conn->out.len == 0) return;
  uv_buf_t buf;
  if (try_first) {
    buf = uv_buf_init(conn->out.data, (unsigned)conn->out.len);
    int n = uv_try_write((uv_stream_t *)&conn->tcp, &buf, 1);
    if (n < 0 && n != UV_EAGAIN) {
      conn_close(conn);
      return;
    }
    if (n > 0) hk_buf_consume(&conn->out, (size_t)n);
    if (conn->out.len == 0) {
      /* Not while a handler still streams its body into this connection. */
      if (conn->close_after && !conn->streaming && !conn->in_flight) conn_close_gracefully(conn);
      return;
    }
  }
  hk_buf_t tmp = conn->writing;
  conn->writing = conn->out;
  conn->out = tmp;
  hk_buf_reset(&conn->out);
  buf = uv_buf_init(conn->writing.data, (unsigned)conn->writing.len);
  conn->write_req.data = conn;
  if (uv_write(&conn->write_req, (uv_stream_t *)&conn->tcp, &buf, 1, on_write) != 0) {
    conn_close(conn);
    return;
  }
  conn->write_active = true;
  conn_set_phase(conn, PHASE_SEND, true);
}

static void conn_flush(hk_conn_t *conn) { conn_write_out(conn, true); }


/* ---- gzip and streamed bodies ------------------------------------------------------------ */

static void conn_stream_end(hk_conn_t *conn) {
  if (conn->stream.release) conn->stream.release(conn->stream.state);
  memset(&conn->stream, 0, sizeof conn->stream);
  hk_gzip_free(conn->gzip);
  conn->gzip = NULL;
  conn->streaming = false;
}

/* Produces the next slice into conn->slice, then compresses and frames it onto `out`. Runs on
 * the loop, or on the threadpool for an offloaded stream (which touches nothing else). */
static int stream_produce_framed(hk_conn_t *conn, hk_buf_t *out, bool *done) {
  hk_buf_reset(&conn->slice);
  int rc = conn->stream.produce(conn->stream.state, &conn->slice, done);
  hk_buf_t compressed = HK_BUF_INIT;
  const hk_buf_t *payload = &conn->slice;
  if (rc == 0 && conn->gzip) {
    rc = hk_gzip_append(conn->gzip, conn->slice.data ? conn->slice.data : "", conn->slice.len, *done, &compressed);
    payload = &compressed;
  }
  if (rc == 0 && payload->len > 0) {
    if (conn->stream_chunked) rc = hk_buf_appendf(out, "%zx\r\n", payload->len);
    if (rc == 0) rc = hk_buf_append(out, payload->data, payload->len);
    if (rc == 0 && conn->stream_chunked) rc = hk_buf_append(out, "\r\n", 2);
  }
  hk_buf_free(&compressed);
  return rc;
}

/* After the slice: end the body when it was the last, and hand the bytes to the kernel. */
static void stream_slice_ready(hk_conn_t *conn, int rc, bool done) {
  if (rc != 0) {
    conn_stream_end(conn);
    conn_close(conn);
    return;
  }
  if (done) {
    if (conn->stream_chunked) hk_buf_append_str(&conn->out, "0\r\n\r\n");
    conn_stream_end(conn);
  }
  /* Large slices shrink back so an idle connection does not keep a scrape's memory. */
  if (conn->slice.cap > 256 * 1024) hk_buf_free(&conn->slice);
  conn_write_out(conn, false);
}

static void stream_work(uv_work_t *work) {
  hk_conn_t *conn = work->data;
  bool done = false;
  hk_buf_reset(&conn->framed);
  int rc = 0;
  /* Several slices per trip to the threadpool: the hop costs more than rendering 64 KiB. */
  while (rc == 0 && conn->framed.len < OFFLOAD_BATCH && !done) rc = stream_produce_framed(conn, &conn->framed, &done);
  conn->stream_rc = rc;
  conn->stream_done = done;
}

static void stream_work_done(uv_work_t *work, int status) {
  hk_conn_t *conn = work->data;
  conn->stream_working = false;
  if (conn->closing) {
    if (conn->handles_open == 0 && !conn->in_flight) conn_free(conn);
    return;
  }
  int rc = status == 0 ? conn->stream_rc : status;
  if (rc == 0 && hk_buf_append(&conn->out, conn->framed.data ? conn->framed.data : "", conn->framed.len) != 0)
    rc = -ENOMEM;
  if (conn->framed.cap > 256 * 1024) hk_buf_free(&conn->framed);
  else hk_buf_reset(&conn->framed);
  stream_slice_ready(conn, rc, conn->stream_done);
}

/* Produces, compresses and frames the next slice, and writes it asynchronously: the slice after
 * it is produced only from the write callback, after the loop has served others. An offloaded
 * stream is produced on the threadpool and written when it comes back. */
static void conn_stream_pump(hk_conn_t *conn) {
  if (conn->stream_working) return;
  if (conn->stream.offload) {
    conn->stream_work.data = conn;
    if (uv_queue_work(&conn->worker->loop, &conn->stream_work, stream_work, stream_work_done) == 0) {
      conn->stream_working = true;
      return;
    }
  }
  bool done = false;
  size_t framed_from = conn->out.len;
  int rc = 0;
  while (rc == 0 && conn->out.len == framed_from && !done) rc = stream_produce_framed(conn, &conn->out, &done);
  stream_slice_ready(conn, rc, done);
}

/* Serialises req->response onto conn->out (hk_response) and takes over a streamed body, which
 * is produced slice by slice from the write callback. */
static int conn_queue_response(hk_conn_t *conn, hk_request_t *req, bool keep_alive) {
  hk_response_plan_t plan;
  int rc = hk_response_serialize(&conn->out, req, hk__worker_date(conn->worker), keep_alive, &plan);
  if (rc != 0) return rc;
  if (!plan.keep_alive) conn->close_after = true;
  if (plan.stream.produce != NULL) {
    conn->stream = plan.stream;
    conn->stream_chunked = plan.chunked;
    conn->streaming = true;
    conn->gzip = plan.gzip;
  }
  return 0;
}

/* ---- responses streamed by a handler ---------------------------------------------------- */

/* HEAD runs the GET handler (the router falls back), so a streaming handler writes a body that
 * must not go out: a HEAD response ends with its head, and body bytes after it would be read by
 * a keep-alive client as the next response (found by tests/fuzz/fuzz_conn.c). */
static bool request_is_head(const hk_request_t *req) {
  const hk_http_request_t *http = req->http;
  return http != NULL && http->method_len == 4 && memcmp(http->method, "HEAD", 4) == 0;
}

static int handler_stream_start(hk_request_t *req) {
  hk_conn_t *conn = req->owner;
  if (conn == NULL || conn->closing) return -EPIPE;
  hk_response_t *res = &req->response;
  const hk_http_request_t *http = req->http;
  bool chunked = http->version_minor == 1;
  bool keep_alive = chunked && http->keep_alive && !hk__worker_draining(conn->worker);
  int rc = hk_response_append_head_start(&conn->out, res->status, hk__worker_date(conn->worker), req->id,
                                         res->content_type);
  if (rc == 0 && chunked) rc = hk_buf_append_str(&conn->out, "Transfer-Encoding: chunked\r\n");
  if (rc == 0 && !keep_alive) rc = hk_buf_append_str(&conn->out, "Connection: close\r\n");
  if (rc == 0) rc = hk_buf_append(&conn->out, res->headers.data ? res->headers.data : "", res->headers.len);
  if (rc == 0) rc = hk_buf_append(&conn->out, "\r\n", 2);
  if (rc != 0) return rc;
  if (!keep_alive) conn->close_after = true;
  conn->stream_chunked = chunked;
  req->stream_started = true;
  conn_flush(conn);
  return 0;
}

static int handler_stream_write(hk_request_t *req, const char *data, size_t len) {
  hk_conn_t *conn = req->owner;
  if (conn == NULL || conn->closing) return -EPIPE;
  if (len == 0 || request_is_head(req)) return 0; /* HEAD: the head went out, the body never does */
  if (conn->out.len + conn->writing.len > HK_STREAM_HARD_LIMIT) return -EAGAIN;
  int rc = 0;
  if (conn->stream_chunked) rc = hk_buf_appendf(&conn->out, "%zx\r\n", len);
  if (rc == 0) rc = hk_buf_append(&conn->out, data, len);
  if (rc == 0 && conn->stream_chunked) rc = hk_buf_append(&conn->out, "\r\n", 2);
  if (rc != 0) return rc;
  conn_flush(conn);
  if (!conn->closing && conn->out.len + conn->writing.len > HK_STREAM_BACKLOG) req->stream_congested = true;
  return 0;
}

/* The client has taken enough of a congested streamed body: let its writer go on. */
static void conn_check_drained(hk_conn_t *conn) {
  hk_request_t *req = &conn->request;
  if (!req->stream_congested || conn->closing || conn->out.len + conn->writing.len > HK_STREAM_LOW_WATER) return;
  req->stream_congested = false;
  if (req->on_stream_drained) req->on_stream_drained(req);
}

/* ---- requests ----------------------------------------------------------------------------- */

static void request_reset(hk_request_t *req) {
  hk_buf_t headers = req->response.headers, body = req->response.body;
  char addr[sizeof req->remote_addr];
  memcpy(addr, req->remote_addr, sizeof addr);
  int port = req->remote_port;
  void *owner = req->owner;
  hk_buf_reset(&headers);
  hk_buf_reset(&body);
  memset(req, 0, sizeof *req);
  req->response.headers = headers;
  req->response.body = body;
  memcpy(req->remote_addr, addr, sizeof addr);
  req->remote_port = port;
  req->owner = owner;
}

static void request_trace_id(const hk_request_t *req, char out[33]);

/* The request id (the client's X-Request-ID when valid, else a new one) and the trace id that
 * follows from it, derived once for the log lines and the exemplar. */
static void request_assign_id(hk_request_t *req) {
  const hk_http_header_t *h = req->http ? hk_http_header_find(req->http, "x-request-id") : NULL;
  if (h != NULL && hk_reqid_is_valid(h->value, h->value_len)) {
    memcpy(req->id, h->value, h->value_len);
    req->id[h->value_len] = '\0';
  } else if (hk_reqid_new(req->id) != 0) {
    snprintf(req->id, sizeof req->id, "unavailable");
  }
  request_trace_id(req, req->trace_id);
}

/* The JSON body's top-level "mode": req.mode's default, for the request_started log line and
 * the handler. A scan, not a parse (no allocation, the body is decoded once, by req:json()),
 * and only for a matched route: what a client sends to a 404 labels nothing. The metric label
 * is decided when the handler ends (hk_lua: registered modes only). */
static void request_default_mode(hk_request_t *req) {
  const hk_buf_t *body = &req->http->body;
  if (body->len == 0 || hk_json_scan_member(body->data, body->len, "mode", req->mode, sizeof req->mode) != 0)
    req->mode[0] = '\0';
}

/* ---- trace ids ---------------------------------------------------------------------------- */

static bool is_lower_hex(const char *s, size_t len) {
  for (size_t i = 0; i < len; i++) {
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
  }
  return true;
}

/* Lower-case hex and not all zeros: what W3C Trace Context requires of trace and span ids. */
static bool is_trace_hex(const char *s, size_t len) {
  if (!is_lower_hex(s, len)) return false;
  for (size_t i = 0; i < len; i++) {
    if (s[i] != '0') return true;
  }
  return false;
}

static uint64_t fnv1a64(const char *prefix, const char *s) {
  uint64_t hash = 0xcbf29ce484222325u;
  for (const char *p = prefix; *p; p++) hash = (hash ^ (unsigned char)*p) * 0x100000001b3u;
  for (const char *p = s; *p; p++) hash = (hash ^ (unsigned char)*p) * 0x100000001b3u;
  return hash;
}

/* True when v[0..len) is a valid W3C traceparent: version-traceid-parentid-flags in lower-case
 * hex, ids not all zeros, version ff invalid, version 00 exactly 55 characters. */
static bool traceparent_valid(const char *v, size_t len) {
  return len >= 55 && v[2] == '-' && v[35] == '-' && v[52] == '-' && is_lower_hex(v, 2) &&
         memcmp(v, "ff", 2) != 0 && (len == 55 || (memcmp(v, "00", 2) != 0 && v[55] == '-')) &&
         is_trace_hex(v + 3, 32) && is_trace_hex(v + 36, 16) && is_lower_hex(v + 53, 2);
}

/* The request's W3C trace id, 32 lower-case hex digits, by the rule hancock.llm follows too
 * (lua/hancock/llm.lua, trace_of), so the core's lines and the scripts' name the same trace
 * without sharing state: the trace-id of a valid inbound `traceparent` (of its first entry, when
 * a client joined several with commas); else the request id's hex digits when it is a UUID;
 * else two FNV-1a 64 digests of the request id. */
static void request_trace_id(const hk_request_t *req, char out[33]) {
  const hk_http_header_t *tp = req->http ? hk_http_header_find(req->http, "traceparent") : NULL;
  if (tp != NULL) {
    size_t len = tp->value_len;
    const char *comma = memchr(tp->value, ',', len);
    if (comma != NULL) len = (size_t)(comma - tp->value);
    while (len > 0 && (tp->value[len - 1] == ' ' || tp->value[len - 1] == '\t')) len--;
    if (traceparent_valid(tp->value, len)) {
      memcpy(out, tp->value + 3, 32);
      out[32] = '\0';
      return;
    }
  }
  const char *id = req->id;
  size_t n = 0;
  bool uuid = strlen(id) == 36;
  for (size_t i = 0; uuid && i < 36; i++) {
    char c = id[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      uuid = c == '-';
    } else if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) {
      out[n++] = c;
    } else if (c >= 'A' && c <= 'F') {
      out[n++] = (char)(c - 'A' + 'a');
    } else {
      uuid = false;
    }
  }
  out[32] = '\0';
  if (uuid && is_trace_hex(out, 32)) return;
  snprintf(out, 33, "%016llx%016llx", (unsigned long long)fnv1a64("", id),
           (unsigned long long)fnv1a64("trace:", id));
}

void hk__conn_log_started(const hk_request_t *req) {
  if (!hk_log_enabled(HK_LOG_INFO)) return;
  const hk_http_request_t *http = req->http;
  hk_log_field_t fields[] = {
      HK_LOG_SN("method", http->method, http->method_len),
      HK_LOG_S("endpoint", req->endpoint),
      HK_LOG_SN("path", http->path, http->path_len),
      HK_LOG_S("client", req->remote_addr),
      HK_LOG_SN("trace_id", req->trace_id, 32),
      HK_LOG_S("mode", req->mode),
  };
  hk_log_event(HK_LOG_INFO, req->id, "request_started", "request started", fields,
             req->mode[0] ? 6 : 5);
}

static void log_request_completed(const hk_request_t *req) {
  if (!hk_log_enabled(HK_LOG_INFO)) return;
  const hk_http_request_t *http = req->http;
  double latency_ms = (double)(hk_now_ns() - req->start_ns) / 1e6;
  hk_log_field_t fields[] = {
      HK_LOG_SN("method", http->method, http->method_len),
      HK_LOG_S("endpoint", req->endpoint),
      HK_LOG_I("status", req->response.status),
      HK_LOG_D("latency_ms", latency_ms),
      HK_LOG_SN("trace_id", req->trace_id, 32),
      HK_LOG_S("mode", req->mode),
  };
  hk_log_event(HK_LOG_INFO, req->id, "request_completed", "request completed", fields,
             req->mode[0] ? 6 : 5);
}

/* The exemplar of the request's duration: its request_id and trace_id (the one its log lines
 * carry), or request_id only for a request refused before it was parsed (no trace was logged
 * for it). OpenMetrics allows 128 characters of exemplar labels, names included: past 78
 * characters of a client's request id (10 + 78 + 8 + 32 = 128) the trace id is left out, and
 * past 118 (which no longer fits beside its own name) the request id is, leaving the trace id,
 * from which the log lines can still be found. Request ids are ASCII, so bytes are runes. */
static size_t request_exemplar(const hk_request_t *req, hk_exemplar_label_t labels[2]) {
  size_t id_len = strlen(req->id), count = 0;
  size_t id_runes = sizeof "request_id" - 1 + id_len, trace_runes = sizeof "trace_id" - 1 + 32;
  bool with_id = id_len > 0 && id_runes <= HK_METRICS_EXEMPLAR_MAX_RUNES;
  bool with_trace = req->http != NULL;
  if (with_id && with_trace && id_runes + trace_runes > HK_METRICS_EXEMPLAR_MAX_RUNES)
    with_trace = false;
  if (with_id) labels[count++] = (hk_exemplar_label_t){"request_id", {req->id, id_len}};
  if (with_trace) labels[count++] = (hk_exemplar_label_t){"trace_id", {req->trace_id, 32}};
  return count;
}

static void record_request(hk_worker_t *worker, const hk_request_t *req) {
  const hk_http_request_t *http = req->http;
  double seconds = (double)(hk_now_ns() - req->start_ns) / 1e9;
  hk_exemplar_label_t exemplar[2];
  size_t exemplar_count = request_exemplar(req, exemplar);
  hk_host_metrics_request(worker->metrics, worker->index, http ? http->method : "", http ? http->method_len : 0,
                          req->endpoint ? req->endpoint : "unmatched", req->response.status, req->mode_label,
                          seconds, exemplar, exemplar_count);
}

static void conn_dispatch(hk_conn_t *conn) {
  hk_worker_t *worker = conn->worker;
  hk_request_t *req = &conn->request;
  request_reset(req);
  req->http = &conn->parser.request;
  req->start_ns = hk_now_ns();
  req->owner = conn;
  req->stream_start = handler_stream_start;
  req->stream_write = handler_stream_write;
  request_assign_id(req);
  conn->in_flight = true;
  conn_set_phase(conn, PHASE_NONE, false);

  bool waiting = false;
  if (hk__worker_serve_builtin(worker, req, &waiting)) {
    if (!waiting) conn_finish_request(req);
    return;
  }
  char allow[128];
  int rc = hk_lua_route(worker->lua, req, allow, sizeof allow);
  if (rc == 0) request_default_mode(req);
  hk__conn_log_started(req);
  if (rc == 0) {
    hk_lua_run(worker->lua, req, conn_finish_request);
    return;
  }
  if (rc == HK_ROUTER_METHOD_NOT_ALLOWED) {
    hk_response_set_error(&req->response, 405, "method not allowed", req->id);
    hk_response_add_header(&req->response, "Allow", 5, allow, strlen(allow));
  } else {
    hk_response_set_error(&req->response, 404, "not found", req->id);
  }
  conn_finish_request(req);
}

/* Called once per request when its response is ready (by hk_lua, or directly for errors). */
static void conn_finish_request(hk_request_t *req) {
  hk_conn_t *conn = req->owner ? (hk_conn_t *)req->owner : NULL;
  req->finished = true;
  if (conn == NULL) return; /* the client went away; nothing to send */
  hk_worker_t *worker = conn->worker;
  conn->in_flight = false;
  log_request_completed(req);
  record_request(worker, req);
  hk__gens_publish(&worker->gens);
  if (conn->closing) {
    if (conn->handles_open == 0) conn_free(conn);
    return;
  }
  bool keep_alive = req->http->keep_alive && !hk__worker_draining(worker);
  if (req->stream_started) {
    /* The handler streamed its body: end it (a failure midway has already been logged; the
     * body just ends, as HTTP offers no way to take back a status that went out). */
    if (conn->stream_chunked && !request_is_head(req) && hk_buf_append_str(&conn->out, "0\r\n\r\n") != 0)
      conn_close(conn);
    if (conn->closing) return;
  } else if (conn_queue_response(conn, req, keep_alive) != 0) {
    conn_close(conn);
    return;
  }
  hk_http_parser_next(&conn->parser);
  if (conn->streaming) conn_stream_pump(conn);
  else conn_flush(conn);
  /* A handler that finished later (after I/O) restarts the loop for pipelined requests. */
  if (!conn->processing) conn_process(conn);
}

/* Answers a protocol error (before any handler ran) and closes. */
static void send_error_and_close(hk_conn_t *conn, int status, const char *message) {
  hk_request_t *req = &conn->request;
  request_reset(req);
  req->http = NULL;
  request_assign_id(req);
  hk_response_set_error(&req->response, status, message, req->id);
  hk_log_event(HK_LOG_INFO, req->id, "request_rejected", message, (hk_log_field_t[]){
      HK_LOG_I("status", status), HK_LOG_S("client", req->remote_addr)}, 2);
  req->start_ns = hk_now_ns();
  record_request(conn->worker, req);
  conn->close_after = true;
  if (conn_queue_response(conn, req, false) != 0) {
    conn_close(conn);
    return;
  }
  conn_flush(conn);
}

static void conn_write_continue(hk_conn_t *conn) {
  static const char line[] = "HTTP/1.1 100 Continue\r\n\r\n";
  if (hk_buf_append(&conn->out, line, sizeof line - 1) != 0) conn_close(conn);
  else conn_flush(conn);
}

/* ---- reading and the per-connection loop -------------------------------------------------- */

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  hk_conn_t *conn = handle->data;
  (void)suggested;
  /* One buffer per worker is enough: on_read copies the bytes out before returning. */
  *buf = uv_buf_init(conn->worker->read_buffer, HK_READ_BUFFER_SIZE);
}

static void conn_pause_reading(hk_conn_t *conn) {
  if (conn->reading) {
    uv_read_stop((uv_stream_t *)&conn->tcp);
    conn->reading = false;
  }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void conn_resume_reading(hk_conn_t *conn) {
  if (!conn->reading && !conn->closing) {
    if (uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_read) == 0) conn->reading = true;
  }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  hk_conn_t *conn = stream->data;
  if (nread == 0) return;
  if (nread < 0) {
    /* EOF or reset. A response being written still goes out when the client only half-closed. */
    conn_pause_reading(conn);
    if (conn->lingering || nread != UV_EOF) {
      conn_close(conn);
      return;
    }
    if (conn->in_flight) {
      /* The client gave up while its handler waits on I/O: stop the handler and its calls
       * (as nginx does without proxy_ignore_client_abort). */
      hk_log_event(HK_LOG_INFO, conn->request.id, "client_closed", "client closed the connection before the response",
                   (hk_log_field_t[]){HK_LOG_S("endpoint", conn->request.endpoint)}, 1);
      conn_close(conn);
      return;
    }
    if (conn->write_active || conn->out.len > 0) {
      conn->close_after = true;
      return;
    }
    conn_close(conn);
    return;
  }
  if (conn->lingering) return; /* discard */
  if (hk_buf_append(&conn->in, buf->base, (size_t)nread) != 0) {
    conn_close(conn);
    return;
  }
  if (conn->parser.state == HK_HTTP_STATE_BODY) {
    conn->body_bytes += (uint64_t)nread;
    conn_set_phase(conn, PHASE_BODY, true);
  }
  conn_process(conn);
}

/* Parses and answers requests from conn->in until input runs out or a response must wait. */
static void conn_process(hk_conn_t *conn) {
  conn->processing = true;
  while (!conn->closing && !conn->lingering && !conn->in_flight && !conn->write_active &&
         !conn->close_after && !conn->streaming) {
    size_t consumed = 0;
    hk_http_event_t ev = hk_http_parse(&conn->parser, conn->in.data, conn->in.len, &consumed);
    hk_buf_consume(&conn->in, consumed);
    switch (ev) {
      case HK_HTTP_NEED_MORE:
        if (hk__worker_draining(conn->worker) && conn->parser.state == HK_HTTP_STATE_IDLE && conn->in.len == 0) {
          conn->processing = false;
          conn_close(conn);
          return;
        }
        if (conn->parser.state == HK_HTTP_STATE_IDLE) conn_set_phase(conn, PHASE_KEEPALIVE, false);
        else if (conn->parser.state == HK_HTTP_STATE_HEAD) conn_set_phase(conn, PHASE_HEAD, false);
        else if (conn->phase != PHASE_BODY) conn_set_phase(conn, PHASE_BODY, true);
        conn_resume_reading(conn);
        conn->processing = false;
        return;
      case HK_HTTP_CONTINUE:
        conn_write_continue(conn);
        conn_set_phase(conn, PHASE_BODY, true);
        break;
      case HK_HTTP_ERROR:
        conn_pause_reading(conn);
        send_error_and_close(conn, conn->parser.error_status, conn->parser.error_message);
        conn->processing = false;
        return;
      case HK_HTTP_REQUEST:
        conn_dispatch(conn);
        break;
    }
  }
  conn->processing = false;
  /* Waiting on a handler or a write: bound what a pipelining client can queue meanwhile. */
  if (conn->in.len > INPUT_HIGH_WATER) conn_pause_reading(conn);
  else if (!conn->closing && !conn->lingering && !conn->close_after) conn_resume_reading(conn);
}

/* ---- accepting ---------------------------------------------------------------------------- */

static void reject_connection(hk_worker_t *worker) {
  uv_tcp_t *tmp = malloc(sizeof *tmp);
  if (tmp == NULL) return;
  uv_tcp_init(&worker->loop, tmp);
  if (uv_accept((uv_stream_t *)&worker->listener, (uv_stream_t *)tmp) == 0) {
    worker->conns_rejected++;
    hk_series_add(hk_metric_series(worker->metrics->connections_rejected, NULL, 0), worker->index, 1);
  }
  uv_close((uv_handle_t *)tmp, (uv_close_cb)free);
  uint64_t now = uv_now(&worker->loop);
  if (now - worker->last_reject_log_ms >= 1000 || worker->last_reject_log_ms == 0) {
    worker->last_reject_log_ms = now;
    hk_log_event(HK_LOG_WARNING, NULL, "connection_limit_reached",
                 "connection refused: too many open connections",
                 (hk_log_field_t[]){HK_LOG_I("limit", worker->config->max_connections),
                                    HK_LOG_I("rejected_total", worker->conns_rejected)}, 2);
  }
}

void hk__conn_accept(hk_worker_t *worker) {
  uv_stream_t *listener = (uv_stream_t *)&worker->listener;
  /* --max-connections holds for the process: one counter shared by every worker. */
  if (atomic_fetch_add_explicit(worker->process_connections, 1, memory_order_relaxed) >=
      worker->config->max_connections) {
    atomic_fetch_sub_explicit(worker->process_connections, 1, memory_order_relaxed);
    reject_connection(worker);
    return;
  }
  hk_conn_t *conn = calloc(1, sizeof *conn);
  if (conn == NULL) {
    atomic_fetch_sub_explicit(worker->process_connections, 1, memory_order_relaxed);
    reject_connection(worker);
    return;
  }
  conn->worker = worker;
  uv_tcp_init(&worker->loop, &conn->tcp);
  uv_timer_init(&worker->loop, &conn->timer);
  conn->tcp.data = conn;
  conn->timer.data = conn;
  conn->handles_open = 2;
  conn->next = worker->conns;
  if (worker->conns) worker->conns->prev = conn;
  worker->conns = conn;
  worker->conn_count++;
  atomic_store_explicit(&worker->open_connections, worker->conn_count, memory_order_relaxed);
  hk_http_parser_init(&conn->parser, worker->config->max_body_bytes);
  if (uv_accept(listener, (uv_stream_t *)&conn->tcp) != 0) {
    conn_close(conn);
    return;
  }
  uv_tcp_nodelay(&conn->tcp, 1);
  struct sockaddr_storage peer;
  int len = sizeof peer;
  if (uv_tcp_getpeername(&conn->tcp, (struct sockaddr *)&peer, &len) == 0) {
    if (peer.ss_family == AF_INET) {
      const struct sockaddr_in *in4 = (const struct sockaddr_in *)&peer;
      uv_ip4_name(in4, conn->request.remote_addr, sizeof conn->request.remote_addr);
      conn->request.remote_port = ntohs(in4->sin_port);
    } else if (peer.ss_family == AF_INET6) {
      const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&peer;
      uv_ip6_name(in6, conn->request.remote_addr, sizeof conn->request.remote_addr);
      conn->request.remote_port = ntohs(in6->sin6_port);
    }
  }
  conn_set_phase(conn, PHASE_KEEPALIVE, true);
  conn_resume_reading(conn);
}


void hk__conn_close(hk_conn_t *conn) { conn_close(conn); }

void hk__conn_finish_request(hk_request_t *req) { conn_finish_request(req); }

void hk__conn_close_if_idle(hk_conn_t *conn) {
  if (conn->parser.state == HK_HTTP_STATE_IDLE && conn->in.len == 0 && !conn->in_flight &&
      !conn->write_active && conn->out.len == 0)
    conn_close(conn);
}
