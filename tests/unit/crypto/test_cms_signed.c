/* Unit tests: crypto/cms_signed.c — SignedData (RFC 5652 §5).
 *
 * Round trips sign -> verify for RSA PKCS#1 v1.5, RSA-PSS, ECDSA P-256
 * and Ed25519 x SHA-256/384/512 x detached/encapsulated x one/two
 * signers (issuerAndSerialNumber and subjectKeyIdentifier), each output
 * also parsed and re-encoded to the same bytes; the signed attributes
 * made (S/MIME set, ESS certHash, signingTime UTCTime/GeneralizedTime at
 * the 2050 boundary); cms_sign's refusals; a labelled table of bad
 * messages (syntax, limits, algorithms, versions, signed-attribute
 * rules re-signed so only the rule fails, digest, signature, chain,
 * expiry, key usage, From); and messages made by the OpenSSL 3 CLI
 * (tests/data/cms/make-signed.sh), BER streaming included, checked at a
 * fixed time.
 *
 * Keys and certificates are made once at start-up with BoringSSL, valid
 * around NOW (a fixed time), so nothing rots. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>

#include "crypto/cms_internal.h"
#include "tests/unit/crypto/pki.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define NOW 1700000000LL         /* 2023-11-14T22:13:20Z */
#define FIXTURE_NOW 1893456000LL /* 2030-01-01: inside the fixtures' 100 y */
#define DAY 86400LL

static const char kContent[] = "Content-Type: text/plain; charset=utf-8\r\n"
                               "\r\n"
                               "Hello, signed world.\r\n";

/* A signer: its key both ways and its certificate. */
struct party_fx {
  EVP_PKEY *pkey;
  struct cms_key *key;
  X509 *cert;
};

static struct fixture {
  EVP_PKEY *ca_key, *ica_key, *rogue_key;
  X509 *ca, *ica, *rogue; /* root, intermediate, a CA nobody trusts */
  struct party_fx rsa, ec, ed;
  struct party_fx deep;       /* EC under the intermediate */
  struct party_fx expired;    /* NOW is after notAfter */
  struct party_fx future;     /* NOW is before notBefore */
  struct party_fx server_eku; /* extKeyUsage serverAuth only */
  struct party_fx any_eku;    /* extKeyUsage anyExtendedKeyUsage */
  struct party_fx ku_enc;     /* keyUsage keyEncipherment only */
  struct party_fx rogue_leaf; /* issued by rogue */
  struct party_fx no_ski;     /* no subjectKeyIdentifier */
  X509_STORE *store;
  char data_dir[512];
} fx;

/* ---- keys and certificates ---- */

static EVP_PKEY *gen_key(int type) {
  if (type == EVP_PKEY_EC) {
    return make_key();
  }
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(type, NULL);
  EVP_PKEY *key = NULL;
  if (ctx == NULL || !EVP_PKEY_keygen_init(ctx) ||
      (type == EVP_PKEY_RSA && !EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, 2048)) ||
      !EVP_PKEY_keygen(ctx, &key)) {
    fail_msg("test bug: keygen %d", type);
  }
  EVP_PKEY_CTX_free(ctx);
  return key;
}

/* to_cms_key loads key the way operators do: from PEM. */
static struct cms_key *to_cms_key(EVP_PKEY *key) {
  BIO *b = BIO_new(BIO_s_mem());
  const uint8_t *pem;
  size_t pem_len;
  char err[128];
  if (b == NULL ||
      !PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL) ||
      !BIO_mem_contents(b, &pem, &pem_len)) {
    fail_msg("test bug: PEM");
  }
  struct cms_key *k = cms_key_from_pem(pem, pem_len, err, sizeof(err));
  if (k == NULL) {
    fail_msg("test bug: cms_key_from_pem: %s", err);
  }
  BIO_free(b);
  return k;
}

struct cert_spec {
  const char *cn;
  const char *san; /* "email:..." or NULL */
  X509 *issuer;    /* NULL: self-signed */
  EVP_PKEY *issuer_key;
  int64_t from, to; /* validity, absolute */
  const char *ku;   /* keyUsage; NULL: absent */
  const char *eku;  /* extKeyUsage; NULL: absent */
  int ca, no_ski;
};

static X509 *make_cert(EVP_PKEY *key, const struct cert_spec *s) {
  static long serial = 100;
  X509 *x = X509_new();
  X509_set_version(x, X509_VERSION_3);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
  ASN1_TIME_set(X509_getm_notBefore(x), (time_t)s->from);
  ASN1_TIME_set(X509_getm_notAfter(x), (time_t)s->to);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                             (const uint8_t *)s->cn, -1, -1, 0);
  X509 *issuer = s->issuer != NULL ? s->issuer : x;
  X509_set_issuer_name(x, X509_get_subject_name(issuer));
  X509_set_pubkey(x, key);
  X509V3_CTX v3;
  X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
  add_ext(x, &v3, NID_basic_constraints,
          s->ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
  if (s->ku != NULL) {
    add_ext(x, &v3, NID_key_usage, s->ku);
  }
  if (s->eku != NULL) {
    add_ext(x, &v3, NID_ext_key_usage, s->eku);
  }
  if (!s->no_ski) {
    add_ext(x, &v3, NID_subject_key_identifier, "hash");
  }
  if (s->san != NULL) {
    add_ext(x, &v3, NID_subject_alt_name, s->san);
  }
  if (!X509_sign(x, s->issuer_key != NULL ? s->issuer_key : key,
                 EVP_sha256())) {
    fail_msg("test bug: signing %s", s->cn);
  }
  return x;
}

static void make_party(struct party_fx *p, int type, struct cert_spec s) {
  p->pkey = gen_key(type);
  p->key = to_cms_key(p->pkey);
  if (s.issuer == NULL) {
    s.issuer = fx.ca;
    s.issuer_key = fx.ca_key;
  }
  p->cert = make_cert(p->pkey, &s);
}

static void free_party(struct party_fx *p) {
  EVP_PKEY_free(p->pkey);
  cms_key_free(p->key);
  X509_free(p->cert);
}

static struct party_fx *all_parties[] = {
    &fx.rsa,     &fx.ec,         &fx.ed,         &fx.deep,
    &fx.expired, &fx.future,     &fx.server_eku, &fx.any_eku,
    &fx.ku_enc,  &fx.rogue_leaf, &fx.no_ski,
};

static int group_setup(void **state) {
  (void)state;
  (void)write_pem; /* pki.h's, unused here */
  const char *ku = "critical,digitalSignature,nonRepudiation";
  const char *eku = "emailProtection";
  struct cert_spec ca = {.cn = "CA",
                         .from = NOW - 365 * DAY,
                         .to = NOW + 3650 * DAY,
                         .ku = "critical,keyCertSign",
                         .ca = 1};
  fx.ca_key = make_key();
  fx.ca = make_cert(fx.ca_key, &ca);
  fx.rogue_key = make_key();
  ca.cn = "Rogue CA";
  fx.rogue = make_cert(fx.rogue_key, &ca);
  fx.ica_key = make_key();
  ca.cn = "Intermediate CA";
  ca.issuer = fx.ca;
  ca.issuer_key = fx.ca_key;
  fx.ica = make_cert(fx.ica_key, &ca);
  struct cert_spec leaf = {
      .from = NOW - DAY, .to = NOW + 365 * DAY, .ku = ku, .eku = eku};
#define LEAF(field, type, name, ...)                                           \
  do {                                                                         \
    struct cert_spec s = leaf;                                                 \
    s.cn = name;                                                               \
    s.san = "email:" name "@example.org";                                      \
    __VA_ARGS__;                                                               \
    make_party(&fx.field, type, s);                                            \
  } while (0)
  LEAF(rsa, EVP_PKEY_RSA, "rsa");
  LEAF(ec, EVP_PKEY_EC, "ec");
  LEAF(ed, EVP_PKEY_ED25519, "ed");
  LEAF(deep, EVP_PKEY_EC, "deep", s.issuer = fx.ica, s.issuer_key = fx.ica_key);
  LEAF(expired, EVP_PKEY_EC, "expired", s.from = NOW - 30 * DAY,
       s.to = NOW - DAY);
  LEAF(future, EVP_PKEY_EC, "future", s.from = NOW + DAY);
  LEAF(server_eku, EVP_PKEY_EC, "server", s.eku = "serverAuth");
  LEAF(any_eku, EVP_PKEY_EC, "any", s.eku = "anyExtendedKeyUsage");
  LEAF(ku_enc, EVP_PKEY_EC, "kuenc", s.ku = "critical,keyEncipherment");
  LEAF(rogue_leaf, EVP_PKEY_EC, "rogue", s.issuer = fx.rogue,
       s.issuer_key = fx.rogue_key);
  LEAF(no_ski, EVP_PKEY_EC, "noski", s.no_ski = 1);
#undef LEAF
  fx.store = X509_STORE_new();
  X509_STORE_add_cert(fx.store, fx.ca);
  snprintf(fx.data_dir, sizeof(fx.data_dir), "%s", __FILE__);
  char *cut = strstr(fx.data_dir, "tests/unit/crypto/test_cms_signed.c");
  if (cut != NULL) {
    strcpy(cut, "tests/data/cms");
  } else {
    fx.data_dir[0] = '\0';
  }
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  for (size_t i = 0; i < ARRAY_LEN(all_parties); i++) {
    free_party(all_parties[i]);
  }
  EVP_PKEY_free(fx.ca_key);
  EVP_PKEY_free(fx.ica_key);
  EVP_PKEY_free(fx.rogue_key);
  X509_free(fx.ca);
  X509_free(fx.ica);
  X509_free(fx.rogue);
  X509_STORE_free(fx.store);
  return 0;
}

