/* crypto/dkim.h — DomainKeys Identified Mail (RFC 6376) with rsa-sha256
 * and ed25519-sha256 (RFC 8463): canonicalisation, signing, verification,
 * key records, keys.
 *
 * Owns: the DKIM-Signature and key-record tag lists (RFC 6376 §3.2), the
 * simple and relaxed canonicalisations (§3.4, streaming over the body,
 * never copying it), the choice of header fields to sign (with
 * over-signing: a name listed once more than it occurs), the signing of a
 * batch of messages in two passes (hash everything, then sign every
 * digest), the verification of a message's signatures against the key
 * records its caller fetched, and private keys (PEM load, generation, the
 * TXT record to publish).
 *
 * Never does I/O beyond reading and writing key files: the daemon's
 * wiring fetches key records (selector._domainkey.domain TXT) through its
 * DNS cache and hands them in. All private-key use goes through struct
 * dkim_signer, so keys can later live in another process.
 *
 * Policy: signing needs RSA keys of 1024 bits or more (2048 advised;
 * keygen makes 2048 by default) or Ed25519 keys. Verification fails
 * rsa-sha1 and RSA keys under 1024 bits (RFC 8301), any signature whose
 * x= has passed, and a key record whose h= excludes sha256 or whose k=
 * does not match a=. A message's signatures beyond the caller's limit are
 * ignored (not reported). Only the first DKIM_MAX_HEADERS header fields of
 * a message are looked at; a message with more still verifies against
 * those (extra ones are not signed).
 *
 * Thread: no globals; a dkim_key is immutable after load and may be
 * shared by threads; everything else belongs to one thread. */
#ifndef POSTSEAL_CRYPTO_DKIM_H
#define POSTSEAL_CRYPTO_DKIM_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define DKIM_MAX_SIGN 4          /* signatures added to one message */
#define DKIM_MAX_VERIFY 16       /* hard cap on signatures checked */
#define DKIM_MAX_HEADERS 1000    /* header fields of a message considered */
#define DKIM_MAX_SIGNED 64       /* names in h= */
#define DKIM_MAX_SIG_BYTES 1024  /* raw signature (RSA-8192) */
#define DKIM_MAX_TAG_VALUE 16384 /* longest tag value accepted */

enum dkim_alg {
  DKIM_ALG_RSA_SHA256,
  DKIM_ALG_ED25519_SHA256,
  DKIM_ALG_RSA_SHA1, /* parsed so it can be reported; never passes */
};

enum dkim_canon { DKIM_CANON_SIMPLE, DKIM_CANON_RELAXED };

/* "rsa-sha256", "ed25519-sha256", "rsa-sha1". */
const char *dkim_alg_name(enum dkim_alg a);

/* dkim_canon_parse reads "relaxed/relaxed", "simple", "relaxed/simple" ...
 * (c= syntax; a missing body part is simple). Returns 0 or -1. */
int dkim_canon_parse(const char *s, enum dkim_canon *hdr,
                     enum dkim_canon *body);

/* ---- tag lists (RFC 6376 §3.2) ------------------------------------- */

struct dkim_tag {
  const char *name; /* points into the parsed text; not NUL-terminated */
  size_t name_len;
  const char *value; /* leading and trailing FWS removed; inner FWS kept */
  size_t value_len;
};

/* dkim_tags_parse splits "a=b; c = d ;" into tags. Fails (-1, reason in
 * err) on a tag name that is not ALPHA *(ALPHA/DIGIT/"_"), a missing "=",
 * a duplicate name, more than max tags, a value over DKIM_MAX_TAG_VALUE
 * or holding bytes outside VALCHAR/FWS. An empty list and a trailing ";"
 * are fine. */
int dkim_tags_parse(const char *s, size_t len, struct dkim_tag *tags,
                    size_t max, size_t *count, char *err, size_t err_len);

/* ---- body canonicalisation (§3.4.3, §3.4.4), streaming ------------- */

struct dkim_body {
  uint8_t ctx[128]; /* SHA256_CTX, kept opaque to keep BoringSSL out */
  enum dkim_canon canon;
  int64_t limit;    /* l=: bytes of canonical body to hash; -1 all */
  uint64_t hashed;  /* canonical bytes hashed so far */
  uint64_t total;   /* canonical bytes seen, hashed or not */
  size_t crlfs;     /* empty lines held back (trailing ones vanish) */
  int wsp;          /* relaxed: a run of WSP held back */
  int cr;           /* the last byte seen was a CR */
  uint64_t line_len; /* bytes in the current (unfinished) line */
};

void dkim_body_init(struct dkim_body *b, enum dkim_canon canon,
                    int64_t limit);
