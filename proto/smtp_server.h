/* proto/smtp_server.h — sans-I/O SMTP server engine (RFC 5321 + ESMTP).
 *
 * Owns: one SMTP session's protocol state: input buffer, reply output
 * buffer, the current transaction's envelope and body, and during AUTH the
 * client's credentials. Never touches a socket, TLS or the clock: the host
 * (core/daemon) feeds received (decrypted) bytes with smtp_server_feed(),
 * pulls events with smtp_server_next(), sends what smtp_server_output()
 * holds, answers the events that need a verdict, runs the TLS handshake
 * and checks passwords.
 *
 * Extensions: PIPELINING (RFC 2920), 8BITMIME (RFC 6152), SIZE (RFC 1870),
 * ENHANCEDSTATUSCODES (RFC 2034/3463), SMTPUTF8 (RFC 6531), CHUNKING/BDAT
 * (RFC 3030), DSN parameters (RFC 3461: RET, ENVID on MAIL; NOTIFY, ORCPT on
 * RCPT: parsed, validated and kept in the envelope); those are
 * SMTP_EXT_ALL. The host opts in to STARTTLS (RFC 3207) and AUTH PLAIN
 * LOGIN (RFC 4954, RFC 4616) with SMTP_EXT_STARTTLS and SMTP_EXT_AUTH.
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
 *     SMTP_SERVER_EV_STARTTLS    -> "220 2.0.0 Ready to start TLS" is queued:
 *                                   send the output in clear, run the
 *                                   handshake, then smtp_server_tls_started()
 *                                   (on failure just close)
 *     SMTP_SERVER_EV_AUTH        -> check smtp_server_auth_user() /
 *                                   _auth_password(), then, maybe later and
 *                                   from the session's thread,
 *                                   smtp_server_auth_result(s, ok), or
 *                                   _reject() (e.g. 454 4.7.0 when rate
 *                                   limited)
 *     SMTP_SERVER_WAIT_VERDICT   -> a verdict (or tls_started) is still
 *                                   owed; next() does nothing until it is
 *                                   given
 *     SMTP_SERVER_EV_HELO, _EV_RSET -> informational (transaction reset)
 *     SMTP_SERVER_EV_CLOSE       -> flush output, then close the connection
 * While a verdict is owed, input stays buffered (pipelined commands wait).
 * accept() is not a verdict for EV_AUTH: it is a bug (asserts) and counts
 * as a failed authentication, so a careless host never lets anyone in.
 *
 * STARTTLS (RFC 3207): offered in EHLO while TLS is not active. Refused
 * 502 5.5.1 when SMTP_EXT_STARTTLS is off (not 454: it will never be
 * available on this session), 501 5.5.4 with a parameter, 503 5.5.1 once
 * TLS is active or inside a mail transaction. On success every octet
 * buffered after the STARTTLS line is discarded, never executed
 * (CVE-2011-0411), and so is anything fed until smtp_server_tls_started();
 * smtp_server_discarded() counts them for the log. STARTTLS ends a
 * pipelined group without the 554 of EHLO/DATA. tls_started resets the
 * session (RFC 3207 §4.2): HELO/EHLO name, transaction and AUTH are
 * forgotten, no new greeting is sent and the client must EHLO again.
 * config.tls_active starts the session inside TLS (RFC 8314 implicit TLS).
 * config.tls_required: before TLS every command but NOOP, EHLO, STARTTLS,
 * QUIT (and BDAT, whose chunk must still be read; it fails 503 without
 * MAIL) gets 530 5.7.0 Must issue a STARTTLS command first (RFC 3207 §4);
 * without SMTP_EXT_STARTTLS or tls_active no mail can pass (the host's
 * configuration should not allow that).
 *
 * AUTH (RFC 4954): "AUTH PLAIN LOGIN" is offered only inside TLS, so no
 * password travels in clear (§4). AUTH mech [initial-response] is refused,
 * in this order: 502 5.5.1 without SMTP_EXT_AUTH; before TLS 530 5.7.0 if
 * tls_required, else 538 5.7.11; 503 5.5.1 when already authenticated,
 * inside a mail transaction or before EHLO; 501 5.5.4 without a mechanism;
 * 504 5.5.4 for another mechanism. Exchange: "334 " (PLAIN) or "334
 * VXNlcm5hbWU6" / "334 UGFzc3dvcmQ6" (LOGIN), an initial response ("="
 * for empty) skipping the first. Each response is strict base64: "*"
 * cancels (501 5.0.0), bad base64 or a PLAIN message without exactly
 * authzid NUL authcid NUL passwd is 501 5.5.2, a line over 12288 octets
 * plus CRLF 500 5.5.6; an authcid not of 1..255 octets without controls
 * (UTF-8 must be well formed), a password over 1024 octets or holding a
 * NUL, or an authzid other than empty or the authcid (we do not act for
 * others) is 535 5.7.8. Then EV_AUTH; the verdict gives 235 2.7.0, or 535
 * 5.7.8 Authentication credentials invalid, a protocol error. The password
 * is wiped when the verdict is given, when the exchange fails and on free;
 * it and the raw responses never reach a reply, and the input bytes that
 * carried them are wiped once read. Once authenticated, a new EHLO keeps it;
 * STARTTLS cannot follow (AUTH needs TLS already). config.auth_required:
 * MAIL before AUTH succeeds gets 530 5.7.0 Authentication required.
 * MAIL's AUTH= parameter (§5) is xtext or "<>", checked when SMTP_EXT_AUTH
 * is on (501 5.5.4), and reaches the envelope only then: decoded from an
 * authenticated client; "" (as if AUTH=<>) from any other, as §5 says.
 * Without SMTP_EXT_AUTH it is accepted and ignored, as before.
 *
 * Limits (struct smtp_server_limits) are checked before data is
 * interpreted; each violation gets the RFC reply code: command line > 512
 * octets, + 500 when SMTP_EXT_AUTH is on (RFC 4954 §5) (500 5.5.2, session
 * continues), recipients (452 4.5.3), AUTH as above. With SMTP_EXT_AUTH
 * max_input_buffer is raised to hold a whole SASL response line.
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
 * DATA; RFC 2920 §3.1) close the session with 554 5.5.0; after STARTTLS
 * they are discarded (above). Too many errors (limits.max_errors, failed
 * AUTH included) close with 421 4.7.0.
 *
 * Thread: one session belongs to one thread. Pointers returned by getters
 * stay valid until the next call of feed/next/accept/reject/reply_queued/
 * auth_result/tls_started. */
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
  SMTP_EXT_ALL = (1u << 7) - 1,  /* the above; not STARTTLS, AUTH */
  SMTP_EXT_STARTTLS = 1u << 7,   /* RFC 3207; offered while not in TLS */
  SMTP_EXT_AUTH = 1u << 8,       /* RFC 4954 PLAIN LOGIN; offered in TLS */
  SMTP_EXT_REQUIRETLS = 1u << 9, /* RFC 8689; offered (and its MAIL
                                    parameter taken) only in TLS */
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
  SMTP_VERB_STARTTLS,
  SMTP_VERB_AUTH,    /* the AUTH command; not its response lines */
  SMTP_VERB_UNKNOWN, /* anything else, including EXPN */
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
  int tls_active;    /* the session starts inside TLS (RFC 8314) */
  int tls_required;  /* 530 before TLS (RFC 3207 §4); see the contract */
  int auth_required; /* MAIL needs a successful AUTH first (530) */
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
  SMTP_SERVER_EV_STARTTLS, /* 220 queued: send it, handshake, tls_started */
  SMTP_SERVER_EV_AUTH,     /* credentials complete; auth_result owed */
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
  int requiretls;          /* 1 if REQUIRETLS was given (RFC 8689) */
  char *auth;              /* RFC 4954 §5 AUTH= mailbox, decoded; "" for
                              <> or an unauthenticated client; NULL if
                              absent or SMTP_EXT_AUTH is off */
  struct smtp_rcpt *rcpts; /* accepted recipients */
  size_t num_rcpts;
};

