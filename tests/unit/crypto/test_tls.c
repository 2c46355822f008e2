/* tests/unit/crypto/test_tls.c — the TLS adapter end to end, in memory.
 *
 * Keys and certificates are made at start-up with BoringSSL (EC P-256) in
 * a mkdtemp folder: a test CA, an intermediate, leaves for
 * mx.example.test (chain with and without the CA), an expired one, one
 * for another name, a wildcard, a self-signed one, and one from a CA the
 * client does not trust. Client and server adapters (and, to force TLS
 * 1.2 or old versions, plain BoringSSL endpoints) are then pumped against
 * each other until quiet. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "crypto/tls.h"
#include "tests/unit/crypto/pki.h"

#define DAY (24L * 60 * 60)

/* ---- certificates ---- */

enum cert_id {
  CERT_CA,         /* the client's trust anchor */
  CERT_INTER,      /* intermediate under CERT_CA */
  CERT_MX,         /* mx.example.test; file: leaf + CA */
  CERT_MX_BARE,    /* the same certificate; file: leaf only */
  CERT_EXPIRED,    /* mx.example.test, expired yesterday; + CA */
  CERT_OTHER,      /* other.example.test */
  CERT_WILD,       /* *.example.test; + CA */
  CERT_SELF,       /* mx.example.test, self-signed */
  CERT_VIA_INTER,  /* mx.example.test under CERT_INTER; file: leaf + inter */
  CERT_ROGUE_CA,   /* a CA the client does not know */
  CERT_ROGUE_LEAF, /* mx.example.test under CERT_ROGUE_CA */
  CERT_CN_ONLY,    /* CN=mx.example.test, no subjectAltName */
  CERT_PARTIAL,    /* m*.example.test and *.mx.example.test; + CA */
  CERT_ED25519,    /* mx.example.test with an Ed25519 key, under CERT_CA */
  NUM_CERTS,
};

struct cert {
  X509 *x509;
  EVP_PKEY *key;
  char cert_path[128];
  char key_path[128];
};

static struct fixture {
  char dir[64];
  struct cert certs[NUM_CERTS];
  char ca_path[128];      /* CERT_CA alone */
  char mismatch_key[128]; /* a key belonging to no certificate */
  struct tls_ctx *server[NUM_CERTS];
  struct tls_ctx *client; /* trusts CERT_CA */
} fx;

static EVP_PKEY *make_ed25519_key(void) {
  EVP_PKEY_CTX *kctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
  EVP_PKEY *key = NULL;
  if (kctx == NULL || !EVP_PKEY_keygen_init(kctx) ||
      !EVP_PKEY_keygen(kctx, &key)) {
    fail_msg("test bug: Ed25519 key generation");
  }
  EVP_PKEY_CTX_free(kctx);
  return key;
}

struct cert_spec {
  const char *cn;
  const char *san;     /* "DNS:..." or NULL */
  enum cert_id issuer; /* itself: self-signed */
  long from_s, to_s;   /* validity relative to now */
  int is_ca;
};

/* make_cert signs a certificate for id's key as spec says. */
static X509 *make_cert(enum cert_id id, const struct cert_spec *spec) {
  static long serial = 1;
  X509 *x = X509_new();
  struct cert *issuer = &fx.certs[spec->issuer];
  X509_set_version(x, X509_VERSION_3);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
  X509_gmtime_adj(X509_getm_notBefore(x), spec->from_s);
  X509_gmtime_adj(X509_getm_notAfter(x), spec->to_s);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                             (const uint8_t *)spec->cn, -1, -1, 0);
  X509 *issuer_x = spec->issuer == id ? x : issuer->x509;
  X509_set_issuer_name(x, X509_get_subject_name(issuer_x));
  X509_set_pubkey(x, fx.certs[id].key);
  X509V3_CTX v3;
  X509V3_set_ctx(&v3, issuer_x, x, NULL, NULL, 0);
  if (spec->is_ca) {
    add_ext(x, &v3, NID_basic_constraints, "critical,CA:TRUE");
    add_ext(x, &v3, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE");
    add_ext(x, &v3, NID_key_usage, "critical,digitalSignature");
    add_ext(x, &v3, NID_ext_key_usage, "serverAuth");
  }
  if (spec->san != NULL) {
    add_ext(x, &v3, NID_subject_alt_name, spec->san);
  }
  if (!X509_sign(x, fx.certs[spec->issuer].key, EVP_sha256())) {
    fail_msg("test bug: signing %s", spec->cn);
  }
  return x;
}

/* make_certs builds every certificate; issuers come first in the table. */
static void make_certs(void) {
  static const struct cert_spec specs[NUM_CERTS] = {
      [CERT_CA] = {"Test CA", NULL, CERT_CA, -DAY, 365 * DAY, 1},
      [CERT_INTER] = {"Test Intermediate", NULL, CERT_CA, -DAY, 300 * DAY, 1},
      [CERT_MX] = {"mx.example.test", "DNS:mx.example.test", CERT_CA, -DAY,
                   30 * DAY, 0},
      [CERT_EXPIRED] = {"mx.example.test", "DNS:mx.example.test", CERT_CA,
                        -30 * DAY, -DAY, 0},
      [CERT_OTHER] = {"other.example.test", "DNS:other.example.test", CERT_CA,
                      -DAY, 30 * DAY, 0},
      [CERT_WILD] = {"*.example.test", "DNS:*.example.test", CERT_CA, -DAY,
                     30 * DAY, 0},
      [CERT_SELF] = {"mx.example.test", "DNS:mx.example.test", CERT_SELF, -DAY,
                     30 * DAY, 0},
      [CERT_VIA_INTER] = {"mx.example.test", "DNS:mx.example.test", CERT_INTER,
                          -DAY, 30 * DAY, 0},
      [CERT_ROGUE_CA] = {"Rogue CA", NULL, CERT_ROGUE_CA, -DAY, 365 * DAY, 1},
      [CERT_ROGUE_LEAF] = {"mx.example.test", "DNS:mx.example.test",
                           CERT_ROGUE_CA, -DAY, 30 * DAY, 0},
      [CERT_CN_ONLY] = {"mx.example.test", NULL, CERT_CA, -DAY, 30 * DAY, 0},
      [CERT_PARTIAL] = {"m*.example.test",
                        "DNS:m*.example.test,DNS:*.mx.example.test", CERT_CA,
                        -DAY, 30 * DAY, 0},
      [CERT_ED25519] = {"mx.example.test", "DNS:mx.example.test", CERT_CA, -DAY,
                        30 * DAY, 0},
  };
  for (int id = 0; id < NUM_CERTS; id++) {
    struct cert *c = &fx.certs[id];
    snprintf(c->cert_path, sizeof(c->cert_path), "%s/cert%d.pem", fx.dir, id);
    snprintf(c->key_path, sizeof(c->key_path), "%s/key%d.pem", fx.dir, id);
    if (id == CERT_MX_BARE) {
      c->key = fx.certs[CERT_MX].key;
      EVP_PKEY_up_ref(c->key);
      c->x509 = fx.certs[CERT_MX].x509;
      X509_up_ref(c->x509);
    } else {
      c->key = id == CERT_ED25519 ? make_ed25519_key() : make_key();
      c->x509 = make_cert((enum cert_id)id, &specs[id]);
    }
    X509 *chain[3] = {c->x509, NULL, NULL};
    if (id == CERT_MX || id == CERT_EXPIRED || id == CERT_WILD ||
        id == CERT_PARTIAL) {
      chain[1] = fx.certs[CERT_CA].x509;
    } else if (id == CERT_VIA_INTER) {
      chain[1] = fx.certs[CERT_INTER].x509;
    }
    write_pem(c->cert_path, chain, NULL);
    write_pem(c->key_path, NULL, c->key);
  }
}

