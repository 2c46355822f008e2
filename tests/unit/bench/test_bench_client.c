/* tests/unit/bench/test_bench_client.c — the load client, driven by
 * scenario scripts: the server's whole reply stream in, the client's
 * events and bytes out. Every script also runs fed byte by byte and cut
 * in two at every point, which must give the same result. The host starts
 * `msgs` messages, then quits; the shared body shows as "[body]" in the
 * output. With STARTTLS, "[TLS]" in the server stream is where the TLS
 * layer starts (what follows is the plaintext inside it), and in the
 * output where the host started TLS. AUTH PLAIN responses are spelled out
 * in base64: AHUAcA== is NUL "u" NUL "p", AGFsaWNlAHB3 NUL "alice" NUL
 * "pw", AGFiY2QAZGU= NUL "abcd" NUL "de" (no, two and one pad octets). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "bench/bench_client.h"

#define HDR(n)                                                                 \
  "Message-ID: <" #n ".r@postseal-bench>\r\nDate: D\r\nFrom: <f@x>\r\n"        \
  "To: <rcpt0@d>\r\nSubject: postseal-bench message " #n "\r\n\r\n[body]"
#define GREET "220 sink ESMTP\r\n"
#define EHLO_PIPE "250-sink\r\n250-SIZE 1000\r\n250 PIPELINING\r\n"
#define EHLO_PLAIN "250-sink\r\n250 8BITMIME\r\n"
#define EHLO_TLS "250-sink\r\n250-PIPELINING\r\n250 STARTTLS\r\n"
#define TXN1                                                                   \
  "MAIL FROM:<f@x>\r\nRCPT TO:<rcpt0@d>\r\nDATA\r\n" HDR(1) "QUIT\r\n"
#define EHLO_AUTH "250-sink\r\n250-PIPELINING\r\n250 AUTH LOGIN PLAIN\r\n"
/* A clear EHLO that offers AUTH before TLS (ours does not; some do). */
#define EHLO_TLS_AUTH "250-sink\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n"
#define AUTH_UP "AUTH PLAIN AHUAcA==\r\n"
#define OK_TXN "250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n"

struct script {
  const char *label;
  int pipelining;
  unsigned rcpts;
  unsigned msgs;
  const char *server; /* the whole reply stream */
  const char *want_events;
  const char *want_out;
  uint64_t want_rcpt[6]; /* RCPT replies by class */
  int starttls;
  int implicit_tls;
  const char *auth_user; /* NULL: no AUTH */
  const char *auth_password;
  int auth_insecure;
  uint64_t want_auth[6]; /* AUTH replies by class */
};

