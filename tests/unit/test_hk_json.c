/* Unit tests for hk_json: escaping, decoding and encoding, through the C API and the Lua module
 * (loaded as the global `json` in a fresh state per case). */
#include <errno.h>
#include <math.h>
#include <stdint.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "hk_json.h"
#include "hk_test.h"

/* ---- helpers -------------------------------------------------------------------------------- */

static lua_State *new_state(void) {
  lua_State *L = luaL_newstate();
  HK_ASSERT(L != NULL);
  luaL_openlibs(L);
  hk_json_open(L);
  lua_setglobal(L, "json");
  return L;
}

static void close_state(lua_State *L) {
  HK_ASSERT_INT_EQ(lua_gettop(L), 0);
  lua_close(L);
}

/* Runs a Lua chunk that uses assert(); a failure prints the Lua message. */
#define RUN_LUA(L, code)                                                          \
  do {                                                                            \
    if (luaL_dostring((L), (code)) != LUA_OK)                                     \
      HK_FAIL_("lua: %s", lua_tostring((L), -1));                                 \
    lua_settop((L), 0);                                                           \
  } while (0)

/* Decodes text (len bytes) and encodes the result; checks the output. */
static void check_round_trip_len(const char *text, size_t len, const char *expected) {
  lua_State *L = new_state();
  char err[128] = "";
  hk_buf_t buf = HK_BUF_INIT;
  int rc = hk_json_decode(L, text, len, err, sizeof err);
  if (rc != 0) HK_FAIL_("decode %s: %s", text, err);
  HK_ASSERT_INT_EQ(lua_gettop(L), 1);
  rc = hk_json_encode(L, -1, &buf, err, sizeof err);
  if (rc != 0) HK_FAIL_("encode %s: %s", text, err);
  HK_ASSERT_INT_EQ(lua_gettop(L), 1);
  HK_ASSERT_MEM_EQ(buf.data, buf.len, expected, strlen(expected));
  lua_pop(L, 1);
  hk_buf_free(&buf);
  close_state(L);
}

static void check_round_trip(const char *text, const char *expected) {
  check_round_trip_len(text, strlen(text), expected);
}

/* Decoding must fail with a message containing `message`; nothing is pushed. */
static void check_decode_error_len(const char *text, size_t len, const char *message) {
  lua_State *L = new_state();
  char err[128] = "";
  lua_pushinteger(L, 42); /* a sentinel: the stack below must be left alone */
  int rc = hk_json_decode(L, text, len, err, sizeof err);
  if (rc == 0) HK_FAIL_("decoding \"%.*s\" should fail with \"%s\"", (int)len, text, message);
  HK_ASSERT_INT_EQ(rc, -EINVAL);
  HK_ASSERT_INT_EQ(lua_gettop(L), 1);
  HK_ASSERT_INT_EQ(lua_tointeger(L, 1), 42);
  if (strstr(err, message) == NULL)
    HK_FAIL_("decoding \"%.*s\": error \"%s\" lacks \"%s\"", (int)len, text, err, message);
  lua_pop(L, 1);
  close_state(L);
}

static void check_decode_error(const char *text, const char *message) {
  check_decode_error_len(text, strlen(text), message);
}

static void check_escape(const char *in, size_t len, int flags, const char *expected) {
  hk_buf_t buf = HK_BUF_INIT;
  HK_ASSERT_INT_EQ(hk_json_append_string(&buf, in, len, flags), 0);
  HK_ASSERT_MEM_EQ(buf.data, buf.len, expected, strlen(expected));
  hk_buf_free(&buf);
}

/* Encodes the value the Lua expression evaluates to; expects failure with `message`. */
static void check_encode_error(const char *expr, const char *message) {
  lua_State *L = new_state();
  char code[512], err[128] = "";
  hk_buf_t buf = HK_BUF_INIT;
  snprintf(code, sizeof code, "return %s", expr);
  if (luaL_dostring(L, code) != LUA_OK) HK_FAIL_("lua: %s", lua_tostring(L, -1));
  HK_ASSERT_INT_EQ(hk_buf_append_str(&buf, "prefix"), 0);
  int top = lua_gettop(L);
  int rc = hk_json_encode(L, -1, &buf, err, sizeof err);
  if (rc == 0) HK_FAIL_("encoding %s should fail, gave %s", expr, buf.data);
  HK_ASSERT_INT_EQ(rc, -EINVAL);
  HK_ASSERT_INT_EQ(lua_gettop(L), top);
  HK_ASSERT_STR_EQ(buf.data, "prefix"); /* the partial encoding was taken back */
  if (strstr(err, message) == NULL) HK_FAIL_("encoding %s: error \"%s\" lacks \"%s\"", expr, err, message);
  lua_settop(L, 0);
  hk_buf_free(&buf);
  close_state(L);
}

static char *nested(const char *open, const char *close, int depth) {
  size_t olen = strlen(open), clen = strlen(close);
  char *s = malloc((size_t)depth * (olen + clen) + 1), *p = s;
  HK_ASSERT(s != NULL);
  for (int i = 0; i < depth; i++, p += olen) memcpy(p, open, olen);
  for (int i = 0; i < depth; i++, p += clen) memcpy(p, close, clen);
  *p = '\0';
  return s;
}

/* ---- null, arrays and objects --------------------------------------------------------------- */

HK_TEST(null_round_trip) {
  check_round_trip("null", "null");
  check_round_trip("[null,1,null]", "[null,1,null]");
  check_round_trip("{\"a\":null}", "{\"a\":null}");
  lua_State *L = new_state();
  RUN_LUA(L, "local v = json.decode('null')\n"
             "assert(v == json.null and type(v) == 'userdata')\n"
             "local t = json.decode('{\"a\":null,\"b\":[null]}')\n"
             "assert(t.a == json.null and t.b[1] == json.null and #t.b == 1)\n"
             "assert(json.encode(json.null) == 'null')\n"
             "assert(json.encode({x = json.null}) == '{\"x\":null}')\n"
             "assert(json.encode(nil) == 'null')");
  close_state(L);
}

HK_TEST(empty_array_and_object_round_trip) {
  check_round_trip("[]", "[]");
  check_round_trip("{}", "{}");
  check_round_trip("[[],{},[{}],{\"a\":[]}]", "[[],{},[{}],{\"a\":[]}]");
  lua_State *L = new_state();
  RUN_LUA(L, "assert(json.encode({}) == '{}')\n"
             "assert(json.encode(json.array()) == '[]')\n"
             "assert(json.encode(json.array({})) == '[]')\n"
             "local a, o = json.decode('[]'), json.decode('{}')\n"
             "assert(json.is_array(a) and not json.is_array(o))\n"
             "assert(json.encode(a) == '[]' and json.encode(o) == '{}')\n"
             "assert(json.encode(json.decode(json.encode(a))) == '[]')\n"
             "assert(json.encode(json.decode(json.encode(o))) == '{}')");
  close_state(L);
}