/* ---- helpers ---- */

static const uint8_t *content(void) {
  return (const uint8_t *)kContent;
}

static struct cms_sign_party party(const struct party_fx *p,
                                   enum cms_digest d) {
  return (struct cms_sign_party){.key = p->key, .cert = p->cert, .digest = d};
}

/* sign_ok signs kContent and fails the test on error. */
static void sign_ok(struct buf *out, const struct cms_sign_party *parties,
                    size_t n, const struct cms_sign_opts *opts,
                    const char *label) {
  char err[160] = "";
  int rc = cms_sign(out, &cms_local_signer, parties, n, content(),
                    strlen(kContent), opts, err, sizeof(err));
  if (rc != CMS_OK) {
    fail_msg("%s: cms_sign: got %s (%s), want ok", label, cms_err_str(rc), err);
  }
}

/* sign_simple: one signer, SHA-256, signingTime NOW, encapsulated or
 * detached. */
static void sign_simple(struct buf *out, const struct party_fx *p,
                        int detached) {
  struct cms_sign_party sp = party(p, CMS_SHA256);
  struct cms_sign_opts opts = {.detached = detached, .signing_time = NOW};
  sign_ok(out, &sp, 1, &opts, "sign_simple");
}

/* roundtrip_ok: parse -> encode gives back der exactly. */
static void roundtrip_ok(const struct buf *der, const char *label) {
  static struct cms_signed sd;
  CBS cbs;
  CBB cbb;
  char err[160] = "";
  CBS_init(&cbs, der->data, der->len);
  int rc = cms_signed_parse(&sd, cbs, err, sizeof(err));
  if (rc != CMS_OK) {
    fail_msg("%s: cms_signed_parse: got %s (%s), want ok", label,
             cms_err_str(rc), err);
  }
  assert_true(sd.sets_in_der_order);
  assert_true(CBB_init(&cbb, der->len));
  assert_true(cms_signed_encode(&cbb, &sd));
  if (CBB_len(&cbb) != der->len ||
      memcmp(CBB_data(&cbb), der->data, der->len) != 0) {
    fail_msg("%s: encode(parse(x)): got %zu bytes, want the %zu of x", label,
             CBB_len(&cbb), der->len);
  }
  CBB_cleanup(&cbb);
}

static struct cms_verify_opts vopts(int64_t now, const char *from) {
  return (struct cms_verify_opts){.trust = fx.store, .now = now, .from = from};
}

/* find_result: the result whose certificate is cert. */
static const struct cms_signer_result *find_result(const struct cms_verified *v,
                                                   X509 *cert) {
  for (size_t i = 0; i < v->num_signers; i++) {
    if (v->signers[i].cert != NULL && X509_cmp(v->signers[i].cert, cert) == 0) {
      return &v->signers[i];
    }
  }
  return NULL;
}

/* ---- round trips ---- */

/* One round trip's algorithm: the party, PSS or not, what verify must
 * name it, and its address cased otherwise (From is case-insensitive). */
struct rt_alg {
  const char *label;
  struct party_fx *p;
  int pss;
  const char *want_alg;
  const char *from;
};

/* verify_round_trip checks msg (signed as the case says) verifies: every
 * signer passes; the first is named, digested, timed and addressed right;
 * the content comes back when encapsulated. */
static void verify_round_trip(const struct buf *msg, const struct rt_alg *a,
                              enum cms_digest d, int detached, size_t n,
                              const char *label) {
  struct cms_verified v;
  char err[160] = "";
  struct cms_verify_opts vo = vopts(NOW, n == 1 ? a->from : NULL);
  int rc = cms_verify(&v, msg->data, msg->len, detached ? content() : NULL,
                      detached ? strlen(kContent) : 0, &vo, err, sizeof(err));
  if (rc != CMS_OK || v.num_signers != n || !cms_verified_all_pass(&v)) {
    fail_msg("%s: got rc %s (%s), %zu signers, first %s (%s); want ok, %zu "
             "passing",
             label, cms_err_str(rc), err, v.num_signers,
             cms_verdict_str(v.signers[0].verdict), v.signers[0].reason, n);
  }
  const struct cms_signer_result *r = find_result(&v, a->p->cert);
  assert_non_null(r);
  enum cms_digest want_d = a->p == &fx.ed ? CMS_SHA512 : d;
  if (strcmp(r->sig_alg, a->want_alg) != 0 || r->digest != want_d ||
      r->signing_time != NOW) {
    fail_msg("%s: got %s/%d/%lld, want %s/%d/%lld", label, r->sig_alg,
             r->digest, (long long)r->signing_time, a->want_alg, want_d, NOW);
  }
  if (n == 1 && strcasecmp(r->email, a->from) != 0) {
    fail_msg("%s: email: got %s, want %s", label, r->email, a->from);
  }
  assert_int_equal(v.detached, detached);
  assert_int_equal(v.content.len, detached ? 0 : strlen(kContent));
  if (!detached) {
    assert_memory_equal(v.content.data, kContent, strlen(kContent));
  }
  cms_verified_cleanup(&v);
}

static void test_round_trips(void **state) {
  (void)state;
  static const struct rt_alg algs[] = {
      {"rsa", &fx.rsa, 0, "rsa", "RSA@Example.org"},
      {"rsa-pss", &fx.rsa, 1, "rsa-pss", "rsa@EXAMPLE.ORG"},
      {"ecdsa", &fx.ec, 0, "ecdsa-p256", "Ec@example.org"},
      {"ed25519", &fx.ed, 0, "ed25519", "ed@example.org"},
  };
  static const char *digests[] = {"sha256", "sha384", "sha512"};
  for (size_t a = 0; a < ARRAY_LEN(algs); a++) {
    for (int d = CMS_SHA256; d <= CMS_SHA512; d++) {
      for (int detached = 0; detached <= 1; detached++) {
        for (size_t n = 1; n <= 2; n++) {
          char label[96];
          snprintf(label, sizeof(label), "%s/%s/%s/%zu signer(s)",
                   algs[a].label, digests[d],
                   detached ? "detached" : "encapsulated", n);
          /* The second signer is another key type; SKI and IAS alternate. */
          struct cms_sign_party sp[2] = {
              party(algs[a].p, (enum cms_digest)d),
              party(algs[a].p == &fx.ec ? &fx.rsa : &fx.ec, CMS_SHA384),
          };
          sp[0].rsa_pss = algs[a].pss;
          sp[0].use_ski = d == CMS_SHA384;
          sp[1].use_ski = d != CMS_SHA384;
          struct cms_sign_opts so = {.detached = detached, .signing_time = NOW};
          struct buf msg = {0};
          sign_ok(&msg, sp, n, &so, label);
          roundtrip_ok(&msg, label);
          verify_round_trip(&msg, &algs[a], (enum cms_digest)d, detached, n,
                            label);
          buf_free(&msg);
        }
      }
    }
  }
}

/* The intermediate rides along in certificates and the chain verifies
 * through it; without certificates the caller's extra ones are used. */
