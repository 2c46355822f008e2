/* policy/tlsrpt.c — SMTP TLS Reporting (RFC 8460): the TXT record, the
 * aggregate, the JSON report and its message; see tlsrpt.h. Parsers read
 * through a bounded span; builders write through sticky-error writers. */
#include "policy/tlsrpt.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <time.h>
#include <xxhash.h>

#include "core/span.h"
#include "policy/mta_sts.h"
#include "proto/smtp_addr.h"

/* ---- a bounded reader: core/span.h ---- */

/* span_ieq: equal to lit, ASCII case-insensitive (URI schemes). */
static int span_ieq(struct span s, const char *lit) {
  if (s.len != strlen(lit)) {
    return 0;
  }
  for (size_t i = 0; i < s.len; i++) {
    if (span_lower(s.p[i]) != (uint8_t)lit[i]) {
      return 0;
    }
  }
  return 1;
}

static int __attribute__((format(printf, 3, 4)))
fail(char *err, size_t err_len, const char *fmt, ...) {
  if (err != NULL && err_len > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
  }
  return -1;
}

/* ---- the TXT record (§3) ---- */

/* tlsrpt-ext-name = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".") */
static int is_ext_name_char(uint8_t c) {
  return span_is_alnum(c) || c == '_' || c == '-' || c == '.';
}

/* tlsrpt-ext-value = 1*(%x21-3A / %x3C / %x3E-7E) */
static int is_ext_value_char(uint8_t c) {
  return c >= 0x21 && c <= 0x7e && c != '=' && c != ';';
}

/* A tlsrpt-uri runs to the next ",", ";" or blank; "!" must be encoded. */
static int is_uri_char(uint8_t c) {
  return c >= 0x21 && c <= 0x7e && c != ',' && c != ';' && c != '!';
}

/* RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) */
static int is_scheme_char(uint8_t c) {
  return span_is_alnum(c) || c == '+' || c == '-' || c == '.';
}

/* field-delim = *WSP ";" *WSP */
static int txt_sep(struct span *s) {
  span_skip_wsp(s);
  if (!span_literal(s, ";")) {
    return 0;
  }
  span_skip_wsp(s);
  return 1;
}

int tlsrpt_txt_is_tlsrpt(const uint8_t *rec, size_t rec_len) {
  struct span s = {rec, rec_len};
  return span_literal(&s, "v=TLSRPTv1") && txt_sep(&s);
}

