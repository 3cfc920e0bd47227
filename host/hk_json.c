/* hk_json: JSON string escaping, JSON text -> Lua values (a strict RFC 8259 decoder) and Lua
 * values -> JSON text (written straight into an hk_buf_t), and a scan for one top-level string
 * member that needs no Lua. Leaves sockets, requests and the choice of buffers to its callers.
 * Entry points: hk_json_append_string, hk_json_decode, hk_json_encode, hk_json_scan_member and
 * the Lua module from hk_json_open.
 *
 * Why not cJSON for decoding: cJSON keeps every number as a double, so 9007199254740993 would
 * come back as ...992 and the original text is gone by the time we see the item; it also
 * accepts input RFC 8259 rejects and does not check UTF-8. A strict recursive-descent decoder
 * that pushes Lua values as it reads is about as much code as walking a cJSON tree, reads the
 * text once, and allocates nothing but the Lua values themselves.
 *
 * Decisions that are not dictated by RFC 8259, so callers can rely on them:
 *   - A \u escape naming a lone surrogate (\ud800 without a following \udc00-\udfff, or a
 *     lone \udc00) is an error, the same as invalid UTF-8 in the raw text: a decoded string is
 *     always valid UTF-8. \u0000 is accepted (Lua strings hold NUL bytes).
 *   - A byte-order mark is not skipped (it is "unexpected character" at byte 0).
 *   - Duplicate object keys: the last one wins.
 *   - Byte offsets in error messages are 0-based.
 *   - A number with no fraction or exponent that fits in 64 bits is a Lua integer; "-0" is the
 *     integer 0. A float whose magnitude overflows a double (1e400) is an error; underflow
 *     gives 0 or a subnormal.
 *   - Floats are written with the fewest of 14..17 significant digits that read back to the
 *     same double, and an integral float keeps a ".0" (1000.0 -> "1000.0", -0.0 -> "-0.0") so
 *     decoding the output gives a float again: integer vs float survives a round trip.
 *   - Object keys are written in byte order (memcmp), so output is deterministic.
 *   - nil (only possible as the top-level value or a hole in a marked array) encodes as null.
 * Numbers go through snprintf/strtod, which follow LC_NUMERIC: the host must keep the "C"
 * numeric locale (the default unless someone calls setlocale). */
#include "hk_json.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "hk_text.h"

#define BUFFER_MT "hancock.json.buffer"
/* encode() keeps its output buffer between calls; one that grew past this is given back. */
#define KEEP_BUFFER_BYTES (64 * 1024)

/* Pushes the array marker metatable, creating and registering it on first use. [-0, +1, m] */
static void push_array_mt(lua_State *L) { (void)luaL_newmetatable(L, HK_JSON_ARRAY_MT); }

void hk_json_init(lua_State *L) {
  push_array_mt(L);
  lua_pop(L, 1);
}

/* ---- string escaping ------------------------------------------------------------------------ */

static const char hex_digits[] = "0123456789abcdef";

static size_t put_u_escape(char *out, uint32_t unit) {
  out[0] = '\\';
  out[1] = 'u';
  out[2] = hex_digits[(unit >> 12) & 0xF];
  out[3] = hex_digits[(unit >> 8) & 0xF];
  out[4] = hex_digits[(unit >> 4) & 0xF];
  out[5] = hex_digits[unit & 0xF];
  return 6;
}

int hk_json_append_string(hk_buf_t *buf, const char *str, size_t len, int flags) {
  static const char replacement[] = "\xEF\xBF\xBD"; /* U+FFFD */
  const size_t start = buf->len;
  const unsigned char *p = (const unsigned char *)str, *end = p + len, *run = p;
  int ascii = (flags & HK_JSON_ASCII) != 0;
  int rc;

  /* The common case (nothing to escape) then needs no further growth. */
  if (len > SIZE_MAX - 2) return -ENOMEM;
  if ((rc = hk_buf_reserve(buf, len + 2)) != 0) return rc;
  if ((rc = hk_buf_append_char(buf, '"')) != 0) goto fail;
  while (p < end) {
    unsigned c = *p;
    if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
      p++;
      continue;
    }
    char esc[12];
    size_t esc_len = 0;
    int step = 1;
    if (c >= 0x80) {
      uint32_t cp;
      step = hk_text_utf8_decode(p, (size_t)(end - p), &cp);
      if (step > 0 && !ascii) { /* valid UTF-8 is copied as is */
        p += step;
        continue;
      }
      if (step < 0) { /* one U+FFFD per maximal invalid subpart */
        step = -step;
        if (ascii) esc_len = put_u_escape(esc, 0xFFFD);
        else memcpy(esc, replacement, esc_len = 3);
      } else if (cp >= 0x10000) {
        cp -= 0x10000;
        esc_len = put_u_escape(esc, 0xD800 | (cp >> 10));
        esc_len += put_u_escape(esc + esc_len, 0xDC00 | (cp & 0x3FF));
      } else {
        esc_len = put_u_escape(esc, cp);
      }
    } else {
      esc[0] = '\\';
      esc_len = 2;
      switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default: esc_len = put_u_escape(esc, c); break; /* other controls and 0x7F */
      }
    }
    if (p > run && (rc = hk_buf_append(buf, run, (size_t)(p - run))) != 0) goto fail;
    if ((rc = hk_buf_append(buf, esc, esc_len)) != 0) goto fail;
    p += step;
    run = p;
  }
  if (p > run && (rc = hk_buf_append(buf, run, (size_t)(p - run))) != 0) goto fail;
  if ((rc = hk_buf_append_char(buf, '"')) != 0) goto fail;
  return 0;

