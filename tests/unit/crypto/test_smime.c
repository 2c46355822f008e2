/* Unit tests: crypto/smime — header fields, Content-Type parameters,
 * base64, multipart bodies (every boundary edge, LF and CRLF), splitting a
 * message into outer header and entity, the canonical form (8-bit and
 * long-line re-encoding, nested multiparts, the depth limit), the
 * classification of multipart/signed and application/pkcs7-mime (parsed
 * whole and cut at every point), and, with the CMS layer, sign / verify /
 * encrypt / decrypt / open round trips under a P-256 key made at start-up
 * (EFAIL policy included). Every table row is a labelled case. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "crypto/smime.h"
#include "tests/unit/crypto/pki.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define S(lit) (const uint8_t *)(lit), (sizeof(lit) - 1)

static char errbuf[256];

static const uint8_t *U(const char *s) {
  return (const uint8_t *)s;
}

/* ---- header fields ---- */

struct header_case {
  const char *label;
  const char *in;
  int want_rc;
  size_t want_num;
  const char *want_first_value; /* NULL: not checked */
  size_t want_body_off;         /* (size_t)-1: not checked */
};

static void test_header_parse(void **state) {
  static char big[SMIME_MAX_FIELD + 64];
  memcpy(big, "Subject: ", 9);
  memset(big + 9, 'x', sizeof big - 9 - 5);
  memcpy(big + sizeof big - 5, "\r\n\r\n", 5);
  const struct header_case cases[] = {
      {"crlf", "A: 1\r\nB: 2\r\n\r\nbody", SMIME_OK, 2, "1", 14},
      {"lf", "A: 1\nB: 2\n\nbody", SMIME_OK, 2, "1", 11},
      {"folded", "A: 1\r\n 2\r\nB: 3\r\n\r\n", SMIME_OK, 2, "1\r\n 2", 18},
      {"no body", "A: 1\r\nB: 2\r\n", SMIME_OK, 2, "1", 12},
      {"no final line break", "A: 1", SMIME_OK, 1, "1", 4},
      {"empty value", "A:\r\n\r\n", SMIME_OK, 1, "", 6},
      {"space before colon", "A : 1\r\n\r\n", SMIME_OK, 1, "1", 9},
      {"only blank line", "\r\nbody", SMIME_OK, 0, NULL, 2},
      {"empty input", "", SMIME_OK, 0, NULL, 0},
      {"line without colon", "A: 1\r\nnot a field\r\n\r\n", SMIME_ERR_SYNTAX, 0,
       NULL, (size_t)-1},
      {"starts with space", " A: 1\r\n\r\n", SMIME_ERR_SYNTAX, 0, NULL,
       (size_t)-1},
      {"field too long", big, SMIME_ERR_LIMIT, 0, NULL, (size_t)-1},
  };
  struct smime_field f[8];
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    const struct header_case *c = &cases[i];
    size_t n = 99, off = 99;
    errbuf[0] = '\0';
    int rc = smime_header_parse(f, ARRAY_LEN(f), &n, &off, U(c->in),
                                strlen(c->in), errbuf, sizeof errbuf);
    if (rc != c->want_rc) {
      fail_msg("%s: got rc %d (%s), want %d", c->label, rc, errbuf, c->want_rc);
    }
    if (rc != SMIME_OK) {
      continue;
    }
    if (n != c->want_num ||
        (c->want_body_off != (size_t)-1 && off != c->want_body_off)) {
      fail_msg("%s: got %zu fields, body at %zu; want %zu, %zu", c->label, n,
               off, c->want_num, c->want_body_off);
    }
    if (c->want_first_value != NULL &&
        (f[0].value_len != strlen(c->want_first_value) ||
         memcmp(f[0].value, c->want_first_value, f[0].value_len) != 0)) {
      fail_msg("%s: got value '%.*s', want '%s'", c->label, (int)f[0].value_len,
               f[0].value, c->want_first_value);
    }
  }
  /* more fields than the caller's array */
  size_t n, off;
  assert_int_equal(
      smime_header_parse(f, 2, &n, &off, S("A: 1\nB: 2\nC: 3\n\n"), NULL, 0),
      SMIME_ERR_LIMIT);
}

/* ---- Content-Type ---- */

struct ct_case {
  const char *label;
  const char *in;
  int want_rc;
  const char *type, *subtype;
  const char *param, *want_value; /* want_value NULL: absent */
};

static void test_ct_parse(void **state) {
  static char longv[SMIME_MAX_PARAM_VALUE + 40];
  snprintf(longv, sizeof longv, "text/plain; name=\"%0*d\"",
           SMIME_MAX_PARAM_VALUE, 0);
  static char sixteen[400], seventeen[sizeof sixteen + 16];
  size_t n16 = (size_t)snprintf(sixteen, sizeof sixteen, "a/b");
  for (int i = 0; i < SMIME_MAX_PARAMS; i++) {
    n16 +=
        (size_t)snprintf(sixteen + n16, sizeof sixteen - n16, "; p%d=%d", i, i);
  }
  snprintf(seventeen, sizeof seventeen, "%s; boundary=x", sixteen);
  const struct ct_case cases[] = {
      {"simple", "text/plain", SMIME_OK, "text", "plain", "charset", NULL},
      {"upper case", "Multipart/Signed; BOUNDARY=abc", SMIME_OK, "multipart",
       "signed", "boundary", "abc"},
      {"quoted", "multipart/mixed; boundary=\"a b;c\"", SMIME_OK, "multipart",
       "mixed", "boundary", "a b;c"},
      {"escaped quote", "a/b; x=\"q\\\"q\"", SMIME_OK, "a", "b", "x", "q\"q"},
      {"comments", "text/plain (c) ; (d) charset = utf-8 (e)", SMIME_OK, "text",
       "plain", "charset", "utf-8"},
      {"folded",
       "multipart/signed;\r\n\tprotocol=\"application/"
       "pkcs7-signature\";\r\n micalg=sha-256",
       SMIME_OK, "multipart", "signed", "micalg", "sha-256"},
      {"folded quoted", "a/b; p=\"x\r\n y\"", SMIME_OK, "a", "b", "p", "x y"},
      {"trailing semicolon", "text/plain; charset=us-ascii;", SMIME_OK, "text",
       "plain", "charset", "us-ascii"},
      {"double semicolon", "text/plain;; charset=x", SMIME_OK, "text", "plain",
       "charset", "x"},
      {"repeated parameter", "a/b; p=1; P=2", SMIME_ERR_SYNTAX, NULL, NULL,
       NULL, NULL},
      {"repeated boundary",
       "multipart/signed; boundary=a; protocol=\"application/"
       "pkcs7-signature\"; boundary=b",
       SMIME_ERR_SYNTAX, NULL, NULL, NULL, NULL},
      {"repeated boundary, quoted and not",
       "multipart/mixed; boundary=\"a\"; "
       "BOUNDARY=a",
       SMIME_ERR_SYNTAX, NULL, NULL, NULL, NULL},
      {"rfc 2231 boundary", "multipart/mixed; boundary*=us-ascii''b",
       SMIME_ERR_SYNTAX, NULL, NULL, NULL, NULL},
      {"rfc 2231 continued protocol",
       "multipart/signed; protocol*0=\"application/\"; "
       "protocol*1=\"pkcs7-signature\"",
       SMIME_ERR_SYNTAX, NULL, NULL, NULL, NULL},
      {"rfc 2231 name is fine", "application/pdf; name*=utf-8''a%20b.pdf",
       SMIME_OK, "application", "pdf", "name*", "utf-8''a%20b.pdf"},
      {"as many parameters as the limit", sixteen, SMIME_OK, "a", "b", "p15",
       "15"},
      {"one parameter over the limit", seventeen, SMIME_ERR_LIMIT, NULL, NULL,
       NULL, NULL},
      {"case-insensitive lookup", "a/b; Micalg=SHA-256", SMIME_OK, "a", "b",
       "MICALG", "SHA-256"},
      {"no subtype", "text", SMIME_ERR_SYNTAX, NULL, NULL, NULL, NULL},
      {"empty subtype", "text/", SMIME_ERR_SYNTAX, NULL, NULL, NULL, NULL},
      {"empty", "", SMIME_ERR_SYNTAX, NULL, NULL, NULL, NULL},
      {"nameless parameter", "a/b; =x", SMIME_ERR_SYNTAX, NULL, NULL, NULL,
       NULL},
      {"no equals", "a/b; x", SMIME_ERR_SYNTAX, NULL, NULL, NULL, NULL},
      {"unterminated quote", "a/b; x=\"abc", SMIME_ERR_SYNTAX, NULL, NULL, NULL,
       NULL},
      {"junk after subtype", "a/b c", SMIME_ERR_SYNTAX, NULL, NULL, NULL, NULL},
      {"unterminated comment", "a/b (x", SMIME_ERR_SYNTAX, NULL, NULL, NULL,
       NULL},
      {"value too long", longv, SMIME_ERR_LIMIT, NULL, NULL, NULL, NULL},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    const struct ct_case *c = &cases[i];
    struct smime_ct ct;
    errbuf[0] = '\0';
    int rc =
        smime_ct_parse(&ct, U(c->in), strlen(c->in), errbuf, sizeof errbuf);
    if (rc != c->want_rc) {
      fail_msg("%s: got rc %d (%s), want %d", c->label, rc, errbuf, c->want_rc);
    }
    if (rc != SMIME_OK) {
      continue;
    }
    const char *v = smime_ct_param(&ct, c->param);
    if (strcmp(ct.type, c->type) != 0 || strcmp(ct.subtype, c->subtype) != 0 ||
        (v == NULL) != (c->want_value == NULL) ||
        (v != NULL && strcmp(v, c->want_value) != 0)) {
      fail_msg("%s: got %s/%s %s=%s, want %s/%s %s=%s", c->label, ct.type,
               ct.subtype, c->param, v ? v : "(none)", c->type, c->subtype,
               c->param, c->want_value ? c->want_value : "(none)");
    }
  }
}

/* ---- base64 ---- */

struct b64_case {
  const char *label;
  const char *in;
  int want_rc;
  const char *want; /* decoded */
};

static void test_b64_decode(void **state) {
  const struct b64_case cases[] = {
      {"plain", "aGVsbG8=", SMIME_OK, "hello"},
      {"no padding needed", "aGVsbG8h", SMIME_OK, "hello!"},
      {"two pad", "aGk=", SMIME_OK, "hi"},
      {"one pad", "aGVs", SMIME_OK, "hel"},
      {"line breaks", "aG\r\nVs\nbG8=\r\n", SMIME_OK, "hello"},
      {"spaces and tabs", " aGVs \tbG8= ", SMIME_OK, "hello"},
      {"padding missing", "aGVsbG8", SMIME_OK, "hello"},
      {"empty", "", SMIME_OK, ""},
      {"only whitespace", "\r\n \t", SMIME_OK, ""},
      {"bad character", "aGV*bG8=", SMIME_ERR_SYNTAX, NULL},
      {"dash (base64url)", "aGV-bG8=", SMIME_ERR_SYNTAX, NULL},
      {"NUL", "aG\0Vs", SMIME_ERR_SYNTAX, NULL},
      {"pad in the middle", "aG=sbG8=", SMIME_ERR_SYNTAX, NULL},
      {"data after padding", "aGk=aGk=", SMIME_ERR_SYNTAX, NULL},
      {"first char pad", "=aGk", SMIME_ERR_SYNTAX, NULL},
      {"one char left", "aGVsb", SMIME_ERR_SYNTAX, NULL},
      {"8-bit byte", "aGVs\xc3\xa9", SMIME_ERR_SYNTAX, NULL},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    const struct b64_case *c = &cases[i];
    struct buf out = {0};
    size_t len = strcmp(c->label, "NUL") == 0 ? 5 : strlen(c->in);
    int rc = smime_b64_decode(&out, U(c->in), len);
    if (rc != c->want_rc ||
        (rc == SMIME_OK && (out.len != strlen(c->want) ||
                            memcmp(out.data, c->want, out.len) != 0))) {
      fail_msg("%s: got rc %d '%.*s', want %d '%s'", c->label, rc, (int)out.len,
               out.data ? (char *)out.data : "", c->want_rc,
               c->want ? c->want : "");
    }
    buf_free(&out);
  }
}

