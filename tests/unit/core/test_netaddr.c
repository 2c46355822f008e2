/* tests/unit/core/test_netaddr.c — CIDR parsing and matching, host:port
 * and relayhost parsing, address formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "core/netaddr.h"

/* sa_make fills ss with an IPv4 or IPv6 socket address from text. */
static const struct sockaddr *sa_make(struct sockaddr_storage *ss,
                                      const char *ip) {
  memset(ss, 0, sizeof(*ss));
  struct sockaddr_in *sin = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
  if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1) {
    sin->sin_family = AF_INET;
    sin->sin_port = htons(12345);
  } else if (inet_pton(AF_INET6, ip, &sin6->sin6_addr) == 1) {
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(12345);
  } else {
    fail_msg("test bug: bad address %s", ip);
  }
  return (const struct sockaddr *)ss;
}

struct cidr_case {
  const char *label;
  const char *in;
  int want_rc;
  int want_family;
  unsigned want_prefix;
};

static void test_cidr_parse(void **state) {
  static const struct cidr_case cases[] = {
      {"v4 with prefix", "10.0.0.0/8", 0, AF_INET, 8},
      {"v4 host implied /32", "192.0.2.1", 0, AF_INET, 32},
      {"v4 explicit /32", "192.0.2.1/32", 0, AF_INET, 32},
      {"v4 /0", "0.0.0.0/0", 0, AF_INET, 0},
      {"v4 odd prefix", "172.16.0.0/12", 0, AF_INET, 12},
      {"v6 with prefix", "2001:db8::/32", 0, AF_INET6, 32},
      {"v6 host implied /128", "::1", 0, AF_INET6, 128},
      {"v6 bracketed", "[::1]", 0, AF_INET6, 128},
      {"v6 bracketed with prefix", "[2001:db8::]/48", 0, AF_INET6, 48},
      {"v6 /0", "::/0", 0, AF_INET6, 0},
      {"v6 mapped prefix", "::ffff:10.0.0.0/104", 0, AF_INET6, 104},
      {"v4 host bits set", "10.1.2.3/8", -1, 0, 0},
      {"v4 host bits set low", "192.168.1.1/31", -1, 0, 0},
      {"v6 host bits set", "2001:db8::1/32", -1, 0, 0},
      {"v4 prefix too long", "10.0.0.0/33", -1, 0, 0},
      {"v6 prefix too long", "::/129", -1, 0, 0},
      {"empty", "", -1, 0, 0},
      {"empty prefix", "10.0.0.0/", -1, 0, 0},
      {"negative prefix", "10.0.0.0/-8", -1, 0, 0},
      {"plus prefix", "10.0.0.0/+8", -1, 0, 0},
      {"leading zero prefix", "10.0.0.0/08", -1, 0, 0},
      {"two slashes", "10.0.0.0/8/8", -1, 0, 0},
      {"hex prefix", "10.0.0.0/0x8", -1, 0, 0},
      {"trailing space", "10.0.0.0/8 ", -1, 0, 0},
      {"short v4", "10.0.0/24", -1, 0, 0},
      {"v4 octet too large", "256.0.0.0/8", -1, 0, 0},
      {"v4 in brackets", "[10.0.0.0]/8", -1, 0, 0},
      {"unpaired bracket", "[::1/128", -1, 0, 0},
      {"name", "localhost", -1, 0, 0},
      {"zone id", "fe80::1%eth0", -1, 0, 0},
      {"too long", "0000:0000:0000:0000:0000:0000:0000:0000:0000:0000/128", -1,
       0, 0},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const struct cidr_case *tc = &cases[i];
    struct cidr c;
    memset(&c, 0, sizeof(c));
    int rc = cidr_parse(tc->in, &c);
    if (rc != tc->want_rc) {
      fail_msg("%s: cidr_parse(\"%s\") = %d, want %d", tc->label, tc->in, rc,
               tc->want_rc);
    }
    if (rc == 0 &&
        (c.family != tc->want_family || c.prefix != tc->want_prefix)) {
      fail_msg("%s: got family %d prefix %u, want %d /%u", tc->label, c.family,
               c.prefix, tc->want_family, tc->want_prefix);
    }
  }
}

