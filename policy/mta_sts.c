/* policy/mta_sts.c — MTA-STS records, policies, MX matching and the policy
 * cache; see mta_sts.h. Every parser reads through a bounded span and
 * names the RFC 8461 rule it enforces. */
#include "policy/mta_sts.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "core/span.h"
/* ---- a bounded reader: core/span.h ---- */

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

/* ---- names ---- */

static int is_ldh(uint8_t c) {
  return span_is_alnum(c) || c == '-';
}

/* ldh_domain: 1 if s is an RFC 5321 Domain: labels of Let-dig [Ldh-str]
 * (1..63 octets, no hyphen at either end) joined by dots, at most
 * MTA_STS_MAX_NAME octets. */
static int ldh_domain(struct span s) {
  if (s.len == 0 || s.len > MTA_STS_MAX_NAME) {
    return 0;
  }
  for (;;) {
    struct span label = span_take(&s, is_ldh);
    if (label.len == 0 || label.len > DNS_MAX_LABEL || label.p[0] == '-' ||
        label.p[label.len - 1] == '-') {
      return 0;
    }
    if (s.len == 0) {
      return 1;
    }
    if (!span_literal(&s, ".") || s.len == 0) {
      return 0; /* not LDH, or a trailing dot */
    }
  }
}

int mta_sts_domain_valid(const char *domain) {
  size_t len = strlen(domain);
  if (len > 0 && domain[len - 1] == '.') {
    len--;
  }
  return ldh_domain((struct span){(const uint8_t *)domain, len});
}

/* name_len: the length of a name without its trailing dot. */
static size_t name_len(const char *s) {
  size_t n = strlen(s);
  return n > 0 && s[n - 1] == '.' ? n - 1 : n;
}

static int ascii_case_eq(const char *a, const char *b, size_t len) {
  for (size_t i = 0; i < len; i++) {
    if (span_lower((uint8_t)a[i]) != span_lower((uint8_t)b[i])) {
      return 0;
    }
  }
  return 1;
}

/* RFC 8461 §4.1: "*.example.com" stands for exactly one leftmost label. */
int mta_sts_pattern_match(const char *pattern, const char *host) {
  size_t pl = name_len(pattern), hl = name_len(host);
  if (pl == 0 || hl == 0) {
    return 0;
  }
  if (pattern[0] != '*') {
    return pl == hl && ascii_case_eq(pattern, host, hl);
  }
  if (pl < 3 || pattern[1] != '.') {
    return 0; /* "*", "*x": not a pattern */
  }
  const char *rest = pattern + 1; /* ".example.com" */
  size_t rl = pl - 1;
  if (hl <= rl || !ascii_case_eq(host + hl - rl, rest, rl)) {
    return 0;
  }
  const char *dot = memchr(host, '.', hl - rl);
  return dot == NULL; /* one label, not empty (hl > rl) */
}

int mta_sts_mx_match(const struct mta_sts_policy *p, const char *host) {
  for (size_t i = 0; i < p->num_mx; i++) {
    if (mta_sts_pattern_match(mta_sts_policy_mx(p, i), host)) {
      return 1;
    }
  }
  return 0;
}

const char *mta_sts_policy_mx(const struct mta_sts_policy *p, size_t i) {
  return p->mx_text + p->mx_off[i];
}

const char *mta_sts_mode_name(enum mta_sts_mode mode) {
  switch (mode) {
  case MTA_STS_MODE_NONE:
    return "none";
  case MTA_STS_MODE_TESTING:
    return "testing";
  case MTA_STS_MODE_ENFORCE:
    return "enforce";
  }
  return "?";
}

/* ---- the TXT record (§3.1) ---- */

/* sts-ext-name = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".") */
static int is_ext_name_char(uint8_t c) {
  return span_is_alnum(c) || c == '_' || c == '-' || c == '.';
}

static int ext_name_ok(struct span name) {
  return name.len >= 1 && name.len <= 32 && span_is_alnum(name.p[0]);
}

/* sts-ext-value = 1*(%x21-3A / %x3C / %x3E-7E): no "=", ";", space or CTL. */
static int is_txt_value_char(uint8_t c) {
  return c >= 0x21 && c <= 0x7e && c != '=' && c != ';';
}

