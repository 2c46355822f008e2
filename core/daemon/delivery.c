/* core/daemon/delivery.c — outbound delivery: each worker's in-memory queue
 * of the messages it owns, its connections to the next hop (the relayhost),
 * retries with backoff and expiry, and the DONE records that finish
 * recipients durably.
 *
 * Ownership: a worker owns the messages it committed, and at start-up the
 * recovered ones whose queue_id % num_workers is its index. A message is
 * in exactly one place: the ready FIFO (due now), the waiting list
 * (deferred until next_ms), one connection (in flight), or nowhere while
 * its last DONE records are being made durable; it is freed, and the
 * queue gauge falls, only once every recipient's DONE is durable.
 *
 * Memory: a body committed by this worker stays in memory for its first
 * attempt while the worker holds less than DLV_BODY_BUDGET of bodies; after
 * that attempt (or when over budget, or for recovered messages) it is
 * re-read from the spool record with a blocking pread on the loop thread.
 * That is acceptable for this step (the spool is local and the page cache
 * usually holds recent records); an io_uring read is later work. Recovery
 * reads every pending record once at start-up, also blocking.
 *
 * Routing: every recipient goes to cfg->relayhost, local domains too
 * (Maildir/LMTP come later). With no relayhost (MX routing is not written
 * yet) messages are deferred, never lost. The relay host is resolved with
 * getaddrinfo() on the loop thread at connect time (numeric or
 * /etc/hosts; c-ares comes with MX routing).
 *
 * Thread: everything here runs on the owning worker's thread. */
#include <errno.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/daemon/daemon.h"
#include "proto/dsn.h"
#include "core/log.h"

#define DLV_BODY_BUDGET ((size_t)64 << 20) /* per worker */
#define DLV_SEND_HIGH ((size_t)256 << 10)  /* output queued ahead of send */
#define DLV_MAX_EVENTS 100000              /* per pump: a bound, not a limit */
#define DLV_HOLD_MS 1000 /* pause new connects after a failed one */
/* A connection with nothing to send waits this long for the next message
 * before it QUITs, so a steady trickle reuses connections. */
#define DLV_IDLE_MS 1000

const struct metric_hist_spec daemon_delivery_spec = {
    .num_bounds = 12,
    .bounds = {0.01, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 60, 300, 3600, 86400},
};

struct dlv_rcpt {
  char *addr;
  char *orcpt;
  unsigned notify;
  uint32_t index; /* in the spooled MESSAGE record */
  int done;       /* a DONE record was staged (or is, with the bounce) */
  /* Bounced in this attempt: its DONE is staged after the DSN that
   * reports it, so the DSN is durable no later than the DONE. */
  struct smtp_reply *bounce;
  char bounce_relay[300];
};

struct dlv_msg {
  struct dlv_msg *next;
  char qid[SPOOL_QUEUE_ID_LEN + 1];
  char *sender;
  char *envid;
  uint8_t ret, body_type, smtputf8;
  struct dlv_rcpt *rcpts;
  size_t num_rcpts;
  size_t num_open; /* recipients without a DONE */
  unsigned attempts;
  int64_t next_ms;
  struct spool_entry loc; /* where the record lives: for re-reading */
  struct buf body;        /* empty: re-read from the spool */
  int in_flight;
  unsigned pending_dones; /* DONE records staged, not yet durable */
};

/* The delivery side of an outbound connection. */
struct dlv_conn {
  struct smtp_client *cl;
  struct sockaddr_storage addr;
  socklen_t addr_len;
  char relay[300];     /* host:port, for logs */
  int starting;        /* not yet ready for its first message */
  int connect_expired; /* the connect timeout cancelled the connect */
  unsigned num_msgs;   /* messages started on this connection */
  int idle;            /* in the worker's idle list, READY, no message */
  int64_t idle_until;
  struct conn *idle_next;
  struct dlv_msg *msg; /* in flight */
  /* The attempt's view of msg, read by the engine until MESSAGE_DONE. */
  struct smtp_client_message cm;
  struct smtp_client_rcpt *crcpts;
  size_t *map; /* engine recipient -> msg recipient */
  struct smtp_client_span span;
  struct buf storage; /* a re-read record */
  struct buf rcpt_storage;
};

static uint64_t dlv_done_len;

/* ---- messages ---- */

void delivery_msg_free(struct dlv_msg *m) {
  if (m == NULL) {
    return;
  }
  for (size_t i = 0; i < m->num_rcpts; i++) {
    free(m->rcpts[i].addr);
    free(m->rcpts[i].orcpt);
    free(m->rcpts[i].bounce);
  }
  free(m->rcpts);
  free(m->sender);
  free(m->envid);
  buf_free(&m->body);
  free(m);
}

/* delivery_msg_new copies the envelope of m and notes its record length
 * (the writer lays out the head it encodes, then the body). */
