/* hk_buf: a growable byte buffer, the one way the core builds strings (responses, log lines,
 * JSON). It knows nothing of sockets or Lua. Appends either succeed whole or leave the buffer
 * as it was and return -ENOMEM, so a failed append never leaves half a token behind. */
#ifndef HK_BUF_H
#define HK_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct hk_buf_s {
  char *data; /* NUL-terminated whenever data != NULL */
  size_t len;
  size_t cap;
} hk_buf_t;

#define HK_BUF_INIT {NULL, 0, 0}

void hk_buf_init(hk_buf_t *buf);
/* Makes room for `extra` more bytes plus the terminating NUL. */
int hk_buf_reserve(hk_buf_t *buf, size_t extra);
int hk_buf_append(hk_buf_t *buf, const void *bytes, size_t len);
int hk_buf_append_str(hk_buf_t *buf, const char *str);
int hk_buf_append_char(hk_buf_t *buf, char c);
int hk_buf_appendf(hk_buf_t *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int hk_buf_vappendf(hk_buf_t *buf, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Forgets the contents but keeps the memory for reuse. */
void hk_buf_reset(hk_buf_t *buf);
/* Removes the first `len` bytes (a consumed prefix). */
void hk_buf_consume(hk_buf_t *buf, size_t len);
/* Hands the memory to the caller (free() it); the buffer is left empty. */
char *hk_buf_steal(hk_buf_t *buf, size_t *len_out);
void hk_buf_free(hk_buf_t *buf);

#endif
