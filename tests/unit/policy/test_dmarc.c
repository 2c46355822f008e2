/* Unit tests: policy/dmarc — the DMARC record (RFC 7489 §6.3, §6.4,
 * §6.6.3): good and bad records, every prefix; the Public Suffix List
 * and organisational domains (§3.2) against the real list, wildcards,
 * exceptions and U-label rules; alignment (§3.1); the From domain
 * (§6.6.1); evaluation (§6.6: p, sp, pct, errors); the aggregate report
 * (§7.2, Appendix C), its file name (§7.2.1.1), rua URIs and the
 * external destination check (§7.1).
 *
 * Table-driven with labelled cases; parsers are also run on every prefix
 * of their inputs, each copied to an exact-size heap block so a read
 * past the end shows under ASan.
 *
 * "test_dmarc --sample-report FILE" writes a sample aggregate report
 * (several rows, IPv4 and IPv6 sources, text needing escapes) to FILE
 * and exits: tests/integration/test_dmarc_report_schema.py validates it
 * against the RFC's schema with xmllint. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "policy/dmarc.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static struct dmarc_psl *g_psl; /* the real list, loaded once */

static int psl_setup(void **state) {
  (void)state;
  char err[256];
  g_psl = dmarc_psl_load(DMARC_PSL_DEFAULT, err, sizeof(err));
  if (g_psl == NULL) {
    fprintf(stderr, "PSL: %s\n", err);
    return -1;
  }
  return 0;
}

static int psl_teardown(void **state) {
  (void)state;
  dmarc_psl_free(g_psl);
  return 0;
}

/* ---- records ---- */

/* rec_text writes the parsed record as one line, for comparison. */
static void rec_text(const struct dmarc_record *r, char *out, size_t len) {
  size_t n = (size_t)snprintf(
      out, len, "p=%s sp=%s pct=%u adkim=%c aspf=%c ri=%u fo=%s%s",
      dmarc_policy_name(r->p), dmarc_policy_name(r->sp), r->pct,
      r->adkim_strict ? 's' : 'r', r->aspf_strict ? 's' : 'r', r->ri, r->fo,
      r->p_invalid ? " invalid" : "");
  for (size_t i = 0; i < r->num_rua && n < len; i++) {
    n += (size_t)snprintf(out + n, len - n, " rua=%s", r->rua[i]);
    if (r->rua_max[i] != 0) {
      n += (size_t)snprintf(out + n, len - n, "!%llu",
                            (unsigned long long)r->rua_max[i]);
    }
  }
  for (size_t i = 0; i < r->num_ruf && n < len; i++) {
    n += (size_t)snprintf(out + n, len - n, " ruf=%s", r->ruf[i]);
  }
}

#define DEF " pct=100 adkim=r aspf=r ri=86400 fo=0"

struct rec_case {
  const char *label;
  const char *rec;
  const char *want;      /* rec_text, or NULL: an error */
  const char *want_note; /* a substring of the note or error, or NULL */
};

static const struct rec_case rec_cases[] = {
    {"rfc example", "v=DMARC1; p=none; rua=mailto:dmarc-feedback@example.com",
     "p=none sp=none" DEF " rua=mailto:dmarc-feedback@example.com", NULL},
    {"every tag",
     "v=DMARC1; p=reject; sp=quarantine; pct=50; adkim=s; aspf=s; ri=3600; "
     "fo=1:d; rf=afrf; rua=mailto:a@x.test; ruf=mailto:f@x.test",
     "p=reject sp=quarantine pct=50 adkim=s aspf=s ri=3600 fo=1:d "
     "rua=mailto:a@x.test ruf=mailto:f@x.test",
     NULL},
    {"no sp: sp is p", "v=DMARC1; p=quarantine",
     "p=quarantine sp=quarantine" DEF, NULL},
    {"tag names and keywords in any case",
     "V=DMARC1; P=REJECT; SP=None; ADKIM=S; Aspf=S; FO=D",
     "p=reject sp=none pct=100 adkim=s aspf=s ri=86400 fo=d", NULL},
    {"blanks around = and ;, final ;", "v = DMARC1 ;\tp = reject ; pct = 20 ; ",
     "p=reject sp=reject pct=20 adkim=r aspf=r ri=86400 fo=0", NULL},
    {"unknown tags ignored", "v=DMARC1; p=none; np=reject; x_y=1; psd=n; t=y",
     "p=none sp=none" DEF, NULL},
    {"p not second", "v=DMARC1; rua=mailto:a@x.test; p=reject",
     "p=reject sp=reject" DEF " rua=mailto:a@x.test", NULL},
    {"pct 0", "v=DMARC1; p=reject; pct=0",
     "p=reject sp=reject pct=0 adkim=r aspf=r ri=86400 fo=0", NULL},
    {"pct over 100 is 100", "v=DMARC1; p=reject; pct=150",
     "p=reject sp=reject" DEF, "pct=150 invalid"},
    {"pct not a number is 100", "v=DMARC1; p=reject; pct=abc",
     "p=reject sp=reject" DEF, "pct=abc invalid"},
    {"pct negative is 100", "v=DMARC1; p=reject; pct=-5",
     "p=reject sp=reject" DEF, "pct"},
    {"pct of 4 digits is 100", "v=DMARC1; p=reject; pct=0050",
     "p=reject sp=reject" DEF, "pct"},
    {"pct with a fraction is 100", "v=DMARC1; p=reject; pct=50.5",
     "p=reject sp=reject" DEF, "pct"},
    {"bad adkim is r", "v=DMARC1; p=none; adkim=x; aspf=strict",
     "p=none sp=none" DEF, "adkim invalid"},
    {"bad ri is the default", "v=DMARC1; p=none; ri=99999999999",
     "p=none sp=none" DEF, "ri invalid"},
    {"bad fo is 0", "v=DMARC1; p=none; fo=2", "p=none sp=none" DEF,
     "fo invalid"},
    {"fo list with blanks", "v=DMARC1; p=none; fo=0 : 1 : s",
     "p=none sp=none pct=100 adkim=r aspf=r ri=86400 fo=0:1:s", NULL},
    {"rua sizes",
     "v=DMARC1; p=none; rua=mailto:a@x.test!10m , mailto:b@y.test!500,"
     "mailto:c@z.test!1K,mailto:d@w.test",
     "p=none sp=none" DEF " rua=mailto:a@x.test!10485760 "
     "rua=mailto:b@y.test!500 rua=mailto:c@z.test!1024 rua=mailto:d@w.test",
     NULL},
    {"bad URIs dropped",
     "v=DMARC1; p=none; rua=a@x.test,mailto:b@x.test!10x,mailto:c@x.test!,"
     "mailto:d@x.test",
     "p=none sp=none" DEF " rua=mailto:d@x.test", "malformed URI"},
    {"nine rua: eight kept",
     "v=DMARC1; p=none; rua=mailto:a1@x.test,mailto:a2@x.test,"
     "mailto:a3@x.test,mailto:a4@x.test,mailto:a5@x.test,mailto:a6@x.test,"
     "mailto:a7@x.test,mailto:a8@x.test,mailto:a9@x.test",
     "p=none sp=none" DEF " rua=mailto:a1@x.test rua=mailto:a2@x.test "
     "rua=mailto:a3@x.test rua=mailto:a4@x.test rua=mailto:a5@x.test "
     "rua=mailto:a6@x.test rua=mailto:a7@x.test rua=mailto:a8@x.test",
     "limit"},
    {"invalid p with rua: p=none (6.6.3)",
     "v=DMARC1; p=bogus; rua=mailto:a@x.test",
     "p=none sp=none" DEF " invalid rua=mailto:a@x.test", "invalid p"},
    {"several p values with rua",
     "v=DMARC1; p=reject quarantine; "
     "rua=mailto:a@x.test",
     "p=none sp=none" DEF " invalid rua=mailto:a@x.test", "invalid p"},
    {"missing p with rua: p=none", "v=DMARC1; rua=mailto:a@x.test; pct=10",
     "p=none sp=none pct=10 adkim=r aspf=r ri=86400 fo=0 invalid "
     "rua=mailto:a@x.test",
     "no p tag"},
    {"invalid sp with rua: p=none",
     "v=DMARC1; p=reject; sp=all; rua=mailto:a@x.test",
     "p=none sp=none" DEF " invalid rua=mailto:a@x.test", "invalid sp"},
    {"invalid p without rua", "v=DMARC1; p=bogus", NULL, "invalid p"},
    {"several p values without rua", "v=DMARC1; p=reject,quarantine", NULL,
     "invalid p"},
    {"invalid p, only a bad rua", "v=DMARC1; p=x; rua=a@x.test", NULL,
     "no valid rua"},
    {"invalid sp without rua", "v=DMARC1; p=reject; sp=x", NULL, "invalid sp"},
    {"missing p", "v=DMARC1; pct=100", NULL, "no p tag"},
    {"version only", "v=DMARC1", NULL, "no p tag"},
    {"p given twice", "v=DMARC1; p=none; p=reject", NULL, "twice"},
    {"v given twice", "v=DMARC1; p=none; v=DMARC1", NULL, "twice"},
    {"v not first", "p=reject; v=DMARC1", NULL, "v=DMARC1"},
    {"version in lower case", "v=dmarc1; p=reject", NULL, "v=DMARC1"},
    {"other version", "v=DMARC2; p=reject", NULL, "v=DMARC1"},
    {"leading blank", " v=DMARC1; p=reject", NULL, "v=DMARC1"},
    {"no separator after v", "v=DMARC1 p=reject", NULL, "v=DMARC1"},
    {"tag without =", "v=DMARC1; p=none; adkim", NULL, "without '='"},
    {"empty tag", "v=DMARC1; ; p=none", NULL, "without a name"},
    {"8-bit octet", "v=DMARC1; p=none; x=\xc3\xa9", NULL, "octet"},
    {"empty", "", NULL, "v=DMARC1"},
};

