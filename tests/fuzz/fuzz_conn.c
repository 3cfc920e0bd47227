/* fuzz_conn: libFuzzer target for the request path from raw bytes to response through the real
 * connection code (hk_conn: reading, parsing, pipelining, 100-continue, dispatch to the built-in
 * routes and to Lua handlers, response framing, streamed bodies, errors and the lingering
 * close), with the JSON bridge (req:json() and the encoder) behind a route. One worker
 * (hk_worker, the same setup as hk_server's, minus the thread) serves a tiny routes script on
 * 127.0.0.1 (its clients connect from 127.0.0.2-251); the target's own thread runs the worker's
 * loop, so no input races another.
 *
 * Input: byte 0 picks the mode and how the rest is split into writes (bit 7: JSON mode, bit 6:
 * half-close once the server is idle, low six bits: split sizes as in fuzz_http). In raw mode
 * the rest is what a client sends on one connection; in JSON mode it is a JSON body, sent as
 * POST /echo with a Content-Length, which the handler decodes with req:json() and sends back.
 * Each input: connect, write the bytes (running the loop between writes), run until the server
 * is idle, optionally shut down the write side and wait again, then reset the connection and
 * run until the server has freed it. Checks:
 *   - the responses are exactly the ones the requests call for, in order: an independent
 *     hk_http parser over the same bytes gives the requests (and the 100-continues and the final
 *     error) the server must answer, and the server answers all of them, then stops;
 *   - every response is well-formed HTTP/1.1: status line, header syntax, X-Request-ID on
 *     final responses, Content-Length or chunked (never both, no chunked to HTTP/1.0), strict
 *     chunk framing, no body for HEAD, 1xx, 204 and 304, a close-delimited body only when
 *     the response says Connection: close, and nothing after a Connection: close response;
 *   - in JSON mode, the echo is lossless: what the server sends back re-encodes to the same
 *     bytes as the request body decoded and encoded here (null, [] and {} kept apart);
 *   - nothing hangs (each input finishes within 20 s), crashes or leaks (the worker's
 *     connection is freed after every input; ASan and LeakSanitizer watch the rest).
 * Built by tests/fuzz/CMakeLists.txt as fuzz_conn_replay (run on corpus/conn/ by ctest) and,
 * with -DHK_FUZZ=ON, as a libFuzzer binary. See docs/fuzzing.md. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#include "hk_buf.h"
#include "hk_config.h"
#include "hk_host_metrics.h"
#include "hk_http.h"
#include "hk_json.h"
#include "hk_log.h"
#include "hk_lua.h"
#include "hk_metrics.h"
#include "hk_worker.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "fuzz_check.h"

#define MAX_BODY 8192 /* small, so 413 is easy to reach */
#define DEADLINE_MS 20000 /* generous: campaigns share the machine, at nice 19 */

static const char ROUTES[] =
    "-- fuzz_conn's routes: one of each kind of response the core frames.\n"
    "local hk = require \"hancock\"\n"
    "hk.route(\"GET\", \"/\", function(req) return { ok = true, path = req.path, q = req.query_string } end)\n"
    "hk.route(\"POST\", \"/echo\", function(req)\n"
    "  local value, err = req:json()\n"
    "  if value == nil and err ~= nil then return hk.error(400, err) end\n"
    "  return { echo = value }\n"
    "end)\n"
    "hk.route(\"PUT\", \"/raw/:name\", function(req) return 201, req.body, { [\"X-Name\"] = req.params.name } end)\n"
    "hk.route(\"GET\", \"/items/:id\", function(req) return { id = req.params.id, h = req:header(\"x-test\") } end)\n"
    "hk.route(\"GET\", \"/stream\", function(req)\n"
    "  req:stream(200)\n"
    "  for i = 1, 3 do req:write(\"data: \" .. i .. \"\\n\\n\") end\n"
    "end)\n"
    "hk.route(\"GET\", \"/fail\", function() error(\"boom\") end)\n"
    "hk.route(\"DELETE\", \"/status/:code\", function(req)\n"
    "  return hk.error(tonumber(req.params.code) or 400, \"as asked\")\n"
    "end)\n"
    "hk.route(\"PATCH\", \"/plain/:code\", function(req)\n"
    "  return tonumber(req.params.code) or 200, \"text\"\n"
    "end)\n"
    "hk.route(\"GET\", \"/empty\", function() return nil end)\n";

