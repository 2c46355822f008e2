/* crypto/dkim.c — DKIM signing and verification (RFC 6376, RFC 8463,
 * RFC 8301); the contract is in dkim.h.
 *
 * Layout: tag lists, canonicalisation (body streaming, header fields),
 * header selection, keys and the in-process signer, signing (two passes),
 * verification (parse every DKIM-Signature at once, then one key at a
 * time). Every parser reads the message in place; the only copies are a
 * canonicalised header field at a time and decoded base64. */
#include "crypto/dkim.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/base64.h>
#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/curve25519.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>

#include "core/span.h"

/* The opaque hash state in struct dkim_body must hold a SHA256_CTX. */
static_assert(sizeof(SHA256_CTX) <= sizeof(((struct dkim_body *)0)->ctx),
              "dkim_body.ctx too small for SHA256_CTX");
static_assert(offsetof(struct dkim_body, ctx) == 0 &&
                  _Alignof(struct dkim_body) >= _Alignof(SHA256_CTX),
              "dkim_body.ctx misaligned for SHA256_CTX");

#define DKIM_MIN_RSA_BITS 1024
#define DKIM_MAX_RSA_BITS (DKIM_MAX_SIG_BYTES * 8)
#define DKIM_MAX_TAGS 64        /* tags in one signature or key record */
#define DKIM_MAX_KEY_FILE 65536 /* a PEM private key file */
#define DKIM_MAX_DNS_NAME 253   /* d=, s= (RFC 1035 §2.3.4) */
#define DKIM_MAX_IDENTITY 255   /* i= */
#define DKIM_MAX_NUM_DIGITS 18  /* t=, x=, l=: fits int64_t */
#define DKIM_FOLD_WIDTH 78      /* RFC 5322 §2.1.1 */
#define DKIM_B_PREFIX 8         /* RFC 6008 §4 */

/* ---- small helpers ---- */

__attribute__((format(printf, 3, 4))) static void
fmt_err(char *err, size_t err_len, const char *fmt, ...) {
  if (err == NULL || err_len == 0) {
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, err_len, fmt, ap);
  va_end(ap);
}

static int is_wsp(uint8_t c) {
  return c == ' ' || c == '\t';
}

static int is_fws_byte(uint8_t c) {
  return is_wsp(c) || c == '\r' || c == '\n';
}

/* ci_eq compares a slice with a NUL-terminated string, ASCII case folded. */
static int ci_eq(const uint8_t *p, size_t len, const char *s) {
  size_t n = strlen(s);
  if (n != len) {
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    if (span_lower(p[i]) != span_lower((uint8_t)s[i])) {
      return 0;
    }
  }
  return 1;
}

static int ci_eq_n(const uint8_t *a, size_t a_len, const uint8_t *b,
                   size_t b_len) {
  if (a_len != b_len) {
    return 0;
  }
  for (size_t i = 0; i < a_len; i++) {
    if (span_lower(a[i]) != span_lower(b[i])) {
      return 0;
    }
  }
  return 1;
}

/* fws_len: length of one folding-white-space unit at s[i] (RFC 5322
 * §3.2.2: a WSP, or a line break followed by WSP; a lone LF stands for
 * CRLF as everywhere in this module), 0 if none. */
static size_t fws_len(const uint8_t *s, size_t i, size_t len) {
  if (is_wsp(s[i])) {
    return 1;
  }
  if (s[i] == '\r' && i + 2 < len && s[i + 1] == '\n' && is_wsp(s[i + 2])) {
    return 3;
  }
  if (s[i] == '\n' && i + 1 < len && is_wsp(s[i + 1])) {
    return 2;
  }
  return 0;
}

/* slice_trim drops folding white space at both ends. */
static struct span slice_trim(struct span s) {
  while (s.len > 0 && is_fws_byte(s.p[0])) {
    s.p++;
    s.len--;
  }
  while (s.len > 0 && is_fws_byte(s.p[s.len - 1])) {
    s.len--;
  }
  return s;
}

/* slice_next_item cuts the next sep-separated item off *s, trimmed.
 * Returns 0 when *s is exhausted. */
static int slice_next_item(struct span *s, uint8_t sep, struct span *out) {
  if (s->p == NULL) {
    return 0;
  }
  const uint8_t *end = memchr(s->p, sep, s->len);
  size_t n = end != NULL ? (size_t)(end - s->p) : s->len;
  *out = slice_trim((struct span){s->p, n});
  if (end != NULL) {
    s->p = end + 1;
    s->len -= n + 1;
  } else {
    s->p = NULL;
    s->len = 0;
  }
  return 1;
}

/* list_has: does the sep-separated list hold want (case-insensitive)? */
static int list_has(struct span list, uint8_t sep, const char *want) {
  struct span item;
  while (slice_next_item(&list, sep, &item)) {
    if (ci_eq(item.p, item.len, want)) {
      return 1;
    }
  }
  return 0;
}

/* parse_num reads 1*DKIM_MAX_NUM_DIGITS DIGIT. Returns 0 or -1. */
static int parse_num(struct span s, int64_t *out) {
  if (s.len == 0 || s.len > DKIM_MAX_NUM_DIGITS) {
    return -1;
  }
  int64_t v = 0;
  for (size_t i = 0; i < s.len; i++) {
    if (!span_is_digit(s.p[i])) {
      return -1;
    }
    v = v * 10 + (s.p[i] - '0');
  }
  *out = v;
  return 0;
}

/* b64_decode decodes base64 with FWS anywhere in it (RFC 6376 §2.4).
 * Returns 0, or -1 if it is not base64 or does not fit in cap. */
static int b64_decode(struct span in, uint8_t *out, size_t cap,
                      size_t *out_len) {
  *out_len = 0;
  if (in.len > DKIM_MAX_TAG_VALUE) {
    return -1;
  }
  uint8_t *compact = malloc(in.len + 1);
  if (compact == NULL) {
    return -1;
  }
  size_t n = 0;
  for (size_t i = 0; i < in.len; i++) {
    if (!is_fws_byte(in.p[i])) {
      compact[n++] = in.p[i];
    }
  }
  size_t max = 0;
  int rc = -1;
  if (n == 0) {
    rc = 0;
  } else if (EVP_DecodedLength(&max, n)) {
    uint8_t *tmp = malloc(max);
    size_t got = 0;
    if (tmp != NULL && EVP_DecodeBase64(tmp, &got, max, compact, n) &&
        got <= cap) {
      memcpy(out, tmp, got);
      *out_len = got;
      rc = 0;
    }
    free(tmp);
  }
  free(compact);
  ERR_clear_error();
  return rc;
}

/* b64_append appends the base64 of in to out. */
static int b64_append(struct buf *out, const uint8_t *in, size_t in_len) {
  size_t need = 0;
  if (!EVP_EncodedLength(&need, in_len) || buf_reserve(out, need) != 0) {
    return -1;
  }
  out->len += EVP_EncodeBlock(out->data + out->len, in, in_len);
  return 0;
}

const char *dkim_alg_name(enum dkim_alg a) {
  switch (a) {
  case DKIM_ALG_RSA_SHA256:
    return "rsa-sha256";
  case DKIM_ALG_ED25519_SHA256:
    return "ed25519-sha256";
  case DKIM_ALG_RSA_SHA1:
    return "rsa-sha1";
  }
  return "unknown";
}

const char *dkim_result_name(enum dkim_result r) {
  switch (r) {
  case DKIM_PASS:
    return "pass";
  case DKIM_FAIL:
    return "fail";
  case DKIM_NEUTRAL:
    return "neutral";
  case DKIM_TEMPERROR:
    return "temperror";
  case DKIM_PERMERROR:
    return "permerror";
  }
  return "unknown";
}

static int canon_one(struct span s, enum dkim_canon *out) {
  if (ci_eq(s.p, s.len, "simple")) {
    *out = DKIM_CANON_SIMPLE;
  } else if (ci_eq(s.p, s.len, "relaxed")) {
    *out = DKIM_CANON_RELAXED;
  } else {
    return -1;
  }
  return 0;
}

/* canon_parse_n reads a c= value (RFC 6376 §3.5): header[/body], the
 * body part simple when absent. */
static int canon_parse_n(struct span s, enum dkim_canon *hdr,
                         enum dkim_canon *body) {
  const uint8_t *slash = s.len > 0 ? memchr(s.p, '/', s.len) : NULL;
  struct span h = {s.p, slash != NULL ? (size_t)(slash - s.p) : s.len};
  enum dkim_canon hc, bc = DKIM_CANON_SIMPLE;
  if (canon_one(h, &hc) != 0) {
    return -1;
  }
  if (slash != NULL) {
    struct span b = {slash + 1, s.len - h.len - 1};
    if (canon_one(b, &bc) != 0) {
      return -1;
    }
  }
  *hdr = hc;
  *body = bc;
  return 0;
}

int dkim_canon_parse(const char *s, enum dkim_canon *hdr,
                     enum dkim_canon *body) {
  if (s == NULL) {
    return -1;
  }
  return canon_parse_n((struct span){(const uint8_t *)s, strlen(s)}, hdr, body);
}

