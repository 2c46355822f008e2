/* crypto/https.h — one blocking HTTPS GET, for fetching MTA-STS policies
 * (RFC 8461 §3.3), and the sans-I/O HTTP/1.1 response parser under it.
 *
 * Owns: one TCP connection at a time (non-blocking socket, poll()), a
 * client TLS session on the caller's context (crypto/tls.h), and the
 * response it reads. https_get tries the given addresses in order until
 * one gives a verified TLS session, sends "GET path HTTP/1.1" with Host
 * and Connection: close, and reads the response: a status line, header
 * fields, a body by Content-Length, chunked transfer coding or up to the
 * close. No redirect is followed (RFC 8461 §3.3: a 3xx is a failure), and
 * anything but 200 is one. The certificate must chain to the context's CA
 * file and name the host (TLS_VERIFY_OK), or the address fails; the
 * request leaves only after that check.
 *
 * Thread: blocks for up to timeout_ms, so it runs on a pool thread or in
 * the CLI, never on an event loop. Reentrant: nothing shared but the TLS
 * context (thread-safe). Reads CLOCK_MONOTONIC for its timeouts.
 *
 * Limits: HTTPS_MAX_HEAD octets for a response head (status line and
 * fields, trailers too), the caller's max_body for the body (decoded),
 * HTTPS_MAX_ADDRS addresses, HTTPS_MAX_CHUNK_DIGITS hex digits of a chunk
 * size. */
#ifndef POSTSEAL_CRYPTO_HTTPS_H
#define POSTSEAL_CRYPTO_HTTPS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/buf.h"
#include "crypto/tls.h"

#define HTTPS_MAX_HEAD 16384
#define HTTPS_MAX_ADDRS 16
#define HTTPS_MAX_CHUNK_DIGITS 8 /* a chunk under 4 GiB */
#define HTTPS_MAX_HOST 253
#define HTTPS_MAX_PATH 1024
#define HTTPS_MAX_CONTENT_TYPE 128
#define HTTPS_MAX_LOCATION 256
#define HTTPS_DEFAULT_CONNECT_TIMEOUT_MS 10000
#define HTTPS_DEFAULT_TIMEOUT_MS 60000 /* RFC 8461 §3.3: "one minute" */
#define HTTPS_ERR_LEN 320              /* room for any reason */

/* ---- the response parser (sans-I/O) ---- */

enum https_parse {
  HTTPS_PARSE_NEED_MORE, /* feed more, or https_parser_eof */
  HTTPS_PARSE_HEAD,      /* the final head is complete: status and fields
                            readable; feed the rest (consumed tells where
                            the head ended) */
  HTTPS_PARSE_DONE,      /* the whole response: body complete */
  HTTPS_PARSE_ERROR,     /* malformed or over a limit: see err (sticky) */
};

enum https_body_kind {
  HTTPS_BODY_NONE,    /* 204, 304: no body */
  HTTPS_BODY_LENGTH,  /* Content-Length */
  HTTPS_BODY_CHUNKED, /* Transfer-Encoding: chunked */
  HTTPS_BODY_CLOSE,   /* up to the end of the connection */
};

struct https_parser {
  /* Results, once HTTPS_PARSE_HEAD was returned. */
  int status;                                /* 100..599 */
  int minor_version;                         /* HTTP/1.0 or 1.1 */
  char content_type[HTTPS_MAX_CONTENT_TYPE]; /* as sent, or "" */
  char location[HTTPS_MAX_LOCATION];         /* for a 3xx, printable */
  enum https_body_kind body_kind;
  uint64_t content_length;
  struct buf body; /* decoded; bounded by max_body */
  char err[HTTPS_ERR_LEN];
  /* Private. */
  int state;
  size_t max_body;
  struct buf line; /* a head or chunk line being gathered */
  size_t head_len; /* octets of head (or trailers) so far */
  uint64_t left;   /* octets left in the body or chunk */
  int have_length, chunked;
};

/* https_parser_init readies p for one response whose body may hold at
 * most max_body octets. https_parser_cleanup frees what it holds. */
void https_parser_init(struct https_parser *p, size_t max_body);
void https_parser_cleanup(struct https_parser *p);

/* https_parser_feed takes in[0..in_len), stops early after a head
 * (HTTPS_PARSE_HEAD) and at the end of the response; *out_consumed is
 * what it used. Interim 1xx heads are skipped. Bytes after the response
 * are left unconsumed. */
enum https_parse https_parser_feed(struct https_parser *p, size_t *out_consumed,
                                   const uint8_t *in, size_t in_len);

/* https_parser_eof: the connection ended. HTTPS_PARSE_DONE when the body
 * runs to the close (or the response was already complete), else
 * HTTPS_PARSE_ERROR ("truncated ..."). */
enum https_parse https_parser_eof(struct https_parser *p);

/* https_media_type_is: 1 if a Content-Type value's media type (before
 * any ";" parameters, blanks trimmed) equals type, case-insensitively. */
int https_media_type_is(const char *content_type, const char *type);

/* ---- the request ---- */

struct https_request {
  struct tls_ctx *tls; /* client context: its CA file decides trust */
  const char *host;    /* SNI, Host field, the name to verify */
  uint16_t port;
  const char *path; /* "/.well-known/mta-sts.txt" */
  /* Addresses to try in order (their ports are ignored). */
  const struct sockaddr_storage *addrs;
  size_t num_addrs;
  unsigned connect_timeout_ms; /* per address; 0: default */
  unsigned timeout_ms;         /* the whole call; 0: default */
  size_t max_body;             /* octets; 0: none allowed */
  const char *want_media_type; /* "text/plain", or NULL: any */
};

struct https_response {
  int status; /* 200 */
  char content_type[HTTPS_MAX_CONTENT_TYPE];
  char peer[64]; /* the address that answered, "192.0.2.1:443" */
  struct buf body;
};

/* https_get fetches req->path. Returns 0 with a 200 response in *out
 * (free with https_response_cleanup), or -1 with one line in err, the
 * address first where there was one: "192.0.2.1:443: connect:
 * Connection refused", "...: certificate not verified: name mismatch:
 * wanted mta-sts.example.com", "...: HTTP 404 (Not Found)", "...: HTTP
 * 301 redirect not followed (to https://...)", "...: Content-Type
 * text/html, want text/plain", "...: body over 65536 octets", "timed out
 * after 60000 ms". A failure before the certificate is verified moves on
 * to the next address; the last address's reason is reported. A failure
 * after it (a bad response) is final. */
int https_get(const struct https_request *req, struct https_response *out,
              char *err, size_t err_len);
void https_response_cleanup(struct https_response *r);

#endif
