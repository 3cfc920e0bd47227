/* hk_buf: growable byte buffer used for every string the core builds. Growth doubles so a
 * sequence of appends is amortised O(1); the buffer stays NUL-terminated for C string use. */
#include "hk_buf.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void hk_buf_init(hk_buf_t *buf) {
  buf->data = NULL;
  buf->len = 0;
  buf->cap = 0;
}

int hk_buf_reserve(hk_buf_t *buf, size_t extra) {
  if (extra > SIZE_MAX - buf->len - 1) return -ENOMEM;
  size_t need = buf->len + extra + 1;
  if (need <= buf->cap) return 0;
  size_t cap = buf->cap ? buf->cap : 64;
  while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  char *data = realloc(buf->data, cap);
  if (data == NULL) return -ENOMEM;
  buf->data = data;
  buf->cap = cap;
  return 0;
}

int hk_buf_append(hk_buf_t *buf, const void *bytes, size_t len) {
  int rc = hk_buf_reserve(buf, len);
  if (rc != 0) return rc;
  if (len > 0) memcpy(buf->data + buf->len, bytes, len);
  buf->len += len;
  buf->data[buf->len] = '\0';
  return 0;
}

int hk_buf_append_str(hk_buf_t *buf, const char *str) { return hk_buf_append(buf, str, strlen(str)); }

int hk_buf_append_char(hk_buf_t *buf, char c) { return hk_buf_append(buf, &c, 1); }

int hk_buf_vappendf(hk_buf_t *buf, const char *fmt, va_list ap) {
  va_list copy;
  va_copy(copy, ap);
  char small[256];
  int n = vsnprintf(small, sizeof small, fmt, copy);
  va_end(copy);
  if (n < 0) return -EINVAL;
  if ((size_t)n < sizeof small) return hk_buf_append(buf, small, (size_t)n);
  int rc = hk_buf_reserve(buf, (size_t)n);
  if (rc != 0) return rc;
  vsnprintf(buf->data + buf->len, (size_t)n + 1, fmt, ap);
  buf->len += (size_t)n;
  return 0;
}

int hk_buf_appendf(hk_buf_t *buf, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = hk_buf_vappendf(buf, fmt, ap);
  va_end(ap);
  return rc;
}

void hk_buf_reset(hk_buf_t *buf) {
  buf->len = 0;
  if (buf->data != NULL) buf->data[0] = '\0';
}

void hk_buf_consume(hk_buf_t *buf, size_t len) {
  if (len >= buf->len) {
    hk_buf_reset(buf);
    return;
  }
  memmove(buf->data, buf->data + len, buf->len - len);
  buf->len -= len;
  buf->data[buf->len] = '\0';
}

char *hk_buf_steal(hk_buf_t *buf, size_t *len_out) {
  char *data = buf->data;
  if (len_out != NULL) *len_out = buf->len;
  hk_buf_init(buf);
  return data;
}

void hk_buf_free(hk_buf_t *buf) {
  free(buf->data);
  hk_buf_init(buf);
}
