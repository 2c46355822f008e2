/* bench/hdr.h — a log-linear latency histogram in the style of HdrHistogram.
 *
 * Owns: one counts array sized at hdr_init from the highest trackable value
 * and the sub-bucket resolution. Values are unsigned integers in whatever
 * unit the caller picks (postseal-bench records microseconds: 1 µs .. 60 s
 * with 256 sub-buckets, so every recorded value is kept to within 1/128 of
 * itself, better than 1%). Values 0..2^sub_bits-1 are exact.
 *
 * Values above `highest` are counted at `highest` and in num_clamped, so a
 * runaway latency never writes outside the array. A histogram belongs to one
 * thread; merge per-thread histograms of the same shape with hdr_merge.
 * No clock, no I/O. */
#ifndef POSTSEAL_BENCH_HDR_H
#define POSTSEAL_BENCH_HDR_H

#include <stddef.h>
#include <stdint.h>

#define HDR_MAX_SUB_BITS 16

struct hdr {
  uint64_t highest;  /* largest value tracked exactly to the precision */
  unsigned sub_bits; /* log2 of the sub-buckets per power of two */
  size_t num_counts;
  uint64_t *counts;
  uint64_t total;       /* values recorded */
  uint64_t num_clamped; /* values above highest, recorded as highest */
  uint64_t min, max;    /* of the recorded (clamped) values; min=0 if none */
  double sum;           /* for the mean */
};

/* hdr_init sizes the histogram for 0..highest with 2^sub_bits sub-buckets
 * (2 <= sub_bits <= HDR_MAX_SUB_BITS, highest >= 2^sub_bits). Returns 0, or
 * -1 on a bad shape or allocation failure. */
int hdr_init(struct hdr *h, uint64_t highest, unsigned sub_bits);
void hdr_cleanup(struct hdr *h);
/* hdr_reset forgets every value and keeps the shape. */
void hdr_reset(struct hdr *h);

void hdr_record(struct hdr *h, uint64_t value);
void hdr_record_n(struct hdr *h, uint64_t value, uint64_t n);
/* hdr_merge adds src's values into dst. Returns 0, or -1 when the shapes
 * differ (dst unchanged). */
int hdr_merge(struct hdr *dst, const struct hdr *src);

/* hdr_value_at_percentile: the highest value equivalent (same bucket) to
 * the value below which `pct` percent (0..100) of the recorded values lie,
 * capped at max. 0 for an empty histogram. */
uint64_t hdr_value_at_percentile(const struct hdr *h, double pct);
double hdr_mean(const struct hdr *h);

/* Bucket arithmetic, exposed for the tests. */
size_t hdr_index_of(const struct hdr *h, uint64_t value);
uint64_t hdr_lowest_equivalent(const struct hdr *h, uint64_t value);
uint64_t hdr_highest_equivalent(const struct hdr *h, uint64_t value);

#endif
