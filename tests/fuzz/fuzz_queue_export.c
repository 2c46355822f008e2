/* tests/fuzz/fuzz_queue_export.c — the queue archive reader
 * (core/queue_archive.h) on arbitrary bytes: as one record, as the payload
 * of a correctly framed MESSAGE or end record, and as a whole archive fed
 * in two parts split at a point the input chooses. Whatever decodes must
 * encode again to exactly the same bytes (parse → write → same bytes), and
 * the whole-archive reader must agree with itself however the input is
 * split. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "core/buf.h"
#include "core/queue_archive.h"

/* check_same aborts unless b holds exactly want. */
static void check_same(const struct buf *b, const uint8_t *want,
                       size_t want_len) {
  if (b->len != want_len || memcmp(b->data, want, want_len) != 0) {
    abort();
  }
}

/* record_roundtrip decodes one record at in; a message or end record
 * that decodes re-encodes to the same octets. */
static void record_roundtrip(const uint8_t *in, size_t len, struct buf *rcpts) {
  struct qarc_message m;
  struct qarc_end e;
  size_t consumed = 0, need = 0;
  const char *why = NULL;
  struct buf out = {0};
  enum qarc_result r =
      qarc_record_decode(in, len, &consumed, &need, &m, &e, rcpts, &why);
  if (r == QARC_MESSAGE) {
    if (consumed > len || qarc_message_encode(&out, &m) != 0) {
      abort();
    }
    check_same(&out, in, consumed);
  } else if (r == QARC_END) {
    if (consumed > len || qarc_end_encode(&out, &e) != 0) {
      abort();
    }
    check_same(&out, in, consumed);
  } else if (r == QARC_NEED_MORE && need <= len) {
    abort();
  } else if (r == QARC_BAD && why == NULL) {
    abort();
  }
  buf_free(&out);
}

/* payload_roundtrip frames the input as the payload of a record of
 * `type` with a correct checksum, so the payload parser itself is fuzzed
 * (a mutated record almost never passes its checksum). */
static void payload_roundtrip(uint8_t type, const uint8_t *payload, size_t len,
                              struct buf *rcpts) {
  struct buf rec = {0};
  uint8_t hdr[QARC_RECORD_HEADER_LEN] = {'P', 'Q', 'X', type};
  for (int i = 0; i < 8; i++) {
    hdr[4 + i] = (uint8_t)((uint64_t)len >> (8 * i));
  }
  if (buf_append(&rec, hdr, sizeof hdr) == 0 &&
      buf_append(&rec, payload, len) == 0) {
    uint64_t sum = XXH3_64bits(rec.data, rec.len);
    uint8_t t[QARC_TRAILER_LEN];
    for (int i = 0; i < QARC_TRAILER_LEN; i++) {
      t[i] = (uint8_t)(sum >> (8 * i));
    }
    if (buf_append(&rec, t, sizeof t) == 0) {
      record_roundtrip(rec.data, rec.len, rcpts);
    }
  }
  buf_free(&rec);
}

/* A whole-archive read: what it saw, to compare two readings. */
struct reading {
  size_t num_messages;
  uint64_t num_rcpts;
  int ended;
  const char *why;
  size_t off; /* octets consumed */
};

/* read_archive reads data with the reader, as if only the first `split`
 * octets had arrived at first, re-encoding every message it yields and
 * checking the copy against the input. */
static struct reading read_archive(const uint8_t *data, size_t size,
                                   size_t split, struct buf *rcpts) {
  struct qarc_reader r;
  struct reading out = {0};
  size_t avail = split;
  qarc_reader_init(&r);
  for (size_t turn = 0; turn < size + 4; turn++) {
    struct qarc_message m;
    size_t consumed = 0, need = 0;
    enum qarc_result q = qarc_reader_next(&r, data + out.off, avail - out.off,
                                          &consumed, &need, &m, rcpts);
    if (q == QARC_NEED_MORE) {
      if (avail == size) {
        break;
      }
      avail = size;
      continue;
    }
    if (q == QARC_BAD) {
      out.why = r.why;
      break;
    }
    if (q == QARC_MESSAGE) {
      struct buf copy = {0};
      size_t skip = out.num_messages == 0 ? QARC_HEADER_LEN : 0;
      if (qarc_message_encode(&copy, &m) != 0 || copy.len != consumed - skip ||
          memcmp(copy.data, data + out.off + skip, copy.len) != 0) {
        abort();
      }
      buf_free(&copy);
      out.num_messages++;
      out.num_rcpts += m.m.num_rcpts;
    }
    out.off += consumed;
    if (q == QARC_END) {
      out.ended = qarc_reader_done(&r);
      break;
    }
  }
  return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct buf rcpts = {0};
  record_roundtrip(data, size, &rcpts);
  payload_roundtrip(QARC_REC_MESSAGE, data, size, &rcpts);
  payload_roundtrip(QARC_REC_END, data, size, &rcpts);

  /* The first octet picks a split point; the rest is the archive. A
   * reading split in two must be the reading whole. */
  if (size > 0) {
    size_t split = (size_t)data[0] * (size - 1) / 255;
    struct reading whole = read_archive(data + 1, size - 1, size - 1, &rcpts);
    struct reading parts = read_archive(data + 1, size - 1, split, &rcpts);
    if (whole.num_messages != parts.num_messages ||
        whole.num_rcpts != parts.num_rcpts || whole.ended != parts.ended ||
        whole.off != parts.off || (whole.why == NULL) != (parts.why == NULL)) {
      abort();
    }
  }
  buf_free(&rcpts);
  return 0;
}
