/* proto/dsn.h — builder of delivery status notifications (RFC 3464 in a
 * multipart/report of RFC 6522, report-type=delivery-status).
 *
 * Owns: nothing between calls. dsn_build() is a pure function of its
 * inputs: it reads no clock (dates come from now_ms and the per-recipient
 * times), no configuration and no files, and appends one complete RFC 5322
 * message to `out`. Any thread may call it; the caller owns every input.
 *
 * Output: CRLF line ends only, no line longer than 998 octets (header
 * fields folded at 78 where a space allows, and broken at DSN_HARD_LINE as
 * a last resort, which adds a space to the pathological field), headers
 *   From: "Mail Delivery System" <MAILER-DAEMON@reporting_mta>
 *   To: <original_sender>, Subject (by the worst action: failed, then
 *   delayed, then success), Date (UTC), Message-ID, MIME-Version,
 *   Auto-Submitted: auto-replied (RFC 3834 §5),
 *   Content-Type: multipart/report; report-type=delivery-status
 * and parts: (1) text/plain for humans; (2) message/delivery-status with
 * the per-message fields and one group per recipient (RFC 3464 §2.2,
 * §2.3); (3) the original: message/rfc822 (RET=FULL), or
 * text/rfc822-headers (RET=HDRS, or FULL with the original larger than
 * max_original_len: the human part says so). No part 3 when there is no
 * original. The boundary is checked against every part body and changed
 * until it occurs in none.
 *
 * Untrusted text (diagnostic text, addresses, host names) never makes a
 * header line or a boundary line: CR, LF and TAB become spaces, other
 * control and (outside SMTPUTF8 mode) 8-bit octets become '?', the text is
 * cut at DSN_MAX_DIAG_LEN. Addresses that are printable ASCII go out as
 * "rfc822; addr". Others use the RFC 6533 §3 "utf-8" address type: raw
 * UTF-8 only when the report is smtputf8 (the report then uses
 * message/global-delivery-status, message/global-headers and
 * message/global, RFC 6533 §6), else the 7-bit utf-8-addr-xtext form
 * (\x{HEX} per code point; malformed octets become \x{FFFD}).
 * Original-Envelope-Id is xtext-encoded (RFC 3461 §4) from the decoded
 * ENVID. The returned original is copied as lines: a bare CR or LF becomes
 * CRLF and a line over 998 octets is broken (only a message we did not
 * accept ourselves can have either). A NUL octet is copied as is.
 *
 * Limits: at most DSN_MAX_RCPTS recipients are listed (the rest counted in
 * the human part); addresses at most DSN_MAX_ADDR_LEN octets; ENVID at
 * most DSN_MAX_ENVID_LEN octets decoded; the returned header section at
 * most DSN_MAX_HEADERS_LEN octets (cut at a line end).
 *
 * A bounce is never sent to the null sender: original_sender NULL or ""
 * is bad input, and the caller must not ask for a DSN in that case. */
#ifndef POSTSEAL_PROTO_DSN_H
#define POSTSEAL_PROTO_DSN_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define DSN_MAX_RCPTS 1000        /* recipient groups listed */
#define DSN_MAX_ADDR_LEN 512      /* any address, octets */
#define DSN_MAX_HOST_LEN 255      /* reporting/remote MTA, id domain */
#define DSN_MAX_ENVID_LEN 100     /* decoded ENVID (RFC 3461 §4.4) */
#define DSN_MAX_DIAG_LEN 1000     /* diagnostic text kept, sanitised */
#define DSN_MAX_HEADERS_LEN 65536 /* header section returned */
#define DSN_HARD_LINE 998         /* RFC 5322 §2.1.1, without CRLF */

enum dsn_action {
  DSN_ACTION_FAILED,    /* Status 5.x.x (or 4.x.x when retries expired) */
  DSN_ACTION_DELAYED,   /* Status 4.x.x */
  DSN_ACTION_DELIVERED, /* Status 2.x.x, and the same for the next two */
  DSN_ACTION_RELAYED,
  DSN_ACTION_EXPANDED,
};

enum dsn_ret { DSN_RET_HDRS, DSN_RET_FULL };

/* Times are milliseconds since the Unix epoch; 0 means "not known" and
 * omits the field. Strings are NUL-terminated. */
struct dsn_rcpt {
  const char *final_recipient;    /* mailbox, no <>; required */
  const char *original_recipient; /* decoded ORCPT "rfc822;x@y", or NULL;
                                     omitted if it has no "type;" */
  enum dsn_action action;
  const char *status;     /* RFC 3463 "5.1.1"; class must fit action */
  const char *remote_mta; /* host name, or NULL */
  int diag_code;          /* remote SMTP reply code 200..599, or 0 */
  const char *diag_text;  /* reply text after the code (may be multi-line,
                             untrusted), or NULL. With diag_code 0 it is a
                             local diagnostic: "X-Postseal; text" */
  int64_t last_attempt_ms;
  int64_t will_retry_until_ms; /* DELAYED only */
};

struct dsn_report {
  const char *reporting_mta;     /* our host name; required */
  const char *envid;             /* decoded ENVID, or NULL */
  const char *original_sender;   /* bounce address; never NULL or "" */
  int smtputf8;                  /* the original used SMTPUTF8 */
  int64_t arrival_ms;            /* 0: no Arrival-Date */
  int64_t now_ms;                /* Date:; required (> 0) */
  const char *message_id_domain; /* NULL: reporting_mta */
  uint64_t unique;               /* distinct per DSN: Message-ID, boundary */
  enum dsn_ret ret;
  const uint8_t *original; /* stored message (CRLF), or NULL */
  size_t original_len;
  size_t max_original_len; /* RET=FULL limit; 0: no limit */
  const struct dsn_rcpt *rcpts;
  size_t num_rcpts; /* >= 1 */
};

/* What dsn_build produced, for the caller's MAIL FROM parameters. */
enum dsn_returned {
  DSN_RETURNED_NONE,
  DSN_RETURNED_HEADERS,
  DSN_RETURNED_FULL
};

struct dsn_info {
  int body_8bit; /* send with BODY=8BITMIME */
  int smtputf8;  /* raw UTF-8 in headers: needs SMTPUTF8 */
  enum dsn_returned returned;
  int too_large;     /* FULL asked, headers returned */
  size_t num_listed; /* recipient groups written */
};

/* dsn_build appends the DSN to `out` and fills *out_info (if not NULL).
 * Returns 0, or -1 on bad input (see the contract above: null sender, no
 * recipients, bad status or class, bad host name, over a limit) or
 * allocation failure; on -1 `out` is left as it was. */
int dsn_build(struct buf *out, struct dsn_info *out_info,
              const struct dsn_report *r);

#endif
