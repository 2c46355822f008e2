/* crypto/tls.c — sans-I/O TLS on BoringSSL; the contract is in tls.h.
 *
 * Each struct tls drives one SSL through two memory BIOs: `in` holds the
 * ciphertext the host fed that BoringSSL has not read yet, `out` the
 * ciphertext BoringSSL wrote that the host has not taken. Nothing blocks:
 * a memory BIO takes every write, and an empty one answers "retry", which
 * BoringSSL reports as SSL_ERROR_WANT_READ. So SSL_write never stops
 * short, and plaintext is either all encrypted or the session has failed.
 *
 * The client never lets BoringSSL fail a handshake over the certificate
 * (a custom verify callback accepts everything); tls_verify_peer() judges
 * the chain once the handshake is done, by DANE or PKIX, and the caller's
 * policy decides what a failure means. */
#include "crypto/tls.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "crypto/cms.h"

/* Ciphertext handed to BoringSSL per step: bounds the input BIO, and keeps
 * the memory BIO's move-down-after-read cheap when a host feeds a lot. */
#define TLS_INPUT_CHUNK (64 * 1024)
/* Plaintext read per SSL_read: one full TLS record. */
#define TLS_READ_STEP 16384
/* Ciphertext or plaintext moved per BIO_read / SSL_write call (int API). */
#define TLS_IO_STEP (1 << 30)
/* A TLSA record's data can never pass a DNS RDATA (RFC 1035 §3.2.1). */
#define TLS_MAX_TLSA_DATA 65535
/* A DNS name without its trailing dot (RFC 1035 §2.3.4). */
#define TLS_MAX_DNS_NAME 253
#define TLS_ERR_LEN 256
#define TLS_CN_LEN 256

/* TLS 1.2 suites: ECDHE key exchange with an AEAD only. TLS 1.3 suites
 * are all AEAD, and BoringSSL does not make them configurable. */
static const char kTlsCiphers[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384";

/* Signatures the client accepts from servers: BoringSSL's default list
 * plus Ed25519, which it leaves out by default, so that a server with an
 * Ed25519 key (tls.h allows one) can serve our own client. SHA-1 stays
 * last, for TLS 1.2 servers only (BoringSSL never uses it in 1.3). */
static const uint16_t kVerifyPrefs[] = {
    SSL_SIGN_ECDSA_SECP256R1_SHA256, SSL_SIGN_RSA_PSS_RSAE_SHA256,
    SSL_SIGN_RSA_PKCS1_SHA256,       SSL_SIGN_ED25519,
    SSL_SIGN_ECDSA_SECP384R1_SHA384, SSL_SIGN_RSA_PSS_RSAE_SHA384,
    SSL_SIGN_RSA_PKCS1_SHA384,       SSL_SIGN_RSA_PSS_RSAE_SHA512,
    SSL_SIGN_RSA_PKCS1_SHA512,       SSL_SIGN_RSA_PKCS1_SHA1,
};

static const uint8_t kSessionIdContext[] = "postseal";

/* One client session cache entry; key NULL: free. */
struct tls_cache_slot {
  uint64_t hash; /* of key: most lookups then skip strcmp */
  char *key;
  SSL_SESSION *session;
};

/* A session ticket key (RFC 5077 §4 layout: name, AES-256-CBC and
 * HMAC-SHA256 keys). */
struct tls_ticket_key {
  uint8_t name[SSL_TICKET_KEY_NAME_LEN];
  uint8_t aes[32];
  uint8_t hmac[32];
  int64_t made; /* seconds since the epoch; 0: unset */
};

/* Ticket keys live TLS_TICKET_ROTATE seconds as the current key and as
 * long again as the previous one, so a ticket opens for at most twice
 * that: forward secrecy for resumed sessions within a day (BoringSSL's
 * own rotation keeps keys for 48 hours). */
#define TLS_TICKET_ROTATE (6 * 3600)

struct tls_ctx {
  SSL_CTX *ssl;
  atomic_int refs;
  int is_server;
  int has_ca;                   /* client: trust anchors were loaded */
  int64_t not_after;            /* server: the leaf's notAfter */
  pthread_mutex_t lock;         /* guards slots, next and tickets */
  struct tls_cache_slot *slots; /* TLS_MAX_SESSIONS, made at first use */
  size_t next; /* ring position: the oldest entry, replaced next */
  /* Server: session ticket keys, [0] current, [1] the one before. */
  struct tls_ticket_key tickets[2];
};

struct tls {
  struct tls_ctx *ctx;
  SSL *ssl;
  BIO *in;            /* owned by ssl */
  BIO *out;           /* owned by ssl */
  struct buf pending; /* plaintext written before the handshake */
  int is_server;
  int done;         /* handshake finished */
  int failed;       /* sticky: every later call fails */
  int close_wanted; /* tls_close before the handshake: close once done */
  int closed;       /* close_notify queued */
  int peer_closed;  /* close_notify received */
  /* Client parameters, copied. */
  char *names[TLS_MAX_NAMES];
  size_t num_names;
  struct tls_tlsa tlsa[TLS_MAX_TLSA];
  uint8_t *tlsa_data[TLS_MAX_TLSA];
  size_t num_tlsa;
  char *session_key;
  /* Results. */
  enum tls_verify_result verify;
  int has_sni;
  char sni[TLS_MAX_DNS_NAME + 1];
  char verify_err[TLS_ERR_LEN];
  char peer_cn[TLS_CN_LEN];
  char err[TLS_ERR_LEN];
};

/* ---- errors ---- */

/* fmt_err writes a one-line reason for the caller, if it gave room. */
__attribute__((format(printf, 3, 4))) static void
fmt_err(char *err, size_t err_len, const char *fmt, ...) {
  if (err == NULL || err_len == 0) {
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, err_len, fmt, ap);
  va_end(ap);
}

/* ssl_reason writes the thread's oldest queued BoringSSL error (the root
 * cause; later entries only say where it surfaced) as "library: REASON",
 * then clears the queue so the next call starts clean. */
static void ssl_reason(char *out, size_t out_len) {
  uint32_t e = ERR_peek_error();
  const char *lib = ERR_lib_error_string(e);
  const char *reason = ERR_reason_error_string(e);
  if (e == 0) {
    snprintf(out, out_len, "no library error");
  } else if (reason != NULL) {
    snprintf(out, out_len, "%s: %s", lib != NULL ? lib : "?", reason);
  } else {
    ERR_error_string_n(e, out, out_len);
  }
  ERR_clear_error();
}

/* tls_fail_msg makes the session's failure sticky, with a reason. */
__attribute__((format(printf, 2, 3))) static enum tls_status
tls_fail_msg(struct tls *t, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t->err, sizeof(t->err), fmt, ap);
  va_end(ap);
  t->failed = 1;
  return TLS_ERROR;
}

