/* hk_carry: a small bounded string map under one mutex. Lookups are linear: it holds a few entries per health
 * check and is read when a generation starts and written once per probe, never per request. */
#include "hk_carry.h"

#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry_s {
  char *key;
  size_t key_len;
  char *value;
  size_t value_len;
} entry_t;

struct hk_carry_s {
  pthread_mutex_t lock; /* shared by every worker */
  entry_t *entries;
  size_t count, cap;
};

int hk_carry_new(hk_carry_t **out) {
  *out = calloc(1, sizeof **out);
  if (*out == NULL) return -ENOMEM;
  pthread_mutex_init(&(*out)->lock, NULL);
  return 0;
}

void hk_carry_free(hk_carry_t *carry) {
  if (carry == NULL) return;
  for (size_t i = 0; i < carry->count; i++) {
    free(carry->entries[i].key);
    free(carry->entries[i].value);
  }
  free(carry->entries);
  pthread_mutex_destroy(&carry->lock);
  free(carry);
}

static entry_t *find(const hk_carry_t *carry, const char *key, size_t key_len) {
  for (size_t i = 0; i < carry->count; i++) {
    entry_t *e = &carry->entries[i];
    if (e->key_len == key_len && memcmp(e->key, key, key_len) == 0) return e;
  }
  return NULL;
}

static char *copy_bytes(const char *bytes, size_t len) {
  char *copy = malloc(len + 1);
  if (copy == NULL) return NULL;
  memcpy(copy, bytes, len);
  copy[len] = '\0';
  return copy;
}

static int set_locked(hk_carry_t *carry, const char *key, size_t key_len, const char *value,
                      size_t value_len);

int hk_carry_set(hk_carry_t *carry, const char *key, size_t key_len, const char *value,
                 size_t value_len) {
  if (key_len == 0 || key_len > HK_CARRY_MAX_KEY || (value && value_len > HK_CARRY_MAX_VALUE))
    return -EINVAL;
  pthread_mutex_lock(&carry->lock);
  int rc = set_locked(carry, key, key_len, value, value_len);
  pthread_mutex_unlock(&carry->lock);
  return rc;
}

static int set_locked(hk_carry_t *carry, const char *key, size_t key_len, const char *value,
                      size_t value_len) {
  entry_t *e = find(carry, key, key_len);
  if (value == NULL) {
    if (e != NULL) {
      free(e->key);
      free(e->value);
      *e = carry->entries[--carry->count];
    }
    return 0;
  }
  char *copy = copy_bytes(value, value_len);
  if (copy == NULL) return -ENOMEM;
  if (e != NULL) {
    free(e->value);
    e->value = copy;
    e->value_len = value_len;
    return 0;
  }
  int rc = -ENOSPC;
  char *key_copy = NULL;
  if (carry->count == HK_CARRY_MAX_KEYS) goto fail;
  rc = -ENOMEM;
  if (carry->count == carry->cap) {
    size_t cap = carry->cap ? carry->cap * 2 : 16;
    entry_t *grown = realloc(carry->entries, cap * sizeof *grown);
    if (grown == NULL) goto fail;
    carry->entries = grown;
    carry->cap = cap;
  }
  if ((key_copy = copy_bytes(key, key_len)) == NULL) goto fail;
  carry->entries[carry->count++] = (entry_t){key_copy, key_len, copy, value_len};
  return 0;
fail:
  free(copy);
  return rc;
}

int hk_carry_get(hk_carry_t *carry, const char *key, size_t key_len, char *out, size_t out_size,
                 size_t *value_len) {
  pthread_mutex_lock(&carry->lock);
  const entry_t *e = find(carry, key, key_len);
  int rc = -ENOENT;
  if (e != NULL && e->value_len > out_size) {
    rc = -ENOSPC;
  } else if (e != NULL) {
    memcpy(out, e->value, e->value_len);
    *value_len = e->value_len;
    rc = 0;
  }
  pthread_mutex_unlock(&carry->lock);
  return rc;
}

bool hk_carry_claim(hk_carry_t *carry, const char *key, size_t key_len, uint64_t now_ms, uint64_t hold_ms) {
  if (key_len == 0 || key_len > HK_CARRY_MAX_KEY) return false;
  pthread_mutex_lock(&carry->lock);
  const entry_t *e = find(carry, key, key_len);
  bool free_now = e == NULL || strtoull(e->value, NULL, 10) <= now_ms;
  char until[24];
  int n = snprintf(until, sizeof until, "%llu", (unsigned long long)(now_ms + hold_ms));
  bool claimed = free_now && set_locked(carry, key, key_len, until, (size_t)n) == 0;
  pthread_mutex_unlock(&carry->lock);
  return claimed;
}

size_t hk_carry_count(hk_carry_t *carry) {
  pthread_mutex_lock(&carry->lock);
  size_t count = carry->count;
  pthread_mutex_unlock(&carry->lock);
  return count;
}
