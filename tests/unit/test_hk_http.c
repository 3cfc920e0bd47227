/* Unit tests for hk_http: request framing and the strictness rules, fed raw bytes directly. */
#include <pthread.h>

#include "hk_http.h"
#include "hk_test.h"

typedef struct parsed_s {
  hk_http_event_t event;
  size_t consumed;
  int status;
} parsed_t;

static hk_http_parser_t parser;

/* Feeds the whole input at once. */
static parsed_t parse_all(const char *input, uint64_t max_body) {
  hk_http_parser_init(&parser, max_body);
  parsed_t p = {0};
  p.event = hk_http_parse(&parser, input, strlen(input), &p.consumed);
  if (p.event == HK_HTTP_ERROR) p.status = parser.error_status;
  return p;
}

/* Feeds one byte at a time, keeping unconsumed bytes like the server does. */
static parsed_t parse_bytewise(const char *input, uint64_t max_body) {
  hk_http_parser_init(&parser, max_body);
  char buf[65536];
  size_t have = 0, total = strlen(input);
  parsed_t p = {0};
  for (size_t i = 0; i < total; i++) {
    buf[have++] = input[i];
    size_t used = 0;
    p.event = hk_http_parse(&parser, buf, have, &used);
    memmove(buf, buf + used, have - used);
    have -= used;
    p.consumed += used;
    if (p.event == HK_HTTP_CONTINUE) p.event = hk_http_parse(&parser, buf, have, &used), have -= used;
    if (p.event != HK_HTTP_NEED_MORE) break;
  }
  if (p.event == HK_HTTP_ERROR) p.status = parser.error_status;
  return p;
}

static void expect_error(const char *input, int status) {
  parsed_t p = parse_all(input, 1 << 20);
  if (p.event != HK_HTTP_ERROR) HK_FAIL_("expected %d for %s, got event %d", status, input, p.event);
  HK_ASSERT_INT_EQ(p.status, status);
  hk_http_parser_free(&parser);
  p = parse_bytewise(input, 1 << 20);
  if (p.event != HK_HTTP_ERROR) HK_FAIL_("bytewise: expected %d for %s, got event %d", status, input, p.event);
  HK_ASSERT_INT_EQ(p.status, status);
  hk_http_parser_free(&parser);
}

/* Like expect_error with a body limit, whole and byte by byte. */
static void expect_error_limit(const char *input, uint64_t max_body, int status) {
  parsed_t p = parse_all(input, max_body);
  if (p.event != HK_HTTP_ERROR) HK_FAIL_("expected %d, got event %d", status, p.event);
  HK_ASSERT_INT_EQ(p.status, status);
  hk_http_parser_free(&parser);
  p = parse_bytewise(input, max_body);
  if (p.event != HK_HTTP_ERROR) HK_FAIL_("bytewise: expected %d, got event %d", status, p.event);
  HK_ASSERT_INT_EQ(p.status, status);
  hk_http_parser_free(&parser);
}

/* Parses input whole and byte by byte; both must give one request with body `body`. */
static void expect_body(const char *input, uint64_t max_body, const char *body) {
  parsed_t p = parse_all(input, max_body);
  if (p.event != HK_HTTP_REQUEST)
    HK_FAIL_("expected a request, got event %d (status %d)", p.event, p.status);
  HK_ASSERT_MEM_EQ(parser.request.body.data, parser.request.body.len, body, strlen(body));
  hk_http_parser_free(&parser);
  p = parse_bytewise(input, max_body);
  if (p.event != HK_HTTP_REQUEST)
    HK_FAIL_("bytewise: expected a request, got event %d (status %d)", p.event, p.status);
  HK_ASSERT_MEM_EQ(parser.request.body.data, parser.request.body.len, body, strlen(body));
  hk_http_parser_free(&parser);
}

#define CHUNKED_HEAD "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"

