/* bench/bench_client.c — sans-I/O SMTP load client; see bench_client.h.
 *
 * Replies are parsed line by line (RFC 5321 §4.2: "ddd-text" continues a
 * reply, "ddd text" or "ddd" ends it). Each complete reply goes to the
 * handler of the current state; handlers queue events and output. */
#include "bench/bench_client.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* The PLAIN message (RFC 4616 §2): NUL user NUL password, and its base64
 * (RFC 4648 §4, padded) with a NUL. */
#define BC_AUTH_MSG_MAX                                                        \
  (2 + BENCH_CLIENT_MAX_AUTH_USER + BENCH_CLIENT_MAX_AUTH_PASSWORD)
#define BC_AUTH_B64_MAX (4 * ((BC_AUTH_MSG_MAX + 2) / 3) + 1)

static int bc_class(int code) {
  int c = code / 100;
  return c < 1 ? 1 : (c > 5 ? 5 : c);
}

static void bc_push(struct bench_client *bc, enum bench_client_event ev) {
  if (bc->num_pending < sizeof(bc->pending) / sizeof(bc->pending[0])) {
    unsigned slot = (bc->pending_head + bc->num_pending) %
                    (unsigned)(sizeof(bc->pending) / sizeof(bc->pending[0]));
    bc->pending[slot] = ev;
    bc->num_pending++;
  }
}

/* bc_enter is the one place the state changes; entering a state queues
 * the event that announces it. */
static void bc_enter(struct bench_client *bc, enum bench_client_state st) {
  bc->state = st;
  if (st == BENCH_CLIENT_IDLE) {
    bc->msg = NULL;
    bc_push(bc, BENCH_CLIENT_EV_READY);
  } else if (st == BENCH_CLIENT_CLOSED) {
    bc_push(bc, BENCH_CLIENT_EV_CLOSE);
  }
}

static void bc_close(struct bench_client *bc, enum bench_client_error err) {
  bc->error = err;
  bc_enter(bc, BENCH_CLIENT_CLOSED);
}

/* bc_out_done: an append failed (out of memory) ends the session. */
static void bc_out_done(struct bench_client *bc, int rc) {
  if (rc != 0) {
    bc_close(bc, BENCH_CLIENT_ERR_PROTOCOL);
  }
}

static void bc_cmd(struct bench_client *bc, const char *line) {
  bc_out_done(bc, buf_append_str(&bc->out, line));
}

static void bc_send_rcpt(struct bench_client *bc, unsigned k) {
  bc_out_done(bc, buf_printf(&bc->out, "RCPT TO:<rcpt%u@%s>\r\n", k,
                             bc->cfg.to_domain));
}

/* bc_auth_config_ok: no AUTH at all, or a user and a password of
 * 1*SAFE each (RFC 4616 §2) within our limits. */
static int bc_auth_config_ok(const struct bench_client_config *cfg) {
  if (cfg->auth_user == NULL || cfg->auth_password == NULL) {
    return cfg->auth_user == NULL && cfg->auth_password == NULL;
  }
  size_t user_len = strnlen(cfg->auth_user, BENCH_CLIENT_MAX_AUTH_USER + 1);
  size_t password_len =
      strnlen(cfg->auth_password, BENCH_CLIENT_MAX_AUTH_PASSWORD + 1);
  return user_len >= 1 && user_len <= BENCH_CLIENT_MAX_AUTH_USER &&
         password_len >= 1 && password_len <= BENCH_CLIENT_MAX_AUTH_PASSWORD;
}

int bench_client_init(struct bench_client *bc,
                      const struct bench_client_config *cfg) {
  memset(bc, 0, sizeof(*bc));
  if (cfg->num_rcpts < 1 || cfg->num_rcpts > BENCH_CLIENT_MAX_RCPTS ||
      cfg->helo == NULL || cfg->from == NULL || cfg->to_domain == NULL ||
      !bc_auth_config_ok(cfg)) {
    return -1;
  }
  bc->cfg = *cfg;
  bc->state = BENCH_CLIENT_GREETING;
  return 0;
}

