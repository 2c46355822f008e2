/* crypto/cms.h — the Cryptographic Message Syntax (RFC 5652) on
 * BoringSSL's CBS/CBB: SignedData, EnvelopedData, AuthEnvelopedData.
 *
 * Owns: the DER encoding of what postseal makes and the decoding of what
 * peers send (BER accepted on input where real clients use it: indefinite
 * lengths, constructed OCTET STRINGs; it is converted to DER once, under a
 * nesting limit, before anything is interpreted); signing (RSA PKCS#1
 * v1.5, RSA-PSS, ECDSA P-256, Ed25519 per RFC 8419; SHA-256/384/512) with
 * the signed attributes S/MIME clients expect (contentType, messageDigest,
 * signingTime, SMIMECapabilities RFC 8551 §2.5.2,
 * SMIMEEncryptionKeyPreference §2.5.3, ESS signingCertificateV2 RFC 5035);
 * verification (signature, messageDigest, chain to the caller's trust
 * anchors at the caller's time, key usage, the From address among the
 * certificate's email addresses); encryption to many recipients with one
 * content key (AES-GCM AuthEnvelopedData RFC 5083/5084 by default, AES-CBC
 * EnvelopedData for old peers), wrapped per recipient by RSA-OAEP or RSA
 * PKCS#1 v1.5 (KeyTransRecipientInfo), ECDH P-256 (RFC 5753, dhSinglePass
 * stdDH sha256kdf, AES key wrap of the content key's size) or X25519
 * (RFC 8418) (KeyAgreeRecipientInfo),
 * recipients named by issuerAndSerialNumber or subjectKeyIdentifier;
 * decryption.
 *
 * Keys: every private-key operation goes through struct cms_signer, so the
 * keys can move to a key-holding process; cms_local_signer does them in
 * process.
 *
 * EFAIL: cms_decrypt never returns plaintext of an AuthEnvelopedData whose
 * tag, IV, attributes or ciphertext were altered (the AEAD is opened over
 * the whole content before anything is copied out). AES-CBC content is not
 * authenticated: *out_authenticated says so and the S/MIME layer decides
 * whether it may be shown (only under a valid signature when policy asks).
 *
 * Errors: functions return CMS_OK (0) or a negative enum cms_err and write
 * a one-line reason to err (which never holds key material). A peer's bad
 * input is CMS_ERR_SYNTAX / CMS_ERR_UNSUPPORTED / CMS_ERR_LIMIT; failed
 * signatures are verdicts in struct cms_verified, not errors.
 *
 * Thread: no globals; keys and certificates are immutable after load and
 * may be shared by threads (X509 is reference counted); everything else
 * belongs to one thread. */
#ifndef POSTSEAL_CRYPTO_CMS_H
#define POSTSEAL_CRYPTO_CMS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/base.h>
#include <openssl/x509.h>

#include "core/buf.h"

#define CMS_MAX_INPUT (64u << 20) /* bytes of DER/BER accepted */
#define CMS_MAX_DEPTH 32          /* ASN.1 nesting accepted on input */
#define CMS_MAX_SIGNERS 8         /* SignerInfos made or checked */
#define CMS_MAX_RECIPIENTS 256    /* RecipientInfos made or tried */
#define CMS_MAX_CERTS 64          /* certificates carried in SignedData */
#define CMS_MAX_SIG 1024          /* bytes of one signature (RSA-8192) */
#define CMS_EMAIL_MAX 256

enum cms_err {
  CMS_OK = 0,
  CMS_ERR_SYNTAX = -1,       /* not (valid) DER/BER of the expected shape */
  CMS_ERR_UNSUPPORTED = -2,  /* unknown algorithm, version or content type */
  CMS_ERR_LIMIT = -3,        /* over a CMS_MAX_* limit */
  CMS_ERR_NO_RECIPIENT = -4, /* no RecipientInfo for any key we hold */
  CMS_ERR_DECRYPT = -5,      /* key unwrap, tag or padding failed */
  CMS_ERR_KEY = -6,          /* key unusable or not matching the cert */
  CMS_ERR_INTERNAL = -7,     /* allocation or library failure */
};

