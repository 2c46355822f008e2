/* bench/bench_smime.c — `postseal-bench smime-speed`: what S/MIME costs
 * one core per message, through crypto/smime.h as the gateway stage calls
 * it.
 *
 * Phases on one thread, each for --seconds of the thread's CPU time
 * (CLOCK_THREAD_CPUTIME_ID, so other load on a shared machine does not
 * count), on one message of --size octets (default 4096: header fields
 * and a text body):
 *   sign          smime_sign, multipart/signed, the signer's key and
 *                 certificate (--key, --cert), SHA-256, the S/MIME
 *                 signed attributes;
 *   encrypt-1     smime_encrypt to the first --rcpt certificate,
 *                 AES-256-GCM AuthEnvelopedData;
 *   encrypt-N     smime_encrypt to every --rcpt certificate (up to
 *                 SMIME_SPEED_MAX_RCPTS), one content key;
 *   sign+encrypt  smime_sign then smime_encrypt to the first --rcpt: what
 *                 the gateway does to one message for one recipient.
 * Before the timed phases one message of each is opened again (verified
 * and decrypted with smime_open when --rcpt-key is given for the first
 * recipient), so the rates are of output that works.
 *
 * Output: one line per phase, "smime-speed phase=NAME msgs=N
 * cpu_ms_per_msg=X msgs_per_cpu_s=Y wall_msgs_per_s=Z", then with --json
 * the same as one JSON object. Bounded by --seconds (at most
 * BENCH_MAX_SECONDS) per phase, SMIME_SPEED_MAX_OPS per phase, and a
 * wall-clock limit of SMIME_SPEED_WALL_FACTOR times the CPU time. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/x509.h>

#include "bench/bench.h"
#include "core/buf.h"
#include "crypto/cms.h"
#include "crypto/smime.h"

#define SMIME_SPEED_MAX_OPS 10000000ull
#define SMIME_SPEED_MAX_RCPTS 16
#define SMIME_SPEED_DEFAULT_SIZE 4096
#define SMIME_SPEED_MIN_SIZE 512
#define SMIME_SPEED_WALL_FACTOR 4
#define SMIME_SPEED_TEXT                                                       \
  "the quick brown fox jumps over the lazy dog "                               \
  "and then some more text to protect, "

struct smime_speed_opts {
  const char *key, *cert, *rcpt_key;
  const char *rcpts[SMIME_SPEED_MAX_RCPTS];
  size_t num_rcpts;
  size_t size;
  double seconds;
  int json;
};

struct smime_speed_run {
  const struct smime_speed_opts *o;
  struct cms_key *key, *rcpt_key;
  STACK_OF(X509) * certs; /* the signer's, leaf first */
  X509 *rcpt_certs[SMIME_SPEED_MAX_RCPTS];
  size_t num_rcpts;
  struct buf msg, out, tmp;
  char err[512];
};

enum smime_speed_kind {
  SMIME_SPEED_SIGN,
  SMIME_SPEED_ENC1,
  SMIME_SPEED_ENCN,
  SMIME_SPEED_BOTH,
  SMIME_SPEED_KINDS,
};

struct smime_speed_result {
  const char *name;
  uint64_t ops;
  int64_t cpu_ns, wall_ns;
};

static int64_t smime_speed_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* smime_speed_load reads the key and certificates named by the options. */
static int smime_speed_load(struct smime_speed_run *r) {
  const struct smime_speed_opts *o = r->o;
  char why[256] = "";
  r->key = cms_key_load_pem(o->key, why, sizeof(why));
  r->certs =
      r->key != NULL ? cms_certs_load_pem(o->cert, why, sizeof(why)) : NULL;
  if (r->certs == NULL) {
    snprintf(r->err, sizeof(r->err), "%s", why);
    return -1;
  }
  for (size_t i = 0; i < o->num_rcpts; i++) {
    STACK_OF(X509) *c = cms_certs_load_pem(o->rcpts[i], why, sizeof(why));
    if (c == NULL) {
      snprintf(r->err, sizeof(r->err), "%s", why);
      return -1;
    }
    r->rcpt_certs[r->num_rcpts++] = sk_X509_shift(c);
    sk_X509_pop_free(c, X509_free);
  }
  if (o->rcpt_key != NULL) {
    r->rcpt_key = cms_key_load_pem(o->rcpt_key, why, sizeof(why));
    if (r->rcpt_key == NULL) {
      snprintf(r->err, sizeof(r->err), "%s", why);
      return -1;
    }
  }
  return bench_text_message(&r->msg, o->size, "smime-speed", SMIME_SPEED_TEXT);
}

/* smime_speed_sign signs in into out. */
static int smime_speed_sign(struct smime_speed_run *r, struct buf *out,
                            const struct buf *in) {
  struct cms_sign_party party = {.key = r->key,
                                 .cert = sk_X509_value(r->certs, 0),
                                 .chain = r->certs,
                                 .digest = CMS_SHA256};
  struct smime_sign_opts so = {.signing_time = (int64_t)time(NULL)};
  return smime_sign(out, &cms_local_signer, &party, 1, &so, in->data, in->len,
                    r->err, sizeof(r->err));
}

