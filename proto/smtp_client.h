/* proto/smtp_client.h — sans-I/O SMTP client engine (RFC 5321 + ESMTP),
 * and LMTP (RFC 2033) with config.lmtp.
 *
 * Owns: one outbound SMTP session's protocol state: the input buffer of
 * server bytes, the output buffer of bytes to send, the server's
 * capabilities, and the current transaction's per-recipient results. One
 * session carries any number of messages, one after the other (connection
 * reuse). Never touches a socket or the clock: the host (the delivery
 * agent in core/) connects, feeds received bytes with smtp_client_feed(),
 * pulls events with smtp_client_next(), sends what smtp_client_output()
 * holds, and runs the timer smtp_client_timeout_class() names.
 *
 * Event protocol:
 *   c = smtp_client_new(&config);            (then connect)
 *   for each recv: smtp_client_feed(c, bytes, n);  on EOF: smtp_client_eof(c)
 *   loop: ev = smtp_client_next(c);
 *     SMTP_CLIENT_NEED_INPUT  -> send output (keep sending while
 *                                smtp_client_output() is non-empty: the body
 *                                is produced as output drains), then read
 *     SMTP_CLIENT_EV_READY    -> idle: smtp_client_send_message(), _reset()
 *                                or _quit()
 *     SMTP_CLIENT_EV_STARTTLS -> the server said 220 to STARTTLS: feed no
 *                                more bytes, run the TLS handshake, then
 *                                smtp_client_tls_started() (EHLO again,
 *                                inside TLS) or smtp_client_tls_failed()
 *     SMTP_CLIENT_EV_RCPT_RESULT -> recipient smtp_client_event_rcpt() got
 *                                its RCPT verdict, smtp_client_reply()
 *                                (also in LMTP: see below)
 *     SMTP_CLIENT_EV_MESSAGE_DONE -> the message's result is final:
 *                                smtp_client_rcpt_result() per recipient,
 *                                smtp_client_reply() the message reply
 *     SMTP_CLIENT_EV_SESSION_ERROR -> the session failed:
 *                                smtp_client_session_error() and _reply()
 *     SMTP_CLIENT_EV_CLOSED   -> flush output, close the socket (repeats)
 * Every recipient of a message gets exactly one RCPT_RESULT, all before the
 * message's one MESSAGE_DONE; SESSION_ERROR comes after them. A recipient's
 * final status is read with smtp_client_rcpt_result() at MESSAGE_DONE, in
 * SMTP and LMTP alike: RCPT_RESULT of an accepted recipient says ACCEPTED.
 *
 * Protocol: 220 greeting (4xx: temporary, 5xx: permanent session error),
 * EHLO, HELO if EHLO got 5xx, STARTTLS if configured (see below). MAIL
 * with SIZE (RFC 1870), BODY=8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531),
 * RET/ENVID (RFC 3461), REQUIRETLS (RFC 8689) when offered; RCPT with
 * NOTIFY/ORCPT when DSN is offered. With PIPELINING (RFC 2920) MAIL, every
 * RCPT and DATA go as one group; with CHUNKING (RFC 3030, if configured)
 * MAIL and the RCPTs go as one group and BDAT chunks follow once a
 * recipient was accepted (pipelined, a few in flight, when PIPELINING is
 * offered too). The body is sent with its line ends made CRLF (a bare CR
 * or LF becomes CRLF, a missing final CRLF is added) and, for DATA,
 * dot-stuffed (RFC 5321 §4.5.2); so no bare CR or LF is ever sent.
 * Refusals made without asking the server (the recipients fail at once):
 * message.requiretls set but the session is not inside TLS or REQUIRETLS
 * is not offered (550 5.7.30, RFC 8689 §4.2.1 and §5; the MX lookup and
 * certificate checks it also asks for are the host's part), a message
 * larger than the announced SIZE (552 5.3.4), 8-bit content and no
 * 8BITMIME (554 5.6.3; conversion is later work), SMTPUTF8 needed and not
 * offered (553 5.6.7, RFC 6531 §3.2). SMTPUTF8 is needed for a non-ASCII
 * address, or for a message received with SMTPUTF8 whose content has 8-bit
 * octets; BODY=8BITMIME is sent for a message received so or with 8-bit
 * content, if offered (7-bit content needs no 8BITMIME).
 *
 * No valid recipient (RFC 2920 §3.1): the body is never sent. If the
 * pipelined DATA was refused, RSET follows; if a broken server answered it
 * 354 all the same, a lone "." ends the empty message (as Postfix does)
 * and RSET follows. RSET also follows any other transaction that ended
 * before its end-of-data reply, so the next message starts clean.
 *
 * LMTP (RFC 2033, config.lmtp): the greeting is LHLO, never EHLO or HELO;
 * a 5xx to LHLO is a permanent session error (no fallback), a 4xx a
 * temporary one. Its reply lists the capabilities as EHLO's does, and
 * PIPELINING (RFC 2033 §5 says servers must support it) is used only
 * when announced, as for SMTP; Dovecot announces it. Then the transaction
 * runs as above, except at the end of data: after the "." (§4.2), or
 * after BDAT LAST with CHUNKING (§4.3), the server sends one reply per
 * recipient accepted at RCPT, in RCPT order, and each decides its own
 * recipient: 2xx OK, 4xx DEFER, 5xx FAIL, and that reply is the one
 * smtp_client_rcpt_result() gives. Recipients refused at RCPT keep their
 * RCPT reply. RCPT_RESULT is still emitted at RCPT time with the RCPT
 * reply (so all RCPT_RESULTs precede the body in both protocols);
 * MESSAGE_DONE follows the last per-recipient reply, and its
 * smtp_client_reply() is that last reply. A 421, EOF, timeout or protocol
 * error in the middle of the per-recipient replies defers (with that
 * reply) the recipients whose reply had not arrived; those already
 * answered keep their result. A DATA refused before 354, a refused BDAT
 * chunk (after which BDAT LAST gets one reply, as from Dovecot) or a
 * client-side refusal end the message with one reply, as in SMTP.
 *
 * STARTTLS (RFC 3207), by config.tls, SMTP and LMTP alike (never with
 * config.tls_active: implicit TLS, RFC 8314; config.extensions does not
 * govern it). NONE (the default): never sent. MAY: sent when the EHLO or
 * LHLO reply offers it; if not offered (or HELO was used) or refused, the
 * session goes on in plaintext. REQUIRE: not offered is a temporary
 * session error "451 4.7.4 TLS is required, but was not offered by the
 * server"; a refused STARTTLS, 4xx or 5xx alike (the route's policy
 * failed, not the message), is "451 4.7.4 TLS is required, but the server
 * refused STARTTLS: <its reply>"; QUIT follows either. Both come before
 * any EV_READY, so no MAIL is ever sent in clear and no message is open:
 * the host defers those it meant to send, as after any temporary session
 * error.
 *
 * The exchange: STARTTLS is sent alone, nothing pipelined with it; a 2xx
 * answer (RFC 3207 §4: 220) gives EV_STARTTLS with that reply. All output
 * so far went in clear (none is left by then: the STARTTLS line was sent)
 * and none is produced until the host reports the handshake; the timeout
 * class is NONE meanwhile (the host times the handshake). Server bytes
 * buffered behind the 220, or fed before the handshake is reported, came
 * in clear where TLS was promised: a man in the middle may have put them
 * there to be read as replies inside TLS (the STARTTLS injection family,
 * CVE-2011-0411 and kin), so they are a protocol error that ends the
 * session ("451 4.5.0 protocol error: data after the STARTTLS reply ..."),
 * never read. So is a 220 read while the STARTTLS line is still in the
 * output: sent ahead of the command, it answers nothing (a host that
 * sends the output before feeding input, as it must, never sees that).
 * smtp_client_tls_started(): the capabilities are forgotten
 * (RFC 3207 §4.2) and EHLO (LHLO) goes again; EV_READY follows its reply,
 * with the new capabilities. smtp_client_tls_failed(): the stream is
 * unusable and the session ends as for a lost connection (no QUIT), with
 * "451 4.7.5 TLS handshake failed: <why>" (later, inside TLS: "451 4.7.5
 * TLS failed: <why> while ..."), which defers the open recipients.
 *
 * Failures: 421 at any point ends the session (temporary); a reply that
 * does not parse (bad code, bad continuation, line over
 * limits.max_reply_line, more than limits.max_reply_lines lines) is a
 * protocol error and ends the session; smtp_client_timeout() and
 * smtp_client_eof() end it too. Then every recipient whose fate is open is
 * deferred, with the 421 or a local 451 reply.
 *
 * Pipelining: a group (MAIL, up to limits.max_rcpts RCPTs, DATA) is
 * written at once, so the host must keep reading replies while it writes
 * (RFC 2920 §3.1's deadlock warning); a non-blocking loop does.
 *
 * Limits: output holds at most limits.max_output octets plus one BDAT chunk
 * and one command group (the body is produced as output drains, so a body
 * of any size needs no more memory); buffered input is at most
 * limits.max_input; a message has at most limits.max_rcpts recipients.
 *
 * Thread: one session belongs to one thread. The message given to
 * smtp_client_send_message() (its strings, recipients and body spans) is
 * read, not copied: it must stay valid and unchanged until its
 * MESSAGE_DONE (or CLOSED). Pointers returned by getters stay valid until
 * the next call of next/feed/send_message/reset/quit/timeout/eof/
 * tls_started/tls_failed. */
