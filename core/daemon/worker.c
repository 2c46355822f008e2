/* core/daemon/worker.c — one io_uring loop per core: listeners, connections,
 * timers and the spool's group commit. See daemon.h. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "core/daemon/daemon.h"
#include "core/log.h"

const struct metric_hist_spec daemon_batch_spec = {
    .num_bounds = 10,
    .bounds = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512},
};

const struct metric_hist_spec daemon_latency_spec = {
    .num_bounds = 12,
    .bounds = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1,
               5},
};

int64_t daemon_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t daemon_mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* worker_sqe returns a submission slot, submitting to make room if the
 * queue is full (it never stays full: completions are reaped every turn). */
static struct io_uring_sqe *worker_sqe(struct worker *w) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
  for (int tries = 0; sqe == NULL; tries++) {
    int rc = io_uring_submit(&w->ring);
    if (rc < 0 && tries > 1000) {
      /* Completions are reaped before dispatch, so the kernel always has
       * room to post; a ring that still refuses is broken. */
      log_msg("error", "io_uring_submit: %s", strerror(-rc));
      log_flush();
      abort();
    }
    sqe = io_uring_get_sqe(&w->ring);
  }
  return sqe;
}

struct io_uring_sqe *worker_get_sqe(struct worker *w) {
  return worker_sqe(w);
}

/* ---- set-up ---- */

/* listener_open binds one SO_REUSEPORT socket, so every worker has its own
 * accept queue for the same address and the kernel spreads connections. */
static int listener_open(const struct config_listen *l, char *err,
                         size_t err_len) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC,
                           .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
  char port[8];
  snprintf(port, sizeof(port), "%u", l->port);
  struct addrinfo *res = NULL;
  int rc = getaddrinfo(l->host[0] ? l->host : NULL, port, &hints, &res);
  if (rc != 0) {
    snprintf(err, err_len, "listen %s: %s", l->text, gai_strerror(rc));
    return -1;
  }
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd < 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
      bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 4096) != 0) {
    snprintf(err, err_len, "listen %s: %s", l->text, strerror(errno));
    if (fd >= 0) {
      close(fd);
    }
    freeaddrinfo(res);
    return -1;
  }
  freeaddrinfo(res);
  return fd;
}

static void worker_arm_accept(struct worker *w, struct listener *l) {
  struct io_uring_sqe *sqe = worker_sqe(w);
  io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL, SOCK_CLOEXEC);
  io_uring_sqe_set_data64(sqe, op_tag(l, OP_ACCEPT));
  l->armed = 1;
}

static void worker_arm_tick(struct worker *w) {
  struct io_uring_sqe *sqe = worker_sqe(w);
  w->tick_ts.tv_sec = 1;
  w->tick_ts.tv_nsec = 0;
  io_uring_prep_timeout(sqe, &w->tick_ts, 0, 0);
  io_uring_sqe_set_data64(sqe, op_tag(w, OP_TICK));
}

static void worker_arm_wake(struct worker *w) {
  struct io_uring_sqe *sqe = worker_sqe(w);
  io_uring_prep_read(sqe, w->wake_fd, &w->wake_value, sizeof(w->wake_value), 0);
  io_uring_sqe_set_data64(sqe, op_tag(w, OP_WAKE));
}

/* worker_ring_init prefers a single-issuer ring with deferred task work
 * (fewer interrupts of the loop) and falls back on older kernels. */
static int worker_ring_init(struct worker *w) {
  struct io_uring_params p = {0};
  /* A CQ well above the SQ: every connection's multishot recv can post
   * while the loop is busy. */
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
            IORING_SETUP_CQSIZE;
  p.cq_entries = DAEMON_CQ_ENTRIES;
  if (io_uring_queue_init_params(DAEMON_RING_ENTRIES, &w->ring, &p) == 0) {
    return 0;
  }
  memset(&p, 0, sizeof(p));
  p.flags = IORING_SETUP_CQSIZE;
  p.cq_entries = DAEMON_CQ_ENTRIES;
  return io_uring_queue_init_params(DAEMON_RING_ENTRIES, &w->ring, &p);
}