/* ---- tag lists (RFC 6376 §3.2) ---- */

static int is_valchar(uint8_t c) {
  return (c >= 0x21 && c <= 0x3a) || (c >= 0x3c && c <= 0x7e);
}

static int is_alnumpunc(uint8_t c) {
  return span_is_alnum(c) || c == '_';
}

/* tag_value_ok: tag-value = [ tval *( 1*(WSP / FWS) tval ) ]. */
static int tag_value_ok(const uint8_t *v, size_t len) {
  size_t i = 0;
  while (i < len) {
    size_t k;
    if (is_valchar(v[i])) {
      i++;
    } else if ((k = fws_len(v, i, len)) > 0) {
      i += k;
    } else {
      return 0;
    }
  }
  return 1;
}

/* tag_spec parses one tag-spec in s[a, b) (both ends already free of
 * FWS) into t. Returns NULL, or the reason it is not one. */
static const char *tag_spec(const uint8_t *s, size_t a, size_t b,
                            struct dkim_tag *t) {
  if (!span_is_alpha(s[a])) {
    return "bad tag name";
  }
  size_t i = a + 1;
  while (i < b && is_alnumpunc(s[i])) {
    i++;
  }
  t->name = (const char *)s + a;
  t->name_len = i - a;
  while (i < b && is_fws_byte(s[i])) {
    i++;
  }
  if (i >= b || s[i] != '=') {
    return i < b && !is_alnumpunc(s[i]) && s[i] != '=' ? "bad tag name"
                                                       : "missing '='";
  }
  i++;
  while (i < b && is_fws_byte(s[i])) {
    i++;
  }
  t->value = (const char *)s + i;
  t->value_len = b - i;
  if (t->value_len > DKIM_MAX_TAG_VALUE) {
    return "tag value too long";
  }
  if (!tag_value_ok(s + i, t->value_len)) {
    return "bad character in tag value";
  }
  return NULL;
}

int dkim_tags_parse(const char *str, size_t len, struct dkim_tag *tags,
                    size_t max, size_t *count, char *err, size_t err_len) {
  const uint8_t *s = (const uint8_t *)str;
  *count = 0;
  size_t pos = 0;
  while (pos < len) {
    const uint8_t *semi = memchr(s + pos, ';', len - pos);
    size_t end = semi != NULL ? (size_t)(semi - s) : len;
    size_t a = pos, b = end;
    while (a < b && is_fws_byte(s[a])) {
      a++;
    }
    while (b > a && is_fws_byte(s[b - 1])) {
      b--;
    }
    pos = end + 1;
    if (a == b) {
      if (end == len) {
        break; /* after a trailing ";", or an empty list */
      }
      fmt_err(err, err_len, "empty tag");
      return -1;
    }
    struct dkim_tag t;
    const char *why = tag_spec(s, a, b, &t);
    if (why != NULL) {
      fmt_err(err, err_len, "%s", why);
      return -1;
    }
    for (size_t j = 0; j < *count; j++) {
      if (tags[j].name_len == t.name_len &&
          memcmp(tags[j].name, t.name, t.name_len) == 0) {
        fmt_err(err, err_len, "duplicate tag %.*s", (int)t.name_len, t.name);
        return -1;
      }
    }
    if (*count >= max) {
      fmt_err(err, err_len, "too many tags");
      return -1;
    }
    tags[(*count)++] = t;
  }
  return 0;
}

/* tag_find: the tag named name (case-sensitive, §3.2), or NULL. */
static const struct dkim_tag *tag_find(const struct dkim_tag *tags,
                                       size_t count, const char *name) {
  size_t n = strlen(name);
  for (size_t i = 0; i < count; i++) {
    if (tags[i].name_len == n && memcmp(tags[i].name, name, n) == 0) {
      return &tags[i];
    }
  }
  return NULL;
}

static struct span tag_span(const struct dkim_tag *t) {
  return (struct span){(const uint8_t *)t->value, t->value_len};
}

/* ---- body canonicalisation (§3.4.3, §3.4.4) ---- */

static SHA256_CTX *body_sha(struct dkim_body *b) {
  return (SHA256_CTX *)(void *)b->ctx;
}

/* Canonical output is batched here before it reaches the hash. */
struct body_out {
  struct dkim_body *b;
  size_t n;
  uint8_t buf[512];
};

static void body_flush(struct body_out *o) {
  struct dkim_body *b = o->b;
  size_t take = o->n;
  if (b->limit >= 0) {
    uint64_t room = (uint64_t)b->limit - b->hashed;
    take = room < take ? (size_t)room : take;
  }
  if (take > 0) {
    SHA256_Update(body_sha(b), o->buf, take);
    b->hashed += take;
  }
  b->total += o->n;
  o->n = 0;
}

static void body_put(struct body_out *o, uint8_t c) {
  if (o->n == sizeof(o->buf)) {
    body_flush(o);
  }
  o->buf[o->n++] = c;
}

/* body_content takes one byte of line content: held empty lines are
 * real after all, and (relaxed) a held WSP run becomes one SP. */
static void body_content(struct body_out *o, uint8_t c) {
  struct dkim_body *b = o->b;
  if (b->canon == DKIM_CANON_RELAXED && is_wsp(c)) {
    b->wsp = 1;
    return;
  }
  for (; b->crlfs > 0; b->crlfs--) {
    body_put(o, '\r');
    body_put(o, '\n');
  }
  if (b->wsp) {
    body_put(o, ' ');
    b->wsp = 0;
    b->line_len++;
  }
  body_put(o, c);
  b->line_len++;
}

/* body_eol ends a line: an empty one is held back, since empty lines at
 * the end of the body vanish; relaxed drops WSP at the line's end. */
static void body_eol(struct body_out *o) {
  struct dkim_body *b = o->b;
  b->wsp = 0;
  if (b->line_len == 0) {
    b->crlfs++;
    return;
  }
  body_put(o, '\r');
  body_put(o, '\n');
  b->line_len = 0;
}

void dkim_body_init(struct dkim_body *b, enum dkim_canon canon, int64_t limit) {
  memset(b, 0, sizeof(*b));
  SHA256_Init(body_sha(b));
  b->canon = canon;
  b->limit = limit < 0 ? -1 : limit;
}

void dkim_body_update(struct dkim_body *b, const uint8_t *p, size_t n) {
  struct body_out o = {.b = b, .n = 0};
  for (size_t i = 0; i < n; i++) {
    uint8_t c = p[i];
    if (b->cr) {
      b->cr = 0;
      if (c == '\n') {
        body_eol(&o);
        continue;
      }
      body_content(&o, '\r'); /* a bare CR is content */
    }
    if (c == '\r') {
      b->cr = 1;
    } else if (c == '\n') {
      body_eol(&o); /* a lone LF stands for CRLF */
    } else {
      body_content(&o, c);
    }
  }
  body_flush(&o);
}

void dkim_body_final(struct dkim_body *b, uint8_t out[32],
                     uint64_t *out_total) {
  struct body_out o = {.b = b, .n = 0};
  if (b->cr) {
    b->cr = 0;
    body_content(&o, '\r');
  }
  b->wsp = 0;
  if (b->line_len > 0) { /* a last line without CRLF gets one */
    body_put(&o, '\r');
    body_put(&o, '\n');
    b->line_len = 0;
  }
  body_flush(&o);
  if (b->canon == DKIM_CANON_SIMPLE && b->total == 0) {
    body_put(&o, '\r'); /* §3.4.3: an empty body is one CRLF */
    body_put(&o, '\n');
    body_flush(&o);
  }
  b->crlfs = 0;
  SHA256_Final(out, body_sha(b));
  if (out_total != NULL) {
    *out_total = b->total;
  }
}

/* ---- header fields ---- */

/* header_fill records the field msg[start, end) in h. */
static void header_fill(struct dkim_header *h, const uint8_t *msg, size_t start,
                        size_t end) {
  h->field = msg + start;
  h->field_len = end - start;
  const uint8_t *colon = memchr(h->field, ':', h->field_len);
  size_t n = colon != NULL ? (size_t)(colon - h->field) : 0;
  while (n > 0 && is_fws_byte(h->field[n - 1])) {
    n--;
  }
  h->name = h->field;
  h->name_len = n;
}

size_t dkim_headers_split(const uint8_t *msg, size_t len,
                          struct dkim_header *out, size_t max,
                          size_t *body_off) {
  size_t pos = 0, n = 0;
  while (pos < len) {
    if (msg[pos] == '\n') {
      *body_off = pos + 1;
      return n;
    }
    if (msg[pos] == '\r' && pos + 1 < len && msg[pos + 1] == '\n') {
      *body_off = pos + 2;
      return n;
    }
    size_t start = pos, end = len;
    for (;;) {
      const uint8_t *lf = memchr(msg + pos, '\n', len - pos);
      if (lf == NULL) {
        end = len;
        pos = len;
        break;
      }
      size_t le = (size_t)(lf - msg);
      pos = le + 1;
      if (pos < len && is_wsp(msg[pos])) {
        continue; /* folded: the field goes on */
      }
      end = le > start && msg[le - 1] == '\r' ? le - 1 : le;
      break;
    }
    if (n < max) {
      header_fill(&out[n++], msg, start, end);
    }
  }
  *body_off = len;
  return n;
}

