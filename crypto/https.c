/* crypto/https.c — a blocking HTTPS GET and its response parser; see
 * https.h. The parser is fed bytes and knows no socket (RFC 9112 §2-§7);
 * https_get is the only code here that makes syscalls. */
#include "crypto/https.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "core/netaddr.h"

#define HTTPS_IO_STEP 16384

/* ---- the response parser ---- */

enum parser_state {
  ST_HEAD,       /* status line and fields */
  ST_BODY,       /* Content-Length octets, or to the close */
  ST_CHUNK_SIZE, /* chunk-size [ chunk-ext ] CRLF */
  ST_CHUNK_DATA, /* chunk-data */
  ST_CHUNK_END,  /* the CRLF after chunk-data */
  ST_TRAILERS,   /* trailer fields up to the empty line */
  ST_DONE,
  ST_ERROR,
};

static enum https_parse __attribute__((format(printf, 2, 3)))
parser_fail(struct https_parser *p, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(p->err, sizeof(p->err), fmt, ap);
  va_end(ap);
  p->state = ST_ERROR;
  return HTTPS_PARSE_ERROR;
}

void https_parser_init(struct https_parser *p, size_t max_body) {
  memset(p, 0, sizeof(*p));
  p->state = ST_HEAD;
  p->max_body = max_body;
}

void https_parser_cleanup(struct https_parser *p) {
  buf_free(&p->body);
  buf_free(&p->line);
}

/* RFC 9110 §5.6.2: tchar. */
static int is_tchar(uint8_t c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
         (c >= 'A' && c <= 'Z') || (c != 0 && strchr("!#$%&'*+-.^_`|~", c));
}

static int is_ows(uint8_t c) {
  return c == ' ' || c == '\t';
}

/* copy_printable copies a field value for logs: control octets and
 * non-ASCII become '?', cut to fit out. */
static void copy_printable(char *out, size_t out_len, const uint8_t *v,
                           size_t len) {
  size_t n = len < out_len - 1 ? len : out_len - 1;
  for (size_t i = 0; i < n; i++) {
    out[i] = v[i] >= 0x20 && v[i] < 0x7f ? (char)v[i] : '?';
  }
  out[n] = '\0';
}

/* parse_status_line: "HTTP/1.x SP 3DIGIT [SP reason-phrase]" (RFC 9112
 * §4; a missing SP before an empty reason is tolerated). */
static enum https_parse parse_status_line(struct https_parser *p,
                                          const uint8_t *s, size_t len) {
  if (len < 12 || memcmp(s, "HTTP/1.", 7) != 0 ||
      (s[7] != '0' && s[7] != '1') || s[8] != ' ') {
    return parser_fail(p, "malformed status line (want HTTP/1.x)");
  }
  int status = 0;
  for (size_t i = 9; i < 12; i++) {
    if (s[i] < '0' || s[i] > '9') {
      return parser_fail(p, "malformed status code");
    }
    status = status * 10 + (s[i] - '0');
  }
  if (status < 100 || status > 599 || (len > 12 && s[12] != ' ')) {
    return parser_fail(p, "malformed status code");
  }
  for (size_t i = 12; i < len; i++) {
    if (s[i] < 0x20 && s[i] != '\t') {
      return parser_fail(p, "control octet in the reason phrase");
    }
  }
  p->status = status;
  p->minor_version = s[7] - '0';
  return HTTPS_PARSE_NEED_MORE;
}

/* parse_length: Content-Length = 1*DIGIT; repeats must agree (RFC 9112
 * §6.3 item 5). */
static enum https_parse parse_length(struct https_parser *p, const uint8_t *v,
                                     size_t len) {
  uint64_t n = 0;
  if (len == 0 || len > 18) {
    return parser_fail(p, "malformed Content-Length");
  }
  for (size_t i = 0; i < len; i++) {
    if (v[i] < '0' || v[i] > '9') {
      return parser_fail(p, "malformed Content-Length");
    }
    n = n * 10 + (uint64_t)(v[i] - '0');
  }
  if (p->have_length && n != p->content_length) {
    return parser_fail(p, "conflicting Content-Length fields");
  }
  p->have_length = 1;
  p->content_length = n;
  return HTTPS_PARSE_NEED_MORE;
}

