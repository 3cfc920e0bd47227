/* ceiling: the benchmark's do-nothing HTTP/1.1 server, the upper bound that tests/bench/run.sh
 * measures build/hancock against. It does the least an HTTP/1.1 server can do on libuv and
 * still satisfy wrk: no router, no Lua, no JSON, no logging.
 *
 *   cc -O2 -o ceiling tests/bench/ceiling.c $(pkg-config --cflags --libs libuv)
 *   ./ceiling PORT          listens on 127.0.0.1:PORT until killed
 *
 * Every request, whatever its method or path, gets the same 200 response, byte for byte the size
 * and shape of the host's answer to POST /v1/chat: Date, X-Request-ID, Content-Type and
 * Content-Length headers and a small JSON body, with a request id that changes per request.
 * Connections are kept alive. Parsing is minimal: a request is its header block up to the first
 * "\r\n\r\n" plus the Content-Length bytes that follow (the header is found case-insensitively);
 * the body is skipped as it arrives and never buffered. Several requests in one read (pipelining)
 * and a request split over several reads both work; the responses to everything that one read
 * completed go out in a single write. Not supported, because wrk never sends them: chunked
 * request bodies, "Connection: close" and HTTP/1.0. A header block larger than the connection
 * buffer, a malformed Content-Length or a chunked body closes the connection. */
#define _POSIX_C_SOURCE 200809L /* gmtime_r, and the POSIX types uv.h uses, under -std=c11 */

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

enum {
  HEADER_MAX = 16 * 1024,    /* the largest header block a connection buffers */
  WRITE_QUEUE_MAX = 1 << 20, /* stop reading while this many response bytes are unsent */
  RESPONSE_MAX = 512,
};

#define ID_FORMAT   "%08x-0000-4000-8000-%012llx" /* 36 characters, like the host's UUIDs */
#define BODY_FORMAT "{\"mode\":\"soc\",\"request_id\":\"%s\",\"response\":\"ok\"}"
#define HEAD_FORMAT                                                                                \
  "HTTP/1.1 200 OK\r\nDate: %s\r\nX-Request-ID: %s\r\nContent-Type: application/json\r\n"          \
  "Content-Length: %d\r\n\r\n"

typedef struct conn_s {
  uv_tcp_t tcp;
  char in[HEADER_MAX]; /* the unparsed tail of the input: at most one partial header block */
  size_t in_len;
  uint64_t body_left; /* bytes of the current request's body still to skip */
  int in_body;        /* the header block is parsed; answer once body_left reaches 0 */
  char *out;          /* responses completed by the current read, written at its end */
  size_t out_len;
  size_t out_cap;
  int reading;
} conn_t;

typedef struct write_s {
  uv_write_t req;
  uv_buf_t buf;
} write_t;

static uv_tcp_t server;
static uint64_t request_count;
static uint32_t process_tag;
static time_t date_second = -1;
static char date_header[64]; /* the HTTP date of date_second */

/* The offset of the first "\r\n\r\n" in data, or -1. */
static long find_header_end(const char *data, size_t len) {
  for (size_t i = 0; i + 3 < len; i++) {
    const char *cr = memchr(data + i, '\r', len - i - 3);
    if (cr == NULL) {
      return -1;
    }
    i = (size_t)(cr - data);
    if (cr[1] == '\n' && cr[2] == '\r' && cr[3] == '\n') {
      return (long)i;
    }
  }
  return -1;
}

static int lower(int ch) {
  return ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch;
}

/* Whether line (of length len) starts with the lower-case name, compared case-insensitively. */
static int starts_with_nocase(const char *line, size_t len, const char *name) {
  size_t n = strlen(name);
  if (len < n) {
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    if (lower((unsigned char)line[i]) != name[i]) {
      return 0;
    }
  }
  return 1;
}

/* Reads Content-Length out of a header block (request line included, final CRLFCRLF excluded).
 * Returns 0 and sets *length (0 when the header is absent), or -1 for a malformed value or a
 * chunked body. */
static int parse_content_length(const char *head, size_t len, uint64_t *length) {
  static const char cl[] = "content-length:";
  static const char te[] = "transfer-encoding:";
  *length = 0;
  size_t pos = 0;
  while (pos < len) {
    const char *line = head + pos;
    const char *eol = memchr(line, '\n', len - pos);
    size_t line_len = eol != NULL ? (size_t)(eol - line) : len - pos;
    pos += line_len + 1;
    if (starts_with_nocase(line, line_len, te)) {
      return -1;
    }
    if (!starts_with_nocase(line, line_len, cl)) {
      continue;
    }
    size_t i = sizeof cl - 1;
    while (i < line_len && (line[i] == ' ' || line[i] == '\t')) {
      i++;
    }
    if (i == line_len || line[i] < '0' || line[i] > '9') {
      return -1;
    }
    uint64_t value = 0;
    for (; i < line_len && line[i] >= '0' && line[i] <= '9'; i++) {
      if (value > (UINT64_MAX - 9) / 10) {
        return -1;
      }
      value = value * 10 + (uint64_t)(line[i] - '0');
    }
    while (i < line_len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) {
      i++;
    }
    if (i != line_len) {
      return -1;
    }
    *length = value;
  }
  return 0;
}

/* The Date header's value, formatted again only when the second changes. */
static const char *http_date(void) {
  time_t now = time(NULL);
  if (now != date_second) {
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date_header, sizeof date_header, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    date_second = now;
  }
  return date_header;
}