static void test_b64_round_trip(void **state) {
  uint8_t data[300];
  for (size_t i = 0; i < sizeof data; i++) {
    data[i] = (uint8_t)(i * 7 + 3);
  }
  for (size_t n = 0; n <= sizeof data; n++) {
    struct buf enc = {0}, dec = {0};
    assert_int_equal(smime_b64_encode(&enc, data, n), SMIME_OK);
    /* lines of at most 76 characters, each ending in CRLF */
    size_t col = 0;
    for (size_t k = 0; k < enc.len; k++) {
      if (enc.data[k] == '\r') {
        assert_true(k + 1 < enc.len && enc.data[k + 1] == '\n');
        assert_true(col <= SMIME_B64_LINE);
        col = 0;
        k++;
      } else {
        col++;
      }
    }
    assert_int_equal(col, 0);
    assert_int_equal(smime_b64_decode(&dec, enc.data, enc.len), SMIME_OK);
    if (dec.len != n || (n > 0 && memcmp(dec.data, data, n) != 0)) {
      fail_msg("length %zu: round trip differs", n);
    }
    buf_free(&enc);
    buf_free(&dec);
  }
}

/* ---- multipart ---- */

struct mp_case {
  const char *label;
  const char *boundary;
  const char *body;
  int want_rc;          /* of the last call */
  const char *parts[4]; /* expected parts, exact bytes */
};

static void test_multipart(void **state) {
  const struct mp_case cases[] = {
      {"two parts crlf",
       "b",
       "--b\r\nA\r\n--b\r\nB\r\n--b--\r\n",
       0,
       {"A", "B"}},
      {"two parts lf", "b", "--b\nA\n--b\nB\n--b--\n", 0, {"A", "B"}},
      {"preamble and epilogue",
       "b",
       "preamble\r\n--b\r\nA\r\n--b--\r\nepilogue\r\n",
       0,
       {"A"}},
      {"transport padding",
       "b",
       "--b  \r\nA\r\n--b\t\r\nB\r\n--b-- \r\n",
       0,
       {"A", "B"}},
      {"part keeps its own line ends",
       "b",
       "--b\r\nA\r\n\r\n--b\r\n\r\nB\r\n--b--",
       0,
       {"A\r\n", "\r\nB"}},
      {"empty part", "b", "--b\r\n\r\n--b\r\nB\r\n--b--\r\n", 0, {"", "B"}},
      {"delimiter right after delimiter",
       "b",
       "--b\r\n--b\r\nB\r\n--b--",
       0,
       {"", "B"}},
      {"a line beginning with the boundary is ambiguous",
       "b",
       "--b\r\n--bc\r\n--b\r\nB\r\n--b--",
       SMIME_ERR_SYNTAX,
       {NULL}},
      {"boundary then junk after dashes",
       "b",
       "--b\r\nA\r\n--b-x\r\n--b--",
       SMIME_ERR_SYNTAX,
       {NULL}},
      {"close delimiter then junk",
       "b",
       "--b\r\nA\r\n--b--x\r\n",
       SMIME_ERR_SYNTAX,
       {NULL}},
      {"padding then junk",
       "b",
       "--b\r\nA\r\n--b \tx\r\nB\r\n--b--",
       SMIME_ERR_SYNTAX,
       {NULL}},
      {"ambiguous line in the preamble",
       "b",
       "--bb\r\n--b\r\nA\r\n--b--",
       SMIME_ERR_SYNTAX,
       {NULL}},
      {"delimiter without its line break at the end",
       "b",
       "--b\r\nA\r\n--b",
       SMIME_ERR_SYNTAX,
       {NULL}},
      {"padding before a lone CR is not a line end",
       "b",
       "--b\r\nA\r\n--b \r--b--\r\n",
       SMIME_ERR_SYNTAX,
       {NULL}},
      {"boundary inside a line is content",
       "b",
       "--b\r\nx --b\r\n --b--\r\n--b--",
       0,
       {"x --b\r\n --b--"}},
      {"delimiter not at line start", "b", "--b\r\nx--b\r\n--b--", 0, {"x--b"}},
      {"mixed line ends", "b", "--b\nA\r\n--b\r\nB\n--b--", 0, {"A", "B"}},
      {"close without line break", "b", "--b\r\nA\r\n--b--", 0, {"A"}},
      {"quoted-style boundary chars",
       "'()+_,-./:=? x",
       "--'()+_,-./:=? x\r\nA\r\n--'()+_,-./:=? x--\r\n",
       0,
       {"A"}},
      {"no boundary in body", "b", "just text\r\n", SMIME_ERR_SYNTAX, {NULL}},
      {"close delimiter first", "b", "--b--\r\n", SMIME_ERR_SYNTAX, {NULL}},
      {"no close delimiter", "b", "--b\r\nA\r\n", SMIME_ERR_SYNTAX, {NULL}},
      {"no close after two",
       "b",
       "--b\r\nA\r\n--b\r\nB\r\n",
       SMIME_ERR_SYNTAX,
       {"A"}},
      {"empty boundary", "", "--\r\nA\r\n----", SMIME_ERR_SYNTAX, {NULL}},
      {"boundary ends in space",
       "b ",
       "--b \r\nA\r\n--b --",
       SMIME_ERR_SYNTAX,
       {NULL}},
      {"boundary too long",
       "01234567890123456789012345678901234567890123456789012345678901234567"
       "890",
       "",
       SMIME_ERR_SYNTAX,
       {NULL}},
      {"boundary with bad char",
       "a\"b",
       "--a\"b\r\n--a\"b--",
       SMIME_ERR_SYNTAX,
       {NULL}},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    const struct mp_case *c = &cases[i];
    struct smime_multipart mp;
    const uint8_t *part;
    size_t part_len, k = 0;
    errbuf[0] = '\0';
    int rc = smime_multipart_init(&mp, c->boundary, U(c->body), strlen(c->body),
                                  errbuf, sizeof errbuf);
    while ((rc == SMIME_OK || rc == 1) &&
           (rc = smime_multipart_next(&mp, &part, &part_len, errbuf,
                                      sizeof errbuf)) == 1) {
      if (k >= ARRAY_LEN(c->parts) || c->parts[k] == NULL) {
        fail_msg("%s: unexpected part %zu '%.*s'", c->label, k, (int)part_len,
                 part);
      }
      if (part_len != strlen(c->parts[k]) ||
          memcmp(part, c->parts[k], part_len) != 0) {
        fail_msg("%s: part %zu: got '%.*s', want '%s'", c->label, k,
                 (int)part_len, part, c->parts[k]);
      }
      k++;
    }
    if (rc != c->want_rc) {
      fail_msg("%s: got rc %d (%s), want %d", c->label, rc, errbuf, c->want_rc);
    }
    if (rc == 0 && k < ARRAY_LEN(c->parts) && c->parts[k] != NULL) {
      fail_msg("%s: got %zu parts, want more", c->label, k);
    }
    /* sticky: after the end or an error the same answer again */
    if (rc <= 0) {
      assert_int_equal(smime_multipart_next(&mp, &part, &part_len, NULL, 0),
                       rc);
    }
  }
}

/* ---- From ---- */

/* test_from_address: RFC 5322 §3.4 mailbox parsing, with the review's
 * cases: the address is never taken from a comment or a quoted display
 * name, and no From, several, a group or a list is an error, never an
 * empty success. */
