/* hk_client: outbound HTTP for one event loop. Owns a libcurl multi handle, the uv_poll_t per
 * curl socket and the one uv_timer_t that drive it (curl_multi_socket_action), and each call's
 * easy handle and response buffers. Knows nothing of Lua or of the server; curl_global_init is
 * main's. Entry points: hk_client_new, hk_client_start, hk_client_cancel, hk_client_close.
 *
 * Lifecycle of a call: hk_client_start validates the options, builds an easy handle and adds it
 * to the multi — nothing else; curl then asks for a timer, and the transfer runs from uv
 * callbacks only (on_poll, on_timer → socket_action → settle). settle() drains
 * curl_multi_info_read and finishes each CURLMSG_DONE call: the call leaves the client's list,
 * its easy handle leaves the multi (its connection stays in the multi's cache for reuse), `done`
 * runs, then the call is freed. So `done` always runs from a loop callback, never from inside
 * hk_client_start.
 *
 * Re-entrancy: user code runs in two places. `done` runs outside curl (after socket_action has
 * returned), so it may start, cancel and even close freely. `on_chunk` runs inside curl's write
 * callback, where curl forbids curl_multi_add_handle/remove_handle/cleanup; a start, cancel or
 * close made from there is recorded (pending_add, CALL_CANCELLED, close_requested) and carried
 * out by settle() as soon as socket_action returns.
 *
 * Memory: the client struct is freed from the close callback of its last uv handle (the timer
 * and every poll handle are counted in handles_open), so hk_client_close needs one more turn of
 * the loop. A call is freed when its done callback returns, when cancelled (from on_chunk: as
 * soon as curl returns), or by hk_client_close. */
#include "hk_client.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "hk_buf.h"
#include "hk_text.h"

/* Connections the multi keeps open for reuse, across all hosts. */
#define MAX_CACHED_CONNECTIONS 64L
/* A streamed transfer (on_chunk) that moves fewer than LOW_SPEED_BYTES per second for
 * STALL_SECONDS fails with HK_CLIENT_ERR_TIMEOUT. curl measures this from the start of the
 * transfer, so it also bounds the wait for the first byte: generous enough for a cold model
 * load. Buffered calls have no stall limit: a non-streaming completion legitimately sends
 * nothing until it is done, and the total timeout bounds it. */
#ifndef HK_CLIENT_STALL_SECONDS
#define HK_CLIENT_STALL_SECONDS 120L
#endif
#define LOW_SPEED_BYTES 1L
/* Methods are HTTP tokens; anything longer than this is a mistake, not a method. */
#define MAX_METHOD_LEN 32

/* ---- types ------------------------------------------------------------------------------- */

typedef enum call_state_e {
  CALL_ACTIVE,    /* in the client's list; done will run */
  CALL_CANCELLED, /* cancelled from inside curl: still listed, freed by settle(), done won't run */
  CALL_FINISHING, /* out of the list, its done callback is running; cancel is a no-op */
} call_state_t;

/* Why our own write/header callback stopped the transfer (curl then reports
 * CURLE_WRITE_ERROR, which alone cannot tell these apart). */
typedef enum abort_reason_e {
  ABORT_NONE,
  ABORT_TOO_LARGE,
  ABORT_ON_CHUNK,
  ABORT_NO_MEMORY,
} abort_reason_t;

/* Where a response header lives in call->header_store: offsets, because the store may move. */
typedef struct header_offsets_s {
  size_t name;
  size_t value;
} header_offsets_t;

