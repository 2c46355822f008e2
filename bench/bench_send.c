/* bench/bench_send.c — `postseal-bench send`: drives C concurrent SMTP
 * sessions from one io_uring loop, each a bench_client state machine.
 *
 * Closed loop (default): a session starts its next message as soon as the
 * previous one got its reply. Open loop (--rate R): message i is scheduled
 * at start + i/R; an idle session takes the oldest due slot, and the
 * message latency counts from the scheduled time, so a slow server cannot
 * hide its queueing by slowing the sender (coordinated omission).
 *
 * Every in-flight operation carries (connection, kind) in user_data; a
 * connection is reused for its next session only when none of its
 * operations is left. Sends go out with sendmsg over two pieces: the
 * session's commands and header (copied) and the shared body (borrowed,
 * it lives for the run); a short send is resumed.
 *
 * TLS (--starttls after the first EHLO, --tls from the first byte) runs
 * through the sans-I/O adapter of crypto/tls.h: received bytes go through
 * tls_input() before the session sees them, and what the session queues
 * goes through tls_write() into the connection's send buffer (one piece,
 * ciphertext). One client context serves every connection; with
 * --tls-resume its session cache, keyed by the target, resumes later
 * handshakes. The server's certificate is not checked: this is load.
 *
 * AUTH (--auth USER:PASSWORD): every session authenticates once with AUTH
 * PLAIN after its last EHLO (bench_client.h), only inside TLS unless
 * --auth-insecure. A refused AUTH ends the session like a refused EHLO:
 * counted (errors.auth), the slot waits SEND_RETRY_NS before it connects
 * again, and SEND_MAX_SESSION_FAILS in a row end the run, so a wrong
 * password fails the run instead of hammering the server. The password is
 * copied out of argv and wiped there, never printed, and wiped at exit. */
#include <errno.h>
#include <getopt.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"
#include "bench/bench_client.h"
#include "core/bufring.h"
#include "crypto/tls.h"

#define SEND_BUF_SIZE 4096
#define SEND_BUF_COUNT 1024 /* power of two */
#define SEND_RING_ENTRIES 1024
#define SEND_CQ_ENTRIES 16384
#define SEND_TICK_NS 100000000      /* timeouts, retries, stop checks */
#define SEND_RETRY_NS 100000000     /* after a failed connect */
#define SEND_MAX_CONNECT_FAILS 1000 /* in a row: the target is not there */
/* Sessions in a row that ended in error before their first message (EHLO
 * or STARTTLS refused, a handshake failed, the server hung up): the
 * target cannot take this load at all. */
#define SEND_MAX_SESSION_FAILS 100

enum send_tls_mode {
  SEND_TLS_NONE,
  SEND_TLS_STARTTLS, /* RFC 3207, after the first EHLO */
  SEND_TLS_IMPLICIT, /* RFC 8314, from the first byte */
};

enum send_op {
  SEND_OP_CONNECT = 1,
  SEND_OP_RECV = 2,
  SEND_OP_SEND = 3,
  SEND_OP_MASK = 15,
};

struct send_opts {
  const char *target;
  unsigned connections;
  uint64_t count;
  double duration_s;
  double rate;
  size_t sizes[BENCH_MAX_SIZES];
  unsigned weights[BENCH_MAX_SIZES];
  unsigned num_sizes;
  unsigned rcpts;
  unsigned per_conn;
  int pipelining;
  double warmup_s;
  double timeout_s;
  const char *from;
  const char *to_domain;
  const char *json;
  uint64_t seed;
  enum send_tls_mode tls_mode;
  int tls_resume;              /* session_key = the target */
  const char *tls_min_version; /* NULL: the adapter's default (1.2) */
  char auth_user[BENCH_CLIENT_MAX_AUTH_USER + 1]; /* "": no AUTH */
  char auth_password[BENCH_CLIENT_MAX_AUTH_PASSWORD + 1];
  int auth_insecure; /* AUTH without TLS */
};

struct send_errors {
  uint64_t connect, disconnect, timeout, protocol;
  uint64_t tls;  /* STARTTLS missing or refused, handshake or record error */
  uint64_t auth; /* AUTH refused, AUTH PLAIN not offered */
  uint64_t lost; /* messages that got no final reply */
};

/* AUTH outcomes of measured sessions (connected after the warm-up). */
struct send_auth_stats {
  uint64_t ok;          /* 235 */
  uint64_t failed;      /* the session ended over AUTH */
  uint64_t not_offered; /* of failed: the server had no AUTH PLAIN */
};

/* Handshakes of measured sessions (started after the warm-up). */
struct send_tls_stats {
  uint64_t full, resumed, failed;
  uint64_t tls13; /* of full + resumed */
};

struct send_run;

struct sconn {
  /* 16-aligned, so the op kind fits in the low bits of a tag. */
  _Alignas(16) struct send_run *r;
  int fd; /* -1: no socket */
  struct bench_client bc;
  struct buf out;      /* commands and header being sent */
  struct iovec iov[2]; /* out, then the borrowed body */
  struct msghdr mh;
  int sending, recv_armed, connecting, shut, live, waiting;
  unsigned num_ops;
  unsigned msgs_on_conn;
  int warm;    /* the current message is a warm-up one */
  int opening; /* counted in run->num_opening */
  int64_t t_connect, t_ehlo, t_body, t_msg, last_io;
  int64_t retry_at; /* 0, or when to connect again */
  struct tls *tls;  /* NULL: plaintext (so far) */
  int tls_done;     /* the handshake finished */
  int64_t t_tls;    /* the handshake started */
  int64_t t_auth;   /* the last EHLO reply: AUTH left with its answer */
};

struct send_run {
  const struct send_opts *o;
  struct io_uring ring;
  int ring_ok;         /* the io_uring was set up */
  struct bufring bufs; /* multishot recv buffers (group 0) */
  struct sockaddr_storage addr;
  socklen_t addr_len;
  struct sconn *conns;
  unsigned num_live; /* connection slots still working */
  unsigned *idle;    /* open loop: sessions waiting for a due slot */
  unsigned num_idle;
  struct buf bodies[BENCH_MAX_SIZES];
  unsigned weight_total;
  uint64_t rng;
  char run_id[32];
  char date[64];
  time_t date_sec;
  uint64_t serial;
  int64_t t0, t_measure, t_end_cap, t_done, t_last_reply;
  uint64_t scheduled;   /* open loop: slots handed out */
  uint64_t started;     /* measured messages started */
  unsigned num_opening; /* sessions not yet at their first message */
  uint64_t finished;    /* measured messages with a final reply */
  uint64_t sessions;
  uint64_t bytes_sent;
  uint64_t connect_fails_in_row;
  uint64_t session_fails_in_row;
  int done;
  int fatal;
  struct send_errors err;
  struct bench_client_stats stats, warm_stats;
  struct hdr h_connect, h_ehlo, h_data, h_msg, h_tls, h_auth;
  struct send_auth_stats auth;
  struct tls_ctx *tls_ctx; /* NULL unless --starttls or --tls */
  struct buf plain;        /* scratch: what one tls_input() decrypted */
  struct send_tls_stats tls;
  char tls_version[16], tls_cipher[64]; /* of the last handshake */
};

static volatile sig_atomic_t send_signalled;

static void send_on_signal(int sig) {
  (void)sig;
  send_signalled++;
}

static uint64_t send_tag(struct sconn *c, enum send_op kind) {
  return (uint64_t)(uintptr_t)c | (uint64_t)kind;
}

