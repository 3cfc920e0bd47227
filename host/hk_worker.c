/* hk_worker: a worker thread and what it owns — its loop, its listening socket (SO_REUSEPORT,
 * or a copy of the first worker's socket where the kernel lacks it), its script generations,
 * its outbound client, the routes the core answers itself (/metrics, /admin/reload) and the
 * drain on shutdown. It hears from the control thread through its inbox (new generations,
 * reload outcomes, drain) and answers back through hk__server_*. Connections are hk_conn's. */
#include "hk_worker.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hk_crypto.h"
#include "hk_json.h"
#include "hk_log.h"
#include "hk_prom.h"

/* Bytes of exposition rendered per slice of a /metrics response. */
#define METRICS_SLICE (64 * 1024)

/* ---- generations ------------------------------------------------------------------------------ */

struct hk_retired_s {
  hk_lua_t *lua;
  hk_gens_t *gens;
  bool idle; /* its last task has ended: free it */
  struct hk_retired_s *next;
};

void hk__gens_init(hk_gens_t *gens, uv_loop_t *loop, hk_lua_t *first) {
  gens->current = first;
  gens->retired = NULL;
  uv_timer_init(loop, &gens->reap_timer);
  gens->reap_timer.data = gens;
  atomic_init(&gens->current_bytes, 0);
  atomic_init(&gens->retiring_bytes, 0);
  hk__gens_publish(gens);
}

void hk__gens_publish(hk_gens_t *gens) {
  size_t retiring = 0;
  for (hk_retired_t *r = gens->retired; r != NULL; r = r->next) retiring += hk_lua_memory(r->lua);
  atomic_store_explicit(&gens->current_bytes, gens->current ? hk_lua_memory(gens->current) : 0,
                        memory_order_relaxed);
  atomic_store_explicit(&gens->retiring_bytes, retiring, memory_order_relaxed);
}

/* Frees replaced generations whose last task has ended. */
static void on_reap(uv_timer_t *timer) {
  hk_gens_t *gens = timer->data;
  hk_retired_t **link = &gens->retired;
  while (*link != NULL) {
    hk_retired_t *r = *link;
    if (r->idle) {
      *link = r->next;
      hk_lua_free(r->lua);
      free(r);
    } else {
      link = &r->next;
    }
  }
  hk__gens_publish(gens);
}

static void on_generation_idle(hk_lua_t *lua, void *data) {
  (void)lua;
  hk_retired_t *r = data;
  r->idle = true;
  uv_timer_start(&r->gens->reap_timer, on_reap, 0, 0); /* not from inside hk_lua */
}

int hk__gens_swap(hk_gens_t *gens, hk_lua_t *fresh) {
  hk_retired_t *r = calloc(1, sizeof *r);
  if (r == NULL) return -ENOMEM;
  hk_lua_t *old = gens->current;
  r->lua = old;
  r->gens = gens;
  r->next = gens->retired;
  gens->retired = r;
  gens->current = fresh;
  hk_lua_retire(old, on_generation_idle, r);
  hk__gens_publish(gens);
  return 0;
}

void hk__gens_cancel_all(hk_gens_t *gens) {
  if (gens->current) hk_lua_cancel_all(gens->current);
  for (hk_retired_t *r = gens->retired; r != NULL; r = r->next) hk_lua_cancel_all(r->lua);
  if (gens->current) hk_lua_bind_loop(gens->current, NULL, NULL, NULL, NULL);
  for (hk_retired_t *r = gens->retired; r != NULL; r = r->next) hk_lua_bind_loop(r->lua, NULL, NULL, NULL, NULL);
}

void hk__gens_free(hk_gens_t *gens) {
  while (gens->retired != NULL) {
    hk_retired_t *r = gens->retired;
    gens->retired = r->next;
    hk_lua_free(r->lua);
    free(r);
  }
  hk_lua_free(gens->current);
  gens->current = NULL;
}

/* ---- GET /metrics ------------------------------------------------------------------------------ */

typedef struct metrics_stream_s {
  hk_metrics_t *registry;
  hk_prom_cursor_t cursor;
} metrics_stream_t;

static int metrics_produce(void *state, hk_buf_t *out, bool *done) {
  metrics_stream_t *stream = state;
  int rc = hk_prom_render(stream->registry, &stream->cursor, out, METRICS_SLICE);
  *done = stream->cursor.done;
  return rc;
}

