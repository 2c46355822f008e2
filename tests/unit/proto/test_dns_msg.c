/* Unit tests: proto/dns_msg — the query builder (byte-exact, round trip),
 * the response parser on hand-built packets (compression, every prefix,
 * hostile pointers and names, rdata of each decoded type, limits) and the
 * CNAME chain and negative-TTL readers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/dns_msg.h"

/* ---- a tiny packet builder for hand-made messages ---- */

struct pkt {
  uint8_t b[8192];
  size_t n;
};

static void put8(struct pkt *p, unsigned v) {
  assert_true(p->n < sizeof(p->b));
  p->b[p->n++] = (uint8_t)v;
}

static void put16(struct pkt *p, unsigned v) {
  put8(p, v >> 8);
  put8(p, v & 0xff);
}

static void put32(struct pkt *p, uint32_t v) {
  put16(p, v >> 16);
  put16(p, v & 0xffff);
}

static void putb(struct pkt *p, const void *data, size_t n) {
  assert_true(p->n + n <= sizeof(p->b));
  memcpy(p->b + p->n, data, n);
  p->n += n;
}

/* putlabels writes "a.b.c" as labels, without the root octet. */
static void putlabels(struct pkt *p, const char *dotted) {
  while (*dotted != '\0') {
    const char *dot = strchr(dotted, '.');
    size_t len = dot ? (size_t)(dot - dotted) : strlen(dotted);
    put8(p, (unsigned)len);
    putb(p, dotted, len);
    dotted += len + (dot ? 1 : 0);
  }
}

/* putname writes a whole uncompressed name; "" is the root. */
static void putname(struct pkt *p, const char *dotted) {
  putlabels(p, dotted);
  put8(p, 0);
}

static void putptr(struct pkt *p, size_t off) {
  put16(p, 0xc000 | (unsigned)off);
}

#define QR 0x8000u
#define AA 0x0400u
#define TC 0x0200u
#define RD 0x0100u
#define RA 0x0080u
#define AD 0x0020u

static void header(struct pkt *p, unsigned id, unsigned flags, unsigned qd,
                   unsigned an, unsigned ns, unsigned ar) {
  p->n = 0;
  put16(p, id);
  put16(p, flags);
  put16(p, qd);
  put16(p, an);
  put16(p, ns);
  put16(p, ar);
}

/* rr_begin writes TYPE CLASS TTL and a placeholder RDLENGTH after the
 * owner; rr_end fills RDLENGTH in. */
static size_t rr_begin(struct pkt *p, unsigned type, uint32_t ttl) {
  put16(p, type);
  put16(p, DNS_CLASS_IN);
  put32(p, ttl);
  put16(p, 0);
  return p->n;
}

static void rr_end(struct pkt *p, size_t start) {
  size_t len = p->n - start;
  p->b[start - 2] = (uint8_t)(len >> 8);
  p->b[start - 1] = (uint8_t)len;
}

/* question writes "name type IN"; the name starts at offset 12. */
static void question(struct pkt *p, const char *name, unsigned type) {
  putname(p, name);
  put16(p, type);
  put16(p, DNS_CLASS_IN);
}

static struct dns_msg *msg_new(void) {
  struct dns_msg *m = malloc(sizeof(*m));
  assert_non_null(m);
  return m;
}

static void parse_ok(struct dns_msg *m, const struct pkt *p) {
  const char *why = NULL;
  if (dns_msg_parse(m, &why, p->b, p->n) != 0) {
    fail_msg("parse failed: %s", why);
  }
}

/* parse_fails checks that p does not parse, for the reason want_why (a
 * substring) if it is not NULL. */
static void parse_fails_why(const struct pkt *p, const char *label,
                            const char *want_why) {
  struct dns_msg *m = msg_new();
  const char *why = NULL;
  if (dns_msg_parse(m, &why, p->b, p->n) == 0) {
    fail_msg("%s: parsed, want an error", label);
  }
  assert_non_null(why);
  if (want_why != NULL && strstr(why, want_why) == NULL) {
    fail_msg("%s: got \"%s\", want \"%s\"", label, why, want_why);
  }
  free(m);
}

static void parse_fails(const struct pkt *p, const char *label) {
  parse_fails_why(p, label, NULL);
}

/* ---- query builder ---- */

