/* Unit tests: core/log line formats. Lines are captured by pointing
 * stderr at a temporary file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/log.h"

/* capture runs fn with stderr redirected and returns what it wrote. */
static char *capture(void (*fn)(void)) {
  char path[] = "/tmp/postseal-log-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  unlink(path);
  int saved = dup(STDERR_FILENO);
  dup2(fd, STDERR_FILENO);
  fn();
  log_flush();
  dup2(saved, STDERR_FILENO);
  close(saved);
  off_t len = lseek(fd, 0, SEEK_END);
  char *out = calloc(1, (size_t)len + 1);
  assert_int_equal(pread(fd, out, (size_t)len, 0), len);
  close(fd);
  return out;
}

static void emit_plain(void) {
  log_set_json(0);
  struct log_rec r;
  log_begin(&r, "queued");
  log_str(&r, "qid", "0123456789ABCDEF");
  log_str(&r, "helo", "evil qid=FORGED");
  log_u64(&r, "size", 42);
  log_i64(&r, "delta", -3);
  log_end(&r);
}

static void test_plain_quotes_peer_text(void **state) {
  (void)state;
  char *out = capture(emit_plain);
  assert_non_null(strstr(out, " event=queued qid=0123456789ABCDEF "));
  /* A value with spaces or '=' is quoted, so it cannot forge a field. */
  assert_non_null(strstr(out, " helo=\"evil qid=FORGED\" size=42 delta=-3\n"));
  free(out);
}

static void emit_json(void) {
  log_set_json(1);
  struct log_rec r;
  log_begin(&r, "reject");
  log_str(&r, "text", "quote\" backslash\\ newline\n ctl\x01");
  log_u64(&r, "n", 7);
  log_end(&r);
  log_set_json(0);
}

static void test_json_escapes(void **state) {
  (void)state;
  char *out = capture(emit_json);
  assert_non_null(strstr(out, "\"event\":\"reject\""));
  assert_non_null(strstr(out,
                         "\"text\":\"quote\\\" backslash\\\\ newline\\u000a "
                         "ctl\\u0001\",\"n\":7}\n"));
  free(out);
}

static void emit_json_long(void) {
  static char big[LOG_LINE_MAX * 2];
  for (size_t i = 0; i + 1 < sizeof(big); i++) {
    big[i] = (i % 7 == 0) ? '"' : 'a'; /* escapes straddle the cut */
  }
  log_set_json(1);
  struct log_rec r;
  log_begin(&r, "long");
  log_str(&r, "v", big);
  log_str(&r, "after", "dropped");
  log_end(&r);
  log_set_json(0);
}

static void test_json_truncated_stays_valid(void **state) {
  (void)state;
  char *out = capture(emit_json_long);
  size_t n = strlen(out);
  assert_true(n <= LOG_LINE_MAX);
  assert_string_equal(out + n - 6, "...\"}\n");
  assert_null(strstr(out, "dropped"));
  /* Every quote inside the value is escaped: count unescaped quotes. */
  int unescaped = 0;
  for (size_t i = 0; i < n; i++) {
    if (out[i] == '"' && (i == 0 || out[i - 1] != '\\')) {
      unescaped++;
    }
  }
  assert_int_equal(unescaped % 2, 0);
  free(out);
}

static void emit_numbers(void) {
  log_set_json(0);
  struct log_rec r;
  log_begin(&r, "n");
  log_u64(&r, "zero", 0);
  log_u64(&r, "umax", UINT64_MAX);
  log_i64(&r, "imin", INT64_MIN);
  log_i64(&r, "imax", INT64_MAX);
  log_i64(&r, "neg", -10);
  log_end(&r);
}

/* Numbers are formatted by hand: the extremes, and the timestamp's shape
 * (the seconds are cached per thread, the milliseconds are not). */
static void test_numbers_and_timestamp(void **state) {
  (void)state;
  char *out = capture(emit_numbers);
  assert_non_null(strstr(out, " zero=0 umax=18446744073709551615 "
                              "imin=-9223372036854775808 "
                              "imax=9223372036854775807 neg=-10\n"));
  /* YYYY-MM-DDTHH:MM:SS.mmmZ test: */
  assert_true(strlen(out) > 25);
  const char *shape = "dddd-dd-ddTdd:dd:dd.dddZ ";
  for (size_t i = 0; shape[i] != '\0'; i++) {
    if (shape[i] == 'd') {
      assert_true(out[i] >= '0' && out[i] <= '9');
    } else {
      assert_int_equal(out[i], shape[i]);
    }
  }
  free(out);
  char *again = capture(emit_numbers); /* from the cached seconds */
  assert_int_equal(again[19], '.');
  assert_int_equal(again[23], 'Z');
  free(again);
}

int main(void) {
  log_set_program("test");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_plain_quotes_peer_text),
      cmocka_unit_test(test_json_escapes),
      cmocka_unit_test(test_json_truncated_stays_valid),
      cmocka_unit_test(test_numbers_and_timestamp),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
