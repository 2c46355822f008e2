/* Unit tests: policy/mta_sts — the _mta-sts TXT record (RFC 8461 §3.1),
 * the policy file (§3.2) with its limits, MX pattern matching (§4.1) and
 * the policy cache (§5.1: expiry, LRU eviction, a cached policy kept
 * through failed refreshes, the retry pause after a failed fetch).
 *
 * Table-driven with labelled cases; the parsers are also run on every
 * prefix of valid inputs, each copied to an exact-size heap block so a
 * read past the end shows under ASan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <pthread.h>

#include "policy/mta_sts.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- TXT records ---- */

struct txt_case {
  const char *label;
  const char *rec;
  int want_ok;
  const char *want_id;
};

static const struct txt_case txt_cases[] = {
    {"rfc example", "v=STSv1; id=20160831085700Z;", 1, "20160831085700Z"},
    {"no blanks", "v=STSv1;id=1", 1, "1"},
    {"blanks around the final separator", "v=STSv1; id=abc ; ", 1, "abc"},
    {"blank at the end", "v=STSv1; id=abc ", 1, "abc"},
    {"tab and extension after", "v=STSv1;\tid=x1;ext=foo", 1, "x1"},
    {"extension before", "v=STSv1; ext.a_b-c=1; id=2", 1, "2"},
    {"id of 32", "v=STSv1; id=0123456789abcdef0123456789ABCDEF", 1,
     "0123456789abcdef0123456789ABCDEF"},
    {"id of 33", "v=STSv1; id=0123456789abcdef0123456789ABCDEFx", 0, NULL},
    {"two ids", "v=STSv1; id=1; id=2", 0, NULL},
    {"empty id", "v=STSv1; id=", 0, NULL},
    {"id with a hyphen", "v=STSv1; id=a-b", 0, NULL},
    {"no id", "v=STSv1; ext=1", 0, NULL},
    {"version only", "v=STSv1", 0, NULL},
    {"version and separator", "v=STSv1;", 0, NULL},
    {"other version", "v=STSv2; id=1", 0, NULL},
    {"version in upper case", "V=STSv1; id=1", 0, NULL},
    {"empty field", "v=STSv1; id=1;; ", 0, NULL},
    {"no separator", "v=STSv1 id=1", 0, NULL},
    {"field without name", "v=STSv1; id=1; =x", 0, NULL},
    {"field without value", "v=STSv1; id=1; e=", 0, NULL},
    {"space inside a value", "v=STSv1; id=1; e=a b", 0, NULL},
    {"extension name not alphanumeric first", "v=STSv1; id=1; _x=1", 0, NULL},
    {"extension name of 33",
     "v=STSv1; id=1; abcdefghijabcdefghijabcdefghijabc=1", 0, NULL},
    {"extension name of 32",
     "v=STSv1; id=1; abcdefghijabcdefghijabcdefghijab=1", 1, "1"},
    {"equals in a value", "v=STSv1; id=1; e=a=b", 0, NULL},
    {"leading blank", " v=STSv1; id=1", 0, NULL},
    {"empty", "", 0, NULL},
};

static void test_txt_parse(void **state) {
  (void)state;
  for (size_t i = 0; i < ARRAY_LEN(txt_cases); i++) {
    const struct txt_case *c = &txt_cases[i];
    char id[MTA_STS_MAX_ID + 1] = "", err[MTA_STS_ERR_LEN] = "";
    int got = mta_sts_txt_parse(id, err, sizeof(err), (const uint8_t *)c->rec,
                                strlen(c->rec));
    if ((got == 0) != c->want_ok) {
      fail_msg("%s: got %d (%s), want %s", c->label, got, err,
               c->want_ok ? "ok" : "error");
    }
    if (c->want_ok && strcmp(id, c->want_id) != 0) {
      fail_msg("%s: id got %s, want %s", c->label, id, c->want_id);
    }
    if (!c->want_ok && err[0] == '\0') {
      fail_msg("%s: no reason given", c->label);
    }
  }
}

static void test_txt_binary(void **state) {
  (void)state;
  static const uint8_t nul[] = "v=STSv1; id=1\0x";
  char id[MTA_STS_MAX_ID + 1], err[MTA_STS_ERR_LEN];
  assert_int_equal(
      mta_sts_txt_parse(id, err, sizeof(err), nul, sizeof(nul) - 1), -1);
  static const uint8_t high[] = "v=STSv1; id=1; e=\xc3\xa9";
  assert_int_equal(
      mta_sts_txt_parse(id, err, sizeof(err), high, sizeof(high) - 1), -1);
}