struct hk_client_call_s {
  hk_client_t *client;
  hk_client_call_t *prev, *next; /* client->calls, while ACTIVE or CANCELLED */
  call_state_t state;
  bool added;       /* in the multi */
  bool paused;      /* on_chunk asked to pause; hk_client_resume lets curl go on */
  bool pending_add; /* started from inside curl; settle() adds it */
  CURL *easy;       /* owned; CURLOPT_PRIVATE points back here */
  struct curl_slist *request_headers; /* owned; curl borrows it until the easy is cleaned up */
  char *request_body;                 /* owned copy of opts->body; curl borrows it likewise */
  hk_client_done_cb done;
  int (*on_chunk)(void *data, const char *bytes, size_t len);
  void *data;
  size_t max_response_bytes;
  abort_reason_t abort_reason;
  hk_buf_t body;         /* response body (unless on_chunk) */
  hk_buf_t header_store; /* "name\0value\0" for each header of the latest response */
  header_offsets_t *header_offsets;
  hk_client_header_t *headers; /* grows with header_offsets; filled in when done runs */
  size_t header_count, header_cap;
  char error[CURL_ERROR_SIZE]; /* CURLOPT_ERRORBUFFER, then our own message */
};

/* One per socket curl asks us to watch; curl_multi_assign'ed to the socket. Freed in the poll
 * handle's close callback. */
typedef struct sock_s {
  uv_poll_t poll;
  hk_client_t *client;
  curl_socket_t fd;
  struct sock_s *prev, *next; /* client->socks, until closed */
} sock_t;

struct hk_client_s {
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t timer;        /* curl's timeout (CURLMOPT_TIMERFUNCTION) */
  hk_client_call_t *calls; /* ACTIVE and CANCELLED calls */
  sock_t *socks;           /* poll handles not yet closing */
  size_t active;           /* ACTIVE calls: done callbacks still owed */
  int handles_open;        /* uv handles whose close callback has not run; 0 frees the client */
  bool in_curl;            /* inside curl_multi_socket_action: on_chunk may be running */
  bool deferred;           /* some call is CANCELLED or pending_add */
  bool close_requested;    /* hk_client_close was called from inside curl */
  bool closing;            /* close_now has run: no multi, handles closing */
};

static void settle(hk_client_t *client);
static void close_now(hk_client_t *client);

/* ---- calls ------------------------------------------------------------------------------- */

static void call_link(hk_client_call_t *call) {
  hk_client_t *client = call->client;
  call->prev = NULL;
  call->next = client->calls;
  if (client->calls) client->calls->prev = call;
  client->calls = call;
}

static void call_unlink(hk_client_call_t *call) {
  hk_client_t *client = call->client;
  if (call->prev) call->prev->next = call->next;
  else client->calls = call->next;
  if (call->next) call->next->prev = call->prev;
  call->prev = call->next = NULL;
}

/* Releases everything the call owns. Must not run inside curl (remove_handle). NULL is a no-op. */
static void call_free(hk_client_call_t *call) {
  if (call == NULL) return;
  if (call->easy) {
    if (call->added) curl_multi_remove_handle(call->client->multi, call->easy);
    curl_easy_cleanup(call->easy);
  }
  curl_slist_free_all(call->request_headers);
  free(call->request_body);
  hk_buf_free(&call->body);
  hk_buf_free(&call->header_store);
  free(call->header_offsets);
  free(call->headers);
  free(call);
}

/* Forgets the headers collected so far: a new status line starts a new response (after a 1xx,
 * or a proxy's CONNECT answer). */
static void headers_reset(hk_client_call_t *call) {
  hk_buf_reset(&call->header_store);
  call->header_count = 0;
}

/* Appends `text` to the value of the last header (an obsolete folded continuation line). */
static int header_continue(hk_client_call_t *call, const char *text, size_t len) {
  if (call->header_count == 0 || len == 0) return 0;
  hk_buf_t *store = &call->header_store;
  assert(store->len > 0 && store->data[store->len - 1] == '\0');
  /* The value's NUL gives way to " text\0": len + 1 more bytes, reserved first so the appends
   * below cannot fail halfway. */
  if (hk_buf_reserve(store, len + 1) != 0) return -ENOMEM;
  store->len--;
  hk_buf_append_char(store, ' ');
  hk_buf_append(store, text, len);
  hk_buf_append_char(store, '\0');
  return 0;
}