static void check_rec_case(const struct rec_case *c) {
  struct dmarc_record rec;
  char err[256] = "x", got[2048];
  int rc = dmarc_record_parse(c->rec, strlen(c->rec), &rec, err, sizeof(err));
  if ((rc == 0) != (c->want != NULL)) {
    fail_msg("%s: got %d (%s), want %s", c->label, rc, err,
             c->want != NULL ? "ok" : "error");
  }
  if (c->want_note != NULL && strstr(err, c->want_note) == NULL) {
    fail_msg("%s: note \"%s\", want it to say \"%s\"", c->label, err,
             c->want_note);
  }
  if (c->want == NULL) {
    return;
  }
  if (c->want_note == NULL && err[0] != '\0') {
    fail_msg("%s: unexpected note \"%s\"", c->label, err);
  }
  rec_text(&rec, got, sizeof(got));
  if (strcmp(got, c->want) != 0) {
    fail_msg("%s:\n got  \"%s\"\n want \"%s\"", c->label, got, c->want);
  }
}

static void test_record_parse(void **state) {
  (void)state;
  for (size_t i = 0; i < ARRAY_LEN(rec_cases); i++) {
    check_rec_case(&rec_cases[i]);
  }
}

/* Every prefix of every record, in an exact-size block: no overread, and
 * a parsed prefix has a policy. */
static void test_record_prefixes(void **state) {
  (void)state;
  for (size_t i = 0; i < ARRAY_LEN(rec_cases); i++) {
    const char *text = rec_cases[i].rec;
    size_t len = strlen(text);
    for (size_t cut = 0; cut <= len; cut++) {
      char *p = malloc(cut ? cut : 1);
      assert_non_null(p);
      memcpy(p, text, cut);
      struct dmarc_record rec;
      char err[128];
      if (dmarc_record_parse(p, cut, &rec, err, sizeof(err)) == 0 &&
          (rec.pct > 100 || (rec.p_invalid && rec.p != DMARC_P_NONE))) {
        fail_msg("%s cut at %zu: bad record", rec_cases[i].label, cut);
      }
      free(p);
    }
  }
}

static void test_record_limits(void **state) {
  (void)state;
  struct dmarc_record rec;
  char err[128];
  size_t n = DMARC_MAX_RECORD + 1;
  char *big = malloc(n);
  assert_non_null(big);
  memset(big, 'a', n);
  memcpy(big, "v=DMARC1; p=none; x=", 20);
  assert_int_equal(dmarc_record_parse(big, n, &rec, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "longer"));
  assert_int_equal(dmarc_record_parse(big, n - 1, &rec, err, sizeof(err)), 0);
  free(big);
  /* A URI too long to keep counts as valid for 6.6.3 but is not kept. */
  char text[DMARC_MAX_URI + 64];
  int len = snprintf(text, sizeof(text), "v=DMARC1; p=x; rua=mailto:");
  memset(text + len, 'a', DMARC_MAX_URI);
  len += DMARC_MAX_URI;
  memcpy(text + len, "@x.test", 7);
  len += 7;
  assert_int_equal(
      dmarc_record_parse(text, (size_t)len, &rec, err, sizeof(err)), 0);
  assert_int_equal(rec.num_rua, 0);
  assert_true(rec.p_invalid);
  /* A NUL inside is refused. */
  static const char nul[] = "v=DMARC1; p=none\0; x=1";
  assert_int_equal(
      dmarc_record_parse(nul, sizeof(nul) - 1, &rec, err, sizeof(err)), -1);
}

