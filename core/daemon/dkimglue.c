/* core/daemon/dkimglue.c — the authentication stage between the end of
 * DATA and the spool commit: DKIM signing out, DKIM/SPF/DMARC checks in
 * (crypto/dkim.h, policy/spf.h via spfglue.c, policy/dmarc.h do the
 * protocols themselves).
 *
 * Signing: mail from a client that may relay (mynetworks or AUTH) whose
 * From domain, or a parent of it, has keys in dkim.keys (else
 * dkim.default_domain's) gets one signature per algorithm: the newest key
 * of each whose not_before has passed. The messages that finish DATA in
 * one loop turn wait in w->dkim_batch; at the end of the turn the batch
 * is hashed (every body once per canonicalisation), then signed, then
 * staged for the group commit, so a message costs its private-key
 * operations and little else. A signing failure answers 451: mail that
 * should be signed never leaves unsigned.
 *
 * Checking: mail from other clients (on the inbound_checks listeners)
 * has its DKIM-Signature fields (up to dkim.verify_max_signatures)
 * checked against keys fetched through the worker's resolver (cached,
 * coalesced), waits for the transaction's SPF check (started at MAIL
 * FROM), then gets its DMARC policy (From domain, else organisational
 * domain) evaluated; the session waits (its commit is pending) meanwhile.
 * The verdicts go into one Authentication-Results field (RFC 8601) on top
 * of the message; any such field already in it that claims our host name
 * as its authserv-id is removed (§5: a verdict forged in our name).
 * DMARC reject answers 550 5.7.1 and stores nothing; quarantine stores
 * the message held; messages whose policy asks for reports are counted
 * for them (dmarcrpt.c).
 *
 * Either way the message then goes on to session_stage_commit. A client
 * that left meanwhile gets nothing stored: it never saw a 250. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "core/daemon/daemon.h"
#include "core/log.h"

const struct metric_hist_spec dkim_sign_seconds_spec = {
    .num_bounds = 10,
    .bounds = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1},
};

/* ---- keys: the runtime part ---- */

struct dkim_rt_key {
  char domain[256];
  char selector[256];
  int64_t not_before;
  int64_t since; /* signing since: not_before, else the file's mtime */
  struct dkim_key *key;
  enum dkim_alg alg;
};

struct dkim_rt {
  size_t num_keys;
  struct dkim_rt_key *keys;
  char default_domain[256];
  char *sign_names[CONFIG_MAX_DKIM_HEADERS];
  char *over_names[CONFIG_MAX_DKIM_HEADERS];
  struct dkim_sign_headers hdrs; /* points at the names, or the defaults */
};

void dkim_runtime_free(struct dkim_rt *d) {
  if (d == NULL) {
    return;
  }
  for (size_t i = 0; i < d->num_keys; i++) {
    dkim_key_free(d->keys[i].key);
  }
  free(d->keys);
  for (size_t i = 0; i < CONFIG_MAX_DKIM_HEADERS; i++) {
    free(d->sign_names[i]);
    free(d->over_names[i]);
  }
  free(d);
}

/* copy_names copies a configured list of header names into rt. */
static int copy_names(char *const *src, size_t n, char **dst) {
  for (size_t i = 0; i < n; i++) {
    dst[i] = strdup(src[i]);
    if (dst[i] == NULL) {
      return -1;
    }
  }
  return 0;
}

