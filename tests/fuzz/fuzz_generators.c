/* fuzz_generators: libFuzzer target for the generators behind `hancock rules` and `hancock
 * dashboard` (lua/hancock/rules.lua, lua/hancock/dashboard.lua). The input is turned into a
 * script — hk.alert definitions with arbitrary thresholds (NaN, infinities, huge, subnormal,
 * negative, integers at the limits, wrong types) and odd strings, hk.metrics registrations with
 * arbitrary names, help texts and labels — plus the three environment overrides rules.lua reads.
 * The script is loaded the way main.c's one-shot commands load one (hk_lua_new_opts with the
 * config's options, host metrics registered), then both generators run through hk_lua_render.
 * Either a clear error comes back (a non-empty message) or the output must hold up: the rules
 * are the exact YAML shape rules.lua writes, every scalar a strictly parsed double-quoted YAML
 * string of printable characters (so no value can break a line or the document), a threshold
 * substituted into an expression is a PromQL number that reads back as the same double (never
 * NaN or Inf); the dashboard parses as JSON (hk_json) with its panels laid out on the grid.
 * Built by tests/fuzz/CMakeLists.txt as fuzz_generators_replay (run on corpus/generators/ by
 * ctest) and, with -DHK_FUZZ=ON, as a libFuzzer binary. See docs/fuzzing.md. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "hk_buf.h"
#include "hk_config.h"
#include "hk_host_metrics.h"
#include "hk_json.h"
#include "hk_log.h"
#include "hk_lua.h"
#include "hk_metrics.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "fuzz_check.h"

#define MAX_ALERTS 24

/* ---- reading the input -------------------------------------------------------------------- */

typedef struct input_s {
  const uint8_t *p;
  size_t n;
} input_t;

static unsigned byte(input_t *in) {
  if (in->n == 0) return 0;
  in->n--;
  return *in->p++;
}

static size_t bytes(input_t *in, size_t max, const uint8_t **out) {
  size_t len = byte(in);
  if (len > max) len = max;
  if (len > in->n) len = in->n;
  *out = in->p;
  in->p += len;
  in->n -= len;
  return len;
}

/* ---- writing the script ------------------------------------------------------------------- */

/* A Lua string literal holding exactly these bytes. */
static void lua_string(hk_buf_t *b, const uint8_t *s, size_t len) {
  CHECK(hk_buf_append_char(b, '"') == 0);
  for (size_t i = 0; i < len; i++) {
    unsigned c = s[i];
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == ' ' || c == '_')
      CHECK(hk_buf_append_char(b, (char)c) == 0);
    else
      CHECK(hk_buf_appendf(b, "\\%03u", c) == 0);
  }
  CHECK(hk_buf_append_char(b, '"') == 0);
}

static void lua_cstring(hk_buf_t *b, const char *s) { lua_string(b, (const uint8_t *)s, strlen(s)); }

/* A string option: omitted, a typical valid value, a value with {threshold}, or raw bytes.
 * Returns false when the option is left out. */
static bool string_option(input_t *in, hk_buf_t *b, const char *typical) {
  unsigned kind = byte(in);
  const uint8_t *raw;
  size_t len;
  switch (kind % 8) {
    case 0: return false;
    case 1: lua_cstring(b, typical); return true;
    case 2: lua_cstring(b, "{threshold} and {threshold}"); return true;
    case 3: lua_cstring(b, ""); return true;
    default:
      len = bytes(in, 200, &raw);
      lua_string(b, raw, len);
      return true;
  }
}

/* A number as the threshold. Writes the Lua expression; sets *value and *numeric when it is a
 * number (float or integer), so the rendered text can be compared. */