static void test_query_bytes(void **state) {
  (void)state;
  uint8_t q[DNS_QUERY_MAX_LEN];
  size_t len = 0;
  assert_int_equal(dns_query_build(q, sizeof q, &len, 0x1234, "Example.COM.",
                                   DNS_TYPE_MX, DNS_QUERY_AD | DNS_QUERY_EDNS),
                   0);
  static const uint8_t want[] =
      {
          0x12, 0x34, 0x01, 0x20, 0,    1,   0,
          0,    0,    0,    0,    1, /* RD AD, QD 1, AR 1 */
          7,    'E',  'x',  'a',  'm',  'p', 'l',
          'e',  3,    'C',  'O',  'M',  0, /* */
          0,    15,   0,    1,             /* MX IN */
          0,    0,    41,   0x04, 0xd0, 0,   0,
          0,    0,    0,    0, /* OPT 1232, no DO */
      };
  assert_int_equal(len, sizeof want);
  assert_memory_equal(q, want, sizeof want);

  /* DO implies the OPT record; without flags there is none. */
  assert_int_equal(dns_query_build(q, sizeof q, &len, 1, "a.test",
                                   DNS_TYPE_TLSA, DNS_QUERY_DO),
                   0);
  assert_int_equal(q[len - 4], 0x80); /* DO */
  assert_int_equal(q[11], 1);
  assert_int_equal(
      dns_query_build(q, sizeof q, &len, 1, "a.test", DNS_TYPE_A, 0), 0);
  assert_int_equal(len, 12 + 8 + 4);
  assert_int_equal(q[3], 0x00);
  assert_int_equal(q[2], 0x01);
}

/* The parser reads back what the builder wrote. */
static void test_query_round_trip(void **state) {
  (void)state;
  static const char *names[] = {"example.com", "_25._tcp.mx.example.net",
                                "a\\.b.test",  "sp\\032ce.test",
                                "\\\\.test",   "."};
  static const char *want[] = {"example.com", "_25._tcp.mx.example.net",
                               "a\\.b.test",  "sp\\032ce.test",
                               "\\\\.test",   "."};
  struct dns_msg *m = msg_new();
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    uint8_t q[DNS_QUERY_MAX_LEN];
    size_t len;
    const char *why = NULL;
    assert_int_equal(dns_query_build(q, sizeof q, &len, (uint16_t)i, names[i],
                                     DNS_TYPE_TXT, DNS_QUERY_EDNS),
                     0);
    if (dns_msg_parse(m, &why, q, len) != 0) {
      fail_msg("%s: %s", names[i], why);
    }
    assert_string_equal(m->qname, want[i]);
    assert_int_equal(m->qtype, DNS_TYPE_TXT);
    assert_int_equal(m->qr, 0);
    assert_int_equal(m->rd, 1);
    assert_int_equal(m->has_opt, 1);
    assert_int_equal(m->udp_size, DNS_EDNS_UDP_SIZE);
  }
  free(m);
}

static void test_query_bad_names(void **state) {
  (void)state;
  char long_label[70], long_name[300];
  memset(long_label, 'a', 64);
  long_label[64] = '\0';
  /* 4 labels of 63 and one of 1: 4*64 + 2 + 1 = 259 octets > 255. */
  snprintf(long_name, sizeof long_name, "%.63s.%.63s.%.63s.%.63s.b", long_label,
           long_label, long_label, long_label);
  const struct {
    const char *label, *name;
  } cases[] = {
      {"empty", ""},
      {"double dot", "a..b"},
      {"leading dot", ".a"},
      {"label 64", long_label},
      {"name 259", long_name},
      {"short escape", "a\\25"},
      {"escape 256", "a\\256"},
      {"lone backslash", "a\\"},
      {"two root dots", ".."},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    uint8_t q[DNS_QUERY_MAX_LEN];
    size_t len;
    if (dns_query_build(q, sizeof q, &len, 1, cases[i].name, DNS_TYPE_A, 0) !=
        -1) {
      fail_msg("%s: built, want -1", cases[i].label);
    }
  }
  /* 3 labels of 63, one of 61: 3*64 + 62 + 1 = 255, the longest name. */
  snprintf(long_name, sizeof long_name, "%.63s.%.63s.%.63s.%.61s", long_label,
           long_label, long_label, long_label);
  uint8_t q[DNS_QUERY_MAX_LEN];
  size_t len;
  assert_int_equal(dns_query_build(q, sizeof q, &len, 1, long_name, DNS_TYPE_A,
                                   DNS_QUERY_EDNS),
                   0);
  assert_int_equal(len, DNS_QUERY_MAX_LEN);
  /* Too little room: every shorter buffer fails. */
  for (size_t cap = 0; cap < len; cap++) {
    size_t got;
    assert_int_equal(
        dns_query_build(q, cap, &got, 1, long_name, DNS_TYPE_A, DNS_QUERY_EDNS),
        -1);
  }
}

