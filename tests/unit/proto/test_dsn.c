/* tests/unit/proto/test_dsn.c — RFC 3464 DSN builder: fields, encodings,
 * returned content, injection, line shape, and Python's email parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "proto/dsn.h"

#define NOW_MS INT64_C(1700000000000) /* Tue, 14 Nov 2023 22:13:20 */

static const char original_msg[] = "From: Alice <alice@example.org>\r\n"
                                   "To: bob@example.net\r\n"
                                   "Subject: hello\r\n"
                                   "Message-ID: <1@example.org>\r\n"
                                   "\r\n"
                                   "Body line one.\r\n"
                                   "Body line two, SECRET-BODY-MARKER.\r\n";

static struct dsn_rcpt default_rcpt(void) {
  struct dsn_rcpt rc = {
      .final_recipient = "bob@example.net",
      .action = DSN_ACTION_FAILED,
      .status = "5.1.1",
      .remote_mta = "mx.example.net",
      .diag_code = 550,
      .diag_text = "5.1.1 <bob@example.net>: Recipient address rejected",
      .last_attempt_ms = NOW_MS - 1000,
  };
  return rc;
}

static struct dsn_report default_report(const struct dsn_rcpt *rcpts,
                                        size_t num_rcpts) {
  struct dsn_report r = {
      .reporting_mta = "relay.example.com",
      .original_sender = "alice@example.org",
      .arrival_ms = NOW_MS - 60000,
      .now_ms = NOW_MS,
      .unique = 0x1234,
      .ret = DSN_RET_HDRS,
      .original = (const uint8_t *)original_msg,
      .original_len = sizeof(original_msg) - 1,
      .rcpts = rcpts,
      .num_rcpts = num_rcpts,
  };
  return r;
}

/* shape_ok: CRLF line ends only, no line over 998 octets. */
static void assert_shape(const char *label, const struct buf *b) {
  size_t line = 0;
  for (size_t i = 0; i < b->len; i++) {
    uint8_t c = b->data[i];
    if (c == '\r') {
      if (i + 1 >= b->len || b->data[i + 1] != '\n') {
        fail_msg("%s: bare CR at %zu", label, i);
      }
      i++;
      line = 0;
      continue;
    }
    if (c == '\n') {
      fail_msg("%s: bare LF at %zu", label, i);
    }
    if (c == '\0') {
      fail_msg("%s: NUL at %zu", label, i);
    }
    if (++line > DSN_HARD_LINE) {
      fail_msg("%s: line over 998 octets at %zu", label, i);
    }
  }
  if (b->len < 2 || b->data[b->len - 1] != '\n') {
    fail_msg("%s: does not end in CRLF", label);
  }
}

static int contains(const struct buf *b, const char *s) {
  return memmem(b->data, b->len, s, strlen(s)) != NULL;
}

/* unfold copies b without the CRLF of each "CRLF SP" fold. */
static void unfold(struct buf *out, const struct buf *b) {
  for (size_t i = 0; i < b->len; i++) {
    if (i + 2 < b->len && b->data[i] == '\r' && b->data[i + 1] == '\n' &&
        b->data[i + 2] == ' ') {
      i++;
      continue;
    }
    assert_int_equal(buf_append(out, &b->data[i], 1), 0);
  }
}

/* Python check: argv file, number of recipient groups, whether every group
 * has a Diagnostic-Code, the third part's type or "none", the status part
 * type. Exit 0 when it all holds, else prints why. */
