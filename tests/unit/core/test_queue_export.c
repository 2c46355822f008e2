/* tests/unit/core/test_queue_export.c — the queue archive
 * (core/queue_archive.h): message records round trip, whole archives read
 * whole and split at every point, every flipped byte detected, malformed
 * records refused with their reason, invalid messages refused by the
 * encoder. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "core/queue_archive.h"

/* CHECK compares got and want for a labelled case. */
#define CHECK(label, got, want)                                                \
  do {                                                                         \
    long long got_ = (long long)(got), want_ = (long long)(want);              \
    if (got_ != want_) {                                                       \
      fail_msg("%s: %s: got %lld, want %lld", (label), #got, got_, want_);     \
    }                                                                          \
  } while (0)

#define NUM(a) (sizeof(a) / sizeof((a)[0]))

/* ---- fixtures ---- */

/* A message built from a compact description. */
struct msg_case {
  const char *name;
  const char *sender;
  const char *envid;
  size_t num_rcpts;
  const char *orcpt; /* for every odd recipient */
  size_t body_len;
  uint8_t flags; /* bit 0 held, 1 smtputf8, 2 requiretls */
  uint8_t ret, body_type;
};

static const struct msg_case msg_cases[] = {
    {"simple", "alice@example.com", NULL, 1, NULL, 7, 0, 0, 1},
    {"null sender, envid, orcpt, DSN", "", "ENV-1234", 3,
     "rfc822;x@example.org", 100, 0, 2, 2},
    {"empty body", "bob@example.com", NULL, 2, NULL, 0, 0, 1, 0},
    {"held", "h@example.com", NULL, 1, NULL, 10, 1, 0, 1},
    {"smtputf8, requiretls", "j\xc3\xb6rg@example.de", "e", 2, NULL, 3, 6, 0,
     2},
    {"many recipients", "list@example.com", NULL, 500, "rfc822;o@example.org",
     512, 7, 1, 1},
    {"large body", "big@example.com", NULL, 1, NULL, 1u << 20, 0, 0, 2},
};

struct msg_fixture {
  struct qarc_message q;
  struct spool_rcpt *rcpts;
  char (*addrs)[64];
  uint8_t *body;
};

static void fixture_make(struct msg_fixture *f, const struct msg_case *c,
                         uint64_t id) {
  memset(f, 0, sizeof *f);
  f->rcpts = calloc(c->num_rcpts ? c->num_rcpts : 1, sizeof *f->rcpts);
  f->addrs = calloc(c->num_rcpts ? c->num_rcpts : 1, sizeof *f->addrs);
  f->body = malloc(c->body_len ? c->body_len : 1);
  assert_true(f->rcpts && f->addrs && f->body);
  for (size_t i = 0; i < c->num_rcpts; i++) {
    snprintf(f->addrs[i], 64, "rcpt%zu@example.org", i);
    f->rcpts[i].addr = f->addrs[i];
    f->rcpts[i].notify = (unsigned)(i % 16);
    f->rcpts[i].orcpt = i % 2 ? c->orcpt : NULL;
  }
  for (size_t i = 0; i < c->body_len; i++) {
    f->body[i] = (uint8_t)(i * 31 + id);
  }
  f->q.held = c->flags & 1;
  f->q.m = (struct spool_message){
      .queue_id = id,
      .arrival_ms = 1700000000000 + (int64_t)id,
      .sender = c->sender,
      .envid = c->envid,
      .ret = c->ret,
      .body_type = c->body_type,
      .smtputf8 = (c->flags >> 1) & 1,
      .requiretls = (c->flags >> 2) & 1,
      .client_addr = "192.0.2.7",
      .helo = "mx.example.net",
      .num_rcpts = c->num_rcpts,
      .rcpts = f->rcpts,
      .body = f->body,
      .body_len = c->body_len,
  };
}

static void fixture_free(struct msg_fixture *f) {
  free(f->rcpts);
  free(f->addrs);
  free(f->body);
}

static int str_eq(const char *a, const char *b) {
  if (a == NULL || b == NULL) {
    return a == b;
  }
  return strcmp(a, b) == 0;
}

/* check_message_eq compares a decoded message with the original. */
static void check_message_eq(const char *label, const struct qarc_message *g,
                             const struct qarc_message *w) {
  const struct spool_message *got = &g->m, *want = &w->m;
  CHECK(label, g->held, w->held);
  CHECK(label, got->queue_id, want->queue_id);
  CHECK(label, got->arrival_ms, want->arrival_ms);
  CHECK(label, str_eq(got->sender, want->sender), 1);
  CHECK(label, str_eq(got->envid, want->envid), 1);
  CHECK(label, got->ret, want->ret);
  CHECK(label, got->body_type, want->body_type);
  CHECK(label, got->smtputf8, want->smtputf8);
  CHECK(label, got->requiretls, want->requiretls);
  CHECK(label, str_eq(got->client_addr, want->client_addr), 1);
  CHECK(label, str_eq(got->helo, want->helo), 1);
  CHECK(label, got->num_rcpts, want->num_rcpts);
  for (size_t i = 0; i < want->num_rcpts; i++) {
    CHECK(label, str_eq(got->rcpts[i].addr, want->rcpts[i].addr), 1);
    CHECK(label, got->rcpts[i].notify, want->rcpts[i].notify);
    CHECK(label, str_eq(got->rcpts[i].orcpt, want->rcpts[i].orcpt), 1);
  }
  CHECK(label, got->body_len, want->body_len);
  CHECK(label,
        want->body_len == 0 ||
            memcmp(got->body, want->body, want->body_len) == 0,
        1);
}

/* archive_make builds a whole archive of the first n cases (ids 1..n). */
static void archive_make(struct buf *out, size_t n) {
  struct qarc_end e = {0};
  buf_reset(out);
  assert_int_equal(qarc_header_encode(out), 0);
  for (size_t i = 0; i < n; i++) {
    struct msg_fixture f;
    fixture_make(&f, &msg_cases[i], i + 1);
    assert_int_equal(qarc_message_encode(out, &f.q), 0);
    e.num_messages++;
    e.num_rcpts += f.q.m.num_rcpts;
    fixture_free(&f);
  }
  assert_int_equal(qarc_end_encode(out, &e), 0);
}

/* Results of reading an archive through a reader. */
struct read_result {
  size_t num_messages;
  int ended; /* QARC_END seen */
  int bad;   /* QARC_BAD seen */
  const char *why;
};

/* read_fed reads in[0..len) as it would arrive `step` octets at a time
 * (0: all at once), checking each message against the fixtures. */
static struct read_result read_fed(const uint8_t *in, size_t len, size_t step,
                                   int compare) {
  struct qarc_reader r;
  struct buf rcpts = {0};
  struct read_result res = {0};
  size_t off = 0, avail = step ? (step < len ? step : len) : len;
  qarc_reader_init(&r);
  for (size_t turn = 0; turn < 4 * len + 16 && !res.ended && !res.bad; turn++) {
    struct qarc_message m;
    size_t consumed = 0, need = 0;
    enum qarc_result q = qarc_reader_next(&r, in + off, avail - off, &consumed,
                                          &need, &m, &rcpts);
    if (q == QARC_NEED_MORE) {
      assert_true(need > avail - off);
      if (avail == len) {
        break; /* the input ends: truncated */
      }
      avail = step && avail + step < len ? avail + step : len;
    } else if (q == QARC_MESSAGE) {
      if (compare) {
        struct msg_fixture f;
        fixture_make(&f, &msg_cases[res.num_messages], res.num_messages + 1);
        check_message_eq(msg_cases[res.num_messages].name, &m, &f.q);
        fixture_free(&f);
      }
      res.num_messages++;
      off += consumed;
    } else if (q == QARC_END) {
      res.ended = 1;
      off += consumed;
      res.ended = off == len && qarc_reader_done(&r);
    } else {
      res.bad = 1;
      res.why = r.why;
    }
  }
  buf_free(&rcpts);
  return res;
}

/* frame wraps payload as a record of `type` with a correct checksum, so
 * a test reaches the payload checks. */
static void frame(struct buf *out, uint8_t type, const uint8_t *payload,
                  size_t len) {
  uint8_t hdr[QARC_RECORD_HEADER_LEN] = {'P', 'Q', 'X', type};
  for (int i = 0; i < 8; i++) {
    hdr[4 + i] = (uint8_t)((uint64_t)len >> (8 * i));
  }
  size_t start = out->len;
  assert_int_equal(buf_append(out, hdr, sizeof hdr), 0);
  assert_int_equal(buf_append(out, payload, len), 0);
  uint64_t sum = XXH3_64bits(out->data + start, out->len - start);
  uint8_t t[8];
  for (int i = 0; i < 8; i++) {
    t[i] = (uint8_t)(sum >> (8 * i));
  }
  assert_int_equal(buf_append(out, t, sizeof t), 0);
}

/* ---- tests ---- */

static void test_message_roundtrip(void **state) {
  for (size_t k = 0; k < NUM(msg_cases); k++) {
    const struct msg_case *c = &msg_cases[k];
    struct msg_fixture f;
    struct buf whole = {0}, head = {0}, again = {0}, rcpts = {0};
    uint8_t trailer[QARC_TRAILER_LEN];
    fixture_make(&f, c, 0x0123456789abcdefULL + k);
    assert_int_equal(qarc_message_encode(&whole, &f.q), 0);
    /* The zero-copy form gives the same octets. */
    assert_int_equal(qarc_message_encode_head(&head, &f.q, trailer), 0);
    CHECK(c->name, head.len + c->body_len + sizeof trailer, whole.len);
    CHECK(c->name, memcmp(whole.data, head.data, head.len), 0);
    CHECK(c->name,
          memcmp(whole.data + whole.len - sizeof trailer, trailer,
                 sizeof trailer),
          0);
    struct qarc_message got;
    struct qarc_end e;
    size_t consumed = 0, need = 0;
    const char *why = NULL;
    CHECK(c->name,
          qarc_record_decode(whole.data, whole.len, &consumed, &need, &got, &e,
                             &rcpts, &why),
          QARC_MESSAGE);
    CHECK(c->name, consumed, whole.len);
    check_message_eq(c->name, &got, &f.q);
    /* Canonical: encoding the decoded message gives the same octets. */
    assert_int_equal(qarc_message_encode(&again, &got), 0);
    CHECK(c->name, again.len, whole.len);
    CHECK(c->name, memcmp(again.data, whole.data, whole.len), 0);
    buf_free(&whole);
    buf_free(&head);
    buf_free(&again);
    buf_free(&rcpts);
    fixture_free(&f);
  }
}

static void test_archive_whole_and_split(void **state) {
  struct buf a = {0};
  size_t n = 5; /* the small cases: split at every point stays quick */
  archive_make(&a, n);
  struct read_result r = read_fed(a.data, a.len, 0, 1);
  CHECK("whole", r.num_messages, n);
  CHECK("whole", r.ended, 1);
  CHECK("whole", r.bad, 0);
  /* Byte by byte, then split at every point (two parts). */
  r = read_fed(a.data, a.len, 1, 1);
  CHECK("byte by byte", r.num_messages, n);
  CHECK("byte by byte", r.ended, 1);
  for (size_t step = 2; step < a.len; step += step < 64 ? 1 : 97) {
    r = read_fed(a.data, a.len, step, 0);
    if (r.num_messages != n || !r.ended || r.bad) {
      fail_msg("step %zu: got %zu messages, ended %d, bad %d", step,
               r.num_messages, r.ended, r.bad);
    }
  }
  /* Every cut short of the whole is not a complete archive. */
  for (size_t cut = 0; cut < a.len; cut++) {
    r = read_fed(a.data, cut, 0, 0);
    if (r.ended || r.bad) {
      fail_msg("cut at %zu of %zu: ended %d bad %d", cut, a.len, r.ended,
               r.bad);
    }
  }
  buf_free(&a);
}

static void test_archive_every_flipped_byte(void **state) {
  struct buf a = {0};
  archive_make(&a, 3);
  for (size_t i = 0; i < a.len; i++) {
    for (int bit = 0; bit < 8; bit += 3) {
      a.data[i] ^= (uint8_t)(1u << bit);
      struct read_result r = read_fed(a.data, a.len, 0, 0);
      a.data[i] ^= (uint8_t)(1u << bit);
      if (r.ended) {
        fail_msg("byte %zu bit %d flipped: the archive still reads whole", i,
                 bit);
      }
    }
  }
  buf_free(&a);
}

/* A payload from parts, for the malformed cases. */
struct bad_case {
  const char *name;
  const char *hex; /* the MESSAGE payload in hex */
  const char *why; /* wanted reason (prefix) */
};

/* The smallest valid payload: id 1, arrival 2, flags 0, ret 0, body 0,
 * reserved 0, sender "", client "", helo "", 1 rcpt "a", body "". */
#define P_FIXED                                                                \
  "0100000000000000"                                                           \
  "0200000000000000"
#define P_STRS                                                                 \
  "000000"                                                                     \
  "000000"                                                                     \
  "000000"
#define P_RCPT                                                                 \
  "01000000"                                                                   \
  "0000"                                                                       \
  "010061"                                                                     \
  "00"
#define P_BODY0 "0000000000000000"

static const struct bad_case bad_cases[] = {
    {"valid", P_FIXED "00000000" P_STRS P_RCPT P_BODY0, NULL},
    {"unknown flag", P_FIXED "10000000" P_STRS P_RCPT P_BODY0,
     "malformed message"},
    {"reserved octet", P_FIXED "00000001" P_STRS P_RCPT P_BODY0,
     "malformed message"},
    {"ret 3", P_FIXED "00030000" P_STRS P_RCPT P_BODY0, "malformed message"},
    {"body type 3", P_FIXED "00000300" P_STRS P_RCPT P_BODY0,
     "malformed message"},
    {"no recipient", P_FIXED "00000000" P_STRS "00000000" P_BODY0,
     "malformed message"},
    {"empty address",
     P_FIXED "00000000" P_STRS "01000000"
             "0000"
             "000000" P_BODY0,
     "malformed message"},
    {"notify bit 4",
     P_FIXED "00000000" P_STRS "01000000"
             "0010"
             "010061"
             "00" P_BODY0,
     "malformed message"},
    {"rcpt flag bit 1",
     P_FIXED "00000000" P_STRS "01000000"
             "0200"
             "010061"
             "00" P_BODY0,
     "malformed message"},
    {"string without NUL",
     P_FIXED "00000000"
             "000001"
             "000000"
             "000000" P_RCPT P_BODY0,
     "malformed message"},
    {"NUL inside a string",
     P_FIXED "00000000"
             "02000061"
             "00"
             "000000"
             "000000" P_RCPT P_BODY0,
     "malformed message"},
    {"body shorter than said",
     P_FIXED "00000000" P_STRS P_RCPT "0200000000000000"
             "61",
     "malformed message"},
    {"trailing octet", P_FIXED "00000000" P_STRS P_RCPT P_BODY0 "00",
     "malformed message"},
    {"envid flag, no envid",
     P_FIXED "01000000"
             "000000" P_RCPT P_BODY0,
     "malformed message"},
    {"too many recipients for the payload",
     P_FIXED "00000000" P_STRS "ffffffff"
             "0000"
             "010061"
             "00" P_BODY0,
     "malformed message"},
};

static size_t unhex(const char *hex, uint8_t *out, size_t cap) {
  size_t n = strlen(hex) / 2;
  assert_true(n <= cap);
  for (size_t i = 0; i < n; i++) {
    unsigned v;
    assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
    out[i] = (uint8_t)v;
  }
  return n;
}

static void test_malformed_messages(void **state) {
  for (size_t k = 0; k < NUM(bad_cases); k++) {
    const struct bad_case *c = &bad_cases[k];
    uint8_t payload[256];
    size_t n = unhex(c->hex, payload, sizeof payload);
    struct buf rec = {0}, rcpts = {0};
    frame(&rec, QARC_REC_MESSAGE, payload, n);
    struct qarc_message m;
    struct qarc_end e;
    size_t consumed = 0, need = 0;
    const char *why = NULL;
    enum qarc_result r = qarc_record_decode(rec.data, rec.len, &consumed, &need,
                                            &m, &e, &rcpts, &why);
    if (c->why == NULL) {
      CHECK(c->name, r, QARC_MESSAGE);
      /* ... and it is canonical. */
      struct buf again = {0};
      assert_int_equal(qarc_message_encode(&again, &m), 0);
      CHECK(c->name,
            again.len == rec.len && memcmp(again.data, rec.data, rec.len) == 0,
            1);
      buf_free(&again);
    } else {
      CHECK(c->name, r, QARC_BAD);
      if (why == NULL || strncmp(why, c->why, strlen(c->why)) != 0) {
        fail_msg("%s: why: got '%s', want '%s'", c->name, why ? why : "",
                 c->why);
      }
    }
    buf_free(&rec);
    buf_free(&rcpts);
  }
}

/* Whole archives that are wrong as a whole. */
struct archive_case {
  const char *name;
  int kind;
  const char *why; /* reason prefix */
};

enum {
  AC_BAD_HEADER,
  AC_VERSION_2,
  AC_COUNT_MISMATCH,
  AC_DATA_AFTER_END,
  AC_UNKNOWN_TYPE,
  AC_HUGE_LENGTH,
  AC_END_PAYLOAD,
};

static const struct archive_case archive_cases[] = {
    {"not an archive", AC_BAD_HEADER, "not a postseal queue archive"},
    {"version 2", AC_VERSION_2, "unsupported archive version"},
    {"end counts", AC_COUNT_MISMATCH, "end record counts do not match"},
    {"data after the end", AC_DATA_AFTER_END, "data after the end record"},
    {"unknown record type", AC_UNKNOWN_TYPE, "unknown record type"},
    {"huge length", AC_HUGE_LENGTH, "record too large"},
    {"end payload length", AC_END_PAYLOAD, "malformed end record"},
};

/* archive_case_make builds the archive of case `kind` from a valid one. */
static void archive_case_make(struct buf *a, int kind) {
  archive_make(a, 2);
  size_t end =
      a->len - QARC_RECORD_HEADER_LEN - QARC_END_PAYLOAD_LEN - QARC_TRAILER_LEN;
  uint8_t zero[8] = {0};
  if (kind == AC_BAD_HEADER) {
    a->data[0] = 'X';
  } else if (kind == AC_VERSION_2) {
    a->data[QARC_HEADER_LEN - 2] = '2';
  } else if (kind == AC_COUNT_MISMATCH) {
    a->len = end;
    struct qarc_end e = {2, 1};
    assert_int_equal(qarc_end_encode(a, &e), 0);
  } else if (kind == AC_DATA_AFTER_END) {
    assert_int_equal(buf_append(a, zero, 1), 0);
  } else if (kind == AC_UNKNOWN_TYPE) {
    a->len = end;
    frame(a, 'X', zero, 0);
  } else if (kind == AC_HUGE_LENGTH) {
    a->len = end;
    uint8_t hdr[QARC_RECORD_HEADER_LEN] = {'P', 'Q',  'X', 'M', 0, 0,
                                           0,   0x40, 1,   0,   0, 0};
    assert_int_equal(buf_append(a, hdr, sizeof hdr), 0);
  } else if (kind == AC_END_PAYLOAD) {
    a->len = end;
    frame(a, QARC_REC_END, zero, 8);
  }
}

static void test_archive_refusals(void **state) {
  for (size_t k = 0; k < NUM(archive_cases); k++) {
    const struct archive_case *c = &archive_cases[k];
    struct buf a = {0};
    archive_case_make(&a, c->kind);
    struct read_result r = read_fed(a.data, a.len, 0, 0);
    CHECK(c->name, r.bad, 1);
    CHECK(c->name, r.ended, 0);
    if (r.why == NULL || strncmp(r.why, c->why, strlen(c->why)) != 0) {
      fail_msg("%s: why: got '%s', want '%s'", c->name, r.why ? r.why : "",
               c->why);
    }
    buf_free(&a);
  }
}

/* Messages the format cannot hold: refused by the encoder, nothing
 * appended. */
static void test_encode_refusals(void **state) {
  static const struct {
    const char *name;
    int field;
    int want_errno;
  } cases[] = {
      {"no recipient", 0, EINVAL},  {"empty address", 1, EINVAL},
      {"notify bit 4", 2, EINVAL},  {"ret 3", 3, EINVAL},
      {"body type 3", 4, EINVAL},   {"held 2", 5, EINVAL},
      {"long sender", 6, EMSGSIZE},
  };
  char *long_sender = malloc(SPOOL_MAX_STRING + 2);
  assert_non_null(long_sender);
  memset(long_sender, 'a', SPOOL_MAX_STRING + 1);
  long_sender[SPOOL_MAX_STRING + 1] = '\0';
  for (size_t k = 0; k < NUM(cases); k++) {
    struct msg_fixture f;
    fixture_make(&f, &msg_cases[0], 1);
    int field = cases[k].field;
    f.q.m.num_rcpts = field == 0 ? 0 : f.q.m.num_rcpts;
    f.rcpts[0].addr = field == 1 ? "" : f.rcpts[0].addr;
    f.rcpts[0].notify = field == 2 ? 0x10 : f.rcpts[0].notify;
    f.q.m.ret = field == 3 ? 3 : f.q.m.ret;
    f.q.m.body_type = field == 4 ? 3 : f.q.m.body_type;
    f.q.held = field == 5 ? 2 : f.q.held;
    f.q.m.sender = field == 6 ? long_sender : f.q.m.sender;
    struct buf b = {0};
    assert_int_equal(buf_append(&b, "x", 1), 0);
    errno = 0;
    CHECK(cases[k].name, qarc_message_encode(&b, &f.q), -1);
    CHECK(cases[k].name, errno, cases[k].want_errno);
    CHECK(cases[k].name, b.len, 1);
    buf_free(&b);
    fixture_free(&f);
  }
  free(long_sender);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_message_roundtrip),
      cmocka_unit_test(test_archive_whole_and_split),
      cmocka_unit_test(test_archive_every_flipped_byte),
      cmocka_unit_test(test_malformed_messages),
      cmocka_unit_test(test_archive_refusals),
      cmocka_unit_test(test_encode_refusals),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
