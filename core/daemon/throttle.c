/* core/daemon/throttle.c — per-destination rates shared across replicas
 * through Redis, with a local fallback. Contract in daemon.h ("throttle.c").
 *
 * Algorithm: a sliding window log per destination domain, kept in Redis
 * as a sorted set of grant times (Redis's clock, TIME, so every replica
 * shares one clock). One EVAL decides atomically: drop the entries older
 * than the period, count the rest, add up to the permits asked for while
 * the count stays within RATE, and answer {granted, wait_ms}: wait_ms > 0
 * when the window is now full, the time until its oldest entry leaves.
 * So at most RATE permits are granted in any half-open interval
 * (t - PERIOD, t] of Redis's clock. Keys (a hash tag, so both land on one
 * cluster slot): PREFIX "rate:{" DOMAIN "}" (the log) and ... ":seq" (a
 * counter naming its members); both expire one PERIOD after the last grant.
 *
 * A permit is used at once (the message starts on a ready connection) or
 * dropped after THR_PERMIT_MS, so grant time and send time stay close.
 *
 * Fallback: the same window kept locally, per domain, with RATE /
 * throttle.replicas as the limit (a ring of grant times; past
 * THR_LOCAL_LOG_MAX entries the window shrinks in proportion, keeping the
 * average rate). Grants made locally are not written to Redis: on the
 * way back the first shared window may let through up to that many more.
 *
 * I/O: one TCP connection per worker on its io_uring: connect, one recv
 * at a time into rbuf, sends resumed when short; replies are matched to
 * requests in order (RESP, proto/resp.h). The ops carry &t->ops[i] in
 * user_data (OP_THROTTLE). A connection is reused only after every op on
 * it completed (t->num_ops == 0), so a late completion never meets the
 * next connection. A timer (<= THR_TIMER_MS) runs while anything waits:
 * request timeouts, reconnects, full windows ending. */
#include <errno.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/daemon/daemon.h"
#include "core/log.h"
#include "proto/resp.h"

#define THR_BUCKETS 1024        /* power of two */
#define THR_MAX_DOMAINS 4096    /* tracked per worker; idle ones expire */
#define THR_MAX_INFLIGHT 64     /* requests on the connection */
#define THR_BATCH 1             /* permits asked for at once */
#define THR_PERMIT_MS 100       /* an unused permit is dropped after this */
#define THR_TIMER_MS 50         /* the timer's longest sleep */
#define THR_BACKOFF_MIN_MS 100  /* reconnect: first wait, doubled ... */
#define THR_BACKOFF_MAX_MS 5000 /* ... up to this */
#define THR_LOCAL_LOG_MAX 256   /* grant times kept per domain (fallback) */
#define THR_RBUF 4096

/* KEYS[1] the log, KEYS[2] its member counter; ARGV want, limit, period
 * in ms. Returns {granted, wait_ms}. */
static const char thr_script[] =
    "redis.replicate_commands() "
    "local want=tonumber(ARGV[1]) local limit=tonumber(ARGV[2]) "
    "local win=tonumber(ARGV[3]) "
    "local t=redis.call('TIME') "
    "local now=tonumber(t[1])*1000+math.floor(tonumber(t[2])/1000) "
    "redis.call('ZREMRANGEBYSCORE',KEYS[1],'-inf',now-win) "
    "local used=redis.call('ZCARD',KEYS[1]) "
    "local g=math.min(want,limit-used) if g<0 then g=0 end "
    "if g>0 then "
    " local seq=redis.call('INCRBY',KEYS[2],g) "
    " for i=1,g do redis.call('ZADD',KEYS[1],now,seq-g+i) end "
    " redis.call('PEXPIRE',KEYS[1],win) redis.call('PEXPIRE',KEYS[2],win) "
    "end "
    "local wait=0 "
    "if used+g>=limit then "
    " local f=redis.call('ZRANGE',KEYS[1],0,0,'WITHSCORES') "
    " wait=win if f[2] then wait=tonumber(f[2])+win-now end "
    " if wait<1 then wait=1 end "
    "end "
    "return {g,wait}";

