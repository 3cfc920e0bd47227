/* hk_watchdog: the wall clock over Lua. One thread for the process ticks every
 * HK_WATCHDOG_TICK_MS and looks at every registered watch: an entry into Lua (a handler's
 * resume, a hook, a finalizer, a script load) that has run past its limit is marked expired,
 * which the instruction hook turns into an error; one that runs on past twice the limit cannot
 * be interrupted from Lua (a C function such as a pathological string.find) and is reported
 * (`lua_stuck`). The thread also watches SIGTERM/SIGINT itself, so a process whose loop is
 * stuck, or whose log writer is blocked, still exits once the drain timeout and a grace period
 * are over. Knows nothing of Lua: hk_lua owns what an expired entry means. */
#ifndef HK_WATCHDOG_H
#define HK_WATCHDOG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define HK_WATCHDOG_TICK_MS 50
/* After the drain timeout, what the process still gets before it is ended from this thread. */
#define HK_WATCHDOG_EXIT_GRACE_MS 3000

/* One owner's entries into Lua, one at a time (entries into one Lua state never overlap).
 * `state` packs (tick at entry + 1) << 2 | reported << 1 | expired, 0 when outside Lua, so the
 * watchdog marks exactly the entry it measured (compare-and-swap) and never a later one. */
typedef struct hk_watch_s {
  _Atomic uint64_t state;
  uint64_t limit_ticks;        /* 0: no limit */
  _Atomic uint64_t label[6];   /* what is running (a request id), read when reporting */
  struct hk_watch_s *prev, *next; /* the watchdog's list, under its mutex */
} hk_watch_t;

extern _Atomic uint64_t hk__watchdog_tick;

/* Starts the thread (once per process; later calls only update the drain timeout). Without it
 * no entry ever expires. Returns 0 or a negative code. */
int hk_watchdog_start(uint64_t drain_timeout_ms);
/* The same; without watch_signals (a library inside another program, whose signals are its
 * own) the thread keeps only the time limits: it never watches a signal or ends the process. */
int hk_watchdog_start_opts(uint64_t drain_timeout_ms, bool watch_signals);
/* The first SIGTERM or SIGINT the watchdog saw (0 when none): libuv hands a signal only to
 * the loops watching it when it arrives, so a server loop started later (while the scripts
 * loaded) asks here. */
int hk_watchdog_signal_seen(void);

/* Stops and joins the thread. A no-op when not started. */
void hk_watchdog_stop(void);

/* Registers a watch with a limit (0: none). hk_watch_remove before the memory goes. */
void hk_watch_add(hk_watch_t *watch, uint64_t limit_ms);
void hk_watch_remove(hk_watch_t *watch);

/* Marks the start of an entry; `label` (may be NULL) names it in a stuck report. */
void hk_watch_enter(hk_watch_t *watch, const char *label);
/* The entry is over. Returns true when it had been reported stuck (the caller may log that it
 * finally returned). */
bool hk_watch_leave(hk_watch_t *watch);

/* True once the current entry has run past its limit: the owner should fail it. */
static inline bool hk_watch_expired(const hk_watch_t *watch) {
  return (atomic_load_explicit(&watch->state, memory_order_relaxed) & 1u) != 0;
}

/* Runs one pass of the watchdog at `tick` (the thread does this every tick; tests call it
 * directly). Returns how many entries it marked expired or reported in this pass. */
int hk_watchdog_scan(uint64_t tick);

#endif
