/* proto/dns_msg.c — DNS query builder and response parser; see dns_msg.h.
 * Everything is read through struct dns_reader, a bounded reader with a
 * sticky error, and written through struct dns_writer, its builder twin. */
#include "proto/dns_msg.h"

#include <stdio.h>
#include <string.h>

/* Header flag bits (RFC 1035 §4.1.1, RFC 4035 §3.2 for AD and CD). */
#define DNS_FLAG_QR 0x8000u
#define DNS_FLAG_AA 0x0400u
#define DNS_FLAG_TC 0x0200u
#define DNS_FLAG_RD 0x0100u
#define DNS_FLAG_RA 0x0080u
#define DNS_FLAG_AD 0x0020u
#define DNS_FLAG_CD 0x0010u
#define DNS_EDNS_DO 0x8000u /* RFC 3225, in the OPT TTL's low 16 bits */
#define DNS_TTL_MAX_SIGNED 0x7fffffffu

/* ---- bounded reader ---- */

struct dns_reader {
  const uint8_t *msg; /* the whole message: compression pointers reach it */
  size_t len;         /* of the whole message */
  size_t end;         /* sequential reads stop here (the rdata's end) */
  size_t pos;
  const char *why; /* first error, sticky */
};

static int rd_fail(struct dns_reader *r, const char *why) {
  if (r->why == NULL) {
    r->why = why;
  }
  return -1;
}

static int rd_need(struct dns_reader *r, size_t n) {
  if (r->why != NULL) {
    return -1;
  }
  if (r->pos > r->end || r->end - r->pos < n) {
    return rd_fail(r, "truncated message");
  }
  return 0;
}

static uint8_t rd_u8(struct dns_reader *r) {
  if (rd_need(r, 1) != 0) {
    return 0;
  }
  return r->msg[r->pos++];
}

static uint16_t rd_u16(struct dns_reader *r) {
  if (rd_need(r, 2) != 0) {
    return 0;
  }
  uint16_t v = (uint16_t)(r->msg[r->pos] << 8 | r->msg[r->pos + 1]);
  r->pos += 2;
  return v;
}

static uint32_t rd_u32(struct dns_reader *r) {
  uint32_t hi = rd_u16(r);
  return hi << 16 | rd_u16(r);
}

static const uint8_t *rd_bytes(struct dns_reader *r, size_t n) {
  if (rd_need(r, n) != 0) {
    return NULL;
  }
  const uint8_t *p = r->msg + r->pos;
  r->pos += n;
  return p;
}

/* ---- bounded writer ---- */

struct dns_writer {
  uint8_t *out;
  size_t cap;
  size_t len;
  int err; /* sticky */
};

static void wr_bytes(struct dns_writer *w, const void *p, size_t n) {
  if (w->err || w->cap - w->len < n) {
    w->err = 1;
    return;
  }
  memcpy(w->out + w->len, p, n);
  w->len += n;
}

static void wr_u8(struct dns_writer *w, uint8_t v) {
  wr_bytes(w, &v, 1);
}

static void wr_u16(struct dns_writer *w, uint16_t v) {
  uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
  wr_bytes(w, b, 2);
}

/* ---- names ---- */

static int is_digit(char c) {
  return c >= '0' && c <= '9';
}

static uint8_t ascii_lower(uint8_t c) {
  return c >= 'A' && c <= 'Z' ? (uint8_t)(c + ('a' - 'A')) : c;
}

/* text_octet reads one octet of a label in presentation form: a plain
 * character, \DDD (decimal, at most 255) or \X (RFC 1035 §5.1). Returns
 * the octet and advances *ps, or -1. */
