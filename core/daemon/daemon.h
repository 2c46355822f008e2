/* core/daemon/daemon.h — postseald's wiring: the per-core io_uring workers,
 * the SMTP session glue, outbound delivery (delivery.c), the metrics
 * endpoint.
 *
 * Owns: everything that joins the layers (core runtime, proto engines,
 * policy verdicts, the spool). This is the only code that sees every layer;
 * it stays thin: sockets and completions here, decisions in the modules.
 *
 * Threads: main() owns signals and configuration reloads; each worker
 * thread owns one io_uring, its listeners (SO_REUSEPORT), its connections,
 * its spool writer and its counters. Workers share nothing mutable except
 * the published config pointer and the stop/reload generation (atomics),
 * and the counters, which other threads only read (metrics scrape). */
#ifndef POSTSEAL_CORE_DAEMON_DAEMON_H
#define POSTSEAL_CORE_DAEMON_DAEMON_H

#include <liburing.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/buf.h"
#include "core/bufring.h"
#include "core/config.h"
#include "core/metrics.h"
#include "core/spool.h"
#include "crypto/dkim.h"
#include "crypto/tls.h"
#include "policy/auth.h"
#include "policy/dmarc.h"
#include "policy/dns.h"
#include "policy/spf.h"
#include "policy/tlsrpt.h"
#include "proto/http.h"
#include "proto/smtp_client.h"
#include "proto/smtp_server.h"

#define DAEMON_MAX_WORKERS 64
#define DAEMON_RECV_BUF_SIZE (16 * 1024)
#define DAEMON_RECV_BUF_COUNT 1024 /* per worker; power of two */
#define DAEMON_RING_ENTRIES 4096
#define DAEMON_CQ_ENTRIES 32768
/* Output queued to a client that does not read: above HIGH we stop reading
 * its input (recv cancelled) and stop running its commands; below LOW we
 * start again. */
#define DAEMON_SEND_HIGH (64 * 1024)
#define DAEMON_SEND_LOW (16 * 1024)
/* How long a closing connection may take to flush its last replies. */
#define DAEMON_CLOSE_LINGER_MS 10000
#define DAEMON_CLOSE_LINGER_STOPPING_MS 2000

enum listener_kind {
  LISTEN_SMTP,
  LISTEN_SUBMISSION,
  LISTEN_SUBMISSIONS, /* implicit TLS (RFC 8314) */
  LISTEN_METRICS,     /* kinds below this one speak SMTP */
  LISTEN_CONTROL,     /* the queue control socket (control.c), worker 0 */
  LISTEN_COUNT
};

/* Why a message or command was refused: the label of
 * postseal_messages_rejected_total. */
enum reject_reason {
  REJECT_RELAY_DENIED,
  REJECT_SPOOL_FULL,
  REJECT_SPOOL_ERROR,
  REJECT_SHUTDOWN,
  REJECT_COUNT,
};

/* Outcome of one delivery attempt for one recipient: the label of
 * postseal_delivery_attempts_total. */
enum dlv_result {
  DLV_DELIVERED,
  DLV_DEFERRED,
  DLV_BOUNCED,
  DLV_RESULT_COUNT,
};

/* TLS handshakes by outcome: the label of postseal_tls_handshakes_total. */
enum tls_hs_result {
  TLS_HS_OK,
  TLS_HS_RESUMED,
  TLS_HS_FAILED,
  TLS_HS_COUNT,
};

/* AUTH outcomes: the label of postseal_auth_attempts_total. */
enum auth_result {
  AUTH_SUCCESS,
  AUTH_FAILURE,
  AUTH_BLOCKED, /* refused by the failed-attempt limiter */
  AUTH_RESULT_COUNT,
};

/* Outbound TLS policy failures: the label of
 * postseal_tls_policy_failures_total. */
enum tls_policy_failure {
  TLS_PF_NOT_OFFERED, /* STARTTLS missing or refused where required */
  TLS_PF_HANDSHAKE,   /* the handshake failed where TLS was required */
  TLS_PF_VERIFY,      /* certificate not verified (verify level) */
  TLS_PF_DANE,        /* dane level: no TLSA match, or the TLSA lookup
                         failed (RFC 7672 §2.2) */
  TLS_PF_COUNT,
};

/* Counters of one worker; only that worker writes them (METRIC_ADD). */
#define DKIM_VERDICTS 6   /* none, pass, fail, neutral, temperror, permerror */
#define SMIME_VERDICTS 10 /* unparseable, then enum cms_verdict + 1 */

