/* crypto/tls.h — sans-I/O TLS on BoringSSL: the adapter between a
 * connection's ciphertext and the SMTP engines' plaintext.
 *
 * Owns: TLS contexts (certificate, key, protocol and cipher policy, ticket
 * keys, the client's session cache) and TLS sessions driven through memory
 * BIOs. Never touches a socket: the host (core/daemon) feeds the bytes
 * it received with tls_input(), which hands back the plaintext, and sends
 * whatever tls_take_output() gives it. Plaintext written before the
 * handshake is done waits inside and leaves encrypted once it is. The
 * clock is read only inside BoringSSL (certificate dates, session and
 * ticket lifetimes, ticket key rotation).
 *
 * Policy: TLS 1.2 and 1.3 only (min_version "1.3" raises the floor); TLS
 * 1.2 with ECDHE and AEAD ciphers only (AES-GCM, ChaCha20-Poly1305); no
 * compression, no renegotiation. Server: certificate chain and key from
 * PEM files, checked to match at load; session tickets (RFC 5077 / TLS 1.3
 * PSK) with keys BoringSSL rotates (every 48 hours), TLS 1.3 tickets sent
 * as soon as the handshake is done; SNI is read and reported. Client:
 * sends SNI, resumes sessions from a per-context cache keyed by the
 * caller's string (the destination; TLS_MAX_SESSIONS entries, the oldest
 * replaced; a ticket is offered until a newer one replaces it), accepts
 * Ed25519 server keys besides ECDSA and RSA, and reports what it could
 * verify of the server's certificate: a chain to the CA file and a name
 * match (RFC 6125, wildcard in the leftmost label only), or DANE (RFC
 * 7672: TLSA usages DANE-TA(2) and DANE-EE(3), selectors cert(0) and
 * SPKI(1), matching full(0), SHA2-256(1), SHA2-512(2)). Verification
 * failures do not fail the handshake: the caller's policy decides what a
 * failure means (opportunistic TLS goes on, DANE or MTA-STS enforcement
 * defers).
 *
 * Thread: a tls_ctx is immutable after creation apart from reference
 * counts, its ticket keys and its session cache (all locked inside), so
 * every worker shares one; a struct tls belongs to one thread. Pointers
 * from getters stay valid until tls_free(). */
#ifndef POSTSEAL_CRYPTO_TLS_H
#define POSTSEAL_CRYPTO_TLS_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/* Limits. */
#define TLS_MAX_TLSA 16           /* TLSA records considered per host */
#define TLS_MAX_NAMES 8           /* names a certificate may match */
#define TLS_MAX_SESSIONS 4096     /* client session cache entries */
#define TLS_MAX_PENDING (1 << 20) /* plaintext queued before the handshake */

struct tls_server_config {
  const char *cert_file;   /* PEM: leaf first, then the chain */
  const char *key_file;    /* PEM: RSA, ECDSA or Ed25519 private key */
  const char *min_version; /* "1.2" (default when NULL) or "1.3" */
};

struct tls_client_config {
  const char *ca_file;     /* PEM bundle of trust anchors; NULL: none (then
                              only DANE can verify) */
  const char *min_version; /* "1.2" (default when NULL) or "1.3" */
};

struct tls_ctx;

/* tls_ctx_new_server loads the certificate chain and key. Returns NULL with
 * a one-line reason naming the file in err ("cert.pem: No such file or
 * directory", "cert.pem: no usable certificate (PEM routines:
 * NO_START_LINE)", "key.pem: key does not match the certificate in
 * cert.pem", "min_version 1.1: want 1.2 or 1.3", ...). The context starts
 * with one reference. tls_ctx_new_client likewise, for the CA file. */
struct tls_ctx *tls_ctx_new_server(const struct tls_server_config *config,
                                   char *err, size_t err_len);
struct tls_ctx *tls_ctx_new_client(const struct tls_client_config *config,
                                   char *err, size_t err_len);
void tls_ctx_up_ref(struct tls_ctx *ctx);
void tls_ctx_free(struct tls_ctx *ctx); /* drops one reference; NULL ok */

/* The certificate's notAfter (seconds since the epoch), for a metric. */
int64_t tls_ctx_cert_not_after(const struct tls_ctx *ctx);

/* A TLSA record (RFC 6698 §2.1), as the DNS gave it. */
struct tls_tlsa {
  uint8_t usage;    /* 2 DANE-TA, 3 DANE-EE; others are ignored (RFC 7672
                       §3.1.3) */
  uint8_t selector; /* 0 full certificate, 1 SubjectPublicKeyInfo */
  uint8_t mtype;    /* 0 exact, 1 SHA2-256, 2 SHA2-512 */
  const uint8_t *data;
  size_t data_len;
};