static struct dns_rr txt_rr(const char *text) {
  struct dns_rr rr = {.owner = "_mta-sts.example.com", .type = DNS_TYPE_TXT};
  rr.rd.txt.data = (const uint8_t *)text;
  rr.rd.txt.data_len = strlen(text);
  return rr;
}

struct find_case {
  const char *label;
  const char *recs[4]; /* NULL-terminated; "TLSA" makes a TLSA RR */
  enum mta_sts_txt want;
  const char *want_id;
};

static const struct find_case find_cases[] = {
    {"one record", {"v=STSv1; id=7", NULL}, MTA_STS_TXT_FOUND, "7"},
    {"beside SPF",
     {"v=spf1 -all", "v=STSv1; id=8", NULL},
     MTA_STS_TXT_FOUND,
     "8"},
    {"none", {NULL}, MTA_STS_TXT_NONE, NULL},
    {"only SPF", {"v=spf1 -all", NULL}, MTA_STS_TXT_NONE, NULL},
    {"two",
     {"v=STSv1; id=1", "v=STSv1; id=2", NULL},
     MTA_STS_TXT_INVALID,
     NULL},
    {"the one is bad", {"v=STSv1; id=a-b", NULL}, MTA_STS_TXT_INVALID, NULL},
    {"not beginning v=STSv1; is discarded",
     {"v=STSv1", "v=STSv1; id=3", NULL},
     MTA_STS_TXT_FOUND,
     "3"},
    {"other types skipped",
     {"TLSA", "v=STSv1; id=4", NULL},
     MTA_STS_TXT_FOUND,
     "4"},
};

static void test_txt_find(void **state) {
  (void)state;
  for (size_t i = 0; i < ARRAY_LEN(find_cases); i++) {
    const struct find_case *c = &find_cases[i];
    struct dns_rr rrs[4];
    size_t n = 0;
    for (; c->recs[n] != NULL; n++) {
      rrs[n] = txt_rr(c->recs[n]);
      if (strcmp(c->recs[n], "TLSA") == 0) {
        rrs[n].type = DNS_TYPE_TLSA;
        rrs[n].rd.tlsa.data = (const uint8_t *)"v=STSv1; id=9";
        rrs[n].rd.tlsa.data_len = 13;
      }
    }
    char id[MTA_STS_MAX_ID + 1] = "", err[MTA_STS_ERR_LEN] = "";
    enum mta_sts_txt got = mta_sts_txt_find(id, err, sizeof(err), rrs, n);
    if (got != c->want) {
      fail_msg("%s: got %d (%s), want %d", c->label, got, err, c->want);
    }
    if (got == MTA_STS_TXT_FOUND && strcmp(id, c->want_id) != 0) {
      fail_msg("%s: id got %s, want %s", c->label, id, c->want_id);
    }
  }
}

/* ---- policy files ---- */

struct policy_case {
  const char *label;
  const char *in;
  int want_ok;
  enum mta_sts_mode mode;
  uint32_t max_age;
  const char *mx[3]; /* the first patterns, NULL-terminated */
  size_t num_mx;
  const char *err_has; /* a part of the reason on failure */
};

