/* hk_native: what an embedding program adds to the scripts — C functions (hk.native.<name>)
 * and C health checks — and the bridge that calls them from Lua. The set is filled before the
 * host starts and only read after, by every generation on every thread, so it takes no lock.
 * The public side of the bridge (hk_call_*) is declared in hancock.h. */
#ifndef HK_NATIVE_H
#define HK_NATIVE_H

#include <stddef.h>

#include <lua.h>

#include "hancock.h"

typedef struct hk_native_set_s hk_native_set_t;

int hk_native_set_new(hk_native_set_t **out);
void hk_native_set_free(hk_native_set_t *set); /* NULL is a no-op */

/* -EINVAL for a name that is not a Lua identifier (functions) or a check name (checks: letters,
 * digits, '_', '-', '.', at most 64), -EEXIST when taken, -ENOMEM. */
int hk_native_set_add_function(hk_native_set_t *set, const char *name, hk_native_fn fn, void *data);
int hk_native_set_add_check(hk_native_set_t *set, const char *name, hk_health_fn fn, void *data,
                            const hk_health_opts_t *opts);

/* Pushes the table of the set's functions, each a C closure over its entry (an empty table
 * for a NULL set). [-0, +1, m] */
void hk_native_push_functions(lua_State *L, const hk_native_set_t *set);

/* Defines the set's checks through the runtime's hk.health.check; `hk` is the index of the
 * runtime table. Raises what hk.health.check raises. [-0, +0, e] */
void hk_native_define_checks(lua_State *L, int hk, const hk_native_set_t *set);

#endif
