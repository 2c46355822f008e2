/* Unit tests: policy/tlsrpt — the _smtp._tls TXT record (RFC 8460 §3):
 * good and bad records, several rua URIs, non-mailto schemes, every
 * prefix; the aggregate (§4): sessions by policy, failure rows, its
 * bounds and merging; the JSON report (§4.4) against expected text and a
 * small JSON checker; the gzip member (RFC 1952, zlib) and the
 * report message (§5.3).
 *
 * Table-driven with labelled cases; parsers are also run on every prefix
 * of valid inputs, each copied to an exact-size heap block so a read past
 * the end shows under ASan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <cmocka.h>

#include "policy/tlsrpt.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- TXT records ---- */

struct txt_case {
  const char *label;
  const char *rec;
  int want_ok;
  const char *want_uris; /* "m:addr h:uri ..." kept, in order */
  size_t want_ignored;
};

static const struct txt_case txt_cases[] = {
    {"rfc example", "v=TLSRPTv1;rua=mailto:reports@example.com", 1,
     "m:reports@example.com", 0},
    {"two URIs in one field",
     "v=TLSRPTv1; rua=mailto:a@x.test , https://r.x.test/tlsrpt;", 1,
     "m:a@x.test h:https://r.x.test/tlsrpt", 0},
    {"two rua fields", "v=TLSRPTv1; rua=mailto:a@x.test; rua=mailto:b@y.test",
     1, "m:a@x.test m:b@y.test", 0},
    {"extension fields", "v=TLSRPTv1; ext.a_b-c=1; rua=mailto:a@x.test; z=q", 1,
     "m:a@x.test", 0},
    {"blanks and a final separator", "v=TLSRPTv1 ;\trua=mailto:a@x.test ; ", 1,
     "m:a@x.test", 0},
    {"scheme in upper case", "v=TLSRPTv1; rua=MAILTO:a@x.test", 1, "m:a@x.test",
     0},
    {"percent-encoded mailbox", "v=TLSRPTv1; rua=mailto:tls%2Drpt@x.test", 1,
     "m:tls-rpt@x.test", 0},
    {"hfields dropped", "v=TLSRPTv1; rua=mailto:a@x.test?subject=hi", 1,
     "m:a@x.test", 0},
    {"other schemes counted",
     "v=TLSRPTv1; rua=http://x.test/,ftp://y,mailto:a@x.test", 1, "m:a@x.test",
     2},
    {"encoded comma: two mailboxes in one",
     "v=TLSRPTv1; rua=mailto:a@x.test%2Cb@y.test", 1, "", 1},
    {"mailto without domain", "v=TLSRPTv1; rua=mailto:postmaster", 1, "", 1},
    {"mailto with 8-bit text", "v=TLSRPTv1; rua=mailto:%C3%A9@x.test", 1, "",
     1},
    {"bad percent escape", "v=TLSRPTv1; rua=mailto:a%2@x.test", 1, "", 1},
    {"https only", "v=TLSRPTv1; rua=https://x.test/r", 1, "h:https://x.test/r",
     0},
    {"nine URIs: one past the limit",
     "v=TLSRPTv1; rua=mailto:a1@x.test,mailto:a2@x.test,mailto:a3@x.test,"
     "mailto:a4@x.test,mailto:a5@x.test,mailto:a6@x.test,mailto:a7@x.test,"
     "mailto:a8@x.test,mailto:a9@x.test",
     1,
     "m:a1@x.test m:a2@x.test m:a3@x.test m:a4@x.test m:a5@x.test "
     "m:a6@x.test m:a7@x.test m:a8@x.test",
     1},
    {"unencoded bang", "v=TLSRPTv1; rua=mailto:a!b@x.test", 0, NULL, 0},
    {"no rua", "v=TLSRPTv1; ext=1", 0, NULL, 0},
    {"version only", "v=TLSRPTv1", 0, NULL, 0},
    {"version and separator", "v=TLSRPTv1;", 0, NULL, 0},
    {"other version", "v=TLSRPTv2; rua=mailto:a@x.test", 0, NULL, 0},
    {"version in upper case", "V=TLSRPTv1; rua=mailto:a@x.test", 0, NULL, 0},
    {"rua in upper case is an extension", "v=TLSRPTv1; RUA=mailto:a@x.test", 0,
     NULL, 0},
    {"no separator", "v=TLSRPTv1 rua=mailto:a@x.test", 0, NULL, 0},
    {"empty rua", "v=TLSRPTv1; rua=", 0, NULL, 0},
    {"empty URI in a list", "v=TLSRPTv1; rua=mailto:a@x.test,,mailto:b@x.test",
     0, NULL, 0},
    {"URI without scheme", "v=TLSRPTv1; rua=a@x.test", 0, NULL, 0},
    {"empty field", "v=TLSRPTv1; rua=mailto:a@x.test;; ", 0, NULL, 0},
    {"extension without value", "v=TLSRPTv1; rua=mailto:a@x.test; e=", 0, NULL,
     0},
    {"leading blank", " v=TLSRPTv1; rua=mailto:a@x.test", 0, NULL, 0},
    {"empty", "", 0, NULL, 0},
};