static void test_chain_and_extra_certs(void **state) {
  (void)state;
  STACK_OF(X509) *chain = sk_X509_new_null();
  sk_X509_push(chain, fx.ica);
  X509_up_ref(fx.ica);
  /* The leaf twice and the CA: each carried once. */
  struct cms_sign_party sp[2] = {party(&fx.deep, CMS_SHA256),
                                 party(&fx.deep, CMS_SHA512)};
  sp[0].chain = chain;
  sp[1].chain = chain;
  struct cms_sign_opts so = {.signing_time = NOW};
  struct buf msg = {0}, bare = {0};
  sign_ok(&msg, sp, 2, &so, "chain");
  static struct cms_signed sd;
  CBS cbs;
  CBS_init(&cbs, msg.data, msg.len);
  assert_int_equal(cms_signed_parse(&sd, cbs, NULL, 0), CMS_OK);
  assert_int_equal(sd.num_certs, 2);
  assert_int_equal(sd.num_digest_algs, 2);
  assert_int_equal(sd.version, 1);

  so.no_certs = 1;
  sign_ok(&bare, sp, 1, &so, "no certs");
  X509 *extra[2] = {fx.ica, fx.deep.cert};
  const struct {
    const char *label;
    const struct buf *msg;
    size_t num_extra;
    enum cms_verdict want;
  } cases[] = {
      {"chain carried", &msg, 0, CMS_V_PASS},
      {"no certs, none given", &bare, 0, CMS_V_NO_CERT},
      {"no certs, leaf given", &bare, 1, CMS_V_UNTRUSTED},
      {"no certs, leaf and intermediate given", &bare, 2, CMS_V_PASS},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    struct cms_verified v;
    struct cms_verify_opts vo = vopts(NOW, "deep@example.org");
    X509 *given[2] = {extra[1], extra[0]};
    vo.extra_certs = given;
    vo.num_extra_certs = cases[i].num_extra;
    char err[160] = "";
    assert_int_equal(cms_verify(&v, cases[i].msg->data, cases[i].msg->len, NULL,
                                0, &vo, err, sizeof(err)),
                     CMS_OK);
    for (size_t k = 0; k < v.num_signers; k++) {
      if (v.signers[k].verdict != cases[i].want) {
        fail_msg("%s: signer %zu: got %s (%s), want %s", cases[i].label, k,
                 cms_verdict_str(v.signers[k].verdict), v.signers[k].reason,
                 cms_verdict_str(cases[i].want));
      }
    }
    cms_verified_cleanup(&v);
  }
  sk_X509_pop_free(chain, X509_free);
  buf_free(&msg);
  buf_free(&bare);
}

/* ---- what cms_sign writes ---- */

/* attr_value: the single value of attribute type in si, or fails. */
static CBS attr_value(const struct cms_signer_info *si,
                      const struct cms_oid *type) {
  for (size_t i = 0; i < si->num_attrs; i++) {
    if (cms_oid_eq(&si->attrs[i].type, type)) {
      return si->attrs[i].values;
    }
  }
  fail_msg("attribute missing");
  return (CBS){NULL, 0};
}

static void test_signed_attrs(void **state) {
  (void)state;
  struct cms_sign_party sp = party(&fx.rsa, CMS_SHA384);
  struct cms_sign_opts so = {.signing_time = NOW, .enc_cert = fx.ec.cert};
  struct buf msg = {0};
  sign_ok(&msg, &sp, 1, &so, "attrs");
  static struct cms_signed sd;
  CBS cbs, v, seq, ids, id, alg, hash;
  CBS_init(&cbs, msg.data, msg.len);
  assert_int_equal(cms_signed_parse(&sd, cbs, NULL, 0), CMS_OK);
  const struct cms_signer_info *si = &sd.signers[0];
  assert_int_equal(si->num_attrs, 6);
  assert_int_equal(CBS_data(&si->signed_attrs)[0], 0xa0);

  /* ESSCertIDv2 with SHA-384: hashAlgorithm present, certHash right. */
  v = attr_value(si, &CMS_OID_SIGNING_CERT_V2);
  uint8_t *der = NULL, want[SHA384_DIGEST_LENGTH];
  int der_len = i2d_X509(fx.rsa.cert, &der);
  SHA384(der, (size_t)der_len, want);
  OPENSSL_free(der);
  assert_true(CBS_get_asn1(&v, &seq, CBS_ASN1_SEQUENCE));
  assert_true(CBS_get_asn1(&seq, &ids, CBS_ASN1_SEQUENCE));
  assert_true(CBS_get_asn1(&ids, &id, CBS_ASN1_SEQUENCE));
  assert_true(CBS_get_asn1(&id, &alg, CBS_ASN1_SEQUENCE));
  assert_true(CBS_get_asn1(&id, &hash, CBS_ASN1_OCTETSTRING));
  assert_true(CBS_mem_equal(&hash, want, sizeof(want)));
  assert_true(CBS_peek_asn1_tag(&id, CBS_ASN1_SEQUENCE)); /* issuerSerial */

  /* SMIMEEncryptionKeyPreference names enc_cert: [0] IMPLICIT IAS. */
  v = attr_value(si, &CMS_OID_ENC_KEY_PREF);
  CBS ias;
  assert_true(CBS_get_asn1_element(
      &v, &ias, CBS_ASN1_CONTEXT_SPECIFIC | CBS_ASN1_CONSTRUCTED | 0));
  uint8_t *ias_der = OPENSSL_memdup(CBS_data(&ias), CBS_len(&ias));
  ias_der[0] = 0x30;
  CBS sid;
  CBS_init(&sid, ias_der, CBS_len(&ias));
  assert_true(cms_sid_matches(&sid, fx.ec.cert));
  OPENSSL_free(ias_der);

  /* SMIMECapabilities: five, AES-256-GCM first. */
  v = attr_value(si, &CMS_OID_SMIME_CAPABILITIES);
  CBS caps, cap, oid;
  size_t num_caps = 0;
  assert_true(CBS_get_asn1(&v, &caps, CBS_ASN1_SEQUENCE));
  while (CBS_get_asn1(&caps, &cap, CBS_ASN1_SEQUENCE)) {
    assert_true(CBS_get_asn1(&cap, &oid, CBS_ASN1_OBJECT));
    if (num_caps++ == 0) {
      assert_true(cms_oid_eq(&oid, &CMS_OID_AES256_GCM));
    }
  }
  assert_int_equal(num_caps, 5);
  buf_free(&msg);

  /* no_smime_attrs and no signingTime: contentType, messageDigest. */
  so.no_smime_attrs = 1;
  so.signing_time = -1;
  sign_ok(&msg, &sp, 1, &so, "bare attrs");
  CBS_init(&cbs, msg.data, msg.len);
  assert_int_equal(cms_signed_parse(&sd, cbs, NULL, 0), CMS_OK);
  assert_int_equal(sd.signers[0].num_attrs, 2);
  buf_free(&msg);

  /* An Ed25519 signer gets no encryption key preference of its own. */
  so.no_smime_attrs = 0;
  so.enc_cert = NULL;
  sp = party(&fx.ed, CMS_SHA256);
  sign_ok(&msg, &sp, 1, &so, "ed attrs");
  CBS_init(&cbs, msg.data, msg.len);
  assert_int_equal(cms_signed_parse(&sd, cbs, NULL, 0), CMS_OK);
  assert_int_equal(sd.signers[0].num_attrs, 4);
  buf_free(&msg);
}

/* signingTime: UTCTime 1950-2049, GeneralizedTime otherwise (RFC 5652
 * §11.3), read back to the same second. */
static void test_signing_time(void **state) {
  (void)state;
  static const struct {
    const char *label;
    int64_t t;
    const char *want;
  } cases[] = {
      {"epoch", 0,
       "\x17\x0d"
       "700101000000Z"},
      {"now", NOW,
       "\x17\x0d"
       "231114221320Z"},
      {"last UTCTime second", 2524607999,
       "\x17\x0d"
       "491231235959Z"},
      {"first GeneralizedTime second", 2524608000,
       "\x18\x0f"
       "20500101000000Z"},
      {"leap day 2400", 13574563200,
       "\x18\x0f"
       "24000229000000Z"},
      {"last second of 9999", 253402300799,
       "\x18\x0f"
       "99991231235959Z"},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    struct cms_sign_party sp = party(&fx.ec, CMS_SHA256);
    struct cms_sign_opts so = {.signing_time = cases[i].t};
    struct buf msg = {0};
    sign_ok(&msg, &sp, 1, &so, cases[i].label);
    if (memmem(msg.data, msg.len, cases[i].want, strlen(cases[i].want)) ==
        NULL) {
      fail_msg("%s: %s not in the message", cases[i].label, cases[i].want + 2);
    }
    struct cms_verified v;
    struct cms_verify_opts vo = vopts(NOW, NULL);
    assert_int_equal(cms_verify(&v, msg.data, msg.len, NULL, 0, &vo, NULL, 0),
                     CMS_OK);
    if (v.signers[0].signing_time != cases[i].t) {
      fail_msg("%s: got %lld, want %lld", cases[i].label,
               (long long)v.signers[0].signing_time, (long long)cases[i].t);
    }
    assert_int_equal(v.signers[0].verdict, CMS_V_PASS);
    cms_verified_cleanup(&v);
    buf_free(&msg);
  }
}

