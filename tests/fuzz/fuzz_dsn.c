/* tests/fuzz/fuzz_dsn.c — builds a DSN from fuzzer-chosen fields and
 * original content.
 *
 * Input: byte 0 picks flags (bit 0 RET=FULL, bit 1 smtputf8, bit 2 a small
 * max_original_len, bit 3 ENVID, bits 4-6 the number of recipients - 1);
 * byte 1 picks actions (2 bits per recipient, cycled); bytes 2-9 are
 * `unique`; then NUL-separated strings: sender, then per recipient
 * final recipient, ORCPT, status, diagnostic text, remote MTA; the rest
 * is the original message. Missing strings are "".
 *
 * Invariants: dsn_build returns 0 or -1; on -1 the buffer is unchanged;
 * on 0 the output has CRLF line ends only, no line over 998 octets, and
 * the boundary does not occur after the top-level header except as a
 * delimiter line. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/dsn.h"

#define FUZZ_MAX_RCPTS 8
#define FUZZ_STR_CAP 2048

struct fuzz_in {
  const uint8_t *p;
  size_t n;
};

/* next_str copies the next NUL-terminated string (bounded) into out. */
static void next_str(struct fuzz_in *in, char *out) {
  size_t k = 0;
  while (in->n > 0 && in->p[0] != 0 && k < FUZZ_STR_CAP - 1) {
    out[k++] = (char)in->p[0];
    in->p++;
    in->n--;
  }
  if (in->n > 0 && in->p[0] == 0) {
    in->p++;
    in->n--;
  }
  out[k] = '\0';
}

static void check_shape(const struct buf *b) {
  size_t line = 0;
  for (size_t i = 0; i < b->len; i++) {
    if (b->data[i] == '\r') {
      if (i + 1 >= b->len || b->data[i + 1] != '\n') {
        abort(); /* bare CR */
      }
      i++;
      line = 0;
    } else if (b->data[i] == '\n') {
      abort(); /* bare LF */
    } else if (++line > DSN_HARD_LINE) {
      abort();
    }
  }
}

/* check_boundary: every occurrence of the boundary in the body is a
 * delimiter line "--boundary" or "--boundary--" at a line start. */
static void check_boundary(const struct buf *b) {
  const char *key = "\tboundary=\""; /* a sender cannot hold a TAB */
  const uint8_t *k = memmem(b->data, b->len, key, strlen(key));
  if (k == NULL) {
    abort();
  }
  const uint8_t *bs = k + strlen(key);
  const uint8_t *be = memchr(bs, '"', b->len - (size_t)(bs - b->data));
  if (be == NULL) {
    abort();
  }
  size_t bl = (size_t)(be - bs);
  const uint8_t *end = b->data + b->len;
  const uint8_t *p = memmem(be, (size_t)(end - be), "\r\n\r\n", 4);
  if (p == NULL) {
    abort();
  }
  while ((p = memmem(p, (size_t)(end - p), bs, bl)) != NULL) {
    if (p - b->data < 4 || p[-1] != '-' || p[-2] != '-' || p[-3] != '\n') {
      abort();
    }
    const uint8_t *after = p + bl;
    if (!((end - after >= 2 && after[0] == '\r') ||
          (end - after >= 4 && memcmp(after, "--\r\n", 4) == 0))) {
      abort();
    }
    p = after;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static char strs[1 + 5 * FUZZ_MAX_RCPTS][FUZZ_STR_CAP];
  struct dsn_rcpt rcpts[FUZZ_MAX_RCPTS];
  if (size < 10) {
    return 0;
  }
  uint8_t flags = data[0], actions = data[1];
  uint64_t unique;
  memcpy(&unique, data + 2, sizeof(unique));
  struct fuzz_in in = {data + 10, size - 10};
  size_t num = ((flags >> 4) & 7) + 1;
  next_str(&in, strs[0]);
  for (size_t i = 0; i < num; i++) {
    for (size_t f = 0; f < 5; f++) {
      next_str(&in, strs[1 + i * 5 + f]);
    }
    rcpts[i] = (struct dsn_rcpt){
        .final_recipient = strs[1 + i * 5],
        .original_recipient = strs[2 + i * 5][0] ? strs[2 + i * 5] : NULL,
        .action = (enum dsn_action)(((actions >> (2 * (i % 4))) & 3) +
                                    (i == 4 ? 1 : 0)),
        .status = strs[3 + i * 5],
        .diag_text = strs[4 + i * 5][0] ? strs[4 + i * 5] : NULL,
        .diag_code = strs[4 + i * 5][0] ? 200 + (int)(i * 77 % 400) : 0,
        .remote_mta = strs[5 + i * 5][0] ? strs[5 + i * 5] : NULL,
        .last_attempt_ms = INT64_C(1700000000000),
        .will_retry_until_ms = INT64_C(1700400000000),
    };
  }
  struct dsn_report r = {
      .reporting_mta = "relay.example.com",
      .envid = (flags & 8) ? strs[0] : NULL,
      .original_sender = strs[0],
      .smtputf8 = (flags & 2) != 0,
      .arrival_ms = INT64_C(1699990000000),
      .now_ms = INT64_C(1700000000000),
      .unique = unique,
      .ret = (flags & 1) ? DSN_RET_FULL : DSN_RET_HDRS,
      .original = in.p,
      .original_len = in.n,
      .max_original_len = (flags & 4) ? 64 : 0,
      .rcpts = rcpts,
      .num_rcpts = num,
  };
  struct buf out = {0};
  struct dsn_info info;
  int rc = dsn_build(&out, &info, &r);
  if (rc == -1) {
    if (out.len != 0) {
      abort();
    }
  } else if (rc == 0) {
    check_shape(&out);
    check_boundary(&out);
  } else {
    abort();
  }
  buf_free(&out);
  return 0;
}
