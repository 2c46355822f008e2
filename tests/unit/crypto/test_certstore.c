/* Unit tests: crypto/certstore — loading a folder of PEM files (several
 * certificates per file, other names ignored, bad files named in the
 * error), the address index (case-insensitive, every SAN address), and the
 * choice of the best certificate: valid now, keyUsage / extKeyUsage that
 * allow encryption, the latest notAfter among several. Certificates are
 * made at start-up with BoringSSL (P-256 and RSA-2048). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rsa.h>

#include "crypto/certstore.h"
#include "tests/unit/crypto/pki.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define NOW 1800000000LL
#define DAY 86400LL

/* A certificate to make: addresses, key, validity, extensions. */
struct cert_spec {
  const char *id;
  const char *san;       /* "email:a@x,email:b@x" */
  int rsa;               /* RSA-2048, else P-256 */
  int64_t from, until;   /* relative to NOW, in days */
  const char *key_usage; /* NULL: no extension */
  const char *eku;       /* NULL: no extension */
  const char *file;      /* which PEM file it goes to */
};

static const struct cert_spec specs[] = {
    {"alice-old", "email:alice@example.org", 0, -300, 30,
     "digitalSignature,keyAgreement", "emailProtection", "a.pem"},
    {"alice-new", "email:Alice@Example.ORG", 0, -10, 300,
     "digitalSignature,keyAgreement", "emailProtection", "a.pem"},
    {"alice-expired", "email:alice@example.org", 0, -800, -400, "keyAgreement",
     NULL, "a.pem"},
    {"alice-future", "email:alice@example.org", 0, 10, 900, "keyAgreement",
     NULL, "b.crt"},
    {"bob-rsa", "email:bob@example.net,email:robert@example.net", 1, -10, 100,
     "digitalSignature,keyEncipherment", "emailProtection", "b.crt"},
    {"carol-sign-only", "email:carol@example.com", 0, -10, 100,
     "digitalSignature", NULL, "c.pem"},
    {"carol-rsa-no-ke", "email:carol@example.com", 1, -10, 100,
     "digitalSignature,keyAgreement", NULL, "c.pem"},
    {"dave-tls-eku", "email:dave@example.com", 0, -10, 100, "keyAgreement",
     "serverAuth", "c.pem"},
    {"erin-no-ext", "email:erin@example.com", 0, -10, 100, NULL, NULL, "c.pem"},
    {"frank-any-eku", "email:frank@example.com", 0, -10, 100, NULL,
     "anyExtendedKeyUsage", "c.pem"},
};

static struct {
  char dir[64];
  X509 *certs[ARRAY_LEN(specs)];
} fx;

static EVP_PKEY *make_rsa(void) {
  RSA *rsa = RSA_new();
  BIGNUM *e = BN_new();
  EVP_PKEY *key = EVP_PKEY_new();
  if (rsa == NULL || e == NULL || key == NULL || !BN_set_word(e, 65537) ||
      !RSA_generate_key_ex(rsa, 2048, e, NULL) ||
      !EVP_PKEY_assign_RSA(key, rsa)) {
    fail_msg("test bug: RSA key");
  }
  BN_free(e);
  return key;
}

/* make_cert makes a self-signed certificate from spec. */
static X509 *make_cert(const struct cert_spec *s, long serial) {
  EVP_PKEY *key = s->rsa ? make_rsa() : make_key();
  X509 *x = X509_new();
  X509_NAME *name = X509_NAME_new();
  X509V3_CTX v3;
  X509_set_version(x, X509_VERSION_3);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const uint8_t *)s->id,
                             -1, -1, 0);
  X509_set_subject_name(x, name);
  X509_set_issuer_name(x, name);
  X509_NAME_free(name);
  ASN1_TIME_set(X509_getm_notBefore(x), (time_t)(NOW + s->from * DAY));
  ASN1_TIME_set(X509_getm_notAfter(x), (time_t)(NOW + s->until * DAY));
  X509_set_pubkey(x, key);
  X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
  add_ext(x, &v3, NID_subject_alt_name, s->san);
  if (s->key_usage != NULL) {
    add_ext(x, &v3, NID_key_usage, s->key_usage);
  }
  if (s->eku != NULL) {
    add_ext(x, &v3, NID_ext_key_usage, s->eku);
  }
  if (!X509_sign(x, key, EVP_sha256())) {
    fail_msg("test bug: X509_sign");
  }
  EVP_PKEY_free(key);
  return x;
}