/* ---- the server, set up once ---------------------------------------------------------------- */

typedef struct server_s {
  hk_config_t config;
  hk_metrics_t *registry;
  hk_host_metrics_t host;
  hk_ratelimit_t *ratelimit;
  hk_carry_t *carry;
  hk_worker_t worker;
  _Atomic size_t connections;
  int port;
  lua_State *json; /* a plain state for the checker's own JSON work */
} server_t;

static server_t *server;

static void setup(void) {
  static server_t s;
  char dir[] = "/tmp/hk-fuzz-conn-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char path[64];
  snprintf(path, sizeof path, "%s/routes.lua", dir);
  FILE *f = fopen(path, "w");
  CHECK(f != NULL && fputs(ROUTES, f) >= 0 && fclose(f) == 0);

  /* Log lines go to /dev/null through the writer thread; only errors are formatted. */
  int null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
  CHECK(null_fd >= 0);
  CHECK(hk_log_start(null_fd, 1 << 20) == 0);
  hk_log_set_level(HK_LOG_ERROR);

  char err[256];
  char *argv[] = {(char *)"hancock", (char *)"serve", (char *)"--listen", (char *)"127.0.0.1:0",
                  (char *)"--scripts", dir, NULL};
  CHECK(hk_config_load(&s.config, 6, argv, 2, HK_CONFIG_FOR_SERVE, err, sizeof err) == 0);
  s.config.max_body_bytes = MAX_BODY;
  s.config.admin_token[0] = '\0';
  CHECK(hk_metrics_new(4, &s.registry) == 0);
  CHECK(hk_host_metrics_init(&s.host, s.registry, 1, err, sizeof err) == 0);
  CHECK(hk_ratelimit_new(s.config.rate_limit_clients, &s.ratelimit) == 0);
  CHECK(hk_carry_new(&s.carry) == 0);
  hk_lua_opts_t opts;
  hk_lua_opts_from_config(&opts, &s.config, s.registry, 0);
  opts.time_limit_ms = 0; /* no watchdog thread: the instruction budget bounds handlers here */
  hk_lua_t *lua = NULL;
  char *lua_err = NULL;
  if (hk_lua_new_opts(&opts, &lua, &lua_err) != 0) {
    fprintf(stderr, "routes script: %s\n", lua_err ? lua_err : "?");
    abort();
  }
  atomic_init(&s.connections, 0);
  int port = 0;
  /* No server: the worker calls hk__server_* only for reloads, admin requests and shutdown,
   * none of which happens here (no admin token, no inbox messages). */
  CHECK(hk__worker_init(&s.worker, NULL, 0, &s.config, &s.host, lua, s.ratelimit, s.carry, -1, &port, err,
                        sizeof err) == 0);
  s.worker.process_connections = &s.connections;
  s.port = port;
  s.json = luaL_newstate();
  CHECK(s.json != NULL);
  hk_json_init(s.json);
  server = &s;
}

/* ---- driving one connection --------------------------------------------------------------------- */

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

typedef struct client_s {
  int fd;
  hk_buf_t received;
  bool eof;   /* the server closed its side */
  bool reset; /* or reset it */
  uint64_t deadline;
} client_t;

static void client_read(client_t *c) {
  char buf[65536];
  for (;;) {
    ssize_t n = recv(c->fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      CHECK(hk_buf_append(&c->received, buf, (size_t)n) == 0);
      continue;
    }
    if (n == 0) c->eof = true;
    else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) c->reset = true;
    return;
  }
}

static size_t unread_bytes(int fd) {
  int n = 0;
  if (ioctl(fd, FIONREAD, &n) != 0) return 0;
  return n > 0 ? (size_t)n : 0;
}