int worker_init(struct worker *w, struct daemon *d, unsigned index, char *err,
                size_t err_len) {
  w->d = d;
  w->index = index;
  w->cfg = d->cfg;
  w->seen_reload_gen = d->reload_gen;
  w->now_ms = daemon_now_ms();
  const struct config_listen *ls[LISTEN_COUNT] = {
      &d->cfg->smtp, &d->cfg->submission, &d->cfg->submissions,
      &d->cfg->metrics, NULL};
  for (int k = 0; k < LISTEN_COUNT; k++) {
    w->listeners[k].fd = -1;
    w->listeners[k].kind = (enum listener_kind)k;
    if (k == LISTEN_CONTROL) {
      if (index == 0 && control_open(w, err, err_len) != 0) {
        return -1;
      }
      continue;
    }
    /* The metrics endpoint is served by worker 0 alone. */
    if (!ls[k]->enabled || (k == LISTEN_METRICS && index != 0)) {
      continue;
    }
    w->listeners[k].fd = listener_open(ls[k], err, err_len);
    if (w->listeners[k].fd < 0) {
      return -1;
    }
  }
  w->spool = spool_writer_open(d->spool_dir, index, d->first_queue_id);
  if (w->spool == NULL) {
    snprintf(err, err_len, "spool %s: %s", d->cfg->spool_dir, strerror(errno));
    return -1;
  }
  spool_writer_set_segment_target(w->spool, d->cfg->spool_segment_size);
  if (spool_writer_set_prezero(w->spool, d->cfg->spool_prezero) != 0) {
    log_msg("warning",
            "spool: no pre-zeroing (%s): every commit writes "
            "the segment's new length",
            strerror(errno));
  }
  w->dlv_seed = (uint64_t)daemon_mono_ns() ^ ((uint64_t)index << 32);
  pthread_mutex_init(&w->local_mu, NULL);
  if (delivery_init(w) != 0) {
    snprintf(err, err_len, "out of memory");
    return -1;
  }
  if (worker_dns_init(w, err, err_len) != 0 ||
      throttle_init(w, err, err_len) != 0) {
    return -1;
  }
  w->wake_fd = eventfd(0, EFD_CLOEXEC);
  if (w->wake_fd < 0) {
    snprintf(err, err_len, "eventfd: %s", strerror(errno));
    return -1;
  }
  return 0;
}

void worker_wake(struct worker *w) {
  uint64_t one = 1;
  ssize_t n = write(w->wake_fd, &one, sizeof(one));
  (void)n; /* a full counter already means "wake up" */
}

/* ---- connections ---- */

static struct conn *conn_alloc(struct worker *w) {
  struct conn *c = w->free_conns;
  if (c != NULL) {
    w->free_conns = c->next_free;
    uint64_t gen = c->gen;
    memset(c, 0, sizeof(*c));
    c->gen = gen + 1;
  } else {
    c = aligned_alloc(16, sizeof(*c));
    if (c == NULL) {
      return NULL;
    }
    memset(c, 0, sizeof(*c));
    c->gen = 1;
  }
  c->w = w;
  c->next = w->live;
  if (w->live != NULL) {
    w->live->prev = c;
  }
  w->live = c;
  w->num_conns++;
  return c;
}

static void conn_arm_recv(struct conn *c) {
  struct io_uring_sqe *sqe = worker_sqe(c->w);
  io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = 0;
  io_uring_sqe_set_data64(sqe, op_tag(c, OP_RECV));
  c->recv_armed = 1;
  c->num_ops++;
}

/* conn_maybe_free releases a closed connection once nothing refers to it:
 * no operation in flight and no message waiting in the spool batch. */
