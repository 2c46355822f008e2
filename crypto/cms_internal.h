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
/* cms_type_from_oid maps the contents of a content-type OID to enum
 * cms_type (CMS_TYPE_UNKNOWN for any other). */
enum cms_type cms_type_from_oid(const CBS *oid);
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

/* ---- SignedData (crypto/cms_signed.c) ---------------------------------
 * The parsed form of a SignedData (RFC 5652 §5) and its encoder, so that
 * parse(DER) -> encode reproduces the bytes (tests/fuzz/fuzz_cms_signed.c).
 * Every CBS points into the caller's input (parse) or into storage the
 * caller keeps alive (cms_sign); the form owns nothing. */
#define CMS_SIGNED_MAX_DIGEST_ALGS 16 /* digestAlgorithms entries */
#define CMS_SIGNED_MAX_ATTRS 32       /* attributes in one signedAttrs */

/* Attribute ::= SEQUENCE { attrType, attrValues SET OF } (RFC 5652 §5.3) */
struct cms_signed_attr {
  CBS type;   /* OBJECT IDENTIFIER contents */
  CBS values; /* the SET's contents: the values, headers included */
};

/* SignerInfo (RFC 5652 §5.3). Elements keep their headers. */
struct cms_signer_info {
  uint64_t version;     /* 1: sid is issuerAndSerialNumber, 3: SKI */
  CBS sid;              /* SEQUENCE or [0] primitive element */
  CBS digest_alg;       /* AlgorithmIdentifier element */
  int has_signed_attrs; /* signedAttrs present */
  CBS signed_attrs;     /* the [0] IMPLICIT element as received */
  size_t num_attrs;     /* signedAttrs split up (parse only) */
  struct cms_signed_attr attrs[CMS_SIGNED_MAX_ATTRS];
  CBS sig_alg;   /* AlgorithmIdentifier element */
  CBS signature; /* OCTET STRING contents */
  int has_unsigned_attrs;
  CBS unsigned_attrs; /* the [1] IMPLICIT element */
};

struct cms_signed {
  uint64_t version;
  size_t num_digest_algs;
  /* AlgorithmIdentifier elements */
  CBS digest_algs[CMS_SIGNED_MAX_DIGEST_ALGS];
  CBS econtent_type; /* OBJECT IDENTIFIER contents */
  int has_econtent;  /* 0: detached */
  CBS econtent;      /* OCTET STRING contents */
  int has_certs;
  size_t num_certs;
  CBS certs[CMS_MAX_CERTS]; /* CertificateChoices elements */
  int has_crls;
  CBS crls; /* the [1] IMPLICIT RevocationInfoChoices element, unread */
  size_t num_signers;
  struct cms_signer_info signers[CMS_MAX_SIGNERS];
  /* parse: 1 when digestAlgorithms, certificates and signerInfos came in
   * DER order (X.690 §11.6); the encoder writes that order, so only then
   * does encode give back the input bytes. */
  int sets_in_der_order;
};

/* cms_signed_parse reads a ContentInfo holding SignedData from der (DER,
 * nothing after it: what cms_input_der gives) into out, checking the
 * structure, the limits and the versions (RFC 5652 §5.1, §5.3) but no
 * algorithm or signature. Returns CMS_OK or a negative cms_err. */
int cms_signed_parse(struct cms_signed *out, CBS der, char *err,
                     size_t err_len);
/* cms_signed_encode writes sd as a ContentInfo (DER; digestAlgorithms,
 * certificates and signerInfos sorted as SET OF). Returns 1 or 0. */
int cms_signed_encode(CBB *cbb, const struct cms_signed *sd);

/* ==== EnvelopedData, AuthEnvelopedData (crypto/cms_enveloped.c) ====
 * The parsed form cms_decrypt works on, and the encoder that writes it
 * back, so a fuzz target can check parse(DER) -> encode == DER. Parsed
 * structures point into the caller's DER (valid while it lives). Unlike
 * the rest of this header, the *_parse functions return CMS_OK or a
 * negative enum cms_err; the *_encode functions return 1/0 like CBB. */

