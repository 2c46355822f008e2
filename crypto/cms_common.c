/* crypto/cms_common.c — the CMS files' shared parts: object identifiers,
 * the input gate, ContentInfo, identifiers, digests, keys, certificates
 * and the in-process signer. See cms.h and cms_internal.h. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/curve25519.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/ecdh.h>
#include <openssl/err.h>
#include <openssl/mem.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>

#include "crypto/cms_internal.h"

/* BoringSSL exports it; its declaration lives in an internal header. */
int CBS_asn1_ber_to_der(CBS *in, CBS *out, uint8_t **out_storage);

#define OID(name, ...)                                                         \
  const struct cms_oid name = {sizeof((const uint8_t[]){__VA_ARGS__}),         \
                               {__VA_ARGS__}}

/* 1.2.840.113549.1.7.x */
OID(CMS_OID_DATA, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01);
OID(CMS_OID_SIGNED_DATA, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02);
OID(CMS_OID_ENVELOPED_DATA, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07,
    0x03);
/* 1.2.840.113549.1.9.16.1.23 */
OID(CMS_OID_AUTH_ENVELOPED_DATA, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09,
    0x10, 0x01, 0x17);
/* 1.2.840.113549.1.9.{3,4,5,15}, 1.2.840.113549.1.9.16.2.{11,47} */
OID(CMS_OID_CONTENT_TYPE, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x03);
OID(CMS_OID_MESSAGE_DIGEST, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09,
    0x04);
OID(CMS_OID_SIGNING_TIME, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x05);
OID(CMS_OID_SMIME_CAPABILITIES, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09,
    0x0f);
OID(CMS_OID_ENC_KEY_PREF, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10,
    0x02, 0x0b);
OID(CMS_OID_SIGNING_CERT_V2, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09,
    0x10, 0x02, 0x2f);
/* 2.16.840.1.101.3.4.2.{1,2,3} */
OID(CMS_OID_SHA256, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01);
OID(CMS_OID_SHA384, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02);
OID(CMS_OID_SHA512, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03);
/* 1.2.840.113549.1.1.{1,11,12,13,10,8,7} */
OID(CMS_OID_RSA, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01);
OID(CMS_OID_SHA256_RSA, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b);
OID(CMS_OID_SHA384_RSA, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c);
OID(CMS_OID_SHA512_RSA, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d);
OID(CMS_OID_RSA_PSS, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a);
OID(CMS_OID_MGF1, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08);
OID(CMS_OID_RSA_OAEP, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07);
/* 1.2.840.10045.4.3.{2,3,4}, 1.2.840.10045.2.1, 1.2.840.10045.3.1.7 */
OID(CMS_OID_ECDSA_SHA256, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02);
OID(CMS_OID_ECDSA_SHA384, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03);
OID(CMS_OID_ECDSA_SHA512, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04);
OID(CMS_OID_EC_PUBLIC_KEY, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01);
OID(CMS_OID_P256, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07);
/* 1.3.101.112, 1.3.101.110 */
OID(CMS_OID_ED25519, 0x2b, 0x65, 0x70);
OID(CMS_OID_X25519, 0x2b, 0x65, 0x6e);
/* 2.16.840.1.101.3.4.1.{2,42,6,46,5,45} */
OID(CMS_OID_AES128_CBC, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x02);
OID(CMS_OID_AES256_CBC, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a);
OID(CMS_OID_AES128_GCM, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x06);
OID(CMS_OID_AES256_GCM, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2e);
OID(CMS_OID_AES128_WRAP, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x05);
OID(CMS_OID_AES256_WRAP, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2d);
/* 1.3.132.1.11.1 (RFC 5753), 1.2.840.113549.1.9.16.3.19 (RFC 8418) */
OID(CMS_OID_ECDH_SHA256_KDF, 0x2b, 0x81, 0x04, 0x01, 0x0b, 0x01);
OID(CMS_OID_ECDH_HKDF_SHA256, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09,
    0x10, 0x03, 0x13);