static int hex_value(uint8_t c) {
  if (span_is_digit(c)) {
    return c - '0';
  }
  c = span_lower(c);
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* mailto_mailbox decodes the rest of a "mailto:" URI (RFC 6068: one
 * addr-spec, percent-encoded; hfields after "?" are not ours to follow)
 * into out. 1 if it is one plain ASCII mailbox that parses as an RFC
 * 5321 path (so it can go into RCPT TO and a To: field as it is). */
static int mailto_mailbox(char *out, size_t out_len, struct span rest) {
  size_t n = 0;
  for (size_t i = 0; i < rest.len && rest.p[i] != '?'; i++) {
    int c = rest.p[i];
    if (c == '%') {
      int hi = i + 2 < rest.len ? hex_value(rest.p[i + 1]) : -1;
      int lo = hi >= 0 ? hex_value(rest.p[i + 2]) : -1;
      if (lo < 0) {
        return 0;
      }
      c = hi * 16 + lo;
      i += 2;
    }
    /* One mailbox only ("," decoded would make a list), no quoting. */
    if (c <= 0x20 || c >= 0x7f || strchr(",<>\"\\()", c) != NULL ||
        n + 1 >= out_len) {
      return 0;
    }
    out[n++] = (char)c;
  }
  out[n] = '\0';
  uint8_t path[SMTP_ADDR_MAX_PATH + 1];
  if (n == 0 || n + 2 > SMTP_ADDR_MAX_PATH) {
    return 0;
  }
  path[0] = '<';
  memcpy(path + 1, out, n);
  path[n + 1] = '>';
  struct smtp_addr_path ap;
  size_t used = 0;
  return smtp_addr_parse_path(&ap, &used, path, n + 2) == SMTP_ADDR_OK &&
         used == n + 2 && !ap.null_path && !ap.postmaster && !ap.source_route &&
         !ap.has_utf8 && ap.local_len < n;
}

/* uri_add keeps a well-formed URI (scheme ":" rest) when it is a usable
 * mailto: or an https: one; any other is counted in num_ignored. */
static int uri_add(struct tlsrpt_record *out, char *err, size_t err_len,
                   struct span u) {
  struct span rest = u;
  struct span scheme = span_take(&rest, is_scheme_char);
  if (scheme.len == 0 || !span_is_alpha(scheme.p[0]) ||
      !span_literal(&rest, ":")) {
    return fail(err, err_len, "a URI without a scheme");
  }
  if (out->num_uris >= TLSRPT_MAX_URIS || u.len > TLSRPT_MAX_URI) {
    out->num_ignored++;
    return 0;
  }
  struct tlsrpt_uri *dst = &out->uris[out->num_uris];
  if (span_ieq(scheme, "mailto") &&
      mailto_mailbox(dst->text, sizeof(dst->text), rest)) {
    dst->kind = TLSRPT_URI_MAILTO;
    out->num_uris++;
  } else if (span_ieq(scheme, "https") && rest.len > 0) {
    dst->kind = TLSRPT_URI_HTTPS;
    memcpy(dst->text, u.p, u.len);
    dst->text[u.len] = '\0';
    out->num_uris++;
  } else {
    out->num_ignored++;
  }
  return 0;
}

/* rua_list: tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri) */
static int rua_list(struct tlsrpt_record *out, char *err, size_t err_len,
                    struct span *s) {
  for (;;) {
    struct span u = span_take(s, is_uri_char);
    if (s->len > 0 && s->p[0] == '!') {
      return fail(err, err_len, "an unencoded '!' in a URI");
    }
    if (u.len == 0) {
      return fail(err, err_len, "an empty URI in rua");
    }
    if (uri_add(out, err, err_len, u) != 0) {
      return -1;
    }
    struct span save = *s;
    span_skip_wsp(s);
    if (!span_literal(s, ",")) {
      *s = save;
      return 0;
    }
    span_skip_wsp(s);
  }
}

/* txt_field reads one tlsrpt-field: rua, or an extension (checked and
 * ignored). */
static int txt_field(struct tlsrpt_record *out, int *num_rua, char *err,
                     size_t err_len, struct span *s) {
  struct span name = span_take(s, is_ext_name_char);
  if (name.len == 0 || name.len > 32 || !span_is_alnum(name.p[0]) ||
      !span_literal(s, "=")) {
    return fail(err, err_len, "malformed field (want name=value)");
  }
  if (span_eq(name, "rua")) {
    (*num_rua)++;
    return rua_list(out, err, err_len, s);
  }
  struct span value = span_take(s, is_ext_value_char);
  return value.len > 0 ? 0 : fail(err, err_len, "empty field value");
}

int tlsrpt_txt_parse(struct tlsrpt_record *out, char *err, size_t err_len,
                     const uint8_t *rec, size_t rec_len) {
  memset(out, 0, sizeof(*out));
  if (rec_len > TLSRPT_MAX_RECORD) {
    return fail(err, err_len, "record longer than %d octets",
                TLSRPT_MAX_RECORD);
  }
  struct span s = {rec, rec_len};
  if (!span_literal(&s, "v=TLSRPTv1")) {
    return fail(err, err_len, "does not begin with v=TLSRPTv1");
  }
  int num_rua = 0;
  for (;;) {
    span_skip_wsp(&s);
    if (s.len == 0) {
      break;
    }
    if (!txt_sep(&s)) {
      return fail(err, err_len, "want ';' between fields");
    }
    if (s.len == 0) {
      break; /* the optional final field-delim */
    }
    if (txt_field(out, &num_rua, err, err_len, &s) != 0) {
      return -1;
    }
  }
  if (num_rua == 0) {
    return fail(err, err_len, "no rua field");
  }
  return 0;
}

enum tlsrpt_txt tlsrpt_txt_find(struct tlsrpt_record *out, char *err,
                                size_t err_len, const struct dns_rr *rrs,
                                size_t num_rrs) {
  memset(out, 0, sizeof(*out));
  size_t num;
  const struct dns_rr *found =
      dns_msg_txt_one(rrs, num_rrs, tlsrpt_txt_is_tlsrpt, &num);
  /* §3: "If the number of resulting records is not one, or if the
   * resulting record is syntactically invalid", no TLSRPT. */
  if (num == 0) {
    fail(err, err_len, "no record begins with v=TLSRPTv1;");
    return TLSRPT_TXT_NONE;
  }
  if (num > 1) {
    fail(err, err_len, "%zu TLSRPTv1 records, want one", num);
    return TLSRPT_TXT_INVALID;
  }
  char why[TLSRPT_ERR_LEN];
  if (tlsrpt_txt_parse(out, why, sizeof(why), found->rd.txt.data,
                       found->rd.txt.data_len) != 0) {
    fail(err, err_len, "invalid TLSRPTv1 record: %s", why);
    return TLSRPT_TXT_INVALID;
  }
  return TLSRPT_TXT_FOUND;
}

/* ---- names ---- */

static const char *const result_names[TLSRPT_RESULT_COUNT] = {
    [TLSRPT_STARTTLS_NOT_SUPPORTED] = "starttls-not-supported",
    [TLSRPT_CERT_HOST_MISMATCH] = "certificate-host-mismatch",
    [TLSRPT_CERT_EXPIRED] = "certificate-expired",
    [TLSRPT_CERT_NOT_TRUSTED] = "certificate-not-trusted",
    [TLSRPT_VALIDATION_FAILURE] = "validation-failure",
    [TLSRPT_TLSA_INVALID] = "tlsa-invalid",
    [TLSRPT_DNSSEC_INVALID] = "dnssec-invalid",
    [TLSRPT_DANE_REQUIRED] = "dane-required",
    [TLSRPT_STS_POLICY_FETCH_ERROR] = "sts-policy-fetch-error",
    [TLSRPT_STS_POLICY_INVALID] = "sts-policy-invalid",
    [TLSRPT_STS_WEBPKI_INVALID] = "sts-webpki-invalid",
};

const char *tlsrpt_result_name(enum tlsrpt_result r) {
  return (unsigned)r < TLSRPT_RESULT_COUNT ? result_names[r] : "?";
}

const char *tlsrpt_policy_type_name(enum tlsrpt_policy_type t) {
  switch (t) {
  case TLSRPT_POLICY_NONE:
    return "no-policy-found";
  case TLSRPT_POLICY_STS:
    return "sts";
  case TLSRPT_POLICY_TLSA:
    return "tlsa";
  }
  return "?";
}

enum tlsrpt_result tlsrpt_classify_verify(const char *why, int dane) {
  static const char *const untrusted[] = {
      "issuer",     "self signed",      "self-signed", "not trusted",
      "untrusted",  "rejected",         "no CA file",  "unable to verify",
      "invalid CA", "signature failure"};
  if (why == NULL) {
    why = "";
  }
  if (strcasestr(why, "name mismatch") != NULL) {
    return TLSRPT_CERT_HOST_MISMATCH;
  }
  if (strcasestr(why, "expired") != NULL) {
    return TLSRPT_CERT_EXPIRED;
  }
  if (dane && strstr(why, "TLSA") != NULL) {
    return TLSRPT_TLSA_INVALID; /* §4.3.2.1: no record matched */
  }
  for (size_t i = 0; i < sizeof(untrusted) / sizeof(untrusted[0]); i++) {
    if (strcasestr(why, untrusted[i]) != NULL) {
      return TLSRPT_CERT_NOT_TRUSTED;
    }
  }
  return TLSRPT_VALIDATION_FAILURE;
}

/* ---- the aggregate ---- */

/* One failure-details row: its four strings live in one block at f[0]. */
struct agg_row {
  enum tlsrpt_result result;
  uint64_t count;
  char *f[4]; /* sending-mta-ip, receiving-mx-hostname, receiving-ip,
                 failure-reason-code ("" when unknown) */
};

/* One policy of a domain: strings and mx in one block at strs. */
struct agg_policy {
  enum tlsrpt_policy_type type;
  uint64_t hash;
  char **strs; /* num_strings policy strings, then num_mx mx hosts */
  size_t num_strings, num_mx;
  uint64_t ok, failed;
  struct agg_row *rows;
  size_t num_rows, cap_rows;
};

struct agg_domain {
  struct agg_domain *hnext;
  uint64_t hash;
  char name[TLSRPT_MAX_DOMAIN + 1];
  struct agg_policy policies[TLSRPT_MAX_POLICIES];
  size_t num_policies;
  size_t num_rows; /* over its policies */
};

struct tlsrpt_agg {
  struct tlsrpt_limits lim;
  int64_t start_s, end_s;
  struct agg_domain **buckets;
  size_t num_buckets; /* a power of two */
  struct agg_domain **order;
  size_t cap_order;
  struct tlsrpt_agg_stats st; /* st.num_domains: entries in order */
};

#define AGG_MIN_BUCKETS 64

struct tlsrpt_agg *tlsrpt_agg_new(const struct tlsrpt_limits *limits,
                                  int64_t start_s, int64_t end_s) {
  struct tlsrpt_agg *a = calloc(1, sizeof(*a));
  if (a == NULL) {
    return NULL;
  }
  a->lim = *limits;
  if (a->lim.max_domains == 0) {
    a->lim.max_domains = TLSRPT_DEFAULT_MAX_DOMAINS;
  }
  if (a->lim.max_failure_rows == 0) {
    a->lim.max_failure_rows = TLSRPT_DEFAULT_MAX_FAILURE_ROWS;
  }
  a->start_s = start_s;
  a->end_s = end_s;
  a->num_buckets = AGG_MIN_BUCKETS;
  a->buckets = calloc(a->num_buckets, sizeof(*a->buckets));
  if (a->buckets == NULL) {
    free(a);
    return NULL;
  }
  return a;
}

static void policy_clear(struct agg_policy *p) {
  for (size_t i = 0; i < p->num_rows; i++) {
    free(p->rows[i].f[0]);
  }
  free(p->rows);
  free(p->strs);
}

void tlsrpt_agg_free(struct tlsrpt_agg *a) {
  if (a == NULL) {
    return;
  }
  for (size_t i = 0; i < a->st.num_domains; i++) {
    struct agg_domain *d = a->order[i];
    for (size_t k = 0; k < d->num_policies; k++) {
      policy_clear(&d->policies[k]);
    }
    free(d);
  }
  free(a->order);
  free(a->buckets);
  free(a);
}

/* domain_key writes domain in lower case without its trailing dot. 0, or
 * -1 if it is not an LDH name (it goes into a DNS name and a Subject). */
static int domain_key(char out[TLSRPT_MAX_DOMAIN + 1], const char *domain) {
  if (!mta_sts_domain_valid(domain)) {
    return -1;
  }
  size_t n = strlen(domain);
  n -= n > 0 && domain[n - 1] == '.';
  for (size_t i = 0; i < n; i++) {
    out[i] = (char)span_lower((uint8_t)domain[i]);
  }
  out[n] = '\0';
  return 0;
}

/* agg_grow doubles the buckets once domains outnumber them twice. */
static void agg_grow(struct tlsrpt_agg *a) {
  if (a->st.num_domains < 2 * a->num_buckets) {
    return;
  }
  size_t n = a->num_buckets * 2;
  struct agg_domain **b = calloc(n, sizeof(*b));
  if (b == NULL) {
    return; /* longer chains, still correct */
  }
  for (size_t i = 0; i < a->st.num_domains; i++) {
    struct agg_domain *d = a->order[i];
    d->hnext = b[d->hash & (n - 1)];
    b[d->hash & (n - 1)] = d;
  }
  free(a->buckets);
  a->buckets = b;
  a->num_buckets = n;
}

/* domain_get finds or makes the entry of key. 0, -1 past max_domains,
 * -2 out of memory. */
static int domain_get(struct tlsrpt_agg *a, const char *key,
                      struct agg_domain **out) {
  uint64_t h = XXH3_64bits(key, strlen(key));
  for (struct agg_domain *d = a->buckets[h & (a->num_buckets - 1)]; d != NULL;
       d = d->hnext) {
    if (d->hash == h && strcmp(d->name, key) == 0) {
      *out = d;
      return 0;
    }
  }
  if (a->st.num_domains >= a->lim.max_domains) {
    return -1;
  }
  if (a->st.num_domains == a->cap_order) {
    size_t cap = a->cap_order ? a->cap_order * 2 : 64;
    struct agg_domain **o = realloc(a->order, cap * sizeof(*o));
    if (o == NULL) {
      return -2;
    }
    a->order = o;
    a->cap_order = cap;
  }
  struct agg_domain *d = calloc(1, sizeof(*d));
  if (d == NULL) {
    return -2;
  }
  d->hash = h;
  snprintf(d->name, sizeof(d->name), "%s", key);
  d->hnext = a->buckets[h & (a->num_buckets - 1)];
  a->buckets[h & (a->num_buckets - 1)] = d;
  a->order[a->st.num_domains++] = d;
  agg_grow(a);
  *out = d;
  return 0;
}

static size_t clamp_count(size_t n) {
  return n > TLSRPT_MAX_STRINGS ? TLSRPT_MAX_STRINGS : n;
}

/* policy_hash: XXH3 chained over the type and every string, cut as
 * stored. */
static uint64_t policy_hash(const struct tlsrpt_policy *p) {
  uint64_t h = (uint64_t)p->type + 1;
  for (int part = 0; part < 2; part++) {
    const char *const *a = part == 0 ? p->strings : p->mx_hosts;
    size_t n = clamp_count(part == 0 ? p->num_strings : p->num_mx_hosts);
    for (size_t i = 0; i < n; i++) {
      h = XXH3_64bits_withSeed(a[i], strnlen(a[i], TLSRPT_MAX_STRING) + 1, h);
    }
    h = XXH3_64bits_withSeed("\1", 1, h);
  }
  return h;
}

static int policy_equal(const struct agg_policy *ap,
                        const struct tlsrpt_policy *p) {
  size_t ns = clamp_count(p->num_strings), nm = clamp_count(p->num_mx_hosts);
  if (ap->type != p->type || ap->num_strings != ns || ap->num_mx != nm) {
    return 0;
  }
  for (size_t i = 0; i < ns + nm; i++) {
    const char *s = i < ns ? p->strings[i] : p->mx_hosts[i - ns];
    size_t n = strnlen(s, TLSRPT_MAX_STRING);
    if (strlen(ap->strs[i]) != n || memcmp(ap->strs[i], s, n) != 0) {
      return 0;
    }
  }
  return 1;
}

/* policy_pack copies p's strings (each cut at TLSRPT_MAX_STRING) into one
 * block: the pointer array, then the text. 0 or -1. */
static int policy_pack(struct agg_policy *ap, const struct tlsrpt_policy *p) {
  size_t ns = clamp_count(p->num_strings), nm = clamp_count(p->num_mx_hosts);
  size_t total = (ns + nm) * sizeof(char *);
  for (size_t i = 0; i < ns + nm; i++) {
    const char *s = i < ns ? p->strings[i] : p->mx_hosts[i - ns];
    total += strnlen(s, TLSRPT_MAX_STRING) + 1;
  }
  ap->strs = malloc(total > 0 ? total : 1);
  if (ap->strs == NULL) {
    return -1;
  }
  char *text = (char *)(ap->strs + ns + nm);
  for (size_t i = 0; i < ns + nm; i++) {
    const char *s = i < ns ? p->strings[i] : p->mx_hosts[i - ns];
    size_t n = strnlen(s, TLSRPT_MAX_STRING);
    memcpy(text, s, n);
    text[n] = '\0';
    ap->strs[i] = text;
    text += n + 1;
  }
  ap->type = p->type;
  ap->num_strings = ns;
  ap->num_mx = nm;
  return 0;
}

/* policy_get finds or makes d's entry of p. 0, -1 past
 * TLSRPT_MAX_POLICIES, -2 out of memory. */
static int policy_get(struct agg_domain *d, const struct tlsrpt_policy *p,
                      struct agg_policy **out) {
  uint64_t h = policy_hash(p);
  for (size_t i = 0; i < d->num_policies; i++) {
    if (d->policies[i].hash == h && policy_equal(&d->policies[i], p)) {
      *out = &d->policies[i];
      return 0;
    }
  }
  if (d->num_policies >= TLSRPT_MAX_POLICIES) {
    return -1;
  }
  struct agg_policy *ap = &d->policies[d->num_policies];
  memset(ap, 0, sizeof(*ap));
  if (policy_pack(ap, p) != 0) {
    return -2;
  }
  ap->hash = h;
  d->num_policies++;
  *out = ap;
  return 0;
}

static const char *opt(const char *s) {
  return s != NULL ? s : "";
}

/* row_fields: f's four strings, cut at their limits. */
static void row_fields(const struct tlsrpt_failure *f, const char *out[4],
                       size_t out_len[4]) {
  out[0] = opt(f->sending_ip);
  out[1] = opt(f->receiving_mx);
  out[2] = opt(f->receiving_ip);
  out[3] = opt(f->reason);
  for (int k = 0; k < 4; k++) {
    out_len[k] = strnlen(out[k], k == 3 ? TLSRPT_MAX_REASON : TLSRPT_MAX_NAME);
  }
}

/* row_add counts n failed sessions in the row of f's details, made if
 * there is room. 0, or -1 (no room, no memory: counted as dropped). */
static int row_add(struct tlsrpt_agg *a, struct agg_domain *d,
                   struct agg_policy *ap, const struct tlsrpt_failure *f,
                   uint64_t n) {
  const char *s[4];
  size_t len[4];
  row_fields(f, s, len);
  for (size_t i = 0; i < ap->num_rows; i++) {
    struct agg_row *r = &ap->rows[i];
    int same = r->result == f->result;
    for (int k = 0; same && k < 4; k++) {
      same = strlen(r->f[k]) == len[k] && memcmp(r->f[k], s[k], len[k]) == 0;
    }
    if (same) {
      r->count += n;
      return 0;
    }
  }
  if (d->num_rows >= a->lim.max_failure_rows) {
    return -1;
  }
  if (ap->num_rows == ap->cap_rows) {
    size_t cap = ap->cap_rows ? ap->cap_rows * 2 : 4;
    struct agg_row *rows = realloc(ap->rows, cap * sizeof(*rows));
    if (rows == NULL) {
      return -1;
    }
    ap->rows = rows;
    ap->cap_rows = cap;
  }
  char *block = malloc(len[0] + len[1] + len[2] + len[3] + 4);
  if (block == NULL) {
    return -1;
  }
  struct agg_row *r = &ap->rows[ap->num_rows++];
  r->result = f->result;
  r->count = n;
  for (int k = 0; k < 4; k++) {
    memcpy(block, s[k], len[k]);
    block[len[k]] = '\0';
    r->f[k] = block;
    block += len[k] + 1;
  }
  d->num_rows++;
  return 0;
}

/* agg_count adds ok successful and failed failed sessions of (domain, p);
 * with f, the failed ones also go to f's row. 0 or -1 (not counted). */
static int agg_count(struct tlsrpt_agg *a, const char *domain,
                     const struct tlsrpt_policy *p, uint64_t ok,
                     uint64_t failed, const struct tlsrpt_failure *f) {
  char key[TLSRPT_MAX_DOMAIN + 1];
  struct agg_domain *d;
  struct agg_policy *ap;
  if (domain_key(key, domain) != 0 || (unsigned)p->type > TLSRPT_POLICY_TLSA ||
      (f != NULL && (unsigned)f->result >= TLSRPT_RESULT_COUNT)) {
    return -1;
  }
  int rc = domain_get(a, key, &d);
  if (rc == 0) {
    rc = policy_get(d, p, &ap);
    if (rc == -1) {
      a->st.dropped_policy += ok + failed;
      return -1;
    }
  } else if (rc == -1) {
    a->st.dropped_domain += ok + failed;
    return -1;
  }
  if (rc != 0) {
    a->st.dropped_nomem += ok + failed;
    return -1;
  }
  ap->ok += ok;
  ap->failed += failed;
  if (f != NULL && failed > 0 && row_add(a, d, ap, f, failed) != 0) {
    a->st.dropped_rows += failed;
  }
  return 0;
}

int tlsrpt_agg_add(struct tlsrpt_agg *a, const char *domain,
                   const struct tlsrpt_policy *p,
                   const struct tlsrpt_failure *f) {
  return agg_count(a, domain, p, f == NULL ? 1 : 0, f == NULL ? 0 : 1, f);
}

/* merge_policy adds one policy of src into dst (domain name). */
static int merge_policy(struct tlsrpt_agg *dst, const char *name,
                        const struct agg_policy *sp) {
  struct tlsrpt_policy p = {
      .type = sp->type,
      .strings = (const char *const *)sp->strs,
      .num_strings = sp->num_strings,
      .mx_hosts = (const char *const *)sp->strs + sp->num_strings,
      .num_mx_hosts = sp->num_mx,
  };
  uint64_t with_rows = 0;
  int rc = 0;
  for (size_t i = 0; i < sp->num_rows; i++) {
    const struct agg_row *r = &sp->rows[i];
    struct tlsrpt_failure f = {r->result, r->f[0], r->f[1], r->f[2], r->f[3]};
    with_rows += r->count;
    rc |= agg_count(dst, name, &p, 0, r->count, &f);
  }
  /* Successes, and failures whose rows src had already dropped. */
  uint64_t rest = sp->failed - with_rows;
  if (sp->ok + rest > 0) {
    rc |= agg_count(dst, name, &p, sp->ok, rest, NULL);
  }
  return rc;
}

int tlsrpt_agg_merge(struct tlsrpt_agg *dst, const struct tlsrpt_agg *src) {
  uint64_t nomem = dst->st.dropped_nomem;
  for (size_t i = 0; i < src->st.num_domains; i++) {
    const struct agg_domain *d = src->order[i];
    for (size_t k = 0; k < d->num_policies; k++) {
      merge_policy(dst, d->name, &d->policies[k]);
    }
  }
  if (src->start_s < dst->start_s) {
    dst->start_s = src->start_s;
  }
  if (src->end_s > dst->end_s) {
    dst->end_s = src->end_s;
  }
  return dst->st.dropped_nomem == nomem ? 0 : -1;
}

void tlsrpt_agg_get_stats(const struct tlsrpt_agg *a,
                          struct tlsrpt_agg_stats *out) {
  *out = a->st;
}

void tlsrpt_agg_period(const struct tlsrpt_agg *a, int64_t *out_start_s,
                       int64_t *out_end_s) {
  *out_start_s = a->start_s;
  *out_end_s = a->end_s;
}

size_t tlsrpt_agg_num_domains(const struct tlsrpt_agg *a) {
  return a->st.num_domains;
}

const char *tlsrpt_agg_domain(const struct tlsrpt_agg *a, size_t i) {
  return a->order[i]->name;
}

void tlsrpt_agg_domain_sessions(const struct tlsrpt_agg *a, size_t i,
                                uint64_t *out_ok, uint64_t *out_failed) {
  const struct agg_domain *d = a->order[i];
  *out_ok = *out_failed = 0;
  for (size_t k = 0; k < d->num_policies; k++) {
    *out_ok += d->policies[k].ok;
    *out_failed += d->policies[k].failed;
  }
}

/* ---- a sticky-error writer ---- */

struct wr {
  struct buf *b;
  int err; /* set by the first failed append; later calls do nothing */
};

static void wr_mem(struct wr *w, const void *p, size_t n) {
  if (!w->err && buf_append(w->b, p, n) != 0) {
    w->err = 1;
  }
}

static void wr_str(struct wr *w, const char *s) {
  wr_mem(w, s, strlen(s));
}

static void __attribute__((format(printf, 2, 3)))
wr_fmt(struct wr *w, const char *fmt, ...) {
  char tmp[2048];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof(tmp)) {
    w->err = 1; /* every caller's text fits: a bug, not data */
    return;
  }
  wr_mem(w, tmp, (size_t)n);
}

