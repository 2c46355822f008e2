/* Unit tests: crypto/dkim — tag lists (RFC 6376 §3.2), body and header
 * canonicalisation (§3.4, streamed at every split point), signing and
 * verification round trips with RSA-2048 and Ed25519 in all four
 * canonicalisation pairs, over-signing, the RFC 8463 Appendix A example
 * (must pass), the RFC 6376 Appendix A example (must fail: its body hash
 * is for a body with one space where the text has two, a known erratum),
 * a signature built by hand with l=, each bad signature and key record,
 * key files (keygen, reload, mode, no overwrite) and keys made by
 * /usr/bin/openssl.
 *
 * Keys are made once at start-up with dkim_keygen in a mkdtemp folder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/base64.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/bytestring.h>
#include <openssl/curve25519.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>

#include "crypto/dkim.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define NOW 1700000000LL

static struct fixture {
  char dir[64];
  struct dkim_key *rsa;
  struct dkim_key *ed;
  struct buf rsa_rec;
  struct buf ed_rec;
} fx;

/* ---- helpers ---- */

static char *path_in(const char *name) {
  static char p[4][160];
  static int slot;
  slot = (slot + 1) % 4;
  snprintf(p[slot], sizeof(p[slot]), "%s/%s", fx.dir, name);
  return p[slot];
}

/* A DNS stand-in: query name -> TXT record. */
struct zone_rec {
  const char *name;
  const char *txt; /* NULL: NXDOMAIN */
  enum dkim_key_status status;
};

struct zone {
  struct zone_rec rec[8];
  size_t num;
};

static void zone_add(struct zone *z, const char *name, const char *txt,
                     enum dkim_key_status st) {
  assert_true(z->num < ARRAY_LEN(z->rec));
  z->rec[z->num++] = (struct zone_rec){name, txt, st};
}

/* verify_msg runs the whole verification of msg against zone z. */
static struct dkim_verify *verify_msg(const char *msg, size_t len,
                                      const struct zone *z, int64_t now) {
  struct dkim_verify *v =
      dkim_verify_new((const uint8_t *)msg, len, DKIM_MAX_VERIFY, now);
  assert_non_null(v);
  for (size_t i = 0; i < dkim_verify_count(v); i++) {
    const char *q = dkim_verify_query(v, i);
    if (q == NULL) {
      assert_non_null(dkim_verify_verdict(v, i));
      continue;
    }
    assert_null(dkim_verify_verdict(v, i));
    const struct zone_rec *r = NULL;
    for (size_t k = 0; z != NULL && k < z->num; k++) {
      if (strcmp(z->rec[k].name, q) == 0) {
        r = &z->rec[k];
      }
    }
    if (r == NULL) {
      dkim_verify_key(v, i, DKIM_KEY_NOTFOUND, NULL, NULL, 0);
    } else {
      const char *txt[1] = {r->txt};
      size_t txt_len[1] = {r->txt != NULL ? strlen(r->txt) : 0};
      dkim_verify_key(v, i, r->status, txt, txt_len, r->txt != NULL ? 1 : 0);
    }
    assert_non_null(dkim_verify_verdict(v, i));
    assert_null(dkim_verify_query(v, i));
  }
  return v;
}

static void expect_verdict(const struct dkim_verify *v, size_t i,
                           enum dkim_result want, const char *reason_part,
                           const char *label) {
  const struct dkim_verdict *d = dkim_verify_verdict(v, i);
  assert_non_null(d);
  if (d->result != want ||
      (reason_part != NULL && strstr(d->reason, reason_part) == NULL)) {
    fail_msg("%s: sig %zu: got %s (%s), want %s (%s)", label, i,
             dkim_result_name(d->result), d->reason, dkim_result_name(want),
             reason_part != NULL ? reason_part : "any");
  }
}

/* A zone with the fixture's keys at rsa._domainkey.example.com and
 * ed._domainkey.example.com. */
static struct zone fixture_zone(void) {
  struct zone z = {0};
  zone_add(&z, "rsa._domainkey.example.com", (const char *)fx.rsa_rec.data,
           DKIM_KEY_FOUND);
  zone_add(&z, "ed._domainkey.example.com", (const char *)fx.ed_rec.data,
           DKIM_KEY_FOUND);
  return z;
}

static struct dkim_sign_spec spec_for(struct dkim_key *k, enum dkim_canon hc,
                                      enum dkim_canon bc) {
  struct dkim_sign_spec s = {
      .domain = "example.com",
      .selector = k == fx.rsa ? "rsa" : "ed",
      .key = k,
      .hdr_canon = hc,
      .body_canon = bc,
      .timestamp = NOW,
      .expire = -1,
      .identity = NULL,
  };
  return s;
}

/* sign_msg returns the signature fields followed by msg (NUL-ended). */
static struct buf sign_msg(const char *msg, const struct dkim_sign_spec *specs,
                           size_t num) {
  struct dkim_sign_job job;
  char err[256] = "";
  struct buf out = {0};
  if (dkim_sign_begin(&job, (const uint8_t *)msg, strlen(msg), specs, num,
                      &dkim_sign_default_headers, err, sizeof(err)) != 0) {
    fail_msg("sign_begin: %s", err);
  }
  assert_int_equal(job.num, num);
  if (dkim_sign_end(&job, &dkim_local_signer, &out, err, sizeof(err)) != 0) {
    fail_msg("sign_end: %s", err);
  }
  assert_int_equal(job.num, 0);
  assert_int_equal(buf_append_str(&out, msg), 0);
  assert_int_equal(buf_append(&out, "", 1), 0);
  out.len--;
  return out;
}

/* replace returns s with the first `from` replaced by `to` (malloc'd). */
static char *replace(const char *s, const char *from, const char *to) {
  const char *at = strstr(s, from);
  assert_non_null(at);
  size_t n = strlen(s) - strlen(from) + strlen(to) + 1;
  char *out = malloc(n);
  assert_non_null(out);
  snprintf(out, n, "%.*s%s%s", (int)(at - s), s, to, at + strlen(from));
  return out;
}

static void sha256_of(const void *p, size_t n, uint8_t out[32]) {
  SHA256(p, n, out);
}

/* ---- tag lists ---- */

struct tag_case {
  const char *label;
  const char *in;
  size_t want_count;
  const char *want_name0, *want_value0; /* NULL: not checked */
  const char *want_value_last;
};

static const struct tag_case good_tags[] = {
    {"two tags", "v=1; a=rsa-sha256", 2, "v", "1", "rsa-sha256"},
    {"empty list", "", 0, NULL, NULL, NULL},
    {"blank list", " \t", 0, NULL, NULL, NULL},
    {"trailing semicolon", "a=1;", 1, "a", "1", "1"},
    {"trailing semicolon and FWS", "a=1;\r\n ", 1, "a", "1", "1"},
    {"FWS everywhere", " a \t= 1 ;\r\n\tb =\r\n 2 ; ", 2, "a", "1", "2"},
    {"inner FWS kept", "b=ab\r\n cd", 1, "b", "ab\r\n cd", "ab\r\n cd"},
    {"inner WSP kept", "n=a b  c", 1, "n", "a b  c", "a b  c"},
    {"empty value", "p=", 1, "p", "", ""},
    {"empty value then more", "p=; k=rsa", 2, "p", "", "rsa"},
    {"digits and underscore in name", "a_1B=x", 1, "a_1B", "x", "x"},
    {"case-distinct names", "a=1; A=2", 2, "a", "1", "2"},
    {"value with = and :", "h=from:to; z=a=b", 2, "h", "from:to", "a=b"},
};

static void test_tags_good(void **state) {
  (void)state;
  for (size_t i = 0; i < ARRAY_LEN(good_tags); i++) {
    const struct tag_case *c = &good_tags[i];
    struct dkim_tag tags[8];
    size_t n = 99;
    char err[64] = "";
    if (dkim_tags_parse(c->in, strlen(c->in), tags, 8, &n, err, sizeof(err)) !=
        0) {
      fail_msg("%s: error %s", c->label, err);
    }
    if (n != c->want_count) {
      fail_msg("%s: got %zu tags, want %zu", c->label, n, c->want_count);
    }
    if (c->want_name0 != NULL) {
      assert_int_equal(tags[0].name_len, strlen(c->want_name0));
      assert_memory_equal(tags[0].name, c->want_name0, tags[0].name_len);
      assert_int_equal(tags[0].value_len, strlen(c->want_value0));
      assert_memory_equal(tags[0].value, c->want_value0, tags[0].value_len);
      assert_int_equal(tags[n - 1].value_len, strlen(c->want_value_last));
      assert_memory_equal(tags[n - 1].value, c->want_value_last,
                          tags[n - 1].value_len);
    }
  }
}

struct bad_tag_case {
  const char *label;
  const char *in;
  const char *want_err;
};

