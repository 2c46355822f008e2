/* crypto/cms_signed.c — SignedData (RFC 5652 §5): the parsed form and its
 * encoder (cms_internal.h), cms_sign and cms_verify (cms.h).
 *
 * Making: each party's signed attributes (RFC 5652 §11, RFC 8551 §2.5,
 * RFC 5035) are built as a DER SET OF, signed through struct cms_signer
 * with the SET tag, then stored with the [0] IMPLICIT tag (§5.4). The
 * form is filled with slices of owned pieces and encoded once.
 *
 * Checking: the input goes through cms_input_der (size, BER, nesting),
 * is parsed into the form, and each SignerInfo gets one verdict. The
 * checks run in this order and the first failure is the verdict:
 * certificate found, algorithms known, signed attributes (§5.3, §11),
 * messageDigest, signature (over the attributes as received, re-tagged
 * 0xA0 -> 0x31, never re-encoded), chain to the caller's anchors at the
 * caller's time, key usage, From address.
 *
 * Floors: RSA keys sign at 2048 bits (cms_key refuses less) and verify
 * at 1024 bits (old peers); over 8192 bits (CMS_MAX_SIG) is refused. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>

#include "crypto/cms_internal.h"

#define CC0 (CBS_ASN1_CONTEXT_SPECIFIC | CBS_ASN1_CONSTRUCTED | 0)
#define CC1 (CBS_ASN1_CONTEXT_SPECIFIC | CBS_ASN1_CONSTRUCTED | 1)
#define CC2 (CBS_ASN1_CONTEXT_SPECIFIC | CBS_ASN1_CONSTRUCTED | 2)
#define CC3 (CBS_ASN1_CONTEXT_SPECIFIC | CBS_ASN1_CONSTRUCTED | 3)
#define CC4 (CBS_ASN1_CONTEXT_SPECIFIC | CBS_ASN1_CONSTRUCTED | 4)

#define RSA_VERIFY_MIN_BITS 1024 /* accepted from peers */
#define RSA_VERIFY_MAX_BITS (CMS_MAX_SIG * 8)
#define EMAILS_MAX 16         /* addresses read from one certificate */
#define PSS_SALT_MAX 1024     /* bytes of RSASSA-PSS salt accepted */
#define TIME_MAX 253402300799 /* 9999-12-31T23:59:59Z */

/* ---- time (RFC 5652 §11.3, RFC 5280 §4.1.2.5) ---- */

