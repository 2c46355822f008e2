/* bench/bench_sink.c — `postseal-bench sink`: an io_uring SMTP server that
 * accepts, counts and forgets (or writes each message to a folder), built
 * on proto/smtp_server. Recipients get 451 4.3.0 or 550 5.1.1 for a
 * configured share, drawn from a seeded generator so a run repeats; a
 * message may wait --delay-ms on a ring timeout before its 250.
 *
 * One thread per --threads, each with its own ring, SO_REUSEPORT listener,
 * provided-buffer ring and counters; the main thread waits for SIGTERM,
 * SIGINT or --duration, stops the workers through their eventfds, sums the
 * counters and writes the JSON report.
 *
 * With --tls-cert and --tls-key the sink offers STARTTLS (RFC 3207), or
 * with --tls speaks TLS from the first byte (RFC 8314), through the
 * sans-I/O adapter of crypto/tls.h: one server context for every worker
 * (it issues session tickets, so clients resume), one adapter per
 * connection. Received bytes go through tls_input() before the engine
 * sees them; the engine's replies through tls_write(). The 220 to
 * STARTTLS leaves in clear, and the adapter's output follows it in the
 * same send queue, so the order on the wire is kept. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "bench/bench.h"
#include "core/bufring.h"
#include "crypto/tls.h"
#include "proto/smtp_server.h"

#define SINK_BUF_SIZE (16 * 1024)
#define SINK_BUF_COUNT 1024 /* per worker; power of two */
#define SINK_RING_ENTRIES 1024
#define SINK_CQ_ENTRIES 16384
#define SINK_MAX_HELD (4 * 1024 * 1024) /* input held while a verdict waits */
#define SINK_FEED_CHUNK (16 * 1024)
#define SINK_MAX_THREADS 64
#define SINK_MAX_DELAY_MS 60000

enum sink_op {
  SINK_OP_ACCEPT = 1,
  SINK_OP_RECV = 2,
  SINK_OP_SEND = 3,
  SINK_OP_DELAY = 4,
  SINK_OP_WAKE = 5,
  SINK_OP_MASK = 15,
};

struct sink_opts {
  const char *listen;
  unsigned threads;
  unsigned delay_ms;
  double tempfail_pct, permfail_pct;
  const char *write_dir;
  const char *report;
  double duration_s;
  uint64_t seed;
  const char *tls_cert, *tls_key; /* both or neither */
  int tls_implicit;               /* --tls: TLS from the first byte */
  const char *tls_min_version;
};

struct sink_stats {
  uint64_t sessions;
  uint64_t messages;
  uint64_t rcpt_accepted, rcpt_tempfailed, rcpt_permfailed;
  uint64_t bytes;
  uint64_t write_errors;
  uint64_t tls_full, tls_resumed, tls_failed; /* handshakes */
  int64_t first_ns, last_ns; /* first accept, last message verdict */
  struct smtp_server_stats smtp;
};

struct sink_worker;

struct sink_conn {
  /* 16-aligned, so the op kind fits in the low bits of a tag. */
  _Alignas(16) struct sink_worker *w;
  int fd;
  struct smtp_server *smtp;
  struct buf out, pending; /* pending: queued while a send is in flight */
  size_t out_off;
  struct buf held; /* received while the engine's input was full */
  struct buf body; /* the message waiting for its delayed verdict */
  struct tls *tls; /* NULL: plaintext (so far) */
  int tls_ready;   /* the handshake finished */
  struct __kernel_timespec delay_ts;
  int sending, recv_armed, delaying, closing, shut, freed;
  unsigned num_ops;
  struct sink_conn *next, *prev, *next_free;
};

struct sink_worker {
  unsigned index;
  const struct sink_opts *o;
  struct tls_ctx *tls_ctx; /* shared by every worker; NULL: no TLS */
  struct buf plain;        /* scratch: what one tls_input() decrypted */
  struct buf cipher;       /* scratch: what one tls_take_output() gave */
  struct io_uring ring;
  struct bufring bufs; /* multishot recv buffers (group 0) */
  int listen_fd, accept_armed;
  int wake_fd;
  uint64_t wake_value;
  int stopping;
  int stop;  /* set by main, then the eventfd is written */
  int ready; /* set by the worker: 1 running, -1 set-up failed */
  uint64_t rng;
  uint64_t next_id;
  struct sink_conn *live, *free_conns;
  unsigned num_conns;
  struct sink_stats st;
  pthread_t thread;
};

static uint64_t sink_tag(void *owner, enum sink_op kind) {
  return (uint64_t)(uintptr_t)owner | (uint64_t)kind;
}

