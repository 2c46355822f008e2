/* core/daemon/control.c — the queue control socket: `postseal queue
 * flush|delete|hold|release` reach the running daemon here (proto/ctl.h
 * is the protocol).
 *
 * Worker 0 listens on the unix socket (config control_socket, default
 * <spool_dir>/control, mode 0600) and reads one request per connection.
 * Messages belong to every worker, so a command goes to each worker's
 * inbox (under its local_mu) and the worker applies it to the messages it
 * owns (delivery_control) on its next wake. A command is answered once
 * every worker has applied it and every record it wrote (HOLD, RELEASE,
 * DONE of a delete) is durable: op->pending counts both, and whoever
 * drops it to zero hands the op back to worker 0, which writes the items,
 * a not-found item for each named id no worker has, and OK.
 *
 * Exit: a worker that leaves its loop closes its inbox (ctl_closed) and
 * releases what is still in it, so a command never waits for a worker that
 * is gone; worker 0 does not exit while a command is unanswered.
 *
 * IMPORT (`postseal queue import`) is worker 0's alone: the request line
 * announces a payload of queue archive records (core/queue_archive.h),
 * read whole into the connection's buffer (at most control_import_limit
 * octets, the deadline renewed as it arrives). Every record is checked
 * (checksum, format, spool limits) before any is staged, so a bad one
 * stages nothing; then each message gets a new queue id on worker 0 and
 * goes through the normal group commit (a HOLD record after it if it was
 * held at the source), and the answer waits for all of them to be
 * durable, like the other commands. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/daemon/daemon.h"
#include "core/log.h"
#include "core/queue_archive.h"
#include "proto/ctl.h"

/* The archive spells these values as proto/smtp_server.h does. */
_Static_assert(QARC_NOTIFY_MASK == (SMTP_NOTIFY_NEVER | SMTP_NOTIFY_SUCCESS |
                                    SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY),
               "archive NOTIFY bits");
_Static_assert(QARC_MAX_RET == SMTP_RET_HDRS, "archive RET values");
_Static_assert(QARC_MAX_BODY_TYPE == SMTP_BODY_8BITMIME, "archive BODY values");

#define CONTROL_IMPORT_MIN_LIMIT ((size_t)64 << 20) /* octets per IMPORT */
#define CONTROL_IMPORT_MAX_LIMIT ((size_t)1 << 31)
#define CONTROL_IMPORT_MAX_MESSAGES 4096 /* messages per IMPORT */
#define CONTROL_IMPORT_IDLE_MS 10000     /* for the next payload octets */

struct ctl_op {
  struct ctl_op *next; /* worker 0's done list */
  struct worker *origin;
  struct conn *c;
  uint64_t gen;
  struct ctl_request req;
  int pending; /* atomic: workers to apply + records to make durable */
  pthread_mutex_t mu;
  struct buf out; /* item lines */
  uint64_t count;
  uint8_t found[CTL_MAX_IDS];
  int failed;         /* a record could not be written */
  int workers_closed; /* a worker was gone: the result may be partial */
};

struct ctl_node {
  struct ctl_node *next;
  struct ctl_op *op;
};

/* control_path: the configured socket, or <spool_dir>/control; NULL for
 * none. */
static char *control_path(const struct worker *w) {
  const struct config *cfg = w->cfg;
  if (cfg->control_socket != NULL) {
    return cfg->control_socket[0] ? strdup(cfg->control_socket) : NULL;
  }
  size_t n = strlen(w->d->spool_dir) + sizeof("/control");
  char *p = malloc(n);
  if (p != NULL) {
    snprintf(p, n, "%s/control", w->d->spool_dir);
  }
  return p;
}