static void test_name_canon_equal(void **state) {
  (void)state;
  char out[DNS_NAME_TEXT_MAX];
  assert_int_equal(dns_name_canon(out, "MX1.Example.COM."), 0);
  assert_string_equal(out, "mx1.example.com");
  assert_int_equal(dns_name_canon(out, "\\065b.test"), 0); /* \065 = 'A' */
  assert_string_equal(out, "ab.test");
  assert_int_equal(dns_name_canon(out, "."), 0);
  assert_string_equal(out, ".");
  assert_int_equal(dns_name_canon(out, "a..b"), -1);
  assert_true(dns_name_equal("Example.COM", "example.com."));
  assert_true(dns_name_equal(".", "."));
  assert_false(dns_name_equal("example.com", "example.co"));
  assert_false(dns_name_equal("a\\.", "a")); /* an escaped dot stays */
}

/* ---- responses ---- */

/* mx_response: example.com MX with compressed names:
 *   example.com MX 10 mx1.example.com, MX 20 mx2.example.com,
 *   authority: nothing, additional: OPT (DO, udp 1232). */
static void mx_response(struct pkt *p) {
  header(p, 0xbeef, QR | RD | RA | AD, 1, 2, 0, 1);
  question(p, "example.com", DNS_TYPE_MX); /* name at 12 */
  putptr(p, 12);
  size_t s = rr_begin(p, DNS_TYPE_MX, 3600);
  put16(p, 10);
  size_t mx1 = p->n;
  putlabels(p, "mx1");
  putptr(p, 12);
  rr_end(p, s);
  putptr(p, 12);
  s = rr_begin(p, DNS_TYPE_MX, 300);
  put16(p, 20);
  put8(p, 3);
  putb(p, "mx2", 3);
  putptr(p, mx1 + 4); /* ".example.com" via the pointer inside mx1 */
  rr_end(p, s);
  put8(p, 0); /* OPT */
  put16(p, DNS_TYPE_OPT);
  put16(p, 1232);
  put32(p, 0x00008000); /* DO */
  put16(p, 0);
}

static void test_parse_mx_compressed(void **state) {
  (void)state;
  struct pkt p;
  struct dns_msg *m = msg_new();
  mx_response(&p);
  parse_ok(m, &p);
  assert_int_equal(m->id, 0xbeef);
  assert_true(m->qr && m->rd && m->ra && m->ad);
  assert_false(m->tc || m->aa);
  assert_int_equal(m->rcode, DNS_RCODE_NOERROR);
  assert_string_equal(m->qname, "example.com");
  assert_int_equal(m->num_answer, 2);
  assert_string_equal(m->answer[0].owner, "example.com");
  assert_int_equal(m->answer[0].rd.mx.pref, 10);
  assert_string_equal(m->answer[0].rd.mx.exchange, "mx1.example.com");
  assert_int_equal(m->answer[1].rd.mx.pref, 20);
  assert_string_equal(m->answer[1].rd.mx.exchange, "mx2.example.com");
  assert_int_equal(m->answer[1].ttl, 300);
  assert_true(m->has_opt && m->do_bit);
  assert_int_equal(m->udp_size, 1232);

  struct dns_rrset set;
  assert_int_equal(dns_msg_rrset(&set, m, "EXAMPLE.com.", DNS_TYPE_MX),
                   DNS_CHAIN_FOUND);
  assert_int_equal(set.num_rrs, 2);
  assert_int_equal(set.num_cnames, 0);
  assert_int_equal(set.ttl, 300);
  free(m);
}

/* Every proper prefix of a valid response is an error, never a crash. */
static void test_parse_every_prefix(void **state) {
  (void)state;
  struct pkt p;
  struct dns_msg *m = msg_new();
  mx_response(&p);
  for (size_t i = 0; i < p.n; i++) {
    const char *why = NULL;
    if (dns_msg_parse(m, &why, p.b, i) != -1) {
      fail_msg("prefix %zu of %zu parsed", i, p.n);
    }
  }
  /* And one byte too many is trailing garbage. */
  put8(&p, 0);
  parse_fails_why(&p, "trailing byte", "after the last record");
  free(m);
}

/* hostile builds a response of two records: one of an undecoded type
 * whose RDATA blob() fills (material for pointers to reach), then an A
 * record whose owner owner() writes; last is what blob() left for it. */
