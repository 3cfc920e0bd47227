/* Unit tests for hk_ratelimit: token math at exact boundaries, limit changes, LRU eviction and
 * the memory bound. Time is passed in, so nothing here sleeps. */
#include <errno.h>

#include "hk_ratelimit.h"
#include "hk_test.h"

static hk_ratelimit_t *new_limiter(size_t max_clients) {
  hk_ratelimit_t *rl = NULL;
  HK_ASSERT_INT_EQ(hk_ratelimit_new(max_clients, &rl), 0);
  HK_ASSERT(rl != NULL);
  return rl;
}

/* One take of a NUL-terminated key; fails the test on an error status. */
static hk_ratelimit_result_t take(hk_ratelimit_t *rl, const char *key, uint32_t limit,
                                  uint64_t window_ms, uint64_t now_ms) {
  hk_ratelimit_result_t r;
  memset(&r, 0xa5, sizeof r);
  HK_ASSERT_INT_EQ(hk_ratelimit_take(rl, key, strlen(key), limit, window_ms, now_ms, &r), 0);
  HK_ASSERT_INT_EQ(r.limit, limit);
  return r;
}

static void drain(hk_ratelimit_t *rl, const char *key, uint32_t limit, uint64_t window_ms,
                  uint64_t now_ms) {
  for (uint32_t i = 0; i < limit; i++) HK_ASSERT(take(rl, key, limit, window_ms, now_ms).allowed);
}

HK_TEST(burst_then_denied) {
  hk_ratelimit_t *rl = new_limiter(16);
  for (uint32_t i = 1; i <= 5; i++) {
    hk_ratelimit_result_t r = take(rl, "10.0.0.1", 5, 1000, 0);
    HK_ASSERT(r.allowed);
    HK_ASSERT_INT_EQ(r.remaining, 5 - i);
    HK_ASSERT_INT_EQ(r.reset_ms, 200 * i); /* 5 per 1000 ms: 200 ms per token */
    HK_ASSERT_INT_EQ(r.retry_after_ms, i < 5 ? 0 : 200);
  }
  for (int i = 0; i < 3; i++) {
    hk_ratelimit_result_t r = take(rl, "10.0.0.1", 5, 1000, 0);
    HK_ASSERT(!r.allowed);
    HK_ASSERT_INT_EQ(r.remaining, 0);
    HK_ASSERT_INT_EQ(r.reset_ms, 1000);
    HK_ASSERT_INT_EQ(r.retry_after_ms, 200);
  }
  HK_ASSERT_INT_EQ(hk_ratelimit_count(rl), 1);
  hk_ratelimit_free(rl);
}

HK_TEST(refill_exact_boundaries) {
  hk_ratelimit_t *rl = new_limiter(16);
  drain(rl, "k", 60, 60000, 0); /* one token per 1000 ms */
  hk_ratelimit_result_t r = take(rl, "k", 60, 60000, 999);
  HK_ASSERT(!r.allowed);
  HK_ASSERT_INT_EQ(r.retry_after_ms, 1);
  HK_ASSERT_INT_EQ(r.reset_ms, 59001);
  r = take(rl, "k", 60, 60000, 1000);
  HK_ASSERT(r.allowed);
  HK_ASSERT_INT_EQ(r.remaining, 0);
  HK_ASSERT_INT_EQ(r.retry_after_ms, 1000);
  HK_ASSERT_INT_EQ(r.reset_ms, 60000);
  HK_ASSERT(!take(rl, "k", 60, 60000, 1000).allowed);
  /* 2.5 tokens accrue in 2500 ms; one is taken, 1.5 remain: floor is 1. */
  r = take(rl, "k", 60, 60000, 3500);
  HK_ASSERT(r.allowed);
  HK_ASSERT_INT_EQ(r.remaining, 1);
  HK_ASSERT_INT_EQ(r.retry_after_ms, 0);
  HK_ASSERT_INT_EQ(r.reset_ms, 58500);
  /* A whole window later the bucket is full, and never fuller. */
  r = take(rl, "k", 60, 60000, 3500 + 60000 * 10);
  HK_ASSERT(r.allowed);
  HK_ASSERT_INT_EQ(r.remaining, 59);
  HK_ASSERT_INT_EQ(r.reset_ms, 1000);
  hk_ratelimit_free(rl);
}

