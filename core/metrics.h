/* core/metrics.h — Prometheus text exposition (format 0.0.4) and
 * per-thread counters.
 *
 * Owns: the counter/histogram value types and writing them out. Each loop
 * thread owns its own counter blocks and is their only writer (METRIC_ADD:
 * a relaxed atomic load+store, a plain mov on x86, no lock); a scrape on any
 * thread reads every block with relaxed loads and sums. Metric names are
 * postseal_*, units in the name, counters end in _total; labels are low
 * cardinality and escaped here. */
#ifndef POSTSEAL_CORE_METRICS_H
#define POSTSEAL_CORE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define METRIC_ADD(field, n)                                                   \
  __atomic_store_n(&(field),                                                   \
                   __atomic_load_n(&(field), __ATOMIC_RELAXED) + (n),          \
                   __ATOMIC_RELAXED)
#define METRIC_GET(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

#define METRIC_HIST_MAX_BUCKETS 16

/* A fixed-bucket histogram; bounds live in a shared metric_hist_spec. */
struct metric_hist_spec {
  size_t num_bounds;
  double bounds[METRIC_HIST_MAX_BUCKETS]; /* upper bounds, increasing */
};

struct metric_hist {
  uint64_t buckets[METRIC_HIST_MAX_BUCKETS + 1]; /* last one is +Inf */
  uint64_t count;
  uint64_t sum_bits; /* a double's bits, so one writer and readers on
                        other threads use relaxed atomics */
};

/* metric_hist_sum reads the sum (any thread). */
double metric_hist_sum(const struct metric_hist *h);

/* metric_hist_observe records v (owner thread only). */
void metric_hist_observe(struct metric_hist *h,
                         const struct metric_hist_spec *spec, double v);
/* metric_hist_add_into sums src into dst (scrape side). */
void metric_hist_add_into(struct metric_hist *dst,
                          const struct metric_hist *src,
                          const struct metric_hist_spec *spec);

/* Exposition. metric_write_header writes # HELP and # TYPE once per name;
 * type is "counter", "gauge" or "histogram". Labels are given as one
 * string of pairs already escaped by metric_label_escape, or NULL. */
int metric_write_header(struct buf *out, const char *name, const char *type,
                        const char *help);
int metric_write_value(struct buf *out, const char *name, const char *labels,
                       double value);
int metric_write_hist(struct buf *out, const char *name, const char *labels,
                      const struct metric_hist *h,
                      const struct metric_hist_spec *spec);
/* metric_label_escape writes `key="value"` with \\, \" and \n escaped. */
int metric_label(char *out, size_t out_len, const char *key, const char *value);

#endif
