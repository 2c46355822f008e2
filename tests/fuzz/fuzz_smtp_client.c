/* tests/fuzz/fuzz_smtp_client.c — feeds arbitrary server bytes to one SMTP
 * client session that has messages to send.
 *
 * Input: byte 0 picks the configuration (low 5 bits: extensions the client
 * may use, by SMTP_CLIENT_EXT_* bit: PIPELINING, SIZE, 8BITMIME, SMTPUTF8,
 * CHUNKING; bit 5: TLS, see byte 2; bit 6: LMTP (RFC 2033); bit 7: tiny
 * limits and chunks); byte 1 picks the message (recipients, body, DSN and
 * 8-bit flags); byte 2 seeds the sizes the bytes are fed in and the output
 * is drained by, and with TLS (byte 0 bit 5) also says: bits 0-1 the TLS
 * setting (MAY, REQUIRE, MAY with tls_active, REQUIRE with tls_active),
 * bit 2 REQUIRETLS for the message, bits 3-4 the handshake after
 * EV_STARTTLS (0: done; 1: done, but the feed pieces may span lines, so
 * bytes behind the 220 usually come in its piece: an injection; 2:
 * failed; 3: never reported, the host goes on feeding). With TLS, except
 * for 1, a feed piece ends at the end of a line at the latest, as a
 * server's 220 to STARTTLS ends its packet. The rest is what the server
 * says (inside TLS once the handshake is done). The host sends the
 * message on READY up to three times, then quits; at the end of input the
 * connection is lost (eof).
 *
 * Invariants: no crash; the output never holds a bare CR or LF; output
 * stays bounded; every recipient of a message gets exactly one
 * RCPT_RESULT, in order, before the message's MESSAGE_DONE, which comes at
 * most once and leaves every recipient with a final status; a recipient
 * whose RCPT_RESULT was not a 2xx (refused, or decided with the whole
 * message) keeps that verdict (5xx FAIL, else DEFER) at MESSAGE_DONE, in
 * SMTP and LMTP alike; once the input is over and the connection lost,
 * every message sent is done and the session is closed. STARTTLS (RFC
 * 3207): EV_STARTTLS comes at most once, only when configured and not
 * inside TLS already, right after a "STARTTLS" line with no output left
 * to send, and tls_started() then succeeds; without TLS configured no
 * STARTTLS line is ever sent; with REQUIRE, every line sent before TLS is
 * EHLO, HELO, LHLO, STARTTLS or QUIT (no MAIL in clear) and READY comes
 * only inside TLS; a REQUIRETLS message is delivered only inside TLS to a
 * server offering REQUIRETLS.
 *
 * The input after byte 2 is also taken as a message body, cut into up to
 * four spans: the one-pass scan must class it as a byte-by-byte check does
 * (plain: already in wire form; 8-bit), and a plain body must come out of
 * the copying fast path exactly as from the line-by-line path, call by
 * call, for DATA and BDAT. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The engine's source, for its static body functions (see above); the
 * library's smtp_client.o is then never linked. */
#include "proto/smtp_client.c"
#include "tests/common/wire_ref.h"

#define FUZZ_MAX_RCPTS 5
#define FUZZ_LINE 16 /* octets of an output line kept for the checks */

/* What the host does on EV_STARTTLS (byte 2, bits 3-4). */
enum fuzz_handshake {
  FUZZ_HS_DONE,
  FUZZ_HS_DONE_ANY, /* done; feed pieces may span lines */
  FUZZ_HS_FAILED,
  FUZZ_HS_SILENT,
};

struct fuzz_host {
  struct smtp_client *c;
  const struct smtp_client_message *msg;
  size_t max_output, chunk;
  uint32_t rng;
  int sent;                      /* messages started */
  int in_flight;                 /* a message started and not yet done */
  size_t num_results;            /* RCPT_RESULTs of the current message */
  int rcpt_code[FUZZ_MAX_RCPTS]; /* each one's RCPT_RESULT reply code */
  int closed;
  uint8_t last_out;              /* the last output octet, for CR/LF checks */
  enum smtp_client_tls_mode tls; /* configured */
  int tls_from_start;            /* config.tls_active */
  enum fuzz_handshake handshake;
  int starttls_seen;        /* EV_STARTTLS given */
  int tls_on;               /* TLS is up: from the start or after tls_started */
  char line[FUZZ_LINE + 1]; /* the start of the output line being sent */
  size_t line_len;
  char last_line[FUZZ_LINE + 1]; /* the start of the last whole line */
};

