/* tests/unit/proto/test_ctl.c — the control protocol: framing at every
 * split point, requests (table of good and hostile lines, format/parse
 * round trip), replies (format/parse, hostile lines), the IMPORT line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/ctl.h"

#define NUM(a) (sizeof(a) / sizeof((a)[0]))

#define CHECK(label, got, want)                                                \
  do {                                                                         \
    long long got_ = (long long)(got), want_ = (long long)(want);              \
    if (got_ != want_) {                                                       \
      fail_msg("%s: %s: got %lld, want %lld", (label), #got, got_, want_);     \
    }                                                                          \
  } while (0)

#define QA "0123456789ABCDEF"
#define QB "FEDCBA9876543210"

/* ---- requests ---- */

struct req_case {
  const char *label;
  const char *line;
  size_t len; /* 0: strlen(line) */
  int ok;
  enum ctl_verb verb;
  int all;
  const char *domain;
  size_t num_ids;
  uint64_t id0;
  const char *err; /* substring of the reason, for a failure */
};

static const struct req_case req_cases[] = {
    {"flush", "FLUSH", 0, 1, CTL_VERB_FLUSH, 0, "", 0, 0, NULL},
    {"verb any case", "fLuSh", 0, 1, CTL_VERB_FLUSH, 0, "", 0, 0, NULL},
    {"flush ids", "FLUSH " QA " " QB, 0, 1, CTL_VERB_FLUSH, 0, "", 2,
     0x0123456789ABCDEFull, NULL},
    {"flush domain lower-cased", "FLUSH --domain Example.NET", 0, 1,
     CTL_VERB_FLUSH, 0, "example.net", 0, 0, NULL},
    {"flush domain literal", "FLUSH --domain [192.0.2.1]", 0, 1, CTL_VERB_FLUSH,
     0, "[192.0.2.1]", 0, 0, NULL},
    {"flush domain utf-8", "FLUSH --domain b\303\274cher.de", 0, 1,
     CTL_VERB_FLUSH, 0, "b\303\274cher.de", 0, 0, NULL},
    {"delete lower-case hex", "DELETE 0123456789abcdef", 0, 1, CTL_VERB_DELETE,
     0, "", 1, 0x0123456789ABCDEFull, NULL},
    {"delete all", "DELETE --all", 0, 1, CTL_VERB_DELETE, 1, "", 0, 0, NULL},
    {"hold", "HOLD " QB, 0, 1, CTL_VERB_HOLD, 0, "", 1, 0xFEDCBA9876543210ull,
     NULL},
    {"release all", "release --all", 0, 1, CTL_VERB_RELEASE, 1, "", 0, 0, NULL},
    {"status", "STATUS", 0, 1, CTL_VERB_STATUS, 0, "", 0, 0, NULL},

    {"empty", "", 0, 0, 0, 0, NULL, 0, 0, "empty request"},
    {"leading space", " STATUS", 0, 0, 0, 0, NULL, 0, 0, "empty verb"},
    {"unknown verb", "BOUNCE " QA, 0, 0, 0, 0, NULL, 0, 0, "unknown verb"},
    {"verb prefix", "FLUS", 0, 0, 0, 0, NULL, 0, 0, "unknown verb"},
    {"verb non-ascii", "H\xc3\xb6LD " QA, 0, 0, 0, 0, NULL, 0, 0,
     "unknown verb"},
    {"status with args", "STATUS " QA, 0, 0, 0, 0, NULL, 0, 0, "no arguments"},
    {"delete nothing", "DELETE", 0, 0, 0, 0, NULL, 0, 0, "--all needed"},
    {"hold nothing", "HOLD", 0, 0, 0, 0, NULL, 0, 0, "--all needed"},
    {"flush all", "FLUSH --all", 0, 0, 0, 0, NULL, 0, 0, "no --all"},
    {"all and ids", "DELETE --all " QA, 0, 0, 0, 0, NULL, 0, 0, "excludes"},
    {"ids and all", "HOLD " QA " --all", 0, 0, 0, 0, NULL, 0, 0, "excludes"},
    {"all twice", "RELEASE --all --all", 0, 0, 0, 0, NULL, 0, 0, "twice"},
    {"domain on delete", "DELETE --domain a.b", 0, 0, 0, 0, NULL, 0, 0,
     "only for FLUSH"},
    {"domain missing", "FLUSH --domain", 0, 0, 0, 0, NULL, 0, 0,
     "needs a domain"},
    {"domain empty", "FLUSH --domain ", 0, 0, 0, 0, NULL, 0, 0,
     "needs a domain"},
    {"domain twice", "FLUSH --domain a --domain b", 0, 0, 0, 0, NULL, 0, 0,
     "twice"},
    {"domain and ids", "FLUSH --domain a " QA, 0, 0, 0, 0, NULL, 0, 0,
     "excludes"},
    {"domain with @", "FLUSH --domain a@b", 0, 0, 0, 0, NULL, 0, 0,
     "bad domain"},
    {"domain with slash", "FLUSH --domain ../x", 0, 0, 0, 0, NULL, 0, 0,
     "bad domain"},
    {"short id", "HOLD 0123456789ABCDE", 0, 0, 0, 0, NULL, 0, 0,
     "bad queue id"},
    {"long id", "HOLD 0123456789ABCDEF0", 0, 0, 0, 0, NULL, 0, 0,
     "bad queue id"},
    {"non-hex id", "HOLD 0123456789ABCDEG", 0, 0, 0, 0, NULL, 0, 0,
     "bad queue id"},
    {"signed id", "HOLD -123456789ABCDEF", 0, 0, 0, 0, NULL, 0, 0,
     "unknown option"},
    {"unknown option", "HOLD --force", 0, 0, 0, 0, NULL, 0, 0,
     "unknown option"},
    {"duplicate id", "HOLD " QA " 0123456789abcdef", 0, 0, 0, 0, NULL, 0, 0,
     "duplicate"},
    {"double space", "RELEASE  " QA, 0, 0, 0, 0, NULL, 0, 0, "extra space"},
    {"trailing space", "RELEASE " QA " ", 0, 0, 0, 0, NULL, 0, 0,
     "extra space"},
    {"tab", "STATUS\t", 0, 0, 0, 0, NULL, 0, 0, "control character"},
    {"cr inside", "HOLD\r" QA, 0, 0, 0, 0, NULL, 0, 0, "control character"},
    {"nul inside", "STA\0TUS", 7, 0, 0, 0, NULL, 0, 0, "control character"},
    {"del", "STATUS\x7f", 0, 0, 0, 0, NULL, 0, 0, "control character"},
};