static void threshold_option(input_t *in, hk_buf_t *b, double *value, bool *is_number, bool *is_finite) {
  unsigned kind = byte(in);
  *is_number = true;
  *is_finite = true;
  switch (kind % 10) {
    case 0: { /* raw double, written as a hex float (exact) */
      uint64_t bits = 0;
      for (int i = 0; i < 8; i++) bits = bits << 8 | byte(in);
      double v;
      memcpy(&v, &bits, sizeof v);
      *value = v;
      *is_finite = isfinite(v);
      if (isnan(v)) CHECK(hk_buf_append_str(b, "(0/0)") == 0);
      else if (isinf(v)) CHECK(hk_buf_appendf(b, "(%s1/0)", v < 0 ? "-" : "") == 0);
      else CHECK(hk_buf_appendf(b, "%a", v) == 0);
      return;
    }
    case 1: { /* a Lua integer */
      uint64_t bits = 0;
      for (int i = 0; i < 8; i++) bits = bits << 8 | byte(in);
      int64_t v = (int64_t)bits;
      *value = (double)v;
      if (v == INT64_MIN) CHECK(hk_buf_append_str(b, "math.mininteger") == 0);
      else CHECK(hk_buf_appendf(b, "(%lld)", (long long)v) == 0);
      return;
    }
    case 2: *value = (double)(kind / 10); CHECK(hk_buf_appendf(b, "%u", kind / 10) == 0); return;
    case 3: *value = (double)(kind / 10) / 100; CHECK(hk_buf_appendf(b, "%a", *value) == 0); return;
    case 4: {
      static const char *const special[] = {"(0/0)", "(1/0)", "(-1/0)", "1e308", "-1e308", "5e-324", "-0.0",
                                            "math.maxinteger", "2^53", "2^53+1", "0.1", "-1", "1e-7", "123456789.123"};
      static const double values[] = {NAN, INFINITY, -INFINITY, 1e308, -1e308, 5e-324, -0.0,
                                      9223372036854775807.0, 9007199254740992.0, 9007199254740992.0, 0.1, -1,
                                      1e-7, 123456789.123};
      size_t i = byte(in) % (sizeof special / sizeof special[0]);
      CHECK(hk_buf_append_str(b, special[i]) == 0);
      *value = values[i];
      *is_finite = isfinite(values[i]);
      return;
    }
    case 5: *is_number = false; CHECK(hk_buf_append_str(b, "\"0.5\"") == 0); return;
    case 6: *is_number = false; CHECK(hk_buf_append_str(b, "{}") == 0); return;
    case 7: *is_number = false; CHECK(hk_buf_append_str(b, "true") == 0); return;
    default: *is_number = false; CHECK(hk_buf_append_str(b, "nil") == 0); return;
  }
}

/* An alert whose expression is "{threshold}" alone, so the output shows how the number was
 * written. */
typedef struct probe_s {
  char name[32];
  double threshold;
} probe_t;

typedef struct script_s {
  hk_buf_t text;
  probe_t probes[MAX_ALERTS];
  size_t probe_count;
  size_t metric_count;
} script_t;

