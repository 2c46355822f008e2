/* crypto/certstore.c — a directory of recipients' certificates indexed by
 * email address; the contract is in crypto/certstore.h. */
#include "crypto/certstore.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "crypto/cms.h"

/* One index entry: an address (lowercased) and the certificate. */
struct certstore_entry {
  char email[CMS_EMAIL_MAX];
  size_t cert;
};

struct certstore {
  int refs; /* atomic */
  X509 **certs;
  size_t num_certs, cap_certs;
  struct certstore_entry *index; /* sorted by email */
  size_t num_index, cap_index;
};

__attribute__((format(printf, 3, 4))) static void
seterr(char *err, size_t err_len, const char *fmt, ...) {
  if (err != NULL && err_len > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
  }
}

static struct certstore *store_new(void) {
  struct certstore *s = calloc(1, sizeof *s);
  if (s != NULL) {
    s->refs = 1;
  }
  return s;
}

void certstore_up_ref(struct certstore *s) {
  __atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
}

void certstore_free(struct certstore *s) {
  if (s == NULL || __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) != 0) {
    return;
  }
  for (size_t i = 0; i < s->num_certs; i++) {
    X509_free(s->certs[i]);
  }
  free(s->certs);
  free(s->index);
  free(s);
}

size_t certstore_num_certs(const struct certstore *s) {
  return s->num_certs;
}

/* certstore_num_addresses counts distinct addresses (the index is
 * sorted). */
size_t certstore_num_addresses(const struct certstore *s) {
  size_t n = 0;
  for (size_t i = 0; i < s->num_index; i++) {
    n += i == 0 || strcmp(s->index[i - 1].email, s->index[i].email) != 0;
  }
  return n;
}

/* store_add takes cert (owned) and indexes its addresses. 0 or -1. */
static int store_add(struct certstore *s, X509 *cert) {
  char emails[CERTSTORE_MAX_EMAILS][CMS_EMAIL_MAX];
  size_t n = cms_cert_emails(cert, emails, CERTSTORE_MAX_EMAILS);
  if (n > CERTSTORE_MAX_EMAILS) {
    n = CERTSTORE_MAX_EMAILS;
  }
  if (s->num_certs == s->cap_certs) {
    size_t cap = s->cap_certs ? s->cap_certs * 2 : 16;
    X509 **c = realloc(s->certs, cap * sizeof *c);
    if (c == NULL) {
      return -1;
    }
    s->certs = c;
    s->cap_certs = cap;
  }
  if (s->num_index + n > s->cap_index) {
    size_t cap = (s->cap_index ? s->cap_index * 2 : 16) + n;
    struct certstore_entry *e = realloc(s->index, cap * sizeof *e);
    if (e == NULL) {
      return -1;
    }
    s->index = e;
    s->cap_index = cap;
  }
  for (size_t i = 0; i < n; i++) {
    struct certstore_entry *e = &s->index[s->num_index++];
    for (size_t k = 0; k < CMS_EMAIL_MAX; k++) { /* lowercase, again */
      char c = emails[i][k];
      e->email[k] = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
      if (c == '\0') {
        break;
      }
    }
    e->email[CMS_EMAIL_MAX - 1] = '\0';
    e->cert = s->num_certs;
  }
  s->certs[s->num_certs++] = cert;
  return 0;
}

/* add_pem reads every certificate of one PEM text. 0 or -1 (err). */
static int add_pem(struct certstore *s, const uint8_t *pem, size_t pem_len,
                   const char *name, char *err, size_t err_len) {
  BIO *bio = BIO_new_mem_buf(pem, pem_len);
  size_t before = s->num_certs;
  if (bio == NULL) {
    seterr(err, err_len, "%s: out of memory", name);
    return -1;
  }
  for (;;) {
    X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    if (x == NULL) {
      uint32_t e = ERR_peek_last_error();
      int eof = ERR_GET_LIB(e) == ERR_LIB_PEM &&
                ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
      ERR_clear_error();
      if (eof && s->num_certs > before) {
        break;
      }
      seterr(err, err_len, "%s: %s", name,
             eof ? "no certificate in the file"
                 : "a certificate does not parse");
      BIO_free(bio);
      return -1;
    }
    if (s->num_certs == CERTSTORE_MAX_CERTS || store_add(s, x) != 0) {
      X509_free(x);
      seterr(err, err_len, "%s: %s", name,
             s->num_certs == CERTSTORE_MAX_CERTS ? "too many certificates"
                                                 : "out of memory");
      BIO_free(bio);
      return -1;
    }
  }
  BIO_free(bio);
  return 0;
}

