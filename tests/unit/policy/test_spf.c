/* Unit tests: policy/spf — check_host() driven through spf_step and
 * spf_answer by a fake resolver: a zone table of (name, type, data) that
 * answers like policy/dns (CNAMEs followed, NXDOMAIN for an unknown name,
 * NODATA for a known one without the type, TEMPFAIL on demand). Covered:
 * record selection, every mechanism and qualifier, redirect and exp, the
 * macros (RFC 7208 §7.4's examples verbatim), the limits (10 DNS terms,
 * 2 void lookups, 10 MX and PTR names), loops, syntax errors, a huge
 * TXT, DNS errors, and the request forms (null sender, HELO, v4-mapped). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "policy/spf.h"

/* ---- the fake resolver ---- */

#define Z_TEMPFAIL 0xfff0 /* any query of the name answers DNS_TEMPFAIL */
#define MAX_RRS 64
#define MAX_LOG 128
#define MAX_STEPS 200

struct zrr {
  const char *name;
  uint16_t type;
  const char *data; /* A/AAAA address, "pref host" MX, PTR or CNAME name,
                       TXT text */
  size_t len;       /* TXT: 0 for strlen(data) */
};

struct fake {
  const struct zrr *zone;
  size_t num_zone;
  const struct zrr *extra; /* per case, searched first */
  size_t num_extra;
  struct dns_rr rrs[MAX_RRS];
  char mx_names[MAX_RRS][DNS_NAME_TEXT_MAX];
  char log[MAX_LOG][DNS_NAME_TEXT_MAX + 16]; /* "name TYPE" per lookup */
  size_t num_log;
};

static const struct zrr *zentry(const struct fake *fk, size_t i) {
  return i < fk->num_extra ? &fk->extra[i] : &fk->zone[i - fk->num_extra];
}

static void rr_fill(struct fake *fk, struct dns_rr *rr, const struct zrr *z) {
  unsigned pref;
  memset(rr, 0, sizeof(*rr));
  rr->owner = z->name;
  rr->type = z->type;
  rr->rclass = DNS_CLASS_IN;
  switch (z->type) {
  case DNS_TYPE_A:
    assert_int_equal(inet_pton(AF_INET, z->data, rr->rd.a), 1);
    break;
  case DNS_TYPE_AAAA:
    assert_int_equal(inet_pton(AF_INET6, z->data, rr->rd.aaaa), 1);
    break;
  case DNS_TYPE_MX: {
    char *host = fk->mx_names[rr - fk->rrs];
    assert_int_equal(sscanf(z->data, "%u %255s", &pref, host), 2);
    rr->rd.mx.pref = (uint16_t)pref;
    rr->rd.mx.exchange = host;
    break;
  }
  case DNS_TYPE_PTR:
    rr->rd.ptr = z->data;
    break;
  case DNS_TYPE_TXT:
    rr->rd.txt.data = (const uint8_t *)z->data;
    rr->rd.txt.data_len = z->len ? z->len : strlen(z->data);
    break;
  default:
    fail_msg("zone type %u", z->type);
  }
}

/* resolve answers (name, type) from the zone, as policy/dns would. */
static void resolve(struct fake *fk, const char *name, uint16_t type,
                    struct dns_answer *a) {
  const char *cur = name;
  memset(a, 0, sizeof(*a));
  a->type = type;
  a->rrs = fk->rrs;
  for (int hops = 0; hops <= DNS_MSG_MAX_CNAME; hops++) {
    const char *alias = NULL;
    int exists = 0;
    a->owner = cur;
    for (size_t i = 0; i < fk->num_extra + fk->num_zone; i++) {
      const struct zrr *z = zentry(fk, i);
      if (!dns_name_equal(z->name, cur)) {
        continue;
      }
      exists = 1;
      if (z->type == Z_TEMPFAIL) {
        a->status = DNS_TEMPFAIL;
        a->num_rrs = 0;
        a->why = "timeout";
        return;
      }
      if (z->type == type && a->num_rrs < MAX_RRS) {
        rr_fill(fk, &fk->rrs[a->num_rrs++], z);
      } else if (z->type == DNS_TYPE_CNAME) {
        alias = z->data;
      }
    }
    if (a->num_rrs > 0) {
      a->status = DNS_OK;
      return;
    }
    if (!exists || alias == NULL) {
      a->status = DNS_NOT_FOUND;
      a->nxdomain = !exists;
      a->why = exists ? "no records (NODATA)" : "no such domain (NXDOMAIN)";
      return;
    }
    cur = alias;
    a->num_cnames++;
  }
  a->status = DNS_PERMFAIL;
  a->why = "CNAME loop or chain too long";
}

struct run {
  enum spf_result result;
  char detail[256];
  char exp[SPF_MAX_EXPLANATION];
  int has_exp;
  unsigned lookups;
  char domain[DNS_NAME_TEXT_MAX];
};

static void sockaddr_of(struct sockaddr_storage *ss, const char *ip) {
  memset(ss, 0, sizeof(*ss));
  struct sockaddr_in *sin = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
  if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1) {
    sin->sin_family = AF_INET;
  } else {
    assert_int_equal(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1);
    sin6->sin6_family = AF_INET6;
  }
}

/* run_query drives one check_host() to its end against fk. */
static enum spf_result run_query(struct fake *fk, const struct spf_request *r,
                                 struct run *out) {
  struct spf_query *q = spf_new(r);
  const char *name;
  uint16_t type;
  struct dns_answer a;
  char tb[16];
  assert_non_null(q);
  fk->num_log = 0;
  for (int steps = 0;; steps++) {
    if (steps > MAX_STEPS) {
      fail_msg("no result after %d lookups", MAX_STEPS);
    }
    if (spf_step(q, &name, &type) == SPF_DONE) {
      break;
    }
    if (fk->num_log < MAX_LOG) {
      snprintf(fk->log[fk->num_log++], sizeof fk->log[0], "%s %s", name,
               dns_type_name(type, tb));
    }
    resolve(fk, name, type, &a);
    spf_answer(q, &a);
  }
  memset(out, 0, sizeof(*out));
  out->result = spf_result(q);
  snprintf(out->detail, sizeof out->detail, "%s", spf_detail(q));
  snprintf(out->domain, sizeof out->domain, "%s", spf_domain(q));
  out->lookups = spf_lookups(q);
  if (spf_explanation(q) != NULL) {
    out->has_exp = 1;
    snprintf(out->exp, sizeof out->exp, "%s", spf_explanation(q));
  }
  spf_free(q);
  return out->result;
}

static enum spf_result run(struct fake *fk, const char *ip, const char *sender,
                           const char *helo, struct run *out) {
  struct sockaddr_storage ss;
  sockaddr_of(&ss, ip);
  struct spf_request r = {.client = (const struct sockaddr *)&ss,
                          .sender = sender,
                          .helo = helo,
                          .receiver = "mx.receiver.test",
                          .now = 1700000000};
  return run_query(fk, &r, out);
}