static void write_alert(input_t *in, script_t *s, unsigned index) {
  hk_buf_t *b = &s->text;
  unsigned shape = byte(in);
  bool protect = !(shape & 0x80); /* a bare hk.alert error fails the whole load: also a path */
  char name[32];
  bool probe = false;
  CHECK(hk_buf_append_str(b, protect ? "pcall(hk.alert, " : "hk.alert(") == 0);
  switch (shape % 4) {
    case 0: snprintf(name, sizeof name, "Thr%u", index); probe = true; lua_cstring(b, name); break;
    case 1: snprintf(name, sizeof name, "A%u", index); lua_cstring(b, name); break;
    case 2: {
      const uint8_t *raw;
      size_t len = bytes(in, 40, &raw);
      CHECK(hk_buf_append_str(b, "\"R\" .. ") == 0); /* never a probe's name */
      lua_string(b, raw, len);
      break;
    }
    default: lua_cstring(b, "A0"); break; /* a redefinition */
  }
  CHECK(hk_buf_append_str(b, ", {") == 0);
  double value = 0;
  bool is_number = false, is_finite = false;
  if (shape & 0x0c) { /* mostly with a threshold: expressions use {threshold} */
    CHECK(hk_buf_append_str(b, "threshold = ") == 0);
    threshold_option(in, b, &value, &is_number, &is_finite);
    CHECK(hk_buf_append_str(b, ", ") == 0);
  }
  static const struct {
    const char *key, *typical;
  } fields[] = {
      {"group", "hancock.test"}, {"for", "5m"}, {"severity", "warning"}, {"summary", "high {threshold}"},
      {"description", "more than {threshold} on {{ $labels.instance }}"}, {"runbook_url", "docs/monitoring.md#a"},
  };
  if (probe) {
    CHECK(hk_buf_append_str(b, "expr = \"{threshold}\", ") == 0);
  } else {
    size_t mark = b->len;
    CHECK(hk_buf_append_str(b, "expr = ") == 0);
    if (string_option(in, b, "rate(hancock_requests_total[5m]) > {threshold}")) CHECK(hk_buf_append_str(b, ", ") == 0);
    else b->len = mark, b->data[mark] = '\0';
  }
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
    size_t mark = b->len;
    CHECK(hk_buf_appendf(b, "[\"%s\"] = ", fields[i].key) == 0);
    if (probe) {
      /* Probes are valid definitions, bar the threshold (and without runbook_url, whose base
       * URL override may be invalid). */
      if (i < 5) {
        lua_cstring(b, fields[i].typical);
        CHECK(hk_buf_append_str(b, ", ") == 0);
      } else {
        b->len = mark;
        b->data[mark] = '\0';
      }
    } else if (string_option(in, b, fields[i].typical)) {
      CHECK(hk_buf_append_str(b, ", ") == 0);
    } else {
      b->len = mark;
      b->data[mark] = '\0';
    }
  }
  CHECK(hk_buf_append_str(b, "})\n") == 0);
  if (probe && is_number && is_finite && s->probe_count < MAX_ALERTS) {
    probe_t *p = &s->probes[s->probe_count++];
    snprintf(p->name, sizeof p->name, "%s", name);
    p->threshold = value;
  }
}

static void write_metric(input_t *in, script_t *s, unsigned index) {
  hk_buf_t *b = &s->text;
  unsigned shape = byte(in);
  static const char *const kinds[] = {"counter", "gauge", "histogram"};
  const char *kind = kinds[shape % 3];
  s->metric_count++;
  CHECK(hk_buf_appendf(b, "pcall(hk.metrics.%s, ", kind) == 0);
  if (shape & 0x08) {
    const uint8_t *raw;
    size_t len = bytes(in, 60, &raw);
    lua_string(b, raw, len);
  } else {
    char name[48];
    snprintf(name, sizeof name, "fuzz_%s_%u%s", kind, index, shape % 3 == 0 ? "_total" : "");
    lua_cstring(b, name);
  }
  CHECK(hk_buf_append_str(b, ", ") == 0);
  const uint8_t *help;
  size_t help_len = bytes(in, 255, &help);
  lua_string(b, help, help_len);
  CHECK(hk_buf_append_str(b, ", {") == 0);
  for (unsigned i = 0, labels = shape / 16 % 4; i < labels; i++) {
    if (byte(in) & 1) {
      const uint8_t *raw;
      size_t len = bytes(in, 20, &raw);
      lua_string(b, raw, len);
    } else {
      CHECK(hk_buf_appendf(b, "\"l%u\"", i) == 0);
    }
    CHECK(hk_buf_append_str(b, ", ") == 0);
  }
  CHECK(hk_buf_append_str(b, "}") == 0);
  if (shape % 3 == 2 && (shape & 0x40)) {
    CHECK(hk_buf_append_str(b, ", {") == 0);
    for (unsigned i = 0, count = byte(in) % 8; i < count; i++) {
      double v;
      bool is_number, is_finite;
      threshold_option(in, b, &v, &is_number, &is_finite);
      CHECK(hk_buf_append_str(b, ", ") == 0);
    }
    CHECK(hk_buf_append_str(b, "}") == 0);
  }
  CHECK(hk_buf_append_str(b, ")\n") == 0);
}