void conn_maybe_free(struct conn *c) {
  struct worker *w = c->w;
  if (c->freed || !c->shut || c->num_ops > 0 || c->commit_pending ||
      c->auth_pending) {
    return;
  }
  c->freed = 1; /* callers may still hold c for the rest of their event */
  close(c->fd);
  if (c->tls != NULL && c->held.len > 0) {
    explicit_bzero(c->held.data, c->held.len); /* may hold AUTH lines */
  }
  tls_free(c->tls);
  c->tls = NULL;
  if (c->outbound) {
    delivery_conn_free(c);
  } else if (c->kind < LISTEN_METRICS) {
    session_free(c);
    METRIC_ADD(w->m.sessions_active[c->kind], -1);
  }
  buf_free(&c->http_in);
  buf_free(&c->out);
  buf_free(&c->pending);
  buf_free(&c->held);
  if (c->prev != NULL) {
    c->prev->next = c->next;
  } else {
    w->live = c->next;
  }
  if (c->next != NULL) {
    c->next->prev = c->prev;
  }
  w->num_conns--;
  if (!c->outbound) {
    w->num_inbound--;
  }
  c->gen++;
  c->next_free = w->free_conns;
  w->free_conns = c;
}

/* conn_shutdown ends both directions; the pending multishot recv then
 * completes, and the connection is freed when its last op is reaped. */
static void conn_shutdown(struct conn *c) {
  if (c->shut) {
    return;
  }
  c->shut = 1;
  shutdown(c->fd, SHUT_RDWR);
  conn_maybe_free(c);
}

static void conn_flush(struct conn *c) {
  if (c->sending || c->shut || c->out_off >= c->out.len) {
    return;
  }
  struct io_uring_sqe *sqe = worker_sqe(c->w);
  io_uring_prep_send(sqe, c->fd, c->out.data + c->out_off,
                     c->out.len - c->out_off, MSG_NOSIGNAL);
  io_uring_sqe_set_data64(sqe, op_tag(c, OP_SEND));
  c->sending = 1;
  c->num_ops++;
}

/* conn_send queues bytes for the peer: encrypted first if the connection
 * has TLS (plaintext waits in the adapter until the handshake is done). */
void conn_send(struct conn *c, const uint8_t *data, size_t len) {
  if (c->tls == NULL) {
    conn_send_raw(c, data, len);
    return;
  }
  if (c->shut || len == 0) {
    return;
  }
  if (tls_write(c->tls, data, len) != 0) {
    c->closing = 1;
    conn_shutdown(c);
    return;
  }
  conn_tls_flush(c);
}

/* conn_send_raw queues bytes for the socket. The kernel reads c->out while
 * a send is in flight, and appending could move that buffer, so bytes
 * queued meanwhile wait in c->pending and follow when the send completes. */
void conn_send_raw(struct conn *c, const uint8_t *data, size_t len) {
  if (c->shut || len == 0) {
    return;
  }
  struct buf *dst = c->sending ? &c->pending : &c->out;
  if (!c->sending && c->out_off >= c->out.len) {
    buf_reset(&c->out);
    c->out_off = 0;
  }
  if (buf_append(dst, data, len) != 0) {
    c->closing = 1; /* out of memory: the peer sees the connection end */
    conn_shutdown(c);
    return;
  }
  conn_flush(c);
}

int conn_send_take(struct conn *c, int (*take)(void *arg, struct buf *b),
                   void *arg) {
  if (c->tls != NULL || c->shut || c->sending || c->out_off < c->out.len ||
      c->pending.len > 0) {
    return 0;
  }
  buf_reset(&c->out);
  c->out_off = 0;
  if (!take(arg, &c->out)) {
    return 0;
  }
  conn_flush(c);
  return 1;
}

/* conn_new_outbound registers a socket we connect ourselves (delivery). */
struct conn *conn_new_outbound(struct worker *w, int fd) {
  struct conn *c = conn_alloc(w);
  if (c == NULL) {
    return NULL;
  }
  c->fd = fd;
  c->outbound = 1;
  return c;
}