static int logged(const struct fake *fk, const char *entry) {
  for (size_t i = 0; i < fk->num_log; i++) {
    if (strcasecmp(fk->log[i], entry) == 0) {
      return 1;
    }
  }
  return 0;
}

/* ---- the zone shared by the table cases ---- */

static const struct zrr zone[] = {
    /* qualifiers and all */
    {"pass.test", DNS_TYPE_TXT, "v=spf1 +all", 0},
    {"fail.test", DNS_TYPE_TXT, "v=spf1 -all", 0},
    {"soft.test", DNS_TYPE_TXT, "v=spf1 ~all", 0},
    {"neutral.test", DNS_TYPE_TXT, "v=spf1 ?all", 0},
    {"bare.test", DNS_TYPE_TXT, "v=spf1", 0},
    {"bareall.test", DNS_TYPE_TXT, "v=spf1 all", 0},
    {"upper.test", DNS_TYPE_TXT, "V=SPF1 -ALL", 0},
    {"spaces.test", DNS_TYPE_TXT, "v=spf1   ip4:192.0.2.3    -all   ", 0},
    /* record selection */
    {"notspf.test", DNS_TYPE_TXT, "v=spf10 +all", 0},
    {"notspf.test", DNS_TYPE_TXT, "some other text", 0},
    {"two.test", DNS_TYPE_TXT, "v=spf1 -all", 0},
    {"two.test", DNS_TYPE_TXT, "v=spf1 +all", 0},
    {"onlya.test", DNS_TYPE_A, "192.0.2.3", 0},
    {"alias.test", DNS_TYPE_CNAME, "pass.test", 0},
    {"tempfail.test", Z_TEMPFAIL, NULL, 0},
    {"withother.test", DNS_TYPE_TXT, "google-site-verification=abc", 0},
    {"withother.test", DNS_TYPE_TXT, "v=spf1 ip4:192.0.2.0/24 -all", 0},
    /* ip4, ip6 */
    {"ip4.test", DNS_TYPE_TXT, "v=spf1 ip4:192.0.2.0/24 -all", 0},
    {"ip4host.test", DNS_TYPE_TXT, "v=spf1 ip4:192.0.2.3 -all", 0},
    {"ip4zero.test", DNS_TYPE_TXT, "v=spf1 ip4:10.0.0.0/0 -all", 0},
    {"ip6.test", DNS_TYPE_TXT, "v=spf1 ip6:2001:db8::/32 -all", 0},
    {"ip6mapped.test", DNS_TYPE_TXT, "v=spf1 ip6:::ffff:192.0.2.3 -all", 0},
    /* a */
    {"a.test", DNS_TYPE_TXT, "v=spf1 a -all", 0},
    {"a.test", DNS_TYPE_A, "192.0.2.3", 0},
    {"a.test", DNS_TYPE_AAAA, "2001:db8::cb01", 0},
    {"acidr.test", DNS_TYPE_TXT, "v=spf1 a:hosts.acidr.test/24//64 -all", 0},
    {"hosts.acidr.test", DNS_TYPE_A, "192.0.2.200", 0},
    {"hosts.acidr.test", DNS_TYPE_AAAA, "2001:db8::1:2", 0},
    {"a6only.test", DNS_TYPE_TXT, "v=spf1 a//0 -all", 0},
    {"a6only.test", DNS_TYPE_AAAA, "2001:db8::9", 0},
    {"ainvalid.test", DNS_TYPE_TXT, "v=spf1 a:%{l}..invalid.test ?all", 0},
    /* mx */
    {"mx.test", DNS_TYPE_TXT, "v=spf1 mx -all", 0},
    {"mx.test", DNS_TYPE_MX, "10 mx1.mx.test", 0},
    {"mx.test", DNS_TYPE_MX, "20 mx2.mx.test", 0},
    {"mx1.mx.test", DNS_TYPE_A, "198.51.100.1", 0},
    {"mx2.mx.test", DNS_TYPE_A, "192.0.2.3", 0},
    {"mx2.mx.test", DNS_TYPE_AAAA, "2001:db8::cb01", 0},
    {"mx6.test", DNS_TYPE_TXT, "v=spf1 mx:mx.test//64 -all", 0},
    {"mxnull.test", DNS_TYPE_TXT, "v=spf1 mx ?all", 0},
    {"mxnull.test", DNS_TYPE_MX, "0 .", 0},
    {"mxtemp.test", DNS_TYPE_TXT, "v=spf1 mx -all", 0},
    {"mxtemp.test", DNS_TYPE_MX, "10 tempfail.test", 0},
    /* ptr */
    {"ptr.test", DNS_TYPE_TXT, "v=spf1 ptr -all", 0},
    {"ptrother.test", DNS_TYPE_TXT, "v=spf1 ptr:elsewhere.test -all", 0},
    {"3.2.0.192.in-addr.arpa", DNS_TYPE_PTR, "mail.ptr.test", 0},
    {"3.2.0.192.in-addr.arpa", DNS_TYPE_PTR, "liar.ptrother.test", 0},
    {"mail.ptr.test", DNS_TYPE_A, "192.0.2.3", 0},
    {"liar.ptrother.test", DNS_TYPE_A, "192.0.2.99", 0},
    {"1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
     DNS_TYPE_PTR, "v6.ptr.test.", 0},
    {"v6.ptr.test", DNS_TYPE_AAAA, "2001:db8::cb01", 0},
    {"9.2.0.192.in-addr.arpa", Z_TEMPFAIL, NULL, 0},
    /* exists */
    {"exists.test", DNS_TYPE_TXT, "v=spf1 exists:%{ir}.bl.exists.test -all", 0},
    {"3.2.0.192.bl.exists.test", DNS_TYPE_A, "127.0.0.2", 0},
    {"1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl."
     "exists.test",
     DNS_TYPE_A, "127.0.0.2", 0},
    /* include: the §5.2 table */
    {"inc-pass.test", DNS_TYPE_TXT, "v=spf1 include:pass.test -all", 0},
    {"inc-fail.test", DNS_TYPE_TXT, "v=spf1 include:fail.test ~all", 0},
    {"inc-soft.test", DNS_TYPE_TXT, "v=spf1 include:soft.test -all", 0},
    {"inc-neutral.test", DNS_TYPE_TXT, "v=spf1 include:neutral.test -all", 0},
    {"inc-temp.test", DNS_TYPE_TXT, "v=spf1 include:tempfail.test +all", 0},
    {"inc-perm.test", DNS_TYPE_TXT, "v=spf1 include:two.test +all", 0},
    {"inc-none.test", DNS_TYPE_TXT, "v=spf1 include:nowhere.test +all", 0},
    {"inc-minus.test", DNS_TYPE_TXT, "v=spf1 -include:pass.test +all", 0},
    /* redirect */
    {"redir.test", DNS_TYPE_TXT, "v=spf1 redirect=fail.test", 0},
    {"redir-none.test", DNS_TYPE_TXT, "v=spf1 redirect=nowhere.test", 0},
    {"redir-late.test", DNS_TYPE_TXT, "v=spf1 +all redirect=fail.test", 0},
    {"redir-d.test", DNS_TYPE_TXT, "v=spf1 redirect=target.%{d}", 0},
    {"target.redir-d.test", DNS_TYPE_TXT, "v=spf1 a -all", 0},
    {"target.redir-d.test", DNS_TYPE_A, "192.0.2.3", 0},
    {"redir-exp.test", DNS_TYPE_TXT, "v=spf1 exp=no.exp.test redirect=exp.test",
     0},
    /* exp */
    {"exp.test", DNS_TYPE_TXT, "v=spf1 -all exp=why.exp.test", 0},
    {"why.exp.test", DNS_TYPE_TXT,
     "%{i} is not one of %{d}'s designated mail servers.", 0},
    {"no.exp.test", DNS_TYPE_TXT, "not this one", 0},
    {"exp-crt.test", DNS_TYPE_TXT, "v=spf1 -all exp=crt.exp.test", 0},
    {"crt.exp.test", DNS_TYPE_TXT, "c=%{c} r=%{r} t=%{t} 100%% %_%-", 0},
    {"exp-pass.test", DNS_TYPE_TXT, "v=spf1 +all exp=why.exp.test", 0},
    {"exp-temp.test", DNS_TYPE_TXT, "v=spf1 -all exp=tempfail.test", 0},
    {"exp-two.test", DNS_TYPE_TXT, "v=spf1 -all exp=two.exp.test", 0},
    {"two.exp.test", DNS_TYPE_TXT, "one", 0},
    {"two.exp.test", DNS_TYPE_TXT, "two", 0},
    {"exp-bad.test", DNS_TYPE_TXT, "v=spf1 -all exp=bad.exp.test", 0},
    {"bad.exp.test", DNS_TYPE_TXT, "the %{x} files", 0},
    {"exp-url.test", DNS_TYPE_TXT, "v=spf1 -all exp=url.exp.test", 0},
    {"url.exp.test", DNS_TYPE_TXT, "see http://why.test/?l=%{L}&s=%{S}", 0},
    {"exp-p.test", DNS_TYPE_TXT, "v=spf1 -all exp=p.exp.test", 0},
    {"p.exp.test", DNS_TYPE_TXT, "connect from %{p}", 0},
    {"exp-nx.test", DNS_TYPE_TXT,
     "v=spf1 a:nx1.test a:nx2.test exp=nx3.test -all", 0},
    /* modifiers and syntax */
    {"unknown-mod.test", DNS_TYPE_TXT, "v=spf1 foo=bar moo.cow-x_y=%{d} -all",
     0},
    {"unknown-mech.test", DNS_TYPE_TXT, "v=spf1 +all foo:bar", 0},
    {"exp-twice.test", DNS_TYPE_TXT,
     "v=spf1 -all exp=why.exp.test exp=why.exp.test", 0},
    {"redir-twice.test", DNS_TYPE_TXT,
     "v=spf1 redirect=fail.test redirect=pass.test", 0},
    {"bad-ip4.test", DNS_TYPE_TXT, "v=spf1 +all ip4:192.0.2", 0},
    {"bad-cidr.test", DNS_TYPE_TXT, "v=spf1 +all ip4:192.0.2.0/33", 0},
    {"bad-top.test", DNS_TYPE_TXT, "v=spf1 a:example.123 +all", 0},
    {"bad-macro.test", DNS_TYPE_TXT, "v=spf1 exists:%(ir).bl.test +all", 0},
    {"bad-crt.test", DNS_TYPE_TXT, "v=spf1 exists:%{c}.bl.test +all", 0},
    {"bad-ctrl.test", DNS_TYPE_TXT, "v=spf1 a:ctrl.test\rptr +all", 0},
    /* limits */
    {"void2.test", DNS_TYPE_TXT, "v=spf1 a:nx1.test mx:onlya.test ?all", 0},
    {"void3.test", DNS_TYPE_TXT,
     "v=spf1 a:nx1.test mx:onlya.test exists:nx3.test +all", 0},
    {"loop.test", DNS_TYPE_TXT, "v=spf1 include:loop.test -all", 0},
    {"redir-loop.test", DNS_TYPE_TXT, "v=spf1 redirect=redir-loop.test", 0},
    {"mutual1.test", DNS_TYPE_TXT, "v=spf1 include:mutual2.test", 0},
    {"mutual2.test", DNS_TYPE_TXT, "v=spf1 include:mutual1.test", 0},
    {"mx10.test", DNS_TYPE_TXT, "v=spf1 mx -all", 0},
    {"mx11.test", DNS_TYPE_TXT, "v=spf1 mx +all", 0},
    {"ptr11.test", DNS_TYPE_TXT, "v=spf1 ptr ?all", 0},
    {"11.2.0.192.in-addr.arpa", DNS_TYPE_PTR, "h1.ptr11.test", 0},
    {"11.2.0.192.in-addr.arpa", DNS_TYPE_PTR, "h2.ptr11.test", 0},
    {"11.2.0.192.in-addr.arpa", DNS_TYPE_PTR, "h3.ptr11.test", 0},
    {"11.2.0.192.in-addr.arpa", DNS_TYPE_PTR, "h4.ptr11.test", 0},
    {"11.2.0.192.in-addr.arpa", DNS_TYPE_PTR, "h5.ptr11.test", 0},
    {"11.2.0.192.in-addr.arpa", DNS_TYPE_PTR, "h6.ptr11.test", 0},
    {"11.2.0.192.in-addr.arpa", DNS_TYPE_PTR, "h7.ptr11.test", 0},
    {"11.2.0.192.in-addr.arpa", DNS_TYPE_PTR, "h8.ptr11.test", 0},
    {"11.2.0.192.in-addr.arpa", DNS_TYPE_PTR, "h9.ptr11.test", 0},
    {"11.2.0.192.in-addr.arpa", DNS_TYPE_PTR, "h10.ptr11.test", 0},
    {"11.2.0.192.in-addr.arpa", DNS_TYPE_PTR, "h11.ptr11.test", 0},
    {"h11.ptr11.test", DNS_TYPE_A, "192.0.2.11", 0},
    {"h10.ptr11.test", DNS_TYPE_A, "192.0.2.111", 0},
};

