/* bench/bench_dkim.c — `postseal-bench dkim-speed`: what DKIM signing
 * costs one core, raw and through crypto/dkim.h.
 *
 * Three phases on one thread, each for --seconds of the thread's CPU time:
 *   rsa2048   BoringSSL RSA_sign of a SHA-256 digest (RSASSA-PKCS1-v1_5,
 *             what rsa-sha256 signs) with an RSA-2048 key;
 *   ed25519   ED25519_sign of 32 bytes (RFC 8463 signs the 32-byte
 *             SHA-256 of the header data);
 *   dual      dkim_sign_begin + dkim_sign_end for one message (--size
 *             octets, default 4096: header fields and a text body) with
 *             two specs, RSA-2048 and Ed25519, relaxed/relaxed, the
 *             default header list, through dkim_local_signer: what the
 *             daemon does per message when it dual-signs.
 * The per-message overhead of the DKIM layer (canonicalisation, hashing,
 * header choice and building, base64, folding) is then
 *   1/dual - 1/rsa2048 - 1/ed25519,
 * the time of a dual-signed message beyond its two raw signatures. That
 * difference is small beside the RSA signature, so the phases run in
 * turns of DKIM_SPEED_SLICE_NS each (rsa2048, ed25519, dual, rsa2048, ...)
 * and every rate is per second of the thread's own CPU time
 * (CLOCK_THREAD_CPUTIME_ID): other load on a shared machine then changes
 * all three alike instead of one phase's wall time. Wall-clock rates are
 * reported beside them.
 *
 * Keys: the raw phases use keys made in memory; the dual phase uses keys
 * made by dkim_keygen in a private temp folder, loaded and removed at
 * once. Before the timed dual phase one signed message is checked with
 * dkim_verify against the keys' records (both signatures must pass), so
 * the rate is that of signatures that verify. Bounded by --seconds (at
 * most BENCH_MAX_SECONDS), DKIM_SPEED_MAX_OPS per phase, and a wall-clock
 * limit of DKIM_SPEED_WALL_FACTOR times the CPU time asked for (on a busy
 * machine: fewer operations, and the report says so). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/curve25519.h>
#include <openssl/nid.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>

#include "bench/bench.h"
#include "core/buf.h"
#include "crypto/dkim.h"

#define DKIM_SPEED_MAX_OPS 100000000ull
#define DKIM_SPEED_DEFAULT_SIZE 4096
#define DKIM_SPEED_MIN_SIZE 512 /* room for the header fields */
#define DKIM_SPEED_DOMAIN BENCH_TEXT_DOMAIN
#define DKIM_SPEED_SLICE_NS 50000000 /* CPU time of one phase's turn */
#define DKIM_SPEED_WALL_FACTOR 4
#define DKIM_SPEED_ED_BATCH 16 /* Ed25519 signs between clock reads */
/* The body text, with double spaces and a tab for relaxed canonicalisation
 * (RFC 6376 §3.4.4) to fold. */
#define DKIM_SPEED_TEXT                                                        \
  "the quick brown fox jumps over the lazy dog  and then some more "           \
  "text to sign, with  double spaces and a tab\there "

struct dkim_speed_opts {
  double seconds;
  size_t size;
  const char *json;
};

/* One phase, summed over its turns. */
struct dkim_speed_phase {
  uint64_t ops;
  int64_t ns, cpu_ns;       /* wall and thread CPU time */
  int64_t begin_ns, end_ns; /* dual: CPU time inside each pass */
};

struct dkim_speed_run {
  const struct dkim_speed_opts *o;
  RSA *rsa;
  uint8_t ed_priv[64], ed_pub[32];
  struct dkim_key *key_rsa, *key_ed;
  struct buf msg, sigs;
  struct dkim_speed_phase rsa2048, ed25519, dual;
  size_t sig_bytes; /* the two DKIM-Signature fields of one message */
  int cut_short;    /* the wall-clock limit ended the run */
  char err[512];
};

static int64_t dkim_speed_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- set-up ---- */

/* dkim_speed_raw_keys makes the raw phases' keys in memory. */
static int dkim_speed_raw_keys(struct dkim_speed_run *r) {
  BIGNUM *e = BN_new();
  r->rsa = RSA_new();
  int ok = e != NULL && r->rsa != NULL && BN_set_word(e, RSA_F4) &&
           RSA_generate_key_ex(r->rsa, 2048, e, NULL);
  BN_free(e);
  ED25519_keypair(r->ed_pub, r->ed_priv);
  if (!ok) {
    snprintf(r->err, sizeof(r->err), "could not make an RSA-2048 key");
  }
  return ok ? 0 : -1;
}