HK_TEST(refill_fractional_rate) {
  hk_ratelimit_t *rl = new_limiter(16);
  drain(rl, "k", 3, 1000, 0); /* one token per 333.33 ms */
  hk_ratelimit_result_t r = take(rl, "k", 3, 1000, 333);
  HK_ASSERT(!r.allowed);
  HK_ASSERT_INT_EQ(r.retry_after_ms, 1); /* 0.999 tokens: 1/3 ms short, rounded up */
  r = take(rl, "k", 3, 1000, 334);
  HK_ASSERT(r.allowed);
  HK_ASSERT_INT_EQ(r.remaining, 0);
  HK_ASSERT_INT_EQ(r.retry_after_ms, 333); /* 0.002 tokens left: 332.67 ms, rounded up */
  HK_ASSERT_INT_EQ(r.reset_ms, 1000);      /* 2.998 tokens short: 999.33 ms, rounded up */
  /* Over 3000 ms of single-ms polling, exactly 9 tokens are handed out: nothing lost to rounding. */
  int allowed = 0;
  for (uint64_t t = 335; t <= 3334; t++) allowed += take(rl, "k", 3, 1000, t).allowed;
  HK_ASSERT_INT_EQ(allowed, 9);
  hk_ratelimit_free(rl);
}

HK_TEST(keys_independent) {
  hk_ratelimit_t *rl = new_limiter(16);
  drain(rl, "alice", 2, 1000, 0);
  HK_ASSERT(!take(rl, "alice", 2, 1000, 0).allowed);
  hk_ratelimit_result_t r = take(rl, "bob", 2, 1000, 0);
  HK_ASSERT(r.allowed);
  HK_ASSERT_INT_EQ(r.remaining, 1);
  /* Keys are bytes, not strings: an embedded NUL and the empty key are keys of their own. */
  hk_ratelimit_result_t n;
  HK_ASSERT_INT_EQ(hk_ratelimit_take(rl, "alice\0x", 7, 2, 1000, 0, &n), 0);
  HK_ASSERT(n.allowed);
  HK_ASSERT_INT_EQ(n.remaining, 1);
  HK_ASSERT_INT_EQ(hk_ratelimit_take(rl, NULL, 0, 2, 1000, 0, &n), 0);
  HK_ASSERT_INT_EQ(n.remaining, 1);
  HK_ASSERT_INT_EQ(hk_ratelimit_take(rl, "", 0, 2, 1000, 0, &n), 0);
  HK_ASSERT_INT_EQ(n.remaining, 0);
  HK_ASSERT_INT_EQ(hk_ratelimit_count(rl), 4);
  hk_ratelimit_free(rl);
}

HK_TEST(lru_eviction) {
  hk_ratelimit_t *rl = new_limiter(3);
  HK_ASSERT_INT_EQ(take(rl, "a", 2, 1000, 0).remaining, 1);
  HK_ASSERT_INT_EQ(take(rl, "b", 2, 1000, 0).remaining, 1);
  HK_ASSERT_INT_EQ(take(rl, "c", 2, 1000, 0).remaining, 1);
  HK_ASSERT_INT_EQ(take(rl, "a", 2, 1000, 0).remaining, 0); /* a is now the most recent */
  HK_ASSERT_INT_EQ(hk_ratelimit_count(rl), 3);
  /* d is new and the table is full: b, the least recently used, goes. */
  HK_ASSERT_INT_EQ(take(rl, "d", 2, 1000, 0).remaining, 1);
  HK_ASSERT_INT_EQ(hk_ratelimit_count(rl), 3);
  /* a and c survived with their state; a denial counts as a use too. */
  HK_ASSERT(!take(rl, "a", 2, 1000, 0).allowed);
  HK_ASSERT_INT_EQ(take(rl, "c", 2, 1000, 0).remaining, 0);
  /* b comes back full (evicting d, now the oldest), and d in turn comes back full. */
  HK_ASSERT_INT_EQ(take(rl, "b", 2, 1000, 0).remaining, 1);
  HK_ASSERT_INT_EQ(take(rl, "d", 2, 1000, 0).remaining, 1); /* evicts a */
  HK_ASSERT_INT_EQ(take(rl, "a", 2, 1000, 0).remaining, 1); /* a was evicted: full again */
  HK_ASSERT_INT_EQ(hk_ratelimit_count(rl), 3);
  hk_ratelimit_free(rl);
}