static void mx_zone(struct zrr *z, char names[][32], const char *domain,
                    int n) {
  for (int i = 0; i < n; i++) {
    snprintf(names[i], 32, "%d mx%d.%s", i, i, domain);
    z[i] = (struct zrr){domain, DNS_TYPE_MX, names[i], 0};
  }
}

static void fake_init(struct fake *fk) {
  memset(fk, 0, sizeof(*fk));
  fk->zone = zone;
  fk->num_zone = sizeof(zone) / sizeof(zone[0]);
}

/* ---- table cases ---- */

struct tcase {
  const char *label;
  const char *ip;
  const char *sender;
  enum spf_result want;
  const char *want_exp; /* NULL: none */
};

static void run_table(const struct tcase *cases, size_t n,
                      const struct zrr *extra, size_t num_extra) {
  struct fake *fk = malloc(sizeof(*fk));
  assert_non_null(fk);
  fake_init(fk);
  fk->extra = extra;
  fk->num_extra = num_extra;
  for (size_t i = 0; i < n; i++) {
    const struct tcase *c = &cases[i];
    struct run r;
    run(fk, c->ip, c->sender, "helo.test", &r);
    if (r.result != c->want) {
      fail_msg("%s: got %s (%s), want %s", c->label, spf_result_name(r.result),
               r.detail, spf_result_name(c->want));
    }
    if ((c->want_exp == NULL) != !r.has_exp ||
        (c->want_exp != NULL && strcmp(c->want_exp, r.exp) != 0)) {
      fail_msg("%s: explanation got \"%s\", want \"%s\"", c->label,
               r.has_exp ? r.exp : "(none)",
               c->want_exp ? c->want_exp : "(none)");
    }
  }
  free(fk);
}

