/* proto/dsn.c — RFC 3464 delivery status notifications; see dsn.h. */
#include "proto/dsn.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "proto/smtp_addr.h"

#define DSN_FOLD_AT 78     /* RFC 5322 §2.1.1 SHOULD */
#define DSN_WORD_CHUNK 900 /* a longer word is broken, to stay <= 998 */
#define DSN_WRAP_AT 76     /* human part */
#define DSN_MAX_BOUNDARY_TRIES 64

/* A writer with a sticky error: after the first failure nothing is
 * appended and err stays set, so a sequence is checked once. */
struct dsn_w {
  struct buf *b;
  int err;
};

static void w_bytes(struct dsn_w *w, const void *p, size_t n) {
  if (w->err == 0 && buf_append(w->b, p, n) != 0) {
    w->err = -1;
  }
}

static void w_str(struct dsn_w *w, const char *s) {
  w_bytes(w, s, strlen(s));
}

static void w_byte(struct dsn_w *w, uint8_t c) {
  w_bytes(w, &c, 1);
}

/* A header field being written: tracks the column for folding. */
struct dsn_hdr {
  struct dsn_w *w;
  size_t col;
};

static void hdr_begin(struct dsn_hdr *h, struct dsn_w *w, const char *name) {
  h->w = w;
  w_str(w, name);
  w_byte(w, ':');
  h->col = strlen(name) + 1;
}

/* hdr_word appends " word", folding before it (the space becomes the FWS
 * of RFC 5322 §3.2.2) when the line would pass 78 columns. A word over
 * DSN_WORD_CHUNK is broken into chunks: the only way to stay under 998. */
static void hdr_word(struct dsn_hdr *h, const char *p, size_t n) {
  while (n > DSN_WORD_CHUNK) {
    hdr_word(h, p, DSN_WORD_CHUNK);
    p += DSN_WORD_CHUNK;
    n -= DSN_WORD_CHUNK;
  }
  if (n > 0 && h->col + 1 + n > DSN_FOLD_AT && h->col > 0) {
    w_str(h->w, "\r\n");
    h->col = 0;
  }
  w_byte(h->w, ' ');
  w_bytes(h->w, p, n);
  h->col += 1 + n;
}

/* hdr_text appends text as words split at single spaces. The text must
 * already be free of CR, LF and other controls. */
static void hdr_text(struct dsn_hdr *h, const char *p, size_t n) {
  size_t start = 0;
  for (size_t i = 0; i <= n; i++) {
    if (i == n || p[i] == ' ') {
      hdr_word(h, p + start, i - start);
      start = i + 1;
    }
  }
}

static void hdr_end(struct dsn_hdr *h) {
  w_str(h->w, "\r\n");
}

/* hdr_simple writes "Name: value" where value is trusted ASCII. */
static void hdr_simple(struct dsn_w *w, const char *name, const char *value) {
  struct dsn_hdr h;
  hdr_begin(&h, w, name);
  hdr_text(&h, value, strlen(value));
  hdr_end(&h);
}

/* ---- validation ---- */

static int is_ascii_print(const char *s) {
  for (; *s != '\0'; s++) {
    if ((uint8_t)*s < 0x20 || (uint8_t)*s > 0x7e) {
      return 0;
    }
  }
  return 1;
}

/* host_ok: a DNS name or an address literal, as we write it after "dns;".
 */
static int host_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > DSN_MAX_HOST_LEN) {
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_' ||
          c == '[' || c == ']' || c == ':')) {
      return 0;
    }
  }
  return 1;
}

/* status_ok: RFC 3463 §2 class "." subject "." detail, class fitting the
 * action (RFC 3464 §2.3.4). */
static int status_ok(const char *s, enum dsn_action a) {
  char cls = s[0];
  size_t i = 1, digits;
  if (cls != '2' && cls != '4' && cls != '5') {
    return 0;
  }
  for (int part = 0; part < 2; part++) {
    if (s[i++] != '.') {
      return 0;
    }
    for (digits = 0; s[i] >= '0' && s[i] <= '9'; i++) {
      digits++;
    }
    if (digits < 1 || digits > 3) {
      return 0;
    }
  }
  if (s[i] != '\0') {
    return 0;
  }
  switch (a) {
  case DSN_ACTION_FAILED:
    return cls == '5' || cls == '4';
  case DSN_ACTION_DELAYED:
    return cls == '4';
  case DSN_ACTION_DELIVERED:
  case DSN_ACTION_RELAYED:
  case DSN_ACTION_EXPANDED:
    return cls == '2';
  }
  return 0;
}