static void test_sign_refusals(void **state) {
  (void)state;
  STACK_OF(X509) *long_chain = sk_X509_new_null();
  for (int i = 0; i < CMS_MAX_CERTS; i++) {
    X509 *x = i % 2 ? fx.ca : fx.ica;
    X509_up_ref(x);
    sk_X509_push(long_chain, x);
  }
  STACK_OF(X509) *many = sk_X509_new_null();
  struct cms_sign_party ok = party(&fx.ec, CMS_SHA256);
  struct cms_sign_party nine[CMS_MAX_SIGNERS + 1];
  for (size_t i = 0; i < ARRAY_LEN(nine); i++) {
    nine[i] = ok;
  }
  struct cms_sign_party mismatch = ok, no_ski = party(&fx.no_ski, CMS_SHA256),
                        pss_ec = ok, sha1 = ok, dup = ok;
  mismatch.cert = fx.rsa.cert;
  no_ski.use_ski = 1;
  pss_ec.rsa_pss = 1;
  sha1.digest = CMS_SHA1;
  dup.chain = long_chain;
  static struct {
    const char *label;
    const struct cms_sign_party *parties;
    size_t n;
    int want;
  } cases[] = {
      {"no signers", NULL, 0, CMS_ERR_KEY},
      {"nine signers", NULL, CMS_MAX_SIGNERS + 1, CMS_ERR_LIMIT},
      {"key and certificate differ", NULL, 1, CMS_ERR_KEY},
      {"SKI asked, none in the certificate", NULL, 1, CMS_ERR_KEY},
      {"PSS with an EC key", NULL, 1, CMS_ERR_UNSUPPORTED},
      {"SHA-1", NULL, 1, CMS_ERR_UNSUPPORTED},
      {"duplicates in the chain are carried once", NULL, 1, CMS_OK},
  };
  const struct cms_sign_party *ptrs[] = {&ok,     nine,  &mismatch, &no_ski,
                                         &pss_ec, &sha1, &dup};
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    struct buf out = {0};
    char err[160] = "";
    int rc = cms_sign(&out, &cms_local_signer, ptrs[i], cases[i].n, content(),
                      strlen(kContent), NULL, err, sizeof(err));
    if (rc != cases[i].want || (rc != CMS_OK && out.len != 0)) {
      fail_msg("%s: got %s (%s), %zu bytes; want %s", cases[i].label,
               cms_err_str(rc), err, out.len, cms_err_str(cases[i].want));
    }
    buf_free(&out);
  }
  /* Over CMS_MAX_CERTS distinct certificates. */
  struct cms_sign_party over[1] = {ok};
  for (int i = 0; i < CMS_MAX_CERTS + 1; i++) {
    EVP_PKEY *k = make_key();
    struct cert_spec s = {.cn = "filler", .from = NOW, .to = NOW + DAY};
    sk_X509_push(many, make_cert(k, &s));
    EVP_PKEY_free(k);
  }
  over[0].chain = many;
  struct buf out = {0};
  char err[160] = "";
  int rc = cms_sign(&out, &cms_local_signer, over, 1, content(),
                    strlen(kContent), NULL, err, sizeof(err));
  if (rc != CMS_ERR_LIMIT) {
    fail_msg("65 certificates: got %s (%s), want limit", cms_err_str(rc), err);
  }
  sk_X509_pop_free(many, X509_free);
  sk_X509_pop_free(long_chain, X509_free);
}

/* ---- bad messages ---- */

static const uint8_t kOtherContent[] =
    "Content-Type: text/plain\r\n\r\nevil\r\n";

/* replace_with makes msg hold exactly the bytes of cbb. */
static void replace_with(struct buf *msg, CBB *cbb) {
  struct buf out = {0};
  assert_int_equal(buf_append(&out, CBB_data(cbb), CBB_len(cbb)), 0);
  CBB_cleanup(cbb);
  buf_move(msg, &out);
}

/* rebuild parses msg, lets edit change the form, and encodes it back. */
static void rebuild(struct buf *msg, void (*edit)(struct cms_signed *sd)) {
  static struct cms_signed sd;
  CBS cbs;
  CBB cbb;
  CBS_init(&cbs, msg->data, msg->len);
  assert_int_equal(cms_signed_parse(&sd, cbs, NULL, 0), CMS_OK);
  edit(&sd);
  assert_true(CBB_init(&cbb, msg->len + 4096));
  assert_true(cms_signed_encode(&cbb, &sd));
  replace_with(msg, &cbb);
}

/* A DER element built in static storage (alive until the next call with
 * the same slot). */
static CBS der_of(int slot, const uint8_t *der, size_t len) {
  static uint8_t store[4][4096];
  assert_true(len <= sizeof(store[0]));
  memcpy(store[slot], der, len);
  CBS out;
  CBS_init(&out, store[slot], len);
  return out;
}

static CBS alg_elem(int slot, const struct cms_oid *oid, int null_params) {
  CBB cbb;
  assert_true(CBB_init(&cbb, 32));
  assert_true(cms_add_alg(&cbb, oid, null_params));
  CBS out = der_of(slot, CBB_data(&cbb), CBB_len(&cbb));
  CBB_cleanup(&cbb);
  return out;
}

/* Signed-attribute sets for the rule cases, as flags. */
enum {
  A_TYPE = 1 << 0,         /* contentType id-data */
  A_TYPE_TWICE = 1 << 1,   /* a second contentType attribute */
  A_TYPE_WRONG = 1 << 2,   /* contentType id-signedData */
  A_DIGEST = 1 << 3,       /* messageDigest of kContent */
  A_DIGEST_TWICE = 1 << 4, /* two values in messageDigest's SET */
  A_TIME = 1 << 5,         /* signingTime NOW */
  A_TIME_TWICE = 1 << 6,   /* a second signingTime attribute */
  A_TIME_FRACTION = 1 << 7 /* signingTime with fractional seconds */
};

static void add_attr(CBB *set, const struct cms_oid *type, const uint8_t *v1,
                     size_t v1_len, const uint8_t *v2, size_t v2_len) {
  CBB attr, values;
  assert_true(CBB_add_asn1(set, &attr, CBS_ASN1_SEQUENCE));
  assert_true(cms_add_oid(&attr, type));
  assert_true(CBB_add_asn1(&attr, &values, CBS_ASN1_SET));
  assert_true(CBB_add_bytes(&values, v1, v1_len));
  assert_true(v2 == NULL || CBB_add_bytes(&values, v2, v2_len));
  assert_true(CBB_flush_asn1_set_of(&values));
  assert_true(CBB_flush(set));
}

/* build_attrs writes a DER SET OF Attribute with what flags ask for. */
static void build_attrs(CBB *out, unsigned flags) {
  uint8_t data_oid[16], sd_oid[16], md[2 + SHA256_DIGEST_LENGTH],
      md2[2 + SHA256_DIGEST_LENGTH];
  static const uint8_t utc[] = "\x17\x0d"
                               "231114221320Z";
  static const uint8_t frac[] = "\x18\x11"
                                "20231114221320.5Z";
  data_oid[0] = sd_oid[0] = CBS_ASN1_OBJECT;
  data_oid[1] = CMS_OID_DATA.len;
  memcpy(data_oid + 2, CMS_OID_DATA.der, CMS_OID_DATA.len);
  sd_oid[1] = CMS_OID_SIGNED_DATA.len;
  memcpy(sd_oid + 2, CMS_OID_SIGNED_DATA.der, CMS_OID_SIGNED_DATA.len);
  md[0] = md2[0] = CBS_ASN1_OCTETSTRING;
  md[1] = md2[1] = SHA256_DIGEST_LENGTH;
  SHA256(content(), strlen(kContent), md + 2);
  SHA256(kOtherContent, sizeof(kOtherContent) - 1, md2 + 2);
  CBB set;
  assert_true(CBB_add_asn1(out, &set, CBS_ASN1_SET));
  const struct cms_oid *ct = &CMS_OID_CONTENT_TYPE,
                       *mdt = &CMS_OID_MESSAGE_DIGEST,
                       *st = &CMS_OID_SIGNING_TIME;
  if (flags & A_TYPE) {
    add_attr(&set, ct, data_oid, 2 + data_oid[1], NULL, 0);
  }
  if (flags & A_TYPE_TWICE) {
    add_attr(&set, ct, sd_oid, 2 + sd_oid[1], NULL, 0);
  }
  if (flags & A_TYPE_WRONG) {
    add_attr(&set, ct, sd_oid, 2 + sd_oid[1], NULL, 0);
  }
  if (flags & (A_DIGEST | A_DIGEST_TWICE)) {
    add_attr(&set, mdt, md, sizeof(md), flags & A_DIGEST_TWICE ? md2 : NULL,
             sizeof(md2));
  }
  if (flags & (A_TIME | A_TIME_TWICE)) {
    add_attr(&set, st, utc, sizeof(utc) - 1, NULL, 0);
  }
  if (flags & A_TIME_TWICE) {
    add_attr(&set, st, frac + 0, 0, utc, sizeof(utc) - 1);
  }
  if (flags & A_TIME_FRACTION) {
    add_attr(&set, st, frac, sizeof(frac) - 1, NULL, 0);
  }
  assert_true(CBB_flush_asn1_set_of(&set));
  assert_true(CBB_flush(out));
}