HK_TEST(nested_values_round_trip) {
  check_round_trip("{\"users\":[{\"name\":\"ann\",\"tags\":[\"a\",\"b\"],\"age\":31,\"ok\":true},"
                   "{\"name\":\"bob\",\"tags\":[],\"age\":null,\"ok\":false}],\"n\":{\"m\":{\"k\":[[1],[2,[3]]]}}}",
                   "{\"n\":{\"m\":{\"k\":[[1],[2,[3]]]}},\"users\":[{\"age\":31,\"name\":\"ann\",\"ok\":true,"
                   "\"tags\":[\"a\",\"b\"]},{\"age\":null,\"name\":\"bob\",\"ok\":false,\"tags\":[]}]}");
  lua_State *L = new_state();
  RUN_LUA(L, "local t = json.decode('{\"a\":[1,{\"b\":[true,false]}],\"c\":\"d\"}')\n"
             "assert(t.a[1] == 1 and t.a[2].b[1] == true and t.a[2].b[2] == false and t.c == 'd')\n"
             "assert(json.is_array(t.a) and not json.is_array(t.a[2]))");
  close_state(L);
}

HK_TEST(object_keys_sorted) {
  /* Byte order, a prefix before its extensions, and more keys than the inline key array. */
  check_round_trip("{\"b\":1,\"a\":2,\"ab\":3,\"\":4,\"B\":5}", "{\"\":4,\"B\":5,\"a\":2,\"ab\":3,\"b\":1}");
  lua_State *L = new_state();
  RUN_LUA(L, "local t, keys = {}, {}\n"
             "for i = 1, 300 do local k = string.format('k%03d', 301 - i); t[k] = {[k] = i}; keys[#keys + 1] = k end\n"
             "table.sort(keys)\n"
             "local parts = {}\n"
             "for _, k in ipairs(keys) do parts[#parts + 1] = string.format('\"%s\":{\"%s\":%d}', k, k, t[k][k]) end\n"
             "assert(json.encode(t) == '{' .. table.concat(parts, ',') .. '}')");
  close_state(L);
}

HK_TEST(duplicate_keys_last_wins) {
  check_round_trip("{\"a\":1,\"a\":2}", "{\"a\":2}");
}

HK_TEST(plain_sequence_encodes_as_array) {
  lua_State *L = new_state();
  RUN_LUA(L, "assert(json.encode({1, 2, 'x'}) == '[1,2,\"x\"]')\n"
             "assert(json.encode({[1] = 'a', [2] = 'b'}) == '[\"a\",\"b\"]')\n"
             "assert(json.encode({a = {true}}) == '{\"a\":[true]}')");
  close_state(L);
}

/* ---- numbers -------------------------------------------------------------------------------- */

HK_TEST(integers_exact) {
  check_round_trip("[0,-0,1,-1,9007199254740993,9223372036854775807,-9223372036854775808]",
                   "[0,0,1,-1,9007199254740993,9223372036854775807,-9223372036854775808]");
  lua_State *L = new_state();
  RUN_LUA(L, "local t = json.decode('{\"n\": 9007199254740993}')\n"
             "assert(math.type(t.n) == 'integer' and t.n == 9007199254740993)\n"
             "assert(json.decode('9223372036854775807') == math.maxinteger)\n"
             "assert(json.decode('-9223372036854775808') == math.mininteger)\n"
             "assert(math.type(json.decode('-9223372036854775808')) == 'integer')\n"
             /* beyond 64 bits: a float */
             "assert(math.type(json.decode('9223372036854775808')) == 'float')\n"
             "assert(json.decode('9223372036854775808') == 2^63)\n"
             "assert(math.type(json.decode('-9223372036854775809')) == 'float')\n"
             "assert(math.type(json.decode('123456789012345678901234567890')) == 'float')\n"
             "assert(json.encode(math.maxinteger) == '9223372036854775807')\n"
             "assert(json.encode(math.mininteger) == '-9223372036854775808')");
  close_state(L);
}

HK_TEST(floats_round_trip) {
  check_round_trip("[0.1,1.5,1e300,-0.0,1e3,2.5e-3,5e-324,1.7976931348623157e308]",
                   "[0.1,1.5,1e+300,-0.0,1000.0,0.0025,4.9406564584125e-324,1.7976931348623157e+308]");
  lua_State *L = new_state();
  RUN_LUA(L, "assert(math.type(json.decode('1.5')) == 'float' and json.decode('1.5') == 1.5)\n"
             "local k = json.decode('1e3'); assert(math.type(k) == 'float' and k == 1000.0)\n"
             "assert(json.decode('0.1') == 0.1 and json.decode('1E+2') == 100.0)\n"
             "local z = json.decode('-0.0'); assert(math.type(z) == 'float' and 1 / z == -math.huge)\n"
             "assert(json.encode(-0.0) == '-0.0')\n"
             "assert(json.encode(1000.0) == '1000.0' and math.type(json.decode(json.encode(1000.0))) == 'float')\n"
             "assert(json.encode(0.1) == '0.1' and json.encode(1/3) == '0.3333333333333333')\n"
             "for _, x in ipairs({0.1, 1/3, math.pi, 1e300, -2.5e-8, 2^53 + 0.0, 1e22, 123456.789}) do\n"
             "  assert(json.decode(json.encode(x)) == x, x)\n"
             "end\n"
             "assert(json.decode('1e-400') == 0.0)");
  close_state(L);
  check_decode_error("1e400", "at byte 0: number out of range");
  check_decode_error("[-1e999]", "at byte 1: number out of range");
}

HK_TEST(long_number_text) {
  /* More digits than the on-stack copy holds: goes through a Lua string. */
  char text[152]; /* "0." then 148 zeros then "5": 5e-149 */
  memset(text, '0', sizeof text);
  text[1] = '.';
  text[sizeof text - 2] = '5';
  text[sizeof text - 1] = '\0';
  lua_State *L = new_state();
  char err[128];
  HK_ASSERT_INT_EQ(hk_json_decode(L, text, strlen(text), err, sizeof err), 0);
  HK_ASSERT(!lua_isinteger(L, -1));
  HK_ASSERT(lua_tonumber(L, -1) == 5e-149);
  lua_pop(L, 1);
  close_state(L);
}

HK_TEST(nan_and_inf_rejected) {
  check_encode_error("0/0", "cannot encode NaN");
  check_encode_error("{x = {math.huge}}", "cannot encode inf");
  check_encode_error("-math.huge", "cannot encode inf");
  check_decode_error("NaN", "at byte 0: unexpected character");
  check_decode_error("[Infinity]", "at byte 1: unexpected character");
  check_decode_error("-Infinity", "at byte 0: invalid number");
}