static const char py_check[] =
    "import re, sys, email, email.policy\n"
    "f, n, diag, third, st = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "
    "'1', sys.argv[4], sys.argv[5]\n"
    "m = email.message_from_bytes(open(f, 'rb').read(), "
    "policy=email.policy.compat32)\n"
    "assert not m.defects, m.defects\n"
    "assert m.is_multipart(), 'not multipart'\n"
    "assert m.get_content_type() == 'multipart/report', "
    "m.get_content_type()\n"
    "assert m.get_param('report-type') == 'delivery-status'\n"
    "assert m['Auto-Submitted'] == 'auto-replied'\n"
    "assert 'MAILER-DAEMON@' in m['From']\n"
    "parts = m.get_payload()\n"
    "want = 2 if third == 'none' else 3\n"
    "assert len(parts) == want, (len(parts), [p.get_content_type() for p in "
    "parts])\n"
    "assert parts[0].get_content_type() == 'text/plain'\n"
    "assert parts[1].get_content_type() == st, parts[1].get_content_type()\n"
    "if third != 'none':\n"
    "    assert parts[2].get_content_type() == third, "
    "parts[2].get_content_type()\n"
    "if st == 'message/delivery-status':\n"
    "    groups = parts[1].get_payload()\n"
    "    assert isinstance(groups, list), type(groups)\n"
    "    assert len(groups) == n + 1, (len(groups), n)\n"
    "    assert groups[0]['Reporting-MTA'].startswith('dns;')\n"
    "    for g in groups[1:]:\n"
    "        for k in ('Final-Recipient', 'Action', 'Status'):\n"
    "            assert g[k], (k, g.items())\n"
    "        if diag:\n"
    "            assert g['Diagnostic-Code'], g.items()\n"
    "        for k, v in g.items():\n"
    "            u = re.sub('\\r\\n[ \\t]', ' ', v)\n"
    "            assert '\\r' not in u and '\\n' not in u, (k, v)\n"
    "        assert set(g.keys()) <= {'Original-Recipient', "
    "'Final-Recipient', 'Action', 'Status', 'Remote-MTA', "
    "'Diagnostic-Code', 'Last-Attempt-Date', 'Will-Retry-Until'}, "
    "g.keys()\n";

static void assert_python(const char *label, const struct buf *b,
                          size_t num_groups, int diag, const char *third,
                          const char *status_type) {
  char path[] = "/tmp/test_dsn_XXXXXX";
  char script[] = "/tmp/test_dsn_py_XXXXXX";
  char cmd[512];
  int fd = mkstemp(path), sfd = mkstemp(script);
  assert_true(fd >= 0 && sfd >= 0);
  assert_int_equal(write(fd, b->data, b->len), (ssize_t)b->len);
  assert_int_equal(write(sfd, py_check, sizeof(py_check) - 1),
                   (ssize_t)(sizeof(py_check) - 1));
  close(fd);
  close(sfd);
  snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s %s %zu %d %s %s", script,
           path, num_groups, diag, third, status_type);
  int st = system(cmd);
  unlink(path);
  unlink(script);
  if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    fail_msg("%s: python email check failed (status %d)", label, st);
  }
}

/* ---- table: one report shape per case ---- */

struct dsn_case {
  const char *name;
  enum dsn_action action;
  const char *status;
  const char *diag_text; /* NULL: default */
  const char *envid;
  enum dsn_ret ret;
  size_t max_original_len;
  size_t num_rcpts;
  const char *want[4];   /* substrings that must appear */
  const char *absent[3]; /* substrings that must not appear */
  const char *third;     /* Python content type of part 3 */
};

