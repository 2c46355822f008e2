/* tests/fuzz/fuzz_dkim_canon.c — DKIM canonicalisation (crypto/dkim.h)
 * and message parsing.
 *
 * Invariants: both body canonicalisations give the same hash and lengths
 * whether the input comes whole or cut at two points taken from the data,
 * with and without an l= limit (hashed never passes the limit or the
 * total). Header fields lie inside the message in order, before the body;
 * each canonicalises in both ways; a relaxed field ends in its only CRLF,
 * has no WSP runs, and canonicalises to itself again (idempotence).
 * dkim_verify_new on the input as a message gives every signature one
 * verdict, with any key record. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/dkim.h"

#define NOW 1600000000

static struct dkim_header hdrs[DKIM_MAX_HEADERS]; /* large: off the stack */

static void body_run(enum dkim_canon canon, int64_t limit, const uint8_t *p,
                     size_t n, size_t cut1, size_t cut2, uint8_t out[32],
                     uint64_t *total, uint64_t *hashed) {
  struct dkim_body b;
  dkim_body_init(&b, canon, limit);
  dkim_body_update(&b, p, cut1);
  dkim_body_update(&b, p + cut1, cut2 - cut1);
  dkim_body_update(&b, p + cut2, n - cut2);
  dkim_body_final(&b, out, total);
  *hashed = b.hashed;
}

static void check_body(const uint8_t *data, size_t size) {
  size_t cut1 =
      size > 1 ? ((size_t)data[0] | (size_t)data[1] << 8) % (size + 1) : 0;
  size_t cut2 = size > 2 ? cut1 + (size_t)data[2] % (size - cut1 + 1) : cut1;
  int64_t limits[2] = {-1, size > 3 ? (int64_t)data[3] : 0};
  for (int canon = 0; canon < 2; canon++) {
    for (int l = 0; l < 2; l++) {
      uint8_t whole[32], split[32];
      uint64_t t1, t2, h1, h2;
      body_run(canon, limits[l], data, size, 0, 0, whole, &t1, &h1);
      body_run(canon, limits[l], data, size, cut1, cut2, split, &t2, &h2);
      if (memcmp(whole, split, 32) != 0 || t1 != t2 || h1 != h2 || h1 > t1 ||
          (limits[l] >= 0 && h1 > (uint64_t)limits[l]) ||
          (limits[l] < 0 && h1 != t1) ||
          (canon == DKIM_CANON_SIMPLE && t1 < 2)) {
        abort();
      }
    }
  }
}

static void check_relaxed(const struct buf *c) {
  if (c->len < 2 || c->data[c->len - 2] != '\r' ||
      c->data[c->len - 1] != '\n') {
    abort();
  }
  for (size_t i = 0; i + 2 < c->len; i++) {
    uint8_t x = c->data[i];
    if (x == '\n' || x == '\t' || (x == ' ' && c->data[i + 1] == ' ') ||
        (x == '\r' && c->data[i + 1] == '\n')) {
      abort();
    }
  }
}

static void check_headers(const uint8_t *data, size_t size) {
  static struct buf c1, c2;
  size_t body_off = 0;
  size_t n = dkim_headers_split(data, size, hdrs, DKIM_MAX_HEADERS, &body_off);
  if (n > DKIM_MAX_HEADERS || body_off > size) {
    abort();
  }
  const uint8_t *prev_end = data;
  for (size_t i = 0; i < n; i++) {
    const struct dkim_header *h = &hdrs[i];
    if (h->field < prev_end || h->field + h->field_len > data + body_off ||
        h->name != h->field || h->name_len > h->field_len) {
      abort();
    }
    prev_end = h->field + h->field_len;
    buf_reset(&c1);
    if (dkim_header_canon(h, DKIM_CANON_SIMPLE, &c1) != 0 ||
        c1.len < h->field_len + 2) {
      abort();
    }
    buf_reset(&c1);
    if (dkim_header_canon(h, DKIM_CANON_RELAXED, &c1) != 0) {
      abort();
    }
    check_relaxed(&c1);
    if (h->name_len == 0) {
      continue; /* no colon: not a field a signature can name */
    }
    struct dkim_header again;
    size_t off2 = 0;
    if (dkim_headers_split(c1.data, c1.len, &again, 1, &off2) != 1) {
      abort();
    }
    buf_reset(&c2);
    if (dkim_header_canon(&again, DKIM_CANON_RELAXED, &c2) != 0 ||
        c2.len != c1.len || memcmp(c1.data, c2.data, c1.len) != 0) {
      abort();
    }
  }
}

static void check_verify(const uint8_t *data, size_t size) {
  static const char *const recs[] = {
      "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
      "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5"
      "V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/"
      "BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kr"
      "yOTIKT+l/K4w3QIDAQAB",
  };
  struct dkim_verify *v = dkim_verify_new(data, size, DKIM_MAX_VERIFY, NOW);
  if (v == NULL || dkim_verify_count(v) > DKIM_MAX_VERIFY) {
    abort();
  }
  for (size_t i = 0; i < dkim_verify_count(v); i++) {
    if (dkim_verify_query(v, i) != NULL) {
      const struct dkim_verdict *none = dkim_verify_verdict(v, i);
      if (none != NULL) {
        abort();
      }
      size_t len[2] = {strlen(recs[0]), strlen(recs[1])};
      dkim_verify_key(v, i, DKIM_KEY_FOUND, recs + (i % 2), len + (i % 2), 1);
    }
    const struct dkim_verdict *d = dkim_verify_verdict(v, i);
    if (d == NULL || d->result > DKIM_PERMERROR ||
        memchr(d->reason, '\0', sizeof(d->reason)) == NULL ||
        dkim_verify_query(v, i) != NULL) {
      abort();
    }
  }
  dkim_verify_free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  check_body(data, size);
  check_headers(data, size);
  check_verify(data, size);
  return 0;
}
