/* hk_drive: runs one of our event loops from inside a caller's loop, on the caller's thread —
 * how an embedded host works without threads of its own. The inner loop's backend (its epoll
 * descriptor) is polled by the caller's loop, and a timer there follows the inner loop's next
 * timeout; whenever either fires, the inner loop runs once without blocking. Everything the
 * inner loop owns stays on it, so it can still be walked and closed as a whole. */
#ifndef HK_DRIVE_H
#define HK_DRIVE_H

#include <uv.h>

typedef struct hk_drive_s hk_drive_t;

/* Called after each run of the inner loop (on the caller's thread). */
typedef void (*hk_drive_after_cb)(void *data);

/* Starts driving `inner` from `outer`. The driver's handles live on `outer` and free
 * themselves once closed (hk_drive_close), so its owner may go away before they are. */
int hk_drive_start(uv_loop_t *outer, uv_loop_t *inner, hk_drive_after_cb after, void *data,
                   hk_drive_t **out);

/* Something outside a run changed the inner loop (a timer started, a handle closed from the
 * caller's code): takes the inner loop's next timeout again. */
void hk_drive_kick(hk_drive_t *drive);

/* Stops driving; the inner loop is not touched. NULL is a no-op. */
void hk_drive_close(hk_drive_t *drive);

#endif
