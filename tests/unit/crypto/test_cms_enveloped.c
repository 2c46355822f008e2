/* Unit tests: crypto/cms_enveloped — EnvelopedData and AuthEnvelopedData.
 *
 * Round trips for every cipher (AES-256/128-GCM, AES-256/128-CBC) times
 * every recipient kind (RSA-OAEP, RSA PKCS#1 v1.5, ECDH P-256, X25519)
 * times both identifiers (issuerAndSerialNumber, subjectKeyIdentifier);
 * ten recipients of mixed kinds in one message; messages made by the
 * OpenSSL 3 CLI (tests/data/cms/make-enveloped.sh: PKCS#1, OAEP SHA-1 and
 * SHA-256, ECDH with sha1kdf and sha256kdf, -keyid, -stream BER);
 * authAttrs authenticated as AAD (a hand-built message); EFAIL: every
 * single-bit flip of small AuthEnvelopedData messages fails and leaves
 * the output alone; wrong keys; Bleichenbacher (a bad PKCS#1 key fails
 * like a bad tag); unknown RecipientInfo kinds skipped; bad inputs, each
 * a labelled case; parse -> encode gives back the same bytes.
 *
 * Recipient keys and certificates are made at start-up with BoringSSL
 * (RSA 2048, P-256, X25519) under an in-process EC CA. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/aead.h>
#include <openssl/bytestring.h>
#include <openssl/err.h>
#include <openssl/mem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "crypto/cms_internal.h"
#include "tests/unit/crypto/pki.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define PREFIX "kept"

enum kind { K_RSA, K_P256, K_X25519, K_ED25519 };

struct party {
  EVP_PKEY *pkey;
  struct cms_key *key;
  X509 *cert;
};

static struct fixture {
  EVP_PKEY *ca_key;
  X509 *ca;
  struct party rsa, p256, x25519, ed, noski; /* made in process */
  struct party many[10];
  struct party f_rsa, f_ec, f_x25519; /* tests/data/cms fixtures */
  char data_dir[512];
} fx;

static const uint8_t kContent[] =
    "Content-Type: text/plain\r\n\r\nAttack at dawn.\r\n";

/* ---- keys and certificates ---- */

static EVP_PKEY *gen_key(enum kind kind) {
  if (kind == K_P256) {
    return make_key();
  }
  static const int ids[] = {EVP_PKEY_RSA, 0, EVP_PKEY_X25519, EVP_PKEY_ED25519};
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(ids[kind], NULL);
  EVP_PKEY *key = NULL;
  if (ctx == NULL || !EVP_PKEY_keygen_init(ctx) ||
      (kind == K_RSA && !EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, 2048)) ||
      !EVP_PKEY_keygen(ctx, &key)) {
    fail_msg("test bug: keygen %d", kind);
  }
  EVP_PKEY_CTX_free(ctx);
  return key;
}

/* cms_key_of goes through PEM, as operators' keys do. */
static struct cms_key *cms_key_of(EVP_PKEY *pkey) {
  BIO *b = BIO_new(BIO_s_mem());
  const uint8_t *pem;
  size_t pem_len;
  char err[128];
  if (!PEM_write_bio_PrivateKey(b, pkey, NULL, NULL, 0, NULL, NULL) ||
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

static X509 *make_cert(EVP_PKEY *pub, const char *cn, int ski) {
  static long serial = 1000;
  X509 *x = X509_new();
  X509_set_version(x, X509_VERSION_3);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600L * 24 * 365);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                             (const uint8_t *)cn, -1, -1, 0);
  X509 *issuer = fx.ca != NULL ? fx.ca : x;
  X509_set_issuer_name(x, X509_get_subject_name(issuer));
  X509_set_pubkey(x, pub);
  X509V3_CTX v3;
  X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
  add_ext(x, &v3, NID_ext_key_usage, "emailProtection");
  if (ski) {
    add_ext(x, &v3, NID_subject_key_identifier, "hash");
  }
  if (!X509_sign(x, fx.ca_key, EVP_sha256())) {
    fail_msg("test bug: signing %s", cn);
  }
  return x;
}

static struct party make_party(enum kind kind, const char *cn, int ski) {
  struct party p = {.pkey = gen_key(kind)};
  p.key = cms_key_of(p.pkey);
  p.cert = make_cert(p.pkey, cn, ski);
  return p;
}

static struct party load_party(const char *name) {
  char key[600], cert[600], err[256];
  snprintf(key, sizeof(key), "%s/enveloped-%s.key", fx.data_dir, name);
  snprintf(cert, sizeof(cert), "%s/enveloped-%s.pem", fx.data_dir, name);
  struct party p = {0};
  p.key = cms_key_load_pem(key, err, sizeof(err));
  STACK_OF(X509) *certs = cms_certs_load_pem(cert, err, sizeof(err));
  if (p.key == NULL || certs == NULL) {
    fail_msg("fixture %s: %s", name, err);
  }
  p.cert =
      X509_up_ref(sk_X509_value(certs, 0)) ? sk_X509_value(certs, 0) : NULL;
  sk_X509_pop_free(certs, X509_free);
  return p;
}

static void free_party(struct party *p) {
  EVP_PKEY_free(p->pkey);
  cms_key_free(p->key);
  X509_free(p->cert);
}

static int group_setup(void **state) {
  (void)state;
  (void)write_pem; /* pki.h's; these tests need no files */
  fx.ca_key = make_key();
  fx.ca = make_cert(fx.ca_key, "enveloped test CA", 1);
  fx.rsa = make_party(K_RSA, "rsa", 1);
  fx.p256 = make_party(K_P256, "p256", 1);
  fx.x25519 = make_party(K_X25519, "x25519", 1);
  fx.ed = make_party(K_ED25519, "ed25519", 1);
  fx.noski = make_party(K_P256, "noski", 0);
  static const enum kind many[10] = {K_RSA,  K_P256,   K_X25519, K_P256,
                                     K_RSA,  K_X25519, K_P256,   K_RSA,
                                     K_P256, K_X25519};
  for (size_t i = 0; i < ARRAY_LEN(many); i++) {
    char cn[32];
    snprintf(cn, sizeof(cn), "many-%zu", i);
    fx.many[i] = make_party(many[i], cn, 1);
  }
  snprintf(fx.data_dir, sizeof(fx.data_dir), "%s", __FILE__);
  char *cut = strstr(fx.data_dir, "tests/unit/crypto/test_cms_enveloped.c");
  if (cut == NULL) {
    fail_msg("test bug: cannot find tests/data from %s", __FILE__);
  }
  strcpy(cut, "tests/data/cms");
  fx.f_rsa = load_party("rsa");
  fx.f_ec = load_party("ec");
  fx.f_x25519 = load_party("x25519");
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  struct party *all[] = {&fx.rsa,   &fx.p256,  &fx.x25519, &fx.ed,
                         &fx.noski, &fx.f_rsa, &fx.f_ec,   &fx.f_x25519};
  for (size_t i = 0; i < ARRAY_LEN(all); i++) {
    free_party(all[i]);
  }
  for (size_t i = 0; i < ARRAY_LEN(fx.many); i++) {
    free_party(&fx.many[i]);
  }
  EVP_PKEY_free(fx.ca_key);
  X509_free(fx.ca);
  return 0;
}

