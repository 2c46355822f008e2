/* tests/unit/bench/test_bench_client.c — the load client, driven by
 * scenario scripts: the server's whole reply stream in, the client's
 * events and bytes out. Every script also runs fed byte by byte, which
 * must give the same result. The host starts `msgs` messages, then quits;
 * the shared body shows as "[body]" in the output. With STARTTLS, "[TLS]"
 * in the server stream is where the TLS layer starts (what follows is the
 * plaintext inside it), and in the output where the host started TLS. */
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
};

static const struct script scripts[] = {
    {"accepted, one recipient",
     0,
     1,
     1,
     GREET EHLO_PLAIN "250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n"
                      "250 2.0.0 queued\r\n221 bye\r\n",
     "GREETING EHLO READY BODY MSG2 READY CLOSE0",
     "EHLO h\r\nMAIL FROM:<f@x>\r\nRCPT TO:<rcpt0@d>\r\nDATA\r\n" HDR(
         1) "QUIT\r\n",
     {0, 0, 1, 0, 0, 0},
     0},
    {"pipelined, second recipient refused",
     1,
     2,
     1,
     GREET EHLO_PIPE "250 ok\r\n250 ok\r\n550 5.1.1 no\r\n354 go\r\n"
                     "250 queued\r\n221 bye\r\n",
     "GREETING EHLO READY BODY MSG2 READY CLOSE0",
     "EHLO h\r\nMAIL FROM:<f@x>\r\nRCPT TO:<rcpt0@d>\r\nRCPT TO:<rcpt1@d>\r\n"
     "DATA\r\n" HDR(1) "QUIT\r\n",
     {0, 0, 1, 0, 0, 1},
     0},
    {"pipelining asked, not offered: one command at a time",
     1,
     1,
     1,
     GREET EHLO_PLAIN "250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n221 bye\r\n",
     "GREETING EHLO READY BODY MSG2 READY CLOSE0",
     "EHLO h\r\nMAIL FROM:<f@x>\r\nRCPT TO:<rcpt0@d>\r\nDATA\r\n" HDR(
         1) "QUIT\r\n",
     {0, 0, 1, 0, 0, 0},
     0},
    {"recipient tempfailed: RSET, no DATA",
     0,
     1,
     1,
     GREET EHLO_PLAIN "250 ok\r\n451 4.3.0 later\r\n250 reset\r\n221 bye\r\n",
     "GREETING EHLO READY MSG4 READY CLOSE0",
     "EHLO h\r\nMAIL FROM:<f@x>\r\nRCPT TO:<rcpt0@d>\r\nRSET\r\nQUIT\r\n",
     {0, 0, 0, 0, 1, 0},
     0},
    {"MAIL refused: no RCPT",
     0,
     2,
     1,
     GREET EHLO_PLAIN "550 5.7.1 no\r\n250 reset\r\n221 bye\r\n",
     "GREETING EHLO READY MSG5 READY CLOSE0",
     "EHLO h\r\nMAIL FROM:<f@x>\r\nRSET\r\nQUIT\r\n",
     {0, 0, 0, 0, 0, 0},
     0},
    {"pipelined, every recipient refused, one temporarily",
     1,
     2,
     1,
     GREET EHLO_PIPE "250 ok\r\n550 no\r\n451 later\r\n554 5.5.1 no rcpts\r\n"
                     "250 reset\r\n221 bye\r\n",
     "GREETING EHLO READY MSG4 READY CLOSE0",
     "EHLO h\r\nMAIL FROM:<f@x>\r\nRCPT TO:<rcpt0@d>\r\nRCPT TO:<rcpt1@d>\r\n"
     "DATA\r\nRSET\r\nQUIT\r\n",
     {0, 0, 0, 0, 1, 1},
     0},
    {"final reply 4xx, then a second message",
     0,
     1,
     2,
     GREET EHLO_PLAIN "250 ok\r\n250 ok\r\n354 go\r\n451 4.3.0 disk\r\n"
                      "250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n221 bye\r\n",
     "GREETING EHLO READY BODY MSG4 READY BODY MSG2 READY CLOSE0",
     "EHLO h\r\nMAIL FROM:<f@x>\r\nRCPT TO:<rcpt0@d>\r\nDATA\r\n" HDR(
         1) "MAIL FROM:<f@x>\r\nRCPT TO:<rcpt0@d>\r\nDATA\r\n" HDR(2) "QUIT\r"
                                                                      "\n",
     {0, 0, 2, 0, 0, 0},
     0},
    {"421 in a transaction loses the message",
     0,
     1,
     1,
     GREET EHLO_PLAIN "250 ok\r\n421 4.4.2 timeout\r\n",
     "GREETING EHLO READY MSG4 CLOSE2",
     "EHLO h\r\nMAIL FROM:<f@x>\r\nRCPT TO:<rcpt0@d>\r\n",
     {0, 0, 0, 0, 0, 0},
     0},
    {"greeting refused",
     0,
     1,
     1,
     "554 go away\r\n",
     "CLOSE1",
     "",
     {0, 0, 0, 0, 0, 0},
     0},
    {"not SMTP",
     0,
     1,
     1,
     "HTTP/1.1 400 Bad\r\n",
     "CLOSE3",
     "",
     {0, 0, 0, 0, 0, 0},
     0},
    {"multi-line reply changes its code",
     0,
     1,
     1,
     GREET "250-sink\r\n251 odd\r\n",
     "GREETING CLOSE3",
     "EHLO h\r\n",
     {0, 0, 0, 0, 0, 0},
     0},
    {"bare LF line ends tolerated",
     0,
     1,
     0,
     "220 x\n250 y\n221 z\n",
     "GREETING EHLO READY CLOSE0",
     "EHLO h\r\nQUIT\r\n",
     {0, 0, 0, 0, 0, 0},
     0},
    {"421 instead of a greeting",
     0,
     1,
     1,
     "421 4.7.0 busy\r\n",
     "CLOSE2",
     "",
     {0, 0, 0, 0, 0, 0},
     0},
    {"STARTTLS, EHLO again inside; PIPELINING as the second EHLO says",
     1,
     1,
     1,
     GREET EHLO_TLS "220 2.0.0 go ahead\r\n[TLS]" EHLO_PLAIN
                    "250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n221 bye\r\n",
     "GREETING EHLO STARTTLS EHLO READY BODY MSG2 READY CLOSE0",
     "EHLO h\r\nSTARTTLS\r\n[TLS]EHLO h\r\n" TXN1,
     {0, 0, 1, 0, 0, 0},
     1},
    {"STARTTLS, then pipelining inside",
     1,
     1,
     1,
     GREET EHLO_TLS "220 go\r\n[TLS]" EHLO_PIPE
                    "250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n221 bye\r\n",
     "GREETING EHLO STARTTLS EHLO READY BODY MSG2 READY CLOSE0",
     "EHLO h\r\nSTARTTLS\r\n[TLS]EHLO h\r\n" TXN1,
     {0, 0, 1, 0, 0, 0},
     1},
    {"STARTTLS not offered: no plaintext fallback",
     0,
     1,
     1,
     GREET EHLO_PIPE,
     "GREETING EHLO CLOSE4",
     "EHLO h\r\n",
     {0, 0, 0, 0, 0, 0},
     1},
    {"STARTTLS refused",
     0,
     1,
     1,
     GREET EHLO_TLS "454 4.7.0 TLS not available\r\n",
     "GREETING EHLO CLOSE4",
     "EHLO h\r\nSTARTTLS\r\n",
     {0, 0, 0, 0, 0, 0},
     1},
    {"STARTTLS offered but not asked for",
     0,
     1,
     0,
     GREET EHLO_TLS "221 bye\r\n",
     "GREETING EHLO READY CLOSE0",
     "EHLO h\r\nQUIT\r\n",
     {0, 0, 0, 0, 0, 0},
     0},
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
  if (ev == BENCH_CLIENT_EV_MESSAGE) {
    snprintf(name, name_len, "MSG%d", bench_client_result(bc));
  } else if (ev == BENCH_CLIENT_EV_CLOSE) {
    snprintf(name, name_len, "CLOSE%d", (int)bench_client_error(bc));
  } else if (ev == BENCH_CLIENT_EV_STARTTLS) {
    snprintf(name, name_len, "STARTTLS");
  } else {
    snprintf(name, name_len, "%s", names[ev]);
  }
}