/* field_is: 1 if a field name equals name, case-insensitively. */
static int field_is(const uint8_t *n, size_t n_len, const char *name) {
  return n_len == strlen(name) &&
         strncasecmp((const char *)n, name, n_len) == 0;
}

/* parse_field: "name: OWS value OWS" (RFC 9112 §5); the few fields that
 * matter are kept. In trailers nothing is kept. */
static enum https_parse parse_field(struct https_parser *p, const uint8_t *s,
                                    size_t len, int trailer) {
  size_t n = 0;
  while (n < len && is_tchar(s[n])) {
    n++;
  }
  if (n == 0 || n == len || s[n] != ':') {
    return parser_fail(p, is_ows(s[0]) ? "obsolete line folding"
                                       : "malformed header field");
  }
  const uint8_t *v = s + n + 1;
  size_t vlen = len - n - 1;
  while (vlen > 0 && is_ows(v[0])) {
    v++;
    vlen--;
  }
  while (vlen > 0 && is_ows(v[vlen - 1])) {
    vlen--;
  }
  for (size_t i = 0; i < vlen; i++) {
    if ((v[i] < 0x20 && v[i] != '\t') || v[i] == 0x7f) {
      return parser_fail(p, "control octet in a header field");
    }
  }
  if (trailer) {
    return HTTPS_PARSE_NEED_MORE;
  }
  if (field_is(s, n, "content-length")) {
    return parse_length(p, v, vlen);
  }
  if (field_is(s, n, "transfer-encoding")) {
    /* Only "chunked" is supported; we never ask for anything else. */
    if (p->chunked || vlen != 7 || strncasecmp((const char *)v, "chunked", 7)) {
      return parser_fail(p, "unsupported Transfer-Encoding");
    }
    p->chunked = 1;
  } else if (field_is(s, n, "content-type")) {
    copy_printable(p->content_type, sizeof(p->content_type), v, vlen);
  } else if (field_is(s, n, "location")) {
    copy_printable(p->location, sizeof(p->location), v, vlen);
  }
  return HTTPS_PARSE_NEED_MORE;
}

/* head_end: the empty line. A 1xx head is interim (RFC 9110 §15.2): the
 * real one follows. Otherwise settle how the body is framed (RFC 9112
 * §6.3). */
static enum https_parse head_end(struct https_parser *p) {
  if (p->status == 101) {
    return parser_fail(p, "unexpected 101 Switching Protocols");
  }
  if (p->status < 200) {
    /* Forget the interim head; the buffers stay (line is in use). */
    p->status = 0;
    p->content_type[0] = '\0';
    p->location[0] = '\0';
    p->have_length = p->chunked = 0;
    p->content_length = 0;
    p->head_len = 0;
    return HTTPS_PARSE_NEED_MORE;
  }
  if (p->chunked && p->have_length) {
    return parser_fail(p, "both Content-Length and Transfer-Encoding");
  }
  if (p->status == 204 || p->status == 304) {
    p->body_kind = HTTPS_BODY_NONE;
    p->state = ST_DONE;
  } else if (p->chunked) {
    p->body_kind = HTTPS_BODY_CHUNKED;
    p->state = ST_CHUNK_SIZE;
  } else if (p->have_length) {
    if (p->content_length > p->max_body) {
      return parser_fail(p, "body over %zu octets", p->max_body);
    }
    p->body_kind = HTTPS_BODY_LENGTH;
    p->left = p->content_length;
    p->state = p->left == 0 ? ST_DONE : ST_BODY;
  } else {
    p->body_kind = HTTPS_BODY_CLOSE;
    p->state = ST_BODY;
  }
  p->head_len = 0;
  return HTTPS_PARSE_HEAD;
}