struct match_case {
  const char *label;
  const char *cidr;
  const char *addr;
  int want;
};

static void test_cidr_match(void **state) {
  static const struct match_case cases[] = {
      {"v4 inside", "10.0.0.0/8", "10.255.1.2", 1},
      {"v4 outside", "10.0.0.0/8", "11.0.0.1", 0},
      {"v4 /12 edge in", "172.16.0.0/12", "172.31.255.255", 1},
      {"v4 /12 edge out", "172.16.0.0/12", "172.32.0.0", 0},
      {"v4 /32 same", "192.0.2.1", "192.0.2.1", 1},
      {"v4 /32 other", "192.0.2.1", "192.0.2.2", 0},
      {"v4 /0 any", "0.0.0.0/0", "203.0.113.9", 1},
      {"v4 loopback", "127.0.0.0/8", "127.0.0.1", 1},
      {"v6 inside", "2001:db8::/32", "2001:db8:1::5", 1},
      {"v6 outside", "2001:db8::/32", "2001:db9::1", 0},
      {"v6 /127 odd bit", "2001:db8::/127", "2001:db8::1", 1},
      {"v6 /127 outside", "2001:db8::/127", "2001:db8::2", 0},
      {"v6 loopback", "::1", "::1", 1},
      {"v6 /0 any v6", "::/0", "2001:db8::1", 1},
      {"mapped matches v4 prefix", "127.0.0.0/8", "::ffff:127.0.0.1", 1},
      {"mapped outside v4 prefix", "10.0.0.0/8", "::ffff:192.0.2.1", 0},
      {"mapped v4 /32", "192.0.2.1", "::ffff:192.0.2.1", 1},
      {"compat-looking v6 not mapped", "127.0.0.0/8", "::127.0.0.1", 0},
      {"v6 prefix vs v4 client", "::/0", "127.0.0.1", 0},
      {"v4 prefix vs v6 client", "0.0.0.0/0", "::1", 0},
      {"v6 mapped prefix vs mapped", "::ffff:10.0.0.0/104", "::ffff:10.1.2.3",
       1},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const struct match_case *tc = &cases[i];
    struct cidr c;
    struct sockaddr_storage ss;
    if (cidr_parse(tc->cidr, &c) != 0) {
      fail_msg("%s: test bug: cidr %s", tc->label, tc->cidr);
    }
    int got = cidr_match(&c, sa_make(&ss, tc->addr));
    if (got != tc->want) {
      fail_msg("%s: cidr_match(%s, %s) = %d, want %d", tc->label, tc->cidr,
               tc->addr, got, tc->want);
    }
  }
}

static void test_cidr_match_other_family(void **state) {
  struct cidr c;
  assert_int_equal(cidr_parse("0.0.0.0/0", &c), 0);
  struct sockaddr unix_sa;
  memset(&unix_sa, 0, sizeof(unix_sa));
  unix_sa.sa_family = AF_UNIX;
  assert_int_equal(cidr_match(&c, &unix_sa), 0);
  assert_int_equal(cidr_match(&c, NULL), 0);
}

struct hostport_case {
  const char *label;
  const char *in;
  int want_rc;
  const char *want_host;
  unsigned want_port;
};