/* canon_simple copies the field, line breaks written as CRLF. */
static int canon_simple(const struct dkim_header *h, struct buf *out) {
  const uint8_t *f = h->field;
  size_t from = 0;
  for (size_t i = 0; i < h->field_len; i++) {
    if (f[i] == '\n' && (i == 0 || f[i - 1] != '\r')) {
      if (buf_append(out, f + from, i - from) != 0 ||
          buf_append(out, "\r\n", 2) != 0) {
        return -1;
      }
      from = i + 1;
    }
  }
  if (buf_append(out, f + from, h->field_len - from) != 0) {
    return -1;
  }
  return buf_append(out, "\r\n", 2);
}

/* canon_relaxed (§3.4.2): name lowercased, WSP around the colon gone,
 * unfolded, WSP runs as one SP, none at the end. */
static int canon_relaxed(const struct dkim_header *h, struct buf *out) {
  const uint8_t *f = h->field;
  const uint8_t *colon = memchr(f, ':', h->field_len);
  size_t name_end = colon != NULL ? (size_t)(colon - f) : h->field_len;
  if (buf_reserve(out, h->field_len + 3) != 0) {
    return -1;
  }
  uint8_t *w = out->data + out->len;
  for (size_t i = 0; i < name_end; i++) {
    if (!is_fws_byte(f[i])) {
      *w++ = span_lower(f[i]);
    }
  }
  if (colon != NULL) {
    *w++ = ':';
    int started = 0, space = 0;
    for (size_t i = name_end + 1; i < h->field_len; i++) {
      uint8_t c = f[i];
      if (c == '\n' ||
          (c == '\r' && i + 1 < h->field_len && f[i + 1] == '\n')) {
        continue; /* unfold */
      }
      if (is_wsp(c)) {
        space = started;
        continue;
      }
      if (space) {
        *w++ = ' ';
        space = 0;
      }
      *w++ = c;
      started = 1;
    }
  }
  *w++ = '\r';
  *w++ = '\n';
  out->len = (size_t)(w - out->data);
  return 0;
}

int dkim_header_canon(const struct dkim_header *h, enum dkim_canon canon,
                      struct buf *out) {
  return canon == DKIM_CANON_RELAXED ? canon_relaxed(h, out)
                                     : canon_simple(h, out);
}

/* hash_headers feeds the fields named in h= to sha (§5.4.2): for each
 * name the last instance not used yet, from the bottom up; a name with
 * none left contributes nothing. tmp is scratch. */
static int hash_headers(SHA256_CTX *sha, const struct dkim_header *hdrs,
                        size_t num_hdrs, const struct span *names,
                        size_t num_names, enum dkim_canon canon,
                        struct buf *tmp) {
  uint8_t used[(DKIM_MAX_HEADERS + 7) / 8] = {0};
  assert(num_hdrs <= DKIM_MAX_HEADERS);
  for (size_t i = 0; i < num_names; i++) {
    for (size_t j = num_hdrs; j-- > 0;) {
      if ((used[j / 8] & (1u << (j % 8))) != 0 ||
          !ci_eq_n(hdrs[j].name, hdrs[j].name_len, names[i].p, names[i].len)) {
        continue;
      }
      used[j / 8] |= (uint8_t)(1u << (j % 8));
      buf_reset(tmp);
      if (dkim_header_canon(&hdrs[j], canon, tmp) != 0) {
        return -1;
      }
      SHA256_Update(sha, tmp->data, tmp->len);
      break;
    }
  }
  return 0;
}

/* hash_sig_field feeds the DKIM-Signature field itself, canonicalised,
 * without its final CRLF (§3.7). */
static int hash_sig_field(SHA256_CTX *sha, const struct dkim_header *h,
                          enum dkim_canon canon, struct buf *tmp) {
  buf_reset(tmp);
  if (dkim_header_canon(h, canon, tmp) != 0) {
    return -1;
  }
  assert(tmp->len >= 2);
  SHA256_Update(sha, tmp->data, tmp->len - 2);
  return 0;
}

/* ---- private keys and the signer ---- */

struct dkim_key {
  EVP_PKEY *pkey;
  enum dkim_alg alg;
  unsigned bits;
  uint8_t ed_priv[ED25519_PRIVATE_KEY_LEN]; /* Ed25519: seed || public */
  uint8_t ed_pub[ED25519_PUBLIC_KEY_LEN];
};

void dkim_key_free(struct dkim_key *k) {
  if (k == NULL) {
    return;
  }
  EVP_PKEY_free(k->pkey);
  OPENSSL_cleanse(k, sizeof(*k));
  free(k);
}

enum dkim_alg dkim_key_alg(const struct dkim_key *k) {
  return k->alg;
}

unsigned dkim_key_bits(const struct dkim_key *k) {
  return k->bits;
}

/* key_wrap takes ownership of pkey and checks it is a usable DKIM key. */
static struct dkim_key *key_wrap(EVP_PKEY *pkey, char *err, size_t err_len) {
  struct dkim_key *k = calloc(1, sizeof(*k));
  if (k == NULL) {
    EVP_PKEY_free(pkey);
    fmt_err(err, err_len, "out of memory");
    return NULL;
  }
  k->pkey = pkey;
  int id = EVP_PKEY_id(pkey);
  if (id == EVP_PKEY_RSA) {
    k->alg = DKIM_ALG_RSA_SHA256;
    k->bits = RSA_bits(EVP_PKEY_get0_RSA(pkey));
    if (k->bits < DKIM_MIN_RSA_BITS || k->bits > DKIM_MAX_RSA_BITS) {
      fmt_err(err, err_len, "RSA key of %u bits (need %d..%d)", k->bits,
              DKIM_MIN_RSA_BITS, DKIM_MAX_RSA_BITS);
      dkim_key_free(k);
      return NULL;
    }
    return k;
  }
  if (id == EVP_PKEY_ED25519) {
    uint8_t seed[32];
    size_t seed_len = sizeof(seed);
    if (!EVP_PKEY_get_raw_private_key(pkey, seed, &seed_len) ||
        seed_len != sizeof(seed)) {
      ERR_clear_error();
      fmt_err(err, err_len, "Ed25519 key without a private part");
      dkim_key_free(k);
      return NULL;
    }
    ED25519_keypair_from_seed(k->ed_pub, k->ed_priv, seed);
    OPENSSL_cleanse(seed, sizeof(seed));
    k->alg = DKIM_ALG_ED25519_SHA256;
    k->bits = 256;
    return k;
  }
  fmt_err(err, err_len, "not an RSA or Ed25519 key");
  dkim_key_free(k);
  return NULL;
}

/* no_password refuses encrypted PEM keys instead of prompting. */
static int no_password(char *buf, int size, int rwflag, void *u) {
  (void)buf;
  (void)size;
  (void)rwflag;
  (void)u;
  return 0;
}

/* read_small_file reads at most max bytes of path into out. */
static int read_small_file(const char *path, size_t max, struct buf *out,
                           char *err, size_t err_len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    fmt_err(err, err_len, "%s: %s", path, strerror(errno));
    return -1;
  }
  for (;;) {
    if (buf_reserve(out, 4096) != 0) {
      close(fd);
      fmt_err(err, err_len, "%s: out of memory", path);
      return -1;
    }
    ssize_t n = read(fd, out->data + out->len, 4096);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      fmt_err(err, err_len, "%s: %s", path, strerror(errno));
      close(fd);
      return -1;
    }
    if (n == 0) {
      break;
    }
    out->len += (size_t)n;
    if (out->len > max) {
      fmt_err(err, err_len, "%s: larger than %zu bytes", path, max);
      close(fd);
      return -1;
    }
  }
  close(fd);
  return 0;
}

struct dkim_key *dkim_key_load(const char *path, char *err, size_t err_len) {
  struct buf pem = {0};
  if (read_small_file(path, DKIM_MAX_KEY_FILE, &pem, err, err_len) != 0) {
    OPENSSL_cleanse(pem.data, pem.cap);
    buf_free(&pem);
    return NULL;
  }
  BIO *bio = BIO_new_mem_buf(pem.data, (int)pem.len);
  EVP_PKEY *pkey = bio != NULL
                       ? PEM_read_bio_PrivateKey(bio, NULL, no_password, NULL)
                       : NULL;
  BIO_free(bio);
  OPENSSL_cleanse(pem.data, pem.cap);
  buf_free(&pem);
  if (pkey == NULL) {
    uint32_t e = ERR_peek_error();
    const char *why = ERR_reason_error_string(e);
    ERR_clear_error();
    fmt_err(err, err_len, "%s: no PEM private key (%s)", path,
            why != NULL ? why : "unreadable");
    return NULL;
  }
  char why[192] = "";
  struct dkim_key *k = key_wrap(pkey, why, sizeof(why));
  if (k == NULL) {
    fmt_err(err, err_len, "%s: %s", path, why);
  }
  return k;
}