/* uris_text writes the kept URIs as "m:addr h:uri". */
static void uris_text(const struct tlsrpt_record *r, char *out, size_t len) {
  size_t n = 0;
  out[0] = '\0';
  for (size_t i = 0; i < r->num_uris; i++) {
    n += (size_t)snprintf(out + n, len - n, "%s%c:%s", i ? " " : "",
                          r->uris[i].kind == TLSRPT_URI_MAILTO ? 'm' : 'h',
                          r->uris[i].text);
  }
}

static void test_txt_parse(void **state) {
  (void)state;
  for (size_t i = 0; i < ARRAY_LEN(txt_cases); i++) {
    const struct txt_case *c = &txt_cases[i];
    struct tlsrpt_record rec;
    char err[TLSRPT_ERR_LEN] = "", got[2048];
    int rc = tlsrpt_txt_parse(&rec, err, sizeof(err), (const uint8_t *)c->rec,
                              strlen(c->rec));
    if ((rc == 0) != c->want_ok) {
      fail_msg("%s: got %d (%s), want %s", c->label, rc, err,
               c->want_ok ? "ok" : "error");
    }
    if (!c->want_ok) {
      if (err[0] == '\0') {
        fail_msg("%s: no reason given", c->label);
      }
      continue;
    }
    uris_text(&rec, got, sizeof(got));
    if (strcmp(got, c->want_uris) != 0 || rec.num_ignored != c->want_ignored) {
      fail_msg("%s: got \"%s\" ignored %zu, want \"%s\" ignored %zu", c->label,
               got, rec.num_ignored, c->want_uris, c->want_ignored);
    }
  }
}

static void test_txt_limits(void **state) {
  (void)state;
  struct tlsrpt_record rec;
  char err[TLSRPT_ERR_LEN];
  /* A record over TLSRPT_MAX_RECORD, valid otherwise. */
  size_t n = TLSRPT_MAX_RECORD + 1;
  char *big = malloc(n);
  assert_non_null(big);
  memset(big, 'a', n);
  memcpy(big, "v=TLSRPTv1; rua=mailto:a@x.test; e=", 35);
  assert_int_equal(tlsrpt_txt_parse(&rec, err, sizeof(err), (uint8_t *)big, n),
                   -1);
  assert_non_null(strstr(err, "longer"));
  assert_int_equal(
      tlsrpt_txt_parse(&rec, err, sizeof(err), (uint8_t *)big, n - 1), 0);
  free(big);
  /* A URI over TLSRPT_MAX_URI is well formed, but not kept. */
  char rec_text[TLSRPT_MAX_URI + 64];
  int len = snprintf(rec_text, sizeof(rec_text), "v=TLSRPTv1; rua=https://");
  memset(rec_text + len, 'x', TLSRPT_MAX_URI);
  len += TLSRPT_MAX_URI;
  assert_int_equal(tlsrpt_txt_parse(&rec, err, sizeof(err), (uint8_t *)rec_text,
                                    (size_t)len),
                   0);
  assert_int_equal(rec.num_uris, 0);
  assert_int_equal(rec.num_ignored, 1);
  /* A NUL or a high octet inside is refused. */
  static const uint8_t nul[] = "v=TLSRPTv1; rua=mailto:a@x.test\0x";
  assert_int_equal(
      tlsrpt_txt_parse(&rec, err, sizeof(err), nul, sizeof(nul) - 1), -1);
  static const uint8_t high[] = "v=TLSRPTv1; rua=mailto:\xc3\xa9@x.test";
  assert_int_equal(
      tlsrpt_txt_parse(&rec, err, sizeof(err), high, sizeof(high) - 1), -1);
}

/* Every prefix of every valid record, in an exact-size block. */
static void test_txt_prefixes(void **state) {
  (void)state;
  for (size_t i = 0; i < ARRAY_LEN(txt_cases); i++) {
    const char *text = txt_cases[i].rec;
    size_t len = strlen(text);
    for (size_t cut = 0; txt_cases[i].want_ok && cut <= len; cut++) {
      uint8_t *p = malloc(cut ? cut : 1);
      assert_non_null(p);
      memcpy(p, text, cut);
      struct tlsrpt_record rec;
      char err[TLSRPT_ERR_LEN];
      int rc = tlsrpt_txt_parse(&rec, err, sizeof(err), p, cut);
      if (rc == 0 && rec.num_uris + rec.num_ignored == 0) {
        fail_msg("%s cut at %zu: parsed without a URI", txt_cases[i].label,
                 cut);
      }
      free(p);
    }
  }
}