struct dlv_msg *delivery_msg_new(const struct spool_message *m) {
  struct dlv_msg *dm = calloc(1, sizeof(*dm));
  if (dm == NULL) {
    return NULL;
  }
  dm->rcpts = calloc(m->num_rcpts ? m->num_rcpts : 1, sizeof(*dm->rcpts));
  dm->sender = strdup(m->sender ? m->sender : "");
  dm->envid = m->envid ? strdup(m->envid) : NULL;
  int bad = dm->rcpts == NULL || dm->sender == NULL ||
            (m->envid != NULL && dm->envid == NULL);
  for (size_t i = 0; !bad && i < m->num_rcpts; i++) {
    struct dlv_rcpt *r = &dm->rcpts[i];
    dm->num_rcpts++;
    r->index = (uint32_t)i;
    r->notify = m->rcpts[i].notify;
    r->addr = strdup(m->rcpts[i].addr);
    r->orcpt = m->rcpts[i].orcpt ? strdup(m->rcpts[i].orcpt) : NULL;
    bad = r->addr == NULL || (m->rcpts[i].orcpt != NULL && r->orcpt == NULL);
  }
  struct buf head = {0};
  size_t head_len = 0;
  if (bad || spool_message_encode_head(&head, m, &head_len) != 0) {
    buf_free(&head);
    delivery_msg_free(dm);
    return NULL;
  }
  buf_free(&head);
  spool_queue_id_format(m->queue_id, dm->qid);
  dm->num_open = dm->num_rcpts;
  dm->ret = m->ret;
  dm->body_type = m->body_type;
  dm->smtputf8 = m->smtputf8;
  dm->loc.queue_id = m->queue_id;
  dm->loc.arrival_ms = m->arrival_ms;
  dm->loc.num_rcpts = m->num_rcpts;
  dm->loc.body_len = m->body_len;
  dm->loc.record_len = head_len + m->body_len;
  return dm;
}

uint64_t delivery_msg_record_len(const struct dlv_msg *m) {
  return m->loc.record_len;
}

uint64_t delivery_done_record_len(void) {
  if (dlv_done_len == 0) {
    struct buf b = {0};
    struct spool_done d = {.queue_id = 1, .outcome = SPOOL_OUTCOME_DELIVERED};
    if (spool_done_encode(&b, &d) == 0) {
      __atomic_store_n(&dlv_done_len, b.len, __ATOMIC_RELAXED);
    }
    buf_free(&b);
  }
  return __atomic_load_n(&dlv_done_len, __ATOMIC_RELAXED);
}

static void dlv_ready_push(struct worker *w, struct dlv_msg *m) {
  m->next = NULL;
  if (w->dlv_ready_tail != NULL) {
    w->dlv_ready_tail->next = m;
  } else {
    w->dlv_ready_head = m;
  }
  w->dlv_ready_tail = m;
  w->dlv_num_ready++;
}

static struct dlv_msg *dlv_ready_pop(struct worker *w) {
  struct dlv_msg *m = w->dlv_ready_head;
  if (m == NULL) {
    return NULL;
  }
  w->dlv_ready_head = m->next;
  if (w->dlv_ready_head == NULL) {
    w->dlv_ready_tail = NULL;
  }
  w->dlv_num_ready--;
  m->next = NULL;
  return m;
}

static void dlv_drop_body(struct worker *w, struct dlv_msg *m) {
  w->dlv_body_bytes -= m->body.len;
  buf_free(&m->body);
}

void delivery_on_committed(struct worker *w, struct dlv_msg *m,
                           struct buf *body, const char *segment,
                           uint64_t offset) {
  snprintf(m->loc.segment, sizeof(m->loc.segment), "%s", segment);
  m->loc.offset = offset;
  if (w->dlv_body_bytes + body->len <= DLV_BODY_BUDGET) {
    m->body = *body; /* taken over: the commit no longer needs it */
    *body = (struct buf){0};
    w->dlv_body_bytes += m->body.len;
  }
  METRIC_ADD(w->m.queue_messages, 1);
  m->next_ms = w->now_ms;
  dlv_ready_push(w, m);
}

int delivery_recover(struct worker *w, const struct spool_scan *scan,
                     const struct spool_entry *e) {
  struct buf storage = {0}, rcpt_storage = {0};
  struct spool_message m;
  struct dlv_msg *dm = NULL;
  if (spool_read_message(w->d->spool_dir, e, &storage, &m, &rcpt_storage) ==
      0) {
    dm = delivery_msg_new(&m);
  }
  buf_free(&storage);
  buf_free(&rcpt_storage);
  if (dm == NULL) {
    char qid[SPOOL_QUEUE_ID_LEN + 1];
    spool_queue_id_format(e->queue_id, qid);
    log_msg("error", "qid=%s: cannot load the queued message: %s", qid,
            strerror(errno ? errno : EPROTO));
    return -1;
  }
  dm->loc = *e;
  for (size_t i = 0; i < dm->num_rcpts; i++) {
    if (spool_scan_rcpt_done(scan, e->queue_id, (uint32_t)i)) {
      dm->rcpts[i].done = 1;
      dm->num_open--;
    }
  }
  if (dm->num_open == 0) {
    delivery_msg_free(dm);
    return 0;
  }
  METRIC_ADD(w->m.queue_messages, 1);
  dlv_ready_push(w, dm);
  return 0;
}

/* dlv_msg_finish: every recipient has a durable DONE: the message leaves
 * the queue. */
static void dlv_msg_finish(struct worker *w, struct dlv_msg *m) {
  METRIC_ADD(w->m.queue_messages, -1);
  struct log_rec r;
  log_begin(&r, "removed");
  log_str(&r, "qid", m->qid);
  log_end(&r);
  dlv_drop_body(w, m);
  delivery_msg_free(m);
}

void delivery_on_done_durable(struct worker *w, struct dlv_msg *m, int err) {
  if (err != 0) {
    /* The recipient stays pending on disk: delivered again after a
     * restart (at least once), never lost. */
    log_msg("error",
            "qid=%s: DONE record not durable (%s); the recipient may be "
            "delivered again after a restart",
            m->qid, strerror(-err));
  }
  m->pending_dones--;
  if (m->num_open == 0 && m->pending_dones == 0 && !m->in_flight) {
    dlv_msg_finish(w, m);
  }
}

