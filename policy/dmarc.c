/* policy/dmarc.c — DMARC (RFC 7489): the record, the Public Suffix List
 * and organisational domains, alignment, From, evaluation and the
 * aggregate report; see dmarc.h. Parsers read through a bounded span;
 * the report is written through a sticky-error writer. */
#include "policy/dmarc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <xxhash.h>

#include "core/span.h"
#include "proto/smtp_addr.h"

#define DMARC_MAX_DOMAIN 253 /* RFC 1035 §2.3.4, no trailing dot */
#define DMARC_MAX_LABEL 63
#define DMARC_MAX_LABELS 127           /* 253 octets hold at most 127 labels */
#define DMARC_PSL_MAX_FILE (16u << 20) /* the PSL is ~250 KiB */
#define DMARC_PSL_MAX_RULES 100000
#define DMARC_MAX_ADDR 512       /* one From addr-spec, comments removed */
#define DMARC_MAX_FROM 65536     /* one From field, folded */
#define DMARC_MAX_SIZE_DIGITS 15 /* "!size": far beyond any mailbox */

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

/* note appends "; text" (or "text") to a success note in err. */
static void __attribute__((format(printf, 3, 4)))
note(char *err, size_t err_len, const char *fmt, ...) {
  if (err == NULL || err_len == 0) {
    return;
  }
  size_t n = strnlen(err, err_len);
  if (n > 0 && n + 2 < err_len) {
    memcpy(err + n, "; ", 3);
    n += 2;
  }
  if (n + 1 >= err_len) {
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err + n, err_len - n, fmt, ap);
  va_end(ap);
}

/* span_ieq: equal to lit (lower case), ASCII case-insensitive. */
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

/* ---- domains ---- */

/* A domain octet: LDH, "_" (DNS names such as _dmarc), or UTF-8 (a
 * U-label from an EAI message; compared as octets). */
static int is_domain_char(uint8_t c) {
  return span_is_alnum(c) || c == '-' || c == '_' || c >= 0x80;
}

/* domain_norm copies in (len octets) lower-cased into out without one
 * trailing dot, checking RFC 1035 lengths. Returns its length, or -1. */
static int domain_norm(char *out, size_t out_len, const char *in, size_t len) {
  if (len > 0 && in[len - 1] == '.') {
    len--;
  }
  if (len == 0 || len > DMARC_MAX_DOMAIN || len + 1 > out_len) {
    return -1;
  }
  size_t label = 0;
  for (size_t i = 0; i < len; i++) {
    uint8_t c = (uint8_t)in[i];
    if (c == '.') {
      if (label == 0) {
        return -1;
      }
      label = 0;
    } else if (!is_domain_char(c) || ++label > DMARC_MAX_LABEL) {
      return -1;
    }
    out[i] = (char)span_lower(c);
  }
  if (label == 0) {
    return -1;
  }
  out[len] = '\0';
  return (int)len;
}

/* is_subdomain: 1 if d is a proper subdomain of parent (both normalised). */
static int is_subdomain(const char *d, const char *parent) {
  size_t n = strlen(d), k = strlen(parent);
  return n > k && d[n - k - 1] == '.' && strcmp(d + n - k, parent) == 0;
}

/* ---- the record (§6.3, §6.4) ---- */

const char *dmarc_policy_name(enum dmarc_policy p) {
  switch (p) {
  case DMARC_P_NONE:
    return "none";
  case DMARC_P_QUARANTINE:
    return "quarantine";
  case DMARC_P_REJECT:
    return "reject";
  }
  return "?";
}

/* RFC 6376 §3.2: tag-name = ALPHA *ALNUMPUNC; ALNUMPUNC = ALPHA / DIGIT /
 * "_". */
static int is_tag_name_char(uint8_t c) {
  return span_is_alnum(c) || c == '_';
}

/* tval-char = %x21-3A / %x3C-7E, with blanks inside a value. */
static int is_tag_value_char(uint8_t c) {
  return (c >= 0x21 && c <= 0x7e && c != ';') || span_is_wsp(c);
}

static void trim_wsp(struct span *v) {
  while (v->len > 0 && span_is_wsp(v->p[v->len - 1])) {
    v->len--;
  }
  span_skip_wsp(v);
}

/* tag_spec reads *WSP tag-name *WSP "=" *WSP tag-value *WSP up to ";"
 * or the end. 0, or -1 (a syntax error, reason in err). */
static int tag_spec(struct span *s, struct span *name, struct span *value,
                    char *err, size_t err_len) {
  span_skip_wsp(s);
  *name = span_take(s, is_tag_name_char);
  if (name->len == 0 || !span_is_alpha(name->p[0])) {
    return fail(err, err_len, "a tag without a name");
  }
  span_skip_wsp(s);
  if (!span_literal(s, "=")) {
    return fail(err, err_len, "tag %.*s without '='", (int)name->len,
                (const char *)name->p);
  }
  *value = span_take(s, is_tag_value_char);
  trim_wsp(value);
  if (s->len > 0 && s->p[0] != ';') {
    return fail(err, err_len, "octet 0x%02x in the value of %.*s", s->p[0],
                (int)name->len, (const char *)name->p);
  }
  return 0;
}

/* policy_keyword: "none" / "quarantine" / "reject" (any case); -1 else. */
static int policy_keyword(struct span v, enum dmarc_policy *out) {
  static const char *const names[] = {"none", "quarantine", "reject"};
  for (int i = 0; i < 3; i++) {
    if (span_ieq(v, names[i])) {
      *out = (enum dmarc_policy)i;
      return 0;
    }
  }
  return -1;
}

/* digits: 1*max DIGIT, the whole value; -1 else. */
static int digits(struct span v, size_t max, uint64_t *out) {
  if (v.len == 0 || v.len > max) {
    return -1;
  }
  uint64_t n = 0;
  for (size_t i = 0; i < v.len; i++) {
    if (!span_is_digit(v.p[i])) {
      return -1;
    }
    n = n * 10 + (uint64_t)(v.p[i] - '0');
  }
  *out = n;
  return 0;
}

/* fo_value: dmarc-fo = ("0"/"1"/"d"/"s") *(*WSP ":" *WSP (...)), written
 * compact and lower case into out; -1 if malformed or too long. */
static int fo_value(struct span v, char *out, size_t out_len) {
  size_t n = 0;
  for (;;) {
    if (v.len == 0) {
      return -1;
    }
    uint8_t c = span_lower(v.p[0]);
    if (c != '0' && c != '1' && c != 'd' && c != 's') {
      return -1;
    }
    v.p++;
    v.len--;
    if (n + 2 >= out_len) {
      return -1;
    }
    out[n++] = (char)c;
    span_skip_wsp(&v);
    if (v.len == 0) {
      out[n] = '\0';
      return 0;
    }
    if (!span_literal(&v, ":")) {
      return -1;
    }
    out[n++] = ':';
    span_skip_wsp(&v);
  }
}

/* RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) */
static int is_scheme_char(uint8_t c) {
  return span_is_alnum(c) || c == '+' || c == '-' || c == '.';
}

/* A URI octet in a DMARC list: "," and "!" are percent-encoded (§6.2). */
static int is_uri_char(uint8_t c) {
  return c >= 0x21 && c <= 0x7e && c != ',' && c != '!' && c != ';';
}

/* dmarc_uri parses dmarc-uri = URI [ "!" 1*DIGIT [ "k" / "m" / "g" /
 * "t" ] ] (§6.4), the whole span: the URI into *uri, the size in bytes
 * (0: none) into *max. 0, or -1 if malformed. */
