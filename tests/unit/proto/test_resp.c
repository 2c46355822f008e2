/* tests/unit/proto/test_resp.c — the RESP2 engine: replies parsed whole,
 * byte by byte and split at every point (each must re-encode to the bytes
 * it came from), hostile input and limits (sticky errors), pipelined
 * replies, and command encoding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/resp.h"

#define NUM(a) (sizeof(a) / sizeof((a)[0]))

#define CHECK(label, got, want)                                                \
  do {                                                                         \
    long long got_ = (long long)(got), want_ = (long long)(want);              \
    if (got_ != want_) {                                                       \
      fail_msg("%s: %s: got %lld, want %lld", (label), #got, got_, want_);     \
    }                                                                          \
  } while (0)

struct parse_case {
  const char *label;
  const char *in;
  size_t len; /* 0: strlen(in) */
  int ok;
  enum resp_type type;
  int64_t integer; /* RESP_INTEGER; RESP_ARRAY: num_elems */
  const char *str; /* simple, error, bulk: the text */
};

static const struct parse_case cases[] = {
    {"simple", "+OK\r\n", 0, 1, RESP_SIMPLE, 0, "OK"},
    {"simple empty", "+\r\n", 0, 1, RESP_SIMPLE, 0, ""},
    {"error", "-ERR unknown command\r\n", 0, 1, RESP_ERROR, 0,
     "ERR unknown command"},
    {"noscript", "-NOSCRIPT No matching script\r\n", 0, 1, RESP_ERROR, 0,
     "NOSCRIPT No matching script"},
    {"integer", ":1000\r\n", 0, 1, RESP_INTEGER, 1000, NULL},
    {"integer zero", ":0\r\n", 0, 1, RESP_INTEGER, 0, NULL},
    {"integer negative", ":-2\r\n", 0, 1, RESP_INTEGER, -2, NULL},
    {"integer max", ":9223372036854775807\r\n", 0, 1, RESP_INTEGER, INT64_MAX,
     NULL},
    {"integer min", ":-9223372036854775808\r\n", 0, 1, RESP_INTEGER, INT64_MIN,
     NULL},
    {"bulk", "$6\r\nfoobar\r\n", 0, 1, RESP_BULK, 0, "foobar"},
    {"bulk empty", "$0\r\n\r\n", 0, 1, RESP_BULK, 0, ""},
    {"bulk with CRLF inside", "$4\r\na\r\nb\r\n", 0, 1, RESP_BULK, 0, "a\r\nb"},
    {"bulk nil", "$-1\r\n", 0, 1, RESP_NIL, 0, NULL},
    {"array nil", "*-1\r\n", 0, 1, RESP_NIL, 0, NULL},
    {"array empty", "*0\r\n", 0, 1, RESP_ARRAY, 0, NULL},
    {"array of two ints", "*2\r\n:20\r\n:1500\r\n", 0, 1, RESP_ARRAY, 2, NULL},
    {"array mixed", "*5\r\n:1\r\n$3\r\nfoo\r\n+OK\r\n-ERR x\r\n$-1\r\n", 0, 1,
     RESP_ARRAY, 5, NULL},
    {"nested", "*2\r\n*3\r\n:1\r\n:2\r\n:3\r\n*2\r\n+Foo\r\n-Bar\r\n", 0, 1,
     RESP_ARRAY, 2, NULL},
    {"nested empty inside", "*2\r\n*0\r\n*1\r\n*0\r\n", 0, 1, RESP_ARRAY, 2,
     NULL},
    {"bulk with NUL", "$3\r\na\0b\r\n", 9, 1, RESP_BULK, 0, "a"},
    /* hostile */
    {"unknown type", "!3\r\nabc\r\n", 0, 0, 0, 0, NULL},
    {"resp3 map", "%1\r\n+a\r\n+b\r\n", 0, 0, 0, 0, NULL},
    {"bare LF", "+OK\n", 0, 0, 0, 0, NULL},
    {"CR inside simple", "+O\rK\r\n", 0, 0, 0, 0, NULL},
    {"empty line", "\r\n", 0, 0, 0, 0, NULL},
    {"integer plus", ":+1\r\n", 0, 0, 0, 0, NULL},
    {"integer leading zero", ":01\r\n", 0, 0, 0, 0, NULL},
    {"integer minus zero", ":-0\r\n", 0, 0, 0, 0, NULL},
    {"integer empty", ":\r\n", 0, 0, 0, 0, NULL},
    {"integer overflow", ":9223372036854775808\r\n", 0, 0, 0, 0, NULL},
    {"integer junk", ":12a\r\n", 0, 0, 0, 0, NULL},
    {"bulk negative", "$-2\r\n", 0, 0, 0, 0, NULL},
    {"bulk short", "$3\r\nfoobar\r\n", 0, 0, 0, 0, NULL},
    {"bulk no CRLF", "$3\r\nfooXY", 0, 0, 0, 0, NULL},
    {"array negative", "*-5\r\n", 0, 0, 0, 0, NULL},
    {"array huge", "*999999999\r\n", 0, 0, 0, 0, NULL},
    {"bulk huge", "$999999999\r\n", 0, 0, 0, 0, NULL},
    {"number line too long", "$000000000000000000000000000001\r\n", 0, 0, 0, 0,
     NULL},
    {"too deep", "*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
     0, 0, 0, 0, NULL},
};