/* sink_rand: splitmix64, so a seed gives the same verdicts every run. */
static uint64_t sink_rand(struct sink_worker *w) {
  uint64_t z = (w->rng += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static struct io_uring_sqe *sink_sqe(struct sink_worker *w) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
  for (int tries = 0; sqe == NULL; tries++) {
    int rc = io_uring_submit(&w->ring);
    if (rc < 0 && tries > 1000) {
      /* Completions are reaped every turn, so a ring that keeps refusing
       * submissions is broken: stop rather than spin. */
      fprintf(stderr, "postseal-bench: io_uring_submit: %s\n", strerror(-rc));
      abort();
    }
    sqe = io_uring_get_sqe(&w->ring);
  }
  return sqe;
}

/* ---- set-up ---- */

static int sink_listen(const char *text, char *err, size_t err_len) {
  struct sockaddr_storage ss;
  socklen_t len;
  if (bench_addr_parse(text, &ss, &len) != 0) {
    snprintf(err, err_len, "--listen %s: want a numeric host:port", text);
    return -1;
  }
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd < 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
      bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, 4096) != 0) {
    snprintf(err, err_len, "listen %s: %s", text, strerror(errno));
    if (fd >= 0) {
      close(fd);
    }
    return -1;
  }
  return fd;
}

static int sink_ring_init(struct sink_worker *w) {
  struct io_uring_params p = {0};
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
            IORING_SETUP_CQSIZE;
  p.cq_entries = SINK_CQ_ENTRIES;
  if (io_uring_queue_init_params(SINK_RING_ENTRIES, &w->ring, &p) == 0) {
    return 0;
  }
  memset(&p, 0, sizeof(p));
  p.flags = IORING_SETUP_CQSIZE;
  p.cq_entries = SINK_CQ_ENTRIES;
  return io_uring_queue_init_params(SINK_RING_ENTRIES, &w->ring, &p);
}

static void sink_arm_accept(struct sink_worker *w) {
  struct io_uring_sqe *sqe = sink_sqe(w);
  io_uring_prep_multishot_accept(sqe, w->listen_fd, NULL, NULL, SOCK_CLOEXEC);
  io_uring_sqe_set_data64(sqe, sink_tag(w, SINK_OP_ACCEPT));
  w->accept_armed = 1;
}

static void sink_arm_wake(struct sink_worker *w) {
  struct io_uring_sqe *sqe = sink_sqe(w);
  io_uring_prep_read(sqe, w->wake_fd, &w->wake_value, sizeof(w->wake_value), 0);
  io_uring_sqe_set_data64(sqe, sink_tag(w, SINK_OP_WAKE));
}

/* ---- connections ---- */

static void sink_arm_recv(struct sink_conn *c) {
  struct io_uring_sqe *sqe = sink_sqe(c->w);
  io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = 0;
  io_uring_sqe_set_data64(sqe, sink_tag(c, SINK_OP_RECV));
  c->recv_armed = 1;
  c->num_ops++;
}

/* sink_maybe_free releases a shut connection once no op refers to it. */
static void sink_maybe_free(struct sink_conn *c) {
  struct sink_worker *w = c->w;
  if (c->freed || !c->shut || c->num_ops > 0) {
    return;
  }
  c->freed = 1;
  close(c->fd);
  smtp_server_free(c->smtp);
  buf_free(&c->out);
  buf_free(&c->pending);
  buf_free(&c->held);
  buf_free(&c->body);
  tls_free(c->tls);
  c->tls = NULL;
  if (c->prev != NULL) {
    c->prev->next = c->next;
  } else {
    w->live = c->next;
  }
  if (c->next != NULL) {
    c->next->prev = c->prev;
  }
  w->num_conns--;
  c->next_free = w->free_conns;
  w->free_conns = c;
}

static void sink_shutdown(struct sink_conn *c) {
  if (c->shut) {
    return;
  }
  c->shut = 1;
  shutdown(c->fd, SHUT_RDWR);
  if (c->delaying) {
    struct io_uring_sqe *sqe = sink_sqe(c->w);
    io_uring_prep_cancel64(sqe, sink_tag(c, SINK_OP_DELAY), 0);
    io_uring_sqe_set_data64(sqe, 0);
  }
  sink_maybe_free(c);
}

static void sink_flush(struct sink_conn *c) {
  if (c->sending || c->shut || c->out_off >= c->out.len) {
    return;
  }
  struct io_uring_sqe *sqe = sink_sqe(c->w);
  io_uring_prep_send(sqe, c->fd, c->out.data + c->out_off,
                     c->out.len - c->out_off, MSG_NOSIGNAL);
  io_uring_sqe_set_data64(sqe, sink_tag(c, SINK_OP_SEND));
  c->sending = 1;
  c->num_ops++;
}

