/* crypto/cms_enveloped.c — EnvelopedData (RFC 5652 §6) and
 * AuthEnvelopedData (RFC 5083, AES-GCM per RFC 5084): cms_encrypt and
 * cms_decrypt (cms.h), and the parse/encode pair of cms_internal.h.
 *
 * Recipients: KeyTransRecipientInfo with RSAES-OAEP (RFC 8017, RFC 3560)
 * or RSA PKCS#1 v1.5; KeyAgreeRecipientInfo with ephemeral-static ECDH on
 * P-256 (RFC 5753, ANSI X9.63 KDF) or X25519 (RFC 8418, HKDF), the
 * content key wrapped with AES Key Wrap (RFC 3394, RFC 3565).
 *
 * EFAIL: decryption opens the whole content into a scratch buffer and
 * appends it to the caller's only after the tag (GCM) or the padding
 * (CBC) checked; every failure leaves the caller's buffer as it was. */
#include <stdlib.h>
#include <string.h>

#include <openssl/aead.h>
#include <openssl/aes.h>
#include <openssl/cipher.h>
#include <openssl/curve25519.h>
#include <openssl/digest.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/ecdh.h>
#include <openssl/err.h>
#include <openssl/hkdf.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "crypto/cms_internal.h"

#define CTX_PRIM(n) (CBS_ASN1_CONTEXT_SPECIFIC | (n))
#define CTX_CONS(n) (CBS_ASN1_CONTEXT_SPECIFIC | CBS_ASN1_CONSTRUCTED | (n))

/* Sizes fixed by the algorithms (not peer-controlled limits). */
#define GCM_NONCE_LEN 12 /* RFC 5084 §3.2: the recommended (only) size */
#define AES_IV_LEN 16    /* RFC 3565 §4.1 AES-IV */
#define MAX_CEK_LEN 32   /* AES-256 */
#define WRAP_OVERHEAD 8  /* RFC 3394 §2.2.1 */

/* OIDs only this file reads, written by other producers. */
static const struct cms_oid kOidSha1 = {5, {0x2b, 0x0e, 0x03, 0x02, 0x1a}};
static const struct cms_oid kOidPSpecified = {
    9, {0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x09}};
/* 1.3.133.16.840.63.0.2 (OpenSSL's default), 1.3.132.1.11.{2,3} */
static const struct cms_oid kOidEcdhSha1Kdf = {
    9, {0x2b, 0x81, 0x05, 0x10, 0x86, 0x48, 0x3f, 0x00, 0x02}};
static const struct cms_oid kOidEcdhSha384Kdf = {
    6, {0x2b, 0x81, 0x04, 0x01, 0x0b, 0x02}};
static const struct cms_oid kOidEcdhSha512Kdf = {
    6, {0x2b, 0x81, 0x04, 0x01, 0x0b, 0x03}};
/* 1.2.840.113549.1.9.16.3.{20,21} (RFC 8418 §2.2) */
static const struct cms_oid kOidEcdhHkdfSha384 = {
    11, {0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x03, 0x14}};
static const struct cms_oid kOidEcdhHkdfSha512 = {
    11, {0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x03, 0x15}};

/* Content-encryption algorithms (RFC 3565 §4.1, RFC 5084 §3). */
struct cipher_info {
  enum cms_cipher cipher;
  const struct cms_oid *oid;
  int gcm;
  size_t key_len;
};
static const struct cipher_info kCiphers[] = {
    {CMS_AES256_GCM, &CMS_OID_AES256_GCM, 1, 32},
    {CMS_AES128_GCM, &CMS_OID_AES128_GCM, 1, 16},
    {CMS_AES256_CBC, &CMS_OID_AES256_CBC, 0, 32},
    {CMS_AES128_CBC, &CMS_OID_AES128_CBC, 0, 16},
};

/* Key derivation for KeyAgreeRecipientInfo: X9.63 (RFC 5753 §7.2) or
 * HKDF (RFC 8418 §2.2). */
enum kdf_kind { KDF_X963, KDF_HKDF };
struct kdf_info {
  const struct cms_oid *oid;
  enum kdf_kind kind;
  const EVP_MD *(*md)(void);
};
static const struct kdf_info kKdfs[] = {
    {&kOidEcdhSha1Kdf, KDF_X963, EVP_sha1},
    {&CMS_OID_ECDH_SHA256_KDF, KDF_X963, EVP_sha256},
    {&kOidEcdhSha384Kdf, KDF_X963, EVP_sha384},
    {&kOidEcdhSha512Kdf, KDF_X963, EVP_sha512},
    {&CMS_OID_ECDH_HKDF_SHA256, KDF_HKDF, EVP_sha256},
    {&kOidEcdhHkdfSha384, KDF_HKDF, EVP_sha384},
    {&kOidEcdhHkdfSha512, KDF_HKDF, EVP_sha512},
};

/* What postseal writes (RFC 5753 §8.1 / RFC 8418 §3 preferences). */
static const struct kdf_info *const kKdfX963Sha256 = &kKdfs[1];
static const struct kdf_info *const kKdfHkdfSha256 = &kKdfs[4];

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- small DER helpers ---- */

/* add_raw copies an encoded element; nothing when it is empty (absent). */
static int add_raw(CBB *cbb, const CBS *elem) {
  return CBS_len(elem) == 0 ||
         CBB_add_bytes(cbb, CBS_data(elem), CBS_len(elem));
}

/* get_optional_elem takes the next element, header included, when it has
 * tag; out is left empty otherwise. */
static int get_optional_elem(CBS *cbs, CBS *out, unsigned tag) {
  CBS_init(out, NULL, 0);
  return !CBS_peek_asn1_tag(cbs, tag) || CBS_get_asn1_element(cbs, out, tag);
}

/* alg_parse reads AlgorithmIdentifier ::= SEQUENCE { algorithm OBJECT
 * IDENTIFIER, parameters ANY OPTIONAL } (RFC 5280 §4.1.1.2) from the
 * element alg; params is the parameters element or empty. */
static int alg_parse(const CBS *alg, CBS *out_oid, CBS *out_params) {
  CBS in = *alg, seq;
  CBS_init(out_params, NULL, 0);
  if (!CBS_get_asn1(&in, &seq, CBS_ASN1_SEQUENCE) || CBS_len(&in) != 0 ||
      !CBS_get_asn1(&seq, out_oid, CBS_ASN1_OBJECT)) {
    return 0;
  }
  if (CBS_len(&seq) > 0 &&
      !CBS_get_any_asn1_element(&seq, out_params, NULL, NULL)) {
    return 0;
  }
  return CBS_len(&seq) == 0;
}

static int params_absent_or_null(const CBS *params) {
  static const uint8_t kNull[] = {CBS_ASN1_NULL, 0x00};
  return CBS_len(params) == 0 || CBS_mem_equal(params, kNull, sizeof(kNull));
}

/* attrs_ok checks a SET SIZE (1..MAX) OF Attribute ::= SEQUENCE {
 * attrType OBJECT IDENTIFIER, attrValues SET OF } (RFC 5652 §5.3) under
 * the implicit tag. */
static int attrs_ok(const CBS *elem, unsigned tag) {
  CBS in = *elem, set;
  if (!CBS_get_asn1(&in, &set, tag) || CBS_len(&in) != 0 ||
      CBS_len(&set) == 0) {
    return 0;
  }
  while (CBS_len(&set) > 0) {
    CBS attr, oid, values;
    if (!CBS_get_asn1(&set, &attr, CBS_ASN1_SEQUENCE) ||
        !CBS_get_asn1(&attr, &oid, CBS_ASN1_OBJECT) ||
        !CBS_get_asn1(&attr, &values, CBS_ASN1_SET) || CBS_len(&attr) != 0) {
      return 0;
    }
  }
  return 1;
}

/* segments_ok: the contents of a constructed [0] encryptedContent are
 * primitive OCTET STRING segments (X.690 §8.7.3; the gate has already
 * flattened nested constructed strings). */
static int segments_ok(CBS body) {
  while (CBS_len(&body) > 0) {
    if (!CBS_get_asn1(&body, NULL, CBS_ASN1_OCTETSTRING)) {
      return 0;
    }
  }
  return 1;
}

/* rkeyid_ski reads rKeyId [0] IMPLICIT RecipientKeyIdentifier ::=
 * SEQUENCE { subjectKeyIdentifier, date GeneralizedTime OPTIONAL, other
 * OtherKeyAttribute OPTIONAL } (RFC 5652 §6.2.2). */
static int rkeyid_ski(const CBS *rid, CBS *out_ski) {
  CBS in = *rid, body;
  if (!CBS_get_asn1(&in, &body, CTX_CONS(0)) || CBS_len(&in) != 0 ||
      !CBS_get_asn1(&body, out_ski, CBS_ASN1_OCTETSTRING) ||
      !CBS_get_optional_asn1(&body, NULL, NULL, CBS_ASN1_GENERALIZEDTIME) ||
      !CBS_get_optional_asn1(&body, NULL, NULL, CBS_ASN1_SEQUENCE)) {
    return 0;
  }
  return CBS_len(&body) == 0;
}

/* ---- RecipientInfo: parse and encode ---- */

int cms_rek_next(CBS *reks, CBS *out_rid, CBS *out_key) {
  /* RecipientEncryptedKey ::= SEQUENCE { rid KeyAgreeRecipientIdentifier,
   * encryptedKey EncryptedKey } (RFC 5652 §6.2.2) */
  CBS rek, ski;
  unsigned tag;
  if (!CBS_get_asn1(reks, &rek, CBS_ASN1_SEQUENCE) ||
      !CBS_get_any_asn1_element(&rek, out_rid, &tag, NULL) ||
      !CBS_get_asn1(&rek, out_key, CBS_ASN1_OCTETSTRING) ||
      CBS_len(&rek) != 0 || CBS_len(out_key) > CMS_ENV_MAX_KEY_BYTES) {
    return 0;
  }
  return tag == CBS_ASN1_SEQUENCE ||
         (tag == CTX_CONS(0) && rkeyid_ski(out_rid, &ski));
}

/* ktri_parse reads the contents of KeyTransRecipientInfo ::= SEQUENCE {
 * version, rid, keyEncryptionAlgorithm, encryptedKey } (RFC 5652
 * §6.2.1). */