static int header_add(hk_client_call_t *call, const char *name, size_t name_len, const char *value,
                      size_t value_len) {
  if (call->header_count == call->header_cap) {
    size_t cap = call->header_cap ? call->header_cap * 2 : 16;
    header_offsets_t *offsets = realloc(call->header_offsets, cap * sizeof *offsets);
    if (offsets == NULL) return -ENOMEM;
    call->header_offsets = offsets;
    hk_client_header_t *headers = realloc(call->headers, cap * sizeof *headers);
    if (headers == NULL) return -ENOMEM;
    call->headers = headers;
    call->header_cap = cap;
  }
  hk_buf_t *store = &call->header_store;
  size_t mark = store->len;
  if (hk_buf_reserve(store, name_len + value_len + 2) != 0) return -ENOMEM;
  /* Cannot fail now that the room is reserved. */
  hk_buf_append(store, name, name_len);
  hk_buf_append_char(store, '\0');
  hk_buf_append(store, value, value_len);
  hk_buf_append_char(store, '\0');
  call->header_offsets[call->header_count].name = mark;
  call->header_offsets[call->header_count].value = mark + name_len + 1;
  call->header_count++;
  return 0;
}

static bool is_blank(char c) { return c == ' ' || c == '\t'; }

/* CURLOPT_HEADERFUNCTION: one raw header line per call, status lines and the blank line that
 * ends a header block included; trailers of a chunked body arrive here too. */
static size_t on_header(char *line, size_t size, size_t count, void *userp) {
  hk_client_call_t *call = userp;
  size_t len = size * count;
  if (call->state != CALL_ACTIVE) return 0; /* cancelled from inside curl: stop */
  size_t end = len;
  while (end > 0 && (line[end - 1] == '\n' || line[end - 1] == '\r')) end--;
  if (end == 0) return len; /* end of a header block */
  if (end >= 5 && memcmp(line, "HTTP/", 5) == 0) {
    headers_reset(call);
    return len;
  }
  int rc = 0;
  if (is_blank(line[0])) {
    size_t start = 0;
    while (start < end && is_blank(line[start])) start++;
    while (end > start && is_blank(line[end - 1])) end--;
    rc = header_continue(call, line + start, end - start);
  } else {
    const char *colon = memchr(line, ':', end);
    if (colon == NULL || colon == line) return len; /* not a header; curl would have refused it */
    size_t name_len = (size_t)(colon - line);
    size_t start = name_len + 1;
    while (start < end && is_blank(line[start])) start++;
    while (end > start && is_blank(line[end - 1])) end--;
    rc = header_add(call, line, name_len, line + start, end - start);
  }
  if (rc != 0) {
    call->abort_reason = ABORT_NO_MEMORY;
    return 0;
  }
  return len;
}

/* CURLOPT_WRITEFUNCTION: body bytes, after any transfer decoding. Returning less than `len`
 * makes curl end the transfer with CURLE_WRITE_ERROR; abort_reason says why. */
static size_t on_write(char *bytes, size_t size, size_t count, void *userp) {
  hk_client_call_t *call = userp;
  size_t len = size * count;
  if (call->state != CALL_ACTIVE) return 0; /* 0 < len: stop (len 0 calls don't matter) */
  if (len == 0) return 0;
  if (call->on_chunk) {
    /* User code inside curl: see "Re-entrancy" at the top. */
    int verdict = call->on_chunk(call->data, bytes, len);
    if (verdict == HK_CLIENT_CHUNK_PAUSE && call->state == CALL_ACTIVE) {
      /* The bytes were not taken: curl keeps them and offers them again after the resume. */
      call->paused = true;
      return CURL_WRITEFUNC_PAUSE;
    }
    if (verdict != 0) {
      if (call->abort_reason == ABORT_NONE) call->abort_reason = ABORT_ON_CHUNK;
      return 0;
    }
    /* on_chunk may have cancelled this very call or closed the client; curl still owns the
     * easy handle, so stopping here is all that is needed. */
    return call->state == CALL_ACTIVE ? len : 0;
  }
  if (len > call->max_response_bytes - call->body.len) {
    call->abort_reason = ABORT_TOO_LARGE;
    return 0;
  }
  if (hk_buf_append(&call->body, bytes, len) != 0) {
    call->abort_reason = ABORT_NO_MEMORY;
    return 0;
  }
  return len;
}