int dkim_runtime_load(struct runtime *rt, const struct config *cfg, char *err,
                      size_t err_len) {
  if (cfg->dmarc_enabled) {
    char why[256] = "";
    rt->psl = dmarc_psl_load(cfg->dmarc_psl_file, why, sizeof(why));
    if (rt->psl == NULL) {
      snprintf(err, err_len, "dmarc.psl_file: %s: %s", cfg->dmarc_psl_file,
               why);
      return -1;
    }
  }
  if (cfg->num_dkim_keys == 0) {
    return 0;
  }
  struct dkim_rt *d = calloc(1, sizeof(*d));
  if (d == NULL ||
      (d->keys = calloc(cfg->num_dkim_keys, sizeof(*d->keys))) == NULL) {
    free(d);
    snprintf(err, err_len, "out of memory");
    return -1;
  }
  for (size_t i = 0; i < cfg->num_dkim_keys; i++) {
    const struct config_dkim_key *ck = &cfg->dkim_keys[i];
    struct dkim_rt_key *k = &d->keys[i];
    char why[256] = "";
    k->key = dkim_key_load(ck->key_file, why, sizeof(why));
    if (k->key == NULL) {
      snprintf(err, err_len, "dkim.keys: %s selector %s: %s: %s", ck->domain,
               ck->selector, ck->key_file, why);
      dkim_runtime_free(d);
      return -1;
    }
    d->num_keys++;
    snprintf(k->domain, sizeof(k->domain), "%s", ck->domain);
    snprintf(k->selector, sizeof(k->selector), "%s", ck->selector);
    k->not_before = ck->not_before;
    struct stat st;
    k->since = ck->not_before > 0             ? ck->not_before
               : stat(ck->key_file, &st) == 0 ? (int64_t)st.st_mtime
                                              : 0;
    k->alg = dkim_key_alg(k->key);
    if (k->alg == DKIM_ALG_RSA_SHA256 && dkim_key_bits(k->key) < 2048) {
      log_msg("warning",
              "dkim: %s selector %s: a %u-bit RSA key; 2048 bits or more "
              "is advised (RFC 8301 allows 1024 for now)",
              k->domain, k->selector, dkim_key_bits(k->key));
    }
  }
  snprintf(d->default_domain, sizeof(d->default_domain), "%s",
           cfg->dkim_default_domain);
  d->hdrs = dkim_sign_default_headers;
  if (cfg->num_dkim_headers > 0) {
    /* From is always signed (RFC 6376 §5.4): first, if the list lacks it. */
    size_t n = 0;
    int has_from = 0;
    for (size_t i = 0; i < cfg->num_dkim_headers; i++) {
      has_from |= strcmp(cfg->dkim_headers[i], "from") == 0;
    }
    if (!has_from && cfg->num_dkim_headers < CONFIG_MAX_DKIM_HEADERS) {
      if ((d->sign_names[n++] = strdup("from")) == NULL) {
        goto oom;
      }
    }
    if (copy_names(cfg->dkim_headers, cfg->num_dkim_headers,
                   d->sign_names + n) != 0) {
      goto oom;
    }
    d->hdrs.sign = (const char *const *)d->sign_names;
    d->hdrs.num_sign = n + cfg->num_dkim_headers;
  }
  if (cfg->dkim_oversign_set) {
    if (copy_names(cfg->dkim_oversign, cfg->num_dkim_oversign, d->over_names) !=
        0) {
      goto oom;
    }
    d->hdrs.oversign = (const char *const *)d->over_names;
    d->hdrs.num_oversign = cfg->num_dkim_oversign;
  }
  rt->dkim = d;
  return 0;
oom:
  dkim_runtime_free(d);
  snprintf(err, err_len, "out of memory");
  return -1;
}

size_t dkim_runtime_num_keys(const struct dkim_rt *d) {
  return d != NULL ? d->num_keys : 0;
}

void dkim_runtime_key(const struct dkim_rt *d, size_t i, const char **domain,
                      const char **selector, const char **alg, int64_t *since) {
  const struct dkim_rt_key *k = &d->keys[i];
  *domain = k->domain;
  *selector = k->selector;
  *alg = dkim_alg_name(k->alg);
  *since = k->since;
}

/* has_keys: the configured domain equal to `domain`, or NULL. */
static const char *keys_domain(const struct dkim_rt *d, const char *domain) {
  for (size_t i = 0; i < d->num_keys; i++) {
    if (strcmp(d->keys[i].domain, domain) == 0) {
      return d->keys[i].domain;
    }
  }
  return NULL;
}

/* sign_domain: the From domain or its nearest parent with keys (so d=
 * aligns with From for DMARC), else the default domain, else NULL. */
static const char *sign_domain(const struct dkim_rt *d, const char *from) {
  for (const char *p = from; p != NULL && *p != '\0';) {
    const char *hit = keys_domain(d, p);
    if (hit != NULL) {
      return hit;
    }
    p = strchr(p, '.');
    p = p ? p + 1 : NULL;
  }
  return d->default_domain[0] ? keys_domain(d, d->default_domain) : NULL;
}

/* pick_keys fills specs with one key per algorithm of `domain`: the one
 * with the latest not_before that has passed (a later entry wins a tie).
 * RSA first, as receivers that know only RSA read the first one. */
static size_t pick_keys(const struct dkim_rt *d, const char *domain,
                        int64_t now, struct dkim_sign_spec *specs) {
  const struct dkim_rt_key *best[2] = {NULL, NULL};
  for (size_t i = 0; i < d->num_keys; i++) {
    const struct dkim_rt_key *k = &d->keys[i];
    int a = k->alg == DKIM_ALG_ED25519_SHA256 ? 1 : 0;
    if (strcmp(k->domain, domain) != 0 || k->not_before > now) {
      continue;
    }
    if (best[a] == NULL || k->not_before >= best[a]->not_before) {
      best[a] = k;
    }
  }
  size_t n = 0;
  for (int a = 0; a < 2; a++) {
    if (best[a] != NULL) {
      specs[n++] = (struct dkim_sign_spec){.domain = best[a]->domain,
                                           .selector = best[a]->selector,
                                           .key = best[a]->key};
    }
  }
  return n;
}

/* ---- pending messages ---- */

struct dkim_lookup {
  struct dkim_pending *p;
  size_t i;
};

struct dkim_pending {
  struct dkim_pending *next, *prev;
  struct worker *w;
  struct conn *c;
  struct commit *cm;
  /* signing */
  struct runtime *rt; /* holds the keys */
  size_t num_specs;
  struct dkim_sign_spec specs[DKIM_MAX_SIGN];
  struct dkim_sign_job job;
  int rc;
  char err[160];
  /* verifying */
  struct dkim_verify *v;
  size_t waiting;
  uint64_t handles[DKIM_MAX_VERIFY];
  struct dkim_lookup lk[DKIM_MAX_VERIFY];
  int sync; /* inside verify_start: no reply may be sent from here */
  /* SPF: the transaction's check, taken from the connection */
  struct spf_run *spf;
  /* DMARC */
  int dmarc_on;
  struct runtime *psl_rt; /* holds the PSL */
  char from[256];
  char from_why[64];
  char org[256];
  int dmarc_phase; /* 1: _dmarc.<From domain> asked, 2: _dmarc.<org> */
  uint64_t dmarc_handle;
  struct dmarc_record rec;
  struct dmarc_lookup lookup;
  struct dmarc_outcome outcome;
  int have_outcome;
};