/* sink_queue appends bytes for the socket; while a send is in flight
 * they wait in `pending` (the kernel reads `out`). 0, or -1 (the
 * connection is shut). */
static int sink_queue(struct sink_conn *c, const uint8_t *p, size_t n) {
  if (n == 0 || c->shut) {
    return 0;
  }
  if (!c->sending && c->out_off >= c->out.len) {
    buf_reset(&c->out);
    c->out_off = 0;
  }
  if (buf_append(c->sending ? &c->pending : &c->out, p, n) != 0) {
    sink_shutdown(c);
    return -1;
  }
  sink_flush(c);
  return 0;
}

/* sink_tls_flush queues what the adapter has to send: handshake
 * messages, tickets, records, alerts. */
static void sink_tls_flush(struct sink_conn *c) {
  struct sink_worker *w = c->w;
  buf_reset(&w->cipher);
  if (tls_take_output(c->tls, &w->cipher) != 0) {
    sink_shutdown(c);
    return;
  }
  sink_queue(c, w->cipher.data, w->cipher.len);
}

/* sink_move_output sends the engine's replies: in clear, or encrypted
 * once TLS is on. */
static void sink_move_output(struct sink_conn *c) {
  const uint8_t *p;
  size_t n;
  smtp_server_output(c->smtp, &p, &n);
  if (n == 0 || c->shut) {
    return;
  }
  if (c->tls == NULL) {
    if (sink_queue(c, p, n) == 0) {
      smtp_server_output_sent(c->smtp, n);
    }
    return;
  }
  if (tls_write(c->tls, p, n) != 0) {
    sink_shutdown(c);
    return;
  }
  smtp_server_output_sent(c->smtp, n);
  sink_tls_flush(c);
}

/* sink_feed_held gives the engine what it could not take before, in
 * pieces it can take. Returns 1 when nothing is held any more. */
static int sink_feed_held(struct sink_conn *c) {
  size_t off = 0;
  while (off < c->held.len) {
    size_t n = c->held.len - off;
    n = n > SINK_FEED_CHUNK ? SINK_FEED_CHUNK : n;
    if (smtp_server_feed(c->smtp, c->held.data + off, n) != 0) {
      break;
    }
    off += n;
  }
  buf_consume(&c->held, off);
  return c->held.len == 0;
}

/* ---- verdicts ---- */

/* sink_on_rcpt: the configured share of recipients fails, by a seeded
 * draw in units of 0.01 %. */
static void sink_on_rcpt(struct sink_conn *c) {
  struct sink_worker *w = c->w;
  double r = (double)(sink_rand(w) % 10000) / 100.0;
  if (r < w->o->tempfail_pct) {
    w->st.rcpt_tempfailed++;
    smtp_server_reject(c->smtp, 451, "4.3.0", "Sink tempfail (configured)");
  } else if (r < w->o->tempfail_pct + w->o->permfail_pct) {
    w->st.rcpt_permfailed++;
    smtp_server_reject(c->smtp, 550, "5.1.1", "Sink permfail (configured)");
  } else {
    w->st.rcpt_accepted++;
    smtp_server_accept(c->smtp);
  }
}

/* sink_write_body stores one message as DIR/t<thread>-<id>.eml (plain
 * write, no fsync: a sink measures the sender, not the disk). */
static int sink_write_body(struct sink_worker *w, uint64_t id,
                           const struct buf *body) {
  char path[4096];
  snprintf(path, sizeof(path), "%s/t%u-%llu.eml", w->o->write_dir, w->index,
           (unsigned long long)id);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return -1;
  }
  size_t off = 0;
  while (off < body->len) {
    ssize_t n = write(fd, body->data + off, body->len - off);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      close(fd);
      return -1;
    }
    off += (size_t)n;
  }
  return close(fd);
}

/* sink_verdict_message answers a complete message: write it if asked,
 * then 250 with a counter as queue id (451 if the write failed). */
static void sink_verdict_message(struct sink_conn *c) {
  struct sink_worker *w = c->w;
  uint64_t id = ++w->next_id;
  if (w->o->write_dir != NULL && sink_write_body(w, id, &c->body) != 0) {
    w->st.write_errors++;
    buf_reset(&c->body);
    smtp_server_reject(c->smtp, 451, "4.3.0", "Sink could not write");
    return;
  }
  buf_reset(&c->body);
  char qid[32];
  snprintf(qid, sizeof(qid), "S%u.%llu", w->index, (unsigned long long)id);
  w->st.messages++;
  w->st.last_ns = bench_now_ns();
  smtp_server_reply_queued(c->smtp, qid);
}

