/* Unit tests for hk_client: real transfers against a tiny HTTP/1.1 server that runs on the same
 * uv loop, on 127.0.0.1 only. The server answers by path (/hello, /delay/<ms>, /huge/<n>,
 * /huge-chunked/<n>, /chunks, /close, /echo, /continue, /garbage) and counts connections,
 * requests and peer closes, so tests wait on events, not on the clock. Every test ends with
 * uv_loop_close() == 0; leaks are LeakSanitizer's to find in the SANITIZE build. */
#include "hk_client.h"
#include "hk_test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>
#include <uv.h>

static uv_loop_t loop;
static uv_timer_t watchdog;
static hk_client_t *client;

/* ---- the test server ------------------------------------------------------------------- */

typedef struct conn_s {
  uv_tcp_t tcp;
  uv_timer_t timer; /* /delay and /chunks */
  char *in;
  size_t in_len, in_cap;
  int handles_open;
  bool closing;
  bool busy; /* a response is still being produced; later requests wait */
  int piece; /* next /chunks piece */
  struct conn_s *prev, *next;
} conn_t;

static struct {
  uv_tcp_t listener;
  int port;
  int accepted;    /* TCP connections */
  int requests;    /* complete requests read */
  int peer_closed; /* connections the client ended (EOF or reset) */
  conn_t *conns;
} srv;

typedef struct write_req_s {
  uv_write_t req; /* first: the uv_write_t pointer is the allocation */
  conn_t *conn;
  bool close_after;
  char data[];
} write_req_t;

static void on_conn_closed(uv_handle_t *handle) {
  conn_t *c = handle->data;
  if (--c->handles_open == 0) {
    free(c->in);
    free(c);
  }
}

static void conn_close(conn_t *c) {
  if (c->closing) return;
  c->closing = true;
  if (c->prev) c->prev->next = c->next;
  else srv.conns = c->next;
  if (c->next) c->next->prev = c->prev;
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
  uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

/* Runs before the conn is freed even when uv_close cancels the write. */
static void on_written(uv_write_t *req, int status) {
  write_req_t *w = (write_req_t *)req;
  if (status == 0 && w->close_after) conn_close(w->conn);
  free(w);
}

static void conn_send_ex(conn_t *c, const char *data, size_t len, bool close_after) {
  if (c->closing) return;
  write_req_t *w = malloc(sizeof *w + len);
  HK_ASSERT(w != NULL);
  w->conn = c;
  w->close_after = close_after;
  memcpy(w->data, data, len);
  uv_buf_t buf = uv_buf_init(w->data, (unsigned)len);
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_written) != 0) free(w);
}

static void conn_send(conn_t *c, const char *data, size_t len) { conn_send_ex(c, data, len, false); }

static void respond(conn_t *c, bool head_only, const char *extra, const char *body, size_t len) {
  char head[1024];
  int n = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n%s\r\n", len,
                   extra);
  conn_send(c, head, (size_t)n);
  if (!head_only && len > 0) conn_send(c, body, len);
}

static size_t content_length(const char *head, size_t head_len) {
  for (const char *p = head; p < head + head_len;) {
    const char *eol = memmem(p, (size_t)(head + head_len - p), "\r\n", 2);
    if (eol == NULL) break;
    if ((size_t)(eol - p) > 15 && strncasecmp(p, "content-length:", 15) == 0)
      return (size_t)strtoul(p + 15, NULL, 10);
    p = eol + 2;
  }
  return 0;
}

static void conn_process(conn_t *c);

static void on_delay(uv_timer_t *timer) {
  conn_t *c = timer->data;
  respond(c, false, "", "delayed", 7);
  c->busy = false;
  conn_process(c);
}

static void on_piece(uv_timer_t *timer) {
  static const char *const pieces[] = {"5\r\nalpha\r\n", "4\r\nbeta\r\n", "5\r\ngamma\r\n",
                                       "0\r\n\r\n"};
  conn_t *c = timer->data;
  conn_send(c, pieces[c->piece], strlen(pieces[c->piece]));
  if (++c->piece == 4) {
    uv_timer_stop(&c->timer);
    c->busy = false;
    conn_process(c);
  }
}

