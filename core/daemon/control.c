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
 * is gone; worker 0 does not exit while a command is unanswered. */
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
#include "proto/ctl.h"

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
  struct ctl_request *req = malloc(sizeof(*req));
  const char *why = "out of memory";
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