/* run feeds the server stream in pieces of `step` octets (0: whole). */
static void run(const struct script *s, size_t step, struct result *res) {
  static const uint8_t body[] = "abc\r\n.\r\n";
  memset(res, 0, sizeof(*res));
  struct bench_client_config cfg = {.helo = "h",
                                    .from = "f@x",
                                    .to_domain = "d",
                                    .num_rcpts = s->rcpts,
                                    .pipelining = s->pipelining,
                                    .starttls = s->starttls,
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
    struct result whole, bytes;
    run(s, 0, &whole);
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
    run(s, 1, &bytes);
    if (strcmp(bytes.events, whole.events) != 0 ||
        strcmp(bytes.out, whole.out) != 0) {
      fail_msg("%s: byte by byte differs\n got: %s\nwant: %s", s->label,
               bytes.events, whole.events);
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

static void test_bad_config(void **state) {
  (void)state;
  struct bench_client bc;
  struct bench_client_config cfg = {
      .helo = "h", .from = "f", .to_domain = "d", .num_rcpts = 0};
  assert_int_equal(bench_client_init(&bc, &cfg), -1);
  cfg.num_rcpts = BENCH_CLIENT_MAX_RCPTS + 1;
  assert_int_equal(bench_client_init(&bc, &cfg), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_scripts),
      cmocka_unit_test(test_make_body),
      cmocka_unit_test(test_starttls_drops_clear_input),
      cmocka_unit_test(test_bad_config),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