struct worker_metrics {
  uint64_t sessions_total[LISTEN_COUNT];
  uint64_t sessions_active[LISTEN_COUNT];
  uint64_t sessions_refused; /* over max_sessions */
  struct smtp_server_stats smtp;
  uint64_t messages_accepted;
  uint64_t messages_rejected[REJECT_COUNT];
  uint64_t rcpts_rejected[REJECT_COUNT];
  uint64_t bytes_received;
  uint64_t spool_commits;
  uint64_t spool_commit_errors;
  uint64_t queue_messages; /* messages this worker owns, not yet finished
                              (gauge part; rises at commit and recovery,
                              falls when the last DONE is durable) */
  uint64_t timeouts;
  struct metric_hist batch_size;           /* records per group commit */
  struct metric_hist commit_seconds;       /* write + fdatasync latency */
  uint64_t dlv_attempts[DLV_RESULT_COUNT]; /* per recipient */
  /* The same by reason: the subject digit of the RFC 3463 status (x.Y.z:
   * 0 other, 1 address, 2 mailbox, 3 mail system, 4 network/routing,
   * 5 protocol, 6 content, 7 security). */
  uint64_t dlv_reasons[DLV_RESULT_COUNT][8];
  uint64_t dlv_conns_opened;
  uint64_t dlv_conns_reused;      /* a message sent on an already used conn */
  struct metric_hist dlv_seconds; /* queued -> delivered */
  /* Gauges refreshed every tick (delivery_tick): queued messages by
   * state: held, with a job in flight or due (active), only waiting
   * (deferred). */
  uint64_t queue_state[3];
  /* Copied from this worker's resolver every tick (policy/dns.h). */
  uint64_t segments_reclaimed; /* deleted while running (segments.c) */
  /* TLS: [0] inbound, [1] outbound; by outcome and by version (1.2, 1.3). */
  uint64_t tls_handshakes[2][TLS_HS_COUNT];
  uint64_t tls_versions[2][2];
  uint64_t tls_policy_failures[TLS_PF_COUNT];
  uint64_t auth_attempts[AUTH_RESULT_COUNT];
  uint64_t dns_queries, dns_cache_hits, dns_cache_misses, dns_coalesced,
      dns_tempfails, dns_timeouts;
  /* ---- MTA-STS (mtasts.c) ---- */
  uint64_t mtasts_results[3]; /* lookups answered, by enum mtasts_status */
  uint64_t mtasts_fetches;    /* policy fetches started on the pool */
  uint64_t mtasts_fetch_failures;
  /* ---- end MTA-STS ---- */
  /* ---- TLS reporting (tlsrpt.c) ---- */
  uint64_t tlsrpt_sessions[2]; /* counted: [0] successful, [1] failed */
  uint64_t tlsrpt_domains;     /* gauge: domains in this worker's period */
  uint64_t tlsrpt_dropped[4];  /* sessions not kept, by enum tlsrpt_drop */
  uint64_t tlsrpt_reports[6];  /* report-time outcomes per domain, by enum
                                  tlsrpt_outcome (worker 0) */
  /* ---- end TLS reporting ---- */
  /* ---- DKIM (dkimglue.c) ---- */
  uint64_t dkim_signatures[2];          /* made: [0] rsa-sha256, [1] ed25519 */
  uint64_t dkim_sign_errors;            /* messages answered 451 */
  uint64_t dkim_unsigned;               /* trusted mail with no key for From */
  uint64_t dkim_verify[DKIM_VERDICTS];  /* by dkimglue's verdict index */
  struct metric_hist dkim_batch;        /* messages per signing batch */
  struct metric_hist dkim_sign_seconds; /* per batch: hash + sign */
  /* ---- end DKIM ---- */
  /* ---- S/MIME (smimeglue.c) ---- */
  uint64_t smime_signed;          /* messages signed */
  uint64_t smime_encrypted;       /* messages encrypted */
  uint64_t smime_encrypted_rcpts; /* certificates they were encrypted to */
  uint64_t smime_not_encrypted;   /* if-possible, a certificate missing */
  uint64_t smime_refused;         /* required, a certificate missing: 550 */
  uint64_t smime_errors;          /* signing/encryption failed: 451 */
  uint64_t smime_sign_refused;    /* a signer for From, but the client may
                                     not send as From: left unsigned */
  uint64_t smime_untouched;       /* trusted mail left as it came */
  uint64_t smime_verify[SMIME_VERDICTS]; /* signers by verdict + 1; [0]
                                            unparseable */
  /* ---- end S/MIME ---- */
  uint64_t spf_results[7];   /* by enum spf_result */
  uint64_t dmarc_results[5]; /* by enum dmarc_result */
  uint64_t dmarc_actions[3]; /* dispositions applied, by enum
                                dmarc_policy (none: delivered) */
  /* ---- DMARC reports (dmarcrpt.c) ---- */
  uint64_t dmarcrpt_messages;   /* messages counted for reports */
  uint64_t dmarcrpt_domains;    /* gauge: domains in this worker's period */
  uint64_t dmarcrpt_dropped[3]; /* messages not kept, by enum dmarcrpt_drop */
  uint64_t dmarcrpt_reports[3]; /* report-time outcomes per domain, by enum
                                   dmarcrpt_outcome (worker 0) */
  uint64_t dmarcrpt_skipped[4]; /* rua URIs not sent to, by enum
                                   dmarcrpt_skip (worker 0) */
  /* ---- end DMARC reports ---- */
  /* ---- shared throttle (throttle.c) ---- */
  uint64_t thr_decisions[2]; /* [0] allowed (per message), [1] deferred
                                (per "window full" verdict) */
  uint64_t thr_redis_errors; /* connect, I/O, protocol, error replies,
                                timeouts */
  uint64_t thr_fallbacks;    /* switches to the local fallback */
  uint64_t thr_fallback;     /* gauge: 1 while this worker decides locally
                                because Redis failed */
  /* ---- end shared throttle ---- */
};

extern const struct metric_hist_spec daemon_batch_spec;
extern const struct metric_hist_spec daemon_latency_spec;
extern const struct metric_hist_spec daemon_delivery_spec;

/* An in-flight io_uring operation's kind, kept in the low bits of
 * user_data; the rest is a pointer to the owning object (16-aligned). */
enum op_kind {
  OP_ACCEPT = 1,
  OP_RECV = 2,
  OP_SEND = 3,
  OP_TICK = 4,
  OP_WAKE = 5,
  OP_SPOOL_WRITE = 6,
  OP_SPOOL_SYNC = 7,
  OP_CONNECT = 8,     /* outbound delivery connection */
  OP_DNS_POLL = 9,    /* a c-ares socket (dnsglue.c) */
  OP_XRING = 10,      /* MSG_RING: a peer pushed jobs on a hand-over ring */
  OP_XRING_SENT = 11, /* our MSG_RING failed (success posts no CQE) */
  OP_THROTTLE = 12,   /* the Redis connection and its timer (throttle.c) */
  OP_MASK = 15,
};

/* op_tag: the user_data of an operation on `owner` (16-aligned). */
static inline uint64_t op_tag(void *owner, enum op_kind kind) {
  return (uint64_t)(uintptr_t)owner | (uint64_t)kind;
}

struct worker;
struct dlv_msg;
struct dlv_job;
struct dlv_conn;
struct dlv_state;
struct dns_watch;
struct ctl_op;
struct ctl_node;

/* A Maildir delivery of one job's recipients, run on the local pool
 * (local.c) because it blocks (write, fsync, rename, fsync). The strings
 * it points to (template, sender, recipients, body) belong to the worker's
 * queue and stay put while the job is in flight. */
struct local_result {
  size_t index; /* the recipient in the message */
  int status;   /* 0 delivered, -1 temporary, -2 permanent */
  char text[256];
};