/* ---- JSON (§4.4) ---- */

/* json_str writes s as a JSON string (RFC 8259 §7): quote, backslash and
 * controls escaped; octets that are not well-formed UTF-8 become '?'. */
static void json_str(struct wr *w, const char *s) {
  const uint8_t *p = (const uint8_t *)s;
  size_t left = strlen(s);
  wr_mem(w, "\"", 1);
  while (left > 0) {
    size_t n = 1;
    char esc[8];
    if (p[0] == '"' || p[0] == '\\') {
      esc[0] = '\\';
      esc[1] = (char)p[0];
      wr_mem(w, esc, 2);
    } else if (p[0] < 0x20 || p[0] == 0x7f) {
      snprintf(esc, sizeof(esc), "\\u%04x", p[0]);
      wr_mem(w, esc, 6);
    } else if (p[0] < 0x80) {
      wr_mem(w, p, 1);
    } else if ((n = smtp_addr_utf8_len(p, left)) > 0) {
      wr_mem(w, p, n);
    } else {
      n = 1;
      wr_mem(w, "?", 1);
    }
    p += n;
    left -= n;
  }
  wr_mem(w, "\"", 1);
}

/* json_member writes "key":"value" (with a comma before unless first). */
static void json_member(struct wr *w, int first, const char *key,
                        const char *value) {
  wr_str(w, first ? "\"" : ",\"");
  wr_str(w, key);
  wr_str(w, "\":");
  json_str(w, value);
}