HK_TEST(lru_single_slot) {
  hk_ratelimit_t *rl = new_limiter(1);
  HK_ASSERT_INT_EQ(take(rl, "a", 1, 1000, 0).remaining, 0);
  HK_ASSERT(!take(rl, "a", 1, 1000, 0).allowed);
  HK_ASSERT(take(rl, "b", 1, 1000, 0).allowed);
  HK_ASSERT(take(rl, "a", 1, 1000, 0).allowed); /* evicted by b, full again */
  HK_ASSERT_INT_EQ(hk_ratelimit_count(rl), 1);
  hk_ratelimit_free(rl);
}

HK_TEST(limit_change_clamps) {
  hk_ratelimit_t *rl = new_limiter(16);
  HK_ASSERT_INT_EQ(take(rl, "k", 10, 1000, 0).remaining, 9);
  HK_ASSERT_INT_EQ(take(rl, "k", 10, 1000, 0).remaining, 8);
  /* Reloaded with limit 5: 8 tokens clamp to 5, then one is taken. */
  hk_ratelimit_result_t r = take(rl, "k", 5, 1000, 0);
  HK_ASSERT(r.allowed);
  HK_ASSERT_INT_EQ(r.remaining, 4);
  HK_ASSERT_INT_EQ(r.reset_ms, 200);
  for (int i = 0; i < 4; i++) HK_ASSERT(take(rl, "k", 5, 1000, 0).allowed);
  HK_ASSERT(!take(rl, "k", 5, 1000, 0).allowed);
  /* Raised back to 10: a drained bucket stays drained rather than starting over. */
  r = take(rl, "k", 10, 1000, 0);
  HK_ASSERT(!r.allowed);
  HK_ASSERT_INT_EQ(r.retry_after_ms, 100);
  HK_ASSERT_INT_EQ(r.reset_ms, 1000);
  HK_ASSERT(take(rl, "k", 10, 1000, 100).allowed);
  hk_ratelimit_free(rl);
}

HK_TEST(window_change_keeps_fraction) {
  hk_ratelimit_t *rl = new_limiter(16);
  drain(rl, "k", 3, 1000, 0);
  /* 500 ms at 3 per second refills 1.5 tokens, refilled at the old rate before the change. */
  hk_ratelimit_result_t r = take(rl, "k", 3, 3000, 500);
  HK_ASSERT(r.allowed);
  HK_ASSERT_INT_EQ(r.remaining, 0);
  HK_ASSERT_INT_EQ(r.retry_after_ms, 500); /* 0.5 token short at 1 per 1000 ms */
  HK_ASSERT_INT_EQ(r.reset_ms, 2500);
  HK_ASSERT(!take(rl, "k", 3, 3000, 999).allowed);
  HK_ASSERT(take(rl, "k", 3, 3000, 1000).allowed);
  hk_ratelimit_free(rl);
}

