/* Unit tests: core/metrics histogram and Prometheus exposition, and
 * core/buf. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"
#include "core/metrics.h"

static const struct metric_hist_spec spec = {.num_bounds = 3,
                                             .bounds = {1, 10, 100}};

static void test_hist_buckets(void **state) {
  (void)state;
  struct metric_hist h = {0};
  const double values[] = {0.5, 1, 2, 10, 50, 1000};
  for (size_t i = 0; i < 6; i++) {
    metric_hist_observe(&h, &spec, values[i]);
  }
  /* le=1 holds 0.5 and 1 (bounds are inclusive), le=10: 2 and 10, ... */
  assert_int_equal(h.buckets[0], 2);
  assert_int_equal(h.buckets[1], 2);
  assert_int_equal(h.buckets[2], 1);
  assert_int_equal(h.buckets[3], 1);
  assert_int_equal(h.count, 6);
  assert_true(metric_hist_sum(&h) > 1063.4 && metric_hist_sum(&h) < 1063.6);

  struct buf out = {0};
  metric_write_hist(&out, "x_seconds", NULL, &h, &spec);
  buf_append(&out, "", 1);
  const char *want = "x_seconds_bucket{le=\"1\"} 2\n"
                     "x_seconds_bucket{le=\"10\"} 4\n"
                     "x_seconds_bucket{le=\"100\"} 5\n"
                     "x_seconds_bucket{le=\"+Inf\"} 6\n"
                     "x_seconds_sum 1063.5\n"
                     "x_seconds_count 6\n";
  assert_string_equal((const char *)out.data, want);
  buf_free(&out);
}

static void test_label_escape(void **state) {
  (void)state;
  char label[64];
  assert_int_equal(metric_label(label, sizeof(label), "k", "a\"b\\c\nd"), 0);
  assert_string_equal(label, "k=\"a\\\"b\\\\c\\nd\"");
  char small[6];
  assert_int_equal(metric_label(small, sizeof(small), "k", "toolong"), -1);
}

static void test_value_format(void **state) {
  (void)state;
  struct buf out = {0};
  metric_write_value(&out, "a_total", "x=\"1\"", 42);
  metric_write_value(&out, "b", NULL, 0.25);
  buf_append(&out, "", 1);
  assert_string_equal((const char *)out.data, "a_total{x=\"1\"} 42\nb 0.25\n");
  buf_free(&out);
}

static void test_buf(void **state) {
  (void)state;
  struct buf b = {0};
  for (int i = 0; i < 1000; i++) {
    assert_int_equal(buf_printf(&b, "%d,", i), 0);
  }
  assert_memory_equal(b.data, "0,1,2,", 6);
  buf_consume(&b, 2);
  assert_memory_equal(b.data, "1,2,", 4);
  struct buf moved = {0};
  buf_move(&moved, &b);
  assert_null(b.data);
  assert_int_equal(b.len, 0);
  assert_memory_equal(moved.data, "1,2,", 4);
  buf_consume(&moved, moved.len + 5);
  assert_int_equal(moved.len, 0);
  buf_free(&moved);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hist_buckets),
      cmocka_unit_test(test_label_escape),
      cmocka_unit_test(test_value_format),
      cmocka_unit_test(test_buf),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
