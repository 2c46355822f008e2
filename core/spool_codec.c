/* core/spool_codec.c — queue ids and the spool record codec; see spool.h.
 *
 * Pure functions: no I/O except spool_segment_write_header. Every decoder
 * reads through a bounded reader (struct le_rd, core/lecodec.h) and checks
 * for trailing bytes; every encoder appends through a builder with a sticky
 * error (struct le_wr), so a sequence of puts is checked once.
 *
 * MESSAGE payload, version 1 (integers little-endian, str = u16 length,
 * bytes, NUL; the length excludes the NUL and the bytes hold no NUL):
 *   u8 version | u8 flags (bit 0: envid present, bit 1: REQUIRETLS) |
 *   u8 ret | u8 body_type |
 *   u8 smtputf8 (0/1) | u64 queue_id | i64 arrival_ms | str sender |
 *   [str envid] | str client_addr | str helo | u32 num_rcpts |
 *   num_rcpts * (u8 rflags (bit 0: orcpt present) | u8 notify | str addr |
 *                [str orcpt]) |
 *   u32 body_len | body (exactly the rest of the payload)
 * DONE payload, version 1 (24 bytes):
 *   u8 version | u8 outcome | u16 reserved (0) | u32 rcpt_index |
 *   u64 queue_id | i64 when_ms
 * HOLD and RELEASE payload, version 1 (24 bytes; the record type says
 * which):
 *   u8 version | u8 reserved (0) | u16 reserved (0) | u32 gen (>= 1) |
 *   u64 queue_id | i64 when_ms
 * SEGMENT payload (12 bytes): u32 version | u32 thread_index | u32 seq */
#include "core/spool.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>
#if defined(__x86_64__) || defined(__i386__)
/* The library's x86 build picks SSE2, AVX2 or AVX-512 at run time behind
 * the _dispatch entry points, which this header puts in place of
 * XXH3_64bits_update (same hash): the checksum over a 64 KiB body takes
 * 2.4 us instead of 6.5 us (SSE2) here. */
#include <xxh_x86dispatch.h>
#endif

#include "core/lecodec.h"

#define SPOOL_MESSAGE_VERSION 1
#define SPOOL_DONE_VERSION 1
#define SPOOL_DONE_PAYLOAD_LEN 24
#define SPOOL_HOLD_VERSION 1
#define SPOOL_SEGMENT_PAYLOAD_LEN 12
#define SPOOL_MSG_F_ENVID 0x01u
#define SPOOL_MSG_F_REQUIRETLS 0x02u /* RFC 8689; absent in older records */
#define SPOOL_RCPT_F_ORCPT 0x01u
/* The smallest encoded recipient: rflags, notify, u16 length, NUL. */
#define SPOOL_RCPT_MIN_LEN 5u

/* A str's u16 length field is what limits an envelope string. */
_Static_assert(SPOOL_MAX_STRING == LE_STR_MAX, "str length is a u16");

static const uint8_t spool_magic[4] = {'P', 'S', 'R', '1'};

/* ---- ids ---- */

void spool_queue_id_format(uint64_t id, char out[SPOOL_QUEUE_ID_LEN + 1]) {
  static const char hex[] = "0123456789ABCDEF";
  for (int i = SPOOL_QUEUE_ID_LEN - 1; i >= 0; i--) {
    out[i] = hex[id & 0xf];
    id >>= 4;
  }
  out[SPOOL_QUEUE_ID_LEN] = '\0';
}

static int hex_value(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  return -1;
}

int spool_queue_id_parse(const char *in, uint64_t *out_id) {
  uint64_t id = 0;
  for (int i = 0; i < SPOOL_QUEUE_ID_LEN; i++) {
    int v = hex_value(in[i]); /* stops at the NUL of a short string */
    if (v < 0) {
      return 0;
    }
    id = (id << 4) | (uint64_t)v;
  }
  if (in[SPOOL_QUEUE_ID_LEN] != '\0') {
    return 0;
  }
  *out_id = id;
  return 1;
}

/* ---- record framing ---- */

/* header_checksum: XXH3-64 of the 12 header bytes before the checksum, then
 * the payload given in up to two parts (envelope, body). */