int control_open(struct worker *w, char *err, size_t err_len) {
  struct listener *l = &w->listeners[LISTEN_CONTROL];
  char *path = control_path(w);
  if (path == NULL) {
    return 0; /* switched off (or no memory: then no control socket) */
  }
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(sun.sun_path)) {
    snprintf(err, err_len, "control_socket %.200s: path too long (max %zu)",
             path, sizeof(sun.sun_path) - 1);
    free(path);
    return -1;
  }
  memcpy(sun.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  /* We hold the spool lock, so a socket file left there is stale. */
  unlink(path);
  mode_t old = umask(0177);
  int rc = fd < 0 ? -1 : bind(fd, (struct sockaddr *)&sun, sizeof(sun));
  umask(old);
  if (rc != 0 || listen(fd, 64) != 0) {
    snprintf(err, err_len, "control_socket %.200s: %s", path, strerror(errno));
    if (fd >= 0) {
      close(fd);
    }
    free(path);
    return -1;
  }
  l->fd = fd;
  w->ctl_path = path;
  return 0;
}

void control_close(struct worker *w) {
  pthread_mutex_lock(&w->local_mu);
  w->ctl_closed = 1;
  struct ctl_node *list = w->ctl_inbox;
  w->ctl_inbox = NULL;
  pthread_mutex_unlock(&w->local_mu);
  while (list != NULL) {
    struct ctl_node *n = list;
    list = n->next;
    n->op->workers_closed = 1;
    control_record_durable(n->op, 0);
    free(n);
  }
  if (w->ctl_path != NULL) {
    unlink(w->ctl_path);
    free(w->ctl_path);
    w->ctl_path = NULL;
  }
}

/* control_release drops one hold on op; the last one hands it back to
 * worker 0. */
static void control_release(struct ctl_op *op) {
  if (__atomic_sub_fetch(&op->pending, 1, __ATOMIC_ACQ_REL) != 0) {
    return;
  }
  struct worker *o = op->origin;
  pthread_mutex_lock(&o->local_mu);
  op->next = o->ctl_done;
  o->ctl_done = op;
  pthread_mutex_unlock(&o->local_mu);
  worker_wake(o);
}

void control_record_durable(struct ctl_op *op, int err) {
  if (err != 0) {
    pthread_mutex_lock(&op->mu);
    op->failed = 1;
    pthread_mutex_unlock(&op->mu);
  }
  control_release(op);
}

void control_wait_record(struct ctl_op *op) {
  __atomic_add_fetch(&op->pending, 1, __ATOMIC_ACQ_REL);
}

void control_item(struct ctl_op *op, uint64_t queue_id, int word) {
  pthread_mutex_lock(&op->mu);
  if (ctl_reply_item(&op->out, queue_id, (enum ctl_word)word) == 0) {
    op->count++;
  }
  for (size_t i = 0; i < op->req.num_ids; i++) {
    if (op->req.ids[i] == queue_id) {
      op->found[i] = 1;
    }
  }
  pthread_mutex_unlock(&op->mu);
}

static void control_reply_err(struct conn *c, const char *text) {
  struct buf b = {0};
  if (ctl_reply_err(&b, text) == 0) {
    conn_send(c, b.data, b.len);
  }
  buf_free(&b);
  conn_close(c);
}

static void control_op_free(struct ctl_op *op) {
  pthread_mutex_destroy(&op->mu);
  buf_free(&op->out);
  free(op);
}

/* control_dispatch sends the parsed command to every worker. */
static void control_dispatch(struct conn *c, const struct ctl_request *req) {
  struct worker *w = c->w;
  struct daemon *d = w->d;
  struct ctl_op *op = calloc(1, sizeof(*op));
  struct ctl_node **nodes = calloc(d->num_workers, sizeof(*nodes));
  int ok = op != NULL && nodes != NULL;
  for (unsigned i = 0; ok && i < d->num_workers; i++) {
    nodes[i] = calloc(1, sizeof(*nodes[i]));
    ok = nodes[i] != NULL;
  }
  if (!ok) {
    for (unsigned i = 0; nodes != NULL && i < d->num_workers; i++) {
      free(nodes[i]);
    }
    free(nodes);
    free(op);
    control_reply_err(c, "out of memory");
    return;
  }
  pthread_mutex_init(&op->mu, NULL);
  op->origin = w;
  op->c = c;
  op->gen = c->gen;
  op->req = *req;
  op->pending = (int)d->num_workers;
  w->ctl_ops_out++;
  c->deadline_ms = 0; /* the answer comes when the work is durable */
  struct log_rec r;
  log_begin(&r, "control");
  log_str(&r, "verb", ctl_verb_name(req->verb));
  log_u64(&r, "ids", req->num_ids);
  log_u64(&r, "all", (uint64_t)req->all);
  log_str(&r, "domain", req->domain);
  log_end(&r);
  for (unsigned i = 0; i < d->num_workers; i++) {
    struct worker *t = &d->workers[i];
    nodes[i]->op = op;
    pthread_mutex_lock(&t->local_mu);
    int closed = t->ctl_closed;
    if (!closed) {
      nodes[i]->next = t->ctl_inbox;
      t->ctl_inbox = nodes[i];
    }
    pthread_mutex_unlock(&t->local_mu);
    if (closed) {
      op->workers_closed = 1;
      free(nodes[i]);
      control_release(op);
    } else {
      worker_wake(t);
    }
  }
  free(nodes);
}