static const struct bad_tag_case bad_tags[] = {
    {"duplicate", "a=1; b=2; a=3", "duplicate"},
    {"missing =", "a", "missing"},
    {"missing = with value", "a 1", "missing"},
    {"name starts with digit", "1a=2", "bad tag name"},
    {"name starts with _", "_a=2", "bad tag name"},
    {"name with -", "a-b=2", "bad tag name"},
    {"no name", "=2", "bad tag name"},
    {"empty tag in the middle", "a=1;;b=2", "empty tag"},
    {"leading semicolon", ";a=1", "empty tag"},
    {"two trailing semicolons", "a=1;;", "empty tag"},
    {"control byte in value", "a=x\001y", "bad character"},
    {"8-bit byte in value", "a=\xc3\xa9", "bad character"},
    {"DEL in value", "a=\x7f", "bad character"},
    {"bare CR in value", "a=x\ry", "bad character"},
    {"CRLF without WSP", "a=x\r\ny", "bad character"},
    {"too many tags", "a=1; b=2; c=3; d=4; e=5; f=6; g=7; h=8; i=9",
     "too many"},
};

static void test_tags_bad(void **state) {
  (void)state;
  for (size_t i = 0; i < ARRAY_LEN(bad_tags); i++) {
    const struct bad_tag_case *c = &bad_tags[i];
    struct dkim_tag tags[8];
    size_t n = 0;
    char err[64] = "";
    int rc =
        dkim_tags_parse(c->in, strlen(c->in), tags, 8, &n, err, sizeof(err));
    if (rc != -1 || strstr(err, c->want_err) == NULL) {
      fail_msg("%s: got rc %d err '%s', want '%s'", c->label, rc, err,
               c->want_err);
    }
  }
  /* A value over DKIM_MAX_TAG_VALUE. */
  size_t n = DKIM_MAX_TAG_VALUE + 3;
  char *big = malloc(n + 1);
  assert_non_null(big);
  memcpy(big, "a=", 2);
  memset(big + 2, 'x', n - 2);
  big[n] = '\0';
  struct dkim_tag tags[2];
  size_t count = 0;
  char err[64] = "";
  assert_int_equal(dkim_tags_parse(big, n, tags, 2, &count, err, sizeof(err)),
                   -1);
  assert_non_null(strstr(err, "too long"));
  big[n - 1] = '\0'; /* exactly the limit */
  assert_int_equal(dkim_tags_parse(big, n - 1, tags, 2, &count, NULL, 0), 0);
  free(big);
}

/* Every prefix of a good list, in an exact-size heap block, parses or
 * fails without reading past it (ASan). */
static void test_tags_prefixes(void **state) {
  (void)state;
  const char *in = " v=1; a=rsa-sha256;\r\n\tbh=abc\r\n def ; b= ;";
  for (size_t n = 0; n <= strlen(in); n++) {
    char *p = malloc(n + 1);
    assert_non_null(p);
    memcpy(p, in, n);
    struct dkim_tag tags[8];
    size_t count;
    (void)dkim_tags_parse(p, n, tags, 8, &count, NULL, 0);
    free(p);
  }
}

struct canon_case {
  const char *in;
  int ok;
  enum dkim_canon hdr, body;
};

static void test_canon_parse(void **state) {
  (void)state;
  static const struct canon_case cases[] = {
      {"relaxed/relaxed", 1, DKIM_CANON_RELAXED, DKIM_CANON_RELAXED},
      {"simple/simple", 1, DKIM_CANON_SIMPLE, DKIM_CANON_SIMPLE},
      {"relaxed/simple", 1, DKIM_CANON_RELAXED, DKIM_CANON_SIMPLE},
      {"simple/relaxed", 1, DKIM_CANON_SIMPLE, DKIM_CANON_RELAXED},
      {"relaxed", 1, DKIM_CANON_RELAXED, DKIM_CANON_SIMPLE},
      {"simple", 1, DKIM_CANON_SIMPLE, DKIM_CANON_SIMPLE},
      {"Relaxed/SIMPLE", 1, DKIM_CANON_RELAXED, DKIM_CANON_SIMPLE},
      {"", 0, 0, 0},
      {"relaxed/", 0, 0, 0},
      {"/relaxed", 0, 0, 0},
      {"nowsp", 0, 0, 0},
      {"relaxed/relaxed/relaxed", 0, 0, 0},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    enum dkim_canon h = 9, b = 9;
    int rc = dkim_canon_parse(cases[i].in, &h, &b);
    if ((rc == 0) != cases[i].ok) {
      fail_msg("'%s': rc %d", cases[i].in, rc);
    }
    if (rc == 0) {
      assert_int_equal(h, cases[i].hdr);
      assert_int_equal(b, cases[i].body);
    }
  }
  assert_string_equal(dkim_alg_name(DKIM_ALG_ED25519_SHA256), "ed25519-sha256");
  assert_string_equal(dkim_alg_name(DKIM_ALG_RSA_SHA1), "rsa-sha1");
  assert_string_equal(dkim_result_name(DKIM_PERMERROR), "permerror");
  assert_string_equal(dkim_result_name(DKIM_TEMPERROR), "temperror");
}

/* ---- body canonicalisation ---- */

struct body_case {
  const char *label;
  enum dkim_canon canon;
  const char *in;
  const char *want; /* canonical form */
};

#define S DKIM_CANON_SIMPLE
#define R DKIM_CANON_RELAXED
static const struct body_case body_cases[] = {
    {"simple: empty body is CRLF", S, "", "\r\n"},
    {"simple: one CRLF", S, "\r\n", "\r\n"},
    {"simple: only empty lines", S, "\r\n\r\n\r\n", "\r\n"},
    {"simple: trailing empty lines", S, "a\r\n\r\n\r\n", "a\r\n"},
    {"simple: no final CRLF", S, "a", "a\r\n"},
    {"simple: WSP kept", S, "a \t\r\n \r\n", "a \t\r\n \r\n"},
    {"simple: inner empty lines kept", S, "a\r\n\r\nb\r\n", "a\r\n\r\nb\r\n"},
    {"simple: lone LF", S, "a\nb\n\n", "a\r\nb\r\n"},
    {"simple: bare CR is content", S, "a\rb\r\n", "a\rb\r\n"},
    {"simple: bare CR at end", S, "a\r", "a\r\r\n"},
    {"simple: 8-bit", S, "\xe9t\xe9\r\n\xff\r\n", "\xe9t\xe9\r\n\xff\r\n"},
    {"simple: RFC 6376 3.4.5", S, " C \r\nD \t E\r\n\r\n\r\n",
     " C \r\nD \t E\r\n"},
    {"relaxed: empty body is empty", R, "", ""},
    {"relaxed: only empty lines", R, "\r\n\r\n", ""},
    {"relaxed: only WSP lines", R, " \t \r\n\t\r\n", ""},
    {"relaxed: WSP runs", R, "a  b \t c\r\n", "a b c\r\n"},
    {"relaxed: WSP at line end", R, "a \t\r\nb \r\n", "a\r\nb\r\n"},
    {"relaxed: leading WSP", R, "  a\r\n", " a\r\n"},
    {"relaxed: WSP line inside", R, "a\r\n \r\n\r\nb\r\n",
     "a\r\n\r\n\r\nb\r\n"},
    {"relaxed: trailing WSP lines", R, "a \r\n  \r\n\r\n", "a\r\n"},
    {"relaxed: no final CRLF", R, "a", "a\r\n"},
    {"relaxed: no final CRLF, WSP", R, "a\t ", "a\r\n"},
    {"relaxed: lone LF", R, "a \nb\n", "a\r\nb\r\n"},
    {"relaxed: 8-bit", R, "\xe9  \xff \r\n", "\xe9 \xff\r\n"},
    {"relaxed: RFC 6376 3.4.5", R, " C \r\nD \t E\r\n\r\n\r\n",
     " C\r\nD E\r\n"},
};
#undef S
#undef R

static void body_hash(enum dkim_canon canon, int64_t limit, const char *in,
                      size_t len, size_t step, uint8_t out[32],
                      uint64_t *total) {
  struct dkim_body b;
  dkim_body_init(&b, canon, limit);
  for (size_t off = 0; off < len;) {
    size_t n = step == 0 || step > len - off ? len - off : step;
    dkim_body_update(&b, (const uint8_t *)in + off, n);
    off += n;
  }
  dkim_body_final(&b, out, total);
}

static void test_body_canon(void **state) {
  (void)state;
  for (size_t i = 0; i < ARRAY_LEN(body_cases); i++) {
    const struct body_case *c = &body_cases[i];
    uint8_t got[32], want[32];
    uint64_t total = 0;
    body_hash(c->canon, -1, c->in, strlen(c->in), 0, got, &total);
    sha256_of(c->want, strlen(c->want), want);
    if (memcmp(got, want, 32) != 0 || total != strlen(c->want)) {
      fail_msg("%s: hash or length (%llu, want %zu) differs", c->label,
               (unsigned long long)total, strlen(c->want));
    }
  }
}

