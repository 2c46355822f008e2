/* tests/unit/bench/test_hdr.c — the log-linear histogram: bucket
 * arithmetic, precision over 1 µs .. 60 s, percentiles, clamping, merge. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "bench/bench.h"
#include "bench/hdr.h"

static struct hdr new_hist(void) {
  struct hdr h;
  assert_int_equal(hdr_init(&h, BENCH_HDR_HIGHEST_US, BENCH_HDR_SUB_BITS), 0);
  return h;
}

/* Every value lands in a bucket whose range contains it and is no wider
 * than 1/128 of the value: the ~1 % precision the tool promises. */
static void test_precision(void **state) {
  (void)state;
  struct hdr h = new_hist();
  for (uint64_t v = 1; v <= BENCH_HDR_HIGHEST_US; v = v * 1.01 + 1) {
    uint64_t lo = hdr_lowest_equivalent(&h, v);
    uint64_t hi = hdr_highest_equivalent(&h, v);
    if (lo > v || hi < v || (double)(hi - lo) > (double)v / 128.0) {
      fail_msg("value %llu: bucket [%llu, %llu] too wide or misses it",
               (unsigned long long)v, (unsigned long long)lo,
               (unsigned long long)hi);
    }
    if (hdr_index_of(&h, v) >= h.num_counts) {
      fail_msg("value %llu: index %zu past %zu", (unsigned long long)v,
               hdr_index_of(&h, v), h.num_counts);
    }
  }
  hdr_cleanup(&h);
}

/* Small values are exact; bucket indexes never go backwards. */
static void test_exact_and_monotonic(void **state) {
  (void)state;
  struct hdr h = new_hist();
  for (uint64_t v = 0; v < 256; v++) {
    assert_int_equal(hdr_lowest_equivalent(&h, v), v);
    assert_int_equal(hdr_highest_equivalent(&h, v), v);
  }
  size_t prev = 0;
  for (uint64_t v = 0; v < 5000000; v += 7) {
    size_t i = hdr_index_of(&h, v);
    if (i < prev) {
      fail_msg("index of %llu went back: %zu < %zu", (unsigned long long)v, i,
               prev);
    }
    prev = i;
  }
  hdr_cleanup(&h);
}

struct pct_case {
  const char *label;
  double pct;
  double want; /* of a uniform 1..100000 distribution */
};

static void test_percentiles_uniform(void **state) {
  (void)state;
  static const struct pct_case cases[] = {
      {"p0 is the min", 0, 1}, {"p50", 50, 50000},
      {"p90", 90, 90000},      {"p99", 99, 99000},
      {"p99.9", 99.9, 99900},  {"p100 is the max", 100, 100000},
  };
  struct hdr h = new_hist();
  for (uint64_t v = 1; v <= 100000; v++) {
    hdr_record(&h, v);
  }
  assert_int_equal(h.total, 100000);
  assert_int_equal(h.min, 1);
  assert_int_equal(h.max, 100000);
  assert_true(hdr_mean(&h) > 50000.0 && hdr_mean(&h) < 50001.0);
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    double got = (double)hdr_value_at_percentile(&h, cases[i].pct);
    double err = (got - cases[i].want) / cases[i].want;
    if (err < -0.01 || err > 0.01) {
      fail_msg("%s: got %.0f, want %.0f within 1%%", cases[i].label, got,
               cases[i].want);
    }
  }
  hdr_cleanup(&h);
}

static void test_empty_and_clamp(void **state) {
  (void)state;
  struct hdr h = new_hist();
  assert_int_equal(hdr_value_at_percentile(&h, 99), 0);
  assert_true(hdr_mean(&h) == 0.0);
  hdr_record(&h, BENCH_HDR_HIGHEST_US * 10); /* a runaway value */
  hdr_record_n(&h, 5, 3);
  assert_int_equal(h.total, 4);
  assert_int_equal(h.num_clamped, 1);
  assert_int_equal(h.max, BENCH_HDR_HIGHEST_US);
  assert_int_equal(hdr_value_at_percentile(&h, 50), 5);
  assert_int_equal(hdr_value_at_percentile(&h, 100), BENCH_HDR_HIGHEST_US);
  hdr_reset(&h);
  assert_int_equal(h.total, 0);
  assert_int_equal(hdr_value_at_percentile(&h, 100), 0);
  hdr_cleanup(&h);
}

static void test_merge(void **state) {
  (void)state;
  struct hdr a = new_hist(), b = new_hist(), odd;
  assert_int_equal(hdr_init(&odd, 1000, 4), 0);
  hdr_record(&a, 10);
  hdr_record(&b, 1000000);
  hdr_record(&b, 20);
  assert_int_equal(hdr_merge(&a, &b), 0);
  assert_int_equal(a.total, 3);
  assert_int_equal(a.min, 10);
  assert_int_equal(a.max, 1000000);
  assert_int_equal(hdr_value_at_percentile(&a, 50), 20);
  assert_int_equal(hdr_merge(&a, &odd), -1); /* shapes differ */
  hdr_cleanup(&a);
  hdr_cleanup(&b);
  hdr_cleanup(&odd);
}

static void test_bad_shapes(void **state) {
  (void)state;
  struct {
    const char *label;
    uint64_t highest;
    unsigned bits;
  } cases[] = {
      {"one sub-bit", 1000, 1},
      {"too many sub-bits", 1ull << 40, 17},
      {"highest below the sub-buckets", 100, 8},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct hdr h;
    if (hdr_init(&h, cases[i].highest, cases[i].bits) != -1) {
      fail_msg("%s: hdr_init accepted it", cases[i].label);
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_precision),
      cmocka_unit_test(test_exact_and_monotonic),
      cmocka_unit_test(test_percentiles_uniform),
      cmocka_unit_test(test_empty_and_clamp),
      cmocka_unit_test(test_merge),
      cmocka_unit_test(test_bad_shapes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
