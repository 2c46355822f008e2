/* tests/unit/proto/test_smtp_client.c — the SMTP client engine, driven by
 * scenario scripts: the fake server says this, the client must send
 * exactly that.
 *
 * A script is a list of steps: "S:text" the server sends text + CRLF
 * ("S=" raw, no CRLF added); "C:text" the client must have sent text +
 * CRLF next ("C=" raw); "X:timeout", "X:eof" host actions. Before each run
 * of S steps the client's whole output so far must equal the C steps so
 * far, so a client that sends too early or too much fails. The harness's
 * host sends the scenario's message num_msgs times (once if 0) on READY,
 * then quits (-1: at once; -2: it stays idle). Every scenario runs twice:
 * replies fed whole and fed one byte at a time (every split point of every
 * reply). Events are logged as READY, R<i>:<code>[/<enhanced>], DONE:<status
 * per recipient: O ok, D defer, F fail>:<code>, ERR:<T|P|X>:<code>, CLOSED.
 * A scenario with .lmtp runs the client in LMTP mode (RFC 2033).
 *
 * STARTTLS (RFC 3207): .tls and .tls_active configure the client; the
 * event STARTTLS is logged, READY inside TLS is logged READY:TLS, and the
 * host steps "X:tls" (handshake done: smtp_client_tls_started) and
 * "X:tlsfail:<why>" (smtp_client_tls_failed) stand for the handshake. A
 * scenario's .err, if set, is the SESSION_ERROR reply "<code> <enhanced>
 * <text>". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
/* The engine's source, not only its header: the plain-body tests call its
 * static body functions (the fast path against the line-by-line one).
 * Everything smtp_client.o defines is then defined here, so the linker
 * never takes it from the library. */
#include "proto/smtp_client.c"
#include "tests/common/wire_ref.h"

/* ---- messages ------------------------------------------------------------ */

#define SPAN(s)                                                                \
  { (const uint8_t *)(s), sizeof(s) - 1 }

static const struct smtp_client_span body_hello[] = {
    SPAN("Subject: t\r\n\r\nhello\r\n")}; /* 21 octets */
static const struct smtp_client_rcpt rcpts3[] = {
    {.addr = "b@r.example"}, {.addr = "c@r.example"}, {.addr = "d@r.example"}};

static const struct smtp_client_message msg1 = {
    .sender = "a@s.example",
    .rcpts = rcpts3,
    .num_rcpts = 1,
    .body = body_hello,
    .num_body = 1,
};
static const struct smtp_client_message msg3 = {
    .sender = "a@s.example",
    .rcpts = rcpts3,
    .num_rcpts = 3,
    .body = body_hello,
    .num_body = 1,
};
static const struct smtp_client_rcpt rcpts4[] = {{.addr = "b@r.example"},
                                                 {.addr = "c@r.example"},
                                                 {.addr = "d@r.example"},
                                                 {.addr = "e@r.example"}};
static const struct smtp_client_message msg4 = {
    .sender = "a@s.example",
    .rcpts = rcpts4,
    .num_rcpts = 4,
    .body = body_hello,
    .num_body = 1,
};
static const struct smtp_client_message msg_null_sender = {
    .sender = "",
    .rcpts = rcpts3,
    .num_rcpts = 1,
    .body = body_hello,
    .num_body = 1,
};

/* Dot-stuffing: lines starting with "." anywhere, also at a span start. */
static const struct smtp_client_span body_dots[] = {
    SPAN(".hidden\r\n..two\r\n.\r\nmid.dle\r\n"), SPAN(".span start\r\n"),
    SPAN("end")};
static const struct smtp_client_message msg_dots = {
    .sender = "a@s.example",
    .rcpts = rcpts3,
    .num_rcpts = 1,
    .body = body_dots,
    .num_body = 3,
};

/* Bare LF and CR: each becomes CRLF; a CRLF split over spans stays one. */
static const struct smtp_client_span body_bare[] = {
    SPAN("a\nb\rc\r\n\nd\r"), SPAN("\ne\r\r\n."), SPAN("\n")};
static const struct smtp_client_message msg_bare = {
    .sender = "a@s.example",
    .rcpts = rcpts3,
    .num_rcpts = 1,
    .body = body_bare,
    .num_body = 3,
};

static const struct smtp_client_span body_noeol[] = {
    SPAN("Subject: x\r\n\r\nno end")}; /* 20 + 2 octets */
static const struct smtp_client_message msg_noeol = {
    .sender = "a@s.example",
    .rcpts = rcpts3,
    .num_rcpts = 1,
    .body = body_noeol,
    .num_body = 1,
};

static const struct smtp_client_message msg_empty = {
    .sender = "a@s.example",
    .rcpts = rcpts3,
    .num_rcpts = 1,
};

static const struct smtp_client_span body_8bit[] = {
    SPAN("Subject: caf\xc3\xa9\r\n\r\nx\r\n")}; /* 18 + 5 */
static const struct smtp_client_message msg_8bit = {
    .sender = "a@s.example",
    .rcpts = rcpts3,
    .num_rcpts = 1,
    .body = body_8bit,
    .num_body = 1,
};
static const struct smtp_client_message msg_declared_8bit = {
    .sender = "a@s.example",
    .body_8bit = 1,
    .rcpts = rcpts3,
    .num_rcpts = 1,
    .body = body_hello,
    .num_body = 1,
};

static const struct smtp_client_rcpt rcpts_utf8[] = {
    {.addr = "j\xc3\xb6rg@r.example"}};
static const struct smtp_client_message msg_utf8 = {
    .sender = "a@s.example",
    .rcpts = rcpts_utf8,
    .num_rcpts = 1,
    .body = body_hello,
    .num_body = 1,
};

static const struct smtp_client_rcpt rcpts_dsn[] = {
    {.addr = "b@r.example",
     .notify = SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE,
     .orcpt = "rfc822;b+x=y@r.example"},
    {.addr = "c@r.example", .notify = SMTP_NOTIFY_NEVER},
    {.addr = "d@r.example", .notify = SMTP_NOTIFY_DELAY}};
static const struct smtp_client_message msg_dsn = {
    .sender = "a@s.example",
    .ret = SMTP_RET_HDRS,
    .envid = "Q1+env id",
    .rcpts = rcpts_dsn,
    .num_rcpts = 3,
    .body = body_hello,
    .num_body = 1,
};

/* RFC 8689: REQUIRETLS on MAIL, only inside TLS to a server offering it. */
static const struct smtp_client_message msg_requiretls = {
    .sender = "a@s.example",
    .rcpts = rcpts3,
    .num_rcpts = 1,
    .body = body_hello,
    .num_body = 1,
    .requiretls = 1,
};

/* ---- harness ------------------------------------------------------------- */

#define MAX_STEPS 64

struct scenario {
  const char *name;
  const char *steps[MAX_STEPS];
  const char *events;
  const struct smtp_client_message *msg; /* default msg1 */
  int num_msgs;      /* 0: one; -1: none, quit; -2: none, stay idle */
  unsigned use_off;  /* extensions the client won't use */
  size_t chunk_size; /* default 16 */
  int reset_first;   /* RSET on the first READY */
  int lmtp;          /* LMTP mode */
  enum smtp_client_tls_mode tls;
  int tls_active;  /* config.tls_active: TLS from the start */
  const char *err; /* the SESSION_ERROR reply, if checked */
};

struct host {
  const struct scenario *sc;
  struct smtp_client *c;
  struct buf out;
  char events[4096];
  int sent, closed, reset_done;
};

