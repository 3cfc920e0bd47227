/* hk_native: the embedder's C functions and health checks, and the bridge between them and
 * Lua. A call gathers what it needs from the Lua stack before the C function runs and pushes
 * its results after it returns, so no Lua error ever unwinds through the embedder's frames
 * (a longjmp there would skip its cleanup). */
#include "hk_native.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "hk_buf.h"
#include "hk_json.h"

#define MAX_RESULTS 16
#define MAX_NAME 64
#define CHECK_DETAIL 300 /* what the health module keeps of a detail anyway */

typedef struct native_function_s {
  char name[MAX_NAME + 1];
  hk_native_fn fn;
  void *data;
} native_function_t;

typedef struct native_check_s {
  char name[MAX_NAME + 1];
  hk_health_fn fn;
  void *data;
  hk_health_opts_t opts;
} native_check_t;

struct hk_native_set_s {
  native_function_t **functions; /* pointers: closures hold them, the array may grow */
  size_t function_count;
  native_check_t **checks;
  size_t check_count;
};

/* ---- the set ------------------------------------------------------------------------------- */

int hk_native_set_new(hk_native_set_t **out) {
  *out = calloc(1, sizeof **out);
  return *out ? 0 : -ENOMEM;
}

void hk_native_set_free(hk_native_set_t *set) {
  if (set == NULL) return;
  for (size_t i = 0; i < set->function_count; i++) free(set->functions[i]);
  for (size_t i = 0; i < set->check_count; i++) free(set->checks[i]);
  free(set->functions);
  free(set->checks);
  free(set);
}

static bool is_identifier(const char *name) {
  static const char *const keywords[] = {"and", "break", "do", "else", "elseif", "end", "false", "for",
                                         "function", "goto", "if", "in", "local", "nil", "not", "or",
                                         "repeat", "return", "then", "true", "until", "while"};
  size_t len = strlen(name);
  if (len == 0 || len > MAX_NAME || (name[0] >= '0' && name[0] <= '9')) return false;
  for (size_t i = 0; i < len; i++) {
    char c = name[i];
    if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) return false;
  }
  for (size_t i = 0; i < sizeof keywords / sizeof keywords[0]; i++)
    if (strcmp(name, keywords[i]) == 0) return false;
  return true;
}