static uint64_t header_checksum(const uint8_t hdr[12], const uint8_t *a,
                                size_t a_len, const uint8_t *b, size_t b_len) {
  XXH3_state_t st;
  XXH3_INITSTATE(&st);
  XXH3_64bits_reset(&st);
  XXH3_64bits_update(&st, hdr, 12);
  if (a_len) {
    XXH3_64bits_update(&st, a, a_len);
  }
  if (b_len) {
    XXH3_64bits_update(&st, b, b_len);
  }
  return XXH3_64bits_digest(&st);
}

static int type_known(uint8_t type) {
  return type == SPOOL_REC_SEGMENT || type == SPOOL_REC_MESSAGE ||
         type == SPOOL_REC_DONE || type == SPOOL_REC_HOLD ||
         type == SPOOL_REC_RELEASE;
}

enum spool_decode_result spool_record_peek(const uint8_t *in, size_t in_len,
                                           size_t *out_record_len) {
  /* Each field is judged as soon as its bytes are there, so garbage is BAD
   * early and only a true prefix of a record is SHORT. */
  if (in_len == 0) {
    return SPOOL_DECODE_SHORT;
  }
  size_t n = in_len < 4 ? in_len : 4;
  if (memcmp(in, spool_magic, n) != 0) {
    return SPOOL_DECODE_BAD;
  }
  if (in_len >= 5 && !type_known(in[4])) {
    return SPOOL_DECODE_BAD;
  }
  if (in_len >= 6 && in[5] != 0) { /* flags: none defined */
    return SPOOL_DECODE_BAD;
  }
  if (in_len >= 8 && (in[6] | in[7]) != 0) { /* reserved */
    return SPOOL_DECODE_BAD;
  }
  if (in_len < 12) {
    return SPOOL_DECODE_SHORT;
  }
  uint64_t payload_len = le_get(in + 8, 4);
  if (payload_len > SPOOL_MAX_RECORD) {
    return SPOOL_DECODE_BAD;
  }
  *out_record_len = SPOOL_RECORD_HEADER_LEN + (size_t)payload_len;
  return SPOOL_DECODE_OK;
}

enum spool_decode_result spool_record_decode(const uint8_t *in, size_t in_len,
                                             uint8_t *out_type,
                                             const uint8_t **out_payload,
                                             size_t *out_payload_len,
                                             size_t *out_record_len) {
  size_t record_len = 0;
  enum spool_decode_result r = spool_record_peek(in, in_len, &record_len);
  if (r != SPOOL_DECODE_OK) {
    return r;
  }
  if (in_len < record_len) {
    return SPOOL_DECODE_SHORT;
  }
  const uint8_t *payload = in + SPOOL_RECORD_HEADER_LEN;
  size_t payload_len = record_len - SPOOL_RECORD_HEADER_LEN;
  if (le_get(in + 12, 8) !=
      header_checksum(in, payload, payload_len, NULL, 0)) {
    return SPOOL_DECODE_BAD;
  }
  *out_type = in[4];
  *out_payload = payload;
  *out_payload_len = payload_len;
  *out_record_len = record_len;
  return SPOOL_DECODE_OK;
}

/* record_begin appends a record header with payload length and checksum
 * left zero; record_finish fills them in. */
static void record_begin(struct le_wr *w, uint8_t type) {
  uint8_t hdr[SPOOL_RECORD_HEADER_LEN] = {0};
  memcpy(hdr, spool_magic, 4);
  hdr[4] = type;
  le_wr_bytes(w, hdr, sizeof hdr);
}

/* record_finish: the record starts at `start` in w->b; its payload is what
 * follows the header there plus `extra` (the body, not in the buffer). */
static void record_finish(struct le_wr *w, size_t start, const uint8_t *extra,
                          size_t extra_len) {
  if (w->err) {
    return;
  }
  uint8_t *hdr = w->b->data + start;
  size_t in_buf = w->b->len - start - SPOOL_RECORD_HEADER_LEN;
  if (extra_len > SPOOL_MAX_RECORD || in_buf > SPOOL_MAX_RECORD - extra_len) {
    w->err = EMSGSIZE;
    return;
  }
  le_put(hdr + 8, 4, (uint32_t)(in_buf + extra_len));
  uint64_t sum = header_checksum(hdr, hdr + SPOOL_RECORD_HEADER_LEN, in_buf,
                                 extra, extra_len);
  le_put(hdr + 12, 8, sum);
}

