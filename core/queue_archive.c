/* core/queue_archive.c — the queue archive codec; see queue_archive.h.
 *
 * Decoders read through a bounded reader (struct le_rd, core/lecodec.h)
 * and check for trailing octets; encoders append through a builder with a
 * sticky error (struct le_wr) and roll back to where the record began on
 * failure, so a caller never holds half a record. */
#include "core/queue_archive.h"

#include <errno.h>
#include <string.h>

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "core/lecodec.h"

#define QARC_F_ENVID 0x01u
#define QARC_F_REQUIRETLS 0x02u
#define QARC_F_SMTPUTF8 0x04u
#define QARC_F_HELD 0x08u
#define QARC_F_ALL 0x0fu
#define QARC_RCPT_F_ORCPT 0x01u
/* The smallest encoded recipient: rflags, notify, u16 length, 1 octet, NUL. */
#define QARC_RCPT_MIN_LEN 6u

static const uint8_t qarc_magic[3] = {'P', 'Q', 'X'};

enum { RD_HEADER, RD_RECORDS, RD_ENDED, RD_BAD };

/* ---- record framing ---- */

static uint64_t record_checksum(const uint8_t *a, size_t a_len,
                                const uint8_t *b, size_t b_len) {
  XXH3_state_t st;
  XXH3_INITSTATE(&st);
  XXH3_64bits_reset(&st);
  XXH3_64bits_update(&st, a, a_len);
  if (b_len > 0) {
    XXH3_64bits_update(&st, b, b_len);
  }
  return XXH3_64bits_digest(&st);
}

/* record_begin appends a record header with payload_len 0 (filled in by
 * record_lengths). */
static void record_begin(struct le_wr *w, uint8_t type) {
  uint8_t hdr[QARC_RECORD_HEADER_LEN] = {0};
  memcpy(hdr, qarc_magic, sizeof qarc_magic);
  hdr[3] = type;
  le_wr_bytes(w, hdr, sizeof hdr);
}

/* record_lengths fills in payload_len of the record that begins at `start`
 * in w->b: what follows its header there plus `extra` octets (the body,
 * not in the buffer). */
static void record_lengths(struct le_wr *w, size_t start, size_t extra) {
  if (w->err) {
    return;
  }
  size_t in_buf = w->b->len - start - QARC_RECORD_HEADER_LEN;
  if (extra > QARC_MAX_PAYLOAD || in_buf > QARC_MAX_PAYLOAD - extra) {
    w->err = EMSGSIZE;
    return;
  }
  le_put(w->b->data + start + 4, 8, (uint64_t)(in_buf + extra));
}

/* record_close appends the checksum of the record that begins at `start`. */
static void record_close(struct le_wr *w, size_t start) {
  record_lengths(w, start, 0);
  if (w->err) {
    return;
  }
  uint64_t sum =
      record_checksum(w->b->data + start, w->b->len - start, NULL, 0);
  le_wr_uint(w, 8, sum);
}

/* ---- MESSAGE ---- */

static int message_valid(const struct qarc_message *q) {
  const struct spool_message *m = &q->m;
  if (m->num_rcpts == 0 || m->num_rcpts > SPOOL_MAX_RCPTS || m->rcpts == NULL ||
      m->smtputf8 > 1 || m->requiretls > 1 || q->held > 1 ||
      m->ret > QARC_MAX_RET || m->body_type > QARC_MAX_BODY_TYPE ||
      (m->body_len > 0 && m->body == NULL)) {
    return 0;
  }
  for (size_t i = 0; i < m->num_rcpts; i++) {
    const struct spool_rcpt *r = &m->rcpts[i];
    if (r->addr == NULL || r->addr[0] == '\0' ||
        (r->notify & ~QARC_NOTIFY_MASK) != 0) {
      return 0;
    }
  }
  return 1;
}

static uint8_t message_flags(const struct qarc_message *q) {
  return (uint8_t)((q->m.envid ? QARC_F_ENVID : 0) |
                   (q->m.requiretls ? QARC_F_REQUIRETLS : 0) |
                   (q->m.smtputf8 ? QARC_F_SMTPUTF8 : 0) |
                   (q->held ? QARC_F_HELD : 0));
}

