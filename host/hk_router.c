/* hk_router: the route table, a trie of path segments with one route slot per method on each
 * node. It owns the patterns and parameter names; handlers are opaque ints it never touches.
 * Entry points: hk_router_add at load time, hk_router_match once per request (no allocation). */
#include "hk_router.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "hk_text.h"

/* ---- data ----------------------------------------------------------------------------------
 *
 * A pattern "/v1/items/:id" is the chain root -> "v1" -> "items" -> :param. Each node has any
 * number of literal children (kept sorted for binary search), at most one parameter child and at
 * most one wildcard child (a leaf). Routes hang off the node their pattern ends at, one slot per
 * well-known method plus "*", and a short list for any other method. Two patterns of the same
 * shape ("/a/:x", "/a/:y") end at the same node, so parameter names belong to the route, not to
 * the node. Every node other than the root leads to at least one route. */

enum { SLOT_GET, SLOT_HEAD, SLOT_POST, SLOT_PUT, SLOT_DELETE, SLOT_PATCH, SLOT_OPTIONS,
       KNOWN_METHOD_COUNT, SLOT_ANY = KNOWN_METHOD_COUNT, SLOT_COUNT, SLOT_OTHER = -1 };

/* The order of the Allow list. */
static const char *const known_methods[KNOWN_METHOD_COUNT] = {"GET",   "HEAD",  "POST",   "PUT",
                                                              "DELETE", "PATCH", "OPTIONS"};

#define METHOD_MAX_LEN 32

enum { KIND_ROOT, KIND_LITERAL, KIND_PARAM, KIND_WILDCARD };

typedef struct route_s {
  struct route_s *next; /* the node's list of other-method routes */
  const char *method;   /* other-method routes only; into storage */
  const char *pattern;  /* into storage */
  int handler;
  size_t param_count;
  const char *names[HK_ROUTER_MAX_PARAMS]; /* into storage, in pattern order */
  char storage[];
} route_t;

typedef struct node_s node_t;
struct node_s {
  node_t *parent;
  node_t *next_allocated; /* the router's list of every node, newest first */
  node_t **literals;      /* sorted by (length, bytes) */
  size_t literal_count;
  size_t literal_cap;
  node_t *param;
  node_t *wildcard;
  route_t *slots[SLOT_COUNT];
  route_t *others;
  int kind;
  size_t segment_len; /* literal nodes */
  char segment[];
};

struct hk_router_s {
  node_t *root;
  node_t *nodes; /* every node including the root, newest first: freeing needs no recursion */
  size_t route_count;
};

/* Test hook for the allocation-failure paths: when positive, it counts allocations down and the
 * one that brings it to zero fails. Production code never sets it; the unit test declares it
 * itself, so it stays out of hk_router.h. */
extern int hk__router_fail_countdown;
int hk__router_fail_countdown;

static void *router_malloc(size_t size) {
  if (hk__router_fail_countdown > 0 && --hk__router_fail_countdown == 0) return NULL;
  return malloc(size);
}

static void *router_realloc(void *ptr, size_t size) {
  if (hk__router_fail_countdown > 0 && --hk__router_fail_countdown == 0) return NULL;
  return realloc(ptr, size);
}

/* ---- methods -------------------------------------------------------------------------------- */

/* The slot of a request method: a known method, or SLOT_OTHER (never SLOT_ANY: a request whose
 * method is literally "*" is just an unknown method). */
static int known_slot(const char *method) {
  for (int i = 0; i < KNOWN_METHOD_COUNT; i++) {
    if (strcmp(method, known_methods[i]) == 0) return i;
  }
  return SLOT_OTHER;
}

static bool valid_method(const char *method) {
  if (strcmp(method, "*") == 0) return true;
  size_t len = 0;
  for (const char *p = method; *p != '\0'; p++, len++) {
    if (!((*p >= 'A' && *p <= 'Z') || *p == '-' || *p == '_')) return false;
  }
  return len > 0 && len <= METHOD_MAX_LEN;
}

/* The route that serves `method` on this node: the exact method, else "*", else (for HEAD) GET. */
static const route_t *node_route_for(const node_t *node, int slot, const char *method) {
  if (slot != SLOT_OTHER) {
    if (node->slots[slot] != NULL) return node->slots[slot];
  } else {
    for (const route_t *r = node->others; r != NULL; r = r->next) {
      if (strcmp(r->method, method) == 0) return r;
    }
  }
  if (node->slots[SLOT_ANY] != NULL) return node->slots[SLOT_ANY];
  if (slot == SLOT_HEAD) return node->slots[SLOT_GET];
  return NULL;
}