static void add_event(struct host *h, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void add_event(struct host *h, const char *fmt, ...) {
  size_t n = strlen(h->events);
  if (n > 0 && n + 1 < sizeof(h->events)) {
    h->events[n++] = ' ';
    h->events[n] = '\0';
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(h->events + n, sizeof(h->events) - n, fmt, ap);
  va_end(ap);
}

/* Takes all output, half of it at a time (short sends); taking output lets
 * the engine produce more body. */
static void host_collect(struct host *h) {
  for (;;) {
    const uint8_t *p;
    size_t n;
    smtp_client_output(h->c, &p, &n);
    if (n == 0) {
      return;
    }
    size_t take = n > 1 ? n / 2 : n;
    assert_int_equal(buf_append(&h->out, p, take), 0);
    smtp_client_output_sent(h->c, take);
  }
}

static char status_char(enum smtp_client_status st) {
  static const char map[] = "PAODF";
  return map[st];
}

static void host_done(struct host *h) {
  char st[64];
  size_t n = h->sc->msg ? h->sc->msg->num_rcpts : msg1.num_rcpts;
  size_t counts[5] = {0};
  for (size_t i = 0; i < n && i + 1 < sizeof(st); i++) {
    struct smtp_reply r;
    enum smtp_client_status s = smtp_client_rcpt_result(h->c, i, &r);
    st[i] = status_char(s);
    st[i + 1] = '\0';
    counts[s]++;
    assert_true(r.code >= 200 && r.code <= 559);
  }
  for (int s = 0; s < 5; s++) {
    assert_int_equal(smtp_client_num_status(h->c, s), counts[s]);
  }
  add_event(h, "DONE:%s:%d", st, smtp_client_reply(h->c)->code);
}

static void host_ready(struct host *h) {
  const struct scenario *sc = h->sc;
  int want = sc->num_msgs == 0 ? 1 : sc->num_msgs < 0 ? 0 : sc->num_msgs;
  add_event(h, smtp_client_tls_active(h->c) ? "READY:TLS" : "READY");
  if (sc->reset_first && !h->reset_done) {
    h->reset_done = 1;
    assert_int_equal(smtp_client_reset(h->c), 0);
  } else if (h->sent < want) {
    h->sent++;
    assert_int_equal(smtp_client_send_message(h->c, sc->msg ? sc->msg : &msg1),
                     0);
  } else if (sc->num_msgs != -2) {
    smtp_client_quit(h->c);
  }
}

/* The SESSION_ERROR reply, if the scenario says what it must be. */
static void host_check_err(struct host *h) {
  const struct smtp_reply *r = smtp_client_reply(h->c);
  char got[1024];
  if (h->sc->err == NULL) {
    return;
  }
  snprintf(got, sizeof(got), "%d %s %s", r->code, r->enhanced, r->text);
  if (strcmp(got, h->sc->err) != 0) {
    fail_msg("%s: session error\n got  %s\n want %s", h->sc->name, got,
             h->sc->err);
  }
}

/* EV_STARTTLS: the 220 is in, nothing is left to send in clear, no timer
 * runs; the handshake is a later step (X:tls, X:tlsfail). */
static void host_starttls(struct host *h) {
  const uint8_t *p;
  size_t n;
  add_event(h, "STARTTLS");
  assert_int_equal(smtp_reply_class(smtp_client_reply(h->c)), 2);
  assert_int_equal(smtp_client_tls_active(h->c), 0);
  assert_int_equal(smtp_client_timeout_class(h->c), SMTP_CLIENT_TIMEOUT_NONE);
  smtp_client_output(h->c, &p, &n);
  assert_int_equal(n, 0);
}

/* Plays the host until the engine needs input. */
static void host_drain(struct host *h) {
  static const char errs[] = "NTPX";
  for (;;) {
    const struct smtp_reply *r;
    switch (smtp_client_next(h->c)) {
    case SMTP_CLIENT_NEED_INPUT:
      host_collect(h);
      return;
    case SMTP_CLIENT_EV_READY:
      host_ready(h);
      break;
    case SMTP_CLIENT_EV_RCPT_RESULT:
      r = smtp_client_reply(h->c);
      add_event(h, "R%zu:%d%s%s", smtp_client_event_rcpt(h->c), r->code,
                r->enhanced[0] ? "/" : "", r->enhanced);
      break;
    case SMTP_CLIENT_EV_MESSAGE_DONE:
      host_done(h);
      break;
    case SMTP_CLIENT_EV_SESSION_ERROR:
      add_event(h, "ERR:%c:%d", errs[smtp_client_session_error(h->c)],
                smtp_client_reply(h->c)->code);
      host_check_err(h);
      break;
    case SMTP_CLIENT_EV_STARTTLS:
      host_starttls(h);
      break;
    case SMTP_CLIENT_EV_CLOSED:
      add_event(h, "CLOSED");
      host_collect(h);
      h->closed = 1;
      return;
    }
  }
}

static void host_feed(struct host *h, const char *p, size_t n, int bytes) {
  size_t step = bytes ? 1 : n;
  for (size_t i = 0; i < n && !h->closed; i += step) {
    size_t k = n - i < step ? n - i : step;
    assert_int_equal(smtp_client_feed(h->c, (const uint8_t *)p + i, k), 0);
    host_drain(h);
  }
}

/* Shows CR and LF for failure messages. */
static void escape(char *dst, size_t cap, const uint8_t *p, size_t n) {
  size_t j = 0;
  for (size_t i = 0; i < n && j + 5 < cap; i++) {
    if (p[i] == '\r' || p[i] == '\n') {
      dst[j++] = '\\';
      dst[j++] = p[i] == '\r' ? 'r' : 'n';
    } else {
      dst[j++] = (char)p[i];
    }
  }
  dst[j] = '\0';
}

static void check_output(const struct host *h, const struct buf *want,
                         const char *label, int bytes, size_t step) {
  if (h->out.len == want->len &&
      (want->len == 0 || memcmp(h->out.data, want->data, want->len) == 0)) {
    return;
  }
  static char g[8192], w[8192];
  escape(g, sizeof(g), h->out.data, h->out.len);
  escape(w, sizeof(w), want->data, want->len);
  fail_msg("%s (%s) before step %zu: output\n got  %s\n want %s", label,
           bytes ? "bytewise" : "whole", step, g, w);
}

/* Every CR in the output is followed by LF and every LF preceded by CR. */
static void check_wire(const uint8_t *p, size_t n, const char *label) {
  for (size_t i = 0; i < n; i++) {
    if ((p[i] == '\r' && (i + 1 == n || p[i + 1] != '\n')) ||
        (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))) {
      fail_msg("%s: bare CR or LF at output offset %zu", label, i);
    }
  }
}

static struct smtp_client *new_client_tls(unsigned use_off, size_t chunk,
                                          int lmtp,
                                          enum smtp_client_tls_mode tls,
                                          int tls_active) {
  struct smtp_client_config cfg;
  smtp_client_config_default(&cfg);
  cfg.helo_name = "client.example";
  cfg.lmtp = lmtp;
  cfg.extensions = SMTP_CLIENT_EXT_ALL & ~use_off;
  cfg.chunk_size = chunk ? chunk : 16;
  cfg.tls = tls;
  cfg.tls_active = tls_active;
  struct smtp_client *c = smtp_client_new(&cfg);
  assert_non_null(c);
  return c;
}

static struct smtp_client *new_client(unsigned use_off, size_t chunk,
                                      int lmtp) {
  return new_client_tls(use_off, chunk, lmtp, SMTP_CLIENT_TLS_NONE, 0);
}

static void run_scenario(const struct scenario *sc, int bytes) {
  struct host h = {.sc = sc};
  struct buf want = {0};
  h.c = new_client_tls(sc->use_off, sc->chunk_size, sc->lmtp, sc->tls,
                       sc->tls_active);
  host_drain(&h);
  int prev_s = 0;
  for (size_t i = 0; i < MAX_STEPS && sc->steps[i] != NULL; i++) {
    const char *st = sc->steps[i];
    int raw = st[1] == '=';
    if (st[0] == 'S') {
      if (!prev_s) {
        check_output(&h, &want, sc->name, bytes, i);
      }
      assert_false(h.closed);
      char line[2048];
      int n = snprintf(line, sizeof(line), "%s%s", st + 2, raw ? "" : "\r\n");
      host_feed(&h, line, (size_t)n, bytes);
      prev_s = 1;
    } else if (st[0] == 'C') {
      assert_int_equal(buf_append_str(&want, st + 2), 0);
      if (!raw) {
        assert_int_equal(buf_append_str(&want, "\r\n"), 0);
      }
      prev_s = 0;
    } else {
      check_output(&h, &want, sc->name, bytes, i);
      if (strcmp(st, "X:timeout") == 0) {
        smtp_client_timeout(h.c);
      } else if (strcmp(st, "X:eof") == 0) {
        smtp_client_eof(h.c);
      } else if (strcmp(st, "X:tls") == 0) {
        assert_int_equal(smtp_client_tls_started(h.c), 0);
        assert_int_equal(smtp_client_tls_active(h.c), 1);
      } else if (strncmp(st, "X:tlsfail:", 10) == 0) {
        smtp_client_tls_failed(h.c, st + 10);
      } else {
        fail_msg("%s: bad step %s", sc->name, st);
      }
      host_drain(&h);
      prev_s = 0;
    }
  }
  check_output(&h, &want, sc->name, bytes, MAX_STEPS);
  check_wire(h.out.data, h.out.len, sc->name);
  if (strcmp(h.events, sc->events) != 0) {
    fail_msg("%s (%s): events\n got  %s\n want %s", sc->name,
             bytes ? "bytewise" : "whole", h.events, sc->events);
  }
  smtp_client_free(h.c);
  buf_free(&h.out);
  buf_free(&want);
}

/* ---- scenarios ----------------------------------------------------------- */

#define GREET "S:220 mx.example ESMTP"
#define EHLO "C:EHLO client.example"
/* EHLO replies: plain (no extensions), with PIPELINING and friends. */
#define E_PLAIN "S:250 mx.example"
#define E_PIPE                                                                 \
  "S:250-mx.example", "S:250-PIPELINING", "S:250 ENHANCEDSTATUSCODES"
#define HELLO GREET, EHLO
#define BODY_HELLO "C:Subject: t", "C:", "C:hello", "C:."
#define QUIT "C:QUIT", "S:221 2.0.0 Bye"
#define MAIL "C:MAIL FROM:<a@s.example>"
#define RCPT_B "C:RCPT TO:<b@r.example>"
#define RCPT_C "C:RCPT TO:<c@r.example>"
#define RCPT_D "C:RCPT TO:<d@r.example>"
#define OK_MAIL "S:250 2.1.0 Ok"
#define OK_RCPT "S:250 2.1.5 Ok"
#define GO "S:354 End data with <CR><LF>.<CR><LF>"
#define QUEUED "S:250 2.0.0 Ok: queued as Q1"
/* LMTP: LHLO and its reply with PIPELINING (as Dovecot's). */
#define LHLO "C:LHLO client.example"
#define L_PIPE                                                                 \
  "S:250-lmtp.example", "S:250-PIPELINING", "S:250-ENHANCEDSTATUSCODES",       \
      "S:250 8BITMIME"
#define RCPT_E "C:RCPT TO:<e@r.example>"
/* One whole plain transaction of msg1. */
#define TXN1 MAIL, OK_MAIL, RCPT_B, OK_RCPT, "C:DATA", GO, BODY_HELLO, QUEUED
#define TXN1_EV "R0:250/2.1.5 DONE:O:250"
/* STARTTLS (RFC 3207): an EHLO reply offering it; STARTTLS accepted and
 * the handshake done. */
#define E_STARTTLS "S:250-mx.example", "S:250 STARTTLS"
#define TLS_GO "C:STARTTLS", "S:220 2.0.0 Ready to start TLS", "X:tls"
#define NOT_OFFERED                                                            \
  "451 4.7.4 TLS is required, but was not offered by the server"

static const struct scenario scenarios[] = {
    /* greeting */
    {.name = "plain session",
     .steps = {HELLO, E_PLAIN, TXN1, QUIT},
     .events = "READY " TXN1_EV " READY CLOSED"},
    {.name = "multi-line greeting",
     .steps = {"S:220-mx.example ESMTP", "S:220-second line", "S:220 third",
               EHLO, E_PLAIN, TXN1, QUIT},
     .events = "READY " TXN1_EV " READY CLOSED"},
    {.name = "greeting with bare LF line ends",
     .steps = {"S=220 mx.example\n", EHLO, "S=250 mx.example\n", TXN1, QUIT},
     .events = "READY " TXN1_EV " READY CLOSED"},
    {.name = "greeting 421",
     .steps = {"S:421 4.3.2 mx.example busy"},
     .events = "ERR:T:421 CLOSED"},
    {.name = "greeting 554",
     .steps = {"S:554 5.7.1 no service for you", QUIT},
     .events = "ERR:P:554 CLOSED"},
    {.name = "greeting 450",
     .steps = {"S:450 try later", QUIT},
     .events = "ERR:T:450 CLOSED"},
    {.name = "greeting eof after quit",
     .steps = {"S:554 go away", "C:QUIT", "X:eof"},
     .events = "ERR:P:554 CLOSED"},
    {.name = "greeting garbage",
     .steps = {"S:hello there"},
     .events = "ERR:X:451 CLOSED"},
    {.name = "greeting timeout",
     .steps = {"X:timeout"},
     .events = "ERR:T:451 CLOSED"},

    /* EHLO / HELO */
    {.name = "ehlo 502 falls back to helo",
     .steps = {GREET, EHLO, "S:502 5.5.1 command not implemented",
               "C:HELO client.example", "S:250 mx.example", TXN1, QUIT},
     .events = "READY " TXN1_EV " READY CLOSED"},
    {.name = "ehlo 500 then helo 550",
     .steps = {GREET, EHLO, "S:500 what", "C:HELO client.example", "S:550 no",
               QUIT},
     .events = "ERR:P:550 CLOSED"},
    {.name = "ehlo 451",
     .steps = {GREET, EHLO, "S:451 4.3.0 later", QUIT},
     .events = "ERR:T:451 CLOSED"},
    {.name = "helo 421",
     .steps = {GREET, EHLO, "S:500 what", "C:HELO client.example", "S:421 bye"},
     .events = "ERR:T:421 CLOSED"},
    {.name = "helo leaves no extensions",
     .steps = {GREET, EHLO, "S:554 no ehlo", "C:HELO client.example",
               "S:250-mx.example", "S:250 PIPELINING", TXN1, QUIT},
     .events = "READY " TXN1_EV " READY CLOSED"},
    {.name = "ehlo keywords lower case and unknown",
     .steps = {HELLO, "S:250-mx.example", "S:250-pipelining", "S:250-X-FOO bar",
               "S:250-AUTH PLAIN", "S:250 size 1000", MAIL " SIZE=21", RCPT_B,
               "C:DATA", OK_MAIL, OK_RCPT, GO, BODY_HELLO, QUEUED, QUIT},
     .events = "READY " TXN1_EV " READY CLOSED"},

    /* pipelining */
    {.name = "pipelined one of three refused",
     .steps = {HELLO, E_PIPE, MAIL, RCPT_B, RCPT_C, RCPT_D, "C:DATA", OK_MAIL,
               OK_RCPT, "S:550 5.1.1 <c@r.example>: no such user", OK_RCPT, GO,
               BODY_HELLO, QUEUED, QUIT},
     .events = "READY R0:250/2.1.5 R1:550/5.1.1 R2:250/2.1.5 DONE:OFO:250 "
               "READY CLOSED",
     .msg = &msg3},
    {.name = "pipelined all refused, DATA refused",
     .steps = {HELLO, E_PIPE, MAIL, RCPT_B, RCPT_C, RCPT_D, "C:DATA", OK_MAIL,
               "S:550 5.1.1 no", "S:550 5.1.1 no", "S:450 4.2.0 later",
               "S:554 5.5.1 Error: no valid recipients", "C:RSET",
               "S:250 2.0.0 Ok", QUIT},
     .events = "READY R0:550/5.1.1 R1:550/5.1.1 R2:450/4.2.0 DONE:FFD:554 "
               "READY CLOSED",
     .msg = &msg3},
    {.name = "pipelined all refused, DATA 354 gets a lone dot",
     .steps = {HELLO, E_PIPE, MAIL, RCPT_B, RCPT_C, RCPT_D, "C:DATA", OK_MAIL,
               "S:550 5.1.1 no", "S:550 5.1.1 no", "S:550 5.1.1 no", GO, "C:.",
               "S:554 5.5.1 no recipients", "C:RSET", "S:250 2.0.0 Ok", QUIT},
     .events = "READY R0:550/5.1.1 R1:550/5.1.1 R2:550/5.1.1 DONE:FFF:550 "
               "READY CLOSED",
     .msg = &msg3},
    {.name = "pipelined MAIL refused",
     .steps = {HELLO, E_PIPE, MAIL, RCPT_B, RCPT_C, RCPT_D, "C:DATA",
               "S:553 5.1.8 bad sender", "S:503 5.5.1 need MAIL",
               "S:503 5.5.1 need MAIL", "S:503 5.5.1 need MAIL",
               "S:503 5.5.1 need MAIL", QUIT},
     .events = "READY R0:553/5.1.8 R1:553/5.1.8 R2:553/5.1.8 DONE:FFF:553 "
               "READY CLOSED",
     .msg = &msg3},
    {.name = "pipelined MAIL refused, DATA 354",
     .steps = {HELLO, E_PIPE, MAIL, RCPT_B, "C:DATA", "S:451 4.3.0 later",
               "S:503 need MAIL", GO, "C:.", "S:250 hmm", "C:RSET", "S:250 Ok",
               QUIT},
     .events = "READY R0:451/4.3.0 DONE:D:451 READY CLOSED"},
    {.name = "pipelined 421 at RCPT",
     .steps = {HELLO, E_PIPE, MAIL, RCPT_B, RCPT_C, RCPT_D, "C:DATA", OK_MAIL,
               OK_RCPT, "S:421 4.3.2 shutting down"},
     .events =
         "READY R0:250/2.1.5 R1:421/4.3.2 R2:421/4.3.2 DONE:DDD:421 ERR:T:421 "
         "CLOSED",
     .msg = &msg3},
    {.name = "pipelined garbage at RCPT",
     .steps = {HELLO, E_PIPE, MAIL, RCPT_B, RCPT_C, RCPT_D, "C:DATA", OK_MAIL,
               OK_RCPT, "S:25O oops"},
     .events =
         "READY R0:250/2.1.5 R1:451/4.5.0 R2:451/4.5.0 DONE:DDD:451 ERR:X:451 "
         "CLOSED",
     .msg = &msg3},
    {.name = "pipelined DATA refused after accepted recipients",
     .steps = {HELLO, E_PIPE, MAIL, RCPT_B, "C:DATA", OK_MAIL, OK_RCPT,
               "S:554 5.7.0 no data for you", "C:RSET", "S:250 Ok", QUIT},
     .events = "READY R0:250/2.1.5 DONE:F:554 READY CLOSED"},

    /* without pipelining: one command at a time */
    {.name = "no pipelining 452 per recipient",
     .steps = {HELLO, E_PLAIN, MAIL, OK_MAIL, RCPT_B, OK_RCPT, RCPT_C,
               "S:452 4.5.3 too many recipients", RCPT_D, OK_RCPT, "C:DATA", GO,
               BODY_HELLO, QUEUED, QUIT},
     .events = "READY R0:250/2.1.5 R1:452/4.5.3 R2:250/2.1.5 DONE:ODO:250 "
               "READY CLOSED",
     .msg = &msg3},
    {.name = "no pipelining all refused sends no DATA",
     .steps = {HELLO, E_PLAIN, MAIL, OK_MAIL, RCPT_B, "S:550 5.1.1 no", RCPT_C,
               "S:550 5.1.1 no", RCPT_D, "S:550 5.1.1 no", "C:RSET", "S:250 Ok",
               QUIT},
     .events = "READY R0:550/5.1.1 R1:550/5.1.1 R2:550/5.1.1 DONE:FFF:550 "
               "READY CLOSED",
     .msg = &msg3},
    {.name = "no pipelining MAIL refused",
     .steps = {HELLO, E_PLAIN, MAIL, "S:550 5.7.1 sender rejected", QUIT},
     .events = "READY R0:550/5.7.1 DONE:F:550 READY CLOSED"},
    {.name = "pipelining not used when switched off",
     .steps = {HELLO, E_PIPE, TXN1, QUIT},
     .events = "READY " TXN1_EV " READY CLOSED",
     .use_off = SMTP_CLIENT_EXT_PIPELINING},
    {.name = "null sender",
     .steps = {HELLO, E_PLAIN, "C:MAIL FROM:<>", OK_MAIL, RCPT_B, OK_RCPT,
               "C:DATA", GO, BODY_HELLO, QUEUED, QUIT},
     .events = "READY " TXN1_EV " READY CLOSED",
     .msg = &msg_null_sender},

    /* end of data */
    {.name = "DATA 354 then 451 at the end",
     .steps = {HELLO, E_PLAIN, MAIL, OK_MAIL, RCPT_B, OK_RCPT, "C:DATA", GO,
               BODY_HELLO, "S:451 4.3.0 queue file write error", QUIT},
     .events = "READY R0:250/2.1.5 DONE:D:451 READY CLOSED"},
    {.name = "DATA 354 then 554 at the end",
     .steps = {HELLO, E_PIPE, MAIL, RCPT_B, RCPT_C, "C:DATA", OK_MAIL, OK_RCPT,
               OK_RCPT, GO, BODY_HELLO, "S:554 5.7.1 spam", QUIT},
     .events = "READY R0:250/2.1.5 R1:250/2.1.5 DONE:FF:554 READY CLOSED",
     .msg = &(const struct smtp_client_message){.sender = "a@s.example",
                                                .rcpts = rcpts3,
                                                .num_rcpts = 2,
                                                .body = body_hello,
                                                .num_body = 1}},
    {.name = "421 after the end of data",
     .steps = {HELLO, E_PLAIN, MAIL, OK_MAIL, RCPT_B, OK_RCPT, "C:DATA", GO,
               BODY_HELLO, "S:421 4.4.2 timeout"},
     .events = "READY R0:250/2.1.5 DONE:D:421 ERR:T:421 CLOSED"},
    {.name = "eof waiting for the end of data",
     .steps = {HELLO, E_PLAIN, MAIL, OK_MAIL, RCPT_B, OK_RCPT, "C:DATA", GO,
               BODY_HELLO, "X:eof"},
     .events = "READY R0:250/2.1.5 DONE:D:451 ERR:T:451 CLOSED"},
    {.name = "timeout waiting for RCPT",
     .steps = {HELLO, E_PLAIN, MAIL, OK_MAIL, RCPT_B, "X:timeout"},
     .events = "READY R0:451/4.4.2 DONE:D:451 ERR:T:451 CLOSED"},

    /* body wire form */
    {.name = "dot-stuffing",
     .steps = {HELLO, E_PLAIN, MAIL, OK_MAIL, RCPT_B, OK_RCPT, "C:DATA", GO,
               "C:..hidden", "C:...two", "C:..", "C:mid.dle", "C:..span start",
               "C:end", "C:.", QUEUED, QUIT},
     .events = "READY " TXN1_EV " READY CLOSED",
     .msg = &msg_dots},
    {.name = "bare LF and CR made CRLF",
     .steps = {HELLO,        "S:250-mx.example",
               "S:250 SIZE", MAIL " SIZE=22",
               OK_MAIL,      RCPT_B,
               OK_RCPT,      "C:DATA",
               GO,           "C:a",
               "C:b",        "C:c",
               "C:",         "C:d",
               "C:e",        "C:",
               "C:..",       "C:.",
               QUEUED,       QUIT},
     .events = "READY " TXN1_EV " READY CLOSED",
     .msg = &msg_bare},
    {.name = "body without final CRLF",
     .steps = {HELLO, "S:250-mx.example", "S:250 SIZE 22", MAIL " SIZE=22",
               OK_MAIL, RCPT_B, OK_RCPT, "C:DATA", GO, "C:Subject: x",
               "C:", "C:no end", "C:.", QUEUED, QUIT},
     .events = "READY " TXN1_EV " READY CLOSED",
     .msg = &msg_noeol},
    {.name = "empty body",
     .steps = {HELLO, E_PLAIN, MAIL, OK_MAIL, RCPT_B, OK_RCPT, "C:DATA", GO,
               "C:.", QUEUED, QUIT},
     .events = "READY " TXN1_EV " READY CLOSED",
     .msg = &msg_empty},

    /* SIZE, 8BITMIME, SMTPUTF8 */
    {.name = "SIZE too big",
     .steps = {HELLO, "S:250-mx.example", "S:250 SIZE 20", QUIT},
     .events = "READY R0:552/5.3.4 DONE:F:552 READY CLOSED"},
    {.name = "SIZE exactly fits",
     .steps = {HELLO, "S:250-mx.example", "S:250 SIZE 21", MAIL " SIZE=21",
               OK_MAIL, RCPT_B, OK_RCPT, "C:DATA", GO, BODY_HELLO, QUEUED,
               QUIT},
     .events = "READY " TXN1_EV " READY CLOSED"},
    {.name = "SIZE 0 is no limit",
     .steps = {HELLO, "S:250-mx.example", "S:250 SIZE 0", MAIL " SIZE=21",
               OK_MAIL, RCPT_B, OK_RCPT, "C:DATA", GO, BODY_HELLO, QUEUED,
               QUIT},
     .events = "READY " TXN1_EV " READY CLOSED"},
    {.name = "8bit without 8BITMIME",
     .steps = {HELLO, E_PLAIN, QUIT},
     .events = "READY R0:554/5.6.3 DONE:F:554 READY CLOSED",
     .msg = &msg_8bit},
    {.name = "8bit with 8BITMIME",
     .steps = {HELLO, "S:250-mx.example", "S:250 8BITMIME",
               MAIL " BODY=8BITMIME", OK_MAIL, RCPT_B, OK_RCPT, "C:DATA", GO,
               "C:Subject: caf\xc3\xa9", "C:", "C:x", "C:.", QUEUED, QUIT},
     .events = "READY " TXN1_EV " READY CLOSED",
     .msg = &msg_8bit},
    {.name = "8bit with 8BITMIME switched off",
     .steps = {HELLO, "S:250-mx.example", "S:250 8BITMIME", QUIT},
     .events = "READY R0:554/5.6.3 DONE:F:554 READY CLOSED",
     .msg = &msg_8bit,
     .use_off = SMTP_CLIENT_EXT_8BITMIME},
    {.name = "declared 8bit but 7bit content without 8BITMIME",
     .steps = {HELLO, E_PLAIN, TXN1, QUIT},
     .events = "READY " TXN1_EV " READY CLOSED",
     .msg = &msg_declared_8bit},
    {.name = "declared 8bit with 8BITMIME",
     .steps = {HELLO, "S:250-mx.example", "S:250 8BITMIME",
               MAIL " BODY=8BITMIME", OK_MAIL, RCPT_B, OK_RCPT, "C:DATA", GO,
               BODY_HELLO, QUEUED, QUIT},
     .events = "READY " TXN1_EV " READY CLOSED",
     .msg = &msg_declared_8bit},
    {.name = "SMTPUTF8 offered",
     .steps = {HELLO, "S:250-mx.example", "S:250 SMTPUTF8", MAIL " SMTPUTF8",
               OK_MAIL, "C:RCPT TO:<j\xc3\xb6rg@r.example>", OK_RCPT, "C:DATA",
               GO, BODY_HELLO, QUEUED, QUIT},
     .events = "READY " TXN1_EV " READY CLOSED",
     .msg = &msg_utf8},
    {.name = "SMTPUTF8 not offered",
     .steps = {HELLO, "S:250-mx.example", "S:250 8BITMIME", QUIT},
     .events = "READY R0:553/5.6.7 DONE:F:553 READY CLOSED",
     .msg = &msg_utf8},

    /* DSN */
    {.name = "DSN parameters",
     .steps = {HELLO, "S:250-mx.example", "S:250-DSN", "S:250 PIPELINING",
               MAIL " RET=HDRS ENVID=Q1+2Benv+20id",
               "C:RCPT TO:<b@r.example> NOTIFY=SUCCESS,FAILURE "
               "ORCPT=rfc822;b+2Bx+3Dy@r.example",
               "C:RCPT TO:<c@r.example> NOTIFY=NEVER",
               "C:RCPT TO:<d@r.example> NOTIFY=DELAY", "C:DATA", OK_MAIL,
               OK_RCPT, OK_RCPT, OK_RCPT, GO, BODY_HELLO, QUEUED, QUIT},
     .events = "READY R0:250/2.1.5 R1:250/2.1.5 R2:250/2.1.5 DONE:OOO:250 "
               "READY CLOSED",
     .msg = &msg_dsn},
    {.name = "DSN parameters not offered",
     .steps = {HELLO, E_PIPE, MAIL, RCPT_B, RCPT_C, RCPT_D, "C:DATA", OK_MAIL,
               OK_RCPT, OK_RCPT, OK_RCPT, GO, BODY_HELLO, QUEUED, QUIT},
     .events = "READY R0:250/2.1.5 R1:250/2.1.5 R2:250/2.1.5 DONE:OOO:250 "
               "READY CLOSED",
     .msg = &msg_dsn},

    /* CHUNKING */
    {.name = "BDAT chunks pipelined",
     .steps = {HELLO, "S:250-mx.example", "S:250-PIPELINING", "S:250 CHUNKING",
               MAIL, RCPT_B, OK_MAIL, OK_RCPT,
               "C=BDAT 16\r\nSubject: t\r\n\r\nhe", "C=BDAT 5 LAST\r\nllo\r\n",
               "S:250 2.0.0 16 octets", QUEUED, QUIT},
     .events = "READY " TXN1_EV " READY CLOSED"},
    {.name = "BDAT chunks one at a time",
     .steps = {HELLO, "S:250-mx.example", "S:250 CHUNKING", MAIL, OK_MAIL,
               RCPT_B, OK_RCPT, "C=BDAT 16\r\nSubject: t\r\n\r\nhe",
               "S:250 2.0.0 16 octets", "C=BDAT 5 LAST\r\nllo\r\n", QUEUED,
               QUIT},
     .events = "READY " TXN1_EV " READY CLOSED"},
    {.name = "BDAT no dot-stuffing, line ends fixed",
     .steps = {HELLO, "S:250-mx.example", "S:250 CHUNKING", MAIL, OK_MAIL,
               RCPT_B, OK_RCPT, "C=BDAT 16\r\n.hidden\r\n..two\r\n", "S:250 ok",
               "C=BDAT 16\r\n.\r\nmid.dle\r\n.spa", "S:250 ok",
               "C=BDAT 14 LAST\r\nn start\r\nend\r\n", QUEUED, QUIT},
     .events = "READY " TXN1_EV " READY CLOSED",
     .msg = &msg_dots},
    {.name = "BDAT chunk refused",
     .steps = {HELLO, "S:250-mx.example", "S:250-PIPELINING", "S:250 CHUNKING",
               MAIL, RCPT_B, OK_MAIL, OK_RCPT,
               "C=BDAT 16\r\nSubject: t\r\n\r\nhe", "C=BDAT 5 LAST\r\nllo\r\n",
               "S:552 5.3.4 too big", "S:503 5.5.1 no transaction", "C:RSET",
               "S:250 Ok", QUIT},
     .events = "READY R0:250/2.1.5 DONE:F:552 READY CLOSED"},
    {.name = "BDAT all refused sends no chunk",
     .steps = {HELLO, "S:250-mx.example", "S:250-PIPELINING", "S:250 CHUNKING",
               MAIL, RCPT_B, OK_MAIL, "S:550 5.1.1 no", "C:RSET", "S:250 Ok",
               QUIT},
     .events = "READY R0:550/5.1.1 DONE:F:550 READY CLOSED"},
    {.name = "BDAT empty body",
     .steps = {HELLO, "S:250-mx.example", "S:250 CHUNKING", MAIL, OK_MAIL,
               RCPT_B, OK_RCPT, "C:BDAT 0 LAST", QUEUED, QUIT},
     .events = "READY " TXN1_EV " READY CLOSED",
     .msg = &msg_empty},
    {.name = "CHUNKING switched off uses DATA",
     .steps = {HELLO, "S:250-mx.example", "S:250 CHUNKING", TXN1, QUIT},
     .events = "READY " TXN1_EV " READY CLOSED",
     .use_off = SMTP_CLIENT_EXT_CHUNKING},

    /* replies */
    {.name = "multi-line replies with enhanced codes",
     .steps = {HELLO, E_PIPE, MAIL, RCPT_B, RCPT_C, "C:DATA",
               "S:250-2.1.0 sender", "S:250 2.1.0 ok",
               "S:550-5.1.1 The email account that you tried",
               "S:550-5.1.1 to reach does not exist.",
               "S:550 5.1.1 Please check", "S:250-2.1.5 first",
               "S:250 2.1.5 second", "S:354-go", "S:354 ahead", BODY_HELLO,
               "S:250-2.0.0 Ok", "S:250 2.0.0 queued", QUIT},
     .events = "READY R0:550/5.1.1 R1:250/2.1.5 DONE:FO:250 READY CLOSED",
     .msg = &(const struct smtp_client_message){.sender = "a@s.example",
                                                .rcpts = rcpts3,
                                                .num_rcpts = 2,
                                                .body = body_hello,
                                                .num_body = 1}},
    {.name = "enhanced code of the wrong class is text",
     .steps = {HELLO, E_PLAIN, MAIL, "S:550 4.1.1 odd", QUIT},
     .events = "READY R0:550 DONE:F:550 READY CLOSED"},
    {.name = "reply code alone",
     .steps = {HELLO, E_PLAIN, MAIL, "S:250", RCPT_B, "S:250", "C:DATA", GO,
               BODY_HELLO, "S:250", QUIT},
     .events = "READY R0:250 DONE:O:250 READY CLOSED"},
    {.name = "code changes within a reply",
     .steps = {HELLO, E_PLAIN, MAIL, "S:250-a", "S:251 b"},
     .events = "READY R0:451/4.5.0 DONE:D:451 ERR:X:451 CLOSED"},
    {.name = "bad separator",
     .steps = {HELLO, E_PLAIN, MAIL, "S:250x"},
     .events = "READY R0:451/4.5.0 DONE:D:451 ERR:X:451 CLOSED"},
    {.name = "1yz code",
     .steps = {HELLO, E_PLAIN, MAIL, "S:150 hm"},
     .events = "READY R0:451/4.5.0 DONE:D:451 ERR:X:451 CLOSED"},
    {.name = "reply line too long",
     .steps = {HELLO, E_PLAIN, MAIL,
               "S:250 "
               "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
               "xxxxxxx"
               "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
               "xxxxxxx"
               "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
               "xxxxxxx"
               "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
               "xxxxxxx"
               "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
               "xxxxxxx"
               "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
               "xxxxxxx"
               "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
               "xxxxxxx"
               "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
               "xxxxxxx"},
     .events = "READY R0:451/4.5.0 DONE:D:451 ERR:X:451 CLOSED"},
    {.name = "unsolicited reply while idle",
     .steps = {HELLO, E_PLAIN, "S:250 surprise"},
     .events = "READY ERR:X:451 CLOSED",
     .num_msgs = -2},
    {.name = "unsolicited 421 while idle",
     .steps = {HELLO, E_PLAIN, "S:421 4.4.2 idle timeout"},
     .events = "READY ERR:T:421 CLOSED",
     .num_msgs = -2},
    {.name = "eof while idle",
     .steps = {HELLO, E_PLAIN, "X:eof"},
     .events = "READY ERR:T:451 CLOSED",
     .num_msgs = -2},
    {.name = "garbage after QUIT just closes",
     .steps = {HELLO, E_PLAIN, "C:QUIT", "S:bye"},
     .events = "READY CLOSED",
     .num_msgs = -1},

    /* connection reuse */
    {.name = "three messages pipelined",
     .steps = {HELLO,      E_PIPE, MAIL, RCPT_B, "C:DATA", OK_MAIL, OK_RCPT, GO,
               BODY_HELLO, QUEUED, MAIL, RCPT_B, "C:DATA", OK_MAIL, OK_RCPT, GO,
               BODY_HELLO, QUEUED, MAIL, RCPT_B, "C:DATA", OK_MAIL, OK_RCPT, GO,
               BODY_HELLO, QUEUED, QUIT},
     .events =
         "READY " TXN1_EV " READY " TXN1_EV " READY " TXN1_EV " READY CLOSED",
     .num_msgs = 3},
    {.name = "RSET after a failed message, then the next",
     .steps = {HELLO, E_PLAIN, MAIL, OK_MAIL, RCPT_B, OK_RCPT, "C:DATA",
               "S:451 4.3.0 later", "C:RSET", "S:250 2.0.0 Ok", TXN1, QUIT},
     .events = "READY R0:250/2.1.5 DONE:D:451 READY " TXN1_EV " READY CLOSED",
     .num_msgs = 2},
    {.name = "RSET refused ends the session",
     .steps = {HELLO, E_PLAIN, MAIL, OK_MAIL, RCPT_B, OK_RCPT, "C:DATA",
               "S:451 4.3.0 later", "C:RSET", "S:500 what", QUIT},
     .events = "READY R0:250/2.1.5 DONE:D:451 ERR:T:500 CLOSED",
     .num_msgs = 2},
    {.name = "reset as liveness check",
     .steps = {HELLO, E_PLAIN, "C:RSET", "S:250 2.0.0 Ok", TXN1, QUIT},
     .events = "READY READY " TXN1_EV " READY CLOSED",
     .reset_first = 1},
    {.name = "eof after QUIT",
     .steps = {HELLO, E_PLAIN, MAIL, OK_MAIL, RCPT_B, OK_RCPT, "C:DATA", GO,
               BODY_HELLO, QUEUED, "C:QUIT", "X:eof"},
     .events = "READY " TXN1_EV " READY CLOSED"},

    /* LMTP (RFC 2033) */
    {.name = "lmtp LHLO greeting",
     .steps = {GREET, LHLO, E_PLAIN, TXN1, QUIT},
     .events = "READY " TXN1_EV " READY CLOSED",
     .lmtp = 1},
    {.name = "lmtp LHLO 500 is permanent, no HELO",
     .steps = {GREET, LHLO, "S:500 5.5.1 unknown command", QUIT},
     .events = "ERR:P:500 CLOSED",
     .lmtp = 1},
    {.name = "lmtp LHLO 451 is temporary",
     .steps = {GREET, LHLO, "S:451 4.3.0 later", QUIT},
     .events = "ERR:T:451 CLOSED",
     .lmtp = 1},
    {.name = "lmtp LHLO 421",
     .steps = {GREET, LHLO, "S:421 4.3.2 bye"},
     .events = "ERR:T:421 CLOSED",
     .lmtp = 1},
    {.name = "lmtp one refused at RCPT, data replies 250 452 550",
     .steps = {GREET,
               LHLO,
               L_PIPE,
               MAIL,
               RCPT_B,
               RCPT_C,
               RCPT_D,
               RCPT_E,
               "C:DATA",
               OK_MAIL,
               OK_RCPT,
               "S:550 5.1.1 <c@r.example> unknown",
               OK_RCPT,
               OK_RCPT,
               GO,
               BODY_HELLO,
               "S:250 2.0.0 <b@r.example> Ok",
               "S:452 4.2.2 <d@r.example> Mailbox full",
               "S:550 5.2.1 <e@r.example> Mailbox disabled",
               QUIT},
     .events = "READY R0:250/2.1.5 R1:550/5.1.1 R2:250/2.1.5 R3:250/2.1.5 "
               "DONE:OFDF:550 READY CLOSED",
     .msg = &msg4,
     .lmtp = 1},
    {.name = "lmtp three recipients, middle refused at RCPT",
     .steps = {GREET, LHLO, L_PIPE, MAIL, RCPT_B, RCPT_C, RCPT_D, "C:DATA",
               OK_MAIL, OK_RCPT, "S:550 5.1.1 unknown", OK_RCPT, GO, BODY_HELLO,
               "S:250 2.0.0 b Ok", "S:452 4.2.2 d full", QUIT},
     .events = "READY R0:250/2.1.5 R1:550/5.1.1 R2:250/2.1.5 DONE:OFD:452 "
               "READY CLOSED",
     .msg = &msg3,
     .lmtp = 1},
    {.name = "lmtp without pipelining",
     .steps = {GREET, LHLO, E_PLAIN, MAIL, OK_MAIL, RCPT_B, OK_RCPT, RCPT_C,
               "S:450 4.2.1 later", RCPT_D, OK_RCPT, "C:DATA", GO, BODY_HELLO,
               "S:250 2.0.0 b Ok", "S:250 2.0.0 d Ok", QUIT},
     .events = "READY R0:250/2.1.5 R1:450/4.2.1 R2:250/2.1.5 DONE:ODO:250 "
               "READY CLOSED",
     .msg = &msg3,
     .lmtp = 1},
    {.name = "lmtp BDAT LAST answered per recipient",
     .steps = {GREET, LHLO, "S:250-lmtp.example", "S:250-PIPELINING",
               "S:250 CHUNKING", MAIL, RCPT_B, RCPT_C, RCPT_D, OK_MAIL, OK_RCPT,
               "S:550 5.1.1 unknown", OK_RCPT,
               "C=BDAT 16\r\nSubject: t\r\n\r\nhe", "C=BDAT 5 LAST\r\nllo\r\n",
               "S:250 2.0.0 16 octets", "S:250 2.0.0 b Ok",
               "S:552 5.2.2 d over quota", QUIT},
     .events = "READY R0:250/2.1.5 R1:550/5.1.1 R2:250/2.1.5 DONE:OFF:552 "
               "READY CLOSED",
     .msg = &msg3,
     .lmtp = 1},
    {.name = "lmtp BDAT LAST one chunk at a time",
     .steps = {GREET, LHLO, "S:250-lmtp.example", "S:250 CHUNKING", MAIL,
               OK_MAIL, RCPT_B, OK_RCPT, RCPT_C, OK_RCPT,
               "C=BDAT 16\r\nSubject: t\r\n\r\nhe", "S:250 2.0.0 16 octets",
               "C=BDAT 5 LAST\r\nllo\r\n", "S:451 4.3.0 b try later",
               "S:250 2.0.0 c Ok", QUIT},
     .events = "READY R0:250/2.1.5 R1:250/2.1.5 DONE:DO:250 READY CLOSED",
     .msg = &(const struct smtp_client_message){.sender = "a@s.example",
                                                .rcpts = rcpts3,
                                                .num_rcpts = 2,
                                                .body = body_hello,
                                                .num_body = 1},
     .lmtp = 1},
    {.name = "lmtp BDAT chunk refused, BDAT LAST gets one 503",
     .steps = {GREET, LHLO, "S:250-lmtp.example", "S:250-PIPELINING",
               "S:250 CHUNKING", MAIL, RCPT_B, RCPT_C, OK_MAIL, OK_RCPT,
               OK_RCPT, "C=BDAT 16\r\nSubject: t\r\n\r\nhe",
               "C=BDAT 5 LAST\r\nllo\r\n", "S:552 5.2.3 too big",
               "S:503 5.5.0 Previous data chunk failed, issue RSET first",
               "C:RSET", "S:250 2.0.0 Ok", QUIT},
     .events = "READY R0:250/2.1.5 R1:250/2.1.5 DONE:FF:552 READY CLOSED",
     .msg = &(const struct smtp_client_message){.sender = "a@s.example",
                                                .rcpts = rcpts3,
                                                .num_rcpts = 2,
                                                .body = body_hello,
                                                .num_body = 1},
     .lmtp = 1},
    {.name = "lmtp 421 after the first data reply",
     .steps = {GREET, LHLO, L_PIPE, MAIL, RCPT_B, RCPT_C, RCPT_D, "C:DATA",
               OK_MAIL, OK_RCPT, OK_RCPT, OK_RCPT, GO, BODY_HELLO,
               "S:250 2.0.0 b Ok", "S:421 4.3.2 shutting down"},
     .events = "READY R0:250/2.1.5 R1:250/2.1.5 R2:250/2.1.5 DONE:ODD:421 "
               "ERR:T:421 CLOSED",
     .msg = &msg3,
     .lmtp = 1},
    {.name = "lmtp eof in the middle of the data replies",
     .steps = {GREET, LHLO, L_PIPE, MAIL, RCPT_B, RCPT_C, RCPT_D, "C:DATA",
               OK_MAIL, OK_RCPT, OK_RCPT, OK_RCPT, GO, BODY_HELLO,
               "S:250 2.0.0 b Ok", "S:550 5.2.1 c disabled", "X:eof"},
     .events = "READY R0:250/2.1.5 R1:250/2.1.5 R2:250/2.1.5 DONE:OFD:451 "
               "ERR:T:451 CLOSED",
     .msg = &msg3,
     .lmtp = 1},
    {.name = "lmtp timeout in the middle of the data replies",
     .steps = {GREET, LHLO, L_PIPE, MAIL, RCPT_B, RCPT_C, "C:DATA", OK_MAIL,
               OK_RCPT, OK_RCPT, GO, BODY_HELLO, "S:452 4.2.2 b full",
               "X:timeout"},
     .events = "READY R0:250/2.1.5 R1:250/2.1.5 DONE:DD:451 ERR:T:451 CLOSED",
     .msg = &(const struct smtp_client_message){.sender = "a@s.example",
                                                .rcpts = rcpts3,
                                                .num_rcpts = 2,
                                                .body = body_hello,
                                                .num_body = 1},
     .lmtp = 1},
    {.name = "lmtp garbage in the middle of the data replies",
     .steps = {GREET, LHLO, L_PIPE, MAIL, RCPT_B, RCPT_C, "C:DATA", OK_MAIL,
               OK_RCPT, OK_RCPT, GO, BODY_HELLO, "S:250 2.0.0 b Ok",
               "S:2x0 what"},
     .events = "READY R0:250/2.1.5 R1:250/2.1.5 DONE:OD:451 ERR:X:451 CLOSED",
     .msg = &(const struct smtp_client_message){.sender = "a@s.example",
                                                .rcpts = rcpts3,
                                                .num_rcpts = 2,
                                                .body = body_hello,
                                                .num_body = 1},
     .lmtp = 1},
    {.name = "lmtp DATA refused gets one reply",
     .steps = {GREET, LHLO, L_PIPE, MAIL, RCPT_B, RCPT_C, "C:DATA", OK_MAIL,
               OK_RCPT, OK_RCPT, "S:451 4.3.0 not now", "C:RSET", "S:250 Ok",
               QUIT},
     .events = "READY R0:250/2.1.5 R1:250/2.1.5 DONE:DD:451 READY CLOSED",
     .msg = &(const struct smtp_client_message){.sender = "a@s.example",
                                                .rcpts = rcpts3,
                                                .num_rcpts = 2,
                                                .body = body_hello,
                                                .num_body = 1},
     .lmtp = 1},
    {.name = "lmtp all refused at RCPT, DATA 503",
     .steps = {GREET, LHLO, L_PIPE, MAIL, RCPT_B, RCPT_C, "C:DATA", OK_MAIL,
               "S:550 5.1.1 no", "S:450 4.2.1 later",
               "S:503 5.5.0 No valid recipients", "C:RSET", "S:250 Ok", QUIT},
     .events = "READY R0:550/5.1.1 R1:450/4.2.1 DONE:FD:503 READY CLOSED",
     .msg = &(const struct smtp_client_message){.sender = "a@s.example",
                                                .rcpts = rcpts3,
                                                .num_rcpts = 2,
                                                .body = body_hello,
                                                .num_body = 1},
     .lmtp = 1},
    {.name = "lmtp two messages on one connection",
     .steps = {GREET,
               LHLO,
               L_PIPE,
               MAIL,
               RCPT_B,
               RCPT_C,
               "C:DATA",
               OK_MAIL,
               OK_RCPT,
               OK_RCPT,
               GO,
               BODY_HELLO,
               "S:250 2.0.0 b Ok",
               "S:550 5.2.1 c no",
               MAIL,
               RCPT_B,
               RCPT_C,
               "C:DATA",
               OK_MAIL,
               "S:450 4.2.1 b later",
               OK_RCPT,
               GO,
               BODY_HELLO,
               "S:250 2.0.0 c Ok",
               QUIT},
     .events = "READY R0:250/2.1.5 R1:250/2.1.5 DONE:OF:550 READY "
               "R0:450/4.2.1 R1:250/2.1.5 DONE:DO:250 READY CLOSED",
     .msg = &(const struct smtp_client_message){.sender = "a@s.example",
                                                .rcpts = rcpts3,
                                                .num_rcpts = 2,
                                                .body = body_hello,
                                                .num_body = 1},
     .num_msgs = 2,
     .lmtp = 1},

    /* STARTTLS (RFC 3207) */
    {.name = "starttls none: offered, not used",
     .steps = {HELLO, E_STARTTLS, TXN1, QUIT},
     .events = "READY " TXN1_EV " READY CLOSED"},
    {.name = "starttls may: offered, EHLO again inside TLS",
     .steps = {HELLO, E_STARTTLS, TLS_GO, EHLO, E_PLAIN, TXN1, QUIT},
     .events = "STARTTLS READY:TLS " TXN1_EV " READY:TLS CLOSED",
     .tls = SMTP_CLIENT_TLS_MAY},
    {.name = "starttls may: not offered, plaintext",
     .steps = {HELLO, E_PLAIN, TXN1, QUIT},
     .events = "READY " TXN1_EV " READY CLOSED",
     .tls = SMTP_CLIENT_TLS_MAY},
    {.name = "starttls may: 454, plaintext with the first EHLO's extensions",
     .steps = {HELLO, "S:250-mx.example", "S:250-PIPELINING", "S:250 STARTTLS",
               "C:STARTTLS", "S:454 4.7.0 TLS not available", MAIL, RCPT_B,
               "C:DATA", OK_MAIL, OK_RCPT, GO, BODY_HELLO, QUEUED, QUIT},
     .events = "READY " TXN1_EV " READY CLOSED",
     .tls = SMTP_CLIENT_TLS_MAY},
    {.name = "starttls may: 554, plaintext",
     .steps = {HELLO, E_STARTTLS, "C:STARTTLS", "S:554 5.7.0 not for you", TXN1,
               QUIT},
     .events = "READY " TXN1_EV " READY CLOSED",
     .tls = SMTP_CLIENT_TLS_MAY},
    {.name = "starttls may: HELO fallback, plaintext",
     .steps = {GREET, EHLO, "S:502 5.5.1 no", "C:HELO client.example",
               "S:250 mx.example", TXN1, QUIT},
     .events = "READY " TXN1_EV " READY CLOSED",
     .tls = SMTP_CLIENT_TLS_MAY},
    {.name = "starttls require: accepted, the message goes inside TLS",
     .steps = {HELLO, E_STARTTLS, TLS_GO, EHLO, E_PIPE, MAIL, RCPT_B, "C:DATA",
               OK_MAIL, OK_RCPT, GO, BODY_HELLO, QUEUED, QUIT},
     .events = "STARTTLS READY:TLS " TXN1_EV " READY:TLS CLOSED",
     .tls = SMTP_CLIENT_TLS_REQUIRE},
    {.name = "starttls require: not offered, no MAIL",
     .steps = {HELLO, E_PIPE, QUIT},
     .events = "ERR:T:451 CLOSED",
     .tls = SMTP_CLIENT_TLS_REQUIRE,
     .err = NOT_OFFERED},
    {.name = "starttls require: 454",
     .steps = {HELLO, E_STARTTLS, "C:STARTTLS",
               "S:454 4.7.0 TLS not available due to temporary reason", QUIT},
     .events = "ERR:T:451 CLOSED",
     .tls = SMTP_CLIENT_TLS_REQUIRE,
     .err = "451 4.7.4 TLS is required, but the server refused STARTTLS: "
            "454 4.7.0 TLS not available due to temporary reason"},
    {.name = "starttls require: 554 still defers",
     .steps = {HELLO, E_STARTTLS, "C:STARTTLS", "S:554 no TLS for you", QUIT},
     .events = "ERR:T:451 CLOSED",
     .tls = SMTP_CLIENT_TLS_REQUIRE,
     .err = "451 4.7.4 TLS is required, but the server refused STARTTLS: "
            "554 no TLS for you"},
    {.name = "starttls require: HELO fallback",
     .steps = {GREET, EHLO, "S:500 what", "C:HELO client.example",
               "S:250 mx.example", QUIT},
     .events = "ERR:T:451 CLOSED",
     .tls = SMTP_CLIENT_TLS_REQUIRE,
     .err = NOT_OFFERED},
    {.name = "starttls 421",
     .steps = {HELLO, E_STARTTLS, "C:STARTTLS", "S:421 4.3.2 bye"},
     .events = "ERR:T:421 CLOSED",
     .tls = SMTP_CLIENT_TLS_MAY},
    {.name = "starttls timeout waiting for the reply",
     .steps = {HELLO, E_STARTTLS, "C:STARTTLS", "X:timeout"},
     .events = "ERR:T:451 CLOSED",
     .tls = SMTP_CLIENT_TLS_MAY,
     .err = "451 4.4.2 conversation timed out while waiting for the reply to "
            "STARTTLS"},
    {.name = "starttls handshake failed",
     .steps = {HELLO, E_STARTTLS, "C:STARTTLS", "S:220 go ahead",
               "X:tlsfail:certificate verify failed"},
     .events = "STARTTLS ERR:T:451 CLOSED",
     .tls = SMTP_CLIENT_TLS_MAY,
     .err = "451 4.7.5 TLS handshake failed: certificate verify failed"},
    {.name = "starttls eof during the handshake",
     .steps = {HELLO, E_STARTTLS, "C:STARTTLS", "S:220 go ahead", "X:eof"},
     .events = "STARTTLS ERR:T:451 CLOSED",
     .tls = SMTP_CLIENT_TLS_REQUIRE,
     .err = "451 4.4.2 lost connection while starting TLS"},
    {.name = "starttls: TLS fails in the middle of a message",
     .steps = {HELLO, E_STARTTLS, TLS_GO, EHLO, E_PLAIN, MAIL, OK_MAIL, RCPT_B,
               "X:tlsfail:bad record mac"},
     .events = "STARTTLS READY:TLS R0:451/4.7.5 DONE:D:451 ERR:T:451 CLOSED",
     .tls = SMTP_CLIENT_TLS_MAY,
     .err = "451 4.7.5 TLS failed: bad record mac while waiting for the reply "
            "to RCPT TO"},
    {.name = "starttls: extensions before TLS are forgotten",
     .steps = {HELLO, "S:250-mx.example", "S:250-PIPELINING", "S:250 STARTTLS",
               TLS_GO, EHLO, E_PLAIN, TXN1, QUIT},
     .events = "STARTTLS READY:TLS " TXN1_EV " READY:TLS CLOSED",
     .tls = SMTP_CLIENT_TLS_MAY},
    {.name = "starttls: SIZE of the second EHLO refuses the message",
     .steps = {HELLO, "S:250-mx.example", "S:250-SIZE 100000", "S:250 STARTTLS",
               TLS_GO, EHLO, "S:250-mx.example", "S:250 SIZE 20", QUIT},
     .events = "STARTTLS READY:TLS R0:552/5.3.4 DONE:F:552 READY:TLS CLOSED",
     .tls = SMTP_CLIENT_TLS_MAY},
    {.name = "starttls: not sent again when offered inside TLS",
     .steps = {HELLO, E_STARTTLS, TLS_GO, EHLO, E_STARTTLS, TXN1, QUIT},
     .events = "STARTTLS READY:TLS " TXN1_EV " READY:TLS CLOSED",
     .tls = SMTP_CLIENT_TLS_REQUIRE},
    {.name = "starttls: HELO fallback inside TLS",
     .steps = {HELLO, E_STARTTLS, TLS_GO, EHLO, "S:502 5.5.1 no",
               "C:HELO client.example", "S:250 mx.example", TXN1, QUIT},
     .events = "STARTTLS READY:TLS " TXN1_EV " READY:TLS CLOSED",
     .tls = SMTP_CLIENT_TLS_REQUIRE},
    {.name = "starttls: tls_active sends no STARTTLS",
     .steps = {HELLO, E_STARTTLS, TXN1, QUIT},
     .events = "READY:TLS " TXN1_EV " READY:TLS CLOSED",
     .tls = SMTP_CLIENT_TLS_REQUIRE,
     .tls_active = 1},
    {.name = "starttls lmtp: LHLO again inside TLS",
     .steps = {GREET, LHLO, "S:250-lmtp.example", "S:250 STARTTLS", TLS_GO,
               LHLO, L_PIPE, MAIL, RCPT_B, "C:DATA", OK_MAIL, OK_RCPT, GO,
               BODY_HELLO, "S:250 2.0.0 b Ok", QUIT},
     .events = "STARTTLS READY:TLS " TXN1_EV " READY:TLS CLOSED",
     .tls = SMTP_CLIENT_TLS_REQUIRE,
     .lmtp = 1},
    {.name = "starttls lmtp require: not offered",
     .steps = {GREET, LHLO, L_PIPE, QUIT},
     .events = "ERR:T:451 CLOSED",
     .tls = SMTP_CLIENT_TLS_REQUIRE,
     .err = NOT_OFFERED,
     .lmtp = 1},

    /* REQUIRETLS (RFC 8689) */
    {.name = "requiretls offered inside TLS",
     .steps = {HELLO, E_STARTTLS, TLS_GO, EHLO, "S:250-mx.example",
               "S:250 REQUIRETLS", MAIL " REQUIRETLS", OK_MAIL, RCPT_B, OK_RCPT,
               "C:DATA", GO, BODY_HELLO, QUEUED, QUIT},
     .events = "STARTTLS READY:TLS " TXN1_EV " READY:TLS CLOSED",
     .msg = &msg_requiretls,
     .tls = SMTP_CLIENT_TLS_MAY},
    {.name = "requiretls not offered inside TLS",
     .steps = {HELLO, E_STARTTLS, TLS_GO, EHLO, E_PLAIN, QUIT},
     .events = "STARTTLS READY:TLS R0:550/5.7.30 DONE:F:550 READY:TLS CLOSED",
     .msg = &msg_requiretls,
     .tls = SMTP_CLIENT_TLS_MAY},
    {.name = "requiretls offered but not TLS",
     .steps = {HELLO, "S:250-mx.example", "S:250 REQUIRETLS", QUIT},
     .events = "READY R0:550/5.7.30 DONE:F:550 READY CLOSED",
     .msg = &msg_requiretls},
    {.name = "requiretls with implicit TLS",
     .steps = {HELLO, "S:250-mx.example", "S:250 REQUIRETLS",
               MAIL " REQUIRETLS", OK_MAIL, RCPT_B, OK_RCPT, "C:DATA", GO,
               BODY_HELLO, QUEUED, QUIT},
     .events = "READY:TLS " TXN1_EV " READY:TLS CLOSED",
     .msg = &msg_requiretls,
     .tls_active = 1},
    {.name = "requiretls switched off",
     .steps = {HELLO, "S:250-mx.example", "S:250 REQUIRETLS", QUIT},
     .events = "READY:TLS R0:550/5.7.30 DONE:F:550 READY:TLS CLOSED",
     .msg = &msg_requiretls,
     .use_off = SMTP_CLIENT_EXT_REQUIRETLS,
     .tls_active = 1},
};

static void test_scenario(void **state) {
  const struct scenario *sc = *state;
  run_scenario(sc, 0);
  run_scenario(sc, 1);
}

/* ---- reply parsing ------------------------------------------------------- */

static void test_reply_lines(void **state) {
  static const struct {
    const char *name, *line;
    int ok, code, last;
    const char *text;
  } cases[] = {
      {"final", "250 ok\r\n", 1, 250, 1, "ok"},
      {"continuation", "250-ok\r\n", 1, 250, 0, "ok"},
      {"code alone", "354\r\n", 1, 354, 1, ""},
      {"bare lf", "220 x\n", 1, 220, 1, "x"},
      {"empty text", "250 \r\n", 1, 250, 1, ""},
      {"highest", "559 x\r\n", 1, 559, 1, "x"},
      {"1yz", "150 x\r\n", 0, 0, 0, NULL},
      {"6yz", "650 x\r\n", 0, 0, 0, NULL},
      {"second digit 6", "260 x\r\n", 0, 0, 0, NULL},
      {"letters", "2x0 x\r\n", 0, 0, 0, NULL},
      {"short", "25\r\n", 0, 0, 0, NULL},
      {"tab separator", "250\tx\r\n", 0, 0, 0, NULL},
      {"no line end", "250 x", 0, 0, 0, NULL},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct smtp_reply_line l;
    const char *why = NULL;
    int ok = smtp_reply_parse_line(&l, &why, (const uint8_t *)cases[i].line,
                                   strlen(cases[i].line)) == 0;
    if (ok != cases[i].ok) {
      fail_msg("%s: ok got %d want %d", cases[i].name, ok, cases[i].ok);
    }
    if (!ok) {
      assert_non_null(why);
      continue;
    }
    if (l.code != cases[i].code || l.last != cases[i].last ||
        l.text_len != strlen(cases[i].text) ||
        memcmp(l.text, cases[i].text, l.text_len) != 0) {
      fail_msg("%s: got %d/%d/%.*s", cases[i].name, l.code, l.last,
               (int)l.text_len, (const char *)l.text);
    }
  }
}

static void test_reply_enhanced(void **state) {
  static const struct {
    const char *in, *want;
  } cases[] = {
      {"5.1.1 user unknown", "5.1.1"},
      {"2.0.0", "2.0.0"},
      {"4.123.456 x", "4.123.456"},
      {"3.1.1 x", ""},
      {"5.1 x", ""},
      {"5.1.1x", ""},
      {"5.1234.1 x", ""},
      {"5..1 x", ""},
      {"", ""},
      {"hello", ""},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char got[SMTP_REPLY_MAX_ENHANCED];
    size_t used = smtp_reply_enhanced(got, (const uint8_t *)cases[i].in,
                                      strlen(cases[i].in));
    if (strcmp(got, cases[i].want) != 0 || used != strlen(cases[i].want)) {
      fail_msg("%s: got \"%s\" (%zu) want \"%s\"", cases[i].in, got, used,
               cases[i].want);
    }
  }
}

/* Multi-line text: lines joined, repeated enhanced codes dropped, controls
 * cleaned, long text cut. */
static void test_reply_text(void **state) {
  static const char *const lines[] = {
      "550-5.1.1 The email account\r\n",
      "550-5.1.1 does not\x01"
      "exist.\r\n",
      "550 5.1.1 https://support.example/x\r\n"};
  struct smtp_reply r;
  smtp_reply_init(&r);
  for (size_t i = 0; i < 3; i++) {
    struct smtp_reply_line l;
    const char *why;
    assert_int_equal(smtp_reply_parse_line(&l, &why, (const uint8_t *)lines[i],
                                           strlen(lines[i])),
                     0);
    assert_int_equal(smtp_reply_add(&r, &why, &l),
                     i < 2 ? SMTP_REPLY_MORE : SMTP_REPLY_DONE);
  }
  assert_int_equal(r.code, 550);
  assert_string_equal(r.enhanced, "5.1.1");
  assert_string_equal(r.text, "The email account does not exist. "
                              "https://support.example/x");
  assert_int_equal(r.num_lines, 3);

  char big[2000];
  memset(big, 'y', sizeof(big));
  memcpy(big, "250-", 4);
  big[sizeof(big) - 1] = '\n';
  smtp_reply_init(&r);
  for (int i = 0; i < 3; i++) {
    struct smtp_reply_line l;
    const char *why;
    assert_int_equal(
        smtp_reply_parse_line(&l, &why, (const uint8_t *)big, sizeof(big)), 0);
    assert_int_equal(smtp_reply_add(&r, &why, &l), SMTP_REPLY_MORE);
  }
  assert_int_equal(strlen(r.text), SMTP_REPLY_MAX_TEXT - 1);
}

/* ---- API details --------------------------------------------------------- */

static void feed_str(struct smtp_client *c, const char *s) {
  assert_int_equal(smtp_client_feed(c, (const uint8_t *)s, strlen(s)), 0);
}

static void expect_event(struct smtp_client *c, enum smtp_client_event want,
                         const char *label) {
  enum smtp_client_event got = smtp_client_next(c);
  if (got != want) {
    fail_msg("%s: event got %d want %d", label, got, want);
  }
}

static void drop_output(struct smtp_client *c) {
  const uint8_t *p;
  size_t n;
  for (;;) {
    smtp_client_output(c, &p, &n);
    if (n == 0) {
      return;
    }
    smtp_client_output_sent(c, n);
  }
}

/* The client up to READY, with the EHLO reply given. */
static struct smtp_client *ready_client(const char *ehlo_reply) {
  struct smtp_client *c = new_client(0, 0, 0);
  feed_str(c, "220 mx.example ESMTP\r\n");
  expect_event(c, SMTP_CLIENT_NEED_INPUT, "greeting");
  feed_str(c, ehlo_reply);
  expect_event(c, SMTP_CLIENT_EV_READY, "ehlo");
  drop_output(c);
  return c;
}

static void test_capabilities(void **state) {
  struct smtp_client *c = ready_client(
      "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 52428800\r\n"
      "250-8BITMIME\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n250-DSN\r\n"
      "250-ENHANCEDSTATUSCODES\r\n250-STARTTLS\r\n250-REQUIRETLS\r\n"
      "250 AUTH PLAIN\r\n");
  assert_int_equal(smtp_client_extensions(c), SMTP_CLIENT_EXT_ALL);
  assert_int_equal(smtp_client_size_limit(c), 52428800);
  assert_int_equal(smtp_client_is_esmtp(c), 1);
  assert_int_equal(smtp_client_last_reply(c)->code, 250);
  assert_string_equal(smtp_client_last_reply(c)->text,
                      "mx.example PIPELINING SIZE 52428800 8BITMIME SMTPUTF8 "
                      "CHUNKING DSN ENHANCEDSTATUSCODES STARTTLS REQUIRETLS "
                      "AUTH PLAIN");
  assert_int_equal(smtp_client_tls_active(c), 0);
  smtp_client_free(c);
}

/* Output so far as a string, taken (so the next check sees only new
 * output). */
static void take_output(struct smtp_client *c, char *out, size_t cap) {
  const uint8_t *p;
  size_t n;
  smtp_client_output(c, &p, &n);
  assert_true(n < cap);
  memcpy(out, p, n);
  out[n] = '\0';
  smtp_client_output_sent(c, n);
}

/* A MAY client that has sent STARTTLS. */
static struct smtp_client *starttls_client(void) {
  char out[256];
  struct smtp_client *c = new_client_tls(0, 0, 0, SMTP_CLIENT_TLS_MAY, 0);
  feed_str(c, "220 mx.example ESMTP\r\n");
  expect_event(c, SMTP_CLIENT_NEED_INPUT, "greeting");
  take_output(c, out, sizeof(out));
  assert_string_equal(out, "EHLO client.example\r\n");
  feed_str(c, "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n"
              "250 STARTTLS\r\n");
  expect_event(c, SMTP_CLIENT_NEED_INPUT, "ehlo");
  take_output(c, out, sizeof(out));
  assert_string_equal(out, "STARTTLS\r\n");
  assert_int_equal(smtp_client_timeout_class(c), SMTP_CLIENT_TIMEOUT_COMMAND);
  return c;
}

/* The session ended on a protocol error about injected bytes, and sent
 * nothing more (no EHLO, no QUIT: the stream is not to be trusted). */
static void expect_injection_error(struct smtp_client *c, const char *label) {
  char out[256];
  expect_event(c, SMTP_CLIENT_EV_SESSION_ERROR, label);
  assert_int_equal(smtp_client_session_error(c), SMTP_CLIENT_ERR_PROTOCOL);
  const struct smtp_reply *r = smtp_client_reply(c);
  assert_int_equal(r->code, 451);
  assert_string_equal(r->enhanced, "4.5.0");
  assert_string_equal(r->text, "protocol error: data after the STARTTLS "
                               "reply while starting TLS");
  expect_event(c, SMTP_CLIENT_EV_CLOSED, label);
  take_output(c, out, sizeof(out));
  assert_string_equal(out, "");
  assert_int_equal(smtp_client_tls_started(c), -1);
  assert_int_equal(smtp_client_tls_active(c), 0);
}

/* RFC 3207 §5 and the STARTTLS injection family: server bytes behind the
 * 220, in the same read or fed before the handshake is reported, came in
 * clear and must never be read as replies inside TLS. */
static void test_starttls_injection(void **state) {
  static const char *const tails[] = {
      "250-mx.example\r\n250 PIPELINING\r\n", /* a whole fake reply */
      "2",                                    /* one octet */
      "\r\n",
  };
  for (size_t i = 0; i < sizeof(tails) / sizeof(tails[0]); i++) {
    /* in the same feed as the 220: no STARTTLS event at all */
    char in[256];
    snprintf(in, sizeof(in), "220 2.0.0 go ahead\r\n%s", tails[i]);
    struct smtp_client *c = starttls_client();
    feed_str(c, in);
    expect_injection_error(c, "same feed");
    smtp_client_free(c);
    /* fed after EV_STARTTLS, before the handshake is reported */
    c = starttls_client();
    feed_str(c, "220 2.0.0 go ahead\r\n");
    expect_event(c, SMTP_CLIENT_EV_STARTTLS, "starttls");
    feed_str(c, tails[i]);
    assert_int_equal(smtp_client_tls_started(c), -1);
    expect_injection_error(c, "later feed");
    smtp_client_free(c);
  }
  /* a 220 read before STARTTLS was even sent answers nothing */
  struct smtp_client *c = new_client_tls(0, 0, 0, SMTP_CLIENT_TLS_MAY, 0);
  feed_str(c, "220 mx.example ESMTP\r\n");
  expect_event(c, SMTP_CLIENT_NEED_INPUT, "greeting");
  drop_output(c);
  feed_str(c, "250-mx.example\r\n250 STARTTLS\r\n220 2.0.0 go ahead\r\n");
  expect_event(c, SMTP_CLIENT_EV_SESSION_ERROR, "early 220");
  assert_int_equal(smtp_client_session_error(c), SMTP_CLIENT_ERR_PROTOCOL);
  assert_string_equal(smtp_client_reply(c)->text,
                      "protocol error: STARTTLS reply before STARTTLS was "
                      "sent while starting TLS");
  expect_event(c, SMTP_CLIENT_EV_CLOSED, "early 220");
  assert_int_equal(smtp_client_tls_started(c), -1);
  smtp_client_free(c);
}

/* The STARTTLS event, the handshake's API and what it resets. */
static void test_starttls_api(void **state) {
  char out[256];
  struct smtp_client_config cfg;
  smtp_client_config_default(&cfg);
  assert_int_equal(cfg.tls, SMTP_CLIENT_TLS_NONE);
  assert_int_equal(cfg.tls_active, 0);
  cfg.tls = (enum smtp_client_tls_mode)7;
  assert_null(smtp_client_new(&cfg));

  struct smtp_client *c = starttls_client();
  assert_int_equal(smtp_client_tls_started(c), -1); /* no 220 yet */
  assert_int_equal(smtp_client_send_message(c, &msg1), -1);
  feed_str(c, "220 2.0.0 Ready to start TLS\r\n");
  expect_event(c, SMTP_CLIENT_EV_STARTTLS, "starttls");
  assert_int_equal(smtp_client_reply(c)->code, 220);
  assert_string_equal(smtp_client_reply(c)->text, "Ready to start TLS");
  assert_int_equal(smtp_client_timeout_class(c), SMTP_CLIENT_TIMEOUT_NONE);
  expect_event(c, SMTP_CLIENT_NEED_INPUT, "handshake");
  take_output(c, out, sizeof(out));
  assert_string_equal(out, ""); /* nothing more in clear */
  assert_int_equal(smtp_client_send_message(c, &msg1), -1);
  assert_int_equal(smtp_client_reset(c), -1);
  assert_int_equal(smtp_client_tls_started(c), 0);
  assert_int_equal(smtp_client_tls_started(c), -1); /* once */
  assert_int_equal(smtp_client_tls_active(c), 1);
  /* RFC 3207 §4.2: nothing learnt before TLS is kept */
  assert_int_equal(smtp_client_extensions(c), 0);
  assert_int_equal(smtp_client_size_limit(c), 0);
  assert_int_equal(smtp_client_is_esmtp(c), 0);
  assert_int_equal(smtp_client_timeout_class(c), SMTP_CLIENT_TIMEOUT_COMMAND);
  expect_event(c, SMTP_CLIENT_NEED_INPUT, "second ehlo");
  take_output(c, out, sizeof(out));
  assert_string_equal(out, "EHLO client.example\r\n");
  feed_str(c, "250-mx.example\r\n250-DSN\r\n250 STARTTLS\r\n");
  expect_event(c, SMTP_CLIENT_EV_READY, "ready");
  assert_int_equal(smtp_client_extensions(c),
                   SMTP_CLIENT_EXT_DSN | SMTP_CLIENT_EXT_STARTTLS);
  take_output(c, out, sizeof(out));
  assert_string_equal(out, ""); /* no second STARTTLS */
  /* a TLS failure while idle inside TLS */
  smtp_client_tls_failed(c, NULL);
  expect_event(c, SMTP_CLIENT_EV_SESSION_ERROR, "tls failed");
  assert_string_equal(smtp_client_reply(c)->text,
                      "TLS failed: unknown error while idle");
  assert_string_equal(smtp_client_reply(c)->enhanced, "4.7.5");
  expect_event(c, SMTP_CLIENT_EV_CLOSED, "closed");
  smtp_client_tls_failed(c, "again"); /* closed: nothing happens */
  expect_event(c, SMTP_CLIENT_EV_CLOSED, "closed repeats");
  smtp_client_free(c);

  /* quit asked for before the EHLO reply: no STARTTLS, just QUIT */
  c = new_client_tls(0, 0, 0, SMTP_CLIENT_TLS_REQUIRE, 0);
  feed_str(c, "220 mx.example ESMTP\r\n");
  expect_event(c, SMTP_CLIENT_NEED_INPUT, "greeting");
  drop_output(c);
  smtp_client_quit(c);
  feed_str(c, "250-mx.example\r\n250 STARTTLS\r\n");
  expect_event(c, SMTP_CLIENT_NEED_INPUT, "ehlo");
  take_output(c, out, sizeof(out));
  assert_string_equal(out, "QUIT\r\n");
  feed_str(c, "221 bye\r\n");
  expect_event(c, SMTP_CLIENT_EV_CLOSED, "closed");
  smtp_client_free(c);

  /* quit asked for during the handshake: QUIT follows the second EHLO */
  c = starttls_client();
  feed_str(c, "220 go\r\n");
  expect_event(c, SMTP_CLIENT_EV_STARTTLS, "starttls");
  smtp_client_quit(c);
  expect_event(c, SMTP_CLIENT_NEED_INPUT, "handshake");
  assert_int_equal(smtp_client_tls_started(c), 0);
  expect_event(c, SMTP_CLIENT_NEED_INPUT, "second ehlo");
  take_output(c, out, sizeof(out));
  assert_string_equal(out, "EHLO client.example\r\n");
  feed_str(c, "250 mx.example\r\n");
  expect_event(c, SMTP_CLIENT_NEED_INPUT, "quit");
  take_output(c, out, sizeof(out));
  assert_string_equal(out, "QUIT\r\n");
  feed_str(c, "221 bye\r\n");
  expect_event(c, SMTP_CLIENT_EV_CLOSED, "closed");
  smtp_client_free(c);
}

static void test_invalid_messages(void **state) {
  struct smtp_client *c = new_client(0, 0, 0);
  /* not ready yet */
  assert_int_equal(smtp_client_send_message(c, &msg1), -1);
  assert_int_equal(smtp_client_reset(c), -1);
  smtp_client_free(c);
  c = ready_client("250 mx.example\r\n");
  static const struct smtp_client_rcpt bad_rcpts[] = {
      {.addr = "b@r.example\r\nDATA"}};
  static const struct smtp_client_rcpt empty_rcpt[] = {{.addr = ""}};
  static const struct smtp_client_rcpt bad_orcpt[] = {
      {.addr = "b@r.example", .orcpt = "rfc822;x\ny"}};
  struct smtp_client_message m = msg1;
  m.rcpts = bad_rcpts;
  assert_int_equal(smtp_client_send_message(c, &m), -1);
  m.rcpts = empty_rcpt;
  assert_int_equal(smtp_client_send_message(c, &m), -1);
  m.rcpts = bad_orcpt;
  assert_int_equal(smtp_client_send_message(c, &m), -1);
  m = msg1;
  m.sender = "a@s.example>\r\nRCPT TO:<x@y>";
  assert_int_equal(smtp_client_send_message(c, &m), -1);
  m = msg1;
  m.envid = "a\rb";
  assert_int_equal(smtp_client_send_message(c, &m), -1);
  m = msg1;
  m.num_rcpts = 0;
  assert_int_equal(smtp_client_send_message(c, &m), -1);
  /* nothing was sent; a good message still goes */
  const uint8_t *p;
  size_t n;
  smtp_client_output(c, &p, &n);
  assert_int_equal(n, 0);
  assert_int_equal(smtp_client_send_message(c, &msg1), 0);
  assert_int_equal(smtp_client_send_message(c, &msg1), -1); /* busy */
  smtp_client_output(c, &p, &n);
  assert_int_equal(n, strlen("MAIL FROM:<a@s.example>\r\n"));
  smtp_client_free(c);

  struct smtp_client_config cfg;
  smtp_client_config_default(&cfg);
  cfg.helo_name = "bad name";
  assert_null(smtp_client_new(&cfg));
  cfg.helo_name = "bad\r\n";
  assert_null(smtp_client_new(&cfg));
}

static void test_rcpt_results(void **state) {
  struct smtp_client *c = ready_client("250-mx.example\r\n250 PIPELINING\r\n");
  assert_int_equal(smtp_client_send_message(c, &msg3), 0);
  feed_str(c, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
              "550-5.1.1 no such\r\n550 5.1.1 user\r\n"
              "450 4.2.2 mailbox full\r\n354 go\r\n");
  struct smtp_reply r;
  for (size_t i = 0; i < 3; i++) {
    expect_event(c, SMTP_CLIENT_EV_RCPT_RESULT, "rcpt");
    assert_int_equal(smtp_client_event_rcpt(c), i);
  }
  assert_string_equal(smtp_client_reply(c)->text, "mailbox full");
  assert_int_equal(smtp_client_rcpt_result(c, 0, &r), SMTP_CLIENT_ACCEPTED);
  assert_int_equal(r.code, 250);
  expect_event(c, SMTP_CLIENT_NEED_INPUT, "body");
  drop_output(c);
  assert_int_equal(smtp_client_timeout_class(c), SMTP_CLIENT_TIMEOUT_DATA_END);
  feed_str(c, "250 2.0.0 Ok: queued as ABC\r\n");
  expect_event(c, SMTP_CLIENT_EV_MESSAGE_DONE, "done");
  assert_string_equal(smtp_client_reply(c)->text, "Ok: queued as ABC");
  assert_int_equal(smtp_client_rcpt_result(c, 0, &r), SMTP_CLIENT_OK);
  assert_string_equal(r.text, "Ok: queued as ABC");
  assert_int_equal(smtp_client_rcpt_result(c, 1, &r), SMTP_CLIENT_FAIL);
  assert_string_equal(r.enhanced, "5.1.1");
  assert_string_equal(r.text, "no such user");
  assert_int_equal(r.local, 0);
  assert_int_equal(smtp_client_rcpt_result(c, 2, &r), SMTP_CLIENT_DEFER);
  assert_int_equal(r.code, 450);
  assert_int_equal(smtp_client_rcpt_result(c, 3, &r), SMTP_CLIENT_PENDING);
  assert_int_equal(smtp_client_num_status(c, SMTP_CLIENT_OK), 1);
  expect_event(c, SMTP_CLIENT_EV_READY, "ready again");
  /* a timeout while idle: a local reply says so */
  smtp_client_timeout(c);
  expect_event(c, SMTP_CLIENT_EV_SESSION_ERROR, "timeout");
  assert_int_equal(smtp_client_reply(c)->local, 1);
  assert_string_equal(smtp_client_reply(c)->text,
                      "conversation timed out while idle");
  expect_event(c, SMTP_CLIENT_EV_CLOSED, "closed");
  expect_event(c, SMTP_CLIENT_EV_CLOSED, "closed repeats");
  assert_int_equal(smtp_client_feed(c, (const uint8_t *)"250 x\r\n", 7), 0);
  smtp_client_free(c);
}

/* LMTP: each accepted recipient's own end-of-data reply is its result;
 * RCPT_RESULTs come at RCPT time, MESSAGE_DONE after the last reply. */
static void test_lmtp_results(void **state) {
  struct smtp_client *c = new_client(0, 0, 1);
  feed_str(c, "220 lmtp.example LMTP\r\n");
  expect_event(c, SMTP_CLIENT_NEED_INPUT, "greeting");
  const uint8_t *p;
  size_t n;
  smtp_client_output(c, &p, &n);
  assert_int_equal(n, strlen("LHLO client.example\r\n"));
  assert_memory_equal(p, "LHLO client.example\r\n", n);
  drop_output(c);
  feed_str(c, "250-lmtp.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n"
              "250 ENHANCEDSTATUSCODES\r\n");
  expect_event(c, SMTP_CLIENT_EV_READY, "lhlo");
  assert_int_equal(smtp_client_is_esmtp(c), 1);
  assert_int_equal(smtp_client_extensions(c),
                   SMTP_CLIENT_EXT_PIPELINING | SMTP_CLIENT_EXT_SIZE |
                       SMTP_CLIENT_EXT_ENHANCEDSTATUSCODES);
  assert_int_equal(smtp_client_size_limit(c), 1000);
  assert_int_equal(smtp_client_send_message(c, &msg4), 0);
  drop_output(c);
  feed_str(c, "250 2.1.0 Ok\r\n250 2.1.5 b Ok\r\n550 5.1.1 c unknown\r\n"
              "250 2.1.5 d Ok\r\n250 2.1.5 e Ok\r\n354 go\r\n");
  for (size_t i = 0; i < 4; i++) {
    expect_event(c, SMTP_CLIENT_EV_RCPT_RESULT, "rcpt");
    assert_int_equal(smtp_client_event_rcpt(c), i);
  }
  expect_event(c, SMTP_CLIENT_NEED_INPUT, "body");
  drop_output(c);
  assert_int_equal(smtp_client_timeout_class(c), SMTP_CLIENT_TIMEOUT_DATA_END);
  feed_str(c, "250 2.0.0 <b@r.example> Saved\r\n");
  expect_event(c, SMTP_CLIENT_NEED_INPUT, "first data reply");
  assert_int_equal(smtp_client_timeout_class(c), SMTP_CLIENT_TIMEOUT_DATA_END);
  feed_str(c, "452-4.2.2 <d@r.example>\r\n452 4.2.2 Mailbox full\r\n");
  expect_event(c, SMTP_CLIENT_NEED_INPUT, "second data reply");
  feed_str(c, "550 5.2.1 <e@r.example> Mailbox disabled\r\n");
  expect_event(c, SMTP_CLIENT_EV_MESSAGE_DONE, "done");
  assert_int_equal(smtp_client_reply(c)->code, 550);
  static const struct {
    enum smtp_client_status st;
    int code;
    const char *enhanced, *text;
  } want[] = {
      {SMTP_CLIENT_OK, 250, "2.0.0", "<b@r.example> Saved"},
      {SMTP_CLIENT_FAIL, 550, "5.1.1", "c unknown"},
      {SMTP_CLIENT_DEFER, 452, "4.2.2", "<d@r.example> Mailbox full"},
      {SMTP_CLIENT_FAIL, 550, "5.2.1", "<e@r.example> Mailbox disabled"},
  };
  for (size_t i = 0; i < 4; i++) {
    struct smtp_reply r;
    enum smtp_client_status st = smtp_client_rcpt_result(c, i, &r);
    if (st != want[i].st || r.code != want[i].code ||
        strcmp(r.enhanced, want[i].enhanced) != 0 ||
        strcmp(r.text, want[i].text) != 0) {
      fail_msg("rcpt %zu: got %d %d %s %s want %d %d %s %s", i, st, r.code,
               r.enhanced, r.text, want[i].st, want[i].code, want[i].enhanced,
               want[i].text);
    }
  }
  assert_int_equal(smtp_client_num_status(c, SMTP_CLIENT_FAIL), 2);
  expect_event(c, SMTP_CLIENT_EV_READY, "ready again");
  /* the next message: a 421 after one data reply keeps that one */
  assert_int_equal(smtp_client_send_message(c, &msg3), 0);
  drop_output(c);
  feed_str(c, "250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
  for (size_t i = 0; i < 3; i++) {
    expect_event(c, SMTP_CLIENT_EV_RCPT_RESULT, "rcpt");
  }
  expect_event(c, SMTP_CLIENT_NEED_INPUT, "body");
  drop_output(c);
  feed_str(c, "250 2.0.0 b Saved\r\n");
  expect_event(c, SMTP_CLIENT_NEED_INPUT, "first data reply");
  smtp_client_timeout(c);
  expect_event(c, SMTP_CLIENT_EV_MESSAGE_DONE, "done after timeout");
  struct smtp_reply r;
  assert_int_equal(smtp_client_rcpt_result(c, 0, &r), SMTP_CLIENT_OK);
  assert_string_equal(r.text, "b Saved");
  assert_int_equal(smtp_client_rcpt_result(c, 1, &r), SMTP_CLIENT_DEFER);
  assert_int_equal(r.local, 1);
  assert_string_equal(r.text, "conversation timed out while waiting for the "
                              "reply to end of data");
  assert_int_equal(smtp_client_rcpt_result(c, 2, &r), SMTP_CLIENT_DEFER);
  expect_event(c, SMTP_CLIENT_EV_SESSION_ERROR, "timeout");
  expect_event(c, SMTP_CLIENT_EV_CLOSED, "closed");
  smtp_client_free(c);
}

static void test_timeout_classes(void **state) {
  struct smtp_client *c = new_client(0, 0, 0);
  assert_int_equal(smtp_client_timeout_class(c), SMTP_CLIENT_TIMEOUT_GREETING);
  feed_str(c, "220 mx\r\n");
  expect_event(c, SMTP_CLIENT_NEED_INPUT, "greeting");
  assert_int_equal(smtp_client_timeout_class(c), SMTP_CLIENT_TIMEOUT_COMMAND);
  feed_str(c, "250 mx\r\n");
  expect_event(c, SMTP_CLIENT_EV_READY, "ehlo");
  assert_int_equal(smtp_client_timeout_class(c), SMTP_CLIENT_TIMEOUT_NONE);
  assert_int_equal(smtp_client_send_message(c, &msg1), 0);
  assert_int_equal(smtp_client_timeout_class(c), SMTP_CLIENT_TIMEOUT_MAIL);
  feed_str(c, "250 ok\r\n");
  expect_event(c, SMTP_CLIENT_NEED_INPUT, "mail");
  assert_int_equal(smtp_client_timeout_class(c), SMTP_CLIENT_TIMEOUT_RCPT);
  feed_str(c, "250 ok\r\n");
  expect_event(c, SMTP_CLIENT_EV_RCPT_RESULT, "rcpt");
  expect_event(c, SMTP_CLIENT_NEED_INPUT, "rcpt");
  assert_int_equal(smtp_client_timeout_class(c), SMTP_CLIENT_TIMEOUT_DATA_INIT);
  feed_str(c, "354 go\r\n");
  expect_event(c, SMTP_CLIENT_NEED_INPUT, "data");
  assert_int_equal(smtp_client_timeout_class(c), SMTP_CLIENT_TIMEOUT_DATA_END);
  static const struct {
    enum smtp_client_timeout_class t;
    unsigned s;
  } secs[] = {{SMTP_CLIENT_TIMEOUT_NONE, 0},
              {SMTP_CLIENT_TIMEOUT_GREETING, 300},
              {SMTP_CLIENT_TIMEOUT_MAIL, 300},
              {SMTP_CLIENT_TIMEOUT_RCPT, 300},
              {SMTP_CLIENT_TIMEOUT_DATA_INIT, 120},
              {SMTP_CLIENT_TIMEOUT_DATA_BLOCK, 180},
              {SMTP_CLIENT_TIMEOUT_DATA_END, 600}};
  for (size_t i = 0; i < sizeof(secs) / sizeof(secs[0]); i++) {
    assert_int_equal(smtp_client_timeout_seconds(secs[i].t), secs[i].s);
  }
  smtp_client_free(c);
}

/* ---- big bodies: bounded output, exact wire form ------------------------- */

/* The reference: CRLF, bare CR and bare LF each make one CRLF; a final
 * line end is added. */
static void normalise(struct buf *out, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (p[i] == '\r' || p[i] == '\n') {
      assert_int_equal(buf_append(out, "\r\n", 2), 0);
      if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n') {
        i++;
      }
    } else {
      assert_int_equal(buf_append(out, p + i, 1), 0);
    }
  }
  if (out->len > 0 && out->data[out->len - 1] != '\n') {
    assert_int_equal(buf_append(out, "\r\n", 2), 0);
  }
}