static struct dns_rr txt_rr(const char *text, uint16_t type) {
  struct dns_rr rr = {.owner = "_smtp._tls.x.test", .type = type};
  rr.rd.txt.data = (const uint8_t *)text;
  rr.rd.txt.data_len = strlen(text);
  return rr;
}

static void test_txt_find(void **state) {
  (void)state;
  static const struct {
    const char *label;
    const char *recs[3];
    enum tlsrpt_txt want;
  } cases[] = {
      {"one", {"v=TLSRPTv1; rua=mailto:a@x.test", NULL}, TLSRPT_TXT_FOUND},
      {"beside SPF",
       {"v=spf1 -all", "v=TLSRPTv1;rua=mailto:a@x.test", NULL},
       TLSRPT_TXT_FOUND},
      {"none", {NULL}, TLSRPT_TXT_NONE},
      {"only others",
       {"v=spf1 -all", "v=TLSRPTv10; rua=x:y", NULL},
       TLSRPT_TXT_NONE},
      {"two",
       {"v=TLSRPTv1; rua=mailto:a@x.test", "v=TLSRPTv1; rua=mailto:b@x.test",
        NULL},
       TLSRPT_TXT_INVALID},
      {"one, malformed", {"v=TLSRPTv1; nope", NULL}, TLSRPT_TXT_INVALID},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    struct dns_rr rrs[4];
    size_t n = 0;
    for (; cases[i].recs[n] != NULL; n++) {
      rrs[n] = txt_rr(cases[i].recs[n], DNS_TYPE_TXT);
    }
    /* A record of another type is never read as TXT. */
    rrs[n++] = txt_rr("v=TLSRPTv1; rua=mailto:z@x.test", DNS_TYPE_TLSA);
    struct tlsrpt_record rec;
    char err[TLSRPT_ERR_LEN] = "";
    enum tlsrpt_txt got = tlsrpt_txt_find(&rec, err, sizeof(err), rrs, n);
    if (got != cases[i].want) {
      fail_msg("%s: got %d (%s), want %d", cases[i].label, got, err,
               cases[i].want);
    }
    if (got == TLSRPT_TXT_FOUND && strcmp(rec.uris[0].text, "a@x.test") != 0) {
      fail_msg("%s: got %s", cases[i].label, rec.uris[0].text);
    }
  }
}

static void test_classify(void **state) {
  (void)state;
  static const struct {
    const char *why;
    int dane;
    enum tlsrpt_result want;
  } cases[] = {
      {"name mismatch: wanted mx.x.test", 0, TLSRPT_CERT_HOST_MISMATCH},
      {"certificate has expired", 0, TLSRPT_CERT_EXPIRED},
      {"unable to get local issuer certificate", 0, TLSRPT_CERT_NOT_TRUSTED},
      {"self signed certificate", 0, TLSRPT_CERT_NOT_TRUSTED},
      {"no CA file to verify against", 0, TLSRPT_CERT_NOT_TRUSTED},
      {"no TLSA record matched", 1, TLSRPT_TLSA_INVALID},
      {"name mismatch: wanted mx.x.test", 1, TLSRPT_CERT_HOST_MISMATCH},
      {"unsupported certificate purpose", 0, TLSRPT_VALIDATION_FAILURE},
      {NULL, 0, TLSRPT_VALIDATION_FAILURE},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    enum tlsrpt_result got =
        tlsrpt_classify_verify(cases[i].why, cases[i].dane);
    if (got != cases[i].want) {
      fail_msg("%s: got %s, want %s", cases[i].why ? cases[i].why : "NULL",
               tlsrpt_result_name(got), tlsrpt_result_name(cases[i].want));
    }
  }
  assert_string_equal(tlsrpt_result_name(TLSRPT_STS_WEBPKI_INVALID),
                      "sts-webpki-invalid");
  assert_string_equal(tlsrpt_result_name(TLSRPT_RESULT_COUNT), "?");
  assert_string_equal(tlsrpt_policy_type_name(TLSRPT_POLICY_NONE),
                      "no-policy-found");
}

/* ---- a small JSON checker (RFC 8259 syntax, UTF-8 strings) ---- */

struct jc {
  const char *p, *end;
  int depth;
};

static int jc_value(struct jc *j);

