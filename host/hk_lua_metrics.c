/* hk_lua_metrics: hancock.Metric userdata and its methods (inc, dec, set, observe with an
 * optional exemplar table), label tables checked against the family's label names, and
 * registration from Lua. Misuse raises a
 * Lua error naming the metric; a series past its cap is dropped (and counted) silently.
 * Registrations from here are the scripts' (HK_METRIC_SCRIPT): past the registry's family cap,
 * or with help over HK_METRICS_MAX_HELP, they raise an error naming the metric and the limit. */
#include "hk_lua_metrics.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#define METRIC_MT "hancock.Metric"

typedef struct metric_box_s {
  hk_metric_t *metric;
  const unsigned *cell; /* the metric cell this state writes: read at each update */
} metric_box_t;

static metric_box_t *check_metric(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, METRIC_MT);
}

/* Reads the label table at idx into values (strings stay anchored on the stack until the caller
 * pops to `base`). Accepts {mode = "soc"} and positional {"soc"}; nil when the family has no
 * labels. */
static void read_labels(lua_State *L, int idx, const hk_metric_t *metric, hk_label_value_t *values) {
  size_t count = hk_metric_label_count(metric);
  const char *name = hk_metric_name(metric);
  if (count == 0) {
    /* idx 0: the caller passed the amount first (m:inc(2)), there is no label argument. */
    if (idx != 0 && !lua_isnoneornil(L, idx)) {
      if (!lua_istable(L, idx)) luaL_error(L, "metric %s has no labels; pass nil", name);
      lua_pushnil(L);
      if (lua_next(L, idx) != 0) luaL_error(L, "metric %s has no labels; pass nil", name);
    }
    return;
  }
  if (!lua_istable(L, idx)) luaL_error(L, "metric %s: labels must be a table, got %s", name, luaL_typename(L, idx));
  for (size_t i = 0; i < count; i++) {
    const char *label = hk_metric_label_name(metric, i);
    if (lua_getfield(L, idx, label) == LUA_TNIL) {
      lua_pop(L, 1);
      lua_rawgeti(L, idx, (lua_Integer)i + 1);
    }
    int type = lua_type(L, -1);
    if (type != LUA_TSTRING && type != LUA_TNUMBER)
      luaL_error(L, "metric %s: label '%s' must be a string, got %s", name, label, luaL_typename(L, -1));
    values[i].str = lua_tolstring(L, -1, &values[i].len);
  }
  /* No key outside the label names or positions 1..count. */
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TSTRING) {
      const char *key = lua_tostring(L, -1);
      bool known = false;
      for (size_t i = 0; i < count && !known; i++) known = strcmp(key, hk_metric_label_name(metric, i)) == 0;
      if (!known) luaL_error(L, "metric %s has no label '%s'", name, key);
    } else if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > (lua_Integer)count) {
      luaL_error(L, "metric %s: unexpected label key of type %s", name, luaL_typename(L, -1));
    }
  }
}

/* The series for the label table at idx, or NULL past the cap. */
static hk_series_t *series_for(lua_State *L, metric_box_t *box, int idx) {
  hk_label_value_t values[HK_METRICS_MAX_LABELS];
  int base = lua_gettop(L);
  read_labels(L, idx, box->metric, values);
  hk_series_t *series = hk_metric_series(box->metric, values, hk_metric_label_count(box->metric));
  lua_settop(L, base);
  return series;
}

static double check_amount(lua_State *L, int idx, double fallback, const metric_box_t *box) {
  if (lua_isnoneornil(L, idx)) return fallback;
  if (lua_type(L, idx) != LUA_TNUMBER)
    luaL_error(L, "metric %s: value must be a number, got %s", hk_metric_name(box->metric),
               luaL_typename(L, idx));
  double v = lua_tonumber(L, idx);
  if (!isfinite(v)) luaL_error(L, "metric %s: value must be finite", hk_metric_name(box->metric));
  return v;
}

static void require_type(lua_State *L, const metric_box_t *box, hk_metric_type_t type, const char *method) {
  if (hk_metric_type(box->metric) != type)
    luaL_error(L, "metric %s is a %s; :%s() is for a %s", hk_metric_name(box->metric),
               hk_metric_type_name(hk_metric_type(box->metric)), method, hk_metric_type_name(type));
}

/* Label-less families also take m:inc(n): the amount may come first. */
static int amount_index(lua_State *L, const metric_box_t *box) {
  return hk_metric_label_count(box->metric) == 0 && lua_type(L, 2) == LUA_TNUMBER ? 2 : 3;
}