static int time_ok(int64_t ms) {
  /* Up to 9999-12-31: a four-digit year. */
  return ms >= 0 && ms / 1000 < INT64_C(253402300800);
}

static int addr_ok(const char *s) {
  size_t n = s == NULL ? 0 : strlen(s);
  return n > 0 && n <= DSN_MAX_ADDR_LEN;
}

/* sender_ok: we write it raw in To:, so it must not need any encoding. */
static int sender_ok(const char *s, int smtputf8) {
  if (!addr_ok(s)) {
    return 0;
  }
  size_t n = strlen(s);
  for (size_t i = 0; i < n; i++) {
    uint8_t c = (uint8_t)s[i];
    if (c >= 0x80) {
      size_t k =
          smtputf8 ? smtp_addr_utf8_len((const uint8_t *)s + i, n - i) : 0;
      if (k == 0) {
        return 0;
      }
      i += k - 1;
    } else if (c < 0x20 || c == 0x7f || c == '<' || c == '>') {
      return 0;
    }
  }
  return 1;
}

static int rcpt_ok(const struct dsn_rcpt *rc) {
  if (!addr_ok(rc->final_recipient) ||
      (rc->original_recipient != NULL && !addr_ok(rc->original_recipient))) {
    return 0;
  }
  if ((unsigned)rc->action > DSN_ACTION_EXPANDED || rc->status == NULL ||
      !status_ok(rc->status, rc->action)) {
    return 0;
  }
  if (rc->remote_mta != NULL && !host_ok(rc->remote_mta)) {
    return 0;
  }
  if (rc->diag_code != 0 && (rc->diag_code < 200 || rc->diag_code > 599)) {
    return 0;
  }
  return time_ok(rc->last_attempt_ms) && time_ok(rc->will_retry_until_ms);
}

static int report_ok(const struct dsn_report *r) {
  if (r->reporting_mta == NULL || !host_ok(r->reporting_mta) ||
      (r->message_id_domain != NULL && !host_ok(r->message_id_domain))) {
    return 0;
  }
  if (r->original_sender == NULL ||
      !sender_ok(r->original_sender, r->smtputf8)) {
    return 0; /* never bounce to <> */
  }
  if (r->envid != NULL && strlen(r->envid) > DSN_MAX_ENVID_LEN) {
    return 0;
  }
  if (r->now_ms <= 0 || !time_ok(r->now_ms) || !time_ok(r->arrival_ms)) {
    return 0;
  }
  if ((r->ret != DSN_RET_HDRS && r->ret != DSN_RET_FULL) ||
      (r->original == NULL && r->original_len != 0)) {
    return 0;
  }
  if (r->rcpts == NULL || r->num_rcpts == 0) {
    return 0;
  }
  size_t listed = r->num_rcpts < DSN_MAX_RCPTS ? r->num_rcpts : DSN_MAX_RCPTS;
  for (size_t i = 0; i < listed; i++) {
    if (!rcpt_ok(&r->rcpts[i])) {
      return 0;
    }
  }
  return 1;
}

/* ---- encodings ---- */

