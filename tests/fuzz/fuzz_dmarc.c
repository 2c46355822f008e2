/* tests/fuzz/fuzz_dmarc.c — the DMARC record parser and the From domain
 * finder (policy/dmarc.h, RFC 7489 §6.3, §6.6.1) on the whole input, and
 * organisational domains (§3.2) on a bounded slice with the real Public
 * Suffix List, loaded once.
 *
 * Invariants: a parsed record has pct <= 100, at most DMARC_MAX_URIS
 * URIs each NUL-terminated with a scheme, p_invalid only with p=none,
 * and dmarc_is_record agrees that the input starts like a record;
 * written back in canonical form ("v=DMARC1; p=...; sp=...; pct=...;
 * adkim=...; aspf=...; rua=...") it parses to the same values (round
 * trip). A From domain is non-empty, lower case, without a trailing dot,
 * and is its own strict alignment; an organisational domain is a suffix
 * of the domain at a label boundary, and its own organisational domain.
 * The evaluation of the parsed record against the found domain never
 * yields a disposition stronger than the policy. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "policy/dmarc.h"

static struct dmarc_psl *psl;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  char err[256];
  psl = dmarc_psl_load(DMARC_PSL_DEFAULT, err, sizeof(err));
  if (psl == NULL) {
    fprintf(stderr, "fuzz_dmarc: %s\n", err);
    abort();
  }
  return 0;
}

/* canon writes r as a record the parser reads back to the same values. */
static size_t canon(const struct dmarc_record *r, char *out, size_t len) {
  size_t n = (size_t)snprintf(
      out, len,
      "v=DMARC1; p=%s; sp=%s; pct=%u; adkim=%c; aspf=%c; ri=%u; "
      "fo=%s",
      dmarc_policy_name(r->p), dmarc_policy_name(r->sp), r->pct,
      r->adkim_strict ? 's' : 'r', r->aspf_strict ? 's' : 'r', r->ri, r->fo);
  for (size_t i = 0; i < r->num_rua && n < len; i++) {
    n += (size_t)snprintf(out + n, len - n, "%s%s",
                          i ? "," : "; rua=", r->rua[i]);
    if (r->rua_max[i] != 0 && n < len) {
      /* In the largest unit that divides it, as it was written: a size
       * in plain bytes may have more digits than the parser takes. */
      static const char units[] = "\0kmgt";
      uint64_t v = r->rua_max[i];
      int u = 0;
      while (u < 4 && v % 1024 == 0) {
        v /= 1024;
        u++;
      }
      n += (size_t)snprintf(out + n, len - n, "!%llu%.1s",
                            (unsigned long long)v, &units[u]);
    }
  }
  return n < len ? n : len;
}

static void check_record(const uint8_t *data, size_t size,
                         struct dmarc_record *rec, int *ok) {
  static struct dmarc_record again;
  static char text[DMARC_MAX_URIS * (DMARC_MAX_URI + 32) + 256];
  char err[256];
  *ok =
      dmarc_record_parse((const char *)data, size, rec, err, sizeof(err)) == 0;
  if (!*ok) {
    return;
  }
  if (!dmarc_is_record(data, size) || rec->pct > 100 ||
      rec->num_rua > DMARC_MAX_URIS || rec->num_ruf > DMARC_MAX_URIS ||
      (rec->p_invalid && (rec->p != DMARC_P_NONE || rec->num_rua == 0)) ||
      memchr(rec->fo, '\0', sizeof(rec->fo)) == NULL) {
    abort();
  }
  for (size_t i = 0; i < rec->num_rua; i++) {
    if (memchr(rec->rua[i], '\0', DMARC_MAX_URI) == NULL ||
        strchr(rec->rua[i], ':') == NULL) {
      abort();
    }
  }
  size_t n = canon(rec, text, sizeof(text));
  if (n > DMARC_MAX_RECORD) {
    return; /* eight long URIs with sizes: past the record limit */
  }
  if (dmarc_record_parse(text, n, &again, err, sizeof(err)) != 0 ||
      again.p != rec->p || again.sp != rec->sp || again.pct != rec->pct ||
      again.adkim_strict != rec->adkim_strict ||
      again.aspf_strict != rec->aspf_strict || again.ri != rec->ri ||
      strcmp(again.fo, rec->fo) != 0 || again.num_rua != rec->num_rua) {
    abort();
  }
  for (size_t i = 0; i < rec->num_rua; i++) {
    if (strcmp(again.rua[i], rec->rua[i]) != 0 ||
        again.rua_max[i] != rec->rua_max[i]) {
      abort();
    }
  }
}

static void check_org(const char *domain) {
  char org[256], org2[256];
  if (dmarc_org_domain(psl, domain, org, sizeof(org)) != 0) {
    return;
  }
  size_t n = strlen(domain), k = strlen(org);
  if (n > 0 && domain[n - 1] == '.') {
    n--;
  }
  if (k == 0 || k > n || (k < n && domain[n - k - 1] != '.') ||
      strncasecmp(domain + n - k, org, k) != 0 ||
      dmarc_org_domain(psl, org, org2, sizeof(org2)) != 0 ||
      strcmp(org, org2) != 0 || !dmarc_aligned(psl, domain, org, 0)) {
    abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static struct dmarc_record rec;
  int have_rec;
  check_record(data, size, &rec, &have_rec);

  char from[256], why[128];
  int have_from =
      dmarc_from_domain(data, size, from, sizeof(from), why, sizeof(why)) == 0;
  if (have_from) {
    size_t n = strlen(from);
    if (n == 0 || from[n - 1] == '.' || !dmarc_aligned(psl, from, from, 1)) {
      abort();
    }
    for (size_t i = 0; i < n; i++) {
      if (from[i] >= 'A' && from[i] <= 'Z') {
        abort();
      }
    }
    check_org(from);
  }

  /* A bounded slice as a domain name. */
  char slice[300];
  size_t n = size < sizeof(slice) - 1 ? size : sizeof(slice) - 1;
  memcpy(slice, data, n);
  slice[n] = '\0';
  check_org(slice);

  if (have_rec) {
    struct dmarc_auth auth = {
        .spf_domain = slice, .spf_pass = 1, .spf_result = "pass"};
    struct dmarc_lookup lookup = {DMARC_LOOKUP_FOUND, &rec, size & 1};
    struct dmarc_outcome out;
    dmarc_evaluate(psl, have_from ? from : NULL, &auth, &lookup,
                   (unsigned)(size % 100), &out);
    if (out.disposition > out.policy ||
        (out.result != DMARC_RESULT_FAIL && out.disposition != DMARC_P_NONE)) {
      abort();
    }
  }
  return 0;
}