/* The stream gives the same result however the input is cut. */
static void test_body_streaming(void **state) {
  (void)state;
  static const char long_body[] =
      "Line one  \t\r\n\r\n \r\nLine\tthree\nbare\rcr\r\r\n\xe9\xe8  \r\n"
      "\r\n  \t\r\n\r\n";
  for (int canon = 0; canon < 2; canon++) {
    for (size_t i = 0; i <= ARRAY_LEN(body_cases); i++) {
      const char *in = i < ARRAY_LEN(body_cases) ? body_cases[i].in : long_body;
      size_t len = strlen(in);
      uint8_t whole[32], part[32];
      uint64_t t_whole, t_part;
      body_hash(canon, -1, in, len, 0, whole, &t_whole);
      body_hash(canon, -1, in, len, 1, part, &t_part);
      assert_memory_equal(whole, part, 32);
      assert_int_equal(t_whole, t_part);
      for (size_t cut = 0; cut <= len; cut++) {
        struct dkim_body b;
        dkim_body_init(&b, canon, -1);
        dkim_body_update(&b, (const uint8_t *)in, cut);
        dkim_body_update(&b, (const uint8_t *)in + cut, len - cut);
        dkim_body_final(&b, part, &t_part);
        if (memcmp(whole, part, 32) != 0 || t_whole != t_part) {
          fail_msg("canon %d input %zu split at %zu differs", canon, i, cut);
        }
      }
    }
  }
}

static void test_body_limit(void **state) {
  (void)state;
  static const char in[] = "hello  world \r\n\r\n";
  struct {
    enum dkim_canon canon;
    int64_t limit;
    const char *want_hashed;
    uint64_t want_total;
  } cases[] = {
      {DKIM_CANON_RELAXED, 5, "hello", 13},
      {DKIM_CANON_RELAXED, 0, "", 13},
      {DKIM_CANON_RELAXED, 13, "hello world\r\n", 13},
      {DKIM_CANON_RELAXED, 1000, "hello world\r\n", 13},
      {DKIM_CANON_SIMPLE, 7, "hello  ", 15},
      {DKIM_CANON_SIMPLE, -1, "hello  world \r\n", 15},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    for (size_t step = 0; step < 3; step++) {
      uint8_t got[32], want[32];
      uint64_t total = 0;
      struct dkim_body b;
      dkim_body_init(&b, cases[i].canon, cases[i].limit);
      for (size_t off = 0; off < strlen(in);) {
        size_t n = step == 0 ? strlen(in) : step;
        n = n > strlen(in) - off ? strlen(in) - off : n;
        dkim_body_update(&b, (const uint8_t *)in + off, n);
        off += n;
      }
      dkim_body_final(&b, got, &total);
      sha256_of(cases[i].want_hashed, strlen(cases[i].want_hashed), want);
      if (memcmp(got, want, 32) != 0 || total != cases[i].want_total ||
          b.hashed != strlen(cases[i].want_hashed)) {
        fail_msg("limit case %zu step %zu: total %llu hashed %llu", i, step,
                 (unsigned long long)total, (unsigned long long)b.hashed);
      }
    }
  }
}

/* ---- header fields ---- */

static void test_headers_split(void **state) {
  (void)state;
  /* RFC 6376 §3.4.5. */
  static const char msg[] = "A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n";
  struct dkim_header h[4];
  size_t body_off = 0;
  size_t n =
      dkim_headers_split((const uint8_t *)msg, strlen(msg), h, 4, &body_off);
  assert_int_equal(n, 2);
  assert_int_equal(body_off, strlen("A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n"));
  assert_int_equal(h[0].name_len, 1);
  assert_memory_equal(h[0].name, "A", 1);
  assert_int_equal(h[0].field_len, 4);
  assert_int_equal(h[1].name_len, 1);
  assert_memory_equal(h[1].field, "B : Y\t\r\n\tZ  ", h[1].field_len);

  struct buf out = {0};
  assert_int_equal(dkim_header_canon(&h[0], DKIM_CANON_RELAXED, &out), 0);
  assert_int_equal(dkim_header_canon(&h[1], DKIM_CANON_RELAXED, &out), 0);
  assert_int_equal(out.len, strlen("a:X\r\nb:Y Z\r\n"));
  assert_memory_equal(out.data, "a:X\r\nb:Y Z\r\n", out.len);
  buf_reset(&out);
  assert_int_equal(dkim_header_canon(&h[0], DKIM_CANON_SIMPLE, &out), 0);
  assert_int_equal(dkim_header_canon(&h[1], DKIM_CANON_SIMPLE, &out), 0);
  assert_int_equal(out.len, strlen("A: X\r\nB : Y\t\r\n\tZ  \r\n"));
  assert_memory_equal(out.data, "A: X\r\nB : Y\t\r\n\tZ  \r\n", out.len);

  /* Lone LF line ends, a field cut at max, no body. */
  static const char lf[] = "Subject:  a\n  b\nTo:x\n";
  n = dkim_headers_split((const uint8_t *)lf, strlen(lf), h, 1, &body_off);
  assert_int_equal(n, 1);
  assert_int_equal(body_off, strlen(lf));
  buf_reset(&out);
  assert_int_equal(dkim_header_canon(&h[0], DKIM_CANON_RELAXED, &out), 0);
  assert_int_equal(out.len, strlen("subject:a b\r\n"));
  assert_memory_equal(out.data, "subject:a b\r\n", out.len);
  buf_reset(&out);
  assert_int_equal(dkim_header_canon(&h[0], DKIM_CANON_SIMPLE, &out), 0);
  assert_memory_equal(out.data, "Subject:  a\r\n  b\r\n", out.len);

  /* An empty value, and a field with no colon. */
  static const char odd[] = "X-Empty:   \r\nnocolon\r\n\r\n";
  n = dkim_headers_split((const uint8_t *)odd, strlen(odd), h, 4, &body_off);
  assert_int_equal(n, 2);
  assert_int_equal(h[1].name_len, 0);
  buf_reset(&out);
  assert_int_equal(dkim_header_canon(&h[0], DKIM_CANON_RELAXED, &out), 0);
  assert_memory_equal(out.data, "x-empty:\r\n", out.len);
  buf_free(&out);

  /* A body right away. */
  n = dkim_headers_split((const uint8_t *)"\r\nbody", 6, h, 4, &body_off);
  assert_int_equal(n, 0);
  assert_int_equal(body_off, 2);
}

/* ---- sign and verify ---- */

static const char kMsg[] =
    "Received: from client.example.org by mx.example.com\r\n"
    "From: Joe SixPack <joe@example.com>\r\n"
    "To: Suzie Q <suzie@shopping.example.net>\r\n"
    "Subject: Is dinner\r\n"
    "  ready?  Folded \t subject\r\n"
    "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    "Message-ID: <20030712040037.46341.5F8J@example.com>\r\n"
    "\r\n"
    "Hi.\r\n"
    "\r\n"
    "We lost the game.  Are you hungry yet?   \r\n"
    "\r\n"
    "Joe.\r\n"
    "\r\n";

static void check_folding(const struct buf *b) {
  size_t col = 0;
  for (size_t i = 0; i < b->len; i++) {
    if (b->data[i] == '\n') {
      col = 0;
    } else if (b->data[i] != '\r' && ++col > 78) {
      fail_msg("line over 78 characters at %zu", i);
    }
  }
}

static void test_roundtrip(void **state) {
  (void)state;
  struct zone z = fixture_zone();
  struct dkim_key *keys[2] = {fx.rsa, fx.ed};
  for (int k = 0; k < 2; k++) {
    for (int hc = 0; hc < 2; hc++) {
      for (int bc = 0; bc < 2; bc++) {
        char label[64];
        snprintf(label, sizeof(label), "%s %d/%d",
                 dkim_alg_name(dkim_key_alg(keys[k])), hc, bc);
        struct dkim_sign_spec spec = spec_for(keys[k], hc, bc);
        struct buf m = sign_msg(kMsg, &spec, 1);
        check_folding(&m);
        assert_null(strstr((char *)m.data, " l="));
        assert_non_null(strstr((char *)m.data, "t=1700000000;"));
        struct dkim_verify *v = verify_msg((char *)m.data, m.len, &z, NOW);
        assert_int_equal(dkim_verify_count(v), 1);
        expect_verdict(v, 0, DKIM_PASS, NULL, label);
        const struct dkim_verdict *d = dkim_verify_verdict(v, 0);
        assert_string_equal(d->domain, "example.com");
        assert_string_equal(d->identity, "@example.com");
        assert_int_equal(d->alg, dkim_key_alg(keys[k]));
        assert_int_equal(d->key_bits, k == 0 ? 2048 : 256);
        assert_int_equal(d->body_limit, -1);
        assert_int_equal(strlen(d->b_prefix), 8);
        assert_non_null(strstr((char *)m.data, "b="));
        dkim_verify_free(v);

        /* Refolding a field and changing WSP in the body: relaxed only. */
        char *mod = replace((char *)m.data, "Subject: Is dinner\r\n  ready?",
                            "Subject:   Is dinner ready?");
        v = verify_msg(mod, strlen(mod), &z, NOW);
        expect_verdict(v, 0, hc == 1 ? DKIM_PASS : DKIM_FAIL,
                       hc == 1 ? NULL : "signature did not verify", label);
        dkim_verify_free(v);
        free(mod);
        mod = replace((char *)m.data, "yet?   \r\n", "yet?\t\r\n");
        v = verify_msg(mod, strlen(mod), &z, NOW);
        expect_verdict(v, 0, bc == 1 ? DKIM_PASS : DKIM_FAIL,
                       bc == 1 ? NULL : "body hash did not verify", label);
        dkim_verify_free(v);
        free(mod);
        buf_free(&m);
      }
    }
  }
}