static void test_from_address(void **state) {
  static char long_comment[400], long_local[300], long_addr[600];
  snprintf(long_comment, sizeof long_comment,
           "From: alice@corp.com (%0300d)\r\n\r\n", 0);
  snprintf(long_local, sizeof long_local, "From: %0*d@x.example\r\n\r\n",
           SMIME_MAX_ADDRESS, 0);
  snprintf(long_addr, sizeof long_addr, "From: Name <%0*d@x.example>\r\n\r\n",
           SMIME_MAX_ADDRESS - 10, 0); /* exactly SMIME_MAX_ADDRESS bytes */
  const struct {
    const char *label, *msg;
    int want_rc;
    const char *want; /* SMIME_OK only */
  } cases[] = {
      {"angle", "From: Alice <alice@example.org>\r\n\r\n", SMIME_OK,
       "alice@example.org"},
      {"bare", "From: alice@example.org\r\n\r\n", SMIME_OK,
       "alice@example.org"},
      {"angle without name", "From: <alice@example.org>\r\n\r\n", SMIME_OK,
       "alice@example.org"},
      {"folded", "From: \"Alice A.\"\r\n <a@b.example>\r\n\r\n", SMIME_OK,
       "a@b.example"},
      {"folded before the address", "From: Alice\r\n\t<a@b.example>\r\n\r\n",
       SMIME_OK, "a@b.example"},
      {"case kept", "FROM: Al <Al@Example.ORG>\n\n", SMIME_OK,
       "Al@Example.ORG"},
      {"comment holding an angle address",
       "From: alice@corp.com (<mallory@evil.com>)\r\n\r\n", SMIME_OK,
       "alice@corp.com"},
      {"quoted name holding an angle address",
       "From: \"<mallory@evil.com>\" <alice@corp.com>\r\n\r\n", SMIME_OK,
       "alice@corp.com"},
      {"quoted name with escapes and parens",
       "From: \"a \\\" (<m@evil.com>\" <alice@corp.com>\r\n\r\n", SMIME_OK,
       "alice@corp.com"},
      {"nested comment with quoted-pairs",
       "From: (a (b \\) <m@evil.com>) c) alice@corp.com (x)\r\n\r\n", SMIME_OK,
       "alice@corp.com"},
      {"300-char comment", long_comment, SMIME_OK, "alice@corp.com"},
      {"comments around the parts",
       "From: (c) Alice (d) <(e) alice (f) @ (g) corp.com (h)> (i)\r\n\r\n",
       SMIME_OK, "alice@corp.com"},
      {"obs-phrase with a dot", "From: John Q. Public <jqp@x.example>\r\n\r\n",
       SMIME_OK, "jqp@x.example"},
      {"8-bit display name", "From: J\xc3\xa9r\xc3\xb4me <j@x.example>\r\n\r\n",
       SMIME_OK, "j@x.example"},
      {"quoted local part kept quoted", "From: \"john doe\"@x.example\r\n\r\n",
       SMIME_OK, "\"john doe\"@x.example"},
      {"quoted local part that is a dot-atom",
       "From: <\"alice.b\"@x.example>\r\n\r\n", SMIME_OK, "alice.b@x.example"},
      {"quoted local part with an at sign",
       "From: \"mallory@evil.com\"@corp.com\r\n\r\n", SMIME_OK,
       "\"mallory@evil.com\"@corp.com"},
      {"domain literal", "From: a@[192.0.2.1]\r\n\r\n", SMIME_OK,
       "a@[192.0.2.1]"},
      {"longest address", long_addr, SMIME_OK, NULL},
      {"no From", "To: b@example\r\n\r\n", SMIME_ERR_SYNTAX, NULL},
      {"no header at all", "", SMIME_ERR_SYNTAX, NULL},
      {"two From fields", "From: a@x\r\nFrom: b@x\r\n\r\n", SMIME_ERR_SYNTAX,
       NULL},
      {"two From fields, differing case",
       "From: mallory@evil.com\r\nfrom: alice@corp.com\r\n\r\n",
       SMIME_ERR_SYNTAX, NULL},
      {"empty value", "From:\r\n\r\n", SMIME_ERR_SYNTAX, NULL},
      {"null address", "From: <>\r\n\r\n", SMIME_ERR_SYNTAX, NULL},
      {"list", "From: a@x.example, b@x.example\r\n\r\n", SMIME_ERR_SYNTAX,
       NULL},
      {"list of name-addrs", "From: A <a@x.example>, B <b@x.example>\r\n\r\n",
       SMIME_ERR_SYNTAX, NULL},
      {"group", "From: Team: a@x.example;\r\n\r\n", SMIME_ERR_SYNTAX, NULL},
      {"empty group", "From: undisclosed-recipients:;\r\n\r\n",
       SMIME_ERR_SYNTAX, NULL},
      {"address as display name",
       "From: alice@corp.com <mallory@evil.com>\r\n\r\n", SMIME_ERR_SYNTAX,
       NULL},
      {"two angle addresses",
       "From: <alice@corp.com> <mallory@evil.com>\r\n\r\n", SMIME_ERR_SYNTAX,
       NULL},
      {"junk after the angle address",
       "From: A <alice@corp.com> mallory@evil.com\r\n\r\n", SMIME_ERR_SYNTAX,
       NULL},
      {"unterminated angle", "From: A <alice@corp.com\r\n\r\n",
       SMIME_ERR_SYNTAX, NULL},
      {"unterminated comment", "From: alice@corp.com (x\r\n\r\n",
       SMIME_ERR_SYNTAX, NULL},
      {"unterminated quoted name", "From: \"A <alice@corp.com>\r\n\r\n",
       SMIME_ERR_SYNTAX, NULL},
      {"route", "From: <@relay.example:alice@corp.com>\r\n\r\n",
       SMIME_ERR_SYNTAX, NULL},
      {"no at sign", "From: alice\r\n\r\n", SMIME_ERR_SYNTAX, NULL},
      {"no domain", "From: alice@\r\n\r\n", SMIME_ERR_SYNTAX, NULL},
      {"double dot", "From: a..b@x.example\r\n\r\n", SMIME_ERR_SYNTAX, NULL},
      {"leading dot", "From: .a@x.example\r\n\r\n", SMIME_ERR_SYNTAX, NULL},
      {"8-bit local part", "From: j\xc3\xa9@x.example\r\n\r\n",
       SMIME_ERR_SYNTAX, NULL},
      {"fold inside the address", "From: ali\r\n ce@corp.com\r\n\r\n",
       SMIME_ERR_SYNTAX, NULL},
      {"address too long", long_local, SMIME_ERR_LIMIT, NULL},
      {"header does not parse", "From a@x\r\n\r\n", SMIME_ERR_SYNTAX, NULL},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    char out[CMS_EMAIL_MAX + 8];
    memset(out, 'z', sizeof out);
    errbuf[0] = '\0';
    int rc = smime_from_address(out, sizeof out, U(cases[i].msg),
                                strlen(cases[i].msg), errbuf, sizeof errbuf);
    if (rc != cases[i].want_rc) {
      fail_msg("%s: got rc %d '%s' (%s), want %d", cases[i].label, rc,
               rc == SMIME_OK ? out : "", errbuf, cases[i].want_rc);
    }
    if (rc == SMIME_OK && (out[0] == '\0' || (cases[i].want != NULL &&
                                              strcmp(out, cases[i].want)))) {
      fail_msg("%s: got '%s', want '%s'", cases[i].label, out,
               cases[i].want ? cases[i].want : "(non-empty)");
    }
    if (rc != SMIME_OK && (out[0] != '\0' || errbuf[0] == '\0')) {
      fail_msg("%s: an error left '%s' and reason '%s'", cases[i].label, out,
               errbuf);
    }
  }
  /* the address must fit the caller's buffer: never truncated */
  char small[8];
  assert_int_equal(smime_from_address(small, sizeof small,
                                      S("From: alice@corp.com\r\n\r\n"), NULL,
                                      0),
                   SMIME_ERR_LIMIT);
  assert_string_equal(small, "");
}

/* ---- split and join ---- */

struct split_case {
  const char *label;
  const char *msg;
  const char *want_outer, *want_entity;
};

static void test_split(void **state) {
  const struct split_case cases[] = {
      {"content fields move in",
       "From: a@x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; "
       "charset=utf-8\r\nSubject: s\r\nContent-Transfer-Encoding: 7bit\r\n"
       "\r\nhi\r\n",
       "From: a@x\r\nSubject: s\r\n",
       "Content-Type: text/plain; charset=utf-8\r\n"
       "Content-Transfer-Encoding: 7bit\r\n\r\nhi\r\n"},
      {"no Content-Type: text/plain us-ascii",
       "From: a@x\r\nTo: b@y\r\n\r\nhi\r\n", "From: a@x\r\nTo: b@y\r\n",
       "Content-Type: text/plain; charset=us-ascii\r\n\r\nhi\r\n"},
      {"lf header to crlf, body kept", "From: a@x\nContent-ID: <c@x>\n\nhi\n",
       "From: a@x\r\n",
       "Content-ID: <c@x>\r\nContent-Type: text/plain; "
       "charset=us-ascii\r\n\r\nhi\n"},
      {"folded content field",
       "From: a@x\r\nContent-Type: multipart/mixed;\r\n boundary=q\r\n\r\n--q"
       "\r\n\r\n--q--\r\n",
       "From: a@x\r\n",
       "Content-Type: multipart/mixed;\r\n boundary=q\r\n\r\n--q\r\n\r\n"
       "--q--\r\n"},
      {"case of names",
       "FROM: a@x\r\ncontent-disposition: inline\r\n"
       "CONTENT-TYPE: text/html\r\n\r\n<p>",
       "FROM: a@x\r\n",
       "content-disposition: inline\r\nCONTENT-TYPE: text/html\r\n\r\n<p>"},
      {"header only", "From: a@x\r\nSubject: s\r\n",
       "From: a@x\r\nSubject: s\r\n",
       "Content-Type: text/plain; charset=us-ascii\r\n\r\n"},
      {"Received stays out",
       "Received: from a\r\n by b\r\nContent-Description: d\r\n\r\nx",
       "Received: from a\r\n by b\r\n",
       "Content-Description: d\r\nContent-Type: text/plain; "
       "charset=us-ascii\r\n\r\nx"},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    const struct split_case *c = &cases[i];
    struct buf outer = {0}, entity = {0}, joined = {0};
    int rc = smime_split(&outer, &entity, U(c->msg), strlen(c->msg), errbuf,
                         sizeof errbuf);
    if (rc != SMIME_OK || outer.len != strlen(c->want_outer) ||
        memcmp(outer.data, c->want_outer, outer.len) != 0 ||
        entity.len != strlen(c->want_entity) ||
        memcmp(entity.data, c->want_entity, entity.len) != 0) {
      fail_msg("%s: rc %d\ngot outer '%.*s'\nwant '%s'\ngot entity "
               "'%.*s'\nwant '%s'",
               c->label, rc, (int)outer.len, (char *)outer.data, c->want_outer,
               (int)entity.len, (char *)entity.data, c->want_entity);
    }
    assert_int_equal(
        smime_join(&joined, outer.data, outer.len, entity.data, entity.len),
        SMIME_OK);
    assert_non_null(
        memmem(joined.data, joined.len, "MIME-Version: 1.0\r\n", 19));
    buf_free(&outer);
    buf_free(&entity);
    buf_free(&joined);
  }
  struct buf o = {0}, e = {0};
  assert_int_equal(
      smime_split(&o, &e, S("From: a\r\nbad line\r\n\r\n"), NULL, 0),
      SMIME_ERR_SYNTAX);
  assert_int_equal(o.len + e.len, 0);
  /* two Content-Type or Content-Transfer-Encoding fields: readers would
   * disagree on the entity being signed or encrypted */
  assert_int_equal(smime_split(&o, &e,
                               S("From: a@x\r\nContent-Type: text/plain\r\n"
                                 "content-type: text/html\r\n\r\nx"),
                               NULL, 0),
                   SMIME_ERR_SYNTAX);
  assert_int_equal(smime_split(&o, &e,
                               S("Content-Transfer-Encoding: 7bit\r\n"
                                 "Content-Transfer-Encoding: base64\r\n\r\nx"),
                               NULL, 0),
                   SMIME_ERR_SYNTAX);
  assert_int_equal(o.len + e.len, 0);
}

/* test_join_entity_header: of an inner entity's header only Content-*
 * fields reach the joined message (an inner From: or
 * Authentication-Results: must not be spliced into the top level). */
static void test_join_entity_header(void **state) {
  static const char outer[] = "From: Alice <alice@example.org>\r\n"
                              "Subject: s\r\n";
  const struct {
    const char *label, *entity;
    int want_rc;
    const char *want; /* what follows outer and MIME-Version */
  } cases[] = {
      {"content fields only",
       "Content-Type: text/plain\r\nContent-ID: <c@x>\r\n\r\nbody\r\n",
       SMIME_OK,
       "Content-Type: text/plain\r\nContent-ID: <c@x>\r\n\r\nbody\r\n"},
      {"inner From and Authentication-Results dropped",
       "From: ceo@evil.example\r\nAuthentication-Results: gw; smime=pass\r\n"
       "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nhi\r\n",
       SMIME_OK, "Content-Type: text/plain\r\n\r\nhi\r\n"},
      {"folded inner field dropped whole",
       "Subject: a\r\n b\r\nContent-Type: text/plain;\r\n charset=x\r\n\r\n"
       "Subject: in the body stays\r\n",
       SMIME_OK,
       "Content-Type: text/plain;\r\n charset=x\r\n\r\n"
       "Subject: in the body stays\r\n"},
      {"lf header made crlf, body kept",
       "Content-Type: text/plain\nFrom: x@y\n\nbody\n", SMIME_OK,
       "Content-Type: text/plain\r\n\r\nbody\n"},
      {"header without body", "Content-Type: text/plain\r\n", SMIME_OK,
       "Content-Type: text/plain\r\n\r\n"},
      {"not a header", "just text\r\n", SMIME_ERR_SYNTAX, NULL},
      {"two Content-Type fields",
       "Content-Type: text/plain\r\nContent-Type: text/html\r\n\r\nx",
       SMIME_ERR_SYNTAX, NULL},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    struct buf out = {0}, want = {0};
    buf_append_str(&out, "keep");
    int rc = smime_join(&out, U(outer), strlen(outer), U(cases[i].entity),
                        strlen(cases[i].entity));
    if (rc != cases[i].want_rc) {
      fail_msg("%s: got rc %d, want %d", cases[i].label, rc, cases[i].want_rc);
    }
    if (rc == SMIME_OK) {
      buf_printf(&want, "keep%sMIME-Version: 1.0\r\n%s", outer, cases[i].want);
    } else {
      buf_append_str(&want, "keep");
    }
    if (out.len != want.len || memcmp(out.data, want.data, out.len) != 0) {
      fail_msg("%s: got '%.*s', want '%.*s'", cases[i].label, (int)out.len,
               (char *)out.data, (int)want.len, (char *)want.data);
    }
    buf_free(&out);
    buf_free(&want);
  }
}

