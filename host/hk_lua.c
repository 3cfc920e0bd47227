/* hk_lua: a script generation — the lua_State, the embedded runtime, the operator's scripts,
 * their routes and log hooks — and the running of handlers in coroutines. The C half of the
 * `hancock` module is `hancock.core` (registered here); the Lua half is lua/hancock.lua.
 * Entry points: hk_lua_new, hk_lua_route, hk_lua_run, hk_lua_attach_log. */
#include "hk_lua.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <strings.h>
#include <sys/statvfs.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "hk_carry.h"
#include "hk_history.h"
#include "hk_client.h"
#include "hk_crypto.h"
#include "hk_embedded.h"
#include "hk_json.h"
#include "hk_native.h"
#include "hk_lua_metrics.h"
#include "hk_ratelimit.h"
#include "hk_router.h"
#include "hk_text.h"
#include "hk_watchdog.h"

#define REQUEST_MT "hancock.Request"
#define HEADERS_MT "hancock.Headers"

/* What one entry into Lua may still spend: VM instructions counted by the hook, and whether it
 * has gone over (instructions or wall clock), after which the hook raises on every instruction
 * until the entry is gone, so a script's own pcall cannot swallow it for long. */
typedef struct budget_s {
  uint64_t instructions;
  bool over;
  bool over_time; /* the watchdog's limit rather than the instruction count */
} budget_t;

struct hk_lua_s {
  lua_State *L;
  hk_metrics_t *metrics;
  const hk_native_set_t *natives; /* the embedder's functions and checks; borrowed */
  unsigned worker;
  hk_router_t *router;
  char *scripts_dir;
  int respond_ref;        /* hancock._respond: shapes a handler's return values */
  int log_hooks_ref;      /* a sequence of hk.on_log functions */
  size_t log_hook_count;
  bool in_log_hook;       /* a hook that logs must not re-enter the hooks */
  uint64_t last_hook_error_ns;
  uint64_t last_finalizer_error_ns;
  hk_request_t *current;  /* the request whose coroutine is running */
  lua_State *running;     /* that coroutine */
  hk_lua_task_t *task;    /* and its task */
  hk_lua_task_t *tasks;   /* every handler in flight */
  uv_loop_t *loop;        /* for asynchronous calls; NULL in `hancock check` */
  hk_client_t *client;
  hk_ratelimit_t *ratelimit; /* the worker's buckets: they outlive script generations */
  hk_carry_t *carry;          /* values handed to the next generation (health results) */
  hk_history_t *history;      /* the process's own samples; the control copy's only */
  _Atomic size_t memory_used; /* bytes the state holds: written by the owning thread only,
                                 read by the scrape-time collector on any thread */
  size_t memory_limit;        /* 0: unlimited */
  uint64_t instruction_limit; /* per request (and per background-task resume); 0: unlimited */
  budget_t *budget;           /* the outermost entry's budget while Lua runs, else NULL */
  int entry_depth;            /* entries into Lua on the C stack (hooks nest inside handlers) */
  hk_watch_t watch;           /* the wall clock over entries (hk_watchdog) */
  char **modes;               /* registered specialist modes: the values requests_by_mode may take */
  size_t mode_count;
  char **env_names;           /* hk.env's allow-list beyond the documented rule */
  size_t env_name_count;
  bool retired;               /* replaced by a reload: finishing its requests, then freed */
  bool worker_copy;           /* a worker's copy: background tasks run in the control's */
  int idle_threads[64];       /* registry refs of finished coroutines kept for reuse */
  int idle_count;
  hk_lua_idle_cb on_idle;     /* retired: called when its last task has ended */
  void *on_idle_data;
};

/* What a suspended task waits on: a timer, an outbound call, or a congested client. */
typedef enum task_op_e { OP_NONE, OP_SLEEP, OP_HTTP, OP_DRAIN, OP_STATFS } task_op_t;

struct hk_lua_task_s {
  hk_lua_t *lua;
  lua_State *co;
  int co_ref;
  struct request_box_s *box; /* anchored by box_ref until the task ends */
  int box_ref;
  hk_request_t *req;
  hk_lua_done_cb done;
  task_op_t op;
  uv_timer_t *timer;      /* OP_SLEEP; freed in its close callback */
  hk_client_call_t *call; /* OP_HTTP */
  uv_fs_t *statfs;        /* OP_STATFS: on the threadpool; orphaned (data NULL) if cancelled */
  int on_chunk_ref;       /* OP_HTTP with on_chunk */
  bool chunks_paused;     /* OP_HTTP: on_chunk's transfer paused until the client drains */
  int timer_nargs;        /* values on the coroutine for the resume when the timer fires */
  char parent_id[HK_REQID_SIZE]; /* background tasks: the request that spawned them, for logs */
  bool started;                  /* background tasks: resumed at least once */
  budget_t budget;               /* a request's for its whole life; a background task's per run */
  int running;                   /* resumes and on_chunk calls of this task on the C stack */
  bool cancelled;                /* cancelled while running: freed when the last of them returns */
  hk_lua_task_t *prev, *next;
};

/* A state finds its hk_lua_t in the main thread's extra space, which Lua copies into every
 * thread created afterwards: no registry lookup, no allocation, usable from the count hook. */
static hk_lua_t *context_of(lua_State *L) { return *(hk_lua_t **)lua_getextraspace(L); }

/* ---- errors with the script's location ---------------------------------------------------- */

/* Prefixes msg with the innermost script location ("scripts/routes.lua:12: ") unless it already
 * has one, so errors raised inside C functions still point at the operator's line. */
/* Length of a leading "file.lua:123: " location in msg, or 0. */
static size_t location_prefix(const char *msg) {
  const char *colon = strstr(msg, ".lua:");
  if (colon == NULL || memchr(msg, ' ', (size_t)(colon - msg)) != NULL) return 0;
  const char *p = colon + 5;
  while (hk_text_is_digit((unsigned char)*p)) p++;
  if (p == colon + 5 || p[0] != ':' || p[1] != ' ') return 0;
  return (size_t)(p + 2 - msg);
}

static void push_located_message(lua_State *L, lua_State *co, const char *msg) {
  size_t located = location_prefix(msg);
  /* An error raised by a C function the runtime called carries the runtime's location
   * ("lua/hancock.lua:83: "); the script's line is the one that helps. */
  if (located > 0 && strncmp(msg, "lua/", 4) == 0) {
    msg += located;
    located = location_prefix(msg);
  }
  if (located > 0) {
    /* Already located in a script (error(msg, level) from a module, a syntax error). */
    lua_pushstring(L, msg);
    return;
  }
  lua_Debug ar;
  for (int level = 0; lua_getstack(co, level, &ar); level++) {
    if (!lua_getinfo(co, "Sl", &ar) || ar.currentline <= 0) continue;
    if (strncmp(ar.source, "=lua/", 5) == 0) continue; /* the runtime: point past it */
    lua_pushfstring(L, "%s:%d: %s", ar.short_src, ar.currentline, msg);
    return;
  }
  lua_pushstring(L, msg);
}

/* Error text longer than this is cut before it is located and traced: reporting an error must
 * never need memory in proportion to what the script raised. */
#define ERROR_TEXT_MAX 2048

/* The error value as text, without running arbitrary __tostring metamethods (an error value may
 * be nil, a table, or a table whose __tostring never returns), cut to ERROR_TEXT_MAX. May push
 * the text it returns. */
static const char *error_text(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  int type = lua_type(L, idx);
  if (type == LUA_TNIL) return "error(nil)";
  if (type != LUA_TSTRING && type != LUA_TNUMBER)
    return lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, idx));
  if (type == LUA_TNUMBER) {
    lua_pushvalue(L, idx);
    return lua_tostring(L, -1); /* converts the copy, not the error value */
  }
  size_t len;
  const char *text = lua_tolstring(L, idx, &len);
  if (len <= ERROR_TEXT_MAX) return text;
  lua_pushlstring(L, text, ERROR_TEXT_MAX);
  lua_pushfstring(L, "%s... (error message cut: %I bytes)", lua_tostring(L, -1), (lua_Integer)len);
  lua_remove(L, -2);
  return lua_tostring(L, -1);
}

static int message_handler(lua_State *L) {
  const char *msg = error_text(L, 1);
  push_located_message(L, L, msg);
  luaL_traceback(L, L, lua_tostring(L, -1), 1);
  return 1;
}

/* ---- entries into Lua: budgets and the wall clock ------------------------------------------ */

#define HOOK_STEP 1000 /* instructions between budget checks */

static void budget_hook(lua_State *L, lua_Debug *ar);

/* Every way C runs Lua — a handler's resume, a log hook, on_chunk, a finalizer, a script's top
 * level — is an entry: it runs under an instruction budget and the watchdog's clock. Entries
 * nest (a handler's log call runs the hooks); the outermost one's budget and clock hold. */
static void entry_begin(hk_lua_t *lua, lua_State *L, budget_t *budget, const char *label) {
  if (lua->entry_depth++ > 0) return;
  lua->budget = budget;
  lua_sethook(L, budget_hook, LUA_MASKCOUNT, HOOK_STEP);
  hk_watch_enter(&lua->watch, label);
}

static void entry_end(hk_lua_t *lua, const char *label) {
  if (--lua->entry_depth > 0) return;
  lua->budget = NULL;
  if (hk_watch_leave(&lua->watch))
    hk_log_event(HK_LOG_WARNING, label, "lua_stuck_ended", "Lua reported stuck has returned", NULL, 0);
}

/* pcall with a traceback, as one entry (charged to `budget`, or a fresh one when NULL): the
 * one way C enters Lua outside a coroutine. */
static int protected_call_as(lua_State *L, int nargs, int nresults, budget_t *budget, const char *label) {
  hk_lua_t *lua = context_of(L);
  budget_t fresh = {0};
  int base = lua_gettop(L) - nargs;
  lua_pushcfunction(L, message_handler);
  lua_insert(L, base);
  entry_begin(lua, L, budget ? budget : &fresh, label);
  int status = lua_pcall(L, nargs, nresults, base);
  entry_end(lua, label);
  lua_remove(L, base);
  return status;
}

static int protected_call(lua_State *L, int nargs, int nresults) {
  return protected_call_as(L, nargs, nresults, NULL, NULL);
}

/* Runs fn(ud) protected, for C code that builds Lua values outside any script (a memory error
 * there must fail one request, never panic the state). Returns a Lua status; the error value
 * is popped. */
static int run_protected(lua_State *L, lua_CFunction fn, void *ud) {
  if (!lua_checkstack(L, 2)) return LUA_ERRMEM;
  lua_pushcfunction(L, fn);
  lua_pushlightuserdata(L, ud);
  int status = lua_pcall(L, 1, 0, 0);
  if (status != LUA_OK) lua_pop(L, 1);
  return status;
}

/* ---- module searchers: embedded runtime, then the scripts dir ----------------------------- */

static int load_embedded(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  const char *dev_dir = getenv("HANCOCK_LUA_PATH");
  if (dev_dir != NULL && *dev_dir != '\0') {
    /* Development: read lua/ from disk so edits need no rebuild. */
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, dev_dir);
    luaL_addchar(&b, '/');
    for (const char *p = name; *p; p++) luaL_addchar(&b, *p == '.' ? '/' : *p);
    luaL_addstring(&b, ".lua");
    luaL_pushresult(&b);
    const char *path = lua_tostring(L, -1);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
      lua_pop(L, 1);
      goto embedded; /* not in the tree: the compiled-in copy, so a partial tree still works */
    }
    luaL_Buffer source;
    luaL_buffinit(L, &source);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) luaL_addlstring(&source, chunk, n);
    fclose(f);
    luaL_pushresult(&source);
    /* The embedded chunk name, so runtime frames are recognised either way. */
    const char *name_in_tree = lua_pushfstring(L, "=lua/%s", path + strlen(dev_dir) + 1);
    size_t len;
    const char *text = lua_tolstring(L, -2, &len);
    if (luaL_loadbufferx(L, text, len, name_in_tree, "t") != LUA_OK) return lua_error(L);
    lua_pushstring(L, path);
    return 2;
  }
embedded:
  for (const hk_embedded_module_t *m = hk_embedded_lua; m->name != NULL; m++) {
    if (strcmp(m->name, name) != 0) continue;
    lua_pushfstring(L, "=%s", m->chunk);
    if (luaL_loadbufferx(L, m->source, m->size, lua_tostring(L, -1), "t") != LUA_OK) return lua_error(L);
    lua_pushstring(L, m->chunk);
    return 2;
  }
  lua_pushfstring(L, "no embedded module '%s'", name);
  return 1;
}

/* require "name" for the operator's modules: scripts_dir/name.lua or scripts_dir/name/init.lua,
 * and nothing else. The directory is fixed here, not read from package.path, so a script cannot
 * point require outside it; names with "..", a leading dot or slash are refused. */