/* ec_sign signs tbs with fx.ec's key, ECDSA with SHA-256. */
static CBS ec_sign(int slot, const uint8_t *tbs, size_t tbs_len) {
  uint8_t sig[128];
  size_t sig_len = sizeof(sig);
  EVP_MD_CTX ctx;
  EVP_MD_CTX_init(&ctx);
  assert_true(EVP_DigestSignInit(&ctx, NULL, EVP_sha256(), NULL, fx.ec.pkey));
  assert_true(EVP_DigestSign(&ctx, sig, &sig_len, tbs, tbs_len));
  EVP_MD_CTX_cleanup(&ctx);
  return der_of(slot, sig, sig_len);
}

/* resign gives signer 0 (fx.ec) the attributes flags ask for and a valid
 * signature over them, so that only the attribute rule can fail. */
static unsigned resign_flags;
static void e_resign(struct cms_signed *sd) {
  CBB cbb;
  assert_true(CBB_init(&cbb, 512));
  build_attrs(&cbb, resign_flags);
  sd->signers[0].signature = ec_sign(1, CBB_data(&cbb), CBB_len(&cbb));
  CBS attrs = der_of(0, CBB_data(&cbb), CBB_len(&cbb));
  ((uint8_t *)CBS_data(&attrs))[0] = 0xa0; /* [0] IMPLICIT */
  sd->signers[0].signed_attrs = attrs;
  CBB_cleanup(&cbb);
}

/* Form edits, one per case. */
static void e_sd_version_3(struct cms_signed *sd) {
  sd->version = 3;
}
static void e_si_version_3(struct cms_signed *sd) {
  sd->signers[0].version = 3;
}
static void e_digest_sha1(struct cms_signed *sd) {
  static const struct cms_oid sha1 = {5, {0x2b, 0x0e, 0x03, 0x02, 0x1a}};
  sd->signers[0].digest_alg = alg_elem(0, &sha1, 0);
}
static void e_sig_dsa(struct cms_signed *sd) {
  static const struct cms_oid dsa_sha256 = {
      9, {0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x02}};
  sd->signers[0].sig_alg = alg_elem(0, &dsa_sha256, 0);
}
static void e_sig_ecdsa384(struct cms_signed *sd) {
  sd->signers[0].sig_alg = alg_elem(0, &CMS_OID_ECDSA_SHA384, 0);
}
static void e_sig_ecdsa_null(struct cms_signed *sd) {
  sd->signers[0].sig_alg = alg_elem(0, &CMS_OID_ECDSA_SHA256, 1);
}
/* ecdsa-with-SHA256 with an INTEGER where parameters go */
static void e_sig_ecdsa_int(struct cms_signed *sd) {
  static const uint8_t der[] = {0x30, 0x0d, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
                                0x3d, 0x04, 0x03, 0x02, 0x02, 0x01, 0x00};
  sd->signers[0].sig_alg = der_of(0, der, sizeof(der));
}
static void e_sig_ed25519_null(struct cms_signed *sd) {
  sd->signers[0].sig_alg = alg_elem(0, &CMS_OID_ED25519, 1);
}
static void e_sig_rsa_on_ec(struct cms_signed *sd) {
  sd->signers[0].sig_alg = alg_elem(0, &CMS_OID_RSA, 1);
}
static void e_sig_sha256_rsa(struct cms_signed *sd) {
  sd->signers[0].sig_alg = alg_elem(0, &CMS_OID_SHA256_RSA, 1);
}
static void e_sig_too_long(struct cms_signed *sd) {
  static uint8_t big[CMS_MAX_SIG + 1];
  CBS_init(&sd->signers[0].signature, big, sizeof(big));
}
static void e_sig_flipped(struct cms_signed *sd) {
  CBS sig = der_of(0, CBS_data(&sd->signers[0].signature),
                   CBS_len(&sd->signers[0].signature));
  ((uint8_t *)CBS_data(&sig))[CBS_len(&sig) - 2] ^= 1;
  sd->signers[0].signature = sig;
}
static void e_content_changed(struct cms_signed *sd) {
  CBS_init(&sd->econtent, kOtherContent, sizeof(kOtherContent) - 1);
}
static void e_sid_rogue(struct cms_signed *sd) {
  CBB cbb;
  assert_true(CBB_init(&cbb, 128));
  assert_true(cms_add_sid(&cbb, fx.rogue_leaf.cert, 0));
  sd->signers[0].sid = der_of(0, CBB_data(&cbb), CBB_len(&cbb));
  CBB_cleanup(&cbb);
}
static void e_no_attrs(struct cms_signed *sd) {
  sd->signers[0].has_signed_attrs = 0;
  sd->signers[0].signature = ec_sign(1, content(), strlen(kContent));
}
static void e_no_attrs_other_type(struct cms_signed *sd) {
  e_no_attrs(sd);
  CBS_init(&sd->econtent_type, CMS_OID_SIGNED_DATA.der,
           CMS_OID_SIGNED_DATA.len);
  sd->version = 3;
}
static void e_empty_crls(struct cms_signed *sd) {
  static const uint8_t empty[2] = {0xa1, 0x00};
  sd->has_crls = 1;
  CBS_init(&sd->crls, empty, sizeof(empty));
}
static void e_cert_garbage(struct cms_signed *sd) {
  static const uint8_t junk[4] = {0x30, 0x02, 0x05, 0x00};
  CBS_init(&sd->certs[0], junk, sizeof(junk));
}

/* Byte-level makers. */
static void m_truncate_last(struct buf *msg) {
  msg->len--;
}
static void m_truncate_half(struct buf *msg) {
  msg->len /= 2;
}
static void m_trailing_byte(struct buf *msg) {
  assert_int_equal(buf_append(msg, "", 1), 0);
}
static void m_trailing_null(struct buf *msg) {
  assert_int_equal(buf_append(msg, "\x05\x00", 2), 0);
}
static void m_length_beyond(struct buf *msg) {
  assert_int_equal(msg->data[1], 0x82); /* 30 82 hi lo */
  msg->data[3]++;
}
static void m_wrong_tag(struct buf *msg) {
  msg->data[0] = 0x31;
}
static void m_not_signed(struct buf *msg) {
  CBB cbb, ci, e0;
  assert_true(CBB_init(&cbb, 64));
  assert_true(cms_content_info_begin(&cbb, &ci, &e0, &CMS_OID_DATA));
  assert_true(CBB_add_asn1_octet_string(&e0, (const uint8_t *)"x", 1));
  assert_true(CBB_flush(&cbb));
  replace_with(msg, &cbb);
}
static void m_deep(struct buf *msg) {
  /* 40 nested SEQUENCEs, indefinite length (BER) */
  CBB cbb;
  assert_true(CBB_init(&cbb, 200));
  for (int i = 0; i < 40; i++) {
    assert_true(CBB_add_u16(&cbb, 0x3080));
  }
  for (int i = 0; i < 40; i++) {
    assert_true(CBB_add_u16(&cbb, 0x0000));
  }
  replace_with(msg, &cbb);
}
/* m_many writes a SignedData by hand with num_certs copies of the
 * certificate and num_signers copies of the SignerInfo. */
