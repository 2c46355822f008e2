/* tests/fuzz/fuzz_spf.c — SPF (policy/spf.h): the record checker on the
 * whole input, then check_host() with the input as the TXT record of the
 * sender's domain, for an IPv4 and an IPv6 client.
 *
 * Every other lookup is answered from a small fixed zone (includes,
 * redirects back to the input's domain, MX, PTR, an exp= text with every
 * macro letter, a timeout); a name outside it gets NXDOMAIN, NODATA, an
 * address or a timeout by a hash of the name, so answers are
 * deterministic.
 *
 * Invariants: spf_record_check gives the same verdict with spaces added
 * at the end (record = version terms *SP); a result is reached within
 * FUZZ_MAX_LOOKUPS lookups; a text that is not "v=spf1..." gives none, a
 * record that fails the check (or is too long) permerror, a valid one
 * never none; an explanation only on fail, printable US-ASCII, shorter
 * than SPF_MAX_EXPLANATION; the detail is a short string. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/spf.h"

/* Per term at most an MX/PTR lookup and 10 address lookups; 10 terms,
 * plus the record, %{p} (11) and exp= (1): about 125. */
#define FUZZ_MAX_LOOKUPS 200
#define FUZZ_DOMAIN "fuzz.test"
#define FUZZ_MAX_RRS 16

struct zrr {
  const char *name;
  uint16_t type;
  const char *data;
};

static const struct zrr zone[] = {
    {"fuzz.test", DNS_TYPE_A, "192.0.2.3"},
    {"fuzz.test", DNS_TYPE_MX, "mx.test"},
    {"a.test", DNS_TYPE_A, "192.0.2.3"},
    {"a.test", DNS_TYPE_AAAA, "2001:db8::cb01"},
    {"b.test", DNS_TYPE_A, "198.51.100.1"},
    {"mx.test", DNS_TYPE_MX, "a.test"},
    {"mx.test", DNS_TYPE_MX, "b.test"},
    {"mx.test", DNS_TYPE_MX, "."},
    {"3.2.0.192.in-addr.arpa", DNS_TYPE_PTR, "a.test"},
    {"3.2.0.192.in-addr.arpa", DNS_TYPE_PTR, "fuzz.test"},
    {"1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
     DNS_TYPE_PTR, "a.test"},
    {"inc.test", DNS_TYPE_TXT,
     "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all"},
    {"loop.test", DNS_TYPE_TXT, "v=spf1 include:loop.test"},
    {"back.test", DNS_TYPE_TXT, "v=spf1 include:fuzz.test ?all"},
    {"redir.test", DNS_TYPE_TXT, "v=spf1 redirect=fuzz.test"},
    {"exp.test", DNS_TYPE_TXT,
     "%{s} %{l} %{o} %{d} %{i} %{p} %{v} %{h} %{c} %{r} %{t} %{L} %{ir-} "
     "%{d1r} %% %_ %-"},
    {"two.test", DNS_TYPE_TXT, "v=spf1 -all"},
    {"two.test", DNS_TYPE_TXT, "v=spf1 +all"},
    {"alias.test", DNS_TYPE_CNAME, "inc.test"},
};

static uint32_t name_hash(const char *s) {
  uint32_t h = 2166136261u;
  for (; *s; s++) {
    h = (h ^ (uint8_t)(*s | 0x20)) * 16777619u;
  }
  return h;
}

static void fill(struct dns_rr *rr, const struct zrr *z) {
  memset(rr, 0, sizeof(*rr));
  rr->owner = z->name;
  rr->type = z->type;
  rr->rclass = DNS_CLASS_IN;
  if (z->type == DNS_TYPE_A) {
    inet_pton(AF_INET, z->data, rr->rd.a);
  } else if (z->type == DNS_TYPE_AAAA) {
    inet_pton(AF_INET6, z->data, rr->rd.aaaa);
  } else if (z->type == DNS_TYPE_MX) {
    rr->rd.mx.pref = 10;
    rr->rd.mx.exchange = z->data;
  } else if (z->type == DNS_TYPE_PTR) {
    rr->rd.ptr = z->data;
  } else if (z->type == DNS_TYPE_CNAME) {
    rr->rd.cname = z->data;
  } else {
    rr->rd.txt.data = (const uint8_t *)z->data;
    rr->rd.txt.data_len = strlen(z->data);
  }
}

/* lookup answers from the zone, then by hash; the input is fuzz.test's
 * TXT. */
