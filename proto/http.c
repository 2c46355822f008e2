/* proto/http.c — HTTP/1.x request-head parser; see http.h. */
#include "proto/http.h"

#include <string.h>
#include <strings.h>

/* http_find_head_end returns the length of the head including its empty
 * line, or 0 if the empty line has not arrived. */
static size_t http_find_head_end(const char *in, size_t in_len) {
  for (size_t i = 0; i < in_len; i++) {
    if (in[i] != '\n') {
      continue;
    }
    if (i + 1 < in_len && in[i + 1] == '\n') {
      return i + 2;
    }
    if (i + 2 < in_len && in[i + 1] == '\r' && in[i + 2] == '\n') {
      return i + 3;
    }
  }
  return 0;
}

/* http_is_tchar: RFC 9110 §5.6.2 token characters. */
static int http_is_tchar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c));
}

/* http_parse_request_line: method SP request-target SP HTTP-version. */
static int http_parse_request_line(const char *line, size_t len,
                                   struct http_request *out) {
  size_t i = 0;
  while (i < len && http_is_tchar(line[i])) {
    i++;
  }
  if (i == 0 || i > HTTP_MAX_METHOD || i >= len || line[i] != ' ') {
    return -1;
  }
  memcpy(out->method, line, i);
  out->method[i] = '\0';
  size_t t = ++i;
  while (i < len && line[i] > ' ' && line[i] < 0x7f) {
    i++;
  }
  size_t target_len = i - t;
  if (target_len == 0 || target_len > HTTP_MAX_TARGET || i >= len ||
      line[i] != ' ') {
    return -1;
  }
  memcpy(out->target, line + t, target_len);
  out->target[target_len] = '\0';
  i++;
  if (len - i != 8 || memcmp(line + i, "HTTP/1.", 7) != 0 ||
      (line[i + 7] != '0' && line[i + 7] != '1')) {
    return -1;
  }
  out->minor_version = line[i + 7] - '0';
  return 0;
}

/* http_check_field rejects malformed fields and announced bodies. */
static int http_check_field(const char *line, size_t len) {
  const char *colon = memchr(line, ':', len);
  if (colon == NULL || colon == line) {
    return -1;
  }
  for (const char *p = line; p < colon; p++) {
    if (!http_is_tchar(*p)) {
      return -1; /* includes whitespace before the colon (§5.1) */
    }
  }
  size_t name_len = (size_t)(colon - line);
  const char *v = colon + 1;
  size_t v_len = len - name_len - 1;
  while (v_len > 0 && (*v == ' ' || *v == '\t')) {
    v++;
    v_len--;
  }
  if (name_len == 17 && strncasecmp(line, "transfer-encoding", 17) == 0) {
    return -1;
  }
  if (name_len == 14 && strncasecmp(line, "content-length", 14) == 0) {
    return (v_len >= 1 && v[0] == '0' &&
            (v_len == 1 || v[1] == ' ' || v[1] == '\t'))
               ? 0
               : -1;
  }
  return 0;
}

enum http_parse_result http_request_parse(const char *in, size_t in_len,
                                          struct http_request *out) {
  size_t head_len = http_find_head_end(
      in, in_len < HTTP_MAX_HEAD + 3 ? in_len : HTTP_MAX_HEAD + 3);
  if (head_len == 0) {
    return in_len > HTTP_MAX_HEAD ? HTTP_PARSE_TOO_LARGE : HTTP_PARSE_NEED_MORE;
  }
  if (head_len > HTTP_MAX_HEAD) {
    return HTTP_PARSE_TOO_LARGE;
  }
  memset(out, 0, sizeof(*out));
  out->head_len = head_len;
  size_t pos = 0;
  int first = 1;
  while (pos < head_len) {
    const char *nl = memchr(in + pos, '\n', head_len - pos);
    size_t len = (size_t)(nl - (in + pos));
    if (len > 0 && in[pos + len - 1] == '\r') {
      len--;
    }
    if (len == 0) {
      break; /* the empty line ending the head */
    }
    if (memchr(in + pos, '\r', len) != NULL ||
        memchr(in + pos, '\0', len) != NULL) {
      return HTTP_PARSE_ERROR; /* bare CR or NUL inside a line */
    }
    int rc = first ? http_parse_request_line(in + pos, len, out)
                   : http_check_field(in + pos, len);
    if (rc != 0) {
      return HTTP_PARSE_ERROR;
    }
    first = 0;
    pos = (size_t)(nl - in) + 1;
  }
  return first ? HTTP_PARSE_ERROR : HTTP_PARSE_DONE;
}
