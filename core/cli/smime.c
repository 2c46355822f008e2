/* core/cli/smime.c — `postseal smime`: S/MIME (RFC 8551) on message files.
 *
 *   postseal smime sign --key K --cert C [--chain F] [--opaque]
 *                       [--digest sha256|sha384|sha512] [--pss] [--ski]
 *                       [--no-certs] [--encrypt-to CERT]... [--cipher C]
 *                       [--in F] [--out F]
 *   postseal smime encrypt (--to CERT)... | --certs DIR (--rcpt ADDR)...
 *                       [--cipher aes-256-gcm|aes-128-gcm|aes-256-cbc|
 *                        aes-128-cbc] [--pkcs1] [--ski] [--in F] [--out F]
 *   postseal smime verify --CAfile F [--CApath D] [--from ADDR | --any-from]
 *                       [--in F] [--out F]
 *   postseal smime decrypt --key K --cert C [--require-signed --CAfile F
 *                       [--from ADDR | --any-from]] [--in F] [--out F]
 *
 * The message comes from --in (default stdin) and the result goes to --out
 * (default stdout). verify prints one line per signer on stdout ("VERDICT
 * EMAIL SIGNING-TIME ALGORITHM DIGEST", a reason after a failure) and
 * writes the signed entity to --out only; it checks the From address of
 * the message unless --from names another or --any-from: a message
 * without exactly one From mailbox that parses (crypto/smime.h
 * smime_from_address) fails that check (from-mismatch), it is never taken
 * as "any signer". decrypt removes one encryption layer; AES-CBC content
 * is not authenticated (EFAIL): it is written with a warning, or with
 * --require-signed only when the layer inside is a signed entity every
 * signer of which passes (From checked as for verify), and then what is
 * written is the outer header with the entity that signature covers, not
 * the signed wrapper. Only Content-* fields of an inner entity reach the
 * written header.
 *
 * Exit status: 0 done (verify: every signer passed), 1 failure (reason on
 * stderr), 2 usage error. The work is crypto/smime.h's; this file reads
 * options and files. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/cli/cli.h"
#include "crypto/certstore.h"
#include "crypto/cms.h"
#include "crypto/smime.h"

/* --to, --encrypt-to and --rcpt together: one array of recipients */
#define SMIME_CLI_MAX_CERTS 64

struct smime_opts {
  const char *verb;
  const char *key, *cert, *chain, *in, *out;
  const char *ca_file, *ca_path, *from, *certs_dir;
  const char *to[SMIME_CLI_MAX_CERTS];
  size_t num_to;
  const char *rcpt[SMIME_CLI_MAX_CERTS];
  size_t num_rcpt;
  enum cms_digest digest;
  enum cms_cipher cipher;
  int opaque, pss, ski, no_certs, pkcs1, any_from, require_signed;
};

static void smime_usage(FILE *f) {
  fprintf(f,
          "usage: postseal smime sign --key KEY --cert CERT [--chain FILE] "
          "[--opaque]\n"
          "                           [--digest sha256|sha384|sha512] [--pss] "
          "[--ski]\n"
          "                           [--no-certs] [--encrypt-to CERT]... "
          "[--cipher CIPHER]\n"
          "       postseal smime encrypt --to CERT... | --certs DIR --rcpt "
          "ADDR...\n"
          "                           [--cipher aes-256-gcm|aes-128-gcm|"
          "aes-256-cbc|aes-128-cbc]\n"
          "                           [--pkcs1] [--ski]\n"
          "       postseal smime verify --CAfile FILE [--CApath DIR] "
          "[--from ADDR|--any-from]\n"
          "       postseal smime decrypt --key KEY --cert CERT "
          "[--require-signed --CAfile FILE\n"
          "                           [--from ADDR|--any-from]]\n"
          "each also takes [--in FILE] [--out FILE] (default stdin, "
          "stdout).\n"
          "verify prints one line per signer (VERDICT EMAIL SIGNING-TIME "
          "ALGORITHM DIGEST)\nand exits 0 only when every signer passes; the "
          "signed content goes to --out.\n");
}

/* ---- options ---- */

/* opt: cli_opt for the smime subcommands' options. */
static int opt(int argc, char **argv, int *i, const char *name,
               const char **out) {
  return cli_opt(argc, argv, i, "smime", name, out);
}