static int ktri_parse(CBS seq, struct cms_ri *out) {
  unsigned tag;
  if (!CBS_get_asn1_uint64(&seq, &out->version) ||
      !CBS_get_any_asn1_element(&seq, &out->rid, &tag, NULL) ||
      !CBS_get_asn1_element(&seq, &out->key_enc_alg, CBS_ASN1_SEQUENCE) ||
      !CBS_get_asn1(&seq, &out->encrypted_key, CBS_ASN1_OCTETSTRING) ||
      CBS_len(&seq) != 0) {
    return CMS_ERR_SYNTAX;
  }
  if (CBS_len(&out->encrypted_key) > CMS_ENV_MAX_KEY_BYTES) {
    return CMS_ERR_LIMIT;
  }
  /* version 0 goes with issuerAndSerialNumber, 2 with
   * subjectKeyIdentifier. */
  if ((out->version == 0 && tag == CBS_ASN1_SEQUENCE) ||
      (out->version == 2 && tag == CTX_PRIM(0))) {
    return CMS_OK;
  }
  return CMS_ERR_SYNTAX;
}

/* kari_parse reads the contents of KeyAgreeRecipientInfo ::= SEQUENCE {
 * version (3), originator [0] EXPLICIT OriginatorIdentifierOrKey, ukm [1]
 * EXPLICIT UserKeyingMaterial OPTIONAL, keyEncryptionAlgorithm,
 * recipientEncryptedKeys } (RFC 5652 §6.2.2). */
static int kari_parse(CBS seq, struct cms_ri *out) {
  CBS orig, ukm, reks, rid, key;
  unsigned tag;
  if (!CBS_get_asn1_uint64(&seq, &out->version) || out->version != 3 ||
      !CBS_get_asn1(&seq, &orig, CTX_CONS(0)) ||
      !CBS_get_any_asn1_element(&orig, &out->originator, &tag, NULL) ||
      CBS_len(&orig) != 0 ||
      !CBS_get_optional_asn1(&seq, &ukm, &out->has_ukm, CTX_CONS(1)) ||
      (out->has_ukm && (!CBS_get_asn1(&ukm, &out->ukm, CBS_ASN1_OCTETSTRING) ||
                        CBS_len(&ukm) != 0)) ||
      !CBS_get_asn1_element(&seq, &out->key_enc_alg, CBS_ASN1_SEQUENCE) ||
      !CBS_get_asn1(&seq, &out->reks, CBS_ASN1_SEQUENCE) ||
      CBS_len(&seq) != 0) {
    return CMS_ERR_SYNTAX;
  }
  /* issuerAndSerialNumber, subjectKeyIdentifier [0], originatorKey [1] */
  if (tag != CBS_ASN1_SEQUENCE && tag != CTX_PRIM(0) && tag != CTX_CONS(1)) {
    return CMS_ERR_SYNTAX;
  }
  if (CBS_len(&out->ukm) > CMS_ENV_MAX_UKM) {
    return CMS_ERR_LIMIT;
  }
  reks = out->reks;
  while (CBS_len(&reks) > 0) {
    if (!cms_rek_next(&reks, &rid, &key)) {
      return CMS_ERR_SYNTAX;
    }
    out->num_reks++;
  }
  return CMS_OK;
}

int cms_ri_parse(CBS elem, struct cms_ri *out) {
  memset(out, 0, sizeof(*out));
  CBS whole = elem, body;
  unsigned tag;
  if (!CBS_get_any_asn1(&elem, &body, &tag) || CBS_len(&elem) != 0) {
    return CMS_ERR_SYNTAX;
  }
  /* RecipientInfo ::= CHOICE { ktri, kari [1], kekri [2], pwri [3],
   * ori [4] } (RFC 5652 §6.2) */
  switch (tag) {
  case CBS_ASN1_SEQUENCE:
    out->kind = CMS_RI_KTRI;
    return ktri_parse(body, out);
  case CTX_CONS(1):
    out->kind = CMS_RI_KARI;
    return kari_parse(body, out);
  case CTX_CONS(2):
  case CTX_CONS(3):
  case CTX_CONS(4):
    out->kind = CMS_RI_OTHER;
    out->other = whole;
    return CMS_OK;
  default:
    return CMS_ERR_SYNTAX;
  }
}

int cms_ri_encode(CBB *cbb, const struct cms_ri *ri) {
  CBB seq, orig, ukm, reks;
  switch (ri->kind) {
  case CMS_RI_KTRI:
    return CBB_add_asn1(cbb, &seq, CBS_ASN1_SEQUENCE) &&
           CBB_add_asn1_uint64(&seq, ri->version) && add_raw(&seq, &ri->rid) &&
           add_raw(&seq, &ri->key_enc_alg) &&
           CBB_add_asn1_octet_string(&seq, CBS_data(&ri->encrypted_key),
                                     CBS_len(&ri->encrypted_key)) &&
           CBB_flush(cbb);
  case CMS_RI_KARI:
    if (!CBB_add_asn1(cbb, &seq, CTX_CONS(1)) ||
        !CBB_add_asn1_uint64(&seq, ri->version) ||
        !CBB_add_asn1(&seq, &orig, CTX_CONS(0)) ||
        !add_raw(&orig, &ri->originator)) {
      return 0;
    }
    if (ri->has_ukm && (!CBB_add_asn1(&seq, &ukm, CTX_CONS(1)) ||
                        !CBB_add_asn1_octet_string(&ukm, CBS_data(&ri->ukm),
                                                   CBS_len(&ri->ukm)))) {
      return 0;
    }
    return add_raw(&seq, &ri->key_enc_alg) &&
           CBB_add_asn1(&seq, &reks, CBS_ASN1_SEQUENCE) &&
           add_raw(&reks, &ri->reks) && CBB_flush(cbb);
  default:
    return add_raw(cbb, &ri->other) && CBB_flush(cbb);
  }
}

/* ---- EnvelopedData / AuthEnvelopedData: parse and encode ---- */

/* env_parse_ris reads RecipientInfos ::= SET SIZE (1..MAX) OF
 * RecipientInfo (RFC 5652 §6.1), up to CMS_MAX_RECIPIENTS of them and as
 * many recipient keys in all. */
static int env_parse_ris(CBS *seq, struct cms_env *out, char *err,
                         size_t err_len) {
  CBS set;
  size_t num_keys = 0;
  if (!CBS_get_asn1(seq, &set, CBS_ASN1_SET) || CBS_len(&set) == 0) {
    return cms_set_err(err, err_len, CMS_ERR_SYNTAX, "bad RecipientInfos");
  }
  while (CBS_len(&set) > 0) {
    struct cms_ri ri;
    if (out->num_ris == CMS_MAX_RECIPIENTS) {
      return cms_set_err(err, err_len, CMS_ERR_LIMIT,
                         "more than %d RecipientInfos", CMS_MAX_RECIPIENTS);
    }
    CBS *elem = &out->ris[out->num_ris];
    int rc = CBS_get_any_asn1_element(&set, elem, NULL, NULL)
                 ? cms_ri_parse(*elem, &ri)
                 : CMS_ERR_SYNTAX;
    if (rc != CMS_OK) {
      return cms_set_err(err, err_len, rc, "RecipientInfo %zu: %s",
                         out->num_ris, cms_err_str(rc));
    }
    num_keys += ri.kind == CMS_RI_KARI ? ri.num_reks : 1;
    if (num_keys > CMS_MAX_RECIPIENTS) {
      return cms_set_err(err, err_len, CMS_ERR_LIMIT,
                         "more than %d recipient keys", CMS_MAX_RECIPIENTS);
    }
    out->num_ris++;
  }
  return CMS_OK;
}

/* env_parse_eci reads EncryptedContentInfo ::= SEQUENCE { contentType,
 * contentEncryptionAlgorithm, encryptedContent [0] IMPLICIT OCTET STRING
 * OPTIONAL } (RFC 5652 §6.1). */
static int env_parse_eci(CBS *seq, struct cms_env *out, char *err,
                         size_t err_len) {
  CBS eci, body, oid, params;
  unsigned tag;
  if (!CBS_get_asn1(seq, &eci, CBS_ASN1_SEQUENCE) ||
      !CBS_get_asn1(&eci, &out->content_type, CBS_ASN1_OBJECT) ||
      !CBS_get_asn1_element(&eci, &out->content_alg, CBS_ASN1_SEQUENCE) ||
      !alg_parse(&out->content_alg, &oid, &params)) {
    return cms_set_err(err, err_len, CMS_ERR_SYNTAX,
                       "bad EncryptedContentInfo");
  }
  if (CBS_len(&eci) == 0) {
    return cms_set_err(err, err_len, CMS_ERR_SYNTAX,
                       "no encryptedContent (detached content is not "
                       "supported)");
  }
  if (!CBS_get_any_asn1_element(&eci, &out->content, &tag, NULL) ||
      CBS_len(&eci) != 0 || (tag != CTX_PRIM(0) && tag != CTX_CONS(0))) {
    return cms_set_err(err, err_len, CMS_ERR_SYNTAX, "bad encryptedContent");
  }
  CBS elem = out->content;
  if (tag == CTX_CONS(0) &&
      (!CBS_get_asn1(&elem, &body, CTX_CONS(0)) || !segments_ok(body))) {
    return cms_set_err(err, err_len, CMS_ERR_SYNTAX,
                       "bad encryptedContent segments");
  }
  return CMS_OK;
}

/* env_parse_tail reads what follows EncryptedContentInfo: EnvelopedData
 * unprotectedAttrs [1] (RFC 5652 §6.1), or AuthEnvelopedData authAttrs
 * [1], mac, unauthAttrs [2] (RFC 5083 §2.1). */
static int env_parse_tail(CBS *seq, struct cms_env *out, char *err,
                          size_t err_len) {
  int ok = get_optional_elem(seq, &out->attrs, CTX_CONS(1)) &&
           (CBS_len(&out->attrs) == 0 || attrs_ok(&out->attrs, CTX_CONS(1)));
  if (ok && out->auth) {
    ok = CBS_get_asn1(seq, &out->mac, CBS_ASN1_OCTETSTRING) &&
         get_optional_elem(seq, &out->unauth, CTX_CONS(2)) &&
         (CBS_len(&out->unauth) == 0 || attrs_ok(&out->unauth, CTX_CONS(2)));
  }
  if (!ok || CBS_len(seq) != 0) {
    return cms_set_err(err, err_len, CMS_ERR_SYNTAX,
                       "bad attributes or mac after the content");
  }
  return CMS_OK;
}

