/* Fuzz target: proto/http request-head parser. Checks, beyond memory
 * safety, that a parsed head is consistent: lengths within the input and
 * the limits, method and target NUL-terminated tokens. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct http_request req;
  enum http_parse_result rc =
      http_request_parse((const char *)data, size, &req);
  if (rc == HTTP_PARSE_DONE) {
    if (req.head_len == 0 || req.head_len > size ||
        req.head_len > HTTP_MAX_HEAD + 2) {
      abort();
    }
    if (strlen(req.method) == 0 || strlen(req.method) > HTTP_MAX_METHOD ||
        strlen(req.target) == 0 || strlen(req.target) > HTTP_MAX_TARGET) {
      abort();
    }
    /* Parsing a prefix that ends before the head must not succeed. */
    struct http_request again;
    if (http_request_parse((const char *)data, req.head_len - 1, &again) ==
        HTTP_PARSE_DONE) {
      abort();
    }
  }
  return 0;
}
