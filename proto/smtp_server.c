/* proto/smtp_server.c — sans-I/O SMTP server engine; see smtp_server.h.
 *
 * Input is kept in `in` and consumed by advancing `in_off`; the buffer is
 * compacted only when an append would not fit, so consuming is O(1).
 * Output replies are appended to `out` and drained the same way.
 * Secrets (AUTH responses) are wiped from the input buffer once read and
 * from the SASL state once the host has its verdict; a partial response
 * line the input buffer compacts may leave a stale copy there until it is
 * overwritten (best effort, like the TLS library's own buffers). */
#include "proto/smtp_server.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/metrics.h" /* METRIC_ADD: a scrape reads the counters */
#include "proto/smtp_addr.h"

enum smtp_server_state {
  SMTP_SERVER_STATE_COMMAND,  /* reading command lines */
  SMTP_SERVER_STATE_DATA,     /* DATA text lines until <CRLF>.<CRLF> */
  SMTP_SERVER_STATE_CHUNK,    /* the octets of one BDAT chunk */
  SMTP_SERVER_STATE_AUTH,     /* SASL response lines after a 334 */
  SMTP_SERVER_STATE_TLS_WAIT, /* after STARTTLS's 220 until tls_started;
                                 input is discarded */
  SMTP_SERVER_STATE_CLOSED,   /* EV_CLOSE owed; input is ignored */
};

enum smtp_server_verdict {
  SMTP_SERVER_VERDICT_NONE,
  SMTP_SERVER_VERDICT_MAIL,
  SMTP_SERVER_VERDICT_RCPT,
  SMTP_SERVER_VERDICT_MESSAGE,
  SMTP_SERVER_VERDICT_AUTH,
};

/* At most two events come from one command (EV_RSET then EV_HELO). */
#define SMTP_SERVER_MAX_EVENTS 4
#define SMTP_SERVER_MAX_ENVID 100            /* RFC 3461 §4.4 */
#define SMTP_SERVER_MAX_ORCPT 500            /* RFC 3461 §4.2 */
#define SMTP_SERVER_MAX_REPLY 512            /* one formatted reply line */
#define SMTP_SERVER_BODY_PREALLOC (1u << 20) /* cap on SIZE-hinted reserve */
#define SMTP_SERVER_MAX_SASL_LINE 12288 /* RFC 4954 §4, CRLF not counted */
#define SMTP_SERVER_MAX_AUTHZID 255
#define SMTP_SERVER_MAX_AUTHCID 255
#define SMTP_SERVER_MAX_PASSWORD 1024   /* policy/auth.h AUTH_MAX_PASSWORD */
#define SMTP_SERVER_AUTH_LINE_EXTRA 500 /* RFC 4954 §5: MAIL line + 500 */
#define SMTP_SERVER_MAX_AUTH_PARAM 500  /* RFC 4954 §5 AUTH= value */
/* The largest decoded response we look at: a PLAIN message at the limits. */
#define SMTP_SERVER_MAX_SASL_DECODED                                           \
  (SMTP_SERVER_MAX_AUTHZID + 1 + SMTP_SERVER_MAX_AUTHCID + 1 +                 \
   SMTP_SERVER_MAX_PASSWORD)
#define SMTP_SERVER_EXT_KNOWN                                                  \
  (SMTP_EXT_ALL | SMTP_EXT_STARTTLS | SMTP_EXT_AUTH | SMTP_EXT_REQUIRETLS)

/* The message being received by DATA or BDAT. */
struct smtp_server_msg {
  size_t total;      /* octets received (before dot-unstuffing) */
  size_t header_len; /* octets of the header section so far */
  size_t line_len;   /* octets of the current line so far; 0 at its start */
  const char *bad;   /* first reason to reject it (a reply), or NULL */
  int in_header;     /* no empty line seen yet */
  int prev_crlf;     /* the previous line ended in CRLF (DATA's end needs
                        it) */
  int last_cr;       /* the last octet was a CR: bare unless a LF follows,
                        maybe in the next read or BDAT chunk */
};

/* Where a SASL exchange (RFC 4954 §4) stands. */
enum smtp_server_sasl_step {
  SMTP_SERVER_SASL_PLAIN,      /* RFC 4616 message awaited */
  SMTP_SERVER_SASL_LOGIN_USER, /* LOGIN: user name awaited */
  SMTP_SERVER_SASL_LOGIN_PASS, /* LOGIN: password awaited */
};

/* One AUTH in progress, allocated for its duration and wiped when freed:
 * it holds a password. */
struct smtp_server_sasl {
  enum smtp_server_sasl_step step;
  char user[SMTP_SERVER_MAX_AUTHCID + 1];
  char pass[SMTP_SERVER_MAX_PASSWORD + 1];
  uint8_t dec[SMTP_SERVER_MAX_SASL_DECODED]; /* one decoded response */
};

struct smtp_server {
  char *hostname;
  unsigned ext;
  struct smtp_server_limits lim;
  size_t max_command_line; /* lim's, + 500 with AUTH (RFC 4954 §5) */
  struct smtp_server_stats *stats;
  int tls_required;  /* config: 530 before TLS */
  int auth_required; /* config: 530 to MAIL before AUTH */

  enum smtp_server_state state;
  struct buf in;
  size_t in_off;
  struct buf out;
  size_t out_off;
  int skip_line; /* discarding the rest of an over-long command line */
  int failed;    /* allocation failed: sticky, the session closes */
  unsigned errors;

  enum smtp_server_event events[SMTP_SERVER_MAX_EVENTS];
  unsigned ev_head, ev_count;
  enum smtp_server_verdict verdict;

  char *helo;
  int esmtp;
  int tls;                       /* inside TLS */
  size_t discarded;              /* clear octets dropped after STARTTLS */
  int authenticated;             /* an AUTH got a successful verdict */
  char *auth_user;               /* its authcid */
  struct smtp_server_sasl *sasl; /* the AUTH in progress, or NULL */

  int have_mail;            /* MAIL accepted: a transaction is open */
  size_t num_rcpt_attempts; /* RCPT commands in this transaction */
  size_t rcpts_cap;
  struct smtp_envelope env;
  struct smtp_rcpt pending; /* the RCPT awaiting its verdict */

  struct smtp_server_msg msg;
  struct buf body;
  struct buf body_prefix;  /* the host's, put on top of the next body */
  size_t body_prefix_used; /* octets of it at the start of body */
  int bdat_active;         /* BDAT chunks taken, LAST not yet seen */
  size_t chunk_size;       /* the current BDAT chunk */
  size_t chunk_left;       /* octets of it still to read */
  int chunk_last;          /* it was BDAT ... LAST */
  const char *chunk_err;   /* reply owed after reading a refused chunk */
};

/* ---- replies and events ---------------------------------------------- */

static void smtp_server_count_reply(struct smtp_server *s, char code0) {
  if (s->stats != NULL && code0 >= '2' && code0 <= '5') {
    METRIC_ADD(s->stats->replies[code0 - '0'], 1);
  }
}

/* Appends raw octets to the output; a closed session sends nothing more. */
static void smtp_server_out(struct smtp_server *s, const char *p, size_t n) {
  if (s->state == SMTP_SERVER_STATE_CLOSED) {
    return;
  }
  if (buf_append(&s->out, p, n) != 0) {
    s->failed = 1;
  }
}

/* Queues one complete reply line (it ends in CRLF). */
static void smtp_server_reply(struct smtp_server *s, const char *line) {
  smtp_server_count_reply(s, line[0]);
  smtp_server_out(s, line, strlen(line));
}

/* Queues a formatted reply line; the format ends in CRLF. Overlong text is
 * cut, keeping the CRLF. */