int cms_env_parse(CBS der, struct cms_env *out, char *err, size_t err_len) {
  memset(out, 0, sizeof(*out));
  CBS type, content, seq;
  if (!cms_content_info_parse(der, &type, &content)) {
    return cms_set_err(err, err_len, CMS_ERR_SYNTAX, "bad ContentInfo");
  }
  if (cms_oid_eq(&type, &CMS_OID_AUTH_ENVELOPED_DATA)) {
    out->auth = 1;
  } else if (!cms_oid_eq(&type, &CMS_OID_ENVELOPED_DATA)) {
    return cms_set_err(err, err_len, CMS_ERR_UNSUPPORTED,
                       "not EnvelopedData or AuthEnvelopedData");
  }
  if (!CBS_get_asn1(&content, &seq, CBS_ASN1_SEQUENCE) ||
      CBS_len(&content) != 0 || !CBS_get_asn1_uint64(&seq, &out->version) ||
      !get_optional_elem(&seq, &out->originator_info, CTX_CONS(0))) {
    return cms_set_err(err, err_len, CMS_ERR_SYNTAX, "bad %s",
                       out->auth ? "AuthEnvelopedData" : "EnvelopedData");
  }
  /* RFC 5083 §2.1: version 0; RFC 5652 §6.1: 0, 2, 3 or 4. */
  if (out->auth ? out->version != 0 : out->version > 4 || out->version == 1) {
    return cms_set_err(err, err_len, CMS_ERR_UNSUPPORTED, "version %llu",
                       (unsigned long long)out->version);
  }
  int rc = env_parse_ris(&seq, out, err, err_len);
  if (rc == CMS_OK) {
    rc = env_parse_eci(&seq, out, err, err_len);
  }
  if (rc == CMS_OK) {
    rc = env_parse_tail(&seq, out, err, err_len);
  }
  return rc;
}

int cms_env_encode(CBB *cbb, const struct cms_env *env) {
  CBB ci, explicit0, seq, set, eci, oid, mac;
  if (!cms_content_info_begin(cbb, &ci, &explicit0,
                              env->auth ? &CMS_OID_AUTH_ENVELOPED_DATA
                                        : &CMS_OID_ENVELOPED_DATA) ||
      !CBB_add_asn1(&explicit0, &seq, CBS_ASN1_SEQUENCE) ||
      !CBB_add_asn1_uint64(&seq, env->version) ||
      !add_raw(&seq, &env->originator_info) ||
      !CBB_add_asn1(&seq, &set, CBS_ASN1_SET)) {
    return 0;
  }
  for (size_t i = 0; i < env->num_ris; i++) {
    if (!add_raw(&set, &env->ris[i])) {
      return 0;
    }
  }
  if (!CBB_add_asn1(&seq, &eci, CBS_ASN1_SEQUENCE) ||
      !CBB_add_asn1(&eci, &oid, CBS_ASN1_OBJECT) ||
      !CBB_add_bytes(&oid, CBS_data(&env->content_type),
                     CBS_len(&env->content_type)) ||
      !add_raw(&eci, &env->content_alg) || !add_raw(&eci, &env->content) ||
      !add_raw(&seq, &env->attrs)) {
    return 0;
  }
  if (env->auth &&
      (!CBB_add_asn1(&seq, &mac, CBS_ASN1_OCTETSTRING) ||
       !CBB_add_bytes(&mac, CBS_data(&env->mac), CBS_len(&env->mac)) ||
       !add_raw(&seq, &env->unauth))) {
    return 0;
  }
  return CBB_flush(cbb);
}

/* ---- key derivation and agreement (both directions) ---- */

/* add_shared_info writes ECC-CMS-SharedInfo ::= SEQUENCE { keyInfo
 * AlgorithmIdentifier, entityUInfo [0] EXPLICIT OCTET STRING OPTIONAL,
 * suppPubInfo [2] EXPLICIT OCTET STRING } (RFC 5753 §7.2, used as is by
 * RFC 8418 §2.3): keyInfo is the key-wrap algorithm, entityUInfo the ukm,
 * suppPubInfo the KEK length in bits as 32 bits big-endian. */
static int add_shared_info(CBB *cbb, const CBS *wrap_alg, const CBS *ukm,
                           size_t kek_len) {
  CBB seq, ctx0, ctx2, oct;
  if (!CBB_add_asn1(cbb, &seq, CBS_ASN1_SEQUENCE) || !add_raw(&seq, wrap_alg)) {
    return 0;
  }
  if (ukm != NULL &&
      (!CBB_add_asn1(&seq, &ctx0, CTX_CONS(0)) ||
       !CBB_add_asn1_octet_string(&ctx0, CBS_data(ukm), CBS_len(ukm)))) {
    return 0;
  }
  return CBB_add_asn1(&seq, &ctx2, CTX_CONS(2)) &&
         CBB_add_asn1(&ctx2, &oct, CBS_ASN1_OCTETSTRING) &&
         CBB_add_u32(&oct, (uint32_t)(kek_len * 8)) && CBB_flush(cbb);
}

/* kdf_x963 is the ANSI X9.63 KDF (SEC 1 §3.6.1) RFC 5753 §7.2 names:
 * K(i) = Hash(Z || Counter || SharedInfo), Counter from 1, 32 bits. */
static int kdf_x963(const EVP_MD *md, const uint8_t *z, size_t z_len,
                    const uint8_t *info, size_t info_len, uint8_t *out,
                    size_t out_len) {
  uint8_t block[EVP_MAX_MD_SIZE];
  EVP_MD_CTX ctx;
  EVP_MD_CTX_init(&ctx);
  int ok = 1;
  for (uint32_t counter = 1; ok && out_len > 0; counter++) {
    uint8_t be[4] = {(uint8_t)(counter >> 24), (uint8_t)(counter >> 16),
                     (uint8_t)(counter >> 8), (uint8_t)counter};
    unsigned n = 0;
    ok = EVP_DigestInit_ex(&ctx, md, NULL) &&
         EVP_DigestUpdate(&ctx, z, z_len) &&
         EVP_DigestUpdate(&ctx, be, sizeof(be)) &&
         EVP_DigestUpdate(&ctx, info, info_len) &&
         EVP_DigestFinal_ex(&ctx, block, &n) && n > 0;
    size_t take = ok ? (n < out_len ? n : out_len) : 0;
    memcpy(out, block, take);
    out += take;
    out_len -= take;
  }
  EVP_MD_CTX_cleanup(&ctx);
  OPENSSL_cleanse(block, sizeof(block));
  return ok;
}

/* kek_derive derives the key-encryption key from the shared secret z. */
static int kek_derive(const struct kdf_info *kdf, const uint8_t *z,
                      size_t z_len, const CBS *wrap_alg, const CBS *ukm,
                      uint8_t *kek, size_t kek_len) {
  CBB cbb;
  uint8_t *info = NULL;
  size_t info_len = 0;
  int ok = CBB_init(&cbb, 64) &&
           add_shared_info(&cbb, wrap_alg, ukm, kek_len) &&
           CBB_finish(&cbb, &info, &info_len);
  if (!ok) {
    CBB_cleanup(&cbb);
    return 0;
  }
  /* RFC 8418 §2.2: HKDF with the shared secret as IKM, no salt, and the
   * DER of ECC-CMS-SharedInfo as info. */
  ok = kdf->kind == KDF_X963
           ? kdf_x963(kdf->md(), z, z_len, info, info_len, kek, kek_len)
           : HKDF(kek, kek_len, kdf->md(), z, z_len, NULL, 0, info, info_len);
  OPENSSL_free(info);
  ERR_clear_error();
  return ok;
}

/* ---- encryption ---- */

/* The state of one cms_encrypt: the content key and what is built. */
struct enc {
  const struct cipher_info *ci;
  uint8_t cek[MAX_CEK_LEN];
  uint8_t iv[AES_IV_LEN]; /* CBC IV, or the GCM nonce in its first 12 */
  int all_ktri_v0;        /* RFC 5652 §6.1: EnvelopedData version 0 */
  CBB ris;                /* the RecipientInfo elements, one after another */
  uint8_t *content;       /* encryptedContent [0] element */
  size_t content_len;
  uint8_t tag[16]; /* GCM */
};

/* An ephemeral key agreement with a recipient's static key. */
struct eph {
  uint8_t pub[65]; /* P-256 uncompressed point, or X25519 u */
  size_t pub_len;
  uint8_t z[32];
};

/* eph_p256 makes an ephemeral P-256 key and the ECDH secret (the X
 * coordinate, RFC 5753 §3.1.1) with the recipient's key. */
static int eph_p256(EVP_PKEY *peer, struct eph *out) {
  const EC_KEY *peer_ec = EVP_PKEY_get0_EC_KEY(peer);
  EC_KEY *eph = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
  int ok =
      peer_ec != NULL && eph != NULL && EC_KEY_generate_key(eph) &&
      ECDH_compute_key(out->z, sizeof(out->z), EC_KEY_get0_public_key(peer_ec),
                       eph, NULL) == (int)sizeof(out->z);
  if (ok) {
    out->pub_len = EC_POINT_point2oct(
        EC_KEY_get0_group(eph), EC_KEY_get0_public_key(eph),
        POINT_CONVERSION_UNCOMPRESSED, out->pub, sizeof(out->pub), NULL);
    ok = out->pub_len == sizeof(out->pub);
  }
  EC_KEY_free(eph);
  return ok;
}

/* eph_x25519: the same with X25519 (RFC 8418 §2, RFC 7748 §6.1). */
static int eph_x25519(EVP_PKEY *peer, struct eph *out) {
  uint8_t peer_pub[32], priv[32];
  size_t len = sizeof(peer_pub);
  int ok = EVP_PKEY_get_raw_public_key(peer, peer_pub, &len) && len == 32;
  if (ok) {
    X25519_keypair(out->pub, priv);
    out->pub_len = 32;
    /* X25519() fails on a low-order point (all-zero secret). */
    ok = X25519(out->z, priv, peer_pub);
  }
  OPENSSL_cleanse(priv, sizeof(priv));
  return ok;
}

