/* proto/smtp_reply.h — SMTP reply parsing (RFC 5321 §4.2, RFC 3463).
 *
 * Owns nothing but the caller's struct smtp_reply: pure functions over
 * caller-provided bytes, any thread. A reply is read one line at a time
 * (the caller finds the line end and enforces its length limit):
 *
 *   Reply-line = *( Reply-code "-" [ textstring ] CRLF )
 *                Reply-code [ SP textstring ] CRLF        (RFC 5321 §4.2)
 *
 * Reply codes are three digits, the first 2..5 (1yz is not used by SMTP),
 * the second 0..5; every line of one reply carries the same code. A line
 * may end in CRLF or, leniently, in a bare LF (servers still do that; the
 * text never keeps either). An enhanced status code (RFC 3463, announced by
 * ENHANCEDSTATUSCODES, RFC 2034) at the start of the first line is taken
 * out of the text when its class matches the reply's first digit; the same
 * code repeated on continuation lines is dropped too.
 *
 * The reply text keeps every line, joined by single spaces, with control
 * octets replaced by spaces, cut at SMTP_REPLY_MAX_TEXT - 1 octets: safe
 * to log and to quote in a DSN. */
#ifndef POSTSEAL_PROTO_SMTP_REPLY_H
#define POSTSEAL_PROTO_SMTP_REPLY_H

#include <stddef.h>
#include <stdint.h>

#define SMTP_REPLY_MAX_TEXT 512    /* kept text, NUL included */
#define SMTP_REPLY_MAX_ENHANCED 16 /* "5.123.456" and NUL fit */

struct smtp_reply {
  int code;                               /* 200..559 */
  char enhanced[SMTP_REPLY_MAX_ENHANCED]; /* "5.1.1", or "" if none */
  char text[SMTP_REPLY_MAX_TEXT];         /* see above; may be "" */
  size_t num_lines;
  int local; /* 1: made up by the client (timeout, lost connection, local
                refusal), not said by the server */
};

/* One parsed reply line; text points into the line. */
struct smtp_reply_line {
  int code;
  int last; /* "ddd" SP or "ddd" alone: the reply's final line */
  const uint8_t *text;
  size_t text_len; /* without the line end */
};

enum smtp_reply_status {
  SMTP_REPLY_MORE, /* a continuation line: the reply goes on */
  SMTP_REPLY_DONE, /* the final line: the reply is complete */
  SMTP_REPLY_BAD,  /* not a reply line, or a code that changed */
};

/* smtp_reply_parse_line parses one whole line, its LF included (len >= 1,
 * line[len - 1] == '\n'). Returns 0, or -1 with *out_why set to a short
 * reason (static text) if the line is not a reply line. */
int smtp_reply_parse_line(struct smtp_reply_line *out, const char **out_why,
                          const uint8_t *line, size_t len);

/* smtp_reply_init empties r for a new reply. */
void smtp_reply_init(struct smtp_reply *r);

/* smtp_reply_add appends one line to the reply in r (r->num_lines lines so
 * far). Returns MORE, DONE, or BAD (with *out_why) if the line's code is
 * not the code of the reply's first line. */
enum smtp_reply_status smtp_reply_add(struct smtp_reply *r,
                                      const char **out_why,
                                      const struct smtp_reply_line *l);

/* smtp_reply_enhanced reads an RFC 3463 status code "class.subject.detail"
 * (class 2, 4 or 5; subject and detail 1..3 digits) at the start of p,
 * followed by the end or a space. Returns the octets it used (0 if there is
 * none) and writes the code, NUL-terminated, into out. */
size_t smtp_reply_enhanced(char out[SMTP_REPLY_MAX_ENHANCED], const uint8_t *p,
                           size_t n);

/* smtp_reply_set fills r with a local reply (r->local = 1); text is cleaned
 * like server text. */
void smtp_reply_set(struct smtp_reply *r, int code, const char *enhanced,
                    const char *text);

/* smtp_reply_class is the first digit of the code: 2, 3, 4 or 5. */
int smtp_reply_class(const struct smtp_reply *r);

#endif
