/* tests/fuzz/fuzz_mta_sts.c — the MTA-STS policy and TXT record parsers
 * (policy/mta_sts.h), and the HTTPS response parser that carries policies
 * (crypto/https.h), all on the whole input.
 *
 * Invariants: a parsed policy has a known mode, max_age within the limit,
 * mx patterns that are host names or "*." host names and that match what
 * they stand for; written back in canonical form it parses to the same
 * policy (round trip). A parsed record begins with "v=STSv1;", its id is
 * 1..32 alphanumerics, and "v=STSv1; id=ID" parses back to it. The
 * response parser consumes only what it is given, gives the same outcome
 * whole and split in two, and never holds more body than allowed. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/https.h"
#include "policy/mta_sts.h"

#define FUZZ_MAX_BODY 256

static void check_policy(const uint8_t *data, size_t size) {
  static struct mta_sts_policy p, again;
  static char text[MTA_STS_MX_TEXT_LEN + 256];
  char err[MTA_STS_ERR_LEN];
  if (mta_sts_policy_parse(&p, err, sizeof(err), data, size) != 0) {
    return;
  }
  if (p.mode > MTA_STS_MODE_ENFORCE || p.max_age > MTA_STS_MAX_MAX_AGE ||
      p.num_mx > MTA_STS_MAX_MX ||
      (p.num_mx == 0 && p.mode != MTA_STS_MODE_NONE)) {
    abort();
  }
  int len = snprintf(text, sizeof(text),
                     "version: STSv1\nmode: %s\n"
                     "max_age: %u\n",
                     mta_sts_mode_name(p.mode), p.max_age);
  for (size_t i = 0; i < p.num_mx; i++) {
    const char *mx = mta_sts_policy_mx(&p, i);
    int wild = mx[0] == '*';
    if (!mta_sts_domain_valid(wild ? mx + 2 : mx) || (wild && mx[1] != '.')) {
      abort();
    }
    char host[MTA_STS_MAX_NAME + 8];
    snprintf(host, sizeof(host), "%s%s", wild ? "x" : "", wild ? mx + 1 : mx);
    if (!mta_sts_pattern_match(mx, host) || !mta_sts_mx_match(&p, host)) {
      abort();
    }
    len += snprintf(text + len, sizeof(text) - (size_t)len, "mx: %s\n", mx);
  }
  if (mta_sts_policy_parse(&again, err, sizeof(err), (const uint8_t *)text,
                           (size_t)len) != 0 ||
      again.mode != p.mode || again.max_age != p.max_age ||
      again.num_mx != p.num_mx) {
    abort();
  }
  for (size_t i = 0; i < p.num_mx; i++) {
    if (strcmp(mta_sts_policy_mx(&p, i), mta_sts_policy_mx(&again, i)) != 0) {
      abort();
    }
  }
}

static void check_txt(const uint8_t *data, size_t size) {
  char id[MTA_STS_MAX_ID + 1], again[MTA_STS_MAX_ID + 1];
  char err[MTA_STS_ERR_LEN];
  if (mta_sts_txt_parse(id, err, sizeof(err), data, size) != 0) {
    return;
  }
  size_t n = strlen(id);
  if (n == 0 || n > MTA_STS_MAX_ID || !mta_sts_txt_is_sts(data, size)) {
    abort();
  }
  char rec[64];
  int len = snprintf(rec, sizeof(rec), "v=STSv1; id=%s", id);
  if (mta_sts_txt_parse(again, err, sizeof(err), (const uint8_t *)rec,
                        (size_t)len) != 0 ||
      strcmp(id, again) != 0) {
    abort();
  }
}

/* run_parser feeds data[0..split) then the rest; the final outcome. */
static enum https_parse run_parser(struct https_parser *p, const uint8_t *data,
                                   size_t size, size_t split) {
  size_t off = 0;
  enum https_parse r = HTTPS_PARSE_NEED_MORE;
  for (int part = 0; part < 2; part++) {
    size_t end = part == 0 ? split : size;
    for (;;) {
      size_t used = 0;
      r = https_parser_feed(p, &used, data + off, end - off);
      if (used > end - off) {
        abort();
      }
      off += used;
      if (r != HTTPS_PARSE_HEAD) {
        break;
      }
      if (p->status < 200 || p->status > 599) {
        abort();
      }
    }
    if (r != HTTPS_PARSE_NEED_MORE) {
      return r;
    }
  }
  return https_parser_eof(p);
}

static void check_response(const uint8_t *data, size_t size) {
  struct https_parser whole, split;
  https_parser_init(&whole, FUZZ_MAX_BODY);
  https_parser_init(&split, FUZZ_MAX_BODY);
  enum https_parse a = run_parser(&whole, data, size, size);
  enum https_parse b = run_parser(&split, data, size, size / 2);
  if (a != b || whole.body.len > FUZZ_MAX_BODY ||
      (a == HTTPS_PARSE_DONE &&
       (whole.body.len != split.body.len ||
        (whole.body.len > 0 &&
         memcmp(whole.body.data, split.body.data, whole.body.len) != 0)))) {
    abort();
  }
  https_parser_cleanup(&whole);
  https_parser_cleanup(&split);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  check_policy(data, size);
  check_txt(data, size);
  check_response(data, size);
  return 0;
}
