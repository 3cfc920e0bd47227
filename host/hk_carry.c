/* hk_carry: a small bounded string map. Lookups are linear: it holds a few entries per health
 * check and is read when a generation starts and written once per probe, never per request. */
#include "hk_carry.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry_s {
  char *key;
  size_t key_len;
  char *value;
  size_t value_len;
} entry_t;

struct hk_carry_s {
  entry_t *entries;
  size_t count, cap;
};

int hk_carry_new(hk_carry_t **out) {
  *out = calloc(1, sizeof **out);
  return *out ? 0 : -ENOMEM;
}

void hk_carry_free(hk_carry_t *carry) {
  if (carry == NULL) return;
  for (size_t i = 0; i < carry->count; i++) {
    free(carry->entries[i].key);
    free(carry->entries[i].value);
  }
  free(carry->entries);
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

int hk_carry_set(hk_carry_t *carry, const char *key, size_t key_len, const char *value,
                 size_t value_len) {
  if (key_len == 0 || key_len > HK_CARRY_MAX_KEY || (value && value_len > HK_CARRY_MAX_VALUE))
    return -EINVAL;
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

const char *hk_carry_get(const hk_carry_t *carry, const char *key, size_t key_len,
                         size_t *value_len) {
  const entry_t *e = find(carry, key, key_len);
  if (e == NULL) return NULL;
  *value_len = e->value_len;
  return e->value;
}

size_t hk_carry_count(const hk_carry_t *carry) { return carry->count; }