static void check_req_case(const struct req_case *c) {
  struct ctl_request r;
  const char *err = NULL;
  size_t len = c->len ? c->len : strlen(c->line);
  int rc = ctl_request_parse(&r, &err, c->line, len);
  CHECK(c->label, rc, c->ok ? 0 : -1);
  if (!c->ok) {
    if (err == NULL || strstr(err, c->err) == NULL) {
      fail_msg("%s: reason: got '%s', want '%s'", c->label,
               err ? err : "(null)", c->err);
    }
    return;
  }
  CHECK(c->label, r.verb, c->verb);
  CHECK(c->label, r.all, c->all);
  CHECK(c->label, r.num_ids, c->num_ids);
  if (c->num_ids > 0) {
    CHECK(c->label, r.ids[0], c->id0);
  }
  if (strcmp(r.domain, c->domain) != 0) {
    fail_msg("%s: domain: got '%s', want '%s'", c->label, r.domain, c->domain);
  }
}

static void check_req_equal(const char *label, const struct ctl_request *a,
                            const struct ctl_request *b) {
  CHECK(label, a->verb, b->verb);
  CHECK(label, a->all, b->all);
  CHECK(label, a->num_ids, b->num_ids);
  CHECK(label, strcmp(a->domain, b->domain), 0);
  for (size_t i = 0; i < a->num_ids && i < b->num_ids; i++) {
    CHECK(label, a->ids[i], b->ids[i]);
  }
}

static void test_request_table(void **state) {
  (void)state;
  for (size_t i = 0; i < NUM(req_cases); i++) {
    check_req_case(&req_cases[i]);
  }
}