static const struct script scripts[] = {
    {.label = "accepted, one recipient",
     .rcpts = 1,
     .msgs = 1,
     .server = GREET EHLO_PLAIN "250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n"
                                "250 2.0.0 queued\r\n221 bye\r\n",
     .want_events = "GREETING EHLO READY BODY MSG2 READY CLOSE0",
     .want_out =
         "EHLO h\r\nMAIL FROM:<f@x>\r\nRCPT TO:<rcpt0@d>\r\nDATA\r\n" HDR(
             1) "QUIT\r\n",
     .want_rcpt = {0, 0, 1, 0, 0, 0}},
    {.label = "pipelined, second recipient refused",
     .pipelining = 1,
     .rcpts = 2,
     .msgs = 1,
     .server = GREET EHLO_PIPE "250 ok\r\n250 ok\r\n550 5.1.1 no\r\n354 go\r\n"
                               "250 queued\r\n221 bye\r\n",
     .want_events = "GREETING EHLO READY BODY MSG2 READY CLOSE0",
     .want_out = "EHLO h\r\nMAIL FROM:<f@x>\r\nRCPT TO:<rcpt0@d>\r\nRCPT "
                 "TO:<rcpt1@d>\r\n"
                 "DATA\r\n" HDR(1) "QUIT\r\n",
     .want_rcpt = {0, 0, 1, 0, 0, 1}},
    {.label = "pipelining asked, not offered: one command at a time",
     .pipelining = 1,
     .rcpts = 1,
     .msgs = 1,
     .server = GREET EHLO_PLAIN
     "250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n221 bye\r\n",
     .want_events = "GREETING EHLO READY BODY MSG2 READY CLOSE0",
     .want_out =
         "EHLO h\r\nMAIL FROM:<f@x>\r\nRCPT TO:<rcpt0@d>\r\nDATA\r\n" HDR(
             1) "QUIT\r\n",
     .want_rcpt = {0, 0, 1, 0, 0, 0}},
    {.label = "recipient tempfailed: RSET, no DATA",
     .rcpts = 1,
     .msgs = 1,
     .server = GREET EHLO_PLAIN
     "250 ok\r\n451 4.3.0 later\r\n250 reset\r\n221 bye\r\n",
     .want_events = "GREETING EHLO READY MSG4 READY CLOSE0",
     .want_out =
         "EHLO h\r\nMAIL FROM:<f@x>\r\nRCPT TO:<rcpt0@d>\r\nRSET\r\nQUIT\r\n",
     .want_rcpt = {0, 0, 0, 0, 1, 0}},
    {.label = "MAIL refused: no RCPT",
     .rcpts = 2,
     .msgs = 1,
     .server = GREET EHLO_PLAIN "550 5.7.1 no\r\n250 reset\r\n221 bye\r\n",
     .want_events = "GREETING EHLO READY MSG5 READY CLOSE0",
     .want_out = "EHLO h\r\nMAIL FROM:<f@x>\r\nRSET\r\nQUIT\r\n"},
    {.label = "pipelined, every recipient refused, one temporarily",
     .pipelining = 1,
     .rcpts = 2,
     .msgs = 1,
     .server = GREET EHLO_PIPE
     "250 ok\r\n550 no\r\n451 later\r\n554 5.5.1 no rcpts\r\n"
     "250 reset\r\n221 bye\r\n",
     .want_events = "GREETING EHLO READY MSG4 READY CLOSE0",
     .want_out = "EHLO h\r\nMAIL FROM:<f@x>\r\nRCPT TO:<rcpt0@d>\r\nRCPT "
                 "TO:<rcpt1@d>\r\n"
                 "DATA\r\nRSET\r\nQUIT\r\n",
     .want_rcpt = {0, 0, 0, 0, 1, 1}},
    {.label = "final reply 4xx, then a second message",
     .rcpts = 1,
     .msgs = 2,
     .server = GREET EHLO_PLAIN
     "250 ok\r\n250 ok\r\n354 go\r\n451 4.3.0 disk\r\n"
     "250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n221 bye\r\n",
     .want_events =
         "GREETING EHLO READY BODY MSG4 READY BODY MSG2 READY CLOSE0",
     .want_out =
         "EHLO h\r\nMAIL FROM:<f@x>\r\nRCPT TO:<rcpt0@d>\r\nDATA\r\n" HDR(
             1) "MAIL FROM:<f@x>\r\nRCPT TO:<rcpt0@d>\r\nDATA\r\n" HDR(2) "QUIT"
                                                                          "\r"
                                                                          "\n",
     .want_rcpt = {0, 0, 2, 0, 0, 0}},
    {.label = "421 in a transaction loses the message",
     .rcpts = 1,
     .msgs = 1,
     .server = GREET EHLO_PLAIN "250 ok\r\n421 4.4.2 timeout\r\n",
     .want_events = "GREETING EHLO READY MSG4 CLOSE2",
     .want_out = "EHLO h\r\nMAIL FROM:<f@x>\r\nRCPT TO:<rcpt0@d>\r\n"},
    {.label = "greeting refused",
     .rcpts = 1,
     .msgs = 1,
     .server = "554 go away\r\n",
     .want_events = "CLOSE1",
     .want_out = ""},
    {.label = "not SMTP",
     .rcpts = 1,
     .msgs = 1,
     .server = "HTTP/1.1 400 Bad\r\n",
     .want_events = "CLOSE3",
     .want_out = ""},
    {.label = "multi-line reply changes its code",
     .rcpts = 1,
     .msgs = 1,
     .server = GREET "250-sink\r\n251 odd\r\n",
     .want_events = "GREETING CLOSE3",
     .want_out = "EHLO h\r\n"},
    {.label = "bare LF line ends tolerated",
     .rcpts = 1,
     .msgs = 0,
     .server = "220 x\n250 y\n221 z\n",
     .want_events = "GREETING EHLO READY CLOSE0",
     .want_out = "EHLO h\r\nQUIT\r\n"},
    {.label = "421 instead of a greeting",
     .rcpts = 1,
     .msgs = 1,
     .server = "421 4.7.0 busy\r\n",
     .want_events = "CLOSE2",
     .want_out = ""},
    {.label = "STARTTLS, EHLO again inside; PIPELINING as the second EHLO says",
     .pipelining = 1,
     .rcpts = 1,
     .msgs = 1,
     .server = GREET EHLO_TLS
     "220 2.0.0 go ahead\r\n[TLS]" EHLO_PLAIN
     "250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n221 bye\r\n",
     .want_events = "GREETING EHLO STARTTLS EHLO READY BODY MSG2 READY CLOSE0",
     .want_out = "EHLO h\r\nSTARTTLS\r\n[TLS]EHLO h\r\n" TXN1,
     .want_rcpt = {0, 0, 1, 0, 0, 0},
     .starttls = 1},
    {.label = "STARTTLS, then pipelining inside",
     .pipelining = 1,
     .rcpts = 1,
     .msgs = 1,
     .server = GREET EHLO_TLS
     "220 go\r\n[TLS]" EHLO_PIPE
     "250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n221 bye\r\n",
     .want_events = "GREETING EHLO STARTTLS EHLO READY BODY MSG2 READY CLOSE0",
     .want_out = "EHLO h\r\nSTARTTLS\r\n[TLS]EHLO h\r\n" TXN1,
     .want_rcpt = {0, 0, 1, 0, 0, 0},
     .starttls = 1},
    {.label = "STARTTLS not offered: no plaintext fallback",
     .rcpts = 1,
     .msgs = 1,
     .server = GREET EHLO_PIPE,
     .want_events = "GREETING EHLO CLOSE4",
     .want_out = "EHLO h\r\n",
     .starttls = 1},
    {.label = "STARTTLS refused",
     .rcpts = 1,
     .msgs = 1,
     .server = GREET EHLO_TLS "454 4.7.0 TLS not available\r\n",
     .want_events = "GREETING EHLO CLOSE4",
     .want_out = "EHLO h\r\nSTARTTLS\r\n",
     .starttls = 1},
    {.label = "STARTTLS offered but not asked for",
     .rcpts = 1,
     .msgs = 0,
     .server = GREET EHLO_TLS "221 bye\r\n",
     .want_events = "GREETING EHLO READY CLOSE0",
     .want_out = "EHLO h\r\nQUIT\r\n"},
    /* AUTH PLAIN (RFC 4954 §4, RFC 4616 §2). */
    {.label = "AUTH after the EHLO inside STARTTLS, then pipelined mail",
     .pipelining = 1,
     .rcpts = 1,
     .msgs = 1,
     .server = GREET EHLO_TLS "220 go\r\n[TLS]" EHLO_AUTH
                              "235 2.7.0 Authentication successful\r\n" OK_TXN
                              "221 bye\r\n",
     .want_events = "GREETING EHLO STARTTLS EHLO AUTH READY BODY MSG2 READY "
                    "CLOSE0",
     .want_out = "EHLO h\r\nSTARTTLS\r\n[TLS]EHLO h\r\n"
                 "AUTH PLAIN AGFsaWNlAHB3\r\n" TXN1,
     .want_rcpt = {0, 0, 1, 0, 0, 0},
     .starttls = 1,
     .auth_user = "alice",
     .auth_password = "pw",
     .want_auth = {0, 0, 1, 0, 0, 0}},
    {.label = "implicit TLS: AUTH once for two messages; AUTH=, lower case",
     .rcpts = 1,
     .msgs = 2,
     .server = GREET "250-sink\r\n250-AUTH=LOGIN plain\r\n250 8BITMIME\r\n"
                     "235 ok\r\n" OK_TXN OK_TXN "221 bye\r\n",
     .want_events = "GREETING EHLO AUTH READY BODY MSG2 READY BODY MSG2 READY "
                    "CLOSE0",
     .want_out =
         "EHLO h\r\nAUTH PLAIN AGFiY2QAZGU=\r\n"
         "MAIL FROM:<f@x>\r\nRCPT TO:<rcpt0@d>\r\nDATA\r\n" HDR(
             1) "MAIL FROM:<f@x>\r\nRCPT TO:<rcpt0@d>\r\nDATA\r\n" HDR(2) "QUIT"
                                                                          "\r"
                                                                          "\n",
     .want_rcpt = {0, 0, 2, 0, 0, 0},
     .implicit_tls = 1,
     .auth_user = "abcd",
     .auth_password = "de",
     .want_auth = {0, 0, 1, 0, 0, 0}},
    {.label = "535: the session ends before MAIL",
     .rcpts = 1,
     .msgs = 1,
     .server =
         GREET EHLO_AUTH "535 5.7.8 Authentication credentials invalid\r\n",
     .want_events = "GREETING EHLO CLOSE5",
     .want_out = "EHLO h\r\n" AUTH_UP,
     .implicit_tls = 1,
     .auth_user = "u",
     .auth_password = "p",
     .want_auth = {0, 0, 0, 0, 0, 1}},
    {.label = "454 (blocked after failures): the session ends",
     .rcpts = 1,
     .msgs = 1,
     .server = GREET EHLO_AUTH "454 4.7.0 Too many failed attempts\r\n",
     .want_events = "GREETING EHLO CLOSE5",
     .want_out = "EHLO h\r\n" AUTH_UP,
     .implicit_tls = 1,
     .auth_user = "u",
     .auth_password = "p",
     .want_auth = {0, 0, 0, 0, 1, 0}},
    {.label = "334 although the response went with AUTH: the session ends",
     .rcpts = 1,
     .msgs = 1,
     .server = GREET EHLO_AUTH "334 \r\n",
     .want_events = "GREETING EHLO CLOSE5",
     .want_out = "EHLO h\r\n" AUTH_UP,
     .implicit_tls = 1,
     .auth_user = "u",
     .auth_password = "p",
     .want_auth = {0, 0, 0, 1, 0, 0}},
    {.label = "a multi-line 250 to AUTH is not 235",
     .rcpts = 1,
     .msgs = 1,
     .server = GREET EHLO_AUTH "250-odd\r\n250 ok\r\n",
     .want_events = "GREETING EHLO CLOSE5",
     .want_out = "EHLO h\r\n" AUTH_UP,
     .implicit_tls = 1,
     .auth_user = "u",
     .auth_password = "p",
     .want_auth = {0, 0, 1, 0, 0, 0}},
    {.label = "421 to AUTH: the server is closing",
     .rcpts = 1,
     .msgs = 1,
     .server = GREET EHLO_AUTH "421 4.3.2 shutting down\r\n",
     .want_events = "GREETING EHLO CLOSE2",
     .want_out = "EHLO h\r\n" AUTH_UP,
     .implicit_tls = 1,
     .auth_user = "u",
     .auth_password = "p",
     .want_auth = {0, 0, 0, 0, 1, 0}},
    {.label = "AUTH not advertised: no AUTH sent",
     .rcpts = 1,
     .msgs = 1,
     .server = GREET EHLO_PIPE,
     .want_events = "GREETING EHLO CLOSE6",
     .want_out = "EHLO h\r\n",
     .implicit_tls = 1,
     .auth_user = "u",
     .auth_password = "p"},
    {.label = "AUTH without PLAIN; look-alikes are not PLAIN",
     .rcpts = 1,
     .msgs = 1,
     .server = GREET "250-sink\r\n250-AUTH LOGIN PLAINX CRAM-MD5\r\n"
                     "250-AUTHPLAIN\r\n250-X-AUTH PLAIN\r\n250 AUTH\r\n",
     .want_events = "GREETING EHLO CLOSE6",
     .want_out = "EHLO h\r\n",
     .implicit_tls = 1,
     .auth_user = "u",
     .auth_password = "p"},
    {.label = "AUTH PLAIN offered in clear, no TLS: the password stays home",
     .rcpts = 1,
     .msgs = 1,
     .server = GREET EHLO_AUTH,
     .want_events = "GREETING EHLO CLOSE7",
     .want_out = "EHLO h\r\n",
     .auth_user = "u",
     .auth_password = "p"},
    {.label = "auth_insecure: AUTH in clear when asked for",
     .rcpts = 1,
     .msgs = 0,
     .server = GREET EHLO_AUTH "235 ok\r\n221 bye\r\n",
     .want_events = "GREETING EHLO AUTH READY CLOSE0",
     .want_out = "EHLO h\r\n" AUTH_UP "QUIT\r\n",
     .auth_user = "u",
     .auth_password = "p",
     .auth_insecure = 1,
     .want_auth = {0, 0, 1, 0, 0, 0}},
    {.label = "STARTTLS: AUTH offered only in clear is forgotten, not used",
     .rcpts = 1,
     .msgs = 1,
     .server = GREET EHLO_TLS_AUTH "220 go\r\n[TLS]" EHLO_PLAIN,
     .want_events = "GREETING EHLO STARTTLS EHLO CLOSE6",
     .want_out = "EHLO h\r\nSTARTTLS\r\n[TLS]EHLO h\r\n",
     .starttls = 1,
     .auth_user = "u",
     .auth_password = "p"},
};