struct local_job {
  struct local_job *next;
  struct worker *w;
  /* Other blocking work the pool runs (a password check): run on a pool
   * thread, then done on the worker, which frees the job. NULL: Maildir. */
  void (*run)(struct local_job *lj);
  void (*done)(struct worker *w, struct local_job *lj);
  void *cookie; /* delivery.c's job */
  const char *tmpl;
  const char *sender;
  char hostname[256];
  const char **rcpts;
  size_t num_rcpts;
  struct local_result *results;
  struct smtp_client_span body;
  struct buf storage, rcpt_storage; /* a re-read record */
};

/* One connection: inbound SMTP or metrics HTTP (accepted), or outbound
 * SMTP to the next hop (outbound = 1, kind unused, dlv set). Lives in the
 * worker's pool; freed only when no operation on it is in flight (num_ops ==
 * 0), and its generation changes on reuse so late commits for a closed session
 * are recognised. */
struct conn {
  struct worker *w;
  struct conn *next_free;
  struct conn *prev, *next; /* in the worker's live list */
  uint64_t gen;
  int fd;
  enum listener_kind kind;
  int num_ops;        /* operations in flight */
  int recv_armed;     /* multishot recv active */
  int sending;        /* a send is in flight */
  int closing;        /* close once output is flushed */
  int shut;           /* shutdown(2) done; waiting for ops to drain */
  int commit_pending; /* a message sits in the spool batch */
  int freed;          /* back in the free list */
  int paused;         /* input stopped: recv cancelled (backpressure) */
  struct buf held;    /* received bytes the engine could not take yet */
  int64_t deadline_ms;
  struct sockaddr_storage peer;
  char peer_text[64];
  uint64_t session_id;
  char session_text[32];
  struct smtp_server *smtp; /* SMTP kinds */
  struct buf http_in;       /* metrics kind */
  struct buf out;           /* bytes being sent (the kernel reads them) */
  size_t out_off;
  struct buf pending; /* bytes queued while a send is in flight */
  uint64_t queue_id;  /* of the message being committed */
  /* Our Received: field, handed to the engine as the body's prefix at
   * each accepted RCPT with a placeholder id and date (session.c): where
   * those go, and its length (0: none set). */
  size_t rcv_len, rcv_qid_off, rcv_date_off, rcv_date_len;
  size_t message_size;
  size_t message_rcpts;
  struct tls *tls;      /* TLS on this connection (tlsglue.c), or NULL */
  int tls_ready;        /* handshake done */
  struct spf_run *spf;  /* spfglue.c: this transaction's SPF check */
  int auth_pending;     /* a password check runs on the pool */
  int outbound;         /* a delivery connection (delivery.c) */
  int connecting;       /* OP_CONNECT in flight */
  struct dlv_conn *dlv; /* outbound kind */
} __attribute__((aligned(16)));

struct listener {
  int fd;
  enum listener_kind kind;
  int armed;
} __attribute__((aligned(16)));

/* A record waiting for its group commit: a MESSAGE from a session (c,
 * msg), or a DONE from delivery (done_for). rec_len is the record's size
 * in the segment, so the worker can tell where each record of a batch
 * lies (records are written in staging order). */
struct commit {
  struct conn *c;
  uint64_t gen;
  uint64_t queue_id;
  struct buf data; /* Received: header + body: what the spool stores */
  int64_t start_ms;
  uint64_t rec_len;
  struct dlv_msg *msg;      /* MESSAGE: queued for delivery once durable */
  struct dlv_msg *done_for; /* DONE: the message whose recipient finished */
  struct ctl_op *ctl;       /* a control command waits for this record */
  int quarantine;           /* DMARC: held from the start (a HOLD record
                               follows the MESSAGE in the same batch) */
  char smime_ar[1024];      /* smimeglue.c: "; smime=..." resinfo for the
                               Authentication-Results field, or "" */
  int authres_written;      /* the DKIM stage put our field on top */
};

struct daemon;

