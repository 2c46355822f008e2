/* core/buf.h — a growable byte buffer.
 *
 * Owns: one heap block (data, len, cap). Any module may use it; it is not
 * thread-safe (each buffer belongs to one thread at a time). Appends that
 * would pass `limit` (if nonzero) fail instead of growing, so every buffer
 * fed by a peer is bounded. Pointers into `data` are invalidated by any
 * append or reserve. A zeroed struct buf is a valid empty buffer. */
#ifndef POSTSEAL_CORE_BUF_H
#define POSTSEAL_CORE_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
  uint8_t *data;
  size_t len;
  size_t cap;
};

/* buf_reserve makes room for `extra` more bytes. Returns 0, or -1 on
 * allocation failure (the buffer is unchanged). */
int buf_reserve(struct buf *b, size_t extra);
/* buf_append copies `in_len` bytes to the end. Returns 0 or -1. */
int buf_append(struct buf *b, const void *in, size_t in_len);
int buf_append_str(struct buf *b, const char *s);
/* buf_printf appends formatted text. Returns 0 or -1. */
int buf_printf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* buf_consume drops the first `n` bytes (n <= len), moving the rest down. */
void buf_consume(struct buf *b, size_t n);
/* buf_reset empties the buffer and keeps its memory. */
void buf_reset(struct buf *b);
/* buf_free releases the memory; the buffer is empty and reusable after. */
void buf_free(struct buf *b);
/* buf_move transfers ownership of src's memory to dst (dst freed first);
 * src is left empty. */
void buf_move(struct buf *dst, struct buf *src);

#endif
