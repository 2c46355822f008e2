/* proto/smtp_client.c — sans-I/O SMTP client engine; see smtp_client.h.
 *
 * Commands whose replies are still due sit in a FIFO (`expect`), in the
 * order they were sent; a reply always answers the FIFO's head (RFC 2920
 * §3.2: replies come in command order). Each command has one entry in the
 * command table: its name for messages, its RFC 5321 §4.5.3.2 timeout and
 * its reply handler. The session state says what the client is doing
 * (waiting, streaming a body, draining leftover replies); handlers look at
 * it to tell a reply that matters from the leftover of a group whose
 * outcome is already known.
 *
 * LMTP (RFC 2033) differs in two places: LHLO greets (no HELO fallback),
 * and the end of data is answered once per accepted recipient (§4.2,
 * §4.3 for BDAT LAST). The first of those replies answers the "." or BDAT
 * LAST entry; each one then queues one LMTP_DATA entry for the next
 * accepted recipient, so the FIFO still holds one entry per reply due and
 * a server that stops early leaves the rest open (deferred by the 421,
 * EOF or timeout that follows).
 *
 * STARTTLS (RFC 3207) sits between the greeting and READY: the EHLO or
 * LHLO reply leads to STARTTLS or to READY (smtp_client_after_hello), a
 * 2xx to STARTTLS to the TLS state, where the engine waits for the host's
 * handshake and reads nothing (bytes arriving then were sent in clear
 * after the 220: an injection, see the header), and tls_started() to a
 * second EHLO, whose reply replaces every capability.
 *
 * Input is kept in `in` and consumed by advancing `in_off`, output in `out`
 * drained by `out_off`, as in smtp_server.c. The body is turned into wire
 * form (CRLF line ends, dot-stuffing) only as output drains, never more
 * than limits.max_output ahead; a body in wire form already (most are) is
 * found so by one scan and copied as it is. */
#include "proto/smtp_client.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "core/buf.h"

enum smtp_client_state {
  SMTP_CLIENT_STATE_GREETING, /* waiting for the 220 */
  SMTP_CLIENT_STATE_HELLO,    /* EHLO, HELO, LHLO or STARTTLS sent */
  SMTP_CLIENT_STATE_TLS,      /* 220 to STARTTLS: the host's handshake */
  SMTP_CLIENT_STATE_READY,    /* between transactions */
  SMTP_CLIENT_STATE_ENVELOPE, /* MAIL, RCPT, DATA replies due */
  SMTP_CLIENT_STATE_BODY,     /* streaming DATA text */
  SMTP_CLIENT_STATE_CHUNKS,   /* streaming BDAT chunks */
  SMTP_CLIENT_STATE_END,      /* body sent; end-of-data reply due */
  SMTP_CLIENT_STATE_DRAIN,    /* outcome known; leftover replies, RSET */
  SMTP_CLIENT_STATE_QUIT,     /* QUIT sent; waiting for 221 or EOF */
  SMTP_CLIENT_STATE_CLOSED,   /* EV_CLOSED owed; input is ignored */
};

enum smtp_client_cmd {
  SMTP_CLIENT_CMD_GREETING,
  SMTP_CLIENT_CMD_EHLO,
  SMTP_CLIENT_CMD_HELO,
  SMTP_CLIENT_CMD_MAIL,
  SMTP_CLIENT_CMD_RCPT, /* arg: recipient index */
  SMTP_CLIENT_CMD_DATA,
  SMTP_CLIENT_CMD_DOT,  /* arg: 1 for a lone "." whose reply is ignored */
  SMTP_CLIENT_CMD_BDAT, /* arg: 1 for BDAT ... LAST */
  SMTP_CLIENT_CMD_RSET,
  SMTP_CLIENT_CMD_QUIT,
  SMTP_CLIENT_CMD_LHLO,
  SMTP_CLIENT_CMD_LMTP_DATA, /* arg: recipient index; one per accepted
                                recipient after the first */
  SMTP_CLIENT_CMD_STARTTLS,
};

struct smtp_client_expect {
  uint8_t cmd;
  uint32_t arg;
};

/* BDAT chunks in flight when pipelining (RFC 3030 §4.2). */
#define SMTP_CLIENT_BDAT_WINDOW 4
#define SMTP_CLIENT_MAX_ENVID 100 /* RFC 3461 §4.4 */
#define SMTP_CLIENT_MAX_ORCPT 500 /* RFC 3461 §4.2 */

/* Enhanced codes of the local TLS replies (RFC 3463 §3.8). X.7.4
 * "security features not supported" when TLS is required but cannot be
 * had (as Postfix), X.7.5 "cryptographic failure" when the handshake or
 * the TLS layer failed; X.7.30 "REQUIRETLS support required" (RFC 8689
 * §5). X.7.10 "encryption needed" is AUTH's (RFC 4954), not used. */
#define SMTP_CLIENT_ENH_TLS_REQUIRED "4.7.4"
#define SMTP_CLIENT_ENH_TLS_FAILED "4.7.5"
#define SMTP_CLIENT_ENH_REQUIRETLS "5.7.30"

/* A stored reply: its text lives in the session's text arena. */
struct smtp_client_ref {
  int code;
  uint8_t local;
  char enhanced[SMTP_REPLY_MAX_ENHANCED];
  uint32_t off, len;
};

struct smtp_client_rcpt_state {
  uint8_t status;   /* enum smtp_client_status */
  uint8_t has_own;  /* its RCPT reply arrived (own) */
  uint8_t refused;  /* and refused it: own decides the outcome */
  uint8_t has_data; /* LMTP: its own end-of-data reply arrived (data) */
  struct smtp_client_ref own;
  struct smtp_client_ref data;
};

/* Read position in the body and the line state of its wire form. */
struct smtp_client_body {
  const struct smtp_client_span *spans;
  size_t num_spans;
  size_t span, off;
  int line_start; /* the next octet starts a line (dot-stuffing) */
  int pending_cr; /* a CR was read; an LF may complete it */
  int ended;      /* every octet read and the last line ended */
  int plain;      /* in wire form already: copied as it is */
};

struct smtp_client_txn {
  struct smtp_client_message msg; /* shallow: the host's memory */
  struct smtp_client_rcpt_state *rcpts;
  size_t rcpts_cap;
  size_t num_decided;  /* recipients 0..n-1 have their RCPT verdict */
  size_t num_reported; /* RCPT_RESULT events given */
  size_t num_accepted;
  int done;          /* the outcome is final */
  int done_reported; /* MESSAGE_DONE given */
  int rset_needed;   /* the server may hold an open transaction */
  int pipelining;    /* this transaction pipelines */
  int use_bdat;
  int body_8bit; /* send BODY=8BITMIME */
  int smtputf8;  /* send SMTPUTF8 */
  int plain;     /* the body is in wire form already (body_scan) */
  size_t size;   /* octets in wire form, before dot-stuffing */
  size_t bdat_outstanding;
  struct smtp_client_body body;
  struct smtp_reply refusal; /* the last RCPT refusal */
};

struct smtp_client {
  char *helo_name;
  int lmtp; /* RFC 2033: LHLO, a reply per recipient after the data */
  enum smtp_client_tls_mode tls_mode;
  int tls_active; /* inside TLS: from the start, or after tls_started */
  int tls_owed;   /* EV_STARTTLS is due */
  unsigned use_ext;
  size_t chunk_size;
  struct smtp_client_limits lim;

  enum smtp_client_state state;
  struct buf in;
  size_t in_off;
  struct buf out;
  size_t out_off;
  struct buf chunk; /* the BDAT chunk being built */
  struct buf texts; /* text arena of the recipients' replies */
  int failed;       /* allocation failed: sticky, the session ends */

  struct smtp_client_expect *expect;
  size_t exp_head, exp_len, exp_cap;

  struct smtp_reply acc;   /* the reply being read */
  struct smtp_reply last;  /* the last complete reply */
  struct smtp_reply event; /* the reply behind the last event */
  size_t event_rcpt;

  unsigned ext; /* announced in EHLO */
  size_t size_limit;
  int esmtp;
  unsigned ehlo_ext; /* collected while the EHLO reply is read */
  size_t ehlo_size;

  int ready_owed;
  int quit_wanted;
  enum smtp_client_error err;
  struct smtp_reply err_reply;
  int err_owed;

  int txn_active; /* a message was started; its results stay readable */
  struct smtp_client_txn txn;
  struct smtp_reply msg_reply;
};

/* ---- output and the expect FIFO ---------------------------------------- */

static size_t smtp_client_out_pending(const struct smtp_client *c) {
  return c->out.len - c->out_off;
}

static void smtp_client_out(struct smtp_client *c, const void *p, size_t n) {
  if (buf_append(&c->out, p, n) != 0) {
    c->failed = 1;
  }
}

static void smtp_client_out_str(struct smtp_client *c, const char *s) {
  smtp_client_out(c, s, strlen(s));
}

static void smtp_client_push(struct smtp_client *c, enum smtp_client_cmd cmd,
                             uint32_t arg) {
  if (c->exp_head + c->exp_len == c->exp_cap) {
    if (c->exp_head > 0) {
      memmove(c->expect, c->expect + c->exp_head,
              c->exp_len * sizeof(*c->expect));
      c->exp_head = 0;
    }
    if (c->exp_len == c->exp_cap) {
      size_t cap = c->exp_cap ? c->exp_cap * 2 : 16;
      struct smtp_client_expect *e = realloc(c->expect, cap * sizeof(*e));
      if (e == NULL) {
        c->failed = 1;
        return;
      }
      c->expect = e;
      c->exp_cap = cap;
    }
  }
  c->expect[c->exp_head + c->exp_len] =
      (struct smtp_client_expect){.cmd = (uint8_t)cmd, .arg = arg};
  c->exp_len++;
}

static struct smtp_client_expect smtp_client_pop(struct smtp_client *c) {
  struct smtp_client_expect e = c->expect[c->exp_head];
  c->exp_head++;
  c->exp_len--;
  if (c->exp_len == 0) {
    c->exp_head = 0;
  }
  return e;
}