/* message_put_envelope writes the payload up to and including body_len. */
static void message_put_envelope(struct le_wr *w,
                                 const struct qarc_message *q) {
  const struct spool_message *m = &q->m;
  le_wr_uint(w, 8, m->queue_id);
  le_wr_uint(w, 8, (uint64_t)m->arrival_ms);
  le_wr_uint(w, 1, message_flags(q));
  le_wr_uint(w, 1, m->ret);
  le_wr_uint(w, 1, m->body_type);
  le_wr_uint(w, 1, 0);
  le_wr_str(w, m->sender);
  if (m->envid) {
    le_wr_str(w, m->envid);
  }
  le_wr_str(w, m->client_addr);
  le_wr_str(w, m->helo);
  le_wr_uint(w, 4, m->num_rcpts);
  for (size_t i = 0; i < m->num_rcpts; i++) {
    const struct spool_rcpt *r = &m->rcpts[i];
    le_wr_uint(w, 1, r->orcpt ? QARC_RCPT_F_ORCPT : 0);
    le_wr_uint(w, 1, r->notify);
    le_wr_str(w, r->addr);
    if (r->orcpt) {
      le_wr_str(w, r->orcpt);
    }
  }
  le_wr_uint(w, 8, m->body_len);
}

int qarc_message_encode_head(struct buf *out, const struct qarc_message *m,
                             uint8_t out_trailer[QARC_TRAILER_LEN]) {
  size_t start = out->len; /* the rollback point */
  struct le_wr w = {out, 0};
  if (!message_valid(m)) {
    w.err = EINVAL;
    return le_wr_end(&w, start);
  }
  record_begin(&w, QARC_REC_MESSAGE);
  message_put_envelope(&w, m);
  record_lengths(&w, start, m->m.body_len);
  if (w.err == 0) {
    uint64_t sum = record_checksum(out->data + start, out->len - start,
                                   m->m.body, m->m.body_len);
    le_put(out_trailer, QARC_TRAILER_LEN, sum);
  }
  return le_wr_end(&w, start);
}

int qarc_message_encode(struct buf *out, const struct qarc_message *m) {
  size_t start = out->len;
  uint8_t trailer[QARC_TRAILER_LEN];
  if (qarc_message_encode_head(out, m, trailer) != 0) {
    return -1;
  }
  if (buf_append(out, m->m.body, m->m.body_len) != 0 ||
      buf_append(out, trailer, sizeof trailer) != 0) {
    out->len = start;
    errno = ENOMEM;
    return -1;
  }
  return 0;
}

int qarc_end_encode(struct buf *out, const struct qarc_end *e) {
  size_t start = out->len; /* the rollback point */
  struct le_wr w = {out, 0};
  record_begin(&w, QARC_REC_END);
  le_wr_uint(&w, 8, e->num_messages);
  le_wr_uint(&w, 8, e->num_rcpts);
  record_close(&w, start);
  return le_wr_end(&w, start);
}

int qarc_header_encode(struct buf *out) {
  if (buf_append(out, QARC_HEADER, QARC_HEADER_LEN) != 0) {
    errno = ENOMEM;
    return -1;
  }
  return 0;
}

/* ---- decoding ---- */

static int message_get_rcpt(struct le_rd *r, struct spool_rcpt *out) {
  uint8_t rflags, notify;
  if (!le_rd_u8(r, &rflags) || !le_rd_u8(r, &notify) ||
      !le_rd_str(r, &out->addr)) {
    return 0;
  }
  if ((rflags & ~QARC_RCPT_F_ORCPT) != 0 || (notify & ~QARC_NOTIFY_MASK) != 0 ||
      out->addr[0] == '\0') {
    return 0;
  }
  out->notify = notify;
  out->orcpt = NULL;
  return !(rflags & QARC_RCPT_F_ORCPT) || le_rd_str(r, &out->orcpt);
}