void bench_client_cleanup(struct bench_client *bc) {
  buf_free(&bc->in);
  buf_free(&bc->out);
}

int bench_client_feed(struct bench_client *bc, const uint8_t *in,
                      size_t in_len) {
  if (bc->state == BENCH_CLIENT_CLOSED) {
    return 0; /* a closed session ignores what still arrives */
  }
  if (bc->in.len + in_len > BENCH_CLIENT_MAX_INPUT ||
      buf_append(&bc->in, in, in_len) != 0) {
    bc_close(bc, BENCH_CLIENT_ERR_PROTOCOL);
    return -1;
  }
  return 0;
}

/* bc_fail ends a transaction that will not deliver; the server may still
 * hold MAIL, so RSET (RFC 5321 §4.1.1.5) before the next one. */
static void bc_fail(struct bench_client *bc, int cls) {
  bc->result = cls;
  if (bc->cfg.stats != NULL) {
    bc->cfg.stats->messages[cls]++;
  }
  bc_push(bc, BENCH_CLIENT_EV_MESSAGE);
  bc_cmd(bc, "RSET\r\n");
  bc->state = BENCH_CLIENT_RSET;
}

/* bc_refused_class: the class of a transaction that ended before DATA. */
static int bc_refused_class(const struct bench_client *bc) {
  if (bc->mail_class != 2) {
    return bc->mail_class;
  }
  return bc->rcpt_4xx > 0 ? 4 : 5;
}

/* bc_send_body queues the header and borrows the body (after 354). */
static void bc_send_body(struct bench_client *bc) {
  const struct bench_client_message *m = bc->msg;
  if (buf_printf(&bc->out,
                 "Message-ID: <%llu.%s@postseal-bench>\r\n"
                 "Date: %s\r\n"
                 "From: <%s>\r\n"
                 "To: <rcpt0@%s>\r\n"
                 "Subject: postseal-bench message %llu\r\n\r\n",
                 (unsigned long long)m->serial, m->run_id, m->date,
                 bc->cfg.from, bc->cfg.to_domain,
                 (unsigned long long)m->serial) != 0) {
    bc_close(bc, BENCH_CLIENT_ERR_PROTOCOL);
    return;
  }
  bc->body = m->body;
  bc->body_len = m->body_len;
  bc->state = BENCH_CLIENT_BODY;
  bc_push(bc, BENCH_CLIENT_EV_BODY);
}

/* bc_on_rcpt_reply counts one RCPT verdict. */
static void bc_on_rcpt_reply(struct bench_client *bc, int cls) {
  if (bc->cfg.stats != NULL) {
    bc->cfg.stats->rcpt[cls]++;
  }
  if (cls == 2) {
    bc->rcpt_ok++;
  } else if (cls == 4) {
    bc->rcpt_4xx++;
  } else {
    bc->rcpt_5xx++;
  }
}

/* bc_txn_reply handles the replies to MAIL (step 0), RCPT (1..K) and
 * DATA (K+1). Unpipelined, each reply decides the next command;
 * pipelined, every command has left and the DATA reply decides. */
static void bc_txn_reply(struct bench_client *bc, int code) {
  unsigned k = bc->cfg.num_rcpts;
  unsigned step = k + 2 - bc->replies_owed;
  int cls = bc_class(code);
  bc->replies_owed--;
  if (step == 0) {
    bc->mail_class = cls;
    if (!bc->pipelined_txn) {
      if (cls == 2) {
        bc_send_rcpt(bc, 0);
      } else {
        bc_fail(bc, cls);
      }
    }
    return;
  }
  if (step <= k) {
    bc_on_rcpt_reply(bc, cls);
    if (!bc->pipelined_txn) {
      if (step < k) {
        bc_send_rcpt(bc, step);
      } else if (bc->rcpt_ok > 0) {
        bc_cmd(bc, "DATA\r\n");
      } else {
        bc_fail(bc, bc_refused_class(bc));
      }
    }
    return;
  }
  if (code == 354) {
    bc_send_body(bc);
  } else if (bc->mail_class != 2 || bc->rcpt_ok == 0) {
    bc_fail(bc, bc_refused_class(bc));
  } else {
    bc_fail(bc, cls);
  }
}

