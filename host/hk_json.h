/* hk_json: JSON for the core and the Lua boundary. Owns JSON string escaping (used by the
 * logger and responses), decoding JSON text into Lua values (a strict RFC 8259 parser of its
 * own, not cJSON, which keeps numbers only as doubles: see hk_json.c), encoding Lua values as
 * JSON text, and scanning JSON text for one top-level string member without Lua. Knows nothing
 * of sockets or requests.
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

/* Finds the member `key` of the top-level object in the JSON text json[0..len) and, when its
 * value is a string, writes that string unescaped and NUL-terminated into out (out_size bytes
 * with the NUL). For reading one field, such as the request body's "mode" for the log line,
 * without decoding the body. Pure: no allocation, no Lua, one pass, O(len); nesting costs a depth
 * counter, not recursion; never reads past len (json need not be NUL-terminated).
 *
 * The whole text is checked with hk_json_decode's rules (RFC 8259, valid UTF-8, no lone
 * surrogate escapes, nesting up to HK_JSON_MAX_DEPTH, only whitespace after the value), with one
 * exception: numbers are checked for syntax only, so 1e400, which the decoder refuses as out of
 * range, passes here. Hence 0 means hk_json_decode gives a table whose [key] is that string.
 *   - Names are compared after unescaping ("mo\u0064e" matches "mode"), byte for byte.
 *   - Only members of the top-level object count; a "mode" inside a nested value never matches.
 *   - Duplicate names: the last one wins, as in hk_json_decode (what req:json() gives the
 *     handler), so the scan always reads to the end. (cJSON's lookup would take the first.)
 * Returns 0; -ENOENT when the text is valid JSON but not an object, has no member `key`, or the
 * last such member's value is not a string; -ENOSPC when the string needs more than
 * out_size - 1 bytes; -EILSEQ when it holds U+0000 (\u0000), which a C string cannot (checked
 * before the size); -EINVAL when the text is not valid JSON, anywhere in it, or on misuse (NULL
 * key or out, out_size 0). On every error out is "" (when out_size > 0).
 * tests/fuzz/fuzz_json.c checks it against hk_json_decode on every input. */
int hk_json_scan_member(const char *json, size_t len, const char *key, char *out, size_t out_size);

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
  size_t max_bytes; /* fail (-E2BIG) before the output would pass this; 0: no limit */
} hk_json_encode_opts_t;

int hk_json_encode_opts(lua_State *L, int idx, hk_buf_t *buf, const hk_json_encode_opts_t *opts,
                        char *err, size_t errsize);

/* Opens the Lua module table {encode, decode, null, array, is_array} and pushes it. encode(v)
 * returns a string or raises; decode(s) returns the value or nil, msg (invalid input is an
 * expected failure). [-0, +1, m] */
int hk_json_open(lua_State *L);
/* The same, with encode's output bounded by *max_output bytes (read at each call; 0: none) —
 * the state's memory cap, since a larger result could never become a Lua string. */
int hk_json_open_limited(lua_State *L, const size_t *max_output);

#endif