static void test_is_record(void **state) {
  (void)state;
  static const struct {
    const char *text;
    int want;
  } cases[] = {
      {"v=DMARC1", 1},
      {"v=DMARC1;", 1},
      {"v=DMARC1; p=none", 1},
      {"v = DMARC1 ; p=none", 1},
      {"V=DMARC1;p=none", 1},
      {"v=DMARC1p", 0},
      {"v=DMARC10; p=none", 0},
      {"v=dmarc1; p=none", 0},
      {" v=DMARC1", 0},
      {"v=spf1 -all", 0},
      {"", 0},
      {"p=none; v=DMARC1", 0},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    int got =
        dmarc_is_record((const uint8_t *)cases[i].text, strlen(cases[i].text));
    if (got != cases[i].want) {
      fail_msg("\"%s\": got %d, want %d", cases[i].text, got, cases[i].want);
    }
  }
}

static void test_policy_names(void **state) {
  (void)state;
  assert_string_equal(dmarc_policy_name(DMARC_P_NONE), "none");
  assert_string_equal(dmarc_policy_name(DMARC_P_QUARANTINE), "quarantine");
  assert_string_equal(dmarc_policy_name(DMARC_P_REJECT), "reject");
  assert_string_equal(dmarc_result_name(DMARC_RESULT_NONE), "none");
  assert_string_equal(dmarc_result_name(DMARC_RESULT_PASS), "pass");
  assert_string_equal(dmarc_result_name(DMARC_RESULT_FAIL), "fail");
  assert_string_equal(dmarc_result_name(DMARC_RESULT_TEMPERROR), "temperror");
  assert_string_equal(dmarc_result_name(DMARC_RESULT_PERMERROR), "permerror");
}

/* ---- organisational domains ---- */

static void test_org_domain(void **state) {
  (void)state;
  static const struct {
    const char *label, *domain, *want; /* want NULL: -1 */
  } cases[] = {
      {"subdomains of a .com", "a.b.example.com", "example.com"},
      {"itself", "example.com", "example.com"},
      {"under co.uk", "foo.co.uk", "foo.co.uk"},
      {"deeper under co.uk", "a.b.foo.co.uk", "foo.co.uk"},
      {"a suffix is its own", "co.uk", "co.uk"},
      {"a TLD alone", "com", "com"},
      {"unlisted TLD: the * rule", "a.b.c.example", "c.example"},
      {"unlisted TLD alone", "example", "example"},
      {"wildcard *.kawasaki.jp", "foo.kawasaki.jp", "foo.kawasaki.jp"},
      {"under the wildcard", "a.b.foo.kawasaki.jp", "b.foo.kawasaki.jp"},
      {"exception !city.kawasaki.jp", "city.kawasaki.jp", "city.kawasaki.jp"},
      {"under the exception", "a.b.city.kawasaki.jp", "city.kawasaki.jp"},
      {"wildcard parent itself", "kawasaki.jp", "kawasaki.jp"},
      {"exception !www.ck", "a.www.ck", "www.ck"},
      {"wildcard *.ck", "a.b.ck", "a.b.ck"},
      {"private section", "a.b.blogspot.com", "b.blogspot.com"},
      {"private section github.io", "x.y.github.io", "y.github.io"},
      {"U-label rule as A-label", "a.b.xn--55qx5d.cn", "b.xn--55qx5d.cn"},
      {"U-label rule as written", "a.b.\xe5\x85\xac\xe5\x8f\xb8.cn",
       "b.\xe5\x85\xac\xe5\x8f\xb8.cn"},
      {"case and a trailing dot", "A.B.Example.COM.", "example.com"},
      {"underscore names", "_dmarc.mail.example.org", "example.org"},
      {"empty", "", NULL},
      {"only a dot", ".", NULL},
      {"empty label", "a..example.com", NULL},
      {"leading dot", ".example.com", NULL},
      {"blank", "exa mple.com", NULL},
      {"label over 63",
       "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
       "aaaa.com",
       NULL},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    char got[256] = "";
    int rc = dmarc_org_domain(g_psl, cases[i].domain, got, sizeof(got));
    if (cases[i].want == NULL ? rc != -1
                              : rc != 0 || strcmp(got, cases[i].want) != 0) {
      fail_msg("%s: %s: got %d \"%s\", want %s", cases[i].label,
               cases[i].domain, rc, got, cases[i].want ? cases[i].want : "-1");
    }
  }
  char small[8];
  assert_int_equal(dmarc_org_domain(g_psl, "a.example.com", small, 8), -1);
  assert_int_equal(dmarc_org_domain(g_psl, "a.example.com", small, 0), -1);
  char got[64];
  assert_int_equal(dmarc_org_domain(NULL, "a.b.foo.co.uk", got, 64), 0);
  assert_string_equal(got, "co.uk"); /* no PSL: only the * rule */
}

/* write_file creates a temporary file with text; returns its path. */
static void write_file(char path[64], const char *text) {
  snprintf(path, 64, "/tmp/test_dmarc_XXXXXX");
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  size_t n = strlen(text);
  assert_int_equal(write(fd, text, n), (ssize_t)n);
  close(fd);
}

static void test_psl_file(void **state) {
  (void)state;
  char path[64], err[256], got[256];
  /* Punycode (RFC 3492): "bücher" is "xn--bcher-kva", "münchen"
   * "xn--mnchen-3ya"; comments, blanks, CRLF and text after a blank. */
  write_file(path, "// comment\r\n\r\n"
                   "b\xc3\xbc"
                   "cher.test\r\n"
                   "*.m\xc3\xbcnchen.test  trailing words\n"
                   "!www.m\xc3\xbcnchen.test\n"
                   "test\n");
  struct dmarc_psl *p = dmarc_psl_load(path, err, sizeof(err));
  unlink(path);
  assert_non_null(p);
  static const struct {
    const char *domain, *want;
  } cases[] = {
      {"x.y.xn--bcher-kva.test", "y.xn--bcher-kva.test"},
      {"x.y.b\xc3\xbc"
       "cher.test",
       "y.b\xc3\xbc"
       "cher.test"},
      {"x.y.z.xn--mnchen-3ya.test", "y.z.xn--mnchen-3ya.test"},
      {"a.www.xn--mnchen-3ya.test", "www.xn--mnchen-3ya.test"},
      {"a.b.other.test", "other.test"},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    if (dmarc_org_domain(p, cases[i].domain, got, sizeof(got)) != 0 ||
        strcmp(got, cases[i].want) != 0) {
      fail_msg("%s: got \"%s\", want \"%s\"", cases[i].domain, got,
               cases[i].want);
    }
  }
  dmarc_psl_free(p);

  static const struct {
    const char *text, *want_err;
  } bad[] = {
      {"// only comments\n", "no rules"},
      {"good.test\nfoo.*.test\n", ":2: a wildcard"},
      {"a..test\n", ":1: not a domain"},
      {"b\xc3"
       "r.test\n",
       ":1: a label"},
  };
  for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
    write_file(path, bad[i].text);
    p = dmarc_psl_load(path, err, sizeof(err));
    unlink(path);
    if (p != NULL || strstr(err, bad[i].want_err) == NULL) {
      fail_msg("bad PSL %zu: got \"%s\", want \"%s\"", i, err, bad[i].want_err);
    }
  }
  assert_null(dmarc_psl_load("/nonexistent/psl.dat", err, sizeof(err)));
  assert_non_null(strstr(err, "/nonexistent/psl.dat"));
  dmarc_psl_free(NULL);
}

