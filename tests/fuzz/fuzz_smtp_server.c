/* tests/fuzz/fuzz_smtp_server.c — feeds arbitrary client bytes to one SMTP
 * server session.
 *
 * Input: byte 0 picks the configuration (low 7 bits: advertised
 * extensions; bit 7: tiny limits, so every limit is reached quickly);
 * byte 1 seeds the chunk sizes the bytes are fed in (a chunk mostly ends
 * after a LF); if byte 1 has bit 7 set, byte 2 picks STARTTLS and AUTH
 * (FUZZ_TLS_* bits; inputs without it never meet them); the rest is what
 * the client sends. The host gives verdicts alternately accept and reject,
 * takes every body, finishes a TLS handshake before the next chunk (or,
 * with FUZZ_TLS_LATE, after feeding one more, which must be discarded),
 * and answers AUTH in turn with success, failure and 454. Invariants: the
 * output is always whole reply lines ("ddd" SP/"-" text CRLF); no verdict
 * is asked twice; a message comes with a sender, at least one recipient
 * and a body within the size limit; a body, by DATA or BDAT, is CRLF lines
 * (no other CR or LF, ending in CRLF unless empty) within the line and
 * header limits; input never stays stuck once verdicts are given; nothing
 * runs between STARTTLS and the handshake; AUTH happens only inside TLS,
 * with credentials within the limits, the password gone after the
 * verdict; MAIL passes tls_required and auth_required only when met; the
 * protocol name agrees with TLS and AUTH. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/smtp_server.h"

/* Byte 2, when byte 1 has bit 7 set. */
enum {
  FUZZ_TLS_STARTTLS = 1u << 0, /* SMTP_EXT_STARTTLS */
  FUZZ_TLS_AUTH = 1u << 1,     /* SMTP_EXT_AUTH */
  FUZZ_TLS_ACTIVE = 1u << 2,   /* config.tls_active */
  FUZZ_TLS_REQUIRED = 1u << 3, /* config.tls_required */
  FUZZ_TLS_AUTH_REQ = 1u << 4, /* config.auth_required */
  FUZZ_TLS_LATE = 1u << 5,     /* feed a chunk before the handshake ends */
};