static void test_tampering(void **state) {
  (void)state;
  struct zone z = fixture_zone();
  struct dkim_sign_spec specs[2] = {
      spec_for(fx.rsa, DKIM_CANON_RELAXED, DKIM_CANON_RELAXED),
      spec_for(fx.ed, DKIM_CANON_RELAXED, DKIM_CANON_RELAXED),
  };
  struct buf m = sign_msg(kMsg, specs, 2);
  const char *s = (const char *)m.data;
  /* Over-signed: h= lists From, Subject, Cc ... once more than they occur. */
  assert_non_null(strstr(s, "h=From:From:"));
  struct {
    const char *label, *from, *to;
    enum dkim_result want;
    const char *reason;
  } cases[] = {
      {"second From above", "Received:", "From: evil@example.net\r\nReceived:",
       DKIM_FAIL, "signature did not verify"},
      {"second From below", "\r\n\r\nHi.",
       "\r\nFrom: evil@example.net\r\n\r\nHi.", DKIM_FAIL,
       "signature did not verify"},
      {"Cc added (absent, over-signed)", "\r\n\r\nHi.",
       "\r\nCc: evil@example.net\r\n\r\nHi.", DKIM_FAIL,
       "signature did not verify"},
      {"unsigned field added", "\r\n\r\nHi.",
       "\r\nX-Mailer: whatever\r\n\r\nHi.", DKIM_PASS, NULL},
      {"Received changed (not signed)", "client.example.org", "other.example",
       DKIM_PASS, NULL},
      {"body changed", "lost the game", "won the game", DKIM_FAIL,
       "body hash did not verify"},
      {"body appended", "Joe.\r\n", "Joe.\r\nP.S. more\r\n", DKIM_FAIL,
       "body hash did not verify"},
      {"empty lines appended", "Joe.\r\n", "Joe.\r\n\r\n\r\n", DKIM_PASS, NULL},
      {"To changed", "Suzie Q", "Suzie R", DKIM_FAIL,
       "signature did not verify"},
      {"From name case changed", "From: Joe", "FROM: Joe", DKIM_PASS, NULL},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    char *mod = replace(s, cases[i].from, cases[i].to);
    struct dkim_verify *v = verify_msg(mod, strlen(mod), &z, NOW);
    assert_int_equal(dkim_verify_count(v), 2);
    expect_verdict(v, 0, cases[i].want, cases[i].reason, cases[i].label);
    expect_verdict(v, 1, cases[i].want, cases[i].reason, cases[i].label);
    dkim_verify_free(v);
    free(mod);
  }
  /* The signature fields themselves changed. */
  char *mod = replace(s, "a=rsa-sha256;", "a=rsa-sha256; z=x;");
  struct dkim_verify *v = verify_msg(mod, strlen(mod), &z, NOW);
  expect_verdict(v, 0, DKIM_FAIL, "signature did not verify", "tag added");
  expect_verdict(v, 1, DKIM_PASS, NULL, "other signature");
  dkim_verify_free(v);
  free(mod);
  buf_free(&m);
}

static void test_sign_options(void **state) {
  (void)state;
  struct zone z = fixture_zone();
  struct dkim_sign_spec specs[4] = {
      spec_for(fx.rsa, DKIM_CANON_SIMPLE, DKIM_CANON_SIMPLE),
      spec_for(fx.ed, DKIM_CANON_RELAXED, DKIM_CANON_RELAXED),
      spec_for(fx.rsa, DKIM_CANON_RELAXED, DKIM_CANON_SIMPLE),
      spec_for(fx.ed, DKIM_CANON_SIMPLE, DKIM_CANON_RELAXED),
  };
  specs[1].identity = "joe@mail.example.com";
  specs[1].expire = NOW + 3600;
  specs[2].timestamp = -1;
  struct buf m = sign_msg(kMsg, specs, 4);
  check_folding(&m);
  const char *s = (const char *)m.data;
  assert_non_null(strstr(s, "i=joe@mail.example.com;"));
  assert_non_null(strstr(s, "x=1700003600;"));
  /* Fields come in spec order. */
  assert_ptr_equal(
      strstr(s, "DKIM-Signature: v=1; a=rsa-sha256; c=simple/simple;"), s);
  struct dkim_verify *v = verify_msg(s, m.len, &z, NOW);
  assert_int_equal(dkim_verify_count(v), 4);
  for (size_t i = 0; i < 4; i++) {
    expect_verdict(v, i, DKIM_PASS, NULL, "four specs");
  }
  assert_string_equal(dkim_verify_verdict(v, 1)->identity,
                      "joe@mail.example.com");
  dkim_verify_free(v);
  /* After x=: fail without asking for a key. */
  v = dkim_verify_new(m.data, m.len, DKIM_MAX_VERIFY, NOW + 3601);
  assert_null(dkim_verify_query(v, 1));
  expect_verdict(v, 1, DKIM_FAIL, "signature expired", "expired");
  assert_non_null(dkim_verify_query(v, 0));
  dkim_verify_free(v);
  /* Fewer signatures looked at than there are. */
  v = dkim_verify_new(m.data, m.len, 2, NOW);
  assert_int_equal(dkim_verify_count(v), 2);
  assert_null(dkim_verify_query(v, 2));
  assert_null(dkim_verify_verdict(v, 2));
  dkim_verify_free(v);
  buf_free(&m);
}

static int failing_sign(void *arg, const struct dkim_key *key,
                        const uint8_t digest[32], uint8_t *sig,
                        size_t sig_cap) {
  (void)key;
  (void)digest;
  (void)sig;
  (void)sig_cap;
  int *calls = arg;
  return ++*calls == 2 ? -1 : 64;
}

static void test_sign_errors(void **state) {
  (void)state;
  struct dkim_sign_job job;
  char err[256];
  struct dkim_sign_spec spec = spec_for(fx.ed, 1, 1);
  static const char no_from[] = "To: a@example.com\r\n\r\nbody\r\n";
  assert_int_equal(
      dkim_sign_begin(&job, (const uint8_t *)no_from, strlen(no_from), &spec, 1,
                      &dkim_sign_default_headers, err, sizeof(err)),
      -1);
  assert_non_null(strstr(err, "From"));
  assert_int_equal(job.num, 0);
  struct {
    const char *label;
    const char *domain, *selector, *identity;
    int64_t t, x;
    size_t num;
  } cases[] = {
      {"no specs", "example.com", "ed", NULL, NOW, -1, 0},
      {"too many specs", "example.com", "ed", NULL, NOW, -1, DKIM_MAX_SIGN + 1},
      {"domain with ;", "example.com;", "ed", NULL, NOW, -1, 1},
      {"selector with space", "example.com", "e d", NULL, NOW, -1, 1},
      {"identity outside d=", "example.com", "ed", "joe@example.net", NOW, -1,
       1},
      {"identity without @", "example.com", "ed", "example.com", NOW, -1, 1},
      {"x= not after t=", "example.com", "ed", NULL, NOW, NOW, 1},
  };
  struct dkim_sign_spec many[DKIM_MAX_SIGN + 1];
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    for (size_t k = 0; k < ARRAY_LEN(many); k++) {
      many[k] = spec;
      many[k].domain = cases[i].domain;
      many[k].selector = cases[i].selector;
      many[k].identity = cases[i].identity;
      many[k].timestamp = cases[i].t;
      many[k].expire = cases[i].x;
    }
    err[0] = '\0';
    if (dkim_sign_begin(&job, (const uint8_t *)kMsg, strlen(kMsg), many,
                        cases[i].num, &dkim_sign_default_headers, err,
                        sizeof(err)) != -1 ||
        err[0] == '\0') {
      fail_msg("%s: accepted", cases[i].label);
    }
  }
  /* A signer failing on the second signature: nothing appended. */
  struct dkim_sign_spec two[2] = {spec, spec};
  assert_int_equal(dkim_sign_begin(&job, (const uint8_t *)kMsg, strlen(kMsg),
                                   two, 2, &dkim_sign_default_headers, err,
                                   sizeof(err)),
                   0);
  int calls = 0;
  struct dkim_signer bad = {failing_sign, &calls};
  struct buf out = {0};
  assert_int_equal(dkim_sign_end(&job, &bad, &out, err, sizeof(err)), -1);
  assert_int_equal(out.len, 0);
  assert_int_equal(job.num, 0);
  buf_free(&out);
}