/* pem_append writes der as a PEM block of the given label. */
static int pem_append(struct buf *out, const char *label, const uint8_t *der,
                      size_t der_len) {
  struct buf b64 = {0};
  int rc = -1;
  if (b64_append(&b64, der, der_len) != 0 ||
      buf_printf(out, "-----BEGIN %s-----\n", label) != 0) {
    goto done;
  }
  for (size_t i = 0; i < b64.len; i += 64) {
    size_t n = b64.len - i < 64 ? b64.len - i : 64;
    if (buf_append(out, b64.data + i, n) != 0 || buf_append(out, "\n", 1)) {
      goto done;
    }
  }
  rc = buf_printf(out, "-----END %s-----\n", label);
done:
  buf_free(&b64);
  return rc;
}

/* write_new_file writes data to a file that must not exist yet, mode
 * 0600, synced. Removes it again if anything fails. */
static int write_new_file(const char *path, const uint8_t *data, size_t len,
                          char *err, size_t err_len) {
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    fmt_err(err, err_len, "%s: %s", path, strerror(errno));
    return -1;
  }
  size_t off = 0;
  int rc = fchmod(fd, 0600); /* whatever the umask */
  while (rc == 0 && off < len) {
    ssize_t n = write(fd, data + off, len - off);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    rc = n < 0 ? -1 : 0;
    off += n > 0 ? (size_t)n : 0;
  }
  if (rc == 0) {
    rc = fsync(fd);
  }
  if (close(fd) != 0) {
    rc = -1;
  }
  if (rc != 0) {
    fmt_err(err, err_len, "%s: %s", path, strerror(errno));
    unlink(path);
  }
  return rc;
}

static EVP_PKEY *keygen_pkey(enum dkim_alg alg, unsigned bits) {
  if (alg == DKIM_ALG_ED25519_SHA256) {
    uint8_t pub[32], priv[64];
    ED25519_keypair(pub, priv);
    EVP_PKEY *p =
        EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, priv, 32);
    OPENSSL_cleanse(priv, sizeof(priv));
    return p;
  }
  RSA *rsa = RSA_new();
  BIGNUM *e = BN_new();
  EVP_PKEY *p = EVP_PKEY_new();
  if (rsa == NULL || e == NULL || p == NULL || !BN_set_word(e, RSA_F4) ||
      !RSA_generate_key_ex(rsa, (int)bits, e, NULL) ||
      !EVP_PKEY_assign_RSA(p, rsa)) {
    RSA_free(rsa);
    EVP_PKEY_free(p);
    p = NULL;
  }
  BN_free(e);
  return p;
}

struct dkim_key *dkim_keygen(enum dkim_alg alg, unsigned bits, const char *path,
                             char *err, size_t err_len) {
  if (alg == DKIM_ALG_RSA_SHA1 ||
      (alg == DKIM_ALG_RSA_SHA256 &&
       (bits < DKIM_MIN_RSA_BITS || bits > DKIM_MAX_RSA_BITS))) {
    fmt_err(err, err_len,
            "keygen: need rsa-sha256 with %d..%d bits, or "
            "ed25519-sha256",
            DKIM_MIN_RSA_BITS, DKIM_MAX_RSA_BITS);
    return NULL;
  }
  EVP_PKEY *pkey = keygen_pkey(alg, bits);
  CBB cbb;
  uint8_t *der = NULL;
  size_t der_len = 0;
  struct buf pem = {0};
  int ok = pkey != NULL && CBB_init(&cbb, 2048);
  if (ok) {
    ok =
        EVP_marshal_private_key(&cbb, pkey) && CBB_finish(&cbb, &der, &der_len);
    if (!ok) {
      CBB_cleanup(&cbb);
    }
  }
  ok = ok && pem_append(&pem, "PRIVATE KEY", der, der_len) == 0;
  if (der != NULL) {
    OPENSSL_cleanse(der, der_len);
    OPENSSL_free(der);
  }
  ERR_clear_error();
  if (!ok) {
    fmt_err(err, err_len, "keygen: key generation failed");
  } else if (write_new_file(path, pem.data, pem.len, err, err_len) != 0) {
    ok = 0;
  }
  OPENSSL_cleanse(pem.data, pem.cap);
  buf_free(&pem);
  if (!ok) {
    EVP_PKEY_free(pkey);
    return NULL;
  }
  return key_wrap(pkey, err, err_len);
}

int dkim_key_record(const struct dkim_key *k, struct buf *out) {
  if (k->alg == DKIM_ALG_ED25519_SHA256) {
    return buf_append_str(out, "v=DKIM1; k=ed25519; p=") != 0 ||
                   b64_append(out, k->ed_pub, sizeof(k->ed_pub)) != 0
               ? -1
               : 0;
  }
  CBB cbb;
  uint8_t *der = NULL;
  size_t der_len = 0;
  if (!CBB_init(&cbb, 512)) {
    return -1;
  }
  if (!EVP_marshal_public_key(&cbb, k->pkey) ||
      !CBB_finish(&cbb, &der, &der_len)) {
    CBB_cleanup(&cbb);
    ERR_clear_error();
    return -1;
  }
  int rc = buf_append_str(out, "v=DKIM1; k=rsa; p=") != 0 ||
                   b64_append(out, der, der_len) != 0
               ? -1
               : 0;
  OPENSSL_free(der);
  return rc;
}

/* local_sign: RSASSA-PKCS1-v1_5 over the digest, or PureEdDSA over the
 * 32 digest bytes (RFC 8463 §3). */
static int local_sign(void *arg, const struct dkim_key *key,
                      const uint8_t digest[32], uint8_t *sig, size_t sig_cap) {
  (void)arg;
  if (key->alg == DKIM_ALG_ED25519_SHA256) {
    if (sig_cap < ED25519_SIGNATURE_LEN ||
        !ED25519_sign(sig, digest, 32, key->ed_priv)) {
      return -1;
    }
    return ED25519_SIGNATURE_LEN;
  }
  RSA *rsa = EVP_PKEY_get0_RSA(key->pkey);
  unsigned out_len = 0;
  if (rsa == NULL || RSA_size(rsa) > sig_cap ||
      !RSA_sign(NID_sha256, digest, 32, sig, &out_len, rsa)) {
    ERR_clear_error();
    return -1;
  }
  return (int)out_len;
}

const struct dkim_signer dkim_local_signer = {local_sign, NULL};

/* ---- signing ---- */

static const char *const kDefaultSign[] = {
    "From",
    "Sender",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "Cc",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Content-Disposition",
    "Content-ID",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Post",
    "Resent-*",
};

static const char *const kDefaultOversign[] = {
    "From",
    "Sender",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "Cc",
    "In-Reply-To",
    "References",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
};

const struct dkim_sign_headers dkim_sign_default_headers = {
    kDefaultSign,
    sizeof(kDefaultSign) / sizeof(kDefaultSign[0]),
    kDefaultOversign,
    sizeof(kDefaultOversign) / sizeof(kDefaultOversign[0]),
};

void dkim_sign_job_free(struct dkim_sign_job *job) {
  for (size_t i = 0; i < DKIM_MAX_SIGN; i++) {
    buf_free(&job->hdr[i]);
  }
  memset(job, 0, sizeof(*job));
}

/* The names that go into h=, shared by every spec of a message. */
struct sign_names {
  struct span name[DKIM_MAX_SIGNED];
  size_t num;
};

static void names_add(struct sign_names *n, const uint8_t *p, size_t len,
                      size_t times) {
  for (size_t i = 0; i < times && n->num < DKIM_MAX_SIGNED; i++) {
    n->name[n->num++] = (struct span){p, len};
  }
}

static size_t count_fields(const struct dkim_header *hdrs, size_t num,
                           const uint8_t *name, size_t len) {
  size_t c = 0;
  for (size_t i = 0; i < num; i++) {
    c += ci_eq_n(hdrs[i].name, hdrs[i].name_len, name, len);
  }
  return c;
}

static int in_list(const char *const *list, size_t num, const uint8_t *name,
                   size_t len) {
  for (size_t i = 0; i < num; i++) {
    if (ci_eq(name, len, list[i])) {
      return 1;
    }
  }
  return 0;
}

/* add_prefix adds every distinct field name starting with prefix (a
 * "Resent-*" entry), each as often as it occurs, in message order. */
static void add_prefix(struct sign_names *n, const struct dkim_header *hdrs,
                       size_t num, const char *prefix, size_t plen) {
  for (size_t i = 0; i < num; i++) {
    const struct dkim_header *h = &hdrs[i];
    if (h->name_len <= plen ||
        !ci_eq_n(h->name, plen, (const uint8_t *)prefix, plen) ||
        count_fields(hdrs, i, h->name, h->name_len) > 0) {
      continue; /* not matching, or seen above */
    }
    names_add(n, h->name, h->name_len,
              count_fields(hdrs, num, h->name, h->name_len));
  }
}