struct result {
  char events[512];
  char out[4096];
  struct bench_client_stats stats;
};

static void take_output(struct bench_client *bc, struct result *res) {
  const uint8_t *p1, *p2;
  size_t n1, n2;
  bench_client_output(bc, &p1, &n1, &p2, &n2);
  if (n1 > 0) {
    strncat(res->out, (const char *)p1, n1);
  }
  if (n2 > 0) {
    strcat(res->out, "[body]");
  }
  bench_client_output_sent(bc, n1 + n2);
}

static void event_name(struct bench_client *bc, enum bench_client_event ev,
                       char *name, size_t name_len) {
  static const char *names[] = {"NEED", "GREETING", "EHLO", "READY", "BODY"};
  if (ev == BENCH_CLIENT_EV_AUTH) {
    snprintf(name, name_len, "AUTH");
  } else if (ev == BENCH_CLIENT_EV_MESSAGE) {
    snprintf(name, name_len, "MSG%d", bench_client_result(bc));
  } else if (ev == BENCH_CLIENT_EV_CLOSE) {
    snprintf(name, name_len, "CLOSE%d", (int)bench_client_error(bc));
  } else if (ev == BENCH_CLIENT_EV_STARTTLS) {
    snprintf(name, name_len, "STARTTLS");
  } else {
    snprintf(name, name_len, "%s", names[ev]);
  }
}

