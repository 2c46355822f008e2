/* crypto/smime.c — S/MIME (RFC 8551) wrapping and unwrapping of whole
 * messages; the contract is in crypto/smime.h. */
#include "crypto/smime.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#define CRLF "\r\n"

/* ---- errors ---- */

const char *smime_err_str(int err) {
  switch (err) {
  case SMIME_OK:
    return "ok";
  case SMIME_ERR_SYNTAX:
    return "syntax";
  case SMIME_ERR_LIMIT:
    return "limit";
  case SMIME_ERR_UNSUPPORTED:
    return "unsupported";
  case SMIME_ERR_NOT_SMIME:
    return "not-smime";
  case SMIME_ERR_CMS:
    return "cms";
  case SMIME_ERR_UNAUTHENTICATED:
    return "unauthenticated";
  case SMIME_ERR_INTERNAL:
    return "internal";
  }
  return "unknown";
}

/* fail writes the reason (if err is given and still empty, so the first,
 * most specific reason wins) and returns code. */
__attribute__((format(printf, 4, 5))) static int
fail(int code, char *err, size_t err_len, const char *fmt, ...) {
  if (err != NULL && err_len > 0 && err[0] == '\0') {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
  }
  return code;
}

static int oom(char *err, size_t err_len) {
  return fail(SMIME_ERR_INTERNAL, err, err_len, "out of memory");
}

static char lower(char c) {
  return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
}

/* eq_nocase: the n bytes at a equal the C string s, ASCII case folded. */
static int eq_nocase(const uint8_t *a, size_t n, const char *s) {
  if (strlen(s) != n) {
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    if (lower((char)a[i]) != lower(s[i])) {
      return 0;
    }
  }
  return 1;
}

static int is_wsp(uint8_t c) {
  return c == ' ' || c == '\t';
}

/* ---- header fields (RFC 5322 §2.2) ---- */

/* line_end finds the end of the line starting at pos: *out_next is past
 * its LF (or in_len), and the return value is where its content ends
 * (before CR LF or LF). */
static size_t line_end(const uint8_t *in, size_t in_len, size_t pos,
                       size_t *out_next) {
  const uint8_t *nl = memchr(in + pos, '\n', in_len - pos);
  if (nl == NULL) {
    *out_next = in_len;
    return in_len;
  }
  size_t e = (size_t)(nl - in);
  *out_next = e + 1;
  return e > pos && in[e - 1] == '\r' ? e - 1 : e;
}

/* field_name_len: length of the field name before ':' on the line
 * [pos, end), or 0 if the line is not the start of a field. Whitespace
 * before the colon is allowed (RFC 5322 §4.5, obsolete syntax). */
static size_t field_name_len(const uint8_t *in, size_t pos, size_t end,
                             size_t *out_colon) {
  size_t i = pos;
  while (i < end && in[i] > 32 && in[i] < 127 && in[i] != ':') {
    i++;
  }
  size_t name_end = i;
  while (i < end && is_wsp(in[i])) {
    i++;
  }
  if (name_end == pos || i == end || in[i] != ':') {
    return 0;
  }
  *out_colon = i;
  return name_end - pos;
}

/* header_field reads one field (with continuation lines) at *pos. */
static int header_field(struct smime_field *f, const uint8_t *in, size_t in_len,
                        size_t *pos, char *err, size_t err_len) {
  size_t next, colon = 0, start = *pos;
  size_t end = line_end(in, in_len, start, &next);
  size_t name_len = field_name_len(in, start, end, &colon);
  if (name_len == 0) {
    return fail(SMIME_ERR_SYNTAX, err, err_len,
                "header line %zu bytes in is not a field", start);
  }
  size_t value_end = end;
  while (next < in_len && is_wsp(in[next])) { /* folded lines */
    value_end = line_end(in, in_len, next, &next);
  }
  if (next - start > SMIME_MAX_FIELD) {
    return fail(SMIME_ERR_LIMIT, err, err_len,
                "header field of %zu bytes (limit %d)", next - start,
                SMIME_MAX_FIELD);
  }
  size_t v = colon + 1;
  while (v < value_end && is_wsp(in[v])) {
    v++;
  }
  *f = (struct smime_field){in + start,    name_len,   in + v,
                            value_end - v, in + start, next - start};
  *pos = next;
  return SMIME_OK;
}

int smime_header_parse(struct smime_field *fields, size_t max, size_t *out_num,
                       size_t *out_body_off, const uint8_t *in, size_t in_len,
                       char *err, size_t err_len) {
  size_t pos = 0, n = 0;
  *out_num = 0;
  *out_body_off = in_len;
  if (in_len > SMIME_MAX_MESSAGE) {
    return fail(SMIME_ERR_LIMIT, err, err_len, "message of %zu bytes", in_len);
  }
  while (pos < in_len) {
    if (in[pos] == '\n' ||
        (in[pos] == '\r' && pos + 1 < in_len && in[pos + 1] == '\n')) {
      *out_body_off = pos + (in[pos] == '\n' ? 1 : 2);
      break;
    }
    if (n == max) {
      return fail(SMIME_ERR_LIMIT, err, err_len, "more than %zu header fields",
                  max);
    }
    int rc = header_field(&fields[n], in, in_len, &pos, err, err_len);
    if (rc != SMIME_OK) {
      return rc;
    }
    n++;
  }
  *out_num = n;
  return SMIME_OK;
}

/* count_fields: how many fields are named name. */
static size_t count_fields(const struct smime_field *f, size_t n,
                           const char *name) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    k += eq_nocase(f[i].name, f[i].name_len, name);
  }
  return k;
}

/* find_unique_field sets *out to the one field named name (NULL when
 * there is none). Two or more is SMIME_ERR_SYNTAX: readers that take the
 * first and readers that take the last would see different messages
 * (RFC 2045 §3 allows one Content-Type, RFC 5322 §3.6 one From). */
static int find_unique_field(const struct smime_field **out,
                             const struct smime_field *f, size_t n,
                             const char *name, char *err, size_t err_len) {
  *out = NULL;
  for (size_t i = 0; i < n; i++) {
    if (!eq_nocase(f[i].name, f[i].name_len, name)) {
      continue;
    }
    if (*out != NULL) {
      *out = NULL;
      return fail(SMIME_ERR_SYNTAX, err, err_len, "%zu %.*s fields",
                  count_fields(f, n, name), (int)f[i].name_len, f[i].name);
    }
    *out = &f[i];
  }
  return SMIME_OK;
}

/* ---- Content-Type (RFC 2045 §5.1) ---- */

/* A bounded reader over a header value. */
struct hreader {
  const uint8_t *p;
  size_t len, pos;
};

static int is_tspecial(uint8_t c) {
  return strchr("()<>@,;:\\\"/[]?=", c) != NULL && c != '\0';
}

/* skip_cfws skips whitespace, line breaks and (nested) comments. */
static int skip_cfws(struct hreader *r) {
  int depth = 0;
  while (r->pos < r->len) {
    uint8_t c = r->p[r->pos];
    if (depth > 0 && c == '\\' && r->pos + 1 < r->len) {
      r->pos += 2;
      continue;
    }
    if (c == '(') {
      depth++;
    } else if (c == ')' && depth > 0) {
      depth--;
    } else if (depth == 0 && !is_wsp(c) && c != '\r' && c != '\n') {
      return 0;
    }
    r->pos++;
  }
  return depth == 0 ? 0 : -1;
}

/* read_token copies a token (lowercased if fold) into out. Returns its
 * length, 0 if there is none, -1 if it does not fit. */
static int read_token(struct hreader *r, char *out, size_t cap, int fold) {
  size_t n = 0;
  while (r->pos < r->len) {
    uint8_t c = r->p[r->pos];
    if (c <= 32 || c >= 127 || is_tspecial(c)) {
      break;
    }
    if (n + 1 >= cap) {
      return -1;
    }
    out[n++] = fold ? lower((char)c) : (char)c;
    r->pos++;
  }
  out[n] = '\0';
  return (int)n;
}

/* read_quoted copies a quoted-string's content (escapes removed, folding
 * line breaks dropped). Returns 0, -1 unterminated, -2 too long. */
static int read_quoted(struct hreader *r, char *out, size_t cap) {
  size_t n = 0;
  r->pos++; /* the opening quote */
  while (r->pos < r->len && r->p[r->pos] != '"') {
    uint8_t c = r->p[r->pos++];
    if (c == '\\' && r->pos < r->len) {
      c = r->p[r->pos++];
    } else if (c == '\r' || c == '\n') {
      continue;
    }
    if (n + 1 >= cap) {
      return -2;
    }
    out[n++] = (char)c;
  }
  if (r->pos == r->len) {
    return -1;
  }
  r->pos++;
  out[n] = '\0';
  return 0;
}

/* ct_param_add stores one parameter. A name seen before is
 * SMIME_ERR_SYNTAX (RFC 2045 §5.1: "the same parameter name may not
 * appear more than once"; readers differ on which one wins), and so is an
 * RFC 2231 form (name*, name*0) of a parameter that decides the structure:
 * readers that decode RFC 2231 would take it, this one would not. More
 * than SMIME_MAX_PARAMS is SMIME_ERR_LIMIT, not ignored, so a duplicate
 * cannot hide past the limit. Returns 1 or a negative smime_err. */