struct __attribute__((aligned(64))) worker {
  struct daemon *d;
  unsigned index;
  pthread_t thread;
  struct io_uring ring;
  struct bufring bufs; /* multishot recv buffers (group 0) */
  struct listener listeners[LISTEN_COUNT];
  int wake_fd;
  uint64_t wake_value;
  const struct config *cfg; /* this worker's view; swapped on reload */
  uint64_t seen_reload_gen; /* published (atomic): main frees old configs
                               only once every worker has moved past them */
  struct spool_writer *spool;
  int spool_ops;       /* 2 while write+fsync are in flight */
  int spool_result;    /* first error of the in-flight batch */
  size_t spool_expect; /* bytes the in-flight write must write */
  int64_t spool_start_ms;
  int64_t spool_start_ns;   /* monotonic, for the latency histogram */
  size_t spool_batch_count; /* records reported by the last flush */
  struct conn *live;        /* live connections */
  struct conn *free_conns;
  unsigned num_conns;
  unsigned num_inbound; /* accepted sessions: limits.sessions_per_thread */
  int stopping;
  int exited; /* set (atomic) when worker_main returns */
  int64_t stop_deadline_ms;
  int64_t now_ms;
  struct __kernel_timespec tick_ts;
  struct worker_metrics m;
  uint64_t next_session;
  char *rcpt_scratch;
  /* Where the in-flight batch starts, so each record's offset is known. */
  char spool_batch_seg[SPOOL_SEGMENT_NAME_MAX];
  uint64_t spool_batch_off;
  /* Delivery (delivery.c): messages this worker owns. */
  struct dlv_state *dlv;
  unsigned dlv_num_conns; /* outbound connections open */
  unsigned dlv_num_local; /* local deliveries in flight */
  size_t dlv_body_bytes;  /* bodies held in memory */
  uint64_t dlv_seed;      /* jitter */
  /* DNS (dnsglue.c): this thread's resolver and its polled sockets. */
  struct dns *dns;
  struct dns_watch *dns_watches;
  /* Local deliveries finished by the pool, taken on OP_WAKE; control
   * commands for this worker's messages (control.c); both under
   * local_mu. */
  pthread_mutex_t local_mu;
  struct local_job *local_done;
  struct ctl_node *ctl_inbox;
  struct ctl_op *ctl_done; /* worker 0: commands every worker finished */
  int ctl_closed;          /* exiting: commands are answered at once */
  /* Delivery jobs handed over between workers (delivery.c): due jobs
   * whose destination this worker owns, and this worker's jobs coming
   * back with their outcomes. The usual path is a lock-free ring per
   * peer and direction (dlv_xin[p]: jobs worker p hands to this one,
   * dlv_xback[p]: this worker's jobs coming back from p; none for p ==
   * index), each with one producer (p) and one consumer (this worker),
   * woken by IORING_OP_MSG_RING. The lists below, under local_mu, are the
   * overflow path (a full ring, or before the loops run) with an eventfd
   * wake. */
  struct dlv_xring *dlv_xin, *dlv_xback;
  struct dlv_job *dlv_inbox, *dlv_back;
  int dlv_closed;   /* atomic: exiting: hand-overs stay home */
  int dlv_xdrained; /* under local_mu: closed, dlv_xin drained for good */
  int dlv_loop;     /* own thread: the loop runs (submits what we queue) */
  int dlv_xwake_ok; /* atomic: our ring takes MSG_RING wakes */
  struct dlv_xstats {
    uint64_t ring;         /* hand-overs and returns through a ring */
    uint64_t overflow;     /* through the locked lists: the ring was full */
    uint64_t early;        /* through the locked lists: before the loop ran */
    uint64_t wake_msg;     /* wakes sent as MSG_RING */
    uint64_t wake_fd;      /* wakes sent through the eventfd */
  } dlv_xstats;            /* METRIC_ADD / METRIC_GET */
  unsigned dlv_remote_out; /* this worker's jobs out on other workers */
  unsigned ctl_ops_out;    /* worker 0: commands not yet answered */
  char *ctl_path;          /* worker 0: the socket to unlink at exit */
  struct seg *segs;        /* segments.c */
  unsigned segs_old_seen;  /* segments.c: old-group generation seen */
  struct buf tls_plain, tls_out; /* tlsglue.c scratch */
  struct tlsrpt_worker *tlsrpt;  /* tlsrpt.c: this worker's own state */
  /* dkimglue.c: messages waiting for this loop turn's signing batch, and
   * messages whose signatures wait for their keys. */
  struct dkim_pending *dkim_batch, *dkim_batch_tail;
  size_t dkim_batch_len;
  struct dkim_pending *dkim_verifying;
  struct dmarcrpt_worker *dmarcrpt; /* dmarcrpt.c: this worker's own state */
  struct throttle *thr;             /* throttle.c: this worker's own state */
};

/* What a configuration needs at run time beyond its values: TLS contexts
 * and the password table, built by runtime_attach() when the config is
 * loaded (start and SIGHUP) and hung on config->runtime. Referenced, so
 * a password check in flight keeps its table after a reload. */
struct runtime {
  int refs;                   /* atomic */
  struct dkim_rt *dkim;       /* dkimglue.c: signing keys; NULL: none */
  struct smime_rt *smime;     /* smimeglue.c: S/MIME keys, certificates,
                                 trust anchors; NULL: none configured */
  struct dmarc_psl *psl;      /* dmarc.enabled: the Public Suffix List */
  struct tls_ctx *tls_server; /* NULL: no inbound TLS */
  struct tls_ctx *tls_client; /* outbound STARTTLS */
  struct auth_db *auth;       /* NULL: AUTH not offered */
};

struct daemon {
  const char *config_path;
  struct auth_limiter *auth_limiter; /* failed AUTH per client, shared */
  char *spool_dir;     /* the spool opened at start; a reload cannot move it */
  int lock_fd;         /* spool_lock(): held until exit */
  struct config *cfg;  /* published config (atomic pointer) */
  uint64_t reload_gen; /* bumped on SIGHUP after cfg is swapped */
  int stop;            /* set on SIGTERM/SIGINT */
  int force;           /* a second SIGTERM/SIGINT: close sessions now */
  int failed;          /* a worker could not start: exit non-zero */
  unsigned num_workers;
  struct worker workers[DAEMON_MAX_WORKERS];
  uint64_t recovered_messages;
  uint64_t first_queue_id;
  int64_t start_ms;
  struct config *old_cfgs[64]; /* replaced configs a worker may still use */
  uint64_t old_cfg_gens[64];   /* reload_gen at which each was replaced */
  size_t num_old_cfgs;
  /* The local delivery pool (local.c). */
  pthread_mutex_t local_mu;
  pthread_cond_t local_cv;
  struct local_job *local_head, *local_tail;
  int local_stop;
  unsigned num_local_threads;
  pthread_t local_threads[DAEMON_MAX_WORKERS + 2];
  struct mtasts *mtasts; /* mtasts.c: MTA-STS policy cache (atomic pointer,
                            made on first use, freed by mtasts_free) */
  /* tlsrpt.c: report periods handed over to worker 0. */
  struct tlsrpt_hub *tlsrpt;
  /* dmarcrpt.c: DMARC report periods handed over to worker 0. */
  struct dmarcrpt_hub *dmarcrpt;
};

/* worker.c */
int worker_init(struct worker *w, struct daemon *d, unsigned index, char *err,
                size_t err_len);
void *worker_main(void *arg);
void worker_wake(struct worker *w);
int64_t daemon_now_ms(void);
int64_t daemon_mono_ns(void);

/* tlsglue.c: runtime objects and TLS on connections. */
int runtime_attach(struct config *cfg, char *err, size_t err_len);
static inline struct runtime *cfg_runtime(const struct config *cfg) {
  return (struct runtime *)cfg->runtime;
}
void runtime_up_ref(struct runtime *rt);
void runtime_put(struct runtime *rt);
/* conn_send_raw queues bytes for the socket as they are (ciphertext, or
 * plaintext before TLS); conn_send encrypts when the conn has TLS. */
void conn_send_raw(struct conn *c, const uint8_t *data, size_t len);
/* conn_send_take: on a connection without TLS and with nothing queued,
 * take(arg, b) may fill the (empty) output buffer b in place, e.g. by
 * trading buffers; if it returns 1 the bytes are sent as by conn_send.
 * Returns take's answer, or 0 without calling it. Saves a copy of a
 * message body on its way out. */
int conn_send_take(struct conn *c, int (*take)(void *arg, struct buf *b),
                   void *arg);
