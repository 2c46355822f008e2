/* proto/smtp_server.h — sans-I/O SMTP server engine (RFC 5321 + ESMTP).
 *
 * Owns: one SMTP session's protocol state: input buffer, reply output
 * buffer, the current transaction's envelope and body. Never touches a
 * socket or the clock: the host (core/daemon) feeds received bytes with
 * smtp_server_feed(), pulls events with smtp_server_next(), sends what
 * smtp_server_output() holds, and answers the events that need a verdict.
 *
 * Extensions: PIPELINING (RFC 2920), 8BITMIME (RFC 6152), SIZE (RFC 1870),
 * ENHANCEDSTATUSCODES (RFC 2034/3463), SMTPUTF8 (RFC 6531), CHUNKING/BDAT
 * (RFC 3030), DSN parameters (RFC 3461: RET, ENVID on MAIL; NOTIFY, ORCPT on
 * RCPT: parsed, validated and kept in the envelope).
 *
 * Event protocol:
 *   for each recv: smtp_server_feed(s, bytes, n);
 *   loop: ev = smtp_server_next(s);
 *     SMTP_SERVER_NEED_INPUT     -> send output, wait for more bytes
 *     SMTP_SERVER_EV_MAIL        -> verdict: smtp_server_accept() or _reject()
 *     SMTP_SERVER_EV_RCPT        -> verdict (relay access is decided here)
 *     SMTP_SERVER_EV_MESSAGE     -> body complete; host commits it, later
 *                                   calls smtp_server_reply_queued() or
 *                                   _reject() (4xx if the spool failed)
 *     SMTP_SERVER_WAIT_VERDICT   -> a verdict is still owed; next() does
 *                                   nothing until it is given
 *     SMTP_SERVER_EV_HELO, _EV_RSET -> informational (transaction reset)
 *     SMTP_SERVER_EV_CLOSE       -> flush output, then close the connection
 * While a verdict is owed, input stays buffered (pipelined commands wait).
 *
 * Limits (struct smtp_server_limits) are checked before data is
 * interpreted; each violation gets the RFC reply code: command line > 512
 * octets (500 5.5.2, session continues), recipients (452 4.5.3).
 *
 * Message content: DATA and BDAT bodies pass one scanner with the same
 * rules, since without BINARYMIME (not offered) a BDAT body is the same
 * CRLF-line text as a DATA body (RFC 3030 §2): text line > 1000 octets
 * incl. CRLF (500 5.5.2), a CR or LF not part of a CRLF (550 5.6.0),
 * header section (552 5.3.4), SIZE (552 5.3.4). Only <CRLF>.<CRLF> ends
 * DATA, and a bad DATA message is refused after that end, so smuggled
 * commands never become a message nor run. BDAT octets are counted, not
 * dot-stuffed, and "." lines are plain text; lines, CRLFs and the header's
 * empty line may be split across chunks (a CR ending one chunk and a LF
 * starting the next make a CRLF). A bad BDAT message is refused in reply to
 * the chunk in which it is first known bad (a CR ending a chunk is judged
 * by the next chunk's first octet, or at LAST), and the transaction ends:
 * chunks the client pipelined after it are still read by their counts and
 * refused 503 5.5.1, never taken as commands. A bad message never gives
 * EV_MESSAGE. A BDAT message whose last line lacks CRLF gets one appended
 * (checked against the limits like received octets), so a body always
 * ends in CRLF or is empty.
 *
 * Bytes pipelined after a command that must end a group (EHLO, HELO,
 * DATA; RFC 2920 §3.1) close the session with 554 5.5.0. Too many errors
 * (limits.max_errors) close with 421 4.7.0.
 *
 * Thread: one session belongs to one thread. Pointers returned by getters
 * stay valid until the next call of feed/next/accept/reject/reply_queued. */
#ifndef POSTSEAL_PROTO_SMTP_SERVER_H
#define POSTSEAL_PROTO_SMTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/* Extensions a server advertises (bitmask for smtp_server_config). */
enum {
  SMTP_EXT_PIPELINING = 1u << 0,
  SMTP_EXT_8BITMIME = 1u << 1,
  SMTP_EXT_SIZE = 1u << 2,
  SMTP_EXT_ENHANCEDSTATUSCODES = 1u << 3,
  SMTP_EXT_SMTPUTF8 = 1u << 4,
  SMTP_EXT_CHUNKING = 1u << 5,
  SMTP_EXT_DSN = 1u << 6,
  SMTP_EXT_ALL = (1u << 7) - 1,
};