void conn_start_recv(struct conn *c) {
  if (!c->recv_armed && !c->shut) {
    conn_arm_recv(c);
  }
}

void conn_close(struct conn *c) {
  if (!c->closing && c->tls != NULL && c->tls_ready && !c->shut) {
    tls_close(c->tls); /* close_notify, so the peer knows it got it all */
    conn_tls_flush(c);
  }
  if (!c->closing) {
    /* The last replies get a bounded time to leave: a client that never
     * reads must not keep the connection (or a shutdown) alive. */
    c->deadline_ms =
        c->w->now_ms + (c->w->stopping ? DAEMON_CLOSE_LINGER_STOPPING_MS
                                       : DAEMON_CLOSE_LINGER_MS);
  }
  c->closing = 1;
  if (!c->sending) {
    conn_shutdown(c);
  }
}

size_t conn_unsent(const struct conn *c) {
  return c->out.len - c->out_off + c->pending.len;
}

void conn_pause(struct conn *c) {
  if (c->paused || c->shut) {
    return;
  }
  c->paused = 1;
  if (c->recv_armed) {
    struct io_uring_sqe *sqe = worker_sqe(c->w);
    io_uring_prep_cancel64(sqe, op_tag(c, OP_RECV), 0);
    io_uring_sqe_set_data64(sqe, 0);
  }
}

void conn_resume(struct conn *c) {
  if (!c->paused || c->shut || c->closing) {
    return;
  }
  c->paused = 0;
  if (!c->recv_armed) {
    conn_arm_recv(c);
  }
}

static void worker_on_accept(struct worker *w, struct listener *l, int res,
                             unsigned flags) {
  if (!(flags & IORING_CQE_F_MORE)) {
    l->armed = 0;
  }
  if (res < 0) {
    if (res == -ECANCELED || w->stopping) {
      return;
    }
    log_msg("warning", "accept: %s", strerror(-res));
    if (!l->armed && res != -EMFILE && res != -ENFILE && res != -ENOMEM) {
      worker_arm_accept(w, l);
    }
    return; /* out of descriptors: the next tick re-arms */
  }
  if (!l->armed && !w->stopping) {
    worker_arm_accept(w, l); /* the kernel ended the multishot */
  }
  if (w->stopping) {
    close(res);
    return;
  }
  if (w->num_inbound >= w->cfg->max_sessions) {
    static const char busy[] = "421 4.7.0 Too many sessions, try later\r\n";
    ssize_t n = send(res, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)n;
    close(res);
    METRIC_ADD(w->m.sessions_refused, 1);
    return;
  }
  struct conn *c = conn_alloc(w);
  if (c == NULL) {
    close(res);
    return;
  }
  c->fd = res;
  c->kind = l->kind;
  w->num_inbound++; /* outbound (delivery) connections have their own cap */
  int one = 1;
  setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  socklen_t slen = sizeof(c->peer);
  if (getpeername(res, (struct sockaddr *)&c->peer, &slen) != 0 ||
      sockaddr_format((struct sockaddr *)&c->peer, c->peer_text,
                      sizeof(c->peer_text)) != 0) {
    snprintf(c->peer_text, sizeof(c->peer_text), "unknown");
  }
  conn_arm_recv(c);
  if (l->kind == LISTEN_METRICS || l->kind == LISTEN_CONTROL) {
    c->deadline_ms = w->now_ms + 10000;
    return;
  }
  METRIC_ADD(w->m.sessions_total[l->kind], 1);
  METRIC_ADD(w->m.sessions_active[l->kind], 1);
  /* Implicit TLS: the greeting waits inside the adapter for the
   * handshake (RFC 8314 §3.3). */
  if ((l->kind == LISTEN_SUBMISSIONS && conn_tls_start_server(c) != 0) ||
      session_start(c) != 0) {
    conn_close(c);
  }
}