/* ---- strings -------------------------------------------------------------------------------- */

HK_TEST(string_escapes_decode) {
  lua_State *L = new_state();
  RUN_LUA(L, "local s = json.decode([[\"a\\\"b\\\\c\\/d\\be\\ff\\ng\\rh\\ti\"]])\n"
             "assert(s == 'a\"b\\\\c/d\\be\\ff\\ng\\rh\\ti', s)\n"
             "assert(json.decode([[\"\\u00e9\\u00E9\"]]) == '\\xC3\\xA9\\xC3\\xA9')\n"
             "assert(json.decode([[\"\\ud83d\\ude00\"]]) == '\\xF0\\x9F\\x98\\x80')\n"
             "assert(json.decode([[\"\\uD83D\\uDE00x\"]]) == '\\xF0\\x9F\\x98\\x80x')\n"
             "assert(json.decode([[\"\\u20ac\"]]) == '\\xE2\\x82\\xAC')\n"
             "assert(json.decode([[\"a\\u0000b\"]]) == 'a\\0b')\n"
             "assert(json.decode('\"\\xC3\\xA9\\xF0\\x9F\\x98\\x80\"') == '\\xC3\\xA9\\xF0\\x9F\\x98\\x80')\n"
             "assert(json.decode('\"\\x7f\"') == '\\x7f')\n"
             "assert(json.decode('\"\"') == '')");
  close_state(L);
  /* Decoded escapes re-encode in the canonical form. */
  check_round_trip("\"\\u0041\\/\\u00e9\\ud83d\\ude00\\u001f\\u007f\\u0000\"",
                   "\"A/\xC3\xA9\xF0\x9F\x98\x80\\u001f\\u007f\\u0000\"");
}

/* Decision: a \u escape naming a lone surrogate is an error (not U+FFFD), like invalid UTF-8
 * in the raw text, so every decoded string is valid UTF-8 and nothing is silently changed. */
HK_TEST(lone_surrogate_escapes_rejected) {
  check_decode_error("\"\\ud800\"", "at byte 1: lone surrogate");
  check_decode_error("\"ab\\udc00\"", "at byte 3: lone surrogate");
  check_decode_error("\"\\ud800\\u0041\"", "at byte 1: lone surrogate");
  check_decode_error("\"\\ud800x\"", "at byte 1: lone surrogate");
  check_decode_error("\"\\ud800\\ud800\"", "at byte 1: lone surrogate");
  check_decode_error("\"\\ude00\\ud83d\"", "at byte 1: lone surrogate");
  check_decode_error("\"\\ud800\\", "at byte 1: lone surrogate");
}

HK_TEST(invalid_strings_rejected) {
  check_decode_error("\"abc", "at byte 0: unterminated string");
  check_decode_error("\"abc\\", "at byte 0: unterminated string");
  check_decode_error("\"a\\x\"", "at byte 2: invalid escape");
  check_decode_error("\"a\\u12\"", "at byte 2: invalid \\u escape");
  check_decode_error("\"a\\u12g4\"", "at byte 2: invalid \\u escape");
  check_decode_error("\"a\tb\"", "at byte 2: control character in string");
  check_decode_error("\"a\nb\"", "at byte 2: control character in string");
  check_decode_error_len("\"a\0b\"", 5, "at byte 2: control character in string");
  check_decode_error("'a'", "at byte 0: unexpected character");
}

HK_TEST(invalid_utf8_input_rejected_with_offset) {
  check_decode_error("\"ab\xff\"", "at byte 3: invalid UTF-8");
  check_decode_error("\"\xC0\x80\"", "at byte 1: invalid UTF-8");             /* overlong NUL */
  check_decode_error("\"\xC1\xBF\"", "at byte 1: invalid UTF-8");             /* overlong */
  check_decode_error("\"\xE0\x80\xAF\"", "at byte 1: invalid UTF-8");         /* overlong '/' */
  check_decode_error("\"\xF0\x8F\xBF\xBF\"", "at byte 1: invalid UTF-8");     /* overlong */
  check_decode_error("\"x\xED\xA0\x80\"", "at byte 2: invalid UTF-8");        /* U+D800 */
  check_decode_error("\"\xED\xBF\xBF\"", "at byte 1: invalid UTF-8");         /* U+DFFF */
  check_decode_error("\"\xF4\x90\x80\x80\"", "at byte 1: invalid UTF-8");     /* U+110000 */
  check_decode_error("\"\xF5\x80\x80\x80\"", "at byte 1: invalid UTF-8");
  check_decode_error("\"\xE2\x82\"", "at byte 1: invalid UTF-8");             /* truncated */
  check_decode_error("\"\xE2\x82", "at byte 1: invalid UTF-8");               /* truncated at end */
  check_decode_error("\"\x80\"", "at byte 1: invalid UTF-8");                 /* lone continuation */
  check_decode_error("[1,\xff]", "at byte 3: invalid UTF-8");                 /* outside a string */
  check_decode_error("{\"k\":\"v\",\"\xfe\":1}", "at byte 10: invalid UTF-8"); /* in a key */
  /* Valid UTF-8 outside a string is a syntax error, not a UTF-8 one; a BOM is not skipped. */
  check_decode_error("\xC3\xA9", "at byte 0: unexpected character");
  check_decode_error("\xEF\xBB\xBF{}", "at byte 0: unexpected character");
  /* The boundaries that are valid. */
  check_round_trip("\"\xED\x9F\xBF\xEE\x80\x80\xF4\x8F\xBF\xBF\xF0\x90\x80\x80\xC2\x80\xDF\xBF\"",
                   "\"\xED\x9F\xBF\xEE\x80\x80\xF4\x8F\xBF\xBF\xF0\x90\x80\x80\xC2\x80\xDF\xBF\"");
}

HK_TEST(invalid_utf8_replaced_on_encode) {
  /* One U+FFFD per maximal invalid subpart (Unicode's recommended practice). */
  check_escape("a\xff" "b", 3, 0, "\"a\xEF\xBF\xBD" "b\"");
  check_escape("\xE2\x82" "A", 3, 0, "\"\xEF\xBF\xBD" "A\"");
  check_escape("\xE2\x82", 2, 0, "\"\xEF\xBF\xBD\"");
  check_escape("\xED\xA0\x80", 3, 0, "\"\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\"");
  check_escape("\xC0\x80", 2, 0, "\"\xEF\xBF\xBD\xEF\xBF\xBD\"");
  check_escape("\xF4\x90\x80\x80", 4, 0, "\"\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\"");
  check_escape("\xF0\x9F\x98", 3, 0, "\"\xEF\xBF\xBD\"");
  check_escape("\xC3\xA9\xF0\x9F\x98\x80", 6, 0, "\"\xC3\xA9\xF0\x9F\x98\x80\"");
  /* Through the Lua encoder: the output is valid UTF-8 and decodes again. */
  lua_State *L = new_state();
  RUN_LUA(L, "local s = json.encode({['k\\xff'] = 'v\\xC3'})\n"
             "assert(s == '{\"k\\xEF\\xBF\\xBD\":\"v\\xEF\\xBF\\xBD\"}', s)\n"
             "assert(json.decode(s)['k\\xEF\\xBF\\xBD'] == 'v\\xEF\\xBF\\xBD')");
  close_state(L);
}