/* Undoes DATA's dot-stuffing of a body that ends in "\r\n.\r\n". */
static void unstuff(struct buf *out, const uint8_t *p, size_t n) {
  assert_true(n >= 3);
  assert_memory_equal(p + n - 3, ".\r\n", 3);
  n -= 3;
  int line_start = 1;
  for (size_t i = 0; i < n; i++) {
    if (line_start && p[i] == '.') {
      assert_true(i + 1 < n && p[i + 1] == '.'); /* every dot was stuffed */
      i++;
    }
    assert_int_equal(buf_append(out, p + i, 1), 0);
    line_start = p[i] == '\n';
  }
}

/* Reassembles BDAT chunks; checks the framing. */
static void unchunk(struct buf *out, const uint8_t *p, size_t n) {
  size_t i = 0;
  int last = 0;
  while (i < n) {
    assert_false(last);
    char *end;
    assert_memory_equal(p + i, "BDAT ", 5);
    unsigned long long k = strtoull((const char *)p + i + 5, &end, 10);
    last = strncmp(end, " LAST", 5) == 0;
    end += last ? 5 : 0;
    assert_memory_equal(end, "\r\n", 2);
    i = (size_t)((const uint8_t *)end + 2 - p);
    assert_true(k <= n - i);
    assert_int_equal(buf_append(out, p + i, k), 0);
    i += k;
  }
  assert_true(last);
}

