/* core/daemon/smimeglue.c — the S/MIME gateway stage between the end of
 * DATA and the DKIM stage (crypto/smime.h and crypto/cms.h do the
 * formats; this file decides what happens to a message).
 *
 * Out (trusted clients: mynetworks, AUTH): the From address (one mailbox
 * in one From field) picks the signer (smime.sign: an address, else its
 * domain or a parent), used only when the client may send as it (an
 * AUTH user's addresses; for mynetworks, an envelope sender in From's
 * domain). The encryption policy (smime.encrypt_policies, else
 * smime.encrypt) is the stricter of From's and the envelope sender's. When
 * the policy is if-possible or required, every envelope recipient's
 * certificate is looked up in smime.certs (usable now: valid, key usage
 * allowing key management). The message is signed, then encrypted to
 * those certificates and the sender's own (smime.encrypt_to_sender), one
 * content key for all. if-possible with a recipient lacking a certificate
 * sends it signed only (counted); required answers 550 5.7.1 naming the
 * recipients without one and stores nothing. A message the client
 * already encrypted passes untouched, one it signed keeps its signature
 * and is only encrypted (end to end beats the gateway). A failure to
 * sign or encrypt mail that should be answers 451: it is never sent
 * weaker than configured. DKIM then signs the result, so it covers what leaves.
 *
 * In (other clients, smime.verify): a signed message (multipart/signed or
 * signed-data, the outer layer) is verified against smime.trust at the
 * current time, the certificate must name the From address (no From, or
 * several, matches no certificate); S/MIME that does not parse is
 * smime=permerror; the verdicts become resinfo of the message's
 * Authentication-Results field (RFC 7281 method "smime"), which the DKIM
 * stage writes when it runs, or this file when it does not (with the
 * same removal of fields forged in our name).
 * Encrypted mail is stored as it came (it is for its recipient).
 *
 * Thread: the worker's; the runtime part (keys, certificates, trust
 * anchors) is immutable and shared through struct runtime. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/x509.h>

#include "core/daemon/daemon.h"
#include "core/log.h"
#include "crypto/certstore.h"
#include "crypto/cms.h"
#include "crypto/smime.h"

/* ---- runtime: keys, certificates, trust anchors ---- */

struct smime_rt_signer {
  char who[512];
  int64_t not_after; /* the leaf certificate's, seconds since the epoch */
  struct cms_key *key;
  STACK_OF(X509) * certs; /* leaf first, then the chain */
};

struct smime_rt {
  size_t num_signers; /* as cfg->smime_signers, same order */
  struct smime_rt_signer *signers;
  struct certstore *store; /* NULL: smime.certs is "" */
  X509_STORE *trust;       /* NULL: smime.trust is "" */
};

void smime_runtime_free(struct smime_rt *s) {
  if (s == NULL) {
    return;
  }
  for (size_t i = 0; i < s->num_signers; i++) {
    cms_key_free(s->signers[i].key);
    sk_X509_pop_free(s->signers[i].certs, X509_free);
  }
  free(s->signers);
  certstore_free(s->store);
  X509_STORE_free(s->trust);
  free(s);
}

/* load_signer reads one smime.sign entry's key and certificates. */
static int load_signer(struct smime_rt_signer *out,
                       const struct config_smime_signer *cs, char *err,
                       size_t err_len) {
  char why[256] = "";
  out->key = cms_key_load_pem(cs->key_file, why, sizeof(why));
  if (out->key == NULL) {
    snprintf(err, err_len, "smime.sign: %s: %s", cs->who, why);
    return -1;
  }
  out->certs = cms_certs_load_pem(cs->cert_file, why, sizeof(why));
  if (out->certs == NULL) {
    snprintf(err, err_len, "smime.sign: %s: %s", cs->who, why);
    return -1;
  }
  X509 *leaf = sk_X509_value(out->certs, 0);
  snprintf(out->who, sizeof(out->who), "%s", cs->who);
  out->not_after = cms_cert_not_after(leaf);
  if (!cms_key_matches_cert(out->key, leaf)) {
    snprintf(err, err_len, "smime.sign: %s: %s is not the certificate of %s",
             cs->who, cs->cert_file, cs->key_file);
    return -1;
  }
  return 0;
}