static void metrics_release(void *state) { free(state); }

/* The exposition, streamed in slices: a scrape of any size costs one slice of memory and never
 * holds the loop for more than one slice. Every worker's cells are summed (they are atomics,
 * one writer each), so any worker can answer for the process. */
static void serve_metrics(hk_worker_t *worker, hk_request_t *req) {
  const hk_http_request_t *http = req->http;
  const hk_http_header_t *accept = hk_http_header_find(http, "accept");
  hk_prom_format_t format = hk_prom_negotiate(accept ? accept->value : NULL, accept ? accept->value_len : 0);
  metrics_stream_t *stream = calloc(1, sizeof *stream);
  if (stream == NULL) {
    hk_response_set_error(&req->response, 503, "out of memory", req->id);
    return;
  }
  stream->registry = worker->metrics->registry;
  hk_prom_cursor_init(&stream->cursor, format);
  req->response.status = 200;
  snprintf(req->response.content_type, sizeof req->response.content_type, "%s", hk_prom_content_type(format));
  req->response.gzip = hk_request_accepts_gzip(http);
  /* Rendering reads the registry without locks (and collectors take their own): it can run on
   * the threadpool, so a scrape of any size moves no request's latency on this worker. */
  req->response.stream = (hk_body_stream_t){metrics_produce, metrics_release, stream, true};
}

/* ---- POST /admin/reload -------------------------------------------------------------------------- */

/* Answers the admin requests whose reload has finished: every waiter whose ticket is at most
 * `upto` (the control thread counted this worker's requests in the order they were asked). */
static void answer_reload_waiters(hk_worker_t *worker, unsigned upto, bool success, unsigned generation,
                                  const char *error) {
  while (worker->reload_waiters != NULL && worker->reload_waiters->reload_ticket <= upto) {
    hk_conn_t *conn = worker->reload_waiters;
    worker->reload_waiters = conn->next_waiter;
    if (worker->reload_waiters == NULL) worker->reload_waiters_tail = NULL;
    conn->next_waiter = NULL;
    conn->waiting_reload = false;
    hk_request_t *req = &conn->request;
    hk_response_t *res = &req->response;
    res->status = success ? 200 : 422;
    snprintf(res->content_type, sizeof res->content_type, "application/json");
    hk_buf_appendf(&res->body, "{\"result\":\"%s\",\"generation\":%u,\"error\":", success ? "success" : "failure",
                   generation);
    if (success) hk_buf_append_str(&res->body, "null");
    else hk_json_append_string(&res->body, error, strlen(error), 0);
    hk_buf_appendf(&res->body, ",\"request_id\":\"%s\"}", req->id);
    hk__conn_finish_request(req);
  }
}

/* A waiting admin request whose client went away leaves the FIFO. */
void hk__worker_stop_waiting_reload(hk_conn_t *conn) {
  if (!conn->waiting_reload) return;
  hk_worker_t *worker = conn->worker;
  hk_conn_t *prev = NULL;
  for (hk_conn_t *c = worker->reload_waiters; c != NULL; prev = c, c = c->next_waiter) {
    if (c != conn) continue;
    if (prev) prev->next_waiter = c->next_waiter;
    else worker->reload_waiters = c->next_waiter;
    if (worker->reload_waiters_tail == c) worker->reload_waiters_tail = prev;
    break;
  }
  conn->next_waiter = NULL;
  conn->waiting_reload = false;
}

/* POST /admin/reload, only when HANCOCK_ADMIN_TOKEN is set, with that token as a Bearer token.
 * Answers once a reload that started after it arrived has reached every worker. */
