/* bench/bench_client.h — sans-I/O SMTP client for load generation.
 *
 * Owns: one load session's protocol state: the reply parser, the current
 * transaction (MAIL, RCPT x K, DATA, body) and the bytes to send. It is a
 * load generator, not the relay's delivery client (proto/smtp_client): it
 * knows just enough SMTP to keep a server busy and to classify its replies.
 * Never touches a socket or the clock: the host feeds received bytes with
 * bench_client_feed(), pulls events with bench_client_next(), copies what
 * bench_client_output() gives into its own send buffer and drops it with
 * bench_client_output_sent(); the host timestamps events itself.
 *
 * Session: 220 -> EHLO -> (MAIL, RCPT x K, DATA, 354, header + body, 250)* ->
 * QUIT -> 221. With config.starttls the first EHLO is followed by STARTTLS
 * (RFC 3207): on its 220 the client reports EV_STARTTLS and waits; the
 * host starts TLS on the connection, calls bench_client_tls_started() and
 * from then on feeds and sends plaintext through its TLS adapter; the
 * client forgets what the server said before (buffered input, PIPELINING;
 * RFC 3207 §4.2) and sends EHLO again. A server that does not offer
 * STARTTLS, or refuses it, ends the session (ERR_STARTTLS): a TLS load
 * never falls back to plaintext. Implicit TLS (RFC 8314) needs nothing
 * here but config.implicit_tls: the host wraps the whole session.
 *
 * With config.auth_user the session authenticates once, after the EHLO
 * that ends the greeting (the one inside TLS with STARTTLS) and before
 * its first MAIL: "AUTH PLAIN" with the initial response base64(NUL user
 * NUL password) (RFC 4954 §4, RFC 4616 §2), then it waits for the reply.
 * 235 reports EV_AUTH and the session goes idle; any other reply ends it
 * (ERR_AUTH; 421 is ERR_421 as anywhere). The session ends before AUTH
 * leaves when that last EHLO did not advertise the PLAIN mechanism
 * (ERR_AUTH_UNAVAILABLE), or when the session is not inside TLS
 * (STARTTLS done or config.implicit_tls) and config.auth_insecure is not
 * set (ERR_AUTH_CLEAR): a password never goes out in clear by accident
 * (RFC 4954 §4). The user and password are borrowed from the config for
 * the session's life; the AUTH line leaves through output like any
 * command, and the copies made to build it are wiped.
 *
 * With config.pipelining and a server that advertises PIPELINING, MAIL,
 * every RCPT and DATA leave in one write (RFC 2920 §3.1: DATA ends the
 * group). A transaction that fails (MAIL refused, no RCPT accepted, DATA
 * refused, final reply not 2xx) is followed by RSET so the next MAIL
 * starts clean. 421 at any point ends the session.
 *
 * The body handed to bench_client_start_message() is borrowed until the
 * next bench_client_output_sent() that covers it; it must already be
 * dot-stuffed and end with CRLF "." CRLF (bench_client_make_body builds
 * one). Pointers from bench_client_output() are valid until the next call
 * of any other function. One session belongs to one thread.
 *
 * Limits: reply line BENCH_CLIENT_MAX_LINE octets, buffered input
 * BENCH_CLIENT_MAX_INPUT, recipients BENCH_CLIENT_MAX_RCPTS; past them the
 * session ends with a protocol error. AUTH user 1..BENCH_CLIENT_MAX_AUTH_USER
 * and password 1..BENCH_CLIENT_MAX_AUTH_PASSWORD octets (RFC 4616 §2: both
 * non-empty; the daemon's limits), checked by bench_client_init. */
#ifndef POSTSEAL_BENCH_BENCH_CLIENT_H
#define POSTSEAL_BENCH_BENCH_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define BENCH_CLIENT_MAX_LINE 2048
#define BENCH_CLIENT_MAX_INPUT (64 * 1024)
#define BENCH_CLIENT_MAX_RCPTS 1000
#define BENCH_CLIENT_MAX_AUTH_USER 255
#define BENCH_CLIENT_MAX_AUTH_PASSWORD 1024