/* One turn: the worker's loop once without blocking, then whatever the server sent. */
static void pump(client_t *c) {
  uv_run(&server->worker.loop, UV_RUN_NOWAIT);
  client_read(c);
  if (now_ms() > c->deadline) {
    hk_conn_t *conn = server->worker.conns;
    fprintf(stderr, "fuzz_conn: no progress for %d ms (conn %p in_flight=%d write_active=%d streaming=%d "
                    "closing=%d lingering=%d out=%zu in=%zu)\n",
            DEADLINE_MS, (void *)conn, conn ? conn->in_flight : -1, conn ? conn->write_active : -1,
            conn ? conn->streaming : -1, conn ? conn->closing : -1, conn ? conn->lingering : -1,
            conn ? conn->out.len : 0, conn ? conn->in.len : 0);
    abort();
  }
}

/* The server has nothing left to do until the client sends more (or goes away). */
static bool idle(client_t *c) {
  hk_conn_t *conn = server->worker.conns;
  if (conn == NULL) return true; /* closed and freed */
  if (conn->closing || conn->in_flight || conn->write_active || conn->out.len > 0 || conn->streaming ||
      conn->stream_working)
    return false;
  if (conn->lingering && !c->eof && !c->reset) return false; /* its shutdown is on the way */
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)&conn->tcp, &fd) == 0 && unread_bytes(fd) > 0 && conn->reading) return false;
  return unread_bytes(c->fd) == 0;
}

static void pump_until_idle(client_t *c) {
  /* Two idle turns in a row: a callback queued by the last one (a write, a reap) has run. */
  for (int quiet = 0; quiet < 2;) {
    pump(c);
    quiet = idle(c) ? quiet + 1 : 0;
  }
}

/* Writes everything, in the chunk sizes the split byte picks, running the loop in between. */
static void client_send(client_t *c, const uint8_t *data, size_t size, unsigned split) {
  size_t largest = (size_t)1 << (split & 0x0f);
  unsigned pattern = split >> 4 & 3;
  size_t off = 0;
  for (unsigned turn = 0; off < size && !c->eof && !c->reset; turn++) {
    size_t want = largest;
    if (pattern == 1) want = turn % 2 ? 1 : largest;
    else if (pattern == 2) want = 1 + (turn * 7) % largest;
    else if (pattern == 3) want = size; /* one write */
    if (want > size - off) want = size - off;
    ssize_t n = send(c->fd, data + off, want, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) off += (size_t)n;
    else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) break; /* server gone */
    pump(c);
    /* A server that stopped reading (input past its high-water mark while it answers) drains
     * its output only as we read: keep turning until it takes more. */
    if (n <= 0) pump_until_idle(c);
  }
}

/* ---- what the server must answer ----------------------------------------------------------- */

typedef struct expected_s {
  bool is_continue; /* a 100 Continue */
  bool is_error;    /* the parser's final error */
  int status;       /* error status; 100; 0 when the handler decides */
  bool head;
  int version_minor;
  bool keep_alive;
  bool echo;        /* POST /echo */
  hk_buf_t body;    /* the request body (echo) */
} expected_t;

typedef struct expectations_s {
  expected_t *items;
  size_t count, cap;
} expectations_t;

static expected_t *expect(expectations_t *e) {
  if (e->count == e->cap) {
    size_t cap = e->cap ? e->cap * 2 : 16;
    expected_t *grown = realloc(e->items, cap * sizeof *grown);
    CHECK(grown != NULL);
    e->items = grown;
    e->cap = cap;
  }
  expected_t *x = &e->items[e->count++];
  memset(x, 0, sizeof *x);
  return x;
}

/* The requests in these bytes, parsed as hk_conn parses them (fuzz_http checks that the split
 * does not matter), up to the first error or the first request after which it closes. */
