/* hk_drive: an inner loop run from a caller's loop (see hk_drive.h). Owns the three handles
 * on the caller's loop — a poll on the inner backend descriptor, a timer for the inner
 * timeouts and a prepare that re-takes that timeout before the caller's loop blocks — and
 * frees itself when the last of them has closed. */
#include "hk_drive.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

struct hk_drive_s {
  uv_loop_t *inner;
  uv_poll_t poll;
  uv_timer_t timer;
  uv_prepare_t prepare;
  hk_drive_after_cb after;
  void *data;
  int open_handles;
  bool closing; /* close callbacks run later, on the caller's loop: `after` may close us */
};

static void on_timer(uv_timer_t *timer);

static void rearm(hk_drive_t *drive) {
  if (drive->closing) return;
  /* The inner loop's clock only moves when it runs: without this the timeout would be
   * measured from its last run and fire late. */
  uv_update_time(drive->inner);
  int timeout = uv_backend_timeout(drive->inner);
  if (timeout < 0) uv_timer_stop(&drive->timer);
  else uv_timer_start(&drive->timer, on_timer, (uint64_t)timeout, 0);
}

static void run_inner(hk_drive_t *drive) {
  uv_run(drive->inner, UV_RUN_NOWAIT);
  if (drive->after) drive->after(drive->data);
  rearm(drive);
}

static void on_poll(uv_poll_t *poll, int status, int events) {
  (void)status;
  (void)events;
  run_inner(poll->data);
}

static void on_timer(uv_timer_t *timer) { run_inner(timer->data); }

static void on_prepare(uv_prepare_t *prepare) { rearm(prepare->data); }

static void on_closed(uv_handle_t *handle) {
  hk_drive_t *drive = handle->data;
  if (--drive->open_handles == 0) free(drive);
}

int hk_drive_start(uv_loop_t *outer, uv_loop_t *inner, hk_drive_after_cb after, void *data,
                   hk_drive_t **out) {
  hk_drive_t *drive = calloc(1, sizeof *drive);
  if (drive == NULL) return -ENOMEM;
  drive->inner = inner;
  drive->after = after;
  drive->data = data;
  int rc = uv_poll_init(outer, &drive->poll, uv_backend_fd(inner));
  if (rc != 0) {
    free(drive);
    return rc;
  }
  uv_timer_init(outer, &drive->timer);
  uv_prepare_init(outer, &drive->prepare);
  drive->poll.data = drive->timer.data = drive->prepare.data = drive;
  drive->open_handles = 3;
  uv_poll_start(&drive->poll, UV_READABLE, on_poll);
  uv_prepare_start(&drive->prepare, on_prepare);
  /* The prepare alone must not keep the caller's loop alive: the poll does while we serve. */
  uv_unref((uv_handle_t *)&drive->prepare);
  rearm(drive);
  *out = drive;
  return 0;
}

void hk_drive_kick(hk_drive_t *drive) {
  if (drive != NULL) rearm(drive);
}

void hk_drive_close(hk_drive_t *drive) {
  if (drive == NULL || drive->closing) return;
  drive->closing = true;
  uv_close((uv_handle_t *)&drive->poll, on_closed);
  uv_close((uv_handle_t *)&drive->timer, on_closed);
  uv_close((uv_handle_t *)&drive->prepare, on_closed);
}