static int dmarc_uri(struct span u, struct span *uri, uint64_t *max) {
  struct span s = u;
  *uri = span_take(&s, is_uri_char);
  struct span rest = *uri;
  struct span scheme = span_take(&rest, is_scheme_char);
  if (scheme.len == 0 || !span_is_alpha(scheme.p[0]) ||
      !span_literal(&rest, ":") || rest.len == 0) {
    return -1;
  }
  *max = 0;
  if (s.len == 0) {
    return 0;
  }
  if (!span_literal(&s, "!")) {
    return -1;
  }
  struct span num = span_take(&s, span_is_digit);
  uint64_t n;
  if (digits(num, DMARC_MAX_SIZE_DIGITS, &n) != 0 || s.len > 1) {
    return -1;
  }
  unsigned shift = 0;
  if (s.len == 1) {
    const char *units = "kmgt";
    const char *at = memchr(units, span_lower(s.p[0]), 4);
    if (at == NULL) {
      return -1;
    }
    shift = 10 * (unsigned)(at - units + 1);
  }
  if (n > (UINT64_MAX >> shift)) {
    return -1;
  }
  *max = n << shift;
  return 0;
}

/* uri_list reads dmarc-uri *(*WSP "," *WSP dmarc-uri) into uris/maxes
 * (maxes may be NULL); malformed or overlong URIs and those past
 * DMARC_MAX_URIS are dropped and noted. Returns the number well formed. */
static size_t uri_list(struct span v, const char *tag,
                       char (*uris)[DMARC_MAX_URI], uint64_t *maxes,
                       size_t *num, char *err, size_t err_len) {
  size_t valid = 0;
  while (v.len > 0) {
    const uint8_t *comma = memchr(v.p, ',', v.len);
    struct span one = {v.p, comma != NULL ? (size_t)(comma - v.p) : v.len};
    v.p += one.len + (comma != NULL);
    v.len -= one.len + (comma != NULL);
    trim_wsp(&one);
    struct span uri;
    uint64_t max;
    if (dmarc_uri(one, &uri, &max) != 0) {
      note(err, err_len, "%s: malformed URI ignored", tag);
      continue;
    }
    valid++;
    if (*num >= DMARC_MAX_URIS || uri.len >= DMARC_MAX_URI) {
      note(err, err_len, "%s: URI not kept (limit)", tag);
      continue;
    }
    memcpy(uris[*num], uri.p, uri.len);
    uris[*num][uri.len] = '\0';
    if (maxes != NULL) {
      maxes[*num] = max;
    }
    (*num)++;
  }
  return valid;
}

enum rec_tag {
  TAG_V,
  TAG_P,
  TAG_SP,
  TAG_PCT,
  TAG_ADKIM,
  TAG_ASPF,
  TAG_RI,
  TAG_FO,
  TAG_RF,
  TAG_RUA,
  TAG_RUF,
  TAG_COUNT,
};

static const char *const tag_names[TAG_COUNT] = {
    "v", "p", "sp", "pct", "adkim", "aspf", "ri", "fo", "rf", "rua", "ruf",
};

/* What the parse saw, beyond the record itself. */
struct rec_state {
  unsigned seen; /* bit per enum rec_tag */
  int p_bad, sp_bad;
  size_t valid_rua; /* well-formed rua URIs, kept or not */
};

/* alignment_mode: "r" / "s" (any case): strict 0/1; -1 else. */
static int alignment_mode(struct span v) {
  return span_ieq(v, "r") ? 0 : span_ieq(v, "s") ? 1 : -1;
}

/* rec_tag_value applies one known tag's value; bad values fall back to
 * defaults (§6.3) and are noted, bad p/sp are left for §6.6.3. */
static void rec_tag_value(struct dmarc_record *r, struct rec_state *st,
                          enum rec_tag t, struct span v, char *err,
                          size_t err_len) {
  uint64_t n;
  int mode;
  switch (t) {
  case TAG_V:
  case TAG_RF: /* afrf only; failure reports are not sent */
    break;
  case TAG_P:
    st->p_bad = policy_keyword(v, &r->p) != 0;
    break;
  case TAG_SP:
    st->sp_bad = policy_keyword(v, &r->sp) != 0;
    r->has_sp = !st->sp_bad;
    break;
  case TAG_PCT:
    /* dmarc-percent = "pct" *WSP "=" *WSP 1*3DIGIT, 0..100 */
    if (digits(v, 3, &n) != 0 || n > 100) {
      note(err, err_len, "pct=%.*s invalid, 100 used", (int)v.len,
           (const char *)v.p);
    } else {
      r->pct = (unsigned)n;
    }
    break;
  case TAG_ADKIM:
  case TAG_ASPF:
    if ((mode = alignment_mode(v)) < 0) {
      note(err, err_len, "%s invalid, r used", tag_names[t]);
    } else if (t == TAG_ADKIM) {
      r->adkim_strict = mode;
    } else {
      r->aspf_strict = mode;
    }
    break;
  case TAG_RI:
    if (digits(v, 10, &n) != 0 || n > UINT32_MAX) {
      note(err, err_len, "ri invalid, 86400 used");
    } else {
      r->ri = (unsigned)n;
    }
    break;
  case TAG_FO:
    if (fo_value(v, r->fo, sizeof(r->fo)) != 0) {
      memcpy(r->fo, "0", 2);
      note(err, err_len, "fo invalid, 0 used");
    }
    break;
  case TAG_RUA:
    st->valid_rua +=
        uri_list(v, "rua", r->rua, r->rua_max, &r->num_rua, err, err_len);
    break;
  case TAG_RUF:
    uri_list(v, "ruf", r->ruf, NULL, &r->num_ruf, err, err_len);
    break;
  case TAG_COUNT:
    break;
  }
}

/* rec_tag: which known tag name is (TAG_COUNT: unknown). */
static enum rec_tag rec_tag(struct span name) {
  for (int t = 0; t < TAG_COUNT; t++) {
    if (span_ieq(name, tag_names[t])) {
      return (enum rec_tag)t;
    }
  }
  return TAG_COUNT;
}

static void record_defaults(struct dmarc_record *r) {
  memset(r, 0, sizeof(*r));
  r->p = DMARC_P_NONE;
  r->sp = DMARC_P_NONE;
  r->pct = 100;
  r->ri = 86400;
  memcpy(r->fo, "0", 2);
}

/* record_policy settles p and sp (§6.6.3 step 6): a missing or invalid
 * p, or an invalid sp, is p=none when rua holds a valid URI, else the
 * record is unusable. */
static int record_policy(struct dmarc_record *r, const struct rec_state *st,
                         char *err, size_t err_len) {
  int p_missing = !(st->seen & (1u << TAG_P));
  if (!p_missing && !st->p_bad && !st->sp_bad) {
    if (!r->has_sp) {
      r->sp = r->p;
    }
    return 0;
  }
  const char *what = p_missing   ? "no p tag"
                     : st->p_bad ? "invalid p"
                                 : "invalid sp";
  if (st->valid_rua == 0) {
    return fail(err, err_len, "%s and no valid rua URI", what);
  }
  r->p = DMARC_P_NONE;
  r->sp = DMARC_P_NONE;
  r->has_sp = 0;
  r->p_invalid = 1;
  note(err, err_len, "%s: acting as p=none (rua present)", what);
  return 0;
}