int cms_set_err(char *err, size_t err_len, int code, const char *fmt, ...) {
  if (err != NULL && err_len > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
  }
  return code;
}

const char *cms_err_str(int err) {
  switch (err) {
  case CMS_OK:
    return "ok";
  case CMS_ERR_SYNTAX:
    return "syntax";
  case CMS_ERR_UNSUPPORTED:
    return "unsupported";
  case CMS_ERR_LIMIT:
    return "limit";
  case CMS_ERR_NO_RECIPIENT:
    return "no-recipient";
  case CMS_ERR_DECRYPT:
    return "decrypt";
  case CMS_ERR_KEY:
    return "key";
  default:
    return "internal";
  }
}

/* ---- OIDs, algorithms, digests ---- */

int cms_oid_eq(const CBS *oid, const struct cms_oid *o) {
  return CBS_mem_equal(oid, o->der, o->len);
}

int cms_add_oid(CBB *cbb, const struct cms_oid *o) {
  CBB child;
  return CBB_add_asn1(cbb, &child, CBS_ASN1_OBJECT) &&
         CBB_add_bytes(&child, o->der, o->len) && CBB_flush(cbb);
}

int cms_add_alg(CBB *cbb, const struct cms_oid *o, int null_params) {
  CBB seq, null;
  if (!CBB_add_asn1(cbb, &seq, CBS_ASN1_SEQUENCE) || !cms_add_oid(&seq, o)) {
    return 0;
  }
  if (null_params && !CBB_add_asn1(&seq, &null, CBS_ASN1_NULL)) {
    return 0;
  }
  return CBB_flush(cbb);
}

const EVP_MD *cms_digest_md(enum cms_digest d) {
  switch (d) {
  case CMS_SHA384:
    return EVP_sha384();
  case CMS_SHA512:
    return EVP_sha512();
  case CMS_SHA1: /* RSAES-OAEP input only (see cms.h) */
    return EVP_sha1();
  default:
    return EVP_sha256();
  }
}

const struct cms_oid *cms_digest_oid(enum cms_digest d) {
  switch (d) {
  case CMS_SHA384:
    return &CMS_OID_SHA384;
  case CMS_SHA512:
    return &CMS_OID_SHA512;
  default:
    return &CMS_OID_SHA256;
  }
}

int cms_digest_from_oid(const CBS *oid, enum cms_digest *out) {
  static const enum cms_digest all[] = {CMS_SHA256, CMS_SHA384, CMS_SHA512};
  for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
    if (cms_oid_eq(oid, cms_digest_oid(all[i]))) {
      *out = all[i];
      return 1;
    }
  }
  return 0;
}

const char *cms_digest_name(enum cms_digest d) {
  switch (d) {
  case CMS_SHA384:
    return "sha-384";
  case CMS_SHA512:
    return "sha-512";
  default:
    return "sha-256";
  }
}

/* ---- the input gate ---- */

/* der_depth_ok walks constructed elements; returns CMS_OK, CMS_ERR_LIMIT
 * past CMS_MAX_DEPTH, or CMS_ERR_SYNTAX. */
static int der_depth_ok(CBS cbs, unsigned depth) {
  while (CBS_len(&cbs) > 0) {
    CBS elem;
    unsigned tag;
    size_t hdr;
    if (!CBS_get_any_asn1_element(&cbs, &elem, &tag, &hdr)) {
      return CMS_ERR_SYNTAX;
    }
    if ((tag & CBS_ASN1_CONSTRUCTED) == 0) {
      continue;
    }
    if (depth + 1 > CMS_MAX_DEPTH) {
      return CMS_ERR_LIMIT;
    }
    if (!CBS_skip(&elem, hdr)) {
      return CMS_ERR_SYNTAX;
    }
    int rc = der_depth_ok(elem, depth + 1);
    if (rc != CMS_OK) {
      return rc;
    }
  }
  return CMS_OK;
}

