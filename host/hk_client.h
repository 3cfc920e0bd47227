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

typedef struct hk_client_header_s {
  const char *name; /* NUL-terminated, as received */
  const char *value; /* NUL-terminated, surrounding whitespace trimmed */
} hk_client_header_t;

typedef struct hk_client_opts_s {
  const char *method; /* NULL = "GET" */
  const char *url;    /* http:// or https:// only; redirects are not followed */
  const char *const *headers; /* "Name: value" lines */
  size_t header_count;
  const char *body; /* copied by hk_client_start */
  size_t body_len;
  uint64_t timeout_ms;         /* total; 0 = HK_CLIENT_DEFAULT_TIMEOUT_MS */
  uint64_t connect_timeout_ms; /* 0 = HK_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS */
  size_t max_response_bytes;   /* 0 = HK_CLIENT_DEFAULT_MAX_RESPONSE */
  /* When set, body bytes go here as they arrive instead of into result.body. Return 0 to go
   * on, non-zero to abort the call (done then gets HK_CLIENT_ERR_ABORTED). */
  int (*on_chunk)(void *data, const char *bytes, size_t len);
} hk_client_opts_t;

/* Valid only during the done callback. */
typedef struct hk_client_result_s {
  hk_client_error_t error;
  const char *message; /* human text for errors ("connection refused"), "" on success */
  long status;         /* HTTP status of the final response, 0 when none arrived */
  const hk_client_header_t *headers; /* response headers, in order received */
  size_t header_count;
  const char *body; /* NUL-terminated for convenience; not with on_chunk */
  size_t body_len;
  double seconds; /* total time */
} hk_client_result_t;

typedef void (*hk_client_done_cb)(void *data, const hk_client_result_t *result);

/* A client on `loop`. curl_global_init is the caller's (main's) job, once per process. */
int hk_client_new(uv_loop_t *loop, hk_client_t **out);

/* Cancels every call in flight (their done callbacks are not called) and closes the client's
 * handles; the memory is released from the handles' close callbacks, so the loop must run
 * once more afterwards (as uv_loop_close requires anyway). NULL is a no-op. */
void hk_client_close(hk_client_t *client);

/* Starts a call. `done` runs exactly once, from the loop, later — never from inside
 * hk_client_start — unless the call is cancelled first. `data` is passed to done and on_chunk.
 * Returns 0 and the call's handle in *call (may be NULL if the caller will never cancel), or
 * -EINVAL (bad URL scheme, method), -ENOMEM; then done is never called. */
int hk_client_start(hk_client_t *client, const hk_client_opts_t *opts, hk_client_done_cb done,
                    void *data, hk_client_call_t **call);

/* Stops a call in flight; its done callback will not run. The handle is invalid afterwards. */
void hk_client_cancel(hk_client_call_t *call);

/* Calls in flight, for tests and metrics. */
size_t hk_client_active(const hk_client_t *client);

#endif