#define V4 "192.0.2.3"
#define V6 "2001:db8::cb01"
#define OTHER4 "198.51.100.7"

static void test_all_and_qualifiers(void **state) {
  (void)state;
  static const struct tcase cases[] = {
      {"+all", V4, "a@pass.test", SPF_PASS, NULL},
      {"-all", V4, "a@fail.test", SPF_FAIL, NULL},
      {"~all", V4, "a@soft.test", SPF_SOFTFAIL, NULL},
      {"?all", V4, "a@neutral.test", SPF_NEUTRAL, NULL},
      {"no term: neutral (§4.7)", V4, "a@bare.test", SPF_NEUTRAL, NULL},
      {"all without qualifier", V4, "a@bareall.test", SPF_PASS, NULL},
      {"names any case", V4, "a@upper.test", SPF_FAIL, NULL},
      {"many spaces", V4, "a@spaces.test", SPF_PASS, NULL},
      {"no SPF record", V4, "a@notspf.test", SPF_NONE, NULL},
      {"NXDOMAIN", V4, "a@nowhere.test", SPF_NONE, NULL},
      {"NODATA", V4, "a@onlya.test", SPF_NONE, NULL},
      {"two records", V4, "a@two.test", SPF_PERMERROR, NULL},
      {"via CNAME", V4, "a@alias.test", SPF_PASS, NULL},
      {"TXT TEMPFAIL", V4, "a@tempfail.test", SPF_TEMPERROR, NULL},
      {"other TXT ignored", V4, "a@withother.test", SPF_PASS, NULL},
  };
  run_table(cases, sizeof(cases) / sizeof(cases[0]), NULL, 0);
}

static void test_ip_mechanisms(void **state) {
  (void)state;
  static const struct tcase cases[] = {
      {"ip4 in /24", V4, "a@ip4.test", SPF_PASS, NULL},
      {"ip4 outside", OTHER4, "a@ip4.test", SPF_FAIL, NULL},
      {"ip4 /32 default", V4, "a@ip4host.test", SPF_PASS, NULL},
      {"ip4 /32 other", "192.0.2.4", "a@ip4host.test", SPF_FAIL, NULL},
      {"ip4 /0", OTHER4, "a@ip4zero.test", SPF_PASS, NULL},
      {"ip4 /0, IPv6 client", V6, "a@ip4zero.test", SPF_FAIL, NULL},
      {"ip6 in /32", V6, "a@ip6.test", SPF_PASS, NULL},
      {"ip6 outside", "2001:db9::1", "a@ip6.test", SPF_FAIL, NULL},
      {"ip6, IPv4 client", V4, "a@ip6.test", SPF_FAIL, NULL},
      {"v4-mapped is IPv4", "::ffff:192.0.2.3", "a@ip4host.test", SPF_PASS,
       NULL},
      {"v4-mapped not ip6", "::ffff:192.0.2.3", "a@ip6mapped.test", SPF_FAIL,
       NULL},
  };
  run_table(cases, sizeof(cases) / sizeof(cases[0]), NULL, 0);
}

static void test_a_mx_ptr_exists(void **state) {
  (void)state;
  static const struct tcase cases[] = {
      {"a v4", V4, "a@a.test", SPF_PASS, NULL},
      {"a v6 (AAAA)", V6, "a@a.test", SPF_PASS, NULL},
      {"a miss", OTHER4, "a@a.test", SPF_FAIL, NULL},
      {"a:host/24", "192.0.2.1", "a@acidr.test", SPF_PASS, NULL},
      {"a:host//64", "2001:db8::ffff", "a@acidr.test", SPF_PASS, NULL},
      {"a:host//64 miss", "2001:db8:1::1", "a@acidr.test", SPF_FAIL, NULL},
      {"a//0, v6", "2001:db8:ffff::1", "a@a6only.test", SPF_PASS, NULL},
      {"a//0, v4 client: A is NODATA", V4, "a@a6only.test", SPF_FAIL, NULL},
      {"a invalid target: no match", V4, "a@ainvalid.test", SPF_NEUTRAL, NULL},
      {"mx second host", V4, "a@mx.test", SPF_PASS, NULL},
      {"mx first host", "198.51.100.1", "a@mx.test", SPF_PASS, NULL},
      {"mx miss", OTHER4, "a@mx.test", SPF_FAIL, NULL},
      {"mx//64", "2001:db8::1", "a@mx6.test", SPF_PASS, NULL},
      {"mx null MX", V4, "a@mxnull.test", SPF_NEUTRAL, NULL},
      {"mx host TEMPFAIL", V4, "a@mxtemp.test", SPF_TEMPERROR, NULL},
      {"ptr validated", V4, "a@ptr.test", SPF_PASS, NULL},
      {"ptr not validated", V4, "a@ptrother.test", SPF_FAIL, NULL},
      {"ptr v6 (trailing dot)", V6, "a@ptr.test", SPF_PASS, NULL},
      {"ptr no PTR", OTHER4, "a@ptr.test", SPF_FAIL, NULL},
      {"ptr PTR TEMPFAIL: no match", "192.0.2.9", "a@ptr.test", SPF_FAIL, NULL},
      {"exists v4", V4, "a@exists.test", SPF_PASS, NULL},
      {"exists v6 (still A)", V6, "a@exists.test", SPF_PASS, NULL},
      {"exists miss", OTHER4, "a@exists.test", SPF_FAIL, NULL},
  };
  run_table(cases, sizeof(cases) / sizeof(cases[0]), NULL, 0);
}