/* dkim_speed_dkim_keys makes the dual phase's keys with dkim_keygen in a
 * private temp folder and removes the files at once. */
static int dkim_speed_dkim_keys(struct dkim_speed_run *r) {
  const char *base = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
  char dir[512], rsa_path[600], ed_path[600], err[256] = "";
  snprintf(dir, sizeof(dir), "%s/postseal-bench-dkim.XXXXXX", base);
  if (mkdtemp(dir) == NULL) {
    snprintf(r->err, sizeof(r->err), "%.300s: %s", dir, strerror(errno));
    return -1;
  }
  snprintf(rsa_path, sizeof(rsa_path), "%s/rsa.key", dir);
  snprintf(ed_path, sizeof(ed_path), "%s/ed.key", dir);
  r->key_rsa =
      dkim_keygen(DKIM_ALG_RSA_SHA256, 2048, rsa_path, err, sizeof(err));
  if (r->key_rsa != NULL) {
    r->key_ed =
        dkim_keygen(DKIM_ALG_ED25519_SHA256, 0, ed_path, err, sizeof(err));
  }
  unlink(rsa_path);
  unlink(ed_path);
  rmdir(dir);
  if (r->key_rsa == NULL || r->key_ed == NULL) {
    snprintf(r->err, sizeof(r->err), "dkim_keygen: %s", err);
    return -1;
  }
  return 0;
}

/* dkim_speed_specs fills the two signatures of the dual phase. */
static void dkim_speed_specs(const struct dkim_speed_run *r,
                             struct dkim_sign_spec specs[2]) {
  int64_t now = (int64_t)time(NULL);
  specs[0] = (struct dkim_sign_spec){.domain = DKIM_SPEED_DOMAIN,
                                     .selector = "rsa",
                                     .key = r->key_rsa,
                                     .hdr_canon = DKIM_CANON_RELAXED,
                                     .body_canon = DKIM_CANON_RELAXED,
                                     .timestamp = now,
                                     .expire = -1};
  specs[1] = specs[0];
  specs[1].selector = "ed";
  specs[1].key = r->key_ed;
}

/* ---- one of each ---- */

/* dkim_speed_sign_one dual-signs the message into r->sigs. 0 or -1. */
static int dkim_speed_sign_one(struct dkim_speed_run *r, int64_t *out_begin,
                               int64_t *out_end) {
  struct dkim_sign_spec specs[2];
  struct dkim_sign_job job;
  dkim_speed_specs(r, specs);
  buf_reset(&r->sigs);
  int64_t t0 = dkim_speed_cpu_ns();
  int rc = dkim_sign_begin(&job, r->msg.data, r->msg.len, specs, 2,
                           &dkim_sign_default_headers, r->err, sizeof(r->err));
  int64_t t1 = dkim_speed_cpu_ns();
  if (rc == 0) {
    rc = dkim_sign_end(&job, &dkim_local_signer, &r->sigs, r->err,
                       sizeof(r->err));
  }
  *out_begin += t1 - t0;
  *out_end += dkim_speed_cpu_ns() - t1;
  return rc;
}

/* dkim_speed_key_for: the key a query (SELECTOR._domainkey...) names. */
static struct dkim_key *dkim_speed_key_for(struct dkim_speed_run *r,
                                           const char *query) {
  return strncmp(query, "rsa.", 4) == 0  ? r->key_rsa
         : strncmp(query, "ed.", 3) == 0 ? r->key_ed
                                         : NULL;
}

/* dkim_speed_check verifies one dual-signed message with crypto/dkim.h:
 * two signatures, both pass against the keys' records. 0 or -1. */