/* sink_on_message: answer now, or after --delay-ms on a ring timeout. */
static void sink_on_message(struct sink_conn *c) {
  struct sink_worker *w = c->w;
  if (w->o->write_dir != NULL) {
    smtp_server_take_body(c->smtp, &c->body);
  }
  if (w->o->delay_ms == 0) {
    sink_verdict_message(c);
    return;
  }
  c->delay_ts.tv_sec = w->o->delay_ms / 1000;
  c->delay_ts.tv_nsec = (long long)(w->o->delay_ms % 1000) * 1000000;
  struct io_uring_sqe *sqe = sink_sqe(w);
  io_uring_prep_timeout(sqe, &c->delay_ts, 0, 0);
  io_uring_sqe_set_data64(sqe, sink_tag(c, SINK_OP_DELAY));
  c->delaying = 1;
  c->num_ops++;
}

/* sink_pump runs the engine until it needs input or owes a verdict. */
static void sink_pump(struct sink_conn *c) {
  for (;;) {
    if (c->shut) {
      return;
    }
    sink_feed_held(c);
    enum smtp_server_event ev = smtp_server_next(c->smtp);
    switch (ev) {
    case SMTP_SERVER_EV_MAIL:
      smtp_server_accept(c->smtp);
      continue;
    case SMTP_SERVER_EV_RCPT:
      sink_on_rcpt(c);
      continue;
    case SMTP_SERVER_EV_MESSAGE:
      sink_on_message(c);
      continue;
    case SMTP_SERVER_EV_STARTTLS:
      sink_move_output(c); /* the 220, in clear */
      /* Anything held back came in clear after STARTTLS: never run it
       * as if it came inside TLS (RFC 3207 §4.2, CVE-2011-0411). */
      buf_reset(&c->held);
      c->tls = tls_new_server(c->w->tls_ctx);
      if (c->tls == NULL) {
        sink_shutdown(c);
        return;
      }
      continue;
    case SMTP_SERVER_EV_CLOSE:
      sink_move_output(c);
      c->closing = 1; /* shut once the last reply has left */
      if (!c->sending) {
        sink_shutdown(c);
      }
      return;
    case SMTP_SERVER_NEED_INPUT:
      if (c->held.len > 0) {
        size_t held_before = c->held.len;
        sink_feed_held(c); /* the engine drained its input: it has room */
        if (c->held.len != held_before) {
          continue;
        }
        sink_shutdown(c); /* it takes nothing: give up on this client */
        return;
      }
      sink_move_output(c);
      return;
    default: /* WAIT_VERDICT, HELO, RSET */
      if (ev == SMTP_SERVER_WAIT_VERDICT) {
        sink_move_output(c);
        return;
      }
      continue;
    }
  }
}

/* ---- completions ---- */

static void sink_on_accept(struct sink_worker *w, int res, unsigned flags) {
  if (!(flags & IORING_CQE_F_MORE)) {
    w->accept_armed = 0;
  }
  if (res < 0) {
    if (!w->stopping && !w->accept_armed) {
      sink_arm_accept(w);
    }
    return;
  }
  if (w->stopping) {
    close(res);
    return;
  }
  if (!w->accept_armed) {
    sink_arm_accept(w);
  }
  struct sink_conn *c = w->free_conns;
  if (c != NULL) {
    w->free_conns = c->next_free;
  } else if ((c = aligned_alloc(16, sizeof(*c))) == NULL) {
    close(res);
    return;
  }
  memset(c, 0, sizeof(*c));
  c->w = w;
  c->fd = res;
  struct smtp_server_config sc = {
      .hostname = "sink.postseal-bench.invalid",
      .extensions = SMTP_EXT_ALL,
      .stats = &w->st.smtp,
  };
  if (w->tls_ctx != NULL && w->o->tls_implicit) {
    sc.tls_active = 1;
    c->tls = tls_new_server(w->tls_ctx);
  } else if (w->tls_ctx != NULL) {
    sc.extensions |= SMTP_EXT_STARTTLS;
  }
  smtp_server_limits_default(&sc.limits);
  sc.limits.max_recipients = 1000;
  /* The refusals we configure count as the client's errors in the engine;
   * a sink must not hang up on a sender for verdicts it asked for. */
  sc.limits.max_errors = 1000000000;
  sc.limits.max_message_size = BENCH_MAX_SIZE + 65536;
  c->smtp = smtp_server_new(&sc);
  c->next = w->live;
  if (w->live != NULL) {
    w->live->prev = c;
  }
  w->live = c;
  w->num_conns++;
  if (c->smtp == NULL || (w->o->tls_implicit && c->tls == NULL)) {
    c->shut = 1;
    sink_maybe_free(c);
    return;
  }
  if (w->st.sessions++ == 0) {
    w->st.first_ns = bench_now_ns();
  }
  int one = 1;
  setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  sink_arm_recv(c);
  sink_pump(c); /* the greeting */
}