static void jc_ws(struct jc *j) {
  while (j->p < j->end && strchr(" \t\r\n", *j->p) != NULL) {
    j->p++;
  }
}

static int jc_string(struct jc *j) {
  if (j->p >= j->end || *j->p++ != '"') {
    return 0;
  }
  while (j->p < j->end && *j->p != '"') {
    unsigned char c = (unsigned char)*j->p++;
    if (c < 0x20) {
      return 0;
    }
    if (c == '\\') {
      if (j->p >= j->end) {
        return 0;
      }
      char e = *j->p++;
      if (e == 'u') {
        for (int k = 0; k < 4; k++) {
          if (j->p >= j->end ||
              strchr("0123456789abcdefABCDEF", *j->p++) == NULL) {
            return 0;
          }
        }
      } else if (strchr("\"\\/bfnrt", e) == NULL) {
        return 0;
      }
    }
  }
  return j->p < j->end && *j->p++ == '"';
}

static int jc_list(struct jc *j, char close, int members) {
  j->p++;
  jc_ws(j);
  if (j->p < j->end && *j->p == close) {
    j->p++;
    return 1;
  }
  for (;;) {
    jc_ws(j);
    if (members) {
      if (!jc_string(j)) {
        return 0;
      }
      jc_ws(j);
      if (j->p >= j->end || *j->p++ != ':') {
        return 0;
      }
    }
    if (!jc_value(j)) {
      return 0;
    }
    jc_ws(j);
    if (j->p < j->end && *j->p == ',') {
      j->p++;
      continue;
    }
    return j->p < j->end && *j->p++ == close;
  }
}

static int jc_value(struct jc *j) {
  jc_ws(j);
  if (j->p >= j->end || ++j->depth > 32) {
    return 0;
  }
  int ok;
  if (*j->p == '{') {
    ok = jc_list(j, '}', 1);
  } else if (*j->p == '[') {
    ok = jc_list(j, ']', 0);
  } else if (*j->p == '"') {
    ok = jc_string(j);
  } else {
    const char *start = j->p;
    while (j->p < j->end && strchr("0123456789", *j->p) != NULL) {
      j->p++;
    }
    ok = j->p > start;
  }
  j->depth--;
  return ok;
}

/* json_valid: one JSON value, then only white space. */
static int json_valid(const struct buf *b) {
  struct jc j = {(const char *)b->data, (const char *)b->data + b->len, 0};
  if (!jc_value(&j)) {
    return 0;
  }
  jc_ws(&j);
  return j.p == j.end;
}

/* ---- the aggregate and the report ---- */

static const char *const sts_lines[] = {"version: STSv1", "mode: enforce",
                                        "mx: mx.a.test", "max_age: 86400"};
static const char *const sts_mx[] = {"mx.a.test"};
static const struct tlsrpt_policy sts_policy = {TLSRPT_POLICY_STS, sts_lines, 4,
                                                sts_mx, 1};
static const struct tlsrpt_policy no_policy = {TLSRPT_POLICY_NONE, NULL, 0,
                                               NULL, 0};

static struct buf report_of(const struct tlsrpt_agg *a, size_t i) {
  struct buf out = {0};
  struct tlsrpt_report_meta meta = {"mx.us.test", "postmaster@mx.us.test",
                                    "20240101T000000Z.1@mx.us.test"};
  assert_int_equal(tlsrpt_report_json(&out, a, i, &meta), 0);
  assert_true(json_valid(&out));
  /* A NUL after the text (not counted), for strstr. */
  assert_int_equal(buf_append(&out, "", 1), 0);
  out.len--;
  return out;
}