/* A body of random octets from alphabet; with plain, of CRLF lines none
 * of which starts with "." (the plain-body fast path). */
static void big_body_make(uint8_t *body, size_t len, int plain) {
  uint32_t rng = 12345;
  const char *alphabet = plain ? "abcdefghij. \xc3" : "abcdefghij.\r\n \xc3";
  size_t sym = strlen(alphabet);
  for (size_t i = 0, col = 0; i < len; i++, col++) {
    rng = rng * 1103515245u + 12345u;
    body[i] = (uint8_t)alphabet[(rng >> 16) % sym];
    if (plain && (i + 2 == len || (col > (rng >> 8) % 200 && i + 4 < len))) {
      memcpy(body + i, "\r\n", 2);
      i++;
      col = (size_t)-1;
    } else if (plain && col == 0 && body[i] == '.') {
      body[i] = 'x';
    }
  }
}

static void big_body(int bdat, int plain) {
  size_t len = 3u << 20;
  uint8_t *body = malloc(len);
  assert_non_null(body);
  big_body_make(body, len, plain);
  /* three spans, split mid-CRLF-ish at odd places */
  struct smtp_client_span spans[3] = {
      {body, 1000003}, {body + 1000003, 7}, {body + 1000010, len - 1000010}};
  struct smtp_client_message m = msg1;
  m.body = spans;
  m.num_body = 3;
  struct smtp_client_body_kind kind;
  smtp_client_body_scan(&kind, &m);
  assert_int_equal(kind.plain, plain);

  struct smtp_client_config cfg;
  smtp_client_config_default(&cfg);
  cfg.extensions = SMTP_CLIENT_EXT_ALL;
  cfg.chunk_size = 10000;
  cfg.limits.max_output = 4096;
  struct smtp_client *c = smtp_client_new(&cfg);
  assert_non_null(c);
  feed_str(c, "220 mx\r\n");
  expect_event(c, SMTP_CLIENT_NEED_INPUT, "greeting");
  feed_str(c, bdat ? "250-mx\r\n250-8BITMIME\r\n250-SIZE\r\n250 CHUNKING\r\n"
                   : "250-mx\r\n250-8BITMIME\r\n250 SIZE\r\n");
  expect_event(c, SMTP_CLIENT_EV_READY, "ehlo");
  drop_output(c);
  assert_int_equal(smtp_client_send_message(c, &m), 0);
  const uint8_t *p;
  size_t n;
  char mail[256];
  smtp_client_output(c, &p, &n);
  assert_true(n < sizeof(mail));
  memcpy(mail, p, n);
  mail[n] = '\0';
  size_t size = strtoull(strstr(mail, "SIZE=") + 5, NULL, 10);
  drop_output(c);
  feed_str(c, "250 ok\r\n");
  expect_event(c, SMTP_CLIENT_NEED_INPUT, "mail");
  drop_output(c); /* RCPT */
  feed_str(c, "250 ok\r\n");
  expect_event(c, SMTP_CLIENT_EV_RCPT_RESULT, "rcpt");
  expect_event(c, SMTP_CLIENT_NEED_INPUT, "rcpt");
  if (!bdat) {
    drop_output(c); /* DATA */
    feed_str(c, "354 go\r\n");
    expect_event(c, SMTP_CLIENT_NEED_INPUT, "data");
  }
  /* Drain like a slow socket; output stays bounded. Without pipelining
   * each BDAT reply lets the next chunk out. */
  struct buf wire = {0}, traded = {0};
  size_t max_seen = 0, takes = 0;
  uint32_t r2 = 99;
  for (int guard = 0; guard < 10000000; guard++) {
    smtp_client_output(c, &p, &n);
    if (n == 0) {
      if (smtp_client_timeout_class(c) == SMTP_CLIENT_TIMEOUT_DATA_BLOCK) {
        feed_str(c, "250 ok\r\n"); /* a BDAT chunk's reply */
        expect_event(c, SMTP_CLIENT_NEED_INPUT, "chunk");
        continue;
      }
      break;
    }
    max_seen = n > max_seen ? n : max_seen;
    r2 = r2 * 1103515245u + 12345u;
    /* Now and then the whole output is taken by trading buffers, as the
     * daemon does on an idle socket; refused after a partial send. */
    if ((r2 >> 20) % 3 == 0) {
      int whole = c->out_off == 0; /* nothing of it sent yet */
      int took = smtp_client_output_take(c, &traded);
      assert_int_equal(took, whole);
      if (took) {
        assert_int_equal(traded.len, n);
        assert_int_equal(buf_append(&wire, traded.data, traded.len), 0);
        buf_reset(&traded);
        takes++;
        continue;
      }
    }
    size_t take = 1 + (r2 >> 8) % 5000;
    take = take < n ? take : n;
    assert_int_equal(buf_append(&wire, p, take), 0);
    smtp_client_output_sent(c, take);
  }
  assert_true(takes > 0);
  buf_free(&traded);
  assert_true(max_seen <= cfg.limits.max_output + cfg.chunk_size + 64);
  if (!bdat) {
    assert_true(max_seen <= cfg.limits.max_output + 8);
  }
  check_wire(wire.data, wire.len, bdat ? "big bdat" : "big data");
  struct buf got = {0}, want = {0};
  if (bdat) {
    unchunk(&got, wire.data, wire.len);
  } else {
    unstuff(&got, wire.data, wire.len);
  }
  normalise(&want, body, len);
  assert_int_equal(got.len, want.len);
  assert_int_equal(size, want.len); /* RFC 1870: SIZE is exact */
  assert_memory_equal(got.data, want.data, want.len);
  feed_str(c, "250 2.0.0 queued\r\n");
  expect_event(c, SMTP_CLIENT_EV_MESSAGE_DONE, "done");
  assert_int_equal(smtp_client_num_status(c, SMTP_CLIENT_OK), 1);
  smtp_client_free(c);
  buf_free(&wire);
  buf_free(&got);
  buf_free(&want);
  free(body);
}

