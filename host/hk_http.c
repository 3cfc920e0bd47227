/* hk_http: request-head validation and body framing. The head checks here are the server's own,
 * whatever llhttp version is linked: Debian's llhttp 8.1.0 predates several request-smuggling
 * fixes, and llhttp has no size limits or header count at all. See hk_http.h for the contract. */
#include "hk_http.h"

#include <assert.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hk_text.h"

/* ---- character classes (RFC 9110 §5.6.2; tchar is hk_text's) ------------------------------ */

static bool is_field_vchar(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

static bool is_target_char(unsigned char c) { return c > 0x20 && c < 0x7f && c != '#'; }

static bool equals_ci(const char *a, size_t alen, const char *b) {
  size_t blen = strlen(b);
  return alen == blen && strncasecmp(a, b, alen) == 0;
}

/* True when the comma-separated list contains `token` (case-insensitive). */
static bool list_has_token(const char *value, size_t len, const char *token) {
  size_t i = 0;
  while (i < len) {
    while (i < len && (value[i] == ' ' || value[i] == '\t' || value[i] == ',')) i++;
    size_t start = i;
    while (i < len && value[i] != ',') i++;
    size_t end = i;
    while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t')) end--;
    if (equals_ci(value + start, end - start, token)) return true;
  }
  return false;
}

/* States of the chunked-framing check (chunk_scan). The states of a chunk-size line come first,
 * CHUNK_SIZE through CHUNK_EXT_AFTER_QUOTED, so in_size_line() is one range test. */
enum { CHUNK_SIZE, CHUNK_EXT_BWS, CHUNK_EXT_NAME0, CHUNK_EXT_NAME, CHUNK_EXT_AFTER_NAME,
       CHUNK_EXT_VALUE0, CHUNK_EXT_TOKEN, CHUNK_EXT_QUOTED, CHUNK_EXT_QUOTED_PAIR,
       CHUNK_EXT_AFTER_QUOTED, CHUNK_SIZE_LF, CHUNK_DATA, CHUNK_DATA_CR, CHUNK_DATA_LF,
       CHUNK_TRAILER, CHUNK_FIELD_NAME, CHUNK_FIELD_VALUE, CHUNK_FIELD_LF, CHUNK_END_LF,
       CHUNK_DONE };

/* ---- llhttp callbacks (body framing only) ------------------------------------------------- */

static int on_body(llhttp_t *ll, const char *at, size_t length) {
  hk_http_parser_t *parser = ll->data;
  hk_http_request_t *req = &parser->request;
  if (req->body.len + length > parser->max_body) {
    parser->error_status = 413;
    parser->error_message = "request body too large";
    return -1;
  }
  if (hk_buf_append(&req->body, at, length) != 0) {
    parser->error_status = 503;
    parser->error_message = "out of memory";
    return -1;
  }
  return 0;
}

/* Chunk extensions are ignored, but their bytes must still be well-formed: llhttp 8 lets odd
 * shapes through that other parsers on the path may frame differently. */
static int on_chunk_extension_name(llhttp_t *ll, const char *at, size_t length) {
  hk_http_parser_t *parser = ll->data;
  for (size_t i = 0; i < length; i++) {
    if (!hk_text_is_tchar((unsigned char)at[i])) {
      parser->error_status = 400;
      parser->error_message = "malformed chunk extension";
      return -1;
    }
  }
  return 0;
}

static int on_chunk_extension_value(llhttp_t *ll, const char *at, size_t length) {
  hk_http_parser_t *parser = ll->data;
  for (size_t i = 0; i < length; i++) {
    unsigned char c = (unsigned char)at[i];
    if (!(hk_text_is_tchar(c) || c == '"' || c == '\\' || c == ' ' || c == '\t' ||
          (c > 0x20 && c < 0x7f))) {
      parser->error_status = 400;
      parser->error_message = "malformed chunk extension";
      return -1;
    }
  }
  return 0;
}

static int on_message_complete(llhttp_t *ll) {
  hk_http_parser_t *parser = ll->data;
  parser->state = HK_HTTP_STATE_DONE;
  /* We never switch protocols, and llhttp ignores every byte after a message it considers the
   * last one: in both cases answer this request, then close. */
  if (ll->upgrade || !llhttp_should_keep_alive(ll)) parser->request.keep_alive = false;
  return HPE_PAUSED; /* one request at a time: responses stay in order */
}

/* The callbacks every parser shares. Parsers are created on several worker threads at once, so
 * the table is filled exactly once through pthread_once (a lazy "if not ready" check would let
 * one thread clear it while another's parser runs) and only read afterwards. */
static llhttp_settings_t settings;
static pthread_once_t settings_once = PTHREAD_ONCE_INIT;

static void settings_init(void) {
  llhttp_settings_init(&settings);
  settings.on_body = on_body;
  settings.on_chunk_extension_name = on_chunk_extension_name;
  settings.on_chunk_extension_value = on_chunk_extension_value;
  settings.on_message_complete = on_message_complete;
}

/* ---- parser lifecycle --------------------------------------------------------------------- */

static void request_reset(hk_http_request_t *req) {
  hk_buf_t head = req->head, body = req->body;
  hk_http_header_t *headers = req->headers;
  size_t header_cap = req->header_cap;
  hk_buf_reset(&head);
  hk_buf_reset(&body);
  memset(req, 0, sizeof *req);
  req->head = head;
  req->body = body;
  req->headers = headers;
  req->header_cap = header_cap;
  req->content_length = -1;
}

void hk_http_parser_init(hk_http_parser_t *parser, uint64_t max_body) {
  (void)pthread_once(&settings_once, settings_init);
  memset(parser, 0, sizeof *parser);
  llhttp_init(&parser->llhttp, HTTP_REQUEST, &settings);
  parser->llhttp.data = parser;
  parser->max_body = max_body;
  parser->state = HK_HTTP_STATE_IDLE;
  request_reset(&parser->request);
}

void hk_http_parser_free(hk_http_parser_t *parser) {
  hk_buf_free(&parser->request.head);
  hk_buf_free(&parser->request.body);
  free(parser->request.headers);
  parser->request.headers = NULL;
  parser->request.header_cap = 0;
}

void hk_http_parser_next(hk_http_parser_t *parser) {
  request_reset(&parser->request);
  parser->state = HK_HTTP_STATE_IDLE;
  parser->scan_pos = 0;
  parser->line_start = 0;
  parser->have_request_line = false;
  parser->chunk_state = CHUNK_SIZE;
  parser->chunk_remaining = 0;
  parser->chunk_digits = 0;
  parser->chunk_line_len = 0;
  parser->chunk_counted = 0;
  if (llhttp_get_errno(&parser->llhttp) == HPE_PAUSED) llhttp_resume(&parser->llhttp);
}

static hk_http_event_t fail(hk_http_parser_t *parser, int status, const char *message) {
  parser->state = HK_HTTP_STATE_FAILED;
  parser->error_status = status;
  parser->error_message = message;
  return HK_HTTP_ERROR;
}

/* ---- head checks -------------------------------------------------------------------------- */

static const char *parse_request_line(hk_http_request_t *req, const char *line, size_t len) {
  size_t i = 0;
  while (i < len && hk_text_is_tchar((unsigned char)line[i])) i++;
  if (i == 0 || i == len || line[i] != ' ') return "malformed request line";
  req->method = line;
  req->method_len = i;
  size_t target_start = ++i;
  while (i < len && is_target_char((unsigned char)line[i])) i++;
  if (i == target_start || i == len || line[i] != ' ') return "malformed request line";
  req->target = line + target_start;
  req->target_len = i - target_start;
  const char *version = line + i + 1;
  size_t version_len = len - i - 1;
  if (version_len != 8 || memcmp(version, "HTTP/", 5) != 0 || version[6] != '.')
    return "malformed request line";
  if (version[5] != '1' || (version[7] != '0' && version[7] != '1'))
    return "unsupported HTTP version";
  req->version_minor = version[7] - '0';

  const char *t = req->target;
  size_t tlen = req->target_len;
  if (tlen == 1 && t[0] == '*') {
    if (!equals_ci(req->method, req->method_len, "OPTIONS")) return "malformed request target";
    req->path = t;
    req->path_len = 1;
    return NULL;
  }
  if (t[0] != '/') {
    /* absolute-form (RFC 9112 §3.2.2): keep the path, drop scheme and authority. */
    size_t skip;
    if (tlen > 7 && strncasecmp(t, "http://", 7) == 0) skip = 7;
    else if (tlen > 8 && strncasecmp(t, "https://", 8) == 0) skip = 8;
    else return "malformed request target";
    const char *slash = memchr(t + skip, '/', tlen - skip);
    if (slash == NULL) return "malformed request target";
    tlen -= (size_t)(slash - t);
    t = slash;
  }
  const char *q = memchr(t, '?', tlen);
  req->path = t;
  req->path_len = q ? (size_t)(q - t) : tlen;
  if (q) {
    req->query = q + 1;
    req->query_len = tlen - req->path_len - 1;
  }
  return NULL;
}

static const char *parse_header_line(hk_http_request_t *req, const char *line, size_t len) {
  if (line[0] == ' ' || line[0] == '\t') return "obsolete line folding is not accepted";
  size_t i = 0;
  while (i < len && hk_text_is_tchar((unsigned char)line[i])) i++;
  if (i == len || line[i] != ':' || i == 0) return "malformed header name";
  if (req->header_count == HK_HTTP_MAX_HEADERS) return "too many headers";
  if (req->header_count == req->header_cap) {
    size_t cap = req->header_cap ? req->header_cap * 2 : 16;
    if (cap > HK_HTTP_MAX_HEADERS) cap = HK_HTTP_MAX_HEADERS;
    hk_http_header_t *grown = realloc(req->headers, cap * sizeof *grown);
    if (grown == NULL) return "out of memory for the headers";
    req->headers = grown;
    req->header_cap = cap;
  }
  size_t vstart = i + 1, vend = len;
  while (vstart < vend && (line[vstart] == ' ' || line[vstart] == '\t')) vstart++;
  while (vend > vstart && (line[vend - 1] == ' ' || line[vend - 1] == '\t')) vend--;
  for (size_t k = vstart; k < vend; k++) {
    if (!is_field_vchar((unsigned char)line[k])) return "malformed header value";
  }
  hk_http_header_t *h = &req->headers[req->header_count++];
  h->name = line;
  h->name_len = i;
  h->value = line + vstart;
  h->value_len = vend - vstart;
  return NULL;
}

/* Framing and connection semantics from the headers (RFC 9112 §6, §9). */
static hk_http_event_t check_headers(hk_http_parser_t *parser) {
  hk_http_request_t *req = &parser->request;
  int hosts = 0, lengths = 0, encodings = 0;
  bool conn_close = false, conn_keep_alive = false;
  for (size_t i = 0; i < req->header_count; i++) {
    const hk_http_header_t *h = &req->headers[i];
    if (equals_ci(h->name, h->name_len, "host")) {
      hosts++;
    } else if (equals_ci(h->name, h->name_len, "content-length")) {
      if (++lengths > 1) return fail(parser, 400, "duplicate Content-Length");
      if (h->value_len == 0 || h->value_len > 18) return fail(parser, 400, "invalid Content-Length");
      int64_t n = 0;
      for (size_t k = 0; k < h->value_len; k++) {
        if (h->value[k] < '0' || h->value[k] > '9') return fail(parser, 400, "invalid Content-Length");
        n = n * 10 + (h->value[k] - '0');
      }
      req->content_length = n;
    } else if (equals_ci(h->name, h->name_len, "transfer-encoding")) {
      if (++encodings > 1 || !equals_ci(h->value, h->value_len, "chunked"))
        return fail(parser, 400, "unsupported Transfer-Encoding");
      req->chunked = true;
    } else if (equals_ci(h->name, h->name_len, "connection")) {
      if (list_has_token(h->value, h->value_len, "close")) conn_close = true;
      if (list_has_token(h->value, h->value_len, "keep-alive")) conn_keep_alive = true;
    } else if (equals_ci(h->name, h->name_len, "expect")) {
      if (!equals_ci(h->value, h->value_len, "100-continue"))
        return fail(parser, 417, "unsupported expectation");
      req->expect_continue = true;
    }
  }
  if (req->chunked && lengths > 0) return fail(parser, 400, "both Transfer-Encoding and Content-Length");
  if (req->chunked && req->version_minor == 0) return fail(parser, 400, "Transfer-Encoding on HTTP/1.0");
  if (hosts > 1) return fail(parser, 400, "duplicate Host header");
  if (hosts == 0 && req->version_minor == 1) return fail(parser, 400, "missing Host header");
  if (req->content_length > 0 && (uint64_t)req->content_length > parser->max_body)
    return fail(parser, 413, "request body too large");
  req->keep_alive = req->version_minor == 1 ? !conn_close : (conn_keep_alive && !conn_close);
  /* RFC 9110 §10.1.1: ignore 100-continue from HTTP/1.0 clients, who cannot take a 1xx. */
  if ((!req->chunked && req->content_length <= 0) || req->version_minor == 0)
    req->expect_continue = false;
  return HK_HTTP_NEED_MORE;
}

/* Scans the head for its end, checking every line as it completes. Returns the head length
 * (through the blank line) in *head_len when complete. */
static hk_http_event_t scan_head(hk_http_parser_t *parser, const char *data, size_t len,
                                 size_t *head_len) {
  *head_len = 0;
  size_t i = parser->scan_pos;
  for (; i < len; i++) {
    /* Limits are checked at the byte that exceeds them, so where the input was split into
     * reads never changes the outcome. */
    if (i >= HK_HTTP_MAX_HEAD) return fail(parser, 431, "request head too large");
    char c = data[i];
    if (!parser->have_request_line && c != '\r' && c != '\n' &&
        i - parser->line_start >= HK_HTTP_MAX_REQUEST_LINE)
      return fail(parser, 414, "request line too long");
    if (c == '\r') {
      if (i + 1 < len && data[i + 1] != '\n') return fail(parser, 400, "bare CR in request head");
      continue;
    }
    if (c != '\n') continue;
    if (i == 0 || data[i - 1] != '\r' || i - 1 < parser->line_start)
      return fail(parser, 400, "bare LF in request head");
    size_t line_len = i - 1 - parser->line_start;
    parser->line_start = i + 1;
    if (!parser->have_request_line) {
      if (line_len == 0) continue; /* RFC 9112 §2.2: ignore an empty line before a request */
      if (line_len > HK_HTTP_MAX_REQUEST_LINE) return fail(parser, 414, "request line too long");
      /* An HTTP/0.9 client sends only this line and waits: answer now, not at the timeout. */
      const char *line = data + i - 1 - line_len, *end = data + i - 1;
      if (line_len < 9 || end[-9] != ' ' || memcmp(end - 8, "HTTP/1.", 7) != 0 ||
          (end[-1] != '0' && end[-1] != '1'))
        return fail(parser, 400, memmem(line, line_len, " HTTP/", 6) ? "unsupported HTTP version"
                                                                     : "malformed request line");
      parser->have_request_line = true;
      continue;
    }
    if (line_len == 0) {
      if (i + 1 > HK_HTTP_MAX_HEAD) return fail(parser, 431, "request head too large");
      *head_len = i + 1;
      parser->scan_pos = i + 1;
      return HK_HTTP_NEED_MORE;
    }
  }
  /* A CR as the last byte is checked again once the byte after it arrives. */
  parser->scan_pos = data[len - 1] == '\r' ? len - 1 : len;
  return HK_HTTP_NEED_MORE;
}

/* Splits the copied head into the request line and header lines and checks each. */
static hk_http_event_t parse_head(hk_http_parser_t *parser) {
  hk_http_request_t *req = &parser->request;
  const char *p = req->head.data, *end = req->head.data + req->head.len;
  while (p < end && (*p == '\r' || *p == '\n')) p++; /* leading empty lines */
  bool first = true;
  while (p < end) {
    const char *eol = memchr(p, '\r', (size_t)(end - p));
    size_t len = (size_t)(eol - p);
    if (len == 0) break; /* the blank line ending the head */
    const char *why = first ? parse_request_line(req, p, len) : parse_header_line(req, p, len);
    if (why != NULL) return fail(parser, 400, why);
    first = false;
    p = eol + 2;
  }
  return check_headers(parser);
}

/* ---- the entry point ---------------------------------------------------------------------- */

static hk_http_event_t feed_llhttp(hk_http_parser_t *parser, const char *data, size_t len,
                                   size_t *consumed) {
  llhttp_errno_t rc = llhttp_execute(&parser->llhttp, data, len);
  if (rc == HPE_OK) {
    *consumed = len;
    return HK_HTTP_NEED_MORE;
  }
  if (rc == HPE_PAUSED || rc == HPE_PAUSED_UPGRADE) {
    *consumed = (size_t)(llhttp_get_error_pos(&parser->llhttp) - data);
    if (rc == HPE_PAUSED_UPGRADE) {
      /* We never switch protocols: answer this request, then close. */
      parser->request.keep_alive = false;
      parser->state = HK_HTTP_STATE_DONE;
    }
    if (parser->state == HK_HTTP_STATE_DONE) return HK_HTTP_REQUEST;
    return HK_HTTP_NEED_MORE;
  }
  *consumed = len;
  if (parser->error_status != 0) return fail(parser, parser->error_status, parser->error_message);
  return fail(parser, 400, "malformed request");
}

/* ---- chunked framing ---------------------------------------------------------------------- */

/* llhttp 8 skips the two bytes after chunk data unread and accepts bare LF, obs-fold and
 * malformed field lines in the trailer section; this checks the chunked body's framing
 * (RFC 9112 §7.1) byte by byte before llhttp sees it.
 *
 * It also holds the body to max_body counting every byte the client chooses to send, not only
 * the data: chunk data, chunk extensions (from the first byte after the size digits to the CR)
 * and the trailer section's field lines (with their CRLFs). Otherwise a tiny body could carry
 * unbounded extensions or trailers, which we read and check but never keep. Not counted: the
 * size digits (at most 15 per chunk) and the CRLFs ending size lines and data, since a chunk
 * carries at least one data byte, so they are bounded by the data, and counting them would let a
 * chunked body hold less data than a Content-Length one under the same limit. Every limit is
 * checked at the byte that crosses it, so how the input was split into reads never matters. */

static bool in_size_line(int state) {
  return state >= CHUNK_SIZE && state <= CHUNK_EXT_AFTER_QUOTED;
}

/* Takes one byte out of what max_body still allows; false when nothing is left. */
static bool count_byte(hk_http_parser_t *parser) {
  if (parser->chunk_counted >= parser->max_body) return false;
  parser->chunk_counted++;
  return true;
}

/* Returns how many bytes of data are well-formed chunked framing within the limits. Stops after
 * the final CRLF (*status 0), at the end of data (*status 0), or at the first byte that is
 * malformed or crosses a limit (*status 400 or 413, *message what to tell the client). */
static size_t chunk_scan(hk_http_parser_t *parser, const char *data, size_t len, int *status,
                         const char **message) {
  *status = 0;
  *message = NULL;
  size_t i = 0;
  for (; i < len; i++) {
    unsigned char c = (unsigned char)data[i];
    int state = parser->chunk_state;
    if (in_size_line(state) && c != '\r') {
      if (++parser->chunk_line_len > HK_HTTP_MAX_CHUNK_LINE) goto line_too_long;
      bool digit = state == CHUNK_SIZE && hk_text_hex_value(c) >= 0;
      if (!digit && !count_byte(parser)) goto too_large; /* an extension byte */
    } else if ((state == CHUNK_TRAILER && c != '\r') || state == CHUNK_FIELD_NAME ||
               state == CHUNK_FIELD_VALUE || state == CHUNK_FIELD_LF) {
      if (!count_byte(parser)) goto too_large; /* a trailer field line byte */
    }
    switch (state) {
      case CHUNK_SIZE: {
        int d = hk_text_hex_value(c);
        if (d >= 0) {
          if (++parser->chunk_digits > 15) goto bad;
          parser->chunk_remaining = parser->chunk_remaining * 16 + (uint64_t)d;
        } else if (parser->chunk_digits == 0) {
          goto bad;
        } else if (c == '\r') {
          parser->chunk_state = CHUNK_SIZE_LF;
        } else if (c == ';') {
          parser->chunk_state = CHUNK_EXT_NAME0;
        } else if (c == ' ' || c == '\t') {
          parser->chunk_state = CHUNK_EXT_BWS;
        } else {
          goto bad;
        }
        break;
      }
      /* chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ), RFC 9112 §7.1.1 */
      case CHUNK_EXT_BWS:
        if (c == ';') parser->chunk_state = CHUNK_EXT_NAME0;
        else if (c != ' ' && c != '\t') goto bad;
        break;
      case CHUNK_EXT_NAME0:
        if (hk_text_is_tchar(c)) parser->chunk_state = CHUNK_EXT_NAME;
        else if (c != ' ' && c != '\t') goto bad;
        break;
      case CHUNK_EXT_NAME:
        if (c == '\r') parser->chunk_state = CHUNK_SIZE_LF;
        else if (c == ';') parser->chunk_state = CHUNK_EXT_NAME0;
        else if (c == '=') parser->chunk_state = CHUNK_EXT_VALUE0;
        else if (c == ' ' || c == '\t') parser->chunk_state = CHUNK_EXT_AFTER_NAME;
        else if (!hk_text_is_tchar(c)) goto bad;
        break;
      case CHUNK_EXT_AFTER_NAME:
        if (c == ';') parser->chunk_state = CHUNK_EXT_NAME0;
        else if (c == '=') parser->chunk_state = CHUNK_EXT_VALUE0;
        else if (c != ' ' && c != '\t') goto bad;
        break;
      case CHUNK_EXT_VALUE0:
        if (c == '"') parser->chunk_state = CHUNK_EXT_QUOTED;
        else if (hk_text_is_tchar(c)) parser->chunk_state = CHUNK_EXT_TOKEN;
        else if (c != ' ' && c != '\t') goto bad;
        break;
      case CHUNK_EXT_TOKEN:
      case CHUNK_EXT_AFTER_QUOTED:
        if (c == '\r') parser->chunk_state = CHUNK_SIZE_LF;
        else if (c == ';') parser->chunk_state = CHUNK_EXT_NAME0;
        else if (c == ' ' || c == '\t') parser->chunk_state = CHUNK_EXT_BWS;
        else if (parser->chunk_state != CHUNK_EXT_TOKEN || !hk_text_is_tchar(c)) goto bad;
        break;
      case CHUNK_EXT_QUOTED:
        if (c == '"') parser->chunk_state = CHUNK_EXT_AFTER_QUOTED;
        else if (c == '\\') parser->chunk_state = CHUNK_EXT_QUOTED_PAIR;
        else if (!is_field_vchar(c)) goto bad;
        break;
      case CHUNK_EXT_QUOTED_PAIR:
        if (!is_field_vchar(c)) goto bad;
        parser->chunk_state = CHUNK_EXT_QUOTED;
        break;
      case CHUNK_SIZE_LF:
        if (c != '\n') goto bad;
        parser->chunk_digits = 0;
        parser->chunk_line_len = 0;
        parser->chunk_state = parser->chunk_remaining > 0 ? CHUNK_DATA : CHUNK_TRAILER;
        break;
      case CHUNK_DATA: {
        size_t n = len - i;
        if (n > parser->chunk_remaining) n = (size_t)parser->chunk_remaining;
        assert(parser->chunk_counted <= parser->max_body);
        uint64_t room = parser->max_body - parser->chunk_counted;
        if (n > room) {
          i += (size_t)room; /* the first byte past the limit */
          goto too_large;
        }
        parser->chunk_counted += n;
        parser->chunk_remaining -= n;
        i += n - 1;
        if (parser->chunk_remaining == 0) parser->chunk_state = CHUNK_DATA_CR;
        break;
      }
      case CHUNK_DATA_CR:
        if (c != '\r') goto bad;
        parser->chunk_state = CHUNK_DATA_LF;
        break;
      case CHUNK_DATA_LF:
        if (c != '\n') goto bad;
        parser->chunk_state = CHUNK_SIZE;
        break;
      case CHUNK_TRAILER:
        if (c == '\r') parser->chunk_state = CHUNK_END_LF;
        else if (hk_text_is_tchar(c)) parser->chunk_state = CHUNK_FIELD_NAME;
        else goto bad;
        break;
      case CHUNK_FIELD_NAME:
        if (c == ':') parser->chunk_state = CHUNK_FIELD_VALUE;
        else if (!hk_text_is_tchar(c)) goto bad;
        break;
      case CHUNK_FIELD_VALUE:
        if (c == '\r') parser->chunk_state = CHUNK_FIELD_LF;
        else if (!is_field_vchar(c)) goto bad;
        break;
      case CHUNK_FIELD_LF:
        if (c != '\n') goto bad;
        parser->chunk_state = CHUNK_TRAILER;
        break;
      case CHUNK_END_LF:
        if (c != '\n') goto bad;
        parser->chunk_state = CHUNK_DONE;
        return i + 1;
      default:
        goto bad;
    }
  }
  return i;
bad:
  *status = 400;
  *message = "malformed chunked body";
  return i;
line_too_long:
  *status = 400;
  *message = "chunk line too long";
  return i;
too_large:
  *status = 413;
  *message = "request body too large";
  return i;
}

/* Feeds body bytes to llhttp; chunked bodies only as far as their framing is well-formed and
 * within the limits, so errors come in byte order whatever the reads were. */
static hk_http_event_t feed_body(hk_http_parser_t *parser, const char *data, size_t len,
                                 size_t *consumed) {
  if (!parser->request.chunked) return feed_llhttp(parser, data, len, consumed);
  int status;
  const char *message;
  size_t valid = chunk_scan(parser, data, len, &status, &message);
  hk_http_event_t ev = feed_llhttp(parser, data, valid, consumed);
  if (ev == HK_HTTP_ERROR) return ev;
  bool done = parser->chunk_state == CHUNK_DONE;
  if (ev == HK_HTTP_REQUEST && done && *consumed == valid) return ev;
  if (ev == HK_HTTP_NEED_MORE && status == 0 && !done) return ev;
  *consumed = len;
  if (status == 0) return fail(parser, 400, "malformed chunked body"); /* llhttp disagrees */
  return fail(parser, status, message);
}

hk_http_event_t hk_http_parse(hk_http_parser_t *parser, const char *data, size_t len,
                              size_t *consumed) {
  *consumed = 0;
  if (parser->state == HK_HTTP_STATE_FAILED) return HK_HTTP_ERROR;
  if (parser->state == HK_HTTP_STATE_DONE) return HK_HTTP_REQUEST;
  if (parser->state == HK_HTTP_STATE_BODY) return feed_body(parser, data, len, consumed);
  if (len == 0) return HK_HTTP_NEED_MORE;

  parser->state = HK_HTTP_STATE_HEAD;
  size_t head_len = 0;
  hk_http_event_t ev = scan_head(parser, data, len, &head_len);
  if (ev == HK_HTTP_ERROR || head_len == 0) return ev;

  hk_http_request_t *req = &parser->request;
  if (hk_buf_append(&req->head, data, head_len) != 0) return fail(parser, 503, "out of memory");
  ev = parse_head(parser);
  if (ev == HK_HTTP_ERROR) return ev;

  /* llhttp re-reads the head we just checked, then frames the body. */
  size_t used = 0;
  parser->state = HK_HTTP_STATE_BODY;
  ev = feed_llhttp(parser, data, head_len, &used);
  if (ev == HK_HTTP_ERROR) return ev;
  *consumed = head_len;
  if (ev == HK_HTTP_REQUEST) return ev;
  if (req->expect_continue) return HK_HTTP_CONTINUE;
  size_t more = 0;
  ev = feed_body(parser, data + head_len, len - head_len, &more);
  *consumed += more;
  return ev;
}

/* ---- helpers ------------------------------------------------------------------------------ */

const hk_http_header_t *hk_http_header_find(const hk_http_request_t *request, const char *name) {
  for (size_t i = 0; i < request->header_count; i++) {
    const hk_http_header_t *h = &request->headers[i];
    if (equals_ci(h->name, h->name_len, name)) return h;
  }
  return NULL;
}

const char *hk_http_reason(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
  }
}