/* Sends one command line (without its CRLF) and expects its reply. */
static void smtp_client_command(struct smtp_client *c, const char *line,
                                enum smtp_client_cmd cmd, uint32_t arg) {
  smtp_client_out_str(c, line);
  smtp_client_out(c, "\r\n", 2);
  smtp_client_push(c, cmd, arg);
}

static int smtp_client_uses(const struct smtp_client *c, unsigned ext) {
  return (c->ext & c->use_ext & ext) != 0;
}

/* ---- the body in wire form ----------------------------------------------
 * RFC 5321 §2.3.8: CR and LF only as CRLF, so a bare CR or LF becomes CRLF
 * and a last line without one gets it; §4.5.2: in DATA a line starting
 * with "." gets another. */

/* Where wire octets go: a buffer, or nowhere (out NULL) to count them. */
struct smtp_client_sink {
  struct buf *out;
  size_t n;
  int failed;
};

static void smtp_client_sink_put(struct smtp_client_sink *k, const void *p,
                                 size_t n) {
  if (k->out != NULL && buf_append(k->out, p, n) != 0) {
    k->failed = 1;
  }
  k->n += n;
}

/* plain: smtp_client_body_scan found the body in wire form already. */
static void smtp_client_body_init(struct smtp_client_body *b,
                                  const struct smtp_client_message *m,
                                  int plain) {
  memset(b, 0, sizeof(*b));
  b->spans = m->body;
  b->num_spans = m->num_body;
  b->line_start = 1;
  b->plain = plain;
}

/* ---- plain bodies ---------------------------------------------------------
 * Most spooled bodies are in wire form already: CR and LF only as CRLF, no
 * line starting with ".", and empty or ending in CRLF. Such a body is
 * "plain": its SIZE is its length, DATA and BDAT send its octets as they
 * are, and one pass over it (smtp_client_body_scan, 16 octets at a time)
 * tells so and finds 8-bit octets too. Walking it line by line three times
 * (SIZE, 8-bit, sending) was most of the CPU spent on a large message. */

/* What one scan of a body found. */
struct smtp_client_body_kind {
  int plain;    /* in wire form already; see above */
  int has_8bit; /* an octet >= 0x80 */
  size_t len;   /* octets in all spans */
};

/* The scan's state between octets and spans. Every rule is about an octet
 * and the one before it, so that is all it carries. */
struct smtp_client_scan {
  unsigned bad;  /* nonzero: not plain */
  unsigned high; /* its 0x80 bit set: an 8-bit octet was seen */
  uint8_t last;  /* the octet before; '\n' at the body's start (a line
                    starts there, and it follows no CR) */
};

/* Nonzero if octet c after octet prev breaks a rule: an LF after each CR
 * and nowhere else (RFC 5321 §2.3.8), no "." starting a line (§4.5.2: it
 * would need stuffing). The loops below check the same, many at once. */
static unsigned smtp_client_scan_pair(uint8_t prev, uint8_t c) {
  return (unsigned)((c == '\n') ^ (prev == '\r')) |
         (unsigned)((c == '.') & (prev == '\n'));
}

/* Octets p[from..n) (from >= 1) one at a time: the last few. */
static void smtp_client_scan_bytes(struct smtp_client_scan *s, const uint8_t *p,
                                   size_t from, size_t n) {
  unsigned bad = 0, high = 0;
  for (size_t i = from; i < n; i++) {
    bad |= smtp_client_scan_pair(p[i - 1], p[i]);
    high |= p[i];
  }
  s->bad |= bad;
  s->high |= high & 0x80;
}

/* The 0x80 bit of each octet of w that equals c. Exact: unlike the usual
 * has-zero trick no carry crosses octets, as (x & 0x7f) + 0x7f < 0x100. */
static uint64_t smtp_client_swar_eq(uint64_t w, uint8_t c) {
  const uint64_t low7 = 0x7f7f7f7f7f7f7f7fULL;
  uint64_t x = w ^ (0x0101010101010101ULL * c);
  return ~(((x & low7) + low7) | x) & ~low7;
}

/* Octets p[from..) (from >= 1) eight at a time in a word, each against the
 * one before it (a second load one octet back): the portable loop, for
 * targets without SSE2, where one octet at a time cost more than the line
 * walk it replaces. Either byte order works, as both loads match lanes.
 * Returns where it stopped (the rest is under 8). */
static size_t smtp_client_scan_words(struct smtp_client_scan *s,
                                     const uint8_t *p, size_t from, size_t n) {
  uint64_t bad = 0, high = 0;
  size_t i = from;
  for (; n - i >= 8; i += 8) {
    uint64_t w, prev;
    memcpy(&w, p + i, sizeof(w));
    memcpy(&prev, p + i - 1, sizeof(prev));
    bad |= (smtp_client_swar_eq(w, '\n') ^ smtp_client_swar_eq(prev, '\r')) |
           (smtp_client_swar_eq(w, '.') & smtp_client_swar_eq(prev, '\n'));
    high |= w;
  }
  s->bad |= bad != 0;
  s->high |= (high & 0x8080808080808080ULL) != 0 ? 0x80 : 0;
  return i;
}

#if defined(__SSE2__)
/* The rules for the 16 octets at p against the 16 at p - 1, as a mask of
 * 0xff octets where one is broken; ORs the octets into *high. */
static __m128i smtp_client_scan_16(const uint8_t *p, __m128i *high) {
  __m128i v = _mm_loadu_si128((const __m128i *)p);
  __m128i prev = _mm_loadu_si128((const __m128i *)(p - 1));
  __m128i lf = _mm_cmpeq_epi8(v, _mm_set1_epi8('\n'));
  __m128i after_cr = _mm_cmpeq_epi8(prev, _mm_set1_epi8('\r'));
  __m128i dot = _mm_cmpeq_epi8(v, _mm_set1_epi8('.'));
  __m128i after_lf = _mm_cmpeq_epi8(prev, _mm_set1_epi8('\n'));
  *high = _mm_or_si128(*high, v);
  return _mm_or_si128(_mm_xor_si128(lf, after_cr),
                      _mm_and_si128(dot, after_lf));
}

/* Octets p[from..) (from >= 1), 64 and then 16 at a time, each against
 * the one before it: a second load one octet back, which stays inside the
 * span as from >= 1. Returns where it stopped (the rest is under 16). */
static size_t smtp_client_scan_sse2(struct smtp_client_scan *s,
                                    const uint8_t *p, size_t from, size_t n) {
  __m128i bad = _mm_setzero_si128();
  __m128i high = _mm_setzero_si128();
  size_t i = from;
  for (; n - i >= 64; i += 64) {
    __m128i b0 = smtp_client_scan_16(p + i, &high);
    __m128i b1 = smtp_client_scan_16(p + i + 16, &high);
    __m128i b2 = smtp_client_scan_16(p + i + 32, &high);
    __m128i b3 = smtp_client_scan_16(p + i + 48, &high);
    bad = _mm_or_si128(
        bad, _mm_or_si128(_mm_or_si128(b0, b1), _mm_or_si128(b2, b3)));
  }
  for (; n - i >= 16; i += 16) {
    bad = _mm_or_si128(bad, smtp_client_scan_16(p + i, &high));
  }
  s->bad |= (unsigned)_mm_movemask_epi8(bad);
  s->high |= (unsigned)_mm_movemask_epi8(high) != 0 ? 0x80 : 0;
  return i;
}
#endif

/* One span, carrying the state over from the span before. */
static void smtp_client_scan_span(struct smtp_client_scan *s, const uint8_t *p,
                                  size_t n) {
  if (n == 0) {
    return;
  }
  s->bad |= smtp_client_scan_pair(s->last, p[0]);
  s->high |= p[0] & 0x80;
  size_t done = 1;
#if defined(__SSE2__)
  done = smtp_client_scan_sse2(s, p, done, n);
#endif
  done = smtp_client_scan_words(s, p, done, n);
  smtp_client_scan_bytes(s, p, done, n);
  s->last = p[n - 1];
}

/* Scans every span of m once. */
static void smtp_client_body_scan(struct smtp_client_body_kind *out,
                                  const struct smtp_client_message *m) {
  struct smtp_client_scan s = {.last = '\n'};
  size_t len = 0;
  for (size_t i = 0; i < m->num_body; i++) {
    smtp_client_scan_span(&s, m->body[i].data, m->body[i].len);
    len += m->body[i].len;
  }
  /* Empty, or ends with CRLF (an LF follows a CR, or bad is set). */
  out->plain = s.bad == 0 && s.last == '\n';
  out->has_8bit = s.high != 0;
  out->len = len;
}

/* smtp_client_body_next: the octets of the current span not read yet
 * (never none), moving past spans read to their end; NULL when every span
 * is read. */
static const uint8_t *smtp_client_body_next(struct smtp_client_body *b,
                                            size_t *out_n) {
  while (b->span < b->num_spans) {
    const struct smtp_client_span *s = &b->spans[b->span];
    if (b->off < s->len) {
      *out_n = s->len - b->off;
      return s->data + b->off;
    }
    b->span++;
    b->off = 0;
  }
  return NULL;
}

/* smtp_client_body_fill for a plain body: its octets are its wire form, so
 * they are copied in runs, never looked at. It stops where body_fill would,
 * so BDAT chunks come out the same size: at `max`, except that a CRLF cut
 * there is finished (body_fill writes CRLF as one, passing max by 1), and
 * a body ending right at `max` ends on the next call, with no octets. */
static void smtp_client_body_fill_plain(struct smtp_client_body *b,
                                        struct smtp_client_sink *k,
                                        size_t max) {
  while (!b->ended) {
    if (b->span == b->num_spans) {
      b->ended = 1;
      return;
    }
    if (k->n >= max && !b->pending_cr) {
      return;
    }
    size_t n;
    const uint8_t *p = smtp_client_body_next(b, &n);
    if (p == NULL) {
      continue; /* only empty spans were left: the end */
    }
    size_t room = k->n < max ? max - k->n : 1; /* 1: the LF of a cut CRLF */
    n = n < room ? n : room;
    smtp_client_sink_put(k, p, n);
    b->off += n;
    b->pending_cr = p[n - 1] == '\r'; /* its LF must follow */
  }
}