/* head_line handles one line of the head (terminator removed). */
static enum https_parse head_line(struct https_parser *p, const uint8_t *s,
                                  size_t len) {
  if (p->status == 0) {
    return parse_status_line(p, s, len);
  }
  if (len == 0) {
    return head_end(p);
  }
  return parse_field(p, s, len, 0);
}

/* chunk_size_line: chunk-size [ chunk-ext ] (RFC 9112 §7.1); the
 * extensions are ignored. */
static enum https_parse chunk_size_line(struct https_parser *p,
                                        const uint8_t *s, size_t len) {
  uint64_t n = 0;
  size_t i = 0;
  for (; i < len; i++) {
    int d = s[i] >= '0' && s[i] <= '9'   ? s[i] - '0'
            : s[i] >= 'a' && s[i] <= 'f' ? s[i] - 'a' + 10
            : s[i] >= 'A' && s[i] <= 'F' ? s[i] - 'A' + 10
                                         : -1;
    if (d < 0) {
      break;
    }
    n = n * 16 + (uint64_t)d;
  }
  if (i == 0 || i > HTTPS_MAX_CHUNK_DIGITS) {
    return parser_fail(p, "malformed chunk size");
  }
  while (i < len && is_ows(s[i])) {
    i++;
  }
  if (i < len && s[i] != ';') {
    return parser_fail(p, "malformed chunk size");
  }
  for (; i < len; i++) {
    if (s[i] < 0x20 && s[i] != '\t') {
      return parser_fail(p, "control octet in a chunk extension");
    }
  }
  if (n > p->max_body - p->body.len) {
    return parser_fail(p, "body over %zu octets", p->max_body);
  }
  p->left = n;
  p->state = n == 0 ? ST_TRAILERS : ST_CHUNK_DATA;
  p->head_len = 0;
  return HTTPS_PARSE_NEED_MORE;
}

/* on_line dispatches a complete line by state. */
static enum https_parse on_line(struct https_parser *p, const uint8_t *s,
                                size_t len) {
  if (memchr(s, '\r', len) != NULL) {
    return parser_fail(p, "CR not followed by LF");
  }
  switch (p->state) {
  case ST_HEAD:
    return head_line(p, s, len);
  case ST_CHUNK_SIZE:
    return chunk_size_line(p, s, len);
  case ST_CHUNK_END:
    if (len != 0) {
      return parser_fail(p, "chunk data longer than its size");
    }
    p->state = ST_CHUNK_SIZE;
    return HTTPS_PARSE_NEED_MORE;
  case ST_TRAILERS:
    if (len == 0) {
      p->state = ST_DONE;
      return HTTPS_PARSE_DONE;
    }
    return parse_field(p, s, len, 1);
  default:
    return parser_fail(p, "parser bug: line in state %d", p->state);
  }
}

/* feed_line gathers octets up to LF (counted against the head limit);
 * a complete line goes to on_line with its CR removed. */
static enum https_parse feed_line(struct https_parser *p, size_t *used,
                                  const uint8_t *in, size_t in_len) {
  const uint8_t *lf = memchr(in, '\n', in_len);
  size_t n = lf != NULL ? (size_t)(lf - in) + 1 : in_len;
  if (p->head_len + n > HTTPS_MAX_HEAD) {
    return parser_fail(p,
                       p->state == ST_HEAD ? "response head over %d octets"
                                           : "chunk line over %d octets",
                       HTTPS_MAX_HEAD);
  }
  p->head_len += n;
  *used = n;
  if (buf_append(&p->line, in, n) != 0) {
    return parser_fail(p, "out of memory");
  }
  if (lf == NULL) {
    return HTTPS_PARSE_NEED_MORE;
  }
  size_t len = p->line.len - 1;
  if (len > 0 && p->line.data[len - 1] == '\r') {
    len--;
  }
  enum https_parse r = on_line(p, p->line.data, len);
  buf_reset(&p->line);
  return r;
}