/* days_from_civil: days from 1970-01-01 to y-m-d (proleptic Gregorian,
 * H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  unsigned yoe = (unsigned)(y - era * 400);
  unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

/* civil_from_days is days_from_civil's inverse. */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d) {
  z += 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  unsigned doe = (unsigned)(z - era * 146097);
  unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static unsigned days_in_month(unsigned y, unsigned m) {
  static const unsigned days[12] = {31, 28, 31, 30, 31, 30,
                                    31, 31, 30, 31, 30, 31};
  int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return m == 2 && leap ? 29 : days[m - 1];
}

/* get_digits reads n ASCII digits as a number. */
static int get_digits(CBS *cbs, size_t n, unsigned *out) {
  *out = 0;
  for (size_t i = 0; i < n; i++) {
    uint8_t c;
    if (!CBS_get_u8(cbs, &c) || c < '0' || c > '9') {
      return 0;
    }
    *out = *out * 10 + (unsigned)(c - '0');
  }
  return 1;
}

/* time_parse reads a Time element strictly: UTCTime YYMMDDHHMMSSZ (YY
 * under 50 is 20YY) or GeneralizedTime YYYYMMDDHHMMSSZ, seconds present,
 * Zulu, no fraction (RFC 5652 §11.3 by way of RFC 5280 §4.1.2.5). */
static int time_parse(CBS elem, int64_t *out) {
  CBS body;
  unsigned tag, year, mon, day, h, mi, s;
  uint8_t z;
  if (!CBS_get_any_asn1(&elem, &body, &tag) || CBS_len(&elem) != 0) {
    return 0;
  }
  if (tag == CBS_ASN1_UTCTIME) {
    if (CBS_len(&body) != 13 || !get_digits(&body, 2, &year)) {
      return 0;
    }
    year += year < 50 ? 2000 : 1900;
  } else if (tag != CBS_ASN1_GENERALIZEDTIME || CBS_len(&body) != 15 ||
             !get_digits(&body, 4, &year)) {
    return 0;
  }
  if (!get_digits(&body, 2, &mon) || !get_digits(&body, 2, &day) ||
      !get_digits(&body, 2, &h) || !get_digits(&body, 2, &mi) ||
      !get_digits(&body, 2, &s) || !CBS_get_u8(&body, &z) || z != 'Z' ||
      mon < 1 || mon > 12 || day < 1 || day > days_in_month(year, mon) ||
      h > 23 || mi > 59 || s > 59) {
    return 0;
  }
  *out = days_from_civil(year, mon, day) * 86400 + h * 3600 + mi * 60 + s;
  return 1;
}

/* add_time writes t as UTCTime for the years 1950-2049 and as
 * GeneralizedTime otherwise (RFC 5652 §11.3). */
static int add_time(CBB *cbb, int64_t t) {
  int64_t y;
  unsigned m, d;
  if (t < 0 || t > TIME_MAX) {
    return 0;
  }
  civil_from_days(t / 86400, &y, &m, &d);
  unsigned sec = (unsigned)(t % 86400);
  int utc = y >= 1950 && y <= 2049;
  char text[16];
  int n = snprintf(text, sizeof(text), "%0*u%02u%02u%02u%02u%02uZ", utc ? 2 : 4,
                   (unsigned)(utc ? y % 100 : y), m, d, sec / 3600,
                   sec / 60 % 60, sec % 60);
  CBB child;
  return n > 0 && (size_t)n < sizeof(text) &&
         CBB_add_asn1(cbb, &child,
                      utc ? CBS_ASN1_UTCTIME : CBS_ASN1_GENERALIZEDTIME) &&
         CBB_add_bytes(&child, (const uint8_t *)text, (size_t)n) &&
         CBB_flush(cbb);
}

/* ---- parsing (RFC 5652 §5) ---- */

/* alg_split reads AlgorithmIdentifier ::= SEQUENCE { algorithm,
 * parameters ANY OPTIONAL } (RFC 5280 §4.1.1.2); params is empty when
 * absent. */
static int alg_split(CBS elem, CBS *oid, CBS *params) {
  CBS seq;
  if (!CBS_get_asn1(&elem, &seq, CBS_ASN1_SEQUENCE) || CBS_len(&elem) != 0 ||
      !CBS_get_asn1(&seq, oid, CBS_ASN1_OBJECT)) {
    return 0;
  }
  *params = seq;
  return CBS_len(&seq) == 0 ||
         (CBS_get_any_asn1_element(&seq, NULL, NULL, NULL) &&
          CBS_len(&seq) == 0);
}

/* params_null_or_absent: 1 for absent parameters or a NULL (RFC 5754 §2
 * says absent, RFC 3370 §3.2 says NULL; both are seen). */
static int params_null_or_absent(const CBS *params) {
  static const uint8_t null[2] = {0x05, 0x00};
  return CBS_len(params) == 0 || CBS_mem_equal(params, null, sizeof(null));
}

/* get_optional_element takes an OPTIONAL element of tag, header
 * included (this BoringSSL has no CBS_get_optional_asn1_element). */
static int get_optional_element(CBS *cbs, CBS *out, int *present,
                                unsigned tag) {
  *present = CBS_peek_asn1_tag(cbs, tag);
  return !*present || CBS_get_asn1_element(cbs, out, tag);
}

/* set_in_der_order: 1 when a sorts no later than b (X.690 §11.6). */
static int set_in_der_order(const CBS *a, const CBS *b) {
  size_t n = CBS_len(a) < CBS_len(b) ? CBS_len(a) : CBS_len(b);
  int c = memcmp(CBS_data(a), CBS_data(b), n);
  return c < 0 || (c == 0 && CBS_len(a) <= CBS_len(b));
}

/* parse_attrs splits SignedAttributes ::= SET SIZE (1..MAX) OF Attribute
 * (RFC 5652 §5.3), which si->signed_attrs holds with its [0] tag. */
static int parse_attrs(struct cms_signer_info *si, size_t idx, char *err,
                       size_t err_len) {
  CBS elem = si->signed_attrs, body;
  if (!CBS_get_asn1(&elem, &body, CC0) || CBS_len(&body) == 0) {
    return cms_set_err(err, err_len, CMS_ERR_SYNTAX,
                       "signerInfo %zu: empty signedAttrs", idx);
  }
  while (CBS_len(&body) > 0) {
    if (si->num_attrs == CMS_SIGNED_MAX_ATTRS) {
      return cms_set_err(err, err_len, CMS_ERR_LIMIT,
                         "signerInfo %zu: over %d signed attributes", idx,
                         CMS_SIGNED_MAX_ATTRS);
    }
    struct cms_signed_attr *a = &si->attrs[si->num_attrs++];
    CBS attr;
    if (!CBS_get_asn1(&body, &attr, CBS_ASN1_SEQUENCE) ||
        !CBS_get_asn1(&attr, &a->type, CBS_ASN1_OBJECT) ||
        !CBS_get_asn1(&attr, &a->values, CBS_ASN1_SET) || CBS_len(&attr) != 0) {
      return cms_set_err(err, err_len, CMS_ERR_SYNTAX,
                         "signerInfo %zu: malformed signed attribute", idx);
    }
  }
  return CMS_OK;
}

/* parse_signer_info reads one SignerInfo ::= SEQUENCE { version, sid,
 * digestAlgorithm, signedAttrs [0] IMPLICIT OPTIONAL, signatureAlgorithm,
 * signature OCTET STRING, unsignedAttrs [1] IMPLICIT OPTIONAL } (RFC 5652
 * §5.3); the version must be 1 with issuerAndSerialNumber, 3 with SKI. */
static int parse_signer_info(CBS elem, struct cms_signer_info *si, size_t idx,
                             char *err, size_t err_len) {
  CBS seq, oid, params;
  unsigned sid_tag;
  memset(si, 0, sizeof(*si));
  if (!CBS_get_asn1(&elem, &seq, CBS_ASN1_SEQUENCE) ||
      !CBS_get_asn1_uint64(&seq, &si->version) ||
      !CBS_get_any_asn1_element(&seq, &si->sid, &sid_tag, NULL) ||
      !CBS_get_asn1_element(&seq, &si->digest_alg, CBS_ASN1_SEQUENCE) ||
      !alg_split(si->digest_alg, &oid, &params) ||
      !get_optional_element(&seq, &si->signed_attrs, &si->has_signed_attrs,
                            CC0) ||
      !CBS_get_asn1_element(&seq, &si->sig_alg, CBS_ASN1_SEQUENCE) ||
      !alg_split(si->sig_alg, &oid, &params) ||
      !CBS_get_asn1(&seq, &si->signature, CBS_ASN1_OCTETSTRING) ||
      !get_optional_element(&seq, &si->unsigned_attrs, &si->has_unsigned_attrs,
                            CC1) ||
      CBS_len(&seq) != 0) {
    return cms_set_err(err, err_len, CMS_ERR_SYNTAX,
                       "signerInfo %zu: malformed", idx);
  }
  uint64_t want = sid_tag == CBS_ASN1_SEQUENCE                 ? 1
                  : sid_tag == (CBS_ASN1_CONTEXT_SPECIFIC | 0) ? 3
                                                               : 0;
  if (want == 0) {
    return cms_set_err(err, err_len, CMS_ERR_SYNTAX,
                       "signerInfo %zu: sid is neither issuerAndSerialNumber "
                       "nor subjectKeyIdentifier",
                       idx);
  }
  if (si->version != want) {
    return cms_set_err(err, err_len, CMS_ERR_SYNTAX,
                       "signerInfo %zu: version %llu, RFC 5652 §5.3 wants %llu",
                       idx, (unsigned long long)si->version,
                       (unsigned long long)want);
  }
  if (CBS_len(&si->signature) > CMS_MAX_SIG) {
    return cms_set_err(err, err_len, CMS_ERR_LIMIT,
                       "signerInfo %zu: signature over %d bytes", idx,
                       CMS_MAX_SIG);
  }
  return si->has_signed_attrs ? parse_attrs(si, idx, err, err_len) : CMS_OK;
}

/* parse_digest_algs reads digestAlgorithms ::= SET OF
 * DigestAlgorithmIdentifier (only their shape; verify reads the OIDs). */
static int parse_digest_algs(struct cms_signed *sd, CBS set, char *err,
                             size_t err_len) {
  while (CBS_len(&set) > 0) {
    CBS *alg = &sd->digest_algs[sd->num_digest_algs], oid, params;
    if (sd->num_digest_algs == CMS_SIGNED_MAX_DIGEST_ALGS) {
      return cms_set_err(err, err_len, CMS_ERR_LIMIT,
                         "over %d digestAlgorithms",
                         CMS_SIGNED_MAX_DIGEST_ALGS);
    }
    if (!CBS_get_asn1_element(&set, alg, CBS_ASN1_SEQUENCE) ||
        !alg_split(*alg, &oid, &params)) {
      return cms_set_err(err, err_len, CMS_ERR_SYNTAX,
                         "malformed digestAlgorithms");
    }
    if (sd->num_digest_algs > 0 && !set_in_der_order(alg - 1, alg)) {
      sd->sets_in_der_order = 0;
    }
    sd->num_digest_algs++;
  }
  return CMS_OK;
}

/* parse_encap reads EncapsulatedContentInfo ::= SEQUENCE { eContentType,
 * eContent [0] EXPLICIT OCTET STRING OPTIONAL } (RFC 5652 §5.2). BER's
 * constructed OCTET STRING was made primitive by the gate. */
static int parse_encap(struct cms_signed *sd, CBS *in, char *err,
                       size_t err_len) {
  CBS seq, explicit0;
  if (!CBS_get_asn1(in, &seq, CBS_ASN1_SEQUENCE) ||
      !CBS_get_asn1(&seq, &sd->econtent_type, CBS_ASN1_OBJECT) ||
      !CBS_get_optional_asn1(&seq, &explicit0, &sd->has_econtent, CC0) ||
      CBS_len(&seq) != 0 ||
      (sd->has_econtent &&
       (!CBS_get_asn1(&explicit0, &sd->econtent, CBS_ASN1_OCTETSTRING) ||
        CBS_len(&explicit0) != 0))) {
    return cms_set_err(err, err_len, CMS_ERR_SYNTAX,
                       "malformed encapContentInfo");
  }
  return CMS_OK;
}

/* parse_certs reads certificates [0] IMPLICIT CertificateSet (RFC 5652
 * §10.2.3): any CertificateChoices element, kept as received. */
static int parse_certs(struct cms_signed *sd, CBS *in, char *err,
                       size_t err_len) {
  CBS set;
  if (!CBS_get_optional_asn1(in, &set, &sd->has_certs, CC0)) {
    return cms_set_err(err, err_len, CMS_ERR_SYNTAX, "malformed certificates");
  }
  while (sd->has_certs && CBS_len(&set) > 0) {
    CBS *cert = &sd->certs[sd->num_certs];
    if (sd->num_certs == CMS_MAX_CERTS) {
      return cms_set_err(err, err_len, CMS_ERR_LIMIT, "over %d certificates",
                         CMS_MAX_CERTS);
    }
    if (!CBS_get_any_asn1_element(&set, cert, NULL, NULL)) {
      return cms_set_err(err, err_len, CMS_ERR_SYNTAX,
                         "malformed certificates");
    }
    if (sd->num_certs > 0 && !set_in_der_order(cert - 1, cert)) {
      sd->sets_in_der_order = 0;
    }
    sd->num_certs++;
  }
  return CMS_OK;
}

/* parse_signer_infos reads signerInfos ::= SET OF SignerInfo. */
static int parse_signer_infos(struct cms_signed *sd, CBS set, char *err,
                              size_t err_len) {
  CBS prev = {NULL, 0};
  while (CBS_len(&set) > 0) {
    CBS elem;
    if (sd->num_signers == CMS_MAX_SIGNERS) {
      return cms_set_err(err, err_len, CMS_ERR_LIMIT, "over %d signers",
                         CMS_MAX_SIGNERS);
    }
    if (!CBS_get_asn1_element(&set, &elem, CBS_ASN1_SEQUENCE)) {
      return cms_set_err(err, err_len, CMS_ERR_SYNTAX, "malformed signerInfos");
    }
    int rc = parse_signer_info(elem, &sd->signers[sd->num_signers],
                               sd->num_signers, err, err_len);
    if (rc != CMS_OK) {
      return rc;
    }
    if (sd->num_signers > 0 && !set_in_der_order(&prev, &elem)) {
      sd->sets_in_der_order = 0;
    }
    prev = elem;
    sd->num_signers++;
  }
  return CMS_OK;
}

/* signed_data_version computes CMSVersion as RFC 5652 §5.1 says it must
 * be, from the certificate and CRL choices, the SignerInfo versions and
 * the eContentType. */
static uint64_t signed_data_version(const struct cms_signed *sd) {
  int other = 0, v2attr = 0, v1attr = 0, si3 = 0;
  for (size_t i = 0; i < sd->num_certs; i++) {
    uint8_t tag = CBS_data(&sd->certs[i])[0];
    other |= tag == 0xa3;
    v2attr |= tag == 0xa2;
    v1attr |= tag == 0xa1;
  }
  CBS crls = sd->crls, body, crl;
  unsigned tag;
  if (sd->has_crls && CBS_get_asn1(&crls, &body, CC1)) {
    while (CBS_get_any_asn1(&body, &crl, &tag)) {
      other |= tag == CC1;
    }
  }
  for (size_t i = 0; i < sd->num_signers; i++) {
    si3 |= sd->signers[i].version == 3;
  }
  if (other) {
    return 5;
  }
  if (v2attr) {
    return 4;
  }
  return v1attr || si3 || !cms_oid_eq(&sd->econtent_type, &CMS_OID_DATA) ? 3
                                                                         : 1;
}

/* parse_body reads SignedData ::= SEQUENCE { version, digestAlgorithms,
 * encapContentInfo, certificates [0] IMPLICIT OPTIONAL, crls [1] IMPLICIT
 * OPTIONAL, signerInfos } (RFC 5652 §5.1). */
static int parse_body(struct cms_signed *sd, CBS seq, char *err,
                      size_t err_len) {
  CBS set;
  int rc;
  if (!CBS_get_asn1_uint64(&seq, &sd->version) ||
      !CBS_get_asn1(&seq, &set, CBS_ASN1_SET)) {
    return cms_set_err(err, err_len, CMS_ERR_SYNTAX, "malformed SignedData");
  }
  if ((rc = parse_digest_algs(sd, set, err, err_len)) != CMS_OK ||
      (rc = parse_encap(sd, &seq, err, err_len)) != CMS_OK ||
      (rc = parse_certs(sd, &seq, err, err_len)) != CMS_OK) {
    return rc;
  }
  if (!get_optional_element(&seq, &sd->crls, &sd->has_crls, CC1) ||
      !CBS_get_asn1(&seq, &set, CBS_ASN1_SET)) {
    return cms_set_err(err, err_len, CMS_ERR_SYNTAX, "malformed SignedData");
  }
  if ((rc = parse_signer_infos(sd, set, err, err_len)) != CMS_OK) {
    return rc;
  }
  if (CBS_len(&seq) != 0) {
    return cms_set_err(err, err_len, CMS_ERR_SYNTAX,
                       "%zu bytes after signerInfos", CBS_len(&seq));
  }
  uint64_t want = signed_data_version(sd);
  if (sd->version != want) {
    return cms_set_err(err, err_len, CMS_ERR_SYNTAX,
                       "SignedData version %llu, RFC 5652 §5.1 wants %llu",
                       (unsigned long long)sd->version,
                       (unsigned long long)want);
  }
  return CMS_OK;
}

int cms_signed_parse(struct cms_signed *out, CBS der, char *err,
                     size_t err_len) {
  CBS type, content, seq;
  memset(out, 0, sizeof(*out));
  out->sets_in_der_order = 1;
  if (!cms_content_info_parse(der, &type, &content)) {
    return cms_set_err(err, err_len, CMS_ERR_SYNTAX, "not a ContentInfo");
  }
  if (!cms_oid_eq(&type, &CMS_OID_SIGNED_DATA)) {
    return cms_set_err(err, err_len, CMS_ERR_UNSUPPORTED,
                       "content type is not id-signedData");
  }
  if (!CBS_get_asn1(&content, &seq, CBS_ASN1_SEQUENCE) ||
      CBS_len(&content) != 0) {
    return cms_set_err(err, err_len, CMS_ERR_SYNTAX, "malformed SignedData");
  }
  return parse_body(out, seq, err, err_len);
}

/* ---- encoding ---- */

static int add_cbs(CBB *cbb, const CBS *cbs) {
  return CBB_add_bytes(cbb, CBS_data(cbs), CBS_len(cbs));
}

/* add_set writes a SET OF (tag: SET or an IMPLICIT one) of elements in
 * DER order. */
static int add_set(CBB *cbb, unsigned tag, const CBS *elems, size_t n) {
  CBB set;
  if (!CBB_add_asn1(cbb, &set, tag)) {
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    if (!add_cbs(&set, &elems[i])) {
      return 0;
    }
  }
  return CBB_flush_asn1_set_of(&set) && CBB_flush(cbb);
}

/* add_signer_info writes SignerInfo (RFC 5652 §5.3). */
static int add_signer_info(CBB *cbb, const struct cms_signer_info *si) {
  CBB seq;
  return CBB_add_asn1(cbb, &seq, CBS_ASN1_SEQUENCE) &&
         CBB_add_asn1_uint64(&seq, si->version) && add_cbs(&seq, &si->sid) &&
         add_cbs(&seq, &si->digest_alg) &&
         (!si->has_signed_attrs || add_cbs(&seq, &si->signed_attrs)) &&
         add_cbs(&seq, &si->sig_alg) &&
         CBB_add_asn1_octet_string(&seq, CBS_data(&si->signature),
                                   CBS_len(&si->signature)) &&
         (!si->has_unsigned_attrs || add_cbs(&seq, &si->unsigned_attrs)) &&
         CBB_flush(cbb);
}

/* add_encap writes EncapsulatedContentInfo (RFC 5652 §5.2). */
static int add_encap(CBB *cbb, const struct cms_signed *sd) {
  CBB seq, oid, explicit0;
  return CBB_add_asn1(cbb, &seq, CBS_ASN1_SEQUENCE) &&
         CBB_add_asn1(&seq, &oid, CBS_ASN1_OBJECT) &&
         add_cbs(&oid, &sd->econtent_type) &&
         (!sd->has_econtent ||
          (CBB_add_asn1(&seq, &explicit0, CC0) &&
           CBB_add_asn1_octet_string(&explicit0, CBS_data(&sd->econtent),
                                     CBS_len(&sd->econtent)))) &&
         CBB_flush(cbb);
}

int cms_signed_encode(CBB *cbb, const struct cms_signed *sd) {
  CBB ci, explicit0, seq, infos;
  if (!cms_content_info_begin(cbb, &ci, &explicit0, &CMS_OID_SIGNED_DATA) ||
      !CBB_add_asn1(&explicit0, &seq, CBS_ASN1_SEQUENCE) ||
      !CBB_add_asn1_uint64(&seq, sd->version) ||
      !add_set(&seq, CBS_ASN1_SET, sd->digest_algs, sd->num_digest_algs) ||
      !add_encap(&seq, sd) ||
      (sd->has_certs && !add_set(&seq, CC0, sd->certs, sd->num_certs)) ||
      (sd->has_crls && !add_cbs(&seq, &sd->crls)) ||
      !CBB_add_asn1(&seq, &infos, CBS_ASN1_SET)) {
    return 0;
  }
  for (size_t i = 0; i < sd->num_signers; i++) {
    if (!add_signer_info(&infos, &sd->signers[i])) {
      return 0;
    }
  }
  return CBB_flush_asn1_set_of(&infos) && CBB_flush(cbb);
}

/* ---- signing: the pieces ---- */

#define SIGN_MAX_PIECES (CMS_MAX_SIGNERS * 5 + CMS_MAX_CERTS + 4)

/* The owned pieces of a SignedData being made; the form points in. */
struct sign_store {
  uint8_t *piece[SIGN_MAX_PIECES];
  size_t num;
};

/* store_keep finishes cbb (when ok) into a piece and points out at it;
 * cbb is always released. */
static int store_keep(struct sign_store *st, CBB *cbb, int ok, CBS *out) {
  uint8_t *data;
  size_t len;
  if (!ok || st->num == SIGN_MAX_PIECES || !CBB_finish(cbb, &data, &len)) {
    CBB_cleanup(cbb);
    return 0;
  }
  st->piece[st->num++] = data;
  CBS_init(out, data, len);
  return 1;
}

static void store_free(struct sign_store *st) {
  for (size_t i = 0; i < st->num; i++) {
    OPENSSL_free(st->piece[i]);
  }
  st->num = 0;
}

/* add_mgf1 writes MaskGenAlgorithm { id-mgf1, hashAlgorithm } (RFC 4055
 * §2.2), the hash with NULL parameters as RFC 4055's module and OpenSSL
 * write it. */
static int add_mgf1(CBB *cbb, enum cms_digest d) {
  CBB seq;
  return CBB_add_asn1(cbb, &seq, CBS_ASN1_SEQUENCE) &&
         cms_add_oid(&seq, &CMS_OID_MGF1) &&
         cms_add_alg(&seq, cms_digest_oid(d), 1) && CBB_flush(cbb);
}

/* add_pss_alg writes { id-RSASSA-PSS, RSASSA-PSS-params { hashAlgorithm
 * [0], maskGenAlgorithm [1] MGF1 with the same hash, saltLength [2] =
 * hash length, trailerField default } } (RFC 4055 §3.1, RFC 8551). */
static int add_pss_alg(CBB *cbb, enum cms_digest d) {
  CBB seq, params, hash, mgf, salt;
  return CBB_add_asn1(cbb, &seq, CBS_ASN1_SEQUENCE) &&
         cms_add_oid(&seq, &CMS_OID_RSA_PSS) &&
         CBB_add_asn1(&seq, &params, CBS_ASN1_SEQUENCE) &&
         CBB_add_asn1(&params, &hash, CC0) &&
         cms_add_alg(&hash, cms_digest_oid(d), 1) &&
         CBB_add_asn1(&params, &mgf, CC1) && add_mgf1(&mgf, d) &&
         CBB_add_asn1(&params, &salt, CC2) &&
         CBB_add_asn1_uint64(&salt, EVP_MD_size(cms_digest_md(d))) &&
         CBB_flush(cbb);
}

/* add_sig_alg writes the signatureAlgorithm: rsaEncryption with NULL for
 * PKCS#1 v1.5 (RFC 3370 §3.2, what OpenSSL writes), RSASSA-PSS, ecdsa-
 * with-SHA* without parameters (RFC 5753 §7.1.3), id-Ed25519 without
 * (RFC 8419 §2.3). */
static int add_sig_alg(CBB *cbb, int key_type, enum cms_digest d, int pss) {
  static const struct cms_oid *ecdsa[] = {
      [CMS_SHA256] = &CMS_OID_ECDSA_SHA256,
      [CMS_SHA384] = &CMS_OID_ECDSA_SHA384,
      [CMS_SHA512] = &CMS_OID_ECDSA_SHA512,
  };
  switch (key_type) {
  case EVP_PKEY_RSA:
    return pss ? add_pss_alg(cbb, d) : cms_add_alg(cbb, &CMS_OID_RSA, 1);
  case EVP_PKEY_EC:
    return cms_add_alg(cbb, ecdsa[d], 0);
  case EVP_PKEY_ED25519:
    return cms_add_alg(cbb, &CMS_OID_ED25519, 0);
  default:
    return 0;
  }
}

/* ---- signing: signed attributes ---- */

/* attr_begin opens Attribute ::= SEQUENCE { attrType, attrValues SET OF
 * AttributeValue } (RFC 5652 §5.3) and leaves *values open for one. */
static int attr_begin(CBB *attrs, CBB *attr, CBB *values,
                      const struct cms_oid *type) {
  return CBB_add_asn1(attrs, attr, CBS_ASN1_SEQUENCE) &&
         cms_add_oid(attr, type) && CBB_add_asn1(attr, values, CBS_ASN1_SET);
}

/* add_smime_caps writes SMIMECapabilities ::= SEQUENCE OF SMIMECapability
 * in preference order (RFC 8551 §2.5.2): AES-256-GCM, AES-128-GCM
 * (RFC 5084, no parameters), AES-256-CBC, AES-128-CBC (RFC 3565 §4, no
 * parameters), then RSAES-OAEP with SHA-256 and MGF1-SHA-256 (RFC 4055
 * §4.1; the default SHA-1 is not one cms_decrypt unwraps). */
static int add_smime_caps(CBB *values) {
  CBB caps, oaep, params, hash, mgf;
  return CBB_add_asn1(values, &caps, CBS_ASN1_SEQUENCE) &&
         cms_add_alg(&caps, &CMS_OID_AES256_GCM, 0) &&
         cms_add_alg(&caps, &CMS_OID_AES128_GCM, 0) &&
         cms_add_alg(&caps, &CMS_OID_AES256_CBC, 0) &&
         cms_add_alg(&caps, &CMS_OID_AES128_CBC, 0) &&
         CBB_add_asn1(&caps, &oaep, CBS_ASN1_SEQUENCE) &&
         cms_add_oid(&oaep, &CMS_OID_RSA_OAEP) &&
         CBB_add_asn1(&oaep, &params, CBS_ASN1_SEQUENCE) &&
         CBB_add_asn1(&params, &hash, CC0) &&
         cms_add_alg(&hash, &CMS_OID_SHA256, 1) &&
         CBB_add_asn1(&params, &mgf, CC1) && add_mgf1(&mgf, CMS_SHA256) &&
         CBB_flush(values);
}

/* add_enc_key_pref writes SMIMEEncryptionKeyPreference's choice
 * issuerAndSerialNumber [0] IMPLICIT IssuerAndSerialNumber (RFC 8551
 * §2.5.3). */
static int add_enc_key_pref(CBB *values, X509 *cert) {
  uint8_t *storage;
  CBS issuer, serial;
  CBB ias;
  int ok = cms_cert_issuer_serial(cert, &issuer, &serial, &storage) &&
           CBB_add_asn1(values, &ias, CC0) && add_cbs(&ias, &issuer) &&
           add_cbs(&ias, &serial) && CBB_flush(values);
  OPENSSL_free(storage);
  return ok;
}

/* add_signing_cert_v2 writes SigningCertificateV2 ::= SEQUENCE { certs
 * SEQUENCE OF ESSCertIDv2 } with one ESSCertIDv2 ::= SEQUENCE {
 * hashAlgorithm DEFAULT sha256 (so absent for SHA-256, DER), certHash
 * OCTET STRING, issuerSerial IssuerSerial ::= SEQUENCE { issuer
 * GeneralNames { directoryName [4] Name }, serialNumber } } (RFC 5035
 * §5.4.1.1; [4] is explicit: Name is a CHOICE). */
static int add_signing_cert_v2(CBB *values, X509 *cert, enum cms_digest d) {
  uint8_t *der = NULL, *storage = NULL, hash[EVP_MAX_MD_SIZE];
  unsigned hash_len;
  CBS issuer, serial;
  CBB scv2, certs, id, is, names, dn;
  int der_len = i2d_X509(cert, &der);
  int ok = der_len > 0 &&
           EVP_Digest(der, (size_t)der_len, hash, &hash_len, cms_digest_md(d),
                      NULL) &&
           cms_cert_issuer_serial(cert, &issuer, &serial, &storage) &&
           CBB_add_asn1(values, &scv2, CBS_ASN1_SEQUENCE) &&
           CBB_add_asn1(&scv2, &certs, CBS_ASN1_SEQUENCE) &&
           CBB_add_asn1(&certs, &id, CBS_ASN1_SEQUENCE) &&
           (d == CMS_SHA256 || cms_add_alg(&id, cms_digest_oid(d), 0)) &&
           CBB_add_asn1_octet_string(&id, hash, hash_len) &&
           CBB_add_asn1(&id, &is, CBS_ASN1_SEQUENCE) &&
           CBB_add_asn1(&is, &names, CBS_ASN1_SEQUENCE) &&
           CBB_add_asn1(&names, &dn, CC4) && add_cbs(&dn, &issuer) &&
           add_cbs(&is, &serial) && CBB_flush(values);
  OPENSSL_free(der);
  OPENSSL_free(storage);
  return ok;
}

/* add_signed_attrs writes SignedAttributes as the SET OF that is signed
 * (RFC 5652 §5.4), sorted: contentType id-data (§11.1), messageDigest
 * (§11.2), signingTime (§11.3) and, unless the caller says not to, the
 * S/MIME attributes (RFC 8551 §2.5.2, §2.5.3, RFC 5035). */
static int add_signed_attrs(CBB *cbb, const struct cms_sign_party *p,
                            enum cms_digest d, const uint8_t *md, size_t md_len,
                            const struct cms_sign_opts *opts) {
  CBB attrs, attr, v;
  X509 *enc = opts->enc_cert != NULL ? opts->enc_cert : p->cert;
  /* An Ed25519 certificate cannot receive: no key preference for it. */
  int enc_ok = cms_cert_can_receive(enc);
  if (!CBB_add_asn1(cbb, &attrs, CBS_ASN1_SET) ||
      !attr_begin(&attrs, &attr, &v, &CMS_OID_CONTENT_TYPE) ||
      !cms_add_oid(&v, &CMS_OID_DATA) ||
      !attr_begin(&attrs, &attr, &v, &CMS_OID_MESSAGE_DIGEST) ||
      !CBB_add_asn1_octet_string(&v, md, md_len)) {
    return 0;
  }
  if (opts->signing_time >= 0 &&
      (!attr_begin(&attrs, &attr, &v, &CMS_OID_SIGNING_TIME) ||
       !add_time(&v, opts->signing_time))) {
    return 0;
  }
  if (!opts->no_smime_attrs &&
      (!attr_begin(&attrs, &attr, &v, &CMS_OID_SMIME_CAPABILITIES) ||
       !add_smime_caps(&v) ||
       (enc_ok && (!attr_begin(&attrs, &attr, &v, &CMS_OID_ENC_KEY_PREF) ||
                   !add_enc_key_pref(&v, enc))) ||
       !attr_begin(&attrs, &attr, &v, &CMS_OID_SIGNING_CERT_V2) ||
       !add_signing_cert_v2(&v, p->cert, d))) {
    return 0;
  }
  return CBB_flush_asn1_set_of(&attrs) && CBB_flush(cbb);
}

/* ---- signing: SignerInfo and SignedData ---- */

static enum cms_digest party_digest(const struct cms_sign_party *p) {
  /* RFC 8419 §3.1: Ed25519 with signed attributes digests with SHA-512. */
  return p->key->type == EVP_PKEY_ED25519 ? CMS_SHA512 : p->digest;
}

/* party_check refuses a party that cannot sign as asked. */
static int party_check(const struct cms_sign_party *p, size_t i, char *err,
                       size_t err_len) {
  uint8_t ski[64];
  size_t ski_len;
  if (p->key == NULL || p->cert == NULL) {
    return cms_set_err(err, err_len, CMS_ERR_KEY,
                       "signer %zu: no key or certificate", i);
  }
  if (p->key->type != EVP_PKEY_RSA && p->key->type != EVP_PKEY_EC &&
      p->key->type != EVP_PKEY_ED25519) {
    return cms_set_err(err, err_len, CMS_ERR_KEY, "signer %zu: key cannot sign",
                       i);
  }
  if (p->digest > CMS_SHA512 || (p->rsa_pss && p->key->type != EVP_PKEY_RSA)) {
    return cms_set_err(err, err_len, CMS_ERR_UNSUPPORTED,
                       "signer %zu: digest or PSS not for this key", i);
  }
  if (!cms_key_matches_cert(p->key, p->cert)) {
    return cms_set_err(err, err_len, CMS_ERR_KEY,
                       "signer %zu: key does not match the certificate", i);
  }
  if (p->use_ski && !cms_cert_ski(p->cert, ski, sizeof(ski), &ski_len)) {
    return cms_set_err(err, err_len, CMS_ERR_KEY,
                       "signer %zu: certificate has no subjectKeyIdentifier",
                       i);
  }
  return CMS_OK;
}

/* sign_party fills si for party p: sid, digestAlgorithm, the signed
 * attributes signed through signer as a SET (0x31) and then stored with
 * their [0] IMPLICIT tag (0xA0, RFC 5652 §5.4), signatureAlgorithm and
 * signature. */
static int sign_party(struct cms_signer_info *si, struct sign_store *st,
                      const struct cms_signer *signer,
                      const struct cms_sign_party *p, const uint8_t *content,
                      size_t content_len, const struct cms_sign_opts *opts) {
  enum cms_digest d = party_digest(p);
  uint8_t md[EVP_MAX_MD_SIZE], sig[CMS_MAX_SIG];
  unsigned md_len;
  size_t sig_len = 0;
  CBB cbb;
  CBB_zero(&cbb);
  si->version = p->use_ski ? 3 : 1;
  si->has_signed_attrs = 1;
  if (!EVP_Digest(content, content_len, md, &md_len, cms_digest_md(d), NULL) ||
      !store_keep(st, &cbb,
                  CBB_init(&cbb, 128) && cms_add_sid(&cbb, p->cert, p->use_ski),
                  &si->sid) ||
      !store_keep(st, &cbb,
                  CBB_init(&cbb, 16) && cms_add_alg(&cbb, cms_digest_oid(d), 0),
                  &si->digest_alg) ||
      !store_keep(st, &cbb,
                  CBB_init(&cbb, 64) &&
                      add_sig_alg(&cbb, p->key->type, d, p->rsa_pss),
                  &si->sig_alg) ||
      !store_keep(st, &cbb,
                  CBB_init(&cbb, 1024) &&
                      add_signed_attrs(&cbb, p, d, md, md_len, opts),
                  &si->signed_attrs)) {
    return CMS_ERR_INTERNAL;
  }
  struct cms_sig_params params = {.digest = d, .rsa_pss = p->rsa_pss};
  if (!signer->sign(signer->arg, p->key, &params, CBS_data(&si->signed_attrs),
                    CBS_len(&si->signed_attrs), sig, sizeof(sig), &sig_len) ||
      sig_len == 0 || sig_len > sizeof(sig)) {
    return CMS_ERR_KEY;
  }
  /* The piece is ours: the SET tag becomes [0] IMPLICIT in place. */
  st->piece[st->num - 1][0] = 0xa0;
  return store_keep(st, &cbb,
                    CBB_init(&cbb, sig_len) &&
                        CBB_add_bytes(&cbb, sig, sig_len),
                    &si->signature)
             ? CMS_OK
             : CMS_ERR_INTERNAL;
}

/* keep_cert adds cert's DER to the form's certificates unless it is there
 * already. */
static int keep_cert(struct cms_signed *sd, struct sign_store *st, X509 *x,
                     char *err, size_t err_len) {
  uint8_t *der = NULL;
  int len = i2d_X509(x, &der);
  if (len <= 0) {
    return cms_set_err(err, err_len, CMS_ERR_INTERNAL, "i2d_X509 failed");
  }
  for (size_t i = 0; i < sd->num_certs; i++) {
    if (CBS_mem_equal(&sd->certs[i], der, (size_t)len)) {
      OPENSSL_free(der);
      return CMS_OK;
    }
  }
  if (sd->num_certs == CMS_MAX_CERTS || st->num == SIGN_MAX_PIECES) {
    OPENSSL_free(der);
    return cms_set_err(err, err_len, CMS_ERR_LIMIT, "over %d certificates",
                       CMS_MAX_CERTS);
  }
  st->piece[st->num++] = der;
  CBS_init(&sd->certs[sd->num_certs++], der, (size_t)len);
  return CMS_OK;
}

/* fill_certs carries every party's certificate and chain, once each. */
static int fill_certs(struct cms_signed *sd, struct sign_store *st,
                      const struct cms_sign_party *parties, size_t n, char *err,
                      size_t err_len) {
  sd->has_certs = 1;
  for (size_t i = 0; i < n; i++) {
    int rc = keep_cert(sd, st, parties[i].cert, err, err_len);
    STACK_OF(X509) *chain = parties[i].chain;
    for (size_t k = 0; rc == CMS_OK && chain != NULL && k < sk_X509_num(chain);
         k++) {
      rc = keep_cert(sd, st, sk_X509_value(chain, k), err, err_len);
    }
    if (rc != CMS_OK) {
      return rc;
    }
  }
  return CMS_OK;
}

/* fill_signed fills the form for cms_sign: digestAlgorithms (each digest
 * once), eContentType id-data, eContent unless detached, certificates,
 * one SignerInfo per party, version per RFC 5652 §5.1. */
static int fill_signed(struct cms_signed *sd, struct sign_store *st,
                       const struct cms_signer *signer,
                       const struct cms_sign_party *parties, size_t n,
                       const uint8_t *content, size_t content_len,
                       const struct cms_sign_opts *opts, char *err,
                       size_t err_len) {
  CBS_init(&sd->econtent_type, CMS_OID_DATA.der, CMS_OID_DATA.len);
  sd->has_econtent = !opts->detached;
  CBS_init(&sd->econtent, content, content_len);
  for (size_t i = 0; i < n; i++) {
    struct cms_signer_info *si = &sd->signers[sd->num_signers++];
    int rc =
        sign_party(si, st, signer, &parties[i], content, content_len, opts);
    if (rc != CMS_OK) {
      return cms_set_err(err, err_len, rc, "signer %zu: %s", i,
                         rc == CMS_ERR_KEY ? "signing failed"
                                           : "cannot build SignerInfo");
    }
    int seen = 0;
    for (size_t k = 0; k < sd->num_digest_algs; k++) {
      seen |= CBS_mem_equal(&sd->digest_algs[k], CBS_data(&si->digest_alg),
                            CBS_len(&si->digest_alg));
    }
    if (!seen) {
      sd->digest_algs[sd->num_digest_algs++] = si->digest_alg;
    }
  }
  int rc =
      opts->no_certs ? CMS_OK : fill_certs(sd, st, parties, n, err, err_len);
  sd->version = signed_data_version(sd);
  return rc;
}

int cms_sign(struct buf *out, const struct cms_signer *signer,
             const struct cms_sign_party *parties, size_t num_parties,
             const uint8_t *content, size_t content_len,
             const struct cms_sign_opts *opts, char *err, size_t err_len) {
  static const struct cms_sign_opts defaults = {.signing_time = -1};
  opts = opts != NULL ? opts : &defaults;
  if (num_parties == 0 || num_parties > CMS_MAX_SIGNERS) {
    return cms_set_err(err, err_len,
                       num_parties == 0 ? CMS_ERR_KEY : CMS_ERR_LIMIT,
                       "%zu signers (1 to %d)", num_parties, CMS_MAX_SIGNERS);
  }
  if (content_len > CMS_MAX_INPUT || opts->signing_time > TIME_MAX) {
    return cms_set_err(err, err_len, CMS_ERR_LIMIT,
                       "content over %u bytes or signing time past 9999",
                       CMS_MAX_INPUT);
  }
  for (size_t i = 0; i < num_parties; i++) {
    int rc = party_check(&parties[i], i, err, err_len);
    if (rc != CMS_OK) {
      return rc;
    }
  }
  struct cms_signed *sd = OPENSSL_malloc(sizeof(*sd));
  struct sign_store *st = OPENSSL_malloc(sizeof(*st));
  CBB cbb;
  CBB_zero(&cbb);
  int rc = CMS_ERR_INTERNAL;
  if (sd != NULL && st != NULL) {
    memset(sd, 0, sizeof(*sd));
    st->num = 0;
    rc = fill_signed(sd, st, signer, parties, num_parties, content, content_len,
                     opts, err, err_len);
  }
  if (rc == CMS_OK &&
      (!CBB_init(&cbb, content_len + 4096) || !cms_signed_encode(&cbb, sd) ||
       buf_append(out, CBB_data(&cbb), CBB_len(&cbb)) != 0)) {
    rc = cms_set_err(err, err_len, CMS_ERR_INTERNAL, "cannot encode");
  }
  CBB_cleanup(&cbb);
  if (st != NULL) {
    store_free(st);
  }
  OPENSSL_free(st);
  OPENSSL_free(sd);
  return rc;
}

/* ---- verification: one signer ---- */

/* What verify needs from the whole SignedData. */
struct verify_ctx {
  const struct cms_signed *sd;
  const uint8_t *content;
  size_t content_len;
  STACK_OF(X509) * certs; /* carried, then the caller's extra ones */
  const struct cms_verify_opts *opts;
  int64_t now;
};

/* A signer's algorithms as resolved. */
struct verify_alg {
  enum cms_digest digest; /* digestAlgorithm: messageDigest and signature */
  int key_type;           /* EVP_PKEY_RSA, EVP_PKEY_EC, EVP_PKEY_ED25519 */
  int pss;
  int pss_salt;
};

/* verdict writes a reason and returns v. */
static enum cms_verdict verdict(struct cms_signer_result *r, enum cms_verdict v,
                                const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static enum cms_verdict verdict(struct cms_signer_result *r, enum cms_verdict v,
                                const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->reason, sizeof(r->reason), fmt, ap);
  va_end(ap);
  return v;
}

/* The signature algorithms verify knows. hash < 0: the digestAlgorithm's;
 * otherwise the OID names it and it must be the digestAlgorithm. */
static const struct {
  const struct cms_oid *oid;
  int key_type;
  int hash;
  int pss;
} kSigAlgs[] = {
    {&CMS_OID_RSA, EVP_PKEY_RSA, -1, 0},
    {&CMS_OID_SHA256_RSA, EVP_PKEY_RSA, CMS_SHA256, 0},
    {&CMS_OID_SHA384_RSA, EVP_PKEY_RSA, CMS_SHA384, 0},
    {&CMS_OID_SHA512_RSA, EVP_PKEY_RSA, CMS_SHA512, 0},
    {&CMS_OID_RSA_PSS, EVP_PKEY_RSA, -1, 1},
    {&CMS_OID_ECDSA_SHA256, EVP_PKEY_EC, CMS_SHA256, 0},
    {&CMS_OID_ECDSA_SHA384, EVP_PKEY_EC, CMS_SHA384, 0},
    {&CMS_OID_ECDSA_SHA512, EVP_PKEY_EC, CMS_SHA512, 0},
    {&CMS_OID_ED25519, EVP_PKEY_ED25519, -1, 0},
};

/* pss_hash reads a HashAlgorithm element: SHA-2, parameters absent or
 * NULL. */
static int pss_hash(CBS elem, enum cms_digest *out) {
  CBS oid, params;
  return alg_split(elem, &oid, &params) && params_null_or_absent(&params) &&
         cms_digest_from_oid(&oid, out);
}

/* pss_params reads RSASSA-PSS-params (RFC 4055 §3.1): hashAlgorithm [0]
 * and maskGenAlgorithm [1] must be present (their SHA-1 defaults are
 * refused), MGF1 with the same hash; saltLength [2] DEFAULT 20;
 * trailerField [3] must be 1. */
static int pss_params(CBS params, struct verify_alg *a) {
  CBS seq, hash_field, mgf_field, mgf_oid, mgf_hash_alg;
  enum cms_digest hash, mgf_hash;
  uint64_t salt = 20, trailer = 1;
  if (!CBS_get_asn1(&params, &seq, CBS_ASN1_SEQUENCE) ||
      CBS_len(&params) != 0 || !CBS_get_asn1(&seq, &hash_field, CC0) ||
      !pss_hash(hash_field, &hash) || !CBS_get_asn1(&seq, &mgf_field, CC1) ||
      !alg_split(mgf_field, &mgf_oid, &mgf_hash_alg) ||
      !cms_oid_eq(&mgf_oid, &CMS_OID_MGF1) ||
      !pss_hash(mgf_hash_alg, &mgf_hash) ||
      !CBS_get_optional_asn1_uint64(&seq, &salt, CC2, 20) ||
      !CBS_get_optional_asn1_uint64(&seq, &trailer, CC3, 1) ||
      CBS_len(&seq) != 0 || salt > PSS_SALT_MAX) {
    return 0;
  }
  a->pss_salt = (int)salt;
  return hash == mgf_hash && hash == a->digest && trailer == 1;
}

/* resolve_alg reads digestAlgorithm and signatureAlgorithm (RFC 5754,
 * RFC 3370, RFC 4055, RFC 5753, RFC 8419). */
static enum cms_verdict resolve_alg(struct verify_alg *a,
                                    struct cms_signer_result *r,
                                    const struct cms_signer_info *si) {
  CBS oid, params;
  memset(a, 0, sizeof(*a));
  if (!alg_split(si->digest_alg, &oid, &params) ||
      !params_null_or_absent(&params) ||
      !cms_digest_from_oid(&oid, &a->digest)) {
    return verdict(r, CMS_V_UNSUPPORTED,
                   "digest algorithm is not SHA-256, SHA-384 or SHA-512");
  }
  r->digest = a->digest;
  if (!alg_split(si->sig_alg, &oid, &params)) {
    return verdict(r, CMS_V_UNSUPPORTED, "malformed signatureAlgorithm");
  }
  for (size_t i = 0; i < sizeof(kSigAlgs) / sizeof(kSigAlgs[0]); i++) {
    if (!cms_oid_eq(&oid, kSigAlgs[i].oid)) {
      continue;
    }
    a->key_type = kSigAlgs[i].key_type;
    a->pss = kSigAlgs[i].pss;
    /* ECDSA: RFC 5758 §3.2 says absent, but gpgsm 2.2 writes NULL and
     * OpenSSL takes it, so NULL is read (never written). Ed25519: absent
     * only (RFC 8410 §3). */
    int params_ok = a->pss ? pss_params(params, a)
                    : a->key_type == EVP_PKEY_ED25519
                        ? CBS_len(&params) == 0
                        : params_null_or_absent(&params);
    if (!params_ok ||
        (kSigAlgs[i].hash >= 0 && kSigAlgs[i].hash != (int)a->digest) ||
        (a->key_type == EVP_PKEY_ED25519 && si->has_signed_attrs &&
         a->digest != CMS_SHA512)) {
      return verdict(r, CMS_V_UNSUPPORTED,
                     "signature parameters or hash not supported");
    }
    return CMS_V_PASS;
  }
  return verdict(r, CMS_V_UNSUPPORTED, "signature algorithm not supported");
}

/* key_check checks the certificate's key suits the algorithm and names it
 * in r->sig_alg. */
static enum cms_verdict key_check(const struct verify_alg *a, EVP_PKEY *pkey,
                                  struct cms_signer_result *r) {
  if (EVP_PKEY_id(pkey) != a->key_type) {
    return verdict(r, CMS_V_BAD_SIGNATURE,
                   "signature algorithm does not fit the certificate's key");
  }
  if (a->key_type == EVP_PKEY_RSA) {
    unsigned bits = RSA_bits(EVP_PKEY_get0_RSA(pkey));
    snprintf(r->sig_alg, sizeof(r->sig_alg), "%s", a->pss ? "rsa-pss" : "rsa");
    if (bits < RSA_VERIFY_MIN_BITS || bits > RSA_VERIFY_MAX_BITS) {
      return verdict(r, CMS_V_BAD_SIGNATURE, "RSA key of %u bits (%d to %d)",
                     bits, RSA_VERIFY_MIN_BITS, RSA_VERIFY_MAX_BITS);
    }
  } else if (a->key_type == EVP_PKEY_EC) {
    const EC_GROUP *g = EC_KEY_get0_group(EVP_PKEY_get0_EC_KEY(pkey));
    int nid = g != NULL ? EC_GROUP_get_curve_name(g) : NID_undef;
    if (nid != NID_X9_62_prime256v1 && nid != NID_secp384r1) {
      return verdict(r, CMS_V_UNSUPPORTED, "EC key not on P-256 or P-384");
    }
    snprintf(r->sig_alg, sizeof(r->sig_alg), "%s",
             nid == NID_secp384r1 ? "ecdsa-p384" : "ecdsa-p256");
  } else {
    snprintf(r->sig_alg, sizeof(r->sig_alg), "ed25519");
  }
  return CMS_V_PASS;
}

/* What the signed attributes say (RFC 5652 §11). */
struct attrs_seen {
  int num_type, num_digest, num_time;
  int type_ok, time_ok;
  CBS digest; /* messageDigest's OCTET STRING contents */
  int64_t time;
};

/* one_value: the attribute's SET holds exactly one value, of tag. */
static int one_value(const struct cms_signed_attr *a, unsigned tag, CBS *out) {
  CBS values = a->values;
  return CBS_get_asn1(&values, out, tag) && CBS_len(&values) == 0;
}

/* attrs_scan reads contentType, messageDigest and signingTime. */
static void attrs_scan(struct attrs_seen *s, const struct cms_signer_info *si,
                       const CBS *econtent_type) {
  memset(s, 0, sizeof(*s));
  for (size_t i = 0; i < si->num_attrs; i++) {
    const struct cms_signed_attr *a = &si->attrs[i];
    CBS v;
    if (cms_oid_eq(&a->type, &CMS_OID_CONTENT_TYPE)) {
      s->num_type++;
      s->type_ok =
          one_value(a, CBS_ASN1_OBJECT, &v) &&
          CBS_mem_equal(&v, CBS_data(econtent_type), CBS_len(econtent_type));
    } else if (cms_oid_eq(&a->type, &CMS_OID_MESSAGE_DIGEST)) {
      s->num_digest++;
      if (!one_value(a, CBS_ASN1_OCTETSTRING, &s->digest)) {
        CBS_init(&s->digest, NULL, 0);
      }
    } else if (cms_oid_eq(&a->type, &CMS_OID_SIGNING_TIME)) {
      CBS values = a->values;
      s->num_time++;
      s->time_ok = CBS_get_any_asn1_element(&values, &v, NULL, NULL) &&
                   CBS_len(&values) == 0 && time_parse(v, &s->time);
    }
  }
}

/* check_attrs enforces RFC 5652 §5.3 and §11: exactly one contentType,
 * equal to eContentType; exactly one messageDigest, equal (in constant
 * time) to the content's digest; at most one signingTime, well formed. */
static enum cms_verdict check_attrs(const struct cms_signer_info *si,
                                    const struct verify_ctx *vc,
                                    const struct verify_alg *a,
                                    struct cms_signer_result *r) {
  struct attrs_seen s;
  uint8_t md[EVP_MAX_MD_SIZE];
  unsigned md_len;
  attrs_scan(&s, si, &vc->sd->econtent_type);
  if (s.num_type != 1 || !s.type_ok) {
    return verdict(r, CMS_V_BAD_SIGNATURE,
                   "%d contentType attributes; RFC 5652 §11.1 wants one "
                   "naming eContentType",
                   s.num_type);
  }
  if (s.num_digest != 1 || CBS_len(&s.digest) == 0) {
    return verdict(r, CMS_V_BAD_SIGNATURE,
                   "%d messageDigest attributes; RFC 5652 §11.2 wants one",
                   s.num_digest);
  }
  if (s.num_time > 1 || (s.num_time == 1 && !s.time_ok)) {
    return verdict(r, CMS_V_BAD_SIGNATURE,
                   "signingTime repeated or not a strict UTCTime/"
                   "GeneralizedTime (RFC 5652 §11.3)");
  }
  r->signing_time = s.num_time == 1 ? s.time : -1;
  if (!EVP_Digest(vc->content, vc->content_len, md, &md_len,
                  cms_digest_md(a->digest), NULL) ||
      CBS_len(&s.digest) != md_len ||
      CRYPTO_memcmp(CBS_data(&s.digest), md, md_len) != 0) {
    return verdict(r, CMS_V_BAD_DIGEST, "messageDigest is not the content's %s",
                   cms_digest_name(a->digest));
  }
  return CMS_V_PASS;
}

/* sig_ok verifies sig over tbs: RSA and ECDSA over its hash, Ed25519
 * over tbs itself (RFC 8419 §3.1). */
static int sig_ok(const struct verify_alg *a, EVP_PKEY *pkey,
                  const uint8_t *tbs, size_t tbs_len, const CBS *sig) {
  const EVP_MD *md =
      a->key_type == EVP_PKEY_ED25519 ? NULL : cms_digest_md(a->digest);
  EVP_MD_CTX ctx;
  EVP_PKEY_CTX *pctx = NULL;
  EVP_MD_CTX_init(&ctx);
  int ok = EVP_DigestVerifyInit(&ctx, &pctx, md, NULL, pkey);
  if (ok && a->pss) {
    ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) &&
         EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, a->pss_salt) &&
         EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md);
  }
  ok = ok && EVP_DigestVerify(&ctx, CBS_data(sig), CBS_len(sig), tbs, tbs_len);
  EVP_MD_CTX_cleanup(&ctx);
  ERR_clear_error();
  return ok;
}