/* Emits one line end and notes it. */
static void smtp_client_body_eol(struct smtp_client_body *b,
                                 struct smtp_client_sink *k) {
  smtp_client_sink_put(k, "\r\n", 2);
  b->line_start = 1;
}

/* Produces wire octets until about `max` are in the sink (a line end or a
 * stuffed dot may pass it by 2) or the body has ended. */
static void smtp_client_body_fill(struct smtp_client_body *b,
                                  struct smtp_client_sink *k, size_t max,
                                  int stuff) {
  if (b->plain) {
    smtp_client_body_fill_plain(b, k, max); /* no line work to do */
    return;
  }
  while (!b->ended) {
    if (b->span == b->num_spans) {
      if (b->pending_cr || !b->line_start) {
        smtp_client_body_eol(b, k); /* the missing final CRLF */
      }
      b->pending_cr = 0;
      b->ended = 1;
      return;
    }
    if (k->n >= max) {
      return;
    }
    size_t avail;
    const uint8_t *p = smtp_client_body_next(b, &avail);
    if (p == NULL) {
      continue; /* only empty spans were left: the end */
    }
    if (b->pending_cr) {
      b->pending_cr = 0; /* CRLF, or a bare CR: one CRLF either way */
      smtp_client_body_eol(b, k);
      b->off += p[0] == '\n';
      continue;
    }
    if (p[0] == '\r' || p[0] == '\n') {
      b->pending_cr = p[0] == '\r';
      if (p[0] == '\n') {
        smtp_client_body_eol(b, k); /* a bare LF */
      }
      b->off++;
      continue;
    }
    if (b->line_start && stuff && p[0] == '.') {
      smtp_client_sink_put(k, ".", 1);
    }
    b->line_start = 0;
    size_t room = max > k->n ? max - k->n : 1;
    size_t lim = avail < room ? avail : room;
    /* The run up to the next CR or LF, found with memchr (vectorised in
     * libc): the byte-at-a-time loop was most of the CPU spent on a large
     * message. p[0] is neither. */
    size_t i = lim;
    const uint8_t *cr = memchr(p + 1, '\r', lim - 1);
    if (cr != NULL) {
      i = (size_t)(cr - p);
    }
    const uint8_t *lf = memchr(p + 1, '\n', i - 1);
    if (lf != NULL) {
      i = (size_t)(lf - p);
    }
    smtp_client_sink_put(k, p, i);
    b->off += i;
  }
}

/* The SIZE of RFC 1870 §3: wire octets without dot-stuffing. For a body
 * that is not plain; a plain one's is its length. */
static size_t smtp_client_body_size(const struct smtp_client_message *m) {
  struct smtp_client_body b;
  struct smtp_client_sink k = {0};
  smtp_client_body_init(&b, m, 0);
  smtp_client_body_fill(&b, &k, SIZE_MAX, 0);
  return k.n;
}

/* ---- stored replies ----------------------------------------------------- */

static struct smtp_client_ref
smtp_client_ref_store(struct smtp_client *c, const struct smtp_reply *r) {
  struct smtp_client_ref ref = {.code = r->code, .local = (uint8_t)r->local};
  memcpy(ref.enhanced, r->enhanced, sizeof(ref.enhanced));
  size_t n = strlen(r->text);
  if (c->texts.len > UINT32_MAX - n) {
    c->failed = 1; /* over 4 GiB of reply text: something is very wrong */
    return ref;
  }
  ref.off = (uint32_t)c->texts.len;
  if (buf_append(&c->texts, r->text, n) != 0) {
    c->failed = 1;
    return ref;
  }
  ref.len = (uint32_t)n;
  return ref;
}

static void smtp_client_ref_load(const struct smtp_client *c,
                                 const struct smtp_client_ref *ref,
                                 struct smtp_reply *out) {
  smtp_reply_init(out);
  out->code = ref->code;
  out->local = ref->local;
  out->num_lines = 1;
  memcpy(out->enhanced, ref->enhanced, sizeof(out->enhanced));
  if (ref->len > 0) {
    memcpy(out->text, c->texts.data + ref->off, ref->len);
  }
  out->text[ref->len] = '\0';
}

/* ---- session end and states --------------------------------------------- */

static enum smtp_client_status smtp_client_status_of(const struct smtp_reply *r,
                                                     int ok_possible) {
  int cls = smtp_reply_class(r);
  if (cls == 2 && ok_possible) {
    return SMTP_CLIENT_OK;
  }
  return cls == 5 ? SMTP_CLIENT_FAIL : SMTP_CLIENT_DEFER;
}

/* The message's outcome is final: r decides every recipient still open
 * (not refused at RCPT) with status st. */
static void smtp_client_msg_finish(struct smtp_client *c,
                                   const struct smtp_reply *r,
                                   enum smtp_client_status st) {
  struct smtp_client_txn *t = &c->txn;
  t->done = 1;
  c->msg_reply = *r;
  for (size_t i = 0; i < t->msg.num_rcpts; i++) {
    struct smtp_client_rcpt_state *rs = &t->rcpts[i];
    if (i >= t->num_decided || rs->status == SMTP_CLIENT_ACCEPTED) {
      rs->status = (uint8_t)st;
    }
  }
  t->num_decided = t->msg.num_rcpts;
  if (c->state >= SMTP_CLIENT_STATE_ENVELOPE &&
      c->state <= SMTP_CLIENT_STATE_END) {
    c->state = SMTP_CLIENT_STATE_DRAIN;
  }
}

/* Idle: the host hears READY, or QUIT goes out if it asked for it. */
static void smtp_client_enter_ready(struct smtp_client *c) {
  if (c->quit_wanted) {
    smtp_client_command(c, "QUIT", SMTP_CLIENT_CMD_QUIT, 0);
    c->state = SMTP_CLIENT_STATE_QUIT;
    return;
  }
  c->state = SMTP_CLIENT_STATE_READY;
  c->ready_owed = 1;
}

static void smtp_client_enter_closed(struct smtp_client *c) {
  c->state = SMTP_CLIENT_STATE_CLOSED;
  c->exp_len = 0;
  c->exp_head = 0;
  c->ready_owed = 0;
  c->tls_owed = 0;
}

/* Ends the session with error class cls and reply r: an open message's
 * recipients are decided by r (deferred: r is 4xx here), then QUIT goes
 * out (the server is sane, just unwilling) or the session closes at once. */
static void smtp_client_fail(struct smtp_client *c, enum smtp_client_error cls,
                             const struct smtp_reply *r, int quit) {
  if (c->state == SMTP_CLIENT_STATE_CLOSED) {
    return;
  }
  if (c->txn_active && !c->txn.done) {
    smtp_client_msg_finish(c, r, SMTP_CLIENT_DEFER);
  }
  if (c->err == SMTP_CLIENT_ERR_NONE) {
    c->err = cls;
    c->err_reply = *r;
    c->err_owed = 1;
  }
  c->ready_owed = 0;
  c->tls_owed = 0;
  if (quit && c->state != SMTP_CLIENT_STATE_QUIT) {
    smtp_client_command(c, "QUIT", SMTP_CLIENT_CMD_QUIT, 0);
    c->state = SMTP_CLIENT_STATE_QUIT;
  } else if (!quit) {
    smtp_client_enter_closed(c);
  }
}

static void smtp_client_waiting_for(const struct smtp_client *c, char *out,
                                    size_t cap);

/* A local 451 reply naming what the client was doing. */
static void smtp_client_local_reply(const struct smtp_client *c,
                                    struct smtp_reply *out,
                                    const char *enhanced, const char *what) {
  char text[SMTP_REPLY_MAX_TEXT], doing[64];
  smtp_client_waiting_for(c, doing, sizeof(doing));
  snprintf(text, sizeof(text), "%s %s", what, doing);
  smtp_reply_set(out, 451, enhanced, text);
}

/* The server's bytes were not SMTP: defer what is open and close. */
static void smtp_client_protocol_error(struct smtp_client *c, const char *why) {
  struct smtp_reply r;
  char what[128];
  if (c->state == SMTP_CLIENT_STATE_QUIT) {
    smtp_client_enter_closed(c); /* nothing is lost after QUIT */
    return;
  }
  snprintf(what, sizeof(what), "protocol error: %s", why);
  smtp_client_local_reply(c, &r, "4.5.0", what);
  smtp_client_fail(c, SMTP_CLIENT_ERR_PROTOCOL, &r, 0);
}

/* The outcome is known and the FIFO is empty: RSET if the server may hold
 * an open transaction, then idle. */
static void smtp_client_settle(struct smtp_client *c) {
  if (c->state != SMTP_CLIENT_STATE_DRAIN || c->exp_len > 0) {
    return;
  }
  if (c->txn_active && c->txn.rset_needed && !c->quit_wanted) {
    c->txn.rset_needed = 0;
    smtp_client_command(c, "RSET", SMTP_CLIENT_CMD_RSET, 0);
    return;
  }
  smtp_client_enter_ready(c);
}

/* ---- MAIL and RCPT command lines --------------------------------------- */

/* RFC 3461 §4: xtext, '+' and '=' and anything outside 33..126 as +XX. */
static void smtp_client_xtext(struct buf *b, const char *s, int *failed) {
  for (const uint8_t *p = (const uint8_t *)s; *p != '\0'; p++) {
    int r = (*p >= 33 && *p <= 126 && *p != '+' && *p != '=')
                ? buf_append(b, p, 1)
                : buf_printf(b, "+%02X", *p);
    if (r != 0) {
      *failed = 1;
    }
  }
}