/* ---- MESSAGE ---- */

static int message_valid(const struct spool_message *m) {
  if (m->num_rcpts == 0 || m->num_rcpts > SPOOL_MAX_RCPTS || m->rcpts == NULL ||
      m->smtputf8 > 1 || m->requiretls > 1) {
    return 0;
  }
  if (m->body_len > SPOOL_MAX_RECORD || (m->body_len && m->body == NULL)) {
    return 0;
  }
  for (size_t i = 0; i < m->num_rcpts; i++) {
    if (m->rcpts[i].addr == NULL || m->rcpts[i].notify > 0xff) {
      return 0;
    }
  }
  return 1;
}

static void message_put_rcpt(struct le_wr *w, const struct spool_rcpt *r) {
  le_wr_uint(w, 1, r->orcpt ? SPOOL_RCPT_F_ORCPT : 0);
  le_wr_uint(w, 1, r->notify);
  le_wr_str(w, r->addr);
  if (r->orcpt) {
    le_wr_str(w, r->orcpt);
  }
}

int spool_message_encode_head(struct buf *out, const struct spool_message *m,
                              size_t *out_head_len) {
  size_t start = out->len;
  struct le_wr w = {out, 0};
  if (!message_valid(m)) {
    w.err = EINVAL;
    return le_wr_end(&w, start);
  }
  record_begin(&w, SPOOL_REC_MESSAGE);
  le_wr_uint(&w, 1, SPOOL_MESSAGE_VERSION);
  le_wr_uint(&w, 1,
             (m->envid ? SPOOL_MSG_F_ENVID : 0) |
                 (m->requiretls ? SPOOL_MSG_F_REQUIRETLS : 0));
  le_wr_uint(&w, 1, m->ret);
  le_wr_uint(&w, 1, m->body_type);
  le_wr_uint(&w, 1, m->smtputf8);
  le_wr_uint(&w, 8, m->queue_id);
  le_wr_uint(&w, 8, (uint64_t)m->arrival_ms);
  le_wr_str(&w, m->sender);
  if (m->envid) {
    le_wr_str(&w, m->envid);
  }
  le_wr_str(&w, m->client_addr);
  le_wr_str(&w, m->helo);
  le_wr_uint(&w, 4, m->num_rcpts);
  for (size_t i = 0; i < m->num_rcpts; i++) {
    message_put_rcpt(&w, &m->rcpts[i]);
  }
  le_wr_uint(&w, 4, m->body_len);
  record_finish(&w, start, m->body, m->body_len);
  if (le_wr_end(&w, start) != 0) {
    return -1;
  }
  *out_head_len = out->len - start;
  return 0;
}

int spool_message_encode(struct buf *out, const struct spool_message *m) {
  size_t start = out->len;
  size_t head_len;
  if (spool_message_encode_head(out, m, &head_len) != 0) {
    return -1;
  }
  if (buf_append(out, m->body, m->body_len) != 0) {
    out->len = start;
    errno = ENOMEM;
    return -1;
  }
  return 0;
}

static int message_get_rcpt(struct le_rd *r, struct spool_rcpt *out) {
  uint8_t rflags, notify;
  if (!le_rd_u8(r, &rflags) || !le_rd_u8(r, &notify) ||
      !le_rd_str(r, &out->addr)) {
    return 0;
  }
  if ((rflags & ~SPOOL_RCPT_F_ORCPT) != 0) {
    return 0;
  }
  out->notify = notify;
  out->orcpt = NULL;
  return !(rflags & SPOOL_RCPT_F_ORCPT) || le_rd_str(r, &out->orcpt);
}