/* encryption_asked: some sender's policy asks to encrypt. */
static int encryption_asked(const struct config *cfg) {
  int asked = cfg->smime_encrypt != CONFIG_SMIME_NONE;
  for (size_t i = 0; i < cfg->num_smime_policies; i++) {
    asked |= cfg->smime_policies[i].policy != CONFIG_SMIME_NONE;
  }
  return asked;
}

int smime_runtime_load(struct runtime *rt, const struct config *cfg, char *err,
                       size_t err_len) {
  /* Without certificates "required" could never be met and
   * "if-possible" never happen: a configuration mistake, not a policy. */
  if (encryption_asked(cfg) && cfg->smime_certs[0] == '\0') {
    snprintf(err, err_len,
             "smime.encrypt / smime.encrypt_policies ask to encrypt but "
             "smime.certs is not set");
    return -1;
  }
  if (cfg->num_smime_signers == 0 && cfg->smime_certs[0] == '\0' &&
      cfg->smime_trust[0] == '\0') {
    return 0;
  }
  struct smime_rt *s = calloc(1, sizeof(*s));
  if (s == NULL || (cfg->num_smime_signers > 0 &&
                    (s->signers = calloc(cfg->num_smime_signers,
                                         sizeof(*s->signers))) == NULL)) {
    free(s);
    snprintf(err, err_len, "out of memory");
    return -1;
  }
  rt->smime = s;
  for (size_t i = 0; i < cfg->num_smime_signers; i++) {
    s->num_signers = i + 1;
    if (load_signer(&s->signers[i], &cfg->smime_signers[i], err, err_len) !=
        0) {
      return -1; /* runtime_put frees s */
    }
  }
  char why[512] = "";
  if (cfg->smime_certs[0] != '\0') {
    s->store = certstore_load(cfg->smime_certs, why, sizeof(why));
    if (s->store == NULL) {
      snprintf(err, err_len, "smime.certs: %s", why);
      return -1;
    }
  }
  if (cfg->smime_trust[0] != '\0') {
    s->trust = cms_trust_load(cfg->smime_trust, NULL, why, sizeof(why));
    if (s->trust == NULL) {
      snprintf(err, err_len, "smime.trust: %s", why);
      return -1;
    }
  }
  return 0;
}

size_t smime_runtime_num_signers(const struct smime_rt *s) {
  return s != NULL ? s->num_signers : 0;
}

void smime_runtime_signer(const struct smime_rt *s, size_t i, const char **who,
                          int64_t *not_after) {
  *who = s->signers[i].who;
  *not_after = s->signers[i].not_after;
}

/* ---- out: sign and encrypt ---- */

/* signer_for: the loaded signer of cfg's entry for from, or NULL. */
static const struct smime_rt_signer *signer_for(const struct config *cfg,
                                                const struct smime_rt *s,
                                                const char *from) {
  const struct config_smime_signer *cs = config_smime_signer(cfg, from);
  if (cs == NULL || s == NULL) {
    return NULL;
  }
  size_t i = (size_t)(cs - cfg->smime_signers);
  return i < s->num_signers ? &s->signers[i] : NULL;
}

/* can_encrypt_to: a key type that can receive a content key. */
static int can_encrypt_to(X509 *cert) {
  return cms_cert_can_receive(cert);
}

/* Recipients of one message: the certificates, and who has none. */
struct enc_plan {
  struct cms_recipient rcpts[CMS_MAX_RECIPIENTS];
  size_t num;
  char missing[256]; /* "a@b, c@d, ..." for the reply */
  size_t num_missing;
};

/* plan_add_missing notes addr in the reply text (as far as it fits). */
static void plan_add_missing(struct enc_plan *p, const char *addr) {
  size_t l = strlen(p->missing);
  if (l + strlen(addr) + 8 < sizeof(p->missing)) {
    snprintf(p->missing + l, sizeof(p->missing) - l, "%s<%s>",
             l > 0 ? ", " : "", addr);
  } else if (l + 5 < sizeof(p->missing) && strstr(p->missing, "...") == NULL) {
    memcpy(p->missing + l, ", ...", 6);
  }
  p->num_missing++;
}

/* plan_encryption finds every recipient's certificate, and the sender's.
 * Returns 0, or -1 when there are more recipients than one message can
 * be encrypted to. */