static void json_array(struct wr *w, const char *key, char *const *a,
                       size_t n) {
  wr_fmt(w, ",\"%s\":[", key);
  for (size_t i = 0; i < n; i++) {
    if (i > 0) {
      wr_str(w, ",");
    }
    json_str(w, a[i]);
  }
  wr_str(w, "]");
}

/* fmt_rfc3339: "2016-04-01T00:00:00Z" (RFC 3339 §5.6, UTC). */
static void fmt_rfc3339(char out[80], int64_t s) {
  time_t t = (time_t)s;
  struct tm tm;
  if (gmtime_r(&t, &tm) == NULL) {
    memset(&tm, 0, sizeof(tm));
  }
  snprintf(out, 80, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
           tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* json_failure writes one failure-details entry (§4.3); unknown fields
 * are left out. */
static void json_failure(struct wr *w, const struct agg_row *r) {
  static const char *const keys[4] = {"sending-mta-ip", "receiving-mx-hostname",
                                      "receiving-ip", "failure-reason-code"};
  wr_str(w, "{");
  json_member(w, 1, "result-type", tlsrpt_result_name(r->result));
  for (int k = 0; k < 3; k++) {
    if (r->f[k][0] != '\0') {
      json_member(w, 0, keys[k], r->f[k]);
    }
  }
  wr_fmt(w, ",\"failed-session-count\":%llu", (unsigned long long)r->count);
  if (r->f[3][0] != '\0') {
    json_member(w, 0, keys[3], r->f[3]);
  }
  wr_str(w, "}");
}

/* json_policy writes one policies[] entry: policy, summary,
 * failure-details (§4.3). */
static void json_policy(struct wr *w, const char *domain,
                        const struct agg_policy *ap) {
  wr_str(w, "{\"policy\":{");
  json_member(w, 1, "policy-type", tlsrpt_policy_type_name(ap->type));
  if (ap->num_strings > 0) {
    json_array(w, "policy-string", ap->strs, ap->num_strings);
  }
  json_member(w, 0, "policy-domain", domain);
  if (ap->num_mx > 0) {
    json_array(w, "mx-host", ap->strs + ap->num_strings, ap->num_mx);
  }
  wr_fmt(w,
         "},\"summary\":{\"total-successful-session-count\":%llu,"
         "\"total-failure-session-count\":%llu},\"failure-details\":[",
         (unsigned long long)ap->ok, (unsigned long long)ap->failed);
  for (size_t i = 0; i < ap->num_rows; i++) {
    if (i > 0) {
      wr_str(w, ",");
    }
    json_failure(w, &ap->rows[i]);
  }
  wr_str(w, "]}");
}

int tlsrpt_report_json(struct buf *out, const struct tlsrpt_agg *a, size_t i,
                       const struct tlsrpt_report_meta *meta) {
  const struct agg_domain *d = a->order[i];
  struct wr w = {out, 0};
  size_t mark = out->len;
  char start[80], end[80];
  fmt_rfc3339(start, a->start_s);
  /* §4.4's example ends a day at 23:59:59Z: the period's last second. */
  fmt_rfc3339(end, a->end_s > a->start_s ? a->end_s - 1 : a->end_s);
  wr_str(&w, "{");
  json_member(&w, 1, "organization-name", meta->organization);
  wr_str(&w, ",\"date-range\":{");
  json_member(&w, 1, "start-datetime", start);
  json_member(&w, 0, "end-datetime", end);
  wr_str(&w, "}");
  json_member(&w, 0, "contact-info", meta->contact);
  json_member(&w, 0, "report-id", meta->report_id);
  wr_str(&w, ",\"policies\":[");
  for (size_t k = 0; k < d->num_policies; k++) {
    if (k > 0) {
      wr_str(&w, ",");
    }
    json_policy(&w, d->name, &d->policies[k]);
  }
  wr_str(&w, "]}\n");
  if (w.err) {
    out->len = mark;
    return -1;
  }
  return 0;
}

/* ---- gzip (RFC 1952) through zlib ---- */

int tlsrpt_gzip(struct buf *out, const uint8_t *in, size_t in_len,
                int64_t mtime) {
  z_stream z;
  memset(&z, 0, sizeof(z));
  /* windowBits 15 + 16: a gzip member with its header and CRC-32. */
  if (deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8,
                   Z_DEFAULT_STRATEGY) != Z_OK) {
    return -1;
  }
  gz_header head;
  memset(&head, 0, sizeof(head));
  head.time = mtime > 0 && mtime <= (int64_t)UINT32_MAX ? (uLong)mtime : 0;
  head.os = 3; /* Unix */
  size_t mark = out->len;
  uLong bound = deflateBound(&z, (uLong)in_len) + 32;
  int rc = deflateSetHeader(&z, &head) == Z_OK &&
                   buf_reserve(out, (size_t)bound) == 0
               ? 0
               : -1;
  if (rc == 0) {
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)in_len;
    z.next_out = out->data + out->len;
    z.avail_out = (uInt)bound;
    rc = deflate(&z, Z_FINISH) == Z_STREAM_END ? 0 : -1;
    out->len += (size_t)bound - z.avail_out;
  }
  deflateEnd(&z);
  if (rc != 0) {
    out->len = mark;
  }
  return rc;
}