/* message_get_fixed reads the fields before the recipients. */
static int message_get_fixed(struct le_rd *r, struct spool_message *out) {
  uint8_t version, flags;
  uint64_t id, arrival;
  if (!le_rd_u8(r, &version) || version != SPOOL_MESSAGE_VERSION ||
      !le_rd_u8(r, &flags) ||
      (flags & ~(SPOOL_MSG_F_ENVID | SPOOL_MSG_F_REQUIRETLS)) != 0) {
    return 0;
  }
  out->requiretls = (flags & SPOOL_MSG_F_REQUIRETLS) != 0;
  if (!le_rd_u8(r, &out->ret) || !le_rd_u8(r, &out->body_type) ||
      !le_rd_u8(r, &out->smtputf8) || out->smtputf8 > 1) {
    return 0;
  }
  if (!le_rd_uint(r, 8, &id) || !le_rd_uint(r, 8, &arrival) ||
      !le_rd_str(r, &out->sender)) {
    return 0;
  }
  out->queue_id = id;
  out->arrival_ms = (int64_t)arrival;
  out->envid = NULL;
  if ((flags & SPOOL_MSG_F_ENVID) && !le_rd_str(r, &out->envid)) {
    return 0;
  }
  return le_rd_str(r, &out->client_addr) && le_rd_str(r, &out->helo);
}

int spool_message_decode(const uint8_t *payload, size_t payload_len,
                         struct spool_message *out, struct buf *rcpt_storage) {
  struct le_rd r = {payload, payload_len};
  uint64_t num_rcpts, body_len;
  memset(out, 0, sizeof *out);
  if (!message_get_fixed(&r, out) || !le_rd_uint(&r, 4, &num_rcpts)) {
    return -1;
  }
  /* Bound the allocation by what the payload can hold before making it. */
  if (num_rcpts == 0 || num_rcpts > SPOOL_MAX_RCPTS ||
      num_rcpts > r.len / SPOOL_RCPT_MIN_LEN) {
    return -1;
  }
  buf_reset(rcpt_storage);
  size_t bytes = (size_t)num_rcpts * sizeof(struct spool_rcpt);
  if (buf_reserve(rcpt_storage, bytes) != 0) {
    return -1;
  }
  struct spool_rcpt *rcpts = (struct spool_rcpt *)rcpt_storage->data;
  for (size_t i = 0; i < num_rcpts; i++) {
    if (!message_get_rcpt(&r, &rcpts[i])) {
      return -1;
    }
  }
  rcpt_storage->len = bytes;
  /* The body is exactly the rest: no trailing bytes. */
  if (!le_rd_uint(&r, 4, &body_len) || body_len != r.len) {
    return -1;
  }
  out->num_rcpts = (size_t)num_rcpts;
  out->rcpts = rcpts;
  out->body = r.p;
  out->body_len = (size_t)body_len;
  return 0;
}

/* ---- DONE ---- */

static int outcome_known(uint8_t outcome) {
  return outcome == SPOOL_OUTCOME_DELIVERED ||
         outcome == SPOOL_OUTCOME_BOUNCED || outcome == SPOOL_OUTCOME_DELETED;
}

int spool_done_encode(struct buf *out, const struct spool_done *d) {
  size_t start = out->len;
  struct le_wr w = {out, 0};
  if (!outcome_known(d->outcome)) {
    w.err = EINVAL;
    return le_wr_end(&w, start);
  }
  record_begin(&w, SPOOL_REC_DONE);
  le_wr_uint(&w, 1, SPOOL_DONE_VERSION);
  le_wr_uint(&w, 1, d->outcome);
  le_wr_uint(&w, 2, 0);
  le_wr_uint(&w, 4, d->rcpt_index);
  le_wr_uint(&w, 8, d->queue_id);
  le_wr_uint(&w, 8, (uint64_t)d->when_ms);
  record_finish(&w, start, NULL, 0);
  return le_wr_end(&w, start);
}

int spool_done_decode(const uint8_t *payload, size_t payload_len,
                      struct spool_done *out) {
  struct le_rd r = {payload, payload_len};
  uint8_t version, outcome;
  uint64_t reserved, index, id, when;
  if (!le_rd_u8(&r, &version) || !le_rd_u8(&r, &outcome) ||
      !le_rd_uint(&r, 2, &reserved) || !le_rd_uint(&r, 4, &index) ||
      !le_rd_uint(&r, 8, &id) || !le_rd_uint(&r, 8, &when)) {
    return -1;
  }
  if (r.len != 0 || version != SPOOL_DONE_VERSION || reserved != 0 ||
      !outcome_known(outcome)) {
    return -1;
  }
  out->queue_id = id;
  out->rcpt_index = (uint32_t)index;
  out->outcome = outcome;
  out->when_ms = (int64_t)when;
  return 0;
}