static void lookup(const char *name, uint16_t type, const uint8_t *txt,
                   size_t txt_len, struct dns_rr *rrs, struct dns_answer *a) {
  memset(a, 0, sizeof(*a));
  a->type = type;
  a->owner = name;
  a->rrs = rrs;
  int known = 0;
  if (dns_name_equal(name, FUZZ_DOMAIN) && type == DNS_TYPE_TXT) {
    memset(&rrs[0], 0, sizeof rrs[0]);
    rrs[0].owner = FUZZ_DOMAIN;
    rrs[0].type = DNS_TYPE_TXT;
    rrs[0].rd.txt.data = txt;
    rrs[0].rd.txt.data_len = txt_len;
    a->num_rrs = 1;
  }
  for (size_t i = 0; i < sizeof(zone) / sizeof(zone[0]); i++) {
    if (dns_name_equal(zone[i].name, name)) {
      known = 1;
      if (zone[i].type == type && a->num_rrs < FUZZ_MAX_RRS) {
        fill(&rrs[a->num_rrs++], &zone[i]);
      }
    }
  }
  if (a->num_rrs > 0) {
    a->status = DNS_OK;
    return;
  }
  uint32_t h = name_hash(name);
  if (known || h % 4 == 1) {
    a->status = DNS_NOT_FOUND; /* NODATA */
  } else if (h % 4 == 0) {
    a->status = DNS_NOT_FOUND;
    a->nxdomain = 1;
  } else if (h % 4 == 2 && (type == DNS_TYPE_A || type == DNS_TYPE_AAAA)) {
    struct zrr z = {name, type,
                    type == DNS_TYPE_A ? "192.0.2.3" : "2001:db8::cb01"};
    fill(&rrs[0], &z);
    a->num_rrs = 1;
    a->status = DNS_OK;
  } else {
    a->status = h % 8 == 3 ? DNS_TEMPFAIL : DNS_NOT_FOUND;
    a->why = "hashed";
  }
}

static int is_spf(const uint8_t *d, size_t n) {
  static const char v[] = "v=spf1";
  if (n < 6 || (n > 6 && d[6] != ' ')) {
    return 0;
  }
  for (size_t i = 0; i < 6; i++) {
    uint8_t c = d[i] >= 'A' && d[i] <= 'Z' ? (uint8_t)(d[i] + 32) : d[i];
    if (c != (uint8_t)v[i]) {
      return 0;
    }
  }
  return 1;
}

static void check_outcome(const struct spf_query *q, const uint8_t *data,
                          size_t size, int valid) {
  enum spf_result r = spf_result(q);
  const char *exp = spf_explanation(q);
  if (r > SPF_PERMERROR || strlen(spf_detail(q)) >= 256 ||
      strcmp(spf_domain(q), FUZZ_DOMAIN) != 0) {
    abort();
  }
  if (!is_spf(data, size)               ? r != SPF_NONE
      : !valid || size > SPF_MAX_RECORD ? r != SPF_PERMERROR
                                        : r == SPF_NONE) {
    abort();
  }
  if (exp != NULL) {
    size_t n = strlen(exp);
    if (r != SPF_FAIL || n >= SPF_MAX_EXPLANATION) {
      abort();
    }
    for (size_t i = 0; i < n; i++) {
      if (exp[i] < 0x20 || exp[i] > 0x7e) {
        abort();
      }
    }
  }
}

static void evaluate(const uint8_t *data, size_t size, const char *ip,
                     int valid) {
  static struct dns_rr rrs[FUZZ_MAX_RRS];
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  if (strchr(ip, ':') == NULL) {
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    sin->sin_family = AF_INET;
    inet_pton(AF_INET, ip, &sin->sin_addr);
  } else {
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    sin6->sin6_family = AF_INET6;
    inet_pton(AF_INET6, ip, &sin6->sin6_addr);
  }
  struct spf_request req = {.client = (const struct sockaddr *)&ss,
                            .sender = "Strong-Bad@" FUZZ_DOMAIN,
                            .helo = "helo.test",
                            .receiver = "mx.receiver.test",
                            .now = 1700000000};
  struct spf_query *q = spf_new(&req);
  const char *name;
  uint16_t type;
  struct dns_answer a;
  if (q == NULL) {
    return;
  }
  for (int n = 0; spf_step(q, &name, &type) == SPF_NEED_DNS; n++) {
    if (n == FUZZ_MAX_LOOKUPS || strlen(name) >= 2 * DNS_NAME_TEXT_MAX) {
      abort();
    }
    lookup(name, type, data, size, rrs, &a);
    spf_answer(q, &a);
  }
  check_outcome(q, data, size, valid);
  spf_free(q);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static char padded[SPF_MAX_RECORD * 4 + 3];
  char err[256];
  int valid = spf_record_check((const char *)data, size, err, sizeof err) == 0;
  if (size + 2 <= sizeof padded) {
    memcpy(padded, data, size);
    memcpy(padded + size, "  ", 2);
    if (valid != (spf_record_check(padded, size + 2, NULL, 0) == 0)) {
      abort();
    }
  }
  evaluate(data, size, "192.0.2.3", valid);
  evaluate(data, size, "2001:db8::cb01", valid);
  return 0;
}