static void test_big_body_data(void **state) {
  big_body(0, 0);
}

static void test_big_body_bdat(void **state) {
  big_body(1, 0);
}

static void test_big_body_plain_data(void **state) {
  big_body(0, 1);
}

static void test_big_body_plain_bdat(void **state) {
  big_body(1, 1);
}

/* ---- plain bodies: the fast path against the line-by-line one ------------
 * A body already in wire form ("plain") is classified by one scan and sent
 * by copying (smtp_client_body_fill_plain); the rest go line by line. The
 * two must agree octet for octet and stop at the same places, so the BDAT
 * chunks and DATA writes are the same whichever path runs. */

static int ref_8bit(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (p[i] >= 0x80) {
      return 1;
    }
  }
  return 0;
}

/* smtp_client_body_scan as on a target without SSE2: scan_span with the
 * portable loops only (elsewhere they see the last few octets only). */
static void scan_scalar(struct smtp_client_body_kind *out,
                        const struct smtp_client_message *m) {
  struct smtp_client_scan s = {.last = '\n'};
  for (size_t i = 0; i < m->num_body; i++) {
    const uint8_t *p = m->body[i].data;
    size_t n = m->body[i].len;
    if (n > 0) {
      s.bad |= smtp_client_scan_pair(s.last, p[0]);
      s.high |= p[0] & 0x80;
      smtp_client_scan_bytes(&s, p, smtp_client_scan_words(&s, p, 1, n), n);
      s.last = p[n - 1];
    }
  }
  out->plain = s.bad == 0 && s.last == '\n';
  out->has_8bit = s.high != 0;
}