void conn_tls_flush(struct conn *c);
void conn_tls_on_input(struct conn *c, const uint8_t *in, size_t in_len);
/* conn_tls_start_server puts a server TLS session on c (STARTTLS or
 * implicit TLS). Returns 0, or -1 (no context or out of memory). */
int conn_tls_start_server(struct conn *c);
void session_on_tls_ready(struct conn *c);
void delivery_on_tls_ready(struct conn *c);
void delivery_on_tls_error(struct conn *c, const char *why);

/* dkimglue.c: the DKIM stage between the end of DATA and the spool
 * commit. Trusted clients' mail (mynetworks, AUTH) is signed with the
 * keys of its From domain in a batch at the end of the loop turn; other
 * mail has its signatures verified (keys through the worker's resolver)
 * and an Authentication-Results field added. Either way the message then
 * goes to session_stage_commit (or session_stage_failed). */
struct dkim_rt;
int dkim_runtime_load(struct runtime *rt, const struct config *cfg, char *err,
                      size_t err_len);
void dkim_runtime_free(struct dkim_rt *d);
/* The loaded keys, for the metrics: domain, selector, algorithm name and
 * since when the key signs (NOT_BEFORE, else its file's mtime). */
size_t dkim_runtime_num_keys(const struct dkim_rt *d);
void dkim_runtime_key(const struct dkim_rt *d, size_t i, const char **domain,
                      const char **selector, const char **alg, int64_t *since);
/* dkim_stage_take: 1 if the stage took cm (it finishes it later), 0 if
 * cm is to be staged now, -1 if it cannot be taken (out of memory: 451). */
int dkim_stage_take(struct conn *c, struct commit *cm, int trusted);
void dkim_stage_flush(struct worker *w);
void dkim_worker_close(struct worker *w);
extern const struct metric_hist_spec dkim_sign_seconds_spec;

/* smimeglue.c: the S/MIME gateway stage (see its header comment). */
struct smime_rt;
int smime_runtime_load(struct runtime *rt, const struct config *cfg, char *err,
                       size_t err_len);
void smime_runtime_free(struct smime_rt *s);
/* The loaded signers, for the metrics: WHO and the certificate's
 * notAfter (seconds since the epoch). */
size_t smime_runtime_num_signers(const struct smime_rt *s);
void smime_runtime_signer(const struct smime_rt *s, size_t i, const char **who,
                          int64_t *not_after);
struct smime_reply {
  int code; /* 550 or 451 */
  char enhanced[8];
  char text[400];
};
/* smime_stage_out signs and/or encrypts a trusted client's message in
 * place. Returns 0 (go on), or -1 with the reply to refuse it with. */
int smime_stage_out(struct conn *c, struct commit *cm, struct smime_reply *r);
/* smime_stage_in verifies an untrusted client's signed message and keeps
 * the verdicts in cm->smime_ar for the Authentication-Results field. */
void smime_stage_in(struct conn *c, struct commit *cm);
/* smime_stage_authres, for untrusted mail the DKIM stage did not take
 * (or finished at once: then it does nothing, the field is written):
 * removes Authentication-Results fields claiming our host name, then
 * writes cm->smime_ar (if any) as our own field. Returns 0, or -1 (out
 * of memory). */
int smime_stage_authres(struct conn *c, struct commit *cm);

/* dkimglue.c: Authentication-Results helpers shared with smimeglue.c. */
int authres_value(struct buf *out, const char *s);
int authres_reason(struct buf *out, const char *s);
int authres_comment(struct buf *out, const char *s);
int authres_strip_forged(struct commit *cm, const char *host);
int commit_prepend(struct commit *cm, const struct buf *hdr);

/* spfglue.c: one SPF check per transaction of an untrusted client. */
struct spf_run {
  struct worker *w;
  struct spf_query *q;  /* MAIL FROM identity */
  struct spf_query *qh; /* HELO identity (or NULL) */
  int phase;            /* 0: q runs, 1: qh runs */
  enum spf_result helo_result;
  uint64_t handle; /* the lookup in flight, or 0 */
  int64_t deadline_ms;
  int done;
  enum spf_result result;
  void (*on_done)(void *arg); /* called once when done (if set) */
  void *arg;
};
void spf_run_start(struct conn *c);
void spf_run_free(struct spf_run *r);

/* session.c: SMTP glue, called by the worker. */
int session_stage_commit(struct conn *c, struct commit *cm);
void session_stage_failed(struct conn *c, struct commit *cm);
int session_start(struct conn *c);
void session_on_input(struct conn *c, const uint8_t *in, size_t in_len);
void session_pump(struct conn *c);
void session_on_commit(struct conn *c, struct commit *cm, int err);
void session_on_timeout(struct conn *c);
void session_on_shutdown(struct conn *c);
void session_free(struct conn *c);

/* conn helpers in worker.c, used by session.c and metrics_http.c */
void conn_send(struct conn *c, const uint8_t *data, size_t len);
void conn_close(struct conn *c);
void conn_maybe_free(struct conn *c);
/* Bytes queued to the client and not yet sent. */
size_t conn_unsent(const struct conn *c);
/* Stop / restart reading from the client (backpressure). */
void conn_pause(struct conn *c);
void conn_resume(struct conn *c);
int worker_spool_add(struct worker *w, struct commit *cm,
                     const struct spool_message *m);

/* delivery.c: the outbound queue and its connections (see there). */
struct dlv_msg *delivery_msg_new(const struct spool_message *m);
void delivery_msg_free(struct dlv_msg *m);
/* The MESSAGE record's length in the segment (head + body). */
uint64_t delivery_msg_record_len(const struct dlv_msg *m);
void delivery_on_committed(struct worker *w, struct dlv_msg *m,
                           struct buf *body, const char *segment,
                           uint64_t offset);
void delivery_on_done_durable(struct worker *w, struct dlv_msg *m, int err,
                              const char *segment);
int delivery_recover(struct worker *w, const struct spool_scan *scan,
                     const struct spool_entry *e);