HK_TEST(control_characters_escaped) {
  check_escape("\"\\/", 3, 0, "\"\\\"\\\\/\"");
  check_escape("\n\r\t\b\f", 5, 0, "\"\\n\\r\\t\\b\\f\"");
  check_escape("\x01\x1f\x7f", 3, 0, "\"\\u0001\\u001f\\u007f\"");
  check_escape("a\0b", 3, 0, "\"a\\u0000b\"");
  check_escape("", 0, 0, "\"\"");
  /* every byte below 0x20 comes out escaped and decodes back */
  char all[32];
  for (int i = 0; i < 32; i++) all[i] = (char)i;
  hk_buf_t buf = HK_BUF_INIT;
  HK_ASSERT_INT_EQ(hk_json_append_string(&buf, all, sizeof all, 0), 0);
  for (size_t i = 0; i < buf.len; i++) HK_ASSERT((unsigned char)buf.data[i] >= 0x20);
  lua_State *L = new_state();
  char err[128];
  HK_ASSERT_INT_EQ(hk_json_decode(L, buf.data, buf.len, err, sizeof err), 0);
  size_t len;
  const char *s = lua_tolstring(L, -1, &len);
  HK_ASSERT_MEM_EQ(s, len, all, sizeof all);
  lua_pop(L, 1);
  close_state(L);
  hk_buf_free(&buf);
}

HK_TEST(ascii_mode_escapes_everything_else) {
  check_escape("plain text ~", 12, HK_JSON_ASCII, "\"plain text ~\"");
  check_escape("\xC3\xA9", 2, HK_JSON_ASCII, "\"\\u00e9\"");
  check_escape("\xE2\x82\xAC", 3, HK_JSON_ASCII, "\"\\u20ac\"");
  check_escape("\xF0\x9F\x98\x80", 4, HK_JSON_ASCII, "\"\\ud83d\\ude00\"");
  check_escape("\xF4\x8F\xBF\xBF", 4, HK_JSON_ASCII, "\"\\udbff\\udfff\"");
  check_escape("\x7f\n\x01\"", 4, HK_JSON_ASCII, "\"\\u007f\\n\\u0001\\\"\"");
  check_escape("a\xff" "b\xE2\x82", 5, HK_JSON_ASCII, "\"a\\ufffdb\\ufffd\"");
  /* appends after what is already in the buffer */
  hk_buf_t buf = HK_BUF_INIT;
  HK_ASSERT_INT_EQ(hk_buf_append_str(&buf, "msg="), 0);
  HK_ASSERT_INT_EQ(hk_json_append_string(&buf, "\xC3\xA9", 2, HK_JSON_ASCII), 0);
  HK_ASSERT_STR_EQ(buf.data, "msg=\"\\u00e9\"");
  hk_buf_free(&buf);
}

/* ---- syntax --------------------------------------------------------------------------------- */

HK_TEST(trailing_garbage_rejected) {
  check_decode_error("{} x", "at byte 3: unexpected data after the value");
  check_decode_error("[1] ]", "at byte 4: unexpected data after the value");
  check_decode_error("1 2", "at byte 2: unexpected data after the value");
  check_decode_error("nulls", "at byte 4: unexpected data after the value");
  check_decode_error_len("{}\0", 3, "at byte 2: unexpected data after the value");
}

HK_TEST(empty_input_rejected) {
  check_decode_error("", "at byte 0: unexpected end of input");
  check_decode_error(" \t\r\n", "at byte 4: unexpected end of input");
  lua_State *L = new_state();
  RUN_LUA(L, "local v, err = json.decode('')\n"
             "assert(v == nil and err == 'invalid JSON at byte 0: unexpected end of input', err)\n"
             "assert(not pcall(json.decode, 42))\n"
             "assert(not pcall(json.decode))");
  close_state(L);
}

HK_TEST(surrounding_whitespace_accepted) {
  check_round_trip(" \t\r\n{ \"a\" : [ 1 , 2 ] ,\n\"b\"\t:\r{ } }\n ", "{\"a\":[1,2],\"b\":{}}");
  check_round_trip("  7  ", "7");
  check_round_trip("[ ]", "[]");
}

HK_TEST(syntax_errors_rejected) {
  check_decode_error("01", "at byte 1: unexpected data after the value");
  check_decode_error("[01]", "at byte 2: expected ',' or ']'");
  check_decode_error("1.", "at byte 0: invalid number");
  check_decode_error(".5", "at byte 0: unexpected character");
  check_decode_error("+1", "at byte 0: unexpected character");
  check_decode_error("-", "at byte 0: invalid number");
  check_decode_error("1e", "at byte 0: invalid number");
  check_decode_error("1e+", "at byte 0: invalid number");
  check_decode_error("tru", "at byte 0: unexpected character");
  check_decode_error("True", "at byte 0: unexpected character");
  check_decode_error("[1,]", "at byte 3: unexpected character");
  check_decode_error("[1 2]", "at byte 3: expected ',' or ']'");
  check_decode_error("{\"a\":1,}", "at byte 7: expected a string key");
  check_decode_error("{a:1}", "at byte 1: expected a string key");
  check_decode_error("{\"a\" 1}", "at byte 5: expected ':'");
  check_decode_error("{\"a\":1 \"b\":2}", "at byte 7: expected ',' or '}'");
  check_decode_error("[1,2", "at byte 4: unexpected end of input");
  check_decode_error("{\"a\":", "at byte 5: unexpected end of input");
  check_decode_error("[", "at byte 1: unexpected end of input");
  check_decode_error("{", "at byte 1: unexpected end of input");
  check_decode_error("]", "at byte 0: unexpected character");
  check_decode_error("\v1", "at byte 0: unexpected character"); /* not JSON whitespace */
}

/* ---- limits --------------------------------------------------------------------------------- */

