/* Unit tests for hk_router: precedence, parameters, 404 vs 405 and the Allow list, pattern
 * errors, allocation failures, and a randomised comparison with a naive reference matcher. */
#include "hk_router.h"
#include "hk_test.h"

#include <errno.h>
#include <stdbool.h>

/* The allocation-failure hook in hk_router.c (test-only). */
extern int hk__router_fail_countdown;

/* ---- helpers ------------------------------------------------------------------------------ */

static hk_router_t *router_new(void) {
  hk_router_t *router = NULL;
  HK_ASSERT_INT_EQ(hk_router_new(&router), 0);
  HK_ASSERT(router != NULL);
  return router;
}

static void add_ok(hk_router_t *router, const char *method, const char *pattern, int handler) {
  const char *err = NULL;
  int rc = hk_router_add(router, method, pattern, handler, &err);
  if (rc != 0) HK_FAIL_("add %s %s: %d %s", method, pattern, rc, err ? err : "(no message)");
}

static const char *add_err(hk_router_t *router, const char *method, const char *pattern) {
  const char *err = NULL;
  HK_ASSERT_INT_EQ(hk_router_add(router, method, pattern, 99, &err), -EINVAL);
  HK_ASSERT(err != NULL && err[0] != '\0');
  return err;
}

static int match(const hk_router_t *router, const char *method, const char *path,
                 hk_route_match_t *m) {
  char allow[128];
  return hk_router_match(router, method, path, strlen(path), m, allow, sizeof allow);
}

/* The handler matched, or the (negative) router status. */
static int handler_of(const hk_router_t *router, const char *method, const char *path) {
  hk_route_match_t m;
  int rc = match(router, method, path, &m);
  return rc == 0 ? m.handler : rc;
}

static void expect_param(const hk_route_match_t *m, size_t i, const char *name, const char *value) {
  HK_ASSERT(i < m->param_count);
  HK_ASSERT_STR_EQ(m->params[i].name, name);
  HK_ASSERT_MEM_EQ(m->params[i].value, m->params[i].value_len, value, strlen(value));
}

static void expect_405(const hk_router_t *router, const char *method, const char *path,
                       const char *allow_expected) {
  hk_route_match_t m;
  char allow[128];
  memset(allow, 'x', sizeof allow);
  int rc = hk_router_match(router, method, path, strlen(path), &m, allow, sizeof allow);
  HK_ASSERT_INT_EQ(rc, HK_ROUTER_METHOD_NOT_ALLOWED);
  HK_ASSERT_STR_EQ(allow, allow_expected);
}

/* ---- matching ----------------------------------------------------------------------------- */

HK_TEST(exact_match) {
  hk_router_t *r = router_new();
  add_ok(r, "GET", "/v1/chat", 1);
  add_ok(r, "GET", "/v1/models", 2);
  add_ok(r, "GET", "/v1", 3);
  hk_route_match_t m;
  HK_ASSERT_INT_EQ(match(r, "GET", "/v1/chat", &m), 0);
  HK_ASSERT_INT_EQ(m.handler, 1);
  HK_ASSERT_STR_EQ(m.pattern, "/v1/chat");
  HK_ASSERT_INT_EQ(m.param_count, 0);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/v1/models"), 2);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/v1"), 3);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/v1/chat/x"), HK_ROUTER_NOT_FOUND);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/v1/cha"), HK_ROUTER_NOT_FOUND);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/v2"), HK_ROUTER_NOT_FOUND);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/"), HK_ROUTER_NOT_FOUND);
  hk_router_free(r);
}

HK_TEST(root_path) {
  hk_router_t *r = router_new();
  add_ok(r, "GET", "/", 1);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/"), 1);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "//"), HK_ROUTER_NOT_FOUND);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/a"), HK_ROUTER_NOT_FOUND);
  hk_router_free(r);
}

HK_TEST(params_values_and_names) {
  hk_router_t *r = router_new();
  add_ok(r, "GET", "/v1/items/:id", 7);
  hk_route_match_t m;
  HK_ASSERT_INT_EQ(match(r, "GET", "/v1/items/abc-42", &m), 0);
  HK_ASSERT_INT_EQ(m.handler, 7);
  HK_ASSERT_STR_EQ(m.pattern, "/v1/items/:id");
  HK_ASSERT_INT_EQ(m.param_count, 1);
  expect_param(&m, 0, "id", "abc-42");
  /* A parameter is one non-empty segment. */
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/v1/items/"), HK_ROUTER_NOT_FOUND);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/v1/items"), HK_ROUTER_NOT_FOUND);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/v1/items/a/b"), HK_ROUTER_NOT_FOUND);
  hk_router_free(r);
}

HK_TEST(multiple_params) {
  hk_router_t *r = router_new();
  add_ok(r, "GET", "/users/:user/repos/:repo/issues/:number", 1);
  add_ok(r, "POST", "/users/:name/repos/:project/issues/:n", 2); /* same shape, own names */
  hk_route_match_t m;
  HK_ASSERT_INT_EQ(match(r, "GET", "/users/ana/repos/hancock/issues/12", &m), 0);
  HK_ASSERT_INT_EQ(m.handler, 1);
  HK_ASSERT_INT_EQ(m.param_count, 3);
  expect_param(&m, 0, "user", "ana");
  expect_param(&m, 1, "repo", "hancock");
  expect_param(&m, 2, "number", "12");
  HK_ASSERT_INT_EQ(match(r, "POST", "/users/ana/repos/hancock/issues/12", &m), 0);
  HK_ASSERT_INT_EQ(m.handler, 2);
  HK_ASSERT_STR_EQ(m.pattern, "/users/:name/repos/:project/issues/:n");
  expect_param(&m, 0, "name", "ana");
  expect_param(&m, 1, "project", "hancock");
  expect_param(&m, 2, "n", "12");
  hk_router_free(r);
}