/* ---- checking the rules --------------------------------------------------------------------- */

static void fail(const char *what, const char *line, size_t len) {
  fprintf(stderr, "generator check failed: %s in line: %.*s\n", what, (int)(len > 300 ? 300 : len), line);
  abort();
}

/* Decodes one UTF-8 character; returns its length or 0 when invalid. */
static size_t utf8_char(const unsigned char *p, size_t n, unsigned *cp_out) {
  unsigned c = p[0];
  if (c < 0x80) return *cp_out = c, 1;
  size_t extra;
  unsigned min, cp;
  if (c >= 0xc2 && c <= 0xdf) extra = 1, min = 0x80, cp = c & 0x1f;
  else if (c >= 0xe0 && c <= 0xef) extra = 2, min = 0x800, cp = c & 0x0f;
  else if (c >= 0xf0 && c <= 0xf4) extra = 3, min = 0x10000, cp = c & 0x07;
  else return 0;
  if (n < extra + 1) return 0;
  for (size_t i = 1; i <= extra; i++) {
    if ((p[i] & 0xc0) != 0x80) return 0;
    cp = cp << 6 | (p[i] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  *cp_out = cp;
  return extra + 1;
}

/* YAML 1.2 c-printable, minus the characters YAML parsers treat as line breaks (NEL, LS, PS),
 * which would fold inside a double-quoted scalar, and the BOM: */
static bool yaml_plain_char(unsigned cp) {
  if (cp == 0x85 || cp == 0x2028 || cp == 0x2029 || cp == 0xfeff) return false;
  return (cp >= 0x20 && cp <= 0x7e) || (cp >= 0xa0 && cp <= 0xd7ff) || (cp >= 0xe000 && cp <= 0xfffd) ||
         (cp >= 0x10000 && cp <= 0x10ffff);
}

static int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* A YAML double-quoted scalar that must fill s[0..len) exactly; its value goes to out. */
static void yaml_quoted(const char *s, size_t len, hk_buf_t *out, const char *line, size_t line_len) {
  hk_buf_reset(out);
  if (len < 2 || s[0] != '"' || s[len - 1] != '"') fail("not a double-quoted scalar", line, line_len);
  const unsigned char *p = (const unsigned char *)s + 1, *end = (const unsigned char *)s + len - 1;
  while (p < end) {
    if (*p == '"') fail("unescaped quote", line, line_len);
    if (*p == '\\') {
      if (p + 1 >= end) fail("backslash at the end", line, line_len);
      char e = (char)p[1];
      const char *simple = e == '"' ? "\"" : e == '\\' ? "\\" : e == 'n' ? "\n" : e == 'r' ? "\r" : e == 't' ? "\t" : NULL;
      if (simple != NULL) {
        CHECK(hk_buf_append_char(out, simple[0]) == 0);
        p += 2;
        continue;
      }
      size_t digits = e == 'x' ? 2 : e == 'u' ? 4 : 0;
      if (digits == 0 || (size_t)(end - p) < 2 + digits) fail("escape rules.lua does not write", line, line_len);
      unsigned cp = 0;
      for (size_t i = 0; i < digits; i++) {
        int d = hex_digit((char)p[2 + i]);
        if (d < 0) fail("bad hex escape", line, line_len);
        cp = cp * 16 + (unsigned)d;
      }
      /* rules.lua writes \x for ASCII controls and \u for what must not be raw; a surrogate
       * escape would be no character at all. */
      if ((e == 'x' && cp >= 0x80) || (cp >= 0xd800 && cp <= 0xdfff)) fail("escape of the wrong range", line, line_len);
      char utf8[4];
      size_t n = 0;
      if (cp < 0x80) utf8[n++] = (char)cp;
      else if (cp < 0x800) utf8[n++] = (char)(0xc0 | cp >> 6), utf8[n++] = (char)(0x80 | (cp & 0x3f));
      else utf8[n++] = (char)(0xe0 | cp >> 12), utf8[n++] = (char)(0x80 | (cp >> 6 & 0x3f)), utf8[n++] = (char)(0x80 | (cp & 0x3f));
      CHECK(hk_buf_append(out, utf8, n) == 0);
      p += 2 + digits;
      continue;
    }
    unsigned cp;
    size_t n = utf8_char(p, (size_t)(end - p), &cp);
    if (n == 0) fail("invalid UTF-8 in a YAML scalar", line, line_len);
    if (!yaml_plain_char(cp)) fail("unprintable character left unescaped", line, line_len);
    CHECK(hk_buf_append(out, p, n) == 0);
    p += n;
  }
}

/* A PromQL number literal, as rules.lua writes a threshold: decimal, no Inf/NaN/hex. */
static bool promql_number(const char *s, size_t len, double *out) {
  size_t i = 0, digits = 0;
  if (i < len && s[i] == '-') i++;
  while (i < len && s[i] >= '0' && s[i] <= '9') i++, digits++;
  if (i < len && s[i] == '.') {
    i++;
    while (i < len && s[i] >= '0' && s[i] <= '9') i++, digits++;
  }
  if (digits == 0) return false;
  if (i < len && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < len && (s[i] == '+' || s[i] == '-')) i++;
    size_t exp = 0;
    while (i < len && s[i] >= '0' && s[i] <= '9') i++, exp++;
    if (exp == 0) return false;
  }
  if (i != len || len > 40) return false;
  char buf[48];
  memcpy(buf, s, len);
  buf[len] = '\0';
  *out = strtod(buf, NULL);
  return true;
}

static void check_rules(const char *text, const script_t *script) {
  size_t len = strlen(text);
  if (len == 0 || text[len - 1] != '\n') fail("rules do not end with a newline", text, len);
  /* The lines rules.lua writes, in order: a key, then a quoted scalar (or nothing). */
  static const struct {
    const char *prefix;
    bool scalar;
  } forms[] = {
      {"  - name: ", true},          {"    rules:", false},          {"      - alert: ", true},
      {"        expr: ", true},      {"        for: ", true},        {"        labels:", false},
      {"          severity: ", true}, {"        annotations:", false}, {"          summary: ", true},
      {"          description: ", true}, {"          runbook_url: ", true},
  };
  hk_buf_t value = HK_BUF_INIT, alert = HK_BUF_INIT;
  size_t line_no = 0, probes_seen = 0;
  bool empty = false;
  int last = -1;
  for (const char *s = text, *end = text + len; s < end; line_no++) {
    const char *nl = memchr(s, '\n', (size_t)(end - s));
    size_t n = (size_t)(nl - s);
    if (line_no < 2) {
      if (n < 2 || s[0] != '#') fail("header comment expected", s, n);
    } else if (line_no == 2) {
      if (n == 10 && memcmp(s, "groups: []", 10) == 0) empty = true;
      else if (!(n == 7 && memcmp(s, "groups:", 7) == 0)) fail("groups: expected", s, n);
    } else {
      if (empty) fail("lines after groups: []", s, n);
      int form = -1;
      for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        size_t pl = strlen(forms[i].prefix);
        if (n >= pl && memcmp(s, forms[i].prefix, pl) == 0 && (forms[i].scalar || n == pl)) {
          form = (int)i;
          break;
        }
      }
      if (form < 0) fail("a line rules.lua does not write", s, n);
      /* Order: name, rules, then per rule alert..description[, runbook_url]. */
      static const int after[] = {-2, 0, -3, 2, 3, 4, 5, 6, 7, 8, 9};
      bool ok;
      if (form == 0) ok = last == -1 || last == 9 || last == 10;
      else if (form == 2) ok = last == 1 || last == 9 || last == 10;
      else ok = last == after[form];
      if (!ok) fail("line out of order", s, n);
      last = form;
      if (forms[form].scalar) {
        size_t pl = strlen(forms[form].prefix);
        yaml_quoted(s + pl, n - pl, &value, s, n);
        if (form == 2) {
          hk_buf_reset(&alert);
          CHECK(hk_buf_append(&alert, value.data, value.len) == 0);
        }
        if (form == 3) {
          for (size_t i = 0; i < script->probe_count; i++) {
            const probe_t *p = &script->probes[i];
            if (alert.len != strlen(p->name) || memcmp(alert.data, p->name, alert.len) != 0) continue;
            double v;
            if (!promql_number(value.data, value.len, &v)) fail("threshold is not a PromQL number", s, n);
            if (!(v == p->threshold)) {
              fprintf(stderr, "threshold %.17g rendered as %s\n", p->threshold, value.data);
              abort();
            }
            probes_seen++;
          }
        }
      }
    }
    s = nl + 1;
  }
  if (!empty && !(last == 9 || last == 10)) fail("rules end mid-rule", text, len);
  /* Every valid probe is in the output (later definitions of other names cannot replace it). */
  if (probes_seen != script->probe_count) {
    fprintf(stderr, "%zu threshold probes defined, %zu rendered\n%s", script->probe_count, probes_seen, text);
    abort();
  }
  hk_buf_free(&value);
  hk_buf_free(&alert);
}