static void test_report_json(void **state) {
  (void)state;
  struct tlsrpt_limits lim = {0};
  /* 2024-01-01T00:00:00Z, one day. */
  struct tlsrpt_agg *a = tlsrpt_agg_new(&lim, 1704067200, 1704153600);
  assert_non_null(a);
  struct tlsrpt_failure f = {TLSRPT_CERT_HOST_MISMATCH, "192.0.2.1",
                             "mx.a.test", "192.0.2.25",
                             "name mismatch: wanted mx.a.test"};
  assert_int_equal(tlsrpt_agg_add(a, "A.test.", &sts_policy, NULL), 0);
  assert_int_equal(tlsrpt_agg_add(a, "a.test", &sts_policy, NULL), 0);
  assert_int_equal(tlsrpt_agg_add(a, "a.test", &sts_policy, &f), 0);
  assert_int_equal(tlsrpt_agg_add(a, "a.test", &sts_policy, &f), 0);
  struct tlsrpt_failure plain = {TLSRPT_STARTTLS_NOT_SUPPORTED, NULL,
                                 "mx.b.test", NULL, NULL};
  assert_int_equal(tlsrpt_agg_add(a, "b.test", &no_policy, &plain), 0);
  assert_int_equal(tlsrpt_agg_num_domains(a), 2);
  assert_string_equal(tlsrpt_agg_domain(a, 0), "a.test");
  uint64_t ok, failed;
  tlsrpt_agg_domain_sessions(a, 0, &ok, &failed);
  assert_int_equal(ok, 2);
  assert_int_equal(failed, 2);

  struct buf out = report_of(a, 0);
  static const char want_a[] =
      "{\"organization-name\":\"mx.us.test\",\"date-range\":{"
      "\"start-datetime\":\"2024-01-01T00:00:00Z\","
      "\"end-datetime\":\"2024-01-01T23:59:59Z\"},"
      "\"contact-info\":\"postmaster@mx.us.test\","
      "\"report-id\":\"20240101T000000Z.1@mx.us.test\",\"policies\":[{"
      "\"policy\":{\"policy-type\":\"sts\",\"policy-string\":["
      "\"version: STSv1\",\"mode: enforce\",\"mx: mx.a.test\","
      "\"max_age: 86400\"],\"policy-domain\":\"a.test\","
      "\"mx-host\":[\"mx.a.test\"]},\"summary\":{"
      "\"total-successful-session-count\":2,"
      "\"total-failure-session-count\":2},\"failure-details\":[{"
      "\"result-type\":\"certificate-host-mismatch\","
      "\"sending-mta-ip\":\"192.0.2.1\","
      "\"receiving-mx-hostname\":\"mx.a.test\","
      "\"receiving-ip\":\"192.0.2.25\",\"failed-session-count\":2,"
      "\"failure-reason-code\":\"name mismatch: wanted mx.a.test\"}]}]}\n";
  if (out.len != strlen(want_a) || memcmp(out.data, want_a, out.len) != 0) {
    fail_msg("got:\n%.*s\nwant:\n%s", (int)out.len, (const char *)out.data,
             want_a);
  }
  buf_free(&out);

  out = report_of(a, 1);
  static const char want_b[] =
      "\"policies\":[{\"policy\":{\"policy-type\":\"no-policy-found\","
      "\"policy-domain\":\"b.test\"},\"summary\":{"
      "\"total-successful-session-count\":0,"
      "\"total-failure-session-count\":1},\"failure-details\":[{"
      "\"result-type\":\"starttls-not-supported\","
      "\"receiving-mx-hostname\":\"mx.b.test\","
      "\"failed-session-count\":1}]}]}\n";
  const char *at = strstr((const char *)out.data, "\"policies\"");
  if (at == NULL || strcmp(at, want_b) != 0) {
    fail_msg("got:\n%.*s\nwant tail:\n%s", (int)out.len, (const char *)out.data,
             want_b);
  }
  buf_free(&out);
  tlsrpt_agg_free(a);
}

/* Untrusted text (a server's reply) stays valid JSON. */
static void test_report_escaping(void **state) {
  (void)state;
  struct tlsrpt_limits lim = {0};
  struct tlsrpt_agg *a = tlsrpt_agg_new(&lim, 0, 86400);
  static const char *const tlsa[] = {"3 1 1 ABCD"};
  static const char *const host[] = {"mx.c.test"};
  struct tlsrpt_policy p = {TLSRPT_POLICY_TLSA, tlsa, 1, host, 1};
  struct tlsrpt_failure f = {TLSRPT_TLSA_INVALID, "2001:db8::1", "mx.c.test",
                             "2001:db8::25",
                             "q\"b\\s\x01\r\n\xff\xc3\xa9 \xe2\x82"};
  assert_int_equal(tlsrpt_agg_add(a, "c.test", &p, &f), 0);
  struct buf out = report_of(a, 0);
  assert_non_null(
      strstr((const char *)out.data,
             "\"failure-reason-code\":\"q\\\"b\\\\s\\u0001\\u000d\\u000a?"
             "\xc3\xa9 ??\""));
  assert_non_null(strstr((const char *)out.data,
                         "\"policy-type\":\"tlsa\",\"policy-string\":[\"3 1 "
                         "1 ABCD\"],\"policy-domain\":\"c.test\",\"mx-host\":"
                         "[\"mx.c.test\"]"));
  buf_free(&out);
  tlsrpt_agg_free(a);
}