static void hostile(struct pkt *p, void (*blob)(struct pkt *, size_t *),
                    void (*owner)(struct pkt *, size_t)) {
  size_t last = 12;
  header(p, 1, QR, 1, 2, 0, 0);
  question(p, "a.test", DNS_TYPE_A);
  putptr(p, 12);
  size_t s = rr_begin(p, 99, 60);
  if (blob != NULL) {
    blob(p, &last);
  }
  rr_end(p, s);
  owner(p, last);
  s = rr_begin(p, DNS_TYPE_A, 60);
  put32(p, 0x7f000001);
  rr_end(p, s);
}

static void own_self_loop(struct pkt *p, size_t last) {
  putptr(p, p->n); /* points at itself */
}

static void own_forward(struct pkt *p, size_t last) {
  putptr(p, p->n + 2); /* points after itself */
  put8(p, 0);
}

static void own_label_then_back_loop(struct pkt *p, size_t last) {
  /* "x" then a pointer back to that "x": x.x.x... */
  size_t at = p->n;
  putlabels(p, "x");
  putptr(p, at);
}

static void own_into_header(struct pkt *p, size_t last) {
  putptr(p, 4);
}

static void own_label_type_01(struct pkt *p, size_t last) {
  put8(p, 0x41);
  put8(p, 0);
}

static void own_pointer_to(struct pkt *p, size_t last) {
  putptr(p, last);
}

/* Two pointers at each other; the owner points at the first. */
static void blob_pointer_pair(struct pkt *p, size_t *last) {
  size_t a = p->n;
  putptr(p, a + 2);
  putptr(p, a);
  *last = a;
}

/* 63-octet labels, each followed by a pointer to the one before: five of
 * them make 5 * 64 octets > 255. */
static void blob_long_labels(struct pkt *p, size_t *last) {
  size_t prev = 12; /* "a.test" */
  for (int i = 0; i < 5; i++) {
    size_t at = p->n;
    put8(p, 63);
    for (int k = 0; k < 63; k++) {
      put8(p, 'a');
    }
    putptr(p, prev);
    prev = at;
  }
  *last = prev;
}

/* 130 pointers, each to the one before, the first to the qname: more
 * than DNS_MAX_POINTERS hops. */
static void blob_pointer_chain(struct pkt *p, size_t *last) {
  size_t prev = 12;
  for (int i = 0; i < 130; i++) {
    size_t at = p->n;
    putptr(p, prev);
    prev = at;
  }
  *last = prev;
}