static void test_hostport_parse(void **state) {
  static const struct hostport_case cases[] = {
      {"v4", "127.0.0.1:2525", 0, "127.0.0.1", 2525},
      {"v6 bracketed", "[::1]:25", 0, "::1", 25},
      {"wildcard", ":587", 0, "", 587},
      {"name", "mail.example.com:25", 0, "mail.example.com", 25},
      {"max port", "0.0.0.0:65535", 0, "0.0.0.0", 65535},
      {"v4 bracketed", "[127.0.0.1]:25", 0, "127.0.0.1", 25},
      {"v6 wildcard", "[::]:25", 0, "::", 25},
      {"no port", "127.0.0.1", -1, NULL, 0},
      {"empty port", "127.0.0.1:", -1, NULL, 0},
      {"port zero", "127.0.0.1:0", -1, NULL, 0},
      {"port too large", "127.0.0.1:65536", -1, NULL, 0},
      {"port not numeric", "127.0.0.1:smtp", -1, NULL, 0},
      {"port signed", "127.0.0.1:+25", -1, NULL, 0},
      {"port leading zero", "127.0.0.1:025", -1, NULL, 0},
      {"v6 unbracketed", "::1:25", -1, NULL, 0},
      {"unclosed bracket", "[::1:25", -1, NULL, 0},
      {"junk after bracket", "[::1]x:25", -1, NULL, 0},
      {"bracket without port", "[::1]", -1, NULL, 0},
      {"empty brackets", "[]:25", -1, NULL, 0},
      {"bad v6", "[::g]:25", -1, NULL, 0},
      {"bad name", "mail_host:25", -1, NULL, 0},
      {"label starts with hyphen", "-mail.example:25", -1, NULL, 0},
      {"empty", "", -1, NULL, 0},
      {"space", "127.0.0.1 :25", -1, NULL, 0},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const struct hostport_case *tc = &cases[i];
    char host[64] = "unchanged";
    uint16_t port = 0;
    int rc = hostport_parse(tc->in, host, sizeof(host), &port);
    if (rc != tc->want_rc) {
      fail_msg("%s: hostport_parse(\"%s\") = %d, want %d", tc->label, tc->in,
               rc, tc->want_rc);
    }
    if (rc == 0 &&
        (strcmp(host, tc->want_host) != 0 || port != tc->want_port)) {
      fail_msg("%s: got host \"%s\" port %u, want \"%s\" %u", tc->label, host,
               port, tc->want_host, tc->want_port);
    }
  }
}

static void test_hostport_host_too_long(void **state) {
  char host[8];
  uint16_t port;
  assert_int_equal(hostport_parse("1234567:25", host, sizeof(host), &port), 0);
  assert_string_equal(host, "1234567");
  if (hostport_parse("12345678:25", host, sizeof(host), &port) != -1) {
    fail_msg("host of 8 bytes in an 8-byte buffer: got 0, want -1");
  }
}

struct relayhost_case {
  const char *label;
  const char *in;
  int want_rc;
  const char *want_host;
  unsigned want_port;
  int want_no_mx;
};

static void test_relayhost_parse(void **state) {
  static const struct relayhost_case cases[] = {
      {"bracketed name with port", "[smtp.example.com]:587", 0,
       "smtp.example.com", 587, 1},
      {"bracketed name", "[smtp.example.com]", 0, "smtp.example.com", 25, 1},
      {"name with port", "example.com:2525", 0, "example.com", 2525, 0},
      {"name", "example.com", 0, "example.com", 25, 0},
      {"bracketed v4", "[192.0.2.1]", 0, "192.0.2.1", 25, 1},
      {"bracketed v6 with port", "[2001:db8::1]:26", 0, "2001:db8::1", 26, 1},
      {"empty", "", -1, NULL, 0, 0},
      {"empty brackets", "[]", -1, NULL, 0, 0},
      {"wildcard host", ":25", -1, NULL, 0, 0},
      {"bare v6", "2001:db8::1", -1, NULL, 0, 0},
      {"bad port", "[example.com]:x", -1, NULL, 0, 0},
      {"junk after bracket", "[example.com]25", -1, NULL, 0, 0},
      {"bad name", "exa mple.com", -1, NULL, 0, 0},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const struct relayhost_case *tc = &cases[i];
    char host[256];
    uint16_t port = 0;
    int no_mx = -1;
    int rc = relayhost_parse(tc->in, host, sizeof(host), &port, &no_mx);
    if (rc != tc->want_rc) {
      fail_msg("%s: relayhost_parse(\"%s\") = %d, want %d", tc->label, tc->in,
               rc, tc->want_rc);
    }
    if (rc == 0 && (strcmp(host, tc->want_host) != 0 || port != tc->want_port ||
                    no_mx != tc->want_no_mx)) {
      fail_msg("%s: got \"%s\" %u no_mx=%d, want \"%s\" %u no_mx=%d", tc->label,
               host, port, no_mx, tc->want_host, tc->want_port, tc->want_no_mx);
    }
  }
}