/* commit_prepend puts hdr on top of cm's message. */
int commit_prepend(struct commit *cm, const struct buf *hdr) {
  struct buf nb = {0};
  if (buf_reserve(&nb, hdr->len + cm->data.len) != 0 ||
      buf_append(&nb, hdr->data, hdr->len) != 0 ||
      buf_append(&nb, cm->data.data, cm->data.len) != 0) {
    buf_free(&nb);
    return -1;
  }
  buf_free(&cm->data);
  cm->data = nb;
  return 0;
}

/* pass_on stages cm, or answers 451; a client that left gets nothing
 * stored (it saw no 250 and will send again). */
static void pass_on(struct conn *c, struct commit *cm, int ok) {
  if (c->shut) {
    c->commit_pending = 0;
    buf_free(&cm->data);
    free(cm);
    conn_maybe_free(c);
    return;
  }
  if (ok && session_stage_commit(c, cm) == 0) {
    return;
  }
  session_stage_failed(c, cm);
}

/* ---- verification ---- */

/* authres_value appends s if it is a safe RFC 8601 value (a domain, a
 * selector, an address, base64): else "?" so no peer text can end the
 * field or open a comment. */
int authres_value(struct buf *out, const char *s) {
  size_t n = strlen(s);
  int ok = n > 0 && n < 256;
  for (size_t i = 0; ok && i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    ok = isalnum(ch) || strchr(".-_@+/=", ch) != NULL;
  }
  return buf_append_str(out, ok ? s : "?");
}

/* ar_text copies s with only plain printable characters, `bad` ones
 * (those that would end the enclosing quoted string or comment) made
 * '?'. */
static void ar_text(const char *s, const char *bad, char *out, size_t out_len) {
  size_t n = 0;
  for (; s[n] != '\0' && n < out_len - 1; n++) {
    unsigned char ch = (unsigned char)s[n];
    out[n] =
        (ch >= 0x20 && ch < 0x7f && strchr(bad, ch) == NULL) ? (char)ch : '?';
  }
  out[n] = '\0';
}

/* authres_reason appends reason="..." (a quoted string). */
int authres_reason(struct buf *out, const char *s) {
  char clean[128];
  ar_text(s, "\"\\", clean, sizeof(clean));
  return buf_printf(out, " reason=\"%s\"", clean);
}

/* authres_comment appends " (text)", so peer-influenced text cannot end the
 * comment. */
int authres_comment(struct buf *out, const char *s) {
  char clean[160];
  ar_text(s, "()\\", clean, sizeof(clean));
  return clean[0] ? buf_printf(out, " (%s)", clean) : 0;
}

/* authres builds the Authentication-Results field (RFC 8601) of the
 * checks: spf, one dkim per signature, dmarc, then smimeglue.c's smime. */
static int authres(struct buf *out, const char *host,
                   const struct dkim_pending *p) {
  const struct dkim_verify *v = p->v;
  int rc = buf_printf(out, "Authentication-Results: %s", host);
  if (p->spf != NULL && p->spf->done) {
    rc |= buf_printf(out, ";\r\n\tspf=%s", spf_result_name(p->spf->result));
    rc |= authres_comment(out, spf_detail(p->spf->q));
    rc |= buf_append_str(out, " smtp.mailfrom=");
    rc |= authres_value(out, spf_domain(p->spf->q));
    if (p->spf->qh != NULL && spf_domain(p->spf->qh)[0] != '\0') {
      rc |= buf_printf(out, ";\r\n\tspf=%s",
                       spf_result_name(p->spf->helo_result));
      rc |= buf_append_str(out, " smtp.helo=");
      rc |= authres_value(out, spf_domain(p->spf->qh));
    }
  }
  size_t n = dkim_verify_count(v);
  if (n == 0) {
    rc |= buf_append_str(out, ";\r\n\tdkim=none");
  }
  for (size_t i = 0; i < n; i++) {
    const struct dkim_verdict *vd = dkim_verify_verdict(v, i);
    if (vd == NULL) {
      continue;
    }
    rc |= buf_printf(out, ";\r\n\tdkim=%s", dkim_result_name(vd->result));
    if (vd->result != DKIM_PASS && vd->reason[0] != '\0') {
      rc |= authres_reason(out, vd->reason);
    }
    if (vd->key_bits > 0) {
      rc |= buf_printf(out, " (%u-bit key%s)", vd->key_bits,
                       vd->testing ? ", testing" : "");
    }
    if (vd->body_limit >= 0 && vd->unsigned_body > 0) {
      rc |= buf_printf(out, " (l= leaves %llu body bytes unsigned)",
                       (unsigned long long)vd->unsigned_body);
    }
    if (vd->domain[0] == '\0') {
      continue;
    }
    rc |= buf_append_str(out, "\r\n\theader.d=");
    rc |= authres_value(out, vd->domain);
    rc |= buf_append_str(out, " header.i=");
    rc |= authres_value(out, vd->identity);
    rc |= buf_append_str(out, " header.s=");
    rc |= authres_value(out, vd->selector);
    rc |= buf_printf(out, " header.a=%s", dkim_alg_name(vd->alg));
    if (vd->b_prefix[0] != '\0') {
      rc |= buf_append_str(out, " header.b=");
      rc |= authres_value(out, vd->b_prefix);
    }
  }
  if (p->have_outcome) {
    const struct dmarc_outcome *o = &p->outcome;
    rc |= buf_printf(out, ";\r\n\tdmarc=%s", dmarc_result_name(o->result));
    if (o->result == DMARC_RESULT_PASS || o->result == DMARC_RESULT_FAIL) {
      rc |= buf_printf(out, " (p=%s dis=%s)", dmarc_policy_name(o->policy),
                       dmarc_policy_name(o->disposition));
    } else if (p->from[0] == '\0') {
      rc |= authres_comment(out, p->from_why);
    }
    if (p->from[0] != '\0') {
      rc |= buf_append_str(out, " header.from=");
      rc |= authres_value(out, p->from);
    }
  }
  rc |= buf_append_str(out, p->cm->smime_ar); /* smimeglue.c's verdicts */
  rc |= buf_append_str(out, "\r\n");
  return rc;
}

