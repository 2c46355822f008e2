/* tests/fuzz/fuzz_smtp_server.c — feeds arbitrary client bytes to one SMTP
 * server session.
 *
 * Input: byte 0 picks the configuration (low 7 bits: advertised
 * extensions; bit 7: tiny limits, so every limit is reached quickly);
 * byte 1 seeds the chunk sizes the bytes are fed in (a chunk mostly ends
 * after a LF); the rest is what the client sends. The host gives verdicts
 * alternately accept and reject and takes every body. Invariants: the output is
 * always whole reply lines
 * ("ddd" SP/"-" text CRLF); no verdict is asked twice; a message comes
 * with a sender, at least one recipient and a body within the size limit;
 * a body, by DATA or BDAT, is CRLF lines (no other CR or LF, ending in
 * CRLF unless empty) within the line and header limits; input never stays
 * stuck once verdicts are given. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/smtp_server.h"

struct fuzz_host {
  struct smtp_server *s;
  struct smtp_server_limits lim;
  unsigned turn; /* alternates verdicts */
  int closed;
  struct buf body;
};

/* Every reply line: three digits, SP or "-", text without CR/LF, CRLF. */
static void fuzz_check_output(struct smtp_server *s) {
  const uint8_t *p;
  size_t n;
  smtp_server_output(s, &p, &n);
  size_t i = 0;
  while (i < n) {
    const uint8_t *lf = memchr(p + i, '\n', n - i);
    if (lf == NULL) {
      abort(); /* a reply without its CRLF */
    }
    size_t len = (size_t)(lf - (p + i)) + 1;
    const uint8_t *l = p + i;
    if (len < 6 || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '9' ||
        l[2] < '0' || l[2] > '9' || (l[3] != ' ' && l[3] != '-') ||
        l[len - 2] != '\r' || memchr(l, '\r', len - 2) != NULL) {
      abort();
    }
    i += len;
  }
  /* Drain in two steps to exercise partial sends. */
  smtp_server_output_sent(s, n / 2);
  smtp_server_output(s, &p, &n);
  smtp_server_output_sent(s, n);
}

static void fuzz_verdict(struct fuzz_host *h) {
  if (h->turn++ % 2 == 0) {
    smtp_server_accept(h->s);
  } else {
    smtp_server_reject(h->s, 550, "5.7.1", "no\r\nthanks");
  }
}

/* The content rules hold for every message handed over: CR and LF only as
 * CRLF, lines (CRLF included) and the header section within the limits. */
static void fuzz_check_body(const struct fuzz_host *h) {
  const uint8_t *p = h->body.data;
  size_t n = h->body.len, i = 0, header = 0;
  int in_header = 1;
  while (i < n) {
    const uint8_t *lf = memchr(p + i, '\n', n - i);
    if (lf == NULL) {
      abort(); /* the last line lacks its CRLF */
    }
    size_t len = (size_t)(lf - (p + i)) + 1;
    if (len < 2 || lf[-1] != '\r' || memchr(p + i, '\r', len - 2) != NULL ||
        len > h->lim.max_text_line) {
      abort();
    }
    if (in_header) {
      header += len;
      in_header = len > 2;
    }
    i += len;
  }
  if (header > h->lim.max_header_size) {
    abort();
  }
}

static void fuzz_message(struct fuzz_host *h) {
  const struct smtp_envelope *e = smtp_server_envelope(h->s);
  if (e->sender == NULL || e->num_rcpts == 0) {
    abort();
  }
  smtp_server_take_body(h->s, &h->body);
  if (h->body.len > h->lim.max_message_size) {
    abort();
  }
  fuzz_check_body(h);
  buf_reset(&h->body);
  if (h->turn++ % 3 == 0) {
    smtp_server_reply_queued(h->s, "4Fz0q");
  } else {
    fuzz_verdict(h);
  }
}

/* Runs the engine until it needs input or closes. */
static void fuzz_drain(struct fuzz_host *h) {
  for (;;) {
    switch (smtp_server_next(h->s)) {
    case SMTP_SERVER_NEED_INPUT:
      fuzz_check_output(h->s);
      return;
    case SMTP_SERVER_WAIT_VERDICT:
      abort(); /* every verdict was given at once */
    case SMTP_SERVER_EV_MAIL:
      if (smtp_server_envelope(h->s)->sender == NULL) {
        abort();
      }
      fuzz_verdict(h);
      break;
    case SMTP_SERVER_EV_RCPT:
      if (smtp_server_pending_rcpt(h->s)->addr[0] == '\0') {
        abort();
      }
      fuzz_verdict(h);
      break;
    case SMTP_SERVER_EV_MESSAGE:
      fuzz_message(h);
      break;
    case SMTP_SERVER_EV_HELO:
    case SMTP_SERVER_EV_RSET:
      break;
    case SMTP_SERVER_EV_CLOSE:
      fuzz_check_output(h->s);
      h->closed = 1;
      return;
    }
  }
}

static void fuzz_config(struct smtp_server_config *cfg, uint8_t sel) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->hostname = "mx.fuzz.example";
  cfg->extensions = sel & SMTP_EXT_ALL;
  smtp_server_limits_default(&cfg->limits);
  if (sel & 0x80) {
    cfg->limits.max_command_line = 64;
    cfg->limits.max_text_line = 80;
    cfg->limits.max_message_size = 2000;
    cfg->limits.max_header_size = 300;
    cfg->limits.max_recipients = 3;
    cfg->limits.max_input_buffer = 4096;
    cfg->limits.max_errors = 8;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) {
    return 0;
  }
  struct smtp_server_config cfg;
  fuzz_config(&cfg, data[0]);
  uint32_t rng = data[1] * 2654435761u + 1;
  data += 2;
  size -= 2;
  struct fuzz_host h = {.lim = cfg.limits};
  h.s = smtp_server_new(&cfg);
  if (h.s == NULL) {
    return 0;
  }
  fuzz_drain(&h);
  while (size > 0 && !h.closed) {
    rng = rng * 1103515245u + 12345u;
    size_t k = 1 + (rng >> 16) % 97;
    if (k > size) {
      k = size;
    }
    /* Mostly end a chunk after a line, as a client waiting for replies
     * would; otherwise this would mostly test improper pipelining. */
    const uint8_t *lf = memchr(data, '\n', k);
    if (lf != NULL && (rng & 0x700) != 0) {
      k = (size_t)(lf - data) + 1;
    }
    if (smtp_server_feed(h.s, data, k) != 0) {
      fuzz_drain(&h);
      if (!h.closed && smtp_server_feed(h.s, data, k) != 0) {
        abort(); /* input stuck although every verdict was given */
      }
    }
    fuzz_drain(&h);
    data += k;
    size -= k;
  }
  (void)smtp_server_timeout_class(h.s);
  (void)smtp_server_is_idle(h.s);
  (void)smtp_server_protocol(h.s);
  smtp_server_free(h.s);
  buf_free(&h.body);
  return 0;
}