static const char *path_in(const char *name) {
  static char p[4][160];
  static int slot;
  slot = (slot + 1) % 4;
  snprintf(p[slot], sizeof p[slot], "%s/%s", fx.dir, name);
  return p[slot];
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (f == NULL) {
    fail_msg("test bug: cannot write %s", path);
  }
  fputs(text, f);
  fclose(f);
}

static int group_setup(void **state) {
  snprintf(fx.dir, sizeof fx.dir, "/tmp/test_certstore.XXXXXX");
  if (mkdtemp(fx.dir) == NULL) {
    return -1;
  }
  char sub[128];
  snprintf(sub, sizeof sub, "%s/good", fx.dir);
  mkdir(sub, 0700);
  const char *files[] = {"a.pem", "b.crt", "c.pem"};
  for (size_t i = 0; i < ARRAY_LEN(specs); i++) {
    fx.certs[i] = make_cert(&specs[i], (long)i + 1);
  }
  for (size_t f = 0; f < ARRAY_LEN(files); f++) {
    X509 *chain[ARRAY_LEN(specs) + 1];
    size_t n = 0;
    for (size_t i = 0; i < ARRAY_LEN(specs); i++) {
      if (strcmp(specs[i].file, files[f]) == 0) {
        chain[n++] = fx.certs[i];
      }
    }
    chain[n] = NULL;
    char p[160];
    snprintf(p, sizeof p, "%s/%s", sub, files[f]);
    write_pem(p, chain, NULL);
  }
  /* names the store ignores */
  snprintf(sub, sizeof sub, "%s/good/README", fx.dir);
  write_text(sub, "not a certificate\n");
  snprintf(sub, sizeof sub, "%s/good/.hidden.pem", fx.dir);
  write_text(sub, "garbage\n");
  return 0;
}

static int group_teardown(void **state) {
  char cmd[128];
  for (size_t i = 0; i < ARRAY_LEN(specs); i++) {
    X509_free(fx.certs[i]);
  }
  snprintf(cmd, sizeof cmd, "rm -rf %s", fx.dir);
  return system(cmd) == 0 ? 0 : -1;
}

static const char *id_of(X509 *x) {
  for (size_t i = 0; i < ARRAY_LEN(specs); i++) {
    if (x != NULL && X509_cmp(x, fx.certs[i]) == 0) {
      return specs[i].id;
    }
  }
  return x == NULL ? "(none)" : "(unknown)";
}

struct lookup_case {
  const char *label;
  const char *email;
  int64_t now;
  const char *want; /* spec id, or NULL */
};

static void test_lookup(void **state) {
  char err[256] = "";
  struct certstore *s = certstore_load(path_in("good"), err, sizeof err);
  if (s == NULL) {
    fail_msg("load: %s", err);
  }
  assert_int_equal(certstore_num_certs(s), ARRAY_LEN(specs));
  /* alice, bob, robert, carol, dave, erin, frank */
  assert_int_equal(certstore_num_addresses(s), 7);
  const struct lookup_case cases[] = {
      {"latest notAfter wins", "alice@example.org", NOW, "alice-new"},
      {"case-insensitive", "ALICE@example.ORG", NOW, "alice-new"},
      {"before the new one starts", "alice@example.org", NOW - 20 * DAY,
       "alice-old"},
      {"after both, the future one", "alice@example.org", NOW + 400 * DAY,
       "alice-future"},
      {"RSA keyEncipherment", "bob@example.net", NOW, "bob-rsa"},
      {"second SAN address", "Robert@Example.Net", NOW, "bob-rsa"},
      {"bob expired", "bob@example.net", NOW + 200 * DAY, NULL},
      {"no usable key usage", "carol@example.com", NOW, NULL},
      {"TLS-only extKeyUsage", "dave@example.com", NOW, NULL},
      {"no extensions: usable", "erin@example.com", NOW, "erin-no-ext"},
      {"anyExtendedKeyUsage", "frank@example.com", NOW, "frank-any-eku"},
      {"unknown address", "mallory@example.org", NOW, NULL},
      {"empty address", "", NOW, NULL},
      {"prefix of an address", "alice@example.or", NOW, NULL},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    X509 *got = certstore_get0(s, cases[i].email, cases[i].now);
    const char *got_id = id_of(got);
    const char *want = cases[i].want ? cases[i].want : "(none)";
    if (strcmp(got_id, want) != 0) {
      fail_msg("%s: got %s, want %s", cases[i].label, got_id, want);
    }
  }
  X509 *all[8];
  assert_int_equal(certstore_find(s, "alice@EXAMPLE.org", all, 8), 4);
  assert_int_equal(certstore_find(s, "carol@example.com", all, 1), 2);
  /* shared: another reference keeps it alive */
  certstore_up_ref(s);
  certstore_free(s);
  assert_non_null(certstore_get0(s, "bob@example.net", NOW));
  certstore_free(s);
}