static int plan_encryption(struct enc_plan *p, const struct smime_rt *s,
                           const struct smtp_envelope *env,
                           const struct smime_rt_signer *sg, const char *from,
                           int to_sender, int64_t now) {
  memset(p, 0, sizeof(*p));
  if (env->num_rcpts + 1 > CMS_MAX_RECIPIENTS) {
    return -1;
  }
  for (size_t i = 0; i < env->num_rcpts; i++) {
    char addr[CMS_EMAIL_MAX];
    snprintf(addr, sizeof(addr), "%s", env->rcpts[i].addr);
    for (char *q = addr; *q; q++) {
      *q = (char)tolower((unsigned char)*q);
    }
    X509 *cert = s->store != NULL ? certstore_get0(s->store, addr, now) : NULL;
    if (cert == NULL || !can_encrypt_to(cert)) {
      plan_add_missing(p, addr);
      continue;
    }
    p->rcpts[p->num++].cert = cert;
  }
  if (!to_sender || p->num_missing > 0) {
    return 0;
  }
  /* The sender reads its own sent mail: its signing certificate when it
   * can take a key (RSA, EC), else its certificate in the store. */
  X509 *own = sg != NULL ? sk_X509_value(sg->certs, 0) : NULL;
  if (own == NULL || !can_encrypt_to(own)) {
    own = s->store != NULL && from[0] != '\0'
              ? certstore_get0(s->store, from, now)
              : NULL;
  }
  if (own != NULL && can_encrypt_to(own)) {
    p->rcpts[p->num++].cert = own;
  }
  return 0;
}

/* take_output makes out cm's message when rc is SMIME_OK (0), else
 * drops it (cm unchanged, -1). */
static int take_output(struct commit *cm, struct buf *out, int rc) {
  if (rc != SMIME_OK) {
    buf_free(out);
    return -1;
  }
  buf_move(&cm->data, out);
  return 0;
}

/* do_sign replaces cm's message with its signed form. */
static int do_sign(struct commit *cm, const struct config *cfg,
                   const struct smime_rt_signer *sg, int64_t now, char *err,
                   size_t err_len) {
  struct cms_sign_party party = {
      .key = sg->key,
      .cert = sk_X509_value(sg->certs, 0),
      .chain = sg->certs,
      .digest = (enum cms_digest)cfg->smime_digest,
  };
  struct smime_sign_opts opts = {.opaque = cfg->smime_opaque,
                                 .signing_time = now};
  struct buf out = {0};
  int rc = smime_sign(&out, &cms_local_signer, &party, 1, &opts, cm->data.data,
                      cm->data.len, err, err_len);
  return take_output(cm, &out, rc);
}

/* do_encrypt replaces cm's message with its encrypted form. */
static int do_encrypt(struct commit *cm, const struct config *cfg,
                      const struct enc_plan *p, char *err, size_t err_len) {
  struct buf out = {0};
  int rc =
      smime_encrypt(&out, p->rcpts, p->num, (enum cms_cipher)cfg->smime_cipher,
                    cm->data.data, cm->data.len, err, err_len);
  return take_output(cm, &out, rc);
}

static void log_out(struct conn *c, struct commit *cm, const char *event,
                    const char *from, const char *detail) {
  char qid[SPOOL_QUEUE_ID_LEN + 1];
  spool_queue_id_format(cm->queue_id, qid);
  struct log_rec r;
  log_begin(&r, event);
  log_str(&r, "qid", qid);
  log_str(&r, "client", c->peer_text);
  log_str(&r, "from", from);
  if (detail != NULL) {
    log_str(&r, "detail", detail);
  }
  log_end(&r);
}

/* client_kind: what the client itself made of the message (signed,
 * encrypted, or SMIME_KIND_NONE). */
static enum smime_kind client_kind(const struct commit *cm) {
  struct smime_parsed sp;
  char why[128];
  int rc = smime_parse(&sp, cm->data.data, cm->data.len, why, sizeof(why));
  enum smime_kind kind = rc == SMIME_OK ? sp.kind : SMIME_KIND_NONE;
  /* Encrypted only if it really is: a header and a few DER bytes in
   * front of plaintext must not pass for it under "required". */
  if ((kind == SMIME_KIND_ENVELOPED || kind == SMIME_KIND_AUTH_ENVELOPED) &&
      cms_check_enveloped(sp.der.data, sp.der.len, why, sizeof(why)) !=
          CMS_OK) {
    kind = SMIME_KIND_NONE;
  }
  smime_parsed_cleanup(&sp);
  return kind;
}

