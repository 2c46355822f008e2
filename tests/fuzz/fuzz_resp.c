/* tests/fuzz/fuzz_resp.c — the RESP2 reply parser on arbitrary bytes, fed
 * in chunks whose sizes come from the first input byte. Beyond memory
 * safety: every reply parsed re-encodes to exactly the bytes it was read
 * from (the parser is strict, so the encoder is its inverse), the
 * re-encoded bytes parse again in one feed to the same encoding, and the
 * parser never reads past one reply in a feed. Commands (arrays of bulk
 * strings) built from the parsed bulks parse back to the same bulks. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/resp.h"

/* command_roundtrip: a command made of r's bulk elements parses back. */
static void command_roundtrip(const struct resp_reply *r) {
  if (r->type != RESP_ARRAY || r->num_elems == 0 || r->num_elems > 64) {
    return;
  }
  const char *argv[64];
  size_t lens[64];
  for (size_t i = 0; i < r->num_elems; i++) {
    if (r->elems[i].type != RESP_BULK) {
      return;
    }
    argv[i] = r->elems[i].str;
    lens[i] = r->elems[i].str_len;
  }
  struct buf out = {0};
  if (resp_command(&out, r->num_elems, argv, lens) != 0) {
    abort();
  }
  struct resp_parser p;
  resp_parser_init(&p, NULL);
  struct resp_reply *again = NULL;
  size_t used = 0;
  if (resp_parser_feed(&p, out.data, out.len, &used, &again) != RESP_DONE ||
      used != out.len || again->num_elems != r->num_elems) {
    abort();
  }
  for (size_t i = 0; i < r->num_elems; i++) {
    if (again->elems[i].str_len != lens[i] ||
        memcmp(again->elems[i].str, argv[i], lens[i]) != 0) {
      abort();
    }
  }
  resp_reply_free(again);
  resp_parser_cleanup(&p);
  buf_free(&out);
}

/* reply_roundtrip: r, read from `from` (len bytes), encodes back to them
 * and parses again to the same encoding. */
static void reply_roundtrip(const struct resp_reply *r, const uint8_t *from,
                            size_t len) {
  struct buf enc = {0};
  if (resp_reply_encode(&enc, r) != 0 || enc.len != len ||
      memcmp(enc.data, from, len) != 0) {
    abort();
  }
  struct resp_parser p;
  resp_parser_init(&p, NULL);
  struct resp_reply *again = NULL;
  size_t used = 0;
  if (resp_parser_feed(&p, enc.data, enc.len, &used, &again) != RESP_DONE ||
      used != enc.len) {
    abort();
  }
  struct buf enc2 = {0};
  if (resp_reply_encode(&enc2, again) != 0 || enc2.len != enc.len ||
      memcmp(enc2.data, enc.data, enc.len) != 0) {
    abort();
  }
  command_roundtrip(r);
  resp_reply_free(again);
  resp_parser_cleanup(&p);
  buf_free(&enc);
  buf_free(&enc2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) {
    return 0;
  }
  size_t chunk = (size_t)(data[0] % 16) + 1;
  data++;
  size--;
  struct resp_limits lim;
  resp_limits_default(&lim);
  lim.max_bulk = 4096; /* keep allocations small */
  struct resp_parser p;
  resp_parser_init(&p, &lim);
  struct buf seen = {0}; /* the bytes of the reply being read */
  size_t off = 0;
  while (off < size) {
    size_t n = size - off < chunk ? size - off : chunk;
    size_t used = 0;
    struct resp_reply *r = NULL;
    enum resp_status st = resp_parser_feed(&p, data + off, n, &used, &r);
    if (used > n || (st == RESP_NEED_MORE && used != n)) {
      abort();
    }
    if (st == RESP_ERR) {
      if (resp_parser_error(&p) == NULL) {
        abort();
      }
      break;
    }
    buf_append(&seen, data + off, used);
    off += used;
    if (st == RESP_DONE) {
      reply_roundtrip(r, seen.data, seen.len);
      resp_reply_free(r);
      buf_reset(&seen);
    }
  }
  buf_free(&seen);
  resp_parser_cleanup(&p);
  return 0;
}