/* What parses formats back to a line that parses to the same request. */
static void test_request_roundtrip(void **state) {
  (void)state;
  for (size_t i = 0; i < NUM(req_cases); i++) {
    const struct req_case *c = &req_cases[i];
    struct ctl_request r, again;
    const char *err;
    if (!c->ok || ctl_request_parse(&r, &err, c->line, strlen(c->line))) {
      continue;
    }
    struct buf out = {0};
    CHECK(c->label, ctl_request_format(&out, &r), 0);
    size_t line_len, consumed;
    CHECK(c->label,
          ctl_line_next(&line_len, &consumed, (const char *)out.data, out.len),
          CTL_LINE_OK);
    CHECK(c->label, consumed, out.len);
    CHECK(c->label,
          ctl_request_parse(&again, &err, (const char *)out.data, line_len), 0);
    check_req_equal(c->label, &r, &again);
    buf_free(&out);
  }
  struct ctl_request r = {.verb = CTL_VERB_HOLD,
                          .num_ids = 2,
                          .ids = {0xABCull, 0x0123456789abcdefull}};
  struct buf out = {0};
  CHECK("canonical", ctl_request_format(&out, &r), 0);
  CHECK("canonical", out.len, strlen("HOLD 0000000000000ABC " QA "\n"));
  CHECK("canonical",
        memcmp(out.data, "HOLD 0000000000000ABC " QA "\n", out.len), 0);
  buf_free(&out);
}

/* The most ids that fit one line; one more is too long; the format side
 * refuses what the parse side would. */
static void test_request_limits(void **state) {
  (void)state;
  struct ctl_request r = {.verb = CTL_VERB_RELEASE};
  for (size_t i = 0; i < CTL_MAX_IDS; i++) {
    r.ids[i] = 0x1000 + i;
  }
  struct buf out = {0};
  r.num_ids = CTL_MAX_LINE_IDS;
  CHECK("max line ids", ctl_request_format(&out, &r), 0);
  CHECK("max line ids fit", out.len <= CTL_MAX_LINE, 1);
  struct ctl_request back;
  const char *err;
  CHECK("max line ids parse",
        ctl_request_parse(&back, &err, (const char *)out.data, out.len - 1), 0);
  CHECK("max line ids parse", back.num_ids, CTL_MAX_LINE_IDS);
  buf_reset(&out);
  r.num_ids = CTL_MAX_LINE_IDS + 1;
  CHECK("one more", ctl_request_format(&out, &r), -1);
  CHECK("one more", errno, EMSGSIZE);
  CHECK("nothing appended", out.len, 0);
  r.num_ids = CTL_MAX_IDS + 1;
  CHECK("past CTL_MAX_IDS", ctl_request_format(&out, &r), -1);
  struct ctl_request bad = {.verb = CTL_VERB_FLUSH, .all = 1};
  CHECK("flush --all", ctl_request_format(&out, &bad), -1);
  CHECK("flush --all", errno, EINVAL);
  bad = (struct ctl_request){.verb = 0};
  CHECK("no verb", ctl_request_format(&out, &bad), -1);
  bad = (struct ctl_request){.verb = CTL_VERB_DELETE};
  CHECK("delete nothing", ctl_request_format(&out, &bad), -1);
  CHECK("nothing appended", out.len, 0);
  buf_free(&out);

  /* A line of CTL_MAX_LINE bytes without its LF is refused as too long,
   * whatever it holds. */
  static char big[CTL_MAX_LINE + 1];
  memset(big, 'A', sizeof big);
  memcpy(big, "HOLD", 4);
  CHECK("long line", ctl_request_parse(&back, &err, big, CTL_MAX_LINE), -1);
  CHECK("long line", strstr(err, "too long") != NULL, 1);
}

/* ---- framing ---- */