HK_TEST(literal_beats_param_any_order) {
  for (int order = 0; order < 2; order++) {
    hk_router_t *r = router_new();
    if (order == 0) {
      add_ok(r, "GET", "/items/:id", 1);
      add_ok(r, "GET", "/items/new", 2);
    } else {
      add_ok(r, "GET", "/items/new", 2);
      add_ok(r, "GET", "/items/:id", 1);
    }
    HK_ASSERT_INT_EQ(handler_of(r, "GET", "/items/new"), 2);
    HK_ASSERT_INT_EQ(handler_of(r, "GET", "/items/news"), 1);
    HK_ASSERT_INT_EQ(handler_of(r, "GET", "/items/ne"), 1);
    hk_router_free(r);
  }
}

HK_TEST(param_beats_wildcard) {
  for (int order = 0; order < 2; order++) {
    hk_router_t *r = router_new();
    if (order == 0) {
      add_ok(r, "GET", "/files/*path", 1);
      add_ok(r, "GET", "/files/:name", 2);
      add_ok(r, "GET", "/files/index", 3);
    } else {
      add_ok(r, "GET", "/files/index", 3);
      add_ok(r, "GET", "/files/:name", 2);
      add_ok(r, "GET", "/files/*path", 1);
    }
    HK_ASSERT_INT_EQ(handler_of(r, "GET", "/files/index"), 3);
    HK_ASSERT_INT_EQ(handler_of(r, "GET", "/files/a.txt"), 2);
    HK_ASSERT_INT_EQ(handler_of(r, "GET", "/files/a/b.txt"), 1);
    HK_ASSERT_INT_EQ(handler_of(r, "GET", "/files/"), 1);
    hk_router_free(r);
  }
}

HK_TEST(backtracking) {
  hk_router_t *r = router_new();
  add_ok(r, "GET", "/a/b/c", 1);
  add_ok(r, "GET", "/a/:x/d", 2);
  hk_route_match_t m;
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/a/b/c"), 1);
  HK_ASSERT_INT_EQ(match(r, "GET", "/a/b/d", &m), 0);
  HK_ASSERT_INT_EQ(m.handler, 2);
  expect_param(&m, 0, "x", "b");
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/a/b/e"), HK_ROUTER_NOT_FOUND);
  hk_router_free(r);
}

HK_TEST(backtracking_deep_to_wildcard) {
  hk_router_t *r = router_new();
  add_ok(r, "GET", "/a/b/c/d", 1);
  add_ok(r, "GET", "/a/:x/c/e", 2);
  add_ok(r, "GET", "/a/:x/:y/f", 3);
  add_ok(r, "GET", "/a/*rest", 4);
  add_ok(r, "GET", "/*all", 5);
  hk_route_match_t m;
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/a/b/c/d"), 1);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/a/b/c/e"), 2);
  HK_ASSERT_INT_EQ(match(r, "GET", "/a/b/c/f", &m), 0);
  HK_ASSERT_INT_EQ(m.handler, 3);
  expect_param(&m, 0, "x", "b");
  expect_param(&m, 1, "y", "c");
  HK_ASSERT_INT_EQ(match(r, "GET", "/a/b/c/g", &m), 0);
  HK_ASSERT_INT_EQ(m.handler, 4);
  expect_param(&m, 0, "rest", "b/c/g");
  HK_ASSERT_INT_EQ(match(r, "GET", "/b/c", &m), 0);
  HK_ASSERT_INT_EQ(m.handler, 5);
  expect_param(&m, 0, "all", "b/c");
  HK_ASSERT_INT_EQ(match(r, "GET", "/", &m), 0);
  HK_ASSERT_INT_EQ(m.handler, 5);
  expect_param(&m, 0, "all", "");
  hk_router_free(r);
}

HK_TEST(wildcard_rest) {
  hk_router_t *r = router_new();
  add_ok(r, "GET", "/static/:version/*path", 1);
  hk_route_match_t m;
  HK_ASSERT_INT_EQ(match(r, "GET", "/static/v2/css/site.css", &m), 0);
  HK_ASSERT_INT_EQ(m.param_count, 2);
  expect_param(&m, 0, "version", "v2");
  expect_param(&m, 1, "path", "css/site.css");
  HK_ASSERT_INT_EQ(match(r, "GET", "/static/v2/", &m), 0); /* empty rest */
  expect_param(&m, 1, "path", "");
  HK_ASSERT_INT_EQ(match(r, "GET", "/static/v2//x/", &m), 0);
  expect_param(&m, 1, "path", "/x/");
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/static/v2"), HK_ROUTER_NOT_FOUND);
  hk_router_free(r);
}

HK_TEST(not_found_vs_method_not_allowed) {
  hk_router_t *r = router_new();
  add_ok(r, "POST", "/v1/chat", 1);
  add_ok(r, "GET", "/v1/chat", 2);
  add_ok(r, "DELETE", "/v1/items/:id", 3);
  expect_405(r, "PUT", "/v1/chat", "GET, HEAD, POST");
  expect_405(r, "GET", "/v1/items/5", "DELETE");
  expect_405(r, "HEAD", "/v1/items/5", "DELETE");
  HK_ASSERT_INT_EQ(handler_of(r, "PUT", "/v1/nothing"), HK_ROUTER_NOT_FOUND);
  /* A prefix of a route is not a route. */
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/v1"), HK_ROUTER_NOT_FOUND);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/v1/items"), HK_ROUTER_NOT_FOUND);
  /* allow is cleared on a 404 and on a match. */
  char allow[32] = "junk";
  hk_route_match_t m;
  HK_ASSERT_INT_EQ(hk_router_match(r, "GET", "/x", 2, &m, allow, sizeof allow),
                   HK_ROUTER_NOT_FOUND);
  HK_ASSERT_STR_EQ(allow, "");
  strcpy(allow, "junk");
  HK_ASSERT_INT_EQ(hk_router_match(r, "GET", "/v1/chat", 8, &m, allow, sizeof allow), 0);
  HK_ASSERT_STR_EQ(allow, "");
  hk_router_free(r);
}

