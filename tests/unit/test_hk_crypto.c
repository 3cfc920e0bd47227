/* Unit tests for hk_crypto: published SHA-256 and HMAC-SHA256 vectors (FIPS 180-2, RFC 4231,
 * GitHub's webhook example), constant-time equality, and signature header parsing. */
#include <ctype.h>
#include <errno.h>

#include "hk_crypto.h"
#include "hk_test.h"

static void expect_hmac(const void *key, size_t key_len, const void *msg, size_t len,
                        const char *hex) {
  char out[HK_CRYPTO_SHA256_HEX_SIZE];
  HK_ASSERT_INT_EQ(hk_crypto_hmac_sha256_hex(key, key_len, msg, len, out), 0);
  HK_ASSERT_STR_EQ(out, hex);
}

/* A valid header for body under secret, written into header[72]. */
static void sign(const char *secret, const char *body, char header[72]) {
  char hex[HK_CRYPTO_SHA256_HEX_SIZE];
  HK_ASSERT_INT_EQ(hk_crypto_hmac_sha256_hex(secret, strlen(secret), body, strlen(body), hex), 0);
  snprintf(header, 72, "sha256=%s", hex);
  HK_ASSERT_INT_EQ(strlen(header), 71);
}

static bool verify(const char *secret, const char *body, const char *header) {
  return hk_crypto_verify_signature(secret, strlen(secret), body, strlen(body), header,
                                    strlen(header));
}