static int group_setup(void **state) {
  snprintf(fx.dir, sizeof(fx.dir), "/tmp/test_tls.XXXXXX");
  if (mkdtemp(fx.dir) == NULL) {
    return -1;
  }
  make_certs();
  snprintf(fx.ca_path, sizeof(fx.ca_path), "%s/ca.pem", fx.dir);
  X509 *ca[] = {fx.certs[CERT_CA].x509, NULL};
  write_pem(fx.ca_path, ca, NULL);
  snprintf(fx.mismatch_key, sizeof(fx.mismatch_key), "%s/stray.pem", fx.dir);
  EVP_PKEY *stray = make_key();
  write_pem(fx.mismatch_key, NULL, stray);
  EVP_PKEY_free(stray);
  char err[256];
  for (int id = 0; id < NUM_CERTS; id++) {
    if (id == CERT_CA || id == CERT_INTER || id == CERT_ROGUE_CA) {
      continue; /* BoringSSL refuses to serve with a keyCertSign-only key */
    }
    struct tls_server_config sc = {.cert_file = fx.certs[id].cert_path,
                                   .key_file = fx.certs[id].key_path};
    fx.server[id] = tls_ctx_new_server(&sc, err, sizeof(err));
    if (fx.server[id] == NULL) {
      fprintf(stderr, "server ctx %d: %s\n", id, err);
      return -1;
    }
  }
  struct tls_client_config cc = {.ca_file = fx.ca_path};
  fx.client = tls_ctx_new_client(&cc, err, sizeof(err));
  return fx.client != NULL ? 0 : -1;
}

static int group_teardown(void **state) {
  for (int id = 0; id < NUM_CERTS; id++) {
    tls_ctx_free(fx.server[id]);
    unlink(fx.certs[id].cert_path);
    unlink(fx.certs[id].key_path);
    X509_free(fx.certs[id].x509);
    EVP_PKEY_free(fx.certs[id].key);
  }
  tls_ctx_free(fx.client);
  unlink(fx.ca_path);
  unlink(fx.mismatch_key);
  rmdir(fx.dir);
  return 0;
}

/* ---- peers: an adapter, or plain BoringSSL over memory BIOs ---- */

struct peer {
  struct tls *t;
  SSL *raw;
  BIO *raw_in, *raw_out;
  struct buf plain;   /* plaintext received */
  enum tls_status st; /* last status (raw: mapped to the same values) */
};

static void peer_adapter(struct peer *p, struct tls *t) {
  memset(p, 0, sizeof(*p));
  assert_non_null(t);
  p->t = t;
}

/* raw_drive runs a plain BoringSSL endpoint over what it was fed. */
static void raw_drive(struct peer *p) {
  if (!SSL_is_init_finished(p->raw)) {
    int r = SSL_do_handshake(p->raw);
    if (r != 1) {
      if (SSL_get_error(p->raw, r) != SSL_ERROR_WANT_READ) {
        p->st = TLS_ERROR;
      }
      ERR_clear_error();
      return;
    }
  }
  uint8_t tmp[16384];
  for (;;) {
    int n = SSL_read(p->raw, tmp, sizeof(tmp));
    if (n > 0) {
      assert_int_equal(buf_append(&p->plain, tmp, (size_t)n), 0);
      continue;
    }
    int e = SSL_get_error(p->raw, n);
    if (e == SSL_ERROR_ZERO_RETURN) {
      p->st = TLS_CLOSED;
    } else if (e != SSL_ERROR_WANT_READ) {
      p->st = TLS_ERROR;
    }
    ERR_clear_error();
    return;
  }
}

static void peer_raw(struct peer *p, SSL_CTX *ctx, int server,
                     SSL_SESSION *resume) {
  memset(p, 0, sizeof(*p));
  p->raw = SSL_new(ctx);
  p->raw_in = BIO_new(BIO_s_mem());
  p->raw_out = BIO_new(BIO_s_mem());
  assert_true(p->raw != NULL && p->raw_in != NULL && p->raw_out != NULL);
  BIO_set_mem_eof_return(p->raw_in, -1);
  SSL_set_bio(p->raw, p->raw_in, p->raw_out);
  if (server) {
    SSL_set_accept_state(p->raw);
  } else {
    SSL_set_connect_state(p->raw);
    SSL_set_tlsext_host_name(p->raw, "mx.example.test");
    if (resume != NULL) {
      SSL_set_session(p->raw, resume);
    }
    raw_drive(p);
  }
}

static void peer_free(struct peer *p) {
  tls_free(p->t);
  SSL_free(p->raw);
  buf_free(&p->plain);
  memset(p, 0, sizeof(*p));
}

static void peer_take(struct peer *p, struct buf *out) {
  if (p->t != NULL) {
    assert_int_equal(tls_take_output(p->t, out), 0);
    return;
  }
  size_t n = BIO_pending(p->raw_out);
  assert_int_equal(buf_reserve(out, n), 0);
  assert_int_equal(BIO_read(p->raw_out, out->data + out->len, (int)n), (int)n);
  out->len += n;
}

static void peer_feed(struct peer *p, const uint8_t *in, size_t len) {
  if (p->t != NULL) {
    p->st = tls_input(p->t, &p->plain, in, len);
    return;
  }
  BIO_write(p->raw_in, in, (int)len);
  raw_drive(p);
}

static int peer_done(const struct peer *p) {
  return p->t != NULL ? tls_handshake_done(p->t) : SSL_is_init_finished(p->raw);
}

static void peer_write(struct peer *p, const void *data, size_t len) {
  if (p->t != NULL) {
    assert_int_equal(tls_write(p->t, data, len), 0);
    return;
  }
  assert_true(SSL_is_init_finished(p->raw));
  assert_int_equal(SSL_write(p->raw, data, (int)len), (int)len);
}

/* pump moves ciphertext both ways, `step` bytes per tls_input (0: all at
 * once), until neither side has anything to send. */
static void pump_step(struct peer *a, struct peer *b, size_t step) {
  struct buf wire = {0};
  for (int round = 0; round < 10000; round++) {
    size_t moved = 0;
    struct peer *from[2] = {a, b};
    struct peer *to[2] = {b, a};
    for (int dir = 0; dir < 2; dir++) {
      buf_reset(&wire);
      peer_take(from[dir], &wire);
      moved += wire.len;
      size_t n = step != 0 ? step : wire.len;
      for (size_t off = 0; off < wire.len; off += n) {
        size_t len = wire.len - off < n ? wire.len - off : n;
        peer_feed(to[dir], wire.data + off, len);
      }
    }
    if (moved == 0) {
      break;
    }
  }
  buf_free(&wire);
}

static void pump(struct peer *a, struct peer *b) {
  pump_step(a, b, 0);
}

static struct tls *client_for(struct tls_ctx *ctx, const char *name,
                              const char *session_key) {
  struct tls_client_params p = {.sni = name, .session_key = session_key};
  if (name != NULL) {
    p.names[0] = name;
    p.num_names = 1;
  }
  return tls_new_client(ctx, &p);
}

/* connect_pair handshakes a fresh adapter pair and checks it finished. */
static void connect_pair(struct peer *c, struct peer *s, struct tls_ctx *cctx,
                         struct tls_ctx *sctx, const char *session_key) {
  peer_adapter(c, client_for(cctx, "mx.example.test", session_key));
  peer_adapter(s, tls_new_server(sctx));
  pump(c, s);
  if (!peer_done(c) || !peer_done(s)) {
    fail_msg("handshake: client %d (%s) server %d (%s)", peer_done(c),
             tls_error(c->t), peer_done(s), tls_error(s->t));
  }
}

static SSL_CTX *raw_ctx(int server, uint16_t min, uint16_t max,
                        const char *ciphers) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_method());
  assert_non_null(ctx);
  SSL_CTX_set_min_proto_version(ctx, min);
  SSL_CTX_set_max_proto_version(ctx, max);
  if (ciphers != NULL) {
    assert_true(SSL_CTX_set_strict_cipher_list(ctx, ciphers));
  }
  if (server) {
    assert_true(
        SSL_CTX_use_certificate_chain_file(ctx, fx.certs[CERT_MX].cert_path));
    assert_true(SSL_CTX_use_PrivateKey_file(ctx, fx.certs[CERT_MX].key_path,
                                            SSL_FILETYPE_PEM));
  }
  return ctx;
}