int cms_input_der(const uint8_t *in, size_t in_len, CBS *out_der,
                  uint8_t **storage, char *err, size_t err_len) {
  *storage = NULL;
  if (in_len > CMS_MAX_INPUT) {
    return cms_set_err(err, err_len, CMS_ERR_LIMIT, "CMS input over %u bytes",
                       CMS_MAX_INPUT);
  }
  CBS cbs;
  CBS_init(&cbs, in, in_len);
  if (!CBS_asn1_ber_to_der(&cbs, out_der, storage)) {
    ERR_clear_error();
    return cms_set_err(err, err_len, CMS_ERR_SYNTAX, "not DER or BER");
  }
  if (CBS_len(&cbs) != 0) {
    return cms_set_err(err, err_len, CMS_ERR_SYNTAX,
                       "%zu bytes after the CMS structure", CBS_len(&cbs));
  }
  int rc = der_depth_ok(*out_der, 0);
  if (rc == CMS_ERR_LIMIT) {
    return cms_set_err(err, err_len, rc, "ASN.1 nested deeper than %d",
                       CMS_MAX_DEPTH);
  }
  if (rc != CMS_OK) {
    return cms_set_err(err, err_len, rc, "malformed DER");
  }
  return CMS_OK;
}

int cms_content_info_parse(CBS der, CBS *out_type, CBS *out_content) {
  CBS seq, explicit0;
  return CBS_get_asn1(&der, &seq, CBS_ASN1_SEQUENCE) && CBS_len(&der) == 0 &&
         CBS_get_asn1(&seq, out_type, CBS_ASN1_OBJECT) &&
         CBS_get_asn1(&seq, &explicit0,
                      CBS_ASN1_CONTEXT_SPECIFIC | CBS_ASN1_CONSTRUCTED | 0) &&
         CBS_len(&seq) == 0 &&
         CBS_get_any_asn1_element(&explicit0, out_content, NULL, NULL) &&
         CBS_len(&explicit0) == 0;
}

int cms_content_info_begin(CBB *outer, CBB *seq, CBB *explicit0,
                           const struct cms_oid *type) {
  return CBB_add_asn1(outer, seq, CBS_ASN1_SEQUENCE) &&
         cms_add_oid(seq, type) &&
         CBB_add_asn1(seq, explicit0,
                      CBS_ASN1_CONTEXT_SPECIFIC | CBS_ASN1_CONSTRUCTED | 0);
}

int cms_content_type(const uint8_t *in, size_t in_len, enum cms_type *out) {
  *out = CMS_TYPE_UNKNOWN;
  CBS cbs, seq, oid;
  unsigned tag;
  size_t hdr;
  int ber, indefinite;
  CBS_init(&cbs, in, in_len);
  if (!CBS_get_any_ber_asn1_element(&cbs, &seq, &tag, &hdr, &ber,
                                    &indefinite) ||
      tag != CBS_ASN1_SEQUENCE) {
    return CMS_ERR_SYNTAX;
  }
  /* Indefinite length: only the header was taken; the body follows. */
  CBS body = indefinite ? cbs : seq;
  if (!indefinite && !CBS_skip(&body, hdr)) {
    return CMS_ERR_SYNTAX;
  }
  if (!CBS_get_asn1(&body, &oid, CBS_ASN1_OBJECT)) {
    return CMS_ERR_SYNTAX;
  }
  *out = cms_type_from_oid(&oid);
  return CMS_OK;
}

enum cms_type cms_type_from_oid(const CBS *oid) {
  static const struct {
    const struct cms_oid *oid;
    enum cms_type type;
  } types[] = {
      {&CMS_OID_DATA, CMS_TYPE_DATA},
      {&CMS_OID_SIGNED_DATA, CMS_TYPE_SIGNED},
      {&CMS_OID_ENVELOPED_DATA, CMS_TYPE_ENVELOPED},
      {&CMS_OID_AUTH_ENVELOPED_DATA, CMS_TYPE_AUTH_ENVELOPED},
  };
  for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
    if (cms_oid_eq(oid, types[i].oid)) {
      return types[i].type;
    }
  }
  return CMS_TYPE_UNKNOWN;
}