static int set_digest(struct smime_opts *o, const char *s) {
  static const char *names[] = {"sha256", "sha384", "sha512"};
  for (int d = 0; d < 3; d++) {
    if (strcmp(s, names[d]) == 0) {
      o->digest = (enum cms_digest)d;
      return 0;
    }
  }
  fprintf(stderr,
          "postseal: smime: --digest '%s': sha256, sha384 or "
          "sha512\n",
          s);
  return -1;
}

static int set_cipher(struct smime_opts *o, const char *s) {
  static const char *names[] = {"aes-256-gcm", "aes-128-gcm", "aes-256-cbc",
                                "aes-128-cbc"};
  for (int c = 0; c < 4; c++) {
    if (strcmp(s, names[c]) == 0) {
      o->cipher = (enum cms_cipher)c;
      return 0;
    }
  }
  fprintf(stderr,
          "postseal: smime: --cipher '%s': aes-256-gcm, aes-128-gcm, "
          "aes-256-cbc or aes-128-cbc\n",
          s);
  return -1;
}

/* add_list appends v to a --to / --rcpt list. 0 or -1. */
static int add_list(const char **list, size_t *num, const char *v) {
  if (*num == SMIME_CLI_MAX_CERTS) {
    fprintf(stderr, "postseal: smime: more than %d recipients\n",
            SMIME_CLI_MAX_CERTS);
    return -1;
  }
  list[(*num)++] = v;
  return 0;
}

/* flag matches the options without a value. */
static int flag(struct smime_opts *o, const char *a) {
  const struct {
    const char *name;
    int *field;
  } flags[] = {
      {"--opaque", &o->opaque},
      {"--pss", &o->pss},
      {"--ski", &o->ski},
      {"--no-certs", &o->no_certs},
      {"--pkcs1", &o->pkcs1},
      {"--any-from", &o->any_from},
      {"--require-signed", &o->require_signed},
  };
  for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
    if (strcmp(a, flags[i].name) == 0) {
      *flags[i].field = 1;
      return 1;
    }
  }
  return 0;
}

/* parse_one takes argv[*i]. 0, or -1 (reason printed). */
static int parse_one(int argc, char **argv, int *i, struct smime_opts *o) {
  const char *v;
  int r;
  if ((r = opt(argc, argv, i, "--key", &o->key)) ||
      (r = opt(argc, argv, i, "--cert", &o->cert)) ||
      (r = opt(argc, argv, i, "--chain", &o->chain)) ||
      (r = opt(argc, argv, i, "--in", &o->in)) ||
      (r = opt(argc, argv, i, "--out", &o->out)) ||
      (r = opt(argc, argv, i, "--CAfile", &o->ca_file)) ||
      (r = opt(argc, argv, i, "--CApath", &o->ca_path)) ||
      (r = opt(argc, argv, i, "--from", &o->from)) ||
      (r = opt(argc, argv, i, "--certs", &o->certs_dir))) {
    return r < 0 ? -1 : 0;
  }
  if ((r = opt(argc, argv, i, "--to", &v)) ||
      (r = opt(argc, argv, i, "--encrypt-to", &v))) {
    return r < 0 ? -1 : add_list(o->to, &o->num_to, v);
  }
  if ((r = opt(argc, argv, i, "--rcpt", &v))) {
    return r < 0 ? -1 : add_list(o->rcpt, &o->num_rcpt, v);
  }
  if ((r = opt(argc, argv, i, "--digest", &v))) {
    return r < 0 ? -1 : set_digest(o, v);
  }
  if ((r = opt(argc, argv, i, "--cipher", &v))) {
    return r < 0 ? -1 : set_cipher(o, v);
  }
  if (flag(o, argv[*i])) {
    return 0;
  }
  fprintf(stderr, "postseal: smime %s: unknown %s '%s'\n", o->verb,
          argv[*i][0] == '-' ? "option" : "argument", argv[*i]);
  return -1;
}

