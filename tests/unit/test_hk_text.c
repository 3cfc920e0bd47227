/* Unit tests for hk_text: the character classes against their definitions for every byte, hex
 * values, and UTF-8 decoding (Unicode table 3-7, maximal subparts), encoding and validation. */
#include <stdbool.h>
#include <stdint.h>

#include "hk_test.h"
#include "hk_text.h"

/* The RFC 9110 §5.6.2 definition, written out the slow way. */
static bool reference_tchar(int c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return c != 0 && c < 128 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

HK_TEST(tchar_matches_rfc9110) {
  for (int c = 0; c < 256; c++) {
    if (hk_text_is_tchar((unsigned char)c) != reference_tchar(c))
      HK_FAIL_("hk_text_is_tchar(0x%02x) is %d", c, (int)hk_text_is_tchar((unsigned char)c));
  }
}

HK_TEST(token) {
  HK_ASSERT(hk_text_is_token("Content-Type", 12));
  HK_ASSERT(hk_text_is_token("x!#$%&'*+-.^_`|~9", 17));
  HK_ASSERT(!hk_text_is_token("", 0));
  HK_ASSERT(!hk_text_is_token("a b", 3));
  HK_ASSERT(!hk_text_is_token("a:b", 3));
  HK_ASSERT(!hk_text_is_token("a\0b", 3)); /* the length counts, not the NUL */
  HK_ASSERT(!hk_text_is_token("caf\xc3\xa9", 5));
}

HK_TEST(ascii_classes) {
  for (int c = 0; c < 256; c++) {
    bool digit = c >= '0' && c <= '9';
    bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    HK_ASSERT_INT_EQ(hk_text_is_digit((unsigned char)c), digit);
    HK_ASSERT_INT_EQ(hk_text_is_alpha((unsigned char)c), alpha);
    HK_ASSERT_INT_EQ(hk_text_is_alnum((unsigned char)c), digit || alpha);
  }
}

HK_TEST(hex_values) {
  for (int c = 0; c < 256; c++) {
    int expected = -1;
    if (c >= '0' && c <= '9') expected = c - '0';
    else if (c >= 'a' && c <= 'f') expected = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') expected = c - 'A' + 10;
    if (hk_text_hex_value((unsigned char)c) != expected)
      HK_FAIL_("hk_text_hex_value(0x%02x) is %d, want %d", c, hk_text_hex_value((unsigned char)c),
               expected);
  }
}

/* Decodes `bytes` (len) once; returns the result and the code point through *cp. */
static int decode(const char *bytes, size_t len, uint32_t *cp) {
  *cp = 0xFFFFFFFFu;
  return hk_text_utf8_decode((const unsigned char *)bytes, len, cp);
}

HK_TEST(utf8_decode_valid_boundaries) {
  static const struct {
    const char *bytes;
    int len;
    uint32_t cp;
  } cases[] = {
      {"\x00", 1, 0x0},          {"\x7f", 1, 0x7F},         {"\xc2\x80", 2, 0x80},
      {"\xdf\xbf", 2, 0x7FF},    {"\xe0\xa0\x80", 3, 0x800}, {"\xed\x9f\xbf", 3, 0xD7FF},
      {"\xee\x80\x80", 3, 0xE000}, {"\xef\xbf\xbf", 3, 0xFFFF}, {"\xf0\x90\x80\x80", 4, 0x10000},
      {"\xf4\x8f\xbf\xbf", 4, 0x10FFFF}, {"\xc3\xa9", 2, 0xE9},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    uint32_t cp;
    HK_ASSERT_INT_EQ(decode(cases[i].bytes, (size_t)cases[i].len, &cp), cases[i].len);
    HK_ASSERT_INT_EQ(cp, cases[i].cp);
  }
}

HK_TEST(utf8_decode_invalid_maximal_subparts) {
  static const struct {
    const char *bytes;
    size_t len;
    int result;
  } cases[] = {
      {"\x80", 1, -1},                 /* lone continuation byte */
      {"\xbf", 1, -1},
      {"\xc0\x80", 2, -1},             /* overlong lead bytes are never valid */
      {"\xc1\xbf", 2, -1},
      {"\xe0\x80\x80", 3, -1},         /* overlong 3-byte form: the second byte is out of range */
      {"\xf0\x80\x80\x80", 4, -1},     /* overlong 4-byte form */
      {"\xed\xa0\x80", 3, -1},         /* a surrogate, U+D800 */
      {"\xf4\x90\x80\x80", 4, -1},     /* above U+10FFFF */
      {"\xf5\x80\x80\x80", 4, -1},     /* lead bytes F5..FF */
      {"\xff", 1, -1},
      {"\xc3", 1, -1},                 /* truncated at the end of input */
      {"\xe2\x82", 2, -2},
      {"\xf0\x9f\x98", 3, -3},
      {"\xe2\x82\x41", 3, -2},         /* truncated by an ASCII byte */
      {"\xf0\x9f\x41\x41", 4, -2},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    uint32_t cp;
    int n = decode(cases[i].bytes, cases[i].len, &cp);
    if (n != cases[i].result) HK_FAIL_("case %zu: got %d, want %d", i, n, cases[i].result);
  }
}

/* Unicode 15 §3.9, table 3-8: the units that U+FFFD replaces in
 * 61 F1 80 80 E1 80 C2 62 80 63 80 BF 64. */
HK_TEST(utf8_decode_table_3_8) {
  const unsigned char in[] = {0x61, 0xF1, 0x80, 0x80, 0xE1, 0x80, 0xC2, 0x62,
                              0x80, 0x63, 0x80, 0xBF, 0x64};
  const int expected[] = {1, -3, -2, -1, 1, -1, 1, -1, -1, 1};
  size_t at = 0, unit = 0;
  while (at < sizeof in) {
    uint32_t cp;
    int n = hk_text_utf8_decode(in + at, sizeof in - at, &cp);
    HK_ASSERT(unit < sizeof expected / sizeof expected[0]);
    HK_ASSERT_INT_EQ(n, expected[unit]);
    at += (size_t)(n > 0 ? n : -n);
    unit++;
  }
  HK_ASSERT_INT_EQ(unit, sizeof expected / sizeof expected[0]);
}

/* Every scalar value encodes to a sequence that decodes back to it, of the expected length. */
HK_TEST(utf8_encode_round_trip) {
  for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    char out[4];
    size_t n = hk_text_utf8_encode(cp, out);
    size_t want = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    if (n != want) HK_FAIL_("U+%04X encodes to %zu bytes", (unsigned)cp, n);
    uint32_t back;
    if (hk_text_utf8_decode((const unsigned char *)out, n, &back) != (int)n || back != cp)
      HK_FAIL_("U+%04X does not decode back", (unsigned)cp);
    HK_ASSERT(hk_text_utf8_valid(out, n));
  }
}