/* A 405 names the pattern the path matched, for the endpoint label. */
HK_TEST(method_not_allowed_names_the_pattern) {
  hk_router_t *r = router_new();
  add_ok(r, "DELETE", "/v1/items/:id", 3);
  add_ok(r, "POST", "/v1/items/special", 4);
  char allow[64];
  hk_route_match_t m;
  HK_ASSERT_INT_EQ(hk_router_match(r, "GET", "/v1/items/5", 11, &m, allow, sizeof allow),
                   HK_ROUTER_METHOD_NOT_ALLOWED);
  HK_ASSERT_STR_EQ(m.pattern, "/v1/items/:id");
  HK_ASSERT_INT_EQ(m.param_count, 0);
  HK_ASSERT_INT_EQ(hk_router_match(r, "GET", "/v1/items/special", 17, &m, allow, sizeof allow),
                   HK_ROUTER_METHOD_NOT_ALLOWED);
  HK_ASSERT_STR_EQ(m.pattern, "/v1/items/special"); /* the literal is the better match */
  hk_router_free(r);
}

HK_TEST(allow_order_and_union) {
  hk_router_t *r = router_new();
  add_ok(r, "OPTIONS", "/a/b", 1);
  add_ok(r, "PURGE", "/a/b", 2);
  add_ok(r, "PATCH", "/a/b", 3);
  add_ok(r, "PUT", "/a/:x", 4);
  add_ok(r, "GET", "/a/:x", 5);
  add_ok(r, "PROPFIND", "/a/*rest", 6);
  add_ok(r, "PURGE", "/a/*rest", 7);
  add_ok(r, "POST", "/a/*rest", 8);
  /* The union over "/a/b", "/a/:x" and the "/a/" wildcard; every listed method would match. */
  expect_405(r, "DELETE", "/a/b", "GET, HEAD, POST, PUT, PATCH, OPTIONS, PURGE, PROPFIND");
  HK_ASSERT_INT_EQ(handler_of(r, "PURGE", "/a/b"), 2);
  HK_ASSERT_INT_EQ(handler_of(r, "PUT", "/a/b"), 4);
  HK_ASSERT_INT_EQ(handler_of(r, "HEAD", "/a/b"), 5);
  HK_ASSERT_INT_EQ(handler_of(r, "PROPFIND", "/a/b"), 6);
  HK_ASSERT_INT_EQ(handler_of(r, "POST", "/a/b"), 8);
  expect_405(r, "DELETE", "/a/c/d", "POST, PROPFIND, PURGE");
  hk_router_free(r);
}

HK_TEST(allow_truncation) {
  hk_router_t *r = router_new();
  const char *methods[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
  for (int i = 0; i < 6; i++) add_ok(r, methods[i], "/x", i);
  add_ok(r, "PROPPATCH", "/x", 10);
  hk_route_match_t m;
  char allow[64];
  HK_ASSERT_INT_EQ(hk_router_match(r, "TRACE", "/x", 2, &m, allow, sizeof allow),
                   HK_ROUTER_METHOD_NOT_ALLOWED);
  HK_ASSERT_STR_EQ(allow, "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, PROPPATCH");
  /* Truncation keeps whole methods and the NUL. */
  char small[12];
  memset(small, 'x', sizeof small);
  HK_ASSERT_INT_EQ(hk_router_match(r, "TRACE", "/x", 2, &m, small, sizeof small),
                   HK_ROUTER_METHOD_NOT_ALLOWED);
  HK_ASSERT_STR_EQ(small, "GET, HEAD");
  char tiny[4];
  HK_ASSERT_INT_EQ(hk_router_match(r, "TRACE", "/x", 2, &m, tiny, sizeof tiny),
                   HK_ROUTER_METHOD_NOT_ALLOWED);
  HK_ASSERT_STR_EQ(tiny, "GET");
  char three[3];
  HK_ASSERT_INT_EQ(hk_router_match(r, "TRACE", "/x", 2, &m, three, sizeof three),
                   HK_ROUTER_METHOD_NOT_ALLOWED);
  HK_ASSERT_STR_EQ(three, "");
  HK_ASSERT_INT_EQ(hk_router_match(r, "TRACE", "/x", 2, &m, NULL, 0), HK_ROUTER_METHOD_NOT_ALLOWED);
  hk_router_free(r);
}

HK_TEST(head_falls_back_to_get) {
  hk_router_t *r = router_new();
  add_ok(r, "GET", "/a", 1);
  add_ok(r, "GET", "/b", 2);
  add_ok(r, "HEAD", "/b", 3);
  add_ok(r, "GET", "/c", 4);
  add_ok(r, "*", "/c", 5);
  HK_ASSERT_INT_EQ(handler_of(r, "HEAD", "/a"), 1);
  HK_ASSERT_INT_EQ(handler_of(r, "HEAD", "/b"), 3);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/b"), 2);
  HK_ASSERT_INT_EQ(handler_of(r, "HEAD", "/c"), 5); /* "*" beats the GET fallback */
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/c"), 4);
  /* GET does not fall back to HEAD. */
  hk_router_t *h = router_new();
  add_ok(h, "HEAD", "/a", 1);
  expect_405(h, "GET", "/a", "HEAD");
  hk_router_free(h);
  hk_router_free(r);
}

HK_TEST(star_method) {
  hk_router_t *r = router_new();
  add_ok(r, "*", "/any", 1);
  add_ok(r, "POST", "/any", 2);
  add_ok(r, "*", "/only/:x", 3);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/any"), 1);
  HK_ASSERT_INT_EQ(handler_of(r, "HEAD", "/any"), 1);
  HK_ASSERT_INT_EQ(handler_of(r, "BREW", "/any"), 1);
  HK_ASSERT_INT_EQ(handler_of(r, "POST", "/any"), 2); /* exact method wins */
  HK_ASSERT_INT_EQ(handler_of(r, "DELETE", "/only/9"), 3);
  HK_ASSERT_INT_EQ(handler_of(r, "DELETE", "/only"), HK_ROUTER_NOT_FOUND);
  const char *err = add_err(r, "*", "/any");
  HK_ASSERT(strstr(err, "already") != NULL);
  hk_router_free(r);
}

HK_TEST(precedence_is_method_aware) {
  hk_router_t *r = router_new();
  add_ok(r, "GET", "/a/b", 1);
  add_ok(r, "POST", "/a/:x", 2);
  add_ok(r, "*", "/z/*rest", 3);
  add_ok(r, "GET", "/z/:x", 4);
  hk_route_match_t m;
  HK_ASSERT_INT_EQ(match(r, "POST", "/a/b", &m), 0);
  HK_ASSERT_INT_EQ(m.handler, 2);
  expect_param(&m, 0, "x", "b");
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/a/b"), 1);
  expect_405(r, "GET", "/a/c", "POST");
  expect_405(r, "PUT", "/a/b", "GET, HEAD, POST");
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/z/q"), 4);
  HK_ASSERT_INT_EQ(handler_of(r, "PUT", "/z/q"), 3); /* "*" further down: never a 405 */
  hk_router_free(r);
}

HK_TEST(trailing_slash_distinct) {
  hk_router_t *r = router_new();
  add_ok(r, "GET", "/a", 1);
  add_ok(r, "GET", "/b/", 2);
  add_ok(r, "GET", "/p/:x/", 3);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/a"), 1);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/a/"), HK_ROUTER_NOT_FOUND);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/b/"), 2);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/b"), HK_ROUTER_NOT_FOUND);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/p/1/"), 3);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/p/1"), HK_ROUTER_NOT_FOUND);
  add_ok(r, "GET", "/a/", 4);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/a/"), 4);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/a"), 1);
  hk_router_free(r);
}