/* sink_feed gives the engine received plaintext (or holds it while the
 * engine's input is full) and runs it. */
static void sink_feed(struct sink_conn *c, const uint8_t *data, size_t n) {
  if (n == 0 || c->shut || c->closing) {
    return;
  }
  if (c->held.len == 0 && smtp_server_feed(c->smtp, data, n) == 0) {
    sink_pump(c);
  } else if (c->held.len + n > SINK_MAX_HELD ||
             buf_append(&c->held, data, n) != 0) {
    sink_shutdown(c); /* a client that never waits for replies */
  } else {
    sink_pump(c);
  }
}

/* sink_tls_done counts a finished handshake; after STARTTLS the engine
 * resets the session (the client must EHLO again). */
static void sink_tls_done(struct sink_conn *c) {
  struct sink_worker *w = c->w;
  c->tls_ready = 1;
  if (tls_session_reused(c->tls)) {
    w->st.tls_resumed++;
  } else {
    w->st.tls_full++;
  }
  if (!w->o->tls_implicit) {
    smtp_server_tls_started(c->smtp);
  }
}

/* sink_on_tls_data decrypts received bytes; the engine learns that TLS
 * is up before it sees the first plaintext inside it. An error or the
 * client's close_notify ends the session once the replies have left. */
static void sink_on_tls_data(struct sink_conn *c, const uint8_t *data,
                             size_t n) {
  struct sink_worker *w = c->w;
  buf_reset(&w->plain);
  enum tls_status st = tls_input(c->tls, &w->plain, data, n);
  if (!c->tls_ready && tls_handshake_done(c->tls)) {
    sink_tls_done(c);
  }
  if (st == TLS_ERROR && !c->tls_ready) {
    w->st.tls_failed++;
  }
  sink_tls_flush(c); /* the next handshake flight, tickets, an alert */
  if (st == TLS_OK) {
    /* (implicit TLS: the greeting waited inside the adapter and left
     * with the flush above) */
    sink_feed(c, w->plain.data, w->plain.len);
    return;
  }
  if (st == TLS_CLOSED) {
    sink_feed(c, w->plain.data, w->plain.len);
  }
  c->closing = 1;
  if (!c->sending) {
    sink_shutdown(c);
  }
}

static void sink_on_recv(struct sink_worker *w, struct sink_conn *c, int res,
                         unsigned flags) {
  if (!(flags & IORING_CQE_F_MORE)) {
    c->recv_armed = 0;
    c->num_ops--;
  }
  if (res > 0) {
    unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
    const uint8_t *data = bufring_data(&w->bufs, bid);
    w->st.bytes += (uint64_t)res;
    if (!c->shut && !c->closing) {
      if (c->tls != NULL) {
        sink_on_tls_data(c, data, (size_t)res);
      } else {
        sink_feed(c, data, (size_t)res);
      }
    }
    bufring_return(&w->bufs, bid);
  }
  if (res == 0 || (res < 0 && res != -ENOBUFS)) {
    sink_shutdown(c);
  } else if (!c->recv_armed && !c->shut) {
    sink_arm_recv(c); /* the kernel ended the multishot (ENOBUFS) */
  }
  sink_maybe_free(c);
}

static void sink_on_send(struct sink_conn *c, int res) {
  c->sending = 0;
  c->num_ops--;
  if (res < 0) {
    sink_shutdown(c);
  } else {
    c->out_off += (size_t)res; /* a short send is resumed below */
    if (c->out_off >= c->out.len) {
      struct buf sent = c->out;
      c->out = c->pending;
      c->pending = sent;
      buf_reset(&c->pending);
      c->out_off = 0;
    }
    if (c->out_off < c->out.len) {
      sink_flush(c);
    } else if (c->closing) {
      sink_shutdown(c);
    }
  }
  sink_maybe_free(c);
}

static void sink_on_delay(struct sink_conn *c) {
  c->delaying = 0;
  c->num_ops--;
  if (!c->shut) {
    sink_verdict_message(c);
    sink_pump(c);
  }
  sink_maybe_free(c);
}

/* sink_begin_stop: stop accepting and close every session. */
static void sink_begin_stop(struct sink_worker *w) {
  if (w->stopping) {
    return;
  }
  w->stopping = 1;
  shutdown(w->listen_fd, SHUT_RDWR); /* ends the multishot accept */
  for (struct sink_conn *c = w->live, *next; c != NULL; c = next) {
    next = c->next;
    sink_shutdown(c);
  }
}