int dmarc_record_parse(const char *txt, size_t len, struct dmarc_record *out,
                       char *err, size_t err_len) {
  record_defaults(out);
  if (err != NULL && err_len > 0) {
    err[0] = '\0';
  }
  if (len > DMARC_MAX_RECORD) {
    return fail(err, err_len, "record longer than %d octets", DMARC_MAX_RECORD);
  }
  struct span s = {(const uint8_t *)txt, len}, name, value;
  struct rec_state st = {0};
  /* §6.3: "v" MUST be the first tag; no leading blanks (§6.4 ABNF). */
  if (len == 0 || !span_is_alpha(s.p[0]) ||
      tag_spec(&s, &name, &value, err, err_len) != 0 || !span_ieq(name, "v") ||
      !span_eq(value, "DMARC1")) {
    return fail(err, err_len, "does not begin with v=DMARC1");
  }
  st.seen = 1u << TAG_V;
  while (span_literal(&s, ";")) {
    span_skip_wsp(&s);
    if (s.len == 0) {
      break; /* the optional final dmarc-sep */
    }
    if (tag_spec(&s, &name, &value, err, err_len) != 0) {
      return -1;
    }
    enum rec_tag t = rec_tag(name);
    if (t == TAG_COUNT) {
      continue; /* §6.3: unknown tags MUST be ignored */
    }
    if (st.seen & (1u << t)) {
      /* RFC 6376 §3.2: a duplicate tag invalidates the tag-list. */
      return fail(err, err_len, "tag %s given twice", tag_names[t]);
    }
    st.seen |= 1u << t;
    rec_tag_value(out, &st, t, value, err, err_len);
  }
  if (s.len > 0) {
    return fail(err, err_len, "want ';' between tags");
  }
  return record_policy(out, &st, err, err_len);
}

int dmarc_is_record(const uint8_t *txt, size_t len) {
  /* dmarc-version = "v" *WSP "=" *WSP %x44 %x4d %x41 %x52 %x43 %x31 */
  struct span s = {txt, len};
  if (s.len == 0 || span_lower(s.p[0]) != 'v') {
    return 0;
  }
  s.p++;
  s.len--;
  span_skip_wsp(&s);
  if (!span_literal(&s, "=")) {
    return 0;
  }
  span_skip_wsp(&s);
  if (!span_literal(&s, "DMARC1")) {
    return 0;
  }
  span_skip_wsp(&s);
  return s.len == 0 || s.p[0] == ';';
}

/* ---- the Public Suffix List ---- */

enum {
  PSL_RULE = 1,   /* "x.y": x.y is a public suffix */
  PSL_WILD = 2,   /* "*.x.y": every label under x.y is one */
  PSL_EXCEPT = 4, /* "!w.x.y": w.x.y is not one, despite a wildcard */
};

struct psl_slot {
  uint64_t hash;
  uint32_t off; /* into names; 0 = empty (names[0] is unused) */
  uint16_t len;
  uint8_t flags;
};

struct dmarc_psl {
  struct psl_slot *slots;
  size_t mask; /* slots - 1; a power of two minus one */
  size_t num;
  struct buf names; /* rule names, NUL-terminated, from offset 1 */
};

static uint64_t psl_hash(const char *s, size_t n) {
  return XXH3_64bits(s, n);
}

static struct psl_slot *psl_find(const struct dmarc_psl *p, const char *s,
                                 size_t n, uint64_t h) {
  for (size_t i = (size_t)h & p->mask;; i = (i + 1) & p->mask) {
    struct psl_slot *slot = &p->slots[i];
    if (slot->off == 0 || (slot->hash == h && slot->len == n &&
                           memcmp(p->names.data + slot->off, s, n) == 0)) {
      return slot;
    }
  }
}

static int psl_grow(struct dmarc_psl *p) {
  size_t cap = (p->mask + 1) * 2;
  struct psl_slot *old = p->slots;
  size_t old_cap = p->mask + 1;
  p->slots = calloc(cap, sizeof(*p->slots));
  if (p->slots == NULL) {
    p->slots = old;
    return -1;
  }
  p->mask = cap - 1;
  for (size_t i = 0; i < old_cap; i++) {
    if (old[i].off != 0) {
      *psl_find(p, (const char *)p->names.data + old[i].off, old[i].len,
                old[i].hash) = old[i];
    }
  }
  free(old);
  return 0;
}

/* psl_add sets flags on name (lower case, no dots at either end). */
static int psl_add(struct dmarc_psl *p, const char *s, size_t n,
                   uint8_t flags) {
  if ((p->num + 1) * 2 > p->mask + 1 && psl_grow(p) != 0) {
    return -1;
  }
  uint64_t h = psl_hash(s, n);
  struct psl_slot *slot = psl_find(p, s, n, h);
  if (slot->off == 0) {
    if (p->num >= DMARC_PSL_MAX_RULES || p->names.len > UINT32_MAX - n - 1) {
      return -1;
    }
    slot->off = (uint32_t)p->names.len;
    slot->len = (uint16_t)n;
    slot->hash = h;
    if (buf_append(&p->names, s, n) != 0 || buf_append(&p->names, "", 1) != 0) {
      slot->off = 0;
      return -1;
    }
    p->num++;
  }
  slot->flags |= flags;
  return 0;
}

static uint8_t psl_flags(const struct dmarc_psl *p, const char *s, size_t n) {
  return psl_find(p, s, n, psl_hash(s, n))->flags;
}

/* ---- Punycode (RFC 3492 §6.3), for U-label rules ---- */

enum { PC_BASE = 36, PC_TMIN = 1, PC_TMAX = 26, PC_SKEW = 38, PC_DAMP = 700 };

static uint32_t pc_adapt(uint32_t delta, uint32_t num_points, int first) {
  delta = first ? delta / PC_DAMP : delta / 2;
  delta += delta / num_points;
  uint32_t k = 0;
  while (delta > ((PC_BASE - PC_TMIN) * PC_TMAX) / 2) {
    delta /= PC_BASE - PC_TMIN;
    k += PC_BASE;
  }
  return k + (PC_BASE - PC_TMIN + 1) * delta / (delta + PC_SKEW);
}

static char pc_digit(uint32_t d) {
  return (char)(d < 26 ? 'a' + d : '0' + d - 26);
}

/* pc_put writes q as a generalized variable-length integer (§3.3). */
static int pc_put(char *out, size_t out_len, size_t *o, uint32_t q,
                  uint32_t bias) {
  for (uint32_t k = PC_BASE;; k += PC_BASE) {
    uint32_t t = k <= bias ? PC_TMIN : k >= bias + PC_TMAX ? PC_TMAX : k - bias;
    if (*o + 1 >= out_len) {
      return -1;
    }
    if (q < t) {
      out[(*o)++] = pc_digit(q);
      return 0;
    }
    out[(*o)++] = pc_digit(t + (q - t) % (PC_BASE - t));
    q = (q - t) / (PC_BASE - t);
  }
}

/* pc_encode writes "xn--" and the Punycode of cps into out; -1 if it
 * does not fit (out_len) or overflows. */