/* ---- the message (§5.3) ---- */

/* base64 (RFC 2045 §6.8) in lines of 76, CRLF after each. */
static void wr_base64(struct wr *w, const uint8_t *p, size_t n) {
  static const char tab[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  char line[80];
  size_t col = 0;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16;
    v |= i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0;
    v |= i + 2 < n ? p[i + 2] : 0;
    line[col++] = tab[(v >> 18) & 63];
    line[col++] = tab[(v >> 12) & 63];
    line[col++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
    line[col++] = i + 2 < n ? tab[v & 63] : '=';
    if (col == 76 || i + 3 >= n) {
      line[col++] = '\r';
      line[col++] = '\n';
      wr_mem(w, line, col);
      col = 0;
    }
  }
}

/* mailbox_ok: a plain ASCII address we may put between "<" and ">". */
static int mailbox_ok(const char *s) {
  size_t n = strlen(s);
  const char *at = strrchr(s, '@');
  if (n < 3 || n > SMTP_ADDR_MAX_PATH - 2 || at == NULL || at == s ||
      at[1] == '\0') {
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    uint8_t c = (uint8_t)s[i];
    if (c <= 0x20 || c >= 0x7f || strchr(",<>\"\\();:", c) != NULL) {
      return 0;
    }
  }
  return 1;
}

/* report_id_ok: dot-atom-ish text, one "@" inside (a msg-id, RFC 5322
 * §3.6.4, made of letters, digits, ".", "-" and "_"). */
static int report_id_ok(const char *s) {
  size_t n = strlen(s), ats = 0;
  if (n < 3 || n > TLSRPT_MAX_REPORT_ID || s[0] == '@' || s[n - 1] == '@') {
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    uint8_t c = (uint8_t)s[i];
    ats += c == '@';
    if (!span_is_alnum(c) && c != '.' && c != '-' && c != '_' && c != '@') {
      return 0;
    }
  }
  return ats == 1;
}

/* unique_ok: §5.1 unique-id = 1*(ALPHA / DIGIT), at most 64 here. */
static int unique_ok(const char *s) {
  size_t n = strlen(s);
  for (size_t i = 0; i < n; i++) {
    if (!span_is_alnum((uint8_t)s[i])) {
      return 0;
    }
  }
  return n >= 1 && n <= 64;
}

static int message_ok(const struct tlsrpt_message *m) {
  if (!mta_sts_domain_valid(m->submitter) || !mta_sts_domain_valid(m->domain) ||
      !mailbox_ok(m->from) || !report_id_ok(m->report_id) ||
      !unique_ok(m->unique) || m->num_rcpts == 0) {
    return 0;
  }
  for (size_t i = 0; i < m->num_rcpts; i++) {
    if (!mailbox_ok(m->rcpts[i])) {
      return 0;
    }
  }
  return 1;
}

/* fmt_date: an RFC 5322 §3.3 date-time in UTC. */
static void fmt_date(char out[80], int64_t s) {
  static const char *const days[] = {"Sun", "Mon", "Tue", "Wed",
                                     "Thu", "Fri", "Sat"};
  static const char *const months[] = {"Jan", "Feb", "Mar", "Apr",
                                       "May", "Jun", "Jul", "Aug",
                                       "Sep", "Oct", "Nov", "Dec"};
  time_t t = (time_t)s;
  struct tm tm;
  if (gmtime_r(&t, &tm) == NULL) {
    memset(&tm, 0, sizeof(tm));
    tm.tm_mday = 1;
    tm.tm_year = 70;
  }
  snprintf(out, 80, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday],
           tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour,
           tm.tm_min, tm.tm_sec);
}