static uint32_t fuzz_rand(struct fuzz_host *h) {
  h->rng = h->rng * 1103515245u + 12345u;
  return h->rng >> 16;
}

/* 1 if line (its first FUZZ_LINE octets) starts with word. */
static int fuzz_line_is(const char *line, const char *word) {
  return strncmp(line, word, strlen(word)) == 0;
}

/* One whole output line was sent: the STARTTLS rules for lines. */
static void fuzz_line_done(struct fuzz_host *h) {
  h->line[h->line_len] = '\0';
  memcpy(h->last_line, h->line, sizeof(h->line));
  h->line_len = 0;
  if (h->tls == SMTP_CLIENT_TLS_NONE && !h->tls_from_start &&
      fuzz_line_is(h->line, "STARTTLS")) {
    abort(); /* STARTTLS without TLS configured */
  }
  if (h->tls == SMTP_CLIENT_TLS_REQUIRE && !h->tls_on &&
      !fuzz_line_is(h->line, "EHLO ") && !fuzz_line_is(h->line, "HELO ") &&
      !fuzz_line_is(h->line, "LHLO ") && !fuzz_line_is(h->line, "STARTTLS\r") &&
      !fuzz_line_is(h->line, "QUIT\r")) {
    abort(); /* TLS required, yet something else went in clear */
  }
}

/* Takes output in random pieces, checking every CR is followed by LF and
 * every LF follows a CR (across pieces too). */
static void fuzz_take_output(struct fuzz_host *h) {
  for (int rounds = 0; rounds < 1000000; rounds++) {
    const uint8_t *p;
    size_t n;
    smtp_client_output(h->c, &p, &n);
    if (n == 0) {
      return;
    }
    if (n > h->max_output + h->chunk + (64u << 10)) {
      abort(); /* output grew without bound */
    }
    size_t take = 1 + fuzz_rand(h) % n;
    for (size_t i = 0; i < take; i++) {
      if ((h->last_out == '\r') != (p[i] == '\n')) {
        abort(); /* bare CR or bare LF */
      }
      h->last_out = p[i];
      if (h->line_len < FUZZ_LINE) {
        h->line[h->line_len++] = (char)p[i];
      }
      if (p[i] == '\n') {
        fuzz_line_done(h);
      }
    }
    smtp_client_output_sent(h->c, take);
  }
}

static void fuzz_ready(struct fuzz_host *h) {
  if (h->in_flight) {
    abort(); /* READY while a message is open */
  }
  if (smtp_client_tls_active(h->c) != h->tls_on ||
      (h->tls == SMTP_CLIENT_TLS_REQUIRE && !h->tls_on)) {
    abort(); /* READY in clear although TLS is required */
  }
  if (h->sent < 3) {
    if (smtp_client_send_message(h->c, h->msg) != 0) {
      abort(); /* a valid message refused although ready */
    }
    h->sent++;
    h->in_flight = 1;
    h->num_results = 0;
  } else {
    smtp_client_quit(h->c);
  }
}

static void fuzz_rcpt_result(struct fuzz_host *h) {
  if (!h->in_flight || smtp_client_event_rcpt(h->c) != h->num_results ||
      h->num_results >= h->msg->num_rcpts) {
    abort(); /* out of order, twice, or for no message */
  }
  h->rcpt_code[h->num_results++] = smtp_client_reply(h->c)->code;
}