/* add_oaep_alg writes id-RSAES-OAEP with RSAES-OAEP-params { hashFunc [0]
 * sha256, maskGenFunc [1] mgf1 sha256 }, pSourceFunc at its default, hash
 * parameters absent (RFC 8017 §A.2.1, RFC 4055 §4.1). */
static int add_oaep_alg(CBB *cbb) {
  CBB seq, params, hash, mgf, mgf_seq;
  return CBB_add_asn1(cbb, &seq, CBS_ASN1_SEQUENCE) &&
         cms_add_oid(&seq, &CMS_OID_RSA_OAEP) &&
         CBB_add_asn1(&seq, &params, CBS_ASN1_SEQUENCE) &&
         CBB_add_asn1(&params, &hash, CTX_CONS(0)) &&
         cms_add_alg(&hash, &CMS_OID_SHA256, 0) &&
         CBB_add_asn1(&params, &mgf, CTX_CONS(1)) &&
         CBB_add_asn1(&mgf, &mgf_seq, CBS_ASN1_SEQUENCE) &&
         cms_add_oid(&mgf_seq, &CMS_OID_MGF1) &&
         cms_add_alg(&mgf_seq, &CMS_OID_SHA256, 0) && CBB_flush(cbb);
}

/* rsa_encrypt encrypts the content key to an RSA public key. */
static int rsa_encrypt(EVP_PKEY *pub, int oaep, const uint8_t *in,
                       size_t in_len, uint8_t *out, size_t out_cap,
                       size_t *out_len) {
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(pub, NULL);
  int ok = ctx != NULL && EVP_PKEY_encrypt_init(ctx);
  if (ok && oaep) {
    ok = EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) &&
         EVP_PKEY_CTX_set_rsa_oaep_md(ctx, EVP_sha256()) &&
         EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256());
  } else if (ok) {
    ok = EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING);
  }
  *out_len = out_cap;
  ok = ok && EVP_PKEY_encrypt(ctx, out, out_len, in, in_len);
  EVP_PKEY_CTX_free(ctx);
  ERR_clear_error();
  return ok;
}

/* ktri_add writes KeyTransRecipientInfo ::= SEQUENCE { version (0 with
 * issuerAndSerialNumber, 2 with subjectKeyIdentifier), rid,
 * keyEncryptionAlgorithm, encryptedKey } (RFC 5652 §6.2.1). */
static int ktri_add(CBB *cbb, const struct cms_recipient *r, EVP_PKEY *pub,
                    const struct enc *e) {
  uint8_t ek[CMS_ENV_MAX_KEY_BYTES];
  size_t ek_len;
  if (EVP_PKEY_size(pub) > (int)sizeof(ek) ||
      RSA_bits(EVP_PKEY_get0_RSA(pub)) < 2048 ||
      !rsa_encrypt(pub, !r->rsa_pkcs1, e->cek, e->ci->key_len, ek, sizeof(ek),
                   &ek_len)) {
    return CMS_ERR_KEY;
  }
  CBB seq;
  int ok = CBB_add_asn1(cbb, &seq, CBS_ASN1_SEQUENCE) &&
           CBB_add_asn1_uint64(&seq, r->use_ski ? 2 : 0) &&
           cms_add_sid(&seq, r->cert, r->use_ski) &&
           (r->rsa_pkcs1 ? cms_add_alg(&seq, &CMS_OID_RSA, 1)
                         : add_oaep_alg(&seq)) &&
           CBB_add_asn1_octet_string(&seq, ek, ek_len) && CBB_flush(cbb);
  return ok ? CMS_OK : CMS_ERR_INTERNAL;
}

/* add_kari_rid writes KeyAgreeRecipientIdentifier ::= CHOICE {
 * issuerAndSerialNumber, rKeyId [0] IMPLICIT RecipientKeyIdentifier }
 * (RFC 5652 §6.2.2): not the [0] of cms_add_sid. */
static int add_kari_rid(CBB *cbb, X509 *cert, int use_ski) {
  uint8_t ski[64];
  size_t ski_len;
  CBB rkeyid;
  if (!use_ski) {
    return cms_add_ias(cbb, cert);
  }
  return cms_cert_ski(cert, ski, sizeof(ski), &ski_len) &&
         CBB_add_asn1(cbb, &rkeyid, CTX_CONS(0)) &&
         CBB_add_asn1_octet_string(&rkeyid, ski, ski_len) && CBB_flush(cbb);
}

/* add_kari writes KeyAgreeRecipientInfo ::= [1] SEQUENCE { version 3,
 * originator [0] originatorKey [1] { algorithm, publicKey }, (no ukm),
 * keyEncryptionAlgorithm { kdf, KeyWrapAlgorithm }, recipientEncryptedKeys
 * { { rid, encryptedKey } } } (RFC 5652 §6.2.2, RFC 5753 §3.1.1, RFC 8418
 * §2). */
static int add_kari(CBB *cbb, const struct cms_recipient *r, int x25519,
                    const struct eph *eph, const struct kdf_info *kdf,
                    const CBS *wrap_alg, const uint8_t *wrapped,
                    size_t wrapped_len) {
  CBB kari, orig, okey, alg, bits, kea, reks, rek;
  return CBB_add_asn1(cbb, &kari, CTX_CONS(1)) &&
         CBB_add_asn1_uint64(&kari, 3) &&
         CBB_add_asn1(&kari, &orig, CTX_CONS(0)) &&
         CBB_add_asn1(&orig, &okey, CTX_CONS(1)) &&
         CBB_add_asn1(&okey, &alg, CBS_ASN1_SEQUENCE) &&
         /* id-ecPublicKey parameters absent, as OpenSSL writes them
          * (RFC 5753 §7.1.2 allows it); id-X25519 never has any. */
         cms_add_oid(&alg, x25519 ? &CMS_OID_X25519 : &CMS_OID_EC_PUBLIC_KEY) &&
         CBB_add_asn1(&okey, &bits, CBS_ASN1_BITSTRING) &&
         CBB_add_u8(&bits, 0) && CBB_add_bytes(&bits, eph->pub, eph->pub_len) &&
         CBB_add_asn1(&kari, &kea, CBS_ASN1_SEQUENCE) &&
         cms_add_oid(&kea, kdf->oid) && add_raw(&kea, wrap_alg) &&
         CBB_add_asn1(&kari, &reks, CBS_ASN1_SEQUENCE) &&
         CBB_add_asn1(&reks, &rek, CBS_ASN1_SEQUENCE) &&
         add_kari_rid(&rek, r->cert, r->use_ski) &&
         CBB_add_asn1_octet_string(&rek, wrapped, wrapped_len) &&
         CBB_flush(cbb);
}

/* kari_build agrees an ephemeral key with the recipient's, derives the KEK
 * (SHA-256 X9.63 for P-256, HKDF-SHA256 for X25519) and wraps the content
 * key with AES Key Wrap of the content key's size, as OpenSSL does. */
static int kari_build(CBB *cbb, const struct cms_recipient *r, EVP_PKEY *pub,
                      int x25519, const struct enc *e) {
  static const uint8_t kWrap128[] = {0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48,
                                     0x01, 0x65, 0x03, 0x04, 0x01, 0x05};
  static const uint8_t kWrap256[] = {0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48,
                                     0x01, 0x65, 0x03, 0x04, 0x01, 0x2d};
  size_t key_len = e->ci->key_len;
  CBS wrap_alg;
  CBS_init(&wrap_alg, key_len == 16 ? kWrap128 : kWrap256, sizeof(kWrap256));
  const struct kdf_info *kdf = x25519 ? kKdfHkdfSha256 : kKdfX963Sha256;
  struct eph eph;
  uint8_t kek[MAX_CEK_LEN], wrapped[MAX_CEK_LEN + WRAP_OVERHEAD];
  AES_KEY aes;
  int ok =
      (x25519 ? eph_x25519(pub, &eph) : eph_p256(pub, &eph)) &&
      kek_derive(kdf, eph.z, sizeof(eph.z), &wrap_alg, NULL, kek, key_len) &&
      AES_set_encrypt_key(kek, (unsigned)key_len * 8, &aes) == 0 &&
      AES_wrap_key(&aes, NULL, wrapped, e->cek, key_len) ==
          (int)(key_len + WRAP_OVERHEAD);
  int rc = ok ? CMS_OK : CMS_ERR_KEY;
  if (ok && !add_kari(cbb, r, x25519, &eph, kdf, &wrap_alg, wrapped,
                      key_len + WRAP_OVERHEAD)) {
    rc = CMS_ERR_INTERNAL;
  }
  OPENSSL_cleanse(&eph, sizeof(eph));
  OPENSSL_cleanse(kek, sizeof(kek));
  OPENSSL_cleanse(&aes, sizeof(aes));
  return rc;
}

/* enc_recipient adds one RecipientInfo to e->ris. */
static int enc_recipient(struct enc *e, const struct cms_recipient *r, size_t i,
                         char *err, size_t err_len) {
  uint8_t ski[64];
  size_t ski_len;
  if (r->cert == NULL) {
    return cms_set_err(err, err_len, CMS_ERR_KEY, "recipient %zu: no cert", i);
  }
  if (r->use_ski && !cms_cert_ski(r->cert, ski, sizeof(ski), &ski_len)) {
    return cms_set_err(err, err_len, CMS_ERR_KEY,
                       "recipient %zu: no subjectKeyIdentifier", i);
  }
  int type = cms_pkey_type(r->cert);
  EVP_PKEY *pub = X509_get_pubkey(r->cert);
  int rc = CMS_ERR_KEY;
  if (pub != NULL && type == EVP_PKEY_RSA) {
    rc = ktri_add(&e->ris, r, pub, e);
    e->all_ktri_v0 &= !r->use_ski;
  } else if (pub != NULL && (type == EVP_PKEY_EC || type == EVP_PKEY_X25519)) {
    rc = kari_build(&e->ris, r, pub, type == EVP_PKEY_X25519, e);
    e->all_ktri_v0 = 0;
  }
  EVP_PKEY_free(pub);
  ERR_clear_error();
  if (rc != CMS_OK) {
    return cms_set_err(err, err_len, rc,
                       "recipient %zu: cannot wrap the key for its "
                       "certificate (RSA 2048+, P-256 or X25519)",
                       i);
  }
  return CMS_OK;
}