static void test_line_next(void **state) {
  (void)state;
  static const struct {
    const char *label;
    const char *in;
    enum ctl_line_result want;
    size_t line_len, consumed;
  } cases[] = {
      {"empty", "", CTL_LINE_NEED_MORE, 0, 0},
      {"no lf", "STATUS", CTL_LINE_NEED_MORE, 0, 0},
      {"lf", "STATUS\nX", CTL_LINE_OK, 6, 7},
      {"crlf", "STATUS\r\n", CTL_LINE_OK, 6, 8},
      {"bare lf", "\n", CTL_LINE_OK, 0, 1},
      {"cr only", "\r\n", CTL_LINE_OK, 0, 2},
      {"cr cr lf", "A\r\r\n", CTL_LINE_OK, 2, 4},
  };
  for (size_t i = 0; i < NUM(cases); i++) {
    size_t len = 99, consumed = 99;
    CHECK(cases[i].label,
          ctl_line_next(&len, &consumed, cases[i].in, strlen(cases[i].in)),
          cases[i].want);
    if (cases[i].want == CTL_LINE_OK) {
      CHECK(cases[i].label, len, cases[i].line_len);
      CHECK(cases[i].label, consumed, cases[i].consumed);
    }
  }
  static char big[CTL_MAX_LINE + 2];
  size_t len, consumed;
  memset(big, 'x', sizeof big);
  CHECK("max - 1, no lf", ctl_line_next(&len, &consumed, big, CTL_MAX_LINE - 1),
        CTL_LINE_NEED_MORE);
  CHECK("max, no lf", ctl_line_next(&len, &consumed, big, CTL_MAX_LINE),
        CTL_LINE_TOO_LONG);
  big[CTL_MAX_LINE - 1] = '\n';
  CHECK("lf is the last byte allowed",
        ctl_line_next(&len, &consumed, big, sizeof big), CTL_LINE_OK);
  CHECK("lf is the last byte allowed", consumed, CTL_MAX_LINE);
  big[CTL_MAX_LINE - 1] = 'x';
  big[CTL_MAX_LINE] = '\n';
  CHECK("lf one past", ctl_line_next(&len, &consumed, big, sizeof big),
        CTL_LINE_TOO_LONG);
}

/* A whole reply conversation, fed in two parts split at every byte, gives
 * the same lines. */
static void test_reply_every_split(void **state) {
  (void)state;
  struct buf conv = {0};
  assert_int_equal(
      ctl_reply_item(&conv, 0x0123456789ABCDEFull, CTL_WORD_DELETED), 0);
  assert_int_equal(ctl_reply_item(&conv, 1, CTL_WORD_NOT_FOUND), 0);
  assert_int_equal(ctl_reply_ok(&conv, 2), 0);
  const char *want[] = {QA " deleted", "0000000000000001 not-found", "OK 2"};
  for (size_t split = 0; split <= conv.len; split++) {
    struct buf in = {0};
    size_t got = 0, fed = split;
    assert_int_equal(buf_append(&in, conv.data, split), 0);
    for (int round = 0; round < 8; round++) {
      size_t len, consumed;
      enum ctl_line_result r =
          ctl_line_next(&len, &consumed, (const char *)in.data, in.len);
      if (r == CTL_LINE_NEED_MORE && fed < conv.len) {
        assert_int_equal(buf_append(&in, conv.data + fed, conv.len - fed), 0);
        fed = conv.len;
        continue;
      }
      if (r != CTL_LINE_OK) {
        break;
      }
      assert_true(got < NUM(want));
      CHECK("split line", len, strlen(want[got]));
      CHECK("split line", memcmp(in.data, want[got], len), 0);
      struct ctl_reply rep;
      const char *err;
      CHECK("split parse",
            ctl_reply_parse(&rep, &err, (const char *)in.data, len), 0);
      buf_consume(&in, consumed);
      got++;
    }
    CHECK("lines at split", got, NUM(want));
    buf_free(&in);
  }
  buf_free(&conv);
}

/* ---- replies ---- */

