/* tests/fuzz/fuzz_cms_signed.c — SignedData (crypto/cms_signed.c): the
 * input through cms_verify with a fixed trust store (the test CA of
 * tests/data/cms/, when the source tree is there) at a fixed time, with
 * and without detached content; and the parsed form's round trip.
 *
 * Invariants: cms_verify returns a known value; on error there are no
 * signers; on success at most CMS_MAX_SIGNERS, each with a known verdict
 * and NUL-terminated strings, and cms_verified_all_pass agrees with the
 * verdicts; it succeeds with content given only for a detached SignedData
 * and without only for one with eContent. When the input was DER (the gate made
 * no copy) and its SET OFs were in DER order, encode(parse(x)) == x; for every
 * input that parses, encode is a fixed point: parse(encode(parse(x))) parses,
 * in DER order, and encodes to the same bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bytestring.h>
#include <openssl/mem.h>

#include "crypto/cms_internal.h"

#define FUZZ_NOW 1893456000LL /* 2030-01-01, inside the fixtures' validity */

static const char kDetached[] =
    "Content-Type: text/plain; charset=us-ascii\r\n\r\nHello from OpenSSL.\r\n";

/* store_once loads tests/data/cms/signed-ca.pem next to this source file;
 * without it chains are simply untrusted. */
static X509_STORE *store_once(void) {
  static int done;
  static X509_STORE *store;
  if (!done) {
    char path[1024];
    snprintf(path, sizeof(path), "%s", __FILE__);
    char *cut = strstr(path, "tests/fuzz/fuzz_cms_signed.c");
    if (cut != NULL) {
      strcpy(cut, "tests/data/cms/signed-ca.pem");
      store = cms_trust_load(path, NULL, NULL, 0);
    }
    done = 1;
  }
  return store;
}

static int nul_in(const char *s, size_t cap) {
  return memchr(s, '\0', cap) != NULL;
}

static void check_verify(const uint8_t *data, size_t size,
                         const uint8_t *detached, size_t detached_len) {
  struct cms_verified v;
  char err[160];
  err[0] = '\0';
  struct cms_verify_opts opts = {
      .trust = store_once(), .now = FUZZ_NOW, .from = "rsa@example.org"};
  int rc = cms_verify(&v, data, size, detached, detached_len, &opts, err,
                      sizeof(err));
  if (rc > CMS_OK || rc < CMS_ERR_INTERNAL || !nul_in(err, sizeof(err))) {
    abort();
  }
  if (v.num_signers > CMS_MAX_SIGNERS || (rc != CMS_OK && v.num_signers)) {
    abort();
  }
  /* content given is only ever checked as detached content: never with
   * eContent (signature wrapping), and none given needs eContent */
  if (rc == CMS_OK && v.detached != (detached != NULL)) {
    abort();
  }
  if (rc == CMS_OK && (unsigned)v.content_type > CMS_TYPE_AUTH_ENVELOPED) {
    abort();
  }
  int all = v.num_signers > 0;
  for (size_t i = 0; i < v.num_signers; i++) {
    const struct cms_signer_result *r = &v.signers[i];
    if (r->verdict > CMS_V_UNSUPPORTED ||
        !nul_in(r->reason, sizeof(r->reason)) ||
        !nul_in(r->email, sizeof(r->email)) ||
        !nul_in(r->sig_alg, sizeof(r->sig_alg)) ||
        (r->verdict != CMS_V_PASS && r->reason[0] == '\0') ||
        (r->verdict != CMS_V_NO_CERT && r->cert == NULL)) {
      abort();
    }
    all &= r->verdict == CMS_V_PASS;
  }
  if (cms_verified_all_pass(&v) != all) {
    abort();
  }
  cms_verified_cleanup(&v);
}

/* encode_form encodes sd into a fresh buffer (OPENSSL_free). */
static uint8_t *encode_form(const struct cms_signed *sd, size_t *out_len) {
  CBB cbb;
  uint8_t *out;
  if (!CBB_init(&cbb, 1024) || !cms_signed_encode(&cbb, sd) ||
      !CBB_finish(&cbb, &out, out_len)) {
    abort(); /* whatever parsed must encode */
  }
  return out;
}

static void check_round_trip(const uint8_t *data, size_t size) {
  static struct cms_signed sd, again;
  CBS der, cbs;
  uint8_t *storage = NULL;
  if (cms_input_der(data, size, &der, &storage, NULL, 0) != CMS_OK ||
      cms_signed_parse(&sd, der, NULL, 0) != CMS_OK) {
    OPENSSL_free(storage);
    return;
  }
  size_t enc_len, enc2_len;
  uint8_t *enc = encode_form(&sd, &enc_len);
  if (storage == NULL && sd.sets_in_der_order &&
      (enc_len != size || memcmp(enc, data, size) != 0)) {
    abort(); /* DER in, DER in order: the same bytes out */
  }
  CBS_init(&cbs, enc, enc_len);
  if (cms_signed_parse(&again, cbs, NULL, 0) != CMS_OK ||
      !again.sets_in_der_order || again.num_signers != sd.num_signers ||
      again.num_certs != sd.num_certs) {
    abort();
  }
  uint8_t *enc2 = encode_form(&again, &enc2_len);
  if (enc2_len != enc_len || memcmp(enc2, enc, enc_len) != 0) {
    abort();
  }
  OPENSSL_free(enc2);
  OPENSSL_free(enc);
  OPENSSL_free(storage);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  check_verify(data, size, NULL, 0);
  check_verify(data, size, (const uint8_t *)kDetached, sizeof(kDetached) - 1);
  check_round_trip(data, size);
  return 0;
}