static bool serve_admin_reload(hk_worker_t *worker, hk_request_t *req, bool *waiting) {
  const hk_http_request_t *http = req->http;
  const char *token = worker->config->admin_token;
  if (token[0] == '\0' || !(http->path_len == 13 && memcmp(http->path, "/admin/reload", 13) == 0)) return false;
  req->endpoint = "/admin/reload";
  hk__conn_log_started(req);
  if (!(http->method_len == 4 && memcmp(http->method, "POST", 4) == 0)) {
    hk_response_set_error(&req->response, 405, "method not allowed", req->id);
    hk_response_add_header(&req->response, "Allow", 5, "POST", 4);
    return true;
  }
  const hk_http_header_t *auth = hk_http_header_find(http, "authorization");
  bool bearer = auth != NULL && auth->value_len > 7 && strncasecmp(auth->value, "Bearer ", 7) == 0;
  if (!bearer || !hk_crypto_equal(auth->value + 7, auth->value_len - 7, token, strlen(token))) {
    hk_response_set_error(&req->response, 401, "unauthorized", req->id);
    return true;
  }
  if (worker->draining) {
    hk_response_set_error(&req->response, 503, "shutting down", req->id);
    return true;
  }
  hk_conn_t *conn = req->owner;
  conn->waiting_reload = true;
  conn->next_waiter = NULL;
  conn->reload_ticket = ++worker->reload_tickets;
  if (worker->reload_waiters_tail) worker->reload_waiters_tail->next_waiter = conn;
  else worker->reload_waiters = conn;
  worker->reload_waiters_tail = conn;
  *waiting = true;
  hk__server_request_reload(worker->server, worker);
  return true;
}

/* Routes the core answers itself, before the scripts' routes. Returns true when it answered
 * (or, with *waiting, will answer later). */
bool hk__worker_serve_builtin(hk_worker_t *worker, hk_request_t *req, bool *waiting) {
  const hk_http_request_t *http = req->http;
  if (serve_admin_reload(worker, req, waiting)) return true;
  if (!(http->path_len == 8 && memcmp(http->path, "/metrics", 8) == 0)) return false;
  req->endpoint = "/metrics";
  hk__conn_log_started(req);
  bool get = http->method_len == 3 && memcmp(http->method, "GET", 3) == 0;
  bool head = http->method_len == 4 && memcmp(http->method, "HEAD", 4) == 0;
  if (get || head) {
    serve_metrics(worker, req);
  } else {
    hk_response_set_error(&req->response, 405, "method not allowed", req->id);
    hk_response_add_header(&req->response, "Allow", 5, "GET, HEAD", 9);
  }
  return true;
}

