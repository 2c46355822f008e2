/* core/daemon/session.c — glue between a connection and the SMTP engine:
 * relay verdicts at RCPT, the spool commit at end of message, logs and
 * counters. Runs on the connection's worker thread. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/daemon/daemon.h"
#include "core/log.h"
#include "policy/access.h"

static void session_move_output(struct conn *c);

static const char *const listener_label[] = {"smtp", "submission",
                                             "submissions"};

#define SESSION_MAX_STACK_RCPTS 128

int session_start(struct conn *c) {
  struct worker *w = c->w;
  const struct config *cfg = w->cfg;
  struct runtime *rt = cfg_runtime(cfg);
  int submission = c->kind != LISTEN_SMTP;
  struct smtp_server_config sc = {
      .hostname = cfg->hostname,
      .extensions = SMTP_EXT_ALL,
      .stats = &w->m.smtp,
      .tls_active = c->kind == LISTEN_SUBMISSIONS,
      .tls_required =
          c->kind == LISTEN_SUBMISSION && cfg->submission_require_tls,
      .auth_required = submission && cfg->submission_require_auth,
  };
  /* STARTTLS where there is a certificate (on port 25 unless switched
   * off); AUTH on the submission listeners only, where users are. */
  if (rt->tls_server != NULL && c->kind != LISTEN_SUBMISSIONS &&
      (submission || cfg->smtp_starttls)) {
    sc.extensions |= SMTP_EXT_STARTTLS;
  }
  if (rt->auth != NULL && submission) {
    sc.extensions |= SMTP_EXT_AUTH;
  }
  /* RFC 8689: offered inside TLS; such a message leaves only over
   * verified TLS (delivery.c). */
  if (rt->tls_server != NULL) {
    sc.extensions |= SMTP_EXT_REQUIRETLS;
  }
  smtp_server_limits_default(&sc.limits);
  sc.limits.max_message_size = cfg->message_size_limit;
  sc.limits.max_recipients = cfg->recipient_limit;
  sc.limits.max_header_size = cfg->header_size_limit;
  sc.limits.max_errors = cfg->error_limit;
  c->smtp = smtp_server_new(&sc);
  if (c->smtp == NULL) {
    return -1;
  }
  c->session_id = ((uint64_t)w->index << 56) | ++w->next_session;
  /* Thread and sequence: unique per run, short enough to grep. */
  snprintf(c->session_text, sizeof(c->session_text), "%u.%llu", w->index,
           (unsigned long long)w->next_session);
  struct log_rec r;
  log_begin(&r, "connect");
  log_str(&r, "session", c->session_text);
  log_str(&r, "client", c->peer_text);
  log_str(&r, "listener", listener_label[c->kind]);
  log_end(&r);
  session_pump(c);
  return 0;
}

void session_free(struct conn *c) {
  if (c->smtp == NULL) {
    return;
  }
  struct log_rec r;
  log_begin(&r, "disconnect");
  log_str(&r, "session", c->session_text);
  log_str(&r, "client", c->peer_text);
  log_end(&r);
  spf_run_free(c->spf);
  c->spf = NULL;
  smtp_server_free(c->smtp);
  c->smtp = NULL;
}

/* session_set_deadline arms the RFC 5321 §4.5.3.2 timeout that applies in
 * the engine's current state. */
static void session_set_deadline(struct conn *c) {
  const struct config *cfg = c->w->cfg;
  if (c->tls != NULL && !c->tls_ready) {
    return; /* the handshake's own deadline (conn_tls_start_server) */
  }
  switch (smtp_server_timeout_class(c->smtp)) {
  case SMTP_TIMEOUT_COMMAND:
    c->deadline_ms = c->w->now_ms + (int64_t)cfg->timeout_command * 1000;
    break;
  case SMTP_TIMEOUT_DATA:
    c->deadline_ms = c->w->now_ms + (int64_t)cfg->timeout_data * 1000;
    break;
  case SMTP_TIMEOUT_NONE:
    c->deadline_ms = 0;
    break;
  }
}

static void session_set_received(struct conn *c);