/* ---- nodes ---------------------------------------------------------------------------------- */

static int segment_compare(const char *a, size_t a_len, const char *b, size_t b_len) {
  if (a_len != b_len) return a_len < b_len ? -1 : 1;
  return a_len == 0 ? 0 : memcmp(a, b, a_len);
}

/* Binary search of the literal children; *index is where the segment is or would go. */
static node_t *find_literal(const node_t *node, const char *segment, size_t len, size_t *index) {
  size_t lo = 0, hi = node->literal_count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const node_t *child = node->literals[mid];
    int cmp = segment_compare(segment, len, child->segment, child->segment_len);
    if (cmp == 0) {
      if (index != NULL) *index = mid;
      return node->literals[mid];
    }
    if (cmp < 0) hi = mid;
    else lo = mid + 1;
  }
  if (index != NULL) *index = lo;
  return NULL;
}

static node_t *node_new(hk_router_t *router, node_t *parent, int kind, const char *segment,
                        size_t len) {
  node_t *node = router_malloc(sizeof *node + len + 1);
  if (node == NULL) return NULL;
  memset(node, 0, sizeof *node);
  node->parent = parent;
  node->kind = kind;
  node->segment_len = len;
  if (len > 0) memcpy(node->segment, segment, len);
  node->segment[len] = '\0';
  node->next_allocated = router->nodes;
  router->nodes = node;
  return node;
}

static void node_free(node_t *node) {
  for (int i = 0; i < SLOT_COUNT; i++) free(node->slots[i]);
  route_t *r = node->others;
  while (r != NULL) {
    route_t *next = r->next;
    free(r);
    r = next;
  }
  free(node->literals);
  free(node);
}

/* Detaches a node (which must have no children and no routes) from its parent. */
static void node_unlink(node_t *node) {
  node_t *parent = node->parent;
  assert(node->literal_count == 0 && node->param == NULL && node->wildcard == NULL);
  if (node->kind == KIND_PARAM) {
    parent->param = NULL;
  } else if (node->kind == KIND_WILDCARD) {
    parent->wildcard = NULL;
  } else {
    size_t index;
    node_t *found = find_literal(parent, node->segment, node->segment_len, &index);
    assert(found == node);
    (void)found;
    memmove(&parent->literals[index], &parent->literals[index + 1],
            (parent->literal_count - index - 1) * sizeof parent->literals[0]);
    parent->literal_count--;
  }
}

/* The literal child for a segment, created if missing. NULL only on allocation failure. */
static node_t *literal_child(hk_router_t *router, node_t *node, const char *segment, size_t len) {
  size_t index;
  node_t *child = find_literal(node, segment, len, &index);
  if (child != NULL) return child;
  if (node->literal_count == node->literal_cap) {
    size_t cap = node->literal_cap ? node->literal_cap * 2 : 4;
    node_t **literals = router_realloc(node->literals, cap * sizeof *literals);
    if (literals == NULL) return NULL;
    node->literals = literals;
    node->literal_cap = cap;
  }
  child = node_new(router, node, KIND_LITERAL, segment, len);
  if (child == NULL) return NULL;
  memmove(&node->literals[index + 1], &node->literals[index],
          (node->literal_count - index) * sizeof node->literals[0]);
  node->literals[index] = child;
  node->literal_count++;
  return child;
}

/* ---- router --------------------------------------------------------------------------------- */

int hk_router_new(hk_router_t **out) {
  hk_router_t *router = router_malloc(sizeof *router);
  if (router == NULL) return -ENOMEM;
  router->nodes = NULL;
  router->route_count = 0;
  router->root = node_new(router, NULL, KIND_ROOT, "", 0);
  if (router->root == NULL) {
    free(router);
    return -ENOMEM;
  }
  *out = router;
  return 0;
}

void hk_router_free(hk_router_t *router) {
  if (router == NULL) return;
  node_t *node = router->nodes;
  while (node != NULL) {
    node_t *next = node->next_allocated;
    node_free(node);
    node = next;
  }
  free(router);
}

size_t hk_router_count(const hk_router_t *router) {
  return router != NULL ? router->route_count : 0;
}

static bool valid_param_name(const char *name, size_t len) {
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)name[i];
    if (!hk_text_is_alnum(c) && c != '_') return false;
  }
  return true;
}

/* Checks a pattern and fills the parameter names (start and length in the pattern). Returns
 * NULL or the error message. */