fail:
  /* Leave the buffer as it was, like every other hk_buf append. */
  buf->len = start;
  if (buf->data != NULL) buf->data[start] = '\0';
  return rc;
}

/* ---- lexical pieces shared by the decoder and the scanner ------------------------------------ */

static const char unterminated_string[] = "unterminated string";

static const unsigned char *whitespace_end(const unsigned char *p, const unsigned char *end) {
  while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
  return p;
}

/* Reads the 4 hex digits of a \u escape at p (just after "\u"). Returns the unit or -1. */
static long read_hex4(const unsigned char *p, const unsigned char *end) {
  if (end - p < 4) return -1;
  long unit = 0;
  for (int i = 0; i < 4; i++) {
    int v = hk_text_hex_value(p[i]);
    if (v < 0) return -1;
    unit = (unit << 4) | v;
  }
  return unit;
}

/* Decodes the escape whose backslash is at *pp into out (UTF-8, *out_len bytes) and moves *pp
 * past it. Returns NULL, or what is wrong (unterminated_string when the text ends after the
 * backslash), leaving *pp alone. A \u escape must not name a lone surrogate. */
static const char *read_escape(const unsigned char **pp, const unsigned char *end, char out[4],
                               size_t *out_len) {
  const unsigned char *p = *pp + 1;
  if (p == end) return unterminated_string;
  *out_len = 1;
  switch (*p++) {
    case '"': out[0] = '"'; break;
    case '\\': out[0] = '\\'; break;
    case '/': out[0] = '/'; break;
    case 'b': out[0] = '\b'; break;
    case 'f': out[0] = '\f'; break;
    case 'n': out[0] = '\n'; break;
    case 'r': out[0] = '\r'; break;
    case 't': out[0] = '\t'; break;
    case 'u': {
      long unit = read_hex4(p, end);
      if (unit < 0) return "invalid \\u escape";
      p += 4;
      uint32_t cp = (uint32_t)unit;
      if (unit >= 0xDC00 && unit <= 0xDFFF) return "lone surrogate in \\u escape";
      if (unit >= 0xD800 && unit <= 0xDBFF) {
        long low = (end - p >= 2 && p[0] == '\\' && p[1] == 'u') ? read_hex4(p + 2, end) : -1;
        if (low < 0xDC00 || low > 0xDFFF) return "lone surrogate in \\u escape";
        p += 6;
        cp = 0x10000 + (((uint32_t)unit - 0xD800) << 10) + ((uint32_t)low - 0xDC00);
      }
      *out_len = hk_text_utf8_encode(cp, out);
      break;
    }
    default: return "invalid escape";
  }
  *pp = p;
  return NULL;
}

/* The end of the number at p, -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, or NULL when the
 * text there is not one. *int_end is where its integer digits end (the number's end when it has
 * no fraction and no exponent). */
static const unsigned char *number_end(const unsigned char *p, const unsigned char *end,
                                       const unsigned char **int_end) {
  if (p < end && *p == '-') p++;
  if (p == end || !hk_text_is_digit(*p)) return NULL;
  if (*p == '0') p++;
  else
    while (p < end && hk_text_is_digit(*p)) p++;
  *int_end = p;
  if (p < end && *p == '.') {
    p++;
    if (p == end || !hk_text_is_digit(*p)) return NULL;
    while (p < end && hk_text_is_digit(*p)) p++;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < end && (*p == '+' || *p == '-')) p++;
    if (p == end || !hk_text_is_digit(*p)) return NULL;
    while (p < end && hk_text_is_digit(*p)) p++;
  }
  return p;
}

/* ---- decoding ------------------------------------------------------------------------------- */

typedef struct decoder_s {
  lua_State *L;
  const unsigned char *start, *p, *end;
  int array_mt; /* stack index of the array marker metatable */
  char *err;
  size_t errsize;
} decoder_t;