/* feed_body takes body octets (a Content-Length body, one chunk, or the
 * rest of the connection). */
static enum https_parse feed_body(struct https_parser *p, size_t *used,
                                  const uint8_t *in, size_t in_len) {
  size_t n = in_len;
  if (p->body_kind != HTTPS_BODY_CLOSE && p->left < n) {
    n = (size_t)p->left;
  }
  if (p->body.len + n > p->max_body) {
    return parser_fail(p, "body over %zu octets", p->max_body);
  }
  if (n > 0 && buf_append(&p->body, in, n) != 0) {
    return parser_fail(p, "out of memory");
  }
  *used = n;
  if (p->body_kind == HTTPS_BODY_CLOSE) {
    return HTTPS_PARSE_NEED_MORE;
  }
  p->left -= n;
  if (p->left > 0) {
    return HTTPS_PARSE_NEED_MORE;
  }
  if (p->body_kind == HTTPS_BODY_CHUNKED) {
    p->state = ST_CHUNK_END;
    return HTTPS_PARSE_NEED_MORE;
  }
  p->state = ST_DONE;
  return HTTPS_PARSE_DONE;
}

enum https_parse https_parser_feed(struct https_parser *p, size_t *out_consumed,
                                   const uint8_t *in, size_t in_len) {
  size_t off = 0;
  enum https_parse r = HTTPS_PARSE_NEED_MORE;
  while (r == HTTPS_PARSE_NEED_MORE) {
    if (p->state == ST_DONE) {
      r = HTTPS_PARSE_DONE;
      break;
    }
    if (p->state == ST_ERROR) {
      r = HTTPS_PARSE_ERROR;
      break;
    }
    if (off == in_len) {
      break;
    }
    size_t used = 0;
    if (p->state == ST_BODY || p->state == ST_CHUNK_DATA) {
      r = feed_body(p, &used, in + off, in_len - off);
    } else {
      r = feed_line(p, &used, in + off, in_len - off);
    }
    off += used;
  }
  *out_consumed = off;
  return r;
}

enum https_parse https_parser_eof(struct https_parser *p) {
  switch (p->state) {
  case ST_DONE:
    return HTTPS_PARSE_DONE;
  case ST_ERROR:
    return HTTPS_PARSE_ERROR;
  case ST_BODY:
    if (p->body_kind == HTTPS_BODY_CLOSE) {
      p->state = ST_DONE;
      return HTTPS_PARSE_DONE;
    }
    return parser_fail(p, "truncated body (%llu of %llu octets missing)",
                       (unsigned long long)p->left,
                       (unsigned long long)p->content_length);
  case ST_HEAD:
    return parser_fail(p, p->status == 0 && p->line.len == 0
                              ? "connection closed without a response"
                              : "truncated response head");
  default:
    return parser_fail(p, "truncated chunked body");
  }
}

int https_media_type_is(const char *content_type, const char *type) {
  const char *s = content_type;
  while (is_ows((uint8_t)*s)) {
    s++;
  }
  size_t n = strcspn(s, ";");
  while (n > 0 && is_ows((uint8_t)s[n - 1])) {
    n--;
  }
  return n == strlen(type) && strncasecmp(s, type, n) == 0;
}

/* ---- the connection ---- */

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One attempt on one address. */
struct https_try {
  const struct https_request *req;
  int fd;
  struct tls *tls;
  int64_t deadline_ms; /* the whole call's */
  char peer[64];
  int verified; /* the certificate passed: failures are final now */
  struct https_parser parser;
  struct buf plain, out;
  char err[HTTPS_ERR_LEN];
};

enum { TRY_OK = 0, TRY_NEXT = -1, TRY_FINAL = -2 };

static int __attribute__((format(printf, 2, 3)))
try_fail(struct https_try *t, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t->err, sizeof(t->err), fmt, ap);
  va_end(ap);
  return t->verified ? TRY_FINAL : TRY_NEXT;
}