/* MAIL FROM:<sender> with the parameters the server offered. */
static void smtp_client_send_mail(struct smtp_client *c) {
  const struct smtp_client_txn *t = &c->txn;
  const struct smtp_client_message *m = &t->msg;
  struct buf line = {0};
  int bad = buf_printf(&line, "MAIL FROM:<%s>", m->sender) != 0;
  if (smtp_client_uses(c, SMTP_CLIENT_EXT_SIZE)) {
    bad |= buf_printf(&line, " SIZE=%zu", t->size) != 0;
  }
  if (t->body_8bit) {
    bad |= buf_append_str(&line, " BODY=8BITMIME") != 0;
  }
  if (t->smtputf8) {
    bad |= buf_append_str(&line, " SMTPUTF8") != 0;
  }
  if (m->requiretls) {
    /* RFC 8689 §3: no value; refuse_early made sure it may be sent. */
    bad |= buf_append_str(&line, " REQUIRETLS") != 0;
  }
  if (smtp_client_uses(c, SMTP_CLIENT_EXT_DSN)) {
    if (m->ret != SMTP_RET_NONE) {
      bad |= buf_append_str(&line, m->ret == SMTP_RET_FULL ? " RET=FULL"
                                                           : " RET=HDRS") != 0;
    }
    if (m->envid != NULL && m->envid[0] != '\0') {
      size_t mark = line.len;
      bad |= buf_append_str(&line, " ENVID=") != 0;
      smtp_client_xtext(&line, m->envid, &bad);
      if (line.len - mark - 7 > SMTP_CLIENT_MAX_ENVID) {
        line.len = mark; /* over RFC 3461's limit: left out, not cut */
      }
    }
  }
  bad |= buf_append(&line, "", 1) != 0;
  if (bad) {
    c->failed = 1;
  } else {
    smtp_client_command(c, (const char *)line.data, SMTP_CLIENT_CMD_MAIL, 0);
  }
  buf_free(&line);
}

/* RFC 3461 §4.1 NOTIFY=NEVER or a list. */
static int smtp_client_notify(struct buf *b, unsigned notify) {
  if (notify & SMTP_NOTIFY_NEVER) {
    return buf_append_str(b, " NOTIFY=NEVER");
  }
  static const struct {
    unsigned bit;
    const char *word;
  } words[] = {{SMTP_NOTIFY_SUCCESS, "SUCCESS"},
               {SMTP_NOTIFY_FAILURE, "FAILURE"},
               {SMTP_NOTIFY_DELAY, "DELAY"}};
  int r = 0, first = 1;
  for (size_t i = 0; i < 3; i++) {
    if (notify & words[i].bit) {
      r |= buf_printf(b, "%s%s", first ? " NOTIFY=" : ",", words[i].word);
      first = 0;
    }
  }
  return r;
}

/* RCPT TO:<addr> with NOTIFY and ORCPT when DSN is offered. */
static void smtp_client_send_rcpt(struct smtp_client *c, size_t i) {
  const struct smtp_client_rcpt *rc = &c->txn.msg.rcpts[i];
  struct buf line = {0};
  int bad = buf_printf(&line, "RCPT TO:<%s>", rc->addr) != 0;
  if (smtp_client_uses(c, SMTP_CLIENT_EXT_DSN)) {
    bad |= smtp_client_notify(&line, rc->notify) != 0;
    const char *semi = rc->orcpt ? strchr(rc->orcpt, ';') : NULL;
    if (semi != NULL && semi > rc->orcpt && semi[1] != '\0') {
      size_t mark = line.len;
      bad |= buf_printf(&line, " ORCPT=%.*s;", (int)(semi - rc->orcpt),
                        rc->orcpt) != 0;
      smtp_client_xtext(&line, semi + 1, &bad);
      if (line.len - mark - 7 > SMTP_CLIENT_MAX_ORCPT) {
        line.len = mark; /* over RFC 3461's limit: left out, not cut */
      }
    }
  }
  bad |= buf_append(&line, "", 1) != 0;
  if (bad) {
    c->failed = 1;
  } else {
    smtp_client_command(c, (const char *)line.data, SMTP_CLIENT_CMD_RCPT,
                        (uint32_t)i);
  }
  buf_free(&line);
}

/* ---- body streaming ------------------------------------------------------ */

static void smtp_client_start_body(struct smtp_client *c, int bdat) {
  smtp_client_body_init(&c->txn.body, &c->txn.msg, c->txn.plain);
  c->txn.bdat_outstanding = 0;
  c->state = bdat ? SMTP_CLIENT_STATE_CHUNKS : SMTP_CLIENT_STATE_BODY;
}

/* One BDAT chunk (RFC 3030 §2): the count is of wire octets, which are not
 * dot-stuffed; the last chunk says LAST. */
static void smtp_client_send_chunk(struct smtp_client *c) {
  struct smtp_client_sink k = {.out = &c->chunk};
  char cmd[64];
  buf_reset(&c->chunk);
  smtp_client_body_fill(&c->txn.body, &k, c->chunk_size, 0);
  if (k.failed) {
    c->failed = 1;
    return;
  }
  int last = c->txn.body.ended;
  snprintf(cmd, sizeof(cmd), "BDAT %zu%s", c->chunk.len, last ? " LAST" : "");
  smtp_client_command(c, cmd, SMTP_CLIENT_CMD_BDAT, (uint32_t)last);
  smtp_client_out(c, c->chunk.data, c->chunk.len);
  c->txn.bdat_outstanding++;
  if (last) {
    c->state = SMTP_CLIENT_STATE_END;
  }
}

/* Produces body output while there is room (limits.max_output). */
static void smtp_client_pump(struct smtp_client *c) {
  if (c->failed) {
    return;
  }
  if (c->state == SMTP_CLIENT_STATE_BODY &&
      smtp_client_out_pending(c) < c->lim.max_output) {
    struct smtp_client_sink k = {.out = &c->out};
    smtp_client_body_fill(&c->txn.body, &k,
                          c->lim.max_output - smtp_client_out_pending(c), 1);
    if (k.failed) {
      c->failed = 1;
      return;
    }
    if (c->txn.body.ended) {
      smtp_client_command(c, ".", SMTP_CLIENT_CMD_DOT, 0);
      c->state = SMTP_CLIENT_STATE_END;
    }
    return;
  }
  size_t window = c->txn.pipelining ? SMTP_CLIENT_BDAT_WINDOW : 1;
  while (c->state == SMTP_CLIENT_STATE_CHUNKS && !c->failed &&
         c->txn.bdat_outstanding < window &&
         smtp_client_out_pending(c) < c->lim.max_output) {
    smtp_client_send_chunk(c);
  }
}

/* ---- reply handlers ------------------------------------------------------ */

typedef void (*smtp_client_reply_fn)(struct smtp_client *c, uint32_t arg,
                                     const struct smtp_reply *r);

static void smtp_client_send_ehlo(struct smtp_client *c, const char *verb,
                                  enum smtp_client_cmd cmd) {
  char line[300];
  snprintf(line, sizeof(line), "%s %s", verb, c->helo_name);
  c->ehlo_ext = 0;
  c->ehlo_size = 0;
  smtp_client_command(c, line, cmd, 0);
}

/* The greeting command: LHLO for LMTP (RFC 2033 §4.1), else EHLO. */
static void smtp_client_send_hello(struct smtp_client *c) {
  if (c->lmtp) {
    smtp_client_send_ehlo(c, "LHLO", SMTP_CLIENT_CMD_LHLO);
  } else {
    smtp_client_send_ehlo(c, "EHLO", SMTP_CLIENT_CMD_EHLO);
  }
}

/* RFC 5321 §3.1: 220, or a refusal (554) after which QUIT is polite. */
static void smtp_client_on_greeting(struct smtp_client *c, uint32_t arg,
                                    const struct smtp_reply *r) {
  if (r->code != 220) {
    smtp_client_fail(c,
                     smtp_reply_class(r) == 5 ? SMTP_CLIENT_ERR_PERMANENT
                                              : SMTP_CLIENT_ERR_TEMPORARY,
                     r, 1);
    return;
  }
  c->state = SMTP_CLIENT_STATE_HELLO;
  smtp_client_send_hello(c);
}

/* TLS is required but will not be had: a temporary session error (the
 * route's policy failed, not the message), then QUIT. */
static void smtp_client_tls_unavailable(struct smtp_client *c,
                                        const struct smtp_reply *refusal) {
  struct smtp_reply r;
  char text[SMTP_REPLY_MAX_TEXT];
  if (refusal == NULL) {
    snprintf(text, sizeof(text),
             "TLS is required, but was not offered by the server");
  } else {
    /* The server's text is cut to leave room for ours. */
    snprintf(text, sizeof(text),
             "TLS is required, but the server refused STARTTLS: %d%s%s %.400s",
             refusal->code, refusal->enhanced[0] ? " " : "", refusal->enhanced,
             refusal->text);
  }
  smtp_reply_set(&r, 451, SMTP_CLIENT_ENH_TLS_REQUIRED, text);
  smtp_client_fail(c, SMTP_CLIENT_ERR_TEMPORARY, &r, 1);
}

/* The greeting is done (EHLO, HELO or LHLO answered 2xx): STARTTLS if
 * configured and not inside TLS yet (RFC 3207 §4), else idle (or QUIT, if
 * the host asked for it: no handshake just to say goodbye). */
static void smtp_client_after_hello(struct smtp_client *c) {
  if (c->tls_mode == SMTP_CLIENT_TLS_NONE || c->tls_active || c->quit_wanted) {
    smtp_client_enter_ready(c);
  } else if (c->ext & SMTP_CLIENT_EXT_STARTTLS) {
    /* Sent alone: the FIFO is empty, nothing is pipelined with it. */
    assert(c->exp_len == 0);
    smtp_client_command(c, "STARTTLS", SMTP_CLIENT_CMD_STARTTLS, 0);
  } else if (c->tls_mode == SMTP_CLIENT_TLS_REQUIRE) {
    smtp_client_tls_unavailable(c, NULL);
  } else {
    smtp_client_enter_ready(c); /* MAY: not offered, plaintext */
  }
}

/* The EHLO or LHLO reply was 2xx: its keywords are the capabilities. */
static void smtp_client_hello_done(struct smtp_client *c) {
  c->ext = c->ehlo_ext;
  c->size_limit = c->ehlo_size;
  c->esmtp = 1;
  smtp_client_after_hello(c);
}

/* RFC 5321 §4.1.4 / §3.2: a server that does not know EHLO says 5xx; then
 * HELO. A 4xx is a temporary refusal, not ignorance. */