HK_TEST(empty_segments) {
  hk_router_t *r = router_new();
  add_ok(r, "GET", "/a/:x/b", 1);
  add_ok(r, "GET", "/c//d", 2);
  add_ok(r, "GET", "/e/:x", 3);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/a//b"), HK_ROUTER_NOT_FOUND); /* a param is not empty */
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/a/x/b"), 1);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/c//d"), 2);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/c/d"), HK_ROUTER_NOT_FOUND);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "//c//d"), HK_ROUTER_NOT_FOUND);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/e//"), HK_ROUTER_NOT_FOUND);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "//"), HK_ROUTER_NOT_FOUND);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "///////"), HK_ROUTER_NOT_FOUND);
  hk_router_free(r);
}

HK_TEST(special_chars_only_at_segment_start) {
  hk_router_t *r = router_new();
  add_ok(r, "GET", "/a:b/c*d/e.json", 1);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/a:b/c*d/e.json"), 1);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/a:x/c*d/e.json"), HK_ROUTER_NOT_FOUND);
  hk_router_free(r);
}

HK_TEST(empty_or_relative_path) {
  hk_router_t *r = router_new();
  add_ok(r, "GET", "/*all", 1);
  hk_route_match_t m;
  char allow[16];
  HK_ASSERT_INT_EQ(hk_router_match(r, "GET", "", 0, &m, allow, sizeof allow), HK_ROUTER_NOT_FOUND);
  HK_ASSERT_INT_EQ(hk_router_match(r, "GET", "/x", 0, &m, allow, sizeof allow),
                   HK_ROUTER_NOT_FOUND);
  HK_ASSERT_INT_EQ(hk_router_match(r, "GET", "x/y", 3, &m, allow, sizeof allow),
                   HK_ROUTER_NOT_FOUND);
  HK_ASSERT_INT_EQ(hk_router_match(r, "GET", "*", 1, &m, allow, sizeof allow), HK_ROUTER_NOT_FOUND);
  HK_ASSERT_INT_EQ(hk_router_match(r, "GET", "/", 1, &m, allow, sizeof allow), 0);
  hk_router_free(r);
}

/* The router compares bytes: the caller strips "?query" before matching. */
HK_TEST(query_is_the_callers_job) {
  hk_router_t *r = router_new();
  add_ok(r, "GET", "/search", 1);
  add_ok(r, "GET", "/items/:id", 2);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/search?q=1"), HK_ROUTER_NOT_FOUND);
  hk_route_match_t m;
  HK_ASSERT_INT_EQ(match(r, "GET", "/items/5?x=/y", &m), HK_ROUTER_NOT_FOUND);
  HK_ASSERT_INT_EQ(match(r, "GET", "/items/5?x=y", &m), 0);
  expect_param(&m, 0, "id", "5?x=y");
  HK_ASSERT_INT_EQ(match(r, "GET", "/items/a%2Fb", &m), 0); /* no percent-decoding */
  expect_param(&m, 0, "id", "a%2Fb");
  const char *target = "/search?q=1";
  size_t path_len = (size_t)(strchr(target, '?') - target);
  HK_ASSERT_INT_EQ(hk_router_match(r, "GET", target, path_len, &m, NULL, 0), 0);
  HK_ASSERT_INT_EQ(m.handler, 1);
  hk_router_free(r);
}