static void control_import_input(struct conn *c, uint64_t len,
                                 size_t line_consumed);

void control_on_input(struct conn *c, const uint8_t *in, size_t in_len) {
  if (c->deadline_ms == 0) {
    return; /* one request per connection: a command is running */
  }
  if (buf_append(&c->http_in, in, in_len) != 0) {
    control_reply_err(c, "out of memory");
    return;
  }
  size_t line_len, consumed;
  switch (ctl_line_next(&line_len, &consumed, (const char *)c->http_in.data,
                        c->http_in.len)) {
  case CTL_LINE_NEED_MORE:
    return;
  case CTL_LINE_TOO_LONG:
    control_reply_err(c, "request line too long");
    return;
  case CTL_LINE_OK:
    break;
  }
  uint64_t import_len;
  const char *why = "out of memory";
  int import = ctl_import_parse(&import_len, &why,
                                (const char *)c->http_in.data, line_len);
  if (import != 0) {
    if (import < 0) {
      control_reply_err(c, why);
    } else {
      control_import_input(c, import_len, consumed);
    }
    return;
  }
  struct ctl_request *req = malloc(sizeof(*req));
  if (req == NULL || ctl_request_parse(req, &why, (const char *)c->http_in.data,
                                       line_len) != 0) {
    free(req);
    control_reply_err(c, why);
    return;
  }
  if (c->w->stopping) {
    free(req);
    control_reply_err(c, "postseald is stopping; try again once it runs");
    return;
  }
  control_dispatch(c, req);
  free(req);
}

/* control_answer writes a finished command's reply (worker 0). */
static void control_answer(struct worker *w, struct ctl_op *op) {
  w->ctl_ops_out--;
  struct conn *c = op->c;
  if (c->gen != op->gen || c->freed || c->shut) {
    control_op_free(op); /* the client left; the work is done anyway */
    return;
  }
  for (size_t i = 0; i < op->req.num_ids; i++) {
    if (!op->found[i] &&
        ctl_reply_item(&op->out, op->req.ids[i], CTL_WORD_NOT_FOUND) == 0) {
      op->count++;
    }
  }
  conn_send(c, op->out.data, op->out.len);
  struct buf b = {0};
  if (op->failed) {
    ctl_reply_err(&b, "a spool write failed; see the log");
  } else if (op->workers_closed) {
    ctl_reply_err(&b, "postseald is stopping; the result may be partial");
  } else {
    ctl_reply_ok(&b, op->count);
  }
  conn_send(c, b.data, b.len);
  buf_free(&b);
  conn_close(c);
  control_op_free(op);
}

void control_take(struct worker *w) {
  pthread_mutex_lock(&w->local_mu);
  struct ctl_node *inbox = w->ctl_inbox;
  w->ctl_inbox = NULL;
  struct ctl_op *done = w->ctl_done;
  w->ctl_done = NULL;
  pthread_mutex_unlock(&w->local_mu);
  while (inbox != NULL) {
    struct ctl_node *n = inbox;
    inbox = n->next;
    delivery_control(w, &n->op->req, n->op);
    control_release(n->op); /* this worker's share is applied */
    free(n);
  }
  while (done != NULL) {
    struct ctl_op *op = done;
    done = op->next;
    control_answer(w, op);
  }
}