static void smtp_client_on_ehlo(struct smtp_client *c, uint32_t arg,
                                const struct smtp_reply *r) {
  int cls = smtp_reply_class(r);
  if (cls == 2) {
    smtp_client_hello_done(c);
  } else if (cls == 5) {
    smtp_client_send_ehlo(c, "HELO", SMTP_CLIENT_CMD_HELO);
  } else {
    smtp_client_fail(c, SMTP_CLIENT_ERR_TEMPORARY, r, 1);
  }
}

/* RFC 2033 §4.1: LHLO is the only greeting an LMTP server knows, so a
 * 5xx is final (no HELO fallback, unlike EHLO). */
static void smtp_client_on_lhlo(struct smtp_client *c, uint32_t arg,
                                const struct smtp_reply *r) {
  int cls = smtp_reply_class(r);
  if (cls == 2) {
    smtp_client_hello_done(c);
    return;
  }
  smtp_client_fail(
      c, cls == 5 ? SMTP_CLIENT_ERR_PERMANENT : SMTP_CLIENT_ERR_TEMPORARY, r,
      1);
}

static void smtp_client_on_helo(struct smtp_client *c, uint32_t arg,
                                const struct smtp_reply *r) {
  int cls = smtp_reply_class(r);
  if (cls == 2) {
    c->ext = 0;
    c->size_limit = 0;
    c->esmtp = 0;
    smtp_client_after_hello(c); /* no STARTTLS without EHLO */
    return;
  }
  smtp_client_fail(
      c, cls == 5 ? SMTP_CLIENT_ERR_PERMANENT : SMTP_CLIENT_ERR_TEMPORARY, r,
      1);
}

/* All RCPT replies are in: go on to the body, or end (no one accepted). */
static void smtp_client_after_rcpts(struct smtp_client *c) {
  struct smtp_client_txn *t = &c->txn;
  if (t->num_accepted == 0) {
    if (!t->use_bdat && t->pipelining) {
      return; /* the DATA reply is due first */
    }
    smtp_client_msg_finish(c, &t->refusal, SMTP_CLIENT_DEFER);
    return;
  }
  if (t->use_bdat) {
    smtp_client_start_body(c, 1);
  } else if (!t->pipelining) {
    smtp_client_command(c, "DATA", SMTP_CLIENT_CMD_DATA, 0);
  }
}

static void smtp_client_on_mail(struct smtp_client *c, uint32_t arg,
                                const struct smtp_reply *r) {
  if (c->state != SMTP_CLIENT_STATE_ENVELOPE) {
    return;
  }
  if (smtp_reply_class(r) != 2) {
    smtp_client_msg_finish(c, r, smtp_client_status_of(r, 0));
    return;
  }
  c->txn.rset_needed = 1;
  if (!c->txn.pipelining) {
    smtp_client_send_rcpt(c, 0);
  }
}

/* One RCPT verdict (RFC 5321 §4.1.1.3): 250/251 accepted, 4xx deferred,
 * 5xx refused for good. */
static void smtp_client_on_rcpt(struct smtp_client *c, uint32_t i,
                                const struct smtp_reply *r) {
  struct smtp_client_txn *t = &c->txn;
  if (c->state != SMTP_CLIENT_STATE_ENVELOPE || i != t->num_decided) {
    return;
  }
  struct smtp_client_rcpt_state *rs = &t->rcpts[i];
  rs->own = smtp_client_ref_store(c, r);
  rs->has_own = 1;
  if (smtp_reply_class(r) == 2) {
    rs->status = SMTP_CLIENT_ACCEPTED;
    t->num_accepted++;
  } else {
    rs->status = (uint8_t)smtp_client_status_of(r, 0);
    rs->refused = 1;
    t->refusal = *r;
  }
  t->num_decided = i + 1;
  if (i + 1 < t->msg.num_rcpts) {
    if (!t->pipelining) {
      smtp_client_send_rcpt(c, i + 1);
    }
    return;
  }
  smtp_client_after_rcpts(c);
}

/* DATA (RFC 5321 §4.1.1.4): 354 starts the body. With no one accepted, a
 * 354 (a broken pipelining server) gets a lone "." (RFC 2920 §3.1). */
static void smtp_client_on_data(struct smtp_client *c, uint32_t arg,
                                const struct smtp_reply *r) {
  struct smtp_client_txn *t = &c->txn;
  int open = c->state == SMTP_CLIENT_STATE_ENVELOPE;
  if (r->code == 354 && (!open || t->num_accepted == 0)) {
    smtp_client_command(c, ".", SMTP_CLIENT_CMD_DOT, 1);
    t->rset_needed = 1;
    if (open) {
      smtp_client_msg_finish(c, &t->refusal, SMTP_CLIENT_DEFER);
    }
    return;
  }
  if (!open) {
    return;
  }
  if (t->num_accepted == 0) {
    smtp_client_msg_finish(c, r, SMTP_CLIENT_DEFER); /* all decided */
  } else if (r->code == 354) {
    smtp_client_start_body(c, 0);
  } else {
    smtp_client_msg_finish(c, r, smtp_client_status_of(r, 0));
  }
}

/* The first recipient at or after `from` that is still ACCEPTED (has no
 * end-of-data reply yet), or num_rcpts. */
static size_t smtp_client_next_accepted(const struct smtp_client_txn *t,
                                        size_t from) {
  while (from < t->msg.num_rcpts &&
         t->rcpts[from].status != SMTP_CLIENT_ACCEPTED) {
    from++;
  }
  return from;
}

/* LMTP (RFC 2033 §4.2, §4.3): one end-of-data reply for recipient i, the
 * next accepted one in RCPT order. It decides that recipient alone; the
 * next accepted recipient's reply is due next, or the message is done. */
static void smtp_client_lmtp_data(struct smtp_client *c, size_t i,
                                  const struct smtp_reply *r) {
  struct smtp_client_txn *t = &c->txn;
  assert(i < t->msg.num_rcpts && t->rcpts[i].status == SMTP_CLIENT_ACCEPTED);
  struct smtp_client_rcpt_state *rs = &t->rcpts[i];
  rs->data = smtp_client_ref_store(c, r);
  rs->has_data = 1;
  rs->status = (uint8_t)smtp_client_status_of(r, 1);
  size_t next = smtp_client_next_accepted(t, i + 1);
  if (next < t->msg.num_rcpts) {
    /* The "." or BDAT LAST was the last command sent: the FIFO is empty,
     * so the next reply due is this recipient's. */
    assert(c->exp_len == 0);
    smtp_client_push(c, SMTP_CLIENT_CMD_LMTP_DATA, (uint32_t)next);
    return;
  }
  /* Nobody is open any more: r is only the message's reply. */
  smtp_client_msg_finish(c, r, SMTP_CLIENT_OK);
}

/* The reply to the end of data decides every accepted recipient (SMTP), or
 * the first one (LMTP). */
static void smtp_client_on_dot(struct smtp_client *c, uint32_t lone,
                               const struct smtp_reply *r) {
  if (lone || c->state != SMTP_CLIENT_STATE_END) {
    return;
  }
  c->txn.rset_needed = 0; /* the transaction is over, whatever the code */
  if (c->lmtp) {
    smtp_client_lmtp_data(c, smtp_client_next_accepted(&c->txn, 0), r);
    return;
  }
  smtp_client_msg_finish(c, r, smtp_client_status_of(r, 1));
}

/* LMTP: the end-of-data reply of accepted recipient i (after the first). */
static void smtp_client_on_lmtp_data(struct smtp_client *c, uint32_t i,
                                     const struct smtp_reply *r) {
  if (c->state != SMTP_CLIENT_STATE_END) {
    return;
  }
  smtp_client_lmtp_data(c, i, r);
}

/* RFC 3030 §2: each chunk is answered; a refusal ends the message. */
static void smtp_client_on_bdat(struct smtp_client *c, uint32_t last,
                                const struct smtp_reply *r) {
  struct smtp_client_txn *t = &c->txn;
  if (c->state != SMTP_CLIENT_STATE_CHUNKS &&
      c->state != SMTP_CLIENT_STATE_END) {
    return;
  }
  t->bdat_outstanding--;
  if (last) {
    t->rset_needed = 0;
  }
  if (last && c->lmtp && c->state == SMTP_CLIENT_STATE_END) {
    /* RFC 2033 §4.3: BDAT LAST is answered once per accepted recipient.
     * (After a refused chunk the state is DRAIN: Dovecot then answers
     * BDAT LAST once, 503, and that single reply is what is read.) */
    smtp_client_lmtp_data(c, smtp_client_next_accepted(t, 0), r);
  } else if (smtp_reply_class(r) != 2) {
    smtp_client_msg_finish(c, r, smtp_client_status_of(r, 0));
  } else if (last) {
    smtp_client_msg_finish(c, r, SMTP_CLIENT_OK);
  }
}

static void smtp_client_on_rset(struct smtp_client *c, uint32_t arg,
                                const struct smtp_reply *r) {
  if (smtp_reply_class(r) != 2) {
    /* The connection cannot be trusted with another message. */
    smtp_client_fail(c, SMTP_CLIENT_ERR_TEMPORARY, r, 1);
  }
}

static void smtp_client_on_quit(struct smtp_client *c, uint32_t arg,
                                const struct smtp_reply *r) {
  smtp_client_enter_closed(c);
}

/* RFC 3207 §4: 220 (any 2xx, as Postfix takes it) and the handshake
 * starts; a refusal (454, 501, 5xx) leaves the session in plaintext,
 * which MAY accepts and REQUIRE does not. */
static void smtp_client_on_starttls(struct smtp_client *c, uint32_t arg,
                                    const struct smtp_reply *r) {
  if (smtp_reply_class(r) != 2) {
    if (c->tls_mode == SMTP_CLIENT_TLS_REQUIRE) {
      smtp_client_tls_unavailable(c, r);
    } else {
      smtp_client_enter_ready(c); /* with what EHLO offered */
    }
    return;
  }
  c->state = SMTP_CLIENT_STATE_TLS;
  if (c->in.len > c->in_off) {
    /* Bytes behind the 220 came in clear where TLS was promised: read
     * after the handshake they would pass for the server's replies inside
     * TLS (STARTTLS injection). */
    smtp_client_protocol_error(c, "data after the STARTTLS reply");
    return;
  }
  if (smtp_client_out_pending(c) > 0) {
    /* STARTTLS is still in the output: this "reply" was sent ahead of
     * the command, so nobody answered it. */
    smtp_client_protocol_error(c, "STARTTLS reply before STARTTLS was sent");
    return;
  }
  c->tls_owed = 1;
}