/* bc_send_ehlo queues EHLO; what an earlier EHLO advertised is forgotten
 * (after STARTTLS it must be: RFC 3207 §4.2). */
static void bc_send_ehlo(struct bench_client *bc) {
  bc->server_pipelining = 0;
  bc->server_starttls = 0;
  bc->server_auth_plain = 0;
  if (buf_printf(&bc->out, "EHLO %s\r\n", bc->cfg.helo) != 0) {
    bc_close(bc, BENCH_CLIENT_ERR_PROTOCOL);
    return;
  }
  bc->state = BENCH_CLIENT_EHLO;
}

/* bc_base64 writes in as base64 (RFC 4648 §4, padded) and a NUL to out,
 * which holds 4 * ((in_len + 2) / 3) + 1 octets. */
static void bc_base64(char *out, const uint8_t *in, size_t in_len) {
  static const char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t o = 0;
  for (size_t i = 0; i < in_len; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16;
    if (i + 1 < in_len) {
      v |= (uint32_t)in[i + 1] << 8;
    }
    if (i + 2 < in_len) {
      v |= in[i + 2];
    }
    out[o++] = alphabet[(v >> 18) & 63];
    out[o++] = alphabet[(v >> 12) & 63];
    out[o++] = i + 1 < in_len ? alphabet[(v >> 6) & 63] : '=';
    out[o++] = i + 2 < in_len ? alphabet[v & 63] : '=';
  }
  out[o] = '\0';
}

/* bc_send_auth queues "AUTH PLAIN" with its initial response (RFC 4954
 * §4), unless the password would leave in clear or the last EHLO offered
 * no PLAIN; the copies of the password made here are wiped. */
static void bc_send_auth(struct bench_client *bc) {
  if (!bc->tls && !bc->cfg.implicit_tls && !bc->cfg.auth_insecure) {
    bc_close(bc, BENCH_CLIENT_ERR_AUTH_CLEAR);
    return;
  }
  if (!bc->server_auth_plain) {
    bc_close(bc, BENCH_CLIENT_ERR_AUTH_UNAVAILABLE);
    return;
  }
  uint8_t msg[BC_AUTH_MSG_MAX];
  char b64[BC_AUTH_B64_MAX];
  /* Lengths were checked by bench_client_init; strnlen keeps a string
   * changed since then inside msg. */
  size_t user_len = strnlen(bc->cfg.auth_user, BENCH_CLIENT_MAX_AUTH_USER);
  size_t password_len =
      strnlen(bc->cfg.auth_password, BENCH_CLIENT_MAX_AUTH_PASSWORD);
  msg[0] = 0; /* empty authzid: we act as ourselves */
  memcpy(msg + 1, bc->cfg.auth_user, user_len);
  msg[1 + user_len] = 0;
  memcpy(msg + 2 + user_len, bc->cfg.auth_password, password_len);
  bc_base64(b64, msg, 2 + user_len + password_len);
  int rc = buf_append_str(&bc->out, "AUTH PLAIN ") != 0 ||
           buf_append_str(&bc->out, b64) != 0 ||
           buf_append_str(&bc->out, "\r\n") != 0;
  explicit_bzero(msg, sizeof(msg));
  explicit_bzero(b64, sizeof(b64));
  if (rc != 0) {
    bc_close(bc, BENCH_CLIENT_ERR_PROTOCOL);
    return;
  }
  bc->state = BENCH_CLIENT_AUTH;
}

/* bc_send_starttls follows the first EHLO when TLS is asked for; a
 * server without STARTTLS ends the session (no fallback to clear). */
static void bc_send_starttls(struct bench_client *bc) {
  if (!bc->server_starttls) {
    bc_close(bc, BENCH_CLIENT_ERR_STARTTLS);
    return;
  }
  bc_cmd(bc, "STARTTLS\r\n");
  if (bc->state == BENCH_CLIENT_EHLO) {
    bc->state = BENCH_CLIENT_STARTTLS;
  }
}

/* bc_on_ehlo_reply: STARTTLS next if asked and not yet in TLS, else AUTH
 * if asked, else idle. */