/* tls_fail records why a BoringSSL call failed. BoringSSL has already
 * queued the alert, if the failure warrants one, in the output BIO. */
static enum tls_status tls_fail(struct tls *t, const char *what, int ssl_err) {
  char why[TLS_ERR_LEN];
  if (ssl_err == SSL_ERROR_SSL || ERR_peek_error() != 0) {
    ssl_reason(why, sizeof(why));
  } else {
    snprintf(why, sizeof(why), "SSL_get_error %d", ssl_err);
  }
  return tls_fail_msg(t, "%s: %s", what, why);
}

/* ---- contexts ---- */

/* parse_min_version maps "1.2" / "1.3" (NULL: 1.2) to a protocol version.
 * Returns 0, or -1 for anything else. */
static int parse_min_version(const char *s, uint16_t *out) {
  if (s == NULL || strcmp(s, "1.2") == 0) {
    *out = TLS1_2_VERSION;
  } else if (strcmp(s, "1.3") == 0) {
    *out = TLS1_3_VERSION;
  } else {
    return -1;
  }
  return 0;
}

/* tls_ctx_destroy releases a context whose last reference is gone. */
static int tls_ctx_index = -1; /* SSL_CTX ex_data slot: our tls_ctx */
static pthread_once_t tls_ctx_index_once = PTHREAD_ONCE_INIT;

static void tls_ctx_index_init(void) {
  tls_ctx_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/* tls_ticket_rotate makes a new current key when the current one is old
 * (under ctx->lock). Returns 0, or -1 if no random bytes. */
static int tls_ticket_rotate(struct tls_ctx *ctx, int64_t now) {
  struct tls_ticket_key *cur = &ctx->tickets[0];
  if (cur->made != 0 && now - cur->made < TLS_TICKET_ROTATE) {
    return 0;
  }
  struct tls_ticket_key fresh;
  if (!RAND_bytes(fresh.name, sizeof(fresh.name)) ||
      !RAND_bytes(fresh.aes, sizeof(fresh.aes)) ||
      !RAND_bytes(fresh.hmac, sizeof(fresh.hmac))) {
    return -1;
  }
  fresh.made = now;
  OPENSSL_cleanse(&ctx->tickets[1], sizeof(ctx->tickets[1]));
  ctx->tickets[1] = *cur;
  *cur = fresh;
  OPENSSL_cleanse(&fresh, sizeof(fresh));
  return 0;
}

/* tls_ticket_cb seals new tickets with the current key and opens those of
 * the current or previous key (renewing the latter). See
 * SSL_CTX_set_tlsext_ticket_key_cb for the return values. */
static int tls_ticket_cb(SSL *ssl, uint8_t *key_name, uint8_t *iv,
                         EVP_CIPHER_CTX *cctx, HMAC_CTX *hctx, int encrypt) {
  struct tls_ctx *ctx =
      SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tls_ctx_index);
  int64_t now = (int64_t)time(NULL);
  int rc = 0;
  pthread_mutex_lock(&ctx->lock);
  if (tls_ticket_rotate(ctx, now) != 0) {
    rc = encrypt ? -1 : 0;
  } else if (encrypt) {
    const struct tls_ticket_key *k = &ctx->tickets[0];
    memcpy(key_name, k->name, sizeof(k->name));
    rc =
        RAND_bytes(iv, 16) &&
                EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv) &&
                HMAC_Init_ex(hctx, k->hmac, sizeof(k->hmac), EVP_sha256(), NULL)
            ? 1
            : -1;
  } else {
    for (int i = 0; i < 2 && rc == 0; i++) {
      const struct tls_ticket_key *k = &ctx->tickets[i];
      if (k->made == 0 || now - k->made >= 2 * TLS_TICKET_ROTATE ||
          memcmp(key_name, k->name, sizeof(k->name)) != 0) {
        continue;
      }
      rc = HMAC_Init_ex(hctx, k->hmac, sizeof(k->hmac), EVP_sha256(), NULL) &&
                   EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv)
               ? (i == 0 ? 1 : 2) /* 2: re-issue under the current key */
               : -1;
    }
  }
  pthread_mutex_unlock(&ctx->lock);
  return rc;
}

static void tls_ctx_destroy(struct tls_ctx *ctx) {
  OPENSSL_cleanse(ctx->tickets, sizeof(ctx->tickets));
  if (ctx->slots != NULL) {
    for (size_t i = 0; i < TLS_MAX_SESSIONS; i++) {
      free(ctx->slots[i].key);
      SSL_SESSION_free(ctx->slots[i].session);
    }
    free(ctx->slots);
  }
  SSL_CTX_free(ctx->ssl);
  pthread_mutex_destroy(&ctx->lock);
  free(ctx);
}

/* tls_ctx_alloc makes a context with the policy both sides share. */
static struct tls_ctx *tls_ctx_alloc(const char *min_version, int is_server,
                                     char *err, size_t err_len) {
  uint16_t min;
  if (parse_min_version(min_version, &min) != 0) {
    fmt_err(err, err_len, "min_version %s: want 1.2 or 1.3", min_version);
    return NULL;
  }
  struct tls_ctx *ctx = calloc(1, sizeof(*ctx));
  if (ctx == NULL || pthread_mutex_init(&ctx->lock, NULL) != 0) {
    free(ctx);
    fmt_err(err, err_len, "out of memory");
    return NULL;
  }
  atomic_init(&ctx->refs, 1);
  ctx->is_server = is_server;
  ERR_clear_error();
  ctx->ssl = SSL_CTX_new(TLS_method());
  if (ctx->ssl == NULL || !SSL_CTX_set_min_proto_version(ctx->ssl, min) ||
      !SSL_CTX_set_max_proto_version(ctx->ssl, TLS1_3_VERSION) ||
      !SSL_CTX_set_strict_cipher_list(ctx->ssl, kTlsCiphers)) {
    char why[TLS_ERR_LEN];
    ssl_reason(why, sizeof(why));
    fmt_err(err, err_len, "TLS policy: %s", why);
    tls_ctx_destroy(ctx);
    return NULL;
  }
  /* BoringSSL has no compression and, by default, no renegotiation (a
   * server never renegotiates; a client refuses: ssl_renegotiate_never). */
  return ctx;
}

/* no_password keeps PEM from asking for a passphrase: encrypted keys are
 * refused with a reason instead. */
