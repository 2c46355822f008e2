/* crypto/certstore.h — the recipients' certificate store for S/MIME
 * encryption: a directory of PEM files indexed by email address.
 *
 * Owns: the certificates read from every "*.pem" and "*.crt" file of one
 * directory (any number per file; other names are ignored) and an index
 * from each address a certificate names (cms_cert_emails: rfc822Name
 * subjectAltNames, else the subject's emailAddress) to the certificates,
 * compared case-insensitively. Lookup picks the best certificate to
 * encrypt to: valid at the caller's time, usable for key management
 * (keyUsage keyEncipherment for RSA, keyAgreement for EC and X25519, when
 * the extension is there; extKeyUsage, when there, naming
 * emailProtection or anyExtendedKeyUsage), and among several the one
 * with the latest notAfter.
 *
 * Immutable after certstore_load: it may be shared by threads and
 * swapped on reload (reference counted; the last certstore_free frees
 * it). Certificates returned by the get0 functions are valid while the
 * caller holds its reference. Load errors name the file; a file that
 * does not parse, or holds no certificate, fails the load (a bad
 * configuration stops start-up).
 *
 * Callers: `postseal smime encrypt --certs DIR`, the gateway stage. Reads
 * files only in certstore_load; never reads the clock (now is passed in). */
#ifndef POSTSEAL_CRYPTO_CERTSTORE_H
#define POSTSEAL_CRYPTO_CERTSTORE_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/base.h>

#define CERTSTORE_MAX_FILES 10000           /* files read from the folder */
#define CERTSTORE_MAX_FILE_BYTES (1u << 20) /* bytes of one PEM file */
#define CERTSTORE_MAX_CERTS 100000          /* certificates in all */
#define CERTSTORE_MAX_EMAILS 16             /* addresses indexed per cert */
#define CERTSTORE_MAX_MATCHES 64            /* certificates per address */

struct certstore;

/* certstore_load reads dir. Returns NULL with err ("FILE: reason") on
 * failure. An empty folder gives an empty store. */
struct certstore *certstore_load(const char *dir, char *err, size_t err_len);
/* certstore_from_pem builds a store from one PEM text (name is used in
 * errors), as if it were the only file. */
struct certstore *certstore_from_pem(const uint8_t *pem, size_t pem_len,
                                     const char *name, char *err,
                                     size_t err_len);
void certstore_up_ref(struct certstore *s);
void certstore_free(struct certstore *s);

size_t certstore_num_certs(const struct certstore *s);
size_t certstore_num_addresses(const struct certstore *s);

/* certstore_usable: 1 when cert is valid at now and may be encrypted to
 * (the keyUsage and extKeyUsage rules above). */
int certstore_usable(X509 *cert, int64_t now);

/* certstore_get0 returns the best certificate for email at now (see
 * above), or NULL when none is usable. */
X509 *certstore_get0(const struct certstore *s, const char *email, int64_t now);
/* certstore_find writes every certificate indexed under email, usable or
 * not, up to max. Returns how many there are (may exceed max). */
size_t certstore_find(const struct certstore *s, const char *email, X509 **out,
                      size_t max);

#endif