/* ---- helpers ---- */

static uint8_t *read_file(const char *name, size_t *out_len) {
  char path[600];
  snprintf(path, sizeof(path), "%s/%s", fx.data_dir, name);
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    fail_msg("cannot open %s", path);
  }
  uint8_t *data = malloc(1 << 20);
  *out_len = fread(data, 1, 1 << 20, f);
  fclose(f);
  return data;
}

/* encrypt_to encrypts kContent for one recipient. */
static void encrypt_to(struct buf *out, X509 *cert, int pkcs1, int ski,
                       enum cms_cipher cipher, const char *label) {
  struct cms_recipient r = {cert, pkcs1, ski};
  char err[256] = "";
  int rc = cms_encrypt(out, &r, 1, kContent, sizeof(kContent) - 1, cipher, err,
                       sizeof(err));
  if (rc != CMS_OK) {
    fail_msg("%s: encrypt: got %s (%s), want ok", label, cms_err_str(rc), err);
  }
}

/* decrypt_as decrypts in with one party; out starts as PREFIX and must
 * stay so on failure. Returns the error value; *plain gets the output. */
static int decrypt_as(const struct party *p, const uint8_t *in, size_t in_len,
                      struct buf *plain, int *auth, const char *label) {
  struct cms_decrypt_party dp = {p->key, p->cert};
  char err[256] = "";
  buf_reset(plain);
  buf_append_str(plain, PREFIX);
  *auth = -1;
  int rc = cms_decrypt(plain, auth, &cms_local_signer, &dp, 1, in, in_len, err,
                       sizeof(err));
  if (rc != CMS_OK &&
      (plain->len != strlen(PREFIX) || memcmp(plain->data, PREFIX, 4) != 0 ||
       *auth != 0 || strlen(err) == 0)) {
    fail_msg("%s: failed (%s) but out changed, auth=%d or no reason", label,
             cms_err_str(rc), *auth);
  }
  return rc;
}

static void expect_plain(const struct party *p, const uint8_t *in,
                         size_t in_len, const uint8_t *want, size_t want_len,
                         int want_auth, const char *label) {
  struct buf plain = {0};
  int auth;
  int rc = decrypt_as(p, in, in_len, &plain, &auth, label);
  if (rc != CMS_OK) {
    fail_msg("%s: decrypt: got %s, want ok", label, cms_err_str(rc));
  }
  size_t n = strlen(PREFIX);
  if (plain.len != n + want_len || memcmp(plain.data + n, want, want_len) ||
      auth != want_auth) {
    fail_msg("%s: got %zu bytes auth=%d, want %zu bytes auth=%d", label,
             plain.len - n, auth, want_len, want_auth);
  }
  buf_free(&plain);
}

static void expect_rc(const struct party *p, const uint8_t *in, size_t len,
                      int want, const char *label) {
  struct buf plain = {0};
  int auth;
  int rc = decrypt_as(p, in, len, &plain, &auth, label);
  if (rc != want) {
    fail_msg("%s: got %s, want %s", label, cms_err_str(rc), cms_err_str(want));
  }
  buf_free(&plain);
}

/* expect_round_trip: parse(DER) -> encode gives the same bytes, for the
 * whole and for each RecipientInfo. */
static void expect_round_trip(const uint8_t *in, size_t len,
                              const char *label) {
  CBS der;
  uint8_t *storage, *again, *ri_again;
  size_t again_len, ri_len;
  char err[128];
  struct cms_env *env = malloc(sizeof(*env));
  CBB cbb;
  assert_int_equal(cms_input_der(in, len, &der, &storage, err, sizeof(err)),
                   CMS_OK);
  if (cms_env_parse(der, env, err, sizeof(err)) != CMS_OK) {
    fail_msg("%s: parse: %s", label, err);
  }
  assert_true(CBB_init(&cbb, 0) && cms_env_encode(&cbb, env) &&
              CBB_finish(&cbb, &again, &again_len));
  if (again_len != CBS_len(&der) ||
      memcmp(again, CBS_data(&der), again_len) != 0) {
    fail_msg("%s: encode(parse(DER)): got %zu bytes, want the %zu read", label,
             again_len, CBS_len(&der));
  }
  for (size_t i = 0; i < env->num_ris; i++) {
    struct cms_ri ri;
    assert_int_equal(cms_ri_parse(env->ris[i], &ri), CMS_OK);
    assert_true(CBB_init(&cbb, 0) && cms_ri_encode(&cbb, &ri) &&
                CBB_finish(&cbb, &ri_again, &ri_len));
    if (!CBS_mem_equal(&env->ris[i], ri_again, ri_len)) {
      fail_msg("%s: RecipientInfo %zu does not round-trip", label, i);
    }
    OPENSSL_free(ri_again);
  }
  OPENSSL_free(again);
  OPENSSL_free(storage);
  free(env);
}

/* parse_msg parses a DER message into env (which points into it). */
static void parse_msg(const struct buf *msg, struct cms_env *env) {
  CBS der;
  char err[128];
  CBS_init(&der, msg->data, msg->len);
  if (cms_env_parse(der, env, err, sizeof(err)) != CMS_OK) {
    fail_msg("test bug: parse: %s", err);
  }
}

/* encode_msg writes env to out (replacing it). */
static void encode_msg(const struct cms_env *env, struct buf *out) {
  CBB cbb;
  uint8_t *der;
  size_t len;
  assert_true(CBB_init(&cbb, 0) && cms_env_encode(&cbb, env) &&
              CBB_finish(&cbb, &der, &len));
  buf_reset(out);
  assert_int_equal(buf_append(out, der, len), 0);
  OPENSSL_free(der);
}

/* ---- round trips ---- */

static const struct {
  enum cms_cipher cipher;
  const char *name;
  int auth;
} kCiphers[] = {
    {CMS_AES256_GCM, "aes256-gcm", 1},
    {CMS_AES128_GCM, "aes128-gcm", 1},
    {CMS_AES256_CBC, "aes256-cbc", 0},
    {CMS_AES128_CBC, "aes128-cbc", 0},
};