/* Appends one response to c->out. */
static int append_response(conn_t *c) {
  if (c->out_cap - c->out_len < RESPONSE_MAX) {
    size_t cap = c->out_cap == 0 ? 4 * RESPONSE_MAX : 2 * c->out_cap;
    char *out = realloc(c->out, cap);
    if (out == NULL) {
      return -1;
    }
    c->out = out;
    c->out_cap = cap;
  }
  char id[40];
  char body[128];
  snprintf(id, sizeof id, ID_FORMAT, process_tag,
           (unsigned long long)(++request_count & 0xffffffffffffULL));
  int body_len = snprintf(body, sizeof body, BODY_FORMAT, id);
  int n = snprintf(c->out + c->out_len, RESPONSE_MAX, HEAD_FORMAT "%s", http_date(), id, body_len,
                   body);
  if (n < 0 || n >= RESPONSE_MAX) {
    return -1;
  }
  c->out_len += (size_t)n;
  return 0;
}

/* Consumes as many whole requests from c->in as it holds, queueing a response for each, and
 * keeps the unparsed tail at the front of c->in. Returns -1 when the connection must close. */
static int parse_input(conn_t *c) {
  size_t pos = 0;
  for (;;) {
    if (c->in_body) {
      size_t avail = c->in_len - pos;
      size_t skip = c->body_left < avail ? (size_t)c->body_left : avail;
      pos += skip;
      c->body_left -= skip;
      if (c->body_left > 0) {
        break;
      }
      c->in_body = 0;
      if (append_response(c) != 0) {
        return -1;
      }
    }
    long end = find_header_end(c->in + pos, c->in_len - pos);
    if (end < 0) {
      break;
    }
    if (parse_content_length(c->in + pos, (size_t)end, &c->body_left) != 0) {
      return -1;
    }
    pos += (size_t)end + 4;
    c->in_body = 1;
  }
  c->in_len -= pos;
  memmove(c->in, c->in + pos, c->in_len);
  if (!c->in_body && c->in_len == sizeof c->in) {
    return -1; /* a header block that does not fit */
  }
  return 0;
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  conn_t *c = handle->data;
  (void)suggested;
  *buf = uv_buf_init(c->in + c->in_len, (unsigned)(sizeof c->in - c->in_len));
}

static void on_close(uv_handle_t *handle) {
  conn_t *c = handle->data;
  free(c->out);
  free(c);
}

static void conn_close(conn_t *c) {
  if (!uv_is_closing((uv_handle_t *)&c->tcp)) {
    uv_close((uv_handle_t *)&c->tcp, on_close);
  }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void on_write(uv_write_t *req, int status) {
  write_t *w = (write_t *)req;
  conn_t *c = req->handle->data;
  free(w->buf.base);
  free(w);
  if (status != 0) {
    conn_close(c); /* also reached, with UV_ECANCELED, while the connection is closing */
    return;
  }
  if (!c->reading && !uv_is_closing((uv_handle_t *)&c->tcp) &&
      uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) < WRITE_QUEUE_MAX) {
    c->reading = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0;
  }
}

/* Hands c->out to a write request. */
static int flush_output(conn_t *c) {
  write_t *w = malloc(sizeof *w);
  if (w == NULL) {
    return -1;
  }
  w->buf = uv_buf_init(c->out, (unsigned)c->out_len);
  c->out = NULL;
  c->out_len = 0;
  c->out_cap = 0;
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &w->buf, 1, on_write) != 0) {
    free(w->buf.base);
    free(w);
    return -1;
  }
  if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) >= WRITE_QUEUE_MAX) {
    uv_read_stop((uv_stream_t *)&c->tcp); /* the client is not reading its responses */
    c->reading = 0;
  }
  return 0;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = stream->data;
  (void)buf;
  if (nread < 0) {
    conn_close(c); /* EOF or a socket error */
    return;
  }
  c->in_len += (size_t)nread;
  if (parse_input(c) != 0 || (c->out_len > 0 && flush_output(c) != 0)) {
    conn_close(c);
  }
}

static void on_connection(uv_stream_t *listener, int status) {
  if (status != 0) {
    fprintf(stderr, "ceiling: accept: %s\n", uv_strerror(status));
    return;
  }
  conn_t *c = calloc(1, sizeof *c);
  if (c == NULL) {
    return;
  }
  uv_tcp_init(listener->loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  c->reading = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0;
  if (!c->reading) {
    conn_close(c);
  }
}

int main(int argc, char **argv) {
  char *end = NULL;
  long port = argc == 2 ? strtol(argv[1], &end, 10) : 0;
  if (argc != 2 || *argv[1] == '\0' || *end != '\0' || port < 1 || port > 65535) {
    fprintf(stderr, "usage: %s PORT\n", argv[0]);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN); /* a peer that went away is seen as a write error instead */

  uv_loop_t *loop = uv_default_loop();
  process_tag = (uint32_t)uv_os_getpid() ^ (uint32_t)uv_hrtime();
  struct sockaddr_in addr;
  int rc = uv_ip4_addr("127.0.0.1", (int)port, &addr);
  if (rc == 0) {
    rc = uv_tcp_init(loop, &server);
  }
  if (rc == 0) {
    rc = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
  }
  if (rc == 0) {
    rc = uv_listen((uv_stream_t *)&server, 1024, on_connection);
  }
  if (rc != 0) {
    fprintf(stderr, "ceiling: cannot listen on 127.0.0.1:%ld: %s\n", port, uv_strerror(rc));
    return 1;
  }
  fprintf(stderr, "ceiling: listening on 127.0.0.1:%ld\n", port);
  return uv_run(loop, UV_RUN_DEFAULT);
}