static hk_client_error_t map_error(hk_client_call_t *call, CURLcode code) {
  switch (code) {
    case CURLE_OK: return HK_CLIENT_OK;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY: return HK_CLIENT_ERR_CONNECT;
    case CURLE_OPERATION_TIMEDOUT: return HK_CLIENT_ERR_TIMEOUT;
    case CURLE_FILESIZE_EXCEEDED: /* Content-Length over CURLOPT_MAXFILESIZE_LARGE */
      snprintf(call->error, sizeof call->error, "response body larger than %zu bytes",
               call->max_response_bytes);
      return HK_CLIENT_ERR_TOO_LARGE;
    case CURLE_WRITE_ERROR:
      switch (call->abort_reason) {
        case ABORT_TOO_LARGE:
          snprintf(call->error, sizeof call->error, "response body larger than %zu bytes",
                   call->max_response_bytes);
          return HK_CLIENT_ERR_TOO_LARGE;
        case ABORT_ON_CHUNK:
          snprintf(call->error, sizeof call->error, "stopped by on_chunk");
          return HK_CLIENT_ERR_ABORTED;
        case ABORT_NO_MEMORY:
          snprintf(call->error, sizeof call->error, "out of memory");
          return HK_CLIENT_ERR_PROTOCOL;
        case ABORT_NONE: break;
      }
      return HK_CLIENT_ERR_PROTOCOL;
    default: return HK_CLIENT_ERR_PROTOCOL;
  }
}

/* Reports a finished transfer and frees the call. Runs outside curl (from settle), so `done`
 * may start, cancel or close; the call is out of the list and the multi before `done` runs. */
static void call_finish(hk_client_call_t *call, CURLcode code) {
  hk_client_t *client = call->client;
  assert(call->state == CALL_ACTIVE && !client->in_curl);
  call_unlink(call);
  call->state = CALL_FINISHING;
  client->active--;
  if (call->added) curl_multi_remove_handle(client->multi, call->easy); /* connection → cache */
  call->added = false;

  hk_client_result_t result = {0};
  result.error = map_error(call, code);
  if (result.error == HK_CLIENT_OK) result.message = "";
  else if (call->error[0] != '\0') result.message = call->error;
  else result.message = curl_easy_strerror(code);
  curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &result.status);
  curl_easy_getinfo(call->easy, CURLINFO_TOTAL_TIME, &result.seconds);
  for (size_t i = 0; i < call->header_count; i++) {
    call->headers[i].name = call->header_store.data + call->header_offsets[i].name;
    call->headers[i].value = call->header_store.data + call->header_offsets[i].value;
  }
  result.headers = call->header_count ? call->headers : NULL;
  result.header_count = call->header_count;
  result.body = call->body.data ? call->body.data : "";
  result.body_len = call->body.len;
  call->done(call->data, &result);
  call_free(call);
}

/* ---- driving curl from libuv ------------------------------------------------------------- */

static void socket_action(hk_client_t *client, curl_socket_t fd, int flags) {
  int running = 0;
  assert(!client->in_curl && !client->closing);
  client->in_curl = true;
  /* A failure here (out of memory, a refused poll handle) has no call to blame; the transfers
   * concerned fail by their own timeouts. */
  (void)curl_multi_socket_action(client->multi, fd, flags, &running);
  client->in_curl = false;
  settle(client);
}

/* Carries out what was asked from inside curl: frees calls cancelled there, adds calls started
 * there. A failed late add is reported through done, since hk_client_start already returned 0. */