static int decode_fail(decoder_t *d, const unsigned char *at, const char *what) {
  if (d->err != NULL && d->errsize > 0)
    snprintf(d->err, d->errsize, "invalid JSON at byte %zu: %s", (size_t)(at - d->start), what);
  return -EINVAL;
}

static void skip_whitespace(decoder_t *d) { d->p = whitespace_end(d->p, d->end); }

/* Pushes the string whose opening quote is at d->p. Strings without escapes are pushed
 * straight from the input; the others are assembled in a luaL_Buffer. */
static int decode_string(decoder_t *d) {
  lua_State *L = d->L;
  const unsigned char *open = d->p, *p = d->p + 1, *end = d->end, *run = p;
  luaL_Buffer b;
  int buffered = 0;

  for (;;) {
    if (p == end) return decode_fail(d, open, unterminated_string);
    unsigned c = *p;
    if (c == '"') break;
    if (c >= 0x20 && c < 0x80 && c != '\\') {
      p++;
      continue;
    }
    if (c >= 0x80) {
      uint32_t cp;
      int n = hk_text_utf8_decode(p, (size_t)(end - p), &cp);
      if (n < 0) return decode_fail(d, p, "invalid UTF-8");
      p += n;
      continue;
    }
    if (c < 0x20) return decode_fail(d, p, "control character in string");
    /* c == '\\' */
    if (!buffered) {
      luaL_buffinit(L, &b);
      buffered = 1;
    }
    luaL_addlstring(&b, (const char *)run, (size_t)(p - run));
    char out[4];
    size_t out_len;
    const unsigned char *esc = p;
    const char *why = read_escape(&p, end, out, &out_len);
    if (why != NULL) return decode_fail(d, why == unterminated_string ? open : esc, why);
    luaL_addlstring(&b, out, out_len);
    run = p;
  }
  if (buffered) {
    luaL_addlstring(&b, (const char *)run, (size_t)(p - run));
    luaL_pushresult(&b);
  } else {
    lua_pushlstring(L, (const char *)run, (size_t)(p - run));
  }
  d->p = p + 1;
  return 0;
}

/* Pushes the number at d->p: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int decode_number(decoder_t *d) {
  const unsigned char *s = d->p, *digits_end = NULL;
  const unsigned char *p = number_end(s, d->end, &digits_end);
  if (p == NULL) return decode_fail(d, s, "invalid number");
  int negative = *s == '-', is_float = p != digits_end;
  const unsigned char *digits = s + negative;
  d->p = p;

  if (!is_float) {
    /* Exact 64-bit integer when it fits; beyond that the float below (the contract). */
    uint64_t limit = negative ? (uint64_t)LUA_MAXINTEGER + 1 : (uint64_t)LUA_MAXINTEGER;
    uint64_t value = 0;
    const unsigned char *q = digits;
    for (; q < digits_end; q++) {
      unsigned digit = *q - '0';
      if (value > (limit - digit) / 10) break;
      value = value * 10 + digit;
    }
    if (q == digits_end) {
      lua_Integer n;
      if (!negative) n = (lua_Integer)value;
      else if (value == (uint64_t)LUA_MAXINTEGER + 1) n = LUA_MININTEGER;
      else n = -(lua_Integer)value;
      lua_pushinteger(d->L, n);
      return 0;
    }
  }

  /* strtod wants a terminated string; long numbers go through a Lua string instead of malloc. */
  size_t len = (size_t)(p - s);
  char small[64];
  const char *text;
  int pushed = 0;
  if (len < sizeof small) {
    memcpy(small, s, len);
    small[len] = '\0';
    text = small;
  } else {
    text = lua_pushlstring(d->L, (const char *)s, len);
    pushed = 1;
  }
  double value = strtod(text, NULL);
  if (pushed) lua_pop(d->L, 1);
  if (isinf(value)) return decode_fail(d, s, "number out of range");
  lua_pushnumber(d->L, value);
  return 0;
}

static int decode_literal(decoder_t *d, const char *word, size_t len) {
  if ((size_t)(d->end - d->p) < len || memcmp(d->p, word, len) != 0)
    return decode_fail(d, d->p, "unexpected character");
  d->p += len;
  return 0;
}

static int decode_value(decoder_t *d, int depth);