struct smtp_client_cmd_info {
  const char *name; /* in "while waiting for the reply to <name>" */
  enum smtp_client_timeout_class timeout;
  smtp_client_reply_fn fn;
};

static const struct smtp_client_cmd_info smtp_client_cmds[] = {
    [SMTP_CLIENT_CMD_GREETING] = {"the greeting", SMTP_CLIENT_TIMEOUT_GREETING,
                                  smtp_client_on_greeting},
    [SMTP_CLIENT_CMD_EHLO] = {"EHLO", SMTP_CLIENT_TIMEOUT_COMMAND,
                              smtp_client_on_ehlo},
    [SMTP_CLIENT_CMD_HELO] = {"HELO", SMTP_CLIENT_TIMEOUT_COMMAND,
                              smtp_client_on_helo},
    [SMTP_CLIENT_CMD_MAIL] = {"MAIL FROM", SMTP_CLIENT_TIMEOUT_MAIL,
                              smtp_client_on_mail},
    [SMTP_CLIENT_CMD_RCPT] = {"RCPT TO", SMTP_CLIENT_TIMEOUT_RCPT,
                              smtp_client_on_rcpt},
    [SMTP_CLIENT_CMD_DATA] = {"DATA", SMTP_CLIENT_TIMEOUT_DATA_INIT,
                              smtp_client_on_data},
    [SMTP_CLIENT_CMD_DOT] = {"end of data", SMTP_CLIENT_TIMEOUT_DATA_END,
                             smtp_client_on_dot},
    [SMTP_CLIENT_CMD_BDAT] = {"BDAT", SMTP_CLIENT_TIMEOUT_DATA_BLOCK,
                              smtp_client_on_bdat},
    [SMTP_CLIENT_CMD_RSET] = {"RSET", SMTP_CLIENT_TIMEOUT_COMMAND,
                              smtp_client_on_rset},
    [SMTP_CLIENT_CMD_QUIT] = {"QUIT", SMTP_CLIENT_TIMEOUT_COMMAND,
                              smtp_client_on_quit},
    [SMTP_CLIENT_CMD_LHLO] = {"LHLO", SMTP_CLIENT_TIMEOUT_COMMAND,
                              smtp_client_on_lhlo},
    [SMTP_CLIENT_CMD_LMTP_DATA] = {"end of data", SMTP_CLIENT_TIMEOUT_DATA_END,
                                   smtp_client_on_lmtp_data},
    [SMTP_CLIENT_CMD_STARTTLS] = {"STARTTLS", SMTP_CLIENT_TIMEOUT_COMMAND,
                                  smtp_client_on_starttls},
};

/* What the client is doing, for local reply texts. */
static void smtp_client_waiting_for(const struct smtp_client *c, char *out,
                                    size_t cap) {
  if (c->state == SMTP_CLIENT_STATE_BODY ||
      (c->state == SMTP_CLIENT_STATE_CHUNKS && c->exp_len == 0)) {
    snprintf(out, cap, "while sending the message body");
  } else if (c->state == SMTP_CLIENT_STATE_TLS) {
    snprintf(out, cap, "while starting TLS");
  } else if (c->exp_len == 0) {
    snprintf(out, cap, "while idle");
  } else {
    snprintf(out, cap, "while waiting for the reply to %s",
             smtp_client_cmds[c->expect[c->exp_head].cmd].name);
  }
}

/* ---- reading replies ----------------------------------------------------- */

/* EHLO keywords (RFC 5321 §4.1.1.1 ehlo-line); unknown ones are skipped. */
static void smtp_client_ehlo_line(struct smtp_client *c, const uint8_t *p,
                                  size_t n) {
  static const struct {
    const char *kw;
    unsigned ext;
  } kws[] = {
      {"PIPELINING", SMTP_CLIENT_EXT_PIPELINING},
      {"SIZE", SMTP_CLIENT_EXT_SIZE},
      {"8BITMIME", SMTP_CLIENT_EXT_8BITMIME},
      {"SMTPUTF8", SMTP_CLIENT_EXT_SMTPUTF8},
      {"CHUNKING", SMTP_CLIENT_EXT_CHUNKING},
      {"DSN", SMTP_CLIENT_EXT_DSN},
      {"ENHANCEDSTATUSCODES", SMTP_CLIENT_EXT_ENHANCEDSTATUSCODES},
      {"STARTTLS", SMTP_CLIENT_EXT_STARTTLS},
      {"REQUIRETLS", SMTP_CLIENT_EXT_REQUIRETLS},
  };
  size_t kw_len = 0;
  while (kw_len < n && p[kw_len] != ' ') {
    kw_len++;
  }
  for (size_t i = 0; i < sizeof(kws) / sizeof(kws[0]); i++) {
    if (kw_len == strlen(kws[i].kw) &&
        strncasecmp((const char *)p, kws[i].kw, kw_len) == 0) {
      c->ehlo_ext |= kws[i].ext;
    }
  }
  if (kw_len == 4 && strncasecmp((const char *)p, "SIZE", 4) == 0) {
    size_t v = 0; /* RFC 1870 §4: SIZE [number]; 0 or none: no limit */
    for (size_t i = 5; i < n && p[i] >= '0' && p[i] <= '9'; i++) {
      size_t d = (size_t)(p[i] - '0');
      v = v > (SIZE_MAX - d) / 10 ? SIZE_MAX : v * 10 + d;
    }
    c->ehlo_size = v;
  }
}

/* A complete reply: it answers the FIFO's head. */
static void smtp_client_dispatch(struct smtp_client *c,
                                 const struct smtp_reply *r) {
  if (c->exp_len == 0) {
    /* Unsolicited, while idle: a 421 is the server leaving (RFC 5321
     * §3.8); anything else is not SMTP. */
    if (r->code == 421) {
      smtp_client_fail(c, SMTP_CLIENT_ERR_TEMPORARY, r, 0);
    } else {
      smtp_client_protocol_error(c, "unexpected reply");
    }
    return;
  }
  struct smtp_client_expect e = smtp_client_pop(c);
  if (c->state == SMTP_CLIENT_STATE_QUIT) {
    if (e.cmd == SMTP_CLIENT_CMD_QUIT) {
      smtp_client_enter_closed(c);
    }
    return;
  }
  if (r->code == 421) {
    /* RFC 5321 §4.2.2: closing, at any point. */
    smtp_client_fail(c, SMTP_CLIENT_ERR_TEMPORARY, r, 0);
    return;
  }
  smtp_client_cmds[e.cmd].fn(c, e.arg, r);
  smtp_client_settle(c);
}

/* Takes one whole line (its LF included) into the reply being read. */
static void smtp_client_reply_line(struct smtp_client *c, const uint8_t *line,
                                   size_t n) {
  struct smtp_reply_line l;
  const char *why = NULL;
  if (smtp_reply_parse_line(&l, &why, line, n) != 0) {
    smtp_client_protocol_error(c, why);
    return;
  }
  if (c->acc.num_lines >= c->lim.max_reply_lines) {
    smtp_client_protocol_error(c, "too many reply lines");
    return;
  }
  if (c->acc.num_lines > 0 && c->exp_len > 0 &&
      (c->expect[c->exp_head].cmd == SMTP_CLIENT_CMD_EHLO ||
       c->expect[c->exp_head].cmd == SMTP_CLIENT_CMD_LHLO)) {
    smtp_client_ehlo_line(c, l.text, l.text_len);
  }
  switch (smtp_reply_add(&c->acc, &why, &l)) {
  case SMTP_REPLY_MORE:
    return;
  case SMTP_REPLY_BAD:
    smtp_client_protocol_error(c, why);
    return;
  case SMTP_REPLY_DONE:
    break;
  }
  c->last = c->acc;
  smtp_reply_init(&c->acc);
  smtp_client_dispatch(c, &c->last);
}

/* Reads one line of input if a reply may be read now. Returns 1 if it made
 * progress. While a DATA body streams nothing is due, so input waits. */
static int smtp_client_step(struct smtp_client *c) {
  if (c->state == SMTP_CLIENT_STATE_TLS && c->in.len > c->in_off) {
    /* Fed before the handshake was reported: clear text after the 220,
     * which must not be read as replies (see on_starttls). */
    smtp_client_protocol_error(c, "data after the STARTTLS reply");
    return 1;
  }
  if (c->state == SMTP_CLIENT_STATE_CLOSED ||
      (c->exp_len == 0 && c->state != SMTP_CLIENT_STATE_READY)) {
    return 0;
  }
  const uint8_t *p = c->in.data + c->in_off;
  size_t avail = c->in.len - c->in_off;
  if (avail == 0) {
    return 0;
  }
  size_t max = c->lim.max_reply_line;
  const uint8_t *lf = memchr(p, '\n', avail < max ? avail : max);
  if (lf == NULL) {
    if (avail < max) {
      return 0;
    }
    smtp_client_protocol_error(c, "reply line too long");
    return 1;
  }
  size_t n = (size_t)(lf - p) + 1;
  c->in_off += n; /* the bytes stay put until the next feed */
  if (c->in_off == c->in.len) {
    c->in_off = 0;
    c->in.len = 0;
  }
  smtp_client_reply_line(c, p, n);
  return 1;
}

/* ---- public API ---------------------------------------------------------- */

void smtp_client_config_default(struct smtp_client_config *out_config) {
  memset(out_config, 0, sizeof(*out_config));
  out_config->helo_name = "localhost";
  out_config->extensions = SMTP_CLIENT_EXT_ALL & ~SMTP_CLIENT_EXT_CHUNKING;
  out_config->chunk_size = 64u << 10;
  out_config->limits.max_reply_line = 512;
  out_config->limits.max_reply_lines = 100;
  out_config->limits.max_output = 64u << 10;
  out_config->limits.max_input = 64u << 10;
  out_config->limits.max_rcpts = 1000;
}