/* choose_names builds h= (§5.4): From first if the caller forgot it,
 * then each name as often as it occurs, once more when over-signed. */
static void choose_names(struct sign_names *n, const struct dkim_header *hdrs,
                         size_t num, const struct dkim_sign_headers *h) {
  n->num = 0;
  if (!in_list(h->sign, h->num_sign, (const uint8_t *)"From", 4)) {
    int over =
        in_list(h->oversign, h->num_oversign, (const uint8_t *)"From", 4);
    names_add(n, (const uint8_t *)"From", 4,
              count_fields(hdrs, num, (const uint8_t *)"From", 4) + over);
  }
  for (size_t i = 0; i < h->num_sign; i++) {
    const uint8_t *name = (const uint8_t *)h->sign[i];
    size_t len = strlen(h->sign[i]);
    if (len == 0 || in_list(h->sign, i, name, len)) {
      continue; /* listed twice by the caller */
    }
    if (name[len - 1] == '*') {
      add_prefix(n, hdrs, num, h->sign[i], len - 1);
      continue;
    }
    int over = in_list(h->oversign, h->num_oversign, name, len);
    names_add(n, name, len, count_fields(hdrs, num, name, len) + over);
  }
  for (size_t i = 0; i < h->num_oversign; i++) {
    const uint8_t *name = (const uint8_t *)h->oversign[i];
    size_t len = strlen(h->oversign[i]);
    if (len > 0 && !in_list(h->sign, h->num_sign, name, len) &&
        !in_list(h->oversign, i, name, len) && !ci_eq(name, len, "From")) {
      names_add(n, name, len, count_fields(hdrs, num, name, len) + 1);
    }
  }
}

/* A header being built with folding at DKIM_FOLD_WIDTH. */
struct fold {
  struct buf *b;
  size_t col;
  int err;
};

static void fold_put(struct fold *f, const char *s, size_t n) {
  f->err |= buf_append(f->b, s, n);
  f->col += n;
}

/* fold_piece appends s after sep, or on a new line if it would not fit. */
static void fold_piece(struct fold *f, const char *sep, const char *s,
                       size_t n) {
  if (f->col + strlen(sep) + n > DKIM_FOLD_WIDTH) {
    f->err |= buf_append(f->b, "\r\n\t", 3);
    f->col = 1;
  } else {
    fold_put(f, sep, strlen(sep));
  }
  fold_put(f, s, n);
}

__attribute__((format(printf, 2, 3))) static void
fold_tag(struct fold *f, const char *fmt, ...) {
  char tmp[DKIM_MAX_IDENTITY + 16];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof(tmp)) {
    f->err = 1;
    return;
  }
  fold_piece(f, " ", tmp, (size_t)n);
}

static int safe_name(const char *s, size_t max) {
  size_t n = strlen(s);
  if (n == 0 || n > max) {
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    uint8_t c = (uint8_t)s[i];
    if (!span_is_alnum(c) && c != '-' && c != '.' && c != '_') {
      return 0;
    }
  }
  return 1;
}

/* identity_domain: the domain of an i= value, after its last "@";
 * p NULL when there is no "@". */
static struct span identity_domain(struct span i) {
  for (size_t k = i.len; k-- > 0;) {
    if (i.p[k] == '@') {
      return (struct span){i.p + k + 1, i.len - k - 1};
    }
  }
  return (struct span){NULL, 0};
}

/* identity_in_domain: is i='s domain d or a subdomain of d (§3.5)? */
static int identity_in_domain(struct span i, struct span d) {
  struct span dom = identity_domain(i);
  if (dom.p == NULL) {
    return 0;
  }
  if (ci_eq_n(dom.p, dom.len, d.p, d.len)) {
    return 1;
  }
  return dom.len > d.len + 1 && dom.p[dom.len - d.len - 1] == '.' &&
         ci_eq_n(dom.p + dom.len - d.len, d.len, d.p, d.len);
}

static const char *spec_check(const struct dkim_sign_spec *s) {
  if (s->key == NULL || s->key->alg == DKIM_ALG_RSA_SHA1) {
    return "no usable key";
  }
  if (s->domain == NULL || !safe_name(s->domain, DKIM_MAX_DNS_NAME) ||
      s->selector == NULL || !safe_name(s->selector, DKIM_MAX_DNS_NAME)) {
    return "bad domain or selector";
  }
  if (s->expire >= 0 && s->timestamp >= 0 && s->expire <= s->timestamp) {
    return "x= not after t=";
  }
  if (s->identity != NULL) {
    struct span i = {(const uint8_t *)s->identity, strlen(s->identity)};
    if (i.len > DKIM_MAX_IDENTITY) {
      return "i= too long";
    }
    for (size_t k = 0; k < i.len; k++) {
      if (!is_valchar(i.p[k])) {
        return "bad character in i=";
      }
    }
    struct span d = {(const uint8_t *)s->domain, strlen(s->domain)};
    if (!identity_in_domain(i, d)) {
      return "i= not within d=";
    }
  }
  return NULL;
}

static const char *canon_name(enum dkim_canon c) {
  return c == DKIM_CANON_RELAXED ? "relaxed" : "simple";
}

/* build_sig_header writes "DKIM-Signature: v=1; ... b=" for one spec. */
static int build_sig_header(struct buf *out, const struct dkim_sign_spec *s,
                            const struct sign_names *names,
                            const uint8_t bh[32]) {
  struct fold f = {out, 0, 0};
  fold_put(&f, "DKIM-Signature:", 15);
  fold_tag(&f, "v=1;");
  fold_tag(&f, "a=%s;", dkim_alg_name(s->key->alg));
  fold_tag(&f, "c=%s/%s;", canon_name(s->hdr_canon), canon_name(s->body_canon));
  fold_tag(&f, "d=%s;", s->domain);
  fold_tag(&f, "s=%s;", s->selector);
  if (s->timestamp >= 0) {
    fold_tag(&f, "t=%lld;", (long long)s->timestamp);
  }
  if (s->expire >= 0) {
    fold_tag(&f, "x=%lld;", (long long)s->expire);
  }
  if (s->identity != NULL) {
    fold_tag(&f, "i=%s;", s->identity);
  }
  for (size_t i = 0; i < names->num; i++) {
    char piece[DKIM_MAX_TAG_VALUE];
    int n = snprintf(piece, sizeof(piece), "%s%.*s%c", i == 0 ? "h=" : "",
                     (int)names->name[i].len, names->name[i].p,
                     i + 1 == names->num ? ';' : ':');
    if (n < 0 || (size_t)n >= sizeof(piece)) {
      return -1;
    }
    fold_piece(&f, i == 0 ? " " : "", piece, (size_t)n);
  }
  struct buf b64 = {0};
  f.err |= b64_append(&b64, bh, 32);
  fold_tag(&f, "bh=%.*s;", (int)b64.len, (const char *)b64.data);
  buf_free(&b64);
  /* b= opens a line of its own, so the value can fill whole lines. */
  f.err |= buf_append(out, "\r\n\tb=", 5);
  return f.err ? -1 : 0;
}

/* sign_digest takes the digest of one spec's header data (§3.7). */
static int sign_digest(struct dkim_sign_job *job, size_t i,
                       const struct dkim_sign_spec *s,
                       const struct dkim_header *hdrs, size_t num_hdrs,
                       const struct sign_names *names, struct buf *tmp) {
  SHA256_CTX sha;
  SHA256_Init(&sha);
  if (hash_headers(&sha, hdrs, num_hdrs, names->name, names->num, s->hdr_canon,
                   tmp) != 0) {
    return -1;
  }
  struct dkim_header self;
  header_fill(&self, job->hdr[i].data, 0, job->hdr[i].len);
  if (hash_sig_field(&sha, &self, s->hdr_canon, tmp) != 0) {
    return -1;
  }
  SHA256_Final(job->digest[i], &sha);
  job->key[i] = s->key;
  return 0;
}

/* body_hash_msg hashes msg's body once for a canonicalisation and l=. */
static void body_hash_msg(const uint8_t *body, size_t len,
                          enum dkim_canon canon, int64_t limit, uint8_t out[32],
                          uint64_t *total, uint64_t *hashed) {
  struct dkim_body b;
  dkim_body_init(&b, canon, limit);
  dkim_body_update(&b, body, len);
  dkim_body_final(&b, out, total);
  *hashed = b.hashed;
}

static int sign_begin_checks(const uint8_t *msg,
                             const struct dkim_sign_spec *specs,
                             size_t num_specs,
                             const struct dkim_sign_headers *h, char *err,
                             size_t err_len) {
  if (msg == NULL || h == NULL || num_specs == 0 || num_specs > DKIM_MAX_SIGN) {
    fmt_err(err, err_len, "dkim sign: need 1..%d specs", DKIM_MAX_SIGN);
    return -1;
  }
  for (size_t i = 0; i < num_specs; i++) {
    const char *why = spec_check(&specs[i]);
    if (why != NULL) {
      fmt_err(err, err_len, "dkim sign: spec %zu: %s", i, why);
      return -1;
    }
  }
  return 0;
}