static int txt_sep(struct span *s) {
  span_skip_wsp(s);
  if (!span_literal(s, ";")) {
    return 0;
  }
  span_skip_wsp(s);
  return 1;
}

int mta_sts_txt_is_sts(const uint8_t *rec, size_t rec_len) {
  struct span s = {rec, rec_len};
  return span_literal(&s, "v=STSv1") && txt_sep(&s);
}

/* txt_field reads one "name=value" field; an id goes to out_id. */
static int txt_field(char *out_id, int *have_id, char *err, size_t err_len,
                     struct span *s) {
  struct span name = span_take(s, is_ext_name_char);
  if (!ext_name_ok(name) || !span_literal(s, "=")) {
    return fail(err, err_len, "malformed field (want name=value)");
  }
  struct span value = span_take(s, is_txt_value_char);
  if (!span_eq(name, "id")) {
    return value.len > 0 ? 0 : fail(err, err_len, "empty field value");
  }
  /* sts-id = %s"id=" 1*32(ALPHA / DIGIT) */
  struct span id = value;
  struct span probe = id;
  if (id.len == 0 || id.len > MTA_STS_MAX_ID ||
      span_take(&probe, span_is_alnum).len != id.len) {
    return fail(err, err_len, "id is not 1 to %d letters and digits",
                MTA_STS_MAX_ID);
  }
  if (*have_id) {
    return fail(err, err_len, "more than one id");
  }
  memcpy(out_id, id.p, id.len);
  out_id[id.len] = '\0';
  *have_id = 1;
  return 0;
}

int mta_sts_txt_parse(char out_id[MTA_STS_MAX_ID + 1], char *err,
                      size_t err_len, const uint8_t *rec, size_t rec_len) {
  struct span s = {rec, rec_len};
  int have_id = 0;
  if (!span_literal(&s, "v=STSv1")) {
    return fail(err, err_len, "does not begin with v=STSv1");
  }
  /* sts-text-record = sts-version 1*(sts-sep sts-field) [sts-sep]; blanks
   * at the very end are tolerated. */
  for (;;) {
    span_skip_wsp(&s);
    if (s.len == 0) {
      break;
    }
    if (!txt_sep(&s)) {
      return fail(err, err_len, "want ';' between fields");
    }
    if (s.len == 0) {
      break; /* the optional final separator */
    }
    if (txt_field(out_id, &have_id, err, err_len, &s) != 0) {
      return -1;
    }
  }
  if (!have_id) {
    return fail(err, err_len, "no id field");
  }
  return 0;
}

enum mta_sts_txt mta_sts_txt_find(char out_id[MTA_STS_MAX_ID + 1], char *err,
                                  size_t err_len, const struct dns_rr *rrs,
                                  size_t num_rrs) {
  size_t num_sts;
  const struct dns_rr *found =
      dns_msg_txt_one(rrs, num_rrs, mta_sts_txt_is_sts, &num_sts);
  /* §3.1: "If the number of resulting records is not one, or if the
   * resulting record is syntactically invalid", there is no policy. */
  if (num_sts == 0) {
    fail(err, err_len, "no record begins with v=STSv1;");
    return MTA_STS_TXT_NONE;
  }
  if (num_sts > 1) {
    fail(err, err_len, "%zu STSv1 records, want one", num_sts);
    return MTA_STS_TXT_INVALID;
  }
  char why[MTA_STS_ERR_LEN];
  if (mta_sts_txt_parse(out_id, why, sizeof(why), found->rd.txt.data,
                        found->rd.txt.data_len) != 0) {
    fail(err, err_len, "invalid STSv1 record: %s", why);
    return MTA_STS_TXT_INVALID;
  }
  return MTA_STS_TXT_FOUND;
}

/* ---- the policy file (§3.2) ---- */

/* The fields a policy must have exactly once. */
enum {
  SEEN_VERSION = 1 << 0,
  SEEN_MODE = 1 << 1,
  SEEN_MAX_AGE = 1 << 2,
};

struct policy_parse {
  struct mta_sts_policy *out;
  unsigned seen;
  size_t mx_text_len;
  char *err;
  size_t err_len;
  size_t line; /* 1-based, for the reason */
};

