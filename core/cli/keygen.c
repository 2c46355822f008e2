/* core/cli/keygen.c — `postseal keygen`: make a DKIM private key (RFC 6376
 * rsa-sha256, RFC 8463 ed25519-sha256) and print what to publish.
 *
 *   postseal keygen --domain D --selector S [--algorithm rsa|ed25519]
 *                   [--bits N] [--out FILE | --dir DIR]
 *
 * The key goes to FILE, else DIR/D.S.key (DIR default "."), as PKCS#8 PEM
 * with mode 0600; an existing file is never overwritten (crypto/dkim.h
 * dkim_keygen). stdout gets one zone-file line, the TXT record for
 * S._domainkey.D split into character-strings of at most 255 octets
 * (RFC 1035 §3.3.14; an RSA-2048 p= alone is about 400); stderr gets the
 * key's path and the `dkim.keys` line for the configuration.
 *
 * Exit status: 0 done, 1 the key could not be made or written (reason on
 * stderr), 2 usage error. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/cli/cli.h"
#include "crypto/dkim.h"

#define KEYGEN_DEFAULT_BITS 2048
#define KEYGEN_MIN_BITS 1024 /* RFC 8301 §3.2: verifiers refuse less */
#define KEYGEN_MAX_BITS (DKIM_MAX_SIG_BYTES * 8) /* largest we verify */
#define KEYGEN_MAX_LABEL 63                      /* RFC 1035 §2.3.4 */
#define KEYGEN_MAX_NAME 253  /* a domain name in text, no final dot */
#define KEYGEN_TXT_CHUNK 255 /* RFC 1035 §3.3: one <character-string> */
#define KEYGEN_DOMAINKEY "._domainkey."

struct keygen_opts {
  char domain[KEYGEN_MAX_NAME + 1]; /* without a final dot */
  const char *selector;
  enum dkim_alg alg;
  unsigned bits;
  int bits_set;
  const char *out; /* --out FILE */
  const char *dir; /* --dir DIR */
};

/* keygen_usage prints the synopsis, and with full what it does. */
static void keygen_usage(FILE *f, int full) {
  fprintf(f, "usage: postseal keygen --domain DOMAIN --selector SELECTOR\n"
             "                       [--algorithm rsa|ed25519] [--bits N]\n"
             "                       [--out FILE | --dir DIR]\n");
  if (!full) {
    return;
  }
  fprintf(f,
          "Makes a DKIM private key (PKCS#8 PEM, mode 0600, never "
          "overwriting a file) in\nFILE, else DIR/DOMAIN.SELECTOR.key (DIR "
          "default \".\"), prints the TXT record to\npublish at "
          "SELECTOR._domainkey.DOMAIN on stdout as a zone-file line, and "
          "the\ndkim.keys line for the configuration on stderr. RSA: "
          "--bits %u to %u, default %u.\n",
          KEYGEN_MIN_BITS, KEYGEN_MAX_BITS, KEYGEN_DEFAULT_BITS);
}

/* ---- names ---- */

/* keygen_label_ok checks one label of n octets: letters, digits and
 * hyphens, neither first nor last a hyphen (RFC 5321 §4.1.2 sub-domain,
 * which RFC 6376 §3.1 uses for selectors; RFC 1035 §2.3.1 for names). */
static int keygen_label_ok(const char *s, size_t n) {
  if (n == 0 || n > KEYGEN_MAX_LABEL || s[0] == '-' || s[n - 1] == '-') {
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '-')) {
      return 0;
    }
  }
  return 1;
}

/* keygen_name_ok checks dot-separated labels, n octets in all. */
static int keygen_name_ok(const char *s, size_t n) {
  if (n == 0 || n > KEYGEN_MAX_NAME) {
    return 0;
  }
  size_t start = 0;
  for (size_t i = 0; i <= n; i++) {
    if (i == n || s[i] == '.') {
      if (!keygen_label_ok(s + start, i - start)) {
        return 0;
      }
      start = i + 1;
    }
  }
  return 1;
}

/* keygen_set_domain takes the domain, a final dot dropped. 0 or -1. */
static int keygen_set_domain(struct keygen_opts *o, const char *s) {
  size_t n = strlen(s);
  if (n > 0 && s[n - 1] == '.') {
    n--;
  }
  if (!keygen_name_ok(s, n)) {
    fprintf(stderr,
            "postseal: keygen: '%s' is not a domain name (labels of "
            "letters, digits and hyphens, separated by dots)\n",
            s);
    return -1;
  }
  memcpy(o->domain, s, n);
  o->domain[n] = '\0';
  return 0;
}

/* ---- options ---- */

