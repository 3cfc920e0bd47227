/* hk_text: UTF-8 decoding, encoding and validation for every module that checks or repairs
 * text (JSON, log lines, metric labels). The inline character classes are in hk_text.h. */
#include "hk_text.h"

#include <assert.h>

int hk_text_utf8_decode(const unsigned char *s, size_t len, uint32_t *cp) {
  assert(len >= 1);
  unsigned c = s[0];
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  int need;
  uint32_t value;
  /* The range of the second byte; later continuation bytes are always 0x80..0xBF. */
  unsigned lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    need = 1;
    value = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 2;
    value = c & 0x0F;
    if (c == 0xE0) lo = 0xA0;      /* overlong below U+0800 */
    else if (c == 0xED) hi = 0x9F; /* U+D800..DFFF */
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 3;
    value = c & 0x07;
    if (c == 0xF0) lo = 0x90;      /* overlong below U+10000 */
    else if (c == 0xF4) hi = 0x8F; /* above U+10FFFF */
  } else {
    return -1; /* 0x80..0xC1 (a continuation byte or an overlong lead) or 0xF5..0xFF */
  }
  for (int i = 1; i <= need; i++) {
    if ((size_t)i >= len) return -i;
    unsigned b = s[i];
    if (b < lo || b > hi) return -i;
    lo = 0x80;
    hi = 0xBF;
    value = (value << 6) | (b & 0x3F);
  }
  *cp = value;
  return need + 1;
}

size_t hk_text_utf8_encode(uint32_t cp, char out[4]) {
  assert(cp <= 0x10FFFF && (cp < 0xD800 || cp > 0xDFFF));
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xE0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (char)(0xF0 | (cp >> 18));
  out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  out[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

bool hk_text_utf8_valid(const char *str, size_t len) {
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;
  while (i < len) {
    if (s[i] < 0x80) { /* ASCII runs without a call */
      i++;
      continue;
    }
    uint32_t cp;
    int n = hk_text_utf8_decode(s + i, len - i, &cp);
    if (n < 0) return false;
    i += (size_t)n;
  }
  return true;
}