static int no_password(char *buf, int size, int rwflag, void *u) {
  (void)buf;
  (void)size;
  (void)rwflag;
  (void)u;
  return 0;
}

/* load_key reads a PEM private key. NULL with a reason in err. */
static EVP_PKEY *load_key(const char *file, char *err, size_t err_len) {
  BIO *b = BIO_new_file(file, "r");
  if (b == NULL) {
    int e = errno;
    ERR_clear_error();
    fmt_err(err, err_len, "%s: %s", file, strerror(e));
    return NULL;
  }
  EVP_PKEY *key = PEM_read_bio_PrivateKey(b, NULL, no_password, NULL);
  BIO_free(b);
  if (key == NULL) {
    char why[TLS_ERR_LEN];
    ssl_reason(why, sizeof(why));
    fmt_err(err, err_len, "%s: no private key (%s)", file, why);
  }
  return key;
}

/* tls_ctx_load_cert installs the chain and key and checks they belong
 * together, so a wrong pair stops start-up instead of every handshake. */
static int tls_ctx_load_cert(struct tls_ctx *ctx,
                             const struct tls_server_config *config, char *err,
                             size_t err_len) {
  const char *cert_file = config->cert_file;
  char why[TLS_ERR_LEN];
  ERR_clear_error();
  if (access(cert_file, R_OK) != 0) {
    fmt_err(err, err_len, "%s: %s", cert_file, strerror(errno));
    return -1;
  }
  if (!SSL_CTX_use_certificate_chain_file(ctx->ssl, cert_file)) {
    ssl_reason(why, sizeof(why));
    fmt_err(err, err_len, "%s: no usable certificate (%s)", cert_file, why);
    return -1;
  }
  EVP_PKEY *key = load_key(config->key_file, err, err_len);
  if (key == NULL) {
    return -1;
  }
  int ok = X509_check_private_key(SSL_CTX_get0_certificate(ctx->ssl), key) &&
           SSL_CTX_use_PrivateKey(ctx->ssl, key) &&
           SSL_CTX_check_private_key(ctx->ssl);
  EVP_PKEY_free(key);
  ERR_clear_error();
  if (!ok) {
    fmt_err(err, err_len, "%s: key does not match the certificate in %s",
            config->key_file, cert_file);
    return -1;
  }
  return 0;
}

/* cert_not_after: the leaf's notAfter in seconds since the epoch, or 0. */
static int64_t cert_not_after(const X509 *cert) {
  return cms_cert_not_after(cert);
}

struct tls_ctx *tls_ctx_new_server(const struct tls_server_config *config,
                                   char *err, size_t err_len) {
  if (config->cert_file == NULL || config->key_file == NULL) {
    fmt_err(err, err_len, "certificate and key files are both required");
    return NULL;
  }
  struct tls_ctx *ctx = tls_ctx_alloc(config->min_version, 1, err, err_len);
  if (ctx == NULL) {
    return NULL;
  }
  if (tls_ctx_load_cert(ctx, config, err, err_len) != 0) {
    tls_ctx_destroy(ctx);
    return NULL;
  }
  SSL_CTX_set_options(ctx->ssl, SSL_OP_CIPHER_SERVER_PREFERENCE);
  /* Tickets resume TLS 1.2 and 1.3 under our own keys, rotated every
   * TLS_TICKET_ROTATE (tls_ticket_cb); a ticket's lifetime hint matches
   * how long its key opens it. The session-ID cache only serves TLS 1.2
   * clients without tickets: bound it. */
  pthread_once(&tls_ctx_index_once, tls_ctx_index_init);
  if (tls_ctx_index < 0 || !SSL_CTX_set_ex_data(ctx->ssl, tls_ctx_index, ctx) ||
      !SSL_CTX_set_tlsext_ticket_key_cb(ctx->ssl, tls_ticket_cb)) {
    snprintf(err, err_len, "cannot set up session tickets");
    tls_ctx_destroy(ctx);
    return NULL;
  }
  SSL_CTX_set_timeout(ctx->ssl, 2 * TLS_TICKET_ROTATE);
  SSL_CTX_set_session_psk_dhe_timeout(ctx->ssl, 2 * TLS_TICKET_ROTATE);
  SSL_CTX_sess_set_cache_size(ctx->ssl, TLS_MAX_SESSIONS);
  SSL_CTX_set_session_id_context(ctx->ssl, kSessionIdContext,
                                 sizeof(kSessionIdContext) - 1);
  ctx->not_after = cert_not_after(SSL_CTX_get0_certificate(ctx->ssl));
  return ctx;
}

/* accept_any_cert lets every handshake finish: tls_verify_peer() judges
 * the certificate afterwards, and the caller's policy decides. Unlike
 * SSL_VERIFY_NONE it also spares BoringSSL a chain verification whose
 * result would be thrown away. */
static enum ssl_verify_result_t accept_any_cert(SSL *ssl, uint8_t *out_alert) {
  (void)ssl;
  (void)out_alert;
  return ssl_verify_ok;
}

static int tls_on_new_session(SSL *ssl, SSL_SESSION *session);

struct tls_ctx *tls_ctx_new_client(const struct tls_client_config *config,
                                   char *err, size_t err_len) {
  struct tls_ctx *ctx = tls_ctx_alloc(config->min_version, 0, err, err_len);
  if (ctx == NULL) {
    return NULL;
  }
  const char *ca_file = config->ca_file;
  if (ca_file != NULL) {
    char why[TLS_ERR_LEN];
    if (access(ca_file, R_OK) != 0) {
      fmt_err(err, err_len, "%s: %s", ca_file, strerror(errno));
      tls_ctx_destroy(ctx);
      return NULL;
    }
    if (!SSL_CTX_load_verify_locations(ctx->ssl, ca_file, NULL)) {
      ssl_reason(why, sizeof(why));
      fmt_err(err, err_len, "%s: no CA certificates (%s)", ca_file, why);
      tls_ctx_destroy(ctx);
      return NULL;
    }
    ctx->has_ca = 1;
  }
  if (!SSL_CTX_set_verify_algorithm_prefs(ctx->ssl, kVerifyPrefs,
                                          sizeof(kVerifyPrefs) /
                                              sizeof(kVerifyPrefs[0]))) {
    char why[TLS_ERR_LEN];
    ssl_reason(why, sizeof(why));
    fmt_err(err, err_len, "TLS policy: %s", why);
    tls_ctx_destroy(ctx);
    return NULL;
  }
  SSL_CTX_set_custom_verify(ctx->ssl, SSL_VERIFY_PEER, accept_any_cert);
  /* CLIENT mode only turns the callback on (BoringSSL keeps no internal
   * client cache). TLS 1.3 tickets arrive after the handshake, so the
   * callback, not the end of the handshake, is where sessions appear. */
  SSL_CTX_set_session_cache_mode(ctx->ssl, SSL_SESS_CACHE_CLIENT);
  SSL_CTX_sess_set_new_cb(ctx->ssl, tls_on_new_session);
  return ctx;
}