/* wait_fd polls fd for events until deadline_ms: 1 ready, 0 timed out. */
static int wait_fd(int fd, short events, int64_t deadline_ms) {
  for (;;) {
    int64_t left = deadline_ms - mono_ms();
    if (left <= 0) {
      return 0;
    }
    struct pollfd pfd = {.fd = fd, .events = events};
    int n = poll(&pfd, 1, left > 1000000 ? 1000000 : (int)left);
    if (n > 0) {
      return 1;
    }
    if (n < 0 && errno != EINTR) {
      return 1; /* let the next syscall report the error */
    }
  }
}

/* try_connect opens a non-blocking TCP connection within the connect
 * timeout (and the call's deadline). */
static int try_connect(struct https_try *t, const struct sockaddr_storage *a) {
  const struct https_request *req = t->req;
  struct sockaddr_storage ss = *a;
  socklen_t len;
  if (ss.ss_family == AF_INET6) {
    ((struct sockaddr_in6 *)&ss)->sin6_port = htons(req->port);
    len = sizeof(struct sockaddr_in6);
  } else if (ss.ss_family == AF_INET) {
    ((struct sockaddr_in *)&ss)->sin_port = htons(req->port);
    len = sizeof(struct sockaddr_in);
  } else {
    return try_fail(t, "not an IP address");
  }
  t->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (t->fd < 0) {
    return try_fail(t, "socket: %s", strerror(errno));
  }
  unsigned ct = req->connect_timeout_ms ? req->connect_timeout_ms
                                        : HTTPS_DEFAULT_CONNECT_TIMEOUT_MS;
  int64_t start = mono_ms();
  int64_t until = start + ct;
  if (until > t->deadline_ms) {
    until = t->deadline_ms;
  }
  if (connect(t->fd, (struct sockaddr *)&ss, len) != 0 &&
      errno != EINPROGRESS) {
    return try_fail(t, "connect: %s", strerror(errno));
  }
  if (!wait_fd(t->fd, POLLOUT, until)) {
    return try_fail(t, "connect: timed out after %lld ms",
                    (long long)(until - start));
  }
  int so_err = 0;
  socklen_t so_len = sizeof(so_err);
  if (getsockopt(t->fd, SOL_SOCKET, SO_ERROR, &so_err, &so_len) != 0 ||
      so_err != 0) {
    return try_fail(t, "connect: %s", strerror(so_err ? so_err : errno));
  }
  return TRY_OK;
}

/* try_flush sends what TLS has queued for the peer. */
static int try_flush(struct https_try *t) {
  if (tls_take_output(t->tls, &t->out) != 0) {
    return try_fail(t, "out of memory");
  }
  size_t off = 0;
  while (off < t->out.len) {
    ssize_t n = send(t->fd, t->out.data + off, t->out.len - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += (size_t)n;
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (!wait_fd(t->fd, POLLOUT, t->deadline_ms)) {
        return try_fail(t, "timed out sending");
      }
    } else {
      return try_fail(t, "send: %s", strerror(errno));
    }
  }
  buf_reset(&t->out);
  return TRY_OK;
}

/* try_request checks the certificate (RFC 8461 §3.3: valid for the host,
 * chained to a trusted CA), then queues the GET. */
static int try_request(struct https_try *t) {
  const struct https_request *req = t->req;
  if (tls_verify(t->tls) != TLS_VERIFY_OK) {
    return try_fail(t, "certificate not verified: %s",
                    tls_verify_error(t->tls));
  }
  t->verified = 1;
  char head[HTTPS_MAX_PATH + HTTPS_MAX_HOST + 128];
  int n =
      req->port == 443
          ? snprintf(head, sizeof(head), "GET %s HTTP/1.1\r\nHost: %s\r\n",
                     req->path, req->host)
          : snprintf(head, sizeof(head), "GET %s HTTP/1.1\r\nHost: %s:%u\r\n",
                     req->path, req->host, req->port);
  n += snprintf(head + n, sizeof(head) - (size_t)n,
                "User-Agent: postseal\r\nAccept: */*\r\n"
                "Connection: close\r\n\r\n");
  if (tls_write(t->tls, (const uint8_t *)head, (size_t)n) != 0) {
    return try_fail(t, "TLS: %s", tls_error(t->tls));
  }
  return TRY_OK;
}

