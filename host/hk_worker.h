/* hk_worker: one worker — a thread with its own uv loop, listening socket (SO_REUSEPORT), its
 * connections (hk_conn), its script generation and its outbound client. A request is read,
 * run and answered on one worker and never crosses threads. Internal header shared by
 * hk_conn.c, hk_worker.c and hk_server.c (the control thread); not part of the public API.
 * Entry points: hk__worker_init, hk__worker_start, hk__worker_post. */
#ifndef HK_WORKER_H
#define HK_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <uv.h>
#include <zlib.h>

#include "hk_buf.h"
#include "hk_carry.h"
#include "hk_client.h"
#include "hk_config.h"
#include "hk_host_metrics.h"
#include "hk_http.h"
#include "hk_lua.h"
#include "hk_ratelimit.h"
#include "hk_request.h"

#define HK_READ_BUFFER_SIZE (64 * 1024)

typedef struct hk_server_s hk_server_t;
typedef struct hk_worker_s hk_worker_t;

/* ---- script generations: the serving one and those still finishing requests ------------------ */

typedef struct hk_retired_s hk_retired_t;

/* The generations one loop owns. A swap retires the serving one; it is freed (from reap_timer,
 * never from inside hk_lua) once its last task has ended. Byte counts are published for the
 * hancock_lua_memory_bytes collector, which runs on whichever thread scrapes. */
typedef struct hk_gens_s {
  hk_lua_t *current;
  hk_retired_t *retired;
  uv_timer_t reap_timer;
  _Atomic size_t current_bytes, retiring_bytes;
} hk_gens_t;

void hk__gens_init(hk_gens_t *gens, uv_loop_t *loop, hk_lua_t *first);
/* Serves `fresh` from now on; the one it replaces finishes its requests and is freed after. */
int hk__gens_swap(hk_gens_t *gens, hk_lua_t *fresh);
void hk__gens_publish(hk_gens_t *gens);
/* Shutdown: cancels every task of every generation (the loop must run once more). */
void hk__gens_cancel_all(hk_gens_t *gens);
/* After the loop has closed: frees every generation. */
void hk__gens_free(hk_gens_t *gens);

/* ---- connections ----------------------------------------------------------------------------- */

typedef enum hk_timer_phase_e {
  PHASE_NONE,
  PHASE_KEEPALIVE, /* idle between requests */
  PHASE_HEAD,      /* part of a head received */
  PHASE_BODY,      /* body arriving: reset on every read */
  PHASE_SEND,      /* a response is waiting for the client to take it */
  PHASE_LINGER,    /* after a close-delimited response, draining the client's leftovers */
} hk_timer_phase_t;

typedef struct hk_conn_s {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_write_t write_req;
  uv_shutdown_t shutdown_req;
  hk_worker_t *worker;
  struct hk_conn_s *prev, *next;
  hk_buf_t in;
  hk_buf_t out;      /* response bytes not yet handed to the kernel */
  hk_buf_t writing;  /* bytes in the uv_write in flight */
  hk_http_parser_t parser;
  hk_request_t request;
  hk_timer_phase_t phase;
  uint64_t body_started_ms; /* loop time the body began arriving (PHASE_BODY) */
  uint64_t body_bytes;      /* bytes read since */
  int handles_open;
  bool reading;
  bool in_flight;    /* a handler is running for `request` */
  bool write_active;
  bool close_after;  /* close once the queued response is written */
  bool closing;      /* uv_close called */
  bool lingering;
  bool processing;   /* conn_process is on the stack: it continues with the next request */
  bool streaming;    /* a streamed body is being produced slice by slice */
  bool stream_chunked;
  hk_body_stream_t stream;
  struct hk_conn_s *next_waiter; /* in the worker's FIFO of POST /admin/reload requests */
  unsigned reload_ticket;        /* its place in the order this worker asked control */
  bool waiting_reload;
  z_stream *gzip;    /* the streamed body's compressor, when gzip was negotiated */
  hk_buf_t slice;    /* one produced slice, before compression and chunk framing */
  uv_work_t stream_work; /* an offloaded slice being produced on the threadpool */
  bool stream_working;   /* the connection is not freed before it is back */
  hk_buf_t framed;       /* that slice, compressed and framed, for the loop to write */
  int stream_rc;
  bool stream_done;
} hk_conn_t;

/* Accepts one connection from the worker's listener (or refuses it past the cap). */
void hk__conn_accept(hk_worker_t *worker);
void hk__conn_close(hk_conn_t *conn);
/* Shutdown: closes the connection now when it is idle; a busy one closes after its response. */
void hk__conn_close_if_idle(hk_conn_t *conn);
/* A response is ready (hk_lua's done callback; also the admin route's). */
void hk__conn_finish_request(hk_request_t *req);