/* Names to sign given by the caller: no From in the list, a wildcard. */
static void test_sign_header_choice(void **state) {
  (void)state;
  static const char msg[] =
      "From: a@example.com\r\nResent-From: b@example.com\r\n"
      "Resent-Date: x\r\nResent-From: c@example.com\r\nTo: d@example.com\r\n"
      "\r\nbody\r\n";
  static const char *const sign[] = {"To", "Resent-*", "to"};
  static const char *const over[] = {"X-Extra"};
  struct dkim_sign_headers h = {sign, 3, over, 1};
  struct dkim_sign_spec spec = spec_for(fx.ed, 1, 1);
  struct dkim_sign_job job;
  char err[256];
  assert_int_equal(dkim_sign_begin(&job, (const uint8_t *)msg, strlen(msg),
                                   &spec, 1, &h, err, sizeof(err)),
                   0);
  struct buf out = {0};
  assert_int_equal(
      dkim_sign_end(&job, &dkim_local_signer, &out, err, sizeof(err)), 0);
  assert_int_equal(buf_append(&out, "", 1), 0);
  assert_non_null(strstr((char *)out.data,
                         "h=From:To:Resent-From:Resent-From:Resent-Date:"
                         "X-Extra;"));
  out.len--;
  assert_int_equal(buf_append(&out, msg, sizeof(msg)), 0);
  struct zone z = fixture_zone();
  struct dkim_verify *v = verify_msg((char *)out.data, out.len - 1, &z, NOW);
  expect_verdict(v, 0, DKIM_PASS, NULL, "caller's names");
  dkim_verify_free(v);
  buf_free(&out);
}

/* ---- published examples ---- */

/* RFC 8463 Appendix A.3, its keys from A.2. */
static const char kRfc8463[] =
    "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
    " d=football.example.com; i=@football.example.com;\r\n"
    " q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n"
    " subject : date : message-id : from : subject : date;\r\n"
    " bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    " b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus\r\n"
    " Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==\r\n"
    "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n"
    " d=football.example.com; i=@football.example.com;\r\n"
    " q=dns/txt; s=test; t=1528637909; h=from : to : subject :\r\n"
    " date : message-id : from : subject : date;\r\n"
    " bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    " b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3\r\n"
    " DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz\r\n"
    " dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=\r\n"
    "From: Joe SixPack <joe@football.example.com>\r\n"
    "To: Suzie Q <suzie@shopping.example.net>\r\n"
    "Subject: Is dinner ready?\r\n"
    "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    "Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
    "\r\n"
    "Hi.\r\n"
    "\r\n"
    "We lost the game.  Are you hungry yet?\r\n"
    "\r\n"
    "Joe.\r\n";

static const char kRfc8463Ed[] =
    "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
static const char kRfc8463Rsa[] =
    "v=DKIM1; k=rsa; "
    "p="
    "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR"
    "6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/"
    "8uBsCR+yz1Lxj+PL6lHvqM"
    "KrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB";

static void test_rfc8463_example(void **state) {
  (void)state;
  struct zone z = {0};
  zone_add(&z, "brisbane._domainkey.football.example.com", kRfc8463Ed,
           DKIM_KEY_FOUND);
  zone_add(&z, "test._domainkey.football.example.com", kRfc8463Rsa,
           DKIM_KEY_FOUND);
  struct dkim_verify *v = verify_msg(kRfc8463, strlen(kRfc8463), &z, NOW);
  assert_int_equal(dkim_verify_count(v), 2);
  expect_verdict(v, 0, DKIM_PASS, NULL, "RFC 8463 ed25519");
  expect_verdict(v, 1, DKIM_PASS, NULL, "RFC 8463 rsa");
  const struct dkim_verdict *d = dkim_verify_verdict(v, 0);
  assert_int_equal(d->alg, DKIM_ALG_ED25519_SHA256);
  assert_string_equal(d->b_prefix, "/gCrinpc");
  assert_string_equal(d->selector, "brisbane");
  assert_string_equal(d->identity, "@football.example.com");
  assert_int_equal(dkim_verify_verdict(v, 1)->key_bits, 1024);
  dkim_verify_free(v);
  /* The same with LF line ends (a message read from a file). */
  char *lf = malloc(sizeof(kRfc8463));
  size_t n = 0;
  for (size_t i = 0; kRfc8463[i] != '\0'; i++) {
    if (kRfc8463[i] != '\r') {
      lf[n++] = kRfc8463[i];
    }
  }
  v = verify_msg(lf, n, &z, NOW);
  expect_verdict(v, 0, DKIM_PASS, NULL, "RFC 8463 ed25519, LF");
  expect_verdict(v, 1, DKIM_PASS, NULL, "RFC 8463 rsa, LF");
  dkim_verify_free(v);
  free(lf);
  /* A second From added: over-signed, so both fail. */
  char *mod =
      replace(kRfc8463, "To: Suzie", "From: x@evil.example\r\nTo: Suzie");
  v = verify_msg(mod, strlen(mod), &z, NOW);
  expect_verdict(v, 0, DKIM_FAIL, "signature did not verify", "8463 + From");
  expect_verdict(v, 1, DKIM_FAIL, "signature did not verify", "8463 + From");
  dkim_verify_free(v);
  free(mod);
}

/* RFC 6376 Appendix A.2 and A.3. The text's body has two spaces in
 * "game.  Are" but bh= is that of a body with one: body hash fails. */
static const char kRfc6376[] =
    "DKIM-Signature: v=1; a=rsa-sha256; s=brisbane; d=example.com;\r\n"
    "      c=simple/simple; q=dns/txt; i=joe@football.example.com;\r\n"
    "      h=Received : From : To : Subject : Date : Message-ID;\r\n"
    "      bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    "      b=AuUoFEfDxTDkHlLXSZEpZj79LICEps6eda7W3deTVFOk4yAUoqOB\r\n"
    "        4nujc7YopdG5dWLSdNg6xNAZpOPr+kHxt1IrE+NahM6L/LbvaHut\r\n"
    "        KVdkLLkpVaVVQPzeRDI009SO2Il5Lu7rDNH6mZckBdrIx0orEtZV\r\n"
    "        4bmp/YzhwvcubU4=;\r\n"
    "Received: from client1.football.example.com  [192.0.2.1]\r\n"
    "      by submitserver.example.com with SUBMISSION;\r\n"
    "      Fri, 11 Jul 2003 21:01:54 -0700 (PDT)\r\n"
    "From: Joe SixPack <joe@football.example.com>\r\n"
    "To: Suzie Q <suzie@shopping.example.net>\r\n"
    "Subject: Is dinner ready?\r\n"
    "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    "Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
    "\r\n"
    "Hi.\r\n"
    "\r\n"
    "We lost the game.  Are you hungry yet?\r\n"
    "\r\n"
    "Joe.\r\n";

static const char kRfc6376Key[] =
    "v=DKIM1; "
    "p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDwIRP/UC3SBsEmGqZ9ZJW3/DkMo"
    "GeLnQg1fWn7/zYtIxN2SnFCjxOCKG9v3b4jYfcTNh5ijSsq631uBItLa7od+v/"
    "RtdC2UzJ1lWT947"
    "qR+Rcac2gbto/"
    "NMqJ0fzfVjH4OuKhitdY9tf6mcwGjaNBcWToIMmPSPDdQPNUYckcQ2QIDAQAB";

static void test_rfc6376_example(void **state) {
  (void)state;
  struct zone z = {0};
  zone_add(&z, "brisbane._domainkey.example.com", kRfc6376Key, DKIM_KEY_FOUND);
  struct dkim_verify *v = verify_msg(kRfc6376, strlen(kRfc6376), &z, NOW);
  assert_int_equal(dkim_verify_count(v), 1);
  expect_verdict(v, 0, DKIM_FAIL, "body hash did not verify", "RFC 6376");
  const struct dkim_verdict *d = dkim_verify_verdict(v, 0);
  assert_string_equal(d->identity, "joe@football.example.com");
  assert_string_equal(d->b_prefix, "AuUoFEfD");
  assert_int_equal(d->key_bits, 1024);
  dkim_verify_free(v);
}

/* ---- a signature built by hand: l=, and header hashing checked apart
 * from the signer ---- */

static void b64(const uint8_t *in, size_t n, char *out) {
  EVP_EncodeBlock((uint8_t *)out, in, n);
}