/* ---- alignment (§3.1) ---- */

static void test_aligned(void **state) {
  (void)state;
  static const struct {
    const char *a, *b;
    int relaxed, strict;
  } cases[] = {
      {"example.com", "example.com", 1, 1},
      {"mail.example.com", "example.com", 1, 0}, /* a subdomain */
      {"example.com", "mail.example.com", 1, 0}, /* the parent */
      {"a.example.com", "b.example.com", 1, 0},  /* siblings */
      {"example.net", "example.com", 0, 0},      /* another domain */
      {"a.foo.co.uk", "foo.co.uk", 1, 0},
      {"foo.co.uk", "bar.co.uk", 0, 0}, /* a public suffix between */
      {"co.uk", "foo.co.uk", 0, 0},
      {"a.b.blogspot.com", "c.blogspot.com", 0, 0},
      {"EXAMPLE.com.", "example.COM", 1, 1},
      {"", "example.com", 0, 0},
      {"example.com", "exa mple.com", 0, 0},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    int r = dmarc_aligned(g_psl, cases[i].a, cases[i].b, 0);
    int s = dmarc_aligned(g_psl, cases[i].a, cases[i].b, 1);
    if (r != cases[i].relaxed || s != cases[i].strict) {
      fail_msg("%s ~ %s: got relaxed %d strict %d, want %d %d", cases[i].a,
               cases[i].b, r, s, cases[i].relaxed, cases[i].strict);
    }
  }
  /* Without a PSL relaxed alignment never joins siblings. */
  assert_int_equal(dmarc_aligned(NULL, "a.example.com", "example.com", 0), 1);
  assert_int_equal(dmarc_aligned(NULL, "a.example.com", "b.example.com", 0), 0);
  assert_int_equal(dmarc_aligned(NULL, "a.co.uk", "b.co.uk", 0), 0);
}

/* ---- From (§6.6.1) ---- */

static void test_from_domain(void **state) {
  (void)state;
  static const struct {
    const char *label, *msg, *want, *want_why; /* want NULL: error */
  } cases[] = {
      {"plain", "From: a@example.com\r\nTo: b@x.test\r\n\r\nbody",
       "example.com", NULL},
      {"display name and angle",
       "Subject: hi\r\nFrom: Alice Example <alice@Mail.Example.COM>\r\n\r\n",
       "mail.example.com", NULL},
      {"quoted display name with a comma",
       "From: \"Smith, John\" <john@example.org>\r\n\r\n", "example.org", NULL},
      {"quoted display name with <, @ and \\\"",
       "From: \"a <b@evil.test> \\\" c\" <x@good.test>\r\n\r\n", "good.test",
       NULL},
      {"comments, nested",
       "From: (x (y@evil.test) z) a@example.net "
       "(comment, with comma)\r\n\r\n",
       "example.net", NULL},
      {"comment inside the address", "From: a@(c)example.net\r\n\r\n",
       "example.net", NULL},
      {"quoted local part with @", "From: \"a@evil.test\"@good.test\r\n\r\n",
       "good.test", NULL},
      {"folded", "From: Alice\r\n <alice@\r\n\texample.com>\r\n\r\n",
       "example.com", NULL},
      {"name case and blanks before colon", "FROM : a@example.com\r\n\r\n",
       "example.com", NULL},
      {"LF line ends", "To: x@y.test\nfrom: a@example.com\n\nFrom: b@c.test\n",
       "example.com", NULL},
      {"group with one member", "From: Team: a@example.com;\r\n\r\n",
       "example.com", NULL},
      {"obs-route", "From: <@relay.test,@r2.test:a@example.com>\r\n\r\n",
       "example.com", NULL},
      {"trailing dot", "From: a@example.com.\r\n\r\n", "example.com", NULL},
      {"From in the body only", "To: a@b.test\r\n\r\nFrom: x@y.test\r\n", NULL,
       "no From field"},
      {"no From", "To: a@b.test\r\n\r\n", NULL, "no From field"},
      {"Resent-From is not From", "Resent-From: a@b.test\r\n\r\n", NULL,
       "no From field"},
      {"mbox From_ line", "From a@b.test Mon Jan 1\r\n\r\n", NULL,
       "no From field"},
      {"two From fields", "From: a@b.test\r\nFrom: c@d.test\r\n\r\n", NULL,
       "2 From fields"},
      {"two addresses", "From: a@b.test, c@d.test\r\n\r\n", NULL,
       "2 addresses"},
      {"two angle addresses", "From: <a@b.test> <c@d.test>\r\n\r\n", NULL,
       "2 addresses"},
      {"empty group", "From: Undisclosed:;\r\n\r\n", NULL,
       "without an address"},
      {"empty", "From: \r\n\r\n", NULL, "without an address"},
      {"no domain", "From: alice\r\n\r\n", NULL, "without a domain"},
      {"empty domain", "From: alice@\r\n\r\n", NULL, "without a domain"},
      {"domain literal", "From: a@[192.0.2.1]\r\n\r\n", NULL,
       "without a domain"},
      {"null address", "From: <>\r\n\r\n", NULL, "without a domain"},
      {"quoted domain", "From: a@\"b\".test\r\n\r\n", NULL, "without a domain"},
      {"unclosed comment", "From: a@b.test (x\r\n\r\n", NULL, "malformed"},
      {"unclosed angle", "From: <a@b.test\r\n\r\n", NULL, "malformed"},
      {"unclosed quote", "From: \"a <a@b.test>\r\n\r\n", NULL, "malformed"},
      {"nested group", "From: g: h: a@b.test;;\r\n\r\n", NULL, "malformed"},
      {"no header", "\r\nFrom: a@b.test\r\n", NULL, "no From field"},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    char got[256] = "x", why[128] = "";
    int rc =
        dmarc_from_domain((const uint8_t *)cases[i].msg, strlen(cases[i].msg),
                          got, sizeof(got), why, sizeof(why));
    if (cases[i].want != NULL) {
      if (rc != 0 || strcmp(got, cases[i].want) != 0) {
        fail_msg("%s: got %d \"%s\" (%s), want \"%s\"", cases[i].label, rc, got,
                 why, cases[i].want);
      }
    } else if (rc != -1 || strstr(why, cases[i].want_why) == NULL ||
               got[0] != '\0') {
      fail_msg("%s: got %d \"%s\" (%s), want error \"%s\"", cases[i].label, rc,
               got, why, cases[i].want_why);
    }
  }
}