void delivery_schedule(struct worker *w);
void delivery_tick(struct worker *w);
void delivery_on_connect(struct conn *c, int res);
void delivery_on_input(struct conn *c, const uint8_t *in, size_t in_len);
void delivery_pump(struct conn *c);
void delivery_on_eof(struct conn *c);
void delivery_conn_tick(struct conn *c, int force);
void delivery_conn_free(struct conn *c);
void delivery_free_all(struct worker *w);
int delivery_idle(const struct worker *w);
int delivery_init(struct worker *w);
void delivery_local_done(struct worker *w, struct local_job *lj);
/* delivery_stage_quarantine marks m (staged, not yet durable) held and
 * stages its HOLD record right after it. Returns 0 or -1. */
int delivery_stage_quarantine(struct worker *w, struct dlv_msg *m);
/* delivery_take_remote: on the eventfd wake, every job handed to w or
 * coming back to it (locked lists and rings). */
void delivery_take_remote(struct worker *w);
/* delivery_start: w's ring is up and its loop about to run (w's thread):
 * probes IORING_OP_MSG_RING, from now on peers wake w with messages. */
void delivery_start(struct worker *w);
/* delivery_take_ring: OP_XRING, a peer's message: the jobs on ring x. */
void delivery_take_ring(struct worker *w, void *x);
/* delivery_wake_failed: OP_XRING_SENT, our message for ring x failed
 * (res < 0): the consumer is woken through its eventfd instead. */
void delivery_wake_failed(struct worker *w, void *x, int res);
void delivery_close(struct worker *w);
uint64_t delivery_done_record_len(void);
/* conn helpers for delivery.c */
struct conn *conn_new_outbound(struct worker *w, int fd);
void conn_start_recv(struct conn *c);
struct io_uring_sqe *worker_get_sqe(struct worker *w);

/* local.c: the Maildir delivery pool. */
int local_pool_start(struct daemon *d, unsigned threads);
void local_pool_submit(struct daemon *d, struct local_job *lj);
void local_pool_submit_front(struct daemon *d, struct local_job *lj);
void local_pool_stop(struct daemon *d);
void local_job_free(struct local_job *lj);
/* local_take_done: the worker's finished local jobs (on OP_WAKE). */
void local_take_done(struct worker *w);

/* dnsglue.c: the worker's resolver on its ring. */
int worker_dns_init(struct worker *w, char *err, size_t err_len);
void worker_dns_on_poll(struct worker *w, struct dns_watch *wt, int res,
                        unsigned flags);
void worker_dns_tick(struct worker *w);
void worker_dns_free(struct worker *w);

/* control.c: the queue control socket. */
int control_open(struct worker *w, char *err, size_t err_len);
void control_on_input(struct conn *c, const uint8_t *in, size_t in_len);
void control_take(struct worker *w);
void control_close(struct worker *w);
void control_record_durable(struct ctl_op *op, int err);
/* For delivery_control: report one message, hold the reply for a record. */
void control_item(struct ctl_op *op, uint64_t queue_id, int word);
void control_wait_record(struct ctl_op *op);
/* delivery.c: apply a command to this worker's messages. */
struct ctl_request;
void delivery_control(struct worker *w, const struct ctl_request *req,
                      struct ctl_op *op);

/* segments.c: this run's segments, deleted once nothing needs them. */
struct seg;
struct seg *segs_get(struct worker *w, const char *name);
void segs_message(struct seg *s);
void segs_message_done(struct worker *w, struct seg *s);
void segs_depend(struct seg *s, struct seg *on, int on_old);
/* segs_pin keeps s until the next start (its repair decides). */
void segs_pin(struct seg *s);
void segs_current(struct worker *w, const char *name);
void segs_free(struct worker *w);
/* Segments earlier runs left, in the groups start-up repair kept: a
 * recovered message counts in its group until it is finished. */
struct seg_group;
/* segs_old_message: main thread, before the workers run: the group of a
 * recovered message whose MESSAGE is in `segment`, now counting it; NULL
 * if unknown (the caller pins what depends on it). */
struct seg_group *segs_old_message(struct worker *w,
                                   const struct spool_scan *scan,
                                   const char *segment);
/* segs_old_message_done: the message is finished (its DONEs durable). */
void segs_old_message_done(struct worker *w, struct seg_group *g);
/* segs_old_pin keeps g until the next start. */
void segs_old_pin(struct seg_group *g);
/* segs_depend_old: s holds a DONE or HOLD of a message in group `on`. */
void segs_depend_old(struct seg *s, struct seg_group *on);
/* segs_tick: once a second: old groups gone elsewhere free ours. */
void segs_tick(struct worker *w);

/* metrics_http.c */
void metrics_on_input(struct conn *c, const uint8_t *in, size_t in_len);
/* metrics_render writes every metric; cfg is the calling worker's
 * configuration (its runtime: the loaded keys and certificates). */
void metrics_render(struct daemon *d, const struct config *cfg,
                    struct buf *out);

/* ---- mtasts.c: MTA-STS policy discovery (RFC 8461) ----
 *
 * mtasts_lookup finds the policy of a recipient domain on the worker's
 * thread: the _mta-sts.<domain> TXT record through w->dns, then, for an
 * id not cached, the addresses of mta-sts.<domain> and an HTTPS fetch of
 * /.well-known/mta-sts.txt on the local pool (cfg->tls_mta_sts_port, the
 * runtime's client TLS context, PKIX required). Policies are cached
 * daemon-wide (policy/mta_sts.h); a cached unexpired policy is used when
 * the TXT record is missing or fails, or the fetch of a new id fails
 * (RFC 8461 §5.1). Lookups of one domain on one worker share the work.
 *
 * Returns 0: cb runs later, once (inside dns_dispatch/dns_tick or on
 * OP_WAKE, never inside mtasts_lookup), unless mtasts_cancel(w, arg)
 * came first. -1: no callback will come; treat it as MTASTS_TEMPFAIL (a
 * domain that is not an LDH name, no resolver, stopping, too many
 * lookups, out of memory). After a 0, dns_dispatch must run before the
 * loop sleeps (delivery_schedule does). policy and detail are valid
 * during the callback only; policy is non-NULL iff MTASTS_POLICY. */
