/* proto/resp.c — RESP2 encoder and incremental reply parser. See resp.h. */
#include "proto/resp.h"

#include <stdlib.h>
#include <string.h>

/* The longest number line: "*" or "$" or ":", "-", 19 digits, CRLF. */
#define RESP_NUM_LINE 24

void resp_limits_default(struct resp_limits *lim) {
  lim->max_bulk = RESP_MAX_BULK_DEFAULT;
  lim->max_line = RESP_MAX_LINE_DEFAULT;
  lim->max_elems = RESP_MAX_ELEMS_DEFAULT;
  lim->max_depth = RESP_MAX_DEPTH_DEFAULT;
}

void resp_parser_init(struct resp_parser *p, const struct resp_limits *lim) {
  memset(p, 0, sizeof(*p));
  if (lim != NULL) {
    p->lim = *lim;
  } else {
    resp_limits_default(&p->lim);
  }
  if (p->lim.max_depth > RESP_MAX_DEPTH_HARD) {
    p->lim.max_depth = RESP_MAX_DEPTH_HARD;
  }
}

static void reply_clear(struct resp_reply *r) {
  free(r->str);
  for (size_t i = 0; i < r->num_elems && r->elems != NULL; i++) {
    reply_clear(&r->elems[i]);
  }
  free(r->elems);
}

void resp_reply_free(struct resp_reply *r) {
  if (r != NULL) {
    reply_clear(r);
    free(r);
  }
}

/* parser_reset drops a partly read reply. */
static void parser_reset(struct resp_parser *p) {
  resp_reply_free(p->root);
  p->root = NULL;
  p->cur = NULL;
  p->in_bulk = 0;
  p->bulk_got = 0;
  p->num_elems = 0;
  p->depth = 0;
  buf_reset(&p->line);
}

void resp_parser_cleanup(struct resp_parser *p) {
  parser_reset(p);
  buf_free(&p->line);
}

const char *resp_parser_error(const struct resp_parser *p) {
  return p->err ? p->why : NULL;
}

int resp_parser_busy(const struct resp_parser *p) {
  return p->root != NULL || p->line.len > 0;
}

/* parser_fail makes the error sticky. */
static enum resp_status parser_fail(struct resp_parser *p, const char *why) {
  parser_reset(p);
  p->err = 1;
  p->why = why;
  return RESP_ERR;
}

/* parse_int reads a canonical signed decimal: no "+", no leading zero, no
 * "-0", within int64. Returns 0 or -1. */
static int parse_int(const char *s, size_t len, int64_t *out) {
  int neg = len > 0 && s[0] == '-';
  size_t i = (size_t)neg;
  if (i == len || (s[i] == '0' && (len - i > 1 || neg))) {
    return -1;
  }
  uint64_t lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  uint64_t n = 0;
  for (; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') {
      return -1;
    }
    uint64_t d = (uint64_t)(s[i] - '0');
    if (n > (lim - d) / 10) {
      return -1;
    }
    n = n * 10 + d;
  }
  *out = neg ? (int64_t)(0 - n) : (int64_t)n;
  return 0;
}

/* node_new: where the next value goes: the root, or the next slot of the
 * innermost array. Counts it against max_elems. */
static struct resp_reply *node_new(struct resp_parser *p) {
  p->num_elems++;
  if (p->depth == 0) {
    p->root = calloc(1, sizeof(*p->root));
    return p->root;
  }
  struct resp_frame *f = &p->stack[p->depth - 1];
  return &f->arr->elems[f->filled];
}

/* value_done: the node just read is complete; closes the arrays it fills.
 * Returns 1 when the whole reply is complete. */
static int value_done(struct resp_parser *p) {
  while (p->depth > 0) {
    struct resp_frame *f = &p->stack[p->depth - 1];
    if (++f->filled < f->arr->num_elems) {
      return 0;
    }
    p->depth--;
  }
  return 1;
}

/* line_text: a simple string or error; no bare CR or LF inside. */
static enum resp_status line_text(struct resp_parser *p, struct resp_reply *r,
                                  const char *s, size_t len) {
  if (memchr(s, '\r', len) != NULL) {
    return parser_fail(p, "CR inside a simple string");
  }
  r->str = malloc(len + 1);
  if (r->str == NULL) {
    return parser_fail(p, "out of memory");
  }
  memcpy(r->str, s, len);
  r->str[len] = '\0';
  r->str_len = len;
  return value_done(p) ? RESP_DONE : RESP_NEED_MORE;
}