/* cms_err_str names an error value ("syntax", "unsupported", ...). */
const char *cms_err_str(int err);

/* CMS_SHA1 only names RSAES-OAEP's hash on input (OpenSSL's default OAEP
 * parameters); it never signs or verifies. */
enum cms_digest { CMS_SHA256 = 0, CMS_SHA384, CMS_SHA512, CMS_SHA1 };

enum cms_type {
  CMS_TYPE_UNKNOWN = 0,
  CMS_TYPE_DATA,
  CMS_TYPE_SIGNED,
  CMS_TYPE_ENVELOPED,
  CMS_TYPE_AUTH_ENVELOPED,
};

/* cms_content_type reads the contentType of a ContentInfo (DER or BER)
 * without parsing the rest. Returns CMS_OK or CMS_ERR_SYNTAX. */
int cms_content_type(const uint8_t *in, size_t in_len, enum cms_type *out);

/* ---- keys and certificates -------------------------------------------- */

/* A private key: RSA (2048 bits or more to sign), EC P-256, Ed25519 or
 * X25519, loaded from PEM (PKCS#1, SEC1 or PKCS#8, what `openssl genpkey`
 * and `openssl req -newkey` write). */
struct cms_key;

struct cms_key *cms_key_load_pem(const char *path, char *err, size_t err_len);
struct cms_key *cms_key_from_pem(const uint8_t *pem, size_t pem_len, char *err,
                                 size_t err_len);
void cms_key_free(struct cms_key *key);
/* cms_key_matches_cert: 1 when cert's public key is key's. */
int cms_key_matches_cert(const struct cms_key *key, X509 *cert);

/* cms_certs_load_pem reads every certificate of a PEM file (first = leaf
 * when it is a chain). Returns NULL and err on failure or none found. */
STACK_OF(X509) *
    cms_certs_load_pem(const char *path, char *err, size_t err_len);
/* cms_trust_load builds a trust store from a PEM file of CA certificates
 * and/or a directory of them (either may be NULL, not both). */
X509_STORE *cms_trust_load(const char *file, const char *dir, char *err,
                           size_t err_len);
/* cms_cert_emails writes the certificate's email addresses (rfc822Name
 * subjectAltNames, then emailAddress in the subject when there are none),
 * lowercased, up to max. Returns how many. */
size_t cms_cert_emails(X509 *cert, char (*out)[CMS_EMAIL_MAX], size_t max);

/* cms_cert_not_after: the certificate's notAfter in seconds since the
 * epoch, or 0 when it cannot be read. */
int64_t cms_cert_not_after(const X509 *cert);

/* cms_cert_can_receive: 1 when cert's key can have a content key wrapped
 * for it (RSA, EC P-256, X25519); Ed25519 keys only sign. */
int cms_cert_can_receive(X509 *cert);

/* The door to private keys. Every function returns 1 on success. */
struct cms_sig_params {
  enum cms_digest digest; /* hash of tbs for RSA and ECDSA */
  int rsa_pss;            /* RSASSA-PSS, MGF1 with digest, salt = hash len */
};
struct cms_signer {
  /* sign signs tbs (the DER of the signed attributes): RSA and ECDSA
   * over its hash, Ed25519 over tbs itself (PureEdDSA, RFC 8419). ECDSA
   * signatures are DER Ecdsa-Sig-Value. */
  int (*sign)(void *arg, const struct cms_key *key,
              const struct cms_sig_params *p, const uint8_t *tbs,
              size_t tbs_len, uint8_t *out, size_t out_cap, size_t *out_len);
  /* unwrap decrypts an RSA-encrypted content-encryption key: OAEP with
   * oaep_md and MGF1 with the same hash, or PKCS#1 v1.5 when oaep is 0. */
  int (*unwrap)(void *arg, const struct cms_key *key, int oaep,
                enum cms_digest oaep_md, const uint8_t *in, size_t in_len,
                uint8_t *out, size_t out_cap, size_t *out_len);
  /* agree computes the raw ECDH (P-256: the X coordinate) or X25519
   * shared secret with a peer's public key (P-256: uncompressed point;
   * X25519: 32 bytes). */
  int (*agree)(void *arg, const struct cms_key *key, const uint8_t *peer,
               size_t peer_len, uint8_t *out, size_t out_cap, size_t *out_len);
  void *arg;
};

