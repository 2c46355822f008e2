/* tests/fuzz/fuzz_ctl.c — the control protocol on arbitrary bytes: the
 * input is cut into lines as a server and a client would, and each line is
 * parsed as a request and as a reply. What parses must format back (the
 * builders) to a line that parses to the same thing; an ERR text and an
 * OK count re-format to the very same bytes; so does an IMPORT line. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proto/ctl.h"

static void same_request(const struct ctl_request *a,
                         const struct ctl_request *b) {
  if (a->verb != b->verb || a->all != b->all || a->num_ids != b->num_ids ||
      strcmp(a->domain, b->domain) != 0 ||
      memcmp(a->ids, b->ids, a->num_ids * sizeof a->ids[0]) != 0) {
    abort();
  }
}

/* request_roundtrip: a parsed request formats to one line that parses to
 * the same request. */
static void request_roundtrip(const char *line, size_t len) {
  struct ctl_request r, again;
  const char *err = NULL;
  if (ctl_request_parse(&r, &err, line, len) != 0) {
    if (err == NULL) {
      abort();
    }
    return;
  }
  if (r.num_ids > CTL_MAX_IDS || strlen(r.domain) > CTL_MAX_DOMAIN) {
    abort();
  }
  struct buf out = {0};
  size_t line_len, consumed;
  if (ctl_request_format(&out, &r) != 0 ||
      ctl_line_next(&line_len, &consumed, (const char *)out.data, out.len) !=
          CTL_LINE_OK ||
      consumed != out.len ||
      ctl_request_parse(&again, &err, (const char *)out.data, line_len) != 0) {
    abort();
  }
  same_request(&r, &again);
  buf_free(&out);
}

/* reply_roundtrip: a parsed reply formats back to the same reply. */
static void reply_roundtrip(const char *line, size_t len) {
  struct ctl_reply r, again;
  const char *err = NULL;
  if (ctl_reply_parse(&r, &err, line, len) != 0) {
    if (err == NULL) {
      abort();
    }
    return;
  }
  struct buf out = {0};
  int rc = 0;
  if (r.kind == CTL_REPLY_ITEM && r.word != CTL_WORD_UNKNOWN) {
    rc = ctl_reply_item(&out, r.queue_id, r.word);
  } else if (r.kind == CTL_REPLY_OK) {
    rc = ctl_reply_ok(&out, r.count);
  } else if (r.kind == CTL_REPLY_ERR) {
    rc = ctl_reply_err(&out, r.text);
  }
  if (rc != 0) {
    abort();
  }
  if (out.len > 0) {
    if (ctl_reply_parse(&again, &err, (const char *)out.data, out.len - 1) !=
            0 ||
        again.kind != r.kind || again.queue_id != r.queue_id ||
        again.word != r.word || again.count != r.count ||
        strcmp(again.text, r.text) != 0) {
      abort();
    }
    /* OK and ERR lines have one spelling: the input's. */
    if (r.kind != CTL_REPLY_ITEM &&
        (out.len - 1 != len || memcmp(out.data, line, len) != 0)) {
      abort();
    }
  }
  buf_free(&out);
}

/* import_roundtrip: an IMPORT line formats back to the same bytes (its
 * one spelling, up to the verb's case). */
static void import_roundtrip(const char *line, size_t len) {
  uint64_t n = 0;
  const char *err = NULL;
  int r = ctl_import_parse(&n, &err, line, len);
  if (r < 0 && err == NULL) {
    abort();
  }
  if (r != 1) {
    return;
  }
  struct buf out = {0};
  if (n == 0 || ctl_import_format(&out, n) != 0 || out.len - 1 != len ||
      strncasecmp((const char *)out.data, line, len) != 0) {
    abort();
  }
  buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *in = (const char *)data;
  size_t off = 0;
  while (off < size) {
    size_t len, consumed;
    enum ctl_line_result r =
        ctl_line_next(&len, &consumed, in + off, size - off);
    if (r != CTL_LINE_OK) {
      if (r == CTL_LINE_TOO_LONG && size - off < CTL_MAX_LINE) {
        abort();
      }
      break;
    }
    if (consumed == 0 || consumed > size - off || len >= consumed ||
        consumed > CTL_MAX_LINE || in[off + consumed - 1] != '\n') {
      abort();
    }
    request_roundtrip(in + off, len);
    reply_roundtrip(in + off, len);
    import_roundtrip(in + off, len);
    off += consumed;
  }
  /* The whole input as one line (no framing), e.g. with NULs and LFs. */
  request_roundtrip(in, size);
  reply_roundtrip(in, size);
  return 0;
}