static const struct policy_case policy_cases[] = {
    {"rfc example crlf",
     "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n"
     "mx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n",
     1,
     MTA_STS_MODE_ENFORCE,
     604800,
     {"mail.example.com", "*.example.net", "backupmx.example.com"},
     3,
     NULL},
    {"lf, no final line end",
     "version: STSv1\nmode: testing\nmx: mx.example.org\nmax_age: 86400",
     1,
     MTA_STS_MODE_TESTING,
     86400,
     {"mx.example.org"},
     1,
     NULL},
    {"mixed line ends, other order, extension",
     "max_age: 1\r\nfoo.bar: some value, with spaces\nmode: enforce\r\n"
     "mx: a.test\nversion: STSv1\n",
     1,
     MTA_STS_MODE_ENFORCE,
     1,
     {"a.test"},
     1,
     NULL},
    {"mode none without mx",
     "version: STSv1\nmode: none\nmax_age: 0\n",
     1,
     MTA_STS_MODE_NONE,
     0,
     {NULL},
     0,
     NULL},
    {"tab after the colon, blanks at the end",
     "version:\tSTSv1 \nmode:  enforce\t\nmx: a.test  \nmax_age: 5\n",
     1,
     MTA_STS_MODE_ENFORCE,
     5,
     {"a.test"},
     1,
     NULL},
    {"max_age at the limit",
     "version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 31557600\n",
     1,
     MTA_STS_MODE_ENFORCE,
     31557600,
     {"a.test"},
     1,
     NULL},
    {"utf-8 in an extension",
     "version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 5\n"
     "note: caf\xc3\xa9 \xe2\x82\xac\n",
     1,
     MTA_STS_MODE_ENFORCE,
     5,
     {"a.test"},
     1,
     NULL},
    {"mx in upper case kept as written",
     "version: STSv1\nmode: enforce\nmx: MX.Example.TEST\nmax_age: 5\n",
     1,
     MTA_STS_MODE_ENFORCE,
     5,
     {"MX.Example.TEST"},
     1,
     NULL},
    {"testing needs mx",
     "version: STSv1\nmode: testing\nmax_age: 5\n",
     0,
     0,
     0,
     {NULL},
     0,
     "no mx field"},
    {"no version",
     "mode: enforce\nmx: a.test\nmax_age: 5\n",
     0,
     0,
     0,
     {NULL},
     0,
     "no version"},
    {"no mode",
     "version: STSv1\nmx: a.test\nmax_age: 5\n",
     0,
     0,
     0,
     {NULL},
     0,
     "no mode"},
    {"no max_age",
     "version: STSv1\nmode: enforce\nmx: a.test\n",
     0,
     0,
     0,
     {NULL},
     0,
     "no max_age"},
    {"other version",
     "version: STSv2\nmode: enforce\nmx: a\nmax_age: 5\n",
     0,
     0,
     0,
     {NULL},
     0,
     "line 1: version"},
    {"mode twice",
     "version: STSv1\nmode: enforce\nmode: testing\nmx: a\nmax_age: 5\n",
     0,
     0,
     0,
     {NULL},
     0,
     "line 3: mode given twice"},
    {"unknown mode",
     "version: STSv1\nmode: report\nmx: a\nmax_age: 5\n",
     0,
     0,
     0,
     {NULL},
     0,
     "line 2: mode"},
    {"mode in upper case is an extension",
     "version: STSv1\nMode: enforce\nmx: a\nmax_age: 5\n",
     0,
     0,
     0,
     {NULL},
     0,
     "no mode"},
    {"max_age over the limit",
     "version: STSv1\nmode: enforce\nmx: a\nmax_age: 31557601\n",
     0,
     0,
     0,
     {NULL},
     0,
     "line 4: max_age: over"},
    {"max_age of 11 digits",
     "version: STSv1\nmode: enforce\nmx: a\nmax_age: 00000000001\n",
     0,
     0,
     0,
     {NULL},
     0,
     "max_age"},
    {"max_age negative",
     "version: STSv1\nmode: enforce\nmx: a\nmax_age: -1\n",
     0,
     0,
     0,
     {NULL},
     0,
     "max_age"},
    {"max_age empty",
     "version: STSv1\nmode: enforce\nmx: a\nmax_age:\n",
     0,
     0,
     0,
     {NULL},
     0,
     "max_age"},
    {"two wildcards",
     "version: STSv1\nmode: enforce\nmx: *.*.a.test\n"
     "max_age: 5\n",
     0,
     0,
     0,
     {NULL},
     0,
     "line 3: mx"},
    {"empty label",
     "version: STSv1\nmode: enforce\nmx: a..test\nmax_age: 5\n",
     0,
     0,
     0,
     {NULL},
     0,
     "mx"},
    {"hyphen first",
     "version: STSv1\nmode: enforce\nmx: -a.test\nmax_age: 5\n",
     0,
     0,
     0,
     {NULL},
     0,
     "mx"},
    {"trailing dot",
     "version: STSv1\nmode: enforce\nmx: a.test.\nmax_age: 5\n",
     0,
     0,
     0,
     {NULL},
     0,
     "mx"},
    {"underscore",
     "version: STSv1\nmode: enforce\nmx: a_b.test\nmax_age: 5\n",
     0,
     0,
     0,
     {NULL},
     0,
     "mx"},
    {"bare wildcard",
     "version: STSv1\nmode: enforce\nmx: *\nmax_age: 5\n",
     0,
     0,
     0,
     {NULL},
     0,
     "mx"},
    {"wildcard inside",
     "version: STSv1\nmode: enforce\nmx: a.*.test\n"
     "max_age: 5\n",
     0,
     0,
     0,
     {NULL},
     0,
     "mx"},
    {"label of 64",
     "version: STSv1\nmode: enforce\n"
     "mx: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.t\n"
     "max_age: 5\n",
     0,
     0,
     0,
     {NULL},
     0,
     "mx"},
    {"empty line inside",
     "version: STSv1\n\nmode: enforce\nmx: a\nmax_age: 5\n",
     0,
     0,
     0,
     {NULL},
     0,
     "line 2: empty line"},
    {"two line ends at the end",
     "version: STSv1\nmode: enforce\nmx: a\nmax_age: 5\n\n",
     0,
     0,
     0,
     {NULL},
     0,
     "line 5: empty line"},
    {"only a line end", "\n", 0, 0, 0, {NULL}, 0, "empty line"},
    {"empty", "", 0, 0, 0, {NULL}, 0, "empty policy"},
    {"bare cr",
     "version: STSv1\rmode: enforce\nmx: a\nmax_age: 5\n",
     0,
     0,
     0,
     {NULL},
     0,
     "line 1: CR"},
    {"blank before the colon",
     "version: STSv1\nmode : enforce\nmx: a\nmax_age: 5\n",
     0,
     0,
     0,
     {NULL},
     0,
     "line 2: want key: value"},
    {"no colon",
     "version: STSv1\nmode enforce\nmx: a\nmax_age: 5\n",
     0,
     0,
     0,
     {NULL},
     0,
     "line 2"},
    {"leading blank",
     " version: STSv1\nmode: enforce\nmx: a\nmax_age: 5\n",
     0,
     0,
     0,
     {NULL},
     0,
     "line 1"},
    {"bad utf-8 in an extension",
     "version: STSv1\nmode: enforce\nmx: a\nmax_age: 5\nnote: \xff\n",
     0,
     0,
     0,
     {NULL},
     0,
     "line 5: malformed value"},
    {"control octet in an extension",
     "version: STSv1\nmode: enforce\nmx: a\nmax_age: 5\nnote: a\x01z\n",
     0,
     0,
     0,
     {NULL},
     0,
     "line 5"},
    {"empty extension value",
     "version: STSv1\nmode: enforce\nmx: a\nmax_age: 5\nnote:\n",
     0,
     0,
     0,
     {NULL},
     0,
     "line 5"},
    {"comment line",
     "# policy\nversion: STSv1\nmode: enforce\nmx: a\nmax_age: 5\n",
     0,
     0,
     0,
     {NULL},
     0,
     "line 1"},
};