static const char *parse_pattern(const char *pattern, size_t *count, size_t name_start[],
                                 size_t name_len[]) {
  if (pattern[0] != '/') return "pattern must start with '/'";
  *count = 0;
  const char *seg = pattern + 1;
  for (;;) {
    const char *slash = strchr(seg, '/');
    size_t len = slash != NULL ? (size_t)(slash - seg) : strlen(seg);
    if (len > 0 && (seg[0] == ':' || seg[0] == '*')) {
      if (seg[0] == '*' && slash != NULL) return "wildcard must be the last segment";
      if (len == 1) return "empty parameter name";
      if (!valid_param_name(seg + 1, len - 1))
        return "parameter names are letters, digits and '_'";
      if (*count == HK_ROUTER_MAX_PARAMS) return "too many parameters";
      for (size_t i = 0; i < *count; i++) {
        if (name_len[i] == len - 1 && memcmp(pattern + name_start[i], seg + 1, len - 1) == 0)
          return "duplicate parameter name";
      }
      name_start[*count] = (size_t)(seg + 1 - pattern);
      name_len[*count] = len - 1;
      (*count)++;
    }
    if (slash == NULL) return NULL;
    seg = slash + 1;
  }
}

/* One allocation holding the route, its pattern, its parameter names and (for a method outside
 * the fixed slots) its method. */
static route_t *route_new(const char *method, bool store_method, const char *pattern, int handler,
                          size_t count, const size_t name_start[], const size_t name_len[]) {
  size_t pattern_size = strlen(pattern) + 1;
  size_t method_size = store_method ? strlen(method) + 1 : 0;
  size_t names_size = 0;
  for (size_t i = 0; i < count; i++) names_size += name_len[i] + 1;
  route_t *route = router_malloc(sizeof *route + pattern_size + names_size + method_size);
  if (route == NULL) return NULL;
  memset(route, 0, sizeof *route);
  char *p = route->storage;
  memcpy(p, pattern, pattern_size);
  route->pattern = p;
  p += pattern_size;
  for (size_t i = 0; i < count; i++) {
    memcpy(p, pattern + name_start[i], name_len[i]);
    p[name_len[i]] = '\0';
    route->names[i] = p;
    p += name_len[i] + 1;
  }
  if (store_method) {
    memcpy(p, method, method_size);
    route->method = p;
  }
  route->handler = handler;
  route->param_count = count;
  return route;
}

int hk_router_add(hk_router_t *router, const char *method, const char *pattern, int handler,
                  const char **err) {
  return hk_router_add_ex(router, method, pattern, handler, NULL, err);
}

int hk_router_add_ex(hk_router_t *router, const char *method, const char *pattern, int handler,
                     int *conflict, const char **err) {
  const char *message = NULL;
  int rc = -EINVAL;
  route_t *route = NULL;
  node_t *mark = router->nodes; /* nodes newer than this are ours to remove on failure */
  size_t count = 0, name_start[HK_ROUTER_MAX_PARAMS], name_len[HK_ROUTER_MAX_PARAMS];
  int slot;
  node_t *node;
  const char *seg;

  if (method == NULL || !valid_method(method)) {
    message = "invalid method: use upper-case letters (e.g. \"GET\") or \"*\"";
    goto fail;
  }
  if (pattern == NULL) {
    message = "pattern must start with '/'";
    goto fail;
  }
  message = parse_pattern(pattern, &count, name_start, name_len);
  if (message != NULL) goto fail;

  slot = strcmp(method, "*") == 0 ? SLOT_ANY : known_slot(method);
  route = route_new(method, slot == SLOT_OTHER, pattern, handler, count, name_start, name_len);
  if (route == NULL) goto nomem;

  node = router->root;
  seg = pattern + 1;
  for (;;) {
    const char *slash = strchr(seg, '/');
    size_t len = slash != NULL ? (size_t)(slash - seg) : strlen(seg);
    node_t *child;
    if (len > 0 && seg[0] == ':') {
      if (node->param == NULL) node->param = node_new(router, node, KIND_PARAM, "", 0);
      child = node->param;
    } else if (len > 0 && seg[0] == '*') {
      if (node->wildcard == NULL) node->wildcard = node_new(router, node, KIND_WILDCARD, "", 0);
      child = node->wildcard;
    } else {
      child = literal_child(router, node, seg, len);
    }
    if (child == NULL) goto nomem;
    node = child;
    if (slash == NULL) break;
    seg = slash + 1;
  }

  route_t **place = slot == SLOT_OTHER ? &node->others : &node->slots[slot];
  if (slot == SLOT_OTHER) {
    while (*place != NULL && strcmp((*place)->method, method) != 0) place = &(*place)->next;
  }
  if (*place != NULL) {
    message = "route already registered for this method and pattern";
    if (conflict != NULL) *conflict = (*place)->handler;
    goto fail;
  }
  *place = route;
  router->route_count++;
  return 0;

nomem:
  rc = -ENOMEM;
  message = "out of memory";
fail:
  /* Remove the nodes this call created, newest (deepest) first, so the trie is as it was. */
  while (router->nodes != mark) {
    node_t *created = router->nodes;
    router->nodes = created->next_allocated;
    node_unlink(created);
    node_free(created);
  }
  free(route);
  if (err != NULL) *err = message;
  return rc;
}