static void m_many(struct buf *msg, size_t num_certs, size_t num_signers) {
  static struct cms_signed sd;
  CBS cbs;
  CBB cbb, ci, e0, seq, set, encap, oid, e0b, si;
  CBS_init(&cbs, msg->data, msg->len);
  assert_int_equal(cms_signed_parse(&sd, cbs, NULL, 0), CMS_OK);
  const struct cms_signer_info *s = &sd.signers[0];
  assert_true(CBB_init(&cbb, msg->len * 70));
  assert_true(
      cms_content_info_begin(&cbb, &ci, &e0, &CMS_OID_SIGNED_DATA) &&
      CBB_add_asn1(&e0, &seq, CBS_ASN1_SEQUENCE) &&
      CBB_add_asn1_uint64(&seq, 1) && CBB_add_asn1(&seq, &set, CBS_ASN1_SET) &&
      CBB_add_bytes(&set, CBS_data(&sd.digest_algs[0]),
                    CBS_len(&sd.digest_algs[0])) &&
      CBB_add_asn1(&seq, &encap, CBS_ASN1_SEQUENCE) &&
      CBB_add_asn1(&encap, &oid, CBS_ASN1_OBJECT) &&
      CBB_add_bytes(&oid, CMS_OID_DATA.der, CMS_OID_DATA.len) &&
      CBB_add_asn1(&encap, &e0b,
                   CBS_ASN1_CONTEXT_SPECIFIC | CBS_ASN1_CONSTRUCTED | 0) &&
      CBB_add_asn1_octet_string(&e0b, content(), strlen(kContent)) &&
      CBB_add_asn1(&seq, &set,
                   CBS_ASN1_CONTEXT_SPECIFIC | CBS_ASN1_CONSTRUCTED | 0));
  for (size_t i = 0; i < num_certs; i++) {
    assert_true(
        CBB_add_bytes(&set, CBS_data(&sd.certs[0]), CBS_len(&sd.certs[0])));
  }
  assert_true(CBB_add_asn1(&seq, &set, CBS_ASN1_SET));
  for (size_t i = 0; i < num_signers; i++) {
    assert_true(
        CBB_add_asn1(&set, &si, CBS_ASN1_SEQUENCE) &&
        CBB_add_asn1_uint64(&si, 1) &&
        CBB_add_bytes(&si, CBS_data(&s->sid), CBS_len(&s->sid)) &&
        CBB_add_bytes(&si, CBS_data(&s->digest_alg), CBS_len(&s->digest_alg)) &&
        CBB_add_bytes(&si, CBS_data(&s->signed_attrs),
                      CBS_len(&s->signed_attrs)) &&
        CBB_add_bytes(&si, CBS_data(&s->sig_alg), CBS_len(&s->sig_alg)) &&
        CBB_add_asn1_octet_string(&si, CBS_data(&s->signature),
                                  CBS_len(&s->signature)) &&
        CBB_flush(&set));
  }
  assert_true(CBB_flush(&cbb));
  replace_with(msg, &cbb);
}
static void m_nine_signers(struct buf *msg) {
  m_many(msg, 1, CMS_MAX_SIGNERS + 1);
}
static void m_eight_signers(struct buf *msg) {
  m_many(msg, 1, CMS_MAX_SIGNERS);
}
static void m_many_certs(struct buf *msg) {
  m_many(msg, CMS_MAX_CERTS + 1, 1);
}
static void m_max_certs(struct buf *msg) {
  m_many(msg, CMS_MAX_CERTS, 1);
}
/* m_attr_changed changes a digit of signingTime inside signedAttrs. */
static void m_attr_changed(struct buf *msg) {
  uint8_t *p = memmem(msg->data, msg->len, "231114221320Z", 13);
  assert_non_null(p);
  p[5] = '5';
}

struct bad_case {
  const char *label;
  struct party_fx *signer; /* NULL: fx.ec */
  int detached;            /* signed detached */
  void (*make)(struct buf *msg);
  void (*edit)(struct cms_signed *sd);
  unsigned attrs;       /* nonzero: e_resign with these */
  const uint8_t *given; /* the detached content passed; NULL: none */
  int64_t now;          /* 0: NOW */
  int no_trust;
  const char *from;
  int want_rc;
  enum cms_verdict want; /* of every signer, when want_rc is CMS_OK */
  const char *reason;    /* a part of err or of the first reason */
};

static const struct bad_case kBad[] = {
    /* syntax and the gate */
    {"truncated by one byte", .make = m_truncate_last,
     .want_rc = CMS_ERR_SYNTAX},
    {"truncated by half", .make = m_truncate_half, .want_rc = CMS_ERR_SYNTAX},
    {"trailing byte", .make = m_trailing_byte, .want_rc = CMS_ERR_SYNTAX},
    {"trailing NULL element", .make = m_trailing_null,
     .want_rc = CMS_ERR_SYNTAX, .reason = "after"},
    {"length beyond the buffer", .make = m_length_beyond,
     .want_rc = CMS_ERR_SYNTAX},
    {"SET where SEQUENCE", .make = m_wrong_tag, .want_rc = CMS_ERR_SYNTAX},
    {"id-data ContentInfo", .make = m_not_signed,
     .want_rc = CMS_ERR_UNSUPPORTED},
    {"40 levels of nesting", .make = m_deep, .want_rc = CMS_ERR_LIMIT},
    {"certificate that does not parse", .edit = e_cert_garbage,
     .want_rc = CMS_ERR_SYNTAX},
    /* versions (RFC 5652 §5.1, §5.3) */
    {"SignedData version 3 for 1", .edit = e_sd_version_3,
     .want_rc = CMS_ERR_SYNTAX, .reason = "version"},
    {"SignerInfo version 3 with issuerAndSerialNumber", .edit = e_si_version_3,
     .want_rc = CMS_ERR_SYNTAX, .reason = "version"},
    /* limits */
    {"nine signers", .make = m_nine_signers, .want_rc = CMS_ERR_LIMIT},
    {"eight signers", .make = m_eight_signers, .want = CMS_V_PASS},
    {"65 certificates", .make = m_many_certs, .want_rc = CMS_ERR_LIMIT},
    {"64 certificates", .make = m_max_certs, .want = CMS_V_PASS},
    {"signature over CMS_MAX_SIG", .edit = e_sig_too_long,
     .want_rc = CMS_ERR_LIMIT},
    /* algorithms */
    {"digest SHA-1", .edit = e_digest_sha1, .want = CMS_V_UNSUPPORTED},
    {"signature dsa-with-sha256", .edit = e_sig_dsa, .want = CMS_V_UNSUPPORTED},
    {"ecdsa-with-SHA384 over a SHA-256 digest", .edit = e_sig_ecdsa384,
     .want = CMS_V_UNSUPPORTED},
    /* RFC 5758 §3.2 says absent; gpgsm 2.2 writes NULL, OpenSSL takes it */
    {"ecdsa-with-SHA256 with NULL parameters", .edit = e_sig_ecdsa_null,
     .want = CMS_V_PASS},
    {"ecdsa-with-SHA256 with INTEGER parameters", .edit = e_sig_ecdsa_int,
     .want = CMS_V_UNSUPPORTED},
    {"Ed25519 with NULL parameters", .signer = &fx.ed,
     .edit = e_sig_ed25519_null, .want = CMS_V_UNSUPPORTED},
    {"rsaEncryption with an EC key", .edit = e_sig_rsa_on_ec,
     .want = CMS_V_BAD_SIGNATURE, .reason = "does not fit"},
    {"sha256WithRSAEncryption accepted", .signer = &fx.rsa,
     .edit = e_sig_sha256_rsa, .want = CMS_V_PASS},
    /* content, digest, signature */
    {"detached, content not given", .detached = 1, .want_rc = CMS_ERR_SYNTAX},
    {"detached, other content", .detached = 1, .given = kOtherContent,
     .want = CMS_V_BAD_DIGEST},
    /* signature wrapping: the caller's bytes would go unchecked */
    {"encapsulated, and the same content given",
     .given = (const uint8_t *)kContent, .want_rc = CMS_ERR_SYNTAX,
     .reason = "both encapsulated and detached"},
    {"encapsulated, and other content given", .given = kOtherContent,
     .want_rc = CMS_ERR_SYNTAX, .reason = "both encapsulated and detached"},
    {"encapsulated content changed", .edit = e_content_changed,
     .want = CMS_V_BAD_DIGEST},
    {"signed attribute changed", .make = m_attr_changed,
     .want = CMS_V_BAD_SIGNATURE, .reason = "does not verify"},
    {"signature bit flipped", .edit = e_sig_flipped,
     .want = CMS_V_BAD_SIGNATURE},
    {"sid names no carried certificate", .edit = e_sid_rogue,
     .want = CMS_V_NO_CERT},
    {"no signed attributes over id-data", .edit = e_no_attrs,
     .want = CMS_V_PASS},
    {"no signed attributes over other content", .edit = e_no_attrs_other_type,
     .want = CMS_V_BAD_SIGNATURE},
    {"empty crls carried", .edit = e_empty_crls, .want = CMS_V_PASS},
    /* signed attribute rules (RFC 5652 §5.3, §11), validly re-signed */
    {"re-signed, all present", .attrs = A_TYPE | A_DIGEST | A_TIME,
     .want = CMS_V_PASS},
    {"no messageDigest", .attrs = A_TYPE | A_TIME, .want = CMS_V_BAD_SIGNATURE,
     .reason = "messageDigest"},
    {"two values in messageDigest", .attrs = A_TYPE | A_DIGEST_TWICE,
     .want = CMS_V_BAD_SIGNATURE, .reason = "messageDigest"},
    {"no contentType", .attrs = A_DIGEST, .want = CMS_V_BAD_SIGNATURE,
     .reason = "contentType"},
    {"two contentType attributes", .attrs = A_TYPE | A_TYPE_TWICE | A_DIGEST,
     .want = CMS_V_BAD_SIGNATURE, .reason = "contentType"},
    {"contentType not eContentType", .attrs = A_TYPE_WRONG | A_DIGEST,
     .want = CMS_V_BAD_SIGNATURE, .reason = "contentType"},
    {"two signingTime attributes",
     .attrs = A_TYPE | A_DIGEST | A_TIME | A_TIME_TWICE,
     .want = CMS_V_BAD_SIGNATURE, .reason = "signingTime"},
    {"signingTime with a fraction",
     .attrs = A_TYPE | A_DIGEST | A_TIME_FRACTION, .want = CMS_V_BAD_SIGNATURE,
     .reason = "signingTime"},
    /* chain, validity, usage, From */
    {"issuer not trusted", .signer = &fx.rogue_leaf, .want = CMS_V_UNTRUSTED,
     .reason = "chain:"},
    {"no trust store", .no_trust = 1, .want = CMS_V_UNTRUSTED,
     .reason = "no trust anchors configured"},
    {"expired certificate", .signer = &fx.expired, .want = CMS_V_EXPIRED},
    {"certificate not yet valid", .signer = &fx.future, .want = CMS_V_EXPIRED},
    {"checked years later", .now = NOW + 400 * DAY, .want = CMS_V_EXPIRED},
    {"extKeyUsage serverAuth", .signer = &fx.server_eku,
     .want = CMS_V_KEY_USAGE},
    {"extKeyUsage anyExtendedKeyUsage", .signer = &fx.any_eku,
     .want = CMS_V_PASS},
    {"keyUsage keyEncipherment only", .signer = &fx.ku_enc,
     .want = CMS_V_KEY_USAGE},
    {"From not in the certificate", .from = "mallory@example.org",
     .want = CMS_V_FROM_MISMATCH},
    {"From in other case", .from = "EC@EXAMPLE.ORG", .want = CMS_V_PASS},
    {"From of another domain", .from = "ec@example.org.evil",
     .want = CMS_V_FROM_MISMATCH},
};