/* message_get_fixed reads the fields before the recipients. */
static int message_get_fixed(struct le_rd *r, struct qarc_message *out) {
  struct spool_message *m = &out->m;
  uint64_t id, arrival;
  uint8_t flags, reserved;
  if (!le_rd_uint(r, 8, &id) || !le_rd_uint(r, 8, &arrival) ||
      !le_rd_u8(r, &flags) || !le_rd_u8(r, &m->ret) ||
      !le_rd_u8(r, &m->body_type) || !le_rd_u8(r, &reserved)) {
    return 0;
  }
  if ((flags & ~QARC_F_ALL) != 0 || reserved != 0 || m->ret > QARC_MAX_RET ||
      m->body_type > QARC_MAX_BODY_TYPE) {
    return 0;
  }
  m->queue_id = id;
  m->arrival_ms = (int64_t)arrival;
  m->requiretls = (flags & QARC_F_REQUIRETLS) != 0;
  m->smtputf8 = (flags & QARC_F_SMTPUTF8) != 0;
  out->held = (flags & QARC_F_HELD) != 0;
  if (!le_rd_str(r, &m->sender) ||
      ((flags & QARC_F_ENVID) && !le_rd_str(r, &m->envid))) {
    return 0;
  }
  return le_rd_str(r, &m->client_addr) && le_rd_str(r, &m->helo);
}

/* message_decode parses a MESSAGE payload. Returns 0 or -1. */
static int message_decode(const uint8_t *payload, size_t payload_len,
                          struct qarc_message *out, struct buf *rcpt_storage) {
  struct le_rd r = {payload, payload_len};
  uint64_t num_rcpts, body_len;
  memset(out, 0, sizeof *out);
  if (!message_get_fixed(&r, out) || !le_rd_uint(&r, 4, &num_rcpts)) {
    return -1;
  }
  /* Bound the allocation by what the payload can hold before making it. */
  if (num_rcpts == 0 || num_rcpts > SPOOL_MAX_RCPTS ||
      num_rcpts > r.len / QARC_RCPT_MIN_LEN) {
    return -1;
  }
  size_t bytes = (size_t)num_rcpts * sizeof(struct spool_rcpt);
  buf_reset(rcpt_storage);
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
  if (!le_rd_uint(&r, 8, &body_len) || body_len != r.len) {
    return -1;
  }
  out->m.num_rcpts = (size_t)num_rcpts;
  out->m.rcpts = rcpts;
  out->m.body = r.p;
  out->m.body_len = (size_t)body_len;
  return 0;
}

static int end_decode(const uint8_t *payload, size_t payload_len,
                      struct qarc_end *out) {
  if (payload_len != QARC_END_PAYLOAD_LEN) {
    return -1;
  }
  out->num_messages = le_get(payload, 8);
  out->num_rcpts = le_get(payload + 8, 8);
  return 0;
}

static enum qarc_result bad(const char **out_why, const char *why) {
  *out_why = why;
  return QARC_BAD;
}

/* record_peek judges the 12 header octets as far as in holds them and
 * sets *out_len to the whole record's length once they are all there. */
static enum qarc_result record_peek(const uint8_t *in, size_t in_len,
                                    size_t *out_len, const char **out_why) {
  size_t n = in_len < sizeof qarc_magic ? in_len : sizeof qarc_magic;
  if (memcmp(in, qarc_magic, n) != 0) {
    return bad(out_why, "not an archive record (bad magic)");
  }
  if (in_len > 3 && in[3] != QARC_REC_MESSAGE && in[3] != QARC_REC_END) {
    return bad(out_why, "unknown record type");
  }
  if (in_len < QARC_RECORD_HEADER_LEN) {
    *out_len = QARC_RECORD_HEADER_LEN;
    return QARC_NEED_MORE;
  }
  uint64_t payload_len = le_get(in + 4, 8);
  if (payload_len > QARC_MAX_PAYLOAD) {
    return bad(out_why, "record too large (corrupted length?)");
  }
  *out_len = QARC_RECORD_HEADER_LEN + (size_t)payload_len + QARC_TRAILER_LEN;
  return QARC_NEED_MORE;
}