/* ---- canonical form ---- */

/* is_canonical: 7-bit, no NUL, CRLF line ends only, lines <= 998. */
static int is_canonical(const struct buf *b) {
  size_t line = 0;
  for (size_t i = 0; i < b->len; i++) {
    uint8_t c = b->data[i];
    if (c >= 0x80 || c == 0) {
      return 0;
    }
    if (c == '\r') {
      if (i + 1 == b->len || b->data[i + 1] != '\n') {
        return 0;
      }
      i++;
      line = 0;
      continue;
    }
    if (c == '\n' || ++line > SMIME_MAX_LINE) {
      return 0;
    }
  }
  return 1;
}

/* qp_decode: a small quoted-printable decoder for the checks. */
static void qp_decode(struct buf *out, const uint8_t *in, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (in[i] == '=' && i + 2 < n && in[i + 1] == '\r' && in[i + 2] == '\n') {
      i += 2;
    } else if (in[i] == '=' && i + 2 < n) {
      char hex[3] = {(char)in[i + 1], (char)in[i + 2], 0};
      uint8_t c = (uint8_t)strtoul(hex, NULL, 16);
      buf_append(out, &c, 1);
      i += 2;
    } else {
      buf_append(out, &in[i], 1);
    }
  }
}

/* body_of returns the bytes after the first blank line of b. */
static const uint8_t *body_of(const struct buf *b, size_t *out_len) {
  const uint8_t *p = memmem(b->data, b->len, "\r\n\r\n", 4);
  assert_non_null(p);
  *out_len = b->len - (size_t)(p + 4 - b->data);
  return p + 4;
}

struct canon_case {
  const char *label;
  const char *in;
  int want_rc;
  const char *want;            /* exact output, or NULL */
  const char *want_has;        /* a substring the output must hold, or NULL */
  const char *want_decoded_qp; /* the QP body must decode to this */
};

static void test_canon(void **state) {
  static char longline[1200 + 80];
  static char b64long[2000];
  snprintf(longline, sizeof longline,
           "Content-Type: text/plain\r\n\r\n%01100d\r\n", 0);
  snprintf(b64long, sizeof b64long,
           "Content-Type: application/octet-stream\r\n"
           "Content-Transfer-Encoding: base64\r\n\r\n");
  for (size_t i = strlen(b64long); i < sizeof b64long - 3; i++) {
    b64long[i] = 'A';
  }
  memcpy(b64long + sizeof b64long - 3, "\r\n", 3);
  const struct canon_case cases[] = {
      {"7-bit crlf unchanged", "Content-Type: text/plain\r\n\r\nhi\r\n",
       SMIME_OK, "Content-Type: text/plain\r\n\r\nhi\r\n", NULL, NULL},
      {"lone lf to crlf", "Content-Type: text/plain\n\nhi\nthere\n", SMIME_OK,
       "Content-Type: text/plain\r\n\r\nhi\r\nthere\r\n", NULL, NULL},
      {"8-bit text to qp",
       "Content-Type: text/plain; charset=utf-8\r\n"
       "Content-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9 = ok \r\n",
       SMIME_OK,
       "Content-Type: text/plain; charset=utf-8\r\n"
       "Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9 =3D "
       "ok=20\r\n",
       NULL, NULL},
      {"8-bit text lf to qp with crlf",
       "Content-Type: text/plain; charset=utf-8\n\n\xc3\xa9\nx\n", SMIME_OK,
       NULL, "quoted-printable", "\xc3\xa9\r\nx\r\n"},
      {"long line to qp", longline, SMIME_OK, NULL, "quoted-printable", NULL},
      {"8-bit binary to base64",
       "Content-Type: application/octet-stream\r\n"
       "Content-Transfer-Encoding: binary\r\n\r\n\x00\x01\xff",
       SMIME_OK,
       "Content-Type: application/octet-stream\r\n"
       "Content-Transfer-Encoding: base64\r\n\r\nAAH/\r\n",
       NULL, NULL},
      {"lone cr in text", "Content-Type: text/plain\r\n\r\na\rb\r\n", SMIME_OK,
       NULL, "a=0Db", NULL},
      {"base64 long lines rewrapped", b64long, SMIME_OK, NULL,
       "Content-Transfer-Encoding: base64\r\n", NULL},
      {"multipart leaf encoded, sibling kept",
       "Content-Type: multipart/mixed; boundary=\"q\"\r\n\r\npre\r\n--q\r\n"
       "Content-Type: text/plain\r\n\r\nplain\r\n--q\r\nContent-Type: "
       "text/plain; charset=latin1\r\n\r\n\xe9t\xe9\r\n--q--\r\nepi\r\n",
       SMIME_OK,
       "Content-Type: multipart/mixed; boundary=\"q\"\r\n\r\npre\r\n--q\r\n"
       "Content-Type: text/plain\r\n\r\nplain\r\n--q\r\nContent-Type: "
       "text/plain; charset=latin1\r\nContent-Transfer-Encoding: "
       "quoted-printable\r\n\r\n=E9t=E9\r\n--q--\r\nepi\r\n",
       NULL, NULL},
      {"nested multipart leaf encoded",
       "Content-Type: multipart/mixed; boundary=a\n\n--a\nContent-Type: "
       "multipart/alternative; boundary=b\n\n--b\nContent-Type: "
       "image/png\n\n\x89PNG\n--b--\n--a--\n",
       SMIME_OK,
       "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: "
       "multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: "
       "image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw==\r\n"
       "\r\n--b--\r\n--a--\r\n",
       NULL, NULL},
      {"8-bit preamble dropped",
       "Content-Type: multipart/mixed; boundary=q\r\n\r\n\xff\r\n--q\r\n\r\n"
       "\xff\r\n--q--\r\n",
       SMIME_OK,
       "Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n"
       "Content-Transfer-Encoding: quoted-printable\r\n\r\n=FF\r\n--q--\r\n",
       NULL, NULL},
      {"message/rfc822 inner encoded",
       "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n"
       "\r\nSubject: s\r\nContent-Type: text/plain\r\n\r\n\xe9\r\n",
       SMIME_OK,
       "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n"
       "\r\nSubject: s\r\nContent-Type: text/plain\r\n"
       "Content-Transfer-Encoding: quoted-printable\r\n\r\n=E9\r\n",
       NULL, NULL},
      {"8-bit multipart without boundary",
       "Content-Type: multipart/mixed\r\n\r\n\xff\r\n", SMIME_ERR_SYNTAX, NULL,
       NULL, NULL},
      {"8-bit multipart/signed refused",
       "Content-Type: multipart/signed; boundary=q\r\n\r\n--q\r\n\r\n\xff\r\n"
       "--q--\r\n",
       SMIME_ERR_UNSUPPORTED, NULL, NULL, NULL},
      {"8-bit in qp refused",
       "Content-Type: text/plain\r\nContent-Transfer-Encoding: "
       "quoted-printable\r\n\r\n\xff\r\n",
       SMIME_ERR_UNSUPPORTED, NULL, NULL, NULL},
      {"bad base64 with long lines",
       "Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
       "\xff\xff\r\n",
       SMIME_ERR_SYNTAX, NULL, NULL, NULL},
      {"8-bit header refused", "Content-Description: \xe9\r\n\r\nx",
       SMIME_ERR_UNSUPPORTED, NULL, NULL, NULL},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    const struct canon_case *c = &cases[i];
    size_t in_len = strlen(c->in);
    if (strcmp(c->label, "8-bit binary to base64") == 0) {
      in_len = strlen(c->in) + 3; /* past the NUL */
    }
    struct buf out = {0}, again = {0};
    errbuf[0] = '\0';
    int rc = smime_canon(&out, U(c->in), in_len, errbuf, sizeof errbuf);
    if (rc != c->want_rc) {
      fail_msg("%s: got rc %d (%s), want %d", c->label, rc, errbuf, c->want_rc);
    }
    if (rc != SMIME_OK) {
      assert_int_equal(out.len, 0);
      continue;
    }
    if (!is_canonical(&out)) {
      fail_msg("%s: not canonical: '%.*s'", c->label, (int)out.len,
               (char *)out.data);
    }
    if (c->want != NULL && (out.len != strlen(c->want) ||
                            memcmp(out.data, c->want, out.len) != 0)) {
      fail_msg("%s:\ngot  '%.*s'\nwant '%s'", c->label, (int)out.len,
               (char *)out.data, c->want);
    }
    if (c->want_has != NULL &&
        memmem(out.data, out.len, c->want_has, strlen(c->want_has)) == NULL) {
      fail_msg("%s: '%s' not in '%.*s'", c->label, c->want_has, (int)out.len,
               (char *)out.data);
    }
    if (c->want_decoded_qp != NULL) {
      struct buf dec = {0};
      size_t blen;
      const uint8_t *b = body_of(&out, &blen);
      qp_decode(&dec, b, blen);
      if (dec.len != strlen(c->want_decoded_qp) ||
          memcmp(dec.data, c->want_decoded_qp, dec.len) != 0) {
        fail_msg("%s: qp decodes to '%.*s'", c->label, (int)dec.len,
                 (char *)dec.data);
      }
      buf_free(&dec);
    }
    /* idempotent: the canonical form is its own canonical form */
    assert_int_equal(smime_canon(&again, out.data, out.len, NULL, 0), SMIME_OK);
    if (again.len != out.len || memcmp(again.data, out.data, out.len) != 0) {
      fail_msg("%s: canon is not idempotent", c->label);
    }
    buf_free(&out);
    buf_free(&again);
  }
}

/* test_canon_qp_lines: quoted-printable of long 8-bit text keeps lines at
 * 76 characters and decodes back. */
static void test_canon_qp_lines(void **state) {
  struct buf in = {0}, out = {0}, dec = {0};
  buf_append_str(&in, "Content-Type: text/plain; charset=utf-8\r\n\r\n");
  size_t body_start = in.len;
  for (int i = 0; i < 3000; i++) {
    buf_append_str(&in, i % 7 == 0 ? "\xc3\xa9" : i % 13 == 0 ? " " : "=");
  }
  buf_append_str(&in, " \r\nend\t\r\n");
  assert_int_equal(smime_canon(&out, in.data, in.len, errbuf, sizeof errbuf),
                   SMIME_OK);
  size_t blen, col = 0;
  const uint8_t *b = body_of(&out, &blen);
  for (size_t i = 0; i < blen; i++) {
    if (b[i] == '\r') {
      assert_true(col <= 76);
      col = 0;
      i++;
    } else {
      col++;
    }
  }
  qp_decode(&dec, b, blen);
  assert_int_equal(dec.len, in.len - body_start);
  assert_memory_equal(dec.data, in.data + body_start, dec.len);
  buf_free(&in);
  buf_free(&out);
  buf_free(&dec);
}

