/* crypto/cms_internal.h — what the CMS files share: object identifiers,
 * the input gate (size, BER to DER, nesting), ContentInfo, signer and
 * recipient identifiers, digests, the key object.
 *
 * Only crypto/cms_*.c include this. Everything here is pure (no I/O, no
 * globals beyond constant tables). Functions returning int return 1 on
 * success and 0 on failure, like CBS/CBB, unless they say otherwise. */
#ifndef POSTSEAL_CRYPTO_CMS_INTERNAL_H
#define POSTSEAL_CRYPTO_CMS_INTERNAL_H

#include <openssl/bytestring.h>
#include <openssl/evp.h>

#include "crypto/cms.h"

/* An OBJECT IDENTIFIER's contents octets (no tag, no length). */
struct cms_oid {
  uint8_t len;
  uint8_t der[12];
};

/* RFC 5652 §4, §5.1, §6.1; RFC 5083 §1.1 */
extern const struct cms_oid CMS_OID_DATA, CMS_OID_SIGNED_DATA,
    CMS_OID_ENVELOPED_DATA, CMS_OID_AUTH_ENVELOPED_DATA;
/* attributes: RFC 5652 §11, RFC 8551 §2.5.2-3, RFC 5035 §5.4 */
extern const struct cms_oid CMS_OID_CONTENT_TYPE, CMS_OID_MESSAGE_DIGEST,
    CMS_OID_SIGNING_TIME, CMS_OID_SMIME_CAPABILITIES, CMS_OID_ENC_KEY_PREF,
    CMS_OID_SIGNING_CERT_V2;
/* digests (RFC 5754) */
extern const struct cms_oid CMS_OID_SHA256, CMS_OID_SHA384, CMS_OID_SHA512;
/* signatures: RFC 3370, 4055, 5754, 8419 */
extern const struct cms_oid CMS_OID_RSA, CMS_OID_SHA256_RSA, CMS_OID_SHA384_RSA,
    CMS_OID_SHA512_RSA, CMS_OID_RSA_PSS, CMS_OID_MGF1, CMS_OID_ECDSA_SHA256,
    CMS_OID_ECDSA_SHA384, CMS_OID_ECDSA_SHA512, CMS_OID_ED25519;
/* key management and content encryption: RFC 3560, 3565, 5084, 5753,
 * 8418 */
extern const struct cms_oid CMS_OID_RSA_OAEP, CMS_OID_EC_PUBLIC_KEY,
    CMS_OID_P256, CMS_OID_X25519, CMS_OID_AES128_CBC, CMS_OID_AES256_CBC,
    CMS_OID_AES128_GCM, CMS_OID_AES256_GCM, CMS_OID_AES128_WRAP,
    CMS_OID_AES256_WRAP, CMS_OID_ECDH_SHA256_KDF, CMS_OID_ECDH_HKDF_SHA256;

/* cms_oid_eq: 1 when the OID contents in oid are o. */
int cms_oid_eq(const CBS *oid, const struct cms_oid *o);
/* cms_add_oid writes a whole OBJECT IDENTIFIER element. */
int cms_add_oid(CBB *cbb, const struct cms_oid *o);
/* cms_add_alg writes AlgorithmIdentifier { o, NULL if null_params }. */
int cms_add_alg(CBB *cbb, const struct cms_oid *o, int null_params);

/* Digests. cms_digest_from_oid returns 1 and sets out for SHA-256/384/512
 * and 0 for anything else. */
const EVP_MD *cms_digest_md(enum cms_digest d);
const struct cms_oid *cms_digest_oid(enum cms_digest d);
int cms_digest_from_oid(const CBS *oid, enum cms_digest *out);
/* cms_digest_name: "sha-256" ... as RFC 8551 §3.5.3.2 micalg spells it. */
const char *cms_digest_name(enum cms_digest d);

/* cms_input_der is the gate for every peer input: checks CMS_MAX_INPUT,
 * converts BER to DER (*storage is then the owned copy, to OPENSSL_free;
 * NULL when the input was DER already), checks there is exactly one
 * element and nothing after it, and that constructed elements nest no
 * deeper than CMS_MAX_DEPTH. Returns CMS_OK or a negative cms_err. */
int cms_input_der(const uint8_t *in, size_t in_len, CBS *out_der,
                  uint8_t **storage, char *err, size_t err_len);

/* cms_content_info_parse reads ContentInfo ::= SEQUENCE { contentType,
 * [0] EXPLICIT content } from der (which must hold nothing else); out
 * content is the inner element, header included. */
int cms_content_info_parse(CBS der, CBS *out_type, CBS *out_content);
/* cms_content_info_begin opens ContentInfo with contentType type; the
 * caller writes the content into *out_inner and then CBB_flush(outer). */
int cms_content_info_begin(CBB *outer, CBB *seq, CBB *explicit0,
                           const struct cms_oid *type);

/* Certificates seen as DER. cms_cert_issuer_serial finds the issuer Name
 * and serialNumber elements (headers included) inside cert's DER, which
 * is returned in *storage (OPENSSL_free). */
int cms_cert_issuer_serial(X509 *cert, CBS *out_issuer, CBS *out_serial,
                           uint8_t **storage);
/* cms_cert_ski copies the subjectKeyIdentifier extension's value. Returns
 * 0 when the certificate has none. */
int cms_cert_ski(X509 *cert, uint8_t *out, size_t out_cap, size_t *out_len);
/* cms_add_ias writes IssuerAndSerialNumber ::= SEQUENCE { issuer,
 * serialNumber } for cert (RFC 5652 §10.2.4). */
int cms_add_ias(CBB *cbb, X509 *cert);
/* cms_add_sid writes a SignerIdentifier / RecipientIdentifier (RFC 5652
 * §5.3, §6.2.1): IssuerAndSerialNumber, or [0] IMPLICIT
 * SubjectKeyIdentifier when use_ski (0 when cert has no SKI). */
int cms_add_sid(CBB *cbb, X509 *cert, int use_ski);
/* cms_sid_matches: 1 when the identifier element sid (header included:
 * a SEQUENCE IssuerAndSerialNumber or a [0] primitive key identifier)
 * names cert. */
int cms_sid_matches(const CBS *sid, X509 *cert);

/* Keys. type is EVP_PKEY_RSA, EVP_PKEY_EC (P-256 only), EVP_PKEY_ED25519
 * or EVP_PKEY_X25519. */
struct cms_key {
  EVP_PKEY *pkey;
  int type;
};
/* cms_pkey_type: the EVP_PKEY_* type of cert's public key, or 0 when it is
 * none we use (an EC key not on P-256, for instance). */
int cms_pkey_type(X509 *cert);

/* cms_set_err writes a reason and returns code (for one-line error
 * returns). */
int cms_set_err(char *err, size_t err_len, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