/* Verbs, for the per-verb command counters. */
enum smtp_verb {
  SMTP_VERB_HELO,
  SMTP_VERB_EHLO,
  SMTP_VERB_MAIL,
  SMTP_VERB_RCPT,
  SMTP_VERB_DATA,
  SMTP_VERB_BDAT,
  SMTP_VERB_RSET,
  SMTP_VERB_NOOP,
  SMTP_VERB_QUIT,
  SMTP_VERB_VRFY,
  SMTP_VERB_HELP,
  SMTP_VERB_UNKNOWN, /* anything else, including EXPN, STARTTLS, AUTH */
  SMTP_VERB_COUNT,
};

/* Counters the engine increments; the host passes one block per thread
 * (plain integers: one thread writes, the metrics scrape sums). */
struct smtp_server_stats {
  uint64_t commands[SMTP_VERB_COUNT];
  uint64_t replies[6]; /* by class: index 2..5 used (2xx..5xx) */
};

struct smtp_server_limits {
  size_t max_command_line; /* octets incl. CRLF; RFC 5321 4.5.3.1.4: 512 */
  size_t max_text_line;    /* octets incl. CRLF; RFC 5321 4.5.3.1.6: 1000 */
  size_t max_message_size; /* SIZE, octets of body as received */
  size_t max_recipients;   /* per transaction; RFC 5321 4.5.3.1.8: >= 100 */
  size_t max_header_size;  /* octets of the header section */
  size_t max_input_buffer; /* buffered unprocessed input; feed fails past it */
  unsigned max_errors;     /* protocol errors before 421 and close */
};

/* smtp_server_limits_default fills the RFC values: 512, 1000, 10 MiB, 100,
 * 1 MiB, 256 KiB, 20. */
void smtp_server_limits_default(struct smtp_server_limits *out_limits);

struct smtp_server_config {
  const char *hostname; /* our name: greeting, EHLO reply (copied) */
  unsigned extensions;  /* SMTP_EXT_* advertised in EHLO */
  struct smtp_server_limits limits;
  struct smtp_server_stats *stats; /* may be NULL */
};

enum smtp_server_event {
  SMTP_SERVER_NEED_INPUT,   /* all buffered input processed */
  SMTP_SERVER_WAIT_VERDICT, /* the host still owes a verdict */
  SMTP_SERVER_EV_HELO,      /* HELO/EHLO accepted; smtp_server_helo() */
  SMTP_SERVER_EV_MAIL,      /* MAIL parsed; envelope has sender; verdict */
  SMTP_SERVER_EV_RCPT,    /* RCPT parsed; smtp_server_pending_rcpt(); verdict */
  SMTP_SERVER_EV_MESSAGE, /* body complete (DATA or BDAT LAST); verdict */
  SMTP_SERVER_EV_RSET,    /* transaction with an accepted MAIL discarded by
                             RSET or HELO/EHLO (not after a message) */
  SMTP_SERVER_EV_CLOSE,   /* QUIT, fatal error or 421: flush and close */
};

/* RFC 1891/3461 NOTIFY bits; 0 means no NOTIFY parameter given. */
enum {
  SMTP_NOTIFY_NEVER = 1u << 0,
  SMTP_NOTIFY_SUCCESS = 1u << 1,
  SMTP_NOTIFY_FAILURE = 1u << 2,
  SMTP_NOTIFY_DELAY = 1u << 3,
};

enum smtp_body_type { SMTP_BODY_NONE, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME };
enum smtp_ret { SMTP_RET_NONE, SMTP_RET_FULL, SMTP_RET_HDRS };

/* Strings are NUL-terminated, decoded (xtext decoded for ENVID and ORCPT). */
struct smtp_rcpt {
  char *addr;       /* mailbox without <>; never empty; may be the bare
                       "Postmaster" of RFC 5321 §4.1.1.3 (no domain) */
  unsigned notify;  /* SMTP_NOTIFY_* bits */
  char *orcpt;      /* "rfc822;user@host" as given, decoded, or NULL */
  int source_route; /* 1 if the path had an RFC 5321 A-d-l (@a,@b:u@d);
                       the route is dropped (RFC 5321 C), addr is u@d */
};