struct load_case {
  const char *label;
  const char *file; /* written into a fresh folder; NULL: none */
  const char *content;
  const char *want_err; /* substring of the error, or NULL: loads */
};

static void test_load_errors(void **state) {
  const struct load_case cases[] = {
      {"empty folder", NULL, NULL, NULL},
      {"not PEM", "x.pem", "hello\n", "x.pem: no certificate"},
      {"bad base64", "y.crt",
       "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
       "y.crt: "},
      {"not a certificate inside", "z.pem",
       "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
       "z.pem: a certificate does not parse"},
      {"other names ignored", "notes.txt", "anything", NULL},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    char dir[128], err[512] = "";
    snprintf(dir, sizeof dir, "%s/case%zu", fx.dir, i);
    mkdir(dir, 0700);
    if (cases[i].file != NULL) {
      char p[200];
      snprintf(p, sizeof p, "%s/%s", dir, cases[i].file);
      write_text(p, cases[i].content);
    }
    struct certstore *s = certstore_load(dir, err, sizeof err);
    if (cases[i].want_err == NULL && s == NULL) {
      fail_msg("%s: load failed: %s", cases[i].label, err);
    }
    if (cases[i].want_err != NULL &&
        (s != NULL || strstr(err, cases[i].want_err) == NULL)) {
      fail_msg("%s: got '%s', want an error with '%s'", cases[i].label, err,
               cases[i].want_err);
    }
    if (s != NULL) {
      assert_int_equal(certstore_num_certs(s), 0);
      assert_null(certstore_get0(s, "alice@example.org", NOW));
    }
    certstore_free(s);
  }
  char err[256] = "";
  assert_null(certstore_load(path_in("missing"), err, sizeof err));
  assert_non_null(strstr(err, "missing"));
}

static void test_from_pem(void **state) {
  BIO *b = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(b, fx.certs[4]);
  const uint8_t *p;
  size_t n;
  BIO_mem_contents(b, &p, &n);
  char err[256] = "";
  struct certstore *s = certstore_from_pem(p, n, "inline", err, sizeof err);
  assert_non_null(s);
  assert_string_equal(id_of(certstore_get0(s, "bob@example.net", NOW)),
                      "bob-rsa");
  certstore_free(s);
  assert_null(
      certstore_from_pem((const uint8_t *)"x", 1, "inline", err, sizeof err));
  assert_non_null(strstr(err, "inline"));
  BIO_free(b);
}

static void test_usable(void **state) {
  for (size_t i = 0; i < ARRAY_LEN(specs); i++) {
    int want = strncmp(specs[i].id, "carol", 5) != 0 &&
               strcmp(specs[i].id, "dave-tls-eku") != 0 && specs[i].from <= 0 &&
               specs[i].until >= 0;
    if (certstore_usable(fx.certs[i], NOW) != want) {
      fail_msg("%s: usable %d, want %d", specs[i].id,
               certstore_usable(fx.certs[i], NOW), want);
    }
  }
}

/* test_usable_bad_time: a validity time X509_cmp_time cannot read (it
 * answers 0, not a comparison) makes the certificate unusable. */
static void test_usable_bad_time(void **state) {
  const struct {
    const char *label;
    int bad_not_before, bad_not_after;
    int want;
  } cases[] = {
      {"control: both readable", 0, 0, 1},
      {"notBefore unreadable", 1, 0, 0},
      {"notAfter unreadable", 0, 1, 0},
      {"both unreadable", 1, 1, 0},
  };
  size_t erin = 8; /* erin-no-ext: usable at NOW */
  assert_string_equal(specs[erin].id, "erin-no-ext");
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    X509 *x = X509_dup(fx.certs[erin]);
    assert_non_null(x);
    if (cases[i].bad_not_before) {
      assert_true(ASN1_STRING_set(X509_getm_notBefore(x), "garbage!", 8));
    }
    if (cases[i].bad_not_after) {
      assert_true(ASN1_STRING_set(X509_getm_notAfter(x), "9912", 4));
    }
    int got = certstore_usable(x, NOW);
    if (got != cases[i].want) {
      fail_msg("%s: usable %d, want %d", cases[i].label, got, cases[i].want);
    }
    X509_free(x);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lookup),
      cmocka_unit_test(test_load_errors),
      cmocka_unit_test(test_from_pem),
      cmocka_unit_test(test_usable),
      cmocka_unit_test(test_usable_bad_time),
  };
  return cmocka_run_group_tests_name("certstore", tests, group_setup,
                                     group_teardown);
}
