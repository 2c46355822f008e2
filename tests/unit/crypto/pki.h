/* tests/unit/crypto/pki.h — certificate helpers the crypto unit tests
 * share: a P-256 key, an X.509v3 extension, PEM files. Test code only,
 * included after <cmocka.h> (failures are fail_msg: a test bug). */
#ifndef POSTSEAL_TESTS_UNIT_CRYPTO_PKI_H
#define POSTSEAL_TESTS_UNIT_CRYPTO_PKI_H

#include <openssl/bio.h>
#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* make_key: a fresh EC P-256 key. */
static EVP_PKEY *make_key(void) {
  EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
  EVP_PKEY *key = EVP_PKEY_new();
  if (ec == NULL || key == NULL || !EC_KEY_generate_key(ec) ||
      !EVP_PKEY_assign_EC_KEY(key, ec)) {
    fail_msg("test bug: key generation");
  }
  return key;
}

/* add_ext adds extension nid=value (openssl.cnf syntax) to x. */
static void add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value) {
  X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, v3, nid, value);
  if (ext == NULL || !X509_add_ext(x, ext, -1)) {
    fail_msg("test bug: extension %d=%s", nid, value);
  }
  X509_EXTENSION_free(ext);
}

/* write_pem writes certificates (NULL-terminated) and/or a key to path. */
static void write_pem(const char *path, X509 *const *chain, EVP_PKEY *key) {
  BIO *b = BIO_new_file(path, "w");
  if (b == NULL) {
    fail_msg("test bug: cannot write %s", path);
  }
  for (size_t i = 0; chain != NULL && chain[i] != NULL; i++) {
    PEM_write_bio_X509(b, chain[i]);
  }
  if (key != NULL) {
    PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL);
  }
  BIO_free(b);
}

#endif