/* check_signature verifies the signature over the signed attributes as
 * received with the SET tag put back (RFC 5652 §5.4), or over the content
 * when there are none (allowed for id-data only, §5.3). */
static enum cms_verdict check_signature(const struct cms_signer_info *si,
                                        const struct verify_ctx *vc,
                                        const struct verify_alg *a,
                                        EVP_PKEY *pkey,
                                        struct cms_signer_result *r) {
  if (!si->has_signed_attrs) {
    if (!cms_oid_eq(&vc->sd->econtent_type, &CMS_OID_DATA)) {
      return verdict(r, CMS_V_BAD_SIGNATURE,
                     "no signed attributes over content other than id-data");
    }
    return sig_ok(a, pkey, vc->content, vc->content_len, &si->signature)
               ? CMS_V_PASS
               : verdict(r, CMS_V_BAD_SIGNATURE, "signature does not verify");
  }
  uint8_t *tbs =
      OPENSSL_memdup(CBS_data(&si->signed_attrs), CBS_len(&si->signed_attrs));
  if (tbs == NULL) {
    return verdict(r, CMS_V_BAD_SIGNATURE, "out of memory");
  }
  tbs[0] = 0x31; /* [0] IMPLICIT (0xA0) back to SET OF */
  int ok = sig_ok(a, pkey, tbs, CBS_len(&si->signed_attrs), &si->signature);
  OPENSSL_free(tbs);
  return ok ? CMS_V_PASS
            : verdict(r, CMS_V_BAD_SIGNATURE, "signature does not verify");
}