HK_TEST(path_not_nul_terminated) {
  hk_router_t *r = router_new();
  add_ok(r, "GET", "/items/:id", 1);
  add_ok(r, "GET", "/items/:id/x", 2);
  add_ok(r, "GET", "/files/*path", 3);
  add_ok(r, "GET", "/a", 4);
  hk_route_match_t m;
  const char buffer[] = "/items/42/x/garbage";
  HK_ASSERT_INT_EQ(hk_router_match(r, "GET", buffer, 9, &m, NULL, 0), 0);
  HK_ASSERT_INT_EQ(m.handler, 1);
  expect_param(&m, 0, "id", "42");
  HK_ASSERT_INT_EQ(hk_router_match(r, "GET", buffer, 8, &m, NULL, 0), 0);
  expect_param(&m, 0, "id", "4");
  HK_ASSERT_INT_EQ(hk_router_match(r, "GET", buffer, 11, &m, NULL, 0), 0);
  HK_ASSERT_INT_EQ(m.handler, 2);
  HK_ASSERT_INT_EQ(hk_router_match(r, "GET", buffer, 10, &m, NULL, 0), HK_ROUTER_NOT_FOUND);
  /* Exactly-sized heap copies with no NUL, so ASan reports any read past path_len. */
  const char *paths[] = {"/items/42", "/files/a/b/", "/files/", "/a", "/", "/items/", "/nope/x"};
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
    size_t len = strlen(paths[i]);
    char *exact = malloc(len);
    HK_ASSERT(exact != NULL);
    memcpy(exact, paths[i], len);
    int expected = handler_of(r, "GET", paths[i]);
    int rc = hk_router_match(r, "GET", exact, len, &m, NULL, 0);
    HK_ASSERT_INT_EQ(rc, expected >= 0 ? 0 : expected);
    if (rc == 0) HK_ASSERT_INT_EQ(m.handler, expected);
    if (rc == 0 && m.handler == 3) {
      HK_ASSERT(m.params[0].value >= exact);
      HK_ASSERT(m.params[0].value + m.params[0].value_len == exact + len);
    }
    free(exact);
  }
  hk_router_free(r);
}

HK_TEST(other_methods) {
  hk_router_t *r = router_new();
  add_ok(r, "PROPFIND", "/dav/*path", 1);
  add_ok(r, "M-SEARCH", "/dav/*path", 2);
  add_ok(r, "MKCOL", "/dav/*path", 3);
  HK_ASSERT_INT_EQ(handler_of(r, "PROPFIND", "/dav/x"), 1);
  HK_ASSERT_INT_EQ(handler_of(r, "M-SEARCH", "/dav/x"), 2);
  HK_ASSERT_INT_EQ(handler_of(r, "MKCOL", "/dav/x"), 3);
  HK_ASSERT_INT_EQ(handler_of(r, "propfind", "/dav/x"), HK_ROUTER_METHOD_NOT_ALLOWED);
  expect_405(r, "GET", "/dav/", "PROPFIND, M-SEARCH, MKCOL");
  add_err(r, "MKCOL", "/dav/*other");
  HK_ASSERT_INT_EQ(hk_router_count(r), 3);
  hk_router_free(r);
}

/* ---- registration ------------------------------------------------------------------------- */

HK_TEST(duplicate_registration) {
  hk_router_t *r = router_new();
  add_ok(r, "GET", "/a/:x", 1);
  const char *err = add_err(r, "GET", "/a/:y");
  HK_ASSERT(strstr(err, "already registered") != NULL);
  add_err(r, "GET", "/a/:x");
  add_ok(r, "POST", "/a/:y", 2); /* another method on the same shape is fine */
  add_ok(r, "GET", "/a/:x/", 3);  /* another shape */
  add_ok(r, "GET", "/a/*x", 4);
  add_err(r, "GET", "/a/*rest");
  HK_ASSERT_INT_EQ(hk_router_count(r), 4);
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/a/1"), 1); /* the first one stays */
  hk_router_free(r);
}

HK_TEST(invalid_patterns) {
  hk_router_t *r = router_new();
  HK_ASSERT(strstr(add_err(r, "GET", ""), "start with '/'") != NULL);
  HK_ASSERT(strstr(add_err(r, "GET", "a/b"), "start with '/'") != NULL);
  HK_ASSERT(strstr(add_err(r, "GET", "*"), "start with '/'") != NULL);
  HK_ASSERT(strstr(add_err(r, "GET", "/a/:"), "empty parameter name") != NULL);
  HK_ASSERT(strstr(add_err(r, "GET", "/a/:/b"), "empty parameter name") != NULL);
  HK_ASSERT(strstr(add_err(r, "GET", "/a/*"), "empty parameter name") != NULL);
  HK_ASSERT(strstr(add_err(r, "GET", "/a/*rest/b"), "wildcard") != NULL);
  HK_ASSERT(strstr(add_err(r, "GET", "/a/*rest/"), "wildcard") != NULL);
  HK_ASSERT(strstr(add_err(r, "GET", "/a/:x.json"), "parameter names") != NULL);
  HK_ASSERT(strstr(add_err(r, "GET", "/a/:x:y"), "parameter names") != NULL);
  HK_ASSERT(strstr(add_err(r, "GET", "/:id/:id"), "duplicate parameter") != NULL);
  HK_ASSERT(strstr(add_err(r, "GET", "/:id/*id"), "duplicate parameter") != NULL);
  const char *err = "untouched";
  HK_ASSERT_INT_EQ(hk_router_add(r, "GET", NULL, 1, &err), -EINVAL);
  HK_ASSERT_INT_EQ(hk_router_add(r, "GET", "bad", 1, NULL), -EINVAL); /* err may be NULL */
  HK_ASSERT_INT_EQ(hk_router_count(r), 0);
  add_ok(r, "GET", "/:a_1/:B2/*_", 1);
  hk_router_free(r);
}

HK_TEST(invalid_methods) {
  hk_router_t *r = router_new();
  const char *bad[] = {"",   "get",  "Get",
                       "GET ", "G/T", "**", "GET\t", "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFG"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    HK_ASSERT(strstr(add_err(r, bad[i], "/a"), "method") != NULL);
  }
  const char *err = NULL;
  HK_ASSERT_INT_EQ(hk_router_add(r, NULL, "/a", 1, &err), -EINVAL);
  add_ok(r, "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEF", "/a", 1); /* 32 characters */
  add_ok(r, "X_Y-Z", "/a", 2);
  HK_ASSERT_INT_EQ(hk_router_count(r), 2);
  hk_router_free(r);
}

