/* Unit tests: proto/http request-head parser, table-driven and split at
 * every byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "proto/http.h"

struct http_case {
  const char *label;
  const char *in;
  enum http_parse_result want;
  const char *method;
  const char *target;
};

static const struct http_case cases[] = {
    {"get crlf", "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_PARSE_DONE,
     "GET", "/metrics"},
    {"head lf", "HEAD /metrics HTTP/1.0\n\n", HTTP_PARSE_DONE, "HEAD",
     "/metrics"},
    {"query", "GET /metrics?x=1 HTTP/1.1\r\n\r\n", HTTP_PARSE_DONE, "GET",
     "/metrics?x=1"},
    {"incomplete", "GET /metrics HTTP/1.1\r\nHost: a\r\n", HTTP_PARSE_NEED_MORE,
     NULL, NULL},
    {"no version", "GET /metrics\r\n\r\n", HTTP_PARSE_ERROR, NULL, NULL},
    {"http2", "GET / HTTP/2.0\r\n\r\n", HTTP_PARSE_ERROR, NULL, NULL},
    {"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
     HTTP_PARSE_ERROR, NULL, NULL},
    {"body announced", "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
     HTTP_PARSE_ERROR, NULL, NULL},
    {"zero length ok", "GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
     HTTP_PARSE_DONE, "GET", "/"},
    {"chunked", "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
     HTTP_PARSE_ERROR, NULL, NULL},
    {"bare cr", "GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", HTTP_PARSE_ERROR, NULL,
     NULL},
    {"empty first line", "\r\n\r\n", HTTP_PARSE_ERROR, NULL, NULL},
};

static void test_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const struct http_case *c = &cases[i];
    struct http_request req;
    enum http_parse_result got = http_request_parse(c->in, strlen(c->in), &req);
    if (got != c->want) {
      fail_msg("%s: got %d, want %d", c->label, got, c->want);
    }
    if (got == HTTP_PARSE_DONE) {
      assert_string_equal(req.method, c->method);
      assert_string_equal(req.target, c->target);
    }
  }
}

/* Every proper prefix of a complete head needs more; the whole parses. */
static void test_every_split(void **state) {
  (void)state;
  const char *in =
      "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n";
  size_t n = strlen(in);
  struct http_request req;
  for (size_t i = 0; i < n; i++) {
    enum http_parse_result got = http_request_parse(in, i, &req);
    if (got != HTTP_PARSE_NEED_MORE) {
      fail_msg("prefix %zu: got %d, want NEED_MORE", i, got);
    }
  }
  assert_int_equal(http_request_parse(in, n, &req), HTTP_PARSE_DONE);
  assert_int_equal(req.head_len, n);
}

static void test_too_large(void **state) {
  (void)state;
  static char big[HTTP_MAX_HEAD + 100];
  memset(big, 'a', sizeof(big));
  memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
  struct http_request req;
  assert_int_equal(http_request_parse(big, sizeof(big), &req),
                   HTTP_PARSE_TOO_LARGE);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_table),
      cmocka_unit_test(test_every_split),
      cmocka_unit_test(test_too_large),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
