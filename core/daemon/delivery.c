/* core/daemon/delivery.c — outbound delivery: each worker's queue of the
 * messages it owns, split per destination (next hop), the connections to
 * those next hops (SMTP, LMTP) and the local Maildir deliveries, retries
 * with backoff and expiry, delivery status notifications, and the DONE
 * records that finish recipients durably.
 *
 * Ownership: a worker owns the messages it committed, and at start-up the
 * recovered ones whose queue_id % num_workers is its index: their state,
 * outcomes, DONE records and reports. A destination belongs to one worker
 * (XXH3 of its name % num_workers), which runs every attempt to it: a due
 * job whose destination another worker owns is handed over (see
 * "Hand-over" below) and comes back with its outcomes
 * (struct dlv_outcome), which the home worker then applies as if it had
 * made the attempt itself. So a destination's connections, its
 * concurrency and its rate are shared by every worker's messages. While
 * a job is away the home side sees it as in flight and touches nothing
 * the other worker uses (xdest, next); the other worker only reads the
 * message (its recipients, body, envelope), which does not change while
 * a job is in flight.
 *
 * Shapes: a message (dlv_msg) has recipients; at queueing each open
 * recipient is routed (config_route: transports, local_transport,
 * relayhost, MX) and the recipients of one destination form a job
 * (dlv_job). A job is in exactly one place: its destination's ready FIFO
 * (due now), the worker's waiting heap (deferred until next_ms), in
 * flight (on a connection or a local delivery), held (by the operator),
 * or idle (all its recipients finished). A message is freed, and the
 * queue gauge falls, once every recipient's DONE is durable and no job is
 * in flight.
 *
 * Destinations (dlv_dest): keyed by the route ("smtp:example.com",
 * "smtp:[10.0.0.5]:25", "lmtp:unix:/run/dovecot/lmtp", "maildir:T").
 * SMTP and LMTP ones resolve their next hop through policy/dns (MX per
 * RFC 5321 §5.1, or A/AAAA) and keep the addresses until the route's TTL
 * runs out; a connect failure moves to the next address; when every
 * address failed, the due jobs are deferred and new connects pause. A
 * permanent DNS answer (NXDOMAIN, null MX) bounces the due jobs.
 *
 * Bodies: a body committed by this worker stays in memory for its first
 * attempt while the worker holds less than DLV_BODY_BUDGET of bodies;
 * otherwise it is re-read from the spool record with a blocking pread on
 * the loop thread (the page cache usually holds recent records).
 *
 * Hand-over: each ordered pair of workers has two single-producer
 * single-consumer rings (core/spsc.h), one for jobs handed over and one
 * for jobs coming home, DLV_XRING_SIZE jobs each. The producer pushes and
 * then, unless the ring's wake_pending flag was already set (an exchange),
 * sends the consumer one IORING_OP_MSG_RING message naming the ring
 * (OP_XRING): one wake per batch. The consumer clears the flag before it
 * drains, so a push after the drain sends a new wake. If the consumer's
 * ring does not take messages (before its loop runs, no MSG_RING on this
 * kernel, a send that failed) the wake goes through its eventfd, whose
 * handler drains every ring. A full ring, or a hand-over before the loops
 * run (recovery, on the main thread), goes on the locked lists (dlv_inbox,
 * dlv_back, under local_mu, eventfd wake) as before, so nothing is
 * dropped. Stopping: delivery_close sets dlv_closed and drains its rings
 * under local_mu; a producer reads dlv_closed before pushing (the job
 * stays home) and again after (seq_cst fences on both sides: one of the
 * two sees the other), and if the owner has drained for good by then, it
 * takes back what it left on the ring.
 *
 * Thread: everything here runs on the owning worker's thread, except the
 * Maildir writes, which run on the local pool (local.c) and come back
 * through delivery_local_done(). */
#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/daemon/daemon.h"
#include "policy/mta_sts.h"
#include "core/log.h"
#include "core/spsc.h"
#include "proto/ctl.h"
#include "proto/dsn.h"

#define DLV_BODY_BUDGET ((size_t)64 << 20) /* per worker */
#define DLV_SEND_HIGH ((size_t)256 << 10)  /* output queued ahead of send */
#define DLV_MAX_EVENTS 100000              /* per pump: a bound, not a limit */
#define DLV_HOLD_MS 1000 /* pause new connects after every address failed */
/* A connection with nothing to send waits this long for the next message
 * before it QUITs, so a steady trickle reuses connections. */
#define DLV_IDLE_MS 1000
#define DLV_DEST_BUCKETS 1024 /* power of two */
#define DLV_MAX_ADDRS 16
/* How long a route (addresses, or a failure) is used before it is looked
 * up again; the DNS cache underneath honours the records' TTLs. */
#define DLV_ROUTE_TTL_MS 60000
#define DLV_ROUTE_FAIL_TTL_MS 5000
/* Jobs on one hand-over ring (a power of two); more wait on the locked
 * lists. 2 * N * (N - 1) rings of 2 KiB. */
#define DLV_XRING_SIZE 256
#define DLV_XRING_BATCH 64 /* jobs taken off a ring at a time */

/* One direction between two workers: one producer, one consumer. */
struct dlv_xring {
  struct spsc q;
  int wake_pending; /* atomic: the consumer has been (or is being) woken */
  int back;         /* jobs coming home (1) or handed over (0) */
  struct worker *producer, *consumer;
};

const struct metric_hist_spec daemon_delivery_spec = {
    .num_bounds = 12,
    .bounds = {0.01, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 60, 300, 3600, 86400},
};

/* What a recipient's report (DSN) will say, once it is queued. */
enum dlv_report {
  REPORT_NONE,
  REPORT_FAILED,
  REPORT_DELAYED,
  REPORT_DELIVERED,
  REPORT_RELAYED,
};

struct dlv_rcpt {
  char *addr;
  char *orcpt;
  unsigned notify;
  uint32_t index; /* in the spooled MESSAGE record */
  int done;       /* a DONE record was staged (or waits for its report) */
  int delay_warned;
  /* A report to send for this recipient (this attempt): the DSN is
   * staged before the DONE, so it is durable no later than the DONE. */
  enum dlv_report report;
  enum dlv_result result; /* the DONE to stage after the report */
  struct smtp_reply *reply;
  char report_relay[400];
};

enum dlv_job_state {
  JOB_READY,   /* in its destination's ready FIFO */
  JOB_WAITING, /* in the waiting heap */
  JOB_FLIGHT,  /* on a connection or a local delivery */
  JOB_HELD,    /* held by the operator */
  JOB_IDLE,    /* every recipient finished */
};

/* One attempt's outcome for one recipient, made by the worker that owns
 * the destination and replayed by the message's worker. */
struct dlv_outcome {
  size_t index; /* the recipient in the message */
  int deferred;
  enum dlv_result result;
  enum dlv_report report;
  char relay[400];
  struct smtp_reply reply;
};

struct dlv_job {
  struct dlv_job *next; /* ready FIFO; inbox and return lists */
  struct dlv_job *prev; /* ready FIFO: unlinking is O(1) */
  struct dlv_msg *msg;
  struct worker *home;   /* the message's worker */
  struct dlv_dest *dest; /* the home worker's record of the destination */
  /* The destination on the worker running the attempt: dest itself, or
   * the owner's (another worker's) while the job is handed over. Only
   * that worker touches it, and next, while the job is there. */
  struct dlv_dest *xdest;
  struct dlv_outcome *outcomes; /* a handed-over attempt's results */
  size_t num_outcomes;
  size_t *rcpts; /* indices into msg->rcpts */
  size_t num_rcpts;
  enum dlv_job_state state;
  size_t heap_idx;
  int64_t next_ms;
  unsigned attempts;
  /* The next hop took some recipients and said 452 to the rest (too many
   * recipients, RFC 5321 §4.5.3.1.10): the rest go again at once. */
  int retry_now;
};

struct dlv_msg {
  char qid[SPOOL_QUEUE_ID_LEN + 1];
  char *sender;
  char *envid;
  uint8_t ret, body_type, smtputf8;
  uint8_t requiretls; /* RFC 8689: only over verified TLS (dlv_requiretls) */
  struct dlv_rcpt *rcpts;
  size_t num_rcpts;
  size_t num_open; /* recipients without a DONE */
  struct dlv_job *jobs;
  size_t num_jobs;
  unsigned in_flight; /* jobs in flight */
  int held;
  uint32_t hold_gen;      /* of the last HOLD/RELEASE record (spool.h) */
  int deleted;            /* delete asked while a job was in flight */
  struct spool_entry loc; /* where the record lives: for re-reading */
  struct seg *mseg;       /* the segment of its MESSAGE (segments.c) */
  int mseg_old;           /* recovered: its MESSAGE is in an older segment */
  struct seg_group *mold; /* recovered: that segment's group (segments.c) */
  struct buf body;        /* empty: re-read from the spool */
  unsigned pending_dones; /* DONE records staged, not yet durable */
  struct dlv_msg *all_prev, *all_next; /* every message of the worker */
};

struct dlv_dest {
  struct dlv_dest *hnext; /* hash chain */
  struct dlv_dest *anext; /* active list */
  int active;
  int busy; /* being scheduled: not freed under the scheduler */
  uint64_t hash;
  char name[600];
  struct route route;
  char lookup[256]; /* the name to resolve */
  struct dlv_job *ready_head, *ready_tail;
  size_t num_ready;
  struct conn *idle;
  unsigned num_conns, num_starting;
  unsigned num_jobs; /* jobs that point here */
  unsigned local_in_flight;
  int64_t hold_until_ms;
  /* Opportunistic TLS failed its handshake here: plaintext until then
   * (as Postfix retries "may" without TLS). */
  int64_t tls_plain_until_ms;
  /* MTA-STS (RFC 8461) of the next-hop domain, looked up with the route
   * (MX routing only): the policy in force (enforce or testing), or NULL. */
  int sts_pending;
  struct mta_sts_policy *sts;
  /* Route: addresses in MX order, or why there are none. */
  int resolving;
  uint64_t dns_handle;
  int route_known;
  enum dns_status route_status;
  char route_detail[256];
  int64_t route_expire_ms;
  struct sockaddr_storage addrs[DLV_MAX_ADDRS];
  char addr_host[DLV_MAX_ADDRS][256];
  /* RFC 7672 §2.2.1-2: the MX answer and this address's host records
   * were DNSSEC-validated, so its TLSA records count (dane level). */
  uint8_t addr_dane[DLV_MAX_ADDRS];
  size_t num_addrs;
  size_t addr_next;  /* the address the next connection uses */
  size_t num_failed; /* consecutive connect failures */
  /* Rate limit: a token bucket of delivery_dest_rate per second. */
  double tokens;
  int64_t tokens_ms;
  /* The recipient domain a throttle.rates entry matched (throttle.c), or
   * "": its jobs all go to that domain (see dest_name). */
  char thr_domain[256];
  struct worker *route_worker; /* for the DNS callback */
};

struct dlv_state {
  struct dlv_dest *buckets[DLV_DEST_BUCKETS];
  struct dlv_dest *active; /* destinations with work or connections */
  struct dlv_job **heap;   /* waiting jobs, by next_ms */
  size_t heap_len, heap_cap;
  struct dlv_msg *all; /* every message, for the control commands */
  size_t num_msgs;
};

/* The delivery side of an outbound connection. */
struct dlv_conn {
  struct smtp_client *cl;
  struct dlv_dest *dest;
  struct sockaddr_storage addr;
  socklen_t addr_len;
  size_t addr_index;
  char relay[400];     /* host[addr]:port, for logs */
  int starting;        /* not yet ready for its first message */
  int connect_expired; /* the connect timeout cancelled the connect */
  unsigned num_msgs;   /* messages started on this connection */
  int idle;            /* in the destination's idle list */
  int64_t idle_until;
  struct conn *idle_next;
  struct dlv_job *job; /* in flight */
  struct smtp_client_message cm;
  struct smtp_client_rcpt *crcpts;
  size_t *map; /* engine recipient -> msg recipient */
  struct smtp_client_span span;
  struct buf storage; /* a re-read record */
  struct buf rcpt_storage;
  enum config_tls_level tls_level; /* this connection's TLS policy */
  char tls_host[256];              /* the next-hop name the cert must match */
  int sts_enforce;       /* MTA-STS enforce: TLS verified for the MX host */
  int sts_testing;       /* MTA-STS testing: log what enforce would refuse */
  struct dlv_dane *dane; /* the dane level's TLSA state, or NULL */
};

static uint64_t dlv_done_len;

static void dlv_job_ready(struct worker *w, struct dlv_job *j);
static void dlv_start_tls(struct conn *c);
static int dest_sts_addr(const struct dlv_dest *d, size_t ai);
static int dlv_msg_requiretls(const struct dlv_msg *m,
                              const struct dlv_dest *d);
static void dlv_after_attempt(struct worker *w, struct dlv_job *j);
static int dane_begin(struct worker *w, struct dlv_dest *d, size_t ai,
                      const char *relay, struct dlv_dane **out);
static void dane_attach(struct conn *c, struct dlv_dane *dn);
static void dane_free(struct worker *w, struct dlv_dane *dn);
static int dane_tick(struct conn *c, int expired, int force);
static void dane_tls_params(const struct conn *c, struct tls_client_params *p,
                            char *key, size_t key_len);
static void dane_tls_ready(struct conn *c, enum tls_verify_result vr);
static int dane_host_secure(const struct dlv_dest *d,
                            const struct dns_route *route,
                            const struct dns_target *tg);
static void dlv_tlsrpt(const struct conn *c, enum tlsrpt_event ev,
                       const char *reason);
static void dest_tlsrpt(struct worker *w, const struct dlv_dest *d,
                        enum tlsrpt_event ev, const char *mx_host,
                        const char *reason);

/* ---- the waiting heap ---- */

static void heap_swap(struct dlv_state *s, size_t a, size_t b) {
  struct dlv_job *t = s->heap[a];
  s->heap[a] = s->heap[b];
  s->heap[b] = t;
  s->heap[a]->heap_idx = a;
  s->heap[b]->heap_idx = b;
}

static void heap_up(struct dlv_state *s, size_t i) {
  while (i > 0 && s->heap[(i - 1) / 2]->next_ms > s->heap[i]->next_ms) {
    heap_swap(s, i, (i - 1) / 2);
    i = (i - 1) / 2;
  }
}

static void heap_down(struct dlv_state *s, size_t i) {
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < s->heap_len && s->heap[l]->next_ms < s->heap[m]->next_ms) {
      m = l;
    }
    if (r < s->heap_len && s->heap[r]->next_ms < s->heap[m]->next_ms) {
      m = r;
    }
    if (m == i) {
      return;
    }
    heap_swap(s, i, m);
    i = m;
  }
}

static int heap_push(struct dlv_state *s, struct dlv_job *j) {
  if (s->heap_len == s->heap_cap) {
    size_t cap = s->heap_cap ? s->heap_cap * 2 : 256;
    struct dlv_job **h = realloc(s->heap, cap * sizeof(*h));
    if (h == NULL) {
      return -1;
    }
    s->heap = h;
    s->heap_cap = cap;
  }
  j->heap_idx = s->heap_len;
  s->heap[s->heap_len++] = j;
  heap_up(s, j->heap_idx);
  return 0;
}

static void heap_remove(struct dlv_state *s, struct dlv_job *j) {
  size_t i = j->heap_idx;
  s->heap_len--;
  if (i != s->heap_len) {
    s->heap[i] = s->heap[s->heap_len];
    s->heap[i]->heap_idx = i;
    heap_down(s, i);
    heap_up(s, i);
  }
  j->heap_idx = SIZE_MAX;
}

/* ---- destinations ---- */

static void dest_activate(struct dlv_state *s, struct dlv_dest *d) {
  if (!d->active) {
    d->active = 1;
    d->anext = s->active;
    s->active = d;
  }
}

/* dest_name: the destination's key: the route, with the recipient's
 * domain for plain MX routing; a throttled domain (throttle.rates) gets a
 * destination of its own on any route ("smtp:[10.0.0.5]:25/example.com"),
 * so the throttle can hold back its jobs alone. */