/* enc_seal_gcm encrypts into [0] with AES-GCM and a 16-byte tag and writes
 * the algorithm with GCMParameters { aes-nonce (12 bytes), aes-ICVlen 16 }
 * (RFC 5084 §3.2). No authAttrs: the AAD is empty (RFC 5083 §2.2). */
static int enc_seal_gcm(struct enc *e, CBB *alg, CBB *content,
                        const uint8_t *in, size_t in_len) {
  const EVP_AEAD *aead =
      e->ci->key_len == 16 ? EVP_aead_aes_128_gcm() : EVP_aead_aes_256_gcm();
  CBB seq, params;
  uint8_t *ct;
  size_t tag_len = 0;
  EVP_AEAD_CTX ctx;
  if (!EVP_AEAD_CTX_init(&ctx, aead, e->cek, e->ci->key_len, sizeof(e->tag),
                         NULL)) {
    return 0;
  }
  int ok = CBB_add_space(content, &ct, in_len) &&
           EVP_AEAD_CTX_seal_scatter(&ctx, ct, e->tag, &tag_len, sizeof(e->tag),
                                     e->iv, GCM_NONCE_LEN, in, in_len, NULL, 0,
                                     NULL, 0) &&
           tag_len == sizeof(e->tag) &&
           CBB_add_asn1(alg, &seq, CBS_ASN1_SEQUENCE) &&
           cms_add_oid(&seq, e->ci->oid) &&
           CBB_add_asn1(&seq, &params, CBS_ASN1_SEQUENCE) &&
           CBB_add_asn1_octet_string(&params, e->iv, GCM_NONCE_LEN) &&
           CBB_add_asn1_uint64(&params, sizeof(e->tag)) && CBB_flush(alg);
  EVP_AEAD_CTX_cleanup(&ctx);
  return ok;
}

/* enc_seal_cbc encrypts into [0] with AES-CBC and PKCS#7 padding (RFC
 * 5652 §6.3) and writes the algorithm with the IV as its parameter (RFC
 * 3565 §4.1). */
static int enc_seal_cbc(struct enc *e, CBB *alg, CBB *content,
                        const uint8_t *in, size_t in_len) {
  const EVP_CIPHER *cipher =
      e->ci->key_len == 16 ? EVP_aes_128_cbc() : EVP_aes_256_cbc();
  size_t padded = (in_len / AES_IV_LEN + 1) * AES_IV_LEN;
  uint8_t *ct;
  int n1 = 0, n2 = 0;
  CBB seq;
  EVP_CIPHER_CTX ctx;
  EVP_CIPHER_CTX_init(&ctx);
  int ok = CBB_add_space(content, &ct, padded) &&
           EVP_EncryptInit_ex(&ctx, cipher, NULL, e->cek, e->iv) &&
           EVP_EncryptUpdate(&ctx, ct, &n1, in, (int)in_len) &&
           EVP_EncryptFinal_ex(&ctx, ct + n1, &n2) &&
           (size_t)n1 + (size_t)n2 == padded &&
           CBB_add_asn1(alg, &seq, CBS_ASN1_SEQUENCE) &&
           cms_add_oid(&seq, e->ci->oid) &&
           CBB_add_asn1_octet_string(&seq, e->iv, AES_IV_LEN) && CBB_flush(alg);
  EVP_CIPHER_CTX_cleanup(&ctx);
  return ok;
}

/* enc_content encrypts the content: e->content gets the [0] element, alg
 * the contentEncryptionAlgorithm. */
static int enc_content(struct enc *e, CBB *alg, const uint8_t *in,
                       size_t in_len) {
  CBB cbb, content;
  int ok = CBB_init(&cbb, in_len + 64) &&
           CBB_add_asn1(&cbb, &content, CTX_PRIM(0)) &&
           (e->ci->gcm ? enc_seal_gcm(e, alg, &content, in, in_len)
                       : enc_seal_cbc(e, alg, &content, in, in_len)) &&
           CBB_finish(&cbb, &e->content, &e->content_len);
  if (!ok) {
    CBB_cleanup(&cbb);
  }
  ERR_clear_error();
  return ok;
}

/* der_set_cmp orders SET OF elements by their encodings (X.690 §11.6). */
static int der_set_cmp(const void *a, const void *b) {
  const CBS *x = a, *y = b;
  size_t n = CBS_len(x) < CBS_len(y) ? CBS_len(x) : CBS_len(y);
  int c = memcmp(CBS_data(x), CBS_data(y), n);
  if (c != 0) {
    return c;
  }
  return CBS_len(x) < CBS_len(y) ? -1 : CBS_len(x) > CBS_len(y);
}

/* enc_output fills the EnvelopedData / AuthEnvelopedData and appends its
 * DER to out. */
static int enc_output(struct buf *out, struct enc *e, struct cms_env *env,
                      const CBS *alg) {
  CBS ris;
  CBS_init(&ris, CBB_data(&e->ris), CBB_len(&e->ris));
  while (CBS_len(&ris) > 0 && env->num_ris < CMS_MAX_RECIPIENTS &&
         CBS_get_any_asn1_element(&ris, &env->ris[env->num_ris], NULL, NULL)) {
    env->num_ris++;
  }
  qsort(env->ris, env->num_ris, sizeof(env->ris[0]), der_set_cmp);
  env->auth = e->ci->gcm;
  /* RFC 5083 §2.1: 0; RFC 5652 §6.1: 0 when every RecipientInfo is a
   * version 0 KeyTransRecipientInfo, else 2. */
  env->version = e->ci->gcm || e->all_ktri_v0 ? 0 : 2;
  CBS_init(&env->content_type, CMS_OID_DATA.der, CMS_OID_DATA.len);
  env->content_alg = *alg;
  CBS_init(&env->content, e->content, e->content_len);
  CBS_init(&env->mac, e->tag, e->ci->gcm ? sizeof(e->tag) : 0);
  CBB cbb;
  uint8_t *der = NULL;
  size_t der_len = 0;
  int ok = CBS_len(&ris) == 0 && CBB_init(&cbb, e->content_len + 256) &&
           cms_env_encode(&cbb, env) && CBB_finish(&cbb, &der, &der_len);
  if (!ok) {
    CBB_cleanup(&cbb);
  }
  ok = ok && buf_append(out, der, der_len) == 0;
  OPENSSL_free(der);
  return ok;
}

/* enc_check checks the arguments of cms_encrypt. */
static int enc_check(const struct cms_recipient *rcpts, size_t num_rcpts,
                     size_t content_len, const struct cipher_info *ci,
                     char *err, size_t err_len) {
  if (ci == NULL) {
    return cms_set_err(err, err_len, CMS_ERR_UNSUPPORTED, "unknown cipher");
  }
  if (rcpts == NULL || num_rcpts == 0) {
    return cms_set_err(err, err_len, CMS_ERR_KEY, "no recipients");
  }
  if (num_rcpts > CMS_MAX_RECIPIENTS) {
    return cms_set_err(err, err_len, CMS_ERR_LIMIT, "more than %d recipients",
                       CMS_MAX_RECIPIENTS);
  }
  if (content_len > CMS_MAX_INPUT) {
    return cms_set_err(err, err_len, CMS_ERR_LIMIT, "content over %u bytes",
                       CMS_MAX_INPUT);
  }
  return CMS_OK;
}

int cms_encrypt(struct buf *out, const struct cms_recipient *rcpts,
                size_t num_rcpts, const uint8_t *content, size_t content_len,
                enum cms_cipher cipher, char *err, size_t err_len) {
  const struct cipher_info *ci = NULL;
  for (size_t i = 0; i < ARRAY_LEN(kCiphers); i++) {
    ci = kCiphers[i].cipher == cipher ? &kCiphers[i] : ci;
  }
  int rc = enc_check(rcpts, num_rcpts, content_len, ci, err, err_len);
  if (rc != CMS_OK) {
    return rc;
  }
  struct enc e = {.ci = ci, .all_ktri_v0 = 1};
  struct cms_env *env = OPENSSL_malloc(sizeof(*env));
  CBB alg;
  CBB_zero(&alg);
  if (env == NULL || !CBB_init(&e.ris, 512 * num_rcpts) ||
      !CBB_init(&alg, 64) || !RAND_bytes(e.cek, ci->key_len) ||
      !RAND_bytes(e.iv, sizeof(e.iv))) {
    rc = cms_set_err(err, err_len, CMS_ERR_INTERNAL, "out of memory");
  }
  for (size_t i = 0; rc == CMS_OK && i < num_rcpts; i++) {
    rc = enc_recipient(&e, &rcpts[i], i, err, err_len);
  }
  if (rc == CMS_OK && !enc_content(&e, &alg, content, content_len)) {
    rc = cms_set_err(err, err_len, CMS_ERR_INTERNAL, "encryption failed");
  }
  if (rc == CMS_OK) {
    memset(env, 0, sizeof(*env));
    CBS alg_der;
    CBS_init(&alg_der, CBB_data(&alg), CBB_len(&alg));
    if (!enc_output(out, &e, env, &alg_der)) {
      rc = cms_set_err(err, err_len, CMS_ERR_INTERNAL, "out of memory");
    }
  }
  OPENSSL_free(env);
  CBB_cleanup(&alg);
  CBB_cleanup(&e.ris);
  OPENSSL_free(e.content);
  OPENSSL_cleanse(&e, sizeof(e));
  return rc;
}

/* ---- decryption ---- */

/* A parsed contentEncryptionAlgorithm. */
struct cea {
  const struct cipher_info *ci;
  uint8_t iv[AES_IV_LEN]; /* CBC IV, or the GCM nonce in its first 12 */
  size_t tag_len;         /* GCM aes-ICVlen */
};

/* The state of one cms_decrypt. */
struct dec {
  const struct cms_signer *signer;
  const struct cms_env *env;
  struct cea cea;
  CBS ct;              /* the ciphertext, flattened */
  uint8_t *ct_storage; /* when encryptedContent was in segments */
  uint8_t *aad;        /* GCM: authAttrs as SET OF, or NULL */
  uint8_t *plain;      /* scratch: ciphertext length + a block */
  size_t plain_len;    /* after a successful open */
  int rc;              /* the most telling failure so far */
  size_t tries;        /* RecipientInfos tried with a private key */
  const char *why;     /* its reason */
};