HK_TEST(too_many_params) {
  char pattern[256] = "";
  for (int i = 0; i < HK_ROUTER_MAX_PARAMS; i++) sprintf(pattern + strlen(pattern), "/:p%d", i);
  hk_router_t *r = router_new();
  add_ok(r, "GET", pattern, 1);
  char path[256] = "";
  for (int i = 0; i < HK_ROUTER_MAX_PARAMS; i++) sprintf(path + strlen(path), "/v%d", i);
  hk_route_match_t m;
  HK_ASSERT_INT_EQ(match(r, "GET", path, &m), 0);
  HK_ASSERT_INT_EQ(m.param_count, HK_ROUTER_MAX_PARAMS);
  expect_param(&m, 0, "p0", "v0");
  expect_param(&m, 15, "p15", "v15");
  char more[300];
  snprintf(more, sizeof more, "%s/:p16", pattern);
  HK_ASSERT(strstr(add_err(r, "POST", more), "too many") != NULL);
  snprintf(more, sizeof more, "%s/*rest", pattern); /* the wildcard counts */
  HK_ASSERT(strstr(add_err(r, "POST", more), "too many") != NULL);
  snprintf(more, sizeof more, "%s/literal/x", pattern); /* literals do not */
  add_ok(r, "POST", more, 2);
  HK_ASSERT_INT_EQ(hk_router_count(r), 2);
  hk_router_free(r);
}

HK_TEST(pattern_and_names_are_copied) {
  hk_router_t *r = router_new();
  char method[8] = "PURGE", pattern[32] = "/cache/:key";
  add_ok(r, method, pattern, 1);
  memset(pattern, 'z', sizeof pattern - 1);
  memset(method, 'Z', sizeof method - 1);
  hk_route_match_t m;
  HK_ASSERT_INT_EQ(match(r, "PURGE", "/cache/k", &m), 0);
  HK_ASSERT_STR_EQ(m.pattern, "/cache/:key");
  expect_param(&m, 0, "key", "k");
  const char *pattern_before = m.pattern;
  for (int i = 0; i < 100; i++) { /* growth elsewhere does not move it */
    char p[32];
    snprintf(p, sizeof p, "/cache%d/:k", i);
    add_ok(r, "GET", p, i);
  }
  HK_ASSERT_INT_EQ(match(r, "PURGE", "/cache/k", &m), 0);
  HK_ASSERT(m.pattern == pattern_before);
  hk_router_free(r);
}

HK_TEST(count_and_free_null) {
  hk_router_free(NULL);
  HK_ASSERT_INT_EQ(hk_router_count(NULL), 0);
  hk_router_t *r = router_new();
  HK_ASSERT_INT_EQ(hk_router_count(r), 0);
  add_ok(r, "GET", "/a", 1);
  add_ok(r, "HEAD", "/a", 2);
  add_ok(r, "*", "/a", 3);
  add_ok(r, "BREW", "/a", 4);
  add_err(r, "GET", "/a");
  HK_ASSERT_INT_EQ(hk_router_count(r), 4);
  hk_router_free(r);
}

HK_TEST(scale_10k_routes) {
  hk_router_t *r = router_new();
  char pattern[64], path[64];
  for (int i = 0; i < 10000; i++) {
    snprintf(pattern, sizeof pattern, "/flat/%d", i);
    add_ok(r, "GET", pattern, i);
    snprintf(pattern, sizeof pattern, "/t/%d/%d/:id/%d", i % 10, i % 100, i);
    add_ok(r, "POST", pattern, 10000 + i);
  }
  add_ok(r, "GET", "/flat/:n", -1);
  HK_ASSERT_INT_EQ(hk_router_count(r), 20001);
  hk_route_match_t m;
  for (int i = 0; i < 10000; i++) {
    snprintf(path, sizeof path, "/flat/%d", i);
    HK_ASSERT_INT_EQ(handler_of(r, "GET", path), i);
    snprintf(path, sizeof path, "/t/%d/%d/x%d/%d", i % 10, i % 100, i, i);
    HK_ASSERT_INT_EQ(match(r, "POST", path, &m), 0);
    HK_ASSERT_INT_EQ(m.handler, 10000 + i);
    snprintf(path, sizeof path, "x%d", i);
    expect_param(&m, 0, "id", path);
  }
  HK_ASSERT_INT_EQ(handler_of(r, "GET", "/flat/10000"), -1);
  HK_ASSERT_INT_EQ(handler_of(r, "POST", "/t/1/1/x/2"), HK_ROUTER_NOT_FOUND);
  expect_405(r, "GET", "/t/1/1/x/1", "POST");
  hk_router_free(r);
}

/* Every allocation of an add fails in turn: the router must come out unchanged each time. */
HK_TEST(allocation_failure_leaves_router_unchanged) {
  static const char *const probes[] = {"/a/b/c", "/a/x/c", "/a/b/c/d/e", "/q/1/2/3/rest", "/z"};
  enum { PROBES = sizeof probes / sizeof probes[0] };
  hk_router_t *r = NULL;
  for (int n = 1;; n++) {
    hk__router_fail_countdown = n;
    int rc = hk_router_new(&r);
    hk__router_fail_countdown = 0;
    if (rc == 0) break;
    HK_ASSERT_INT_EQ(rc, -ENOMEM);
  }
  add_ok(r, "GET", "/a/b/c", 1);
  add_ok(r, "GET", "/a/:x/c", 2);
  static const char *const adds[] = {"/a/b/c/d/e", "/q/:p/:r/*rest", "/z", "/a/b/c"};
  for (size_t a = 0; a < sizeof adds / sizeof adds[0]; a++) {
    int before[PROBES], failures = 0;
    for (int i = 0; i < PROBES; i++) before[i] = handler_of(r, "GET", probes[i]);
    for (int n = 1;; n++) {
      size_t count = hk_router_count(r);
      const char *err = NULL;
      hk__router_fail_countdown = n;
      int rc = hk_router_add(r, "PUT", adds[a], 100 + (int)a, &err);
      hk__router_fail_countdown = 0;
      if (rc == 0) break;
      HK_ASSERT_INT_EQ(rc, -ENOMEM);
      HK_ASSERT_STR_EQ(err, "out of memory");
      HK_ASSERT_INT_EQ(hk_router_count(r), count);
      for (int i = 0; i < PROBES; i++) HK_ASSERT_INT_EQ(handler_of(r, "GET", probes[i]), before[i]);
      HK_ASSERT_INT_EQ(handler_of(r, "PUT", adds[a]), handler_of(r, "POST", adds[a]));
      failures++;
    }
    HK_ASSERT(failures >= 1);
    HK_ASSERT_INT_EQ(handler_of(r, "PUT", adds[a]), 100 + (int)a);
  }
  hk_router_free(r);
}

