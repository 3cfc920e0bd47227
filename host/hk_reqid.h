/* hk_reqid: request IDs. Decides whether an inbound X-Request-ID may be reused and makes new
 * UUIDv4s from the OS's random source. Pure apart from the random source. */
#ifndef HK_REQID_H
#define HK_REQID_H

#include <stdbool.h>
#include <stddef.h>

#define HK_REQID_MAX 128
#define HK_REQID_SIZE (HK_REQID_MAX + 1)

/* True for 1..128 characters of [A-Za-z0-9._-]: safe to echo in a header and a log line. */
bool hk_reqid_is_valid(const char *value, size_t len);

/* Writes a new lower-case UUIDv4 (36 characters and a NUL) into out[37]. */
int hk_reqid_new(char out[37]);

#endif