static int dkim_speed_check(struct dkim_speed_run *r) {
  int64_t unused = 0;
  if (dkim_speed_sign_one(r, &unused, &unused) != 0) {
    return -1;
  }
  r->sig_bytes = r->sigs.len;
  struct buf signed_msg = {0}, rec = {0};
  int ok = buf_append(&signed_msg, r->sigs.data, r->sigs.len) == 0 &&
           buf_append(&signed_msg, r->msg.data, r->msg.len) == 0;
  struct dkim_verify *v =
      ok ? dkim_verify_new(signed_msg.data, signed_msg.len, DKIM_MAX_VERIFY,
                           (int64_t)time(NULL))
         : NULL;
  size_t n = v != NULL ? dkim_verify_count(v) : 0;
  ok = v != NULL && n == 2;
  for (size_t i = 0; ok && i < n; i++) {
    const char *q = dkim_verify_query(v, i);
    struct dkim_key *k = q != NULL ? dkim_speed_key_for(r, q) : NULL;
    buf_reset(&rec);
    if (k != NULL && dkim_key_record(k, &rec) == 0) {
      const char *txt = (const char *)rec.data;
      size_t txt_len = rec.len;
      dkim_verify_key(v, i, DKIM_KEY_FOUND, &txt, &txt_len, 1);
    }
    const struct dkim_verdict *vd = dkim_verify_verdict(v, i);
    ok = vd != NULL && vd->result == DKIM_PASS;
    if (!ok) {
      snprintf(r->err, sizeof(r->err),
               "self-check: signature %zu of the dual-signed message: %s%s%s",
               i, vd != NULL ? dkim_result_name(vd->result) : "no verdict",
               vd != NULL ? ", " : "", vd != NULL ? vd->reason : "");
    }
  }
  if (v != NULL && n != 2) {
    snprintf(r->err, sizeof(r->err), "self-check: %zu signatures, want 2", n);
  } else if (v == NULL && r->err[0] == '\0') {
    snprintf(r->err, sizeof(r->err), "self-check: out of memory");
  }
  dkim_verify_free(v);
  buf_free(&signed_msg);
  buf_free(&rec);
  return ok ? 0 : -1;
}

/* ---- the timed phases ---- */

enum dkim_speed_kind { DKIM_SPEED_RSA, DKIM_SPEED_ED25519, DKIM_SPEED_DUAL };

/* dkim_speed_op runs one operation of a phase. 0 or -1. */
static int dkim_speed_op(struct dkim_speed_run *r, enum dkim_speed_kind kind,
                         struct dkim_speed_phase *p, const uint8_t digest[32]) {
  uint8_t sig[512];
  unsigned sig_len = 0;
  switch (kind) {
  case DKIM_SPEED_RSA:
    return RSA_sign(NID_sha256, digest, 32, sig, &sig_len, r->rsa) ? 0 : -1;
  case DKIM_SPEED_ED25519:
    return ED25519_sign(sig, digest, 32, r->ed_priv) ? 0 : -1;
  case DKIM_SPEED_DUAL:
    return dkim_speed_sign_one(r, &p->begin_ns, &p->end_ns);
  }
  return -1;
}

/* dkim_speed_turn runs one phase's operations for DKIM_SPEED_SLICE_NS of
 * CPU time (Ed25519 in batches: one signature takes not much longer than
 * a read of the thread's clock). 0 or -1. */
static int dkim_speed_turn(struct dkim_speed_run *r, enum dkim_speed_kind kind,
                           struct dkim_speed_phase *p, uint8_t digest[32]) {
  int batch = kind == DKIM_SPEED_ED25519 ? DKIM_SPEED_ED_BATCH : 1;
  int64_t wall0 = bench_now_ns(), cpu0 = dkim_speed_cpu_ns(), cpu = cpu0;
  while (cpu - cpu0 < DKIM_SPEED_SLICE_NS && p->ops < DKIM_SPEED_MAX_OPS) {
    for (int i = 0; i < batch; i++) {
      if (dkim_speed_op(r, kind, p, digest) != 0) {
        if (r->err[0] == '\0') {
          snprintf(r->err, sizeof(r->err), "%s sign failed",
                   kind == DKIM_SPEED_RSA ? "RSA" : "Ed25519");
        }
        return -1;
      }
      digest[0]++; /* a different digest each time, as in real use */
    }
    p->ops += (uint64_t)batch;
    cpu = dkim_speed_cpu_ns();
  }
  p->cpu_ns += cpu - cpu0;
  p->ns += bench_now_ns() - wall0;
  return 0;
}

/* dkim_speed_phases runs the three phases in turns until each has had
 * --seconds of CPU time, or the wall-clock limit passes. 0 or -1. */
static int dkim_speed_phases(struct dkim_speed_run *r) {
  static const enum dkim_speed_kind kinds[] = {
      DKIM_SPEED_RSA, DKIM_SPEED_ED25519, DKIM_SPEED_DUAL};
  struct dkim_speed_phase *phases[] = {&r->rsa2048, &r->ed25519, &r->dual};
  int64_t want = (int64_t)(r->o->seconds * 1e9);
  int64_t deadline = bench_now_ns() + DKIM_SPEED_WALL_FACTOR * 3 * want;
  uint8_t digest[32];
  SHA256(r->msg.data, r->msg.len, digest);
  for (int busy = 1; busy;) {
    busy = 0;
    for (size_t i = 0; i < 3; i++) {
      if (phases[i]->cpu_ns >= want || phases[i]->ops >= DKIM_SPEED_MAX_OPS) {
        continue;
      }
      if (bench_now_ns() > deadline) {
        r->cut_short = 1;
        return 0;
      }
      if (dkim_speed_turn(r, kinds[i], phases[i], digest) != 0) {
        return -1;
      }
      busy = 1;
    }
  }
  return 0;
}

