/* proto/smtp_addr.c — RFC 5321 §4.1.2 paths and RFC 3461 xtext; see
 * smtp_addr.h. */
#include "proto/smtp_addr.h"

#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

/* A bounded reader over the path being parsed; every read checks `len`. */
struct smtp_addr_rd {
  const uint8_t *p;
  size_t len;
  size_t pos;
  int has_utf8;
};

/* Next octet, or -1 at the end of the input. */
static int smtp_addr_peek(const struct smtp_addr_rd *r) {
  return r->pos < r->len ? r->p[r->pos] : -1;
}

static int smtp_addr_eat(struct smtp_addr_rd *r, int c) {
  if (smtp_addr_peek(r) != c) {
    return 0;
  }
  r->pos++;
  return 1;
}

static int smtp_addr_is_alnum(int c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9');
}

/* RFC 5322 §3.2.3 atext (ASCII part). */
static int smtp_addr_is_atext(int c) {
  /* c > 0: strchr would match the terminating NUL */
  return c > 0 && (smtp_addr_is_alnum(c) || strchr("!#$%&'*+-/=?^_`{|}~", c));
}

size_t smtp_addr_utf8_len(const uint8_t *in, size_t in_len) {
  uint8_t c = in[0];
  size_t n;
  uint8_t lo = 0x80, hi = 0xBF; /* bounds for the second octet */
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    lo = c == 0xE0 ? 0xA0 : 0x80; /* no overlongs */
    hi = c == 0xED ? 0x9F : 0xBF; /* no surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    lo = c == 0xF0 ? 0x90 : 0x80;
    hi = c == 0xF4 ? 0x8F : 0xBF; /* nothing above U+10FFFF */
  } else {
    return 0;
  }
  if (in_len < n || in[1] < lo || in[1] > hi) {
    return 0;
  }
  for (size_t i = 2; i < n; i++) {
    if ((in[i] & 0xC0) != 0x80) {
      return 0;
    }
  }
  return n;
}

/* Consumes one well-formed UTF-8 sequence (RFC 6531 UTF8-non-ascii). */
static int smtp_addr_eat_utf8(struct smtp_addr_rd *r) {
  if (smtp_addr_peek(r) < 0x80) {
    return 0;
  }
  size_t n = smtp_addr_utf8_len(r->p + r->pos, r->len - r->pos);
  if (n == 0) {
    return 0;
  }
  r->pos += n;
  r->has_utf8 = 1;
  return 1;
}

/* Atom = 1*atext (RFC 5321 §4.1.2; RFC 6531 §3.3 adds UTF-8). */
static int smtp_addr_atom(struct smtp_addr_rd *r) {
  size_t start = r->pos;
  for (;;) {
    if (smtp_addr_is_atext(smtp_addr_peek(r))) {
      r->pos++;
    } else if (!smtp_addr_eat_utf8(r)) {
      break;
    }
  }
  return r->pos > start;
}

/* Dot-string = Atom *("." Atom) */
static int smtp_addr_dot_string(struct smtp_addr_rd *r) {
  if (!smtp_addr_atom(r)) {
    return 0;
  }
  while (smtp_addr_eat(r, '.')) {
    if (!smtp_addr_atom(r)) {
      return 0;
    }
  }
  return 1;
}

/* Quoted-string = DQUOTE *QcontentSMTP DQUOTE; qtextSMTP is %d32-33 /
 * %d35-91 / %d93-126, quoted-pairSMTP is "\" %d32-126. */
static int smtp_addr_quoted(struct smtp_addr_rd *r) {
  if (!smtp_addr_eat(r, '"')) {
    return 0;
  }
  for (;;) {
    int c = smtp_addr_peek(r);
    if (c == '"') {
      r->pos++;
      return 1;
    }
    if (c == '\\') {
      r->pos++;
      c = smtp_addr_peek(r);
      if (c < 32 || c > 126) {
        return 0;
      }
      r->pos++;
    } else if (c >= 32 && c <= 126) {
      r->pos++;
    } else if (!smtp_addr_eat_utf8(r)) {
      return 0; /* end of input, control octet or bad UTF-8 */
    }
  }
}

/* sub-domain = Let-dig [Ldh-str]: no leading or trailing hyphen, at most
 * 63 octets (RFC 1035 §2.3.4). U-labels (RFC 6531) count as letters. */
static int smtp_addr_label(struct smtp_addr_rd *r) {
  size_t start = r->pos;
  int last = -1;
  for (;;) {
    int c = smtp_addr_peek(r);
    if (smtp_addr_is_alnum(c) || (c == '-' && r->pos > start)) {
      r->pos++;
      last = c;
    } else if (smtp_addr_eat_utf8(r)) {
      last = 'a';
    } else {
      break;
    }
  }
  size_t n = r->pos - start;
  return n > 0 && n <= SMTP_ADDR_MAX_LABEL && last != '-';
}

/* Domain = sub-domain *("." sub-domain) */
static int smtp_addr_domain(struct smtp_addr_rd *r) {
  if (!smtp_addr_label(r)) {
    return 0;
  }
  while (smtp_addr_eat(r, '.')) {
    if (!smtp_addr_label(r)) {
      return 0;
    }
  }
  return 1;
}

/* address-literal = "[" ( IPv4-address-literal / IPv6-address-literal )
 * "]" (RFC 5321 §4.1.3). General-address-literal tags are not accepted:
 * none is registered that a relay could use. */