/* try_on_head judges the status and type before any body is read. */
static int try_on_head(struct https_try *t) {
  struct https_parser *p = &t->parser;
  if (p->status >= 300 && p->status < 400) {
    return try_fail(t, "HTTP %d redirect not followed (RFC 8461 §3.3)%s%s%s",
                    p->status, p->location[0] ? " (to " : "", p->location,
                    p->location[0] ? ")" : "");
  }
  if (p->status != 200) {
    return try_fail(t, "HTTP %d, want 200", p->status);
  }
  const char *want = t->req->want_media_type;
  if (want != NULL && !https_media_type_is(p->content_type, want)) {
    return try_fail(t, "Content-Type %s, want %s",
                    p->content_type[0] ? p->content_type : "(none)", want);
  }
  return TRY_OK;
}

/* try_parse feeds plaintext to the parser: TRY_OK and *done set once the
 * response is complete. */
static int try_parse(struct https_try *t, int *done) {
  /* An empty buffer has no memory: never offset a null pointer. */
  const uint8_t *in =
      t->plain.data != NULL ? t->plain.data : (const uint8_t *)"";
  size_t off = 0;
  for (;;) {
    size_t used = 0;
    enum https_parse r =
        https_parser_feed(&t->parser, &used, in + off, t->plain.len - off);
    off += used;
    if (r == HTTPS_PARSE_ERROR) {
      return try_fail(t, "bad response: %s", t->parser.err);
    }
    if (r == HTTPS_PARSE_DONE) {
      *done = 1;
      break;
    }
    if (r == HTTPS_PARSE_NEED_MORE) {
      break;
    }
    int rc = try_on_head(t);
    if (rc != TRY_OK) {
      return rc;
    }
  }
  buf_reset(&t->plain);
  return TRY_OK;
}

/* try_on_eof: the peer closed (close_notify says whether cleanly). A
 * body up to the close must end in close_notify, or it may be cut. */
static int try_on_eof(struct https_try *t, int clean, int *done) {
  if (!tls_handshake_done(t->tls)) {
    return try_fail(t, "connection closed during the TLS handshake");
  }
  if (!clean && t->parser.state == ST_BODY &&
      t->parser.body_kind == HTTPS_BODY_CLOSE) {
    return try_fail(t, "connection closed without close_notify (the body "
                       "may be truncated)");
  }
  if (https_parser_eof(&t->parser) != HTTPS_PARSE_DONE) {
    return try_fail(t, "bad response: %s", t->parser.err);
  }
  *done = 1;
  return TRY_OK;
}

/* try_read waits for input and runs it through TLS and the parser. */
static int try_read(struct https_try *t, int *done) {
  if (!wait_fd(t->fd, POLLIN, t->deadline_ms)) {
    return try_fail(t, "timed out after %u ms",
                    t->req->timeout_ms ? t->req->timeout_ms
                                       : HTTPS_DEFAULT_TIMEOUT_MS);
  }
  uint8_t in[HTTPS_IO_STEP];
  ssize_t n = recv(t->fd, in, sizeof(in), 0);
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) {
      return TRY_OK;
    }
    return try_fail(t, "recv: %s", strerror(errno));
  }
  if (n == 0) {
    return try_on_eof(t, 0, done);
  }
  enum tls_status st = tls_input(t->tls, &t->plain, in, (size_t)n);
  if (st == TLS_ERROR) {
    return try_fail(t, "TLS: %s", tls_error(t->tls));
  }
  int rc = t->verified ? try_parse(t, done) : TRY_OK;
  if (rc == TRY_OK && !*done && st == TLS_CLOSED) {
    rc = try_on_eof(t, 1, done);
  }
  return rc;
}