static void worker_on_recv(struct worker *w, struct conn *c, int res,
                           unsigned flags) {
  if (!(flags & IORING_CQE_F_MORE)) {
    c->recv_armed = 0;
    c->num_ops--;
  }
  if (res > 0) {
    unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
    const uint8_t *data = bufring_data(&w->bufs, bid);
    if (c->tls != NULL) {
      if (!c->shut && (c->outbound || !c->closing)) {
        if (!c->outbound) {
          METRIC_ADD(w->m.bytes_received, (uint64_t)res);
        }
        conn_tls_on_input(c, data, (size_t)res);
      }
    } else if (c->outbound) {
      if (!c->shut) {
        delivery_on_input(c, data, (size_t)res);
      }
    } else if (!c->shut && !c->closing) {
      if (c->kind == LISTEN_METRICS) {
        metrics_on_input(c, data, (size_t)res);
      } else if (c->kind == LISTEN_CONTROL) {
        control_on_input(c, data, (size_t)res);
      } else {
        METRIC_ADD(w->m.bytes_received, (uint64_t)res);
        session_on_input(c, data, (size_t)res);
      }
    }
    bufring_return(&w->bufs, bid);
  }
  if (res == -ECANCELED && c->paused) {
    /* conn_pause() stopped reading; conn_resume() re-arms. */
  } else if (res == 0 || (res < 0 && res != -ENOBUFS)) {
    if (c->outbound && !c->freed) {
      delivery_on_eof(c); /* the engine defers what was open */
    }
    conn_close(c); /* peer closed or reset: nothing more to say to it */
    conn_shutdown(c);
  } else if (!c->recv_armed && !c->shut && !c->paused) {
    conn_arm_recv(c); /* the kernel ended the multishot (e.g. ENOBUFS) */
  }
  conn_maybe_free(c);
}

static void worker_on_send(struct conn *c, int res) {
  c->sending = 0;
  c->num_ops--;
  if (res < 0) {
    c->closing = 1;
    conn_shutdown(c);
  } else {
    c->out_off += (size_t)res; /* a short send is resumed below */
    if (c->out_off >= c->out.len) {
      struct buf sent = c->out;
      c->out = c->pending; /* what was queued during the send goes next */
      c->pending = sent;
      buf_reset(&c->pending);
      c->out_off = 0;
    }
    if (c->out_off < c->out.len) {
      conn_flush(c);
    } else if (c->closing) {
      conn_shutdown(c);
    }
    if (c->outbound && !c->closing && !c->shut) {
      delivery_pump(c); /* the engine produces more body as output drains */
    } else if (!c->outbound && c->kind < LISTEN_METRICS && !c->closing &&
               c->paused && conn_unsent(c) < DAEMON_SEND_LOW) {
      session_pump(c); /* the client read its replies: run what waits */
    }
  }
  conn_maybe_free(c);
}

/* ---- spool group commit ---- */

static void worker_spool_done(void *cookie, int err, void *arg) {
  struct worker *w = arg;
  struct commit *cm = cookie;
  METRIC_ADD(w->m.spool_commits, 1);
  if (err != 0) {
    METRIC_ADD(w->m.spool_commit_errors, 1);
  }
  /* Records lie in the segment in staging order from the batch start. */
  uint64_t offset = w->spool_batch_off;
  w->spool_batch_off += cm->rec_len;
  if (cm->ctl != NULL) {
    control_record_durable(cm->ctl, err);
  }
  if (cm->done_for != NULL) {
    delivery_on_done_durable(w, cm->done_for, err, w->spool_batch_seg);
    free(cm);
    w->spool_batch_count++;
    return;
  }
  struct conn *c = cm->c;
  if (c != NULL && c->gen == cm->gen) {
    session_on_commit(c, cm, err);
    conn_maybe_free(c); /* the client may have left while we committed */
  }
  if (cm->msg != NULL) {
    if (err == 0) {
      delivery_on_committed(w, cm->msg, &cm->data, w->spool_batch_seg, offset);
    } else {
      delivery_msg_free(cm->msg);
    }
  }
  buf_free(&cm->data);
  free(cm);
  w->spool_batch_count++;
}

