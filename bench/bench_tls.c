/* bench/bench_tls.c — `postseal-bench tls-handshake`: TLS handshakes per
 * second per core through crypto/tls.h, the adapter the daemon uses.
 *
 * A client and a server adapter are driven against each other in memory
 * on one thread: no sockets, no kernel, no SMTP. Each handshake is a fresh
 * pair; the bytes one side's tls_take_output() gives go straight into the
 * other's tls_input() until neither has anything left (so TLS 1.3 tickets
 * reach the client too). Full handshakes by default; with --resume the
 * client offers the session its context cached from the previous
 * handshake (TLS 1.3 PSK with ECDHE, or a TLS 1.2 ticket). The time of
 * every call is charged to the side that made it, so the report gives the
 * pair rate on one core and each side's own cost: a relay pays the server
 * side per inbound connection and the client side per outbound one. This
 * is BoringSSL's raw figure, the ceiling for what the SMTP layers around
 * it can reach.
 *
 * Without --cert/--key a throwaway self-signed certificate (--key-type
 * p256, rsa2048 or ed25519) is made with BoringSSL in a private temp
 * folder, loaded, and removed at once. The client checks nothing (no CA
 * file), like postseal-bench send. Bounded by --seconds (at most
 * BENCH_MAX_SECONDS) and BENCH_TLS_MAX_HANDSHAKES. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "bench/bench.h"
#include "crypto/tls.h"

#define BENCH_TLS_MAX_HANDSHAKES 100000000ull
#define BENCH_TLS_MAX_ROUNDS 16 /* flights per handshake; TLS needs < 8 */

struct tls_hs_opts {
  int resume;
  double seconds;
  const char *cert, *key;
  const char *key_type; /* for a generated certificate */
  const char *min_version;
  const char *json;
};

struct tls_hs_side {
  int64_t ns;   /* wall time inside this side's calls */
  uint64_t out; /* octets it sent */
};

struct tls_hs_run {
  const struct tls_hs_opts *o;
  struct tls_ctx *sctx, *cctx;
  struct buf wire, plain;
  uint64_t handshakes, full, resumed;
  struct tls_hs_side client, server;
  int64_t elapsed_ns, cpu_ns;
  char version[16], cipher[64], err[512];
};

/* ---- a throwaway certificate ---- */

/* tls_hs_new_key makes a key of the named type, or NULL. */
static EVP_PKEY *tls_hs_new_key(const char *type) {
  EVP_PKEY *pkey = NULL;
  if (strcmp(type, "ed25519") == 0) {
    EVP_PKEY_CTX *kctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
    if (kctx == NULL || !EVP_PKEY_keygen_init(kctx) ||
        !EVP_PKEY_keygen(kctx, &pkey)) {
      pkey = NULL;
    }
    EVP_PKEY_CTX_free(kctx);
    return pkey;
  }
  pkey = EVP_PKEY_new();
  if (pkey == NULL) {
    return NULL;
  }
  if (strcmp(type, "p256") == 0) {
    EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    if (ec != NULL && EC_KEY_generate_key(ec) &&
        EVP_PKEY_assign_EC_KEY(pkey, ec)) {
      return pkey;
    }
    EC_KEY_free(ec);
  } else if (strcmp(type, "rsa2048") == 0) {
    RSA *rsa = RSA_new();
    BIGNUM *e = BN_new();
    int ok = rsa != NULL && e != NULL && BN_set_word(e, RSA_F4) &&
             RSA_generate_key_ex(rsa, 2048, e, NULL) &&
             EVP_PKEY_assign_RSA(pkey, rsa);
    BN_free(e);
    if (ok) {
      return pkey;
    }
    RSA_free(rsa);
  }
  EVP_PKEY_free(pkey);
  return NULL;
}

/* tls_hs_new_cert self-signs a certificate for the key (30 days). */
static X509 *tls_hs_new_cert(EVP_PKEY *pkey, int is_ed25519) {
  X509 *x = X509_new();
  X509_NAME *name = x != NULL ? X509_get_subject_name(x) : NULL;
  int ok = name != NULL && X509_set_version(x, X509_VERSION_3) &&
           ASN1_INTEGER_set(X509_get_serialNumber(x), 1) &&
           X509_gmtime_adj(X509_getm_notBefore(x), -3600) &&
           X509_gmtime_adj(X509_getm_notAfter(x), 30L * 86400) &&
           X509_set_pubkey(x, pkey) &&
           X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                      (const uint8_t *)"postseal-bench.invalid",
                                      -1, -1, 0) &&
           X509_set_issuer_name(x, name) &&
           X509_sign(x, pkey, is_ed25519 ? NULL : EVP_sha256());
  if (!ok) {
    X509_free(x);
    return NULL;
  }
  return x;
}