unsigned smtp_client_timeout_seconds(enum smtp_client_timeout_class t) {
  switch (t) {
  case SMTP_CLIENT_TIMEOUT_NONE:
    return 0;
  case SMTP_CLIENT_TIMEOUT_DATA_INIT:
    return 120;
  case SMTP_CLIENT_TIMEOUT_DATA_BLOCK:
    return 180;
  case SMTP_CLIENT_TIMEOUT_DATA_END:
    return 600;
  case SMTP_CLIENT_TIMEOUT_GREETING:
  case SMTP_CLIENT_TIMEOUT_COMMAND:
  case SMTP_CLIENT_TIMEOUT_MAIL:
  case SMTP_CLIENT_TIMEOUT_RCPT:
    break;
  }
  return 300;
}

/* 1 if s is one non-empty word of printable ASCII (a HELO name). */
static int smtp_client_word_ok(const char *s) {
  if (s == NULL || s[0] == '\0' || strlen(s) > 255) {
    return 0;
  }
  for (; *s != '\0'; s++) {
    if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 0x7f) {
      return 0;
    }
  }
  return 1;
}

/* Limits the engine cannot work without. */
static void smtp_client_limits_sane(struct smtp_client_limits *l) {
  if (l->max_reply_line < 8) {
    l->max_reply_line = 8;
  }
  if (l->max_reply_lines < 1) {
    l->max_reply_lines = 1;
  }
  if (l->max_output < 64) {
    l->max_output = 64;
  }
  if (l->max_input < l->max_reply_line) {
    l->max_input = l->max_reply_line;
  }
  if (l->max_rcpts < 1 || l->max_rcpts > UINT32_MAX) {
    l->max_rcpts = l->max_rcpts < 1 ? 1 : UINT32_MAX;
  }
}

struct smtp_client *smtp_client_new(const struct smtp_client_config *config) {
  const char *name = config->helo_name ? config->helo_name : "localhost";
  if (!smtp_client_word_ok(name) ||
      (unsigned)config->tls > SMTP_CLIENT_TLS_REQUIRE) {
    return NULL;
  }
  struct smtp_client *c = calloc(1, sizeof(*c));
  if (c == NULL || (c->helo_name = strdup(name)) == NULL) {
    free(c);
    return NULL;
  }
  c->lmtp = config->lmtp != 0;
  c->tls_mode = config->tls;
  c->tls_active = config->tls_active != 0;
  c->use_ext = config->extensions & SMTP_CLIENT_EXT_ALL;
  c->chunk_size = config->chunk_size ? config->chunk_size : 64u << 10;
  c->lim = config->limits;
  smtp_client_limits_sane(&c->lim);
  c->state = SMTP_CLIENT_STATE_GREETING;
  smtp_client_push(c, SMTP_CLIENT_CMD_GREETING, 0);
  if (c->failed) {
    smtp_client_free(c);
    return NULL;
  }
  return c;
}

void smtp_client_free(struct smtp_client *c) {
  if (c == NULL) {
    return;
  }
  free(c->helo_name);
  free(c->expect);
  free(c->txn.rcpts);
  buf_free(&c->in);
  buf_free(&c->out);
  buf_free(&c->chunk);
  buf_free(&c->texts);
  free(c);
}

int smtp_client_feed(struct smtp_client *c, const uint8_t *in, size_t in_len) {
  if (c->state == SMTP_CLIENT_STATE_CLOSED || c->failed) {
    return 0; /* nothing more will be read; drop it */
  }
  size_t pending = c->in.len - c->in_off;
  if (in_len > c->lim.max_input - pending) {
    return -1;
  }
  if (c->in_off > 0 && c->in.cap - c->in.len < in_len) {
    memmove(c->in.data, c->in.data + c->in_off, pending);
    c->in.len = pending;
    c->in_off = 0;
  }
  return buf_append(&c->in, in, in_len);
}

/* The next RCPT_RESULT, MESSAGE_DONE or SESSION_ERROR owed, if any. */
static int smtp_client_owed(struct smtp_client *c,
                            enum smtp_client_event *out) {
  struct smtp_client_txn *t = &c->txn;
  if (c->txn_active && t->num_reported < t->num_decided) {
    size_t i = t->num_reported++;
    const struct smtp_client_rcpt_state *rs = &t->rcpts[i];
    if (rs->has_own) {
      smtp_client_ref_load(c, &rs->own, &c->event);
    } else {
      c->event = c->msg_reply; /* decided with the whole message */
    }
    c->event_rcpt = i;
    *out = SMTP_CLIENT_EV_RCPT_RESULT;
    return 1;
  }
  if (c->txn_active && t->done && !t->done_reported) {
    t->done_reported = 1;
    c->event = c->msg_reply;
    *out = SMTP_CLIENT_EV_MESSAGE_DONE;
    return 1;
  }
  if (c->err_owed) {
    c->err_owed = 0;
    c->event = c->err_reply;
    *out = SMTP_CLIENT_EV_SESSION_ERROR;
    return 1;
  }
  return 0;
}

enum smtp_client_event smtp_client_next(struct smtp_client *c) {
  enum smtp_client_event ev;
  for (;;) {
    if (smtp_client_owed(c, &ev)) {
      return ev;
    }
    if (c->failed && c->state != SMTP_CLIENT_STATE_CLOSED) {
      struct smtp_reply r;
      smtp_reply_set(&r, 451, "4.3.0", "out of memory in the SMTP client");
      smtp_client_fail(c, SMTP_CLIENT_ERR_TEMPORARY, &r, 0);
      continue;
    }
    if (c->state == SMTP_CLIENT_STATE_CLOSED) {
      return SMTP_CLIENT_EV_CLOSED;
    }
    if (c->ready_owed) {
      c->ready_owed = 0;
      return SMTP_CLIENT_EV_READY;
    }
    if (c->tls_owed) {
      c->tls_owed = 0;
      c->event = c->last; /* the 220 */
      return SMTP_CLIENT_EV_STARTTLS;
    }
    if (!smtp_client_step(c)) {
      smtp_client_pump(c);
      if (!c->failed) {
        return SMTP_CLIENT_NEED_INPUT;
      }
    }
  }
}

/* 1 if s may go inside a command line: no control octets. Sets *utf8 if
 * it holds non-ASCII octets. */
static int smtp_client_text_ok(const char *s, int *utf8) {
  for (const uint8_t *p = (const uint8_t *)s; *p != '\0'; p++) {
    if (*p < 0x20 || *p == 0x7f) {
      return 0;
    }
    if (*p >= 0x80) {
      *utf8 = 1;
    }
  }
  return 1;
}

/* Checks the host's message. Sets *utf8 if an address is non-ASCII. */
static int smtp_client_message_ok(const struct smtp_client *c,
                                  const struct smtp_client_message *m,
                                  int *utf8) {
  int ignored = 0;
  if (m->sender == NULL || m->num_rcpts == 0 ||
      m->num_rcpts > c->lim.max_rcpts || (m->num_body > 0 && !m->body) ||
      !smtp_client_text_ok(m->sender, utf8) ||
      (m->envid != NULL && !smtp_client_text_ok(m->envid, &ignored))) {
    return 0;
  }
  for (size_t i = 0; i < m->num_rcpts; i++) {
    const struct smtp_client_rcpt *r = &m->rcpts[i];
    if (r->addr == NULL || r->addr[0] == '\0' ||
        !smtp_client_text_ok(r->addr, utf8) ||
        (r->orcpt != NULL && !smtp_client_text_ok(r->orcpt, &ignored))) {
      return 0;
    }
  }
  return 1;
}

/* Resets the transaction for m; returns 0 or -1 (allocation). */
static int smtp_client_txn_begin(struct smtp_client *c,
                                 const struct smtp_client_message *m) {
  struct smtp_client_txn *t = &c->txn;
  if (m->num_rcpts > t->rcpts_cap) {
    struct smtp_client_rcpt_state *r =
        realloc(t->rcpts, m->num_rcpts * sizeof(*r));
    if (r == NULL) {
      return -1;
    }
    t->rcpts = r;
    t->rcpts_cap = m->num_rcpts;
  }
  struct smtp_client_rcpt_state *rcpts = t->rcpts;
  size_t cap = t->rcpts_cap;
  memset(t, 0, sizeof(*t));
  t->rcpts = rcpts;
  t->rcpts_cap = cap;
  memset(t->rcpts, 0, m->num_rcpts * sizeof(*t->rcpts));
  t->msg = *m;
  buf_reset(&c->texts);
  smtp_reply_init(&t->refusal);
  smtp_reply_init(&c->msg_reply);
  c->txn_active = 1;
  return 0;
}

/* Refusals the client makes itself, before any command (see header). */
static int smtp_client_refuse_early(struct smtp_client *c, int has_8bit,
                                    int utf8_needed) {
  struct smtp_reply r;
  char text[160];
  if (c->txn.msg.requiretls &&
      (!c->tls_active || !smtp_client_uses(c, SMTP_CLIENT_EXT_REQUIRETLS))) {
    /* RFC 8689 §4.2.1: only over TLS, to a server offering REQUIRETLS. */
    snprintf(text, sizeof(text), "REQUIRETLS support required: %s",
             !c->tls_active ? "the session is not TLS"
             : !(c->ext & SMTP_CLIENT_EXT_REQUIRETLS)
                 ? "the server does not offer REQUIRETLS"
                 : "REQUIRETLS is switched off here");
    smtp_reply_set(&r, 550, SMTP_CLIENT_ENH_REQUIRETLS, text);
  } else if ((c->ext & SMTP_CLIENT_EXT_SIZE) && c->size_limit > 0 &&
             c->txn.size > c->size_limit) {
    snprintf(text, sizeof(text),
             "message size %zu exceeds the server's limit of %zu", c->txn.size,
             c->size_limit);
    smtp_reply_set(&r, 552, "5.3.4", text); /* RFC 1870 §6.1 */
  } else if (has_8bit && !smtp_client_uses(c, SMTP_CLIENT_EXT_8BITMIME)) {
    smtp_reply_set(&r, 554, "5.6.3",
                   "message has 8-bit content but the server does not "
                   "offer 8BITMIME");
  } else if (utf8_needed && !smtp_client_uses(c, SMTP_CLIENT_EXT_SMTPUTF8)) {
    smtp_reply_set(&r, 553, "5.6.7",
                   "message needs SMTPUTF8 but the server does not offer "
                   "it");
  } else {
    return 0;
  }
  c->state = SMTP_CLIENT_STATE_ENVELOPE;
  smtp_client_msg_finish(c, &r, SMTP_CLIENT_FAIL);
  smtp_client_settle(c);
  return 1;
}