static void test_reply_roundtrip(void **state) {
  (void)state;
  for (int w = CTL_WORD_QUEUED; w <= CTL_WORD_NOT_FOUND; w++) {
    struct buf out = {0};
    const char *name = ctl_word_name((enum ctl_word)w);
    assert_non_null(name);
    CHECK(name, ctl_reply_item(&out, 0xFEDCBA9876543210ull, (enum ctl_word)w),
          0);
    struct ctl_reply r;
    const char *err;
    CHECK(name, ctl_reply_parse(&r, &err, (const char *)out.data, out.len - 1),
          0);
    CHECK(name, r.kind, CTL_REPLY_ITEM);
    CHECK(name, r.queue_id, 0xFEDCBA9876543210ull);
    CHECK(name, r.word, w);
    CHECK(name, strcmp(r.word_text, name), 0);
    buf_free(&out);
  }
  CHECK("failed: not-found", ctl_word_failed(CTL_WORD_NOT_FOUND), 1);
  CHECK("failed: busy", ctl_word_failed(CTL_WORD_BUSY), 1);
  CHECK("failed: unknown", ctl_word_failed(CTL_WORD_UNKNOWN), 1);
  CHECK("failed: deleted", ctl_word_failed(CTL_WORD_DELETED), 0);
  CHECK("failed: not-held", ctl_word_failed(CTL_WORD_NOT_HELD), 0);

  struct buf out = {0};
  CHECK("unknown word", ctl_reply_item(&out, 1, CTL_WORD_UNKNOWN), -1);
  CHECK("word out of range", ctl_reply_item(&out, 1, (enum ctl_word)99), -1);
  CHECK("nothing appended", out.len, 0);
  static const uint64_t counts[] = {0, 1, 240, UINT64_MAX};
  for (size_t i = 0; i < NUM(counts); i++) {
    struct ctl_reply r;
    const char *err;
    buf_reset(&out);
    CHECK("ok", ctl_reply_ok(&out, counts[i]), 0);
    CHECK("ok", ctl_reply_parse(&r, &err, (const char *)out.data, out.len - 1),
          0);
    CHECK("ok", r.kind, CTL_REPLY_OK);
    CHECK("ok", r.count == counts[i], 1);
  }
  buf_free(&out);
}

static void test_reply_err_text(void **state) {
  (void)state;
  static const struct {
    const char *label;
    const char *text;
    const char *want; /* NULL: see below */
  } cases[] = {
      {"plain", "spool write failed: No space left", NULL},
      {"controls",
       "a\nb\rc\x01"
       "d\xff",
       "a?b?c?d?"},
      {"empty", "", "error"},
      {"null", NULL, "error"},
  };
  for (size_t i = 0; i < NUM(cases); i++) {
    struct buf out = {0};
    CHECK(cases[i].label, ctl_reply_err(&out, cases[i].text), 0);
    size_t len, consumed;
    CHECK(cases[i].label,
          ctl_line_next(&len, &consumed, (const char *)out.data, out.len),
          CTL_LINE_OK);
    CHECK(cases[i].label, consumed, out.len); /* one line, no LF inside */
    struct ctl_reply r;
    const char *err;
    CHECK(cases[i].label,
          ctl_reply_parse(&r, &err, (const char *)out.data, len), 0);
    CHECK(cases[i].label, r.kind, CTL_REPLY_ERR);
    const char *want = cases[i].want ? cases[i].want : cases[i].text;
    if (strcmp(r.text, want) != 0) {
      fail_msg("%s: got '%s', want '%s'", cases[i].label, r.text, want);
    }
    buf_free(&out);
  }
  /* A text longer than a line is cut to fit one. */
  static char huge[3 * CTL_MAX_LINE];
  memset(huge, 'e', sizeof huge - 1);
  struct buf out = {0};
  CHECK("huge", ctl_reply_err(&out, huge), 0);
  CHECK("huge fits", out.len, CTL_MAX_LINE);
  size_t len, consumed;
  CHECK("huge one line",
        ctl_line_next(&len, &consumed, (const char *)out.data, out.len),
        CTL_LINE_OK);
  struct ctl_reply r;
  const char *err;
  CHECK("huge parses", ctl_reply_parse(&r, &err, (const char *)out.data, len),
        0);
  buf_free(&out);
}