/* ---- matching ------------------------------------------------------------------------------
 *
 * A depth-first walk of the nodes that match a prefix of the path, in precedence order: at each
 * segment the literal child, then the parameter child, then the wildcard child. It yields the
 * candidate end nodes one at a time, so matching stops at the first one that serves the method
 * and the 405 Allow list can be the union of the methods of every candidate. The walk keeps no
 * stack: a node's segment is found again from the offset where it ends (the segment runs back to
 * the previous '/'), so backtracking costs a rescan of the segment and nothing is allocated. */

enum { STEP_ENTER, STEP_PARAM, STEP_WILDCARD, STEP_UP };

typedef struct walk_s {
  const char *path;
  size_t path_len;
  const node_t *node; /* the current node */
  size_t end;         /* the offset just past the node's segment: path_len or a '/' */
  int step;           /* what to try next at the current node */
  size_t rest;        /* when a wildcard was yielded: the offset where its value starts */
} walk_t;

static void walk_init(walk_t *walk, const hk_router_t *router, const char *path, size_t path_len) {
  assert(path_len > 0 && path[0] == '/');
  walk->path = path;
  walk->path_len = path_len;
  walk->node = router->root;
  walk->end = 0;
  walk->step = STEP_ENTER;
  walk->rest = 0;
}

/* The offset where the segment ending at `end` starts (just after its '/'). */
static size_t segment_start(const char *path, size_t end) {
  assert(end > 0);
  size_t i = end;
  while (path[i - 1] != '/') i--;
  return i;
}

/* The offset where the segment after walk->end ends. */
static size_t next_segment_end(const walk_t *walk) {
  assert(walk->end < walk->path_len && walk->path[walk->end] == '/');
  size_t start = walk->end + 1;
  const char *slash = memchr(walk->path + start, '/', walk->path_len - start);
  return slash != NULL ? (size_t)(slash - walk->path) : walk->path_len;
}

/* The next candidate: a node whose segments cover the whole path, or a wildcard node (then
 * walk->node is its parent and walk->rest where its value starts). NULL when there are no more. */
static const node_t *walk_next(walk_t *walk) {
  for (;;) {
    const node_t *node = walk->node;
    if (walk->step == STEP_ENTER) {
      if (walk->end == walk->path_len) {
        walk->step = STEP_UP;
        return node;
      }
      size_t start = walk->end + 1, stop = next_segment_end(walk);
      const node_t *child = find_literal(node, walk->path + start, stop - start, NULL);
      walk->step = STEP_PARAM;
      if (child != NULL) {
        walk->node = child;
        walk->end = stop;
        walk->step = STEP_ENTER;
      }
    } else if (walk->step == STEP_PARAM) {
      size_t start = walk->end + 1, stop = next_segment_end(walk);
      walk->step = STEP_WILDCARD;
      if (node->param != NULL && stop > start) { /* a parameter is never empty */
        walk->node = node->param;
        walk->end = stop;
        walk->step = STEP_ENTER;
      }
    } else if (walk->step == STEP_WILDCARD) {
      walk->step = STEP_UP;
      if (node->wildcard != NULL) {
        walk->rest = walk->end + 1;
        return node->wildcard;
      }
    } else {
      if (node->parent == NULL) return NULL; /* back at the root: done */
      size_t start = segment_start(walk->path, walk->end);
      walk->step = node->kind == KIND_LITERAL ? STEP_PARAM : STEP_WILDCARD;
      walk->node = node->parent;
      walk->end = start - 1;
    }
  }
}

