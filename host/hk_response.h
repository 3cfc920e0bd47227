/* hk_response: serialising a response (hk_request_t's) for the wire, and the gzip and slicing
 * its bodies use. Pure: buffers in, buffers out; hk_conn owns the socket and the pacing. */
#ifndef HK_RESPONSE_H
#define HK_RESPONSE_H

#include <stdbool.h>
#include <stddef.h>

#include <zlib.h>

#include "hk_buf.h"
#include "hk_request.h"

#define HK_RESPONSE_SLICE (64 * 1024) /* bytes of a buffered body per slice when compressed */

/* What the connection must do after the head (and a buffered body) went onto `out`. */
typedef struct hk_response_plan_s {
  bool keep_alive;         /* false: close once written (HTTP/1.0 streams, errors, draining) */
  hk_body_stream_t stream; /* produce != NULL: produce the body slice by slice (taken) */
  bool chunked;            /* frame the slices as chunks (HTTP/1.1) */
  z_stream *gzip;          /* compress the slices (taken; hk_gzip_free) */
} hk_response_plan_t;

/* Appends req->response's status line, headers and, when buffered, body to out. A body to
 * compress becomes a stream of HK_RESPONSE_SLICE slices, so compressing never holds a loop
 * for more than one slice; HEAD, 204, 304 and 1xx get no body (a stream is released). date is
 * the Date header's value. Returns 0 or -ENOMEM. */
int hk_response_serialize(hk_buf_t *out, hk_request_t *req, const char *date, bool keep_alive,
                          hk_response_plan_t *plan);

/* The status line, Date, X-Request-ID and (when not empty) Content-Type, as every response
 * starts; the caller adds the rest. Returns 0 or -ENOMEM. */
int hk_response_append_head_start(hk_buf_t *out, int status, const char *date, const char *request_id,
                                  const char *content_type);

z_stream *hk_gzip_new(void); /* NULL when out of memory */
void hk_gzip_free(z_stream *z); /* NULL is a no-op */
/* Compresses len bytes onto out; finish ends the gzip member. */
int hk_gzip_append(z_stream *z, const char *data, size_t len, bool finish, hk_buf_t *out);

#endif