/* test_canon_depth: multiparts nested to the limit re-encode; one level
 * more is SMIME_ERR_LIMIT. */
static void test_canon_depth(void **state) {
  for (int depth = SMIME_MAX_DEPTH - 1; depth <= SMIME_MAX_DEPTH + 3; depth++) {
    struct buf in = {0}, out = {0};
    for (int i = 0; i < depth; i++) {
      buf_printf(
          &in, "Content-Type: multipart/mixed; boundary=b%dz\r\n\r\n--b%dz\r\n",
          i, i);
    }
    buf_append_str(&in, "Content-Type: text/plain\r\n\r\n\xff\r\n");
    for (int i = depth - 1; i >= 0; i--) {
      buf_printf(&in, "--b%dz--\r\n", i);
    }
    int rc = smime_canon(&out, in.data, in.len, errbuf, sizeof errbuf);
    int want = depth <= SMIME_MAX_DEPTH ? SMIME_OK : SMIME_ERR_LIMIT;
    if (rc != want) {
      fail_msg("depth %d: got %d (%s), want %d", depth, rc, errbuf, want);
    }
    buf_free(&in);
    buf_free(&out);
  }
}

/* ---- classification ---- */

/* A ContentInfo: SEQUENCE { id-signedData, [0] { SEQUENCE {} } }. The
 * base64 of id-envelopedData and id-ct-authEnvelopedData ones appear in
 * the cases as MA8GCSqGSIb3DQEHA6ACMAA= and MBEGCyqGSIb3DQEJEAEXoAIwAA==. */
static const uint8_t der_signed[] = {0x30, 0x0f, 0x06, 0x09, 0x2a, 0x86,
                                     0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07,
                                     0x02, 0xa0, 0x02, 0x30, 0x00};
#define SIGNED_CONTENT                                                         \
  "Content-Type: text/plain\r\n\r\nhello\r\n --bound is not a delimiter\r\n"
/* the base64 of der_signed */
#define SIG_B64 "MA8GCSqGSIb3DQEHAqACMAA="

/* Minimal well-formed EnvelopedData (one KeyTransRecipientInfo, AES-CBC,
 * 16 bytes of content) and AuthEnvelopedData (AES-GCM, with a mac), made
 * by hand: cms_check_enveloped accepts them, nobody can decrypt them. */
#define ENV_B64                                                                \
  "MH8GCSqGSIb3DQEHA6ByMHACAQAxLTArAgEAMAUwAAIBATANBgkqhkiG9w0BAQEFAAQQa2tra2" \
  "tra2tra2tra2trazA8BgkqhkiG9w0BBwEwHQYJYIZIAWUDBAECBBBpaWlpaWlpaWlpaWlpaWlp" \
  "gBBjY2NjY2NjY2NjY2NjY2Nj"
#define AUTH_ENV_B64                                                           \
  "MIGWBgsqhkiG9w0BCRABF6CBhjCBgwIBADEtMCsCAQAwBTAAAgEBMA0GCSqGSIb3DQEBAQUABB" \
  "Bra2tra2tra2tra2tra2trMD0GCSqGSIb3DQEHATAeBglghkgBZQMEAS4wEQQMbm5ubm5ubm5u" \
  "bm5uAgEQgBBjY2NjY2NjY2NjY2NjY2NjBBB0dHR0dHR0dHR0dHR0dHR0"
/* the same EnvelopedData with an empty encryptedContent, without one,
 * and with an empty RecipientInfos SET */
#define ENV_EMPTY_B64                                                          \
  "MG8GCSqGSIb3DQEHA6BiMGACAQAxLTArAgEAMAUwAAIBATANBgkqhkiG9w0BAQEFAAQQa2tra2" \
  "tra2tra2tra2trazAsBgkqhkiG9w0BBwEwHQYJYIZIAWUDBAECBBBpaWlpaWlpaWlpaWlpaWlp" \
  "gAA="
#define ENV_NO_CONTENT_B64                                                     \
  "MG0GCSqGSIb3DQEHA6BgMF4CAQAxLTArAgEAMAUwAAIBATANBgkqhkiG9w0BAQEFAAQQa2tra2" \
  "tra2tra2tra2trazAqBgkqhkiG9w0BBwEwHQYJYIZIAWUDBAECBBBpaWlpaWlpaWlpaWlpaWlp"
#define ENV_NO_RECIPIENT_B64                                                   \
  "MFIGCSqGSIb3DQEHA6BFMEMCAQAxADA8BgkqhkiG9w0BBwEwHQYJYIZIAWUDBAECBBBpaWlpaW" \
  "lpaWlpaWlpaWlpgBBjY2NjY2NjY2NjY2NjY2Nj"
/* the review's trigger: 30 80 06 09 <id-envelopedData>, then plaintext */
#define ENV_HEAD_THEN_PLAINTEXT_B64                                            \
  "MIAGCSqGSIb3DQEHA1RoZSBzZWNyZXQgbWVyZ2VyIHBsYW4gaXM6IC4uLg=="

/* p7m_case makes an application/pkcs7-mime entity of the given
 * Content-Type parameters and base64 body. */
#define P7M(params, b64)                                                       \
  "Content-Type: application/pkcs7-mime" params "\r\n"                         \
  "Content-Transfer-Encoding: base64\r\n\r\n" b64 "\r\n"

static const char mps_msg[] =
    "From: a@example.org\r\nMIME-Version: 1.0\r\n"
    "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\";"
    "\r\n micalg=SHA-256; boundary=\"bound\"\r\n\r\n"
    "This is an S/MIME signed message\r\n\r\n"
    "--bound\r\n" SIGNED_CONTENT "\r\n--bound\r\n"
    "Content-Type: application/pkcs7-signature; name=smime.p7s\r\n"
    "Content-Transfer-Encoding: base64\r\n\r\n" SIG_B64 "\r\n--bound--\r\n";

struct parse_case {
  const char *label;
  const char *msg;
  int want_rc;
  enum smime_kind want_kind;
  const char *want_content; /* multipart/signed, or NULL */
};