/* run feeds the server stream in pieces of `step` octets (0: whole), cut
 * once more at offset `split` (0: nowhere). */
static void run(const struct script *s, size_t step, size_t split,
                struct result *res) {
  static const uint8_t body[] = "abc\r\n.\r\n";
  memset(res, 0, sizeof(*res));
  struct bench_client_config cfg = {.helo = "h",
                                    .from = "f@x",
                                    .to_domain = "d",
                                    .num_rcpts = s->rcpts,
                                    .pipelining = s->pipelining,
                                    .starttls = s->starttls,
                                    .implicit_tls = s->implicit_tls,
                                    .auth_user = s->auth_user,
                                    .auth_password = s->auth_password,
                                    .auth_insecure = s->auth_insecure,
                                    .stats = &res->stats};
  struct bench_client bc;
  assert_int_equal(bench_client_init(&bc, &cfg), 0);
  unsigned started = 0;
  size_t len = strlen(s->server), off = 0;
  while (off < len) {
    if (strncmp(s->server + off, "[TLS]", 5) == 0) {
      off += 5; /* the layer below changes; the client sees plaintext */
      continue;
    }
    const char *mark = strstr(s->server + off, "[TLS]");
    size_t left = mark != NULL ? (size_t)(mark - (s->server + off)) : len - off;
    size_t n = step == 0 || left < step ? left : step;
    if (split > off && split < off + n) {
      n = split - off;
    }
    assert_int_equal(
        bench_client_feed(&bc, (const uint8_t *)s->server + off, n), 0);
    off += n;
    enum bench_client_event ev;
    while ((ev = bench_client_next(&bc)) != BENCH_CLIENT_NEED_INPUT) {
      char name[32];
      event_name(&bc, ev, name, sizeof(name));
      snprintf(res->events + strlen(res->events),
               sizeof(res->events) - strlen(res->events), "%s%s",
               res->events[0] ? " " : "", name);
      if (ev == BENCH_CLIENT_EV_STARTTLS) {
        take_output(&bc, res); /* STARTTLS left in clear */
        strcat(res->out, "[TLS]");
        bench_client_tls_started(&bc);
      } else if (ev == BENCH_CLIENT_EV_READY && started < s->msgs) {
        started++;
        struct bench_client_message m = {.serial = started,
                                         .run_id = "r",
                                         .date = "D",
                                         .body = body,
                                         .body_len = sizeof(body) - 1};
        bench_client_start_message(&bc, &m);
      } else if (ev == BENCH_CLIENT_EV_READY) {
        bench_client_quit(&bc);
      }
      take_output(&bc, res);
    }
    take_output(&bc, res);
  }
  bench_client_cleanup(&bc);
}