/* The in-process signer (arg unused). */
extern const struct cms_signer cms_local_signer;

/* ---- SignedData -------------------------------------------------------- */

struct cms_sign_party {
  const struct cms_key *key;
  X509 *cert;             /* must carry key's public key */
  STACK_OF(X509) * chain; /* intermediates to carry; may be NULL */
  enum cms_digest digest; /* Ed25519: always SHA-512 (RFC 8419 §3.1) */
  int rsa_pss;
  int use_ski; /* SignerIdentifier: subjectKeyIdentifier (version 3) */
};

struct cms_sign_opts {
  int detached;         /* no eContent (for multipart/signed) */
  int64_t signing_time; /* seconds since the epoch; < 0: no signingTime */
  int no_certs;         /* carry no certificates */
  int no_smime_attrs;   /* no capabilities, key preference, ESS cert */
  X509 *enc_cert;       /* SMIMEEncryptionKeyPreference; NULL: signer's own */
};

/* cms_sign appends a ContentInfo (id-signedData, DER) signing content
 * (eContentType id-data) by every party. */
int cms_sign(struct buf *out, const struct cms_signer *signer,
             const struct cms_sign_party *parties, size_t num_parties,
             const uint8_t *content, size_t content_len,
             const struct cms_sign_opts *opts, char *err, size_t err_len);

enum cms_verdict {
  CMS_V_PASS = 0,
  CMS_V_BAD_SIGNATURE, /* signature does not verify */
  CMS_V_BAD_DIGEST,    /* messageDigest is not the content's hash */
  CMS_V_NO_CERT,       /* signer's certificate not found */
  CMS_V_UNTRUSTED,     /* chain does not reach a trust anchor */
  CMS_V_EXPIRED,       /* a certificate is outside its validity */
  CMS_V_KEY_USAGE,     /* keyUsage/extKeyUsage forbid signing mail */
  CMS_V_FROM_MISMATCH, /* From address not in the certificate */
  CMS_V_UNSUPPORTED,   /* algorithm we do not verify */
};

/* cms_verdict_str: "pass", "bad-signature", "bad-digest", ... */
const char *cms_verdict_str(enum cms_verdict v);

struct cms_signer_result {
  enum cms_verdict verdict;
  X509 *cert;           /* the signer's certificate (owned), or NULL */
  int64_t signing_time; /* seconds since the epoch; -1: absent */
  enum cms_digest digest;
  char sig_alg[24];          /* "rsa", "rsa-pss", "ecdsa-p256", "ed25519" */
  char email[CMS_EMAIL_MAX]; /* the address matched, else the first */
  char reason[160];          /* why, when not pass */
};

struct cms_verify_opts {
  X509_STORE *trust;  /* NULL: chains not checked (verdict untrusted) */
  int64_t now;        /* time to check validity at; 0: now */
  const char *from;   /* address the certificate must name; NULL: any */
  X509 **extra_certs; /* certificates to search besides those carried */
  size_t num_extra_certs;
};