/* chain_cb lets the chain through a leaf purpose failure: the leaf's key
 * usage is check_usage's, which also takes anyExtendedKeyUsage. */
static int chain_cb(int ok, X509_STORE_CTX *ctx) {
  if (!ok && X509_STORE_CTX_get_error(ctx) == X509_V_ERR_INVALID_PURPOSE &&
      X509_STORE_CTX_get_error_depth(ctx) == 0) {
    return 1;
  }
  return ok;
}

/* check_chain builds a chain from cert to the caller's anchors through
 * the carried and extra certificates, for S/MIME signing, at vc->now. */
static enum cms_verdict check_chain(X509 *cert, const struct verify_ctx *vc,
                                    struct cms_signer_result *r) {
  if (vc->opts->trust == NULL) {
    return verdict(r, CMS_V_UNTRUSTED, "no trust anchors configured");
  }
  X509_STORE_CTX *ctx = X509_STORE_CTX_new();
  if (ctx == NULL ||
      !X509_STORE_CTX_init(ctx, vc->opts->trust, cert, vc->certs) ||
      !X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SMIME_SIGN)) {
    X509_STORE_CTX_free(ctx);
    ERR_clear_error();
    return verdict(r, CMS_V_UNTRUSTED, "cannot set up chain verification");
  }
  X509_STORE_CTX_set_time(ctx, 0, (time_t)vc->now);
  X509_STORE_CTX_set_verify_cb(ctx, chain_cb);
  int ok = X509_verify_cert(ctx) == 1;
  int e = X509_STORE_CTX_get_error(ctx);
  X509_STORE_CTX_free(ctx);
  ERR_clear_error();
  if (ok) {
    return CMS_V_PASS;
  }
  return verdict(r,
                 e == X509_V_ERR_CERT_HAS_EXPIRED ||
                         e == X509_V_ERR_CERT_NOT_YET_VALID
                     ? CMS_V_EXPIRED
                     : CMS_V_UNTRUSTED,
                 "chain: %s", X509_verify_cert_error_string(e));
}