void tls_ctx_up_ref(struct tls_ctx *ctx) {
  atomic_fetch_add_explicit(&ctx->refs, 1, memory_order_relaxed);
}

void tls_ctx_free(struct tls_ctx *ctx) {
  if (ctx == NULL ||
      atomic_fetch_sub_explicit(&ctx->refs, 1, memory_order_acq_rel) != 1) {
    return;
  }
  tls_ctx_destroy(ctx);
}

int64_t tls_ctx_cert_not_after(const struct tls_ctx *ctx) {
  return ctx->not_after;
}

/* ---- client session cache ---- */

/* key_hash is FNV-1a: cheap, and only a filter before strcmp. */
static uint64_t key_hash(const char *s) {
  uint64_t h = 14695981039346656037ULL;
  for (; *s != '\0'; s++) {
    h = (h ^ (uint8_t)*s) * 1099511628211ULL;
  }
  return h;
}

/* cache_find returns the slot holding key, or NULL. Lock held. The scan
 * is linear: TLS_MAX_SESSIONS integer compares per new connection. */
static struct tls_cache_slot *cache_find(struct tls_ctx *ctx, const char *key,
                                         uint64_t h) {
  if (ctx->slots == NULL) {
    return NULL;
  }
  for (size_t i = 0; i < TLS_MAX_SESSIONS; i++) {
    struct tls_cache_slot *s = &ctx->slots[i];
    if (s->key != NULL && s->hash == h && strcmp(s->key, key) == 0) {
      return s;
    }
  }
  return NULL;
}

/* cache_put stores session (taking its reference) under key: in place of
 * the key's older session, else in the ring's oldest slot. 0 or -1. */
static int cache_put(struct tls_ctx *ctx, const char *key,
                     SSL_SESSION *session) {
  uint64_t h = key_hash(key);
  char *copy = strdup(key);
  if (copy == NULL) {
    return -1;
  }
  pthread_mutex_lock(&ctx->lock);
  if (ctx->slots == NULL) {
    ctx->slots = calloc(TLS_MAX_SESSIONS, sizeof(*ctx->slots));
  }
  struct tls_cache_slot *s = ctx->slots ? cache_find(ctx, key, h) : NULL;
  if (s == NULL && ctx->slots != NULL) {
    s = &ctx->slots[ctx->next];
    ctx->next = (ctx->next + 1) % TLS_MAX_SESSIONS;
    free(s->key);
    s->key = copy;
    s->hash = h;
    copy = NULL;
  }
  if (s != NULL) {
    SSL_SESSION_free(s->session);
    s->session = session;
  }
  pthread_mutex_unlock(&ctx->lock);
  free(copy);
  return s != NULL ? 0 : -1;
}

/* cache_get returns a new reference to key's session, or NULL. A TLS 1.3
 * ticket is offered again rather than used once (RFC 8446 §C.4 asks the
 * latter for privacy): between two MTAs the connections are linkable by
 * address and name anyway, parallel deliveries to one host would
 * otherwise mostly miss, and every connection files fresh tickets. */
static SSL_SESSION *cache_get(struct tls_ctx *ctx, const char *key) {
  pthread_mutex_lock(&ctx->lock);
  struct tls_cache_slot *s = cache_find(ctx, key, key_hash(key));
  SSL_SESSION *session = s != NULL ? s->session : NULL;
  if (session != NULL) {
    SSL_SESSION_up_ref(session);
  }
  pthread_mutex_unlock(&ctx->lock);
  return session;
}

/* tls_on_new_session files a session the server gave (a TLS 1.2 session
 * at the end of the handshake, TLS 1.3 tickets any time after) under the
 * connection's key. Returns 1 when the cache took the reference. */
static int tls_on_new_session(SSL *ssl, SSL_SESSION *session) {
  struct tls *t = SSL_get_app_data(ssl);
  if (t == NULL || t->session_key == NULL ||
      !SSL_SESSION_is_resumable(session)) {
    return 0;
  }
  return cache_put(t->ctx, t->session_key, session) == 0;
}

/* ---- sessions ---- */

/* tls_alloc makes a session on ctx with its memory BIOs. */
static struct tls *tls_alloc(struct tls_ctx *ctx, int is_server) {
  struct tls *t = calloc(1, sizeof(*t));
  if (t == NULL) {
    return NULL;
  }
  t->ssl = SSL_new(ctx->ssl);
  t->in = BIO_new(BIO_s_mem());
  t->out = BIO_new(BIO_s_mem());
  if (t->ssl == NULL || t->in == NULL || t->out == NULL) {
    SSL_free(t->ssl);
    BIO_free(t->in);
    BIO_free(t->out);
    free(t);
    ERR_clear_error();
    return NULL;
  }
  /* An empty input BIO must read as "retry" (WANT_READ), never as EOF. */
  BIO_set_mem_eof_return(t->in, -1);
  SSL_set_bio(t->ssl, t->in, t->out);
  SSL_set_app_data(t->ssl, t);
  t->is_server = is_server;
  if (is_server) {
    SSL_set_accept_state(t->ssl);
  } else {
    SSL_set_connect_state(t->ssl);
  }
  tls_ctx_up_ref(ctx);
  t->ctx = ctx;
  return t;
}

struct tls *tls_new_server(struct tls_ctx *ctx) {
  assert(ctx->is_server);
  return tls_alloc(ctx, 1);
}

/* tlsa_usable keeps the records RFC 7672 §3.1.3 lets a client use:
 * DANE-TA(2) and DANE-EE(3), known selectors, and digests of the right
 * length (a malformed record is unusable, RFC 7671 §4.1). */
static int tlsa_usable(const struct tls_tlsa *r) {
  if ((r->usage != 2 && r->usage != 3) || r->selector > 1 || r->data == NULL) {
    return 0;
  }
  switch (r->mtype) {
  case 0:
    return r->data_len > 0 && r->data_len <= TLS_MAX_TLSA_DATA;
  case 1:
    return r->data_len == SHA256_DIGEST_LENGTH;
  case 2:
    return r->data_len == SHA512_DIGEST_LENGTH;
  default:
    return 0;
  }
}