struct fuzz_host {
  struct smtp_server *s;
  struct smtp_server_limits lim;
  unsigned flags; /* FUZZ_TLS_* */
  unsigned turn;  /* alternates verdicts */
  int closed;
  int tls_pending; /* EV_STARTTLS given, handshake not yet done */
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
static void fuzz_check_body(const struct fuzz_host *h, size_t from) {
  const uint8_t *p = h->body.data;
  size_t n = h->body.len, i = from, header = 0;
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

#define FUZZ_PREFIX "Received: from fuzz\r\n"

static void fuzz_message(struct fuzz_host *h) {
  const struct smtp_envelope *e = smtp_server_envelope(h->s);
  if (e->sender == NULL || e->num_rcpts == 0) {
    abort();
  }
  size_t prefix = smtp_server_body_prefix_len(h->s);
  smtp_server_take_body(h->s, &h->body);
  /* The prefix is ours, exactly, and not counted toward SIZE. */
  if ((prefix != 0 && prefix != sizeof FUZZ_PREFIX - 1) ||
      h->body.len < prefix || memcmp(h->body.data, FUZZ_PREFIX, prefix) != 0 ||
      h->body.len - prefix > h->lim.max_message_size) {
    abort();
  }
  fuzz_check_body(h, prefix); /* the client's part */
  buf_reset(&h->body);
  if (h->turn++ % 3 == 0) {
    smtp_server_reply_queued(h->s, "4Fz0q");
  } else {
    fuzz_verdict(h);
  }
}

/* The WITH name says "S" exactly inside TLS and "A" exactly once
 * authenticated (RFC 3848), unless the client used HELO. */
static void fuzz_check_protocol(const struct fuzz_host *h) {
  const char *p = smtp_server_protocol(h->s);
  size_t n = strlen(p);
  if (strcmp(p, "SMTP") == 0) {
    return;
  }
  int a = p[n - 1] == 'A';
  int tls = p[n - 1 - (size_t)a] == 'S';
  if (a != smtp_server_authenticated(h->s) ||
      tls != smtp_server_tls_active(h->s)) {
    abort();
  }
}

/* Credentials within the limits, only inside TLS; the host's verdict
 * rotates through success, failure and a 454 refusal. */
static void fuzz_auth(struct fuzz_host *h) {
  const char *user = smtp_server_auth_user(h->s);
  const char *pass = smtp_server_auth_password(h->s);
  if (!smtp_server_tls_active(h->s) || smtp_server_authenticated(h->s) ||
      user == NULL || pass == NULL || strlen(pass) > 1024 ||
      smtp_server_timeout_class(h->s) != SMTP_TIMEOUT_NONE) {
    abort();
  }
  size_t n = strlen(user);
  if (n == 0 || n > 255) {
    abort();
  }
  for (size_t i = 0; i < n; i++) {
    if ((unsigned char)user[i] < 0x20 || user[i] == 0x7f) {
      abort();
    }
  }
  char copy[256];
  memcpy(copy, user, n + 1);
  unsigned t = h->turn++ % 3;
  if (t == 2) {
    smtp_server_reject(h->s, 454, "4.7.0", "Too many\r\nfailures");
  } else {
    smtp_server_auth_result(h->s, t == 0);
  }
  if (smtp_server_auth_password(h->s) != NULL ||
      smtp_server_authenticated(h->s) != (t == 0) ||
      (t == 0 && strcmp(smtp_server_auth_user(h->s), copy) != 0)) {
    abort();
  }
}

/* MAIL gets through only when tls_required and auth_required are met; an
 * AUTH= value is kept only from an authenticated client. */
static void fuzz_mail(struct fuzz_host *h) {
  const struct smtp_envelope *e = smtp_server_envelope(h->s);
  int authed = smtp_server_authenticated(h->s);
  if (e->sender == NULL ||
      ((h->flags & FUZZ_TLS_REQUIRED) && !smtp_server_tls_active(h->s)) ||
      ((h->flags & FUZZ_TLS_AUTH_REQ) && !authed) ||
      (e->auth != NULL && !authed && e->auth[0] != '\0') ||
      (authed && !smtp_server_tls_active(h->s))) {
    abort();
  }
  fuzz_check_protocol(h);
  fuzz_verdict(h);
}

/* The handshake is done: the session restarts inside TLS. */
static void fuzz_tls_started(struct fuzz_host *h) {
  h->tls_pending = 0;
  smtp_server_tls_started(h->s);
  if (!smtp_server_tls_active(h->s) || smtp_server_helo(h->s) != NULL ||
      smtp_server_authenticated(h->s)) {
    abort();
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
      if (!h->tls_pending) {
        abort(); /* every verdict was given at once */
      }
      fuzz_check_output(h->s); /* the 220 leaves in clear */
      return;
    case SMTP_SERVER_EV_STARTTLS:
      if (h->tls_pending || smtp_server_tls_active(h->s) ||
          !(h->flags & FUZZ_TLS_STARTTLS) ||
          smtp_server_timeout_class(h->s) != SMTP_TIMEOUT_NONE) {
        abort();
      }
      h->tls_pending = 1;
      break;
    case SMTP_SERVER_EV_AUTH:
      fuzz_auth(h);
      break;
    case SMTP_SERVER_EV_MAIL:
      fuzz_mail(h);
      break;
    case SMTP_SERVER_EV_RCPT:
      if (smtp_server_pending_rcpt(h->s)->addr[0] == '\0') {
        abort();
      }
      fuzz_verdict(h);
      /* The host's trace field tops the body (set on some RCPTs only). */
      if (h->turn % 3 != 0) {
        (void)smtp_server_set_body_prefix(h->s, (const uint8_t *)FUZZ_PREFIX,
                                          sizeof FUZZ_PREFIX - 1);
      }
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

static void fuzz_config(struct smtp_server_config *cfg, uint8_t sel,
                        unsigned flags) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->hostname = "mx.fuzz.example";
  cfg->extensions = sel & SMTP_EXT_ALL;
  cfg->extensions |= (flags & FUZZ_TLS_STARTTLS) ? SMTP_EXT_STARTTLS : 0;
  cfg->extensions |= (flags & FUZZ_TLS_AUTH) ? SMTP_EXT_AUTH : 0;
  cfg->tls_active = (flags & FUZZ_TLS_ACTIVE) != 0;
  cfg->tls_required = (flags & FUZZ_TLS_REQUIRED) != 0;
  cfg->auth_required = (flags & FUZZ_TLS_AUTH_REQ) != 0;
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
  if (size < 2 || (size < 3 && (data[1] & 0x80))) {
    return 0;
  }
  unsigned flags = (data[1] & 0x80) ? data[2] : 0;
  size_t head = (data[1] & 0x80) ? 3 : 2;
  struct smtp_server_config cfg;
  fuzz_config(&cfg, data[0], flags);
  uint32_t rng = data[1] * 2654435761u + 1;
  data += head;
  size -= head;
  struct fuzz_host h = {.lim = cfg.limits, .flags = flags};
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
    int late = h.tls_pending && (flags & FUZZ_TLS_LATE);
    if (h.tls_pending && !late) {
      fuzz_tls_started(&h);
    }
    size_t discarded = smtp_server_discarded(h.s);
    if (smtp_server_feed(h.s, data, k) != 0) {
      fuzz_drain(&h);
      if (!h.closed && smtp_server_feed(h.s, data, k) != 0) {
        abort(); /* input stuck although every verdict was given */
      }
    }
    if (late) {
      /* Sent in clear after the 220: dropped, counted, never run. */
      if (smtp_server_discarded(h.s) != discarded + k) {
        abort();
      }
      fuzz_tls_started(&h);
    }
    fuzz_drain(&h);
    data += k;
    size -= k;
  }
  (void)smtp_server_timeout_class(h.s);
  (void)smtp_server_is_idle(h.s);
  fuzz_check_protocol(&h);
  smtp_server_free(h.s);
  buf_free(&h.body);
  return 0;
}