/* ---- checking the dashboard --------------------------------------------------------------- */

static lua_State *json_state(void) {
  static lua_State *L;
  if (L == NULL) {
    L = luaL_newstate();
    CHECK(L != NULL);
    hk_json_init(L);
  }
  return L;
}

static lua_Integer int_field(lua_State *L, int idx, const char *key) {
  lua_getfield(L, idx, key);
  if (!lua_isinteger(L, -1)) fail("panel field not an integer", key, strlen(key));
  lua_Integer v = lua_tointeger(L, -1);
  lua_pop(L, 1);
  return v;
}

static void check_dashboard(const char *text) {
  lua_State *L = json_state();
  char err[128];
  size_t len = strlen(text);
  if (hk_json_decode(L, text, len, err, sizeof err) != 0) {
    fprintf(stderr, "dashboard is not JSON: %s\n", err);
    abort();
  }
  CHECK(lua_istable(L, -1));
  lua_getfield(L, -1, "panels");
  CHECK(lua_istable(L, -1));
  lua_Integer count = (lua_Integer)lua_rawlen(L, -1);
  CHECK(count > 0);
  for (lua_Integer i = 1; i <= count; i++) {
    lua_rawgeti(L, -1, i);
    CHECK(lua_istable(L, -1));
    CHECK(int_field(L, -1, "id") == i);
    lua_getfield(L, -1, "title");
    CHECK(lua_type(L, -1) == LUA_TSTRING);
    lua_pop(L, 1);
    lua_getfield(L, -1, "gridPos");
    CHECK(lua_istable(L, -1));
    lua_Integer x = int_field(L, -1, "x"), w = int_field(L, -1, "w");
    CHECK(x >= 0 && w > 0 && x + w <= 24);
    lua_pop(L, 2);
  }
  lua_settop(L, 0);
  lua_gc(L, LUA_GCCOLLECT, 0);
}

