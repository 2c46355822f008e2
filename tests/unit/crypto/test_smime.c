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
      {"first of duplicates", "a/b; p=1; P=2", SMIME_OK, "a", "b", "p", "1"},
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
      {"boundary prefix is not a delimiter",
       "b",
       "--b\r\n--bc\r\n--b-x\r\n--b\r\nB\r\n--b--",
       0,
       {"--bc\r\n--b-x", "B"}},
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

static void test_from_address(void **state) {
  const struct {
    const char *label, *msg, *want;
  } cases[] = {
      {"angle", "From: Alice <alice@example.org>\r\n\r\n", "alice@example.org"},
      {"bare", "From: alice@example.org\r\n\r\n", "alice@example.org"},
      {"folded", "From: \"Alice A.\"\r\n <a@b.example>\r\n\r\n", "a@b.example"},
      {"case kept", "FROM: Al <Al@Example.ORG>\n\n", "Al@Example.ORG"},
      {"none", "To: b@example\r\n\r\n", ""},
      {"first of two", "From: a@x\r\nFrom: b@x\r\n\r\n", "a@x"},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    char out[CMS_EMAIL_MAX];
    int rc = smime_from_address(out, sizeof out, U(cases[i].msg),
                                strlen(cases[i].msg));
    if (rc != SMIME_OK || strcmp(out, cases[i].want) != 0) {
      fail_msg("%s: got %d '%s', want '%s'", cases[i].label, rc, out,
               cases[i].want);
    }
  }
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
      buf_printf(&in,
                 "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n",
                 i, i);
    }
    buf_append_str(&in, "Content-Type: text/plain\r\n\r\n\xff\r\n");
    for (int i = depth - 1; i >= 0; i--) {
      buf_printf(&in, "--b%d--\r\n", i);
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
  "Content-Type: text/plain\r\n\r\nhello\r\n--bound is not a delimiter\r\n"
/* the base64 of der_signed */
#define SIG_B64 "MA8GCSqGSIb3DQEHAqACMAA="

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
       "name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n"
       "MA8GCSqGSIb3DQEHA6ACMAA=\r\n",
       SMIME_OK, SMIME_KIND_ENVELOPED, NULL},
      {"x-pkcs7-mime without smime-type sniffs",
       "Content-Type: application/x-pkcs7-mime\r\n"
       "Content-Transfer-Encoding: base64\r\n\r\n"
       "MBEGCyqGSIb3DQEJEAEXoAIwAA==\r\n",
       SMIME_OK, SMIME_KIND_AUTH_ENVELOPED, NULL},
      {"smime-type wrong, DER decides",
       "Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n"
       "Content-Transfer-Encoding: base64\r\n\r\n" SIG_B64 "\r\n",
       SMIME_OK, SMIME_KIND_SIGNED_DATA, NULL},
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
               "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n"
               "--b%d\r\n",
               i, i);
  }
  buf_append_str(&m, "Content-Type: text/plain\r\n\r\n\xff\r\n");
  for (int i = 49; i >= 0; i--) {
    buf_printf(&m, "--b%d--\r\n", i);
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
  };
  return cmocka_run_group_tests_name("smime", tests, group_setup,
                                     group_teardown);
}