static int smtp_addr_literal(struct smtp_addr_rd *r) {
  if (!smtp_addr_eat(r, '[')) {
    return 0;
  }
  const uint8_t *start = r->p + r->pos;
  const uint8_t *end = memchr(start, ']', r->len - r->pos);
  if (end == NULL) {
    return 0;
  }
  size_t n = (size_t)(end - start);
  char text[64];
  uint8_t addr[16];
  int family = AF_INET;
  if (n >= 5 && strncasecmp((const char *)start, "IPv6:", 5) == 0) {
    family = AF_INET6;
    start += 5;
    n -= 5;
  }
  if (n == 0 || n >= sizeof(text)) {
    return 0;
  }
  memcpy(text, start, n);
  text[n] = '\0';
  if (inet_pton(family, text, addr) != 1) {
    return 0;
  }
  r->pos = (size_t)(end - r->p) + 1;
  return 1;
}

/* A-d-l = At-domain *( "," At-domain ), At-domain = "@" Domain. The route
 * is read and dropped (RFC 5321 Appendix C). */
static int smtp_addr_adl(struct smtp_addr_rd *r) {
  do {
    if (!smtp_addr_eat(r, '@') || !smtp_addr_domain(r)) {
      return 0;
    }
  } while (smtp_addr_eat(r, ','));
  return smtp_addr_eat(r, ':');
}

/* Shell metacharacters in a local part: harmless to SMTP, but a classic
 * way into a careless delivery agent's command line. */
static int smtp_addr_has_shell_meta(const uint8_t *p, size_t n) {
  return memchr(p, '`', n) || memchr(p, '$', n) || memchr(p, '|', n);
}

/* Mailbox = Local-part "@" ( Domain / address-literal ), or the bare
 * "Postmaster" of RFC 5321 §4.1.1.3. Leaves r after the mailbox. */
static enum smtp_addr_status smtp_addr_mailbox(struct smtp_addr_path *out,
                                               struct smtp_addr_rd *r) {
  size_t start = r->pos;
  int ok =
      smtp_addr_peek(r) == '"' ? smtp_addr_quoted(r) : smtp_addr_dot_string(r);
  if (!ok) {
    return SMTP_ADDR_SYNTAX;
  }
  out->local_len = r->pos - start;
  out->mailbox = r->p + start;
  if (smtp_addr_peek(r) == '>' && !out->source_route && out->local_len == 10 &&
      strncasecmp((const char *)out->mailbox, "postmaster", 10) == 0) {
    out->postmaster = 1;
    out->mailbox_len = out->local_len;
    return SMTP_ADDR_OK;
  }
  if (!smtp_addr_eat(r, '@')) {
    return SMTP_ADDR_SYNTAX;
  }
  size_t domain_start = r->pos;
  ok = smtp_addr_peek(r) == '[' ? smtp_addr_literal(r) : smtp_addr_domain(r);
  if (!ok) {
    return SMTP_ADDR_SYNTAX;
  }
  out->mailbox_len = r->pos - start;
  if (out->local_len > SMTP_ADDR_MAX_LOCAL ||
      r->pos - domain_start > SMTP_ADDR_MAX_DOMAIN) {
    return SMTP_ADDR_TOO_LONG;
  }
  return SMTP_ADDR_OK;
}

enum smtp_addr_status smtp_addr_parse_path(struct smtp_addr_path *out,
                                           size_t *out_consumed,
                                           const uint8_t *in, size_t in_len) {
  struct smtp_addr_rd r = {.p = in, .len = in_len};
  memset(out, 0, sizeof(*out));
  *out_consumed = 0;
  if (!smtp_addr_eat(&r, '<')) {
    return SMTP_ADDR_SYNTAX;
  }
  if (smtp_addr_eat(&r, '>')) {
    out->null_path = 1;
    out->mailbox = in + 1;
    *out_consumed = r.pos;
    return SMTP_ADDR_OK;
  }
  if (smtp_addr_peek(&r) == '@') {
    if (!smtp_addr_adl(&r)) {
      return SMTP_ADDR_SYNTAX;
    }
    out->source_route = 1;
  }
  enum smtp_addr_status st = smtp_addr_mailbox(out, &r);
  if (st == SMTP_ADDR_OK && !smtp_addr_eat(&r, '>')) {
    st = SMTP_ADDR_SYNTAX;
  }
  if (st == SMTP_ADDR_OK && r.pos > SMTP_ADDR_MAX_PATH) {
    st = SMTP_ADDR_TOO_LONG;
  }
  if (st != SMTP_ADDR_OK) {
    return st;
  }
  out->has_utf8 = r.has_utf8;
  out->shell_meta = smtp_addr_has_shell_meta(out->mailbox, out->local_len);
  *out_consumed = r.pos;
  return SMTP_ADDR_OK;
}

static int smtp_addr_hex(uint8_t c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1; /* RFC 3461 §4: hexchar digits are upper case only */
}

long smtp_addr_xtext_decode(char *out, size_t out_cap, const uint8_t *in,
                            size_t in_len) {
  size_t n = 0;
  if (out_cap < in_len + 1) {
    return -1;
  }
  for (size_t i = 0; i < in_len; i++) {
    uint8_t c = in[i];
    if (c == '+') {
      if (in_len - i < 3 || smtp_addr_hex(in[i + 1]) < 0 ||
          smtp_addr_hex(in[i + 2]) < 0) {
        return -1;
      }
      c = (uint8_t)(smtp_addr_hex(in[i + 1]) * 16 + smtp_addr_hex(in[i + 2]));
      i += 2;
      if (c < 0x20 || c >= 0x7f) {
        return -1; /* RFC 3461: decodes to printable ASCII; controls would
                      reach logs and DSNs */
      }
    } else if (c < '!' || c > '~' || c == '=') {
      return -1;
    }
    out[n++] = (char)c;
  }
  out[n] = '\0';
  return (long)n;
}