HK_TEST(decode_depth_limit) {
  char *ok = nested("[", "]", HK_JSON_MAX_DEPTH);
  char *deep = nested("[", "]", HK_JSON_MAX_DEPTH + 1);
  char *deep_objects = nested("{\"a\":", "}", HK_JSON_MAX_DEPTH + 1);
  check_round_trip(ok, ok);
  check_decode_error(deep, "at byte 128: nesting deeper than 128 levels");
  check_decode_error(deep_objects, "at byte 640: nesting deeper than 128 levels");
  free(ok);
  free(deep);
  free(deep_objects);
  /* Far deeper input fails the same way instead of exhausting the C stack. */
  char *very_deep = nested("[", "]", 100000);
  check_decode_error(very_deep, "nesting deeper than 128 levels");
  free(very_deep);
}

HK_TEST(encode_depth_limit) {
  lua_State *L = new_state();
  RUN_LUA(L, "local function nest(n) local t = json.array() for _ = 2, n do t = json.array({t}) end return t end\n"
             "assert(json.encode(nest(128)) == string.rep('[', 128) .. string.rep(']', 128))\n"
             "local ok, err = pcall(json.encode, nest(129))\n"
             "assert(not ok and err:find('deeper than 128', 1, true), err)\n"
             "local o = {} for _ = 2, 129 do o = {a = o} end\n"
             "ok, err = pcall(json.encode, o)\n"
             "assert(not ok and err:find('deeper than 128', 1, true), err)");
  close_state(L);
  /* Cycles end at the depth limit: an error, not a crash. */
  check_encode_error("(function() local t = {} t.self = t return t end)()", "or a cycle");
  check_encode_error("(function() local t = json.array() t[1] = t return t end)()", "or a cycle");
  check_encode_error("(function() local a, b = {}, {} a.b = b b[1] = a return a end)()", "or a cycle");
}

HK_TEST(large_document) {
  const int count = 100000;
  hk_buf_t text = HK_BUF_INIT;
  HK_ASSERT_INT_EQ(hk_buf_append_char(&text, '['), 0);
  for (int i = 0; i < count; i++) HK_ASSERT_INT_EQ(hk_buf_appendf(&text, i ? ",%d" : "%d", i * 7 - 3), 0);
  HK_ASSERT_INT_EQ(hk_buf_append_char(&text, ']'), 0);
  check_round_trip_len(text.data, text.len, text.data);
  lua_State *L = new_state();
  char err[128];
  HK_ASSERT_INT_EQ(hk_json_decode(L, text.data, text.len, err, sizeof err), 0);
  HK_ASSERT_INT_EQ(lua_rawlen(L, -1), count);
  lua_rawgeti(L, -1, count);
  HK_ASSERT_INT_EQ(lua_tointeger(L, -1), (count - 1) * 7 - 3);
  lua_pop(L, 2);
  /* A wide object and a long string. */
  RUN_LUA(L, "local t = {} for i = 1, 50000 do t['key' .. i] = {i, tostring(i)} end\n"
             "local s = json.encode(t)\n"
             "local back = json.decode(s)\n"
             "assert(back.key777[1] == 777 and back.key50000[2] == '50000')\n"
             "assert(json.encode(back) == s)\n"
             "local long = string.rep('ab\"\\n\\xC3\\xA9', 200000)\n"
             "assert(json.decode(json.encode(long)) == long)");
  close_state(L);
  hk_buf_free(&text);
}

/* ---- values that cannot be encoded ---------------------------------------------------------- */

HK_TEST(unencodable_values_rejected) {
  check_encode_error("print", "cannot encode a function");
  check_encode_error("{f = function() end}", "cannot encode a function");
  check_encode_error("coroutine.create(print)", "cannot encode a thread");
  check_encode_error("io.stdout", "cannot encode a userdata");
  lua_State *L = new_state();
  char err[128];
  hk_buf_t buf = HK_BUF_INIT;
  lua_pushlightuserdata(L, &buf); /* only the NULL light userdata is null */
  HK_ASSERT_INT_EQ(hk_json_encode(L, -1, &buf, err, sizeof err), -EINVAL);
  HK_ASSERT_STR_EQ(err, "cannot encode a userdata");
  HK_ASSERT_INT_EQ(buf.len, 0);
  lua_pop(L, 1);
  RUN_LUA(L, "local ok, err = pcall(json.encode, {1, print})\n"
             "assert(not ok and err == 'cannot encode a function', err)\n"
             "assert(not pcall(json.encode))");
  close_state(L);
  hk_buf_free(&buf);
}

HK_TEST(mixed_key_tables_rejected) {
  const char *message = "cannot encode table with mixed or non-string keys";
  check_encode_error("{1, 2, x = 3}", message);
  check_encode_error("{x = 3, [1] = 1}", message);
  check_encode_error("{[true] = 1}", message);
  check_encode_error("{[1.5] = 1}", message);
  check_encode_error("{[0] = 1}", message);
  check_encode_error("{[-1] = 1}", message);
  check_encode_error("{[1] = 1, [3] = 3}", message); /* sparse */
  check_encode_error("{[{}] = 1}", message);
  check_encode_error("{a = {b = {[2] = 1}}}", message);
}

/* ---- the Lua module ------------------------------------------------------------------------- */

HK_TEST(lua_module_api) {
  lua_State *L = new_state();
  RUN_LUA(L, "local t = {}\n"
             "assert(json.array(t) == t and json.is_array(t))\n"
             "assert(json.is_array(json.array()) and next(json.array()) == nil)\n"
             "assert(json.array(nil) ~= nil and json.is_array(json.array(nil)))\n"
             "assert(json.array(t) == t)\n" /* idempotent */
             "assert(not json.is_array({}) and not json.is_array('x') and not json.is_array())\n"
             "assert(not json.is_array(setmetatable({}, {})))\n"
             "assert(not pcall(json.array, 'x'))\n"
             "local ok, err = pcall(json.array, setmetatable({}, {}))\n"
             "assert(not ok and err:find('already has a metatable', 1, true), err)\n"
             "local v, msg = json.decode('[1,')\n"
             "assert(v == nil and msg == 'invalid JSON at byte 3: unexpected end of input', msg)\n"
             "assert(json.encode(json.array({1, 2, nil, 4})) == '[1,2,null,4]' or\n"
             "       json.encode(json.array({1, 2, nil, 4})) == '[1,2]')\n"
             "assert(json.encode('x') == '\"x\"' and json.encode(true) == 'true' and json.encode(12) == '12')\n"
             "assert(json.encode(json.array({'a', 'b'})) == '[\"a\",\"b\"]')\n"
             /* a marked array ignores non-sequence keys */
             "local a = json.array({1}) a.name = 'x' assert(json.encode(a) == '[1]')\n"
             "assert(json.decode('\"s\"') == 's' and json.decode('false') == false)");
  close_state(L);
}