/* Reply counters by class (index 2..5 used), one block per thread. */
struct bench_client_stats {
  uint64_t replies[6];  /* every reply the server sent */
  uint64_t rcpt[6];     /* replies to RCPT */
  uint64_t messages[6]; /* transaction outcomes (see bench_client_result) */
  uint64_t auth[6];     /* replies to AUTH */
};

struct bench_client_config {
  const char *helo;          /* EHLO argument */
  const char *from;          /* MAIL FROM mailbox */
  const char *to_domain;     /* recipients are rcpt<k>@to_domain */
  unsigned num_rcpts;        /* per message, 1..BENCH_CLIENT_MAX_RCPTS */
  int pipelining;            /* use PIPELINING when the server offers it */
  int starttls;              /* STARTTLS after the first EHLO (RFC 3207) */
  int implicit_tls;          /* the host runs the whole session in TLS */
  const char *auth_user;     /* AUTH PLAIN as this user; NULL: no AUTH */
  const char *auth_password; /* with auth_user */
  int auth_insecure;         /* AUTH even outside TLS */
  struct bench_client_stats *stats; /* may be NULL */
};

enum bench_client_state {
  BENCH_CLIENT_GREETING, /* waiting for 220 */
  BENCH_CLIENT_EHLO,     /* waiting for the EHLO reply */
  BENCH_CLIENT_STARTTLS, /* STARTTLS sent, waiting for 220 */
  BENCH_CLIENT_TLS_WAIT, /* 220 seen: the host starts TLS */
  BENCH_CLIENT_AUTH,     /* AUTH sent, waiting for 235 */
  BENCH_CLIENT_IDLE,     /* between transactions; the host decides */
  BENCH_CLIENT_TXN,      /* MAIL/RCPT/DATA replies owed */
  BENCH_CLIENT_BODY,     /* body sent, final reply owed */
  BENCH_CLIENT_RSET,     /* RSET after a failed transaction */
  BENCH_CLIENT_QUIT,     /* QUIT sent */
  BENCH_CLIENT_CLOSED,   /* session over */
};

enum bench_client_event {
  BENCH_CLIENT_NEED_INPUT,  /* send the output, wait for more replies */
  BENCH_CLIENT_EV_GREETING, /* 220 seen, EHLO queued */
  BENCH_CLIENT_EV_EHLO,     /* EHLO answered 250 */
  BENCH_CLIENT_EV_READY,    /* idle: start_message() or quit() */
  BENCH_CLIENT_EV_BODY,     /* 354 seen, header and body queued */
  BENCH_CLIENT_EV_MESSAGE,  /* transaction over: bench_client_result() */
  BENCH_CLIENT_EV_CLOSE,    /* session over: bench_client_error() */
  BENCH_CLIENT_EV_STARTTLS, /* 220 to STARTTLS: start TLS, then
                               bench_client_tls_started() */
  BENCH_CLIENT_EV_AUTH,     /* 235 to AUTH: authenticated */
};

enum bench_client_error {
  BENCH_CLIENT_OK,           /* QUIT answered */
  BENCH_CLIENT_ERR_REFUSED,  /* greeting or EHLO not 2xx */
  BENCH_CLIENT_ERR_421,      /* the server closed the session with 421 */
  BENCH_CLIENT_ERR_PROTOCOL, /* malformed or unexpected reply, limits */
  BENCH_CLIENT_ERR_STARTTLS, /* STARTTLS not offered, or refused */
  BENCH_CLIENT_ERR_AUTH,     /* AUTH answered other than 235 */
  BENCH_CLIENT_ERR_AUTH_UNAVAILABLE, /* AUTH PLAIN not advertised */
  BENCH_CLIENT_ERR_AUTH_CLEAR,       /* AUTH would leave outside TLS */
};

/* What the host gives per message: its serial (for the Message-ID), the
 * Date header value and the shared pre-stuffed body. */
struct bench_client_message {
  uint64_t serial;
  const char *run_id; /* Message-ID right of the serial */
  const char *date;   /* RFC 5322 date-time */
  const uint8_t *body;
  size_t body_len;
};