static uint32_t body_rand(uint32_t *rng) {
  *rng = *rng * 1103515245u + 12345u;
  return *rng >> 16;
}

/* Fills m's body with the plain path (plain 1) or the line-by-line one,
 * `max` per call as the seed says, recording every call's octets and
 * count in out. Returns the number of calls. */
static size_t fill_all(struct buf *out, const struct smtp_client_message *m,
                       int plain, int stuff, uint32_t seed) {
  struct smtp_client_body b;
  smtp_client_body_init(&b, m, plain);
  size_t calls = 0;
  while (!b.ended) {
    assert_true(calls < 100000);
    size_t pick = body_rand(&seed) % 8;
    size_t max = pick < 5    ? 1 + pick
                 : pick == 5 ? SIZE_MAX
                             : 1 + body_rand(&seed) % 300;
    struct smtp_client_sink k = {.out = out};
    smtp_client_body_fill(&b, &k, max, stuff);
    assert_false(k.failed);
    /* Each call's octets, then a separator no body octet matches. */
    assert_int_equal(buf_printf(out, "|%zu|", k.n), 0);
    calls++;
  }
  return calls;
}

/* Checks one body, split into spans: the scan against the references, and
 * for a plain body both fill paths, DATA and BDAT, against each other. */
static void check_body(const char *label, const struct smtp_client_span *spans,
                       size_t num_spans, uint32_t seed) {
  struct buf flat = {0};
  for (size_t i = 0; i < num_spans; i++) {
    assert_int_equal(buf_append(&flat, spans[i].data, spans[i].len), 0);
  }
  struct smtp_client_message m = msg1;
  m.body = spans;
  m.num_body = num_spans;
  struct smtp_client_body_kind kind, scalar;
  smtp_client_body_scan(&kind, &m);
  scan_scalar(&scalar, &m);
  int want_plain = wire_ref_plain(flat.data, flat.len);
  int want_8bit = ref_8bit(flat.data, flat.len);
  if (kind.plain != want_plain || kind.has_8bit != want_8bit ||
      kind.len != flat.len || scalar.plain != want_plain ||
      scalar.has_8bit != want_8bit) {
    fail_msg("%s: plain %d 8bit %d len %zu (scalar: %d %d), want %d %d %zu",
             label, kind.plain, kind.has_8bit, kind.len, scalar.plain,
             scalar.has_8bit, want_plain, want_8bit, flat.len);
  }
  if (want_plain) {
    /* RFC 1870 SIZE: the line-by-line count is the length. */
    assert_int_equal(smtp_client_body_size(&m), flat.len);
    for (int stuff = 0; stuff <= 1; stuff++) {
      struct buf fast = {0}, slow = {0};
      size_t fast_calls = fill_all(&fast, &m, 1, stuff, seed);
      size_t slow_calls = fill_all(&slow, &m, 0, stuff, seed);
      if (fast_calls != slow_calls || fast.len != slow.len ||
          memcmp(fast.data, slow.data, fast.len) != 0) {
        char got[512], want[512];
        escape(got, sizeof(got), fast.data, fast.len);
        escape(want, sizeof(want), slow.data, slow.len);
        fail_msg("%s (stuff %d): fill\n got  %s\n want %s", label, stuff, got,
                 want);
      }
      buf_free(&fast);
      buf_free(&slow);
    }
  }
  buf_free(&flat);
}