static void fuzz_message_done(struct fuzz_host *h) {
  if (!h->in_flight || h->num_results != h->msg->num_rcpts) {
    abort(); /* twice, or before every recipient's result */
  }
  h->in_flight = 0;
  int requiretls_ok =
      h->tls_on && (smtp_client_extensions(h->c) & SMTP_CLIENT_EXT_REQUIRETLS);
  for (size_t i = 0; i < h->msg->num_rcpts; i++) {
    struct smtp_reply r;
    enum smtp_client_status st = smtp_client_rcpt_result(h->c, i, &r);
    if (st == SMTP_CLIENT_OK && h->msg->requiretls && !requiretls_ok) {
      abort(); /* RFC 8689: delivered without TLS or REQUIRETLS */
    }
    if (st != SMTP_CLIENT_OK && st != SMTP_CLIENT_DEFER &&
        st != SMTP_CLIENT_FAIL) {
      abort();
    }
    if (r.code < 200 || r.code > 559 || strlen(r.text) >= SMTP_REPLY_MAX_TEXT) {
      abort();
    }
    int code = h->rcpt_code[i];
    if (code / 100 != 2 &&
        (st != (code / 100 == 5 ? SMTP_CLIENT_FAIL : SMTP_CLIENT_DEFER) ||
         r.code != code)) {
      abort(); /* a RCPT verdict changed after the fact */
    }
  }
}

/* EV_STARTTLS: checks when it may come, then plays the handshake. */
static void fuzz_starttls(struct fuzz_host *h) {
  const uint8_t *p;
  size_t n;
  if (h->tls == SMTP_CLIENT_TLS_NONE || h->tls_from_start || h->starttls_seen ||
      smtp_client_tls_active(h->c)) {
    abort(); /* STARTTLS not configured, or twice */
  }
  smtp_client_output(h->c, &p, &n);
  if (n != 0 || strcmp(h->last_line, "STARTTLS\r\n") != 0 ||
      smtp_client_timeout_class(h->c) != SMTP_CLIENT_TIMEOUT_NONE ||
      smtp_reply_class(smtp_client_reply(h->c)) != 2) {
    abort(); /* the handshake must follow the STARTTLS exchange at once */
  }
  h->starttls_seen = 1;
  switch (h->handshake) {
  case FUZZ_HS_DONE:
  case FUZZ_HS_DONE_ANY:
    if (smtp_client_tls_started(h->c) != 0 ||
        smtp_client_extensions(h->c) != 0) {
      abort(); /* refused, or capabilities kept from before TLS */
    }
    h->tls_on = 1;
    break;
  case FUZZ_HS_FAILED:
    smtp_client_tls_failed(h->c, "fuzz\r\nhandshake failure");
    break;
  case FUZZ_HS_SILENT:
    break; /* later input is clear text after the 220 */
  }
}

/* Runs the engine until it needs input or closes. */
static void fuzz_drain(struct fuzz_host *h) {
  for (int guard = 0; guard < 100000; guard++) {
    switch (smtp_client_next(h->c)) {
    case SMTP_CLIENT_NEED_INPUT:
      fuzz_take_output(h);
      return;
    case SMTP_CLIENT_EV_READY:
      fuzz_ready(h);
      break;
    case SMTP_CLIENT_EV_RCPT_RESULT:
      fuzz_rcpt_result(h);
      break;
    case SMTP_CLIENT_EV_MESSAGE_DONE:
      fuzz_message_done(h);
      break;
    case SMTP_CLIENT_EV_SESSION_ERROR:
      if (smtp_client_session_error(h->c) == SMTP_CLIENT_ERR_NONE) {
        abort();
      }
      break;
    case SMTP_CLIENT_EV_CLOSED:
      if (h->in_flight) {
        abort(); /* closed with a message never finished */
      }
      fuzz_take_output(h);
      h->closed = 1;
      return;
    case SMTP_CLIENT_EV_STARTTLS:
      fuzz_starttls(h);
      break;
    }
  }
  abort(); /* events without end */
}