static int ct_param_add(struct smime_ct *ct, const char *name,
                        const char *value, char *err, size_t err_len) {
  static const char *structural[] = {"boundary", "protocol", "micalg",
                                     "smime-type"};
  const char *star = strchr(name, '*');
  for (size_t i = 0; star != NULL && i < 4; i++) {
    if (eq_nocase((const uint8_t *)name, (size_t)(star - name),
                  structural[i])) {
      return fail(SMIME_ERR_SYNTAX, err, err_len,
                  "Content-Type: RFC 2231 form of %s (%s) not accepted",
                  structural[i], name);
    }
  }
  if (smime_ct_param(ct, name) != NULL) {
    return fail(SMIME_ERR_SYNTAX, err, err_len,
                "Content-Type: parameter %s given twice", name);
  }
  if (ct->num_params == SMIME_MAX_PARAMS) {
    return fail(SMIME_ERR_LIMIT, err, err_len,
                "Content-Type: more than %d parameters", SMIME_MAX_PARAMS);
  }
  snprintf(ct->params[ct->num_params].name,
           sizeof ct->params[ct->num_params].name, "%s", name);
  snprintf(ct->params[ct->num_params].value,
           sizeof ct->params[ct->num_params].value, "%s", value);
  ct->num_params++;
  return 1;
}

/* ct_param reads one "; name=value" after the type. 1 read, 0 end. */
static int ct_param(struct smime_ct *ct, struct hreader *r, char *err,
                    size_t err_len) {
  char name[32], value[SMIME_MAX_PARAM_VALUE];
  while (skip_cfws(r) == 0 && r->pos < r->len && r->p[r->pos] == ';') {
    r->pos++; /* empty parameters (";;") are common; skip them */
  }
  if (r->pos >= r->len) {
    return 0;
  }
  if (read_token(r, name, sizeof name, 1) <= 0 || skip_cfws(r) != 0 ||
      r->pos >= r->len || r->p[r->pos] != '=') {
    return fail(SMIME_ERR_SYNTAX, err, err_len,
                "Content-Type: bad parameter at offset %zu", r->pos);
  }
  r->pos++;
  skip_cfws(r);
  int rc = r->pos < r->len && r->p[r->pos] == '"'
               ? read_quoted(r, value, sizeof value)
               : (read_token(r, value, sizeof value, 0) < 0 ? -2 : 0);
  if (rc == -2) {
    return fail(SMIME_ERR_LIMIT, err, err_len,
                "Content-Type: parameter %s longer than %d bytes", name,
                SMIME_MAX_PARAM_VALUE - 1);
  }
  if (rc != 0) {
    return fail(SMIME_ERR_SYNTAX, err, err_len,
                "Content-Type: unterminated quoted string");
  }
  return ct_param_add(ct, name, value, err, err_len);
}

int smime_ct_parse(struct smime_ct *out, const uint8_t *value, size_t value_len,
                   char *err, size_t err_len) {
  struct hreader r = {value, value_len, 0};
  memset(out, 0, sizeof *out);
  skip_cfws(&r);
  if (read_token(&r, out->type, sizeof out->type, 1) <= 0 ||
      skip_cfws(&r) != 0 || r.pos >= r.len || r.p[r.pos] != '/') {
    return fail(SMIME_ERR_SYNTAX, err, err_len,
                "Content-Type: no type/subtype");
  }
  r.pos++;
  skip_cfws(&r);
  if (read_token(&r, out->subtype, sizeof out->subtype, 1) <= 0) {
    return fail(SMIME_ERR_SYNTAX, err, err_len, "Content-Type: no subtype");
  }
  if (skip_cfws(&r) != 0 || (r.pos < r.len && r.p[r.pos] != ';')) {
    return fail(SMIME_ERR_SYNTAX, err, err_len,
                "Content-Type: junk after the subtype");
  }
  for (int i = 0; i <= SMIME_MAX_PARAMS; i++) {
    int rc = ct_param(out, &r, err, err_len);
    if (rc <= 0) {
      return rc;
    }
    if (skip_cfws(&r) != 0 || (r.pos < r.len && r.p[r.pos] != ';')) {
      return fail(SMIME_ERR_SYNTAX, err, err_len,
                  "Content-Type: junk after a parameter");
    }
  }
  return fail(SMIME_ERR_LIMIT, err, err_len,
              "Content-Type: too many parameters");
}

const char *smime_ct_param(const struct smime_ct *ct, const char *name) {
  for (size_t i = 0; i < ct->num_params; i++) {
    if (eq_nocase((const uint8_t *)ct->params[i].name,
                  strlen(ct->params[i].name), name)) {
      return ct->params[i].value;
    }
  }
  return NULL;
}

/* ct_is: the Content-Type is type/subtype. */
static int ct_is(const struct smime_ct *ct, const char *type,
                 const char *subtype) {
  return strcmp(ct->type, type) == 0 &&
         (subtype == NULL || strcmp(ct->subtype, subtype) == 0);
}

/* entity_ct parses the Content-Type of a header, defaulting to
 * text/plain; charset=us-ascii (RFC 2045 §5.2). */
static int entity_ct(struct smime_ct *ct, const struct smime_field *f, size_t n,
                     char *err, size_t err_len) {
  const struct smime_field *h;
  int rc = find_unique_field(&h, f, n, "content-type", err, err_len);
  if (rc != SMIME_OK) {
    return rc;
  }
  if (h == NULL) {
    static const char def[] = "text/plain; charset=us-ascii";
    return smime_ct_parse(ct, (const uint8_t *)def, sizeof def - 1, err,
                          err_len);
  }
  return smime_ct_parse(ct, h->value, h->value_len, err, err_len);
}

/* entity_cte writes the Content-Transfer-Encoding, lowercased ("7bit"
 * when absent). Two of them, or a value that is not one token (RFC 2045
 * §6.1), is SMIME_ERR_SYNTAX. */
static int entity_cte(char *out, size_t cap, const struct smime_field *f,
                      size_t n, char *err, size_t err_len) {
  const struct smime_field *h;
  snprintf(out, cap, "7bit");
  int rc =
      find_unique_field(&h, f, n, "content-transfer-encoding", err, err_len);
  if (rc != SMIME_OK || h == NULL) {
    return rc;
  }
  struct hreader r = {h->value, h->value_len, 0};
  if (skip_cfws(&r) != 0 || read_token(&r, out, cap, 1) <= 0 ||
      skip_cfws(&r) != 0 || r.pos != r.len) {
    snprintf(out, cap, "7bit");
    return fail(SMIME_ERR_SYNTAX, err, err_len,
                "Content-Transfer-Encoding is not one token");
  }
  return SMIME_OK;
}

/* ---- From (RFC 5322 §3.4, §3.6.2) ---- */

/* A bounded writer for the address; over is set when it did not fit. */
struct addr_out {
  char *p;
  size_t cap, len;
  int over;
};

static void addr_put(struct addr_out *o, char c) {
  if (o->len + 1 < o->cap) {
    o->p[o->len++] = c;
    o->p[o->len] = '\0';
  } else {
    o->over = 1;
  }
}

/* is_atext: RFC 5322 §3.2.3 atext (ASCII only: an address is compared
 * with certificates, which hold ASCII rfc822Names). */