static void session_on_rcpt(struct conn *c) {
  struct worker *w = c->w;
  const struct smtp_rcpt *rcpt = smtp_server_pending_rcpt(c->smtp);
  struct access_verdict v;
  access_check_rcpt(w->cfg, (const struct sockaddr *)&c->peer, rcpt->addr,
                    rcpt->source_route, &v);
  /* RFC 4954 §6 / RFC 6409: an authenticated user may relay. */
  if (v.accept || smtp_server_authenticated(c->smtp)) {
    smtp_server_accept(c->smtp);
    session_set_received(c);
    return;
  }
  smtp_server_reject(c->smtp, v.code, v.enhanced, v.text);
  METRIC_ADD(w->m.rcpts_rejected[REJECT_RELAY_DENIED], 1);
  struct log_rec r;
  log_begin(&r, "reject");
  log_str(&r, "session", c->session_text);
  log_str(&r, "client", c->peer_text);
  log_str(&r, "reason", v.reason);
  log_str(&r, "from", smtp_server_envelope(c->smtp)->sender);
  log_str(&r, "to", rcpt->addr);
  log_end(&r);
}

/* session_trusted: a client that may relay (mynetworks, AUTH) sends mail
 * out: signed, not checked. Others send mail in: checked. */
static int session_trusted(struct conn *c) {
  return smtp_server_authenticated(c->smtp) ||
         access_client_in_mynetworks(c->w->cfg,
                                     (const struct sockaddr *)&c->peer);
}

/* session_checked: the inbound checks (SPF, DKIM verification, DMARC)
 * apply to this untrusted client's listener (inbound_checks). */
static int session_checked(struct conn *c) {
  return !session_trusted(c) &&
         (c->w->cfg->inbound_checks >> (unsigned)c->kind & 1u) != 0;
}

/* session_on_mail: an authenticated user may use only its own sender
 * addresses (Postfix's reject_sender_login_mismatch). */
static void session_on_mail(struct conn *c) {
  struct worker *w = c->w;
  struct runtime *rt = cfg_runtime(w->cfg);
  const char *user = smtp_server_auth_user(c->smtp);
  const char *sender = smtp_server_envelope(c->smtp)->sender;
  if (!smtp_server_authenticated(c->smtp) || !w->cfg->auth_sender_login_match ||
      rt->auth == NULL || auth_db_may_send_as(rt->auth, user, sender)) {
    /* Mail in from outside: its SPF check runs while the client goes on. */
    if (w->cfg->spf_enabled && session_checked(c)) {
      spf_run_start(c);
    }
    smtp_server_accept(c->smtp);
    return;
  }
  METRIC_ADD(w->m.messages_rejected[REJECT_RELAY_DENIED], 1);
  struct log_rec r;
  log_begin(&r, "reject");
  log_str(&r, "session", c->session_text);
  log_str(&r, "client", c->peer_text);
  log_str(&r, "reason", "sender_login_mismatch");
  log_str(&r, "user", user);
  log_str(&r, "from", sender);
  log_end(&r);
  /* Last: the verdict frees the envelope the log read. */
  smtp_server_reject(c->smtp, 553, "5.7.1",
                     "Sender address rejected: not owned by the "
                     "authenticated user");
}

/* session_on_starttls: the engine sent 220 and dropped what the client
 * pipelined after STARTTLS; whatever we hold unread is dropped too
 * (CVE-2011-0411), then every later byte is TLS. */
static void session_on_starttls(struct conn *c) {
  session_move_output(c); /* the 220 leaves in plaintext */
  size_t dropped = c->held.len + smtp_server_discarded(c->smtp);
  buf_reset(&c->held); /* plaintext: nothing secret was in it */
  if (dropped > 0) {
    struct log_rec r;
    log_begin(&r, "starttls_discard");
    log_str(&r, "session", c->session_text);
    log_str(&r, "client", c->peer_text);
    log_u64(&r, "bytes", dropped);
    log_end(&r);
  }
  if (conn_tls_start_server(c) != 0) {
    conn_close(c);
  }
}