/* ---- outcomes ---- */

static const char *const result_names[DLV_RESULT_COUNT] = {
    "delivered", "deferred", "bounced"};

/* dlv_log writes the one line of an attempt's outcome for a recipient. */
static void dlv_log(struct worker *w, const struct dlv_msg *m,
                    const struct dlv_rcpt *rc, enum dlv_result res,
                    const char *relay, const struct smtp_reply *reply) {
  char dsn[SMTP_REPLY_MAX_ENHANCED];
  char status[SMTP_REPLY_MAX_TEXT + 32];
  char delay[32];
  int cls = reply->code / 100;
  if (reply->enhanced[0] != '\0') {
    snprintf(dsn, sizeof(dsn), "%s", reply->enhanced);
  } else {
    snprintf(dsn, sizeof(dsn), "%d.0.0", cls >= 2 && cls <= 5 ? cls : 4);
  }
  snprintf(status, sizeof(status), "%d %s %s", reply->code, dsn, reply->text);
  int64_t ms = w->now_ms - m->loc.arrival_ms;
  snprintf(delay, sizeof(delay), "%.1f", ms > 0 ? (double)ms / 1000.0 : 0.0);
  struct log_rec r;
  log_begin(&r, result_names[res]);
  log_str(&r, "qid", m->qid);
  log_str(&r, "from", m->sender);
  log_str(&r, "to", rc->addr);
  log_str(&r, "relay", relay ? relay : "none");
  log_str(&r, "delay", delay);
  log_u64(&r, "attempts", m->attempts + 1);
  log_str(&r, "dsn", dsn);
  log_str(&r, "status", status);
  if (res == DLV_BOUNCED) {
    /* A bounce is never bounced (RFC 5321 §6.1); NOTIFY may refuse one
     * (RFC 3461 §4.1). */
    int asked = rc->notify == 0 || (rc->notify & SMTP_NOTIFY_FAILURE);
    log_str(&r, "report",
            !m->sender[0] ? "none_null_sender"
            : asked       ? "dsn"
                          : "none_notify");
  }
  log_end(&r);
  METRIC_ADD(w->m.dlv_attempts[res], 1);
  if (res == DLV_DELIVERED) {
    metric_hist_observe(&w->m.dlv_seconds, &daemon_delivery_spec,
                        ms > 0 ? (double)ms / 1000.0 : 0.0);
  }
}

static void dlv_stage_done(struct worker *w, struct dlv_msg *m,
                           struct dlv_rcpt *rc, enum dlv_result res);

/* dlv_relay_host keeps the host of a "host:port" or "[v6]:port" relay
 * text, for the DSN's Remote-MTA. */
static void dlv_relay_host(const char *relay, char *out, size_t out_len) {
  snprintf(out, out_len, "%s", relay ? relay : "");
  if (out[0] == '[') {
    char *end = strchr(out, ']');
    size_t n = end ? (size_t)(end - out - 1) : 0;
    memmove(out, out + 1, n);
    out[n] = '\0';
    return;
  }
  char *colon = strrchr(out, ':');
  if (colon != NULL) {
    *colon = '\0';
  }
}

/* dlv_finish_rcpt logs a final outcome and stages its DONE record through
 * the group commit; the message is removed once those are durable. */
static void dlv_finish_rcpt(struct worker *w, struct dlv_msg *m, size_t i,
                            enum dlv_result res, const char *relay,
                            const struct smtp_reply *reply) {
  struct dlv_rcpt *rc = &m->rcpts[i];
  if (rc->done) {
    return;
  }
  dlv_log(w, m, rc, res, relay, reply);
  rc->done = 1;
  m->num_open--;
  if (res == DLV_BOUNCED) {
    rc->bounce = malloc(sizeof(*rc->bounce));
    if (rc->bounce != NULL) {
      *rc->bounce = *reply;
      dlv_relay_host(relay, rc->bounce_relay, sizeof(rc->bounce_relay));
      return; /* dlv_flush_bounces stages the DSN, then the DONE */
    }
  }
  dlv_stage_done(w, m, rc, res);
}

/* dlv_stage_done stages the DONE record of a finished recipient. */
static void dlv_stage_done(struct worker *w, struct dlv_msg *m,
                           struct dlv_rcpt *rc, enum dlv_result res) {
  struct commit *cm = calloc(1, sizeof(*cm));
  struct spool_done d = {
      .queue_id = m->loc.queue_id,
      .rcpt_index = rc->index,
      .outcome = res == DLV_DELIVERED ? SPOOL_OUTCOME_DELIVERED
                                      : SPOOL_OUTCOME_BOUNCED,
      .when_ms = w->now_ms,
  };
  if (cm != NULL) {
    cm->queue_id = m->loc.queue_id;
    cm->done_for = m;
    cm->rec_len = delivery_done_record_len();
  }
  if (cm == NULL || spool_writer_add_done(w->spool, &d, cm) != 0) {
    free(cm);
    log_msg("error",
            "qid=%s: cannot stage a DONE record; the recipient may be "
            "delivered again after a restart",
            m->qid);
    return;
  }
  m->pending_dones++;
}

/* dlv_dsn_original finds the original message for a DSN: the body in
 * memory, or the spool record (a blocking read; bounces are rare). */