/* ---- certificates and identifiers ---- */

int cms_cert_issuer_serial(X509 *cert, CBS *out_issuer, CBS *out_serial,
                           uint8_t **storage) {
  *storage = NULL;
  int len = i2d_X509(cert, storage);
  if (len <= 0) {
    return 0;
  }
  /* Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version
   * OPTIONAL, serialNumber, signature, issuer, ... }, ... } (RFC 5280) */
  CBS der, certseq, tbs;
  CBS_init(&der, *storage, (size_t)len);
  return CBS_get_asn1(&der, &certseq, CBS_ASN1_SEQUENCE) &&
         CBS_get_asn1(&certseq, &tbs, CBS_ASN1_SEQUENCE) &&
         CBS_get_optional_asn1(&tbs, NULL, NULL,
                               CBS_ASN1_CONTEXT_SPECIFIC |
                                   CBS_ASN1_CONSTRUCTED | 0) &&
         CBS_get_asn1_element(&tbs, out_serial, CBS_ASN1_INTEGER) &&
         CBS_get_asn1(&tbs, NULL, CBS_ASN1_SEQUENCE) &&
         CBS_get_asn1_element(&tbs, out_issuer, CBS_ASN1_SEQUENCE);
}

int cms_cert_ski(X509 *cert, uint8_t *out, size_t out_cap, size_t *out_len) {
  const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(cert);
  if (ski == NULL || ASN1_STRING_length(ski) <= 0 ||
      (size_t)ASN1_STRING_length(ski) > out_cap) {
    return 0;
  }
  *out_len = (size_t)ASN1_STRING_length(ski);
  memcpy(out, ASN1_STRING_get0_data(ski), *out_len);
  return 1;
}

int cms_add_ias(CBB *cbb, X509 *cert) {
  uint8_t *storage;
  CBS issuer, serial;
  CBB seq;
  int ok = cms_cert_issuer_serial(cert, &issuer, &serial, &storage) &&
           CBB_add_asn1(cbb, &seq, CBS_ASN1_SEQUENCE) &&
           CBB_add_bytes(&seq, CBS_data(&issuer), CBS_len(&issuer)) &&
           CBB_add_bytes(&seq, CBS_data(&serial), CBS_len(&serial)) &&
           CBB_flush(cbb);
  OPENSSL_free(storage);
  return ok;
}

int cms_add_sid(CBB *cbb, X509 *cert, int use_ski) {
  if (!use_ski) {
    return cms_add_ias(cbb, cert);
  }
  uint8_t ski[64];
  size_t ski_len;
  CBB child;
  return cms_cert_ski(cert, ski, sizeof(ski), &ski_len) &&
         CBB_add_asn1(cbb, &child, CBS_ASN1_CONTEXT_SPECIFIC | 0) &&
         CBB_add_bytes(&child, ski, ski_len) && CBB_flush(cbb);
}

int cms_sid_matches(const CBS *sid, X509 *cert) {
  CBS in = *sid, body;
  unsigned tag;
  if (!CBS_get_any_asn1(&in, &body, &tag) || CBS_len(&in) != 0) {
    return 0;
  }
  if (tag == (CBS_ASN1_CONTEXT_SPECIFIC | 0)) {
    uint8_t ski[64];
    size_t ski_len;
    return cms_cert_ski(cert, ski, sizeof(ski), &ski_len) &&
           CBS_mem_equal(&body, ski, ski_len);
  }
  if (tag != CBS_ASN1_SEQUENCE) {
    return 0;
  }
  uint8_t *storage;
  CBS issuer, serial, want_issuer, want_serial;
  int ok =
      cms_cert_issuer_serial(cert, &want_issuer, &want_serial, &storage) &&
      CBS_get_asn1_element(&body, &issuer, CBS_ASN1_SEQUENCE) &&
      CBS_get_asn1_element(&body, &serial, CBS_ASN1_INTEGER) &&
      CBS_len(&body) == 0 &&
      CBS_mem_equal(&issuer, CBS_data(&want_issuer), CBS_len(&want_issuer)) &&
      CBS_mem_equal(&serial, CBS_data(&want_serial), CBS_len(&want_serial));
  OPENSSL_free(storage);
  return ok;
}