/* ---- contexts ---- */

struct ctx_case {
  const char *label;
  int server;
  const char *cert, *key, *ca, *min_version;
  const char *want; /* substring of the error; NULL: success */
};

static void test_ctx_errors(void **state) {
  char missing[160];
  snprintf(missing, sizeof(missing), "%s/missing.pem", fx.dir);
  const char *mx = fx.certs[CERT_MX].cert_path;
  const char *mx_key = fx.certs[CERT_MX].key_path;
  const struct ctx_case cases[] = {
      {"server ok", 1, mx, mx_key, NULL, NULL, NULL},
      {"server min 1.3", 1, mx, mx_key, NULL, "1.3", NULL},
      {"missing cert file", 1, missing, mx_key, NULL, NULL, missing},
      {"missing cert says why", 1, missing, mx_key, NULL, NULL, "No such file"},
      {"missing key file", 1, mx, missing, NULL, NULL, missing},
      {"missing key says why", 1, mx, missing, NULL, NULL, "No such file"},
      {"key for another cert", 1, mx, fx.mismatch_key, NULL, NULL,
       "does not match"},
      {"key file as cert", 1, mx_key, mx_key, NULL, NULL,
       "no usable certificate (PEM routines: NO_START_LINE)"},
      /* BoringSSL will not sign handshakes with a keyCertSign-only key. */
      {"CA certificate as server", 1, fx.certs[CERT_CA].cert_path,
       fx.certs[CERT_CA].key_path, NULL, NULL, "KEY_USAGE_BIT_INCORRECT"},
      {"cert file as key", 1, mx, fx.ca_path, NULL, NULL, "no private key"},
      {"bad min_version", 1, mx, mx_key, NULL, "1.1", "min_version 1.1"},
      {"no cert configured", 1, NULL, mx_key, NULL, NULL, "required"},
      {"client ok", 0, NULL, NULL, fx.ca_path, NULL, NULL},
      {"client without CA", 0, NULL, NULL, NULL, "1.3", NULL},
      {"client missing CA", 0, NULL, NULL, missing, NULL, missing},
      {"client CA file without certs", 0, NULL, NULL, mx_key, NULL,
       "no CA certificates"},
      {"client bad min_version", 0, NULL, NULL, NULL, "tls1", "min_version"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const struct ctx_case *tc = &cases[i];
    char err[256] = "";
    struct tls_ctx *ctx;
    if (tc->server) {
      struct tls_server_config sc = {tc->cert, tc->key, tc->min_version};
      ctx = tls_ctx_new_server(&sc, err, sizeof(err));
    } else {
      struct tls_client_config cc = {tc->ca, tc->min_version};
      ctx = tls_ctx_new_client(&cc, err, sizeof(err));
    }
    if (tc->want == NULL && ctx == NULL) {
      fail_msg("%s: got error \"%s\", want a context", tc->label, err);
    }
    if (tc->want != NULL && (ctx != NULL || strstr(err, tc->want) == NULL)) {
      fail_msg("%s: got ctx %p error \"%s\", want NULL and \"%s\"", tc->label,
               (void *)ctx, err, tc->want);
    }
    if (tc->want != NULL && strchr(err, '\n') != NULL) {
      fail_msg("%s: error is not one line: \"%s\"", tc->label, err);
    }
    tls_ctx_free(ctx);
  }
}

static void test_ctx_not_after(void **state) {
  int64_t got = tls_ctx_cert_not_after(fx.server[CERT_MX]);
  int64_t want = (int64_t)time(NULL) + 30 * DAY;
  if (got < want - 120 || got > want + 120) {
    fail_msg("not_after %lld, want about %lld", (long long)got,
             (long long)want);
  }
  assert_int_equal(tls_ctx_cert_not_after(fx.client), 0);
}

/* The context stays alive while sessions hold it. */
static void test_ctx_refcount(void **state) {
  struct tls_server_config sc = {.cert_file = fx.certs[CERT_MX].cert_path,
                                 .key_file = fx.certs[CERT_MX].key_path};
  char err[256];
  struct tls_ctx *sctx = tls_ctx_new_server(&sc, err, sizeof(err));
  assert_non_null(sctx);
  struct peer c, s;
  peer_adapter(&c, client_for(fx.client, "mx.example.test", NULL));
  peer_adapter(&s, tls_new_server(sctx));
  tls_ctx_up_ref(sctx);
  tls_ctx_free(sctx);
  tls_ctx_free(sctx); /* the session's reference is the last one */
  pump(&c, &s);
  assert_true(tls_handshake_done(s.t));
  peer_free(&c);
  peer_free(&s);
  tls_ctx_free(NULL);
}

/* ---- handshakes ---- */

enum side { ADAPTER, RAW };

struct version_case {
  const char *label;
  enum side client, server;
  const char *client_min, *server_min; /* adapter side */
  uint16_t raw_min, raw_max;           /* raw side */
  const char *raw_ciphers;
  const char *want; /* version, or NULL: the adapter fails */
};

static struct tls_ctx *ctx_with_min(int server, const char *min) {
  char err[256];
  struct tls_ctx *ctx;
  if (server) {
    struct tls_server_config sc = {fx.certs[CERT_MX].cert_path,
                                   fx.certs[CERT_MX].key_path, min};
    ctx = tls_ctx_new_server(&sc, err, sizeof(err));
  } else {
    struct tls_client_config cc = {fx.ca_path, min};
    ctx = tls_ctx_new_client(&cc, err, sizeof(err));
  }
  if (ctx == NULL) {
    fail_msg("test bug: %s", err);
  }
  return ctx;
}

/* check_suite: TLS 1.2 must have ECDHE and an AEAD; 1.3 suites all do. */
static void check_suite(const char *label, struct tls *t) {
  const char *cipher = tls_cipher(t);
  int bits = tls_cipher_bits(t);
  int aead =
      strstr(cipher, "GCM") != NULL || strstr(cipher, "CHACHA20") != NULL;
  int ecdhe = strncmp(cipher, "TLS_ECDHE_", 10) == 0 ||
              strcmp(tls_version(t), "TLSv1.3") == 0;
  if (!aead || !ecdhe || bits < 128) {
    fail_msg("%s: cipher %s bits %d, want ECDHE+AEAD >= 128", label, cipher,
             bits);
  }
}

static void run_version_case(const struct version_case *tc) {
  struct tls_ctx *cctx = ctx_with_min(0, tc->client_min);
  struct tls_ctx *sctx = ctx_with_min(1, tc->server_min);
  SSL_CTX *raw =
      raw_ctx(tc->server == RAW, tc->raw_min, tc->raw_max, tc->raw_ciphers);
  struct peer c, s;
  if (tc->client == ADAPTER) {
    peer_adapter(&c, client_for(cctx, "mx.example.test", NULL));
  } else {
    peer_raw(&c, raw, 0, NULL);
  }
  if (tc->server == ADAPTER) {
    peer_adapter(&s, tls_new_server(sctx));
  } else {
    peer_raw(&s, raw, 1, NULL);
  }
  pump(&c, &s);
  struct peer *ad = tc->client == ADAPTER ? &c : &s;
  if (tc->want == NULL) {
    if (ad->st != TLS_ERROR || tls_error(ad->t)[0] == '\0') {
      fail_msg("%s: status %d error \"%s\", want TLS_ERROR and a reason",
               tc->label, ad->st, tls_error(ad->t));
    }
  } else if (!peer_done(&c) || !peer_done(&s) ||
             strcmp(tls_version(ad->t), tc->want) != 0) {
    fail_msg("%s: done %d/%d version \"%s\" error \"%s\", want %s", tc->label,
             peer_done(&c), peer_done(&s), tls_version(ad->t), tls_error(ad->t),
             tc->want);
  } else {
    check_suite(tc->label, ad->t);
  }
  peer_free(&c);
  peer_free(&s);
  SSL_CTX_free(raw);
  tls_ctx_free(cctx);
  tls_ctx_free(sctx);
}

static void test_versions(void **state) {
  static const struct version_case cases[] = {
      {"adapters default", ADAPTER, ADAPTER, NULL, NULL, 0, 0, NULL, "TLSv1.3"},
      {"server min 1.3", ADAPTER, ADAPTER, NULL, "1.3", 0, 0, NULL, "TLSv1.3"},
      {"client min 1.3", ADAPTER, ADAPTER, "1.3", NULL, 0, 0, NULL, "TLSv1.3"},
      {"raw 1.2 client, adapter server", RAW, ADAPTER, NULL, NULL, TLS1_VERSION,
       TLS1_2_VERSION, NULL, "TLSv1.2"},
      {"adapter client, raw 1.2 server", ADAPTER, RAW, NULL, NULL, TLS1_VERSION,
       TLS1_2_VERSION, NULL, "TLSv1.2"},
      {"raw 1.2 chacha client", RAW, ADAPTER, NULL, NULL, TLS1_2_VERSION,
       TLS1_2_VERSION, "ECDHE-ECDSA-CHACHA20-POLY1305", "TLSv1.2"},
      {"raw 1.2 aes256 server", ADAPTER, RAW, NULL, NULL, TLS1_2_VERSION,
       TLS1_2_VERSION, "ECDHE-ECDSA-AES256-GCM-SHA384", "TLSv1.2"},
      {"raw 1.3 client", RAW, ADAPTER, NULL, NULL, TLS1_3_VERSION,
       TLS1_3_VERSION, NULL, "TLSv1.3"},
      {"raw 1.1 client refused", RAW, ADAPTER, NULL, NULL, TLS1_VERSION,
       TLS1_1_VERSION, NULL, NULL},
      {"raw 1.1 server refused", ADAPTER, RAW, NULL, NULL, TLS1_VERSION,
       TLS1_1_VERSION, NULL, NULL},
      {"raw 1.2 client vs server min 1.3", RAW, ADAPTER, NULL, "1.3",
       TLS1_2_VERSION, TLS1_2_VERSION, NULL, NULL},
      {"raw 1.2 server vs client min 1.3", ADAPTER, RAW, "1.3", NULL,
       TLS1_2_VERSION, TLS1_2_VERSION, NULL, NULL},
      {"raw CBC-only client refused", RAW, ADAPTER, NULL, NULL, TLS1_2_VERSION,
       TLS1_2_VERSION, "ECDHE-ECDSA-AES128-SHA", NULL},
      {"raw CBC-only server refused", ADAPTER, RAW, NULL, NULL, TLS1_2_VERSION,
       TLS1_2_VERSION, "ECDHE-ECDSA-AES128-SHA", NULL},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    run_version_case(&cases[i]);
  }
}

/* Getters before and after a handshake. */
static void test_getters(void **state) {
  struct peer c, s;
  peer_adapter(&c, client_for(fx.client, "mx.example.test", NULL));
  peer_adapter(&s, tls_new_server(fx.server[CERT_MX]));
  struct tls *all[] = {c.t, s.t};
  for (int i = 0; i < 2; i++) {
    assert_int_equal(tls_handshake_done(all[i]), 0);
    assert_string_equal(tls_version(all[i]), "");
    assert_string_equal(tls_cipher(all[i]), "");
    assert_int_equal(tls_cipher_bits(all[i]), 0);
    assert_int_equal(tls_session_reused(all[i]), 0);
    assert_null(tls_sni(all[i]));
    assert_int_equal(tls_verify(all[i]), TLS_VERIFY_NONE);
    assert_string_equal(tls_verify_error(all[i]), "");
    assert_string_equal(tls_peer_cn(all[i]), "");
    assert_string_equal(tls_error(all[i]), "");
  }
  pump(&c, &s);
  assert_true(tls_handshake_done(c.t) && tls_handshake_done(s.t));
  assert_string_equal(tls_version(c.t), "TLSv1.3");
  assert_string_equal(tls_cipher(c.t), tls_cipher(s.t));
  assert_true(strncmp(tls_cipher(c.t), "TLS_", 4) == 0);
  assert_string_equal(tls_peer_cn(c.t), "mx.example.test");
  assert_string_equal(tls_peer_cn(s.t), ""); /* no client certificates */
  assert_int_equal(tls_verify(c.t), TLS_VERIFY_OK);
  assert_int_equal(tls_verify(s.t), TLS_VERIFY_NONE);
  assert_string_equal(tls_sni(s.t), "mx.example.test");
  assert_null(tls_sni(c.t));
  peer_free(&c);
  peer_free(&s);
}

/* ---- data ---- */

static void fill_random(struct buf *b, size_t len) {
  buf_reset(b);
  assert_int_equal(buf_reserve(b, len), 0);
  RAND_bytes(b->data, len);
  b->len = len;
}

static void expect_plain(const char *label, const struct buf *got,
                         const uint8_t *want, size_t want_len) {
  if (got->len != want_len || memcmp(got->data, want, want_len) != 0) {
    fail_msg("%s: got %zu plaintext bytes, want %zu (or contents differ)",
             label, got->len, want_len);
  }
}

struct data_case {
  const char *label;
  size_t early, late; /* bytes written before / after the handshake */
  size_t step;        /* bytes per tls_input; 0: all at once */
  int raw12_client;   /* the client is plain BoringSSL at TLS 1.2 */
};

static void run_data_case(const struct data_case *tc) {
  struct peer c, s;
  SSL_CTX *raw = NULL;
  if (tc->raw12_client) {
    raw = raw_ctx(0, TLS1_2_VERSION, TLS1_2_VERSION, NULL);
    peer_raw(&c, raw, 0, NULL);
  } else {
    peer_adapter(&c, client_for(fx.client, "mx.example.test", NULL));
  }
  peer_adapter(&s, tls_new_server(fx.server[CERT_MX]));
  struct buf up = {0}, down = {0};
  fill_random(&up, tc->early + tc->late);
  fill_random(&down, tc->early + tc->late);
  if (tc->early > 0) {
    if (!tc->raw12_client) {
      peer_write(&c, up.data, tc->early);
    }
    peer_write(&s, down.data, tc->early);
  }
  pump_step(&c, &s, tc->step);
  if (!peer_done(&c) || !peer_done(&s)) {
    fail_msg("%s: handshake did not finish (%s)", tc->label, tls_error(s.t));
  }
  if (tc->raw12_client && tc->early > 0) {
    peer_write(&c, up.data, tc->early); /* plain BoringSSL cannot queue */
  }
  if (tc->late > 0) {
    peer_write(&c, up.data + tc->early, tc->late);
    peer_write(&s, down.data + tc->early, tc->late);
  }
  pump_step(&c, &s, tc->step);
  assert_int_equal(c.st, TLS_OK);
  assert_int_equal(s.st, TLS_OK);
  expect_plain(tc->label, &s.plain, up.data, up.len);
  expect_plain(tc->label, &c.plain, down.data, down.len);
  buf_free(&up);
  buf_free(&down);
  peer_free(&c);
  peer_free(&s);
  SSL_CTX_free(raw);
}

static void test_data(void **state) {
  static const struct data_case cases[] = {
      {"small after handshake", 0, 100, 0, 0},
      {"before handshake", 12, 0, 0, 0},
      {"before and after", 5, 7, 0, 0},
      {"300 KiB after", 0, 300 * 1024, 0, 0},
      {"200 KiB before, 100 KiB after", 200 * 1024, 100 * 1024, 0, 0},
      {"one byte at a time", 10, 20000, 1, 0},
      {"odd split 7", 100, 70000, 7, 0},
      {"TLS 1.2 client", 0, 100 * 1024, 0, 1},
      {"TLS 1.2 early server data", 30, 30, 0, 1},
      {"TLS 1.2 one byte at a time", 0, 5000, 1, 1},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    run_data_case(&cases[i]);
  }
}

/* The whole TLS_MAX_PENDING may wait for the handshake; one byte more
 * fails, and the failure sticks. */
static void test_pending_limit(void **state) {
  struct buf big = {0};
  fill_random(&big, TLS_MAX_PENDING);
  struct peer c, s;
  peer_adapter(&c, client_for(fx.client, "mx.example.test", NULL));
  peer_adapter(&s, tls_new_server(fx.server[CERT_MX]));
  assert_int_equal(tls_write(c.t, big.data, big.len - 1), 0);
  assert_int_equal(tls_write(c.t, big.data + big.len - 1, 1), 0);
  pump(&c, &s);
  expect_plain("full queue", &s.plain, big.data, big.len);
  peer_free(&c);
  peer_free(&s);

  peer_adapter(&c, client_for(fx.client, "mx.example.test", NULL));
  assert_int_equal(tls_write(c.t, big.data, big.len), 0);
  assert_int_equal(tls_write(c.t, (const uint8_t *)"x", 1), -1);
  assert_true(tls_error(c.t)[0] != '\0');
  assert_int_equal(tls_write(c.t, (const uint8_t *)"", 0), -1);
  struct buf plain = {0};
  assert_int_equal(tls_input(c.t, &plain, NULL, 0), TLS_ERROR);
  peer_free(&c);
  buf_free(&big);
}

/* ---- close_notify ---- */

static void test_close(void **state) {
  struct peer c, s;
  connect_pair(&c, &s, fx.client, fx.server[CERT_MX], NULL);
  peer_write(&c, "QUIT\r\n", 6);
  tls_close(c.t);
  tls_close(c.t); /* twice is harmless */
  assert_int_equal(tls_write(c.t, (const uint8_t *)"more", 4), -1);
  pump(&c, &s);
  assert_int_equal(s.st, TLS_CLOSED);
  expect_plain("data before close_notify", &s.plain,
               (const uint8_t *)"QUIT\r\n", 6);
  assert_int_equal(tls_input(s.t, &s.plain, (const uint8_t *)"junk", 4),
                   TLS_CLOSED);
  /* The server answers in kind; the client sees the end too. */
  peer_write(&s, "221 bye\r\n", 9);
  tls_close(s.t);
  pump(&c, &s);
  assert_int_equal(c.st, TLS_CLOSED);
  expect_plain("reply before close_notify", &c.plain,
               (const uint8_t *)"221 bye\r\n", 9);
  peer_free(&c);
  peer_free(&s);

  /* Closed before the handshake: queued data, then close_notify. */
  peer_adapter(&c, client_for(fx.client, "mx.example.test", NULL));
  peer_adapter(&s, tls_new_server(fx.server[CERT_MX]));
  peer_write(&c, "EHLO x\r\n", 8);
  tls_close(c.t);
  assert_int_equal(tls_write(c.t, (const uint8_t *)"late", 4), -1);
  pump(&c, &s);
  assert_int_equal(s.st, TLS_CLOSED);
  expect_plain("early data then close", &s.plain, (const uint8_t *)"EHLO x\r\n",
               8);
  peer_free(&c);
  peer_free(&s);
}

/* ---- garbage ---- */

struct garbage_case {
  const char *label;
  int to_server; /* else to a client that sent its ClientHello */
  const char *bytes;
  size_t len;
  const char *want_err; /* substring of tls_error() */
  int want_alert;       /* BoringSSL answers an HTTP request with none */
};

static void test_garbage(void **state) {
  static const struct garbage_case cases[] = {
      {"HTTP to server", 1, "GET / HTTP/1.0\r\n\r\n", 18, "HTTP_REQUEST", 0},
      {"SMTP to server", 1, "EHLO example.com\r\n", 18, "WRONG_VERSION_NUMBER",
       1},
      {"oversized record", 1, "\x16\x03\x01\xff\xff", 5,
       "ENCRYPTED_LENGTH_TOO_LONG", 1},
      {"alert record garbage", 1, "\x15\x03\x03\x00\x02\xff\xff", 7,
       "UNKNOWN_ALERT_TYPE", 1},
      {"zeros", 1, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16,
       "WRONG_VERSION_NUMBER", 1},
      {"SMTP reply to client", 0, "220 mx.example.test ESMTP\r\n", 27,
       "WRONG_VERSION_NUMBER", 1},
      {"bad handshake to client", 0, "\x16\x03\x03\x00\x04\x02\x00\x00\x00", 9,
       "DECODE_ERROR", 1},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const struct garbage_case *tc = &cases[i];
    struct tls *t = tc->to_server
                        ? tls_new_server(fx.server[CERT_MX])
                        : client_for(fx.client, "mx.example.test", NULL);
    assert_non_null(t);
    struct buf plain = {0}, out = {0};
    assert_int_equal(tls_take_output(t, &out), 0); /* the ClientHello */
    buf_reset(&out);
    enum tls_status st =
        tls_input(t, &plain, (const uint8_t *)tc->bytes, tc->len);
    assert_int_equal(tls_take_output(t, &out), 0);
    if (st != TLS_ERROR || strstr(tls_error(t), tc->want_err) == NULL ||
        plain.len != 0 || (out.len > 0) != tc->want_alert) {
      fail_msg("%s: status %d error \"%s\" plain %zu output %zu, want "
               "TLS_ERROR \"%s\" alert %d",
               tc->label, st, tls_error(t), plain.len, out.len, tc->want_err,
               tc->want_alert);
    }
    /* The failure sticks. */
    assert_int_equal(tls_input(t, &plain, (const uint8_t *)"x", 1), TLS_ERROR);
    assert_int_equal(tls_write(t, (const uint8_t *)"x", 1), -1);
    tls_close(t);
    buf_free(&plain);
    buf_free(&out);
    tls_free(t);
  }
}

/* A record altered after the handshake fails authentication. */
static void test_tampered_record(void **state) {
  struct peer c, s;
  connect_pair(&c, &s, fx.client, fx.server[CERT_MX], NULL);
  peer_write(&c, "MAIL FROM:<a@example.test>\r\n", 28);
  struct buf wire = {0};
  peer_take(&c, &wire);
  assert_true(wire.len > 5);
  wire.data[wire.len - 1] ^= 0x01;
  peer_feed(&s, wire.data, wire.len);
  assert_int_equal(s.st, TLS_ERROR);
  assert_int_equal(s.plain.len, 0);
  assert_non_null(strstr(tls_error(s.t), "BAD_DECRYPT"));
  buf_reset(&wire);
  peer_take(&s, &wire);
  assert_true(wire.len > 0); /* the alert */
  buf_free(&wire);
  peer_free(&c);
  peer_free(&s);
}

/* ---- SNI ---- */

struct sni_case {
  const char *label;
  const char *sni;
  const char *want; /* what the server reports, or NULL */
};

static void test_sni(void **state) {
  static const struct sni_case cases[] = {
      {"host name", "mx.example.test", "mx.example.test"},
      {"trailing dot dropped", "mx.example.test.", "mx.example.test"},
      {"none", NULL, NULL},
      {"empty", "", NULL},
      {"IPv4 literal", "192.0.2.1", NULL},
      {"IPv6 literal", "2001:db8::1", NULL},
      {"bracketed IPv6", "[2001:db8::1]", NULL},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const struct sni_case *tc = &cases[i];
    struct tls_client_params p = {
        .sni = tc->sni, .names = {"mx.example.test"}, .num_names = 1};
    struct peer c, s;
    peer_adapter(&c, tls_new_client(fx.client, &p));
    peer_adapter(&s, tls_new_server(fx.server[CERT_MX]));
    pump(&c, &s);
    const char *got = tls_sni(s.t);
    if (!tls_handshake_done(s.t) ||
        (tc->want == NULL ? got != NULL
                          : got == NULL || strcmp(got, tc->want) != 0)) {
      fail_msg("%s: server saw %s, want %s", tc->label, got ? got : "(none)",
               tc->want ? tc->want : "(none)");
    }
    /* Without SNI the name check still runs on the certificate. */
    assert_int_equal(tls_verify(c.t), TLS_VERIFY_OK);
    peer_free(&c);
    peer_free(&s);
  }
}

/* ---- verification ---- */

struct tlsa_spec {
  uint8_t usage, selector, mtype;
  enum cert_id of; /* whose certificate the data is made from */
  int corrupt;     /* flip a bit of the data */
  int shorten;     /* drop the last byte (a malformed record) */
};

#define TLSA(usage, selector, mtype, of)                                       \
  { usage, selector, mtype, of, 0, 0 }

struct verify_case {
  const char *label;
  enum cert_id server;
  const char *names[3]; /* NULL-terminated */
  struct tlsa_spec tlsa[3];
  size_t num_tlsa;
  enum tls_verify_result want;
  const char *want_err; /* substring; NULL: "" */
};

/* tlsa_data makes a record's data from a certificate, as a DNS operator
 * would publish it. */
static size_t tlsa_data(const struct tlsa_spec *spec, uint8_t *out,
                        size_t out_len) {
  uint8_t *der = NULL;
  X509 *x = fx.certs[spec->of].x509;
  int len = spec->selector == 0
                ? i2d_X509(x, &der)
                : i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der);
  assert_true(len > 0 && (size_t)len <= out_len);
  size_t n = (size_t)len;
  if (spec->mtype == 1) {
    SHA256(der, n, out);
    n = SHA256_DIGEST_LENGTH;
  } else if (spec->mtype == 2) {
    SHA512(der, n, out);
    n = SHA512_DIGEST_LENGTH;
  } else {
    memcpy(out, der, n);
  }
  OPENSSL_free(der);
  if (spec->corrupt) {
    out[n / 2] ^= 0x40;
  }
  return spec->shorten ? n - 1 : n;
}