static void test_scripts(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof(scripts) / sizeof(scripts[0]); i++) {
    const struct script *s = &scripts[i];
    struct result whole, bytes, cut;
    run(s, 0, 0, &whole);
    if (strcmp(whole.events, s->want_events) != 0) {
      fail_msg("%s: events\n got: %s\nwant: %s", s->label, whole.events,
               s->want_events);
    }
    if (strcmp(whole.out, s->want_out) != 0) {
      fail_msg("%s: output\n got: %s\nwant: %s", s->label, whole.out,
               s->want_out);
    }
    for (int k = 2; k <= 5; k++) {
      if (whole.stats.rcpt[k] != s->want_rcpt[k]) {
        fail_msg("%s: RCPT %dxx got %llu want %llu", s->label, k,
                 (unsigned long long)whole.stats.rcpt[k],
                 (unsigned long long)s->want_rcpt[k]);
      }
    }
    for (int k = 2; k <= 5; k++) {
      if (whole.stats.auth[k] != s->want_auth[k]) {
        fail_msg("%s: AUTH %dxx got %llu want %llu", s->label, k,
                 (unsigned long long)whole.stats.auth[k],
                 (unsigned long long)s->want_auth[k]);
      }
    }
    run(s, 1, 0, &bytes);
    if (strcmp(bytes.events, whole.events) != 0 ||
        strcmp(bytes.out, whole.out) != 0) {
      fail_msg("%s: byte by byte differs\n got: %s\nwant: %s", s->label,
               bytes.events, whole.events);
    }
    for (size_t split = 1; split < strlen(s->server); split++) {
      run(s, 0, split, &cut);
      if (strcmp(cut.events, whole.events) != 0 ||
          strcmp(cut.out, whole.out) != 0 ||
          memcmp(&cut.stats, &whole.stats, sizeof(cut.stats)) != 0) {
        fail_msg("%s: cut at %zu differs\n got: %s\nwant: %s", s->label, split,
                 cut.events, whole.events);
      }
    }
  }
}