static int dlv_dsn_original(struct worker *w, struct dlv_msg *m,
                            struct buf *storage, struct buf *rcpt_storage,
                            const uint8_t **out, size_t *out_len) {
  if (m->body.len > 0) {
    *out = m->body.data;
    *out_len = m->body.len;
    return 0;
  }
  struct spool_message sm;
  if (spool_read_message(w->d->spool_dir, &m->loc, storage, &sm,
                         rcpt_storage) != 0 ||
      sm.queue_id != m->loc.queue_id) {
    return -1;
  }
  *out = sm.body;
  *out_len = sm.body_len;
  return 0;
}

/* dlv_fill_dsn_rcpt describes one bounced recipient for the DSN. */
static void dlv_fill_dsn_rcpt(const struct dlv_rcpt *rc, int64_t now_ms,
                              struct dsn_rcpt *out) {
  const struct smtp_reply *r = rc->bounce;
  *out = (struct dsn_rcpt){
      .final_recipient = rc->addr,
      .original_recipient = rc->orcpt,
      .action = DSN_ACTION_FAILED,
      .status = r->enhanced[0]       ? r->enhanced
                : r->code / 100 == 4 ? "4.0.0"
                                     : "5.0.0",
      .remote_mta = rc->bounce_relay[0] ? rc->bounce_relay : NULL,
      .diag_code = r->local ? 0 : r->code,
      .diag_text = r->text,
      .last_attempt_ms = now_ms,
  };
}

/* dlv_queue_dsn builds the RFC 3464 report for the recipients of m that
 * bounced in this attempt and stages it as a new message from <> to the
 * sender, ahead of their DONE records. Returns 0, -1 when it could not be
 * queued now (memory, spool), -2 when no report can ever be built. */
static int dlv_queue_dsn(struct worker *w, struct dlv_msg *m) {
  struct dsn_rcpt *dr = calloc(m->num_rcpts, sizeof(*dr));
  struct commit *cm = calloc(1, sizeof(*cm));
  struct buf storage = {0}, rcpt_storage = {0};
  int rc = -1;
  size_t n = 0;
  for (size_t i = 0; dr != NULL && i < m->num_rcpts; i++) {
    const struct dlv_rcpt *r = &m->rcpts[i];
    if (r->bounce != NULL &&
        (r->notify == 0 || (r->notify & SMTP_NOTIFY_FAILURE))) {
      dlv_fill_dsn_rcpt(r, w->now_ms, &dr[n++]);
    }
  }
  if (dr == NULL || cm == NULL) {
    goto out;
  }
  if (n == 0) {
    rc = 0; /* NOTIFY=NEVER (or without FAILURE) for all of them */
    goto out;
  }
  const uint8_t *orig = NULL;
  size_t orig_len = 0;
  int have_orig =
      dlv_dsn_original(w, m, &storage, &rcpt_storage, &orig, &orig_len) == 0;
  uint64_t qid = spool_writer_new_id(w->spool, w->now_ms);
  struct dsn_info info;
  struct dsn_report rep = {
      .reporting_mta = w->cfg->hostname,
      .envid = m->envid,
      .original_sender = m->sender,
      .smtputf8 = m->smtputf8,
      .arrival_ms = m->loc.arrival_ms,
      .now_ms = w->now_ms,
      .unique = qid,
      .ret = m->ret == SMTP_RET_FULL ? DSN_RET_FULL : DSN_RET_HDRS,
      .original = have_orig ? orig : NULL,
      .original_len = have_orig ? orig_len : 0,
      .max_original_len = w->cfg->message_size_limit / 2,
      .rcpts = dr,
      .num_rcpts = n,
  };
  if (dsn_build(&cm->data, &info, &rep) != 0) {
    rc = -2; /* the report cannot be made (e.g. a sender we cannot write) */
    goto out;
  }
  struct spool_rcpt to = {.addr = m->sender, .notify = SMTP_NOTIFY_NEVER};
  struct spool_message sm = {
      .queue_id = qid,
      .arrival_ms = w->now_ms,
      .sender = "", /* RFC 3464 §2: a DSN goes out from the null path */
      .body_type = info.body_8bit ? SMTP_BODY_8BITMIME : SMTP_BODY_7BIT,
      .smtputf8 = (uint8_t)info.smtputf8,
      .client_addr = "local",
      .helo = "",
      .num_rcpts = 1,
      .rcpts = &to,
      .body = cm->data.data,
      .body_len = cm->data.len,
  };
  cm->queue_id = qid;
  cm->msg = delivery_msg_new(&sm);
  if (cm->msg == NULL) {
    goto out;
  }
  cm->rec_len = delivery_msg_record_len(cm->msg);
  if (worker_spool_add(w, cm, &sm) != 0) {
    delivery_msg_free(cm->msg);
    goto out;
  }
  struct log_rec lr;
  log_begin(&lr, "bounce_queued");
  log_str(&lr, "qid", cm->msg->qid);
  log_str(&lr, "orig_qid", m->qid);
  log_str(&lr, "to", m->sender);
  log_u64(&lr, "nrcpt", n);
  log_end(&lr);
  cm = NULL; /* the group commit owns it now */
  rc = 0;
out:
  if (cm != NULL) {
    buf_free(&cm->data);
    free(cm);
  }
  free(dr);
  buf_free(&storage);
  buf_free(&rcpt_storage);
  return rc;
}

/* dlv_flush_bounces reports this attempt's bounces to the sender (unless
 * it is <>) and then stages their DONE records. If the DSN cannot be
 * queued, the recipients stay open and are tried again later: a bounce is
 * never finished without its report. */