static int is_atext(uint8_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') ||
         (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

static int peek(const struct hreader *r, uint8_t c) {
  return r->pos < r->len && r->p[r->pos] == c;
}

/* dot_atom_text reads 1*atext *("." 1*atext) (§3.2.3) into o. 0 or -1. */
static int dot_atom_text(struct hreader *r, struct addr_out *o) {
  for (;;) {
    size_t start = r->pos;
    while (r->pos < r->len && is_atext(r->p[r->pos])) {
      addr_put(o, (char)r->p[r->pos++]);
    }
    if (r->pos == start) {
      return -1;
    }
    if (!peek(r, '.')) {
      return 0;
    }
    addr_put(o, '.');
    r->pos++;
  }
}

/* quoted_string reads a quoted-string (§3.2.4): qtext, quoted-pairs and
 * folding whitespace (the line breaks dropped). With addr set the content
 * must be ASCII (qtext or VCHAR/WSP pairs) and is written to o; without,
 * it is a display name and any byte but NUL passes. 0 or -1. */
static int quoted_string(struct hreader *r, struct addr_out *o, int addr) {
  r->pos++; /* the opening quote */
  while (r->pos < r->len && r->p[r->pos] != '"') {
    uint8_t c = r->p[r->pos++];
    if (c == '\\') {
      if (r->pos == r->len) {
        return -1;
      }
      c = r->p[r->pos++];
      if (addr && c != ' ' && c != '\t' && (c < 33 || c > 126)) {
        return -1;
      }
    } else if (c == '\r' || c == '\n') {
      continue;
    } else if (c == '\0' || (addr && !is_wsp(c) && (c < 33 || c > 126))) {
      return -1;
    }
    if (o != NULL) {
      addr_put(o, (char)c);
    }
  }
  if (r->pos == r->len) {
    return -1;
  }
  r->pos++;
  return 0;
}

/* local_part reads dot-atom or quoted-string (§3.4.1; the obsolete forms
 * are refused). A quoted one whose content is a dot-atom is written bare
 * (RFC 5321 §4.1.2: the same mailbox); otherwise it keeps its quotes,
 * with '"' and '\' escaped. 0 or -1. */
static int local_part(struct hreader *r, struct addr_out *o) {
  if (!peek(r, '"')) {
    return dot_atom_text(r, o);
  }
  char raw[SMIME_MAX_ADDRESS + 1];
  struct addr_out q = {raw, sizeof raw, 0, 0};
  raw[0] = '\0';
  if (quoted_string(r, &q, 1) != 0 || q.over || q.len == 0) {
    o->over |= q.over;
    return -1;
  }
  struct hreader t = {(const uint8_t *)raw, q.len, 0};
  struct addr_out probe = {NULL, 0, 0, 0};
  if (dot_atom_text(&t, &probe) == 0 && t.pos == t.len) {
    for (size_t i = 0; i < q.len; i++) {
      addr_put(o, raw[i]);
    }
    return 0;
  }
  addr_put(o, '"');
  for (size_t i = 0; i < q.len; i++) {
    if (raw[i] == '"' || raw[i] == '\\') {
      addr_put(o, '\\');
    }
    addr_put(o, raw[i]);
  }
  addr_put(o, '"');
  return 0;
}

/* domain reads dot-atom or domain-literal "[" *dtext "]" (§3.4.1; no
 * whitespace inside the brackets, no obsolete forms). 0 or -1. */
static int domain(struct hreader *r, struct addr_out *o) {
  if (!peek(r, '[')) {
    return dot_atom_text(r, o);
  }
  addr_put(o, '[');
  r->pos++;
  while (r->pos < r->len && r->p[r->pos] >= 33 && r->p[r->pos] <= 126 &&
         r->p[r->pos] != '[' && r->p[r->pos] != ']' && r->p[r->pos] != '\\') {
    addr_put(o, (char)r->p[r->pos++]);
  }
  if (!peek(r, ']')) {
    return -1;
  }
  addr_put(o, ']');
  r->pos++;
  return 0;
}

/* addr_spec reads [CFWS] local-part [CFWS] "@" [CFWS] domain [CFWS]
 * (§3.4.1) into o. 0 or -1. */
static int addr_spec(struct hreader *r, struct addr_out *o) {
  if (skip_cfws(r) != 0 || local_part(r, o) != 0 || skip_cfws(r) != 0 ||
      !peek(r, '@')) {
    return -1;
  }
  addr_put(o, '@');
  r->pos++;
  return skip_cfws(r) == 0 && domain(r, o) == 0 && skip_cfws(r) == 0 ? 0 : -1;
}

/* display_name reads phrase = 1*word (§3.2.5), with the obsolete "."
 * between words (obs-phrase, "John Q. Public"). Atoms may hold 8-bit
 * bytes (RFC 6532); nothing of it is kept. 0 or -1. */
static int display_name(struct hreader *r) {
  size_t words = 0;
  for (;;) {
    if (skip_cfws(r) != 0) {
      return -1;
    }
    if (peek(r, '"')) {
      if (quoted_string(r, NULL, 0) != 0) {
        return -1;
      }
    } else if (words > 0 && peek(r, '.')) {
      r->pos++;
    } else if (r->pos < r->len &&
               (is_atext(r->p[r->pos]) || r->p[r->pos] >= 0x80)) {
      while (r->pos < r->len &&
             (is_atext(r->p[r->pos]) || r->p[r->pos] >= 0x80)) {
        r->pos++;
      }
    } else {
      return words > 0 ? 0 : -1;
    }
    words++;
  }
}

/* mailbox reads the whole value as exactly one mailbox = name-addr /
 * addr-spec (§3.4): a list, a group, a route or anything after it is
 * -1. */
static int mailbox(struct hreader *r, struct addr_out *o) {
  size_t start = r->pos;
  if (addr_spec(r, o) == 0 && r->pos == r->len) {
    return 0;
  }
  r->pos = start;
  o->len = 0;
  o->over = 0;
  o->p[0] = '\0';
  /* name-addr = [display-name] angle-addr; angle-addr = [CFWS] "<"
   * addr-spec ">" [CFWS] */
  if (skip_cfws(r) != 0 || (!peek(r, '<') && display_name(r) != 0) ||
      skip_cfws(r) != 0 || !peek(r, '<')) {
    return -1;
  }
  r->pos++;
  if (addr_spec(r, o) != 0 || !peek(r, '>')) {
    return -1;
  }
  r->pos++;
  return skip_cfws(r) == 0 && r->pos == r->len ? 0 : -1;
}

/* from_parse writes the addr-spec of the one mailbox in a From value. */
static int from_parse(char *out, size_t out_cap, const struct smime_field *h,
                      char *err, size_t err_len) {
  char addr[SMIME_MAX_ADDRESS + 1];
  struct addr_out o = {addr, sizeof addr, 0, 0};
  struct hreader r = {h->value, h->value_len, 0};
  addr[0] = '\0';
  int rc = mailbox(&r, &o);
  if (o.over) {
    return fail(SMIME_ERR_LIMIT, err, err_len,
                "From: address longer than %d bytes", SMIME_MAX_ADDRESS);
  }
  if (rc != 0 || o.len == 0) {
    return fail(SMIME_ERR_SYNTAX, err, err_len,
                "From: not exactly one mailbox (addr-spec or "
                "name <addr-spec>, RFC 5322 §3.4)");
  }
  if (o.len >= out_cap) {
    return fail(SMIME_ERR_LIMIT, err, err_len,
                "From: address of %zu bytes does not fit", o.len);
  }
  memcpy(out, addr, o.len + 1);
  return SMIME_OK;
}

int smime_from_address(char *out, size_t out_cap, const uint8_t *msg,
                       size_t msg_len, char *err, size_t err_len) {
  const struct smime_field *h = NULL;
  size_t n, body;
  if (out_cap == 0) {
    return fail(SMIME_ERR_LIMIT, err, err_len, "no room for the address");
  }
  out[0] = '\0';
  struct smime_field *f = malloc(SMIME_MAX_HEADERS * sizeof *f);
  if (f == NULL) {
    return oom(err, err_len);
  }
  int rc = smime_header_parse(f, SMIME_MAX_HEADERS, &n, &body, msg, msg_len,
                              err, err_len);
  if (rc == SMIME_OK) {
    rc = find_unique_field(&h, f, n, "from", err, err_len);
  }
  if (rc == SMIME_OK && h == NULL) {
    rc = fail(SMIME_ERR_SYNTAX, err, err_len, "no From field");
  }
  if (rc == SMIME_OK) {
    rc = from_parse(out, out_cap, h, err, err_len);
  }
  free(f);
  return rc;
}

/* ---- multipart (RFC 2046 §5.1.1) ---- */

/* boundary_ok: 1-70 characters of bchars, not ending in a space. */
static int boundary_ok(const char *b) {
  static const char bchars[] = "0123456789abcdefghijklmnopqrstuvwxyz"
                               "ABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? ";
  size_t n = strlen(b);
  return n > 0 && n <= SMIME_MAX_BOUNDARY && strspn(b, bchars) == n &&
         b[n - 1] != ' ';
}

int smime_multipart_init(struct smime_multipart *mp, const char *boundary,
                         const uint8_t *body, size_t body_len, char *err,
                         size_t err_len) {
  memset(mp, 0, sizeof *mp);
  mp->body = body;
  mp->body_len = body_len;
  if (boundary == NULL || !boundary_ok(boundary)) {
    mp->err = SMIME_ERR_SYNTAX;
    return fail(mp->err, err, err_len, "multipart: %s boundary",
                boundary == NULL ? "no" : "bad");
  }
  mp->boundary_len = strlen(boundary);
  memcpy(mp->boundary, boundary, mp->boundary_len + 1);
  return SMIME_OK;
}

/* delim_at: the line at pos is a delimiter (1), a close delimiter (2),
 * not a boundary line (0), or begins with "--" boundary without being
 * either (-1). RFC 2046 §5.1.1: dash-boundary transport-padding CRLF, the
 * close one with "--" before the padding and the line break optional at
 * the end of the body (LF alone is taken for CRLF, as everywhere here).
 * Its note to implementors lets readers match the boundary as a prefix of
 * the line, so a line that only begins like one is ambiguous (some mail
 * clients split there) and is an error, never content. *out_next is past
 * the line break. */
static int delim_at(const struct smime_multipart *mp, size_t pos,
                    size_t *out_next) {
  size_t n = mp->boundary_len,
         end = line_end(mp->body, mp->body_len, pos, out_next);
  const uint8_t *p = mp->body + pos;
  if (end - pos < n + 2 || p[0] != '-' || p[1] != '-' ||
      memcmp(p + 2, mp->boundary, n) != 0) {
    return 0;
  }
  size_t i = pos + 2 + n;
  int close = 0;
  if (end - i >= 2 && mp->body[i] == '-' && mp->body[i + 1] == '-') {
    close = 1;
    i += 2;
  }
  while (i < end && is_wsp(mp->body[i])) { /* transport padding */
    i++;
  }
  int has_break = *out_next > end; /* CRLF or LF, not the end of input */
  if (i != end || (!close && !has_break)) {
    return -1;
  }
  return 1 + close;
}

/* next_delim finds the first delimiter line starting at or after pos at
 * a line start. Returns its kind (0: none, -1: an ambiguous boundary
 * line) and its line start. */
static int next_delim(const struct smime_multipart *mp, size_t pos,
                      size_t *out_line, size_t *out_next) {
  while (pos < mp->body_len) {
    int kind = delim_at(mp, pos, out_next);
    if (kind != 0) {
      *out_line = pos;
      return kind;
    }
    const uint8_t *nl = memchr(mp->body + pos, '\n', mp->body_len - pos);
    if (nl == NULL) {
      break;
    }
    pos = (size_t)(nl - mp->body) + 1;
  }
  return 0;
}

int smime_multipart_next(struct smime_multipart *mp, const uint8_t **out_part,
                         size_t *out_part_len, char *err, size_t err_len) {
  size_t line, next;
  if (mp->err != 0 || mp->done) {
    return mp->err != 0 ? mp->err : 0;
  }
  if (!mp->started) {
    int kind = next_delim(mp, 0, &line, &next);
    if (kind != 1) {
      mp->err = SMIME_ERR_SYNTAX;
      return fail(mp->err, err, err_len, "multipart: %s",
                  kind == 0    ? "boundary not found"
                  : kind == -1 ? "a line begins with the boundary but is "
                                 "not a delimiter"
                               : "no body parts");
    }
    mp->started = 1;
    mp->preamble_len = line;
    mp->pos = next;
  }
  int kind = next_delim(mp, mp->pos, &line, &next);
  if (kind <= 0) {
    mp->err = SMIME_ERR_SYNTAX;
    return fail(mp->err, err, err_len, "multipart: %s",
                kind == 0 ? "no close delimiter"
                          : "a line begins with the boundary but is not a "
                            "delimiter");
  }
  if (++mp->num_parts > SMIME_MAX_PARTS) {
    mp->err = SMIME_ERR_LIMIT;
    return fail(mp->err, err, err_len, "multipart: more than %d parts",
                SMIME_MAX_PARTS);
  }
  size_t end = line; /* the line break before the delimiter is its own */
  if (end > mp->pos && mp->body[end - 1] == '\n') {
    end--;
    if (end > mp->pos && mp->body[end - 1] == '\r') {
      end--;
    }
  }
  *out_part = mp->body + mp->pos;
  *out_part_len = end - mp->pos;
  mp->pos = next;
  mp->done = kind == 2;
  return 1;
}

/* ---- base64 (RFC 2045 §6.8) ---- */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int smime_b64_encode(struct buf *out, const uint8_t *in, size_t in_len) {
  size_t groups = (in_len + 2) / 3, per_line = SMIME_B64_LINE / 4;
  if (buf_reserve(out, groups * 4 + (groups / per_line + 1) * 2) != 0) {
    return SMIME_ERR_INTERNAL;
  }
  uint8_t *o = out->data + out->len;
  for (size_t g = 0; g < groups; g++) {
    size_t i = g * 3, left = in_len - i;
    uint32_t v = (uint32_t)in[i] << 16;
    v |= left > 1 ? (uint32_t)in[i + 1] << 8 : 0;
    v |= left > 2 ? (uint32_t)in[i + 2] : 0;
    *o++ = (uint8_t)b64_alphabet[v >> 18];
    *o++ = (uint8_t)b64_alphabet[(v >> 12) & 63];
    *o++ = left > 1 ? (uint8_t)b64_alphabet[(v >> 6) & 63] : '=';
    *o++ = left > 2 ? (uint8_t)b64_alphabet[v & 63] : '=';
    if ((g + 1) % per_line == 0 || g + 1 == groups) {
      *o++ = '\r';
      *o++ = '\n';
    }
  }
  out->len = (size_t)(o - out->data);
  return SMIME_OK;
}

static int b64_value(uint8_t c) {
  const char *p = c != 0 ? strchr(b64_alphabet, c) : NULL;
  return p != NULL ? (int)(p - b64_alphabet) : -1;
}

int smime_b64_decode(struct buf *out, const uint8_t *in, size_t in_len) {
  size_t start = out->len, n = 0, pad = 0;
  uint32_t acc = 0;
  if (buf_reserve(out, in_len / 4 * 3 + 3) != 0) {
    return SMIME_ERR_INTERNAL;
  }
  for (size_t i = 0; i < in_len; i++) {
    uint8_t c = in[i];
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      continue;
    }
    int v = b64_value(c);
    if (c == '=' && n % 4 >= 2) {
      pad++;
      n++;
    } else if (v < 0 || pad > 0) {
      out->len = start;
      return SMIME_ERR_SYNTAX;
    } else {
      acc = acc << 6 | (uint32_t)v;
      n++;
    }
    if (n % 4 == 0) {
      acc <<= 6 * pad;
      uint8_t b[3] = {(uint8_t)(acc >> 16), (uint8_t)(acc >> 8), (uint8_t)acc};
      memcpy(out->data + out->len, b, 3 - pad);
      out->len += 3 - pad;
      acc = 0;
    }
  }
  if (n % 4 != 0) { /* a missing final padding is tolerated if whole bytes */
    size_t rem = n % 4;
    if (rem == 1 || pad > 0) {
      out->len = start;
      return SMIME_ERR_SYNTAX;
    }
    acc <<= 6 * (4 - rem);
    uint8_t b[2] = {(uint8_t)(acc >> 16), (uint8_t)(acc >> 8)};
    memcpy(out->data + out->len, b, rem - 1);
    out->len += rem - 1;
  }
  return SMIME_OK;
}

/* ---- canonical form ---- */

/* crlf_append appends in with every lone LF made CRLF. */
static int crlf_append(struct buf *out, const uint8_t *in, size_t in_len) {
  size_t extra = 0;
  for (size_t i = 0; i < in_len; i++) {
    extra += in[i] == '\n' && (i == 0 || in[i - 1] != '\r');
  }
  if (buf_reserve(out, in_len + extra) != 0) {
    return SMIME_ERR_INTERNAL;
  }
  for (size_t i = 0; i < in_len; i++) {
    if (in[i] == '\n' && (i == 0 || in[i - 1] != '\r')) {
      out->data[out->len++] = '\r';
    }
    out->data[out->len++] = in[i];
  }
  return SMIME_OK;
}

/* needs_encoding: in (LF or CRLF line ends) has 8-bit bytes, NUL, a lone
 * CR or a line over SMIME_MAX_LINE octets: a relay may alter it. */
static int needs_encoding(const uint8_t *in, size_t in_len) {
  size_t line = 0;
  for (size_t i = 0; i < in_len; i++) {
    uint8_t c = in[i];
    if (c == '\n') {
      line = 0;
      continue;
    }
    if (c >= 0x80 || c == 0 ||
        (c == '\r' && (i + 1 == in_len || in[i + 1] != '\n'))) {
      return 1;
    }
    if (c != '\r' && ++line > SMIME_MAX_LINE) {
      return 1;
    }
  }
  return 0;
}

/* qp_put appends one encoded token, breaking the line softly first when
 * it would pass 76 characters (RFC 2045 §6.7 rule 5). */
static int qp_put(struct buf *out, size_t *col, const char *tok, size_t n) {
  if (*col + n > 75) {
    if (buf_append(out, "=" CRLF, 3) != 0) {
      return -1;
    }
    *col = 0;
  }
  *col += n;
  return buf_append(out, tok, n);
}

/* qp_encode appends in (CRLF line ends) as quoted-printable: CRLF stays a
 * hard line break; '=', controls, 8-bit and whitespace before a line end
 * are =XX. */
static int qp_encode(struct buf *out, const uint8_t *in, size_t in_len) {
  size_t col = 0;
  for (size_t i = 0; i < in_len; i++) {
    uint8_t c = in[i];
    char tok[4];
    if (c == '\r' && i + 1 < in_len && in[i + 1] == '\n') {
      if (buf_append(out, CRLF, 2) != 0) {
        return SMIME_ERR_INTERNAL;
      }
      col = 0;
      i++;
      continue;
    }
    int at_eol = i + 1 == in_len ||
                 (in[i + 1] == '\r' && i + 2 < in_len && in[i + 2] == '\n');
    if ((c >= 33 && c <= 126 && c != '=') || (is_wsp(c) && !at_eol)) {
      tok[0] = (char)c;
      if (qp_put(out, &col, tok, 1) != 0) {
        return SMIME_ERR_INTERNAL;
      }
    } else {
      snprintf(tok, sizeof tok, "=%02X", c);
      if (qp_put(out, &col, tok, 3) != 0) {
        return SMIME_ERR_INTERNAL;
      }
    }
  }
  return SMIME_OK;
}

/* Canonicalising one entity: its parsed header and body. */
struct entity {
  struct smime_field fields[SMIME_MAX_HEADERS];
  size_t num_fields;
  const uint8_t *body;
  size_t body_len;
  struct smime_ct ct;
  char cte[32];
};

static int canon_entity(struct buf *out, const uint8_t *in, size_t in_len,
                        int depth, char *err, size_t err_len);

/* entity_read parses the header of in into e (heap: it is large). */
static int entity_read(struct entity *e, const uint8_t *in, size_t in_len,
                       char *err, size_t err_len) {
  size_t off;
  int rc = smime_header_parse(e->fields, SMIME_MAX_HEADERS, &e->num_fields,
                              &off, in, in_len, err, err_len);
  if (rc != SMIME_OK) {
    return rc;
  }
  e->body = in + off;
  e->body_len = in_len - off;
  rc =
      entity_cte(e->cte, sizeof e->cte, e->fields, e->num_fields, err, err_len);
  return rc != SMIME_OK
             ? rc
             : entity_ct(&e->ct, e->fields, e->num_fields, err, err_len);
}

/* header_copy appends e's fields with CRLF line ends, leaving out the
 * Content-Transfer-Encoding when cte is given and writing that instead,
 * then the blank line. */
static int header_copy(struct buf *out, const struct entity *e,
                       const char *cte) {
  int rc = 0;
  for (size_t i = 0; i < e->num_fields; i++) {
    const struct smime_field *f = &e->fields[i];
    if (cte != NULL &&
        eq_nocase(f->name, f->name_len, "content-transfer-encoding")) {
      continue;
    }
    rc |= crlf_append(out, f->raw, f->raw_len);
    if (f->raw_len == 0 || f->raw[f->raw_len - 1] != '\n') {
      rc |= buf_append(out, CRLF, 2);
    }
  }
  if (cte != NULL) {
    rc |= buf_printf(out, "Content-Transfer-Encoding: %s" CRLF, cte);
  }
  rc |= buf_append(out, CRLF, 2);
  return rc != 0 ? SMIME_ERR_INTERNAL : SMIME_OK;
}

/* canon_leaf re-encodes a single-part body to 7 bits. */
static int canon_leaf(struct buf *out, const struct entity *e, char *err,
                      size_t err_len) {
  struct buf tmp = {0};
  int text = ct_is(&e->ct, "text", NULL), rc;
  if (strcmp(e->cte, "quoted-printable") == 0) {
    return fail(SMIME_ERR_UNSUPPORTED, err, err_len,
                "a quoted-printable body holds 8-bit bytes or long lines");
  }
  if (strcmp(e->cte, "base64") == 0) { /* re-wrap over-long lines */
    rc = smime_b64_decode(&tmp, e->body, e->body_len);
    text = 0;
  } else if (strcmp(e->cte, "binary") == 0 && !text) {
    rc = buf_append(&tmp, e->body, e->body_len) != 0 ? SMIME_ERR_INTERNAL : 0;
  } else { /* 7bit, 8bit, unknown: lines, so line ends are CRLF */
    rc = crlf_append(&tmp, e->body, e->body_len);
  }
  if (rc == SMIME_OK) {
    rc = header_copy(out, e, text ? "quoted-printable" : "base64");
  }
  if (rc == SMIME_OK) {
    rc = text ? qp_encode(out, tmp.data, tmp.len)
              : smime_b64_encode(out, tmp.data, tmp.len);
  }
  buf_free(&tmp);
  if (rc == SMIME_ERR_SYNTAX) {
    return fail(rc, err, err_len, "a base64 body part does not decode");
  }
  return rc == SMIME_OK ? rc : fail(rc, err, err_len, "out of memory");
}

/* canon_lines appends in with CRLF line ends, or nothing when it is not
 * 7-bit (a preamble or epilogue nobody reads). */
static int canon_lines(struct buf *out, const uint8_t *in, size_t in_len) {
  return needs_encoding(in, in_len) ? SMIME_OK : crlf_append(out, in, in_len);
}

/* canon_multipart rebuilds a multipart body from its canonical parts:
 * preamble, each part between delimiters, close delimiter, epilogue. */
static int canon_multipart(struct buf *out, const struct entity *e, int depth,
                           char *err, size_t err_len) {
  struct smime_multipart mp;
  const uint8_t *part;
  size_t part_len;
  int rc = smime_multipart_init(&mp, smime_ct_param(&e->ct, "boundary"),
                                e->body, e->body_len, err, err_len);
  if (rc == SMIME_OK) {
    rc = header_copy(out, e, NULL);
  }
  while (rc == SMIME_OK && (rc = smime_multipart_next(&mp, &part, &part_len,
                                                      err, err_len)) == 1) {
    rc = mp.num_parts == 1 ? canon_lines(out, e->body, mp.preamble_len)
                           : SMIME_OK;
    if (rc == SMIME_OK && buf_printf(out, "--%s" CRLF, mp.boundary) != 0) {
      rc = SMIME_ERR_INTERNAL;
    }
    if (rc == SMIME_OK) {
      rc = canon_entity(out, part, part_len, depth + 1, err, err_len);
    }
    if (rc == SMIME_OK && buf_append(out, CRLF, 2) != 0) {
      rc = SMIME_ERR_INTERNAL;
    }
  }
  /* the close delimiter keeps its line break only if it had one */
  int eol = mp.pos > 0 && e->body[mp.pos - 1] == '\n';
  if (rc == 0 &&
      buf_printf(out, "--%s--%s", mp.boundary, eol ? CRLF : "") != 0) {
    rc = SMIME_ERR_INTERNAL;
  }
  if (rc == 0 && mp.pos < e->body_len) {
    rc = canon_lines(out, e->body + mp.pos, e->body_len - mp.pos);
  }
  return rc == SMIME_ERR_INTERNAL ? oom(err, err_len) : rc;
}

/* canon_reencode writes the header and body of an entity that needs
 * re-encoding somewhere inside. */
static int canon_reencode(struct buf *out, struct entity *e, int depth,
                          char *err, size_t err_len) {
  if (ct_is(&e->ct, "multipart", "signed") ||
      ct_is(&e->ct, "application", "pkcs7-mime") ||
      ct_is(&e->ct, "application", "x-pkcs7-mime")) {
    return fail(SMIME_ERR_UNSUPPORTED, err, err_len,
                "a signed or encrypted %s/%s part is not 7-bit: it cannot "
                "be re-encoded without breaking it",
                e->ct.type, e->ct.subtype);
  }
  if (ct_is(&e->ct, "multipart", NULL)) {
    return canon_multipart(out, e, depth, err, err_len);
  }
  if (ct_is(&e->ct, "message", NULL)) {
    /* RFC 2046 §5.2: message/ parts are never encoded: canonicalise the
     * enclosed message as an entity and call it 7bit. */
    int rc = header_copy(out, e, "7bit");
    return rc != SMIME_OK ? oom(err, err_len)
                          : canon_entity(out, e->body, e->body_len, depth + 1,
                                         err, err_len);
  }
  return canon_leaf(out, e, err, err_len);
}

static int canon_entity(struct buf *out, const uint8_t *in, size_t in_len,
                        int depth, char *err, size_t err_len) {
  if (depth > SMIME_MAX_DEPTH) {
    return fail(SMIME_ERR_LIMIT, err, err_len,
                "multiparts nested deeper than %d", SMIME_MAX_DEPTH);
  }
  if (!needs_encoding(in, in_len)) {
    return crlf_append(out, in, in_len) != 0 ? oom(err, err_len) : SMIME_OK;
  }
  struct entity *e = malloc(sizeof *e);
  if (e == NULL) {
    return oom(err, err_len);
  }
  int rc = entity_read(e, in, in_len, err, err_len);
  if (rc == SMIME_OK && needs_encoding(in, in_len - e->body_len)) {
    rc = fail(SMIME_ERR_UNSUPPORTED, err, err_len,
              "8-bit bytes or over-long lines in content header fields");
  }
  if (rc == SMIME_OK) {
    rc = canon_reencode(out, e, depth, err, err_len);
  }
  free(e);
  return rc;
}

int smime_canon(struct buf *out, const uint8_t *entity, size_t entity_len,
                char *err, size_t err_len) {
  size_t start = out->len;
  if (entity_len > SMIME_MAX_MESSAGE) {
    return fail(SMIME_ERR_LIMIT, err, err_len, "entity of %zu bytes",
                entity_len);
  }
  int rc = canon_entity(out, entity, entity_len, 0, err, err_len);
  if (rc != SMIME_OK) {
    out->len = start;
  }
  return rc;
}

/* ---- splitting ---- */

/* is_content_field: the field belongs to the MIME entity (RFC 2045 §9:
 * Content-*), or is MIME-Version (written once, outside). */
static int is_content_field(const struct smime_field *f, int *out_version) {
  *out_version = eq_nocase(f->name, f->name_len, "mime-version");
  return *out_version ||
         (f->name_len >= 8 && eq_nocase(f->name, 8, "content-"));
}

/* content_fields_unique: at most one Content-Type and one
 * Content-Transfer-Encoding (RFC 2045 §3); a second is SMIME_ERR_SYNTAX,
 * as readers differ on which one counts. */
static int content_fields_unique(const struct smime_field *f, size_t n,
                                 char *err, size_t err_len) {
  const struct smime_field *h;
  int rc = find_unique_field(&h, f, n, "content-type", err, err_len);
  return rc != SMIME_OK
             ? rc
             : find_unique_field(&h, f, n, "content-transfer-encoding", err,
                                 err_len);
}

/* field_copy appends a whole field with CRLF line ends. */
static int field_copy(struct buf *out, const struct smime_field *f) {
  int rc = crlf_append(out, f->raw, f->raw_len);
  if (rc == 0 && (f->raw_len == 0 || f->raw[f->raw_len - 1] != '\n')) {
    rc = buf_append(out, CRLF, 2);
  }
  return rc;
}

int smime_split(struct buf *out_outer, struct buf *out_entity,
                const uint8_t *msg, size_t msg_len, char *err, size_t err_len) {
  struct smime_field *f = malloc(SMIME_MAX_HEADERS * sizeof *f);
  size_t n, body, o0 = out_outer->len, e0 = out_entity->len;
  int rc, has_ct = 0, version;
  if (f == NULL) {
    return oom(err, err_len);
  }
  rc = smime_header_parse(f, SMIME_MAX_HEADERS, &n, &body, msg, msg_len, err,
                          err_len);
  if (rc == SMIME_OK) {
    rc = content_fields_unique(f, n, err, err_len);
  }
  for (size_t i = 0; rc == SMIME_OK && i < n; i++) {
    if (!is_content_field(&f[i], &version)) {
      rc = field_copy(out_outer, &f[i]);
    } else if (!version) {
      has_ct |= eq_nocase(f[i].name, f[i].name_len, "content-type");
      rc = field_copy(out_entity, &f[i]);
    }
  }
  free(f);
  if (rc == SMIME_OK && !has_ct) {
    rc = buf_append_str(out_entity,
                        "Content-Type: text/plain; charset=us-ascii" CRLF);
  }
  if (rc == SMIME_OK && (buf_append(out_entity, CRLF, 2) != 0 ||
                         buf_append(out_entity, msg + body, msg_len - body))) {
    rc = SMIME_ERR_INTERNAL;
  }
  if (rc != SMIME_OK) {
    out_outer->len = o0;
    out_entity->len = e0;
  }
  return rc == SMIME_ERR_INTERNAL ? oom(err, err_len) : rc;
}

/* join_entity appends the entity's Content-* fields (CRLF line ends),
 * the blank line and its body. */
static int join_entity(struct buf *out, const uint8_t *entity,
                       size_t entity_len) {
  struct smime_field *f = malloc(SMIME_MAX_HEADERS * sizeof *f);
  size_t n, body;
  int version;
  if (f == NULL) {
    return SMIME_ERR_INTERNAL;
  }
  int rc = smime_header_parse(f, SMIME_MAX_HEADERS, &n, &body, entity,
                              entity_len, NULL, 0);
  if (rc == SMIME_OK) {
    rc = content_fields_unique(f, n, NULL, 0);
  }
  for (size_t i = 0; rc == SMIME_OK && i < n; i++) {
    if (is_content_field(&f[i], &version) && !version &&
        field_copy(out, &f[i]) != 0) {
      rc = SMIME_ERR_INTERNAL;
    }
  }
  free(f);
  if (rc == SMIME_OK &&
      (buf_append(out, CRLF, 2) != 0 ||
       buf_append(out, entity + body, entity_len - body) != 0)) {
    rc = SMIME_ERR_INTERNAL;
  }
  return rc;
}

int smime_join(struct buf *out, const uint8_t *outer, size_t outer_len,
               const uint8_t *entity, size_t entity_len) {
  size_t start = out->len;
  int rc = buf_append(out, outer, outer_len) != 0 ||
                   buf_append_str(out, "MIME-Version: 1.0" CRLF) != 0
               ? SMIME_ERR_INTERNAL
               : join_entity(out, entity, entity_len);
  if (rc != SMIME_OK) {
    out->len = start;
  }
  return rc;
}

/* ---- building ---- */

/* The parts every wrapper shares: the outer header and the canonical
 * entity of the message being wrapped. */
struct wrap {
  struct buf outer;
  struct buf entity; /* as split */
  struct buf canon;  /* canonical form: what is signed or encrypted */
  struct buf der;
  struct buf body; /* the new entity */
};

static void wrap_cleanup(struct wrap *w) {
  buf_free(&w->outer);
  buf_free(&w->entity);
  buf_free(&w->canon);
  buf_free(&w->der);
  buf_free(&w->body);
}

static int wrap_begin(struct wrap *w, const uint8_t *msg, size_t msg_len,
                      char *err, size_t err_len) {
  memset(w, 0, sizeof *w);
  if (msg_len > SMIME_MAX_MESSAGE) {
    return fail(SMIME_ERR_LIMIT, err, err_len,
                "message of %zu bytes (limit %u)", msg_len, SMIME_MAX_MESSAGE);
  }
  int rc = smime_split(&w->outer, &w->entity, msg, msg_len, err, err_len);
  return rc != SMIME_OK ? rc
                        : smime_canon(&w->canon, w->entity.data, w->entity.len,
                                      err, err_len);
}

/* wrap_finish appends outer + MIME-Version + the new entity to out. */
static int wrap_finish(struct buf *out, struct wrap *w, char *err,
                       size_t err_len) {
  int rc =
      smime_join(out, w->outer.data, w->outer.len, w->body.data, w->body.len);
  return rc == SMIME_ERR_INTERNAL ? oom(err, err_len)
         : rc != SMIME_OK ? fail(rc, err, err_len, "cannot join the message")
                          : SMIME_OK;
}

/* p7m_entity writes an application/pkcs7-mime entity (RFC 8551 §3.2) of
 * der with the given smime-type. */
static int p7m_entity(struct buf *out, const char *smime_type,
                      const struct buf *der) {
  int rc = buf_printf(out,
                      "Content-Type: application/pkcs7-mime; "
                      "smime-type=%s;" CRLF "\tname=\"smime.p7m\"" CRLF
                      "Content-Transfer-Encoding: base64" CRLF
                      "Content-Disposition: attachment; "
                      "filename=\"smime.p7m\"" CRLF CRLF,
                      smime_type);
  return rc != 0 ? SMIME_ERR_INTERNAL
                 : smime_b64_encode(out, der->data, der->len);
}

static const char *digest_micalg(enum cms_digest d) {
  return d == CMS_SHA512 ? "sha-512" : d == CMS_SHA384 ? "sha-384" : "sha-256";
}

/* party_digest: Ed25519 always hashes with SHA-512 (RFC 8419 §3.1). */
static enum cms_digest party_digest(const struct cms_sign_party *p) {
  EVP_PKEY *pk = p->cert != NULL ? X509_get_pubkey(p->cert) : NULL;
  int ed = pk != NULL && EVP_PKEY_id(pk) == EVP_PKEY_ED25519;
  EVP_PKEY_free(pk);
  return ed ? CMS_SHA512 : p->digest;
}

/* micalg writes the micalg value: each digest used, once, comma-separated
 * (RFC 8551 §3.5.3.2). */
static void micalg(char *out, size_t cap, const struct cms_sign_party *parties,
                   size_t num_parties) {
  int seen[3] = {0, 0, 0};
  out[0] = '\0';
  for (size_t i = 0; i < num_parties; i++) {
    enum cms_digest d = party_digest(&parties[i]);
    if ((unsigned)d < 3 && !seen[d]) {
      seen[d] = 1;
      size_t n = strlen(out);
      snprintf(out + n, cap - n, "%s%s", n > 0 ? "," : "", digest_micalg(d));
    }
  }
}

/* fresh_boundary picks a boundary that does not occur in content. */
static int fresh_boundary(char *out, size_t cap, const struct buf *content) {
  for (int tries = 0; tries < 8; tries++) {
    uint8_t r[12];
    RAND_bytes(r, sizeof r);
    int n = snprintf(out, cap, "----=_smime_");
    for (size_t i = 0; i < sizeof r; i++) {
      n += snprintf(out + n, cap - (size_t)n, "%02x", r[i]);
    }
    if (content->len == 0 ||
        memmem(content->data, content->len, out, strlen(out)) == NULL) {
      return SMIME_OK;
    }
  }
  return SMIME_ERR_INTERNAL;
}

/* signed_entity writes multipart/signed (RFC 1847 §2.1, RFC 8551 §3.5.3):
 * the canonical entity as the first part, der as smime.p7s. */
static int signed_entity(struct buf *out, const char *boundary, const char *mic,
                         const struct buf *canon, const struct buf *der) {
  int multi = strchr(mic, ',') != NULL, rc;
  rc =
      buf_printf(out,
                 "Content-Type: multipart/signed;" CRLF
                 "\tprotocol=\"application/pkcs7-signature\";" CRLF
                 "\tmicalg=%s%s%s;" CRLF "\tboundary=\"%s\"" CRLF CRLF
                 "This is an S/MIME signed message" CRLF CRLF "--%s" CRLF,
                 multi ? "\"" : "", mic, multi ? "\"" : "", boundary, boundary);
  rc |= buf_append(out, canon->data, canon->len);
  rc |= buf_printf(
      out,
      CRLF "--%s" CRLF "Content-Type: application/pkcs7-signature; "
           "name=\"smime.p7s\"" CRLF "Content-Transfer-Encoding: base64" CRLF
           "Content-Disposition: attachment; "
           "filename=\"smime.p7s\"" CRLF CRLF,
      boundary);
  if (rc != 0 || smime_b64_encode(out, der->data, der->len) != 0 ||
      buf_printf(out, "--%s--" CRLF, boundary) != 0) {
    return SMIME_ERR_INTERNAL;
  }
  return SMIME_OK;
}

static int cms_fail(int rc, char *err, size_t err_len) {
  if (err != NULL && err_len > 0 && err[0] == '\0') {
    snprintf(err, err_len, "cms: %s", cms_err_str(rc));
  }
  return SMIME_ERR_CMS;
}

int smime_sign(struct buf *out, const struct cms_signer *signer,
               const struct cms_sign_party *parties, size_t num_parties,
               const struct smime_sign_opts *opts, const uint8_t *msg,
               size_t msg_len, char *err, size_t err_len) {
  struct wrap w;
  char boundary[SMIME_MAX_BOUNDARY + 1], mic[32];
  struct cms_sign_opts co = {.detached = !opts->opaque,
                             .signing_time = opts->signing_time,
                             .no_certs = opts->no_certs,
                             .no_smime_attrs = opts->no_smime_attrs,
                             .enc_cert = opts->enc_cert};
  int rc = wrap_begin(&w, msg, msg_len, err, err_len);
  if (rc == SMIME_OK && opts->boundary != NULL &&
      (!boundary_ok(opts->boundary) ||
       memmem(w.canon.data, w.canon.len, opts->boundary,
              strlen(opts->boundary)) != NULL)) {
    rc = fail(SMIME_ERR_UNSUPPORTED, err, err_len,
              "boundary unusable or found in the content");
  }
  if (rc == SMIME_OK) {
    int c = cms_sign(&w.der, signer, parties, num_parties, w.canon.data,
                     w.canon.len, &co, err, err_len);
    rc = c != CMS_OK ? cms_fail(c, err, err_len) : SMIME_OK;
  }
  if (rc == SMIME_OK && opts->opaque) {
    rc = p7m_entity(&w.body, "signed-data", &w.der);
  } else if (rc == SMIME_OK) {
    micalg(mic, sizeof mic, parties, num_parties);
    if (opts->boundary != NULL) {
      snprintf(boundary, sizeof boundary, "%s", opts->boundary);
    } else {
      rc = fresh_boundary(boundary, sizeof boundary, &w.canon);
    }
    rc = rc ? rc : signed_entity(&w.body, boundary, mic, &w.canon, &w.der);
  }
  if (rc == SMIME_ERR_INTERNAL) {
    rc = oom(err, err_len);
  }
  rc = rc ? rc : wrap_finish(out, &w, err, err_len);
  wrap_cleanup(&w);
  return rc;
}

int smime_encrypt(struct buf *out, const struct cms_recipient *rcpts,
                  size_t num_rcpts, enum cms_cipher cipher, const uint8_t *msg,
                  size_t msg_len, char *err, size_t err_len) {
  struct wrap w;
  int gcm = cipher == CMS_AES256_GCM || cipher == CMS_AES128_GCM;
  int rc = wrap_begin(&w, msg, msg_len, err, err_len);
  if (rc == SMIME_OK) {
    int c = cms_encrypt(&w.der, rcpts, num_rcpts, w.canon.data, w.canon.len,
                        cipher, err, err_len);
    rc = c != CMS_OK ? cms_fail(c, err, err_len) : SMIME_OK;
  }
  if (rc == SMIME_OK &&
      p7m_entity(&w.body, gcm ? "authEnveloped-data" : "enveloped-data",
                 &w.der) != 0) {
    rc = oom(err, err_len);
  }
  rc = rc ? rc : wrap_finish(out, &w, err, err_len);
  wrap_cleanup(&w);
  return rc;
}

/* ---- parsing ---- */

const char *smime_kind_str(enum smime_kind k) {
  switch (k) {
  case SMIME_KIND_NONE:
    return "none";
  case SMIME_KIND_MULTIPART_SIGNED:
    return "multipart-signed";
  case SMIME_KIND_SIGNED_DATA:
    return "signed-data";
  case SMIME_KIND_ENVELOPED:
    return "enveloped-data";
  case SMIME_KIND_AUTH_ENVELOPED:
    return "authEnveloped-data";
  }
  return "unknown";
}

void smime_parsed_cleanup(struct smime_parsed *p) {
  buf_free(&p->der);
  memset(p, 0, sizeof *p);
}

/* decode_body appends the decoded body of a part to out: base64, or as it
 * is for binary (and the 7bit/8bit labels some clients put on DER). */
static int decode_body(struct buf *out, const char *cte, const uint8_t *body,
                       size_t body_len, char *err, size_t err_len) {
  if (strcmp(cte, "base64") == 0) {
    int rc = smime_b64_decode(out, body, body_len);
    if (rc == SMIME_ERR_SYNTAX) {
      return fail(rc, err, err_len, "the S/MIME part is not valid base64");
    }
    return rc == SMIME_OK ? rc : oom(err, err_len);
  }
  if (strcmp(cte, "binary") == 0 || strcmp(cte, "8bit") == 0 ||
      strcmp(cte, "7bit") == 0) {
    return buf_append(out, body, body_len) != 0 ? oom(err, err_len) : SMIME_OK;
  }
  return fail(SMIME_ERR_UNSUPPORTED, err, err_len,
              "S/MIME part with Content-Transfer-Encoding %s", cte);
}

/* is_pkcs7 matches application/pkcs7-<sub> or application/x-pkcs7-<sub>. */
static int is_pkcs7(const struct smime_ct *ct, const char *sub) {
  char a[48], b[48];
  snprintf(a, sizeof a, "pkcs7-%s", sub);
  snprintf(b, sizeof b, "x-pkcs7-%s", sub);
  return strcmp(ct->type, "application") == 0 &&
         (strcmp(ct->subtype, a) == 0 || strcmp(ct->subtype, b) == 0);
}

/* parse_signature_part reads the second part of multipart/signed. */
static int parse_signature_part(struct smime_parsed *out, const uint8_t *part,
                                size_t part_len, char *err, size_t err_len) {
  struct entity *e = malloc(sizeof *e);
  if (e == NULL) {
    return oom(err, err_len);
  }
  int rc = entity_read(e, part, part_len, err, err_len);
  if (rc == SMIME_OK && !is_pkcs7(&e->ct, "signature")) {
    rc = fail(SMIME_ERR_SYNTAX, err, err_len,
              "multipart/signed: the second part is %s/%s, not "
              "application/pkcs7-signature",
              e->ct.type, e->ct.subtype);
  }
  if (rc == SMIME_OK) {
    rc = decode_body(&out->der, e->cte, e->body, e->body_len, err, err_len);
  }
  free(e);
  return rc;
}

/* parse_multipart_signed takes the two parts of multipart/signed (RFC
 * 1847 §2.1): the first's exact bytes, the second's decoded signature. */
static int parse_multipart_signed(struct smime_parsed *out,
                                  const struct entity *e, char *err,
                                  size_t err_len) {
  struct smime_multipart mp;
  const uint8_t *sig;
  size_t sig_len;
  const char *mic = smime_ct_param(&e->ct, "micalg");
  snprintf(out->micalg, sizeof out->micalg, "%s", mic != NULL ? mic : "");
  for (char *p = out->micalg; *p; p++) {
    *p = lower(*p);
  }
  int rc = smime_multipart_init(&mp, smime_ct_param(&e->ct, "boundary"),
                                e->body, e->body_len, err, err_len);
  if (rc == SMIME_OK) {
    rc = smime_multipart_next(&mp, &out->content, &out->content_len, err,
                              err_len);
  }
  if (rc == 1) {
    rc = smime_multipart_next(&mp, &sig, &sig_len, err, err_len);
    if (rc == 0) {
      rc = fail(SMIME_ERR_SYNTAX, err, err_len,
                "multipart/signed: no signature part");
    }
  }
  if (rc == 1 && !mp.done) {
    rc = fail(SMIME_ERR_SYNTAX, err, err_len,
              "multipart/signed: more than two parts");
  }
  if (rc == 1) {
    rc = parse_signature_part(out, sig, sig_len, err, err_len);
  }
  return rc;
}

/* kind_of maps a CMS content type to the S/MIME kind. */
static enum smime_kind kind_of(enum cms_type t) {
  switch (t) {
  case CMS_TYPE_SIGNED:
    return SMIME_KIND_SIGNED_DATA;
  case CMS_TYPE_ENVELOPED:
    return SMIME_KIND_ENVELOPED;
  case CMS_TYPE_AUTH_ENVELOPED:
    return SMIME_KIND_AUTH_ENVELOPED;
  default:
    return SMIME_KIND_NONE;
  }
}

/* smime_type_kind maps an smime-type value (RFC 8551 §3.2.2) to the kind
 * it announces: SMIME_KIND_NONE for one this module does not open. */
static enum smime_kind smime_type_kind(const char *st) {
  static const struct {
    const char *name;
    enum smime_kind kind;
  } types[] = {
      {"signed-data", SMIME_KIND_SIGNED_DATA},
      {"enveloped-data", SMIME_KIND_ENVELOPED},
      {"authEnveloped-data", SMIME_KIND_AUTH_ENVELOPED},
  };
  for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
    if (eq_nocase((const uint8_t *)st, strlen(st), types[i].name)) {
      return types[i].kind;
    }
  }
  return SMIME_KIND_NONE;
}