void dkim_body_update(struct dkim_body *b, const uint8_t *p, size_t n);
/* dkim_body_final writes the SHA-256 of the canonical body (up to the
 * limit) and, if out_total, the canonical length (beyond the limit too). */
void dkim_body_final(struct dkim_body *b, uint8_t out[32],
                     uint64_t *out_total);

/* ---- header fields -------------------------------------------------- */

struct dkim_header {
  const uint8_t *name; /* field name, as written */
  size_t name_len;
  const uint8_t *field; /* whole field from name to before its final CRLF */
  size_t field_len;
};

/* dkim_headers_split finds the header fields of a message (CRLF line
 * ends; lone LF accepted as a line end) and where the body starts (after
 * the empty line; len when there is none). Stops after max fields.
 * Returns the number of fields. */
size_t dkim_headers_split(const uint8_t *msg, size_t len,
                          struct dkim_header *out, size_t max,
                          size_t *body_off);

/* dkim_header_canon appends one field canonicalised (with its CRLF). */
int dkim_header_canon(const struct dkim_header *h, enum dkim_canon canon,
                      struct buf *out);

/* ---- private keys and the signer ----------------------------------- */

struct dkim_key;

/* dkim_key_load reads a PEM private key: RSA (PKCS#1 or PKCS#8) or
 * Ed25519 (PKCS#8, as `openssl genpkey -algorithm ed25519` and
 * dkim_keygen write). RSA under 1024 bits is refused. NULL + reason. */
struct dkim_key *dkim_key_load(const char *path, char *err, size_t err_len);
void dkim_key_free(struct dkim_key *k);
enum dkim_alg dkim_key_alg(const struct dkim_key *k);
unsigned dkim_key_bits(const struct dkim_key *k); /* 256 for Ed25519 */

/* dkim_keygen makes a key (RSA `bits` >= 1024, or Ed25519; bits ignored)
 * and writes it as PKCS#8 PEM to a new file `path` with mode 0600
 * (refusing to overwrite one). Returns the key, or NULL + reason. */
struct dkim_key *dkim_keygen(enum dkim_alg alg, unsigned bits,
                             const char *path, char *err, size_t err_len);

/* dkim_key_record appends the TXT record to publish at
 * SELECTOR._domainkey.DOMAIN: "v=DKIM1; k=rsa; p=BASE64" (p= the
 * SubjectPublicKeyInfo for RSA, the raw 32-byte key for Ed25519). */
int dkim_key_record(const struct dkim_key *k, struct buf *out);

/* All private-key use. sign writes the signature of a 32-byte SHA-256
 * digest of the canonical header data (RSASSA-PKCS1-v1_5 with SHA-256
 * for RSA; PureEdDSA over the 32 bytes for Ed25519, RFC 8463 §3) and
 * returns its length, or -1. */
struct dkim_signer {
  int (*sign)(void *arg, const struct dkim_key *key, const uint8_t digest[32],
              uint8_t *sig, size_t sig_cap);
  void *arg;
};

/* The in-process signer (arg unused). */
extern const struct dkim_signer dkim_local_signer;

/* ---- signing -------------------------------------------------------- */

struct dkim_sign_spec {
  const char *domain;   /* d= */
  const char *selector; /* s= */
  const struct dkim_key *key;
  enum dkim_canon hdr_canon, body_canon; /* c= */
  int64_t timestamp; /* t= (seconds since the epoch); < 0: none */
  int64_t expire;    /* x=; < 0: none; else > timestamp */
  const char *identity; /* i=; NULL: none */
};

struct dkim_sign_headers {
  /* Names to sign, each once when present (case-insensitive), in this
   * order; absent ones are skipped unless over-signed. */
  const char *const *sign;
  size_t num_sign;
  /* Names signed once more than they occur (absent: listed once), so a
   * field added later breaks the signature. */
  const char *const *oversign;
  size_t num_oversign;
};

/* dkim_sign_default_headers: From, Sender, Reply-To, Subject, Date,
 * Message-ID, To, Cc, In-Reply-To, References, MIME-Version,
 * Content-Type, Content-Transfer-Encoding, Content-Disposition,
 * Content-ID, List-Id, List-Unsubscribe, List-Unsubscribe-Post,
 * List-Post, Resent-*; over-signed: the RFC 5322 fields that occur at
 * most once (From, Sender, Reply-To, Subject, Date, Message-ID, To, Cc,
 * In-Reply-To, References) and List-Unsubscribe, List-Unsubscribe-Post. */
extern const struct dkim_sign_headers dkim_sign_default_headers;