/* fmt_date writes an RFC 5322 §3.3 date-time in UTC. */
static void fmt_date(char out[40], int64_t ms) {
  static const char *const days[] = {"Sun", "Mon", "Tue", "Wed",
                                     "Thu", "Fri", "Sat"};
  static const char *const months[] = {"Jan", "Feb", "Mar", "Apr",
                                       "May", "Jun", "Jul", "Aug",
                                       "Sep", "Oct", "Nov", "Dec"};
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  if (gmtime_r(&t, &tm) == NULL) {
    memset(&tm, 0, sizeof(tm)); /* unreachable: time_ok bounds ms */
    tm.tm_mday = 1;
    tm.tm_year = 70;
  }
  snprintf(out, 40, "%s, %02d %s %04d %02d:%02d:%02d +0000",
           days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12],
           tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* xtext_encode: RFC 3461 §4, xchar is "!".."~" except "+" and "=". */
static void xtext_encode(struct dsn_w *w, const char *s) {
  for (; *s != '\0'; s++) {
    uint8_t c = (uint8_t)*s;
    if (c >= '!' && c <= '~' && c != '+' && c != '=') {
      w_byte(w, c);
    } else {
      char hex[4];
      snprintf(hex, sizeof(hex), "+%02X", c);
      w_str(w, hex);
    }
  }
}

static uint32_t utf8_decode(const uint8_t *p, size_t k) {
  static const uint8_t lead_mask[] = {0, 0, 0x1f, 0x0f, 0x07};
  uint32_t cp = p[0] & lead_mask[k];
  for (size_t i = 1; i < k; i++) {
    cp = (cp << 6) | (p[i] & 0x3f);
  }
  return cp;
}

static int is_utf8_clean(const char *s, int *out_ascii) {
  size_t n = strlen(s);
  *out_ascii = 1;
  for (size_t i = 0; i < n; i++) {
    uint8_t c = (uint8_t)s[i];
    if (c < 0x20 || c == 0x7f) {
      return 0;
    }
    if (c >= 0x80) {
      size_t k = smtp_addr_utf8_len((const uint8_t *)s + i, n - i);
      if (k == 0) {
        return 0;
      }
      *out_ascii = 0;
      i += k - 1;
    }
  }
  return 1;
}

/* addr_encode writes "type;" into *out_type and the address into w:
 * printable ASCII as rfc822; else RFC 6533 §3 utf-8, raw when `global`
 * and clean, otherwise as utf-8-addr-xtext. */
static void addr_encode(struct dsn_w *w, const char **out_type, const char *s,
                        int global) {
  int ascii;
  if (is_ascii_print(s)) {
    *out_type = "rfc822;";
    w_str(w, s);
    return;
  }
  *out_type = "utf-8;";
  if (global && is_utf8_clean(s, &ascii)) {
    w_str(w, s);
    return;
  }
  size_t n = strlen(s);
  for (size_t i = 0; i < n; i++) {
    uint8_t c = (uint8_t)s[i];
    uint32_t cp = c;
    char esc[16];
    if (c > 0x20 && c < 0x7f && c != '\\' && c != '+' && c != '=') {
      w_byte(w, c);
      continue;
    }
    if (c >= 0x80) {
      size_t k = smtp_addr_utf8_len((const uint8_t *)s + i, n - i);
      cp = k == 0 ? 0xfffd : utf8_decode((const uint8_t *)s + i, k);
      i += k == 0 ? 0 : k - 1;
    }
    snprintf(esc, sizeof(esc), "\\x{%02X}", (unsigned)cp);
    w_str(w, esc);
  }
}

/* needs_global: raw UTF-8 addresses may be written (RFC 6533 §6). */
static int needs_global(const struct dsn_report *r, size_t listed) {
  if (!r->smtputf8) {
    return 0;
  }
  for (size_t i = 0; i < listed; i++) {
    int ascii;
    const struct dsn_rcpt *rc = &r->rcpts[i];
    if (is_utf8_clean(rc->final_recipient, &ascii) && !ascii) {
      return 1;
    }
    if (rc->original_recipient != NULL &&
        is_utf8_clean(rc->original_recipient, &ascii) && !ascii) {
      return 1;
    }
  }
  return 0;
}

/* sanitize_text copies untrusted text into a one-line form: CR, LF, TAB
 * become one space (runs collapse), other controls and octets that are
 * not allowed '?', cut at DSN_MAX_DIAG_LEN. UTF-8 is kept when `utf8`. */
static void sanitize_text(struct buf *out, int *out_err, const char *s,
                          int utf8) {
  struct dsn_w w = {out, 0};
  size_t n = strlen(s);
  int space = 1; /* drops leading spaces */
  for (size_t i = 0; i < n && out->len < DSN_MAX_DIAG_LEN; i++) {
    uint8_t c = (uint8_t)s[i];
    size_t k;
    if (c == ' ' || c == '\r' || c == '\n' || c == '\t') {
      if (!space) {
        w_byte(&w, ' ');
      }
      space = 1;
      continue;
    }
    space = 0;
    if (c > 0x20 && c < 0x7f) {
      w_byte(&w, c);
    } else if (c >= 0x80 && utf8 &&
               (k = smtp_addr_utf8_len((const uint8_t *)s + i, n - i)) != 0) {
      if (out->len + k > DSN_MAX_DIAG_LEN) {
        break;
      }
      w_bytes(&w, s + i, k);
      i += k - 1;
    } else {
      w_byte(&w, '?');
    }
  }
  while (out->len > 0 && out->data[out->len - 1] == ' ') {
    out->len--;
  }
  if (w.err != 0) {
    *out_err = -1;
  }
}

/* ---- the parts ---- */

static const char *action_name(enum dsn_action a) {
  switch (a) {
  case DSN_ACTION_FAILED:
    return "failed";
  case DSN_ACTION_DELAYED:
    return "delayed";
  case DSN_ACTION_DELIVERED:
    return "delivered";
  case DSN_ACTION_RELAYED:
    return "relayed";
  case DSN_ACTION_EXPANDED:
    return "expanded";
  }
  return "failed";
}

/* Build state shared by the parts. */
struct dsn_ctx {
  const struct dsn_report *r;
  size_t listed;
  int global;
  int worst; /* 0 failed, 1 delayed, 2 success */
  int too_large;
  enum dsn_returned returned;
  int body_8bit; /* anything 8-bit: the top level says 8bit */
  int orig_8bit; /* the returned original has 8-bit octets */
};

/* human_para writes text wrapped at DSN_WRAP_AT columns on spaces, the
 * continuation lines indented by `indent` spaces; a word too long for a
 * line is broken at DSN_WORD_CHUNK. */
static void human_para(struct dsn_w *w, const char *p, size_t n,
                       size_t indent) {
  size_t col = 0, start = 0;
  for (size_t i = 0; i <= n; i++) {
    if (i < n && p[i] != ' ') {
      continue;
    }
    size_t wl = i - start;
    const char *word = p + start;
    start = i + 1;
    while (wl > 0) {
      size_t take = wl > DSN_WORD_CHUNK ? DSN_WORD_CHUNK : wl;
      if (col > indent && col + 1 + take > DSN_WRAP_AT) {
        w_str(w, "\r\n");
        col = 0;
      }
      if (col == 0) {
        for (size_t k = 0; k < indent; k++) {
          w_byte(w, ' ');
        }
        col = indent;
      } else {
        w_byte(w, ' ');
        col++;
      }
      w_bytes(w, word, take);
      col += take;
      word += take;
      wl -= take;
    }
  }
  w_str(w, "\r\n");
}

static void human_intro(struct dsn_w *w, const struct dsn_ctx *c) {
  static const char *const intro[] = {
      ("I'm sorry to have to inform you that your message could not be "
       "delivered to one or more recipients. The mail system gave up on the "
       "recipients listed below."),
      ("Your message could not be delivered yet to one or more recipients. "
       "The mail system will keep trying; you do not need to resend it."),
      "Your message was delivered, relayed or forwarded as listed below.",
  };
  char line[DSN_MAX_HOST_LEN + 64];
  snprintf(line, sizeof(line), "This is the mail system at host %s.",
           c->r->reporting_mta);
  human_para(w, line, strlen(line), 0);
  w_str(w, "\r\n");
  human_para(w, intro[c->worst], strlen(intro[c->worst]), 0);
  w_str(w, "\r\n");
}

/* human_rcpt: "<addr>: action; host said: code text" as one paragraph. */
static int human_rcpt(struct dsn_w *w, const struct dsn_ctx *c,
                      const struct dsn_rcpt *rc) {
  struct buf line = {0}, diag = {0};
  struct dsn_w lw = {&line, 0};
  int err = 0;
  const char *type;
  char tail[DSN_MAX_HOST_LEN + 96];
  w_byte(&lw, '<');
  addr_encode(&lw, &type, rc->final_recipient, c->global);
  snprintf(tail, sizeof(tail), ">: %s (status %s)", action_name(rc->action),
           rc->status);
  w_str(&lw, tail);
  if (rc->remote_mta != NULL) {
    snprintf(tail, sizeof(tail), "; host %s said:", rc->remote_mta);
    w_str(&lw, tail);
  } else if (rc->diag_code != 0 || rc->diag_text != NULL) {
    w_str(&lw, ":");
  }
  if (rc->diag_code != 0) {
    snprintf(tail, sizeof(tail), " %d", rc->diag_code);
    w_str(&lw, tail);
  }
  if (rc->diag_text != NULL) {
    sanitize_text(&diag, &err, rc->diag_text, c->global);
    w_byte(&lw, ' ');
    w_bytes(&lw, diag.data, diag.len);
  }
  if (lw.err == 0 && err == 0) {
    human_para(w, (const char *)line.data, line.len, 4);
  }
  int rc_err = lw.err != 0 || err != 0 ? -1 : 0;
  buf_free(&line);
  buf_free(&diag);
  return rc_err;
}

static int build_human(struct dsn_w *w, const struct dsn_ctx *c) {
  const struct dsn_report *r = c->r;
  char line[160];
  human_intro(w, c);
  for (size_t i = 0; i < c->listed; i++) {
    if (human_rcpt(w, c, &r->rcpts[i]) != 0) {
      return -1;
    }
  }
  if (r->num_rcpts > c->listed) {
    snprintf(line, sizeof(line), "(%zu more recipients are not listed.)",
             r->num_rcpts - c->listed);
    human_para(w, line, strlen(line), 0);
  }
  w_str(w, "\r\n");
  if (c->too_large) {
    snprintf(line, sizeof(line),
             "The original message was too large to return in full (%zu "
             "octets, limit %zu); only its headers are attached.",
             r->original_len, r->max_original_len);
    human_para(w, line, strlen(line), 0);
  } else if (c->returned == DSN_RETURNED_FULL) {
    static const char full[] = "The original message is attached.";
    human_para(w, full, sizeof(full) - 1, 0);
  } else if (c->returned == DSN_RETURNED_HEADERS) {
    static const char hdrs[] =
        "The headers of the original message are attached.";
    human_para(w, hdrs, sizeof(hdrs) - 1, 0);
  }
  return w->err;
}

/* status_addr writes "Name: type; address" (RFC 3464 §2.3.1, §2.3.2). */
static void status_addr(struct dsn_w *w, const char *name, const char *type,
                        const char *addr, int global) {
  struct buf enc = {0};
  struct dsn_w ew = {&enc, 0};
  struct dsn_hdr h;
  const char *got_type;
  addr_encode(&ew, &got_type, addr, global);
  if (ew.err != 0) {
    w->err = -1;
    buf_free(&enc);
    return;
  }
  hdr_begin(&h, w, name);
  hdr_text(&h, type != NULL ? type : got_type,
           strlen(type != NULL ? type : got_type));
  hdr_text(&h, (const char *)enc.data, enc.len);
  hdr_end(&h);
  buf_free(&enc);
}

/* status_orcpt: the decoded ORCPT "type;address"; the type must be an
 * atom, else the field is left out (RFC 3464 §2.3.1 makes it optional). */
static void status_orcpt(struct dsn_w *w, const struct dsn_ctx *c,
                         const char *orcpt) {
  const char *semi = strchr(orcpt, ';');
  char type[64];
  size_t tl = semi == NULL ? 0 : (size_t)(semi - orcpt);
  if (tl == 0 || tl >= sizeof(type) - 1) {
    return;
  }
  for (size_t i = 0; i < tl; i++) {
    char ch = orcpt[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
          (ch >= '0' && ch <= '9') || ch == '-')) {
      return;
    }
  }
  const char *addr = semi + 1;
  while (*addr == ' ') {
    addr++;
  }
  if (*addr == '\0') {
    return;
  }
  if (!is_ascii_print(addr)) {
    /* Non-ASCII: the RFC 6533 utf-8 type, whatever type was given. */
    status_addr(w, "Original-Recipient", NULL, addr, c->global);
    return;
  }
  memcpy(type, orcpt, tl);
  type[tl] = ';';
  type[tl + 1] = '\0';
  status_addr(w, "Original-Recipient", type, addr, c->global);
}