struct bench_client {
  struct bench_client_config cfg;
  enum bench_client_state state;
  struct buf in;       /* received, not yet parsed */
  struct buf out;      /* commands and the message header to send */
  const uint8_t *body; /* borrowed, follows out */
  size_t body_len;
  const struct bench_client_message *msg; /* during TXN only */
  struct bench_client_message msg_copy;
  int server_pipelining; /* EHLO advertised PIPELINING */
  int server_starttls;   /* EHLO advertised STARTTLS */
  int server_auth_plain; /* EHLO advertised AUTH with PLAIN */
  int tls;               /* bench_client_tls_started() was called */
  int pipelined_txn;     /* this transaction's commands went in one write */
  /* reply being assembled (multi-line) */
  int reply_code;
  /* transaction progress */
  unsigned replies_owed; /* in TXN: replies still to come */
  unsigned next_rcpt;    /* non-pipelined: next RCPT to send */
  unsigned rcpt_ok, rcpt_4xx, rcpt_5xx;
  int mail_class; /* 0 until the MAIL reply */
  int result;     /* class of the finished transaction (2..5) */
  int last_code;
  enum bench_client_error error;
  enum bench_client_event pending[4]; /* events queued by one reply */
  unsigned num_pending, pending_head;
};

/* bench_client_init prepares a session that waits for the greeting.
 * Returns 0, or -1 on a bad configuration (AUTH user or password empty
 * or past its limit, a password without a user or the reverse). */
int bench_client_init(struct bench_client *bc,
                      const struct bench_client_config *cfg);
void bench_client_cleanup(struct bench_client *bc);

/* bench_client_feed buffers received bytes. Returns 0, or -1 past
 * BENCH_CLIENT_MAX_INPUT (the session is then closed by next()). */
int bench_client_feed(struct bench_client *bc, const uint8_t *in,
                      size_t in_len);
enum bench_client_event bench_client_next(struct bench_client *bc);

/* bench_client_start_message begins a transaction; only in IDLE. m and
 * its strings are copied by pointer and must live until EV_MESSAGE. */
void bench_client_start_message(struct bench_client *bc,
                                const struct bench_client_message *m);
/* bench_client_quit sends QUIT; only in IDLE. */
void bench_client_quit(struct bench_client *bc);

/* bench_client_tls_started: after EV_STARTTLS the host has started TLS
 * (its handshake may still run: the EHLO queued now leaves inside TLS).
 * Input buffered from before is dropped, unread. Only in TLS_WAIT. */
void bench_client_tls_started(struct bench_client *bc);

/* bench_client_set_stats points the counters elsewhere (the host keeps
 * warm-up replies out of its measured block); NULL counts nothing. */
void bench_client_set_stats(struct bench_client *bc,
                            struct bench_client_stats *stats);

/* bench_client_output gives at most two pieces to send, in order. */
void bench_client_output(const struct bench_client *bc, const uint8_t **out1,
                         size_t *out1_len, const uint8_t **out2,
                         size_t *out2_len);
void bench_client_output_sent(struct bench_client *bc, size_t n);

/* Class (2, 4 or 5) of the transaction that EV_MESSAGE reported: 2 when
 * the message was accepted; else the class of the reply that ended it
 * (all recipients refused: 4 if any refusal was temporary). */
int bench_client_result(const struct bench_client *bc);
/* The last reply code seen (for logs). */
int bench_client_last_code(const struct bench_client *bc);
enum bench_client_error bench_client_error(const struct bench_client *bc);
/* 1 while a transaction is in progress (a failure now loses a message). */
int bench_client_in_txn(const struct bench_client *bc);

/* bench_client_make_body builds a body of `size` octets (before
 * stuffing; size 1 gives 2, a lone CRLF) of 76-character lines with CRLF
 * (the last ones shorter), dot-stuffed, followed by the end-of-data
 * ".\r\n". Returns 0 or -1 (allocation). */
int bench_client_make_body(struct buf *out, size_t size);

#endif