/* One message's signatures between the two passes. */
struct dkim_sign_job {
  size_t num;
  struct buf hdr[DKIM_MAX_SIGN]; /* "DKIM-Signature: v=1; ... b=" */
  uint8_t digest[DKIM_MAX_SIGN][32];
  const struct dkim_key *key[DKIM_MAX_SIGN];
};

/* dkim_sign_begin is the hashing pass: the body hashed once per body
 * canonicalisation used by specs, the header fields chosen, each
 * signature's header built up to "b=" and the digest of the header data
 * taken. msg is the whole message (header fields, empty line, body).
 * A message without a From field is refused (-1 + reason): RFC 6376
 * §5.4 requires From to be signed. */
int dkim_sign_begin(struct dkim_sign_job *job, const uint8_t *msg,
                    size_t len, const struct dkim_sign_spec *specs,
                    size_t num_specs, const struct dkim_sign_headers *h,
                    char *err, size_t err_len);

/* dkim_sign_end is the signing pass: each digest signed through signer,
 * and the finished fields ("DKIM-Signature: ...\r\n", folded under 80
 * columns) appended to out in the order of the specs. The job is freed
 * either way. Returns 0, or -1 + reason (nothing appended). */
int dkim_sign_end(struct dkim_sign_job *job, const struct dkim_signer *signer,
                  struct buf *out, char *err, size_t err_len);

void dkim_sign_job_free(struct dkim_sign_job *job);

/* ---- verification --------------------------------------------------- */

/* Results as RFC 8601 §2.7.1 names them. */
enum dkim_result {
  DKIM_PASS,
  DKIM_FAIL,      /* signature or body hash mismatch, rsa-sha1, key too
                     short, expired, key revoked (p= empty) */
  DKIM_NEUTRAL,   /* not used for now: reserved */
  DKIM_TEMPERROR, /* the key could not be fetched for now */
  DKIM_PERMERROR, /* bad signature syntax, missing tags, no key record,
                     a record that is not a key, unknown algorithm,
                     From not signed, i= outside d= */
};

/* "pass", "fail", "neutral", "temperror", "permerror". */
const char *dkim_result_name(enum dkim_result r);

struct dkim_verdict {
  enum dkim_result result;
  char reason[128];   /* short, for Authentication-Results comments */
  char domain[256];   /* d= ("" if unparsable) */
  char selector[256]; /* s= */
  char identity[256]; /* i= ("@" d= when absent) */
  enum dkim_alg alg;
  char b_prefix[16];      /* first 8 characters of b= (RFC 6008) */
  unsigned key_bits;      /* of the key used; 0 if none */
  int testing;            /* key record t=y */
  int64_t body_limit;     /* l=, or -1 */
  uint64_t unsigned_body; /* canonical body bytes beyond l= (appended
                             content nobody signed) */
};

/* Key lookup outcome the caller hands in. */
enum dkim_key_status {
  DKIM_KEY_FOUND,    /* txt holds the record(s) */
  DKIM_KEY_NOTFOUND, /* NXDOMAIN / NODATA: permerror */
  DKIM_KEY_TEMPFAIL, /* timeout, SERVFAIL: temperror */
};

struct dkim_verify;

/* dkim_verify_new parses the message's header fields and its first
 * max_sigs DKIM-Signature fields (max_sigs capped at DKIM_MAX_VERIFY).
 * Signatures whose verdict needs no key (bad syntax, missing tags: a
 * permerror; rsa-sha1 or x= before now: a fail) get it at once; the
 * others wait for their key. now is seconds since the epoch. msg must
 * stay valid until dkim_verify_free. NULL only when out of memory. */
struct dkim_verify *dkim_verify_new(const uint8_t *msg, size_t len,
                                    size_t max_sigs, int64_t now);
void dkim_verify_free(struct dkim_verify *v);

/* Signatures found (at most max_sigs). */
size_t dkim_verify_count(const struct dkim_verify *v);

/* dkim_verify_query: "SELECTOR._domainkey.DOMAIN" for signature i when
 * it waits for its key; NULL when its verdict is already known. */
const char *dkim_verify_query(const struct dkim_verify *v, size_t i);

/* dkim_verify_key hands in signature i's key lookup: for FOUND, the TXT
 * records (each record's character-strings already concatenated); the
 * first that parses as a DKIM key is used (none: permerror). Verifies at
 * once (body hashes shared between signatures with the same body
 * canonicalisation and l=). */
void dkim_verify_key(struct dkim_verify *v, size_t i,
                     enum dkim_key_status status, const char *const *txt,
                     const size_t *txt_len, size_t num_txt);

/* dkim_verify_verdict: signature i's verdict; NULL while it waits. */
const struct dkim_verdict *dkim_verify_verdict(const struct dkim_verify *v,
                                               size_t i);

#endif