/* Which RFC 5321 §4.5.3.2 timeout applies now, for the host's timer. */
enum smtp_server_timeout_class {
  SMTP_TIMEOUT_COMMAND, /* waiting for a command: 5 min */
  SMTP_TIMEOUT_DATA,    /* inside DATA/BDAT, between blocks: 3 min */
  SMTP_TIMEOUT_NONE,    /* waiting on the host (a verdict, the AUTH check,
                           the TLS handshake, whose timer is the host's):
                           no peer timer */
};

struct smtp_server;

/* smtp_server_new allocates a session and queues the 220 greeting.
 * Returns NULL on allocation failure. */
struct smtp_server *smtp_server_new(const struct smtp_server_config *config);
void smtp_server_free(struct smtp_server *s);

/* smtp_server_feed buffers received bytes. Returns 0, or -1 when the input
 * buffer would pass limits.max_input_buffer (the host should stop reading
 * until next() has drained it) or allocation failed; on -1 nothing of `in`
 * was buffered (feed it again later). After EV_CLOSE input is dropped;
 * between EV_STARTTLS and tls_started it is dropped and counted in
 * smtp_server_discarded() (it came in clear after the 220). */
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

/* smtp_server_auth_result is the verdict for EV_AUTH: ok 1 sends "235 2.7.0
 * Authentication successful" and the user stays authenticated; ok 0 sends
 * "535 5.7.8 Authentication credentials invalid" (a protocol error). The
 * password is wiped either way. */