int dkim_sign_begin(struct dkim_sign_job *job, const uint8_t *msg, size_t len,
                    const struct dkim_sign_spec *specs, size_t num_specs,
                    const struct dkim_sign_headers *h, char *err,
                    size_t err_len) {
  memset(job, 0, sizeof(*job));
  if (sign_begin_checks(msg, specs, num_specs, h, err, err_len) != 0) {
    return -1;
  }
  struct dkim_header *hdrs = calloc(DKIM_MAX_HEADERS, sizeof(*hdrs));
  struct sign_names *names = calloc(1, sizeof(*names));
  struct buf tmp = {0};
  int rc = -1;
  if (hdrs == NULL || names == NULL) {
    fmt_err(err, err_len, "dkim sign: out of memory");
    goto done;
  }
  size_t body_off = 0;
  size_t num_hdrs =
      dkim_headers_split(msg, len, hdrs, DKIM_MAX_HEADERS, &body_off);
  if (count_fields(hdrs, num_hdrs, (const uint8_t *)"From", 4) == 0) {
    fmt_err(err, err_len, "dkim sign: message has no From field");
    goto done;
  }
  choose_names(names, hdrs, num_hdrs, h);
  /* One body hash per canonicalisation, however many specs use it. */
  uint8_t bh[2][32];
  int have[2] = {0, 0};
  for (size_t i = 0; i < num_specs; i++) {
    enum dkim_canon c = specs[i].body_canon;
    if (!have[c]) {
      uint64_t total, hashed;
      body_hash_msg(msg + body_off, len - body_off, c, -1, bh[c], &total,
                    &hashed);
      have[c] = 1;
    }
    if (build_sig_header(&job->hdr[i], &specs[i], names, bh[c]) != 0 ||
        sign_digest(job, i, &specs[i], hdrs, num_hdrs, names, &tmp) != 0) {
      fmt_err(err, err_len, "dkim sign: out of memory");
      goto done;
    }
    job->num = i + 1;
  }
  rc = 0;
done:
  if (rc != 0) {
    dkim_sign_job_free(job);
  }
  buf_free(&tmp);
  free(names);
  free(hdrs);
  return rc;
}

/* append_folded_b64 appends b= value after a header whose last line is
 * col bytes long, folding with FWS where a line would pass the width. */
static int append_folded_b64(struct buf *out, size_t col, const uint8_t *sig,
                             size_t sig_len) {
  struct buf b64 = {0};
  if (b64_append(&b64, sig, sig_len) != 0) {
    return -1;
  }
  int rc = 0;
  size_t i = 0;
  while (rc == 0 && i < b64.len) {
    if (col >= DKIM_FOLD_WIDTH) {
      rc |= buf_append(out, "\r\n\t", 3);
      col = 1;
    }
    size_t n = DKIM_FOLD_WIDTH - col;
    n = n < b64.len - i ? n : b64.len - i;
    rc |= buf_append(out, b64.data + i, n);
    col += n;
    i += n;
  }
  buf_free(&b64);
  return rc == 0 ? buf_append(out, "\r\n", 2) : -1;
}

static size_t last_line_len(const struct buf *b) {
  size_t n = 0;
  while (n < b->len && b->data[b->len - 1 - n] != '\n') {
    n++;
  }
  return n;
}

int dkim_sign_end(struct dkim_sign_job *job, const struct dkim_signer *signer,
                  struct buf *out, char *err, size_t err_len) {
  struct buf all = {0};
  uint8_t sig[DKIM_MAX_SIG_BYTES];
  int rc = job->num > 0 ? 0 : -1;
  if (rc != 0) {
    fmt_err(err, err_len, "dkim sign: nothing to sign");
  }
  for (size_t i = 0; rc == 0 && i < job->num; i++) {
    int n = signer->sign(signer->arg, job->key[i], job->digest[i], sig,
                         sizeof(sig));
    if (n <= 0 || (size_t)n > sizeof(sig)) {
      fmt_err(err, err_len, "dkim sign: signer failed (%s)",
              dkim_alg_name(job->key[i]->alg));
      rc = -1;
      break;
    }
    if (buf_append(&all, job->hdr[i].data, job->hdr[i].len) != 0 ||
        append_folded_b64(&all, last_line_len(&job->hdr[i]), sig, (size_t)n) !=
            0) {
      fmt_err(err, err_len, "dkim sign: out of memory");
      rc = -1;
    }
  }
  if (rc == 0 && buf_append(out, all.data, all.len) != 0) {
    fmt_err(err, err_len, "dkim sign: out of memory");
    rc = -1;
  }
  buf_free(&all);
  dkim_sign_job_free(job);
  return rc;
}

/* ---- verification ---- */

/* One DKIM-Signature field as parsed. */
struct vsig {
  const struct dkim_header *field;
  int done; /* verdict known */
  struct dkim_verdict verdict;
  char query[2 * 256 + 16]; /* selector, domain as in the verdict */
  enum dkim_canon hdr_canon, body_canon;
  struct span d, i;
  struct span names[DKIM_MAX_SIGNED];
  size_t num_names;
  uint8_t bh[32];
  uint8_t b[DKIM_MAX_SIG_BYTES];
  size_t b_len;
  size_t b_cut, b_cut_end; /* the b= value within the field, removed */
};

/* A body hash, shared by signatures with the same canon and l=. */
struct vbody {
  enum dkim_canon canon;
  int64_t limit;
  uint8_t hash[32];
  uint64_t total, hashed;
};

struct dkim_verify {
  const uint8_t *msg;
  size_t len;
  int64_t now;
  struct dkim_header *hdrs;
  size_t num_hdrs;
  size_t body_off;
  size_t num_sigs;
  struct vsig *sigs;
  struct vbody bodies[DKIM_MAX_VERIFY];
  size_t num_bodies;
  struct buf tmp;
};

__attribute__((format(printf, 3, 4))) static void
verdict(struct vsig *s, enum dkim_result r, const char *fmt, ...) {
  s->done = 1;
  s->verdict.result = r;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->verdict.reason, sizeof(s->verdict.reason), fmt, ap);
  va_end(ap);
}

static void copy_str(char *dst, size_t cap, struct span s) {
  size_t n = s.len < cap - 1 ? s.len : cap - 1;
  memcpy(dst, s.p, n);
  dst[n] = '\0';
}

/* domain_ok: a DNS name of letters, digits, "-", "_" and ".". */
static int domain_ok(struct span s) {
  if (s.len == 0 || s.len > DKIM_MAX_DNS_NAME) {
    return 0;
  }
  for (size_t k = 0; k < s.len; k++) {
    uint8_t c = s.p[k];
    if (!span_is_alnum(c) && c != '-' && c != '_' && c != '.') {
      return 0;
    }
  }
  return 1;
}

/* parse_h reads h= (§3.5): field names separated by ":", FWS around. */
static const char *parse_h(struct vsig *s, struct span v) {
  struct span item;
  int from = 0;
  s->num_names = 0;
  while (slice_next_item(&v, ':', &item)) {
    if (item.len == 0) {
      return "empty name in h=";
    }
    for (size_t k = 0; k < item.len; k++) {
      if (item.p[k] < 33 || item.p[k] > 126) {
        return "bad name in h=";
      }
    }
    if (s->num_names == DKIM_MAX_SIGNED) {
      return "too many names in h=";
    }
    from |= ci_eq(item.p, item.len, "from");
    s->names[s->num_names++] = item;
  }
  return from ? NULL : "From not signed";
}

static const char *parse_alg(struct vsig *s, const struct dkim_tag *a) {
  struct span v = tag_span(a);
  if (span_eq(v, "rsa-sha256")) {
    s->verdict.alg = DKIM_ALG_RSA_SHA256;
  } else if (span_eq(v, "ed25519-sha256")) {
    s->verdict.alg = DKIM_ALG_ED25519_SHA256;
  } else if (span_eq(v, "rsa-sha1")) {
    s->verdict.alg = DKIM_ALG_RSA_SHA1;
  } else {
    return "unknown algorithm";
  }
  return NULL;
}