static void dlv_flush_bounces(struct worker *w, struct dlv_msg *m) {
  int any = 0;
  for (size_t i = 0; i < m->num_rcpts; i++) {
    any |= m->rcpts[i].bounce != NULL;
  }
  if (!any) {
    return;
  }
  int res = m->sender[0] == '\0' ? 0 : dlv_queue_dsn(w, m);
  int queued = res != -1;
  if (res == -2) {
    log_msg("error",
            "qid=%s: no bounce report can be built for sender %s; "
            "the bounce is logged only",
            m->qid, m->sender);
  } else if (!queued) {
    log_msg("error",
            "qid=%s: cannot queue the bounce report now; "
            "recipients stay queued and are retried",
            m->qid);
  }
  for (size_t i = 0; i < m->num_rcpts; i++) {
    struct dlv_rcpt *rc = &m->rcpts[i];
    if (rc->bounce == NULL) {
      continue;
    }
    free(rc->bounce);
    rc->bounce = NULL;
    if (queued) {
      dlv_stage_done(w, m, rc, DLV_BOUNCED);
    } else {
      rc->done = 0;
      m->num_open++;
    }
  }
}

/* dlv_backoff_ms: retry_initial * 2^(attempts-1), at most retry_max,
 * then +-20% jitter so a burst of deferrals does not retry in lockstep. */
static int64_t dlv_backoff_ms(struct worker *w, unsigned attempts) {
  const struct config *cfg = w->cfg;
  uint64_t s = cfg->delivery_retry_initial;
  for (unsigned i = 1; i < attempts && s < cfg->delivery_retry_max; i++) {
    s *= 2;
  }
  if (s > cfg->delivery_retry_max) {
    s = cfg->delivery_retry_max;
  }
  w->dlv_seed = w->dlv_seed * 6364136223846793005ULL + 1442695040888963407ULL;
  double jitter = 0.8 + 0.4 * (double)(w->dlv_seed >> 11) / 9007199254740992.0;
  return (int64_t)((double)s * 1000.0 * jitter);
}

/* dlv_after_attempt: the attempt is over; the message is either finished
 * (waiting for its DONEs), expired (the rest bounced), or deferred. */
static void dlv_after_attempt(struct worker *w, struct dlv_msg *m) {
  m->in_flight = 0;
  dlv_flush_bounces(w, m); /* before the body may be dropped */
  if (m->num_open > 0) {
    m->attempts++;
    dlv_drop_body(w, m); /* re-read from the spool next time */
    int64_t age = w->now_ms - m->loc.arrival_ms;
    /* Without a relayhost nothing was tried (MX routing is not built yet):
     * that is our gap, not the destination's, so such mail never expires. */
    int tried = w->cfg->relayhost[0] != '\0';
    if (tried && age >= (int64_t)w->cfg->delivery_max_lifetime * 1000) {
      struct smtp_reply r;
      smtp_reply_set(&r, 450, "4.4.7", "message expired");
      for (size_t i = 0; i < m->num_rcpts; i++) {
        dlv_finish_rcpt(w, m, i, DLV_BOUNCED, NULL, &r);
      }
      dlv_flush_bounces(w, m);
    } else {
      m->next_ms = w->now_ms + dlv_backoff_ms(w, m->attempts);
      m->next = w->dlv_waiting;
      w->dlv_waiting = m;
      return;
    }
  }
  if (m->pending_dones == 0) {
    dlv_msg_finish(w, m);
  }
}

/* dlv_defer_msg defers every open recipient of m with one reply (no
 * connection carried it: no relay, the next hop unreachable). */
static void dlv_defer_msg(struct worker *w, struct dlv_msg *m,
                          const char *relay, const struct smtp_reply *reply) {
  for (size_t i = 0; i < m->num_rcpts; i++) {
    if (!m->rcpts[i].done) {
      dlv_log(w, m, &m->rcpts[i], DLV_DEFERRED, relay, reply);
    }
  }
  dlv_after_attempt(w, m);
}

/* dlv_defer_ready defers every message due now: the next hop is down. */
static void dlv_defer_ready(struct worker *w, const char *relay,
                            const struct smtp_reply *reply) {
  struct dlv_msg *m;
  while ((m = dlv_ready_pop(w)) != NULL) {
    dlv_defer_msg(w, m, relay, reply);
  }
}

/* ---- connections ---- */

static void dlv_conn_release_attempt(struct dlv_conn *dc) {
  buf_free(&dc->storage);
  buf_free(&dc->rcpt_storage);
  free(dc->crcpts);
  free(dc->map);
  dc->crcpts = NULL;
  dc->map = NULL;
  dc->msg = NULL;
}

/* dlv_prepare fills the engine's view of m: its open recipients and its
 * body (in memory, or re-read from its spool record). */
static int dlv_prepare(struct worker *w, struct dlv_conn *dc,
                       struct dlv_msg *m) {
  dc->crcpts = calloc(m->num_open, sizeof(*dc->crcpts));
  dc->map = calloc(m->num_open, sizeof(*dc->map));
  if (dc->crcpts == NULL || dc->map == NULL) {
    return -1;
  }
  size_t n = 0;
  for (size_t i = 0; i < m->num_rcpts && n < m->num_open; i++) {
    if (!m->rcpts[i].done) {
      dc->crcpts[n] = (struct smtp_client_rcpt){
          m->rcpts[i].addr, m->rcpts[i].notify, m->rcpts[i].orcpt};
      dc->map[n++] = i;
    }
  }
  if (m->body.len > 0) {
    dc->span = (struct smtp_client_span){m->body.data, m->body.len};
  } else {
    /* Blocking pread on the loop thread: see the contract above. */
    struct spool_message sm;
    if (spool_read_message(w->d->spool_dir, &m->loc, &dc->storage, &sm,
                           &dc->rcpt_storage) != 0) {
      return -1;
    }
    dc->span = (struct smtp_client_span){sm.body, sm.body_len};
  }
  dc->cm = (struct smtp_client_message){
      .sender = m->sender,
      .ret = (enum smtp_ret)m->ret,
      .envid = m->envid,
      .body_8bit = m->body_type == SMTP_BODY_8BITMIME,
      .smtputf8 = m->smtputf8,
      .rcpts = dc->crcpts,
      .num_rcpts = n,
      .body = &dc->span,
      .num_body = 1,
  };
  return 0;
}