static void run_verify_case(const struct verify_case *tc,
                            struct tls_ctx *client) {
  static uint8_t data[3][4096];
  struct tls_tlsa tlsa[3];
  struct tls_client_params p = {.sni = "mx.example.test"};
  for (; p.num_names < 3 && tc->names[p.num_names] != NULL; p.num_names++) {
    p.names[p.num_names] = tc->names[p.num_names];
  }
  for (size_t i = 0; i < tc->num_tlsa; i++) {
    tlsa[i] = (struct tls_tlsa){tc->tlsa[i].usage, tc->tlsa[i].selector,
                                tc->tlsa[i].mtype, data[i],
                                tlsa_data(&tc->tlsa[i], data[i], 4096)};
  }
  p.tlsa = tlsa;
  p.num_tlsa = tc->num_tlsa;
  struct peer c, s;
  peer_adapter(&c, tls_new_client(client, &p));
  memset(data, 0, sizeof(data)); /* the adapter must have copied them */
  peer_adapter(&s, tls_new_server(fx.server[tc->server]));
  pump(&c, &s);
  if (!tls_handshake_done(c.t)) {
    fail_msg("%s: handshake failed: %s", tc->label, tls_error(c.t));
  }
  const char *err = tls_verify_error(c.t);
  int err_ok =
      tc->want_err == NULL ? err[0] == '\0' : strstr(err, tc->want_err) != NULL;
  if (tls_verify(c.t) != tc->want || !err_ok) {
    fail_msg("%s: got %d \"%s\", want %d \"%s\"", tc->label, tls_verify(c.t),
             err, tc->want, tc->want_err ? tc->want_err : "");
  }
  peer_free(&c);
  peer_free(&s);
}