/* ---- IMPORT: messages from a queue archive ---- */

/* control_import_limit: the largest IMPORT payload: a message of the
 * configured size limit grown by the fields added to it and by S/MIME
 * (twice the limit, and a margin), never under CONTROL_IMPORT_MIN_LIMIT. */
static size_t control_import_limit(const struct worker *w) {
  size_t msl = w->cfg->message_size_limit;
  size_t lim = msl > CONTROL_IMPORT_MAX_LIMIT / 2 ? CONTROL_IMPORT_MAX_LIMIT
                                                  : 2 * msl + ((size_t)1 << 20);
  if (lim < CONTROL_IMPORT_MIN_LIMIT) {
    lim = CONTROL_IMPORT_MIN_LIMIT;
  }
  return lim > CONTROL_IMPORT_MAX_LIMIT ? CONTROL_IMPORT_MAX_LIMIT : lim;
}

/* import_why: the reason a record at p cannot be imported, or NULL. */
static const char *import_why(const uint8_t *p, size_t len, size_t num,
                              struct qarc_message *m, size_t *out_consumed,
                              struct buf *rcpts, struct buf *scratch) {
  struct qarc_end e;
  size_t need = 0, head_len = 0;
  const char *why = NULL;
  switch (qarc_record_decode(p, len, out_consumed, &need, m, &e, rcpts, &why)) {
  case QARC_NEED_MORE:
    return "truncated record";
  case QARC_END:
    return "an end record in an IMPORT payload";
  case QARC_BAD:
    return why;
  case QARC_MESSAGE:
    break;
  }
  if (num >= CONTROL_IMPORT_MAX_MESSAGES) {
    return "too many messages in one IMPORT";
  }
  /* What the spool's encoder refuses would fail after others are staged. */
  buf_reset(scratch);
  return spool_message_encode_head(scratch, &m->m, &head_len) != 0
             ? "the message does not fit a spool record"
             : NULL;
}

/* import_check checks every record of the payload before anything is
 * staged. Returns the number of messages, or 0 with the reason in why. */
static size_t import_check(const uint8_t *p, size_t len, char *why,
                           size_t why_len) {
  struct buf rcpts = {0}, scratch = {0};
  size_t num = 0, off = 0;
  while (off < len) {
    struct qarc_message m;
    size_t consumed = 0;
    const char *bad =
        import_why(p + off, len - off, num, &m, &consumed, &rcpts, &scratch);
    if (bad != NULL) {
      snprintf(why, why_len, "message %zu: %s", num + 1, bad);
      num = 0;
      break;
    }
    num++;
    off += consumed;
  }
  buf_free(&rcpts);
  buf_free(&scratch);
  return num;
}

static void import_log(const char *qid, const struct qarc_message *q) {
  char src[SPOOL_QUEUE_ID_LEN + 1];
  spool_queue_id_format(q->m.queue_id, src);
  struct log_rec r;
  log_begin(&r, "imported");
  log_str(&r, "qid", qid);
  log_str(&r, "source_qid", src);
  log_str(&r, "from", q->m.sender);
  log_u64(&r, "rcpts", q->m.num_rcpts);
  log_u64(&r, "size", q->m.body_len);
  log_u64(&r, "held", q->held);
  log_end(&r);
}

/* import_fail marks op failed (its answer says so) without changing what
 * it waits for. */
static void import_fail(struct ctl_op *op) {
  control_wait_record(op);
  control_record_durable(op, ENOMEM);
}

/* import_stage stages one message under a new queue id on w's writer
 * (and its HOLD record if it was held); op's answer waits for it.
 * Returns 0 or -1 (memory: op is marked failed). */