/* field_end: where the header field starting at i ends (after its CRLF
 * and any continuation lines). */
static size_t field_end(const uint8_t *m, size_t len, size_t i) {
  const uint8_t *nl = memchr(m + i, '\n', len - i);
  size_t end = nl ? (size_t)(nl - m) + 1 : len;
  while (end < len && (m[end] == ' ' || m[end] == '\t')) {
    nl = memchr(m + end, '\n', len - end);
    end = nl ? (size_t)(nl - m) + 1 : len;
  }
  return end;
}

/* claims_us: 1 if the field m[i, end) is an Authentication-Results whose
 * authserv-id is host (RFC 8601 §5: a verdict forged in our name). */
static int claims_us(const uint8_t *m, size_t i, size_t end, const char *host) {
  static const char name[] = "authentication-results";
  size_t nl = sizeof(name) - 1, hl = strlen(host);
  if (end - i < nl + 1 || strncasecmp((const char *)m + i, name, nl) != 0) {
    return 0;
  }
  size_t k = i + nl;
  while (k < end && (m[k] == ' ' || m[k] == '\t')) {
    k++;
  }
  if (k >= end || m[k] != ':') {
    return 0;
  }
  k++;
  while (k < end &&
         (m[k] == ' ' || m[k] == '\t' || m[k] == '\r' || m[k] == '\n')) {
    k++;
  }
  if (end - k < hl || strncasecmp((const char *)m + k, host, hl) != 0) {
    return 0;
  }
  k += hl;
  return k == end || m[k] == ';' || m[k] == ' ' || m[k] == '\t' ||
         m[k] == '\r' || m[k] == '\n' || m[k] == '(';
}

/* authres_strip_forged removes from cm's message every Authentication-Results
 * field that claims our host name, so only our own verdict speaks for
 * us. Returns the number removed, or -1 (out of memory). */
int authres_strip_forged(struct commit *cm, const char *host) {
  const uint8_t *m = cm->data.data;
  size_t len = cm->data.len, i = 0, kept = 0;
  int removed = 0;
  struct buf nb = {0};
  while (i < len && m[i] != '\r' && m[i] != '\n') {
    size_t end = field_end(m, len, i);
    if (claims_us(m, i, end, host)) {
      if (buf_append(&nb, m + kept, i - kept) != 0) {
        buf_free(&nb);
        return -1;
      }
      kept = end;
      removed++;
    }
    i = end;
  }
  if (removed == 0) {
    return 0;
  }
  if (buf_append(&nb, m + kept, len - kept) != 0) {
    buf_free(&nb);
    return -1;
  }
  buf_free(&cm->data);
  cm->data = nb;
  return removed;
}

/* verify_finish writes the verdicts on top of the message and counts
 * them. Returns 0, or -1 (out of memory). */