/* message_headers writes the header section and the multipart preamble. */
static void message_headers(struct wr *w, const struct tlsrpt_message *m,
                            const char *boundary) {
  char date[80];
  fmt_date(date, m->now_s);
  wr_fmt(w, "From: <%s>\r\nTo: ", m->from);
  for (size_t i = 0; i < m->num_rcpts; i++) {
    wr_fmt(w, "%s<%s>", i == 0 ? "" : ",\r\n ", m->rcpts[i]);
  }
  /* §5.3: the Subject names domain, submitter and the report's id. */
  wr_fmt(w, "\r\nSubject: Report Domain: %s Submitter: %s Report-ID: <%s>\r\n",
         m->domain, m->submitter, m->report_id);
  wr_fmt(w, "Date: %s\r\nMessage-ID: <%s>\r\nMIME-Version: 1.0\r\n", date,
         m->report_id);
  wr_fmt(w, "TLS-Report-Domain: %s\r\nTLS-Report-Submitter: %s\r\n", m->domain,
         m->submitter);
  wr_str(w, "TLS-Required: No\r\nAuto-Submitted: auto-generated\r\n");
  wr_fmt(w,
         "Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n"
         " boundary=\"%s\"\r\n\r\n"
         "This is a multi-part message in MIME format.\r\n",
         boundary);
}