const char *hk__worker_date(hk_worker_t *worker) {
  time_t now = time(NULL);
  if (now != worker->date_second) {
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(worker->date, sizeof worker->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    worker->date_second = now;
  }
  return worker->date;
}

/* ---- draining ------------------------------------------------------------------------------------ */

static void worker_maybe_stop(hk_worker_t *worker) {
  if (!worker->draining || worker->conn_count > 0) return;
  uv_timer_stop(&worker->drain_timer);
  worker->loop_done = true; /* for a loop driven from a caller's (hk__worker_finish_attached) */
  uv_stop(&worker->loop);
}

void hk__worker_conn_closed(hk_worker_t *worker) { worker_maybe_stop(worker); }

static void on_drain_timeout(uv_timer_t *timer) {
  hk_worker_t *worker = timer->data;
  hk_log_event(HK_LOG_WARNING, NULL, "drain_timeout", "drain timeout: closing remaining connections",
               (hk_log_field_t[]){HK_LOG_I("connections", worker->conn_count)}, 1);
  for (hk_conn_t *c = worker->conns; c != NULL; c = c->next) hk__conn_close(c);
}

static void worker_drain(hk_worker_t *worker) {
  if (worker->draining) return;
  worker->draining = true;
  if (worker->listener_open) {
    uv_close((uv_handle_t *)&worker->listener, NULL);
    worker->listener_open = false;
  }
  answer_reload_waiters(worker, UINT_MAX, false, 0, "shutting down");
  /* Idle connections close now; busy ones close after their current response. */
  hk_conn_t *next;
  for (hk_conn_t *c = worker->conns; c != NULL; c = next) {
    next = c->next;
    hk__conn_close_if_idle(c);
  }
  uv_timer_start(&worker->drain_timer, on_drain_timeout, worker->config->drain_timeout_ms, 0);
  worker_maybe_stop(worker);
}

/* ---- the inbox --------------------------------------------------------------------------------- */

/* A new generation: this worker's cell, this loop, its log hooks on this thread. Background
 * tasks its scripts spawned while loading are the control thread's to run (once per process),
 * so here they are dropped. */
static void worker_swap(hk_worker_t *worker, hk_lua_t *fresh, unsigned seq) {
  hk_lua_set_cell(fresh, worker->index);
  hk_lua_drop_background(fresh);
  if (hk__gens_swap(&worker->gens, fresh) != 0) {
    hk_lua_free(fresh); /* out of memory: keep serving the old one */
  } else {
    worker->lua = fresh;
    hk_lua_bind_loop(fresh, &worker->loop, worker->client, worker->ratelimit, worker->carry);
    hk_lua_attach_log(fresh);
  }
  hk__server_generation_swapped(worker->server, worker, seq);
}

static void on_wake(uv_async_t *async) {
  hk_worker_t *worker = async->data;
  pthread_mutex_lock(&worker->inbox_lock);
  hk_worker_inbox_t inbox = worker->inbox;
  worker->inbox.generation = NULL;
  worker->inbox.has_answer = false;
  worker->inbox.stop_listening = false;
  pthread_mutex_unlock(&worker->inbox_lock);
  if (inbox.generation != NULL) {
    if (worker->draining) {
      hk_lua_free(inbox.generation);
      hk__server_generation_swapped(worker->server, worker, inbox.generation_seq);
    } else {
      worker_swap(worker, inbox.generation, inbox.generation_seq);
    }
  }
  if (inbox.has_answer)
    answer_reload_waiters(worker, inbox.answer_upto, inbox.answer_success, inbox.answer_generation,
                          inbox.answer_error);
  if (inbox.stop_listening) {
    if (worker->listener_open) {
      uv_close((uv_handle_t *)&worker->listener, NULL); /* the socket closes here, at once */
      worker->listener_open = false;
    }
    hk__server_listener_closed(worker->server, worker);
  }
  if (inbox.drain) worker_drain(worker);
}

void hk__worker_post(hk_worker_t *worker) { uv_async_send(&worker->wake); }

/* ---- life ------------------------------------------------------------------------------------- */

static void on_connection(uv_stream_t *listener, int status) {
  hk_worker_t *worker = listener->data;
  if (status < 0) return;
  hk__conn_accept(worker);
}

/* A listening socket for the configured address. With SO_REUSEPORT each worker has its own and
 * the kernel spreads connections over them; without it (an old kernel) every worker listens on
 * a duplicate of the first one's socket and they take turns accepting. */
static int open_listener(const hk_config_t *cfg, int port, int shared_fd, int *fd_out, int *port_out) {
  struct sockaddr_storage addr;
  socklen_t addr_len;
  memset(&addr, 0, sizeof addr);
  int rc = uv_ip4_addr(cfg->listen_host, port, (struct sockaddr_in *)&addr);
  addr_len = sizeof(struct sockaddr_in);
  if (rc != 0) {
    rc = uv_ip6_addr(cfg->listen_host, port, (struct sockaddr_in6 *)&addr);
    addr_len = sizeof(struct sockaddr_in6);
  }
  if (rc != 0) return rc;
  int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  bool reuseport = setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) == 0;
  if (!reuseport && shared_fd >= 0) {
    close(fd);
    fd = dup(shared_fd);
    if (fd < 0) return -errno;
    *fd_out = fd;
    *port_out = port;
    return 0;
  }
  if (addr.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&addr, addr_len) != 0 || listen(fd, 1024) != 0) {
    rc = -errno;
    close(fd);
    return rc;
  }
  struct sockaddr_storage bound;
  socklen_t len = sizeof bound;
  getsockname(fd, (struct sockaddr *)&bound, &len);
  *port_out = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
  *fd_out = fd;
  return 0;
}