static void test_include_redirect(void **state) {
  (void)state;
  static const struct tcase cases[] = {
      {"include pass: match", V4, "a@inc-pass.test", SPF_PASS, NULL},
      {"include fail: no match", V4, "a@inc-fail.test", SPF_SOFTFAIL, NULL},
      {"include softfail: no match", V4, "a@inc-soft.test", SPF_FAIL, NULL},
      {"include neutral: no match", V4, "a@inc-neutral.test", SPF_FAIL, NULL},
      {"include temperror", V4, "a@inc-temp.test", SPF_TEMPERROR, NULL},
      {"include permerror", V4, "a@inc-perm.test", SPF_PERMERROR, NULL},
      {"include none: permerror", V4, "a@inc-none.test", SPF_PERMERROR, NULL},
      {"-include matched", V4, "a@inc-minus.test", SPF_FAIL, NULL},
      {"redirect", V4, "a@redir.test", SPF_FAIL, NULL},
      {"redirect to none", V4, "a@redir-none.test", SPF_PERMERROR, NULL},
      {"redirect after a match: unused", V4, "a@redir-late.test", SPF_PASS,
       NULL},
      {"redirect: %{d} and a use the target", V4, "a@redir-d.test", SPF_PASS,
       NULL},
      {"redirect: the target's exp", V4, "a@redir-exp.test", SPF_FAIL,
       "192.0.2.3 is not one of exp.test's designated mail servers."},
  };
  run_table(cases, sizeof(cases) / sizeof(cases[0]), NULL, 0);
}

static void test_exp(void **state) {
  (void)state;
  static const struct tcase cases[] = {
      {"exp", V4, "strong-bad@exp.test", SPF_FAIL,
       "192.0.2.3 is not one of exp.test's designated mail servers."},
      {"exp c r t and escapes", V4, "a@exp-crt.test", SPF_FAIL,
       "c=192.0.2.3 r=mx.receiver.test t=1700000000 100%  %20"},
      {"exp c for IPv6", V6, "a@exp-crt.test", SPF_FAIL,
       "c=2001:db8::cb01 r=mx.receiver.test t=1700000000 100%  %20"},
      {"exp only on fail", V4, "a@exp-pass.test", SPF_PASS, NULL},
      {"exp TEMPFAIL: none", V4, "a@exp-temp.test", SPF_FAIL, NULL},
      {"exp two TXT: none", V4, "a@exp-two.test", SPF_FAIL, NULL},
      {"exp bad macro: none", V4, "a@exp-bad.test", SPF_FAIL, NULL},
      {"exp URL escapes", V4, "~jack&jill=up-a_b3.c@exp-url.test", SPF_FAIL,
       "see http://why.test/?l=~jack%26jill%3Dup-a_b3.c&s=~jack%26jill%3Dup-"
       "a_b3.c%40exp-url.test"},
      {"exp %{p} validated", V4, "a@exp-p.test", SPF_FAIL,
       "connect from mail.ptr.test"},
      {"exp %{p} none validated", OTHER4, "a@exp-p.test", SPF_FAIL,
       "connect from unknown"},
      {"exp NXDOMAIN is no void lookup", V4, "a@exp-nx.test", SPF_FAIL, NULL},
      {"exp= twice", V4, "a@exp-twice.test", SPF_PERMERROR, NULL},
  };
  run_table(cases, sizeof(cases) / sizeof(cases[0]), NULL, 0);
}

static void test_syntax(void **state) {
  (void)state;
  static const struct tcase cases[] = {
      {"unknown modifiers ignored", V4, "a@unknown-mod.test", SPF_FAIL, NULL},
      {"unknown mechanism after a match", V4, "a@unknown-mech.test",
       SPF_PERMERROR, NULL},
      {"redirect= twice", V4, "a@redir-twice.test", SPF_PERMERROR, NULL},
      {"short ip4", V4, "a@bad-ip4.test", SPF_PERMERROR, NULL},
      {"ip4 /33", V4, "a@bad-cidr.test", SPF_PERMERROR, NULL},
      {"numeric top label", V4, "a@bad-top.test", SPF_PERMERROR, NULL},
      {"%(", V4, "a@bad-macro.test", SPF_PERMERROR, NULL},
      {"%{c} outside exp", V4, "a@bad-crt.test", SPF_PERMERROR, NULL},
      {"CR inside a term", V4, "a@bad-ctrl.test", SPF_PERMERROR, NULL},
  };
  run_table(cases, sizeof(cases) / sizeof(cases[0]), NULL, 0);
}

/* spf_record_check on record texts alone. */
static void test_record_check(void **state) {
  (void)state;
  static const struct {
    const char *rec;
    int ok;
  } cases[] = {
      {"v=spf1", 1},
      {"v=spf1 -all", 1},
      {"V=SpF1 ~all ", 1},
      {"v=spf1 a mx ptr a:x.test/24 mx:x.test//64 a/24//128 ptr:x.test", 1},
      {"v=spf1 include:_spf.example.com exists:%{ir}.%{v}._spf.%{d2}", 1},
      {"v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 ip6:::1.2.3.4/0", 1},
      {"v=spf1 redirect=_spf.%{d} exp=explain.%{d}", 1},
      {"v=spf1 redirect=%{d}.d.spf.example.com.", 1},
      {"v=spf1 exp=explain.%{d}.", 0}, /* domain-end after a macro */
      {"v=spf1 moo.cow-far_out=man:dog/cat -all", 1},
      {"v=spf1 a:foo:bar/baz.example.com", 1},
      {"v=spf1 a:macro%%percent%_%_space%-url-space.example.com", 1},
      {"v=spf1 a:example.xn--zckzah", 1},
      {"v=spf1 exists:%{l2r+-}.%{d}", 1},
      {"v=spf10", 0},
      {"spf1 -all", 0},
      {"v=spf1 -all.", 0},
      {"v=spf1 -all:foo", 0},
      {"v=spf1 all/8", 0},
      {"v=spf1 ptr/0", 0},
      {"v=spf1 ptr:", 0},
      {"v=spf1 a:", 0},
      {"v=spf1 include", 0},
      {"v=spf1 include:x.test/24", 0},
      {"v=spf1 exists:x.test/24", 0},
      {"v=spf1 a:museum", 0},
      {"v=spf1 a:museum.", 0},
      {"v=spf1 a:example.-com", 0},
      {"v=spf1 a:111.222.33.44", 0},
      {"v=spf1 a:example.com:8080", 0},
      {"v=spf1 a/24/64", 0},
      {"v=spf1 a//129", 0},
      {"v=spf1 a/33", 0},
      {"v=spf1 ip4:1.2.3.4/032", 0},
      {"v=spf1 ip4:1.2.3.04", 0},
      {"v=spf1 ip4:1.2.3.4//32", 0},
      {"v=spf1 ip4:1.2.3.4:8080", 0},
      {"v=spf1 ip4", 0},
      {"v=spf1 ip6::CAFE::BABE", 0},
      {"v=spf1 ip6:::1/129", 0},
      {"v=spf1 redirect:x.test", 0},
      {"v=spf1 redirect=", 0},
      {"v=spf1 exp=", 0},
      {"v=spf1 exp=-all", 0},
      {"v=spf1 1up=foo", 0},
      {"v=spf1 =all", 0},
      {"v=spf1 -foo=bar", 0},
      {"v=spf1 foo=%abc", 0},
      {"v=spf1 exists:%{d0}.x.test", 0},
      {"v=spf1 exists:%{a}.x.test", 0},
      {"v=spf1 exists:%{r}.x.test", 0},
      {"v=spf1 exists:%{d", 0},
      {"v=spf1 exists:x.test%", 0},
      {"v=spf1 a:%{d}com", 0},
      {"v=spf1 exp=a.test exp=b.test", 0},
      {"v=spf1 \x80"
       "a -all",
       0},
      {"v=spf1 a:ctrl.test\tptr", 0},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char err[128] = "";
    int rc =
        spf_record_check(cases[i].rec, strlen(cases[i].rec), err, sizeof err);
    if ((rc == 0) != cases[i].ok) {
      fail_msg("\"%s\": got %s (%s), want %s", cases[i].rec,
               rc == 0 ? "valid" : "invalid", err,
               cases[i].ok ? "valid" : "invalid");
    }
    if (rc != 0 && err[0] == '\0') {
      fail_msg("\"%s\": no reason", cases[i].rec);
    }
  }
  /* A NUL octet is no visible character (and the length counts). */
  assert_int_equal(spf_record_check("v=spf1 a:x.test\0", 16, NULL, 0), -1);
}