static void lower(char *s) {
  for (; *s; s++) {
    *s = (char)tolower((unsigned char)*s);
  }
}

/* may_sign_as: the client may have mail signed as from: an AUTH user
 * one of its addresses (auth.passwd_file), a mynetworks client mail
 * whose envelope sender is in from's domain (an application's bounce
 * address in its own domain). A personal signature is not for anyone
 * who can write a From line. */
static int may_sign_as(struct conn *c, const char *from, const char *sender) {
  struct runtime *rt = cfg_runtime(c->w->cfg);
  if (smtp_server_authenticated(c->smtp)) {
    const char *user = smtp_server_auth_user(c->smtp);
    return rt != NULL && rt->auth != NULL && user != NULL &&
           auth_db_may_send_as(rt->auth, user, from);
  }
  const char *fd = strrchr(from, '@'), *sd = strrchr(sender, '@');
  return fd != NULL && sd != NULL && strcasecmp(fd, sd) == 0;
}

/* stricter: the policy that asks more. */
static enum config_smime_policy stricter(enum config_smime_policy a,
                                         enum config_smime_policy b) {
  return a > b ? a : b;
}

int smime_stage_out(struct conn *c, struct commit *cm, struct smime_reply *r) {
  struct worker *w = c->w;
  const struct config *cfg = w->cfg;
  struct runtime *rt = cfg_runtime(cfg);
  const struct smime_rt *s = rt != NULL ? rt->smime : NULL;
  if (s == NULL || (s->num_signers == 0 && s->store == NULL)) {
    return 0;
  }
  const struct smtp_envelope *env = smtp_server_envelope(c->smtp);
  char from[CMS_EMAIL_MAX] = "", sender[CMS_EMAIL_MAX], why_from[128];
  if (smime_from_address(from, sizeof(from), cm->data.data, cm->data.len,
                         why_from, sizeof(why_from)) != SMIME_OK) {
    from[0] = '\0'; /* none, several, or unreadable: nobody to sign as */
  }
  snprintf(sender, sizeof(sender), "%s", env->sender);
  lower(from);
  lower(sender);
  const struct smime_rt_signer *sg = from[0] ? signer_for(cfg, s, from) : NULL;
  if (sg != NULL && !may_sign_as(c, from, sender)) {
    METRIC_ADD(w->m.smime_sign_refused, 1);
    log_out(c, cm, "smime_not_signed", from, "sender may not sign as From");
    sg = NULL;
  }
  /* The policy of From and of the envelope sender, whichever asks more:
   * editing From cannot opt out of encryption. */
  enum config_smime_policy pol =
      from[0] ? config_smime_policy(cfg, from) : cfg->smime_encrypt;
  if (sender[0] != '\0') {
    pol = stricter(pol, config_smime_policy(cfg, sender));
  }
  /* The client's own S/MIME wins: encrypted mail is left as it is;
   * signed mail keeps its signature (not signed again) but is still
   * encrypted as the policy asks, so "required" holds for it too. */
  enum smime_kind kind = sg != NULL || pol != CONFIG_SMIME_NONE
                             ? client_kind(cm)
                             : SMIME_KIND_NONE;
  if (kind != SMIME_KIND_NONE) {
    sg = NULL;
  }
  if ((sg == NULL && pol == CONFIG_SMIME_NONE) ||
      kind == SMIME_KIND_ENVELOPED || kind == SMIME_KIND_AUTH_ENVELOPED) {
    METRIC_ADD(w->m.smime_untouched, 1);
    return 0;
  }
  int64_t now = w->now_ms / 1000;
  static __thread struct enc_plan plan; /* 4 KiB+: not on the stack */
  int encrypt = 0;
  if (pol != CONFIG_SMIME_NONE) {
    if (plan_encryption(&plan, s, env, sg, from, cfg->smime_encrypt_to_sender,
                        now) != 0) {
      plan.num_missing = 1;
      snprintf(plan.missing, sizeof(plan.missing), "more than %d recipients",
               CMS_MAX_RECIPIENTS - 1);
    }
    encrypt = plan.num_missing == 0 && plan.num > 0;
    if (!encrypt && pol == CONFIG_SMIME_REQUIRED) {
      METRIC_ADD(w->m.smime_refused, 1);
      log_out(c, cm, "smime_refused", from, plan.missing);
      r->code = 550;
      snprintf(r->enhanced, sizeof(r->enhanced), "5.7.1");
      snprintf(r->text, sizeof(r->text),
               "Encryption required: no S/MIME certificate for %s",
               plan.missing);
      return -1;
    }
    if (!encrypt) {
      METRIC_ADD(w->m.smime_not_encrypted, 1);
      log_out(c, cm, "smime_not_encrypted", from, plan.missing);
    }
  }
  char why[256] = "";
  if (sg != NULL && do_sign(cm, cfg, sg, now, why, sizeof(why)) != 0) {
    goto fail;
  }
  if (sg != NULL) {
    METRIC_ADD(w->m.smime_signed, 1);
  }
  if (encrypt && do_encrypt(cm, cfg, &plan, why, sizeof(why)) != 0) {
    goto fail;
  }
  if (encrypt) {
    METRIC_ADD(w->m.smime_encrypted, 1);
    METRIC_ADD(w->m.smime_encrypted_rcpts, plan.num);
  }
  return 0;
fail:
  METRIC_ADD(w->m.smime_errors, 1);
  log_out(c, cm, "smime_failed", from, why);
  r->code = 451;
  snprintf(r->enhanced, sizeof(r->enhanced), "4.7.0");
  snprintf(r->text, sizeof(r->text), "S/MIME processing failed; try again");
  return -1;
}

