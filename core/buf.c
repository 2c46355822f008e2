/* core/buf.c — growable byte buffer; see buf.h. */
#include "core/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int buf_reserve(struct buf *b, size_t extra) {
  if (extra <= b->cap - b->len) {
    return 0;
  }
  if (extra > SIZE_MAX / 2 - b->len) {
    return -1;
  }
  size_t need = b->len + extra;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need) {
    cap *= 2;
  }
  uint8_t *p = realloc(b->data, cap);
  if (p == NULL) {
    return -1;
  }
  b->data = p;
  b->cap = cap;
  return 0;
}

int buf_append(struct buf *b, const void *in, size_t in_len) {
  if (in_len == 0) {
    return 0;
  }
  if (buf_reserve(b, in_len) != 0) {
    return -1;
  }
  memcpy(b->data + b->len, in, in_len);
  b->len += in_len;
  return 0;
}

int buf_append_str(struct buf *b, const char *s) {
  return buf_append(b, s, strlen(s));
}

int buf_printf(struct buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0 || buf_reserve(b, (size_t)n + 1) != 0) {
    return -1;
  }
  va_start(ap, fmt);
  vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
  return 0;
}

void buf_consume(struct buf *b, size_t n) {
  if (n >= b->len) {
    b->len = 0;
    return;
  }
  memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
}

void buf_reset(struct buf *b) {
  b->len = 0;
}

void buf_free(struct buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
}

void buf_move(struct buf *dst, struct buf *src) {
  if (dst == src) {
    return;
  }
  free(dst->data);
  *dst = *src;
  src->data = NULL;
  src->len = 0;
  src->cap = 0;
}