static int __attribute__((format(printf, 2, 3)))
policy_fail(struct policy_parse *pp, const char *fmt, ...) {
  char why[MTA_STS_ERR_LEN];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof(why), fmt, ap);
  va_end(ap);
  return fail(pp->err, pp->err_len, "line %zu: %s", pp->line, why);
}

/* policy_once marks a field that may appear only once. */
static int policy_once(struct policy_parse *pp, unsigned bit, const char *key) {
  if (pp->seen & bit) {
    return policy_fail(pp, "%s given twice", key);
  }
  pp->seen |= bit;
  return 0;
}

static int policy_mode(struct policy_parse *pp, struct span v) {
  /* sts-policy-mode-value = %s"testing" / %s"enforce" / %s"none" */
  static const struct {
    const char *name;
    enum mta_sts_mode mode;
  } modes[] = {{"enforce", MTA_STS_MODE_ENFORCE},
               {"testing", MTA_STS_MODE_TESTING},
               {"none", MTA_STS_MODE_NONE}};
  for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
    if (span_eq(v, modes[i].name)) {
      pp->out->mode = modes[i].mode;
      return 0;
    }
  }
  return policy_fail(pp, "mode: want enforce, testing or none");
}

static int policy_max_age(struct policy_parse *pp, struct span v) {
  /* sts-policy-max-age-value = 1*10(DIGIT), at most 31557600 */
  struct span probe = v;
  if (v.len == 0 || v.len > 10 ||
      span_take(&probe, span_is_digit).len != v.len) {
    return policy_fail(pp, "max_age: want 1 to 10 digits");
  }
  uint64_t n = 0;
  for (size_t i = 0; i < v.len; i++) {
    n = n * 10 + (uint64_t)(v.p[i] - '0');
  }
  if (n > MTA_STS_MAX_MAX_AGE) {
    return policy_fail(pp, "max_age: over %d", MTA_STS_MAX_MAX_AGE);
  }
  pp->out->max_age = (uint32_t)n;
  return 0;
}

static int policy_mx(struct policy_parse *pp, struct span v) {
  /* sts-policy-mx-value = ["*."] Domain */
  struct span domain = v;
  span_literal(&domain, "*.");
  if (!ldh_domain(domain)) {
    return policy_fail(pp, "mx: not a host name or *.domain pattern");
  }
  struct mta_sts_policy *p = pp->out;
  if (p->num_mx == MTA_STS_MAX_MX ||
      pp->mx_text_len + v.len + 1 > MTA_STS_MX_TEXT_LEN) {
    return policy_fail(pp, "more than %d mx patterns or %d octets of them",
                       MTA_STS_MAX_MX, MTA_STS_MX_TEXT_LEN);
  }
  p->mx_off[p->num_mx++] = (uint16_t)pp->mx_text_len;
  memcpy(p->mx_text + pp->mx_text_len, v.p, v.len);
  pp->mx_text_len += v.len;
  p->mx_text[pp->mx_text_len++] = '\0';
  return 0;
}

/* utf8_tail: the continuation octets a UTF-8 lead octet announces (RFC
 * 3629 §4: no overlong 2-octet leads, nothing past U+10FFFF), or -1. */
static int utf8_tail(uint8_t c) {
  if (c >= 0xc2 && c <= 0xdf) {
    return 1;
  }
  if (c >= 0xe0 && c <= 0xef) {
    return 2;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    return 3;
  }
  return -1;
}

/* ext_value_ok checks sts-policy-ext-value: VCHAR or UTF-8, spaces
 * inside (the caller trimmed the blanks at the ends), no CTL. */
static int ext_value_ok(struct span v) {
  if (v.len == 0) {
    return 0;
  }
  for (size_t i = 0; i < v.len; i++) {
    uint8_t c = v.p[i];
    if (c == ' ' || (c >= 0x21 && c <= 0x7e)) {
      continue;
    }
    int tail = utf8_tail(c);
    if (tail < 0 || v.len - i - 1 < (size_t)tail) {
      return 0;
    }
    for (int k = 1; k <= tail; k++) {
      if ((v.p[i + (size_t)k] & 0xc0) != 0x80) {
        return 0;
      }
    }
    i += (size_t)tail;
  }
  return 1;
}

