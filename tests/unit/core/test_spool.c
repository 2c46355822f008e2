/* tests/unit/core/test_spool.c — the spool: ids, record codec, writer
 * batches and rotation, fault injection on the write path, scan/repair
 * crash consistency, DONE accounting. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h> /* the portable one-shot XXH3, no dispatch */

#include "core/spool.h"

/* CHECK compares got and want for a labelled case. */
#define CHECK(label, got, want)                                                \
  do {                                                                         \
    long long got_ = (long long)(got), want_ = (long long)(want);              \
    if (got_ != want_) {                                                       \
      fail_msg("%s: %s: got %lld, want %lld", (label), #got, got_, want_);     \
    }                                                                          \
  } while (0)

#define NUM(a) (sizeof(a) / sizeof((a)[0]))
#define ID(ms, thread, ctr)                                                    \
  (((uint64_t)(ms) << 22) | ((uint64_t)(thread) << 16) | (uint64_t)(ctr))

/* ---- fixtures ---- */

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw) {
  return remove(path);
}

static void tmpdir_make(char out[64]) {
  snprintf(out, 64, "/tmp/test_spool.XXXXXX");
  assert_non_null(mkdtemp(out));
}

static void tmpdir_remove(const char *dir) {
  nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static uint64_t file_size(const char *dir, const char *seg) {
  char path[256];
  struct stat st;
  snprintf(path, sizeof path, "%s/seg/%s", dir, seg);
  assert_int_equal(stat(path, &st), 0);
  return (uint64_t)st.st_size;
}

static void file_read(const char *dir, const char *seg, struct buf *out) {
  char path[256];
  snprintf(path, sizeof path, "%s/seg/%s", dir, seg);
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  uint8_t tmp[4096];
  size_t n;
  buf_reset(out);
  while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) {
    assert_int_equal(buf_append(out, tmp, n), 0);
  }
  fclose(f);
}

static void file_write(const char *dir, const char *seg, const uint8_t *p,
                       size_t len) {
  char path[256];
  snprintf(path, sizeof path, "%s/seg/%s", dir, seg);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, p, len), (ssize_t)len);
  close(fd);
}

static size_t count_segments(const char *dir) {
  char path[256];
  snprintf(path, sizeof path, "%s/seg", dir);
  DIR *d = opendir(path);
  assert_non_null(d);
  size_t n = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    n += strstr(de->d_name, ".seg") != NULL;
  }
  closedir(d);
  return n;
}

/* A message built from a compact description. */
struct msg_case {
  const char *name;
  const char *sender;
  const char *envid;
  size_t num_rcpts;
  const char *orcpt; /* for every odd recipient */
  size_t body_len;
  uint8_t smtputf8;
  const char *helo;
};