static void check_policy_case(const struct policy_case *c) {
  struct mta_sts_policy p;
  char err[MTA_STS_ERR_LEN] = "";
  int got = mta_sts_policy_parse(&p, err, sizeof(err), (const uint8_t *)c->in,
                                 strlen(c->in));
  if ((got == 0) != c->want_ok) {
    fail_msg("%s: got %d (%s), want %s", c->label, got, err,
             c->want_ok ? "ok" : "error");
  }
  if (!c->want_ok) {
    if (strstr(err, c->err_has) == NULL) {
      fail_msg("%s: reason got '%s', want it to hold '%s'", c->label, err,
               c->err_has);
    }
    return;
  }
  if (p.mode != c->mode || p.max_age != c->max_age || p.num_mx != c->num_mx) {
    fail_msg("%s: got mode %d max_age %u mx %zu, want %d %u %zu", c->label,
             p.mode, p.max_age, p.num_mx, c->mode, c->max_age, c->num_mx);
  }
  for (size_t k = 0; k < 3 && c->mx[k] != NULL; k++) {
    if (strcmp(mta_sts_policy_mx(&p, k), c->mx[k]) != 0) {
      fail_msg("%s: mx %zu got %s, want %s", c->label, k,
               mta_sts_policy_mx(&p, k), c->mx[k]);
    }
  }
}

static void test_policy_table(void **state) {
  (void)state;
  for (size_t i = 0; i < ARRAY_LEN(policy_cases); i++) {
    check_policy_case(&policy_cases[i]);
  }
}

/* make_policy writes a valid header, then n mx lines, then pads with an
 * extension line to exactly total octets (0: no padding). */
static size_t make_policy(char *out, size_t cap, size_t n_mx, size_t total) {
  size_t len =
      (size_t)snprintf(out, cap, "version: STSv1\nmode: enforce\nmax_age: 9\n");
  for (size_t i = 0; i < n_mx; i++) {
    len += (size_t)snprintf(out + len, cap - len, "mx: mx%zu.example.com\n", i);
  }
  if (total > 0) {
    assert_true(total > len + 8 && total <= cap);
    size_t pad = total - len - 4; /* "x: " and "\n" */
    memcpy(out + len, "x: ", 3);
    memset(out + len + 3, 'a', pad);
    out[len + 3 + pad] = '\n';
    len = total;
  }
  return len;
}