static const struct smtp_client_span fuzz_bodies[4][2] = {
    {{(const uint8_t *)"Subject: a\r\n\r\nhello\r\n", 21}, {NULL, 0}},
    {{(const uint8_t *)".x\n..y\r\r\n.", 10}, {(const uint8_t *)"\n.\r", 3}},
    {{(const uint8_t *)"caf\xc3\xa9\r\n", 7}, {(const uint8_t *)"no end", 6}},
    {{NULL, 0}, {NULL, 0}},
};

static const struct smtp_client_rcpt fuzz_rcpts[FUZZ_MAX_RCPTS] = {
    {.addr = "a@b.example",
     .notify = SMTP_NOTIFY_SUCCESS,
     .orcpt = "rfc822;a+b@b.example"},
    {.addr = "j\xc3\xb6rg@b.example"},
    {.addr = "c@b.example", .notify = SMTP_NOTIFY_NEVER},
    {.addr = "d@b.example"},
    {.addr = "e@b.example", .notify = SMTP_NOTIFY_DELAY},
};

static void fuzz_message(struct smtp_client_message *m, uint8_t sel,
                         int requiretls) {
  memset(m, 0, sizeof(*m));
  m->sender = (sel & 0x40) ? "" : "s@a.example";
  m->num_rcpts = 1 + (sel & 7) % FUZZ_MAX_RCPTS;
  /* recipient 1 is non-ASCII: skip it unless bit 5 asks for it */
  m->rcpts = (sel & 0x20) ? fuzz_rcpts : fuzz_rcpts + 2;
  if (!(sel & 0x20) && m->num_rcpts > FUZZ_MAX_RCPTS - 2) {
    m->num_rcpts = FUZZ_MAX_RCPTS - 2;
  }
  m->body = fuzz_bodies[(sel >> 3) & 3];
  m->num_body = 2;
  m->body_8bit = (sel & 0x80) != 0;
  m->smtputf8 = (sel & 0x80) != 0;
  m->ret = (sel & 0x10) ? SMTP_RET_FULL : SMTP_RET_NONE;
  m->envid = (sel & 0x10) ? "env+id" : NULL;
  m->requiretls = requiretls;
}

static void fuzz_config(struct smtp_client_config *cfg, uint8_t sel,
                        uint8_t tls) {
  smtp_client_config_default(cfg);
  cfg->helo_name = "client.fuzz.example";
  cfg->extensions = (SMTP_CLIENT_EXT_ALL & ~0x1fu) | (sel & 0x1fu);
  cfg->lmtp = (sel & 0x40) != 0;
  if (sel & 0x20) {
    cfg->tls = (tls & 1) ? SMTP_CLIENT_TLS_REQUIRE : SMTP_CLIENT_TLS_MAY;
    cfg->tls_active = (tls & 2) != 0;
  }
  if (sel & 0x80) {
    cfg->chunk_size = 7;
    cfg->limits.max_reply_line = 40;
    cfg->limits.max_reply_lines = 4;
    cfg->limits.max_output = 64;
    cfg->limits.max_input = 128;
  }
}

/* Feeds one piece; a full input buffer is drained first. */
static void fuzz_feed(struct fuzz_host *h, const uint8_t *p, size_t k) {
  if (smtp_client_feed(h->c, p, k) != 0) {
    fuzz_drain(h);
    if (!h->closed && smtp_client_feed(h->c, p, k) != 0) {
      /* Still full: the engine holds input while it streams a body. Let
       * it stream: take output until the body is out. */
      fuzz_take_output(h);
      fuzz_drain(h);
      if (!h->closed && smtp_client_feed(h->c, p, k) != 0) {
        return; /* dropped, as a host that stops reading would */
      }
    }
  }
  fuzz_drain(h);
}

/* Fills the body to the end, `max` per call from rng, into out; each
 * call's octet count goes into out too. */
static void fuzz_fill(struct buf *out, const struct smtp_client_message *m,
                      int plain, int stuff, uint32_t rng) {
  struct smtp_client_body b;
  smtp_client_body_init(&b, m, plain);
  for (int calls = 0; !b.ended; calls++) {
    if (calls > 1000000) {
      abort(); /* the fill makes no progress */
    }
    rng = rng * 1103515245u + 12345u;
    size_t max = 1 + (rng >> 16) % ((rng >> 8) % 2 ? 8 : 4096);
    struct smtp_client_sink k = {.out = out};
    smtp_client_body_fill(&b, &k, max, stuff);
    if (k.failed || buf_printf(out, "|%zu|", k.n) != 0) {
      abort();
    }
  }
}