/* tls_hs_write_pem writes the certificate and key to two files. */
static int tls_hs_write_pem(const char *cert_path, const char *key_path,
                            X509 *x, EVP_PKEY *pkey) {
  FILE *cf = fopen(cert_path, "w");
  FILE *kf = fopen(key_path, "w");
  int ok = cf != NULL && kf != NULL && PEM_write_X509(cf, x) &&
           PEM_write_PrivateKey(kf, pkey, NULL, NULL, 0, NULL, NULL);
  if (cf != NULL && fclose(cf) != 0) {
    ok = 0;
  }
  if (kf != NULL && fclose(kf) != 0) {
    ok = 0;
  }
  return ok ? 0 : -1;
}

/* tls_hs_generated_ctx makes a key and certificate, writes them to a
 * private temp folder for tls_ctx_new_server and removes them again. */
static struct tls_ctx *tls_hs_generated_ctx(const struct tls_hs_opts *o,
                                            char *err, size_t err_len) {
  const char *base = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
  char dir[512], cert[600], key[600];
  snprintf(dir, sizeof(dir), "%s/postseal-bench-tls.XXXXXX", base);
  if (mkdtemp(dir) == NULL) {
    snprintf(err, err_len, "%.300s: %s", dir, strerror(errno));
    return NULL;
  }
  snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
  snprintf(key, sizeof(key), "%s/key.pem", dir);
  EVP_PKEY *pkey = tls_hs_new_key(o->key_type);
  X509 *x = pkey != NULL
                ? tls_hs_new_cert(pkey, strcmp(o->key_type, "ed25519") == 0)
                : NULL;
  struct tls_ctx *ctx = NULL;
  if (x == NULL || tls_hs_write_pem(cert, key, x, pkey) != 0) {
    snprintf(err, err_len, "could not make a %s certificate", o->key_type);
  } else {
    struct tls_server_config sc = {
        .cert_file = cert, .key_file = key, .min_version = o->min_version};
    ctx = tls_ctx_new_server(&sc, err, err_len);
  }
  X509_free(x);
  EVP_PKEY_free(pkey);
  unlink(cert);
  unlink(key);
  rmdir(dir);
  return ctx;
}

/* ---- the handshakes ---- */

static int64_t tls_hs_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* tls_hs_move hands what `from` has to send to `to`, charging each call
 * to its side. Returns the octets moved, or -1 on a TLS error. */
static long tls_hs_move(struct tls_hs_run *r, struct tls *from,
                        struct tls_hs_side *from_side, struct tls *to,
                        struct tls_hs_side *to_side) {
  int64_t t0 = bench_now_ns();
  buf_reset(&r->wire);
  int rc = tls_take_output(from, &r->wire);
  int64_t t1 = bench_now_ns();
  from_side->ns += t1 - t0;
  if (rc != 0) {
    return -1;
  }
  if (r->wire.len == 0) {
    return 0;
  }
  from_side->out += r->wire.len;
  buf_reset(&r->plain);
  enum tls_status st = tls_input(to, &r->plain, r->wire.data, r->wire.len);
  to_side->ns += bench_now_ns() - t1;
  return st == TLS_OK ? (long)r->wire.len : -1;
}

/* tls_hs_one runs one handshake between fresh adapters. 0 or -1. */
static int tls_hs_one(struct tls_hs_run *r) {
  struct tls_client_params params = {.session_key = "tls-handshake"};
  int64_t t0 = bench_now_ns();
  struct tls *c = tls_new_client(r->cctx, r->o->resume ? &params : NULL);
  int64_t t1 = bench_now_ns();
  struct tls *s = tls_new_server(r->sctx);
  int64_t t2 = bench_now_ns();
  r->client.ns += t1 - t0;
  r->server.ns += t2 - t1;
  int ok = c != NULL && s != NULL;
  for (int round = 0; ok && round < BENCH_TLS_MAX_ROUNDS; round++) {
    long a = tls_hs_move(r, c, &r->client, s, &r->server);
    long b = a < 0 ? -1 : tls_hs_move(r, s, &r->server, c, &r->client);
    ok = a >= 0 && b >= 0;
    if (a == 0 && b == 0) {
      break;
    }
  }
  ok = ok && tls_handshake_done(c) && tls_handshake_done(s);
  if (!ok) {
    snprintf(r->err, sizeof(r->err), "handshake failed: client %s, server %s",
             c != NULL ? tls_error(c) : "no memory",
             s != NULL ? tls_error(s) : "no memory");
  } else {
    r->handshakes++;
    if (tls_session_reused(c)) {
      r->resumed++;
    } else {
      r->full++;
    }
    snprintf(r->version, sizeof(r->version), "%s", tls_version(c));
    snprintf(r->cipher, sizeof(r->cipher), "%s", tls_cipher(c));
  }
  int64_t t3 = bench_now_ns();
  tls_free(c);
  int64_t t4 = bench_now_ns();
  tls_free(s);
  r->client.ns += t4 - t3;
  r->server.ns += bench_now_ns() - t4;
  return ok ? 0 : -1;
}

