/* hk_lua_metrics: the C side of hk.metrics — registering families from scripts and updating
 * them — over the process-wide hk_metrics registry. Families outlive script generations, so a
 * reload that registers the same metric gets the same family and keeps its values. */
#ifndef HK_LUA_METRICS_H
#define HK_LUA_METRICS_H

#include <limits.h>

#include <lua.h>

#include "hk_metrics.h"

/* Pushes the table {register = fn, find = fn} bound to the registry and to *cell, the metric
 * cell this state's updates write (borrowed; read at every update, so the owner can move a
 * state from the cell its loader thread writes to its worker's). Registers the hancock.Metric
 * metatable. [-0, +1, m] */
int hk_lua_metrics_open(lua_State *L, hk_metrics_t *registry, const unsigned *cell);

/* A cell value meaning "record nothing": a worker's copy of the scripts runs their top level
 * too, and what it records there would count once per worker (the control thread's copy
 * counts it once). Series are still created and checked. */
#define HK_LUA_METRICS_SILENT UINT_MAX

#endif
