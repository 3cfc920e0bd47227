/* hk_crypto: the secrets helpers — SHA-256, HMAC-SHA256, constant-time comparison of secrets and
 * webhook signature checks — over OpenSSL libcrypto. Pure functions of their inputs; deciding
 * which header or key to check is the HTTP and Lua layers' job. */
#ifndef HK_CRYPTO_H
#define HK_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HK_CRYPTO_SHA256_SIZE 32
#define HK_CRYPTO_SHA256_HEX_SIZE 65 /* 64 lower-case hex digits and a NUL */

/* The signature header's required prefix, e.g. "sha256=3f1a…" (GitHub's X-Hub-Signature-256). */
#define HK_CRYPTO_SIGNATURE_PREFIX "sha256="

/* True when the two byte strings are equal. Compares their SHA-256 digests with CRYPTO_memcmp,
 * so the time taken does not depend on where they differ or on whether their lengths match
 * (hashing time grows with each input's own length, which an attacker cannot observe for the
 * secret apart from a few nanoseconds per 64 bytes). Use it for API keys and tokens. NULL with
 * length 0 is the empty string. False if libcrypto fails. */
bool hk_crypto_equal(const void *a, size_t alen, const void *b, size_t blen);

/* SHA-256 of len bytes into out (raw) or out as lower-case hex with a NUL.
 * Returns 0, -EINVAL (NULL out, or NULL data with len > 0) or -EIO (libcrypto failed). */
int hk_crypto_sha256(const void *data, size_t len, uint8_t out[HK_CRYPTO_SHA256_SIZE]);
int hk_crypto_sha256_hex(const void *data, size_t len, char out[HK_CRYPTO_SHA256_HEX_SIZE]);

/* HMAC-SHA256 of msg under key (any length, including 0) into out (raw) or out as lower-case hex
 * with a NUL. Returns 0, -EINVAL (NULL out, or NULL key/msg with a length > 0) or -EIO. */
int hk_crypto_hmac_sha256(const void *key, size_t key_len, const void *msg, size_t len,
                          uint8_t out[HK_CRYPTO_SHA256_SIZE]);
int hk_crypto_hmac_sha256_hex(const void *key, size_t key_len, const void *msg, size_t len,
                              char out[HK_CRYPTO_SHA256_HEX_SIZE]);

/* True when header (header_len bytes, not NUL-terminated) is exactly "sha256=" followed by the
 * 64 hex digits (either case) of HMAC-SHA256(secret, body). body must be the raw bytes as
 * received (after de-chunking, before any parsing). The hex is decoded without data-dependent
 * branches and the raw digests are compared with CRYPTO_memcmp; the HMAC is computed even for
 * a malformed header so timing does not separate "malformed" from "wrong".
 * An empty secret verifies nothing (false): anyone could sign with it.
 * This does not stop replays — the scheme signs no timestamp, so a captured delivery verifies
 * again; callers that need that must check a signed timestamp or a delivery id themselves. */
bool hk_crypto_verify_signature(const char *secret, size_t secret_len, const void *body,
                                size_t body_len, const char *header, size_t header_len);

#endif
