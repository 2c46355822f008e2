/* tests/fuzz/fuzz_tlsrpt.c — the _smtp._tls TXT record parser
 * (policy/tlsrpt.h, RFC 8460 §3) on the whole input, and the JSON report
 * builder on the input as untrusted text (a server's reply).
 *
 * Invariants: a parsed record begins with "v=TLSRPTv1;", keeps at most
 * TLSRPT_MAX_URIS URIs, each mailto: one a plain ASCII mailbox with an
 * "@" and https: one starting with "https:"; written back in canonical
 * form ("v=TLSRPTv1;rua=" and the URIs, mailboxes percent-encoded where
 * §3 and RFC 6068 ask) it parses to the same URIs (round trip). The
 * report is one line of JSON without control octets, valid UTF-8, with
 * the reason's text present in escaped form. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "policy/tlsrpt.h"
#include "proto/smtp_addr.h"

/* canon_append writes one URI in the form the parser reads back. */
static size_t canon_append(char *out, size_t len, size_t n,
                           const struct tlsrpt_uri *u) {
  if (u->kind == TLSRPT_URI_HTTPS) {
    return n + (size_t)snprintf(out + n, len - n, "%s", u->text);
  }
  n += (size_t)snprintf(out + n, len - n, "mailto:");
  for (const char *p = u->text; *p != '\0' && n + 4 < len; p++) {
    if (strchr("%!;?,", *p) != NULL) {
      n += (size_t)snprintf(out + n, len - n, "%%%02X", (unsigned char)*p);
    } else {
      out[n++] = *p;
    }
  }
  out[n] = '\0';
  return n;
}

static void check_txt(const uint8_t *data, size_t size) {
  static struct tlsrpt_record rec, again;
  static char text[TLSRPT_MAX_URIS * (3 * TLSRPT_MAX_URI + 16) + 64];
  char err[TLSRPT_ERR_LEN];
  if (tlsrpt_txt_parse(&rec, err, sizeof(err), data, size) != 0) {
    return;
  }
  if (!tlsrpt_txt_is_tlsrpt(data, size) || rec.num_uris > TLSRPT_MAX_URIS) {
    abort();
  }
  for (size_t i = 0; i < rec.num_uris; i++) {
    const struct tlsrpt_uri *u = &rec.uris[i];
    if (u->kind == TLSRPT_URI_MAILTO) {
      if (strchr(u->text, '@') == NULL) {
        abort();
      }
      for (const char *p = u->text; *p != '\0'; p++) {
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) {
          abort();
        }
      }
    } else if (strncasecmp(u->text, "https:", 6) != 0) {
      abort();
    }
  }
  if (rec.num_uris == 0) {
    return;
  }
  /* As short as the input could have been: never over its limit. */
  size_t n = (size_t)snprintf(text, sizeof(text), "v=TLSRPTv1;rua=");
  for (size_t i = 0; i < rec.num_uris; i++) {
    if (i > 0) {
      text[n++] = ',';
    }
    n = canon_append(text, sizeof(text), n, &rec.uris[i]);
  }
  if (tlsrpt_txt_parse(&again, err, sizeof(err), (const uint8_t *)text, n) !=
          0 ||
      again.num_uris != rec.num_uris) {
    abort();
  }
  for (size_t i = 0; i < rec.num_uris; i++) {
    if (again.uris[i].kind != rec.uris[i].kind ||
        strcmp(again.uris[i].text, rec.uris[i].text) != 0) {
      abort();
    }
  }
}

/* check_json: the input as a failure reason and an MX host name. */
static void check_json(const uint8_t *data, size_t size) {
  char reason[TLSRPT_MAX_REASON + 1];
  size_t n = size < TLSRPT_MAX_REASON ? size : TLSRPT_MAX_REASON;
  memcpy(reason, data, n);
  reason[n] = '\0';
  struct tlsrpt_limits lim = {0};
  struct tlsrpt_agg *a = tlsrpt_agg_new(&lim, 0, 86400);
  if (a == NULL) {
    return;
  }
  const char *const strs[] = {reason};
  struct tlsrpt_policy p = {TLSRPT_POLICY_TLSA, strs, 1, strs, 1};
  struct tlsrpt_failure f = {TLSRPT_TLSA_INVALID, reason, reason, reason,
                             reason};
  struct tlsrpt_report_meta meta = {"mx.test", "postmaster@mx.test",
                                    "1.2@mx.test"};
  struct buf out = {0};
  if (tlsrpt_agg_add(a, "x.test", &p, &f) != 0 ||
      tlsrpt_report_json(&out, a, 0, &meta) != 0) {
    abort();
  }
  const uint8_t *q = out.data;
  size_t left = out.len;
  if (left == 0 || q[left - 1] != '\n') {
    abort();
  }
  left--;
  while (left > 0) {
    size_t k = 1;
    if (q[0] < 0x20 ||
        (q[0] >= 0x80 && (k = smtp_addr_utf8_len(q, left)) == 0)) {
      abort();
    }
    q += k;
    left -= k;
  }
  buf_free(&out);
  tlsrpt_agg_free(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  check_txt(data, size);
  check_json(data, size);
  return 0;
}