/* check_usage: keyUsage, if present, has digitalSignature or
 * nonRepudiation; extKeyUsage, if present, has emailProtection or
 * anyExtendedKeyUsage (RFC 8550 §4.4). */
static enum cms_verdict check_usage(X509 *cert, struct cms_signer_result *r) {
  uint32_t flags = X509_get_extension_flags(cert);
  if ((flags & EXFLAG_KUSAGE) &&
      !(X509_get_key_usage(cert) &
        (KU_DIGITAL_SIGNATURE | KU_NON_REPUDIATION))) {
    return verdict(r, CMS_V_KEY_USAGE,
                   "keyUsage has neither digitalSignature nor "
                   "nonRepudiation");
  }
  if ((flags & EXFLAG_XKUSAGE) &&
      !(X509_get_extended_key_usage(cert) & (XKU_SMIME | XKU_ANYEKU))) {
    return verdict(r, CMS_V_KEY_USAGE, "extKeyUsage has no emailProtection");
  }
  return CMS_V_PASS;
}

/* note_email records the address matching from (compared whole and
 * case-insensitively, local part too), else the first; returns 1 when
 * from is NULL or matched. */
static int note_email(X509 *cert, const char *from,
                      struct cms_signer_result *r) {
  char emails[EMAILS_MAX][CMS_EMAIL_MAX]; /* 4 KiB: not static, threads */
  size_t n = cms_cert_emails(cert, emails, EMAILS_MAX);
  r->email[0] = '\0';
  for (size_t i = 0; from != NULL && i < n; i++) {
    if (strcasecmp(emails[i], from) == 0) {
      snprintf(r->email, sizeof(r->email), "%s", emails[i]);
      return 1;
    }
  }
  if (n > 0) {
    snprintf(r->email, sizeof(r->email), "%s", emails[0]);
  }
  return from == NULL;
}