/* dec_note keeps the most telling of the failures seen: a failed
 * decryption says more than a key of the wrong type, than an unsupported
 * algorithm, than no recipient at all. */
static void dec_note(struct dec *d, int rc, const char *why) {
  static const int order[] = {CMS_ERR_NO_RECIPIENT, CMS_ERR_UNSUPPORTED,
                              CMS_ERR_KEY,          CMS_ERR_DECRYPT,
                              CMS_ERR_SYNTAX,       CMS_ERR_LIMIT,
                              CMS_ERR_INTERNAL};
  size_t have = 0, got = 0;
  for (size_t i = 0; i < ARRAY_LEN(order); i++) {
    have = order[i] == d->rc ? i : have;
    got = order[i] == rc ? i : got;
  }
  if (got > have) {
    d->rc = rc;
    d->why = why;
  }
}

/* cea_parse reads the contentEncryptionAlgorithm: AES-CBC with AES-IV
 * (RFC 3565 §4.1) or AES-GCM with GCMParameters ::= SEQUENCE { aes-nonce
 * OCTET STRING, aes-ICVlen INTEGER DEFAULT 12 } (RFC 5084 §3.2). */
static int cea_parse(const CBS *alg, struct cea *out) {
  CBS oid, params, iv, seq;
  uint64_t icv = 12;
  if (!alg_parse(alg, &oid, &params)) {
    return CMS_ERR_SYNTAX;
  }
  out->ci = NULL;
  for (size_t i = 0; i < ARRAY_LEN(kCiphers); i++) {
    out->ci = cms_oid_eq(&oid, kCiphers[i].oid) ? &kCiphers[i] : out->ci;
  }
  if (out->ci == NULL) {
    return CMS_ERR_UNSUPPORTED;
  }
  if (!out->ci->gcm) {
    if (!CBS_get_asn1(&params, &iv, CBS_ASN1_OCTETSTRING) ||
        CBS_len(&params) != 0 || CBS_len(&iv) != AES_IV_LEN) {
      return CMS_ERR_SYNTAX;
    }
    memcpy(out->iv, CBS_data(&iv), AES_IV_LEN);
    return CMS_OK;
  }
  if (!CBS_get_asn1(&params, &seq, CBS_ASN1_SEQUENCE) ||
      CBS_len(&params) != 0 || !CBS_get_asn1(&seq, &iv, CBS_ASN1_OCTETSTRING) ||
      (CBS_len(&seq) > 0 && !CBS_get_asn1_uint64(&seq, &icv)) ||
      CBS_len(&seq) != 0) {
    return CMS_ERR_SYNTAX;
  }
  /* RFC 5084 §3.2: ICVlen 12 to 16; nonce 12 is all anyone writes. */
  if (CBS_len(&iv) != GCM_NONCE_LEN || icv < 12 || icv > 16) {
    return CMS_ERR_UNSUPPORTED;
  }
  memcpy(out->iv, CBS_data(&iv), GCM_NONCE_LEN);
  out->tag_len = (size_t)icv;
  return CMS_OK;
}

/* content_bytes flattens encryptedContent: primitive, or (from BER
 * producers like `openssl cms -stream`) constructed of OCTET STRING
 * segments the gate made definite but cannot merge, as the tag is
 * implicit. */
static int content_bytes(struct dec *d, const CBS *elem) {
  CBS in = *elem, body, seg;
  unsigned tag;
  CBB cbb;
  if (!CBS_get_any_asn1(&in, &body, &tag)) {
    return 0;
  }
  if (tag == CTX_PRIM(0)) {
    d->ct = body;
    return 1;
  }
  size_t len = 0;
  int ok = CBB_init(&cbb, CBS_len(&body));
  while (ok && CBS_len(&body) > 0) {
    ok = CBS_get_asn1(&body, &seg, CBS_ASN1_OCTETSTRING) &&
         CBB_add_bytes(&cbb, CBS_data(&seg), CBS_len(&seg));
  }
  if (!ok || !CBB_finish(&cbb, &d->ct_storage, &len)) {
    CBB_cleanup(&cbb);
    return 0;
  }
  CBS_init(&d->ct, d->ct_storage, len);
  return 1;
}

/* dec_setup checks the content's algorithm and readies the buffers. */
static int dec_setup(struct dec *d, char *err, size_t err_len) {
  const struct cms_env *env = d->env;
  int rc = cea_parse(&env->content_alg, &d->cea);
  if (rc != CMS_OK) {
    return cms_set_err(err, err_len, rc, "content encryption algorithm: %s",
                       cms_err_str(rc));
  }
  /* RFC 5084 §1: GCM only in AuthEnvelopedData; CBC has no tag. */
  if (d->cea.ci->gcm != env->auth) {
    return cms_set_err(err, err_len, CMS_ERR_UNSUPPORTED, "%s content in %s",
                       d->cea.ci->gcm ? "AES-GCM" : "AES-CBC",
                       env->auth ? "AuthEnvelopedData" : "EnvelopedData");
  }
  /* S/MIME encrypts MIME entities (RFC 8551 §3.3); anything else would
   * also need authAttrs naming it (RFC 5083 §2.1). */
  if (!cms_oid_eq(&env->content_type, &CMS_OID_DATA)) {
    return cms_set_err(err, err_len, CMS_ERR_UNSUPPORTED,
                       "encrypted content type is not id-data");
  }
  if (env->auth && CBS_len(&env->mac) != d->cea.tag_len) {
    return cms_set_err(err, err_len, CMS_ERR_SYNTAX,
                       "mac is not aes-ICVlen bytes");
  }
  if (!content_bytes(d, &env->content)) {
    return cms_set_err(err, err_len, CMS_ERR_INTERNAL, "out of memory");
  }
  /* RFC 5083 §2.2: authAttrs are authenticated as their DER with the
   * SET OF tag in place of [1]. */
  if (env->auth && CBS_len(&env->attrs) > 0) {
    d->aad = OPENSSL_memdup(CBS_data(&env->attrs), CBS_len(&env->attrs));
    if (d->aad == NULL) {
      return cms_set_err(err, err_len, CMS_ERR_INTERNAL, "out of memory");
    }
    d->aad[0] = 0x31; /* universal, constructed, SET */
  }
  d->plain = OPENSSL_malloc(CBS_len(&d->ct) + AES_IV_LEN);
  if (d->plain == NULL) {
    return cms_set_err(err, err_len, CMS_ERR_INTERNAL, "out of memory");
  }
  return CMS_OK;
}

/* open_gcm opens the whole content at once: no plaintext leaves unless
 * the tag over nonce, authAttrs and ciphertext verified. */
static int open_gcm(struct dec *d, const uint8_t *cek) {
  const EVP_AEAD *aead = d->cea.ci->key_len == 16 ? EVP_aead_aes_128_gcm()
                                                  : EVP_aead_aes_256_gcm();
  EVP_AEAD_CTX ctx;
  if (!EVP_AEAD_CTX_init(&ctx, aead, cek, d->cea.ci->key_len, d->cea.tag_len,
                         NULL)) {
    ERR_clear_error();
    return CMS_ERR_INTERNAL;
  }
  size_t aad_len = d->aad != NULL ? CBS_len(&d->env->attrs) : 0;
  int ok = EVP_AEAD_CTX_open_gather(&ctx, d->plain, d->cea.iv, GCM_NONCE_LEN,
                                    CBS_data(&d->ct), CBS_len(&d->ct),
                                    CBS_data(&d->env->mac),
                                    CBS_len(&d->env->mac), d->aad, aad_len);
  EVP_AEAD_CTX_cleanup(&ctx);
  ERR_clear_error();
  d->plain_len = ok ? CBS_len(&d->ct) : 0;
  return ok ? CMS_OK : CMS_ERR_DECRYPT;
}

/* open_cbc decrypts and checks the PKCS#7 padding (RFC 5652 §6.3). The
 * content is not authenticated: the caller is told so. */
static int open_cbc(struct dec *d, const uint8_t *cek) {
  const EVP_CIPHER *cipher =
      d->cea.ci->key_len == 16 ? EVP_aes_128_cbc() : EVP_aes_256_cbc();
  size_t len = CBS_len(&d->ct);
  int n1 = 0, n2 = 0;
  if (len == 0 || len % AES_IV_LEN != 0) {
    return CMS_ERR_DECRYPT;
  }
  EVP_CIPHER_CTX ctx;
  EVP_CIPHER_CTX_init(&ctx);
  int ok = EVP_DecryptInit_ex(&ctx, cipher, NULL, cek, d->cea.iv) &&
           EVP_DecryptUpdate(&ctx, d->plain, &n1, CBS_data(&d->ct), (int)len) &&
           EVP_DecryptFinal_ex(&ctx, d->plain + n1, &n2);
  EVP_CIPHER_CTX_cleanup(&ctx);
  ERR_clear_error();
  d->plain_len = ok ? (size_t)n1 + (size_t)n2 : 0;
  return ok ? CMS_OK : CMS_ERR_DECRYPT;
}

/* content_open decrypts the content with a candidate content key. */
static int content_open(struct dec *d, const uint8_t *cek, size_t cek_len) {
  if (cek_len != d->cea.ci->key_len) {
    return CMS_ERR_DECRYPT;
  }
  return d->cea.ci->gcm ? open_gcm(d, cek) : open_cbc(d, cek);
}

/* dec_may_try counts a private-key operation against CMS_ENV_MAX_TRIES:
 * each costs an RSA decryption or an ECDH and a pass over the content,
 * and a peer could name our key in every RecipientInfo. */
static int dec_may_try(struct dec *d) {
  if (d->tries == CMS_ENV_MAX_TRIES) {
    dec_note(d, CMS_ERR_LIMIT, "more RecipientInfos for our keys than we try");
    return 0;
  }
  d->tries++;
  return 1;
}

/* ---- KeyTransRecipientInfo ---- */

/* hash_alg reads a hash AlgorithmIdentifier with absent or NULL
 * parameters (RFC 4055 §2.1): SHA-1 or SHA-2. */