/* ---- reference model ----------------------------------------------------------------------
 *
 * A naive matcher: every route is tried against the path; of the shapes that match, the winner
 * is the first, in literal < parameter < wildcard order segment by segment, with a route for the
 * method (exact, then "*", then GET for HEAD). The 405 list is the union, in the documented
 * order. Random route tables and paths over a tiny alphabet make collisions common. */

enum { MODEL_ROUTES = 24, MODEL_SEGMENTS = 5 };

typedef struct model_route_s {
  char method[16];
  char pattern[64];
  int handler;
  int segment_count;
  char segments[MODEL_SEGMENTS][8];
} model_route_t;

static unsigned long long rng_state = 0x9e3779b97f4a7c15ULL;

static unsigned rng(unsigned bound) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (unsigned)(rng_state % bound);
}

static int segment_kind(const char *segment) {
  return segment[0] == ':' ? 1 : segment[0] == '*' ? 2 : 0;
}

static void split(const char *path, int *count, char segments[][8]) {
  *count = 0;
  const char *p = path + 1;
  for (;;) {
    const char *slash = strchr(p, '/');
    size_t len = slash ? (size_t)(slash - p) : strlen(p);
    memcpy(segments[*count], p, len);
    segments[*count][len] = '\0';
    (*count)++;
    if (!slash) return;
    p = slash + 1;
  }
}

static bool same_shape(const model_route_t *a, const model_route_t *b) {
  if (a->segment_count != b->segment_count) return false;
  for (int i = 0; i < a->segment_count; i++) {
    int kind = segment_kind(a->segments[i]);
    if (kind != segment_kind(b->segments[i])) return false;
    if (kind == 0 && strcmp(a->segments[i], b->segments[i]) != 0) return false;
  }
  return true;
}

static bool model_matches(const model_route_t *route, int path_count, char path[][8]) {
  for (int i = 0; i < route->segment_count; i++) {
    int kind = segment_kind(route->segments[i]);
    if (kind == 2) return i < path_count;
    if (i >= path_count) return false;
    if (kind == 1 && path[i][0] == '\0') return false;
    if (kind == 0 && strcmp(route->segments[i], path[i]) != 0) return false;
  }
  return route->segment_count == path_count;
}

/* Negative when a's shape comes first. */
static int shape_order(const model_route_t *a, const model_route_t *b) {
  for (int i = 0; i < a->segment_count && i < b->segment_count; i++) {
    int ka = segment_kind(a->segments[i]), kb = segment_kind(b->segments[i]);
    if (ka != kb) return ka - kb;
  }
  return 0;
}

static const model_route_t *model_serving(const model_route_t *routes, int count,
                                          const model_route_t *shape, const char *method) {
  const char *tries[] = {method, "*", strcmp(method, "HEAD") == 0 ? "GET" : NULL};
  for (int t = 0; t < 3 && tries[t]; t++) {
    for (int i = 0; i < count; i++) {
      if (same_shape(&routes[i], shape) && strcmp(routes[i].method, tries[t]) == 0)
        return &routes[i];
    }
  }
  return NULL;
}

static void list_append(char *list, size_t size, const char *method) {
  size_t len = strlen(list), add = strlen(method);
  HK_ASSERT(len + 2 + add < size);
  if (len > 0) {
    memcpy(list + len, ", ", 2);
    len += 2;
  }
  memcpy(list + len, method, add + 1);
}