static void expected_responses(const uint8_t *data, size_t size, expectations_t *e) {
  hk_http_parser_t parser;
  hk_http_parser_init(&parser, MAX_BODY);
  size_t off = 0;
  for (;;) {
    size_t consumed = 0;
    hk_http_event_t ev = hk_http_parse(&parser, (const char *)data + off, size - off, &consumed);
    off += consumed;
    if (ev == HK_HTTP_NEED_MORE) break;
    if (ev == HK_HTTP_CONTINUE) {
      expected_t *x = expect(e);
      x->is_continue = true;
      x->status = 100;
      continue;
    }
    if (ev == HK_HTTP_ERROR) {
      expected_t *x = expect(e);
      x->is_error = true;
      x->status = parser.error_status;
      x->version_minor = 1;
      break;
    }
    const hk_http_request_t *r = &parser.request;
    expected_t *x = expect(e);
    x->head = r->method_len == 4 && memcmp(r->method, "HEAD", 4) == 0;
    x->version_minor = r->version_minor;
    x->keep_alive = r->keep_alive;
    x->echo = r->method_len == 4 && memcmp(r->method, "POST", 4) == 0 && r->path_len == 5 &&
              memcmp(r->path, "/echo", 5) == 0;
    if (x->echo) CHECK(hk_buf_append(&x->body, r->body.data ? r->body.data : "", r->body.len) == 0);
    if (!r->keep_alive) break;
    hk_http_parser_next(&parser);
  }
  hk_http_parser_free(&parser);
}

static void expectations_free(expectations_t *e) {
  for (size_t i = 0; i < e->count; i++) hk_buf_free(&e->items[i].body);
  free(e->items);
}

/* ---- checking the responses ------------------------------------------------------------------ */

static void fail(const char *what, const hk_buf_t *received, size_t at) {
  size_t len = received->len - at < 400 ? received->len - at : 400;
  fprintf(stderr, "fuzz_conn: %s at byte %zu of %zu response bytes; from there:\n%.*s\n", what, at,
          received->len, (int)len, received->data ? received->data + at : "");
  if (getenv("FUZZ_CONN_DUMP") != NULL)
    fprintf(stderr, "all responses:\n%.*s\n", (int)received->len, received->data ? received->data : "");
  abort();
}