/* Cuts a body into 1..4 spans; cuts favour the hard places: between CR
 * and LF, right before a ".", the ends (empty spans), one octet apart. */
static size_t cut_body(struct smtp_client_span *out_spans, const uint8_t *p,
                       size_t n, uint32_t *rng) {
  size_t num_cuts = body_rand(rng) % 4, cuts[5];
  for (size_t i = 0; i < num_cuts; i++) {
    size_t at = n ? body_rand(rng) % (n + 1) : 0;
    switch (body_rand(rng) % 5) {
    case 0:
      at = body_rand(rng) % 2 ? 0 : n;
      break;
    case 1:
      while (at < n && !(at > 0 && p[at - 1] == '\r' && p[at] == '\n')) {
        at++;
      }
      break;
    case 2:
      while (at < n && p[at] != '.') {
        at++;
      }
      break;
    case 3:
      at = i > 0 && cuts[i - 1] < n ? cuts[i - 1] + 1 : at;
      break;
    }
    cuts[i] = at;
  }
  for (size_t i = 1; i < num_cuts; i++) { /* sort: few cuts */
    for (size_t j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
      size_t t = cuts[j];
      cuts[j] = cuts[j - 1];
      cuts[j - 1] = t;
    }
  }
  cuts[num_cuts] = n;
  size_t from = 0;
  for (size_t i = 0; i <= num_cuts; i++) {
    out_spans[i] = (struct smtp_client_span){p + from, cuts[i] - from};
    from = cuts[i];
  }
  return num_cuts + 1;
}

/* A random body: mostly CRLF lines of 'a', ".", 0x80 (plain unless a flaw
 * is put in), or any mix of 'a', '.', CR, LF and 0x80. */