/* ---- macros: RFC 7208 §7.4, verbatim ---- */

/* macro_query returns the name the record "v=spf1 exists:<macro> -all"
 * makes check_host() look up for sender at ip. */
static void macro_query(const char *ip, const char *sender, const char *macro,
                        char *out, size_t out_len) {
  struct fake *fk = malloc(sizeof(*fk));
  char rec[512];
  struct run r;
  assert_non_null(fk);
  fake_init(fk);
  snprintf(rec, sizeof rec, "v=spf1 exists:%s -all", macro);
  const char *at = strrchr(sender, '@');
  struct zrr extra = {at + 1, DNS_TYPE_TXT, rec, 0};
  fk->extra = &extra;
  fk->num_extra = 1;
  run(fk, ip, sender, "mx.example.org", &r);
  assert_true(fk->num_log >= 2);
  snprintf(out, out_len, "%s", fk->log[1]);
  free(fk);
}

static void test_macros_rfc(void **state) {
  (void)state;
  static const struct {
    const char *ip, *macro, *want;
  } cases[] = {
      {"192.0.2.3", "%{s}", "strong-bad@email.example.com"},
      {"192.0.2.3", "%{o}", "email.example.com"},
      {"192.0.2.3", "%{d}", "email.example.com"},
      {"192.0.2.3", "%{d4}", "email.example.com"},
      {"192.0.2.3", "%{d3}", "email.example.com"},
      {"192.0.2.3", "%{d2}", "example.com"},
      {"192.0.2.3", "%{d1}", "com"},
      {"192.0.2.3", "%{dr}", "com.example.email"},
      {"192.0.2.3", "%{d2r}", "example.email"},
      {"192.0.2.3", "%{l}", "strong-bad"},
      {"192.0.2.3", "%{l-}", "strong.bad"},
      {"192.0.2.3", "%{lr}", "strong-bad"},
      {"192.0.2.3", "%{lr-}", "bad.strong"},
      {"192.0.2.3", "%{l1r-}", "strong"},
      {"192.0.2.3", "%{ir}.%{v}._spf.%{d2}",
       "3.2.0.192.in-addr._spf.example.com"},
      {"192.0.2.3", "%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"},
      {"192.0.2.3", "%{lr-}.lp.%{ir}.%{v}._spf.%{d2}",
       "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"},
      {"192.0.2.3", "%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}",
       "3.2.0.192.in-addr.strong.lp._spf.example.com"},
      {"192.0.2.3", "%{d2}.trusted-domains.example.net",
       "example.com.trusted-domains.example.net"},
      {"2001:db8::cb01", "%{ir}.%{v}._spf.%{d2}",
       "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6."
       "_spf.example.com"},
      /* beyond §7.4 */
      {"192.0.2.3", "%{i}", "192.0.2.3"},
      {"2001:db8::cb01", "%{i}",
       "2.0.0.1.0.d.b.8.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.c.b.0.1"},
      {"192.0.2.3", "%{h}", "mx.example.org"},
      {"192.0.2.3", "%{v}.x", "in-addr.x"},
      {"192.0.2.3", "%{d9}", "email.example.com"},
      {"192.0.2.3", "%{l2r-}.x", "bad.strong.x"},
      {"192.0.2.3", "%{S}", "strong-bad%40email.example.com"},
      {"192.0.2.3", "a%%b%_c%-d.%{d}", "a%b c%20d.email.example.com"},
      {"192.0.2.3", "%{d2=}", "email.example.com"},
      {"::ffff:192.0.2.3", "%{ir}.%{v}", "3.2.0.192.in-addr"},
  };
  char got[DNS_NAME_TEXT_MAX + 16], want[DNS_NAME_TEXT_MAX + 16];
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    macro_query(cases[i].ip, "strong-bad@email.example.com", cases[i].macro,
                got, sizeof got);
    snprintf(want, sizeof want, "%s A", cases[i].want);
    if (strcmp(got, want) != 0) {
      fail_msg("%s for %s: got \"%s\", want \"%s\"", cases[i].macro,
               cases[i].ip, got, want);
    }
  }
}

/* Splitting on several delimiters, reversing, keeping parts. */
static void test_macros_transform(void **state) {
  (void)state;
  char got[DNS_NAME_TEXT_MAX + 16];
  macro_query("1.2.3.4", "philip-gladstone-test@e11.example.com",
              "%{i}.%{l2r-}.user.%{d2}", got, sizeof got);
  assert_string_equal(got, "1.2.3.4.gladstone.philip.user.example.com A");
  macro_query("1.2.3.4", "foo-bar+zip+quux@e12.example.com",
              "%{l2r+-}.user.%{d2}", got, sizeof got);
  assert_string_equal(got, "bar.foo.user.example.com A");
  /* A null sender: postmaster@helo; an empty local part: postmaster. */
  macro_query("1.2.3.4", "@email.example.com", "%{l}.%{o}", got, sizeof got);
  assert_string_equal(got, "postmaster.email.example.com A");
}

/* §7.3: an expansion over 253 octets loses labels on the left. */
static void test_macros_truncate(void **state) {
  (void)state;
  char got[DNS_NAME_TEXT_MAX + 16], macro[256], want[512];
  snprintf(macro, sizeof macro, "x.%s.example.com",
           "%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}");
  macro_query("1.2.3.4", "someone@long.example.com", macro, got, sizeof got);
  /* 2 + 12 * 16 + 11 + 12 = 217 octets: kept whole */
  snprintf(want, sizeof want, "x.%s.example.com A",
           "long.example.com.long.example.com.long.example.com."
           "long.example.com.long.example.com.long.example.com."
           "long.example.com.long.example.com.long.example.com."
           "long.example.com.long.example.com.long.example.com");
  assert_string_equal(got, want);
  snprintf(macro, sizeof macro, "x.y.%s.%s.example.com",
           "%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}",
           "%{o}");
  macro_query("1.2.3.4", "someone@long.example.com", macro, got, sizeof got);
  /* 13 %{o}s: 4 + 13 * 16 + 12 + 12 = 236: kept whole as well */
  assert_int_equal(strlen(got) - 2, 236);
  snprintf(macro, sizeof macro, "x.y.%s.%s.example.com",
           "%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}",
           "%{o}.%{o}.%{o}");
  macro_query("1.2.3.4", "someone@long.example.com", macro, got, sizeof got);
  /* 15 %{o}s: 4 + 254 + 12 = 270 octets: "x.", "y.", "long." and
   * "example." go, 253 are left */
  assert_int_equal(strlen(got) - 2, 253);
  assert_memory_equal(got, "com.long.example.com.", 21);
}

