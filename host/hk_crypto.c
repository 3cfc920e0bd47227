/* hk_crypto: SHA-256 and HMAC-SHA256 through libcrypto's one-shot EVP calls (no deprecated
 * OpenSSL 3 APIs), constant-time equality and webhook signature verification on top of them.
 * Failures clear the thread's OpenSSL error queue so they cannot surface later in libcurl's TLS. */
#include "hk_crypto.h"

#include <errno.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

static const char hex_digits[] = "0123456789abcdef";

static void to_hex(const uint8_t digest[HK_CRYPTO_SHA256_SIZE], char out[HK_CRYPTO_SHA256_HEX_SIZE]) {
  for (size_t i = 0; i < HK_CRYPTO_SHA256_SIZE; i++) {
    out[2 * i] = hex_digits[digest[i] >> 4];
    out[2 * i + 1] = hex_digits[digest[i] & 0x0f];
  }
  out[2 * HK_CRYPTO_SHA256_SIZE] = '\0';
}

int hk_crypto_sha256(const void *data, size_t len, uint8_t out[HK_CRYPTO_SHA256_SIZE]) {
  if (out == NULL || (data == NULL && len > 0)) return -EINVAL;
  unsigned int out_len = 0;
  if (!EVP_Digest(data != NULL ? data : "", len, out, &out_len, EVP_sha256(), NULL) ||
      out_len != HK_CRYPTO_SHA256_SIZE) {
    ERR_clear_error();
    return -EIO;
  }
  return 0;
}

int hk_crypto_sha256_hex(const void *data, size_t len, char out[HK_CRYPTO_SHA256_HEX_SIZE]) {
  if (out == NULL) return -EINVAL;
  uint8_t digest[HK_CRYPTO_SHA256_SIZE];
  int rc = hk_crypto_sha256(data, len, digest);
  if (rc != 0) return rc;
  to_hex(digest, out);
  return 0;
}

int hk_crypto_hmac_sha256(const void *key, size_t key_len, const void *msg, size_t len,
                          uint8_t out[HK_CRYPTO_SHA256_SIZE]) {
  if (out == NULL || (key == NULL && key_len > 0) || (msg == NULL && len > 0)) return -EINVAL;
  size_t out_len = 0;
  /* A NULL key makes the HMAC provider skip setting a key and fail; "" with length 0 is the
   * empty key HMAC is defined for. */
  if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key != NULL ? key : "", key_len,
                msg != NULL ? msg : (const void *)"", len, out, HK_CRYPTO_SHA256_SIZE,
                &out_len) == NULL ||
      out_len != HK_CRYPTO_SHA256_SIZE) {
    ERR_clear_error();
    return -EIO;
  }
  return 0;
}

int hk_crypto_hmac_sha256_hex(const void *key, size_t key_len, const void *msg, size_t len,
                              char out[HK_CRYPTO_SHA256_HEX_SIZE]) {
  if (out == NULL) return -EINVAL;
  uint8_t digest[HK_CRYPTO_SHA256_SIZE];
  int rc = hk_crypto_hmac_sha256(key, key_len, msg, len, digest);
  if (rc != 0) return rc;
  to_hex(digest, out);
  OPENSSL_cleanse(digest, sizeof digest);
  return 0;
}

bool hk_crypto_equal(const void *a, size_t alen, const void *b, size_t blen) {
  uint8_t da[HK_CRYPTO_SHA256_SIZE], db[HK_CRYPTO_SHA256_SIZE];
  int rc_a = hk_crypto_sha256(a, alen, da);
  int rc_b = hk_crypto_sha256(b, blen, db);
  bool equal = rc_a == 0 && rc_b == 0 && CRYPTO_memcmp(da, db, sizeof da) == 0;
  OPENSSL_cleanse(da, sizeof da);
  OPENSSL_cleanse(db, sizeof db);
  return equal;
}

/* Decodes 2 * HK_CRYPTO_SHA256_SIZE hex digits of either case into out without branching on
 * the characters (libsodium's sodium_hex2bin arithmetic). Returns 0, or 1 if any character was
 * not a hex digit; out is fully written either way. */
static unsigned hex_decode_digest(const char *hex, uint8_t out[HK_CRYPTO_SHA256_SIZE]) {
  unsigned bad = 0;
  for (size_t i = 0; i < 2 * HK_CRYPTO_SHA256_SIZE; i++) {
    unsigned c = (unsigned char)hex[i];
    unsigned num = c ^ 48U;                                        /* '0'..'9' -> 0..9 */
    unsigned num_mask = (num - 10U) >> 8;                          /* all ones iff num < 10 */
    unsigned alpha = (c & ~32U) - 55U;                             /* 'A'..'F', 'a'..'f' -> 10..15 */
    unsigned alpha_mask = ((alpha - 10U) ^ (alpha - 16U)) >> 8;    /* all ones iff 10 <= alpha < 16 */
    unsigned value = (num_mask & num) | (alpha_mask & alpha);
    bad |= ((num_mask | alpha_mask) & 1U) ^ 1U;
    if (i % 2 == 0)
      out[i / 2] = (uint8_t)(value << 4);
    else
      out[i / 2] = (uint8_t)(out[i / 2] | (value & 0x0fU));
  }
  return bad;
}

bool hk_crypto_verify_signature(const char *secret, size_t secret_len, const void *body,
                                size_t body_len, const char *header, size_t header_len) {
  /* Misuse and an empty secret depend on configuration, not on the request: answer at once. */
  if (secret == NULL || secret_len == 0 || (body == NULL && body_len > 0) ||
      (header == NULL && header_len > 0))
    return false;

  static const char prefix[] = HK_CRYPTO_SIGNATURE_PREFIX;
  const size_t prefix_len = sizeof prefix - 1;
  uint8_t given[HK_CRYPTO_SHA256_SIZE] = {0};
  uint8_t expected[HK_CRYPTO_SHA256_SIZE] = {0};
  unsigned bad = 0;

  /* The header's shape is public (the client sent it), so its length may pick a branch; the
   * HMAC and the comparison run whatever the shape. */
  if (header_len == prefix_len + 2 * HK_CRYPTO_SHA256_SIZE) {
    bad |= CRYPTO_memcmp(header, prefix, prefix_len) != 0;
    bad |= hex_decode_digest(header + prefix_len, given);
  } else {
    bad = 1;
  }
  if (hk_crypto_hmac_sha256(secret, secret_len, body, body_len, expected) != 0) bad = 1;
  bad |= CRYPTO_memcmp(expected, given, sizeof expected) != 0;
  OPENSSL_cleanse(expected, sizeof expected);
  return bad == 0;
}
