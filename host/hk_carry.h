/* hk_carry: values a script generation hands to the next one across a reload (health checks
 * carry their last result, so a reload neither forgets a state nor logs its change again).
 * A bounded map of short string keys to string values, owned by one worker and used from its
 * loop thread only; it knows nothing of Lua. Entry points: hk_carry_set, hk_carry_get. */
#ifndef HK_CARRY_H
#define HK_CARRY_H

#include <stddef.h>

#define HK_CARRY_MAX_KEYS 1024
#define HK_CARRY_MAX_KEY 256
#define HK_CARRY_MAX_VALUE (16 * 1024)

typedef struct hk_carry_s hk_carry_t;

int hk_carry_new(hk_carry_t **out);
void hk_carry_free(hk_carry_t *carry); /* NULL is a no-op */

/* Stores a copy of value under key, replacing what was there; value NULL removes the key.
 * -EINVAL for an empty or oversized key or value, -ENOSPC when HK_CARRY_MAX_KEYS are held,
 * -ENOMEM. On failure the map is unchanged. */
int hk_carry_set(hk_carry_t *carry, const char *key, size_t key_len, const char *value,
                 size_t value_len);

/* The value under key, borrowed until the next hk_carry_set of that key; NULL when absent. */
const char *hk_carry_get(const hk_carry_t *carry, const char *key, size_t key_len,
                         size_t *value_len);

size_t hk_carry_count(const hk_carry_t *carry);

#endif