static int hash_alg(const CBS *alg, enum cms_digest *out) {
  CBS oid, params;
  if (!alg_parse(alg, &oid, &params) || !params_absent_or_null(&params)) {
    return 0;
  }
  if (cms_oid_eq(&oid, &kOidSha1)) {
    *out = CMS_SHA1;
    return 1;
  }
  return cms_digest_from_oid(&oid, out);
}

/* mgf1_alg reads MaskGenAlgorithm { id-mgf1, HashAlgorithm }. */
static int mgf1_alg(const CBS *alg, enum cms_digest *out) {
  CBS oid, params;
  return alg_parse(alg, &oid, &params) && cms_oid_eq(&oid, &CMS_OID_MGF1) &&
         hash_alg(&params, out);
}

/* psource_empty: PSourceAlgorithm { id-pSpecified, OCTET STRING }, with
 * the empty label everyone uses. */
static int psource_empty(const CBS *alg) {
  CBS oid, params, label;
  return alg_parse(alg, &oid, &params) && cms_oid_eq(&oid, &kOidPSpecified) &&
         CBS_get_asn1(&params, &label, CBS_ASN1_OCTETSTRING) &&
         CBS_len(&params) == 0 && CBS_len(&label) == 0;
}

/* oaep_params reads RSAES-OAEP-params ::= SEQUENCE { hashAlgorithm [0]
 * DEFAULT sha1, maskGenAlgorithm [1] DEFAULT mgf1SHA1, pSourceAlgorithm
 * [2] DEFAULT pSpecifiedEmpty } (RFC 8017 §A.2.1, RFC 3560 §2.2); absent
 * or NULL parameters are all defaults. MGF1 must use the OAEP hash. */
static int oaep_params(const CBS *params, enum cms_digest *out) {
  CBS in = *params, seq, hash, mgf, psrc;
  int has_hash, has_mgf, has_psrc;
  enum cms_digest md = CMS_SHA1, mgf_md = CMS_SHA1;
  if (params_absent_or_null(params)) {
    *out = CMS_SHA1;
    return CMS_OK;
  }
  if (!CBS_get_asn1(&in, &seq, CBS_ASN1_SEQUENCE) || CBS_len(&in) != 0 ||
      !CBS_get_optional_asn1(&seq, &hash, &has_hash, CTX_CONS(0)) ||
      !CBS_get_optional_asn1(&seq, &mgf, &has_mgf, CTX_CONS(1)) ||
      !CBS_get_optional_asn1(&seq, &psrc, &has_psrc, CTX_CONS(2)) ||
      CBS_len(&seq) != 0) {
    return CMS_ERR_SYNTAX;
  }
  if ((has_hash && !hash_alg(&hash, &md)) ||
      (has_mgf && !mgf1_alg(&mgf, &mgf_md)) ||
      (has_psrc && !psource_empty(&psrc)) || md != mgf_md) {
    return CMS_ERR_UNSUPPORTED;
  }
  *out = md;
  return CMS_OK;
}

/* kt_alg reads a KeyTransRecipientInfo keyEncryptionAlgorithm:
 * rsaEncryption (PKCS#1 v1.5, RFC 3370 §4.2.1) or id-RSAES-OAEP. */
static int kt_alg(const CBS *alg, int *out_oaep, enum cms_digest *out_md) {
  CBS oid, params;
  if (!alg_parse(alg, &oid, &params)) {
    return CMS_ERR_SYNTAX;
  }
  if (cms_oid_eq(&oid, &CMS_OID_RSA)) {
    *out_oaep = 0;
    return params_absent_or_null(&params) ? CMS_OK : CMS_ERR_UNSUPPORTED;
  }
  if (cms_oid_eq(&oid, &CMS_OID_RSA_OAEP)) {
    *out_oaep = 1;
    return oaep_params(&params, out_md);
  }
  return CMS_ERR_UNSUPPORTED;
}

/* pkcs1_unwrap decrypts a PKCS#1 v1.5 encrypted content key. Against
 * Bleichenbacher's oracle (RFC 3218 §2.3.2) a bad padding or a key of the
 * wrong length is not reported: a random key takes its place, chosen
 * without a branch, and the failure surfaces as a failed content
 * decryption, the same path as any wrong key. */
static int pkcs1_unwrap(const struct dec *d, const struct cms_key *key,
                        const CBS *ek, uint8_t *cek, size_t cek_len) {
  uint8_t got[CMS_ENV_MAX_KEY_BYTES], rnd[MAX_CEK_LEN];
  size_t got_len = 0;
  memset(got, 0, sizeof(got));
  if (!RAND_bytes(rnd, cek_len)) {
    return CMS_ERR_INTERNAL;
  }
  int ok = d->signer->unwrap(d->signer->arg, key, 0, CMS_SHA256, CBS_data(ek),
                             CBS_len(ek), got, sizeof(got), &got_len);
  uint8_t mask = (uint8_t)(0u - (unsigned)((ok == 1) & (got_len == cek_len)));
  for (size_t i = 0; i < cek_len; i++) {
    cek[i] = (uint8_t)((got[i] & mask) | (rnd[i] & (uint8_t)~mask));
  }
  OPENSSL_cleanse(got, sizeof(got));
  OPENSSL_cleanse(rnd, sizeof(rnd));
  return CMS_OK;
}

/* ktri_try unwraps the content key of a KeyTransRecipientInfo naming the
 * party and opens the content with it. */
static int ktri_try(struct dec *d, const struct cms_decrypt_party *p,
                    const struct cms_ri *ri) {
  int oaep = 0;
  enum cms_digest md = CMS_SHA1;
  uint8_t cek[CMS_ENV_MAX_KEY_BYTES];
  size_t cek_len = d->cea.ci->key_len;
  int rc = kt_alg(&ri->key_enc_alg, &oaep, &md);
  if (rc != CMS_OK) {
    dec_note(d, rc, "key transport algorithm");
    return rc;
  }
  if (p->key->type != EVP_PKEY_RSA) {
    dec_note(d, CMS_ERR_KEY, "RSA recipient, key is not RSA");
    return CMS_ERR_KEY;
  }
  if (!dec_may_try(d)) {
    return CMS_ERR_LIMIT;
  }
  if (!oaep) {
    rc = pkcs1_unwrap(d, p->key, &ri->encrypted_key, cek, cek_len);
  } else if (!d->signer->unwrap(
                 d->signer->arg, p->key, 1, md, CBS_data(&ri->encrypted_key),
                 CBS_len(&ri->encrypted_key), cek, sizeof(cek), &cek_len)) {
    rc = CMS_ERR_DECRYPT;
  }
  if (rc == CMS_OK) {
    rc = content_open(d, cek, cek_len);
  }
  OPENSSL_cleanse(cek, sizeof(cek));
  dec_note(d, rc, "content key unwrap or content decryption failed");
  return rc;
}

/* ---- KeyAgreeRecipientInfo ---- */

/* A KARI keyEncryptionAlgorithm: the KDF and KeyWrapAlgorithm. */
struct ka_alg {
  const struct kdf_info *kdf;
  CBS wrap_alg; /* elem, as SharedInfo's keyInfo */
  size_t kek_len;
};

/* ka_alg_parse reads keyEncryptionAlgorithm { dhSinglePass-stdDH-*,
 * KeyWrapAlgorithm } (RFC 5753 §7.1.4, RFC 8418 §2.2) with AES Key Wrap,
 * parameters absent (RFC 3565 §2.3.2; NULL tolerated). */
static int ka_alg_parse(const CBS *alg, struct ka_alg *out) {
  CBS oid, params, wrap_oid, wrap_params;
  if (!alg_parse(alg, &oid, &params)) {
    return CMS_ERR_SYNTAX;
  }
  out->kdf = NULL;
  for (size_t i = 0; i < ARRAY_LEN(kKdfs); i++) {
    out->kdf = cms_oid_eq(&oid, kKdfs[i].oid) ? &kKdfs[i] : out->kdf;
  }
  if (out->kdf == NULL) {
    return CMS_ERR_UNSUPPORTED;
  }
  if (!alg_parse(&params, &wrap_oid, &wrap_params)) {
    return CMS_ERR_SYNTAX;
  }
  out->wrap_alg = params;
  if (cms_oid_eq(&wrap_oid, &CMS_OID_AES128_WRAP)) {
    out->kek_len = 16;
  } else if (cms_oid_eq(&wrap_oid, &CMS_OID_AES256_WRAP)) {
    out->kek_len = 32;
  } else {
    return CMS_ERR_UNSUPPORTED;
  }
  return params_absent_or_null(&wrap_params) ? CMS_OK : CMS_ERR_UNSUPPORTED;
}

/* originator_key reads originator [0] originatorKey [1]
 * OriginatorPublicKey ::= SEQUENCE { algorithm, publicKey BIT STRING }
 * (RFC 5652 §6.2.2): id-ecPublicKey (parameters absent, NULL or P-256,
 * RFC 5753 §7.1.2) with an uncompressed point, or id-X25519 (parameters
 * absent, RFC 8418 §2.1) with 32 bytes. Static-static originators are
 * not supported. */
static int originator_key(const CBS *orig, int *out_type, CBS *out_pub) {
  CBS in = *orig, body, alg, oid, params, curve;
  uint8_t unused;
  if (!CBS_get_asn1(&in, &body, CTX_CONS(1))) {
    return CMS_ERR_UNSUPPORTED;
  }
  if (CBS_len(&in) != 0 ||
      !CBS_get_asn1_element(&body, &alg, CBS_ASN1_SEQUENCE) ||
      !CBS_get_asn1(&body, out_pub, CBS_ASN1_BITSTRING) ||
      CBS_len(&body) != 0 || !alg_parse(&alg, &oid, &params) ||
      !CBS_get_u8(out_pub, &unused) || unused != 0) {
    return CMS_ERR_SYNTAX;
  }
  CBS p = params;
  if (cms_oid_eq(&oid, &CMS_OID_EC_PUBLIC_KEY) &&
      (params_absent_or_null(&params) ||
       (CBS_get_asn1(&p, &curve, CBS_ASN1_OBJECT) && CBS_len(&p) == 0 &&
        cms_oid_eq(&curve, &CMS_OID_P256)))) {
    *out_type = EVP_PKEY_EC;
    return CBS_len(out_pub) == 65 && CBS_data(out_pub)[0] == 0x04
               ? CMS_OK
               : CMS_ERR_SYNTAX;
  }
  if (cms_oid_eq(&oid, &CMS_OID_X25519) && CBS_len(&params) == 0) {
    *out_type = EVP_PKEY_X25519;
    /* X25519 ignores bit 255 (RFC 7748 §5), so two encodings would
     * give one secret; an honest u is below 2^255: refuse the other. */
    return CBS_len(out_pub) == 32 && (CBS_data(out_pub)[31] & 0x80) == 0
               ? CMS_OK
               : CMS_ERR_SYNTAX;
  }
  return CMS_ERR_UNSUPPORTED;
}