size_t cms_cert_emails(X509 *cert, char (*out)[CMS_EMAIL_MAX], size_t max) {
  size_t n = 0;
  GENERAL_NAMES *names =
      X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
  for (size_t i = 0; names != NULL && i < sk_GENERAL_NAME_num(names); i++) {
    const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
    if (gn->type != GEN_EMAIL || n >= max) {
      continue;
    }
    const ASN1_STRING *s = gn->d.rfc822Name;
    int len = ASN1_STRING_length(s);
    const unsigned char *p = ASN1_STRING_get0_data(s);
    if (len <= 0 || len >= CMS_EMAIL_MAX || memchr(p, 0, (size_t)len)) {
      continue;
    }
    for (int k = 0; k < len; k++) {
      out[n][k] = (char)tolower(p[k]);
    }
    out[n][len] = 0;
    n++;
  }
  GENERAL_NAMES_free(names);
  if (n > 0 || max == 0) {
    return n;
  }
  /* No rfc822Name: the subject's emailAddress (RFC 8550 §3). */
  X509_NAME *subj = X509_get_subject_name(cert);
  int idx = X509_NAME_get_index_by_NID(subj, NID_pkcs9_emailAddress, -1);
  if (idx < 0) {
    return 0;
  }
  const ASN1_STRING *s =
      X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx));
  int len = ASN1_STRING_length(s);
  const unsigned char *p = ASN1_STRING_get0_data(s);
  if (len <= 0 || len >= CMS_EMAIL_MAX || memchr(p, 0, (size_t)len)) {
    return 0;
  }
  for (int k = 0; k < len; k++) {
    out[0][k] = (char)tolower(p[k]);
  }
  out[0][len] = 0;
  return 1;
}

STACK_OF(X509) *
    cms_certs_load_pem(const char *path, char *err, size_t err_len) {
  BIO *bio = BIO_new_file(path, "r");
  if (bio == NULL) {
    ERR_clear_error();
    cms_set_err(err, err_len, CMS_ERR_KEY, "%s: cannot open", path);
    return NULL;
  }
  STACK_OF(X509) *certs = sk_X509_new_null();
  X509 *x;
  while (certs != NULL && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
    if (sk_X509_num(certs) >= CMS_MAX_CERTS || !sk_X509_push(certs, x)) {
      X509_free(x);
      break;
    }
  }
  ERR_clear_error();
  BIO_free(bio);
  if (certs == NULL || sk_X509_num(certs) == 0) {
    sk_X509_free(certs);
    cms_set_err(err, err_len, CMS_ERR_KEY, "%s: no PEM certificate", path);
    return NULL;
  }
  return certs;
}

X509_STORE *cms_trust_load(const char *file, const char *dir, char *err,
                           size_t err_len) {
  X509_STORE *store = X509_STORE_new();
  if (store == NULL || (file == NULL && dir == NULL) ||
      !X509_STORE_load_locations(store, file, dir)) {
    ERR_clear_error();
    X509_STORE_free(store);
    cms_set_err(err, err_len, CMS_ERR_KEY, "%s: cannot load trust anchors",
                file != NULL  ? file
                : dir != NULL ? dir
                              : "(none)");
    return NULL;
  }
  return store;
}

/* ---- keys ---- */

