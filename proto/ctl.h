/* proto/ctl.h — the control protocol between `postseal` (the client) and
 * postseald (the server): queue operations over a unix stream socket
 * (config control_socket, default <spool_dir>/control).
 *
 * Owns: line framing (ctl_line_next), the request grammar (parse and
 * format) and the reply grammar (format and parse). Pure: no sockets, no
 * clock; memory only through the caller's struct buf. Any thread.
 *
 * Conversation: the client connects, sends one request line and reads
 * reply lines up to the final one (OK or ERR); the server closes after
 * the final line. One request per connection.
 *
 * Request (ABNF, RFC 5234; the verb is case-insensitive):
 *   request = verb *(SP arg) [CR] LF
 *   "FLUSH"   [1*(SP qid) / SP "--domain" SP domain]
 *             every deferred message due now, or the ones named, or the
 *             ones with a pending recipient in domain
 *   "DELETE" / "HOLD" / "RELEASE"   (1*(SP qid) / SP "--all")
 *   "STATUS"  every queued message with its state
 *   qid    = 16HEXDIG                          ; a queue id
 *   domain = 1*255(ALPHA / DIGIT / "-" / "." / "_" / ":" / "[" / "]" /
 *                  %x80-FF)                    ; lower-cased by the parser
 * At most CTL_MAX_IDS ids, each once; at most CTL_MAX_LINE bytes with the
 * line end (which in practice allows CTL_MAX_LINE_IDS ids).
 *
 * Import (a request with a payload; its own parser, ctl_import_parse):
 *   import  = "IMPORT" SP length LF payload
 *   length  = 1*20DIGIT                 ; octets of payload, no leading 0
 *   payload = 1*message                 ; MESSAGE records of the queue
 *                                       ; archive (core/queue_archive.h)
 * The server checks every record before it stages any, queues each
 * message under a new queue id, and answers one item per message in
 * payload order (the new id, word "queued") once all are durable, then
 * OK; or ERR "message N: reason" with nothing staged. It refuses a
 * payload over its limit (ERR, before reading it).
 *
 * Reply:
 *   item  = qid SP word LF        ; one per message acted on or listed
 *   final = "OK" SP count LF      ; count = the number of items before it
 *         / "ERR" SP text LF      ; text = 1*(%x20-7E); may follow items
 *   word  = 1*32(%x61-7A / "-")   ; enum ctl_word; a client keeps unknown
 *                                 ; words (CTL_WORD_UNKNOWN)
 * Words by verb: FLUSH queued | active | held | not-found; DELETE deleted |
 * busy | not-found; HOLD held | not-found; RELEASE released | not-held |
 * not-found; STATUS active | deferred | held. A finished message is
 * not-found. */
#ifndef POSTSEAL_PROTO_CTL_H
#define POSTSEAL_PROTO_CTL_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define CTL_MAX_LINE 4096    /* bytes in a line, its [CR] LF included */
#define CTL_MAX_IDS 256      /* queue ids in one request */
#define CTL_MAX_LINE_IDS 240 /* ids that fit a line after the longest verb */
#define CTL_MAX_DOMAIN 255
#define CTL_MAX_WORD 32
#define CTL_QID_LEN 16

enum ctl_verb {
  CTL_VERB_FLUSH = 1,
  CTL_VERB_DELETE,
  CTL_VERB_HOLD,
  CTL_VERB_RELEASE,
  CTL_VERB_STATUS,
};

struct ctl_request {
  enum ctl_verb verb;
  int all;                         /* --all */
  char domain[CTL_MAX_DOMAIN + 1]; /* FLUSH --domain; "" if none */
  size_t num_ids;
  uint64_t ids[CTL_MAX_IDS];
};