/* need checks that the verb got what it requires. 0 or -1. */
static int need(const struct smime_opts *o) {
  const char *v = o->verb;
  if (o->num_to + o->num_rcpt > SMIME_CLI_MAX_CERTS) {
    fprintf(stderr,
            "postseal: smime %s: more than %d recipients (--to, "
            "--encrypt-to and --rcpt together)\n",
            v, SMIME_CLI_MAX_CERTS);
    return -1;
  }
  if ((strcmp(v, "sign") == 0 || strcmp(v, "decrypt") == 0) &&
      (o->key == NULL || o->cert == NULL)) {
    fprintf(stderr, "postseal: smime %s: --key and --cert are required\n", v);
    return -1;
  }
  if (strcmp(v, "encrypt") == 0 &&
      (o->num_to + o->num_rcpt == 0 ||
       (o->num_rcpt > 0) != (o->certs_dir != NULL))) {
    fprintf(stderr, "postseal: smime encrypt: give --to CERT, or --certs DIR "
                    "with --rcpt ADDR\n");
    return -1;
  }
  if (strcmp(v, "verify") == 0 && o->ca_file == NULL && o->ca_path == NULL) {
    fprintf(stderr, "postseal: smime verify: --CAfile (or --CApath) is "
                    "required\n");
    return -1;
  }
  if (strcmp(v, "decrypt") == 0 && o->require_signed && o->ca_file == NULL &&
      o->ca_path == NULL) {
    fprintf(stderr, "postseal: smime decrypt: --require-signed needs "
                    "--CAfile\n");
    return -1;
  }
  return 0;
}

/* ---- files ---- */

/* read_input reads --in (or stdin) whole, up to SMIME_MAX_MESSAGE. */
static int read_input(const char *path, struct buf *out) {
  FILE *f = path == NULL || strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
  if (f == NULL) {
    fprintf(stderr, "postseal: smime: %s: %s\n", path, strerror(errno));
    return -1;
  }
  uint8_t chunk[65536];
  size_t n;
  int rc = 0;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
    if (out->len + n > SMIME_MAX_MESSAGE || buf_append(out, chunk, n) != 0) {
      fprintf(stderr, "postseal: smime: %s: larger than %u bytes\n",
              path ? path : "stdin", SMIME_MAX_MESSAGE);
      rc = -1;
      break;
    }
  }
  if (rc == 0 && ferror(f)) {
    fprintf(stderr, "postseal: smime: %s: read error\n", path ? path : "stdin");
    rc = -1;
  }
  if (f != stdin) {
    fclose(f);
  }
  return rc;
}

/* write_output writes data to --out (or stdout). 0 or -1. */
static int write_output(const char *path, const struct buf *data) {
  int to_stdout = path == NULL || strcmp(path, "-") == 0;
  FILE *f = to_stdout ? stdout : fopen(path, "wb");
  if (f == NULL) {
    fprintf(stderr, "postseal: smime: %s: %s\n", path, strerror(errno));
    return -1;
  }
  int bad = (data->len > 0 && fwrite(data->data, 1, data->len, f) != data->len);
  bad |= to_stdout ? fflush(f) != 0 : fclose(f) != 0;
  if (bad) {
    fprintf(stderr, "postseal: smime: %s: %s\n", to_stdout ? "stdout" : path,
            strerror(errno));
    return -1;
  }
  return 0;
}

/* Keys and certificates the verbs load. */
struct material {
  struct cms_key *key;
  STACK_OF(X509) * certs; /* --cert: leaf first, then its chain */
  STACK_OF(X509) * chain; /* --chain */
  X509 *rcpt[SMIME_CLI_MAX_CERTS];
  size_t num_rcpt;
  struct certstore *store;
  X509_STORE *trust;
};

static void material_free(struct material *m) {
  cms_key_free(m->key);
  sk_X509_pop_free(m->certs, X509_free);
  sk_X509_pop_free(m->chain, X509_free);
  for (size_t i = 0; i < m->num_rcpt; i++) {
    X509_free(m->rcpt[i]);
  }
  certstore_free(m->store);
  X509_STORE_free(m->trust);
}

/* load_key loads --key and --cert and checks they belong together. */
static int load_key(struct material *m, const struct smime_opts *o) {
  char err[CLI_ERR_LEN] = "";
  m->key = cms_key_load_pem(o->key, err, sizeof err);
  if (m->key == NULL) {
    fprintf(stderr, "postseal: smime: %s: %s\n", o->key, err);
    return -1;
  }
  m->certs = cms_certs_load_pem(o->cert, err, sizeof err);
  if (m->certs == NULL) {
    fprintf(stderr, "postseal: smime: %s: %s\n", o->cert, err);
    return -1;
  }
  if (!cms_key_matches_cert(m->key, sk_X509_value(m->certs, 0))) {
    fprintf(stderr, "postseal: smime: %s is not the certificate of %s\n",
            o->cert, o->key);
    return -1;
  }
  if (o->chain != NULL &&
      (m->chain = cms_certs_load_pem(o->chain, err, sizeof err)) == NULL) {
    fprintf(stderr, "postseal: smime: %s: %s\n", o->chain, err);
    return -1;
  }
  return 0;
}