static int pc_encode(char *out, size_t out_len, const uint32_t *cps,
                     size_t num) {
  size_t o = 4;
  uint32_t b = 0;
  if (out_len < 5) {
    return -1;
  }
  memcpy(out, "xn--", 4);
  for (size_t i = 0; i < num; i++) {
    if (cps[i] < 0x80) {
      if (o + 2 >= out_len) {
        return -1; /* room for it and the delimiter */
      }
      out[o++] = (char)cps[i];
      b++;
    }
  }
  if (b > 0) {
    out[o++] = '-';
  }
  uint32_t n = 0x80, delta = 0, bias = 72, h = b;
  while (h < num) {
    uint32_t m = UINT32_MAX;
    for (size_t i = 0; i < num; i++) {
      m = cps[i] >= n && cps[i] < m ? cps[i] : m;
    }
    if ((uint64_t)(m - n) * (h + 1) + delta > UINT32_MAX) {
      return -1;
    }
    delta += (m - n) * (h + 1);
    n = m;
    for (size_t i = 0; i < num; i++) {
      if (cps[i] < n) {
        delta++;
      } else if (cps[i] == n) {
        if (pc_put(out, out_len, &o, delta, bias) != 0) {
          return -1;
        }
        bias = pc_adapt(delta, h + 1, h == b);
        delta = 0;
        h++;
      }
    }
    delta++;
    n++;
  }
  out[o] = '\0';
  return (int)o;
}

/* utf8_decode: the code point of the UTF-8 sequence at s (length *n), or
 * -1 when malformed. */
static long utf8_decode(const uint8_t *s, size_t len, size_t *n) {
  if (s[0] < 0x80) {
    *n = 1;
    return s[0];
  }
  *n = smtp_addr_utf8_len(s, len);
  if (*n == 0) {
    return -1;
  }
  long cp = s[0] & (0x7f >> *n);
  for (size_t i = 1; i < *n; i++) {
    cp = (cp << 6) | (s[i] & 0x3f);
  }
  return cp;
}

/* label_to_ascii writes the A-label of one label (UTF-8, ASCII already
 * lowered) into out; a pure ASCII label is copied. Length or -1. */
static int label_to_ascii(char *out, size_t out_len, const char *label,
                          size_t len) {
  uint32_t cps[DMARC_MAX_DOMAIN];
  size_t num = 0, ascii = 1;
  for (size_t i = 0; i < len;) {
    size_t n;
    long cp = utf8_decode((const uint8_t *)label + i, len - i, &n);
    if (cp < 0 || num >= DMARC_MAX_DOMAIN) {
      return -1;
    }
    ascii &= cp < 0x80;
    cps[num++] = (uint32_t)cp;
    i += n;
  }
  if (ascii) {
    if (len + 1 > out_len) {
      return -1;
    }
    memcpy(out, label, len);
    out[len] = '\0';
    return (int)len;
  }
  int n = pc_encode(out, out_len, cps, num);
  return n > DMARC_MAX_LABEL ? -1 : n;
}

/* name_to_ascii converts every label of a lower-case name to its
 * A-label. Length or -1. */
static int name_to_ascii(char *out, size_t out_len, const char *name,
                         size_t len) {
  size_t o = 0;
  for (size_t i = 0; i <= len;) {
    const char *dot = memchr(name + i, '.', len - i);
    size_t n = dot != NULL ? (size_t)(dot - (name + i)) : len - i;
    if (o > 0) {
      if (o + 1 >= out_len) {
        return -1;
      }
      out[o++] = '.';
    }
    int k = label_to_ascii(out + o, out_len - o, name + i, n);
    if (k < 0) {
      return -1;
    }
    o += (size_t)k;
    i += n + 1;
  }
  return o > DMARC_MAX_DOMAIN ? -1 : (int)o;
}

/* psl_rule adds one rule line's text (up to the first blank): "x.y",
 * "*.x.y" or "!w.x.y", in either label form. 0, or -1 with the reason. */
static int psl_rule(struct dmarc_psl *p, const char *rule, size_t len,
                    char *why, size_t why_len) {
  uint8_t flags = PSL_RULE;
  if (len > 0 && rule[0] == '!') {
    flags = PSL_EXCEPT;
    rule++;
    len--;
  } else if (len >= 2 && rule[0] == '*' && rule[1] == '.') {
    flags = PSL_WILD;
    rule += 2;
    len -= 2;
  }
  char name[DMARC_MAX_DOMAIN + 1], ascii[DMARC_MAX_DOMAIN + 1];
  if (memchr(rule, '*', len) != NULL) {
    return fail(why, why_len, "a wildcard that is not the leftmost label");
  }
  int n = domain_norm(name, sizeof(name), rule, len);
  if (n < 0 || len != (size_t)n) {
    return fail(why, why_len, "not a domain name");
  }
  int k = name_to_ascii(ascii, sizeof(ascii), name, (size_t)n);
  if (k < 0) {
    return fail(why, why_len, "a label that is not UTF-8 or too long");
  }
  if (psl_add(p, name, (size_t)n, flags) != 0 ||
      (strcmp(name, ascii) != 0 && psl_add(p, ascii, (size_t)k, flags) != 0)) {
    return fail(why, why_len, "out of memory or too many rules");
  }
  return 0;
}

/* psl_parse reads the file's text: one rule per line, up to the first
 * blank; "//" lines are comments; both sections are rules alike. */
static int psl_parse(struct dmarc_psl *p, const char *text, size_t len,
                     const char *path, char *err, size_t err_len) {
  size_t line = 0;
  for (size_t i = 0; i < len;) {
    const char *nl = memchr(text + i, '\n', len - i);
    size_t n = nl != NULL ? (size_t)(nl - (text + i)) : len - i;
    const char *s = text + i;
    i += n + 1;
    line++;
    size_t k = 0;
    while (k < n && s[k] != ' ' && s[k] != '\t' && s[k] != '\r') {
      k++;
    }
    if (k == 0 || (k >= 2 && s[0] == '/' && s[1] == '/')) {
      continue;
    }
    char why[96];
    if (psl_rule(p, s, k, why, sizeof(why)) != 0) {
      return fail(err, err_len, "%s:%zu: %s", path, line, why);
    }
  }
  if (p->num == 0) {
    return fail(err, err_len, "%s: no rules", path);
  }
  return 0;
}

/* read_file reads all of path (at most max octets) into out. 0 or -1. */
static int read_file(struct buf *out, const char *path, size_t max, char *err,
                     size_t err_len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    return fail(err, err_len, "%s: %s", path, strerror(errno));
  }
  const char *why = NULL;
  for (;;) {
    if (buf_reserve(out, 65536) != 0) {
      why = "out of memory";
      break;
    }
    size_t n = fread(out->data + out->len, 1, out->cap - out->len, f);
    out->len += n;
    if (out->len > max) {
      why = "larger than the limit";
      break;
    }
    if (n == 0) {
      why = ferror(f) ? "read error" : NULL;
      break;
    }
  }
  fclose(f);
  return why != NULL ? fail(err, err_len, "%s: %s", path, why) : 0;
}

struct dmarc_psl *dmarc_psl_load(const char *path, char *err, size_t err_len) {
  struct buf text = {0};
  if (read_file(&text, path, DMARC_PSL_MAX_FILE, err, err_len) != 0) {
    buf_free(&text);
    return NULL;
  }
  struct dmarc_psl *p = calloc(1, sizeof(*p));
  if (p != NULL) {
    p->mask = 1023;
    p->slots = calloc(p->mask + 1, sizeof(*p->slots));
  }
  /* names[0] is a placeholder so offset 0 can mean "empty slot". */
  if (p == NULL || p->slots == NULL || buf_append(&p->names, "", 1) != 0) {
    fail(err, err_len, "%s: out of memory", path);
    buf_free(&text);
    dmarc_psl_free(p);
    return NULL;
  }
  int rc = psl_parse(p, (const char *)text.data, text.len, path, err, err_len);
  buf_free(&text);
  if (rc != 0) {
    dmarc_psl_free(p);
    return NULL;
  }
  return p;
}

void dmarc_psl_free(struct dmarc_psl *p) {
  if (p == NULL) {
    return;
  }
  free(p->slots);
  buf_free(&p->names);
  free(p);
}