static void run_deferred(hk_client_t *client) {
  client->deferred = false;
restart:
  for (hk_client_call_t *call = client->calls, *next; call != NULL; call = next) {
    next = call->next;
    if (call->state == CALL_CANCELLED) {
      call_unlink(call);
      call_free(call);
    } else if (call->pending_add) {
      call->pending_add = false;
      if (curl_multi_add_handle(client->multi, call->easy) == CURLM_OK) {
        call->added = true;
      } else {
        call_finish(call, CURLE_OUT_OF_MEMORY); /* runs user code: the list may have changed */
        if (client->closing) return;
        goto restart;
      }
    }
  }
}

/* After every socket_action: apply deferred requests, then report finished transfers. */
static void settle(hk_client_t *client) {
  if (client->close_requested) {
    close_now(client);
    return;
  }
  if (client->deferred) run_deferred(client);
  while (!client->closing) {
    int left = 0;
    CURLMsg *msg = curl_multi_info_read(client->multi, &left);
    if (msg == NULL) break;
    if (msg->msg != CURLMSG_DONE) continue;
    CURLcode code = msg->data.result; /* msg dies with remove_handle */
    char *private = NULL;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &private);
    hk_client_call_t *call = (hk_client_call_t *)private;
    assert(call != NULL && call->state == CALL_ACTIVE);
    call_finish(call, code);
    /* done may have cancelled or started calls (directly: we are outside curl) or closed us. */
  }
}

static void on_timer(uv_timer_t *timer) {
  hk_client_t *client = timer->data;
  socket_action(client, CURL_SOCKET_TIMEOUT, 0);
}

/* CURLMOPT_TIMERFUNCTION: -1 stops the timer; 0 means "soon", which the timer delivers on the
 * next loop iteration — curl must not be re-entered from here. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp) {
  hk_client_t *client = userp;
  (void)multi;
  if (client->closing) return 0;
  if (timeout_ms < 0) uv_timer_stop(&client->timer);
  else uv_timer_start(&client->timer, on_timer, (uint64_t)timeout_ms, 0);
  return 0;
}

static void on_poll(uv_poll_t *poll, int status, int events) {
  sock_t *sock = poll->data;
  int flags = 0;
  if (status < 0) {
    flags = CURL_CSELECT_ERR; /* libuv has stopped the handle; curl decides what follows */
  } else {
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  }
  socket_action(sock->client, sock->fd, flags);
}

static void on_sock_closed(uv_handle_t *handle) {
  sock_t *sock = handle->data;
  hk_client_t *client = sock->client;
  free(sock);
  if (--client->handles_open == 0 && client->closing) free(client);
}

static void sock_close(sock_t *sock) {
  hk_client_t *client = sock->client;
  if (sock->prev) sock->prev->next = sock->next;
  else client->socks = sock->next;
  if (sock->next) sock->next->prev = sock->prev;
  /* uv_close detaches the fd at once, so curl may close it and reuse the number right away. */
  uv_close((uv_handle_t *)&sock->poll, on_sock_closed);
}

/* CURLMOPT_SOCKETFUNCTION: what curl wants to know about `fd`; `socketp` is our sock_t once
 * assigned. Returning -1 makes curl fail the socket_action in progress. */
static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
  hk_client_t *client = userp;
  sock_t *sock = socketp;
  (void)easy;
  if (what == CURL_POLL_REMOVE) {
    /* curl forgets the socket (and our assignment) itself after this. */
    if (sock != NULL) sock_close(sock);
    return 0;
  }
  if (client->closing) return 0;
  if (sock == NULL) {
    sock = calloc(1, sizeof *sock);
    if (sock == NULL) return -1;
    if (uv_poll_init_socket(client->loop, &sock->poll, fd) != 0) {
      free(sock); /* a failed init leaves nothing registered */
      return -1;
    }
    sock->poll.data = sock;
    sock->client = client;
    sock->fd = fd;
    sock->next = client->socks;
    if (client->socks) client->socks->prev = sock;
    client->socks = sock;
    client->handles_open++;
    curl_multi_assign(client->multi, fd, sock);
  }
  int events = 0;
  if (what & CURL_POLL_IN) events |= UV_READABLE;
  if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
  if (events == 0) uv_poll_stop(&sock->poll);
  else if (uv_poll_start(&sock->poll, events, on_poll) != 0) return -1;
  return 0;
}