/* find_cert: the first carried or extra certificate sid names. */
static X509 *find_cert(const struct cms_signer_info *si,
                       const struct verify_ctx *vc) {
  for (size_t i = 0; i < sk_X509_num(vc->certs); i++) {
    X509 *x = sk_X509_value(vc->certs, i);
    if (cms_sid_matches(&si->sid, x)) {
      return x;
    }
  }
  return NULL;
}

/* check_signer runs one SignerInfo's checks in order; the first failure
 * is the verdict. */
static enum cms_verdict check_signer(struct cms_signer_result *r,
                                     const struct cms_signer_info *si,
                                     const struct verify_ctx *vc) {
  struct verify_alg a;
  X509 *cert = find_cert(si, vc);
  if (cert == NULL) {
    return verdict(r, CMS_V_NO_CERT,
                   "no certificate matches the signer identifier");
  }
  X509_up_ref(cert);
  r->cert = cert;
  int from_ok = note_email(cert, vc->opts->from, r);
  enum cms_verdict v = resolve_alg(&a, r, si);
  EVP_PKEY *pkey = v == CMS_V_PASS ? X509_get_pubkey(cert) : NULL;
  if (v == CMS_V_PASS && pkey == NULL) {
    ERR_clear_error();
    v = verdict(r, CMS_V_UNSUPPORTED, "certificate key not readable");
  }
  if (v == CMS_V_PASS) {
    v = key_check(&a, pkey, r);
  }
  if (v == CMS_V_PASS && si->has_signed_attrs) {
    v = check_attrs(si, vc, &a, r);
  }
  if (v == CMS_V_PASS) {
    v = check_signature(si, vc, &a, pkey, r);
  }
  EVP_PKEY_free(pkey);
  if (v == CMS_V_PASS) {
    v = check_chain(cert, vc, r);
  }
  if (v == CMS_V_PASS) {
    v = check_usage(cert, r);
  }
  if (v == CMS_V_PASS && !from_ok) {
    v = verdict(r, CMS_V_FROM_MISMATCH, "certificate does not name %.100s",
                vc->opts->from);
  }
  return v;
}

