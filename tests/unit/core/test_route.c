/* tests/unit/core/test_route.c — transport specs and the domain table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "core/route.h"

static void check_spec(const char *spec, enum route_kind kind, const char *host,
                       uint16_t port, const char *path, const char *canon) {
  struct route r;
  char err[200] = "", text[600];
  if (route_parse(spec, &r, err, sizeof(err)) != 0) {
    fail_msg("%s: %s", spec, err);
  }
  assert_int_equal(r.kind, kind);
  assert_string_equal(r.host, host);
  assert_int_equal(r.port, port);
  assert_string_equal(r.path, path);
  route_format(&r, text, sizeof(text));
  assert_string_equal(text, canon);
}

static void test_route_parse(void **state) {
  (void)state;
  check_spec("smtp:", ROUTE_SMTP_MX, "", 25, "", "smtp:");
  check_spec("smtp:mx.example.com", ROUTE_SMTP_MX, "mx.example.com", 25, "",
             "smtp:mx.example.com");
  check_spec("smtp:relay.example:587", ROUTE_SMTP_MX, "relay.example", 587, "",
             "smtp:relay.example:587");
  check_spec("smtp:[10.0.0.5]", ROUTE_SMTP_HOST, "10.0.0.5", 25, "",
             "smtp:[10.0.0.5]:25");
  check_spec("smtp:[::1]:2526", ROUTE_SMTP_HOST, "::1", 2526, "",
             "smtp:[::1]:2526");
  check_spec("lmtp:127.0.0.1:24", ROUTE_LMTP_TCP, "127.0.0.1", 24, "",
             "lmtp:127.0.0.1:24");
  check_spec("lmtp:[::1]:2424", ROUTE_LMTP_TCP, "::1", 2424, "",
             "lmtp:[::1]:2424");
  check_spec("lmtp:dovecot.internal", ROUTE_LMTP_TCP, "dovecot.internal", 24,
             "", "lmtp:dovecot.internal:24");
  check_spec("lmtp:unix:/run/dovecot/lmtp", ROUTE_LMTP_UNIX, "", 0,
             "/run/dovecot/lmtp", "lmtp:unix:/run/dovecot/lmtp");
  check_spec("maildir:/var/mail/%d/%u/", ROUTE_MAILDIR, "", 0,
             "/var/mail/%d/%u/", "maildir:/var/mail/%d/%u/");
  check_spec("error:5.7.1 no mail here", ROUTE_ERROR, "", 0,
             "5.7.1 no mail here", "error:5.7.1 no mail here");
}

static void test_route_parse_errors(void **state) {
  (void)state;
  const char *bad[] = {
      "",
      "smtp",
      "ftp:host",
      "smtp:host:0",
      "smtp:[host",
      "smtp:bad_host",
      "lmtp:unix:relative",
      "maildir:",
      "maildir:/var/mail/%x",
      "lmtp:host:99999",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    struct route r;
    char err[200] = "";
    if (route_parse(bad[i], &r, err, sizeof(err)) == 0) {
      fail_msg("accepted %s", bad[i]);
    }
    assert_true(err[0] != '\0');
  }
}

static void test_route_table(void **state) {
  (void)state;
  const char *lines[] = {
      "example.com    lmtp:127.0.0.1:24",       ".example.com smtp:[10.0.0.1]",
      ".sub.example.com\tsmtp:[10.0.0.2]:2525", "*  smtp:[10.0.0.9]",
      "Local.Test maildir:/tmp/mail/%d/%u",
  };
  struct route_entry t[5];
  char err[200];
  for (size_t i = 0; i < 5; i++) {
    if (route_entry_parse(lines[i], &t[i], err, sizeof(err)) != 0) {
      fail_msg("%s: %s", lines[i], err);
    }
  }
  assert_ptr_equal(route_table_lookup(t, 5, "EXAMPLE.com"), &t[0]);
  assert_ptr_equal(route_table_lookup(t, 5, "a.example.com"), &t[1]);
  assert_ptr_equal(route_table_lookup(t, 5, "x.sub.example.com"), &t[2]);
  assert_ptr_equal(route_table_lookup(t, 5, "sub.example.com"), &t[1]);
  assert_ptr_equal(route_table_lookup(t, 5, "other.org"), &t[3]);
  assert_ptr_equal(route_table_lookup(t, 5, "local.test."), &t[4]);
  assert_ptr_equal(route_table_lookup(t, 4, "badexample.com"), &t[3]);
  assert_null(route_table_lookup(t, 3, "badexample.com"));

  struct route_entry e;
  assert_int_equal(route_entry_parse("example.com", &e, err, sizeof(err)), -1);
  assert_int_equal(route_entry_parse("ex ample smtp:", &e, err, sizeof(err)),
                   -1);
  assert_int_equal(route_entry_parse("a..b smtp:", &e, err, sizeof(err)), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_route_parse),
      cmocka_unit_test(test_route_parse_errors),
      cmocka_unit_test(test_route_table),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