#ifndef POSTSEAL_PROTO_SMTP_CLIENT_H
#define POSTSEAL_PROTO_SMTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "proto/smtp_reply.h"
#include "proto/smtp_server.h" /* SMTP_NOTIFY_*, enum smtp_ret (spool's) */

/* Server capabilities from the EHLO reply, and the extensions the client
 * may use (config.extensions). */
enum {
  SMTP_CLIENT_EXT_PIPELINING = 1u << 0,
  SMTP_CLIENT_EXT_SIZE = 1u << 1,
  SMTP_CLIENT_EXT_8BITMIME = 1u << 2,
  SMTP_CLIENT_EXT_SMTPUTF8 = 1u << 3,
  SMTP_CLIENT_EXT_CHUNKING = 1u << 4,
  SMTP_CLIENT_EXT_DSN = 1u << 5,
  SMTP_CLIENT_EXT_ENHANCEDSTATUSCODES = 1u << 6,
  SMTP_CLIENT_EXT_STARTTLS = 1u << 7,   /* used as config.tls says */
  SMTP_CLIENT_EXT_REQUIRETLS = 1u << 8, /* RFC 8689; used inside TLS */
  SMTP_CLIENT_EXT_ALL = (1u << 9) - 1,
};

/* When to send STARTTLS (RFC 3207); see the contract above. */
enum smtp_client_tls_mode {
  SMTP_CLIENT_TLS_NONE,    /* never (the default) */
  SMTP_CLIENT_TLS_MAY,     /* when offered; else, or refused: plaintext */
  SMTP_CLIENT_TLS_REQUIRE, /* offered and accepted, or a temporary error */
};