static int search_scripts(lua_State *L) {
  hk_lua_t *lua = context_of(L);
  size_t len;
  const char *name = luaL_checklstring(L, 1, &len);
  if (len == 0 || len > 200 || name[0] == '.' || name[0] == '/' || strstr(name, "..") != NULL ||
      strchr(name, '\\') != NULL) {
    lua_pushfstring(L, "module name '%s' is not allowed", name);
    return 1;
  }
  static const char *const forms[] = {"%s/%s.lua", "%s/%s/init.lua"};
  char relative[256], path[PATH_MAX];
  for (size_t i = 0; i <= len; i++) relative[i] = name[i] == '.' ? '/' : name[i];
  for (size_t f = 0; f < 2; f++) {
    snprintf(path, sizeof path, forms[f], lua->scripts_dir, relative);
    FILE *probe = fopen(path, "rb");
    if (probe == NULL) continue;
    fclose(probe);
    if (luaL_loadfilex(L, path, "t") != LUA_OK) return lua_error(L);
    lua_pushstring(L, path);
    return 2;
  }
  lua_pushfstring(L, "no file '%s/%s.lua' or '%s/%s/init.lua'", lua->scripts_dir, relative,
                  lua->scripts_dir, relative);
  return 1;
}

static void install_searchers(lua_State *L) {
  lua_getglobal(L, "package");
  lua_pushliteral(L, "");
  lua_setfield(L, -2, "cpath");
  lua_pushliteral(L, "");
  lua_setfield(L, -2, "path");
  /* preload, the embedded runtime, the scripts directory: no C modules, no system paths. */
  lua_createtable(L, 3, 0);
  lua_getfield(L, -2, "searchers");
  lua_rawgeti(L, -1, 1);
  lua_rawseti(L, -3, 1);
  lua_pop(L, 1);
  lua_pushcfunction(L, load_embedded);
  lua_rawseti(L, -2, 2);
  lua_pushcfunction(L, search_scripts);
  lua_rawseti(L, -2, 3);
  lua_setfield(L, -2, "searchers");
  lua_pop(L, 1);
}

/* ---- hancock.core: registration --------------------------------------------------------- */

/* Where each route was registered (handler ref -> "file:line"), to name both files when a
 * second script registers the same route. */
#define ROUTE_ORIGINS "hancock.route_origins"

/* The script line that called hk.route: the first frame outside the runtime. */
static void push_script_location(lua_State *L) {
  lua_Debug ar;
  for (int level = 1; lua_getstack(L, level, &ar); level++) {
    if (!lua_getinfo(L, "Sl", &ar) || ar.currentline <= 0) continue;
    if (strncmp(ar.source, "=lua/", 5) == 0) continue;
    lua_pushfstring(L, "%s:%d", ar.short_src, ar.currentline);
    return;
  }
  lua_pushliteral(L, "?");
}

/* core.route(method, pattern, handler)  [-3, +0, e] */
static int core_route(lua_State *L) {
  hk_lua_t *lua = context_of(L);
  const char *method = luaL_checkstring(L, 1);
  const char *pattern = luaL_checkstring(L, 2);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  char upper[32];
  size_t len = strlen(method);
  if (len == 0 || len >= sizeof upper) return luaL_error(L, "hk.route: invalid method '%s'", method);
  for (size_t i = 0; i <= len; i++) upper[i] = (char)(method[i] >= 'a' && method[i] <= 'z' ? method[i] - 32 : method[i]);
  if (strcmp(upper, "ANY") == 0) strcpy(upper, "*");
  luaL_getsubtable(L, LUA_REGISTRYINDEX, ROUTE_ORIGINS);
  int origins = lua_gettop(L);
  lua_pushvalue(L, 3);
  int ref = luaL_ref(L, LUA_REGISTRYINDEX);
  const char *err = NULL;
  int conflict = LUA_NOREF;
  int rc = hk_router_add_ex(lua->router, upper, pattern, ref, &conflict, &err);
  if (rc != 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    if (conflict != LUA_NOREF && lua_rawgeti(L, origins, conflict) == LUA_TSTRING)
      return luaL_error(L, "hk.route(%s, %s): already registered at %s", method, pattern, lua_tostring(L, -1));
    return luaL_error(L, "hk.route(%s, %s): %s", method, pattern, err ? err : "out of memory");
  }
  push_script_location(L);
  lua_rawseti(L, origins, ref);
  return 0;
}

#define MAX_MODES 256

/* core.register_mode(name): a value hancock_requests_by_mode may carry (llm.mode calls it), so
 * the label is bounded by the scripts, never by what clients send.  [-1, +0, e] */
static int core_register_mode(lua_State *L) {
  hk_lua_t *lua = context_of(L);
  size_t len;
  const char *name = luaL_checklstring(L, 1, &len);
  if (len == 0 || len > HK_MODE_MAX) return luaL_error(L, "mode names are 1 to %d bytes", HK_MODE_MAX);
  for (size_t i = 0; i < lua->mode_count; i++) {
    if (strcmp(lua->modes[i], name) == 0) return 0;
  }
  if (lua->mode_count == MAX_MODES) return luaL_error(L, "too many modes (at most %d)", MAX_MODES);
  if (lua->mode_count % 16 == 0) {
    char **grown = realloc(lua->modes, (lua->mode_count + 16) * sizeof *grown);
    if (grown == NULL) return luaL_error(L, "not enough memory");
    lua->modes = grown;
  }
  if ((lua->modes[lua->mode_count] = strdup(name)) == NULL) return luaL_error(L, "not enough memory");
  lua->mode_count++;
  return 0;
}

/* The requests_by_mode label for a request: its mode when registered, "other" when not, NULL
 * when it has none. */
static const char *mode_label(const hk_lua_t *lua, const hk_request_t *req) {
  if (req->mode[0] == '\0') return NULL;
  for (size_t i = 0; i < lua->mode_count; i++) {
    if (strcmp(lua->modes[i], req->mode) == 0) return req->mode;
  }
  return "other";
}

/* core.on_log(fn)  [-1, +0, e] */
static int core_on_log(lua_State *L) {
  hk_lua_t *lua = context_of(L);
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_rawgeti(L, LUA_REGISTRYINDEX, lua->log_hooks_ref);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, (lua_Integer)++lua->log_hook_count);
  lua_pop(L, 1);
  return 0;
}

/* ---- logging ------------------------------------------------------------------------------ */

static int compare_strings(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The shortest %g form that reads back as the same double. */
static int append_double(hk_buf_t *line, double d) {
  if (d != d || d > 1.7976931348623157e308 || d < -1.7976931348623157e308)
    return hk_buf_append_str(line, "null");
  char text[40];
  for (int precision = 15; precision <= 17; precision++) {
    snprintf(text, sizeof text, "%.*g", precision, d);
    if (strtod(text, NULL) == d) break;
  }
  return hk_buf_append_str(line, text);
}

/* Appends one Lua value as a log field value. `origin`, when not NULL, is the core's field of
 * the same name: a number the hooks left unchanged keeps the core's format (two decimals for
 * latencies). */
static int append_lua_value(lua_State *L, int idx, hk_buf_t *line, const hk_log_field_t *origin) {
  switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      return hk_json_append_string(line, s, len, HK_JSON_ASCII);
    }
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) return hk_buf_appendf(line, "%lld", (long long)lua_tointeger(L, idx));
      if (origin != NULL && origin->type == HK_LOG_DOUBLE &&
          lua_tonumber(L, idx) == (double)llround(origin->d * 100) / 100)
        return hk_log_append_value(line, origin);
      return append_double(line, lua_tonumber(L, idx));
    case LUA_TBOOLEAN: return hk_buf_append_str(line, lua_toboolean(L, idx) ? "true" : "false");
    case LUA_TTABLE: {
      char err[128];
      size_t mark = line->len;
      static const hk_json_encode_opts_t log_opts = {HK_JSON_ASCII, hk_log_key_is_secret, 1024 * 1024};
      if (hk_json_encode_opts(L, idx, line, &log_opts, err, sizeof err) == 0) return 0;
      line->len = mark;
      return hk_json_append_string(line, err, strlen(err), HK_JSON_ASCII);
    }
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == NULL) return hk_buf_append_str(line, "null");
      /* fallthrough */
    default: return hk_buf_appendf(line, "\"<%s>\"", luaL_typename(L, idx));
  }
}

static const hk_log_field_t *find_field(const hk_log_field_t *fields, size_t count, const char *key) {
  for (size_t i = 0; i < count; i++) {
    if (strcmp(fields[i].key, key) == 0) return &fields[i];
  }
  return NULL;
}

/* Serialises the event table at `idx` as one log line: the fixed keys first, then the rest
 * sorted, secret-named keys redacted. */
static void write_event_table(lua_State *L, int idx, hk_log_level_t level,
                              const hk_log_field_t *fields, size_t field_count) {
  idx = lua_absindex(L, idx);
  hk_buf_t line = HK_BUF_INIT;
  /* Raw reads: a hook may have given the event a metatable, whose __index must not run here. */
  lua_pushliteral(L, "request_id");
  lua_rawget(L, idx);
  lua_pushliteral(L, "event");
  lua_rawget(L, idx);
  lua_pushliteral(L, "message");
  lua_rawget(L, idx);
  const char *request_id = lua_type(L, -3) == LUA_TSTRING ? lua_tostring(L, -3) : NULL;
  const char *event = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "log";
  const char *message = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  int rc = hk_log_begin_line(&line, level, request_id, event, message);
  lua_pop(L, 3);

  const char *keys[256];
  size_t count = 0;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    if (lua_type(L, -2) == LUA_TSTRING && count < sizeof keys / sizeof keys[0]) {
      const char *key = lua_tostring(L, -2);
      if (!hk_log_key_is_reserved(key, strlen(key))) keys[count++] = key; /* anchored by the table */
    }
    lua_pop(L, 1);
  }
  qsort(keys, count, sizeof keys[0], compare_strings);
  for (size_t i = 0; rc == 0 && i < count; i++) {
    bool redacted;
    rc = hk_log_append_key(&line, keys[i], strlen(keys[i]), &redacted);
    if (rc != 0) break;
    if (redacted) continue;
    lua_pushstring(L, keys[i]);
    lua_rawget(L, idx);
    rc = append_lua_value(L, -1, &line, find_field(fields, field_count, keys[i]));
    lua_pop(L, 1);
  }
  if (rc == 0) rc = hk_buf_append_char(&line, '}');
  if (rc == 0) hk_log_write_line(line.data, line.len);
  hk_buf_free(&line);
}

/* Runs the hooks on the event table at the top of the stack. Returns false when a hook asked
 * to drop the event. */
static bool run_log_hooks(hk_lua_t *lua, lua_State *L) {
  int ev = lua_gettop(L);
  bool keep = true;
  lua->in_log_hook = true;
  lua_rawgeti(L, LUA_REGISTRYINDEX, lua->log_hooks_ref);
  for (size_t i = 1; keep && i <= lua->log_hook_count; i++) {
    lua_rawgeti(L, -1, (lua_Integer)i);
    lua_pushvalue(L, ev);
    if (protected_call(L, 1, 1) != LUA_OK) {
      uint64_t now = hk_now_ns();
      if (now - lua->last_hook_error_ns > 1000000000u) {
        lua->last_hook_error_ns = now;
        hk_log_event_plain(HK_LOG_ERROR, NULL, "log_hook_error", "an hk.on_log hook failed",
                     (hk_log_field_t[]){HK_LOG_S("error", lua_tostring(L, -1))}, 1);
      }
    } else if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
      keep = false;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua->in_log_hook = false;
  return keep;
}

static void push_field_value(lua_State *L, const hk_log_field_t *f) {
  switch (f->type) {
    case HK_LOG_STR:
      if (f->str) lua_pushlstring(L, f->str, f->len);
      else lua_pushlightuserdata(L, NULL);
      break;
    case HK_LOG_INT: lua_pushinteger(L, f->i); break;
    case HK_LOG_DOUBLE: lua_pushnumber(L, (double)llround(f->d * 100) / 100); break;
    case HK_LOG_BOOL: lua_pushboolean(L, (int)f->i); break;
    case HK_LOG_RAW: lua_pushlstring(L, f->str ? f->str : "null", f->str ? f->len : 4); break;
  }
}

typedef struct enrich_s {
  hk_lua_t *lua;
  hk_log_level_t level;
  const char *request_id, *event, *message;
  const hk_log_field_t *fields;
  size_t field_count;
} enrich_t;

/* The event as a table, through the hooks, written.  [-0, +0, m] */
static int enrich_protected(lua_State *L) {
  const enrich_t *e = lua_touserdata(L, 1);
  lua_createtable(L, 0, (int)e->field_count + 5);
  if (e->request_id) lua_pushstring(L, e->request_id), lua_setfield(L, -2, "request_id");
  lua_pushstring(L, e->event), lua_setfield(L, -2, "event");
  lua_pushstring(L, e->message ? e->message : e->event), lua_setfield(L, -2, "message");
  lua_pushstring(L, hk_log_level_name(e->level)), lua_setfield(L, -2, "level");
  for (size_t i = 0; i < e->field_count; i++) {
    push_field_value(L, &e->fields[i]);
    lua_setfield(L, -2, e->fields[i].key);
  }
  if (run_log_hooks(e->lua, L)) write_event_table(L, -1, e->level, e->fields, e->field_count);
  return 0;
}

/* The hk_log enricher: runs the scripts' hooks on a core event. When the state cannot build
 * the event (out of memory), hk_log writes it as it is. */
static bool enrich_event(void *data, hk_log_level_t level, const char *request_id,
                         const char *event, const char *message, const hk_log_field_t *fields,
                         size_t field_count) {
  hk_lua_t *lua = data;
  /* A hook that logs, or an event raised while a coroutine runs, is written as it is: the
   * main thread must not be re-entered from inside a coroutine. */
  if (lua->log_hook_count == 0 || lua->in_log_hook || lua->running != NULL) return false;
  lua_State *L = lua->L;
  int top = lua_gettop(L);
  enrich_t e = {lua, level, request_id, event, message, fields, field_count};
  int status = run_protected(L, enrich_protected, &e);
  lua->in_log_hook = false;
  lua_settop(L, top);
  return status == LUA_OK;
}

void hk_lua_attach_log(hk_lua_t *lua) {
  if (lua == NULL) hk_log_set_enricher(NULL, NULL);
  else hk_log_set_enricher(enrich_event, lua);
}

/* core.log(level, event, fields)  [-3, +0, e] */
static int core_log(lua_State *L) {
  hk_lua_t *lua = context_of(L);
  const char *level_name = luaL_checkstring(L, 1);
  const char *event = luaL_checkstring(L, 2);
  hk_log_level_t level;
  if (hk_log_level_parse(level_name, &level) != 0) return luaL_error(L, "unknown log level '%s'", level_name);
  if (!hk_log_enabled(level)) return 0;
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  /* A fresh table: the caller's stays untouched by the fixed keys and the hooks. */
  lua_newtable(L);
  int ev = lua_gettop(L);
  if (lua_istable(L, 3)) {
    lua_pushnil(L);
    while (lua_next(L, 3) != 0) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, ev);
    }
  }
  lua_pushstring(L, event), lua_setfield(L, ev, "event");
  lua_pushstring(L, hk_log_level_name(level)), lua_setfield(L, ev, "level");
  if (lua->current != NULL) lua_pushstring(L, lua->current->id), lua_setfield(L, ev, "request_id");
  else if (lua->task != NULL && lua->task->parent_id[0] != '\0')
    lua_pushstring(L, lua->task->parent_id), lua_setfield(L, ev, "request_id");
  if (lua->log_hook_count == 0 || lua->in_log_hook || run_log_hooks(lua, L)) write_event_table(L, ev, level, NULL, 0);
  return 0;
}

