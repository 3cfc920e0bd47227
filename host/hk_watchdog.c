/* hk_watchdog: the watchdog thread, its list of watches and the forced exit. The owners'
 * enter/leave are two atomic stores; everything slow (the scan, reports) happens here. */
#include "hk_watchdog.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "hk_log.h"

#define EXPIRED 1u
#define REPORTED 2u

_Atomic uint64_t hk__watchdog_tick = 1;

static struct {
  pthread_mutex_t lock; /* the list */
  hk_watch_t *watches;
  bool started;
  bool watch_signals;
  uv_thread_t thread;
  uv_loop_t loop;
  uv_timer_t timer;
  uv_signal_t sigterm, sigint;
  uv_async_t stop;
  _Atomic uint64_t drain_timeout_ms;
  uint64_t signalled_tick; /* first SIGTERM/SIGINT, 0 before */
  _Atomic int signal_seen;  /* that signal's number, for a server loop started after it */
} dog = {.lock = PTHREAD_MUTEX_INITIALIZER};

int hk_watchdog_signal_seen(void) { return atomic_load(&dog.signal_seen); }

void hk_watch_add(hk_watch_t *watch, uint64_t limit_ms) {
  atomic_init(&watch->state, 0);
  for (size_t i = 0; i < sizeof watch->label / sizeof watch->label[0]; i++) atomic_init(&watch->label[i], 0);
  watch->limit_ticks = limit_ms == 0 ? 0 : (limit_ms + HK_WATCHDOG_TICK_MS - 1) / HK_WATCHDOG_TICK_MS;
  pthread_mutex_lock(&dog.lock);
  watch->prev = NULL;
  watch->next = dog.watches;
  if (dog.watches) dog.watches->prev = watch;
  dog.watches = watch;
  pthread_mutex_unlock(&dog.lock);
}

void hk_watch_remove(hk_watch_t *watch) {
  pthread_mutex_lock(&dog.lock);
  if (watch->prev) watch->prev->next = watch->next;
  else if (dog.watches == watch) dog.watches = watch->next;
  if (watch->next) watch->next->prev = watch->prev;
  watch->prev = watch->next = NULL;
  pthread_mutex_unlock(&dog.lock);
}

void hk_watch_enter(hk_watch_t *watch, const char *label) {
  if (watch->limit_ticks == 0) return;
  /* The label is words of relaxed atomics: the watchdog may read it while it changes, and then
   * reports a mix of two ids at worst, never undefined behaviour. */
  size_t words = sizeof watch->label / sizeof watch->label[0];
  size_t len = label ? strnlen(label, words * 8 - 1) : 0;
  for (size_t i = 0; i < words; i++) {
    uint64_t word = 0;
    if (i * 8 < len) memcpy(&word, label + i * 8, len - i * 8 < 8 ? len - i * 8 : 8);
    atomic_store_explicit(&watch->label[i], word, memory_order_relaxed);
  }
  uint64_t tick = atomic_load_explicit(&hk__watchdog_tick, memory_order_relaxed);
  atomic_store_explicit(&watch->state, (tick + 1) << 2, memory_order_release);
}

bool hk_watch_leave(hk_watch_t *watch) {
  if (watch->limit_ticks == 0) return false;
  uint64_t old = atomic_exchange_explicit(&watch->state, 0, memory_order_acq_rel);
  return (old & REPORTED) != 0;
}

static void report_stuck(hk_watch_t *watch, uint64_t ticks) {
  char label[sizeof watch->label + 1];
  for (size_t i = 0; i < sizeof watch->label / sizeof watch->label[0]; i++) {
    uint64_t word = atomic_load_explicit(&watch->label[i], memory_order_relaxed);
    memcpy(label + i * 8, &word, 8);
  }
  label[sizeof watch->label] = '\0';
  hk_log_event(HK_LOG_ERROR, label[0] ? label : NULL, "lua_stuck",
               "Lua has run past its time limit inside a call that cannot be interrupted; its "
               "worker serves nothing until it returns",
               (hk_log_field_t[]){HK_LOG_D("seconds", (double)(ticks * HK_WATCHDOG_TICK_MS) / 1000.0)}, 1);
}