static void run_bad_case(const struct bad_case *c) {
  struct buf msg = {0};
  sign_simple(&msg, c->signer != NULL ? c->signer : &fx.ec, c->detached);
  if (c->make != NULL) {
    c->make(&msg);
  }
  if (c->edit != NULL) {
    rebuild(&msg, c->edit);
  }
  if (c->attrs != 0) {
    resign_flags = c->attrs;
    rebuild(&msg, e_resign);
  }
  struct cms_verify_opts vo = vopts(c->now != 0 ? c->now : NOW, c->from);
  if (c->no_trust) {
    vo.trust = NULL;
  }
  const uint8_t *given = c->given;
  size_t given_len = given == kOtherContent ? sizeof(kOtherContent) - 1
                     : given != NULL        ? strlen(kContent)
                                            : 0;
  struct cms_verified v;
  char err[160] = "";
  int rc = cms_verify(&v, msg.data, msg.len, given, given_len, &vo, err,
                      sizeof(err));
  if (rc != c->want_rc) {
    fail_msg("%s: got %s (%s), want %s", c->label, cms_err_str(rc), err,
             cms_err_str(c->want_rc));
  }
  if (rc != CMS_OK && c->reason != NULL && strstr(err, c->reason) == NULL) {
    fail_msg("%s: error \"%s\" does not say \"%s\"", c->label, err, c->reason);
  }
  if (rc != CMS_OK) {
    assert_int_equal(v.num_signers, 0);
  }
  for (size_t i = 0; rc == CMS_OK && i < v.num_signers; i++) {
    const struct cms_signer_result *r = &v.signers[i];
    if (r->verdict != c->want ||
        (c->reason != NULL && strstr(r->reason, c->reason) == NULL)) {
      fail_msg("%s: signer %zu: got %s (%s), want %s (%s)", c->label, i,
               cms_verdict_str(r->verdict), r->reason, cms_verdict_str(c->want),
               c->reason ? c->reason : "any");
    }
  }
  assert_int_equal(cms_verified_all_pass(&v),
                   rc == CMS_OK && c->want == CMS_V_PASS);
  cms_verified_cleanup(&v);
  buf_free(&msg);
}

static void test_bad_messages(void **state) {
  (void)state;
  for (size_t i = 0; i < ARRAY_LEN(kBad); i++) {
    run_bad_case(&kBad[i]);
  }
}

/* Every prefix of a message is refused, never crashes. */
static void test_every_prefix(void **state) {
  (void)state;
  struct buf msg = {0};
  sign_simple(&msg, &fx.ec, 0);
  for (size_t n = 0; n < msg.len; n++) {
    struct cms_verified v;
    int rc = cms_verify(&v, msg.data, n, NULL, 0, NULL, NULL, 0);
    if (rc == CMS_OK) {
      fail_msg("prefix of %zu/%zu bytes: got ok, want an error", n, msg.len);
    }
    cms_verified_cleanup(&v);
  }
  buf_free(&msg);
}

/* ---- messages made by the OpenSSL 3 CLI (make-signed.sh) ---- */

static void read_data(struct buf *out, const char *name) {
  char path[700];
  snprintf(path, sizeof(path), "%s/%s", fx.data_dir, name);
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    fail_msg("cannot open %s", path);
  }
  uint8_t chunk[4096];
  size_t n;
  while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
    assert_int_equal(buf_append(out, chunk, n), 0);
  }
  fclose(f);
}

static X509 *read_cert(const char *name) {
  char path[700], err[160];
  snprintf(path, sizeof(path), "%s/%s", fx.data_dir, name);
  STACK_OF(X509) *certs = cms_certs_load_pem(path, err, sizeof(err));
  if (certs == NULL) {
    fail_msg("%s", err);
  }
  X509 *x = sk_X509_shift(certs);
  sk_X509_pop_free(certs, X509_free);
  return x;
}

/* The OpenSSL-made messages, checked at FIXTURE_NOW against signed-ca.pem. */
static const struct fixture_case {
  const char *file;
  int detached;   /* 1: kContent file, 2: other content */
  int extra_cert; /* give signed-rsa.pem as an extra certificate */
  const char *from;
  size_t num_signers; /* 0: cms_verify must refuse it (CMS_ERR_SYNTAX) */
  enum cms_verdict want;
  const char *sig_alg;
  enum cms_digest digest;
  int has_time;
} kFixtures[] = {
    {"signed-rsa-detached.der", 1, 0, "rsa@example.org", 1, CMS_V_PASS, "rsa",
     CMS_SHA256, 1},
    {"signed-rsa-detached.der", 2, 0, NULL, 1, CMS_V_BAD_DIGEST, "rsa",
     CMS_SHA256, 1},
    {"signed-rsa-attached.der", 0, 0, "RSA@Example.ORG", 1, CMS_V_PASS, "rsa",
     CMS_SHA256, 1},
    {"signed-rsa-attached.der", 0, 0, "ec@example.org", 1, CMS_V_FROM_MISMATCH,
     "rsa", CMS_SHA256, 1},
    {"signed-rsa-stream.ber", 0, 0, "rsa@example.org", 1, CMS_V_PASS, "rsa",
     CMS_SHA256, 1},
    {"signed-rsa-sha384.der", 0, 0, NULL, 1, CMS_V_PASS, "rsa", CMS_SHA384, 1},
    {"signed-rsa-sha512-detached.der", 1, 0, NULL, 1, CMS_V_PASS, "rsa",
     CMS_SHA512, 1},
    {"signed-rsa-pss.der", 0, 0, NULL, 1, CMS_V_PASS, "rsa-pss", CMS_SHA256, 1},
    {"signed-rsa-noattr.der", 0, 0, NULL, 1, CMS_V_PASS, "rsa", CMS_SHA256, 0},
    {"signed-rsa-keyid.der", 0, 0, NULL, 1, CMS_V_PASS, "rsa", CMS_SHA256, 1},
    {"signed-rsa-nocerts.der", 0, 0, NULL, 1, CMS_V_NO_CERT, "", CMS_SHA256, 0},
    {"signed-rsa-nocerts.der", 0, 1, NULL, 1, CMS_V_PASS, "rsa", CMS_SHA256, 1},
    {"signed-ec.der", 0, 0, "ec@example.org", 1, CMS_V_PASS, "ecdsa-p256",
     CMS_SHA256, 1},
    /* openssl cms -stream -outform DER encapsulates even without
     * -nodetach: no content may be given for it (see kBad, wrapping) */
    {"signed-ec-stream.ber", 0, 0, NULL, 1, CMS_V_PASS, "ecdsa-p256",
     CMS_SHA256, 1},
    {"signed-ec-stream.ber", 1, 0, NULL, 0, CMS_V_PASS, NULL, CMS_SHA256, 1},
    {"signed-ec384.der", 0, 0, "ec384@example.org", 1, CMS_V_PASS, "ecdsa-p384",
     CMS_SHA384, 1},
    {"signed-expired.der", 0, 0, NULL, 1, CMS_V_EXPIRED, "ecdsa-p256",
     CMS_SHA256, 1},
    {"signed-tls.der", 0, 0, NULL, 1, CMS_V_KEY_USAGE, "ecdsa-p256", CMS_SHA256,
     1},
    {"signed-two.der", 0, 0, NULL, 2, CMS_V_PASS, NULL, CMS_SHA256, 1},
};