/* ---- the target ------------------------------------------------------------------------------ */

static char scripts_dir[64];

static void setup(void) {
  hk_log_set_level(HK_LOG_ERROR);
  snprintf(scripts_dir, sizeof scripts_dir, "/tmp/hk-fuzz-generators-XXXXXX");
  CHECK(mkdtemp(scripts_dir) != NULL);
}

static void render(hk_lua_t *lua, const char *module, const script_t *script) {
  char *out = NULL, *err = NULL;
  int rc = hk_lua_render(lua, module, "render", &out, &err);
  if (rc != 0) {
    /* A clear error, never a crash: the operator's mistake is named. */
    CHECK(out == NULL);
    CHECK(err != NULL && err[0] != '\0');
  } else {
    CHECK(out != NULL && err == NULL);
    if (strcmp(module, "hancock.rules") == 0) check_rules(out, script);
    else check_dashboard(out);
  }
  free(out);
  free(err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (scripts_dir[0] == '\0') setup();
  input_t in = {data, size};
  script_t script = {HK_BUF_INIT, {{{0}, 0}}, 0, 0};

  /* The overrides rules.lua reads as it renders: unset, valid or odd. */
  static const char *const env_names[] = {"HANCOCK_RULES_FOR", "HANCOCK_RULES_WINDOW", "HANCOCK_RUNBOOK_BASE_URL"};
  static const char *const env_valid[] = {"1s", "10s", "https://runbooks.example.test/hancock/"};
  unsigned env = byte(&in);
  for (size_t i = 0; i < 3; i++) {
    unsigned kind = env >> (2 * i) & 3;
    if (kind == 0) {
      unsetenv(env_names[i]);
    } else if (kind == 1) {
      setenv(env_names[i], env_valid[i], 1);
    } else {
      const uint8_t *raw;
      size_t len = bytes(&in, 40, &raw);
      char value[48];
      size_t vl = 0;
      for (size_t j = 0; j < len; j++)
        if (raw[j] != '\0') value[vl++] = (char)raw[j];
      value[vl] = '\0';
      setenv(env_names[i], value, 1);
    }
  }

  CHECK(hk_buf_append_str(&script.text, "local hk = require \"hancock\"\n") == 0);
  for (unsigned i = 0; in.n > 0 && i < 64; i++) {
    if (byte(&in) % 4 == 0) write_metric(&in, &script, i);
    else write_alert(&in, &script, i);
  }

  char path[128];
  snprintf(path, sizeof path, "%s/fuzz.lua", scripts_dir);
  FILE *f = fopen(path, "wb");
  CHECK(f != NULL);
  CHECK(fwrite(script.text.data, 1, script.text.len, f) == script.text.len);
  CHECK(fclose(f) == 0);
  if (getenv("FUZZ_GENERATORS_DUMP") != NULL) fputs(script.text.data, stderr);

  /* As `hancock rules` loads the scripts (main.c: load_scripts_once). */
  hk_config_t cfg;
  char cfg_err[256];
  char *argv[] = {(char *)"hancock", (char *)"rules", (char *)"--scripts", scripts_dir, NULL};
  CHECK(hk_config_load(&cfg, 4, argv, 2, HK_CONFIG_FOR_SCRIPTS, cfg_err, sizeof cfg_err) == 0);
  hk_metrics_t *registry = NULL;
  hk_host_metrics_t host;
  char merr[256];
  CHECK(hk_metrics_new(4, &registry) == 0);
  CHECK(hk_host_metrics_init(&host, registry, 1, merr, sizeof merr) == 0);
  hk_lua_opts_t opts;
  hk_lua_opts_from_config(&opts, &cfg, registry, 0);
  hk_lua_t *lua = NULL;
  char *err = NULL;
  int rc = hk_lua_new_opts(&opts, &lua, &err);
  if (rc != 0) {
    CHECK(err != NULL && err[0] != '\0');
    /* A failed definition is a script error at a line of the script. */
    CHECK(strstr(err, "fuzz.lua") != NULL || strstr(err, "hk.alert") != NULL || strstr(err, "memory") != NULL);
    free(err);
    script.probe_count = 0;
  } else {
    free(err);
    render(lua, "hancock.rules", &script);
    /* The dashboard only changes with the script's metrics (and is the slow half). */
    if (script.metric_count > 0 || (env & 0x40)) render(lua, "hancock.dashboard", &script);
    hk_lua_free(lua);
  }
  hk_metrics_free(registry);
  hk_buf_free(&script.text);
  return 0;
}
