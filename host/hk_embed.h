/* hk_embed (internal side): what the hancock binary uses of the host object behind the public
 * API of host/include/hancock.h — its `serve` is a host run on threads of its own with the
 * process's signals. Not part of the public API. */
#ifndef HK_EMBED_H
#define HK_EMBED_H

#include <stddef.h>

#include "hk_config.h"

/* Serves `config` (already read from the environment and flags) until SIGTERM or SIGINT:
 * SIGHUP reloads, and the watchdog also ends a shutdown that cannot finish. Returns the exit
 * status; on a start-up failure 1, with one line in err ("script error: file:line: message",
 * "cannot listen on 0.0.0.0:5000: address already in use"). */
int hk__host_serve(const hk_config_t *config, char *err, size_t errsize);

#endif