int worker_spool_add(struct worker *w, struct commit *cm,
                     const struct spool_message *m) {
  return spool_writer_add(w->spool, m, cm);
}

/* worker_spool_kick starts the next group commit when none is in flight:
 * every message staged since the last one goes out in one write, made
 * durable by one linked fdatasync. */
static void worker_spool_kick(struct worker *w) {
  if (w->spool_ops > 0) {
    return;
  }
  struct spool_flush f;
  int rc = spool_writer_flush_begin(w->spool, &f);
  if (rc < 0) {
    /* The next segment could not be created (disk full, I/O error): fail
     * what is staged now (4xx to those clients) rather than keep them
     * waiting; the next message retries the rotation. */
    int err = errno ? errno : EIO;
    log_msg("error", "spool: cannot start a commit: %s", strerror(err));
    spool_writer_fail_staged(w->spool, -err, worker_spool_done, w);
    return;
  }
  if (rc == 0) {
    return;
  }
  snprintf(w->spool_batch_seg, sizeof(w->spool_batch_seg), "%s",
           spool_writer_segment(w->spool));
  segs_current(w, w->spool_batch_seg); /* older ones may go now */
  w->spool_batch_off = f.offset;
  /* The write and its fdatasync must reach the kernel in one submission:
   * a link is cut at a submission boundary, and an unlinked fsync could
   * complete before the write, acknowledging data not yet durable. */
  if (io_uring_sq_space_left(&w->ring) < 2) {
    io_uring_submit(&w->ring);
  }
  struct io_uring_sqe *sqe = worker_sqe(w);
  io_uring_prep_writev(sqe, f.fd, f.iov, (unsigned)f.num_iov, f.offset);
  sqe->flags |= IOSQE_IO_LINK;
  io_uring_sqe_set_data64(sqe, op_tag(w, OP_SPOOL_WRITE));
  sqe = worker_sqe(w);
  io_uring_prep_fsync(sqe, f.fd, IORING_FSYNC_DATASYNC);
  io_uring_sqe_set_data64(sqe, op_tag(w, OP_SPOOL_SYNC));
  w->spool_ops = 2;
  w->spool_result = 0;
  w->spool_expect = f.len;
  w->spool_start_ms = w->now_ms;
  w->spool_start_ns = daemon_mono_ns();
}

static void worker_on_spool(struct worker *w, enum op_kind kind, int res) {
  if (kind == OP_SPOOL_WRITE) {
    if (res < 0) {
      w->spool_result = res;
    } else if ((size_t)res != w->spool_expect) {
      w->spool_result = -ENOSPC; /* short write: the disk filled up */
    }
  } else if (res < 0 && w->spool_result == 0) {
    w->spool_result = res;
  }
  if (--w->spool_ops > 0) {
    return;
  }
  if (w->spool_result != 0) {
    log_msg("error", "spool commit failed: %s", strerror(-w->spool_result));
  }
  double secs = (double)(daemon_mono_ns() - w->spool_start_ns) / 1e9;
  metric_hist_observe(&w->m.commit_seconds, &daemon_latency_spec, secs);
  w->spool_batch_count = 0;
  spool_writer_flush_done(w->spool, w->spool_result, worker_spool_done, w);
  metric_hist_observe(&w->m.batch_size, &daemon_batch_spec,
                      (double)w->spool_batch_count);
}

/* ---- timers, stop, reload ---- */

static void worker_check_reload(struct worker *w) {
  uint64_t gen = __atomic_load_n(&w->d->reload_gen, __ATOMIC_ACQUIRE);
  if (gen != w->seen_reload_gen) {
    w->cfg = __atomic_load_n(&w->d->cfg, __ATOMIC_ACQUIRE);
    /* Published after the switch: main may then free the old config. */
    __atomic_store_n(&w->seen_reload_gen, gen, __ATOMIC_RELEASE);
  }
}