/* ---- verification: the whole ---- */

/* load_certs decodes the carried X.509 certificates (other
 * CertificateChoices are skipped) and appends the caller's extra ones. */
static int load_certs(STACK_OF(X509) * *out, const struct cms_signed *sd,
                      const struct cms_verify_opts *opts, char *err,
                      size_t err_len) {
  STACK_OF(X509) *certs = sk_X509_new_null();
  *out = certs;
  if (certs == NULL) {
    return cms_set_err(err, err_len, CMS_ERR_INTERNAL, "out of memory");
  }
  for (size_t i = 0; i < sd->num_certs; i++) {
    const uint8_t *p = CBS_data(&sd->certs[i]);
    if (p[0] != 0x30) {
      continue;
    }
    X509 *x = d2i_X509(NULL, &p, (long)CBS_len(&sd->certs[i]));
    if (x == NULL || p != CBS_data(&sd->certs[i]) + CBS_len(&sd->certs[i])) {
      X509_free(x);
      ERR_clear_error();
      return cms_set_err(err, err_len, CMS_ERR_SYNTAX,
                         "certificate %zu does not parse", i);
    }
    if (!sk_X509_push(certs, x)) {
      X509_free(x);
      return cms_set_err(err, err_len, CMS_ERR_INTERNAL, "out of memory");
    }
  }
  for (size_t i = 0; i < opts->num_extra_certs; i++) {
    X509 *x = opts->extra_certs[i];
    if (x == NULL || !sk_X509_push(certs, x)) {
      return cms_set_err(err, err_len, CMS_ERR_INTERNAL, "out of memory");
    }
    X509_up_ref(x);
  }
  return CMS_OK;
}