/* tls_copy_params copies the caller's names, usable TLSA records (the
 * first TLS_MAX_TLSA) and session key. Returns 0, or -1 out of memory. */
static int tls_copy_params(struct tls *t, const struct tls_client_params *p) {
  for (size_t i = 0; i < p->num_names && t->num_names < TLS_MAX_NAMES; i++) {
    if (p->names[i] != NULL) {
      t->names[t->num_names] = strdup(p->names[i]);
      if (t->names[t->num_names++] == NULL) {
        return -1;
      }
    }
  }
  for (size_t i = 0; i < p->num_tlsa && t->num_tlsa < TLS_MAX_TLSA; i++) {
    if (!tlsa_usable(&p->tlsa[i])) {
      continue;
    }
    uint8_t *data = malloc(p->tlsa[i].data_len);
    if (data == NULL) {
      return -1;
    }
    memcpy(data, p->tlsa[i].data, p->tlsa[i].data_len);
    t->tlsa[t->num_tlsa] = p->tlsa[i];
    t->tlsa[t->num_tlsa].data = data;
    t->tlsa_data[t->num_tlsa++] = data;
  }
  if (p->session_key != NULL) {
    t->session_key = strdup(p->session_key);
    if (t->session_key == NULL) {
      return -1;
    }
  }
  return 0;
}

/* is_ip_literal: RFC 6066 §3 forbids IP addresses in SNI. */
static int is_ip_literal(const char *s) {
  uint8_t addr[16];
  return s[0] == '[' || inet_pton(AF_INET, s, addr) == 1 ||
         inet_pton(AF_INET6, s, addr) == 1;
}

/* tls_set_sni sends name as SNI (RFC 6066 §3: a host name without the
 * trailing dot). Anything that is not a host name sends none. 0 or -1. */
static int tls_set_sni(struct tls *t, const char *sni) {
  size_t len = strlen(sni);
  if (len > 0 && sni[len - 1] == '.') {
    len--;
  }
  char name[TLS_MAX_DNS_NAME + 1];
  if (len == 0 || len > TLS_MAX_DNS_NAME) {
    return 0;
  }
  memcpy(name, sni, len);
  name[len] = '\0';
  if (is_ip_literal(name)) {
    return 0;
  }
  return SSL_set_tlsext_host_name(t->ssl, name) ? 0 : -1;
}

static enum tls_status tls_handshake_step(struct tls *t);

struct tls *tls_new_client(struct tls_ctx *ctx,
                           const struct tls_client_params *params) {
  assert(!ctx->is_server);
  struct tls *t = tls_alloc(ctx, 0);
  if (t == NULL) {
    return NULL;
  }
  if (params != NULL &&
      (tls_copy_params(t, params) != 0 ||
       (params->sni != NULL && tls_set_sni(t, params->sni) != 0))) {
    tls_free(t);
    return NULL;
  }
  if (t->session_key != NULL) {
    SSL_SESSION *session = cache_get(ctx, t->session_key);
    if (session != NULL) {
      SSL_set_session(t->ssl, session); /* takes its own reference */
      SSL_SESSION_free(session);
    }
  }
  /* Queue the ClientHello now; only a local failure can stop it. */
  if (tls_handshake_step(t) == TLS_ERROR) {
    tls_free(t);
    return NULL;
  }
  return t;
}

void tls_free(struct tls *t) {
  if (t == NULL) {
    return;
  }
  SSL_free(t->ssl); /* and both BIOs */
  buf_free(&t->pending);
  for (size_t i = 0; i < t->num_names; i++) {
    free(t->names[i]);
  }
  for (size_t i = 0; i < t->num_tlsa; i++) {
    free(t->tlsa_data[i]);
  }
  free(t->session_key);
  tls_ctx_free(t->ctx);
  free(t);
}

/* ---- driving ---- */

/* tls_write_now encrypts plaintext into the output BIO. The memory BIO
 * takes everything, so SSL_write never stops short; any failure is
 * fatal and the rest of the plaintext is not sent. 0 or -1. */