static void handle_request(conn_t *c, const char *req, size_t len) {
  char method[16] = "", path[256] = "";
  HK_ASSERT(sscanf(req, "%15s %255s", method, path) == 2);
  bool head_only = strcmp(method, "HEAD") == 0;
  unsigned ms = 0;
  size_t n = 0;
  if (strcmp(path, "/hello") == 0) {
    respond(c, head_only,
            "X-Test-Header: Mixed-Case\r\nx-lower: yes\r\nX-Spaced: \t padded value \t\r\n"
            "X-Folded: first\r\n  second\r\n",
            "hello world", 11);
  } else if (sscanf(path, "/delay/%u", &ms) == 1) {
    c->busy = true;
    uv_timer_start(&c->timer, on_delay, ms, 0);
  } else if (sscanf(path, "/huge/%zu", &n) == 1) {
    char *body = malloc(n);
    HK_ASSERT(body != NULL);
    memset(body, 'x', n);
    respond(c, head_only, "", body, n);
    free(body);
  } else if (sscanf(path, "/huge-chunked/%zu", &n) == 1) {
    const char *head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    conn_send(c, head, strlen(head));
    static char block[65536 + 16];
    for (size_t sent = 0; sent < n;) {
      size_t part = n - sent < 65536 ? n - sent : 65536;
      int hl = snprintf(block, 16, "%zx\r\n", part);
      memset(block + hl, 'y', part);
      memcpy(block + hl + part, "\r\n", 2);
      conn_send(c, block, (size_t)hl + part + 2);
      sent += part;
    }
    conn_send(c, "0\r\n\r\n", 5);
  } else if (strcmp(path, "/chunks") == 0) {
    const char *head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    conn_send(c, head, strlen(head));
    c->busy = true;
    c->piece = 0;
    uv_timer_start(&c->timer, on_piece, 20, 20);
  } else if (strcmp(path, "/close") == 0) {
    conn_close(c);
  } else if (strcmp(path, "/echo") == 0) {
    respond(c, head_only, "", req, len);
  } else if (strcmp(path, "/continue") == 0) {
    const char *raw = "HTTP/1.1 100 Continue\r\nX-Interim: yes\r\n\r\n"
                      "HTTP/1.1 200 OK\r\nX-Final: yes\r\nContent-Length: 2\r\n\r\nok";
    conn_send(c, raw, strlen(raw));
  } else if (strcmp(path, "/garbage") == 0) {
    conn_send_ex(c, "garbage\r\n\r\n", 11, true);
  } else {
    const char *raw = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
    conn_send(c, raw, strlen(raw));
  }
}

static void conn_process(conn_t *c) {
  while (!c->closing && !c->busy) {
    char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (end == NULL) return;
    size_t head_len = (size_t)(end - c->in) + 4;
    size_t total = head_len + content_length(c->in, head_len);
    if (c->in_len < total) return;
    srv.requests++;
    handle_request(c, c->in, total);
    if (c->closing) return;
    memmove(c->in, c->in + total, c->in_len - total);
    c->in_len -= total;
  }
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  conn_t *c = handle->data;
  (void)suggested;
  if (c->in_cap - c->in_len < 65536) {
    c->in_cap = c->in_len + 65536;
    c->in = realloc(c->in, c->in_cap);
    HK_ASSERT(c->in != NULL);
  }
  *buf = uv_buf_init(c->in + c->in_len, (unsigned)(c->in_cap - c->in_len));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = stream->data;
  (void)buf;
  uv_stop(&loop); /* let RUN_UNTIL look at the counters */
  if (nread < 0) {
    srv.peer_closed++;
    conn_close(c);
    return;
  }
  c->in_len += (size_t)nread;
  conn_process(c);
}

static void on_connection(uv_stream_t *listener, int status) {
  HK_ASSERT_INT_EQ(status, 0);
  conn_t *c = calloc(1, sizeof *c);
  HK_ASSERT(c != NULL);
  uv_tcp_init(&loop, &c->tcp);
  uv_timer_init(&loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->handles_open = 2;
  c->next = srv.conns;
  if (srv.conns) srv.conns->prev = c;
  srv.conns = c;
  HK_ASSERT_INT_EQ(uv_accept(listener, (uv_stream_t *)&c->tcp), 0);
  srv.accepted++;
  HK_ASSERT_INT_EQ(uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read), 0);
}

static void server_start(void) {
  memset(&srv, 0, sizeof srv);
  struct sockaddr_in addr;
  HK_ASSERT_INT_EQ(uv_ip4_addr("127.0.0.1", 0, &addr), 0);
  HK_ASSERT_INT_EQ(uv_tcp_init(&loop, &srv.listener), 0);
  HK_ASSERT_INT_EQ(uv_tcp_bind(&srv.listener, (const struct sockaddr *)&addr, 0), 0);
  HK_ASSERT_INT_EQ(uv_listen((uv_stream_t *)&srv.listener, 511, on_connection), 0);
  struct sockaddr_storage bound;
  int len = sizeof bound;
  HK_ASSERT_INT_EQ(uv_tcp_getsockname(&srv.listener, (struct sockaddr *)&bound, &len), 0);
  srv.port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
}

static void server_stop(void) {
  uv_close((uv_handle_t *)&srv.listener, NULL);
  while (srv.conns) conn_close(srv.conns);
}

/* ---- harness ------------------------------------------------------------------------------ */

static void on_watchdog(uv_timer_t *timer) {
  (void)timer;
  HK_FAIL_("timed out waiting on the loop");
}

/* Turns the loop until `cond` holds; the watchdog fails the test after 20 s. The callbacks that
 * change what conditions look at call uv_stop, so uv_run returns right after them instead of
 * blocking in the poll phase. */
#define RUN_UNTIL(cond)                                       \
  do {                                                        \
    uv_timer_start(&watchdog, on_watchdog, 20000, 0);         \
    while (!(cond)) uv_run(&loop, UV_RUN_ONCE);               \
    uv_timer_stop(&watchdog);                                 \
  } while (0)