static void test_parse_hostile_names(void **state) {
  (void)state;
  const struct {
    const char *label;
    void (*blob)(struct pkt *, size_t *);
    void (*owner)(struct pkt *, size_t);
    const char *want_why;
  } cases[] = {
      {"pointer to itself", NULL, own_self_loop, "not backward"},
      {"forward pointer", NULL, own_forward, "not backward"},
      {"label then pointer back", NULL, own_label_then_back_loop,
       "not backward"},
      {"pointer into the header", NULL, own_into_header, "not backward"},
      {"label type 01", NULL, own_label_type_01, "label type"},
      {"two pointers in a loop", blob_pointer_pair, own_pointer_to,
       "not backward"},
      {"longer than 255 via pointers", blob_long_labels, own_pointer_to,
       "longer than 255"},
      {"more than 128 pointers", blob_pointer_chain, own_pointer_to,
       "too many compression pointers"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct pkt p;
    hostile(&p, cases[i].blob, cases[i].owner);
    parse_fails_why(&p, cases[i].label, cases[i].want_why);
  }
  /* The same construction with a sound owner parses: the failures above
   * are the names'. 128 hops are still allowed. */
  struct pkt p;
  struct dns_msg *m = msg_new();
  hostile(&p, NULL, own_pointer_to);
  parse_ok(m, &p);
  assert_string_equal(m->answer[0].owner, "a.test");
  free(m);
}

static void test_parse_name_limits(void **state) {
  (void)state;
  /* A name of exactly 255 octets parses; its text is 253 characters. */
  char label[64];
  memset(label, 'b', 63);
  label[63] = '\0';
  char name[300];
  snprintf(name, sizeof name, "%s.%s.%s.%.61s", label, label, label, label);
  struct pkt p;
  header(&p, 1, QR, 1, 0, 0, 0);
  question(&p, name, DNS_TYPE_A);
  struct dns_msg *m = msg_new();
  parse_ok(m, &p);
  assert_int_equal(strlen(m->qname), 253);
  /* Binary octets escape to \DDD: 63 of them need 252 characters, and
   * two such labels do not fit in DNS_NAME_TEXT_MAX. */
  header(&p, 1, QR, 1, 0, 0, 0);
  for (int l = 0; l < 2; l++) {
    put8(&p, 63);
    for (int k = 0; k < 63; k++) {
      put8(&p, 0x01);
    }
  }
  put8(&p, 0);
  put16(&p, DNS_TYPE_A);
  put16(&p, DNS_CLASS_IN);
  parse_fails_why(&p, "escaped name too long for text", "presentation");
  free(m);
}

static void test_parse_txt(void **state) {
  (void)state;
  struct pkt p;
  header(&p, 7, QR | AA, 1, 2, 0, 0);
  question(&p, "_dmarc.example.com", DNS_TYPE_TXT);
  putptr(&p, 12);
  size_t s = rr_begin(&p, DNS_TYPE_TXT, 120);
  put8(&p, 8);
  putb(&p, "v=DMARC1", 8);
  put8(&p, 0); /* an empty string adds nothing */
  put8(&p, 9);
  putb(&p, "; p=rej\0x", 9); /* bytes, NUL included */
  rr_end(&p, s);
  putptr(&p, 12);
  s = rr_begin(&p, DNS_TYPE_TXT, 60);
  rr_end(&p, s); /* empty RDATA: read as "" */
  struct dns_msg *m = msg_new();
  parse_ok(m, &p);
  assert_int_equal(m->num_answer, 2);
  assert_int_equal(m->answer[0].rd.txt.data_len, 17);
  assert_memory_equal(m->answer[0].rd.txt.data, "v=DMARC1; p=rej\0x", 17);
  assert_int_equal(m->answer[1].rd.txt.data_len, 0);

  /* A string running past its RDATA. */
  header(&p, 7, QR, 1, 1, 0, 0);
  question(&p, "t.test", DNS_TYPE_TXT);
  putptr(&p, 12);
  s = rr_begin(&p, DNS_TYPE_TXT, 60);
  put8(&p, 5);
  putb(&p, "abc", 3);
  rr_end(&p, s);
  put16(&p, 0); /* bytes the string would otherwise swallow */
  parse_fails(&p, "TXT string past RDATA");
  free(m);
}

static void test_parse_null_mx_and_soa(void **state) {
  (void)state;
  struct pkt p;
  header(&p, 9, QR | AA, 1, 1, 1, 0);
  question(&p, "nomail.test", DNS_TYPE_MX);
  putptr(&p, 12);
  size_t s = rr_begin(&p, DNS_TYPE_MX, 3600);
  put16(&p, 0);
  put8(&p, 0); /* "." */
  rr_end(&p, s);
  putptr(&p, 12);
  s = rr_begin(&p, DNS_TYPE_SOA, 900);
  putlabels(&p, "ns");
  putptr(&p, 12);
  putlabels(&p, "host");
  putptr(&p, 12);
  put32(&p, 2024010101);
  put32(&p, 7200);
  put32(&p, 3600);
  put32(&p, 1209600);
  put32(&p, 300);
  rr_end(&p, s);
  struct dns_msg *m = msg_new();
  parse_ok(m, &p);
  assert_int_equal(m->num_answer, 1);
  assert_string_equal(m->answer[0].rd.mx.exchange, ".");
  assert_int_equal(m->answer[0].rd.mx.pref, 0);
  assert_int_equal(m->num_authority, 1);
  assert_int_equal(m->authority[0].rd.soa.minimum, 300);
  uint32_t ttl = 0;
  assert_int_equal(dns_msg_negative_ttl(m, &ttl), 1);
  assert_int_equal(ttl, 300); /* min(900, 300) */
  free(m);
}

/* chain: www -> web -> host (A) plus a loop l1 -> l2 -> l1 and a dangling
 * alias d -> gone. */
static void test_cname_chain(void **state) {
  (void)state;
  struct pkt p;
  header(&p, 3, QR | RA, 1, 6, 0, 0);
  question(&p, "www.example.test", DNS_TYPE_A);
  putptr(&p, 12);
  size_t s = rr_begin(&p, DNS_TYPE_CNAME, 600);
  putname(&p, "WEB.example.test");
  rr_end(&p, s);
  putname(&p, "web.example.test");
  s = rr_begin(&p, DNS_TYPE_CNAME, 100);
  putname(&p, "host.example.test");
  rr_end(&p, s);
  putname(&p, "host.example.test");
  s = rr_begin(&p, DNS_TYPE_A, 3600);
  put32(&p, 0xc0000201);
  rr_end(&p, s);
  putname(&p, "l1.test");
  s = rr_begin(&p, DNS_TYPE_CNAME, 60);
  putname(&p, "l2.test");
  rr_end(&p, s);
  putname(&p, "l2.test");
  s = rr_begin(&p, DNS_TYPE_CNAME, 60);
  putname(&p, "l1.test");
  rr_end(&p, s);
  putname(&p, "d.test");
  s = rr_begin(&p, DNS_TYPE_CNAME, 60);
  putname(&p, "gone.test");
  rr_end(&p, s);
  struct dns_msg *m = msg_new();
  parse_ok(m, &p);
  struct dns_rrset set;
  assert_int_equal(dns_msg_rrset(&set, m, "www.example.test", DNS_TYPE_A),
                   DNS_CHAIN_FOUND);
  assert_string_equal(set.owner, "host.example.test");
  assert_int_equal(set.num_cnames, 2);
  assert_int_equal(set.num_rrs, 1);
  assert_int_equal(set.ttl, 100);
  assert_memory_equal(set.rrs[0]->rd.a, "\xc0\x00\x02\x01", 4);
  /* Asking for the CNAME itself does not follow it. */
  assert_int_equal(dns_msg_rrset(&set, m, "www.example.test", DNS_TYPE_CNAME),
                   DNS_CHAIN_FOUND);
  assert_string_equal(set.rrs[0]->rd.cname, "WEB.example.test");
  assert_int_equal(dns_msg_rrset(&set, m, "l1.test", DNS_TYPE_A),
                   DNS_CHAIN_LOOP);
  assert_int_equal(dns_msg_rrset(&set, m, "d.test", DNS_TYPE_A),
                   DNS_CHAIN_EMPTY);
  assert_string_equal(set.owner, "gone.test");
  assert_int_equal(set.num_cnames, 1);
  assert_int_equal(dns_msg_rrset(&set, m, "host.example.test", DNS_TYPE_AAAA),
                   DNS_CHAIN_EMPTY);
  assert_int_equal(set.num_cnames, 0);
  free(m);
}

static void test_parse_types(void **state) {
  (void)state;
  static const uint8_t v6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0,
                                 0,    0,    0,    0,    0, 0, 0, 1};
  struct pkt p;
  header(&p, 5, QR, 1, 4, 0, 0);
  question(&p, "_25._tcp.mx.test", DNS_TYPE_TLSA);
  putptr(&p, 12);
  size_t s = rr_begin(&p, DNS_TYPE_TLSA, 300);
  put8(&p, 3);
  put8(&p, 1);
  put8(&p, 1);
  putb(&p, "\x01\x02\x03\x04", 4);
  rr_end(&p, s);
  putptr(&p, 12);
  s = rr_begin(&p, DNS_TYPE_AAAA, 0x80000000u); /* top bit: reads as 0 */
  putb(&p, v6, 16);
  rr_end(&p, s);
  putptr(&p, 12);
  s = rr_begin(&p, DNS_TYPE_RRSIG, 300); /* skipped, not decoded */
  putb(&p, "whatever", 8);
  rr_end(&p, s);
  putptr(&p, 12); /* class CH: skipped */
  put16(&p, DNS_TYPE_A);
  put16(&p, 3);
  put32(&p, 0);
  put16(&p, 4);
  put32(&p, 0);
  struct dns_msg *m = msg_new();
  parse_ok(m, &p);
  assert_int_equal(m->num_answer, 2);
  assert_int_equal(m->num_answer_skipped, 2);
  const struct dns_rr *t = &m->answer[0];
  assert_int_equal(t->rd.tlsa.usage, 3);
  assert_int_equal(t->rd.tlsa.selector, 1);
  assert_int_equal(t->rd.tlsa.mtype, 1);
  assert_int_equal(t->rd.tlsa.data_len, 4);
  assert_memory_equal(t->rd.tlsa.data, "\x01\x02\x03\x04", 4);
  assert_memory_equal(m->answer[1].rd.aaaa, v6, 16);
  assert_int_equal(m->answer[1].ttl, 0);
  free(m);
}