static void sink_dispatch(struct sink_worker *w, const struct io_uring_cqe *e) {
  uint64_t data = io_uring_cqe_get_data64(e);
  if (data == 0) {
    return;
  }
  enum sink_op kind = (enum sink_op)(data & SINK_OP_MASK);
  void *owner = (void *)(uintptr_t)(data & ~(uint64_t)SINK_OP_MASK);
  switch (kind) {
  case SINK_OP_ACCEPT:
    sink_on_accept(w, e->res, e->flags);
    break;
  case SINK_OP_RECV:
    sink_on_recv(w, owner, e->res, e->flags);
    break;
  case SINK_OP_SEND:
    sink_on_send(owner, e->res);
    break;
  case SINK_OP_DELAY:
    sink_on_delay(owner);
    break;
  case SINK_OP_WAKE:
    if (__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
      sink_begin_stop(w);
    } else {
      sink_arm_wake(w);
    }
    break;
  default:
    abort(); /* a tag we never set */
  }
}

static void *sink_worker_main(void *arg) {
  struct sink_worker *w = arg;
  /* The ring is made here: a single-issuer ring belongs to the thread
   * that creates it. */
  int ok =
      sink_ring_init(w) == 0 &&
      bufring_init(&w->bufs, &w->ring, SINK_BUF_COUNT, SINK_BUF_SIZE, 0) == 0;
  __atomic_store_n(&w->ready, ok ? 1 : -1, __ATOMIC_RELEASE);
  if (!ok) {
    return NULL;
  }
  sink_arm_accept(w);
  sink_arm_wake(w);
  while (!(w->stopping && w->num_conns == 0 && !w->accept_armed)) {
    int rc = io_uring_submit_and_wait(&w->ring, 1);
    if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
      fprintf(stderr, "postseal-bench sink: io_uring: %s\n", strerror(-rc));
      abort(); /* a broken ring: never spin on it */
    }
    struct io_uring_cqe *cqe;
    while (io_uring_peek_cqe(&w->ring, &cqe) == 0) {
      struct io_uring_cqe copy = *cqe;
      io_uring_cqe_seen(&w->ring, cqe);
      sink_dispatch(w, &copy);
    }
  }
  return NULL;
}

/* ---- main ---- */

static void sink_usage(FILE *f) {
  fprintf(f,
          "usage: postseal-bench sink --listen HOST:PORT [--threads N]\n"
          "       [--delay-ms D] [--tempfail PCT] [--permfail PCT]\n"
          "       [--write-dir DIR] [--report FILE] [--duration S] "
          "[--seed N]\n"
          "       [--tls-cert PEM --tls-key PEM [--tls] [--tls-min-version "
          "1.2|1.3]]\n"
          "Accepts SMTP and counts; stops on SIGTERM/SIGINT or after S "
          "seconds\n(at most %.0f), then writes a JSON report. With a "
          "certificate it offers STARTTLS,\nor with --tls speaks TLS from "
          "the first byte (RFC 8314).\n",
          BENCH_MAX_SECONDS);
}