static void test_reply_hostile(void **state) {
  (void)state;
  static const struct {
    const char *label;
    const char *line;
    size_t len;
    int ok;
    enum ctl_reply_kind kind;
  } cases[] = {
      {"unknown word kept", QA " frozen", 0, 1, CTL_REPLY_ITEM},
      {"lower-case hex", "0123456789abcdef held", 0, 1, CTL_REPLY_ITEM},
      {"empty", "", 0, 0, 0},
      {"ok without count", "OK", 0, 0, 0},
      {"ok empty count", "OK ", 0, 0, 0},
      {"ok leading zero", "OK 01", 0, 0, 0},
      {"ok negative", "OK -1", 0, 0, 0},
      {"ok overflow", "OK 18446744073709551616", 0, 0, 0},
      {"ok trailing", "OK 1 ", 0, 0, 0},
      {"ok lower-case", "ok 1", 0, 0, 0},
      {"err empty", "ERR ", 0, 0, 0},
      {"err bare", "ERR", 0, 0, 0},
      {"err control", "ERR a\x01z", 0, 0, 0},
      {"err 8bit", "ERR caf\xc3\xa9", 0, 0, 0},
      {"id only", QA, 0, 0, 0},
      {"id space", QA " ", 0, 0, 0},
      {"upper-case word", QA " Held", 0, 0, 0},
      {"two words", QA " held twice", 0, 0, 0},
      {"trailing space", QA " held ", 0, 0, 0},
      {"short id", "0123456789ABCDE held", 0, 0, 0},
      {"word too long", QA " aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 0, 0, 0},
      {"nul in word", QA " he\0ld", 22, 0, 0},
  };
  for (size_t i = 0; i < NUM(cases); i++) {
    struct ctl_reply r;
    const char *err = NULL;
    size_t len = cases[i].len ? cases[i].len : strlen(cases[i].line);
    int rc = ctl_reply_parse(&r, &err, cases[i].line, len);
    CHECK(cases[i].label, rc, cases[i].ok ? 0 : -1);
    if (cases[i].ok) {
      CHECK(cases[i].label, r.kind, cases[i].kind);
    } else {
      CHECK(cases[i].label, err != NULL, 1);
    }
  }
  struct ctl_reply r;
  const char *err;
  CHECK("unknown word", ctl_reply_parse(&r, &err, QA " frozen", 23), 0);
  CHECK("unknown word", r.word, CTL_WORD_UNKNOWN);
  CHECK("unknown word", strcmp(r.word_text, "frozen"), 0);
}

/* ---- IMPORT ---- */

static void test_import_table(void **state) {
  static const struct {
    const char *label;
    const char *line;
    int want; /* ctl_import_parse's return */
    uint64_t len;
  } cases[] = {
      {"import", "IMPORT 1234", 1, 1234},
      {"lower case", "import 7", 1, 7},
      {"largest", "IMPORT 18446744073709551615", 1, UINT64_MAX},
      {"another verb", "FLUSH", 0, 0},
      {"a longer verb", "IMPORTS 5", 0, 0},
      {"empty", "", 0, 0},
      {"no length", "IMPORT", -1, 0},
      {"zero", "IMPORT 0", -1, 0},
      {"leading zero", "IMPORT 012", -1, 0},
      {"not a number", "IMPORT 12a", -1, 0},
      {"overflow", "IMPORT 18446744073709551616", -1, 0},
      {"two lengths", "IMPORT 1 2", -1, 0},
      {"trailing space", "IMPORT 1 ", -1, 0},
      {"two spaces", "IMPORT  1", -1, 0},
  };
  for (size_t i = 0; i < NUM(cases); i++) {
    uint64_t len = 0;
    const char *why = NULL;
    int got =
        ctl_import_parse(&len, &why, cases[i].line, strlen(cases[i].line));
    CHECK(cases[i].label, got, cases[i].want);
    if (got == 1) {
      CHECK(cases[i].label, len == cases[i].len, 1);
      struct buf b = {0};
      assert_int_equal(ctl_import_format(&b, len), 0);
      uint64_t again = 0;
      CHECK(cases[i].label,
            ctl_import_parse(&again, &why, (const char *)b.data, b.len - 1), 1);
      CHECK(cases[i].label, again == len, 1);
      buf_free(&b);
    }
    CHECK(cases[i].label, got < 0 ? why != NULL : 1, 1);
  }
  struct buf b = {0};
  CHECK("format 0", ctl_import_format(&b, 0), -1);
  CHECK("format 0 appends nothing", b.len, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_request_table),
      cmocka_unit_test(test_request_roundtrip),
      cmocka_unit_test(test_request_limits),
      cmocka_unit_test(test_line_next),
      cmocka_unit_test(test_reply_every_split),
      cmocka_unit_test(test_reply_roundtrip),
      cmocka_unit_test(test_reply_err_text),
      cmocka_unit_test(test_reply_hostile),
      cmocka_unit_test(test_import_table),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