struct smtp_client_limits {
  size_t max_reply_line;  /* octets incl. CRLF; RFC 5321 4.5.3.1.5: 512 */
  size_t max_reply_lines; /* lines of one reply (EHLO lists many) */
  size_t max_output;      /* body octets queued ahead of the socket */
  size_t max_input;       /* buffered unparsed input; feed fails past it */
  size_t max_rcpts;       /* recipients of one message */
};

struct smtp_client_config {
  const char *helo_name; /* our name for EHLO/HELO/LHLO (copied) */
  int lmtp;              /* 1: speak LMTP (RFC 2033), see above; 0: SMTP */
  unsigned extensions;   /* SMTP_CLIENT_EXT_* we use when offered */
  size_t chunk_size;     /* BDAT chunk octets */
  struct smtp_client_limits limits;
  enum smtp_client_tls_mode tls;
  int tls_active; /* 1: the connection is TLS already (port 465) */
};

/* smtp_client_config_default: helo_name "localhost", SMTP (lmtp 0), every
 * extension but CHUNKING, chunk 64 KiB; limits 512, 100, 64 KiB, 64 KiB,
 * 1000; tls NONE, tls_active 0 (what a zeroed config says too). */
void smtp_client_config_default(struct smtp_client_config *out_config);

struct smtp_client_rcpt {
  const char *addr;  /* mailbox without <> */
  unsigned notify;   /* SMTP_NOTIFY_* bits; 0: no NOTIFY */
  const char *orcpt; /* "addr-type;address" decoded, or NULL */
};

/* A read-only piece of the message as spooled: CRLF line ends (bare CR
 * and LF are tolerated and fixed), not dot-stuffed. */
struct smtp_client_span {
  const uint8_t *data;
  size_t len;
};