/* Pushes the array or object whose bracket is at d->p; depth counts it. */
static int decode_container(decoder_t *d, int depth) {
  lua_State *L = d->L;
  const unsigned char *open = d->p;
  int is_array = *open == '[';
  char close = is_array ? ']' : '}';
  int rc;

  if (depth > HK_JSON_MAX_DEPTH) return decode_fail(d, open, "nesting deeper than 128 levels");
  /* the table, a key, a value and a luaL_Buffer placeholder */
  if (!lua_checkstack(L, 4)) return decode_fail(d, open, "out of Lua stack space");
  lua_newtable(L);
  if (is_array) {
    lua_pushvalue(L, d->array_mt);
    lua_setmetatable(L, -2);
  }
  d->p++;
  skip_whitespace(d);
  if (d->p < d->end && *d->p == close) {
    d->p++;
    return 0;
  }
  lua_Integer n = 0;
  for (;;) {
    if (is_array) {
      if ((rc = decode_value(d, depth)) != 0) return rc;
      lua_rawseti(L, -2, ++n);
    } else {
      skip_whitespace(d);
      if (d->p == d->end) return decode_fail(d, d->p, "unexpected end of input");
      if (*d->p != '"') return decode_fail(d, d->p, "expected a string key");
      if ((rc = decode_string(d)) != 0) return rc;
      skip_whitespace(d);
      if (d->p == d->end) return decode_fail(d, d->p, "unexpected end of input");
      if (*d->p != ':') return decode_fail(d, d->p, "expected ':'");
      d->p++;
      if ((rc = decode_value(d, depth)) != 0) return rc;
      lua_rawset(L, -3); /* duplicate keys: the last one wins */
    }
    skip_whitespace(d);
    if (d->p == d->end) return decode_fail(d, d->p, "unexpected end of input");
    if (*d->p == close) {
      d->p++;
      return 0;
    }
    if (*d->p != ',') return decode_fail(d, d->p, is_array ? "expected ',' or ']'" : "expected ',' or '}'");
    d->p++;
  }
}

/* Pushes the value after optional whitespace at d->p; depth is the enclosing nesting. */
static int decode_value(decoder_t *d, int depth) {
  skip_whitespace(d);
  if (d->p == d->end) return decode_fail(d, d->p, "unexpected end of input");
  unsigned c = *d->p;
  switch (c) {
    case '{':
    case '[': return decode_container(d, depth + 1);
    case '"': return decode_string(d);
    case 't':
      if (decode_literal(d, "true", 4) != 0) return -EINVAL;
      lua_pushboolean(d->L, 1);
      return 0;
    case 'f':
      if (decode_literal(d, "false", 5) != 0) return -EINVAL;
      lua_pushboolean(d->L, 0);
      return 0;
    case 'n':
      if (decode_literal(d, "null", 4) != 0) return -EINVAL;
      lua_pushlightuserdata(d->L, NULL);
      return 0;
    default:
      if (c == '-' || hk_text_is_digit(c)) return decode_number(d);
      if (c >= 0x80) {
        uint32_t cp;
        if (hk_text_utf8_decode(d->p, (size_t)(d->end - d->p), &cp) < 0)
          return decode_fail(d, d->p, "invalid UTF-8");
      }
      return decode_fail(d, d->p, "unexpected character");
  }
}

int hk_json_decode(lua_State *L, const char *text, size_t len, char *err, size_t errsize) {
  int top = lua_gettop(L);
  decoder_t d = {L, (const unsigned char *)text, (const unsigned char *)text,
                 (const unsigned char *)text + len, 0, err, errsize};
  int rc;

  if (!lua_checkstack(L, 4)) {
    if (err != NULL && errsize > 0) snprintf(err, errsize, "out of Lua stack space");
    return -ENOMEM;
  }
  push_array_mt(L);
  d.array_mt = lua_gettop(L);
  if ((rc = decode_value(&d, 0)) != 0) goto fail;
  skip_whitespace(&d);
  if (d.p != d.end) {
    rc = decode_fail(&d, d.p, "unexpected data after the value");
    goto fail;
  }
  lua_remove(L, d.array_mt);
  assert(lua_gettop(L) == top + 1);
  return 0;

fail:
  lua_settop(L, top);
  return rc;
}

/* ---- scanning for one member (no Lua) -------------------------------------------------------
 *
 * One pass with the decoder's rules and no recursion: the nesting is a depth counter plus one bit
 * per level (object or array), so hostile nesting costs 16 bytes of stack, not a stack frame per
 * level. Strings hand their unescaped bytes to a sink that compares them with the key or copies
 * them into the caller's buffer; every other string is only checked. */

/* Where scan_string puts the unescaped bytes of one string. */
typedef struct sink_s {
  const char *key; /* compare with key[0..key_len); NULL: do not */
  size_t key_len;
  bool differs;    /* a byte differed from key, or there were more; len <= key_len until then */
  char *out;       /* copy into out[0..out_size - 1); NULL: do not */
  size_t out_size;
  bool has_nul;
  size_t len; /* unescaped bytes so far */
} sink_t;

static void sink_put(sink_t *sink, const void *bytes, size_t n) {
  if (sink == NULL || n == 0) return;
  if (sink->key != NULL && !sink->differs &&
      (n > sink->key_len - sink->len || memcmp(sink->key + sink->len, bytes, n) != 0))
    sink->differs = true;
  if (sink->out != NULL) {
    if (memchr(bytes, '\0', n) != NULL) sink->has_nul = true;
    /* Room is kept for the NUL. len only grows, so once a piece does not fit, no later one is
     * written either: out never holds a string with a hole. */
    if (sink->len < sink->out_size && n < sink->out_size - sink->len)
      memcpy(sink->out + sink->len, bytes, n);
  }
  sink->len += n;
}