static int verify_finish(struct dkim_pending *p) {
  struct worker *w = p->w;
  struct buf hdr = {0};
  size_t n = dkim_verify_count(p->v);
  char summary[256] = "";
  size_t sl = 0;
  if (n == 0) {
    METRIC_ADD(w->m.dkim_verify[0], 1);
  }
  for (size_t i = 0; i < n; i++) {
    const struct dkim_verdict *vd = dkim_verify_verdict(p->v, i);
    if (vd == NULL) {
      continue;
    }
    METRIC_ADD(w->m.dkim_verify[1 + (int)vd->result], 1);
    if (sl < sizeof(summary)) {
      int k = snprintf(summary + sl, sizeof(summary) - sl, "%s%s:%.60s/%.40s",
                       sl ? " " : "", dkim_result_name(vd->result), vd->domain,
                       vd->selector);
      sl += k > 0 ? (size_t)k : 0;
    }
  }
  if (n > 0) {
    char qid[SPOOL_QUEUE_ID_LEN + 1];
    spool_queue_id_format(p->cm->queue_id, qid);
    struct log_rec r;
    log_begin(&r, "dkim_verify");
    log_str(&r, "qid", qid);
    log_str(&r, "client", p->c->peer_text);
    log_str(&r, "results", summary);
    log_end(&r);
  }
  int rc = authres(&hdr, w->cfg->hostname, p);
  /* The verifier is done with the message: it may change now. */
  int removed = rc == 0 ? authres_strip_forged(p->cm, w->cfg->hostname) : 0;
  if (removed > 0) {
    char qid[SPOOL_QUEUE_ID_LEN + 1];
    spool_queue_id_format(p->cm->queue_id, qid);
    struct log_rec r;
    log_begin(&r, "authres_removed");
    log_str(&r, "qid", qid);
    log_str(&r, "client", p->c->peer_text);
    log_u64(&r, "fields", (uint64_t)removed);
    log_end(&r);
  }
  if (rc == 0 && removed >= 0) {
    rc = commit_prepend(p->cm, &hdr);
    p->cm->authres_written = rc == 0;
  } else {
    rc = -1;
  }
  buf_free(&hdr);
  return rc;
}

static void verify_unlink(struct dkim_pending *p) {
  struct worker *w = p->w;
  if (p->prev != NULL) {
    p->prev->next = p->next;
  } else if (w->dkim_verifying == p) {
    w->dkim_verifying = p->next;
  }
  if (p->next != NULL) {
    p->next->prev = p->prev;
  }
  p->next = p->prev = NULL;
}

static void verify_free(struct dkim_pending *p) {
  if (p->dmarc_handle != 0 && p->w->dns != NULL) {
    dns_cancel(p->w->dns, p->dmarc_handle);
  }
  spf_run_free(p->spf);
  runtime_put(p->psl_rt);
  dkim_verify_free(p->v);
  free(p);
}

static void checks_done(struct dkim_pending *p);

/* on_key: a key record came back (or did not). */
static void on_key(void *arg, const struct dns_answer *a) {
  struct dkim_lookup *lk = arg;
  struct dkim_pending *p = lk->p;
  p->handles[lk->i] = 0;
  const char *txt[8];
  size_t txt_len[8];
  size_t nt = 0;
  enum dkim_key_status st = DKIM_KEY_TEMPFAIL;
  if (a->status == DNS_OK) {
    st = DKIM_KEY_FOUND;
    for (size_t k = 0; k < a->num_rrs && nt < 8; k++) {
      if (a->rrs[k].type == DNS_TYPE_TXT) {
        txt[nt] = (const char *)a->rrs[k].rd.txt.data;
        txt_len[nt++] = a->rrs[k].rd.txt.data_len;
      }
    }
    if (nt == 0) {
      st = DKIM_KEY_NOTFOUND;
    }
  } else if (a->status == DNS_NOT_FOUND || a->status == DNS_PERMFAIL) {
    st = DKIM_KEY_NOTFOUND;
  }
  dkim_verify_key(p->v, lk->i, st, txt, txt_len, nt);
  if (--p->waiting == 0) {
    checks_done(p);
  }
}

/* on_spf: the transaction's SPF check has its result. */
static void on_spf(void *arg) {
  struct dkim_pending *p = arg;
  if (--p->waiting == 0) {
    checks_done(p);
  }
}

/* ---- DMARC ---- */

/* dmarc_auth_fill gives DMARC the SPF and DKIM results. */
static void dmarc_auth_fill(const struct dkim_pending *p,
                            struct dmarc_auth *auth) {
  memset(auth, 0, sizeof(*auth));
  auth->spf_domain = "";
  auth->spf_result = "none";
  if (p->spf != NULL && p->spf->done) {
    auth->spf_domain = spf_domain(p->spf->q);
    auth->spf_pass = p->spf->result == SPF_PASS;
    auth->spf_result = spf_result_name(p->spf->result);
  }
  size_t n = p->v != NULL ? dkim_verify_count(p->v) : 0;
  for (size_t i = 0; i < n && auth->num_dkim < DMARC_MAX_DKIM; i++) {
    const struct dkim_verdict *vd = dkim_verify_verdict(p->v, i);
    if (vd == NULL || vd->domain[0] == '\0') {
      continue;
    }
    size_t k = auth->num_dkim++;
    auth->dkim[k].domain = vd->domain;
    auth->dkim[k].selector = vd->selector;
    auth->dkim[k].pass = vd->result == DKIM_PASS;
    auth->dkim[k].result = dkim_result_name(vd->result);
  }
}

/* dmarc_override: a local policy for the From domain, or -1. */
static int dmarc_override(const struct config *cfg, const char *domain) {
  size_t dl = strlen(domain);
  for (size_t i = 0; i < cfg->num_dmarc_overrides; i++) {
    const char *e = cfg->dmarc_overrides[i];
    if (strncmp(e, domain, dl) == 0 && e[dl] == ' ') {
      const char *pol = e + dl + 1;
      return strcmp(pol, "reject") == 0       ? DMARC_P_REJECT
             : strcmp(pol, "quarantine") == 0 ? DMARC_P_QUARANTINE
                                              : DMARC_P_NONE;
    }
  }
  return -1;
}