HK_TEST(simple_get) {
  const char *in = "GET /v1/items/7?x=1 HTTP/1.1\r\nHost: a\r\nX-Thing:  spaced value \r\n\r\n";
  parsed_t p = parse_all(in, 1024);
  HK_ASSERT_INT_EQ(p.event, HK_HTTP_REQUEST);
  HK_ASSERT_INT_EQ(p.consumed, strlen(in));
  hk_http_request_t *r = &parser.request;
  HK_ASSERT_MEM_EQ(r->method, r->method_len, "GET", 3);
  HK_ASSERT_MEM_EQ(r->path, r->path_len, "/v1/items/7", 11);
  HK_ASSERT_MEM_EQ(r->query, r->query_len, "x=1", 3);
  HK_ASSERT_INT_EQ(r->version_minor, 1);
  HK_ASSERT(r->keep_alive);
  const hk_http_header_t *h = hk_http_header_find(r, "x-thing");
  HK_ASSERT(h != NULL);
  HK_ASSERT_MEM_EQ(h->value, h->value_len, "spaced value", 12);
  hk_http_parser_free(&parser);
}

HK_TEST(bytewise_equals_whole) {
  const char *in = "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
  parsed_t p = parse_bytewise(in, 1024);
  HK_ASSERT_INT_EQ(p.event, HK_HTTP_REQUEST);
  HK_ASSERT_MEM_EQ(parser.request.body.data, parser.request.body.len, "hello", 5);
  hk_http_parser_free(&parser);
}

HK_TEST(chunked_body) {
  const char *in = "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
  parsed_t p = parse_bytewise(in, 1024);
  HK_ASSERT_INT_EQ(p.event, HK_HTTP_REQUEST);
  HK_ASSERT_MEM_EQ(parser.request.body.data, parser.request.body.len, "hello world", 11);
  HK_ASSERT(parser.request.chunked);
  hk_http_parser_free(&parser);
}

HK_TEST(pipelined_requests_one_at_a_time) {
  const char *in = "GET /a HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhiGET /c HTTP/1.1\r\nHost: a\r\n\r\n";
  hk_http_parser_init(&parser, 1024);
  size_t off = 0, used = 0, total = strlen(in);
  const char *paths[] = {"/a", "/b", "/c"};
  for (int i = 0; i < 3; i++) {
    HK_ASSERT_INT_EQ(hk_http_parse(&parser, in + off, total - off, &used), HK_HTTP_REQUEST);
    off += used;
    HK_ASSERT_MEM_EQ(parser.request.path, parser.request.path_len, paths[i], 2);
    /* Until next() the parser holds its request and consumes nothing more. */
    HK_ASSERT_INT_EQ(hk_http_parse(&parser, in + off, total - off, &used), HK_HTTP_REQUEST);
    HK_ASSERT_INT_EQ(used, 0);
    hk_http_parser_next(&parser);
  }
  HK_ASSERT_INT_EQ(off, total);
  HK_ASSERT_INT_EQ(hk_http_parse(&parser, in + off, 0, &used), HK_HTTP_NEED_MORE);
  hk_http_parser_free(&parser);
}