static int tls_write_now(struct tls *t, const uint8_t *p, size_t len) {
  while (len > 0) {
    int step = len > TLS_IO_STEP ? TLS_IO_STEP : (int)len;
    ERR_clear_error();
    int n = SSL_write(t->ssl, p, step);
    if (n <= 0) {
      tls_fail(t, "write", SSL_get_error(t->ssl, n));
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* tls_send_close queues close_notify (RFC 8446 §6.1). */
static void tls_send_close(struct tls *t) {
  ERR_clear_error();
  SSL_shutdown(t->ssl); /* 0: sent, the peer's not yet seen: fine */
  ERR_clear_error();
  t->closed = 1;
}

static void tls_verify_peer(struct tls *t);

/* tls_flush_tickets sends the server's TLS 1.3 NewSessionTickets now.
 * BoringSSL holds them back until the server's first write (so a client
 * that never reads cannot stall a blocking server); an SMTP client may
 * well QUIT before the server writes, and a memory BIO never blocks, so
 * a zero-byte write pushes them out at once. Its return value means
 * nothing (0, SSL_ERROR_SYSCALL). */
static void tls_flush_tickets(struct tls *t) {
  ERR_clear_error();
  SSL_write(t->ssl, "", 0);
  ERR_clear_error();
}

/* tls_on_handshake_done records what the handshake settled, judges the
 * server (client side), then sends what waited for it. */
static enum tls_status tls_on_handshake_done(struct tls *t) {
  t->done = 1;
  if (t->is_server) {
    const char *name = SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
    if (name != NULL && strlen(name) <= TLS_MAX_DNS_NAME) {
      strcpy(t->sni, name);
      t->has_sni = 1;
    }
    tls_flush_tickets(t);
  } else {
    tls_verify_peer(t);
  }
  if (t->pending.len > 0) {
    int rc = tls_write_now(t, t->pending.data, t->pending.len);
    buf_free(&t->pending); /* up to TLS_MAX_PENDING: give it back */
    if (rc != 0) {
      return TLS_ERROR;
    }
  }
  if (t->close_wanted) {
    tls_send_close(t);
  }
  return TLS_OK;
}

/* tls_handshake_step advances the handshake as far as the input allows. */
static enum tls_status tls_handshake_step(struct tls *t) {
  ERR_clear_error();
  int r = SSL_do_handshake(t->ssl);
  if (r == 1) {
    return tls_on_handshake_done(t);
  }
  int e = SSL_get_error(t->ssl, r);
  if (e == SSL_ERROR_WANT_READ) {
    return TLS_OK;
  }
  return tls_fail(t, "handshake", e);
}

/* tls_read_plain decrypts every complete record buffered. Records after
 * the handshake that carry no data (TLS 1.3 tickets, KeyUpdate) are
 * handled inside SSL_read; a close_notify ends the stream after the data
 * before it has been appended. */
static enum tls_status tls_read_plain(struct tls *t, struct buf *out_plain) {
  for (;;) {
    if (buf_reserve(out_plain, TLS_READ_STEP) != 0) {
      return tls_fail_msg(t, "read: out of memory");
    }
    ERR_clear_error();
    int n = SSL_read(t->ssl, out_plain->data + out_plain->len, TLS_READ_STEP);
    if (n > 0) {
      out_plain->len += (size_t)n;
      continue;
    }
    int e = SSL_get_error(t->ssl, n);
    if (e == SSL_ERROR_WANT_READ) {
      return TLS_OK;
    }
    if (e == SSL_ERROR_ZERO_RETURN) {
      t->peer_closed = 1;
      return TLS_CLOSED;
    }
    return tls_fail(t, "read", e);
  }
}

enum tls_status tls_input(struct tls *t, struct buf *out_plain,
                          const uint8_t *in, size_t in_len) {
  if (t->failed) {
    return TLS_ERROR;
  }
  if (t->peer_closed) {
    return TLS_CLOSED; /* nothing after close_notify counts */
  }
  size_t off = 0;
  do {
    size_t n = in_len - off < TLS_INPUT_CHUNK ? in_len - off : TLS_INPUT_CHUNK;
    if (n > 0 && BIO_write(t->in, in + off, (int)n) != (int)n) {
      ERR_clear_error();
      return tls_fail_msg(t, "input: out of memory");
    }
    off += n;
    enum tls_status st = TLS_OK;
    if (!t->done) {
      st = tls_handshake_step(t);
    }
    if (st == TLS_OK && t->done) {
      st = tls_read_plain(t, out_plain);
    }
    if (st != TLS_OK) {
      return st;
    }
  } while (off < in_len);
  return TLS_OK;
}

int tls_write(struct tls *t, const uint8_t *plain, size_t plain_len) {
  if (t->failed || t->closed || t->close_wanted) {
    return -1;
  }
  if (plain_len == 0) {
    return 0;
  }
  if (t->done) {
    return tls_write_now(t, plain, plain_len);
  }
  if (plain_len > TLS_MAX_PENDING - t->pending.len) {
    tls_fail_msg(t, "write: more than %d bytes before the handshake",
                 TLS_MAX_PENDING);
    return -1;
  }
  if (buf_append(&t->pending, plain, plain_len) != 0) {
    tls_fail_msg(t, "write: out of memory");
    return -1;
  }
  return 0;
}

void tls_close(struct tls *t) {
  if (t->failed || t->closed || t->close_wanted) {
    return;
  }
  if (!t->done) {
    t->close_wanted = 1; /* after the queued plaintext, once it can go */
    return;
  }
  tls_send_close(t);
}

int tls_take_output(struct tls *t, struct buf *out) {
  size_t n;
  while ((n = BIO_pending(t->out)) > 0) {
    int step = n > TLS_IO_STEP ? TLS_IO_STEP : (int)n;
    if (buf_reserve(out, (size_t)step) != 0) {
      return -1; /* the bytes stay in the BIO for the next call */
    }
    int got = BIO_read(t->out, out->data + out->len, step);
    if (got <= 0) {
      ERR_clear_error();
      return -1;
    }
    out->len += (size_t)got;
  }
  return 0;
}

/* ---- names (RFC 6125) ---- */

/* ascii_eq compares ASCII case-insensitively, as DNS does (RFC 4343). */
static int ascii_eq(const char *a, const char *b, size_t len) {
  for (size_t i = 0; i < len; i++) {
    unsigned char x = (unsigned char)a[i];
    unsigned char y = (unsigned char)b[i];
    if (x >= 'A' && x <= 'Z') {
      x = (unsigned char)(x - 'A' + 'a');
    }
    if (y >= 'A' && y <= 'Z') {
      y = (unsigned char)(y - 'A' + 'a');
    }
    if (x != y) {
      return 0;
    }
  }
  return 1;
}

/* dns_wildcard classifies a name (trailing dot removed): 1 for "*.rest"
 * with two or more labels in rest, 0 for no '*', -1 for any other '*'
 * (partial or inner wildcards, "*.com"), which then matches nothing. */
static int dns_wildcard(const char *name, size_t len) {
  const char *star = memchr(name, '*', len);
  if (star == NULL) {
    return 0;
  }
  if (star != name || len < 2 || name[1] != '.' ||
      memchr(name + 1, '*', len - 1) != NULL) {
    return -1;
  }
  const char *rest = name + 2;
  size_t rest_len = len - 2;
  const char *dot = memchr(rest, '.', rest_len);
  if (dot == NULL || dot == rest || dot == rest + rest_len - 1) {
    return -1;
  }
  return 1;
}

/* dns_name_match compares a presented name with a reference name, either
 * of which may be a wildcard standing for exactly one leftmost label: the
 * certificate's per RFC 6125 §6.4.3, the reference's when it is an
 * MTA-STS mx pattern (RFC 8461 §4.1). Two wildcards match if equal. */
static int dns_name_match(const char *pres, size_t pres_len, const char *ref,
                          size_t ref_len) {
  if (pres_len > 0 && pres[pres_len - 1] == '.') {
    pres_len--;
  }
  if (ref_len > 0 && ref[ref_len - 1] == '.') {
    ref_len--;
  }
  int pw = dns_wildcard(pres, pres_len);
  int rw = dns_wildcard(ref, ref_len);
  if (pres_len == 0 || ref_len == 0 || pw < 0 || rw < 0) {
    return 0;
  }
  if (pw == rw) {
    return pres_len == ref_len && ascii_eq(pres, ref, ref_len);
  }
  const char *plain = pw ? ref : pres;
  size_t plain_len = pw ? ref_len : pres_len;
  const char *wild = pw ? pres : ref;
  size_t wild_len = pw ? pres_len : ref_len;
  const char *dot = memchr(plain, '.', plain_len);
  if (dot == NULL || dot == plain) {
    return 0;
  }
  size_t rest_len = plain_len - (size_t)(dot + 1 - plain);
  return rest_len == wild_len - 2 && ascii_eq(dot + 1, wild + 2, rest_len);
}

/* presented_matches checks one name from the certificate against every
 * reference name. An embedded NUL is an attack, not a name. */
static int presented_matches(const uint8_t *data, size_t len,
                             char *const *names, size_t num_names) {
  if (memchr(data, '\0', len) != NULL) {
    return 0;
  }
  for (size_t i = 0; i < num_names; i++) {
    if (dns_name_match((const char *)data, len, names[i], strlen(names[i]))) {
      return 1;
    }
  }
  return 0;
}

/* cert_cn_utf8 returns the last (most specific) subject CN as UTF-8 for
 * OPENSSL_free, with its length in *out_len; NULL if there is none. */
static uint8_t *cert_cn_utf8(const X509 *cert, size_t *out_len) {
  const X509_NAME *subject = X509_get_subject_name(cert);
  int idx = -1;
  int last = -1;
  while ((idx = X509_NAME_get_index_by_NID(subject, NID_commonName, idx)) >=
         0) {
    last = idx;
  }
  if (last < 0) {
    return NULL;
  }
  const X509_NAME_ENTRY *e = X509_NAME_get_entry(subject, last);
  uint8_t *utf8 = NULL;
  int len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(e));
  if (len < 0) {
    ERR_clear_error();
    return NULL;
  }
  *out_len = (size_t)len;
  return utf8;
}

/* cert_matches_names checks the DNS-IDs (subjectAltName dNSName), or the
 * subject CN when there are none (RFC 6125 §6.4.4), against names. */
static int cert_matches_names(const X509 *cert, char *const *names,
                              size_t num_names) {
  GENERAL_NAMES *gens =
      X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
  size_t num_dns = 0;
  int found = 0;
  for (size_t i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens); i++) {
    const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
    if (g->type == GEN_DNS) {
      num_dns++;
      found =
          found || presented_matches(ASN1_STRING_get0_data(g->d.dNSName),
                                     (size_t)ASN1_STRING_length(g->d.dNSName),
                                     names, num_names);
    }
  }
  GENERAL_NAMES_free(gens);
  ERR_clear_error(); /* a missing extension queues nothing, a bad one does */
  if (num_dns > 0) {
    return found;
  }
  size_t len = 0;
  uint8_t *cn = cert_cn_utf8(cert, &len);
  found = cn != NULL && presented_matches(cn, len, names, num_names);
  OPENSSL_free(cn);
  return found;
}

/* cert_cn_text copies the subject CN for logs: truncated, and with control
 * bytes replaced, since it is the peer's text. */
static void cert_cn_text(const X509 *cert, char *out, size_t out_len) {
  size_t len = 0;
  uint8_t *cn = cert_cn_utf8(cert, &len);
  out[0] = '\0';
  if (cn == NULL) {
    return;
  }
  if (len >= out_len) {
    len = out_len - 1;
  }
  for (size_t i = 0; i < len; i++) {
    out[i] = (cn[i] < 0x20 || cn[i] == 0x7f) ? '?' : (char)cn[i];
  }
  out[len] = '\0';
  OPENSSL_free(cn);
}

/* ---- verification ---- */

/* verify_fail records a verification failure (not a TLS failure). */
__attribute__((format(printf, 2, 3))) static void
verify_fail(struct tls *t, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t->verify_err, sizeof(t->verify_err), fmt, ap);
  va_end(ap);
  t->verify = TLS_VERIFY_FAILED;
}