static void model_check(const hk_router_t *router, const model_route_t *routes, int count,
                        const char *method, const char *path) {
  char path_segments[16][8];
  int path_count;
  split(path, &path_count, path_segments);
  /* Matching shapes in precedence order (one representative route each, registration order). */
  const model_route_t *shapes[MODEL_ROUTES];
  int shape_count = 0;
  for (int i = 0; i < count; i++) {
    if (!model_matches(&routes[i], path_count, path_segments)) continue;
    bool seen = false;
    for (int s = 0; s < shape_count; s++) seen = seen || same_shape(shapes[s], &routes[i]);
    if (seen) continue;
    int at = shape_count++;
    while (at > 0 && shape_order(&routes[i], shapes[at - 1]) < 0) {
      shapes[at] = shapes[at - 1];
      at--;
    }
    shapes[at] = &routes[i];
  }
  hk_route_match_t m;
  char allow[256];
  int rc = hk_router_match(router, method, path, strlen(path), &m, allow, sizeof allow);
  for (int s = 0; s < shape_count; s++) {
    const model_route_t *winner = model_serving(routes, count, shapes[s], method);
    if (winner == NULL) continue;
    if (rc != 0) HK_FAIL_("%s %s: rc %d, expected %s", method, path, rc, winner->pattern);
    HK_ASSERT_INT_EQ(m.handler, winner->handler);
    HK_ASSERT_STR_EQ(m.pattern, winner->pattern);
    size_t p = 0;
    for (int i = 0; i < winner->segment_count; i++) {
      int kind = segment_kind(winner->segments[i]);
      if (kind == 0) continue;
      HK_ASSERT(p < m.param_count);
      HK_ASSERT_STR_EQ(m.params[p].name, winner->segments[i] + 1);
      if (kind == 1) {
        HK_ASSERT_MEM_EQ(m.params[p].value, m.params[p].value_len, path_segments[i],
                         strlen(path_segments[i]));
      } else {
        const char *rest = path;
        for (int k = 0; k <= i; k++) rest = strchr(rest, '/') + 1;
        HK_ASSERT_MEM_EQ(m.params[p].value, m.params[p].value_len, rest, strlen(rest));
      }
      p++;
    }
    HK_ASSERT_INT_EQ(m.param_count, p);
    return;
  }
  if (shape_count == 0) {
    if (rc != HK_ROUTER_NOT_FOUND) HK_FAIL_("%s %s: rc %d, expected 404", method, path, rc);
    return;
  }
  if (rc != HK_ROUTER_METHOD_NOT_ALLOWED) HK_FAIL_("%s %s: rc %d, expected 405", method, path, rc);
  static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
  char expected[256] = "";
  for (int k = 0; k < 7; k++) {
    bool any = false;
    for (int s = 0; s < shape_count; s++) {
      any = any || model_serving(routes, count, shapes[s], known[k]) != NULL;
    }
    if (any) list_append(expected, sizeof expected, known[k]);
  }
  for (int s = 0; s < shape_count; s++) {
    for (int i = 0; i < count; i++) {
      if (!same_shape(&routes[i], shapes[s])) continue;
      bool is_known = strcmp(routes[i].method, "*") == 0;
      for (int k = 0; k < 7; k++) is_known = is_known || strcmp(routes[i].method, known[k]) == 0;
      if (is_known || strstr(expected, routes[i].method) != NULL) continue;
      list_append(expected, sizeof expected, routes[i].method);
    }
  }
  HK_ASSERT_STR_EQ(allow, expected);
}

HK_TEST(matches_reference_model) {
  static const char *const literal[] = {"a", "b", ""};
  static const char *const path_segment[] = {"a", "b", "c", ""};
  static const char *const methods[] = {"GET", "HEAD", "POST", "DELETE", "*", "PURGE", "LOCK"};
  for (int round = 0; round < 400; round++) {
    hk_router_t *r = router_new();
    model_route_t routes[MODEL_ROUTES];
    int count = 0;
    for (int attempt = 0; attempt < MODEL_ROUTES; attempt++) {
      model_route_t *route = &routes[count];
      memset(route, 0, sizeof *route);
      strcpy(route->method, methods[rng(7)]);
      route->segment_count = 1 + (int)rng(MODEL_SEGMENTS);
      route->handler = round * 100 + attempt;
      int params = 0;
      for (int i = 0; i < route->segment_count; i++) {
        unsigned pick = rng(10);
        bool last = i == route->segment_count - 1;
        if (pick < 6) strcpy(route->segments[i], literal[rng(3)]);
        else if (pick < 9 || !last) memcpy(route->segments[i], ":p0", 4);
        else memcpy(route->segments[i], "*w0", 4);
        if (pick >= 6) route->segments[i][2] = (char)('0' + params++); /* unique names */
        strcat(route->pattern, "/");
        strcat(route->pattern, route->segments[i]);
      }
      bool duplicate = false;
      for (int i = 0; i < count; i++) {
        if (same_shape(&routes[i], route) && strcmp(routes[i].method, route->method) == 0)
          duplicate = true;
      }
      const char *err = NULL;
      int rc = hk_router_add(r, route->method, route->pattern, route->handler, &err);
      HK_ASSERT_INT_EQ(rc, duplicate ? -EINVAL : 0);
      if (!duplicate) count++;
    }
    HK_ASSERT_INT_EQ(hk_router_count(r), count);
    for (int probe = 0; probe < 60; probe++) {
      char path[64] = "";
      int segments = 1 + (int)rng(MODEL_SEGMENTS + 1);
      for (int i = 0; i < segments; i++) {
        snprintf(path + strlen(path), sizeof path - strlen(path), "/%s", path_segment[rng(4)]);
      }
      static const char *const request_methods[] = {"GET",   "HEAD", "POST", "PUT",
                                                    "PURGE", "LOCK", "BREW"};
      model_check(r, routes, count, request_methods[rng(7)], path);
    }
    hk_router_free(r);
  }
}

HK_TEST_MAIN(HK_CASE(method_not_allowed_names_the_pattern), HK_CASE(exact_match), HK_CASE(root_path), HK_CASE(params_values_and_names),
             HK_CASE(multiple_params), HK_CASE(literal_beats_param_any_order),
             HK_CASE(param_beats_wildcard), HK_CASE(backtracking),
             HK_CASE(backtracking_deep_to_wildcard), HK_CASE(wildcard_rest),
             HK_CASE(not_found_vs_method_not_allowed), HK_CASE(allow_order_and_union),
             HK_CASE(allow_truncation), HK_CASE(head_falls_back_to_get), HK_CASE(star_method),
             HK_CASE(precedence_is_method_aware), HK_CASE(trailing_slash_distinct),
             HK_CASE(empty_segments), HK_CASE(special_chars_only_at_segment_start),
             HK_CASE(empty_or_relative_path), HK_CASE(query_is_the_callers_job),
             HK_CASE(path_not_nul_terminated), HK_CASE(other_methods),
             HK_CASE(duplicate_registration), HK_CASE(invalid_patterns), HK_CASE(invalid_methods),
             HK_CASE(too_many_params), HK_CASE(pattern_and_names_are_copied),
             HK_CASE(count_and_free_null), HK_CASE(scale_10k_routes),
             HK_CASE(allocation_failure_leaves_router_unchanged),
             HK_CASE(matches_reference_model))