/* The result of one message in a reply item. */
enum ctl_word {
  CTL_WORD_UNKNOWN = 0, /* parsed, but not a word this build knows */
  CTL_WORD_QUEUED,      /* FLUSH: due now */
  CTL_WORD_ACTIVE,      /* being delivered right now */
  CTL_WORD_DEFERRED,    /* STATUS: waiting for its next attempt */
  CTL_WORD_HELD,        /* on hold (HOLD: now or already) */
  CTL_WORD_RELEASED,    /* RELEASE: off hold, due now */
  CTL_WORD_NOT_HELD,    /* RELEASE: was not held; nothing done */
  CTL_WORD_DELETED,     /* DELETE: every pending recipient finished */
  CTL_WORD_BUSY,        /* cannot act now (e.g. mid-delivery); try again */
  CTL_WORD_NOT_FOUND,   /* no such queued message */
};

/* ---- framing ---- */

enum ctl_line_result {
  CTL_LINE_OK,        /* a line: *out_line_len bytes, then its end */
  CTL_LINE_NEED_MORE, /* no LF yet, under CTL_MAX_LINE */
  CTL_LINE_TOO_LONG,  /* no LF within CTL_MAX_LINE bytes */
};

/* ctl_line_next finds the first line of in. On OK sets *out_line_len to
 * its length without the LF and a CR right before it, and *out_consumed
 * to the bytes up to and including the LF. */
enum ctl_line_result ctl_line_next(size_t *out_line_len, size_t *out_consumed,
                                   const char *in, size_t in_len);

/* ---- requests ---- */

/* ctl_request_parse parses one request line (without its line end, as
 * ctl_line_next gives it). Returns 0, or -1 with *out_err pointing to a
 * static one-line reason fit for an ERR reply. */
int ctl_request_parse(struct ctl_request *out, const char **out_err,
                      const char *line, size_t line_len);

/* ctl_request_format appends req as one canonical line (upper-case verb
 * and hex, LF). Returns 0, or -1 with out unchanged: errno EINVAL if the
 * server would not accept it (the line is checked with ctl_request_parse),
 * EMSGSIZE past CTL_MAX_LINE, ENOMEM. */
int ctl_request_format(struct buf *out, const struct ctl_request *req);

/* ctl_import_parse: 1 if line (without its line end) is an IMPORT
 * request, setting *out_len; 0 if it is another request (for
 * ctl_request_parse); -1 for a malformed IMPORT line, with *out_err a
 * static reason. ctl_import_format appends the line for len octets.
 * Returns 0, or -1 (EINVAL for len 0, ENOMEM) with out unchanged. */
int ctl_import_parse(uint64_t *out_len, const char **out_err, const char *line,
                     size_t line_len);
int ctl_import_format(struct buf *out, uint64_t len);

/* ctl_verb_name: "FLUSH", ...; NULL for a value out of range. */
const char *ctl_verb_name(enum ctl_verb verb);

/* ---- replies ---- */

/* ctl_word_name: "queued", ...; NULL for CTL_WORD_UNKNOWN or out of range.
 * ctl_word_failed: 1 if the word says the operation did not happen for
 * that message (busy, not-found, unknown), else 0. */
const char *ctl_word_name(enum ctl_word word);
int ctl_word_failed(enum ctl_word word);

/* Server side: each appends one whole line. Return 0, or -1 with out
 * unchanged (EINVAL for an unknown word, ENOMEM). ctl_reply_err replaces
 * bytes outside %x20-7E with '?', shortens text to fit one line, and
 * sends "error" for an empty text. */
int ctl_reply_item(struct buf *out, uint64_t queue_id, enum ctl_word word);
int ctl_reply_ok(struct buf *out, uint64_t count);
int ctl_reply_err(struct buf *out, const char *text);

/* Client side. */
enum ctl_reply_kind {
  CTL_REPLY_ITEM,
  CTL_REPLY_OK,
  CTL_REPLY_ERR,
};

struct ctl_reply {
  enum ctl_reply_kind kind;
  uint64_t queue_id;                /* ITEM */
  enum ctl_word word;               /* ITEM */
  char word_text[CTL_MAX_WORD + 1]; /* ITEM: the word as sent */
  uint64_t count;                   /* OK */
  char text[CTL_MAX_LINE];          /* ERR */
};

/* ctl_reply_parse parses one reply line (without its line end). Returns 0,
 * or -1 with *out_err pointing to a static reason. */
int ctl_reply_parse(struct ctl_reply *out, const char **out_err,
                    const char *line, size_t line_len);

#endif