/* name_mismatch says which name the certificate lacked. */
static void name_mismatch(const struct tls *t, char *why, size_t why_len) {
  if (t->num_names == 0) {
    snprintf(why, why_len, "name mismatch: no name to check");
  } else {
    snprintf(why, why_len, "name mismatch: wanted %s", t->names[0]);
  }
}

/* chain_verify checks signatures and dates from chain's leaf up to a
 * certificate in store, the peer's chain serving as intermediates.
 * Returns 1, or 0 with the verifier's reason in why. */
static int chain_verify(X509_STORE *store, STACK_OF(X509) * chain,
                        unsigned long flags, int purpose, char *why,
                        size_t why_len) {
  X509_STORE_CTX *sc = X509_STORE_CTX_new();
  if (sc == NULL ||
      !X509_STORE_CTX_init(sc, store, sk_X509_value(chain, 0), chain)) {
    X509_STORE_CTX_free(sc);
    ERR_clear_error();
    snprintf(why, why_len, "out of memory");
    return 0;
  }
  if (flags != 0) {
    X509_VERIFY_PARAM_set_flags(X509_STORE_CTX_get0_param(sc), flags);
  }
  if (purpose != 0) {
    X509_STORE_CTX_set_purpose(sc, purpose);
  }
  int ok = X509_verify_cert(sc) == 1;
  if (!ok) {
    snprintf(why, why_len, "%s",
             X509_verify_cert_error_string(X509_STORE_CTX_get_error(sc)));
  }
  X509_STORE_CTX_free(sc);
  ERR_clear_error();
  return ok;
}

/* pkix_verify: a chain to one of the CA file's anchors, for a TLS server
 * (extendedKeyUsage), and a name match. */
static void pkix_verify(struct tls *t, STACK_OF(X509) * chain) {
  char why[TLS_ERR_LEN];
  if (!t->ctx->has_ca) {
    verify_fail(t, "no CA file to verify against");
    return;
  }
  if (!chain_verify(SSL_CTX_get_cert_store(t->ctx->ssl), chain, 0,
                    X509_PURPOSE_SSL_SERVER, why, sizeof(why))) {
    verify_fail(t, "%s", why);
    return;
  }
  if (!cert_matches_names(sk_X509_value(chain, 0), t->names, t->num_names)) {
    name_mismatch(t, why, sizeof(why));
    verify_fail(t, "%s", why);
    return;
  }
  t->verify = TLS_VERIFY_OK;
}

/* tlsa_match: does cert match the record's selector and matching type
 * (RFC 6698 §2.1.2-2.1.3)? 1 or 0. */
static int tlsa_match(const struct tls_tlsa *r, X509 *cert) {
  uint8_t *der = NULL;
  int der_len = r->selector == 0
                    ? i2d_X509(cert, &der)
                    : i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
  if (der_len <= 0) {
    ERR_clear_error();
    return 0;
  }
  uint8_t digest[SHA512_DIGEST_LENGTH];
  const uint8_t *got = der;
  size_t got_len = (size_t)der_len;
  if (r->mtype == 1) {
    got = SHA256(der, got_len, digest);
    got_len = SHA256_DIGEST_LENGTH;
  } else if (r->mtype == 2) {
    got = SHA512(der, got_len, digest);
    got_len = SHA512_DIGEST_LENGTH;
  }
  int ok = got_len == r->data_len && memcmp(got, r->data, got_len) == 0;
  OPENSSL_free(der);
  return ok;
}