/* parse_b decodes b= and bh= and notes where b='s value sits. */
static const char *parse_b(struct vsig *s, const struct dkim_tag *b,
                           const struct dkim_tag *bh) {
  size_t n = 0;
  for (size_t k = 0; k < b->value_len && n < DKIM_B_PREFIX; k++) {
    if (!is_fws_byte((uint8_t)b->value[k])) {
      s->verdict.b_prefix[n++] = b->value[k];
    }
  }
  s->verdict.b_prefix[n] = '\0';
  if (b64_decode(tag_span(b), s->b, sizeof(s->b), &s->b_len) != 0 ||
      s->b_len == 0) {
    return "bad base64 in b=";
  }
  size_t bh_len = 0;
  uint8_t tmp[64];
  size_t want = s->verdict.alg == DKIM_ALG_RSA_SHA1 ? 20 : 32;
  if (b64_decode(tag_span(bh), tmp, sizeof(tmp), &bh_len) != 0 ||
      bh_len != want) {
    return "bad base64 in bh=";
  }
  memcpy(s->bh, tmp, want);
  /* The value to empty runs from after "=" to the ";" or the end (§3.7). */
  const uint8_t *f = s->field->field;
  size_t eq = (size_t)((const uint8_t *)b->name - f) + b->name_len;
  while (f[eq] != '=') {
    eq++;
  }
  size_t end = (size_t)((const uint8_t *)b->value - f) + b->value_len;
  while (end < s->field->field_len && f[end] != ';') {
    end++;
  }
  s->b_cut = eq + 1;
  s->b_cut_end = end;
  return NULL;
}

/* parse_ident checks i= (§3.5: within d=) and fills the identity. */
static const char *parse_ident(struct vsig *s, const struct dkim_tag *i) {
  if (i == NULL) {
    snprintf(s->verdict.identity, sizeof(s->verdict.identity), "@%.*s",
             (int)s->d.len, (const char *)s->d.p);
    s->i = (struct span){NULL, 0};
    return NULL;
  }
  s->i = tag_span(i);
  if (s->i.len > DKIM_MAX_IDENTITY) {
    return "i= too long";
  }
  copy_str(s->verdict.identity, sizeof(s->verdict.identity), s->i);
  return identity_in_domain(s->i, s->d) ? NULL : "i= not within d=";
}

static const char *parse_optional(struct vsig *s, const struct dkim_tag *tags,
                                  size_t n, int64_t *t, int64_t *x) {
  const struct dkim_tag *tag;
  if ((tag = tag_find(tags, n, "c")) != NULL &&
      canon_parse_n(tag_span(tag), &s->hdr_canon, &s->body_canon) != 0) {
    return "bad c=";
  }
  if ((tag = tag_find(tags, n, "q")) != NULL &&
      !list_has(tag_span(tag), ':', "dns/txt")) {
    return "q= without dns/txt";
  }
  if ((tag = tag_find(tags, n, "l")) != NULL &&
      parse_num(tag_span(tag), &s->verdict.body_limit) != 0) {
    return "bad l=";
  }
  if ((tag = tag_find(tags, n, "t")) != NULL &&
      parse_num(tag_span(tag), t) != 0) {
    return "bad t=";
  }
  if ((tag = tag_find(tags, n, "x")) != NULL &&
      parse_num(tag_span(tag), x) != 0) {
    return "bad x=";
  }
  if (*t >= 0 && *x >= 0 && *x < *t) {
    return "x= before t=";
  }
  return NULL;
}

/* sig_required checks the tags §3.5 requires and fills d=, s=. */
static const char *sig_required(struct vsig *s, const struct dkim_tag *tags,
                                size_t n) {
  static const char *const need[][2] = {
      {"v", "missing v="},   {"a", "missing a="}, {"b", "missing b="},
      {"bh", "missing bh="}, {"d", "missing d="}, {"h", "missing h="},
      {"s", "missing s="},
  };
  for (size_t k = 0; k < sizeof(need) / sizeof(need[0]); k++) {
    if (tag_find(tags, n, need[k][0]) == NULL) {
      return need[k][1];
    }
  }
  struct span d = tag_span(tag_find(tags, n, "d"));
  struct span sel = tag_span(tag_find(tags, n, "s"));
  copy_str(s->verdict.domain, sizeof(s->verdict.domain), d);
  copy_str(s->verdict.selector, sizeof(s->verdict.selector), sel);
  if (!span_eq(tag_span(tag_find(tags, n, "v")), "1")) {
    return "v= is not 1";
  }
  if (!domain_ok(d) || !domain_ok(sel)) {
    return "bad d= or s=";
  }
  s->d = d;
  return NULL;
}

/* sig_parse reads one DKIM-Signature field; a verdict is given at once
 * when no key is needed for it. */
static void sig_parse(struct dkim_verify *v, struct vsig *s) {
  const struct dkim_header *h = s->field;
  const uint8_t *colon = memchr(h->field, ':', h->field_len);
  size_t off = colon != NULL ? (size_t)(colon - h->field) + 1 : h->field_len;
  struct dkim_tag tags[DKIM_MAX_TAGS];
  size_t n = 0;
  char why[96];
  s->verdict.body_limit = -1;
  if (dkim_tags_parse((const char *)h->field + off, h->field_len - off, tags,
                      DKIM_MAX_TAGS, &n, why, sizeof(why)) != 0) {
    verdict(s, DKIM_PERMERROR, "bad tag list: %s", why);
    return;
  }
  const char *err = sig_required(s, tags, n);
  int64_t t = -1, x = -1;
  if (err == NULL) {
    err = parse_alg(s, tag_find(tags, n, "a"));
  }
  if (err == NULL) {
    err = parse_b(s, tag_find(tags, n, "b"), tag_find(tags, n, "bh"));
  }
  if (err == NULL) {
    err = parse_h(s, tag_span(tag_find(tags, n, "h")));
  }
  if (err == NULL) {
    err = parse_ident(s, tag_find(tags, n, "i"));
  }
  if (err == NULL) {
    err = parse_optional(s, tags, n, &t, &x);
  }
  if (s->verdict.identity[0] == '\0' && s->verdict.domain[0] != '\0') {
    s->verdict.identity[0] = '@';
    copy_str(s->verdict.identity + 1, sizeof(s->verdict.identity) - 1,
             (struct span){(const uint8_t *)s->verdict.domain,
                           strlen(s->verdict.domain)});
  }
  if (err != NULL) {
    verdict(s, DKIM_PERMERROR, "%s", err);
  } else if (s->verdict.alg == DKIM_ALG_RSA_SHA1) {
    verdict(s, DKIM_FAIL, "rsa-sha1 not accepted (RFC 8301)");
  } else if (x >= 0 && x < v->now) {
    verdict(s, DKIM_FAIL, "signature expired");
  } else {
    snprintf(s->query, sizeof(s->query), "%s._domainkey.%s",
             s->verdict.selector, s->verdict.domain);
  }
}

struct dkim_verify *dkim_verify_new(const uint8_t *msg, size_t len,
                                    size_t max_sigs, int64_t now) {
  struct dkim_verify *v = calloc(1, sizeof(*v));
  if (v == NULL) {
    return NULL;
  }
  v->msg = msg;
  v->len = len;
  v->now = now;
  v->hdrs = calloc(DKIM_MAX_HEADERS, sizeof(*v->hdrs));
  max_sigs = max_sigs < DKIM_MAX_VERIFY ? max_sigs : DKIM_MAX_VERIFY;
  v->sigs = calloc(max_sigs > 0 ? max_sigs : 1, sizeof(*v->sigs));
  if (v->hdrs == NULL || v->sigs == NULL) {
    dkim_verify_free(v);
    return NULL;
  }
  v->num_hdrs =
      dkim_headers_split(msg, len, v->hdrs, DKIM_MAX_HEADERS, &v->body_off);
  for (size_t i = 0; i < v->num_hdrs && v->num_sigs < max_sigs; i++) {
    if (ci_eq(v->hdrs[i].name, v->hdrs[i].name_len, "DKIM-Signature")) {
      struct vsig *s = &v->sigs[v->num_sigs++];
      s->field = &v->hdrs[i];
      sig_parse(v, s);
    }
  }
  return v;
}

void dkim_verify_free(struct dkim_verify *v) {
  if (v == NULL) {
    return;
  }
  buf_free(&v->tmp);
  free(v->sigs);
  free(v->hdrs);
  free(v);
}

size_t dkim_verify_count(const struct dkim_verify *v) {
  return v->num_sigs;
}

const char *dkim_verify_query(const struct dkim_verify *v, size_t i) {
  if (i >= v->num_sigs || v->sigs[i].done) {
    return NULL;
  }
  return v->sigs[i].query;
}

const struct dkim_verdict *dkim_verify_verdict(const struct dkim_verify *v,
                                               size_t i) {
  if (i >= v->num_sigs || !v->sigs[i].done) {
    return NULL;
  }
  return &v->sigs[i].verdict;
}

/* A public key from a key record. */
struct vkey {
  int is_ed25519;
  RSA *rsa;
  uint8_t ed_pub[32];
  unsigned bits;
  int testing, strict;
};

/* record_is_key: does this TXT record parse as a DKIM key record (§3.6.1:
 * a tag list, v= first if present and DKIM1, with p=)? */
static int record_is_key(const struct dkim_tag *tags, size_t n) {
  const struct dkim_tag *ver = tag_find(tags, n, "v");
  if (ver != NULL && (ver != &tags[0] || !span_eq(tag_span(ver), "DKIM1"))) {
    return 0;
  }
  return tag_find(tags, n, "p") != NULL;
}