/* ---- report ---- */

static double dkim_speed_per_s(uint64_t n, int64_t ns) {
  return ns > 0 ? (double)n * 1e9 / (double)ns : 0.0;
}

static double dkim_speed_us(int64_t ns, uint64_t n) {
  return n > 0 ? (double)ns / 1000.0 / (double)n : 0.0;
}

/* dkim_speed_rate: operations per second of CPU time, the headline. */
static double dkim_speed_rate(const struct dkim_speed_phase *p) {
  return dkim_speed_per_s(p->ops, p->cpu_ns);
}

/* dkim_speed_overhead_ms: 1/dual - 1/rsa - 1/ed25519, in ms; 0 if a
 * phase did nothing. */
static double dkim_speed_overhead_ms(const struct dkim_speed_run *r) {
  double d = dkim_speed_rate(&r->dual), a = dkim_speed_rate(&r->rsa2048);
  double e = dkim_speed_rate(&r->ed25519);
  return d > 0 && a > 0 && e > 0 ? 1000.0 * (1 / d - 1 / a - 1 / e) : 0.0;
}

static void dkim_speed_phase_json(FILE *f, const char *name,
                                  const struct dkim_speed_phase *p) {
  fprintf(f,
          " \"%s\": {\"ops\": %llu, \"cpu_s\": %.3f, \"elapsed_s\": %.3f, "
          "\"per_cpu_s\": %.1f, \"per_wall_s\": %.1f, \"us_each\": %.2f}",
          name, (unsigned long long)p->ops, (double)p->cpu_ns / 1e9,
          (double)p->ns / 1e9, dkim_speed_rate(p),
          dkim_speed_per_s(p->ops, p->ns), dkim_speed_us(p->cpu_ns, p->ops));
}

static void dkim_speed_report_json(FILE *f, const struct dkim_speed_run *r) {
  fprintf(f,
          "{\"tool\": \"postseal-bench dkim-speed\", \"seconds\": %g, "
          "\"cut_short\": %s, \"message_bytes\": %zu, \"canonicalization\": "
          "\"relaxed/relaxed\", \"signature_bytes\": %zu,\n",
          r->o->seconds, r->cut_short ? "true" : "false", r->msg.len,
          r->sig_bytes);
  dkim_speed_phase_json(f, "rsa2048_sign", &r->rsa2048);
  fprintf(f, ",\n");
  dkim_speed_phase_json(f, "ed25519_sign", &r->ed25519);
  fprintf(f, ",\n");
  dkim_speed_phase_json(f, "dkim_dual", &r->dual);
  fprintf(f,
          ",\n \"dkim_dual_begin_us\": %.2f, \"dkim_dual_end_us\": %.2f,\n"
          " \"rsa2048_signs_per_s\": %.1f, \"ed25519_signs_per_s\": %.1f, "
          "\"dual_messages_per_s\": %.1f, \"overhead_ms_per_msg\": %.4f}\n",
          dkim_speed_us(r->dual.begin_ns, r->dual.ops),
          dkim_speed_us(r->dual.end_ns, r->dual.ops),
          dkim_speed_rate(&r->rsa2048), dkim_speed_rate(&r->ed25519),
          dkim_speed_rate(&r->dual), dkim_speed_overhead_ms(r));
}

static void dkim_speed_report_text(FILE *f, const struct dkim_speed_run *r) {
  const struct dkim_speed_phase *a = &r->rsa2048, *e = &r->ed25519,
                                *d = &r->dual;
  fprintf(
      f,
      "postseal-bench dkim-speed: one core, %g CPU s per phase%s\n"
      "  RSA-2048 sign (RSA_sign of a SHA-256 digest): %9.1f/s  "
      "%8.2f us\n"
      "  Ed25519 sign (32 bytes):                      %9.1f/s  "
      "%8.2f us\n"
      "  dkim dual RSA-2048 + Ed25519, %zu B, relaxed:  %7.1f msg/s "
      "%6.2f us (hash pass %.2f, sign pass %.2f)\n"
      "  DKIM overhead beyond the two signatures: %.4f ms per message\n",
      r->o->seconds, r->cut_short ? " (CUT SHORT: the machine is busy)" : "",
      dkim_speed_rate(a), dkim_speed_us(a->cpu_ns, a->ops), dkim_speed_rate(e),
      dkim_speed_us(e->cpu_ns, e->ops), r->msg.len, dkim_speed_rate(d),
      dkim_speed_us(d->cpu_ns, d->ops), dkim_speed_us(d->begin_ns, d->ops),
      dkim_speed_us(d->end_ns, d->ops), dkim_speed_overhead_ms(r));
}