static int sink_parse(int argc, char **argv, struct sink_opts *o) {
  static const struct option longopts[] = {
      {"listen", required_argument, NULL, 'l'},
      {"threads", required_argument, NULL, 't'},
      {"delay-ms", required_argument, NULL, 'd'},
      {"tempfail", required_argument, NULL, 'T'},
      {"permfail", required_argument, NULL, 'P'},
      {"write-dir", required_argument, NULL, 'w'},
      {"report", required_argument, NULL, 'r'},
      {"duration", required_argument, NULL, 'D'},
      {"seed", required_argument, NULL, 's'},
      {"tls-cert", required_argument, NULL, 'C'},
      {"tls-key", required_argument, NULL, 'K'},
      {"tls", no_argument, NULL, 'I'},
      {"tls-min-version", required_argument, NULL, 'V'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  *o = (struct sink_opts){
      .threads = 1, .duration_s = BENCH_MAX_SECONDS, .seed = 1};
  int ch;
  char *end = NULL;
  optind = 1;
  while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    errno = 0;
    switch (ch) {
    case 'l':
      o->listen = optarg;
      break;
    case 't':
      o->threads = (unsigned)strtoul(optarg, &end, 10);
      break;
    case 'd':
      o->delay_ms = (unsigned)strtoul(optarg, &end, 10);
      break;
    case 'T':
      o->tempfail_pct = strtod(optarg, &end);
      break;
    case 'P':
      o->permfail_pct = strtod(optarg, &end);
      break;
    case 'w':
      o->write_dir = optarg;
      break;
    case 'r':
      o->report = optarg;
      break;
    case 'D':
      o->duration_s = strtod(optarg, &end);
      break;
    case 's':
      o->seed = strtoull(optarg, &end, 10);
      break;
    case 'C':
      o->tls_cert = optarg;
      break;
    case 'K':
      o->tls_key = optarg;
      break;
    case 'I':
      o->tls_implicit = 1;
      break;
    case 'V':
      o->tls_min_version = optarg; /* the adapter checks it */
      break;
    case 'h':
      sink_usage(stdout);
      exit(0);
    default:
      return -1;
    }
    if (end != NULL && (*end != '\0' || errno != 0)) {
      fprintf(stderr, "postseal-bench sink: bad number: %s\n", optarg);
      return -1;
    }
    end = NULL;
  }
  if (optind != argc || o->listen == NULL) {
    return -1;
  }
  if ((o->tls_cert == NULL) != (o->tls_key == NULL) ||
      (o->tls_implicit && o->tls_cert == NULL)) {
    fprintf(stderr, "postseal-bench sink: --tls-cert and --tls-key go "
                    "together, and --tls needs them\n");
    return -1;
  }
  if (o->threads < 1 || o->threads > SINK_MAX_THREADS ||
      o->delay_ms > SINK_MAX_DELAY_MS || o->tempfail_pct < 0 ||
      o->permfail_pct < 0 || o->tempfail_pct + o->permfail_pct > 100 ||
      !(o->duration_s > 0) || o->duration_s > BENCH_MAX_SECONDS) {
    fprintf(stderr, "postseal-bench sink: an option is out of range\n");
    return -1;
  }
  return 0;
}

static void sink_sum(struct sink_stats *sum, const struct sink_stats *s) {
  sum->sessions += s->sessions;
  sum->messages += s->messages;
  sum->rcpt_accepted += s->rcpt_accepted;
  sum->rcpt_tempfailed += s->rcpt_tempfailed;
  sum->rcpt_permfailed += s->rcpt_permfailed;
  sum->bytes += s->bytes;
  sum->write_errors += s->write_errors;
  sum->tls_full += s->tls_full;
  sum->tls_resumed += s->tls_resumed;
  sum->tls_failed += s->tls_failed;
  if (s->sessions > 0 && (sum->first_ns == 0 || s->first_ns < sum->first_ns)) {
    sum->first_ns = s->first_ns;
  }
  if (s->last_ns > sum->last_ns) {
    sum->last_ns = s->last_ns;
  }
  for (int k = 0; k < 6; k++) {
    sum->smtp.replies[k] += s->smtp.replies[k];
  }
}

static int sink_report(const struct sink_opts *o, const struct sink_stats *s,
                       double elapsed) {
  FILE *f = o->report != NULL ? fopen(o->report, "w") : stdout;
  if (f == NULL) {
    fprintf(stderr, "postseal-bench sink: %s: %s\n", o->report,
            strerror(errno));
    return -1;
  }
  /* active: first session to last accepted message, the sender's window */
  double active =
      s->last_ns > s->first_ns ? (double)(s->last_ns - s->first_ns) / 1e9 : 0.0;
  fprintf(f,
          "{\"tool\": \"postseal-bench sink\", \"listen\": \"%s\", "
          "\"threads\": %u, \"delay_ms\": %u, \"tempfail_pct\": %g, "
          "\"permfail_pct\": %g, \"seed\": %llu,\n"
          " \"sessions\": %llu, \"messages\": %llu,\n"
          " \"recipients\": {\"accepted\": %llu, \"tempfailed\": %llu, "
          "\"permfailed\": %llu},\n"
          " \"replies\": {\"2xx\": %llu, \"4xx\": %llu, \"5xx\": %llu},\n"
          " \"bytes\": %llu, \"write_errors\": %llu,\n"
          " \"tls\": {\"mode\": \"%s\", \"handshakes\": %llu, \"full\": %llu, "
          "\"resumed\": %llu, \"failed\": %llu},\n"
          " \"elapsed_s\": %.3f, \"active_s\": %.3f, \"msg_per_s\": %.1f}\n",
          o->listen, o->threads, o->delay_ms, o->tempfail_pct, o->permfail_pct,
          (unsigned long long)o->seed, (unsigned long long)s->sessions,
          (unsigned long long)s->messages, (unsigned long long)s->rcpt_accepted,
          (unsigned long long)s->rcpt_tempfailed,
          (unsigned long long)s->rcpt_permfailed,
          (unsigned long long)s->smtp.replies[2],
          (unsigned long long)s->smtp.replies[4],
          (unsigned long long)s->smtp.replies[5], (unsigned long long)s->bytes,
          (unsigned long long)s->write_errors,
          o->tls_cert == NULL ? "none"
          : o->tls_implicit   ? "implicit"
                              : "starttls",
          (unsigned long long)(s->tls_full + s->tls_resumed),
          (unsigned long long)s->tls_full, (unsigned long long)s->tls_resumed,
          (unsigned long long)s->tls_failed, elapsed, active,
          active > 0 ? (double)s->messages / active : 0.0);
  if (f != stdout) {
    return fclose(f);
  }
  fflush(f);
  return 0;
}

/* sink_start_workers opens every worker's listener and ring, then starts
 * the threads. Returns the number started; on failure prints why. */
static unsigned sink_start_workers(const struct sink_opts *o,
                                   struct tls_ctx *tls_ctx,
                                   struct sink_worker *ws) {
  char err[256];
  for (unsigned i = 0; i < o->threads; i++) {
    struct sink_worker *w = &ws[i];
    w->index = i;
    w->o = o;
    w->tls_ctx = tls_ctx;
    w->rng = o->seed * 0x9e3779b97f4a7c15ull + i;
    w->listen_fd = sink_listen(o->listen, err, sizeof(err));
    w->wake_fd = eventfd(0, EFD_CLOEXEC);
    if (w->listen_fd < 0) {
      fprintf(stderr, "postseal-bench sink: %s\n", err);
      return i;
    }
    if (w->wake_fd < 0 ||
        pthread_create(&w->thread, NULL, sink_worker_main, w) != 0) {
      close(w->listen_fd);
      return i;
    }
    int ready;
    while ((ready = __atomic_load_n(&w->ready, __ATOMIC_ACQUIRE)) == 0) {
      usleep(1000);
    }
    if (ready < 0) {
      fprintf(stderr, "postseal-bench sink: io_uring set-up failed\n");
      pthread_join(w->thread, NULL);
      close(w->listen_fd);
      return i;
    }
  }
  return o->threads;
}

static void sink_worker_cleanup(struct sink_worker *w) {
  io_uring_queue_exit(&w->ring);
  bufring_free(&w->bufs, NULL);
  close(w->listen_fd);
  close(w->wake_fd);
  buf_free(&w->plain);
  buf_free(&w->cipher);
  for (struct sink_conn *c = w->free_conns, *next; c != NULL; c = next) {
    next = c->next_free;
    free(c);
  }
}

/* sink_wait blocks until SIGTERM/SIGINT or the duration passes. */
static void sink_wait(double duration_s) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  struct timespec ts = {
      .tv_sec = (time_t)duration_s,
      .tv_nsec = (long)((duration_s - (double)(time_t)duration_s) * 1e9)};
  int64_t end = bench_now_ns() + (int64_t)(duration_s * 1e9);
  while (sigtimedwait(&set, NULL, &ts) < 0 && errno == EINTR) {
    int64_t left = end - bench_now_ns();
    if (left <= 0) {
      break;
    }
    ts.tv_sec = left / 1000000000;
    ts.tv_nsec = left % 1000000000;
  }
}