/* key_public parses p= for its key type. Returns NULL or the reason. */
static const char *key_public(struct vkey *k, struct span p) {
  uint8_t der[DKIM_MAX_TAG_VALUE];
  size_t der_len = 0;
  if (b64_decode(p, der, sizeof(der), &der_len) != 0) {
    return "key record: bad base64 in p=";
  }
  if (k->is_ed25519) {
    if (der_len != sizeof(k->ed_pub)) {
      return "key record: p= is not an Ed25519 key";
    }
    memcpy(k->ed_pub, der, der_len);
    k->bits = 256;
    return NULL;
  }
  CBS cbs;
  CBS_init(&cbs, der, der_len);
  EVP_PKEY *pkey = EVP_parse_public_key(&cbs);
  if (pkey != NULL && CBS_len(&cbs) == 0 && EVP_PKEY_id(pkey) == EVP_PKEY_RSA) {
    k->rsa = EVP_PKEY_get1_RSA(pkey);
  } else {
    CBS_init(&cbs, der, der_len); /* some publish a bare RSAPublicKey */
    k->rsa = RSA_parse_public_key(&cbs);
    if (k->rsa != NULL && CBS_len(&cbs) != 0) {
      RSA_free(k->rsa);
      k->rsa = NULL;
    }
  }
  EVP_PKEY_free(pkey);
  ERR_clear_error();
  if (k->rsa == NULL) {
    return "key record: p= is not an RSA key";
  }
  k->bits = RSA_bits(k->rsa);
  return NULL;
}

/* key_parse evaluates the record against signature s (§3.6.1, RFC 8301,
 * RFC 8463 §4). Returns 0 with k filled, or -1 with s's verdict set. */
static int key_parse(struct vsig *s, const struct dkim_tag *tags, size_t n,
                     struct vkey *k) {
  const struct dkim_tag *t;
  int ed = s->verdict.alg == DKIM_ALG_ED25519_SHA256;
  if ((t = tag_find(tags, n, "h")) != NULL &&
      !list_has(tag_span(t), ':', "sha256")) {
    verdict(s, DKIM_PERMERROR, "key record: h= excludes sha256");
    return -1;
  }
  t = tag_find(tags, n, "k");
  struct span kt =
      t != NULL ? tag_span(t) : (struct span){(const uint8_t *)"rsa", 3};
  if (!ci_eq(kt.p, kt.len, "rsa") && !ci_eq(kt.p, kt.len, "ed25519")) {
    verdict(s, DKIM_PERMERROR, "key record: unknown k=");
    return -1;
  }
  k->is_ed25519 = ci_eq(kt.p, kt.len, "ed25519");
  if (k->is_ed25519 != ed) {
    verdict(s, DKIM_PERMERROR, "key record: k= does not match a=");
    return -1;
  }
  if ((t = tag_find(tags, n, "s")) != NULL &&
      !list_has(tag_span(t), ':', "*") &&
      !list_has(tag_span(t), ':', "email")) {
    verdict(s, DKIM_PERMERROR, "key record: not for email (s=)");
    return -1;
  }
  if ((t = tag_find(tags, n, "t")) != NULL) {
    k->testing = list_has(tag_span(t), ':', "y");
    k->strict = list_has(tag_span(t), ':', "s");
  }
  struct span p = slice_trim(tag_span(tag_find(tags, n, "p")));
  if (p.len == 0) {
    verdict(s, DKIM_FAIL, "key revoked");
    return -1;
  }
  const char *why = key_public(k, p);
  if (why != NULL) {
    verdict(s, DKIM_PERMERROR, "%s", why);
    return -1;
  }
  return 0;
}

/* key_checks applies policy on a parsed key: RFC 8301 §3.2 sizes, t=s. */
static int key_checks(struct vsig *s, const struct vkey *k) {
  s->verdict.key_bits = k->bits;
  s->verdict.testing = k->testing;
  if (!k->is_ed25519 && k->bits < DKIM_MIN_RSA_BITS) {
    verdict(s, DKIM_FAIL, "key too short");
    return -1;
  }
  if (!k->is_ed25519 && k->bits > DKIM_MAX_RSA_BITS) {
    verdict(s, DKIM_PERMERROR, "key too long");
    return -1;
  }
  if (k->strict && s->i.p != NULL) {
    struct span dom = identity_domain(s->i);
    if (!ci_eq_n(dom.p, dom.len, s->d.p, s->d.len)) {
      verdict(s, DKIM_PERMERROR, "key record t=s: i= domain is not d=");
      return -1;
    }
  }
  return 0;
}

/* body_for finds or computes the body hash for s's canon and l=. */
static const struct vbody *body_for(struct dkim_verify *v,
                                    const struct vsig *s) {
  for (size_t i = 0; i < v->num_bodies; i++) {
    if (v->bodies[i].canon == s->body_canon &&
        v->bodies[i].limit == s->verdict.body_limit) {
      return &v->bodies[i];
    }
  }
  assert(v->num_bodies < DKIM_MAX_VERIFY);
  struct vbody *b = &v->bodies[v->num_bodies++];
  b->canon = s->body_canon;
  b->limit = s->verdict.body_limit;
  body_hash_msg(v->msg + v->body_off, v->len - v->body_off, b->canon, b->limit,
                b->hash, &b->total, &b->hashed);
  return b;
}

/* header_digest hashes the signed fields and the signature field with
 * its b= value emptied, the rest as written (§3.7). */
static int header_digest(struct dkim_verify *v, const struct vsig *s,
                         uint8_t out[32]) {
  SHA256_CTX sha;
  SHA256_Init(&sha);
  if (hash_headers(&sha, v->hdrs, v->num_hdrs, s->names, s->num_names,
                   s->hdr_canon, &v->tmp) != 0) {
    return -1;
  }
  const struct dkim_header *f = s->field;
  struct buf cut = {0};
  if (buf_append(&cut, f->field, s->b_cut) != 0 ||
      buf_append(&cut, f->field + s->b_cut_end, f->field_len - s->b_cut_end) !=
          0) {
    buf_free(&cut);
    return -1;
  }
  struct dkim_header self;
  header_fill(&self, cut.data, 0, cut.len);
  int rc = hash_sig_field(&sha, &self, s->hdr_canon, &v->tmp);
  buf_free(&cut);
  SHA256_Final(out, &sha);
  return rc;
}

/* check_sig runs the body and header checks of §6.1.3 with key k. */
static void check_sig(struct dkim_verify *v, struct vsig *s,
                      const struct vkey *k) {
  const struct vbody *b = body_for(v, s);
  if (s->verdict.body_limit >= 0) {
    if ((uint64_t)s->verdict.body_limit > b->total) {
      verdict(s, DKIM_FAIL, "body shorter than l=");
      return;
    }
    s->verdict.unsigned_body = b->total - b->hashed;
  }
  if (CRYPTO_memcmp(b->hash, s->bh, 32) != 0) {
    verdict(s, DKIM_FAIL, "body hash did not verify");
    return;
  }
  uint8_t digest[32];
  if (header_digest(v, s, digest) != 0) {
    verdict(s, DKIM_TEMPERROR, "out of memory");
    return;
  }
  int ok;
  if (k->is_ed25519) {
    ok = s->b_len == ED25519_SIGNATURE_LEN &&
         ED25519_verify(digest, sizeof(digest), s->b, k->ed_pub);
  } else {
    ok = RSA_verify(NID_sha256, digest, sizeof(digest), s->b, s->b_len, k->rsa);
    ERR_clear_error();
  }
  if (!ok) {
    verdict(s, DKIM_FAIL, "signature did not verify");
    return;
  }
  verdict(s, DKIM_PASS, "%s",
          k->testing ? "good signature (testing)" : "good signature");
}

void dkim_verify_key(struct dkim_verify *v, size_t i,
                     enum dkim_key_status status, const char *const *txt,
                     const size_t *txt_len, size_t num_txt) {
  if (i >= v->num_sigs || v->sigs[i].done) {
    return;
  }
  struct vsig *s = &v->sigs[i];
  if (status == DKIM_KEY_TEMPFAIL) {
    verdict(s, DKIM_TEMPERROR, "key lookup failed");
    return;
  }
  if (status != DKIM_KEY_FOUND || num_txt == 0) {
    verdict(s, DKIM_PERMERROR, "no key for signature");
    return;
  }
  struct dkim_tag tags[DKIM_MAX_TAGS];
  size_t n = 0;
  size_t r = 0;
  for (; r < num_txt; r++) {
    if (txt[r] != NULL &&
        dkim_tags_parse(txt[r], txt_len[r], tags, DKIM_MAX_TAGS, &n, NULL, 0) ==
            0 &&
        record_is_key(tags, n)) {
      break;
    }
  }
  if (r == num_txt) {
    verdict(s, DKIM_PERMERROR, "key record is not a DKIM key");
    return;
  }
  struct vkey k;
  memset(&k, 0, sizeof(k));
  if (key_parse(s, tags, n, &k) == 0 && key_checks(s, &k) == 0) {
    check_sig(v, s, &k);
  }
  RSA_free(k.rsa);
}