/* What a client session checks of the server's certificate. */
struct tls_client_params {
  const char *sni; /* server name to send; NULL or an IP literal: none */
  /* Names the certificate may match (RFC 6125 DNS-ID, or the subject CN if
   * there is no DNS SAN): the next-hop host, or for MTA-STS the policy's
   * mx patterns ("*.example.com" matches one leftmost label). */
  const char *names[TLS_MAX_NAMES];
  size_t num_names;
  /* DANE: the host's TLSA records. Unusable ones (usages 0 and 1, unknown
   * selector or matching type, a digest of the wrong length) are dropped,
   * and at most TLS_MAX_TLSA kept; if none remain, PKIX decides. */
  const struct tls_tlsa *tlsa;
  size_t num_tlsa;
  const char *session_key; /* resume sessions cached under this key; NULL:
                              no resumption */
};

enum tls_verify_result {
  TLS_VERIFY_NONE,    /* handshake not finished */
  TLS_VERIFY_OK,      /* chain to a CA and a name matched (PKIX) */
  TLS_VERIFY_DANE_OK, /* a TLSA record matched (names per RFC 7672 §3.2) */
  TLS_VERIFY_FAILED,  /* see tls_verify_error() */
};

struct tls;

/* tls_new_server / tls_new_client start a session on a context (which
 * they reference). The client queues its ClientHello at once. NULL on
 * allocation failure. The params' strings and TLSA data are copied;
 * params may be NULL (no SNI, names, DANE or resumption). */
struct tls *tls_new_server(struct tls_ctx *ctx);
struct tls *tls_new_client(struct tls_ctx *ctx,
                           const struct tls_client_params *params);
void tls_free(struct tls *t);

enum tls_status {
  TLS_OK,     /* go on (more input may be needed) */
  TLS_CLOSED, /* the peer sent close_notify: no more plaintext (the
                 plaintext before it is appended; later input is
                 ignored and gives TLS_CLOSED again) */
  TLS_ERROR,  /* fatal and sticky: tls_error() says why; send
                 tls_take_output() (the alert, if BoringSSL sent one: it
                 sends none to a plain HTTP request) and close */
};

/* tls_input takes ciphertext the peer sent, advances the handshake and
 * appends the plaintext it can decrypt to out_plain. Afterwards the host
 * sends tls_take_output() (handshake messages, tickets, alerts). */
enum tls_status tls_input(struct tls *t, struct buf *out_plain,
                          const uint8_t *in, size_t in_len);

/* tls_write encrypts plaintext for the peer (queued inside until the
 * handshake is done). Returns 0, or -1 after a fatal error, on allocation
 * failure, past TLS_MAX_PENDING before the handshake, or after
 * tls_close(). Except after tls_close(), a -1 is a fatal error (sticky,
 * tls_error() says why): plaintext is never silently dropped. */
int tls_write(struct tls *t, const uint8_t *plain, size_t plain_len);

/* tls_close queues close_notify; tls_write fails afterwards. Before the
 * handshake is done, close_notify follows the queued plaintext once it
 * is. Input is still read until the peer's close_notify. */
void tls_close(struct tls *t);

/* tls_take_output appends the ciphertext to send to out and empties the
 * adapter's. Returns 0, or -1 on allocation failure (what was not
 * appended stays inside for the next call). */
int tls_take_output(struct tls *t, struct buf *out);

/* Getters. */
int tls_handshake_done(const struct tls *t);
const char *tls_version(const struct tls *t); /* "TLSv1.3"; "" before */
const char *tls_cipher(const struct tls *t);  /* IANA-style name; "" */
int tls_cipher_bits(const struct tls *t);
int tls_session_reused(const struct tls *t);
const char *tls_sni(const struct tls *t); /* server: name sent, or NULL */
/* Client: after the handshake. */
enum tls_verify_result tls_verify(const struct tls *t);
/* One line, or "": "no TLSA record matched", "certificate has expired",
 * "name mismatch: wanted mx.example.com", "no CA file to verify
 * against", or another X509 verifier reason. */
const char *tls_verify_error(const struct tls *t);
/* Client: the peer certificate's subject CN, or "" (for logs; truncated
 * to 255 bytes, control bytes replaced with '?'). */
const char *tls_peer_cn(const struct tls *t);
const char *tls_error(const struct tls *t); /* one line, or "" */

#endif