static void smtp_server_replyf(struct smtp_server *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void smtp_server_replyf(struct smtp_server *s, const char *fmt, ...) {
  char line[SMTP_SERVER_MAX_REPLY];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  if (n < 0) {
    s->failed = 1;
    return;
  }
  if ((size_t)n >= sizeof(line)) {
    n = sizeof(line) - 1;
    line[n - 2] = '\r';
    line[n - 1] = '\n';
  }
  smtp_server_count_reply(s, line[0]);
  smtp_server_out(s, line, (size_t)n);
}

static void smtp_server_close(struct smtp_server *s) {
  s->state = SMTP_SERVER_STATE_CLOSED;
}

/* A protocol error by the peer: reply, count, and close with 421 once the
 * peer has made too many (Postfix smtpd_hard_error_limit). */
static void smtp_server_error(struct smtp_server *s, const char *line) {
  smtp_server_reply(s, line);
  s->errors++;
  if (s->lim.max_errors != 0 && s->errors >= s->lim.max_errors &&
      s->state != SMTP_SERVER_STATE_CLOSED) {
    smtp_server_replyf(s, "421 4.7.0 %s Error: too many errors\r\n",
                       s->hostname);
    smtp_server_close(s);
  }
}

static void smtp_server_push(struct smtp_server *s, enum smtp_server_event e) {
  assert(s->ev_count < SMTP_SERVER_MAX_EVENTS);
  s->events[(s->ev_head + s->ev_count) % SMTP_SERVER_MAX_EVENTS] = e;
  s->ev_count++;
}

/* The host owes a verdict; input stays buffered until it is given. */
static void smtp_server_owe(struct smtp_server *s, enum smtp_server_verdict v,
                            enum smtp_server_event e) {
  s->verdict = v;
  smtp_server_push(s, e);
}

static char *smtp_server_strndup(struct smtp_server *s, const uint8_t *p,
                                 size_t n) {
  char *r = malloc(n + 1);
  if (r == NULL) {
    s->failed = 1;
    return NULL;
  }
  memcpy(r, p, n);
  r[n] = '\0';
  return r;
}

/* ---- input ----------------------------------------------------------- */

static size_t smtp_server_avail(const struct smtp_server *s) {
  return s->in.len - s->in_off;
}

/* NULL (with nothing available) before the first feed: NULL + 0 is
 * undefined in C. */
static const uint8_t *smtp_server_input(const struct smtp_server *s) {
  return s->in.data != NULL ? s->in.data + s->in_off : NULL;
}

/* Drops n processed octets. The memory stays put, so pointers into the
 * consumed part remain valid until the next feed. */
static void smtp_server_consume(struct smtp_server *s, size_t n) {
  s->in_off += n;
  if (s->in_off == s->in.len) {
    s->in_off = 0;
    s->in.len = 0;
  }
}

/* ---- transaction ----------------------------------------------------- */

static void smtp_server_rcpt_clear(struct smtp_rcpt *r) {
  free(r->addr);
  free(r->orcpt);
  memset(r, 0, sizeof(*r));
}

/* Frees the envelope's strings; the recipient array is kept for reuse. */
static void smtp_server_envelope_clear(struct smtp_server *s) {
  struct smtp_envelope *e = &s->env;
  free(e->sender);
  free(e->envid);
  free(e->auth);
  for (size_t i = 0; i < e->num_rcpts; i++) {
    smtp_server_rcpt_clear(&e->rcpts[i]);
  }
  struct smtp_rcpt *rcpts = e->rcpts;
  memset(e, 0, sizeof(*e));
  e->rcpts = rcpts;
  smtp_server_rcpt_clear(&s->pending);
}

/* Ends the transaction after its message (accepted or refused). */
static void smtp_server_txn_end(struct smtp_server *s) {
  smtp_server_envelope_clear(s);
  s->have_mail = 0;
  s->num_rcpt_attempts = 0;
  s->bdat_active = 0;
  buf_free(&s->body);
  buf_reset(&s->body_prefix);
  s->body_prefix_used = 0;
}

/* Aborts the transaction (RSET, HELO/EHLO): the host hears EV_RSET if a
 * MAIL had been accepted. */
static void smtp_server_txn_abort(struct smtp_server *s) {
  if (s->have_mail) {
    smtp_server_push(s, SMTP_SERVER_EV_RSET);
  }
  smtp_server_txn_end(s);
}

/* Moves the accepted pending recipient into the envelope. */
static void smtp_server_rcpt_commit(struct smtp_server *s) {
  struct smtp_envelope *e = &s->env;
  if (e->num_rcpts == s->rcpts_cap) {
    size_t cap = s->rcpts_cap ? s->rcpts_cap * 2 : 8;
    struct smtp_rcpt *r = realloc(e->rcpts, cap * sizeof(*r));
    if (r == NULL) {
      s->failed = 1;
      smtp_server_rcpt_clear(&s->pending);
      return;
    }
    e->rcpts = r;
    s->rcpts_cap = cap;
  }
  e->rcpts[e->num_rcpts++] = s->pending;
  memset(&s->pending, 0, sizeof(s->pending));
}

/* ---- MAIL / RCPT parameters (RFC 5321 §4.1.2 esmtp-param) ------------ */

typedef const char *(*smtp_server_param_fn)(struct smtp_server *s,
                                            const uint8_t *val, size_t len,
                                            int has_val);

static const char smtp_server_bad_param[] =
    "501 5.5.4 Error: bad parameter syntax\r\n";

/* Case-insensitive match of a whole keyword or value. */
static int smtp_server_word_is(const uint8_t *p, size_t n, const char *w) {
  return n == strlen(w) && strncasecmp((const char *)p, w, n) == 0;
}

/* RFC 1870 SIZE=number: checked against the limit before any data. */
static const char *smtp_server_param_size(struct smtp_server *s,
                                          const uint8_t *val, size_t len,
                                          int has_val) {
  size_t v = 0;
  if (!has_val || len > 20) {
    return smtp_server_bad_param;
  }
  for (size_t i = 0; i < len; i++) {
    if (val[i] < '0' || val[i] > '9') {
      return smtp_server_bad_param;
    }
    size_t d = (size_t)(val[i] - '0');
    if (v > (SIZE_MAX - d) / 10) {
      v = SIZE_MAX; /* saturate: it is over any limit anyway */
      break;
    }
    v = v * 10 + d;
  }
  if (v > s->lim.max_message_size) {
    return "552 5.3.4 Error: message size exceeds fixed limit\r\n";
  }
  s->env.size_hint = v;
  return NULL;
}

/* RFC 6152 BODY=7BIT / 8BITMIME; BINARYMIME (RFC 3030) is not offered. */
static const char *smtp_server_param_body(struct smtp_server *s,
                                          const uint8_t *val, size_t len,
                                          int has_val) {
  if (smtp_server_word_is(val, len, "7BIT")) {
    s->env.body = SMTP_BODY_7BIT;
  } else if (smtp_server_word_is(val, len, "8BITMIME")) {
    s->env.body = SMTP_BODY_8BITMIME;
  } else if (smtp_server_word_is(val, len, "BINARYMIME")) {
    return "555 5.5.4 Error: BINARYMIME is not supported\r\n";
  } else {
    return "501 5.5.4 Error: bad BODY parameter\r\n";
  }
  return NULL;
}

/* RFC 6531 §3.4: SMTPUTF8 takes no value. */
static const char *smtp_server_param_smtputf8(struct smtp_server *s,
                                              const uint8_t *val, size_t len,
                                              int has_val) {
  if (has_val) {
    return smtp_server_bad_param;
  }
  s->env.smtputf8 = 1;
  return NULL;
}

/* RFC 8689 §4: REQUIRETLS takes no value and only makes sense inside
 * TLS (it is not advertised outside, so a client sending it there has
 * TLS stripped underneath it: refuse rather than accept a promise the
 * session itself already broke). */
static const char *smtp_server_param_requiretls(struct smtp_server *s,
                                                const uint8_t *val, size_t len,
                                                int has_val) {
  (void)val;
  (void)len;
  if (has_val) {
    return smtp_server_bad_param;
  }
  if (!s->tls) {
    return "530 5.7.10 Error: REQUIRETLS needs a TLS session\r\n";
  }
  s->env.requiretls = 1;
  return NULL;
}

/* RFC 3461 §4.3 RET=FULL / HDRS. */
static const char *smtp_server_param_ret(struct smtp_server *s,
                                         const uint8_t *val, size_t len,
                                         int has_val) {
  if (smtp_server_word_is(val, len, "FULL")) {
    s->env.ret = SMTP_RET_FULL;
  } else if (smtp_server_word_is(val, len, "HDRS")) {
    s->env.ret = SMTP_RET_HDRS;
  } else {
    return "501 5.5.4 Error: bad RET parameter\r\n";
  }
  return NULL;
}

/* RFC 3461 §4.4 ENVID=xtext, at most 100 characters. */
static const char *smtp_server_param_envid(struct smtp_server *s,
                                           const uint8_t *val, size_t len,
                                           int has_val) {
  char *d;
  if (!has_val || len > SMTP_SERVER_MAX_ENVID) {
    return "501 5.5.4 Error: bad ENVID parameter\r\n";
  }
  if ((d = malloc(len + 1)) == NULL) {
    s->failed = 1;
    return "451 4.3.0 Error: out of memory\r\n";
  }
  if (smtp_addr_xtext_decode(d, len + 1, val, len) < 0) {
    free(d);
    return "501 5.5.4 Error: bad ENVID parameter\r\n";
  }
  s->env.envid = d;
  return NULL;
}

/* RFC 4954 §5 AUTH=xtext / "<>". Without SMTP_EXT_AUTH it is ignored, as
 * it always was. With it the value is checked; the mailbox is kept only
 * from an authenticated client: any other must be taken as AUTH=<>. */
static const char *smtp_server_param_auth(struct smtp_server *s,
                                          const uint8_t *val, size_t len,
                                          int has_val) {
  static const char bad[] = "501 5.5.4 Error: bad AUTH parameter\r\n";
  if (!has_val) {
    return smtp_server_bad_param;
  }
  if (!(s->ext & SMTP_EXT_AUTH)) {
    return NULL;
  }
  if (len > SMTP_SERVER_MAX_AUTH_PARAM) {
    return bad;
  }
  char *d = malloc(len + 1);
  if (d == NULL) {
    s->failed = 1;
    return "451 4.3.0 Error: out of memory\r\n";
  }
  if (smtp_server_word_is(val, len, "<>")) {
    d[0] = '\0';
  } else if (smtp_addr_xtext_decode(d, len + 1, val, len) < 0) {
    free(d);
    return bad;
  }
  if (!s->authenticated) {
    d[0] = '\0'; /* §5: as if AUTH=<> */
  }
  s->env.auth = d;
  return NULL;
}

/* RFC 3461 §4.1 NOTIFY=NEVER or a list of SUCCESS, FAILURE, DELAY. */
static const char *smtp_server_param_notify(struct smtp_server *s,
                                            const uint8_t *val, size_t len,
                                            int has_val) {
  static const char bad[] = "501 5.5.4 Error: bad NOTIFY parameter\r\n";
  static const struct {
    const char *name;
    unsigned bit;
  } words[] = {{"NEVER", SMTP_NOTIFY_NEVER},
               {"SUCCESS", SMTP_NOTIFY_SUCCESS},
               {"FAILURE", SMTP_NOTIFY_FAILURE},
               {"DELAY", SMTP_NOTIFY_DELAY}};
  unsigned bits = 0;
  size_t i = 0;
  while (i <= len) {
    const uint8_t *comma = memchr(val + i, ',', len - i);
    size_t n = comma ? (size_t)(comma - (val + i)) : len - i;
    size_t w = 0;
    while (w < 4 && !smtp_server_word_is(val + i, n, words[w].name)) {
      w++;
    }
    if (w == 4) {
      return bad;
    }
    bits |= words[w].bit;
    i += n + 1;
  }
  if ((bits & SMTP_NOTIFY_NEVER) && bits != SMTP_NOTIFY_NEVER) {
    return bad; /* NEVER must stand alone */
  }
  s->pending.notify = bits;
  return NULL;
}

/* RFC 3461 §4.2 ORCPT=addr-type ";" xtext, at most 500 characters; kept
 * as "addr-type;decoded". */
static const char *smtp_server_param_orcpt(struct smtp_server *s,
                                           const uint8_t *val, size_t len,
                                           int has_val) {
  static const char bad[] = "501 5.5.4 Error: bad ORCPT parameter\r\n";
  const uint8_t *semi = memchr(val, ';', len);
  if (semi == NULL || semi == val || len > SMTP_SERVER_MAX_ORCPT) {
    return bad;
  }
  size_t type_len = (size_t)(semi - val);
  for (size_t i = 0; i < type_len; i++) {
    uint8_t c = val[i];
    if (!(c == '-' || (c >= '0' && c <= '9') ||
          ((c | 0x20) >= 'a' && (c | 0x20) <= 'z'))) {
      return bad;
    }
  }
  char *d = malloc(len + 1);
  if (d == NULL) {
    s->failed = 1;
    return "451 4.3.0 Error: out of memory\r\n";
  }
  memcpy(d, val, type_len + 1);
  if (smtp_addr_xtext_decode(d + type_len + 1, len - type_len, semi + 1,
                             len - type_len - 1) <= 0) {
    free(d);
    return bad;
  }
  s->pending.orcpt = d;
  return NULL;
}

struct smtp_server_param {
  const char *name;
  unsigned ext; /* extension that must be advertised, or 0 */
  int rcpt;     /* 1: RCPT parameter, 0: MAIL parameter */
  smtp_server_param_fn fn;
};

static const struct smtp_server_param smtp_server_params[] = {
    {"SIZE", SMTP_EXT_SIZE, 0, smtp_server_param_size},
    {"BODY", SMTP_EXT_8BITMIME, 0, smtp_server_param_body},
    {"SMTPUTF8", SMTP_EXT_SMTPUTF8, 0, smtp_server_param_smtputf8},
    {"RET", SMTP_EXT_DSN, 0, smtp_server_param_ret},
    {"ENVID", SMTP_EXT_DSN, 0, smtp_server_param_envid},
    {"AUTH", 0, 0, smtp_server_param_auth},
    {"REQUIRETLS", SMTP_EXT_REQUIRETLS, 0, smtp_server_param_requiretls},
    {"NOTIFY", SMTP_EXT_DSN, 1, smtp_server_param_notify},
    {"ORCPT", SMTP_EXT_DSN, 1, smtp_server_param_orcpt},
};
#define SMTP_SERVER_NUM_PARAMS                                                 \
  (sizeof(smtp_server_params) / sizeof(smtp_server_params[0]))

/* One keyword[=value]: known, offered (RFC 5321 §4.1.4: only after EHLO
 * and for advertised extensions), not repeated. */
static const char *smtp_server_param(struct smtp_server *s, int rcpt,
                                     unsigned *seen, const uint8_t *kw,
                                     size_t kw_len, const uint8_t *val,
                                     size_t val_len, int has_val) {
  size_t i = 0;
  while (i < SMTP_SERVER_NUM_PARAMS &&
         !(smtp_server_params[i].rcpt == rcpt &&
           smtp_server_word_is(kw, kw_len, smtp_server_params[i].name))) {
    i++;
  }
  if (i == SMTP_SERVER_NUM_PARAMS || !s->esmtp ||
      (smtp_server_params[i].ext & ~s->ext) != 0) {
    return "555 5.5.4 Error: unsupported parameter\r\n";
  }
  if (*seen & (1u << i)) {
    return "501 5.5.4 Error: duplicate parameter\r\n";
  }
  if (has_val && val_len == 0) {
    return smtp_server_bad_param;
  }
  *seen |= 1u << i;
  return smtp_server_params[i].fn(s, val, val_len, has_val);
}

/* *( SP esmtp-param ) after the path. Returns an error reply or NULL. */
static const char *smtp_server_parse_params(struct smtp_server *s, int rcpt,
                                            const uint8_t *p, size_t n) {
  unsigned seen = 0;
  size_t i = 0;
  while (i < n) {
    if (p[i] != ' ') {
      return smtp_server_bad_param;
    }
    while (i < n && p[i] == ' ') {
      i++;
    }
    size_t kw = i;
    while (i < n && p[i] != ' ' && p[i] != '=') {
      i++;
    }
    size_t kw_len = i - kw;
    int has_val = i < n && p[i] == '=';
    size_t val = i + (size_t)has_val;
    for (i = val; i < n && p[i] != ' '; i++) {
    }
    const char *err = smtp_server_param(s, rcpt, &seen, p + kw, kw_len, p + val,
                                        i - val, has_val);
    if (err != NULL) {
      return err;
    }
  }
  return NULL;
}

/* ---- commands -------------------------------------------------------- */

/* Checks an address the grammar accepted against our local rules. */
static const char *smtp_server_addr_policy(const struct smtp_addr_path *a,
                                           int utf8_ok) {
  if (a->has_utf8 && !utf8_ok) {
    /* RFC 6531 §3.5 */
    return "553 5.6.7 Error: non-ASCII address needs SMTPUTF8\r\n";
  }
  if (a->shell_meta) {
    return "553 5.1.3 Error: address contains characters we do not "
           "accept\r\n";
  }
  return NULL;
}

/* Skips a case-insensitive "FROM:" / "TO:" and any spaces after it (a
 * common client deviation we tolerate). Returns 0 if absent. */
static int smtp_server_skip_prefix(const uint8_t **p, size_t *n,
                                   const char *prefix) {
  size_t k = strlen(prefix);
  if (*n < k || strncasecmp((const char *)*p, prefix, k) != 0) {
    return 0;
  }
  *p += k;
  *n -= k;
  while (*n > 0 && **p == ' ') {
    (*p)++;
    (*n)--;
  }
  return 1;
}

/* Parses the path at p; the path must end the argument or precede SP. */
static enum smtp_addr_status smtp_server_path(struct smtp_addr_path *a,
                                              size_t *used, const uint8_t *p,
                                              size_t n) {
  enum smtp_addr_status st = smtp_addr_parse_path(a, used, p, n);
  if (st == SMTP_ADDR_OK && *used < n && p[*used] != ' ') {
    st = SMTP_ADDR_SYNTAX;
  }
  return st;
}

static void smtp_server_cmd_helo_common(struct smtp_server *s,
                                        const uint8_t *arg, size_t n,
                                        int esmtp);

static void smtp_server_cmd_helo(struct smtp_server *s, const uint8_t *arg,
                                 size_t n) {
  smtp_server_cmd_helo_common(s, arg, n, 0);
}

static void smtp_server_cmd_ehlo(struct smtp_server *s, const uint8_t *arg,
                                 size_t n) {
  smtp_server_cmd_helo_common(s, arg, n, 1);
}

/* RFC 5321 §4.1.1.2 MAIL FROM:<reverse-path> [SP Mail-parameters]:
 * check, parse into the envelope, then ask the host. */
static void smtp_server_cmd_mail(struct smtp_server *s, const uint8_t *arg,
                                 size_t n) {
  struct smtp_addr_path a;
  size_t used;
  if (s->helo == NULL) {
    smtp_server_error(s, "503 5.5.1 Error: send HELO/EHLO first\r\n");
    return;
  }
  if (s->have_mail) {
    smtp_server_error(s, "503 5.5.1 Error: nested MAIL command\r\n");
    return;
  }
  if (s->auth_required && !s->authenticated) {
    smtp_server_error(s, "530 5.7.0 Authentication required\r\n");
    return;
  }
  if (!smtp_server_skip_prefix(&arg, &n, "FROM:")) {
    smtp_server_error(s, "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
    return;
  }
  enum smtp_addr_status st = smtp_server_path(&a, &used, arg, n);
  if (st == SMTP_ADDR_SYNTAX || (st == SMTP_ADDR_OK && a.postmaster)) {
    smtp_server_error(s, "501 5.1.7 Error: bad sender address syntax\r\n");
    return;
  }
  if (st == SMTP_ADDR_TOO_LONG) {
    smtp_server_error(s, "553 5.1.3 Error: sender address too long\r\n");
    return;
  }
  smtp_server_envelope_clear(s);
  const char *err = smtp_server_parse_params(s, 0, arg + used, n - used);
  if (err == NULL) {
    err = smtp_server_addr_policy(&a, s->env.smtputf8);
  }
  if (err == NULL &&
      (s->env.sender = smtp_server_strndup(s, a.mailbox, a.mailbox_len))) {
    smtp_server_owe(s, SMTP_SERVER_VERDICT_MAIL, SMTP_SERVER_EV_MAIL);
    return;
  }
  smtp_server_envelope_clear(s);
  if (err != NULL) {
    smtp_server_error(s, err);
  }
}

/* Refuses an RCPT path before its parameters are looked at. */
static const char *smtp_server_rcpt_path_error(enum smtp_addr_status st,
                                               const struct smtp_addr_path *a) {
  if (st == SMTP_ADDR_TOO_LONG) {
    return "553 5.1.3 Error: recipient address too long\r\n";
  }
  if (st != SMTP_ADDR_OK || a->null_path) {
    return "501 5.1.3 Error: bad recipient address syntax\r\n";
  }
  return NULL;
}

/* RFC 5321 §4.1.1.3 RCPT TO:<forward-path> [SP Rcpt-parameters]. */
static void smtp_server_cmd_rcpt(struct smtp_server *s, const uint8_t *arg,
                                 size_t n) {
  struct smtp_addr_path a;
  size_t used = 0;
  if (!s->have_mail) {
    smtp_server_error(s, "503 5.5.1 Error: need MAIL command\r\n");
    return;
  }
  if (!smtp_server_skip_prefix(&arg, &n, "TO:")) {
    smtp_server_error(s, "501 5.5.4 Syntax: RCPT TO:<address>\r\n");
    return;
  }
  if (s->env.num_rcpts >= s->lim.max_recipients) {
    /* RFC 5321 §4.5.3.1.10: 452, and the client sends the rest later;
     * not a protocol error. */
    smtp_server_reply(s, "452 4.5.3 Error: too many recipients\r\n");
    return;
  }
  s->num_rcpt_attempts++;
  const char *err =
      smtp_server_rcpt_path_error(smtp_server_path(&a, &used, arg, n), &a);
  if (err == NULL) {
    smtp_server_rcpt_clear(&s->pending);
    err = smtp_server_parse_params(s, 1, arg + used, n - used);
  }
  if (err == NULL) {
    err = smtp_server_addr_policy(&a, s->env.smtputf8);
  }
  if (err == NULL &&
      (s->pending.addr = smtp_server_strndup(s, a.mailbox, a.mailbox_len))) {
    s->pending.source_route = a.source_route;
    smtp_server_owe(s, SMTP_SERVER_VERDICT_RCPT, SMTP_SERVER_EV_RCPT);
    return;
  }
  smtp_server_rcpt_clear(&s->pending);
  if (err != NULL) {
    smtp_server_error(s, err);
  }
}

/* DATA and BDAT both need a transaction with a recipient (RFC 5321
 * §4.1.1.4; RFC 3030 §2). Returns the refusal or NULL. */
static const char *smtp_server_data_check(const struct smtp_server *s) {
  if (!s->have_mail) {
    return "503 5.5.1 Error: need MAIL command\r\n";
  }
  if (s->env.num_rcpts == 0) {
    return s->num_rcpt_attempts ? "554 5.5.1 Error: no valid recipients\r\n"
                                : "503 5.5.1 Error: need RCPT command\r\n";
  }
  return NULL;
}

/* Starts receiving a message body. */
static void smtp_server_msg_begin(struct smtp_server *s) {
  memset(&s->msg, 0, sizeof(s->msg));
  s->msg.in_header = 1;
  s->msg.prev_crlf = 1; /* the DATA command's CRLF precedes line one */
  buf_reset(&s->body);
  size_t hint = s->env.size_hint;
  if (hint > 0) {
    /* SIZE is the client's word: reserve, but not unboundedly. */
    (void)buf_reserve(&s->body,
                      s->body_prefix.len + (hint < SMTP_SERVER_BODY_PREALLOC
                                                ? hint
                                                : SMTP_SERVER_BODY_PREALLOC));
  }
  s->body_prefix_used = 0;
  if (s->body_prefix.len > 0) {
    if (buf_append(&s->body, s->body_prefix.data, s->body_prefix.len) != 0) {
      s->failed = 1;
      return;
    }
    s->body_prefix_used = s->body_prefix.len;
  }
}

static void smtp_server_cmd_data(struct smtp_server *s, const uint8_t *arg,
                                 size_t n) {
  if (s->bdat_active) {
    /* RFC 3030 §2: DATA and BDAT do not mix in one transaction. */
    smtp_server_error(s, "503 5.5.1 Error: DATA after BDAT\r\n");
    return;
  }
  const char *err = smtp_server_data_check(s);
  if (err != NULL) {
    smtp_server_error(s, err);
    return;
  }
  smtp_server_msg_begin(s);
  s->state = SMTP_SERVER_STATE_DATA;
  smtp_server_reply(s, "354 End data with <CR><LF>.<CR><LF>\r\n");
}

/* BDAT chunk-size [SP "LAST"] (RFC 3030 §2). Returns 0 on bad syntax. */
static int smtp_server_bdat_args(const uint8_t *arg, size_t n, size_t *out_size,
                                 int *out_last) {
  size_t i = 0, v = 0;
  for (; i < n && arg[i] >= '0' && arg[i] <= '9'; i++) {
    size_t d = (size_t)(arg[i] - '0');
    if (v > (SIZE_MAX - d) / 10) {
      return 0;
    }
    v = v * 10 + d;
  }
  if (i == 0) {
    return 0;
  }
  *out_size = v;
  *out_last = 0;
  if (i == n) {
    return 1;
  }
  *out_last = 1;
  return arg[i] == ' ' && smtp_server_word_is(arg + i + 1, n - i - 1, "LAST");
}

/* A BDAT chunk is read even when refused, so its octets never pass for
 * commands; the refusal is sent after it. */
static void smtp_server_cmd_bdat(struct smtp_server *s, const uint8_t *arg,
                                 size_t n) {
  size_t size;
  int last;
  if (!smtp_server_bdat_args(arg, n, &size, &last)) {
    smtp_server_error(s, "501 5.5.4 Syntax: BDAT count [LAST]\r\n");
    return;
  }
  s->chunk_err = smtp_server_data_check(s);
  if (s->chunk_err == NULL && !s->bdat_active) {
    smtp_server_msg_begin(s);
    s->bdat_active = 1;
  }
  s->chunk_size = size;
  s->chunk_left = size;
  s->chunk_last = last;
  s->state = SMTP_SERVER_STATE_CHUNK;
}

static void smtp_server_cmd_rset(struct smtp_server *s, const uint8_t *arg,
                                 size_t n) {
  smtp_server_txn_abort(s);
  smtp_server_reply(s, "250 2.0.0 Ok\r\n");
}

static void smtp_server_cmd_noop(struct smtp_server *s, const uint8_t *arg,
                                 size_t n) {
  smtp_server_reply(s, "250 2.0.0 Ok\r\n");
}

static void smtp_server_cmd_quit(struct smtp_server *s, const uint8_t *arg,
                                 size_t n) {
  smtp_server_reply(s, "221 2.0.0 Bye\r\n");
  smtp_server_close(s);
}

/* RFC 5321 §3.5.3: 252 when we will not verify but will take mail. */
static void smtp_server_cmd_vrfy(struct smtp_server *s, const uint8_t *arg,
                                 size_t n) {
  smtp_server_reply(s, "252 2.5.0 Cannot VRFY user, but will accept message "
                       "and attempt delivery\r\n");
}

static void smtp_server_cmd_help(struct smtp_server *s, const uint8_t *arg,
                                 size_t n) {
  smtp_server_reply(s, "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT "
                       "RSET NOOP QUIT VRFY HELP\r\n");
}

/* ---- STARTTLS (RFC 3207) ------------------------------------------- */

/* 220, then nothing the client sent in clear after STARTTLS may run: what
 * is buffered is discarded now, what is fed before the handshake is done
 * is discarded by feed() (CVE-2011-0411). Ends a pipelined group without
 * the 554 of EHLO: there is nothing left to answer. */
static void smtp_server_cmd_starttls(struct smtp_server *s, const uint8_t *arg,
                                     size_t n) {
  if (s->tls) {
    smtp_server_error(s, "503 5.5.1 Error: TLS already active\r\n");
    return;
  }
  if (s->have_mail) {
    smtp_server_error(s, "503 5.5.1 Error: MAIL transaction in progress\r\n");
    return;
  }
  smtp_server_reply(s, "220 2.0.0 Ready to start TLS\r\n");
  size_t pipelined = smtp_server_avail(s);
  s->discarded += pipelined;
  smtp_server_consume(s, pipelined);
  s->state = SMTP_SERVER_STATE_TLS_WAIT;
  smtp_server_push(s, SMTP_SERVER_EV_STARTTLS);
}

/* ---- AUTH (RFC 4954, PLAIN RFC 4616, LOGIN) -------------------------- */

/* Wipes consumed input octets that carried a secret. They stay in place
 * until the next feed; p points into s->in. */
static void smtp_server_wipe_input(struct smtp_server *s, const uint8_t *p,
                                   size_t n) {
  assert(p >= s->in.data && p + n <= s->in.data + s->in.cap);
  explicit_bzero(s->in.data + (p - s->in.data), n);
}

static void smtp_server_sasl_free(struct smtp_server *s) {
  if (s->sasl != NULL) {
    explicit_bzero(s->sasl, sizeof(*s->sasl));
    free(s->sasl);
    s->sasl = NULL;
  }
}

/* Ends the exchange without asking the host: a protocol error. */
static void smtp_server_sasl_fail(struct smtp_server *s, const char *reply) {
  smtp_server_sasl_free(s);
  s->state = SMTP_SERVER_STATE_COMMAND;
  smtp_server_error(s, reply);
}

/* Value of one RFC 4648 §4 base64 digit, or -1. */
static int smtp_server_b64_digit(uint8_t c) {
  if (c >= 'A' && c <= 'Z') {
    return c - 'A';
  }
  if (c >= 'a' && c <= 'z') {
    return c - 'a' + 26;
  }
  if (c >= '0' && c <= '9') {
    return c - '0' + 52;
  }
  return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Strict RFC 4648 §4 base64, as RFC 4954 §4 sends it: whole quanta, "="
 * only as the last one or two octets, unused bits zero, no white space.
 * Writes at most out_cap octets. Returns the decoded length, -1 if `in` is
 * not base64, -2 if it decodes to more than out_cap. */
static long smtp_server_b64_decode(uint8_t *out, size_t out_cap,
                                   const uint8_t *in, size_t n) {
  if (n % 4 != 0) {
    return -1;
  }
  size_t pad = n > 0 && in[n - 1] == '=' ? 1 + (in[n - 2] == '=') : 0;
  size_t len = n / 4 * 3 - pad, k = 0;
  uint32_t v = 0;
  for (size_t i = 0; i < n; i += 4) {
    v = 0;
    for (size_t j = i; j < i + 4; j++) {
      int d = j >= n - pad ? 0 : smtp_server_b64_digit(in[j]);
      if (d < 0) {
        return -1;
      }
      v = v << 6 | (uint32_t)d;
    }
    for (int shift = 16; shift >= 0 && k < len; shift -= 8, k++) {
      if (k < out_cap) {
        out[k] = (uint8_t)(v >> shift);
      }
    }
  }
  /* The bits after the data in the last quantum must be zero. */
  if ((pad == 1 && (v & 0xff) != 0) || (pad == 2 && (v & 0xffff) != 0)) {
    return -1;
  }
  return len > out_cap ? -2 : (long)len;
}

static const char smtp_server_auth_invalid[] =
    "535 5.7.8 Authentication credentials invalid\r\n";

/* Takes the authcid: 1..255 octets, no controls, well-formed UTF-8
 * (RFC 4616 §2 is UTF-8; the host logs it). Returns a refusal or NULL. */
static const char *smtp_server_sasl_user(struct smtp_server *s,
                                         const uint8_t *p, size_t n) {
  if (n == 0 || n > SMTP_SERVER_MAX_AUTHCID) {
    return smtp_server_auth_invalid;
  }
  for (size_t i = 0; i < n;) {
    size_t k = p[i] < 0x80 ? 1 : smtp_addr_utf8_len(p + i, n - i);
    if (k == 0 || p[i] < 0x20 || p[i] == 0x7f) {
      return smtp_server_auth_invalid;
    }
    i += k;
  }
  memcpy(s->sasl->user, p, n);
  s->sasl->user[n] = '\0';
  return NULL;
}

/* Takes the password (at most 1024 octets, no NUL) and asks the host. */
static const char *smtp_server_sasl_pass(struct smtp_server *s,
                                         const uint8_t *p, size_t n) {
  if (n > SMTP_SERVER_MAX_PASSWORD || memchr(p, '\0', n) != NULL) {
    return smtp_server_auth_invalid;
  }
  memcpy(s->sasl->pass, p, n);
  s->sasl->pass[n] = '\0';
  s->state = SMTP_SERVER_STATE_COMMAND;
  smtp_server_owe(s, SMTP_SERVER_VERDICT_AUTH, SMTP_SERVER_EV_AUTH);
  return NULL;
}

/* RFC 4616 §2 message = [authzid] NUL authcid NUL passwd. We act for no
 * one else: an authzid must be empty or the authcid itself. */
static const char *smtp_server_sasl_plain(struct smtp_server *s,
                                          const uint8_t *p, size_t n) {
  const uint8_t *nul1 = memchr(p, '\0', n);
  const uint8_t *nul2 =
      nul1 ? memchr(nul1 + 1, '\0', n - (size_t)(nul1 + 1 - p)) : NULL;
  if (nul2 == NULL || memchr(nul2 + 1, '\0', n - (size_t)(nul2 + 1 - p))) {
    return "501 5.5.2 Cannot decode response\r\n";
  }
  size_t zid_len = (size_t)(nul1 - p);
  size_t cid_len = (size_t)(nul2 - nul1 - 1);
  const char *err = smtp_server_sasl_user(s, nul1 + 1, cid_len);
  if (err == NULL && zid_len > 0 &&
      (zid_len != cid_len || memcmp(p, nul1 + 1, cid_len) != 0)) {
    err = smtp_server_auth_invalid;
  }
  if (err == NULL) {
    err = smtp_server_sasl_pass(s, nul2 + 1, n - (size_t)(nul2 + 1 - p));
  }
  return err;
}

/* One decoded response, by the step the exchange is at. */
static const char *smtp_server_sasl_step(struct smtp_server *s,
                                         const uint8_t *p, size_t n) {
  const char *err;
  switch (s->sasl->step) {
  case SMTP_SERVER_SASL_PLAIN:
    return smtp_server_sasl_plain(s, p, n);
  case SMTP_SERVER_SASL_LOGIN_USER:
    if ((err = smtp_server_sasl_user(s, p, n)) == NULL) {
      s->sasl->step = SMTP_SERVER_SASL_LOGIN_PASS;
      smtp_server_reply(s, "334 UGFzc3dvcmQ6\r\n"); /* "Password:" */
    }
    return err;
  case SMTP_SERVER_SASL_LOGIN_PASS:
    return smtp_server_sasl_pass(s, p, n);
  }
  return NULL;
}

/* One client response, base64 (RFC 4954 §4): "*" cancels; an initial
 * response may be "=" for an empty one. Decodes into the SASL state,
 * which is wiped after use. */
static void smtp_server_sasl_response(struct smtp_server *s, const uint8_t *p,
                                      size_t n, int initial) {
  struct smtp_server_sasl *a = s->sasl;
  if (!initial && n == 1 && p[0] == '*') {
    smtp_server_sasl_fail(s, "501 5.0.0 Authentication canceled\r\n");
    return;
  }
  if (initial && n == 1 && p[0] == '=') {
    n = 0;
  }
  long len = smtp_server_b64_decode(a->dec, sizeof(a->dec), p, n);
  const char *err;
  if (len == -1) {
    err = "501 5.5.2 Cannot decode response\r\n"; /* RFC 4954 §4 */
  } else if (len == -2) {
    err = smtp_server_auth_invalid; /* longer than any we accept */
  } else {
    err = smtp_server_sasl_step(s, a->dec, (size_t)len);
  }
  explicit_bzero(a->dec, sizeof(a->dec));
  if (err != NULL) {
    smtp_server_sasl_fail(s, err);
  }
}

/* Why AUTH may not start now, or NULL (RFC 4954 §4; before TLS with
 * tls_required the command table's 530 came first). */
static const char *smtp_server_auth_check(const struct smtp_server *s) {
  if (!s->tls) {
    return "538 5.7.11 Encryption required for requested authentication "
           "mechanism\r\n";
  }
  if (s->authenticated) {
    return "503 5.5.1 Error: already authenticated\r\n";
  }
  if (s->have_mail) {
    return "503 5.5.1 Error: MAIL transaction in progress\r\n";
  }
  if (s->helo == NULL || !s->esmtp) {
    return "503 5.5.1 Error: send EHLO first\r\n";
  }
  return NULL;
}

/* Checks AUTH's arguments; sets *out_plain for PLAIN (else LOGIN) and
 * the initial response, if any. Returns a refusal or NULL. */
static const char *smtp_server_auth_args(const uint8_t *arg, size_t n,
                                         int *out_plain, const uint8_t **out_ir,
                                         size_t *out_ir_len) {
  const uint8_t *sp = memchr(arg, ' ', n);
  size_t mech_len = sp ? (size_t)(sp - arg) : n;
  *out_ir = sp ? sp + 1 : NULL;
  *out_ir_len = sp ? n - mech_len - 1 : 0;
  if (mech_len == 0 ||
      (sp && (*out_ir_len == 0 || memchr(*out_ir, ' ', *out_ir_len) != NULL))) {
    return "501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n";
  }
  *out_plain = smtp_server_word_is(arg, mech_len, "PLAIN");
  if (!*out_plain && !smtp_server_word_is(arg, mech_len, "LOGIN")) {
    return "504 5.5.4 Unrecognized authentication type\r\n";
  }
  return NULL;
}

/* RFC 4954 §4 AUTH mechanism [SP initial-response]: check, then start the
 * exchange: the initial response is taken at once, else a 334 challenge
 * (PLAIN: empty; LOGIN: "Username:"). The line is wiped after (the
 * command table's SECRET flag). */
static void smtp_server_cmd_auth(struct smtp_server *s, const uint8_t *arg,
                                 size_t n) {
  int plain = 0;
  const uint8_t *ir = NULL;
  size_t ir_len = 0;
  const char *err = smtp_server_auth_check(s);
  if (err == NULL) {
    err = smtp_server_auth_args(arg, n, &plain, &ir, &ir_len);
  }
  if (err != NULL) {
    smtp_server_error(s, err);
    return;
  }
  if ((s->sasl = calloc(1, sizeof(*s->sasl))) == NULL) {
    s->failed = 1;
    return;
  }
  s->sasl->step = plain ? SMTP_SERVER_SASL_PLAIN : SMTP_SERVER_SASL_LOGIN_USER;
  s->state = SMTP_SERVER_STATE_AUTH;
  if (ir != NULL) {
    smtp_server_sasl_response(s, ir, ir_len, 1);
  } else {
    smtp_server_reply(s, plain ? "334 \r\n" : "334 VXNlcm5hbWU6\r\n");
  }
}

/* Command flags. */
enum {
  SMTP_SERVER_CMD_ENDS_GROUP = 1u << 0, /* RFC 2920 §3.1: last in a group */
  SMTP_SERVER_CMD_NO_ARG = 1u << 1,     /* nothing may follow the verb */
  SMTP_SERVER_CMD_NEEDS_ARG = 1u << 2,  /* an argument is required */
  SMTP_SERVER_CMD_NOT_IMPL = 1u << 3,   /* known, answered 502 */
  SMTP_SERVER_CMD_PRE_TLS = 1u << 4,    /* allowed before TLS even with
                                           tls_required (RFC 3207 §4) */
  SMTP_SERVER_CMD_SECRET = 1u << 5,     /* the line may hold a password:
                                           wiped from the input once read */
};

typedef void (*smtp_server_cmd_fn)(struct smtp_server *s, const uint8_t *arg,
                                   size_t n);

struct smtp_server_cmd {
  const char *name;
  enum smtp_verb verb;
  unsigned flags;
  unsigned ext;       /* extension that must be enabled, or 0 */
  const char *syntax; /* reply for a missing or unexpected argument */
  smtp_server_cmd_fn fn;
};

static const struct smtp_server_cmd smtp_server_cmds[] = {
    {"EHLO", SMTP_VERB_EHLO,
     SMTP_SERVER_CMD_ENDS_GROUP | SMTP_SERVER_CMD_NEEDS_ARG |
         SMTP_SERVER_CMD_PRE_TLS,
     0, "501 5.5.4 Syntax: EHLO hostname\r\n", smtp_server_cmd_ehlo},
    {"HELO", SMTP_VERB_HELO,
     SMTP_SERVER_CMD_ENDS_GROUP | SMTP_SERVER_CMD_NEEDS_ARG, 0,
     "501 5.5.4 Syntax: HELO hostname\r\n", smtp_server_cmd_helo},
    {"MAIL", SMTP_VERB_MAIL, SMTP_SERVER_CMD_NEEDS_ARG, 0,
     "501 5.5.4 Syntax: MAIL FROM:<address>\r\n", smtp_server_cmd_mail},
    {"RCPT", SMTP_VERB_RCPT, SMTP_SERVER_CMD_NEEDS_ARG, 0,
     "501 5.5.4 Syntax: RCPT TO:<address>\r\n", smtp_server_cmd_rcpt},
    {"DATA", SMTP_VERB_DATA,
     SMTP_SERVER_CMD_ENDS_GROUP | SMTP_SERVER_CMD_NO_ARG, 0,
     "501 5.5.4 Syntax: DATA\r\n", smtp_server_cmd_data},
    /* BDAT passes the TLS gate so its chunk is still read, not run as
     * commands; without MAIL it fails 503 anyway. */
    {"BDAT", SMTP_VERB_BDAT,
     SMTP_SERVER_CMD_NEEDS_ARG | SMTP_SERVER_CMD_PRE_TLS, SMTP_EXT_CHUNKING,
     "501 5.5.4 Syntax: BDAT count [LAST]\r\n", smtp_server_cmd_bdat},
    {"RSET", SMTP_VERB_RSET, SMTP_SERVER_CMD_NO_ARG, 0,
     "501 5.5.4 Syntax: RSET\r\n", smtp_server_cmd_rset},
    {"NOOP", SMTP_VERB_NOOP, SMTP_SERVER_CMD_PRE_TLS, 0, NULL,
     smtp_server_cmd_noop},
    {"QUIT", SMTP_VERB_QUIT, SMTP_SERVER_CMD_NO_ARG | SMTP_SERVER_CMD_PRE_TLS,
     0, "501 5.5.4 Syntax: QUIT\r\n", smtp_server_cmd_quit},
    {"VRFY", SMTP_VERB_VRFY, SMTP_SERVER_CMD_NEEDS_ARG, 0,
     "501 5.5.4 Syntax: VRFY address\r\n", smtp_server_cmd_vrfy},
    {"HELP", SMTP_VERB_HELP, 0, 0, NULL, smtp_server_cmd_help},
    {"EXPN", SMTP_VERB_UNKNOWN, SMTP_SERVER_CMD_NOT_IMPL, 0, NULL, NULL},
    {"STARTTLS", SMTP_VERB_STARTTLS,
     SMTP_SERVER_CMD_NO_ARG | SMTP_SERVER_CMD_PRE_TLS, SMTP_EXT_STARTTLS,
     "501 5.5.4 Syntax: STARTTLS\r\n", smtp_server_cmd_starttls},
    {"AUTH", SMTP_VERB_AUTH, SMTP_SERVER_CMD_SECRET, SMTP_EXT_AUTH, NULL,
     smtp_server_cmd_auth},
    {"ETRN", SMTP_VERB_UNKNOWN, SMTP_SERVER_CMD_NOT_IMPL, 0, NULL, NULL},
    {"TURN", SMTP_VERB_UNKNOWN, SMTP_SERVER_CMD_NOT_IMPL, 0, NULL, NULL},
};
#define SMTP_SERVER_NUM_CMDS                                                   \
  (sizeof(smtp_server_cmds) / sizeof(smtp_server_cmds[0]))

/* EHLO keywords in the order advertised. */
static const struct {
  unsigned ext;
  const char *keyword;
} smtp_server_ehlo_keywords[] = {
    {SMTP_EXT_PIPELINING, "PIPELINING"},
    {SMTP_EXT_SIZE, "SIZE"},
    {SMTP_EXT_8BITMIME, "8BITMIME"},
    {SMTP_EXT_ENHANCEDSTATUSCODES, "ENHANCEDSTATUSCODES"},
    {SMTP_EXT_SMTPUTF8, "SMTPUTF8"},
    {SMTP_EXT_CHUNKING, "CHUNKING"},
    {SMTP_EXT_DSN, "DSN"},
    {SMTP_EXT_STARTTLS, "STARTTLS"},
    {SMTP_EXT_AUTH, "AUTH PLAIN LOGIN"},
    {SMTP_EXT_REQUIRETLS, "REQUIRETLS"},
};

/* Whether EHLO advertises an enabled extension now: STARTTLS only before
 * TLS (RFC 3207 §4.2), AUTH only inside it (RFC 4954 §4: no password in
 * clear). */
static int smtp_server_offers(const struct smtp_server *s, unsigned ext) {
  if (!(s->ext & ext)) {
    return 0;
  }
  if (ext == SMTP_EXT_STARTTLS) {
    return !s->tls;
  }
  return ext == SMTP_EXT_AUTH || ext == SMTP_EXT_REQUIRETLS ? s->tls : 1;
}

/* The multi-line 250 of RFC 5321 §4.1.1.1, counted as one reply. */
static void smtp_server_ehlo_reply(struct smtp_server *s) {
  size_t num =
      sizeof(smtp_server_ehlo_keywords) / sizeof(smtp_server_ehlo_keywords[0]);
  size_t last = num; /* index of the last advertised keyword */
  for (size_t i = 0; i < num; i++) {
    if (smtp_server_offers(s, smtp_server_ehlo_keywords[i].ext)) {
      last = i;
    }
  }
  char line[SMTP_SERVER_MAX_REPLY];
  int n = snprintf(line, sizeof(line), "250%c%.255s\r\n",
                   last == num ? ' ' : '-', s->hostname);
  smtp_server_out(s, line, (size_t)n);
  for (size_t i = 0; i < num; i++) {
    if (!smtp_server_offers(s, smtp_server_ehlo_keywords[i].ext)) {
      continue;
    }
    char sep = i == last ? ' ' : '-';
    if (smtp_server_ehlo_keywords[i].ext == SMTP_EXT_SIZE) {
      n = snprintf(line, sizeof(line), "250%cSIZE %zu\r\n", sep,
                   s->lim.max_message_size);
    } else {
      n = snprintf(line, sizeof(line), "250%c%s\r\n", sep,
                   smtp_server_ehlo_keywords[i].keyword);
    }
    smtp_server_out(s, line, (size_t)n);
  }
  smtp_server_count_reply(s, '2');
}

/* HELO / EHLO (RFC 5321 §4.1.1.1): the name is one printable ASCII word;
 * a new greeting aborts any transaction (§4.1.4). */
static void smtp_server_cmd_helo_common(struct smtp_server *s,
                                        const uint8_t *arg, size_t n,
                                        int esmtp) {
  size_t len = 0;
  while (len < n && arg[len] > ' ' && arg[len] < 0x7f) {
    len++;
  }
  if (len == 0 || (len < n && arg[len] != ' ')) {
    smtp_server_error(s, esmtp ? "501 5.5.4 Syntax: EHLO hostname\r\n"
                               : "501 5.5.4 Syntax: HELO hostname\r\n");
    return;
  }
  char *name = smtp_server_strndup(s, arg, len);
  if (name == NULL) {
    return;
  }
  smtp_server_txn_abort(s);
  free(s->helo);
  s->helo = name;
  s->esmtp = esmtp;
  if (esmtp) {
    smtp_server_ehlo_reply(s);
  } else {
    smtp_server_replyf(s, "250 %.255s\r\n", s->hostname);
  }
  smtp_server_push(s, SMTP_SERVER_EV_HELO);
}

static const struct smtp_server_cmd *smtp_server_lookup(const uint8_t *verb,
                                                        size_t n) {
  for (size_t i = 0; i < SMTP_SERVER_NUM_CMDS; i++) {
    if (smtp_server_word_is(verb, n, smtp_server_cmds[i].name)) {
      return &smtp_server_cmds[i];
    }
  }
  return NULL;
}

/* Checks the line as a whole, then the verb against the table's flags.
 * Returns the command the line named, or NULL. */
static const struct smtp_server_cmd *
smtp_server_command(struct smtp_server *s, const uint8_t *line, size_t n) {
  if (n < 2 || line[n - 2] != '\r') {
    smtp_server_error(s, "500 5.5.2 Error: bare <LF> received\r\n");
    return NULL;
  }
  n -= 2;
  if (memchr(line, '\0', n) != NULL) {
    smtp_server_error(s, "501 5.5.2 Error: NUL character in command\r\n");
    return NULL;
  }
  if (memchr(line, '\r', n) != NULL) {
    smtp_server_error(s, "500 5.5.2 Error: bare <CR> received\r\n");
    return NULL;
  }
  while (n > 0 && (line[n - 1] == ' ' || line[n - 1] == '\t')) {
    n--; /* trailing white space: a common, harmless deviation */
  }
  const uint8_t *sp = memchr(line, ' ', n);
  size_t verb_len = sp ? (size_t)(sp - line) : n;
  const struct smtp_server_cmd *c = smtp_server_lookup(line, verb_len);
  if (s->stats != NULL) {
    METRIC_ADD(s->stats->commands[c ? c->verb : SMTP_VERB_UNKNOWN], 1);
  }
  if (c == NULL) {
    smtp_server_error(s, "500 5.5.1 Error: command not recognized\r\n");
    return NULL;
  }
  if ((c->flags & SMTP_SERVER_CMD_ENDS_GROUP) && smtp_server_avail(s) > 0) {
    /* RFC 2920 §3.1: the client had to wait for this reply. */
    smtp_server_reply(s, "554 5.5.0 Error: improper command pipelining\r\n");
    smtp_server_close(s);
    return c;
  }
  if ((c->flags & SMTP_SERVER_CMD_NOT_IMPL) || (c->ext & ~s->ext) != 0) {
    smtp_server_error(s, "502 5.5.1 Error: command not implemented\r\n");
    return c;
  }
  if (s->tls_required && !s->tls && !(c->flags & SMTP_SERVER_CMD_PRE_TLS)) {
    /* RFC 3207 §4: only NOOP, EHLO, STARTTLS and QUIT before TLS. */
    smtp_server_error(s, "530 5.7.0 Must issue a STARTTLS command first\r\n");
    return c;
  }
  const uint8_t *arg = line + verb_len + (sp ? 1 : 0);
  size_t arg_len = n - (size_t)(arg - line);
  if (((c->flags & SMTP_SERVER_CMD_NO_ARG) && arg_len > 0) ||
      ((c->flags & SMTP_SERVER_CMD_NEEDS_ARG) && arg_len == 0)) {
    smtp_server_error(s, c->syntax);
    return c;
  }
  c->fn(s, arg, arg_len);
  return c;
}

/* ---- states ---------------------------------------------------------- */

/* COMMAND: one line (RFC 5321 §4.5.3.1.4 limit) or part of an over-long
 * one. Returns 1 if it made progress. */
static int smtp_server_step_command(struct smtp_server *s) {
  const uint8_t *p = smtp_server_input(s);
  size_t avail = smtp_server_avail(s);
  if (avail == 0) {
    return 0;
  }
  if (s->skip_line) {
    /* Maybe the rest of an over-long SASL response: wiped too. */
    const uint8_t *lf = memchr(p, '\n', avail);
    size_t n = lf ? (size_t)(lf - p) + 1 : avail;
    smtp_server_consume(s, n);
    smtp_server_wipe_input(s, p, n);
    s->skip_line = lf == NULL;
    return 1;
  }
  size_t max = s->max_command_line;
  const uint8_t *lf = memchr(p, '\n', avail < max ? avail : max);
  if (lf == NULL) {
    if (avail < max) {
      return 0;
    }
    smtp_server_consume(s, max);
    s->skip_line = 1;
    smtp_server_error(s, "500 5.5.2 Error: line too long\r\n");
    return 1;
  }
  size_t n = (size_t)(lf - p) + 1;
  smtp_server_consume(s, n);
  const struct smtp_server_cmd *c = smtp_server_command(s, p, n);
  if (c != NULL && (c->flags & SMTP_SERVER_CMD_SECRET)) {
    smtp_server_wipe_input(s, p, n);
  }
  return 1;
}

/* AUTH: one client response line of the SASL exchange. RFC 4954 §4: up to
 * 12288 octets; a longer one fails the exchange with 500, and its rest is
 * skipped like an over-long command. Returns 1 if it made progress. */
static int smtp_server_step_auth(struct smtp_server *s) {
  const uint8_t *p = smtp_server_input(s);
  size_t avail = smtp_server_avail(s);
  if (avail == 0) {
    return 0;
  }
  size_t max = SMTP_SERVER_MAX_SASL_LINE + 2;
  const uint8_t *lf = memchr(p, '\n', avail < max ? avail : max);
  if (lf == NULL) {
    if (avail < max) {
      return 0;
    }
    smtp_server_consume(s, max);
    smtp_server_wipe_input(s, p, max);
    s->skip_line = 1;
    smtp_server_sasl_fail(
        s, "500 5.5.6 Authentication exchange line is too long\r\n");
    return 1;
  }
  size_t n = (size_t)(lf - p) + 1;
  smtp_server_consume(s, n);
  if (n < 2 || p[n - 2] != '\r') {
    smtp_server_sasl_fail(s, "501 5.5.2 Cannot decode response\r\n");
  } else {
    smtp_server_sasl_response(s, p, n - 2, 0);
  }
  smtp_server_wipe_input(s, p, n);
  return 1;
}

/* Marks the message bad: it will be refused with `reply` (after DATA's end,
 * or after the BDAT chunk in which this was found), and nothing more of it
 * is stored (memory stays bounded). */
static void smtp_server_msg_bad(struct smtp_server *s, const char *reply) {
  if (s->msg.bad == NULL) {
    s->msg.bad = reply;
    buf_free(&s->body);
    s->body_prefix_used = 0;
  }
}

/* Stores octets of a message that is still good. */
static void smtp_server_msg_store(struct smtp_server *s, const uint8_t *p,
                                  size_t n) {
  if (s->msg.bad == NULL && n > 0 && buf_append(&s->body, p, n) != 0) {
    s->failed = 1;
  }
}

/* ---- body scanner (DATA and BDAT) ------------------------------------ */

/* How body octets arrive; one scanner checks both. Without BINARYMIME a
 * BDAT body is the same text as a DATA body (RFC 3030 §2), only counted
 * instead of dot-stuffed. */
enum smtp_server_scan_mode {
  SMTP_SERVER_SCAN_DATA, /* dot-stuffed, ends at <CRLF>.<CRLF> (§4.5.2) */
  SMTP_SERVER_SCAN_BDAT, /* chunk octets as they are; "." is not special */
};

/* Which rule a piece of a line breaks, or NULL. The piece p[0..n), n > 0,
 * holds a LF only as its last octet (`ends`; `crlf` if a CR, maybe the
 * last octet of the previous piece, precedes it); m still describes the
 * octets before it, which may have ended in a CR (a line can be split
 * anywhere: between reads, between BDAT chunks). Rules: RFC 5321 §2.3.8
 * (CR and LF only as CRLF), §4.5.3.1.6 (line length), SIZE, header size. */
static inline const char *
smtp_server_piece_check(const struct smtp_server_msg *m,
                        const struct smtp_server_limits *l, const uint8_t *p,
                        size_t n, int ends, int crlf) {
  /* Octets that may hold no CR: all but a CR before the LF, or a last CR
   * the next piece must complete. */
  size_t text =
      ends ? n - 1 - (size_t)(crlf && n >= 2) : n - (size_t)(p[n - 1] == '\r');
  if ((ends && !crlf) || (m->last_cr && p[0] != '\n') ||
      memchr(p, '\r', text) != NULL) {
    return "550 5.6.0 Error: bare <CR> or <LF> in message\r\n";
  }
  /* Without its LF yet, the line will be at least one octet longer. */
  if (m->line_len + n + (size_t)!ends > l->max_text_line) {
    return "500 5.5.2 Error: line too long\r\n";
  }
  if (n > l->max_message_size - m->total) {
    return "552 5.3.4 Error: message size exceeds fixed limit\r\n";
  }
  if (m->in_header && n > l->max_header_size - m->header_len) {
    return "552 5.3.4 Error: message header size exceeds limit\r\n";
  }
  return NULL;
}

/* Checks one piece of a line (see smtp_server_piece_check) and moves m
 * past it. Once the message is bad only line ends are tracked, which DATA
 * still needs to find its end. */
static inline void smtp_server_scan_piece(struct smtp_server_msg *m,
                                          const struct smtp_server_limits *l,
                                          const uint8_t *p, size_t n,
                                          int ends) {
  int crlf = ends && (n >= 2 ? p[n - 2] == '\r' : m->last_cr);
  if (m->bad == NULL) {
    m->bad = smtp_server_piece_check(m, l, p, n, ends, crlf);
    m->total += n;
    m->header_len += m->in_header ? n : 0;
  }
  if (!ends) {
    m->line_len += n;
    m->last_cr = p[n - 1] == '\r';
    return;
  }
  if (m->line_len + n == 2 && crlf) {
    m->in_header = 0; /* the empty line ends the header section */
  }
  m->prev_crlf = crlf;
  m->line_len = 0;
  m->last_cr = 0;
}

/* Scans body octets p[0..n): splits them at LF with memchr, checks every
 * piece and stores runs of good octets with one copy each. DATA mode also
 * drops the stuffed dot (RFC 5321 §4.5.2) and stops after <CRLF>.<CRLF>,
 * setting *out_end; it leaves a line start of "." or ".\r" for the next
 * call. BDAT mode takes all n. Returns the octets consumed. The state is
 * worked on in a local copy: this loop runs once per line. */
static size_t smtp_server_scan(struct smtp_server *s,
                               enum smtp_server_scan_mode mode,
                               const uint8_t *p, size_t n, int *out_end) {
  struct smtp_server_msg m = s->msg;
  const uint8_t *cur = p, *end = p + n, *run = p;
  *out_end = 0;
  while (cur < end) {
    if (mode == SMTP_SERVER_SCAN_DATA && m.line_len == 0 && cur[0] == '.') {
      size_t left = (size_t)(end - cur);
      if (left == 1 || (left == 2 && cur[1] == '\r')) {
        break; /* could still be the end of the data */
      }
      if (m.bad == NULL) {
        smtp_server_msg_store(s, run, (size_t)(cur - run));
      }
      if (left >= 3 && cur[1] == '\r' && cur[2] == '\n' && m.prev_crlf) {
        *out_end = 1;
        run = cur = cur + 3;
        break;
      }
      run = cur + 1; /* counted as received, not stored */
    }
    const uint8_t *lf = memchr(cur, '\n', (size_t)(end - cur));
    if (lf == NULL) {
      smtp_server_scan_piece(&m, &s->lim, cur, (size_t)(end - cur), 0);
      cur = end;
      break;
    }
    smtp_server_scan_piece(&m, &s->lim, cur, (size_t)(lf + 1 - cur), 1);
    cur = lf + 1;
  }
  if (m.bad == NULL) {
    smtp_server_msg_store(s, run, (size_t)(cur - run));
  } else if (s->msg.bad == NULL) {
    smtp_server_msg_bad(s, m.bad);
  }
  s->msg = m;
  return (size_t)(cur - p);
}

/* The BDAT message is complete: a CR ending it is bare; a last line
 * without CRLF gets one, checked like received octets, so the host always
 * gets CRLF-terminated lines, as after DATA (RFC 5322 allows the missing
 * CRLF; the next hop's DATA needs it before its final dot). */
static void smtp_server_scan_end(struct smtp_server *s) {
  static const uint8_t crlf[2] = {'\r', '\n'};
  if (s->msg.bad != NULL || s->msg.line_len == 0) {
    return;
  }
  if (s->msg.last_cr) {
    smtp_server_msg_bad(s, "550 5.6.0 Error: bare <CR> or <LF> in "
                           "message\r\n");
    return;
  }
  int done;
  (void)smtp_server_scan(s, SMTP_SERVER_SCAN_BDAT, crlf, sizeof(crlf), &done);
}

/* The body is complete: refuse it now, or hand it to the host. */
static void smtp_server_msg_done(struct smtp_server *s) {
  s->state = SMTP_SERVER_STATE_COMMAND;
  if (s->msg.bad != NULL) {
    const char *reply = s->msg.bad;
    smtp_server_txn_end(s);
    smtp_server_error(s, reply);
    return;
  }
  smtp_server_owe(s, SMTP_SERVER_VERDICT_MESSAGE, SMTP_SERVER_EV_MESSAGE);
}

/* DATA: scans what has arrived; only <CRLF>.<CRLF> ends it, recognised
 * across any split of the input. */
static int smtp_server_step_data(struct smtp_server *s) {
  int done;
  size_t used = smtp_server_scan(s, SMTP_SERVER_SCAN_DATA, smtp_server_input(s),
                                 smtp_server_avail(s), &done);
  smtp_server_consume(s, used);
  if (done) {
    smtp_server_msg_done(s);
  }
  return used > 0;
}

/* A BDAT chunk has been read: reply for it (RFC 3030 §2). A message found
 * bad is refused at this chunk, ending the transaction; chunks already
 * pipelined after it are read and refused with 503. */
static void smtp_server_chunk_done(struct smtp_server *s) {
  s->state = SMTP_SERVER_STATE_COMMAND;
  if (s->chunk_err != NULL) {
    const char *reply = s->chunk_err;
    s->chunk_err = NULL;
    smtp_server_error(s, reply);
    return;
  }
  if (s->chunk_last) {
    smtp_server_scan_end(s);
  }
  if (s->chunk_last || s->msg.bad != NULL) {
    smtp_server_msg_done(s);
    return;
  }
  smtp_server_replyf(s, "250 2.0.0 Ok: %zu octets received\r\n", s->chunk_size);
}

/* CHUNK: scans (or discards) up to chunk_left octets as one block; the
 * chunk's octets are consumed whatever they hold, never read as commands. */
static int smtp_server_step_chunk(struct smtp_server *s) {
  size_t avail = smtp_server_avail(s);
  if (s->chunk_left > 0 && avail == 0) {
    return 0;
  }
  size_t take = avail < s->chunk_left ? avail : s->chunk_left;
  if (s->chunk_err == NULL && s->msg.bad == NULL) {
    int done;
    size_t used = smtp_server_scan(s, SMTP_SERVER_SCAN_BDAT,
                                   smtp_server_input(s), take, &done);
    assert(used == take && !done);
    (void)used;
  }
  smtp_server_consume(s, take);
  s->chunk_left -= take;
  if (s->chunk_left == 0) {
    smtp_server_chunk_done(s);
  }
  return 1;
}

static int smtp_server_step(struct smtp_server *s) {
  switch (s->state) {
  case SMTP_SERVER_STATE_COMMAND:
    return smtp_server_step_command(s);
  case SMTP_SERVER_STATE_DATA:
    return smtp_server_step_data(s);
  case SMTP_SERVER_STATE_CHUNK:
    return smtp_server_step_chunk(s);
  case SMTP_SERVER_STATE_AUTH:
    return smtp_server_step_auth(s);
  case SMTP_SERVER_STATE_TLS_WAIT: /* input is not ours to read */
  case SMTP_SERVER_STATE_CLOSED:
    break;
  }
  return 0;
}

/* ---- public API ------------------------------------------------------ */

void smtp_server_limits_default(struct smtp_server_limits *out_limits) {
  out_limits->max_command_line = 512;
  out_limits->max_text_line = 1000;
  out_limits->max_message_size = 10u << 20;
  out_limits->max_recipients = 100;
  out_limits->max_header_size = 1u << 20;
  out_limits->max_input_buffer = 256u << 10;
  out_limits->max_errors = 20;
}

/* Limits the engine cannot work without: a command, and with AUTH a SASL
 * response line, must fit the input buffer with room to spare, or feed()
 * could never make room for it. Sets the session's command line limit. */
static void smtp_server_limits_sane(struct smtp_server *s) {
  struct smtp_server_limits *l = &s->lim;
  if (l->max_command_line < 16) {
    l->max_command_line = 16;
  }
  if (l->max_text_line < 3) {
    l->max_text_line = 3;
  }
  s->max_command_line = l->max_command_line;
  if (s->ext & SMTP_EXT_AUTH) {
    s->max_command_line += SMTP_SERVER_AUTH_LINE_EXTRA; /* RFC 4954 §5 */
  }
  size_t need = s->max_command_line + l->max_text_line;
  if ((s->ext & SMTP_EXT_AUTH) &&
      need < SMTP_SERVER_MAX_SASL_LINE + 2 + s->max_command_line) {
    need = SMTP_SERVER_MAX_SASL_LINE + 2 + s->max_command_line;
  }
  if (l->max_input_buffer < need) {
    l->max_input_buffer = need;
  }
}

struct smtp_server *smtp_server_new(const struct smtp_server_config *config) {
  struct smtp_server *s = calloc(1, sizeof(*s));
  if (s == NULL) {
    return NULL;
  }
  const char *host = config->hostname ? config->hostname : "localhost";
  s->hostname = strdup(host);
  if (s->hostname == NULL) {
    free(s);
    return NULL;
  }
  s->ext = config->extensions & SMTP_SERVER_EXT_KNOWN;
  s->lim = config->limits;
  smtp_server_limits_sane(s);
  s->stats = config->stats;
  s->tls = config->tls_active != 0;
  s->tls_required = config->tls_required != 0;
  s->auth_required = config->auth_required != 0;
  s->state = SMTP_SERVER_STATE_COMMAND;
  smtp_server_replyf(s, "220 %.255s ESMTP postseal\r\n", s->hostname);
  if (s->failed) {
    smtp_server_free(s);
    return NULL;
  }
  return s;
}

void smtp_server_free(struct smtp_server *s) {
  if (s == NULL) {
    return;
  }
  smtp_server_envelope_clear(s);
  smtp_server_sasl_free(s);
  free(s->auth_user);
  free(s->env.rcpts);
  free(s->helo);
  free(s->hostname);
  buf_free(&s->in);
  buf_free(&s->out);
  buf_free(&s->body);
  buf_free(&s->body_prefix);
  free(s);
}

int smtp_server_feed(struct smtp_server *s, const uint8_t *in, size_t in_len) {
  if (s->state == SMTP_SERVER_STATE_CLOSED || s->failed) {
    return 0; /* nothing more will be read; drop it */
  }
  if (s->state == SMTP_SERVER_STATE_TLS_WAIT) {
    s->discarded += in_len; /* sent in clear after STARTTLS: never run */
    return 0;
  }
  size_t pending = smtp_server_avail(s);
  if (in_len > s->lim.max_input_buffer - pending) {
    return -1;
  }
  if (s->in_off > 0 && s->in.cap - s->in.len < in_len) {
    /* Compact only when the append would not fit: amortised O(1). */
    memmove(s->in.data, s->in.data + s->in_off, pending);
    s->in.len = pending;
    s->in_off = 0;
  }
  return buf_append(&s->in, in, in_len);
}

enum smtp_server_event smtp_server_next(struct smtp_server *s) {
  for (;;) {
    if (s->ev_count > 0) {
      enum smtp_server_event e = s->events[s->ev_head];
      s->ev_head = (s->ev_head + 1) % SMTP_SERVER_MAX_EVENTS;
      s->ev_count--;
      return e;
    }
    if (s->failed) {
      smtp_server_close(s); /* allocation failed; state is unreliable */
    }
    if (s->state == SMTP_SERVER_STATE_CLOSED) {
      return SMTP_SERVER_EV_CLOSE;
    }
    if (s->verdict != SMTP_SERVER_VERDICT_NONE ||
        s->state == SMTP_SERVER_STATE_TLS_WAIT) {
      return SMTP_SERVER_WAIT_VERDICT;
    }
    if (!smtp_server_step(s)) {
      return SMTP_SERVER_NEED_INPUT;
    }
  }
}

/* Takes the owed verdict; calling a verdict with none owed is a bug. */
static enum smtp_server_verdict
smtp_server_take_verdict(struct smtp_server *s) {
  enum smtp_server_verdict v = s->verdict;
  assert(v != SMTP_SERVER_VERDICT_NONE);
  s->verdict = SMTP_SERVER_VERDICT_NONE;
  return v;
}

/* The host's answer to EV_AUTH; the password is wiped either way. */
static void smtp_server_auth_finish(struct smtp_server *s, int ok) {
  assert(s->sasl != NULL);
  if (ok && (s->auth_user = strdup(s->sasl->user)) == NULL) {
    s->failed = 1;
  }
  smtp_server_sasl_free(s);
  if (!ok) {
    smtp_server_error(s, smtp_server_auth_invalid);
  } else if (s->auth_user != NULL) {
    s->authenticated = 1;
    smtp_server_reply(s, "235 2.7.0 Authentication successful\r\n");
  }
}

void smtp_server_accept(struct smtp_server *s) {
  switch (smtp_server_take_verdict(s)) {
  case SMTP_SERVER_VERDICT_MAIL:
    s->have_mail = 1;
    smtp_server_reply(s, "250 2.1.0 Ok\r\n");
    break;
  case SMTP_SERVER_VERDICT_RCPT:
    smtp_server_rcpt_commit(s);
    smtp_server_reply(s, "250 2.1.5 Ok\r\n");
    break;
  case SMTP_SERVER_VERDICT_MESSAGE:
    smtp_server_txn_end(s);
    smtp_server_reply(s, "250 2.0.0 Ok: queued\r\n");
    break;
  case SMTP_SERVER_VERDICT_AUTH:
    /* A bug in the host; fail closed rather than let anyone in. */
    assert(!"smtp_server_accept() for EV_AUTH: use smtp_server_auth_result()");
    smtp_server_auth_finish(s, 0);
    break;
  case SMTP_SERVER_VERDICT_NONE:
    break;
  }
}

void smtp_server_auth_result(struct smtp_server *s, int ok) {
  if (s->verdict != SMTP_SERVER_VERDICT_AUTH) {
    assert(!"smtp_server_auth_result() without EV_AUTH");
    return;
  }
  s->verdict = SMTP_SERVER_VERDICT_NONE;
  smtp_server_auth_finish(s, ok);
}

/* RFC 3207 §4.2: the session starts over inside TLS, but for the greeting:
 * what the client said in clear (its name, any AUTH) is forgotten. */
void smtp_server_tls_started(struct smtp_server *s) {
  if (s->state != SMTP_SERVER_STATE_TLS_WAIT) {
    assert(s->state == SMTP_SERVER_STATE_CLOSED);
    return;
  }
  s->tls = 1;
  free(s->helo);
  s->helo = NULL;
  s->esmtp = 0;
  smtp_server_txn_end(s);
  smtp_server_sasl_free(s);
  free(s->auth_user);
  s->auth_user = NULL;
  s->authenticated = 0;
  s->skip_line = 0;
  s->state = SMTP_SERVER_STATE_COMMAND;
}

/* Copies host text into a reply, replacing anything that could break the
 * line (CR, LF, controls) and cutting it short. */
static void smtp_server_clean_text(char *out, size_t out_cap,
                                   const char *text) {
  size_t n = 0;
  for (; text != NULL && text[n] != '\0' && n + 1 < out_cap; n++) {
    unsigned char c = (unsigned char)text[n];
    out[n] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
  }
  out[n] = '\0';
}

void smtp_server_reject(struct smtp_server *s, int code, const char *enhanced,
                        const char *text) {
  char clean_enh[16], clean_text[400];
  assert(code >= 400 && code <= 599);
  switch (smtp_server_take_verdict(s)) {
  case SMTP_SERVER_VERDICT_MAIL:
    smtp_server_envelope_clear(s);
    break;
  case SMTP_SERVER_VERDICT_RCPT:
    smtp_server_rcpt_clear(&s->pending);
    break;
  case SMTP_SERVER_VERDICT_MESSAGE:
    smtp_server_txn_end(s);
    break;
  case SMTP_SERVER_VERDICT_AUTH:
    smtp_server_sasl_free(s);
    break;
  case SMTP_SERVER_VERDICT_NONE:
    break;
  }
  smtp_server_clean_text(clean_enh, sizeof(clean_enh),
                         enhanced ? enhanced
                                  : (code < 500 ? "4.0.0" : "5.0.0"));
  smtp_server_clean_text(clean_text, sizeof(clean_text), text);
  smtp_server_replyf(s, "%d %s %s\r\n", code, clean_enh,
                     clean_text[0] ? clean_text : "Error");
}

void smtp_server_reply_queued(struct smtp_server *s, const char *queue_id) {
  char clean[128];
  enum smtp_server_verdict v = smtp_server_take_verdict(s);
  assert(v == SMTP_SERVER_VERDICT_MESSAGE);
  (void)v;
  smtp_server_txn_end(s);
  smtp_server_clean_text(clean, sizeof(clean), queue_id);
  smtp_server_replyf(s, "250 2.0.0 Ok: queued as %s\r\n", clean);
}

void smtp_server_output(const struct smtp_server *s, const uint8_t **out,
                        size_t *out_len) {
  *out = s->out.data + s->out_off;
  *out_len = s->out.len - s->out_off;
}

void smtp_server_output_sent(struct smtp_server *s, size_t n) {
  assert(n <= s->out.len - s->out_off);
  s->out_off += n;
  if (s->out_off == s->out.len) {
    s->out_off = 0;
    s->out.len = 0;
  } else if (s->out_off > s->out.len / 2) {
    /* Short sends: move the rest down once at least half is dead. */
    buf_consume(&s->out, s->out_off);
    s->out_off = 0;
  }
}

const char *smtp_server_helo(const struct smtp_server *s) {
  return s->helo;
}

/* RFC 3848 §2 (S: TLS, A: authenticated) and RFC 6531 §3.7.3. */
const char *smtp_server_protocol(const struct smtp_server *s) {
  static const char *const names[2][4] = {
      {"ESMTP", "ESMTPS", "ESMTPA", "ESMTPSA"},
      {"UTF8SMTP", "UTF8SMTPS", "UTF8SMTPA", "UTF8SMTPSA"},
  };
  if (!s->esmtp && !s->env.smtputf8) {
    return "SMTP";
  }
  return names[s->env.smtputf8 != 0][s->tls + 2 * s->authenticated];
}

int smtp_server_tls_active(const struct smtp_server *s) {
  return s->tls;
}

int smtp_server_authenticated(const struct smtp_server *s) {
  return s->authenticated;
}

const char *smtp_server_auth_user(const struct smtp_server *s) {
  if (s->verdict == SMTP_SERVER_VERDICT_AUTH) {
    return s->sasl->user;
  }
  return s->auth_user;
}

const char *smtp_server_auth_password(const struct smtp_server *s) {
  return s->verdict == SMTP_SERVER_VERDICT_AUTH ? s->sasl->pass : NULL;
}

size_t smtp_server_discarded(const struct smtp_server *s) {
  return s->discarded;
}

const struct smtp_envelope *smtp_server_envelope(const struct smtp_server *s) {
  return &s->env;
}

const struct smtp_rcpt *smtp_server_pending_rcpt(const struct smtp_server *s) {
  return s->verdict == SMTP_SERVER_VERDICT_RCPT ? &s->pending : NULL;
}

void smtp_server_take_body(struct smtp_server *s, struct buf *out_body) {
  assert(s->verdict == SMTP_SERVER_VERDICT_MESSAGE);
  buf_move(out_body, &s->body);
}

int smtp_server_set_body_prefix(struct smtp_server *s, const uint8_t *p,
                                size_t n) {
  buf_reset(&s->body_prefix);
  if (n > 0 && buf_append(&s->body_prefix, p, n) != 0) {
    buf_reset(&s->body_prefix);
    return -1;
  }
  return 0;
}

size_t smtp_server_body_prefix_len(const struct smtp_server *s) {
  return s->verdict == SMTP_SERVER_VERDICT_MESSAGE ? s->body_prefix_used : 0;
}

/* A SASL exchange waits for the client like a command does; the TLS
 * handshake is timed by the host, like the AUTH check. */
enum smtp_server_timeout_class
smtp_server_timeout_class(const struct smtp_server *s) {
  if (s->verdict != SMTP_SERVER_VERDICT_NONE) {
    return SMTP_TIMEOUT_NONE;
  }
  switch (s->state) {
  case SMTP_SERVER_STATE_COMMAND:
    return s->bdat_active ? SMTP_TIMEOUT_DATA : SMTP_TIMEOUT_COMMAND;
  case SMTP_SERVER_STATE_AUTH:
    return SMTP_TIMEOUT_COMMAND;
  case SMTP_SERVER_STATE_DATA:
  case SMTP_SERVER_STATE_CHUNK:
    return SMTP_TIMEOUT_DATA;
  case SMTP_SERVER_STATE_TLS_WAIT:
  case SMTP_SERVER_STATE_CLOSED:
    break;
  }
  return SMTP_TIMEOUT_NONE;
}

void smtp_server_timeout(struct smtp_server *s) {
  smtp_server_replyf(s, "421 4.4.2 %.255s Error: timeout exceeded\r\n",
                     s->hostname);
  smtp_server_close(s);
}

void smtp_server_shutdown(struct smtp_server *s) {
  smtp_server_replyf(s, "421 4.3.2 %.255s Service shutting down\r\n",
                     s->hostname);
  smtp_server_close(s);
}

int smtp_server_is_idle(const struct smtp_server *s) {
  return s->state == SMTP_SERVER_STATE_COMMAND &&
         s->verdict == SMTP_SERVER_VERDICT_NONE && !s->have_mail &&
         !s->skip_line && s->ev_count == 0 && smtp_server_avail(s) == 0;
}