static size_t gen_body(uint8_t *out, size_t cap, uint32_t *rng) {
  static const uint8_t mix[] = {'a', '.', '\r', '\n', 0x80};
  size_t n = 0;
  if (body_rand(rng) % 4 == 0) {
    size_t len = body_rand(rng) % (cap + 1);
    for (; n < len; n++) {
      out[n] = mix[body_rand(rng) % sizeof(mix)];
    }
    return n;
  }
  size_t num_lines = body_rand(rng) % 12;
  for (size_t l = 0; l < num_lines && n + 2 <= cap; l++) {
    uint32_t r = body_rand(rng);
    size_t len = r % 4 == 0 ? r / 4 % 3 : r / 4 % 150;
    for (size_t i = 0; i < len && n + 2 < cap; i++) {
      uint32_t c = body_rand(rng) % 40;
      out[n++] = c == 0 ? 0x80 : c == 1 && i > 0 ? '.' : 'a';
    }
    out[n++] = '\r';
    out[n++] = '\n';
  }
  if (n > 0 && body_rand(rng) % 3 == 0) { /* one flaw somewhere */
    size_t at = body_rand(rng) % n;
    static const uint8_t flaw[] = {'.', '\r', '\n', 'a'};
    out[at] = flaw[body_rand(rng) % sizeof(flaw)];
    if (body_rand(rng) % 2) {
      n = at + 1; /* and the body ends there */
    }
  }
  return n;
}

/* Many random bodies and splits: fast path equals slow path, the scan
 * equals the references. */
static void test_body_plain_random(void **state) {
  static uint8_t body[1100];
  uint32_t rng = 2024;
  size_t num_plain = 0;
  for (int iter = 0; iter < 20000; iter++) {
    size_t cap = iter % 10 == 0 ? sizeof(body) : 300;
    size_t n = gen_body(body, cap, &rng);
    struct smtp_client_span spans[4];
    size_t num_spans = cut_body(spans, body, n, &rng);
    char label[64];
    snprintf(label, sizeof(label), "random body %d", iter);
    check_body(label, spans, num_spans, rng);
    num_plain += wire_ref_plain(body, n);
  }
  /* Both kinds were tried often. */
  assert_true(num_plain > 5000 && num_plain < 15000);
}

#define SPANS(...)                                                             \
  (const struct smtp_client_span[]) {                                          \
    __VA_ARGS__                                                                \
  }

/* The edges, labelled; check_body holds the expectations. */
static void test_body_plain_cases(void **state) {
  const struct {
    const char *name;
    const struct smtp_client_span *spans;
    size_t num_spans;
    int plain, has_8bit;
  } cases[] = {
      {"no spans", NULL, 0, 1, 0},
      {"empty spans", SPANS(SPAN(""), SPAN("")), 2, 1, 0},
      {"one line", SPANS(SPAN("a\r\n")), 1, 1, 0},
      {"empty line", SPANS(SPAN("\r\n")), 1, 1, 0},
      {"no final CRLF", SPANS(SPAN("a\r\nb")), 1, 0, 0},
      {"ends in bare CR", SPANS(SPAN("a\r\nb\r")), 1, 0, 0},
      {"ends in bare LF", SPANS(SPAN("a\r\nb\n")), 1, 0, 0},
      {"bare LF first", SPANS(SPAN("\na\r\n")), 1, 0, 0},
      {"CR CR LF", SPANS(SPAN("a\r\r\n")), 1, 0, 0},
      {"dot first octet", SPANS(SPAN(".a\r\n")), 1, 0, 0},
      {"dot first, after empty span", SPANS(SPAN(""), SPAN(".a\r\n")), 2, 0, 0},
      {"dot mid-line", SPANS(SPAN("a.b.\r\n")), 1, 1, 0},
      {"CRLF dot across spans", SPANS(SPAN("a\r\n"), SPAN(".b\r\n")), 2, 0, 0},
      {"CR | LF dot across spans", SPANS(SPAN("a\r"), SPAN("\n.b\r\n")), 2, 0,
       0},
      {"CR | LF across spans", SPANS(SPAN("a\r"), SPAN("\nb\r\n")), 2, 1, 0},
      {"CR | empty | LF", SPANS(SPAN("a\r"), SPAN(""), SPAN("\n")), 3, 1, 0},
      {"CR | bare", SPANS(SPAN("a\r"), SPAN("b\r\n")), 2, 0, 0},
      {"bare LF after span", SPANS(SPAN("a"), SPAN("\nb\r\n")), 2, 0, 0},
      {"8-bit", SPANS(SPAN("caf\xc3\xa9\r\n")), 1, 1, 1},
      /* 64-octet blocks: the carries between them */
      {"CR | LF at octet 64",
       SPANS(SPAN(
           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
           "\r\nb\r\n")),
       1, 1, 0},
      {"bare CR at octet 63",
       SPANS(SPAN(
           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
           "\rb\r\n")),
       1, 0, 0},
      {"dot at octet 64",
       SPANS(
           SPAN("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                "\r\n.b\r\n")),
       1, 0, 0},
      {"no dot at octet 64",
       SPANS(
           SPAN("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                "\r\nb.\r\n")),
       1, 1, 0},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct smtp_client_message m = msg1;
    m.body = cases[i].spans;
    m.num_body = cases[i].num_spans;
    struct smtp_client_body_kind kind;
    smtp_client_body_scan(&kind, &m);
    if (kind.plain != cases[i].plain || kind.has_8bit != cases[i].has_8bit) {
      fail_msg("%s: got plain %d 8bit %d, want %d %d", cases[i].name,
               kind.plain, kind.has_8bit, cases[i].plain, cases[i].has_8bit);
    }
    for (uint32_t seed = 0; seed < 20; seed++) {
      check_body(cases[i].name, cases[i].spans, cases[i].num_spans, seed);
    }
  }
}

/* An 8-bit octet in the last 1..15 octets (the tail after whole blocks),
 * or anywhere, for lengths around the 64-octet blocks. */
static void test_body_plain_8bit_tail(void **state) {
  static const size_t lens[] = {3,  15, 16,  17,  63,  64,
                                65, 66, 127, 128, 130, 200};
  uint8_t body[256];
  for (size_t l = 0; l < sizeof(lens) / sizeof(lens[0]); l++) {
    size_t n = lens[l];
    for (size_t at = 0; at + 2 < n; at++) {
      memset(body, 'a', n - 2);
      memcpy(body + n - 2, "\r\n", 2);
      body[at] = 0xc3;
      struct smtp_client_span span = {body, n};
      char label[64];
      snprintf(label, sizeof(label), "len %zu, 8-bit at %zu", n, at);
      check_body(label, &span, 1, (uint32_t)at);
      struct smtp_client_message m = msg1;
      m.body = &span;
      m.num_body = 1;
      struct smtp_client_body_kind kind;
      smtp_client_body_scan(&kind, &m);
      if (!kind.plain || !kind.has_8bit) {
        fail_msg("%s: plain %d 8bit %d", label, kind.plain, kind.has_8bit);
      }
    }
  }
}

/* Every split of a pipelined session's server bytes into two feeds gives
 * the same output and events as feeding it whole. */
static void test_split_every_point(void **state) {
  static const char server[] =
      "220-mx.example ESMTP\r\n220 hi\r\n"
      "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 100\r\n250 DSN\r\n"
      "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550-5.1.1 no\r\n550 5.1.1 such\r\n"
      "250 2.1.5 Ok\r\n354 go\r\n";
  char want_events[256] = "";
  struct buf want_out = {0};
  for (size_t at = 0; at <= sizeof(server) - 1; at++) {
    struct smtp_client *c = new_client(0, 0, 0);
    struct buf out = {0};
    char events[256] = "";
    size_t parts[2][2] = {{0, at}, {at, sizeof(server) - 1 - at}};
    for (int k = 0; k < 2; k++) {
      assert_int_equal(smtp_client_feed(c,
                                        (const uint8_t *)server + parts[k][0],
                                        parts[k][1]),
                       0);
      for (;;) {
        enum smtp_client_event ev = smtp_client_next(c);
        if (ev == SMTP_CLIENT_NEED_INPUT) {
          break;
        }
        snprintf(events + strlen(events), sizeof(events) - strlen(events),
                 "%d ", ev);
        if (ev == SMTP_CLIENT_EV_READY) {
          assert_int_equal(smtp_client_send_message(c, &msg3), 0);
        }
      }
      const uint8_t *p;
      size_t n;
      for (smtp_client_output(c, &p, &n); n > 0;
           smtp_client_output(c, &p, &n)) {
        assert_int_equal(buf_append(&out, p, n), 0);
        smtp_client_output_sent(c, n);
      }
    }
    if (at == 0) {
      strcpy(want_events, events);
      assert_int_equal(buf_append(&want_out, out.data, out.len), 0);
    } else {
      if (strcmp(events, want_events) != 0 || out.len != want_out.len ||
          memcmp(out.data, want_out.data, out.len) != 0) {
        fail_msg("split at %zu: events %s want %s", at, events, want_events);
      }
    }
    smtp_client_free(c);
    buf_free(&out);
  }
  /* R0 R1 R2 and the body after 354 */
  assert_string_equal(want_events, "1 2 2 2 ");
  buf_free(&want_out);
}

/* ---- against Postfix's smtp-sink over real TCP -------------------------- */

#define SINK "/usr/sbin/smtp-sink"
#define SINK_MESSAGES 100

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof(a);
  assert_true(fd >= 0);
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
  close(fd);
  return ntohs(a.sin_port);
}

static pid_t start_sink(int port, int *out_fd) {
  int pipefd[2];
  char addr[64];
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
  assert_int_equal(pipe(pipefd), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(pipefd[1], 1);
    dup2(pipefd[1], 2);
    close(pipefd[0]);
    if (geteuid() == 0) {
      execl(SINK, SINK, "-c", "-u", "nobody", addr, "100", (char *)NULL);
    } else {
      execl(SINK, SINK, "-c", addr, "100", (char *)NULL);
    }
    _exit(127);
  }
  close(pipefd[1]);
  *out_fd = pipefd[0];
  return pid;
}

static int connect_retry(int port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int i = 0; i < 250; i++) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
      struct timeval tv = {.tv_sec = 10};
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
      return fd;
    }
    close(fd);
    usleep(20000);
  }
  return -1;
}

/* Sends everything the engine has, blocking. Returns 0 or -1. */
static int sink_flush(struct smtp_client *c, int fd) {
  for (;;) {
    const uint8_t *p;
    size_t n;
    smtp_client_output(c, &p, &n);
    if (n == 0) {
      return 0;
    }
    ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
    if (k <= 0) {
      return -1;
    }
    smtp_client_output_sent(c, (size_t)k);
  }
}

/* Runs one session of SINK_MESSAGES messages; returns how many were
 * delivered to every recipient. */
static int sink_session(int fd, const struct smtp_client_message *m) {
  struct smtp_client_config cfg;
  smtp_client_config_default(&cfg);
  cfg.helo_name = "client.example";
  struct smtp_client *c = smtp_client_new(&cfg);
  assert_non_null(c);
  int sent = 0, delivered = 0;
  for (;;) {
    enum smtp_client_event ev = smtp_client_next(c);
    if (ev == SMTP_CLIENT_EV_CLOSED) {
      break;
    }
    if (ev == SMTP_CLIENT_EV_READY) {
      if (sent++ < SINK_MESSAGES) {
        assert_int_equal(smtp_client_send_message(c, m), 0);
      } else {
        smtp_client_quit(c);
      }
    } else if (ev == SMTP_CLIENT_EV_MESSAGE_DONE) {
      delivered += smtp_client_num_status(c, SMTP_CLIENT_OK) == m->num_rcpts;
    } else if (ev == SMTP_CLIENT_EV_SESSION_ERROR) {
      fail_msg("session error %d: %d %s", smtp_client_session_error(c),
               smtp_client_reply(c)->code, smtp_client_reply(c)->text);
    } else if (ev == SMTP_CLIENT_NEED_INPUT) {
      uint8_t in[4096];
      if (sink_flush(c, fd) != 0) {
        smtp_client_eof(c);
        continue;
      }
      ssize_t k = recv(fd, in, sizeof(in), 0);
      if (k > 0) {
        assert_int_equal(smtp_client_feed(c, in, (size_t)k), 0);
      } else if (k == 0) {
        smtp_client_eof(c);
      } else {
        smtp_client_timeout(c); /* SO_RCVTIMEO: bounded */
      }
    }
  }
  smtp_client_free(c);
  return delivered;
}

/* Reads smtp-sink's counters ("sess=1 quit=1 mesg=100") for up to 5 s. */
static int sink_counted(int fd, const char *want) {
  char text[8192];
  size_t len = 0;
  for (int i = 0; i < 50; i++) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, 100) > 0) {
      ssize_t k = read(fd, text + len, sizeof(text) - 1 - len);
      if (k <= 0) {
        break;
      }
      len += (size_t)k;
      text[len] = '\0';
      if (strstr(text, want) != NULL) {
        return 1;
      }
    }
  }
  text[len] = '\0';
  print_message("smtp-sink said: %s\n", text);
  return 0;
}

static void test_smtp_sink(void **state) {
  if (access(SINK, X_OK) != 0) {
    skip();
  }
  static const struct smtp_client_span body[] = {
      SPAN("From: a@s.example\r\nSubject: sink test\r\n\r\n"),
      SPAN(".leading dot\nbare LF line\r\n..two dots\r\nlast line")};
  static const struct smtp_client_rcpt rcpts[] = {
      {.addr = "b@r.example", .notify = SMTP_NOTIFY_FAILURE},
      {.addr = "c@r.example"}};
  const struct smtp_client_message m = {.sender = "a@s.example",
                                        .envid = "id1",
                                        .ret = SMTP_RET_HDRS,
                                        .rcpts = rcpts,
                                        .num_rcpts = 2,
                                        .body = body,
                                        .num_body = 2};
  int port = free_port();
  int out_fd;
  pid_t pid = start_sink(port, &out_fd);
  alarm(60); /* the whole test is bounded */
  int fd = connect_retry(port);
  int delivered = fd >= 0 ? sink_session(fd, &m) : -1;
  if (fd >= 0) {
    close(fd);
  }
  int counted = sink_counted(out_fd, "quit=1 mesg=100");
  alarm(0);
  kill(pid, SIGTERM);
  waitpid(pid, NULL, 0);
  close(out_fd);
  assert_int_equal(delivered, SINK_MESSAGES);
  assert_true(counted);
}

int main(void) {
  static const struct CMUnitTest fixed[] = {
      cmocka_unit_test(test_reply_lines),
      cmocka_unit_test(test_reply_enhanced),
      cmocka_unit_test(test_reply_text),
      cmocka_unit_test(test_capabilities),
      cmocka_unit_test(test_starttls_injection),
      cmocka_unit_test(test_starttls_api),
      cmocka_unit_test(test_invalid_messages),
      cmocka_unit_test(test_rcpt_results),
      cmocka_unit_test(test_lmtp_results),
      cmocka_unit_test(test_timeout_classes),
      cmocka_unit_test(test_big_body_data),
      cmocka_unit_test(test_big_body_bdat),
      cmocka_unit_test(test_big_body_plain_data),
      cmocka_unit_test(test_big_body_plain_bdat),
      cmocka_unit_test(test_body_plain_random),
      cmocka_unit_test(test_body_plain_cases),
      cmocka_unit_test(test_body_plain_8bit_tail),
      cmocka_unit_test(test_split_every_point),
      cmocka_unit_test(test_smtp_sink),
  };
  size_t num_sc = sizeof(scenarios) / sizeof(scenarios[0]);
  size_t num_fixed = sizeof(fixed) / sizeof(fixed[0]);
  struct CMUnitTest *tests = calloc(num_sc + num_fixed, sizeof(*tests));
  if (tests == NULL) {
    return 1;
  }
  /* One cmocka test per scenario, named by its label. */
  for (size_t i = 0; i < num_sc; i++) {
    tests[i].name = scenarios[i].name;
    tests[i].test_func = test_scenario;
    tests[i].initial_state = (void *)&scenarios[i];
  }
  memcpy(tests + num_sc, fixed, sizeof(fixed));
  int rc = _cmocka_run_group_tests("smtp_client", tests, num_sc + num_fixed,
                                   NULL, NULL);
  free(tests);
  return rc;
}