static void test_handmade_l(void **state) {
  (void)state;
  uint8_t pub[32], priv[64];
  ED25519_keypair(pub, priv);
  char rec[128] = "v=DKIM1; k=ed25519; p=";
  b64(pub, 32, rec + strlen(rec));
  static const char body[] = "Hello  world\r\nAppended later\r\n";
  /* Relaxed body, l=12: "Hello world\r" */
  uint8_t bh[32];
  sha256_of("Hello world\r", 12, bh);
  char bh64[64];
  b64(bh, 32, bh64);
  char value[512];
  snprintf(value, sizeof(value),
           " v=1; a=ed25519-sha256; c=relaxed/relaxed; d=example.com;\r\n"
           "\ts=hand; l=12; h=from : subject; bh=%s;\r\n\tb=",
           bh64);
  char canon[1024];
  snprintf(canon, sizeof(canon),
           "from:A <a@example.com>\r\nsubject:hi there\r\n"
           "dkim-signature:v=1; a=ed25519-sha256; c=relaxed/relaxed; "
           "d=example.com; s=hand; l=12; h=from : subject; bh=%s; b=",
           bh64);
  uint8_t digest[32], sig[64];
  sha256_of(canon, strlen(canon), digest);
  assert_int_equal(ED25519_sign(sig, digest, 32, priv), 1);
  char sig64[128];
  b64(sig, 64, sig64);
  char msg[2048];
  snprintf(msg, sizeof(msg),
           "DKIM-Signature:%s%.40s\r\n %s\r\n"
           "From: A <a@example.com>\r\nSubject:  hi\r\n there\r\n\r\n%s",
           value, sig64, sig64 + 40, body);
  struct zone z = {0};
  zone_add(&z, "hand._domainkey.example.com", rec, DKIM_KEY_FOUND);
  struct dkim_verify *v = verify_msg(msg, strlen(msg), &z, NOW);
  expect_verdict(v, 0, DKIM_PASS, NULL, "hand-made l=");
  const struct dkim_verdict *d = dkim_verify_verdict(v, 0);
  assert_int_equal(d->body_limit, 12);
  assert_int_equal(d->unsigned_body,
                   strlen("Hello world\r\nAppended later\r\n") - 12);
  dkim_verify_free(v);
  /* l= beyond the body. */
  char *mod = replace(msg, "Hello  world\r\nAppended later\r\n", "Hi\r\n");
  v = verify_msg(mod, strlen(mod), &z, NOW);
  expect_verdict(v, 0, DKIM_FAIL, NULL, "l= past the end");
  dkim_verify_free(v);
  free(mod);
}

/* ---- bad signatures ---- */

struct bad_sig_case {
  const char *label;
  const char *value; /* DKIM-Signature value; %s: a valid b= */
  enum dkim_result want;
  const char *reason;
};

#define GOOD_BH "bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;"
#define B64_64 "b=dGVzdA==;"
static const struct bad_sig_case bad_sigs[] = {
    {"duplicate tag",
     "v=1; a=rsa-sha256; d=example.com; d=example.com; s=rsa; h=from; " GOOD_BH
     " " B64_64,
     DKIM_PERMERROR, "duplicate"},
    {"missing v",
     "a=rsa-sha256; d=example.com; s=rsa; h=from; " GOOD_BH " " B64_64,
     DKIM_PERMERROR, "missing v="},
    {"missing a", "v=1; d=example.com; s=rsa; h=from; " GOOD_BH " " B64_64,
     DKIM_PERMERROR, "missing a="},
    {"missing b", "v=1; a=rsa-sha256; d=example.com; s=rsa; h=from; " GOOD_BH,
     DKIM_PERMERROR, "missing b="},
    {"missing bh", "v=1; a=rsa-sha256; d=example.com; s=rsa; h=from; " B64_64,
     DKIM_PERMERROR, "missing bh="},
    {"missing d", "v=1; a=rsa-sha256; s=rsa; h=from; " GOOD_BH " " B64_64,
     DKIM_PERMERROR, "missing d="},
    {"missing s",
     "v=1; a=rsa-sha256; d=example.com; h=from; " GOOD_BH " " B64_64,
     DKIM_PERMERROR, "missing s="},
    {"missing h",
     "v=1; a=rsa-sha256; d=example.com; s=rsa; " GOOD_BH " " B64_64,
     DKIM_PERMERROR, "missing h="},
    {"v=2",
     "v=2; a=rsa-sha256; d=example.com; s=rsa; h=from; " GOOD_BH " " B64_64,
     DKIM_PERMERROR, "v="},
    {"bad base64 in b",
     "v=1; a=rsa-sha256; d=example.com; s=rsa; h=from; " GOOD_BH " b=ab$c",
     DKIM_PERMERROR, "base64"},
    {"empty b",
     "v=1; a=rsa-sha256; d=example.com; s=rsa; h=from; " GOOD_BH " b=",
     DKIM_PERMERROR, "base64"},
    {"bad base64 in bh",
     "v=1; a=rsa-sha256; d=example.com; s=rsa; h=from; bh=abc; " B64_64,
     DKIM_PERMERROR, "base64"},
    {"bh of wrong length",
     "v=1; a=rsa-sha256; d=example.com; s=rsa; h=from; bh=dGVzdA==; " B64_64,
     DKIM_PERMERROR, "bh="},
    {"unknown algorithm",
     "v=1; a=rsa-sha512; d=example.com; s=rsa; h=from; " GOOD_BH " " B64_64,
     DKIM_PERMERROR, "algorithm"},
    {"rsa-sha1",
     "v=1; a=rsa-sha1; d=example.com; s=rsa; h=from; "
     "bh=qUqP5cyxm6YcTAhz05Hph5gvu9M=; " B64_64,
     DKIM_FAIL, "rsa-sha1 not accepted (RFC 8301)"},
    {"h without from",
     "v=1; a=rsa-sha256; d=example.com; s=rsa; h=to:subject; " GOOD_BH
     " " B64_64,
     DKIM_PERMERROR, "From not signed"},
    {"h with empty name",
     "v=1; a=rsa-sha256; d=example.com; s=rsa; h=from::to; " GOOD_BH " " B64_64,
     DKIM_PERMERROR, "h="},
    {"i outside d",
     "v=1; a=rsa-sha256; d=example.com; s=rsa; i=joe@example.net; "
     "h=from; " GOOD_BH " " B64_64,
     DKIM_PERMERROR, "i= not within d="},
    {"i suffix but not subdomain",
     "v=1; a=rsa-sha256; d=example.com; s=rsa; i=@badexample.com; "
     "h=from; " GOOD_BH " " B64_64,
     DKIM_PERMERROR, "i= not within d="},
    {"q without dns/txt",
     "v=1; a=rsa-sha256; d=example.com; s=rsa; q=http; h=from; " GOOD_BH
     " " B64_64,
     DKIM_PERMERROR, "q="},
    {"bad c",
     "v=1; a=rsa-sha256; c=loose; d=example.com; s=rsa; h=from; " GOOD_BH
     " " B64_64,
     DKIM_PERMERROR, "c="},
    {"bad l",
     "v=1; a=rsa-sha256; l=-1; d=example.com; s=rsa; h=from; " GOOD_BH
     " " B64_64,
     DKIM_PERMERROR, "l="},
    {"huge l",
     "v=1; a=rsa-sha256; l=99999999999999999999; d=example.com; s=rsa; "
     "h=from; " GOOD_BH " " B64_64,
     DKIM_PERMERROR, "l="},
    {"bad t",
     "v=1; a=rsa-sha256; t=yesterday; d=example.com; s=rsa; h=from; " GOOD_BH
     " " B64_64,
     DKIM_PERMERROR, "t="},
    {"x before t",
     "v=1; a=rsa-sha256; t=1700000000; x=1600000000; d=example.com; s=rsa; "
     "h=from; " GOOD_BH " " B64_64,
     DKIM_PERMERROR, "x= before t="},
    {"expired",
     "v=1; a=rsa-sha256; t=1600000000; x=1600000001; d=example.com; s=rsa; "
     "h=from; " GOOD_BH " " B64_64,
     DKIM_FAIL, "signature expired"},
    {"bad domain",
     "v=1; a=rsa-sha256; d=exa\"mple.com; s=rsa; h=from; " GOOD_BH " " B64_64,
     DKIM_PERMERROR, "d="},
    {"bad tag list", "v=1; a=rsa-sha256;; d=example.com", DKIM_PERMERROR,
     "tag list"},
    {"not a tag list", "hello world", DKIM_PERMERROR, "tag list"},
    {"empty", "", DKIM_PERMERROR, "missing"},
};