/* Checks the string whose opening quote is at p and hands its unescaped bytes to sink (NULL:
 * nowhere). Returns the position after the closing quote, or NULL when it is not a valid string. */
static const unsigned char *scan_string(const unsigned char *p, const unsigned char *end,
                                        sink_t *sink) {
  const unsigned char *run = ++p;
  for (;;) {
    if (p == end) return NULL;
    unsigned c = *p;
    if (c == '"') break;
    if (c >= 0x20 && c < 0x80 && c != '\\') {
      p++;
      continue;
    }
    if (c >= 0x80) {
      uint32_t cp;
      int n = hk_text_utf8_decode(p, (size_t)(end - p), &cp);
      if (n < 0) return NULL;
      p += n;
      continue;
    }
    if (c < 0x20) return NULL;
    sink_put(sink, run, (size_t)(p - run));
    char out[4];
    size_t out_len;
    if (read_escape(&p, end, out, &out_len) != NULL) return NULL;
    sink_put(sink, out, out_len);
    run = p;
  }
  sink_put(sink, run, (size_t)(p - run));
  return p + 1;
}

enum { SCAN_VALUE, SCAN_AFTER_VALUE, SCAN_MEMBER };

int hk_json_scan_member(const char *json, size_t len, const char *key, char *out, size_t out_size) {
  if (key == NULL || out == NULL || out_size == 0 || (json == NULL && len > 0)) return -EINVAL;
  out[0] = '\0';
  const unsigned char *p = (const unsigned char *)json, *end = p + len;
  const size_t key_len = strlen(key);
  /* Bit (level - 1) is set when that level is an object; level 1 is the top-level value. */
  uint64_t objects[(HK_JSON_MAX_DEPTH + 63) / 64] = {0};
  int depth = 0, state = SCAN_VALUE, found = -ENOENT;
  bool capture = false; /* the next value is that of a top-level member named key */

  for (;;) {
    p = whitespace_end(p, end);
    if (p == end) {
      if (state == SCAN_AFTER_VALUE && depth == 0) break; /* the one top-level value, then end */
      goto invalid;
    }
    if (state == SCAN_AFTER_VALUE) {
      if (depth == 0) goto invalid; /* data after the top-level value */
      bool object = (objects[(depth - 1) / 64] >> ((depth - 1) % 64)) & 1u;
      if (*p == (object ? '}' : ']')) {
        depth--;
        p++;
      } else if (*p == ',') {
        state = object ? SCAN_MEMBER : SCAN_VALUE;
        p++;
      } else {
        goto invalid;
      }
      continue;
    }
    if (state == SCAN_MEMBER) {
      if (*p != '"') goto invalid;
      sink_t name = {.key = key, .key_len = key_len};
      /* Only the top-level object's names can match; deeper ones are only checked. */
      p = scan_string(p, end, depth == 1 ? &name : NULL);
      if (p == NULL) goto invalid;
      capture = depth == 1 && !name.differs && name.len == key_len;
      p = whitespace_end(p, end);
      if (p == end || *p != ':') goto invalid;
      p++;
      state = SCAN_VALUE;
      continue;
    }

    /* SCAN_VALUE */
    bool captured = capture;
    capture = false;
    if (captured) found = -ENOENT; /* the last member named key wins: forget an earlier one */
    state = SCAN_AFTER_VALUE;
    switch (*p) {
      case '{':
      case '[': {
        bool object = *p == '{';
        if (depth == HK_JSON_MAX_DEPTH) goto invalid;
        uint64_t bit = (uint64_t)1 << (depth % 64);
        if (object) objects[depth / 64] |= bit;
        else objects[depth / 64] &= ~bit;
        depth++;
        p = whitespace_end(p + 1, end);
        if (p < end && *p == (object ? '}' : ']')) {
          depth--;
          p++;
        } else {
          state = object ? SCAN_MEMBER : SCAN_VALUE;
        }
        break;
      }
      case '"': {
        sink_t value = {.out = out, .out_size = out_size};
        p = scan_string(p, end, captured ? &value : NULL);
        if (p == NULL) goto invalid;
        if (!captured) break;
        if (value.has_nul) {
          found = -EILSEQ;
        } else if (value.len >= out_size) {
          found = -ENOSPC;
        } else {
          out[value.len] = '\0';
          found = 0;
        }
        break;
      }
      case 't':
      case 'f':
      case 'n': {
        const char *word = *p == 't' ? "true" : *p == 'f' ? "false" : "null";
        size_t word_len = strlen(word);
        if ((size_t)(end - p) < word_len || memcmp(p, word, word_len) != 0) goto invalid;
        p += word_len;
        break;
      }
      default: {
        const unsigned char *int_end;
        if (*p != '-' && !hk_text_is_digit(*p)) goto invalid;
        p = number_end(p, end, &int_end);
        if (p == NULL) goto invalid;
        break;
      }
    }
  }
  if (found != 0) out[0] = '\0';
  return found;

invalid:
  out[0] = '\0';
  return -EINVAL;
}