/* ---- the request object ------------------------------------------------------------------- */

typedef struct request_box_s {
  hk_request_t *req; /* NULL once the request has finished */
} request_box_t;

static hk_request_t *check_request(lua_State *L, int idx) {
  request_box_t *box = luaL_checkudata(L, idx, REQUEST_MT);
  if (box->req == NULL) luaL_error(L, "request has finished");
  return box->req;
}

/* Pushes s percent-decoded ('+' as space when form is true). Malformed escapes stay as sent. */
static void push_decoded(lua_State *L, const char *s, size_t len, bool form) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (size_t i = 0; i < len; i++) {
    int high = s[i] == '%' && i + 2 < len ? hk_text_hex_value((unsigned char)s[i + 1]) : -1;
    int low = high >= 0 ? hk_text_hex_value((unsigned char)s[i + 2]) : -1;
    if (low >= 0) {
      luaL_addchar(&b, (char)(high * 16 + low));
      i += 2;
    } else if (form && s[i] == '+') {
      luaL_addchar(&b, ' ');
    } else {
      luaL_addchar(&b, s[i]);
    }
  }
  luaL_pushresult(&b);
}

static void push_query_table(lua_State *L, const hk_http_request_t *http) {
  lua_newtable(L);
  const char *q = http->query;
  size_t len = http->query_len;
  size_t i = 0;
  while (q != NULL && i < len) {
    size_t start = i;
    while (i < len && q[i] != '&') i++;
    size_t end = i++;
    if (end == start) continue;
    const char *eq = memchr(q + start, '=', end - start);
    size_t key_end = eq ? (size_t)(eq - q) : end;
    push_decoded(L, q + start, key_end - start, true);
    if (eq) push_decoded(L, eq + 1, end - key_end - 1, true);
    else lua_pushliteral(L, "");
    lua_rawset(L, -3); /* a repeated key keeps its last value */
  }
}

/* Header tables are keyed by lower-case name; lookups with any case go through __index. */
static int headers_index(lua_State *L) {
  size_t len;
  const char *key = lua_tolstring(L, 2, &len);
  if (key == NULL || len > 256) return 0;
  char lower[257];
  for (size_t i = 0; i < len; i++) lower[i] = (char)((key[i] >= 'A' && key[i] <= 'Z') ? key[i] + 32 : key[i]);
  lua_pushlstring(L, lower, len);
  lua_rawget(L, 1);
  return 1;
}

static void push_headers_table(lua_State *L, const hk_http_request_t *http) {
  lua_createtable(L, 0, (int)http->header_count);
  for (size_t i = 0; i < http->header_count; i++) {
    const hk_http_header_t *h = &http->headers[i];
    char lower[256];
    size_t n = h->name_len < sizeof lower ? h->name_len : sizeof lower;
    for (size_t k = 0; k < n; k++) lower[k] = (char)((h->name[k] >= 'A' && h->name[k] <= 'Z') ? h->name[k] + 32 : h->name[k]);
    lua_pushlstring(L, lower, n);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TSTRING) {
      /* Repeated header: join as one list value (RFC 9110 §5.3). */
      lua_pushliteral(L, ", ");
      lua_pushlstring(L, h->value, h->value_len);
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushlstring(L, h->value, h->value_len);
    }
    lua_rawset(L, -3);
  }
  luaL_setmetatable(L, HEADERS_MT);
}

/* Key of the decoded body in the request's user value table: not a string, so it cannot
 * clash with a script's own request fields. */
static const char JSON_CACHE_KEY = 'j';

/* req:json() -> value | nil, err  [-1, +(1|2), m] */
static int request_json(lua_State *L) {
  hk_request_t *req = check_request(L, 1);
  lua_getiuservalue(L, 1, 1);
  if (lua_rawgetp(L, -1, &JSON_CACHE_KEY) != LUA_TNIL) return 1; /* decoded once per request */
  lua_pop(L, 1);
  const hk_buf_t *body = &req->http->body;
  char err[128];
  if (body->len == 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "empty body");
    return 2;
  }
  if (hk_json_decode(L, body->data ? body->data : "", body->len, err, sizeof err) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushvalue(L, -1);
  lua_rawsetp(L, -3, &JSON_CACHE_KEY);
  return 1;
}

/* req:header(name) -> string | nil  [-2, +1, m] */
static int request_header(lua_State *L) {
  hk_request_t *req = check_request(L, 1);
  const char *name = luaL_checkstring(L, 2);
  const hk_http_header_t *h = hk_http_header_find(req->http, name);
  if (h == NULL) lua_pushnil(L);
  else lua_pushlstring(L, h->value, h->value_len);
  return 1;
}

/* req:stream(status, headers) — sends the status line and headers now; the body follows in
 * req:write calls, and ends when the handler returns (whose return values are then ignored).
 * [-3, +0, e] */
static int request_stream(lua_State *L) {
  hk_request_t *req = check_request(L, 1);
  lua_Integer status = luaL_checkinteger(L, 2);
  if (status < 200 || status > 599) return luaL_error(L, "req:stream: status must be from 200 to 599");
  if (req->stream_started) return luaL_error(L, "req:stream: the response has already started");
  if (req->stream_start == NULL) return luaL_error(L, "req:stream: not available for this request");
  hk_response_t *res = &req->response;
  res->status = (int)status;
  hk_buf_reset(&res->headers);
  snprintf(res->content_type, sizeof res->content_type, "text/event-stream");
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 3) != 0) {
      size_t name_len, value_len;
      const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &name_len) : NULL;
      const char *value = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &value_len) : NULL;
      if (name == NULL || value == NULL || hk_response_add_header(res, name, name_len, value, value_len) != 0)
        return luaL_error(L, "req:stream: invalid header '%s'", name ? name : "?");
      lua_pop(L, 1);
    }
  }
  int rc = req->stream_start(req);
  if (rc == -EPIPE) return luaL_error(L, "req:stream: the client has gone");
  if (rc != 0) return luaL_error(L, "req:stream: out of memory");
  return 0;
}

static hk_lua_task_t *waiting_task(lua_State *L);
static void on_stream_drained(hk_request_t *req);

/* req:write(bytes) -> true | nil, message — one piece of a streamed body. When the client
 * reads slower than the handler writes, the handler waits here until it has caught up (from
 * on_chunk, which cannot wait, the outbound transfer is paused instead). Fails (expected) when
 * the client has gone, or when a writer that cannot wait has queued HK_STREAM_HARD_LIMIT.
 * [-2, +(1|2), e] — may yield */
static int request_write(lua_State *L) {
  hk_request_t *req = check_request(L, 1);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  if (!req->stream_started) return luaL_error(L, "req:write: call req:stream(status, headers) first");
  int rc = req->stream_write(req, data, len);
  if (rc == 0) {
    hk_lua_task_t *task = req->stream_congested ? waiting_task(L) : NULL;
    if (task != NULL) {
      task->op = OP_DRAIN;
      return lua_yield(L, 0); /* resumed with true by on_stream_drained */
    }
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  lua_pushstring(L, rc == -EPIPE ? "client gone" : rc == -EAGAIN ? "client not reading" : "out of memory");
  return 2;
}

/* Lazily built fields are cached in the userdata's user value table. */
static bool push_cached(lua_State *L, const char *key) {
  lua_getiuservalue(L, 1, 1);
  if (lua_getfield(L, -1, key) != LUA_TNIL) {
    lua_remove(L, -2);
    return true;
  }
  lua_pop(L, 2);
  return false;
}

static void cache_top(lua_State *L, const char *key) {
  lua_getiuservalue(L, 1, 1);
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, key);
  lua_pop(L, 1);
}

/* __index(req, key)  [-2, +1, e] */
static int request_index(lua_State *L) {
  hk_request_t *req = check_request(L, 1);
  const hk_http_request_t *http = req->http;
  const char *key = luaL_checkstring(L, 2);
  if (strcmp(key, "method") == 0) lua_pushlstring(L, http->method, http->method_len);
  else if (strcmp(key, "path") == 0) lua_pushlstring(L, http->path, http->path_len);
  else if (strcmp(key, "id") == 0) lua_pushstring(L, req->id);
  else if (strcmp(key, "body") == 0) lua_pushlstring(L, http->body.data ? http->body.data : "", http->body.len);
  else if (strcmp(key, "endpoint") == 0) lua_pushstring(L, req->endpoint);
  else if (strcmp(key, "remote_addr") == 0) lua_pushstring(L, req->remote_addr);
  else if (strcmp(key, "remote_port") == 0) lua_pushinteger(L, req->remote_port);
  else if (strcmp(key, "mode") == 0) {
    if (req->mode[0]) lua_pushstring(L, req->mode);
    else lua_pushnil(L);
  } else if (strcmp(key, "query_string") == 0) {
    if (http->query) lua_pushlstring(L, http->query, http->query_len);
    else lua_pushnil(L);
  } else if (strcmp(key, "json") == 0) lua_pushcfunction(L, request_json);
  else if (strcmp(key, "header") == 0) lua_pushcfunction(L, request_header);
  else if (strcmp(key, "stream") == 0) lua_pushcfunction(L, request_stream);
  else if (strcmp(key, "write") == 0) lua_pushcfunction(L, request_write);
  else if (strcmp(key, "query") == 0) {
    if (!push_cached(L, key)) push_query_table(L, http), cache_top(L, key);
  } else if (strcmp(key, "headers") == 0) {
    if (!push_cached(L, key)) push_headers_table(L, http), cache_top(L, key);
  } else if (strcmp(key, "params") == 0) {
    if (!push_cached(L, key)) {
      lua_createtable(L, 0, (int)req->match.param_count);
      for (size_t i = 0; i < req->match.param_count; i++) {
        push_decoded(L, req->match.params[i].value, req->match.params[i].value_len, false);
        lua_setfield(L, -2, req->match.params[i].name);
      }
      cache_top(L, key);
    }
  } else {
    /* The script's own per-request fields. */
    lua_getiuservalue(L, 1, 1);
    lua_getfield(L, -1, key);
  }
  return 1;
}

static bool is_builtin_field(const char *key) {
  static const char *const names[] = {"method", "path", "id", "body", "endpoint", "remote_addr",
                                      "remote_port", "query_string", "json", "header", "query",
                                      "headers", "params", "stream", "write"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    if (strcmp(key, names[i]) == 0) return true;
  }
  return false;
}

/* __newindex(req, key, value)  [-3, +0, e] */
static int request_newindex(lua_State *L) {
  hk_request_t *req = check_request(L, 1);
  const char *key = luaL_checkstring(L, 2);
  if (strcmp(key, "mode") == 0) {
    if (lua_isnil(L, 3)) {
      req->mode[0] = '\0';
      return 0;
    }
    size_t len;
    const char *mode = luaL_checklstring(L, 3, &len);
    if (len == 0 || len > HK_MODE_MAX) return luaL_error(L, "req.mode must be 1 to %d bytes", HK_MODE_MAX);
    memcpy(req->mode, mode, len);
    req->mode[len] = '\0';
    return 0;
  }
  if (is_builtin_field(key)) return luaL_error(L, "req.%s is read-only", key);
  lua_getiuservalue(L, 1, 1);
  lua_pushvalue(L, 3);
  lua_setfield(L, -2, key);
  return 0;
}