/* parse_p7m reads application/pkcs7-mime (RFC 8551 §3.2.2). The CMS
 * content type decides the kind; an smime-type, when given, must name the
 * same one (a mismatch is SMIME_ERR_SYNTAX: a client going by the label
 * and this module going by the DER would treat the message differently).
 * An enveloped kind must be a whole, well-formed EnvelopedData or
 * AuthEnvelopedData (cms_check_enveloped), so that a ContentInfo head
 * before plaintext is not taken for an encrypted message. */
static int parse_p7m(struct smime_parsed *out, const struct entity *e,
                     char *err, size_t err_len) {
  const char *st = smime_ct_param(&e->ct, "smime-type");
  enum cms_type t;
  if (st != NULL &&
      (eq_nocase((const uint8_t *)st, strlen(st), "certs-only") ||
       eq_nocase((const uint8_t *)st, strlen(st), "compressed-data"))) {
    return fail(SMIME_ERR_UNSUPPORTED, err, err_len, "smime-type=%s", st);
  }
  if (st != NULL && smime_type_kind(st) == SMIME_KIND_NONE) {
    return fail(SMIME_ERR_UNSUPPORTED, err, err_len, "smime-type=%.64s", st);
  }
  int rc = decode_body(&out->der, e->cte, e->body, e->body_len, err, err_len);
  if (rc != SMIME_OK) {
    return rc;
  }
  if (cms_content_type(out->der.data, out->der.len, &t) != CMS_OK) {
    return fail(SMIME_ERR_SYNTAX, err, err_len,
                "application/pkcs7-mime: not a CMS ContentInfo");
  }
  out->kind = kind_of(t);
  if (out->kind == SMIME_KIND_NONE) {
    return fail(SMIME_ERR_UNSUPPORTED, err, err_len,
                "application/pkcs7-mime: CMS content type not handled");
  }
  if (st != NULL && smime_type_kind(st) != out->kind) {
    return fail(SMIME_ERR_SYNTAX, err, err_len,
                "application/pkcs7-mime: smime-type=%s but the CMS content "
                "is %s",
                st, smime_kind_str(out->kind));
  }
  if (out->kind == SMIME_KIND_ENVELOPED ||
      out->kind == SMIME_KIND_AUTH_ENVELOPED) {
    char why[128] = "";
    int c = cms_check_enveloped(out->der.data, out->der.len, why, sizeof why);
    if (c != CMS_OK) {
      return fail(c == CMS_ERR_INTERNAL ? SMIME_ERR_INTERNAL : SMIME_ERR_SYNTAX,
                  err, err_len,
                  "application/pkcs7-mime: not a well-formed %s: %s",
                  smime_kind_str(out->kind), why);
    }
  }
  return SMIME_OK;
}