/* public_suffix_labels: how many trailing labels of name (normalised,
 * labels starting at starts[0..n)) form its public suffix (PSL
 * algorithm: an exception rule wins, else the longest matching rule,
 * else "*", one label). */
static size_t public_suffix_labels(const struct dmarc_psl *p, const char *name,
                                   size_t name_len, const size_t *starts,
                                   size_t n) {
  if (p == NULL) {
    return 1;
  }
  for (size_t i = 0; i < n; i++) {
    const char *s = name + starts[i];
    if (psl_flags(p, s, name_len - starts[i]) & PSL_EXCEPT) {
      return n - i - 1;
    }
  }
  for (size_t i = 0; i < n; i++) {
    const char *s = name + starts[i];
    if (psl_flags(p, s, name_len - starts[i]) & PSL_RULE) {
      return n - i;
    }
    if (i + 1 < n &&
        (psl_flags(p, name + starts[i + 1], name_len - starts[i + 1]) &
         PSL_WILD)) {
      return n - i;
    }
  }
  return 1;
}

/* org_of: the organisational domain of a normalised name, as a suffix
 * of it (§3.2 steps 3-5). */
static const char *org_of(const struct dmarc_psl *p, const char *name) {
  size_t starts[DMARC_MAX_LABELS + 1], n = 0, len = strlen(name);
  starts[n++] = 0;
  for (size_t i = 0; i < len && n <= DMARC_MAX_LABELS; i++) {
    if (name[i] == '.') {
      starts[n++] = i + 1;
    }
  }
  size_t ps = public_suffix_labels(p, name, len, starts, n);
  return ps >= n ? name : name + starts[n - ps - 1];
}

int dmarc_org_domain(const struct dmarc_psl *p, const char *domain, char *out,
                     size_t out_len) {
  char name[DMARC_MAX_DOMAIN + 1];
  if (domain == NULL ||
      domain_norm(name, sizeof(name), domain, strlen(domain)) < 0) {
    return -1;
  }
  const char *org = org_of(p, name);
  size_t n = strlen(org);
  if (n + 1 > out_len) {
    return -1;
  }
  memcpy(out, org, n + 1);
  return 0;
}

int dmarc_aligned(const struct dmarc_psl *p, const char *a, const char *b,
                  int strict) {
  char na[DMARC_MAX_DOMAIN + 1], nb[DMARC_MAX_DOMAIN + 1];
  if (a == NULL || b == NULL || domain_norm(na, sizeof(na), a, strlen(a)) < 0 ||
      domain_norm(nb, sizeof(nb), b, strlen(b)) < 0) {
    return 0;
  }
  if (strcmp(na, nb) == 0) {
    return 1;
  }
  if (strict) {
    return 0;
  }
  if (p == NULL) {
    return is_subdomain(na, nb) || is_subdomain(nb, na);
  }
  return strcmp(org_of(p, na), org_of(p, nb)) == 0; /* §3.1.1, §3.1.2 */
}

/* ---- RFC 5322.From (§6.6.1) ---- */

/* The From field's value is read as a stream of octets by one state
 * machine: comments dropped, quoted strings reduced to one marker octet
 * (never part of a domain), blanks and line breaks dropped, so what is
 * left of each address is its addr-spec. */
#define FROM_QUOTED 0x01

struct from_scan {
  int comment;     /* comment depth */
  int quoted;      /* inside a quoted string */
  int escaped;     /* after a backslash in either */
  int in_angle;    /* inside <...> */
  int in_group;    /* after "display-name:" */
  int angles;      /* angle-addrs in this element */
  int after_angle; /* past '>' */
  int malformed;
  size_t num_addrs;
  char cur[DMARC_MAX_ADDR + 1]; /* this element's addr-spec so far */
  size_t cur_len;
  int cur_long;
  char first[DMARC_MAX_ADDR + 1]; /* the first address's addr-spec */
  int first_long;
};

static void from_put(struct from_scan *f, char c) {
  if (f->cur_len >= DMARC_MAX_ADDR) {
    f->cur_long = 1;
    return;
  }
  f->cur[f->cur_len++] = c;
}

static void from_reset(struct from_scan *f) {
  f->cur_len = 0;
  f->cur_long = 0;
  f->angles = 0;
  f->after_angle = 0;
}

/* from_element ends one address-list element (at "," ";" or the end). */
static void from_element(struct from_scan *f) {
  if (f->cur_len == 0 && f->angles == 0 && !f->cur_long) {
    from_reset(f);
    return; /* an empty element (obs-mbox-list) */
  }
  size_t n = f->angles > 1 ? (size_t)f->angles : 1;
  if (f->num_addrs == 0) {
    f->cur[f->cur_len] = '\0';
    memcpy(f->first, f->cur, f->cur_len + 1);
    f->first_long = f->cur_long;
  }
  f->num_addrs += n;
  from_reset(f);
}

/* from_special handles an octet outside comments and quotes. */
static void from_special(struct from_scan *f, uint8_t c) {
  if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
    return;
  }
  if (f->in_angle) {
    if (c == '>') {
      f->in_angle = 0;
      f->after_angle = 1;
    } else if (c == '<') {
      f->malformed = 1;
    } else {
      from_put(f, (char)c); /* obs-route "@a,@b:" kept, cut later */
    }
    return;
  }
  switch (c) {
  case '<':
    f->in_angle = 1;
    if (f->angles++ == 0) {
      f->cur_len = 0; /* what came before was the display name */
      f->cur_long = 0;
    }
    return;
  case '>':
    f->malformed = 1;
    return;
  case ',':
    from_element(f);
    return;
  case ':':
    if (f->in_group || f->angles > 0) {
      f->malformed = 1;
    }
    f->in_group = 1;
    from_reset(f); /* the group's display name */
    return;
  case ';':
    from_element(f);
    f->in_group = 0;
    return;
  default:
    if (!f->after_angle) {
      from_put(f, (char)c);
    }
    return;
  }
}

static void from_octet(struct from_scan *f, uint8_t c) {
  if (f->escaped) {
    f->escaped = 0;
    return;
  }
  if (f->comment > 0) {
    if (c == '\\') {
      f->escaped = 1;
    } else if (c == '(') {
      f->comment++;
    } else if (c == ')') {
      f->comment--;
    }
    return;
  }
  if (f->quoted) {
    if (c == '\\') {
      f->escaped = 1;
    } else if (c == '"') {
      f->quoted = 0;
    }
    return;
  }
  if (c == '(') {
    f->comment = 1;
  } else if (c == '"') {
    f->quoted = 1;
    if (!f->after_angle) {
      from_put(f, FROM_QUOTED);
    }
  } else {
    from_special(f, c);
  }
}

/* from_domain_of: the domain of an addr-spec (obs-route cut off) into
 * out. 0 or -1. */
static int from_domain_of(const char *addr, char *out, size_t out_len) {
  const char *colon = strrchr(addr, ':');
  if (colon != NULL) {
    addr = colon + 1;
  }
  const char *at = strrchr(addr, '@');
  if (at == NULL || at == addr || at[1] == '[') {
    return -1; /* no domain, or a domain-literal */
  }
  return domain_norm(out, out_len, at + 1, strlen(at + 1)) < 0 ? -1 : 0;
}