static void test_agg_bounds(void **state) {
  (void)state;
  struct tlsrpt_limits lim = {.max_domains = 2, .max_failure_rows = 2};
  struct tlsrpt_agg *a = tlsrpt_agg_new(&lim, 0, 86400);
  struct tlsrpt_agg_stats st;
  assert_int_equal(tlsrpt_agg_add(a, "a.test", &no_policy, NULL), 0);
  assert_int_equal(tlsrpt_agg_add(a, "b.test", &no_policy, NULL), 0);
  /* A third domain does not fit; the known ones still count. */
  assert_int_equal(tlsrpt_agg_add(a, "c.test", &no_policy, NULL), -1);
  assert_int_equal(tlsrpt_agg_add(a, "c.test", &no_policy, NULL), -1);
  assert_int_equal(tlsrpt_agg_add(a, "B.TEST", &no_policy, NULL), 0);
  /* Not an LDH name: refused, not counted as dropped. */
  assert_int_equal(tlsrpt_agg_add(a, "bad_name.test", &no_policy, NULL), -1);
  assert_int_equal(tlsrpt_agg_add(a, "", &no_policy, NULL), -1);
  /* Rows: two distinct ones fit in a.test, the third is counted only. */
  static const char *const ips[] = {"192.0.2.1", "192.0.2.2", "192.0.2.3"};
  for (size_t i = 0; i < 3; i++) {
    struct tlsrpt_failure f = {TLSRPT_VALIDATION_FAILURE, ips[i], NULL, NULL,
                               NULL};
    assert_int_equal(tlsrpt_agg_add(a, "a.test", &no_policy, &f), 0);
    assert_int_equal(tlsrpt_agg_add(a, "a.test", &no_policy, &f), 0);
  }
  /* Policies: TLSRPT_MAX_POLICIES per domain. */
  char lines[TLSRPT_MAX_POLICIES + 1][32];
  for (size_t i = 0; i < TLSRPT_MAX_POLICIES + 1; i++) {
    snprintf(lines[i], sizeof(lines[i]), "mode: enforce %zu", i);
    const char *const s[] = {lines[i]};
    struct tlsrpt_policy p = {TLSRPT_POLICY_STS, s, 1, NULL, 0};
    int want = i + 1 < TLSRPT_MAX_POLICIES ? 0 : -1; /* no_policy is one */
    assert_int_equal(tlsrpt_agg_add(a, "b.test", &p, NULL), want);
  }
  tlsrpt_agg_get_stats(a, &st);
  assert_int_equal(st.num_domains, 2);
  assert_int_equal(st.dropped_domain, 2);
  assert_int_equal(st.dropped_rows, 2);
  assert_int_equal(st.dropped_policy, 2);
  uint64_t ok, failed;
  tlsrpt_agg_domain_sessions(a, 0, &ok, &failed);
  assert_int_equal(ok, 1);
  assert_int_equal(failed, 6); /* the summary keeps every failure */
  struct buf out = report_of(a, 0);
  assert_non_null(
      strstr((const char *)out.data, "\"total-failure-session-count\":6"));
  assert_null(strstr((const char *)out.data, "192.0.2.3"));
  buf_free(&out);
  tlsrpt_agg_free(a);
}

static void test_agg_merge(void **state) {
  (void)state;
  struct tlsrpt_limits lim = {.max_domains = 2, .max_failure_rows = 8};
  struct tlsrpt_agg *a = tlsrpt_agg_new(&lim, 100, 200);
  struct tlsrpt_agg *b = tlsrpt_agg_new(&lim, 200, 300);
  struct tlsrpt_failure f = {TLSRPT_CERT_EXPIRED, "192.0.2.1", "mx.a.test",
                             NULL, "certificate has expired"};
  struct tlsrpt_failure g = {TLSRPT_CERT_EXPIRED, "192.0.2.9", "mx.a.test",
                             NULL, "certificate has expired"};
  assert_int_equal(tlsrpt_agg_add(a, "a.test", &sts_policy, &f), 0);
  assert_int_equal(tlsrpt_agg_add(a, "a.test", &sts_policy, NULL), 0);
  assert_int_equal(tlsrpt_agg_add(b, "a.test", &sts_policy, &f), 0);
  assert_int_equal(tlsrpt_agg_add(b, "a.test", &sts_policy, &g), 0);
  assert_int_equal(tlsrpt_agg_add(b, "b.test", &no_policy, NULL), 0);
  assert_int_equal(tlsrpt_agg_add(b, "c.test", &no_policy, NULL), -1);
  assert_int_equal(tlsrpt_agg_merge(a, b), 0);
  int64_t start, end;
  tlsrpt_agg_period(a, &start, &end);
  assert_int_equal(start, 100);
  assert_int_equal(end, 300);
  uint64_t ok, failed;
  tlsrpt_agg_domain_sessions(a, 0, &ok, &failed);
  assert_int_equal(ok, 1);
  assert_int_equal(failed, 3);
  struct buf out = report_of(a, 0);
  assert_non_null(
      strstr((const char *)out.data,
             "\"sending-mta-ip\":\"192.0.2.1\",\"receiving-mx-"
             "hostname\":\"mx.a.test\",\"failed-session-count\":2"));
  assert_non_null(
      strstr((const char *)out.data,
             "\"sending-mta-ip\":\"192.0.2.9\",\"receiving-mx-"
             "hostname\":\"mx.a.test\",\"failed-session-count\":1"));
  buf_free(&out);
  /* dst's limits hold: a third domain from the source is dropped there. */
  struct tlsrpt_agg *c = tlsrpt_agg_new(&lim, 0, 1);
  assert_int_equal(tlsrpt_agg_add(c, "d.test", &no_policy, NULL), 0);
  assert_int_equal(tlsrpt_agg_add(c, "d.test", &no_policy, NULL), 0);
  assert_int_equal(tlsrpt_agg_merge(a, c), 0);
  struct tlsrpt_agg_stats st;
  tlsrpt_agg_get_stats(a, &st);
  assert_int_equal(st.num_domains, 2);
  assert_int_equal(st.dropped_domain, 2);
  tlsrpt_agg_free(a);
  tlsrpt_agg_free(b);
  tlsrpt_agg_free(c);
}

