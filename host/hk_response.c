/* hk_response: a response as bytes — the status line and headers the core always sets
 * (Date, X-Request-ID, Content-Type, Content-Length or chunked framing, Connection), gzip
 * (one member per body, level 1), and the plan for a body produced in slices. Knows nothing of
 * sockets: hk_conn writes what it builds. Entry point: hk_response_serialize. */
#include "hk_response.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hk_http.h"

z_stream *hk_gzip_new(void) {
  z_stream *z = calloc(1, sizeof *z);
  /* windowBits 15 + 16: a gzip wrapper; level 1: scrapes are frequent, CPU matters more. */
  if (z != NULL && deflateInit2(z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    free(z);
    z = NULL;
  }
  return z;
}

void hk_gzip_free(z_stream *z) {
  if (z == NULL) return;
  deflateEnd(z);
  free(z);
}

/* Compresses len bytes onto out; finish ends the gzip member. */
int hk_gzip_append(z_stream *z, const char *data, size_t len, bool finish, hk_buf_t *out) {
  z->next_in = (Bytef *)data;
  z->avail_in = (uInt)len;
  int zrc;
  do {
    int rc = hk_buf_reserve(out, 16384);
    if (rc != 0) return rc;
    z->next_out = (Bytef *)out->data + out->len;
    z->avail_out = (uInt)(out->cap - out->len - 1);
    size_t before = z->avail_out;
    zrc = deflate(z, finish ? Z_FINISH : Z_NO_FLUSH);
    if (zrc == Z_STREAM_ERROR) return -EIO;
    out->len += before - z->avail_out;
    out->data[out->len] = '\0';
  } while (z->avail_out == 0 || (finish && zrc != Z_STREAM_END));
  return 0;
}

/* A response body already in memory, handed out in slices. */
typedef struct buffer_stream_s {
  hk_buf_t body;
  size_t offset;
} buffer_stream_t;

static int buffer_produce(void *state, hk_buf_t *out, bool *done) {
  buffer_stream_t *bs = state;
  size_t n = bs->body.len - bs->offset < HK_RESPONSE_SLICE ? bs->body.len - bs->offset : HK_RESPONSE_SLICE;
  int rc = hk_buf_append(out, bs->body.data + bs->offset, n);
  if (rc == 0) bs->offset += n;
  *done = bs->offset == bs->body.len;
  return rc;
}

static void buffer_release(void *state) {
  buffer_stream_t *bs = state;
  hk_buf_free(&bs->body);
  free(bs);
}

/* Moves res->body into a stream of slices (res->body is left empty). */
static int buffer_stream_start(hk_response_t *res) {
  buffer_stream_t *bs = calloc(1, sizeof *bs);
  if (bs == NULL) return -ENOMEM;
  bs->body = res->body;
  hk_buf_init(&res->body);
  res->stream = (hk_body_stream_t){buffer_produce, buffer_release, bs, true}; /* gzip off the loop */
  return 0;
}

/* Decimal digits of v appended (no printf: this runs for every response). */
static int append_decimal(hk_buf_t *out, size_t v) {
  char digits[24];
  size_t n = sizeof digits;
  do {
    digits[--n] = (char)('0' + v % 10);
    v /= 10;
  } while (v > 0);
  return hk_buf_append(out, digits + n, sizeof digits - n);
}

int hk_response_append_head_start(hk_buf_t *out, int status, const char *date, const char *request_id,
                                  const char *content_type) {
  int rc = hk_buf_append(out, "HTTP/1.1 ", 9);
  if (rc == 0) rc = append_decimal(out, (size_t)status);
  if (rc == 0) rc = hk_buf_append_char(out, ' ');
  if (rc == 0) rc = hk_buf_append_str(out, hk_http_reason(status));
  if (rc == 0) rc = hk_buf_append(out, "\r\nDate: ", 8);
  if (rc == 0) rc = hk_buf_append_str(out, date);
  if (rc == 0) rc = hk_buf_append(out, "\r\nX-Request-ID: ", 16);
  if (rc == 0) rc = hk_buf_append_str(out, request_id);
  if (rc == 0) rc = hk_buf_append(out, "\r\n", 2);
  if (rc == 0 && content_type != NULL && content_type[0] != '\0') {
    rc = hk_buf_append(out, "Content-Type: ", 14);
    if (rc == 0) rc = hk_buf_append_str(out, content_type);
    if (rc == 0) rc = hk_buf_append(out, "\r\n", 2);
  }
  return rc;
}

int hk_response_serialize(hk_buf_t *out, hk_request_t *req, const char *date, bool keep_alive,
                          hk_response_plan_t *plan) {
  memset(plan, 0, sizeof *plan);
  hk_response_t *res = &req->response;
  const hk_http_request_t *http = req->http;
  bool head = http && http->method_len == 4 && memcmp(http->method, "HEAD", 4) == 0;
  bool no_body = res->status == 204 || res->status == 304 || (res->status >= 100 && res->status < 200);
  /* A body to compress goes out in slices like any streamed one, so compressing a large body
   * never holds the loop for more than one slice. */
  if (res->gzip && res->stream.produce == NULL && !no_body && res->body.len > 0 &&
      buffer_stream_start(res) != 0)
    return -ENOMEM;
  /* HEAD gets the headers GET would get (chunked, no length), but the body is not produced. */
  bool streamed = res->stream.produce != NULL && !no_body;
  bool stream = streamed && !head;
  bool chunked = streamed && http && http->version_minor == 1;
  if (streamed && !chunked) keep_alive = false; /* HTTP/1.0: the body ends with the connection */
  int rc = hk_buf_reserve(out, 320 + res->headers.len + res->body.len);
  if (rc != 0) return rc;
  /* Reserved above: these appends do not fail. */
  hk_response_append_head_start(out, res->status, date, req->id, no_body ? NULL : res->content_type);
  if (res->gzip && !no_body) hk_buf_append_str(out, "Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n");
  if (chunked) hk_buf_append_str(out, "Transfer-Encoding: chunked\r\n");
  else if (!no_body && !streamed) {
    hk_buf_append(out, "Content-Length: ", 16);
    append_decimal(out, res->body.len);
    hk_buf_append(out, "\r\n", 2);
  }
  if (!keep_alive) hk_buf_append_str(out, "Connection: close\r\n");
  else if (http && http->version_minor == 0) hk_buf_append_str(out, "Connection: keep-alive\r\n");
  hk_buf_append(out, res->headers.data ? res->headers.data : "", res->headers.len);
  hk_buf_append(out, "\r\n", 2);
  if (!head && !no_body && !stream) hk_buf_append(out, res->body.data ? res->body.data : "", res->body.len);
  plan->keep_alive = keep_alive;
  if (stream) {
    if (res->gzip && (plan->gzip = hk_gzip_new()) == NULL) return -ENOMEM;
    plan->stream = res->stream;
    plan->chunked = chunked;
  } else if (res->stream.release) {
    res->stream.release(res->stream.state); /* HEAD, 204, …: the body is never produced */
  }
  memset(&res->stream, 0, sizeof res->stream);
  return 0;
}