/* Every prefix of each message and every split of its header. */
static void test_from_prefixes(void **state) {
  (void)state;
  static const char *const msgs[] = {
      "From: \"Smith, John\" (c (d)) <john@example.org>\r\nTo: x\r\n\r\n",
      "From: Team: a@example.com, (x) b@c.test;\r\n",
      "From: a@\r\n b.test\r\n",
  };
  for (size_t i = 0; i < ARRAY_LEN(msgs); i++) {
    size_t len = strlen(msgs[i]);
    for (size_t cut = 0; cut <= len; cut++) {
      uint8_t *p = malloc(cut ? cut : 1);
      assert_non_null(p);
      memcpy(p, msgs[i], cut);
      char got[256], why[64];
      if (dmarc_from_domain(p, cut, got, sizeof(got), why, sizeof(why)) == 0 &&
          got[0] == '\0') {
        fail_msg("message %zu cut at %zu: empty domain", i, cut);
      }
      free(p);
    }
  }
  /* A small out: -1, nothing half written. */
  char small[4], why[64];
  static const char m[] = "From: a@example.com\r\n\r\n";
  assert_int_equal(dmarc_from_domain((const uint8_t *)m, sizeof(m) - 1, small,
                                     sizeof(small), why, sizeof(why)),
                   -1);
  assert_string_equal(small, "");
}

/* ---- evaluation (§6.6) ---- */

struct eval_case {
  const char *label;
  const char *record; /* NULL: lookup->rec NULL */
  int status;         /* DMARC_LOOKUP_* */
  int at_org;
  const char *from; /* NULL: permerror */
  const char *spf;  /* SPF domain, passing; NULL: SPF failed */
  const char *dkim; /* DKIM d=, passing; NULL: none */
  unsigned sample;
  enum dmarc_result want_result;
  enum dmarc_policy want_policy, want_disposition;
  int want_sampled_out;
};

#define F DMARC_LOOKUP_FOUND
#define NONE_ DMARC_P_NONE
#define QUAR DMARC_P_QUARANTINE
#define REJ DMARC_P_REJECT
#define R_PASS DMARC_RESULT_PASS
#define R_FAIL DMARC_RESULT_FAIL

static const struct eval_case eval_cases[] = {
    /* Alignment, relaxed and strict, SPF and DKIM. */
    {"spf relaxed, subdomain", "v=DMARC1; p=reject", F, 0, "example.com",
     "bounce.example.com", NULL, 0, R_PASS, REJ, NONE_, 0},
    {"spf strict, subdomain", "v=DMARC1; p=reject; aspf=s", F, 0, "example.com",
     "bounce.example.com", NULL, 0, R_FAIL, REJ, REJ, 0},
    {"spf strict, same", "v=DMARC1; p=reject; aspf=s", F, 0, "example.com",
     "EXAMPLE.com", NULL, 0, R_PASS, REJ, NONE_, 0},
    {"spf relaxed, parent", "v=DMARC1; p=reject", F, 0, "mail.example.com",
     "example.com", NULL, 0, R_PASS, REJ, NONE_, 0},
    {"spf strict, parent", "v=DMARC1; p=reject; aspf=s", F, 0,
     "mail.example.com", "example.com", NULL, 0, R_FAIL, REJ, REJ, 0},
    {"spf other domain", "v=DMARC1; p=reject", F, 0, "example.com",
     "example.net", NULL, 0, R_FAIL, REJ, REJ, 0},
    {"dkim relaxed, subdomain", "v=DMARC1; p=reject", F, 0, "example.com", NULL,
     "news.example.com", 0, R_PASS, REJ, NONE_, 0},
    {"dkim strict, subdomain", "v=DMARC1; p=reject; adkim=s", F, 0,
     "example.com", NULL, "news.example.com", 0, R_FAIL, REJ, REJ, 0},
    {"dkim strict, same", "v=DMARC1; p=reject; adkim=s", F, 0, "example.com",
     NULL, "example.com", 0, R_PASS, REJ, NONE_, 0},
    {"dkim relaxed, parent", "v=DMARC1; p=reject", F, 0, "a.example.com", NULL,
     "example.com", 0, R_PASS, REJ, NONE_, 0},
    {"dkim strict, parent", "v=DMARC1; p=reject; adkim=s", F, 0,
     "a.example.com", NULL, "example.com", 0, R_FAIL, REJ, REJ, 0},
    {"dkim other domain", "v=DMARC1; p=reject", F, 0, "example.com", NULL,
     "example.net", 0, R_FAIL, REJ, REJ, 0},
    {"dkim across a public suffix", "v=DMARC1; p=reject", F, 0, "a.co.uk", NULL,
     "b.co.uk", 0, R_FAIL, REJ, REJ, 0},
    {"strict spf fails, relaxed dkim passes", "v=DMARC1; p=reject; aspf=s", F,
     0, "example.com", "m.example.com", "d.example.com", 0, R_PASS, REJ, NONE_,
     0},
    /* p, sp, pct. */
    {"p=none fails: nothing done", "v=DMARC1; p=none", F, 0, "example.com",
     NULL, NULL, 0, R_FAIL, NONE_, NONE_, 0},
    {"p=quarantine", "v=DMARC1; p=quarantine", F, 0, "example.com", NULL, NULL,
     99, R_FAIL, QUAR, QUAR, 0},
    {"sp at the org domain", "v=DMARC1; p=reject; sp=quarantine", F, 1,
     "a.example.com", NULL, NULL, 0, R_FAIL, QUAR, QUAR, 0},
    {"sp=none at the org domain", "v=DMARC1; p=reject; sp=none", F, 1,
     "a.b.example.com", NULL, NULL, 0, R_FAIL, NONE_, NONE_, 0},
    {"no sp: p at the org domain", "v=DMARC1; p=reject", F, 1, "a.example.com",
     NULL, NULL, 0, R_FAIL, REJ, REJ, 0},
    {"sp not for the From domain's own record", "v=DMARC1; p=reject; sp=none",
     F, 0, "a.example.com", NULL, NULL, 0, R_FAIL, REJ, REJ, 0},
    {"at_org but From is the org domain", "v=DMARC1; p=reject; sp=none", F, 1,
     "example.com", NULL, NULL, 0, R_FAIL, REJ, REJ, 0},
    {"pct=50 sample 0: taken", "v=DMARC1; p=reject; pct=50", F, 0,
     "example.com", NULL, NULL, 0, R_FAIL, REJ, REJ, 0},
    {"pct=50 sample 99: reject becomes quarantine",
     "v=DMARC1; p=reject; pct=50", F, 0, "example.com", NULL, NULL, 99, R_FAIL,
     REJ, QUAR, 1},
    {"pct=50 sample 99: quarantine becomes none",
     "v=DMARC1; p=quarantine; pct=50", F, 0, "example.com", NULL, NULL, 99,
     R_FAIL, QUAR, NONE_, 1},
    {"pct=0 sample 0: never taken", "v=DMARC1; p=reject; pct=0", F, 0,
     "example.com", NULL, NULL, 0, R_FAIL, REJ, QUAR, 1},
    {"pct=100 sample 99: taken", "v=DMARC1; p=reject; pct=100", F, 0,
     "example.com", NULL, NULL, 99, R_FAIL, REJ, REJ, 0},
    {"pct=99 sample 99: not taken", "v=DMARC1; p=reject; pct=99", F, 0,
     "example.com", NULL, NULL, 99, R_FAIL, REJ, QUAR, 1},
    {"pct on sp", "v=DMARC1; p=none; sp=reject; pct=10", F, 1, "a.example.com",
     NULL, NULL, 99, R_FAIL, REJ, QUAR, 1},
    {"pass is never sampled", "v=DMARC1; p=reject; pct=0", F, 0, "example.com",
     "example.com", NULL, 99, R_PASS, REJ, NONE_, 0},
    {"p_invalid record acts as none", "v=DMARC1; p=x; rua=mailto:a@b.test", F,
     0, "example.com", NULL, NULL, 0, R_FAIL, NONE_, NONE_, 0},
    /* Lookups and From. */
    {"temperror", "v=DMARC1; p=reject", DMARC_LOOKUP_TEMPFAIL, 0, "example.com",
     NULL, NULL, 0, DMARC_RESULT_TEMPERROR, NONE_, NONE_, 0},
    {"no record", NULL, DMARC_LOOKUP_NONE, 0, "example.com", NULL, NULL, 0,
     DMARC_RESULT_NONE, NONE_, NONE_, 0},
    {"From unusable", "v=DMARC1; p=reject", F, 0, NULL, "example.com", NULL, 0,
     DMARC_RESULT_PERMERROR, NONE_, NONE_, 0},
};