static void test_bad_signatures(void **state) {
  (void)state;
  for (size_t i = 0; i < ARRAY_LEN(bad_sigs); i++) {
    char msg[1024];
    snprintf(msg, sizeof(msg),
             "DKIM-Signature: %s\r\nFrom: a@example.com\r\n\r\nbody\r\n",
             bad_sigs[i].value);
    struct dkim_verify *v =
        dkim_verify_new((const uint8_t *)msg, strlen(msg), 4, NOW);
    assert_int_equal(dkim_verify_count(v), 1);
    if (dkim_verify_query(v, 0) != NULL) {
      fail_msg("%s: waits for a key", bad_sigs[i].label);
    }
    expect_verdict(v, 0, bad_sigs[i].want, bad_sigs[i].reason,
                   bad_sigs[i].label);
    dkim_verify_free(v);
  }
  /* A value far over the limits. */
  size_t n = 3 * DKIM_MAX_TAG_VALUE;
  char *big = malloc(n + 200);
  int off = snprintf(
      big, n + 200,
      "DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=rsa; h=from; b=");
  memset(big + off, 'A', n);
  strcpy(big + off + n, "\r\nFrom: a@example.com\r\n\r\n");
  struct dkim_verify *v = dkim_verify_new((uint8_t *)big, strlen(big), 4, NOW);
  expect_verdict(v, 0, DKIM_PERMERROR, "too long", "huge b=");
  dkim_verify_free(v);
  free(big);
}

/* Many signatures: no more than DKIM_MAX_VERIFY are looked at. */
static void test_many_signatures(void **state) {
  (void)state;
  struct buf m = {0};
  for (int i = 0; i < 40; i++) {
    assert_int_equal(buf_append_str(&m, "DKIM-Signature: v=1\r\n"), 0);
  }
  assert_int_equal(buf_append_str(&m, "From: a@example.com\r\n\r\n"), 0);
  struct dkim_verify *v = dkim_verify_new(m.data, m.len, 1000, NOW);
  assert_int_equal(dkim_verify_count(v), DKIM_MAX_VERIFY);
  dkim_verify_free(v);
  v = dkim_verify_new(m.data, m.len, 0, NOW);
  assert_int_equal(dkim_verify_count(v), 0);
  dkim_verify_free(v);
  buf_free(&m);
  v = dkim_verify_new((const uint8_t *)"", 0, 4, NOW);
  assert_int_equal(dkim_verify_count(v), 0);
  dkim_verify_free(v);
}

/* ---- bad keys ---- */

/* rsa_record makes "v=DKIM1; p=..." for a fresh RSA key of bits. */
static char *rsa_record(unsigned bits) {
  RSA *rsa = RSA_new();
  BIGNUM *e = BN_new();
  assert_true(BN_set_word(e, RSA_F4));
  assert_int_equal(RSA_generate_key_ex(rsa, (int)bits, e, NULL), 1);
  EVP_PKEY *p = EVP_PKEY_new();
  assert_true(EVP_PKEY_set1_RSA(p, rsa));
  CBB cbb;
  uint8_t *der;
  size_t der_len;
  assert_true(CBB_init(&cbb, 0));
  assert_true(EVP_marshal_public_key(&cbb, p));
  assert_true(CBB_finish(&cbb, &der, &der_len));
  char *rec = malloc(der_len * 2 + 32);
  strcpy(rec, "v=DKIM1; p=");
  b64(der, der_len, rec + strlen(rec));
  OPENSSL_free(der);
  EVP_PKEY_free(p);
  RSA_free(rsa);
  BN_free(e);
  return rec;
}

static void test_bad_keys(void **state) {
  (void)state;
  struct dkim_sign_spec spec = spec_for(fx.rsa, 1, 1);
  struct buf rsa_msg = sign_msg(kMsg, &spec, 1);
  spec = spec_for(fx.ed, 1, 1);
  spec.identity = "joe@sub.example.com";
  struct buf ed_msg = sign_msg(kMsg, &spec, 1);
  char *k512 = rsa_record(512);
  char *k768 = rsa_record(768);
  char *k1024 = rsa_record(1024);
  const char *ed_p = strstr((const char *)fx.ed_rec.data, "p=");
  char ed_test[128], ed_strict[128], ed_sha1[128], ed_sha[128],
      ed_notfirst[128], ed_svc[128];
  snprintf(ed_test, sizeof(ed_test), "v=DKIM1; k=ed25519; t=y; %s", ed_p);
  snprintf(ed_strict, sizeof(ed_strict), "v=DKIM1; k=ed25519; t=s; %s", ed_p);
  snprintf(ed_sha1, sizeof(ed_sha1), "v=DKIM1; k=ed25519; h=sha1; %s", ed_p);
  snprintf(ed_sha, sizeof(ed_sha), "k=ed25519; h=sha1:sha256; s=email; %s",
           ed_p);
  snprintf(ed_notfirst, sizeof(ed_notfirst), "k=ed25519; v=DKIM1; %s", ed_p);
  snprintf(ed_svc, sizeof(ed_svc), "k=ed25519; s=xmpp; %s", ed_p);
  struct {
    const char *label;
    int ed; /* which message */
    const char *txt;
    enum dkim_key_status st;
    enum dkim_result want;
    const char *reason;
  } cases[] = {
      {"not a key", 0, "hello world", DKIM_KEY_FOUND, DKIM_PERMERROR,
       "not a DKIM key"},
      {"SPF record", 0, "v=spf1 -all", DKIM_KEY_FOUND, DKIM_PERMERROR,
       "not a DKIM key"},
      {"wrong version", 0, "v=DKIM2; p=abcd", DKIM_KEY_FOUND, DKIM_PERMERROR,
       "not a DKIM key"},
      {"v= not first", 1, ed_notfirst, DKIM_KEY_FOUND, DKIM_PERMERROR,
       "not a DKIM key"},
      {"no p=", 0, "v=DKIM1; k=rsa", DKIM_KEY_FOUND, DKIM_PERMERROR,
       "not a DKIM key"},
      {"p= not base64", 0, "v=DKIM1; p=%%%%", DKIM_KEY_FOUND, DKIM_PERMERROR,
       "base64"},
      {"p= not a key", 0, "v=DKIM1; p=dGVzdA==", DKIM_KEY_FOUND, DKIM_PERMERROR,
       "not an RSA key"},
      {"ed25519 p= of 31 bytes", 1,
       "k=ed25519; p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",
       DKIM_KEY_FOUND, DKIM_PERMERROR, "not an Ed25519 key"},
      {"revoked", 0, "v=DKIM1; k=rsa; p=", DKIM_KEY_FOUND, DKIM_FAIL,
       "key revoked"},
      {"revoked, FWS", 1, "v=DKIM1; k=ed25519; p= ", DKIM_KEY_FOUND, DKIM_FAIL,
       "key revoked"},
      {"k= does not match a=", 0, ed_test + 0, DKIM_KEY_FOUND, DKIM_PERMERROR,
       "k= does not match"},
      {"k= unknown", 0, "v=DKIM1; k=dsa; p=abcd", DKIM_KEY_FOUND,
       DKIM_PERMERROR, "k="},
      {"h= without sha256", 1, ed_sha1, DKIM_KEY_FOUND, DKIM_PERMERROR,
       "sha256"},
      {"h= with sha256, s=email", 1, ed_sha, DKIM_KEY_FOUND, DKIM_PASS, NULL},
      {"s= not email", 1, ed_svc, DKIM_KEY_FOUND, DKIM_PERMERROR, "email"},
      {"t=s with i= in a subdomain", 1, ed_strict, DKIM_KEY_FOUND,
       DKIM_PERMERROR, "t=s"},
      {"512-bit RSA", 0, k512, DKIM_KEY_FOUND, DKIM_FAIL, "key too short"},
      {"768-bit RSA", 0, k768, DKIM_KEY_FOUND, DKIM_FAIL, "key too short"},
      {"other 1024-bit key", 0, k1024, DKIM_KEY_FOUND, DKIM_FAIL,
       "signature did not verify"},
      {"NOTFOUND", 0, NULL, DKIM_KEY_NOTFOUND, DKIM_PERMERROR,
       "no key for signature"},
      {"TEMPFAIL", 0, NULL, DKIM_KEY_TEMPFAIL, DKIM_TEMPERROR,
       "key lookup failed"},
      {"FOUND but empty", 0, NULL, DKIM_KEY_FOUND, DKIM_PERMERROR, "no key"},
      {"testing flag", 1, ed_test, DKIM_KEY_FOUND, DKIM_PASS, NULL},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    struct buf *m = cases[i].ed ? &ed_msg : &rsa_msg;
    struct zone z = {0};
    zone_add(&z,
             cases[i].ed ? "ed._domainkey.example.com"
                         : "rsa._domainkey.example.com",
             cases[i].txt, cases[i].st);
    struct dkim_verify *v = verify_msg((char *)m->data, m->len, &z, NOW);
    expect_verdict(v, 0, cases[i].want, cases[i].reason, cases[i].label);
    if (cases[i].txt == ed_test && cases[i].ed) {
      assert_int_equal(dkim_verify_verdict(v, 0)->testing, 1);
    }
    if (cases[i].txt == k512) {
      assert_int_equal(dkim_verify_verdict(v, 0)->key_bits, 512);
    }
    dkim_verify_free(v);
  }
  /* Several records: the first that is a DKIM key is used. */
  struct dkim_verify *v =
      dkim_verify_new(ed_msg.data, ed_msg.len, DKIM_MAX_VERIFY, NOW);
  const char *txt[3] = {"v=spf1 -all", (const char *)fx.ed_rec.data,
                        "v=DKIM1; p="};
  size_t txt_len[3] = {strlen(txt[0]), strlen(txt[1]), strlen(txt[2])};
  dkim_verify_key(v, 0, DKIM_KEY_FOUND, txt, txt_len, 3);
  expect_verdict(v, 0, DKIM_PASS, NULL, "three records");
  /* Handing the key in twice, or for a signature that is not there. */
  dkim_verify_key(v, 0, DKIM_KEY_TEMPFAIL, NULL, NULL, 0);
  dkim_verify_key(v, 7, DKIM_KEY_TEMPFAIL, NULL, NULL, 0);
  expect_verdict(v, 0, DKIM_PASS, NULL, "second answer ignored");
  dkim_verify_free(v);
  free(k512);
  free(k768);
  free(k1024);
  buf_free(&rsa_msg);
  buf_free(&ed_msg);
}