/* ---- encoding ------------------------------------------------------------------------------- */

typedef struct sorted_key_s {
  const char *str; /* a key string of the table being written; the table keeps it alive */
  size_t len;
} sorted_key_t;

typedef struct encoder_s {
  lua_State *L;
  hk_buf_t *buf;
  char *err;
  size_t errsize;
  int string_flags; /* passed to hk_json_append_string for keys and values */
  bool (*redact_key)(const char *key, size_t len);
  size_t max_bytes; /* 0: no limit */
  int array_mt; /* stack index of the array marker metatable */
  int scratch;  /* stack index of the userdata holding keys[] once it outgrew inline_keys */
  /* Object keys waiting to be sorted and written, used as a stack: each object being written
   * owns keys[base, base + count). One allocation per encode at most, none for small ones. */
  sorted_key_t *keys;
  size_t keys_used, keys_cap;
  sorted_key_t inline_keys[64];
} encoder_t;

static int encode_fail(encoder_t *e, int rc, const char *fmt, const char *arg) {
  if (e->err != NULL && e->errsize > 0) snprintf(e->err, e->errsize, fmt, arg);
  return rc;
}

/* Grows keys[] to hold one more. The new array is a Lua userdata in the scratch slot, so a
 * memory error raised later by Lua leaks nothing. [-0, +0, m] */
static int grow_keys(encoder_t *e) {
  if (e->keys_used < e->keys_cap) return 0;
  if (e->keys_cap > SIZE_MAX / 2 / sizeof(sorted_key_t)) return encode_fail(e, -ENOMEM, "%s", "not enough memory");
  size_t cap = e->keys_cap * 2;
  sorted_key_t *keys = lua_newuserdatauv(e->L, cap * sizeof *keys, 0);
  memcpy(keys, e->keys, e->keys_used * sizeof *keys);
  lua_replace(e->L, e->scratch);
  e->keys = keys;
  e->keys_cap = cap;
  return 0;
}

static int compare_keys(const void *a, const void *b) {
  const sorted_key_t *x = a, *y = b;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = memcmp(x->str, y->str, n);
  if (c != 0) return c;
  return (x->len > y->len) - (x->len < y->len);
}

static int append_integer(hk_buf_t *buf, lua_Integer n) {
  char tmp[24], *p = tmp + sizeof tmp;
  lua_Unsigned u = n < 0 ? 0u - (lua_Unsigned)n : (lua_Unsigned)n;
  do {
    *--p = (char)('0' + u % 10);
    u /= 10;
  } while (u != 0);
  if (n < 0) *--p = '-';
  return hk_buf_append(buf, p, (size_t)(tmp + sizeof tmp - p));
}

/* Shortest of %.14g..%.17g that reads back as the same double; integral results keep ".0". */
static int append_float(hk_buf_t *buf, double x) {
  char tmp[40];
  int len = 0;
  for (int precision = 14; precision <= 17; precision++) {
    len = snprintf(tmp, sizeof tmp, "%.*g", precision, x);
    if (strtod(tmp, NULL) == x) break;
  }
  assert(len > 0 && (size_t)len < sizeof tmp - 2);
  if (strspn(tmp, "-0123456789") == (size_t)len) {
    tmp[len++] = '.';
    tmp[len++] = '0';
  }
  return hk_buf_append(buf, tmp, (size_t)len);
}

static int encode_value(encoder_t *e, int idx, int depth);

/* Writes the elements 1..n of the table at idx as a JSON array. */
static int encode_elements(encoder_t *e, int idx, lua_Integer n, int depth) {
  int rc;
  if ((rc = hk_buf_append_char(e->buf, '[')) != 0) return rc;
  for (lua_Integer i = 1; i <= n; i++) {
    if (i > 1 && (rc = hk_buf_append_char(e->buf, ',')) != 0) return rc;
    lua_rawgeti(e->L, idx, i);
    rc = encode_value(e, lua_gettop(e->L), depth);
    lua_pop(e->L, 1);
    if (rc != 0) return rc;
  }
  return hk_buf_append_char(e->buf, ']');
}

