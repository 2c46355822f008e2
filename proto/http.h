/* proto/http.h — the minimal HTTP/1.x request-head parser the metrics
 * endpoint needs (RFC 9112 §3: request-line, header fields, empty line).
 *
 * Owns: parsing only; bytes in, method and target out. Knows no socket.
 * Bodies are not supported (the metrics endpoint is GET-only): a request
 * announcing one (Content-Length > 0 or Transfer-Encoding) is an error.
 * Limits: HTTP_MAX_HEAD octets for the whole head. Pure; any thread. */
#ifndef POSTSEAL_PROTO_HTTP_H
#define POSTSEAL_PROTO_HTTP_H

#include <stddef.h>

#define HTTP_MAX_HEAD 8192
#define HTTP_MAX_METHOD 16
#define HTTP_MAX_TARGET 1024

enum http_parse_result {
  HTTP_PARSE_DONE,      /* a complete head was parsed */
  HTTP_PARSE_NEED_MORE, /* no empty line yet, under the limit */
  HTTP_PARSE_ERROR,     /* malformed (400) */
  HTTP_PARSE_TOO_LARGE, /* head over HTTP_MAX_HEAD (431) */
};

struct http_request {
  char method[HTTP_MAX_METHOD + 1];
  char target[HTTP_MAX_TARGET + 1];
  int minor_version; /* 0 or 1 */
  size_t head_len;   /* bytes of the head incl. the empty line */
};

/* http_request_parse parses the head at the start of in. Accepts CRLF and,
 * leniently, bare LF line ends (RFC 9112 §2.2). */
enum http_parse_result http_request_parse(const char *in, size_t in_len,
                                          struct http_request *out);

#endif