/* tls_hs_loop runs handshakes until the time is up. 0 or -1. */
static int tls_hs_loop(struct tls_hs_run *r) {
  int64_t start = bench_now_ns(), cpu0 = tls_hs_cpu_ns();
  int64_t end = start + (int64_t)(r->o->seconds * 1e9);
  int64_t now = start;
  int rc = 0;
  while (now < end && r->handshakes < BENCH_TLS_MAX_HANDSHAKES) {
    if (tls_hs_one(r) != 0) {
      rc = -1;
      break;
    }
    now = bench_now_ns();
  }
  r->elapsed_ns = now - start;
  r->cpu_ns = tls_hs_cpu_ns() - cpu0;
  return rc;
}

/* ---- options and report ---- */

static void tls_hs_usage(FILE *f) {
  fprintf(f,
          "usage: postseal-bench tls-handshake [--resume] [--seconds S]\n"
          "       [--cert PEM --key PEM | --key-type p256|rsa2048|ed25519]\n"
          "       [--min-version 1.2|1.3] [--json FILE]\n"
          "Client and server adapters (crypto/tls.h) against each other in "
          "memory on one\nthread: full (or with --resume, resumed) handshakes "
          "per second per core, and\neach side's own cost. Default 3 s, at "
          "most %.0f s; a generated P-256 certificate.\n",
          BENCH_MAX_SECONDS);
}