static int encode_table(encoder_t *e, int idx, int depth) {
  lua_State *L = e->L;
  int rc;

  if (depth > HK_JSON_MAX_DEPTH)
    return encode_fail(e, -EINVAL, "%s", "cannot encode nesting deeper than 128 levels (or a cycle)");
  /* a metatable or key, a value, a key string for rawget, grow_keys' userdata */
  if (!lua_checkstack(L, 4)) return encode_fail(e, -ENOMEM, "%s", "out of Lua stack space");
  if (lua_getmetatable(L, idx)) {
    int marked = lua_rawequal(L, -1, e->array_mt);
    lua_pop(L, 1);
    if (marked) return encode_elements(e, idx, (lua_Integer)lua_rawlen(L, idx), depth);
  }

  /* Classify the keys: all strings (an object), exactly 1..n (an array), or neither. */
  size_t base = e->keys_used, count = 0;
  int strings = 0, integers = 0, other = 0;
  lua_Integer max_index = 0;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    lua_pop(L, 1);
    count++;
    if (lua_type(L, -1) == LUA_TSTRING) {
      strings = 1;
      if (integers || other) continue;
      if ((rc = grow_keys(e)) != 0) {
        lua_pop(L, 1);
        e->keys_used = base;
        return rc;
      }
      sorted_key_t *key = &e->keys[e->keys_used++];
      key->str = lua_tolstring(L, -1, &key->len);
    } else if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1) {
      integers = 1;
      lua_Integer k = lua_tointeger(L, -1);
      if (k > max_index) max_index = k;
    } else {
      other = 1;
    }
  }
  if (other || (strings && integers) || (integers && (lua_Unsigned)max_index != count)) {
    e->keys_used = base;
    return encode_fail(e, -EINVAL, "%s", "cannot encode table with mixed or non-string keys");
  }
  if (integers) return encode_elements(e, idx, max_index, depth);

  assert(e->keys_used - base == count);
  qsort(e->keys + base, count, sizeof *e->keys, compare_keys);
  rc = hk_buf_append_char(e->buf, '{');
  for (size_t i = 0; rc == 0 && i < count; i++) {
    /* Nested objects may move keys[]: index it afresh each time. */
    sorted_key_t key = e->keys[base + i];
    if (i > 0 && (rc = hk_buf_append_char(e->buf, ',')) != 0) break;
    if ((rc = hk_json_append_string(e->buf, key.str, key.len, e->string_flags)) != 0) break;
    if ((rc = hk_buf_append_char(e->buf, ':')) != 0) break;
    if (e->redact_key != NULL && e->redact_key(key.str, key.len)) {
      rc = hk_buf_append_str(e->buf, "\"[redacted]\"");
      continue;
    }
    lua_pushlstring(L, key.str, key.len);
    lua_rawget(L, idx);
    rc = encode_value(e, lua_gettop(L), depth);
    lua_pop(L, 1);
  }
  e->keys_used = base;
  if (rc == 0) rc = hk_buf_append_char(e->buf, '}');
  return rc;
}

/* Appends the value at the absolute index idx; depth is the enclosing nesting. */
static int encode_value(encoder_t *e, int idx, int depth) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
    case LUA_TNIL: return hk_buf_append(e->buf, "null", 4);
    case LUA_TBOOLEAN:
      return lua_toboolean(L, idx) ? hk_buf_append(e->buf, "true", 4) : hk_buf_append(e->buf, "false", 5);
    case LUA_TNUMBER: {
      if (lua_isinteger(L, idx)) return append_integer(e->buf, lua_tointeger(L, idx));
      double x = (double)lua_tonumber(L, idx);
      if (!isfinite(x)) return encode_fail(e, -EINVAL, "%s", isnan(x) ? "cannot encode NaN" : "cannot encode inf");
      return append_float(e->buf, x);
    }
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      /* Checked before the append: the output lives outside any Lua cap until it becomes a Lua
       * string, so a table holding one large string many times must fail early, not after
       * allocating all of it. */
      if (e->max_bytes != 0 && (len > e->max_bytes || e->buf->len > e->max_bytes - len))
        return encode_fail(e, -E2BIG, "%s", "encoded JSON would not fit in the Lua memory limit");
      return hk_json_append_string(e->buf, s, len, e->string_flags);
    }
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == NULL) return hk_buf_append(e->buf, "null", 4);
      return encode_fail(e, -EINVAL, "cannot encode a %s", "userdata");
    case LUA_TTABLE: return encode_table(e, idx, depth + 1);
    default: return encode_fail(e, -EINVAL, "cannot encode a %s", luaL_typename(L, idx));
  }
}

int hk_json_encode(lua_State *L, int idx, hk_buf_t *buf, char *err, size_t errsize) {
  return hk_json_encode_opts(L, idx, buf, NULL, err, errsize);
}