/* header_end: the length of the header block (up to the empty line). */
static size_t header_end(const uint8_t *msg, size_t len) {
  if (len > 0 &&
      (msg[0] == '\n' || (msg[0] == '\r' && len > 1 && msg[1] == '\n'))) {
    return 0; /* no header at all */
  }
  for (size_t i = 0; i < len; i++) {
    if (msg[i] == '\n' &&
        (i + 1 == len || msg[i + 1] == '\n' ||
         (msg[i + 1] == '\r' && i + 2 < len && msg[i + 2] == '\n'))) {
      return i + 1;
    }
  }
  return len;
}

/* field_is_from: 1 if the line at s starts a "From:" field (the name
 * case-insensitive, RFC 5322 §4.5.3 obs blanks before the colon);
 * *value is set to the octet after the colon. */
static int field_is_from(const uint8_t *s, size_t len, size_t *value) {
  if (len < 5 || span_lower(s[0]) != 'f' || span_lower(s[1]) != 'r' ||
      span_lower(s[2]) != 'o' || span_lower(s[3]) != 'm') {
    return 0;
  }
  size_t i = 4;
  while (i < len && span_is_wsp(s[i])) {
    i++;
  }
  if (i >= len || s[i] != ':') {
    return 0;
  }
  *value = i + 1;
  return 1;
}

/* field_end: the end of the field starting at i (its folded lines). */
static size_t field_end(const uint8_t *msg, size_t len, size_t i) {
  for (;;) {
    const uint8_t *nl = memchr(msg + i, '\n', len - i);
    if (nl == NULL) {
      return len;
    }
    i = (size_t)(nl - msg) + 1;
    if (i >= len || !span_is_wsp(msg[i])) {
      return i;
    }
  }
}

int dmarc_from_domain(const uint8_t *msg, size_t len, char *out, size_t out_len,
                      char *why, size_t why_len) {
  if (out_len > 0) {
    out[0] = '\0';
  }
  size_t end = header_end(msg, len), num_from = 0, from_at = 0, from_end = 0;
  for (size_t i = 0; i < end;) {
    size_t next = field_end(msg, end, i), value;
    if (field_is_from(msg + i, next - i, &value)) {
      num_from++;
      from_at = i + value;
      from_end = next;
    }
    i = next;
  }
  if (num_from == 0) {
    return fail(why, why_len, "no From field");
  }
  if (num_from > 1) {
    return fail(why, why_len, "%zu From fields", num_from);
  }
  if (from_end - from_at > DMARC_MAX_FROM) {
    return fail(why, why_len, "From field longer than %d octets",
                DMARC_MAX_FROM);
  }
  struct from_scan *f = calloc(1, sizeof(*f));
  if (f == NULL) {
    return fail(why, why_len, "out of memory");
  }
  for (size_t i = from_at; i < from_end; i++) {
    from_octet(f, msg[i]);
  }
  from_element(f);
  int rc = 0;
  if (f->malformed || f->comment > 0 || f->quoted || f->in_angle) {
    rc = fail(why, why_len, "malformed From field");
  } else if (f->num_addrs != 1) {
    rc = f->num_addrs == 0
             ? fail(why, why_len, "From without an address")
             : fail(why, why_len, "From with %zu addresses", f->num_addrs);
  } else if (f->first_long || from_domain_of(f->first, out, out_len) != 0) {
    if (out_len > 0) {
      out[0] = '\0';
    }
    rc = fail(why, why_len, "From without a domain");
  }
  free(f);
  return rc;
}

/* ---- one message (§6.6) ---- */

const char *dmarc_result_name(enum dmarc_result r) {
  switch (r) {
  case DMARC_RESULT_NONE:
    return "none";
  case DMARC_RESULT_PASS:
    return "pass";
  case DMARC_RESULT_FAIL:
    return "fail";
  case DMARC_RESULT_TEMPERROR:
    return "temperror";
  case DMARC_RESULT_PERMERROR:
    return "permerror";
  }
  return "?";
}

/* alignment finds aligned passes (§4.2: either one is a DMARC pass). */
static void alignment(const struct dmarc_psl *psl, const char *from,
                      const struct dmarc_auth *auth,
                      const struct dmarc_record *rec,
                      struct dmarc_outcome *out) {
  if (auth == NULL) {
    return;
  }
  out->spf_aligned =
      auth->spf_pass && auth->spf_domain != NULL &&
      dmarc_aligned(psl, auth->spf_domain, from, rec->aspf_strict);
  size_t n = auth->num_dkim < DMARC_MAX_DKIM ? auth->num_dkim : DMARC_MAX_DKIM;
  for (size_t i = 0; i < n && !out->dkim_aligned; i++) {
    out->dkim_aligned =
        auth->dkim[i].pass && auth->dkim[i].domain != NULL &&
        dmarc_aligned(psl, auth->dkim[i].domain, from, rec->adkim_strict);
  }
}

/* applied_policy: p, or sp when the record came from the organisational
 * domain and From is a subdomain of it (§6.3 sp, §6.6.3). */
static enum dmarc_policy applied_policy(const struct dmarc_psl *psl,
                                        const char *from,
                                        const struct dmarc_lookup *lookup) {
  if (!lookup->at_org) {
    return lookup->rec->p;
  }
  char org[DMARC_MAX_DOMAIN + 1], norm[DMARC_MAX_DOMAIN + 1];
  if (dmarc_org_domain(psl, from, org, sizeof(org)) == 0 &&
      domain_norm(norm, sizeof(norm), from, strlen(from)) >= 0 &&
      strcmp(org, norm) == 0) {
    return lookup->rec->p;
  }
  return lookup->rec->sp;
}

void dmarc_evaluate(const struct dmarc_psl *psl, const char *from_domain,
                    const struct dmarc_auth *auth,
                    const struct dmarc_lookup *lookup, unsigned sample,
                    struct dmarc_outcome *out) {
  memset(out, 0, sizeof(*out));
  out->policy = out->disposition = DMARC_P_NONE;
  if (from_domain == NULL) {
    out->result = DMARC_RESULT_PERMERROR;
    snprintf(out->reason, sizeof(out->reason), "result=permerror from=none");
    return;
  }
  if (lookup == NULL || lookup->status == DMARC_LOOKUP_TEMPFAIL) {
    out->result = DMARC_RESULT_TEMPERROR;
    snprintf(out->reason, sizeof(out->reason), "result=temperror");
    return;
  }
  if (lookup->status != DMARC_LOOKUP_FOUND || lookup->rec == NULL) {
    out->result = DMARC_RESULT_NONE;
    snprintf(out->reason, sizeof(out->reason), "result=none");
    return;
  }
  const struct dmarc_record *rec = lookup->rec;
  if (sample > 99) {
    sample = 99; /* the caller's contract is [0, 100) */
  }
  alignment(psl, from_domain, auth, rec, out);
  out->result = out->spf_aligned || out->dkim_aligned ? DMARC_RESULT_PASS
                                                      : DMARC_RESULT_FAIL;
  out->policy = applied_policy(psl, from_domain, lookup);
  if (out->result == DMARC_RESULT_FAIL) {
    out->disposition = out->policy;
    /* §6.6.4: a message not taken by pct gets the next lower policy:
     * reject is treated as quarantine, quarantine as none. */
    if (sample >= rec->pct && out->policy != DMARC_P_NONE) {
      out->sampled_out = 1;
      out->disposition = (enum dmarc_policy)(out->policy - 1);
    }
  }
  snprintf(out->reason, sizeof(out->reason),
           "result=%s policy=%s disposition=%s spf_aligned=%d "
           "dkim_aligned=%d pct=%u%s%s",
           dmarc_result_name(out->result), dmarc_policy_name(out->policy),
           dmarc_policy_name(out->disposition), out->spf_aligned,
           out->dkim_aligned, rec->pct, out->sampled_out ? " sampled_out" : "",
           rec->p_invalid ? " p_invalid" : "");
}