static void setup(void) {
  static bool curl_ready = false;
  if (!curl_ready) {
    HK_ASSERT_INT_EQ(curl_global_init(CURL_GLOBAL_DEFAULT), CURLE_OK);
    atexit(curl_global_cleanup);
    curl_ready = true;
  }
  signal(SIGPIPE, SIG_IGN); /* the server writes to sockets the client has dropped */
  setenv("no_proxy", "*", 1); /* a proxy from the environment must not see loopback tests */
  HK_ASSERT_INT_EQ(uv_loop_init(&loop), 0);
  uv_timer_init(&loop, &watchdog);
  server_start();
  HK_ASSERT_INT_EQ(hk_client_new(&loop, &client), 0);
}

/* Closes the client (if the test has not), the server and the watchdog, and runs the loop
 * until every handle is closed: a leaked handle fails here. */
static void teardown(void) {
  hk_client_close(client);
  client = NULL;
  server_stop();
  uv_close((uv_handle_t *)&watchdog, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  HK_ASSERT_INT_EQ(uv_loop_close(&loop), 0);
}

static const char *url_for(const char *path) {
  static char url[8][128];
  static int next = 0;
  char *u = url[next++ % 8];
  snprintf(u, sizeof url[0], "http://127.0.0.1:%d%s", srv.port, path);
  return u;
}

/* What a done callback saw, copied out (the result is only valid inside done). */
typedef enum chunk_action_e {
  CHUNK_KEEP,
  CHUNK_ABORT,       /* return non-zero on the first piece */
  CHUNK_REENTER,     /* on the first piece: cancel `victim`, start /hello into `spawned` */
  CHUNK_CLOSE,       /* on the first piece: hk_client_close */
  CHUNK_CANCEL_SELF, /* on the first piece: hk_client_cancel(self), return 0 */
} chunk_action_t;

typedef struct outcome_s {
  int done; /* times done ran */
  hk_client_error_t error;
  long status;
  char message[512];
  char *body;
  size_t body_len;
  size_t header_count;
  char names[32][64], values[32][128];
  double seconds;
  uint64_t done_ns;
  /* on_chunk */
  chunk_action_t chunk_action;
  char chunks[256];
  size_t chunks_len;
  int chunk_calls;
  hk_client_call_t *victim;
  struct outcome_s *spawned;
  bool close_in_done;
  hk_client_call_t *cancel_in_done; /* cancelled from done; then cleared in `peer` */
  struct outcome_s *peer;
  hk_client_call_t *self; /* cancelled from its own done: a no-op */
} outcome_t;

static void on_done(void *data, const hk_client_result_t *r) {
  outcome_t *o = data;
  uv_stop(&loop); /* let RUN_UNTIL look; the poll phase would otherwise block */
  o->done++;
  o->done_ns = uv_hrtime();
  o->error = r->error;
  o->status = r->status;
  HK_ASSERT(r->message != NULL);
  snprintf(o->message, sizeof o->message, "%s", r->message);
  HK_ASSERT(r->body != NULL && r->body[r->body_len] == '\0');
  free(o->body);
  o->body = malloc(r->body_len + 1);
  HK_ASSERT(o->body != NULL);
  memcpy(o->body, r->body, r->body_len + 1);
  o->body_len = r->body_len;
  o->header_count = r->header_count;
  for (size_t i = 0; i < r->header_count && i < 32; i++) {
    snprintf(o->names[i], sizeof o->names[i], "%s", r->headers[i].name);
    snprintf(o->values[i], sizeof o->values[i], "%s", r->headers[i].value);
  }
  o->seconds = r->seconds;
  if (o->self) hk_client_cancel(o->self);
  if (o->cancel_in_done) {
    hk_client_cancel(o->cancel_in_done);
    o->peer->cancel_in_done = NULL; /* that handle is gone */
  }
  if (o->close_in_done) {
    hk_client_close(client);
    client = NULL;
  }
}

static int on_chunk(void *data, const char *bytes, size_t len) {
  outcome_t *o = data;
  HK_ASSERT(o->chunks_len + len < sizeof o->chunks);
  memcpy(o->chunks + o->chunks_len, bytes, len);
  o->chunks_len += len;
  if (o->chunk_calls++ > 0) return 0;
  switch (o->chunk_action) {
    case CHUNK_KEEP: return 0;
    case CHUNK_ABORT: return 1;
    case CHUNK_REENTER: {
      hk_client_cancel(o->victim);
      hk_client_opts_t opts = {.url = url_for("/hello")};
      HK_ASSERT_INT_EQ(hk_client_start(client, &opts, on_done, o->spawned, NULL), 0);
      return 0;
    }
    case CHUNK_CLOSE:
      hk_client_close(client);
      client = NULL;
      return 0;
    case CHUNK_CANCEL_SELF:
      hk_client_cancel(o->self);
      HK_ASSERT_INT_EQ(hk_client_active(client), 0);
      return 0;
  }
  return 0;
}

static const char *header_of(const outcome_t *o, const char *name) {
  for (size_t i = 0; i < o->header_count && i < 32; i++)
    if (strcmp(o->names[i], name) == 0) return o->values[i];
  return NULL;
}

static hk_client_call_t *get(const char *path, outcome_t *o) {
  hk_client_opts_t opts = {.url = url_for(path)};
  hk_client_call_t *call = NULL;
  HK_ASSERT_INT_EQ(hk_client_start(client, &opts, on_done, o, &call), 0);
  HK_ASSERT(call != NULL);
  HK_ASSERT_INT_EQ(o->done, 0); /* never from inside hk_client_start */
  return call;
}

static int count_done(const outcome_t *outs, int n) {
  int done = 0;
  for (int i = 0; i < n; i++) done += outs[i].done;
  return done;
}

/* A loopback port with nothing listening: bound, so no one else takes it, but not listening. */
static int refused_port(int *fd_out) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  HK_ASSERT(fd >= 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  HK_ASSERT_INT_EQ(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
  socklen_t len = sizeof addr;
  HK_ASSERT_INT_EQ(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
  *fd_out = fd;
  return ntohs(addr.sin_port);
}

/* ---- tests -------------------------------------------------------------------------------- */

HK_TEST(get_status_headers_body) {
  setup();
  outcome_t o = {0};
  get("/hello", &o);
  HK_ASSERT_INT_EQ(hk_client_active(client), 1);
  RUN_UNTIL(o.done == 1);
  HK_ASSERT_INT_EQ(o.error, HK_CLIENT_OK);
  HK_ASSERT_STR_EQ(o.message, "");
  HK_ASSERT_INT_EQ(o.status, 200);
  HK_ASSERT_MEM_EQ(o.body, o.body_len, "hello world", 11);
  HK_ASSERT_STR_EQ(header_of(&o, "X-Test-Header"), "Mixed-Case"); /* names as received */
  HK_ASSERT_STR_EQ(header_of(&o, "x-lower"), "yes");
  HK_ASSERT_STR_EQ(header_of(&o, "X-Spaced"), "padded value");
  HK_ASSERT_STR_EQ(header_of(&o, "X-Folded"), "first second");
  HK_ASSERT_STR_EQ(header_of(&o, "Content-Length"), "11");
  HK_ASSERT_STR_EQ(o.names[0], "Content-Length"); /* in order received */
  HK_ASSERT_INT_EQ(o.header_count, 5);
  HK_ASSERT(o.seconds > 0);
  HK_ASSERT_INT_EQ(hk_client_active(client), 0);
  free(o.body);
  teardown();
}

HK_TEST(post_body_and_headers_arrive) {
  setup();
  char body[] = {'a', '\0', 'b', '=', 'c'};
  const char *headers[] = {"X-One: 1", "x-MiXeD:  Value", "X-Empty:"};
  hk_client_opts_t opts = {.method = "POST", .url = url_for("/echo"), .headers = headers,
                           .header_count = 3, .body = body, .body_len = sizeof body};
  outcome_t o = {0};
  HK_ASSERT_INT_EQ(hk_client_start(client, &opts, on_done, &o, NULL), 0);
  body[0] = 'Z'; /* the body was copied */
  RUN_UNTIL(o.done == 1);
  HK_ASSERT_INT_EQ(o.error, HK_CLIENT_OK);
  HK_ASSERT_INT_EQ(o.status, 200);
  HK_ASSERT(strncmp(o.body, "POST /echo HTTP/1.1\r\n", 21) == 0);
  HK_ASSERT(strstr(o.body, "\r\nX-One: 1\r\n") != NULL);
  HK_ASSERT(strstr(o.body, "\r\nx-MiXeD:  Value\r\n") != NULL);
  HK_ASSERT(strstr(o.body, "\r\nX-Empty:\r\n") != NULL); /* sent empty, not dropped */
  HK_ASSERT(strstr(o.body, "\r\nContent-Length: 5\r\n") != NULL);
  HK_ASSERT(strcasestr(o.body, "Expect") == NULL);
  HK_ASSERT(strcasestr(o.body, "Content-Type") == NULL);
  HK_ASSERT(o.body_len > sizeof body);
  HK_ASSERT_MEM_EQ(o.body + o.body_len - sizeof body, sizeof body, "a\0b=c", 5);
  free(o.body);
  teardown();
}

HK_TEST(methods) {
  setup();
  outcome_t put = {0}, del = {0}, empty_post = {0}, head = {0}, typed = {0};
  const char *json[] = {"Content-Type: application/json"};
  hk_client_opts_t opts[] = {
      {.method = "PUT", .url = url_for("/echo"), .body = "abc", .body_len = 3},
      {.method = "DELETE", .url = url_for("/echo")},
      {.method = "POST", .url = url_for("/echo")},
      {.method = "HEAD", .url = url_for("/hello")},
      {.method = "POST", .url = url_for("/echo"), .headers = json, .header_count = 1,
       .body = "{}", .body_len = 2},
  };
  outcome_t *outs[] = {&put, &del, &empty_post, &head, &typed};
  for (int i = 0; i < 5; i++)
    HK_ASSERT_INT_EQ(hk_client_start(client, &opts[i], on_done, outs[i], NULL), 0);
  RUN_UNTIL(put.done && del.done && empty_post.done && head.done && typed.done);
  for (int i = 0; i < 5; i++) {
    HK_ASSERT_INT_EQ(outs[i]->error, HK_CLIENT_OK);
    HK_ASSERT_INT_EQ(outs[i]->status, 200);
  }
  HK_ASSERT(strncmp(put.body, "PUT /echo ", 10) == 0);
  HK_ASSERT(strstr(put.body, "\r\nContent-Length: 3\r\n\r\nabc") != NULL);
  HK_ASSERT(strncmp(del.body, "DELETE /echo ", 13) == 0);
  HK_ASSERT(strcasestr(del.body, "Content-Length") == NULL);
  HK_ASSERT(strncmp(empty_post.body, "POST /echo ", 11) == 0);
  HK_ASSERT(strstr(empty_post.body, "\r\nContent-Length: 0\r\n") != NULL);
  HK_ASSERT_INT_EQ(head.body_len, 0); /* and it did not wait for 11 body bytes */
  HK_ASSERT_STR_EQ(header_of(&head, "Content-Length"), "11");
  HK_ASSERT(strstr(typed.body, "\r\nContent-Type: application/json\r\n") != NULL);
  for (int i = 0; i < 5; i++) free(outs[i]->body);
  teardown();
}

HK_TEST(connection_reuse) {
  setup();
  outcome_t first = {0}, second = {0};
  get("/hello", &first);
  RUN_UNTIL(first.done == 1);
  get("/echo", &second);
  RUN_UNTIL(second.done == 1);
  HK_ASSERT_INT_EQ(first.status, 200);
  HK_ASSERT_INT_EQ(second.status, 200);
  HK_ASSERT_INT_EQ(srv.requests, 2);
  HK_ASSERT_INT_EQ(srv.accepted, 1);
  free(first.body);
  free(second.body);
  teardown();
}

HK_TEST(concurrent_200) {
  setup();
  enum { N = 200 };
  static outcome_t outs[N];
  memset(outs, 0, sizeof outs);
  uint64_t t0 = uv_hrtime();
  for (int i = 0; i < N; i++) get("/delay/200", &outs[i]);
  HK_ASSERT_INT_EQ(hk_client_active(client), N);
  RUN_UNTIL(count_done(outs, N) == N);
  double wall = (double)(uv_hrtime() - t0) / 1e9;
  printf("%d concurrent calls to /delay/200: %.3f s wall (%d connections)\n", N, wall,
         srv.accepted);
  for (int i = 0; i < N; i++) {
    HK_ASSERT_INT_EQ(outs[i].done, 1);
    HK_ASSERT_INT_EQ(outs[i].error, HK_CLIENT_OK);
    HK_ASSERT_INT_EQ(outs[i].status, 200);
    HK_ASSERT_MEM_EQ(outs[i].body, outs[i].body_len, "delayed", 7);
    free(outs[i].body);
  }
  HK_ASSERT(wall < 10.0);
  HK_ASSERT_INT_EQ(hk_client_active(client), 0);
  teardown();
}

HK_TEST(connect_refused) {
  setup();
  int fd;
  int port = refused_port(&fd);
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/", port);
  hk_client_opts_t opts = {.url = url};
  outcome_t o = {0};
  HK_ASSERT_INT_EQ(hk_client_start(client, &opts, on_done, &o, NULL), 0);
  HK_ASSERT_INT_EQ(o.done, 0);
  RUN_UNTIL(o.done == 1);
  HK_ASSERT_INT_EQ(o.error, HK_CLIENT_ERR_CONNECT);
  HK_ASSERT_INT_EQ(o.status, 0);
  HK_ASSERT(o.message[0] != '\0');
  printf("refused: %s\n", o.message);
  close(fd);
  free(o.body);
  teardown();
}

HK_TEST(total_timeout) {
  setup();
  hk_client_opts_t opts = {.url = url_for("/delay/5000"), .timeout_ms = 300};
  outcome_t o = {0};
  uint64_t t0 = uv_hrtime();
  HK_ASSERT_INT_EQ(hk_client_start(client, &opts, on_done, &o, NULL), 0);
  RUN_UNTIL(o.done == 1);
  double elapsed = (double)(o.done_ns - t0) / 1e9;
  printf("timeout after %.3f s: %s\n", elapsed, o.message);
  HK_ASSERT_INT_EQ(o.error, HK_CLIENT_ERR_TIMEOUT);
  HK_ASSERT(elapsed >= 0.29 && elapsed < 2.0);
  HK_ASSERT(o.message[0] != '\0');
  RUN_UNTIL(srv.peer_closed == 1); /* curl dropped the connection */
  free(o.body);
  teardown();
}

HK_TEST(too_large) {
  setup();
  outcome_t declared = {0}, chunked = {0}, exact = {0};
  hk_client_opts_t opts[] = {
      {.url = url_for("/huge/4000000"), .max_response_bytes = 1000000},
      {.url = url_for("/huge-chunked/4000000"), .max_response_bytes = 1000000},
      {.url = url_for("/huge/1000"), .max_response_bytes = 1000},
  };
  outcome_t *outs[] = {&declared, &chunked, &exact};
  for (int i = 0; i < 3; i++)
    HK_ASSERT_INT_EQ(hk_client_start(client, &opts[i], on_done, outs[i], NULL), 0);
  RUN_UNTIL(declared.done && chunked.done && exact.done);
  HK_ASSERT_INT_EQ(declared.error, HK_CLIENT_ERR_TOO_LARGE);
  HK_ASSERT_INT_EQ(chunked.error, HK_CLIENT_ERR_TOO_LARGE);
  HK_ASSERT_STR_EQ(chunked.message, "response body larger than 1000000 bytes");
  HK_ASSERT_INT_EQ(declared.status, 200);
  HK_ASSERT_INT_EQ(exact.error, HK_CLIENT_OK);
  HK_ASSERT_INT_EQ(exact.body_len, 1000);
  for (int i = 0; i < 3; i++) free(outs[i]->body);
  teardown();
}

HK_TEST(on_chunk_pieces) {
  setup();
  outcome_t o = {.chunk_action = CHUNK_KEEP};
  hk_client_opts_t opts = {.url = url_for("/chunks"), .on_chunk = on_chunk};
  HK_ASSERT_INT_EQ(hk_client_start(client, &opts, on_done, &o, NULL), 0);
  RUN_UNTIL(o.done == 1);
  HK_ASSERT_INT_EQ(o.error, HK_CLIENT_OK);
  HK_ASSERT_INT_EQ(o.status, 200);
  HK_ASSERT_MEM_EQ(o.chunks, o.chunks_len, "alphabetagamma", 14);
  HK_ASSERT(o.chunk_calls >= 3); /* the pieces are 20 ms apart */
  HK_ASSERT_INT_EQ(o.body_len, 0);
  free(o.body);
  teardown();
}

HK_TEST(on_chunk_aborts) {
  setup();
  outcome_t o = {.chunk_action = CHUNK_ABORT};
  hk_client_opts_t opts = {.url = url_for("/chunks"), .on_chunk = on_chunk};
  HK_ASSERT_INT_EQ(hk_client_start(client, &opts, on_done, &o, NULL), 0);
  RUN_UNTIL(o.done == 1);
  HK_ASSERT_INT_EQ(o.error, HK_CLIENT_ERR_ABORTED);
  HK_ASSERT_INT_EQ(o.chunk_calls, 1);
  HK_ASSERT_MEM_EQ(o.chunks, o.chunks_len, "alpha", 5);
  RUN_UNTIL(srv.peer_closed == 1);
  free(o.body);
  teardown();
}

HK_TEST(cancel) {
  setup();
  /* Before the loop ever ran. */
  outcome_t early = {0};
  hk_client_cancel(get("/hello", &early));
  HK_ASSERT_INT_EQ(hk_client_active(client), 0);
  /* In flight: the server has the request. */
  outcome_t late = {0};
  hk_client_call_t *call = get("/delay/10000", &late);
  RUN_UNTIL(srv.requests == 1);
  hk_client_cancel(call);
  HK_ASSERT_INT_EQ(hk_client_active(client), 0);
  RUN_UNTIL(srv.peer_closed == 1);
  /* The client still works. */
  outcome_t after = {0};
  get("/hello", &after);
  RUN_UNTIL(after.done == 1);
  HK_ASSERT_INT_EQ(after.status, 200);
  HK_ASSERT_INT_EQ(early.done, 0);
  HK_ASSERT_INT_EQ(late.done, 0);
  free(after.body);
  teardown();
}

HK_TEST(cancel_from_done) {
  setup();
  /* Both fail in curl's first step (a port out of range), in the same timer run, so both
   * CURLMSG_DONE are queued when the first done cancels the other. */
  outcome_t a = {0}, b = {0};
  hk_client_opts_t opts = {.url = "http://127.0.0.1:99999/"};
  hk_client_call_t *call_a = NULL, *call_b = NULL;
  HK_ASSERT_INT_EQ(hk_client_start(client, &opts, on_done, &a, &call_a), 0);
  HK_ASSERT_INT_EQ(hk_client_start(client, &opts, on_done, &b, &call_b), 0);
  a.cancel_in_done = call_b, a.peer = &b;
  b.cancel_in_done = call_a, b.peer = &a;
  a.self = call_a, b.self = call_b;
  RUN_UNTIL(a.done + b.done == 1 && hk_client_active(client) == 0);
  HK_ASSERT_INT_EQ(a.done + b.done, 1);
  HK_ASSERT_INT_EQ((a.done ? a : b).error, HK_CLIENT_ERR_PROTOCOL);
  /* The client still works. */
  outcome_t after = {0};
  get("/hello", &after);
  RUN_UNTIL(after.done == 1);
  HK_ASSERT_INT_EQ(after.status, 200);
  HK_ASSERT_INT_EQ(a.done + b.done, 1);
  free(a.body);
  free(b.body);
  free(after.body);
  teardown();
}

HK_TEST(close_with_calls_in_flight) {
  setup();
  outcome_t outs[5] = {{0}};
  for (int i = 0; i < 5; i++) get("/delay/10000", &outs[i]);
  RUN_UNTIL(srv.requests == 5);
  outcome_t unsent = {0};
  get("/hello", &unsent); /* added, not yet started */
  HK_ASSERT_INT_EQ(hk_client_active(client), 6);
  hk_client_close(client);
  client = NULL;
  RUN_UNTIL(srv.peer_closed == 5);
  for (int i = 0; i < 5; i++) HK_ASSERT_INT_EQ(outs[i].done, 0);
  HK_ASSERT_INT_EQ(unsent.done, 0);
  teardown();
}

HK_TEST(close_before_loop_runs) {
  setup();
  outcome_t o = {0};
  get("/hello", &o);
  hk_client_close(client);
  client = NULL;
  hk_client_close(NULL);
  hk_client_cancel(NULL);
  teardown();
  HK_ASSERT_INT_EQ(o.done, 0);
}

HK_TEST(close_from_done) {
  setup();
  outcome_t slow = {0}, quick = {.close_in_done = true};
  get("/delay/10000", &slow);
  RUN_UNTIL(srv.requests == 1);
  get("/hello", &quick);
  RUN_UNTIL(quick.done == 1);
  HK_ASSERT(client == NULL);
  RUN_UNTIL(srv.peer_closed == 2); /* the in-flight one and the cached one */
  HK_ASSERT_INT_EQ(slow.done, 0);
  HK_ASSERT_INT_EQ(quick.error, HK_CLIENT_OK);
  free(quick.body);
  teardown();
}

HK_TEST(on_chunk_reenters) {
  setup();
  outcome_t victim = {0}, spawned = {0};
  hk_client_call_t *victim_call = get("/delay/10000", &victim);
  RUN_UNTIL(srv.requests == 1);
  outcome_t o = {.chunk_action = CHUNK_REENTER, .victim = victim_call, .spawned = &spawned};
  hk_client_opts_t opts = {.url = url_for("/chunks"), .on_chunk = on_chunk};
  HK_ASSERT_INT_EQ(hk_client_start(client, &opts, on_done, &o, NULL), 0);
  RUN_UNTIL(o.done == 1 && spawned.done == 1);
  HK_ASSERT_INT_EQ(o.error, HK_CLIENT_OK);
  HK_ASSERT_MEM_EQ(o.chunks, o.chunks_len, "alphabetagamma", 14);
  HK_ASSERT_INT_EQ(spawned.error, HK_CLIENT_OK);
  HK_ASSERT_MEM_EQ(spawned.body, spawned.body_len, "hello world", 11);
  HK_ASSERT_INT_EQ(victim.done, 0);
  HK_ASSERT_INT_EQ(hk_client_active(client), 0);
  RUN_UNTIL(srv.peer_closed >= 1); /* the cancelled call's connection */
  free(o.body);
  free(spawned.body);
  teardown();
}

HK_TEST(cancel_from_own_on_chunk) {
  setup();
  outcome_t o = {.chunk_action = CHUNK_CANCEL_SELF};
  hk_client_opts_t opts = {.url = url_for("/chunks"), .on_chunk = on_chunk};
  HK_ASSERT_INT_EQ(hk_client_start(client, &opts, on_done, &o, &o.self), 0);
  RUN_UNTIL(srv.peer_closed == 1);
  HK_ASSERT_INT_EQ(o.done, 0);
  HK_ASSERT_INT_EQ(o.chunk_calls, 1);
  HK_ASSERT_INT_EQ(hk_client_active(client), 0);
  teardown();
}

HK_TEST(close_from_on_chunk) {
  setup();
  outcome_t other = {0};
  get("/delay/10000", &other);
  RUN_UNTIL(srv.requests == 1);
  outcome_t o = {.chunk_action = CHUNK_CLOSE};
  hk_client_opts_t opts = {.url = url_for("/chunks"), .on_chunk = on_chunk};
  HK_ASSERT_INT_EQ(hk_client_start(client, &opts, on_done, &o, NULL), 0);
  RUN_UNTIL(srv.peer_closed == 2);
  HK_ASSERT(client == NULL);
  HK_ASSERT_INT_EQ(o.done, 0);
  HK_ASSERT_INT_EQ(other.done, 0);
  HK_ASSERT_INT_EQ(o.chunk_calls, 1);
  teardown();
}

HK_TEST(bad_requests_einval) {
  setup();
  outcome_t o = {0};
  const char *crlf[] = {"X-Bad: a\r\nInjected: 1"};
  const char *no_colon[] = {"NoColon"};
  const char *bad_name[] = {"Bad Name: x"};
  hk_client_opts_t bad[] = {
      {.url = "ftp://127.0.0.1/x"},
      {.url = "file:///etc/passwd"},
      {.url = "gopher://127.0.0.1/"},
      {.url = "http:/127.0.0.1/"},
      {.url = "httpx://127.0.0.1/"},
      {.url = "http://127.0.0.1/a b"},
      {.url = ""},
      {.url = NULL},
      {.url = url_for("/hello"), .method = "GE T"},
      {.url = url_for("/hello"), .method = ""},
      {.url = url_for("/hello"), .method = "HEAD", .body = "x", .body_len = 1},
      {.url = url_for("/hello"), .headers = crlf, .header_count = 1},
      {.url = url_for("/hello"), .headers = no_colon, .header_count = 1},
      {.url = url_for("/hello"), .headers = bad_name, .header_count = 1},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    hk_client_call_t *call = (hk_client_call_t *)&o; /* must be reset */
    int rc = hk_client_start(client, &bad[i], on_done, &o, &call);
    if (rc != -EINVAL) HK_FAIL_("case %zu (%s): %d", i, bad[i].url ? bad[i].url : "NULL", rc);
    HK_ASSERT(call == NULL);
  }
  HK_ASSERT_INT_EQ(hk_client_active(client), 0);
  /* The scheme is case-insensitive. */
  char upper[128];
  snprintf(upper, sizeof upper, "HTTP://127.0.0.1:%d/hello", srv.port);
  hk_client_opts_t ok = {.url = upper};
  HK_ASSERT_INT_EQ(hk_client_start(client, &ok, on_done, &o, NULL), 0);
  RUN_UNTIL(o.done == 1);
  HK_ASSERT_INT_EQ(o.status, 200);
  free(o.body);
  teardown();
}

HK_TEST(done_never_synchronous) {
  setup();
  int fd;
  int port = refused_port(&fd);
  char refused[64];
  snprintf(refused, sizeof refused, "http://127.0.0.1:%d/", port);
  /* The last two fail in curl's very first step (URL parsing), which a synchronous
   * socket_action inside hk_client_start would report at once. */
  outcome_t a = {0}, b = {0}, c = {0}, d = {0}, e = {0};
  hk_client_opts_t opts[] = {{.url = url_for("/hello")},
                             {.url = refused},
                             {.url = url_for("/hello"), .timeout_ms = 1},
                             {.url = "http://127.0.0.1:99999/"},
                             {.url = "http://"}};
  outcome_t *outs[] = {&a, &b, &c, &d, &e};
  for (int i = 0; i < 5; i++) {
    HK_ASSERT_INT_EQ(hk_client_start(client, &opts[i], on_done, outs[i], NULL), 0);
    HK_ASSERT_INT_EQ(outs[i]->done, 0);
  }
  RUN_UNTIL(a.done && b.done && c.done && d.done && e.done);
  for (int i = 0; i < 5; i++) HK_ASSERT_INT_EQ(outs[i]->done, 1);
  HK_ASSERT_INT_EQ(a.error, HK_CLIENT_OK);
  HK_ASSERT_INT_EQ(b.error, HK_CLIENT_ERR_CONNECT);
  HK_ASSERT_INT_EQ(d.error, HK_CLIENT_ERR_PROTOCOL);
  HK_ASSERT_INT_EQ(e.error, HK_CLIENT_ERR_PROTOCOL);
  printf("port 99999: %s\nno host: %s\n", d.message, e.message);
  close(fd);
  for (int i = 0; i < 5; i++) free(outs[i]->body);
  teardown();
}

HK_TEST(interim_response_headers_reset) {
  setup();
  outcome_t o = {0};
  get("/continue", &o);
  RUN_UNTIL(o.done == 1);
  HK_ASSERT_INT_EQ(o.error, HK_CLIENT_OK);
  HK_ASSERT_INT_EQ(o.status, 200);
  HK_ASSERT(header_of(&o, "X-Interim") == NULL);
  HK_ASSERT_STR_EQ(header_of(&o, "X-Final"), "yes");
  HK_ASSERT_MEM_EQ(o.body, o.body_len, "ok", 2);
  free(o.body);
  teardown();
}

HK_TEST(protocol_errors) {
  setup();
  outcome_t closed = {0}, garbage = {0};
  get("/close", &closed);
  get("/garbage", &garbage);
  RUN_UNTIL(closed.done && garbage.done);
  printf("closed: %s\ngarbage: %s\n", closed.message, garbage.message);
  HK_ASSERT_INT_EQ(closed.error, HK_CLIENT_ERR_PROTOCOL);
  HK_ASSERT_INT_EQ(closed.status, 0);
  HK_ASSERT(closed.message[0] != '\0');
  HK_ASSERT_INT_EQ(garbage.error, HK_CLIENT_ERR_PROTOCOL);
  HK_ASSERT(garbage.message[0] != '\0');
  free(closed.body);
  free(garbage.body);
  teardown();
}

HK_TEST_MAIN(HK_CASE(get_status_headers_body), HK_CASE(post_body_and_headers_arrive),
             HK_CASE(methods), HK_CASE(connection_reuse), HK_CASE(concurrent_200),
             HK_CASE(connect_refused), HK_CASE(total_timeout), HK_CASE(too_large),
             HK_CASE(on_chunk_pieces), HK_CASE(on_chunk_aborts), HK_CASE(cancel), HK_CASE(cancel_from_done),
             HK_CASE(close_with_calls_in_flight), HK_CASE(close_before_loop_runs),
             HK_CASE(close_from_done), HK_CASE(on_chunk_reenters), HK_CASE(cancel_from_own_on_chunk),
             HK_CASE(close_from_on_chunk),
             HK_CASE(bad_requests_einval), HK_CASE(done_never_synchronous),
             HK_CASE(interim_response_headers_reset), HK_CASE(protocol_errors))