void smtp_server_auth_result(struct smtp_server *s, int ok);

/* smtp_server_tls_started: after EV_STARTTLS the handshake succeeded; the
 * session restarts inside TLS (see the contract). Calling it at any other
 * time is a bug (asserts), except after EV_CLOSE, when it does nothing. */
void smtp_server_tls_started(struct smtp_server *s);

/* smtp_server_output gives the bytes to send; smtp_server_output_sent drops
 * the first n of them once sent. */
void smtp_server_output(const struct smtp_server *s, const uint8_t **out,
                        size_t *out_len);
void smtp_server_output_sent(struct smtp_server *s, size_t n);

/* Getters. */
const char *smtp_server_helo(const struct smtp_server *s); /* NULL before */
/* The WITH protocol for Received (RFC 3848, RFC 6531 §3.7.3): "SMTP" after
 * HELO, else ESMTP or UTF8SMTP (SMTPUTF8 in this transaction), plus "S"
 * inside TLS and "A" once authenticated: ESMTPS, ESMTPA, ESMTPSA, UTF8SMTPS,
 * UTF8SMTPA, UTF8SMTPSA. */
const char *smtp_server_protocol(const struct smtp_server *s);
/* 1 once the session runs inside TLS (config.tls_active, or tls_started). */
int smtp_server_tls_active(const struct smtp_server *s);
/* 1 once an AUTH got its successful verdict. */
int smtp_server_authenticated(const struct smtp_server *s);
/* The authcid: of the EV_AUTH awaiting its verdict, else of the successful
 * AUTH; NULL if neither. NUL-terminated, 1..255 octets, no controls. */
const char *smtp_server_auth_user(const struct smtp_server *s);
/* The password of the EV_AUTH awaiting its verdict (NUL-terminated, at most
 * 1024 octets, no NUL inside); NULL otherwise. Copy it, never log it. */
const char *smtp_server_auth_password(const struct smtp_server *s);
/* Octets the client sent in clear after STARTTLS, discarded unexecuted. */
size_t smtp_server_discarded(const struct smtp_server *s);
const struct smtp_envelope *smtp_server_envelope(const struct smtp_server *s);
/* The recipient of the EV_RCPT awaiting its verdict; NULL if none. */
const struct smtp_rcpt *smtp_server_pending_rcpt(const struct smtp_server *s);
/* smtp_server_take_body moves the complete body (as received, dot-unstuffed,
 * CRLF line ends; see "Message content") into out_body, which the caller
 * then owns. Only during EV_MESSAGE, before its verdict. */
void smtp_server_take_body(struct smtp_server *s, struct buf *out_body);
/* smtp_server_set_body_prefix: the transaction's message body starts with
 * these n octets (the host's trace header, so the body is not copied again
 * to put one on top): not checked, not counted toward SIZE or the header
 * limit. A later call replaces it (NULL, 0 drops it); the transaction's
 * end drops it. Takes effect when the body begins (DATA, first BDAT).
 * Returns 0, or -1 out of memory (the prefix is then dropped). */
int smtp_server_set_body_prefix(struct smtp_server *s, const uint8_t *p,
                                size_t n);
/* Octets of the prefix at the start of the body of the current EV_MESSAGE
 * (what take_body returns): 0 if none was set when the body began. */
size_t smtp_server_body_prefix_len(const struct smtp_server *s);

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