/* try_exchange runs the TLS session: handshake, check, request, response. */
static int try_exchange(struct https_try *t) {
  const struct https_request *req = t->req;
  struct tls_client_params params = {
      .sni = req->host, .names = {req->host}, .num_names = 1};
  t->tls = tls_new_client(req->tls, &params);
  if (t->tls == NULL) {
    return try_fail(t, "TLS: out of memory");
  }
  int done = 0;
  while (!done) {
    int rc = try_flush(t);
    if (rc == TRY_OK && !t->verified && tls_handshake_done(t->tls)) {
      rc = try_request(t);
      if (rc == TRY_OK) {
        rc = try_flush(t);
      }
    }
    if (rc == TRY_OK) {
      rc = try_read(t, &done);
    }
    if (rc != TRY_OK) {
      return rc;
    }
  }
  return TRY_OK;
}

static void try_cleanup(struct https_try *t) {
  tls_free(t->tls);
  if (t->fd >= 0) {
    close(t->fd);
  }
  https_parser_cleanup(&t->parser);
  buf_free(&t->plain);
  buf_free(&t->out);
}

/* request_ok checks what goes into the request line and Host field. */
static int request_ok(const struct https_request *req, char *err,
                      size_t err_len) {
  size_t hl = req->host != NULL ? strlen(req->host) : 0;
  size_t pl = req->path != NULL ? strlen(req->path) : 0;
  if (req->tls == NULL || hl == 0 || hl > HTTPS_MAX_HOST ||
      strspn(req->host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                        "0123456789.-") != hl) {
    snprintf(err, err_len, "bad host name");
    return 0;
  }
  if (pl == 0 || pl > HTTPS_MAX_PATH || req->path[0] != '/') {
    snprintf(err, err_len, "bad path");
    return 0;
  }
  for (size_t i = 0; i < pl; i++) {
    if ((uint8_t)req->path[i] <= 0x20 || (uint8_t)req->path[i] >= 0x7f) {
      snprintf(err, err_len, "bad path");
      return 0;
    }
  }
  if (req->num_addrs == 0 || req->port == 0) {
    snprintf(err, err_len, "no address to connect to");
    return 0;
  }
  return 1;
}

int https_get(const struct https_request *req, struct https_response *out,
              char *err, size_t err_len) {
  memset(out, 0, sizeof(*out));
  if (!request_ok(req, err, err_len)) {
    return -1;
  }
  unsigned timeout =
      req->timeout_ms ? req->timeout_ms : HTTPS_DEFAULT_TIMEOUT_MS;
  int64_t deadline = mono_ms() + timeout;
  size_t num =
      req->num_addrs < HTTPS_MAX_ADDRS ? req->num_addrs : HTTPS_MAX_ADDRS;
  int rc = TRY_NEXT;
  for (size_t i = 0; i < num && rc == TRY_NEXT; i++) {
    struct https_try t = {.req = req, .fd = -1, .deadline_ms = deadline};
    https_parser_init(&t.parser, req->max_body);
    char addr[64] = "?";
    sockaddr_format((const struct sockaddr *)&req->addrs[i], addr,
                    sizeof(addr));
    snprintf(t.peer, sizeof(t.peer),
             req->addrs[i].ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", addr,
             req->port);
    rc = try_connect(&t, &req->addrs[i]);
    if (rc == TRY_OK) {
      rc = try_exchange(&t);
    }
    if (rc == TRY_OK) {
      out->status = t.parser.status;
      memcpy(out->content_type, t.parser.content_type,
             sizeof(out->content_type));
      memcpy(out->peer, t.peer, sizeof(out->peer));
      buf_move(&out->body, &t.parser.body);
    } else {
      snprintf(err, err_len, "%s: %s", t.peer, t.err);
    }
    try_cleanup(&t);
    if (rc == TRY_NEXT && mono_ms() >= deadline) {
      break;
    }
  }
  return rc == TRY_OK ? 0 : -1;
}

void https_response_cleanup(struct https_response *r) {
  buf_free(&r->body);
}