HK_TEST(sha256_vectors) {
  char out[HK_CRYPTO_SHA256_HEX_SIZE];
  HK_ASSERT_INT_EQ(hk_crypto_sha256_hex("abc", 3, out), 0);
  HK_ASSERT_STR_EQ(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  HK_ASSERT_INT_EQ(hk_crypto_sha256_hex(NULL, 0, out), 0);
  HK_ASSERT_STR_EQ(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  const char *two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  HK_ASSERT_INT_EQ(hk_crypto_sha256_hex(two_blocks, strlen(two_blocks), out), 0);
  HK_ASSERT_STR_EQ(out, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  uint8_t raw[HK_CRYPTO_SHA256_SIZE];
  HK_ASSERT_INT_EQ(hk_crypto_sha256("abc", 3, raw), 0);
  HK_ASSERT_INT_EQ(raw[0], 0xba);
  HK_ASSERT_INT_EQ(raw[31], 0xad);
  HK_ASSERT_INT_EQ(hk_crypto_sha256(NULL, 1, raw), -EINVAL);
  HK_ASSERT_INT_EQ(hk_crypto_sha256_hex("abc", 3, NULL), -EINVAL);
}

HK_TEST(hmac_rfc4231) {
  uint8_t key[131], data[50];
  /* Case 1 */
  memset(key, 0x0b, 20);
  expect_hmac(key, 20, "Hi There", 8,
              "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  /* Case 2: a key shorter than the output */
  expect_hmac("Jefe", 4, "what do ya want for nothing?", 28,
              "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  /* Case 4: key 0x01..0x19, data 50 bytes of 0xcd */
  for (int i = 0; i < 25; i++) key[i] = (uint8_t)(i + 1);
  memset(data, 0xcd, sizeof data);
  expect_hmac(key, 25, data, sizeof data,
              "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
  /* Case 6: a key longer than the block size is hashed first */
  memset(key, 0xaa, 131);
  const char *msg6 = "Test Using Larger Than Block-Size Key - Hash Key First";
  expect_hmac(key, 131, msg6, strlen(msg6),
              "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

HK_TEST(hmac_empty_and_errors) {
  /* The empty key and message, by NULL and by "". */
  const char *empty = "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad";
  expect_hmac(NULL, 0, NULL, 0, empty);
  expect_hmac("", 0, "", 0, empty);
  char out[HK_CRYPTO_SHA256_HEX_SIZE];
  HK_ASSERT_INT_EQ(hk_crypto_hmac_sha256_hex(NULL, 1, "m", 1, out), -EINVAL);
  HK_ASSERT_INT_EQ(hk_crypto_hmac_sha256_hex("k", 1, NULL, 1, out), -EINVAL);
  HK_ASSERT_INT_EQ(hk_crypto_hmac_sha256_hex("k", 1, "m", 1, NULL), -EINVAL);
  uint8_t raw[HK_CRYPTO_SHA256_SIZE];
  HK_ASSERT_INT_EQ(hk_crypto_hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, raw), 0);
  HK_ASSERT_INT_EQ(raw[0], 0x5b);
  HK_ASSERT_INT_EQ(raw[31], 0x43);
}

HK_TEST(equal) {
  HK_ASSERT(hk_crypto_equal("secret-key", 10, "secret-key", 10));
  HK_ASSERT(!hk_crypto_equal("secret-key", 10, "secret-kez", 10));
  HK_ASSERT(!hk_crypto_equal("secret-key", 10, "secret-key-longer", 17));
  HK_ASSERT(!hk_crypto_equal("secret-key", 10, "secret-ke", 9));
  HK_ASSERT(!hk_crypto_equal("secret-key", 10, "", 0));
  HK_ASSERT(hk_crypto_equal(NULL, 0, "", 0));
  HK_ASSERT(!hk_crypto_equal("a\0b", 3, "a\0c", 3)); /* bytes, not C strings */
  HK_ASSERT(!hk_crypto_equal(NULL, 1, NULL, 1));     /* misuse is never equal */
}

HK_TEST(verify_github_example) {
  /* From GitHub's "Validating webhook deliveries". */
  HK_ASSERT(verify("It's a Secret to Everybody", "Hello, World!",
                   "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"));
  HK_ASSERT(verify("It's a Secret to Everybody", "Hello, World!",
                   "sha256=757107EA0EB2509FC211221CCE984B8A37570B6D7586C22C46F4379C8B043E17"));
}

HK_TEST(verify_good_and_wrong) {
  const char *body = "{\"action\":\"opened\",\"n\":1}";
  char header[72];
  sign("s3cret", body, header);
  HK_ASSERT(verify("s3cret", body, header));
  HK_ASSERT(!verify("s3cre", body, header));
  HK_ASSERT(!verify("s3cret!", body, header));
  HK_ASSERT(!verify("s3cret", "{\"action\":\"opened\",\"n\":2}", header));
  HK_ASSERT(!verify("s3cret", "", header));
  /* The raw bytes count: trailing whitespace changes the body. */
  HK_ASSERT(!verify("s3cret", "{\"action\":\"opened\",\"n\":1}\n", header));
  /* An empty secret never verifies, even with a correct HMAC under the empty key. */
  char empty_sig[72];
  sign("", body, empty_sig);
  HK_ASSERT(!verify("", body, empty_sig));
  HK_ASSERT(!hk_crypto_verify_signature(NULL, 0, body, strlen(body), empty_sig, 71));
  /* Binary body with NULs: verified over all its bytes. */
  const char bin[] = {'a', '\0', 'b', '\0'};
  char hex[HK_CRYPTO_SHA256_HEX_SIZE];
  HK_ASSERT_INT_EQ(hk_crypto_hmac_sha256_hex("k", 1, bin, sizeof bin, hex), 0);
  snprintf(header, sizeof header, "sha256=%s", hex);
  HK_ASSERT(hk_crypto_verify_signature("k", 1, bin, sizeof bin, header, 71));
  HK_ASSERT(!hk_crypto_verify_signature("k", 1, bin, 1, header, 71));
}

HK_TEST(verify_uppercase_hex) {
  const char *body = "payload";
  char header[72];
  sign("key", body, header);
  for (size_t i = 7; i < 71; i++) header[i] = (char)toupper((unsigned char)header[i]);
  HK_ASSERT(verify("key", body, header));
  /* Mixed case too. */
  for (size_t i = 7; i < 71; i += 2) header[i] = (char)tolower((unsigned char)header[i]);
  HK_ASSERT(verify("key", body, header));
}

HK_TEST(verify_malformed) {
  const char *body = "payload";
  char header[72], bad[80];
  sign("key", body, header);
  /* Missing or different prefix. */
  HK_ASSERT(!verify("key", body, header + 7));
  memcpy(bad, header, 72);
  memcpy(bad, "sha1=", 5);
  HK_ASSERT(!verify("key", body, bad));
  memcpy(bad, header, 72);
  memcpy(bad, "SHA256=", 7);
  HK_ASSERT(!verify("key", body, bad));
  memcpy(bad, header, 72);
  bad[6] = ':';
  HK_ASSERT(!verify("key", body, bad));
  /* Wrong lengths: one digit short, one extra, a trailing space, nothing at all. */
  memcpy(bad, header, 72);
  bad[70] = '\0';
  HK_ASSERT(!verify("key", body, bad));
  snprintf(bad, sizeof bad, "%s0", header);
  HK_ASSERT(!verify("key", body, bad));
  snprintf(bad, sizeof bad, "%s ", header);
  HK_ASSERT(!verify("key", body, bad));
  HK_ASSERT(!verify("key", body, ""));
  HK_ASSERT(!hk_crypto_verify_signature("key", 3, body, strlen(body), NULL, 0));
  HK_ASSERT(!verify("key", body, "sha256="));
  /* Non-hex: every byte value at every position is accepted only when it is the right digit in
   * either case — this walks the edges of the branch-free decoder ('/', ':', '@', 'G', '`', 'g').
   * A non-hex byte must not pass for a '0' digit, so the signature has to contain one. */
  HK_ASSERT(memchr(header + 7, '0', 64) != NULL);
  for (size_t pos = 7; pos < 71; pos++) {
    for (int c = 0; c < 256; c++) {
      memcpy(bad, header, 72);
      bad[pos] = (char)c;
      bool expect = tolower(c) == header[pos];
      bool got = hk_crypto_verify_signature("key", 3, body, strlen(body), bad, 71);
      if (got != expect) HK_FAIL_("byte 0x%02x at %zu: got %d, expected %d", c, pos, got, expect);
    }
  }
  /* A valid hex string that is simply wrong. */
  memcpy(bad, header, 72);
  bad[70] = bad[70] == '0' ? '1' : '0';
  HK_ASSERT(!verify("key", body, bad));
}

HK_TEST_MAIN(HK_CASE(sha256_vectors), HK_CASE(hmac_rfc4231), HK_CASE(hmac_empty_and_errors),
             HK_CASE(equal), HK_CASE(verify_github_example), HK_CASE(verify_good_and_wrong),
             HK_CASE(verify_uppercase_hex), HK_CASE(verify_malformed))