/* Bodies: the size in octets before stuffing, 76-character lines, a
 * leading "." doubled (RFC 5321 §4.5.2), the end-of-data line last. */
static void test_make_body(void **state) {
  (void)state;
  static const size_t sizes[] = {0, 2, 3, 76, 77, 78, 79, 1000, 4096, 65536};
  for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
    struct buf b = {0};
    assert_int_equal(bench_client_make_body(&b, sizes[i]), 0);
    size_t unstuffed = 0, pos = 0, stuffed_lines = 0;
    while (pos < b.len) {
      const uint8_t *lf = memchr(b.data + pos, '\n', b.len - pos);
      assert_non_null(lf);
      size_t line = (size_t)(lf - (b.data + pos)) + 1;
      assert_true(line >= 2 && b.data[pos + line - 2] == '\r');
      if (pos + line == b.len) {
        assert_int_equal(line, 3); /* ".\r\n" */
        assert_int_equal(b.data[pos], '.');
      } else {
        assert_true(line <= 79);
        size_t dots = b.data[pos] == '.' ? 1 : 0;
        if (dots) {
          assert_int_equal(b.data[pos + 1], '.');
          stuffed_lines++;
        }
        assert_true(line - dots <= 78);
        unstuffed += line - dots;
      }
      pos += line;
    }
    if (unstuffed != sizes[i]) {
      fail_msg("size %zu: body holds %zu octets", sizes[i], unstuffed);
    }
    if (sizes[i] >= 4096 && stuffed_lines == 0) {
      fail_msg("size %zu: no line needed stuffing", sizes[i]);
    }
    buf_free(&b);
  }
}

