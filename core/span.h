/* core/span.h — a bounded reader over octets, for the small text parsers
 * of the policy layer (MTA-STS policies and TXT records, TLS-RPT records).
 *
 * A struct span is a view (pointer and octets left); every function
 * consumes from its front and never reads past len. Header-only: the
 * functions are small enough to inline into each parser.
 * Thread: none of its own; a span belongs to its caller. */
#ifndef POSTSEAL_CORE_SPAN_H
#define POSTSEAL_CORE_SPAN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct span {
  const uint8_t *p;
  size_t len; /* octets left */
};

static inline int span_is_alpha(uint8_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static inline int span_is_digit(uint8_t c) {
  return c >= '0' && c <= '9';
}

static inline int span_is_alnum(uint8_t c) {
  return span_is_alpha(c) || span_is_digit(c);
}

static inline int span_is_wsp(uint8_t c) {
  return c == ' ' || c == '\t';
}

static inline uint8_t span_lower(uint8_t c) {
  return c >= 'A' && c <= 'Z' ? (uint8_t)(c + 32) : c;
}

/* span_literal consumes lit if the span starts with it, case-sensitive
 * (the RFCs write their keywords %s"..."). 1 if it did. */
static inline int span_literal(struct span *s, const char *lit) {
  size_t n = strlen(lit);
  if (s->len < n || memcmp(s->p, lit, n) != 0) {
    return 0;
  }
  s->p += n;
  s->len -= n;
  return 1;
}

static inline void span_skip_wsp(struct span *s) {
  while (s->len > 0 && span_is_wsp(s->p[0])) {
    s->p++;
    s->len--;
  }
}

/* span_take cuts the longest prefix whose octets satisfy ok. */
static inline struct span span_take(struct span *s, int (*ok)(uint8_t)) {
  struct span out = {s->p, 0};
  while (out.len < s->len && ok(s->p[out.len])) {
    out.len++;
  }
  s->p += out.len;
  s->len -= out.len;
  return out;
}

static inline int span_eq(struct span s, const char *lit) {
  return s.len == strlen(lit) && memcmp(s.p, lit, s.len) == 0;
}

#endif