/* policy_field handles one "key: value" (blanks already trimmed). */
static int policy_field(struct policy_parse *pp, struct span key,
                        struct span v) {
  if (span_eq(key, "version")) {
    if (policy_once(pp, SEEN_VERSION, "version") != 0) {
      return -1;
    }
    return span_eq(v, "STSv1") ? 0 : policy_fail(pp, "version: want STSv1");
  }
  if (span_eq(key, "mode")) {
    return policy_once(pp, SEEN_MODE, "mode") != 0 ? -1 : policy_mode(pp, v);
  }
  if (span_eq(key, "max_age")) {
    return policy_once(pp, SEEN_MAX_AGE, "max_age") != 0
               ? -1
               : policy_max_age(pp, v);
  }
  if (span_eq(key, "mx")) {
    return policy_mx(pp, v);
  }
  /* §3.2: other fields are extensions: ignored, once well-formed. */
  return ext_value_ok(v) ? 0 : policy_fail(pp, "malformed value");
}

/* policy_line parses one line without its terminator. */
static int policy_line(struct policy_parse *pp, struct span line) {
  if (line.len == 0) {
    return policy_fail(pp, "empty line");
  }
  struct span key = span_take(&line, is_ext_name_char);
  if (!ext_name_ok(key) || !span_literal(&line, ":")) {
    return policy_fail(pp, "want key: value");
  }
  span_skip_wsp(&line); /* sts-policy-field-delim = ":" *WSP */
  while (line.len > 0 && span_is_wsp(line.p[line.len - 1])) {
    line.len--; /* the *WSP before sts-policy-term */
  }
  return policy_field(pp, key, line);
}

/* policy_next_line cuts the next line off in; the terminator is LF or
 * CRLF (§3.2 sts-policy-term), a CR elsewhere is refused. */
static int policy_next_line(struct policy_parse *pp, struct span *in,
                            struct span *out_line) {
  const uint8_t *lf = memchr(in->p, '\n', in->len);
  size_t n = lf != NULL ? (size_t)(lf - in->p) : in->len;
  *out_line = (struct span){in->p, n};
  in->p += n;
  in->len -= n;
  if (lf != NULL) {
    in->p++;
    in->len--;
    if (n > 0 && out_line->p[n - 1] == '\r') {
      out_line->len--;
    }
  }
  if (memchr(out_line->p, '\r', out_line->len) != NULL) {
    return policy_fail(pp, "CR not followed by LF");
  }
  return 0;
}

/* policy_check_complete: the fields RFC 8461 §3.2 requires. */
static int policy_check_complete(struct policy_parse *pp) {
  static const struct {
    unsigned bit;
    const char *name;
  } required[] = {{SEEN_VERSION, "version"},
                  {SEEN_MODE, "mode"},
                  {SEEN_MAX_AGE, "max_age"}};
  for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
    if (!(pp->seen & required[i].bit)) {
      return fail(pp->err, pp->err_len, "no %s field", required[i].name);
    }
  }
  if (pp->out->num_mx == 0 && pp->out->mode != MTA_STS_MODE_NONE) {
    return fail(pp->err, pp->err_len, "no mx field (mode %s)",
                mta_sts_mode_name(pp->out->mode));
  }
  return 0;
}

int mta_sts_policy_parse(struct mta_sts_policy *out, char *err, size_t err_len,
                         const uint8_t *in, size_t in_len) {
  struct policy_parse pp = {.out = out, .err = err, .err_len = err_len};
  out->mode = MTA_STS_MODE_NONE;
  out->max_age = 0;
  out->num_mx = 0;
  if (in_len > MTA_STS_MAX_POLICY_LEN) {
    return fail(err, err_len, "policy over %d octets", MTA_STS_MAX_POLICY_LEN);
  }
  if (in_len == 0) {
    return fail(err, err_len, "empty policy");
  }
  struct span s = {in, in_len};
  while (s.len > 0) {
    struct span line;
    pp.line++;
    if (policy_next_line(&pp, &s, &line) != 0 || policy_line(&pp, line) != 0) {
      return -1;
    }
  }
  return policy_check_complete(&pp);
}

/* ---- the cache (§5.1) ---- */