static int tls_hs_parse(int argc, char **argv, struct tls_hs_opts *o) {
  static const struct option longopts[] = {
      {"resume", no_argument, NULL, 'r'},
      {"seconds", required_argument, NULL, 's'},
      {"cert", required_argument, NULL, 'c'},
      {"key", required_argument, NULL, 'k'},
      {"key-type", required_argument, NULL, 't'},
      {"min-version", required_argument, NULL, 'V'},
      {"json", required_argument, NULL, 'j'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  *o = (struct tls_hs_opts){.seconds = 3, .key_type = "p256"};
  int ch;
  optind = 1;
  while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    char *end;
    switch (ch) {
    case 'r':
      o->resume = 1;
      break;
    case 's':
      errno = 0;
      o->seconds = strtod(optarg, &end);
      if (end == optarg || *end != '\0' || errno != 0) {
        return -1;
      }
      break;
    case 'c':
      o->cert = optarg;
      break;
    case 'k':
      o->key = optarg;
      break;
    case 't':
      o->key_type = optarg;
      break;
    case 'V':
      o->min_version = optarg; /* the adapter checks it */
      break;
    case 'j':
      o->json = optarg;
      break;
    case 'h':
      tls_hs_usage(stdout);
      exit(0);
    default:
      return -1;
    }
  }
  if (optind != argc || !(o->seconds > 0) || o->seconds > BENCH_MAX_SECONDS ||
      (o->cert == NULL) != (o->key == NULL) ||
      (strcmp(o->key_type, "p256") != 0 &&
       strcmp(o->key_type, "rsa2048") != 0 &&
       strcmp(o->key_type, "ed25519") != 0)) {
    return -1;
  }
  return 0;
}

static double tls_hs_per_s(uint64_t n, int64_t ns) {
  return ns > 0 ? (double)n * 1e9 / (double)ns : 0.0;
}

static double tls_hs_us(int64_t ns, uint64_t n) {
  return n > 0 ? (double)ns / 1000.0 / (double)n : 0.0;
}

static void tls_hs_report_json(FILE *f, const struct tls_hs_run *r) {
  const struct tls_hs_opts *o = r->o;
  uint64_t n = r->handshakes;
  fprintf(f,
          "{\"tool\": \"postseal-bench tls-handshake\", \"resume\": %s, "
          "\"certificate\": \"%s\", \"version\": \"%s\", \"cipher\": \"%s\",\n"
          " \"seconds\": %g, \"handshakes\": %llu, \"full\": %llu, "
          "\"resumed\": %llu, \"elapsed_s\": %.3f, \"cpu_s\": %.3f,\n"
          " \"pairs_per_s\": %.1f, \"pairs_per_cpu_s\": %.1f,\n"
          " \"server\": {\"us_per_handshake\": %.2f, \"per_core_s\": %.1f, "
          "\"bytes_sent\": %.0f},\n"
          " \"client\": {\"us_per_handshake\": %.2f, \"per_core_s\": %.1f, "
          "\"bytes_sent\": %.0f}}\n",
          o->resume ? "true" : "false", o->cert != NULL ? o->cert : o->key_type,
          r->version, r->cipher, o->seconds, (unsigned long long)n,
          (unsigned long long)r->full, (unsigned long long)r->resumed,
          (double)r->elapsed_ns / 1e9, (double)r->cpu_ns / 1e9,
          tls_hs_per_s(n, r->elapsed_ns), tls_hs_per_s(n, r->cpu_ns),
          tls_hs_us(r->server.ns, n), tls_hs_per_s(n, r->server.ns),
          n > 0 ? (double)r->server.out / (double)n : 0.0,
          tls_hs_us(r->client.ns, n), tls_hs_per_s(n, r->client.ns),
          n > 0 ? (double)r->client.out / (double)n : 0.0);
}

static void tls_hs_report_text(FILE *f, const struct tls_hs_run *r) {
  const struct tls_hs_opts *o = r->o;
  uint64_t n = r->handshakes;
  fprintf(f,
          "postseal-bench tls-handshake: %s, certificate %s, %s %s\n"
          "handshakes %llu (full %llu, resumed %llu) in %.3f s (CPU %.3f s): "
          "%.1f pairs/s on one core\n"
          "  server side: %.1f us each = %.1f handshakes/s per core\n"
          "  client side: %.1f us each = %.1f handshakes/s per core\n",
          o->resume ? "resumed" : "full",
          o->cert != NULL ? o->cert : o->key_type, r->version, r->cipher,
          (unsigned long long)n, (unsigned long long)r->full,
          (unsigned long long)r->resumed, (double)r->elapsed_ns / 1e9,
          (double)r->cpu_ns / 1e9, tls_hs_per_s(n, r->elapsed_ns),
          tls_hs_us(r->server.ns, n), tls_hs_per_s(n, r->server.ns),
          tls_hs_us(r->client.ns, n), tls_hs_per_s(n, r->client.ns));
}

/* tls_hs_setup makes both contexts. 0, or -1 with the reason printed. */
static int tls_hs_setup(struct tls_hs_run *r) {
  const struct tls_hs_opts *o = r->o;
  if (o->cert != NULL) {
    struct tls_server_config sc = {.cert_file = o->cert,
                                   .key_file = o->key,
                                   .min_version = o->min_version};
    r->sctx = tls_ctx_new_server(&sc, r->err, sizeof(r->err));
  } else {
    r->sctx = tls_hs_generated_ctx(o, r->err, sizeof(r->err));
  }
  if (r->sctx == NULL) {
    return -1;
  }
  struct tls_client_config cc = {.ca_file = NULL,
                                 .min_version = o->min_version};
  r->cctx = tls_ctx_new_client(&cc, r->err, sizeof(r->err));
  return r->cctx != NULL ? 0 : -1;
}

static int tls_hs_write_json(const struct tls_hs_run *r) {
  const char *path = r->o->json;
  FILE *f = strcmp(path, "-") == 0 ? stdout : fopen(path, "w");
  if (f == NULL) {
    fprintf(stderr, "postseal-bench tls-handshake: %s: %s\n", path,
            strerror(errno));
    return -1;
  }
  tls_hs_report_json(f, r);
  return f != stdout && fclose(f) != 0 ? -1 : 0;
}

int bench_tls_handshake_main(int argc, char **argv) {
  struct tls_hs_opts o;
  if (tls_hs_parse(argc, argv, &o) != 0) {
    tls_hs_usage(stderr);
    return 2;
  }
  struct tls_hs_run r = {.o = &o};
  int rc = 0;
  if (tls_hs_setup(&r) != 0) {
    fprintf(stderr, "postseal-bench tls-handshake: %s\n", r.err);
    rc = 1;
  } else if (tls_hs_loop(&r) != 0) {
    fprintf(stderr, "postseal-bench tls-handshake: %s\n", r.err);
    rc = 1;
  } else {
    tls_hs_report_text(stdout, &r);
    if (o.json != NULL && tls_hs_write_json(&r) != 0) {
      rc = 1;
    }
  }
  tls_ctx_free(r.sctx);
  tls_ctx_free(r.cctx);
  buf_free(&r.wire);
  buf_free(&r.plain);
  return rc;
}