enum qarc_result qarc_record_decode(const uint8_t *in, size_t in_len,
                                    size_t *out_consumed, size_t *out_need,
                                    struct qarc_message *out_msg,
                                    struct qarc_end *out_end,
                                    struct buf *rcpt_storage,
                                    const char **out_why) {
  size_t len = 0;
  if (in_len == 0) {
    *out_need = QARC_RECORD_HEADER_LEN;
    return QARC_NEED_MORE;
  }
  if (record_peek(in, in_len, &len, out_why) == QARC_BAD) {
    return QARC_BAD;
  }
  if (in_len < len) {
    *out_need = len;
    return QARC_NEED_MORE;
  }
  size_t body = len - QARC_TRAILER_LEN;
  if (le_get(in + body, 8) != record_checksum(in, body, NULL, 0)) {
    return bad(out_why, "checksum mismatch (the record is corrupted)");
  }
  const uint8_t *payload = in + QARC_RECORD_HEADER_LEN;
  size_t payload_len = body - QARC_RECORD_HEADER_LEN;
  if (in[3] == QARC_REC_END) {
    if (end_decode(payload, payload_len, out_end) != 0) {
      return bad(out_why, "malformed end record");
    }
    *out_consumed = len;
    return QARC_END;
  }
  if (message_decode(payload, payload_len, out_msg, rcpt_storage) != 0) {
    return bad(out_why, "malformed message record");
  }
  *out_consumed = len;
  return QARC_MESSAGE;
}

/* ---- whole archives ---- */

void qarc_reader_init(struct qarc_reader *r) {
  *r = (struct qarc_reader){.state = RD_HEADER};
}

int qarc_reader_done(const struct qarc_reader *r) {
  return r->state == RD_ENDED;
}

static enum qarc_result reader_fail(struct qarc_reader *r, const char *why) {
  r->state = RD_BAD;
  r->why = why;
  return QARC_BAD;
}

/* reader_header checks the header as far as in holds it: 1 when whole,
 * 0 for more, -1 (r failed) when it is not ours. */
static int reader_header(struct qarc_reader *r, const uint8_t *in,
                         size_t in_len) {
  static const char prefix[] = "postseal-queue-export ";
  size_t plen = sizeof prefix - 1;
  size_t n = in_len < plen ? in_len : plen;
  if (memcmp(in, prefix, n) != 0) {
    reader_fail(r, "not a postseal queue archive (bad header)");
    return -1;
  }
  n = in_len < QARC_HEADER_LEN ? in_len : QARC_HEADER_LEN;
  if (n > plen && memcmp(in, QARC_HEADER, n) != 0) {
    reader_fail(r, "unsupported archive version (this postseal reads 1)");
    return -1;
  }
  return in_len >= QARC_HEADER_LEN;
}

/* reader_item checks a decoded item against the archive so far. */
static enum qarc_result reader_item(struct qarc_reader *r, enum qarc_result res,
                                    const struct qarc_message *m,
                                    const struct qarc_end *e) {
  if (res == QARC_MESSAGE) {
    r->num_messages++;
    r->num_rcpts += m->m.num_rcpts;
    return res;
  }
  if (e->num_messages != r->num_messages || e->num_rcpts != r->num_rcpts) {
    return reader_fail(r, "end record counts do not match (records lost)");
  }
  r->state = RD_ENDED;
  return res;
}

enum qarc_result qarc_reader_next(struct qarc_reader *r, const uint8_t *in,
                                  size_t in_len, size_t *out_consumed,
                                  size_t *out_need, struct qarc_message *out,
                                  struct buf *rcpt_storage) {
  size_t skip = 0;
  if (r->state == RD_BAD) {
    return QARC_BAD;
  }
  if (r->state == RD_ENDED) {
    return reader_fail(r, "data after the end record");
  }
  if (in_len == 0) {
    *out_need =
        r->state == RD_HEADER ? QARC_HEADER_LEN : QARC_RECORD_HEADER_LEN;
    return QARC_NEED_MORE;
  }
  if (r->state == RD_HEADER) {
    int h = reader_header(r, in, in_len);
    if (h <= 0) {
      *out_need = QARC_HEADER_LEN;
      return h < 0 ? QARC_BAD : QARC_NEED_MORE;
    }
    skip = QARC_HEADER_LEN;
  }
  struct qarc_end e;
  size_t consumed = 0, need = 0;
  const char *why = NULL;
  enum qarc_result res =
      in_len == skip ? QARC_NEED_MORE
                     : qarc_record_decode(in + skip, in_len - skip, &consumed,
                                          &need, out, &e, rcpt_storage, &why);
  if (res == QARC_BAD) {
    return reader_fail(r, why);
  }
  if (res == QARC_NEED_MORE) {
    *out_need = skip + (in_len == skip ? QARC_RECORD_HEADER_LEN : need);
    return res;
  }
  r->state = RD_RECORDS;
  *out_consumed = skip + consumed;
  return reader_item(r, res, out, &e);
}