static const struct dsn_case cases[] = {
    {"failed hdrs",
     DSN_ACTION_FAILED,
     "5.1.1",
     NULL,
     NULL,
     DSN_RET_HDRS,
     0,
     1,
     {"Subject: Undelivered Mail Returned to Sender\r\n", "Action: failed\r\n",
      "Status: 5.1.1\r\n", "Content-Type: text/rfc822-headers"},
     {"SECRET-BODY-MARKER", "Will-Retry-Until", NULL},
     "text/rfc822-headers"},
    {"delayed",
     DSN_ACTION_DELAYED,
     "4.4.1",
     "4.4.1 connection timed out",
     NULL,
     DSN_RET_HDRS,
     0,
     1,
     {"Subject: Delayed Mail (still being retried)\r\n", "Action: delayed\r\n",
      "Will-Retry-Until: ", "Status: 4.4.1\r\n"},
     {NULL, NULL, NULL},
     "text/rfc822-headers"},
    {"delivered",
     DSN_ACTION_DELIVERED,
     "2.0.0",
     "2.0.0 Ok: queued as 123",
     NULL,
     DSN_RET_HDRS,
     0,
     1,
     {"Subject: Successful Mail Delivery Report\r\n", "Action: delivered\r\n",
      "Diagnostic-Code: smtp; 550 2.0.0", "Status: 2.0.0\r\n"},
     {"Will-Retry-Until", NULL, NULL},
     "text/rfc822-headers"},
    {"relayed",
     DSN_ACTION_RELAYED,
     "2.0.0",
     NULL,
     NULL,
     DSN_RET_HDRS,
     0,
     1,
     {"Action: relayed\r\n", NULL, NULL, NULL},
     {NULL, NULL, NULL},
     "text/rfc822-headers"},
    {"expanded",
     DSN_ACTION_EXPANDED,
     "2.0.0",
     NULL,
     NULL,
     DSN_RET_HDRS,
     0,
     1,
     {"Action: expanded\r\n", NULL, NULL, NULL},
     {NULL, NULL, NULL},
     "text/rfc822-headers"},
    {"ret full",
     DSN_ACTION_FAILED,
     "5.1.1",
     NULL,
     NULL,
     DSN_RET_FULL,
     0,
     1,
     {"Content-Type: message/rfc822\r\n", "SECRET-BODY-MARKER",
      "The original message is attached.", NULL},
     {"text/rfc822-headers", NULL, NULL},
     "message/rfc822"},
    {"ret full too large",
     DSN_ACTION_FAILED,
     "5.1.1",
     NULL,
     NULL,
     DSN_RET_FULL,
     40,
     1,
     {"Content-Type: text/rfc822-headers", "too large to return",
      "Subject: hello\r\n", NULL},
     {"SECRET-BODY-MARKER", "message/rfc822", NULL},
     "text/rfc822-headers"},
    {"ret full fits",
     DSN_ACTION_FAILED,
     "5.1.1",
     NULL,
     NULL,
     DSN_RET_FULL,
     sizeof(original_msg) - 1,
     1,
     {"SECRET-BODY-MARKER", NULL, NULL, NULL},
     {"too large", NULL, NULL},
     "message/rfc822"},
    {"envid xtext",
     DSN_ACTION_FAILED,
     "5.1.1",
     NULL,
     "id+1=x y\x01",
     DSN_RET_HDRS,
     0,
     1,
     {"Original-Envelope-Id: id+2B1+3Dx+20y+01\r\n", NULL, NULL, NULL},
     {NULL, NULL, NULL},
     "text/rfc822-headers"},
    {"three recipients",
     DSN_ACTION_FAILED,
     "5.2.2",
     "mailbox full",
     NULL,
     DSN_RET_HDRS,
     0,
     3,
     {"Status: 5.2.2\r\n", "Diagnostic-Code: smtp; 550 mailbox full\r\n", NULL,
      NULL},
     {NULL, NULL, NULL},
     "text/rfc822-headers"},
    {"injection crlf",
     DSN_ACTION_FAILED,
     "5.7.1",
     "denied\r\nFinal-Recipient: rfc822; evil@x\r\n\r\nAction: delivered\n"
     "X-Evil: 1\rY",
     NULL,
     DSN_RET_HDRS,
     0,
     1,
     {"denied Final-Recipient: rfc822; evil@x Action: delivered X-Evil: 1 Y",
      NULL, NULL, NULL},
     {"\r\nX-Evil", "\r\nAction: delivered", NULL},
     "text/rfc822-headers"},
    {"injection boundary",
     DSN_ACTION_FAILED,
     "5.7.1",
     "\r\n--=_dsn_ --=_dsn_b1d6b4ea6f0ae8d4_0--\r\nContent-Type: text/html",
     NULL,
     DSN_RET_HDRS,
     0,
     1,
     {NULL, NULL, NULL, NULL},
     {"\r\nContent-Type: text/html", NULL, NULL},
     "text/rfc822-headers"},
    {"controls and 8bit in diag",
     DSN_ACTION_FAILED,
     "5.0.0",
     "a\x01\x7f\xff\xc3\xa9z",
     NULL,
     DSN_RET_HDRS,
     0,
     1,
     {"smtp; 550 a?????z\r\n", NULL, NULL, NULL},
     {NULL, NULL, NULL},
     "text/rfc822-headers"},
};