static bool token_char(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* The line starting at `at` (without CRLF); fails when there is no CRLF or a bare CR/LF. */
static size_t line_end(const hk_buf_t *r, size_t at) {
  for (size_t i = at; i + 1 < r->len; i++) {
    if (r->data[i] == '\r') {
      if (r->data[i + 1] != '\n') fail("bare CR", r, i);
      return i;
    }
    if (r->data[i] == '\n') fail("bare LF", r, i);
  }
  fail("response ends mid-line", r, at);
  return 0;
}

static bool header_is(const char *name, size_t len, const char *want) {
  return len == strlen(want) && strncasecmp(name, want, len) == 0;
}

/* Checks the response at *at against what was asked and moves *at past it; *closes tells
 * whether it ends the connection. */
static void check_response(const hk_buf_t *r, size_t *at, const expected_t *x, bool last, bool *closes) {
  size_t start = *at, end = line_end(r, start);
  const char *s = r->data + start;
  size_t n = end - start;
  if (n < 13 || memcmp(s, "HTTP/1.1 ", 9) != 0 || s[9] < '1' || s[9] > '5' || s[10] < '0' || s[10] > '9' ||
      s[11] < '0' || s[11] > '9' || s[12] != ' ')
    fail("bad status line", r, start);
  int status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
  for (size_t i = 13; i < n; i++)
    if ((unsigned char)s[i] < 0x20 && s[i] != '\t') fail("control character in the reason", r, start);
  if (x->status != 0 && status != x->status) fail("unexpected status", r, start);
  if (x->status == 0 && status < 200) fail("a handler's response is 1xx", r, start);
  size_t pos = end + 2;
  long long content_length = -1;
  bool chunked = false, close = false, request_id = false;
  for (;;) {
    end = line_end(r, pos);
    if (end == pos) {
      pos += 2;
      break;
    }
    const char *h = r->data + pos;
    size_t hn = end - pos, name_len = 0;
    while (name_len < hn && token_char((unsigned char)h[name_len])) name_len++;
    if (name_len == 0 || name_len >= hn || h[name_len] != ':') fail("bad header name", r, pos);
    const char *v = h + name_len + 1;
    size_t vn = hn - name_len - 1;
    while (vn > 0 && (*v == ' ' || *v == '\t')) v++, vn--;
    for (size_t i = 0; i < vn; i++)
      if (((unsigned char)v[i] < 0x20 && v[i] != '\t') || v[i] == 0x7f) fail("control character in a header value", r, pos);
    if (header_is(h, name_len, "content-length")) {
      if (content_length >= 0) fail("two Content-Length headers", r, pos);
      if (vn == 0 || vn > 15) fail("bad Content-Length", r, pos);
      content_length = 0;
      for (size_t i = 0; i < vn; i++) {
        if (v[i] < '0' || v[i] > '9') fail("bad Content-Length", r, pos);
        content_length = content_length * 10 + (v[i] - '0');
      }
    } else if (header_is(h, name_len, "transfer-encoding")) {
      if (chunked || !(vn == 7 && strncasecmp(v, "chunked", 7) == 0)) fail("bad Transfer-Encoding", r, pos);
      chunked = true;
    } else if (header_is(h, name_len, "connection")) {
      if (vn == 5 && strncasecmp(v, "close", 5) == 0) close = true;
      else if (!(vn == 10 && strncasecmp(v, "keep-alive", 10) == 0)) fail("bad Connection", r, pos);
    } else if (header_is(h, name_len, "x-request-id")) {
      if (request_id || vn == 0) fail("bad X-Request-ID", r, pos);
      request_id = true;
    }
    pos = end + 2;
  }
  if (chunked && content_length >= 0) fail("Content-Length with chunked", r, start);
  if (status >= 200 && !request_id) fail("final response without X-Request-ID", r, start);
  if (status < 200 && (chunked || content_length >= 0 || close)) fail("framing on a 1xx", r, start);
  if (chunked && x->version_minor == 0) fail("chunked to an HTTP/1.0 client", r, start);
  bool no_body = x->head || status < 200 || status == 204 || status == 304;
  if ((status == 204 || (status < 200)) && (chunked || content_length > 0)) fail("body framing where none may be", r, start);
  hk_buf_t body = HK_BUF_INIT;
  if (no_body) {
    /* nothing */
  } else if (chunked) {
    for (;;) {
      end = line_end(r, pos);
      size_t size = 0, digits = 0;
      for (size_t i = pos; i < end; i++, digits++) {
        int d = r->data[i] >= '0' && r->data[i] <= '9' ? r->data[i] - '0'
                : r->data[i] >= 'a' && r->data[i] <= 'f' ? r->data[i] - 'a' + 10
                                                         : -1;
        if (d < 0 || digits >= 12) fail("bad chunk size", r, pos);
        size = size * 16 + (size_t)d;
      }
      if (digits == 0) fail("empty chunk size", r, pos);
      pos = end + 2;
      if (size == 0) {
        if (pos + 2 > r->len || memcmp(r->data + pos, "\r\n", 2) != 0) fail("no CRLF after the last chunk", r, pos);
        pos += 2;
        break;
      }
      if (r->len - pos < size + 2) fail("truncated chunk", r, pos);
      CHECK(hk_buf_append(&body, r->data + pos, size) == 0);
      pos += size;
      if (memcmp(r->data + pos, "\r\n", 2) != 0) fail("no CRLF after chunk data", r, pos);
      pos += 2;
    }
  } else if (content_length >= 0) {
    if ((long long)(r->len - pos) < content_length) fail("truncated body", r, pos);
    CHECK(hk_buf_append(&body, r->data + pos, (size_t)content_length) == 0);
    pos += (size_t)content_length;
  } else {
    /* Delimited by the close: the response must say so and be the last. */
    if (!close) fail("body without framing", r, start);
    CHECK(hk_buf_append(&body, r->data + pos, r->len - pos) == 0);
    pos = r->len;
  }
  /* A close ends the connection early only for a body that the close delimits (a streamed
   * body to HTTP/1.0, or the head of one for HEAD): there is no other way to frame it. */
  bool close_delimited = content_length < 0 && !chunked && status >= 200 && status != 204 && status != 304;
  if (close && !last && !close_delimited) fail("Connection: close, yet more responses were expected", r, start);
  *closes = close;
  *at = pos;

  if (x->echo && status == 200 && !x->head) {
    /* The echo is lossless: decode(request) and the echoed value encode the same. */
    lua_State *L = server->json;
    char err[128];
    hk_buf_t want = HK_BUF_INIT, got = HK_BUF_INIT;
    CHECK(hk_json_decode(L, x->body.data ? x->body.data : "", x->body.len, err, sizeof err) == 0);
    CHECK(hk_json_encode(L, -1, &want, err, sizeof err) == 0);
    lua_pop(L, 1);
    if (hk_json_decode(L, body.data ? body.data : "", body.len, err, sizeof err) != 0) fail("echo is not JSON", r, start);
    CHECK(lua_istable(L, -1));
    lua_getfield(L, -1, "echo");
    CHECK(hk_json_encode(L, -1, &got, err, sizeof err) == 0);
    lua_pop(L, 2);
    if (want.len != got.len || memcmp(want.data, got.data, want.len) != 0) {
      fprintf(stderr, "echo differs:\nsent %s\ngot  %s\n", want.data, got.data);
      abort();
    }
    hk_buf_free(&want);
    hk_buf_free(&got);
  }
  hk_buf_free(&body);
}

static void check_responses(const hk_buf_t *r, const expectations_t *e) {
  size_t at = 0;
  for (size_t i = 0; i < e->count; i++) {
    if (at == r->len) {
      fprintf(stderr, "fuzz_conn: %zu responses expected, %zu came\n", e->count, i);
      fail("responses missing", r, at);
    }
    bool closes = false;
    check_response(r, &at, &e->items[i], i + 1 == e->count, &closes);
    if (closes) break;
  }
  if (at != r->len) fail("bytes after the last expected response", r, at);
}

/* ---- the target ------------------------------------------------------------------------------ */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (server == NULL) setup();
  if (size == 0) return 0;
  unsigned mode = data[0];
  data++, size--;

  hk_buf_t request = HK_BUF_INIT;
  if (mode & 0x80) {
    CHECK(hk_buf_appendf(&request, "POST /echo HTTP/1.1\r\nHost: fuzz.test\r\nContent-Type: application/json\r\n"
                                   "Content-Length: %zu\r\n\r\n", size) == 0);
  }
  CHECK(hk_buf_append(&request, data, size) == 0);
  expectations_t expected = {NULL, 0, 0};
  expected_responses((const uint8_t *)request.data, request.len, &expected);

  client_t c = {-1, HK_BUF_INIT, false, false, now_ms() + DEADLINE_MS};
  c.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  CHECK(c.fd >= 0);
  /* An input that half-closes first leaves this side in TIME_WAIT for a minute, which a reset
   * cannot undo; at a thousand inputs a second that is more than the 28,000 ephemeral ports of
   * one source address. Every 127/8 address is loopback: spreading the sources over 250 of
   * them gives each its own port range. */
  static unsigned source;
  struct sockaddr_in from = {0};
  from.sin_family = AF_INET;
  from.sin_addr.s_addr = htonl(0x7f000002u + (source++ % 250u));
  CHECK(bind(c.fd, (struct sockaddr *)&from, sizeof from) == 0);
  struct sockaddr_in addr = {0};
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)server->port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(c.fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    fprintf(stderr, "fuzz_conn: connect to 127.0.0.1:%d: %s\n", server->port, strerror(errno));
    abort();
  }
  int one = 1;
  setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  while (server->worker.conns == NULL) pump(&c); /* accepted */

  client_send(&c, (const uint8_t *)request.data, request.len, mode & 0x3f);
  pump_until_idle(&c);
  if (mode & 0x40) {
    /* The client is done sending: the server finishes what it owes, then closes. */
    shutdown(c.fd, SHUT_WR);
    pump_until_idle(&c);
  }
  check_responses(&c.received, &expected);

  /* Reset rather than close, so neither side keeps the port in TIME_WAIT. */
  struct linger lin = {1, 0};
  setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lin, sizeof lin);
  close(c.fd);
  c.fd = -1;
  while (server->worker.conns != NULL) {
    uv_run(&server->worker.loop, UV_RUN_NOWAIT);
    if (now_ms() > c.deadline) {
      fprintf(stderr, "fuzz_conn: the connection was not freed after the client reset it\n");
      abort();
    }
  }
  CHECK(server->worker.conn_count == 0 && atomic_load(&server->connections) == 0);

  hk_buf_free(&c.received);
  hk_buf_free(&request);
  expectations_free(&expected);
  return 0;
}