struct cache_entry {
  struct cache_entry *hnext;         /* hash chain */
  struct cache_entry *newer, *older; /* LRU list */
  uint64_t hash;
  char domain[MTA_STS_MAX_NAME + 1]; /* lower case, no trailing dot */
  int has_policy;
  struct mta_sts_cached cached;
  char failed_id[MTA_STS_MAX_ID + 1]; /* "" when no fetch failed */
  int64_t retry_at;                   /* failed_id may be fetched again */
};

struct mta_sts_cache {
  pthread_mutex_t mu;
  size_t max_entries;
  size_t num_buckets; /* a power of two */
  struct cache_entry **buckets;
  struct cache_entry *newest, *oldest;
  struct mta_sts_cache_stats stats;
};

/* domain_key writes the lower-case name without its trailing dot. 0, or
 * -1 for an empty or too long name. */
static int domain_key(char out[MTA_STS_MAX_NAME + 1], const char *domain) {
  size_t n = name_len(domain);
  if (n == 0 || n > MTA_STS_MAX_NAME) {
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    out[i] = (char)span_lower((uint8_t)domain[i]);
  }
  out[n] = '\0';
  return 0;
}

struct mta_sts_cache *mta_sts_cache_new(size_t max_entries) {
  if (max_entries == 0) {
    max_entries = MTA_STS_CACHE_DEFAULT_MAX;
  }
  if (max_entries > MTA_STS_CACHE_MAX_MAX) {
    max_entries = MTA_STS_CACHE_MAX_MAX;
  }
  struct mta_sts_cache *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    return NULL;
  }
  c->max_entries = max_entries;
  c->num_buckets = 16;
  while (c->num_buckets < max_entries) {
    c->num_buckets <<= 1;
  }
  c->buckets = calloc(c->num_buckets, sizeof(*c->buckets));
  if (c->buckets == NULL) {
    free(c);
    return NULL;
  }
  pthread_mutex_init(&c->mu, NULL);
  return c;
}

void mta_sts_cache_free(struct mta_sts_cache *c) {
  if (c == NULL) {
    return;
  }
  while (c->newest != NULL) {
    struct cache_entry *e = c->newest;
    c->newest = e->older;
    free(e);
  }
  pthread_mutex_destroy(&c->mu);
  free(c->buckets);
  free(c);
}

static void lru_unlink(struct mta_sts_cache *c, struct cache_entry *e) {
  if (e->newer != NULL) {
    e->newer->older = e->older;
  } else {
    c->newest = e->older;
  }
  if (e->older != NULL) {
    e->older->newer = e->newer;
  } else {
    c->oldest = e->newer;
  }
  e->newer = e->older = NULL;
}

static void lru_push(struct mta_sts_cache *c, struct cache_entry *e) {
  e->older = c->newest;
  e->newer = NULL;
  if (c->newest != NULL) {
    c->newest->newer = e;
  } else {
    c->oldest = e;
  }
  c->newest = e;
}

static void entry_remove(struct mta_sts_cache *c, struct cache_entry *e) {
  struct cache_entry **pp = &c->buckets[e->hash & (c->num_buckets - 1)];
  while (*pp != e) {
    pp = &(*pp)->hnext;
  }
  *pp = e->hnext;
  lru_unlink(c, e);
  c->stats.entries--;
  free(e);
}

/* entry_find: the entry for a normalised domain, made most recent. */
static struct cache_entry *entry_find(struct mta_sts_cache *c, const char *key,
                                      uint64_t hash) {
  struct cache_entry *e = c->buckets[hash & (c->num_buckets - 1)];
  while (e != NULL && (e->hash != hash || strcmp(e->domain, key) != 0)) {
    e = e->hnext;
  }
  if (e != NULL) {
    lru_unlink(c, e);
    lru_push(c, e);
  }
  return e;
}

/* entry_get finds or makes the entry for key, evicting the least
 * recently used one when full. NULL out of memory. */