static void test_case(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const struct dsn_case *tc = &cases[i];
    struct dsn_rcpt rcpts[3];
    static const char *const addrs[] = {"bob@example.net", "carol@example.net",
                                        "dave@example.net"};
    for (size_t k = 0; k < tc->num_rcpts; k++) {
      rcpts[k] = default_rcpt();
      rcpts[k].final_recipient = addrs[k];
      rcpts[k].action = tc->action;
      rcpts[k].status = tc->status;
      if (tc->diag_text != NULL) {
        rcpts[k].diag_text = tc->diag_text;
      }
      rcpts[k].will_retry_until_ms = NOW_MS + 86400000;
    }
    struct dsn_report r = default_report(rcpts, tc->num_rcpts);
    r.envid = tc->envid;
    r.ret = tc->ret;
    r.max_original_len = tc->max_original_len;
    struct buf out = {0};
    struct dsn_info info;
    int got = dsn_build(&out, &info, &r);
    if (got != 0) {
      fail_msg("%s: dsn_build got %d, want 0", tc->name, got);
    }
    assert_shape(tc->name, &out);
    struct buf unfolded = {0};
    unfold(&unfolded, &out);
    for (size_t k = 0; k < 4; k++) {
      const char *w = tc->want[k];
      if (w != NULL && !contains(&unfolded, w)) {
        fail_msg("%s: output lacks \"%s\"", tc->name, w);
      }
    }
    for (size_t k = 0; k < 3; k++) {
      if (tc->absent[k] != NULL && contains(&out, tc->absent[k])) {
        fail_msg("%s: output has \"%s\"", tc->name, tc->absent[k]);
      }
    }
    assert_int_equal(info.num_listed, tc->num_rcpts);
    assert_python(tc->name, &out, tc->num_rcpts, 1, tc->third,
                  "message/delivery-status");
    buf_free(&unfolded);
    buf_free(&out);
  }
}

/* The boundary is changed when the content holds it. */
static void test_boundary_collision(void **state) {
  (void)state;
  struct dsn_rcpt rc = default_rcpt();
  struct dsn_report r = default_report(&rc, 1);
  struct buf first = {0}, second = {0};
  assert_int_equal(dsn_build(&first, NULL, &r), 0);
  const char *b = strstr((const char *)first.data, "boundary=\"");
  assert_non_null(b);
  char boundary[64];
  b += strlen("boundary=\"");
  size_t bl = strcspn(b, "\"");
  assert_true(bl < sizeof(boundary));
  memcpy(boundary, b, bl);
  boundary[bl] = '\0';
  /* The same report, its diagnostic and original now hold that boundary. */
  char diag[128], orig[256];
  snprintf(diag, sizeof(diag), "x\r\n--%s--\r\n", boundary);
  snprintf(orig, sizeof(orig), "Subject: x\r\nX-B: %s\r\n\r\n--%s\r\n",
           boundary, boundary);
  rc.diag_text = diag;
  r.original = (const uint8_t *)orig;
  r.original_len = strlen(orig);
  r.ret = DSN_RET_FULL;
  assert_int_equal(dsn_build(&second, NULL, &r), 0);
  assert_shape("collision", &second);
  char needle[80];
  snprintf(needle, sizeof(needle), "boundary=\"%s\"", boundary);
  if (contains(&second, needle)) {
    fail_msg("collision: boundary %s kept although the content holds it",
             boundary);
  }
  assert_python("collision", &second, 1, 1, "message/rfc822",
                "message/delivery-status");
  buf_free(&first);
  buf_free(&second);
}

/* Bad input returns -1 and leaves the buffer as it was. */
struct bad_case {
  const char *name;
  void (*mutate)(struct dsn_report *r, struct dsn_rcpt *rc);
};