static void status_diag(struct dsn_w *w, const struct dsn_ctx *c,
                        const struct dsn_rcpt *rc) {
  struct buf diag = {0};
  struct dsn_hdr h;
  char code[16];
  int err = 0;
  if (rc->diag_code == 0 && rc->diag_text == NULL) {
    return;
  }
  if (rc->diag_text != NULL) {
    sanitize_text(&diag, &err, rc->diag_text, c->global);
  }
  if (err != 0) {
    w->err = -1;
    buf_free(&diag);
    return;
  }
  hdr_begin(&h, w, "Diagnostic-Code");
  if (rc->diag_code != 0) {
    snprintf(code, sizeof(code), "%d", rc->diag_code);
    hdr_text(&h, "smtp;", strlen("smtp;"));
    hdr_text(&h, code, strlen(code));
  } else {
    hdr_text(&h, "X-Postseal;", strlen("X-Postseal;"));
  }
  if (diag.len > 0) {
    hdr_text(&h, (const char *)diag.data, diag.len);
  }
  hdr_end(&h);
  buf_free(&diag);
}

/* status_rcpt writes one per-recipient group (RFC 3464 §2.3). */
static void status_rcpt(struct dsn_w *w, const struct dsn_ctx *c,
                        const struct dsn_rcpt *rc) {
  char date[40], host[DSN_MAX_HOST_LEN + 8];
  w_str(w, "\r\n");
  if (rc->original_recipient != NULL) {
    status_orcpt(w, c, rc->original_recipient);
  }
  status_addr(w, "Final-Recipient", NULL, rc->final_recipient, c->global);
  hdr_simple(w, "Action", action_name(rc->action));
  hdr_simple(w, "Status", rc->status);
  if (rc->remote_mta != NULL) {
    snprintf(host, sizeof(host), "dns; %s", rc->remote_mta);
    hdr_simple(w, "Remote-MTA", host);
  }
  status_diag(w, c, rc);
  if (rc->last_attempt_ms > 0) {
    fmt_date(date, rc->last_attempt_ms);
    hdr_simple(w, "Last-Attempt-Date", date);
  }
  if (rc->action == DSN_ACTION_DELAYED && rc->will_retry_until_ms > 0) {
    fmt_date(date, rc->will_retry_until_ms);
    hdr_simple(w, "Will-Retry-Until", date);
  }
}