static void bc_on_ehlo_reply(struct bench_client *bc, int cls) {
  if (cls != 2) {
    bc_close(bc, BENCH_CLIENT_ERR_REFUSED);
    return;
  }
  bc_push(bc, BENCH_CLIENT_EV_EHLO);
  if (bc->cfg.starttls && !bc->tls) {
    bc_send_starttls(bc);
    return;
  }
  if (bc->cfg.auth_user != NULL) {
    bc_send_auth(bc);
    return;
  }
  bc_enter(bc, BENCH_CLIENT_IDLE);
}

/* bc_on_auth_reply: 235 (RFC 4954 §6) lets the session mail; anything
 * else (535 credentials, 454 temporary, 334 when we gave the response,
 * 5xx refusals) ends it: a refused session is never retried in place. */
static void bc_on_auth_reply(struct bench_client *bc, int code) {
  if (code != 235) {
    bc_close(bc, BENCH_CLIENT_ERR_AUTH);
    return;
  }
  bc_push(bc, BENCH_CLIENT_EV_AUTH);
  bc_enter(bc, BENCH_CLIENT_IDLE);
}

/* bc_on_reply dispatches one complete reply on the state. */
static void bc_on_reply(struct bench_client *bc, int code) {
  int cls = bc_class(code);
  bc->last_code = code;
  if (bc->cfg.stats != NULL) {
    bc->cfg.stats->replies[cls]++;
    if (bc->state == BENCH_CLIENT_AUTH) {
      bc->cfg.stats->auth[cls]++;
    }
  }
  if (code == 421 && bc->state != BENCH_CLIENT_QUIT) {
    /* RFC 5321 §3.8: the server is closing; a message in flight is lost. */
    if (bc->state == BENCH_CLIENT_TXN || bc->state == BENCH_CLIENT_BODY) {
      bc->result = 4;
      if (bc->cfg.stats != NULL) {
        bc->cfg.stats->messages[4]++;
      }
      bc_push(bc, BENCH_CLIENT_EV_MESSAGE);
    }
    bc_close(bc, BENCH_CLIENT_ERR_421);
    return;
  }
  switch (bc->state) {
  case BENCH_CLIENT_GREETING:
    if (cls != 2) {
      bc_close(bc, BENCH_CLIENT_ERR_REFUSED);
      return;
    }
    bc_send_ehlo(bc);
    bc_push(bc, BENCH_CLIENT_EV_GREETING);
    break;
  case BENCH_CLIENT_EHLO:
    bc_on_ehlo_reply(bc, cls);
    break;
  case BENCH_CLIENT_STARTTLS:
    if (code != 220) { /* RFC 3207 §4: 454 or 501 mean no TLS here */
      bc_close(bc, BENCH_CLIENT_ERR_STARTTLS);
      return;
    }
    bc->state = BENCH_CLIENT_TLS_WAIT;
    bc_push(bc, BENCH_CLIENT_EV_STARTTLS);
    break;
  case BENCH_CLIENT_AUTH:
    bc_on_auth_reply(bc, code);
    break;
  case BENCH_CLIENT_TXN:
    bc_txn_reply(bc, code);
    break;
  case BENCH_CLIENT_BODY:
    bc->result = cls == 2 ? 2 : cls;
    if (bc->cfg.stats != NULL) {
      bc->cfg.stats->messages[bc->result]++;
    }
    bc_push(bc, BENCH_CLIENT_EV_MESSAGE);
    /* Any reply to end of data ends the transaction (§4.1.1.4). */
    bc_enter(bc, BENCH_CLIENT_IDLE);
    break;
  case BENCH_CLIENT_RSET:
    bc_enter(bc, BENCH_CLIENT_IDLE);
    break;
  case BENCH_CLIENT_QUIT:
    bc_close(bc, BENCH_CLIENT_OK);
    break;
  default: /* IDLE: the server spoke out of turn */
    bc_close(bc, BENCH_CLIENT_ERR_PROTOCOL);
    break;
  }
}

/* bc_ehlo_keyword: 1 if an EHLO reply line "250-KEYWORD[ params]" names
 * the extension (RFC 5321 §4.1.1.1; keywords are case-insensitive). */