/* line_bulk: "$len": a nil, or the body follows. */
static enum resp_status line_bulk(struct resp_parser *p, struct resp_reply *r,
                                  int64_t n) {
  if (n == -1) {
    r->type = RESP_NIL;
    return value_done(p) ? RESP_DONE : RESP_NEED_MORE;
  }
  if (n < 0 || (uint64_t)n > p->lim.max_bulk) {
    return parser_fail(p, n < 0 ? "bad bulk length" : "bulk over the limit");
  }
  r->str = malloc((size_t)n + 2); /* the body and its CRLF */
  if (r->str == NULL) {
    return parser_fail(p, "out of memory");
  }
  r->str_len = (size_t)n;
  p->cur = r;
  p->in_bulk = 1;
  p->bulk_got = 0;
  return RESP_NEED_MORE;
}

/* line_array: "*count": a nil, an empty array, or count values follow. */
static enum resp_status line_array(struct resp_parser *p, struct resp_reply *r,
                                   int64_t n) {
  if (n == -1 || n == 0) {
    r->type = n ? RESP_NIL : RESP_ARRAY;
    r->array_nil = n != 0;
    return value_done(p) ? RESP_DONE : RESP_NEED_MORE;
  }
  if (n < 0 || (uint64_t)n > p->lim.max_elems - p->num_elems) {
    return parser_fail(p, n < 0 ? "bad array length" : "array over the limit");
  }
  if (p->depth >= p->lim.max_depth) {
    return parser_fail(p, "arrays nested too deep");
  }
  r->elems = calloc((size_t)n, sizeof(*r->elems));
  if (r->elems == NULL) {
    return parser_fail(p, "out of memory");
  }
  r->num_elems = (size_t)n;
  p->stack[p->depth].arr = r;
  p->stack[p->depth].filled = 0;
  p->depth++;
  return RESP_NEED_MORE;
}

/* line_done: one header line (type byte .. CRLF) is in p->line. */
static enum resp_status line_done(struct resp_parser *p) {
  const char *s = (const char *)p->line.data + 1;
  size_t len = p->line.len - 3;
  char type = (char)p->line.data[0];
  if (p->line.data[p->line.len - 2] != '\r') {
    return parser_fail(p, "line not ended by CRLF");
  }
  if (p->num_elems >= p->lim.max_elems) {
    return parser_fail(p, "too many values in the reply");
  }
  struct resp_reply *r = node_new(p);
  if (r == NULL) {
    return parser_fail(p, "out of memory");
  }
  int64_t n = 0;
  if ((type == ':' || type == '$' || type == '*') &&
      parse_int(s, len, &n) != 0) {
    return parser_fail(p, "bad number");
  }
  switch (type) {
  case '+':
  case '-':
    r->type = type == '+' ? RESP_SIMPLE : RESP_ERROR;
    return line_text(p, r, s, len);
  case ':':
    r->type = RESP_INTEGER;
    r->integer = n;
    return value_done(p) ? RESP_DONE : RESP_NEED_MORE;
  case '$':
    r->type = RESP_BULK;
    return line_bulk(p, r, n);
  case '*':
    r->type = RESP_ARRAY;
    return line_array(p, r, n);
  default:
    return parser_fail(p, "unknown reply type");
  }
}

/* feed_bulk copies body bytes (and the closing CRLF) of the current bulk. */
static enum resp_status feed_bulk(struct resp_parser *p, const uint8_t *in,
                                  size_t in_len, size_t *used) {
  struct resp_reply *r = p->cur;
  size_t want = r->str_len + 2 - p->bulk_got;
  size_t take = in_len < want ? in_len : want;
  memcpy(r->str + p->bulk_got, in, take);
  p->bulk_got += take;
  *used = take;
  if (p->bulk_got < r->str_len + 2) {
    return RESP_NEED_MORE;
  }
  if (r->str[r->str_len] != '\r' || r->str[r->str_len + 1] != '\n') {
    return parser_fail(p, "bulk not ended by CRLF");
  }
  r->str[r->str_len] = '\0';
  p->in_bulk = 0;
  p->cur = NULL;
  return value_done(p) ? RESP_DONE : RESP_NEED_MORE;
}

