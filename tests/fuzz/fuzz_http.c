/* fuzz_http: libFuzzer target for the request parser (hk_http). It drives the parser the way
 * hk_server does (append input, parse, drop `consumed` from the front, answer, parse on) and
 * checks the contract of hk_http.h on every event. Entry point: LLVMFuzzerTestOneInput.
 *
 * Input: byte 0 seeds how the rest is cut into feeds; the rest is what a client sends. Each
 * input is parsed twice, once in a single feed and once in the feeds byte 0 chooses, and both
 * runs must report the same events (request lines, bodies, keep-alive, the error status), since
 * TCP segmentation must not change what the server does. Each accepted request is also checked
 * against the bytes it consumed: the head as copied, then exactly the announced body, a chunked
 * body being held to RFC 9112 and to the body limit (data, chunk extensions and trailers
 * counted) by an oracle written here (llhttp 8 is lenient in places). The
 * spare room past the unconsumed input is poisoned under ASan, so over-reads are caught. */
#include "hk_http.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FUZZ_ASAN
#endif
#endif
#ifdef __SANITIZE_ADDRESS__
#define FUZZ_ASAN
#endif
#ifdef FUZZ_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(addr, size) ASAN_POISON_MEMORY_REGION(addr, size)
#define UNPOISON(addr, size) ASAN_UNPOISON_MEMORY_REGION(addr, size)
#else
#define POISON(addr, size) ((void)(addr), (void)(size))
#define UNPOISON(addr, size) ((void)(addr), (void)(size))
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "fuzz_check.h"

/* Small, so that bodies over the limit (413) are easy to reach. */
#define MAX_BODY 4096

/* ---- feeds -------------------------------------------------------------------------------- */

/* Feed sizes come from xorshift32 seeded by byte 0: its high nibble sets the largest feed
 * (1 << nibble: 1 byte to 32 KiB), its low nibble varies the sequence. */
typedef struct feeder_s {
  uint32_t state;
  size_t max_feed; /* 0: everything in one feed */
} feeder_t;

static void feeder_init(feeder_t *f, uint8_t seed, bool single) {
  f->state = 0x9e3779b9u ^ ((uint32_t)seed * 0x01000193u);
  f->max_feed = single ? 0 : (size_t)1 << (seed >> 4);
}

static size_t feeder_next(feeder_t *f, size_t remaining) {
  if (f->max_feed == 0) return remaining;
  f->state ^= f->state << 13;
  f->state ^= f->state >> 17;
  f->state ^= f->state << 5;
  size_t n = 1 + f->state % f->max_feed;
  return n < remaining ? n : remaining;
}

/* ---- the transcript both runs must agree on ----------------------------------------------- */