static int entry_cmp(const void *a, const void *b) {
  const struct certstore_entry *x = a, *y = b;
  int c = strcmp(x->email, y->email);
  return c != 0 ? c : (x->cert > y->cert) - (x->cert < y->cert);
}

static void store_seal(struct certstore *s) {
  if (s->num_index > 1) {
    qsort(s->index, s->num_index, sizeof *s->index, entry_cmp);
  }
}

struct certstore *certstore_from_pem(const uint8_t *pem, size_t pem_len,
                                     const char *name, char *err,
                                     size_t err_len) {
  struct certstore *s = store_new();
  if (s == NULL) {
    seterr(err, err_len, "%s: out of memory", name);
    return NULL;
  }
  if (pem_len > CERTSTORE_MAX_FILE_BYTES) {
    seterr(err, err_len, "%s: larger than %u bytes", name,
           CERTSTORE_MAX_FILE_BYTES);
    certstore_free(s);
    return NULL;
  }
  if (add_pem(s, pem, pem_len, name, err, err_len) != 0) {
    certstore_free(s);
    return NULL;
  }
  store_seal(s);
  return s;
}

/* wanted: a certificate file by its name (*.pem, *.crt; not hidden). */
static int wanted(const char *name) {
  size_t n = strlen(name);
  return name[0] != '.' && n > 4 &&
         (strcmp(name + n - 4, ".pem") == 0 ||
          strcmp(name + n - 4, ".crt") == 0);
}

/* read_file reads path whole, bounded. 0 or -1 (err). */
static int read_file(const char *path, uint8_t **out, size_t *out_len,
                     char *err, size_t err_len) {
  FILE *f = fopen(path, "rb");
  struct stat st;
  if (f == NULL || fstat(fileno(f), &st) != 0) {
    seterr(err, err_len, "%s: %s", path, strerror(errno));
    if (f != NULL) {
      fclose(f);
    }
    return -1;
  }
  if (!S_ISREG(st.st_mode) || st.st_size > CERTSTORE_MAX_FILE_BYTES) {
    seterr(err, err_len, "%s: %s", path,
           S_ISREG(st.st_mode) ? "larger than 1 MiB" : "not a regular file");
    fclose(f);
    return -1;
  }
  *out = malloc((size_t)st.st_size + 1);
  *out_len = *out != NULL ? fread(*out, 1, (size_t)st.st_size, f) : 0;
  int bad = *out == NULL || ferror(f);
  fclose(f);
  if (bad) {
    seterr(err, err_len, "%s: cannot read", path);
    free(*out);
    *out = NULL;
    return -1;
  }
  return 0;
}

static int name_cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* list_dir collects the wanted names of dir, sorted (so errors and
 * ties are reproducible). */
static char **list_dir(const char *dir, size_t *out_num, char *err,
                       size_t err_len) {
  DIR *d = opendir(dir);
  char **names = NULL;
  size_t n = 0;
  struct dirent *de;
  if (d == NULL) {
    seterr(err, err_len, "%s: %s", dir, strerror(errno));
    return NULL;
  }
  names = calloc(CERTSTORE_MAX_FILES + 1, sizeof *names);
  while (names != NULL && (de = readdir(d)) != NULL) {
    if (!wanted(de->d_name)) {
      continue;
    }
    if (n == CERTSTORE_MAX_FILES || (names[n] = strdup(de->d_name)) == NULL) {
      seterr(err, err_len, "%s: %s", dir,
             n == CERTSTORE_MAX_FILES ? "too many files" : "out of memory");
      for (size_t i = 0; i < n; i++) {
        free(names[i]);
      }
      free(names);
      closedir(d);
      return NULL;
    }
    n++;
  }
  closedir(d);
  if (names == NULL) {
    seterr(err, err_len, "%s: out of memory", dir);
    return NULL;
  }
  qsort(names, n, sizeof *names, name_cmp);
  *out_num = n;
  return names;
}