static int build_status(struct dsn_w *w, const struct dsn_ctx *c) {
  const struct dsn_report *r = c->r;
  char line[DSN_MAX_HOST_LEN + 8], date[40];
  snprintf(line, sizeof(line), "dns; %s", r->reporting_mta);
  hdr_simple(w, "Reporting-MTA", line);
  if (r->envid != NULL) {
    w_str(w, "Original-Envelope-Id: "); /* xtext: at most 300 octets */
    xtext_encode(w, r->envid);
    w_str(w, "\r\n");
  }
  if (r->arrival_ms > 0) {
    fmt_date(date, r->arrival_ms);
    hdr_simple(w, "Arrival-Date", date);
  }
  for (size_t i = 0; i < c->listed; i++) {
    status_rcpt(w, c, &r->rcpts[i]);
  }
  return w->err;
}

/* copy_lines copies p[0..n) as CRLF lines: a bare CR or LF ends a line,
 * a line over DSN_HARD_LINE is broken, and the copy ends in CRLF. Sets
 * *out_8bit when an octet >= 0x80 is seen. */
static void copy_lines(struct dsn_w *w, const uint8_t *p, size_t n,
                       int *out_8bit) {
  size_t i = 0;
  while (i < n) {
    size_t j = i;
    while (j < n && p[j] != '\r' && p[j] != '\n' && j - i < DSN_HARD_LINE) {
      if (p[j] >= 0x80) {
        *out_8bit = 1;
      }
      j++;
    }
    w_bytes(w, p + i, j - i);
    w_str(w, "\r\n");
    if (j < n && p[j] == '\r') {
      j++;
      if (j < n && p[j] == '\n') {
        j++;
      }
    } else if (j < n && p[j] == '\n') {
      j++;
    }
    i = j;
  }
}

