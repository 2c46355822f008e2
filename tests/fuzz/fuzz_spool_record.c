/* tests/fuzz/fuzz_spool_record.c — the spool record codec on arbitrary
 * bytes: as a record (and its payload by type), and directly as a MESSAGE,
 * DONE, HOLD, RELEASE and SEGMENT payload. Whatever decodes must re-encode
 * to exactly the same bytes. Then the records that follow are walked like
 * a segment. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/spool.h"

/* check_same aborts unless the encoding in b equals want. */
static void check_same(const struct buf *b, size_t skip, const uint8_t *want,
                       size_t want_len) {
  if (b->len != skip + want_len ||
      memcmp(b->data + skip, want, want_len) != 0) {
    abort();
  }
}

/* payload_roundtrip decodes payload as `type`; on success re-encodes it
 * and checks the payload bytes are identical. */
static void payload_roundtrip(uint8_t type, const uint8_t *payload,
                              size_t payload_len, struct buf *rcpts) {
  struct buf out = {0};
  if (type == SPOOL_REC_MESSAGE) {
    struct spool_message m;
    if (spool_message_decode(payload, payload_len, &m, rcpts) == 0) {
      if (spool_message_encode(&out, &m) != 0) {
        abort();
      }
      check_same(&out, SPOOL_RECORD_HEADER_LEN, payload, payload_len);
    }
  } else if (type == SPOOL_REC_DONE) {
    struct spool_done d;
    if (spool_done_decode(payload, payload_len, &d) == 0) {
      if (spool_done_encode(&out, &d) != 0) {
        abort();
      }
      check_same(&out, SPOOL_RECORD_HEADER_LEN, payload, payload_len);
    }
  } else if (type == SPOOL_REC_HOLD || type == SPOOL_REC_RELEASE) {
    struct spool_hold h;
    if (spool_hold_decode(type, payload, payload_len, &h) == 0) {
      if (h.held != (type == SPOOL_REC_HOLD) || h.gen == 0 ||
          spool_hold_encode(&out, &h) != 0 || out.data[4] != type) {
        abort();
      }
      check_same(&out, SPOOL_RECORD_HEADER_LEN, payload, payload_len);
    }
  } else if (type == SPOOL_REC_SEGMENT) {
    struct spool_segment_header h;
    if (spool_segment_header_decode(payload, payload_len, &h) == 0) {
      if (spool_segment_header_encode(&out, h.thread_index, h.seq) != 0) {
        abort();
      }
      check_same(&out, SPOOL_RECORD_HEADER_LEN, payload, payload_len);
    }
  }
  buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct buf rcpts = {0};
  /* As raw payloads of each type. */
  payload_roundtrip(SPOOL_REC_MESSAGE, data, size, &rcpts);
  payload_roundtrip(SPOOL_REC_DONE, data, size, &rcpts);
  payload_roundtrip(SPOOL_REC_SEGMENT, data, size, &rcpts);
  payload_roundtrip(SPOOL_REC_HOLD, data, size, &rcpts);
  payload_roundtrip(SPOOL_REC_RELEASE, data, size, &rcpts);

  /* As a sequence of records, like a segment file. */
  size_t off = 0;
  while (off < size) {
    uint8_t type;
    const uint8_t *payload;
    size_t payload_len, record_len, peek_len;
    enum spool_decode_result peek =
        spool_record_peek(data + off, size - off, &peek_len);
    enum spool_decode_result r = spool_record_decode(
        data + off, size - off, &type, &payload, &payload_len, &record_len);
    if (r != SPOOL_DECODE_OK) {
      break;
    }
    if (peek != SPOOL_DECODE_OK || peek_len != record_len ||
        record_len != SPOOL_RECORD_HEADER_LEN + payload_len ||
        record_len > size - off) {
      abort();
    }
    /* A valid record's payload re-encodes to the whole record. */
    struct buf out = {0};
    payload_roundtrip(type, payload, payload_len, &rcpts);
    if (type == SPOOL_REC_MESSAGE) {
      struct spool_message m;
      if (spool_message_decode(payload, payload_len, &m, &rcpts) == 0 &&
          spool_message_encode(&out, &m) == 0) {
        check_same(&out, 0, data + off, record_len);
      }
    } else if (type == SPOOL_REC_HOLD || type == SPOOL_REC_RELEASE) {
      struct spool_hold h;
      if (spool_hold_decode(type, payload, payload_len, &h) == 0 &&
          spool_hold_encode(&out, &h) == 0) {
        check_same(&out, 0, data + off, record_len);
      }
    }
    buf_free(&out);
    off += record_len;
  }
  buf_free(&rcpts);
  return 0;
}
