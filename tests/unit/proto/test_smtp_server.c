/* tests/unit/proto/test_smtp_server.c — the SMTP server engine, driven by
 * scenario scripts: send this, expect these replies and events.
 *
 * A script is the client's side of a session. WAIT marks where the client
 * stops and waits for replies (the harness then runs the engine until it
 * needs input); NUL stands for a 0 octet. The harness's host accepts
 * everything except addresses containing "reject" (550 5.7.1) and bodies
 * containing "REJECTME" (554 5.7.1); messages are queued as "Q1". It
 * finishes a TLS handshake at the first WAIT after EV_STARTTLS (what the
 * client sent in clear before that is discarded by the engine), and takes
 * user "alice" with password "secret", answers user "busy" 454 (rate
 * limited) and fails anyone else. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/smtp_server.h"

#define CRLF "\r\n"
#define WAIT "\x01"
#define NUL "\x02"

#define X10 "xxxxxxxxxx"
#define X50 X10 X10 X10 X10 X10
#define X100 X50 X50
#define X500 X100 X100 X100 X100 X100
#define X998 X500 X100 X100 X100 X100 X50 X10 X10 X10 X10 "xxxxxxxx"
#define A10 "aaaaaaaaaa"
#define A60 A10 A10 A10 A10 A10 A10
#define L63 A60 "bbb"
#define L64 A60 "bbbb"
#define X6000 X500 X500 X500 X500 X500 X500 X500 X500 X500 X500 X500 X500
#define X12288 X6000 X6000 X100 X100 X50 X10 X10 X10 "xxxxxxxx"

#define EHLO "EHLO client.example" CRLF WAIT
#define HELO "HELO client.example" CRLF WAIT
#define MAIL "MAIL FROM:<a@sender.example>" CRLF
#define RCPT "RCPT TO:<b@rcpt.example>" CRLF
#define TXN EHLO MAIL RCPT "DATA" CRLF WAIT
#define R_TXN "220|250|250 2.1.0|250 2.1.5|354"
#define EV_TXN "HELO MAIL RCPT"
#define R_BDAT "220|250|250 2.1.0|250 2.1.5"

/* Pipelined BDAT: a message whose CRLFs and header/body separator are split
 * between chunks, then one refused at its second chunk (a LF opening it
 * follows a complete line: bare), with a chunk already sent after it. */
#define BDAT_SPLIT_SESSION                                                     \
  EHLO MAIL RCPT "BDAT 11" CRLF "Subject: s\r"                                 \
                 "BDAT 2" CRLF "\n\r"                                          \
                 "BDAT 15" CRLF "\nline one\r\nline"                           \
                 "BDAT 6 LAST" CRLF " two\r\n" MAIL RCPT "BDAT 3" CRLF "a\r\n" \
                 "BDAT 2" CRLF "\nb"                                           \
                 "BDAT 2 LAST" CRLF "c\r"                                      \
                 "QUIT" CRLF
#define BDAT_SPLIT_BODY "Subject: s\r\n\r\nline one\r\nline two\r\n"

/* STARTTLS and AUTH: the extensions hosts opt in to, base64 responses. */
#define EXT_TLS_AUTH (SMTP_EXT_STARTTLS | SMTP_EXT_AUTH)
#define STARTTLS "STARTTLS" CRLF WAIT
#define B64_ALICE "YWxpY2U="                       /* alice */
#define B64_SECRET "c2VjcmV0"                      /* secret */
#define PLAIN_ALICE "AGFsaWNlAHNlY3JldA=="         /* \0alice\0secret */
#define PLAIN_ZID_SAME "YWxpY2UAYWxpY2UAc2VjcmV0"  /* alice\0alice\0secret */
#define PLAIN_ZID_OTHER "Ym9iAGFsaWNlAHNlY3JldA==" /* bob\0alice\0secret */
#define PLAIN_WRONG "AGFsaWNlAHdyb25n"             /* \0alice\0wrong */
#define PLAIN_BUSY "AGJ1c3kAeA=="                  /* \0busy\0x */
#define PLAIN_NO_USER "AABzZWNyZXQ="               /* \0\0secret */
#define PLAIN_ONE_NUL "YWxpY2UAc2VjcmV0"           /* alice\0secret */
#define PLAIN_THREE_NULS "AGFsaWNlAHNlYwByZXQ="    /* \0alice\0sec\0ret */
#define LOGIN_CTRL "AWJhZA=="                      /* \x01bad */
#define AUTH_OK "AUTH PLAIN " PLAIN_ALICE CRLF WAIT
#define R_AUTH_OK "220|250|235 2.7.0"

/* A submission client: STARTTLS with a MAIL and an AUTH pipelined in
 * clear (discarded), a cancelled LOGIN, a failed PLAIN, a LOGIN, then a
 * message. */
#define SUBMISSION_SESSION                                                     \
  EHLO "STARTTLS" CRLF MAIL "AUTH PLAIN " PLAIN_ALICE CRLF WAIT EHLO           \
       "AUTH LOGIN" CRLF WAIT B64_ALICE CRLF WAIT "*" CRLF WAIT                \
       "AUTH PLAIN" CRLF WAIT PLAIN_WRONG CRLF WAIT                            \
       "AUTH LOGIN " B64_ALICE CRLF WAIT B64_SECRET CRLF                       \
       "MAIL FROM:<a@b.example> AUTH=a+2Bb" CRLF RCPT "DATA" CRLF WAIT         \
       "x" CRLF "." CRLF "QUIT" CRLF

/* ---- harness --------------------------------------------------------- */

struct result {
  struct buf out;    /* everything the engine sent */
  char events[4096]; /* event names, space separated */
  char detail[8192]; /* what the host saw: addresses, bodies */
  struct buf body;   /* the last message body */
  int closed;
  int tls_pending; /* EV_STARTTLS seen; the handshake ends at the next WAIT */
};

enum feed_mode { FEED_SEGMENTS, FEED_SPLIT, FEED_BYTES };

/* Session flags (struct smtp_server_config's TLS and AUTH fields). */
enum {
  CFG_TLS_ACTIVE = 1u << 0,
  CFG_TLS_REQUIRED = 1u << 1,
  CFG_AUTH_REQUIRED = 1u << 2,
};

struct run {
  unsigned ext_off; /* extensions switched off */
  unsigned ext_on;  /* extensions switched on (beyond SMTP_EXT_ALL) */
  unsigned cfg;     /* CFG_* */
  void (*tweak)(struct smtp_server_limits *l);
  enum feed_mode mode;
  size_t split_at; /* FEED_SPLIT: script offset of the extra split */
  struct smtp_server_stats *stats;
};