HK_TEST(long_keys) {
  hk_ratelimit_t *rl = new_limiter(16);
  char k1[402], k2[402], k3[HK_RATELIMIT_KEY_MAX + 1];
  memset(k1, 'x', 400);
  memcpy(k2, k1, 400);
  k1[400] = '1', k2[400] = '2';
  k1[401] = k2[401] = '\0';
  memset(k3, 'x', HK_RATELIMIT_KEY_MAX);
  k3[HK_RATELIMIT_KEY_MAX] = '\0';
  /* Two long keys with a common first 400 bytes, and a key of exactly the maximum length that
   * is their prefix: three buckets. */
  HK_ASSERT(take(rl, k1, 1, 1000, 0).allowed);
  HK_ASSERT(take(rl, k2, 1, 1000, 0).allowed);
  HK_ASSERT(take(rl, k3, 1, 1000, 0).allowed);
  HK_ASSERT(!take(rl, k1, 1, 1000, 0).allowed);
  HK_ASSERT(!take(rl, k2, 1, 1000, 0).allowed);
  HK_ASSERT(!take(rl, k3, 1, 1000, 0).allowed);
  HK_ASSERT_INT_EQ(hk_ratelimit_count(rl), 3);
  /* Keys one byte apart at the boundary. */
  char k4[HK_RATELIMIT_KEY_MAX + 2];
  memcpy(k4, k3, HK_RATELIMIT_KEY_MAX);
  k4[HK_RATELIMIT_KEY_MAX] = 'x';
  k4[HK_RATELIMIT_KEY_MAX + 1] = '\0';
  HK_ASSERT(take(rl, k4, 1, 1000, 0).allowed);
  HK_ASSERT(!take(rl, k4, 1, 1000, 0).allowed);
  /* A megabyte key works and is found again. */
  size_t big_len = 1 << 20;
  char *big = malloc(big_len + 1);
  HK_ASSERT(big != NULL);
  memset(big, 'k', big_len);
  big[big_len] = '\0';
  HK_ASSERT(take(rl, big, 1, 1000, 0).allowed);
  big[big_len - 1] = 'j'; /* differs only past the stored prefix */
  HK_ASSERT(take(rl, big, 1, 1000, 0).allowed);
  HK_ASSERT(!take(rl, big, 1, 1000, 0).allowed);
  free(big);
  HK_ASSERT_INT_EQ(hk_ratelimit_count(rl), 6);
  hk_ratelimit_free(rl);
}

HK_TEST(bounded_many_keys) {
  hk_ratelimit_t *rl = new_limiter(1000);
  char key[32];
  for (int i = 0; i < 100000; i++) {
    snprintf(key, sizeof key, "client-%d", i);
    hk_ratelimit_result_t r = take(rl, key, 5, 1000, (uint64_t)i);
    HK_ASSERT(r.allowed);
    HK_ASSERT_INT_EQ(r.remaining, 4);
    HK_ASSERT(hk_ratelimit_count(rl) <= 1000);
  }
  HK_ASSERT_INT_EQ(hk_ratelimit_count(rl), 1000);
  /* The last 1000 are kept with their state; an older one starts full. */
  HK_ASSERT_INT_EQ(take(rl, "client-99999", 5, 1000, 100000).remaining, 3);
  HK_ASSERT_INT_EQ(take(rl, "client-99001", 5, 1000, 100000).remaining, 4); /* refilled */
  HK_ASSERT_INT_EQ(take(rl, "client-99001", 5, 1000, 100000).remaining, 3);
  HK_ASSERT_INT_EQ(take(rl, "client-0", 5, 1000, 100000).remaining, 4);
  HK_ASSERT_INT_EQ(hk_ratelimit_count(rl), 1000);
  hk_ratelimit_free(rl);
}

HK_TEST(time_going_backwards) {
  hk_ratelimit_t *rl = new_limiter(16);
  drain(rl, "k", 5, 1000, 1000);
  HK_ASSERT(!take(rl, "k", 5, 1000, 500).allowed);
  HK_ASSERT(!take(rl, "k", 5, 1000, 1199).allowed);
  HK_ASSERT(take(rl, "k", 5, 1000, 1200).allowed);
  hk_ratelimit_free(rl);
}