struct smtp_envelope {
  char *sender;     /* mailbox without <>; "" for the null sender <> */
  size_t size_hint; /* SIZE= value, 0 if none */
  enum smtp_body_type body;
  enum smtp_ret ret;
  char *envid;             /* ENVID, or NULL */
  int smtputf8;            /* 1 if SMTPUTF8 was given */
  struct smtp_rcpt *rcpts; /* accepted recipients */
  size_t num_rcpts;
};

/* Which RFC 5321 §4.5.3.2 timeout applies now, for the host's timer. */
enum smtp_server_timeout_class {
  SMTP_TIMEOUT_COMMAND, /* waiting for a command: 5 min */
  SMTP_TIMEOUT_DATA,    /* inside DATA/BDAT, between blocks: 3 min */
  SMTP_TIMEOUT_NONE,    /* waiting on the host (verdict): no peer timer */
};

struct smtp_server;

/* smtp_server_new allocates a session and queues the 220 greeting.
 * Returns NULL on allocation failure. */
struct smtp_server *smtp_server_new(const struct smtp_server_config *config);
void smtp_server_free(struct smtp_server *s);

/* smtp_server_feed buffers received bytes. Returns 0, or -1 when the input
 * buffer would pass limits.max_input_buffer (the host should stop reading
 * until next() has drained it) or allocation failed; on -1 nothing of `in`
 * was buffered (feed it again later). After EV_CLOSE input is dropped. */
int smtp_server_feed(struct smtp_server *s, const uint8_t *in, size_t in_len);

/* smtp_server_next processes buffered input until an event. */
enum smtp_server_event smtp_server_next(struct smtp_server *s);

/* Verdicts. accept: 250 with the engine's standard text (2.1.0 sender ok,
 * 2.1.5 recipient ok, "250 2.0.0 Ok: queued" for a message). reject:
 * `code` 400..599, `enhanced` like "5.7.1" (always sent, as Postfix does),
 * `text` one line without CR/LF (controls are replaced by spaces). For
 * EV_MESSAGE, reply_queued sends "250 2.0.0 Ok: queued as <queue_id>".
 * Calling a verdict with none owed is a bug (asserts). */
void smtp_server_accept(struct smtp_server *s);
void smtp_server_reject(struct smtp_server *s, int code, const char *enhanced,
                        const char *text);
void smtp_server_reply_queued(struct smtp_server *s, const char *queue_id);

/* smtp_server_output gives the bytes to send; smtp_server_output_sent drops
 * the first n of them once sent. */
void smtp_server_output(const struct smtp_server *s, const uint8_t **out,
                        size_t *out_len);
void smtp_server_output_sent(struct smtp_server *s, size_t n);

/* Getters. */
const char *smtp_server_helo(const struct smtp_server *s); /* NULL before */
/* "SMTP", "ESMTP" or "UTF8SMTP" (RFC 3848, RFC 6531 §3.7.3) for Received. */
const char *smtp_server_protocol(const struct smtp_server *s);
const struct smtp_envelope *smtp_server_envelope(const struct smtp_server *s);
/* The recipient of the EV_RCPT awaiting its verdict; NULL if none. */
const struct smtp_rcpt *smtp_server_pending_rcpt(const struct smtp_server *s);
/* smtp_server_take_body moves the complete body (as received, dot-unstuffed,
 * CRLF line ends; see "Message content") into out_body, which the caller
 * then owns. Only during EV_MESSAGE, before its verdict. */
void smtp_server_take_body(struct smtp_server *s, struct buf *out_body);

enum smtp_server_timeout_class
smtp_server_timeout_class(const struct smtp_server *s);
/* smtp_server_timeout: the host's timer fired; queues 421 4.4.2 and the
 * next event is EV_CLOSE. */
void smtp_server_timeout(struct smtp_server *s);
/* smtp_server_shutdown: the daemon is stopping; queues 421 4.3.2 and the
 * next event is EV_CLOSE. Used when the session is idle between commands. */
void smtp_server_shutdown(struct smtp_server *s);
/* 1 if the session sits between transactions with no buffered input (safe
 * to close at shutdown without losing a message in flight). */
int smtp_server_is_idle(const struct smtp_server *s);

#endif
