/* fuzz_json: libFuzzer target for hk_json. Decodes the input; when that succeeds, encodes the
 * value, decodes the encoding and encodes again, and requires the two encodings to match (the
 * encoder's output is canonical, so one round trip reaches a fixed point). It also checks that
 * hk_json_append_string always produces a JSON string that decodes, the same in both modes, and
 * that hk_json_scan_member agrees with the decoder on every input, for a few keys and buffer
 * sizes: the same verdict on validity, and the same string for the top-level member.
 * Built by tests/fuzz/CMakeLists.txt: as fuzz_json_replay (with replay_main.c, any compiler, run
 * on corpus/json/ by ctest) and, with -DHK_FUZZ=ON, as a libFuzzer binary. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "hk_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "fuzz_check.h"

static lua_State *state(void) {
  static lua_State *L;
  if (L == NULL) {
    L = luaL_newstate();
    CHECK(L != NULL);
    hk_json_init(L);
  }
  return L;
}

/* Both escaping modes must give a valid JSON string, decoding to the same bytes; for valid
 * UTF-8 input (what the decoder accepted) those bytes are the input itself. */
static void check_escaping(lua_State *L, const char *bytes, size_t len, int is_valid_utf8) {
  hk_buf_t plain = HK_BUF_INIT, ascii = HK_BUF_INIT;
  char err[128];
  CHECK(hk_json_append_string(&plain, bytes, len, 0) == 0);
  CHECK(hk_json_append_string(&ascii, bytes, len, HK_JSON_ASCII) == 0);
  for (size_t i = 0; i < ascii.len; i++) CHECK(ascii.data[i] >= 0x20 && ascii.data[i] < 0x7f);
  if (hk_json_decode(L, plain.data, plain.len, err, sizeof err) != 0) {
    fprintf(stderr, "escaped string does not decode: %s\n", err);
    abort();
  }
  CHECK(hk_json_decode(L, ascii.data, ascii.len, err, sizeof err) == 0);
  size_t a_len, b_len;
  const char *a = lua_tolstring(L, -2, &a_len), *b = lua_tolstring(L, -1, &b_len);
  CHECK(a != NULL && b != NULL && a_len == b_len && memcmp(a, b, a_len) == 0);
  if (is_valid_utf8) CHECK(a_len == len && memcmp(a, bytes, len) == 0);
  lua_pop(L, 2);
  hk_buf_free(&plain);
  hk_buf_free(&ascii);
}

/* hk_json_scan_member(key, out_size) must return what the decoder implies (hk_json.h): -EINVAL
 * exactly when decoding fails, except for numbers out of a double's range, which the scanner
 * does not check; otherwise 0 with the same bytes, or -EILSEQ, -ENOSPC or -ENOENT. */
static void check_scan(lua_State *L, const uint8_t *data, size_t size, const char *key,
                       size_t out_size) {
  char err[128], out[64];
  CHECK(out_size <= sizeof out);
  int top = lua_gettop(L);
  int rc = hk_json_scan_member((const char *)data, size, key, out, out_size);
  CHECK(rc == 0 || out[0] == '\0');
  if (hk_json_decode(L, (const char *)data, size, err, sizeof err) != 0) {
    if (strstr(err, "number out of range") == NULL) CHECK(rc == -EINVAL);
    CHECK(lua_gettop(L) == top);
    return;
  }
  int expected = -ENOENT;
  const char *value = NULL;
  size_t value_len = 0;
  if (lua_type(L, -1) == LUA_TTABLE && !lua_getmetatable(L, -1)) { /* an object, not an array */
    lua_getfield(L, -1, key);
    if (lua_type(L, -1) == LUA_TSTRING) {
      value = lua_tolstring(L, -1, &value_len);
      if (memchr(value, '\0', value_len) != NULL) expected = -EILSEQ;
      else if (value_len >= out_size) expected = -ENOSPC;
      else expected = 0;
    }
  }
  if (rc != expected) {
    fprintf(stderr, "scan for \"%s\" (%zu bytes) returned %d, the decoder implies %d\n", key,
            out_size, rc, expected);
    abort();
  }
  if (rc == 0) CHECK(strlen(out) == value_len && memcmp(out, value, value_len) == 0);
  lua_settop(L, top);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = state();
  char err[128];
  hk_buf_t first = HK_BUF_INIT, second = HK_BUF_INIT;

  int top = lua_gettop(L);
  int rc = hk_json_decode(L, (const char *)data, size, err, sizeof err);
  CHECK(lua_gettop(L) == top + (rc == 0));
  if (rc == 0) {
    /* Whatever decodes must encode: depth, numbers and strings are all within limits. */
    if (hk_json_encode(L, -1, &first, err, sizeof err) != 0) {
      fprintf(stderr, "decoded value does not encode: %s\n", err);
      abort();
    }
    lua_pop(L, 1);
    if (hk_json_decode(L, first.data, first.len, err, sizeof err) != 0) {
      fprintf(stderr, "encoding does not decode: %s\n%s\n", err, first.data);
      abort();
    }
    CHECK(hk_json_encode(L, -1, &second, err, sizeof err) == 0);
    lua_pop(L, 1);
    if (first.len != second.len || memcmp(first.data, second.data, first.len) != 0) {
      fprintf(stderr, "re-encoding differs:\n%s\n%s\n", first.data, second.data);
      abort();
    }
  }
  CHECK(lua_gettop(L) == top);

  /* The raw input as one string: valid UTF-8 exactly when decoding it as a string works. */
  hk_buf_t quoted = HK_BUF_INIT;
  CHECK(hk_buf_append_char(&quoted, '"') == 0);
  CHECK(hk_buf_append(&quoted, data, size) == 0);
  CHECK(hk_buf_append_char(&quoted, '"') == 0);
  int plain_string = memchr(data, '"', size) == NULL && memchr(data, '\\', size) == NULL;
  for (size_t i = 0; plain_string && i < size; i++) plain_string = data[i] >= 0x20;
  int valid = 0;
  if (plain_string) {
    valid = hk_json_decode(L, quoted.data, quoted.len, err, sizeof err) == 0;
    if (valid) lua_pop(L, 1);
  }
  check_escaping(L, (const char *)data, size, valid);
  hk_buf_free(&quoted);

  check_scan(L, data, size, "mode", 16);
  check_scan(L, data, size, "a", 2);
  check_scan(L, data, size, "", 64);

  hk_buf_free(&first);
  hk_buf_free(&second);
  static unsigned runs;
  if (++runs % 1024 == 0) lua_gc(L, LUA_GCCOLLECT, 0);
  return 0;
}