int cms_pkey_type(X509 *cert) {
  EVP_PKEY *pk = X509_get_pubkey(cert);
  if (pk == NULL) {
    ERR_clear_error();
    return 0;
  }
  int type = EVP_PKEY_id(pk);
  if (type == EVP_PKEY_EC) {
    const EC_GROUP *g = EC_KEY_get0_group(EVP_PKEY_get0_EC_KEY(pk));
    if (g == NULL || EC_GROUP_get_curve_name(g) != NID_X9_62_prime256v1) {
      type = 0;
    }
  } else if (type != EVP_PKEY_RSA && type != EVP_PKEY_ED25519 &&
             type != EVP_PKEY_X25519) {
    type = 0;
  }
  EVP_PKEY_free(pk);
  return type;
}

int64_t cms_cert_not_after(const X509 *cert) {
  /* This BoringSSL has no ASN1_TIME_to_posix: the difference from the
   * epoch instead. */
  ASN1_TIME *epoch = ASN1_TIME_set(NULL, 0);
  int days = 0, secs = 0;
  int64_t t = 0;
  if (cert != NULL && epoch != NULL &&
      ASN1_TIME_diff(&days, &secs, epoch, X509_get0_notAfter(cert))) {
    t = (int64_t)days * 86400 + secs;
  }
  ASN1_TIME_free(epoch);
  return t;
}

int cms_cert_can_receive(X509 *cert) {
  int t = cms_pkey_type(cert);
  return t == EVP_PKEY_RSA || t == EVP_PKEY_EC || t == EVP_PKEY_X25519;
}

static struct cms_key *key_wrap(EVP_PKEY *pkey, const char *what, char *err,
                                size_t err_len) {
  if (pkey == NULL) {
    ERR_clear_error();
    cms_set_err(err, err_len, CMS_ERR_KEY, "%s: no PEM private key", what);
    return NULL;
  }
  int type = EVP_PKEY_id(pkey);
  if (type == EVP_PKEY_EC) {
    const EC_GROUP *g = EC_KEY_get0_group(EVP_PKEY_get0_EC_KEY(pkey));
    if (g == NULL || EC_GROUP_get_curve_name(g) != NID_X9_62_prime256v1) {
      type = 0;
    }
  } else if (type == EVP_PKEY_RSA && RSA_bits(EVP_PKEY_get0_RSA(pkey)) < 2048) {
    type = 0;
  } else if (type != EVP_PKEY_RSA && type != EVP_PKEY_ED25519 &&
             type != EVP_PKEY_X25519) {
    type = 0;
  }
  struct cms_key *k = type != 0 ? OPENSSL_malloc(sizeof(*k)) : NULL;
  if (k == NULL) {
    EVP_PKEY_free(pkey);
    cms_set_err(err, err_len, CMS_ERR_KEY,
                "%s: not an RSA (2048+), P-256, Ed25519 or X25519 key", what);
    return NULL;
  }
  k->pkey = pkey;
  k->type = type;
  return k;
}

struct cms_key *cms_key_load_pem(const char *path, char *err, size_t err_len) {
  BIO *bio = BIO_new_file(path, "r");
  EVP_PKEY *pkey =
      bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
  BIO_free(bio);
  return key_wrap(pkey, path, err, err_len);
}

struct cms_key *cms_key_from_pem(const uint8_t *pem, size_t pem_len, char *err,
                                 size_t err_len) {
  if (pem_len > (1u << 20)) {
    cms_set_err(err, err_len, CMS_ERR_LIMIT, "key: PEM over 1 MiB");
    return NULL;
  }
  BIO *bio = BIO_new_mem_buf(pem, (int)pem_len);
  EVP_PKEY *pkey =
      bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
  BIO_free(bio);
  return key_wrap(pkey, "key", err, err_len);
}

void cms_key_free(struct cms_key *key) {
  if (key == NULL) {
    return;
  }
  EVP_PKEY_free(key->pkey);
  OPENSSL_free(key);
}

int cms_key_matches_cert(const struct cms_key *key, X509 *cert) {
  EVP_PKEY *pub = X509_get_pubkey(cert);
  int same = pub != NULL && EVP_PKEY_cmp(pub, key->pkey) == 1;
  EVP_PKEY_free(pub);
  ERR_clear_error();
  return same;
}

/* ---- the in-process signer ---- */