static void test_policy_limits(void **state) {
  (void)state;
  size_t cap = MTA_STS_MAX_POLICY_LEN + 64;
  char *buf = malloc(cap);
  assert_non_null(buf);
  struct mta_sts_policy p;
  char err[MTA_STS_ERR_LEN] = "";
  /* MTA_STS_MAX_MX patterns are kept; one more is refused. */
  size_t len = make_policy(buf, cap, MTA_STS_MAX_MX, 0);
  assert_int_equal(
      mta_sts_policy_parse(&p, err, sizeof(err), (uint8_t *)buf, len), 0);
  assert_int_equal(p.num_mx, MTA_STS_MAX_MX);
  assert_string_equal(mta_sts_policy_mx(&p, MTA_STS_MAX_MX - 1),
                      "mx63.example.com");
  len = make_policy(buf, cap, MTA_STS_MAX_MX + 1, 0);
  assert_int_equal(
      mta_sts_policy_parse(&p, err, sizeof(err), (uint8_t *)buf, len), -1);
  assert_non_null(strstr(err, "more than 64 mx"));
  /* Exactly MTA_STS_MAX_POLICY_LEN octets parse; one more does not. */
  len = make_policy(buf, cap, 1, MTA_STS_MAX_POLICY_LEN);
  assert_int_equal(
      mta_sts_policy_parse(&p, err, sizeof(err), (uint8_t *)buf, len), 0);
  len = make_policy(buf, cap, 1, MTA_STS_MAX_POLICY_LEN + 1);
  assert_int_equal(
      mta_sts_policy_parse(&p, err, sizeof(err), (uint8_t *)buf, len), -1);
  assert_non_null(strstr(err, "over 65536"));
  /* Patterns of full length fill the text arena: refused, not cut. */
  len = (size_t)snprintf(buf, cap,
                         "version: STSv1\nmode: enforce\n"
                         "max_age: 9\n");
  char label[64];
  memset(label, 'a', 63);
  label[63] = '\0';
  for (int i = 0; i < 40; i++) {
    /* 63 + 1 + 63 + 1 + 63 + 1 + 61 = 253 octets: a valid name */
    len += (size_t)snprintf(buf + len, cap - len, "mx: %c%s.%s.%s.b%s\n",
                            'a' + i % 26, label + 1, label, label, label + 3);
  }
  assert_int_equal(
      mta_sts_policy_parse(&p, err, sizeof(err), (uint8_t *)buf, len), -1);
  assert_non_null(strstr(err, "octets of them"));
  free(buf);
}

/* Every prefix of valid inputs, from exact-size copies: no read past the
 * end; a prefix without the required fields is refused (one cut inside
 * the last line may well be a valid, different policy: why a body up to
 * the close needs close_notify, crypto/https.c). */
static void test_every_prefix(void **state) {
  (void)state;
  const char *policy = "version: STSv1\r\nmode: enforce\r\nmx: a.example\r\n"
                       "mx: *.b.example\r\nmax_age: 86400\r\nx: y\r\n";
  size_t n = strlen(policy);
  for (size_t i = 0; i <= n; i++) {
    uint8_t *copy = malloc(i ? i : 1);
    assert_non_null(copy);
    memcpy(copy, policy, i);
    struct mta_sts_policy p;
    char err[MTA_STS_ERR_LEN];
    int rc = mta_sts_policy_parse(&p, err, sizeof(err), copy, i);
    size_t max_age_at = (size_t)(strstr(policy, "max_age: 8") - policy) + 10;
    if (rc == 0 && i < max_age_at) {
      fail_msg("prefix %zu parsed", i);
    }
    if (i == n && (rc != 0 || p.max_age != 86400 || p.num_mx != 2)) {
      fail_msg("whole policy: %d %s", rc, err);
    }
    free(copy);
  }
  const char *txt = "v=STSv1; id=20190429T010101; ext=1;";
  n = strlen(txt);
  for (size_t i = 0; i <= n; i++) {
    uint8_t *copy = malloc(i ? i : 1);
    assert_non_null(copy);
    memcpy(copy, txt, i);
    char id[MTA_STS_MAX_ID + 1], err[MTA_STS_ERR_LEN];
    int rc = mta_sts_txt_parse(id, err, sizeof(err), copy, i);
    if (rc == 0 && i < strlen("v=STSv1; id=2")) {
      fail_msg("prefix %zu parsed: id %s", i, id);
    }
    if (i == n && (rc != 0 || strcmp(id, "20190429T010101") != 0)) {
      fail_msg("whole record: %d %s", rc, err);
    }
    (void)mta_sts_txt_is_sts(copy, i);
    free(copy);
  }
}

/* ---- matching ---- */

struct match_case {
  const char *pattern;
  const char *host;
  int want;
};