static int bc_ehlo_keyword(const uint8_t *p, size_t n, const char *keyword) {
  size_t k = strlen(keyword);
  return n >= 4 + k && strncasecmp((const char *)p + 4, keyword, k) == 0 &&
         (n == 4 + k || p[4 + k] == ' ');
}

/* bc_ehlo_auth_plain: 1 if an EHLO reply line advertises AUTH with the
 * PLAIN mechanism: "250-AUTH mech..." (RFC 4954 §3), or the "AUTH=mech..."
 * that old servers send as well; names are case-insensitive. */
static int bc_ehlo_auth_plain(const uint8_t *p, size_t n) {
  if (n < 9 || strncasecmp((const char *)p + 4, "AUTH", 4) != 0 ||
      (p[8] != ' ' && p[8] != '=')) {
    return 0;
  }
  size_t i = 9;
  while (i < n) {
    size_t start = i;
    while (i < n && p[i] != ' ') {
      i++;
    }
    if (i - start == 5 &&
        strncasecmp((const char *)p + start, "PLAIN", 5) == 0) {
      return 1;
    }
    i++; /* the space */
  }
  return 0;
}

/* bc_on_line parses one reply line; returns 1 when it ended a reply. */
static int bc_on_line(struct bench_client *bc, const uint8_t *p, size_t n) {
  if (n < 3 || p[0] < '1' || p[0] > '5' || p[1] < '0' || p[1] > '9' ||
      p[2] < '0' || p[2] > '9' || (n > 3 && p[3] != ' ' && p[3] != '-')) {
    bc_close(bc, BENCH_CLIENT_ERR_PROTOCOL);
    return 1;
  }
  int code = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
  if (bc->reply_code != 0 && code != bc->reply_code) {
    bc_close(bc, BENCH_CLIENT_ERR_PROTOCOL); /* §4.2.1: same code */
    return 1;
  }
  if (bc->state == BENCH_CLIENT_EHLO) {
    bc->server_pipelining |= bc_ehlo_keyword(p, n, "PIPELINING");
    bc->server_starttls |= bc_ehlo_keyword(p, n, "STARTTLS");
    bc->server_auth_plain |= bc_ehlo_auth_plain(p, n);
  }
  if (n > 3 && p[3] == '-') {
    bc->reply_code = code;
    return 0;
  }
  bc->reply_code = 0;
  bc_on_reply(bc, code);
  return 1;
}

enum bench_client_event bench_client_next(struct bench_client *bc) {
  size_t off = 0;
  /* In TLS_WAIT nothing is read: what came in clear after the 220 is
   * dropped by tls_started, never executed (RFC 3207 §4.2). */
  while (bc->num_pending == 0 && bc->state != BENCH_CLIENT_CLOSED &&
         bc->state != BENCH_CLIENT_TLS_WAIT) {
    const uint8_t *p = bc->in.data + off;
    size_t avail = bc->in.len - off;
    const uint8_t *lf = avail ? memchr(p, '\n', avail) : NULL;
    if (lf == NULL) {
      if (avail > BENCH_CLIENT_MAX_LINE) {
        bc_close(bc, BENCH_CLIENT_ERR_PROTOCOL);
      }
      break;
    }
    size_t n = (size_t)(lf - p);
    off += n + 1;
    if (n > 0 && p[n - 1] == '\r') {
      n--; /* a bare LF is tolerated: we are the one who must be lenient */
    }
    if (n > BENCH_CLIENT_MAX_LINE) {
      bc_close(bc, BENCH_CLIENT_ERR_PROTOCOL);
      break;
    }
    bc_on_line(bc, p, n);
  }
  buf_consume(&bc->in, off);
  if (bc->num_pending == 0) {
    return BENCH_CLIENT_NEED_INPUT;
  }
  enum bench_client_event ev = bc->pending[bc->pending_head];
  bc->pending_head =
      (bc->pending_head + 1) % (sizeof(bc->pending) / sizeof(bc->pending[0]));
  bc->num_pending--;
  return ev;
}