struct mta_sts_policy;
enum mtasts_status {
  MTASTS_NONE,     /* no policy: the domain has none, or it could not be
                      fetched and none is cached (RFC 8461 §3.3) */
  MTASTS_POLICY,   /* a policy (fresh or cached) applies */
  MTASTS_TEMPFAIL, /* the TXT lookup failed temporarily, none cached */
};
typedef void (*mtasts_cb)(void *arg, enum mtasts_status status,
                          const struct mta_sts_policy *policy,
                          const char *detail);
int mtasts_lookup(struct worker *w, const char *domain, mtasts_cb cb,
                  void *arg);
/* mtasts_cancel drops w's callbacks for arg (the work goes on, its
 * result is cached). */
void mtasts_cancel(struct worker *w, void *arg);
/* mtasts_idle: 1 if no fetch of w's is on the pool (worker_done must
 * wait for it: the pool hands the job back to w). */
int mtasts_idle(const struct worker *w);
/* mtasts_cache_entries: policy domains cached (a gauge for metrics). */
size_t mtasts_cache_entries(struct daemon *d);
/* mtasts_free frees the cache and what the workers left (after they
 * exited and the pool stopped). */
void mtasts_free(struct daemon *d);
const char *mtasts_status_name(enum mtasts_status s); /* none, policy,
                                                         tempfail */
/* ---- end mtasts.c ---- */

/* ---- tlsrpt.c: SMTP TLS Reporting (RFC 8460) ----
 *
 * Delivery calls tlsrpt_note once per outbound connection whose TLS
 * policy outcome is known (and for the MTA-STS failures that stop a
 * destination before any connection), on the worker running it; the
 * worker counts it in its own aggregate (policy/tlsrpt.h), no lock.
 * Periods are tls.report_interval seconds aligned to the Unix epoch (a
 * UTC day by default). When one ends, each worker's tlsrpt_tick hands its
 * aggregate to the daemon's hub (a mutex, once a period); worker 0 takes
 * them once every worker has (or after a grace), merges them, looks up
 * _smtp._tls.<domain> TXT for each domain through its resolver and queues
 * one report per domain with a record, to its mailto: URIs, in its own
 * spool (then delivered like any message). Counts live in memory only:
 * a restart loses the period's. Everything runs on worker threads but
 * tlsrpt_init and tlsrpt_free (main, before and after the workers). */
enum tlsrpt_event {
  TLSRPT_EV_TLS_READY,   /* the handshake finished: verification decides */
  TLSRPT_EV_TLS_ERROR,   /* the handshake failed */
  TLSRPT_EV_NO_STARTTLS, /* STARTTLS missing or refused where required */
  TLSRPT_EV_PLAINTEXT,   /* the session went on without TLS (may) */
  TLSRPT_EV_TLSA_FAILED, /* the TLSA lookup failed or timed out (dane) */
  TLSRPT_EV_STS_NO_MX,   /* no MX host matches the MTA-STS policy */
  TLSRPT_EV_STS_FETCH,   /* an MTA-STS lookup answered "none": reason is
                            its detail; only a failed fetch counts */
};

/* One session's outcome as delivery knows it; read during the call only. */
struct mta_sts_policy;
struct tlsrpt_sess {
  enum tlsrpt_event event;
  const char *domain;  /* the policy domain: the next hop's domain */
  const char *mx_host; /* the MX host, or NULL */
  int fd;              /* our connected socket (sending-mta-ip), or -1 */
  const struct sockaddr_storage *peer;     /* the MX address, or NULL */
  enum config_tls_level level;             /* the connection's TLS level */
  int sts;                                 /* an MTA-STS policy applied */
  const struct mta_sts_policy *sts_policy; /* that policy, if still known */
  int dane;                                /* DANE applied (tlsa) */
  const struct tls_tlsa *tlsa;             /* its usable records */
  size_t num_tlsa;
  enum tls_verify_result verify; /* TLSRPT_EV_TLS_READY */
  const char *verify_error;      /* TLSRPT_EV_TLS_READY, or NULL */
  const char *reason;            /* our words for the failure, or NULL */
};

/* Labels of postseal_tlsrpt_dropped_total and postseal_tlsrpt_reports_total. */
enum tlsrpt_drop {
  TLSRPT_DROP_DOMAIN, /* past tls.report_max_domains */
  TLSRPT_DROP_POLICY, /* past TLSRPT_MAX_POLICIES for its domain */
  TLSRPT_DROP_DETAIL, /* counted, its failure-details row not kept */
  TLSRPT_DROP_MEMORY,
  TLSRPT_DROP_COUNT,
};
enum tlsrpt_outcome {
  TLSRPT_OUT_QUEUED,        /* a report was queued */
  TLSRPT_OUT_NO_RECORD,     /* no TLSRPT record: the data is dropped */
  TLSRPT_OUT_INVALID,       /* an invalid record (§3): dropped */
  TLSRPT_OUT_NO_MAILTO,     /* only https: (or unusable) URIs: dropped */
  TLSRPT_OUT_LOOKUP_FAILED, /* the TXT lookup failed: dropped */
  TLSRPT_OUT_ERROR,         /* memory or spool: dropped */
  TLSRPT_OUT_COUNT,
};

void tlsrpt_note(struct worker *w, const struct tlsrpt_sess *s);
/* tlsrpt_tick: period ends, hand-overs, worker 0's report runs. */
void tlsrpt_tick(struct worker *w);
/* tlsrpt_worker_free: the worker exits (before worker_dns_free). */
void tlsrpt_worker_free(struct worker *w);
int tlsrpt_init(struct daemon *d); /* 0, or -1 out of memory */
void tlsrpt_free(struct daemon *d);
/* tlsrpt_spool_report queues data (a whole report message; taken, freed
 * on failure too) from `sender` to rcpts (1..REPORT_MAX_RCPTS) as a new
 * message with queue id `id` in w's spool, delivered like any other.
 * Shared by tlsrpt.c and dmarcrpt.c. 0 or -1 (memory, spool). */
#define REPORT_MAX_RCPTS 16
int tlsrpt_spool_report(struct worker *w, uint64_t id, const char *sender,
                        const char *const *rcpts, size_t num_rcpts,
                        struct buf *data);
/* ---- end tlsrpt.c ---- */