/* header_section_len: the octets up to (not including) the first empty
 * line, cut at the last line end within DSN_MAX_HEADERS_LEN. */
static size_t header_section_len(const uint8_t *p, size_t n) {
  size_t i = 0, last_end = 0;
  while (i < n && i < DSN_MAX_HEADERS_LEN) {
    const uint8_t *lf = memchr(p + i, '\n', n - i);
    size_t end = lf == NULL ? n : (size_t)(lf - p) + 1;
    size_t content = end - i - (lf != NULL ? 1 : 0);
    if (content > 0 && p[i + content - 1] == '\r') {
      content--;
    }
    if (content == 0) {
      return i; /* the empty line */
    }
    if (end > DSN_MAX_HEADERS_LEN) {
      return last_end != 0 ? last_end : DSN_MAX_HEADERS_LEN;
    }
    last_end = end;
    i = end;
  }
  return i < n ? last_end : n;
}

static int build_original(struct dsn_w *w, struct dsn_ctx *c) {
  const struct dsn_report *r = c->r;
  if (r->original == NULL || r->original_len == 0) {
    c->returned = DSN_RETURNED_NONE;
    return 0;
  }
  if (r->ret == DSN_RET_FULL &&
      (r->max_original_len == 0 || r->original_len <= r->max_original_len)) {
    c->returned = DSN_RETURNED_FULL;
    copy_lines(w, r->original, r->original_len, &c->orig_8bit);
  } else {
    c->too_large = r->ret == DSN_RET_FULL;
    c->returned = DSN_RETURNED_HEADERS;
    size_t hl = header_section_len(r->original, r->original_len);
    if (hl == 0) {
      c->returned = DSN_RETURNED_NONE; /* no header section to return */
      c->too_large = 0;
      return 0;
    }
    copy_lines(w, r->original, hl, &c->orig_8bit);
  }
  return w->err;
}