int hk_watchdog_scan(uint64_t tick) {
  int marked = 0;
  pthread_mutex_lock(&dog.lock);
  for (hk_watch_t *w = dog.watches; w != NULL; w = w->next) {
    uint64_t state = atomic_load_explicit(&w->state, memory_order_acquire);
    if (state == 0 || w->limit_ticks == 0) continue;
    uint64_t entered = (state >> 2) - 1;
    uint64_t ran = tick > entered ? tick - entered : 0;
    if (!(state & EXPIRED) && ran >= w->limit_ticks) {
      /* Only the entry measured: if it has left (or a new one began) the swap fails. */
      if (atomic_compare_exchange_strong(&w->state, &state, state | EXPIRED)) marked++;
    } else if ((state & EXPIRED) && !(state & REPORTED) && ran >= 2 * w->limit_ticks) {
      if (atomic_compare_exchange_strong(&w->state, &state, state | REPORTED)) {
        report_stuck(w, ran);
        marked++;
      }
    }
  }
  pthread_mutex_unlock(&dog.lock);
  return marked;
}

/* The last word when a shutdown cannot finish (a stuck loop, a log writer blocked on stdout):
 * one line on stderr, written without the log writer, then exit. */
static void force_exit(void) {
  static const char line[] =
      "{\"level\":\"ERROR\",\"event\":\"shutdown_forced\",\"message\":\"shutdown did not finish "
      "within the drain timeout; exiting\"}\n";
  ssize_t ignored = write(2, line, sizeof line - 1);
  (void)ignored;
  _exit(1);
}

static void on_tick(uv_timer_t *timer) {
  (void)timer;
  uint64_t tick = atomic_fetch_add_explicit(&hk__watchdog_tick, 1, memory_order_relaxed) + 1;
  hk_watchdog_scan(tick);
  if (dog.signalled_tick != 0) {
    uint64_t allowed = atomic_load_explicit(&dog.drain_timeout_ms, memory_order_relaxed) + HK_WATCHDOG_EXIT_GRACE_MS;
    if ((tick - dog.signalled_tick) * HK_WATCHDOG_TICK_MS > allowed) force_exit();
  }
}

static void on_signal(uv_signal_t *handle, int signum) {
  (void)handle;
  int none = 0;
  atomic_compare_exchange_strong(&dog.signal_seen, &none, signum);
  if (dog.signalled_tick == 0) dog.signalled_tick = atomic_load_explicit(&hk__watchdog_tick, memory_order_relaxed);
}

static void on_stop(uv_async_t *async) {
  (void)async;
  uv_stop(&dog.loop);
}

static void close_walk(uv_handle_t *handle, void *arg) {
  (void)arg;
  if (!uv_is_closing(handle)) uv_close(handle, NULL);
}

static void watchdog_main(void *arg) {
  (void)arg;
  uv_run(&dog.loop, UV_RUN_DEFAULT);
  uv_walk(&dog.loop, close_walk, NULL);
  while (uv_run(&dog.loop, UV_RUN_DEFAULT) != 0) {
  }
  uv_loop_close(&dog.loop);
}

int hk_watchdog_start(uint64_t drain_timeout_ms) { return hk_watchdog_start_opts(drain_timeout_ms, true); }

int hk_watchdog_start_opts(uint64_t drain_timeout_ms, bool watch_signals) {
  atomic_store(&dog.drain_timeout_ms, drain_timeout_ms);
  if (dog.started) return 0;
  int rc = uv_loop_init(&dog.loop);
  if (rc != 0) return rc;
  uv_timer_init(&dog.loop, &dog.timer);
  uv_async_init(&dog.loop, &dog.stop, on_stop);
  dog.watch_signals = watch_signals;
  if (watch_signals) {
    uv_signal_init(&dog.loop, &dog.sigterm);
    uv_signal_init(&dog.loop, &dog.sigint);
    /* libuv hands a signal to every loop watching it: the server's loop drains, this one
     * keeps the time in case that loop never gets to. */
    uv_signal_start(&dog.sigterm, on_signal, SIGTERM);
    uv_signal_start(&dog.sigint, on_signal, SIGINT);
  }
  uv_timer_start(&dog.timer, on_tick, HK_WATCHDOG_TICK_MS, HK_WATCHDOG_TICK_MS);
  rc = uv_thread_create(&dog.thread, watchdog_main, NULL);
  if (rc != 0) {
    uv_walk(&dog.loop, close_walk, NULL);
    uv_run(&dog.loop, UV_RUN_DEFAULT);
    uv_loop_close(&dog.loop);
    return rc;
  }
  dog.started = true;
  return 0;
}

void hk_watchdog_stop(void) {
  if (!dog.started) return;
  uv_async_send(&dog.stop);
  uv_thread_join(&dog.thread);
  dog.started = false;
  dog.signalled_tick = 0;
}