static int local_sign(void *arg, const struct cms_key *key,
                      const struct cms_sig_params *p, const uint8_t *tbs,
                      size_t tbs_len, uint8_t *out, size_t out_cap,
                      size_t *out_len) {
  (void)arg;
  if (key->type == EVP_PKEY_X25519) {
    return 0;
  }
  const EVP_MD *md =
      key->type == EVP_PKEY_ED25519 ? NULL : cms_digest_md(p->digest);
  EVP_MD_CTX ctx;
  EVP_MD_CTX_init(&ctx);
  EVP_PKEY_CTX *pctx = NULL;
  int ok = EVP_DigestSignInit(&ctx, &pctx, md, NULL, key->pkey);
  if (ok && key->type == EVP_PKEY_RSA && p->rsa_pss) {
    /* RFC 4055 §3.1 as RFC 8551 uses it: MGF1 with the same hash, salt
     * as long as the hash. */
    ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) &&
         EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, -1) &&
         EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md);
  }
  *out_len = out_cap;
  ok = ok && EVP_DigestSign(&ctx, out, out_len, tbs, tbs_len);
  EVP_MD_CTX_cleanup(&ctx);
  ERR_clear_error();
  return ok;
}

static int local_unwrap(void *arg, const struct cms_key *key, int oaep,
                        enum cms_digest oaep_md, const uint8_t *in,
                        size_t in_len, uint8_t *out, size_t out_cap,
                        size_t *out_len) {
  (void)arg;
  if (key->type != EVP_PKEY_RSA) {
    return 0;
  }
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(key->pkey, NULL);
  int ok = ctx != NULL && EVP_PKEY_decrypt_init(ctx);
  if (ok && oaep) {
    ok = EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) &&
         EVP_PKEY_CTX_set_rsa_oaep_md(ctx, cms_digest_md(oaep_md)) &&
         EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, cms_digest_md(oaep_md));
  } else if (ok) {
    ok = EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING);
  }
  *out_len = out_cap;
  ok = ok && EVP_PKEY_decrypt(ctx, out, out_len, in, in_len);
  EVP_PKEY_CTX_free(ctx);
  ERR_clear_error();
  return ok;
}

static int agree_p256(const struct cms_key *key, const uint8_t *peer,
                      size_t peer_len, uint8_t *out, size_t out_cap,
                      size_t *out_len) {
  const EC_KEY *ec = EVP_PKEY_get0_EC_KEY(key->pkey);
  const EC_GROUP *g = EC_KEY_get0_group(ec);
  EC_POINT *pt = EC_POINT_new(g);
  int ok = pt != NULL && out_cap >= 32 &&
           EC_POINT_oct2point(g, pt, peer, peer_len, NULL) &&
           ECDH_compute_key(out, 32, pt, ec, NULL) == 32;
  EC_POINT_free(pt);
  *out_len = 32;
  return ok;
}

static int local_agree(void *arg, const struct cms_key *key,
                       const uint8_t *peer, size_t peer_len, uint8_t *out,
                       size_t out_cap, size_t *out_len) {
  (void)arg;
  int ok = 0;
  if (key->type == EVP_PKEY_EC) {
    ok = agree_p256(key, peer, peer_len, out, out_cap, out_len);
  } else if (key->type == EVP_PKEY_X25519 && peer_len == 32 && out_cap >= 32) {
    uint8_t priv[32];
    size_t priv_len = sizeof(priv);
    /* X25519() returns 0 for a low-order peer point (all-zero secret). */
    ok = EVP_PKEY_get_raw_private_key(key->pkey, priv, &priv_len) &&
         priv_len == 32 && X25519(out, priv, peer);
    OPENSSL_cleanse(priv, sizeof(priv));
    *out_len = 32;
  }
  ERR_clear_error();
  return ok;
}

const struct cms_signer cms_local_signer = {
    .sign = local_sign,
    .unwrap = local_unwrap,
    .agree = local_agree,
    .arg = NULL,
};