/* verify_parsed checks every signer of a parsed SignedData. */
static int verify_parsed(struct cms_verified *out, const struct cms_signed *sd,
                         const uint8_t *detached, size_t detached_len,
                         const struct cms_verify_opts *opts, char *err,
                         size_t err_len) {
  struct verify_ctx vc = {.sd = sd, .opts = opts, .now = opts->now};
  if (vc.now == 0) {
    vc.now = (int64_t)time(NULL);
  }
  out->detached = !sd->has_econtent;
  out->content_type = cms_type_from_oid(&sd->econtent_type);
  if (sd->has_econtent && detached != NULL) {
    /* The caller holds other bytes it takes for the signed ones: checking
     * eContent instead would let them pass unchecked (a multipart/signed
     * first part under an opaque signature). */
    return cms_set_err(err, err_len, CMS_ERR_SYNTAX,
                       "both encapsulated and detached content");
  }
  if (sd->has_econtent) {
    vc.content = CBS_data(&sd->econtent);
    vc.content_len = CBS_len(&sd->econtent);
  } else if (detached != NULL) {
    vc.content = detached;
    vc.content_len = detached_len;
  } else {
    return cms_set_err(err, err_len, CMS_ERR_SYNTAX,
                       "detached signature and no content given");
  }
  int rc = load_certs(&vc.certs, sd, opts, err, err_len);
  for (size_t i = 0; rc == CMS_OK && i < sd->num_signers; i++) {
    struct cms_signer_result *r = &out->signers[i];
    r->signing_time = -1;
    r->verdict = check_signer(r, &sd->signers[i], &vc);
    out->num_signers = i + 1;
  }
  if (rc == CMS_OK && sd->has_econtent &&
      buf_append(&out->content, vc.content, vc.content_len) != 0) {
    rc = cms_set_err(err, err_len, CMS_ERR_INTERNAL, "out of memory");
  }
  sk_X509_pop_free(vc.certs, X509_free);
  return rc;
}

int cms_verify(struct cms_verified *out, const uint8_t *in, size_t in_len,
               const uint8_t *detached, size_t detached_len,
               const struct cms_verify_opts *opts, char *err, size_t err_len) {
  static const struct cms_verify_opts none;
  memset(out, 0, sizeof(*out));
  opts = opts != NULL ? opts : &none;
  CBS der;
  uint8_t *storage = NULL;
  int rc = cms_input_der(in, in_len, &der, &storage, err, err_len);
  struct cms_signed *sd = NULL;
  if (rc == CMS_OK) {
    sd = OPENSSL_malloc(sizeof(*sd));
    rc = sd != NULL
             ? cms_signed_parse(sd, der, err, err_len)
             : cms_set_err(err, err_len, CMS_ERR_INTERNAL, "out of memory");
  }
  if (rc == CMS_OK) {
    rc = verify_parsed(out, sd, detached, detached_len, opts, err, err_len);
  }
  if (rc != CMS_OK) {
    cms_verified_cleanup(out); /* an error leaves no signers behind */
    memset(out, 0, sizeof(*out));
  }
  OPENSSL_free(sd);
  OPENSSL_free(storage);
  return rc;
}

int cms_verified_all_pass(const struct cms_verified *v) {
  if (v->num_signers == 0) {
    return 0;
  }
  for (size_t i = 0; i < v->num_signers; i++) {
    if (v->signers[i].verdict != CMS_V_PASS) {
      return 0;
    }
  }
  return 1;
}

void cms_verified_cleanup(struct cms_verified *v) {
  for (size_t i = 0; i < v->num_signers; i++) {
    X509_free(v->signers[i].cert);
    v->signers[i].cert = NULL;
  }
  v->num_signers = 0;
  buf_free(&v->content);
}

const char *cms_verdict_str(enum cms_verdict v) {
  switch (v) {
  case CMS_V_PASS:
    return "pass";
  case CMS_V_BAD_SIGNATURE:
    return "bad-signature";
  case CMS_V_BAD_DIGEST:
    return "bad-digest";
  case CMS_V_NO_CERT:
    return "no-cert";
  case CMS_V_UNTRUSTED:
    return "untrusted";
  case CMS_V_EXPIRED:
    return "expired";
  case CMS_V_KEY_USAGE:
    return "key-usage";
  case CMS_V_FROM_MISMATCH:
    return "from-mismatch";
  case CMS_V_UNSUPPORTED:
    return "unsupported";
  }
  return "unknown";
}
