/* core/lecodec.h — the little-endian reader and writer under the spool
 * record codec (spool_codec.c) and the queue archive codec
 * (queue_archive.c).
 *
 * Owns: the encoding of fixed-width unsigned integers (1, 2, 4 or 8 octets,
 * little-endian) and of a str (u16 length, that many non-NUL octets, a
 * NUL); nothing about any record layout. A struct le_rd is a bounded view
 * (pointer and octets left): every read checks the length first, so a
 * reader never passes its end; after a failed read (0) its position is
 * unspecified and the decoder gives up. Decoders check r.len == 0
 * themselves for trailing octets. A struct le_wr appends
 * to the caller's struct buf with a sticky error: after the first failure
 * every later put does nothing, so a sequence of puts is checked once, at
 * le_wr_end, which also rolls the buffer back to the caller's start.
 * No allocation beyond the struct buf's own growth; no I/O. Header-only,
 * so the codecs' puts of constant width inline. Thread: none of its own;
 * readers and writers belong to their caller. Pointers a read returns
 * point into the reader's input and live as long as it does. */
#ifndef POSTSEAL_CORE_LECODEC_H
#define POSTSEAL_CORE_LECODEC_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/buf.h"

/* The longest str: its length is a u16. */
#define LE_STR_MAX 65535u

/* le_get reads an n-octet (1..8) little-endian integer at p. */
static inline uint64_t le_get(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) {
    v = (v << 8) | p[i];
  }
  return v;
}

/* le_put writes the low n octets (1..8) of v at p, little-endian. */
static inline void le_put(uint8_t *p, int n, uint64_t v) {
  for (int i = 0; i < n; i++) {
    p[i] = (uint8_t)(v >> (8 * i));
  }
}

/* ---- bounded reader: 1 on success, 0 when short or malformed ---- */

struct le_rd {
  const uint8_t *p;
  size_t len; /* octets left */
};

/* le_rd_bytes consumes n octets and points *out at them. */
static inline int le_rd_bytes(struct le_rd *r, size_t n, const uint8_t **out) {
  if (n > r->len) {
    return 0;
  }
  *out = r->p;
  r->p += n;
  r->len -= n;
  return 1;
}

/* le_rd_uint consumes an n-octet (1..8) little-endian integer. */
static inline int le_rd_uint(struct le_rd *r, int n, uint64_t *out) {
  const uint8_t *p;
  if (!le_rd_bytes(r, (size_t)n, &p)) {
    return 0;
  }
  *out = le_get(p, n);
  return 1;
}

static inline int le_rd_u8(struct le_rd *r, uint8_t *out) {
  uint64_t v;
  if (!le_rd_uint(r, 1, &v)) {
    return 0;
  }
  *out = (uint8_t)v;
  return 1;
}

/* le_rd_str consumes a str; *out is NUL-terminated in the input. 0 also
 * when the NUL is missing or a NUL stands among the octets. */
static inline int le_rd_str(struct le_rd *r, const char **out) {
  uint64_t n;
  const uint8_t *p;
  if (!le_rd_uint(r, 2, &n) || !le_rd_bytes(r, (size_t)n + 1, &p)) {
    return 0;
  }
  if (p[n] != 0 || memchr(p, 0, (size_t)n) != NULL) {
    return 0;
  }
  *out = (const char *)p;
  return 1;
}

/* ---- writer with a sticky error ---- */

struct le_wr {
  struct buf *b;
  int err; /* 0, or an errno once any put failed */
};

/* le_wr_fail records err unless an earlier error stands. */
static inline void le_wr_fail(struct le_wr *w, int err) {
  w->err = w->err ? w->err : err;
}

/* le_wr_bytes appends n octets; an allocation failure is ENOMEM. */
static inline void le_wr_bytes(struct le_wr *w, const void *in, size_t n) {
  if (w->err == 0 && buf_append(w->b, in, n) != 0) {
    w->err = ENOMEM;
  }
}

/* le_wr_uint appends the low n octets (1..8) of v, little-endian. */
static inline void le_wr_uint(struct le_wr *w, int n, uint64_t v) {
  uint8_t tmp[8];
  le_put(tmp, n, v);
  le_wr_bytes(w, tmp, (size_t)n);
}

/* le_wr_str appends s (NULL as "") as a str; longer than LE_STR_MAX is
 * EMSGSIZE. */
static inline void le_wr_str(struct le_wr *w, const char *s) {
  size_t n = s ? strlen(s) : 0;
  if (n > LE_STR_MAX) {
    le_wr_fail(w, EMSGSIZE);
    return;
  }
  le_wr_uint(w, 2, n);
  le_wr_bytes(w, n ? s : "", n + 1);
}

/* le_wr_end returns 0, or rolls w->b back to start (its length when the
 * caller began) and returns -1 with errno set from the sticky error. */
static inline int le_wr_end(struct le_wr *w, size_t start) {
  if (w->err == 0) {
    return 0;
  }
  w->b->len = start;
  errno = w->err;
  return -1;
}

#endif