void session_on_tls_ready(struct conn *c) {
  struct log_rec r;
  log_begin(&r, "tls");
  log_str(&r, "session", c->session_text);
  log_str(&r, "client", c->peer_text);
  log_str(&r, "version", tls_version(c->tls));
  log_str(&r, "cipher", tls_cipher(c->tls));
  log_u64(&r, "resumed", (uint64_t)tls_session_reused(c->tls));
  if (tls_sni(c->tls) != NULL) {
    log_str(&r, "sni", tls_sni(c->tls));
  }
  log_end(&r);
  if (c->kind != LISTEN_SUBMISSIONS) {
    smtp_server_tls_started(c->smtp); /* the client must EHLO again */
  }
  session_pump(c);
}

/* A password check on the pool: the hash costs milliseconds on purpose. */
struct auth_job {
  struct local_job lj; /* first: the pool sees only this */
  struct conn *c;
  struct runtime *rt;
  int ok;
  char user[256];
  char password[AUTH_MAX_PASSWORD + 1];
};

static void session_auth_run(struct local_job *lj) {
  struct auth_job *aj = (struct auth_job *)lj;
  aj->ok = auth_db_check(aj->rt->auth, aj->user, aj->password);
  explicit_bzero(aj->password, sizeof(aj->password));
}

static void session_auth_log(struct conn *c, const char *user,
                             const char *result) {
  struct log_rec r;
  log_begin(&r, "auth");
  log_str(&r, "session", c->session_text);
  log_str(&r, "client", c->peer_text);
  log_str(&r, "user", user);
  log_str(&r, "result", result);
  log_end(&r);
}

static void session_auth_done(struct worker *w, struct local_job *lj) {
  struct auth_job *aj = (struct auth_job *)lj;
  struct conn *c = aj->c;
  c->auth_pending = 0;
  const struct sockaddr *peer = (const struct sockaddr *)&c->peer;
  if (aj->ok) {
    auth_limiter_refund(w->d->auth_limiter, peer); /* see session_on_auth */
  }
  METRIC_ADD(w->m.auth_attempts[aj->ok ? AUTH_SUCCESS : AUTH_FAILURE], 1);
  runtime_put(aj->rt);
  if (!c->shut && c->smtp != NULL) {
    session_auth_log(c, aj->user, aj->ok ? "success" : "failure");
    smtp_server_auth_result(c->smtp, aj->ok);
    session_pump(c);
  }
  free(aj);
  conn_maybe_free(c);
}

/* session_on_auth checks the limiter, then hands the check to the pool;
 * the engine keeps later input until the verdict (no password is logged,
 * and it is wiped once used). */
static void session_on_auth(struct conn *c) {
  struct worker *w = c->w;
  struct runtime *rt = cfg_runtime(w->cfg);
  const char *user = smtp_server_auth_user(c->smtp);
  if (auth_limiter_blocked(
          w->d->auth_limiter, (const struct sockaddr *)&c->peer,
          daemon_mono_ns() / 1000000, w->cfg->auth_max_failures,
          w->cfg->auth_failure_window)) {
    METRIC_ADD(w->m.auth_attempts[AUTH_BLOCKED], 1);
    session_auth_log(c, user, "blocked");
    smtp_server_reject(c->smtp, 454, "4.7.0",
                       "Too many failed authentication attempts, try again "
                       "later");
    return;
  }
  /* Counted as a failure now, refunded if it succeeds: attempts in
   * flight at once cannot all pass the limit. */
  auth_limiter_failed(w->d->auth_limiter, (const struct sockaddr *)&c->peer,
                      daemon_mono_ns() / 1000000, w->cfg->auth_failure_window);
  struct auth_job *aj = calloc(1, sizeof(*aj));
  if (aj == NULL || rt->auth == NULL) {
    free(aj);
    smtp_server_reject(c->smtp, 454, "4.7.0",
                       "Temporary authentication failure");
    return;
  }
  aj->lj.w = w;
  aj->lj.run = session_auth_run;
  aj->lj.done = session_auth_done;
  aj->c = c;
  aj->rt = rt;
  runtime_up_ref(rt);
  snprintf(aj->user, sizeof(aj->user), "%s", user);
  snprintf(aj->password, sizeof(aj->password), "%s",
           smtp_server_auth_password(c->smtp));
  c->auth_pending = 1;
  /* Ahead of queued Maildir writes and policy fetches: a client waits. */
  local_pool_submit_front(w->d, &aj->lj);
}