/* metric:inc([labels], [n])  [-(1|2|3), +0, e] */
static int metric_inc(lua_State *L) {
  metric_box_t *box = check_metric(L, 1);
  int at = amount_index(L, box);
  double n = check_amount(L, at, 1, box);
  hk_metric_type_t type = hk_metric_type(box->metric);
  if (type == HK_METRIC_HISTOGRAM) require_type(L, box, HK_METRIC_COUNTER, "inc");
  if (type == HK_METRIC_COUNTER && n < 0)
    return luaL_error(L, "metric %s: a counter cannot decrease (inc by %f)", hk_metric_name(box->metric), n);
  hk_series_t *series = series_for(L, box, at == 2 ? 0 : 2);
  if (*box->cell == HK_LUA_METRICS_SILENT) return 0;
  if (type == HK_METRIC_COUNTER) hk_series_add(series, *box->cell, n);
  else hk_series_gauge_add(series, n);
  return 0;
}

/* gauge:dec([labels], [n])  [-(1|2|3), +0, e] */
static int metric_dec(lua_State *L) {
  metric_box_t *box = check_metric(L, 1);
  require_type(L, box, HK_METRIC_GAUGE, "dec");
  int at = amount_index(L, box);
  double n = check_amount(L, at, 1, box);
  hk_series_gauge_add(series_for(L, box, at == 2 ? 0 : 2), -n);
  return 0;
}

/* gauge:set([labels], v)  [-(2|3), +0, e] */
static int metric_set(lua_State *L) {
  metric_box_t *box = check_metric(L, 1);
  require_type(L, box, HK_METRIC_GAUGE, "set");
  int at = amount_index(L, box);
  if (lua_isnoneornil(L, at)) return luaL_error(L, "metric %s: set needs a value", hk_metric_name(box->metric));
  double v = check_amount(L, at, 0, box);
  hk_series_t *series = series_for(L, box, at == 2 ? 0 : 2);
  if (*box->cell != HK_LUA_METRICS_SILENT) hk_series_gauge_set(series, v);
  return 0;
}

static int compare_exemplar_labels(const void *a, const void *b) {
  return strcmp(((const hk_exemplar_label_t *)a)->name, ((const hk_exemplar_label_t *)b)->name);
}

/* Reads the exemplar table at idx ({request_id = "…", trace_id = "…"}: label names to string
 * or number values) into labels, sorted by name so the exposition does not depend on the
 * table's order. Names and string values stay anchored by the exemplar table; numbers are
 * converted in copies kept in a table this pushes below the caller's top (so the stack grows
 * by at most one; the caller's settop or return drops it). Returns the count. Anything that is
 * not such a table of at most HK_METRICS_EXEMPLAR_MAX_LABELS labels is misuse and raises; what
 * depends on the values (too long, not UTF-8) is the caller's to report. */
static size_t read_exemplar(lua_State *L, int idx, const metric_box_t *box, hk_exemplar_label_t *labels) {
  const char *metric = hk_metric_name(box->metric);
  if (!lua_istable(L, idx))
    luaL_error(L, "metric %s: the exemplar must be a table of labels, got %s", metric, luaL_typename(L, idx));
  size_t count = 0;
  int anchor = 0; /* created at the first number */
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    if (lua_type(L, -2) != LUA_TSTRING)
      luaL_error(L, "metric %s: exemplar label names must be strings, got %s", metric, luaL_typename(L, -2));
    size_t name_len;
    const char *name = lua_tolstring(L, -2, &name_len);
    /* strlen: a Lua string may hold a NUL, which the registry's C string would cut at. */
    if (strlen(name) != name_len || !hk_metrics_label_name_valid(name))
      luaL_error(L, "metric %s: exemplar label name '%s' is not valid ([a-zA-Z_][a-zA-Z0-9_]*)", metric, name);
    int type = lua_type(L, -1);
    if (type != LUA_TSTRING && type != LUA_TNUMBER)
      luaL_error(L, "metric %s: exemplar label '%s' must be a string or a number, got %s", metric, name,
                 luaL_typename(L, -1));
    if (count == HK_METRICS_EXEMPLAR_MAX_LABELS)
      luaL_error(L, "metric %s: an exemplar has at most %d labels", metric, HK_METRICS_EXEMPLAR_MAX_LABELS);
    labels[count].name = name; /* anchored by the table */
    if (type == LUA_TNUMBER) {
      if (anchor == 0) {
        /* Below the key and value, so lua_next still finds its key on top. */
        lua_createtable(L, HK_METRICS_EXEMPLAR_MAX_LABELS, 0);
        lua_insert(L, -3);
        anchor = lua_gettop(L) - 2;
      }
      /* A copy converted to a string (the caller's table stays as it was), kept in `anchor`. */
      lua_pushvalue(L, -1);
      labels[count].value.str = lua_tolstring(L, -1, &labels[count].value.len);
      lua_rawseti(L, anchor, (lua_Integer)count + 1);
    } else {
      labels[count].value.str = lua_tolstring(L, -1, &labels[count].value.len);
    }
    count++;
    lua_pop(L, 1);
  }
  qsort(labels, count, sizeof labels[0], compare_exemplar_labels);
  return count;
}

