/* proto/resp.h — RESP2, the Redis serialization protocol, client side:
 * commands out (arrays of bulk strings), replies in.
 *
 * Owns: the encoder (resp_command, and resp_reply_encode for tests and
 * fake servers) and an incremental reply parser fed bytes in arbitrary
 * chunks. Pure: no sockets, no clock. Any thread; one parser per
 * connection, used by one thread at a time.
 *
 * Grammar (https://redis.io/docs/reference/protocol-spec/, RESP2):
 *   reply   = simple / error / integer / bulk / array
 *   simple  = "+" text CRLF            ; text: no CR, no LF
 *   error   = "-" text CRLF
 *   integer = ":" int64 CRLF           ; "-"? digits, no leading zero, no "-0"
 *   bulk    = "$" len CRLF len*OCTET CRLF / "$-1" CRLF   ; the latter nil
 *   array   = "*" count CRLF count*reply / "*-1" CRLF    ; the latter nil
 * The parser is strict (canonical numbers only), so a parsed reply encodes
 * back to the very bytes it came from. RESP3 types are protocol errors (we
 * never send HELLO 3).
 *
 * Limits (struct resp_limits, all checked before anything is allocated):
 * a bulk string's length, a simple/error line's length, elements in one
 * reply (all levels together) and nesting depth. Errors are sticky: once
 * resp_parser_feed returns RESP_ERR it always does; the connection is to
 * be closed.
 *
 * Memory: a reply returned by resp_parser_feed belongs to the caller
 * (resp_reply_free); bulk and simple strings are NUL-terminated copies
 * (a bulk may hold NULs too: use str_len). */
#ifndef POSTSEAL_PROTO_RESP_H
#define POSTSEAL_PROTO_RESP_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define RESP_MAX_BULK_DEFAULT ((size_t)512 << 10)
#define RESP_MAX_LINE_DEFAULT 4096
#define RESP_MAX_ELEMS_DEFAULT 4096
#define RESP_MAX_DEPTH_DEFAULT 8
#define RESP_MAX_DEPTH_HARD 32 /* the parser's stack; max_depth above is cut   \
                                */

enum resp_type {
  RESP_SIMPLE,  /* str */
  RESP_ERROR,   /* str: "ERR ...", "NOSCRIPT ...", ... */
  RESP_INTEGER, /* integer */
  RESP_BULK,    /* str, str_len */
  RESP_ARRAY,   /* elems, num_elems */
  RESP_NIL,     /* "$-1" (array_nil = 0) or "*-1" (array_nil = 1) */
};

struct resp_reply {
  enum resp_type type;
  int array_nil; /* RESP_NIL: it was "*-1" */
  int64_t integer;
  char *str;
  size_t str_len;
  struct resp_reply *elems;
  size_t num_elems;
};

struct resp_limits {
  size_t max_bulk;    /* bytes in one bulk string */
  size_t max_line;    /* bytes in a simple string or error line */
  size_t max_elems;   /* values in one reply, arrays and their elements */
  unsigned max_depth; /* arrays inside arrays; 1 = a flat array */
};

enum resp_status {
  RESP_ERR = -1,      /* protocol error or limit: close the connection */
  RESP_NEED_MORE = 0, /* every byte taken; no complete reply yet */
  RESP_DONE = 1,      /* *out_reply is one complete reply */
};

/* Parser state; opaque in use, public so it can live inside its owner. */
struct resp_frame {
  struct resp_reply *arr; /* the array being filled */
  size_t filled;
};

struct resp_parser {
  struct resp_limits lim;
  int err; /* sticky */
  const char *why;
  int in_bulk;     /* reading a bulk body (and its CRLF) */
  size_t bulk_got; /* body bytes (and CRLF) read so far */
  struct buf line; /* a header line being gathered */
  struct resp_reply *root;
  struct resp_reply *cur; /* the node being read (bulk) */
  size_t num_elems;       /* in the reply being read */
  unsigned depth;
  struct resp_frame stack[RESP_MAX_DEPTH_HARD];
};

/* resp_limits_default fills the defaults above. */
void resp_limits_default(struct resp_limits *lim);

/* resp_parser_init / resp_parser_cleanup; lim NULL: the defaults. */
void resp_parser_init(struct resp_parser *p, const struct resp_limits *lim);
void resp_parser_cleanup(struct resp_parser *p);

/* resp_parser_feed reads bytes of the reply stream. It stops at the end of
 * one reply: *out_consumed says how far it read (feed the rest again for
 * pipelined replies). RESP_DONE: *out_reply is set (caller frees);
 * RESP_NEED_MORE: all of in was taken; RESP_ERR: resp_parser_error. */
enum resp_status resp_parser_feed(struct resp_parser *p, const uint8_t *in,
                                  size_t in_len, size_t *out_consumed,
                                  struct resp_reply **out_reply);

/* resp_parser_error: why the parser failed, or NULL. */
const char *resp_parser_error(const struct resp_parser *p);

/* resp_parser_busy: 1 if a reply is partly read. */
int resp_parser_busy(const struct resp_parser *p);

void resp_reply_free(struct resp_reply *r);

/* resp_command appends one command: an array of argc bulk strings
 * (argv[i], argv_len[i] bytes; argv_len NULL: strlen). Returns 0, or -1
 * (out of memory; out is left as it was). */
int resp_command(struct buf *out, size_t argc, const char *const *argv,
                 const size_t *argv_len);

/* resp_reply_encode appends r as the server would send it (tests, fuzz
 * round trips, fake servers). Returns 0, or -1 (memory, or a simple or
 * error string holding CR or LF; out is left as it was). */
int resp_reply_encode(struct buf *out, const struct resp_reply *r);

#endif