enum thr_state { THR_DOWN, THR_CONNECTING, THR_UP };
enum thr_op_what {
  THR_OP_CONNECT,
  THR_OP_RECV,
  THR_OP_SEND,
  THR_OP_TIMER,
  THR_OP_COUNT
};

struct thr_op {
  struct throttle *t;
  enum thr_op_what what;
} __attribute__((aligned(16)));

/* One destination domain's state on this worker. */
struct thr_dom {
  struct thr_dom *next; /* hash chain */
  uint64_t hash;
  char domain[256];
  unsigned granted;               /* shared permits in hand */
  int64_t granted_until_ms;       /* ... dropped then */
  int asking;                     /* a request is in flight */
  int64_t wait_until_ms;          /* the window is full until then */
  int64_t wait_counted_ms;        /* the full window last counted as deferred */
  int64_t last_ms;                /* last use, for expiry */
  int64_t log[THR_LOCAL_LOG_MAX]; /* fallback: grant times, a ring */
  unsigned log_head, log_len;
};

struct thr_req {
  struct thr_dom *dom; /* NULL: a PING probe */
  unsigned asked;
  int64_t sent_ms;
};

struct throttle {
  struct worker *w;
  struct thr_op ops[THR_OP_COUNT];
  int enabled; /* throttle.redis is set */
  struct sockaddr_storage addr;
  socklen_t addr_len;
  enum thr_state state;
  int fd;
  int num_ops; /* connect, recv, send in flight on fd */
  int shut;    /* fd being closed: waiting for num_ops == 0 */
  int sending, timer_armed;
  int local;   /* the fallback decides (Redis failed) */
  int started; /* a first verdict on Redis was logged */
  int64_t connect_deadline_ms, next_connect_ms;
  unsigned backoff_ms;
  struct __kernel_timespec ts;
  struct buf out, pending;
  size_t out_off;
  uint8_t rbuf[THR_RBUF];
  struct resp_parser parser;
  struct thr_req reqs[THR_MAX_INFLIGHT];
  unsigned req_head, req_len;
  int64_t wake_ms; /* the earliest full window's end we know of */
  struct thr_dom *buckets[THR_BUCKETS];
  size_t num_doms;
};

static void thr_fail(struct throttle *t, const char *reason);
static void thr_arm_timer(struct throttle *t);

/* ---- domains ---- */

static struct thr_dom *dom_get(struct throttle *t, const char *domain) {
  uint64_t h = XXH3_64bits(domain, strlen(domain));
  struct thr_dom **pp = &t->buckets[h & (THR_BUCKETS - 1)];
  for (struct thr_dom *d = *pp; d != NULL; d = d->next) {
    if (d->hash == h && strcmp(d->domain, domain) == 0) {
      return d;
    }
  }
  if (t->num_doms >= THR_MAX_DOMAINS || strlen(domain) >= 256) {
    return NULL;
  }
  struct thr_dom *d = calloc(1, sizeof(*d));
  if (d == NULL) {
    return NULL;
  }
  d->hash = h;
  snprintf(d->domain, sizeof(d->domain), "%s", domain);
  d->next = *pp;
  *pp = d;
  t->num_doms++;
  return d;
}

/* dom_expire frees the domains idle for longer than their window. */
static void dom_expire(struct throttle *t, int64_t now) {
  for (size_t b = 0; b < THR_BUCKETS; b++) {
    for (struct thr_dom **pp = &t->buckets[b]; *pp != NULL;) {
      struct thr_dom *d = *pp;
      const struct config_throttle_rate *r =
          config_throttle_rate(t->w->cfg, d->domain);
      int64_t keep = r != NULL ? (int64_t)r->period_ms : 0;
      if (d->asking || now < d->wait_until_ms || now - d->last_ms <= keep) {
        pp = &d->next;
        continue;
      }
      *pp = d->next;
      free(d);
      t->num_doms--;
    }
  }
}

/* local_take: the fallback's decision, the same sliding window with
 * RATE / replicas as the limit. */