/* Fills the parameters of a match by walking from the candidate back up to the root. */
static void fill_params(hk_route_match_t *match, const route_t *route, const walk_t *walk,
                        const node_t *candidate) {
  size_t i = route->param_count;
  if (candidate->kind == KIND_WILDCARD) {
    i--;
    match->params[i].name = route->names[i];
    match->params[i].value = walk->path + walk->rest;
    match->params[i].value_len = walk->path_len - walk->rest;
  }
  const node_t *node = walk->node;
  size_t end = walk->end;
  while (node->parent != NULL) {
    size_t start = segment_start(walk->path, end);
    if (node->kind == KIND_PARAM) {
      assert(i > 0);
      i--;
      match->params[i].name = route->names[i];
      match->params[i].value = walk->path + start;
      match->params[i].value_len = end - start;
    }
    node = node->parent;
    end = start - 1;
  }
  assert(i == 0);
  match->param_count = route->param_count;
}

typedef struct allow_s {
  char *buf;
  size_t size;
  size_t len;
  bool full; /* a method did not fit: the list is truncated, stop here */
} allow_t;

static bool allow_contains(const allow_t *allow, const char *method) {
  size_t len = strlen(method);
  const char *p = allow->buf;
  while (p < allow->buf + allow->len) {
    const char *comma = strchr(p, ',');
    size_t token_len = comma != NULL ? (size_t)(comma - p) : strlen(p);
    if (token_len == len && memcmp(p, method, len) == 0) return true;
    if (comma == NULL) break;
    p = comma + 2;
  }
  return false;
}

/* Appends whole methods only, so a truncated list never ends in half a method name. */
static void allow_append(allow_t *allow, const char *method) {
  if (allow->size == 0) allow->full = true; /* also keeps a NULL buf out of the arithmetic */
  if (allow->full || allow_contains(allow, method)) return;
  size_t len = strlen(method), sep = allow->len > 0 ? 2 : 0;
  if (allow->len + sep + len + 1 > allow->size) {
    allow->full = true;
    return;
  }
  memcpy(allow->buf + allow->len, ", ", sep);
  memcpy(allow->buf + allow->len + sep, method, len + 1);
  allow->len += sep + len;
}

int hk_router_match(const hk_router_t *router, const char *method, const char *path,
                    size_t path_len, hk_route_match_t *match, char *allow, size_t allow_size) {
  if (allow != NULL && allow_size > 0) allow[0] = '\0';
  if (path_len == 0 || path[0] != '/') return HK_ROUTER_NOT_FOUND;

  int slot = known_slot(method);
  unsigned allowed = 0; /* bit per known slot */
  bool others = false;
  walk_t walk;
  walk_init(&walk, router, path, path_len);
  const node_t *candidate;
  const char *first_pattern = NULL; /* of the highest-precedence pattern matching the path */
  while ((candidate = walk_next(&walk)) != NULL) {
    const route_t *route = node_route_for(candidate, slot, method);
    if (route != NULL) {
      match->handler = route->handler;
      match->pattern = route->pattern;
      fill_params(match, route, &walk, candidate);
      return 0;
    }
    assert(candidate->slots[SLOT_ANY] == NULL); /* "*" would have served any method */
    for (int i = 0; i < KNOWN_METHOD_COUNT; i++) {
      if (candidate->slots[i] != NULL) {
        allowed |= 1u << i;
        if (first_pattern == NULL) first_pattern = candidate->slots[i]->pattern;
      }
    }
    if (candidate->others != NULL) {
      others = true;
      if (first_pattern == NULL) first_pattern = candidate->others->pattern;
    }
  }
  if (allowed == 0 && !others) return HK_ROUTER_NOT_FOUND;
  /* A 405 still has an endpoint: metrics and logs label it with the pattern, not the path. */
  match->pattern = first_pattern;
  match->param_count = 0;

  if (allowed & (1u << SLOT_GET)) allowed |= 1u << SLOT_HEAD;
  allow_t list = {allow, allow != NULL ? allow_size : 0, 0, false};
  for (int i = 0; i < KNOWN_METHOD_COUNT; i++) {
    if (allowed & (1u << i)) allow_append(&list, known_methods[i]);
  }
  if (others) { /* rare: walk again for the other methods, in walk and registration order */
    walk_init(&walk, router, path, path_len);
    while ((candidate = walk_next(&walk)) != NULL) {
      for (const route_t *r = candidate->others; r != NULL; r = r->next) {
        allow_append(&list, r->method);
      }
    }
  }
  return HK_ROUTER_METHOD_NOT_ALLOWED;
}