int smime_parse(struct smime_parsed *out, const uint8_t *msg, size_t msg_len,
                char *err, size_t err_len) {
  memset(out, 0, sizeof *out);
  struct entity *e = malloc(sizeof *e);
  if (e == NULL) {
    return oom(err, err_len);
  }
  int rc = entity_read(e, msg, msg_len, err, err_len);
  if (rc == SMIME_OK && ct_is(&e->ct, "multipart", "signed")) {
    const char *proto = smime_ct_param(&e->ct, "protocol");
    if (proto != NULL && (eq_nocase((const uint8_t *)proto, strlen(proto),
                                    "application/pkcs7-signature") ||
                          eq_nocase((const uint8_t *)proto, strlen(proto),
                                    "application/x-pkcs7-signature"))) {
      out->kind = SMIME_KIND_MULTIPART_SIGNED;
      rc = parse_multipart_signed(out, e, err, err_len);
    }
  } else if (rc == SMIME_OK && is_pkcs7(&e->ct, "mime")) {
    rc = parse_p7m(out, e, err, err_len);
  }
  free(e);
  if (rc != SMIME_OK) {
    smime_parsed_cleanup(out);
  }
  return rc;
}

/* ---- unwrapping ---- */

/* signed_layer_check holds a verified layer to what its wrapper
 * promises: multipart/signed carries a detached signature over its first
 * part (RFC 8551 §3.5.3), signed-data carries its content (§3.5.2), and
 * S/MIME signs MIME entities, eContentType id-data (§2.4.1). */
