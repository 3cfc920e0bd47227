/* fuzz_json: libFuzzer target for hk_json. Decodes the input; when that succeeds, encodes the
 * value, decodes the encoding and encodes again, and requires the two encodings to match (the
 * encoder's output is canonical, so one round trip reaches a fixed point). It also checks that
 * hk_json_append_string always produces a JSON string that decodes, the same in both modes.
 * Built by tests/fuzz/CMakeLists.txt: as fuzz_json_replay (with replay_main.c, any compiler, run
 * on corpus/json/ by ctest) and, with -DHK_FUZZ=ON, as a libFuzzer binary. */
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

  hk_buf_free(&first);
  hk_buf_free(&second);
  static unsigned runs;
  if (++runs % 1024 == 0) lua_gc(L, LUA_GCCOLLECT, 0);
  return 0;
}