static void test_round_trips(void **state) {
  (void)state;
  const struct {
    const char *name;
    struct party *p;
    int pkcs1;
  } kinds[] = {
      {"rsa-oaep", &fx.rsa, 0},
      {"rsa-pkcs1", &fx.rsa, 1},
      {"p256", &fx.p256, 0},
      {"x25519", &fx.x25519, 0},
  };
  for (size_t c = 0; c < ARRAY_LEN(kCiphers); c++) {
    for (size_t k = 0; k < ARRAY_LEN(kinds); k++) {
      for (int ski = 0; ski <= 1; ski++) {
        char label[96];
        snprintf(label, sizeof(label), "%s/%s/%s", kCiphers[c].name,
                 kinds[k].name, ski ? "ski" : "ias");
        struct buf msg = {0};
        struct cms_env env;
        encrypt_to(&msg, kinds[k].p->cert, kinds[k].pkcs1, ski,
                   kCiphers[c].cipher, label);
        expect_plain(kinds[k].p, msg.data, msg.len, kContent,
                     sizeof(kContent) - 1, kCiphers[c].auth, label);
        expect_round_trip(msg.data, msg.len, label);
        parse_msg(&msg, &env);
        /* RFC 5083 §2.1 version 0; RFC 5652 §6.1: 0 only when all
         * RecipientInfos are version 0 KTRI. */
        uint64_t want_version = kCiphers[c].auth || (k < 2 && !ski) ? 0 : 2;
        if (env.auth != kCiphers[c].auth || env.version != want_version) {
          fail_msg("%s: got auth=%d version=%llu, want auth=%d version=%llu",
                   label, env.auth, (unsigned long long)env.version,
                   kCiphers[c].auth, (unsigned long long)want_version);
        }
        expect_rc(&fx.noski, msg.data, msg.len, CMS_ERR_NO_RECIPIENT, label);
        buf_free(&msg);
      }
    }
  }
}

static void test_many_recipients(void **state) {
  (void)state;
  struct cms_recipient r[ARRAY_LEN(fx.many)];
  for (size_t i = 0; i < ARRAY_LEN(fx.many); i++) {
    r[i] = (struct cms_recipient){fx.many[i].cert, i % 4 == 0, i % 3 == 0};
  }
  for (size_t c = 0; c < ARRAY_LEN(kCiphers); c++) {
    struct buf msg = {0};
    char err[256];
    int rc = cms_encrypt(&msg, r, ARRAY_LEN(r), kContent, sizeof(kContent) - 1,
                         kCiphers[c].cipher, err, sizeof(err));
    if (rc != CMS_OK) {
      fail_msg("%s: encrypt: %s", kCiphers[c].name, err);
    }
    for (size_t i = 0; i < ARRAY_LEN(fx.many); i++) {
      char label[64];
      snprintf(label, sizeof(label), "%s: recipient %zu", kCiphers[c].name, i);
      expect_plain(&fx.many[i], msg.data, msg.len, kContent,
                   sizeof(kContent) - 1, kCiphers[c].auth, label);
    }
    expect_round_trip(msg.data, msg.len, kCiphers[c].name);
    /* DER: the SET OF RecipientInfo is sorted (X.690 §11.6). */
    struct cms_env env;
    parse_msg(&msg, &env);
    assert_int_equal(env.num_ris, ARRAY_LEN(r));
    for (size_t i = 1; i < env.num_ris; i++) {
      size_t a = CBS_len(&env.ris[i - 1]), b = CBS_len(&env.ris[i]);
      int cmp = memcmp(CBS_data(&env.ris[i - 1]), CBS_data(&env.ris[i]),
                       a < b ? a : b);
      assert_true(cmp < 0 || (cmp == 0 && a <= b));
    }
    buf_free(&msg);
  }
}

static void test_content_sizes(void **state) {
  (void)state;
  static const size_t sizes[] = {0, 1, 15, 16, 17, 4096, 100000};
  uint8_t *big = malloc(100000);
  RAND_bytes(big, 100000);
  for (size_t c = 0; c < ARRAY_LEN(kCiphers); c++) {
    for (size_t s = 0; s < ARRAY_LEN(sizes); s++) {
      char label[64], err[256];
      snprintf(label, sizeof(label), "%s: %zu bytes", kCiphers[c].name,
               sizes[s]);
      struct cms_recipient r = {fx.p256.cert, 0, 0};
      struct buf msg = {0};
      assert_int_equal(cms_encrypt(&msg, &r, 1, big, sizes[s],
                                   kCiphers[c].cipher, err, sizeof(err)),
                       CMS_OK);
      expect_plain(&fx.p256, msg.data, msg.len, big, sizes[s], kCiphers[c].auth,
                   label);
      buf_free(&msg);
    }
  }
  free(big);
}

/* ---- messages made by openssl cms ---- */

static void test_openssl_fixtures(void **state) {
  (void)state;
  const struct {
    const char *file;
    struct party *p;
    int auth;
  } cases[] = {
      {"enveloped-rsa-pkcs1-aes256gcm.der", &fx.f_rsa, 1},
      {"enveloped-rsa-pkcs1-aes128gcm.der", &fx.f_rsa, 1},
      {"enveloped-rsa-pkcs1-aes256cbc.der", &fx.f_rsa, 0},
      {"enveloped-rsa-pkcs1-aes128cbc.der", &fx.f_rsa, 0},
      {"enveloped-rsa-oaep-sha1-aes256cbc.der", &fx.f_rsa, 0},
      {"enveloped-rsa-oaep-sha256-aes256gcm.der", &fx.f_rsa, 1},
      {"enveloped-rsa-keyid-aes256gcm.der", &fx.f_rsa, 1},
      {"enveloped-ec-aes256gcm.der", &fx.f_ec, 1},
      {"enveloped-ec-aes128gcm.der", &fx.f_ec, 1},
      {"enveloped-ec-sha256kdf-aes256cbc.der", &fx.f_ec, 0},
      {"enveloped-ec-keyid-aes128cbc.der", &fx.f_ec, 0},
      {"enveloped-rsa-stream-aes256gcm.ber", &fx.f_rsa, 1},
      {"enveloped-ec-stream-aes256cbc.ber", &fx.f_ec, 0},
      {"enveloped-two-aes256gcm.der", &fx.f_rsa, 1},
      {"enveloped-two-aes256gcm.der", &fx.f_ec, 1},
  };
  size_t want_len;
  uint8_t *want = read_file("enveloped-content.txt", &want_len);
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    size_t len;
    uint8_t *in = read_file(cases[i].file, &len);
    expect_plain(cases[i].p, in, len, want, want_len, cases[i].auth,
                 cases[i].file);
    expect_round_trip(in, len, cases[i].file);
    expect_rc(&fx.f_x25519, in, len, CMS_ERR_NO_RECIPIENT, cases[i].file);
    free(in);
  }
  free(want);
}

/* ---- authAttrs (RFC 5083 §2.2) ---- */

/* build_auth_attrs_msg hand-builds an AuthEnvelopedData for fx.f_rsa
 * (PKCS#1 KTRI) with authAttrs; aad_ok 0 computes the tag without them. */