int tlsrpt_message_build(struct buf *out, const struct tlsrpt_message *m) {
  if (!message_ok(m)) {
    return -1;
  }
  struct buf tmp = {0};
  struct wr w = {&tmp, 0};
  /* No base64 line holds "=_", and the text part is ours. */
  char boundary[96], start[80], end[80], file[700];
  snprintf(boundary, sizeof(boundary), "=_tlsrpt_%s", m->unique);
  fmt_rfc3339(start, m->start_s);
  fmt_rfc3339(end, m->end_s);
  /* §5.1: sender "!" policy-domain "!" begin "!" end "!" unique-id. */
  snprintf(file, sizeof(file), "%s!%s!%lld!%lld!%s.json.gz", m->submitter,
           m->domain, (long long)m->start_s, (long long)m->end_s, m->unique);
  message_headers(&w, m, boundary);
  wr_fmt(&w,
         "\r\n--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n"
         "Content-Transfer-Encoding: 7bit\r\n\r\n"
         "This is an aggregate TLS report (RFC 8460) from %s\r\n"
         "for the policy domain %s,\r\n"
         "covering %s to %s.\r\n",
         boundary, m->submitter, m->domain, start, end);
  wr_fmt(&w,
         "\r\n--%s\r\nContent-Type: application/tlsrpt+gzip;\r\n"
         " name=\"%s\"\r\nContent-Transfer-Encoding: base64\r\n"
         "Content-Disposition: attachment;\r\n filename=\"%s\"\r\n\r\n",
         boundary, file, file);
  wr_base64(&w, m->report_gz, m->report_gz_len);
  wr_fmt(&w, "\r\n--%s--\r\n", boundary);
  int rc = w.err || buf_append(out, tmp.data, tmp.len) != 0 ? -1 : 0;
  buf_free(&tmp);
  return rc;
}