/* ---- limits ---- */

static void test_limit_terms(void **state) {
  (void)state;
  struct fake *fk = malloc(sizeof(*fk));
  static char recs[3][512];
  struct zrr extra[3] = {
      {"ten.test", DNS_TYPE_TXT, recs[0], 0},
      {"eleven.test", DNS_TYPE_TXT, recs[1], 0},
      {"nested.test", DNS_TYPE_TXT, recs[2], 0},
  };
  struct run r;
  assert_non_null(fk);
  snprintf(recs[0], sizeof recs[0], "v=spf1");
  snprintf(recs[1], sizeof recs[1], "v=spf1");
  for (int i = 1; i <= 11; i++) {
    char term[32];
    snprintf(term, sizeof term, " include:neutral%d.test", i);
    if (i <= 10) {
      strcat(recs[0], term);
    }
    strcat(recs[1], term);
  }
  strcat(recs[0], " ip4:192.0.2.3 -all");
  strcat(recs[1], " ip4:192.0.2.3 -all");
  /* nine a terms, then an include whose record holds one more: 11 */
  snprintf(recs[2], sizeof recs[2],
           "v=spf1 a a a a a a a a a include:inc-pass.test -all");
  static struct zrr more[15];
  static char names[11][32];
  size_t n = 0;
  for (int i = 1; i <= 11; i++) {
    snprintf(names[i - 1], sizeof names[0], "neutral%d.test", i);
    more[n++] = (struct zrr){names[i - 1], DNS_TYPE_TXT, "v=spf1 ?all", 0};
  }
  more[n++] = extra[0];
  more[n++] = extra[1];
  more[n++] = extra[2];
  more[n++] = (struct zrr){"nested.test", DNS_TYPE_A, "198.51.100.99", 0};
  fake_init(fk);
  fk->extra = more;
  fk->num_extra = n;
  assert_int_equal(run(fk, V4, "a@ten.test", "h.test", &r), SPF_PASS);
  assert_int_equal(run(fk, V4, "a@eleven.test", "h.test", &r), SPF_PERMERROR);
  assert_non_null(strstr(r.detail, "more than 10"));
  assert_true(logged(fk, "neutral10.test TXT"));
  assert_false(logged(fk, "neutral11.test TXT")); /* never asked */
  assert_int_equal(run(fk, V4, "a@nested.test", "h.test", &r), SPF_PERMERROR);
  assert_false(logged(fk, "pass.test TXT"));
  free(fk);
}

static void test_limit_loops(void **state) {
  (void)state;
  struct fake *fk = malloc(sizeof(*fk));
  struct run r;
  assert_non_null(fk);
  fake_init(fk);
  assert_int_equal(run(fk, V4, "a@loop.test", "h.test", &r), SPF_PERMERROR);
  assert_true(r.lookups <= SPF_MAX_DNS_TERMS + 1);
  assert_int_equal(run(fk, V4, "a@redir-loop.test", "h.test", &r),
                   SPF_PERMERROR);
  assert_true(r.lookups <= SPF_MAX_DNS_TERMS + 1);
  assert_int_equal(run(fk, V4, "a@mutual1.test", "h.test", &r), SPF_PERMERROR);
  assert_true(r.lookups <= SPF_MAX_DNS_TERMS + 1);
  free(fk);
}

static void test_limit_void(void **state) {
  (void)state;
  struct fake *fk = malloc(sizeof(*fk));
  struct run r;
  assert_non_null(fk);
  fake_init(fk);
  /* NXDOMAIN for a, NODATA for mx: two void lookups are allowed */
  assert_int_equal(run(fk, V4, "a@void2.test", "h.test", &r), SPF_NEUTRAL);
  assert_int_equal(run(fk, V4, "a@void3.test", "h.test", &r), SPF_PERMERROR);
  assert_non_null(strstr(r.detail, "void"));
  free(fk);
}

static void test_limit_mx_ptr(void **state) {
  (void)state;
  struct fake *fk = malloc(sizeof(*fk));
  static struct zrr extra[32];
  static char names[24][32];
  struct run r;
  assert_non_null(fk);
  mx_zone(extra, names, "mx10.test", 10);
  mx_zone(extra + 10, names + 10, "mx11.test", 11);
  extra[21] = (struct zrr){"mx9.mx10.test", DNS_TYPE_A, "192.0.2.3", 0};
  extra[22] = (struct zrr){"mx0.mx11.test", DNS_TYPE_A, "192.0.2.3", 0};
  fake_init(fk);
  fk->extra = extra;
  fk->num_extra = 23;
  /* ten MX names, the tenth matches */
  assert_int_equal(run(fk, V4, "a@mx10.test", "h.test", &r), SPF_PASS);
  /* eleven: permerror, before any address lookup */
  assert_int_equal(run(fk, V4, "a@mx11.test", "h.test", &r), SPF_PERMERROR);
  assert_false(logged(fk, "mx0.mx11.test A"));
  /* eleven PTR names: only ten are looked at; the eleventh would match */
  assert_int_equal(run(fk, "192.0.2.11", "a@ptr11.test", "h.test", &r),
                   SPF_NEUTRAL);
  assert_false(logged(fk, "h11.ptr11.test A"));
  assert_true(logged(fk, "h10.ptr11.test A"));
  free(fk);
}

/* ---- records: size, DNS errors ---- */

static void test_huge_txt(void **state) {
  (void)state;
  struct fake *fk = malloc(sizeof(*fk));
  static char big[6000], rec[SPF_MAX_RECORD + 1], over[SPF_MAX_RECORD + 64];
  struct run r;
  assert_non_null(fk);
  memset(big, 'x', sizeof big - 1);
  /* a record of 4096 octets exactly: ip4 terms, the last one matching */
  size_t n = (size_t)snprintf(rec, sizeof rec, "v=spf1");
  for (unsigned i = 0; n + 16 < SPF_MAX_RECORD - 20; i++) {
    n += (size_t)snprintf(rec + n, sizeof rec - n, " ip4:10.%u.%u.0/24",
                          i / 256, i % 256);
  }
  n += (size_t)snprintf(rec + n, sizeof rec - n, " ip4:192.0.2.3");
  while (n < SPF_MAX_RECORD - 5) {
    rec[n++] = ' ';
  }
  n += (size_t)snprintf(rec + n, sizeof rec - n, " -all");
  assert_int_equal(n, SPF_MAX_RECORD);
  memcpy(over, rec, n);
  memcpy(over + n - 5, "      -all", 10);
  struct zrr extra[] = {
      {"big.test", DNS_TYPE_TXT, big, 0},
      {"big.test", DNS_TYPE_TXT, rec, n},
      {"over.test", DNS_TYPE_TXT, over, n + 5},
  };
  fake_init(fk);
  fk->extra = extra;
  fk->num_extra = 3;
  assert_int_equal(run(fk, V4, "a@big.test", "h.test", &r), SPF_PASS);
  assert_int_equal(run(fk, OTHER4, "a@big.test", "h.test", &r), SPF_FAIL);
  assert_int_equal(run(fk, V4, "a@over.test", "h.test", &r), SPF_PERMERROR);
  assert_non_null(strstr(r.detail, "longer"));
  free(fk);
}