int bench_sink_main(int argc, char **argv) {
  struct sink_opts o;
  if (sink_parse(argc, argv, &o) != 0) {
    sink_usage(stderr);
    return 2;
  }
  /* Signals go to sigtimedwait in this thread; workers inherit the mask. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  struct tls_ctx *tls_ctx = NULL;
  if (o.tls_cert != NULL) {
    char err[512];
    struct tls_server_config tc = {.cert_file = o.tls_cert,
                                   .key_file = o.tls_key,
                                   .min_version = o.tls_min_version};
    tls_ctx = tls_ctx_new_server(&tc, err, sizeof(err));
    if (tls_ctx == NULL) {
      fprintf(stderr, "postseal-bench sink: tls: %s\n", err);
      return 1;
    }
  }
  struct sink_worker *ws = calloc(o.threads, sizeof(*ws));
  if (ws == NULL) {
    tls_ctx_free(tls_ctx);
    return 1;
  }
  int64_t start = bench_now_ns();
  unsigned started = sink_start_workers(&o, tls_ctx, ws);
  if (started == o.threads) {
    fprintf(stderr, "postseal-bench sink: listening on %s threads=%u%s\n",
            o.listen, o.threads,
            tls_ctx == NULL ? "" : (o.tls_implicit ? " tls" : " starttls"));
    sink_wait(o.duration_s);
  }
  for (unsigned i = 0; i < started; i++) {
    __atomic_store_n(&ws[i].stop, 1, __ATOMIC_RELEASE);
    uint64_t one = 1;
    ssize_t n = write(ws[i].wake_fd, &one, sizeof(one));
    (void)n;
  }
  struct sink_stats sum = {0};
  for (unsigned i = 0; i < started; i++) {
    pthread_join(ws[i].thread, NULL);
    sink_sum(&sum, &ws[i].st);
    sink_worker_cleanup(&ws[i]);
  }
  double elapsed = (double)(bench_now_ns() - start) / 1e9;
  free(ws);
  tls_ctx_free(tls_ctx);
  if (started != o.threads) {
    return 1;
  }
  return sink_report(&o, &sum, elapsed) == 0 ? 0 : 1;
}