/* What the client concludes of each server, by names and TLSA records.
 * Rows: label; server; reference names; TLSA records and their count;
 * wanted result; wanted substring of tls_verify_error() (NULL: ""). */
#define NO_TLSA {{0}}, 0
/* clang-format off */
static const struct verify_case kVerifyCases[] = {
    /* PKIX */
    {"pkix ok", CERT_MX, {"mx.example.test"}, NO_TLSA, TLS_VERIFY_OK, NULL},
    {"pkix leaf-only chain", CERT_MX_BARE, {"mx.example.test"}, NO_TLSA,
     TLS_VERIFY_OK, NULL},
    {"pkix via intermediate", CERT_VIA_INTER, {"mx.example.test"}, NO_TLSA,
     TLS_VERIFY_OK, NULL},
    {"pkix name case and trailing dot", CERT_MX, {"MX.Example.TEST."}, NO_TLSA,
     TLS_VERIFY_OK, NULL},
    {"pkix second name matches", CERT_MX, {"nope.test", "mx.example.test"},
     NO_TLSA, TLS_VERIFY_OK, NULL},
    {"pkix CN when no SAN", CERT_CN_ONLY, {"mx.example.test"}, NO_TLSA,
     TLS_VERIFY_OK, NULL},
    {"pkix Ed25519 server key", CERT_ED25519, {"mx.example.test"}, NO_TLSA,
     TLS_VERIFY_OK, NULL},
    {"pkix wrong name", CERT_MX, {"other.example.test"}, NO_TLSA,
     TLS_VERIFY_FAILED, "name mismatch: wanted other.example.test"},
    {"pkix no names", CERT_MX, {NULL}, NO_TLSA,
     TLS_VERIFY_FAILED, "name mismatch: no name to check"},
    {"pkix parent domain is not the host", CERT_MX, {"example.test"}, NO_TLSA,
     TLS_VERIFY_FAILED, "name mismatch"},
    {"pkix unknown CA", CERT_ROGUE_LEAF, {"mx.example.test"}, NO_TLSA,
     TLS_VERIFY_FAILED, "unable to get local issuer certificate"},
    /* A CA:FALSE self-signed leaf is not its own issuer to BoringSSL. */
    {"pkix self-signed", CERT_SELF, {"mx.example.test"}, NO_TLSA,
     TLS_VERIFY_FAILED, "unable to get local issuer certificate"},
    {"pkix expired", CERT_EXPIRED, {"mx.example.test"}, NO_TLSA,
     TLS_VERIFY_FAILED, "certificate has expired"},

    /* Wildcard certificates, RFC 6125 §6.4.3 */
    {"wildcard cert one label", CERT_WILD, {"mx.example.test"}, NO_TLSA,
     TLS_VERIFY_OK, NULL},
    {"wildcard cert not two labels", CERT_WILD, {"a.b.example.test"}, NO_TLSA,
     TLS_VERIFY_FAILED, "name mismatch: wanted a.b.example.test"},
    {"wildcard cert not the bare domain", CERT_WILD, {"example.test"}, NO_TLSA,
     TLS_VERIFY_FAILED, "name mismatch"},
    {"no partial wildcard m*", CERT_PARTIAL, {"mx.example.test"}, NO_TLSA,
     TLS_VERIFY_FAILED, "name mismatch"},
    {"wildcard under mx matches", CERT_PARTIAL, {"a.mx.example.test"}, NO_TLSA,
     TLS_VERIFY_OK, NULL},
    {"dane-ta, partial wildcard", CERT_PARTIAL, {"mx.example.test"},
     {TLSA(2, 0, 1, CERT_CA)}, 1, TLS_VERIFY_FAILED, "name mismatch"},

    /* MTA-STS mx patterns, RFC 8461 §4.1 */
    {"mta-sts pattern", CERT_MX, {"*.example.test"}, NO_TLSA,
     TLS_VERIFY_OK, NULL},
    {"mta-sts pattern other domain", CERT_MX, {"*.other.test"}, NO_TLSA,
     TLS_VERIFY_FAILED, "name mismatch"},
    {"mta-sts pattern one label only", CERT_MX, {"*.test"}, NO_TLSA,
     TLS_VERIFY_FAILED, "name mismatch"},
    {"mta-sts pattern vs wildcard cert", CERT_WILD, {"*.example.test"},
     NO_TLSA, TLS_VERIFY_OK, NULL},

    /* DANE-EE, RFC 7672 §3.1.1: no name or date checks */
    {"dane-ee spki sha256", CERT_MX, {"wrong.test"},
     {TLSA(3, 1, 1, CERT_MX)}, 1, TLS_VERIFY_DANE_OK, NULL},
    {"dane-ee spki sha256 expired cert", CERT_EXPIRED, {"mx.example.test"},
     {TLSA(3, 1, 1, CERT_EXPIRED)}, 1, TLS_VERIFY_DANE_OK, NULL},
    {"dane-ee self-signed", CERT_SELF, {"mx.example.test"},
     {TLSA(3, 1, 1, CERT_SELF)}, 1, TLS_VERIFY_DANE_OK, NULL},
    {"dane-ee spki mismatch", CERT_MX, {"mx.example.test"},
     {TLSA(3, 1, 1, CERT_OTHER)}, 1, TLS_VERIFY_FAILED, "no TLSA record matched"},
    {"dane-ee spki corrupt", CERT_MX, {"mx.example.test"},
     {{3, 1, 1, CERT_MX, 1, 0}}, 1, TLS_VERIFY_FAILED, "no TLSA record matched"},
    {"dane-ee full cert exact", CERT_MX, {"mx.example.test"},
     {TLSA(3, 0, 0, CERT_MX)}, 1, TLS_VERIFY_DANE_OK, NULL},
    {"dane-ee full cert exact corrupt", CERT_MX, {"mx.example.test"},
     {{3, 0, 0, CERT_MX, 1, 0}}, 1, TLS_VERIFY_FAILED, "no TLSA record matched"},
    {"dane-ee cert sha512", CERT_MX, {"mx.example.test"},
     {TLSA(3, 0, 2, CERT_MX)}, 1, TLS_VERIFY_DANE_OK, NULL},
    {"dane-ee second record matches", CERT_MX, {"mx.example.test"},
     {TLSA(3, 1, 1, CERT_OTHER), TLSA(3, 1, 2, CERT_MX)}, 2,
     TLS_VERIFY_DANE_OK, NULL},
    {"dane-ee record of the CA is not EE", CERT_MX, {"mx.example.test"},
     {TLSA(3, 1, 1, CERT_CA)}, 1, TLS_VERIFY_FAILED, "no TLSA record matched"},

    /* DANE-TA, RFC 7672 §3.1.2 (and §3.2.2 for names) */
    {"dane-ta CA cert sha256", CERT_MX, {"mx.example.test"},
     {TLSA(2, 0, 1, CERT_CA)}, 1, TLS_VERIFY_DANE_OK, NULL},
    {"dane-ta CA spki sha256", CERT_MX, {"mx.example.test"},
     {TLSA(2, 1, 1, CERT_CA)}, 1, TLS_VERIFY_DANE_OK, NULL},
    {"dane-ta name mismatch", CERT_MX, {"other.example.test"},
     {TLSA(2, 0, 1, CERT_CA)}, 1, TLS_VERIFY_FAILED,
     "name mismatch: wanted other.example.test"},
    {"dane-ta mta-sts style name", CERT_MX, {"*.example.test"},
     {TLSA(2, 0, 1, CERT_CA)}, 1, TLS_VERIFY_DANE_OK, NULL},
    {"dane-ta expired leaf", CERT_EXPIRED, {"mx.example.test"},
     {TLSA(2, 0, 1, CERT_CA)}, 1, TLS_VERIFY_FAILED, "certificate has expired"},
    {"dane-ta intermediate", CERT_VIA_INTER, {"mx.example.test"},
     {TLSA(2, 0, 1, CERT_INTER)}, 1, TLS_VERIFY_DANE_OK, NULL},
    {"dane-ta wildcard cert", CERT_WILD, {"mx.example.test"},
     {TLSA(2, 0, 1, CERT_CA)}, 1, TLS_VERIFY_DANE_OK, NULL},
    {"dane-ta CA not sent, digest", CERT_MX_BARE, {"mx.example.test"},
     {TLSA(2, 0, 1, CERT_CA)}, 1, TLS_VERIFY_FAILED, "no TLSA record matched"},
    {"dane-ta CA not sent, full cert", CERT_MX_BARE, {"mx.example.test"},
     {TLSA(2, 0, 0, CERT_CA)}, 1, TLS_VERIFY_DANE_OK, NULL},
    {"dane-ta CA not sent, bare key", CERT_MX_BARE, {"mx.example.test"},
     {TLSA(2, 1, 0, CERT_CA)}, 1, TLS_VERIFY_DANE_OK, NULL},
    {"dane-ta bare key that did not sign", CERT_MX_BARE, {"mx.example.test"},
     {TLSA(2, 1, 0, CERT_ROGUE_CA)}, 1, TLS_VERIFY_FAILED,
     "no TLSA record matched"},
    {"dane-ta rogue CA not trusted", CERT_ROGUE_LEAF, {"mx.example.test"},
     {TLSA(2, 0, 1, CERT_CA)}, 1, TLS_VERIFY_FAILED, "no TLSA record matched"},
    {"dane-ta leaf is no anchor", CERT_MX, {"mx.example.test"},
     {TLSA(2, 0, 1, CERT_MX)}, 1, TLS_VERIFY_FAILED, "no TLSA record matched"},
    {"dane ee mismatch, ta match", CERT_MX, {"mx.example.test"},
     {TLSA(3, 1, 1, CERT_OTHER), TLSA(2, 0, 1, CERT_CA)}, 2,
     TLS_VERIFY_DANE_OK, NULL},
    {"dane beats pkix failure", CERT_SELF, {"mx.example.test"},
     {TLSA(3, 1, 1, CERT_SELF)}, 1, TLS_VERIFY_DANE_OK, NULL},
    {"dane mismatch despite pkix ok", CERT_MX, {"mx.example.test"},
     {TLSA(3, 1, 1, CERT_OTHER)}, 1, TLS_VERIFY_FAILED, "no TLSA record matched"},

    /* Unusable records (RFC 7672 §3.1.3, RFC 7671 §4.1): PKIX decides */
    {"pkix-ta/ee usages ignored", CERT_MX, {"mx.example.test"},
     {TLSA(0, 0, 1, CERT_OTHER), TLSA(1, 1, 1, CERT_OTHER)}, 2,
     TLS_VERIFY_OK, NULL},
    {"short digest ignored", CERT_MX, {"mx.example.test"},
     {{3, 1, 1, CERT_OTHER, 0, 1}}, 1, TLS_VERIFY_OK, NULL},
    {"unknown mtype ignored", CERT_SELF, {"mx.example.test"},
     {TLSA(3, 1, 3, CERT_SELF)}, 1, TLS_VERIFY_FAILED, "local issuer"},
};
/* clang-format on */