static void dlv_idle_remove(struct conn *c) {
  struct worker *w = c->w;
  struct dlv_conn *dc = c->dlv;
  if (!dc->idle) {
    return;
  }
  dc->idle = 0;
  for (struct conn **pp = &w->dlv_idle; *pp != NULL;
       pp = &(*pp)->dlv->idle_next) {
    if (*pp == c) {
      *pp = dc->idle_next;
      break;
    }
  }
  dc->idle_next = NULL;
}

/* dlv_on_ready: the session is idle: send the next due message; with none
 * due, wait DLV_IDLE_MS in the idle list; QUIT when the connection carried
 * its share, the wait ran out, or we stop. */
static void dlv_on_ready(struct conn *c) {
  struct worker *w = c->w;
  struct dlv_conn *dc = c->dlv;
  if (dc->starting) {
    dc->starting = 0;
    w->dlv_num_starting--;
  }
  if (!w->stopping && w->dlv_num_ready == 0 &&
      dc->num_msgs < w->cfg->delivery_messages_per_connection) {
    dc->idle = 1;
    dc->idle_until = w->now_ms + DLV_IDLE_MS;
    dc->idle_next = w->dlv_idle;
    w->dlv_idle = c;
    return;
  }
  while (!w->stopping &&
         dc->num_msgs < w->cfg->delivery_messages_per_connection) {
    struct dlv_msg *m = dlv_ready_pop(w);
    if (m == NULL) {
      break;
    }
    m->in_flight = 1;
    if (dlv_prepare(w, dc, m) == 0 &&
        smtp_client_send_message(dc->cl, &dc->cm) == 0) {
      dc->msg = m;
      METRIC_ADD(w->m.dlv_conns_reused, dc->num_msgs > 0 ? 1 : 0);
      dc->num_msgs++;
      return;
    }
    dlv_conn_release_attempt(dc);
    struct smtp_reply r;
    smtp_reply_set(&r, 451, "4.3.0", "local error: cannot send the message");
    dlv_defer_msg(w, m, dc->relay, &r);
  }
  smtp_client_quit(dc->cl);
}

static void dlv_on_message_done(struct conn *c) {
  struct worker *w = c->w;
  struct dlv_conn *dc = c->dlv;
  struct dlv_msg *m = dc->msg;
  if (m == NULL) {
    return;
  }
  for (size_t j = 0; j < dc->cm.num_rcpts; j++) {
    struct smtp_reply reply;
    enum smtp_client_status st = smtp_client_rcpt_result(dc->cl, j, &reply);
    size_t i = dc->map[j];
    if (st == SMTP_CLIENT_OK) {
      dlv_finish_rcpt(w, m, i, DLV_DELIVERED, dc->relay, &reply);
    } else if (st == SMTP_CLIENT_FAIL) {
      dlv_finish_rcpt(w, m, i, DLV_BOUNCED, dc->relay, &reply);
    } else {
      dlv_log(w, m, &m->rcpts[i], DLV_DEFERRED, dc->relay, &reply);
    }
  }
  dlv_conn_release_attempt(dc);
  dlv_after_attempt(w, m);
}

/* dlv_site_failed: a connection failed before it could carry a message.
 * If no other connection is up, the next hop is down: defer what is due
 * (each message logs its deferral and backs off). Either way new connects
 * pause briefly, so a refusing host is not hammered. */
static void dlv_site_failed(struct worker *w, struct dlv_conn *dc,
                            const struct smtp_reply *reply) {
  w->dlv_next_connect_ms = w->now_ms + DLV_HOLD_MS;
  if (w->dlv_num_conns - w->dlv_num_starting == 0) {
    dlv_defer_ready(w, dc->relay, reply);
  }
}

static void dlv_on_session_error(struct conn *c) {
  struct dlv_conn *dc = c->dlv;
  const struct smtp_reply *reply = smtp_client_reply(dc->cl);
  struct log_rec r;
  log_begin(&r, "delivery_session_error");
  log_str(&r, "relay", dc->relay);
  log_i64(&r, "code", reply->code);
  log_str(&r, "text", reply->text);
  log_end(&r);
  if (dc->starting) {
    dlv_site_failed(c->w, dc, reply);
  }
}

/* dlv_move_output hands the engine's bytes to the socket, keeping at most
 * about DLV_SEND_HIGH queued (the engine produces the body as it drains;
 * worker_on_send calls delivery_pump for more). */
static void dlv_move_output(struct conn *c) {
  struct smtp_client *cl = c->dlv->cl;
  for (int i = 0;
       i < 64 && !c->shut && c->dlv != NULL && conn_unsent(c) < DLV_SEND_HIGH;
       i++) {
    const uint8_t *out;
    size_t out_len;
    smtp_client_output(cl, &out, &out_len);
    if (out_len == 0) {
      break;
    }
    conn_send(c, out, out_len);
    smtp_client_output_sent(cl, out_len);
  }
}