static enum throttle_verdict local_take(struct throttle *t, struct thr_dom *d,
                                        const struct config_throttle_rate *r,
                                        int64_t now) {
  unsigned share = r->rate / t->w->cfg->throttle_replicas;
  share = share ? share : 1;
  unsigned cap = share < THR_LOCAL_LOG_MAX ? share : THR_LOCAL_LOG_MAX;
  int64_t win = (int64_t)r->period_ms * cap / share;
  win = win ? win : 1;
  while (d->log_len > 0 && d->log[d->log_head] <= now - win) {
    d->log_head = (d->log_head + 1) % THR_LOCAL_LOG_MAX;
    d->log_len--;
  }
  if (d->log_len < cap) {
    d->log[(d->log_head + d->log_len) % THR_LOCAL_LOG_MAX] = now;
    d->log_len++;
    return THROTTLE_GO;
  }
  d->wait_until_ms = d->log[d->log_head] + win;
  return THROTTLE_WAIT;
}

/* ---- the connection ---- */

static struct io_uring_sqe *thr_sqe(struct throttle *t, enum thr_op_what op) {
  struct io_uring_sqe *sqe = worker_get_sqe(t->w);
  io_uring_sqe_set_data64(sqe, op_tag(&t->ops[op], OP_THROTTLE));
  return sqe;
}

static void thr_arm_recv(struct throttle *t) {
  struct io_uring_sqe *sqe = thr_sqe(t, THR_OP_RECV);
  io_uring_prep_recv(sqe, t->fd, t->rbuf, sizeof(t->rbuf), 0);
  t->num_ops++;
}

static void thr_flush(struct throttle *t) {
  if (t->sending || t->shut || t->out_off >= t->out.len) {
    return;
  }
  struct io_uring_sqe *sqe = thr_sqe(t, THR_OP_SEND);
  io_uring_prep_send(sqe, t->fd, t->out.data + t->out_off,
                     t->out.len - t->out_off, MSG_NOSIGNAL);
  t->sending = 1;
  t->num_ops++;
}

/* thr_send queues one command; the kernel may be reading t->out, so
 * bytes queued during a send wait in t->pending. Returns 0 or -1. */
static int thr_send(struct throttle *t, size_t argc, const char *const *argv) {
  if (!t->sending && t->out_off >= t->out.len) {
    buf_reset(&t->out);
    t->out_off = 0;
  }
  if (resp_command(t->sending ? &t->pending : &t->out, argc, argv, NULL) != 0) {
    return -1;
  }
  thr_flush(t);
  return 0;
}

/* thr_reset_conn drops what belonged to the connection: buffers, the
 * parser, the requests (their domains may ask again). */
static void thr_reset_conn(struct throttle *t) {
  for (unsigned i = 0; i < t->req_len; i++) {
    struct thr_req *q = &t->reqs[(t->req_head + i) % THR_MAX_INFLIGHT];
    if (q->dom != NULL) {
      q->dom->asking = 0;
    }
  }
  t->req_head = t->req_len = 0;
  buf_reset(&t->out);
  buf_reset(&t->pending);
  t->out_off = 0;
  resp_parser_cleanup(&t->parser);
  resp_parser_init(&t->parser, NULL);
}

/* thr_maybe_closed finishes a close once no op is in flight on the fd. */
static void thr_maybe_closed(struct throttle *t) {
  if (!t->shut || t->num_ops > 0) {
    return;
  }
  close(t->fd);
  t->fd = -1;
  t->shut = 0;
  t->sending = 0;
  t->state = THR_DOWN;
  t->next_connect_ms = t->w->now_ms + t->backoff_ms;
  t->backoff_ms = t->backoff_ms * 2 < THR_BACKOFF_MAX_MS ? t->backoff_ms * 2
                                                         : THR_BACKOFF_MAX_MS;
  thr_arm_timer(t);
}

/* thr_close ends the connection: its ops complete (cancelled), then the
 * fd closes and a reconnect is due after the backoff. */
static void thr_close(struct throttle *t) {
  if (t->fd < 0 || t->shut) {
    return;
  }
  t->shut = 1;
  shutdown(t->fd, SHUT_RDWR);
  if (t->state == THR_CONNECTING) {
    struct io_uring_sqe *sqe = worker_get_sqe(t->w);
    io_uring_prep_cancel64(sqe, op_tag(&t->ops[THR_OP_CONNECT], OP_THROTTLE),
                           0);
    io_uring_sqe_set_data64(sqe, 0);
  }
  thr_reset_conn(t);
  thr_maybe_closed(t);
}