static struct cache_entry *entry_get(struct mta_sts_cache *c, const char *key,
                                     uint64_t hash) {
  struct cache_entry *e = entry_find(c, key, hash);
  if (e != NULL) {
    return e;
  }
  if (c->stats.entries >= c->max_entries && c->oldest != NULL) {
    entry_remove(c, c->oldest);
    c->stats.evictions++;
  }
  e = calloc(1, sizeof(*e));
  if (e == NULL) {
    return NULL;
  }
  e->hash = hash;
  memcpy(e->domain, key, strlen(key) + 1);
  struct cache_entry **head = &c->buckets[hash & (c->num_buckets - 1)];
  e->hnext = *head;
  *head = e;
  lru_push(c, e);
  c->stats.entries++;
  return e;
}

/* entry_age drops what has run out (an expired policy, an old failure);
 * returns 1 if nothing is left, so the entry may go. */
static int entry_age(struct cache_entry *e, int64_t now) {
  if (e->has_policy && now >= e->cached.expires_at) {
    e->has_policy = 0;
  }
  if (e->failed_id[0] != '\0' && now >= e->retry_at) {
    e->failed_id[0] = '\0';
  }
  return !e->has_policy && e->failed_id[0] == '\0';
}

/* cache_lookup: the live entry of domain, or NULL; with c->mu held. */
static struct cache_entry *cache_lookup(struct mta_sts_cache *c,
                                        const char *domain, int64_t now) {
  char key[MTA_STS_MAX_NAME + 1];
  if (domain_key(key, domain) != 0) {
    return NULL;
  }
  struct cache_entry *e = entry_find(c, key, XXH3_64bits(key, strlen(key)));
  if (e != NULL && entry_age(e, now)) {
    entry_remove(c, e);
    e = NULL;
  }
  return e;
}

int mta_sts_cache_get(struct mta_sts_cache *c, struct mta_sts_cached *out,
                      const char *domain, int64_t now) {
  pthread_mutex_lock(&c->mu);
  struct cache_entry *e = cache_lookup(c, domain, now);
  int found = e != NULL && e->has_policy;
  if (found) {
    *out = e->cached;
    c->stats.hits++;
  } else {
    c->stats.misses++;
  }
  pthread_mutex_unlock(&c->mu);
  return found;
}

int mta_sts_cache_put(struct mta_sts_cache *c, const char *domain,
                      const char *id, const struct mta_sts_policy *policy,
                      int64_t now) {
  char key[MTA_STS_MAX_NAME + 1];
  size_t id_len = strlen(id);
  if (domain_key(key, domain) != 0 || id_len > MTA_STS_MAX_ID) {
    return -1;
  }
  pthread_mutex_lock(&c->mu);
  struct cache_entry *e = entry_get(c, key, XXH3_64bits(key, strlen(key)));
  if (e != NULL) {
    memcpy(e->cached.id, id, id_len + 1);
    e->cached.policy = *policy;
    e->cached.fetched_at = now;
    e->cached.expires_at = now + (int64_t)policy->max_age;
    e->has_policy = 1;
    e->failed_id[0] = '\0';
  }
  pthread_mutex_unlock(&c->mu);
  return e != NULL ? 0 : -1;
}

void mta_sts_cache_note_failure(struct mta_sts_cache *c, const char *domain,
                                const char *id, int64_t now) {
  char key[MTA_STS_MAX_NAME + 1];
  size_t id_len = strlen(id);
  if (domain_key(key, domain) != 0 || id_len > MTA_STS_MAX_ID) {
    return;
  }
  pthread_mutex_lock(&c->mu);
  struct cache_entry *e = entry_get(c, key, XXH3_64bits(key, strlen(key)));
  if (e != NULL) {
    memcpy(e->failed_id, id, id_len + 1);
    e->retry_at = now + MTA_STS_RETRY_AFTER;
  }
  pthread_mutex_unlock(&c->mu);
}

int mta_sts_cache_may_fetch(struct mta_sts_cache *c, const char *domain,
                            const char *id, int64_t now) {
  pthread_mutex_lock(&c->mu);
  struct cache_entry *e = cache_lookup(c, domain, now);
  int may = e == NULL || strcmp(e->failed_id, id) != 0;
  pthread_mutex_unlock(&c->mu);
  return may;
}

void mta_sts_cache_get_stats(struct mta_sts_cache *c,
                             struct mta_sts_cache_stats *out) {
  pthread_mutex_lock(&c->mu);
  *out = c->stats;
  pthread_mutex_unlock(&c->mu);
}