static void check_eval_case(const struct eval_case *c) {
  struct dmarc_record rec;
  char err[128];
  if (c->record != NULL) {
    assert_int_equal(dmarc_record_parse(c->record, strlen(c->record), &rec, err,
                                        sizeof(err)),
                     0);
  }
  struct dmarc_auth auth = {0};
  auth.spf_domain = c->spf != NULL ? c->spf : "example.com";
  auth.spf_pass = c->spf != NULL;
  auth.spf_result = c->spf != NULL ? "pass" : "fail";
  /* A failing signature of the From domain never counts. */
  auth.dkim[0].domain = c->from != NULL ? c->from : "x.test";
  auth.dkim[0].selector = "s1";
  auth.dkim[0].result = "fail";
  auth.num_dkim = 1;
  if (c->dkim != NULL) {
    auth.dkim[1].domain = c->dkim;
    auth.dkim[1].selector = "s2";
    auth.dkim[1].pass = 1;
    auth.dkim[1].result = "pass";
    auth.num_dkim = 2;
  }
  struct dmarc_lookup lookup = {
      .status = c->status, .rec = c->record ? &rec : NULL, .at_org = c->at_org};
  struct dmarc_outcome out;
  dmarc_evaluate(g_psl, c->from, &auth, &lookup, c->sample, &out);
  if (out.result != c->want_result || out.policy != c->want_policy ||
      out.disposition != c->want_disposition ||
      out.sampled_out != c->want_sampled_out) {
    fail_msg("%s: got %s policy %s disposition %s sampled_out %d, want %s "
             "%s %s %d (%s)",
             c->label, dmarc_result_name(out.result),
             dmarc_policy_name(out.policy), dmarc_policy_name(out.disposition),
             out.sampled_out, dmarc_result_name(c->want_result),
             dmarc_policy_name(c->want_policy),
             dmarc_policy_name(c->want_disposition), c->want_sampled_out,
             out.reason);
  }
  if (strstr(out.reason, dmarc_result_name(out.result)) == NULL) {
    fail_msg("%s: reason \"%s\" lacks the result", c->label, out.reason);
  }
}

static void test_evaluate(void **state) {
  (void)state;
  for (size_t i = 0; i < ARRAY_LEN(eval_cases); i++) {
    check_eval_case(&eval_cases[i]);
  }
  /* Aligned flags are reported per method. */
  struct dmarc_record rec;
  char err[64];
  assert_int_equal(
      dmarc_record_parse("v=DMARC1; p=reject", 18, &rec, err, sizeof(err)), 0);
  struct dmarc_auth auth = {
      .spf_domain = "a.example.com", .spf_pass = 1, .num_dkim = 1};
  auth.dkim[0].domain = "example.com";
  auth.dkim[0].pass = 1;
  struct dmarc_lookup lookup = {.status = DMARC_LOOKUP_FOUND, .rec = &rec};
  struct dmarc_outcome out;
  dmarc_evaluate(g_psl, "example.com", &auth, &lookup, 0, &out);
  assert_int_equal(out.spf_aligned, 1);
  assert_int_equal(out.dkim_aligned, 1);
  dmarc_evaluate(g_psl, "example.com", NULL, &lookup, 0, &out);
  assert_int_equal(out.result, DMARC_RESULT_FAIL);
}

/* ---- aggregate reports ---- */

static struct dmarc_report_row sample_row(const char *ip, uint64_t count) {
  struct dmarc_report_row r;
  memset(&r, 0, sizeof(r));
  snprintf(r.source_ip, sizeof(r.source_ip), "%s", ip);
  r.count = count;
  r.disposition = DMARC_P_NONE;
  r.dkim_aligned_pass = 1;
  snprintf(r.header_from, sizeof(r.header_from), "example.com");
  snprintf(r.envelope_from, sizeof(r.envelope_from), "bounce.example.com");
  r.num_dkim = 1;
  snprintf(r.dkim[0].domain, sizeof(r.dkim[0].domain), "example.com");
  snprintf(r.dkim[0].selector, sizeof(r.dkim[0].selector), "s2024");
  snprintf(r.dkim[0].result, sizeof(r.dkim[0].result), "pass");
  snprintf(r.spf_domain, sizeof(r.spf_domain), "bounce.example.com");
  snprintf(r.spf_result, sizeof(r.spf_result), "pass");
  return r;
}