void bench_client_start_message(struct bench_client *bc,
                                const struct bench_client_message *m) {
  if (bc->state != BENCH_CLIENT_IDLE) {
    return;
  }
  bc->msg_copy = *m;
  bc->msg = &bc->msg_copy;
  bc->rcpt_ok = bc->rcpt_4xx = bc->rcpt_5xx = 0;
  bc->mail_class = 0;
  bc->result = 0;
  bc->replies_owed = bc->cfg.num_rcpts + 2;
  bc->pipelined_txn = bc->cfg.pipelining && bc->server_pipelining;
  bc_out_done(bc, buf_printf(&bc->out, "MAIL FROM:<%s>\r\n", bc->cfg.from));
  if (bc->pipelined_txn) {
    for (unsigned k = 0; k < bc->cfg.num_rcpts; k++) {
      bc_send_rcpt(bc, k);
    }
    bc_cmd(bc, "DATA\r\n"); /* RFC 2920 §3.1: DATA ends a group */
  }
  if (bc->state == BENCH_CLIENT_IDLE) {
    bc->state = BENCH_CLIENT_TXN;
  }
}

void bench_client_quit(struct bench_client *bc) {
  if (bc->state != BENCH_CLIENT_IDLE) {
    return;
  }
  bc_cmd(bc, "QUIT\r\n");
  if (bc->state == BENCH_CLIENT_IDLE) {
    bc->state = BENCH_CLIENT_QUIT;
  }
}

void bench_client_tls_started(struct bench_client *bc) {
  if (bc->state != BENCH_CLIENT_TLS_WAIT) {
    return;
  }
  buf_reset(&bc->in);
  bc->reply_code = 0;
  bc->tls = 1;
  bc_send_ehlo(bc);
}

void bench_client_set_stats(struct bench_client *bc,
                            struct bench_client_stats *stats) {
  bc->cfg.stats = stats;
}

void bench_client_output(const struct bench_client *bc, const uint8_t **out1,
                         size_t *out1_len, const uint8_t **out2,
                         size_t *out2_len) {
  *out1 = bc->out.data;
  *out1_len = bc->out.len;
  *out2 = bc->body;
  *out2_len = bc->body_len;
}

void bench_client_output_sent(struct bench_client *bc, size_t n) {
  size_t from_out = n < bc->out.len ? n : bc->out.len;
  buf_consume(&bc->out, from_out);
  n -= from_out;
  if (n > 0) {
    n = n < bc->body_len ? n : bc->body_len;
    bc->body += n;
    bc->body_len -= n;
  }
  if (bc->body_len == 0) {
    bc->body = NULL;
  }
}

int bench_client_result(const struct bench_client *bc) {
  return bc->result;
}

int bench_client_last_code(const struct bench_client *bc) {
  return bc->last_code;
}

enum bench_client_error bench_client_error(const struct bench_client *bc) {
  return bc->error;
}

int bench_client_in_txn(const struct bench_client *bc) {
  return bc->state == BENCH_CLIENT_TXN || bc->state == BENCH_CLIENT_BODY;
}

int bench_client_make_body(struct buf *out, size_t size) {
  static const char alphabet[] =
      ".ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-";
  size_t num_alpha = sizeof(alphabet) - 1;
  buf_reset(out);
  size_t left = size;
  for (size_t line = 0; left > 0; line++) {
    /* 76 + CRLF per line; the last line takes what is left, and 79 left
     * becomes 75 + 2 so no 1-octet remainder is forced up to a CRLF. */
    size_t n = left >= 78 ? (left == 79 ? 75 : 76) : (left > 2 ? left - 2 : 0);
    char text[77];
    for (size_t i = 0; i < n; i++) {
      text[i] = alphabet[(line + i) % num_alpha];
    }
    /* RFC 5321 §4.5.2: a line starting with "." gets one more. */
    if (n > 0 && text[0] == '.' && buf_append(out, ".", 1) != 0) {
      return -1;
    }
    if (buf_append(out, text, n) != 0 || buf_append(out, "\r\n", 2) != 0) {
      return -1;
    }
    left -= left >= n + 2 ? n + 2 : left;
  }
  return buf_append(out, ".\r\n", 3);
}