/* ---- gzip ---- */

static uint32_t le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

/* gunzip reads back one gzip member with zlib. 0 or -1. */
static int gunzip(const struct buf *gz, struct buf *out) {
  z_stream z;
  memset(&z, 0, sizeof(z));
  if (inflateInit2(&z, 15 + 16) != Z_OK) {
    return -1;
  }
  z.next_in = gz->data;
  z.avail_in = (uInt)gz->len;
  int rc;
  do {
    uint8_t chunk[16384];
    z.next_out = chunk;
    z.avail_out = sizeof(chunk);
    rc = inflate(&z, Z_NO_FLUSH);
    buf_append(out, chunk, sizeof(chunk) - z.avail_out);
  } while (rc == Z_OK);
  int ok = rc == Z_STREAM_END && z.avail_in == 0;
  inflateEnd(&z);
  return ok ? 0 : -1;
}

static void test_gzip(void **state) {
  (void)state;
  struct buf gz = {0}, back = {0};
  /* RFC 1952 §8's check value: CRC-32 of "123456789" is CBF43926. */
  assert_int_equal(tlsrpt_gzip(&gz, (const uint8_t *)"123456789", 9, 7), 0);
  assert_int_equal(le32(gz.data + 4), 7); /* MTIME */
  assert_int_equal(le32(gz.data + gz.len - 8), 0xCBF43926u);
  assert_int_equal(gunzip(&gz, &back), 0);
  assert_memory_equal(back.data, "123456789", 9);
  buf_free(&gz);
  buf_free(&back);
  /* A report is repetitive JSON: it must actually be compressed. */
  struct buf json = {0};
  for (int k = 0; k < 500; k++) {
    buf_printf(&json, "{\"result-type\":\"certificate-expired\",\"n\":%d},", k);
  }
  assert_int_equal(tlsrpt_gzip(&gz, json.data, json.len, 0), 0);
  if (gz.len * 4 > json.len) {
    fail_msg("%zu octets of JSON gzip to %zu: not compressed", json.len,
             gz.len);
  }
  buf_free(&json);
  buf_free(&gz);
  /* Empty, and larger than zlib's window. */
  static const size_t sizes[] = {0, 65535, 65536, 200000};
  for (size_t i = 0; i < ARRAY_LEN(sizes); i++) {
    uint8_t *in = malloc(sizes[i] + 1);
    for (size_t k = 0; k < sizes[i]; k++) {
      in[k] = (uint8_t)(k * 7 + k / 251);
    }
    assert_int_equal(tlsrpt_gzip(&gz, in, sizes[i], 0), 0);
    if (gunzip(&gz, &back) != 0 || back.len != sizes[i] ||
        (sizes[i] > 0 && memcmp(back.data, in, sizes[i]) != 0)) {
      fail_msg("size %zu: does not read back", sizes[i]);
    }
    free(in);
    buf_free(&gz);
    buf_free(&back);
  }
}

/* ---- the message ---- */

static int b64_value(int c) {
  static const char tab[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const char *at = c ? strchr(tab, c) : NULL;
  return at ? (int)(at - tab) : -1;
}

/* b64_decode reads base64 lines up to the first line that is not. */
static void b64_decode(const char *p, struct buf *out) {
  uint32_t acc = 0;
  int bits = 0;
  for (; *p != '\0' && *p != '-'; p++) {
    int v = b64_value(*p);
    if (v < 0) {
      continue; /* CRLF, "=" */
    }
    acc = acc << 6 | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      uint8_t byte = (uint8_t)(acc >> bits);
      buf_append(out, &byte, 1);
    }
  }
}