/* session_received_date formats `now` the way Received: says it. */
static size_t session_received_date(char date[64], int64_t now_ms) {
  time_t now = (time_t)(now_ms / 1000);
  struct tm tm;
  gmtime_r(&now, &tm);
  return strftime(date, 64, "%a, %d %b %Y %H:%M:%S +0000", &tm);
}

/* session_received_header appends the trace header RFC 5321 §4.4 requires
 * at the top of every message we accept. Peer-supplied text (HELO) is
 * cleaned so it cannot break the header. Where the queue id and the date
 * went is stored in *qid_off and *date_off (offsets in out), so they can
 * be written over later. */
static int session_received_header(struct conn *c, struct buf *out,
                                   const char *qid,
                                   const struct smtp_envelope *env,
                                   size_t *qid_off, size_t *date_off) {
  char helo[256];
  const char *h = smtp_server_helo(c->smtp);
  size_t n = 0;
  for (; h != NULL && h[n] != '\0' && n < sizeof(helo) - 1; n++) {
    unsigned char ch = (unsigned char)h[n];
    helo[n] =
        (ch > 0x20 && ch < 0x7f && ch != '(' && ch != ')') ? (char)ch : '?';
  }
  helo[n] = '\0';
  char date[64];
  session_received_date(date, c->w->now_ms);
  int rc = buf_printf(out,
                      "Received: from %s ([%s])\r\n\tby %s (postseal) with "
                      "%s id ",
                      n ? helo : "unknown", c->peer_text, c->w->cfg->hostname,
                      smtp_server_protocol(c->smtp));
  *qid_off = out->len;
  rc |= buf_append_str(out, qid);
  if (c->tls != NULL && c->tls_ready) {
    rc |= buf_printf(out, "\r\n\t(using %s with cipher %s (%d bits))",
                     tls_version(c->tls), tls_cipher(c->tls),
                     tls_cipher_bits(c->tls));
  }
  /* "for" only with one recipient: more would disclose the others. */
  if (env->num_rcpts == 1 && strlen(env->rcpts[0].addr) < 400) {
    rc |= buf_printf(out, "\r\n\tfor <%s>", env->rcpts[0].addr);
  }
  rc |= buf_append_str(out, "; ");
  *date_off = out->len;
  rc |= buf_printf(out, "%s\r\n", date);
  return rc;
}

/* session_set_received: after each accepted RCPT, our Received: field
 * (which names the one recipient, if there is one) becomes the prefix of
 * the body the engine will store, so the body is not copied once more to
 * put it on top; session_on_message writes the queue id and the date in.
 * Without it (out of memory), session_on_message prepends a copy. The
 * field changes only with the first and second recipient ("for" goes);
 * later ones leave it as it is. */
static void session_set_received(struct conn *c) {
  if (smtp_server_envelope(c->smtp)->num_rcpts > 2) {
    return;
  }
  struct buf hdr = {0};
  size_t qid_off = 0, date_off = 0;
  c->rcv_len = 0;
  if (session_received_header(c, &hdr, "0000000000000000",
                              smtp_server_envelope(c->smtp), &qid_off,
                              &date_off) == 0 &&
      smtp_server_set_body_prefix(c->smtp, hdr.data, hdr.len) == 0) {
    c->rcv_len = hdr.len;
    c->rcv_qid_off = qid_off;
    c->rcv_date_off = date_off;
    c->rcv_date_len = hdr.len - 2 - date_off;
  } else {
    smtp_server_set_body_prefix(c->smtp, NULL, 0);
  }
  buf_free(&hdr);
}

/* session_stage_commit stages a finished message (cm->data complete:
 * trace and authentication headers on top) for the next group commit; the
 * 250 goes out only when that commit is durable. The envelope is the
 * engine's, which holds still while c->commit_pending is set. Returns 0,
 * or -1 with cm left to the caller. */