/* keygen_opt: cli_opt for keygen's options. */
static int keygen_opt(int argc, char **argv, int *i, const char *name,
                      const char **out) {
  return cli_opt(argc, argv, i, "keygen", name, out);
}

/* keygen_set_alg reads --algorithm. 0 or -1 (reason printed). */
static int keygen_set_alg(struct keygen_opts *o, const char *s) {
  if (strcmp(s, "rsa") == 0 || strcmp(s, "rsa-sha256") == 0) {
    o->alg = DKIM_ALG_RSA_SHA256;
  } else if (strcmp(s, "ed25519") == 0 || strcmp(s, "ed25519-sha256") == 0) {
    o->alg = DKIM_ALG_ED25519_SHA256;
  } else {
    fprintf(stderr,
            "postseal: keygen: unknown algorithm '%s' (rsa or ed25519)\n", s);
    return -1;
  }
  return 0;
}

/* keygen_set_bits reads --bits. 0 or -1 (reason printed). */
static int keygen_set_bits(struct keygen_opts *o, const char *s) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || s[0] < '0' || s[0] > '9' ||
      v < KEYGEN_MIN_BITS || v > KEYGEN_MAX_BITS) {
    fprintf(stderr, "postseal: keygen: --bits '%s': want %u to %u\n", s,
            KEYGEN_MIN_BITS, KEYGEN_MAX_BITS);
    return -1;
  }
  o->bits = (unsigned)v;
  o->bits_set = 1;
  return 0;
}

/* keygen_parse_one takes argv[*i]. 0, or -1 (reason printed). */
static int keygen_parse_one(int argc, char **argv, int *i,
                            struct keygen_opts *o, const char **domain) {
  const char *v;
  int r;
  if ((r = keygen_opt(argc, argv, i, "--domain", domain)) != 0 ||
      (r = keygen_opt(argc, argv, i, "--selector", &o->selector)) != 0 ||
      (r = keygen_opt(argc, argv, i, "--out", &o->out)) != 0 ||
      (r = keygen_opt(argc, argv, i, "--dir", &o->dir)) != 0) {
    return r < 0 ? -1 : 0;
  }
  if ((r = keygen_opt(argc, argv, i, "--algorithm", &v)) != 0) {
    return r < 0 ? -1 : keygen_set_alg(o, v);
  }
  if ((r = keygen_opt(argc, argv, i, "--bits", &v)) != 0) {
    return r < 0 ? -1 : keygen_set_bits(o, v);
  }
  if (argv[*i][0] == '-') {
    fprintf(stderr, "postseal: keygen: unknown option '%s'\n", argv[*i]);
  } else {
    fprintf(stderr, "postseal: keygen: unexpected argument '%s'\n", argv[*i]);
  }
  return -1;
}

/* keygen_check: what the options must say together. 0 or -1. */
static int keygen_check(struct keygen_opts *o, const char *domain) {
  if (domain == NULL || o->selector == NULL) {
    fprintf(stderr, "postseal: keygen: --domain and --selector are "
                    "required\n");
    return -1;
  }
  if (keygen_set_domain(o, domain) != 0) {
    return -1;
  }
  if (!keygen_name_ok(o->selector, strlen(o->selector))) {
    fprintf(stderr,
            "postseal: keygen: '%s' is not a selector (RFC 6376 §3.1: "
            "labels of letters, digits and hyphens, separated by dots)\n",
            o->selector);
    return -1;
  }
  if (strlen(o->selector) + strlen(KEYGEN_DOMAINKEY) + strlen(o->domain) >
      KEYGEN_MAX_NAME) {
    fprintf(stderr, "postseal: keygen: %s%s%s is longer than %d octets\n",
            o->selector, KEYGEN_DOMAINKEY, o->domain, KEYGEN_MAX_NAME);
    return -1;
  }
  if (o->bits_set && o->alg != DKIM_ALG_RSA_SHA256) {
    fprintf(stderr, "postseal: keygen: --bits is for rsa keys only\n");
    return -1;
  }
  if (o->out != NULL && o->dir != NULL) {
    fprintf(stderr, "postseal: keygen: --out and --dir exclude each other\n");
    return -1;
  }
  if ((o->out != NULL && o->out[0] == '\0') ||
      (o->dir != NULL && o->dir[0] == '\0')) {
    fprintf(stderr, "postseal: keygen: empty --out or --dir\n");
    return -1;
  }
  return 0;
}

/* keygen_parse fills o from argv[1..]. 0, or -1 (reason printed). */
static int keygen_parse(int argc, char **argv, struct keygen_opts *o) {
  const char *domain = NULL;
  *o = (struct keygen_opts){.alg = DKIM_ALG_RSA_SHA256,
                            .bits = KEYGEN_DEFAULT_BITS};
  for (int i = 1; i < argc; i++) {
    if (keygen_parse_one(argc, argv, &i, o, &domain) != 0) {
      return -1;
    }
  }
  return keygen_check(o, domain);
}