/* What the fixture cases share: the store, the extra certificate and
 * the content (and a shortened copy) for detached messages. */
struct fixture_env {
  X509_STORE *store;
  X509 *rsa_cert;
  struct buf given, other;
};

static void run_fixture_case(const struct fixture_case *c,
                             struct fixture_env *env) {
  struct buf msg = {0};
  char err[160] = "";
  read_data(&msg, c->file);
  struct cms_verify_opts vo = {
      .trust = env->store, .now = FIXTURE_NOW, .from = c->from};
  if (c->extra_cert) {
    vo.extra_certs = &env->rsa_cert;
    vo.num_extra_certs = 1;
  }
  const struct buf *given = c->detached == 1   ? &env->given
                            : c->detached == 2 ? &env->other
                                               : NULL;
  struct cms_verified v;
  int rc = cms_verify(&v, msg.data, msg.len, given ? given->data : NULL,
                      given ? given->len : 0, &vo, err, sizeof(err));
  if (c->num_signers == 0) { /* content given for an encapsulating one */
    if (rc != CMS_ERR_SYNTAX || v.num_signers != 0) {
      fail_msg("%s with content given: got %s, %zu signers; want syntax",
               c->file, cms_err_str(rc), v.num_signers);
    }
    buf_free(&msg);
    return;
  }
  if (rc != CMS_OK || v.num_signers != c->num_signers) {
    fail_msg("%s: got %s (%s), %zu signers; want ok, %zu", c->file,
             cms_err_str(rc), err, v.num_signers, c->num_signers);
  }
  for (size_t k = 0; k < v.num_signers; k++) {
    const struct cms_signer_result *r = &v.signers[k];
    if (r->verdict != c->want ||
        (c->sig_alg != NULL && strcmp(r->sig_alg, c->sig_alg) != 0) ||
        (c->want != CMS_V_NO_CERT && r->digest != c->digest) ||
        (c->has_time ? r->signing_time <= 0 : r->signing_time != -1)) {
      fail_msg("%s (from %s): signer %zu: got %s (%s) %s %d time %lld; "
               "want %s %s %d",
               c->file, c->from ? c->from : "-", k, cms_verdict_str(r->verdict),
               r->reason, r->sig_alg, r->digest, (long long)r->signing_time,
               cms_verdict_str(c->want), c->sig_alg ? c->sig_alg : "any",
               c->digest);
    }
  }
  assert_int_equal(v.content_type, CMS_TYPE_DATA);
  assert_int_equal(v.detached, c->detached != 0);
  if (!c->detached) {
    assert_int_equal(v.content.len, env->given.len);
    assert_memory_equal(v.content.data, env->given.data, env->given.len);
  }
  cms_verified_cleanup(&v);
  buf_free(&msg);
}

static void test_openssl_fixtures(void **state) {
  (void)state;
  if (fx.data_dir[0] == '\0') {
    skip();
  }
  char err[160] = "", ca_path[700];
  struct fixture_env env = {0};
  snprintf(ca_path, sizeof(ca_path), "%s/signed-ca.pem", fx.data_dir);
  env.store = cms_trust_load(ca_path, NULL, err, sizeof(err));
  assert_non_null(env.store);
  env.rsa_cert = read_cert("signed-rsa.pem");
  read_data(&env.given, "signed-content.txt");
  assert_int_equal(buf_append(&env.other, env.given.data, env.given.len - 3),
                   0);
  for (size_t i = 0; i < ARRAY_LEN(kFixtures); i++) {
    run_fixture_case(&kFixtures[i], &env);
  }
  /* BER with an element after it: refused, whatever the gate converts. */
  struct buf ber = {0};
  read_data(&ber, "signed-rsa-stream.ber");
  assert_int_equal(buf_append(&ber, "\x05\x00", 2), 0);
  struct cms_verified v;
  struct cms_verify_opts vo = {.trust = env.store, .now = FIXTURE_NOW};
  int rc = cms_verify(&v, ber.data, ber.len, NULL, 0, &vo, err, sizeof(err));
  if (rc != CMS_ERR_SYNTAX) {
    fail_msg("BER + trailing NULL: got %s (%s), want syntax", cms_err_str(rc),
             err);
  }
  cms_verified_cleanup(&v);
  buf_free(&ber);
  /* gpgsm 2.2 writes ecdsa-with-SHA256 with NULL parameters: OpenSSL's
   * message with 05 00 put into its signatureAlgorithm (outside the
   * signed attributes, so the signature still holds) verifies. */
  struct buf ec = {0};
  static const uint8_t with_null[] = {0x30, 0x0c, 0x06, 0x08, 0x2a, 0x86, 0x48,
                                      0xce, 0x3d, 0x04, 0x03, 0x02, 0x05, 0x00};
  read_data(&ec, "signed-ec.der");
  assert_null(memmem(ec.data, ec.len, with_null, sizeof(with_null)));
  rebuild(&ec, e_sig_ecdsa_null);
  assert_non_null(memmem(ec.data, ec.len, with_null, sizeof(with_null)));
  vo.from = "ec@example.org";
  rc = cms_verify(&v, ec.data, ec.len, NULL, 0, &vo, err, sizeof(err));
  if (rc != CMS_OK || v.num_signers != 1 ||
      v.signers[0].verdict != CMS_V_PASS ||
      strcmp(v.signers[0].sig_alg, "ecdsa-p256") != 0) {
    fail_msg("signed-ec.der with NULL ECDSA parameters: %s (%s) %s %s",
             cms_err_str(rc), err,
             v.num_signers ? cms_verdict_str(v.signers[0].verdict) : "-",
             v.num_signers ? v.signers[0].reason : "");
  }
  cms_verified_cleanup(&v);
  buf_free(&ec);
  X509_free(env.rsa_cert);
  X509_STORE_free(env.store);
  buf_free(&env.given);
  buf_free(&env.other);
}

static void test_verdict_names(void **state) {
  (void)state;
  static const struct {
    enum cms_verdict v;
    const char *want;
  } cases[] = {
      {CMS_V_PASS, "pass"},
      {CMS_V_BAD_SIGNATURE, "bad-signature"},
      {CMS_V_BAD_DIGEST, "bad-digest"},
      {CMS_V_NO_CERT, "no-cert"},
      {CMS_V_UNTRUSTED, "untrusted"},
      {CMS_V_EXPIRED, "expired"},
      {CMS_V_KEY_USAGE, "key-usage"},
      {CMS_V_FROM_MISMATCH, "from-mismatch"},
      {CMS_V_UNSUPPORTED, "unsupported"},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    if (strcmp(cms_verdict_str(cases[i].v), cases[i].want) != 0) {
      fail_msg("verdict %d: got %s, want %s", cases[i].v,
               cms_verdict_str(cases[i].v), cases[i].want);
    }
  }
  struct cms_verified v = {0};
  assert_int_equal(cms_verified_all_pass(&v), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trips),
      cmocka_unit_test(test_chain_and_extra_certs),
      cmocka_unit_test(test_signed_attrs),
      cmocka_unit_test(test_signing_time),
      cmocka_unit_test(test_sign_refusals),
      cmocka_unit_test(test_bad_messages),
      cmocka_unit_test(test_every_prefix),
      cmocka_unit_test(test_openssl_fixtures),
      cmocka_unit_test(test_verdict_names),
  };
  return cmocka_run_group_tests_name("cms_signed", tests, group_setup,
                                     group_teardown);
}