static void dest_name(const struct worker *w, const struct route *r,
                      const char *domain, char *out, size_t out_len) {
  size_t at = 0;
  if (r->kind == ROUTE_SMTP_MX && r->host[0] == '\0') {
    snprintf(out, out_len, "smtp:%s", domain);
    at = 5;
  } else if (throttle_applies(w, domain)) {
    char spec[600];
    route_format(r, spec, sizeof(spec));
    snprintf(out, out_len, "%.300s/%.256s", spec, domain);
    at = strlen(spec) < 300 ? strlen(spec) + 1 : 301;
  } else {
    route_format(r, out, out_len);
    return;
  }
  for (char *p = out + at; *p; p++) {
    *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
  }
}

static struct dlv_dest *dest_get(struct worker *w, const struct route *r,
                                 const char *domain) {
  struct dlv_state *s = w->dlv;
  char name[600];
  dest_name(w, r, domain, name, sizeof(name));
  uint64_t h = XXH3_64bits(name, strlen(name));
  struct dlv_dest **pp = &s->buckets[h & (DLV_DEST_BUCKETS - 1)];
  for (struct dlv_dest *d = *pp; d != NULL; d = d->hnext) {
    if (d->hash == h && strcmp(d->name, name) == 0) {
      return d;
    }
  }
  struct dlv_dest *d = calloc(1, sizeof(*d));
  if (d == NULL) {
    return NULL;
  }
  d->hash = h;
  snprintf(d->name, sizeof(d->name), "%s", name);
  d->route = *r;
  if (r->kind == ROUTE_SMTP_MX && r->host[0] == '\0') {
    snprintf(d->lookup, sizeof(d->lookup), "%s", domain);
    d->route.port = 25;
  } else {
    snprintf(d->lookup, sizeof(d->lookup), "%s", r->host);
  }
  d->tokens = 1;
  d->tokens_ms = w->now_ms;
  if (throttle_applies(w, domain)) {
    snprintf(d->thr_domain, sizeof(d->thr_domain), "%s", domain);
    for (char *p = d->thr_domain; *p; p++) {
      *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
    }
  }
  d->hnext = *pp;
  *pp = d;
  return d;
}

/* dest_maybe_free drops a destination nothing refers to any more. */
static void dest_maybe_free(struct worker *w, struct dlv_dest *d) {
  if (d->num_jobs > 0 || d->num_conns > 0 || d->resolving || d->sts_pending ||
      d->local_in_flight > 0 || d->active || d->busy) {
    return;
  }
  struct dlv_dest **pp = &w->dlv->buckets[d->hash & (DLV_DEST_BUCKETS - 1)];
  for (; *pp != NULL; pp = &(*pp)->hnext) {
    if (*pp == d) {
      *pp = d->hnext;
      free(d->sts);
      free(d);
      return;
    }
  }
}

static void dest_push(struct dlv_dest *d, struct dlv_job *j) {
  j->next = NULL;
  j->prev = d->ready_tail;
  if (d->ready_tail != NULL) {
    d->ready_tail->next = j;
  } else {
    d->ready_head = j;
  }
  d->ready_tail = j;
  d->num_ready++;
}

static void dest_unlink(struct dlv_dest *d, struct dlv_job *j) {
  if (j->prev != NULL) {
    j->prev->next = j->next;
  } else {
    d->ready_head = j->next;
  }
  if (j->next != NULL) {
    j->next->prev = j->prev;
  } else {
    d->ready_tail = j->prev;
  }
  j->next = j->prev = NULL;
  d->num_ready--;
}

static struct dlv_job *dest_pop(struct dlv_dest *d) {
  struct dlv_job *j = d->ready_head;
  if (j != NULL) {
    dest_unlink(d, j);
  }
  return j;
}

/* dest_take_token: 1 if the rate limit lets one more message go now. */
static int dest_take_token(struct worker *w, struct dlv_dest *d) {
  unsigned rate = w->cfg->delivery_dest_rate;
  if (rate == 0) {
    return 1;
  }
  /* A second's worth of burst: the scheduler may only look again at the
   * next one-second tick. */
  double burst = (double)rate;
  d->tokens += (double)(w->now_ms - d->tokens_ms) * rate / 1000.0;
  d->tokens_ms = w->now_ms;
  if (d->tokens > burst) {
    d->tokens = burst;
  }
  if (d->tokens < 1.0) {
    return 0;
  }
  d->tokens -= 1.0;
  return 1;
}

/* dest_may_send: 1 if the destination's next due job may go now: the
 * per-thread token bucket, then the shared throttle (throttle.c), which
 * may need a turn or two to ask Redis. *out_wait_ms: with 0 returned, how
 * long the throttle's window stays full (0: not full, ask again soon). */
static int dest_may_send(struct worker *w, struct dlv_dest *d,
                         int64_t *out_wait_ms) {
  *out_wait_ms = 0;
  if (d->num_ready == 0 || !dest_take_token(w, d)) {
    return 0;
  }
  if (d->thr_domain[0] == '\0') {
    return 1;
  }
  int64_t until = 0;
  enum throttle_verdict v =
      throttle_take(w, d->thr_domain, (unsigned)d->num_ready, &until);
  if (v == THROTTLE_GO) {
    return 1;
  }
  d->tokens += 1.0; /* the bucket's token was not used */
  *out_wait_ms = v == THROTTLE_WAIT ? until - w->now_ms : 0;
  return 0;
}

/* ---- messages ---- */