/* ---- dmarcrpt.c: DMARC aggregate reports (RFC 7489 §7.2) ----
 *
 * The inbound DMARC check (dkimglue.c) calls dmarcrpt_note once per
 * message whose policy record was found and names rua URIs, on the worker
 * that took the message; the worker counts it in its own aggregate (per
 * policy domain, per row of the report: source address, disposition,
 * alignment, identifiers, DKIM and SPF results), no lock. Limits:
 * dmarc.report_max_domains domains per period and DMARCRPT_MAX_ROWS rows
 * per domain; more is counted as dropped. Periods are
 * dmarc.report_interval seconds aligned to the Unix epoch (a UTC day by
 * default). When one ends each worker's dmarcrpt_tick hands its aggregate
 * to the daemon's hub; worker 0 takes them once every worker has (or
 * after a grace), merges them, and for each domain sends the report to
 * the record's mailto: rua addresses: an address in another
 * organisational domain only after the §7.1 check (a TXT record
 * "<domain>._report._dmarc.<rua domain>" starting v=DMARC1, through
 * worker 0's resolver), and only when the gzipped report fits the URI's
 * "!size". The report is queued in worker 0's spool
 * (tlsrpt_spool_report). Counts live in memory only: a restart loses the
 * period's. Everything runs on worker threads but dmarcrpt_init and
 * dmarcrpt_free (main, before and after the workers). */
#define DMARCRPT_MAX_ROWS 1000 /* rows per policy domain and period */

/* One message's DMARC check, read during the call only. */
struct dmarcrpt_msg {
  const char *source_ip;          /* the client's address, text */
  const char *header_from;        /* the RFC5322.From domain */
  const char *policy_domain;      /* where the record was found */
  const struct dmarc_record *rec; /* the record (policy_published) */
  const struct dmarc_outcome *outcome;
  enum dmarc_policy disposition; /* what was applied to the message */
  const struct spf_run *spf;     /* the SPF check, or NULL */
  const struct dkim_verify *v;   /* the DKIM verdicts, or NULL */
};

/* Labels of postseal_dmarcrpt_dropped_total, _reports_total and
 * _rua_skipped_total. */
enum dmarcrpt_drop {
  DMARCRPT_DROP_DOMAIN, /* past dmarc.report_max_domains */
  DMARCRPT_DROP_ROW,    /* past DMARCRPT_MAX_ROWS for its domain */
  DMARCRPT_DROP_MEMORY,
  DMARCRPT_DROP_COUNT,
};
enum dmarcrpt_outcome {
  DMARCRPT_OUT_QUEUED,  /* a report was queued */
  DMARCRPT_OUT_NO_RCPT, /* every rua URI was skipped: dropped */
  DMARCRPT_OUT_ERROR,   /* memory, the report or the spool: dropped */
  DMARCRPT_OUT_COUNT,
};
enum dmarcrpt_skip {
  DMARCRPT_SKIP_UNUSABLE, /* not mailto:, or an address we cannot use */
  DMARCRPT_SKIP_EXTERNAL, /* §7.1: no authorisation record (refused) */
  DMARCRPT_SKIP_LOOKUP,   /* §7.1: the check's lookup failed */
  DMARCRPT_SKIP_SIZE,     /* the report is over the URI's !size */
  DMARCRPT_SKIP_COUNT,
};

void dmarcrpt_note(struct worker *w, const struct dmarcrpt_msg *m);
/* dmarcrpt_tick: period ends, hand-overs, worker 0's report runs. */
void dmarcrpt_tick(struct worker *w);
/* dmarcrpt_worker_free: the worker exits (before worker_dns_free). */
void dmarcrpt_worker_free(struct worker *w);
int dmarcrpt_init(struct daemon *d); /* 0, or -1 out of memory */
void dmarcrpt_free(struct daemon *d);
/* ---- end dmarcrpt.c ---- */

/* ---- throttle.c: per-destination rates shared through Redis ----
 *
 * throttle.rates limits the messages sent to a recipient domain in any
 * PERIOD across every replica that points throttle.redis at the same
 * Redis. Each worker keeps one TCP connection to Redis on its own ring
 * (OP_THROTTLE; connected at start, reconnected with backoff) and asks,
 * right before a message to a throttled destination is sent, for permits
 * with one EVAL of a script (a sliding window log per domain, see
 * throttle.c): the answer grants up to the permits asked for, or says how
 * long the window stays full. While asking, the destination waits (its
 * connection idles); while the window is full it opens no connection and
 * sends nothing: the messages stay due (not a failure) until it ends.
 *
 * Fallback: when Redis cannot be reached, fails, or answers later than
 * throttle.timeout_ms, the worker decides locally with the same window
 * and RATE / throttle.replicas (at least 1) as the limit, logs
 * throttle_fallback once, and goes back to Redis (logging throttle_shared)
 * once a reconnected connection answers a PING. With throttle.redis ""
 * every decision is local (no fallback is reported).
 *
 * Thread: each worker's own; nothing shared. */
enum throttle_verdict {
  THROTTLE_GO,     /* send now: a permit was taken */
  THROTTLE_ASKING, /* Redis is being asked: try again on a later turn */
  THROTTLE_WAIT,   /* the window is full until *out_until_ms */
};
/* throttle_take asks for one permit for a message to `domain` (lower
 * case); `want` is how many messages wait (a hint for batching). A domain
 * without a throttle.rates entry always gets THROTTLE_GO. */
enum throttle_verdict throttle_take(struct worker *w, const char *domain,
                                    unsigned want, int64_t *out_until_ms);
/* throttle_waiting: 1 if domain's window is known to be full now (no new
 * connection should open for it); *out_until_ms says until when. */
int throttle_waiting(struct worker *w, const char *domain,
                     int64_t *out_until_ms);
/* throttle_applies: 1 if domain has a throttle.rates entry. */
int throttle_applies(const struct worker *w, const char *domain);
void throttle_on_cqe(struct worker *w, void *op, int res, unsigned flags);
void throttle_tick(struct worker *w);
int throttle_init(struct worker *w, char *err, size_t err_len);
/* throttle_close ends the connection (before the ring goes);
 * throttle_free frees the state (after it). */
void throttle_close(struct worker *w);
void throttle_free(struct worker *w);
/* ---- end throttle.c ---- */

#endif