/* Pushes why the registry refused an exemplar, for the script.  [-0, +1, m] */
static void push_exemplar_refusal(lua_State *L, int rc) {
  if (rc == -E2BIG)
    lua_pushfstring(L, "exemplar not kept: its labels are over %d characters (the OpenMetrics limit) or %d bytes",
                    HK_METRICS_EXEMPLAR_MAX_RUNES, HK_METRICS_EXEMPLAR_MAX_BYTES);
  else if (rc == -EINVAL)
    lua_pushliteral(L, "exemplar not kept: a label value is not valid UTF-8");
  else if (rc == -ENOMEM)
    lua_pushliteral(L, "exemplar not kept: out of memory");
  else
    lua_pushfstring(L, "exemplar not kept (error %d)", rc);
}

/* histogram:observe([labels], v, [exemplar]) -> [true | nil, msg]  [-(2|3|4), +(0|1|2), e]
 * The exemplar, a table of labels such as {request_id = req.id, trace_id = …}, becomes the
 * latest exemplar of the bucket v falls in (OpenMetrics scrapes show it); nil or an empty table
 * is none, and then nothing is returned. With one: true, or nil and why the exemplar was not
 * kept (over 128 characters, not UTF-8: values may come from clients, so this is not an error);
 * the observation counts either way. */
static int metric_observe(lua_State *L) {
  metric_box_t *box = check_metric(L, 1);
  require_type(L, box, HK_METRIC_HISTOGRAM, "observe");
  int at = amount_index(L, box);
  if (lua_isnoneornil(L, at)) return luaL_error(L, "metric %s: observe needs a value", hk_metric_name(box->metric));
  double v = check_amount(L, at, 0, box);
  hk_exemplar_label_t exemplar[HK_METRICS_EXEMPLAR_MAX_LABELS];
  size_t exemplar_count = 0;
  if (!lua_isnoneornil(L, at + 1)) exemplar_count = read_exemplar(L, at + 1, box, exemplar);
  hk_series_t *series = series_for(L, box, at == 2 ? 0 : 2);
  if (exemplar_count == 0) {
    if (*box->cell != HK_LUA_METRICS_SILENT) hk_series_observe(series, *box->cell, v);
    return 0;
  }
  /* A silent state records nothing, and a series past its cap is dropped (and counted), but
   * both answer about the exemplar as a recording call would. -EBUSY means another worker's
   * exemplar of the same instant took the bucket: as good as ours. */
  int rc = *box->cell == HK_LUA_METRICS_SILENT || series == NULL
               ? hk_metrics_exemplar_check(exemplar, exemplar_count)
               : hk_series_observe_exemplar(series, *box->cell, v, exemplar, exemplar_count);
  if (rc == 0 || rc == -EBUSY) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  push_exemplar_refusal(L, rc);
  return 2;
}

static int metric_index(lua_State *L) {
  metric_box_t *box = check_metric(L, 1);
  const char *key = luaL_checkstring(L, 2);
  if (strcmp(key, "name") == 0) lua_pushstring(L, hk_metric_name(box->metric));
  else if (strcmp(key, "type") == 0) lua_pushstring(L, hk_metric_type_name(hk_metric_type(box->metric)));
  else if (strcmp(key, "inc") == 0) lua_pushcfunction(L, metric_inc);
  else if (strcmp(key, "dec") == 0) lua_pushcfunction(L, metric_dec);
  else if (strcmp(key, "set") == 0) lua_pushcfunction(L, metric_set);
  else if (strcmp(key, "observe") == 0) lua_pushcfunction(L, metric_observe);
  else lua_pushnil(L);
  return 1;
}