static void add_word(char *dst, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void add_word(char *dst, size_t cap, const char *fmt, ...) {
  size_t n = strlen(dst);
  if (n > 0 && n + 1 < cap) {
    dst[n++] = ' ';
    dst[n] = '\0';
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(dst + n, cap - n, fmt, ap);
  va_end(ap);
}

/* Takes the output in two steps, so partial sends are exercised too. */
static void collect_output(struct smtp_server *s, struct result *r) {
  for (int i = 0; i < 2; i++) {
    const uint8_t *p;
    size_t n;
    smtp_server_output(s, &p, &n);
    size_t take = i == 0 ? n / 2 : n;
    assert_int_equal(buf_append(&r->out, p, take), 0);
    smtp_server_output_sent(s, take);
  }
}

static void host_message(struct smtp_server *s, struct result *r) {
  const struct smtp_envelope *e = smtp_server_envelope(s);
  smtp_server_take_body(s, &r->body);
  add_word(r->detail, sizeof(r->detail), "MESSAGE from=<%s> rcpts=%zu",
           e->sender, e->num_rcpts);
  if (r->body.len < 200) {
    add_word(r->detail, sizeof(r->detail), "BODY[%.*s]", (int)r->body.len,
             (const char *)r->body.data);
  }
  if (r->body.len > 0 &&
      memmem(r->body.data, r->body.len, "REJECTME", 8) != NULL) {
    smtp_server_reject(s, 554, "5.7.1", "Content rejected");
  } else {
    smtp_server_reply_queued(s, "Q1");
  }
}

/* Checks the password against alice/secret; the password getter holds it
 * only until the verdict. */
static void host_auth(struct smtp_server *s, struct result *r) {
  const char *user = smtp_server_auth_user(s);
  const char *pass = smtp_server_auth_password(s);
  assert_non_null(user);
  assert_non_null(pass);
  assert_int_equal(smtp_server_timeout_class(s), SMTP_TIMEOUT_NONE);
  add_word(r->detail, sizeof(r->detail), "AUTH %s", user);
  if (strcmp(user, "busy") == 0) {
    smtp_server_reject(s, 454, "4.7.0", "Too many failures");
  } else {
    smtp_server_auth_result(s, strcmp(user, "alice") == 0 &&
                                   strcmp(pass, "secret") == 0);
  }
  assert_null(smtp_server_auth_password(s));
  if (smtp_server_authenticated(s)) {
    assert_string_equal(smtp_server_auth_user(s), "alice");
  } else {
    assert_null(smtp_server_auth_user(s));
  }
}

static void host_mail(struct smtp_server *s, struct result *r) {
  const struct smtp_envelope *e = smtp_server_envelope(s);
  add_word(r->detail, sizeof(r->detail), "MAIL <%s> proto=%s", e->sender,
           smtp_server_protocol(s));
  if (e->auth != NULL) {
    add_word(r->detail, sizeof(r->detail), "auth=<%s>", e->auth);
  }
  if (e->requiretls) {
    add_word(r->detail, sizeof(r->detail), "requiretls");
  }
  if (strstr(e->sender, "reject")) {
    smtp_server_reject(s, 550, "5.7.1", "Sender rejected");
  } else {
    smtp_server_accept(s);
  }
}

/* Plays the host: runs the engine until it needs input, giving verdicts. */
static void drain(struct smtp_server *s, struct result *r) {
  for (;;) {
    enum smtp_server_event ev = smtp_server_next(s);
    const struct smtp_rcpt *rc;
    switch (ev) {
    case SMTP_SERVER_NEED_INPUT:
      collect_output(s, r);
      return;
    case SMTP_SERVER_WAIT_VERDICT:
      if (!r->tls_pending) {
        fail_msg("WAIT_VERDICT although every verdict was given");
      }
      collect_output(s, r); /* the 220 leaves in clear */
      return;
    case SMTP_SERVER_EV_STARTTLS:
      add_word(r->events, sizeof(r->events), "STARTTLS");
      assert_int_equal(smtp_server_timeout_class(s), SMTP_TIMEOUT_NONE);
      r->tls_pending = 1;
      break;
    case SMTP_SERVER_EV_AUTH:
      add_word(r->events, sizeof(r->events), "AUTH");
      host_auth(s, r);
      break;
    case SMTP_SERVER_EV_HELO:
      add_word(r->events, sizeof(r->events), "HELO");
      break;
    case SMTP_SERVER_EV_MAIL:
      add_word(r->events, sizeof(r->events), "MAIL");
      host_mail(s, r);
      break;
    case SMTP_SERVER_EV_RCPT:
      rc = smtp_server_pending_rcpt(s);
      add_word(r->events, sizeof(r->events), "RCPT");
      add_word(r->detail, sizeof(r->detail), "RCPT %s%s", rc->addr,
               rc->source_route ? " sr" : "");
      if (strstr(rc->addr, "reject")) {
        smtp_server_reject(s, 550, "5.7.1", "Recipient rejected");
      } else {
        smtp_server_accept(s);
      }
      break;
    case SMTP_SERVER_EV_MESSAGE:
      add_word(r->events, sizeof(r->events), "MESSAGE");
      host_message(s, r);
      break;
    case SMTP_SERVER_EV_RSET:
      add_word(r->events, sizeof(r->events), "RSET");
      break;
    case SMTP_SERVER_EV_CLOSE:
      add_word(r->events, sizeof(r->events), "CLOSE");
      collect_output(s, r);
      r->closed = 1;
      return;
    }
  }
}

/* Feeds like a socket would: at most 64 KiB at a time, waiting (running
 * the engine) when the input buffer is full. */
static void feed(struct smtp_server *s, struct result *r, const uint8_t *p,
                 size_t n) {
  while (n > 0 && !r->closed) {
    size_t k = n < 65536 ? n : 65536;
    if (smtp_server_feed(s, p, k) != 0) {
      drain(s, r);
      assert_int_equal(smtp_server_feed(s, p, k), 0);
    }
    drain(s, r);
    p += k;
    n -= k;
  }
}

static void feed_segment(struct smtp_server *s, struct result *r,
                         const struct run *run, const uint8_t *seg, size_t n,
                         size_t seg_off) {
  if (run->mode == FEED_BYTES) {
    for (size_t i = 0; i < n && !r->closed; i++) {
      feed(s, r, seg + i, 1);
    }
  } else if (run->mode == FEED_SPLIT && run->split_at > seg_off &&
             run->split_at < seg_off + n) {
    size_t k = run->split_at - seg_off;
    feed(s, r, seg, k);
    feed(s, r, seg + k, n - k);
  } else {
    feed(s, r, seg, n);
  }
}

/* The handshake is over: what the client sent in clear after STARTTLS
 * (in the same segment) was discarded, never run. */
static void host_tls_started(struct smtp_server *s, struct result *r) {
  add_word(r->detail, sizeof(r->detail), "STARTTLS discarded=%zu",
           smtp_server_discarded(s));
  assert_int_equal(smtp_server_tls_active(s), 0);
  smtp_server_tls_started(s);
  assert_int_equal(smtp_server_tls_active(s), 1);
  assert_null(smtp_server_helo(s));
  r->tls_pending = 0;
  drain(s, r);
}

static struct smtp_server *new_session(const struct run *run) {
  struct smtp_server_config cfg = {
      .hostname = "mx.example",
      .extensions = (SMTP_EXT_ALL & ~run->ext_off) | run->ext_on,
      .stats = run->stats,
      .tls_active = (run->cfg & CFG_TLS_ACTIVE) != 0,
      .tls_required = (run->cfg & CFG_TLS_REQUIRED) != 0,
      .auth_required = (run->cfg & CFG_AUTH_REQUIRED) != 0,
  };
  smtp_server_limits_default(&cfg.limits);
  if (run->tweak != NULL) {
    run->tweak(&cfg.limits);
  }
  struct smtp_server *s = smtp_server_new(&cfg);
  assert_non_null(s);
  return s;
}

/* Runs one script (len octets, markers included) to its end. */
static void run_script(const struct run *run, const char *script, size_t len,
                       struct result *r) {
  memset(r, 0, sizeof(*r));
  struct smtp_server *s = new_session(run);
  drain(s, r);
  uint8_t *seg = malloc(len + 1);
  assert_non_null(seg);
  size_t start = 0;
  while (start <= len && !r->closed) {
    const char *mark = memchr(script + start, WAIT[0], len - start);
    size_t end = mark ? (size_t)(mark - script) : len;
    for (size_t i = start; i < end; i++) {
      seg[i - start] = script[i] == NUL[0] ? 0 : (uint8_t)script[i];
    }
    feed_segment(s, r, run, seg, end - start, start);
    if (r->tls_pending && !r->closed) {
      host_tls_started(s, r);
    }
    start = end + 1;
  }
  free(seg);
  smtp_server_free(s);
}

static void result_free(struct result *r) {
  buf_free(&r->out);
  buf_free(&r->body);
}

/* Splits the output into reply lines, checking each is "ddd" then SP or
 * "-", ends in CRLF, and holds no other CR or LF. Returns the final lines
 * (the "ddd " ones) joined by "|". */
static void reply_lines(const struct result *r, char *out, size_t cap) {
  size_t i = 0, n = 0;
  out[0] = '\0';
  while (i < r->out.len) {
    const uint8_t *p = r->out.data + i;
    const uint8_t *lf = memchr(p, '\n', r->out.len - i);
    if (lf == NULL || lf == p || lf[-1] != '\r') {
      fail_msg("output not CRLF-terminated at offset %zu", i);
    }
    size_t len = (size_t)(lf - p) - 1;
    if (len < 4 || p[0] < '2' || p[0] > '5' || p[1] < '0' || p[1] > '9' ||
        p[2] < '0' || p[2] > '9' || (p[3] != ' ' && p[3] != '-') ||
        memchr(p, '\r', len) != NULL) {
      fail_msg("malformed reply line: %.*s", (int)len, (const char *)p);
    }
    if (p[3] == ' ') {
      n += (size_t)snprintf(out + n, cap - n, "%s%.*s", n ? "|" : "", (int)len,
                            (const char *)p);
      assert_true(n < cap);
    }
    i = (size_t)(lf - r->out.data) + 1;
  }
}

/* Each "|"-separated item of want must prefix the matching reply. */
static int replies_match(const char *got, const char *want) {
  for (;;) {
    const char *g_end = strchr(got, '|');
    const char *w_end = strchr(want, '|');
    size_t w_len = w_end ? (size_t)(w_end - want) : strlen(want);
    size_t g_len = g_end ? (size_t)(g_end - got) : strlen(got);
    if (w_len > g_len || strncmp(got, want, w_len) != 0) {
      return 0;
    }
    if (w_end == NULL || g_end == NULL) {
      return w_end == NULL && g_end == NULL;
    }
    got = g_end + 1;
    want = w_end + 1;
  }
}

/* ---- scenarios ------------------------------------------------------- */

struct scenario {
  const char *name;
  const char *script;
  const char *replies; /* "|"-separated reply prefixes */
  const char *events;  /* NULL: not checked */
  const char *detail;  /* substring of what the host saw; NULL: none */
  unsigned ext_off;
  unsigned ext_on;
  unsigned cfg; /* CFG_* */
  int whole;    /* the outcome depends on how the octets arrive (improper
                   pipelining): not also fed byte by byte */
  void (*tweak)(struct smtp_server_limits *l);
};

static void small_header(struct smtp_server_limits *l) {
  l->max_header_size = 100;
}

static void small_message(struct smtp_server_limits *l) {
  l->max_message_size = 100;
}

static void three_errors(struct smtp_server_limits *l) {
  l->max_errors = 3;
}

/* Designated fields, so ext_off, ext_on, cfg, whole and tweak may be left
 * out. */
#define SC(n, sc, rep, ev, det, ...)                                           \
  {                                                                            \
    .name = n, .script = sc, .replies = rep, .events = ev, .detail = det,      \
    __VA_ARGS__                                                                \
  }

static const struct scenario scenarios[] = {
    /* whole sessions */
    SC("ehlo session",
       TXN "Subject: hi" CRLF CRLF "Hello" CRLF "." CRLF WAIT "QUIT" CRLF,
       R_TXN "|250 2.0.0 Ok: queued as Q1|221 2.0.0", EV_TXN " MESSAGE CLOSE",
       "MESSAGE from=<a@sender.example> rcpts=1 BODY[Subject: hi\r\n\r\nHello"
       "\r\n]"),
    SC("helo session",
       HELO "MAIL FROM:<a@b.example>" CRLF WAIT
            "RCPT TO:<c@d.example>" CRLF WAIT "DATA" CRLF WAIT "x" CRLF
            "." CRLF WAIT "QUIT" CRLF,
       "220|250 mx.example|250 2.1.0|250 2.1.5|354|250 2.0.0|221",
       "HELO MAIL RCPT MESSAGE CLOSE", "BODY[x\r\n]"),
    SC("greeting only then quit", "QUIT" CRLF,
       "220 mx.example ESMTP postseal|221", "CLOSE", NULL),
    SC("two messages one session",
       TXN "a" CRLF "." CRLF WAIT MAIL RCPT "DATA" CRLF WAIT "b" CRLF "." CRLF,
       R_TXN "|250 2.0.0|250 2.1.0|250 2.1.5|354|250 2.0.0",
       EV_TXN " MESSAGE MAIL RCPT MESSAGE", "BODY[b\r\n]"),
    SC("lower case verbs and keywords",
       "ehlo c.example" CRLF WAIT
       "mail from:<a@b.example> size=10 body=8bitmime" CRLF
       "rcpt to:<c@d.example> notify=never" CRLF "data" CRLF WAIT "x" CRLF
       "." CRLF WAIT "quit" CRLF,
       R_TXN "|250 2.0.0|221", EV_TXN " MESSAGE CLOSE", NULL),
    SC("two recipients one rejected",
       EHLO MAIL "RCPT TO:<reject@x.example>" CRLF RCPT "DATA" CRLF WAIT
                 "x" CRLF "." CRLF,
       "220|250|250 2.1.0|550 5.7.1|250 2.1.5|354|250 2.0.0",
       "HELO MAIL RCPT RCPT MESSAGE", "rcpts=1"),
    SC("message rejected by host", TXN "REJECTME" CRLF "." CRLF WAIT MAIL,
       R_TXN "|554 5.7.1|250 2.1.0", EV_TXN " MESSAGE MAIL", NULL),
    SC("sender rejected ends transaction",
       EHLO "MAIL FROM:<reject@x.example>" CRLF WAIT RCPT,
       "220|250|550 5.7.1|503 5.5.1", "HELO MAIL", NULL),

    /* sequence */
    SC("mail before helo", "MAIL FROM:<a@b.example>" CRLF, "220|503 5.5.1", "",
       NULL),
    SC("rcpt before mail", EHLO RCPT, "220|250|503 5.5.1", "HELO", NULL),
    SC("data before mail", EHLO "DATA" CRLF, "220|250|503 5.5.1", "HELO", NULL),
    SC("data before rcpt", EHLO MAIL WAIT "DATA" CRLF,
       "220|250|250 2.1.0|503 5.5.1", "HELO MAIL", NULL),
    SC("data with all recipients rejected",
       EHLO MAIL "RCPT TO:<reject@x.example>" CRLF "DATA" CRLF,
       "220|250|250 2.1.0|550 5.7.1|554 5.5.1", "HELO MAIL RCPT", NULL),
    SC("nested mail", EHLO MAIL WAIT MAIL, "220|250|250 2.1.0|503 5.5.1",
       "HELO MAIL", NULL),
    SC("rset aborts transaction", EHLO MAIL RCPT "RSET" CRLF RCPT,
       "220|250|250 2.1.0|250 2.1.5|250 2.0.0|503 5.5.1", "HELO MAIL RCPT RSET",
       NULL),
    SC("rset without transaction", EHLO "RSET" CRLF, "220|250|250 2.0.0",
       "HELO", NULL),
    SC("rset with argument", EHLO "RSET x" CRLF, "220|250|501 5.5.4", "HELO",
       NULL),
    SC("ehlo in transaction resets", EHLO MAIL WAIT EHLO,
       "220|250|250 2.1.0|250", "HELO MAIL RSET HELO", NULL),
    SC("helo then ehlo", HELO EHLO MAIL, "220|250|250|250 2.1.0",
       "HELO HELO MAIL", NULL),

    /* simple commands */
    SC("noop", "NOOP" CRLF "NOOP anything at all" CRLF,
       "220|250 2.0.0|250 2.0.0", "", NULL),
    SC("vrfy", "VRFY root" CRLF "VRFY" CRLF, "220|252 2.5.0|501 5.5.4", "",
       NULL),
    SC("help", "HELP" CRLF "HELP MAIL" CRLF, "220|214 2.0.0|214 2.0.0", "",
       NULL),
    SC("expn and friends",
       "EXPN staff" CRLF "STARTTLS" CRLF "AUTH LOGIN" CRLF "ETRN x" CRLF,
       "220|502 5.5.1|502 5.5.1|502 5.5.1|502 5.5.1", "", NULL),
    SC("unknown command", "FOO bar" CRLF "MAILX" CRLF CRLF,
       "220|500 5.5.1|500 5.5.1|500 5.5.1", "", NULL),
    SC("quit ends input", "QUIT" CRLF WAIT "NOOP" CRLF, "220|221 2.0.0",
       "CLOSE", NULL),
    SC("quit with argument", "QUIT now" CRLF, "220|501 5.5.4", "", NULL),
    SC("helo without name", "HELO" CRLF WAIT "EHLO" CRLF,
       "220|501 5.5.4|501 5.5.4", "", NULL),
    SC("ehlo with control octet", "EHLO a\x7f" CRLF, "220|501 5.5.4", "", NULL),
    SC("trailing white space", EHLO "MAIL FROM:<a@b.example> \t" CRLF,
       "220|250|250 2.1.0", "HELO MAIL", NULL),

    /* MAIL and RCPT syntax */
    SC("null sender", EHLO "MAIL FROM:<>" CRLF, "220|250|250 2.1.0",
       "HELO MAIL", "MAIL <>"),
    SC("null recipient", EHLO MAIL "RCPT TO:<>" CRLF,
       "220|250|250 2.1.0|501 5.1.3", "HELO MAIL", NULL),
    SC("space after colon", EHLO "MAIL FROM: <a@b.example>" CRLF,
       "220|250|250 2.1.0", "HELO MAIL", "MAIL <a@b.example>"),
    SC("no brackets",
       EHLO "MAIL FROM:a@b.example" CRLF MAIL "RCPT TO:c@d.example" CRLF,
       "220|250|501 5.1.7|250 2.1.0|501 5.1.3", "HELO MAIL", NULL),
    SC("mail without from", EHLO "MAIL <a@b.example>" CRLF "MAIL" CRLF,
       "220|250|501 5.5.4|501 5.5.4", "HELO", NULL),
    SC("rcpt without to", EHLO MAIL "RCPT <a@b.example>" CRLF,
       "220|250|250 2.1.0|501 5.5.4", "HELO MAIL", NULL),
    SC("garbage after path", EHLO "MAIL FROM:<a@b.example>x" CRLF,
       "220|250|501 5.1.7", "HELO", NULL),
    SC("bad sender domain", EHLO "MAIL FROM:<a@b..example>" CRLF,
       "220|250|501 5.1.7", "HELO", NULL),
    SC("bad recipient", EHLO MAIL "RCPT TO:<a b@c.example>" CRLF,
       "220|250|250 2.1.0|501 5.1.3", "HELO MAIL", NULL),
    SC("postmaster recipient", EHLO MAIL "RCPT TO:<Postmaster>" CRLF,
       "220|250|250 2.1.0|250 2.1.5", "HELO MAIL RCPT", "RCPT Postmaster"),
    SC("postmaster sender refused", EHLO "MAIL FROM:<Postmaster>" CRLF,
       "220|250|501 5.1.7", "HELO", NULL),
    SC("address literals",
       EHLO MAIL "RCPT TO:<u@[192.0.2.1]>" CRLF
                 "RCPT TO:<u@[IPv6:2001:db8::1]>" CRLF
                 "RCPT TO:<u@[300.1.1.1]>" CRLF,
       "220|250|250 2.1.0|250 2.1.5|250 2.1.5|501 5.1.3", NULL,
       "RCPT u@[IPv6:2001:db8::1]"),
    SC("local part 64", EHLO MAIL "RCPT TO:<" L64 "@x.example>" CRLF,
       "220|250|250 2.1.0|250 2.1.5", NULL, NULL),
    SC("local part 65",
       EHLO "MAIL FROM:<" L64 "c@x.example>" CRLF MAIL "RCPT TO:<" L64
            "c@x.example>" CRLF,
       "220|250|553 5.1.3|250 2.1.0|553 5.1.3", "HELO MAIL", NULL),
    SC("domain over 255",
       EHLO MAIL "RCPT TO:<a@" L63 "." L63 "." L63 "." L63 ".abcdef>" CRLF,
       "220|250|250 2.1.0|553 5.1.3", NULL, NULL),
    SC("path over 256",
       EHLO MAIL "RCPT TO:<" L64 "@" L63 "." L63 "." A60 "aa>" CRLF,
       "220|250|250 2.1.0|553 5.1.3", NULL, NULL),
    SC("shell metacharacters",
       EHLO "MAIL FROM:<a`id`@b.example>" CRLF MAIL
            "RCPT TO:<$HOME@b.example>" CRLF "RCPT TO:<\"a|b\"@b.example>" CRLF
            "RCPT TO:<\"x$y\"@b.example>" CRLF,
       "220|250|553 5.1.3|250 2.1.0|553 5.1.3|553 5.1.3|553 5.1.3", "HELO MAIL",
       NULL),
    SC("nul in command",
       EHLO "NOOP" NUL "x" CRLF "MAIL FROM:<a" NUL "@b.example>" CRLF MAIL,
       "220|250|501 5.5.2|501 5.5.2|250 2.1.0", "HELO MAIL", NULL),
    SC("bare lf command", "NOOP\nNOOP" CRLF, "220|500 5.5.2|250", "", NULL),
    SC("bare cr command", "NO\rOP" CRLF "NOOP" CRLF, "220|500 5.5.2|250", "",
       NULL),

    /* relay probes parse as written; the host decides */
    SC("percent hack", EHLO MAIL "RCPT TO:<u%ext.example@ours.example>" CRLF,
       "220|250|250 2.1.0|250 2.1.5", NULL, "RCPT u%ext.example@ours.example"),
    SC("quoted at", EHLO MAIL "RCPT TO:<\"u@ext.example\"@ours.example>" CRLF,
       "220|250|250 2.1.0|250 2.1.5", NULL,
       "RCPT \"u@ext.example\"@ours.example"),
    SC("source route", EHLO MAIL "RCPT TO:<@ours.example:u@ext.example>" CRLF,
       "220|250|250 2.1.0|250 2.1.5", NULL, "RCPT u@ext.example sr"),
    SC("source route list",
       EHLO MAIL "RCPT TO:<@a.example,@b.example:u@c.example>" CRLF,
       "220|250|250 2.1.0|250 2.1.5", NULL, "RCPT u@c.example sr"),
    SC("source route sender", EHLO "MAIL FROM:<@a.example:u@c.example>" CRLF,
       "220|250|250 2.1.0", NULL, "MAIL <u@c.example>"),

    /* MAIL parameters */
    SC("size ok", EHLO "MAIL FROM:<a@b.example> SIZE=1000" CRLF,
       "220|250|250 2.1.0", "HELO MAIL", NULL),
    SC("size at limit", EHLO "MAIL FROM:<a@b.example> SIZE=10485760" CRLF,
       "220|250|250 2.1.0", "HELO MAIL", NULL),
    SC("size over limit",
       EHLO "MAIL FROM:<a@b.example> SIZE=10485761" CRLF
            "MAIL FROM:<a@b.example> SIZE=99999999999999999999" CRLF,
       "220|250|552 5.3.4|552 5.3.4", "HELO", NULL),
    SC("size bad",
       EHLO "MAIL FROM:<a@b.example> SIZE=12k" CRLF
            "MAIL FROM:<a@b.example> SIZE=" CRLF
            "MAIL FROM:<a@b.example> SIZE" CRLF,
       "220|250|501 5.5.4|501 5.5.4|501 5.5.4", "HELO", NULL),
    SC("size not offered", EHLO "MAIL FROM:<a@b.example> SIZE=10" CRLF,
       "220|250|555 5.5.4", "HELO", NULL, .ext_off = SMTP_EXT_SIZE),
    SC("params after helo", HELO "MAIL FROM:<a@b.example> SIZE=10" CRLF,
       "220|250|555 5.5.4", "HELO", NULL),
    SC("body values",
       EHLO "MAIL FROM:<a@b.example> BODY=7BIT" CRLF "RSET" CRLF
            "MAIL FROM:<a@b.example> BODY=8BITMIME" CRLF "RSET" CRLF
            "MAIL FROM:<a@b.example> BODY=BINARYMIME" CRLF
            "MAIL FROM:<a@b.example> BODY=9BIT" CRLF,
       "220|250|250 2.1.0|250|250 2.1.0|250|555 5.5.4|501 5.5.4", NULL, NULL),
    SC("body not offered", EHLO "MAIL FROM:<a@b.example> BODY=8BITMIME" CRLF,
       "220|250|555 5.5.4", "HELO", NULL, .ext_off = SMTP_EXT_8BITMIME),
    SC("auth ignored", EHLO "MAIL FROM:<a@b.example> AUTH=<>" CRLF,
       "220|250|250 2.1.0", "HELO MAIL", NULL),
    SC("unknown parameter", EHLO "MAIL FROM:<a@b.example> FOO=bar" CRLF,
       "220|250|555 5.5.4", "HELO", NULL),
    SC("duplicate parameter", EHLO "MAIL FROM:<a@b.example> SIZE=1 size=2" CRLF,
       "220|250|501 5.5.4", "HELO", NULL),
    SC("several spaces between parameters",
       EHLO "MAIL FROM:<a@b.example>  SIZE=1   BODY=7BIT" CRLF,
       "220|250|250 2.1.0", "HELO MAIL", NULL),

    /* SMTPUTF8 (RFC 6531) */
    SC("utf8 with smtputf8",
       EHLO "MAIL FROM:<j\xc3\xb6rg@b\xc3\xbc"
            "cher.example> SMTPUTF8" CRLF "RCPT TO:<\xc3\xa9@x.example>" CRLF,
       "220|250|250 2.1.0|250 2.1.5", "HELO MAIL RCPT",
       "RCPT \xc3\xa9@x.example"),
    SC("utf8 sender without smtputf8",
       EHLO "MAIL FROM:<j\xc3\xb6rg@x.example>" CRLF, "220|250|553 5.6.7",
       "HELO", NULL),
    SC("utf8 recipient without smtputf8",
       EHLO MAIL "RCPT TO:<\xc3\xa9@x.example>" CRLF,
       "220|250|250 2.1.0|553 5.6.7", "HELO MAIL", NULL),
    SC("smtputf8 with value", EHLO "MAIL FROM:<a@b.example> SMTPUTF8=1" CRLF,
       "220|250|501 5.5.4", "HELO", NULL),
    SC("smtputf8 not offered", EHLO "MAIL FROM:<a@b.example> SMTPUTF8" CRLF,
       "220|250|555 5.5.4", "HELO", NULL, .ext_off = SMTP_EXT_SMTPUTF8),
    SC("malformed utf8", EHLO "MAIL FROM:<\xc3(@x.example> SMTPUTF8" CRLF,
       "220|250|501 5.1.7", "HELO", NULL),

    /* DSN (RFC 3461) */
    SC("dsn mail params",
       EHLO "MAIL FROM:<a@b.example> RET=HDRS ENVID=abc+2Bdef" CRLF
            "RCPT TO:<c@d.example> NOTIFY=SUCCESS,FAILURE,DELAY "
            "ORCPT=rfc822;c+40d.example" CRLF,
       "220|250|250 2.1.0|250 2.1.5", "HELO MAIL RCPT", NULL),
    SC("dsn bad ret", EHLO "MAIL FROM:<a@b.example> RET=ALL" CRLF,
       "220|250|501 5.5.4", "HELO", NULL),
    SC("dsn envid too long",
       EHLO "MAIL FROM:<a@b.example> ENVID=" X100 "x" CRLF
            "MAIL FROM:<a@b.example> ENVID=" X100 CRLF,
       "220|250|501 5.5.4|250 2.1.0", "HELO MAIL", NULL),
    SC("dsn envid bad xtext",
       EHLO "MAIL FROM:<a@b.example> ENVID=a+zz" CRLF
            "MAIL FROM:<a@b.example> ENVID=a+0A" CRLF,
       "220|250|501 5.5.4|501 5.5.4", "HELO", NULL),
    SC("dsn notify",
       EHLO MAIL "RCPT TO:<a@x.example> NOTIFY=NEVER" CRLF
                 "RCPT TO:<b@x.example> NOTIFY=NEVER,SUCCESS" CRLF
                 "RCPT TO:<c@x.example> NOTIFY=SOMETIMES" CRLF
                 "RCPT TO:<d@x.example> NOTIFY=SUCCESS," CRLF
                 "RCPT TO:<e@x.example> NOTIFY=delay" CRLF,
       "220|250|250 2.1.0|250 2.1.5|501 5.5.4|501 5.5.4|501 5.5.4|250 2.1.5",
       NULL, NULL),
    SC("dsn orcpt",
       EHLO MAIL "RCPT TO:<a@x.example> ORCPT=rfc822;a+40x.example" CRLF
                 "RCPT TO:<b@x.example> ORCPT=rfc822" CRLF
                 "RCPT TO:<c@x.example> ORCPT=;c" CRLF
                 "RCPT TO:<d@x.example> ORCPT=rfc822;" CRLF
                 "RCPT TO:<e@x.example> ORCPT=rfc822;a+4" CRLF,
       "220|250|250 2.1.0|250 2.1.5|501 5.5.4|501 5.5.4|501 5.5.4|501 5.5.4",
       NULL, NULL),
    SC("dsn not offered",
       EHLO "MAIL FROM:<a@b.example> RET=FULL" CRLF MAIL
            "RCPT TO:<a@x.example> NOTIFY=NEVER" CRLF,
       "220|250|555 5.5.4|250 2.1.0|555 5.5.4", "HELO MAIL", NULL,
       .ext_off = SMTP_EXT_DSN),
    SC("rcpt param on mail", EHLO "MAIL FROM:<a@b.example> NOTIFY=NEVER" CRLF,
       "220|250|555 5.5.4", "HELO", NULL),

    /* DATA content */
    SC("dot unstuffing",
       TXN "..leading" CRLF "mid.dle" CRLF "."
           "." CRLF "x" CRLF "." CRLF,
       R_TXN "|250 2.0.0", EV_TXN " MESSAGE",
       "BODY[.leading\r\nmid.dle\r\n.\r\nx\r\n]"),
    SC("empty message", TXN "." CRLF, R_TXN "|250 2.0.0", EV_TXN " MESSAGE",
       "BODY[]"),
    SC("dot line with text is not the end", TXN ". " CRLF ".x" CRLF "." CRLF,
       R_TXN "|250 2.0.0", EV_TXN " MESSAGE", "BODY[ \r\nx\r\n]"),
    SC("text line 1000", TXN X998 CRLF "." CRLF, R_TXN "|250 2.0.0",
       EV_TXN " MESSAGE", NULL),
    SC("text line 1001",
       TXN "a" CRLF X998 "x" CRLF "b" CRLF "." CRLF WAIT "QUIT" CRLF,
       R_TXN "|500 5.5.2|221", EV_TXN " CLOSE", NULL),
    SC("text line far too long",
       TXN X998 X998 X998 X998 CRLF "." CRLF WAIT MAIL,
       R_TXN "|500 5.5.2|250 2.1.0", EV_TXN " MAIL", NULL),
    SC("header too large",
       TXN "Subject: " X100 CRLF CRLF "body" CRLF "." CRLF WAIT "QUIT" CRLF,
       R_TXN "|552 5.3.4|221", EV_TXN " CLOSE", NULL, .tweak = small_header),
    SC("header under limit", TXN "Subject: x" CRLF CRLF X100 CRLF "." CRLF,
       R_TXN "|250 2.0.0", EV_TXN " MESSAGE", NULL, .tweak = small_header),
    SC("message too big", TXN X100 CRLF "." CRLF WAIT "QUIT" CRLF,
       R_TXN "|552 5.3.4|221", EV_TXN " CLOSE", NULL, .tweak = small_message),
    SC("data with argument", EHLO MAIL RCPT "DATA now" CRLF,
       "220|250|250 2.1.0|250 2.1.5|501 5.5.4", EV_TXN, NULL),
    SC("8bit body kept", TXN "caf\xc3\xa9" CRLF "." CRLF, R_TXN "|250 2.0.0",
       EV_TXN " MESSAGE", "BODY[caf\xc3\xa9\r\n]"),

    /* SMTP smuggling: only <CRLF>.<CRLF> ends DATA */
    SC("smuggle lf dot lf",
       TXN "x\n.\nMAIL FROM:<e@evil.example>\nRCPT TO:<v@t.example>\nDATA\n"
           "evil\n.\n" CRLF "." CRLF WAIT "QUIT" CRLF,
       R_TXN "|550 5.6.0|221", EV_TXN " CLOSE", NULL),
    SC("smuggle cr dot cr",
       TXN "x\r.\rMAIL FROM:<e@evil.example>\r" CRLF "." CRLF WAIT "QUIT" CRLF,
       R_TXN "|550 5.6.0|221", EV_TXN " CLOSE", NULL),
    SC("smuggle lf dot crlf",
       TXN "x\n.\r\nMAIL FROM:<e@evil.example>\r\n" CRLF "." CRLF WAIT
           "QUIT" CRLF,
       R_TXN "|550 5.6.0|221", EV_TXN " CLOSE", NULL),
    SC("smuggle crlf dot lf",
       TXN "x\r\n.\nMAIL FROM:<e@evil.example>\r\n.\r\n" WAIT "QUIT" CRLF,
       R_TXN "|550 5.6.0|221", EV_TXN " CLOSE", NULL),
    SC("smuggle cr dot crlf",
       TXN "x\r.\r\nMAIL FROM:<e@evil.example>\r\n.\r\n" WAIT "QUIT" CRLF,
       R_TXN "|550 5.6.0|221", EV_TXN " CLOSE", NULL),
    SC("smuggle crlf dot cr cr lf",
       TXN "x\r\n.\r\r\nMAIL FROM:<e@evil.example>\r\n.\r\n" WAIT "QUIT" CRLF,
       R_TXN "|550 5.6.0|221", EV_TXN " CLOSE", NULL),
    SC("smuggle first line lf dot",
       TXN ".\nMAIL FROM:<e@evil.example>\r\n.\r\n" WAIT "QUIT" CRLF,
       R_TXN "|550 5.6.0|221", EV_TXN " CLOSE", NULL),
    SC("bare lf in header",
       TXN "Subject: a\nBcc: b" CRLF CRLF "x" CRLF "." CRLF WAIT "QUIT" CRLF,
       R_TXN "|550 5.6.0|221", EV_TXN " CLOSE", NULL),

    /* pipelining (RFC 2920) */
    SC("pipelined group",
       EHLO MAIL RCPT "RCPT TO:<c@rcpt.example>" CRLF
                      "RCPT TO:<reject@x.example>" CRLF "DATA" CRLF WAIT
                      "x" CRLF "." CRLF "QUIT" CRLF,
       "220|250|250 2.1.0|250 2.1.5|250 2.1.5|550 5.7.1|354|250 2.0.0|221",
       "HELO MAIL RCPT RCPT RCPT MESSAGE CLOSE", "rcpts=2"),
    SC("commands after final dot",
       TXN "x" CRLF "." CRLF MAIL "RSET" CRLF "QUIT" CRLF,
       R_TXN "|250 2.0.0|250 2.1.0|250 2.0.0|221",
       EV_TXN " MESSAGE MAIL RSET CLOSE", NULL),
    SC("improper pipelining after ehlo", "EHLO c.example" CRLF MAIL,
       "220|554 5.5.0", "CLOSE", NULL, .whole = 1),
    SC("improper pipelining after helo", "HELO c.example" CRLF "NOOP" CRLF,
       "220|554 5.5.0", "CLOSE", NULL, .whole = 1),
    SC("improper pipelining after data",
       EHLO MAIL RCPT "DATA" CRLF "Subject: x" CRLF "." CRLF,
       "220|250|250 2.1.0|250 2.1.5|554 5.5.0", EV_TXN " CLOSE", NULL,
       .whole = 1),
    SC("improper pipelining after refused data",
       EHLO "DATA" CRLF "MAIL FROM:<e@evil.example>" CRLF, "220|250|554 5.5.0",
       "HELO CLOSE", NULL, .whole = 1),

    /* limits */
    SC("command line 512", "NOOP " X500 "xxxxx" CRLF, "220|250", "", NULL),
    SC("command line 513", "NOOP " X500 "xxxxxx" CRLF "NOOP" CRLF,
       "220|500 5.5.2|250", "", NULL),
    SC("command line far too long", "NOOP " X500 X500 X500 X500 CRLF EHLO MAIL,
       "220|500 5.5.2|250|250 2.1.0", "HELO MAIL", NULL),
    SC("too many errors", "FOO" CRLF "BAR" CRLF "BAZ" CRLF "NOOP" CRLF,
       "220|500|500|500|421 4.7.0", "CLOSE", NULL, .tweak = three_errors),

    /* BDAT (RFC 3030) */
    SC("bdat chunks",
       EHLO MAIL RCPT "BDAT 5" CRLF "HelloBDAT 9" CRLF ", world" CRLF
                      "BDAT 0 LAST" CRLF,
       "220|250|250 2.1.0|250 2.1.5|250 2.0.0 Ok: 5|250 2.0.0 Ok: 9|"
       "250 2.0.0 Ok: queued as Q1",
       EV_TXN " MESSAGE", "BODY[Hello, world\r\n]"),
    SC("bdat last",
       EHLO MAIL RCPT "BDAT 11 LAST" CRLF "x\r\n.\r\ny" NUL "z\r\n" WAIT
                      "QUIT" CRLF,
       "220|250|250 2.1.0|250 2.1.5|250 2.0.0 Ok: queued|221",
       EV_TXN " MESSAGE CLOSE", "BODY[x\r\n.\r\ny"),
    SC("bdat 0 last", EHLO MAIL RCPT "bdat 0 last" CRLF,
       "220|250|250 2.1.0|250 2.1.5|250 2.0.0 Ok: queued", EV_TXN " MESSAGE",
       "BODY[]"),
    SC("data after bdat",
       EHLO MAIL RCPT "BDAT 3" CRLF "abc"
                      "DATA" CRLF,
       "220|250|250 2.1.0|250 2.1.5|250 2.0.0|503 5.5.1", EV_TXN, NULL),
    SC("bdat without mail", EHLO "BDAT 4" CRLF "NOOPNOOP" CRLF,
       "220|250|503 5.5.1|250 2.0.0", "HELO", NULL),
    SC("bdat without recipients",
       EHLO MAIL "RCPT TO:<reject@x.example>" CRLF "BDAT 3 LAST" CRLF "abc",
       "220|250|250 2.1.0|550 5.7.1|554 5.5.1", "HELO MAIL RCPT", NULL),
    SC("bdat bad syntax",
       EHLO "BDAT" CRLF "BDAT x" CRLF "BDAT 5 FIRST" CRLF "BDAT -1" CRLF
            "BDAT 99999999999999999999999" CRLF,
       "220|250|501 5.5.4|501 5.5.4|501 5.5.4|501 5.5.4|501 5.5.4", "HELO",
       NULL),
    SC("bdat not offered", EHLO MAIL RCPT "BDAT 3 LAST" CRLF,
       "220|250|250 2.1.0|250 2.1.5|502 5.5.1", EV_TXN, NULL,
       .ext_off = SMTP_EXT_CHUNKING),
    SC("bdat too big",
       EHLO MAIL RCPT "BDAT 60" CRLF X50 X10 "BDAT 60 LAST" CRLF X50 X10 WAIT
                      "QUIT" CRLF,
       "220|250|250 2.1.0|250 2.1.5|250 2.0.0|552 5.3.4|221", EV_TXN " CLOSE",
       NULL, .tweak = small_message),
    SC("bdat too big then more chunks",
       EHLO MAIL RCPT "BDAT 200" CRLF X100 X100 "BDAT 3 LAST" CRLF "abc" WAIT
                      "NOOP" CRLF,
       "220|250|250 2.1.0|250 2.1.5|552 5.3.4|503 5.5.1|250", EV_TXN, NULL,
       .tweak = small_message),
    SC("rset during bdat",
       EHLO MAIL RCPT "BDAT 3" CRLF "abc"
                      "RSET" CRLF,
       "220|250|250 2.1.0|250 2.1.5|250 2.0.0|250 2.0.0", EV_TXN " RSET", NULL),
    SC("bdat after last",
       EHLO MAIL RCPT "BDAT 3 LAST" CRLF "a" CRLF "BDAT 1" CRLF "b",
       "220|250|250 2.1.0|250 2.1.5|250 2.0.0 Ok: queued|503 5.5.1",
       EV_TXN " MESSAGE", "BODY[a\r\n]"),

    /* BDAT content: the text rules of DATA across chunk boundaries, no
     * dot-stuffing (RFC 3030 §2 without BINARYMIME) */
    SC("bdat bare lf",
       EHLO MAIL RCPT "BDAT 5 LAST" CRLF "a\nb" CRLF WAIT "QUIT" CRLF,
       R_BDAT "|550 5.6.0|221", EV_TXN " CLOSE", NULL),
    SC("bdat bare cr",
       EHLO MAIL RCPT "BDAT 5 LAST" CRLF "a\rb" CRLF WAIT "QUIT" CRLF,
       R_BDAT "|550 5.6.0|221", EV_TXN " CLOSE", NULL),
    SC("bdat lf starting a chunk",
       EHLO MAIL RCPT "BDAT 3" CRLF "a" CRLF "BDAT 2" CRLF "\nb"
                      "BDAT 3 LAST" CRLF "c" CRLF WAIT "QUIT" CRLF,
       R_BDAT "|250 2.0.0 Ok: 3|550 5.6.0|503 5.5.1|221", EV_TXN " CLOSE",
       NULL),
    SC("bdat cr ending a chunk then text",
       EHLO MAIL RCPT "BDAT 2" CRLF "a\r"
                      "BDAT 3 LAST" CRLF "b" CRLF WAIT "QUIT" CRLF,
       R_BDAT "|250 2.0.0 Ok: 2|550 5.6.0|221", EV_TXN " CLOSE", NULL),
    SC("bdat cr ending the message",
       EHLO MAIL RCPT "BDAT 2 LAST" CRLF "a\r" WAIT "QUIT" CRLF,
       R_BDAT "|550 5.6.0|221", EV_TXN " CLOSE", NULL),
    SC("bdat crlf split across chunks",
       EHLO MAIL RCPT "BDAT 11" CRLF "Subject: x\r"
                      "BDAT 2" CRLF "\n\r"
                      "BDAT 7 LAST" CRLF "\nbody" CRLF,
       R_BDAT "|250 2.0.0 Ok: 11|250 2.0.0 Ok: 2|250 2.0.0 Ok: queued",
       EV_TXN " MESSAGE", "BODY[Subject: x\r\n\r\nbody\r\n]"),
    SC("bdat smuggling",
       EHLO MAIL RCPT "BDAT 36 LAST" CRLF "x\n.\nMAIL FROM:<e@evil.example>\n"
                      "DATA\n" WAIT "QUIT" CRLF,
       R_BDAT "|550 5.6.0|221", EV_TXN " CLOSE", NULL),
    SC("bdat dot lines kept",
       EHLO MAIL RCPT "BDAT 10 LAST" CRLF "." CRLF ".." CRLF "." CRLF,
       R_BDAT "|250 2.0.0 Ok: queued", EV_TXN " MESSAGE",
       "BODY[.\r\n..\r\n.\r\n]"),
    SC("bdat line 1000 split across chunks",
       EHLO MAIL RCPT "BDAT 998" CRLF X998 "BDAT 2 LAST" CRLF CRLF,
       R_BDAT "|250 2.0.0 Ok: 998|250 2.0.0 Ok: queued", EV_TXN " MESSAGE",
       NULL),
    SC("bdat line 1001 split across chunks",
       EHLO MAIL RCPT "BDAT 998" CRLF X998 "BDAT 3 LAST" CRLF "x" CRLF WAIT
                      "QUIT" CRLF,
       R_BDAT "|250 2.0.0 Ok: 998|500 5.5.2|221", EV_TXN " CLOSE", NULL),
    SC("bdat long line refused at its chunk",
       EHLO MAIL RCPT "BDAT 1000" CRLF X998 "xx"
                      "BDAT 2 LAST" CRLF CRLF WAIT "QUIT" CRLF,
       R_BDAT "|500 5.5.2|503 5.5.1|221", EV_TXN " CLOSE", NULL),
    SC("bdat header over limit across chunks",
       EHLO MAIL RCPT "BDAT 59" CRLF "Subject: " X50
                      "BDAT 60 LAST" CRLF X50 CRLF CRLF "body" CRLF WAIT
                      "QUIT" CRLF,
       R_BDAT "|250 2.0.0 Ok: 59|552 5.3.4|221", EV_TXN " CLOSE", NULL,
       .tweak = small_header),
    SC("bdat header under limit across chunks",
       EHLO MAIL RCPT "BDAT 12" CRLF "Subject: x" CRLF
                      "BDAT 104 LAST" CRLF CRLF X100 CRLF,
       R_BDAT "|250 2.0.0 Ok: 12|250 2.0.0 Ok: queued", EV_TXN " MESSAGE", NULL,
       .tweak = small_header),
    SC("bdat last line without crlf",
       EHLO MAIL RCPT "BDAT 3" CRLF "a" CRLF "BDAT 5 LAST" CRLF "Hello",
       R_BDAT "|250 2.0.0 Ok: 3|250 2.0.0 Ok: queued", EV_TXN " MESSAGE",
       "BODY[a\r\nHello\r\n]"),
    SC("bdat last line of 998 without crlf",
       EHLO MAIL RCPT "BDAT 998 LAST" CRLF X998 WAIT "BDAT 999" CRLF X998 "x",
       R_BDAT "|250 2.0.0 Ok: queued|503 5.5.1", EV_TXN " MESSAGE", NULL),
    SC("bdat last line of 999 without crlf",
       EHLO MAIL RCPT "BDAT 999 LAST" CRLF X998 "x", R_BDAT "|500 5.5.2",
       EV_TXN, NULL),
    SC("bdat pipelined chunks", BDAT_SPLIT_SESSION,
       R_BDAT "|250 2.0.0 Ok: 11|250 2.0.0 Ok: 2|250 2.0.0 Ok: 15|"
              "250 2.0.0 Ok: queued|250 2.1.0|250 2.1.5|250 2.0.0 Ok: 3|"
              "550 5.6.0|503 5.5.1|221",
       EV_TXN " MESSAGE MAIL RCPT CLOSE", "BODY[" BDAT_SPLIT_BODY "]"),
    SC("bdat bad message then next transaction",
       EHLO MAIL RCPT "BDAT 4 LAST" CRLF "a\nb\n" WAIT MAIL RCPT
                      "BDAT 3 LAST" CRLF "c" CRLF,
       R_BDAT "|550 5.6.0|250 2.1.0|250 2.1.5|250 2.0.0 Ok: queued",
       EV_TXN " MAIL RCPT MESSAGE", "BODY[c\r\n]"),

    /* STARTTLS (RFC 3207) */
    SC("starttls then ehlo again", EHLO STARTTLS EHLO MAIL,
       "220|250|220 2.0.0 Ready to start TLS|250|250 2.1.0",
       "HELO STARTTLS HELO MAIL",
       "STARTTLS discarded=0 MAIL <a@sender.example> proto=ESMTPS",
       .ext_on = EXT_TLS_AUTH),
    SC("starttls discards pipelined commands",
       EHLO "STARTTLS" CRLF MAIL WAIT MAIL EHLO MAIL,
       "220|250|220 2.0.0|503 5.5.1|250|250 2.1.0", "HELO STARTTLS HELO MAIL",
       "STARTTLS discarded=30 MAIL <a@sender.example> proto=ESMTPS",
       .ext_on = EXT_TLS_AUTH),
    SC("starttls discards a pipelined auth",
       EHLO "STARTTLS" CRLF "AUTH PLAIN " PLAIN_ALICE CRLF WAIT EHLO MAIL,
       "220|250|220 2.0.0|250|250 2.1.0", "HELO STARTTLS HELO MAIL",
       "STARTTLS discarded=33 MAIL <a@sender.example> proto=ESMTPS",
       .ext_on = EXT_TLS_AUTH),
    SC("starttls before ehlo", "STARTTLS" CRLF WAIT EHLO, "220|220 2.0.0|250",
       "STARTTLS HELO", NULL, .ext_on = EXT_TLS_AUTH),
    SC("starttls with argument", EHLO "STARTTLS now" CRLF, "220|250|501 5.5.4",
       "HELO", NULL, .ext_on = EXT_TLS_AUTH),
    SC("starttls twice", EHLO STARTTLS EHLO "STARTTLS" CRLF,
       "220|250|220 2.0.0|250|503 5.5.1", "HELO STARTTLS HELO", NULL,
       .ext_on = EXT_TLS_AUTH),
    SC("starttls in transaction", EHLO MAIL WAIT "STARTTLS" CRLF,
       "220|250|250 2.1.0|503 5.5.1", "HELO MAIL", NULL,
       .ext_on = EXT_TLS_AUTH),
    SC("starttls with implicit tls", EHLO "STARTTLS" CRLF, "220|250|503 5.5.1",
       "HELO", NULL, .ext_on = EXT_TLS_AUTH, .cfg = CFG_TLS_ACTIVE),
    SC("starttls not offered", EHLO "STARTTLS" CRLF, "220|250|502 5.5.1",
       "HELO", NULL, .ext_on = SMTP_EXT_AUTH),
    SC("tls required",
       EHLO MAIL "RSET" CRLF "VRFY u" CRLF "HELO c.example" CRLF WAIT
                 "NOOP" CRLF WAIT STARTTLS EHLO MAIL,
       "220|250|530 5.7.0 Must issue a STARTTLS command first|530 5.7.0|"
       "530 5.7.0|530 5.7.0|250 2.0.0|220 2.0.0|250|250 2.1.0",
       "HELO STARTTLS HELO MAIL", "proto=ESMTPS", .ext_on = EXT_TLS_AUTH,
       .cfg = CFG_TLS_REQUIRED),
    SC("tls required: auth before starttls",
       EHLO "AUTH PLAIN " PLAIN_ALICE CRLF, "220|250|530 5.7.0", "HELO", NULL,
       .ext_on = EXT_TLS_AUTH, .cfg = CFG_TLS_REQUIRED),
    SC("tls required: bdat chunk is still read",
       EHLO "BDAT 6" CRLF "QUIT" CRLF WAIT "NOOP" CRLF, "220|250|503 5.5.1|250",
       "HELO", NULL, .ext_on = EXT_TLS_AUTH, .cfg = CFG_TLS_REQUIRED),

    /* AUTH (RFC 4954): PLAIN and LOGIN, inside TLS only */
    SC("auth before tls", EHLO "AUTH PLAIN " PLAIN_ALICE CRLF,
       "220|250|538 5.7.11 Encryption required for requested authentication "
       "mechanism",
       "HELO", NULL, .ext_on = EXT_TLS_AUTH),
    SC("auth not offered", EHLO "AUTH PLAIN " PLAIN_ALICE CRLF,
       "220|250|502 5.5.1", "HELO", NULL, .ext_on = SMTP_EXT_STARTTLS,
       .cfg = CFG_TLS_ACTIVE),
    SC("auth after starttls", EHLO STARTTLS EHLO AUTH_OK MAIL,
       "220|250|220 2.0.0|250|235 2.7.0|250 2.1.0",
       "HELO STARTTLS HELO AUTH MAIL",
       "AUTH alice MAIL <a@sender.example> "
       "proto=ESMTPSA",
       .ext_on = EXT_TLS_AUTH),
    SC("auth plain initial response", EHLO AUTH_OK MAIL,
       R_AUTH_OK " Authentication successful|250 2.1.0", "HELO AUTH MAIL",
       "AUTH alice MAIL <a@sender.example> proto=ESMTPSA",
       .ext_on = EXT_TLS_AUTH, .cfg = CFG_TLS_ACTIVE),
    SC("auth plain empty initial response", EHLO "AUTH PLAIN =" CRLF,
       "220|250|501 5.5.2 Cannot decode response", "HELO", NULL,
       .ext_on = EXT_TLS_AUTH, .cfg = CFG_TLS_ACTIVE),
    SC("auth plain continuation",
       EHLO "AUTH PLAIN" CRLF WAIT PLAIN_ALICE CRLF WAIT MAIL,
       "220|250|334 |235 2.7.0|250 2.1.0", "HELO AUTH MAIL", "AUTH alice",
       .ext_on = EXT_TLS_AUTH, .cfg = CFG_TLS_ACTIVE),
    SC("auth plain empty continuation", EHLO "AUTH PLAIN" CRLF WAIT CRLF,
       "220|250|334 |501 5.5.2", "HELO", NULL, .ext_on = EXT_TLS_AUTH,
       .cfg = CFG_TLS_ACTIVE),
    SC("auth plain authzid of the user", EHLO "AUTH PLAIN " PLAIN_ZID_SAME CRLF,
       R_AUTH_OK, "HELO AUTH", "AUTH alice", .ext_on = EXT_TLS_AUTH,
       .cfg = CFG_TLS_ACTIVE),
    SC("auth plain authzid of another", EHLO "AUTH PLAIN " PLAIN_ZID_OTHER CRLF,
       "220|250|535 5.7.8 Authentication credentials invalid", "HELO", NULL,
       .ext_on = EXT_TLS_AUTH, .cfg = CFG_TLS_ACTIVE),
    SC("auth plain layout",
       EHLO "AUTH PLAIN " PLAIN_ONE_NUL CRLF "AUTH PLAIN " PLAIN_THREE_NULS CRLF
            "AUTH PLAIN " PLAIN_NO_USER CRLF,
       "220|250|501 5.5.2|501 5.5.2|535 5.7.8", "HELO", NULL,
       .ext_on = EXT_TLS_AUTH, .cfg = CFG_TLS_ACTIVE),
    SC("auth login",
       EHLO
       "AUTH LOGIN" CRLF WAIT B64_ALICE CRLF WAIT B64_SECRET CRLF WAIT MAIL,
       "220|250|334 VXNlcm5hbWU6|334 UGFzc3dvcmQ6|235 2.7.0|250 2.1.0",
       "HELO AUTH MAIL", "AUTH alice MAIL <a@sender.example> proto=ESMTPSA",
       .ext_on = EXT_TLS_AUTH, .cfg = CFG_TLS_ACTIVE),
    SC("auth login initial response",
       EHLO "auth login " B64_ALICE CRLF WAIT B64_SECRET CRLF,
       "220|250|334 UGFzc3dvcmQ6|235 2.7.0", "HELO AUTH", "AUTH alice",
       .ext_on = EXT_TLS_AUTH, .cfg = CFG_TLS_ACTIVE),
    SC("auth login user with a control octet",
       EHLO "AUTH LOGIN " LOGIN_CTRL CRLF, "220|250|535 5.7.8", "HELO", NULL,
       .ext_on = EXT_TLS_AUTH, .cfg = CFG_TLS_ACTIVE),
    SC("auth login password with a nul",
       EHLO "AUTH LOGIN " B64_ALICE CRLF WAIT "AA==" CRLF,
       "220|250|334 UGFzc3dvcmQ6|535 5.7.8", "HELO", NULL,
       .ext_on = EXT_TLS_AUTH, .cfg = CFG_TLS_ACTIVE),
    SC("auth cancel",
       EHLO "AUTH LOGIN" CRLF WAIT "*" CRLF WAIT
            "AUTH LOGIN " B64_ALICE CRLF WAIT "*" CRLF WAIT AUTH_OK,
       "220|250|334 VXNlcm5hbWU6|501 5.0.0 Authentication canceled|"
       "334 UGFzc3dvcmQ6|501 5.0.0|235 2.7.0",
       "HELO AUTH", NULL, .ext_on = EXT_TLS_AUTH, .cfg = CFG_TLS_ACTIVE),
    SC("auth bad base64",
       EHLO "AUTH PLAIN AGFsaWNl!HNlY3JldA==" CRLF "AUTH LOGIN YR==" CRLF
            "AUTH PLAIN ====" CRLF "AUTH PLAIN" CRLF WAIT "abc" CRLF WAIT
            "AUTH PLAIN" CRLF WAIT PLAIN_ALICE "\n" WAIT "AUTH PLAIN" CRLF WAIT
            "AGFsaWNl AHNlY3JldA==" CRLF WAIT "AUTH PLAIN *" CRLF,
       "220|250|501 5.5.2|501 5.5.2|501 5.5.2|334 |501 5.5.2|334 |501 5.5.2|"
       "334 |501 5.5.2|501 5.5.2",
       "HELO", NULL, .ext_on = EXT_TLS_AUTH, .cfg = CFG_TLS_ACTIVE),
    SC("auth wrong password then right",
       EHLO "AUTH PLAIN " PLAIN_WRONG CRLF WAIT AUTH_OK,
       "220|250|535 5.7.8 Authentication credentials invalid|235 2.7.0",
       "HELO AUTH AUTH", "AUTH alice AUTH alice", .ext_on = EXT_TLS_AUTH,
       .cfg = CFG_TLS_ACTIVE),
    SC("auth failures count as errors",
       EHLO "AUTH PLAIN " PLAIN_WRONG CRLF WAIT
            "AUTH PLAIN " PLAIN_WRONG CRLF WAIT
            "AUTH PLAIN " PLAIN_WRONG CRLF WAIT AUTH_OK,
       "220|250|535 5.7.8|535 5.7.8|535 5.7.8|421 4.7.0",
       "HELO AUTH AUTH AUTH CLOSE", NULL, .ext_on = EXT_TLS_AUTH,
       .cfg = CFG_TLS_ACTIVE, .tweak = three_errors),
    SC("auth refused by the host",
       EHLO "AUTH PLAIN " PLAIN_BUSY CRLF WAIT AUTH_OK,
       "220|250|454 4.7.0 Too many failures|235 2.7.0", "HELO AUTH AUTH",
       "AUTH busy AUTH alice", .ext_on = EXT_TLS_AUTH, .cfg = CFG_TLS_ACTIVE),
    SC("auth then pipelined mail",
       EHLO "AUTH PLAIN " PLAIN_ALICE CRLF MAIL RCPT "DATA" CRLF WAIT "x" CRLF
            "." CRLF,
       R_AUTH_OK "|250 2.1.0|250 2.1.5|354|250 2.0.0",
       "HELO AUTH MAIL RCPT MESSAGE", "proto=ESMTPSA", .ext_on = EXT_TLS_AUTH,
       .cfg = CFG_TLS_ACTIVE),
    SC("auth required", EHLO MAIL WAIT AUTH_OK MAIL,
       "220|250|530 5.7.0 Authentication required|235 2.7.0|250 2.1.0",
       "HELO AUTH MAIL", "proto=ESMTPSA", .ext_on = EXT_TLS_AUTH,
       .cfg = CFG_TLS_ACTIVE | CFG_AUTH_REQUIRED),
    SC("auth twice", EHLO AUTH_OK AUTH_OK, R_AUTH_OK "|503 5.5.1", "HELO AUTH",
       NULL, .ext_on = EXT_TLS_AUTH, .cfg = CFG_TLS_ACTIVE),
    SC("auth in transaction", EHLO MAIL WAIT AUTH_OK,
       "220|250|250 2.1.0|503 5.5.1", "HELO MAIL", NULL, .ext_on = EXT_TLS_AUTH,
       .cfg = CFG_TLS_ACTIVE),
    SC("auth before ehlo", AUTH_OK HELO AUTH_OK, "220|503 5.5.1|250|503 5.5.1",
       "HELO", NULL, .ext_on = EXT_TLS_AUTH, .cfg = CFG_TLS_ACTIVE),
    SC("auth survives ehlo", EHLO AUTH_OK EHLO MAIL, R_AUTH_OK "|250|250 2.1.0",
       "HELO AUTH HELO MAIL", "proto=ESMTPSA", .ext_on = EXT_TLS_AUTH,
       .cfg = CFG_TLS_ACTIVE),
    SC("auth syntax",
       EHLO "AUTH CRAM-MD5" CRLF "AUTH" CRLF "AUTH PLAIN a b" CRLF
            "AUTH  PLAIN" CRLF,
       "220|250|504 5.5.4|501 5.5.4|501 5.5.4|501 5.5.4", "HELO", NULL,
       .ext_on = EXT_TLS_AUTH, .cfg = CFG_TLS_ACTIVE),
    SC("auth response at the line limit",
       EHLO "AUTH PLAIN" CRLF WAIT X12288 CRLF WAIT "NOOP" CRLF,
       "220|250|334 |535 5.7.8|250", "HELO", NULL, .ext_on = EXT_TLS_AUTH,
       .cfg = CFG_TLS_ACTIVE),
    SC("auth response over the line limit",
       EHLO "AUTH LOGIN" CRLF WAIT X12288 "x" CRLF WAIT "NOOP" CRLF,
       "220|250|334|500 5.5.6 Authentication exchange line is too long|250",
       "HELO", NULL, .ext_on = EXT_TLS_AUTH, .cfg = CFG_TLS_ACTIVE),
    SC("auth response far over the line limit",
       EHLO "AUTH LOGIN" CRLF WAIT X12288 X12288 "NOOP" CRLF WAIT "NOOP" CRLF,
       "220|250|334|500 5.5.6|250", "HELO", NULL, .ext_on = EXT_TLS_AUTH,
       .cfg = CFG_TLS_ACTIVE),
    SC("mail auth parameter",
       EHLO AUTH_OK "MAIL FROM:<a@b.example> AUTH=<>" CRLF "RSET" CRLF
                    "MAIL FROM:<a@b.example> AUTH=alice+40example.com" CRLF,
       R_AUTH_OK "|250 2.1.0|250|250 2.1.0", "HELO AUTH MAIL RSET MAIL",
       "MAIL <a@b.example> proto=ESMTPSA auth=<> MAIL <a@b.example> "
       "proto=ESMTPSA auth=<alice@example.com>",
       .ext_on = EXT_TLS_AUTH, .cfg = CFG_TLS_ACTIVE),
    /* RFC 8689: REQUIRETLS only inside TLS, as a bare keyword. */
    SC("requiretls in tls", EHLO "MAIL FROM:<a@b.example> REQUIRETLS" CRLF,
       "220|250 REQUIRETLS|250 2.1.0", "HELO MAIL",
       "MAIL <a@b.example> proto=ESMTPS requiretls",
       .ext_on = SMTP_EXT_REQUIRETLS, .cfg = CFG_TLS_ACTIVE),
    SC("requiretls outside tls", EHLO "MAIL FROM:<a@b.example> REQUIRETLS" CRLF,
       "220|250 DSN|530 5.7.10", "HELO", NULL, .ext_on = SMTP_EXT_REQUIRETLS),
    SC("requiretls with a value",
       EHLO "MAIL FROM:<a@b.example> REQUIRETLS=yes" CRLF,
       "220|250 REQUIRETLS|501 5.5.4", "HELO", NULL,
       .ext_on = SMTP_EXT_REQUIRETLS, .cfg = CFG_TLS_ACTIVE),
    SC("requiretls not offered", EHLO "MAIL FROM:<a@b.example> REQUIRETLS" CRLF,
       "220|250 DSN|555 5.5.4", "HELO", NULL, .cfg = CFG_TLS_ACTIVE),
    SC("mail auth parameter unauthenticated",
       EHLO "MAIL FROM:<a@b.example> AUTH=alice+40example.com" CRLF "RSET" CRLF
            "MAIL FROM:<a@b.example> AUTH=a+zz" CRLF
            "MAIL FROM:<a@b.example> AUTH" CRLF,
       "220|250|250 2.1.0|250|501 5.5.4|501 5.5.4", "HELO MAIL RSET",
       "MAIL <a@b.example> proto=ESMTPS auth=<>", .ext_on = EXT_TLS_AUTH,
       .cfg = CFG_TLS_ACTIVE),
    SC("mail auth parameter without the extension",
       EHLO "MAIL FROM:<a@b.example> AUTH=a+zz" CRLF, "220|250|250 2.1.0",
       "HELO MAIL", "MAIL <a@b.example> proto=ESMTP"),
    SC("submission session", SUBMISSION_SESSION,
       "220|250|220 2.0.0|250|334 VXNlcm5hbWU6|334 UGFzc3dvcmQ6|501 5.0.0|334 |"
       "535 5.7.8|334 UGFzc3dvcmQ6|235 2.7.0|250 2.1.0|250 2.1.5|354|"
       "250 2.0.0|221",
       "HELO STARTTLS HELO AUTH AUTH MAIL RCPT MESSAGE CLOSE",
       "STARTTLS discarded=63 AUTH alice AUTH alice MAIL <a@b.example> "
       "proto=ESMTPSA auth=<a+b>",
       .ext_on = EXT_TLS_AUTH, .cfg = CFG_TLS_REQUIRED | CFG_AUTH_REQUIRED),
    SC("command line 1012 with auth",
       "NOOP " X500 X500 "xxxxx" CRLF "NOOP " X500 X500 "xxxxxx" CRLF,
       "220|250|500 5.5.2", "", NULL, .ext_on = SMTP_EXT_AUTH),
};

/* Runs a scenario fed as its segments, then (unless `whole`) one octet at
 * a time: a client waiting at each WAIT gets the same answers however its
 * octets are cut. No reply ever carries the password or its base64. */
static void test_scenario(void **state) {
  const struct scenario *sc = *state;
  static const enum feed_mode modes[] = {FEED_SEGMENTS, FEED_BYTES};
  static const char *const mode_names[] = {"segments", "bytes"};
  for (size_t m = 0; m < (sc->whole ? 1 : 2); m++) {
    struct run run = {.ext_off = sc->ext_off,
                      .ext_on = sc->ext_on,
                      .cfg = sc->cfg,
                      .tweak = sc->tweak,
                      .mode = modes[m]};
    struct result r;
    char got[8192];
    run_script(&run, sc->script, strlen(sc->script), &r);
    reply_lines(&r, got, sizeof(got));
    const char *mode = mode_names[m];
    if (!replies_match(got, sc->replies)) {
      fail_msg("%s (%s): replies\n got  %s\n want %s", sc->name, mode, got,
               sc->replies);
    }
    if (sc->events != NULL && strcmp(r.events, sc->events) != 0) {
      fail_msg("%s (%s): events got \"%s\" want \"%s\"", sc->name, mode,
               r.events, sc->events);
    }
    if (sc->detail != NULL && strstr(r.detail, sc->detail) == NULL) {
      fail_msg("%s (%s): host saw \"%s\", want it to contain \"%s\"", sc->name,
               mode, r.detail, sc->detail);
    }
    if (memmem(r.out.data, r.out.len, "secret", 6) != NULL ||
        memmem(r.out.data, r.out.len, B64_SECRET, 8) != NULL) {
      fail_msg("%s (%s): the password reached a reply", sc->name, mode);
    }
    result_free(&r);
  }
}

/* ---- sessions split at every point ----------------------------------- */

/* Compliant clients: each segment is what a client sends before waiting
 * (after STARTTLS, the rest of its segment is what it sent in clear before
 * the handshake). */
static const struct {
  const char *script;
  unsigned ext_on, cfg;
} split_sessions[] = {
    {.script = EHLO "MAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME" CRLF
                    "RCPT TO:<c@d.example> NOTIFY=SUCCESS,FAILURE" CRLF
                    "RCPT TO:<reject@d.example>" CRLF "DATA" CRLF WAIT
                    "Subject: split" CRLF CRLF "..stuffed" CRLF "x\r\n.x" CRLF
                    "" CRLF "." CRLF "RSET" CRLF "NOOP" CRLF "QUIT" CRLF},
    {.script = EHLO MAIL RCPT "BDAT 10" CRLF "0123456789"
                              "BDAT 6 LAST" CRLF "\r\n.\r\n"
                              "QUIT" CRLF},
    {.script =
         TXN "x\n.\r\nMAIL FROM:<e@evil.example>" CRLF "." CRLF "NOOP" CRLF},
    {.script = BDAT_SPLIT_SESSION},
    {.script = "NOOP " X500 X100 CRLF "NOOP" CRLF},
    {.script = SUBMISSION_SESSION,
     .ext_on = EXT_TLS_AUTH,
     .cfg = CFG_TLS_REQUIRED | CFG_AUTH_REQUIRED},
};

static void compare_results(const char *label, size_t at,
                            const struct result *want,
                            const struct result *got) {
  if (got->out.len != want->out.len ||
      memcmp(got->out.data, want->out.data, got->out.len) != 0) {
    fail_msg("%s at %zu: output\n got  %.*s\n want %.*s", label, at,
             (int)got->out.len, (const char *)got->out.data, (int)want->out.len,
             (const char *)want->out.data);
  }
  if (strcmp(got->events, want->events) != 0 ||
      strcmp(got->detail, want->detail) != 0) {
    fail_msg("%s at %zu: events/detail\n got  %s / %s\n want %s / %s", label,
             at, got->events, got->detail, want->events, want->detail);
  }
  if (got->body.len != want->body.len ||
      (got->body.len &&
       memcmp(got->body.data, want->body.data, got->body.len) != 0)) {
    fail_msg("%s at %zu: body differs", label, at);
  }
}

static void test_split_every_point(void **state) {
  for (size_t i = 0; i < sizeof(split_sessions) / sizeof(split_sessions[0]);
       i++) {
    const char *script = split_sessions[i].script;
    size_t len = strlen(script);
    struct run run = {.mode = FEED_SEGMENTS,
                      .ext_on = split_sessions[i].ext_on,
                      .cfg = split_sessions[i].cfg};
    struct result want, got;
    run_script(&run, script, len, &want);
    assert_true(want.out.len > 0);
    for (size_t k = 1; k < len; k++) {
      run.mode = FEED_SPLIT;
      run.split_at = k;
      run_script(&run, script, len, &got);
      compare_results("split", k, &want, &got);
      result_free(&got);
    }
    run.mode = FEED_BYTES;
    run_script(&run, script, len, &got);
    compare_results("byte at a time", i, &want, &got);
    result_free(&got);
    result_free(&want);
  }
}

/* ---- dynamic inputs -------------------------------------------------- */

static void run_buf(const struct run *run, const struct buf *script,
                    struct result *r, char *got, size_t got_cap) {
  run_script(run, (const char *)script->data, script->len, r);
  reply_lines(r, got, got_cap);
}

static void test_recipient_limit(void **state) {
  struct buf sc = {0};
  buf_append_str(&sc, EHLO MAIL);
  for (int i = 0; i < 101; i++) {
    buf_printf(&sc, "RCPT TO:<r%d@x.example>" CRLF, i);
  }
  buf_append_str(&sc, "DATA" CRLF WAIT "x" CRLF "." CRLF);
  struct run run = {0};
  struct result r;
  static char got[16384];
  run_buf(&run, &sc, &r, got, sizeof(got));
  size_t ok = 0;
  for (const char *p = got; (p = strstr(p, "250 2.1.5")) != NULL; p++) {
    ok++;
  }
  if (ok != 100 || strstr(got, "|452 4.5.3") == NULL ||
      strstr(r.detail, "rcpts=100") == NULL) {
    fail_msg("101 recipients: got %zu accepted, replies %s", ok,
             strstr(got, "|452") ? strstr(got, "|452") : got);
  }
  result_free(&r);
  buf_free(&sc);
}

static void test_huge_header(void **state) {
  struct buf sc = {0};
  buf_append_str(&sc, TXN);
  while (sc.len < (1u << 20) + 4096) {
    buf_append_str(&sc, "X-Filler: " X50 X10 CRLF);
  }
  buf_append_str(&sc, CRLF "body" CRLF "." CRLF WAIT "QUIT" CRLF);
  struct run run = {0};
  struct result r;
  char got[1024];
  run_buf(&run, &sc, &r, got, sizeof(got));
  if (!replies_match(got, R_TXN "|552 5.3.4|221") ||
      strcmp(r.events, EV_TXN " CLOSE") != 0) {
    fail_msg("huge header: got %s / %s", got, r.events);
  }
  result_free(&r);
  buf_free(&sc);
}

/* A 5 MiB message passes whole; memory is the body, not the input. */
static void test_big_message(void **state) {
  struct buf sc = {0};
  buf_append_str(&sc, TXN "Subject: big" CRLF CRLF);
  size_t body_start = sc.len - strlen("Subject: big" CRLF CRLF);
  while (sc.len < (5u << 20)) {
    buf_append_str(&sc, X500 X100 X100 X100 X100 X50 CRLF);
  }
  size_t body_len = sc.len - body_start;
  buf_append_str(&sc, "." CRLF WAIT "QUIT" CRLF);
  struct run run = {0};
  struct result r;
  char got[1024];
  run_buf(&run, &sc, &r, got, sizeof(got));
  if (!replies_match(got, R_TXN "|250 2.0.0|221") || r.body.len != body_len ||
      memcmp(r.body.data, sc.data + body_start, body_len) != 0) {
    fail_msg("big message: got %s, body %zu want %zu", got, r.body.len,
             body_len);
  }
  result_free(&r);
  buf_free(&sc);
}

/* A BDAT message cut into chunks of 1..13 octets (so CRLFs, long lines
 * and the header/body separator fall across chunk boundaries) is accepted,
 * and its body is the concatenation of the chunks. */
static void test_bdat_body_concatenation(void **state) {
  struct buf msg = {0}, sc = {0};
  buf_append_str(&msg, "Subject: chunks" CRLF "X-Long: " X500 X100 CRLF CRLF);
  for (int i = 0; i < 20; i++) {
    buf_printf(&msg, "line %d" CRLF "%s" CRLF CRLF ".%s" CRLF, i, X998,
               i % 2 ? "." : "");
  }
  buf_append_str(&sc, EHLO MAIL RCPT);
  for (size_t off = 0, k = 1; off < msg.len; off += k, k = k % 13 + 1) {
    size_t n = msg.len - off < k ? msg.len - off : k;
    int last = off + n == msg.len;
    buf_printf(&sc, "BDAT %zu%s" CRLF, n, last ? " LAST" : "");
    buf_append(&sc, msg.data + off, n);
  }
  buf_append_str(&sc, WAIT "QUIT" CRLF);
  struct run run = {0};
  struct result r;
  static char got[1 << 20];
  run_buf(&run, &sc, &r, got, sizeof(got));
  const char *tail = strrchr(got, '|');
  if (strstr(got, "|5") != NULL || strstr(got, "|4") != NULL ||
      strcmp(r.events, EV_TXN " MESSAGE CLOSE") != 0 || r.body.len != msg.len ||
      memcmp(r.body.data, msg.data, msg.len) != 0) {
    fail_msg("bdat concatenation: events %s, body %zu want %zu, last %s",
             r.events, r.body.len, msg.len, tail ? tail : got);
  }
  result_free(&r);
  buf_free(&sc);
  buf_free(&msg);
}

/* ---- host-facing API ------------------------------------------------- */

static struct smtp_server *api_session(struct smtp_server_stats *stats) {
  struct run run = {.stats = stats};
  return new_session(&run);
}

static void feed_str(struct smtp_server *s, const char *str) {
  assert_int_equal(smtp_server_feed(s, (const uint8_t *)str, strlen(str)), 0);
}

static void expect_event(struct smtp_server *s, enum smtp_server_event want,
                         const char *label) {
  enum smtp_server_event got = smtp_server_next(s);
  if (got != want) {
    fail_msg("%s: event got %d want %d", label, got, want);
  }
}

static void test_verdict_wait(void **state) {
  struct smtp_server *s = api_session(NULL);
  feed_str(s, "EHLO c.example" CRLF);
  expect_event(s, SMTP_SERVER_EV_HELO, "ehlo");
  assert_string_equal(smtp_server_helo(s), "c.example");
  feed_str(s, MAIL RCPT "NOOP" CRLF);
  expect_event(s, SMTP_SERVER_EV_MAIL, "mail");
  assert_string_equal(smtp_server_envelope(s)->sender, "a@sender.example");
  assert_int_equal(smtp_server_timeout_class(s), SMTP_TIMEOUT_NONE);
  expect_event(s, SMTP_SERVER_WAIT_VERDICT, "waiting 1");
  expect_event(s, SMTP_SERVER_WAIT_VERDICT, "waiting 2");
  assert_null(smtp_server_pending_rcpt(s));
  smtp_server_accept(s);
  expect_event(s, SMTP_SERVER_EV_RCPT, "rcpt");
  assert_string_equal(smtp_server_pending_rcpt(s)->addr, "b@rcpt.example");
  smtp_server_reject(s, 450, "4.2.0", "Try\r\nlater");
  expect_event(s, SMTP_SERVER_NEED_INPUT, "after noop");
  const uint8_t *out;
  size_t n;
  smtp_server_output(s, &out, &n);
  const char *tail = "250 2.1.0 Ok\r\n450 4.2.0 Try  later\r\n250 2.0.0 Ok\r\n";
  assert_true(n >= strlen(tail));
  assert_memory_equal(out + n - strlen(tail), tail, strlen(tail));
  assert_int_equal(smtp_server_envelope(s)->num_rcpts, 0);
  smtp_server_free(s);
}

static void test_envelope_fields(void **state) {
  struct smtp_server *s = api_session(NULL);
  feed_str(s, "EHLO c.example" CRLF);
  expect_event(s, SMTP_SERVER_EV_HELO, "ehlo");
  assert_string_equal(smtp_server_protocol(s), "ESMTP");
  feed_str(s, "MAIL FROM:<\xc3\xa9@b.example> SIZE=42 BODY=8BITMIME RET=FULL "
              "ENVID=id+2B1 SMTPUTF8" CRLF
              "RCPT TO:<@r.example:c@d.example> NOTIFY=FAILURE,DELAY "
              "ORCPT=rfc822;c+40d.example" CRLF "DATA" CRLF);
  expect_event(s, SMTP_SERVER_EV_MAIL, "mail");
  const struct smtp_envelope *e = smtp_server_envelope(s);
  assert_string_equal(e->sender, "\xc3\xa9@b.example");
  assert_int_equal(e->size_hint, 42);
  assert_int_equal(e->body, SMTP_BODY_8BITMIME);
  assert_int_equal(e->ret, SMTP_RET_FULL);
  assert_string_equal(e->envid, "id+1");
  assert_int_equal(e->smtputf8, 1);
  assert_string_equal(smtp_server_protocol(s), "UTF8SMTP");
  smtp_server_accept(s);
  expect_event(s, SMTP_SERVER_EV_RCPT, "rcpt");
  const struct smtp_rcpt *rc = smtp_server_pending_rcpt(s);
  assert_string_equal(rc->addr, "c@d.example");
  assert_int_equal(rc->source_route, 1);
  assert_int_equal(rc->notify, SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY);
  assert_string_equal(rc->orcpt, "rfc822;c@d.example");
  smtp_server_accept(s);
  expect_event(s, SMTP_SERVER_NEED_INPUT, "354");
  assert_int_equal(smtp_server_timeout_class(s), SMTP_TIMEOUT_DATA);
  assert_int_equal(e->num_rcpts, 1);
  assert_string_equal(e->rcpts[0].orcpt, "rfc822;c@d.example");
  feed_str(s, "hi" CRLF "." CRLF);
  expect_event(s, SMTP_SERVER_EV_MESSAGE, "message");
  struct buf body = {0};
  smtp_server_take_body(s, &body);
  assert_int_equal(body.len, 4);
  assert_memory_equal(body.data, "hi\r\n", 4);
  smtp_server_accept(s);
  assert_null(e->sender);
  assert_int_equal(e->num_rcpts, 0);
  assert_string_equal(smtp_server_protocol(s), "ESMTP");
  assert_int_equal(smtp_server_is_idle(s), 1);
  buf_free(&body);
  smtp_server_free(s);
}

/* The host's body prefix (its Received: field) tops the stored body, is
 * not counted toward SIZE (here 100 octets: the prefix alone is 150),
 * is replaced by a later call, and is gone with the transaction: RSET,
 * and after a message. BDAT takes it too. */
static void test_body_prefix(void **state) {
  struct run run = {.tweak = small_message};
  struct smtp_server *s = new_session(&run);
  char big[151];
  memset(big, 'R', 150);
  big[150] = '\0';
  feed_str(s, "EHLO c.example" CRLF);
  expect_event(s, SMTP_SERVER_EV_HELO, "ehlo");
  feed_str(s, "MAIL FROM:<a@b.example>" CRLF);
  expect_event(s, SMTP_SERVER_EV_MAIL, "mail");
  smtp_server_accept(s);
  assert_int_equal(smtp_server_set_body_prefix(s, (const uint8_t *)"old", 3),
                   0);
  feed_str(s, "RSET" CRLF "MAIL FROM:<a@b.example>" CRLF
              "RCPT TO:<c@d.example>" CRLF "DATA" CRLF);
  expect_event(s, SMTP_SERVER_EV_RSET, "rset");
  expect_event(s, SMTP_SERVER_EV_MAIL, "mail 2");
  smtp_server_accept(s);
  expect_event(s, SMTP_SERVER_EV_RCPT, "rcpt");
  smtp_server_accept(s);
  assert_int_equal(smtp_server_set_body_prefix(s, (const uint8_t *)"x", 1), 0);
  assert_int_equal(smtp_server_set_body_prefix(s, (const uint8_t *)big, 150),
                   0); /* replaces "x" */
  expect_event(s, SMTP_SERVER_NEED_INPUT, "354");
  feed_str(s, "hi" CRLF "." CRLF);
  expect_event(s, SMTP_SERVER_EV_MESSAGE, "message");
  assert_int_equal(smtp_server_body_prefix_len(s), 150);
  struct buf body = {0};
  smtp_server_take_body(s, &body);
  assert_int_equal(body.len, 154);
  assert_memory_equal(body.data, big, 150);
  assert_memory_equal(body.data + 150, "hi\r\n", 4);
  smtp_server_accept(s);
  assert_int_equal(smtp_server_body_prefix_len(s), 0);
  buf_free(&body);
  /* The next transaction starts without one; BDAT. */
  feed_str(s, "MAIL FROM:<a@b.example>" CRLF "RCPT TO:<c@d.example>" CRLF
              "BDAT 4 LAST" CRLF "hi" CRLF);
  expect_event(s, SMTP_SERVER_EV_MAIL, "mail 3");
  smtp_server_accept(s);
  expect_event(s, SMTP_SERVER_EV_RCPT, "rcpt 3");
  smtp_server_accept(s);
  expect_event(s, SMTP_SERVER_EV_MESSAGE, "message 3");
  assert_int_equal(smtp_server_body_prefix_len(s), 0);
  smtp_server_take_body(s, &body);
  assert_int_equal(body.len, 4);
  smtp_server_accept(s);
  buf_free(&body);
  feed_str(s, "MAIL FROM:<a@b.example>" CRLF "RCPT TO:<c@d.example>" CRLF);
  expect_event(s, SMTP_SERVER_EV_MAIL, "mail 4");
  smtp_server_accept(s);
  expect_event(s, SMTP_SERVER_EV_RCPT, "rcpt 4");
  smtp_server_accept(s);
  assert_int_equal(smtp_server_set_body_prefix(s, (const uint8_t *)"P:", 2), 0);
  feed_str(s, "BDAT 4 LAST" CRLF "hi" CRLF);
  expect_event(s, SMTP_SERVER_EV_MESSAGE, "message 4");
  assert_int_equal(smtp_server_body_prefix_len(s), 2);
  smtp_server_take_body(s, &body);
  assert_int_equal(body.len, 6);
  assert_memory_equal(body.data, "P:hi\r\n", 6);
  smtp_server_accept(s);
  buf_free(&body);
  smtp_server_free(s);
}

static void test_protocol_helo(void **state) {
  struct smtp_server *s = api_session(NULL);
  assert_null(smtp_server_helo(s));
  assert_string_equal(smtp_server_protocol(s), "SMTP");
  feed_str(s, "HELO c.example" CRLF);
  expect_event(s, SMTP_SERVER_EV_HELO, "helo");
  assert_string_equal(smtp_server_protocol(s), "SMTP");
  smtp_server_free(s);
}

static void test_ehlo_keywords(void **state) {
  struct smtp_server_config cfg = {.hostname = "mx.example",
                                   .extensions = SMTP_EXT_PIPELINING |
                                                 SMTP_EXT_SIZE | SMTP_EXT_DSN};
  smtp_server_limits_default(&cfg.limits);
  struct smtp_server *s = smtp_server_new(&cfg);
  feed_str(s, "EHLO c.example" CRLF);
  expect_event(s, SMTP_SERVER_EV_HELO, "ehlo");
  const uint8_t *out;
  size_t n;
  smtp_server_output(s, &out, &n);
  const char *want = "220 mx.example ESMTP postseal\r\n"
                     "250-mx.example\r\n250-PIPELINING\r\n"
                     "250-SIZE 10485760\r\n250 DSN\r\n";
  assert_int_equal(n, strlen(want));
  assert_memory_equal(out, want, n);
  smtp_server_free(s);

  cfg.extensions = 0;
  s = smtp_server_new(&cfg);
  feed_str(s, "EHLO c.example" CRLF);
  expect_event(s, SMTP_SERVER_EV_HELO, "ehlo bare");
  smtp_server_output(s, &out, &n);
  want = "220 mx.example ESMTP postseal\r\n250 mx.example\r\n";
  assert_int_equal(n, strlen(want));
  assert_memory_equal(out, want, n);
  smtp_server_free(s);
}

static void test_input_limit(void **state) {
  struct smtp_server *s = api_session(NULL);
  static uint8_t big[300 << 10];
  memset(big, 'x', sizeof(big));
  assert_int_equal(smtp_server_feed(s, big, sizeof(big)), -1);
  assert_int_equal(smtp_server_feed(s, big, 200 << 10), 0);
  assert_int_equal(smtp_server_feed(s, big, 100 << 10), -1);
  /* The long garbage line is refused once and then skipped. */
  expect_event(s, SMTP_SERVER_NEED_INPUT, "drained");
  assert_int_equal(smtp_server_feed(s, big, 100 << 10), 0);
  feed_str(s, CRLF "NOOP" CRLF);
  expect_event(s, SMTP_SERVER_NEED_INPUT, "noop");
  const uint8_t *out;
  size_t n;
  smtp_server_output(s, &out, &n);
  const char *tail = "500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n";
  assert_true(n >= strlen(tail));
  assert_memory_equal(out + n - strlen(tail), tail, strlen(tail));
  smtp_server_free(s);
}

/* While a verdict is owed, input piles up to the limit, then drains. */
static void test_input_held_during_verdict(void **state) {
  struct smtp_server *s = api_session(NULL);
  feed_str(s, "EHLO c.example" CRLF);
  expect_event(s, SMTP_SERVER_EV_HELO, "ehlo");
  feed_str(s, MAIL);
  expect_event(s, SMTP_SERVER_EV_MAIL, "mail");
  size_t fed = 0;
  while (smtp_server_feed(s, (const uint8_t *)"NOOP" CRLF, 6) == 0) {
    fed++;
  }
  assert_true(fed > 1000);
  assert_int_equal(smtp_server_is_idle(s), 0);
  smtp_server_accept(s);
  expect_event(s, SMTP_SERVER_NEED_INPUT, "drained");
  assert_int_equal(smtp_server_feed(s, (const uint8_t *)"NOOP" CRLF, 6), 0);
  smtp_server_free(s);
}

static void test_timeouts_and_shutdown(void **state) {
  struct smtp_server *s = api_session(NULL);
  assert_int_equal(smtp_server_timeout_class(s), SMTP_TIMEOUT_COMMAND);
  assert_int_equal(smtp_server_is_idle(s), 1);
  feed_str(s, "EHLO c.example" CRLF);
  expect_event(s, SMTP_SERVER_EV_HELO, "ehlo");
  feed_str(s, MAIL);
  expect_event(s, SMTP_SERVER_EV_MAIL, "mail");
  smtp_server_accept(s);
  expect_event(s, SMTP_SERVER_NEED_INPUT, "mail ok");
  assert_int_equal(smtp_server_is_idle(s), 0);
  feed_str(s, "NOO");
  expect_event(s, SMTP_SERVER_NEED_INPUT, "partial");
  assert_int_equal(smtp_server_is_idle(s), 0);
  smtp_server_timeout(s);
  expect_event(s, SMTP_SERVER_EV_CLOSE, "timeout");
  expect_event(s, SMTP_SERVER_EV_CLOSE, "still closed");
  assert_int_equal(smtp_server_timeout_class(s), SMTP_TIMEOUT_NONE);
  const uint8_t *out;
  size_t n;
  smtp_server_output(s, &out, &n);
  const char *tail = "421 4.4.2 mx.example Error: timeout exceeded\r\n";
  assert_memory_equal(out + n - strlen(tail), tail, strlen(tail));
  feed_str(s, "NOOP" CRLF);
  expect_event(s, SMTP_SERVER_EV_CLOSE, "input ignored");
  smtp_server_output(s, &out, &n);
  assert_memory_equal(out + n - strlen(tail), tail, strlen(tail));
  smtp_server_free(s);

  s = api_session(NULL);
  smtp_server_shutdown(s);
  expect_event(s, SMTP_SERVER_EV_CLOSE, "shutdown");
  smtp_server_output(s, &out, &n);
  tail = "421 4.3.2 mx.example Service shutting down\r\n";
  assert_memory_equal(out + n - strlen(tail), tail, strlen(tail));
  smtp_server_free(s);
}

static void test_bdat_timeout_class(void **state) {
  struct smtp_server *s = api_session(NULL);
  feed_str(s, "EHLO c.example" CRLF);
  expect_event(s, SMTP_SERVER_EV_HELO, "ehlo");
  feed_str(s, MAIL RCPT "BDAT 4" CRLF "ab");
  expect_event(s, SMTP_SERVER_EV_MAIL, "mail");
  smtp_server_accept(s);
  expect_event(s, SMTP_SERVER_EV_RCPT, "rcpt");
  smtp_server_accept(s);
  expect_event(s, SMTP_SERVER_NEED_INPUT, "in chunk");
  assert_int_equal(smtp_server_timeout_class(s), SMTP_TIMEOUT_DATA);
  feed_str(s, CRLF);
  expect_event(s, SMTP_SERVER_NEED_INPUT, "between chunks");
  assert_int_equal(smtp_server_timeout_class(s), SMTP_TIMEOUT_DATA);
  assert_int_equal(smtp_server_is_idle(s), 0);
  feed_str(s, "BDAT 0 LAST" CRLF);
  expect_event(s, SMTP_SERVER_EV_MESSAGE, "message");
  struct buf body = {0};
  smtp_server_take_body(s, &body);
  assert_int_equal(body.len, 4);
  smtp_server_reply_queued(s, "ABC");
  assert_int_equal(smtp_server_timeout_class(s), SMTP_TIMEOUT_COMMAND);
  buf_free(&body);
  smtp_server_free(s);
}

static void test_stats(void **state) {
  struct smtp_server_stats st = {0};
  struct run run = {.stats = &st};
  struct result r;
  const char *script = EHLO MAIL RCPT "NOOP" CRLF "FOO" CRLF "QUIT" CRLF;
  run_script(&run, script, strlen(script), &r);
  assert_int_equal(st.commands[SMTP_VERB_EHLO], 1);
  assert_int_equal(st.commands[SMTP_VERB_MAIL], 1);
  assert_int_equal(st.commands[SMTP_VERB_RCPT], 1);
  assert_int_equal(st.commands[SMTP_VERB_NOOP], 1);
  assert_int_equal(st.commands[SMTP_VERB_UNKNOWN], 1);
  assert_int_equal(st.commands[SMTP_VERB_QUIT], 1);
  /* 220, 250 EHLO, 250 MAIL, 250 RCPT, 250 NOOP, 221 */
  assert_int_equal(st.replies[2], 6);
  assert_int_equal(st.replies[5], 1);
  result_free(&r);
}

/* ---- STARTTLS and AUTH through the host API -------------------------- */

static struct smtp_server *cfg_session(unsigned ext, unsigned flags) {
  struct run run = {
      .ext_off = SMTP_EXT_ALL & ~ext, .ext_on = ext, .cfg = flags};
  return new_session(&run);
}

/* Moves the pending output into out (replacing its contents). */
static void take_output(struct smtp_server *s, struct buf *out) {
  const uint8_t *p;
  size_t n;
  buf_reset(out);
  smtp_server_output(s, &p, &n);
  assert_int_equal(buf_append(out, p, n), 0);
  assert_int_equal(buf_append(out, "", 1), 0); /* NUL: compare as text */
  smtp_server_output_sent(s, n);
}

static void expect_output(struct smtp_server *s, const char *want,
                          const char *label) {
  struct buf out = {0};
  take_output(s, &out);
  if (strcmp((const char *)out.data, want) != 0) {
    fail_msg("%s: output\n got  %s\n want %s", label, (const char *)out.data,
             want);
  }
  buf_free(&out);
}

/* After STARTTLS and the handshake, as a host would drive it. */
static void starttls_done(struct smtp_server *s) {
  feed_str(s, "EHLO c.example" CRLF);
  expect_event(s, SMTP_SERVER_EV_HELO, "ehlo before tls");
  feed_str(s, "STARTTLS" CRLF);
  expect_event(s, SMTP_SERVER_EV_STARTTLS, "starttls");
  smtp_server_tls_started(s);
}

/* RFC 3207 §4.2 and RFC 4954 §4: STARTTLS only before TLS, AUTH only
 * inside it; SMTP_EXT_ALL holds neither. */
static void test_ehlo_tls_keywords(void **state) {
  static const struct {
    const char *label;
    unsigned ext, flags;
    int starttls; /* EHLO again after STARTTLS and the handshake */
    const char *want;
  } cases[] = {
      {"in clear", EXT_TLS_AUTH | SMTP_EXT_PIPELINING, 0, 0,
       "250-mx.example\r\n250-PIPELINING\r\n250 STARTTLS\r\n"},
      {"after starttls", EXT_TLS_AUTH | SMTP_EXT_PIPELINING, 0, 1,
       "250-mx.example\r\n250-PIPELINING\r\n250 AUTH PLAIN LOGIN\r\n"},
      {"implicit tls", EXT_TLS_AUTH, CFG_TLS_ACTIVE, 0,
       "250-mx.example\r\n250 AUTH PLAIN LOGIN\r\n"},
      {"starttls alone after starttls", SMTP_EXT_STARTTLS, 0, 1,
       "250 mx.example\r\n"},
      {"auth alone in clear", SMTP_EXT_AUTH, 0, 0, "250 mx.example\r\n"},
      {"all is neither", SMTP_EXT_ALL, CFG_TLS_ACTIVE, 0,
       "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 10485760\r\n"
       "250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n"
       "250-CHUNKING\r\n250 DSN\r\n"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct smtp_server *s = cfg_session(cases[i].ext, cases[i].flags);
    if (cases[i].starttls) {
      starttls_done(s);
    }
    struct buf skip = {0};
    take_output(s, &skip);
    buf_free(&skip);
    feed_str(s, "EHLO c.example" CRLF);
    expect_event(s, SMTP_SERVER_EV_HELO, cases[i].label);
    expect_output(s, cases[i].want, cases[i].label);
    smtp_server_free(s);
  }
}

/* CVE-2011-0411: what follows STARTTLS in clear, buffered or fed before
 * the handshake is done, is counted and never run; the session restarts. */
static void test_starttls_discards(void **state) {
  struct smtp_server *s = cfg_session(SMTP_EXT_ALL | EXT_TLS_AUTH, 0);
  feed_str(s, "EHLO c.example" CRLF);
  expect_event(s, SMTP_SERVER_EV_HELO, "ehlo");
  expect_event(s, SMTP_SERVER_NEED_INPUT, "ehlo done");
  struct buf skip = {0};
  take_output(s, &skip);
  buf_free(&skip);
  feed_str(s, "STARTTLS" CRLF MAIL RCPT);
  expect_event(s, SMTP_SERVER_EV_STARTTLS, "starttls");
  assert_int_equal(smtp_server_discarded(s), strlen(MAIL RCPT));
  expect_event(s, SMTP_SERVER_WAIT_VERDICT, "handshake");
  assert_int_equal(smtp_server_timeout_class(s), SMTP_TIMEOUT_NONE);
  assert_int_equal(smtp_server_is_idle(s), 0);
  assert_int_equal(smtp_server_tls_active(s), 0);
  expect_output(s, "220 2.0.0 Ready to start TLS\r\n", "220");
  feed_str(s, "DATA" CRLF);
  assert_int_equal(smtp_server_discarded(s), strlen(MAIL RCPT "DATA" CRLF));
  expect_event(s, SMTP_SERVER_WAIT_VERDICT, "still in handshake");
  smtp_server_tls_started(s);
  assert_int_equal(smtp_server_tls_active(s), 1);
  expect_event(s, SMTP_SERVER_NEED_INPUT, "after handshake");
  expect_output(s, "", "no new greeting");
  assert_null(smtp_server_helo(s));
  assert_string_equal(smtp_server_protocol(s), "SMTP");
  assert_int_equal(smtp_server_is_idle(s), 1);
  assert_int_equal(smtp_server_timeout_class(s), SMTP_TIMEOUT_COMMAND);
  feed_str(s, MAIL);
  expect_event(s, SMTP_SERVER_NEED_INPUT, "mail before ehlo");
  expect_output(s, "503 5.5.1 Error: send HELO/EHLO first\r\n", "503");
  feed_str(s, "EHLO c.example" CRLF);
  expect_event(s, SMTP_SERVER_EV_HELO, "ehlo in tls");
  assert_string_equal(smtp_server_protocol(s), "ESMTPS");
  smtp_server_free(s);

  /* A session closed during the handshake ignores the late tls_started. */
  s = cfg_session(EXT_TLS_AUTH, 0);
  feed_str(s, "STARTTLS" CRLF);
  expect_event(s, SMTP_SERVER_EV_STARTTLS, "starttls 2");
  smtp_server_shutdown(s);
  expect_event(s, SMTP_SERVER_EV_CLOSE, "shutdown");
  smtp_server_tls_started(s);
  expect_event(s, SMTP_SERVER_EV_CLOSE, "still closed");
  smtp_server_free(s);
}

/* The host checks the password on another thread: input waits, the
 * getters hold the credentials until the verdict, then only the user. */
static void test_auth_async_verdict(void **state) {
  struct smtp_server *s = cfg_session(SMTP_EXT_ALL | EXT_TLS_AUTH,
                                      CFG_TLS_ACTIVE | CFG_AUTH_REQUIRED);
  feed_str(s, "EHLO c.example" CRLF);
  expect_event(s, SMTP_SERVER_EV_HELO, "ehlo");
  expect_event(s, SMTP_SERVER_NEED_INPUT, "ehlo done");
  struct buf skip = {0};
  take_output(s, &skip);
  buf_free(&skip);
  feed_str(s, "AUTH PLAIN " PLAIN_ALICE CRLF MAIL);
  expect_event(s, SMTP_SERVER_EV_AUTH, "auth");
  assert_string_equal(smtp_server_auth_user(s), "alice");
  assert_string_equal(smtp_server_auth_password(s), "secret");
  assert_int_equal(smtp_server_authenticated(s), 0);
  assert_int_equal(smtp_server_timeout_class(s), SMTP_TIMEOUT_NONE);
  expect_event(s, SMTP_SERVER_WAIT_VERDICT, "checking 1");
  feed_str(s, "NOOP" CRLF);
  expect_event(s, SMTP_SERVER_WAIT_VERDICT, "checking 2");
  expect_output(s, "", "nothing before the verdict");
  smtp_server_auth_result(s, 1);
  assert_null(smtp_server_auth_password(s));
  assert_string_equal(smtp_server_auth_user(s), "alice");
  assert_int_equal(smtp_server_authenticated(s), 1);
  expect_event(s, SMTP_SERVER_EV_MAIL, "mail after auth");
  assert_string_equal(smtp_server_protocol(s), "ESMTPSA");
  smtp_server_accept(s);
  expect_event(s, SMTP_SERVER_NEED_INPUT, "noop");
  expect_output(s,
                "235 2.7.0 Authentication successful\r\n250 2.1.0 Ok\r\n"
                "250 2.0.0 Ok\r\n",
                "replies");
  feed_str(s, "QUIT" CRLF);
  expect_event(s, SMTP_SERVER_EV_CLOSE, "quit");
  smtp_server_free(s);

  /* A SASL exchange waits on the client (command timer); a session freed
   * mid-exchange or with the verdict owed leaks nothing (ASan). */
  s = cfg_session(EXT_TLS_AUTH, CFG_TLS_ACTIVE);
  feed_str(s, "EHLO c.example" CRLF);
  expect_event(s, SMTP_SERVER_EV_HELO, "ehlo 2");
  feed_str(s, "AUTH LOGIN" CRLF);
  expect_event(s, SMTP_SERVER_NEED_INPUT, "334");
  assert_int_equal(smtp_server_timeout_class(s), SMTP_TIMEOUT_COMMAND);
  assert_int_equal(smtp_server_is_idle(s), 0);
  feed_str(s, B64_ALICE CRLF);
  expect_event(s, SMTP_SERVER_NEED_INPUT, "password?");
  assert_null(smtp_server_auth_user(s));
  smtp_server_free(s);
  s = cfg_session(EXT_TLS_AUTH, CFG_TLS_ACTIVE);
  feed_str(s, "EHLO c.example" CRLF);
  expect_event(s, SMTP_SERVER_EV_HELO, "ehlo 3");
  feed_str(s, "AUTH PLAIN " PLAIN_ALICE CRLF);
  expect_event(s, SMTP_SERVER_EV_AUTH, "auth 3");
  smtp_server_free(s);
}

static void b64_append(struct buf *out, const uint8_t *p, size_t n) {
  static const char d[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16 |
                 (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                 (i + 2 < n ? p[i + 2] : 0);
    char q[4] = {d[v >> 18 & 63], d[v >> 12 & 63],
                 i + 1 < n ? d[v >> 6 & 63] : '=', i + 2 < n ? d[v & 63] : '='};
    assert_int_equal(buf_append(out, q, 4), 0);
  }
}

/* Sends one AUTH PLAIN (authcid user, password pass_len octets) as a
 * continuation line; returns 1 if the host was asked, with both intact. */
static int auth_plain_asks(const char *user, size_t pass_len) {
  struct smtp_server *s = cfg_session(EXT_TLS_AUTH, CFG_TLS_ACTIVE);
  struct buf msg = {0}, line = {0};
  assert_int_equal(buf_append(&msg, "\0", 1), 0);
  assert_int_equal(buf_append(&msg, user, strlen(user) + 1), 0);
  for (size_t i = 0; i < pass_len; i++) {
    assert_int_equal(buf_append(&msg, i % 2 ? "p" : "\x7f", 1), 0);
  }
  b64_append(&line, msg.data, msg.len);
  assert_int_equal(buf_append_str(&line, CRLF), 0);
  feed_str(s, "EHLO c.example" CRLF);
  expect_event(s, SMTP_SERVER_EV_HELO, "ehlo");
  feed_str(s, "AUTH PLAIN" CRLF);
  expect_event(s, SMTP_SERVER_NEED_INPUT, "334");
  assert_int_equal(smtp_server_feed(s, line.data, line.len), 0);
  int asked = smtp_server_next(s) == SMTP_SERVER_EV_AUTH;
  if (asked) {
    assert_string_equal(smtp_server_auth_user(s), user);
    assert_int_equal(strlen(smtp_server_auth_password(s)), pass_len);
    assert_memory_equal(smtp_server_auth_password(s),
                        msg.data + 2 + strlen(user), pass_len);
    smtp_server_auth_result(s, 0);
  }
  smtp_server_free(s);
  buf_free(&msg);
  buf_free(&line);
  return asked;
}

/* RFC 4954 §4 limits we set: authcid 1..255 octets without controls,
 * well-formed UTF-8; password up to 1024 octets. */
static void test_auth_limits(void **state) {
  static char u255[256], u256[257];
  memset(u255, 'u', 255);
  memset(u256, 'u', 256);
  static const struct {
    const char *label;
    const char *user;
    size_t pass_len;
    int want;
  } cases[] = {
      {"user of 255", u255, 8, 1},
      {"user of 256", u256, 8, 0},
      {"utf-8 user", "j\xc3\xb6rg", 8, 1},
      {"bad utf-8 user", "j\xc3(rg", 8, 0},
      {"user with tab", "a\tb", 8, 0},
      {"empty password", "alice", 0, 1},
      {"password of 1024", "alice", 1024, 1},
      {"password of 1025", "alice", 1025, 0},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int got = auth_plain_asks(cases[i].user, cases[i].pass_len);
    if (got != cases[i].want) {
      fail_msg("%s: host asked %d want %d", cases[i].label, got, cases[i].want);
    }
  }
}

/* Every length and padding of a LOGIN user name decodes back to itself. */
static void test_auth_base64_round_trip(void **state) {
  for (size_t len = 1; len <= 255; len++) {
    char user[256];
    for (size_t i = 0; i < len; i++) {
      user[i] = (char)(0x21 + (i * 37 + len) % 94);
    }
    user[len] = '\0';
    struct buf line = {0};
    assert_int_equal(buf_append_str(&line, "AUTH LOGIN "), 0);
    b64_append(&line, (const uint8_t *)user, len);
    assert_int_equal(buf_append_str(&line, CRLF B64_SECRET CRLF), 0);
    struct smtp_server *s = cfg_session(EXT_TLS_AUTH, CFG_TLS_ACTIVE);
    feed_str(s, "EHLO c.example" CRLF);
    expect_event(s, SMTP_SERVER_EV_HELO, "ehlo");
    assert_int_equal(smtp_server_feed(s, line.data, line.len), 0);
    if (smtp_server_next(s) != SMTP_SERVER_EV_AUTH ||
        strcmp(smtp_server_auth_user(s), user) != 0) {
      fail_msg("user of %zu octets did not round-trip", len);
    }
    smtp_server_reject(s, 454, "4.7.0", "later");
    smtp_server_free(s);
    buf_free(&line);
  }
}

static void test_stats_tls_auth(void **state) {
  struct smtp_server_stats st = {0};
  struct run run = {.stats = &st, .ext_on = EXT_TLS_AUTH};
  struct result r;
  const char *script = EHLO STARTTLS EHLO
      "AUTH LOGIN" CRLF WAIT B64_ALICE CRLF WAIT B64_SECRET CRLF WAIT
      "EXPN x" CRLF;
  run_script(&run, script, strlen(script), &r);
  assert_int_equal(st.commands[SMTP_VERB_EHLO], 2);
  assert_int_equal(st.commands[SMTP_VERB_STARTTLS], 1);
  assert_int_equal(st.commands[SMTP_VERB_AUTH], 1); /* not its responses */
  assert_int_equal(st.commands[SMTP_VERB_UNKNOWN], 1);
  /* 220, 250, 220 STARTTLS, 250, 235; two 334; 502 */
  assert_int_equal(st.replies[2], 5);
  assert_int_equal(st.replies[3], 2);
  assert_int_equal(st.replies[5], 1);
  result_free(&r);
}

int main(void) {
  static const struct CMUnitTest fixed[] = {
      cmocka_unit_test(test_split_every_point),
      cmocka_unit_test(test_recipient_limit),
      cmocka_unit_test(test_huge_header),
      cmocka_unit_test(test_big_message),
      cmocka_unit_test(test_bdat_body_concatenation),
      cmocka_unit_test(test_verdict_wait),
      cmocka_unit_test(test_envelope_fields),
      cmocka_unit_test(test_body_prefix),
      cmocka_unit_test(test_protocol_helo),
      cmocka_unit_test(test_ehlo_keywords),
      cmocka_unit_test(test_input_limit),
      cmocka_unit_test(test_input_held_during_verdict),
      cmocka_unit_test(test_timeouts_and_shutdown),
      cmocka_unit_test(test_bdat_timeout_class),
      cmocka_unit_test(test_stats),
      cmocka_unit_test(test_ehlo_tls_keywords),
      cmocka_unit_test(test_starttls_discards),
      cmocka_unit_test(test_auth_async_verdict),
      cmocka_unit_test(test_auth_limits),
      cmocka_unit_test(test_auth_base64_round_trip),
      cmocka_unit_test(test_stats_tls_auth),
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
  int rc = _cmocka_run_group_tests("smtp_server", tests, num_sc + num_fixed,
                                   NULL, NULL);
  free(tests);
  return rc;
}
