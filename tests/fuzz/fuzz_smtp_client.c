/* tests/fuzz/fuzz_smtp_client.c — feeds arbitrary server bytes to one SMTP
 * client session that has messages to send.
 *
 * Input: byte 0 picks the configuration (low 5 bits: extensions the client
 * may use, by SMTP_CLIENT_EXT_* bit: PIPELINING, SIZE, 8BITMIME, SMTPUTF8,
 * CHUNKING; bit 6: LMTP (RFC 2033); bit 7: tiny limits and chunks); byte 1
 * picks the message
 * (recipients, body, DSN and 8-bit flags); byte 2 seeds the sizes the
 * bytes are fed in and the output is drained by; the rest is what the
 * server says. The host sends the message on READY up to three times,
 * then quits; at the end of input the connection is lost (eof).
 *
 * Invariants: no crash; the output never holds a bare CR or LF; output
 * stays bounded; every recipient of a message gets exactly one
 * RCPT_RESULT, in order, before the message's MESSAGE_DONE, which comes at
 * most once and leaves every recipient with a final status; a recipient
 * whose RCPT_RESULT was not a 2xx (refused, or decided with the whole
 * message) keeps that verdict (5xx FAIL, else DEFER) at MESSAGE_DONE, in
 * SMTP and LMTP alike; once the input is over and the connection lost,
 * every message sent is done and the session is closed. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/smtp_client.h"

#define FUZZ_MAX_RCPTS 5

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
  uint8_t last_out; /* the last output octet, for CR/LF checks */
};

static uint32_t fuzz_rand(struct fuzz_host *h) {
  h->rng = h->rng * 1103515245u + 12345u;
  return h->rng >> 16;
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
    }
    smtp_client_output_sent(h->c, take);
  }
}

static void fuzz_ready(struct fuzz_host *h) {
  if (h->in_flight) {
    abort(); /* READY while a message is open */
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
  for (size_t i = 0; i < h->msg->num_rcpts; i++) {
    struct smtp_reply r;
    enum smtp_client_status st = smtp_client_rcpt_result(h->c, i, &r);
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

static void fuzz_message(struct smtp_client_message *m, uint8_t sel) {
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
}

static void fuzz_config(struct smtp_client_config *cfg, uint8_t sel) {
  smtp_client_config_default(cfg);
  cfg->helo_name = "client.fuzz.example";
  cfg->extensions = (SMTP_CLIENT_EXT_ALL & ~0x1fu) | (sel & 0x1fu);
  cfg->lmtp = (sel & 0x40) != 0;
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3) {
    return 0;
  }
  struct smtp_client_config cfg;
  struct smtp_client_message msg;
  fuzz_config(&cfg, data[0]);
  fuzz_message(&msg, data[1]);
  struct fuzz_host h = {.msg = &msg,
                        .max_output = cfg.limits.max_output,
                        .chunk = cfg.chunk_size,
                        .rng = data[2] * 2654435761u + 1};
  data += 3;
  size -= 3;
  h.c = smtp_client_new(&cfg);
  if (h.c == NULL) {
    return 0;
  }
  fuzz_drain(&h);
  while (size > 0 && !h.closed) {
    size_t k = 1 + fuzz_rand(&h) % 64;
    k = k < size ? k : size;
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
  (void)smtp_client_extensions(h.c);
  (void)smtp_client_size_limit(h.c);
  (void)smtp_client_last_reply(h.c);
  smtp_client_free(h.c);
  return 0;
}
