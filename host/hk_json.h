/* hk_json: JSON for the core and the Lua boundary. Owns JSON string escaping (used by the
 * logger and responses), decoding JSON text into Lua values (a strict RFC 8259 parser of its
 * own, not cJSON, which keeps numbers only as doubles: see hk_json.c) and encoding Lua values as
 * JSON text. Knows nothing of sockets or requests.
 *
 * Lua mapping, lossless both ways:
 *   null            <-> hk_json_null(): one light userdata (NULL), exposed as hk.json.null
 *   [] / [..]       <-> a table whose metatable is the array marker (registry key
 *                       HK_JSON_ARRAY_MT); hk.json.array(t) sets it. Decoded arrays carry it,
 *                       so re-encoding keeps [] vs {}.
 *   {}              <-  a table without the marker that is empty
 *   {..}            <-> a table with string keys
 *   a table without the marker whose keys are exactly 1..n (n >= 1) encodes as an array.
 *   integers stay integers (Lua 5.4 subtype) when the JSON number has no fraction/exponent and
 *   fits in 64 bits; other numbers are floats. NaN/inf cannot be encoded (error).
 * UTF-8: decoding rejects invalid UTF-8 (RFC 8259) with an error naming the byte offset;
 * encoding replaces each invalid byte sequence in a Lua string with U+FFFD, so output is always
 * valid UTF-8. Nesting deeper than HK_JSON_MAX_DEPTH is an error both ways (also catches cycles). */
#ifndef HK_JSON_H
#define HK_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include <lua.h>

#include "hk_buf.h"

#define HK_JSON_MAX_DEPTH 128
#define HK_JSON_ARRAY_MT "hancock.json.array"

/* Flags for hk_json_append_string. */
enum {
  /* Escape every byte outside printable ASCII: valid UTF-8 sequences become \uXXXX (surrogate
   * pairs above U+FFFF), invalid bytes become \ufffd. Used for log lines. */
  HK_JSON_ASCII = 1 << 0,
};

/* Appends `str` as a quoted JSON string literal ("..."), escaping quote, backslash and control
 * characters (\n \r \t \b \f, others \u00XX). Without HK_JSON_ASCII valid UTF-8 is copied and
 * invalid sequences become U+FFFD. Returns 0 or -ENOMEM. */
int hk_json_append_string(hk_buf_t *buf, const char *str, size_t len, int flags);

/* Registers the array metatable in the registry (idempotent). Call once per lua_State before
 * using the functions below. [-0, +0, m] */
void hk_json_init(lua_State *L);

/* Decodes `len` bytes of JSON text and pushes the value. On error pushes nothing, returns
 * -EINVAL and writes a message such as "invalid JSON at byte 12" into err. [-0, +(0|1), m] */
int hk_json_decode(lua_State *L, const char *text, size_t len, char *err, size_t errsize);

/* Appends the JSON encoding of the value at `idx` to buf. On error returns -EINVAL (or
 * -ENOMEM), writes a message such as "cannot encode a function" into err; buf may then hold a
 * partial encoding the caller discards. Never calls metamethods other than reading the array
 * marker. [-0, +0, m] */
int hk_json_encode(lua_State *L, int idx, hk_buf_t *buf, char *err, size_t errsize);

/* Encoding options, for log lines: string flags (HK_JSON_ASCII) and a predicate naming object
 * keys whose values are written as "[redacted]" at any depth. */
typedef struct hk_json_encode_opts_s {
  int string_flags;
  bool (*redact_key)(const char *key, size_t len);
} hk_json_encode_opts_t;

int hk_json_encode_opts(lua_State *L, int idx, hk_buf_t *buf, const hk_json_encode_opts_t *opts,
                        char *err, size_t errsize);

/* Opens the Lua module table {encode, decode, null, array, is_array} and pushes it. encode(v)
 * returns a string or raises; decode(s) returns the value or nil, msg (invalid input is an
 * expected failure). [-0, +1, m] */
int hk_json_open(lua_State *L);

#endif
