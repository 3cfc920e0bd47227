/* hk_http: the HTTP/1.1 request parser for one connection. Owns request framing and every
 * strictness rule the server enforces on top of llhttp: it checks each request head itself
 * (line endings, header names, obs-fold, version, Host, Content-Length/Transfer-Encoding,
 * limits) before llhttp sees it, and lets llhttp frame the body (Content-Length or chunked).
 * Pure: bytes in, events out; no sockets, so it is unit-tested and fuzzed directly.
 *
 * Use: the caller keeps unconsumed input and calls hk_http_parse on it; the parser reports how
 * many bytes it consumed and one event. After HK_HTTP_REQUEST the caller answers the request and
 * calls hk_http_parser_next before parsing again: a parser holds one request at a time, which
 * keeps pipelined responses in order. After HK_HTTP_ERROR the caller answers error_status and
 * closes; the parser must not be used again.
 *
 * Body limit: max_body bounds a Content-Length body, and for a chunked body the data plus every
 * chunk-extension byte and trailer-section byte (size digits and framing CRLFs are not counted);
 * past it the error is 413. One chunk-size line longer than HK_HTTP_MAX_CHUNK_LINE is a 400.
 * Parsers may be created and used on any number of threads, each parser on one at a time. */
#ifndef HK_HTTP_H
#define HK_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>

#include "hk_buf.h"

#define HK_HTTP_MAX_HEADERS 100
#define HK_HTTP_MAX_HEAD (16 * 1024)
#define HK_HTTP_MAX_REQUEST_LINE (8 * 1024)
/* One chunk-size line (size digits and extensions, without its CRLF); longer is a 400. */
#define HK_HTTP_MAX_CHUNK_LINE (4 * 1024)

typedef struct hk_http_header_s {
  const char *name; /* as sent; compare case-insensitively */
  size_t name_len;
  const char *value; /* surrounding whitespace trimmed */
  size_t value_len;
} hk_http_header_t;

/* A parsed request. Strings point into `head` and stay valid until hk_http_parser_next. */
typedef struct hk_http_request_s {
  hk_buf_t head; /* the raw head, copied out of the caller's input */
  const char *method;
  size_t method_len;
  const char *target; /* the request-target as sent */
  size_t target_len;
  const char *path; /* the path part of the target, percent-encoding kept */
  size_t path_len;
  const char *query; /* after '?', NULL when absent */
  size_t query_len;
  int version_minor; /* HTTP/1.<minor>: 0 or 1 */
  hk_http_header_t *headers; /* grown on demand up to HK_HTTP_MAX_HEADERS and kept for the
                                connection's next requests: an idle connection holds a few
                                entries, not a hundred */
  size_t header_count;
  size_t header_cap;
  hk_buf_t body; /* de-chunked */
  int64_t content_length; /* -1 when absent */
  bool chunked;
  bool keep_alive;
  bool expect_continue;
} hk_http_request_t;

typedef enum hk_http_event_e {
  HK_HTTP_NEED_MORE = 0, /* all input consumed, request not complete */
  HK_HTTP_CONTINUE,      /* head accepted with Expect: 100-continue: send 100, parse on */
  HK_HTTP_REQUEST,       /* a complete request is in parser->request */
  HK_HTTP_ERROR,         /* answer error_status with error_message, then close */
} hk_http_event_t;

typedef enum hk_http_state_e {
  HK_HTTP_STATE_IDLE, /* no byte of the next request yet */
  HK_HTTP_STATE_HEAD, /* part of a head received */
  HK_HTTP_STATE_BODY,
  HK_HTTP_STATE_DONE,
  HK_HTTP_STATE_FAILED,
} hk_http_state_t;

typedef struct hk_http_parser_s {
  llhttp_t llhttp;
  hk_http_state_t state;
  size_t scan_pos;   /* head bytes already checked, from the start of the input */
  size_t line_start; /* start of the head line being scanned */
  bool have_request_line;
  int chunk_state;          /* where the chunked-body check is (hk_http.c) */
  uint64_t chunk_remaining; /* data bytes left in the current chunk */
  unsigned chunk_digits;
  unsigned chunk_line_len; /* bytes of the current chunk-size line, CRLF not counted */
  uint64_t chunk_counted;  /* chunk data, extension and trailer bytes so far, <= max_body */
  uint64_t max_body;
  int error_status;
  const char *error_message; /* static string, safe to send to the client */
  hk_http_request_t request;
} hk_http_parser_t;

void hk_http_parser_init(hk_http_parser_t *parser, uint64_t max_body);
void hk_http_parser_free(hk_http_parser_t *parser);

/* Parses from the start of the caller's unconsumed input. *consumed is how many bytes the
 * caller must drop from the front; bytes of an incomplete head are not consumed (they stay in
 * the caller's buffer, bounded by HK_HTTP_MAX_HEAD). */
hk_http_event_t hk_http_parse(hk_http_parser_t *parser, const char *data, size_t len,
                              size_t *consumed);

/* Forgets the answered request, keeping buffers for reuse, so parsing can continue. */
void hk_http_parser_next(hk_http_parser_t *parser);

/* Case-insensitive header lookup; first match, or NULL. */
const hk_http_header_t *hk_http_header_find(const hk_http_request_t *request, const char *name);

/* Reason phrase for a status code ("Not Found"); "Unknown" for codes it does not know. */
const char *hk_http_reason(int status);

#endif
