/* Unit tests: core/log line formats. Lines are captured by pointing
 * stderr at a temporary file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
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
  assert_non_null(
      strstr(out, "\"text\":\"quote\\\" backslash\\\\ newline\\u000a "
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

int main(void) {
  log_set_program("test");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_plain_quotes_peer_text),
      cmocka_unit_test(test_json_escapes),
      cmocka_unit_test(test_json_truncated_stays_valid),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
