/* tests/unit/proto/test_smtp_addr.c — RFC 5321 paths, xtext, UTF-8. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "proto/smtp_addr.h"

#define A10 "aaaaaaaaaa"
#define A60 A10 A10 A10 A10 A10 A10
#define L63 A60 "bbb"
#define L64 A60 "bbbb"

/* Flags in the want column: n null, p postmaster, r source route, u UTF-8,
 * m shell metacharacter. */
struct path_case {
  const char *name;
  const char *in;
  enum smtp_addr_status want;
  const char *want_mailbox; /* on OK */
  const char *want_flags;
  size_t want_consumed; /* 0: whole input */
};

static const struct path_case path_cases[] = {
    {"plain", "<user@example.org>", SMTP_ADDR_OK, "user@example.org", "", 0},
    {"null path", "<>", SMTP_ADDR_OK, "", "n", 0},
    {"postmaster", "<Postmaster>", SMTP_ADDR_OK, "Postmaster", "p", 0},
    {"postmaster lower", "<postmaster>", SMTP_ADDR_OK, "postmaster", "p", 0},
    {"other bare local", "<root>", SMTP_ADDR_SYNTAX, NULL, "", 0},
    {"dots", "<first.last@sub.example.org>", SMTP_ADDR_OK,
     "first.last@sub.example.org", "", 0},
    {"atext specials", "<a!#%&'*+-/=?^_{}~@x.org>", SMTP_ADDR_OK,
     "a!#%&'*+-/=?^_{}~@x.org", "", 0},
    {"percent hack", "<u%ext.example@ours.example>", SMTP_ADDR_OK,
     "u%ext.example@ours.example", "", 0},
    {"quoted at", "<\"u@ext.example\"@ours.example>", SMTP_ADDR_OK,
     "\"u@ext.example\"@ours.example", "", 0},
    {"quoted space and pair", "<\"a b\\\"c\"@x.org>", SMTP_ADDR_OK,
     "\"a b\\\"c\"@x.org", "", 0},
    {"quoted empty", "<\"\"@x.org>", SMTP_ADDR_OK, "\"\"@x.org", "", 0},
    {"source route one", "<@ours.example:u@ext.example>", SMTP_ADDR_OK,
     "u@ext.example", "r", 0},
    {"source route two", "<@a.example,@b.example:u@c.example>", SMTP_ADDR_OK,
     "u@c.example", "r", 0},
    {"source route bad", "<@a.example;u@c.example>", SMTP_ADDR_SYNTAX, NULL, "",
     0},
    {"source route literal", "<@[1.2.3.4]:u@c.example>", SMTP_ADDR_SYNTAX, NULL,
     "", 0},
    {"ipv4 literal", "<u@[192.0.2.1]>", SMTP_ADDR_OK, "u@[192.0.2.1]", "", 0},
    {"ipv6 literal", "<u@[IPv6:2001:db8::1]>", SMTP_ADDR_OK,
     "u@[IPv6:2001:db8::1]", "", 0},
    {"ipv6 tag lower", "<u@[ipv6:::1]>", SMTP_ADDR_OK, "u@[ipv6:::1]", "", 0},
    {"bad ipv4", "<u@[300.1.1.1]>", SMTP_ADDR_SYNTAX, NULL, "", 0},
    {"ipv6 without tag", "<u@[2001:db8::1]>", SMTP_ADDR_SYNTAX, NULL, "", 0},
    {"general literal", "<u@[x-tag:abc]>", SMTP_ADDR_SYNTAX, NULL, "", 0},
    {"unterminated literal", "<u@[1.2.3.4>", SMTP_ADDR_SYNTAX, NULL, "", 0},
    {"trailing params", "<a@b.org> SIZE=1", SMTP_ADDR_OK, "a@b.org", "", 9},
    {"no brackets", "a@b.org", SMTP_ADDR_SYNTAX, NULL, "", 0},
    {"no close", "<a@b.org", SMTP_ADDR_SYNTAX, NULL, "", 0},
    {"no domain", "<a@>", SMTP_ADDR_SYNTAX, NULL, "", 0},
    {"no local", "<@b.org>", SMTP_ADDR_SYNTAX, NULL, "", 0},
    {"double at", "<a@@b.org>", SMTP_ADDR_SYNTAX, NULL, "", 0},
    {"leading dot", "<.a@b.org>", SMTP_ADDR_SYNTAX, NULL, "", 0},
    {"double dot", "<a..b@b.org>", SMTP_ADDR_SYNTAX, NULL, "", 0},
    {"trailing dot local", "<a.@b.org>", SMTP_ADDR_SYNTAX, NULL, "", 0},
    {"trailing dot domain", "<a@b.org.>", SMTP_ADDR_SYNTAX, NULL, "", 0},
    {"hyphen label start", "<a@-b.org>", SMTP_ADDR_SYNTAX, NULL, "", 0},
    {"hyphen label end", "<a@b-.org>", SMTP_ADDR_SYNTAX, NULL, "", 0},
    {"hyphen inside", "<a@b-c.org>", SMTP_ADDR_OK, "a@b-c.org", "", 0},
    {"underscore domain", "<a@b_c.org>", SMTP_ADDR_SYNTAX, NULL, "", 0},
    {"space in local", "<a b@c.org>", SMTP_ADDR_SYNTAX, NULL, "", 0},
    {"comma in local", "<a,b@c.org>", SMTP_ADDR_SYNTAX, NULL, "", 0},
    {"control in quotes", "<\"a\x01\"@c.org>", SMTP_ADDR_SYNTAX, NULL, "", 0},
    {"unterminated quote", "<\"abc@c.org>", SMTP_ADDR_SYNTAX, NULL, "", 0},
    {"backtick", "<a`id`@c.org>", SMTP_ADDR_OK, "a`id`@c.org", "m", 0},
    {"dollar", "<$HOME@c.org>", SMTP_ADDR_OK, "$HOME@c.org", "m", 0},
    {"pipe quoted", "<\"|cmd\"@c.org>", SMTP_ADDR_OK, "\"|cmd\"@c.org", "m", 0},
    {"utf8 local", "<j\xc3\xb6rg@example.org>", SMTP_ADDR_OK,
     "j\xc3\xb6rg@example.org", "u", 0},
    {"utf8 domain",
     "<u@b\xc3\xbc"
     "cher.example>",
     SMTP_ADDR_OK,
     "u@b\xc3\xbc"
     "cher.example",
     "u", 0},
    {"utf8 overlong", "<\xc0\xafx@example.org>", SMTP_ADDR_SYNTAX, NULL, "", 0},
    {"utf8 surrogate", "<\xed\xa0\x80@example.org>", SMTP_ADDR_SYNTAX, NULL, "",
     0},
    {"utf8 truncated", "<\xc3@example.org>", SMTP_ADDR_SYNTAX, NULL, "", 0},
    {"label 63", "<a@" L63 ".org>", SMTP_ADDR_OK, "a@" L63 ".org", "", 0},
    {"label 64", "<a@" L64 ".org>", SMTP_ADDR_SYNTAX, NULL, "", 0},
    {"local 64", "<" L64 "@x.org>", SMTP_ADDR_OK, L64 "@x.org", "", 0},
    {"local 65", "<" L64 "c@x.org>", SMTP_ADDR_TOO_LONG, NULL, "", 0},
    /* 1 + 64 + 1 + 189 + 1 = 256 octets: the longest path */
    {"path 256", "<" L64 "@" L63 "." L63 "." A60 "a>", SMTP_ADDR_OK,
     L64 "@" L63 "." L63 "." A60 "a", "", 0},
    {"path 257", "<" L64 "@" L63 "." L63 "." A60 "aa>", SMTP_ADDR_TOO_LONG,
     NULL, "", 0},
    {"domain 259", "<a@" L63 "." L63 "." L63 "." L63 ".abcdef>",
     SMTP_ADDR_TOO_LONG, NULL, "", 0},
};