/* ---- assembly ---- */

static uint64_t mix64(uint64_t x) {
  x += UINT64_C(0x9e3779b97f4a7c15);
  x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
  return x ^ (x >> 31);
}

static int occurs(const struct buf *b, const char *s) {
  return b->len > 0 && memmem(b->data, b->len, s, strlen(s)) != NULL;
}

/* pick_boundary: RFC 2046 §5.1.1 wants a boundary that occurs in no
 * part; one that does is replaced by the next candidate. */
static int pick_boundary(char out[48], uint64_t unique,
                         const struct buf *parts[3]) {
  for (unsigned t = 0; t < DSN_MAX_BOUNDARY_TRIES; t++) {
    snprintf(out, 48, "=_dsn_%016llx_%u",
             (unsigned long long)mix64(unique ^ ((uint64_t)t << 56)), t);
    if (!occurs(parts[0], out) && !occurs(parts[1], out) &&
        !occurs(parts[2], out)) {
      return 0;
    }
  }
  return -1;
}

static void write_headers(struct dsn_w *w, const struct dsn_ctx *c,
                          const char *boundary) {
  static const char *const subjects[] = {
      "Undelivered Mail Returned to Sender",
      "Delayed Mail (still being retried)",
      "Successful Mail Delivery Report",
  };
  const struct dsn_report *r = c->r;
  char line[DSN_MAX_HOST_LEN + 96];
  struct dsn_hdr h;
  snprintf(line, sizeof(line), "\"Mail Delivery System\" <MAILER-DAEMON@%s>",
           r->reporting_mta);
  hdr_simple(w, "From", line);
  hdr_begin(&h, w, "To");
  w_str(w, " <");
  w_str(w, r->original_sender); /* checked by sender_ok: no CTL, <> */
  w_str(w, ">");
  hdr_end(&h);
  hdr_simple(w, "Subject", subjects[c->worst]);
  fmt_date(line, r->now_ms);
  hdr_simple(w, "Date", line);
  snprintf(line, sizeof(line), "<dsn.%016llx.%lld@%s>",
           (unsigned long long)r->unique, (long long)(r->now_ms / 1000),
           r->message_id_domain != NULL ? r->message_id_domain
                                        : r->reporting_mta);
  hdr_simple(w, "Message-ID", line);
  w_str(w, "Auto-Submitted: auto-replied\r\n");
  w_str(w, "MIME-Version: 1.0\r\n");
  w_str(w, "Content-Type: multipart/report; report-type=delivery-status;"
           "\r\n\tboundary=\"");
  w_str(w, boundary);
  w_str(w, "\"\r\n");
  if (c->body_8bit) {
    w_str(w, "Content-Transfer-Encoding: 8bit\r\n");
  }
  w_str(w, "\r\nThis is a MIME-encapsulated message.\r\n\r\n");
}