/* feed_all feeds in as the given chunks; 1 reply, 0 need more, -1 error.
 * *out gets the reply. */
static int feed_chunks(struct resp_parser *p, const uint8_t *in, size_t len,
                       size_t step, size_t split, struct resp_reply **out) {
  size_t off = 0;
  *out = NULL;
  while (off < len) {
    size_t n = step ? step : (off < split ? split - off : len - off);
    if (n > len - off) {
      n = len - off;
    }
    size_t used = 0;
    enum resp_status st = resp_parser_feed(p, in + off, n, &used, out);
    if (st == RESP_ERR) {
      return -1;
    }
    off += used;
    if (st == RESP_DONE) {
      return off == len ? 1 : -2; /* -2: stopped early */
    }
    if (used != n) {
      return -3; /* need more must take every byte */
    }
  }
  return 0;
}

static void check_reply(const struct parse_case *c, const char *how,
                        const struct resp_reply *r, size_t len) {
  char label[160];
  snprintf(label, sizeof(label), "%s (%s)", c->label, how);
  CHECK(label, r->type, c->type);
  if (c->type == RESP_INTEGER) {
    CHECK(label, r->integer, c->integer);
  } else if (c->type == RESP_ARRAY) {
    CHECK(label, r->num_elems, c->integer);
  } else if (c->str != NULL) {
    CHECK(label, strcmp(r->str, c->str), 0);
  }
  struct buf enc = {0};
  CHECK(label, resp_reply_encode(&enc, r), 0);
  CHECK(label, enc.len, len);
  CHECK(label, memcmp(enc.data, c->in, len), 0);
  buf_free(&enc);
}

/* run_case parses one case whole (step 0, split len), byte by byte, and
 * split at every point. */
static void run_case(const struct parse_case *c) {
  size_t len = c->len ? c->len : strlen(c->in);
  const uint8_t *in = (const uint8_t *)c->in;
  for (size_t mode = 0; mode <= len + 1; mode++) {
    size_t step = mode == len + 1 ? 1 : 0;
    size_t split = mode == len + 1 ? 0 : mode;
    char how[64];
    snprintf(how, sizeof(how), step ? "byte by byte" : "split at %zu", split);
    struct resp_parser p;
    resp_parser_init(&p, NULL);
    struct resp_reply *r = NULL;
    int rc = feed_chunks(&p, in, len, step, split, &r);
    if (c->ok) {
      if (rc != 1) {
        fail_msg("%s (%s): got %d, want a reply", c->label, how, rc);
      }
      check_reply(c, how, r, len);
      CHECK(c->label, resp_parser_busy(&p), 0);
    } else {
      if (rc != -1) {
        fail_msg("%s (%s): got %d, want an error", c->label, how, rc);
      }
      if (resp_parser_error(&p) == NULL) {
        fail_msg("%s (%s): no reason", c->label, how);
      }
      /* Sticky: more input changes nothing. */
      size_t used = 0;
      struct resp_reply *again = NULL;
      CHECK(c->label,
            resp_parser_feed(&p, (const uint8_t *)"+OK\r\n", 5, &used, &again),
            RESP_ERR);
    }
    resp_reply_free(r);
    resp_parser_cleanup(&p);
  }
}

static void test_parse_table(void **state) {
  (void)state;
  for (size_t i = 0; i < NUM(cases); i++) {
    run_case(&cases[i]);
  }
}

/* Pipelined replies: each feed stops at the end of one reply. */
static void test_pipelined(void **state) {
  (void)state;
  static const char in[] = "*2\r\n:3\r\n:1999\r\n+PONG\r\n-ERR x\r\n:7\r\n";
  static const enum resp_type want[] = {RESP_ARRAY, RESP_SIMPLE, RESP_ERROR,
                                        RESP_INTEGER};
  struct resp_parser p;
  resp_parser_init(&p, NULL);
  size_t off = 0, n = 0;
  while (off < sizeof(in) - 1 && n < NUM(want)) {
    size_t used = 0;
    struct resp_reply *r = NULL;
    enum resp_status st = resp_parser_feed(&p, (const uint8_t *)in + off,
                                           sizeof(in) - 1 - off, &used, &r);
    CHECK("pipelined", st, RESP_DONE);
    CHECK("pipelined", r->type, want[n]);
    off += used;
    n++;
    resp_reply_free(r);
  }
  CHECK("pipelined", n, NUM(want));
  CHECK("pipelined", off, sizeof(in) - 1);
  resp_parser_cleanup(&p);
}