HK_TEST(encode_ignores_metamethods) {
  lua_State *L = new_state();
  RUN_LUA(L, "local boom = function() error('metamethod called') end\n"
             "local mt = {__index = boom, __newindex = boom, __len = boom, __pairs = boom,\n"
             "            __tostring = boom, __eq = boom, __lt = boom, __le = boom}\n"
             "local t = setmetatable({b = 2, a = 1}, mt)\n"
             "assert(json.encode(t) == '{\"a\":1,\"b\":2}')\n"
             "local s = setmetatable({10, 20}, mt)\n"
             "assert(json.encode(s) == '[10,20]')\n"
             "assert(json.encode(setmetatable({}, mt)) == '{}')\n"
             /* a marked array's length is the raw length, not __len */
             "local a = json.array({1, 2, 3})\n"
             "getmetatable(a).__len = boom\n"
             "getmetatable(a).__index = boom\n"
             "assert(json.encode(a) == '[1,2,3]')");
  close_state(L);
}

HK_TEST(c_api_keeps_stack_and_buffer) {
  lua_State *L = new_state();
  hk_buf_t buf = HK_BUF_INIT;
  char err[128];
  HK_ASSERT_INT_EQ(hk_buf_append_str(&buf, "x="), 0);
  lua_pushinteger(L, 1);
  lua_newtable(L);
  lua_pushstring(L, "v");
  lua_setfield(L, -2, "k");
  lua_pushinteger(L, 3);
  HK_ASSERT_INT_EQ(hk_json_encode(L, -2, &buf, err, sizeof err), 0);
  HK_ASSERT_STR_EQ(buf.data, "x={\"k\":\"v\"}");
  HK_ASSERT_INT_EQ(lua_gettop(L), 3);
  HK_ASSERT_INT_EQ(hk_json_decode(L, "[true]", 6, err, sizeof err), 0);
  HK_ASSERT_INT_EQ(lua_gettop(L), 4);
  HK_ASSERT(lua_istable(L, -1));
  lua_settop(L, 0);
  /* the decoder reads only `len` bytes: no terminator needed */
  HK_ASSERT_INT_EQ(hk_json_decode(L, "12345", 2, err, sizeof err), 0);
  HK_ASSERT_INT_EQ(lua_tointeger(L, -1), 12);
  lua_settop(L, 0);
  /* a tiny error buffer truncates, it does not overflow */
  char small[8];
  HK_ASSERT_INT_EQ(hk_json_decode(L, "[", 1, small, sizeof small), -EINVAL);
  HK_ASSERT_STR_EQ(small, "invalid");
  HK_ASSERT_INT_EQ(lua_gettop(L), 0);
  close_state(L);
  hk_buf_free(&buf);
}

/* ---- hk_json_scan_member -------------------------------------------------------------------- */

/* Scans a copy of json[0..len) in a buffer of exactly len bytes (so ASan catches a read past the
 * end) for `key` with an out buffer of out_size bytes; out must be "" on every error. */
static int scan_len(const char *json, size_t len, const char *key, char *out, size_t out_size) {
  char *copy = malloc(len > 0 ? len : 1);
  HK_ASSERT(copy != NULL);
  memcpy(copy, json, len);
  memset(out, 'X', out_size);
  int rc = hk_json_scan_member(copy, len, key, out, out_size);
  if (rc != 0) HK_ASSERT_STR_EQ(out, "");
  free(copy);
  return rc;
}

static int scan(const char *json, char out[64]) {
  return scan_len(json, strlen(json), "mode", out, 64);
}

/* Expects `json` to give the value `expected` for "mode". */
static void check_scan(const char *json, const char *expected) {
  char out[64];
  int rc = scan(json, out);
  if (rc != 0) HK_FAIL_("scan %s: %d", json, rc);
  HK_ASSERT_STR_EQ(out, expected);
}

static void check_scan_error(const char *json, int expected) {
  char out[64];
  int rc = scan(json, out);
  if (rc != expected) HK_FAIL_("scan %s: %d, want %d", json, rc, expected);
}

/* The scanner's contract: 0 exactly when hk_json_decode gives a table whose "mode" is a string
 * (without NUL, short enough), -ENOENT when it decodes otherwise, -EINVAL when it does not. */
static void check_agrees_with_decoder(const char *json, size_t len) {
  lua_State *L = new_state();
  char err[128], out[16];
  int expected;
  const char *value = NULL;
  size_t value_len = 0;
  if (hk_json_decode(L, json, len, err, sizeof err) != 0) {
    expected = -EINVAL;
  } else {
    expected = -ENOENT;
    if (lua_istable(L, -1) && !lua_getmetatable(L, -1)) {
      lua_getfield(L, -1, "mode");
      if (lua_type(L, -1) == LUA_TSTRING) {
        value = lua_tolstring(L, -1, &value_len);
        expected = memchr(value, '\0', value_len) ? -EILSEQ : value_len >= sizeof out ? -ENOSPC : 0;
      }
    }
  }
  int rc = scan_len(json, len, "mode", out, sizeof out);
  if (rc != expected) HK_FAIL_("scan %.*s: %d, decoder says %d", (int)len, json, rc, expected);
  if (rc == 0) HK_ASSERT_MEM_EQ(out, strlen(out), value, value_len);
  lua_settop(L, 0);
  close_state(L);
}

HK_TEST(scan_member_finds_top_level_string) {
  check_scan("{\"mode\":\"fast\"}", "fast");
  check_scan(" \n\t{ \"a\" : 1 , \"b\":[1,2,{}], \"mode\" : \"x y\" }\r\n ", "x y");
  check_scan("{\"mode\":\"\"}", "");
  check_scan("{\"modes\":\"no\",\"mod\":\"no\",\"Mode\":\"no\",\"mode\":\"yes\"}", "yes");
  check_scan("{\"mode\":\"caf\xc3\xa9 \xf0\x9f\x98\x80\"}", "caf\xc3\xa9 \xf0\x9f\x98\x80");
  char out[8];
  HK_ASSERT_INT_EQ(scan_len("{\"\":\"empty\"}", 12, "", out, sizeof out), 0);
  HK_ASSERT_STR_EQ(out, "empty");
}

