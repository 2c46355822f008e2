/* policy/spf.c — check_host() of RFC 7208 as a sans-I/O state machine; see
 * spf.h.
 *
 * A query holds an explicit stack of frames, one per record being
 * evaluated: the top one for <domain>, one more per include (§5.2); a
 * redirect (§6.1) replaces the frame it ends. Each include counts as a
 * DNS-querying term, so the stack never holds more than
 * SPF_MAX_DNS_TERMS + 1 frames, and loops end with the term limit.
 *
 * A record is checked whole (§4.6: a syntax error anywhere is a
 * permerror) when it is fetched, then evaluated term by term from a
 * cursor: the terms are parsed again, not stored. Every record text is
 * read through a struct span (core/span.h); nothing reads past it. */
#include "policy/spf.h"

#include <arpa/inet.h>
#include <assert.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/span.h"

#define SPF_MAX_DEPTH                                                          \
  (SPF_MAX_DNS_TERMS + 1)   /* top frame + one per include                     \
                             */
#define SPF_NAME_MAX 253    /* §4.3, §7.3: longer expansions are cut */
#define SPF_EXPAND_MAX 2048 /* tail of an expansion kept for a name */
#define SPF_QNAME_MAX (2 * DNS_NAME_TEXT_MAX) /* '\' doubled */
#define SPF_DETAIL_MAX 256
#define SPF_TERM_SHOWN 80 /* octets of a term quoted in a detail */
#define SPF_VALUE_MAX 128 /* built macro values: i, c, t */

/* ---- the query ---- */

enum spf_kind {
  SPF_K_ALL,
  SPF_K_INCLUDE,
  SPF_K_A,
  SPF_K_MX,
  SPF_K_PTR,
  SPF_K_IP4,
  SPF_K_IP6,
  SPF_K_EXISTS,
  SPF_K_REDIRECT,
  SPF_K_EXP,
  SPF_K_UNKNOWN, /* an unknown modifier: ignored (§6) */
};

/* One parsed term; spans point into the frame's record. */
struct spf_term {
  enum spf_kind kind;
  enum spf_result qual; /* the result if the mechanism matches (§4.6.2) */
  struct span text;     /* the whole term, for details */
  struct span spec;     /* domain-spec; len 0: <domain> */
  unsigned cidr4, cidr6;
  uint8_t net[16]; /* ip4 / ip6 network */
};

struct spf_frame {
  char domain[DNS_NAME_TEXT_MAX]; /* <domain> of this check_host() */
  char rec[SPF_MAX_RECORD];
  size_t rec_len;
  size_t pos; /* next term */
  struct spf_term redirect, exp;
  int has_redirect, has_exp;
  int via_redirect;    /* "none" is then a permerror (§6.1) */
  struct spf_term cur; /* the term under evaluation */
};

enum spf_state {
  SPF_ST_RECORD,      /* fetch the top frame's record */
  SPF_ST_RECORD_WAIT, /* its TXT answer */
  SPF_ST_TERMS,       /* evaluate the top frame's next term */
  SPF_ST_TARGET,      /* expand the current term's target, then look up */
  SPF_ST_ADDR_WAIT,   /* a: A/AAAA; exists: A */
  SPF_ST_MX_WAIT,
  SPF_ST_MX_ADDR,
  SPF_ST_MX_ADDR_WAIT,
  SPF_ST_PTR_WAIT,
  SPF_ST_PTR_ADDR,
  SPF_ST_PTR_ADDR_WAIT,
  SPF_ST_P,      /* %{p}: the client's PTR names ... */
  SPF_ST_P_WAIT, /* ... */
  SPF_ST_P_ADDR, /* ... each validated (§5.5) */
  SPF_ST_P_ADDR_WAIT,
  SPF_ST_EXP, /* exp=: fetch the explanation (§6.2) */
  SPF_ST_EXP_WAIT,
  SPF_ST_EXP_TEXT, /* expand it */
  SPF_ST_DONE,
};

enum spf_p_state { SPF_P_NONE, SPF_P_DONE };

struct spf_query {
  /* the request */
  int v6;           /* the client is IPv6 (not v4-mapped) */
  uint8_t ip[16];   /* 4 octets if !v6 */
  char *sender;     /* local@domain, "postmaster" for an empty local part */
  char *local;      /* %{l} */
  char *sender_dom; /* %{o}, as given (no trailing dot) */
  char *helo;       /* %{h} */
  char *receiver;   /* %{r} */
  int64_t now;
  char domain_lc[DNS_NAME_TEXT_MAX]; /* spf_domain */
  /* progress */
  enum spf_state st;
  int waiting; /* a lookup is out */
  enum spf_result result;
  unsigned num_terms, num_void, num_lookups;
  char detail[SPF_DETAIL_MAX];
  char explanation[SPF_MAX_EXPLANATION];
  int has_explanation;
  char qname[SPF_QNAME_MAX];
  uint16_t qtype;
  struct spf_frame frames[SPF_MAX_DEPTH];
  size_t depth;
  /* the current a/mx/ptr/exists term */
  char target[DNS_NAME_TEXT_MAX];
  char names[SPF_MAX_NAMES][DNS_NAME_TEXT_MAX]; /* MX or PTR names */
  size_t num_names, name_idx;
  /* %{p} (§7.3), found once per query */
  enum spf_p_state p_state;
  enum spf_state p_return;
  char p_names[SPF_MAX_NAMES][DNS_NAME_TEXT_MAX];
  int p_valid[SPF_MAX_NAMES];
  size_t p_num, p_idx;
  /* exp= text while it is expanded */
  char exp_text[SPF_MAX_RECORD];
  size_t exp_len;
};

/* ---- small helpers ---- */