/* worker_begin_stop: stop accepting, say goodbye to idle sessions; busy
 * ones may finish their transaction until the shutdown grace runs out. */
static void worker_begin_stop(struct worker *w) {
  if (w->stopping) {
    return;
  }
  w->stopping = 1;
  w->stop_deadline_ms = w->now_ms + (int64_t)w->cfg->timeout_shutdown * 1000;
  for (int k = 0; k < LISTEN_COUNT; k++) {
    struct listener *l = &w->listeners[k];
    if (l->fd >= 0) {
      /* shutdown(2) on a listening socket ends the pending accept. */
      shutdown(l->fd, SHUT_RDWR);
    }
  }
  for (struct conn *c = w->live, *next; c != NULL; c = next) {
    next = c->next;
    if (!c->outbound && c->kind < LISTEN_METRICS) {
      session_on_shutdown(c);
    }
  }
}

static void worker_on_tick(struct worker *w) {
  worker_arm_tick(w);
  worker_check_reload(w);
  if (__atomic_load_n(&w->d->stop, __ATOMIC_ACQUIRE)) {
    worker_begin_stop(w);
  }
  int force = w->stopping && (w->now_ms >= w->stop_deadline_ms ||
                              __atomic_load_n(&w->d->force, __ATOMIC_ACQUIRE));
  for (struct conn *c = w->live, *next; c != NULL; c = next) {
    next = c->next;
    if (c->shut) {
      continue;
    }
    if (c->outbound && !c->closing) {
      delivery_conn_tick(c, force);
      continue;
    }
    if (c->closing) {
      if (force || w->now_ms >= c->deadline_ms) {
        conn_shutdown(c); /* its last replies would not leave: give up */
      }
      continue;
    }
    if (force || (c->deadline_ms != 0 && w->now_ms >= c->deadline_ms)) {
      if (c->kind >= LISTEN_METRICS) {
        conn_close(c);
      } else {
        METRIC_ADD(w->m.timeouts, force ? 0 : 1);
        session_on_timeout(c);
      }
    }
  }
  for (int k = 0; k < LISTEN_COUNT && !w->stopping; k++) {
    if (w->listeners[k].fd >= 0 && !w->listeners[k].armed) {
      worker_arm_accept(w, &w->listeners[k]);
    }
  }
  worker_dns_tick(w);
  throttle_tick(w); /* idle throttled domains expire */
  delivery_tick(w);
  segs_tick(w);         /* old segments another worker freed */
  tlsrpt_tick(w);       /* TLS report periods (RFC 8460) */
  dmarcrpt_tick(w);     /* DMARC report periods (RFC 7489 §7.2) */
  worker_spool_kick(w); /* retry after a failed rotation */
}

static void worker_dispatch(struct worker *w, struct io_uring_cqe *cqe) {
  uint64_t data = io_uring_cqe_get_data64(cqe);
  if (data == 0) {
    return; /* cancel requests and the like */
  }
  enum op_kind kind = (enum op_kind)(data & OP_MASK);
  void *owner = (void *)(uintptr_t)(data & ~(uint64_t)OP_MASK);
  switch (kind) {
  case OP_ACCEPT:
    worker_on_accept(w, owner, cqe->res, cqe->flags);
    break;
  case OP_RECV:
    worker_on_recv(w, owner, cqe->res, cqe->flags);
    break;
  case OP_SEND:
    worker_on_send(owner, cqe->res);
    break;
  case OP_TICK:
    worker_on_tick(w);
    break;
  case OP_WAKE:
    worker_arm_wake(w);
    local_take_done(w);
    delivery_take_remote(w);
    control_take(w);
    worker_check_reload(w);
    if (__atomic_load_n(&w->d->stop, __ATOMIC_ACQUIRE)) {
      worker_begin_stop(w);
    }
    break;
  case OP_XRING:
    delivery_take_ring(w, owner); /* a peer's MSG_RING */
    break;
  case OP_XRING_SENT:
    if (cqe->res < 0) {
      delivery_wake_failed(w, owner, cqe->res);
    }
    break;
  case OP_CONNECT:
    delivery_on_connect(owner, cqe->res);
    break;
  case OP_DNS_POLL:
    worker_dns_on_poll(w, owner, cqe->res, cqe->flags);
    break;
  case OP_THROTTLE:
    throttle_on_cqe(w, owner, cqe->res, cqe->flags);
    break;
  case OP_SPOOL_WRITE:
  case OP_SPOOL_SYNC:
    worker_on_spool(w, kind, cqe->res);
    break;
  default:
    abort(); /* a tag we never set: memory corruption */
  }
}