struct smtp_client_message {
  const char *sender; /* mailbox without <>; "" for the null sender */
  enum smtp_ret ret;  /* RET=, with DSN */
  const char *envid;  /* ENVID decoded, or NULL */
  int body_8bit;      /* received as BODY=8BITMIME */
  int smtputf8;       /* received with SMTPUTF8 */
  const struct smtp_client_rcpt *rcpts;
  size_t num_rcpts;
  const struct smtp_client_span *body;
  size_t num_body;
  int requiretls; /* RFC 8689: only over TLS to a server offering it */
};

enum smtp_client_event {
  SMTP_CLIENT_NEED_INPUT,
  SMTP_CLIENT_EV_READY,
  SMTP_CLIENT_EV_RCPT_RESULT,
  SMTP_CLIENT_EV_MESSAGE_DONE,
  SMTP_CLIENT_EV_SESSION_ERROR,
  SMTP_CLIENT_EV_CLOSED,
  SMTP_CLIENT_EV_STARTTLS, /* 220 to STARTTLS: the host's handshake */
};

/* A recipient's classification; final ones after MESSAGE_DONE. */
enum smtp_client_status {
  SMTP_CLIENT_PENDING,  /* no verdict yet */
  SMTP_CLIENT_ACCEPTED, /* RCPT accepted, message not finished */
  SMTP_CLIENT_OK,       /* delivered: 2xx at the end of data */
  SMTP_CLIENT_DEFER,    /* temporary failure: try again later */
  SMTP_CLIENT_FAIL,     /* permanent failure: bounce */
};

enum smtp_client_error {
  SMTP_CLIENT_ERR_NONE,
  SMTP_CLIENT_ERR_TEMPORARY, /* 4xx greeting/EHLO/HELO/LHLO/RSET, 421,
                                lost connection, timeout, out of memory,
                                TLS required but refused, TLS failed */
  SMTP_CLIENT_ERR_PERMANENT, /* 5xx greeting, HELO or LHLO */
  SMTP_CLIENT_ERR_PROTOCOL,  /* the server's bytes were not SMTP */
};

/* Which RFC 5321 §4.5.3.2 timeout the host should run now. */
enum smtp_client_timeout_class {
  SMTP_CLIENT_TIMEOUT_NONE,       /* idle or closed: the host's own policy */
  SMTP_CLIENT_TIMEOUT_GREETING,   /* initial 220: 5 min */
  SMTP_CLIENT_TIMEOUT_COMMAND,    /* EHLO, HELO, LHLO, STARTTLS, RSET,
                                     QUIT: 5 min */
  SMTP_CLIENT_TIMEOUT_MAIL,       /* MAIL: 5 min */
  SMTP_CLIENT_TIMEOUT_RCPT,       /* RCPT: 5 min */
  SMTP_CLIENT_TIMEOUT_DATA_INIT,  /* DATA (354): 2 min */
  SMTP_CLIENT_TIMEOUT_DATA_BLOCK, /* each send of body data: 3 min */
  SMTP_CLIENT_TIMEOUT_DATA_END,   /* reply to "." or BDAT LAST (LMTP:
                                     each recipient's): 10 min */
};

/* The class's duration in seconds (0 for NONE). */
unsigned smtp_client_timeout_seconds(enum smtp_client_timeout_class t);

struct smtp_client;

/* smtp_client_new allocates a session waiting for the greeting. Returns
 * NULL on allocation failure, a helo_name that is not one printable word,
 * or an unknown tls mode. */
struct smtp_client *smtp_client_new(const struct smtp_client_config *config);
void smtp_client_free(struct smtp_client *c);

/* smtp_client_feed buffers received bytes. Returns 0, or -1 when they
 * would pass limits.max_input (run next() and send output, then feed them
 * again) or allocation failed; on -1 nothing was buffered. Input after
 * CLOSED is dropped. */
int smtp_client_feed(struct smtp_client *c, const uint8_t *in, size_t in_len);

/* smtp_client_next processes buffered input until an event. */
enum smtp_client_event smtp_client_next(struct smtp_client *c);

/* smtp_client_send_message starts a transaction; only after EV_READY.
 * Returns 0, or -1 (nothing started) if the session is not ready, the
 * message has no or too many recipients, a recipient address is empty, or
 * an address or parameter holds a control octet (so no command line can be
 * broken). */