static void test_verify(void **state) {
  for (size_t i = 0; i < sizeof(kVerifyCases) / sizeof(kVerifyCases[0]); i++) {
    run_verify_case(&kVerifyCases[i], fx.client);
  }
}

/* Without a CA file only DANE can verify. */
static void test_verify_without_ca(void **state) {
  char err[256];
  struct tls_client_config cc = {0};
  struct tls_ctx *client = tls_ctx_new_client(&cc, err, sizeof(err));
  assert_non_null(client);
  /* clang-format off */
  static const struct verify_case cases[] = {
      {"pkix without CA", CERT_MX, {"mx.example.test"}, NO_TLSA,
       TLS_VERIFY_FAILED, "no CA file"},
      {"dane-ee without CA", CERT_MX, {"mx.example.test"},
       {TLSA(3, 1, 1, CERT_MX)}, 1, TLS_VERIFY_DANE_OK, NULL},
      {"dane-ta without CA", CERT_MX, {"mx.example.test"},
       {TLSA(2, 0, 1, CERT_CA)}, 1, TLS_VERIFY_DANE_OK, NULL},
  };
  /* clang-format on */
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    run_verify_case(&cases[i], client);
  }
  tls_ctx_free(client);
}

/* ---- session resumption ---- */

/* resume_once connects an adapter client to server and says whether the
 * session was resumed, checking both ends agree. */