static void check_flags(const char *name, const struct smtp_addr_path *a,
                        const char *want) {
  char got[8];
  size_t n = 0;
  if (a->null_path) {
    got[n++] = 'n';
  }
  if (a->postmaster) {
    got[n++] = 'p';
  }
  if (a->source_route) {
    got[n++] = 'r';
  }
  if (a->has_utf8) {
    got[n++] = 'u';
  }
  if (a->shell_meta) {
    got[n++] = 'm';
  }
  got[n] = '\0';
  if (strcmp(got, want) != 0) {
    fail_msg("%s: flags got \"%s\" want \"%s\"", name, got, want);
  }
}

static void test_parse_path(void **state) {
  for (size_t i = 0; i < sizeof(path_cases) / sizeof(path_cases[0]); i++) {
    const struct path_case *c = &path_cases[i];
    struct smtp_addr_path a;
    size_t used = 99;
    size_t len = strlen(c->in);
    enum smtp_addr_status st =
        smtp_addr_parse_path(&a, &used, (const uint8_t *)c->in, len);
    if (st != c->want) {
      fail_msg("%s: status got %d want %d", c->name, st, c->want);
    }
    if (st != SMTP_ADDR_OK) {
      continue;
    }
    size_t want_used = c->want_consumed ? c->want_consumed : len;
    if (used != want_used) {
      fail_msg("%s: consumed got %zu want %zu", c->name, used, want_used);
    }
    if (a.mailbox_len != strlen(c->want_mailbox) ||
        memcmp(a.mailbox, c->want_mailbox, a.mailbox_len) != 0) {
      fail_msg("%s: mailbox got \"%.*s\" want \"%s\"", c->name,
               (int)a.mailbox_len, a.mailbox, c->want_mailbox);
    }
    check_flags(c->name, &a, c->want_flags);
  }
}