static void thr_log(struct throttle *t, const char *event, const char *reason) {
  struct log_rec r;
  log_begin(&r, event);
  log_str(&r, "redis", t->w->cfg->throttle_redis);
  log_u64(&r, "worker", t->w->index);
  if (reason != NULL) {
    log_str(&r, "reason", reason);
  }
  log_end(&r);
}

/* thr_fail: Redis failed us: count it, decide locally from now on (logged
 * once per switch), close and reconnect later. */
static void thr_fail(struct throttle *t, const char *reason) {
  METRIC_ADD(t->w->m.thr_redis_errors, 1);
  if (!t->local) {
    t->local = 1;
    t->started = 1;
    METRIC_ADD(t->w->m.thr_fallbacks, 1);
    __atomic_store_n(&t->w->m.thr_fallback, 1, __ATOMIC_RELAXED);
    thr_log(t, "throttle_fallback", reason);
  }
  thr_close(t);
}

/* thr_ok: Redis answered: it decides again. */
static void thr_ok(struct throttle *t) {
  t->backoff_ms = THR_BACKOFF_MIN_MS;
  if (t->local || !t->started) {
    t->local = 0;
    t->started = 1;
    __atomic_store_n(&t->w->m.thr_fallback, 0, __ATOMIC_RELAXED);
    thr_log(t, "throttle_shared", NULL);
  }
}

/* thr_connect starts a connection to Redis; its first word is a PING
 * whose answer brings the shared mode (back). */
static void thr_connect(struct throttle *t) {
  int fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    t->fd = -1;
    t->next_connect_ms = t->w->now_ms + t->backoff_ms;
    thr_fail(t, "socket");
    return;
  }
  t->fd = fd;
  t->state = THR_CONNECTING;
  t->connect_deadline_ms =
      t->w->now_ms + (int64_t)t->w->cfg->throttle_timeout_ms;
  struct io_uring_sqe *sqe = thr_sqe(t, THR_OP_CONNECT);
  io_uring_prep_connect(sqe, fd, (struct sockaddr *)&t->addr, t->addr_len);
  t->num_ops++;
  thr_arm_timer(t);
}

