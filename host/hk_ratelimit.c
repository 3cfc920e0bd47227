/* hk_ratelimit: token buckets in a fixed-size chained hash table (keyed by SipHash-2-4 with a
 * per-instance random key) threaded on an intrusive LRU list. Tokens are kept in exact integer
 * units of 1/window_ms of a token, so refill at limit/window_ms per ms loses nothing to rounding.
 * Entry point: hk_ratelimit_take(). */
#include "hk_ratelimit.h"

#include <pthread.h>

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* The digest that replaces the tail of a long key: two 64-bit SipHash values. */
#define DIGEST_SIZE 16
#define PREFIX_SIZE (HK_RATELIMIT_KEY_MAX - DIGEST_SIZE)

/* ---- SipHash-2-4 ------------------------------------------------------------------------- */

#define ROTL64(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

#define SIPROUND(v0, v1, v2, v3) \
  do {                           \
    v0 += v1;                    \
    v1 = ROTL64(v1, 13);         \
    v1 ^= v0;                    \
    v0 = ROTL64(v0, 32);         \
    v2 += v3;                    \
    v3 = ROTL64(v3, 16);         \
    v3 ^= v2;                    \
    v0 += v3;                    \
    v3 = ROTL64(v3, 21);         \
    v3 ^= v0;                    \
    v2 += v1;                    \
    v1 = ROTL64(v1, 17);         \
    v1 ^= v2;                    \
    v2 = ROTL64(v2, 32);         \
  } while (0)

static uint64_t load_le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