int hk__worker_init(hk_worker_t *worker, hk_server_t *server, unsigned index, const hk_config_t *config,
                    hk_host_metrics_t *metrics, hk_lua_t *first, hk_ratelimit_t *ratelimit,
                    hk_carry_t *carry, int shared_fd, int *port, char *err, size_t errsize) {
  memset(worker, 0, sizeof *worker);
  worker->server = server;
  worker->config = config;
  worker->metrics = metrics;
  worker->index = index;
  worker->ratelimit = ratelimit;
  worker->carry = carry;
  worker->listen_fd = -1;
  atomic_init(&worker->open_connections, 0);
  pthread_mutex_init(&worker->inbox_lock, NULL);
  int rc = uv_loop_init(&worker->loop);
  if (rc != 0) {
    snprintf(err, errsize, "cannot start an event loop: %s", uv_strerror(rc));
    hk_lua_free(first);
    pthread_mutex_destroy(&worker->inbox_lock);
    worker->destroyed = true; /* nothing for hk__worker_destroy to close */
    return rc;
  }
  uv_timer_init(&worker->loop, &worker->drain_timer);
  worker->drain_timer.data = worker;
  uv_async_init(&worker->loop, &worker->wake, on_wake);
  worker->wake.data = worker;
  hk__gens_init(&worker->gens, &worker->loop, first);
  worker->lua = first;
  hk_lua_set_cell(first, index);
  hk_lua_drop_background(first);
  rc = hk_client_new(&worker->loop, &worker->client);
  if (rc != 0) {
    snprintf(err, errsize, "cannot start worker %u: %s", index, strerror(-rc));
    return rc;
  }
  hk_lua_bind_loop(first, &worker->loop, worker->client, ratelimit, carry);
  rc = open_listener(config, *port, shared_fd, &worker->listen_fd, port);
  if (rc == 0) rc = uv_tcp_init(&worker->loop, &worker->listener);
  if (rc == 0) {
    worker->listener.data = worker;
    worker->listener_open = true;
    rc = uv_tcp_open(&worker->listener, worker->listen_fd);
    if (rc == 0) worker->listen_fd = -1; /* libuv's now */
  }
  if (rc == 0) rc = uv_listen((uv_stream_t *)&worker->listener, 1024, on_connection);
  if (rc != 0) {
    snprintf(err, errsize, "cannot listen on %s%s%s:%d: %s", strchr(config->listen_host, ':') ? "[" : "",
             config->listen_host, strchr(config->listen_host, ':') ? "]" : "", config->port, uv_strerror(rc));
    return rc;
  }
  return 0;
}

int hk__worker_listen_fd(const hk_worker_t *worker) {
  uv_os_fd_t fd = -1;
  if (uv_fileno((const uv_handle_t *)&worker->listener, &fd) != 0) return -1;
  return fd;
}

static void close_walk(uv_handle_t *handle, void *arg) {
  (void)arg;
  if (!uv_is_closing(handle)) uv_close(handle, NULL);
}

/* On the worker's own thread, after its loop stopped: everything Lua and curl touch is closed
 * where it lives. */
static void worker_shutdown(hk_worker_t *worker) {
  worker->draining = true;
  for (hk_conn_t *c = worker->conns; c != NULL; c = c->next) hk__conn_close(c);
  hk__gens_cancel_all(&worker->gens);
  if (worker->client != NULL) {
    hk_client_close(worker->client);
    worker->client = NULL;
  }
  uv_walk(&worker->loop, close_walk, NULL);
  while (uv_run(&worker->loop, UV_RUN_DEFAULT) != 0) {
  }
  hk_lua_attach_log(NULL);
}

static void worker_main(void *arg) {
  hk_worker_t *worker = arg;
  hk_lua_attach_log(worker->lua); /* this thread's events go through this generation's hooks */
  uv_run(&worker->loop, UV_RUN_DEFAULT);
  worker_shutdown(worker);
  hk__server_worker_stopped(worker->server, worker);
}

int hk__worker_start(hk_worker_t *worker) { return uv_thread_create(&worker->thread, worker_main, worker); }

/* The thread's part of worker_main, for a worker whose loop a caller's loop drives: called
 * after each run of it, it ends the worker once the drain is over. */
bool hk__worker_finish_attached(hk_worker_t *worker) {
  if (!worker->loop_done || worker->finished) return false;
  worker->finished = true;
  worker_shutdown(worker);
  hk__server_worker_stopped(worker->server, worker);
  return true;
}

void hk__worker_destroy(hk_worker_t *worker) {
  if (worker->destroyed) return;
  worker->destroyed = true;
  worker_shutdown(worker); /* a no-op walk when the thread already did it */
  if (worker->listen_fd >= 0) close(worker->listen_fd);
  int rc = uv_loop_close(&worker->loop);
  (void)rc;
  assert(rc == 0); /* every handle closed: nothing leaks */
  hk__gens_free(&worker->gens);
  pthread_mutex_destroy(&worker->inbox_lock);
}