/* ---- in: verify ---- */

/* ar_result maps a verdict to RFC 7281's smime results. */
static const char *ar_result(enum cms_verdict v) {
  switch (v) {
  case CMS_V_PASS:
    return "pass";
  case CMS_V_BAD_SIGNATURE:
  case CMS_V_BAD_DIGEST:
    return "fail";
  case CMS_V_UNTRUSTED:
  case CMS_V_EXPIRED:
  case CMS_V_KEY_USAGE:
  case CMS_V_FROM_MISMATCH:
    return "policy";
  default:
    return "neutral";
  }
}

/* smime_metric_index: the verdict's slot in w->m.smime_verify. */
static size_t smime_metric_index(enum cms_verdict v) {
  return (size_t)v < SMIME_VERDICTS - 1 ? (size_t)v + 1 : 0;
}

/* resinfo_one appends one signer's "; smime=RESULT (...)
 * body.smime-identifier=ADDR". */
static int resinfo_one(struct buf *out, const struct cms_signer_result *sr) {
  int rc = buf_printf(out, ";\r\n\tsmime=%s", ar_result(sr->verdict));
  if (sr->verdict != CMS_V_PASS) {
    rc |= authres_reason(out, sr->reason[0] ? sr->reason
                                            : cms_verdict_str(sr->verdict));
  }
  rc |= authres_comment(out, sr->sig_alg);
  if (sr->email[0] != '\0') {
    rc |= buf_append_str(out, " body.smime-identifier=");
    rc |= authres_value(out, sr->email);
  }
  return rc;
}

/* resinfo appends "; smime=RESULT (...) body.smime-identifier=ADDR" for
 * each signer to out, as many as fit in max bytes (the first ones). */
static int resinfo(struct buf *out, const struct cms_verified *v, size_t max) {
  int rc = 0;
  for (size_t i = 0; i < v->num_signers; i++) {
    size_t before = out->len;
    rc |= resinfo_one(out, &v->signers[i]);
    if (out->len > max) {
      out->len = before;
      break;
    }
  }
  return rc;
}

/* looks_smime: the header names an S/MIME content type somewhere. */
static int looks_smime(const uint8_t *m, size_t len) {
  static const char *const types[] = {"multipart/signed", "pkcs7-mime",
                                      "pkcs7-signature"};
  const uint8_t *end = memmem(m, len, "\r\n\r\n", 4);
  size_t hlen = end != NULL ? (size_t)(end - m) : len;
  for (size_t i = 0; i < hlen; i++) {
    for (size_t k = 0; k < sizeof(types) / sizeof(types[0]); k++) {
      size_t tl = strlen(types[k]);
      if (hlen - i >= tl &&
          strncasecmp((const char *)m + i, types[k], tl) == 0) {
        return 1;
      }
    }
  }
  return 0;
}

