/* hk_client: outbound HTTP for one event loop — a libcurl multi handle driven by libuv (socket
 * callbacks → uv_poll, curl's timer → uv_timer), so a call never blocks the loop. Connections
 * are reused across requests. Knows nothing of Lua: hk_lua turns a request into a coroutine
 * yield and its completion into a resume. One client per worker loop; not thread-safe. */
#ifndef HK_CLIENT_H
#define HK_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

typedef struct hk_client_s hk_client_t;
typedef struct hk_client_call_s hk_client_call_t; /* one transfer in flight */

#define HK_CLIENT_DEFAULT_TIMEOUT_MS 60000u
#define HK_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS 5000u
#define HK_CLIENT_DEFAULT_MAX_RESPONSE (16u * 1024 * 1024)

/* Why a call failed (hk_client_result_t.error). */
typedef enum hk_client_error_e {
  HK_CLIENT_OK = 0,
  HK_CLIENT_ERR_CONNECT = -1,   /* refused, unreachable, DNS failure */
  HK_CLIENT_ERR_TIMEOUT = -2,   /* connect or total timeout, or a stalled transfer */
  HK_CLIENT_ERR_TOO_LARGE = -3, /* response body over max_response_bytes */
  HK_CLIENT_ERR_ABORTED = -4,   /* on_chunk asked to stop */
  HK_CLIENT_ERR_PROTOCOL = -5,  /* malformed response, TLS failure, anything else */
} hk_client_error_t;

#define HK_CLIENT_CHUNK_PAUSE 2

typedef struct hk_client_header_s {
  const char *name; /* NUL-terminated, as received */
  const char *value; /* NUL-terminated, surrounding whitespace trimmed */
} hk_client_header_t;

/* Everything is read (and copied where kept) inside hk_client_start; nothing is borrowed after.
 * curl adds Host, an Accept and, for a body, Content-Length; it adds no Content-Type and no
 * "Expect: 100-continue". Proxies named by http_proxy/https_proxy/no_proxy are honoured. */
typedef struct hk_client_opts_s {
  const char *method; /* NULL = "GET"; an HTTP token (case kept), else -EINVAL. HEAD never
                         reads a body and takes none (-EINVAL). */
  const char *url;    /* http:// or https:// only (scheme case-insensitive; spaces and control
                         characters → -EINVAL); redirects are not followed */
  const char *const *headers; /* "Name: value" lines; a token name and no CR/LF, else -EINVAL.
                                 "Name:" with a blank value is sent as an empty header. Caller
                                 lines come first, so they override curl's defaults. */
  size_t header_count;
  const char *body; /* copied by hk_client_start; sent with Content-Length (also when
                       body_len is 0). NULL = no body, except POST/PUT/PATCH, which send an
                       empty one (Content-Length: 0). */
  size_t body_len;
  uint64_t timeout_ms;         /* total; 0 = HK_CLIENT_DEFAULT_TIMEOUT_MS */
  uint64_t connect_timeout_ms; /* 0 = HK_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS */
  /* Besides these two, a streamed call (on_chunk) moving less than 1 byte/s for 120 s fails
   * with HK_CLIENT_ERR_TIMEOUT (curl's LOW_SPEED, counted from the start of the transfer).
   * Buffered calls are bounded by the total timeout alone. */
  size_t max_response_bytes;   /* 0 = HK_CLIENT_DEFAULT_MAX_RESPONSE; a buffered body only
                                  (not applied with on_chunk) */
  /* When set, body bytes go here as they arrive instead of into result.body. Return 0 to go
   * on, HK_CLIENT_CHUNK_PAUSE to pause the transfer without taking these bytes (curl offers
   * them again after hk_client_resume: backpressure from a slow consumer), any other non-zero
   * value to abort the call (done then gets HK_CLIENT_ERR_ABORTED). It runs inside
   * curl: hk_client_start, hk_client_cancel and hk_client_close may be called from it (they
   * take effect as soon as curl returns, and a call cancelled here never reaches done). */
  int (*on_chunk)(void *data, const char *bytes, size_t len);
} hk_client_opts_t;

/* Valid only during the done callback. Errors map curl's: refused/unresolvable → CONNECT,
 * any timeout → TIMEOUT, a Content-Length or a body over the cap → TOO_LARGE, on_chunk's
 * non-zero → ABORTED, the rest (empty reply, HTTP/0.9, TLS, bad URL, out of memory) →
 * PROTOCOL; status/headers may still be set on an error after the headers arrived. */
typedef struct hk_client_result_s {
  hk_client_error_t error;
  const char *message; /* human text for errors ("connection refused"), "" on success */
  long status;         /* HTTP status of the final response, 0 when none arrived */
  const hk_client_header_t *headers; /* response headers, in order received, of the final
                                        response (1xx headers dropped; trailers appended;
                                        folded lines joined); NULL when header_count is 0 */
  size_t header_count;
  const char *body; /* NUL-terminated for convenience, never NULL; "" (len 0) with on_chunk */
  size_t body_len;
  double seconds; /* total time */
} hk_client_result_t;

typedef void (*hk_client_done_cb)(void *data, const hk_client_result_t *result);

/* A client on `loop`. curl_global_init is the caller's (main's) job, once per process. */
int hk_client_new(uv_loop_t *loop, hk_client_t **out);

/* Cancels every call in flight (their done callbacks are not called) and closes the client's
 * handles; the memory is released from the handles' close callbacks, so the loop must run
 * once more afterwards (as uv_loop_close requires anyway). NULL is a no-op. Every call handle
 * is invalid afterwards (do not hk_client_cancel them); hk_client_start then returns -EINVAL.
 * May be called from done or on_chunk. */
void hk_client_close(hk_client_t *client);

/* Starts a call. `done` runs exactly once, from the loop, later — never from inside
 * hk_client_start — unless the call is cancelled first. `data` is passed to done and on_chunk.
 * Returns 0 and the call's handle in *call (may be NULL if the caller will never cancel), or
 * -EINVAL (bad URL scheme, method, header line; HEAD with a body; a closed client), -ENOMEM;
 * then done is never called and *call is NULL. The handle is valid until done returns (a
 * cancel from inside its own done is a no-op), the call is cancelled, or the client closes. */
int hk_client_start(hk_client_t *client, const hk_client_opts_t *opts, hk_client_done_cb done,
                    void *data, hk_client_call_t **call);

/* Stops a call in flight; its done callback will not run. The handle is invalid afterwards.
 * Its connection, if it had one, is closed rather than reused. NULL is a no-op. */
void hk_client_cancel(hk_client_call_t *call);

/* Lets a call paused by on_chunk go on. on_chunk and even done may run before it returns.
 * Returns 0 (also when the call was not paused), -EINVAL for a call that is not in flight,
 * -EBUSY from inside on_chunk (resume from a loop callback instead). */
int hk_client_resume(hk_client_call_t *call);

/* Calls in flight, for tests and metrics. */
size_t hk_client_active(const hk_client_t *client);

#endif
