/* fuzz_router: libFuzzer target for hk_router. The first byte picks the method; with its high bit
 * clear the rest is a path matched against a fixed router, with it set the rest is a pattern
 * added to a fresh router, which must then match the pattern's own text. It checks the contract's
 * invariants (status codes, params inside the path, Allow NUL-terminated) and leaves memory
 * errors to ASan. Built by tests/fuzz/CMakeLists.txt: as fuzz_router_replay (with replay_main.c,
 * any compiler, run on corpus/router/ by ctest) and, with -DHK_FUZZ=ON, as a libFuzzer binary. */
#include "hk_router.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "fuzz_check.h"

static const char *const methods[] = {"GET",     "HEAD",  "POST",  "PUT",      "DELETE", "PATCH",
                                      "OPTIONS", "PURGE", "TRACE", "PROPFIND", "*",      "BREW"};
enum { METHOD_COUNT = sizeof methods / sizeof methods[0] };

static const struct {
  const char *method, *pattern;
} fixed_routes[] = {
    {"GET", "/"},
    {"GET", "/v1/chat"},
    {"POST", "/v1/chat"},
    {"GET", "/v1/chat/"},
    {"GET", "/v1/items/:id"},
    {"DELETE", "/v1/items/:id"},
    {"PUT", "/v1/items/:item/tags/:tag"},
    {"GET", "/v1/items/new"},
    {"GET", "/a/b/c"},
    {"GET", "/a/:x/d"},
    {"POST", "/a/:x/:y/*rest"},
    {"*", "/any/:thing"},
    {"HEAD", "/head-only"},
    {"PURGE", "/cache/*key"},
    {"PROPFIND", "/cache/*key"},
    {"GET", "/static/*path"},
    {"GET", "/c//d"},
    {"OPTIONS", "/:p1/:p2/:p3/:p4/:p5/:p6/:p7/:p8/:p9/:p10/:p11/:p12/:p13/:p14/:p15/:p16"},
};
enum { FIXED_COUNT = sizeof fixed_routes / sizeof fixed_routes[0] };

static hk_router_t *fixed_router(void) {
  static hk_router_t *router;
  if (router != NULL) return router;
  CHECK(hk_router_new(&router) == 0);
  for (int i = 0; i < FIXED_COUNT; i++) {
    const char *err = NULL;
    if (hk_router_add(router, fixed_routes[i].method, fixed_routes[i].pattern, i, &err) != 0) {
      fprintf(stderr, "fixed route %s %s: %s\n", fixed_routes[i].method, fixed_routes[i].pattern,
              err);
      abort();
    }
  }
  return router;
}

static void check_match(const hk_router_t *router, const char *method, const char *path,
                        size_t len, int handler_max) {
  hk_route_match_t match;
  char allow[80];
  int rc = hk_router_match(router, method, path, len, &match, allow, sizeof allow);
  CHECK(rc == 0 || rc == HK_ROUTER_NOT_FOUND || rc == HK_ROUTER_METHOD_NOT_ALLOWED);
  CHECK(memchr(allow, '\0', sizeof allow) != NULL);
  if (rc == 0) {
    CHECK(allow[0] == '\0');
    CHECK(match.handler >= 0 && match.handler < handler_max);
    CHECK(match.pattern != NULL && match.pattern[0] == '/');
    CHECK(match.param_count <= HK_ROUTER_MAX_PARAMS);
    for (size_t i = 0; i < match.param_count; i++) {
      const hk_route_param_t *p = &match.params[i];
      CHECK(p->name != NULL && p->name[0] != '\0');
      CHECK(p->value >= path && p->value_len <= len && p->value <= path + len - p->value_len);
      CHECK(p->value > path && p->value[-1] == '/');
      CHECK(memchr(p->value, '/', p->value_len) == NULL || i == match.param_count - 1);
    }
  } else if (rc == HK_ROUTER_METHOD_NOT_ALLOWED) {
    CHECK(allow[0] >= 'A' && allow[0] <= 'Z');
  } else {
    CHECK(allow[0] == '\0');
  }
  /* Same answer again, and with a tiny Allow buffer. */
  hk_route_match_t again;
  char small[6];
  CHECK(hk_router_match(router, method, path, len, &again, small, sizeof small) == rc);
  CHECK(memchr(small, '\0', sizeof small) != NULL);
  if (rc == 0) CHECK(again.handler == match.handler && again.param_count == match.param_count);
}

/* A pattern's own text is a path that its route matches, params equal to their segments. */
static void check_pattern(const char *method, const uint8_t *data, size_t size) {
  char *pattern = malloc(size + 1);
  CHECK(pattern != NULL);
  memcpy(pattern, data, size);
  pattern[size] = '\0';
  hk_router_t *router = NULL;
  CHECK(hk_router_new(&router) == 0);
  const char *err = NULL;
  int rc = hk_router_add(router, method, pattern, 7, &err);
  CHECK(rc == 0 || rc == -EINVAL);
  CHECK(rc == 0 || (err != NULL && err[0] != '\0'));
  CHECK(hk_router_count(router) == (rc == 0 ? 1u : 0u));
  size_t len = strlen(pattern);
  if (rc == 0) {
    CHECK(hk_router_add(router, method, pattern, 8, &err) == -EINVAL); /* duplicate */
    hk_route_match_t match;
    const char *request = strcmp(method, "*") == 0 ? "GET" : method;
    CHECK(hk_router_match(router, request, pattern, len, &match, NULL, 0) == 0);
    CHECK(match.handler == 7 && strcmp(match.pattern, pattern) == 0);
    for (size_t i = 0; i < match.param_count; i++) {
      const hk_route_param_t *p = &match.params[i];
      CHECK(p->value > pattern && (p->value[-1] == ':' || p->value[-1] == '/'));
    }
  }
  check_match(router, method, pattern, len, 8);
  hk_router_free(router);
  free(pattern);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  const char *method = methods[(data[0] & 0x7f) % METHOD_COUNT];
  if (data[0] & 0x80) {
    if (size <= 4096) check_pattern(method, data + 1, size - 1);
    return 0;
  }
  check_match(fixed_router(), method, (const char *)data + 1, size - 1, FIXED_COUNT);
  return 0;
}