static int resume_once(struct tls_ctx *client, struct peer *s,
                       const char *key) {
  struct peer c;
  peer_adapter(&c, client_for(client, "mx.example.test", key));
  pump(&c, s); /* also carries TLS 1.3 tickets after the handshake */
  if (!peer_done(&c) || !peer_done(s)) {
    fail_msg("key %s: handshake failed: %s", key ? key : "(none)",
             tls_error(c.t));
  }
  int reused = tls_session_reused(c.t);
  if (s->t != NULL && tls_session_reused(s->t) != reused) {
    fail_msg("key %s: client reused %d, server %d", key ? key : "(none)",
             reused, tls_session_reused(s->t));
  }
  /* A resumed session is judged again, from the stored chain. */
  assert_int_equal(tls_verify(c.t), TLS_VERIFY_OK);
  assert_string_equal(tls_peer_cn(c.t), "mx.example.test");
  peer_free(&c);
  return reused;
}

struct resume_step {
  const char *key;
  int want;
};

static void test_resume_tls13(void **state) {
  static const struct resume_step steps[] = {
      {"mx.example.test", 0}, {"mx.example.test", 1}, {"other", 0}, {NULL, 0},
      {"mx.example.test", 1}, {"other", 1},
  };
  struct tls_ctx *client = ctx_with_min(0, NULL);
  for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
    struct peer s;
    peer_adapter(&s, tls_new_server(fx.server[CERT_MX]));
    int got = resume_once(client, &s, steps[i].key);
    if (got != steps[i].want) {
      fail_msg("step %zu key %s: reused %d, want %d", i,
               steps[i].key ? steps[i].key : "(none)", got, steps[i].want);
    }
    assert_string_equal(tls_version(s.t), "TLSv1.3");
    peer_free(&s);
  }
  tls_ctx_free(client);
}