static int metric_tostring(lua_State *L) {
  metric_box_t *box = check_metric(L, 1);
  lua_pushfstring(L, "hancock.Metric (%s %s)", hk_metric_type_name(hk_metric_type(box->metric)), hk_metric_name(box->metric));
  return 1;
}

/* register(type, name, help, labels, opts) -> metric  [-5, +1, e] */
static int metrics_register(lua_State *L) {
  hk_metrics_t *registry = lua_touserdata(L, lua_upvalueindex(1));
  const unsigned *cell = lua_touserdata(L, lua_upvalueindex(2));
  static const char *const types[] = {"counter", "gauge", "histogram", NULL};
  hk_metric_opts_t opts = {0};
  opts.flags = HK_METRIC_SCRIPT;
  opts.type = (hk_metric_type_t)luaL_checkoption(L, 1, NULL, types);
  opts.name = luaL_checkstring(L, 2);
  opts.help = luaL_checkstring(L, 3);
  const char *labels[HK_METRICS_MAX_LABELS];
  if (!lua_isnoneornil(L, 4)) {
    luaL_checktype(L, 4, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 4);
    if (n > HK_METRICS_MAX_LABELS)
      return luaL_error(L, "metric %s: at most %d labels", opts.name, HK_METRICS_MAX_LABELS);
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, 4, i);
      if (lua_type(L, -1) != LUA_TSTRING) return luaL_error(L, "metric %s: label names must be strings", opts.name);
      labels[i - 1] = lua_tostring(L, -1); /* anchored by the table */
      lua_pop(L, 1);
    }
    opts.labels = labels;
    opts.label_count = (size_t)n;
  }
  double buckets[HK_METRICS_MAX_BUCKETS];
  if (!lua_isnoneornil(L, 5)) {
    luaL_checktype(L, 5, LUA_TTABLE);
    if (lua_getfield(L, 5, "buckets") == LUA_TTABLE) {
      lua_Integer n = luaL_len(L, -1);
      if (n > HK_METRICS_MAX_BUCKETS)
        return luaL_error(L, "metric %s: at most %d buckets", opts.name, HK_METRICS_MAX_BUCKETS);
      for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        if (!lua_isnumber(L, -1)) return luaL_error(L, "metric %s: buckets must be numbers", opts.name);
        buckets[i - 1] = lua_tonumber(L, -1);
        lua_pop(L, 1);
      }
      opts.buckets = buckets;
      opts.bucket_count = (size_t)n;
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 5, "max_series") != LUA_TNIL) {
      lua_Integer cap = lua_tointeger(L, -1);
      if (!lua_isinteger(L, -1) || cap < 1) return luaL_error(L, "metric %s: max_series must be a positive integer", opts.name);
      opts.series_cap = (size_t)cap;
    }
    lua_pop(L, 1);
  }
  char err[512]; /* room for a 255-byte name in the message */
  hk_metric_t *metric = NULL;
  if (hk_metrics_register(registry, &opts, &metric, err, sizeof err) != 0) return luaL_error(L, "%s", err);
  metric_box_t *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->metric = metric;
  box->cell = cell;
  luaL_setmetatable(L, METRIC_MT);
  return 1;
}

/* find(name) -> metric | nil  [-1, +1, m] */
static int metrics_find(lua_State *L) {
  hk_metrics_t *registry = lua_touserdata(L, lua_upvalueindex(1));
  const unsigned *cell = lua_touserdata(L, lua_upvalueindex(2));
  hk_metric_t *metric = hk_metrics_find(registry, luaL_checkstring(L, 1));
  if (metric == NULL) {
    lua_pushnil(L);
    return 1;
  }
  metric_box_t *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->metric = metric;
  box->cell = cell;
  luaL_setmetatable(L, METRIC_MT);
  return 1;
}

int hk_lua_metrics_open(lua_State *L, hk_metrics_t *registry, const unsigned *cell) {
  if (luaL_newmetatable(L, METRIC_MT)) {
    lua_pushcfunction(L, metric_index), lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, metric_tostring), lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "hancock.Metric"), lua_setfield(L, -2, "__name");
  }
  lua_pop(L, 1);
  lua_createtable(L, 0, 1);
  lua_pushlightuserdata(L, registry);
  lua_pushlightuserdata(L, (void *)cell);
  lua_pushcclosure(L, metrics_register, 2);
  lua_setfield(L, -2, "register");
  lua_pushlightuserdata(L, registry);
  lua_pushlightuserdata(L, (void *)cell);
  lua_pushcclosure(L, metrics_find, 2);
  lua_setfield(L, -2, "find");
  return 1;
}