/* sample_report builds the report the schema test validates. */
static int sample_report(struct buf *out) {
  static struct dmarc_record rec;
  char err[64];
  static const char text[] =
      "v=DMARC1; p=quarantine; sp=reject; pct=50; adkim=s; fo=1:d";
  if (dmarc_record_parse(text, sizeof(text) - 1, &rec, err, sizeof(err)) != 0) {
    return -1;
  }
  struct dmarc_report_row rows[5];
  rows[0] = sample_row("192.0.2.1", 12);
  rows[1] = sample_row("2001:db8::25", 3); /* written in full */
  rows[1].disposition = DMARC_P_QUARANTINE;
  rows[1].dkim_aligned_pass = 0;
  snprintf(rows[1].dkim[0].result, sizeof(rows[1].dkim[0].result), "fail");
  snprintf(rows[1].spf_result, sizeof(rows[1].spf_result), "softfail");
  rows[2] = sample_row("::ffff:198.51.100.7", 1);
  rows[2].num_dkim = 3;
  rows[2].dkim[1] = rows[2].dkim[0];
  rows[2].dkim[1].selector[0] = '\0'; /* selector is optional */
  snprintf(rows[2].dkim[1].domain, sizeof(rows[2].dkim[1].domain),
           "esp.example");
  rows[2].dkim[2] = rows[2].dkim[0];
  snprintf(rows[2].dkim[2].result, sizeof(rows[2].dkim[2].result), "temperror");
  rows[2].envelope_from[0] = '\0'; /* null sender: HELO checked */
  snprintf(rows[2].spf_domain, sizeof(rows[2].spf_domain), "mx.example.com");
  snprintf(rows[2].spf_scope, sizeof(rows[2].spf_scope), "helo");
  rows[3] = sample_row("2001:DB8:0:0:1::1", 1000000);
  rows[3].num_dkim = 0;
  rows[3].disposition = DMARC_P_REJECT;
  rows[3].dkim_aligned_pass = 0;
  snprintf(rows[3].spf_result, sizeof(rows[3].spf_result), "PermError");
  snprintf(rows[3].header_from, sizeof(rows[3].header_from),
           "a<b>&\"c\"'d.example");
  rows[4] = sample_row("fe80::1", 2);
  rows[4].spf_aligned_pass = 1;
  snprintf(rows[4].header_from, sizeof(rows[4].header_from),
           "b\xc3\xbc"
           "cher.example\x01\xff");
  struct dmarc_report_meta meta = {
      .org_name = "Mail & <Co> \"Receiver\" 'Inc'",
      .email = "dmarc-reports@mx.example.net",
      .report_id = "1700000000.42@mx.example.net",
      .begin = 1700000000,
      .end = 1700086399,
      .domain = "example.com",
      .policy = &rec,
  };
  return dmarc_report_xml(&meta, rows, ARRAY_LEN(rows), out);
}

static void test_report_xml(void **state) {
  (void)state;
  struct buf out = {0};
  assert_int_equal(sample_report(&out), 0);
  assert_int_equal(buf_append(&out, "", 1), 0);
  const char *t = (const char *)out.data;
  static const char *const want[] = {
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feedback>\n"
      "  <version>1.0</version>\n  <report_metadata>\n",
      "<org_name>Mail &amp; &lt;Co&gt; &quot;Receiver&quot; "
      "&apos;Inc&apos;</org_name>",
      "<email>dmarc-reports@mx.example.net</email>",
      "<report_id>1700000000.42@mx.example.net</report_id>",
      "<date_range>\n      <begin>1700000000</begin>\n"
      "      <end>1700086399</end>\n    </date_range>",
      "<policy_published>\n    <domain>example.com</domain>\n"
      "    <adkim>s</adkim>\n    <aspf>r</aspf>\n    <p>quarantine</p>\n"
      "    <sp>reject</sp>\n    <pct>50</pct>\n    <fo>1:d</fo>\n"
      "  </policy_published>",
      "<source_ip>192.0.2.1</source_ip>\n      <count>12</count>",
      "<source_ip>2001:db8:0:0:0:0:0:25</source_ip>",
      "<source_ip>198.51.100.7</source_ip>",
      "<source_ip>2001:db8:0:0:1:0:0:1</source_ip>\n"
      "      <count>1000000</count>",
      "<source_ip>fe80:0:0:0:0:0:0:1</source_ip>",
      "<policy_evaluated>\n        <disposition>quarantine</disposition>\n"
      "        <dkim>fail</dkim>\n        <spf>fail</spf>\n",
      "<disposition>reject</disposition>",
      "<identifiers>\n      <envelope_from>bounce.example.com</envelope_from>"
      "\n      <header_from>example.com</header_from>\n    </identifiers>",
      "<envelope_from></envelope_from>",
      "<header_from>a&lt;b&gt;&amp;&quot;c&quot;&apos;d.example</header_from>",
      "<header_from>b\xc3\xbc"
      "cher.example?\?</header_from>",
      "<dkim>\n        <domain>example.com</domain>\n"
      "        <selector>s2024</selector>\n        <result>pass</result>\n"
      "      </dkim>",
      "<dkim>\n        <domain>esp.example</domain>\n"
      "        <result>pass</result>",
      "<result>temperror</result>",
      "<spf>\n        <domain>mx.example.com</domain>\n"
      "        <scope>helo</scope>\n        <result>pass</result>",
      "<scope>mfrom</scope>\n        <result>softfail</result>",
      "<result>permerror</result>",
      "</record>\n</feedback>\n",
  };
  for (size_t i = 0; i < ARRAY_LEN(want); i++) {
    if (strstr(t, want[i]) == NULL) {
      fail_msg("missing:\n%s\nin:\n%s", want[i], t);
    }
  }
  size_t records = 0;
  for (const char *p = t; (p = strstr(p, "<record>")) != NULL; p++) {
    records++;
  }
  assert_int_equal(records, 5);
  buf_free(&out);
}

static void test_report_xml_bad(void **state) {
  (void)state;
  struct dmarc_record rec;
  char err[64];
  assert_int_equal(
      dmarc_record_parse("v=DMARC1; p=none", 16, &rec, err, sizeof(err)), 0);
  struct dmarc_report_meta meta = {"mx.test", "a@mx.test",   "id", 0,
                                   86400,     "example.com", &rec};
  struct dmarc_report_row good = sample_row("192.0.2.1", 1);
  struct dmarc_report_row bad[7];
  for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
    bad[i] = good;
  }
  snprintf(bad[0].source_ip, sizeof(bad[0].source_ip), "192.0.2");
  snprintf(bad[1].source_ip, sizeof(bad[1].source_ip), "mx.example.com");
  snprintf(bad[2].spf_result, sizeof(bad[2].spf_result), "maybe");
  snprintf(bad[3].dkim[0].result, sizeof(bad[3].dkim[0].result), "softfail");
  bad[4].num_dkim = 5;
  snprintf(bad[5].spf_scope, sizeof(bad[5].spf_scope), "rcpt");
  memset(bad[6].header_from, 'a', sizeof(bad[6].header_from)); /* no NUL */
  struct buf out = {0};
  assert_int_equal(buf_append(&out, "keep", 4), 0);
  for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
    struct dmarc_report_row rows[2] = {good, bad[i]};
    if (dmarc_report_xml(&meta, rows, 2, &out) != -1 || out.len != 4) {
      fail_msg("bad row %zu: got a report", i);
    }
  }
  assert_int_equal(dmarc_report_xml(&meta, &good, 0, &out), -1);
  struct dmarc_report_meta no_policy = meta;
  no_policy.policy = NULL;
  assert_int_equal(dmarc_report_xml(&no_policy, &good, 1, &out), -1);
  assert_int_equal(out.len, 4);
  assert_int_equal(dmarc_report_xml(&meta, &good, 1, &out), 0);
  assert_memory_equal(out.data, "keep<?xml", 9);
  buf_free(&out);
}

