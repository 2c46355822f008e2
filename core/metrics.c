/* core/metrics.c — counters, histograms, Prometheus text; see metrics.h. */
#include "core/metrics.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void metric_hist_observe(struct metric_hist *h,
                         const struct metric_hist_spec *spec, double v) {
  size_t i = 0;
  while (i < spec->num_bounds && v > spec->bounds[i]) {
    i++;
  }
  METRIC_ADD(h->buckets[i], 1);
  METRIC_ADD(h->count, 1);
  double sum = metric_hist_sum(h) + v;
  uint64_t bits;
  memcpy(&bits, &sum, sizeof(bits));
  __atomic_store_n(&h->sum_bits, bits, __ATOMIC_RELAXED);
}

double metric_hist_sum(const struct metric_hist *h) {
  uint64_t bits = __atomic_load_n(&h->sum_bits, __ATOMIC_RELAXED);
  double sum;
  memcpy(&sum, &bits, sizeof(sum));
  return sum;
}

void metric_hist_add_into(struct metric_hist *dst,
                          const struct metric_hist *src,
                          const struct metric_hist_spec *spec) {
  /* The count is the buckets' sum, not src->count: the owner updates them
   * one after another, and a scrape between must still be consistent. */
  for (size_t i = 0; i <= spec->num_bounds; i++) {
    uint64_t n = METRIC_GET(src->buckets[i]);
    dst->buckets[i] += n;
    dst->count += n;
  }
  double sum = metric_hist_sum(dst) + metric_hist_sum(src);
  memcpy(&dst->sum_bits, &sum, sizeof(sum));
}

int metric_write_header(struct buf *out, const char *name, const char *type,
                        const char *help) {
  return buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
                    type);
}

/* metric_format_double prints integers without a fraction (Prometheus
 * accepts either; integers read better) and non-finite values by name. */
static void metric_format_double(char *out, size_t out_len, double v) {
  if (isnan(v)) {
    snprintf(out, out_len, "NaN");
  } else if (isinf(v)) {
    snprintf(out, out_len, v > 0 ? "+Inf" : "-Inf");
  } else if (v == (double)(int64_t)v && fabs(v) < 9e15) {
    snprintf(out, out_len, "%lld", (long long)v);
  } else {
    snprintf(out, out_len, "%.9g", v);
  }
}

int metric_write_value(struct buf *out, const char *name, const char *labels,
                       double value) {
  char num[40];
  metric_format_double(num, sizeof(num), value);
  if (labels != NULL && labels[0] != '\0') {
    return buf_printf(out, "%s{%s} %s\n", name, labels, num);
  }
  return buf_printf(out, "%s %s\n", name, num);
}

int metric_write_hist(struct buf *out, const char *name, const char *labels,
                      const struct metric_hist *h,
                      const struct metric_hist_spec *spec) {
  const char *sep = (labels != NULL && labels[0] != '\0') ? "," : "";
  const char *lab = labels != NULL ? labels : "";
  uint64_t cumulative = 0;
  int rc = 0;
  for (size_t i = 0; i <= spec->num_bounds; i++) {
    char le[40];
    if (i < spec->num_bounds) {
      metric_format_double(le, sizeof(le), spec->bounds[i]);
    } else {
      snprintf(le, sizeof(le), "+Inf");
    }
    cumulative += h->buckets[i];
    rc |= buf_printf(out, "%s_bucket{%s%sle=\"%s\"} %llu\n", name, lab, sep, le,
                     (unsigned long long)cumulative);
  }
  char sum[40];
  metric_format_double(sum, sizeof(sum), metric_hist_sum(h));
  if (lab[0] != '\0') {
    rc |= buf_printf(out, "%s_sum{%s} %s\n%s_count{%s} %llu\n", name, lab, sum,
                     name, lab, (unsigned long long)h->count);
  } else {
    rc |= buf_printf(out, "%s_sum %s\n%s_count %llu\n", name, sum, name,
                     (unsigned long long)h->count);
  }
  return rc;
}

int metric_label(char *out, size_t out_len, const char *key,
                 const char *value) {
  size_t n = (size_t)snprintf(out, out_len, "%s=\"", key);
  if (n >= out_len) {
    return -1;
  }
  for (const char *p = value; *p != '\0'; p++) {
    const char *esc = NULL;
    if (*p == '\\') {
      esc = "\\\\";
    } else if (*p == '"') {
      esc = "\\\"";
    } else if (*p == '\n') {
      esc = "\\n";
    }
    size_t need = esc ? 2 : 1;
    if (n + need + 2 > out_len) {
      return -1;
    }
    if (esc) {
      memcpy(out + n, esc, 2);
    } else {
      out[n] = *p;
    }
    n += need;
  }
  out[n++] = '"';
  out[n] = '\0';
  return 0;
}