/* load_recipients loads the --to certificates and the --rcpt ones from
 * the --certs store. */
static int load_recipients(struct material *m, const struct smime_opts *o) {
  char err[CLI_ERR_LEN] = "";
  for (size_t i = 0; i < o->num_to; i++) {
    STACK_OF(X509) *s = cms_certs_load_pem(o->to[i], err, sizeof err);
    if (s == NULL) {
      fprintf(stderr, "postseal: smime: %s: %s\n", o->to[i], err);
      return -1;
    }
    m->rcpt[m->num_rcpt++] = sk_X509_shift(s);
    sk_X509_pop_free(s, X509_free);
  }
  if (o->certs_dir != NULL &&
      (m->store = certstore_load(o->certs_dir, err, sizeof err)) == NULL) {
    fprintf(stderr, "postseal: smime: %s\n", err);
    return -1;
  }
  for (size_t i = 0; i < o->num_rcpt; i++) {
    X509 *x = certstore_get0(m->store, o->rcpt[i], (int64_t)time(NULL));
    if (x == NULL) {
      fprintf(stderr, "postseal: smime: no usable certificate for %s in %s\n",
              o->rcpt[i], o->certs_dir);
      return -1;
    }
    X509_up_ref(x);
    m->rcpt[m->num_rcpt++] = x;
  }
  return 0;
}

static int load_trust(struct material *m, const struct smime_opts *o) {
  char err[CLI_ERR_LEN] = "";
  m->trust = cms_trust_load(o->ca_file, o->ca_path, err, sizeof err);
  if (m->trust == NULL) {
    fprintf(stderr, "postseal: smime: trust anchors: %s\n", err);
    return -1;
  }
  return 0;
}

/* ---- verbs ---- */

/* encrypt_to wraps msg for m's recipients into out. */
static int encrypt_to(struct buf *out, const struct material *m,
                      const struct smime_opts *o, const struct buf *msg) {
  struct cms_recipient r[SMIME_CLI_MAX_CERTS];
  char err[CLI_ERR_LEN] = "";
  for (size_t i = 0; i < m->num_rcpt; i++) {
    r[i] = (struct cms_recipient){m->rcpt[i], o->pkcs1, o->ski};
  }
  int rc = smime_encrypt(out, r, m->num_rcpt, o->cipher, msg->data, msg->len,
                         err, sizeof err);
  if (rc != SMIME_OK) {
    fprintf(stderr, "postseal: smime encrypt: %s\n", err);
    return -1;
  }
  return 0;
}

static int run_sign(const struct smime_opts *o, const struct buf *msg,
                    struct buf *out) {
  struct material m = {0};
  struct buf signed_msg = {0};
  char err[CLI_ERR_LEN] = "";
  int rc = load_key(&m, o) != 0 || load_recipients(&m, o) != 0 ? -1 : 0;
  if (rc == 0) {
    struct cms_sign_party p = {.key = m.key,
                               .cert = sk_X509_value(m.certs, 0),
                               .chain = m.chain,
                               .digest = o->digest,
                               .rsa_pss = o->pss,
                               .use_ski = o->ski};
    struct smime_sign_opts so = {.opaque = o->opaque,
                                 .signing_time = (int64_t)time(NULL),
                                 .no_certs = o->no_certs};
    STACK_OF(X509) *extra = sk_X509_dup(m.certs); /* the rest of --cert */
    (void)sk_X509_shift(extra);
    if (p.chain == NULL && sk_X509_num(extra) > 0) {
      p.chain = extra;
    }
    if (smime_sign(&signed_msg, &cms_local_signer, &p, 1, &so, msg->data,
                   msg->len, err, sizeof err) != SMIME_OK) {
      fprintf(stderr, "postseal: smime sign: %s\n", err);
      rc = -1;
    }
    sk_X509_free(extra);
  }
  if (rc == 0 && m.num_rcpt > 0) {
    rc = encrypt_to(out, &m, o, &signed_msg);
  } else if (rc == 0) {
    buf_move(out, &signed_msg);
  }
  buf_free(&signed_msg);
  material_free(&m);
  return rc;
}

static int run_encrypt(const struct smime_opts *o, const struct buf *msg,
                       struct buf *out) {
  struct material m = {0};
  int rc = load_recipients(&m, o) != 0 ? -1 : encrypt_to(out, &m, o, msg);
  material_free(&m);
  return rc;
}

