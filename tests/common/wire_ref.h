/* tests/common/wire_ref.h — reference checks of SMTP wire form, one octet
 * at a time, for the unit tests and fuzz targets that hold the fast paths
 * (proto/smtp_client.c's SIMD scan) against them. */
#ifndef POSTSEAL_TESTS_COMMON_WIRE_REF_H
#define POSTSEAL_TESTS_COMMON_WIRE_REF_H

#include <stddef.h>
#include <stdint.h>

/* 1 if p is in wire form: CR and LF only as CRLF, no "." first on a line,
 * empty or ending in CRLF. */
static inline int wire_ref_plain(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if ((p[i] == '\r' && (i + 1 == n || p[i + 1] != '\n')) ||
        (p[i] == '\n' && (i == 0 || p[i - 1] != '\r')) ||
        (p[i] == '.' && (i == 0 || p[i - 1] == '\n'))) {
      return 0;
    }
  }
  return n == 0 || p[n - 1] == '\n';
}

#endif