static void thr_on_connect(struct throttle *t, int res) {
  t->num_ops--;
  if (t->shut) {
    thr_maybe_closed(t);
    return;
  }
  if (res < 0) {
    thr_fail(t, res == -ECANCELED ? "connect timeout" : "connect refused");
    return;
  }
  int one = 1;
  setsockopt(t->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  t->state = THR_UP;
  thr_arm_recv(t);
  static const char *const ping[] = {"PING"};
  t->reqs[(t->req_head + t->req_len) % THR_MAX_INFLIGHT] =
      (struct thr_req){.dom = NULL, .sent_ms = t->w->now_ms};
  t->req_len++;
  if (thr_send(t, 1, ping) != 0) {
    thr_fail(t, "out of memory");
  }
}

static void thr_on_send(struct throttle *t, int res) {
  t->num_ops--;
  t->sending = 0;
  if (t->shut || res < 0) {
    if (!t->shut) {
      thr_fail(t, "send failed");
    }
    thr_maybe_closed(t);
    return;
  }
  t->out_off += (size_t)res; /* a short send is resumed below */
  if (t->out_off >= t->out.len) {
    struct buf sent = t->out;
    t->out = t->pending;
    t->pending = sent;
    buf_reset(&t->pending);
    t->out_off = 0;
  }
  thr_flush(t);
}

/* ---- requests and replies ---- */

/* thr_ask sends one EVAL for d. Returns 0, or -1 (memory, or too many in
 * flight: the caller decides locally this time). */
static int thr_ask(struct throttle *t, struct thr_dom *d,
                   const struct config_throttle_rate *r, unsigned want) {
  if (t->req_len >= THR_MAX_INFLIGHT) {
    return -1;
  }
  unsigned asked = want < THR_BATCH ? want : THR_BATCH;
  asked = asked < r->rate ? asked : r->rate;
  asked = asked ? asked : 1;
  const char *prefix = t->w->cfg->throttle_key_prefix;
  char key[400], seq[420], a_want[16], a_rate[16], a_win[16];
  snprintf(key, sizeof(key), "%srate:{%s}", prefix, d->domain);
  snprintf(seq, sizeof(seq), "%s:seq", key);
  snprintf(a_want, sizeof(a_want), "%u", asked);
  snprintf(a_rate, sizeof(a_rate), "%u", r->rate);
  snprintf(a_win, sizeof(a_win), "%u", r->period_ms);
  const char *argv[] = {"EVAL", thr_script, "2",    key,
                        seq,    a_want,     a_rate, a_win};
  if (thr_send(t, sizeof(argv) / sizeof(argv[0]), argv) != 0) {
    return -1;
  }
  t->reqs[(t->req_head + t->req_len) % THR_MAX_INFLIGHT] =
      (struct thr_req){.dom = d, .asked = asked, .sent_ms = t->w->now_ms};
  t->req_len++;
  d->asking = 1;
  thr_arm_timer(t);
  return 0;
}

/* thr_on_reply matches one reply to the oldest request. */
static void thr_on_reply(struct throttle *t, const struct resp_reply *rp) {
  if (t->req_len == 0) {
    thr_fail(t, "unexpected reply");
    return;
  }
  struct thr_req q = t->reqs[t->req_head];
  t->req_head = (t->req_head + 1) % THR_MAX_INFLIGHT;
  t->req_len--;
  if (q.dom == NULL) {
    if (rp->type != RESP_SIMPLE || strcmp(rp->str, "PONG") != 0) {
      thr_fail(t, "bad PING reply");
      return;
    }
    thr_ok(t);
    return;
  }
  struct thr_dom *d = q.dom;
  d->asking = 0;
  if (rp->type != RESP_ARRAY || rp->num_elems != 2 ||
      rp->elems[0].type != RESP_INTEGER || rp->elems[1].type != RESP_INTEGER ||
      rp->elems[0].integer < 0 || rp->elems[0].integer > (int64_t)q.asked ||
      rp->elems[1].integer < 0) {
    thr_fail(t, rp->type == RESP_ERROR ? "error reply" : "bad reply");
    return;
  }
  thr_ok(t);
  int64_t now = t->w->now_ms;
  d->granted = (unsigned)rp->elems[0].integer;
  d->granted_until_ms = now + THR_PERMIT_MS;
  if (rp->elems[1].integer > 0) {
    /* Full now: the permits granted (if any) go, then nothing until it
     * ends. */
    d->wait_until_ms = now + rp->elems[1].integer;
  }
}

/* thr_live: the connection is up and not being closed. */
static int thr_live(const struct throttle *t) {
  return t->fd >= 0 && !t->shut && t->state == THR_UP;
}

static void thr_on_recv(struct throttle *t, int res) {
  t->num_ops--;
  if (t->shut) {
    thr_maybe_closed(t);
    return;
  }
  if (res <= 0) {
    thr_fail(t, res == 0 ? "connection closed" : "recv failed");
    thr_maybe_closed(t);
    return;
  }
  size_t off = 0;
  while (off < (size_t)res && thr_live(t)) {
    size_t used = 0;
    struct resp_reply *rp = NULL;
    enum resp_status st = resp_parser_feed(&t->parser, t->rbuf + off,
                                           (size_t)res - off, &used, &rp);
    off += used;
    if (st == RESP_ERR) {
      thr_fail(t, "protocol error");
    } else if (st == RESP_DONE) {
      thr_on_reply(t, rp);
      resp_reply_free(rp);
    }
  }
  if (thr_live(t)) {
    thr_arm_recv(t);
  }
  thr_maybe_closed(t);
}

/* ---- timer ---- */

/* thr_next_ms: when the timer must look again; 0 if nothing waits. */
static int64_t thr_next_ms(const struct throttle *t) {
  int64_t next = 0;
  if (t->enabled && t->state == THR_DOWN && !t->shut) {
    next = t->next_connect_ms;
  } else if (t->state == THR_CONNECTING && !t->shut) {
    next = t->connect_deadline_ms;
  }
  if (t->req_len > 0) {
    int64_t due =
        t->reqs[t->req_head].sent_ms + (int64_t)t->w->cfg->throttle_timeout_ms;
    next = next == 0 || due < next ? due : next;
  }
  if (t->wake_ms > 0) {
    next = next == 0 || t->wake_ms < next ? t->wake_ms : next;
  }
  return next;
}

static void thr_arm_timer(struct throttle *t) {
  int64_t next = thr_next_ms(t);
  if (t->timer_armed || next == 0) {
    return;
  }
  int64_t delay = next - t->w->now_ms;
  delay = delay < 1 ? 1 : delay > THR_TIMER_MS ? THR_TIMER_MS : delay;
  t->ts.tv_sec = 0;
  t->ts.tv_nsec = (long long)delay * 1000000;
  struct io_uring_sqe *sqe = thr_sqe(t, THR_OP_TIMER);
  io_uring_prep_timeout(sqe, &t->ts, 0, 0);
  t->timer_armed = 1;
}

/* thr_on_timer: request and connect timeouts, reconnects; a full window
 * that ended needs no action here: the wake itself lets delivery look. */
static void thr_on_timer(struct throttle *t) {
  int64_t now = t->w->now_ms;
  t->timer_armed = 0;
  if (t->wake_ms > 0 && now >= t->wake_ms) {
    t->wake_ms = 0; /* domains still full set it again when asked */
  }
  if (t->state == THR_CONNECTING && !t->shut && now >= t->connect_deadline_ms) {
    thr_fail(t, "connect timeout");
  } else if (t->req_len > 0 && now - t->reqs[t->req_head].sent_ms >=
                                   (int64_t)t->w->cfg->throttle_timeout_ms) {
    thr_fail(t, "timeout");
  } else if (t->enabled && t->state == THR_DOWN && !t->shut &&
             now >= t->next_connect_ms) {
    thr_connect(t);
  }
  thr_arm_timer(t);
}

void throttle_on_cqe(struct worker *w, void *op, int res, unsigned flags) {
  (void)w;
  (void)flags;
  struct thr_op *o = op;
  struct throttle *t = o->t;
  switch (o->what) {
  case THR_OP_CONNECT:
    thr_on_connect(t, res);
    break;
  case THR_OP_RECV:
    thr_on_recv(t, res);
    break;
  case THR_OP_SEND:
    thr_on_send(t, res);
    break;
  case THR_OP_TIMER:
    thr_on_timer(t);
    break;
  default:
    abort(); /* an op we never queued */
  }
}

/* ---- the interface ---- */

int throttle_applies(const struct worker *w, const char *domain) {
  return w->thr != NULL && config_throttle_rate(w->cfg, domain) != NULL;
}

/* thr_note_wait remembers the earliest window end, for the timer. */
static void thr_note_wait(struct throttle *t, int64_t until_ms) {
  if (t->wake_ms == 0 || until_ms < t->wake_ms) {
    t->wake_ms = until_ms;
  }
  thr_arm_timer(t);
}

/* dom_wait: d's window is full: counted once per full window as a
 * deferral, and the timer wakes the loop when it ends. */
static enum throttle_verdict dom_wait(struct throttle *t, struct thr_dom *d,
                                      int64_t *out_until_ms) {
  if (d->wait_counted_ms != d->wait_until_ms) {
    d->wait_counted_ms = d->wait_until_ms;
    METRIC_ADD(t->w->m.thr_decisions[1], 1);
  }
  *out_until_ms = d->wait_until_ms;
  thr_note_wait(t, d->wait_until_ms);
  return THROTTLE_WAIT;
}

int throttle_waiting(struct worker *w, const char *domain,
                     int64_t *out_until_ms) {
  struct throttle *t = w->thr;
  if (!throttle_applies(w, domain)) {
    return 0;
  }
  struct thr_dom *d = dom_get(t, domain);
  if (d == NULL || w->now_ms >= d->wait_until_ms) {
    return 0;
  }
  *out_until_ms = d->wait_until_ms;
  thr_note_wait(t, d->wait_until_ms);
  return 1;
}

enum throttle_verdict throttle_take(struct worker *w, const char *domain,
                                    unsigned want, int64_t *out_until_ms) {
  struct throttle *t = w->thr;
  const struct config_throttle_rate *r =
      t != NULL ? config_throttle_rate(w->cfg, domain) : NULL;
  if (r == NULL) {
    return THROTTLE_GO;
  }
  int64_t now = w->now_ms;
  struct thr_dom *d = dom_get(t, domain);
  if (d == NULL) {
    return THROTTLE_ASKING; /* over THR_MAX_DOMAINS: after the next expiry */
  }
  d->last_ms = now;
  *out_until_ms = 0;
  if (d->granted > 0 && now < d->granted_until_ms) {
    d->granted--;
    METRIC_ADD(w->m.thr_decisions[0], 1);
    return THROTTLE_GO;
  }
  d->granted = 0;
  if (now < d->wait_until_ms) {
    return dom_wait(t, d, out_until_ms);
  }
  int shared = t->enabled && !t->local;
  if (shared && (d->asking || t->state != THR_UP)) {
    return THROTTLE_ASKING; /* the answer, or the connection, comes */
  }
  if (shared && thr_ask(t, d, r, want) == 0) {
    return THROTTLE_ASKING;
  }
  if (local_take(t, d, r, now) == THROTTLE_WAIT) {
    return dom_wait(t, d, out_until_ms);
  }
  METRIC_ADD(w->m.thr_decisions[0], 1);
  return THROTTLE_GO;
}

void throttle_tick(struct worker *w) {
  struct throttle *t = w->thr;
  if (t == NULL) {
    return;
  }
  dom_expire(t, w->now_ms);
  thr_arm_timer(t);
}

/* thr_resolve finds throttle.redis's address (once, at start: a name is
 * looked up with the system resolver, which blocks). */
static int thr_resolve(struct throttle *t, const char *hostport, char *err,
                       size_t err_len) {
  char host[256];
  uint16_t port;
  char port_text[8];
  if (hostport_parse(hostport, host, sizeof(host), &port) != 0) {
    snprintf(err, err_len, "throttle.redis %s: not host:port", hostport);
    return -1;
  }
  snprintf(port_text, sizeof(port_text), "%u", port);
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICSERV};
  struct addrinfo *res = NULL;
  int rc = getaddrinfo(host, port_text, &hints, &res);
  if (rc != 0) {
    snprintf(err, err_len, "throttle.redis %s: %s", hostport, gai_strerror(rc));
    return -1;
  }
  memcpy(&t->addr, res->ai_addr, res->ai_addrlen);
  t->addr_len = res->ai_addrlen;
  freeaddrinfo(res);
  return 0;
}