static int import_stage(struct worker *w, struct ctl_op *op,
                        const struct qarc_message *q) {
  struct commit *cm = calloc(1, sizeof(*cm));
  if (cm == NULL || buf_append(&cm->data, q->m.body, q->m.body_len) != 0) {
    free(cm);
    import_fail(op);
    return -1;
  }
  struct spool_message sm = q->m;
  sm.queue_id = spool_writer_new_id(w->spool, w->now_ms);
  sm.body = cm->data.data;
  cm->queue_id = sm.queue_id;
  cm->msg = delivery_msg_new(&sm);
  cm->rec_len = cm->msg ? delivery_msg_record_len(cm->msg) : 0;
  cm->ctl = op;
  control_wait_record(op);
  if (cm->msg == NULL || worker_spool_add(w, cm, &sm) != 0) {
    delivery_msg_free(cm->msg);
    buf_free(&cm->data);
    free(cm);
    control_record_durable(op, ENOMEM); /* the wait taken above */
    return -1;
  }
  char qid[SPOOL_QUEUE_ID_LEN + 1];
  spool_queue_id_format(sm.queue_id, qid);
  /* Held at the source (by hand, or DMARC quarantine): held here too. */
  if (q->held && delivery_stage_quarantine(w, cm->msg) != 0) {
    log_msg("error", "qid=%s: imported but not held: out of memory", qid);
    import_fail(op);
  }
  control_item(op, sm.queue_id, CTL_WORD_QUEUED);
  import_log(qid, q);
  return 0;
}

/* import_stage_all stages the checked payload's messages in order. */
static void import_stage_all(struct worker *w, struct ctl_op *op,
                             const uint8_t *p, size_t len) {
  struct buf rcpts = {0};
  size_t off = 0;
  while (off < len) {
    struct qarc_message m;
    struct qarc_end e;
    size_t consumed = 0, need = 0;
    const char *why;
    if (qarc_record_decode(p + off, len - off, &consumed, &need, &m, &e, &rcpts,
                           &why) != QARC_MESSAGE ||
        import_stage(w, op, &m) != 0) {
      break; /* checked before: only memory fails here */
    }
    off += consumed;
  }
  buf_free(&rcpts);
}

/* control_import checks a whole payload, then stages its messages; the
 * answer goes out once they are durable (control_answer). */
static void control_import(struct conn *c, const uint8_t *p, size_t len) {
  struct worker *w = c->w;
  char why[256];
  size_t num = import_check(p, len, why, sizeof(why));
  struct log_rec r;
  log_begin(&r, "control");
  log_str(&r, "verb", "IMPORT");
  log_u64(&r, "octets", len);
  log_u64(&r, "messages", num);
  if (num == 0) {
    log_str(&r, "error", why);
  }
  log_end(&r);
  struct ctl_op *op = num == 0 ? NULL : calloc(1, sizeof(*op));
  if (op == NULL) {
    control_reply_err(c, num == 0 ? why : "out of memory");
    return;
  }
  pthread_mutex_init(&op->mu, NULL);
  op->origin = w;
  op->c = c;
  op->gen = c->gen;
  op->pending = 1; /* ours, until every message is staged */
  w->ctl_ops_out++;
  c->deadline_ms = 0; /* the answer comes when the work is durable */
  import_stage_all(w, op, p, len);
  control_release(op);
}

/* control_import_input: an IMPORT line came; its payload follows it in
 * c->http_in once line_consumed + len octets are there. */
static void control_import_input(struct conn *c, uint64_t len,
                                 size_t line_consumed) {
  struct worker *w = c->w;
  size_t limit = control_import_limit(w);
  size_t have = c->http_in.len - line_consumed;
  char why[160];
  if (len > limit) {
    snprintf(why, sizeof(why),
             "IMPORT of %llu octets is over this postseald's limit of %zu",
             (unsigned long long)len, limit);
    control_reply_err(c, why);
  } else if (w->stopping) {
    control_reply_err(c, "postseald is stopping; try again once it runs");
  } else if (have < len) {
    c->deadline_ms = w->now_ms + CONTROL_IMPORT_IDLE_MS; /* more to come */
  } else if (have > len) {
    control_reply_err(c, "octets after the IMPORT payload");
  } else {
    control_import(c, c->http_in.data + line_consumed, (size_t)len);
    buf_free(&c->http_in); /* the bodies were copied */
  }
}