static int signed_layer_check(const struct smime_parsed *p,
                              const struct cms_verified *v, char *err,
                              size_t err_len) {
  if (p->kind == SMIME_KIND_MULTIPART_SIGNED && !v->detached) {
    return fail(SMIME_ERR_SYNTAX, err, err_len,
                "multipart/signed whose signature encapsulates content");
  }
  if (p->kind == SMIME_KIND_SIGNED_DATA && v->detached) {
    return fail(SMIME_ERR_SYNTAX, err, err_len,
                "signed-data without encapsulated content");
  }
  if (v->content_type != CMS_TYPE_DATA) {
    return fail(SMIME_ERR_UNSUPPORTED, err, err_len,
                "signed content type is not id-data (RFC 8551 §2.4.1)");
  }
  return SMIME_OK;
}

int smime_verify_message(struct cms_verified *out_v, struct buf *out_entity,
                         const struct cms_verify_opts *opts, const uint8_t *msg,
                         size_t msg_len, char *err, size_t err_len) {
  struct smime_parsed p;
  struct buf content = {0};
  memset(out_v, 0, sizeof *out_v);
  int rc = smime_parse(&p, msg, msg_len, err, err_len);
  if (rc == SMIME_OK && p.kind != SMIME_KIND_MULTIPART_SIGNED &&
      p.kind != SMIME_KIND_SIGNED_DATA) {
    rc = fail(SMIME_ERR_NOT_SMIME, err, err_len, "not a signed message (%s)",
              smime_kind_str(p.kind));
  }
  /* RFC 8551 §3.1.1: the signer signed CRLF line ends; a message stored
   * with LF is brought back to them. */
  if (rc == SMIME_OK && p.kind == SMIME_KIND_MULTIPART_SIGNED &&
      crlf_append(&content, p.content, p.content_len) != 0) {
    rc = oom(err, err_len);
  }
  if (rc == SMIME_OK) {
    /* multipart/signed always hands its first part over, even an empty
     * one (never NULL), so cms_verify refuses a signature that carries
     * content of its own instead of checking that. */
    const uint8_t *detached = NULL;
    if (p.kind == SMIME_KIND_MULTIPART_SIGNED) {
      detached = content.data != NULL ? content.data : (const uint8_t *)"";
    }
    int c = cms_verify(out_v, p.der.data, p.der.len, detached, content.len,
                       opts, err, err_len);
    rc = c != CMS_OK ? cms_fail(c, err, err_len) : SMIME_OK;
  }
  if (rc == SMIME_OK) {
    rc = signed_layer_check(&p, out_v, err, err_len);
  }
  if (rc == SMIME_OK) {
    const struct buf *inner =
        p.kind == SMIME_KIND_MULTIPART_SIGNED ? &content : &out_v->content;
    if (buf_append(out_entity, inner->data, inner->len) != 0) {
      rc = oom(err, err_len);
    }
  }
  if (rc != SMIME_OK) { /* no verdicts without the content they cover */
    cms_verified_cleanup(out_v);
    memset(out_v, 0, sizeof *out_v);
  }
  buf_free(&content);
  smime_parsed_cleanup(&p);
  return rc;
}