int hk_json_encode_opts(lua_State *L, int idx, hk_buf_t *buf, const hk_json_encode_opts_t *opts,
                        char *err, size_t errsize) {
  int top = lua_gettop(L);
  size_t start = buf->len;
  encoder_t e;
  int rc;

  idx = lua_absindex(L, idx);
  e.L = L;
  e.buf = buf;
  e.err = err;
  e.errsize = errsize;
  e.string_flags = opts ? opts->string_flags : 0;
  e.redact_key = opts ? opts->redact_key : NULL;
  e.max_bytes = opts ? opts->max_bytes : 0;
  e.keys = e.inline_keys;
  e.keys_used = 0;
  e.keys_cap = sizeof e.inline_keys / sizeof e.inline_keys[0];
  if (!lua_checkstack(L, 4)) {
    rc = encode_fail(&e, -ENOMEM, "%s", "out of Lua stack space");
    goto out;
  }
  push_array_mt(L);
  e.array_mt = lua_gettop(L);
  lua_pushnil(L);
  e.scratch = lua_gettop(L);
  rc = encode_value(&e, idx, 0);
  if (rc == -ENOMEM && err != NULL && errsize > 0) snprintf(err, errsize, "not enough memory");

out:
  lua_settop(L, top);
  if (rc != 0) { /* leave no half value behind */
    buf->len = start;
    if (buf->data != NULL) buf->data[start] = '\0';
  }
  return rc;
}

/* ---- the Lua module ------------------------------------------------------------------------- */

/* __gc of encode()'s output buffer. [-0, +0, -] */
static int buffer_gc(lua_State *L) {
  hk_buf_free(luaL_checkudata(L, 1, BUFFER_MT));
  return 0;
}

/* json.encode(v) -> string; raises on values JSON cannot hold. The output buffer is an upvalue
 * owned by Lua, so an error raised mid-way leaks nothing. [-0, +1, v] */
static int l_encode(lua_State *L) {
  hk_buf_t *buf = lua_touserdata(L, lua_upvalueindex(1));
  const size_t *limit = lua_touserdata(L, lua_upvalueindex(2));
  hk_json_encode_opts_t opts = {0, NULL, limit ? *limit : 0};
  char err[128];
  luaL_checkany(L, 1);
  lua_settop(L, 1);
  hk_buf_reset(buf);
  int rc = hk_json_encode_opts(L, 1, buf, &opts, err, sizeof err);
  if (rc == 0) lua_pushlstring(L, buf->data, buf->len);
  if (buf->cap > KEEP_BUFFER_BYTES) hk_buf_free(buf);
  else hk_buf_reset(buf);
  if (rc != 0) return luaL_error(L, "%s", err);
  return 1;
}

/* json.decode(s) -> value, or nil, message for invalid JSON; a non-string raises. [-0, +(1|2), m] */
static int l_decode(lua_State *L) {
  size_t len;
  char err[128];
  luaL_checktype(L, 1, LUA_TSTRING);
  const char *text = lua_tolstring(L, 1, &len);
  if (hk_json_decode(L, text, len, err, sizeof err) != 0) {
    luaL_pushfail(L);
    lua_pushstring(L, err);
    return 2;
  }
  return 1;
}

/* json.array([t]) -> t marked as a JSON array (a new empty one without an argument). A table
 * with another metatable is refused rather than silently stripped of it. [-0, +1, m] */
static int l_array(lua_State *L) {
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  } else {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
  }
  push_array_mt(L);
  if (lua_getmetatable(L, 1) && !lua_rawequal(L, -1, -2))
    return luaL_argerror(L, 1, "table already has a metatable");
  lua_settop(L, 2);
  lua_setmetatable(L, 1);
  return 1;
}

/* json.is_array(v) -> true when v is a table carrying the array marker. [-0, +1, m] */
static int l_is_array(lua_State *L) {
  int marked = 0;
  if (lua_type(L, 1) == LUA_TTABLE && lua_getmetatable(L, 1)) {
    push_array_mt(L);
    marked = lua_rawequal(L, -1, -2);
  }
  lua_pushboolean(L, marked);
  return 1;
}

int hk_json_open(lua_State *L) { return hk_json_open_limited(L, NULL); }

int hk_json_open_limited(lua_State *L, const size_t *max_output) {
  hk_json_init(L);
  lua_createtable(L, 0, 5);

  hk_buf_t *buf = lua_newuserdatauv(L, sizeof *buf, 0);
  hk_buf_init(buf);
  if (luaL_newmetatable(L, BUFFER_MT)) {
    lua_pushcfunction(L, buffer_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_pushlightuserdata(L, (void *)max_output);
  lua_pushcclosure(L, l_encode, 2);
  lua_setfield(L, -2, "encode");

  lua_pushcfunction(L, l_decode);
  lua_setfield(L, -2, "decode");
  lua_pushcfunction(L, l_array);
  lua_setfield(L, -2, "array");
  lua_pushcfunction(L, l_is_array);
  lua_setfield(L, -2, "is_array");
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  return 1;
}