void delivery_msg_free(struct dlv_msg *m) {
  if (m == NULL) {
    return;
  }
  for (size_t i = 0; i < m->num_rcpts; i++) {
    free(m->rcpts[i].addr);
    free(m->rcpts[i].orcpt);
    free(m->rcpts[i].reply);
  }
  for (size_t i = 0; i < m->num_jobs; i++) {
    free(m->jobs[i].rcpts);
    free(m->jobs[i].outcomes);
  }
  free(m->jobs);
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
  dm->requiretls = m->requiretls;
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

static void dlv_drop_body(struct worker *w, struct dlv_msg *m) {
  w->dlv_body_bytes -= m->body.len;
  buf_free(&m->body);
}

/* rcpt_domain: the domain of an address (after the last '@'); a bare
 * local part ("postmaster") is ours. */
static const char *rcpt_domain(const struct worker *w, const char *addr) {
  const char *at = strrchr(addr, '@');
  return at != NULL && at[1] != '\0' ? at + 1 : w->cfg->hostname;
}

/* dlv_route_msg splits the open recipients of m into one job per
 * destination. Returns 0 or -1 (memory). */
static int dlv_route_msg(struct worker *w, struct dlv_msg *m) {
  m->jobs = calloc(m->num_rcpts ? m->num_rcpts : 1, sizeof(*m->jobs));
  struct dlv_dest **dests =
      calloc(m->num_rcpts ? m->num_rcpts : 1, sizeof(*dests));
  if (m->jobs == NULL || dests == NULL) {
    free(dests);
    return -1;
  }
  for (size_t i = 0; i < m->num_rcpts; i++) {
    if (m->rcpts[i].done) {
      continue;
    }
    struct route r;
    const char *domain = rcpt_domain(w, m->rcpts[i].addr);
    config_route(w->cfg, domain, &r);
    struct dlv_dest *d = dest_get(w, &r, domain);
    if (d == NULL) {
      free(dests);
      return -1;
    }
    size_t k = 0;
    while (k < m->num_jobs && dests[k] != d) {
      k++;
    }
    struct dlv_job *j = &m->jobs[k];
    if (k == m->num_jobs) {
      dests[k] = d;
      m->num_jobs++;
      j->msg = m;
      j->home = w;
      j->dest = d;
      j->heap_idx = SIZE_MAX;
      j->state = JOB_IDLE;
      j->rcpts = calloc(m->num_rcpts, sizeof(*j->rcpts));
      if (j->rcpts == NULL) {
        free(dests);
        return -1;
      }
      d->num_jobs++;
    }
    j->rcpts[j->num_rcpts++] = i;
  }
  free(dests);
  return 0;
}

static void dlv_all_link(struct worker *w, struct dlv_msg *m) {
  struct dlv_state *s = w->dlv;
  m->all_prev = NULL;
  m->all_next = s->all;
  if (s->all != NULL) {
    s->all->all_prev = m;
  }
  s->all = m;
  s->num_msgs++;
}

static void dlv_all_unlink(struct worker *w, struct dlv_msg *m) {
  struct dlv_state *s = w->dlv;
  if (m->all_prev) {
    m->all_prev->all_next = m->all_next;
  } else {
    s->all = m->all_next;
  }
  if (m->all_next) {
    m->all_next->all_prev = m->all_prev;
  }
  s->num_msgs--;
}

/* dlv_enqueue: a durable message enters the queue: routed, its jobs due
 * now (or held). On a routing failure (memory) it is deferred as one. */
static void dlv_enqueue(struct worker *w, struct dlv_msg *m) {
  METRIC_ADD(w->m.queue_messages, 1);
  dlv_all_link(w, m);
  if (dlv_route_msg(w, m) != 0) {
    log_msg("error", "qid=%s: out of memory routing the message", m->qid);
  }
  for (size_t k = 0; k < m->num_jobs; k++) {
    if (m->held) {
      m->jobs[k].state = JOB_HELD;
    } else {
      dlv_job_ready(w, &m->jobs[k]);
    }
  }
}

void delivery_on_committed(struct worker *w, struct dlv_msg *m,
                           struct buf *body, const char *segment,
                           uint64_t offset) {
  snprintf(m->loc.segment, sizeof(m->loc.segment), "%s", segment);
  m->loc.offset = offset;
  m->mseg = segs_get(w, segment);
  segs_message(m->mseg);
  if (w->dlv_body_bytes + body->len <= DLV_BODY_BUDGET) {
    m->body = *body; /* taken over: the commit no longer needs it */
    *body = (struct buf){0};
    w->dlv_body_bytes += m->body.len;
  }
  dlv_enqueue(w, m);
}

int delivery_recover(struct worker *w, const struct spool_scan *scan,
                     const struct spool_entry *e) {
  struct buf storage = {0}, rcpt_storage = {0};
  struct spool_message m;
  struct dlv_msg *dm = NULL;
  /* Counted in its segments' group before anything can fail: a message
   * that cannot be loaded keeps them (pinned) for the next start. */
  struct seg_group *g = segs_old_message(w, scan, e->segment);
  if (spool_read_message(w->d->spool_dir, e, &storage, &m, &rcpt_storage) ==
      0) {
    dm = delivery_msg_new(&m);
  }
  buf_free(&storage);
  buf_free(&rcpt_storage);
  if (dm == NULL) {
    segs_old_pin(g);
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
    segs_old_message_done(w, g);
    delivery_msg_free(dm);
    return 0;
  }
  dm->mseg_old = 1;
  dm->mold = g;
  dm->held = spool_scan_held(scan, e->queue_id);
  dm->hold_gen = e->hold_gen;
  dlv_enqueue(w, dm);
  return 0;
}

/* dlv_msg_maybe_finish: every recipient has a durable DONE and no job is
 * in flight: the message leaves the queue. */
static void dlv_msg_maybe_finish(struct worker *w, struct dlv_msg *m) {
  if (m->num_open > 0 || m->pending_dones > 0 || m->in_flight > 0) {
    return;
  }
  for (size_t k = 0; k < m->num_jobs; k++) {
    struct dlv_job *j = &m->jobs[k];
    if (j->state == JOB_READY) {
      dest_unlink(j->dest, j);
    } else if (j->state == JOB_WAITING) {
      heap_remove(w->dlv, j);
    }
    j->state = JOB_IDLE;
    j->dest->num_jobs--;
    dest_maybe_free(w, j->dest);
  }
  METRIC_ADD(w->m.queue_messages, -1);
  dlv_all_unlink(w, m);
  segs_message_done(w, m->mseg);
  if (m->mseg_old) {
    segs_old_message_done(w, m->mold);
  }
  struct log_rec r;
  log_begin(&r, "removed");
  log_str(&r, "qid", m->qid);
  log_end(&r);
  dlv_drop_body(w, m);
  delivery_msg_free(m);
}

void delivery_on_done_durable(struct worker *w, struct dlv_msg *m, int err,
                              const char *segment) {
  if (err == 0) {
    /* The record's segment must outlive the MESSAGE's (segments.c). */
    if (m->mseg_old) {
      segs_depend_old(segs_get(w, segment), m->mold);
    } else {
      segs_depend(segs_get(w, segment), m->mseg, 0);
    }
  } else {
    /* The recipient counts as done here but not on disk: its MESSAGE must
     * stay for the next start, which delivers (or bounces) it again. */
    segs_pin(m->mseg);
    segs_old_pin(m->mold);
    /* The recipient stays pending on disk: delivered again after a
     * restart (at least once), never lost. */
    log_msg("error",
            "qid=%s: DONE or HOLD record not durable (%s); a recipient "
            "may be delivered again after a restart",
            m->qid, strerror(-err));
  }
  m->pending_dones--;
  dlv_msg_maybe_finish(w, m);
}

/* job_open: recipients of the job without a DONE. */
static size_t job_open(const struct dlv_job *j) {
  size_t n = 0;
  for (size_t i = 0; i < j->num_rcpts; i++) {
    n += !j->msg->rcpts[j->rcpts[i]].done;
  }
  return n;
}

/* ---- hand-over between workers: rings and locked lists ---- */

static void dlv_adopt(struct worker *w, struct dlv_job *j);
static void dlv_replay(struct worker *w, struct dlv_job *j);

/* Set once a MSG_RING failed or the kernel has none: every wake then goes
 * through the eventfd. */
static int dlv_msg_ring_off;
/* Workers past delivery_free_all: the last one frees every ring (a peer
 * may look at a ring of a worker that has left). */
static unsigned dlv_xfreed;

/* xring_wake tells x's consumer that x holds jobs, unless it has been
 * told already (one wake per batch). */
static void xring_wake(struct worker *w, struct dlv_xring *x) {
  if (__atomic_exchange_n(&x->wake_pending, 1, __ATOMIC_ACQ_REL)) {
    return; /* the consumer clears the flag before it drains */
  }
  struct worker *c = x->consumer;
  if (!w->dlv_loop || !__atomic_load_n(&c->dlv_xwake_ok, __ATOMIC_ACQUIRE) ||
      __atomic_load_n(&dlv_msg_ring_off, __ATOMIC_RELAXED)) {
    /* Not our loop to submit a message (stopping), or no ring to take
     * it: the eventfd handler drains every ring. */
    METRIC_ADD(w->dlv_xstats.wake_fd, 1);
    worker_wake(c);
    return;
  }
  /* Goes out with the loop's next submit. Only a failure posts a CQE
   * here; the consumer's CQE names the ring. */
  struct io_uring_sqe *sqe = worker_get_sqe(w);
  io_uring_prep_msg_ring(sqe, c->ring.ring_fd, 0, op_tag(x, OP_XRING), 0);
  sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
  io_uring_sqe_set_data64(sqe, op_tag(x, OP_XRING_SENT));
  METRIC_ADD(w->dlv_xstats.wake_msg, 1);
}

/* xring_push puts j on x (w is its producer) and wakes the consumer.
 * Returns 1, or 0 when the ring is full (j untouched). */
static int xring_push(struct worker *w, struct dlv_xring *x,
                      struct dlv_job *j) {
  if (!spsc_push(&x->q, j)) {
    return 0;
  }
  METRIC_ADD(w->dlv_xstats.ring, 1);
  xring_wake(w, x);
  return 1;
}

/* xring_pop_all moves every job on x onto the front of list (the
 * caller is x's consumer, or holds its role). Returns the list. */
static struct dlv_job *xring_pop_all(struct dlv_xring *x,
                                     struct dlv_job *list) {
  void *batch[DLV_XRING_BATCH];
  size_t n;
  while ((n = spsc_pop_batch(&x->q, batch, DLV_XRING_BATCH)) > 0) {
    for (size_t k = 0; k < n; k++) {
      struct dlv_job *j = batch[k];
      j->next = list;
      list = j;
    }
  }
  return list;
}

/* xring_take runs the jobs on x: adopted (handed over) or replayed
 * (back home). The wake flag is cleared first, so a push that the drain
 * misses sends a new wake. */
static void xring_take(struct worker *w, struct dlv_xring *x) {
  __atomic_exchange_n(&x->wake_pending, 0, __ATOMIC_ACQ_REL);
  void *batch[DLV_XRING_BATCH];
  size_t n;
  while ((n = spsc_pop_batch(&x->q, batch, DLV_XRING_BATCH)) > 0) {
    for (size_t k = 0; k < n; k++) {
      if (x->back) {
        dlv_replay(w, batch[k]);
      } else {
        dlv_adopt(w, batch[k]);
      }
    }
  }
}

/* dlv_job_stay: a due job runs here, on its home worker. */
static void dlv_job_stay(struct worker *w, struct dlv_job *j) {
  j->state = JOB_READY;
  j->xdest = j->dest;
  dest_push(j->dest, j);
  dest_activate(w->dlv, j->dest);
}

/* dlv_unhand: a handed-over job that never reached its owner (it left)
 * stays home after all. */
static void dlv_unhand(struct worker *w, struct dlv_job *j) {
  j->msg->in_flight--;
  w->dlv_remote_out--;
  dlv_job_stay(w, j);
}

/* dlv_handoff_recheck runs after a push onto the owner's ring: the owner
 * may have closed meanwhile. Its close stores dlv_closed and then drains;
 * we pushed and then load dlv_closed; with seq_cst fences on both sides
 * at least one sees the other. If we see it closed and its final drain
 * (under local_mu) is over, what is left on the ring is ours again. */
static void dlv_handoff_recheck(struct worker *w, struct worker *owner,
                                struct dlv_xring *x) {
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (!__atomic_load_n(&owner->dlv_closed, __ATOMIC_RELAXED)) {
    return; /* its final drain will see the push */
  }
  struct dlv_job *left = NULL;
  pthread_mutex_lock(&owner->local_mu);
  if (owner->dlv_xdrained) {
    left = xring_pop_all(x, NULL); /* the consumer's role is ours now */
  }
  pthread_mutex_unlock(&owner->local_mu);
  for (struct dlv_job *j = left, *next; j != NULL; j = next) {
    next = j->next;
    dlv_unhand(w, j);
  }
}

/* dlv_handoff_locked puts j on the owner's locked inbox (one eventfd
 * wake per batch: a non-empty inbox has a wake on its way). Returns 0
 * when the owner has left (j is then ours again). */
static int dlv_handoff_locked(struct worker *w, struct worker *owner,
                              struct dlv_job *j) {
  pthread_mutex_lock(&owner->local_mu);
  int closed = __atomic_load_n(&owner->dlv_closed, __ATOMIC_RELAXED);
  int wake = owner->dlv_inbox == NULL;
  if (!closed) {
    j->next = owner->dlv_inbox;
    owner->dlv_inbox = j;
  }
  pthread_mutex_unlock(&owner->local_mu);
  if (closed) {
    j->msg->in_flight--;
    w->dlv_remote_out--;
    return 0;
  }
  if (wake) {
    METRIC_ADD(w->dlv_xstats.wake_fd, 1);
    worker_wake(owner);
  }
  return 1;
}

/* dlv_handoff gives a due job to the worker that owns its destination:
 * on our ring to it while our loop runs, else (ring full, or recovery on
 * the main thread) on its locked inbox. Returns 0 when that worker has
 * left (the job stays here). */
static int dlv_handoff(struct worker *w, struct worker *owner,
                       struct dlv_job *j) {
  if (__atomic_load_n(&owner->dlv_closed, __ATOMIC_ACQUIRE)) {
    return 0;
  }
  j->state = JOB_FLIGHT; /* for the home side: out of its hands */
  j->msg->in_flight++;
  w->dlv_remote_out++;
  if (!w->dlv_loop) {
    METRIC_ADD(w->dlv_xstats.early, 1);
    return dlv_handoff_locked(w, owner, j);
  }
  struct dlv_xring *x = &owner->dlv_xin[w->index];
  if (xring_push(w, x, j)) {
    dlv_handoff_recheck(w, owner, x);
    return 1;
  }
  METRIC_ADD(w->dlv_xstats.overflow, 1);
  return dlv_handoff_locked(w, owner, j);
}

/* dlv_send_home returns a handed-over job to its home worker, which does
 * not leave while it has jobs out: on our ring to it, or when that is
 * full on its locked list (one eventfd wake per batch). */
static void dlv_send_home(struct worker *w, struct dlv_job *j) {
  struct worker *home = j->home;
  if (xring_push(w, &home->dlv_xback[w->index], j)) {
    return;
  }
  METRIC_ADD(w->dlv_xstats.overflow, 1);
  pthread_mutex_lock(&home->local_mu);
  int wake = home->dlv_back == NULL;
  j->next = home->dlv_back;
  home->dlv_back = j;
  pthread_mutex_unlock(&home->local_mu);
  if (wake) {
    METRIC_ADD(w->dlv_xstats.wake_fd, 1);
    worker_wake(home);
  }
}

/* dlv_job_ready: the job is due. Its destination belongs to one worker
 * (the hash of its name), which runs every attempt to it, so the
 * destination's connections and limits are shared by all the messages
 * of every worker. */
static void dlv_job_ready(struct worker *w, struct dlv_job *j) {
  if (job_open(j) == 0) {
    j->state = JOB_IDLE;
    return;
  }
  unsigned owner = (unsigned)(j->dest->hash % w->d->num_workers);
  if (owner != w->index && !w->stopping &&
      dlv_handoff(w, &w->d->workers[owner], j)) {
    return;
  }
  dlv_job_stay(w, j);
}

/* ---- the attempt side: outcomes go home ---- */

static void dlv_finish_rcpt(struct worker *w, struct dlv_job *j, size_t i,
                            enum dlv_result res, enum dlv_report rep,
                            const char *relay, const struct smtp_reply *reply);
static void dlv_defer_rcpt(struct worker *w, struct dlv_job *j, size_t i,
                           const char *relay, const struct smtp_reply *reply);

static void xo_record(struct dlv_job *j, size_t i, int deferred,
                      enum dlv_result res, enum dlv_report rep,
                      const char *relay, const struct smtp_reply *reply) {
  if (j->outcomes == NULL || j->num_outcomes >= j->num_rcpts) {
    return; /* no memory at adoption: the home worker defers them */
  }
  struct dlv_outcome *o = &j->outcomes[j->num_outcomes++];
  o->index = i;
  o->deferred = deferred;
  o->result = res;
  o->report = rep;
  snprintf(o->relay, sizeof(o->relay), "%.399s", relay ? relay : "");
  o->reply = *reply;
}

/* xo_finish / xo_defer: a recipient's outcome, applied now on the home
 * worker or recorded for it. */
static void xo_finish(struct worker *w, struct dlv_job *j, size_t i,
                      enum dlv_result res, enum dlv_report rep,
                      const char *relay, const struct smtp_reply *reply) {
  if (j->home == w) {
    dlv_finish_rcpt(w, j, i, res, rep, relay, reply);
  } else {
    xo_record(j, i, 0, res, rep, relay, reply);
  }
}

static void xo_defer(struct worker *w, struct dlv_job *j, size_t i,
                     const char *relay, const struct smtp_reply *reply) {
  if (j->home == w) {
    dlv_defer_rcpt(w, j, i, relay, reply);
  } else {
    xo_record(j, i, 1, DLV_DEFERRED, REPORT_NONE, relay, reply);
  }
}

/* xo_begin: an attempt starts (a handed-over job was counted at
 * hand-off). */
static void xo_begin(struct worker *w, struct dlv_job *j) {
  if (j->home == w) {
    j->state = JOB_FLIGHT;
    j->msg->in_flight++;
  }
}

/* xo_end: the attempt is over: finish it here, or send the job home with
 * its outcomes. */
static void xo_end(struct worker *w, struct dlv_job *j) {
  if (j->home == w) {
    dlv_after_attempt(w, j);
    return;
  }
  struct dlv_dest *d = j->xdest;
  j->xdest = NULL;
  d->num_jobs--;
  dest_activate(w->dlv, d); /* the scheduler frees it when unused */
  dlv_send_home(w, j);
}

/* ---- outcomes ---- */

static const char *const result_names[DLV_RESULT_COUNT] = {
    "delivered", "deferred", "bounced"};

/* dlv_log writes the one line of an attempt's outcome for a recipient. */
static void dlv_log(struct worker *w, const struct dlv_job *j,
                    const struct dlv_rcpt *rc, enum dlv_result res,
                    const char *relay, const struct smtp_reply *reply) {
  const struct dlv_msg *m = j->msg;
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
  log_str(&r, "dest", j->dest->name);
  log_str(&r, "relay", relay ? relay : "none");
  log_str(&r, "delay", delay);
  log_u64(&r, "attempts", j->attempts + 1);
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
  int subject =
      dsn[1] == '.' && dsn[2] >= '0' && dsn[2] <= '7' ? dsn[2] - '0' : 0;
  METRIC_ADD(w->m.dlv_reasons[res][subject], 1);
  if (res == DLV_DELIVERED) {
    metric_hist_observe(&w->m.dlv_seconds, &daemon_delivery_spec,
                        ms > 0 ? (double)ms / 1000.0 : 0.0);
  }
}

/* dlv_stage_done stages the DONE record of a finished recipient. */
static void dlv_stage_done_ctl(struct worker *w, struct dlv_msg *m,
                               struct dlv_rcpt *rc, enum spool_outcome outcome,
                               struct ctl_op *ctl) {
  struct commit *cm = calloc(1, sizeof(*cm));
  struct spool_done d = {
      .queue_id = m->loc.queue_id,
      .rcpt_index = rc->index,
      .outcome = (uint8_t)outcome,
      .when_ms = w->now_ms,
  };
  if (cm != NULL) {
    cm->queue_id = m->loc.queue_id;
    cm->done_for = m;
    cm->rec_len = delivery_done_record_len();
    cm->ctl = ctl;
  }
  if (cm == NULL || spool_writer_add_done(w->spool, &d, cm) != 0) {
    free(cm);
    log_msg("error",
            "qid=%s: cannot stage a DONE record; the recipient may be "
            "delivered again after a restart",
            m->qid);
    return;
  }
  if (ctl != NULL) {
    control_wait_record(ctl);
  }
  m->pending_dones++;
}

static void dlv_stage_done(struct worker *w, struct dlv_msg *m,
                           struct dlv_rcpt *rc, enum spool_outcome outcome) {
  dlv_stage_done_ctl(w, m, rc, outcome, NULL);
}

/* dlv_relay_host keeps the host of a "host[addr]:port", "host:port" or
 * "[v6]:port" relay text, for the DSN's Remote-MTA. */
static void dlv_relay_host(const char *relay, char *out, size_t out_len) {
  snprintf(out, out_len, "%s", relay ? relay : "");
  if (out[0] == '[') {
    char *end = strchr(out, ']');
    size_t n = end ? (size_t)(end - out - 1) : 0;
    memmove(out, out + 1, n);
    out[n] = '\0';
    return;
  }
  char *cut = strchr(out, '[');
  if (cut == NULL) {
    cut = strrchr(out, ':');
  }
  if (cut != NULL) {
    *cut = '\0';
  }
}

/* report_wanted: does the recipient's NOTIFY (RFC 3461 §4.1) ask for this
 * report? Without NOTIFY: failures and delays, never success. */
static int report_wanted(const struct dlv_msg *m, const struct dlv_rcpt *rc,
                         enum dlv_report rep) {
  if (m->sender[0] == '\0' || rep == REPORT_NONE) {
    return 0; /* never a report for a report */
  }
  unsigned n = rc->notify;
  switch (rep) {
  case REPORT_FAILED:
    return n == 0 || (n & SMTP_NOTIFY_FAILURE);
  case REPORT_DELAYED:
    return n == 0 || (n & SMTP_NOTIFY_DELAY);
  case REPORT_DELIVERED:
  case REPORT_RELAYED:
    return (n & SMTP_NOTIFY_SUCCESS) != 0;
  case REPORT_NONE:
    break;
  }
  return 0;
}

/* dlv_finish_rcpt logs a final outcome and stages its DONE record through
 * the group commit (after its report, when one is due). */
static void dlv_finish_rcpt(struct worker *w, struct dlv_job *j, size_t i,
                            enum dlv_result res, enum dlv_report rep,
                            const char *relay, const struct smtp_reply *reply) {
  struct dlv_msg *m = j->msg;
  struct dlv_rcpt *rc = &m->rcpts[i];
  if (rc->done) {
    return;
  }
  dlv_log(w, j, rc, res, relay, reply);
  rc->done = 1;
  m->num_open--;
  if (report_wanted(m, rc, rep)) {
    rc->reply = malloc(sizeof(*rc->reply));
    if (rc->reply != NULL) {
      *rc->reply = *reply;
      rc->report = rep;
      rc->result = res;
      dlv_relay_host(relay, rc->report_relay, sizeof(rc->report_relay));
      return; /* dlv_flush_reports stages the DSN, then the DONE */
    }
  }
  dlv_stage_done(w, m, rc,
                 res == DLV_DELIVERED ? SPOOL_OUTCOME_DELIVERED
                                      : SPOOL_OUTCOME_BOUNCED);
}

/* dlv_dsn_original finds the original message for a DSN: the body in
 * memory, or the spool record (a blocking read; reports are rare). */
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

static const enum dsn_action report_action[] = {
    [REPORT_FAILED] = DSN_ACTION_FAILED,
    [REPORT_DELAYED] = DSN_ACTION_DELAYED,
    [REPORT_DELIVERED] = DSN_ACTION_DELIVERED,
    [REPORT_RELAYED] = DSN_ACTION_RELAYED,
};

/* dlv_fill_dsn_rcpt describes one recipient for the DSN. */
static void dlv_fill_dsn_rcpt(const struct dlv_rcpt *rc, int64_t now_ms,
                              int64_t retry_ms, int64_t expire_ms,
                              struct dsn_rcpt *out) {
  const struct smtp_reply *r = rc->reply;
  const char *fallback = rc->report == REPORT_FAILED    ? "5.0.0"
                         : rc->report == REPORT_DELAYED ? "4.0.0"
                                                        : "2.0.0";
  int cls = r->code / 100;
  int fits = r->enhanced[0] != '\0' && r->enhanced[0] - '0' == cls;
  *out = (struct dsn_rcpt){
      .final_recipient = rc->addr,
      .original_recipient = rc->orcpt,
      .action = report_action[rc->report],
      .status = fits                                      ? r->enhanced
                : rc->report == REPORT_FAILED && cls == 4 ? "4.0.0"
                                                          : fallback,
      .remote_mta = rc->report_relay[0] ? rc->report_relay : NULL,
      .diag_code = r->local ? 0 : r->code,
      .diag_text = r->text,
      .last_attempt_ms = now_ms,
  };
  if (rc->report == REPORT_DELAYED) {
    out->will_retry_until_ms = expire_ms;
    (void)retry_ms;
  }
}

/* dlv_queue_dsn builds the RFC 3464 report of m's recipients with a
 * pending report and stages it as a new message from <> to the sender,
 * ahead of their DONE records. Returns 0, -1 when it could not be queued
 * now (memory, spool), -2 when no report can ever be built. */
static int dlv_queue_dsn(struct worker *w, struct dlv_msg *m) {
  struct dsn_rcpt *dr = calloc(m->num_rcpts, sizeof(*dr));
  struct commit *cm = calloc(1, sizeof(*cm));
  struct buf storage = {0}, rcpt_storage = {0};
  int rc = -1;
  size_t n = 0;
  const char *kind = "success";
  int64_t expire_ms =
      m->loc.arrival_ms + (int64_t)w->cfg->delivery_max_lifetime * 1000;
  for (size_t i = 0; dr != NULL && i < m->num_rcpts; i++) {
    const struct dlv_rcpt *r = &m->rcpts[i];
    if (r->report != REPORT_NONE && r->reply != NULL) {
      dlv_fill_dsn_rcpt(r, w->now_ms, 0, expire_ms, &dr[n++]);
      if (r->report == REPORT_FAILED) {
        kind = "failure";
      } else if (r->report == REPORT_DELAYED && strcmp(kind, "failure")) {
        kind = "delay";
      }
    }
  }
  if (dr == NULL || cm == NULL) {
    goto out;
  }
  if (n == 0) {
    rc = 0;
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
      /* RFC 8689 §5: a REQUIRETLS message's report carries its headers
       * only, whatever RET said: the report may travel less safely. */
      .ret = m->ret == SMTP_RET_FULL && !m->requiretls ? DSN_RET_FULL
                                                       : DSN_RET_HDRS,
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
  log_begin(&lr,
            strcmp(kind, "failure") == 0 ? "bounce_queued" : "report_queued");
  log_str(&lr, "qid", cm->msg->qid);
  log_str(&lr, "orig_qid", m->qid);
  log_str(&lr, "kind", kind);
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

/* dlv_flush_reports reports this attempt's outcomes that asked for one
 * and then stages their DONE records. If the DSN cannot be queued now,
 * failed recipients stay open and are tried again later (a bounce is
 * never finished without its report); delivered ones finish anyway. */
static void dlv_flush_reports(struct worker *w, struct dlv_msg *m) {
  int any = 0;
  for (size_t i = 0; i < m->num_rcpts; i++) {
    any |= m->rcpts[i].reply != NULL;
  }
  if (!any) {
    return;
  }
  int res = dlv_queue_dsn(w, m);
  int queued = res != -1;
  if (res == -2) {
    log_msg("error",
            "qid=%s: no report can be built for sender %s; the outcome is "
            "logged only",
            m->qid, m->sender);
  } else if (!queued) {
    log_msg("error", "qid=%s: cannot queue the report now; retried later",
            m->qid);
  }
  for (size_t i = 0; i < m->num_rcpts; i++) {
    struct dlv_rcpt *rc = &m->rcpts[i];
    if (rc->reply == NULL) {
      continue;
    }
    free(rc->reply);
    rc->reply = NULL;
    enum dlv_report rep = rc->report;
    rc->report = REPORT_NONE;
    if (rep == REPORT_DELAYED) {
      rc->delay_warned = queued;
    } else if (queued || rc->result == DLV_DELIVERED) {
      dlv_stage_done(w, m, rc,
                     rc->result == DLV_DELIVERED ? SPOOL_OUTCOME_DELIVERED
                                                 : SPOOL_OUTCOME_BOUNCED);
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

/* dlv_defer_rcpt logs a deferral and, past delivery.delay_warning, marks
 * the recipient for its one delay report. */
static void dlv_defer_rcpt(struct worker *w, struct dlv_job *j, size_t i,
                           const char *relay, const struct smtp_reply *reply) {
  struct dlv_msg *m = j->msg;
  struct dlv_rcpt *rc = &m->rcpts[i];
  dlv_log(w, j, rc, DLV_DEFERRED, relay, reply);
  unsigned warn = w->cfg->delivery_delay_warning;
  int64_t age = w->now_ms - m->loc.arrival_ms;
  if (warn > 0 && !rc->delay_warned && rc->reply == NULL &&
      age >= (int64_t)warn * 1000 && report_wanted(m, rc, REPORT_DELAYED)) {
    rc->reply = malloc(sizeof(*rc->reply));
    if (rc->reply != NULL) {
      *rc->reply = *reply;
      rc->report = REPORT_DELAYED;
      dlv_relay_host(relay, rc->report_relay, sizeof(rc->report_relay));
    }
  }
}

/* dlv_after_attempt: the job's attempt is over; its recipients are either
 * finished (DONEs staged), expired (bounced), or the job waits. */
static void dlv_after_attempt(struct worker *w, struct dlv_job *j) {
  struct dlv_msg *m = j->msg;
  m->in_flight--;
  int retry_now = j->retry_now;
  j->retry_now = 0;
  if (!retry_now) {
    j->attempts++;
  }
  if (m->deleted) {
    for (size_t k = 0; k < j->num_rcpts; k++) {
      struct dlv_rcpt *rc = &m->rcpts[j->rcpts[k]];
      if (!rc->done) {
        free(rc->reply); /* no "delayed" report for a deleted one */
        rc->reply = NULL;
        rc->report = REPORT_NONE;
        rc->done = 1;
        m->num_open--;
        dlv_stage_done(w, m, rc, SPOOL_OUTCOME_DELETED);
      }
    }
  }
  size_t open = job_open(j);
  int64_t age = w->now_ms - m->loc.arrival_ms;
  if (open > 0 && age >= (int64_t)w->cfg->delivery_max_lifetime * 1000) {
    struct smtp_reply r;
    smtp_reply_set(&r, 450, "4.4.7", "message expired");
    for (size_t k = 0; k < j->num_rcpts; k++) {
      struct dlv_rcpt *rc = &m->rcpts[j->rcpts[k]];
      if (rc->done) {
        continue; /* finished in this attempt, maybe with a report */
      }
      free(rc->reply); /* a pending delay report gives way */
      rc->reply = NULL;
      rc->report = REPORT_NONE;
      dlv_finish_rcpt(w, j, j->rcpts[k], DLV_BOUNCED, REPORT_FAILED, NULL, &r);
    }
    open = 0;
  }
  dlv_flush_reports(w, m); /* before the body may be dropped */
  open = job_open(j);
  if (m->in_flight == 0 && m->num_open > 0) {
    dlv_drop_body(w, m); /* re-read from the spool next time */
  }
  if (open == 0) {
    j->state = JOB_IDLE;
  } else if (m->held) {
    j->state = JOB_HELD;
  } else if (retry_now) {
    dlv_job_ready(w, j); /* the recipients the last transaction left */
  } else {
    j->state = JOB_WAITING;
    j->next_ms = w->now_ms + dlv_backoff_ms(w, j->attempts);
    if (heap_push(w->dlv, j) != 0) {
      /* No memory for the heap: the job waits for the next start (the
       * spool has it); retrying now could loop with its destination. */
      j->state = JOB_IDLE;
      log_msg("error",
              "qid=%s: out of memory scheduling a retry; retried after a "
              "restart",
              m->qid);
    }
  }
  dlv_msg_maybe_finish(w, m);
}

/* dlv_end_rest ends an attempt for every recipient still open: deferred
 * (no route yet, the next hop unreachable, a local error) or, with
 * permanent, bounced (NXDOMAIN, null MX, an error: transport).
 * dlv_end_job does the same for an attempt no connection carried. */
static void dlv_end_rest(struct worker *w, struct dlv_job *j, int permanent,
                         const char *relay, const struct smtp_reply *reply) {
  for (size_t k = 0; k < j->num_rcpts; k++) {
    if (j->msg->rcpts[j->rcpts[k]].done) {
      continue;
    }
    if (permanent) {
      xo_finish(w, j, j->rcpts[k], DLV_BOUNCED, REPORT_FAILED, relay, reply);
    } else {
      xo_defer(w, j, j->rcpts[k], relay, reply);
    }
  }
  xo_end(w, j);
}

static void dlv_end_job(struct worker *w, struct dlv_job *j, int permanent,
                        const char *relay, const struct smtp_reply *reply) {
  xo_begin(w, j);
  dlv_end_rest(w, j, permanent, relay, reply);
}

/* dest_end_ready ends the attempt of every due job of d (see
 * dlv_end_job). */
static void dest_end_ready(struct worker *w, struct dlv_dest *d, int permanent,
                           const char *relay, const struct smtp_reply *reply) {
  struct dlv_job *j;
  while ((j = dest_pop(d)) != NULL) {
    dlv_end_job(w, j, permanent, relay, reply);
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
  dc->job = NULL;
}

/* dlv_load_body points span at m's body: in memory, or re-read from its
 * spool record into storage. */
static int dlv_load_body(struct worker *w, struct dlv_msg *m,
                         struct buf *storage, struct buf *rcpt_storage,
                         struct smtp_client_span *span) {
  if (m->body.len > 0) {
    *span = (struct smtp_client_span){m->body.data, m->body.len};
    return 0;
  }
  /* Blocking pread on the loop thread: see the contract above. */
  struct spool_message sm;
  if (spool_read_message(w->d->spool_dir, &m->loc, storage, &sm,
                         rcpt_storage) != 0 ||
      sm.queue_id != m->loc.queue_id) {
    return -1; /* never another message's body */
  }
  *span = (struct smtp_client_span){sm.body, sm.body_len};
  return 0;
}

/* dlv_prepare fills the engine's view of a job: its open recipients and
 * the message body. */
static int dlv_prepare(struct worker *w, struct dlv_conn *dc,
                       struct dlv_job *j) {
  struct dlv_msg *m = j->msg;
  dc->crcpts = calloc(j->num_rcpts, sizeof(*dc->crcpts));
  dc->map = calloc(j->num_rcpts, sizeof(*dc->map));
  if (dc->crcpts == NULL || dc->map == NULL) {
    return -1;
  }
  size_t n = 0;
  for (size_t k = 0; k < j->num_rcpts; k++) {
    struct dlv_rcpt *rc = &m->rcpts[j->rcpts[k]];
    if (!rc->done) {
      dc->crcpts[n] =
          (struct smtp_client_rcpt){rc->addr, rc->notify, rc->orcpt};
      dc->map[n++] = j->rcpts[k];
    }
  }
  if (n == 0 ||
      dlv_load_body(w, m, &dc->storage, &dc->rcpt_storage, &dc->span) != 0) {
    return -1;
  }
  dc->cm = (struct smtp_client_message){
      .sender = m->sender,
      .ret = (enum smtp_ret)m->ret,
      .envid = m->envid,
      .body_8bit = m->body_type == SMTP_BODY_8BITMIME,
      .smtputf8 = m->smtputf8,
      .requiretls = dlv_msg_requiretls(m, dc->dest),
      .rcpts = dc->crcpts,
      .num_rcpts = n,
      .body = &dc->span,
      .num_body = 1,
  };
  return 0;
}

static void dlv_idle_remove(struct conn *c) {
  struct dlv_conn *dc = c->dlv;
  if (!dc->idle) {
    return;
  }
  dc->idle = 0;
  for (struct conn **pp = &dc->dest->idle; *pp != NULL;
       pp = &(*pp)->dlv->idle_next) {
    if (*pp == c) {
      *pp = dc->idle_next;
      break;
    }
  }
  dc->idle_next = NULL;
}

/* dlv_msg_requiretls: 1 if m must travel under REQUIRETLS rules to d:
 * tagged, not a report (§5's duties bind a non-empty return path), and
 * relayed over SMTP; LMTP (like Maildir) is final delivery here, which
 * RFC 8689 leaves to the receiving system. */
static int dlv_msg_requiretls(const struct dlv_msg *m,
                              const struct dlv_dest *d) {
  return m->requiretls && m->sender[0] != '\0' &&
         (d->route.kind == ROUTE_SMTP_MX || d->route.kind == ROUTE_SMTP_HOST);
}

/* dlv_requiretls: NULL if a REQUIRETLS message may go on this
 * connection, else why not (RFC 8689 §5): TLS is up, the certificate was
 * verified for the next-hop name (PKIX or DANE), and that name is
 * trustworthy: DANE (validated MX and TLSA), or a next hop the operator
 * named (transport or relayhost: no MX lookup an attacker could answer).
 * The engine then checks that the server offers REQUIRETLS. */
static const char *dlv_requiretls(const struct conn *c) {
  const struct dlv_conn *dc = c->dlv;
  if (c->tls == NULL || !c->tls_ready) {
    return "the next hop did not use TLS";
  }
  enum tls_verify_result vr = tls_verify(c->tls);
  if (vr == TLS_VERIFY_DANE_OK) {
    return NULL;
  }
  if (vr != TLS_VERIFY_OK) {
    return "the next hop's certificate was not verified";
  }
  if (dc->dest->route.kind == ROUTE_SMTP_MX && !dc->sts_enforce) {
    return "the MX host name is not authenticated (no DNSSEC, no MTA-STS)";
  }
  return NULL;
}

/* dlv_start_job hands a due job to the connection. 0, or -1 when the job
 * could not start (it was deferred). */
static int dlv_start_job(struct conn *c, struct dlv_job *j) {
  struct worker *w = c->w;
  struct dlv_conn *dc = c->dlv;
  xo_begin(w, j);
  /* §5's duties hold for a non-empty return path; a report about such a
   * message carries headers only instead. */
  int requiretls = dlv_msg_requiretls(j->msg, dc->dest);
  const char *why = requiretls ? dlv_requiretls(c) : NULL;
  if (why != NULL) {
    /* RFC 8689 §5: never sent where TLS is not assured; a bounce. */
    struct smtp_reply r;
    char text[300];
    snprintf(text, sizeof(text), "REQUIRETLS support required: %s", why);
    smtp_reply_set(&r, 550, "5.7.30", text);
    dlv_end_rest(w, j, 1, dc->relay, &r);
    return -1;
  }
  if (dlv_prepare(w, dc, j) == 0 &&
      smtp_client_send_message(dc->cl, &dc->cm) == 0) {
    dc->job = j;
    METRIC_ADD(w->m.dlv_conns_reused, dc->num_msgs > 0 ? 1 : 0);
    dc->num_msgs++;
    return 0;
  }
  dlv_conn_release_attempt(dc);
  struct smtp_reply r;
  smtp_reply_set(&r, 451, "4.3.0", "local error: cannot send the message");
  dlv_end_rest(w, j, 0, dc->relay, &r);
  return -1;
}

/* dlv_on_ready: the session is idle: send the destination's next due job;
 * with none due (or the rate limit says wait), wait DLV_IDLE_MS in the
 * idle list; QUIT when the connection carried its share, the wait ran
 * out, or we stop. */
static void dlv_on_ready(struct conn *c) {
  struct worker *w = c->w;
  struct dlv_conn *dc = c->dlv;
  struct dlv_dest *d = dc->dest;
  if (dc->starting) {
    dc->starting = 0;
    d->num_starting--;
    d->num_failed = 0;
    if (c->tls == NULL) {
      dlv_tlsrpt(c, TLSRPT_EV_PLAINTEXT, NULL);
    }
  }
  while (!w->stopping &&
         dc->num_msgs < w->cfg->delivery_messages_per_connection) {
    int64_t wait_ms = 0;
    if (!dest_may_send(w, d, &wait_ms)) {
      if (wait_ms > DLV_IDLE_MS) {
        break; /* a full throttle window: no connection waits that long */
      }
      dc->idle = 1;
      dc->idle_until = w->now_ms + DLV_IDLE_MS;
      dc->idle_next = d->idle;
      d->idle = c;
      dest_activate(w->dlv, d);
      return;
    }
    if (dlv_start_job(c, dest_pop(d)) == 0) {
      return;
    }
  }
  smtp_client_quit(dc->cl);
}

static void dlv_on_message_done(struct conn *c) {
  struct worker *w = c->w;
  struct dlv_conn *dc = c->dlv;
  struct dlv_job *j = dc->job;
  if (j == NULL) {
    return;
  }
  int lmtp = dc->dest->route.kind == ROUTE_LMTP_TCP ||
             dc->dest->route.kind == ROUTE_LMTP_UNIX;
  /* RFC 3461 §5.2.2.1: a next hop that does not speak DSN gets no
   * NOTIFY; we report "relayed" for it. With DSN the next hop reports. */
  int next_dsn = (smtp_client_extensions(dc->cl) & SMTP_CLIENT_EXT_DSN) != 0;
  enum dlv_report ok_report = lmtp       ? REPORT_DELIVERED
                              : next_dsn ? REPORT_NONE
                                         : REPORT_RELAYED;
  int progress = 0, too_many = 0;
  for (size_t k = 0; k < dc->cm.num_rcpts; k++) {
    struct smtp_reply reply;
    enum smtp_client_status st = smtp_client_rcpt_result(dc->cl, k, &reply);
    size_t i = dc->map[k];
    if (st == SMTP_CLIENT_OK) {
      progress = 1;
      xo_finish(w, j, i, DLV_DELIVERED, ok_report, dc->relay, &reply);
    } else if (st == SMTP_CLIENT_FAIL) {
      progress = 1;
      xo_finish(w, j, i, DLV_BOUNCED, REPORT_FAILED, dc->relay, &reply);
    } else {
      too_many |= reply.code == 452 && !lmtp;
      xo_defer(w, j, i, dc->relay, &reply);
    }
  }
  /* Only with progress: a server that says 452 to every recipient is
   * full, and waits like any deferral. */
  j->retry_now = progress && too_many;
  dlv_conn_release_attempt(dc);
  xo_end(w, j);
}

/* dest_site_failed: a connection failed before it could carry a message.
 * The next connection tries the next address (RFC 5321 §5.1: the next
 * MX); once every address failed and no other connection is up, the due
 * jobs are deferred and new connects pause, so a refusing host is not
 * hammered. */
static void dest_site_failed(struct worker *w, struct dlv_dest *d,
                             size_t addr_index, const char *relay,
                             const struct smtp_reply *reply) {
  if (d->num_addrs > 0 && addr_index == d->addr_next) {
    d->addr_next = (d->addr_next + 1) % d->num_addrs;
  }
  d->num_failed++;
  if (d->num_failed >= (d->num_addrs ? d->num_addrs : 1)) {
    d->num_failed = 0;
    d->hold_until_ms = w->now_ms + DLV_HOLD_MS;
    if (d->num_conns - d->num_starting == 0) {
      dest_end_ready(w, d, 0, relay, reply);
    }
  }
  dest_activate(w->dlv, d);
}

static void dlv_on_session_error(struct conn *c) {
  struct dlv_conn *dc = c->dlv;
  const struct smtp_reply *reply = smtp_client_reply(dc->cl);
  struct log_rec r;
  log_begin(&r, "delivery_session_error");
  log_str(&r, "dest", dc->dest->name);
  log_str(&r, "relay", dc->relay);
  log_i64(&r, "code", reply->code);
  log_str(&r, "text", reply->text);
  log_end(&r);
  /* The engine's own 4.7.4: STARTTLS missing or refused where the policy
   * requires TLS (a stripping attacker looks exactly like this). */
  if (reply->local && strcmp(reply->enhanced, "4.7.4") == 0) {
    METRIC_ADD(c->w->m.tls_policy_failures[TLS_PF_NOT_OFFERED], 1);
    dlv_tlsrpt(c, TLSRPT_EV_NO_STARTTLS, reply->text);
  }
  if (dc->starting) {
    dest_site_failed(c->w, dc->dest, dc->addr_index, dc->relay, reply);
  }
}

static int dlv_take_output(void *arg, struct buf *b) {
  return smtp_client_output_take(arg, b);
}

/* dlv_move_output hands the engine's bytes to the socket, keeping at most
 * about DLV_SEND_HIGH queued (the engine produces the body as it drains;
 * worker_on_send calls delivery_pump for more). When the socket is idle
 * the engine's buffer itself goes out (the two trade buffers). */
static void dlv_move_output(struct conn *c) {
  struct smtp_client *cl = c->dlv->cl;
  for (int i = 0;
       i < 64 && !c->shut && c->dlv != NULL && conn_unsent(c) < DLV_SEND_HIGH;
       i++) {
    if (conn_send_take(c, dlv_take_output, cl)) {
      continue; /* the engine's buffer went out as it is: no copy */
    }
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
 * state, or the idle wait. */
static void dlv_set_deadline(struct conn *c) {
  if (c->tls != NULL && !c->tls_ready) {
    return; /* the handshake's deadline (dlv_start_tls) */
  }
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
      if (dc->idle) {
        dlv_set_deadline(c);
        return;
      }
      break;
    case SMTP_CLIENT_EV_RCPT_RESULT:
      break;
    case SMTP_CLIENT_EV_STARTTLS:
      dlv_move_output(c);
      dlv_start_tls(c);
      if (c->tls != NULL) {
        return; /* the engine waits for delivery_on_tls_ready */
      }
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

/* dlv_tls_entry_matches: a tls.policies domain ("example.com" exactly,
 * ".example.com" its subdomains) against a next-hop domain. */
static int dlv_tls_entry_matches(const char *p, const char *domain) {
  size_t pl = strlen(p), dl = strlen(domain);
  return strcasecmp(p, domain) == 0 ||
         (p[0] == '.' && dl > pl && strcasecmp(domain + dl - pl, p) == 0);
}

/* dlv_tls_named: 1 if a tls.policies entry names this domain itself or
 * a parent (".suffix"); "*" does not count: a catch-all level is no
 * statement about one domain, so it does not switch MTA-STS off. */
static int dlv_tls_named(const struct config *cfg, const char *domain) {
  for (size_t i = 0; i < cfg->num_tls_policies; i++) {
    const char *p = cfg->tls_policies[i].domain;
    if (strcmp(p, "*") != 0 && dlv_tls_entry_matches(p, domain)) {
      return 1;
    }
  }
  return 0;
}

/* dlv_tls_listed: 1 if tls.policies names this domain (or "*"). */
static int dlv_tls_listed(const struct config *cfg, const char *domain) {
  for (size_t i = 0; i < cfg->num_tls_policies; i++) {
    const char *p = cfg->tls_policies[i].domain;
    if (strcmp(p, "*") == 0 || dlv_tls_entry_matches(p, domain)) {
      return 1;
    }
  }
  return 0;
}

/* dlv_start_tls: the server said 220 to STARTTLS; the handshake starts
 * (the ClientHello leaves now) and the engine waits for it. */
static void dlv_start_tls(struct conn *c) {
  struct dlv_conn *dc = c->dlv;
  struct runtime *rt = cfg_runtime(c->w->cfg);
  char key[700];
  snprintf(key, sizeof(key), "%.300s|%.63s", dc->dest->name, c->peer_text);
  struct tls_client_params p = {
      .sni = dc->tls_host,
      .names = {dc->tls_host},
      .num_names = 1,
      .session_key = key,
  };
  dane_tls_params(c, &p, key, sizeof(key));
  c->tls = tls_new_client(rt->tls_client, &p);
  if (c->tls == NULL) {
    smtp_client_tls_failed(dc->cl, "out of memory");
    return;
  }
  c->tls_ready = 0;
  conn_tls_flush(c);
  c->deadline_ms = c->w->now_ms + (int64_t)c->w->cfg->timeout_command * 1000;
}

void delivery_on_tls_ready(struct conn *c) {
  struct dlv_conn *dc = c->dlv;
  if (dc == NULL) {
    return;
  }
  enum tls_verify_result vr = tls_verify(c->tls);
  struct log_rec r;
  log_begin(&r, "tls");
  log_str(&r, "dest", dc->dest->name);
  log_str(&r, "relay", dc->relay);
  log_str(&r, "version", tls_version(c->tls));
  log_str(&r, "cipher", tls_cipher(c->tls));
  log_u64(&r, "resumed", (uint64_t)tls_session_reused(c->tls));
  log_str(&r, "verified",
          vr == TLS_VERIFY_OK        ? "yes"
          : vr == TLS_VERIFY_DANE_OK ? "dane"
                                     : "no");
  if (vr == TLS_VERIFY_FAILED) {
    log_str(&r, "verify_error", tls_verify_error(c->tls));
  }
  log_str(&r, "policy",
          dc->sts_enforce   ? "mta-sts"
          : dc->sts_testing ? "mta-sts-testing"
                            : config_tls_level_name(dc->tls_level));
  log_end(&r);
  if (dc->sts_testing && vr != TLS_VERIFY_OK) {
    /* RFC 8461 §5: testing mode delivers, and reports what failed. */
    struct log_rec t;
    log_begin(&t, "mta_sts_testing_failure");
    log_str(&t, "dest", dc->dest->name);
    log_str(&t, "relay", dc->relay);
    log_str(&t, "reason", tls_verify_error(c->tls));
    log_end(&t);
  }
  dlv_tlsrpt(c, TLSRPT_EV_TLS_READY, NULL);
  if (dc->tls_level == CONFIG_TLS_DANE) {
    dane_tls_ready(c, vr); /* a TLSA record must have matched */
  } else if (dc->tls_level == CONFIG_TLS_VERIFY && vr != TLS_VERIFY_OK) {
    char why[300];
    snprintf(why, sizeof(why), "server certificate not verified: %.200s",
             tls_verify_error(c->tls));
    METRIC_ADD(c->w->m.tls_policy_failures[TLS_PF_VERIFY], 1);
    smtp_client_tls_failed(dc->cl, why);
  } else {
    smtp_client_tls_started(dc->cl); /* EHLO again, inside TLS */
  }
  delivery_pump(c);
}

void delivery_on_tls_error(struct conn *c, const char *why) {
  struct dlv_conn *dc = c->dlv;
  if (dc == NULL) {
    return;
  }
  char text[300];
  snprintf(text, sizeof(text), "%.250s", why);
  /* A session whose handshake had succeeded (counted as such) just
   * broke: not a policy failure, and no reason to fall back to
   * plaintext. */
  if (!c->tls_ready) {
    if (dc->tls_level == CONFIG_TLS_MAY) {
      dc->dest->tls_plain_until_ms = c->w->now_ms + 3600 * 1000;
    } else {
      METRIC_ADD(c->w->m.tls_policy_failures[TLS_PF_HANDSHAKE], 1);
    }
    dlv_tlsrpt(c, TLSRPT_EV_TLS_ERROR, text);
  }
  smtp_client_tls_failed(dc->cl, text);
  delivery_pump(c);
}

/* dlv_tls_level: the TLS policy for a new connection to d, per next-hop
 * domain. LMTP is local delivery (a unix socket or a host we name
 * ourselves): plaintext unless a policy names it. */
static enum config_tls_level dlv_tls_level(const struct worker *w,
                                           const struct dlv_dest *d) {
  int lmtp =
      d->route.kind == ROUTE_LMTP_TCP || d->route.kind == ROUTE_LMTP_UNIX;
  if (lmtp && !dlv_tls_listed(w->cfg, d->lookup)) {
    return CONFIG_TLS_NONE;
  }
  return config_tls_level(w->cfg, d->lookup);
}

/* dlv_may_level: "may" after a failed handshake here is plaintext for a
 * while (delivery_on_tls_error). */
static enum config_tls_level dlv_may_level(const struct worker *w,
                                           const struct dlv_dest *d,
                                           enum config_tls_level level) {
  if (level == CONFIG_TLS_MAY && w->now_ms < d->tls_plain_until_ms) {
    return CONFIG_TLS_NONE;
  }
  return level;
}

/* dlv_client_new makes the SMTP (LMTP) engine of a connection to d at a
 * decided TLS level (for dane: after the TLSA lookup). NULL: no memory. */
static struct smtp_client *dlv_client_new(const struct worker *w,
                                          const struct dlv_dest *d,
                                          enum config_tls_level level) {
  struct smtp_client_config cc;
  smtp_client_config_default(&cc);
  cc.helo_name = w->cfg->hostname;
  cc.lmtp = d->route.kind == ROUTE_LMTP_TCP || d->route.kind == ROUTE_LMTP_UNIX;
  cc.tls = level == CONFIG_TLS_NONE  ? SMTP_CLIENT_TLS_NONE
           : level == CONFIG_TLS_MAY ? SMTP_CLIENT_TLS_MAY
                                     : SMTP_CLIENT_TLS_REQUIRE;
  if (cc.limits.max_rcpts < w->cfg->recipient_limit) {
    cc.limits.max_rcpts = w->cfg->recipient_limit;
  }
  return smtp_client_new(&cc);
}

/* dlv_submit_connect starts the connect of c, timed by
 * delivery.connect_timeout. */
static void dlv_submit_connect(struct conn *c) {
  struct worker *w = c->w;
  struct dlv_conn *dc = c->dlv;
  c->deadline_ms = w->now_ms + (int64_t)w->cfg->delivery_connect_timeout * 1000;
  struct io_uring_sqe *sqe = worker_get_sqe(w);
  io_uring_prep_connect(sqe, c->fd, (struct sockaddr *)&dc->addr, dc->addr_len);
  io_uring_sqe_set_data64(sqe, op_tag(c, OP_CONNECT));
  c->num_ops++;
}

/* dlv_connect opens one connection to the destination's next address.
 * Returns 0, or -1 when no connection could be started (local error). */
static int dlv_connect(struct worker *w, struct dlv_dest *d) {
  struct sockaddr_storage ss;
  socklen_t ss_len;
  char relay[400];
  size_t ai = 0;
  if (d->route.kind == ROUTE_LMTP_UNIX) {
    struct sockaddr_un *sun = (struct sockaddr_un *)&ss;
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    size_t plen = strnlen(d->route.path, sizeof(sun->sun_path) - 1);
    memcpy(sun->sun_path, d->route.path, plen); /* route_parse: < 108 */
    ss_len = sizeof(*sun);
    snprintf(relay, sizeof(relay), "unix:%.300s", d->route.path);
  } else {
    ai = d->addr_next % d->num_addrs;
    /* MTA-STS enforce: only MX hosts the policy names (dest_sts_check
     * made sure there is one). */
    for (size_t k = 0; k < d->num_addrs && !dest_sts_addr(d, ai); k++) {
      d->addr_next++;
      ai = d->addr_next % d->num_addrs;
    }
    ss = d->addrs[ai];
    char text[64] = "?";
    sockaddr_format((struct sockaddr *)&ss, text, sizeof(text));
    if (ss.ss_family == AF_INET6) {
      ((struct sockaddr_in6 *)&ss)->sin6_port = htons(d->route.port);
      ss_len = sizeof(struct sockaddr_in6);
    } else {
      ((struct sockaddr_in *)&ss)->sin_port = htons(d->route.port);
      ss_len = sizeof(struct sockaddr_in);
    }
    snprintf(relay, sizeof(relay), "%s[%s]:%u", d->addr_host[ai], text,
             d->route.port);
  }
  enum config_tls_level level = dlv_tls_level(w, d);
  /* dane: a host with secure records gets its TLSA lookup first, whose
   * answer decides the level (dane_on_tlsa); any other host acts as may
   * (RFC 7672 §2.2.1). */
  struct dlv_dane *dn = NULL;
  if (level == CONFIG_TLS_DANE) {
    if (dane_begin(w, d, ai, relay, &dn) != 0) {
      return -1;
    }
    level = dn != NULL ? CONFIG_TLS_DANE : CONFIG_TLS_MAY;
  }
  /* MTA-STS: enforce means TLS with a certificate verified for the MX
   * host. DANE wins only where the host has usable TLSA records (RFC 8461
   * §2): a DANE host waits for its TLSA answer, which then keeps or drops
   * these flags (dane_on_tlsa). */
  int sts_enforce = 0, sts_testing = 0;
  if (d->sts != NULL && level != CONFIG_TLS_NONE) {
    sts_enforce = d->sts->mode == MTA_STS_MODE_ENFORCE;
    sts_testing = !sts_enforce;
    if (sts_enforce && level < CONFIG_TLS_VERIFY) {
      level = CONFIG_TLS_VERIFY;
    }
  }
  level = dlv_may_level(w, d, level);
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct dlv_conn *dc = calloc(1, sizeof(*dc));
  struct smtp_client *cl = dn == NULL ? dlv_client_new(w, d, level) : NULL;
  struct conn *c = NULL;
  if (fd >= 0 && dc != NULL && (cl != NULL || dn != NULL)) {
    c = conn_new_outbound(w, fd);
  }
  if (c == NULL) {
    smtp_client_free(cl);
    free(dc);
    dane_free(w, dn);
    if (fd >= 0) {
      close(fd);
    }
    return -1;
  }
  dc->addr = ss;
  dc->addr_len = ss_len;
  dc->addr_index = ai;
  dc->cl = cl;
  dc->dest = d;
  dc->starting = 1;
  dc->tls_level = level;
  dc->sts_enforce = sts_enforce;
  dc->sts_testing = sts_testing;
  snprintf(dc->tls_host, sizeof(dc->tls_host), "%s",
           d->route.kind == ROUTE_LMTP_UNIX ? "localhost" : d->addr_host[ai]);
  snprintf(dc->relay, sizeof(dc->relay), "%s", relay);
  snprintf(c->peer_text, sizeof(c->peer_text), "%.63s", relay);
  c->dlv = dc;
  c->connecting = 1;
  d->num_conns++;
  d->num_starting++;
  w->dlv_num_conns++;
  METRIC_ADD(w->m.dlv_conns_opened, 1);
  if (dn != NULL) {
    dane_attach(c, dn); /* the connect waits for the TLSA answer */
    return 0;
  }
  dlv_submit_connect(c);
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
    struct log_rec lr;
    log_begin(&lr, "connect_failed");
    log_str(&lr, "dest", dc->dest->name);
    log_str(&lr, "relay", dc->relay);
    log_str(&lr, "reason", text);
    log_end(&lr);
    /* Still counted as starting until freed: "up" counts others only. */
    dest_site_failed(w, dc->dest, dc->addr_index, dc->relay, &r);
    c->closing = 1;
    c->shut = 1; /* nothing was ever sent: no shutdown(2) needed */
    conn_maybe_free(c);
    return;
  }
  int one = 1;
  if (dc->addr.ss_family != AF_UNIX) {
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  conn_start_recv(c);
  delivery_pump(c);
}

/* delivery_conn_tick runs an outbound connection's timers: the connect
 * timeout, the engine's RFC 5321 §4.5.3.2 timeouts, the idle wait, and on
 * a forced stop the end of whatever is in flight (deferred). */
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
    if (dane_tick(c, expired, force)) {
      return; /* the TLSA lookup runs before the connect */
    }
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
  struct dlv_dest *d = dc->dest;
  if (dc->job != NULL) {
    /* The engine always reports MESSAGE_DONE before CLOSED; this only
     * covers a connection torn down underneath it. */
    struct dlv_job *j = dc->job;
    dlv_conn_release_attempt(dc);
    struct smtp_reply r;
    smtp_reply_set(&r, 451, "4.4.2", "connection lost");
    dlv_end_rest(w, j, 0, dc->relay, &r);
  }
  if (dc->starting) {
    d->num_starting--;
  }
  dlv_idle_remove(c);
  d->num_conns--;
  w->dlv_num_conns--;
  dlv_conn_release_attempt(dc);
  smtp_client_free(dc->cl);
  dane_free(w, dc->dane);
  free(dc);
  c->dlv = NULL;
  dest_activate(w->dlv, d); /* the scheduler may free it or reconnect */
}

/* ---- DANE (RFC 7672) ---- */

/* One connection's DANE state at the dane level: the TLSA lookup that
 * runs before the connect, then the usable records for the handshake.
 * Freed with the connection (delivery_conn_free). */
struct dlv_dane {
  struct conn *c;  /* set by dane_attach */
  uint64_t handle; /* the TLSA lookup in flight; 0 once answered */
  char qname[DNS_NAME_TEXT_MAX + 16]; /* _port._tcp.host */
  size_t num_tlsa;
  struct tls_tlsa tlsa[TLS_MAX_TLSA];
  uint8_t *data; /* the records' data, one allocation */
};

/* dane_host_secure: may the TLSA records of this target count? Its
 * address records were validated, and with MX routing so was the MX
 * answer (RFC 7672 §2.2.1); "[host]" routes have no MX (§2.2.2). */
static int dane_host_secure(const struct dlv_dest *d,
                            const struct dns_route *route,
                            const struct dns_target *tg) {
  if (!tg->secure) {
    return 0;
  }
  return d->route.kind != ROUTE_SMTP_MX || route->mx_secure;
}

/* dane_log writes the one line of a DANE decision for a connection:
 * tlsa=N usable records, or unusable, none, insecure, failed. */
static void dane_log(const struct dlv_dest *d, const char *host,
                     const char *relay, const char *tlsa, const char *why) {
  struct log_rec r;
  log_begin(&r, "dane");
  log_str(&r, "dest", d->name);
  log_str(&r, "host", host);
  log_str(&r, "relay", relay);
  log_str(&r, "tlsa", tlsa);
  if (why != NULL) {
    log_str(&r, "why", why);
  }
  log_end(&r);
}

static void dane_on_tlsa(void *arg, const struct dns_answer *a);

/* dane_begin: the connection about to go to address ai of d is at the
 * dane level. If DANE applies to that host, its TLSA lookup starts and
 * *out is the state for dane_attach; else *out is NULL (logged: the host
 * acts as may). Returns 0, or -1 out of memory. */
static int dane_begin(struct worker *w, struct dlv_dest *d, size_t ai,
                      const char *relay, struct dlv_dane **out) {
  *out = NULL;
  int tcp = d->route.kind == ROUTE_SMTP_MX ||
            d->route.kind == ROUTE_SMTP_HOST || d->route.kind == ROUTE_LMTP_TCP;
  if (!tcp || ai >= d->num_addrs || !d->addr_dane[ai]) {
    dane_log(d, tcp ? d->addr_host[ai] : d->lookup, relay, "insecure",
             "MX or address records not DNSSEC-validated");
    return 0;
  }
  if (w->dns == NULL) {
    return -1; /* dest_route: no route without a resolver */
  }
  struct dlv_dane *dn = calloc(1, sizeof(*dn));
  if (dn == NULL) {
    return -1;
  }
  /* RFC 6698 §3, RFC 7672 §2.2.3: _port._tcp.<MX host>. A name too long
   * for the DNS fails the lookup: a DANE failure, never a cut name. */
  snprintf(dn->qname, sizeof(dn->qname), "_%u._tcp.%s", d->route.port,
           d->addr_host[ai]);
  dn->handle = dns_query(w->dns, dn->qname, DNS_TYPE_TLSA, dane_on_tlsa, dn);
  if (dn->handle == 0) {
    free(dn);
    return -1;
  }
  *out = dn;
  return 0;
}

/* dane_attach joins the state to its connection, which waits for the
 * TLSA answer within delivery.connect_timeout (c-ares bounds it too). */
static void dane_attach(struct conn *c, struct dlv_dane *dn) {
  dn->c = c;
  c->dlv->dane = dn;
  c->deadline_ms =
      c->w->now_ms + (int64_t)c->w->cfg->delivery_connect_timeout * 1000;
}

static void dane_free(struct worker *w, struct dlv_dane *dn) {
  if (dn == NULL) {
    return;
  }
  if (dn->handle != 0 && w->dns != NULL) {
    dns_cancel(w->dns, dn->handle);
  }
  free(dn->data);
  free(dn);
}

/* dane_keep copies the usable records (the first TLS_MAX_TLSA) of a
 * TLSA answer, which lives only during its callback. 0, or -1. */
static int dane_keep(struct dlv_dane *dn, const struct dns_answer *a) {
  size_t total = 0, kept = 0;
  for (size_t i = 0; i < a->num_rrs && kept < TLS_MAX_TLSA; i++) {
    if (dns_tlsa_usable(&a->rrs[i])) {
      total += a->rrs[i].rd.tlsa.data_len;
      kept++;
    }
  }
  dn->data = malloc(total > 0 ? total : 1);
  if (dn->data == NULL) {
    return -1;
  }
  size_t off = 0;
  for (size_t i = 0; i < a->num_rrs && dn->num_tlsa < kept; i++) {
    const struct dns_rr *rr = &a->rrs[i];
    if (!dns_tlsa_usable(rr)) {
      continue;
    }
    memcpy(dn->data + off, rr->rd.tlsa.data, rr->rd.tlsa.data_len);
    dn->tlsa[dn->num_tlsa++] = (struct tls_tlsa){
        .usage = rr->rd.tlsa.usage,
        .selector = rr->rd.tlsa.selector,
        .mtype = rr->rd.tlsa.mtype,
        .data = dn->data + off,
        .data_len = rr->rd.tlsa.data_len,
    };
    off += rr->rd.tlsa.data_len;
  }
  return 0;
}

/* dane_conn_fail ends a connection that failed its TLSA step, before
 * any connect, as a failed connect: the next address is tried (RFC 7672
 * §2.2: never this host in plaintext), and once every address failed the
 * due jobs are deferred with this reply. */
static void dane_conn_fail(struct conn *c, const char *enhanced,
                           const char *text) {
  struct dlv_conn *dc = c->dlv;
  struct smtp_reply r;
  smtp_reply_set(&r, 451, enhanced, text);
  c->connecting = 0;
  /* Still counted as starting until freed: "up" counts others only. */
  dest_site_failed(c->w, dc->dest, dc->addr_index, dc->relay, &r);
  c->closing = 1;
  c->shut = 1; /* nothing was ever sent: no shutdown(2) needed */
  conn_maybe_free(c);
}

/* dane_level: the TLS level a TLSA verdict gives the host (RFC 7672
 * §2.2): usable records, TLS with a match; secure but unusable ones, TLS
 * without authentication; none or insecure, may. */
static enum config_tls_level
dane_level(const struct worker *w, const struct dlv_dest *d, enum dns_dane v) {
  switch (v) {
  case DNS_DANE_USABLE:
    return CONFIG_TLS_DANE;
  case DNS_DANE_UNUSABLE:
    return CONFIG_TLS_ENCRYPT;
  default:
    return dlv_may_level(w, d, CONFIG_TLS_MAY);
  }
}

/* dane_on_tlsa: the TLSA answer decides the connection's TLS level, and
 * the connect starts; a failed lookup fails the connection. */
static void dane_on_tlsa(void *arg, const struct dns_answer *a) {
  struct dlv_dane *dn = arg;
  struct conn *c = dn->c;
  struct worker *w = c->w;
  struct dlv_conn *dc = c->dlv;
  dn->handle = 0;
  size_t n = 0;
  enum dns_dane v = dns_dane_verdict(a, &n);
  char count[32];
  snprintf(count, sizeof(count), "%zu", n);
  const char *why = v == DNS_DANE_FAILED && a->why != NULL ? a->why : NULL;
  dane_log(dc->dest, dc->tls_host, dc->relay,
           v == DNS_DANE_USABLE ? count : dns_dane_name(v), why);
  if (v == DNS_DANE_FAILED) {
    char text[SMTP_REPLY_MAX_TEXT];
    snprintf(text, sizeof(text), "TLSA lookup for %.260s failed: %.100s",
             dn->qname, why != NULL ? why : "unknown error");
    METRIC_ADD(w->m.tls_policy_failures[TLS_PF_DANE], 1);
    dlv_tlsrpt(c, TLSRPT_EV_TLSA_FAILED, text);
    dane_conn_fail(c, "4.7.5", text);
    return;
  }
  if (w->stopping) {
    dane_conn_fail(c, "4.4.1", "connect cancelled by shutdown");
    return;
  }
  dc->tls_level = dane_level(w, dc->dest, v);
  if (v == DNS_DANE_USABLE) {
    dc->sts_enforce = dc->sts_testing = 0; /* DANE wins (RFC 8461 §2) */
  } else if (dc->sts_enforce && dc->tls_level < CONFIG_TLS_VERIFY) {
    dc->tls_level = CONFIG_TLS_VERIFY; /* no usable TLSA: MTA-STS holds */
  }
  if ((v == DNS_DANE_USABLE && dane_keep(dn, a) != 0) ||
      (dc->cl = dlv_client_new(w, dc->dest, dc->tls_level)) == NULL) {
    dane_conn_fail(c, "4.3.0", "local error: out of memory");
    return;
  }
  dlv_submit_connect(c);
}

/* dane_tick: 1 while c waits for its TLSA answer; the connect timeout or
 * a stop ends the wait (and c), 0 when there is none. */
static int dane_tick(struct conn *c, int expired, int force) {
  struct dlv_dane *dn = c->dlv->dane;
  struct worker *w = c->w;
  if (dn == NULL || dn->handle == 0) {
    return 0;
  }
  if (!expired && !force && !w->stopping) {
    return 1;
  }
  dns_cancel(w->dns, dn->handle);
  dn->handle = 0;
  const char *why = w->stopping ? "cancelled by shutdown" : "timed out";
  char text[SMTP_REPLY_MAX_TEXT];
  snprintf(text, sizeof(text), "TLSA lookup for %.260s: %s", dn->qname, why);
  dane_log(c->dlv->dest, c->dlv->tls_host, c->dlv->relay, "failed", why);
  if (!w->stopping) {
    METRIC_ADD(w->m.tls_policy_failures[TLS_PF_DANE], 1);
    dlv_tlsrpt(c, TLSRPT_EV_TLSA_FAILED, text);
  }
  dane_conn_fail(c, w->stopping ? "4.4.1" : "4.7.5", text);
  return 1;
}

/* dane_tls_params adds what a DANE connection's handshake checks: the
 * usable TLSA records and, besides the TLSA base domain (the host, also
 * the SNI, RFC 7672 §8.1), the next-hop domain as a reference name for
 * DANE-TA (§3.2.2). Its sessions are cached apart from opportunistic
 * ones; a resumed session is judged again against these records anyway
 * (crypto/tls.c verifies the stored chain). */
static void dane_tls_params(const struct conn *c, struct tls_client_params *p,
                            char *key, size_t key_len) {
  const struct dlv_conn *dc = c->dlv;
  const struct dlv_dane *dn = dc->dane;
  if (dc->tls_level != CONFIG_TLS_DANE || dn == NULL) {
    return;
  }
  p->tlsa = dn->tlsa;
  p->num_tlsa = dn->num_tlsa;
  if (strcasecmp(dc->dest->lookup, dc->tls_host) != 0 &&
      p->num_names < TLS_MAX_NAMES) {
    p->names[p->num_names++] = dc->dest->lookup;
  }
  size_t n = strlen(key);
  snprintf(key + n, key_len - n, "|dane");
}

/* dane_tls_ready: at the dane level a TLSA record must have matched (RFC
 * 7672 §2.2, §3); else the connection fails before any mail, and the
 * next MX host is tried. */
static void dane_tls_ready(struct conn *c, enum tls_verify_result vr) {
  struct dlv_conn *dc = c->dlv;
  if (vr == TLS_VERIFY_DANE_OK) {
    smtp_client_tls_started(dc->cl); /* EHLO again, inside TLS */
    return;
  }
  char why[300];
  snprintf(why, sizeof(why), "DANE verification failed: %.200s",
           tls_verify_error(c->tls));
  METRIC_ADD(c->w->m.tls_policy_failures[TLS_PF_DANE], 1);
  smtp_client_tls_failed(dc->cl, why);
}

/* ---- TLS reporting hooks (tlsrpt.c, RFC 8460) ---- */

/* dlv_tlsrpt tells TLS reporting how the TLS policy of c's connection
 * fared, with what only this file knows of it. SMTP next hops only. */
static void dlv_tlsrpt(const struct conn *c, enum tlsrpt_event ev,
                       const char *reason) {
  const struct dlv_conn *dc = c->dlv;
  const struct dlv_dest *d = dc->dest;
  if (d->route.kind != ROUTE_SMTP_MX && d->route.kind != ROUTE_SMTP_HOST) {
    return;
  }
  /* dane_on_tlsa left the dane level (usable records, or a failed
   * lookup) or encrypt (secure but unusable records); may: no DANE. */
  int dane = dc->dane != NULL && dc->tls_level >= CONFIG_TLS_ENCRYPT;
  int ready = ev == TLSRPT_EV_TLS_READY && c->tls != NULL;
  struct tlsrpt_sess s = {
      .event = ev,
      .domain = d->lookup,
      .mx_host = dc->tls_host,
      .fd = c->connecting ? -1 : c->fd,
      .peer = &dc->addr,
      .level = dc->tls_level,
      .sts = dc->sts_enforce || dc->sts_testing,
      .sts_policy = d->sts,
      .dane = dane,
      .tlsa = dane ? dc->dane->tlsa : NULL,
      .num_tlsa = dane ? dc->dane->num_tlsa : 0,
      .verify = ready ? tls_verify(c->tls) : TLS_VERIFY_NONE,
      .verify_error = ready ? tls_verify_error(c->tls) : NULL,
      .reason = reason,
  };
  tlsrpt_note(c->w, &s);
}

/* dest_tlsrpt: the same for an MTA-STS outcome of the destination itself
 * (no connection). */
static void dest_tlsrpt(struct worker *w, const struct dlv_dest *d,
                        enum tlsrpt_event ev, const char *mx_host,
                        const char *reason) {
  struct tlsrpt_sess s = {
      .event = ev,
      .domain = d->lookup,
      .mx_host = mx_host,
      .fd = -1,
      .level = CONFIG_TLS_VERIFY,
      .sts = 1,
      .sts_policy = d->sts,
      .reason = reason,
  };
  tlsrpt_note(w, &s);
}

/* ---- routes (DNS) ---- */

static void dlv_on_route(void *arg, const struct dns_route *route) {
  struct dlv_dest *d = arg;
  struct worker *w = d->route_worker;
  d->resolving = 0;
  d->route_known = 1;
  d->route_status = route->status;
  snprintf(d->route_detail, sizeof(d->route_detail), "%s", route->detail);
  d->num_addrs = 0;
  d->addr_next = 0;
  d->num_failed = 0;
  for (size_t t = 0; t < route->num_targets; t++) {
    const struct dns_target *tg = &route->targets[t];
    for (size_t a = 0; a < tg->num_addrs && d->num_addrs < DLV_MAX_ADDRS; a++) {
      d->addrs[d->num_addrs] = tg->addrs[a];
      snprintf(d->addr_host[d->num_addrs], sizeof(d->addr_host[0]), "%s",
               tg->host);
      d->addr_dane[d->num_addrs] = (uint8_t)dane_host_secure(d, route, tg);
      d->num_addrs++;
    }
  }
  if (route->status == DNS_OK && d->num_addrs == 0) {
    d->route_status = DNS_TEMPFAIL;
  }
  d->route_expire_ms =
      w->now_ms +
      (d->route_status == DNS_OK ? DLV_ROUTE_TTL_MS : DLV_ROUTE_FAIL_TTL_MS);
  struct log_rec r;
  log_begin(&r, "route");
  log_str(&r, "dest", d->name);
  log_str(&r, "status", d->route_status == DNS_OK ? "ok" : "failed");
  log_u64(&r, "addrs", d->num_addrs);
  log_str(&r, "detail", d->route_detail);
  log_end(&r);
  dest_activate(w->dlv, d);
}

/* ---- MTA-STS (RFC 8461) ---- */

static void dlv_on_sts(void *arg, enum mtasts_status status,
                       const struct mta_sts_policy *policy,
                       const char *detail) {
  struct dlv_dest *d = arg;
  struct worker *w = d->route_worker;
  d->sts_pending = 0;
  free(d->sts);
  d->sts = NULL;
  if (status == MTASTS_POLICY && policy->mode != MTA_STS_MODE_NONE) {
    d->sts = malloc(sizeof(*d->sts));
    if (d->sts != NULL) {
      *d->sts = *policy;
    }
  }
  struct log_rec r;
  log_begin(&r, "mta_sts");
  log_str(&r, "dest", d->name);
  log_str(&r, "domain", d->lookup);
  log_str(&r, "result", mtasts_status_name(status));
  if (policy != NULL) {
    log_str(&r, "mode", mta_sts_mode_name(policy->mode));
    log_u64(&r, "mx", policy->num_mx);
  }
  if (detail != NULL && detail[0] != '\0') {
    log_str(&r, "detail", detail);
  }
  log_end(&r);
  if (status == MTASTS_NONE) {
    dest_tlsrpt(w, d, TLSRPT_EV_STS_FETCH, NULL, detail);
  }
  dest_activate(w->dlv, d);
}

/* dest_start_sts looks up the next-hop domain's MTA-STS policy with its
 * route: for MX routing only (a host the operator named needs none), when
 * tls.mta_sts is on and no tls.policies entry names the domain (the
 * operator's word wins). */
static void dest_start_sts(struct worker *w, struct dlv_dest *d) {
  if (!w->cfg->tls_mta_sts || d->route.kind != ROUTE_SMTP_MX ||
      dlv_tls_named(w->cfg, d->lookup) ||
      config_tls_level(w->cfg, d->lookup) == CONFIG_TLS_NONE) {
    free(d->sts);
    d->sts = NULL;
    return;
  }
  d->route_worker = w;
  d->sts_pending = mtasts_lookup(w, d->lookup, dlv_on_sts, d) == 0;
  /* -1: no callback comes; like a temporary failure, the last policy
   * (if any) stays until the next route refresh. */
}

/* dest_sts_addr: 1 if address ai may carry mail under the destination's
 * MTA-STS policy (enforce: its MX host matches a pattern, §4.1). */
static int dest_sts_addr(const struct dlv_dest *d, size_t ai) {
  return d->sts == NULL || d->sts->mode != MTA_STS_MODE_ENFORCE ||
         mta_sts_mx_match(d->sts, d->addr_host[ai]);
}

/* dest_sts_check: with an enforce policy, at least one MX host must match
 * it (else defer: RFC 8461 §5.1 never bounces for the policy alone). 1
 * usable, -1 the due jobs were deferred. */
static int dest_sts_check(struct worker *w, struct dlv_dest *d) {
  for (size_t ai = 0; ai < d->num_addrs; ai++) {
    if (dest_sts_addr(d, ai)) {
      return 1;
    }
  }
  char text[SMTP_REPLY_MAX_TEXT];
  snprintf(text, sizeof(text),
           "MTA-STS: no MX host of %.200s matches its policy", d->lookup);
  struct smtp_reply r;
  smtp_reply_set(&r, 451, "4.7.5", text);
  METRIC_ADD(w->m.tls_policy_failures[TLS_PF_VERIFY], 1);
  dest_tlsrpt(w, d, TLSRPT_EV_STS_NO_MX, d->addr_host[0], text);
  dest_end_ready(w, d, 0, NULL, &r);
  return -1;
}

/* dest_route: 1 when the destination's addresses are known and usable,
 * 0 while a lookup runs, -1 when the route failed (due jobs handled). */
static int dest_route(struct worker *w, struct dlv_dest *d) {
  if (d->route.kind == ROUTE_LMTP_UNIX) {
    return 1;
  }
  if (d->resolving || d->sts_pending) {
    return 0;
  }
  if (!d->route_known || w->now_ms >= d->route_expire_ms) {
    dest_start_sts(w, d);
    if (w->dns == NULL) {
      struct smtp_reply r;
      smtp_reply_set(&r, 451, "4.4.3", "no DNS resolver");
      dest_end_ready(w, d, 0, NULL, &r);
      return -1;
    }
    d->resolving = 1;
    d->route_worker = w;
    d->dns_handle = d->route.kind == ROUTE_SMTP_MX
                        ? dns_route_mx(w->dns, d->lookup, dlv_on_route, d)
                        : dns_route_host(w->dns, d->lookup, dlv_on_route, d);
    if (d->dns_handle != 0) {
      return 0;
    }
    if (d->sts_pending) {
      mtasts_cancel(w, d);
      d->sts_pending = 0;
    }
    /* No memory for the lookup (no callback will come): a temporary
     * failure, looked up again shortly. */
    d->resolving = 0;
    d->route_known = 1;
    d->route_status = DNS_TEMPFAIL;
    snprintf(d->route_detail, sizeof(d->route_detail), "out of memory");
    d->route_expire_ms = w->now_ms + DLV_ROUTE_FAIL_TTL_MS;
  }
  if (d->route_status == DNS_OK) {
    return dest_sts_check(w, d);
  }
  struct smtp_reply r;
  char text[SMTP_REPLY_MAX_TEXT];
  switch (d->route_status) {
  case DNS_NULL_MX:
    /* RFC 7505 §3: 556 5.1.10 for a domain that accepts no mail. */
    snprintf(text, sizeof(text), "%.200s: domain accepts no mail (null MX)",
             d->lookup);
    smtp_reply_set(&r, 556, "5.1.10", text);
    dest_end_ready(w, d, 1, NULL, &r);
    break;
  case DNS_NOT_FOUND:
  case DNS_PERMFAIL:
    snprintf(text, sizeof(text), "%.200s: host or domain name not found (%s)",
             d->lookup, d->route_detail);
    smtp_reply_set(&r, 550, "5.4.4", text);
    dest_end_ready(w, d, 1, NULL, &r);
    break;
  default:
    snprintf(text, sizeof(text), "%.200s: DNS lookup failed (%s)", d->lookup,
             d->route_detail);
    smtp_reply_set(&r, 451, "4.4.3", text);
    dest_end_ready(w, d, 0, NULL, &r);
    break;
  }
  return -1;
}

/* ---- local delivery (Maildir, on the local pool) ---- */

static void dest_run_local(struct worker *w, struct dlv_dest *d) {
  unsigned limit = w->cfg->delivery_dest_concurrency;
  int64_t wait_ms = 0;
  while (!w->stopping && d->num_ready > 0 && d->local_in_flight < limit &&
         dest_may_send(w, d, &wait_ms)) {
    struct dlv_job *j = dest_pop(d);
    xo_begin(w, j);
    struct local_job *lj = calloc(1, sizeof(*lj));
    int ok = lj != NULL;
    if (ok) {
      lj->w = w;
      lj->cookie = j;
      lj->tmpl = d->route.path;
      lj->sender = j->msg->sender;
      snprintf(lj->hostname, sizeof(lj->hostname), "%s", w->cfg->hostname);
      lj->rcpts = calloc(j->num_rcpts, sizeof(*lj->rcpts));
      lj->results = calloc(j->num_rcpts, sizeof(*lj->results));
      ok = lj->rcpts != NULL && lj->results != NULL;
      for (size_t k = 0; ok && k < j->num_rcpts; k++) {
        struct dlv_rcpt *rc = &j->msg->rcpts[j->rcpts[k]];
        if (!rc->done) {
          lj->rcpts[lj->num_rcpts] = rc->addr;
          lj->results[lj->num_rcpts].index = j->rcpts[k];
          lj->num_rcpts++;
        }
      }
      ok = ok && dlv_load_body(w, j->msg, &lj->storage, &lj->rcpt_storage,
                               &lj->body) == 0;
    }
    if (!ok) {
      if (lj != NULL) {
        local_job_free(lj);
      }
      struct smtp_reply r;
      smtp_reply_set(&r, 451, "4.3.0", "local error: cannot start delivery");
      dlv_end_rest(w, j, 0, d->name, &r);
      continue;
    }
    d->local_in_flight++;
    w->dlv_num_local++;
    local_pool_submit(w->d, lj);
  }
}

void delivery_local_done(struct worker *w, struct local_job *lj) {
  struct dlv_job *j = lj->cookie;
  struct dlv_dest *d = j->xdest;
  d->local_in_flight--;
  w->dlv_num_local--;
  for (size_t k = 0; k < lj->num_rcpts; k++) {
    const struct local_result *res = &lj->results[k];
    struct smtp_reply r;
    if (res->status == 0) {
      char text[SMTP_REPLY_MAX_TEXT];
      snprintf(text, sizeof(text), "delivered to maildir as %.200s", res->text);
      smtp_reply_set(&r, 250, "2.0.0", text);
      r.local = 1;
      xo_finish(w, j, res->index, DLV_DELIVERED, REPORT_DELIVERED, d->name, &r);
    } else if (res->status == -2) {
      smtp_reply_set(&r, 550, "5.2.0", res->text);
      r.local = 1;
      xo_finish(w, j, res->index, DLV_BOUNCED, REPORT_FAILED, d->name, &r);
    } else {
      smtp_reply_set(&r, 451, "4.2.0", res->text);
      r.local = 1;
      xo_defer(w, j, res->index, d->name, &r);
    }
  }
  local_job_free(lj);
  dest_activate(w->dlv, d); /* before xo_end: keeps d from being freed */
  xo_end(w, j);
}

/* ---- hand-over between workers ---- */

/* dlv_adopt takes a job handed over by its home worker into this
 * worker's destination. */
static void dlv_adopt(struct worker *w, struct dlv_job *j) {
  const struct dlv_dest *hd = j->dest; /* immutable name and route */
  /* A throttled destination is keyed by its recipient domain too. */
  const char *domain = hd->thr_domain[0] ? hd->thr_domain : hd->lookup;
  struct dlv_dest *d = w->stopping ? NULL : dest_get(w, &hd->route, domain);
  if (j->outcomes == NULL) {
    j->outcomes = calloc(j->num_rcpts, sizeof(*j->outcomes));
  }
  j->num_outcomes = 0;
  if (d == NULL || j->outcomes == NULL) {
    /* Stopping, or no memory: back home untried (it waits its turn). */
    j->xdest = NULL;
    dlv_send_home(w, j);
    return;
  }
  j->xdest = d;
  d->num_jobs++;
  dest_push(d, j);
  dest_activate(w->dlv, d);
}

/* dlv_replay applies a returned job's outcomes on its home worker. */
static void dlv_replay(struct worker *w, struct dlv_job *j) {
  w->dlv_remote_out--;
  for (size_t k = 0; k < j->num_outcomes; k++) {
    struct dlv_outcome *o = &j->outcomes[k];
    if (o->deferred) {
      dlv_defer_rcpt(w, j, o->index, o->relay[0] ? o->relay : NULL, &o->reply);
    } else {
      dlv_finish_rcpt(w, j, o->index, o->result, o->report,
                      o->relay[0] ? o->relay : NULL, &o->reply);
    }
  }
  j->num_outcomes = 0;
  dlv_after_attempt(w, j);
}

static struct dlv_job *dlv_reverse(struct dlv_job *list) {
  struct dlv_job *rev = NULL;
  while (list != NULL) {
    struct dlv_job *next = list->next;
    list->next = rev;
    rev = list;
    list = next;
  }
  return rev;
}

/* delivery_take_remote: the eventfd wake: the locked lists, and every
 * ring (a wake for one may have come this way). */
void delivery_take_remote(struct worker *w) {
  pthread_mutex_lock(&w->local_mu);
  struct dlv_job *in = w->dlv_inbox, *back = w->dlv_back;
  w->dlv_inbox = NULL;
  w->dlv_back = NULL;
  pthread_mutex_unlock(&w->local_mu);
  for (struct dlv_job *j = dlv_reverse(in), *next; j != NULL; j = next) {
    next = j->next;
    dlv_adopt(w, j);
  }
  for (struct dlv_job *j = dlv_reverse(back), *next; j != NULL; j = next) {
    next = j->next;
    dlv_replay(w, j);
  }
  for (unsigned p = 0; p < w->d->num_workers; p++) {
    if (p != w->index) {
      xring_take(w, &w->dlv_xin[p]);
      xring_take(w, &w->dlv_xback[p]);
    }
  }
}

void delivery_take_ring(struct worker *w, void *x) {
  xring_take(w, x);
}

void delivery_wake_failed(struct worker *w, void *x, int res) {
  struct dlv_xring *xr = x;
  if (__atomic_load_n(&xr->consumer->dlv_closed, __ATOMIC_ACQUIRE)) {
    return; /* it left (its ring with it) after draining what it had */
  }
  if (!__atomic_exchange_n(&dlv_msg_ring_off, 1, __ATOMIC_RELAXED)) {
    log_msg("warning",
            "worker %u: IORING_OP_MSG_RING to worker %u failed (%s); "
            "workers wake each other through eventfds from now on",
            w->index, xr->consumer->index, strerror(-res));
  }
  METRIC_ADD(w->dlv_xstats.wake_fd, 1);
  worker_wake(xr->consumer); /* its wake_pending is still set */
}

/* delivery_start probes for IORING_OP_MSG_RING on w's ring; once w says
 * it takes messages, peers wake it that way. */
void delivery_start(struct worker *w) {
  w->dlv_loop = 1;
  struct io_uring_probe *probe = io_uring_get_probe_ring(&w->ring);
  int ok = probe != NULL &&
           io_uring_opcode_supported(probe, IORING_OP_MSG_RING) != 0;
  if (probe != NULL) {
    io_uring_free_probe(probe);
  }
  if (!ok) {
    if (!__atomic_exchange_n(&dlv_msg_ring_off, 1, __ATOMIC_RELAXED)) {
      log_msg("warning", "io_uring has no IORING_OP_MSG_RING: workers wake "
                         "each other through eventfds");
    }
    return;
  }
  __atomic_store_n(&w->dlv_xwake_ok, 1, __ATOMIC_RELEASE);
}

/* delivery_close: the worker leaves its loop; jobs handed to it from now
 * on stay home, and what its inbox and rings hold goes back untried. The
 * store of dlv_closed and the drain pair with dlv_handoff_recheck. */
void delivery_close(struct worker *w) {
  w->dlv_loop = 0; /* nothing we queue on the ring is submitted now */
  __atomic_store_n(&w->dlv_xwake_ok, 0, __ATOMIC_RELEASE);
  pthread_mutex_lock(&w->local_mu);
  __atomic_store_n(&w->dlv_closed, 1, __ATOMIC_SEQ_CST);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  struct dlv_job *in = w->dlv_inbox;
  w->dlv_inbox = NULL;
  for (unsigned p = 0; p < w->d->num_workers; p++) {
    if (p != w->index) {
      in = xring_pop_all(&w->dlv_xin[p], in);
    }
  }
  w->dlv_xdrained = 1;
  pthread_mutex_unlock(&w->local_mu);
  for (struct dlv_job *j = in, *next; j != NULL; j = next) {
    next = j->next;
    dlv_adopt(w, j); /* stopping: sends it home */
  }
}

/* dest_return_remote: a stopping worker sends the due jobs of other
 * workers home untried; its own stay (the spool keeps them). */
static void dest_return_remote(struct worker *w, struct dlv_dest *d) {
  struct dlv_job *keep = NULL, *j;
  while ((j = dest_pop(d)) != NULL) {
    if (j->home == w) {
      j->next = keep; /* reversed here, and again when pushed back */
      keep = j;
    } else {
      xo_end(w, j);
    }
  }
  struct dlv_job *rev = NULL;
  while (keep != NULL) {
    struct dlv_job *next = keep->next;
    keep->next = rev;
    rev = keep;
    keep = next;
  }
  while (rev != NULL) {
    struct dlv_job *next = rev->next;
    dest_push(d, rev);
    rev = next;
  }
}

/* ---- control commands (control.c) ---- */

static uint64_t dlv_hold_len;

/* dlv_stage_hold stages a HOLD or RELEASE record of m; the command's
 * answer waits for it. Returns 0 or -1. */
static int dlv_stage_hold(struct worker *w, struct dlv_msg *m, int held,
                          struct ctl_op *op) {
  struct spool_hold h = {.queue_id = m->loc.queue_id,
                         .gen = m->hold_gen + 1,
                         .held = (uint8_t)held,
                         .when_ms = w->now_ms};
  uint64_t hold_len = __atomic_load_n(&dlv_hold_len, __ATOMIC_RELAXED);
  if (hold_len == 0) {
    struct buf b = {0};
    if (spool_hold_encode(&b, &h) == 0) {
      hold_len = b.len;
      __atomic_store_n(&dlv_hold_len, hold_len, __ATOMIC_RELAXED);
    }
    buf_free(&b);
  }
  struct commit *cm = calloc(1, sizeof(*cm));
  if (cm == NULL || hold_len == 0) {
    free(cm);
    return -1;
  }
  cm->queue_id = m->loc.queue_id;
  cm->rec_len = hold_len;
  cm->ctl = op;
  cm->done_for = m; /* counted like a DONE: m stays until it is durable */
  if (spool_writer_add_hold(w->spool, &h, cm) != 0) {
    free(cm);
    return -1;
  }
  control_wait_record(op);
  m->pending_dones++;
  m->hold_gen++;
  return 0;
}

int delivery_stage_quarantine(struct worker *w, struct dlv_msg *m) {
  struct spool_hold h = {.queue_id = m->loc.queue_id,
                         .gen = m->hold_gen + 1,
                         .held = 1,
                         .when_ms = w->now_ms};
  struct buf b = {0};
  int ok = spool_hold_encode(&b, &h) == 0;
  uint64_t len = b.len;
  buf_free(&b);
  /* A bare record: nothing waits for it, and it must not point at m,
   * which is freed if its own commit fails. */
  struct commit *cm = ok ? calloc(1, sizeof(*cm)) : NULL;
  if (cm == NULL) {
    return -1;
  }
  cm->queue_id = m->loc.queue_id;
  cm->rec_len = len;
  if (spool_writer_add_hold(w->spool, &h, cm) != 0) {
    free(cm);
    return -1;
  }
  m->held = 1;
  m->hold_gen++;
  struct log_rec r;
  log_begin(&r, "quarantined");
  log_str(&r, "qid", m->qid);
  log_end(&r);
  return 0;
}

/* dlv_msg_matches: is m named by the request? */
static int dlv_msg_matches(const struct worker *w, const struct dlv_msg *m,
                           const struct ctl_request *req) {
  if (req->num_ids > 0) {
    for (size_t i = 0; i < req->num_ids; i++) {
      if (req->ids[i] == m->loc.queue_id) {
        return 1;
      }
    }
    return 0;
  }
  if (req->domain[0] != '\0') {
    for (size_t i = 0; i < m->num_rcpts; i++) {
      if (!m->rcpts[i].done &&
          strcasecmp(rcpt_domain(w, m->rcpts[i].addr), req->domain) == 0) {
        return 1;
      }
    }
    return 0;
  }
  return 1; /* --all, FLUSH and STATUS without arguments */
}

/* dlv_jobs_park takes m's due and waiting jobs out of the queues. */
static void dlv_jobs_park(struct worker *w, struct dlv_msg *m,
                          enum dlv_job_state to) {
  for (size_t k = 0; k < m->num_jobs; k++) {
    struct dlv_job *j = &m->jobs[k];
    if (j->state == JOB_READY) {
      dest_unlink(j->dest, j);
      j->state = to;
    } else if (j->state == JOB_WAITING) {
      heap_remove(w->dlv, j);
      j->state = to;
    } else if (j->state == JOB_HELD && to == JOB_IDLE) {
      j->state = to;
    }
  }
}

static int dlv_msg_active(const struct dlv_msg *m) {
  for (size_t k = 0; k < m->num_jobs; k++) {
    if (m->jobs[k].state == JOB_READY || m->jobs[k].state == JOB_FLIGHT) {
      return 1;
    }
  }
  return 0;
}

void delivery_control(struct worker *w, const struct ctl_request *req,
                      struct ctl_op *op) {
  for (struct dlv_msg *m = w->dlv->all; m != NULL; m = m->all_next) {
    if (m->num_open == 0 || !dlv_msg_matches(w, m, req)) {
      continue; /* finished ones wait only for their DONEs: not found */
    }
    uint64_t id = m->loc.queue_id;
    switch (req->verb) {
    case CTL_VERB_STATUS:
      control_item(op, id,
                   m->held             ? CTL_WORD_HELD
                   : dlv_msg_active(m) ? CTL_WORD_ACTIVE
                                       : CTL_WORD_DEFERRED);
      break;
    case CTL_VERB_FLUSH: {
      if (m->held) {
        control_item(op, id, CTL_WORD_HELD);
        break;
      }
      int moved = 0;
      for (size_t k = 0; k < m->num_jobs; k++) {
        struct dlv_job *j = &m->jobs[k];
        if (j->state == JOB_WAITING) {
          heap_remove(w->dlv, j);
          dlv_job_ready(w, j);
          j->dest->hold_until_ms = 0;
          moved = 1;
        }
      }
      control_item(op, id, moved ? CTL_WORD_QUEUED : CTL_WORD_ACTIVE);
      break;
    }
    case CTL_VERB_HOLD:
      if (!m->held) {
        if (dlv_stage_hold(w, m, 1, op) != 0) {
          control_item(op, id, CTL_WORD_BUSY);
          break;
        }
        m->held = 1;
        dlv_jobs_park(w, m, JOB_HELD); /* in flight: held afterwards */
        struct log_rec r;
        log_begin(&r, "held");
        log_str(&r, "qid", m->qid);
        log_end(&r);
      }
      control_item(op, id, CTL_WORD_HELD);
      break;
    case CTL_VERB_RELEASE:
      if (!m->held) {
        control_item(op, id, CTL_WORD_NOT_HELD);
        break;
      }
      if (dlv_stage_hold(w, m, 0, op) != 0) {
        control_item(op, id, CTL_WORD_BUSY);
        break;
      }
      m->held = 0;
      for (size_t k = 0; k < m->num_jobs; k++) {
        if (m->jobs[k].state == JOB_HELD) {
          dlv_job_ready(w, &m->jobs[k]);
        }
      }
      {
        struct log_rec r;
        log_begin(&r, "released");
        log_str(&r, "qid", m->qid);
        log_end(&r);
      }
      control_item(op, id, CTL_WORD_RELEASED);
      break;
    case CTL_VERB_DELETE:
      if (m->in_flight > 0) {
        /* The recipients of the attempt in flight finish with it; the
         * rest are deleted when it ends (dlv_after_attempt). */
        m->deleted = 1;
      }
      dlv_jobs_park(w, m, JOB_IDLE);
      for (size_t k = 0; k < m->num_jobs; k++) {
        struct dlv_job *j = &m->jobs[k];
        if (j->state == JOB_FLIGHT) {
          continue;
        }
        for (size_t x = 0; x < j->num_rcpts; x++) {
          struct dlv_rcpt *rc = &m->rcpts[j->rcpts[x]];
          if (!rc->done) {
            rc->done = 1;
            m->num_open--;
            dlv_stage_done_ctl(w, m, rc, SPOOL_OUTCOME_DELETED, op);
          }
        }
      }
      {
        struct log_rec r;
        log_begin(&r, "deleted");
        log_str(&r, "qid", m->qid);
        log_end(&r);
      }
      control_item(op, id, CTL_WORD_DELETED);
      break;
    }
  }
}

/* ---- scheduling ---- */

void delivery_tick(struct worker *w) {
  struct dlv_state *s = w->dlv;
  while (s->heap_len > 0 && s->heap[0]->next_ms <= w->now_ms) {
    struct dlv_job *j = s->heap[0];
    heap_remove(s, j);
    dlv_job_ready(w, j);
  }
  /* The queue by state for the metrics: one walk a second. */
  uint64_t st[3] = {0, 0, 0};
  for (struct dlv_msg *m = s->all; m != NULL; m = m->all_next) {
    if (m->num_open == 0) {
      continue;
    }
    st[m->held ? 0 : dlv_msg_active(m) ? 1 : 2]++;
  }
  for (int i = 0; i < 3; i++) {
    __atomic_store_n(&w->m.queue_state[i], st[i], __ATOMIC_RELAXED);
  }
}

/* dest_schedule puts one destination's due jobs on their way. Returns 1
 * while the destination still needs the scheduler's attention. */
static int dest_schedule(struct worker *w, struct dlv_dest *d) {
  /* Idle connections first: a due job, or QUIT when stopping. */
  while (d->idle != NULL && (d->num_ready > 0 || w->stopping)) {
    struct conn *c = d->idle;
    dlv_idle_remove(c);
    if (w->stopping) {
      smtp_client_quit(c->dlv->cl);
    } else {
      dlv_on_ready(c);
    }
    delivery_pump(c);
    if (c->dlv != NULL && c->dlv->idle) {
      break; /* the rate limit holds it back */
    }
  }
  if (w->stopping) {
    dest_return_remote(w, d);
    return d->idle != NULL;
  }
  if (d->num_ready == 0) {
    return d->idle != NULL;
  }
  if (d->route.kind == ROUTE_ERROR) {
    struct smtp_reply r;
    const char *t = d->route.path;
    char code[8] = "5.1.1";
    if (t[0] == '5' && t[1] == '.' && strchr(t, ' ') != NULL &&
        strchr(t, ' ') - t < (ptrdiff_t)sizeof(code)) {
      snprintf(code, sizeof(code), "%.*s", (int)(strchr(t, ' ') - t), t);
      t = strchr(t, ' ') + 1;
    }
    smtp_reply_set(&r, 550, code, t);
    r.local = 1;
    dest_end_ready(w, d, 1, NULL, &r);
    return 0;
  }
  if (d->route.kind == ROUTE_MAILDIR) {
    dest_run_local(w, d);
    return d->num_ready > 0;
  }
  if (w->now_ms < d->hold_until_ms) {
    return 1;
  }
  int64_t until = 0;
  if (d->thr_domain[0] != '\0' && throttle_waiting(w, d->thr_domain, &until)) {
    return 1; /* its throttle window is full: no new connection */
  }
  int rt = dest_route(w, d);
  if (rt <= 0) {
    return rt == 0;
  }
  unsigned limit = w->cfg->delivery_dest_concurrency;
  while (d->num_ready > d->num_starting && d->num_conns < limit &&
         w->dlv_num_conns < w->cfg->delivery_concurrency) {
    if (dlv_connect(w, d) != 0) {
      struct smtp_reply r;
      smtp_reply_set(&r, 451, "4.3.0", "local error: cannot connect");
      d->hold_until_ms = w->now_ms + DLV_HOLD_MS;
      if (d->num_conns - d->num_starting == 0) {
        dest_end_ready(w, d, 0, NULL, &r);
      }
      return 1;
    }
  }
  return d->num_ready > 0;
}

static int delivery_schedule_pass(struct worker *w);

/* delivery_schedule (every loop turn) walks the active destinations. */
void delivery_schedule(struct worker *w) {
  /* A lookup answered from the cache or an address literal completes in
   * dns_dispatch without any I/O to wake the loop: so a pass that started
   * lookups is followed by another (bounded). */
  for (int pass = 0; pass < 3; pass++) {
    if (w->dns != NULL) {
      dns_dispatch(w->dns);
    }
    if (!delivery_schedule_pass(w)) {
      break;
    }
  }
}

/* delivery_schedule_pass walks the active destinations once; 1 if one of
 * them started a lookup. */
static int delivery_schedule_pass(struct worker *w) {
  struct dlv_state *s = w->dlv;
  int lookups = 0;
  struct dlv_dest *list = s->active;
  s->active = NULL;
  while (list != NULL) {
    struct dlv_dest *d = list;
    list = d->anext;
    d->active = 0;
    d->anext = NULL;
    int was_resolving = d->resolving || d->sts_pending;
    d->busy = 1;
    int again = dest_schedule(w, d);
    d->busy = 0;
    lookups |= (d->resolving || d->sts_pending) && !was_resolving;
    if (again || d->num_ready > 0 || d->idle != NULL) {
      /* Reconsidered on the next turn (or tick, while held). */
      dest_activate(s, d);
    } else {
      dest_maybe_free(w, d);
    }
  }
  return lookups;
}

int delivery_idle(const struct worker *w) {
  return w->dlv_num_conns == 0 && w->dlv_num_local == 0 &&
         w->dlv_remote_out == 0;
}

/* xrings_free releases one worker's rings of one direction. */
static void xrings_free(struct dlv_xring *xs, unsigned n) {
  for (unsigned p = 0; xs != NULL && p < n; p++) {
    spsc_cleanup(&xs[p].q);
  }
  free(xs);
}

/* xrings_new makes w's rings of one direction, one per peer (none for
 * w itself). Returns NULL when out of memory. */
static struct dlv_xring *xrings_new(struct worker *w, int back) {
  unsigned n = w->d->num_workers;
  struct dlv_xring *xs = aligned_alloc(SPSC_CACHE_LINE, n * sizeof(*xs));
  if (xs == NULL) {
    return NULL;
  }
  memset(xs, 0, n * sizeof(*xs));
  for (unsigned p = 0; p < n; p++) {
    xs[p].back = back;
    xs[p].producer = &w->d->workers[p];
    xs[p].consumer = w;
    if (p != w->index && spsc_init(&xs[p].q, DLV_XRING_SIZE) != 0) {
      xrings_free(xs, n);
      return NULL;
    }
  }
  return xs;
}

int delivery_init(struct worker *w) {
  w->dlv = calloc(1, sizeof(*w->dlv));
  w->dlv_xin = xrings_new(w, 0);
  w->dlv_xback = xrings_new(w, 1);
  return w->dlv != NULL && w->dlv_xin != NULL && w->dlv_xback != NULL ? 0 : -1;
}

/* delivery_free_rings: the last worker out frees every worker's rings. */
static void delivery_free_rings(struct worker *w) {
  struct daemon *d = w->d;
  if (__atomic_add_fetch(&dlv_xfreed, 1, __ATOMIC_ACQ_REL) != d->num_workers) {
    return;
  }
  for (unsigned i = 0; i < d->num_workers; i++) {
    xrings_free(d->workers[i].dlv_xin, d->num_workers);
    xrings_free(d->workers[i].dlv_xback, d->num_workers);
    d->workers[i].dlv_xin = d->workers[i].dlv_xback = NULL;
  }
}

void delivery_free_all(struct worker *w) {
  delivery_free_rings(w);
  struct dlv_state *s = w->dlv;
  if (s == NULL) {
    return;
  }
  while (s->all != NULL) {
    struct dlv_msg *m = s->all;
    s->all = m->all_next;
    delivery_msg_free(m);
  }
  for (size_t b = 0; b < DLV_DEST_BUCKETS; b++) {
    while (s->buckets[b] != NULL) {
      struct dlv_dest *d = s->buckets[b];
      s->buckets[b] = d->hnext;
      if (d->resolving && w->dns != NULL) {
        dns_cancel(w->dns, d->dns_handle);
      }
      if (d->sts_pending) {
        mtasts_cancel(w, d);
      }
      free(d->sts);
      free(d);
    }
  }
  free(s->heap);
  free(s);
  w->dlv = NULL;
}