/* dane_ta_by_key: for a DANE-TA record holding a bare public key (2 1 0),
 * the anchor is the top certificate of the chain if that key signed it;
 * trusting that certificate then stands for trusting the key. */
static X509 *dane_ta_by_key(STACK_OF(X509) * chain, const struct tls_tlsa *r) {
  CBS cbs;
  CBS_init(&cbs, r->data, r->data_len);
  EVP_PKEY *key = EVP_parse_public_key(&cbs);
  X509 *top = sk_X509_value(chain, sk_X509_num(chain) - 1);
  X509 *anchor = NULL;
  if (key != NULL && CBS_len(&cbs) == 0 && X509_verify(top, key) == 1) {
    X509_up_ref(top);
    anchor = top;
  }
  EVP_PKEY_free(key);
  ERR_clear_error();
  return anchor;
}

/* dane_ta_find returns (a new reference to) the trust anchor a DANE-TA
 * record names: a certificate the server sent above its leaf, or, when the
 * record holds the whole certificate or key, that one even if the server
 * left it out (RFC 7671 §5.2.2). NULL if none. */
static X509 *dane_ta_find(STACK_OF(X509) * chain, const struct tls_tlsa *r) {
  for (size_t d = 1; d < sk_X509_num(chain); d++) {
    X509 *cert = sk_X509_value(chain, d);
    if (tlsa_match(r, cert)) {
      X509_up_ref(cert);
      return cert;
    }
  }
  if (r->mtype != 0) {
    return NULL;
  }
  if (r->selector == 1) {
    return dane_ta_by_key(chain, r);
  }
  const uint8_t *p = r->data;
  X509 *cert = d2i_X509(NULL, &p, (long)r->data_len);
  if (cert == NULL || p != r->data + r->data_len) {
    X509_free(cert);
    cert = NULL;
  }
  ERR_clear_error();
  return cert;
}

/* dane_ta_check tries one DANE-TA record (RFC 7672 §3.1.2): the chain from
 * the leaf must verify up to the anchor it names, and the leaf must match
 * a reference name (§3.2.2). 1 verified, 0 anchored but failed (why set),
 * -1 the record names no anchor here. */
static int dane_ta_check(struct tls *t, STACK_OF(X509) * chain,
                         const struct tls_tlsa *r, char *why, size_t why_len) {
  X509 *anchor = dane_ta_find(chain, r);
  if (anchor == NULL) {
    return -1;
  }
  X509_STORE *store = X509_STORE_new();
  int ok = 0;
  if (store == NULL || !X509_STORE_add_cert(store, anchor)) {
    snprintf(why, why_len, "out of memory");
  } else {
    /* PARTIAL_CHAIN: the anchor may be an intermediate, not a root. */
    ok = chain_verify(store, chain, X509_V_FLAG_PARTIAL_CHAIN, 0, why, why_len);
  }
  X509_STORE_free(store);
  X509_free(anchor);
  ERR_clear_error();
  if (ok &&
      !cert_matches_names(sk_X509_value(chain, 0), t->names, t->num_names)) {
    name_mismatch(t, why, why_len);
    ok = 0;
  }
  return ok;
}

/* dane_verify: the TLSA records alone decide (RFC 7672 §2.2: with usable
 * records PKIX is not consulted). DANE-EE (§3.1.1) checks only the leaf's
 * certificate or key, no names or dates; DANE-TA is dane_ta_check. */
static void dane_verify(struct tls *t, STACK_OF(X509) * chain) {
  X509 *leaf = sk_X509_value(chain, 0);
  for (size_t i = 0; i < t->num_tlsa; i++) {
    if (t->tlsa[i].usage == 3 && tlsa_match(&t->tlsa[i], leaf)) {
      t->verify = TLS_VERIFY_DANE_OK;
      return;
    }
  }
  char why[TLS_ERR_LEN] = "";
  for (size_t i = 0; i < t->num_tlsa; i++) {
    char this_why[TLS_ERR_LEN] = "";
    if (t->tlsa[i].usage != 2) {
      continue;
    }
    int rc = dane_ta_check(t, chain, &t->tlsa[i], this_why, sizeof(this_why));
    if (rc == 1) {
      t->verify = TLS_VERIFY_DANE_OK;
      return;
    }
    if (rc == 0 && why[0] == '\0') {
      memcpy(why, this_why, sizeof(why)); /* the first anchor's reason */
    }
  }
  verify_fail(t, "%s", why[0] != '\0' ? why : "no TLSA record matched");
}

/* tls_verify_peer judges the server's certificate once the handshake is
 * done. On resumption the chain is the one the session stored, so the
 * answer is the same as on the full handshake, judged afresh. */
static void tls_verify_peer(struct tls *t) {
  STACK_OF(X509) *chain = SSL_get_peer_full_cert_chain(t->ssl);
  if (chain == NULL || sk_X509_num(chain) == 0) {
    verify_fail(t, "no certificate");
    return;
  }
  cert_cn_text(sk_X509_value(chain, 0), t->peer_cn, sizeof(t->peer_cn));
  if (t->num_tlsa > 0) {
    dane_verify(t, chain);
  } else {
    pkix_verify(t, chain);
  }
}

/* ---- getters ---- */

int tls_handshake_done(const struct tls *t) {
  return t->done;
}

const char *tls_version(const struct tls *t) {
  return t->done ? SSL_get_version(t->ssl) : "";
}

const char *tls_cipher(const struct tls *t) {
  const SSL_CIPHER *c = t->done ? SSL_get_current_cipher(t->ssl) : NULL;
  return c != NULL ? SSL_CIPHER_standard_name(c) : "";
}

int tls_cipher_bits(const struct tls *t) {
  const SSL_CIPHER *c = t->done ? SSL_get_current_cipher(t->ssl) : NULL;
  return c != NULL ? SSL_CIPHER_get_bits(c, NULL) : 0;
}

int tls_session_reused(const struct tls *t) {
  return t->done && SSL_session_reused(t->ssl);
}

const char *tls_sni(const struct tls *t) {
  return t->has_sni ? t->sni : NULL;
}

enum tls_verify_result tls_verify(const struct tls *t) {
  return t->verify;
}

const char *tls_verify_error(const struct tls *t) {
  return t->verify_err;
}

const char *tls_peer_cn(const struct tls *t) {
  return t->peer_cn;
}

const char *tls_error(const struct tls *t) {
  return t->err;
}