/* kari_rid_matches: 1 when a KeyAgreeRecipientIdentifier names cert. */
static int kari_rid_matches(const CBS *rid, X509 *cert) {
  CBS ski;
  uint8_t want[64];
  size_t want_len;
  if (CBS_peek_asn1_tag(rid, CBS_ASN1_SEQUENCE)) {
    return cms_sid_matches(rid, cert);
  }
  return rkeyid_ski(rid, &ski) &&
         cms_cert_ski(cert, want, sizeof(want), &want_len) &&
         CBS_mem_equal(&ski, want, want_len);
}

/* kari_kek agrees with the originator's key through the signer and
 * derives the key-encryption key. */
static int kari_kek(struct dec *d, const struct cms_decrypt_party *p,
                    const struct cms_ri *ri, struct ka_alg *ka, uint8_t *kek) {
  int type = 0;
  CBS pub;
  int rc = originator_key(&ri->originator, &type, &pub);
  if (rc == CMS_OK) {
    rc = ka_alg_parse(&ri->key_enc_alg, ka);
  }
  if (rc != CMS_OK) {
    dec_note(d, rc, "key agreement algorithm");
    return rc;
  }
  if (p->key->type != type) {
    dec_note(d, CMS_ERR_KEY, "originator key type is not our key's");
    return CMS_ERR_KEY;
  }
  if (!dec_may_try(d)) {
    return CMS_ERR_LIMIT;
  }
  uint8_t z[64];
  size_t z_len = 0;
  if (!d->signer->agree(d->signer->arg, p->key, CBS_data(&pub), CBS_len(&pub),
                        z, sizeof(z), &z_len) ||
      !kek_derive(ka->kdf, z, z_len, &ka->wrap_alg,
                  ri->has_ukm ? &ri->ukm : NULL, kek, ka->kek_len)) {
    rc = CMS_ERR_DECRYPT;
  }
  OPENSSL_cleanse(z, sizeof(z));
  return rc;
}

/* kari_open unwraps one RecipientEncryptedKey (RFC 3394 §2.2.2, default
 * IV) and opens the content with it. */
static int kari_open(struct dec *d, const struct cms_decrypt_party *p,
                     const struct cms_ri *ri, const CBS *ek) {
  struct ka_alg ka;
  uint8_t kek[MAX_CEK_LEN], cek[MAX_CEK_LEN];
  size_t cek_len = d->cea.ci->key_len;
  AES_KEY aes;
  int rc = kari_kek(d, p, ri, &ka, kek);
  if (rc != CMS_OK) {
    OPENSSL_cleanse(kek, sizeof(kek));
    return rc;
  }
  if (CBS_len(ek) != cek_len + WRAP_OVERHEAD ||
      AES_set_decrypt_key(kek, (unsigned)ka.kek_len * 8, &aes) != 0 ||
      AES_unwrap_key(&aes, NULL, cek, CBS_data(ek), CBS_len(ek)) !=
          (int)cek_len) {
    rc = CMS_ERR_DECRYPT;
  } else {
    rc = content_open(d, cek, cek_len);
  }
  OPENSSL_cleanse(kek, sizeof(kek));
  OPENSSL_cleanse(cek, sizeof(cek));
  OPENSSL_cleanse(&aes, sizeof(aes));
  dec_note(d, rc, "content key unwrap or content decryption failed");
  return rc;
}

/* kari_try tries every RecipientEncryptedKey naming the party. */
static int kari_try(struct dec *d, const struct cms_decrypt_party *p,
                    const struct cms_ri *ri) {
  CBS reks = ri->reks, rid, ek;
  while (CBS_len(&reks) > 0) {
    if (!cms_rek_next(&reks, &rid, &ek)) {
      return CMS_ERR_SYNTAX; /* cms_env_parse checked: not reached */
    }
    if (kari_rid_matches(&rid, p->cert) && kari_open(d, p, ri, &ek) == CMS_OK) {
      return CMS_OK;
    }
    if (d->rc == CMS_ERR_LIMIT) {
      return CMS_ERR_LIMIT;
    }
  }
  return CMS_ERR_NO_RECIPIENT;
}

/* dec_recipients tries, for each party, every RecipientInfo naming it
 * until one opens the content; kekri, pwri and ori are skipped. */
static int dec_recipients(struct dec *d,
                          const struct cms_decrypt_party *parties,
                          size_t num_parties) {
  for (size_t i = 0; i < num_parties; i++) {
    const struct cms_decrypt_party *p = &parties[i];
    if (p->key == NULL || p->cert == NULL) {
      continue;
    }
    for (size_t k = 0; k < d->env->num_ris; k++) {
      struct cms_ri ri;
      int rc = cms_ri_parse(d->env->ris[k], &ri);
      if (rc == CMS_OK && ri.kind == CMS_RI_KTRI &&
          cms_sid_matches(&ri.rid, p->cert)) {
        rc = ktri_try(d, p, &ri);
      } else if (rc == CMS_OK && ri.kind == CMS_RI_KARI) {
        rc = kari_try(d, p, &ri);
      } else {
        rc = CMS_ERR_NO_RECIPIENT;
      }
      if (rc == CMS_OK || d->rc == CMS_ERR_LIMIT) {
        return rc == CMS_OK ? CMS_OK : d->rc;
      }
    }
  }
  return d->rc;
}

static void dec_cleanup(struct dec *d) {
  if (d->plain != NULL) {
    OPENSSL_cleanse(d->plain, CBS_len(&d->ct) + AES_IV_LEN);
  }
  OPENSSL_free(d->plain);
  OPENSSL_free(d->ct_storage);
  OPENSSL_free(d->aad);
}

/* dec_run is cms_decrypt after the gate: parse, set up, find a recipient,
 * open, append. */
static int dec_run(struct dec *d, struct buf *out, int *out_authenticated,
                   const struct cms_decrypt_party *parties, size_t num_parties,
                   char *err, size_t err_len) {
  int rc = dec_setup(d, err, err_len);
  if (rc != CMS_OK) {
    return rc;
  }
  rc = dec_recipients(d, parties, num_parties);
  if (rc == CMS_ERR_NO_RECIPIENT) {
    return cms_set_err(err, err_len, rc,
                       "no RecipientInfo for our certificates");
  }
  if (rc != CMS_OK) {
    return cms_set_err(err, err_len, rc, "%s", d->why);
  }
  if (buf_append(out, d->plain, d->plain_len) != 0) {
    return cms_set_err(err, err_len, CMS_ERR_INTERNAL, "out of memory");
  }
  *out_authenticated = d->env->auth;
  return CMS_OK;
}

int cms_decrypt(struct buf *out, int *out_authenticated,
                const struct cms_signer *signer,
                const struct cms_decrypt_party *parties, size_t num_parties,
                const uint8_t *in, size_t in_len, char *err, size_t err_len) {
  *out_authenticated = 0;
  CBS der;
  uint8_t *storage = NULL;
  int rc = cms_input_der(in, in_len, &der, &storage, err, err_len);
  struct cms_env *env = rc == CMS_OK ? OPENSSL_malloc(sizeof(*env)) : NULL;
  if (rc == CMS_OK && env == NULL) {
    rc = cms_set_err(err, err_len, CMS_ERR_INTERNAL, "out of memory");
  }
  if (rc == CMS_OK) {
    rc = cms_env_parse(der, env, err, err_len);
  }
  if (rc == CMS_OK) {
    struct dec d = {.signer = signer,
                    .env = env,
                    .rc = CMS_ERR_NO_RECIPIENT,
                    .why = "no recipient"};
    rc =
        dec_run(&d, out, out_authenticated, parties, num_parties, err, err_len);
    dec_cleanup(&d);
  }
  OPENSSL_free(env);
  OPENSSL_free(storage);
  return rc;
}

/* content_len_of sums the bytes of an encryptedContent element: a
 * primitive [0], or a constructed one of OCTET STRING segments (as
 * cms_env_parse checked them). */
static size_t content_len_of(const CBS *elem) {
  CBS in = *elem, body, seg;
  unsigned tag;
  size_t len = 0;
  if (!CBS_get_any_asn1(&in, &body, &tag)) {
    return 0;
  }
  if (tag == CTX_PRIM(0)) {
    return CBS_len(&body);
  }
  while (CBS_get_asn1(&body, &seg, CBS_ASN1_OCTETSTRING)) {
    len += CBS_len(&seg);
  }
  return len;
}

int cms_check_enveloped(const uint8_t *in, size_t in_len, char *err,
                        size_t err_len) {
  CBS der;
  uint8_t *storage = NULL;
  int rc = cms_input_der(in, in_len, &der, &storage, err, err_len);
  struct cms_env *env = rc == CMS_OK ? OPENSSL_malloc(sizeof(*env)) : NULL;
  if (rc == CMS_OK && env == NULL) {
    rc = cms_set_err(err, err_len, CMS_ERR_INTERNAL, "out of memory");
  }
  if (rc == CMS_OK) {
    rc = cms_env_parse(der, env, err, err_len);
  }
  /* cms_env_parse wants RecipientInfos SIZE (1..MAX) and the content
   * present; said again here as it is this function's whole promise. */
  if (rc == CMS_OK && env->num_ris == 0) {
    rc = cms_set_err(err, err_len, CMS_ERR_SYNTAX, "no RecipientInfo");
  }
  if (rc == CMS_OK && content_len_of(&env->content) == 0) {
    rc = cms_set_err(err, err_len, CMS_ERR_SYNTAX, "empty encryptedContent");
  }
  OPENSSL_free(env);
  OPENSSL_free(storage);
  return rc;
}