static void test_message(void **state) {
  (void)state;
  uint8_t gz[100];
  for (size_t i = 0; i < sizeof(gz); i++) {
    gz[i] = (uint8_t)(i * 37);
  }
  const char *rcpts[] = {"reports@rua.test", "other@rua.test"};
  struct tlsrpt_message m = {
      .submitter = "mx.us.test",
      .from = "postmaster@mx.us.test",
      .domain = "a.test",
      .report_id = "20240101T000000Z.00AB@mx.us.test",
      .unique = "00AB",
      .rcpts = rcpts,
      .num_rcpts = 2,
      .now_s = 1704153600,
      .start_s = 1704067200,
      .end_s = 1704153599,
      .report_gz = gz,
      .report_gz_len = sizeof(gz),
  };
  struct buf out = {0};
  assert_int_equal(tlsrpt_message_build(&out, &m), 0);
  buf_append(&out, "", 1);
  const char *t = (const char *)out.data;
  static const char *const want[] = {
      "From: <postmaster@mx.us.test>\r\n",
      "To: <reports@rua.test>,\r\n <other@rua.test>\r\n",
      "\r\nSubject: Report Domain: a.test Submitter: mx.us.test Report-ID: "
      "<20240101T000000Z.00AB@mx.us.test>\r\n",
      "\r\nDate: Tue, 02 Jan 2024 00:00:00 +0000\r\n",
      "\r\nMessage-ID: <20240101T000000Z.00AB@mx.us.test>\r\n",
      "\r\nTLS-Report-Domain: a.test\r\n",
      "\r\nTLS-Report-Submitter: mx.us.test\r\n",
      "\r\nTLS-Required: No\r\n",
      "Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n"
      " boundary=\"=_tlsrpt_00AB\"\r\n\r\n",
      "\r\n--=_tlsrpt_00AB\r\nContent-Type: text/plain",
      "\r\n--=_tlsrpt_00AB\r\nContent-Type: application/tlsrpt+gzip;\r\n",
      "filename=\"mx.us.test!a.test!1704067200!1704153599!00AB.json.gz\"",
      "\r\n--=_tlsrpt_00AB--\r\n",
  };
  for (size_t i = 0; i < ARRAY_LEN(want); i++) {
    if (strstr(t, want[i]) == NULL) {
      fail_msg("missing %s in:\n%s", want[i], t);
    }
  }
  assert_int_equal(strncmp(t, "From: ", 6), 0);
  /* No line over 998 octets; every line ends in CRLF. */
  for (const char *line = t; *line != '\0';) {
    const char *crlf = strstr(line, "\r\n");
    assert_non_null(crlf);
    assert_true(crlf - line <= 998);
    assert_null(memchr(line, '\n', (size_t)(crlf - line)));
    line = crlf + 2;
  }
  struct buf back = {0};
  const char *body = strstr(t, "json.gz\"\r\n\r\n");
  assert_non_null(body);
  b64_decode(body + strlen("json.gz\"\r\n\r\n"), &back);
  assert_int_equal(back.len, sizeof(gz));
  assert_memory_equal(back.data, gz, sizeof(gz));
  buf_free(&back);
  buf_free(&out);

  /* Bad fields: nothing is built. */
  static const char *const bad_rcpt[] = {"a@b.test>\r\nBcc: x@y"};
  struct tlsrpt_message bad[] = {m, m, m, m, m, m};
  bad[0].domain = "a test";
  bad[1].rcpts = bad_rcpt;
  bad[1].num_rcpts = 1;
  bad[2].report_id = "no-at-sign";
  bad[3].unique = "00-AB";
  bad[4].num_rcpts = 0;
  bad[5].from = "postmaster";
  for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
    struct buf b = {0};
    if (tlsrpt_message_build(&b, &bad[i]) != -1 || b.len != 0) {
      fail_msg("bad message %zu was built", i);
    }
    buf_free(&b);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_txt_parse),
      cmocka_unit_test(test_txt_limits),
      cmocka_unit_test(test_txt_prefixes),
      cmocka_unit_test(test_txt_find),
      cmocka_unit_test(test_classify),
      cmocka_unit_test(test_report_json),
      cmocka_unit_test(test_report_escaping),
      cmocka_unit_test(test_agg_bounds),
      cmocka_unit_test(test_agg_merge),
      cmocka_unit_test(test_gzip),
      cmocka_unit_test(test_message),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