static const struct match_case match_cases[] = {
    {"*.example.com", "mail.example.com", 1},
    {"*.example.com", "a.b.example.com", 0}, /* one label only */
    {"*.example.com", "example.com", 0},
    {"*.example.com", ".example.com", 0}, /* an empty label */
    {"*.example.com", "MAIL.Example.COM.", 1},
    {"*.example.com.", "a.example.com", 1},
    {"*.example.com", "mailexample.com", 0},
    {"*.example.com", "mail.example.com.evil", 0},
    {"mail.example.com", "mail.example.com", 1},
    {"mail.example.com", "mail.example.com.", 1},
    {"mail.example.com", "MAIL.EXAMPLE.COM", 1},
    {"mail.example.com", "mail.example.co", 0},
    {"mail.example.com", "xmail.example.com", 0},
    {"mail.example.com", "a.mail.example.com", 0},
    {"*", "a", 0},
    {"*.", "a.", 0},
    {"*x.example.com", "ax.example.com", 0},
    {"", "", 0},
    {"a.test", "", 0},
    {"", "a.test", 0},
    {"*.com", "example.com", 1},
};

static void test_pattern_match(void **state) {
  (void)state;
  for (size_t i = 0; i < ARRAY_LEN(match_cases); i++) {
    const struct match_case *c = &match_cases[i];
    int got = mta_sts_pattern_match(c->pattern, c->host);
    if (got != c->want) {
      fail_msg("pattern '%s' host '%s': got %d, want %d", c->pattern, c->host,
               got, c->want);
    }
  }
}

static void test_mx_match(void **state) {
  (void)state;
  const char *in = "version: STSv1\nmode: enforce\nmx: mail.example.com\n"
                   "mx: *.example.net\nmax_age: 5\n";
  struct mta_sts_policy p;
  char err[MTA_STS_ERR_LEN];
  assert_int_equal(mta_sts_policy_parse(&p, err, sizeof(err),
                                        (const uint8_t *)in, strlen(in)),
                   0);
  assert_int_equal(mta_sts_mx_match(&p, "mail.example.com"), 1);
  assert_int_equal(mta_sts_mx_match(&p, "mx1.example.net."), 1);
  assert_int_equal(mta_sts_mx_match(&p, "example.net"), 0);
  assert_int_equal(mta_sts_mx_match(&p, "a.b.example.net"), 0);
  assert_int_equal(mta_sts_mx_match(&p, "mx.example.org"), 0);
  /* mode none: no patterns, nothing matches */
  in = "version: STSv1\nmode: none\nmax_age: 5\n";
  assert_int_equal(mta_sts_policy_parse(&p, err, sizeof(err),
                                        (const uint8_t *)in, strlen(in)),
                   0);
  assert_int_equal(mta_sts_mx_match(&p, "mail.example.com"), 0);
}

static void test_domain_valid(void **state) {
  (void)state;
  static const struct {
    const char *domain;
    int want;
  } cases[] = {
      {"example.com", 1},
      {"Example.COM.", 1},
      {"a", 1},
      {"xn--bcher-kva.example", 1},
      {"", 0},
      {".", 0},
      {"a..b", 0},
      {"-a.b", 0},
      {"a-.b", 0},
      {"a_b.c", 0},
      {"a b", 0},
      {"[1.2.3.4]", 0},
      {"a.b\r\nHost: x", 0},
      {"*.example.com", 0},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    if (mta_sts_domain_valid(cases[i].domain) != cases[i].want) {
      fail_msg("'%s': want %d", cases[i].domain, cases[i].want);
    }
  }
  char long_name[300];
  memset(long_name, 'a', sizeof(long_name));
  for (size_t i = 63; i < sizeof(long_name); i += 64) {
    long_name[i] = '.';
  }
  long_name[253] = '\0'; /* labels of 63, 253 octets */
  assert_int_equal(mta_sts_domain_valid(long_name), 1);
  long_name[253] = 'a';
  long_name[254] = '\0';
  assert_int_equal(mta_sts_domain_valid(long_name), 0);
}

/* ---- the cache ---- */

static struct mta_sts_policy policy_of(enum mta_sts_mode mode, uint32_t max_age,
                                       const char *mx) {
  char text[256];
  snprintf(text, sizeof(text),
           "version: STSv1\nmode: %s\nmx: %s\nmax_age: %u\n",
           mta_sts_mode_name(mode), mx, max_age);
  struct mta_sts_policy p;
  char err[MTA_STS_ERR_LEN];
  if (mta_sts_policy_parse(&p, err, sizeof(err), (const uint8_t *)text,
                           strlen(text)) != 0) {
    fail_msg("test bug: %s", err);
  }
  return p;
}