/* smime_speed_encrypt encrypts in to the first n recipients into out. */
static int smime_speed_encrypt(struct smime_speed_run *r, struct buf *out,
                               const struct buf *in, size_t n) {
  struct cms_recipient rc[SMIME_SPEED_MAX_RCPTS] = {0};
  for (size_t i = 0; i < n; i++) {
    rc[i].cert = r->rcpt_certs[i];
  }
  return smime_encrypt(out, rc, n, CMS_AES256_GCM, in->data, in->len, r->err,
                       sizeof(r->err));
}

/* smime_speed_op runs one operation of a phase. 0 or an error. */
static int smime_speed_op(struct smime_speed_run *r, enum smime_speed_kind k) {
  buf_reset(&r->out);
  switch (k) {
  case SMIME_SPEED_SIGN:
    return smime_speed_sign(r, &r->out, &r->msg);
  case SMIME_SPEED_ENC1:
    return smime_speed_encrypt(r, &r->out, &r->msg, 1);
  case SMIME_SPEED_ENCN:
    return smime_speed_encrypt(r, &r->out, &r->msg, r->num_rcpts);
  default:
    buf_reset(&r->tmp);
    int rc = smime_speed_sign(r, &r->tmp, &r->msg);
    return rc != 0 ? rc : smime_speed_encrypt(r, &r->out, &r->tmp, 1);
  }
}

/* smime_speed_check opens one sign+encrypt message again: it must
 * decrypt (with --rcpt-key) and its signature must verify (chain not
 * checked: the bench has no trust anchors). */
static int smime_speed_check(struct smime_speed_run *r) {
  if (smime_speed_op(r, SMIME_SPEED_BOTH) != 0) {
    return -1;
  }
  if (r->rcpt_key == NULL) {
    return 0;
  }
  struct cms_decrypt_party dp = {.key = r->rcpt_key, .cert = r->rcpt_certs[0]};
  struct smime_open_opts oo = {
      .signer = &cms_local_signer, .parties = &dp, .num_parties = 1};
  struct smime_opened op;
  int rc =
      smime_open(&op, &oo, r->out.data, r->out.len, r->err, sizeof(r->err));
  int ok = rc == SMIME_OK && op.encrypted && op.signed_ && op.num_layers == 2 &&
           op.layers[1].verified.num_signers == 1 &&
           (op.layers[1].verified.signers[0].verdict == CMS_V_PASS ||
            op.layers[1].verified.signers[0].verdict == CMS_V_UNTRUSTED);
  if (rc == SMIME_OK && !ok) {
    snprintf(r->err, sizeof(r->err),
             "self-check: the message did not open as signed and encrypted");
  }
  smime_opened_cleanup(&op);
  return ok ? 0 : -1;
}

/* smime_speed_phase runs one phase for the CPU time asked. */
static int smime_speed_phase(struct smime_speed_run *r, enum smime_speed_kind k,
                             struct smime_speed_result *res) {
  int64_t budget = (int64_t)(r->o->seconds * 1e9);
  int64_t c0 = smime_speed_cpu_ns(), w0 = bench_now_ns();
  while (res->ops < SMIME_SPEED_MAX_OPS) {
    if (smime_speed_op(r, k) != 0) {
      return -1;
    }
    res->ops++;
    if (smime_speed_cpu_ns() - c0 >= budget ||
        bench_now_ns() - w0 >= budget * SMIME_SPEED_WALL_FACTOR) {
      break;
    }
  }
  res->cpu_ns = smime_speed_cpu_ns() - c0;
  res->wall_ns = bench_now_ns() - w0;
  return 0;
}

static void smime_speed_print(const struct smime_speed_run *r,
                              const struct smime_speed_result *res) {
  for (int k = 0; k < SMIME_SPEED_KINDS; k++) {
    const struct smime_speed_result *x = &res[k];
    double cpu_ms = x->ops ? (double)x->cpu_ns / 1e6 / (double)x->ops : 0;
    printf("smime-speed phase=%s size=%zu msgs=%llu cpu_ms_per_msg=%.4f "
           "msgs_per_cpu_s=%.1f wall_msgs_per_s=%.1f\n",
           x->name, r->o->size, (unsigned long long)x->ops, cpu_ms,
           cpu_ms > 0 ? 1000.0 / cpu_ms : 0,
           x->wall_ns ? (double)x->ops * 1e9 / (double)x->wall_ns : 0);
  }
  if (!r->o->json) {
    return;
  }
  printf("{\"bench\":\"smime-speed\",\"size\":%zu,\"recipients\":%zu,"
         "\"phases\":{",
         r->o->size, r->num_rcpts);
  for (int k = 0; k < SMIME_SPEED_KINDS; k++) {
    const struct smime_speed_result *x = &res[k];
    printf("%s\"%s\":{\"msgs\":%llu,\"cpu_ns\":%lld,\"wall_ns\":%lld}",
           k ? "," : "", x->name, (unsigned long long)x->ops,
           (long long)x->cpu_ns, (long long)x->wall_ns);
  }
  printf("}}\n");
}