/* Replies the server sent in clear after its 220 to STARTTLS are dropped,
 * never read as replies inside TLS (RFC 3207 §4.2). */
static void test_starttls_drops_clear_input(void **state) {
  (void)state;
  static const char clear[] = GREET EHLO_TLS "220 go\r\n250 injected\r\n";
  static const char inside[] = EHLO_PLAIN "221 bye\r\n";
  struct bench_client_config cfg = {.helo = "h",
                                    .from = "f",
                                    .to_domain = "d",
                                    .num_rcpts = 1,
                                    .starttls = 1};
  struct bench_client bc;
  assert_int_equal(bench_client_init(&bc, &cfg), 0);
  assert_int_equal(
      bench_client_feed(&bc, (const uint8_t *)clear, sizeof(clear) - 1), 0);
  assert_int_equal(bench_client_next(&bc), BENCH_CLIENT_EV_GREETING);
  assert_int_equal(bench_client_next(&bc), BENCH_CLIENT_EV_EHLO);
  assert_int_equal(bench_client_next(&bc), BENCH_CLIENT_EV_STARTTLS);
  /* Until the host starts TLS, nothing more is read. */
  assert_int_equal(bench_client_next(&bc), BENCH_CLIENT_NEED_INPUT);
  bench_client_tls_started(&bc);
  assert_int_equal(
      bench_client_feed(&bc, (const uint8_t *)inside, sizeof(inside) - 1), 0);
  assert_int_equal(bench_client_next(&bc), BENCH_CLIENT_EV_EHLO);
  assert_int_equal(bench_client_next(&bc), BENCH_CLIENT_EV_READY);
  bench_client_quit(&bc);
  assert_int_equal(bench_client_next(&bc), BENCH_CLIENT_EV_CLOSE);
  assert_int_equal(bench_client_error(&bc), BENCH_CLIENT_OK);
  bench_client_cleanup(&bc);
}

/* AUTH waits for its 235 before MAIL (the server must know who sends),
 * even when PIPELINING is offered and used. */
static void test_auth_waits_for_235(void **state) {
  (void)state;
  static const char head[] = GREET EHLO_AUTH;
  static const uint8_t body[] = ".\r\n";
  struct bench_client_config cfg = {.helo = "h",
                                    .from = "f@x",
                                    .to_domain = "d",
                                    .num_rcpts = 1,
                                    .pipelining = 1,
                                    .implicit_tls = 1,
                                    .auth_user = "u",
                                    .auth_password = "p"};
  struct bench_client bc;
  struct result res;
  memset(&res, 0, sizeof(res));
  assert_int_equal(bench_client_init(&bc, &cfg), 0);
  assert_int_equal(
      bench_client_feed(&bc, (const uint8_t *)head, sizeof(head) - 1), 0);
  assert_int_equal(bench_client_next(&bc), BENCH_CLIENT_EV_GREETING);
  assert_int_equal(bench_client_next(&bc), BENCH_CLIENT_EV_EHLO);
  assert_int_equal(bench_client_next(&bc), BENCH_CLIENT_NEED_INPUT);
  take_output(&bc, &res);
  assert_string_equal(res.out, "EHLO h\r\n" AUTH_UP);
  assert_int_equal(bench_client_feed(&bc, (const uint8_t *)"235 ok\r\n", 8), 0);
  assert_int_equal(bench_client_next(&bc), BENCH_CLIENT_EV_AUTH);
  assert_int_equal(bench_client_next(&bc), BENCH_CLIENT_EV_READY);
  struct bench_client_message m = {
      .serial = 1, .run_id = "r", .date = "D", .body = body, .body_len = 3};
  bench_client_start_message(&bc, &m);
  res.out[0] = '\0';
  take_output(&bc, &res);
  assert_string_equal(res.out,
                      "MAIL FROM:<f@x>\r\nRCPT TO:<rcpt0@d>\r\nDATA\r\n");
  bench_client_cleanup(&bc);
}