static void m_null_sender(struct dsn_report *r, struct dsn_rcpt *rc) {
  (void)rc;
  r->original_sender = NULL;
}
static void m_empty_sender(struct dsn_report *r, struct dsn_rcpt *rc) {
  (void)rc;
  r->original_sender = "";
}
static void m_crlf_sender(struct dsn_report *r, struct dsn_rcpt *rc) {
  (void)rc;
  r->original_sender = "a@b\r\nBcc: x@y";
}
static void m_utf8_sender_no_smtputf8(struct dsn_report *r,
                                      struct dsn_rcpt *rc) {
  (void)rc;
  r->original_sender = "j\xc3\xb6rg@example.org";
}
static void m_no_rcpts(struct dsn_report *r, struct dsn_rcpt *rc) {
  (void)rc;
  r->num_rcpts = 0;
}
static void m_bad_status(struct dsn_report *r, struct dsn_rcpt *rc) {
  (void)r;
  rc->status = "5.1";
}
static void m_status_class(struct dsn_report *r, struct dsn_rcpt *rc) {
  (void)r;
  rc->action = DSN_ACTION_DELIVERED; /* with 5.1.1 */
}
static void m_bad_host(struct dsn_report *r, struct dsn_rcpt *rc) {
  (void)rc;
  r->reporting_mta = "host\r\nX: y";
}
static void m_bad_remote(struct dsn_report *r, struct dsn_rcpt *rc) {
  (void)r;
  rc->remote_mta = "mx example";
}
static void m_bad_code(struct dsn_report *r, struct dsn_rcpt *rc) {
  (void)r;
  rc->diag_code = 999;
}
static void m_long_envid(struct dsn_report *r, struct dsn_rcpt *rc) {
  (void)rc;
  r->envid = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
}
static void m_no_now(struct dsn_report *r, struct dsn_rcpt *rc) {
  (void)rc;
  r->now_ms = 0;
}
static void m_original_null(struct dsn_report *r, struct dsn_rcpt *rc) {
  (void)rc;
  r->original = NULL;
}

static void test_bad_input(void **state) {
  (void)state;
  static const struct bad_case bad[] = {
      {"null sender", m_null_sender},
      {"empty sender", m_empty_sender},
      {"crlf sender", m_crlf_sender},
      {"utf8 sender without smtputf8", m_utf8_sender_no_smtputf8},
      {"no recipients", m_no_rcpts},
      {"bad status", m_bad_status},
      {"status class against action", m_status_class},
      {"bad reporting mta", m_bad_host},
      {"bad remote mta", m_bad_remote},
      {"bad reply code", m_bad_code},
      {"envid over 100", m_long_envid},
      {"no now", m_no_now},
      {"original NULL with length", m_original_null},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    struct dsn_rcpt rc = default_rcpt();
    struct dsn_report r = default_report(&rc, 1);
    struct buf out = {0};
    assert_int_equal(buf_append_str(&out, "keep"), 0);
    bad[i].mutate(&r, &rc);
    int got = dsn_build(&out, NULL, &r);
    if (got != -1 || out.len != 4) {
      fail_msg("%s: got %d len %zu, want -1 len 4", bad[i].name, got, out.len);
    }
    buf_free(&out);
  }
}

/* Addresses: ORCPT, non-ASCII without and with SMTPUTF8. */
static void test_addresses(void **state) {
  (void)state;
  struct dsn_rcpt rc = default_rcpt();
  rc.final_recipient = "j\xc3\xb6rg+x@example.net";
  rc.original_recipient = "rfc822;orig@example.net";
  struct dsn_report r = default_report(&rc, 1);
  struct buf out = {0};
  struct dsn_info info;
  assert_int_equal(dsn_build(&out, &info, &r), 0);
  assert_shape("utf8 7bit", &out);
  assert_true(contains(&out, "Final-Recipient: utf-8; j\\x{F6}rg\\x{2B}x@"));
  assert_true(contains(&out, "Original-Recipient: rfc822; orig@example.net"));
  assert_int_equal(info.smtputf8, 0);
  assert_python("utf8 7bit", &out, 1, 1, "text/rfc822-headers",
                "message/delivery-status");
  buf_reset(&out);

  r.smtputf8 = 1;
  assert_int_equal(dsn_build(&out, &info, &r), 0);
  assert_shape("utf8 global", &out);
  assert_true(contains(&out, "Final-Recipient: utf-8; j\xc3\xb6rg+x@"));
  assert_true(contains(&out, "message/global-delivery-status"));
  assert_int_equal(info.smtputf8, 1);
  assert_int_equal(info.body_8bit, 1);
  assert_python("utf8 global", &out, 1, 1, "message/global-headers",
                "message/global-delivery-status");
  buf_free(&out);
}

