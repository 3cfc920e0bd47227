/* hk_carry: values a script generation hands to the next one across a reload (health checks
 * carry their last result, so a reload neither forgets a state nor logs its change again).
 * With several workers it is also how they share such state (one prober per health check,
 * every worker answering from its result). A bounded map of short string keys to string
 * values, thread-safe (one mutex); it knows nothing of Lua. Entry points: hk_carry_set,
 * hk_carry_get. */
#ifndef HK_CARRY_H
#define HK_CARRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

/* Copies the value under key into out (no NUL added; HK_CARRY_MAX_VALUE bytes always suffice)
 * and its length into *value_len. Returns 0, -ENOENT when absent, -ENOSPC when out is too
 * small. A copy, so the caller holds no lock while it uses it. */
int hk_carry_get(hk_carry_t *carry, const char *key, size_t key_len, char *out, size_t out_size,
                 size_t *value_len);

/* Test-and-set with an expiry, for work one thread of the process should do at a time (a
 * health probe): true when key was free or its hold had run out, and it is now held until
 * now_ms + hold_ms (release it with hk_carry_set(key, NULL)). */
bool hk_carry_claim(hk_carry_t *carry, const char *key, size_t key_len, uint64_t now_ms, uint64_t hold_ms);

size_t hk_carry_count(hk_carry_t *carry);

#endif
