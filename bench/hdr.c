/* bench/hdr.c — log-linear histogram; see hdr.h.
 *
 * Layout (HdrHistogram's, unit magnitude 0): bucket b covers values whose
 * top set bit is at b + sub_bits - 1; within it, 2^(sub_bits-1) sub-buckets
 * of width 2^b. Bucket 0 additionally holds 0 .. 2^(sub_bits-1)-1 exactly,
 * so index = (b + 1) * half + (value >> b) - half. */
#include "bench/hdr.h"

#include <stdlib.h>
#include <string.h>

static unsigned hdr_half_bits(const struct hdr *h) {
  return h->sub_bits - 1;
}

/* hdr_bucket_of: the power-of-two bucket holding value. */
static unsigned hdr_bucket_of(const struct hdr *h, uint64_t value) {
  uint64_t mask = ((uint64_t)1 << h->sub_bits) - 1;
  unsigned pow2ceil = 64u - (unsigned)__builtin_clzll(value | mask);
  return pow2ceil - h->sub_bits;
}

size_t hdr_index_of(const struct hdr *h, uint64_t value) {
  unsigned b = hdr_bucket_of(h, value);
  uint64_t sub = value >> b;
  uint64_t half = (uint64_t)1 << hdr_half_bits(h);
  return (size_t)((((uint64_t)b + 1) << hdr_half_bits(h)) + sub - half);
}

/* hdr_value_of_index: the lowest value counted at index. */
static uint64_t hdr_value_of_index(const struct hdr *h, size_t index) {
  uint64_t half = (uint64_t)1 << hdr_half_bits(h);
  int64_t b = (int64_t)(index >> hdr_half_bits(h)) - 1;
  uint64_t sub = ((uint64_t)index & (half - 1)) + half;
  if (b < 0) {
    sub -= half;
    b = 0;
  }
  return sub << b;
}

uint64_t hdr_lowest_equivalent(const struct hdr *h, uint64_t value) {
  unsigned b = hdr_bucket_of(h, value);
  return (value >> b) << b;
}

uint64_t hdr_highest_equivalent(const struct hdr *h, uint64_t value) {
  unsigned b = hdr_bucket_of(h, value);
  return hdr_lowest_equivalent(h, value) + ((uint64_t)1 << b) - 1;
}

int hdr_init(struct hdr *h, uint64_t highest, unsigned sub_bits) {
  memset(h, 0, sizeof(*h));
  if (sub_bits < 2 || sub_bits > HDR_MAX_SUB_BITS ||
      highest < ((uint64_t)1 << sub_bits) || highest > (UINT64_MAX >> 2)) {
    return -1;
  }
  h->highest = highest;
  h->sub_bits = sub_bits;
  h->num_counts = hdr_index_of(h, highest) + 1;
  h->counts = calloc(h->num_counts, sizeof(*h->counts));
  return h->counts == NULL ? -1 : 0;
}

void hdr_cleanup(struct hdr *h) {
  free(h->counts);
  memset(h, 0, sizeof(*h));
}

void hdr_reset(struct hdr *h) {
  memset(h->counts, 0, h->num_counts * sizeof(*h->counts));
  h->total = h->num_clamped = h->min = h->max = 0;
  h->sum = 0;
}

void hdr_record_n(struct hdr *h, uint64_t value, uint64_t n) {
  if (n == 0) {
    return;
  }
  if (value > h->highest) {
    value = h->highest; /* a runaway value must not index past the array */
    h->num_clamped += n;
  }
  h->counts[hdr_index_of(h, value)] += n;
  if (h->total == 0 || value < h->min) {
    h->min = value;
  }
  if (value > h->max) {
    h->max = value;
  }
  h->total += n;
  h->sum += (double)value * (double)n;
}

void hdr_record(struct hdr *h, uint64_t value) {
  hdr_record_n(h, value, 1);
}

int hdr_merge(struct hdr *dst, const struct hdr *src) {
  if (dst->sub_bits != src->sub_bits || dst->highest != src->highest) {
    return -1;
  }
  if (src->total == 0) {
    return 0;
  }
  for (size_t i = 0; i < src->num_counts; i++) {
    dst->counts[i] += src->counts[i];
  }
  if (dst->total == 0 || src->min < dst->min) {
    dst->min = src->min;
  }
  if (src->max > dst->max) {
    dst->max = src->max;
  }
  dst->total += src->total;
  dst->num_clamped += src->num_clamped;
  dst->sum += src->sum;
  return 0;
}

uint64_t hdr_value_at_percentile(const struct hdr *h, double pct) {
  if (h->total == 0) {
    return 0;
  }
  if (pct > 100.0) {
    pct = 100.0;
  }
  if (pct < 0.0) {
    pct = 0.0;
  }
  /* The rank of the wanted value, 1-based, at least the first one. */
  uint64_t rank = (uint64_t)((pct / 100.0) * (double)h->total + 0.5);
  if (rank < 1) {
    rank = 1;
  }
  uint64_t seen = 0;
  for (size_t i = 0; i < h->num_counts; i++) {
    seen += h->counts[i];
    if (seen >= rank) {
      uint64_t v = hdr_highest_equivalent(h, hdr_value_of_index(h, i));
      return v > h->max ? h->max : (v < h->min ? h->min : v);
    }
  }
  return h->max;
}

double hdr_mean(const struct hdr *h) {
  return h->total == 0 ? 0.0 : h->sum / (double)h->total;
}