/* ---- output ---- */

/* keygen_print_txt writes the record as one zone-file line: the tags
 * before p= in one character-string, then p= in strings of at most
 * KEYGEN_TXT_CHUNK octets, all in parentheses. */
static void keygen_print_txt(FILE *f, const struct keygen_opts *o,
                             const struct buf *rec) {
  const char *s = (const char *)rec->data;
  size_t len = rec->len, p_off = 0;
  for (size_t i = 0; i + 1 < len; i++) { /* the p= tag, not a p in a value */
    if (s[i] == 'p' && s[i + 1] == '=' &&
        (i == 0 || s[i - 1] == ' ' || s[i - 1] == ';')) {
      p_off = i;
      break;
    }
  }
  fprintf(f, "%s%s%s. IN TXT (", o->selector, KEYGEN_DOMAINKEY, o->domain);
  for (size_t pos = 0; pos < len;) {
    size_t end = len - pos > KEYGEN_TXT_CHUNK ? pos + KEYGEN_TXT_CHUNK : len;
    if (pos < p_off && end > p_off) {
      end = p_off;
    }
    fputs(" \"", f);
    for (size_t i = pos; i < end; i++) { /* RFC 1035 §5.1 quoting */
      if (s[i] == '"' || s[i] == '\\') {
        fputc('\\', f);
      }
      fputc(s[i], f);
    }
    fputc('"', f);
    pos = end;
  }
  fputs(" )\n", f);
}

/* keygen_print_config tells where the key is and what to configure. */
static void keygen_print_config(FILE *f, const struct keygen_opts *o,
                                const struct dkim_key *k, const char *path) {
  char abs[PATH_MAX];
  const char *shown = realpath(path, abs) != NULL ? abs : path;
  if (dkim_key_alg(k) == DKIM_ALG_RSA_SHA256) {
    fprintf(f, "postseal: wrote an RSA-%u key to %s (mode 0600)\n",
            dkim_key_bits(k), shown);
  } else {
    fprintf(f, "postseal: wrote an Ed25519 key to %s (mode 0600)\n", shown);
  }
  fprintf(f,
          "postseal: publish the record above at %s%s%s, then add this "
          "line to dkim.keys\n(a NOT_BEFORE time after the path, e.g. "
          "2026-12-01T00:00:00Z, starts signing with\nthe key then):\n"
          "    - \"%s %s %s\"\n",
          o->selector, KEYGEN_DOMAINKEY, o->domain, o->domain, o->selector,
          shown);
}

/* keygen_path writes the key's path: --out, else DIR/D.S.key. 0 or -1. */
static int keygen_path(const struct keygen_opts *o, char *out, size_t out_len) {
  int n = o->out != NULL
              ? snprintf(out, out_len, "%s", o->out)
              : snprintf(out, out_len, "%s/%s.%s.key",
                         o->dir != NULL ? o->dir : ".", o->domain, o->selector);
  if (n < 0 || (size_t)n >= out_len) {
    fprintf(stderr, "postseal: keygen: the key's path is too long\n");
    return -1;
  }
  return 0;
}

int cmd_keygen(int argc, char **argv) {
  if (argc == 2 &&
      (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    keygen_usage(stdout, 1);
    return CLI_OK;
  }
  struct keygen_opts o;
  char path[PATH_MAX];
  if (keygen_parse(argc, argv, &o) != 0 ||
      keygen_path(&o, path, sizeof path) != 0) {
    keygen_usage(stderr, 0);
    return CLI_USAGE;
  }
  char err[CLI_ERR_LEN] = "";
  struct dkim_key *k = dkim_keygen(o.alg, o.bits, path, err, sizeof err);
  if (k == NULL) {
    fprintf(stderr, "postseal: keygen: %s\n", err[0] ? err : path);
    return CLI_FAIL;
  }
  struct buf rec = {0};
  int rc = CLI_OK;
  if (dkim_key_record(k, &rec) != 0) {
    /* The key is of no use without its record: do not leave it behind. */
    fprintf(stderr, "postseal: keygen: out of memory; %s removed\n", path);
    unlink(path);
    rc = CLI_FAIL;
  } else {
    keygen_print_txt(stdout, &o, &rec);
    if (fflush(stdout) != 0) {
      fprintf(stderr, "postseal: keygen: stdout: %s\n", strerror(errno));
      rc = CLI_FAIL;
    }
    keygen_print_config(stderr, &o, k, path);
  }
  buf_free(&rec);
  dkim_key_free(k);
  return rc;
}