/* SipHash-2-4 of len bytes under the 128-bit key k (Aumasson and Bernstein's reference). */
static uint64_t siphash24(const uint64_t k[2], const void *data, size_t len) {
  const uint8_t *in = data;
  uint64_t v0 = UINT64_C(0x736f6d6570736575) ^ k[0];
  uint64_t v1 = UINT64_C(0x646f72616e646f6d) ^ k[1];
  uint64_t v2 = UINT64_C(0x6c7967656e657261) ^ k[0];
  uint64_t v3 = UINT64_C(0x7465646279746573) ^ k[1];
  size_t whole = len - len % 8;
  for (size_t i = 0; i < whole; i += 8) {
    uint64_t m = load_le64(in + i);
    v3 ^= m;
    SIPROUND(v0, v1, v2, v3);
    SIPROUND(v0, v1, v2, v3);
    v0 ^= m;
  }
  uint64_t b = (uint64_t)len << 56;
  for (size_t i = 0; i < len % 8; i++) b |= (uint64_t)in[whole + i] << (8 * i);
  v3 ^= b;
  SIPROUND(v0, v1, v2, v3);
  SIPROUND(v0, v1, v2, v3);
  v0 ^= b;
  v2 ^= 0xff;
  for (int i = 0; i < 4; i++) SIPROUND(v0, v1, v2, v3);
  return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- the table --------------------------------------------------------------------------- */

typedef struct lru_link_s {
  struct lru_link_s *prev, *next;
} lru_link_t;

typedef struct entry_s {
  lru_link_t lru;            /* first, so a link converts back to its entry */
  struct entry_s *next;      /* next in the same slot */
  struct entry_s **pprev;    /* the pointer that points at this entry, for O(1) unlinking */
  uint64_t hash;
  uint64_t units;            /* tokens * window_ms; <= limit * window_ms */
  uint64_t last_ms;          /* the time units was last brought up to date */
  uint64_t window_ms;
  uint32_t limit;
  uint16_t key_len;          /* <= HK_RATELIMIT_KEY_MAX */
  bool digested;             /* key holds a prefix and a digest of a longer key */
  char key[];
} entry_t;

struct hk_ratelimit_s {
  pthread_mutex_t lock; /* one limiter for every worker: a client's limit is per process */
  entry_t **slots;
  size_t mask;               /* slot count - 1; slot count is a power of two >= max_clients */
  size_t count;
  size_t max_clients;
  lru_link_t lru;            /* sentinel: lru.next is the most recently used */
  uint64_t index_key[2];     /* SipHash key for slot selection */
  uint64_t digest_key[2][2]; /* two SipHash keys for the digest of a long key */
};

static int random_bytes(void *out, size_t len) {
  size_t got = 0;
  while (got < len) {
    ssize_t n = getrandom((uint8_t *)out + got, len - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    got += (size_t)n;
  }
  return 0;
}

int hk_ratelimit_new(size_t max_clients, hk_ratelimit_t **out) {
  int rc;
  hk_ratelimit_t *rl = NULL;
  if (out == NULL || max_clients == 0 || max_clients > (SIZE_MAX / sizeof(entry_t *)) / 2) {
    rc = -EINVAL;
    goto fail;
  }
  rl = calloc(1, sizeof *rl);
  if (rl == NULL) {
    rc = -ENOMEM;
    goto fail;
  }
  pthread_mutex_init(&rl->lock, NULL);
  size_t slots = 1;
  while (slots < max_clients) slots <<= 1;
  rl->slots = calloc(slots, sizeof *rl->slots);
  if (rl->slots == NULL) {
    rc = -ENOMEM;
    goto fail;
  }
  rl->mask = slots - 1;
  rl->max_clients = max_clients;
  rl->lru.prev = rl->lru.next = &rl->lru;
  uint64_t seed[6];
  rc = random_bytes(seed, sizeof seed);
  if (rc != 0) goto fail;
  rl->index_key[0] = seed[0];
  rl->index_key[1] = seed[1];
  rl->digest_key[0][0] = seed[2];
  rl->digest_key[0][1] = seed[3];
  rl->digest_key[1][0] = seed[4];
  rl->digest_key[1][1] = seed[5];
  *out = rl;
  return 0;

fail:
  hk_ratelimit_free(rl);
  if (out != NULL) *out = NULL;
  return rc;
}

void hk_ratelimit_free(hk_ratelimit_t *rl) {
  if (rl == NULL) return;
  if (rl->lru.next != NULL) { /* NULL only when hk_ratelimit_new failed early */
    lru_link_t *link = rl->lru.next;
    while (link != &rl->lru) {
      lru_link_t *next = link->next;
      free((entry_t *)link);
      link = next;
    }
  }
  free(rl->slots);
  pthread_mutex_destroy(&rl->lock);
  free(rl);
}

size_t hk_ratelimit_count(const hk_ratelimit_t *rl) {
  if (rl == NULL) return 0;
  pthread_mutex_lock((pthread_mutex_t *)&rl->lock);
  size_t count = rl->count;
  pthread_mutex_unlock((pthread_mutex_t *)&rl->lock);
  return count;
}

static void lru_unlink(lru_link_t *link) {
  link->prev->next = link->next;
  link->next->prev = link->prev;
}

static void lru_push_front(hk_ratelimit_t *rl, lru_link_t *link) {
  link->prev = &rl->lru;
  link->next = rl->lru.next;
  rl->lru.next->prev = link;
  rl->lru.next = link;
}

static void slot_insert(hk_ratelimit_t *rl, entry_t *e) {
  entry_t **head = &rl->slots[e->hash & rl->mask];
  e->next = *head;
  e->pprev = head;
  if (*head != NULL) (*head)->pprev = &e->next;
  *head = e;
}

static void slot_remove(entry_t *e) {
  *e->pprev = e->next;
  if (e->next != NULL) e->next->pprev = e->pprev;
}

/* Drops the least recently used bucket. */
static void evict_oldest(hk_ratelimit_t *rl) {
  assert(rl->count > 0 && rl->lru.prev != &rl->lru);
  entry_t *victim = (entry_t *)rl->lru.prev;
  lru_unlink(&victim->lru);
  slot_remove(victim);
  free(victim);
  rl->count--;
}

/* ---- token arithmetic -------------------------------------------------------------------- */

/* ceil(a / b) without the overflow of (a + b - 1) / b. */
static uint64_t div_ceil(uint64_t a, uint64_t b) {
  return a / b + (a % b != 0);
}

/* Brings the bucket up to now_ms at its current rate. The caps on limit and window_ms keep
 * limit * window_ms below 2^64; elapsed < window_ms keeps elapsed * limit below it too. */
static void refill(entry_t *e, uint64_t now_ms) {
  uint64_t capacity = (uint64_t)e->limit * e->window_ms;
  assert(e->units <= capacity);
  if (now_ms <= e->last_ms) return; /* time stood still or went backwards: nothing to add */
  uint64_t elapsed = now_ms - e->last_ms;
  e->last_ms = now_ms;
  if (elapsed >= e->window_ms) {
    e->units = capacity;
    return;
  }
  uint64_t added = elapsed * e->limit;
  uint64_t deficit = capacity - e->units;
  e->units = added >= deficit ? capacity : e->units + added;
}

/* Carries the bucket's token count (rounded down) to a new limit and window, clamped to the new
 * capacity, so a reload can neither reset a drained bucket nor exceed the new limit. */
static void rescale(entry_t *e, uint32_t limit, uint64_t window_ms) {
  uint64_t whole = e->units / e->window_ms;
  uint64_t fraction = e->units % e->window_ms; /* < 2^32, so fraction * window_ms fits */
  if (whole >= limit)
    e->units = (uint64_t)limit * window_ms;
  else
    e->units = whole * window_ms + fraction * window_ms / e->window_ms;
  e->limit = limit;
  e->window_ms = window_ms;
  assert(e->units <= (uint64_t)limit * window_ms);
}

/* ---- lookup and take --------------------------------------------------------------------- */

/* Fills stored[] with the bytes that identify key in the table and returns their count. */
static size_t stored_key(const hk_ratelimit_t *rl, const char *key, size_t key_len,
                         uint8_t stored[HK_RATELIMIT_KEY_MAX], bool *digested) {
  if (key_len <= HK_RATELIMIT_KEY_MAX) {
    if (key_len > 0) memcpy(stored, key, key_len);
    *digested = false;
    return key_len;
  }
  memcpy(stored, key, PREFIX_SIZE);
  for (int i = 0; i < 2; i++) {
    uint64_t d = siphash24(rl->digest_key[i], key, key_len);
    for (int b = 0; b < 8; b++) stored[PREFIX_SIZE + 8 * i + b] = (uint8_t)(d >> (8 * b));
  }
  *digested = true;
  return HK_RATELIMIT_KEY_MAX;
}

static entry_t *find(const hk_ratelimit_t *rl, uint64_t hash, const uint8_t *key, size_t key_len,
                     bool digested) {
  for (entry_t *e = rl->slots[hash & rl->mask]; e != NULL; e = e->next) {
    if (e->hash == hash && e->key_len == key_len && e->digested == digested &&
        memcmp(e->key, key, key_len) == 0)
      return e;
  }
  return NULL;
}

static int take_locked(hk_ratelimit_t *rl, const char *key, size_t key_len, uint32_t limit,
                       uint64_t window_ms, uint64_t now_ms, hk_ratelimit_result_t *result);

int hk_ratelimit_take(hk_ratelimit_t *rl, const char *key, size_t key_len, uint32_t limit,
                      uint64_t window_ms, uint64_t now_ms, hk_ratelimit_result_t *result) {
  if (rl == NULL || result == NULL || (key == NULL && key_len > 0) || limit == 0 ||
      window_ms == 0 || window_ms > HK_RATELIMIT_WINDOW_MAX_MS)
    return -EINVAL;
  pthread_mutex_lock(&rl->lock);
  int rc = take_locked(rl, key, key_len, limit, window_ms, now_ms, result);
  pthread_mutex_unlock(&rl->lock);
  return rc;
}

static int take_locked(hk_ratelimit_t *rl, const char *key, size_t key_len, uint32_t limit,
                       uint64_t window_ms, uint64_t now_ms, hk_ratelimit_result_t *result) {
  uint8_t stored[HK_RATELIMIT_KEY_MAX];
  bool digested;
  size_t stored_len = stored_key(rl, key, key_len, stored, &digested);
  uint64_t hash = siphash24(rl->index_key, stored, stored_len);

  entry_t *e = find(rl, hash, stored, stored_len, digested);
  if (e != NULL) {
    lru_unlink(&e->lru);
    lru_push_front(rl, &e->lru);
    refill(e, now_ms);
    if (e->limit != limit || e->window_ms != window_ms) rescale(e, limit, window_ms);
  } else {
    /* Allocate before evicting, so a failure leaves the limiter as it was. */
    e = malloc(sizeof *e + stored_len);
    if (e == NULL) return -ENOMEM;
    if (rl->count >= rl->max_clients) evict_oldest(rl);
    memcpy(e->key, stored, stored_len);
    e->key_len = (uint16_t)stored_len;
    e->digested = digested;
    e->hash = hash;
    e->limit = limit;
    e->window_ms = window_ms;
    e->units = (uint64_t)limit * window_ms;
    e->last_ms = now_ms;
    slot_insert(rl, e);
    lru_push_front(rl, &e->lru);
    rl->count++;
  }
  assert(rl->count <= rl->max_clients);

  uint64_t capacity = (uint64_t)limit * window_ms;
  result->allowed = e->units >= window_ms;
  if (result->allowed) e->units -= window_ms;
  result->limit = limit;
  result->remaining = (uint32_t)(e->units / window_ms);
  result->reset_ms = div_ceil(capacity - e->units, limit);
  result->retry_after_ms = e->units >= window_ms ? 0 : div_ceil(window_ms - e->units, limit);
  return 0;
}