HK_TEST(http10_keep_alive_rules) {
  parsed_t p = parse_all("GET / HTTP/1.0\r\n\r\n", 0);
  HK_ASSERT_INT_EQ(p.event, HK_HTTP_REQUEST);
  HK_ASSERT(!parser.request.keep_alive);
  hk_http_parser_free(&parser);
  p = parse_all("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 0);
  HK_ASSERT(parser.request.keep_alive);
  hk_http_parser_free(&parser);
  p = parse_all("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n", 0);
  HK_ASSERT(!parser.request.keep_alive);
  hk_http_parser_free(&parser);
}

HK_TEST(expect_continue) {
  const char *head = "POST /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
  hk_http_parser_init(&parser, 1024);
  size_t used = 0;
  HK_ASSERT_INT_EQ(hk_http_parse(&parser, head, strlen(head), &used), HK_HTTP_CONTINUE);
  HK_ASSERT_INT_EQ(used, strlen(head));
  HK_ASSERT_INT_EQ(hk_http_parse(&parser, "abc", 3, &used), HK_HTTP_REQUEST);
  HK_ASSERT_MEM_EQ(parser.request.body.data, parser.request.body.len, "abc", 3);
  hk_http_parser_free(&parser);
  expect_error("POST /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 99999999\r\n\r\n", 413);
  expect_error("POST /x HTTP/1.1\r\nHost: a\r\nExpect: magic\r\nContent-Length: 1\r\n\r\n", 417);
}

HK_TEST(absolute_form_target) {
  parsed_t p = parse_all("GET http://example.test/v1/x?q=1 HTTP/1.1\r\nHost: example.test\r\n\r\n", 0);
  HK_ASSERT_INT_EQ(p.event, HK_HTTP_REQUEST);
  HK_ASSERT_MEM_EQ(parser.request.path, parser.request.path_len, "/v1/x", 5);
  hk_http_parser_free(&parser);
}

HK_TEST(leading_empty_line_ignored) {
  parsed_t p = parse_all("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 0);
  HK_ASSERT_INT_EQ(p.event, HK_HTTP_REQUEST);
  hk_http_parser_free(&parser);
}

HK_TEST(smuggling_shapes_rejected) {
  expect_error("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
  expect_error("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400);
  expect_error("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", 400);
  expect_error("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 400);
  expect_error("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
  expect_error("GET / HTTP/1.1\nHost: a\n\n", 400);                     /* bare LF */
  expect_error("GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", 400);         /* bare CR */
  expect_error("GET / HTTP/1.1\r\nHost: a\r\n\rX\r\n\r\n", 400);
  expect_error("GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n folded\r\n\r\n", 400); /* obs-fold */
  expect_error("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400);
  expect_error("GET / HTTP/1.1\r\nHo st: a\r\n\r\n", 400);
  expect_error("GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400);
  expect_error("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 400);
}

HK_TEST(versions_and_host) {
  expect_error("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400);
  expect_error("GET / HTTP/1.2\r\nHost: a\r\n\r\n", 400);
  expect_error("GET / HTTP/0.9\r\n\r\n", 400);
  expect_error("GET / RTSP/1.0\r\nHost: a\r\n\r\n", 400);
  expect_error("GET /\r\n\r\n", 400);
  expect_error("GET / HTTP/1.1\r\n\r\n", 400);
  expect_error("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
  expect_error("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  expect_error("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  expect_error("GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", 400);
}

HK_TEST(too_many_headers) {
  hk_buf_t in = HK_BUF_INIT;
  hk_buf_append_str(&in, "GET / HTTP/1.1\r\nHost: a\r\n");
  for (int i = 0; i < 99; i++) hk_buf_appendf(&in, "X-%d: v\r\n", i);
  hk_buf_append_str(&in, "\r\n");
  parsed_t p = parse_all(in.data, 0); /* 100 headers: fine */
  HK_ASSERT_INT_EQ(p.event, HK_HTTP_REQUEST);
  hk_http_parser_free(&parser);
  in.len -= 2;
  hk_buf_append_str(&in, "X-last: v\r\n\r\n");
  expect_error(in.data, 400);
  hk_buf_free(&in);
}

HK_TEST(size_limits) {
  hk_buf_t in = HK_BUF_INIT;
  hk_buf_append_str(&in, "GET /");
  for (int i = 0; i < HK_HTTP_MAX_REQUEST_LINE; i++) hk_buf_append_char(&in, 'a');
  hk_buf_append_str(&in, " HTTP/1.1\r\nHost: a\r\n\r\n");
  expect_error(in.data, 414);
  hk_buf_reset(&in);
  hk_buf_append_str(&in, "GET / HTTP/1.1\r\nHost: a\r\n");
  for (int i = 0; i < 40; i++) {
    hk_buf_append_str(&in, "X-Big: ");
    for (int k = 0; k < 500; k++) hk_buf_append_char(&in, 'v');
    hk_buf_append_str(&in, "\r\n");
  }
  hk_buf_append_str(&in, "\r\n");
  expect_error(in.data, 431);
  hk_buf_free(&in);
  /* An incomplete oversized head is refused before its end arrives. */
  hk_http_parser_init(&parser, 0);
  char big[HK_HTTP_MAX_HEAD + 100];
  memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
  memset(big + 19, 'a', sizeof big - 19);
  size_t used;
  HK_ASSERT_INT_EQ(hk_http_parse(&parser, big, sizeof big, &used), HK_HTTP_ERROR);
  HK_ASSERT_INT_EQ(parser.error_status, 431);
  hk_http_parser_free(&parser);
}

HK_TEST(body_limits) {
  parsed_t early = parse_all("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world", 10);
  HK_ASSERT_INT_EQ(early.event, HK_HTTP_ERROR);
  HK_ASSERT_INT_EQ(early.status, 413);
  HK_ASSERT_INT_EQ(early.consumed, 0); /* refused from the head alone */
  hk_http_parser_free(&parser);
  hk_http_parser_init(&parser, 10);
  const char *in = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n";
  size_t used;
  HK_ASSERT_INT_EQ(hk_http_parse(&parser, in, strlen(in), &used), HK_HTTP_ERROR);
  HK_ASSERT_INT_EQ(parser.error_status, 413);
  hk_http_parser_free(&parser);
  parsed_t p = parse_all("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789", 10);
  HK_ASSERT_INT_EQ(p.event, HK_HTTP_REQUEST);
  hk_http_parser_free(&parser);
}

HK_TEST(bad_chunk_lines) {
  expect_error("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400);
  expect_error("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400);
  expect_error("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a\x01=b\r\nhello\r\n0\r\n\r\n", 400);
  expect_error("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n", 400);
  expect_error("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nhello\r\n0\r\n\r\n", 400);
  expect_error("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\rX\r\nhello\r\n0\r\n\r\n", 400);
  expect_error("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", 400);
  expect_error("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n", 400);
}

/* Shapes llhttp 8.1.0 lets through in chunked bodies and trailers (found by fuzz_http). */
HK_TEST(chunked_framing_is_strict) {
  const char *head = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
  const char *bodies[] = {
      "3\r\nabcXY0\r\n\r\n",     /* bytes after chunk data not CRLF */
      "3\rXabc\r\n0\r\n\r\n",   /* CR + anything ending the size line */
      "0\r\n\n",                 /* trailer section ended by a bare LF */
      "0\r\n\rX",                /* final CRLF is CR + anything */
      "0\r\nX: y\r\n z\r\n\r\n",  /* obs-fold in a trailer */
      "0\r\nX : y\r\n\r\n",       /* space before a trailer colon */
      "0;;x\r\n\r\n",            /* empty extension name */
  };
  for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
    char in[256];
    snprintf(in, sizeof in, "%s%s", head, bodies[i]);
    expect_error(in, 400);
  }
  /* Well-formed extensions and trailers still pass, split at every byte. (llhttp 8.1.0 refuses
   * a list of several extensions, "3;a=b;c=d", though it is valid: a 400 for those.) */
  char good[256];
  snprintf(good, sizeof good, "%s%s", head, "3;a=b\r\nabc\r\n0\r\nX-T: v\r\n\r\n");
  parsed_t p = parse_bytewise(good, 1024);
  HK_ASSERT_INT_EQ(p.event, HK_HTTP_REQUEST);
  HK_ASSERT_MEM_EQ(parser.request.body.data, parser.request.body.len, "abc", 3);
  hk_http_parser_free(&parser);
}

/* llhttp treats these as the connection's last message; so must we (found by fuzz_http). */
HK_TEST(last_message_closes) {
  parsed_t p = parse_all("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                         "0\r\nConnection: close\r\n\r\n", 1024);
  HK_ASSERT_INT_EQ(p.event, HK_HTTP_REQUEST);
  HK_ASSERT(!parser.request.keep_alive);
  hk_http_parser_free(&parser);
  p = parse_all("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 0);
  HK_ASSERT_INT_EQ(p.event, HK_HTTP_REQUEST);
  HK_ASSERT(!parser.request.keep_alive);
  hk_http_parser_free(&parser);
}

/* Limits apply at the byte that crosses them, so the outcome never depends on the reads. */
HK_TEST(limits_do_not_depend_on_reads) {
  hk_buf_t in = HK_BUF_INIT;
  hk_buf_append_str(&in, "GET /");
  for (int i = 0; i < HK_HTTP_MAX_REQUEST_LINE - 14; i++) hk_buf_append_char(&in, 'a');
  hk_buf_append_str(&in, " HTTP/1.1\r\nHost: a\r\n\r\n"); /* request line of exactly 8 KiB */
  parsed_t whole = parse_all(in.data, 0);
  HK_ASSERT_INT_EQ(whole.event, HK_HTTP_REQUEST);
  hk_http_parser_free(&parser);
  parsed_t split = parse_bytewise(in.data, 0);
  HK_ASSERT_INT_EQ(split.event, HK_HTTP_REQUEST);
  hk_http_parser_free(&parser);
  hk_buf_reset(&in);
  hk_buf_append_str(&in, "GET /");
  for (int i = 0; i < 9000; i++) hk_buf_append_char(&in, 'a');
  hk_buf_append_str(&in, "\n");
  expect_error(in.data, 414); /* too long before the bare LF is even reached */
  hk_buf_free(&in);
}

HK_TEST(failed_parser_stays_failed) {
  hk_http_parser_init(&parser, 0);
  size_t used;
  const char *bad = "GET / HTTP/1.1\nHost: a\n\n";
  HK_ASSERT_INT_EQ(hk_http_parse(&parser, bad, strlen(bad), &used), HK_HTTP_ERROR);
  const char *good = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
  HK_ASSERT_INT_EQ(hk_http_parse(&parser, good, strlen(good), &used), HK_HTTP_ERROR);
  hk_http_parser_free(&parser);
}

/* Chunk extensions are bytes the client makes us read: they count toward the body limit, or a
 * tiny body could carry gigabytes of them. */
HK_TEST(chunk_extensions_count_toward_body_limit) {
  hk_buf_t in = HK_BUF_INIT;
  /* One extension: data 1 byte + extension ";" + 99 bytes = 101 > 100. */
  hk_buf_append_str(&in, CHUNKED_HEAD "1;");
  for (int i = 0; i < 99; i++) hk_buf_append_char(&in, 'a');
  hk_buf_append_str(&in, "\r\nx\r\n0\r\n\r\n");
  expect_error_limit(in.data, 100, 413);
  expect_body(in.data, 101, "x"); /* exactly at the limit */
  /* Many short extensions add up: 20 chunks of 1 byte, each with ";ext=1" (6 bytes). */
  hk_buf_reset(&in);
  hk_buf_append_str(&in, CHUNKED_HEAD);
  for (int i = 0; i < 20; i++) hk_buf_append_str(&in, "1;ext=1\r\nx\r\n");
  hk_buf_append_str(&in, "0\r\n\r\n");
  expect_error_limit(in.data, 139, 413); /* 20 + 20 * 6 = 140 */
  expect_body(in.data, 140, "xxxxxxxxxxxxxxxxxxxx");
  /* The last chunk's extensions count too, with no data at all. */
  hk_buf_reset(&in);
  hk_buf_append_str(&in, CHUNKED_HEAD "0;");
  for (int i = 0; i < 200; i++) hk_buf_append_char(&in, 'a');
  hk_buf_append_str(&in, "\r\n\r\n");
  expect_error_limit(in.data, 100, 413);
  /* The ';' belongs to the extension: ";a" is 2 bytes, with 3 of data. */
  expect_error_limit(CHUNKED_HEAD "3;a\r\nabc\r\n0\r\n\r\n", 4, 413);
  expect_body(CHUNKED_HEAD "3;a\r\nabc\r\n0\r\n\r\n", 5, "abc");
  hk_buf_free(&in);
}

HK_TEST(trailers_count_toward_body_limit) {
  hk_buf_t in = HK_BUF_INIT;
  /* "X-T: " + 100 bytes + CRLF = 107 bytes of trailer section, 3 of data. */
  hk_buf_append_str(&in, CHUNKED_HEAD "3\r\nabc\r\n0\r\nX-T: ");
  for (int i = 0; i < 100; i++) hk_buf_append_char(&in, 'v');
  hk_buf_append_str(&in, "\r\n\r\n");
  expect_error_limit(in.data, 109, 413);
  expect_body(in.data, 110, "abc");
  /* An endless trailer section of short lines reaches the limit too. */
  hk_buf_reset(&in);
  hk_buf_append_str(&in, CHUNKED_HEAD "0\r\n");
  for (int i = 0; i < 1000; i++) hk_buf_append_str(&in, "X: y\r\n");
  hk_buf_append_str(&in, "\r\n");
  expect_error_limit(in.data, 1024, 413);
  /* The chunk-size digits and CRLFs are not counted: data exactly at the limit still fits. */
  expect_body(CHUNKED_HEAD "6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n", 11, "hello world");
  hk_buf_free(&in);
}

/* One chunk-size line is capped whatever the body limit, so no line is buffered or scanned
 * without bound. */
HK_TEST(chunk_line_length_capped) {
  hk_buf_t in = HK_BUF_INIT;
  hk_buf_append_str(&in, CHUNKED_HEAD "1;a=");
  while (in.len - strlen(CHUNKED_HEAD) < HK_HTTP_MAX_CHUNK_LINE) hk_buf_append_char(&in, 'v');
  size_t at_limit = in.len;
  hk_buf_append_str(&in, "\r\nx\r\n0\r\n\r\n");
  expect_body(in.data, 1 << 20, "x"); /* a line of exactly HK_HTTP_MAX_CHUNK_LINE bytes */
  in.len = at_limit;
  hk_buf_append_str(&in, "v\r\nx\r\n0\r\n\r\n");
  expect_error_limit(in.data, 1 << 20, 400);
  /* Refused at the byte that crosses the cap, before the line ends. */
  in.len = at_limit + 1;
  in.data[in.len] = '\0';
  expect_error_limit(in.data, 1 << 20, 400);
  hk_buf_free(&in);
}

/* The settings llhttp calls back through are shared by every parser; creating parsers on many
 * threads at once must be safe and each must parse correctly. */
#define THREADS 8
#define ROUNDS 200

static pthread_barrier_t start_line;

static void *parse_on_thread(void *arg) {
  (void)arg;
  static const char in[] = CHUNKED_HEAD "5\r\nhello\r\n0\r\n\r\n";
  hk_http_parser_t *p = malloc(sizeof *p);
  HK_ASSERT(p != NULL);
  pthread_barrier_wait(&start_line); /* all threads create their first parser together */
  for (int round = 0; round < ROUNDS; round++) {
    hk_http_parser_init(p, 1024);
    size_t used = 0;
    HK_ASSERT_INT_EQ(hk_http_parse(p, in, sizeof in - 1, &used), HK_HTTP_REQUEST);
    HK_ASSERT_INT_EQ(used, sizeof in - 1);
    HK_ASSERT_MEM_EQ(p->request.body.data, p->request.body.len, "hello", 5);
    hk_http_parser_free(p);
  }
  free(p);
  return NULL;
}

HK_TEST(parsers_on_many_threads) {
  pthread_t threads[THREADS];
  HK_ASSERT_INT_EQ(pthread_barrier_init(&start_line, NULL, THREADS), 0);
  for (int i = 0; i < THREADS; i++)
    HK_ASSERT_INT_EQ(pthread_create(&threads[i], NULL, parse_on_thread, NULL), 0);
  for (int i = 0; i < THREADS; i++) HK_ASSERT_INT_EQ(pthread_join(threads[i], NULL), 0);
  pthread_barrier_destroy(&start_line);
}

HK_TEST(reason_phrases) {
  HK_ASSERT_STR_EQ(hk_http_reason(404), "Not Found");
  HK_ASSERT_STR_EQ(hk_http_reason(431), "Request Header Fields Too Large");
  HK_ASSERT_STR_EQ(hk_http_reason(299), "Unknown");
}

HK_TEST_MAIN(HK_CASE(simple_get), HK_CASE(bytewise_equals_whole), HK_CASE(chunked_body),
             HK_CASE(pipelined_requests_one_at_a_time), HK_CASE(http10_keep_alive_rules),
             HK_CASE(expect_continue), HK_CASE(absolute_form_target),
             HK_CASE(leading_empty_line_ignored), HK_CASE(smuggling_shapes_rejected),
             HK_CASE(versions_and_host), HK_CASE(too_many_headers), HK_CASE(size_limits),
             HK_CASE(body_limits), HK_CASE(bad_chunk_lines), HK_CASE(failed_parser_stays_failed), HK_CASE(chunked_framing_is_strict),
             HK_CASE(last_message_closes), HK_CASE(limits_do_not_depend_on_reads),
             HK_CASE(chunk_extensions_count_toward_body_limit),
             HK_CASE(trailers_count_toward_body_limit), HK_CASE(chunk_line_length_capped),
             HK_CASE(parsers_on_many_threads), HK_CASE(reason_phrases))