/* ---- the worker ------------------------------------------------------------------------------ */

/* What the control thread asks of a worker; read under `inbox_lock` by the worker's loop. */
typedef struct hk_worker_inbox_s {
  hk_lua_t *generation;  /* a new generation to serve (built off the loop) */
  unsigned generation_seq;
  unsigned answer_upto;  /* admin requests whose reload has finished: tickets up to this one */
  bool has_answer;
  bool answer_success;
  unsigned answer_generation;
  char answer_error[512];
  bool stop_listening; /* shutdown, first step: no new connections anywhere */
  bool drain;          /* second step, once every worker has stopped listening */
} hk_worker_inbox_t;

struct hk_worker_s {
  uv_loop_t loop;
  uv_tcp_t listener;
  uv_timer_t drain_timer;
  uv_async_t wake; /* the control thread has put something in the inbox */
  uv_thread_t thread;
  hk_server_t *server;
  const hk_config_t *config;
  hk_lua_t *lua; /* the serving generation (gens.current) */
  hk_gens_t gens;
  hk_host_metrics_t *metrics;
  unsigned index;      /* this worker's metric cell */
  hk_client_t *client; /* outbound HTTP for this worker's handlers */
  hk_ratelimit_t *ratelimit; /* shared by every worker */
  hk_carry_t *carry;         /* shared by every worker and the control thread */
  pthread_mutex_t inbox_lock;
  hk_worker_inbox_t inbox;
  hk_conn_t *reload_waiters, *reload_waiters_tail; /* FIFO, in the order asked of control */
  unsigned reload_tickets; /* admin requests this worker has passed to control */
  bool destroyed;
  bool loop_done; /* drained: the loop was told to stop */
  bool finished;  /* attached: hk__worker_finish_attached has ended it */
  hk_conn_t *conns; /* doubly-linked list of open connections */
  size_t conn_count;
  _Atomic size_t open_connections; /* conn_count, for the scrape-time collector */
  _Atomic size_t *process_connections; /* every worker's, against --max-connections */
  _Atomic bool *process_draining;      /* set by the control thread before it tells the workers */
  uint64_t conns_rejected;
  uint64_t last_reject_log_ms;
  bool draining;
  bool listener_open;
  int listen_fd; /* -1 once libuv owns it */
  char read_buffer[HK_READ_BUFFER_SIZE];
  char date[40];
  time_t date_second;
};

/* Sets up worker `index` on its own loop, with `first` as its generation (taken), a listening
 * socket for the configured address (port: the one the first worker got, when 0 was asked) and
 * its outbound client. On failure, one line in err. */
int hk__worker_init(hk_worker_t *worker, hk_server_t *server, unsigned index, const hk_config_t *config,
                    hk_host_metrics_t *metrics, hk_lua_t *first, hk_ratelimit_t *ratelimit,
                    hk_carry_t *carry, int shared_fd, int *port, char *err, size_t errsize);
/* The worker's listening socket (for the next worker's fallback without SO_REUSEPORT). */
int hk__worker_listen_fd(const hk_worker_t *worker);
int hk__worker_start(hk_worker_t *worker); /* starts its thread */
/* Without a thread (a caller's loop drives the worker's): after each run of the worker's loop,
 * ends the worker once it has drained, as its thread would. True when it just did. */
bool hk__worker_finish_attached(hk_worker_t *worker);
/* Called by the control thread: wakes the worker to read its inbox. */
void hk__worker_post(hk_worker_t *worker);
/* After the thread has ended (or never started): closes the loop and frees what is left. */
void hk__worker_destroy(hk_worker_t *worker);

/* The process is shutting down (responses from now on close their connection), even before
 * this worker has read the control thread's word. */
static inline bool hk__worker_draining(const hk_worker_t *worker) {
  return worker->draining ||
         (worker->process_draining != NULL && atomic_load_explicit(worker->process_draining, memory_order_acquire));
}

/* Used by hk_conn: */
void hk__conn_log_started(const hk_request_t *req);
const char *hk__worker_date(hk_worker_t *worker);
bool hk__worker_serve_builtin(hk_worker_t *worker, hk_request_t *req, bool *waiting);
void hk__worker_stop_waiting_reload(hk_conn_t *conn);
void hk__worker_conn_closed(hk_worker_t *worker); /* a connection has been freed */

/* ---- the control thread, as workers see it (hk_server.c) ------------------------------------- */

void hk__server_request_reload(hk_server_t *server, hk_worker_t *worker);
void hk__server_generation_swapped(hk_server_t *server, hk_worker_t *worker, unsigned seq);
void hk__server_worker_stopped(hk_server_t *server, hk_worker_t *worker);
void hk__server_listener_closed(hk_server_t *server, hk_worker_t *worker);

#endif
