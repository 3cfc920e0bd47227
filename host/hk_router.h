/* hk_router: maps (method, path) to a handler reference. Pure: no sockets, no Lua; the handler
 * is an opaque int the caller owns (a luaL_ref in practice).
 *
 * Patterns are absolute paths split on '/': literal segments ("/v1/chat"), named parameters
 * (":id" matches one non-empty segment) and an optional final "*name" that matches the rest of
 * the path (possibly empty). A literal segment wins over a parameter, which wins over a
 * wildcard, segment by segment, whatever the registration order. Trailing slashes matter
 * ("/a" and "/a/" are different paths). HEAD matches a GET route when no HEAD route exists.
 *
 * Details of the contract:
 * - ':' and '*' are special only as the first character of a segment; there is no escaping.
 *   Parameter and wildcard names are letters, digits and '_' ("*" alone is an error), and the
 *   wildcard counts towards HK_ROUTER_MAX_PARAMS. Params are reported in pattern order.
 * - "/static/" followed by the wildcard "*path" matches "/static/" (path "") and "/static/a/b"
 *   (path "a/b"), not "/static".
 * - An empty segment is a segment: "/" is one empty segment, "/a/" ends in one, "/a//b" has one
 *   in the middle. A literal pattern segment may be empty; a parameter never matches one.
 * - The path is compared byte for byte. Stripping the query string ("?...") and deciding whether
 *   to percent-decode or remove dot segments is the caller's job, done before matching.
 * - Methods: GET, HEAD, POST, PUT, DELETE, PATCH and OPTIONS have fixed slots; any other token
 *   (upper-case letters, '-' or '_', at most 32 characters, e.g. "PROPFIND") is kept in a short
 *   per-pattern list. Methods compare case-sensitively. On one pattern the exact method wins,
 *   then "*", then (for HEAD only) GET.
 * - Precedence is method-aware: the match is the first pattern, in literal > parameter >
 *   wildcard order, that serves the request method. So with "GET /a/b" and "POST /a/:x",
 *   "POST /a/b" matches "/a/:x". The 405 Allow list is the union over every pattern matching the
 *   path. A "*" route matching the path means there is never a 405.
 * - Matching allocates nothing and only reads the router: once built, a router may be matched
 *   from several threads at once. Adding is not thread-safe. */
#ifndef HK_ROUTER_H
#define HK_ROUTER_H

#include <stddef.h>

#define HK_ROUTER_MAX_PARAMS 16
#define HK_ROUTER_NOT_FOUND (-2)          /* no pattern matches the path: 404 */
#define HK_ROUTER_METHOD_NOT_ALLOWED (-3) /* the path matches, the method does not: 405 */

typedef struct hk_router_s hk_router_t;

typedef struct hk_route_param_s {
  const char *name; /* owned by the router, NUL-terminated */
  const char *value; /* points into the matched path; not NUL-terminated */
  size_t value_len;
} hk_route_param_t;

typedef struct hk_route_match_s {
  int handler;         /* the int given to hk_router_add */
  const char *pattern; /* owned by the router: the metrics/log "endpoint" */
  size_t param_count;
  hk_route_param_t params[HK_ROUTER_MAX_PARAMS];
} hk_route_match_t;

int hk_router_new(hk_router_t **out);
void hk_router_free(hk_router_t *router); /* NULL is a no-op */

/* Adds a route. `method` is an HTTP token (upper-case letters, e.g. "GET", "POST") or "*" for
 * every method. Errors (-EINVAL, message in *err, a static string): bad method, pattern not
 * starting with '/', empty or invalid parameter name, wildcard not last, more than
 * HK_ROUTER_MAX_PARAMS parameters, duplicate parameter names, the same method and pattern shape
 * registered twice ("/a/:x" and "/a/:y" are the same shape). -ENOMEM on allocation failure
 * ("out of memory" in *err). A failed call leaves the router exactly as it was. err may be NULL.
 * The router copies `method` and `pattern`. */
int hk_router_add(hk_router_t *router, const char *method, const char *pattern, int handler,
                  const char **err);
/* The same; for a duplicate, when conflict is not NULL, the handler int of the route already
 * registered goes to *conflict (so the caller can say where that one came from). */
int hk_router_add_ex(hk_router_t *router, const char *method, const char *pattern, int handler,
                     int *conflict, const char **err);

/* Matches a path (no query string; not NUL-terminated). Returns 0 and fills *match, or
 * HK_ROUTER_NOT_FOUND, or HK_ROUTER_METHOD_NOT_ALLOWED after setting match->pattern to the
 * highest-precedence pattern matching the path (no params) and writing the allowed methods,
 * comma-separated in a stable order ("GET, HEAD, POST"), into allow (always NUL-terminated,
 * truncated to allow_size). HEAD is listed whenever GET is.
 * The order is GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, then other methods (by pattern
 * precedence, then registration order). Truncation drops whole methods; 64 bytes hold all seven
 * fixed ones. allow is set to "" on every other outcome; it may be NULL when allow_size is 0.
 * *match is written only on success. An empty path or one not starting with '/' is
 * HK_ROUTER_NOT_FOUND. `method` is NUL-terminated; reads of `path` stay within path_len. */
int hk_router_match(const hk_router_t *router, const char *method, const char *path,
                    size_t path_len, hk_route_match_t *match, char *allow, size_t allow_size);

/* Number of routes added, for logs. */
size_t hk_router_count(const hk_router_t *router);

#endif