struct certstore *certstore_load(const char *dir, char *err, size_t err_len) {
  size_t n = 0;
  char **names = list_dir(dir, &n, err, err_len);
  struct certstore *s = names != NULL ? store_new() : NULL;
  int bad = s == NULL;
  if (names != NULL && s == NULL) {
    seterr(err, err_len, "%s: out of memory", dir);
  }
  for (size_t i = 0; !bad && i < n; i++) {
    char path[4096];
    uint8_t *data = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    bad = read_file(path, &data, &len, err, err_len) != 0 ||
          add_pem(s, data, len, path, err, err_len) != 0;
    free(data);
  }
  for (size_t i = 0; names != NULL && i < n; i++) {
    free(names[i]);
  }
  free(names);
  if (bad) {
    certstore_free(s);
    return NULL;
  }
  store_seal(s);
  return s;
}

/* ---- lookup ---- */

int certstore_usable(X509 *cert, int64_t now) {
  time_t t = (time_t)now;
  /* X509_cmp_time returns 0 for a time it cannot read: not usable. */
  int not_before = X509_cmp_time(X509_get0_notBefore(cert), &t);
  int not_after = X509_cmp_time(X509_get0_notAfter(cert), &t);
  if (not_before == 0 || not_after == 0 || not_before > 0 || not_after < 0) {
    return 0;
  }
  uint32_t flags = X509_get_extension_flags(cert);
  if (flags & EXFLAG_INVALID) {
    return 0;
  }
  EVP_PKEY *pk = X509_get_pubkey(cert);
  int id = pk != NULL ? EVP_PKEY_id(pk) : NID_undef;
  EVP_PKEY_free(pk);
  uint32_t need = id == EVP_PKEY_RSA ? KU_KEY_ENCIPHERMENT
                  : id == EVP_PKEY_EC || id == EVP_PKEY_X25519
                      ? KU_KEY_AGREEMENT
                      : 0;
  if (need == 0) {
    return 0; /* a key we cannot encrypt to (Ed25519, DSA, ...) */
  }
  if ((flags & EXFLAG_KUSAGE) && !(X509_get_key_usage(cert) & need)) {
    return 0;
  }
  if ((flags & EXFLAG_XKUSAGE) &&
      !(X509_get_extended_key_usage(cert) & (XKU_SMIME | XKU_ANYEKU))) {
    return 0;
  }
  return 1;
}

/* first_entry returns the index of the first entry for email (already
 * lowercased), or num_index. */
static size_t first_entry(const struct certstore *s, const char *email) {
  size_t lo = 0, hi = s->num_index;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (strcmp(s->index[mid].email, email) < 0) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo < s->num_index && strcmp(s->index[lo].email, email) == 0
             ? lo
             : s->num_index;
}

static int lower_copy(char *out, const char *in) {
  size_t n = strlen(in);
  if (n >= CMS_EMAIL_MAX) {
    return -1;
  }
  for (size_t i = 0; i <= n; i++) {
    out[i] = in[i] >= 'A' && in[i] <= 'Z' ? (char)(in[i] + 32) : in[i];
  }
  return 0;
}

size_t certstore_find(const struct certstore *s, const char *email, X509 **out,
                      size_t max) {
  char key[CMS_EMAIL_MAX];
  size_t n = 0;
  if (lower_copy(key, email) != 0) {
    return 0;
  }
  for (size_t i = first_entry(s, key);
       i < s->num_index && strcmp(s->index[i].email, key) == 0; i++) {
    if (n < max) {
      out[n] = s->certs[s->index[i].cert];
    }
    n++;
  }
  return n;
}

X509 *certstore_get0(const struct certstore *s, const char *email,
                     int64_t now) {
  X509 *all[CERTSTORE_MAX_MATCHES], *best = NULL;
  size_t n = certstore_find(s, email, all, CERTSTORE_MAX_MATCHES);
  if (n > CERTSTORE_MAX_MATCHES) {
    n = CERTSTORE_MAX_MATCHES;
  }
  for (size_t i = 0; i < n; i++) {
    int days = 0, secs = 0;
    if (!certstore_usable(all[i], now)) {
      continue;
    }
    if (best == NULL || (ASN1_TIME_diff(&days, &secs, X509_get0_notAfter(best),
                                        X509_get0_notAfter(all[i])) &&
                         (days > 0 || (days == 0 && secs > 0)))) {
      best = all[i];
    }
  }
  return best;
}