static void smime_speed_usage(FILE *f) {
  fprintf(f,
          "usage: postseal-bench smime-speed --key K --cert C --rcpt CERT "
          "[--rcpt CERT ...]\n"
          "         [--rcpt-key KEY] [--size OCTETS] [--seconds S] [--json]\n"
          "  Signs and encrypts one message through crypto/smime.h, each "
          "phase for S\n"
          "  seconds of CPU (default 2): sign, encrypt-1, encrypt-N (every "
          "--rcpt),\n"
          "  sign+encrypt. --rcpt-key: the first recipient's key, to check "
          "the output\n"
          "  opens before timing.\n");
}

static int smime_speed_parse(int argc, char **argv,
                             struct smime_speed_opts *o) {
  static const struct option longopts[] = {
      {"key", required_argument, NULL, 'k'},
      {"cert", required_argument, NULL, 'c'},
      {"rcpt", required_argument, NULL, 'r'},
      {"rcpt-key", required_argument, NULL, 'R'},
      {"size", required_argument, NULL, 's'},
      {"seconds", required_argument, NULL, 't'},
      {"json", no_argument, NULL, 'j'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  *o = (struct smime_speed_opts){.size = SMIME_SPEED_DEFAULT_SIZE,
                                 .seconds = 2.0};
  int ch;
  optind = 1;
  while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    char *end = NULL;
    switch (ch) {
    case 'k':
      o->key = optarg;
      break;
    case 'c':
      o->cert = optarg;
      break;
    case 'r':
      if (o->num_rcpts == SMIME_SPEED_MAX_RCPTS) {
        fprintf(stderr, "smime-speed: at most %d --rcpt\n",
                SMIME_SPEED_MAX_RCPTS);
        return 2;
      }
      o->rcpts[o->num_rcpts++] = optarg;
      break;
    case 'R':
      o->rcpt_key = optarg;
      break;
    case 's':
      o->size = strtoul(optarg, &end, 10);
      if (*end != '\0' || o->size < SMIME_SPEED_MIN_SIZE ||
          o->size > BENCH_MAX_SIZE) {
        fprintf(stderr, "smime-speed: --size %s out of range\n", optarg);
        return 2;
      }
      break;
    case 't':
      o->seconds = strtod(optarg, &end);
      if (*end != '\0' || !(o->seconds > 0) || o->seconds > BENCH_MAX_SECONDS) {
        fprintf(stderr, "smime-speed: --seconds %s out of range\n", optarg);
        return 2;
      }
      break;
    case 'j':
      o->json = 1;
      break;
    case 'h':
      smime_speed_usage(stdout);
      return -1;
    default:
      smime_speed_usage(stderr);
      return 2;
    }
  }
  if (o->key == NULL || o->cert == NULL || o->num_rcpts == 0 ||
      optind != argc) {
    smime_speed_usage(stderr);
    return 2;
  }
  return 0;
}

static void smime_speed_free(struct smime_speed_run *r) {
  cms_key_free(r->key);
  cms_key_free(r->rcpt_key);
  sk_X509_pop_free(r->certs, X509_free);
  for (size_t i = 0; i < r->num_rcpts; i++) {
    X509_free(r->rcpt_certs[i]);
  }
  buf_free(&r->msg);
  buf_free(&r->out);
  buf_free(&r->tmp);
}

int bench_smime_speed_main(int argc, char **argv) {
  struct smime_speed_opts o;
  int prc = smime_speed_parse(argc, argv, &o);
  if (prc != 0) {
    return prc < 0 ? 0 : prc;
  }
  struct smime_speed_run r = {.o = &o};
  struct smime_speed_result res[SMIME_SPEED_KINDS] = {
      {.name = "sign"},
      {.name = "encrypt-1"},
      {.name = "encrypt-N"},
      {.name = "sign+encrypt"},
  };
  int rc = smime_speed_load(&r) == 0 && smime_speed_check(&r) == 0 ? 0 : 1;
  for (int k = 0; rc == 0 && k < SMIME_SPEED_KINDS; k++) {
    rc = smime_speed_phase(&r, (enum smime_speed_kind)k, &res[k]) == 0 ? 0 : 1;
  }
  if (rc == 0) {
    printf("smime-speed recipients=%zu (encrypt-N)\n", r.num_rcpts);
    smime_speed_print(&r, res);
  } else {
    fprintf(stderr, "smime-speed: %s\n", r.err[0] ? r.err : "failed");
  }
  smime_speed_free(&r);
  return rc;
}