struct hostname_case {
  const char *label;
  const char *in;
  int want;
};

static void test_hostname_valid(void **state) {
  char long_label[80];
  memset(long_label, 'a', 64);
  long_label[64] = '\0';
  char long_name[300];
  for (size_t i = 0; i < 254; i++) {
    long_name[i] = (i % 2) ? '.' : 'a';
  }
  long_name[253] = 'a';
  long_name[254] = '\0';
  const struct hostname_case cases[] = {
      {"simple", "mail.example.com", 1},
      {"single label", "localhost", 1},
      {"trailing dot", "example.com.", 1},
      {"digits and hyphen", "mx-1.example0.net", 1},
      {"upper case", "MAIL.Example.COM", 1},
      {"empty", "", 0},
      {"only dot", ".", 0},
      {"leading dot", ".example.com", 0},
      {"double dot", "a..b", 0},
      {"underscore", "a_b.example", 0},
      {"label starts with hyphen", "a.-b.example", 0},
      {"label ends with hyphen", "a-.example", 0},
      {"64-octet label", long_label, 0},
      {"254-octet name", long_name, 0},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int got = netaddr_hostname_valid(cases[i].in);
    if (got != cases[i].want) {
      fail_msg("%s: netaddr_hostname_valid(\"%s\") = %d, want %d",
               cases[i].label, cases[i].in, got, cases[i].want);
    }
  }
}

struct format_case {
  const char *label;
  const char *addr;
  const char *want;
};

static void test_sockaddr_format(void **state) {
  static const struct format_case cases[] = {
      {"v4", "192.0.2.1", "192.0.2.1"},
      {"v6 loopback", "::1", "::1"},
      {"v6", "2001:db8::5", "2001:db8::5"},
      {"mapped shown as v4", "::ffff:127.0.0.1", "127.0.0.1"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct sockaddr_storage ss;
    char out[64];
    int rc = sockaddr_format(sa_make(&ss, cases[i].addr), out, sizeof(out));
    if (rc != 0 || strcmp(out, cases[i].want) != 0) {
      fail_msg("%s: sockaddr_format = %d \"%s\", want 0 \"%s\"", cases[i].label,
               rc, rc == 0 ? out : "", cases[i].want);
    }
  }
}

static void test_sockaddr_format_errors(void **state) {
  struct sockaddr_storage ss;
  char small[4];
  assert_int_equal(
      sockaddr_format(sa_make(&ss, "192.0.2.1"), small, sizeof(small)), -1);
  struct sockaddr unix_sa;
  memset(&unix_sa, 0, sizeof(unix_sa));
  unix_sa.sa_family = AF_UNIX;
  char out[64];
  assert_int_equal(sockaddr_format(&unix_sa, out, sizeof(out)), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cidr_parse),
      cmocka_unit_test(test_cidr_match),
      cmocka_unit_test(test_cidr_match_other_family),
      cmocka_unit_test(test_hostport_parse),
      cmocka_unit_test(test_hostport_host_too_long),
      cmocka_unit_test(test_relayhost_parse),
      cmocka_unit_test(test_hostname_valid),
      cmocka_unit_test(test_sockaddr_format),
      cmocka_unit_test(test_sockaddr_format_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