static int request_tostring(lua_State *L) {
  request_box_t *box = luaL_checkudata(L, 1, REQUEST_MT);
  if (box->req == NULL) lua_pushliteral(L, "hancock.Request (finished)");
  else lua_pushfstring(L, "hancock.Request (%s)", box->req->id);
  return 1;
}

static void create_metatables(lua_State *L) {
  luaL_newmetatable(L, REQUEST_MT);
  lua_pushcfunction(L, request_index), lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, request_newindex), lua_setfield(L, -2, "__newindex");
  lua_pushcfunction(L, request_tostring), lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "hancock.Request"), lua_setfield(L, -2, "__name");
  lua_pop(L, 1);
  luaL_newmetatable(L, HEADERS_MT);
  lua_pushcfunction(L, headers_index), lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

/* ---- hancock.core ------------------------------------------------------------------------- */

static int core_sleep(lua_State *L);
static int core_http_request(lua_State *L);
static hk_lua_task_t *waiting_task(lua_State *L);
static void task_abort(hk_lua_task_t *task, const char *why);
static void task_resume(hk_lua_task_t *task, int nargs);
static int core_spawn(lua_State *L);
static void task_start_timer(hk_lua_task_t *task);

/* core.meminfo() -> {total = bytes, available = bytes} | nil, message, from /proc/meminfo
 * [-0, +(1|2), m] */
static int core_meminfo(lua_State *L) {
  FILE *f = fopen("/proc/meminfo", "r");
  if (f == NULL) {
    lua_pushnil(L);
    lua_pushfstring(L, "cannot read /proc/meminfo: %s", strerror(errno));
    return 2;
  }
  char line[256];
  long long total = -1, available = -1;
  while (fgets(line, sizeof line, f)) {
    long long kib;
    if (sscanf(line, "MemTotal: %lld kB", &kib) == 1) total = kib * 1024;
    else if (sscanf(line, "MemAvailable: %lld kB", &kib) == 1) available = kib * 1024;
  }
  fclose(f);
  if (total < 0 || available < 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "/proc/meminfo has no MemTotal or MemAvailable");
    return 2;
  }
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, total), lua_setfield(L, -2, "total");
  lua_pushinteger(L, available), lua_setfield(L, -2, "available");
  return 1;
}

static void push_disk(lua_State *L, uint64_t blocks, uint64_t available, uint64_t block_size) {
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, (lua_Integer)(blocks * block_size));
  lua_setfield(L, -2, "total");
  lua_pushinteger(L, (lua_Integer)(available * block_size));
  lua_setfield(L, -2, "free");
}

/* Resumes a task with what `build` (protected, on the main thread) pushed onto its coroutine:
 * *nres values, set by build. A state out of memory ends the task instead (task_abort). */
static void task_resume_built(hk_lua_task_t *task, lua_CFunction build, void *ud, const int *nres,
                              const char *why) {
  lua_State *L = task->lua->L;
  int top = lua_gettop(L);
  int status = run_protected(L, build, ud);
  lua_settop(L, top);
  if (status != LUA_OK) task_abort(task, why);
  else task_resume(task, *nres);
}

typedef struct statfs_result_s {
  hk_lua_task_t *task;
  const uv_fs_t *fs;
  int nres;
} statfs_result_t;

/* Builds disk()'s results on the main thread and moves them to the coroutine.  [-0, +0, m] */
static int push_statfs_result(lua_State *L) {
  statfs_result_t *r = lua_touserdata(L, 1);
  const uv_fs_t *fs = r->fs;
  if (fs->result < 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "cannot stat %s: %s", fs->path ? fs->path : "?", uv_strerror((int)fs->result));
    r->nres = 2;
  } else {
    const uv_statfs_t *st = fs->ptr;
    push_disk(L, st->f_blocks, st->f_bavail, st->f_bsize);
    r->nres = 1;
  }
  if (!lua_checkstack(r->task->co, r->nres)) return luaL_error(L, "not enough memory");
  lua_xmove(L, r->task->co, r->nres);
  return 0;
}

static void on_statfs_done(uv_fs_t *fs) {
  hk_lua_task_t *task = fs->data;
  if (task != NULL) {
    task->statfs = NULL;
    task->op = OP_NONE;
    statfs_result_t r = {task, fs, 0};
    task_resume_built(task, push_statfs_result, &r, &r.nres, "not enough memory for disk()'s result");
  }
  uv_fs_req_cleanup(fs);
  free(fs);
}

/* core.disk(path) -> {total = bytes, free = bytes} | nil, message (free is what an
 * unprivileged user may use). In a handler or background task statfs runs on the threadpool
 * (a hung network mount must not hold the loop) and the task waits; at load time it is
 * direct.  [-1, +(1|2), m] — may yield */
static int core_disk(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  hk_lua_task_t *task = waiting_task(L);
  if (task != NULL) {
    uv_fs_t *fs = calloc(1, sizeof *fs);
    if (fs == NULL) return luaL_error(L, "hk.system.disk: out of memory");
    fs->data = task;
    int rc = uv_fs_statfs(task->lua->loop, fs, path, on_statfs_done);
    if (rc != 0) {
      free(fs);
      lua_pushnil(L);
      lua_pushfstring(L, "cannot stat %s: %s", path, uv_strerror(rc));
      return 2;
    }
    task->op = OP_STATFS;
    task->statfs = fs;
    return lua_yield(L, 0);
  }
  struct statvfs st;
  if (statvfs(path, &st) != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "cannot stat %s: %s", path, strerror(errno));
    return 2;
  }
  push_disk(L, st.f_blocks, st.f_bavail, st.f_frsize);
  return 1;
}

/* core.secure_equal(a, b) -> boolean, in constant time  [-2, +1, e] */
static int core_secure_equal(lua_State *L) {
  size_t alen, blen;
  const char *a = luaL_checklstring(L, 1, &alen);
  const char *b = luaL_checklstring(L, 2, &blen);
  lua_pushboolean(L, hk_crypto_equal(a, alen, b, blen));
  return 1;
}

/* core.verify_signature(secret, body, header) -> boolean  [-3, +1, e] */
static int core_verify_signature(lua_State *L) {
  size_t secret_len, body_len, header_len = 0;
  const char *secret = luaL_checklstring(L, 1, &secret_len);
  const char *body = luaL_checklstring(L, 2, &body_len);
  const char *header = luaL_optlstring(L, 3, "", &header_len);
  lua_pushboolean(L, hk_crypto_verify_signature(secret, secret_len, body, body_len, header, header_len));
  return 1;
}

/* core.ratelimit_take(key, limit, window_ms) -> allowed, remaining, reset_ms, retry_after_ms
 * [-3, +4, e] */
static int core_ratelimit_take(lua_State *L) {
  hk_lua_t *lua = context_of(L);
  size_t key_len;
  const char *key = luaL_checklstring(L, 1, &key_len);
  lua_Integer limit = luaL_checkinteger(L, 2);
  lua_Integer window = luaL_checkinteger(L, 3);
  if (limit < 1 || limit > UINT32_MAX) return luaL_error(L, "hk.ratelimit.take: limit must be a positive integer");
  if (window < 1 || (uint64_t)window > HK_RATELIMIT_WINDOW_MAX_MS)
    return luaL_error(L, "hk.ratelimit.take: window_ms must be a positive integer");
  if (lua->ratelimit == NULL) return luaL_error(L, "hk.ratelimit.take can only be called while serving");
  hk_ratelimit_result_t result;
  uint64_t now_ms = hk_now_ns() / 1000000u;
  if (hk_ratelimit_take(lua->ratelimit, key, key_len, (uint32_t)limit, (uint64_t)window, now_ms, &result) != 0)
    return luaL_error(L, "hk.ratelimit.take: out of memory");
  lua_pushboolean(L, result.allowed);
  lua_pushinteger(L, result.remaining);
  lua_pushinteger(L, (lua_Integer)result.reset_ms);
  lua_pushinteger(L, (lua_Integer)result.retry_after_ms);
  return 4;
}
static void task_free(hk_lua_task_t *task);

/* core.carry_get(key) -> string | nil: what an earlier generation left under key
 * [-1, +1, m] */
static int core_carry_get(lua_State *L) {
  hk_lua_t *lua = context_of(L);
  size_t key_len, value_len = 0;
  const char *key = luaL_checklstring(L, 1, &key_len);
  /* The buffer first (a raise here holds nothing), then the copy under the lock. */
  char *area = lua_newuserdatauv(L, HK_CARRY_MAX_VALUE, 0);
  if (lua->carry == NULL || hk_carry_get(lua->carry, key, key_len, area, HK_CARRY_MAX_VALUE, &value_len) != 0)
    lua_pushnil(L);
  else
    lua_pushlstring(L, area, value_len);
  return 1;
}

/* core.carry_set(key, string | nil) -> true | nil, message: leaves a value for the next
 * generation (outside a server, e.g. `hancock check`, there is none and it is dropped)
 * [-2, +(1|2), m] */
static int core_carry_set(lua_State *L) {
  hk_lua_t *lua = context_of(L);
  size_t key_len, value_len = 0;
  const char *key = luaL_checklstring(L, 1, &key_len);
  const char *value = lua_isnoneornil(L, 2) ? NULL : luaL_checklstring(L, 2, &value_len);
  /* A retired generation finishing a slow request must not overwrite what its successor left. */
  int rc = lua->carry && !lua->retired ? hk_carry_set(lua->carry, key, key_len, value, value_len) : 0;
  if (rc == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  lua_pushstring(L, rc == -EINVAL ? "key or value too long" : rc == -ENOSPC ? "too many keys" : "out of memory");
  return 2;
}

/* Which environment variables scripts may read: the documented families (HANCOCK_*, HK_*,
 * OLLAMA_*, OPENAI_*, NVIDIA_*, LOG_LEVEL, PROMETHEUS_URL, ALERTMANAGER_URL) and the names the
 * operator adds with --script-env; never the core's own secret, HANCOCK_ADMIN_TOKEN. */
static bool env_name_allowed(const hk_lua_t *lua, const char *name) {
  static const char *const prefixes[] = {"HANCOCK_", "HK_", "OLLAMA_", "OPENAI_", "NVIDIA_"};
  static const char *const names[] = {"LOG_LEVEL", "PROMETHEUS_URL", "ALERTMANAGER_URL"};
  if (strcmp(name, "HANCOCK_ADMIN_TOKEN") == 0) return false;
  for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
    if (strncmp(name, prefixes[i], strlen(prefixes[i])) == 0) return true;
  }
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    if (strcmp(name, names[i]) == 0) return true;
  }
  for (size_t i = 0; i < lua->env_name_count; i++) {
    if (strcmp(name, lua->env_names[i]) == 0) return true;
  }
  return false;
}

/* core.env(name) -> string | nil; a name outside the allow-list is an error, so a typo or a
 * secret asked for by mistake is loud rather than silently nil  [-1, +1, e] */
static int core_env(lua_State *L) {
  hk_lua_t *lua = context_of(L);
  const char *name = luaL_checkstring(L, 1);
  if (!env_name_allowed(lua, name))
    return luaL_error(L, "hk.env: '%s' is not readable by scripts (allowed: HANCOCK_*, OLLAMA_*, "
                         "OPENAI_*, NVIDIA_*, HK_*, LOG_LEVEL, PROMETHEUS_URL, ALERTMANAGER_URL, "
                         "and names listed in --script-env)", name);
  const char *value = getenv(name);
  if (value == NULL) lua_pushnil(L);
  else lua_pushstring(L, value);
  return 1;
}

/* core.role() -> "worker" in a worker's copy of the scripts (it serves requests; background
 * tasks spawned at load run elsewhere), "control" otherwise (the copy that runs them, and
 * one-shot commands)  [-0, +1, -] */
static int core_role(lua_State *L) {
  lua_pushstring(L, context_of(L)->worker_copy ? "worker" : "control");
  return 1;
}

/* core.carry_claim(key, hold_ms) -> boolean: the key for this thread until hold_ms from now
 * (or a carry_set(key, nil)), across every worker; true without a server  [-2, +1, e] */
static int core_carry_claim(lua_State *L) {
  hk_lua_t *lua = context_of(L);
  size_t key_len;
  const char *key = luaL_checklstring(L, 1, &key_len);
  lua_Integer hold = luaL_checkinteger(L, 2);
  if (hold < 0) return luaL_error(L, "carry_claim: hold_ms must not be negative");
  lua_pushboolean(L, lua->carry == NULL ||
                         hk_carry_claim(lua->carry, key, key_len, hk_now_ns() / 1000000u, (uint64_t)hold));
  return 1;
}

/* ---- the process's own sample history (the in-process alert evaluator) ------------------- */

/* core.history_record({name, ...}, retention_ms) -> now_ms | nil, message: one sample of every
 * series behind the names, at the monotonic clock's now, kept for retention_ms; nil, "no
 * history" in a copy that has none (a worker's, a one-shot command's)  [-2, +(1|2), e] */
