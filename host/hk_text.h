/* hk_text: the byte-level text classes the parsers in host/ share, one copy each: RFC 9110 token
 * characters, ASCII digits and letters, hex digit values, and UTF-8 decoding, encoding and
 * validation. So the HTTP parser, the JSON decoder, header checks and metric labels agree on
 * what a token or valid UTF-8 is. Pure and locale-independent, unlike <ctype.h> (whose answers
 * follow LC_CTYPE and which must not be given a negative char). The classes are static inline
 * because the parsers call them once per byte; the UTF-8 functions live in hk_text.c. */
#ifndef HK_TEXT_H
#define HK_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* tchar (RFC 9110 §5.6.2): ALPHA / DIGIT / one of !#$%&'*+-.^_`|~ . The two masks hold one bit
 * per ASCII code (bytes 0..63, 64..127); tests/unit/test_hk_text.c checks them against that
 * list for all 256 bytes. */
static inline bool hk_text_is_tchar(unsigned char c) {
  static const uint64_t low = 0x03ff6cfa00000000u, high = 0x57ffffffc7fffffeu;
  if (c < 64) return (low >> c) & 1u;
  if (c < 128) return (high >> (c - 64)) & 1u;
  return false;
}

/* A token (RFC 9110 §5.6.2): one or more tchar. Method names and field names are tokens. */
static inline bool hk_text_is_token(const char *s, size_t len) {
  if (len == 0) return false;
  for (size_t i = 0; i < len; i++)
    if (!hk_text_is_tchar((unsigned char)s[i])) return false;
  return true;
}

/* A field value as a response may carry it (RFC 9110 §5.5): visible ASCII, obs-text, SP and
 * HTAB; no other control byte (CR and LF would split the response, the rest are invalid). */
static inline bool hk_text_is_field_value(const char *s, size_t len) {
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
  }
  return true;
}

static inline bool hk_text_is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static inline bool hk_text_is_alpha(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static inline bool hk_text_is_alnum(unsigned char c) {
  return hk_text_is_alpha(c) || hk_text_is_digit(c);
}

/* The value of a hex digit of either case (0..15), or -1. Branches on the byte: for secrets
 * use a constant-time decoder instead (hk_crypto.c has one for signatures). */
static inline int hk_text_hex_value(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  unsigned char lower = (unsigned char)(c | 0x20);
  if (lower >= 'a' && lower <= 'f') return lower - 'a' + 10;
  return -1;
}

/* Decodes the UTF-8 sequence at the start of s (len >= 1 bytes available) following Unicode's
 * table 3-7: no overlong forms, no surrogates, nothing above U+10FFFF. Returns its length (1..4)
 * and sets *cp, or returns -n, where n >= 1 is the length of the maximal invalid subpart: the
 * unit Unicode's "substitution of maximal subparts" replaces with one U+FFFD. */
int hk_text_utf8_decode(const unsigned char *s, size_t len, uint32_t *cp);

/* Writes cp, a Unicode scalar value (not a surrogate, at most U+10FFFF), as UTF-8 into out and
 * returns its length (1..4). */
size_t hk_text_utf8_encode(uint32_t cp, char out[4]);

/* True when all len bytes are valid UTF-8 (as hk_text_utf8_decode defines it). */
bool hk_text_utf8_valid(const char *str, size_t len);

#endif