static void test_parse(void **state) {
  const struct parse_case cases[] = {
      {"multipart/signed", mps_msg, SMIME_OK, SMIME_KIND_MULTIPART_SIGNED,
       SIGNED_CONTENT},
      {"multipart/signed lf",
       "Content-Type: multipart/signed; boundary=b; "
       "protocol=\"application/x-pkcs7-signature\"\n\n--b\nContent-Type: "
       "text/plain\n\nhi\n--b\nContent-Type: application/x-pkcs7-signature\n"
       "Content-Transfer-Encoding: base64\n\n" SIG_B64 "\n--b--\n",
       SMIME_OK, SMIME_KIND_MULTIPART_SIGNED, "Content-Type: text/plain\n\nhi"},
      {"protocol case-insensitive",
       "Content-Type: Multipart/Signed; PROTOCOL=\"Application/"
       "PKCS7-Signature\"; Boundary=b\r\n\r\n--b\r\nX\r\n--b\r\nContent-Type: "
       "application/pkcs7-signature\r\nContent-Transfer-Encoding: base64\r\n"
       "\r\n" SIG_B64 "\r\n--b--\r\n",
       SMIME_OK, SMIME_KIND_MULTIPART_SIGNED, "X"},
      {"pgp multipart/signed is not S/MIME",
       "Content-Type: multipart/signed; protocol=\"application/"
       "pgp-signature\"; boundary=b\r\n\r\n--b\r\nX\r\n--b--\r\n",
       SMIME_OK, SMIME_KIND_NONE, NULL},
      {"plain text", "From: a\r\n\r\nhi\r\n", SMIME_OK, SMIME_KIND_NONE, NULL},
      {"pkcs7-mime enveloped-data",
       "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; "
       "name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n" ENV_B64
       "\r\n",
       SMIME_OK, SMIME_KIND_ENVELOPED, NULL},
      {"pkcs7-mime authEnveloped-data",
       P7M("; smime-type=authEnveloped-data", AUTH_ENV_B64), SMIME_OK,
       SMIME_KIND_AUTH_ENVELOPED, NULL},
      {"smime-type case-insensitive",
       P7M("; smime-type=ENVELOPED-DATA", ENV_B64), SMIME_OK,
       SMIME_KIND_ENVELOPED, NULL},
      {"x-pkcs7-mime without smime-type sniffs",
       "Content-Type: application/x-pkcs7-mime\r\n"
       "Content-Transfer-Encoding: base64\r\n\r\n" AUTH_ENV_B64 "\r\n",
       SMIME_OK, SMIME_KIND_AUTH_ENVELOPED, NULL},
      {"smime-type contradicts the DER (signed)",
       P7M("; smime-type=enveloped-data", SIG_B64), SMIME_ERR_SYNTAX,
       SMIME_KIND_NONE, NULL},
      {"smime-type contradicts the DER (enveloped)",
       P7M("; smime-type=signed-data", ENV_B64), SMIME_ERR_SYNTAX,
       SMIME_KIND_NONE, NULL},
      {"smime-type enveloped-data over AuthEnvelopedData",
       P7M("; smime-type=enveloped-data", AUTH_ENV_B64), SMIME_ERR_SYNTAX,
       SMIME_KIND_NONE, NULL},
      {"unknown smime-type", P7M("; smime-type=signed-receipt", SIG_B64),
       SMIME_ERR_UNSUPPORTED, SMIME_KIND_NONE, NULL},
      {"EnvelopedData head then plaintext (review)",
       P7M("; smime-type=enveloped-data", ENV_HEAD_THEN_PLAINTEXT_B64),
       SMIME_ERR_SYNTAX, SMIME_KIND_NONE, NULL},
      {"EnvelopedData head then plaintext, no smime-type",
       P7M("", ENV_HEAD_THEN_PLAINTEXT_B64), SMIME_ERR_SYNTAX, SMIME_KIND_NONE,
       NULL},
      {"EnvelopedData of an empty SEQUENCE",
       P7M("; smime-type=enveloped-data", "MA8GCSqGSIb3DQEHA6ACMAA="),
       SMIME_ERR_SYNTAX, SMIME_KIND_NONE, NULL},
      {"AuthEnvelopedData of an empty SEQUENCE",
       P7M("", "MBEGCyqGSIb3DQEJEAEXoAIwAA=="), SMIME_ERR_SYNTAX,
       SMIME_KIND_NONE, NULL},
      {"EnvelopedData with empty content",
       P7M("; smime-type=enveloped-data", ENV_EMPTY_B64), SMIME_ERR_SYNTAX,
       SMIME_KIND_NONE, NULL},
      {"EnvelopedData without content",
       P7M("; smime-type=enveloped-data", ENV_NO_CONTENT_B64), SMIME_ERR_SYNTAX,
       SMIME_KIND_NONE, NULL},
      {"EnvelopedData without RecipientInfo",
       P7M("; smime-type=enveloped-data", ENV_NO_RECIPIENT_B64),
       SMIME_ERR_SYNTAX, SMIME_KIND_NONE, NULL},
      {"EnvelopedData with bytes after it",
       P7M("; smime-type=enveloped-data", ENV_B64 "AAAA"), SMIME_ERR_SYNTAX,
       SMIME_KIND_NONE, NULL},
      {"two Content-Type fields",
       "Content-Type: text/plain\r\n" P7M("; smime-type=enveloped-data",
                                          ENV_B64),
       SMIME_ERR_SYNTAX, SMIME_KIND_NONE, NULL},
      {"two Content-Type fields, S/MIME first",
       "Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n"
       "Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n"
       "\r\n" ENV_B64 "\r\n",
       SMIME_ERR_SYNTAX, SMIME_KIND_NONE, NULL},
      {"two Content-Transfer-Encoding fields",
       "Content-Transfer-Encoding: 7bit\r\n" P7M("", ENV_B64), SMIME_ERR_SYNTAX,
       SMIME_KIND_NONE, NULL},
      {"Content-Transfer-Encoding with junk",
       "Content-Type: application/pkcs7-mime\r\n"
       "Content-Transfer-Encoding: base64 x\r\n\r\n" ENV_B64 "\r\n",
       SMIME_ERR_SYNTAX, SMIME_KIND_NONE, NULL},
      {"multipart/signed with a repeated boundary",
       "Content-Type: multipart/signed; protocol=\"application/"
       "pkcs7-signature\"; boundary=b; boundary=c\r\n\r\n--b\r\nX\r\n--b\r\n"
       "Content-Type: application/pkcs7-signature\r\n"
       "Content-Transfer-Encoding: base64\r\n\r\n" SIG_B64 "\r\n--b--\r\n",
       SMIME_ERR_SYNTAX, SMIME_KIND_NONE, NULL},
      {"multipart/signed with a repeated protocol",
       "Content-Type: multipart/signed; protocol=\"application/"
       "pkcs7-signature\"; boundary=b; protocol=\"application/"
       "pgp-signature\"\r\n\r\n--b\r\nX\r\n--b\r\n"
       "Content-Type: application/pkcs7-signature\r\n"
       "Content-Transfer-Encoding: base64\r\n\r\n" SIG_B64 "\r\n--b--\r\n",
       SMIME_ERR_SYNTAX, SMIME_KIND_NONE, NULL},
      {"signature part with two Content-Type fields",
       "Content-Type: multipart/signed; protocol=\"application/"
       "pkcs7-signature\"; boundary=b\r\n\r\n--b\r\nX\r\n--b\r\n"
       "Content-Type: application/pkcs7-signature\r\n"
       "Content-Type: text/plain\r\n"
       "Content-Transfer-Encoding: base64\r\n\r\n" SIG_B64 "\r\n--b--\r\n",
       SMIME_ERR_SYNTAX, SMIME_KIND_NONE, NULL},
      {"signed content holding a line that begins with the boundary",
       "Content-Type: multipart/signed; protocol=\"application/"
       "pkcs7-signature\"; boundary=b\r\n\r\n--b\r\nX\r\n--bogus\r\n--b\r\n"
       "Content-Type: application/pkcs7-signature\r\n"
       "Content-Transfer-Encoding: base64\r\n\r\n" SIG_B64 "\r\n--b--\r\n",
       SMIME_ERR_SYNTAX, SMIME_KIND_NONE, NULL},
      {"certs-only unsupported",
       "Content-Type: application/pkcs7-mime; smime-type=certs-only\r\n"
       "Content-Transfer-Encoding: base64\r\n\r\n" SIG_B64 "\r\n",
       SMIME_ERR_UNSUPPORTED, SMIME_KIND_NONE, NULL},
      {"pkcs7-mime not DER",
       "Content-Type: application/pkcs7-mime\r\n"
       "Content-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n",
       SMIME_ERR_SYNTAX, SMIME_KIND_NONE, NULL},
      {"pkcs7-mime quoted-printable",
       "Content-Type: application/pkcs7-mime\r\n"
       "Content-Transfer-Encoding: quoted-printable\r\n\r\nx\r\n",
       SMIME_ERR_UNSUPPORTED, SMIME_KIND_NONE, NULL},
      {"no boundary parameter",
       "Content-Type: multipart/signed; protocol=\"application/"
       "pkcs7-signature\"\r\n\r\n--b\r\nX\r\n--b--\r\n",
       SMIME_ERR_SYNTAX, SMIME_KIND_NONE, NULL},
      {"boundary absent from body",
       "Content-Type: multipart/signed; protocol=\"application/"
       "pkcs7-signature\"; boundary=zz\r\n\r\n--b\r\nX\r\n--b--\r\n",
       SMIME_ERR_SYNTAX, SMIME_KIND_NONE, NULL},
      {"missing second part",
       "Content-Type: multipart/signed; protocol=\"application/"
       "pkcs7-signature\"; boundary=b\r\n\r\n--b\r\nX\r\n--b--\r\n",
       SMIME_ERR_SYNTAX, SMIME_KIND_NONE, NULL},
      {"three parts",
       "Content-Type: multipart/signed; protocol=\"application/"
       "pkcs7-signature\"; boundary=b\r\n\r\n--b\r\nX\r\n--b\r\nContent-Type: "
       "application/pkcs7-signature\r\nContent-Transfer-Encoding: base64\r\n"
       "\r\n" SIG_B64 "\r\n--b\r\nY\r\n--b--\r\n",
       SMIME_ERR_SYNTAX, SMIME_KIND_NONE, NULL},
      {"second part not a signature",
       "Content-Type: multipart/signed; protocol=\"application/"
       "pkcs7-signature\"; boundary=b\r\n\r\n--b\r\nX\r\n--b\r\nContent-Type: "
       "text/plain\r\n\r\nY\r\n--b--\r\n",
       SMIME_ERR_SYNTAX, SMIME_KIND_NONE, NULL},
      {"bad base64 signature",
       "Content-Type: multipart/signed; protocol=\"application/"
       "pkcs7-signature\"; boundary=b\r\n\r\n--b\r\nX\r\n--b\r\nContent-Type: "
       "application/pkcs7-signature\r\nContent-Transfer-Encoding: base64\r\n"
       "\r\nMA8G!CSqG\r\n--b--\r\n",
       SMIME_ERR_SYNTAX, SMIME_KIND_NONE, NULL},
      {"no close delimiter",
       "Content-Type: multipart/signed; protocol=\"application/"
       "pkcs7-signature\"; boundary=b\r\n\r\n--b\r\nX\r\n--b\r\nContent-Type: "
       "application/pkcs7-signature\r\n\r\n",
       SMIME_ERR_SYNTAX, SMIME_KIND_NONE, NULL},
      {"bad Content-Type", "Content-Type: multipart\r\n\r\n", SMIME_ERR_SYNTAX,
       SMIME_KIND_NONE, NULL},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    const struct parse_case *c = &cases[i];
    struct smime_parsed p;
    errbuf[0] = '\0';
    int rc = smime_parse(&p, U(c->msg), strlen(c->msg), errbuf, sizeof errbuf);
    if (rc != c->want_rc || (rc == SMIME_OK && p.kind != c->want_kind)) {
      fail_msg("%s: got rc %d (%s) kind %s, want %d %s", c->label, rc, errbuf,
               smime_kind_str(p.kind), c->want_rc,
               smime_kind_str(c->want_kind));
    }
    if (c->want_content != NULL &&
        (p.content_len != strlen(c->want_content) ||
         memcmp(p.content, c->want_content, p.content_len) != 0)) {
      fail_msg("%s: content '%.*s', want '%s'", c->label, (int)p.content_len,
               p.content, c->want_content);
    }
    if (rc == SMIME_OK && p.kind != SMIME_KIND_NONE && p.der.len == 0) {
      fail_msg("%s: no DER", c->label);
    }
    if (rc != SMIME_OK && (p.der.len != 0 || p.kind != SMIME_KIND_NONE)) {
      fail_msg("%s: result left behind after an error", c->label);
    }
    smime_parsed_cleanup(&p);
  }
  struct smime_parsed p;
  assert_int_equal(smime_parse(&p, U(mps_msg), strlen(mps_msg), NULL, 0),
                   SMIME_OK);
  assert_string_equal(p.micalg, "sha-256");
  assert_int_equal(p.der.len, sizeof der_signed);
  assert_memory_equal(p.der.data, der_signed, sizeof der_signed);
  smime_parsed_cleanup(&p);
}

/* test_parse_every_cut: mps_msg cut at every point parses to an error, to
 * not-S/MIME, or to exactly the full message's content and signature
 * (never to something in between); and the whole message with the
 * signature split across lines at every point decodes the same. */
static void test_parse_every_cut(void **state) {
  size_t n = strlen(mps_msg), ok = 0;
  for (size_t cut = 0; cut <= n; cut++) {
    struct smime_parsed p;
    int rc = smime_parse(&p, U(mps_msg), cut, NULL, 0);
    if (rc == SMIME_OK && p.kind == SMIME_KIND_MULTIPART_SIGNED) {
      if (p.content_len != strlen(SIGNED_CONTENT) ||
          memcmp(p.content, SIGNED_CONTENT, p.content_len) != 0 ||
          p.der.len != sizeof der_signed ||
          memcmp(p.der.data, der_signed, sizeof der_signed) != 0) {
        fail_msg("cut at %zu: partial result", cut);
      }
      ok++;
    }
    smime_parsed_cleanup(&p);
  }
  /* the close delimiter with or without its line break */
  assert_true(ok >= 1 && ok <= 3);
  const char *b64 = SIG_B64;
  for (size_t k = 0; k <= strlen(b64); k++) {
    struct buf m = {0};
    buf_append_str(&m, "Content-Type: multipart/signed; protocol="
                       "\"application/pkcs7-signature\"; boundary=b\r\n\r\n"
                       "--b\r\nX\r\n--b\r\nContent-Type: application/"
                       "pkcs7-signature\r\nContent-Transfer-Encoding: base64"
                       "\r\n\r\n");
    buf_append(&m, b64, k);
    buf_append_str(&m, k % 2 ? "\r\n " : "\n\t");
    buf_append_str(&m, b64 + k);
    buf_append_str(&m, "\r\n--b--\r\n");
    struct smime_parsed p;
    assert_int_equal(smime_parse(&p, m.data, m.len, NULL, 0), SMIME_OK);
    if (p.der.len != sizeof der_signed ||
        memcmp(p.der.data, der_signed, sizeof der_signed) != 0) {
      fail_msg("signature split at %zu decodes differently", k);
    }
    smime_parsed_cleanup(&p);
    buf_free(&m);
  }
}

/* test_parse_content_every_split: the signed content holding a line break
 * at every position: the first part is always exactly the content. */