int session_stage_commit(struct conn *c, struct commit *cm) {
  struct worker *w = c->w;
  const struct smtp_envelope *env = smtp_server_envelope(c->smtp);
  struct spool_rcpt stack_rcpts[SESSION_MAX_STACK_RCPTS];
  struct spool_rcpt *rcpts = stack_rcpts;
  if (env->num_rcpts > SESSION_MAX_STACK_RCPTS) {
    rcpts = calloc(env->num_rcpts, sizeof(*rcpts));
    if (rcpts == NULL) {
      return -1;
    }
  }
  for (size_t i = 0; i < env->num_rcpts; i++) {
    rcpts[i].addr = env->rcpts[i].addr;
    rcpts[i].notify = env->rcpts[i].notify;
    rcpts[i].orcpt = env->rcpts[i].orcpt;
  }
  struct spool_message m = {
      .queue_id = cm->queue_id,
      .arrival_ms = w->now_ms,
      .sender = env->sender,
      .envid = env->envid,
      .ret = (uint8_t)env->ret,
      .body_type = (uint8_t)env->body,
      .smtputf8 = (uint8_t)env->smtputf8,
      .requiretls = (uint8_t)env->requiretls,
      .client_addr = c->peer_text,
      .helo = smtp_server_helo(c->smtp) ? smtp_server_helo(c->smtp) : "",
      .num_rcpts = env->num_rcpts,
      .rcpts = rcpts,
      .body = cm->data.data,
      .body_len = cm->data.len,
  };
  int rc = -1;
  /* The delivery queue's copy of the envelope, queued once durable. */
  cm->msg = delivery_msg_new(&m);
  if (cm->msg != NULL) {
    cm->rec_len = delivery_msg_record_len(cm->msg);
    rc = worker_spool_add(w, cm, &m);
    if (rc != 0) {
      delivery_msg_free(cm->msg);
      cm->msg = NULL;
    }
  }
  if (rc == 0) {
    c->message_size = cm->data.len;
    if (cm->quarantine && delivery_stage_quarantine(w, cm->msg) != 0) {
      log_msg("error", "cannot stage the quarantine hold of a message: it "
                       "will be delivered");
    }
  }
  if (rcpts != stack_rcpts) {
    free(rcpts);
  }
  return rc;
}

/* session_stage_failed answers a message the DKIM stage took but could
 * not pass on (451), and frees cm. */
void session_stage_failed(struct conn *c, struct commit *cm) {
  session_on_commit(c, cm, -EIO);
  delivery_msg_free(cm->msg);
  buf_free(&cm->data);
  free(cm);
  conn_maybe_free(c);
}

/* session_on_message builds the message to store (our Received: on top
 * of what the client sent), passes it through the S/MIME stage (sign and
 * encrypt out, verify in) and hands it to the DKIM stage, which signs or
 * verifies it and stages it later, or stages it now. */
static void session_on_message(struct conn *c) {
  struct worker *w = c->w;
  const struct smtp_envelope *env = smtp_server_envelope(c->smtp);
  struct commit *cm = calloc(1, sizeof(*cm));
  if (cm == NULL) {
    goto fail;
  }
  cm->c = c;
  cm->gen = c->gen;
  cm->queue_id = spool_writer_new_id(w->spool, w->now_ms);
  char qid[SPOOL_QUEUE_ID_LEN + 1];
  spool_queue_id_format(cm->queue_id, qid);
  struct buf body = {0};
  size_t prefix = smtp_server_body_prefix_len(c->smtp);
  smtp_server_take_body(c->smtp, &body);
  char date[64];
  size_t date_len = session_received_date(date, c->w->now_ms);
  if (prefix > 0 && prefix == c->rcv_len && body.len >= prefix &&
      date_len == c->rcv_date_len) {
    /* Our field is on top already (session_set_received): fill it in. */
    memcpy(body.data + c->rcv_qid_off, qid, SPOOL_QUEUE_ID_LEN);
    memcpy(body.data + c->rcv_date_off, date, date_len);
    buf_move(&cm->data, &body);
  } else {
    size_t qid_off, date_off;
    int rc =
        session_received_header(c, &cm->data, qid, env, &qid_off, &date_off);
    /* The engine's prefix (a stale field of ours) is dropped. */
    rc |= buf_append(&cm->data, body.data + prefix, body.len - prefix);
    buf_free(&body);
    if (rc != 0) {
      goto fail;
    }
  }
  c->rcv_len = 0;
  c->queue_id = cm->queue_id;
  c->message_size = cm->data.len;
  c->message_rcpts = env->num_rcpts;
  int trusted = session_trusted(c);
  if (trusted) {
    struct smime_reply sr;
    if (smime_stage_out(c, cm, &sr) != 0) {
      buf_free(&cm->data);
      free(cm);
      smtp_server_reject(c->smtp, sr.code, sr.enhanced, sr.text);
      return;
    }
  } else {
    smime_stage_in(c, cm);
  }
  c->commit_pending = 1;
  int taken = trusted              ? dkim_stage_take(c, cm, 1)
              : session_checked(c) ? dkim_stage_take(c, cm, 0)
                                   : 0;
  /* Not taken: no check wrote the field the S/MIME verdicts go in. */
  if (taken == 0 && !trusted && smime_stage_authres(c, cm) != 0) {
    taken = -1;
  }
  if (taken > 0 || (taken == 0 && session_stage_commit(c, cm) == 0)) {
    return;
  }
  c->commit_pending = 0;
fail:
  if (cm != NULL) {
    buf_free(&cm->data);
    free(cm);
  }
  METRIC_ADD(w->m.messages_rejected[REJECT_SPOOL_ERROR], 1);
  smtp_server_reject(c->smtp, 451, "4.3.0", "Local error in processing");
}