/* ---- aggregate reports (§7.2, Appendix C) ---- */

struct wr {
  struct buf *b;
  int err; /* set by the first failure; later calls do nothing */
};

static void wr_mem(struct wr *w, const void *p, size_t n) {
  if (!w->err && buf_append(w->b, p, n) != 0) {
    w->err = 1;
  }
}

static void wr_str(struct wr *w, const char *s) {
  wr_mem(w, s, strlen(s));
}

/* xml_text writes s escaped for element content (XML 1.0 §2.4); controls
 * and octets that are not well-formed UTF-8 (or are U+FFFE/U+FFFF, not
 * XML characters) become '?'. */
static void xml_text(struct wr *w, const char *s) {
  const uint8_t *p = (const uint8_t *)s;
  size_t left = strlen(s);
  while (left > 0) {
    size_t n = 1;
    switch (p[0]) {
    case '&':
      wr_str(w, "&amp;");
      break;
    case '<':
      wr_str(w, "&lt;");
      break;
    case '>':
      wr_str(w, "&gt;");
      break;
    case '"':
      wr_str(w, "&quot;");
      break;
    case '\'':
      wr_str(w, "&apos;");
      break;
    default:
      if (p[0] < 0x20 || p[0] == 0x7f) {
        wr_str(w, "?");
      } else if (p[0] < 0x80) {
        wr_mem(w, p, 1);
      } else if ((n = smtp_addr_utf8_len(p, left)) > 0 &&
                 !(n == 3 && p[0] == 0xef && p[1] == 0xbf && p[2] >= 0xbe)) {
        wr_mem(w, p, n);
      } else {
        n = n > 0 ? n : 1;
        wr_str(w, "?");
      }
    }
    p += n;
    left -= n;
  }
}

/* xml_elem writes <name>text</name> at indent. */
static void xml_elem(struct wr *w, int indent, const char *name,
                     const char *text) {
  static const char spaces[] = "          ";
  wr_mem(w, spaces, (size_t)indent);
  wr_str(w, "<");
  wr_str(w, name);
  wr_str(w, ">");
  xml_text(w, text);
  wr_str(w, "</");
  wr_str(w, name);
  wr_str(w, ">\n");
}

static void xml_open(struct wr *w, int indent, const char *name, int open) {
  static const char spaces[] = "          ";
  wr_mem(w, spaces, (size_t)indent);
  wr_str(w, open ? "<" : "</");
  wr_str(w, name);
  wr_str(w, ">\n");
}

/* fixed_str: s (an array of n octets) if NUL-terminated within it. */
static const char *fixed_str(const char *s, size_t n) {
  return memchr(s, '\0', n) != NULL ? s : NULL;
}

#define FIXED(a) fixed_str((a), sizeof(a))

/* ip_canon writes source_ip in the form the schema's IPAddress pattern
 * accepts: dotted IPv4, or IPv6 as eight groups (RFC 4291 §2.2 form 1,
 * no "::", which the pattern lacks). 0 or -1. */
static int ip_canon(const char *ip, char out[64]) {
  uint8_t a[16];
  if (inet_pton(AF_INET, ip, a) == 1) {
    snprintf(out, 64, "%u.%u.%u.%u", a[0], a[1], a[2], a[3]);
    return 0;
  }
  if (inet_pton(AF_INET6, ip, a) != 1) {
    return -1;
  }
  static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (memcmp(a, mapped, 12) == 0) {
    snprintf(out, 64, "%u.%u.%u.%u", a[12], a[13], a[14], a[15]);
    return 0;
  }
  size_t n = 0;
  for (int i = 0; i < 8; i++) {
    n += (size_t)snprintf(out + n, 64 - n, "%s%x", i ? ":" : "",
                          (unsigned)(a[2 * i] << 8 | a[2 * i + 1]));
  }
  return 0;
}

/* result_name maps a DKIM or SPF result onto the schema's names
 * (DKIMResultType, SPFResultType); NULL if it is none of them. */
static const char *result_name(const char *r, int spf) {
  static const char *const dkim[] = {
      "none", "pass", "fail", "policy", "neutral", "temperror", "permerror"};
  static const char *const spfs[] = {
      "none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"};
  const char *const *names = spf ? spfs : dkim;
  if (r == NULL || r[0] == '\0') {
    return "none";
  }
  for (size_t i = 0; i < 7; i++) {
    if (strcasecmp(r, names[i]) == 0) {
      return names[i];
    }
  }
  /* RFC 8601 §2.7 and the schema's own comments: older names. */
  if (strcasecmp(r, "hardfail") == 0) {
    return "fail";
  }
  if (strcasecmp(r, "unknown") == 0) {
    return "temperror";
  }
  if (strcasecmp(r, "error") == 0) {
    return "permerror";
  }
  return NULL;
}

/* xml_meta writes version, report_metadata and policy_published. */
static void xml_meta(struct wr *w, const struct dmarc_report_meta *m) {
  char num[32];
  const struct dmarc_record *r = m->policy;
  xml_elem(w, 2, "version", "1.0");
  xml_open(w, 2, "report_metadata", 1);
  xml_elem(w, 4, "org_name", m->org_name);
  xml_elem(w, 4, "email", m->email);
  xml_elem(w, 4, "report_id", m->report_id);
  xml_open(w, 4, "date_range", 1);
  snprintf(num, sizeof(num), "%lld", (long long)m->begin);
  xml_elem(w, 6, "begin", num);
  snprintf(num, sizeof(num), "%lld", (long long)m->end);
  xml_elem(w, 6, "end", num);
  xml_open(w, 4, "date_range", 0);
  xml_open(w, 2, "report_metadata", 0);
  xml_open(w, 2, "policy_published", 1);
  xml_elem(w, 4, "domain", m->domain);
  xml_elem(w, 4, "adkim", r->adkim_strict ? "s" : "r");
  xml_elem(w, 4, "aspf", r->aspf_strict ? "s" : "r");
  xml_elem(w, 4, "p", dmarc_policy_name(r->p));
  xml_elem(w, 4, "sp", dmarc_policy_name(r->sp));
  snprintf(num, sizeof(num), "%u", r->pct);
  xml_elem(w, 4, "pct", num);
  xml_elem(w, 4, "fo", FIXED(r->fo) != NULL ? r->fo : "0");
  xml_open(w, 2, "policy_published", 0);
}

/* row_check: every string of the row terminated, its results and
 * address usable. 0 or -1. */
static int row_check(const struct dmarc_report_row *row, char ip[64]) {
  if (row->num_dkim > 4 || (unsigned)row->disposition > DMARC_P_REJECT ||
      FIXED(row->source_ip) == NULL || ip_canon(row->source_ip, ip) != 0 ||
      FIXED(row->header_from) == NULL || FIXED(row->envelope_from) == NULL ||
      FIXED(row->spf_domain) == NULL || FIXED(row->spf_scope) == NULL ||
      FIXED(row->spf_result) == NULL ||
      result_name(row->spf_result, 1) == NULL) {
    return -1;
  }
  if (row->spf_scope[0] != '\0' && strcmp(row->spf_scope, "mfrom") != 0 &&
      strcmp(row->spf_scope, "helo") != 0) {
    return -1;
  }
  for (size_t i = 0; i < row->num_dkim; i++) {
    if (FIXED(row->dkim[i].domain) == NULL ||
        FIXED(row->dkim[i].selector) == NULL ||
        FIXED(row->dkim[i].result) == NULL ||
        result_name(row->dkim[i].result, 0) == NULL) {
      return -1;
    }
  }
  return 0;
}