static void test_report_filename(void **state) {
  (void)state;
  struct dmarc_report_meta meta = {.org_name = "Mail.Receiver.Example.",
                                   .domain = "example.com",
                                   .begin = 1013662812,
                                   .end = 1013749130};
  char name[256];
  /* §7.2.1.1 with erratum 5365 (".xml.gz"). */
  assert_int_equal(dmarc_report_filename(&meta, name, sizeof(name)), 0);
  assert_string_equal(name, "mail.receiver.example!example.com!1013662812!"
                            "1013749130.xml.gz");
  assert_int_equal(dmarc_report_filename(&meta, name, 20), -1);
  assert_string_equal(name, "");
  struct dmarc_report_meta bad = meta;
  bad.org_name = "mx/../etc";
  assert_int_equal(dmarc_report_filename(&bad, name, sizeof(name)), -1);
  bad = meta;
  bad.domain = "a!b.test";
  assert_int_equal(dmarc_report_filename(&bad, name, sizeof(name)), -1);
  bad = meta;
  bad.end = bad.begin - 1;
  assert_int_equal(dmarc_report_filename(&bad, name, sizeof(name)), -1);
}

static void test_rua_mailto(void **state) {
  (void)state;
  static const struct {
    const char *uri, *want; /* NULL: -1 */
  } cases[] = {
      {"mailto:dmarc@example.com", "dmarc@example.com"},
      {"MAILTO:dmarc@example.com!10m", "dmarc@example.com"},
      {"mailto:dmarc@example.com?subject=x", "dmarc@example.com"},
      {"mailto:dmarc%2Dagg@example.com", "dmarc-agg@example.com"},
      {"mailto:a%21b@example.com!50k", "a!b@example.com"},
      {"mailto:a@b.test%2Cc@d.test", NULL},
      {"mailto:a%2@example.com", NULL},
      {"mailto:a%00@example.com", NULL},
      {"mailto:postmaster", NULL},
      {"mailto:", NULL},
      {"mailto:a b@example.com", NULL},
      {"https://example.com/dmarc", NULL},
      {"dmarc@example.com", NULL},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    char got[128] = "x";
    int rc = dmarc_rua_mailto(cases[i].uri, got, sizeof(got));
    if (cases[i].want == NULL ? rc != -1 || got[0] != '\0'
                              : rc != 0 || strcmp(got, cases[i].want) != 0) {
      fail_msg("%s: got %d \"%s\", want %s", cases[i].uri, rc, got,
               cases[i].want ? cases[i].want : "-1");
    }
  }
  char small[8];
  assert_int_equal(dmarc_rua_mailto("mailto:abc@example.com", small, 8), -1);
}

static void test_external_check_name(void **state) {
  (void)state;
  static const struct {
    const char *policy, *rua, *want;
    int rc;
  } cases[] = {
      {"example.com", "thirdparty.example.net",
       "example.com._report._dmarc.thirdparty.example.net", 0},
      {"Example.COM.", "Reports.Example.NET.",
       "example.com._report._dmarc.reports.example.net", 0},
      {"example.com", "example.com", "", -1},
      {"mail.example.com", "reports.example.com", "", -1},
      {"example.co.uk", "other.co.uk",
       "example.co.uk._report._dmarc.other.co.uk", 0},
      {"a.b.blogspot.com", "c.blogspot.com",
       "a.b.blogspot.com._report._dmarc.c.blogspot.com", 0},
      {"", "example.net", "", -2},
      {"example.com", "bad domain", "", -2},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    char got[300] = "x";
    int rc = dmarc_external_check_name(g_psl, cases[i].policy, cases[i].rua,
                                       got, sizeof(got));
    if (rc != cases[i].rc || strcmp(got, cases[i].want) != 0) {
      fail_msg("%s -> %s: got %d \"%s\", want %d \"%s\"", cases[i].policy,
               cases[i].rua, rc, got, cases[i].rc, cases[i].want);
    }
  }
  /* The name must fit in a domain (253) and in out. */
  char long_label[64], policy[256], got[512];
  memset(long_label, 'a', 63);
  long_label[63] = '\0';
  snprintf(policy, sizeof(policy), "%s.%s.%s.example.com", long_label,
           long_label, long_label);
  char rua[128];
  snprintf(rua, sizeof(rua), "%.40s.example.net", long_label);
  assert_int_equal(
      dmarc_external_check_name(g_psl, policy, rua, got, sizeof(got)), -2);
  assert_string_equal(got, "");
  assert_int_equal(
      dmarc_external_check_name(g_psl, policy, "example.net", got, sizeof(got)),
      0);
  assert_int_equal(strlen(got), 230);
  assert_int_equal(
      dmarc_external_check_name(g_psl, "example.com", "example.net", got, 10),
      -2);
}

/* write_sample writes the sample report to path (--sample-report). */
static int write_sample(const char *path) {
  struct buf out = {0};
  FILE *f = NULL;
  int rc = sample_report(&out) == 0 && (f = fopen(path, "wb")) != NULL &&
                   fwrite(out.data, 1, out.len, f) == out.len
               ? 0
               : 1;
  if (f != NULL && fclose(f) != 0) {
    rc = 1;
  }
  buf_free(&out);
  if (rc != 0) {
    fprintf(stderr, "test_dmarc: cannot write the sample report to %s\n", path);
  }
  return rc;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "--sample-report") == 0) {
    return write_sample(argv[2]);
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_record_parse),
      cmocka_unit_test(test_record_prefixes),
      cmocka_unit_test(test_record_limits),
      cmocka_unit_test(test_is_record),
      cmocka_unit_test(test_policy_names),
      cmocka_unit_test(test_org_domain),
      cmocka_unit_test(test_psl_file),
      cmocka_unit_test(test_aligned),
      cmocka_unit_test(test_from_domain),
      cmocka_unit_test(test_from_prefixes),
      cmocka_unit_test(test_evaluate),
      cmocka_unit_test(test_report_xml),
      cmocka_unit_test(test_report_xml_bad),
      cmocka_unit_test(test_report_filename),
      cmocka_unit_test(test_rua_mailto),
      cmocka_unit_test(test_external_check_name),
  };
  return cmocka_run_group_tests(tests, psl_setup, psl_teardown);
}