int smtp_client_send_message(struct smtp_client *c,
                             const struct smtp_client_message *msg) {
  int utf8 = 0;
  if (c->state != SMTP_CLIENT_STATE_READY || c->failed || c->exp_len > 0 ||
      !smtp_client_message_ok(c, msg, &utf8)) {
    return -1;
  }
  if (smtp_client_txn_begin(c, msg) != 0) {
    c->failed = 1;
    return -1;
  }
  struct smtp_client_txn *t = &c->txn;
  c->ready_owed = 0;
  /* One scan of the body, kept for the transaction. The host may not
   * change the body until MESSAGE_DONE (see the header); if it did, a plain
   * body's octets would now go out unchecked. */
  struct smtp_client_body_kind kind;
  smtp_client_body_scan(&kind, msg);
  t->plain = kind.plain;
  t->size = kind.plain ? kind.len : smtp_client_body_size(msg);
  int has_8bit = kind.has_8bit;
  /* SMTPUTF8 is needed for non-ASCII addresses, or when the sender said
   * so and the content has non-ASCII octets (a UTF-8 header). */
  int utf8_needed = utf8 || (msg->smtputf8 && has_8bit);
  if (smtp_client_refuse_early(c, has_8bit, utf8_needed)) {
    return 0;
  }
  t->body_8bit = (msg->body_8bit || has_8bit) &&
                 smtp_client_uses(c, SMTP_CLIENT_EXT_8BITMIME);
  t->smtputf8 = (utf8_needed || msg->smtputf8) &&
                smtp_client_uses(c, SMTP_CLIENT_EXT_SMTPUTF8);
  t->pipelining = smtp_client_uses(c, SMTP_CLIENT_EXT_PIPELINING);
  t->use_bdat = smtp_client_uses(c, SMTP_CLIENT_EXT_CHUNKING);
  c->state = SMTP_CLIENT_STATE_ENVELOPE;
  smtp_client_send_mail(c);
  if (t->pipelining) {
    /* RFC 2920 §3.1: MAIL, RCPT... and DATA (which ends the group). */
    for (size_t i = 0; i < msg->num_rcpts; i++) {
      smtp_client_send_rcpt(c, i);
    }
    if (!t->use_bdat) {
      smtp_client_command(c, "DATA", SMTP_CLIENT_CMD_DATA, 0);
    }
  }
  return 0;
}

int smtp_client_reset(struct smtp_client *c) {
  if (c->state != SMTP_CLIENT_STATE_READY || c->exp_len > 0) {
    return -1;
  }
  c->ready_owed = 0;
  c->state = SMTP_CLIENT_STATE_DRAIN;
  smtp_client_command(c, "RSET", SMTP_CLIENT_CMD_RSET, 0);
  return 0;
}

void smtp_client_quit(struct smtp_client *c) {
  if (c->state == SMTP_CLIENT_STATE_CLOSED ||
      c->state == SMTP_CLIENT_STATE_QUIT) {
    return;
  }
  c->quit_wanted = 1;
  if (c->state == SMTP_CLIENT_STATE_READY && c->exp_len == 0) {
    c->ready_owed = 0;
    smtp_client_enter_ready(c);
  }
}

void smtp_client_timeout(struct smtp_client *c) {
  struct smtp_reply r;
  if (c->state == SMTP_CLIENT_STATE_CLOSED) {
    return;
  }
  if (c->state == SMTP_CLIENT_STATE_QUIT) {
    smtp_client_enter_closed(c);
    return;
  }
  smtp_client_local_reply(c, &r, "4.4.2", "conversation timed out");
  smtp_client_fail(c, SMTP_CLIENT_ERR_TEMPORARY, &r, 0);
}

void smtp_client_eof(struct smtp_client *c) {
  struct smtp_reply r;
  if (c->state == SMTP_CLIENT_STATE_CLOSED) {
    return;
  }
  if (c->state == SMTP_CLIENT_STATE_QUIT) {
    smtp_client_enter_closed(c);
    return;
  }
  smtp_client_local_reply(c, &r, "4.4.2", "lost connection");
  smtp_client_fail(c, SMTP_CLIENT_ERR_TEMPORARY, &r, 0);
}

int smtp_client_tls_started(struct smtp_client *c) {
  if (c->state != SMTP_CLIENT_STATE_TLS || c->in.len > c->in_off) {
    return -1;
  }
  c->tls_owed = 0;
  c->tls_active = 1;
  /* RFC 3207 §4.2: forget what the server said before TLS; EHLO again. */
  c->ext = 0;
  c->size_limit = 0;
  c->esmtp = 0;
  c->state = SMTP_CLIENT_STATE_HELLO;
  smtp_client_send_hello(c);
  return 0;
}

void smtp_client_tls_failed(struct smtp_client *c, const char *why) {
  struct smtp_reply r;
  char text[SMTP_REPLY_MAX_TEXT];
  if (c->state == SMTP_CLIENT_STATE_CLOSED) {
    return;
  }
  if (c->state == SMTP_CLIENT_STATE_QUIT) {
    smtp_client_enter_closed(c); /* nothing is lost after QUIT */
    return;
  }
  if (why == NULL || why[0] == '\0') {
    why = "unknown error";
  }
  if (c->state == SMTP_CLIENT_STATE_TLS) {
    snprintf(text, sizeof(text), "TLS handshake failed: %s", why);
    smtp_reply_set(&r, 451, SMTP_CLIENT_ENH_TLS_FAILED, text);
  } else {
    snprintf(text, sizeof(text), "TLS failed: %s", why);
    smtp_client_local_reply(c, &r, SMTP_CLIENT_ENH_TLS_FAILED, text);
  }
  smtp_client_fail(c, SMTP_CLIENT_ERR_TEMPORARY, &r, 0);
}

void smtp_client_output(const struct smtp_client *c, const uint8_t **out,
                        size_t *out_len) {
  *out = c->out.data + c->out_off;
  *out_len = c->out.len - c->out_off;
}

void smtp_client_output_sent(struct smtp_client *c, size_t n) {
  assert(n <= c->out.len - c->out_off);
  c->out_off += n;
  if (c->out_off == c->out.len) {
    c->out_off = 0;
    c->out.len = 0;
  } else if (c->out_off > c->out.len / 2) {
    buf_consume(&c->out, c->out_off); /* short sends: move the rest once */
    c->out_off = 0;
  }
  smtp_client_pump(c);
}

int smtp_client_output_take(struct smtp_client *c, struct buf *b) {
  assert(b->len == 0);
  if (c->out_off != 0 || c->out.len == 0) {
    return 0;
  }
  struct buf full = c->out;
  c->out = *b;
  *b = full;
  smtp_client_pump(c);
  return 1;
}

enum smtp_client_timeout_class
smtp_client_timeout_class(const struct smtp_client *c) {
  if (c->state == SMTP_CLIENT_STATE_CLOSED) {
    return SMTP_CLIENT_TIMEOUT_NONE;
  }
  if (c->state == SMTP_CLIENT_STATE_BODY ||
      (c->state == SMTP_CLIENT_STATE_CHUNKS && c->exp_len == 0)) {
    return SMTP_CLIENT_TIMEOUT_DATA_BLOCK;
  }
  if (c->exp_len == 0) {
    return SMTP_CLIENT_TIMEOUT_NONE;
  }
  const struct smtp_client_expect *e = &c->expect[c->exp_head];
  if (e->cmd == SMTP_CLIENT_CMD_BDAT && e->arg) {
    return SMTP_CLIENT_TIMEOUT_DATA_END;
  }
  return smtp_client_cmds[e->cmd].timeout;
}

const struct smtp_reply *smtp_client_reply(const struct smtp_client *c) {
  return &c->event;
}

const struct smtp_reply *smtp_client_last_reply(const struct smtp_client *c) {
  return &c->last;
}

size_t smtp_client_event_rcpt(const struct smtp_client *c) {
  return c->event_rcpt;
}

enum smtp_client_status smtp_client_rcpt_result(const struct smtp_client *c,
                                                size_t i,
                                                struct smtp_reply *out_reply) {
  smtp_reply_init(out_reply);
  if (!c->txn_active || i >= c->txn.msg.num_rcpts) {
    return SMTP_CLIENT_PENDING;
  }
  const struct smtp_client_rcpt_state *rs = &c->txn.rcpts[i];
  if (rs->status == SMTP_CLIENT_PENDING) {
    return SMTP_CLIENT_PENDING;
  }
  if (rs->has_own && (rs->refused || rs->status == SMTP_CLIENT_ACCEPTED)) {
    smtp_client_ref_load(c, &rs->own, out_reply);
  } else if (rs->has_data) {
    smtp_client_ref_load(c, &rs->data, out_reply);
  } else {
    *out_reply = c->msg_reply;
  }
  return (enum smtp_client_status)rs->status;
}

size_t smtp_client_num_status(const struct smtp_client *c,
                              enum smtp_client_status status) {
  size_t n = 0;
  for (size_t i = 0; c->txn_active && i < c->txn.msg.num_rcpts; i++) {
    n += c->txn.rcpts[i].status == status;
  }
  return n;
}

enum smtp_client_error smtp_client_session_error(const struct smtp_client *c) {
  return c->err;
}

unsigned smtp_client_extensions(const struct smtp_client *c) {
  return c->ext;
}

size_t smtp_client_size_limit(const struct smtp_client *c) {
  return c->size_limit;
}

int smtp_client_is_esmtp(const struct smtp_client *c) {
  return c->esmtp;
}

int smtp_client_tls_active(const struct smtp_client *c) {
  return c->tls_active;
}