/* session_move_output hands the engine's queued replies to the socket. */
static void session_move_output(struct conn *c) {
  const uint8_t *out;
  size_t out_len;
  smtp_server_output(c->smtp, &out, &out_len);
  if (out_len > 0) {
    conn_send(c, out, out_len);
    smtp_server_output_sent(c->smtp, out_len);
  }
}

/* session_feed_held gives the engine what it could not take before.
 * Returns 1 when nothing is held any more. */
static int session_feed_held(struct conn *c) {
  if (c->held.len == 0) {
    return 1;
  }
  if (smtp_server_feed(c->smtp, c->held.data, c->held.len) != 0) {
    return 0; /* still waiting for a verdict with a full input buffer */
  }
  if (c->tls != NULL) {
    explicit_bzero(c->held.data, c->held.len); /* may hold AUTH lines */
  }
  buf_reset(&c->held);
  return 1;
}

/* session_output_blocked: 1 when the client has not read enough of our
 * replies; running more of its commands would only queue more. */
static int session_output_blocked(const struct conn *c) {
  const uint8_t *out;
  size_t out_len;
  smtp_server_output(c->smtp, &out, &out_len);
  return conn_unsent(c) + out_len > DAEMON_SEND_HIGH;
}

void session_pump(struct conn *c) {
  if (c->smtp == NULL || c->shut || c->closing) {
    return;
  }
  int all_fed = session_feed_held(c);
  int blocked = 0;
  for (;;) {
    if (session_output_blocked(c)) {
      blocked = 1;
      break;
    }
    enum smtp_server_event ev = smtp_server_next(c->smtp);
    if (ev == SMTP_SERVER_NEED_INPUT || ev == SMTP_SERVER_WAIT_VERDICT) {
      break;
    }
    if (ev == SMTP_SERVER_EV_MAIL) {
      session_on_mail(c);
    } else if (ev == SMTP_SERVER_EV_STARTTLS) {
      session_on_starttls(c);
      if (c->closing || c->shut) {
        return;
      }
      break; /* nothing runs until the handshake is done */
    } else if (ev == SMTP_SERVER_EV_AUTH) {
      session_on_auth(c);
    } else if (ev == SMTP_SERVER_EV_RCPT) {
      session_on_rcpt(c);
    } else if (ev == SMTP_SERVER_EV_MESSAGE) {
      session_on_message(c);
    } else if (ev == SMTP_SERVER_EV_CLOSE) {
      session_move_output(c);
      conn_close(c);
      return;
    }
  }
  session_move_output(c);
  session_set_deadline(c);
  if (all_fed && !blocked && c->held.len == 0) {
    all_fed = session_feed_held(c);
  }
  /* Backpressure: read again only when the engine took everything and
   * the client keeps up with our replies. */
  if (!all_fed || blocked) {
    conn_pause(c);
  } else if (conn_unsent(c) < DAEMON_SEND_LOW) {
    conn_resume(c);
  }
  if (c->w->stopping && smtp_server_is_idle(c->smtp) && !c->commit_pending) {
    session_on_shutdown(c);
  }
}

