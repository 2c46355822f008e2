/* tests/fuzz/fuzz_cms_enveloped.c — EnvelopedData and AuthEnvelopedData
 * (crypto/cms_enveloped.c): the input through cms_decrypt with fixed
 * recipient keys (RSA, P-256 and X25519 of tests/data/cms/, when the
 * source tree is there, so the seeds made by openssl cms and postseal
 * reach the key unwrap and the content decryption), and the parsed
 * form's round trip.
 *
 * Invariants: cms_decrypt returns a known value with a NUL-terminated
 * reason; on failure the output is exactly as it was and
 * *out_authenticated is 0; on success it is 0 or 1 and no more plaintext
 * than input was appended. cms_env_parse over the gate's DER fails with
 * the same value cms_decrypt did, or encodes back to the same bytes, as
 * does each RecipientInfo, and a KARI's RecipientEncryptedKeys count
 * matches. cms_check_enveloped accepts only what cms_env_parse does (with
 * a RecipientInfo) and everything cms_decrypt opened to some plaintext. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bytestring.h>
#include <openssl/mem.h>

#include "crypto/cms_internal.h"

#define NUM_PARTIES 3

static struct cms_decrypt_party parties[NUM_PARTIES];
static size_t num_parties;

/* load_party reads tests/data/cms/enveloped-NAME.{key,pem} next to this
 * source file; without them the input is decrypted by nobody. */
static void load_party(const char *name) {
  char key[1024], cert[1024];
  snprintf(key, sizeof(key), "%s", __FILE__);
  char *cut = strstr(key, "tests/fuzz/fuzz_cms_enveloped.c");
  if (cut == NULL) {
    return;
  }
  *cut = '\0';
  snprintf(cert, sizeof(cert), "%stests/data/cms/enveloped-%s.pem", key, name);
  size_t dir_len = strlen(key);
  snprintf(key + dir_len, sizeof(key) - dir_len,
           "tests/data/cms/enveloped-%s.key", name);
  struct cms_key *k = cms_key_load_pem(key, NULL, 0);
  STACK_OF(X509) *certs = cms_certs_load_pem(cert, NULL, 0);
  if (k != NULL && certs != NULL) {
    parties[num_parties].key = k;
    parties[num_parties].cert = sk_X509_shift(certs);
    num_parties++;
  } else {
    cms_key_free(k);
  }
  sk_X509_pop_free(certs, X509_free);
}

static void load_once(void) {
  static int done;
  if (!done) {
    load_party("rsa");
    load_party("ec");
    load_party("x25519");
    done = 1;
  }
}

static size_t last_plain_len; /* of the last check_decrypt that opened */

static int check_decrypt(const uint8_t *data, size_t size) {
  static struct buf out;
  char err[256];
  int auth = -1;
  err[0] = '\0';
  buf_reset(&out);
  if (buf_append(&out, "prefix", 6) != 0) {
    abort();
  }
  int rc = cms_decrypt(&out, &auth, &cms_local_signer, parties, num_parties,
                       data, size, err, sizeof(err));
  if (rc > CMS_OK || rc < CMS_ERR_INTERNAL ||
      memchr(err, '\0', sizeof(err)) == NULL) {
    abort();
  }
  if (rc != CMS_OK && (out.len != 6 || memcmp(out.data, "prefix", 6) != 0 ||
                       auth != 0 || err[0] == '\0')) {
    abort();
  }
  if (rc == CMS_OK && ((auth != 0 && auth != 1) || out.len - 6 > size)) {
    abort();
  }
  last_plain_len = rc == CMS_OK ? out.len - 6 : 0;
  return rc;
}

/* check_ri: each RecipientInfo parses and encodes back to itself. */
static void check_ri(const CBS *elem) {
  struct cms_ri ri;
  CBB cbb;
  uint8_t *der;
  size_t len;
  if (cms_ri_parse(*elem, &ri) != CMS_OK || !CBB_init(&cbb, CBS_len(elem)) ||
      !cms_ri_encode(&cbb, &ri) || !CBB_finish(&cbb, &der, &len) ||
      !CBS_mem_equal(elem, der, len)) {
    abort();
  }
  OPENSSL_free(der);
  if (ri.kind == CMS_RI_KARI) {
    CBS reks = ri.reks, rid, key;
    size_t n = 0;
    while (CBS_len(&reks) > 0 && cms_rek_next(&reks, &rid, &key)) {
      n++;
    }
    if (CBS_len(&reks) != 0 || n != ri.num_reks) {
      abort();
    }
  }
}

static void check_round_trip(const uint8_t *data, size_t size, int decrypt_rc) {
  static struct cms_env env;
  CBS der;
  uint8_t *storage = NULL, *again = NULL;
  size_t again_len;
  int rc = cms_input_der(data, size, &der, &storage, NULL, 0);
  if (rc == CMS_OK) {
    rc = cms_env_parse(der, &env, NULL, 0);
  }
  if (rc != CMS_OK) {
    if (rc != decrypt_rc) {
      abort();
    }
    OPENSSL_free(storage);
    return;
  }
  CBB cbb;
  if (!CBB_init(&cbb, CBS_len(&der)) || !cms_env_encode(&cbb, &env) ||
      !CBB_finish(&cbb, &again, &again_len) ||
      !CBS_mem_equal(&der, again, again_len)) {
    abort();
  }
  for (size_t i = 0; i < env.num_ris; i++) {
    check_ri(&env.ris[i]);
  }
  OPENSSL_free(again);
  OPENSSL_free(storage);
}

/* check_enveloped: cms_check_enveloped says yes only to what
 * cms_env_parse accepts whole, and to everything cms_decrypt opened to
 * some plaintext. */
static void check_enveloped(const uint8_t *data, size_t size, int decrypt_rc,
                            size_t plain_len) {
  static struct cms_env env;
  char err[256];
  err[0] = '\0';
  int rc = cms_check_enveloped(data, size, err, sizeof(err));
  if (rc > CMS_OK || rc < CMS_ERR_INTERNAL ||
      memchr(err, '\0', sizeof(err)) == NULL ||
      (rc != CMS_OK && err[0] == '\0')) {
    abort();
  }
  if (decrypt_rc == CMS_OK && plain_len > 0 && rc != CMS_OK) {
    abort();
  }
  if (rc == CMS_OK) {
    CBS der;
    uint8_t *storage = NULL;
    if (cms_input_der(data, size, &der, &storage, NULL, 0) != CMS_OK ||
        cms_env_parse(der, &env, NULL, 0) != CMS_OK || env.num_ris == 0) {
      abort();
    }
    OPENSSL_free(storage);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  load_once();
  int rc = check_decrypt(data, size);
  check_round_trip(data, size, rc);
  check_enveloped(data, size, rc, last_plain_len);
  return 0;
}