/* format_time writes secs as RFC 3339 UTC, or "-" when absent. */
static void format_time(int64_t secs, char *out, size_t cap) {
  time_t t = (time_t)secs;
  struct tm tm;
  if (secs < 0 || gmtime_r(&t, &tm) == NULL ||
      strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
    snprintf(out, cap, "-");
  }
}

/* print_signers writes one line per signer. */
static void print_signers(FILE *f, const struct cms_verified *v) {
  static const char *digests[] = {"sha-256", "sha-384", "sha-512"};
  for (size_t i = 0; i < v->num_signers; i++) {
    const struct cms_signer_result *s = &v->signers[i];
    char when[32];
    format_time(s->signing_time, when, sizeof when);
    fprintf(f, "%s ", cms_verdict_str(s->verdict));
    cli_text_string(f, s->email[0] ? s->email : "-");
    fprintf(f, " %s %s %s", when, s->sig_alg[0] ? s->sig_alg : "-",
            (unsigned)s->digest < 3 ? digests[s->digest] : "-");
    if (s->verdict != CMS_V_PASS && s->reason[0]) {
      fputs(" (", f);
      cli_text_string(f, s->reason);
      fputc(')', f);
    }
    fputc('\n', f);
  }
}

/* from_for sets *out_from to the address the signers must name: --from,
 * none with --any-from (NULL), else the message's From. When the message
 * has no From mailbox that parses, *out_from is NULL and *out_bad is 1
 * with the reason in why: the caller fails the From check
 * (mismatch_all), it must not check "any". */
static void from_for(const struct smime_opts *o, const struct buf *msg,
                     char *from, size_t from_cap, const char **out_from,
                     int *out_bad, char *why, size_t why_len) {
  *out_from = NULL;
  *out_bad = 0;
  if (o->from != NULL) {
    snprintf(from, from_cap, "%s", o->from);
    *out_from = from;
  } else if (!o->any_from) {
    if (smime_from_address(from, from_cap, msg->data, msg->len, why, why_len) ==
        SMIME_OK) {
      *out_from = from;
    } else {
      *out_bad = 1;
    }
  }
}

/* mismatch_all turns every passing verdict into from-mismatch: the
 * message has no From address the signers could be checked against. */
static void mismatch_all(struct cms_verified *v, const char *why) {
  for (size_t i = 0; i < v->num_signers; i++) {
    struct cms_signer_result *s = &v->signers[i];
    if (s->verdict == CMS_V_PASS) {
      s->verdict = CMS_V_FROM_MISMATCH;
      snprintf(s->reason, sizeof s->reason, "no From address to check: %.120s",
               why);
    }
  }
}

static int run_verify(const struct smime_opts *o, const struct buf *msg,
                      struct buf *out) {
  struct material m = {0};
  struct cms_verified v;
  char err[CLI_ERR_LEN] = "", from[CMS_EMAIL_MAX] = "", why[CLI_ERR_LEN] = "";
  const char *want_from;
  int bad_from;
  memset(&v, 0, sizeof v);
  if (load_trust(&m, o) != 0) {
    material_free(&m);
    return -1;
  }
  from_for(o, msg, from, sizeof from, &want_from, &bad_from, why, sizeof why);
  struct cms_verify_opts vo = {.trust = m.trust, .from = want_from};
  int rc =
      smime_verify_message(&v, out, &vo, msg->data, msg->len, err, sizeof err);
  if (rc != SMIME_OK) {
    fprintf(stderr, "postseal: smime verify: %s\n", err);
  } else {
    if (bad_from) {
      mismatch_all(&v, why);
    }
    print_signers(stdout, &v);
    fflush(stdout);
    if (!cms_verified_all_pass(&v)) {
      fprintf(stderr, "postseal: smime verify: verification failed\n");
      rc = -1;
    }
  }
  cms_verified_cleanup(&v);
  material_free(&m);
  return rc == SMIME_OK ? 0 : -1;
}

/* check_inner applies --require-signed to the decrypted entity: on
 * success out_inner holds the entity the signature covers. */