static struct io_uring_sqe *send_sqe(struct send_run *r) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
  for (int tries = 0; sqe == NULL; tries++) {
    int rc = io_uring_submit(&r->ring);
    if (rc < 0 && tries > 1000) {
      /* Completions are reaped every turn, so a ring that keeps refusing
       * submissions is broken: stop rather than spin. */
      fprintf(stderr, "postseal-bench: io_uring_submit: %s\n", strerror(-rc));
      abort();
    }
    sqe = io_uring_get_sqe(&r->ring);
  }
  return sqe;
}

/* send_rand: splitmix64 (message sizes repeat with the seed). */
static uint64_t send_rand(struct send_run *r) {
  uint64_t z = (r->rng += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static void send_record_us(struct send_run *r, struct hdr *h, int64_t from,
                           int64_t to) {
  (void)r;
  int64_t d = to - from;
  hdr_record(h, d > 0 ? (uint64_t)(d / 1000) : 0);
}

/* send_in_warmup: messages started now are not measured. */
static int send_in_warmup(const struct send_run *r, int64_t now) {
  return now < r->t_measure;
}

/* send_work_left: 1 while new messages may still be started. */
static int send_work_left(struct send_run *r, int64_t now) {
  if (r->done) {
    return 0;
  }
  const struct send_opts *o = r->o;
  if (send_signalled || r->fatal || now >= r->t_end_cap ||
      (o->count > 0 && r->started >= o->count) ||
      (o->duration_s > 0 &&
       now >= r->t_measure + (int64_t)(o->duration_s * 1e9))) {
    r->done = 1;
    r->t_done = now;
    return 0;
  }
  return 1;
}

/* send_want_session: 1 if a new session would find a message to send
 * (sessions still opening will each take one). */
static int send_want_session(struct send_run *r, int64_t now) {
  return send_work_left(r, now) &&
         (r->o->count == 0 || r->started + r->num_opening < r->o->count ||
          send_in_warmup(r, now));
}

/* sconn_failed_early notes a session that ended in error before its
 * first message: its slot waits before connecting again, and too many in
 * a row end the run (a refusing server must not make a busy loop). */
static void sconn_failed_early(struct sconn *c, int64_t now, const char *why) {
  struct send_run *r = c->r;
  if (c->msgs_on_conn > 0 || c->shut) {
    return;
  }
  c->retry_at = now + SEND_RETRY_NS;
  if (++r->session_fails_in_row == SEND_MAX_SESSION_FAILS) {
    fprintf(stderr,
            "postseal-bench send: %d sessions in a row ended before their "
            "first message (last: %s); giving up\n",
            SEND_MAX_SESSION_FAILS, why);
    r->fatal = 1;
  }
}

static void sconn_opened(struct sconn *c) {
  if (c->opening) {
    c->opening = 0;
    c->r->num_opening--;
  }
}

/* ---- connections ---- */

static void sconn_arm_recv(struct sconn *c) {
  struct io_uring_sqe *sqe = send_sqe(c->r);
  io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = 0;
  io_uring_sqe_set_data64(sqe, send_tag(c, SEND_OP_RECV));
  c->recv_armed = 1;
  c->num_ops++;
}

static void sconn_connect(struct sconn *c, int64_t now) {
  struct send_run *r = c->r;
  const struct send_opts *o = r->o;
  struct bench_client_config cc = {
      .helo = "postseal-bench.invalid",
      .from = o->from,
      .to_domain = o->to_domain,
      .num_rcpts = o->rcpts,
      .pipelining = o->pipelining,
      .starttls = o->tls_mode == SEND_TLS_STARTTLS,
      .implicit_tls = o->tls_mode == SEND_TLS_IMPLICIT,
      .auth_user = o->auth_user[0] != '\0' ? o->auth_user : NULL,
      .auth_password = o->auth_user[0] != '\0' ? o->auth_password : NULL,
      .auth_insecure = o->auth_insecure,
      .stats = send_in_warmup(r, now) ? &r->warm_stats : &r->stats,
  };
  c->retry_at = 0;
  c->fd = socket(r->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c->fd < 0 || bench_client_init(&c->bc, &cc) != 0) {
    if (c->fd >= 0) {
      close(c->fd);
    }
    c->fd = -1;
    r->err.connect++;
    c->retry_at = now + SEND_RETRY_NS;
    return;
  }
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  c->sending = c->recv_armed = c->shut = c->waiting = 0;
  c->msgs_on_conn = 0;
  c->t_body = 0;
  c->warm = send_in_warmup(r, now);
  struct io_uring_sqe *sqe = send_sqe(r);
  io_uring_prep_connect(sqe, c->fd, (struct sockaddr *)&r->addr, r->addr_len);
  io_uring_sqe_set_data64(sqe, send_tag(c, SEND_OP_CONNECT));
  c->connecting = 1;
  c->num_ops++;
  c->t_connect = c->last_io = now;
  c->opening = 1;
  r->num_opening++;
}

/* sconn_finish runs once a shut connection has no operation left: the
 * slot connects again while there is work, or retires. */
static void sconn_finish(struct sconn *c, int64_t now) {
  struct send_run *r = c->r;
  if (!c->shut || c->num_ops > 0 || c->fd < 0) {
    return;
  }
  close(c->fd);
  c->fd = -1;
  bench_client_cleanup(&c->bc);
  tls_free(c->tls);
  c->tls = NULL;
  sconn_opened(c);
  if (send_want_session(r, now)) {
    if (c->retry_at == 0) {
      sconn_connect(c, now);
    }
    return;
  }
  c->live = 0;
  r->num_live--;
}

/* sconn_shutdown ends the session; a message in flight is lost. */
static void sconn_shutdown(struct sconn *c, int64_t now) {
  if (c->shut) {
    return;
  }
  if (bench_client_in_txn(&c->bc) && !c->warm) {
    c->r->err.lost++;
  }
  c->shut = 1;
  shutdown(c->fd, SHUT_RDWR);
  sconn_finish(c, now);
}

/* sconn_fill_plain moves what the session queued into the iovecs: the
 * commands (copied to out) and the borrowed body. */
static int sconn_fill_plain(struct sconn *c) {
  const uint8_t *p1, *p2;
  size_t n1, n2;
  bench_client_output(&c->bc, &p1, &n1, &p2, &n2);
  if (n1 + n2 == 0) {
    return 0;
  }
  buf_reset(&c->out);
  if (n1 > 0 && buf_append(&c->out, p1, n1) != 0) {
    return -1;
  }
  /* The session forgets these bytes now: out is ours, the body is the
   * run's and outlives every send. */
  bench_client_output_sent(&c->bc, n1 + n2);
  c->iov[0] = (struct iovec){.iov_base = c->out.data, .iov_len = n1};
  c->iov[1] = (struct iovec){.iov_base = (void *)p2, .iov_len = n2};
  return 0;
}

/* sconn_fill_tls encrypts what the session queued and takes everything
 * the adapter has to send (handshake messages, records, alerts) into out,
 * the one piece to send. */
static int sconn_fill_tls(struct sconn *c) {
  const uint8_t *p1, *p2;
  size_t n1, n2;
  bench_client_output(&c->bc, &p1, &n1, &p2, &n2);
  if ((n1 > 0 && tls_write(c->tls, p1, n1) != 0) ||
      (n2 > 0 && tls_write(c->tls, p2, n2) != 0)) {
    return -1;
  }
  bench_client_output_sent(&c->bc, n1 + n2);
  buf_reset(&c->out);
  if (tls_take_output(c->tls, &c->out) != 0) {
    return -1;
  }
  c->iov[0] = (struct iovec){.iov_base = c->out.data, .iov_len = c->out.len};
  c->iov[1] = (struct iovec){.iov_base = NULL, .iov_len = 0};
  return 0;
}

/* sconn_flush sends what the session has queued; one send in flight. A
 * send cut short goes on from where it stopped before anything new is
 * taken (so the clear STARTTLS leaves before the ClientHello). */
static void sconn_flush(struct sconn *c) {
  if (c->sending || c->shut || c->fd < 0 || c->connecting) {
    return;
  }
  if (c->iov[0].iov_len + c->iov[1].iov_len == 0) {
    int rc = c->tls != NULL ? sconn_fill_tls(c) : sconn_fill_plain(c);
    if (rc != 0) {
      if (c->tls != NULL) {
        c->r->err.tls++;
      }
      sconn_shutdown(c, bench_now_ns());
      return;
    }
    if (c->iov[0].iov_len + c->iov[1].iov_len == 0) {
      return;
    }
  }
  c->mh = (struct msghdr){.msg_iov = c->iov, .msg_iovlen = 2};
  if (c->iov[0].iov_len == 0) {
    c->mh.msg_iov = &c->iov[1];
    c->mh.msg_iovlen = 1;
  }
  struct io_uring_sqe *sqe = send_sqe(c->r);
  io_uring_prep_sendmsg(sqe, c->fd, &c->mh, MSG_NOSIGNAL);
  io_uring_sqe_set_data64(sqe, send_tag(c, SEND_OP_SEND));
  c->sending = 1;
  c->num_ops++;
}

/* ---- TLS ---- */

/* sconn_tls_start puts TLS under the session: after the 220 to STARTTLS,
 * or at connect (implicit). The ClientHello waits in the adapter for the
 * next flush. Returns 0, or -1 (allocation). */
static int sconn_tls_start(struct sconn *c, int64_t now) {
  struct send_run *r = c->r;
  struct tls_client_params params = {
      .session_key = r->o->tls_resume ? r->o->target : NULL};
  c->tls = tls_new_client(r->tls_ctx, &params);
  if (c->tls == NULL) {
    r->err.tls++;
    return -1;
  }
  c->tls_done = 0;
  c->t_tls = now;
  return 0;
}

/* sconn_tls_done counts a finished handshake of a measured session. */
static void sconn_tls_done(struct sconn *c, int64_t now) {
  struct send_run *r = c->r;
  c->tls_done = 1;
  if (send_in_warmup(r, c->t_connect)) {
    return;
  }
  if (tls_session_reused(c->tls)) {
    r->tls.resumed++;
  } else {
    r->tls.full++;
  }
  if (strcmp(tls_version(c->tls), "TLSv1.3") == 0) {
    r->tls.tls13++;
  }
  snprintf(r->tls_version, sizeof(r->tls_version), "%s", tls_version(c->tls));
  snprintf(r->tls_cipher, sizeof(r->tls_cipher), "%s", tls_cipher(c->tls));
  send_record_us(r, &r->h_tls, c->t_tls, now);
}

/* sconn_tls_input decrypts what arrived and hands the plaintext to the
 * session; the caller pumps the session, then acts on the status. */
static enum tls_status sconn_tls_input(struct sconn *c, const uint8_t *in,
                                       size_t in_len, int64_t now) {
  struct send_run *r = c->r;
  buf_reset(&r->plain);
  enum tls_status st = tls_input(c->tls, &r->plain, in, in_len);
  if (!c->tls_done && tls_handshake_done(c->tls)) {
    sconn_tls_done(c, now);
  }
  if (r->plain.len > 0) {
    bench_client_feed(&c->bc, r->plain.data, r->plain.len);
  }
  if (st == TLS_ERROR && !c->shut) {
    r->err.tls++;
    if (!c->tls_done && !send_in_warmup(r, c->t_connect)) {
      r->tls.failed++;
    }
  }
  return st;
}

/* ---- messages ---- */

/* send_pick_body draws a size from the distribution. */
static const struct buf *send_pick_body(struct send_run *r) {
  if (r->o->num_sizes == 1) {
    return &r->bodies[0];
  }
  unsigned x = (unsigned)(send_rand(r) % r->weight_total);
  for (unsigned i = 0; i < r->o->num_sizes; i++) {
    if (x < r->o->weights[i]) {
      return &r->bodies[i];
    }
    x -= r->o->weights[i];
  }
  return &r->bodies[r->o->num_sizes - 1];
}

static void send_update_date(struct send_run *r) {
  time_t t = time(NULL);
  if (t != r->date_sec) {
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(r->date, sizeof(r->date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    r->date_sec = t;
  }
}

/* sconn_start begins a message; `t_start` is its scheduled (open loop) or
 * actual start, from which the message latency counts. */
static void sconn_start(struct sconn *c, int64_t t_start, int64_t now) {
  struct send_run *r = c->r;
  const struct buf *body = send_pick_body(r);
  sconn_opened(c);
  send_update_date(r);
  c->warm = send_in_warmup(r, t_start);
  if (!c->warm) {
    r->started++;
  }
  bench_client_set_stats(&c->bc, c->warm ? &r->warm_stats : &r->stats);
  struct bench_client_message m = {
      .serial = ++r->serial,
      .run_id = r->run_id,
      .date = r->date,
      .body = body->data,
      .body_len = body->len,
  };
  c->msgs_on_conn++;
  r->session_fails_in_row = 0;
  c->t_msg = t_start;
  c->t_body = 0;
  c->last_io = now;
  bench_client_start_message(&c->bc, &m);
}

/* send_next_due: open loop, the time of the next unassigned slot. */
static int64_t send_next_due(const struct send_run *r) {
  return r->t0 + (int64_t)((double)r->scheduled * 1e9 / r->o->rate);
}

/* sconn_on_ready: the session is idle; start, wait for a slot, or quit. */
static void sconn_on_ready(struct sconn *c, int64_t now) {
  struct send_run *r = c->r;
  unsigned per = r->o->per_conn;
  if ((per > 0 && c->msgs_on_conn >= per) || !send_work_left(r, now)) {
    bench_client_quit(&c->bc);
    return;
  }
  if (r->o->rate <= 0) {
    sconn_start(c, now, now);
    return;
  }
  int64_t due = send_next_due(r);
  if (due <= now && r->num_idle == 0) {
    r->scheduled++;
    sconn_start(c, due, now);
    return;
  }
  c->waiting = 1;
  r->idle[r->num_idle++] = (unsigned)(c - r->conns);
}

/* send_dispatch_idle hands due slots to waiting sessions (open loop), or
 * sends them home when the run is over. */
static void send_dispatch_idle(struct send_run *r, int64_t now) {
  while (r->num_idle > 0) {
    struct sconn *c = &r->conns[r->idle[r->num_idle - 1]];
    if (send_work_left(r, now)) {
      int64_t due = send_next_due(r);
      if (due > now) {
        return;
      }
      r->scheduled++;
      r->num_idle--;
      c->waiting = 0;
      sconn_start(c, due, now);
    } else {
      r->num_idle--;
      c->waiting = 0;
      bench_client_quit(&c->bc);
    }
    sconn_flush(c);
  }
}

static void sconn_on_message(struct sconn *c, int64_t now) {
  struct send_run *r = c->r;
  if (c->warm) {
    return;
  }
  r->finished++;
  r->t_last_reply = now;
  if (c->t_body != 0) {
    send_record_us(r, &r->h_data, c->t_body, now);
  }
  send_record_us(r, &r->h_msg, c->t_msg, now);
}

/* sconn_on_auth: 235; measured sessions count it and its round trip
 * (from the EHLO reply that sent AUTH: mostly the server's hash). */
static void sconn_on_auth(struct sconn *c, int64_t now) {
  struct send_run *r = c->r;
  if (send_in_warmup(r, c->t_connect)) {
    return;
  }
  r->auth.ok++;
  send_record_us(r, &r->h_auth, c->t_auth, now);
}

/* sconn_auth_failed counts a session that AUTH ended. */
static void sconn_auth_failed(struct sconn *c, enum bench_client_error e) {
  struct send_run *r = c->r;
  r->err.auth++;
  if (send_in_warmup(r, c->t_connect)) {
    return;
  }
  r->auth.failed++;
  if (e == BENCH_CLIENT_ERR_AUTH_UNAVAILABLE) {
    r->auth.not_offered++;
  }
}

static void sconn_on_close(struct sconn *c, int64_t now) {
  static const char *const whys[] = {
      [BENCH_CLIENT_ERR_REFUSED] = "greeting or EHLO refused",
      [BENCH_CLIENT_ERR_421] = "421",
      [BENCH_CLIENT_ERR_PROTOCOL] = "protocol error",
      [BENCH_CLIENT_ERR_STARTTLS] = "STARTTLS not offered or refused",
      [BENCH_CLIENT_ERR_AUTH] = "AUTH PLAIN refused",
      [BENCH_CLIENT_ERR_AUTH_UNAVAILABLE] = "the server offers no AUTH PLAIN",
      [BENCH_CLIENT_ERR_AUTH_CLEAR] = "AUTH not sent outside TLS",
  };
  enum bench_client_error e = bench_client_error(&c->bc);
  char why[96];
  snprintf(why, sizeof(why), "%s", e != BENCH_CLIENT_OK ? whys[e] : "");
  if (e == BENCH_CLIENT_ERR_PROTOCOL || e == BENCH_CLIENT_ERR_REFUSED) {
    c->r->err.protocol++;
  } else if (e == BENCH_CLIENT_ERR_421) {
    c->r->err.disconnect++;
  } else if (e == BENCH_CLIENT_ERR_STARTTLS) {
    c->r->err.tls++;
  } else if (e == BENCH_CLIENT_ERR_AUTH ||
             e == BENCH_CLIENT_ERR_AUTH_UNAVAILABLE ||
             e == BENCH_CLIENT_ERR_AUTH_CLEAR) {
    sconn_auth_failed(c, e);
    if (e == BENCH_CLIENT_ERR_AUTH) {
      snprintf(why, sizeof(why), "AUTH PLAIN refused with %d",
               bench_client_last_code(&c->bc));
    }
  }
  if (e != BENCH_CLIENT_OK) {
    sconn_failed_early(c, now, why);
  }
  sconn_shutdown(c, now);
}

/* sconn_pump runs the session's events, then sends what it queued. */
static void sconn_pump(struct sconn *c) {
  int64_t now = bench_now_ns();
  for (;;) {
    if (c->shut) {
      return;
    }
    switch (bench_client_next(&c->bc)) {
    case BENCH_CLIENT_NEED_INPUT:
      sconn_flush(c);
      return;
    case BENCH_CLIENT_EV_GREETING:
      c->t_ehlo = now;
      break;
    case BENCH_CLIENT_EV_EHLO:
      /* the first EHLO only: the one after STARTTLS includes the
       * handshake, which has its own histogram */
      if (c->t_ehlo != 0 && !send_in_warmup(c->r, now)) {
        send_record_us(c->r, &c->r->h_ehlo, c->t_ehlo, now);
      }
      c->t_ehlo = 0;
      c->t_auth = now; /* AUTH, if asked, leaves with this flush */
      break;
    case BENCH_CLIENT_EV_AUTH:
      sconn_on_auth(c, now);
      break;
    case BENCH_CLIENT_EV_READY:
      sconn_on_ready(c, now);
      break;
    case BENCH_CLIENT_EV_BODY:
      c->t_body = now; /* the body leaves with the flush below */
      break;
    case BENCH_CLIENT_EV_MESSAGE:
      sconn_on_message(c, now);
      break;
    case BENCH_CLIENT_EV_CLOSE:
      sconn_flush(c);
      sconn_on_close(c, now);
      return;
    case BENCH_CLIENT_EV_STARTTLS:
      if (sconn_tls_start(c, now) != 0) {
        sconn_shutdown(c, now);
        return;
      }
      bench_client_tls_started(&c->bc); /* EHLO, queued inside TLS */
      break;
    }
  }
}

/* ---- completions ---- */

static void sconn_on_connect(struct sconn *c, int res) {
  struct send_run *r = c->r;
  int64_t now = bench_now_ns();
  c->connecting = 0;
  c->num_ops--;
  if (res < 0) {
    r->err.connect++;
    if (++r->connect_fails_in_row >= SEND_MAX_CONNECT_FAILS &&
        r->sessions == 0) {
      fprintf(stderr, "postseal-bench send: cannot connect to %s: %s\n",
              r->o->target, strerror(-res));
      r->fatal = 1;
    }
    c->shut = 1;
    c->retry_at = now + SEND_RETRY_NS;
    sconn_finish(c, now);
    return;
  }
  r->connect_fails_in_row = 0;
  r->sessions++;
  if (!send_in_warmup(r, c->t_connect)) {
    send_record_us(r, &r->h_connect, c->t_connect, now);
  }
  c->last_io = now;
  sconn_arm_recv(c);
  if (r->o->tls_mode == SEND_TLS_IMPLICIT) {
    if (sconn_tls_start(c, now) != 0) {
      sconn_shutdown(c, now);
      return;
    }
    sconn_flush(c); /* the ClientHello: the client speaks first */
  }
}

/* sconn_on_data runs the session on received bytes (through TLS when it
 * is up). A TLS error or close_notify ends the connection once the
 * session has seen the plaintext before it. */
static void sconn_on_data(struct sconn *c, const uint8_t *in, size_t in_len) {
  int64_t now = bench_now_ns();
  c->last_io = now;
  if (c->tls == NULL) {
    bench_client_feed(&c->bc, in, in_len);
    sconn_pump(c);
    return;
  }
  enum tls_status st = sconn_tls_input(c, in, in_len, now);
  sconn_pump(c); /* also sends the handshake's next flight */
  if (st == TLS_ERROR) {
    sconn_failed_early(c, now, "TLS error");
    sconn_shutdown(c, now);
  } else if (st == TLS_CLOSED && !c->shut) {
    c->r->err.disconnect++; /* close_notify before 221 */
    sconn_failed_early(c, now, "close_notify before a message");
    sconn_shutdown(c, now);
  }
}

static void sconn_on_recv(struct sconn *c, int res, unsigned flags) {
  struct send_run *r = c->r;
  if (!(flags & IORING_CQE_F_MORE)) {
    c->recv_armed = 0;
    c->num_ops--;
  }
  if (res > 0) {
    unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
    if (!c->shut) {
      sconn_on_data(c, bufring_data(&r->bufs, bid), (size_t)res);
    }
    bufring_return(&r->bufs, bid);
  }
  int64_t now = bench_now_ns();
  if (res == 0 || (res < 0 && res != -ENOBUFS)) {
    if (!c->shut) {
      r->err.disconnect++; /* the server left without 221 */
      sconn_failed_early(c, now, "the server closed the connection");
    }
    sconn_shutdown(c, now);
  } else if (!c->recv_armed && !c->shut) {
    sconn_arm_recv(c);
  }
  sconn_finish(c, now);
}

static void sconn_on_send(struct sconn *c, int res) {
  c->sending = 0;
  c->num_ops--;
  int64_t now = bench_now_ns();
  if (res < 0) {
    if (!c->shut) {
      c->r->err.disconnect++;
    }
    sconn_shutdown(c, now);
    sconn_finish(c, now);
    return;
  }
  c->r->bytes_sent += (uint64_t)res;
  size_t n = (size_t)res;
  for (int i = 0; i < 2; i++) { /* a short send resumes where it stopped */
    size_t k = n < c->iov[i].iov_len ? n : c->iov[i].iov_len;
    c->iov[i].iov_base = (uint8_t *)c->iov[i].iov_base + k;
    c->iov[i].iov_len -= k;
    n -= k;
  }
  c->last_io = now;
  sconn_flush(c);
  sconn_finish(c, now);
}

static void send_dispatch(struct send_run *r, const struct io_uring_cqe *e) {
  uint64_t data = io_uring_cqe_get_data64(e);
  if (data == 0) {
    return;
  }
  struct sconn *c = (struct sconn *)(uintptr_t)(data & ~(uint64_t)SEND_OP_MASK);
  switch ((enum send_op)(data & SEND_OP_MASK)) {
  case SEND_OP_CONNECT:
    sconn_on_connect(c, e->res);
    break;
  case SEND_OP_RECV:
    sconn_on_recv(c, e->res, e->flags);
    break;
  case SEND_OP_SEND:
    sconn_on_send(c, e->res);
    break;
  default:
    abort(); /* a tag we never set */
  }
  (void)r;
}

/* send_tick: timeouts, reconnects after failures, the end of the run. */
static void send_tick(struct send_run *r, int64_t now) {
  int64_t timeout = (int64_t)(r->o->timeout_s * 1e9);
  int force = r->done && (now - r->t_done > timeout || send_signalled > 1);
  for (unsigned i = 0; i < r->o->connections; i++) {
    struct sconn *c = &r->conns[i];
    if (!c->live) {
      continue;
    }
    if (c->fd < 0 && c->retry_at != 0 && now >= c->retry_at) {
      if (send_want_session(r, now)) {
        sconn_connect(c, now);
      } else {
        c->live = 0;
        r->num_live--;
      }
      continue;
    }
    if (c->fd >= 0 && !c->shut && !c->waiting &&
        (force || now - c->last_io > timeout)) {
      if (!force) {
        r->err.timeout++;
      }
      sconn_shutdown(c, now);
    }
  }
}

/* ---- the loop ---- */

static int send_ring_init(struct send_run *r) {
  struct io_uring_params p = {0};
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
            IORING_SETUP_CQSIZE;
  p.cq_entries = SEND_CQ_ENTRIES;
  if (io_uring_queue_init_params(SEND_RING_ENTRIES, &r->ring, &p) != 0) {
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_CQSIZE;
    p.cq_entries = SEND_CQ_ENTRIES;
    if (io_uring_queue_init_params(SEND_RING_ENTRIES, &r->ring, &p) != 0) {
      return -1;
    }
  }
  r->ring_ok = 1;
  return bufring_init(&r->bufs, &r->ring, SEND_BUF_COUNT, SEND_BUF_SIZE, 0) == 0
             ? 0
             : -1;
}

/* send_wait_ns: how long the loop may sleep: until the next tick, or the
 * next open-loop slot when a session waits for one. */
static int64_t send_wait_ns(const struct send_run *r, int64_t now,
                            int64_t next_tick) {
  int64_t until = next_tick;
  if (r->num_idle > 0 && !r->done) {
    int64_t due = send_next_due(r);
    if (due < until) {
      until = due;
    }
  }
  return until > now ? until - now : 0;
}

static void send_loop(struct send_run *r) {
  int64_t now = bench_now_ns();
  int64_t next_tick = now + SEND_TICK_NS;
  for (unsigned i = 0; i < r->o->connections; i++) {
    r->conns[i].r = r;
    r->conns[i].fd = -1;
    r->conns[i].live = 1;
    r->num_live++;
    sconn_connect(&r->conns[i], now);
  }
  while (r->num_live > 0) {
    int64_t wait = send_wait_ns(r, now, next_tick);
    struct __kernel_timespec ts = {.tv_sec = wait / 1000000000,
                                   .tv_nsec = wait % 1000000000};
    struct io_uring_cqe *cqe;
    int rc = wait > 0 ? io_uring_submit_and_wait_timeout(&r->ring, &cqe, 1, &ts,
                                                         NULL)
                      : io_uring_submit(&r->ring);
    if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN &&
        rc != -EBUSY) {
      fprintf(stderr, "postseal-bench send: io_uring: %s\n", strerror(-rc));
      abort(); /* a broken ring: never spin on it */
    }
    while (io_uring_peek_cqe(&r->ring, &cqe) == 0) {
      struct io_uring_cqe copy = *cqe;
      io_uring_cqe_seen(&r->ring, cqe);
      send_dispatch(r, &copy);
    }
    now = bench_now_ns();
    if (r->o->rate > 0 || r->done) {
      send_dispatch_idle(r, now);
    }
    if (now >= next_tick) {
      next_tick = now + SEND_TICK_NS;
      send_work_left(r, now);
      send_dispatch_idle(r, now);
      send_tick(r, now);
    }
  }
}

/* ---- options and report ---- */

static void send_usage(FILE *f) {
  fprintf(f,
          "usage: postseal-bench send --target HOST:PORT (--count N | "
          "--duration S)\n"
          "       [--connections C] [--rate R] [--size BYTES | --size-dist "
          "\"1024:50,4096:40\"]\n"
          "       [--rcpts K] [--per-conn M] [--pipelining] [--warmup S]\n"
          "       [--from ADDR] [--to-domain D] [--timeout S] [--seed N] "
          "[--json FILE]\n"
          "       [--starttls | --tls] [--tls-resume] [--tls-min-version "
          "1.2|1.3]\n"
          "       [--auth USER:PASSWORD [--auth-insecure]]\n"
          "Closed loop unless --rate (messages/s, open loop). At most %llu "
          "messages and %.0f s.\n"
          "--starttls: STARTTLS after EHLO, then EHLO again; --tls: TLS from "
          "the first byte\n(RFC 8314); --tls-resume: resume sessions across "
          "connections. No certificate\ncheck (this is load).\n"
          "--auth: AUTH PLAIN once per session, after the last EHLO (inside "
          "TLS) and before\nMAIL; the user ends at the first ':'. Needs "
          "--starttls or --tls, or --auth-insecure\nto send the password in "
          "clear. A session whose AUTH fails ends (errors.auth);\n%d in a "
          "row end the run (exit 1). The password is wiped from the command "
          "line\nonce read (ps may still catch it): use a test account.\n",
          BENCH_MAX_MESSAGES, BENCH_MAX_SECONDS, SEND_MAX_SESSION_FAILS);
}

/* send_parse_sizes reads "SIZE:WEIGHT,..." (a bare SIZE weighs 1). */
static int send_parse_sizes(const char *text, struct send_opts *o) {
  o->num_sizes = 0;
  const char *p = text;
  while (*p != '\0') {
    if (o->num_sizes == BENCH_MAX_SIZES) {
      return -1;
    }
    char *end;
    errno = 0;
    unsigned long long size = strtoull(p, &end, 10);
    unsigned long weight = 1;
    if (end == p || errno != 0 || size > BENCH_MAX_SIZE) {
      return -1;
    }
    if (*end == ':') {
      p = end + 1;
      weight = strtoul(p, &end, 10);
      if (end == p || weight == 0 || weight > 1000000) {
        return -1;
      }
    }
    o->sizes[o->num_sizes] = (size_t)size;
    o->weights[o->num_sizes++] = (unsigned)weight;
    if (*end == ',') {
      end++;
    } else if (*end != '\0') {
      return -1;
    }
    p = end;
  }
  return o->num_sizes > 0 ? 0 : -1;
}

/* send_parse_auth takes USER:PASSWORD (the user ends at the first ':', as
 * in the daemon's password file, so a password may hold one) and wipes
 * the password in argv, so ps shows the user only from now on. Returns 0
 * or -1; its message never shows what was given. */
static int send_parse_auth(char *text, struct send_opts *o) {
  char *colon = strchr(text, ':');
  size_t user_len = colon != NULL ? (size_t)(colon - text) : 0;
  size_t password_len = colon != NULL ? strlen(colon + 1) : 0;
  int ok = colon != NULL && user_len >= 1 &&
           user_len <= BENCH_CLIENT_MAX_AUTH_USER && password_len >= 1 &&
           password_len <= BENCH_CLIENT_MAX_AUTH_PASSWORD;
  if (ok) {
    memcpy(o->auth_user, text, user_len);
    o->auth_user[user_len] = '\0';
    memcpy(o->auth_password, colon + 1, password_len + 1);
  }
  if (colon != NULL) {
    explicit_bzero(colon + 1, password_len);
  }
  if (!ok) {
    fprintf(stderr,
            "postseal-bench send: --auth wants USER:PASSWORD (user 1..%d "
            "octets, password 1..%d)\n",
            BENCH_CLIENT_MAX_AUTH_USER, BENCH_CLIENT_MAX_AUTH_PASSWORD);
  }
  return ok ? 0 : -1;
}

/* send_number parses a whole decimal option value. */
static int send_number(const char *text, double *out) {
  char *end;
  errno = 0;
  *out = strtod(text, &end);
  return end == text || *end != '\0' || errno != 0 || !(*out >= 0) ? -1 : 0;
}

static int send_check(const struct send_opts *o) {
  if (o->target == NULL || (o->count == 0 && o->duration_s <= 0)) {
    fprintf(stderr, "postseal-bench send: --target and --count or "
                    "--duration are required\n");
    return -1;
  }
  if (o->tls_resume && o->tls_mode == SEND_TLS_NONE) {
    fprintf(stderr, "postseal-bench send: --tls-resume needs --starttls or "
                    "--tls\n");
    return -1;
  }
  if (o->auth_insecure && o->auth_user[0] == '\0') {
    fprintf(stderr, "postseal-bench send: --auth-insecure needs --auth\n");
    return -1;
  }
  if (o->auth_user[0] != '\0' && o->tls_mode == SEND_TLS_NONE &&
      !o->auth_insecure) {
    fprintf(stderr, "postseal-bench send: --auth needs --starttls or --tls "
                    "(--auth-insecure sends the password in clear)\n");
    return -1;
  }
  if (o->count > BENCH_MAX_MESSAGES || o->duration_s > BENCH_MAX_SECONDS ||
      o->warmup_s > BENCH_MAX_SECONDS || o->connections < 1 ||
      o->connections > BENCH_MAX_CONNECTIONS || o->rcpts < 1 ||
      o->rcpts > BENCH_CLIENT_MAX_RCPTS || o->timeout_s <= 0 ||
      o->rate > 10000000) {
    fprintf(stderr, "postseal-bench send: an option is out of range\n");
    return -1;
  }
  return 0;
}

static int send_parse(int argc, char **argv, struct send_opts *o) {
  static const struct option longopts[] = {
      {"target", required_argument, NULL, 't'},
      {"connections", required_argument, NULL, 'c'},
      {"count", required_argument, NULL, 'n'},
      {"duration", required_argument, NULL, 'd'},
      {"rate", required_argument, NULL, 'r'},
      {"size", required_argument, NULL, 's'},
      {"size-dist", required_argument, NULL, 'S'},
      {"rcpts", required_argument, NULL, 'k'},
      {"per-conn", required_argument, NULL, 'm'},
      {"pipelining", no_argument, NULL, 'p'},
      {"warmup", required_argument, NULL, 'w'},
      {"timeout", required_argument, NULL, 'T'},
      {"from", required_argument, NULL, 'f'},
      {"to-domain", required_argument, NULL, 'D'},
      {"seed", required_argument, NULL, 'e'},
      {"json", required_argument, NULL, 'j'},
      {"starttls", no_argument, NULL, 'L'},
      {"tls", no_argument, NULL, 'I'},
      {"tls-resume", no_argument, NULL, 'R'},
      {"tls-min-version", required_argument, NULL, 'V'},
      {"auth", required_argument, NULL, 'a'},
      {"auth-insecure", no_argument, NULL, 'i'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  *o = (struct send_opts){.connections = 1,
                          .rcpts = 1,
                          .timeout_s = 30,
                          .from = "bench@postseal-bench.example",
                          .to_domain = "sink.example",
                          .seed = 1,
                          .num_sizes = 1,
                          .sizes = {4096},
                          .weights = {1}};
  int ch;
  optind = 1;
  while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    double v = 0;
    int bad = 0;
    if (strchr("cndrkmwTe", ch) != NULL) {
      bad = send_number(optarg, &v);
    }
    switch (ch) {
    case 't':
      o->target = optarg;
      break;
    case 'c':
      o->connections = v > BENCH_MAX_CONNECTIONS ? 0 : (unsigned)v;
      break;
    case 'n':
      o->count =
          v > (double)BENCH_MAX_MESSAGES ? BENCH_MAX_MESSAGES + 1 : (uint64_t)v;
      break;
    case 'd':
      o->duration_s = v;
      break;
    case 'r':
      o->rate = v;
      break;
    case 's':
    case 'S':
      bad = send_parse_sizes(optarg, o);
      break;
    case 'k':
      o->rcpts = v > BENCH_CLIENT_MAX_RCPTS ? 0 : (unsigned)v;
      break;
    case 'm':
      o->per_conn = v > 1e9 ? 0 : (unsigned)v;
      break;
    case 'p':
      o->pipelining = 1;
      break;
    case 'w':
      o->warmup_s = v;
      break;
    case 'T':
      o->timeout_s = v;
      break;
    case 'f':
      o->from = optarg;
      break;
    case 'D':
      o->to_domain = optarg;
      break;
    case 'e':
      o->seed = (uint64_t)v;
      break;
    case 'j':
      o->json = optarg;
      break;
    case 'L':
    case 'I': {
      enum send_tls_mode m = ch == 'L' ? SEND_TLS_STARTTLS : SEND_TLS_IMPLICIT;
      bad = o->tls_mode != SEND_TLS_NONE && o->tls_mode != m;
      o->tls_mode = m;
      break;
    }
    case 'R':
      o->tls_resume = 1;
      break;
    case 'V':
      o->tls_min_version = optarg; /* the adapter checks it */
      break;
    case 'a':
      if (send_parse_auth(optarg, o) != 0) {
        return -1; /* said why; optarg is not echoed */
      }
      break;
    case 'i':
      o->auth_insecure = 1;
      break;
    case 'h':
      send_usage(stdout);
      exit(0);
    default:
      return -1;
    }
    if (bad) {
      fprintf(stderr, "postseal-bench send: bad value: %s\n",
              optarg != NULL ? optarg : "--starttls with --tls");
      return -1;
    }
  }
  if (optind != argc) {
    return -1;
  }
  return send_check(o);
}

static void send_classes_json(FILE *f, const uint64_t *v) {
  fprintf(f, "{\"2xx\": %llu, \"3xx\": %llu, \"4xx\": %llu, \"5xx\": %llu}",
          (unsigned long long)v[2], (unsigned long long)v[3],
          (unsigned long long)v[4], (unsigned long long)v[5]);
}

static double send_elapsed(const struct send_run *r) {
  int64_t end = r->t_last_reply > r->t_measure ? r->t_last_reply : r->t_measure;
  return (double)(end - r->t_measure) / 1e9;
}

static const char *send_tls_mode_name(enum send_tls_mode m) {
  return m == SEND_TLS_STARTTLS   ? "starttls"
         : m == SEND_TLS_IMPLICIT ? "implicit"
                                  : "none";
}

/* send_tls_json: the "tls" member (handshakes of measured sessions). */
static void send_tls_json(FILE *f, const struct send_run *r, double el) {
  const struct send_tls_stats *t = &r->tls;
  uint64_t done = t->full + t->resumed;
  fprintf(f,
          " \"tls\": {\"mode\": \"%s\", \"resume\": %s, \"handshakes\": %llu, "
          "\"full\": %llu, \"resumed\": %llu, \"failed\": %llu, "
          "\"handshakes_per_s\": %.1f, \"tls13\": %llu, \"version\": \"%s\", "
          "\"cipher\": \"%s\"}",
          send_tls_mode_name(r->o->tls_mode),
          r->o->tls_resume ? "true" : "false", (unsigned long long)done,
          (unsigned long long)t->full, (unsigned long long)t->resumed,
          (unsigned long long)t->failed, el > 0 ? (double)done / el : 0.0,
          (unsigned long long)t->tls13, r->tls_version, r->tls_cipher);
}

/* send_auth_json: the "auth" member (measured sessions; the user and
 * password are not reported). */
static void send_auth_json(FILE *f, const struct send_run *r) {
  const struct send_auth_stats *a = &r->auth;
  fprintf(f,
          ",\n \"auth\": {\"mechanism\": \"%s\", \"insecure\": %s, "
          "\"ok\": %llu, \"failed\": %llu, \"not_offered\": %llu, "
          "\"replies\": ",
          r->o->auth_user[0] != '\0' ? "PLAIN" : "none",
          r->o->auth_insecure ? "true" : "false", (unsigned long long)a->ok,
          (unsigned long long)a->failed, (unsigned long long)a->not_offered);
  send_classes_json(f, r->stats.auth);
  fprintf(f, "}");
}

static void send_report_json(FILE *f, const struct send_run *r) {
  const struct send_opts *o = r->o;
  double el = send_elapsed(r);
  const uint64_t *m = r->stats.messages;
  fprintf(f,
          "{\"tool\": \"postseal-bench send\", \"target\": \"%s\", "
          "\"connections\": %u, \"mode\": \"%s\", \"rate\": %g, "
          "\"count\": %llu, \"duration_s\": %g, \"warmup_s\": %g, "
          "\"rcpts\": %u, \"per_conn\": %u, \"pipelining\": %s,\n \"sizes\": [",
          o->target, o->connections, o->rate > 0 ? "open" : "closed", o->rate,
          (unsigned long long)o->count, o->duration_s, o->warmup_s, o->rcpts,
          o->per_conn, o->pipelining ? "true" : "false");
  for (unsigned i = 0; i < o->num_sizes; i++) {
    fprintf(f, "%s{\"size\": %zu, \"weight\": %u}", i ? ", " : "", o->sizes[i],
            o->weights[i]);
  }
  fprintf(f,
          "],\n \"elapsed_s\": %.3f, \"msg_per_s\": %.1f, \"sessions\": %llu, "
          "\"bytes_sent\": %llu,\n \"messages\": {\"attempted\": %llu, "
          "\"accepted\": %llu, \"tempfailed\": %llu, \"permfailed\": %llu, "
          "\"lost\": %llu},\n \"replies\": ",
          el, el > 0 ? (double)m[2] / el : 0.0, (unsigned long long)r->sessions,
          (unsigned long long)r->bytes_sent, (unsigned long long)r->started,
          (unsigned long long)m[2], (unsigned long long)m[4],
          (unsigned long long)m[5], (unsigned long long)r->err.lost);
  send_classes_json(f, r->stats.replies);
  fprintf(f, ",\n \"rcpt_replies\": ");
  send_classes_json(f, r->stats.rcpt);
  fprintf(f, ",\n \"message_replies\": ");
  send_classes_json(f, r->stats.messages);
  fprintf(
      f,
      ",\n \"errors\": {\"connect\": %llu, \"disconnect\": %llu, "
      "\"timeout\": %llu, \"protocol\": %llu, \"tls\": %llu, "
      "\"auth\": %llu},\n",
      (unsigned long long)r->err.connect, (unsigned long long)r->err.disconnect,
      (unsigned long long)r->err.timeout, (unsigned long long)r->err.protocol,
      (unsigned long long)r->err.tls, (unsigned long long)r->err.auth);
  send_tls_json(f, r, el);
  send_auth_json(f, r);
  fprintf(f, ",\n \"latency_us\": {");
  const struct hdr *hs[] = {&r->h_connect, &r->h_ehlo, &r->h_data,
                            &r->h_msg,     &r->h_tls,  &r->h_auth};
  const char *names[] = {"connect", "ehlo", "data", "message", "tls", "auth"};
  for (int i = 0; i < 6; i++) {
    fprintf(f, "%s\n  \"%s\": ", i ? "," : "", names[i]);
    bench_hdr_json(f, hs[i]);
  }
  fprintf(f, "}}\n");
}

static void send_report_text(FILE *f, const struct send_run *r) {
  const struct send_opts *o = r->o;
  double el = send_elapsed(r);
  const uint64_t *m = r->stats.messages;
  fprintf(f,
          "postseal-bench send: target=%s connections=%u mode=%s%s "
          "rcpts=%u per_conn=%u pipelining=%s\n",
          o->target, o->connections, o->rate > 0 ? "open" : "closed",
          o->rate > 0 ? "(rate)" : "", o->rcpts, o->per_conn,
          o->pipelining ? "yes" : "no");
  fprintf(f,
          "messages: attempted %llu, accepted %llu (%.1f msg/s over %.3f s), "
          "4xx %llu, 5xx %llu, lost %llu; sessions %llu\n",
          (unsigned long long)r->started, (unsigned long long)m[2],
          el > 0 ? (double)m[2] / el : 0.0, el, (unsigned long long)m[4],
          (unsigned long long)m[5], (unsigned long long)r->err.lost,
          (unsigned long long)r->sessions);
  fprintf(f,
          "replies: 2xx %llu, 3xx %llu, 4xx %llu, 5xx %llu; rcpt 2xx %llu, "
          "4xx %llu, 5xx %llu\n",
          (unsigned long long)r->stats.replies[2],
          (unsigned long long)r->stats.replies[3],
          (unsigned long long)r->stats.replies[4],
          (unsigned long long)r->stats.replies[5],
          (unsigned long long)r->stats.rcpt[2],
          (unsigned long long)r->stats.rcpt[4],
          (unsigned long long)r->stats.rcpt[5]);
  fprintf(
      f,
      "errors: connect %llu, disconnect %llu, timeout %llu, "
      "protocol %llu, tls %llu, auth %llu\n",
      (unsigned long long)r->err.connect, (unsigned long long)r->err.disconnect,
      (unsigned long long)r->err.timeout, (unsigned long long)r->err.protocol,
      (unsigned long long)r->err.tls, (unsigned long long)r->err.auth);
  if (o->tls_mode != SEND_TLS_NONE) {
    const struct send_tls_stats *t = &r->tls;
    fprintf(f,
            "tls: %s%s, handshakes %llu (full %llu, resumed %llu; %.1f/s), "
            "failed %llu; %s %s\n",
            send_tls_mode_name(o->tls_mode), o->tls_resume ? "+resume" : "",
            (unsigned long long)(t->full + t->resumed),
            (unsigned long long)t->full, (unsigned long long)t->resumed,
            el > 0 ? (double)(t->full + t->resumed) / el : 0.0,
            (unsigned long long)t->failed, r->tls_version, r->tls_cipher);
  }
  if (o->auth_user[0] != '\0') {
    fprintf(f,
            "auth: PLAIN%s, ok %llu, failed %llu (not offered %llu); "
            "AUTH replies 2xx %llu, 4xx %llu, 5xx %llu\n",
            o->auth_insecure ? " (insecure allowed)" : "",
            (unsigned long long)r->auth.ok, (unsigned long long)r->auth.failed,
            (unsigned long long)r->auth.not_offered,
            (unsigned long long)r->stats.auth[2],
            (unsigned long long)r->stats.auth[4],
            (unsigned long long)r->stats.auth[5]);
  }
  fprintf(f, "latency:\n");
  bench_hdr_text(f, "connect", &r->h_connect);
  bench_hdr_text(f, "ehlo", &r->h_ehlo);
  bench_hdr_text(f, "data", &r->h_data);
  bench_hdr_text(f, "message", &r->h_msg);
  if (o->tls_mode != SEND_TLS_NONE) {
    bench_hdr_text(f, "tls", &r->h_tls);
  }
  if (o->auth_user[0] != '\0') {
    bench_hdr_text(f, "auth", &r->h_auth);
  }
}

/* send_setup: address, bodies, histograms, connection slots. */
static int send_setup(struct send_run *r, const struct send_opts *o) {
  r->o = o;
  r->rng = o->seed;
  if (bench_addr_parse(o->target, &r->addr, &r->addr_len) != 0) {
    fprintf(stderr,
            "postseal-bench send: --target %s: want a numeric "
            "host:port\n",
            o->target);
    return -1;
  }
  for (unsigned i = 0; i < o->num_sizes; i++) {
    if (bench_client_make_body(&r->bodies[i], o->sizes[i]) != 0) {
      return -1;
    }
    r->weight_total += o->weights[i];
  }
  struct hdr *hs[] = {&r->h_connect, &r->h_ehlo, &r->h_data,
                      &r->h_msg,     &r->h_tls,  &r->h_auth};
  for (int i = 0; i < 6; i++) {
    if (hdr_init(hs[i], BENCH_HDR_HIGHEST_US, BENCH_HDR_SUB_BITS) != 0) {
      return -1;
    }
  }
  if (o->tls_mode != SEND_TLS_NONE) {
    char err[256];
    struct tls_client_config tc = {.ca_file = NULL,
                                   .min_version = o->tls_min_version};
    r->tls_ctx = tls_ctx_new_client(&tc, err, sizeof(err));
    if (r->tls_ctx == NULL) {
      fprintf(stderr, "postseal-bench send: tls: %s\n", err);
      return -1;
    }
  }
  r->conns = aligned_alloc(16, sizeof(*r->conns) * o->connections);
  if (r->conns != NULL) {
    memset(r->conns, 0, sizeof(*r->conns) * o->connections);
  }
  r->idle = calloc(o->connections, sizeof(*r->idle));
  if (r->conns == NULL || r->idle == NULL || send_ring_init(r) != 0) {
    fprintf(stderr, "postseal-bench send: set-up failed\n");
    return -1;
  }
  snprintf(r->run_id, sizeof(r->run_id), "%x.%llx", (unsigned)getpid(),
           (unsigned long long)time(NULL));
  return 0;
}

static void send_cleanup(struct send_run *r) {
  if (r->conns != NULL) {
    for (unsigned i = 0; i < r->o->connections; i++) {
      buf_free(&r->conns[i].out);
      tls_free(r->conns[i].tls);
    }
  }
  buf_free(&r->plain);
  tls_ctx_free(r->tls_ctx);
  hdr_cleanup(&r->h_tls);
  hdr_cleanup(&r->h_auth);
  for (unsigned i = 0; i < BENCH_MAX_SIZES; i++) {
    buf_free(&r->bodies[i]);
  }
  hdr_cleanup(&r->h_connect);
  hdr_cleanup(&r->h_ehlo);
  hdr_cleanup(&r->h_data);
  hdr_cleanup(&r->h_msg);
  if (r->ring_ok) {
    bufring_free(&r->bufs, &r->ring);
    io_uring_queue_exit(&r->ring);
  }
  free(r->conns);
  free(r->idle);
}

/* send_run_opts runs the load and writes the reports; returns the exit
 * status (0, or 1 when the run or its report failed). */
static int send_run_opts(const struct send_opts *o) {
  struct send_run *r = calloc(1, sizeof(*r));
  if (r == NULL || send_setup(r, o) != 0) {
    if (r != NULL) {
      send_cleanup(r);
    }
    free(r);
    return 1;
  }
  struct sigaction sa = {.sa_handler = send_on_signal};
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  r->t0 = bench_now_ns();
  r->t_measure = r->t0 + (int64_t)(o->warmup_s * 1e9);
  r->t_end_cap = r->t_measure + (int64_t)(BENCH_MAX_SECONDS * 1e9);
  send_loop(r);
  send_report_text(stdout, r);
  int rc = r->fatal ? 1 : 0;
  if (o->json != NULL) {
    FILE *f = strcmp(o->json, "-") == 0 ? stdout : fopen(o->json, "w");
    if (f == NULL) {
      fprintf(stderr, "postseal-bench send: %s: %s\n", o->json,
              strerror(errno));
      rc = 1;
    } else {
      send_report_json(f, r);
      if (f != stdout && fclose(f) != 0) {
        rc = 1;
      }
    }
  }
  send_cleanup(r);
  free(r);
  return rc;
}

int bench_send_main(int argc, char **argv) {
  struct send_opts o;
  int rc = send_parse(argc, argv, &o) != 0 ? 2 : send_run_opts(&o);
  explicit_bzero(o.auth_password, sizeof(o.auth_password));
  if (rc == 2) {
    send_usage(stderr);
  }
  return rc;
}