HK_TEST(scan_member_ignores_nested_and_values) {
  check_scan_error("{\"a\":{\"mode\":\"inner\"}}", -ENOENT);
  check_scan_error("{\"a\":[{\"mode\":\"inner\"}],\"b\":\"mode\"}", -ENOENT);
  check_scan_error("{\"a\":\"mode\",\"b\":[\"mode\",\"x\"]}", -ENOENT);
  check_scan("{\"a\":{\"mode\":\"inner\",\"b\":{\"mode\":1}},\"mode\":\"outer\"}", "outer");
  check_scan("{\"a\":{\"x\":[[{\"mode\":\"deep\"}]]},\"mode\":\"top\",\"z\":{\"mode\":\"after\"}}",
             "top");
  /* Strings that look like structure do not confuse it. */
  check_scan("{\"a\":\"}\\\",\\\"mode\\\":\\\"fake\",\"mode\":\"real\"}", "real");
  check_scan_error("{\"a\":\"\\\"mode\\\":\\\"fake\\\"\"}", -ENOENT);
  /* A valid top level that is not an object has no members. */
  check_scan_error("[{\"mode\":\"x\"}]", -ENOENT);
  check_scan_error("\"mode\"", -ENOENT);
  check_scan_error("42", -ENOENT);
  check_scan_error("null", -ENOENT);
  check_scan_error("{}", -ENOENT);
}

HK_TEST(scan_member_non_string_values) {
  const char *docs[] = {"{\"mode\":1}", "{\"mode\":-1.5e3}", "{\"mode\":true}", "{\"mode\":false}",
                        "{\"mode\":null}", "{\"mode\":{}}", "{\"mode\":[\"x\"]}",
                        "{\"mode\":{\"mode\":\"x\"}}"};
  for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) check_scan_error(docs[i], -ENOENT);
}

HK_TEST(scan_member_escapes) {
  check_scan("{\"mode\":\"a\\\"b\\\\c\\/d\\u00e9\\n\\t\"}", "a\"b\\c/d\xc3\xa9\n\t");
  check_scan("{\"mode\":\"\\ud83d\\ude00\"}", "\xf0\x9f\x98\x80");
  /* Names are compared unescaped. */
  check_scan("{\"mo\\u0064e\":\"escaped name\"}", "escaped name");
  check_scan("{\"\\u006d\\u006F\\u0064\\u0065\":\"all escaped\"}", "all escaped");
  check_scan_error("{\"mo\\\"de\":\"x\"}", -ENOENT);
  check_scan_error("{\"mode\\u0000\":\"x\"}", -ENOENT); /* a longer name, not "mode" */
  check_scan_error("{\"mod\":\"x\",\"mode \":\"y\"}", -ENOENT);
  char out[16];
  HK_ASSERT_INT_EQ(scan_len("{\"a\\\"b\":\"q\"}", 12, "a\"b", out, sizeof out), 0);
  HK_ASSERT_STR_EQ(out, "q");
  HK_ASSERT_INT_EQ(scan_len("{\"caf\\u00e9\":\"u\"}", 17, "caf\xc3\xa9", out, sizeof out), 0);
  HK_ASSERT_STR_EQ(out, "u");
  /* U+0000 cannot be in a C string. */
  check_scan_error("{\"mode\":\"a\\u0000b\"}", -EILSEQ);
}

HK_TEST(scan_member_duplicate_keys_last_wins) {
  check_scan("{\"mode\":\"first\",\"mode\":\"last\"}", "last");
  check_scan("{\"mode\":1,\"mode\":\"last\"}", "last");
  check_scan_error("{\"mode\":\"first\",\"mode\":1}", -ENOENT);
  check_scan_error("{\"mode\":\"first\",\"mode\":{\"mode\":\"x\"}}", -ENOENT);
  char out[6];
  const char *long_then_short = "{\"mode\":\"much too long\",\"mode\":\"short\"}";
  const char *short_then_long = "{\"mode\":\"short\",\"mode\":\"much too long\"}";
  HK_ASSERT_INT_EQ(scan_len(long_then_short, 39, "mode", out, sizeof out), 0);
  HK_ASSERT_STR_EQ(out, "short");
  HK_ASSERT_INT_EQ(scan_len(short_then_long, 39, "mode", out, sizeof out), -ENOSPC);
  /* The same as the decoder, whose duplicates also keep the last value. */
  const char *doc = "{\"mode\":\"a\",\"x\":1,\"mode\":\"b\"}";
  check_agrees_with_decoder(doc, strlen(doc));
}

HK_TEST(scan_member_output_size) {
  char out[6];
  HK_ASSERT_INT_EQ(scan_len("{\"mode\":\"12345\"}", 16, "mode", out, sizeof out), 0);
  HK_ASSERT_STR_EQ(out, "12345");
  HK_ASSERT_INT_EQ(scan_len("{\"mode\":\"123456\"}", 17, "mode", out, sizeof out), -ENOSPC);
  /* Escapes count as what they decode to. */
  HK_ASSERT_INT_EQ(scan_len("{\"mode\":\"\\u00e9\\u00e9x\"}", 24, "mode", out, sizeof out), 0);
  HK_ASSERT_STR_EQ(out, "\xc3\xa9\xc3\xa9x");
  HK_ASSERT_INT_EQ(scan_len("{\"mode\":\"\\u00e9\\u00e9\\u00e9\"}", 29, "mode", out, sizeof out),
                   -ENOSPC);
  /* NUL is reported before size. */
  HK_ASSERT_INT_EQ(scan_len("{\"mode\":\"123456\\u0000\"}", 23, "mode", out, sizeof out), -EILSEQ);
  char one[1];
  HK_ASSERT_INT_EQ(scan_len("{\"mode\":\"\"}", 11, "mode", one, sizeof one), 0);
  HK_ASSERT_STR_EQ(one, "");
  HK_ASSERT_INT_EQ(scan_len("{\"mode\":\"x\"}", 12, "mode", one, sizeof one), -ENOSPC);
  /* Misuse. */
  HK_ASSERT_INT_EQ(hk_json_scan_member("{}", 2, "mode", out, 0), -EINVAL);
  HK_ASSERT_INT_EQ(hk_json_scan_member("{}", 2, NULL, out, sizeof out), -EINVAL);
  HK_ASSERT_INT_EQ(hk_json_scan_member("{}", 2, "mode", NULL, 8), -EINVAL);
  HK_ASSERT_INT_EQ(hk_json_scan_member(NULL, 0, "mode", out, sizeof out), -EINVAL);
}