/* smime_permerror records a message whose S/MIME does not parse. */
static void smime_permerror(struct worker *w, struct commit *cm,
                            const char *why) {
  METRIC_ADD(w->m.smime_verify[0], 1);
  struct buf ar = {0};
  int rc = buf_append_str(&ar, ";\r\n\tsmime=permerror");
  rc |= authres_reason(&ar, why);
  size_t n = rc == 0 && ar.len < sizeof(cm->smime_ar) ? ar.len : 0;
  memcpy(cm->smime_ar, ar.data, n);
  cm->smime_ar[n] = '\0';
  buf_free(&ar);
}

void smime_stage_in(struct conn *c, struct commit *cm) {
  struct worker *w = c->w;
  const struct config *cfg = w->cfg;
  if (!cfg->smime_verify) {
    return;
  }
  struct smime_parsed sp;
  char why[256] = "";
  int rc = smime_parse(&sp, cm->data.data, cm->data.len, why, sizeof(why));
  int kind = rc == SMIME_OK ? (int)sp.kind : SMIME_KIND_NONE;
  smime_parsed_cleanup(&sp);
  if (rc != SMIME_OK) {
    /* S/MIME a client could read differently than we do; a plain
     * message our parser refuses (an over-long field) is not ours to
     * judge. */
    if (looks_smime(cm->data.data, cm->data.len)) {
      smime_permerror(w, cm, why);
    }
    return;
  }
  if (kind != SMIME_KIND_MULTIPART_SIGNED && kind != SMIME_KIND_SIGNED_DATA) {
    return;
  }
  struct runtime *rt = cfg_runtime(cfg);
  /* No From, several, or one that does not parse: "" matches no
   * certificate (from-mismatch), never "any". */
  char from[CMS_EMAIL_MAX] = "";
  if (smime_from_address(from, sizeof(from), cm->data.data, cm->data.len, why,
                         sizeof(why)) != SMIME_OK) {
    from[0] = '\0';
  }
  struct cms_verify_opts opts = {
      .trust = rt != NULL && rt->smime != NULL ? rt->smime->trust : NULL,
      .now = w->now_ms / 1000,
      .from = from,
  };
  struct cms_verified v;
  struct buf entity = {0};
  rc = smime_verify_message(&v, &entity, &opts, cm->data.data, cm->data.len,
                            why, sizeof(why));
  buf_free(&entity);
  if (rc != SMIME_OK) {
    cms_verified_cleanup(&v);
    smime_permerror(w, cm, why);
    return;
  }
  for (size_t i = 0; i < v.num_signers; i++) {
    METRIC_ADD(w->m.smime_verify[smime_metric_index(v.signers[i].verdict)], 1);
  }
  struct buf ar = {0};
  resinfo(&ar, &v, sizeof(cm->smime_ar) - 1);
  cms_verified_cleanup(&v);
  /* resinfo kept to what fits: a message with absurdly many signers
   * loses the tail of the list, never the first verdicts. */
  size_t n = ar.len < sizeof(cm->smime_ar) ? ar.len : 0;
  if (n > 0) {
    memcpy(cm->smime_ar, ar.data, n);
  }
  cm->smime_ar[n] = '\0';
  buf_free(&ar);
}

int smime_stage_authres(struct conn *c, struct commit *cm) {
  if (cm->authres_written) {
    return 0; /* the DKIM stage finished at once and wrote it */
  }
  const char *host = c->w->cfg->hostname;
  /* Fields claiming our name go even when we add none (RFC 8601 §5). */
  if (authres_strip_forged(cm, host) < 0) {
    return -1;
  }
  if (cm->smime_ar[0] == '\0') {
    return 0;
  }
  struct buf hdr = {0};
  int rc =
      buf_printf(&hdr, "Authentication-Results: %s%s\r\n", host, cm->smime_ar);
  if (rc == 0) {
    rc = commit_prepend(cm, &hdr);
  }
  buf_free(&hdr);
  return rc;
}