/* PTR (RFC 1035 §3.3.12): PTRDNAME decoded like a CNAME's target, plain
 * or compressed, for an in-addr.arpa and an ip6.arpa owner. */
static void test_parse_ptr(void **state) {
  (void)state;
  struct pkt p;
  header(&p, 7, QR | RD | RA, 1, 3, 0, 0);
  question(&p, "4.3.2.1.in-addr.arpa", DNS_TYPE_PTR);
  putptr(&p, 12);
  size_t s = rr_begin(&p, DNS_TYPE_PTR, 3600);
  size_t host = p.n; /* "mail.example.com" */
  putname(&p, "mail.Example.com");
  rr_end(&p, s);
  putptr(&p, 12);
  s = rr_begin(&p, DNS_TYPE_PTR, 60);
  putlabels(&p, "mx");
  putptr(&p, host + 5); /* "mx" + "example.com" */
  rr_end(&p, s);
  putname(&p, "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0."
              "2.ip6.arpa");
  s = rr_begin(&p, DNS_TYPE_PTR, 60);
  putname(&p, "v6.example.com");
  rr_end(&p, s);
  struct dns_msg *m = msg_new();
  parse_ok(m, &p);
  assert_int_equal(m->num_answer, 3);
  assert_int_equal(m->num_answer_skipped, 0);
  assert_int_equal(m->answer[0].type, DNS_TYPE_PTR);
  assert_string_equal(m->answer[0].rd.ptr, "mail.Example.com");
  assert_string_equal(m->answer[1].rd.ptr, "mx.Example.com");
  assert_string_equal(m->answer[2].rd.ptr, "v6.example.com");

  struct dns_rrset set;
  assert_int_equal(
      dns_msg_rrset(&set, m, "4.3.2.1.IN-ADDR.ARPA.", DNS_TYPE_PTR),
      DNS_CHAIN_FOUND);
  assert_int_equal(set.num_rrs, 2);
  assert_int_equal(set.ttl, 60);
  assert_int_equal(dns_msg_rrset(&set, m,
                                 "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0."
                                 "0.0.0.8.B.D.0.1.0.0.2.ip6.arpa",
                                 DNS_TYPE_PTR),
                   DNS_CHAIN_FOUND);
  assert_int_equal(set.num_rrs, 1);
  char buf[16];
  assert_string_equal(dns_type_name(DNS_TYPE_PTR, buf), "PTR");

  /* A PTRDNAME that runs past its RDATA is an error. */
  header(&p, 1, QR, 1, 1, 0, 0);
  question(&p, "4.3.2.1.in-addr.arpa", DNS_TYPE_PTR);
  putptr(&p, 12);
  s = rr_begin(&p, DNS_TYPE_PTR, 60);
  putname(&p, "a.test");
  rr_end(&p, s);
  p.b[s - 1] = 3; /* RDLENGTH 3: "\001a\004" */
  p.n = s + 3;
  parse_fails(&p, "PTR name cut by RDLENGTH");
  free(m);
}