/* worker_done: stopping, every session gone, every commit durable. */
static int worker_done(struct worker *w) {
  return w->stopping && w->num_conns == 0 && delivery_idle(w) &&
         mtasts_idle(w) && w->ctl_ops_out == 0 && w->spool_ops == 0 &&
         spool_writer_staged(w->spool) == 0;
}

void *worker_main(void *arg) {
  struct worker *w = arg;
  if (worker_ring_init(w) != 0 ||
      bufring_init(&w->bufs, &w->ring, DAEMON_RECV_BUF_COUNT,
                   DAEMON_RECV_BUF_SIZE, 0) != 0) {
    log_msg("error", "worker %u: io_uring set-up failed", w->index);
    /* Jobs and commands other workers (or recovery) handed to this one go
     * back, and later ones stay home: nobody waits for a dead worker. */
    w->stopping = 1;
    control_close(w);
    delivery_close(w);
    throttle_free(w);
    __atomic_store_n(&w->d->failed, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&w->exited, 1, __ATOMIC_RELEASE);
    kill(getpid(), SIGTERM); /* main's sigwait() then stops every worker */
    return NULL;
  }
  for (int k = 0; k < LISTEN_COUNT; k++) {
    if (w->listeners[k].fd >= 0) {
      worker_arm_accept(w, &w->listeners[k]);
    }
  }
  worker_arm_tick(w);
  worker_arm_wake(w);
  delivery_start(w); /* peers may wake us with MSG_RING from now on */
  throttle_tick(w);  /* its timer connects to Redis */
  while (!worker_done(w)) {
    io_uring_submit_and_wait(&w->ring, 1);
    w->now_ms = daemon_now_ms();
    struct io_uring_cqe *cqe;
    /* Each completion is copied and released before it is handled, so the
     * CQ has room for whatever the handler's submissions post. */
    while (io_uring_peek_cqe(&w->ring, &cqe) == 0) {
      struct io_uring_cqe copy = *cqe;
      io_uring_cqe_seen(&w->ring, cqe);
      worker_dispatch(w, &copy);
    }
    delivery_schedule(w);
    dkim_stage_flush(w); /* this turn's messages, signed as one batch */
    worker_spool_kick(w);
    log_flush();
  }
  /* The last turn may have queued wakes for peers (MSG_RING): they must
   * leave, as nothing submits after the loop. */
  io_uring_submit(&w->ring);
  for (int k = 0; k < LISTEN_COUNT; k++) {
    if (w->listeners[k].fd >= 0) {
      close(w->listeners[k].fd);
    }
  }
  control_close(w); /* commands that still arrive are answered */
  delivery_close(w);
  dkim_worker_close(w); /* before the resolver and the spool go */
  spool_writer_close(w->spool);
  tlsrpt_worker_free(w);   /* cancels its TXT lookups: before the resolver */
  dmarcrpt_worker_free(w); /* the same */
  worker_dns_free(w);
  delivery_free_all(w);
  segs_free(w);
  bufring_free(&w->bufs, &w->ring);
  buf_free(&w->tls_plain);
  buf_free(&w->tls_out);
  throttle_close(w);
  io_uring_queue_exit(&w->ring);
  throttle_free(w); /* after the ring: nothing in flight writes into it */
  log_flush();
  __atomic_store_n(&w->exited, 1, __ATOMIC_RELEASE);
  return NULL;
}