static void build_auth_attrs_msg(struct buf *out, int aad_ok) {
  static const uint8_t kAttrs[] = {
      /* [1] { SEQUENCE { contentType, SET { id-data } } } */
      0xa1, 0x1a, 0x30, 0x18, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
      0xf7, 0x0d, 0x01, 0x09, 0x03, 0x31, 0x0b, 0x06, 0x09, 0x2a,
      0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01};
  uint8_t cek[32], nonce[12], ct[sizeof(kContent) - 1], tag[16], ek[512];
  uint8_t aad[sizeof(kAttrs)], ri_buf[1024], alg_buf[64], content_buf[128];
  size_t ek_len = sizeof(ek), tag_len;
  RAND_bytes(cek, sizeof(cek));
  RAND_bytes(nonce, sizeof(nonce));
  memcpy(aad, kAttrs, sizeof(aad));
  aad[0] = 0x31;
  EVP_PKEY *pub = X509_get_pubkey(fx.f_rsa.cert);
  EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new(pub, NULL);
  assert_true(EVP_PKEY_encrypt_init(pctx) &&
              EVP_PKEY_encrypt(pctx, ek, &ek_len, cek, sizeof(cek)));
  EVP_AEAD_CTX actx;
  assert_true(
      EVP_AEAD_CTX_init(&actx, EVP_aead_aes_256_gcm(), cek, 32, 16, NULL) &&
      EVP_AEAD_CTX_seal_scatter(&actx, ct, tag, &tag_len, 16, nonce, 12,
                                kContent, sizeof(ct), NULL, 0, aad,
                                aad_ok ? sizeof(aad) : 0));
  CBB ri, seq, alg, params, content;
  assert_true(CBB_init_fixed(&ri, ri_buf, sizeof(ri_buf)) &&
              CBB_add_asn1(&ri, &seq, CBS_ASN1_SEQUENCE) &&
              CBB_add_asn1_uint64(&seq, 0) &&
              cms_add_ias(&seq, fx.f_rsa.cert) &&
              cms_add_alg(&seq, &CMS_OID_RSA, 1) &&
              CBB_add_asn1_octet_string(&seq, ek, ek_len) && CBB_flush(&ri));
  assert_true(CBB_init_fixed(&alg, alg_buf, sizeof(alg_buf)) &&
              CBB_add_asn1(&alg, &seq, CBS_ASN1_SEQUENCE) &&
              cms_add_oid(&seq, &CMS_OID_AES256_GCM) &&
              CBB_add_asn1(&seq, &params, CBS_ASN1_SEQUENCE) &&
              CBB_add_asn1_octet_string(&params, nonce, 12) &&
              CBB_add_asn1_uint64(&params, 16) && CBB_flush(&alg));
  assert_true(CBB_init_fixed(&content, content_buf, sizeof(content_buf)) &&
              CBB_add_asn1(&content, &seq, CBS_ASN1_CONTEXT_SPECIFIC | 0) &&
              CBB_add_bytes(&seq, ct, sizeof(ct)) && CBB_flush(&content));
  struct cms_env env = {.auth = 1, .num_ris = 1};
  CBS_init(&env.ris[0], ri_buf, CBB_len(&ri));
  CBS_init(&env.content_type, CMS_OID_DATA.der, CMS_OID_DATA.len);
  CBS_init(&env.content_alg, alg_buf, CBB_len(&alg));
  CBS_init(&env.content, content_buf, CBB_len(&content));
  CBS_init(&env.attrs, kAttrs, sizeof(kAttrs));
  CBS_init(&env.mac, tag, tag_len);
  encode_msg(&env, out);
  /* fixed CBBs still own their bookkeeping in this BoringSSL */
  CBB_cleanup(&ri);
  CBB_cleanup(&alg);
  CBB_cleanup(&content);
  EVP_AEAD_CTX_cleanup(&actx);
  EVP_PKEY_CTX_free(pctx);
  EVP_PKEY_free(pub);
}

static void test_auth_attrs(void **state) {
  (void)state;
  struct buf msg = {0};
  build_auth_attrs_msg(&msg, 1);
  expect_plain(&fx.f_rsa, msg.data, msg.len, kContent, sizeof(kContent) - 1, 1,
               "authAttrs as AAD");
  expect_round_trip(msg.data, msg.len, "authAttrs");
  build_auth_attrs_msg(&msg, 0);
  expect_rc(&fx.f_rsa, msg.data, msg.len, CMS_ERR_DECRYPT,
            "authAttrs not in the tag");
  /* Adding authAttrs to a message made without them. */
  struct buf plain_msg = {0};
  struct cms_env env;
  static const uint8_t kAttrs[] = {0xa1, 0x0d, 0x30, 0x0b, 0x06,
                                   0x03, 0x2a, 0x03, 0x04, 0x31,
                                   0x04, 0x04, 0x02, 0x68, 0x69};
  encrypt_to(&plain_msg, fx.p256.cert, 0, 0, CMS_AES256_GCM, "attrs");
  parse_msg(&plain_msg, &env);
  CBS_init(&env.attrs, kAttrs, sizeof(kAttrs));
  encode_msg(&env, &msg);
  expect_rc(&fx.p256, msg.data, msg.len, CMS_ERR_DECRYPT, "authAttrs added");
  buf_free(&plain_msg);
  buf_free(&msg);
}

/* ---- EFAIL: every bit ---- */

/* flip_all flips each bit of msg in turn: every variant must fail and
 * leave the output alone. */