static int text_octet(const char **ps) {
  const char *s = *ps;
  if (s[0] != '\\') {
    *ps = s + 1;
    return (uint8_t)s[0];
  }
  if (is_digit(s[1])) {
    if (!is_digit(s[2]) || !is_digit(s[3])) {
      return -1;
    }
    int v = (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
    *ps = s + 4;
    return v <= 255 ? v : -1;
  }
  if (s[1] == '\0') {
    return -1;
  }
  *ps = s + 2;
  return (uint8_t)s[1];
}

/* name_from_text turns a presentation-form name (optional trailing dot,
 * "." for the root) into uncompressed wire form. Labels are 1..63 octets,
 * the whole at most 255 with the root octet (RFC 1035 §2.3.4). */
static int name_from_text(const char *s, uint8_t wire[DNS_MAX_NAME_WIRE],
                          size_t *out_len) {
  size_t n = 0;
  if (s[0] == '.' && s[1] == '\0') {
    wire[0] = 0;
    *out_len = 1;
    return 0;
  }
  while (*s != '\0') {
    size_t lab = n++; /* the label's length octet */
    if (n >= DNS_MAX_NAME_WIRE) {
      return -1;
    }
    while (*s != '\0' && *s != '.') {
      int octet = text_octet(&s);
      /* n + 1 < 255 keeps room for the root octet. */
      if (octet < 0 || n - lab - 1 >= DNS_MAX_LABEL ||
          n + 1 >= DNS_MAX_NAME_WIRE) {
        return -1;
      }
      wire[n++] = (uint8_t)octet;
    }
    if (n - lab - 1 == 0) {
      return -1; /* "", ".a", "a..b" */
    }
    wire[lab] = (uint8_t)(n - lab - 1);
    if (*s == '.') {
      s++; /* a dot at the very end is the optional root dot */
    }
  }
  if (n == 0) {
    return -1;
  }
  wire[n++] = 0;
  *out_len = n;
  return 0;
}

/* name_to_text writes a well-formed wire name in presentation form,
 * escaping as the header says; lower: fold ASCII to lower case. Returns 0,
 * or -1 if the text would not fit in DNS_NAME_TEXT_MAX. */
static int name_to_text(const uint8_t *wire, char out[DNS_NAME_TEXT_MAX],
                        int lower) {
  size_t o = 0, i = 0;
  if (wire[0] == 0) {
    memcpy(out, ".", 2);
    return 0;
  }
  while (wire[i] != 0) {
    size_t label_len = wire[i++];
    if (o > 0) {
      if (o + 1 >= DNS_NAME_TEXT_MAX) {
        return -1;
      }
      out[o++] = '.';
    }
    for (size_t k = 0; k < label_len; k++) {
      uint8_t c = lower ? ascii_lower(wire[i++]) : wire[i++];
      char esc[5];
      size_t n = 1;
      if (c == '.' || c == '\\') {
        esc[0] = '\\';
        esc[1] = (char)c;
        n = 2;
      } else if (c < 0x21 || c > 0x7e) {
        snprintf(esc, sizeof esc, "\\%03u", c);
        n = 4;
      } else {
        esc[0] = (char)c;
      }
      if (o + n >= DNS_NAME_TEXT_MAX) {
        return -1;
      }
      memcpy(out + o, esc, n);
      o += n;
    }
  }
  out[o] = '\0';
  return 0;
}

/* name_read reads a possibly compressed name (RFC 1035 §4.1.4) at r->pos
 * into uncompressed wire form and leaves r->pos after its in-stream part.
 * A pointer must point before the start of the label sequence that holds
 * it and after the header: targets strictly decrease, so there is no loop
 * and no forward reference; labels 0x40/0x80 are refused. */
static int name_read(struct dns_reader *r, uint8_t wire[DNS_MAX_NAME_WIRE]) {
  size_t p = r->pos, bound = r->pos, limit = r->end, n = 0;
  size_t after = 0; /* r->pos once done: after the first pointer, if any */
  unsigned pointers = 0;
  if (r->why != NULL) {
    return -1;
  }
  for (;;) {
    if (p >= limit) {
      return rd_fail(r, "truncated name");
    }
    uint8_t c = r->msg[p];
    if ((c & 0xc0) == 0xc0) {
      if (p + 1 >= limit) {
        return rd_fail(r, "truncated name");
      }
      size_t target = (size_t)(c & 0x3f) << 8 | r->msg[p + 1];
      if (target >= bound || target < DNS_HEADER_LEN) {
        return rd_fail(r, "compression pointer not backward");
      }
      if (++pointers > DNS_MAX_POINTERS) {
        return rd_fail(r, "too many compression pointers");
      }
      if (pointers == 1) {
        after = p + 2;
      }
      /* The labels we jump to lie anywhere earlier in the message. */
      p = bound = target;
      limit = r->len;
      continue;
    }
    if ((c & 0xc0) != 0) {
      return rd_fail(r, "unknown label type");
    }
    if (c == 0) {
      wire[n] = 0;
      r->pos = pointers > 0 ? after : p + 1;
      return 0;
    }
    /* n + 1 + c labels octets, then the root octet: at most 255. */
    if (n + 1 + c + 1 > DNS_MAX_NAME_WIRE) {
      return rd_fail(r, "name longer than 255 octets");
    }
    if (limit - p - 1 < c) {
      return rd_fail(r, "truncated name");
    }
    memcpy(wire + n, r->msg + p, (size_t)c + 1);
    n += (size_t)c + 1;
    p += (size_t)c + 1;
  }
}

/* name_read_text: name_read, then presentation form (case kept). */
static int name_read_text(struct dns_reader *r, char out[DNS_NAME_TEXT_MAX]) {
  uint8_t wire[DNS_MAX_NAME_WIRE];
  if (name_read(r, wire) != 0) {
    return -1;
  }
  if (name_to_text(wire, out, 0) != 0) {
    return rd_fail(r, "name too long in presentation form");
  }
  return 0;
}

int dns_name_canon(char out[DNS_NAME_TEXT_MAX], const char *name) {
  uint8_t wire[DNS_MAX_NAME_WIRE];
  size_t len;
  if (name_from_text(name, wire, &len) != 0) {
    return -1;
  }
  return name_to_text(wire, out, 1);
}

/* name_text_len: length without one trailing dot, unless that dot is
 * escaped (an odd number of backslashes before it). */
static size_t name_text_len(const char *s) {
  size_t n = strlen(s), slashes = 0;
  if (n < 2 || s[n - 1] != '.') {
    return n;
  }
  while (slashes < n - 1 && s[n - 2 - slashes] == '\\') {
    slashes++;
  }
  return slashes % 2 == 0 ? n - 1 : n;
}

int dns_name_equal(const char *a, const char *b) {
  size_t na = name_text_len(a), nb = name_text_len(b);
  if (na != nb) {
    return 0;
  }
  for (size_t i = 0; i < na; i++) {
    if (ascii_lower((uint8_t)a[i]) != ascii_lower((uint8_t)b[i])) {
      return 0;
    }
  }
  return 1;
}

/* ---- query builder ---- */

int dns_query_build(uint8_t *out, size_t cap, size_t *out_len, uint16_t id,
                    const char *name, uint16_t type, unsigned flags) {
  uint8_t wire[DNS_MAX_NAME_WIRE];
  size_t wire_len;
  int edns = (flags & (DNS_QUERY_EDNS | DNS_QUERY_DO)) != 0;
  if (name_from_text(name, wire, &wire_len) != 0) {
    return -1;
  }
  struct dns_writer w = {.out = out, .cap = cap};
  /* RFC 1035 §4.1.1: ID, flags (RD; AD per RFC 6840 §5.7), counts. */
  wr_u16(&w, id);
  wr_u16(&w,
         (uint16_t)(DNS_FLAG_RD | (flags & DNS_QUERY_AD ? DNS_FLAG_AD : 0)));
  wr_u16(&w, 1);            /* QDCOUNT */
  wr_u16(&w, 0);            /* ANCOUNT */
  wr_u16(&w, 0);            /* NSCOUNT */
  wr_u16(&w, edns ? 1 : 0); /* ARCOUNT */
  /* §4.1.2: QNAME QTYPE QCLASS. */
  wr_bytes(&w, wire, wire_len);
  wr_u16(&w, type);
  wr_u16(&w, DNS_CLASS_IN);
  if (edns) {
    /* RFC 6891 §6.1.2: root owner, TYPE OPT, CLASS = UDP payload size,
     * TTL = extended RCODE 0, VERSION 0, DO and Z, empty RDATA. */
    wr_u8(&w, 0);
    wr_u16(&w, DNS_TYPE_OPT);
    wr_u16(&w, DNS_EDNS_UDP_SIZE);
    wr_u8(&w, 0);
    wr_u8(&w, 0);
    wr_u16(&w, flags & DNS_QUERY_DO ? DNS_EDNS_DO : 0);
    wr_u16(&w, 0);
  }
  if (w.err) {
    return -1;
  }
  *out_len = w.len;
  return 0;
}

/* ---- response parser ---- */

/* The fixed part of a resource record (RFC 1035 §4.1.3). */
struct rr_head {
  char owner[DNS_NAME_TEXT_MAX];
  uint16_t type, rclass;
  uint32_t ttl;     /* clamped per RFC 2181 §8 */
  uint32_t ttl_raw; /* as sent (OPT keeps flags there) */
  uint16_t rdlen;
  size_t rdata; /* offset of the RDATA */
};

static void *arena_alloc(struct dns_msg *m, size_t n) {
  if (DNS_MSG_ARENA_LEN - m->arena_len < n) {
    return NULL; /* cannot happen: see DNS_MSG_ARENA_LEN */
  }
  void *p = m->arena + m->arena_len;
  m->arena_len += n;
  return p;
}

static const char *arena_name(struct dns_msg *m, struct dns_reader *r,
                              const char *text) {
  size_t n = strlen(text) + 1;
  char *p = arena_alloc(m, n);
  if (p == NULL) {
    rd_fail(r, "arena full");
    return NULL;
  }
  memcpy(p, text, n);
  return p;
}

/* rr_head_read reads owner, type, class, TTL and RDLENGTH, and checks that
 * the RDATA lies within the message. */
static int rr_head_read(struct dns_reader *r, struct rr_head *h) {
  if (name_read_text(r, h->owner) != 0) {
    return -1;
  }
  h->type = rd_u16(r);
  h->rclass = rd_u16(r);
  h->ttl_raw = rd_u32(r);
  h->rdlen = rd_u16(r);
  h->ttl = h->ttl_raw > DNS_TTL_MAX_SIGNED ? 0 : h->ttl_raw; /* RFC 2181 §8 */
  h->rdata = r->pos;
  return rd_need(r, h->rdlen);
}

static int decoded_type(uint16_t type) {
  switch (type) {
  case DNS_TYPE_A:
  case DNS_TYPE_AAAA:
  case DNS_TYPE_CNAME:
  case DNS_TYPE_PTR:
  case DNS_TYPE_MX:
  case DNS_TYPE_TXT:
  case DNS_TYPE_SOA:
  case DNS_TYPE_TLSA:
    return 1;
  default:
    return 0;
  }
}

/* rdata_txt concatenates the character-strings of a TXT RDATA (RFC 1035
 * §3.3.14) into the arena. r is bounded to the RDATA. */
static int rdata_txt(struct dns_msg *m, struct dns_reader *r,
                     struct dns_rr *rr) {
  /* The strings hold fewer octets than the RDATA: one arena slice. */
  uint8_t *data = arena_alloc(m, r->end - r->pos);
  size_t n = 0;
  if (data == NULL) {
    return rd_fail(r, "arena full");
  }
  while (r->why == NULL && r->pos < r->end) {
    uint8_t len = rd_u8(r);
    const uint8_t *s = rd_bytes(r, len);
    if (s != NULL) {
      memcpy(data + n, s, len);
      n += len;
    }
  }
  rr->rd.txt.data = data;
  rr->rd.txt.data_len = n;
  return r->why == NULL ? 0 : -1;
}

/* rdata_tlsa: usage, selector, matching type, association data (RFC 6698
 * §2.1). */
static int rdata_tlsa(struct dns_msg *m, struct dns_reader *r,
                      struct dns_rr *rr) {
  rr->rd.tlsa.usage = rd_u8(r);
  rr->rd.tlsa.selector = rd_u8(r);
  rr->rd.tlsa.mtype = rd_u8(r);
  if (r->why != NULL) {
    return -1;
  }
  size_t n = r->end - r->pos;
  uint8_t *data = arena_alloc(m, n);
  if (data == NULL) {
    return rd_fail(r, "arena full");
  }
  memcpy(data, rd_bytes(r, n), n);
  rr->rd.tlsa.data = data;
  rr->rd.tlsa.data_len = n;
  return 0;
}

/* rdata_decode decodes the RDATA of a decoded type; r is bounded to the
 * RDATA and must be used up exactly. */
static int rdata_decode(struct dns_msg *m, struct dns_reader *r,
                        struct dns_rr *rr) {
  char name[DNS_NAME_TEXT_MAX];
  const uint8_t *p;
  switch (rr->type) {
  case DNS_TYPE_A:
    if ((p = rd_bytes(r, 4)) != NULL) {
      memcpy(rr->rd.a, p, 4);
    }
    break;
  case DNS_TYPE_AAAA:
    if ((p = rd_bytes(r, 16)) != NULL) {
      memcpy(rr->rd.aaaa, p, 16);
    }
    break;
  case DNS_TYPE_CNAME:
    if (name_read_text(r, name) == 0) {
      rr->rd.cname = arena_name(m, r, name);
    }
    break;
  case DNS_TYPE_PTR: /* §3.3.12: PTRDNAME */
    if (name_read_text(r, name) == 0) {
      rr->rd.ptr = arena_name(m, r, name);
    }
    break;
  case DNS_TYPE_MX: /* §3.3.9: PREFERENCE EXCHANGE */
    rr->rd.mx.pref = rd_u16(r);
    if (name_read_text(r, name) == 0) {
      rr->rd.mx.exchange = arena_name(m, r, name);
    }
    break;
  case DNS_TYPE_TXT:
    rdata_txt(m, r, rr);
    break;
  case DNS_TYPE_SOA: /* §3.3.13: MNAME RNAME SERIAL REFRESH RETRY EXPIRE
                        MINIMUM */
    name_read_text(r, name);
    name_read_text(r, name);
    rr->rd.soa.serial = rd_u32(r);
    rr->rd.soa.refresh = rd_u32(r);
    rr->rd.soa.retry = rd_u32(r);
    rr->rd.soa.expire = rd_u32(r);
    rr->rd.soa.minimum = rd_u32(r);
    break;
  case DNS_TYPE_TLSA:
    rdata_tlsa(m, r, rr);
    break;
  }
  if (r->why == NULL && r->pos != r->end) {
    return rd_fail(r, "RDATA longer than its record");
  }
  return r->why == NULL ? 0 : -1;
}

/* rr_read reads one answer or authority record; a decoded type goes into
 * kept[*num_kept] while there is room. */
static int rr_read(struct dns_msg *m, struct dns_reader *r, struct dns_rr *kept,
                   size_t max_kept, size_t *num_kept, size_t *num_dropped,
                   size_t *num_skipped) {
  struct rr_head h;
  if (rr_head_read(r, &h) != 0) {
    return -1;
  }
  if (h.type == DNS_TYPE_OPT) {
    return rd_fail(r, "OPT outside the additional section"); /* RFC 6891 */
  }
  r->pos += h.rdlen;
  if (h.rclass != DNS_CLASS_IN || !decoded_type(h.type)) {
    (*num_skipped)++;
    return 0;
  }
  if (*num_kept == max_kept) {
    (*num_dropped)++;
    return 0;
  }
  struct dns_rr *rr = &kept[*num_kept];
  memset(rr, 0, sizeof(*rr));
  rr->type = h.type;
  rr->rclass = h.rclass;
  rr->ttl = h.ttl;
  rr->owner = arena_name(m, r, h.owner);
  struct dns_reader sub = *r;
  sub.pos = h.rdata;
  sub.end = h.rdata + h.rdlen;
  if (rdata_decode(m, &sub, rr) != 0) {
    return rd_fail(r, sub.why);
  }
  (*num_kept)++;
  return r->why == NULL ? 0 : -1;
}

/* additional_read reads one additional record: only OPT is looked at
 * (RFC 6891 §6.1.1: one at most, owned by the root). */
static int additional_read(struct dns_msg *m, struct dns_reader *r) {
  struct rr_head h;
  if (rr_head_read(r, &h) != 0) {
    return -1;
  }
  r->pos += h.rdlen;
  if (h.type != DNS_TYPE_OPT) {
    return 0;
  }
  if (m->has_opt) {
    return rd_fail(r, "more than one OPT");
  }
  if (strcmp(h.owner, ".") != 0) {
    return rd_fail(r, "OPT not owned by the root");
  }
  m->has_opt = 1;
  m->udp_size = h.rclass;
  uint32_t ttl = h.ttl_raw;     /* §6.1.3: EXTENDED-RCODE VERSION DO Z */
  m->rcode |= (ttl >> 24) << 4; /* §6.1.3: the upper 8 of 12 bits */
  m->edns_version = (ttl >> 16) & 0xff;
  m->do_bit = (ttl & DNS_EDNS_DO) != 0;
  return 0;
}

static void header_read(struct dns_msg *m, struct dns_reader *r) {
  m->id = rd_u16(r);
  uint16_t f = rd_u16(r);
  m->qr = (f & DNS_FLAG_QR) != 0;
  m->opcode = (f >> 11) & 0xf;
  m->aa = (f & DNS_FLAG_AA) != 0;
  m->tc = (f & DNS_FLAG_TC) != 0;
  m->rd = (f & DNS_FLAG_RD) != 0;
  m->ra = (f & DNS_FLAG_RA) != 0;
  m->ad = (f & DNS_FLAG_AD) != 0;
  m->cd = (f & DNS_FLAG_CD) != 0;
  m->rcode = f & 0xf;
}

static int question_read(struct dns_msg *m, struct dns_reader *r) {
  if (name_read_text(r, m->qname) != 0) {
    return -1;
  }
  m->qtype = rd_u16(r);
  m->qclass = rd_u16(r);
  m->has_question = 1;
  return r->why == NULL ? 0 : -1;
}

int dns_msg_parse(struct dns_msg *out, const char **out_why, const uint8_t *in,
                  size_t in_len) {
  struct dns_reader r = {.msg = in, .len = in_len, .end = in_len};
  out->has_question = out->has_opt = 0;
  out->qname[0] = '\0';
  out->qtype = out->qclass = out->udp_size = 0;
  out->edns_version = 0;
  out->do_bit = 0;
  out->num_answer = out->num_answer_dropped = out->num_answer_skipped = 0;
  out->num_authority = out->num_authority_dropped = 0;
  out->arena_len = 0;
  if (in_len > DNS_MSG_MAX_LEN) {
    rd_fail(&r, "message longer than 65535 octets");
  }
  header_read(out, &r);
  uint16_t qdcount = rd_u16(&r), ancount = rd_u16(&r);
  uint16_t nscount = rd_u16(&r), arcount = rd_u16(&r);
  size_t ns_skipped = 0;
  if (r.why == NULL && qdcount > 1) {
    rd_fail(&r, "more than one question");
  }
  if (r.why == NULL && qdcount == 1) {
    question_read(out, &r);
  }
  for (unsigned i = 0; r.why == NULL && i < ancount; i++) {
    rr_read(out, &r, out->answer, DNS_MSG_MAX_ANSWER, &out->num_answer,
            &out->num_answer_dropped, &out->num_answer_skipped);
  }
  for (unsigned i = 0; r.why == NULL && i < nscount; i++) {
    rr_read(out, &r, out->authority, DNS_MSG_MAX_AUTHORITY, &out->num_authority,
            &out->num_authority_dropped, &ns_skipped);
  }
  for (unsigned i = 0; r.why == NULL && i < arcount; i++) {
    additional_read(out, &r);
  }
  if (r.why == NULL && r.pos != in_len) {
    rd_fail(&r, "bytes after the last record");
  }
  if (r.why != NULL) {
    *out_why = r.why;
    return -1;
  }
  return 0;
}

/* ---- reading a parsed message ---- */

static void rrset_collect(struct dns_rrset *out, const struct dns_msg *m,
                          const char *owner, uint16_t qtype) {
  for (size_t i = 0; i < m->num_answer; i++) {
    const struct dns_rr *rr = &m->answer[i];
    if (rr->type == qtype && dns_name_equal(rr->owner, owner)) {
      out->rrs[out->num_rrs++] = rr;
      out->ttl = rr->ttl < out->ttl ? rr->ttl : out->ttl;
    }
  }
}

static const struct dns_rr *cname_at(const struct dns_msg *m,
                                     const char *owner) {
  for (size_t i = 0; i < m->num_answer; i++) {
    const struct dns_rr *rr = &m->answer[i];
    if (rr->type == DNS_TYPE_CNAME && dns_name_equal(rr->owner, owner)) {
      return rr;
    }
  }
  return NULL;
}

enum dns_chain dns_msg_rrset(struct dns_rrset *out, const struct dns_msg *m,
                             const char *qname, uint16_t qtype) {
  const char *owner = qname;
  out->num_cnames = 0;
  out->num_rrs = 0;
  out->ttl = UINT32_MAX;
  for (;;) {
    out->owner = owner;
    rrset_collect(out, m, owner, qtype);
    if (out->num_rrs > 0) {
      return DNS_CHAIN_FOUND;
    }
    const struct dns_rr *alias =
        qtype == DNS_TYPE_CNAME ? NULL : cname_at(m, owner);
    if (alias == NULL) {
      return DNS_CHAIN_EMPTY;
    }
    if (out->num_cnames == DNS_MSG_MAX_CNAME) {
      return DNS_CHAIN_LOOP; /* a loop ends here too, after 8 links */
    }
    out->num_cnames++;
    out->ttl = alias->ttl < out->ttl ? alias->ttl : out->ttl;
    owner = alias->rd.cname;
  }
}

int dns_msg_negative_ttl(const struct dns_msg *m, uint32_t *out_ttl) {
  for (size_t i = 0; i < m->num_authority; i++) {
    const struct dns_rr *rr = &m->authority[i];
    if (rr->type == DNS_TYPE_SOA) {
      *out_ttl = rr->ttl < rr->rd.soa.minimum ? rr->ttl : rr->rd.soa.minimum;
      return 1;
    }
  }
  return 0;
}

const char *dns_type_name(uint16_t type, char buf[16]) {
  static const struct {
    uint16_t type;
    const char *name;
  } names[] = {
      {DNS_TYPE_A, "A"},         {DNS_TYPE_NS, "NS"},
      {DNS_TYPE_CNAME, "CNAME"}, {DNS_TYPE_SOA, "SOA"},
      {DNS_TYPE_PTR, "PTR"},     {DNS_TYPE_MX, "MX"},
      {DNS_TYPE_TXT, "TXT"},     {DNS_TYPE_AAAA, "AAAA"},
      {DNS_TYPE_OPT, "OPT"},     {DNS_TYPE_RRSIG, "RRSIG"},
      {DNS_TYPE_TLSA, "TLSA"},
  };
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    if (names[i].type == type) {
      return names[i].name;
    }
  }
  snprintf(buf, 16, "TYPE%u", type);
  return buf;
}

const struct dns_rr *dns_msg_txt_one(const struct dns_rr *rrs, size_t num_rrs,
                                     int (*is_kind)(const uint8_t *text,
                                                    size_t text_len),
                                     size_t *out_num) {
  const struct dns_rr *found = NULL;
  *out_num = 0;
  for (size_t i = 0; i < num_rrs; i++) {
    if (rrs[i].type == DNS_TYPE_TXT &&
        is_kind(rrs[i].rd.txt.data, rrs[i].rd.txt.data_len)) {
      found = &rrs[i];
      (*out_num)++;
    }
  }
  return found;
}