static void write_part(struct dsn_w *w, const char *boundary, const char *type,
                       int eight_bit, const struct buf *body) {
  w_str(w, "--");
  w_str(w, boundary);
  w_str(w, "\r\nContent-Type: ");
  w_str(w, type);
  w_str(w, "\r\n");
  if (eight_bit) {
    w_str(w, "Content-Transfer-Encoding: 8bit\r\n");
  }
  w_str(w, "\r\n");
  w_bytes(w, body->data, body->len); /* each body ends in CRLF */
}

static const char *original_type(const struct dsn_ctx *c) {
  if (c->returned == DSN_RETURNED_FULL) {
    return c->global ? "message/global" : "message/rfc822";
  }
  return c->global ? "message/global-headers" : "text/rfc822-headers";
}

static int assemble(struct dsn_w *w, struct dsn_ctx *c,
                    const struct buf *parts[3]) {
  char boundary[48];
  if (pick_boundary(boundary, c->r->unique, parts) != 0) {
    return -1;
  }
  write_headers(w, c, boundary);
  write_part(w, boundary,
             c->global ? "text/plain; charset=utf-8"
                       : "text/plain; charset=us-ascii",
             c->global, parts[0]);
  write_part(w, boundary,
             c->global ? "message/global-delivery-status"
                       : "message/delivery-status",
             c->global, parts[1]);
  if (c->returned != DSN_RETURNED_NONE) {
    write_part(w, boundary, original_type(c), c->orig_8bit, parts[2]);
  }
  w_str(w, "--");
  w_str(w, boundary);
  w_str(w, "--\r\n");
  return w->err;
}

static void ctx_init(struct dsn_ctx *c, const struct dsn_report *r) {
  memset(c, 0, sizeof(*c));
  c->r = r;
  c->listed = r->num_rcpts < DSN_MAX_RCPTS ? r->num_rcpts : DSN_MAX_RCPTS;
  c->global = needs_global(r, c->listed);
  c->worst = 2;
  for (size_t i = 0; i < c->listed; i++) {
    if (r->rcpts[i].action == DSN_ACTION_FAILED) {
      c->worst = 0;
    } else if (r->rcpts[i].action == DSN_ACTION_DELAYED && c->worst > 1) {
      c->worst = 1;
    }
  }
}

int dsn_build(struct buf *out, struct dsn_info *out_info,
              const struct dsn_report *r) {
  if (out == NULL || r == NULL || !report_ok(r)) {
    return -1;
  }
  struct dsn_ctx c;
  struct buf human = {0}, status = {0}, orig = {0};
  struct dsn_w hw = {&human, 0}, sw = {&status, 0}, ow = {&orig, 0};
  struct dsn_w w = {out, 0};
  const struct buf *parts[3] = {&human, &status, &orig};
  size_t old_len = out->len;
  int rc = -1;
  ctx_init(&c, r);
  /* The original first: the human part says what was returned. */
  if (build_original(&ow, &c) == 0 && build_human(&hw, &c) == 0 &&
      build_status(&sw, &c) == 0) {
    c.body_8bit = c.global || c.orig_8bit;
    rc = assemble(&w, &c, parts);
  }
  if (rc != 0) {
    out->len = old_len;
  } else if (out_info != NULL) {
    out_info->body_8bit = c.body_8bit;
    out_info->smtputf8 = c.global || !is_ascii_print(r->original_sender);
    out_info->returned = c.returned;
    out_info->too_large = c.too_large;
    out_info->num_listed = c.listed;
  }
  buf_free(&human);
  buf_free(&status);
  buf_free(&orig);
  return rc;
}