/* RDATA whose length does not match its type is an error. */
static void test_parse_bad_rdata(void **state) {
  (void)state;
  struct pkt p;
  header(&p, 1, QR, 1, 1, 0, 0);
  question(&p, "a.test", DNS_TYPE_A);
  putptr(&p, 12);
  size_t s = rr_begin(&p, DNS_TYPE_A, 60);
  putb(&p, "\x01\x02\x03\x04\x05", 5);
  rr_end(&p, s);
  parse_fails(&p, "A with 5 octets");

  header(&p, 1, QR, 1, 1, 0, 0);
  question(&p, "a.test", DNS_TYPE_MX);
  putptr(&p, 12);
  s = rr_begin(&p, DNS_TYPE_MX, 60);
  put16(&p, 10);
  putptr(&p, 12);
  put8(&p, 0); /* one octet after the exchange */
  rr_end(&p, s);
  parse_fails_why(&p, "MX with a trailing octet", "RDATA longer");

  header(&p, 1, QR, 1, 1, 0, 0);
  question(&p, "a.test", DNS_TYPE_TLSA);
  putptr(&p, 12);
  s = rr_begin(&p, DNS_TYPE_TLSA, 60);
  put16(&p, 0x0301);
  rr_end(&p, s);
  parse_fails(&p, "TLSA with 2 octets");

  header(&p, 1, QR, 1, 1, 0, 0);
  question(&p, "a.test", DNS_TYPE_A);
  putptr(&p, 12);
  s = rr_begin(&p, DNS_TYPE_A, 60);
  put32(&p, 1);
  rr_end(&p, s);
  p.b[p.n - 5] = 0xff; /* RDLENGTH past the end */
  parse_fails(&p, "RDLENGTH past the end");

  header(&p, 1, QR, 2, 0, 0, 0);
  question(&p, "a.test", DNS_TYPE_A);
  question(&p, "b.test", DNS_TYPE_A);
  parse_fails_why(&p, "two questions", "more than one question");
}