/* dlv_set_deadline arms the RFC 5321 §4.5.3.2 timeout of the engine's
 * state (none while idle: QUIT is sent at once then). */
static void dlv_set_deadline(struct conn *c) {
  if (c->dlv->idle) {
    c->deadline_ms = c->dlv->idle_until;
    return;
  }
  unsigned s =
      smtp_client_timeout_seconds(smtp_client_timeout_class(c->dlv->cl));
  c->deadline_ms = s ? c->w->now_ms + (int64_t)s * 1000 : 0;
}

void delivery_pump(struct conn *c) {
  if (c->freed || c->dlv == NULL || c->connecting) {
    return;
  }
  struct dlv_conn *dc = c->dlv;
  /* A handler may end the connection (c->dlv is released with it). */
  for (int n = 0; n < DLV_MAX_EVENTS && !c->freed && c->dlv == dc; n++) {
    switch (smtp_client_next(dc->cl)) {
    case SMTP_CLIENT_NEED_INPUT:
      dlv_move_output(c);
      if (c->dlv != NULL) {
        dlv_set_deadline(c);
      }
      return;
    case SMTP_CLIENT_EV_READY:
      dlv_on_ready(c);
      break;
    case SMTP_CLIENT_EV_RCPT_RESULT:
      break;
    case SMTP_CLIENT_EV_MESSAGE_DONE:
      dlv_on_message_done(c);
      break;
    case SMTP_CLIENT_EV_SESSION_ERROR:
      dlv_on_session_error(c);
      break;
    case SMTP_CLIENT_EV_CLOSED:
      dlv_move_output(c);
      c->deadline_ms = 0;
      conn_close(c);
      return;
    }
  }
}

void delivery_on_input(struct conn *c, const uint8_t *in, size_t in_len) {
  struct dlv_conn *dc = c->dlv;
  if (smtp_client_feed(dc->cl, in, in_len) != 0) {
    delivery_pump(c); /* consume what is buffered, then try again */
    if (c->freed) {
      return; /* the pump closed and freed the connection (and dc) */
    }
    if (smtp_client_feed(dc->cl, in, in_len) != 0) {
      smtp_client_eof(dc->cl); /* the server floods us: end the session */
    }
  }
  delivery_pump(c);
}

void delivery_on_eof(struct conn *c) {
  if (c->dlv == NULL || c->freed) {
    return;
  }
  smtp_client_eof(c->dlv->cl);
  delivery_pump(c);
}

/* dlv_connect opens one connection to the relay host. Returns 0, or -1
 * when no connection could be started (the reason in *out_reply). */
static int dlv_connect(struct worker *w, char *relay, size_t relay_len,
                       struct smtp_reply *out_reply) {
  char host[256], port[8];
  uint16_t portnum;
  int no_mx;
  if (relayhost_parse(w->cfg->relayhost, host, sizeof(host), &portnum,
                      &no_mx) != 0) {
    smtp_reply_set(out_reply, 451, "4.3.5", "bad relayhost");
    return -1;
  }
  snprintf(port, sizeof(port), "%u", portnum);
  snprintf(relay, relay_len, "%s:%u", host, portnum);
  struct addrinfo hints = {.ai_family = AF_UNSPEC,
                           .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICSERV};
  struct addrinfo *res = NULL;
  /* Blocking lookup on the loop thread: numeric or /etc/hosts for now. */
  int rc = getaddrinfo(host, port, &hints, &res);
  if (rc != 0) {
    char text[300];
    snprintf(text, sizeof(text), "cannot resolve relayhost %s: %s", host,
             gai_strerror(rc));
    smtp_reply_set(out_reply, 451, "4.4.4", text);
    return -1;
  }
  struct smtp_client_config cc;
  smtp_client_config_default(&cc);
  cc.helo_name = w->cfg->hostname;
  if (cc.limits.max_rcpts < w->cfg->recipient_limit) {
    cc.limits.max_rcpts = w->cfg->recipient_limit;
  }
  int fd =
      socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct dlv_conn *dc = calloc(1, sizeof(*dc));
  struct smtp_client *cl = smtp_client_new(&cc);
  struct conn *c = NULL;
  if (fd >= 0 && dc != NULL && cl != NULL &&
      res->ai_addrlen <= sizeof(dc->addr)) {
    c = conn_new_outbound(w, fd);
  }
  if (c == NULL) {
    freeaddrinfo(res);
    smtp_client_free(cl);
    free(dc);
    if (fd >= 0) {
      close(fd);
    }
    smtp_reply_set(out_reply, 451, "4.3.0", "local error: cannot connect");
    return -1;
  }
  memcpy(&dc->addr, res->ai_addr, res->ai_addrlen);
  dc->addr_len = res->ai_addrlen;
  freeaddrinfo(res);
  dc->cl = cl;
  dc->starting = 1;
  snprintf(dc->relay, sizeof(dc->relay), "%s", relay);
  snprintf(c->peer_text, sizeof(c->peer_text), "%s", relay);
  c->dlv = dc;
  c->connecting = 1;
  c->deadline_ms = w->now_ms + (int64_t)w->cfg->delivery_connect_timeout * 1000;
  struct io_uring_sqe *sqe = worker_get_sqe(w);
  io_uring_prep_connect(sqe, fd, (struct sockaddr *)&dc->addr, dc->addr_len);
  io_uring_sqe_set_data64(sqe, op_tag(c, OP_CONNECT));
  c->num_ops++;
  w->dlv_num_conns++;
  w->dlv_num_starting++;
  METRIC_ADD(w->m.dlv_conns_opened, 1);
  return 0;
}