HK_TEST(extreme_values) {
  hk_ratelimit_t *rl = new_limiter(16);
  hk_ratelimit_result_t r = take(rl, "k", UINT32_MAX, HK_RATELIMIT_WINDOW_MAX_MS, 0);
  HK_ASSERT(r.allowed);
  HK_ASSERT_INT_EQ(r.remaining, UINT32_MAX - 1);
  HK_ASSERT_INT_EQ(r.reset_ms, 1);
  r = take(rl, "k", UINT32_MAX, HK_RATELIMIT_WINDOW_MAX_MS, UINT64_MAX);
  HK_ASSERT_INT_EQ(r.remaining, UINT32_MAX - 1);
  /* Shrinking both at once from the largest bucket. */
  r = take(rl, "k", 1, 1, UINT64_MAX);
  HK_ASSERT(r.allowed);
  HK_ASSERT_INT_EQ(r.remaining, 0);
  HK_ASSERT_INT_EQ(r.reset_ms, 1);
  /* One token per window of the maximum length. */
  r = take(rl, "k", 1, HK_RATELIMIT_WINDOW_MAX_MS, UINT64_MAX);
  HK_ASSERT(!r.allowed);
  HK_ASSERT_INT_EQ(r.retry_after_ms, HK_RATELIMIT_WINDOW_MAX_MS);
  /* A fraction just under one token carried into the largest limit: the rescale multiplies
   * numbers just under 2^32 by each other. */
  const uint64_t w = HK_RATELIMIT_WINDOW_MAX_MS;
  HK_ASSERT(take(rl, "m", 1, w, 0).allowed);
  r = take(rl, "m", UINT32_MAX, w, w - 1);
  HK_ASSERT(!r.allowed);
  HK_ASSERT_INT_EQ(r.retry_after_ms, 1);
  HK_ASSERT_INT_EQ(r.reset_ms, w); /* (L*W - (W-1)) / L with L == W, rounded up */
  hk_ratelimit_free(rl);
}

HK_TEST(invalid_arguments) {
  hk_ratelimit_t *rl = NULL;
  HK_ASSERT_INT_EQ(hk_ratelimit_new(0, &rl), -EINVAL);
  HK_ASSERT(rl == NULL);
  HK_ASSERT_INT_EQ(hk_ratelimit_new(1, NULL), -EINVAL);
  HK_ASSERT_INT_EQ(hk_ratelimit_new(SIZE_MAX, &rl), -EINVAL);
  rl = new_limiter(4);
  hk_ratelimit_result_t r;
  HK_ASSERT_INT_EQ(hk_ratelimit_take(rl, "k", 1, 0, 1000, 0, &r), -EINVAL);
  HK_ASSERT_INT_EQ(hk_ratelimit_take(rl, "k", 1, 1, 0, 0, &r), -EINVAL);
  HK_ASSERT_INT_EQ(hk_ratelimit_take(rl, "k", 1, 1, HK_RATELIMIT_WINDOW_MAX_MS + 1, 0, &r),
                   -EINVAL);
  HK_ASSERT_INT_EQ(hk_ratelimit_take(rl, NULL, 1, 1, 1000, 0, &r), -EINVAL);
  HK_ASSERT_INT_EQ(hk_ratelimit_take(rl, "k", 1, 1, 1000, 0, NULL), -EINVAL);
  HK_ASSERT_INT_EQ(hk_ratelimit_take(NULL, "k", 1, 1, 1000, 0, &r), -EINVAL);
  HK_ASSERT_INT_EQ(hk_ratelimit_count(rl), 0);
  HK_ASSERT_INT_EQ(hk_ratelimit_count(NULL), 0);
  hk_ratelimit_free(rl);
  hk_ratelimit_free(NULL);
}

HK_TEST_MAIN(HK_CASE(burst_then_denied), HK_CASE(refill_exact_boundaries),
             HK_CASE(refill_fractional_rate), HK_CASE(keys_independent), HK_CASE(lru_eviction),
             HK_CASE(lru_single_slot), HK_CASE(limit_change_clamps),
             HK_CASE(window_change_keeps_fraction), HK_CASE(long_keys),
             HK_CASE(bounded_many_keys), HK_CASE(time_going_backwards), HK_CASE(extreme_values),
             HK_CASE(invalid_arguments))