static void test_dns_errors(void **state) {
  (void)state;
  static const struct zrr extra[] = {
      {"t-a.test", DNS_TYPE_TXT, "v=spf1 a:tempfail.test +all", 0},
      {"t-mx.test", DNS_TYPE_TXT, "v=spf1 mx:tempfail.test +all", 0},
      {"t-exists.test", DNS_TYPE_TXT, "v=spf1 exists:tempfail.test +all", 0},
      {"t-redir.test", DNS_TYPE_TXT, "v=spf1 redirect=tempfail.test", 0},
      {"t-after.test", DNS_TYPE_TXT, "v=spf1 ip4:192.0.2.3 a:tempfail.test", 0},
      {"loop-a.test", DNS_TYPE_CNAME, "loop-b.test", 0},
      {"loop-b.test", DNS_TYPE_CNAME, "loop-a.test", 0},
      {"t-loop.test", DNS_TYPE_TXT, "v=spf1 a:loop-a.test +all", 0},
  };
  static const struct tcase cases[] = {
      {"a TEMPFAIL", V4, "a@t-a.test", SPF_TEMPERROR, NULL},
      {"mx TEMPFAIL", V4, "a@t-mx.test", SPF_TEMPERROR, NULL},
      {"exists TEMPFAIL", V4, "a@t-exists.test", SPF_TEMPERROR, NULL},
      {"redirect TEMPFAIL", V4, "a@t-redir.test", SPF_TEMPERROR, NULL},
      {"match before the error", V4, "a@t-after.test", SPF_PASS, NULL},
      {"CNAME loop", V4, "a@t-loop.test", SPF_TEMPERROR, NULL},
  };
  run_table(cases, sizeof(cases) / sizeof(cases[0]), extra,
            sizeof(extra) / sizeof(extra[0]));
}

/* ---- the request ---- */

static void test_request_forms(void **state) {
  (void)state;
  struct fake *fk = malloc(sizeof(*fk));
  struct sockaddr_storage ss;
  struct run r;
  assert_non_null(fk);
  fake_init(fk);
  /* the null sender checks postmaster@helo */
  assert_int_equal(run(fk, V4, "", "fail.test", &r), SPF_FAIL);
  assert_string_equal(r.domain, "fail.test");
  /* the HELO identity */
  sockaddr_of(&ss, V4);
  struct spf_request req = {.client = (const struct sockaddr *)&ss,
                            .sender = "someone@pass.test",
                            .helo = "Fail.Test.",
                            .check_helo = 1};
  assert_int_equal(run_query(fk, &req, &r), SPF_FAIL);
  assert_string_equal(r.domain, "fail.test");
  /* §4.3: no lookup for a domain that is no FQDN */
  static const char *bad[] = {
      "a@localhost",
      "a@[192.0.2.3]",
      "a@a..test",
      "a@.test",
      "a@test.123",
      "a@"
      "a1234567890123456789012345678901234567890123456789012345678901234"
      ".test",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    if (run(fk, V4, bad[i], "h.test", &r) != SPF_NONE || r.lookups != 0) {
      fail_msg("%s: got %s after %u lookups, want none without any", bad[i],
               spf_result_name(r.result), r.lookups);
    }
  }
  /* upper case and a trailing dot */
  assert_int_equal(run(fk, V4, "a@PASS.Test.", "h.test", &r), SPF_PASS);
  assert_string_equal(r.domain, "pass.test");
  /* no '@': the whole is the domain */
  assert_int_equal(run(fk, V4, "fail.test", "h.test", &r), SPF_FAIL);
  free(fk);
}

/* spf_step repeats the lookup out until it is answered; a stray answer
 * is ignored; details name what happened. */
static void test_api(void **state) {
  (void)state;
  struct sockaddr_storage ss;
  const char *name, *name2;
  uint16_t type, type2;
  sockaddr_of(&ss, V4);
  struct spf_request req = {.client = (const struct sockaddr *)&ss,
                            .sender = "a@ip4.test",
                            .helo = "h.test"};
  struct spf_query *q = spf_new(&req);
  assert_non_null(q);
  assert_int_equal(spf_step(q, &name, &type), SPF_NEED_DNS);
  assert_string_equal(name, "ip4.test");
  assert_int_equal(type, DNS_TYPE_TXT);
  assert_int_equal(spf_step(q, &name2, &type2), SPF_NEED_DNS);
  assert_string_equal(name2, "ip4.test");
  struct dns_rr rr = {.owner = "ip4.test", .type = DNS_TYPE_TXT};
  rr.rd.txt.data = (const uint8_t *)"v=spf1 ip4:192.0.2.0/24 -all";
  rr.rd.txt.data_len = strlen((const char *)rr.rd.txt.data);
  struct dns_answer a = {.status = DNS_OK,
                         .type = DNS_TYPE_TXT,
                         .num_rrs = 1,
                         .rrs = &rr,
                         .owner = "ip4.test"};
  spf_answer(q, &a);
  assert_int_equal(spf_step(q, &name, &type), SPF_DONE);
  spf_answer(q, &a); /* nothing out: ignored */
  assert_int_equal(spf_result(q), SPF_PASS);
  assert_string_equal(spf_detail(q), "mechanism ip4:192.0.2.0/24 matched");
  assert_null(spf_explanation(q));
  assert_int_equal(spf_lookups(q), 1);
  spf_free(q);
  assert_string_equal(spf_result_name(SPF_SOFTFAIL), "softfail");
  assert_string_equal(spf_result_name(SPF_PERMERROR), "permerror");
  spf_free(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_all_and_qualifiers),
      cmocka_unit_test(test_ip_mechanisms),
      cmocka_unit_test(test_a_mx_ptr_exists),
      cmocka_unit_test(test_include_redirect),
      cmocka_unit_test(test_exp),
      cmocka_unit_test(test_syntax),
      cmocka_unit_test(test_record_check),
      cmocka_unit_test(test_macros_rfc),
      cmocka_unit_test(test_macros_transform),
      cmocka_unit_test(test_macros_truncate),
      cmocka_unit_test(test_limit_terms),
      cmocka_unit_test(test_limit_loops),
      cmocka_unit_test(test_limit_void),
      cmocka_unit_test(test_limit_mx_ptr),
      cmocka_unit_test(test_huge_txt),
      cmocka_unit_test(test_dns_errors),
      cmocka_unit_test(test_request_forms),
      cmocka_unit_test(test_api),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