const char *spf_result_name(enum spf_result r) {
  switch (r) {
  case SPF_NONE:
    return "none";
  case SPF_NEUTRAL:
    return "neutral";
  case SPF_PASS:
    return "pass";
  case SPF_FAIL:
    return "fail";
  case SPF_SOFTFAIL:
    return "softfail";
  case SPF_TEMPERROR:
    return "temperror";
  case SPF_PERMERROR:
    return "permerror";
  }
  return "?";
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

static char *dup_str(const char *s, size_t n) {
  char *p = malloc(n + 1);
  if (p != NULL) {
    memcpy(p, s, n);
    p[n] = '\0';
  }
  return p;
}

static struct span span_of(const char *s) {
  return (struct span){(const uint8_t *)s, strlen(s)};
}

static int ci_eq(struct span a, const char *lit) {
  size_t n = strlen(lit);
  if (a.len != n) {
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    if (span_lower(a.p[i]) != span_lower((uint8_t)lit[i])) {
      return 0;
    }
  }
  return 1;
}

/* shown copies a term for a detail line: at most SPF_TERM_SHOWN octets,
 * anything but printable ASCII as '?'. */
static void shown(char *out, size_t out_len, struct span s) {
  size_t n = s.len < SPF_TERM_SHOWN ? s.len : SPF_TERM_SHOWN;
  n = n < out_len - 1 ? n : out_len - 1;
  for (size_t i = 0; i < n; i++) {
    out[i] = s.p[i] >= 0x20 && s.p[i] < 0x7f ? (char)s.p[i] : '?';
  }
  out[n] = '\0';
}

/* ---- names (§4.3, §7.1) ---- */

/* toplabel = ( *alphanum ALPHA *alphanum ) /
 *            ( 1*alphanum "-" *( alphanum / "-" ) alphanum ) */
static int toplabel_ok(struct span t) {
  int alpha = 0, dash = 0;
  if (t.len == 0 || !span_is_alnum(t.p[0]) || !span_is_alnum(t.p[t.len - 1])) {
    return 0;
  }
  for (size_t i = 0; i < t.len; i++) {
    if (!span_is_alnum(t.p[i]) && t.p[i] != '-') {
      return 0;
    }
    alpha |= span_is_alpha(t.p[i]);
    dash |= t.p[i] == '-';
  }
  return alpha || dash;
}

/* labels_ok: 1 if every label of name (no trailing dot) has 1 to 63
 * octets and the whole at most SPF_NAME_MAX; *out_num counts them. */
static int labels_ok(struct span name, size_t *out_num) {
  size_t start = 0;
  *out_num = 0;
  if (name.len == 0 || name.len > SPF_NAME_MAX) {
    return 0;
  }
  for (size_t i = 0; i <= name.len; i++) {
    if (i == name.len || name.p[i] == '.') {
      if (i == start || i - start > DNS_MAX_LABEL) {
        return 0;
      }
      (*out_num)++;
      start = i + 1;
    }
  }
  return 1;
}

/* name_finish makes an expanded target a name to look up (§4.3, §7.3):
 * one trailing dot dropped, then labels cut from the left while longer
 * than 253 octets. Returns 0, or -1 if it is no valid name (then the
 * target does not exist: §4.3's rule, applied to targets). */
static int name_finish(char *b, size_t len) {
  size_t start = 0, num;
  if (len > 0 && b[len - 1] == '.') {
    len--;
  }
  while (len - start > SPF_NAME_MAX) {
    const char *dot = memchr(b + start, '.', len - start);
    if (dot == NULL) {
      return -1;
    }
    start = (size_t)(dot - b) + 1;
  }
  memmove(b, b + start, len - start);
  b[len - start] = '\0';
  return labels_ok(span_of(b), &num) ? 0 : -1;
}

/* name_within: 1 if name is dom or a subdomain of it (case-insensitive,
 * trailing dots ignored). */
static int name_within(const char *name, const char *dom) {
  size_t n = strlen(name), d = strlen(dom);
  n -= n > 0 && name[n - 1] == '.';
  d -= d > 0 && dom[d - 1] == '.';
  if (d == 0 || n < d) {
    return 0;
  }
  for (size_t i = 0; i < d; i++) {
    if (span_lower((uint8_t)name[n - d + i]) != span_lower((uint8_t)dom[i])) {
      return 0;
    }
  }
  return n == d || name[n - d - 1] == '.';
}

static int name_same(const char *a, const char *b) {
  size_t na = strlen(a), nb = strlen(b);
  na -= na > 0 && a[na - 1] == '.';
  nb -= nb > 0 && b[nb - 1] == '.';
  return na == nb && name_within(a, b);
}

/* copy_name copies a name from an answer without its trailing dot. */
static void copy_name(char out[DNS_NAME_TEXT_MAX], const char *name) {
  size_t n = strlen(name);
  n -= n > 1 && name[n - 1] == '.';
  n = n < DNS_NAME_TEXT_MAX - 1 ? n : DNS_NAME_TEXT_MAX - 1;
  memcpy(out, name, n);
  out[n] = '\0';
}

/* ---- macros (§7) ---- */

enum spf_tok_kind { SPF_TOK_LIT, SPF_TOK_TEXT, SPF_TOK_MACRO };

struct spf_tok {
  enum spf_tok_kind kind;
  uint8_t c;        /* SPF_TOK_LIT */
  const char *text; /* SPF_TOK_TEXT: "%", " " or "%20" */
  uint8_t letter;   /* SPF_TOK_MACRO, lower case */
  int upper;        /* URL-escape the value (§7.3) */
  unsigned keep;    /* right-hand parts kept; 0: all */
  int reverse;
  struct span delims; /* empty: "." */
};

static int is_delim_char(uint8_t c) {
  return c == '.' || c == '-' || c == '+' || c == ',' || c == '/' || c == '_' ||
         c == '=';
}

/* macro_braced reads the inside of "%{...}" (after the brace):
 * macro-letter transformers *delimiter "}". */
static int macro_braced(struct span *s, struct spf_tok *t, int exp,
                        const char **why) {
  static const char letters[] = "slodipvh", exp_letters[] = "crt";
  if (s->len == 0) {
    *why = "unterminated macro";
    return -1;
  }
  t->letter = span_lower(s->p[0]);
  t->upper = s->p[0] != t->letter;
  if (t->letter == '\0' || (strchr(letters, t->letter) == NULL &&
                            (!exp || strchr(exp_letters, t->letter) == NULL))) {
    *why = exp || strchr(exp_letters, t->letter) == NULL
               ? "unknown macro letter"
               : "macro letter c, r or t outside exp text";
    return -1;
  }
  s->p++, s->len--;
  struct span digits = span_take(s, span_is_digit);
  t->keep = 0;
  for (size_t i = 0; i < digits.len; i++) {
    t->keep = t->keep < 1000 ? t->keep * 10 + (digits.p[i] - '0') : 1000;
  }
  if (digits.len > 0 && t->keep == 0) {
    *why = "macro keeps 0 parts"; /* §7.3: the DIGIT must be nonzero */
    return -1;
  }
  t->reverse = span_literal(s, "r") || span_literal(s, "R");
  t->delims = span_take(s, is_delim_char);
  if (!span_literal(s, "}")) {
    *why = "bad macro";
    return -1;
  }
  return 1;
}

/* macro_tok reads one token of a macro-string (§7.1); exp: explanation
 * text (spaces and the letters c, r, t allowed). Returns 1, 0 at the end,
 * -1 with *why. */
static int macro_tok(struct span *s, struct spf_tok *t, int exp,
                     const char **why) {
  if (s->len == 0) {
    return 0;
  }
  uint8_t c = s->p[0];
  s->p++, s->len--;
  if (c != '%') {
    /* macro-literal = %x21-24 / %x26-7E; explain-string adds SP */
    if (c < (exp ? 0x20 : 0x21) || c > 0x7e) {
      *why = "character not allowed";
      return -1;
    }
    t->kind = SPF_TOK_LIT;
    t->c = c;
    return 1;
  }
  t->kind = SPF_TOK_TEXT;
  if (span_literal(s, "%")) {
    t->text = "%";
  } else if (span_literal(s, "_")) {
    t->text = " ";
  } else if (span_literal(s, "-")) {
    t->text = "%20";
  } else if (span_literal(s, "{")) {
    t->kind = SPF_TOK_MACRO;
    return macro_braced(s, t, exp, why);
  } else {
    *why = "'%' not followed by '{', '%', '_' or '-'";
    return -1;
  }
  return 1;
}

/* macro_check checks a macro-string; *out_tail is the offset after its
 * last macro-expand (0 if none), *out_has_p whether it uses %{p}. */
static int macro_check(struct span s, int exp, size_t *out_tail, int *out_has_p,
                       const char **why) {
  struct span cur = s;
  struct spf_tok t;
  int rc;
  *out_tail = 0;
  *out_has_p = 0;
  while ((rc = macro_tok(&cur, &t, exp, why)) == 1) {
    if (t.kind != SPF_TOK_LIT) {
      *out_tail = s.len - cur.len;
    }
    *out_has_p |= t.kind == SPF_TOK_MACRO && t.letter == 'p';
  }
  return rc;
}

/* domain_spec_check: domain-spec = macro-string domain-end, domain-end =
 * ( "." toplabel [ "." ] ) / macro-expand (§7.1). */
static int domain_spec_check(struct span s, const char **why) {
  size_t tail;
  int has_p;
  if (s.len == 0) {
    *why = "empty domain-spec";
    return -1;
  }
  if (macro_check(s, 0, &tail, &has_p, why) != 0) {
    return -1;
  }
  if (tail == s.len) {
    return 0; /* ends with a macro-expand */
  }
  struct span lit = {s.p + tail, s.len - tail};
  if (lit.p[lit.len - 1] == '.') {
    lit.len--;
  }
  size_t dot = lit.len;
  while (dot > 0 && lit.p[dot - 1] != '.') {
    dot--;
  }
  if (dot == 0 || !toplabel_ok((struct span){lit.p + dot, lit.len - dot})) {
    *why = "domain-spec does not end in a valid top label";
    return -1;
  }
  return 0;
}

/* ---- macro expansion ---- */

/* An output buffer. right: keep the last octets when full (a name is cut
 * from the left, §7.3); else keep the first (explanation text). */
struct spf_out {
  char *b;
  size_t cap; /* without the NUL */
  size_t len;
  int right;
};

static void out_putc(struct spf_out *o, uint8_t c) {
  if (o->len == o->cap) {
    if (!o->right) {
      return;
    }
    size_t half = o->cap / 2; /* dropping half keeps this amortised O(1) */
    memmove(o->b, o->b + half, o->cap - half);
    o->len -= half;
  }
  o->b[o->len++] = (char)c;
}

static void out_puts(struct spf_out *o, const char *s) {
  for (; *s != '\0'; s++) {
    out_putc(o, (uint8_t)*s);
  }
}

static int is_unreserved(uint8_t c) {
  return span_is_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

/* out_value_char writes one octet of a macro value, URL-escaped for an
 * upper-case macro letter (§7.3). */
static void out_value_char(struct spf_out *o, uint8_t c, int upper) {
  static const char hex[] = "0123456789ABCDEF";
  if (upper && !is_unreserved(c)) {
    out_putc(o, '%');
    out_putc(o, (uint8_t)hex[c >> 4]);
    out_putc(o, (uint8_t)hex[c & 0xf]);
  } else {
    out_putc(o, c);
  }
}

static int tok_delim(const struct spf_tok *t, uint8_t c) {
  return t->delims.len == 0 ? c == '.'
                            : memchr(t->delims.p, c, t->delims.len) != NULL;
}

/* out_parts writes v split on the token's delimiters, reversed if asked,
 * its right-hand parts kept, joined by "." (§7.3), in O(len). */
static void out_parts(struct spf_out *o, struct span v,
                      const struct spf_tok *t) {
  size_t n = 1;
  for (size_t i = 0; i < v.len; i++) {
    n += (size_t)tok_delim(t, v.p[i]);
  }
  size_t k = t->keep == 0 || t->keep > n ? n : t->keep;
  if (!t->reverse) {
    size_t i = 0, skip = n - k; /* parts n-k .. n-1 */
    for (; skip > 0; i++) {
      skip -= (size_t)tok_delim(t, v.p[i]);
    }
    for (; i < v.len; i++) {
      out_value_char(o, tok_delim(t, v.p[i]) ? '.' : v.p[i], t->upper);
    }
    return;
  }
  size_t end = v.len, seen = 0; /* parts k-1 .. 0: end of part k-1 */
  for (size_t i = 0; i < v.len; i++) {
    if (tok_delim(t, v.p[i]) && ++seen == k) {
      end = i;
      break;
    }
  }
  for (;;) {
    size_t b = end;
    while (b > 0 && !tok_delim(t, v.p[b - 1])) {
      b--;
    }
    for (size_t i = b; i < end; i++) {
      out_value_char(o, v.p[i], t->upper);
    }
    if (b == 0) {
      break;
    }
    out_putc(o, '.');
    end = b - 1;
  }
}

static void ip_dotted(const struct spf_query *q, char *buf, size_t cap) {
  if (!q->v6) {
    snprintf(buf, cap, "%u.%u.%u.%u", q->ip[0], q->ip[1], q->ip[2], q->ip[3]);
    return;
  }
  static const char hex[] = "0123456789abcdef";
  size_t n = 0;
  for (size_t i = 0; i < 32 && n + 2 < cap; i++) {
    uint8_t nib = i % 2 == 0 ? q->ip[i / 2] >> 4 : q->ip[i / 2] & 0xf;
    buf[n++] = hex[nib];
    buf[n++] = '.';
  }
  buf[n > 0 ? n - 1 : 0] = '\0';
}

/* p_value: §7.3's choice among the validated names of the client: the
 * domain itself, else a subdomain of it, else any; else "unknown". */
static const char *p_value(const struct spf_query *q, const char *domain) {
  for (int pass = 0; pass < 3; pass++) {
    for (size_t i = 0; i < q->p_num; i++) {
      if (!q->p_valid[i]) {
        continue;
      }
      if (pass == 2 || (pass == 0 && name_same(q->p_names[i], domain)) ||
          (pass == 1 && name_within(q->p_names[i], domain))) {
        return q->p_names[i];
      }
    }
  }
  return "unknown";
}

/* macro_value: the value of a macro letter (§7.2, §7.3). */
static struct span macro_value(const struct spf_query *q, uint8_t letter,
                               char buf[SPF_VALUE_MAX]) {
  const char *domain = q->frames[q->depth - 1].domain;
  switch (letter) {
  case 's':
    return span_of(q->sender);
  case 'l':
    return span_of(q->local);
  case 'o':
    return span_of(q->sender_dom);
  case 'd':
    return span_of(domain);
  case 'i':
    ip_dotted(q, buf, SPF_VALUE_MAX);
    return span_of(buf);
  case 'p':
    return span_of(p_value(q, domain));
  case 'v':
    return span_of(q->v6 ? "ip6" : "in-addr");
  case 'h':
    return span_of(q->helo);
  case 'c':
    inet_ntop(q->v6 ? AF_INET6 : AF_INET, q->ip, buf, SPF_VALUE_MAX);
    return span_of(buf);
  case 'r':
    return span_of(q->receiver);
  case 't':
    snprintf(buf, SPF_VALUE_MAX, "%" PRId64, q->now);
    return span_of(buf);
  }
  return span_of("");
}

/* expand writes the expansion of s (checked already) to o. Returns 0, or
 * -1 on a syntax error. */
static int expand(const struct spf_query *q, struct span s, int exp,
                  struct spf_out *o) {
  struct spf_tok t;
  const char *why;
  int rc;
  char buf[SPF_VALUE_MAX];
  while ((rc = macro_tok(&s, &t, exp, &why)) == 1) {
    if (t.kind == SPF_TOK_LIT) {
      out_putc(o, t.c);
    } else if (t.kind == SPF_TOK_TEXT) {
      out_puts(o, t.text);
    } else {
      out_parts(o, macro_value(q, t.letter, buf), &t);
    }
  }
  return rc;
}

/* expand_name expands a target domain-spec to a name in out; len 0 spec:
 * <domain>. Returns 0, or -1 if the result is no valid name. */
static int expand_name(const struct spf_query *q, struct span spec,
                       char out[DNS_NAME_TEXT_MAX]) {
  char b[SPF_EXPAND_MAX + 1];
  struct spf_out o = {.b = b, .cap = SPF_EXPAND_MAX, .right = 1};
  if (spec.len == 0) {
    spec = span_of(q->frames[q->depth - 1].domain);
    if (spec.len == 0) {
      return -1;
    }
    for (size_t i = 0; i < spec.len; i++) {
      out_putc(&o, spec.p[i]);
    }
  } else if (expand(q, spec, 0, &o) != 0) {
    return -1;
  }
  if (name_finish(b, o.len) != 0) {
    return -1;
  }
  memcpy(out, b, strlen(b) + 1);
  return 0;
}

static int needs_p(struct span spec) {
  size_t tail;
  int has_p = 0;
  const char *why;
  macro_check(spec, 1, &tail, &has_p, &why);
  return has_p;
}

/* ---- record syntax (§4.6, §5, §6, §12) ---- */

static int is_name_char(uint8_t c) {
  return span_is_alnum(c) || c == '-' || c == '_' || c == '.';
}

/* cidr_num reads ip4-cidr-length / ip6-cidr-length digits: "0" or no
 * leading zero, at most max. */
static int cidr_num(struct span d, unsigned max, unsigned *out) {
  unsigned v = 0;
  if (d.len == 0 || d.len > 3 || (d.p[0] == '0' && d.len > 1)) {
    return -1;
  }
  for (size_t i = 0; i < d.len; i++) {
    if (!span_is_digit(d.p[i])) {
      return -1;
    }
    v = v * 10 + (d.p[i] - '0');
  }
  if (v > max) {
    return -1;
  }
  *out = v;
  return 0;
}

/* dual_cidr: dual-cidr-length = [ ip4-cidr-length ] [ "/" ip6-cidr-length ]
 * (§5.6); shape_only: 1 if s has the shape, values not checked. */
static int dual_cidr(struct span s, struct spf_term *t, int shape_only) {
  struct span d4 = {s.p, 0}, d6 = {s.p, 0};
  int has4 = 0, has6 = 0;
  if (span_literal(&s, "//")) {
    d6 = span_take(&s, span_is_digit);
    has6 = 1;
  } else if (span_literal(&s, "/")) {
    d4 = span_take(&s, span_is_digit);
    has4 = 1;
    if (span_literal(&s, "//")) {
      d6 = span_take(&s, span_is_digit);
      has6 = 1;
    }
  }
  if (s.len != 0 || (!has4 && !has6) || (has4 && d4.len == 0) ||
      (has6 && d6.len == 0)) {
    return -1;
  }
  if (shape_only) {
    return 0;
  }
  if ((has4 && cidr_num(d4, 32, &t->cidr4) != 0) ||
      (has6 && cidr_num(d6, 128, &t->cidr6) != 0)) {
    return -1;
  }
  return 0;
}

/* spec_and_cidr splits "domain-spec [dual-cidr-length]" at the first '/'
 * that starts a dual-cidr-length: a domain-spec may hold '/' itself. */
static int spec_and_cidr(struct span s, struct spf_term *t, const char **why) {
  size_t cut = s.len;
  for (size_t i = 0; i < s.len; i++) {
    if (s.p[i] == '/' &&
        dual_cidr((struct span){s.p + i, s.len - i}, t, 1) == 0) {
      cut = i;
      break;
    }
  }
  t->spec = (struct span){s.p, cut};
  if (cut < s.len &&
      dual_cidr((struct span){s.p + cut, s.len - cut}, t, 0) != 0) {
    *why = "bad CIDR length";
    return -1;
  }
  return domain_spec_check(t->spec, why);
}

/* ip4_network: qnum "." qnum "." qnum "." qnum, no leading zeros. */
static int ip4_network(struct span s, uint8_t out[4]) {
  for (int i = 0; i < 4; i++) {
    struct span d = span_take(&s, span_is_digit);
    unsigned v = 0;
    if (d.len == 0 || d.len > 3 || (d.p[0] == '0' && d.len > 1)) {
      return -1;
    }
    for (size_t k = 0; k < d.len; k++) {
      v = v * 10 + (d.p[k] - '0');
    }
    if (v > 255 || (i < 3 && !span_literal(&s, "."))) {
      return -1;
    }
    out[i] = (uint8_t)v;
  }
  return s.len == 0 ? 0 : -1;
}

/* ip_mech parses "ip4:" / "ip6:" arguments (§5.6). */
static int ip_mech(struct span s, struct spf_term *t, const char **why) {
  int v6 = t->kind == SPF_K_IP6;
  *why = v6 ? "bad ip6 network" : "bad ip4 network";
  if (!span_literal(&s, ":")) {
    return -1;
  }
  const uint8_t *slash = memchr(s.p, '/', s.len);
  struct span net = {s.p, slash ? (size_t)(slash - s.p) : s.len};
  struct span cidr = {net.p + net.len, s.len - net.len};
  if (v6) {
    char text[INET6_ADDRSTRLEN + 1];
    if (net.len == 0 || net.len >= sizeof text) {
      return -1;
    }
    memcpy(text, net.p, net.len);
    text[net.len] = '\0';
    if (inet_pton(AF_INET6, text, t->net) != 1) {
      return -1;
    }
  } else if (ip4_network(net, t->net) != 0) {
    return -1;
  }
  if (cidr.len > 0) {
    *why = "bad CIDR length";
    if (!span_literal(&cidr, "/") ||
        cidr_num(cidr, v6 ? 128 : 32, v6 ? &t->cidr6 : &t->cidr4) != 0) {
      return -1;
    }
  }
  return 0;
}

/* mech_args parses what follows a mechanism's name (§5). */
static int mech_args(struct span s, struct spf_term *t, const char **why) {
  switch (t->kind) {
  case SPF_K_ALL:
    *why = "all takes no argument";
    return s.len == 0 ? 0 : -1;
  case SPF_K_INCLUDE:
  case SPF_K_EXISTS:
    if (!span_literal(&s, ":")) {
      *why = "missing ':' domain-spec";
      return -1;
    }
    t->spec = s;
    return domain_spec_check(s, why);
  case SPF_K_PTR:
    if (s.len == 0) {
      return 0;
    }
    t->spec = s;
    *why = "bad ptr argument";
    return span_literal(&t->spec, ":") ? domain_spec_check(t->spec, why) : -1;
  case SPF_K_A:
  case SPF_K_MX:
    if (span_literal(&s, ":")) {
      return spec_and_cidr(s, t, why);
    }
    *why = "bad CIDR length";
    return s.len == 0 || dual_cidr(s, t, 0) == 0 ? 0 : -1;
  case SPF_K_IP4:
  case SPF_K_IP6:
    return ip_mech(s, t, why);
  default:
    *why = "not a mechanism";
    return -1;
  }
}

static enum spf_kind mech_kind(struct span name) {
  static const struct {
    const char *name;
    enum spf_kind kind;
  } mechs[] = {
      {"all", SPF_K_ALL}, {"include", SPF_K_INCLUDE}, {"a", SPF_K_A},
      {"mx", SPF_K_MX},   {"ptr", SPF_K_PTR},         {"ip4", SPF_K_IP4},
      {"ip6", SPF_K_IP6}, {"exists", SPF_K_EXISTS},
  };
  for (size_t i = 0; i < sizeof(mechs) / sizeof(mechs[0]); i++) {
    if (ci_eq(name, mechs[i].name)) {
      return mechs[i].kind;
    }
  }
  return SPF_K_UNKNOWN;
}

/* modifier_args: redirect= and exp= take a domain-spec (§6); an unknown
 * modifier a macro-string (§A: name "=" macro-string). */
static int modifier_args(struct span name, struct span value,
                         struct spf_term *t, const char **why) {
  size_t tail;
  int has_p;
  if (ci_eq(name, "redirect") || ci_eq(name, "exp")) {
    t->kind = ci_eq(name, "exp") ? SPF_K_EXP : SPF_K_REDIRECT;
    t->spec = value;
    return domain_spec_check(value, why);
  }
  t->kind = SPF_K_UNKNOWN;
  return macro_check(value, 1, &tail, &has_p, why) == 0 ? 0 : -1;
}

/* term_parse parses one term: directive = [ qualifier ] mechanism, or
 * modifier = name "=" value (§4.6.1, §12). */
static int term_parse(struct span s, struct spf_term *t, const char **why) {
  static const char quals[] = "+-~?";
  static const enum spf_result qual_results[] = {SPF_PASS, SPF_FAIL,
                                                 SPF_SOFTFAIL, SPF_NEUTRAL};
  memset(t, 0, sizeof(*t));
  t->text = s;
  t->cidr4 = 32;
  t->cidr6 = 128;
  t->qual = SPF_PASS;
  const char *q = s.len > 0 && s.p[0] != '\0' ? strchr(quals, s.p[0]) : NULL;
  if (q != NULL) {
    t->qual = qual_results[q - quals];
    s.p++, s.len--;
  }
  if (s.len == 0 || !span_is_alpha(s.p[0])) {
    *why = "not a mechanism or modifier";
    return -1;
  }
  struct span name = span_take(&s, is_name_char);
  if (span_literal(&s, "=")) {
    if (q != NULL) {
      *why = "qualifier on a modifier";
      return -1;
    }
    return modifier_args(name, s, t, why);
  }
  t->kind = mech_kind(name);
  if (t->kind == SPF_K_UNKNOWN) {
    *why = "unknown mechanism";
    return -1;
  }
  return mech_args(s, t, why);
}

/* next_term cuts the next term from *s (terms are separated by 1*SP,
 * §4.6.1); 0 at the end. */
static int next_term(struct span *s, struct span *out) {
  while (s->len > 0 && s->p[0] == ' ') {
    s->p++, s->len--;
  }
  if (s->len == 0) {
    return 0;
  }
  const uint8_t *sp = memchr(s->p, ' ', s->len);
  out->p = s->p;
  out->len = sp ? (size_t)(sp - s->p) : s->len;
  s->p += out->len;
  s->len -= out->len;
  return 1;
}

/* is_spf_record: record selection (§4.5): "v=spf1" (any case) followed
 * by a space or the end. */
static int is_spf_record(const uint8_t *txt, size_t len) {
  return len >= 6 && ci_eq((struct span){txt, 6}, "v=spf1") &&
         (len == 6 || txt[6] == ' ');
}

/* record_check checks a whole record (§4.6: errors anywhere count);
 * redirect= and exp= may appear once each (§6). With f, they are noted
 * there. */
static int record_check(struct span rec, struct spf_frame *f, char *err,
                        size_t err_len) {
  struct span s = rec, text;
  struct spf_term t;
  const char *why = NULL;
  int num_redirect = 0, num_exp = 0;
  char term[SPF_TERM_SHOWN + 1];
  if (!is_spf_record(rec.p, rec.len)) {
    return fail(err, err_len, "not an SPF record (no \"v=spf1\")");
  }
  s.p += 6, s.len -= 6;
  while (next_term(&s, &text)) {
    shown(term, sizeof term, text);
    if (term_parse(text, &t, &why) != 0) {
      return fail(err, err_len, "syntax error at \"%s\": %s", term, why);
    }
    num_redirect += t.kind == SPF_K_REDIRECT;
    num_exp += t.kind == SPF_K_EXP;
    if (num_redirect > 1 || num_exp > 1) {
      return fail(err, err_len, "%s= given twice",
                  num_exp > 1 ? "exp" : "redirect");
    }
    if (f != NULL && t.kind == SPF_K_REDIRECT) {
      f->redirect = t;
      f->has_redirect = 1;
    } else if (f != NULL && t.kind == SPF_K_EXP) {
      f->exp = t;
      f->has_exp = 1;
    }
  }
  return 0;
}

int spf_record_check(const char *txt, size_t len, char *err, size_t err_len) {
  return record_check((struct span){(const uint8_t *)txt, len}, NULL, err,
                      err_len);
}

/* ---- evaluation: results ---- */

static void __attribute__((format(printf, 3, 4)))
finish(struct spf_query *q, enum spf_result r, const char *fmt, ...) {
  va_list ap;
  q->result = r;
  q->st = SPF_ST_DONE;
  va_start(ap, fmt);
  vsnprintf(q->detail, sizeof q->detail, fmt, ap);
  va_end(ap);
}

static struct spf_frame *top(struct spf_query *q) {
  return &q->frames[q->depth - 1];
}

static void frame_done(struct spf_query *q, enum spf_result r);

/* term_matched: the top frame's current mechanism matched (§4.6.2). */
static void term_matched(struct spf_query *q) {
  struct spf_frame *f = top(q);
  char term[SPF_TERM_SHOWN + 1];
  shown(term, sizeof term, f->cur.text);
  snprintf(q->detail, sizeof q->detail, "mechanism %s matched", term);
  frame_done(q, f->cur.qual);
}

/* frame_done: the top frame's check_host() gave r (not an error). An
 * include gets the §5.2 table; the top frame ends the query, after exp=
 * on fail (§6.2). */
static void frame_done(struct spf_query *q, enum spf_result r) {
  struct spf_frame *f = top(q);
  if (r == SPF_NONE && f->via_redirect) {
    finish(q, SPF_PERMERROR, "redirect target %.200s has no SPF record",
           f->domain);
    return;
  }
  if (q->depth == 1) {
    q->result = r;
    q->st = r == SPF_FAIL && f->has_exp ? SPF_ST_EXP : SPF_ST_DONE;
    if (r == SPF_NONE) {
      snprintf(q->detail, sizeof q->detail, "no SPF record at %.200s",
               f->domain);
    }
    return;
  }
  q->depth--;
  if (r == SPF_NONE) {
    finish(q, SPF_PERMERROR, "include target %.200s has no SPF record",
           f->domain);
  } else if (r == SPF_PASS) {
    term_matched(q);
  } else {
    q->st = SPF_ST_TERMS; /* fail, softfail, neutral: no match */
  }
}

/* void_lookup counts a term's lookup that found nothing (§4.6.4).
 * Returns -1 once over the limit (the query is then finished). */
static int void_lookup(struct spf_query *q) {
  if (++q->num_void > SPF_MAX_VOID) {
    finish(q, SPF_PERMERROR, "more than %d void lookups", SPF_MAX_VOID);
    return -1;
  }
  return 0;
}

/* ---- evaluation: lookups ---- */

/* ask_name hands out the lookup of (name, type). raw: name is an
 * expansion, whose '\' is escaped: the resolver reads names in
 * presentation form (RFC 1035 §5.1), as answers give them. */
static void ask_name(struct spf_query *q, const char *name, int raw,
                     uint16_t type, enum spf_state wait) {
  size_t n = 0;
  for (; *name != '\0' && n + 2 < sizeof q->qname; name++) {
    if (raw && *name == '\\') {
      q->qname[n++] = '\\';
    }
    q->qname[n++] = *name;
  }
  q->qname[n] = '\0';
  q->qtype = type;
  q->st = wait;
  q->waiting = 1;
  q->num_lookups++;
}

static void ask(struct spf_query *q, const char *name, uint16_t type,
                enum spf_state wait) {
  ask_name(q, name, 1, type, wait);
}

/* ask_answered looks up a name an answer gave (MX, PTR): already in
 * presentation form. */
static void ask_answered(struct spf_query *q, const char *name, uint16_t type,
                         enum spf_state wait) {
  ask_name(q, name, 0, type, wait);
}

static uint16_t addr_type(const struct spf_query *q) {
  return q->v6 ? DNS_TYPE_AAAA : DNS_TYPE_A;
}

/* reverse_name: the client's in-addr.arpa or ip6.arpa name (§5.5). */
static void reverse_name(const struct spf_query *q, char *out, size_t cap) {
  static const char hex[] = "0123456789abcdef";
  if (!q->v6) {
    snprintf(out, cap, "%u.%u.%u.%u.in-addr.arpa", q->ip[3], q->ip[2], q->ip[1],
             q->ip[0]);
    return;
  }
  size_t n = 0;
  for (int i = 15; i >= 0; i--) {
    out[n++] = hex[q->ip[i] & 0xf];
    out[n++] = '.';
    out[n++] = hex[q->ip[i] >> 4];
    out[n++] = '.';
  }
  snprintf(out + n, cap - n, "ip6.arpa");
}

static int prefix_eq(const uint8_t *a, const uint8_t *b, unsigned bits) {
  unsigned bytes = bits / 8, rest = bits % 8;
  if (memcmp(a, b, bytes) != 0) {
    return 0;
  }
  if (rest == 0) {
    return 1;
  }
  uint8_t mask = (uint8_t)(0xff << (8 - rest));
  return (a[bytes] & mask) == (b[bytes] & mask);
}

/* addr_match: rr is an address of the client's family within the CIDR
 * lengths (§5.6). */
static int addr_match(const struct spf_query *q, const struct dns_rr *rr,
                      unsigned cidr4, unsigned cidr6) {
  if (q->v6) {
    return rr->type == DNS_TYPE_AAAA && prefix_eq(rr->rd.aaaa, q->ip, cidr6);
  }
  return rr->type == DNS_TYPE_A && prefix_eq(rr->rd.a, q->ip, cidr4);
}

enum spf_answer_class { SPF_ANS_DATA, SPF_ANS_VOID, SPF_ANS_ERROR };

/* answer_class: data (some RR of the type asked), void (NXDOMAIN or
 * NODATA, §4.6.4) or an error (temperror, §5). */
static enum spf_answer_class answer_class(const struct spf_query *q,
                                          const struct dns_answer *a) {
  if (a->status == DNS_NOT_FOUND || a->status == DNS_NULL_MX) {
    return SPF_ANS_VOID;
  }
  if (a->status != DNS_OK) {
    return SPF_ANS_ERROR;
  }
  for (size_t i = 0; i < a->num_rrs; i++) {
    if (a->rrs[i].type == q->qtype) {
      return SPF_ANS_DATA;
    }
  }
  return SPF_ANS_VOID;
}

static void dns_error(struct spf_query *q, const struct dns_answer *a) {
  char tb[16];
  finish(q, SPF_TEMPERROR, "DNS error for %.200s %s: %s", q->qname,
         dns_type_name(q->qtype, tb), a->why ? a->why : "failure");
}

/* ---- evaluation: the record ---- */

/* record_answer selects the one SPF record of the TXT answer (§4.5). */
static void record_answer(struct spf_query *q, const struct dns_answer *a) {
  struct spf_frame *f = top(q);
  enum spf_answer_class c = answer_class(q, a);
  const struct dns_rr *found = NULL;
  size_t num = 0;
  if (c == SPF_ANS_ERROR) {
    dns_error(q, a);
    return;
  }
  if (c == SPF_ANS_VOID && (q->depth > 1 || f->via_redirect) &&
      void_lookup(q) != 0) {
    return;
  }
  for (size_t i = 0; c == SPF_ANS_DATA && i < a->num_rrs; i++) {
    const struct dns_rr *rr = &a->rrs[i];
    if (rr->type == DNS_TYPE_TXT &&
        is_spf_record(rr->rd.txt.data, rr->rd.txt.data_len)) {
      found = rr;
      num++;
    }
  }
  if (num == 0) {
    frame_done(q, SPF_NONE);
  } else if (num > 1) {
    finish(q, SPF_PERMERROR, "%zu SPF records at %.200s", num, f->domain);
  } else if (found->rd.txt.data_len > SPF_MAX_RECORD) {
    finish(q, SPF_PERMERROR, "SPF record at %.200s longer than %d octets",
           f->domain, SPF_MAX_RECORD);
  } else {
    memcpy(f->rec, found->rd.txt.data, found->rd.txt.data_len);
    f->rec_len = found->rd.txt.data_len;
    f->pos = 6; /* after "v=spf1" */
    struct span rec = {(const uint8_t *)f->rec, f->rec_len};
    char err[SPF_DETAIL_MAX - 32];
    if (record_check(rec, f, err, sizeof err) != 0) {
      finish(q, SPF_PERMERROR, "%.60s: %s", f->domain, err);
    } else {
      q->st = SPF_ST_TERMS;
    }
  }
}

/* end_of_record: no mechanism matched; redirect= (§6.1) or neutral
 * (§4.7). */
static void end_of_record(struct spf_query *q) {
  struct spf_frame *f = top(q);
  if (!f->has_redirect) {
    snprintf(q->detail, sizeof q->detail, "no mechanism matched at %.200s",
             f->domain);
    frame_done(q, SPF_NEUTRAL);
    return;
  }
  if (++q->num_terms > SPF_MAX_DNS_TERMS) {
    finish(q, SPF_PERMERROR, "more than %d DNS lookups (redirect loop?)",
           SPF_MAX_DNS_TERMS);
    return;
  }
  f->cur = f->redirect;
  q->st = SPF_ST_TARGET;
}

/* ip_match: ip4 / ip6 mechanisms (§5.6); a v4-mapped client is IPv4. */
static int ip_match(const struct spf_query *q, const struct spf_term *t) {
  if (t->kind == SPF_K_IP4) {
    return !q->v6 && prefix_eq(t->net, q->ip, t->cidr4);
  }
  return q->v6 && prefix_eq(t->net, q->ip, t->cidr6);
}

/* step_term evaluates the top frame's next term (§4.6.2). */
static void step_term(struct spf_query *q) {
  struct spf_frame *f = top(q);
  struct span rest = {(const uint8_t *)f->rec + f->pos, f->rec_len - f->pos};
  struct span text;
  const char *why;
  if (!next_term(&rest, &text)) {
    end_of_record(q);
    return;
  }
  f->pos = f->rec_len - rest.len;
  if (term_parse(text, &f->cur, &why) != 0) {
    finish(q, SPF_PERMERROR, "syntax error: %s", why); /* checked before */
    return;
  }
  switch (f->cur.kind) {
  case SPF_K_ALL:
    term_matched(q);
    return;
  case SPF_K_IP4:
  case SPF_K_IP6:
    if (ip_match(q, &f->cur)) {
      term_matched(q);
    }
    return;
  case SPF_K_REDIRECT:
  case SPF_K_EXP:
  case SPF_K_UNKNOWN:
    return; /* modifiers act after the mechanisms */
  default:
    break;
  }
  if (++q->num_terms > SPF_MAX_DNS_TERMS) {
    finish(q, SPF_PERMERROR, "more than %d DNS lookups", SPF_MAX_DNS_TERMS);
    return;
  }
  q->st = SPF_ST_TARGET;
}

/* need_p: a macro-string uses %{p} not yet found: find it first, then
 * come back to state back. */
static int need_p(struct spf_query *q, struct span s, enum spf_state back) {
  if (q->p_state == SPF_P_DONE || s.len == 0 || !needs_p(s)) {
    return 0;
  }
  q->p_return = back;
  q->st = SPF_ST_P;
  return 1;
}

/* step_target expands the current term's target and starts its lookup,
 * or pushes (include) or replaces (redirect) a frame. */
static void step_target(struct spf_query *q) {
  struct spf_frame *f = top(q);
  const struct spf_term *t = &f->cur;
  char rev[DNS_NAME_TEXT_MAX];
  if (need_p(q, t->spec, SPF_ST_TARGET)) {
    return;
  }
  int ok = expand_name(q, t->spec, q->target) == 0;
  switch (t->kind) {
  case SPF_K_INCLUDE:
  case SPF_K_REDIRECT:
    if (!ok) {
      finish(q, SPF_PERMERROR, "%s target is no valid domain",
             t->kind == SPF_K_INCLUDE ? "include" : "redirect");
      return;
    }
    if (t->kind == SPF_K_INCLUDE) {
      assert(q->depth < SPF_MAX_DEPTH); /* each include is a counted term */
      f = &q->frames[q->depth++];
      f->via_redirect = 0;
    } else {
      f->via_redirect = 1;
    }
    memcpy(f->domain, q->target, strlen(q->target) + 1);
    f->has_redirect = f->has_exp = 0;
    f->rec_len = f->pos = 0;
    q->st = SPF_ST_RECORD;
    return;
  default:
    break;
  }
  if (!ok) {
    q->st = SPF_ST_TERMS; /* §4.3: an invalid name does not exist */
    return;
  }
  if (t->kind == SPF_K_A) {
    ask(q, q->target, addr_type(q), SPF_ST_ADDR_WAIT);
  } else if (t->kind == SPF_K_EXISTS) {
    ask(q, q->target, DNS_TYPE_A, SPF_ST_ADDR_WAIT); /* §5.7: A always */
  } else if (t->kind == SPF_K_MX) {
    ask(q, q->target, DNS_TYPE_MX, SPF_ST_MX_WAIT);
  } else {
    reverse_name(q, rev, sizeof rev);
    ask(q, rev, DNS_TYPE_PTR, SPF_ST_PTR_WAIT);
  }
}

/* ---- evaluation: a, exists, mx, ptr ---- */

static void addr_answer(struct spf_query *q, const struct dns_answer *a) {
  const struct spf_term *t = &top(q)->cur;
  enum spf_answer_class c = answer_class(q, a);
  q->st = SPF_ST_TERMS;
  if (c == SPF_ANS_ERROR) {
    dns_error(q, a);
    return;
  }
  if (c == SPF_ANS_VOID) {
    void_lookup(q);
    return;
  }
  for (size_t i = 0; i < a->num_rrs; i++) {
    if (t->kind == SPF_K_EXISTS
            ? a->rrs[i].type == DNS_TYPE_A
            : addr_match(q, &a->rrs[i], t->cidr4, t->cidr6)) {
      term_matched(q);
      return;
    }
  }
}

/* mx_answer: more than 10 MX names is a permerror (§4.6.4). */
static void mx_answer(struct spf_query *q, const struct dns_answer *a) {
  enum spf_answer_class c = answer_class(q, a);
  size_t num = 0;
  q->st = SPF_ST_TERMS;
  if (c == SPF_ANS_ERROR) {
    dns_error(q, a);
    return;
  }
  if (c == SPF_ANS_VOID) {
    void_lookup(q);
    return;
  }
  q->num_names = q->name_idx = 0;
  for (size_t i = 0; i < a->num_rrs; i++) {
    const struct dns_rr *rr = &a->rrs[i];
    if (rr->type != DNS_TYPE_MX) {
      continue;
    }
    if (++num > SPF_MAX_NAMES) {
      finish(q, SPF_PERMERROR, "more than %d MX names for %.200s",
             SPF_MAX_NAMES, q->target);
      return;
    }
    if (rr->rd.mx.exchange[0] != '\0' &&
        strcmp(rr->rd.mx.exchange, ".") != 0) { /* not a null MX */
      copy_name(q->names[q->num_names++], rr->rd.mx.exchange);
    }
  }
  q->st = SPF_ST_MX_ADDR;
}

static void step_mx_addr(struct spf_query *q) {
  if (q->name_idx == q->num_names) {
    q->st = SPF_ST_TERMS;
    return;
  }
  ask_answered(q, q->names[q->name_idx++], addr_type(q), SPF_ST_MX_ADDR_WAIT);
}

static void mx_addr_answer(struct spf_query *q, const struct dns_answer *a) {
  const struct spf_term *t = &top(q)->cur;
  enum spf_answer_class c = answer_class(q, a);
  q->st = SPF_ST_MX_ADDR;
  if (c == SPF_ANS_ERROR) {
    dns_error(q, a);
    return;
  }
  for (size_t i = 0; c == SPF_ANS_DATA && i < a->num_rrs; i++) {
    if (addr_match(q, &a->rrs[i], t->cidr4, t->cidr6)) {
      q->st = SPF_ST_TERMS;
      term_matched(q);
      return;
    }
  }
}

/* ptr_names copies the first SPF_MAX_NAMES PTR names (§4.6.4: the rest
 * are ignored). */
static size_t ptr_names(const struct dns_answer *a,
                        char out[SPF_MAX_NAMES][DNS_NAME_TEXT_MAX]) {
  size_t n = 0;
  for (size_t i = 0; i < a->num_rrs && n < SPF_MAX_NAMES; i++) {
    const char *name = a->rrs[i].rd.ptr;
    if (a->rrs[i].type == DNS_TYPE_PTR && name[0] != '\0' &&
        strcmp(name, ".") != 0) {
      copy_name(out[n++], name);
    }
  }
  return n;
}

/* ptr_answer: §5.5: a DNS error on the PTR lookup is no match. */
static void ptr_answer(struct spf_query *q, const struct dns_answer *a) {
  enum spf_answer_class c = answer_class(q, a);
  q->st = SPF_ST_TERMS;
  if (c == SPF_ANS_VOID) {
    void_lookup(q);
  } else if (c == SPF_ANS_DATA) {
    q->num_names = ptr_names(a, q->names);
    q->name_idx = 0;
    q->st = SPF_ST_PTR_ADDR;
  }
}

/* step_ptr_addr validates the next PTR name within the target (§5.5:
 * only those can match, so only those are looked up). */
static void step_ptr_addr(struct spf_query *q) {
  while (q->name_idx < q->num_names &&
         !name_within(q->names[q->name_idx], q->target)) {
    q->name_idx++;
  }
  if (q->name_idx == q->num_names) {
    q->st = SPF_ST_TERMS;
    return;
  }
  ask_answered(q, q->names[q->name_idx++], addr_type(q), SPF_ST_PTR_ADDR_WAIT);
}

/* ptr_addr_answer: §5.5: a DNS error skips the name. */
static void ptr_addr_answer(struct spf_query *q, const struct dns_answer *a) {
  q->st = SPF_ST_PTR_ADDR;
  if (answer_class(q, a) != SPF_ANS_DATA) {
    return;
  }
  for (size_t i = 0; i < a->num_rrs; i++) {
    if (addr_match(q, &a->rrs[i], 32, 128)) {
      q->st = SPF_ST_TERMS;
      term_matched(q);
      return;
    }
  }
}

/* ---- evaluation: %{p} (§7.3) ---- */

static void step_p(struct spf_query *q) {
  char rev[DNS_NAME_TEXT_MAX];
  reverse_name(q, rev, sizeof rev);
  ask(q, rev, DNS_TYPE_PTR, SPF_ST_P_WAIT);
}

static void p_answer(struct spf_query *q, const struct dns_answer *a) {
  q->p_num = answer_class(q, a) == SPF_ANS_DATA ? ptr_names(a, q->p_names) : 0;
  q->p_idx = 0;
  q->st = SPF_ST_P_ADDR;
}

static void step_p_addr(struct spf_query *q) {
  if (q->p_idx == q->p_num) {
    q->p_state = SPF_P_DONE;
    q->st = q->p_return;
    return;
  }
  ask_answered(q, q->p_names[q->p_idx], addr_type(q), SPF_ST_P_ADDR_WAIT);
}

static void p_addr_answer(struct spf_query *q, const struct dns_answer *a) {
  q->st = SPF_ST_P_ADDR;
  for (size_t i = 0; answer_class(q, a) == SPF_ANS_DATA && i < a->num_rrs;
       i++) {
    q->p_valid[q->p_idx] |= addr_match(q, &a->rrs[i], 32, 128);
  }
  q->p_idx++;
}

/* ---- evaluation: exp= (§6.2) ---- */

/* step_exp looks the explanation up; any failure leaves none, the result
 * stays fail. The lookup is no term (§4.6.4). */
static void step_exp(struct spf_query *q) {
  struct spf_frame *f = top(q);
  if (need_p(q, f->exp.spec, SPF_ST_EXP)) {
    return;
  }
  if (expand_name(q, f->exp.spec, q->target) != 0) {
    q->st = SPF_ST_DONE;
    return;
  }
  ask(q, q->target, DNS_TYPE_TXT, SPF_ST_EXP_WAIT);
}

static void exp_answer(struct spf_query *q, const struct dns_answer *a) {
  const struct dns_rr *found = NULL;
  size_t num = 0, tail;
  int has_p;
  const char *why;
  q->st = SPF_ST_DONE;
  for (size_t i = 0; answer_class(q, a) == SPF_ANS_DATA && i < a->num_rrs;
       i++) {
    if (a->rrs[i].type == DNS_TYPE_TXT) {
      found = &a->rrs[i];
      num++;
    }
  }
  if (num != 1 || found->rd.txt.data_len > sizeof q->exp_text) {
    return;
  }
  memcpy(q->exp_text, found->rd.txt.data, found->rd.txt.data_len);
  q->exp_len = found->rd.txt.data_len;
  struct span text = {(const uint8_t *)q->exp_text, q->exp_len};
  if (macro_check(text, 1, &tail, &has_p, &why) == 0) {
    q->st = SPF_ST_EXP_TEXT;
  }
}

/* step_exp_text expands the explanation; it is kept only if all of it is
 * printable US-ASCII (macro values come from the peer). */
static void step_exp_text(struct spf_query *q) {
  struct span text = {(const uint8_t *)q->exp_text, q->exp_len};
  struct spf_out o = {.b = q->explanation, .cap = sizeof q->explanation - 1};
  if (need_p(q, text, SPF_ST_EXP_TEXT)) {
    return;
  }
  q->st = SPF_ST_DONE;
  if (expand(q, text, 1, &o) != 0) {
    return;
  }
  q->explanation[o.len] = '\0';
  for (size_t i = 0; i < o.len; i++) {
    if ((uint8_t)q->explanation[i] < 0x20 ||
        (uint8_t)q->explanation[i] > 0x7e) {
      return;
    }
  }
  q->has_explanation = 1;
}

/* ---- the machine ---- */

enum spf_step spf_step(struct spf_query *q, const char **name, uint16_t *type) {
  while (!q->waiting && q->st != SPF_ST_DONE) {
    switch (q->st) {
    case SPF_ST_RECORD:
      ask(q, top(q)->domain, DNS_TYPE_TXT, SPF_ST_RECORD_WAIT);
      break;
    case SPF_ST_TERMS:
      step_term(q);
      break;
    case SPF_ST_TARGET:
      step_target(q);
      break;
    case SPF_ST_MX_ADDR:
      step_mx_addr(q);
      break;
    case SPF_ST_PTR_ADDR:
      step_ptr_addr(q);
      break;
    case SPF_ST_P:
      step_p(q);
      break;
    case SPF_ST_P_ADDR:
      step_p_addr(q);
      break;
    case SPF_ST_EXP:
      step_exp(q);
      break;
    case SPF_ST_EXP_TEXT:
      step_exp_text(q);
      break;
    default:
      assert(0 && "a wait state without a lookup out");
      q->st = SPF_ST_DONE;
      break;
    }
  }
  if (q->st == SPF_ST_DONE) {
    return SPF_DONE;
  }
  *name = q->qname;
  *type = q->qtype;
  return SPF_NEED_DNS;
}

void spf_answer(struct spf_query *q, const struct dns_answer *a) {
  if (!q->waiting) {
    return; /* no lookup out: nothing to answer */
  }
  q->waiting = 0;
  switch (q->st) {
  case SPF_ST_RECORD_WAIT:
    record_answer(q, a);
    break;
  case SPF_ST_ADDR_WAIT:
    addr_answer(q, a);
    break;
  case SPF_ST_MX_WAIT:
    mx_answer(q, a);
    break;
  case SPF_ST_MX_ADDR_WAIT:
    mx_addr_answer(q, a);
    break;
  case SPF_ST_PTR_WAIT:
    ptr_answer(q, a);
    break;
  case SPF_ST_PTR_ADDR_WAIT:
    ptr_addr_answer(q, a);
    break;
  case SPF_ST_P_WAIT:
    p_answer(q, a);
    break;
  case SPF_ST_P_ADDR_WAIT:
    p_addr_answer(q, a);
    break;
  case SPF_ST_EXP_WAIT:
    exp_answer(q, a);
    break;
  default:
    assert(0 && "waiting in a state that asks nothing");
    break;
  }
}

/* ---- the request ---- */

/* initial_domain_ok: §4.3: a multi-label name with valid labels and a
 * valid top label; else the result is none. */
static int initial_domain_ok(const char *d) {
  struct span s = span_of(d);
  size_t num;
  if (!labels_ok(s, &num) || num < 2) {
    return 0;
  }
  for (size_t i = 0; i < s.len; i++) {
    if (s.p[i] < 0x21 || s.p[i] > 0x7e) {
      return 0;
    }
  }
  const char *last = strrchr(d, '.');
  return toplabel_ok(span_of(last + 1));
}

/* request_copy splits the identity (§2.3, §2.4, §4.3): the null sender
 * and the HELO check use postmaster@helo; an empty local part is
 * postmaster. */
static int request_copy(struct spf_query *q, const struct spf_request *r) {
  const char *sender = r->sender ? r->sender : "";
  const char *helo = r->helo ? r->helo : "";
  const char *at = r->check_helo ? NULL : strrchr(sender, '@');
  const char *dom = r->check_helo || sender[0] == '\0' ? helo
                    : at != NULL                       ? at + 1
                                                       : sender;
  size_t local_len = at != NULL ? (size_t)(at - sender) : 0;
  size_t dom_len = strlen(dom);
  dom_len -= dom_len > 1 && dom[dom_len - 1] == '.';
  q->local =
      local_len > 0 ? dup_str(sender, local_len) : dup_str("postmaster", 10);
  q->sender_dom = dup_str(dom, dom_len);
  q->helo = dup_str(helo, strlen(helo));
  q->receiver = r->receiver ? dup_str(r->receiver, strlen(r->receiver))
                            : dup_str("unknown", 7);
  if (q->local == NULL || q->sender_dom == NULL || q->helo == NULL ||
      q->receiver == NULL) {
    return -1;
  }
  size_t n = strlen(q->local) + 1 + dom_len + 1;
  if ((q->sender = malloc(n)) == NULL) {
    return -1;
  }
  snprintf(q->sender, n, "%s@%s", q->local, q->sender_dom);
  return 0;
}

static void client_copy(struct spf_query *q, const struct sockaddr *sa) {
  assert(sa != NULL && (sa->sa_family == AF_INET || sa->sa_family == AF_INET6));
  if (sa->sa_family == AF_INET) {
    memcpy(q->ip, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    return;
  }
  const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
  if (IN6_IS_ADDR_V4MAPPED(a6)) {
    memcpy(q->ip, a6->s6_addr + 12, 4); /* §5: treated as IPv4 */
  } else {
    memcpy(q->ip, a6->s6_addr, 16);
    q->v6 = 1;
  }
}

struct spf_query *spf_new(const struct spf_request *r) {
  struct spf_query *q = calloc(1, sizeof(*q));
  if (q == NULL) {
    return NULL;
  }
  if (request_copy(q, r) != 0) {
    spf_free(q);
    return NULL;
  }
  client_copy(q, r->client);
  q->now = r->now;
  q->result = SPF_TEMPERROR;
  snprintf(q->detail, sizeof q->detail, "not finished");
  size_t n = strlen(q->sender_dom);
  n = n < DNS_NAME_TEXT_MAX - 1 ? n : DNS_NAME_TEXT_MAX - 1;
  for (size_t i = 0; i < n; i++) {
    q->domain_lc[i] = (char)span_lower((uint8_t)q->sender_dom[i]);
  }
  q->depth = 1;
  if (!initial_domain_ok(q->sender_dom)) {
    finish(q, SPF_NONE, "invalid domain \"%.200s\"", q->domain_lc);
    return q;
  }
  memcpy(q->frames[0].domain, q->sender_dom, strlen(q->sender_dom) + 1);
  q->st = SPF_ST_RECORD;
  return q;
}

void spf_free(struct spf_query *q) {
  if (q == NULL) {
    return;
  }
  free(q->sender);
  free(q->local);
  free(q->sender_dom);
  free(q->helo);
  free(q->receiver);
  free(q);
}

enum spf_result spf_result(const struct spf_query *q) {
  return q->result;
}

const char *spf_domain(const struct spf_query *q) {
  return q->domain_lc;
}

const char *spf_detail(const struct spf_query *q) {
  return q->detail;
}

const char *spf_explanation(const struct spf_query *q) {
  return q->st == SPF_ST_DONE && q->result == SPF_FAIL && q->has_explanation
             ? q->explanation
             : NULL;
}

unsigned spf_lookups(const struct spf_query *q) {
  return q->num_lookups;
}