HK_TEST(scan_member_invalid_json) {
  const char *docs[] = {
      "", "   ", "{", "{\"mode\"", "{\"mode\":", "{\"mode\":\"x\"", "{\"mode\":\"x\",}",
      "{\"mode\":\"x\"} x", "{\"mode\":\"x\"}{}", "{mode:\"x\"}", "{'mode':'x'}",
      "{\"mode\" \"x\"}", "{\"mode\":\"x\" \"a\":1}", "{\"a\":[1,]}", "{\"a\":01,\"mode\":\"x\"}",
      "{\"a\":1.,\"mode\":\"x\"}", "{\"a\":-,\"mode\":\"x\"}", "{\"a\":1e,\"mode\":\"x\"}",
      "{\"a\":tru,\"mode\":\"x\"}", "{\"a\":nul}", "{\"a\":+1}", "{\"mode\":\"\\x\"}",
      "{\"mode\":\"\\u12\"}", "{\"mode\":\"\\ud800\"}", "{\"mode\":\"\\udc00\"}",
      "{\"mode\":\"a\x01\"}", "{\"mode\":\"\xc3\"}", "{\"mode\":\"\xed\xa0\x80\"}",
      "\xef\xbb\xbf{\"mode\":\"bom\"}", "{\"a\":[}", "{\"a\":{]}", "{\"mode\":\"x\"]", "]",
      /* an error after the member still counts: the whole text is checked */
      "{\"mode\":\"x\",\"b\":\"\xff\"}", "{\"mode\":\"x\",\"b\":[1 2]}",
  };
  for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
    check_scan_error(docs[i], -EINVAL);
    check_agrees_with_decoder(docs[i], strlen(docs[i]));
  }
}

/* Every proper prefix of an object is invalid, and the scan reads none of the bytes after it. */
HK_TEST(scan_member_truncated_input) {
  const char *doc = "{\"a\":[1,{\"b\":\"c\\\"\"},-2.5e1,true,null],\"mode\":\"caf\\u00e9\"}";
  size_t len = strlen(doc);
  char out[64];
  for (size_t cut = 0; cut < len; cut++) {
    int rc = scan_len(doc, cut, "mode", out, sizeof out);
    if (rc != -EINVAL) HK_FAIL_("prefix of %zu bytes: %d", cut, rc);
  }
  HK_ASSERT_INT_EQ(scan_len(doc, len, "mode", out, sizeof out), 0);
  HK_ASSERT_STR_EQ(out, "caf\xc3\xa9");
}

HK_TEST(scan_member_depth_limit) {
  /* {"a": + 127 arrays: 128 levels, the decoder's limit; one more is refused by both. */
  for (int extra = 0; extra <= 1; extra++) {
    int arrays = HK_JSON_MAX_DEPTH - 1 + extra;
    hk_buf_t doc = HK_BUF_INIT;
    hk_buf_append_str(&doc, "{\"a\":");
    for (int i = 0; i < arrays; i++) hk_buf_append_char(&doc, '[');
    for (int i = 0; i < arrays; i++) hk_buf_append_char(&doc, ']');
    hk_buf_append_str(&doc, ",\"mode\":\"deep\"}");
    char out[64];
    HK_ASSERT_INT_EQ(scan_len(doc.data, doc.len, "mode", out, sizeof out), extra ? -EINVAL : 0);
    check_agrees_with_decoder(doc.data, doc.len);
    hk_buf_free(&doc);
  }
  /* Far deeper input is refused without recursion. */
  char *very_deep = nested("[", "]", 1000000);
  char out[8];
  HK_ASSERT_INT_EQ(scan_len(very_deep, strlen(very_deep), "mode", out, sizeof out), -EINVAL);
  free(very_deep);
  char *deep_objects = nested("{\"mode\":", "}", 200);
  HK_ASSERT_INT_EQ(scan_len(deep_objects, strlen(deep_objects), "mode", out, sizeof out), -EINVAL);
  free(deep_objects);
}

/* Number syntax is the decoder's; only range differs (documented in hk_json.h). */
HK_TEST(scan_member_numbers) {
  const char *docs[] = {"{\"n\":0,\"mode\":\"a\"}", "{\"n\":-0,\"mode\":\"a\"}",
                        "{\"n\":12.50e-3,\"mode\":\"a\"}", "{\"n\":1E+2,\"mode\":\"a\"}",
                        "{\"n\":9223372036854775808,\"mode\":\"a\"}", "{\"n\":00}", "{\"n\":.5}",
                        "{\"n\":1.5.}", "{\"n\":-01}", "{\"n\":1e+}"};
  for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++)
    check_agrees_with_decoder(docs[i], strlen(docs[i]));
  check_scan("{\"n\":1e400,\"mode\":\"range is not checked\"}", "range is not checked");
}

HK_TEST(scan_member_agrees_with_decoder) {
  const char *docs[] = {
      "{\"mode\":\"x\"}", " { \"mode\" : \"x\" } ", "{\"mode\":\"0123456789abcdef\"}",
      "{\"mode\":\"0123456789abcde\"}", "{\"mode\":\"\\u0000\"}", "{\"a\":{\"mode\":\"x\"}}",
      "[\"mode\"]", "{\"mode\":[]}", "{\"mode\":\"a\",\"mode\":\"b\"}", "{}", "[]", "\"\"",
      "{\"mode\":\"\\ud83d\\ude00\"}", "{\"mo\\u0064e\":\"x\"}",
  };
  for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++)
    check_agrees_with_decoder(docs[i], strlen(docs[i]));
}

HK_TEST_MAIN(HK_CASE(null_round_trip), HK_CASE(empty_array_and_object_round_trip),
             HK_CASE(nested_values_round_trip), HK_CASE(object_keys_sorted),
             HK_CASE(duplicate_keys_last_wins), HK_CASE(plain_sequence_encodes_as_array),
             HK_CASE(integers_exact), HK_CASE(floats_round_trip), HK_CASE(long_number_text),
             HK_CASE(nan_and_inf_rejected), HK_CASE(string_escapes_decode),
             HK_CASE(lone_surrogate_escapes_rejected), HK_CASE(invalid_strings_rejected),
             HK_CASE(invalid_utf8_input_rejected_with_offset), HK_CASE(invalid_utf8_replaced_on_encode),
             HK_CASE(control_characters_escaped), HK_CASE(ascii_mode_escapes_everything_else),
             HK_CASE(trailing_garbage_rejected), HK_CASE(empty_input_rejected),
             HK_CASE(surrounding_whitespace_accepted), HK_CASE(syntax_errors_rejected),
             HK_CASE(decode_depth_limit), HK_CASE(encode_depth_limit), HK_CASE(large_document),
             HK_CASE(unencodable_values_rejected), HK_CASE(mixed_key_tables_rejected),
             HK_CASE(lua_module_api), HK_CASE(encode_ignores_metamethods),
             HK_CASE(c_api_keeps_stack_and_buffer), HK_CASE(scan_member_finds_top_level_string),
             HK_CASE(scan_member_ignores_nested_and_values), HK_CASE(scan_member_non_string_values),
             HK_CASE(scan_member_escapes), HK_CASE(scan_member_duplicate_keys_last_wins),
             HK_CASE(scan_member_output_size), HK_CASE(scan_member_invalid_json),
             HK_CASE(scan_member_truncated_input), HK_CASE(scan_member_depth_limit),
             HK_CASE(scan_member_numbers), HK_CASE(scan_member_agrees_with_decoder))