/* ---- client ------------------------------------------------------------------------------ */

int hk_client_new(uv_loop_t *loop, hk_client_t **out) {
  *out = NULL;
  hk_client_t *client = calloc(1, sizeof *client);
  if (client == NULL) return -ENOMEM;
  client->loop = loop;
  client->multi = curl_multi_init();
  if (client->multi == NULL) goto fail;
  if (curl_multi_setopt(client->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket) != CURLM_OK ||
      curl_multi_setopt(client->multi, CURLMOPT_SOCKETDATA, client) != CURLM_OK ||
      curl_multi_setopt(client->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer) != CURLM_OK ||
      curl_multi_setopt(client->multi, CURLMOPT_TIMERDATA, client) != CURLM_OK ||
      curl_multi_setopt(client->multi, CURLMOPT_MAXCONNECTS, MAX_CACHED_CONNECTIONS) != CURLM_OK)
    goto fail;
  uv_timer_init(loop, &client->timer); /* cannot fail */
  client->timer.data = client;
  client->handles_open = 1;
  *out = client;
  return 0;
fail:
  if (client->multi) curl_multi_cleanup(client->multi);
  free(client);
  return -ENOMEM;
}

static void on_timer_closed(uv_handle_t *handle) {
  hk_client_t *client = handle->data;
  if (--client->handles_open == 0) free(client);
}

/* Frees every call without its callback, then the multi (which closes the cached connections,
 * telling on_curl_socket to REMOVE their sockets), then closes our uv handles. */
static void close_now(hk_client_t *client) {
  assert(!client->in_curl && !client->closing);
  client->closing = true;
  client->close_requested = false;
  while (client->calls != NULL) {
    hk_client_call_t *call = client->calls;
    call_unlink(call);
    call_free(call);
  }
  client->active = 0;
  curl_multi_cleanup(client->multi);
  client->multi = NULL;
  while (client->socks != NULL) sock_close(client->socks);
  uv_timer_stop(&client->timer);
  uv_close((uv_handle_t *)&client->timer, on_timer_closed);
}

void hk_client_close(hk_client_t *client) {
  if (client == NULL || client->closing || client->close_requested) return;
  if (client->in_curl) {
    /* From on_chunk: curl_multi_cleanup is refused inside curl. Stop every call now (their
     * callbacks return 0 from here on) and close when socket_action returns. */
    for (hk_client_call_t *call = client->calls; call != NULL; call = call->next)
      call->state = CALL_CANCELLED;
    client->active = 0;
    client->close_requested = true;
    return;
  }
  close_now(client);
}

size_t hk_client_active(const hk_client_t *client) { return client->active; }

/* ---- starting and cancelling ------------------------------------------------------------- */

static bool valid_url(const char *url) {
  if (url == NULL) return false;
  if (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0) return false;
  for (const unsigned char *p = (const unsigned char *)url; *p; p++)
    if (*p <= ' ' || *p == 0x7f) return false; /* curl would refuse it later, less clearly */
  return true;
}

static bool valid_method(const char *method) {
  size_t len = strlen(method);
  return len <= MAX_METHOD_LEN && hk_text_is_token(method, len);
}

/* Appends one caller header line to `list`. "Name: value" goes as is; a blank value becomes
 * curl's "Name;" form, because curl reads "Name:" as "remove this header". Returns -EINVAL
 * for a line that is not a header (no token name, CR or LF inside). */
