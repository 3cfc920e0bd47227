/* hk_ratelimit: token-bucket rate limiting keyed by a client id (an address, an API key — the
 * caller decides), with a bounded number of buckets and least-recently-used eviction. Pure: no
 * I/O and no clock (time comes in as now_ms); the HTTP layer turns results into headers.
 * Entry point: hk_ratelimit_take(). Thread-safe (one mutex): every worker shares one limiter,
 * so a client's limit holds for the process, not once per worker. */
#ifndef HK_RATELIMIT_H
#define HK_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Keys up to this many bytes are stored and compared exactly. A longer key is stored as its
 * first HK_RATELIMIT_KEY_MAX - 16 bytes followed by a 128-bit keyed digest of the whole key, so
 * two long keys share a bucket only if they collide under a per-instance random key; a long key
 * never shares a bucket with a short one. Memory per bucket is therefore bounded. */
#define HK_RATELIMIT_KEY_MAX 256

/* Windows longer than this (about 49.7 days) are rejected, so the token arithmetic, which is
 * exact integer math in units of 1/window_ms of a token, cannot overflow 64 bits. */
#define HK_RATELIMIT_WINDOW_MAX_MS UINT64_C(0xffffffff)

typedef struct hk_ratelimit_s hk_ratelimit_t;

typedef struct hk_ratelimit_result_s {
  bool allowed;            /* a token was taken */
  uint32_t limit;          /* the bucket's capacity: X-RateLimit-Limit */
  uint32_t remaining;      /* whole tokens left after this take: X-RateLimit-Remaining */
  uint64_t reset_ms;       /* ms until the bucket is full again (0 when it is full) */
  uint64_t retry_after_ms; /* ms until a take would be allowed; 0 when one would be now.
                            * When denied it is >= 1: send Retry-After as
                            * ceil(retry_after_ms / 1000) seconds. */
} hk_ratelimit_result_t;

/* Makes a limiter holding at most max_clients buckets (>= 1). The hash is seeded from
 * getrandom(2), so clients cannot precompute colliding keys. Returns 0, -EINVAL, -ENOMEM, or the
 * negated errno of getrandom. */
int hk_ratelimit_new(size_t max_clients, hk_ratelimit_t **out);

/* hk_ratelimit_free(NULL) is a no-op. */
void hk_ratelimit_free(hk_ratelimit_t *rl);

/* Takes one token from the bucket of `key` (key_len bytes, copied; need not be NUL-terminated;
 * may be empty). The bucket holds up to `limit` tokens and refills continuously at limit tokens
 * per window_ms (60 per 60000 ms: one each second). A key seen for the first time starts full;
 * when max_clients buckets exist, the least recently used one is evicted to make room (it starts
 * full again if it comes back). Any take, allowed or denied, marks the key as recently used.
 *
 * If limit or window_ms differ from the bucket's previous take (scripts reloaded), the bucket
 * is refilled under the old rate up to now, then its token count is carried over (rounded down)
 * and clamped to the new capacity: a reload never hands a client more than the new limit.
 * Callers that apply several limits to one client should put the limit's name in the key.
 *
 * Time that goes backwards refills nothing. O(1) expected.
 * Returns 0 with *result filled, -EINVAL (limit 0, window_ms 0 or above
 * HK_RATELIMIT_WINDOW_MAX_MS, NULL key with key_len > 0, NULL rl or result) or -ENOMEM (a new
 * key could not be stored; the limiter is unchanged). */
int hk_ratelimit_take(hk_ratelimit_t *rl, const char *key, size_t key_len, uint32_t limit,
                      uint64_t window_ms, uint64_t now_ms, hk_ratelimit_result_t *result);

/* The number of buckets held (<= max_clients). */
size_t hk_ratelimit_count(const hk_ratelimit_t *rl);

#endif