/* xml_record writes one record: row, identifiers, auth_results. */
static void xml_record(struct wr *w, const struct dmarc_report_row *row,
                       const char *ip) {
  char num[32];
  xml_open(w, 2, "record", 1);
  xml_open(w, 4, "row", 1);
  xml_elem(w, 6, "source_ip", ip);
  snprintf(num, sizeof(num), "%llu", (unsigned long long)row->count);
  xml_elem(w, 6, "count", num);
  xml_open(w, 6, "policy_evaluated", 1);
  xml_elem(w, 8, "disposition", dmarc_policy_name(row->disposition));
  xml_elem(w, 8, "dkim", row->dkim_aligned_pass ? "pass" : "fail");
  xml_elem(w, 8, "spf", row->spf_aligned_pass ? "pass" : "fail");
  xml_open(w, 6, "policy_evaluated", 0);
  xml_open(w, 4, "row", 0);
  xml_open(w, 4, "identifiers", 1);
  xml_elem(w, 6, "envelope_from", row->envelope_from);
  xml_elem(w, 6, "header_from", row->header_from);
  xml_open(w, 4, "identifiers", 0);
  xml_open(w, 4, "auth_results", 1);
  for (size_t i = 0; i < row->num_dkim; i++) {
    xml_open(w, 6, "dkim", 1);
    xml_elem(w, 8, "domain", row->dkim[i].domain);
    if (row->dkim[i].selector[0] != '\0') {
      xml_elem(w, 8, "selector", row->dkim[i].selector);
    }
    xml_elem(w, 8, "result", result_name(row->dkim[i].result, 0));
    xml_open(w, 6, "dkim", 0);
  }
  xml_open(w, 6, "spf", 1);
  xml_elem(w, 8, "domain", row->spf_domain);
  xml_elem(w, 8, "scope", row->spf_scope[0] != '\0' ? row->spf_scope : "mfrom");
  xml_elem(w, 8, "result", result_name(row->spf_result, 1));
  xml_open(w, 6, "spf", 0);
  xml_open(w, 4, "auth_results", 0);
  xml_open(w, 2, "record", 0);
}

int dmarc_report_xml(const struct dmarc_report_meta *meta,
                     const struct dmarc_report_row *rows, size_t num_rows,
                     struct buf *out) {
  if (meta == NULL || meta->org_name == NULL || meta->email == NULL ||
      meta->report_id == NULL || meta->domain == NULL || meta->policy == NULL ||
      rows == NULL || num_rows == 0) {
    return -1;
  }
  size_t start = out->len;
  struct wr w = {out, 0};
  wr_str(&w, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feedback>\n");
  xml_meta(&w, meta);
  for (size_t i = 0; i < num_rows && !w.err; i++) {
    char ip[64];
    if (row_check(&rows[i], ip) != 0) {
      w.err = 1;
      break;
    }
    xml_record(&w, &rows[i], ip);
  }
  wr_str(&w, "</feedback>\n");
  if (w.err) {
    out->len = start;
    return -1;
  }
  return 0;
}

int dmarc_report_filename(const struct dmarc_report_meta *meta, char *out,
                          size_t out_len) {
  /* §7.2.1.1: filename = receiver "!" policy-domain "!" begin-timestamp
   * "!" end-timestamp [ "!" unique-id ] "." extension */
  char receiver[DMARC_MAX_DOMAIN + 1], domain[DMARC_MAX_DOMAIN + 1];
  if (out_len > 0) {
    out[0] = '\0';
  }
  if (meta == NULL || meta->org_name == NULL || meta->domain == NULL ||
      meta->begin < 0 || meta->end < meta->begin ||
      domain_norm(receiver, sizeof(receiver), meta->org_name,
                  strlen(meta->org_name)) < 0 ||
      domain_norm(domain, sizeof(domain), meta->domain, strlen(meta->domain)) <
          0) {
    return -1;
  }
  int n = snprintf(out, out_len, "%s!%s!%lld!%lld.xml.gz", receiver, domain,
                   (long long)meta->begin, (long long)meta->end);
  if (n < 0 || (size_t)n >= out_len) {
    if (out_len > 0) {
      out[0] = '\0';
    }
    return -1;
  }
  return 0;
}

static int hex_value(uint8_t c) {
  if (span_is_digit(c)) {
    return c - '0';
  }
  c = span_lower(c);
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* mailbox_ok: one plain ASCII mailbox: local "@" domain, no blanks,
 * quotes, brackets, commas. */
static int mailbox_ok(const char *a) {
  const char *at = strchr(a, '@');
  char d[DMARC_MAX_DOMAIN + 1];
  if (at == NULL || at == a || strchr(at + 1, '@') != NULL ||
      domain_norm(d, sizeof(d), at + 1, strlen(at + 1)) < 0) {
    return 0;
  }
  for (const char *p = a; *p != '\0'; p++) {
    uint8_t c = (uint8_t)*p;
    if (c <= 0x20 || c >= 0x7f || strchr(",<>\"\\()[];:", c) != NULL) {
      return 0;
    }
  }
  return 1;
}

int dmarc_rua_mailto(const char *uri, char *addr, size_t addr_len) {
  if (addr_len > 0) {
    addr[0] = '\0';
  }
  if (uri == NULL || strncasecmp(uri, "mailto:", 7) != 0 || addr_len == 0) {
    return -1;
  }
  size_t n = 0;
  /* The size suffix ("!") and RFC 6068 hfields ("?") end the address. */
  for (const char *p = uri + 7; *p != '\0' && *p != '!' && *p != '?'; p++) {
    int c = (uint8_t)*p;
    if (c == '%') {
      int hi = p[1] != '\0' ? hex_value((uint8_t)p[1]) : -1;
      int lo = hi >= 0 && p[2] != '\0' ? hex_value((uint8_t)p[2]) : -1;
      if (lo < 0) {
        addr[0] = '\0';
        return -1;
      }
      c = hi * 16 + lo;
      p += 2;
    }
    if (n + 1 >= addr_len || c == 0) {
      addr[0] = '\0';
      return -1;
    }
    addr[n++] = (char)c;
  }
  addr[n] = '\0';
  if (!mailbox_ok(addr)) {
    addr[0] = '\0';
    return -1;
  }
  return 0;
}

int dmarc_external_check_name(const struct dmarc_psl *p,
                              const char *policy_domain, const char *rua_domain,
                              char *out, size_t out_len) {
  char pd[DMARC_MAX_DOMAIN + 1], rd[DMARC_MAX_DOMAIN + 1];
  if (out_len > 0) {
    out[0] = '\0';
  }
  if (policy_domain == NULL || rua_domain == NULL ||
      domain_norm(pd, sizeof(pd), policy_domain, strlen(policy_domain)) < 0 ||
      domain_norm(rd, sizeof(rd), rua_domain, strlen(rua_domain)) < 0) {
    return -2;
  }
  /* §7.1: a destination in the policy domain's organisational domain
   * needs no authorisation record. */
  if (strcmp(org_of(p, pd), org_of(p, rd)) == 0) {
    return -1;
  }
  int n = snprintf(out, out_len, "%s._report._dmarc.%s", pd, rd);
  if (n < 0 || (size_t)n >= out_len || n > DMARC_MAX_DOMAIN) {
    if (out_len > 0) {
      out[0] = '\0';
    }
    return -2;
  }
  return 0;
}