static int add_request_header(struct curl_slist **list, const char *line) {
  if (line == NULL) return -EINVAL;
  const char *colon = strchr(line, ':');
  if (colon == NULL || colon == line) return -EINVAL;
  if (!hk_text_is_token(line, (size_t)(colon - line))) return -EINVAL;
  if (strpbrk(colon, "\r\n") != NULL) return -EINVAL;
  const char *value = colon + 1;
  while (is_blank(*value)) value++;
  struct curl_slist *grown;
  if (*value != '\0') {
    grown = curl_slist_append(*list, line);
  } else {
    size_t name_len = (size_t)(colon - line);
    char *empty = malloc(name_len + 2);
    if (empty == NULL) return -ENOMEM;
    memcpy(empty, line, name_len);
    empty[name_len] = ';';
    empty[name_len + 1] = '\0';
    grown = curl_slist_append(*list, empty); /* copies */
    free(empty);
  }
  if (grown == NULL) return -ENOMEM;
  *list = grown;
  return 0;
}

static long clamp_ms(uint64_t ms) { return ms > (uint64_t)LONG_MAX ? LONG_MAX : (long)ms; }

/* Sets every option of the easy handle; any failure is out of memory in practice (curl copies
 * string options). */
static int setup_easy(hk_client_call_t *call, const hk_client_opts_t *opts, const char *method) {
  CURL *e = call->easy;
  bool head = strcmp(method, "HEAD") == 0;
  bool ok = true;
  ok &= curl_easy_setopt(e, CURLOPT_URL, opts->url) == CURLE_OK;
  ok &= curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)call) == CURLE_OK;
  ok &= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK;
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85.0 */
  ok &= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK;
  ok &= curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") == CURLE_OK;
#else
  ok &= curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS)) == CURLE_OK;
  ok &= curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS)) ==
        CURLE_OK;
#endif
  ok &= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK;
  ok &= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                         clamp_ms(opts->connect_timeout_ms ? opts->connect_timeout_ms
                                                           : HK_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS)) ==
        CURLE_OK;
  ok &= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS,
                         clamp_ms(opts->timeout_ms ? opts->timeout_ms
                                                   : HK_CLIENT_DEFAULT_TIMEOUT_MS)) == CURLE_OK;
  if (opts->on_chunk != NULL) {
    ok &= curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, LOW_SPEED_BYTES) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long)HK_CLIENT_STALL_SECONDS) == CURLE_OK;
  }
  ok &= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, call->error) == CURLE_OK;
  ok &= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header) == CURLE_OK;
  ok &= curl_easy_setopt(e, CURLOPT_HEADERDATA, call) == CURLE_OK;
  ok &= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write) == CURLE_OK;
  ok &= curl_easy_setopt(e, CURLOPT_WRITEDATA, call) == CURLE_OK;
  /* A Content-Length over the cap fails before any byte is buffered; the write callback still
   * counts, for chunked and close-delimited bodies. HEAD's Content-Length has no body. */
  if (!call->on_chunk && !head && (uint64_t)call->max_response_bytes <= (uint64_t)INT64_MAX)
    ok &= curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)call->max_response_bytes) ==
          CURLE_OK;

  if (head) {
    ok &= curl_easy_setopt(e, CURLOPT_NOBODY, 1L) == CURLE_OK;
  } else if (call->request_body != NULL) {
    ok &= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)opts->body_len) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_POSTFIELDS, call->request_body) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method) == CURLE_OK;
  } else if (strcmp(method, "GET") == 0) {
    ok &= curl_easy_setopt(e, CURLOPT_HTTPGET, 1L) == CURLE_OK;
  } else {
    ok &= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method) == CURLE_OK;
  }

  struct curl_slist *list = NULL;
  for (size_t i = 0; i < opts->header_count; i++) {
    int rc = add_request_header(&list, opts->headers[i]);
    if (rc != 0) {
      curl_slist_free_all(list);
      return rc;
    }
  }
  /* After the caller's lines, so theirs win (curl honours the first match): no
   * "Expect: 100-continue" round trip, and no invented form Content-Type for bodies. */
  static const char *const ours[] = {"Expect:", "Content-Type:"};
  for (size_t i = 0; i < sizeof ours / sizeof ours[0]; i++) {
    struct curl_slist *grown = curl_slist_append(list, ours[i]);
    if (grown == NULL) {
      curl_slist_free_all(list);
      return -ENOMEM;
    }
    list = grown;
  }
  call->request_headers = list;
  ok &= curl_easy_setopt(e, CURLOPT_HTTPHEADER, list) == CURLE_OK;
  return ok ? 0 : -ENOMEM;
}