int throttle_init(struct worker *w, char *err, size_t err_len) {
  const struct config *cfg = w->cfg;
  if (cfg->num_throttle_rates == 0 && cfg->throttle_redis[0] == '\0') {
    return 0; /* a reload cannot add throttles: documented */
  }
  struct throttle *t = calloc(1, sizeof(*t));
  if (t == NULL) {
    snprintf(err, err_len, "out of memory");
    return -1;
  }
  t->w = w;
  t->fd = -1;
  t->backoff_ms = THR_BACKOFF_MIN_MS;
  for (int i = 0; i < THR_OP_COUNT; i++) {
    t->ops[i] = (struct thr_op){.t = t, .what = (enum thr_op_what)i};
  }
  resp_parser_init(&t->parser, NULL);
  t->enabled = cfg->throttle_redis[0] != '\0';
  if (t->enabled && thr_resolve(t, cfg->throttle_redis, err, err_len) != 0) {
    resp_parser_cleanup(&t->parser);
    free(t);
    return -1;
  }
  t->next_connect_ms = w->now_ms; /* the first timer connects */
  w->thr = t;
  return 0;
}

void throttle_close(struct worker *w) {
  struct throttle *t = w->thr;
  if (t != NULL && t->fd >= 0) {
    shutdown(t->fd, SHUT_RDWR);
    close(t->fd);
    t->fd = -1;
  }
}

void throttle_free(struct worker *w) {
  struct throttle *t = w->thr;
  if (t == NULL) {
    return;
  }
  for (size_t b = 0; b < THR_BUCKETS; b++) {
    while (t->buckets[b] != NULL) {
      struct thr_dom *d = t->buckets[b];
      t->buckets[b] = d->next;
      free(d);
    }
  }
  buf_free(&t->out);
  buf_free(&t->pending);
  resp_parser_cleanup(&t->parser);
  free(t);
  w->thr = NULL;
}