/* ---- options ---- */

static void dkim_speed_usage(FILE *f) {
  fprintf(f,
          "usage: postseal-bench dkim-speed [--seconds S] [--size BYTES] "
          "[--json FILE]\n"
          "One core: BoringSSL RSA-2048 signs/s (RSA_sign of a SHA-256 "
          "digest), Ed25519\nsigns/s (ED25519_sign of 32 bytes), and "
          "crypto/dkim.h dual signing (RSA-2048 +\nEd25519, relaxed/relaxed) "
          "of a BYTES message (default %d) in messages/s, with\nthe "
          "per-message overhead beyond the two signatures. S seconds of CPU "
          "time per\nphase (default 3, at most %.0f), the phases taking "
          "turns.\n",
          DKIM_SPEED_DEFAULT_SIZE, BENCH_MAX_SECONDS);
}

static int dkim_speed_parse(int argc, char **argv, struct dkim_speed_opts *o) {
  static const struct option longopts[] = {
      {"seconds", required_argument, NULL, 's'},
      {"size", required_argument, NULL, 'z'},
      {"json", required_argument, NULL, 'j'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  *o = (struct dkim_speed_opts){.seconds = 3, .size = DKIM_SPEED_DEFAULT_SIZE};
  int ch;
  optind = 1;
  while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    char *end;
    switch (ch) {
    case 's':
      errno = 0;
      o->seconds = strtod(optarg, &end);
      if (end == optarg || *end != '\0' || errno != 0) {
        return -1;
      }
      break;
    case 'z':
      errno = 0;
      o->size = strtoul(optarg, &end, 10);
      if (end == optarg || *end != '\0' || errno != 0 || optarg[0] == '-') {
        return -1;
      }
      break;
    case 'j':
      o->json = optarg;
      break;
    case 'h':
      dkim_speed_usage(stdout);
      exit(0);
    default:
      return -1;
    }
  }
  return optind == argc && o->seconds > 0 && o->seconds <= BENCH_MAX_SECONDS &&
                 o->size >= DKIM_SPEED_MIN_SIZE && o->size <= BENCH_MAX_SIZE
             ? 0
             : -1;
}

static int dkim_speed_write_json(const struct dkim_speed_run *r) {
  const char *path = r->o->json;
  FILE *f = strcmp(path, "-") == 0 ? stdout : fopen(path, "w");
  if (f == NULL) {
    fprintf(stderr, "postseal-bench dkim-speed: %s: %s\n", path,
            strerror(errno));
    return -1;
  }
  dkim_speed_report_json(f, r);
  return f != stdout && fclose(f) != 0 ? -1 : 0;
}

/* dkim_speed_all: set-up, the self-check and the three phases. */
static int dkim_speed_all(struct dkim_speed_run *r) {
  if (bench_text_message(&r->msg, r->o->size, "dkim-speed", DKIM_SPEED_TEXT) !=
      0) {
    snprintf(r->err, sizeof(r->err), "could not build the message");
    return -1;
  }
  return dkim_speed_raw_keys(r) == 0 && dkim_speed_dkim_keys(r) == 0 &&
                 dkim_speed_check(r) == 0 && dkim_speed_phases(r) == 0
             ? 0
             : -1;
}

int bench_dkim_speed_main(int argc, char **argv) {
  struct dkim_speed_opts o;
  if (dkim_speed_parse(argc, argv, &o) != 0) {
    dkim_speed_usage(stderr);
    return 2;
  }
  struct dkim_speed_run r = {.o = &o};
  int rc = 0;
  if (dkim_speed_all(&r) != 0) {
    fprintf(stderr, "postseal-bench dkim-speed: %s\n", r.err);
    rc = 1;
  } else {
    dkim_speed_report_text(stdout, &r);
    if (o.json != NULL && dkim_speed_write_json(&r) != 0) {
      rc = 1;
    }
  }
  RSA_free(r.rsa);
  dkim_key_free(r.key_rsa);
  dkim_key_free(r.key_ed);
  buf_free(&r.msg);
  buf_free(&r.sigs);
  return rc;
}