void delivery_on_connect(struct conn *c, int res) {
  struct worker *w = c->w;
  struct dlv_conn *dc = c->dlv;
  c->num_ops--;
  c->connecting = 0;
  if (res < 0 || c->shut) {
    char text[SMTP_REPLY_MAX_TEXT];
    snprintf(text, sizeof(text), "connect to %.300s: %s", dc->relay,
             !dc->connect_expired ? strerror(-res)
             : w->stopping        ? "cancelled by shutdown"
                                  : "timed out");
    struct smtp_reply r;
    smtp_reply_set(&r, 451, "4.4.1", text);
    dlv_site_failed(w, dc, &r);
    c->closing = 1;
    c->shut = 1; /* nothing was ever sent: no shutdown(2) needed */
    conn_maybe_free(c);
    return;
  }
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  conn_start_recv(c);
  delivery_pump(c);
}

/* delivery_conn_tick runs an outbound connection's timers: the connect
 * timeout, the engine's RFC 5321 §4.5.3.2 timeouts, and on a forced stop
 * the end of whatever is in flight (its recipients are deferred). */
void delivery_conn_tick(struct conn *c, int force) {
  struct worker *w = c->w;
  struct dlv_conn *dc = c->dlv;
  int expired = c->deadline_ms != 0 && w->now_ms >= c->deadline_ms;
  if (dc->idle) {
    if (expired || w->stopping) {
      dlv_idle_remove(c);
      smtp_client_quit(dc->cl);
      delivery_pump(c);
    }
    return;
  }
  if (c->connecting) {
    /* Stopping: a connect carries no transaction yet; end it now. */
    if ((expired || force || w->stopping) && !dc->connect_expired) {
      dc->connect_expired = 1;
      struct io_uring_sqe *sqe = worker_get_sqe(w);
      io_uring_prep_cancel64(sqe, op_tag(c, OP_CONNECT), 0);
      io_uring_sqe_set_data64(sqe, 0);
    }
    return;
  }
  if (expired || force) {
    METRIC_ADD(w->m.timeouts, expired ? 1 : 0);
    smtp_client_timeout(dc->cl);
    delivery_pump(c);
  }
}

void delivery_conn_free(struct conn *c) {
  struct worker *w = c->w;
  struct dlv_conn *dc = c->dlv;
  if (dc == NULL) {
    return;
  }
  if (dc->msg != NULL) {
    /* The engine always reports MESSAGE_DONE before CLOSED; this only
     * covers a connection torn down underneath it. */
    struct dlv_msg *m = dc->msg;
    dlv_conn_release_attempt(dc);
    struct smtp_reply r;
    smtp_reply_set(&r, 451, "4.4.2", "connection lost");
    dlv_defer_msg(w, m, dc->relay, &r);
  }
  if (dc->starting) {
    w->dlv_num_starting--;
  }
  dlv_idle_remove(c);
  w->dlv_num_conns--;
  dlv_conn_release_attempt(dc);
  smtp_client_free(dc->cl);
  free(dc);
  c->dlv = NULL;
}

/* ---- scheduling ---- */

void delivery_tick(struct worker *w) {
  struct dlv_msg **pp = &w->dlv_waiting;
  while (*pp != NULL) {
    struct dlv_msg *m = *pp;
    if (m->next_ms <= w->now_ms) {
      *pp = m->next;
      dlv_ready_push(w, m);
    } else {
      pp = &m->next;
    }
  }
}

/* delivery_schedule (every loop turn) puts due messages on their way: no
 * relayhost defers them; otherwise connections open up to the
 * concurrency limit, one per due message not yet covered by a starting
 * connection. Idle connections do not exist: they QUIT at once. */
void delivery_schedule(struct worker *w) {
  /* Idle connections first: a due message, or QUIT when stopping. */
  while (w->dlv_idle != NULL && (w->dlv_num_ready > 0 || w->stopping)) {
    struct conn *c = w->dlv_idle;
    dlv_idle_remove(c);
    if (w->stopping) {
      smtp_client_quit(c->dlv->cl);
    } else {
      dlv_on_ready(c);
    }
    delivery_pump(c);
  }
  if (w->dlv_num_ready == 0) {
    return;
  }
  if (w->cfg->relayhost[0] == '\0') {
    struct smtp_reply r;
    smtp_reply_set(&r, 451, "4.4.3",
                   "MX routing not implemented yet; set relayhost");
    dlv_defer_ready(w, NULL, &r);
    return;
  }
  if (w->stopping || w->now_ms < w->dlv_next_connect_ms) {
    return;
  }
  while (w->dlv_num_ready > w->dlv_num_starting &&
         w->dlv_num_conns < w->cfg->delivery_concurrency) {
    char relay[300] = "";
    struct smtp_reply r;
    if (dlv_connect(w, relay, sizeof(relay), &r) != 0) {
      w->dlv_next_connect_ms = w->now_ms + DLV_HOLD_MS;
      if (w->dlv_num_conns - w->dlv_num_starting == 0) {
        dlv_defer_ready(w, relay, &r);
      }
      return;
    }
  }
}

int delivery_idle(const struct worker *w) {
  return w->dlv_num_conns == 0;
}

void delivery_free_all(struct worker *w) {
  struct dlv_msg *m;
  while ((m = dlv_ready_pop(w)) != NULL) {
    delivery_msg_free(m);
  }
  while ((m = w->dlv_waiting) != NULL) {
    w->dlv_waiting = m->next;
    delivery_msg_free(m);
  }
}