static void test_parse_opt(void **state) {
  (void)state;
  struct pkt p;
  header(&p, 1, QR | 0x1, 1, 0, 0, 1); /* RCODE 1 in the header */
  question(&p, "a.test", DNS_TYPE_A);
  put8(&p, 0);
  put16(&p, DNS_TYPE_OPT);
  put16(&p, 4096);
  put32(&p, 0x01000000); /* extended RCODE 1: 16 + 1 = BADVERS 17 */
  put16(&p, 0);
  struct dns_msg *m = msg_new();
  parse_ok(m, &p);
  assert_int_equal(m->rcode, 17);
  assert_int_equal(m->udp_size, 4096);
  assert_int_equal(m->do_bit, 0);

  header(&p, 1, QR, 1, 0, 0, 2);
  question(&p, "a.test", DNS_TYPE_A);
  for (int i = 0; i < 2; i++) {
    put8(&p, 0);
    put16(&p, DNS_TYPE_OPT);
    put16(&p, 1232);
    put32(&p, 0);
    put16(&p, 0);
  }
  parse_fails_why(&p, "two OPT records", "more than one OPT");

  header(&p, 1, QR, 1, 1, 0, 0);
  question(&p, "a.test", DNS_TYPE_A);
  put8(&p, 0);
  put16(&p, DNS_TYPE_OPT);
  put16(&p, 1232);
  put32(&p, 0);
  put16(&p, 0);
  parse_fails_why(&p, "OPT in the answer section", "OPT outside");

  header(&p, 1, QR, 1, 0, 0, 1);
  question(&p, "a.test", DNS_TYPE_A);
  putptr(&p, 12);
  put16(&p, DNS_TYPE_OPT);
  put16(&p, 1232);
  put32(&p, 0);
  put16(&p, 0);
  parse_fails_why(&p, "OPT not owned by the root", "root");
  free(m);
}

/* More answers than DNS_MSG_MAX_ANSWER: the first are kept, the rest
 * counted; an empty question section (FORMERR replies) parses. */
static void test_parse_limits(void **state) {
  (void)state;
  struct pkt p;
  const unsigned n = DNS_MSG_MAX_ANSWER + 6;
  header(&p, 1, QR, 1, n, 0, 0);
  question(&p, "many.test", DNS_TYPE_A);
  for (unsigned i = 0; i < n; i++) {
    putptr(&p, 12);
    size_t s = rr_begin(&p, DNS_TYPE_A, 60);
    put32(&p, 0x0a000000 + i);
    rr_end(&p, s);
  }
  struct dns_msg *m = msg_new();
  parse_ok(m, &p);
  assert_int_equal(m->num_answer, DNS_MSG_MAX_ANSWER);
  assert_int_equal(m->num_answer_dropped, 6);
  assert_int_equal(m->answer[63].rd.a[3], 63);

  header(&p, 1, QR | DNS_RCODE_FORMERR, 0, 0, 0, 0);
  parse_ok(m, &p);
  assert_int_equal(m->has_question, 0);
  assert_int_equal(m->rcode, DNS_RCODE_FORMERR);
  free(m);
}

static void test_type_name(void **state) {
  (void)state;
  char buf[16];
  assert_string_equal(dns_type_name(DNS_TYPE_MX, buf), "MX");
  assert_string_equal(dns_type_name(99, buf), "TYPE99");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_query_bytes),
      cmocka_unit_test(test_query_round_trip),
      cmocka_unit_test(test_query_bad_names),
      cmocka_unit_test(test_name_canon_equal),
      cmocka_unit_test(test_parse_mx_compressed),
      cmocka_unit_test(test_parse_every_prefix),
      cmocka_unit_test(test_parse_hostile_names),
      cmocka_unit_test(test_parse_name_limits),
      cmocka_unit_test(test_parse_txt),
      cmocka_unit_test(test_parse_null_mx_and_soa),
      cmocka_unit_test(test_cname_chain),
      cmocka_unit_test(test_parse_types),
      cmocka_unit_test(test_parse_ptr),
      cmocka_unit_test(test_parse_bad_rdata),
      cmocka_unit_test(test_parse_opt),
      cmocka_unit_test(test_parse_limits),
      cmocka_unit_test(test_type_name),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