/* Every prefix of a valid path is incomplete, never accepted. */
static void test_parse_path_prefixes(void **state) {
  for (size_t i = 0; i < sizeof(path_cases) / sizeof(path_cases[0]); i++) {
    const struct path_case *c = &path_cases[i];
    if (c->want != SMTP_ADDR_OK || c->want_consumed) {
      continue;
    }
    for (size_t k = 0; k < strlen(c->in); k++) {
      struct smtp_addr_path a;
      size_t used;
      if (smtp_addr_parse_path(&a, &used, (const uint8_t *)c->in, k) ==
          SMTP_ADDR_OK) {
        fail_msg("%s: prefix of %zu octets accepted", c->name, k);
      }
    }
  }
}

struct xtext_case {
  const char *name;
  const char *in;
  long want_len; /* -1: rejected */
  const char *want;
};

static const struct xtext_case xtext_cases[] = {
    {"plain", "abc123", 6, "abc123"},
    {"empty", "", 0, ""},
    {"plus", "a+2Bb", 3, "a+b"},
    {"equals", "a+3Db", 3, "a=b"},
    {"at", "user+40example.org", 16, "user@example.org"},
    {"lower hex", "a+2bb", -1, NULL},
    {"short hex", "a+2", -1, NULL},
    {"bare plus", "a+", -1, NULL},
    {"raw equals", "a=b", -1, NULL},
    {"space", "a b", -1, NULL},
    {"control decoded", "a+0Ab", -1, NULL},
    {"nul decoded", "a+00", -1, NULL},
    {"high decoded", "a+C3", -1, NULL},
    {"high raw", "a\xc3\xb6", -1, NULL},
};

static void test_xtext(void **state) {
  for (size_t i = 0; i < sizeof(xtext_cases) / sizeof(xtext_cases[0]); i++) {
    const struct xtext_case *c = &xtext_cases[i];
    char out[64];
    long n = smtp_addr_xtext_decode(out, sizeof(out), (const uint8_t *)c->in,
                                    strlen(c->in));
    if (n != c->want_len) {
      fail_msg("%s: length got %ld want %ld", c->name, n, c->want_len);
    }
    if (n >= 0 && strcmp(out, c->want) != 0) {
      fail_msg("%s: got \"%s\" want \"%s\"", c->name, out, c->want);
    }
  }
  char small[3];
  if (smtp_addr_xtext_decode(small, sizeof(small), (const uint8_t *)"abc", 3) !=
      -1) {
    fail_msg("short output buffer: got success, want -1");
  }
}

struct utf8_case {
  const char *name;
  const char *in;
  size_t want;
};

static const struct utf8_case utf8_cases[] = {
    {"2 octets", "\xc3\xb6", 2},
    {"3 octets", "\xe2\x82\xac", 3},
    {"4 octets", "\xf0\x9f\x98\x80", 4},
    {"max", "\xf4\x8f\xbf\xbf", 4},
    {"above max", "\xf4\x90\x80\x80", 0},
    {"overlong 2", "\xc1\xbf", 0},
    {"overlong 3", "\xe0\x9f\xbf", 0},
    {"overlong 4", "\xf0\x8f\xbf\xbf", 0},
    {"surrogate", "\xed\xa0\x80", 0},
    {"continuation", "\x80", 0},
    {"truncated", "\xe2\x82", 0},
    {"bad continuation", "\xe2\x28\xa1", 0},
};

static void test_utf8(void **state) {
  for (size_t i = 0; i < sizeof(utf8_cases) / sizeof(utf8_cases[0]); i++) {
    const struct utf8_case *c = &utf8_cases[i];
    size_t got = smtp_addr_utf8_len((const uint8_t *)c->in, strlen(c->in));
    if (got != c->want) {
      fail_msg("%s: got %zu want %zu", c->name, got, c->want);
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_path),
      cmocka_unit_test(test_parse_path_prefixes),
      cmocka_unit_test(test_xtext),
      cmocka_unit_test(test_utf8),
  };
  return cmocka_run_group_tests_name("smtp_addr", tests, NULL, NULL);
}