static void test_parse_content_every_split(void **state) {
  const char *text = "Content-Type: text/plain\r\n\r\nabc --b def--b--";
  size_t tn = strlen(text);
  for (size_t k = 0; k <= tn; k++) {
    for (int lf = 0; lf < 2; lf++) {
      struct buf content = {0}, m = {0};
      buf_append(&content, text, k);
      buf_append_str(&content, lf ? "\n" : "\r\n");
      buf_append(&content, text + k, tn - k);
      if (memmem(content.data, content.len, "\n--b", 4) != NULL ||
          (content.len >= 3 && memcmp(content.data, "--b", 3) == 0)) {
        buf_free(&content);
        continue; /* the content itself holds a delimiter line */
      }
      buf_append_str(&m, "Content-Type: multipart/signed; protocol="
                         "\"application/pkcs7-signature\"; boundary=b\r\n\r\n"
                         "--b\r\n");
      buf_append(&m, content.data, content.len);
      buf_append_str(&m, "\r\n--b\r\nContent-Type: application/"
                         "pkcs7-signature\r\nContent-Transfer-Encoding: "
                         "base64\r\n\r\n" SIG_B64 "\r\n--b--\r\n");
      struct smime_parsed p;
      int rc = smime_parse(&p, m.data, m.len, errbuf, sizeof errbuf);
      if (rc != SMIME_OK || p.content_len != content.len ||
          memcmp(p.content, content.data, content.len) != 0) {
        fail_msg("line break at %zu (%s): rc %d, content differs", k,
                 lf ? "lf" : "crlf", rc);
      }
      smime_parsed_cleanup(&p);
      buf_free(&content);
      buf_free(&m);
    }
  }
}

/* test_parse_absurd: deep nesting and huge inputs are refused early. */
static void test_parse_absurd(void **state) {
  struct buf m = {0};
  for (int i = 0; i < 50; i++) {
    buf_printf(&m,
               "Content-Type: multipart/mixed; boundary=b%dz\r\n\r\n"
               "--b%dz\r\n",
               i, i);
  }
  buf_append_str(&m, "Content-Type: text/plain\r\n\r\n\xff\r\n");
  for (int i = 49; i >= 0; i--) {
    buf_printf(&m, "--b%dz--\r\n", i);
  }
  struct buf out = {0};
  assert_int_equal(smime_canon(&out, m.data, m.len, NULL, 0), SMIME_ERR_LIMIT);
  struct smime_parsed p;
  assert_int_equal(smime_parse(&p, m.data, SMIME_MAX_MESSAGE + 1ul, NULL, 0),
                   SMIME_ERR_LIMIT);
  buf_reset(&m);
  for (int i = 0; i < SMIME_MAX_HEADERS + 1; i++) {
    buf_append_str(&m, "X: y\r\n");
  }
  buf_append_str(&m, "\r\n");
  assert_int_equal(smime_parse(&p, m.data, m.len, NULL, 0), SMIME_ERR_LIMIT);
  buf_free(&m);
  buf_free(&out);
}

/* ---- with the CMS layer ---- */

static struct {
  char dir[64];
  struct cms_key *key;
  X509 *cert;
  X509_STORE *trust;
  int have_cms;
} fx;

#define NOW 1800000000LL

/* make_cert makes a self-signed P-256 certificate for email (its own
 * trust anchor), valid for a year around NOW. */
static X509 *make_cert(EVP_PKEY *key, const char *email) {
  X509 *x = X509_new();
  X509_NAME *name = X509_NAME_new();
  char san[128];
  X509V3_CTX v3;
  X509_set_version(x, X509_VERSION_3);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const uint8_t *)email,
                             -1, -1, 0);
  X509_set_subject_name(x, name);
  X509_set_issuer_name(x, name);
  X509_NAME_free(name);
  ASN1_TIME_set(X509_getm_notBefore(x), (time_t)(NOW - 86400 * 180));
  ASN1_TIME_set(X509_getm_notAfter(x), (time_t)(NOW + 86400 * 180));
  X509_set_pubkey(x, key);
  X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
  snprintf(san, sizeof san, "email:%s", email);
  add_ext(x, &v3, NID_subject_alt_name, san);
  add_ext(x, &v3, NID_basic_constraints, "critical,CA:TRUE");
  add_ext(x, &v3, NID_key_usage,
          "digitalSignature,nonRepudiation,keyAgreement,keyCertSign");
  add_ext(x, &v3, NID_ext_key_usage, "emailProtection");
  if (!X509_sign(x, key, EVP_sha256())) {
    fail_msg("test bug: X509_sign");
  }
  return x;
}

static int group_setup(void **state) {
  snprintf(fx.dir, sizeof fx.dir, "/tmp/test_smime.XXXXXX");
  if (mkdtemp(fx.dir) == NULL) {
    return -1;
  }
  EVP_PKEY *k = make_key();
  fx.cert = make_cert(k, "alice@example.org");
  char kp[128], cp[128], err[256] = "";
  snprintf(kp, sizeof kp, "%s/key.pem", fx.dir);
  snprintf(cp, sizeof cp, "%s/cert.pem", fx.dir);
  X509 *chain[2] = {fx.cert, NULL};
  write_pem(kp, NULL, k);
  write_pem(cp, chain, NULL);
  EVP_PKEY_free(k);
  fx.key = cms_key_load_pem(kp, err, sizeof err);
  fx.trust = cms_trust_load(cp, NULL, err, sizeof err);
  fx.have_cms = fx.key != NULL && fx.trust != NULL;
  return 0;
}

static int group_teardown(void **state) {
  char cmd[128];
  cms_key_free(fx.key);
  X509_free(fx.cert);
  X509_STORE_free(fx.trust);
  snprintf(cmd, sizeof cmd, "rm -rf %s", fx.dir);
  return system(cmd) == 0 ? 0 : -1;
}

static const char plain_msg[] =
    "From: Alice <alice@example.org>\nTo: bob@example.net\n"
    "Subject: hello\nContent-Type: text/plain; charset=utf-8\n"
    "Content-Transfer-Encoding: 8bit\n\ncaf\xc3\xa9\n";

/* sign_msg signs plain_msg (multipart/signed or opaque). */
static void sign_msg(struct buf *out, int opaque) {
  struct cms_sign_party party = {
      .key = fx.key, .cert = fx.cert, .digest = CMS_SHA256};
  struct smime_sign_opts o = {.opaque = opaque, .signing_time = NOW};
  errbuf[0] = '\0';
  int rc = smime_sign(out, &cms_local_signer, &party, 1, &o, S(plain_msg),
                      errbuf, sizeof errbuf);
  if (rc != SMIME_OK) {
    fail_msg("sign (opaque %d): %d %s", opaque, rc, errbuf);
  }
}

static void test_sign_verify(void **state) {
  if (!fx.have_cms) {
    fail_msg("the CMS layer cannot load keys");
  }
  for (int opaque = 0; opaque < 2; opaque++) {
    struct buf signed_msg = {0}, entity = {0};
    sign_msg(&signed_msg, opaque);
    struct smime_parsed p;
    assert_int_equal(smime_parse(&p, signed_msg.data, signed_msg.len, NULL, 0),
                     SMIME_OK);
    assert_int_equal(p.kind, opaque ? SMIME_KIND_SIGNED_DATA
                                    : SMIME_KIND_MULTIPART_SIGNED);
    smime_parsed_cleanup(&p);
    assert_non_null(memmem(signed_msg.data, signed_msg.len,
                           "From: Alice <alice@example.org>\r\n", 33));
    struct cms_verify_opts vo = {
        .trust = fx.trust, .now = NOW, .from = "alice@example.org"};
    struct cms_verified v;
    int rc = smime_verify_message(&v, &entity, &vo, signed_msg.data,
                                  signed_msg.len, errbuf, sizeof errbuf);
    if (rc != SMIME_OK || !cms_verified_all_pass(&v)) {
      fail_msg("opaque %d: verify rc %d (%s), verdict %s %s", opaque, rc,
               errbuf, cms_verdict_str(v.signers[0].verdict),
               v.signers[0].reason);
    }
    assert_non_null(memmem(entity.data, entity.len, "caf=C3=A9", 9));
    cms_verified_cleanup(&v);
    /* stored with LF line ends: still verifies */
    struct buf lf = {0};
    for (size_t i = 0; i < signed_msg.len; i++) {
      if (signed_msg.data[i] != '\r') {
        buf_append(&lf, &signed_msg.data[i], 1);
      }
    }
    buf_reset(&entity);
    rc = smime_verify_message(&v, &entity, &vo, lf.data, lf.len, errbuf,
                              sizeof errbuf);
    if (rc != SMIME_OK || !cms_verified_all_pass(&v)) {
      fail_msg("opaque %d, lf: rc %d (%s)", opaque, rc, errbuf);
    }
    cms_verified_cleanup(&v);
    /* tampered content fails with a verdict, not an error */
    uint8_t *hit = memmem(signed_msg.data, signed_msg.len, "caf=C3=A9", 9);
    if (!opaque && hit != NULL) {
      hit[0] = 'C';
      buf_reset(&entity);
      rc = smime_verify_message(&v, &entity, &vo, signed_msg.data,
                                signed_msg.len, errbuf, sizeof errbuf);
      assert_int_equal(rc, SMIME_OK);
      assert_false(cms_verified_all_pass(&v));
      cms_verified_cleanup(&v);
    }
    buf_free(&lf);
    buf_free(&signed_msg);
    buf_free(&entity);
  }
}

static void test_encrypt_open(void **state) {
  if (!fx.have_cms) {
    fail_msg("the CMS layer cannot load keys");
  }
  const struct {
    const char *label;
    enum cms_cipher cipher;
    int sign_first, allow, no_trust;
    int want_rc;
  } cases[] = {
      {"gcm", CMS_AES256_GCM, 0, 0, 0, SMIME_OK},
      {"gcm signed", CMS_AES128_GCM, 1, 0, 0, SMIME_OK},
      {"gcm signed, untrusted: a verdict", CMS_AES256_GCM, 1, 0, 1, SMIME_OK},
      {"cbc unsigned refused", CMS_AES256_CBC, 0, 0, 0,
       SMIME_ERR_UNAUTHENTICATED},
      {"cbc unsigned allowed", CMS_AES256_CBC, 0, 1, 0, SMIME_OK},
      {"cbc signed", CMS_AES128_CBC, 1, 0, 0, SMIME_OK},
      {"cbc signed, untrusted: refused", CMS_AES256_CBC, 1, 0, 1,
       SMIME_ERR_UNAUTHENTICATED},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    struct buf inner = {0}, enc = {0};
    if (cases[i].sign_first) {
      sign_msg(&inner, 0);
    } else {
      buf_append(&inner, plain_msg, strlen(plain_msg));
    }
    struct cms_recipient r = {.cert = fx.cert};
    errbuf[0] = '\0';
    int rc = smime_encrypt(&enc, &r, 1, cases[i].cipher, inner.data, inner.len,
                           errbuf, sizeof errbuf);
    if (rc != SMIME_OK) {
      fail_msg("%s: encrypt %d %s", cases[i].label, rc, errbuf);
    }
    struct cms_decrypt_party party = {.key = fx.key, .cert = fx.cert};
    struct smime_open_opts oo = {
        .signer = &cms_local_signer,
        .parties = &party,
        .num_parties = 1,
        .verify = {.trust = cases[i].no_trust ? NULL : fx.trust, .now = NOW},
        .allow_unauthenticated = cases[i].allow,
    };
    struct smime_opened o;
    errbuf[0] = '\0';
    rc = smime_open(&o, &oo, enc.data, enc.len, errbuf, sizeof errbuf);
    if (rc != cases[i].want_rc) {
      fail_msg("%s: open got %d (%s), want %d", cases[i].label, rc, errbuf,
               cases[i].want_rc);
    }
    assert_true(o.encrypted);
    assert_int_equal(o.num_layers, cases[i].sign_first ? 2 : 1);
    assert_int_equal(o.signed_, cases[i].sign_first);
    if (rc == SMIME_OK) {
      assert_non_null(
          memmem(o.message.data, o.message.len, "Subject: hello\r\n", 16));
      assert_non_null(memmem(o.message.data, o.message.len, "caf=C3=A9", 9));
      assert_int_equal(o.all_pass, cases[i].sign_first && !cases[i].no_trust);
      assert_int_equal(o.auth_encrypted, cases[i].cipher == CMS_AES256_GCM ||
                                             cases[i].cipher == CMS_AES128_GCM);
    } else {
      assert_int_equal(o.message.len + o.entity.len, 0);
    }
    smime_opened_cleanup(&o);
    buf_free(&inner);
    buf_free(&enc);
  }
}