/* The input as a body: the scan against fuzz_plain, and for a plain body
 * the fast fill against the line-by-line one. */
static void fuzz_body(const uint8_t *p, size_t n, uint32_t rng) {
  struct smtp_client_span spans[4];
  size_t from = 0, num_spans = 0;
  while (num_spans < 3 && from < n) {
    rng = rng * 1103515245u + 12345u;
    size_t len = (rng >> 16) % (n - from + 1);
    spans[num_spans++] = (struct smtp_client_span){p + from, len};
    from += len;
  }
  spans[num_spans++] = (struct smtp_client_span){p + from, n - from};
  struct smtp_client_message m = {.body = spans, .num_body = num_spans};
  struct smtp_client_body_kind kind;
  smtp_client_body_scan(&kind, &m);
  int has_8bit = 0;
  for (size_t i = 0; i < n; i++) {
    has_8bit |= p[i] >= 0x80;
  }
  if (kind.plain != wire_ref_plain(p, n) || kind.has_8bit != has_8bit ||
      kind.len != n) {
    abort(); /* the scan disagrees with the reference */
  }
  if (!kind.plain) {
    return;
  }
  if (smtp_client_body_size(&m) != n) {
    abort(); /* RFC 1870 SIZE differs from the line-by-line count */
  }
  for (int stuff = 0; stuff <= 1; stuff++) {
    struct buf fast = {0}, slow = {0};
    fuzz_fill(&fast, &m, 1, stuff, rng);
    fuzz_fill(&slow, &m, 0, stuff, rng);
    if (fast.len != slow.len || memcmp(fast.data, slow.data, fast.len) != 0) {
      abort(); /* the fast path's octets or chunks differ */
    }
    buf_free(&fast);
    buf_free(&slow);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3) {
    return 0;
  }
  struct smtp_client_config cfg;
  struct smtp_client_message msg;
  int with_tls = (data[0] & 0x20) != 0;
  fuzz_config(&cfg, data[0], data[2]);
  fuzz_message(&msg, data[1], with_tls && (data[2] & 4));
  struct fuzz_host h = {.msg = &msg,
                        .max_output = cfg.limits.max_output,
                        .chunk = cfg.chunk_size,
                        .rng = data[2] * 2654435761u + 1,
                        .tls = cfg.tls,
                        .tls_from_start = cfg.tls_active,
                        .handshake = (enum fuzz_handshake)((data[2] >> 3) & 3),
                        .tls_on = cfg.tls_active};
  data += 3;
  size -= 3;
  fuzz_body(data, size, h.rng);
  h.c = smtp_client_new(&cfg);
  if (h.c == NULL) {
    return 0;
  }
  fuzz_drain(&h);
  int line_pieces = with_tls && h.handshake != FUZZ_HS_DONE_ANY;
  while (size > 0 && !h.closed) {
    size_t k = 1 + fuzz_rand(&h) % 64;
    k = k < size ? k : size;
    const uint8_t *lf = line_pieces ? memchr(data, '\n', k) : NULL;
    if (lf != NULL) {
      k = (size_t)(lf - data) + 1;
    }
    fuzz_feed(&h, data, k);
    (void)smtp_client_timeout_class(h.c);
    data += k;
    size -= k;
  }
  smtp_client_eof(h.c);
  fuzz_drain(&h);
  if (!h.closed) {
    abort(); /* eof must end the session */
  }
  if (smtp_client_tls_active(h.c) != h.tls_on) {
    abort();
  }
  (void)smtp_client_extensions(h.c);
  (void)smtp_client_size_limit(h.c);
  (void)smtp_client_last_reply(h.c);
  smtp_client_free(h.c);
  return 0;
}
