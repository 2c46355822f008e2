/* proto/smtp_addr.h — RFC 5321 §4.1.2 path parsing, RFC 3461 xtext.
 *
 * Owns nothing: pure functions over caller-provided bytes. Results point
 * into the input (slices), valid as long as the input is. Any thread.
 *
 * Limits (RFC 5321 §4.5.3.1): local part 64 octets, domain 255 octets,
 * path 256 octets including "<" and ">"; each domain label 63 octets.
 * Non-ASCII bytes are accepted where RFC 6531 allows UTF-8 (atext, qtext,
 * U-labels) when they are well-formed UTF-8, and reported in has_utf8: the
 * caller decides whether SMTPUTF8 was declared. */
#ifndef POSTSEAL_PROTO_SMTP_ADDR_H
#define POSTSEAL_PROTO_SMTP_ADDR_H

#include <stddef.h>
#include <stdint.h>

#define SMTP_ADDR_MAX_LOCAL 64
#define SMTP_ADDR_MAX_DOMAIN 255
#define SMTP_ADDR_MAX_PATH 256
#define SMTP_ADDR_MAX_LABEL 63

enum smtp_addr_status {
  SMTP_ADDR_OK,
  SMTP_ADDR_SYNTAX,   /* not an RFC 5321 path */
  SMTP_ADDR_TOO_LONG, /* a §4.5.3.1 length limit was passed */
};

/* One parsed path. mailbox is the address without "<", ">" and the
 * source route; for "<>" it is empty, for "<Postmaster>" (RFC 5321 §4.1.1.3,
 * no domain) it is the local part alone. */
struct smtp_addr_path {
  const uint8_t *mailbox;
  size_t mailbox_len;
  size_t local_len; /* octets of the local part (quotes included) */
  int null_path;    /* "<>" */
  int postmaster;   /* "<Postmaster>" without domain */
  int source_route; /* an A-d-l was present and has been dropped */
  int has_utf8;     /* non-ASCII bytes present (valid UTF-8) */
  int shell_meta;   /* local part holds ` $ or | (quoted or not) */
};

/* smtp_addr_parse_path reads one Path or Reverse-path ("<" ... ">") from
 * the start of `in` and sets *out_consumed to the octets it used (through
 * the ">"). Returns SMTP_ADDR_OK, _SYNTAX or _TOO_LONG; `out` is only
 * meaningful on SMTP_ADDR_OK. */
enum smtp_addr_status smtp_addr_parse_path(struct smtp_addr_path *out,
                                           size_t *out_consumed,
                                           const uint8_t *in, size_t in_len);

/* smtp_addr_xtext_decode decodes RFC 3461 §4 xtext into out (capacity
 * out_cap, which must hold at least in_len + 1 octets: decoding never
 * grows). The result is NUL-terminated. Returns the decoded length, or -1
 * if `in` is not xtext or decodes to a control character or NUL. */
long smtp_addr_xtext_decode(char *out, size_t out_cap, const uint8_t *in,
                            size_t in_len);

/* smtp_addr_utf8_len returns the length (2..4) of the well-formed UTF-8
 * sequence at in[0] (which must be >= 0x80), or 0 if it is malformed
 * (overlong, surrogate, above U+10FFFF, truncated). */
size_t smtp_addr_utf8_len(const uint8_t *in, size_t in_len);

#endif