static void test_cache_expiry(void **state) {
  (void)state;
  struct mta_sts_cache *c = mta_sts_cache_new(0);
  assert_non_null(c);
  struct mta_sts_policy p = policy_of(MTA_STS_MODE_ENFORCE, 100, "a.test");
  struct mta_sts_cached got;
  assert_int_equal(mta_sts_cache_get(c, &got, "example.com", 1000), 0);
  assert_int_equal(mta_sts_cache_put(c, "Example.COM.", "id1", &p, 1000), 0);
  assert_int_equal(mta_sts_cache_get(c, &got, "example.com", 1000), 1);
  assert_string_equal(got.id, "id1");
  assert_int_equal(got.fetched_at, 1000);
  assert_int_equal(got.expires_at, 1100);
  assert_string_equal(mta_sts_policy_mx(&got.policy, 0), "a.test");
  assert_int_equal(mta_sts_cache_get(c, &got, "EXAMPLE.com.", 1099), 1);
  /* §5.1: never used past max_age; the entry is gone then. */
  assert_int_equal(mta_sts_cache_get(c, &got, "example.com", 1100), 0);
  struct mta_sts_cache_stats st;
  mta_sts_cache_get_stats(c, &st);
  assert_int_equal(st.entries, 0);
  assert_int_equal(st.hits, 2);
  /* max_age 0: answered once, never from the cache. */
  struct mta_sts_policy zero = policy_of(MTA_STS_MODE_TESTING, 0, "b.test");
  assert_int_equal(mta_sts_cache_put(c, "zero.test", "z", &zero, 5), 0);
  assert_int_equal(mta_sts_cache_get(c, &got, "zero.test", 5), 0);
  /* A new policy replaces the old one. */
  assert_int_equal(mta_sts_cache_put(c, "example.com", "id1", &p, 2000), 0);
  struct mta_sts_policy q = policy_of(MTA_STS_MODE_TESTING, 50, "b.test");
  assert_int_equal(mta_sts_cache_put(c, "example.com", "id2", &q, 2010), 0);
  assert_int_equal(mta_sts_cache_get(c, &got, "example.com", 2011), 1);
  assert_string_equal(got.id, "id2");
  assert_int_equal(got.policy.mode, MTA_STS_MODE_TESTING);
  assert_int_equal(got.expires_at, 2060);
  /* Bad keys. */
  assert_int_equal(mta_sts_cache_put(c, "", "x", &p, 1), -1);
  assert_int_equal(mta_sts_cache_put(
                       c, "a.test", "0123456789abcdef0123456789abcdefX", &p, 1),
                   -1);
  mta_sts_cache_free(c);
}

static void test_cache_lru(void **state) {
  (void)state;
  struct mta_sts_cache *c = mta_sts_cache_new(2);
  struct mta_sts_policy p = policy_of(MTA_STS_MODE_ENFORCE, 1000, "a.test");
  struct mta_sts_cached got;
  assert_int_equal(mta_sts_cache_put(c, "a.test", "1", &p, 0), 0);
  assert_int_equal(mta_sts_cache_put(c, "b.test", "1", &p, 0), 0);
  assert_int_equal(mta_sts_cache_get(c, &got, "a.test", 1), 1); /* a newer */
  assert_int_equal(mta_sts_cache_put(c, "c.test", "1", &p, 2), 0);
  assert_int_equal(mta_sts_cache_get(c, &got, "b.test", 3), 0); /* evicted */
  assert_int_equal(mta_sts_cache_get(c, &got, "a.test", 3), 1);
  assert_int_equal(mta_sts_cache_get(c, &got, "c.test", 3), 1);
  struct mta_sts_cache_stats st;
  mta_sts_cache_get_stats(c, &st);
  assert_int_equal(st.entries, 2);
  assert_int_equal(st.evictions, 1);
  /* A failure note takes a place too: a (used before c) goes. */
  mta_sts_cache_note_failure(c, "d.test", "9", 4);
  assert_int_equal(mta_sts_cache_get(c, &got, "a.test", 5), 0);
  assert_int_equal(mta_sts_cache_get(c, &got, "c.test", 5), 1);
  assert_int_equal(mta_sts_cache_may_fetch(c, "d.test", "9", 5), 0);
  mta_sts_cache_free(c);
  mta_sts_cache_free(NULL);
}

/* §5.1: a failed refresh keeps the cached policy in use until it expires;
 * §3.3: the failed id is not fetched again for MTA_STS_RETRY_AFTER. */