/* feed_line gathers a header line up to its LF, within the limits. */
static enum resp_status feed_line(struct resp_parser *p, const uint8_t *in,
                                  size_t in_len, size_t *used) {
  const uint8_t *lf = memchr(in, '\n', in_len);
  size_t take = lf != NULL ? (size_t)(lf - in) + 1 : in_len;
  char type = (char)(p->line.len > 0 ? p->line.data[0] : in[0]);
  size_t max = type == '+' || type == '-' ? p->lim.max_line + 3 : RESP_NUM_LINE;
  if (p->line.len + take > max) {
    return parser_fail(p, "line over the limit");
  }
  if (buf_append(&p->line, in, take) != 0) {
    return parser_fail(p, "out of memory");
  }
  *used = take;
  if (lf == NULL) {
    return RESP_NEED_MORE;
  }
  if (p->line.len < 3) {
    return parser_fail(p, "line not ended by CRLF");
  }
  enum resp_status st = line_done(p);
  buf_reset(&p->line);
  return st;
}

enum resp_status resp_parser_feed(struct resp_parser *p, const uint8_t *in,
                                  size_t in_len, size_t *out_consumed,
                                  struct resp_reply **out_reply) {
  *out_consumed = 0;
  *out_reply = NULL;
  if (p->err) {
    return RESP_ERR;
  }
  size_t off = 0;
  while (off < in_len) {
    size_t used = 0;
    enum resp_status st = p->in_bulk
                              ? feed_bulk(p, in + off, in_len - off, &used)
                              : feed_line(p, in + off, in_len - off, &used);
    off += used;
    if (st == RESP_ERR) {
      *out_consumed = off;
      return RESP_ERR;
    }
    if (st == RESP_DONE) {
      *out_consumed = off;
      *out_reply = p->root;
      p->root = NULL;
      p->num_elems = 0;
      return RESP_DONE;
    }
  }
  *out_consumed = off;
  return RESP_NEED_MORE;
}

/* ---- encoding ---- */

/* put_bulk appends "$len CRLF data CRLF". */
static int put_bulk(struct buf *out, const char *s, size_t len) {
  return buf_printf(out, "$%zu\r\n", len) != 0 ||
                 (len > 0 && buf_append(out, s, len) != 0) ||
                 buf_append(out, "\r\n", 2) != 0
             ? -1
             : 0;
}

int resp_command(struct buf *out, size_t argc, const char *const *argv,
                 const size_t *argv_len) {
  size_t start = out->len;
  int rc = buf_printf(out, "*%zu\r\n", argc);
  for (size_t i = 0; rc == 0 && i < argc; i++) {
    rc = put_bulk(out, argv[i], argv_len ? argv_len[i] : strlen(argv[i]));
  }
  if (rc != 0) {
    out->len = start;
  }
  return rc;
}

static int encode(struct buf *out, const struct resp_reply *r) {
  switch (r->type) {
  case RESP_SIMPLE:
  case RESP_ERROR:
    if (r->str_len > 0 && (memchr(r->str, '\r', r->str_len) != NULL ||
                           memchr(r->str, '\n', r->str_len) != NULL)) {
      return -1;
    }
    return buf_append(out, r->type == RESP_SIMPLE ? "+" : "-", 1) != 0 ||
                   (r->str_len > 0 &&
                    buf_append(out, r->str, r->str_len) != 0) ||
                   buf_append(out, "\r\n", 2) != 0
               ? -1
               : 0;
  case RESP_INTEGER:
    return buf_printf(out, ":%lld\r\n", (long long)r->integer);
  case RESP_BULK:
    return put_bulk(out, r->str, r->str_len);
  case RESP_NIL:
    return buf_append_str(out, r->array_nil ? "*-1\r\n" : "$-1\r\n");
  case RESP_ARRAY:
    if (buf_printf(out, "*%zu\r\n", r->num_elems) != 0) {
      return -1;
    }
    for (size_t i = 0; i < r->num_elems; i++) {
      if (encode(out, &r->elems[i]) != 0) {
        return -1;
      }
    }
    return 0;
  }
  return -1;
}

int resp_reply_encode(struct buf *out, const struct resp_reply *r) {
  size_t start = out->len;
  if (encode(out, r) != 0) {
    out->len = start;
    return -1;
  }
  return 0;
}