int smtp_client_send_message(struct smtp_client *c,
                             const struct smtp_client_message *msg);

/* smtp_client_reset sends RSET (a liveness check before reusing a cached
 * connection); EV_READY follows its 250. Only when ready: else -1. */
int smtp_client_reset(struct smtp_client *c);

/* smtp_client_quit sends QUIT now if ready, else once the current
 * transaction ends (before the EHLO reply: instead of STARTTLS; during
 * the handshake: after the EHLO inside TLS); EV_CLOSED follows the 221
 * (or the peer's EOF). */
void smtp_client_quit(struct smtp_client *c);

/* smtp_client_timeout: the host's timer of timeout_class() fired. Open
 * recipients are deferred, the session ends at once (no QUIT). */
void smtp_client_timeout(struct smtp_client *c);
/* smtp_client_eof: the server closed the connection (or it broke). */
void smtp_client_eof(struct smtp_client *c);

/* smtp_client_tls_started: after EV_STARTTLS, the handshake succeeded;
 * EHLO (LHLO) goes out, to be sent inside TLS. Returns 0, or -1 (nothing
 * done) if no handshake was due or server bytes were fed since EV_STARTTLS
 * (next() then reports them as a protocol error). */
int smtp_client_tls_started(struct smtp_client *c);
/* smtp_client_tls_failed: the handshake after EV_STARTTLS failed, or TLS
 * broke later; why (copied, may be NULL) is quoted in the reply. Open
 * recipients are deferred, the session ends at once (no QUIT). */
void smtp_client_tls_failed(struct smtp_client *c, const char *why);

/* smtp_client_output gives the bytes to send; smtp_client_output_sent drops
 * the first n once sent and produces more body if any is due. */
void smtp_client_output(const struct smtp_client *c, const uint8_t **out,
                        size_t *out_len);
void smtp_client_output_sent(struct smtp_client *c, size_t n);
/* smtp_client_output_take hands all pending output over without copying
 * it: when none of it was sent yet, the engine's output buffer and *b
 * (which must be empty) trade places, as if output() and output_sent() of
 * everything had been called, and the engine writes its next output into
 * b's old memory. Returns 1 if it did (b holds the bytes), 0 if not (no
 * output, or part of it sent: use smtp_client_output). */
int smtp_client_output_take(struct smtp_client *c, struct buf *b);

enum smtp_client_timeout_class
smtp_client_timeout_class(const struct smtp_client *c);

/* Getters. */
/* The reply behind the last event: RCPT_RESULT its recipient's RCPT reply
 * (or what decided it), MESSAGE_DONE the message reply (the end-of-data
 * reply, in LMTP the last recipient's, or what ended the transaction),
 * SESSION_ERROR the error's reply. */
const struct smtp_reply *smtp_client_reply(const struct smtp_client *c);
/* The last complete reply read from the server (code 0 before any). */
const struct smtp_reply *smtp_client_last_reply(const struct smtp_client *c);
/* The recipient index of the last RCPT_RESULT. */
size_t smtp_client_event_rcpt(const struct smtp_client *c);

/* smtp_client_rcpt_result fills *out_reply with the reply that decided
 * recipient i of the current message and returns its status (final after
 * MESSAGE_DONE, until the next send_message). LMTP: a recipient's own
 * end-of-data reply once it arrived. */
enum smtp_client_status smtp_client_rcpt_result(const struct smtp_client *c,
                                                size_t i,
                                                struct smtp_reply *out_reply);
/* Counts of final statuses of the current message. */
size_t smtp_client_num_status(const struct smtp_client *c,
                              enum smtp_client_status status);

enum smtp_client_error smtp_client_session_error(const struct smtp_client *c);
/* SMTP_CLIENT_EXT_* the server announced (only after EHLO or LHLO). */
unsigned smtp_client_extensions(const struct smtp_client *c);
/* The SIZE the server announced; 0 if none or no limit. */
size_t smtp_client_size_limit(const struct smtp_client *c);
/* 1 if the server answered EHLO or LHLO (else HELO was used or none
 * yet). */
int smtp_client_is_esmtp(const struct smtp_client *c);
/* 1 once the session runs inside TLS: after smtp_client_tls_started(), or
 * from the start with config.tls_active. */
int smtp_client_tls_active(const struct smtp_client *c);

#endif
