/* hk_reqid: inbound request-ID validation and UUIDv4 generation. Random bytes come from
 * getrandom(2) in blocks, so a busy server makes one system call per 64 IDs, not one per ID. */
#include "hk_reqid.h"

#include <errno.h>
#include <stdint.h>
#include <sys/random.h>

#include "hk_text.h"

bool hk_reqid_is_valid(const char *value, size_t len) {
  if (len == 0 || len > HK_REQID_MAX) return false;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)value[i];
    bool ok = hk_text_is_alnum(c) || c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

/* Per thread so workers never share the pool. */
static _Thread_local struct {
  uint8_t bytes[16 * 64];
  size_t used;
} pool = {.used = sizeof pool.bytes};

static int fill_pool(void) {
  size_t got = 0;
  while (got < sizeof pool.bytes) {
    ssize_t n = getrandom(pool.bytes + got, sizeof pool.bytes - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    got += (size_t)n;
  }
  pool.used = 0;
  return 0;
}

int hk_reqid_new(char out[37]) {
  static const char hex[] = "0123456789abcdef";
  if (pool.used + 16 > sizeof pool.bytes) {
    int rc = fill_pool();
    if (rc != 0) return rc;
  }
  uint8_t *b = pool.bytes + pool.used;
  pool.used += 16;
  b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
  b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
  char *p = out;
  for (int i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10) *p++ = '-';
    *p++ = hex[b[i] >> 4];
    *p++ = hex[b[i] & 0x0f];
  }
  *p = '\0';
  return 0;
}