/* ---- keys ---- */

static void test_keygen(void **state) {
  (void)state;
  struct stat st;
  assert_int_equal(stat(path_in("rsa.pem"), &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  assert_int_equal(stat(path_in("ed.pem"), &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  char err[256] = "";
  /* No overwrite, even of our own key. */
  assert_null(dkim_keygen(DKIM_ALG_ED25519_SHA256, 0, path_in("ed.pem"), err,
                          sizeof(err)));
  assert_non_null(strstr(err, "exists"));
  assert_null(dkim_keygen(DKIM_ALG_RSA_SHA256, 512, path_in("small.pem"), err,
                          sizeof(err)));
  assert_int_equal(access(path_in("small.pem"), F_OK), -1);
  assert_null(dkim_keygen(DKIM_ALG_RSA_SHA1, 2048, path_in("sha1.pem"), err,
                          sizeof(err)));
  /* Reloaded keys give the same records. */
  const char *names[2] = {"rsa.pem", "ed.pem"};
  struct buf *recs[2] = {&fx.rsa_rec, &fx.ed_rec};
  for (int i = 0; i < 2; i++) {
    struct dkim_key *k = dkim_key_load(path_in(names[i]), err, sizeof(err));
    if (k == NULL) {
      fail_msg("reload %s: %s", names[i], err);
    }
    assert_int_equal(dkim_key_alg(k),
                     i == 0 ? DKIM_ALG_RSA_SHA256 : DKIM_ALG_ED25519_SHA256);
    assert_int_equal(dkim_key_bits(k), i == 0 ? 2048 : 256);
    struct buf rec = {0};
    assert_int_equal(dkim_key_record(k, &rec), 0);
    assert_int_equal(buf_append(&rec, "", 1), 0);
    assert_string_equal((char *)rec.data, (char *)recs[i]->data);
    buf_free(&rec);
    dkim_key_free(k);
  }
  assert_ptr_equal(strstr((char *)fx.ed_rec.data, "v=DKIM1; k=ed25519; p="),
                   (char *)fx.ed_rec.data);
  assert_int_equal(strlen((char *)fx.ed_rec.data),
                   strlen("v=DKIM1; k=ed25519; p=") + 44);
  assert_ptr_equal(
      strstr((char *)fx.rsa_rec.data, "v=DKIM1; k=rsa; p=MIIBIjAN"),
      (char *)fx.rsa_rec.data);
  /* Files that are not keys. */
  assert_null(dkim_key_load(path_in("missing.pem"), err, sizeof(err)));
  FILE *f = fopen(path_in("junk.pem"), "w");
  fputs("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n",
        f);
  fclose(f);
  assert_null(dkim_key_load(path_in("junk.pem"), err, sizeof(err)));
  /* A 768-bit RSA key is refused. */
  RSA *rsa = RSA_new();
  BIGNUM *e = BN_new();
  BN_set_word(e, RSA_F4);
  assert_int_equal(RSA_generate_key_ex(rsa, 768, e, NULL), 1);
  BIO *bio = BIO_new_file(path_in("rsa768.pem"), "w");
  assert_true(PEM_write_bio_RSAPrivateKey(bio, rsa, NULL, NULL, 0, NULL, NULL));
  BIO_free(bio);
  RSA_free(rsa);
  BN_free(e);
  err[0] = '\0';
  assert_null(dkim_key_load(path_in("rsa768.pem"), err, sizeof(err)));
  assert_non_null(strstr(err, "768"));
}

static int run(const char *cmd) {
  int rc = system(cmd);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* Keys written by the openssl tool load; ours read back in openssl. */
static void test_openssl_keys(void **state) {
  (void)state;
  if (access("/usr/bin/openssl", X_OK) != 0) {
    fail_msg("/usr/bin/openssl is missing");
  }
  char cmd[512];
  struct {
    const char *file, *args;
    enum dkim_alg alg;
    unsigned bits;
  } cases[] = {
      {"o-ed.pem", "genpkey -algorithm ed25519", DKIM_ALG_ED25519_SHA256, 256},
      {"o-rsa.pem", "genrsa", DKIM_ALG_RSA_SHA256, 2048},
      {"o-rsa1.pem", "genrsa -traditional", DKIM_ALG_RSA_SHA256, 2048},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    snprintf(cmd, sizeof(cmd), "/usr/bin/openssl %s -out %s %s 2>/dev/null",
             cases[i].args, path_in(cases[i].file),
             cases[i].alg == DKIM_ALG_RSA_SHA256 ? "2048" : "");
    assert_int_equal(run(cmd), 0);
    char err[256] = "";
    struct dkim_key *k =
        dkim_key_load(path_in(cases[i].file), err, sizeof(err));
    if (k == NULL) {
      fail_msg("%s: %s", cases[i].file, err);
    }
    assert_int_equal(dkim_key_alg(k), cases[i].alg);
    assert_int_equal(dkim_key_bits(k), cases[i].bits);
    dkim_key_free(k);
  }
  FILE *f = fopen(path_in("o-rsa1.pem"), "r");
  char line[64] = "";
  assert_non_null(fgets(line, sizeof(line), f));
  fclose(f);
  assert_string_equal(line, "-----BEGIN RSA PRIVATE KEY-----\n");
  const char *ours[2] = {"rsa.pem", "ed.pem"};
  for (int i = 0; i < 2; i++) {
    snprintf(cmd, sizeof(cmd), "/usr/bin/openssl pkey -in %s -noout",
             path_in(ours[i]));
    if (run(cmd) != 0) {
      fail_msg("openssl cannot read %s", ours[i]);
    }
  }
}

/* ---- set-up ---- */

static int group_setup(void **state) {
  (void)state;
  snprintf(fx.dir, sizeof(fx.dir), "/tmp/test_dkim.XXXXXX");
  if (mkdtemp(fx.dir) == NULL) {
    return -1;
  }
  char err[256];
  fx.rsa = dkim_keygen(DKIM_ALG_RSA_SHA256, 2048, path_in("rsa.pem"), err,
                       sizeof(err));
  fx.ed = dkim_keygen(DKIM_ALG_ED25519_SHA256, 0, path_in("ed.pem"), err,
                      sizeof(err));
  if (fx.rsa == NULL || fx.ed == NULL) {
    fprintf(stderr, "keygen: %s\n", err);
    return -1;
  }
  if (dkim_key_record(fx.rsa, &fx.rsa_rec) != 0 ||
      buf_append(&fx.rsa_rec, "", 1) != 0 ||
      dkim_key_record(fx.ed, &fx.ed_rec) != 0 ||
      buf_append(&fx.ed_rec, "", 1) != 0) {
    return -1;
  }
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  dkim_key_free(fx.rsa);
  dkim_key_free(fx.ed);
  buf_free(&fx.rsa_rec);
  buf_free(&fx.ed_rec);
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx.dir);
  return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tags_good),
      cmocka_unit_test(test_tags_bad),
      cmocka_unit_test(test_tags_prefixes),
      cmocka_unit_test(test_canon_parse),
      cmocka_unit_test(test_body_canon),
      cmocka_unit_test(test_body_streaming),
      cmocka_unit_test(test_body_limit),
      cmocka_unit_test(test_headers_split),
      cmocka_unit_test(test_roundtrip),
      cmocka_unit_test(test_tampering),
      cmocka_unit_test(test_sign_options),
      cmocka_unit_test(test_sign_errors),
      cmocka_unit_test(test_sign_header_choice),
      cmocka_unit_test(test_rfc8463_example),
      cmocka_unit_test(test_rfc6376_example),
      cmocka_unit_test(test_handmade_l),
      cmocka_unit_test(test_bad_signatures),
      cmocka_unit_test(test_many_signatures),
      cmocka_unit_test(test_bad_keys),
      cmocka_unit_test(test_keygen),
      cmocka_unit_test(test_openssl_keys),
  };
  return cmocka_run_group_tests_name("dkim", tests, group_setup,
                                     group_teardown);
}