#define CMS_ENV_MAX_KEY_BYTES 2048 /* an encryptedKey (RSA-16384) */
#define CMS_ENV_MAX_UKM 1024       /* KARI UserKeyingMaterial */
/* RecipientInfos naming one of our keys that cms_decrypt tries (each a
 * private-key operation and a pass over the whole content) before it
 * gives up with CMS_ERR_LIMIT. */
#define CMS_ENV_MAX_TRIES 8

enum cms_ri_kind { CMS_RI_KTRI, CMS_RI_KARI, CMS_RI_OTHER };

/* A RecipientInfo (RFC 5652 §6.2) with each field as found. Elements
 * ("elem") include their header; "contents" do not. */
struct cms_ri {
  enum cms_ri_kind kind;
  uint64_t version;  /* KTRI: 0 or 2; KARI: 3 */
  CBS rid;           /* KTRI elem: IssuerAndSerialNumber or [0] SKI */
  CBS originator;    /* KARI elem: OriginatorIdentifierOrKey (inside [0]) */
  int has_ukm;       /* KARI: ukm [1] present */
  CBS ukm;           /* KARI contents of the UserKeyingMaterial */
  CBS key_enc_alg;   /* elem: keyEncryptionAlgorithm */
  CBS encrypted_key; /* KTRI contents */
  CBS reks;          /* KARI contents of RecipientEncryptedKeys */
  size_t num_reks;   /* KARI */
  CBS other;         /* CMS_RI_OTHER (kekri, pwri, ori) elem, kept opaque */
};

/* cms_ri_parse reads one RecipientInfo element (nothing after it). */
int cms_ri_parse(CBS elem, struct cms_ri *out);
int cms_ri_encode(CBB *cbb, const struct cms_ri *ri);
/* cms_rek_next takes the next RecipientEncryptedKey from reks: out_rid is
 * the KeyAgreeRecipientIdentifier elem (IssuerAndSerialNumber or rKeyId
 * [0] IMPLICIT RecipientKeyIdentifier), out_key the encryptedKey
 * contents. Returns 1/0. */
int cms_rek_next(CBS *reks, CBS *out_rid, CBS *out_key);

/* A ContentInfo holding EnvelopedData (RFC 5652 §6.1) or
 * AuthEnvelopedData (RFC 5083 §2.1). Absent optional elements are empty. */
struct cms_env {
  int auth; /* AuthEnvelopedData */
  uint64_t version;
  CBS originator_info; /* elem [0] IMPLICIT OriginatorInfo */
  size_t num_ris;
  CBS ris[CMS_MAX_RECIPIENTS]; /* RecipientInfo elems, in input order */
  CBS content_type;            /* contents of the OID */
  CBS content_alg;             /* elem: contentEncryptionAlgorithm */
  CBS content; /* elem: encryptedContent [0], primitive or constructed */
  CBS attrs;   /* elem: authAttrs [1] (auth) / unprotectedAttrs [1] */
  CBS mac;     /* auth: contents of the MessageAuthenticationCode */
  CBS unauth;  /* auth: elem unauthAttrs [2] */
};

/* cms_env_parse reads a whole ContentInfo (DER, from cms_input_der).
 * Checks the shape of every field, each RecipientInfo by cms_ri_parse,
 * and the limits (CMS_MAX_RECIPIENTS RecipientInfos and as many
 * recipient keys in all). Absent encryptedContent (detached) is
 * CMS_ERR_SYNTAX: not supported. */
int cms_env_parse(CBS der, struct cms_env *out, char *err, size_t err_len);
/* cms_env_encode writes env as a ContentInfo. */
int cms_env_encode(CBB *cbb, const struct cms_env *env);

#endif