static void test_cache_keep_on_failure(void **state) {
  (void)state;
  struct mta_sts_cache *c = mta_sts_cache_new(8);
  struct mta_sts_policy p = policy_of(MTA_STS_MODE_ENFORCE, 1000, "a.test");
  struct mta_sts_cached got;
  int64_t t = 10000;
  assert_int_equal(mta_sts_cache_put(c, "example.com", "old", &p, t), 0);
  assert_int_equal(mta_sts_cache_may_fetch(c, "example.com", "new", t), 1);
  mta_sts_cache_note_failure(c, "example.com", "new", t + 10);
  assert_int_equal(mta_sts_cache_get(c, &got, "example.com", t + 11), 1);
  assert_string_equal(got.id, "old");
  assert_int_equal(mta_sts_cache_may_fetch(c, "example.com", "new", t + 11), 0);
  assert_int_equal(mta_sts_cache_may_fetch(c, "example.com", "other", t + 11),
                   1);
  assert_int_equal(mta_sts_cache_may_fetch(c, "example.com", "new",
                                           t + 10 + MTA_STS_RETRY_AFTER - 1),
                   0);
  assert_int_equal(mta_sts_cache_may_fetch(c, "example.com", "new",
                                           t + 10 + MTA_STS_RETRY_AFTER),
                   1);
  /* The cached policy still ends at its max_age. */
  assert_int_equal(mta_sts_cache_get(c, &got, "example.com", t + 999), 1);
  assert_int_equal(mta_sts_cache_get(c, &got, "example.com", t + 1000), 0);
  /* A failure with nothing cached: no policy, fetch paused, then gone. */
  mta_sts_cache_note_failure(c, "fresh.test", "1", 0);
  assert_int_equal(mta_sts_cache_get(c, &got, "fresh.test", 1), 0);
  assert_int_equal(mta_sts_cache_may_fetch(c, "fresh.test", "1", 1), 0);
  assert_int_equal(
      mta_sts_cache_may_fetch(c, "fresh.test", "1", MTA_STS_RETRY_AFTER), 1);
  struct mta_sts_cache_stats st;
  mta_sts_cache_get_stats(c, &st);
  assert_int_equal(st.entries, 0);
  /* A successful fetch clears the note. */
  mta_sts_cache_note_failure(c, "x.test", "2", 0);
  assert_int_equal(mta_sts_cache_put(c, "x.test", "2", &p, 1), 0);
  assert_int_equal(mta_sts_cache_may_fetch(c, "x.test", "2", 2), 1);
  mta_sts_cache_free(c);
}

struct hammer {
  struct mta_sts_cache *c;
  int seed;
};

static void *hammer_main(void *arg) {
  struct hammer *h = arg;
  struct mta_sts_policy p = policy_of(MTA_STS_MODE_ENFORCE, 100, "a.test");
  struct mta_sts_cached got;
  char name[32];
  for (int i = 0; i < 20000; i++) {
    snprintf(name, sizeof(name), "d%d.test", (i * 7 + h->seed) % 97);
    switch (i % 4) {
    case 0:
      mta_sts_cache_put(h->c, name, "1", &p, i / 100);
      break;
    case 1:
      if (mta_sts_cache_get(h->c, &got, name, i / 100) &&
          got.policy.num_mx != 1) {
        return "torn copy";
      }
      break;
    case 2:
      mta_sts_cache_note_failure(h->c, name, "2", i / 100);
      break;
    default:
      (void)mta_sts_cache_may_fetch(h->c, name, "2", i / 100);
    }
  }
  return NULL;
}

static void test_cache_threads(void **state) {
  (void)state;
  struct mta_sts_cache *c = mta_sts_cache_new(32);
  pthread_t th[4];
  struct hammer h[4];
  for (int i = 0; i < 4; i++) {
    h[i] = (struct hammer){c, i * 13};
    assert_int_equal(pthread_create(&th[i], NULL, hammer_main, &h[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    void *rc;
    pthread_join(th[i], &rc);
    assert_null(rc);
  }
  struct mta_sts_cache_stats st;
  mta_sts_cache_get_stats(c, &st);
  assert_true(st.entries <= 32);
  mta_sts_cache_free(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_txt_parse),
      cmocka_unit_test(test_txt_binary),
      cmocka_unit_test(test_txt_find),
      cmocka_unit_test(test_policy_table),
      cmocka_unit_test(test_policy_limits),
      cmocka_unit_test(test_every_prefix),
      cmocka_unit_test(test_pattern_match),
      cmocka_unit_test(test_mx_match),
      cmocka_unit_test(test_domain_valid),
      cmocka_unit_test(test_cache_expiry),
      cmocka_unit_test(test_cache_lru),
      cmocka_unit_test(test_cache_keep_on_failure),
      cmocka_unit_test(test_cache_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