void session_on_input(struct conn *c, const uint8_t *in, size_t in_len) {
  if (c->held.len == 0 && !c->paused &&
      smtp_server_feed(c->smtp, in, in_len) == 0) {
    session_pump(c);
    return;
  }
  /* The engine is full (a verdict is owed) or the client does not read
   * its replies: keep the bytes and stop reading. Only the few buffers
   * already in flight can still arrive, so `held` stays small. */
  if (buf_append(&c->held, in, in_len) != 0) {
    conn_close(c);
    return;
  }
  conn_pause(c);
  session_pump(c);
}

static const char *session_commit_status(int err, int *out_code,
                                         const char **out_enhanced) {
  if (err == -ENOSPC || err == -EDQUOT) {
    *out_code = 452;
    *out_enhanced = "4.3.1";
    return "Insufficient system storage, try again later";
  }
  *out_code = 451;
  *out_enhanced = "4.3.0";
  return "Local error in processing, try again later";
}

void session_on_commit(struct conn *c, struct commit *cm, int err) {
  struct worker *w = c->w;
  c->commit_pending = 0;
  char qid[SPOOL_QUEUE_ID_LEN + 1];
  spool_queue_id_format(cm->queue_id, qid);
  struct log_rec r;
  if (err == 0) {
    METRIC_ADD(w->m.messages_accepted, 1);
    log_begin(&r, "queued");
    log_str(&r, "qid", qid);
    log_str(&r, "session", c->session_text);
    log_str(&r, "client", c->peer_text);
    log_str(&r, "from", smtp_server_envelope(c->smtp)->sender);
    log_u64(&r, "size", cm->data.len);
    log_u64(&r, "nrcpt", c->message_rcpts);
    log_end(&r);
  } else {
    int spool_full = (err == -ENOSPC || err == -EDQUOT);
    METRIC_ADD(w->m.messages_rejected[spool_full ? REJECT_SPOOL_FULL
                                                 : REJECT_SPOOL_ERROR],
               1);
    log_begin(&r, "reject");
    log_str(&r, "qid", qid);
    log_str(&r, "session", c->session_text);
    log_str(&r, "client", c->peer_text);
    log_str(&r, "reason", spool_full ? "spool_full" : "spool_error");
    log_str(&r, "error", strerror(-err));
    log_end(&r);
  }
  if (c->shut) {
    return; /* the client left; a committed message is still delivered
               (the worker frees the connection after this returns) */
  }
  if (err == 0) {
    smtp_server_reply_queued(c->smtp, qid);
  } else {
    int code;
    const char *enhanced;
    const char *text = session_commit_status(err, &code, &enhanced);
    smtp_server_reject(c->smtp, code, enhanced, text);
  }
  session_pump(c);
}

/* session_close_now sends what the engine queued (its 421) and closes,
 * even when the client is not reading: the close linger bounds that. */
static void session_close_now(struct conn *c) {
  session_move_output(c);
  conn_close(c);
}

void session_on_timeout(struct conn *c) {
  if (c->commit_pending || c->auth_pending) {
    return; /* our own disk or CPU is slow: not the client's fault; wait */
  }
  if (c->tls != NULL && !c->tls_ready) {
    /* (the worker's tick counted the timeout) */
    struct log_rec r;
    log_begin(&r, "tls_handshake_timeout");
    log_str(&r, "session", c->session_text);
    log_str(&r, "client", c->peer_text);
    log_end(&r);
    c->deadline_ms = 0;
    conn_close(c);
    return;
  }
  smtp_server_timeout(c->smtp);
  session_close_now(c);
}

void session_on_shutdown(struct conn *c) {
  if (c->commit_pending || c->smtp == NULL || c->closing) {
    return; /* answered when the commit lands; pump then closes it */
  }
  if (smtp_server_is_idle(c->smtp) || c->w->now_ms >= c->w->stop_deadline_ms) {
    smtp_server_shutdown(c->smtp);
    session_close_now(c);
  }
}