static void dmarc_conclude(struct dkim_pending *p) {
  struct dmarc_auth auth;
  dmarc_auth_fill(p, &auth);
  const struct dmarc_psl *psl = p->psl_rt->psl;
  /* pct sampling: the queue id is random enough and stable. */
  unsigned sample = (unsigned)(p->cm->queue_id % 100);
  dmarc_evaluate(psl, p->from[0] ? p->from : NULL, &auth, &p->lookup, sample,
                 &p->outcome);
  if (p->from[0] != '\0' && p->outcome.result == DMARC_RESULT_FAIL) {
    int ov = dmarc_override(p->w->cfg, p->from);
    if (ov >= 0) {
      p->outcome.disposition = (enum dmarc_policy)ov;
      snprintf(p->outcome.reason, sizeof(p->outcome.reason),
               "local override: %s", dmarc_policy_name((enum dmarc_policy)ov));
    }
  }
  p->have_outcome = 1;
  METRIC_ADD(p->w->m.dmarc_results[p->outcome.result], 1);
}

static void dmarc_ask(struct dkim_pending *p, const char *domain);

/* on_dmarc: the _dmarc TXT answer of phase 1 (From domain) or 2 (org). */
static void on_dmarc(void *arg, const struct dns_answer *a) {
  struct dkim_pending *p = arg;
  p->dmarc_handle = 0;
  if (a->status == DNS_TEMPFAIL) {
    p->lookup.status = DMARC_LOOKUP_TEMPFAIL;
  } else {
    size_t count = 0;
    const struct dns_rr *rr = NULL;
    for (size_t k = 0; a->status == DNS_OK && k < a->num_rrs; k++) {
      if (a->rrs[k].type == DNS_TYPE_TXT &&
          dmarc_is_record(a->rrs[k].rd.txt.data, a->rrs[k].rd.txt.data_len)) {
        count++;
        rr = &a->rrs[k];
      }
    }
    char why[128];
    if (count == 1 &&
        dmarc_record_parse((const char *)rr->rd.txt.data, rr->rd.txt.data_len,
                           &p->rec, why, sizeof(why)) == 0) {
      p->lookup.status = DMARC_LOOKUP_FOUND;
      p->lookup.rec = &p->rec;
      p->lookup.at_org = p->dmarc_phase == 2;
    } else if (p->dmarc_phase == 1 && strcmp(p->org, p->from) != 0) {
      dmarc_ask(p, p->org); /* §6.6.3: then the organisational domain */
      return;
    } else {
      p->lookup.status = DMARC_LOOKUP_NONE;
    }
  }
  dmarc_conclude(p);
  checks_done(p);
}

static void dmarc_ask(struct dkim_pending *p, const char *domain) {
  struct worker *w = p->w;
  char name[300];
  snprintf(name, sizeof(name), "_dmarc.%s", domain);
  p->dmarc_phase++;
  if (w->dns != NULL && !w->stopping) {
    p->dmarc_handle = dns_query(w->dns, name, DNS_TYPE_TXT, on_dmarc, p);
    if (p->dmarc_handle != 0) {
      return;
    }
  }
  struct dns_answer a = {.status = DNS_TEMPFAIL, .type = DNS_TYPE_TXT};
  on_dmarc(p, &a);
}

/* dmarc_start finds the From domain and asks for its policy. */
static void dmarc_start(struct dkim_pending *p) {
  const struct dmarc_psl *psl = p->psl_rt->psl;
  if (dmarc_from_domain(p->cm->data.data, p->cm->data.len, p->from,
                        sizeof(p->from), p->from_why,
                        sizeof(p->from_why)) != 0 ||
      dmarc_org_domain(psl, p->from, p->org, sizeof(p->org)) != 0) {
    p->from[0] = '\0'; /* permerror: no usable From */
    p->lookup.status = DMARC_LOOKUP_NONE;
    dmarc_conclude(p);
    checks_done(p);
    return;
  }
  dmarc_ask(p, p->from);
}

/* ---- the end of the checks ---- */

static void verify_done(struct dkim_pending *p);

/* checks_done: every DKIM key and the SPF check are in; DMARC next (when
 * on and not asked yet), else the verdicts go on the message. */
static void checks_done(struct dkim_pending *p) {
  if (p->dmarc_on && !p->have_outcome && p->dmarc_phase == 0) {
    dmarc_start(p);
    return;
  }
  if (p->dmarc_on && !p->have_outcome) {
    return; /* a _dmarc lookup is on its way */
  }
  verify_done(p);
}

/* stage_reject answers the end of DATA with a 550: nothing is stored. */
static void stage_reject(struct conn *c, struct commit *cm, const char *text) {
  c->commit_pending = 0;
  buf_free(&cm->data);
  free(cm);
  if (!c->shut) {
    smtp_server_reject(c->smtp, 550, "5.7.1", text);
    session_pump(c);
  }
  conn_maybe_free(c);
}