static void record(hk_buf_t *transcript, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void record(hk_buf_t *transcript, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  CHECK(hk_buf_vappendf(transcript, fmt, ap) == 0);
  va_end(ap);
}

/* Length-prefixed, so any byte may appear. */
static void record_bytes(hk_buf_t *transcript, const char *bytes, size_t len) {
  record(transcript, "[%zu]", len);
  if (len > 0) CHECK(hk_buf_append(transcript, bytes, len) == 0);
  CHECK(hk_buf_append_char(transcript, '\n') == 0);
}

/* ---- an independent framing oracle (RFC 9112) ----------------------------------------------- */

static bool is_token_char(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int hex_value(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') return (c | 0x20) - 'a' + 10;
  return -1;
}

static bool is_crlf(const char *p, size_t len, size_t i) {
  return len - i >= 2 && p[i] == '\r' && p[i + 1] == '\n';
}

static size_t skip_bws(const char *p, size_t len, size_t i) {
  while (i < len && (p[i] == ' ' || p[i] == '\t')) i++;
  return i;
}

static size_t skip_token(const char *p, size_t len, size_t i) {
  while (i < len && is_token_char((unsigned char)p[i])) i++;
  return i;
}

/* quoted-string (RFC 9110 §5.6.4) starting at p[i]; returns the index after it, or 0. */
static size_t skip_quoted(const char *p, size_t len, size_t i) {
  if (i >= len || p[i] != '"') return 0;
  for (i++; i < len; i++) {
    unsigned char c = (unsigned char)p[i];
    if (c == '"') return i + 1;
    if (c == '\\') {
      if (++i >= len) return 0;
      c = (unsigned char)p[i];
      if (!(c == '\t' || c >= 0x20) || c == 0x7f) return 0;
    } else if (!(c == '\t' || c >= 0x20) || c == 0x7f) {
      return 0;
    }
  }
  return 0;
}

/* True when `raw` is exactly one well-formed chunked body (RFC 9112 §7.1: chunk-size, chunk-ext,
 * CRLF after the size line and after the data, a trailer section of field lines, the final CRLF)
 * whose data is `body`. Written independently of llhttp, which is lenient in places. Also
 * measures what hk_http.h holds to the limits: *counted, the bytes of data, chunk extensions and
 * trailer field lines, and *longest_line, the longest chunk-size line without its CRLF. */
static bool chunked_is_strict(const char *p, size_t len, const hk_buf_t *body, size_t *counted,
                              size_t *longest_line) {
  size_t i = 0, out = 0;
  *counted = 0;
  *longest_line = 0;
  for (;;) {
    uint64_t size = 0;
    size_t start = i;
    for (int digit; i < len && (digit = hex_value((unsigned char)p[i])) >= 0; i++) {
      if (size >> 59) return false;
      size = size * 16 + (uint64_t)digit;
    }
    if (i == start) return false;
    size_t digits_end = i;
    for (;;) { /* chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ) */
      size_t j = skip_bws(p, len, i);
      if (j >= len || p[j] != ';') break;
      j = skip_bws(p, len, j + 1);
      size_t name_end = skip_token(p, len, j);
      if (name_end == j) return false;
      i = name_end;
      j = skip_bws(p, len, name_end);
      if (j < len && p[j] == '=') {
        j = skip_bws(p, len, j + 1);
        size_t value_end = j < len && p[j] == '"' ? skip_quoted(p, len, j) : skip_token(p, len, j);
        if (value_end == 0 || value_end == j) return false;
        i = value_end;
      }
    }
    if (!is_crlf(p, len, i)) return false;
    *counted += i - digits_end;
    if (i - start > *longest_line) *longest_line = i - start;
    i += 2;
    if (size == 0) break;
    if (len - i < size || body->len - out < size) return false;
    if (memcmp(body->data + out, p + i, size) != 0) return false;
    out += size;
    *counted += size;
    i += size;
    if (!is_crlf(p, len, i)) return false;
    i += 2;
  }
  size_t trailer_start = i;
  for (;;) { /* trailer-section = *( field-line CRLF ), then CRLF */
    if (is_crlf(p, len, i)) {
      *counted += i - trailer_start;
      i += 2;
      break;
    }
    size_t name_end = skip_token(p, len, i);
    if (name_end == i || name_end >= len || p[name_end] != ':') return false;
    for (i = name_end + 1; i < len && p[i] != '\r' && p[i] != '\n'; i++) {
      unsigned char c = (unsigned char)p[i];
      if (!(c == '\t' || c >= 0x20) || c == 0x7f) return false;
    }
    if (!is_crlf(p, len, i)) return false;
    i += 2;
  }
  return i == len && out == body->len;
}

/* ---- contract checks ---------------------------------------------------------------------- */

static bool inside(const hk_buf_t *head, const char *p, size_t len) {
  const char *lo = head->data, *hi = head->data + head->len;
  return p != NULL && p >= lo && p <= hi && len <= (size_t)(hi - p);
}

/* `raw` is every byte the parser consumed for this request, head and body. */
static void check_request(const hk_http_parser_t *parser, const hk_buf_t *raw) {
  const hk_http_request_t *r = &parser->request;
  const hk_buf_t *head = &r->head;
  CHECK(parser->state == HK_HTTP_STATE_DONE);
  CHECK(head->data != NULL && head->len >= 4);
  CHECK(memcmp(head->data + head->len - 4, "\r\n\r\n", 4) == 0);
  CHECK(r->method_len > 0 && inside(head, r->method, r->method_len));
  CHECK(r->target_len > 0 && inside(head, r->target, r->target_len));
  /* The path is a part of the target, "/..." or the "*" of OPTIONS. */
  CHECK(r->path_len > 0 && inside(head, r->path, r->path_len));
  CHECK(r->path_len <= r->target_len);
  CHECK(r->path >= r->target && r->path + r->path_len <= r->target + r->target_len);
  CHECK(r->path[0] == '/' || (r->path_len == 1 && r->path[0] == '*'));
  CHECK(memchr(r->path, '?', r->path_len) == NULL);
  if (r->query != NULL) {
    CHECK(inside(head, r->query, r->query_len));
    CHECK(r->query == r->path + r->path_len + 1 && r->query[-1] == '?');
  }
  CHECK(r->version_minor == 0 || r->version_minor == 1);
  CHECK(r->header_count <= HK_HTTP_MAX_HEADERS);
  for (size_t i = 0; i < r->header_count; i++) {
    const hk_http_header_t *h = &r->headers[i];
    CHECK(h->name_len > 0 && inside(head, h->name, h->name_len));
    CHECK(inside(head, h->value, h->value_len));
    CHECK(memchr(h->name, ':', h->name_len) == NULL);
    CHECK(memchr(h->value, '\r', h->value_len) == NULL);
    CHECK(memchr(h->value, '\n', h->value_len) == NULL);
  }
  CHECK(r->body.len <= MAX_BODY);
  CHECK(!(r->chunked && r->content_length >= 0));

  /* Framing, against the bytes actually consumed: the head as copied, then exactly the body
   * the headers announce (Content-Length bytes, a well-formed chunked body, or nothing). */
  CHECK(raw->len >= head->len && memcmp(raw->data, head->data, head->len) == 0);
  const char *body = raw->data + head->len;
  size_t body_len = raw->len - head->len;
  if (r->chunked) {
    size_t counted, longest_line;
    CHECK(chunked_is_strict(body, body_len, &r->body, &counted, &longest_line));
    CHECK(counted <= MAX_BODY);
    CHECK(longest_line <= HK_HTTP_MAX_CHUNK_LINE);
  } else {
    size_t expected = r->content_length < 0 ? 0 : (size_t)r->content_length;
    CHECK(r->body.len == expected);
    CHECK(body_len == expected);
    if (expected > 0) CHECK(memcmp(r->body.data, body, expected) == 0);
  }
  /* hk_http decides keep-alive, llhttp frames what follows: a connection hk_http keeps open
   * must not be one llhttp considers closed (it then swallows every later byte). */
  if (r->keep_alive && !parser->llhttp.upgrade) CHECK(llhttp_should_keep_alive(&parser->llhttp));
}

static void check_error(const hk_http_parser_t *parser) {
  int s = parser->error_status;
  CHECK(parser->state == HK_HTTP_STATE_FAILED);
  CHECK(s == 400 || s == 413 || s == 414 || s == 417 || s == 431 || s == 503);
  CHECK(parser->error_message != NULL && parser->error_message[0] != '\0');
}

/* ---- one connection ----------------------------------------------------------------------- */

typedef struct connection_s {
  hk_http_parser_t parser;
  hk_buf_t in;         /* received, not yet consumed: hk_server's conn->in */
  hk_buf_t raw;        /* consumed for the current request */
  hk_buf_t transcript; /* what both runs must agree on */
} connection_t;

/* Parses what the connection holds until the parser needs more input. Returns true when the
 * connection ends (an error, or a request without keep-alive: hk_server closes after it). */
static bool drain(connection_t *conn) {
  hk_http_parser_t *parser = &conn->parser;
  hk_buf_t *in = &conn->in;
  for (;;) {
    size_t consumed = SIZE_MAX, offered = in->len;
    /* The parser may read exactly the unconsumed bytes, not the buffer's spare room. */
    POISON(in->data + in->len, in->cap - in->len);
    hk_http_event_t ev = hk_http_parse(parser, in->data, in->len, &consumed);
    UNPOISON(in->data, in->cap);
    CHECK(consumed <= offered);
    CHECK(hk_buf_append(&conn->raw, in->data, consumed) == 0);
    hk_buf_consume(in, consumed);
    switch (ev) {
      case HK_HTTP_NEED_MORE:
        CHECK(parser->state != HK_HTTP_STATE_DONE && parser->state != HK_HTTP_STATE_FAILED);
        /* A partial head stays in the caller's buffer, bounded by the head limit. */
        if (parser->state == HK_HTTP_STATE_HEAD)
          CHECK(consumed == 0 && in->len <= HK_HTTP_MAX_HEAD);
        /* Body bytes and an idle connection's bytes are always taken. */
        if (parser->state != HK_HTTP_STATE_HEAD) CHECK(in->len == 0);
        return false;
      case HK_HTTP_CONTINUE:
        CHECK(consumed > 0 && parser->state == HK_HTTP_STATE_BODY);
        CHECK(parser->request.expect_continue);
        CHECK(consumed == parser->request.head.len);
        record(&conn->transcript, "continue\n");
        break;
      case HK_HTTP_REQUEST: {
        CHECK(consumed > 0);
        check_request(parser, &conn->raw);
        const hk_http_request_t *r = &parser->request;
        record(&conn->transcript, "request minor=%d keep_alive=%d ", r->version_minor,
               (int)r->keep_alive);
        record_bytes(&conn->transcript, r->method, r->method_len);
        record_bytes(&conn->transcript, r->target, r->target_len);
        record_bytes(&conn->transcript, r->body.data, r->body.len);
        /* Until hk_http_parser_next the parser holds this request and consumes nothing. */
        size_t again = SIZE_MAX;
        CHECK(hk_http_parse(parser, in->data, in->len, &again) == HK_HTTP_REQUEST && again == 0);
        if (!r->keep_alive) return true;
        hk_http_parser_next(parser);
        CHECK(parser->state == HK_HTTP_STATE_IDLE);
        hk_buf_reset(&conn->raw);
        break;
      }
      case HK_HTTP_ERROR: {
        check_error(parser);
        record(&conn->transcript, "error %d\n", parser->error_status);
        /* An error is final. */
        size_t again = SIZE_MAX;
        CHECK(hk_http_parse(parser, in->data, in->len, &again) == HK_HTTP_ERROR && again == 0);
        return true;
      }
      default:
        CHECK(!"unknown event");
    }
  }
}

/* Sends `data` to a fresh parser in the feeds `feeder` picks and records what happens in
 * `transcript`. */
static void run(const uint8_t *data, size_t size, feeder_t *feeder, hk_buf_t *transcript) {
  static connection_t conn; /* large (the parser's header array): not on the stack */
  hk_http_parser_init(&conn.parser, MAX_BODY);
  hk_buf_init(&conn.in);
  hk_buf_init(&conn.raw);
  hk_buf_init(&conn.transcript);
  CHECK(hk_buf_reserve(&conn.in, 0) == 0); /* data is never NULL, as in hk_server */
  size_t offered = 0;
  bool closed = false;
  while (!closed && offered < size) {
    size_t n = feeder_next(feeder, size - offered);
    CHECK(hk_buf_append(&conn.in, data + offered, n) == 0);
    offered += n;
    closed = drain(&conn);
  }
  if (!closed) {
    /* Out of input: where the parser stopped is part of the outcome too. */
    record(&conn.transcript, "end state=%d buffered=%zu\n", (int)conn.parser.state, conn.in.len);
  }
  *transcript = conn.transcript;
  hk_http_parser_free(&conn.parser);
  hk_buf_free(&conn.in);
  hk_buf_free(&conn.raw);
}

static void print_transcript(const char *label, const hk_buf_t *t) {
  fprintf(stderr, "--- %s (%zu bytes)\n", label, t->len);
  for (size_t i = 0; i < t->len && i < 4096; i++) {
    unsigned char c = (unsigned char)t->data[i];
    if (c == '\n' || (c >= 0x20 && c < 0x7f)) fputc(c, stderr);
    else fprintf(stderr, "\\x%02x", c);
  }
  fputc('\n', stderr);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  hk_buf_t whole = HK_BUF_INIT, split = HK_BUF_INIT;
  feeder_t feeder;
  feeder_init(&feeder, data[0], true);
  run(data + 1, size - 1, &feeder, &whole);
  feeder_init(&feeder, data[0], false);
  run(data + 1, size - 1, &feeder, &split);
  if (whole.len != split.len || memcmp(whole.data, split.data, whole.len) != 0) {
    fprintf(stderr, "single feed and split feeds (seed 0x%02x, max feed %zu) disagree\n", data[0],
            feeder.max_feed);
    print_transcript("single feed", &whole);
    print_transcript("split feeds", &split);
    abort();
  }
  hk_buf_free(&whole);
  hk_buf_free(&split);
  return 0;
}