static bool is_check_name(const char *name) {
  size_t len = strlen(name);
  if (len == 0 || len > MAX_NAME) return false;
  for (size_t i = 0; i < len; i++) {
    char c = name[i];
    if (!(c == '_' || c == '-' || c == '.' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9')))
      return false;
  }
  return true;
}

/* Appends `entry` to a pointer array of `count` entries. */
static int append_entry(void ***array, size_t *count, void *entry) {
  void **grown = realloc(*array, (*count + 1) * sizeof *grown);
  if (grown == NULL) return -ENOMEM;
  grown[(*count)++] = entry;
  *array = grown;
  return 0;
}

int hk_native_set_add_function(hk_native_set_t *set, const char *name, hk_native_fn fn, void *data) {
  if (set == NULL || name == NULL || fn == NULL || !is_identifier(name)) return -EINVAL;
  for (size_t i = 0; i < set->function_count; i++)
    if (strcmp(set->functions[i]->name, name) == 0) return -EEXIST;
  native_function_t *entry = calloc(1, sizeof *entry);
  if (entry == NULL) return -ENOMEM;
  snprintf(entry->name, sizeof entry->name, "%s", name);
  entry->fn = fn;
  entry->data = data;
  int rc = append_entry((void ***)&set->functions, &set->function_count, entry);
  if (rc != 0) free(entry);
  return rc;
}

int hk_native_set_add_check(hk_native_set_t *set, const char *name, hk_health_fn fn, void *data,
                            const hk_health_opts_t *opts) {
  if (set == NULL || name == NULL || fn == NULL || !is_check_name(name)) return -EINVAL;
  if (opts != NULL && opts->interval_ms > 24ull * 3600 * 1000) return -EINVAL;
  for (size_t i = 0; i < set->check_count; i++)
    if (strcmp(set->checks[i]->name, name) == 0) return -EEXIST;
  native_check_t *entry = calloc(1, sizeof *entry);
  if (entry == NULL) return -ENOMEM;
  snprintf(entry->name, sizeof entry->name, "%s", name);
  entry->fn = fn;
  entry->data = data;
  if (opts != NULL) entry->opts = *opts;
  if (entry->opts.interval_ms == 0) entry->opts.interval_ms = 30000;
  int rc = append_entry((void ***)&set->checks, &set->check_count, entry);
  if (rc != 0) free(entry);
  return rc;
}

/* ---- a call ---------------------------------------------------------------------------------- */

typedef struct result_s {
  hk_type_t type;
  bool boolean;
  bool is_integer;
  bool is_json;
  int64_t integer;
  double number;
  char *bytes; /* strings and JSON: malloc'ed copy */
  size_t len;
} result_t;

struct hk_call_s {
  lua_State *L;
  size_t argc;
  hk_buf_t *json;      /* per argument, encoded on first hk_call_json */
  result_t results[MAX_RESULTS];
  size_t result_count;
  char error[512];
  bool has_error;
};

size_t hk_call_argc(const hk_call_t *call) { return call ? call->argc : 0; }

/* The Lua stack index of argument `index` (0-based), or 0 when there is none. */
static int arg_slot(const hk_call_t *call, size_t index) {
  return call != NULL && index < call->argc ? (int)index + 1 : 0;
}

hk_type_t hk_call_type(const hk_call_t *call, size_t index) {
  int slot = arg_slot(call, index);
  if (slot == 0) return HK_TYPE_NONE;
  switch (lua_type(call->L, slot)) {
  case LUA_TNIL: return HK_TYPE_NIL;
  case LUA_TBOOLEAN: return HK_TYPE_BOOLEAN;
  case LUA_TNUMBER: return HK_TYPE_NUMBER;
  case LUA_TSTRING: return HK_TYPE_STRING;
  case LUA_TTABLE: return HK_TYPE_TABLE;
  default: return HK_TYPE_OTHER;
  }
}

bool hk_call_is_integer(const hk_call_t *call, size_t index) {
  int slot = arg_slot(call, index);
  return slot != 0 && lua_isinteger(call->L, slot);
}

int hk_call_boolean(const hk_call_t *call, size_t index, bool *out) {
  if (hk_call_type(call, index) != HK_TYPE_BOOLEAN || out == NULL) return -EINVAL;
  *out = lua_toboolean(call->L, arg_slot(call, index));
  return 0;
}

int hk_call_integer(const hk_call_t *call, size_t index, int64_t *out) {
  if (hk_call_type(call, index) != HK_TYPE_NUMBER || out == NULL) return -EINVAL;
  int ok = 0;
  lua_Integer value = lua_tointegerx(call->L, arg_slot(call, index), &ok); /* 2.0 is 2; 2.5 is not */
  if (!ok) return -EINVAL;
  *out = (int64_t)value;
  return 0;
}

int hk_call_number(const hk_call_t *call, size_t index, double *out) {
  if (hk_call_type(call, index) != HK_TYPE_NUMBER || out == NULL) return -EINVAL;
  *out = (double)lua_tonumber(call->L, arg_slot(call, index));
  return 0;
}

int hk_call_string(const hk_call_t *call, size_t index, const char **str, size_t *len) {
  /* Only real strings: lua_tolstring would convert a number in place (and may allocate). */
  if (hk_call_type(call, index) != HK_TYPE_STRING || str == NULL) return -EINVAL;
  size_t n = 0;
  *str = lua_tolstring(call->L, arg_slot(call, index), &n);
  if (len) *len = n;
  return 0;
}

int hk_call_json(hk_call_t *call, size_t index, const char **json, size_t *len) {
  int slot = arg_slot(call, index);
  if (slot == 0 || json == NULL) return -EINVAL;
  hk_buf_t *buf = &call->json[index];
  if (buf->data == NULL) {
    char err[128];
    if (hk_json_encode(call->L, slot, buf, err, sizeof err) != 0 || buf->data == NULL) {
      hk_buf_free(buf);
      return -EINVAL;
    }
  }
  *json = buf->data;
  if (len) *len = buf->len;
  return 0;
}

static result_t *next_result(hk_call_t *call) {
  if (call == NULL || call->result_count >= MAX_RESULTS) return NULL;
  result_t *r = &call->results[call->result_count];
  memset(r, 0, sizeof *r);
  return r;
}

int hk_call_push_nil(hk_call_t *call) {
  result_t *r = next_result(call);
  if (r == NULL) return -ENOSPC;
  r->type = HK_TYPE_NIL;
  call->result_count++;
  return 0;
}

int hk_call_push_boolean(hk_call_t *call, bool value) {
  result_t *r = next_result(call);
  if (r == NULL) return -ENOSPC;
  r->type = HK_TYPE_BOOLEAN;
  r->boolean = value;
  call->result_count++;
  return 0;
}

int hk_call_push_integer(hk_call_t *call, int64_t value) {
  result_t *r = next_result(call);
  if (r == NULL) return -ENOSPC;
  r->type = HK_TYPE_NUMBER;
  r->is_integer = true;
  r->integer = value;
  call->result_count++;
  return 0;
}

int hk_call_push_number(hk_call_t *call, double value) {
  result_t *r = next_result(call);
  if (r == NULL) return -ENOSPC;
  r->type = HK_TYPE_NUMBER;
  r->number = value;
  call->result_count++;
  return 0;
}

static int push_bytes(hk_call_t *call, const char *bytes, size_t len, bool is_json) {
  result_t *r = next_result(call);
  if (r == NULL) return -ENOSPC;
  if (bytes == NULL && len > 0) return -EINVAL;
  r->bytes = malloc(len + 1);
  if (r->bytes == NULL) return -ENOMEM;
  if (len > 0) memcpy(r->bytes, bytes, len);
  r->bytes[len] = '\0';
  r->len = len;
  r->type = is_json ? HK_TYPE_TABLE : HK_TYPE_STRING;
  r->is_json = is_json;
  call->result_count++;
  return 0;
}

int hk_call_push_string(hk_call_t *call, const char *str, size_t len) { return push_bytes(call, str, len, false); }

int hk_call_push_json(hk_call_t *call, const char *json, size_t len) {
  if (call == NULL || json == NULL) return -EINVAL;
  /* Checked now, so the native function hears of bad JSON, not only its caller. */
  int top = lua_gettop(call->L);
  char err[128];
  if (!lua_checkstack(call->L, 4) || hk_json_decode(call->L, json, len, err, sizeof err) != 0) return -EINVAL;
  lua_settop(call->L, top);
  return push_bytes(call, json, len, true);
}

int hk_call_error(hk_call_t *call, const char *fmt, ...) {
  if (call == NULL) return -EINVAL;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(call->error, sizeof call->error, fmt ? fmt : "error", ap);
  va_end(ap);
  call->has_error = true;
  return -ECANCELED;
}

static void call_release(hk_call_t *call) {
  for (size_t i = 0; i < call->argc; i++) hk_buf_free(&call->json[i]);
  free(call->json);
  for (size_t i = 0; i < call->result_count; i++) free(call->results[i].bytes);
}

/* hk.native.<name>(...): upvalue 1 is the entry. */
static int call_native(lua_State *L) {
  const native_function_t *entry = lua_touserdata(L, lua_upvalueindex(1));
  hk_call_t call;
  memset(&call, 0, sizeof call);
  call.L = L;
  call.argc = (size_t)lua_gettop(L);
  if (call.argc > 0 && (call.json = calloc(call.argc, sizeof *call.json)) == NULL)
    return luaL_error(L, "hk.native.%s: out of memory", entry->name);
  int rc = entry->fn(&call, entry->data);
  if (rc < 0) {
    char message[600];
    snprintf(message, sizeof message, "hk.native.%s: %s", entry->name, call.has_error ? call.error : hk_strerror(rc));
    call_release(&call);
    lua_pushstring(L, message);
    return lua_error(L);
  }
  int base = lua_gettop(L);
  if (!lua_checkstack(L, (int)call.result_count + 4)) {
    call_release(&call);
    return luaL_error(L, "hk.native.%s: too many results", entry->name);
  }
  for (size_t i = 0; i < call.result_count; i++) {
    const result_t *r = &call.results[i];
    if (r->type == HK_TYPE_BOOLEAN) lua_pushboolean(L, r->boolean);
    else if (r->type == HK_TYPE_NUMBER && r->is_integer) lua_pushinteger(L, (lua_Integer)r->integer);
    else if (r->type == HK_TYPE_NUMBER) lua_pushnumber(L, r->number);
    else if (r->is_json) {
      char err[128];
      if (hk_json_decode(L, r->bytes, r->len, err, sizeof err) != 0) lua_pushnil(L); /* checked at push */
    } else if (r->type == HK_TYPE_STRING) lua_pushlstring(L, r->bytes, r->len);
    else lua_pushnil(L);
  }
  call_release(&call);
  return lua_gettop(L) - base;
}

void hk_native_push_functions(lua_State *L, const hk_native_set_t *set) {
  lua_createtable(L, 0, set ? (int)set->function_count : 0);
  for (size_t i = 0; set != NULL && i < set->function_count; i++) {
    lua_pushlightuserdata(L, set->functions[i]);
    lua_pushcclosure(L, call_native, 1);
    lua_setfield(L, -2, set->functions[i]->name);
  }
}

/* ---- checks ------------------------------------------------------------------------------------- */

/* The `run` of a lua-kind check: returns status, detail as hk.health expects. */
static int run_check(lua_State *L) {
  const native_check_t *entry = lua_touserdata(L, lua_upvalueindex(1));
  char detail[CHECK_DETAIL + 1] = "";
  int rc = entry->fn(entry->data, detail, sizeof detail);
  detail[CHECK_DETAIL] = '\0';
  static const char *const names[] = {"ok", "degraded", "error"};
  if (rc < 0) {
    lua_pushliteral(L, "error");
    lua_pushstring(L, detail[0] ? detail : hk_strerror(rc));
  } else if (rc > HK_HEALTH_ERROR) {
    lua_pushliteral(L, "error");
    lua_pushfstring(L, "the C check returned %d (expected HK_HEALTH_OK, _DEGRADED or _ERROR)", rc);
  } else {
    lua_pushstring(L, names[rc]);
    if (detail[0]) lua_pushstring(L, detail);
    else lua_pushnil(L);
  }
  return 2;
}

void hk_native_define_checks(lua_State *L, int hk, const hk_native_set_t *set) {
  if (set == NULL || set->check_count == 0) return;
  hk = lua_absindex(L, hk);
  for (size_t i = 0; i < set->check_count; i++) {
    const native_check_t *entry = set->checks[i];
    lua_getfield(L, hk, "health");
    lua_getfield(L, -1, "check");
    lua_pushstring(L, entry->name);
    lua_createtable(L, 0, 4);
    lua_pushliteral(L, "lua");
    lua_setfield(L, -2, "kind");
    lua_pushlightuserdata(L, (void *)entry);
    lua_pushcclosure(L, run_check, 1);
    lua_setfield(L, -2, "run");
    lua_pushboolean(L, entry->opts.critical);
    lua_setfield(L, -2, "critical");
    lua_pushinteger(L, (lua_Integer)entry->opts.interval_ms);
    lua_setfield(L, -2, "interval_ms");
    lua_call(L, 2, 0);
    lua_pop(L, 1); /* hk.health */
  }
}