static int core_history_record(lua_State *L) {
  hk_lua_t *lua = context_of(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer retention = luaL_checkinteger(L, 2);
  if (retention < 0) return luaL_error(L, "history_record: retention_ms must not be negative");
  if (lua->history == NULL) {
    lua_pushnil(L);
    lua_pushliteral(L, "no history");
    return 2;
  }
  lua_Integer count = luaL_len(L, 1);
  if (count > 256) return luaL_error(L, "history_record: at most 256 names");
  const char *names[256];
  for (lua_Integer i = 1; i <= count; i++) {
    lua_geti(L, 1, i);
    names[i - 1] = luaL_checkstring(L, -1);
    lua_pop(L, 1); /* the string stays alive: the table holds it */
  }
  int64_t now_ms = (int64_t)(hk_now_ns() / 1000000u);
  int rc = hk_history_record(lua->history, lua->metrics, names, (size_t)count, now_ms, retention);
  if (rc != 0) {
    lua_pushnil(L);
    lua_pushstring(L, strerror(-rc));
    return 2;
  }
  lua_pushinteger(L, now_ms);
  return 1;
}

static int push_stream(const hk_history_stream_t *stream, void *data) {
  lua_State *L = data;
  lua_createtable(L, 0, 3);
  lua_createtable(L, 0, (int)stream->label_count + 1);
  lua_pushstring(L, stream->name);
  lua_setfield(L, -2, "__name__");
  for (size_t i = 0; i < stream->label_count; i++) {
    lua_pushstring(L, stream->label_values[i]);
    lua_setfield(L, -2, stream->label_names[i]);
  }
  lua_setfield(L, -2, "labels");
  lua_createtable(L, (int)stream->point_count, 0);
  for (size_t i = 0; i < stream->point_count; i++) {
    lua_pushinteger(L, stream->times_ms[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "t");
  lua_createtable(L, (int)stream->point_count, 0);
  for (size_t i = 0; i < stream->point_count; i++) {
    lua_pushnumber(L, stream->values[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "v");
  lua_rawseti(L, -2, (lua_Integer)luaL_len(L, -2) + 1);
  return 0;
}

/* core.history_select(name) -> { {labels = {__name__ = name, ...}, t = {ms...}, v = {...}}, ... }
 * (empty without a history)  [-1, +1, m] */
static int core_history_select(lua_State *L) {
  hk_lua_t *lua = context_of(L);
  const char *name = luaL_checkstring(L, 1);
  lua_newtable(L);
  if (lua->history != NULL) hk_history_visit(lua->history, name, push_stream, L);
  return 1;
}

/* core.history_stats() -> streams, dropped (0, 0 without a history)  [-0, +2, -] */
static int core_history_stats(lua_State *L) {
  hk_lua_t *lua = context_of(L);
  lua_pushinteger(L, lua->history ? (lua_Integer)hk_history_stream_count(lua->history) : 0);
  lua_pushinteger(L, lua->history ? (lua_Integer)hk_history_dropped(lua->history) : 0);
  return 2;
}

/* core.wall_time() -> seconds since the epoch, with a fraction (alert timestamps)  [-0, +1, -] */
static int core_wall_time(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushnumber(L, (double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
  return 1;
}

/* core.hostname() -> the machine's host name (a pod's name in Kubernetes)  [-0, +1, -] */
static int core_hostname(lua_State *L) {
  char name[256];
  if (gethostname(name, sizeof name) != 0) snprintf(name, sizeof name, "localhost");
  name[sizeof name - 1] = '\0';
  lua_pushstring(L, name);
  return 1;
}

void hk_lua_bind_history(hk_lua_t *lua, hk_history_t *history) { lua->history = history; }

/* core.monotonic() -> seconds on a monotonic clock  [-0, +1, -] */
static int core_monotonic(lua_State *L) {
  lua_pushnumber(L, (double)hk_now_ns() / 1e9);
  return 1;
}

static int open_core(lua_State *L) {
  static const luaL_Reg functions[] = {
      {"route", core_route},
      {"on_log", core_on_log},
      {"log", core_log},
      {"monotonic", core_monotonic},
      {"sleep", core_sleep},
      {"spawn", core_spawn},
      {"http_request", core_http_request},
      {"secure_equal", core_secure_equal},
      {"meminfo", core_meminfo},
      {"disk", core_disk},
      {"verify_signature", core_verify_signature},
      {"ratelimit_take", core_ratelimit_take},
      {"env", core_env},
      {"role", core_role},
      {"register_mode", core_register_mode},
      {"carry_get", core_carry_get},
      {"carry_claim", core_carry_claim},
      {"carry_set", core_carry_set},
      {"history_record", core_history_record},
      {"history_select", core_history_select},
      {"history_stats", core_history_stats},
      {"wall_time", core_wall_time},
      {"hostname", core_hostname},
      {NULL, NULL},
  };
  hk_lua_t *lua = context_of(L);
  luaL_newlib(L, functions);
  hk_lua_metrics_open(L, lua->metrics, &lua->worker);
  lua_setfield(L, -2, "metrics");
  hk_json_open_limited(L, &lua->memory_limit);
  lua_setfield(L, -2, "json");
  hk_native_push_functions(L, lua->natives);
  lua_setfield(L, -2, "native");
  lua_pushstring(L, HK_VERSION);
  lua_setfield(L, -2, "version");
  return 1;
}

/* ---- loading ------------------------------------------------------------------------------ */

static int filter_lua(const struct dirent *entry) {
  size_t len = strlen(entry->d_name);
  return entry->d_name[0] != '.' && len > 4 && strcmp(entry->d_name + len - 4, ".lua") == 0;
}

static char *dup_message(const char *msg) {
  char *copy = strdup(msg ? msg : "unknown error");
  return copy;
}

/* Runs every *.lua of the scripts dir in name order. */
static int load_scripts(hk_lua_t *lua, char **err) {
  lua_State *L = lua->L;
  struct dirent **entries = NULL;
  int n = scandir(lua->scripts_dir, &entries, filter_lua, alphasort);
  if (n < 0) {
    char msg[PATH_MAX + 64];
    snprintf(msg, sizeof msg, "cannot read scripts directory %s: %s", lua->scripts_dir, strerror(errno));
    *err = dup_message(msg);
    return -errno;
  }
  int rc = 0;
  for (int i = 0; i < n; i++) {
    if (rc == 0) {
      char path[PATH_MAX];
      snprintf(path, sizeof path, "%s/%s", lua->scripts_dir, entries[i]->d_name);
      int status = luaL_loadfilex(L, path, "t");
      if (status == LUA_OK) status = protected_call(L, 0, 0);
      if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        /* The first line is "file:line: message"; the traceback follows for the log. */
        *err = dup_message(msg);
        lua_pop(L, 1);
        rc = -EINVAL;
      }
    }
    free(entries[i]);
  }
  free(entries);
  return rc;
}

/* ---- limits: memory, instructions, a trimmed standard library ---------------------------- */

#define DEFAULT_MEMORY_LIMIT (256u * 1024 * 1024)
#define DEFAULT_INSTRUCTION_LIMIT 10000000u

/* The state's allocator, with a cap: past it an allocation fails, which Lua turns into a
 * catchable "not enough memory" error. With ptr == NULL, osize is a type tag, not a size. */
static void *limited_alloc(void *data, void *ptr, size_t osize, size_t nsize) {
  hk_lua_t *lua = data;
  size_t old = ptr != NULL ? osize : 0;
  /* One writer (the thread running this state): plain relaxed loads and stores, no RMW. */
  size_t used = atomic_load_explicit(&lua->memory_used, memory_order_relaxed);
  if (nsize == 0) {
    free(ptr);
    atomic_store_explicit(&lua->memory_used, used - old, memory_order_relaxed);
    return NULL;
  }
  if (nsize > old && lua->memory_limit != 0 && used - old + nsize > lua->memory_limit) return NULL;
  void *block = realloc(ptr, nsize);
  if (block == NULL) return nsize <= old ? ptr : NULL; /* a shrink must never fail */
  atomic_store_explicit(&lua->memory_used, used - old + nsize, memory_order_relaxed);
  return block;
}

static int on_panic(lua_State *L) {
  const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "(not a string)";
  hk_log_event_plain(HK_LOG_ERROR, NULL, "lua_panic", "unprotected Lua error", (hk_log_field_t[]){
      HK_LOG_S("error", msg)}, 1);
  hk_log_stop();
  abort();
}

/* Counts the entry's instructions and watches its clock; past either it raises, and keeps
 * raising on every instruction (count 1), so a script's own pcall cannot swallow it for long. */
static void budget_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  hk_lua_t *lua = context_of(L);
  budget_t *budget = lua->budget;
  if (budget == NULL) return;
  if (!budget->over) {
    budget->instructions += HOOK_STEP;
    bool over_count = lua->instruction_limit != 0 && budget->instructions > lua->instruction_limit;
    bool over_time = hk_watch_expired(&lua->watch);
    if (!over_count && !over_time) return;
    budget->over = true;
    budget->over_time = over_time && !over_count;
  }
  lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
  if (budget->over_time)
    luaL_error(L, "time limit exceeded (Lua ran %I ms without yielding)",
               (lua_Integer)(lua->watch.limit_ticks * HK_WATCHDOG_TICK_MS));
  luaL_error(L, "instruction budget exceeded (%I instructions)", (lua_Integer)lua->instruction_limit);
}

/* print writes to stdout, which is the JSON log: send it there as an event instead. */
static int sandbox_print(lua_State *L) {
  int n = lua_gettop(L);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = 1; i <= n; i++) {
    if (i > 1) luaL_addchar(&b, '\t');
    luaL_addstring(&b, luaL_tolstring(L, i, NULL));
    lua_pop(L, 1);
  }
  luaL_pushresult(&b);
  hk_lua_t *lua = context_of(L);
  hk_log_event(HK_LOG_INFO, lua->current ? lua->current->id : NULL, "script_print", lua_tostring(L, -1), NULL, 0);
  return 0;
}

/* The wrapped standard function (upvalue 1) called with the stack as its arguments. */
static int call_original(lua_State *L) {
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

/* load(chunk, name, mode, env): text chunks only, whatever mode the script asks for. An absent
 * env stays absent (the chunk then gets the global table), an explicit one is passed on. */
static int sandbox_load(lua_State *L) {
  int nargs = lua_gettop(L);
  if (nargs > 4) nargs = 4;
  lua_settop(L, nargs < 3 ? 3 : nargs);
  lua_pushliteral(L, "t");
  lua_replace(L, 3);
  return call_original(L);
}

/* xpcall's message handler, guarded: when the error is the budget's or the clock's, the
 * script's handler is not run (Lua runs a handler with hooks off after an error raised from
 * the hook, so a loop there could never be stopped); the error goes on as it is. */
static int guarded_message_handler(lua_State *L) {
  hk_lua_t *lua = context_of(L);
  if (lua->budget != NULL && lua->budget->over) return 1;
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

/* xpcall(f, msgh, ...) with msgh guarded. */
static int sandbox_xpcall(lua_State *L) {
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_pushvalue(L, 2);
  lua_pushcclosure(L, guarded_message_handler, 1);
  lua_replace(L, 2);
  return call_original(L);
}

/* A finalizer runs in a coroutine of its own: Lua runs __gc with hooks off, so the budget and
 * the clock could not stop a loop in it, while a new thread has them on. Errors and overruns
 * are logged (at most once a second) and end that finalizer only. */
static int finalizer_trampoline(lua_State *L) {
  hk_lua_t *lua = context_of(L);
  if (!lua_checkstack(L, 4)) return 0;
  lua_State *co = lua_newthread(L);
  lua_sethook(co, budget_hook, LUA_MASKCOUNT, HOOK_STEP);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 2);
  budget_t budget = {0}, *outer = lua->budget;
  bool own_entry = lua->entry_depth == 0; /* at lua_close, or a collection outside any entry */
  if (own_entry) entry_begin(lua, co, &budget, "finalizer");
  else lua->budget = &budget;
  int nres = 0;
  int status = lua_resume(co, L, 1, &nres);
  if (own_entry) entry_end(lua, "finalizer");
  else lua->budget = outer;
  if (status != LUA_OK) {
    uint64_t now = hk_now_ns();
    if (now - lua->last_finalizer_error_ns > 1000000000u) {
      lua->last_finalizer_error_ns = now;
      const char *why = status == LUA_YIELD ? "a finalizer cannot yield" : error_text(co, -1);
      hk_log_event_plain(HK_LOG_ERROR, NULL, "finalizer_error", "a __gc finalizer failed",
                         (hk_log_field_t[]){HK_LOG_S("error", why)}, 1);
    }
  }
  lua_resetthread(co);
  lua_pop(L, 1);
  return 0;
}

/* setmetatable(t, mt): a __gc that is a Lua function is wrapped (once) in the trampoline. */
static int sandbox_setmetatable(lua_State *L) {
  if (lua_type(L, 2) == LUA_TTABLE && lua_getfield(L, 2, "__gc") == LUA_TFUNCTION &&
      lua_tocfunction(L, -1) != finalizer_trampoline) {
    lua_pushcclosure(L, finalizer_trampoline, 1);
    lua_setfield(L, 2, "__gc");
  }
  lua_settop(L, 2);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, 2, 1);
  return 1;
}

static void remove_fields(lua_State *L, const char *table, const char *const *names) {
  lua_getglobal(L, table);
  for (; *names != NULL; names++) {
    lua_pushnil(L);
    lua_setfield(L, -2, *names);
  }
  lua_pop(L, 1);
}

static void wrap_global(lua_State *L, const char *name, lua_CFunction wrapper) {
  lua_getglobal(L, name);
  lua_pushcclosure(L, wrapper, 1);
  lua_setglobal(L, name);
}

/* The standard library minus what a server script must not do: run programs, exit, touch the
 * filesystem or the environment (configuration comes through hk.env), load C code or binary
 * chunks, write to stdout, or use debug beyond traceback. See docs/lua-api.md, "Sandbox". */
static void trim_stdlib(lua_State *L) {
  static const char *const os_out[] = {"execute", "exit", "remove", "rename", "tmpname", "setlocale",
                                       "getenv", NULL};
  static const char *const package_out[] = {"loadlib", "searchpath", NULL};
  static const char *const base_out[] = {"dofile", "loadfile", NULL};
  static const char *const string_out[] = {"dump", NULL};
  remove_fields(L, "os", os_out);
  remove_fields(L, "package", package_out);
  remove_fields(L, "string", string_out);
  lua_pushglobaltable(L);
  for (const char *const *name = base_out; *name != NULL; name++) {
    lua_pushnil(L);
    lua_setfield(L, -2, *name);
  }
  lua_pushnil(L);
  lua_setfield(L, -2, "io");
  lua_pushcfunction(L, sandbox_print);
  lua_setfield(L, -2, "print");
  lua_pop(L, 1);
  wrap_global(L, "load", sandbox_load);
  wrap_global(L, "xpcall", sandbox_xpcall);
  wrap_global(L, "setmetatable", sandbox_setmetatable);
  /* debug: traceback only. */
  lua_getglobal(L, "debug");
  lua_getfield(L, -1, "traceback");
  lua_createtable(L, 0, 1);
  lua_insert(L, -2);
  lua_setfield(L, -2, "traceback");
  lua_setglobal(L, "debug");
  lua_pop(L, 1);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getglobal(L, "debug");
  lua_setfield(L, -2, "debug");
  lua_pushnil(L);
  lua_setfield(L, -2, "io");
  lua_pop(L, 1);
}

void hk_lua_set_limits(hk_lua_t *lua, uint64_t instructions, size_t memory_bytes) {
  lua->instruction_limit = instructions;
  lua->memory_limit = memory_bytes;
}

void hk_lua_opts_init(hk_lua_opts_t *opts, const char *scripts_dir, hk_metrics_t *metrics, unsigned worker) {
  memset(opts, 0, sizeof *opts);
  opts->scripts_dir = scripts_dir;
  opts->metrics = metrics;
  opts->worker = worker;
  opts->instruction_limit = DEFAULT_INSTRUCTION_LIMIT;
  opts->memory_limit = DEFAULT_MEMORY_LIMIT;
}

void hk_lua_opts_from_config(hk_lua_opts_t *opts, const hk_config_t *cfg, hk_metrics_t *metrics,
                             unsigned worker) {
  hk_lua_opts_init(opts, cfg->scripts_dir, metrics, worker);
  opts->instruction_limit = cfg->lua_instruction_limit;
  opts->memory_limit = (size_t)cfg->lua_memory_limit;
  opts->time_limit_ms = cfg->lua_time_limit_ms;
  opts->script_env = cfg->script_env;
}

/* Splits "A,B,C" (validated by hk_config) into the allow-list. */
static int parse_env_names(hk_lua_t *lua, const char *list) {
  if (list == NULL || *list == '\0') return 0;
  size_t count = 1;
  for (const char *p = list; *p; p++) count += *p == ',';
  lua->env_names = calloc(count, sizeof *lua->env_names);
  if (lua->env_names == NULL) return -ENOMEM;
  const char *start = list;
  for (size_t i = 0; i < count; i++) {
    const char *end = strchr(start, ',');
    size_t len = end ? (size_t)(end - start) : strlen(start);
    if ((lua->env_names[i] = strndup(start, len)) == NULL) return -ENOMEM;
    lua->env_name_count++;
    start = end ? end + 1 : start + len;
  }
  return 0;
}

int hk_lua_new(const char *scripts_dir, hk_metrics_t *metrics, unsigned worker, hk_lua_t **out,
               char **err) {
  hk_lua_opts_t opts;
  hk_lua_opts_init(&opts, scripts_dir, metrics, worker);
  return hk_lua_new_opts(&opts, out, err);
}

/* define_native_checks(hk): hk_native_define_checks in a protected call. */
static int define_native_checks(lua_State *L) {
  hk_native_define_checks(L, 1, context_of(L)->natives);
  return 0;
}

int hk_lua_new_opts(const hk_lua_opts_t *opts, hk_lua_t **out, char **err) {
  *err = NULL;
  hk_lua_t *lua = calloc(1, sizeof *lua);
  if (lua == NULL) goto oom;
  lua->metrics = opts->metrics;
  lua->natives = opts->natives;
  lua->worker = opts->worker;
  lua->respond_ref = lua->log_hooks_ref = LUA_NOREF;
  lua->scripts_dir = strdup(opts->scripts_dir);
  /* The configured limits hold from the first line a script runs, not from after loading. */
  lua->memory_limit = opts->memory_limit;
  lua->instruction_limit = opts->instruction_limit;
  hk_watch_add(&lua->watch, opts->time_limit_ms);
  if (parse_env_names(lua, opts->script_env) != 0) goto oom;
  lua->L = lua_newstate(limited_alloc, lua);
  if (lua->scripts_dir == NULL || lua->L == NULL || hk_router_new(&lua->router) != 0) goto oom;
  lua_State *L = lua->L;
  *(hk_lua_t **)lua_getextraspace(L) = lua; /* before any thread exists: they all inherit it */
  lua_atpanic(L, on_panic);
  luaL_openlibs(L);
  trim_stdlib(L);
  hk_json_init(L);
  create_metatables(L);
  lua_newtable(L);
  lua->log_hooks_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  install_searchers(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, open_core);
  lua_setfield(L, -2, "hancock.core");
  lua_pop(L, 1);

  /* The runtime first: its _respond shapes every handler's return values. */
  lua_getglobal(L, "require");
  lua_pushliteral(L, "hancock");
  if (protected_call(L, 1, 1) != LUA_OK) {
    *err = dup_message(lua_tostring(L, -1));
    goto fail;
  }
  lua_getfield(L, -1, "_respond");
  if (!lua_isfunction(L, -1)) {
    *err = dup_message("lua/hancock.lua: _respond missing");
    goto fail;
  }
  lua->respond_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  /* The embedder's health checks, defined as a script would, before the scripts run. */
  if (lua->natives != NULL) {
    lua_pushcfunction(L, define_native_checks);
    lua_pushvalue(L, -2);
    if (protected_call(L, 1, 0) != LUA_OK) {
      *err = dup_message(lua_tostring(L, -1));
      goto fail;
    }
  }
  lua_pop(L, 1);

  if (load_scripts(lua, err) != 0) goto fail;
  *out = lua;
  return 0;
oom:
  *err = dup_message("out of memory");
fail:
  hk_lua_free(lua);
  return -EINVAL;
}

void hk_lua_free(hk_lua_t *lua) {
  if (lua == NULL) return;
  /* The server cancels tasks while its loop still runs (hk_lua_cancel_all); what is left here
   * never started (spawned at load time, e.g. under `hancock check`) and holds no handle. */
  while (lua->tasks != NULL) {
    assert(lua->tasks->timer == NULL && lua->tasks->call == NULL);
    task_free(lua->tasks);
  }
  if (lua->L) lua_close(lua->L); /* runs the scripts' finalizers: still watched */
  hk_watch_remove(&lua->watch);
  hk_router_free(lua->router);
  free(lua->scripts_dir);
  for (size_t i = 0; i < lua->mode_count; i++) free(lua->modes[i]);
  free(lua->modes);
  for (size_t i = 0; i < lua->env_name_count; i++) free(lua->env_names[i]);
  free(lua->env_names);
  free(lua);
}

size_t hk_lua_route_count(const hk_lua_t *lua) { return hk_router_count(lua->router); }

void hk_lua_set_cell(hk_lua_t *lua, unsigned cell) { lua->worker = cell; }

int hk_lua_render(hk_lua_t *lua, const char *module, const char *function, char **out, char **err) {
  return hk_lua_render_input(lua, module, function, NULL, 0, out, err);
}

int hk_lua_render_input(hk_lua_t *lua, const char *module, const char *function, const char *input,
                        size_t input_len, char **out, char **err) {
  lua_State *L = lua->L;
  int top = lua_gettop(L);
  *out = *err = NULL;
  lua_getglobal(L, "require");
  lua_pushstring(L, module);
  int rc = -EINVAL;
  if (protected_call(L, 1, 1) != LUA_OK) {
    *err = dup_message(lua_tostring(L, -1));
    goto done;
  }
  lua_getfield(L, -1, function);
  if (!lua_isfunction(L, -1)) {
    char msg[256];
    snprintf(msg, sizeof msg, "%s.%s is not a function", module, function);
    *err = dup_message(msg);
    goto done;
  }
  if (input != NULL) lua_pushlstring(L, input, input_len);
  if (protected_call(L, input != NULL ? 1 : 0, 1) != LUA_OK) {
    *err = dup_message(lua_tostring(L, -1));
    goto done;
  }
  if (lua_type(L, -1) != LUA_TSTRING) {
    char msg[256];
    snprintf(msg, sizeof msg, "%s.%s returned %s, not a string", module, function, luaL_typename(L, -1));
    *err = dup_message(msg);
    goto done;
  }
  *out = dup_message(lua_tostring(L, -1));
  rc = *out ? 0 : -ENOMEM;
done:
  lua_settop(L, top);
  return rc;
}

int hk_lua_route(hk_lua_t *lua, hk_request_t *req, char *allow, size_t allow_size) {
  const hk_http_request_t *http = req->http;
  char method[32];
  size_t len = http->method_len < sizeof method - 1 ? http->method_len : sizeof method - 1;
  memcpy(method, http->method, len);
  method[len] = '\0';
  int rc = hk_router_match(lua->router, method, http->path, http->path_len, &req->match, allow, allow_size);
  req->endpoint = rc == 0 || rc == HK_ROUTER_METHOD_NOT_ALLOWED ? req->match.pattern : "unmatched";
  return rc;
}

/* ---- running handlers --------------------------------------------------------------------- */

static void fail_request_with(hk_request_t *req, int status, const char *message, const char *event,
                              const char *detail) {
  hk_log_event(HK_LOG_ERROR, req->id, event, "handler failed",
               (hk_log_field_t[]){HK_LOG_S("endpoint", req->endpoint), HK_LOG_S("error", detail)}, 2);
  if (req->stream_started) return; /* too late for a 500: the streamed body just ends */
  hk_buf_reset(&req->response.headers);
  hk_response_set_error(&req->response, status, message, req->id);
}

static void fail_request(hk_request_t *req, const char *event, const char *detail) {
  fail_request_with(req, 500, "internal error", event, detail);
}

/* Reads _respond's results (status, body, content_type, headers) from the coroutine's stack.
 * Runs protected: converting a number header to text allocates. */
static void collect_response(lua_State *co, int nres, hk_request_t *req) {
  hk_response_t *res = &req->response;
  if (req->stream_started) return; /* the status and body went out already */
  lua_Integer status = nres >= 1 && lua_isinteger(co, 1) ? lua_tointeger(co, 1) : 0;
  if (status < 200 || status > 599) {
    /* 1xx are interim responses: one as the final answer would leave the client waiting. */
    char detail[128];
    snprintf(detail, sizeof detail, "status must be an integer from 200 to 599, not %lld", (long long)status);
    fail_request(req, "handler_bad_response", detail);
    return;
  }
  res->status = (int)status;
  size_t body_len = 0;
  const char *body = nres >= 2 && lua_type(co, 2) == LUA_TSTRING ? lua_tolstring(co, 2, &body_len) : NULL;
  if (body && hk_buf_append(&res->body, body, body_len) != 0) {
    fail_request(req, "handler_bad_response", "out of memory");
    return;
  }
  if (nres >= 3 && lua_type(co, 3) == LUA_TSTRING) {
    size_t type_len;
    const char *type = lua_tolstring(co, 3, &type_len);
    /* It goes into the head as it is: a control byte (CR LF above all) would split it. */
    if (type_len >= sizeof res->content_type || !hk_text_is_field_value(type, type_len)) {
      fail_request(req, "handler_bad_response", "invalid content type");
      return;
    }
    memcpy(res->content_type, type, type_len + 1);
  }
  if (nres >= 4 && lua_istable(co, 4)) {
    lua_pushnil(co);
    while (lua_next(co, 4) != 0) {
      size_t name_len, value_len;
      const char *name = lua_type(co, -2) == LUA_TSTRING ? lua_tolstring(co, -2, &name_len) : NULL;
      const char *value = lua_type(co, -1) == LUA_TSTRING || lua_type(co, -1) == LUA_TNUMBER
                              ? lua_tolstring(co, -1, &value_len) : NULL;
      if (name == NULL || value == NULL ||
          hk_response_add_header(res, name, name_len, value, value_len) != 0) {
        char detail[160];
        snprintf(detail, sizeof detail, "invalid response header '%.64s'", name ? name : "?");
        lua_pop(co, 2);
        fail_request(req, "handler_bad_response", detail);
        return;
      }
      lua_pop(co, 1);
    }
  }
}

/* ---- tasks: a handler's coroutine and the one asynchronous operation it waits on ----------- */

static void on_timer_closed(uv_handle_t *handle) { free(handle); }

/* Stops the pending operation without resuming the coroutine. */
static void task_stop_op(hk_lua_task_t *task) {
  if (task->op == OP_SLEEP && task->timer != NULL) {
    uv_timer_stop(task->timer);
    uv_close((uv_handle_t *)task->timer, on_timer_closed);
  } else if (task->op == OP_HTTP && task->call != NULL) {
    hk_client_cancel(task->call);
  } else if (task->op == OP_STATFS && task->statfs != NULL) {
    task->statfs->data = NULL; /* its callback frees it; the threadpool cannot be stopped */
    uv_cancel((uv_req_t *)task->statfs);
  }
  task->statfs = NULL;
  if (task->on_chunk_ref != LUA_NOREF) luaL_unref(task->lua->L, LUA_REGISTRYINDEX, task->on_chunk_ref);
  task->on_chunk_ref = LUA_NOREF;
  task->timer = NULL;
  task->call = NULL;
  task->chunks_paused = false;
  task->op = OP_NONE;
}

/* Releases the coroutine and the task; does not call done. Never while the task runs (see
 * task_cancel). When a retired generation's last task goes, its owner is told. */
static void task_free(hk_lua_task_t *task) {
  hk_lua_t *lua = task->lua;
  lua_State *L = lua->L;
  assert(task->running == 0);
  task_stop_op(task);
  if (task->box) task->box->req = NULL; /* a kept request object must not outlive the request */
  if (task->req) task->req->task = NULL;
  if (task->co_ref != LUA_NOREF) {
    /* A clean coroutine is kept for the next task: creating one is a large part of a
     * request's cost in Lua (profile in issue 11's note). */
    int pool_max = (int)(sizeof lua->idle_threads / sizeof lua->idle_threads[0]);
    if (lua_resetthread(task->co) == LUA_OK && !lua->retired && lua->idle_count < pool_max) {
      lua_settop(task->co, 0);
      lua->idle_threads[lua->idle_count++] = task->co_ref;
    } else {
      luaL_unref(L, LUA_REGISTRYINDEX, task->co_ref);
    }
  }
  if (task->box_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, task->box_ref);
  if (task->prev) task->prev->next = task->next;
  else lua->tasks = task->next;
  if (task->next) task->next->prev = task->prev;
  free(task);
  if (lua->retired && lua->tasks == NULL && lua->on_idle != NULL) lua->on_idle(lua, lua->on_idle_data);
}

/* Stops a task for good. One that is running (its coroutine is inside a C function that led
 * here, e.g. req:write whose failed write closed the connection) is only detached and marked:
 * it is freed when that run returns, since freeing a running coroutine would pull the stack
 * out from under it. Its request object answers "request has finished" from then on. */
static void task_cancel(hk_lua_task_t *task) {
  if (task->running == 0) {
    task_free(task);
    return;
  }
  task->cancelled = true;
  task_stop_op(task);
  if (task->box) task->box->req = NULL;
  if (task->req) {
    if (task->lua->current == task->req) task->lua->current = NULL;
    task->req->task = NULL;
    task->req = NULL;
  }
}

typedef struct finish_s {
  hk_lua_task_t *task;
  hk_request_t *req; /* NULL: a background task */
  int status, nres;
} finish_t;

/* After a run: the response from the results, or the failure with its location and traceback
 * (taken before the coroutine is reset). Protected, on the main thread: reporting must not
 * panic a state at its memory cap.  [-0, +0, m] */
static int finish_protected(lua_State *L) {
  finish_t *f = lua_touserdata(L, 1);
  lua_State *co = f->task->co;
  if (f->status == LUA_OK) {
    if (f->req) collect_response(co, f->nres, f->req);
    return 0;
  }
  const char *why = "yielded outside an asynchronous hancock call";
  if (f->status != LUA_YIELD) {
    if (!lua_checkstack(L, 6)) return luaL_error(L, "not enough memory");
    lua_xmove(co, L, 1);
    push_located_message(L, co, error_text(L, lua_gettop(L)));
    luaL_traceback(L, co, lua_tostring(L, -1), 0);
    why = lua_tostring(L, -1);
  }
  if (f->req) {
    fail_request(f->req, "handler_error", why);
  } else {
    const char *parent = f->task->parent_id[0] ? f->task->parent_id : NULL;
    hk_log_event(HK_LOG_ERROR, parent, "task_error", "background task failed",
                 (hk_log_field_t[]){HK_LOG_S("error", why)}, 1);
  }
  return 0;
}

/* Ends a task that cannot go on (its state is out of memory): a request gets 503, a background
 * task is logged. Calls done. */
static void task_abort(hk_lua_task_t *task, const char *why) {
  hk_request_t *req = task->req;
  hk_lua_done_cb done = task->done;
  if (req != NULL) {
    fail_request_with(req, 503, "service unavailable", "handler_error", why);
  } else {
    hk_log_event(HK_LOG_ERROR, task->parent_id[0] ? task->parent_id : NULL, "task_error",
                 "background task failed", (hk_log_field_t[]){HK_LOG_S("error", why)}, 1);
  }
  task_free(task);
  if (req != NULL) done(req);
}

/* Resumes the task's coroutine with nargs values already pushed on it, and finishes the
 * request when the handler returns or fails. */
static void task_resume(hk_lua_task_t *task, int nargs) {
  hk_lua_t *lua = task->lua;
  lua_State *L = lua->L, *co = task->co;
  hk_request_t *req = task->req;
  hk_request_t *outer = lua->current;
  lua_State *outer_co = lua->running;
  hk_lua_task_t *outer_task = lua->task;
  char label[HK_REQID_SIZE];
  snprintf(label, sizeof label, "%s", req ? req->id : task->parent_id);
  lua->current = req;
  lua->running = co;
  lua->task = task;
  if (req == NULL) task->budget = (budget_t){0}; /* background tasks: a budget per run */
  task->running++;
  entry_begin(lua, co, &task->budget, label);
  int nres = 0;
  int status = lua_resume(co, L, nargs, &nres);
  entry_end(lua, label);
  task->running--;
  lua->current = outer;
  lua->running = outer_co;
  lua->task = outer_task;

  if (task->cancelled) {
    if (task->running == 0) task_free(task);
    return;
  }
  if (status == LUA_YIELD && task->op != OP_NONE) return; /* waiting on I/O; resumed later */
  finish_t finish = {task, req, status, nres};
  int top = lua_gettop(L);
  if (run_protected(L, finish_protected, &finish) != LUA_OK) {
    if (req) fail_request(req, "handler_error", "not enough memory to report the handler's result");
    else hk_log_event(HK_LOG_ERROR, NULL, "task_error", "background task failed (not enough memory to report why)", NULL, 0);
  }
  lua_settop(L, top);
  hk_lua_done_cb done = task->done;
  task_free(task);
  if (req) {
    req->mode_label = mode_label(lua, req);
    done(req);
  }
}

/* A task with its own coroutine (under the budget hook), on the state's task list. Raises on
 * L when memory runs out, leaving nothing behind: call it where a raise is caught. */
static hk_lua_task_t *task_new(hk_lua_t *lua, lua_State *L) {
  lua_State *co;
  int ref;
  if (lua->idle_count > 0) {
    ref = lua->idle_threads[--lua->idle_count];
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    co = lua_tothread(L, -1);
    lua_pop(L, 1);
  } else {
    co = lua_newthread(L);
    ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  hk_lua_task_t *task = calloc(1, sizeof *task);
  if (task == NULL) {
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    luaL_error(L, "not enough memory");
  }
  task->lua = lua;
  task->co = co;
  task->co_ref = ref;
  task->on_chunk_ref = task->box_ref = LUA_NOREF;
  lua_sethook(co, budget_hook, LUA_MASKCOUNT, HOOK_STEP);
  task->next = lua->tasks;
  if (lua->tasks) lua->tasks->prev = task;
  lua->tasks = task;
  return task;
}

typedef struct setup_s {
  hk_lua_t *lua;
  hk_request_t *req;
  hk_lua_task_t *task;
} setup_t;

/* A request's task: its coroutine, the request object (anchored so it outlives the handler's
 * last reference to it), and _respond(handler, req) ready to resume.  [-0, +0, m] */
static int setup_request(lua_State *L) {
  setup_t *setup = lua_touserdata(L, 1);
  hk_lua_t *lua = setup->lua;
  hk_lua_task_t *task = setup->task = task_new(lua, L);
  request_box_t *box = lua_newuserdatauv(L, sizeof *box, 1);
  box->req = NULL;
  luaL_setmetatable(L, REQUEST_MT);
  lua_newtable(L);
  lua_setiuservalue(L, -2, 1);
  lua_pushvalue(L, -1);
  task->box_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  task->box = box;
  lua_rawgeti(L, LUA_REGISTRYINDEX, lua->respond_ref);
  lua_rawgeti(L, LUA_REGISTRYINDEX, setup->req->match.handler);
  lua_rotate(L, -3, 2); /* respond, handler, box */
  if (!lua_checkstack(task->co, 3)) return luaL_error(L, "not enough memory");
  lua_xmove(L, task->co, 3);
  box->req = setup->req;
  return 0;
}

void hk_lua_run(hk_lua_t *lua, hk_request_t *req, hk_lua_done_cb done) {
  lua_State *L = lua->L;
  setup_t setup = {lua, req, NULL};
  int top = lua_gettop(L);
  if (run_protected(L, setup_request, &setup) != LUA_OK) {
    lua_settop(L, top);
    if (setup.task) task_free(setup.task);
    fail_request_with(req, 503, "service unavailable", "handler_error",
                      "not enough memory to start the handler (--lua-memory-limit)");
    done(req);
    return;
  }
  lua_settop(L, top);
  hk_lua_task_t *task = setup.task;
  task->req = req;
  task->done = done;
  req->task = task;
  req->on_stream_drained = on_stream_drained;
  task_resume(task, 2);
}

void hk_lua_cancel(hk_lua_t *lua, hk_request_t *req) {
  if (req->task != NULL) task_cancel(req->task);
  req->mode_label = mode_label(lua, req);
}

void hk_lua_retire(hk_lua_t *lua, hk_lua_idle_cb on_idle, void *data) {
  lua->retired = true;
  lua->on_idle = on_idle;
  lua->on_idle_data = data;
  /* Background tasks (health probes, loops) belong to the generation's scripts: the new
   * generation starts its own. Requests in flight finish here. */
  hk_lua_task_t *next;
  for (hk_lua_task_t *t = lua->tasks; t != NULL; t = next) {
    next = t->next;
    if (t->req == NULL && !t->cancelled) task_cancel(t);
  }
  if (lua->tasks == NULL && on_idle != NULL) on_idle(lua, data);
}

bool hk_lua_busy(const hk_lua_t *lua) { return lua->tasks != NULL; }

size_t hk_lua_memory(const hk_lua_t *lua) {
  return atomic_load_explicit(&((hk_lua_t *)lua)->memory_used, memory_order_relaxed);
}

void hk_lua_drop_background(hk_lua_t *lua) {
  lua->worker_copy = true;
  hk_lua_task_t *next;
  for (hk_lua_task_t *task = lua->tasks; task != NULL; task = next) {
    next = task->next;
    if (task->req == NULL && !task->started && task->op == OP_NONE && task->running == 0) task_free(task);
  }
}

void hk_lua_cancel_all(hk_lua_t *lua) {
  size_t background = 0;
  for (hk_lua_task_t *t = lua->tasks; t != NULL; t = t->next) background += t->req == NULL;
  if (background > 0)
    hk_log_event(HK_LOG_INFO, NULL, "tasks_cancelled", "background tasks cancelled at shutdown",
                 (hk_log_field_t[]){HK_LOG_I("tasks", background)}, 1);
  lua->on_idle = NULL; /* the owner is freeing everything itself */
  while (lua->tasks != NULL) task_free(lua->tasks);
}

void hk_lua_bind_loop(hk_lua_t *lua, uv_loop_t *loop, hk_client_t *client,
                      hk_ratelimit_t *ratelimit, hk_carry_t *carry) {
  lua->loop = loop;
  lua->client = client;
  lua->ratelimit = ratelimit;
  lua->carry = carry;
  if (loop == NULL) return;
  /* Tasks spawned while the scripts loaded start now. */
  hk_lua_task_t *next;
  for (hk_lua_task_t *task = lua->tasks; task != NULL; task = next) {
    next = task->next;
    if (task->req == NULL && task->op == OP_NONE && task->timer_nargs >= 0 && !task->started) {
      task->started = true;
      task_start_timer(task);
    }
  }
}

/* ---- asynchronous calls from handlers ------------------------------------------------------ */

/* The task whose main coroutine is L, or a Lua error: asynchronous calls yield that coroutine,
 * so they work in a handler (not at load time, not inside a script's own coroutines). */
static hk_lua_task_t *running_task(lua_State *L, const char *what) {
  hk_lua_t *lua = context_of(L);
  if (lua->task != NULL && lua->task->cancelled) luaL_error(L, "%s: the request has finished", what);
  if (lua->task == NULL || lua->task->co != L || lua->loop == NULL)
    luaL_error(L, "%s can only be called from a request handler (not at load time or inside a "
                  "coroutine of the script's own)", what);
  if (!lua_isyieldable(L)) luaL_error(L, "%s cannot yield here (inside a metamethod or C call)", what);
  return lua->task;
}

/* The task whose own coroutine L is, when it may yield now; NULL otherwise (load time, a hook,
 * on_chunk, a metamethod). */
static hk_lua_task_t *waiting_task(lua_State *L) {
  hk_lua_t *lua = context_of(L);
  hk_lua_task_t *task = lua->task;
  if (task == NULL || task->co != L || task->cancelled || lua->loop == NULL || !lua_isyieldable(L)) return NULL;
  return task;
}

/* The server: a congested client has caught up. A handler waiting in req:write goes on; an
 * outbound transfer paused in on_chunk resumes. */
static void on_stream_drained(hk_request_t *req) {
  hk_lua_task_t *task = req->task;
  if (task == NULL || task->running > 0) return;
  if (task->op == OP_DRAIN) {
    task->op = OP_NONE;
    if (!lua_checkstack(task->co, 1)) {
      task_abort(task, "out of Lua stack");
      return;
    }
    lua_pushboolean(task->co, 1);
    task_resume(task, 1);
  } else if (task->op == OP_HTTP && task->chunks_paused) {
    task->chunks_paused = false;
    hk_client_resume(task->call); /* may deliver chunks, even finish the call, before it returns */
  }
}

static void on_sleep_done(uv_timer_t *timer) {
  hk_lua_task_t *task = timer->data;
  task->started = true;
  uv_close((uv_handle_t *)timer, on_timer_closed);
  task->timer = NULL;
  task->op = OP_NONE;
  int nargs = task->timer_nargs;
  task->timer_nargs = 0;
  task_resume(task, nargs);
}

/* core.spawn(fn, ...) — runs fn(...) in a background task on the next loop turn, after the
 * current handler has returned: for work that must not delay or fail the response
 * (notifications). It may use hk.sleep and hk.http.request. [-(1+n), +0, e] */
static void task_start_timer(hk_lua_task_t *task) {
  uv_timer_t *timer = malloc(sizeof *timer);
  if (timer == NULL) {
    hk_log_event(HK_LOG_ERROR, NULL, "task_error", "background task not started: out of memory", NULL, 0);
    task_free(task);
    return;
  }
  uv_timer_init(task->lua->loop, timer);
  timer->data = task;
  uv_timer_start(timer, on_sleep_done, 0, 0);
  task->op = OP_SLEEP;
  task->timer = timer;
}

static int core_spawn(lua_State *L) {
  hk_lua_t *lua = context_of(L);
  luaL_checktype(L, 1, LUA_TFUNCTION);
  int nargs = lua_gettop(L) - 1;
  if (!lua_checkstack(L, 2)) return luaL_error(L, "hk.spawn: too many arguments");
  hk_lua_task_t *task = task_new(lua, L);
  if (!lua_checkstack(task->co, nargs + 1)) {
    task_free(task);
    return luaL_error(L, "hk.spawn: too many arguments");
  }
  if (lua->current != NULL) snprintf(task->parent_id, sizeof task->parent_id, "%s", lua->current->id);
  else if (lua->task != NULL) memcpy(task->parent_id, lua->task->parent_id, sizeof task->parent_id);
  lua_xmove(L, task->co, nargs + 1); /* the function and its arguments */
  task->timer_nargs = nargs;
  /* At load time there is no loop yet: the task starts when the server binds one. */
  if (lua->loop != NULL) task_start_timer(task);
  return 0;
}

/* core.sleep(ms)  [-1, +0, e] — yields */
static int core_sleep(lua_State *L) {
  lua_Number ms = luaL_checknumber(L, 1);
  if (!(ms >= 0 && ms <= 86400000)) return luaL_error(L, "hk.sleep: milliseconds must be from 0 to 86400000");
  hk_lua_task_t *task = running_task(L, "hk.sleep");
  uv_timer_t *timer = malloc(sizeof *timer);
  if (timer == NULL) return luaL_error(L, "hk.sleep: out of memory");
  uv_timer_init(task->lua->loop, timer);
  timer->data = task;
  /* At least `ms`: the loop's clock is cached and in whole milliseconds, so a timer taken from
   * it can fire up to 1 ms early in real time (a 30 ms sleep measured 29.6 ms). */
  uv_update_time(task->lua->loop);
  uint64_t due = (uint64_t)ceil(ms);
  uv_timer_start(timer, on_sleep_done, due > 0 ? due + 1 : 0, 0);
  task->op = OP_SLEEP;
  task->timer = timer;
  return lua_yield(L, 0);
}

static const char *client_error_kind(hk_client_error_t error) {
  switch (error) {
    case HK_CLIENT_OK: return "ok";
    case HK_CLIENT_ERR_CONNECT: return "connect";
    case HK_CLIENT_ERR_TIMEOUT: return "timeout";
    case HK_CLIENT_ERR_TOO_LARGE: return "too_large";
    case HK_CLIENT_ERR_ABORTED: return "aborted";
    case HK_CLIENT_ERR_PROTOCOL: return "protocol";
  }
  return "error";
}

typedef struct http_result_s {
  hk_lua_task_t *task;
  const hk_client_result_t *result;
  int nres;
} http_result_t;

/* Builds what hk.http.request returns on the main thread and moves it to the coroutine;
 * protected, since a response body can be what tips the state over its cap.  [-0, +0, m] */
static int push_http_result(lua_State *L) {
  http_result_t *r = lua_touserdata(L, 1);
  const hk_client_result_t *result = r->result;
  lua_State *co = r->task->co;
  if (result->error == HK_CLIENT_OK) {
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, result->status);
    lua_setfield(L, -2, "status");
    lua_pushlstring(L, result->body ? result->body : "", result->body_len);
    lua_setfield(L, -2, "body");
    lua_pushnumber(L, result->seconds);
    lua_setfield(L, -2, "seconds");
    lua_createtable(L, 0, (int)result->header_count);
    for (size_t i = 0; i < result->header_count; i++) {
      const char *name = result->headers[i].name;
      luaL_Buffer b;
      luaL_buffinit(L, &b);
      for (const char *p = name; *p; p++) luaL_addchar(&b, (char)((*p >= 'A' && *p <= 'Z') ? *p + 32 : *p));
      luaL_pushresult(&b);
      lua_pushvalue(L, -1);
      if (lua_rawget(L, -3) == LUA_TSTRING) {
        lua_pushliteral(L, ", ");
        lua_pushstring(L, result->headers[i].value);
        lua_concat(L, 3);
      } else {
        lua_pop(L, 1);
        lua_pushstring(L, result->headers[i].value);
      }
      lua_rawset(L, -3);
    }
    luaL_setmetatable(L, HEADERS_MT);
    lua_setfield(L, -2, "headers");
    r->nres = 1;
  } else {
    lua_pushnil(L);
    lua_pushstring(L, result->message && result->message[0] ? result->message : client_error_kind(result->error));
    lua_pushstring(L, client_error_kind(result->error));
    r->nres = 3;
  }
  if (!lua_checkstack(co, r->nres)) return luaL_error(L, "not enough memory");
  lua_xmove(L, co, r->nres);
  return 0;
}

static void on_http_done(void *data, const hk_client_result_t *result) {
  hk_lua_task_t *task = data;
  lua_State *L = task->lua->L;
  task->call = NULL;
  task->op = OP_NONE;
  if (task->on_chunk_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, task->on_chunk_ref);
  task->on_chunk_ref = LUA_NOREF;
  http_result_t r = {task, result, 0};
  task_resume_built(task, push_http_result, &r, &r.nres,
                    "not enough memory for the outbound call's response (--lua-memory-limit)");
}

/* Streams a response body into the script's on_chunk(bytes); returning false stops the call.
 * One entry into Lua, under the task's budget; the task may be cancelled from inside it (the
 * chunk written to a client that has gone), and is then freed here once the call returns. */
static int on_http_chunk(void *data, const char *bytes, size_t len) {
  hk_lua_task_t *task = data;
  if (task->req != NULL && task->req->stream_congested) {
    task->chunks_paused = true; /* on_stream_drained resumes the transfer */
    return HK_CLIENT_CHUNK_PAUSE;
  }
  hk_lua_t *lua = task->lua;
  lua_State *L = lua->L;
  const char *id = task->req ? task->req->id : task->parent_id[0] ? task->parent_id : NULL;
  int top = lua_gettop(L);
  int rc = 0;
  hk_request_t *outer = lua->current;
  hk_lua_task_t *outer_task = lua->task;
  lua->current = task->req;
  lua->task = task;
  task->running++;
  if (!lua_checkstack(L, 3)) {
    rc = 1;
  } else {
    lua_rawgeti(L, LUA_REGISTRYINDEX, task->on_chunk_ref);
    lua_pushlstring(L, bytes, len);
    if (protected_call_as(L, 1, 1, &task->budget, id) != LUA_OK) {
      if (!task->cancelled)
        hk_log_event(HK_LOG_ERROR, id, "handler_error", "on_chunk failed",
                     (hk_log_field_t[]){HK_LOG_S("error", lua_tostring(L, -1))}, 1);
      rc = 1;
    } else if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
      rc = 1;
    }
  }
  task->running--;
  lua->current = outer;
  lua->task = outer_task;
  lua_settop(L, top);
  if (task->cancelled && task->running == 0) {
    task_free(task); /* cancels the call: allowed from on_chunk, and done never comes */
    return 1;
  }
  return rc;
}

/* core.http_request{method, url, headers, body, timeout_ms, connect_timeout_ms, max_bytes,
 * on_chunk} -> response | nil, message, kind  [-1, +(1|3), e] — yields */
static int core_http_request(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  hk_lua_task_t *task = running_task(L, "hk.http.request");
  hk_client_opts_t opts = {0};
  lua_getfield(L, 1, "url");
  opts.url = lua_tostring(L, -1);
  if (lua_type(L, -1) != LUA_TSTRING) return luaL_error(L, "hk.http.request: url must be a string");
  lua_getfield(L, 1, "method");
  opts.method = lua_isnil(L, -1) ? "GET" : lua_tostring(L, -1);
  if (opts.method == NULL) return luaL_error(L, "hk.http.request: method must be a string");
  lua_getfield(L, 1, "body");
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TSTRING) return luaL_error(L, "hk.http.request: body must be a string");
    opts.body = lua_tolstring(L, -1, &opts.body_len);
  }
  static const char *const limits[] = {"timeout_ms", "connect_timeout_ms", "max_bytes"};
  uint64_t values[3] = {0, 0, 0};
  for (int i = 0; i < 3; i++) {
    lua_getfield(L, 1, limits[i]);
    if (!lua_isnil(L, -1)) {
      if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) <= 0)
        return luaL_error(L, "hk.http.request: %s must be a positive integer", limits[i]);
      values[i] = (uint64_t)lua_tointeger(L, -1);
    }
    lua_pop(L, 1);
  }
  opts.timeout_ms = values[0];
  opts.connect_timeout_ms = values[1];
  opts.max_response_bytes = (size_t)values[2];
  /* Header lines live in one Lua buffer string until hk_client_start has copied them. */
  const char *lines[64];
  size_t count = 0;
  lua_getfield(L, 1, "headers");
  if (!lua_isnil(L, -1)) {
    if (!lua_istable(L, -1)) return luaL_error(L, "hk.http.request: headers must be a table");
    int headers = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, headers) != 0) {
      if (lua_type(L, -2) != LUA_TSTRING || (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER))
        return luaL_error(L, "hk.http.request: headers must map names to strings");
      if (count == sizeof lines / sizeof lines[0]) return luaL_error(L, "hk.http.request: too many headers");
      size_t name_len, value_len;
      const char *name = lua_tolstring(L, -2, &name_len);
      const char *value = lua_tolstring(L, -1, &value_len);
      if (strpbrk(name, "\r\n:") != NULL || memchr(value, '\r', value_len) || memchr(value, '\n', value_len))
        return luaL_error(L, "hk.http.request: invalid header '%s'", name);
      lua_pushfstring(L, "%s: %s", name, value);
      lua_insert(L, headers); /* keep the line anchored below the iteration */
      headers++;
      lines[count++] = lua_tostring(L, headers - 1);
      lua_pop(L, 1);
    }
  }
  opts.headers = lines;
  opts.header_count = count;
  lua_getfield(L, 1, "on_chunk");
  if (!lua_isnil(L, -1)) {
    if (!lua_isfunction(L, -1)) return luaL_error(L, "hk.http.request: on_chunk must be a function");
    task->on_chunk_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    opts.on_chunk = on_http_chunk;
  } else {
    lua_pop(L, 1);
  }
  int rc = hk_client_start(task->lua->client, &opts, on_http_done, task, &task->call);
  if (rc != 0) {
    if (task->on_chunk_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, task->on_chunk_ref);
    task->on_chunk_ref = LUA_NOREF;
    lua_pushnil(L);
    lua_pushstring(L, rc == -EINVAL ? "invalid request (only http:// and https:// URLs)" : "out of memory");
    lua_pushstring(L, "protocol");
    return 3;
  }
  task->op = OP_HTTP;
  return lua_yield(L, 0);
}
