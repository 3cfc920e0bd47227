/* hk_embedded: the Lua runtime (lua/) compiled into the binary by host/embed_lua.cmake.
 * The table ends with an entry whose name is NULL. */
#ifndef HK_EMBEDDED_H
#define HK_EMBEDDED_H

#include <stddef.h>

typedef struct hk_embedded_module_s {
  const char *name;     /* require() name: "hancock", "hancock.llm" */
  const char *chunk;    /* chunk name for tracebacks: "lua/hancock.lua" */
  const char *source;
  size_t size;
} hk_embedded_module_t;

extern const hk_embedded_module_t hk_embedded_lua[];

#endif