static void flip_all(const struct buf *msg, const struct party *p,
                     const char *label) {
  uint8_t *copy = malloc(msg->len);
  size_t counts[8] = {0};
  for (size_t bit = 0; bit < msg->len * 8; bit++) {
    char l[128];
    memcpy(copy, msg->data, msg->len);
    copy[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    snprintf(l, sizeof(l), "%s: bit %zu (byte %zu)", label, bit, bit / 8);
    struct buf plain = {0};
    int auth;
    int rc = decrypt_as(p, copy, msg->len, &plain, &auth, l);
    if (rc == CMS_OK) {
      fail_msg("%s: got ok, want a failure", l);
    }
    counts[-rc]++;
    buf_free(&plain);
  }
  print_message("%s: %zu flips: syntax %zu unsupported %zu limit %zu "
                "no-recipient %zu decrypt %zu key %zu\n",
                label, msg->len * 8, counts[1], counts[2], counts[3], counts[4],
                counts[5], counts[6]);
  free(copy);
}

static void test_efail_bit_flips(void **state) {
  (void)state;
  const struct {
    const char *label;
    struct party *p;
    int ski;
  } cases[] = {
      {"p256 ski", &fx.p256, 1},
      {"x25519 ias", &fx.x25519, 0},
      {"rsa-oaep ias", &fx.rsa, 0},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    struct buf msg = {0};
    encrypt_to(&msg, cases[i].p->cert, 0, cases[i].ski, CMS_AES128_GCM,
               cases[i].label);
    flip_all(&msg, cases[i].p, cases[i].label);
    buf_free(&msg);
  }
  struct buf msg = {0};
  build_auth_attrs_msg(&msg, 1);
  flip_all(&msg, &fx.f_rsa, "rsa-pkcs1 with authAttrs");
  buf_free(&msg);
}

/* ---- keys ---- */

static void test_wrong_keys(void **state) {
  (void)state;
  struct buf msg = {0};
  encrypt_to(&msg, fx.p256.cert, 0, 0, CMS_AES256_GCM, "wrong keys");
  expect_rc(&fx.x25519, msg.data, msg.len, CMS_ERR_NO_RECIPIENT,
            "another party");
  /* Our certificate, another key of the same type. */
  struct party liar = {.key = fx.many[1].key, .cert = fx.p256.cert};
  expect_rc(&liar, msg.data, msg.len, CMS_ERR_DECRYPT, "p256 wrong key");
  struct party wrong_type = {.key = fx.x25519.key, .cert = fx.p256.cert};
  expect_rc(&wrong_type, msg.data, msg.len, CMS_ERR_KEY, "x25519 key, p256");
  /* Several parties: the second one holds the key. */
  struct cms_decrypt_party parties[] = {
      {fx.rsa.key, fx.rsa.cert}, {NULL, NULL}, {fx.p256.key, fx.p256.cert}};
  struct buf plain = {0};
  int auth;
  char err[128];
  assert_int_equal(cms_decrypt(&plain, &auth, &cms_local_signer, parties, 3,
                               msg.data, msg.len, err, sizeof(err)),
                   CMS_OK);
  buf_free(&plain);
  buf_free(&msg);
}

/* Bleichenbacher: a PKCS#1 v1.5 key that does not decrypt fails exactly
 * like a wrong tag, and a later matching RecipientInfo is still tried. */
static void test_pkcs1_implicit_rejection(void **state) {
  (void)state;
  struct buf good = {0}, bad = {0}, both = {0};
  struct cms_env env;
  encrypt_to(&good, fx.rsa.cert, 1, 0, CMS_AES256_GCM, "pkcs1");
  parse_msg(&good, &env);
  struct cms_ri ri;
  assert_int_equal(cms_ri_parse(env.ris[0], &ri), CMS_OK);
  uint8_t ek[CMS_ENV_MAX_KEY_BYTES], ri_buf[CMS_ENV_MAX_KEY_BYTES + 512];
  memcpy(ek, CBS_data(&ri.encrypted_key), CBS_len(&ri.encrypted_key));
  ek[10] ^= 1;
  CBS_init(&ri.encrypted_key, ek, CBS_len(&ri.encrypted_key));
  CBB cbb;
  assert_true(CBB_init_fixed(&cbb, ri_buf, sizeof(ri_buf)) &&
              cms_ri_encode(&cbb, &ri));
  CBS bad_ri, good_ri = env.ris[0];
  CBS_init(&bad_ri, ri_buf, CBB_len(&cbb));
  CBB_cleanup(&cbb);
  env.ris[0] = bad_ri;
  encode_msg(&env, &bad);
  expect_rc(&fx.rsa, bad.data, bad.len, CMS_ERR_DECRYPT, "bad PKCS#1 key");
  struct buf tag = {0};
  buf_append(&tag, good.data, good.len);
  tag.data[tag.len - 1] ^= 1;
  expect_rc(&fx.rsa, tag.data, tag.len, CMS_ERR_DECRYPT, "bad tag");
  /* Both RecipientInfos name us; the first is bad. */
  env.num_ris = 2;
  env.ris[0] = bad_ri;
  env.ris[1] = good_ri;
  encode_msg(&env, &both);
  expect_plain(&fx.rsa, both.data, both.len, kContent, sizeof(kContent) - 1, 1,
               "bad then good");
  /* CMS_ENV_MAX_TRIES bad ones first: the good one is not reached. */
  for (size_t bad_n = CMS_ENV_MAX_TRIES - 1; bad_n <= CMS_ENV_MAX_TRIES;
       bad_n++) {
    char label[64];
    snprintf(label, sizeof(label), "%zu bad then good", bad_n);
    env.num_ris = bad_n + 1;
    for (size_t i = 0; i < bad_n; i++) {
      env.ris[i] = bad_ri;
    }
    env.ris[bad_n] = good_ri;
    encode_msg(&env, &both);
    if (bad_n < CMS_ENV_MAX_TRIES) {
      expect_plain(&fx.rsa, both.data, both.len, kContent, sizeof(kContent) - 1,
                   1, label);
    } else {
      expect_rc(&fx.rsa, both.data, both.len, CMS_ERR_LIMIT, label);
    }
  }
  buf_free(&good);
  buf_free(&bad);
  buf_free(&both);
  buf_free(&tag);
}

/* Unknown RecipientInfo kinds (kekri, pwri, ori) are skipped. */
static void test_unknown_recipient_kinds(void **state) {
  (void)state;
  static const uint8_t kKekri[] = {0xa2, 0x03, 0x02, 0x01, 0x04};
  static const uint8_t kPwri[] = {0xa3, 0x03, 0x02, 0x01, 0x00};
  static const uint8_t kOri[] = {0xa4, 0x04, 0x06, 0x02, 0x2a, 0x03};
  struct buf msg = {0}, out = {0};
  struct cms_env env;
  encrypt_to(&msg, fx.x25519.cert, 0, 1, CMS_AES256_CBC, "kinds");
  parse_msg(&msg, &env);
  env.ris[3] = env.ris[0];
  CBS_init(&env.ris[0], kKekri, sizeof(kKekri));
  CBS_init(&env.ris[1], kPwri, sizeof(kPwri));
  CBS_init(&env.ris[2], kOri, sizeof(kOri));
  env.num_ris = 4;
  encode_msg(&env, &out);
  expect_plain(&fx.x25519, out.data, out.len, kContent, sizeof(kContent) - 1, 0,
               "kekri, pwri, ori, kari");
  expect_round_trip(out.data, out.len, "kekri, pwri, ori, kari");
  env.num_ris = 3;
  encode_msg(&env, &out);
  expect_rc(&fx.x25519, out.data, out.len, CMS_ERR_NO_RECIPIENT,
            "kekri, pwri, ori only");
  buf_free(&msg);
  buf_free(&out);
}

/* ---- bad inputs ---- */

/* A mutation of a good message's parsed form. */
typedef void (*mutate_fn)(struct cms_env *env, CBB *scratch);

static void set_elem(CBS *field, CBB *scratch, const uint8_t *der, size_t len) {
  uint8_t *p;
  assert_true(CBB_add_space(scratch, &p, len));
  memcpy(p, der, len);
  CBS_init(field, p, len);
}

static void m_des_cbc(struct cms_env *env, CBB *scratch) {
  /* des-ede3-cbc with an 8-byte IV */
  static const uint8_t alg[] = {0x30, 0x14, 0x06, 0x08, 0x2a, 0x86, 0x48, 0x86,
                                0xf7, 0x0d, 0x03, 0x07, 0x04, 0x08, 1,    2,
                                3,    4,    5,    6,    7,    8};
  set_elem(&env->content_alg, scratch, alg, sizeof(alg));
}

static void m_cbc_in_auth(struct cms_env *env, CBB *scratch) {
  static const uint8_t alg[] = {0x30, 0x1d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                0x65, 0x03, 0x04, 0x01, 0x2a, 0x04, 0x10, 1,
                                2,    3,    4,    5,    6,    7,    8,    9,
                                10,   11,   12,   13,   14,   15,   16};
  set_elem(&env->content_alg, scratch, alg, sizeof(alg));
}

static void m_no_content(struct cms_env *env, CBB *scratch) {
  (void)scratch;
  CBS_init(&env->content, NULL, 0);
}

static void m_version_1(struct cms_env *env, CBB *scratch) {
  (void)scratch;
  env->version = 1;
}

static void m_content_type(struct cms_env *env, CBB *scratch) {
  set_elem(&env->content_type, scratch, CMS_OID_SIGNED_DATA.der,
           CMS_OID_SIGNED_DATA.len);
}

static void m_short_mac(struct cms_env *env, CBB *scratch) {
  (void)scratch;
  CBS_init(&env->mac, CBS_data(&env->mac), 15);
}

/* set_ri re-encodes RecipientInfo 0 from ri into scratch. */
static void set_ri(struct cms_env *env, CBB *scratch, const struct cms_ri *ri) {
  CBB ri_cbb;
  uint8_t *der;
  size_t len;
  assert_true(CBB_init(&ri_cbb, 0) && cms_ri_encode(&ri_cbb, ri) &&
              CBB_finish(&ri_cbb, &der, &len));
  set_elem(&env->ris[0], scratch, der, len);
  OPENSSL_free(der);
}

static void m_rsa_unknown_kea(struct cms_env *env, CBB *scratch) {
  /* id-RSAES-OAEP with SHA-224: not supported */
  static const uint8_t alg[] = {0x30, 0x1c, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                                0xf7, 0x0d, 0x01, 0x01, 0x07, 0x30, 0x0f, 0xa0,
                                0x0d, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48,
                                0x01, 0x65, 0x03, 0x04, 0x02, 0x04};
  struct cms_ri ri;
  assert_int_equal(cms_ri_parse(env->ris[0], &ri), CMS_OK);
  CBS_init(&ri.key_enc_alg, alg, sizeof(alg));
  set_ri(env, scratch, &ri);
}

static void m_ukm_too_long(struct cms_env *env, CBB *scratch) {
  struct cms_ri ri;
  static uint8_t ukm[CMS_ENV_MAX_UKM + 1];
  assert_int_equal(cms_ri_parse(env->ris[0], &ri), CMS_OK);
  ri.has_ukm = 1;
  CBS_init(&ri.ukm, ukm, sizeof(ukm));
  set_ri(env, scratch, &ri);
}

static void m_static_originator(struct cms_env *env, CBB *scratch) {
  struct cms_ri ri;
  static const uint8_t ski[] = {0x80, 0x02, 0x01, 0x02};
  assert_int_equal(cms_ri_parse(env->ris[0], &ri), CMS_OK);
  CBS_init(&ri.originator, ski, sizeof(ski));
  set_ri(env, scratch, &ri);
}

static void test_bad_structures(void **state) {
  (void)state;
  const struct {
    const char *label;
    mutate_fn fn;
    enum cms_cipher cipher;
    struct party *p;
    int want;
  } cases[] = {
      {"unknown content algorithm (3DES)", m_des_cbc, CMS_AES256_CBC, &fx.rsa,
       CMS_ERR_UNSUPPORTED},
      {"AES-CBC in AuthEnvelopedData", m_cbc_in_auth, CMS_AES256_GCM, &fx.rsa,
       CMS_ERR_UNSUPPORTED},
      {"no encryptedContent (detached)", m_no_content, CMS_AES256_GCM, &fx.rsa,
       CMS_ERR_SYNTAX},
      {"AuthEnvelopedData version 1", m_version_1, CMS_AES256_GCM, &fx.rsa,
       CMS_ERR_UNSUPPORTED},
      {"EnvelopedData version 1", m_version_1, CMS_AES256_CBC, &fx.rsa,
       CMS_ERR_UNSUPPORTED},
      {"content type not id-data", m_content_type, CMS_AES256_GCM, &fx.rsa,
       CMS_ERR_UNSUPPORTED},
      {"mac shorter than ICVlen", m_short_mac, CMS_AES256_GCM, &fx.rsa,
       CMS_ERR_SYNTAX},
      {"OAEP with SHA-224", m_rsa_unknown_kea, CMS_AES256_GCM, &fx.rsa,
       CMS_ERR_UNSUPPORTED},
      {"ukm over the limit", m_ukm_too_long, CMS_AES256_GCM, &fx.p256,
       CMS_ERR_LIMIT},
      {"static-static originator", m_static_originator, CMS_AES256_GCM,
       &fx.p256, CMS_ERR_UNSUPPORTED},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    struct buf msg = {0}, out = {0};
    struct cms_env env;
    /* fixed, so the pointers set_elem hands out stay put */
    static uint8_t scratch_buf[8192];
    CBB scratch;
    encrypt_to(&msg, cases[i].p->cert, 0, 0, cases[i].cipher, cases[i].label);
    parse_msg(&msg, &env);
    assert_true(CBB_init_fixed(&scratch, scratch_buf, sizeof(scratch_buf)));
    cases[i].fn(&env, &scratch);
    encode_msg(&env, &out);
    expect_rc(cases[i].p, out.data, out.len, cases[i].want, cases[i].label);
    CBB_cleanup(&scratch);
    buf_free(&msg);
    buf_free(&out);
  }
}

/* nest wraps inner in depth SEQUENCEs. */
static void nest(struct buf *out, size_t depth) {
  CBB cbb, child[64];
  uint8_t *der;
  size_t len;
  assert_true(depth < ARRAY_LEN(child) && CBB_init(&cbb, 0));
  CBB *cur = &cbb;
  for (size_t i = 0; i < depth; i++) {
    assert_true(CBB_add_asn1(cur, &child[i], CBS_ASN1_SEQUENCE));
    cur = &child[i];
  }
  assert_true(CBB_add_asn1_uint64(cur, 0) && CBB_finish(&cbb, &der, &len));
  buf_append(out, der, len);
  OPENSSL_free(der);
}

/* too_many builds an AuthEnvelopedData with n copies of one KTRI. */
static void too_many(struct buf *out, const struct buf *msg, size_t n) {
  struct cms_env env;
  parse_msg(msg, &env);
  CBB cbb, ci, e0, seq, set;
  uint8_t *der;
  size_t len;
  assert_true(
      CBB_init(&cbb, 0) &&
      cms_content_info_begin(&cbb, &ci, &e0, &CMS_OID_AUTH_ENVELOPED_DATA) &&
      CBB_add_asn1(&e0, &seq, CBS_ASN1_SEQUENCE) &&
      CBB_add_asn1_uint64(&seq, 0) && CBB_add_asn1(&seq, &set, CBS_ASN1_SET));
  for (size_t i = 0; i < n; i++) {
    assert_true(
        CBB_add_bytes(&set, CBS_data(&env.ris[0]), CBS_len(&env.ris[0])));
  }
  assert_true(CBB_finish(&cbb, &der, &len));
  buf_append(out, der, len);
  OPENSSL_free(der);
}

static void test_bad_inputs(void **state) {
  (void)state;
  struct buf good = {0};
  encrypt_to(&good, fx.p256.cert, 0, 0, CMS_AES256_GCM, "bad inputs");
  struct buf trailing = {0}, wrong_tag = {0}, deep = {0}, many = {0},
             many_ok = {0}, signed_ci = {0};
  buf_append(&trailing, good.data, good.len);
  buf_append(&trailing, "\0", 1);
  buf_append(&wrong_tag, good.data, good.len);
  wrong_tag.data[0] = 0x31; /* SET, not SEQUENCE */
  nest(&deep, CMS_MAX_DEPTH + 1);
  too_many(&many, &good, CMS_MAX_RECIPIENTS + 1);
  too_many(&many_ok, &good, 2);
  buf_append(&signed_ci, good.data, good.len);
  /* id-ct-authEnvelopedData (...9.16.1.23) -> ...9.16.1.24: not ours */
  uint8_t *oid =
      memmem(signed_ci.data, signed_ci.len, CMS_OID_AUTH_ENVELOPED_DATA.der,
             CMS_OID_AUTH_ENVELOPED_DATA.len);
  assert_non_null(oid);
  oid[CMS_OID_AUTH_ENVELOPED_DATA.len - 1] = 0x18;
  const struct {
    const char *label;
    const uint8_t *in;
    size_t len;
    int want;
  } cases[] = {
      {"empty", (const uint8_t *)"", 0, CMS_ERR_SYNTAX},
      {"trailing byte", trailing.data, trailing.len, CMS_ERR_SYNTAX},
      {"wrong outer tag", wrong_tag.data, wrong_tag.len, CMS_ERR_SYNTAX},
      {"absurd nesting", deep.data, deep.len, CMS_ERR_LIMIT},
      {"too many recipients", many.data, many.len, CMS_ERR_LIMIT},
      {"other content type", signed_ci.data, signed_ci.len,
       CMS_ERR_UNSUPPORTED},
      {"not even DER", (const uint8_t *)"\x30\x80\x30", 3, CMS_ERR_SYNTAX},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    expect_rc(&fx.p256, cases[i].in, cases[i].len, cases[i].want,
              cases[i].label);
  }
  /* Two RecipientInfos but no content after them: truncated structure. */
  expect_rc(&fx.p256, many_ok.data, many_ok.len, CMS_ERR_SYNTAX,
            "no EncryptedContentInfo");
  /* Every proper prefix fails. */
  for (size_t n = 0; n < good.len; n++) {
    char label[64];
    snprintf(label, sizeof(label), "truncated to %zu of %zu", n, good.len);
    struct buf plain = {0};
    int auth;
    assert_int_not_equal(
        decrypt_as(&fx.p256, good.data, n, &plain, &auth, label), CMS_OK);
    buf_free(&plain);
  }
  /* Over CMS_MAX_INPUT: refused before it is read. */
  uint8_t *huge = calloc(1, (size_t)CMS_MAX_INPUT + 1);
  expect_rc(&fx.p256, huge, (size_t)CMS_MAX_INPUT + 1, CMS_ERR_LIMIT,
            "over CMS_MAX_INPUT");
  free(huge);
  struct buf *all[] = {&good, &trailing, &wrong_tag, &deep,
                       &many, &many_ok,  &signed_ci};
  for (size_t i = 0; i < ARRAY_LEN(all); i++) {
    buf_free(all[i]);
  }
}

/* ---- encryption errors ---- */

/* ---- cms_check_enveloped ---- */

/* Hand-made ContentInfos (tests/unit/crypto/test_smime.c has their
 * base64): a minimal EnvelopedData (one KTRI, AES-256-CBC, 16 bytes of
 * content) and variants. */
static const uint8_t kMinEnv[] = {
    0x30, 0x7f, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07,
    0x03, 0xa0, 0x72, 0x30, 0x70, 0x02, 0x01, 0x00, 0x31, 0x2d, 0x30, 0x2b,
    0x02, 0x01, 0x00, 0x30, 0x05, 0x30, 0x00, 0x02, 0x01, 0x01, 0x30, 0x0d,
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05,
    0x00, 0x04, 0x10, 'k',  'k',  'k',  'k',  'k',  'k',  'k',  'k',  'k',
    'k',  'k',  'k',  'k',  'k',  'k',  'k',  0x30, 0x3c, 0x06, 0x09, 0x2a,
    0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01, 0x30, 0x1d, 0x06, 0x09,
    0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x02, 0x04, 0x10, 'i',
    'i',  'i',  'i',  'i',  'i',  'i',  'i',  'i',  'i',  'i',  'i',  'i',
    'i',  'i',  'i',  0x80, 0x10, 'c',  'c',  'c',  'c',  'c',  'c',  'c',
    'c',  'c',  'c',  'c',  'c',  'c',  'c',  'c',  'c'};
/* the same with encryptedContent [0] of length 0 */
static const uint8_t kEmptyContent[] = {
    0x30, 0x6f, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07,
    0x03, 0xa0, 0x62, 0x30, 0x60, 0x02, 0x01, 0x00, 0x31, 0x2d, 0x30, 0x2b,
    0x02, 0x01, 0x00, 0x30, 0x05, 0x30, 0x00, 0x02, 0x01, 0x01, 0x30, 0x0d,
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05,
    0x00, 0x04, 0x10, 'k',  'k',  'k',  'k',  'k',  'k',  'k',  'k',  'k',
    'k',  'k',  'k',  'k',  'k',  'k',  'k',  0x30, 0x2c, 0x06, 0x09, 0x2a,
    0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01, 0x30, 0x1d, 0x06, 0x09,
    0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x02, 0x04, 0x10, 'i',
    'i',  'i',  'i',  'i',  'i',  'i',  'i',  'i',  'i',  'i',  'i',  'i',
    'i',  'i',  'i',  0x80, 0x00};
/* the same with an empty RecipientInfos SET */
static const uint8_t kNoRecipient[] = {
    0x30, 0x52, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07,
    0x03, 0xa0, 0x45, 0x30, 0x43, 0x02, 0x01, 0x00, 0x31, 0x00, 0x30, 0x3c,
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01, 0x30,
    0x1d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x02,
    0x04, 0x10, 'i',  'i',  'i',  'i',  'i',  'i',  'i',  'i',  'i',  'i',
    'i',  'i',  'i',  'i',  'i',  'i',  0x80, 0x10, 'c',  'c',  'c',  'c',
    'c',  'c',  'c',  'c',  'c',  'c',  'c',  'c',  'c',  'c',  'c',  'c'};
/* the review's trigger: an indefinite-length ContentInfo head naming
 * id-envelopedData, then plaintext */
static const uint8_t kHeadThenPlaintext[] =
    "\x30\x80\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x03"
    "The secret merger plan is: ...";
/* SEQUENCE { id-envelopedData, [0] { SEQUENCE {} } } */
static const uint8_t kEmptyEnv[] = {0x30, 0x0f, 0x06, 0x09, 0x2a, 0x86,
                                    0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07,
                                    0x03, 0xa0, 0x02, 0x30, 0x00};

/* test_check_enveloped: cms_check_enveloped says yes to every real
 * EnvelopedData / AuthEnvelopedData (ours and OpenSSL's, DER and BER) and
 * no to anything that only looks like one. */
static void test_check_enveloped(void **state) {
  (void)state;
  struct buf gcm = {0}, cbc = {0}, ec = {0}, x = {0}, trail = {0}, sig = {0};
  encrypt_to(&gcm, fx.rsa.cert, 0, 0, CMS_AES256_GCM, "check gcm");
  encrypt_to(&cbc, fx.rsa.cert, 1, 1, CMS_AES128_CBC, "check cbc");
  encrypt_to(&ec, fx.p256.cert, 0, 0, CMS_AES256_GCM, "check ec");
  encrypt_to(&x, fx.x25519.cert, 0, 0, CMS_AES128_CBC, "check x25519");
  buf_append(&trail, gcm.data, gcm.len);
  buf_append(&trail, "\x05\x00", 2);
  /* a SignedData ContentInfo is not an enveloped one */
  static const uint8_t signed_ci[] = {0x30, 0x0f, 0x06, 0x09, 0x2a, 0x86,
                                      0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07,
                                      0x02, 0xa0, 0x02, 0x30, 0x00};
  buf_append(&sig, signed_ci, sizeof(signed_ci));
  const struct {
    const char *label;
    const uint8_t *in;
    size_t len;
    int want;
  } cases[] = {
      {"ours, AES-256-GCM to RSA", gcm.data, gcm.len, CMS_OK},
      {"ours, AES-128-CBC to RSA PKCS#1 by SKI", cbc.data, cbc.len, CMS_OK},
      {"ours, GCM to P-256", ec.data, ec.len, CMS_OK},
      {"ours, CBC to X25519", x.data, x.len, CMS_OK},
      {"minimal hand-made EnvelopedData", kMinEnv, sizeof(kMinEnv), CMS_OK},
      {"cut by one byte", gcm.data, gcm.len - 1, CMS_ERR_SYNTAX},
      {"cut in half", gcm.data, gcm.len / 2, CMS_ERR_SYNTAX},
      {"an element after it", trail.data, trail.len, CMS_ERR_SYNTAX},
      {"empty encryptedContent", kEmptyContent, sizeof(kEmptyContent),
       CMS_ERR_SYNTAX},
      {"no RecipientInfo", kNoRecipient, sizeof(kNoRecipient), CMS_ERR_SYNTAX},
      {"ContentInfo head then plaintext (review)", kHeadThenPlaintext,
       sizeof(kHeadThenPlaintext) - 1, CMS_ERR_SYNTAX},
      {"EnvelopedData of an empty SEQUENCE", kEmptyEnv, sizeof(kEmptyEnv),
       CMS_ERR_SYNTAX},
      {"SignedData", sig.data, sig.len, CMS_ERR_UNSUPPORTED},
      {"empty input", (const uint8_t *)"", 0, CMS_ERR_SYNTAX},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    char err[256] = "";
    int rc = cms_check_enveloped(cases[i].in, cases[i].len, err, sizeof(err));
    if (rc != cases[i].want || (rc != CMS_OK && err[0] == '\0')) {
      fail_msg("%s: got %s (%s), want %s", cases[i].label, cms_err_str(rc), err,
               cms_err_str(cases[i].want));
    }
  }
  /* every OpenSSL fixture, BER streaming included */
  static const char *files[] = {
      "enveloped-rsa-pkcs1-aes256gcm.der",
      "enveloped-rsa-oaep-sha1-aes256cbc.der",
      "enveloped-ec-keyid-aes128cbc.der",
      "enveloped-rsa-stream-aes256gcm.ber",
      "enveloped-ec-stream-aes256cbc.ber",
      "enveloped-two-aes256gcm.der",
  };
  for (size_t i = 0; i < ARRAY_LEN(files); i++) {
    size_t len;
    uint8_t *in = read_file(files[i], &len);
    char err[256] = "";
    int rc = cms_check_enveloped(in, len, err, sizeof(err));
    if (rc != CMS_OK) {
      fail_msg("%s: got %s (%s), want ok", files[i], cms_err_str(rc), err);
    }
    free(in);
  }
  buf_free(&gcm);
  buf_free(&cbc);
  buf_free(&ec);
  buf_free(&x);
  buf_free(&trail);
  buf_free(&sig);
}

static void test_encrypt_errors(void **state) {
  (void)state;
  static struct cms_recipient lots[CMS_MAX_RECIPIENTS + 1];
  for (size_t i = 0; i < ARRAY_LEN(lots); i++) {
    lots[i] = (struct cms_recipient){fx.p256.cert, 0, 0};
  }
  struct cms_recipient ok = {fx.p256.cert, 0, 0};
  struct cms_recipient ed = {fx.ed.cert, 0, 0};
  struct cms_recipient noski = {fx.noski.cert, 0, 1};
  struct cms_recipient nocert = {NULL, 0, 0};
  const struct {
    const char *label;
    const struct cms_recipient *r;
    size_t n;
    int cipher;
    int want;
  } cases[] = {
      {"no recipients", &ok, 0, CMS_AES256_GCM, CMS_ERR_KEY},
      {"too many recipients", lots, ARRAY_LEN(lots), CMS_AES256_GCM,
       CMS_ERR_LIMIT},
      {"Ed25519 certificate", &ed, 1, CMS_AES256_GCM, CMS_ERR_KEY},
      {"SKI asked, none in cert", &noski, 1, CMS_AES256_GCM, CMS_ERR_KEY},
      {"no certificate", &nocert, 1, CMS_AES256_GCM, CMS_ERR_KEY},
      {"unknown cipher", &ok, 1, 99, CMS_ERR_UNSUPPORTED},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    struct buf out = {0};
    char err[256] = "";
    buf_append_str(&out, PREFIX);
    int rc = cms_encrypt(&out, cases[i].r, cases[i].n, kContent,
                         sizeof(kContent) - 1, (enum cms_cipher)cases[i].cipher,
                         err, sizeof(err));
    if (rc != cases[i].want || out.len != strlen(PREFIX) || err[0] == 0) {
      fail_msg("%s: got %s (%s) out %zu bytes, want %s and out unchanged",
               cases[i].label, cms_err_str(rc), err, out.len,
               cms_err_str(cases[i].want));
    }
    buf_free(&out);
  }
  /* A mix where the last recipient is bad: nothing is appended. */
  struct cms_recipient mix[] = {ok, {fx.rsa.cert, 0, 0}, ed};
  struct buf out = {0};
  char err[256];
  assert_int_equal(
      cms_encrypt(&out, mix, 3, kContent, 3, CMS_AES128_CBC, err, sizeof(err)),
      CMS_ERR_KEY);
  assert_int_equal(out.len, 0);
  buf_free(&out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trips),
      cmocka_unit_test(test_many_recipients),
      cmocka_unit_test(test_content_sizes),
      cmocka_unit_test(test_openssl_fixtures),
      cmocka_unit_test(test_check_enveloped),
      cmocka_unit_test(test_auth_attrs),
      cmocka_unit_test(test_efail_bit_flips),
      cmocka_unit_test(test_wrong_keys),
      cmocka_unit_test(test_pkcs1_implicit_rejection),
      cmocka_unit_test(test_unknown_recipient_kinds),
      cmocka_unit_test(test_bad_structures),
      cmocka_unit_test(test_bad_inputs),
      cmocka_unit_test(test_encrypt_errors),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