/* The longest user and password make one AUTH line of the right length
 * (base64: 4 octets per 3). */
static void test_auth_longest(void **state) {
  (void)state;
  static char user[BENCH_CLIENT_MAX_AUTH_USER + 1];
  static char password[BENCH_CLIENT_MAX_AUTH_PASSWORD + 1];
  memset(user, 'u', BENCH_CLIENT_MAX_AUTH_USER);
  memset(password, 'p', BENCH_CLIENT_MAX_AUTH_PASSWORD);
  static const char head[] = GREET EHLO_AUTH;
  struct bench_client_config cfg = {.helo = "h",
                                    .from = "f",
                                    .to_domain = "d",
                                    .num_rcpts = 1,
                                    .implicit_tls = 1,
                                    .auth_user = user,
                                    .auth_password = password};
  struct bench_client bc;
  assert_int_equal(bench_client_init(&bc, &cfg), 0);
  assert_int_equal(
      bench_client_feed(&bc, (const uint8_t *)head, sizeof(head) - 1), 0);
  while (bench_client_next(&bc) != BENCH_CLIENT_NEED_INPUT) {
  }
  const uint8_t *p1, *p2;
  size_t n1, n2;
  bench_client_output(&bc, &p1, &n1, &p2, &n2);
  size_t msg_len =
      2 + BENCH_CLIENT_MAX_AUTH_USER + BENCH_CLIENT_MAX_AUTH_PASSWORD;
  size_t want = strlen("EHLO h\r\nAUTH PLAIN ") + 4 * ((msg_len + 2) / 3) + 2;
  if (n1 != want || n2 != 0) {
    fail_msg("AUTH line: got %zu octets want %zu", n1, want);
  }
  bench_client_cleanup(&bc);
}

static void test_bad_config(void **state) {
  (void)state;
  struct bench_client bc;
  struct bench_client_config cfg = {
      .helo = "h", .from = "f", .to_domain = "d", .num_rcpts = 0};
  assert_int_equal(bench_client_init(&bc, &cfg), -1);
  cfg.num_rcpts = BENCH_CLIENT_MAX_RCPTS + 1;
  assert_int_equal(bench_client_init(&bc, &cfg), -1);
  /* AUTH: both or neither, each 1..its limit (RFC 4616 §2: 1*SAFE). */
  static char long_user[BENCH_CLIENT_MAX_AUTH_USER + 2];
  static char long_password[BENCH_CLIENT_MAX_AUTH_PASSWORD + 2];
  memset(long_user, 'u', sizeof(long_user) - 1);
  memset(long_password, 'p', sizeof(long_password) - 1);
  static const struct {
    const char *label, *user, *password;
  } auth[] = {
      {"user without password", "u", NULL},
      {"password without user", NULL, "p"},
      {"empty user", "", "p"},
      {"empty password", "u", ""},
      {"user too long", long_user, "p"},
      {"password too long", "u", long_password},
  };
  cfg.num_rcpts = 1;
  for (size_t i = 0; i < sizeof(auth) / sizeof(auth[0]); i++) {
    cfg.auth_user = auth[i].user;
    cfg.auth_password = auth[i].password;
    if (bench_client_init(&bc, &cfg) != -1) {
      fail_msg("%s: init got 0 want -1", auth[i].label);
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_scripts),
      cmocka_unit_test(test_make_body),
      cmocka_unit_test(test_starttls_drops_clear_input),
      cmocka_unit_test(test_auth_waits_for_235),
      cmocka_unit_test(test_auth_longest),
      cmocka_unit_test(test_bad_config),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