/* TLS 1.2 against a server that speaks no more: the adapter client
 * resumes from its cache. */
static void test_resume_tls12_client(void **state) {
  static const struct resume_step steps[] = {
      {"k", 0}, {"k", 1}, {"k", 1}, {"other", 0}, {NULL, 0}};
  struct tls_ctx *client = ctx_with_min(0, NULL);
  SSL_CTX *raw = raw_ctx(1, TLS1_2_VERSION, TLS1_2_VERSION, NULL);
  for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
    struct peer s;
    peer_raw(&s, raw, 1, NULL);
    int got = resume_once(client, &s, steps[i].key);
    if (got != steps[i].want) {
      fail_msg("TLS 1.2 step %zu: reused %d, want %d", i, got, steps[i].want);
    }
    peer_free(&s);
  }
  SSL_CTX_free(raw);
  tls_ctx_free(client);
}

/* TLS 1.2 against the adapter server: its tickets resume. */
static void test_resume_tls12_server(void **state) {
  SSL_CTX *raw = raw_ctx(0, TLS1_2_VERSION, TLS1_2_VERSION, NULL);
  SSL_SESSION *session = NULL;
  for (int i = 0; i < 3; i++) {
    struct peer c, s;
    peer_raw(&c, raw, 0, session);
    peer_adapter(&s, tls_new_server(fx.server[CERT_MX]));
    pump(&c, &s);
    assert_true(peer_done(&c) && peer_done(&s));
    assert_string_equal(tls_version(s.t), "TLSv1.2");
    if (tls_session_reused(s.t) != (i > 0)) {
      fail_msg("round %d: server reused %d", i, tls_session_reused(s.t));
    }
    SSL_SESSION_free(session);
    session = SSL_get1_session(c.raw);
    peer_free(&c);
    peer_free(&s);
  }
  SSL_SESSION_free(session);
  SSL_CTX_free(raw);
}

/* fill_session makes one connection under key and says whether it
 * resumed: the lean path (Ed25519, no chain to verify) for many runs. */
static int fill_session(struct tls_ctx *client, const char *key) {
  struct tls_client_params p = {.session_key = key};
  struct peer c, s;
  peer_adapter(&c, tls_new_client(client, &p));
  peer_adapter(&s, tls_new_server(fx.server[CERT_ED25519]));
  pump(&c, &s);
  assert_true(peer_done(&c) && peer_done(&s));
  int reused = tls_session_reused(c.t);
  peer_free(&c);
  peer_free(&s);
  return reused;
}

/* The cache keeps TLS_MAX_SESSIONS destinations; the oldest goes first. */
static void test_resume_eviction(void **state) {
  struct tls_client_config cc = {0};
  char err[256];
  struct tls_ctx *client = tls_ctx_new_client(&cc, err, sizeof(err));
  assert_non_null(client);
  char key[32];
  for (int i = 0; i <= TLS_MAX_SESSIONS; i++) {
    snprintf(key, sizeof(key), "dest%d", i);
    assert_int_equal(fill_session(client, key), 0);
  }
  char last[32];
  snprintf(last, sizeof(last), "dest%d", TLS_MAX_SESSIONS);
  const struct resume_step steps[] = {
      {"dest0", 0}, /* the oldest: replaced by the last */
      {"dest2", 1}, /* (dest1 made room for dest0 again) */
      {last, 1},
  };
  for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
    int got = fill_session(client, steps[i].key);
    if (got != steps[i].want) {
      fail_msg("%s: reused %d, want %d", steps[i].key, got, steps[i].want);
    }
  }
  tls_ctx_free(client);
}

/* Workers share one client context: handshakes and the session cache run
 * from several threads at once. */
static void *resume_worker(void *arg) {
  struct tls_ctx *client = arg;
  for (int i = 0; i < 20; i++) {
    char key[32];
    snprintf(key, sizeof(key), "dest%d", i % 3);
    struct tls *c = client_for(client, "mx.example.test", key);
    struct tls *s = tls_new_server(fx.server[CERT_MX]);
    struct buf wire = {0}, plain = {0};
    for (int round = 0; round < 20; round++) {
      buf_reset(&wire);
      tls_take_output(c, &wire);
      tls_input(s, &plain, wire.data, wire.len);
      buf_reset(&wire);
      tls_take_output(s, &wire);
      tls_input(c, &plain, wire.data, wire.len);
    }
    int ok = tls_handshake_done(c) && tls_verify(c) == TLS_VERIFY_OK;
    tls_free(c);
    tls_free(s);
    buf_free(&wire);
    buf_free(&plain);
    if (!ok) {
      return (void *)1;
    }
  }
  return NULL;
}

static void test_threads(void **state) {
  struct tls_ctx *client = ctx_with_min(0, NULL);
  pthread_t th[4];
  for (int i = 0; i < 4; i++) {
    assert_int_equal(pthread_create(&th[i], NULL, resume_worker, client), 0);
  }
  for (int i = 0; i < 4; i++) {
    void *rc;
    pthread_join(th[i], &rc);
    assert_null(rc);
  }
  struct peer s;
  peer_adapter(&s, tls_new_server(fx.server[CERT_MX]));
  assert_int_equal(resume_once(client, &s, "dest1"), 1);
  peer_free(&s);
  tls_ctx_free(client);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ctx_errors),
      cmocka_unit_test(test_ctx_not_after),
      cmocka_unit_test(test_ctx_refcount),
      cmocka_unit_test(test_versions),
      cmocka_unit_test(test_getters),
      cmocka_unit_test(test_data),
      cmocka_unit_test(test_pending_limit),
      cmocka_unit_test(test_close),
      cmocka_unit_test(test_garbage),
      cmocka_unit_test(test_tampered_record),
      cmocka_unit_test(test_sni),
      cmocka_unit_test(test_verify),
      cmocka_unit_test(test_verify_without_ca),
      cmocka_unit_test(test_resume_tls13),
      cmocka_unit_test(test_resume_tls12_client),
      cmocka_unit_test(test_resume_tls12_server),
      cmocka_unit_test(test_resume_eviction),
      cmocka_unit_test(test_threads),
  };
  return cmocka_run_group_tests_name("tls", tests, group_setup, group_teardown);
}