HK_TEST(utf8_valid) {
  HK_ASSERT(hk_text_utf8_valid("", 0));
  HK_ASSERT(hk_text_utf8_valid("plain ascii", 11));
  HK_ASSERT(hk_text_utf8_valid("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14));
  HK_ASSERT(hk_text_utf8_valid("a\0b", 3));
  HK_ASSERT(!hk_text_utf8_valid("caf\xc3", 4));          /* cut inside a character */
  HK_ASSERT(!hk_text_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
  HK_ASSERT(!hk_text_utf8_valid("\xc0\xaf", 2));         /* overlong '/' */
  HK_ASSERT(!hk_text_utf8_valid("ok\x80", 3));
  /* The length bounds the read: a valid prefix of a longer buffer is valid. */
  HK_ASSERT(hk_text_utf8_valid("ab\xc3\xa9", 2));
}

HK_TEST_MAIN(HK_CASE(tchar_matches_rfc9110), HK_CASE(token), HK_CASE(ascii_classes),
             HK_CASE(hex_values), HK_CASE(utf8_decode_valid_boundaries),
             HK_CASE(utf8_decode_invalid_maximal_subparts), HK_CASE(utf8_decode_table_3_8),
             HK_CASE(utf8_encode_round_trip), HK_CASE(utf8_valid))