int smime_decrypt_message(struct buf *out_entity, int *out_authenticated,
                          const struct cms_signer *signer,
                          const struct cms_decrypt_party *parties,
                          size_t num_parties, const uint8_t *msg,
                          size_t msg_len, char *err, size_t err_len) {
  struct smime_parsed p;
  *out_authenticated = 0;
  int rc = smime_parse(&p, msg, msg_len, err, err_len);
  if (rc == SMIME_OK && p.kind != SMIME_KIND_ENVELOPED &&
      p.kind != SMIME_KIND_AUTH_ENVELOPED) {
    rc = fail(SMIME_ERR_NOT_SMIME, err, err_len,
              "not an encrypted message (%s)", smime_kind_str(p.kind));
  }
  if (rc == SMIME_OK) {
    int c = cms_decrypt(out_entity, out_authenticated, signer, parties,
                        num_parties, p.der.data, p.der.len, err, err_len);
    rc = c != CMS_OK ? cms_fail(c, err, err_len) : SMIME_OK;
  }
  smime_parsed_cleanup(&p);
  return rc;
}

void smime_opened_cleanup(struct smime_opened *o) {
  for (size_t i = 0; i < SMIME_MAX_LAYERS; i++) {
    cms_verified_cleanup(&o->layers[i].verified);
  }
  buf_free(&o->entity);
  buf_free(&o->message);
  memset(o, 0, sizeof *o);
}