int hk_client_start(hk_client_t *client, const hk_client_opts_t *opts, hk_client_done_cb done,
                    void *data, hk_client_call_t **out) {
  if (out) *out = NULL;
  if (client == NULL || opts == NULL || done == NULL) return -EINVAL;
  if (client->closing || client->close_requested) return -EINVAL;
  const char *method = opts->method ? opts->method : "GET";
  if (!valid_url(opts->url) || !valid_method(method)) return -EINVAL;
  if (opts->body == NULL && opts->body_len != 0) return -EINVAL;
  if (opts->body != NULL && strcmp(method, "HEAD") == 0) return -EINVAL;
  if (opts->header_count != 0 && opts->headers == NULL) return -EINVAL;

  int rc = -ENOMEM;
  hk_client_call_t *call = calloc(1, sizeof *call);
  if (call == NULL) return -ENOMEM;
  call->client = client;
  call->state = CALL_ACTIVE;
  call->done = done;
  call->data = data;
  call->on_chunk = opts->on_chunk;
  call->max_response_bytes =
      opts->max_response_bytes ? opts->max_response_bytes : HK_CLIENT_DEFAULT_MAX_RESPONSE;
  hk_buf_init(&call->body);
  hk_buf_init(&call->header_store);
  /* A body, even an empty one, is sent with Content-Length; so is an empty POST/PUT/PATCH,
   * which some servers refuse without one. */
  bool needs_body = opts->body != NULL || strcmp(method, "POST") == 0 ||
                    strcmp(method, "PUT") == 0 || strcmp(method, "PATCH") == 0;
  if (needs_body) {
    call->request_body = malloc(opts->body_len ? opts->body_len : 1);
    if (call->request_body == NULL) goto fail;
    if (opts->body_len) memcpy(call->request_body, opts->body, opts->body_len);
  }
  call->easy = curl_easy_init();
  if (call->easy == NULL) goto fail;
  rc = setup_easy(call, opts, method);
  if (rc != 0) goto fail;

  if (client->in_curl) {
    /* From on_chunk: curl refuses add_handle here; settle() adds it when curl returns. */
    call->pending_add = true;
    client->deferred = true;
  } else {
    /* Only adds: curl asks on_curl_timer for a 0 ms timeout, and the transfer starts from the
     * timer callback. */
    if (curl_multi_add_handle(client->multi, call->easy) != CURLM_OK) {
      rc = -ENOMEM;
      goto fail;
    }
    call->added = true;
  }
  call_link(call);
  client->active++;
  if (out) *out = call;
  return 0;
fail:
  call_free(call);
  return rc;
}

int hk_client_resume(hk_client_call_t *call) {
  if (call == NULL || call->state != CALL_ACTIVE) return -EINVAL;
  hk_client_t *client = call->client;
  if (client->in_curl) return -EBUSY;
  if (!call->paused) return 0;
  call->paused = false;
  /* curl may hand over what it held at once, from inside curl_easy_pause: on_chunk runs there,
   * with the same rules as inside socket_action. */
  client->in_curl = true;
  CURLcode rc = curl_easy_pause(call->easy, CURLPAUSE_CONT);
  client->in_curl = false;
  settle(client);
  return rc == CURLE_OK ? 0 : -EIO;
}

void hk_client_cancel(hk_client_call_t *call) {
  if (call == NULL || call->state != CALL_ACTIVE) return;
  hk_client_t *client = call->client;
  client->active--;
  if (client->in_curl) {
    /* From on_chunk: curl refuses remove_handle here. Our callbacks stop the transfer; settle()
     * frees the call before it reads any CURLMSG_DONE, so done never runs. */
    call->state = CALL_CANCELLED;
    client->deferred = true;
    return;
  }
  call_unlink(call);
  call_free(call);
}