static int check_inner(const struct material *m, const struct smime_opts *o,
                       const struct buf *msg, const struct buf *entity,
                       struct buf *out_inner) {
  struct cms_verified v;
  char err[CLI_ERR_LEN] = "", from[CMS_EMAIL_MAX] = "", why[CLI_ERR_LEN] = "";
  const char *want_from;
  int bad_from;
  from_for(o, msg, from, sizeof from, &want_from, &bad_from, why, sizeof why);
  struct cms_verify_opts vo = {.trust = m->trust, .from = want_from};
  int rc = smime_verify_message(&v, out_inner, &vo, entity->data, entity->len,
                                err, sizeof err);
  if (rc == SMIME_OK && bad_from) {
    mismatch_all(&v, why);
  }
  if (rc == SMIME_OK) {
    print_signers(stderr, &v);
  }
  if (rc != SMIME_OK || !cms_verified_all_pass(&v)) {
    fprintf(stderr, "postseal: smime decrypt: %s; nothing written\n",
            rc == SMIME_ERR_NOT_SMIME
                ? "the content is not signed (--require-signed)"
            : rc != SMIME_OK ? err
                             : "the inner signature does not pass");
    rc = -1;
  }
  cms_verified_cleanup(&v);
  return rc == SMIME_OK ? 0 : -1;
}

static int run_decrypt(const struct smime_opts *o, const struct buf *msg,
                       struct buf *out) {
  struct material m = {0};
  struct buf entity = {0}, inner = {0}, outer = {0}, ignored = {0};
  char err[CLI_ERR_LEN] = "";
  int authenticated = 0;
  int rc =
      load_key(&m, o) != 0 || (o->require_signed && load_trust(&m, o)) ? -1 : 0;
  if (rc == 0) {
    struct cms_decrypt_party p = {m.key, sk_X509_value(m.certs, 0)};
    if (smime_decrypt_message(&entity, &authenticated, &cms_local_signer, &p, 1,
                              msg->data, msg->len, err,
                              sizeof err) != SMIME_OK) {
      fprintf(stderr, "postseal: smime decrypt: %s\n", err);
      rc = -1;
    }
  }
  if (rc == 0 && o->require_signed) {
    /* only what the signature covers is written, not its wrapper */
    rc = check_inner(&m, o, msg, &entity, &inner);
    buf_move(&entity, &inner);
  } else if (rc == 0 && !authenticated) {
    fprintf(stderr, "postseal: smime decrypt: warning: AES-CBC content is "
                    "not authenticated (EFAIL); use --require-signed to "
                    "accept it only under a valid signature\n");
  }
  if (rc == 0 && smime_split(&outer, &ignored, msg->data, msg->len, err,
                             sizeof err) != SMIME_OK) {
    fprintf(stderr, "postseal: smime decrypt: %s\n", err);
    rc = -1;
  }
  if (rc == 0) {
    int j = smime_join(out, outer.data, outer.len, entity.data, entity.len);
    if (j != SMIME_OK) {
      fprintf(stderr, "postseal: smime decrypt: %s\n",
              j == SMIME_ERR_INTERNAL
                  ? "out of memory"
                  : "the decrypted entity's header is malformed");
      rc = -1;
    }
  }
  buf_free(&entity);
  buf_free(&inner);
  buf_free(&outer);
  buf_free(&ignored);
  material_free(&m);
  return rc;
}

int cmd_smime(int argc, char **argv) {
  static const struct {
    const char *verb;
    int (*run)(const struct smime_opts *, const struct buf *, struct buf *);
  } verbs[] = {{"sign", run_sign},
               {"encrypt", run_encrypt},
               {"verify", run_verify},
               {"decrypt", run_decrypt}};
  if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
      strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
    smime_usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? CLI_USAGE : CLI_OK;
  }
  for (size_t k = 0; k < sizeof verbs / sizeof verbs[0]; k++) {
    if (strcmp(argv[1], verbs[k].verb) != 0) {
      continue;
    }
    struct smime_opts o = {.verb = verbs[k].verb};
    for (int i = 2; i < argc; i++) {
      if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
        smime_usage(stdout);
        return CLI_OK;
      }
      if (parse_one(argc, argv, &i, &o) != 0) {
        smime_usage(stderr);
        return CLI_USAGE;
      }
    }
    if (need(&o) != 0) {
      smime_usage(stderr);
      return CLI_USAGE;
    }
    struct buf msg = {0}, out = {0};
    int rc = read_input(o.in, &msg) != 0 || verbs[k].run(&o, &msg, &out) != 0 ||
                     (strcmp(o.verb, "verify") != 0 || o.out != NULL
                          ? write_output(o.out, &out)
                          : 0) != 0
                 ? CLI_FAIL
                 : CLI_OK;
    buf_free(&msg);
    buf_free(&out);
    return rc;
  }
  fprintf(stderr, "postseal: smime: unknown command '%s'\n", argv[1]);
  smime_usage(stderr);
  return CLI_USAGE;
}