/* ---- HOLD / RELEASE ---- */

int spool_hold_encode(struct buf *out, const struct spool_hold *h) {
  size_t start = out->len;
  struct le_wr w = {out, 0};
  if (h->gen == 0 || h->held > 1) {
    w.err = EINVAL;
    return le_wr_end(&w, start);
  }
  record_begin(&w, h->held ? SPOOL_REC_HOLD : SPOOL_REC_RELEASE);
  le_wr_uint(&w, 1, SPOOL_HOLD_VERSION);
  le_wr_uint(&w, 1, 0);
  le_wr_uint(&w, 2, 0);
  le_wr_uint(&w, 4, h->gen);
  le_wr_uint(&w, 8, h->queue_id);
  le_wr_uint(&w, 8, (uint64_t)h->when_ms);
  record_finish(&w, start, NULL, 0);
  return le_wr_end(&w, start);
}

int spool_hold_decode(uint8_t type, const uint8_t *payload, size_t payload_len,
                      struct spool_hold *out) {
  struct le_rd r = {payload, payload_len};
  uint8_t version, reserved8;
  uint64_t reserved16, gen, id, when;
  if (type != SPOOL_REC_HOLD && type != SPOOL_REC_RELEASE) {
    return -1;
  }
  if (!le_rd_u8(&r, &version) || !le_rd_u8(&r, &reserved8) ||
      !le_rd_uint(&r, 2, &reserved16) || !le_rd_uint(&r, 4, &gen) ||
      !le_rd_uint(&r, 8, &id) || !le_rd_uint(&r, 8, &when)) {
    return -1;
  }
  if (r.len != 0 || version != SPOOL_HOLD_VERSION || reserved8 != 0 ||
      reserved16 != 0 || gen == 0) {
    return -1;
  }
  out->queue_id = id;
  out->gen = (uint32_t)gen;
  out->held = type == SPOOL_REC_HOLD;
  out->when_ms = (int64_t)when;
  return 0;
}

/* ---- SEGMENT ---- */

int spool_segment_header_encode(struct buf *out, unsigned thread_index,
                                uint32_t seq) {
  size_t start = out->len;
  struct le_wr w = {out, 0};
  if (thread_index >= SPOOL_MAX_THREADS) {
    w.err = EINVAL;
    return le_wr_end(&w, start);
  }
  record_begin(&w, SPOOL_REC_SEGMENT);
  le_wr_uint(&w, 4, SPOOL_SEGMENT_VERSION);
  le_wr_uint(&w, 4, thread_index);
  le_wr_uint(&w, 4, seq);
  record_finish(&w, start, NULL, 0);
  return le_wr_end(&w, start);
}

int spool_segment_header_decode(const uint8_t *payload, size_t payload_len,
                                struct spool_segment_header *out) {
  struct le_rd r = {payload, payload_len};
  uint64_t version, thread, seq;
  if (!le_rd_uint(&r, 4, &version) || !le_rd_uint(&r, 4, &thread) ||
      !le_rd_uint(&r, 4, &seq) || r.len != 0) {
    return -1;
  }
  if (version != SPOOL_SEGMENT_VERSION || thread >= SPOOL_MAX_THREADS) {
    return -1;
  }
  out->version = (uint32_t)version;
  out->thread_index = (uint32_t)thread;
  out->seq = (uint32_t)seq;
  return 0;
}

long spool_segment_write_header(int fd, unsigned thread_index, uint32_t seq) {
  uint8_t mem[SPOOL_RECORD_HEADER_LEN + SPOOL_SEGMENT_PAYLOAD_LEN];
  struct buf b = {mem, 0, sizeof mem}; /* fits: never reallocated */
  if (spool_segment_header_encode(&b, thread_index, seq) != 0) {
    return -1;
  }
  ssize_t n = pwrite(fd, b.data, b.len, 0);
  if (n < 0) {
    return -1;
  }
  if ((size_t)n != b.len) {
    errno = ENOSPC; /* a short write of 36 bytes: the disk is full */
    return -1;
  }
  if (fsync(fd) != 0) {
    return -1;
  }
  return (long)n;
}