static void verify_done(struct dkim_pending *p) {
  struct worker *w = p->w;
  int ok = verify_finish(p) == 0;
  enum dmarc_policy act = DMARC_P_NONE;
  if (p->have_outcome && w->cfg->dmarc_enforce &&
      p->outcome.result == DMARC_RESULT_FAIL) {
    act = p->outcome.disposition;
  }
  if (p->sync) {
    /* Answered without waiting: no DMARC lookup was made, so no policy
     * applies (a DMARC fail always needs the record). */
    p->sync = 2;
    return;
  }
  verify_unlink(p);
  struct conn *c = p->c;
  struct commit *cm = p->cm;
  char text[300];
  if (act != DMARC_P_NONE) {
    char qid[SPOOL_QUEUE_ID_LEN + 1];
    spool_queue_id_format(cm->queue_id, qid);
    struct log_rec r;
    log_begin(&r, act == DMARC_P_REJECT ? "dmarc_reject" : "dmarc_quarantine");
    log_str(&r, "qid", qid);
    log_str(&r, "client", c->peer_text);
    log_str(&r, "from_domain", p->from);
    log_str(&r, "reason", p->outcome.reason);
    log_end(&r);
  }
  METRIC_ADD(w->m.dmarc_actions[act], 1);
  if (p->have_outcome && p->lookup.status == DMARC_LOOKUP_FOUND &&
      p->rec.num_rua > 0) {
    dmarcrpt_note(w, &(struct dmarcrpt_msg){
                         .source_ip = c->peer_text,
                         .header_from = p->from,
                         .policy_domain = p->lookup.at_org ? p->org : p->from,
                         .rec = &p->rec,
                         .outcome = &p->outcome,
                         .disposition = act,
                         .spf = p->spf,
                         .v = p->v,
                     });
  }
  snprintf(text, sizeof(text),
           "Message rejected: the DMARC policy of %.200s says reject", p->from);
  verify_free(p);
  if (act == DMARC_P_REJECT) {
    stage_reject(c, cm, text);
    return;
  }
  cm->quarantine = act == DMARC_P_QUARANTINE;
  pass_on(c, cm, ok);
}

/* verify_start runs the inbound checks of cm: DKIM keys, the SPF check
 * taken from the connection, then DMARC. Returns 1 if they are on their
 * way (the stage keeps cm), 0 if cm can be staged now (its
 * Authentication-Results is already on top, or it could not be made). */
static int verify_start(struct conn *c, struct commit *cm) {
  struct worker *w = c->w;
  const struct config *cfg = w->cfg;
  struct dkim_pending *p = calloc(1, sizeof(*p));
  if (p == NULL) {
    return 0;
  }
  p->w = w;
  p->c = c;
  p->cm = cm;
  p->spf = c->spf; /* the check belongs to this message now */
  c->spf = NULL;
  struct runtime *rt = cfg_runtime(cfg);
  if (cfg->dmarc_enabled && rt != NULL && rt->psl != NULL) {
    p->dmarc_on = 1;
    p->psl_rt = rt;
    runtime_up_ref(rt);
  }
  p->v = dkim_verify_new(cm->data.data, cm->data.len,
                         cfg->dkim_verify ? cfg->dkim_verify_max_signatures : 0,
                         w->now_ms / 1000);
  if (p->v == NULL) {
    verify_free(p);
    return 0;
  }
  p->next = w->dkim_verifying;
  if (p->next != NULL) {
    p->next->prev = p;
  }
  w->dkim_verifying = p;
  p->sync = 1;
  p->waiting = 1; /* held until every lookup is issued */
  if (p->spf != NULL && !p->spf->done) {
    p->waiting++;
    p->spf->on_done = on_spf;
    p->spf->arg = p;
  }
  size_t n = dkim_verify_count(p->v);
  for (size_t i = 0; i < n; i++) {
    const char *q = dkim_verify_query(p->v, i);
    if (q == NULL) {
      continue;
    }
    p->lk[i] = (struct dkim_lookup){.p = p, .i = i};
    uint64_t h = 0;
    if (w->dns != NULL && !w->stopping) {
      p->waiting++; /* before the call: an answer may come at once */
      h = dns_query(w->dns, q, DNS_TYPE_TXT, on_key, &p->lk[i]);
      if (h == 0) {
        p->waiting--;
      }
    }
    if (h == 0) {
      dkim_verify_key(p->v, i, DKIM_KEY_TEMPFAIL, NULL, NULL, 0);
    } else {
      p->handles[i] = h;
    }
  }
  if (--p->waiting == 0) {
    checks_done(p);
  }
  if (p->sync == 2) { /* finished here: the caller stages cm */
    verify_unlink(p);
    verify_free(p);
    return 0;
  }
  p->sync = 0;
  return 1;
}

/* ---- signing ---- */