struct msg_fixture {
  struct spool_message m;
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
  f->m = (struct spool_message){
      .queue_id = id,
      .arrival_ms = 1700000000000 + (int64_t)id,
      .sender = c->sender,
      .envid = c->envid,
      .ret = 1,
      .body_type = 2,
      .smtputf8 = c->smtputf8,
      .requiretls = (uint8_t)(id % 2), /* both flag states round-trip */
      .client_addr = "192.0.2.7",
      .helo = c->helo ? c->helo : "mx.example.net",
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

static const struct msg_case simple_case = {
    "simple", "alice@example.com", NULL, 1, NULL, 7, 0, NULL};

static const struct msg_case msg_cases[] = {
    {"simple", "alice@example.com", NULL, 1, NULL, 7, 0, NULL},
    {"null sender, envid, orcpt", "", "ENV-1234", 3, "rfc822;x@example.org",
     100, 0, NULL},
    {"empty body", "bob@example.com", NULL, 2, NULL, 0, 0, NULL},
    {"many recipients", "list@example.com", NULL, 1000, "rfc822;o@example.org",
     512, 0, NULL},
    {"large body", "big@example.com", "e", 1, NULL, 4u << 20, 0, NULL},
    {"smtputf8, empty helo", "j\xc3\xb6rg@example.de", NULL, 1, NULL, 3, 1, ""},
};

static int str_eq(const char *a, const char *b) {
  if (a == NULL || b == NULL) {
    return a == b;
  }
  return strcmp(a, b) == 0;
}

/* check_message_eq compares a decoded message with the original. */
static void check_message_eq(const char *label, const struct spool_message *got,
                             const struct spool_message *want) {
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

/* Cookies and errors handed back by flush_done, in order. */
struct done_log {
  uintptr_t cookies[4096];
  int errs[4096];
  size_t num;
};

static void done_cb(void *cookie, int err, void *arg) {
  struct done_log *log = arg;
  assert_true(log->num < NUM(log->cookies));
  log->cookies[log->num] = (uintptr_t)cookie;
  log->errs[log->num] = err;
  log->num++;
}

/* ---- ids ---- */

static void test_queue_id_format_parse(void **state) {
  static const struct {
    uint64_t id;
    const char *text;
  } cases[] = {
      {0, "0000000000000000"},
      {1, "0000000000000001"},
      {0x0123456789ABCDEFull, "0123456789ABCDEF"},
      {UINT64_MAX, "FFFFFFFFFFFFFFFF"},
  };
  for (size_t i = 0; i < NUM(cases); i++) {
    char out[SPOOL_QUEUE_ID_LEN + 1];
    uint64_t id = 0;
    spool_queue_id_format(cases[i].id, out);
    CHECK(cases[i].text, strcmp(out, cases[i].text), 0);
    CHECK(cases[i].text, spool_queue_id_parse(cases[i].text, &id), 1);
    CHECK(cases[i].text, id, cases[i].id);
  }
  static const struct {
    const char *text;
    int want;
  } parse[] = {
      {"0123456789abcdef", 1}, {"", 0},
      {"0123456789ABCDE", 0},  {"0123456789ABCDEF0", 0},
      {"0123456789ABCDEG", 0}, {" 123456789ABCDEF", 0},
      {"0123456789ABCDE ", 0}, {"x", 0},
  };
  for (size_t i = 0; i < NUM(parse); i++) {
    uint64_t id;
    CHECK(parse[i].text, spool_queue_id_parse(parse[i].text, &id),
          parse[i].want);
  }
}

static void test_queue_id_first_id(void **state) {
  static const struct {
    const char *name;
    uint64_t first_id;
    unsigned thread;
    int64_t now_ms;
    uint64_t want;
  } cases[] = {
      {"clock behind, same thread", ID(1000, 5, 7), 5, 10, ID(1000, 5, 7)},
      {"clock behind, higher thread", ID(1000, 9, 7), 5, 10, ID(1001, 5, 0)},
      {"clock behind, lower thread", ID(1000, 2, 7), 5, 10, ID(1000, 5, 0)},
      {"clock ahead", ID(1000, 5, 7), 5, 2000, ID(2000, 5, 0)},
      {"negative clock", 0, 5, -5, ID(0, 5, 0)},
      {"thread 63, counter full", ID(7, 63, 0xffff) + 1, 63, 0, ID(8, 63, 0)},
  };
  for (size_t i = 0; i < NUM(cases); i++) {
    char dir[64];
    tmpdir_make(dir);
    struct spool_writer *w =
        spool_writer_open(dir, cases[i].thread, cases[i].first_id);
    assert_non_null(w);
    CHECK(cases[i].name, spool_writer_new_id(w, cases[i].now_ms),
          cases[i].want);
    spool_writer_close(w);
    tmpdir_remove(dir);
  }
}

static void test_queue_id_monotonic(void **state) {
  char dir[64];
  tmpdir_make(dir);
  struct spool_writer *w = spool_writer_open(dir, 5, 0);
  assert_non_null(w);
  /* now_ms per step: a burst past the 16-bit counter in one millisecond,
   * the clock going back, then jumping ahead. */
  uint64_t prev = 0;
  int64_t clock[] = {100000, 100000, 99000, 100001, 200000, 5, 200000};
  size_t reps[] = {70000, 1, 1000, 10, 1, 1, 1};
  for (size_t s = 0; s < NUM(clock); s++) {
    for (size_t r = 0; r < reps[s]; r++) {
      uint64_t id = spool_writer_new_id(w, clock[s]);
      if (prev != 0 && id <= prev) {
        fail_msg("step %zu rep %zu: id %llx not above %llx", s, r,
                 (unsigned long long)id, (unsigned long long)prev);
      }
      CHECK("thread bits", (id >> 16) & 0x3f, 5);
      prev = id;
    }
  }
  /* 70000 ids in one ms wrapped the counter into the next ms. */
  CHECK("after wrap", prev >> 22 >= 200000, 1);
  spool_writer_close(w);
  tmpdir_remove(dir);
}

/* ---- codec ---- */

static void test_codec_roundtrip(void **state) {
  for (size_t i = 0; i < NUM(msg_cases); i++) {
    const char *label = msg_cases[i].name;
    struct msg_fixture f;
    struct buf rec = {0}, again = {0}, head = {0}, rcpts = {0};
    fixture_make(&f, &msg_cases[i], ID(123456, 3, i));
    CHECK(label, spool_message_encode(&rec, &f.m), 0);

    uint8_t type;
    const uint8_t *payload;
    size_t payload_len, record_len;
    CHECK(label,
          spool_record_decode(rec.data, rec.len, &type, &payload, &payload_len,
                              &record_len),
          SPOOL_DECODE_OK);
    CHECK(label, type, SPOOL_REC_MESSAGE);
    CHECK(label, record_len, rec.len);
    struct spool_message got;
    CHECK(label, spool_message_decode(payload, payload_len, &got, &rcpts), 0);
    check_message_eq(label, &got, &f.m);

    /* Re-encoding the decoded message gives the same bytes. */
    CHECK(label, spool_message_encode(&again, &got), 0);
    CHECK(label, again.len, rec.len);
    CHECK(label, memcmp(again.data, rec.data, rec.len), 0);

    /* The writer's head + body form is the same record. */
    size_t head_len;
    CHECK(label, spool_message_encode_head(&head, &f.m, &head_len), 0);
    CHECK(label, head_len + f.m.body_len, rec.len);
    CHECK(label, memcmp(head.data, rec.data, head_len), 0);
    buf_free(&rec);
    buf_free(&again);
    buf_free(&head);
    buf_free(&rcpts);
    fixture_free(&f);
  }
}

static void test_codec_encode_rejects(void **state) {
  struct msg_fixture f;
  struct buf out = {0};
  char long_str[SPOOL_MAX_STRING + 2];
  memset(long_str, 'a', sizeof long_str - 1);
  long_str[sizeof long_str - 1] = '\0';
  static const char *names[] = {"no recipients", "smtputf8 2",
                                "notify above 255", "string too long"};
  for (size_t i = 0; i < NUM(names); i++) {
    fixture_make(&f, &simple_case, 1);
    if (i == 0) {
      f.m.num_rcpts = 0;
    } else if (i == 1) {
      f.m.smtputf8 = 2;
    } else if (i == 2) {
      f.rcpts[0].notify = 256;
    } else {
      f.m.helo = long_str;
    }
    CHECK(names[i], spool_message_encode(&out, &f.m), -1);
    CHECK(names[i], out.len, 0); /* nothing appended */
    fixture_free(&f);
  }
  struct spool_done d = {1, 0, 0, 0};
  CHECK("done outcome 0", spool_done_encode(&out, &d), -1);
  CHECK("segment thread 64", spool_segment_header_encode(&out, 64, 1), -1);
  CHECK("nothing appended", out.len, 0);
  buf_free(&out);
}

/* encode_case appends one labelled record of each kind to `out`. */
static void encode_record(int kind, struct buf *out) {
  struct msg_fixture f;
  struct spool_done d = {ID(5, 1, 2), 3, SPOOL_OUTCOME_BOUNCED, 1700000000123};
  if (kind == 0) {
    fixture_make(&f, &msg_cases[1], ID(5, 1, 1));
    assert_int_equal(spool_message_encode(out, &f.m), 0);
    fixture_free(&f);
  } else if (kind == 1) {
    assert_int_equal(spool_done_encode(out, &d), 0);
  } else if (kind == 2) {
    assert_int_equal(spool_segment_header_encode(out, 7, 42), 0);
  } else {
    struct spool_hold h = {ID(5, 1, 2), 7, 1, 1700000000123};
    assert_int_equal(spool_hold_encode(out, &h), 0);
  }
}

static const char *record_kinds[] = {"message", "done", "segment", "hold"};

static void test_codec_truncation(void **state) {
  for (int kind = 0; kind < (int)NUM(record_kinds); kind++) {
    struct buf rec = {0};
    encode_record(kind, &rec);
    for (size_t cut = 0; cut < rec.len; cut++) {
      uint8_t type;
      const uint8_t *payload;
      size_t payload_len, record_len;
      char label[64];
      snprintf(label, sizeof label, "%s cut at %zu", record_kinds[kind], cut);
      CHECK(label,
            spool_record_decode(rec.data, cut, &type, &payload, &payload_len,
                                &record_len),
            SPOOL_DECODE_SHORT);
    }
    /* Every cut of the payload itself is malformed. */
    size_t payload_len = rec.len - SPOOL_RECORD_HEADER_LEN;
    const uint8_t *payload = rec.data + SPOOL_RECORD_HEADER_LEN;
    struct buf rcpts = {0};
    for (size_t cut = 0; cut < payload_len; cut++) {
      struct spool_message m;
      struct spool_done d;
      struct spool_segment_header h;
      char label[64];
      snprintf(label, sizeof label, "%s payload cut at %zu", record_kinds[kind],
               cut);
      if (kind == 0) {
        CHECK(label, spool_message_decode(payload, cut, &m, &rcpts), -1);
      } else if (kind == 1) {
        CHECK(label, spool_done_decode(payload, cut, &d), -1);
      } else if (kind == 2) {
        CHECK(label, spool_segment_header_decode(payload, cut, &h), -1);
      } else {
        struct spool_hold hold;
        CHECK(label, spool_hold_decode(SPOOL_REC_HOLD, payload, cut, &hold),
              -1);
      }
    }
    buf_free(&rcpts);
    buf_free(&rec);
  }
}

static void test_codec_corruption(void **state) {
  for (int kind = 0; kind < (int)NUM(record_kinds); kind++) {
    struct buf rec = {0};
    encode_record(kind, &rec);
    /* Trailing bytes after a record are the next record's business. */
    struct buf longer = {0};
    buf_append(&longer, rec.data, rec.len);
    buf_append(&longer, "PSR", 3);
    uint8_t type;
    const uint8_t *payload;
    size_t payload_len, record_len;
    CHECK(record_kinds[kind],
          spool_record_decode(longer.data, longer.len, &type, &payload,
                              &payload_len, &record_len),
          SPOOL_DECODE_OK);
    CHECK(record_kinds[kind], record_len, rec.len);
    for (size_t pos = 0; pos < rec.len; pos++) {
      for (int bit = 0; bit < 8; bit += 7) {
        char label[64];
        snprintf(label, sizeof label, "%s byte %zu bit %d", record_kinds[kind],
                 pos, bit);
        rec.data[pos] ^= (uint8_t)(1u << bit);
        enum spool_decode_result r = spool_record_decode(
            rec.data, rec.len, &type, &payload, &payload_len, &record_len);
        rec.data[pos] ^= (uint8_t)(1u << bit);
        /* A longer payload_len cannot be told from a torn record. */
        int in_len_field = pos >= 8 && pos < 12;
        CHECK(label,
              r == SPOOL_DECODE_BAD || (in_len_field && r != SPOOL_DECODE_OK),
              1);
      }
    }
    buf_free(&longer);
    buf_free(&rec);
  }
  uint8_t garbage[] = {'P', 'S', 'X'};
  size_t len;
  CHECK("garbage", spool_record_peek(garbage, sizeof garbage, &len),
        SPOOL_DECODE_BAD);
  uint8_t too_long[12] = {'P', 'S', 'R', '1', 2, 0, 0, 0, 0, 0, 0, 0x41};
  CHECK("payload_len over limit", spool_record_peek(too_long, 12, &len),
        SPOOL_DECODE_BAD);
}

/* The offsets of fields in the payload of msg fixture `simple_case`. */
static void test_message_decode_bad(void **state) {
  struct msg_fixture f;
  struct buf rec = {0}, rcpts = {0}, p = {0};
  fixture_make(&f, &simple_case, 9);
  assert_int_equal(spool_message_encode(&rec, &f.m), 0);
  const uint8_t *payload = rec.data + SPOOL_RECORD_HEADER_LEN;
  size_t payload_len = rec.len - SPOOL_RECORD_HEADER_LEN;
  size_t sender = 21; /* u16 length of the sender */
  size_t sender_nul = sender + 2 + strlen(f.m.sender);
  size_t after_helo = sender_nul + 1 + 2 + strlen(f.m.client_addr) + 1 + 2 +
                      strlen(f.m.helo) + 1;
  size_t rcpt0 = after_helo + 4;
  static const struct {
    const char *name;
    int where; /* index into offsets below */
    size_t delta;
    uint8_t value;
    int append; /* 1: append a byte instead */
  } cases[] = {
      {"version 2", 0, 0, 2, 0},
      {"unknown flag", 0, 1, 0x80, 0},
      {"smtputf8 2", 0, 4, 2, 0},
      {"sender NUL missing", 2, 0, 'x', 0},
      {"NUL inside sender", 1, 2, 0, 0},
      {"sender length past end", 1, 1, 0xff, 0},
      {"zero recipients", 3, 0, 0, 0},
      {"recipient count too big", 3, 3, 0x10, 0},
      {"unknown recipient flag", 4, 0, 0x02, 0},
      {"trailing byte", 0, 0, 0, 1},
  };
  size_t offsets[] = {0, sender, sender_nul, after_helo, rcpt0};
  for (size_t i = 0; i < NUM(cases); i++) {
    struct spool_message m;
    buf_reset(&p);
    buf_append(&p, payload, payload_len);
    if (cases[i].append) {
      buf_append(&p, "x", 1);
    } else {
      p.data[offsets[cases[i].where] + cases[i].delta] = cases[i].value;
    }
    CHECK(cases[i].name, spool_message_decode(p.data, p.len, &m, &rcpts), -1);
  }
  buf_free(&p);
  buf_free(&rcpts);
  buf_free(&rec);
  fixture_free(&f);
}

/* The record checksum is XXH3-64 of the 12 header bytes and the payload,
 * whichever code path the library picks (the codec uses the run-time
 * dispatched one on x86): a record framed here with the portable one-shot
 * XXH3_64bits, over a 64 KiB payload that runs the vector loops, decodes,
 * and a record with a flipped payload bit does not. */
static void test_record_checksum_portable(void **state) {
  enum { PAYLOAD = 65536 + 37 };
  uint8_t *rec = malloc(SPOOL_RECORD_HEADER_LEN + PAYLOAD);
  assert_non_null(rec);
  memcpy(rec, "PSR1", 4);
  rec[4] = SPOOL_REC_DONE;
  rec[5] = rec[6] = rec[7] = 0;
  for (int i = 0; i < 4; i++) {
    rec[8 + i] = (uint8_t)((uint32_t)PAYLOAD >> (8 * i));
  }
  for (size_t i = 0; i < PAYLOAD; i++) {
    rec[SPOOL_RECORD_HEADER_LEN + i] = (uint8_t)(i * 131 + (i >> 9));
  }
  uint8_t *hashed = malloc(12 + PAYLOAD);
  assert_non_null(hashed);
  memcpy(hashed, rec, 12);
  memcpy(hashed + 12, rec + SPOOL_RECORD_HEADER_LEN, PAYLOAD);
  uint64_t sum = XXH3_64bits(hashed, 12 + PAYLOAD);
  for (int i = 0; i < 8; i++) {
    rec[12 + i] = (uint8_t)(sum >> (8 * i));
  }
  uint8_t type;
  const uint8_t *payload;
  size_t payload_len, record_len;
  CHECK("portable checksum decodes",
        spool_record_decode(rec, SPOOL_RECORD_HEADER_LEN + PAYLOAD, &type,
                            &payload, &payload_len, &record_len),
        SPOOL_DECODE_OK);
  CHECK("payload_len", payload_len, PAYLOAD);
  rec[SPOOL_RECORD_HEADER_LEN + 40000] ^= 4;
  CHECK("flipped bit",
        spool_record_decode(rec, SPOOL_RECORD_HEADER_LEN + PAYLOAD, &type,
                            &payload, &payload_len, &record_len),
        SPOOL_DECODE_BAD);
  free(hashed);
  free(rec);
}

static void test_done_and_segment_codec(void **state) {
  static const struct spool_done dones[] = {
      {0, 0, SPOOL_OUTCOME_DELIVERED, 0},
      {UINT64_MAX, UINT32_MAX, SPOOL_OUTCOME_DELETED, -1},
      {ID(99, 3, 4), 17, SPOOL_OUTCOME_BOUNCED, 1700000000000},
  };
  for (size_t i = 0; i < NUM(dones); i++) {
    struct buf rec = {0};
    uint8_t type;
    const uint8_t *payload;
    size_t payload_len, record_len;
    struct spool_done got;
    CHECK("done encode", spool_done_encode(&rec, &dones[i]), 0);
    CHECK("done record",
          spool_record_decode(rec.data, rec.len, &type, &payload, &payload_len,
                              &record_len),
          SPOOL_DECODE_OK);
    CHECK("done type", type, SPOOL_REC_DONE);
    CHECK("done decode", spool_done_decode(payload, payload_len, &got), 0);
    CHECK("queue_id", got.queue_id, dones[i].queue_id);
    CHECK("rcpt_index", got.rcpt_index, dones[i].rcpt_index);
    CHECK("outcome", got.outcome, dones[i].outcome);
    CHECK("when_ms", got.when_ms, dones[i].when_ms);
    uint8_t bad[24];
    static const struct {
      const char *name;
      size_t pos;
      uint8_t value;
    } mut[] = {{"version", 0, 9},
               {"outcome 0", 1, 0},
               {"outcome 4", 1, 4},
               {"reserved", 2, 1}};
    for (size_t j = 0; j < NUM(mut); j++) {
      memcpy(bad, payload, 24);
      bad[mut[j].pos] = mut[j].value;
      CHECK(mut[j].name, spool_done_decode(bad, 24, &got), -1);
    }
    buf_free(&rec);
  }
  struct buf rec = {0};
  struct spool_segment_header h;
  assert_int_equal(spool_segment_header_encode(&rec, 63, 0xdeadbeef), 0);
  const uint8_t *payload = rec.data + SPOOL_RECORD_HEADER_LEN;
  CHECK("segment", spool_segment_header_decode(payload, 12, &h), 0);
  CHECK("version", h.version, SPOOL_SEGMENT_VERSION);
  CHECK("thread", h.thread_index, 63);
  CHECK("seq", h.seq, 0xdeadbeef);
  rec.data[SPOOL_RECORD_HEADER_LEN] = 2; /* version 2 is unknown */
  CHECK("segment version 2", spool_segment_header_decode(payload, 12, &h), -1);
  buf_free(&rec);
}

static void test_hold_codec(void **state) {
  static const struct spool_hold holds[] = {
      {0, 1, 1, 0},
      {UINT64_MAX, UINT32_MAX, 0, -1},
      {ID(99, 3, 4), 17, 1, 1700000000000},
      {ID(99, 3, 5), 2, 0, 1700000000001},
  };
  for (size_t i = 0; i < NUM(holds); i++) {
    struct buf rec = {0};
    uint8_t type;
    const uint8_t *payload;
    size_t payload_len, record_len;
    struct spool_hold got;
    char label[64];
    snprintf(label, sizeof label, "hold case %zu", i);
    CHECK(label, spool_hold_encode(&rec, &holds[i]), 0);
    CHECK(label,
          spool_record_decode(rec.data, rec.len, &type, &payload, &payload_len,
                              &record_len),
          SPOOL_DECODE_OK);
    CHECK(label, type, holds[i].held ? SPOOL_REC_HOLD : SPOOL_REC_RELEASE);
    CHECK(label, payload_len, 24);
    CHECK(label, spool_hold_decode(type, payload, payload_len, &got), 0);
    CHECK(label, got.queue_id, holds[i].queue_id);
    CHECK(label, got.gen, holds[i].gen);
    CHECK(label, got.held, holds[i].held);
    CHECK(label, got.when_ms, holds[i].when_ms);
    /* The payload is the same for both types: the type carries the state. */
    uint8_t other = type == SPOOL_REC_HOLD ? SPOOL_REC_RELEASE : SPOOL_REC_HOLD;
    CHECK(label, spool_hold_decode(other, payload, payload_len, &got), 0);
    CHECK(label, got.held, !holds[i].held);
    CHECK(label, spool_hold_decode(SPOOL_REC_DONE, payload, payload_len, &got),
          -1);
    static const struct {
      const char *name;
      size_t pos;
      uint8_t value;
    } mut[] = {{"version 0", 0, 0},
               {"version 2", 0, 2},
               {"reserved8", 1, 1},
               {"reserved16 lo", 2, 1},
               {"reserved16 hi", 3, 0x80}};
    uint8_t bad[25];
    for (size_t j = 0; j < NUM(mut); j++) {
      memcpy(bad, payload, 24);
      bad[mut[j].pos] = mut[j].value;
      CHECK(mut[j].name, spool_hold_decode(type, bad, 24, &got), -1);
    }
    memcpy(bad, payload, 24);
    memset(bad + 4, 0, 4);
    CHECK("gen 0", spool_hold_decode(type, bad, 24, &got), -1);
    bad[24] = 0;
    memcpy(bad, payload, 24);
    CHECK("trailing byte", spool_hold_decode(type, bad, 25, &got), -1);
    buf_free(&rec);
  }
  struct buf out = {0};
  struct spool_hold gen0 = {1, 0, 1, 0}, held2 = {1, 1, 2, 0};
  CHECK("encode gen 0", spool_hold_encode(&out, &gen0), -1);
  CHECK("encode held 2", spool_hold_encode(&out, &held2), -1);
  CHECK("nothing appended", out.len, 0);
  buf_free(&out);
}

/* ---- writer ---- */

/* write_batch does what the loop does for a batch: write `limit` bytes of
 * it (all if limit >= f->len). Returns the bytes written. */
static size_t write_batch(const struct spool_flush *f, size_t limit) {
  size_t done = 0;
  for (int i = 0; i < f->num_iov && done < limit; i++) {
    size_t n = f->iov[i].iov_len;
    n = n < limit - done ? n : limit - done;
    ssize_t k = pwrite(f->fd, f->iov[i].iov_base, n, (off_t)(f->offset + done));
    assert_int_equal(k, (ssize_t)n);
    done += n;
  }
  return done;
}

static int add_messages(struct spool_writer *w, struct msg_fixture *fx,
                        size_t num, int64_t now, uintptr_t first_cookie) {
  for (size_t i = 0; i < num; i++) {
    fx[i].m.queue_id = spool_writer_new_id(w, now);
    if (spool_writer_add(w, &fx[i].m, (void *)(first_cookie + i)) != 0) {
      return -1;
    }
  }
  return 0;
}

/* scan_ids scans dir and checks it holds exactly the ids of `want`. */
static void check_scan_ids(const char *label, const char *dir, int repair,
                           const uint64_t *want, size_t num_want,
                           size_t want_torn) {
  struct spool_scan scan;
  char err[256] = "";
  if (spool_scan(dir, repair, &scan, err, sizeof err) != 0) {
    fail_msg("%s: scan: %s", label, err);
  }
  CHECK(label, scan.num_entries, num_want);
  CHECK(label, scan.num_torn, want_torn);
  for (size_t i = 0; i < num_want && i < scan.num_entries; i++) {
    CHECK(label, scan.entries[i].queue_id, want[i]);
  }
  spool_scan_free(&scan);
}

static void test_writer_batches(void **state) {
  char dir[64];
  tmpdir_make(dir);
  struct spool_writer *w = spool_writer_open(dir, 2, 0);
  assert_non_null(w);
  enum { N = 1200, LATE = 10 };
  struct msg_fixture *fx = calloc(N + LATE, sizeof *fx);
  uint64_t *ids = calloc(N + LATE, sizeof *ids);
  static struct done_log log;
  log.num = 0;
  for (size_t i = 0; i < N + LATE; i++) {
    fixture_make(&fx[i], &msg_cases[i % 3], 0);
  }
  assert_int_equal(add_messages(w, fx, N, 1000, 1), 0);
  CHECK("staged", spool_writer_staged(w), N);

  struct spool_flush f;
  CHECK("begin", spool_writer_flush_begin(w, &f), 1);
  CHECK("iov limit", f.num_iov <= SPOOL_BATCH_MAX_IOV, 1);
  CHECK("left staged", spool_writer_staged(w) > 0, 1);
  CHECK("busy", spool_writer_busy(w), 1);
  size_t total = 0;
  for (int i = 0; i < f.num_iov; i++) {
    total += f.iov[i].iov_len;
  }
  CHECK("len", total, f.len);
  CHECK("second begin while busy", spool_writer_flush_begin(w, NULL), 0);
  /* Group commit: more records arrive while the batch is in flight. */
  assert_int_equal(add_messages(w, fx + N, LATE, 1000, 1 + N), 0);
  write_batch(&f, f.len);
  assert_int_equal(fdatasync(f.fd), 0);
  size_t first_batch = N + LATE - spool_writer_staged(w);
  spool_writer_flush_done(w, 0, done_cb, &log);
  CHECK("first batch acked", log.num, first_batch);
  CHECK("sync flush", spool_writer_sync_flush(w, done_cb, &log), 0);
  CHECK("all acked", log.num, N + LATE);
  for (size_t i = 0; i < log.num; i++) {
    CHECK("cookie order", log.cookies[i], i + 1);
    CHECK("cookie err", log.errs[i], 0);
    ids[i] = fx[i].m.queue_id;
  }
  spool_writer_close(w);
  check_scan_ids("batches", dir, 0, ids, N + LATE, 0);

  /* Read a few back whole. */
  struct spool_scan scan;
  assert_int_equal(spool_scan(dir, 0, &scan, NULL, 0), 0);
  struct buf storage = {0}, rcpts = {0};
  for (size_t i = 0; i < N + LATE; i += 97) {
    struct spool_message m;
    CHECK("read",
          spool_read_message(dir, &scan.entries[i], &storage, &m, &rcpts), 0);
    check_message_eq("read back", &m, &fx[i].m);
    CHECK("body_len", scan.entries[i].body_len, fx[i].m.body_len);
    CHECK("num_rcpts", scan.entries[i].num_rcpts, fx[i].m.num_rcpts);
  }
  buf_free(&storage);
  buf_free(&rcpts);
  spool_scan_free(&scan);
  for (size_t i = 0; i < N + LATE; i++) {
    fixture_free(&fx[i]);
  }
  free(fx);
  free(ids);
  tmpdir_remove(dir);
}

static void test_writer_done_batch(void **state) {
  char dir[64];
  tmpdir_make(dir);
  struct spool_writer *w = spool_writer_open(dir, 0, 0);
  assert_non_null(w);
  static struct done_log log;
  log.num = 0;
  for (uint32_t i = 0; i < 2000; i++) {
    struct spool_done d = {ID(1, 0, 1), i, SPOOL_OUTCOME_DELIVERED, 5};
    assert_int_equal(spool_writer_add_done(w, &d, (void *)(uintptr_t)i), 0);
  }
  struct spool_flush f;
  CHECK("begin", spool_writer_flush_begin(w, &f), 1);
  /* Body-less records are contiguous in the arena: one iovec. */
  CHECK("num_iov", f.num_iov, 1);
  CHECK("staged", spool_writer_staged(w), 0);
  write_batch(&f, f.len);
  spool_writer_flush_done(w, 0, done_cb, &log);
  CHECK("acked", log.num, 2000);
  spool_writer_close(w);
  tmpdir_remove(dir);
}

/* HOLD and RELEASE records share the group commit of MESSAGE and DONE
 * records: one batch, callbacks in staging order, read back by a scan. */
static void test_writer_hold_batch(void **state) {
  char dir[64];
  tmpdir_make(dir);
  struct spool_writer *w = spool_writer_open(dir, 2, 0);
  assert_non_null(w);
  static struct done_log log;
  log.num = 0;
  struct msg_fixture a, b;
  fixture_make(&a, &msg_cases[1], 0);
  fixture_make(&b, &msg_cases[0], 0);
  assert_int_equal(add_messages(w, &a, 1, 50, 1), 0);
  struct spool_hold h1 = {a.m.queue_id, 1, 1, 51};
  struct spool_hold bad = {a.m.queue_id, 0, 1, 51};
  CHECK("gen 0 refused", spool_writer_add_hold(w, &bad, (void *)99), -1);
  CHECK("add hold", spool_writer_add_hold(w, &h1, (void *)2), 0);
  struct spool_done d = {a.m.queue_id, 0, SPOOL_OUTCOME_DELETED, 52};
  CHECK("add done", spool_writer_add_done(w, &d, (void *)3), 0);
  assert_int_equal(add_messages(w, &b, 1, 50, 4), 0);
  struct spool_hold h2 = {b.m.queue_id, 1, 1, 53},
                    r2 = {b.m.queue_id, 2, 0, 54};
  CHECK("add hold b", spool_writer_add_hold(w, &h2, (void *)5), 0);
  CHECK("add release b", spool_writer_add_hold(w, &r2, (void *)6), 0);
  CHECK("staged", spool_writer_staged(w), 6);
  CHECK("flush", spool_writer_sync_flush(w, done_cb, &log), 0);
  CHECK("acked", log.num, 6);
  for (size_t i = 0; i < log.num; i++) {
    CHECK("cookie order", log.cookies[i], i + 1);
    CHECK("cookie err", log.errs[i], 0);
  }
  spool_writer_close(w);

  struct spool_scan scan;
  assert_int_equal(spool_scan(dir, 0, &scan, NULL, 0), 0);
  CHECK("entries", scan.num_entries, 2);
  CHECK("a held", spool_scan_held(&scan, a.m.queue_id), 1);
  CHECK("a gen", spool_scan_find(&scan, a.m.queue_id)->hold_gen, 1);
  CHECK("a done", spool_scan_find(&scan, a.m.queue_id)->num_done, 1);
  CHECK("b released", spool_scan_held(&scan, b.m.queue_id), 0);
  CHECK("b gen", spool_scan_find(&scan, b.m.queue_id)->hold_gen, 2);
  CHECK("unknown", spool_scan_held(&scan, 12345), 0);
  spool_scan_free(&scan);
  fixture_free(&a);
  fixture_free(&b);
  tmpdir_remove(dir);
}

static void test_writer_rotation(void **state) {
  char dir[64];
  tmpdir_make(dir);
  struct spool_writer *w = spool_writer_open(dir, 4, 0);
  assert_non_null(w);
  spool_writer_set_segment_target(w, 1024);
  enum { N = 40 };
  struct msg_fixture fx[N];
  uint64_t ids[N];
  static struct done_log log;
  log.num = 0;
  char first_seg[SPOOL_SEGMENT_NAME_MAX];
  snprintf(first_seg, sizeof first_seg, "%s", spool_writer_segment(w));
  for (size_t i = 0; i < N; i++) {
    fixture_make(&fx[i], &msg_cases[1], 0);
    assert_int_equal(add_messages(w, &fx[i], 1, 5000, i), 0);
    ids[i] = fx[i].m.queue_id;
    if (i % 4 == 3) {
      CHECK("flush", spool_writer_sync_flush(w, done_cb, &log), 0);
    }
  }
  CHECK("flush", spool_writer_sync_flush(w, done_cb, &log), 0);
  CHECK("acked", log.num, N);
  CHECK("rotated", strcmp(spool_writer_segment(w), first_seg) > 0, 1);
  size_t num_segments = count_segments(dir);
  CHECK("several segments", num_segments > 3, 1);
  spool_writer_close(w);

  /* A new writer for the same thread continues above the last segment. */
  struct spool_writer *w2 = spool_writer_open(dir, 4, 0);
  assert_non_null(w2);
  CHECK("next seq", count_segments(dir), num_segments + 1);
  spool_writer_close(w2);

  struct spool_scan scan;
  assert_int_equal(spool_scan(dir, 0, &scan, NULL, 0), 0);
  CHECK("segments scanned", scan.num_segments, num_segments + 1);
  spool_scan_free(&scan);
  check_scan_ids("rotation", dir, 0, ids, N, 0);
  for (size_t i = 0; i < N; i++) {
    fixture_free(&fx[i]);
  }
  tmpdir_remove(dir);
}

static void test_writer_rejects(void **state) {
  char dir[64];
  tmpdir_make(dir);
  errno = 0;
  CHECK("thread 64", spool_writer_open(dir, 64, 0) == NULL, 1);
  CHECK("errno", errno, EINVAL);
  struct spool_writer *w = spool_writer_open(dir, 1, 0);
  assert_non_null(w);
  struct msg_fixture f;
  fixture_make(&f, &simple_case, 1);
  f.m.num_rcpts = 0;
  CHECK("invalid message", spool_writer_add(w, &f.m, NULL), -1);
  CHECK("nothing staged", spool_writer_staged(w), 0);
  struct spool_flush fl;
  CHECK("nothing to flush", spool_writer_flush_begin(w, &fl), 0);
  /* fail_staged hands every staged record back with the error. */
  static struct done_log log;
  log.num = 0;
  f.m.num_rcpts = 1;
  assert_int_equal(add_messages(w, &f, 1, 1, 7), 0);
  assert_int_equal(add_messages(w, &f, 1, 1, 8), 0);
  spool_writer_fail_staged(w, -ENOSPC, done_cb, &log);
  CHECK("failed", log.num, 2);
  CHECK("cookie", log.cookies[1], 8);
  CHECK("err", log.errs[0], -ENOSPC);
  CHECK("staged", spool_writer_staged(w), 0);
  spool_writer_close(w);
  fixture_free(&f);
  tmpdir_remove(dir);
}

/* ---- fault injection ---- */

static void test_writer_fault_injection(void **state) {
  static const struct {
    const char *name;
    int result;
    int written_pct; /* of the batch, before the failure */
  } cases[] = {
      {"fdatasync fails after a full write", -EIO, 100},
      {"short write, disk full", -ENOSPC, 50},
      {"nothing written", -ENOSPC, 0},
      {"write error after one byte", -EIO, 1},
  };
  for (size_t c = 0; c < NUM(cases); c++) {
    const char *label = cases[c].name;
    char dir[64];
    tmpdir_make(dir);
    struct spool_writer *w = spool_writer_open(dir, 1, 0);
    assert_non_null(w);
    static struct done_log log;
    log.num = 0;
    struct msg_fixture fx[9];
    uint64_t acked[5];
    for (size_t i = 0; i < 9; i++) {
      fixture_make(&fx[i], &msg_cases[i % 3], 0);
    }
    assert_int_equal(add_messages(w, fx, 3, 10, 100), 0);
    CHECK(label, spool_writer_sync_flush(w, done_cb, &log), 0);
    char seg[SPOOL_SEGMENT_NAME_MAX];
    snprintf(seg, sizeof seg, "%s", spool_writer_segment(w));
    uint64_t durable = spool_writer_offset(w);

    /* The failing batch. */
    log.num = 0;
    assert_int_equal(add_messages(w, fx + 3, 4, 10, 200), 0);
    struct spool_flush f;
    CHECK(label, spool_writer_flush_begin(w, &f), 1);
    write_batch(&f, f.len * (size_t)cases[c].written_pct / 100);
    spool_writer_flush_done(w, cases[c].result, done_cb, &log);
    CHECK(label, log.num, 4);
    for (size_t i = 0; i < 4; i++) {
      CHECK(label, log.cookies[i], 200 + i);
      CHECK(label, log.errs[i], cases[c].result);
    }
    CHECK(label, file_size(dir, seg), durable);

    /* A later batch succeeds (in a fresh segment). */
    log.num = 0;
    assert_int_equal(add_messages(w, fx + 7, 2, 10, 300), 0);
    CHECK(label, spool_writer_sync_flush(w, done_cb, &log), 0);
    CHECK(label, log.num, 2);
    CHECK(label, log.errs[1], 0);
    spool_writer_close(w);
    for (size_t i = 0; i < 3; i++) {
      acked[i] = fx[i].m.queue_id;
    }
    acked[3] = fx[7].m.queue_id;
    acked[4] = fx[8].m.queue_id;
    check_scan_ids(label, dir, 0, acked, 5, 0);
    for (size_t i = 0; i < 9; i++) {
      fixture_free(&fx[i]);
    }
    tmpdir_remove(dir);
  }
}

/* ---- pre-zeroing ---- */

/* commit_one stages `num` messages and commits them as one batch the way
 * the loop does (write every iovec, fdatasync, report). Returns the
 * batch's length as the writer handed it out (records + zeros). */
static size_t commit_one(struct spool_writer *w, struct msg_fixture *fx,
                         size_t num, uintptr_t cookie) {
  static struct done_log log;
  log.num = 0;
  assert_int_equal(add_messages(w, fx, num, 500, cookie), 0);
  struct spool_flush f;
  assert_int_equal(spool_writer_flush_begin(w, &f), 1);
  size_t total = 0;
  for (int i = 0; i < f.num_iov; i++) {
    total += f.iov[i].iov_len;
  }
  CHECK("iovecs add up", total, f.len);
  assert_int_equal(write_batch(&f, f.len), f.len);
  assert_int_equal(fdatasync(f.fd), 0);
  spool_writer_flush_done(w, 0, done_cb, &log);
  CHECK("acked", log.num, num);
  return f.len;
}

/* prezero_writer opens a writer for thread 0 that pre-zeroes in `chunk`
 * steps, and names its segment in seg. */
static struct spool_writer *prezero_writer(const char *dir, uint64_t chunk,
                                           char seg[SPOOL_SEGMENT_NAME_MAX]) {
  struct spool_writer *w = spool_writer_open(dir, 0, 0);
  assert_non_null(w);
  CHECK("prezero on", spool_writer_set_prezero(w, chunk), 0);
  snprintf(seg, SPOOL_SEGMENT_NAME_MAX, "%s", spool_writer_segment(w));
  return w;
}

/* Small batches lay zeros to the next chunk boundary, so the file only
 * grows once per chunk; a scan of the live file (as after a crash: no
 * close to cut the zeros) finds every record and no torn tail, and a
 * repairing scan cuts the zeros; close cuts them too. */
static void test_writer_prezero(void **state) {
  enum { CHUNK = 64 * 1024, N = 40 };
  char dir[64], copy[64];
  tmpdir_make(dir);
  tmpdir_make(copy);
  char seg[SPOOL_SEGMENT_NAME_MAX];
  struct spool_writer *w = prezero_writer(dir, CHUNK, seg);
  struct msg_fixture fx[N];
  uint64_t ids[N];
  uint64_t grew = 0, last_size = file_size(dir, seg);
  for (size_t i = 0; i < N; i++) {
    fixture_make(&fx[i], &msg_cases[1], i); /* 100-byte body, 3 rcpts */
    commit_one(w, &fx[i], 1, 10 + i);
    ids[i] = fx[i].m.queue_id;
    uint64_t size = file_size(dir, seg);
    CHECK("a whole number of chunks", size % CHUNK, 0);
    CHECK("records fit", spool_writer_offset(w) <= size, 1);
    grew += size != last_size;
    last_size = size;
  }
  CHECK("grew once for 40 small batches", grew, 1);
  CHECK("zeros past the records", last_size > spool_writer_offset(w), 1);

  /* A crash now: the zeros stay. Copy the live file into another spool. */
  struct buf bytes = {0};
  file_read(dir, seg, &bytes);
  char segdir[128];
  snprintf(segdir, sizeof segdir, "%s/seg", copy);
  assert_int_equal(mkdir(segdir, 0700), 0);
  file_write(copy, seg, bytes.data, bytes.len);
  check_scan_ids("crash copy, read-only", copy, 0, ids, N, 0);
  CHECK("read-only scan leaves the file", file_size(copy, seg), bytes.len);
  check_scan_ids("crash copy, repair", copy, 1, ids, N, 0);
  CHECK("repair cuts the zeros", file_size(copy, seg), spool_writer_offset(w));

  /* A torn record followed by zeros is still torn. */
  bytes.data[spool_writer_offset(w) - 1] ^= 0x40;
  file_write(copy, seg, bytes.data, bytes.len);
  check_scan_ids("flipped last record + zeros", copy, 0, ids, N - 1, 1);

  uint64_t durable = spool_writer_offset(w);
  spool_writer_close(w);
  CHECK("close cuts the zeros", file_size(dir, seg), durable);
  check_scan_ids("after close", dir, 0, ids, N, 0);
  buf_free(&bytes);
  for (size_t i = 0; i < N; i++) {
    fixture_free(&fx[i]);
  }
  tmpdir_remove(dir);
  tmpdir_remove(copy);
}

/* A batch bigger than chunk/16 lays no zeros: the file just grows (large
 * messages pay a copy and a disk write per zero byte). */
static void test_writer_prezero_big_batch(void **state) {
  enum { CHUNK = 64 * 1024 };
  char dir[64];
  tmpdir_make(dir);
  char seg[SPOOL_SEGMENT_NAME_MAX];
  struct spool_writer *w = prezero_writer(dir, CHUNK, seg);
  struct msg_fixture big;
  const struct msg_case c = {"8 KiB", "a@example.com", NULL, 1, NULL, 8192, 0,
                             NULL};
  fixture_make(&big, &c, 0);
  uint64_t before = spool_writer_offset(w);
  size_t len = commit_one(w, &big, 1, 1);
  CHECK("batch = records", len, spool_writer_offset(w) - before);
  CHECK("no zeros in the file", file_size(dir, seg), spool_writer_offset(w));
  /* A small one after it lays zeros again. */
  struct msg_fixture small;
  fixture_make(&small, &msg_cases[0], 1);
  commit_one(w, &small, 1, 2);
  CHECK("zeros to the chunk boundary", file_size(dir, seg), CHUNK);
  uint64_t ids[2] = {big.m.queue_id, small.m.queue_id};
  check_scan_ids("both read", dir, 0, ids, 2, 0);
  spool_writer_close(w);
  fixture_free(&big);
  fixture_free(&small);
  tmpdir_remove(dir);
}

/* A batch that laid zeros and failed with ENOSPC: the file goes back to
 * its durable length, pre-zeroing turns itself off (the zeros may be what
 * did not fit) and the next batch, in a new segment, has none. */
static void test_writer_prezero_enospc(void **state) {
  enum { CHUNK = 64 * 1024 };
  char dir[64];
  tmpdir_make(dir);
  char seg[SPOOL_SEGMENT_NAME_MAX];
  struct spool_writer *w = prezero_writer(dir, CHUNK, seg);
  static struct done_log log;
  struct msg_fixture fx[3];
  for (size_t i = 0; i < 3; i++) {
    fixture_make(&fx[i], &msg_cases[0], i);
  }
  uint64_t durable = spool_writer_offset(w);
  log.num = 0;
  assert_int_equal(add_messages(w, fx, 1, 5, 1), 0);
  struct spool_flush f;
  assert_int_equal(spool_writer_flush_begin(w, &f), 1);
  CHECK("the batch lays zeros", f.len > spool_writer_offset(w), 1);
  write_batch(&f, f.len / 2); /* the disk filled up half-way */
  spool_writer_flush_done(w, -ENOSPC, done_cb, &log);
  CHECK("refused", log.errs[0], -ENOSPC);
  CHECK("cut back", file_size(dir, seg), durable);
  size_t len = commit_one(w, &fx[1], 1, 2);
  CHECK("new segment", strcmp(spool_writer_segment(w), seg) != 0, 1);
  uint64_t header = file_size(dir, spool_writer_segment(w)) - len;
  CHECK("batch = records", len, spool_writer_offset(w) - header);
  CHECK("no zeros any more", file_size(dir, spool_writer_segment(w)),
        spool_writer_offset(w));
  uint64_t ids[1] = {fx[1].m.queue_id};
  spool_writer_close(w);
  check_scan_ids("only the acked one", dir, 0, ids, 1, 0);
  for (size_t i = 0; i < 3; i++) {
    fixture_free(&fx[i]);
  }
  tmpdir_remove(dir);
}

/* ---- crash consistency ---- */

/* make_acked writes `num` acknowledged messages into a fresh spool and
 * returns the segment's name and bytes. */
static void make_acked(const char *dir, size_t num, uint64_t *ids,
                       char seg[SPOOL_SEGMENT_NAME_MAX], struct buf *bytes) {
  struct spool_writer *w = spool_writer_open(dir, 0, 0);
  assert_non_null(w);
  static struct done_log log;
  log.num = 0;
  for (size_t i = 0; i < num; i++) {
    struct msg_fixture f;
    fixture_make(&f, &msg_cases[i % 3], 0);
    assert_int_equal(add_messages(w, &f, 1, 77, i), 0);
    ids[i] = f.m.queue_id;
    assert_int_equal(spool_writer_sync_flush(w, done_cb, &log), 0);
    fixture_free(&f);
  }
  snprintf(seg, SPOOL_SEGMENT_NAME_MAX, "%s", spool_writer_segment(w));
  spool_writer_close(w);
  file_read(dir, seg, bytes);
}

static void test_scan_torn_tail_every_cut(void **state) {
  char dir[64], seg[SPOOL_SEGMENT_NAME_MAX];
  tmpdir_make(dir);
  enum { N = 5 };
  uint64_t ids[N];
  struct buf base = {0}, extra = {0}, file = {0};
  make_acked(dir, N, ids, seg, &base);
  encode_record(0, &extra); /* a record that never got its fdatasync */
  for (size_t cut = 0; cut < extra.len; cut++) {
    char label[64];
    snprintf(label, sizeof label, "cut at %zu", cut);
    buf_reset(&file);
    buf_append(&file, base.data, base.len);
    buf_append(&file, extra.data, cut);
    file_write(dir, seg, file.data, file.len);
    check_scan_ids(label, dir, 0, ids, N, cut > 0); /* read-only first */
    CHECK(label, file_size(dir, seg), file.len);
    check_scan_ids(label, dir, 1, ids, N, cut > 0);
    CHECK(label, file_size(dir, seg), base.len);
    check_scan_ids(label, dir, 0, ids, N, 0);
  }
  buf_free(&base);
  buf_free(&extra);
  buf_free(&file);
  tmpdir_remove(dir);
}

static void test_scan_garbage_tail(void **state) {
  static const struct {
    const char *name;
    const char *bytes;
    size_t len;
    int torn; /* 0: all zeros, a pre-zeroed segment's clean end */
  } cases[] = {
      {"zeros", "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 26, 0},
      {"zeros, then one byte", "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x01",
       22, 1},
      {"text", "From: someone\r\n\r\nhello\r\n", 24, 1},
      {"magic only", "PSR1", 4, 1},
      {"huge length", "PSR1\x02\0\0\0\xff\xff\xff\x7f", 12, 1},
      {"DONE record with a bad checksum", NULL, 0, 1},
  };
  char dir[64], seg[SPOOL_SEGMENT_NAME_MAX];
  tmpdir_make(dir);
  enum { N = 3 };
  uint64_t ids[N];
  struct buf base = {0}, file = {0};
  make_acked(dir, N, ids, seg, &base);
  for (size_t i = 0; i < NUM(cases); i++) {
    buf_reset(&file);
    buf_append(&file, base.data, base.len);
    if (cases[i].bytes) {
      buf_append(&file, cases[i].bytes, cases[i].len);
    } else {
      size_t at = file.len;
      encode_record(1, &file);
      file.data[at + 20] ^= 1; /* in the payload */
    }
    file_write(dir, seg, file.data, file.len);
    check_scan_ids(cases[i].name, dir, 1, ids, N, cases[i].torn);
    CHECK(cases[i].name, file_size(dir, seg), base.len); /* cut either way */
  }
  buf_free(&base);
  buf_free(&file);
  tmpdir_remove(dir);
}

static void test_scan_flipped_last_record(void **state) {
  char dir[64], seg[SPOOL_SEGMENT_NAME_MAX];
  tmpdir_make(dir);
  enum { N = 4 };
  uint64_t ids[N];
  struct buf base = {0};
  make_acked(dir, N, ids, seg, &base);
  struct spool_scan scan;
  assert_int_equal(spool_scan(dir, 0, &scan, NULL, 0), 0);
  uint64_t last_off = scan.entries[N - 1].offset;
  uint64_t last_len = scan.entries[N - 1].record_len;
  spool_scan_free(&scan);
  /* Flip one byte in the last record's payload: the checksum catches it. */
  base.data[last_off + last_len - 1] ^= 0x20;
  file_write(dir, seg, base.data, base.len);
  check_scan_ids("flipped, read-only", dir, 0, ids, N - 1, 1);
  check_scan_ids("flipped, repair", dir, 1, ids, N - 1, 1);
  CHECK("truncated to the last good record", file_size(dir, seg), last_off);
  buf_free(&base);
  tmpdir_remove(dir);
}

static void test_scan_empty_segments(void **state) {
  char dir[64], path[128];
  tmpdir_make(dir);
  struct spool_scan scan;
  snprintf(path, sizeof path, "%s/missing", dir);
  CHECK("missing dir", spool_scan(path, 0, &scan, NULL, 0), 0);
  CHECK("missing dir entries", scan.num_entries, 0);
  spool_scan_free(&scan);

  snprintf(path, sizeof path, "%s/seg", dir);
  assert_int_equal(mkdir(path, 0700), 0);
  struct buf hdr = {0};
  assert_int_equal(spool_segment_header_encode(&hdr, 1, 1), 0);
  file_write(dir, "00-00000001.seg", NULL, 0);      /* created, never written */
  file_write(dir, "01-00000001.seg", hdr.data, 10); /* header torn */
  file_write(dir, "notes.txt", (const uint8_t *)"x", 1); /* not a segment */
  assert_int_equal(spool_scan(dir, 0, &scan, NULL, 0), 0);
  CHECK("segments", scan.num_segments, 2);
  CHECK("torn", scan.num_torn, 2);
  CHECK("entries", scan.num_entries, 0);
  spool_scan_free(&scan);
  CHECK("read-only keeps files", count_segments(dir), 2);
  assert_int_equal(spool_scan(dir, 1, &scan, NULL, 0), 0);
  CHECK("torn", scan.num_torn, 2);
  spool_scan_free(&scan);
  CHECK("repair removes headerless segments", count_segments(dir), 0);

  /* A segment that starts with something else is left alone: an error. */
  struct buf done = {0};
  encode_record(1, &done);
  file_write(dir, "02-00000001.seg", done.data, done.len);
  char err[256] = "";
  CHECK("foreign segment", spool_scan(dir, 1, &scan, err, sizeof err), -1);
  CHECK("error text", strstr(err, "02-00000001.seg") != NULL, 1);
  CHECK("file kept", file_size(dir, "02-00000001.seg"), done.len);
  buf_free(&done);
  buf_free(&hdr);
  tmpdir_remove(dir);
}

static void test_scan_done_counting(void **state) {
  char dir[64];
  tmpdir_make(dir);
  struct spool_writer *w = spool_writer_open(dir, 3, 0);
  assert_non_null(w);
  static const struct msg_case c3 = {"3 rcpts", "a@b", NULL, 3,
                                     NULL,      5,     0,    NULL};
  static const struct msg_case c1 = {"1 rcpt", "a@b", NULL, 1,
                                     NULL,     5,     0,    NULL};
  struct msg_fixture a, b, c;
  fixture_make(&a, &c3, 0);
  fixture_make(&b, &c1, 0);
  fixture_make(&c, &c3, 0);
  assert_int_equal(add_messages(w, &a, 1, 9, 1), 0);
  assert_int_equal(add_messages(w, &b, 1, 9, 2), 0);
  assert_int_equal(add_messages(w, &c, 1, 9, 3), 0);
  static const struct {
    int which; /* 0 a, 1 b, 2 c, 3 unknown id, 4 unknown id above all */
    uint32_t rcpt;
  } dones[] = {{0, 0}, {0, 2}, {0, 0}, {1, 0}, {2, 5}, {3, 0}, {4, 0}};
  /* 4: a DONE whose MESSAGE is gone (runtime reclaim deletes the MESSAGE's
   * segment first) still raises max_queue_id, so no new message reuses
   * its id and inherits it. */
  uint64_t qids[] = {a.m.queue_id, b.m.queue_id, c.m.queue_id, 12345,
                     c.m.queue_id + 1000};
  for (size_t i = 0; i < NUM(dones); i++) {
    struct spool_done d = {qids[dones[i].which], dones[i].rcpt,
                           SPOOL_OUTCOME_DELIVERED, 10};
    assert_int_equal(spool_writer_add_done(w, &d, NULL), 0);
  }
  assert_int_equal(spool_writer_sync_flush(w, NULL, NULL), 0);
  spool_writer_close(w);

  struct spool_scan scan;
  assert_int_equal(spool_scan(dir, 0, &scan, NULL, 0), 0);
  CHECK("entries", scan.num_entries, 3);
  CHECK("distinct dones", scan.num_dones, 3);
  CHECK("a done", spool_scan_find(&scan, a.m.queue_id)->num_done, 2);
  CHECK("b done", spool_scan_find(&scan, b.m.queue_id)->num_done, 1);
  CHECK("b fully", spool_scan_find(&scan, b.m.queue_id)->num_rcpts, 1);
  CHECK("c done", spool_scan_find(&scan, c.m.queue_id)->num_done, 0);
  CHECK("a#0", spool_scan_rcpt_done(&scan, a.m.queue_id, 0), 1);
  CHECK("a#1", spool_scan_rcpt_done(&scan, a.m.queue_id, 1), 0);
  CHECK("a#2", spool_scan_rcpt_done(&scan, a.m.queue_id, 2), 1);
  CHECK("unknown", spool_scan_find(&scan, 12345) == NULL, 1);
  CHECK("max id", scan.max_queue_id, c.m.queue_id + 1000);
  spool_scan_free(&scan);
  fixture_free(&a);
  fixture_free(&b);
  fixture_free(&c);
  tmpdir_remove(dir);
}

/* ---- reclamation ---- */

/* One segment file of a reclamation case: its name and its records after
 * the header, as tokens "M<x><n>" (MESSAGE x with n recipients),
 * "D<x><r>" (DONE for recipient r of x), "H<x><g>" and "R<x><g>" (HOLD and
 * RELEASE of x, generation g); x is a letter naming a queue id. */
struct seg_spec {
  const char *name;
  const char *recs;
};

#define RECLAIM_MAX_SEGS 5

struct reclaim_case {
  const char *label;
  struct seg_spec segs[RECLAIM_MAX_SEGS];
  const char *kept; /* per segment: '1' kept by a repair scan, '0' reclaimed */
  size_t want_entries;
  size_t want_dones;
};

static const struct reclaim_case reclaim_cases[] = {
    {"fully done segment is reclaimed",
     {{"00-00000001.seg", "MA2 DA0 DA1"}, {"00-00000002.seg", ""}},
     "01",
     0,
     0},
    {"one pending recipient keeps the segment",
     {{"00-00000001.seg", "MA2 DA1"}, {"00-00000002.seg", ""}},
     "11",
     1,
     1},
    {"DONE for a message pending elsewhere keeps the segment",
     {{"00-00000001.seg", "MA1 DA0 DB0"},
      {"00-00000002.seg", ""},
      {"01-00000001.seg", "MB2"},
      {"01-00000002.seg", ""}},
     "1111",
     2,
     2},
    {"DONE for a finished message whose segment stays is kept",
     {{"00-00000001.seg", "MA1 MC1"},
      {"00-00000002.seg", "DA0"},
      {"00-00000003.seg", ""}},
     "111",
     2,
     1},
    {"newest segment of a thread is kept though finished",
     {{"00-00000001.seg", "MA1 DA0"}},
     "1",
     1,
     1},
    {"only the newest of a thread's finished segments is kept",
     {{"00-00000001.seg", "MA1 DA0"},
      {"00-00000002.seg", "MB1 DB0"},
      {"00-00000007.seg", "MC1 DC0"}},
     "001",
     1,
     1},
    {"message whose DONE is in the newest segment waits",
     {{"00-00000001.seg", "MA1"}, {"00-00000002.seg", "DA0"}},
     "11",
     1,
     1},
    {"DONE in another thread's newest segment keeps the message",
     {{"00-00000001.seg", "MA1"},
      {"00-00000002.seg", ""},
      {"01-00000004.seg", "DA0"}},
     "111",
     1,
     1},
    {"segments finishing each other go together",
     {{"00-00000001.seg", "MA1 DB0"},
      {"00-00000002.seg", ""},
      {"01-00000001.seg", "MB1 DA0"},
      {"01-00000002.seg", ""}},
     "0101",
     0,
     0},
    {"group reaching a pending message stays whole",
     {{"00-00000001.seg", "MA1 DB0"},
      {"00-00000002.seg", "DA0 MC2 DC0"},
      {"01-00000001.seg", "MB1 DC1"},
      {"01-00000002.seg", "MD1"}},
     "1111",
     4,
     4},
    {"DONE for an unknown message goes with its segment",
     {{"00-00000001.seg", "DZ0 DZ3"}, {"00-00000002.seg", ""}},
     "01",
     0,
     0},
    {"empty old segments are reclaimed",
     {{"00-00000001.seg", ""},
      {"00-00000002.seg", ""},
      {"00-00000003.seg", ""}},
     "001",
     0,
     0},
    {"duplicate DONEs and a DONE past the recipients",
     {{"00-00000001.seg", "MA2 DA0 DA0 DA1 DA9"}, {"00-00000002.seg", ""}},
     "01",
     0,
     0},
    {"a file without a segment name is never reclaimed",
     {{"00-00000001.seg", "DA0"}, {"00-00000002.seg", ""}, {"old.seg", "MA1"}},
     "111",
     1,
     1},
};

static uint64_t reclaim_id(char letter) {
  return ID(1000 + (letter - 'A'), 0, 7);
}

/* reclaim_write_segment writes one segment file of a case. */
static void reclaim_write_segment(const char *dir, const struct seg_spec *sp) {
  unsigned thread = 0;
  uint32_t seq = 99;
  (void)spool_segment_name_parse(sp->name, &thread, &seq);
  struct buf b = {0};
  assert_int_equal(spool_segment_header_encode(&b, thread, seq), 0);
  for (const char *p = sp->recs; *p != '\0';) {
    if (*p == ' ') {
      p++;
      continue;
    }
    char kind = p[0], letter = p[1];
    char *end;
    unsigned long n = strtoul(p + 2, &end, 10);
    p = end;
    if (kind == 'M') {
      struct msg_case c = {"m", "a@b", NULL, n, NULL, 5, 0, NULL};
      struct msg_fixture f;
      fixture_make(&f, &c, reclaim_id(letter));
      assert_int_equal(spool_message_encode(&b, &f.m), 0);
      fixture_free(&f);
    } else if (kind == 'H' || kind == 'R') {
      struct spool_hold h = {reclaim_id(letter), (uint32_t)n, kind == 'H', 1};
      assert_int_equal(spool_hold_encode(&b, &h), 0);
    } else {
      assert_int_equal(kind, 'D');
      struct spool_done d = {reclaim_id(letter), (uint32_t)n,
                             SPOOL_OUTCOME_DELIVERED, 1};
      assert_int_equal(spool_done_encode(&b, &d), 0);
    }
  }
  file_write(dir, sp->name, b.data, b.len);
  buf_free(&b);
}

static int seg_exists(const char *dir, const char *name) {
  char path[256];
  struct stat st;
  snprintf(path, sizeof path, "%s/seg/%s", dir, name);
  return stat(path, &st) == 0;
}

/* reclaim_check_scan scans and checks the counts of a case. */
static void reclaim_check_scan(const char *label, const char *dir, int repair,
                               size_t want_reclaimed, size_t want_entries,
                               size_t want_dones) {
  struct spool_scan scan;
  char err[256] = "";
  if (spool_scan(dir, repair, &scan, err, sizeof err) != 0) {
    fail_msg("%s: scan: %s", label, err);
  }
  CHECK(label, scan.num_reclaimed, want_reclaimed);
  CHECK(label, scan.num_entries, want_entries);
  CHECK(label, scan.num_dones, want_dones);
  for (size_t i = 0; i < scan.num_entries; i++) {
    CHECK(label, seg_exists(dir, scan.entries[i].segment), 1);
  }
  spool_scan_free(&scan);
}

/* reclaim_check_next_seq: a writer opened now must take a sequence number
 * above every one the case had for that thread. */
static void reclaim_check_next_seq(const char *label, const char *dir,
                                   const struct reclaim_case *c) {
  for (size_t i = 0; i < RECLAIM_MAX_SEGS && c->segs[i].name; i++) {
    unsigned thread, t;
    uint32_t seq, max_seq = 0;
    if (!spool_segment_name_parse(c->segs[i].name, &thread, &seq)) {
      continue;
    }
    for (size_t j = 0; j < RECLAIM_MAX_SEGS && c->segs[j].name; j++) {
      if (spool_segment_name_parse(c->segs[j].name, &t, &seq) && t == thread &&
          seq > max_seq) {
        max_seq = seq;
      }
    }
    struct spool_writer *w = spool_writer_open(dir, thread, 0);
    assert_non_null(w);
    char want[SPOOL_SEGMENT_NAME_MAX];
    snprintf(want, sizeof want, "%02x-%08x.seg", thread, max_seq + 1);
    if (strcmp(spool_writer_segment(w), want) != 0) {
      fail_msg("%s: writer segment: got %s, want %s", label,
               spool_writer_segment(w), want);
    }
    spool_writer_close(w);
    char path[256];
    snprintf(path, sizeof path, "%s/seg/%s", dir, want);
    assert_int_equal(unlink(path), 0);
  }
}

static void test_scan_reclaim(void **state) {
  for (size_t i = 0; i < NUM(reclaim_cases); i++) {
    const struct reclaim_case *c = &reclaim_cases[i];
    char dir[64], path[128];
    tmpdir_make(dir);
    snprintf(path, sizeof path, "%s/seg", dir);
    assert_int_equal(mkdir(path, 0700), 0);
    size_t num = 0, num_gone = 0, all_entries = 0;
    for (; num < RECLAIM_MAX_SEGS && c->segs[num].name; num++) {
      reclaim_write_segment(dir, &c->segs[num]);
      num_gone += c->kept[num] == '0';
      for (const char *p = c->segs[num].recs; (p = strchr(p, 'M')); p++) {
        all_entries++;
      }
    }
    CHECK(c->label, strlen(c->kept), num);
    /* The CLI's read-only scan sees everything and deletes nothing. */
    struct spool_scan scan;
    assert_int_equal(spool_scan(dir, 0, &scan, NULL, 0), 0);
    CHECK(c->label, scan.num_reclaimed, 0);
    CHECK(c->label, scan.num_entries, all_entries);
    spool_scan_free(&scan);
    CHECK(c->label, count_segments(dir), num);

    reclaim_check_scan(c->label, dir, 1, num_gone, c->want_entries,
                       c->want_dones);
    for (size_t k = 0; k < num; k++) {
      if (seg_exists(dir, c->segs[k].name) != (c->kept[k] == '1')) {
        fail_msg("%s: %s: got %s, want %s", c->label, c->segs[k].name,
                 c->kept[k] == '1' ? "reclaimed" : "kept",
                 c->kept[k] == '1' ? "kept" : "reclaimed");
      }
    }
    /* Stable: nothing more to reclaim, the same result read-only. */
    reclaim_check_scan(c->label, dir, 1, 0, c->want_entries, c->want_dones);
    reclaim_check_scan(c->label, dir, 0, 0, c->want_entries, c->want_dones);
    reclaim_check_next_seq(c->label, dir, c);
    tmpdir_remove(dir);
  }
}

/* A repair scan that fails (a foreign segment) reclaims nothing, and the
 * ids of reclaimed messages still raise max_queue_id. */
static void test_scan_reclaim_edges(void **state) {
  char dir[64], path[128];
  tmpdir_make(dir);
  snprintf(path, sizeof path, "%s/seg", dir);
  assert_int_equal(mkdir(path, 0700), 0);
  static const struct seg_spec segs[] = {
      {"00-00000001.seg", "MA1 DA0 MB1 DB0"},
      {"00-00000002.seg", ""},
  };
  for (size_t i = 0; i < NUM(segs); i++) {
    reclaim_write_segment(dir, &segs[i]);
  }
  struct buf done = {0};
  encode_record(1, &done);
  file_write(dir, "02-00000001.seg", done.data, done.len);
  struct spool_scan scan;
  char err[256] = "";
  CHECK("foreign segment", spool_scan(dir, 1, &scan, err, sizeof err), -1);
  CHECK("nothing reclaimed", seg_exists(dir, segs[0].name), 1);
  snprintf(path, sizeof path, "%s/seg/02-00000001.seg", dir);
  assert_int_equal(unlink(path), 0);

  assert_int_equal(spool_scan(dir, 1, &scan, err, sizeof err), 0);
  CHECK("reclaimed", scan.num_reclaimed, 1);
  CHECK("segments read", scan.num_segments, 2);
  CHECK("entries", scan.num_entries, 0);
  CHECK("max id of reclaimed", scan.max_queue_id, reclaim_id('B'));
  CHECK("gone", seg_exists(dir, segs[0].name), 0);
  spool_scan_free(&scan);
  buf_free(&done);
  tmpdir_remove(dir);
}

/* ---- hold state ---- */

struct hold_case {
  const char *label;
  struct seg_spec segs[RECLAIM_MAX_SEGS];
  const char *kept; /* as in reclaim_case */
  /* Per message after a read-only scan: "<x><held><gen>" tokens, e.g.
   * "A1.3 B0.0" (A held at generation 3, B never held). */
  const char *want;
};

static const struct hold_case hold_cases[] = {
    {"no record: not held",
     {{"00-00000001.seg", "MA1"}, {"00-00000002.seg", ""}},
     "11",
     "A0.0"},
    {"hold in the message's segment",
     {{"00-00000001.seg", "MA1 HA1"}, {"00-00000002.seg", ""}},
     "11",
     "A1.1"},
    {"hold, release, hold in one segment: the last",
     {{"00-00000001.seg", "MA1 HA1 RA2 HA3"}, {"00-00000002.seg", ""}},
     "11",
     "A1.3"},
    {"release written before the hold it overrides still wins",
     {{"00-00000001.seg", "MA1 RA2 HA1"}, {"00-00000002.seg", ""}},
     "11",
     "A0.2"},
    {"two threads: the higher generation wins, not scan order",
     {{"00-00000001.seg", "MA1 RA2"},
      {"00-00000002.seg", ""},
      {"01-00000001.seg", "HA1"},
      {"01-00000002.seg", ""}},
     "1111",
     "A0.2"},
    {"two threads: later thread's segment holds the older hold",
     {{"00-00000001.seg", "MA1 HA3"},
      {"00-00000002.seg", ""},
      {"01-00000005.seg", "RA2"},
      {"01-00000006.seg", ""}},
     "1111",
     "A1.3"},
    {"same generation: the record read last wins",
     {{"00-00000001.seg", "MA1 HA1"},
      {"00-00000002.seg", ""},
      {"01-00000001.seg", "RA1"},
      {"01-00000002.seg", ""}},
     "1111",
     "A0.1"},
    {"same thread, later sequence wins a tie",
     {{"00-00000001.seg", "MA1 RA4"},
      {"00-00000002.seg", "HA4"},
      {"00-00000003.seg", ""}},
     "111",
     "A1.4"},
    {"a held message is pending: its segments stay",
     {{"00-00000001.seg", "MA2 DA0 MB1 DB0"},
      {"00-00000002.seg", "HA1"},
      {"00-00000003.seg", ""}},
     "111",
     "A1.1 B0.0"},
    {"a hold in another thread's old segment keeps it",
     {{"00-00000001.seg", "MA1"},
      {"00-00000002.seg", ""},
      {"01-00000001.seg", "HA1 MB1 DB0"},
      {"01-00000002.seg", ""}},
     "1111",
     "A1.1 B0.0"},
    {"hold-only segment of a finished message is reclaimed",
     {{"00-00000001.seg", "MA1 DA0"},
      {"00-00000002.seg", "HA1 RA2 HA3"},
      {"00-00000003.seg", ""}},
     "001",
     "A1.3"},
    {"held, then deleted: finished, reclaimed",
     {{"00-00000001.seg", "MA2 HA1 DA0 DA1"}, {"00-00000002.seg", ""}},
     "01",
     "A1.1"},
    {"hold for an unknown message goes with its segment",
     {{"00-00000001.seg", "HZ1 RZ2"}, {"00-00000002.seg", ""}},
     "01",
     ""},
    {"hold for a finished message whose segment is the newest waits",
     {{"00-00000001.seg", "MA1 DA0"}, {"00-00000002.seg", "HA1"}},
     "11",
     "A1.1"},
};

/* hold_check_want checks every "<x><held>.<gen>" token of want. */
static void hold_check_want(const char *label, const char *dir,
                            const char *want) {
  struct spool_scan scan;
  assert_int_equal(spool_scan(dir, 0, &scan, NULL, 0), 0);
  for (const char *p = want; *p != '\0';) {
    if (*p == ' ') {
      p++;
      continue;
    }
    char letter = p[0];
    uint64_t id = reclaim_id(letter);
    int held = p[1] == '1';
    char *end;
    unsigned long gen = strtoul(p + 3, &end, 10);
    p = end;
    const struct spool_entry *e = spool_scan_find(&scan, id);
    if (e == NULL) {
      fail_msg("%s: message %c not found", label, letter);
    }
    CHECK(label, spool_scan_held(&scan, id), held);
    CHECK(label, e->held, held);
    CHECK(label, e->hold_gen, gen);
  }
  spool_scan_free(&scan);
}

static void test_scan_hold_state(void **state) {
  for (size_t i = 0; i < NUM(hold_cases); i++) {
    const struct hold_case *c = &hold_cases[i];
    char dir[64], path[128];
    tmpdir_make(dir);
    snprintf(path, sizeof path, "%s/seg", dir);
    assert_int_equal(mkdir(path, 0700), 0);
    size_t num = 0;
    for (; num < RECLAIM_MAX_SEGS && c->segs[num].name; num++) {
      reclaim_write_segment(dir, &c->segs[num]);
    }
    CHECK(c->label, strlen(c->kept), num);
    hold_check_want(c->label, dir, c->want);
    struct spool_scan scan;
    char err[256] = "";
    if (spool_scan(dir, 1, &scan, err, sizeof err) != 0) {
      fail_msg("%s: repair scan: %s", c->label, err);
    }
    for (size_t k = 0; k < scan.num_entries; k++) { /* kept: state intact */
      const struct spool_entry *e = &scan.entries[k];
      CHECK(c->label, spool_scan_held(&scan, e->queue_id), e->held);
    }
    spool_scan_free(&scan);
    for (size_t k = 0; k < num; k++) {
      if (seg_exists(dir, c->segs[k].name) != (c->kept[k] == '1')) {
        fail_msg("%s: %s: got %s, want %s", c->label, c->segs[k].name,
                 c->kept[k] == '1' ? "reclaimed" : "kept",
                 c->kept[k] == '1' ? "kept" : "reclaimed");
      }
    }
    if (strchr(c->kept, '0') == NULL) { /* nothing went: same state */
      hold_check_want(c->label, dir, c->want);
    }
    tmpdir_remove(dir);
  }
}

/* ---- lock ---- */

static void test_spool_lock(void **state) {
  char dir[64], path[128], err[256];
  tmpdir_make(dir);
  snprintf(path, sizeof path, "%s/spool", dir); /* created by the lock */
  int fd1 = -1, fd2 = -1, fd3 = -1;
  CHECK("first", spool_lock(path, &fd1, err, sizeof err), 0);
  assert_true(fd1 >= 0);
  struct stat st;
  snprintf(path, sizeof path, "%s/spool/lock", dir);
  assert_int_equal(stat(path, &st), 0);
  CHECK("lock file mode", st.st_mode & 0777, 0600);
  snprintf(path, sizeof path, "%s/spool", dir);
  CHECK("busy", spool_lock(path, &fd2, err, sizeof err), 1);
  CHECK("busy says so", strstr(err, "locked") != NULL, 1);
  CHECK("busy: no fd", fd2, -1);
  /* A dup shares the open file description: the lock lasts until the
   * last descriptor goes. */
  int dup1 = dup(fd1);
  close(fd1);
  CHECK("held by the dup", spool_lock(path, &fd2, err, sizeof err), 1);
  close(dup1);
  CHECK("free again", spool_lock(path, &fd3, err, sizeof err), 0);
  close(fd3);
  /* A file where the directory should be is an error. */
  snprintf(path, sizeof path, "%s/file", dir);
  int f = open(path, O_WRONLY | O_CREAT, 0600);
  assert_true(f >= 0);
  close(f);
  err[0] = '\0';
  CHECK("not a directory", spool_lock(path, &fd2, err, sizeof err), -1);
  CHECK("error text", strstr(err, "file") != NULL, 1);
  tmpdir_remove(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_queue_id_format_parse),
      cmocka_unit_test(test_queue_id_first_id),
      cmocka_unit_test(test_queue_id_monotonic),
      cmocka_unit_test(test_codec_roundtrip),
      cmocka_unit_test(test_codec_encode_rejects),
      cmocka_unit_test(test_codec_truncation),
      cmocka_unit_test(test_codec_corruption),
      cmocka_unit_test(test_message_decode_bad),
      cmocka_unit_test(test_record_checksum_portable),
      cmocka_unit_test(test_done_and_segment_codec),
      cmocka_unit_test(test_writer_batches),
      cmocka_unit_test(test_writer_done_batch),
      cmocka_unit_test(test_writer_rotation),
      cmocka_unit_test(test_writer_rejects),
      cmocka_unit_test(test_writer_fault_injection),
      cmocka_unit_test(test_writer_prezero),
      cmocka_unit_test(test_writer_prezero_big_batch),
      cmocka_unit_test(test_writer_prezero_enospc),
      cmocka_unit_test(test_scan_torn_tail_every_cut),
      cmocka_unit_test(test_scan_garbage_tail),
      cmocka_unit_test(test_scan_flipped_last_record),
      cmocka_unit_test(test_scan_empty_segments),
      cmocka_unit_test(test_scan_done_counting),
      cmocka_unit_test(test_scan_reclaim),
      cmocka_unit_test(test_scan_reclaim_edges),
      cmocka_unit_test(test_hold_codec),
      cmocka_unit_test(test_writer_hold_batch),
      cmocka_unit_test(test_scan_hold_state),
      cmocka_unit_test(test_spool_lock),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