/* open_layer unwraps one layer of cur into next. Returns SMIME_OK,
 * SMIME_ERR_NOT_SMIME when cur is not S/MIME, or an error. */
static int open_layer(struct smime_layer *l, struct buf *next,
                      const struct smime_open_opts *opts, const uint8_t *cur,
                      size_t cur_len, char *err, size_t err_len) {
  struct smime_parsed p;
  int rc = smime_parse(&p, cur, cur_len, err, err_len);
  l->kind = p.kind;
  smime_parsed_cleanup(&p);
  if (rc != SMIME_OK) {
    return rc;
  }
  switch (l->kind) {
  case SMIME_KIND_NONE:
    return SMIME_ERR_NOT_SMIME;
  case SMIME_KIND_MULTIPART_SIGNED:
  case SMIME_KIND_SIGNED_DATA:
    rc = smime_verify_message(&l->verified, next, &opts->verify, cur, cur_len,
                              err, err_len);
    l->authenticated = rc == SMIME_OK && cms_verified_all_pass(&l->verified);
    return rc;
  case SMIME_KIND_ENVELOPED:
  case SMIME_KIND_AUTH_ENVELOPED:
    if (opts->signer == NULL || opts->num_parties == 0) {
      return fail(SMIME_ERR_UNSUPPORTED, err, err_len,
                  "the message is encrypted and no key was given");
    }
    return smime_decrypt_message(next, &l->authenticated, opts->signer,
                                 opts->parties, opts->num_parties, cur, cur_len,
                                 err, err_len);
  }
  return SMIME_ERR_INTERNAL;
}

/* open_summary fills the flags from the layers and applies the EFAIL
 * policy: a CBC layer must be followed by a signed layer that passes. */
static int open_summary(struct smime_opened *o, int allow_unauthenticated,
                        char *err, size_t err_len) {
  int exposed = 0;
  o->auth_encrypted = 1;
  o->all_pass = 1;
  for (size_t i = 0; i < o->num_layers; i++) {
    const struct smime_layer *l = &o->layers[i];
    if (l->kind == SMIME_KIND_ENVELOPED ||
        l->kind == SMIME_KIND_AUTH_ENVELOPED) {
      o->encrypted = 1;
      o->auth_encrypted &= l->authenticated;
      if (!l->authenticated && (i + 1 == o->num_layers ||
                                o->layers[i + 1].verified.num_signers == 0 ||
                                !o->layers[i + 1].authenticated)) {
        exposed = 1;
      }
    } else {
      o->signed_ = 1;
      o->all_pass &= l->authenticated;
    }
  }
  o->auth_encrypted &= o->encrypted;
  o->all_pass &= o->signed_;
  if (exposed && !allow_unauthenticated) {
    buf_free(&o->entity);
    buf_free(&o->message);
    return fail(SMIME_ERR_UNAUTHENTICATED, err, err_len,
                "AES-CBC content without a valid signature inside is not "
                "shown (EFAIL; RFC 8551 §3.3)");
  }
  return SMIME_OK;
}

int smime_open(struct smime_opened *out, const struct smime_open_opts *opts,
               const uint8_t *msg, size_t msg_len, char *err, size_t err_len) {
  struct buf cur = {0}, next = {0}, outer = {0}, ignored = {0};
  int rc = SMIME_OK;
  memset(out, 0, sizeof *out);
  if (buf_append(&cur, msg, msg_len) != 0) {
    return oom(err, err_len);
  }
  while (rc == SMIME_OK) {
    if (out->num_layers == SMIME_MAX_LAYERS) {
      /* a further layer is left wrapped; say so only if there is one */
      struct smime_parsed p;
      if (smime_parse(&p, cur.data, cur.len, NULL, 0) == SMIME_OK &&
          p.kind != SMIME_KIND_NONE) {
        rc = fail(SMIME_ERR_LIMIT, err, err_len, "more than %d S/MIME layers",
                  SMIME_MAX_LAYERS);
      }
      smime_parsed_cleanup(&p);
      break;
    }
    struct smime_layer *l = &out->layers[out->num_layers];
    buf_reset(&next);
    rc = open_layer(l, &next, opts, cur.data, cur.len, err, err_len);
    if (rc == SMIME_OK || l->verified.num_signers > 0) {
      out->num_layers++;
    }
    if (rc == SMIME_OK) {
      buf_move(&cur, &next);
    }
  }
  if (rc == SMIME_ERR_NOT_SMIME && out->num_layers > 0) {
    rc = SMIME_OK;
    if (err != NULL) {
      err[0] = '\0';
    }
  } else if (rc == SMIME_ERR_NOT_SMIME) {
    rc = fail(rc, err, err_len, "not an S/MIME message");
  }
  if (rc == SMIME_OK) {
    buf_move(&out->entity, &cur);
    rc = smime_split(&outer, &ignored, msg, msg_len, err, err_len);
  }
  if (rc == SMIME_OK) {
    rc = smime_join(&out->message, outer.data, outer.len, out->entity.data,
                    out->entity.len);
    rc = rc == SMIME_ERR_INTERNAL ? oom(err, err_len)
         : rc != SMIME_OK
             ? fail(rc, err, err_len, "the innermost entity's header is bad")
             : rc;
  }
  if (rc == SMIME_OK) {
    rc = open_summary(out, opts->allow_unauthenticated, err, err_len);
  }
  buf_free(&cur);
  buf_free(&next);
  buf_free(&outer);
  buf_free(&ignored);
  return rc;
}