struct limit_case {
  const char *label;
  struct resp_limits lim;
  const char *in;
  int ok;
};

static const struct limit_case limit_cases[] = {
    {"bulk at limit", {4, 16, 8, 2}, "$4\r\nabcd\r\n", 1},
    {"bulk over limit", {4, 16, 8, 2}, "$5\r\nabcde\r\n", 0},
    {"line at limit", {4, 4, 8, 2}, "+abcd\r\n", 1},
    {"line over limit", {4, 4, 8, 2}, "+abcde\r\n", 0},
    {"elems at limit", {4, 16, 3, 2}, "*2\r\n:1\r\n:2\r\n", 1},
    {"elems over limit", {4, 16, 3, 2}, "*3\r\n:1\r\n:2\r\n:3\r\n", 0},
    {"elems over limit nested",
     {4, 16, 4, 2},
     "*2\r\n*2\r\n:1\r\n:2\r\n:3\r\n",
     0},
    {"depth at limit", {4, 16, 8, 2}, "*1\r\n*1\r\n:1\r\n", 1},
    {"depth over limit", {4, 16, 8, 2}, "*1\r\n*1\r\n*1\r\n:1\r\n", 0},
};

static void test_limits(void **state) {
  (void)state;
  for (size_t i = 0; i < NUM(limit_cases); i++) {
    const struct limit_case *c = &limit_cases[i];
    size_t len = strlen(c->in);
    for (size_t step = 0; step <= 1; step++) {
      struct resp_parser p;
      resp_parser_init(&p, &c->lim);
      struct resp_reply *r = NULL;
      int rc = feed_chunks(&p, (const uint8_t *)c->in, len, step, len, &r);
      CHECK(c->label, rc, c->ok ? 1 : -1);
      resp_reply_free(r);
      resp_parser_cleanup(&p);
    }
  }
}

struct cmd_case {
  const char *label;
  size_t argc;
  const char *argv[4];
  const char *want;
};

static const struct cmd_case cmd_cases[] = {
    {"ping", 1, {"PING"}, "*1\r\n$4\r\nPING\r\n"},
    {"get", 2, {"GET", "k"}, "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"},
    {"empty arg", 2, {"ECHO", ""}, "*2\r\n$4\r\nECHO\r\n$0\r\n\r\n"},
    {"binary safe",
     2,
     {"SET", "a\r\nb"},
     "*2\r\n$3\r\nSET\r\n$4\r\na\r\nb\r\n"},
    {"none", 0, {NULL}, "*0\r\n"},
};

/* Commands encode as documented and parse back (as an array of bulks). */
static void test_commands(void **state) {
  (void)state;
  for (size_t i = 0; i < NUM(cmd_cases); i++) {
    const struct cmd_case *c = &cmd_cases[i];
    struct buf out = {0};
    CHECK(c->label, resp_command(&out, c->argc, c->argv, NULL), 0);
    CHECK(c->label, out.len, strlen(c->want));
    CHECK(c->label, memcmp(out.data, c->want, out.len), 0);
    struct resp_parser p;
    resp_parser_init(&p, NULL);
    struct resp_reply *r = NULL;
    size_t used = 0;
    CHECK(c->label, resp_parser_feed(&p, out.data, out.len, &used, &r),
          RESP_DONE);
    CHECK(c->label, r->num_elems, c->argc);
    for (size_t k = 0; k < c->argc; k++) {
      CHECK(c->label, r->elems[k].type, RESP_BULK);
      CHECK(c->label, strcmp(r->elems[k].str, c->argv[k]), 0);
    }
    resp_reply_free(r);
    resp_parser_cleanup(&p);
    buf_free(&out);
  }
}

/* A simple string holding CR or LF cannot be encoded; out is unchanged. */
static void test_encode_refuses(void **state) {
  (void)state;
  char text[] = "a\r\nb";
  struct resp_reply r = {.type = RESP_SIMPLE, .str = text, .str_len = 4};
  struct buf out = {0};
  buf_append_str(&out, "x");
  CHECK("refuse CRLF", resp_reply_encode(&out, &r), -1);
  CHECK("refuse CRLF", out.len, 1);
  buf_free(&out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_table),    cmocka_unit_test(test_pipelined),
      cmocka_unit_test(test_limits),         cmocka_unit_test(test_commands),
      cmocka_unit_test(test_encode_refuses),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