struct cms_verified {
  size_t num_signers;
  struct cms_signer_result signers[CMS_MAX_SIGNERS];
  int detached;       /* no eContent: the caller's content was checked */
  struct buf content; /* the encapsulated content (copy), if not detached */
  /* eContentType: CMS_TYPE_DATA for id-data (what S/MIME signs, RFC 8551
   * §2.4.1), CMS_TYPE_UNKNOWN for a type this module does not name. The
   * signers' contentType attributes were checked against it. */
  enum cms_type content_type;
};

/* cms_verify parses a SignedData ContentInfo and checks each of its
 * signers (up to CMS_MAX_SIGNERS; more is CMS_ERR_LIMIT) over the
 * encapsulated content, or over detached when there is none. detached
 * (non-NULL) given for a SignedData that has eContent is CMS_ERR_SYNTAX:
 * the caller meant other bytes than the ones signed (signature wrapping),
 * so no verdict is given; detached NULL for one without eContent is
 * CMS_ERR_SYNTAX too. Any eContentType is accepted (see
 * out->content_type; S/MIME callers must want CMS_TYPE_DATA). Returns
 * CMS_OK when it parsed (verdicts in out) or an error. out is always
 * initialised; release it with cms_verified_cleanup. */
int cms_verify(struct cms_verified *out, const uint8_t *in, size_t in_len,
               const uint8_t *detached, size_t detached_len,
               const struct cms_verify_opts *opts, char *err, size_t err_len);
/* cms_verified_all_pass: 1 when there is at least one signer and every
 * signer's verdict is pass. */
int cms_verified_all_pass(const struct cms_verified *v);
void cms_verified_cleanup(struct cms_verified *v);

/* ---- EnvelopedData, AuthEnvelopedData ---------------------------------- */

enum cms_cipher {
  CMS_AES256_GCM = 0, /* AuthEnvelopedData (the default) */
  CMS_AES128_GCM,
  CMS_AES256_CBC, /* EnvelopedData, for peers without RFC 5083 */
  CMS_AES128_CBC,
};

struct cms_recipient {
  X509 *cert;    /* RSA: KeyTrans; EC P-256 or X25519: KeyAgree */
  int rsa_pkcs1; /* RSA: PKCS#1 v1.5 instead of OAEP (old peers) */
  int use_ski;   /* name it by subjectKeyIdentifier */
};

/* cms_encrypt appends a ContentInfo (id-ct-authEnvelopedData for GCM,
 * id-envelopedData for CBC) of content encrypted under one fresh key
 * wrapped for each recipient. */
int cms_encrypt(struct buf *out, const struct cms_recipient *rcpts,
                size_t num_rcpts, const uint8_t *content, size_t content_len,
                enum cms_cipher cipher, char *err, size_t err_len);

struct cms_decrypt_party {
  const struct cms_key *key;
  X509 *cert; /* to find our RecipientInfo */
};

/* cms_check_enveloped: CMS_OK when in is, whole, a well-formed
 * EnvelopedData or AuthEnvelopedData ContentInfo: through the input gate
 * (size, BER to DER, nesting, nothing after it), every RecipientInfo
 * parses, there is at least one, and the encryptedContent is present and
 * not empty. Otherwise a negative cms_err (reason in err). Nothing is
 * decrypted and no algorithm need be supported: this answers "is this
 * really an encrypted message?" (a gateway that leaves encrypted mail
 * alone must not be fooled by a ContentInfo head before plaintext). */
int cms_check_enveloped(const uint8_t *in, size_t in_len, char *err,
                        size_t err_len);

/* cms_decrypt finds a RecipientInfo for one of the parties, unwraps the
 * content key and decrypts. On any failure out is left as it was (no
 * plaintext appended). *out_authenticated is 1 for AuthEnvelopedData. */
int cms_decrypt(struct buf *out, int *out_authenticated,
                const struct cms_signer *signer,
                const struct cms_decrypt_party *parties, size_t num_parties,
                const uint8_t *in, size_t in_len, char *err, size_t err_len);

#endif