/* der_of returns the decoded CMS object of an S/MIME message. */
static void der_of(struct buf *out, const struct buf *msg) {
  struct smime_parsed p;
  assert_int_equal(smime_parse(&p, msg->data, msg->len, NULL, 0), SMIME_OK);
  buf_append(out, p.der.data, p.der.len);
  smime_parsed_cleanup(&p);
}

/* p7s_message builds multipart/signed of first_part and der. */
static void p7s_message(struct buf *m, const char *first_part,
                        const struct buf *der) {
  buf_append_str(m, "From: Alice <alice@example.org>\r\nMIME-Version: 1.0\r\n"
                    "Content-Type: multipart/signed; protocol=\"application/"
                    "pkcs7-signature\"; micalg=sha-256; boundary=\"BB\"\r\n"
                    "\r\n--BB\r\n");
  buf_append_str(m, first_part);
  buf_append_str(m, "\r\n--BB\r\nContent-Type: application/"
                    "pkcs7-signature; name=smime.p7s\r\n"
                    "Content-Transfer-Encoding: base64\r\n\r\n");
  smime_b64_encode(m, der->data, der->len);
  buf_append_str(m, "--BB--\r\n");
}

/* p7m_message builds application/pkcs7-mime of der. */
static void p7m_message(struct buf *m, const char *smime_type,
                        const struct buf *der) {
  buf_printf(m,
             "From: Alice <alice@example.org>\r\nSubject: hello\r\n"
             "MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; "
             "smime-type=%s\r\nContent-Transfer-Encoding: base64\r\n\r\n",
             smime_type);
  smime_b64_encode(m, der->data, der->len);
}

/* test_signature_wrapping: an opaque (encapsulating) SignedData pasted as
 * the .p7s of a multipart/signed whose first part says something else
 * must not verify that first part, nor hand out any content; and a
 * detached one as signed-data is refused too (review finding 1). */
static void test_signature_wrapping(void **state) {
  if (!fx.have_cms) {
    fail_msg("the CMS layer cannot load keys");
  }
  struct buf opaque = {0}, detached = {0}, opaque_der = {0}, detached_der = {0};
  sign_msg(&opaque, 1);
  sign_msg(&detached, 0);
  der_of(&opaque_der, &opaque);
  der_of(&detached_der, &detached);
  struct smime_parsed dp;
  assert_int_equal(smime_parse(&dp, detached.data, detached.len, NULL, 0),
                   SMIME_OK);
  char *signed_part = strndup((const char *)dp.content, dp.content_len);
  smime_parsed_cleanup(&dp);
  const struct {
    const char *label;
    int p7m; /* 0: multipart/signed with first, 1: signed-data */
    const char *first;
    const struct buf *der;
  } cases[] = {
      {"opaque signature under a different first part", 0,
       "Content-Type: text/plain\r\n\r\nPlease wire 1,000,000 EUR today.",
       &opaque_der},
      {"opaque signature under an empty first part", 0, "", &opaque_der},
      {"opaque signature under the very content it holds", 0, signed_part,
       &opaque_der},
      {"detached signature as signed-data", 1, NULL, &detached_der},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    struct buf m = {0}, entity = {0};
    if (cases[i].p7m) {
      p7m_message(&m, "signed-data", cases[i].der);
    } else {
      p7s_message(&m, cases[i].first, cases[i].der);
    }
    struct cms_verify_opts vo = {
        .trust = fx.trust, .now = NOW, .from = "alice@example.org"};
    struct cms_verified v;
    errbuf[0] = '\0';
    int rc = smime_verify_message(&v, &entity, &vo, m.data, m.len, errbuf,
                                  sizeof errbuf);
    if (rc == SMIME_OK || v.num_signers != 0 || entity.len != 0 ||
        cms_verified_all_pass(&v)) {
      fail_msg("%s: rc %d (%s), %zu signers, %zu bytes of content",
               cases[i].label, rc, errbuf, v.num_signers, entity.len);
    }
    cms_verified_cleanup(&v);
    /* smime_open (the daemon's and decrypt's path) refuses it as well */
    struct smime_open_opts oo = {.verify = vo};
    struct smime_opened o;
    rc = smime_open(&o, &oo, m.data, m.len, NULL, 0);
    if (rc == SMIME_OK || o.all_pass || o.message.len != 0 ||
        o.entity.len != 0) {
      fail_msg("%s: smime_open rc %d all_pass %d", cases[i].label, rc,
               o.all_pass);
    }
    smime_opened_cleanup(&o);
    buf_free(&m);
    buf_free(&entity);
  }
  /* and the CMS layer itself: content given for a SignedData that has its
   * own is an error, not a check of the wrong bytes */
  struct cms_verified v;
  assert_int_equal(
      cms_verify(&v, opaque_der.data, opaque_der.len, U("x"), 1, NULL, NULL, 0),
      CMS_ERR_SYNTAX);
  assert_int_equal(v.num_signers, 0);
  free(signed_part);
  buf_free(&opaque);
  buf_free(&detached);
  buf_free(&opaque_der);
  buf_free(&detached_der);
}

/* test_verify_not_id_data: S/MIME signs id-data (RFC 8551 §2.4.1); a
 * SignedData of another eContentType is refused whatever its verdicts. */
static void test_verify_not_id_data(void **state) {
  if (!fx.have_cms) {
    fail_msg("the CMS layer cannot load keys");
  }
  static const uint8_t id_data[] = {0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                                    0xf7, 0x0d, 0x01, 0x07, 0x01};
  struct buf opaque = {0}, der = {0}, m = {0}, entity = {0};
  sign_msg(&opaque, 1);
  der_of(&der, &opaque);
  /* the first id-data is the eContentType: make it id-signedData */
  uint8_t *hit = memmem(der.data, der.len, id_data, sizeof id_data);
  assert_non_null(hit);
  hit[sizeof id_data - 1] = 0x02;
  /* RFC 5652 §5.1: SignedData version 3 for other eContentTypes */
  static const uint8_t v1[] = {0x02, 0x01, 0x01, 0x31};
  uint8_t *ver = memmem(der.data, der.len, v1, sizeof v1);
  assert_true(ver != NULL && ver < hit);
  ver[2] = 0x03;
  p7m_message(&m, "signed-data", &der);
  struct cms_verify_opts vo = {.trust = fx.trust, .now = NOW};
  struct cms_verified v;
  errbuf[0] = '\0';
  int rc = smime_verify_message(&v, &entity, &vo, m.data, m.len, errbuf,
                                sizeof errbuf);
  if (rc != SMIME_ERR_UNSUPPORTED || v.num_signers != 0 || entity.len != 0) {
    fail_msg("got rc %d (%s), %zu signers", rc, errbuf, v.num_signers);
  }
  /* cms_verify itself parses it and says what the type was */
  assert_int_equal(cms_verify(&v, der.data, der.len, NULL, 0, &vo, NULL, 0),
                   CMS_OK);
  assert_int_equal(v.content_type, CMS_TYPE_SIGNED);
  assert_false(cms_verified_all_pass(&v));
  cms_verified_cleanup(&v);
  buf_free(&opaque);
  buf_free(&der);
  buf_free(&m);
  buf_free(&entity);
}

/* test_open_inner_header: smime_open rebuilds the message from the outer
 * header and the innermost entity's Content-* fields only. */
static void test_open_inner_header(void **state) {
  if (!fx.have_cms) {
    fail_msg("the CMS layer cannot load keys");
  }
  static const char inner[] =
      "From: ceo@evil.example\r\n"
      "Authentication-Results: gw.example; smime=pass\r\n"
      "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nhi\r\n";
  struct buf der = {0}, m = {0};
  struct cms_recipient r = {.cert = fx.cert};
  assert_int_equal(cms_encrypt(&der, &r, 1, U(inner), strlen(inner),
                               CMS_AES256_GCM, NULL, 0),
                   CMS_OK);
  p7m_message(&m, "authEnveloped-data", &der);
  struct cms_decrypt_party party = {.key = fx.key, .cert = fx.cert};
  struct smime_open_opts oo = {.signer = &cms_local_signer,
                               .parties = &party,
                               .num_parties = 1,
                               .verify = {.trust = fx.trust, .now = NOW}};
  struct smime_opened o;
  errbuf[0] = '\0';
  int rc = smime_open(&o, &oo, m.data, m.len, errbuf, sizeof errbuf);
  if (rc != SMIME_OK) {
    fail_msg("open: %d %s", rc, errbuf);
  }
  static const char want[] =
      "From: Alice <alice@example.org>\r\nSubject: hello\r\n"
      "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nhi\r\n";
  if (o.message.len != strlen(want) ||
      memcmp(o.message.data, want, o.message.len) != 0) {
    fail_msg("got '%.*s', want '%s'", (int)o.message.len,
             (char *)o.message.data, want);
  }
  smime_opened_cleanup(&o);
  buf_free(&der);
  buf_free(&m);
}

static void test_open_not_smime(void **state) {
  struct smime_open_opts oo = {0};
  struct smime_opened o;
  assert_int_equal(smime_open(&o, &oo, S(plain_msg), errbuf, sizeof errbuf),
                   SMIME_ERR_NOT_SMIME);
  smime_opened_cleanup(&o);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_header_parse),
      cmocka_unit_test(test_ct_parse),
      cmocka_unit_test(test_b64_decode),
      cmocka_unit_test(test_b64_round_trip),
      cmocka_unit_test(test_multipart),
      cmocka_unit_test(test_from_address),
      cmocka_unit_test(test_split),
      cmocka_unit_test(test_join_entity_header),
      cmocka_unit_test(test_canon),
      cmocka_unit_test(test_canon_qp_lines),
      cmocka_unit_test(test_canon_depth),
      cmocka_unit_test(test_parse),
      cmocka_unit_test(test_parse_every_cut),
      cmocka_unit_test(test_parse_content_every_split),
      cmocka_unit_test(test_parse_absurd),
      cmocka_unit_test(test_open_not_smime),
      cmocka_unit_test(test_sign_verify),
      cmocka_unit_test(test_encrypt_open),
      cmocka_unit_test(test_signature_wrapping),
      cmocka_unit_test(test_verify_not_id_data),
      cmocka_unit_test(test_open_inner_header),
  };
  return cmocka_run_group_tests_name("smime", tests, group_setup,
                                     group_teardown);
}