/* Long diagnostics fold at spaces; unbroken ones stay under 998. */
static void test_long_lines(void **state) {
  (void)state;
  static char diag[4000], orig[3000];
  memset(diag, 'a', sizeof(diag) - 1);
  for (size_t i = 50; i < 1500; i += 60) {
    diag[i] = ' ';
  }
  memset(orig, 'b', sizeof(orig) - 1);
  memcpy(orig, "Subject: x\r\n\r\n", 14);
  struct dsn_rcpt rc = default_rcpt();
  rc.diag_text = diag;
  struct dsn_report r = default_report(&rc, 1);
  r.ret = DSN_RET_FULL;
  r.original = (const uint8_t *)orig;
  r.original_len = strlen(orig);
  struct buf out = {0};
  assert_int_equal(dsn_build(&out, NULL, &r), 0);
  assert_shape("long lines", &out);
  assert_python("long lines", &out, 1, 1, "message/rfc822",
                "message/delivery-status");
  buf_free(&out);
}

/* Bare LF originals are returned as CRLF lines. */
static void test_bare_lf_original(void **state) {
  (void)state;
  static const char orig[] = "Subject: x\nX: y\r\rZ: z\n\nbody\n";
  struct dsn_rcpt rc = default_rcpt();
  struct dsn_report r = default_report(&rc, 1);
  r.original = (const uint8_t *)orig;
  r.original_len = sizeof(orig) - 1;
  struct buf out = {0};
  assert_int_equal(dsn_build(&out, NULL, &r), 0);
  assert_shape("bare lf", &out);
  assert_true(contains(&out, "\r\nSubject: x\r\nX: y\r\n"));
  assert_false(contains(&out, "body"));
  buf_free(&out);
}

/* More recipients than DSN_MAX_RCPTS: the first ones are listed. */
static void test_many_rcpts(void **state) {
  (void)state;
  size_t n = DSN_MAX_RCPTS + 5;
  struct dsn_rcpt *rcpts = calloc(n, sizeof(*rcpts));
  assert_non_null(rcpts);
  for (size_t i = 0; i < n; i++) {
    rcpts[i] = default_rcpt();
  }
  struct dsn_report r = default_report(rcpts, n);
  struct buf out = {0};
  struct dsn_info info;
  assert_int_equal(dsn_build(&out, &info, &r), 0);
  assert_int_equal(info.num_listed, DSN_MAX_RCPTS);
  assert_true(contains(&out, "(5 more recipients are not listed.)"));
  assert_shape("many", &out);
  assert_python("many", &out, DSN_MAX_RCPTS, 1, "text/rfc822-headers",
                "message/delivery-status");
  free(rcpts);
  buf_free(&out);
}

/* Fixed header fields: date, from, message-id, auto-submitted. */
static void test_headers(void **state) {
  (void)state;
  struct dsn_rcpt rc = default_rcpt();
  struct dsn_report r = default_report(&rc, 1);
  r.message_id_domain = "ids.example.com";
  struct buf out = {0};
  assert_int_equal(dsn_build(&out, NULL, &r), 0);
  static const char *const want[] = {
      "From: \"Mail Delivery System\" <MAILER-DAEMON@relay.example.com>\r\n",
      "To: <alice@example.org>\r\n",
      "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n",
      "Message-ID: <dsn.0000000000001234.1700000000@ids.example.com>\r\n",
      "Auto-Submitted: auto-replied\r\n",
      "MIME-Version: 1.0\r\n",
      "Reporting-MTA: dns; relay.example.com\r\n",
      "Arrival-Date: Tue, 14 Nov 2023 22:12:20 +0000\r\n",
      "Remote-MTA: dns; mx.example.net\r\n",
      "Last-Attempt-Date: Tue, 14 Nov 2023 22:13:19 +0000\r\n",
      "Final-Recipient: rfc822; bob@example.net\r\n",
  };
  for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
    if (!contains(&out, want[i])) {
      fail_msg("headers: lacks \"%s\"", want[i]);
    }
  }
  buf_free(&out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_case),
      cmocka_unit_test(test_boundary_collision),
      cmocka_unit_test(test_bad_input),
      cmocka_unit_test(test_addresses),
      cmocka_unit_test(test_long_lines),
      cmocka_unit_test(test_bare_lf_original),
      cmocka_unit_test(test_many_rcpts),
      cmocka_unit_test(test_headers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