int dkim_stage_take(struct conn *c, struct commit *cm, int trusted) {
  struct worker *w = c->w;
  const struct config *cfg = w->cfg;
  if (!trusted) {
    return cfg->dkim_verify || cfg->dmarc_enabled || c->spf != NULL
               ? verify_start(c, cm)
               : 0;
  }
  struct runtime *rt = cfg_runtime(cfg);
  if (!cfg->dkim_sign || rt == NULL || rt->dkim == NULL) {
    return 0;
  }
  char from[256];
  const char *domain = NULL;
  char why[64];
  /* The From domain as DMARC will judge it (one field, one address), so
   * the signature aligns where it is checked. */
  if (dmarc_from_domain(cm->data.data, cm->data.len, from, sizeof(from), why,
                        sizeof(why)) == 0) {
    domain = sign_domain(rt->dkim, from);
  }
  struct dkim_sign_spec specs[DKIM_MAX_SIGN];
  int64_t now = w->now_ms / 1000;
  size_t n = domain ? pick_keys(rt->dkim, domain, now, specs) : 0;
  if (n == 0) {
    METRIC_ADD(w->m.dkim_unsigned, 1);
    return 0;
  }
  struct dkim_pending *p = calloc(1, sizeof(*p));
  if (p == NULL) {
    return -1; /* mail that should be signed does not go out unsigned */
  }
  p->w = w;
  p->c = c;
  p->cm = cm;
  p->rt = rt;
  runtime_up_ref(rt);
  for (size_t i = 0; i < n; i++) {
    specs[i].hdr_canon =
        cfg->dkim_hdr_relaxed ? DKIM_CANON_RELAXED : DKIM_CANON_SIMPLE;
    specs[i].body_canon =
        cfg->dkim_body_relaxed ? DKIM_CANON_RELAXED : DKIM_CANON_SIMPLE;
    specs[i].timestamp =
        cfg->dkim_timestamp || cfg->dkim_signature_ttl ? now : -1;
    specs[i].expire =
        cfg->dkim_signature_ttl ? now + (int64_t)cfg->dkim_signature_ttl : -1;
    specs[i].identity = NULL;
    p->specs[i] = specs[i];
  }
  p->num_specs = n;
  if (w->dkim_batch_tail != NULL) {
    w->dkim_batch_tail->next = p;
  } else {
    w->dkim_batch = p;
  }
  w->dkim_batch_tail = p;
  w->dkim_batch_len++;
  return 1;
}

void dkim_stage_flush(struct worker *w) {
  struct dkim_pending *batch = w->dkim_batch;
  if (batch == NULL) {
    return;
  }
  size_t num = w->dkim_batch_len;
  w->dkim_batch = w->dkim_batch_tail = NULL;
  w->dkim_batch_len = 0;
  int64_t t0 = daemon_mono_ns();
  /* Pass 1: hash every body (once per canonicalisation) and header set. */
  for (struct dkim_pending *p = batch; p != NULL; p = p->next) {
    p->rc = dkim_sign_begin(&p->job, p->cm->data.data, p->cm->data.len,
                            p->specs, p->num_specs, &p->rt->dkim->hdrs, p->err,
                            sizeof(p->err));
  }
  /* Pass 2: the private-key operations, one after the other. */
  struct buf hdr = {0};
  for (struct dkim_pending *p = batch; p != NULL; p = p->next) {
    if (p->rc != 0) {
      continue;
    }
    buf_reset(&hdr);
    p->rc = dkim_sign_end(&p->job, &dkim_local_signer, &hdr, p->err,
                          sizeof(p->err));
    if (p->rc == 0) {
      p->rc = commit_prepend(p->cm, &hdr);
      if (p->rc != 0) {
        snprintf(p->err, sizeof(p->err), "out of memory");
      }
    }
  }
  buf_free(&hdr);
  double secs = (double)(daemon_mono_ns() - t0) / 1e9;
  metric_hist_observe(&w->m.dkim_batch, &daemon_batch_spec, (double)num);
  metric_hist_observe(&w->m.dkim_sign_seconds, &dkim_sign_seconds_spec, secs);
  while (batch != NULL) {
    struct dkim_pending *p = batch;
    batch = p->next;
    if (p->rc == 0) {
      for (size_t i = 0; i < p->num_specs; i++) {
        int a = dkim_key_alg(p->specs[i].key) == DKIM_ALG_ED25519_SHA256;
        METRIC_ADD(w->m.dkim_signatures[a], 1);
      }
    } else {
      METRIC_ADD(w->m.dkim_sign_errors, 1);
      char qid[SPOOL_QUEUE_ID_LEN + 1];
      spool_queue_id_format(p->cm->queue_id, qid);
      struct log_rec r;
      log_begin(&r, "dkim_sign_failed");
      log_str(&r, "qid", qid);
      log_str(&r, "client", p->c->peer_text);
      log_str(&r, "domain", p->specs[0].domain);
      log_str(&r, "error", p->err);
      log_end(&r);
    }
    dkim_sign_job_free(&p->job);
    runtime_put(p->rt);
    struct conn *c = p->c;
    struct commit *cm = p->cm;
    int ok = p->rc == 0;
    free(p);
    pass_on(c, cm, ok);
  }
}

void dkim_worker_close(struct worker *w) {
  dkim_stage_flush(w);
  while (w->dkim_verifying != NULL) {
    struct dkim_pending *p = w->dkim_verifying;
    verify_unlink(p);
    for (size_t i = 0; i < DKIM_MAX_VERIFY; i++) {
      if (p->handles[i] != 0 && w->dns != NULL) {
        dns_cancel(w->dns, p->handles[i]);
      }
    }
    p->c->commit_pending = 0;
    buf_free(&p->cm->data);
    free(p->cm);
    conn_maybe_free(p->c);
    verify_free(p);
  }
}
